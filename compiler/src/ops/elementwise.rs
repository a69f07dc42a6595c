//! Element-wise arithmetic, math functions and activations (Add, Sub, Mul, Div, Pow, Mod, Relu,
//! Sigmoid, Tanh, Exp, Erf, Sqrt, Log, Reciprocal, Floor, Ceil, Round, Sign, the trigonometric
//! and hyperbolic functions, HardSwish, Neg, Abs, Softplus, Softsign, Mish, LeakyRelu, Clip,
//! HardSigmoid, Gelu, Elu, Selu, Celu, ThresholdedRelu, Shrink, PRelu), the variadic Sum, Mean,
//! Max, Min, comparisons (Equal, Less, Greater, LessOrEqual, GreaterOrEqual), logic (Not, And,
//! Or, Xor), bitwise operations (BitwiseNot/And/Or/Xor, BitShift), IsNaN, IsInf and Where.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer and device lowering.

use accelc_isa::{BinOp, UnOp};
use ndarray::{ArrayD, IxDyn, Zip};

use super::Work;
use crate::interp::*;
use crate::ir::*;
use crate::lower::LowerError;
use crate::lower::host::HostBuilder;
use crate::lower::schedule::*;
use crate::onnx::Attrs;
use crate::ops::{Arity, MANY, counts};
use crate::shape::*;
use crate::text::*;

type R<T> = Result<T, String>;

/// The family's name in the registry.
pub(crate) const FAMILY: &str = "elementwise";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Erf",
    "Sqrt",
    "HardSwish",
    "Neg",
    "Abs",
    "LeakyRelu",
    "Clip",
    "HardSigmoid",
    "Gelu",
    "Sum",
    "Mean",
    "Max",
    "Min",
    "Log",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Sinh",
    "Cosh",
    "Asinh",
    "Acosh",
    "Atanh",
    "Softplus",
    "Softsign",
    "Mish",
    "Not",
    "BitwiseNot",
    "IsNaN",
    "IsInf",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "BitShift",
    "Elu",
    "Selu",
    "Celu",
    "ThresholdedRelu",
    "Shrink",
    "Swish",
    "SwiGLU",
    "PRelu",
    "Where",
];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, opset: i64) -> Result<Op, String> {
    let unary = |u| Ok(Op::Unary(u));
    let binary = |b| Ok(Op::Binary(b));
    let act = |kind, alpha, beta| Ok(Op::Activation { kind, alpha, beta });
    match op_type {
        "Add" => binary(BinaryOp::Add),
        "Sub" => binary(BinaryOp::Sub),
        "Mul" => binary(BinaryOp::Mul),
        "Div" => binary(BinaryOp::Div),
        "Pow" => binary(BinaryOp::Pow),
        "Mod" if a.i64("fmod", 0) != 0 => binary(BinaryOp::Fmod),
        "Mod" => binary(BinaryOp::Mod),
        "Relu" => unary(UnaryOp::Relu),
        "Sigmoid" => unary(UnaryOp::Sigmoid),
        "Tanh" => unary(UnaryOp::Tanh),
        "Exp" => unary(UnaryOp::Exp),
        "Erf" => unary(UnaryOp::Erf),
        "Sqrt" => unary(UnaryOp::Sqrt),
        "HardSwish" => unary(UnaryOp::HardSwish),
        "Neg" => unary(UnaryOp::Neg),
        "Abs" => unary(UnaryOp::Abs),
        "Log" => unary(UnaryOp::Log),
        "Reciprocal" => unary(UnaryOp::Reciprocal),
        "Floor" => unary(UnaryOp::Floor),
        "Ceil" => unary(UnaryOp::Ceil),
        "Round" => unary(UnaryOp::Round),
        "Sign" => unary(UnaryOp::Sign),
        "Sin" => unary(UnaryOp::Sin),
        "Cos" => unary(UnaryOp::Cos),
        "Tan" => unary(UnaryOp::Tan),
        "Asin" => unary(UnaryOp::Asin),
        "Acos" => unary(UnaryOp::Acos),
        "Atan" => unary(UnaryOp::Atan),
        "Sinh" => unary(UnaryOp::Sinh),
        "Cosh" => unary(UnaryOp::Cosh),
        "Asinh" => unary(UnaryOp::Asinh),
        "Acosh" => unary(UnaryOp::Acosh),
        "Atanh" => unary(UnaryOp::Atanh),
        "Softplus" => unary(UnaryOp::Softplus),
        "Softsign" => unary(UnaryOp::Softsign),
        "Mish" => unary(UnaryOp::Mish),
        "Not" => unary(UnaryOp::Not),
        "BitwiseNot" => unary(UnaryOp::BitwiseNot),
        "IsNaN" => unary(UnaryOp::IsNaN),
        "IsInf" => Ok(Op::IsInf {
            positive: a.i64("detect_positive", 1) != 0,
            negative: a.i64("detect_negative", 1) != 0,
        }),
        "Equal" => Ok(Op::Compare(CmpOp::Equal)),
        "Less" => Ok(Op::Compare(CmpOp::Less)),
        "Greater" => Ok(Op::Compare(CmpOp::Greater)),
        "LessOrEqual" => Ok(Op::Compare(CmpOp::LessOrEqual)),
        "GreaterOrEqual" => Ok(Op::Compare(CmpOp::GreaterOrEqual)),
        "And" => Ok(Op::Logic { op: LogicOp::And, bitwise: false }),
        "Or" => Ok(Op::Logic { op: LogicOp::Or, bitwise: false }),
        "Xor" => Ok(Op::Logic { op: LogicOp::Xor, bitwise: false }),
        "BitwiseAnd" => Ok(Op::Logic { op: LogicOp::And, bitwise: true }),
        "BitwiseOr" => Ok(Op::Logic { op: LogicOp::Or, bitwise: true }),
        "BitwiseXor" => Ok(Op::Logic { op: LogicOp::Xor, bitwise: true }),
        "BitShift" => match a.string("direction").as_deref() {
            Some("LEFT") => Ok(Op::BitShift { left: true }),
            Some("RIGHT") => Ok(Op::BitShift { left: false }),
            Some(d) => Err(a.invalid(format!("BitShift direction `{d}` is not defined"))),
            None => Err(a.invalid("BitShift needs `direction`".to_string())),
        },
        "Elu" => act(ActKind::Elu, a.f32("alpha", 1.0), 0.0),
        "Selu" => act(ActKind::Selu, a.f32("alpha", 1.673_263_2), a.f32("gamma", 1.050_701)),
        "Celu" => act(ActKind::Celu, a.f32("alpha", 1.0), 0.0),
        "ThresholdedRelu" => act(ActKind::ThresholdedRelu, a.f32("alpha", 1.0), 0.0),
        "Shrink" => act(ActKind::Shrink, a.f32("lambd", 0.5), a.f32("bias", 0.0)),
        "Swish" => act(ActKind::Swish, a.f32("alpha", 1.0), 0.0),
        "PRelu" => Ok(Op::PRelu),
        "SwiGLU" => Ok(Op::SwiGlu { alpha: a.f32("alpha", 1.0) }),
        "Where" => Ok(Op::Where),
        "Sum" => Ok(Op::Variadic(VariadicOp::Sum)),
        "Mean" => Ok(Op::Variadic(VariadicOp::Mean)),
        "Max" => Ok(Op::Variadic(VariadicOp::Max)),
        "Min" => Ok(Op::Variadic(VariadicOp::Min)),
        "LeakyRelu" => Ok(Op::LeakyRelu { alpha: a.f32("alpha", 0.01) }),
        // Clip-6's attribute defaults are the float range's ends, not infinities: an infinite
        // input is clamped to ±f32::MAX.
        "Clip" if opset < 11 => {
            Ok(Op::Clip { min: Some(a.f32("min", f32::MIN)), max: Some(a.f32("max", f32::MAX)) })
        }
        "Clip" => Ok(Op::Clip { min: None, max: None }),
        "HardSigmoid" => {
            Ok(Op::HardSigmoid { alpha: a.f32("alpha", 0.2), beta: a.f32("beta", 0.5) })
        }
        "Gelu" => match a.string("approximate").as_deref() {
            None | Some("none") => Ok(Op::Gelu { tanh: false }),
            Some("tanh") => Ok(Op::Gelu { tanh: true }),
            Some(other) => Err(a.invalid(format!("Gelu approximate `{other}` is not defined"))),
        },
        other => Err(super::misrouted_name(other, FAMILY)),
    }
}

/// Output types from input types `ins` (and constant shape operands of `g`).
pub(crate) fn infer(g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = || input(ins, 0);
    let int = |d: DType| !matches!(d, DType::F32 | DType::Bool);
    match &node.op {
        Op::Unary(UnaryOp::Not) if x()?.dtype != DType::Bool => {
            Err(format!("Not of {} (ONNX defines it for bools)", x()?.dtype))
        }
        Op::Unary(UnaryOp::BitwiseNot) if !int(x()?.dtype) => {
            Err(format!("BitwiseNot of {} (ONNX defines it for integers)", x()?.dtype))
        }
        Op::Unary(UnaryOp::Not | UnaryOp::BitwiseNot) => same(x()?),
        Op::Unary(UnaryOp::IsNaN) | Op::IsInf { .. } => {
            let t = x()?;
            if t.dtype != DType::F32 {
                return Err(format!("{:?} of {} (ONNX defines it for floats)", node.op, t.dtype));
            }
            Ok(vec![TensorType { dtype: DType::Bool, shape: t.shape.clone() }])
        }
        // Integers only where ONNX defines them (Neg, Abs, Relu, Sign); the rest are float-only.
        Op::Unary(u)
            if x()?.dtype != DType::F32
                && !(int(x()?.dtype)
                    && matches!(
                        u,
                        UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu | UnaryOp::Sign
                    )) =>
        {
            Err(format!("{u:?} of {} (ONNX defines it for floats)", x()?.dtype))
        }
        Op::Activation { kind, .. } if x()?.dtype != DType::F32 => {
            Err(format!("{kind:?} of {} (supported for floats)", x()?.dtype))
        }
        Op::Activation { .. } => same(x()?),
        Op::Compare(_) | Op::Logic { .. } | Op::BitShift { .. } => {
            let (a, b) = (x()?, input(ins, 1)?);
            if a.dtype != b.dtype {
                return Err(format!("{:?} of {} and {}", node.op, a.dtype, b.dtype));
            }
            let shape = broadcast_shape(&a.shape, &b.shape)?;
            let ok = match &node.op {
                Op::Compare(CmpOp::Equal) => true,
                Op::Compare(_) => a.dtype != DType::Bool,
                Op::Logic { bitwise: false, .. } => a.dtype == DType::Bool,
                Op::Logic { bitwise: true, .. } => int(a.dtype),
                // Unsigned types at every opset (BitShift-11), signed ones from opset 28.
                _ => {
                    a.dtype.is_unsigned() && a.dtype != DType::Bool
                        || (g.opset >= 28 && int(a.dtype))
                }
            };
            if !ok {
                return Err(format!("{} of {} is not defined by ONNX", node.op_type, a.dtype));
            }
            let dtype = if matches!(node.op, Op::Compare(_)) { DType::Bool } else { a.dtype };
            Ok(vec![TensorType { dtype, shape }])
        }
        Op::SwiGlu { .. } => {
            let (a, b) = (x()?, input(ins, 1)?);
            if a != b || a.dtype != DType::F32 {
                return Err(format!("SwiGLU of {a} and {b}: two float tensors of one shape"));
            }
            same(a)
        }
        Op::PRelu => {
            let (a, s) = (x()?, input(ins, 1)?);
            if a.dtype != s.dtype || a.dtype == DType::Bool {
                return Err(format!("PRelu of {} with a slope of {}", a.dtype, s.dtype));
            }
            // Unidirectional: the slope broadcasts to the input's shape.
            if broadcast_shape(&a.shape, &s.shape)? != a.shape {
                return Err(format!(
                    "PRelu's slope {:?} does not broadcast to the input {:?}",
                    s.shape, a.shape
                ));
            }
            same(a)
        }
        Op::Where => {
            let (c, a, b) = (x()?, input(ins, 1)?, input(ins, 2)?);
            if c.dtype != DType::Bool {
                return Err(format!("Where's condition is {}, not bool", c.dtype));
            }
            if a.dtype != b.dtype {
                return Err(format!("Where of {} and {}", a.dtype, b.dtype));
            }
            let shape = broadcast_shape(&broadcast_shape(&c.shape, &a.shape)?, &b.shape)?;
            Ok(vec![TensorType { dtype: a.dtype, shape }])
        }
        // Clip-11's bounds are scalars of the input's type (ONNX: "tensor(T) ... must be a
        // scalar"); a one-element tensor is taken as one, as onnxruntime does.
        Op::Clip { .. } => {
            let t = x()?;
            for (i, name) in [(1, "min"), (2, "max")] {
                if let Some(Some(b)) = ins.get(i) {
                    if b.shape.iter().product::<usize>() != 1 {
                        return Err(format!(
                            "Clip's `{name}` must be a scalar, not of shape {:?}",
                            b.shape
                        ));
                    }
                    if b.dtype != t.dtype {
                        return Err(format!(
                            "Clip's `{name}` is {}, the input {}",
                            b.dtype, t.dtype
                        ));
                    }
                }
            }
            same(t)
        }
        Op::Unary(_) | Op::LeakyRelu { .. } | Op::HardSigmoid { .. } | Op::Gelu { .. } => {
            same(x()?)
        }
        Op::Binary(op) => {
            let (a, b) = (x()?, input(ins, 1)?);
            // ONNX: both operands of one type T, except Pow's exponent (T1, T2).
            if a.dtype != b.dtype && *op != BinaryOp::Pow {
                return Err(format!("{op:?} of {} and {}", a.dtype, b.dtype));
            }
            Ok(vec![TensorType { dtype: a.dtype, shape: broadcast_shape(&a.shape, &b.shape)? }])
        }
        // Multidirectional broadcasting over every input, all of one type (Sum-8 and later;
        // Sum-6 required equal shapes, which broadcasting also accepts).
        Op::Variadic(op) => {
            let first = x()?;
            let mut shape = first.shape.clone();
            for (i, t) in ins.iter().enumerate().skip(1) {
                let t = t.ok_or_else(|| format!("input {i} is missing"))?;
                if t.dtype != first.dtype {
                    return Err(format!("{op:?} of {} and {}", first.dtype, t.dtype));
                }
                shape = broadcast_shape(&shape, &t.shape)?;
            }
            if *op == VariadicOp::Mean && first.dtype != DType::F32 {
                return Err(format!("Mean of {} (ONNX defines it for floats)", first.dtype));
            }
            Ok(vec![TensorType { dtype: first.dtype, shape }])
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// Reference semantics: the outputs for inputs `args` (the oracle the device is checked
/// against).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], opset: i64) -> R<Vec<Array>> {
    let one = |a: Array| Ok(vec![a]);
    match &node.op {
        Op::Binary(op) => one(binary(*op, arg(args, 0)?, arg(args, 1)?)?),
        Op::Variadic(op) => one(variadic(*op, args)?),
        Op::Unary(UnaryOp::Not) => {
            one(Array::Int(arg(args, 0)?.ints()?.mapv(|v| i64::from(v == 0)), DType::Bool))
        }
        Op::Unary(UnaryOp::BitwiseNot) => {
            let x = arg(args, 0)?;
            let dt = x.dtype();
            one(Array::Int(x.ints()?.mapv(|v| dt.wrap(!v)), dt))
        }
        Op::Unary(UnaryOp::IsNaN) => {
            one(Array::Int(arg(args, 0)?.f32()?.mapv(|v| i64::from(v.is_nan())), DType::Bool))
        }
        Op::IsInf { positive, negative } => {
            let (p, n) = (*positive, *negative);
            let f =
                move |v: f32| i64::from((p && v == f32::INFINITY) || (n && v == f32::NEG_INFINITY));
            one(Array::Int(arg(args, 0)?.f32()?.mapv(f), DType::Bool))
        }
        Op::Unary(UnaryOp::Sign) if matches!(arg(args, 0)?, Array::Int(..)) => {
            let x = arg(args, 0)?;
            one(Array::Int(x.ints()?.mapv(i64::signum), x.dtype()))
        }
        Op::Compare(c) => one(compare(*c, arg(args, 0)?, arg(args, 1)?)?),
        Op::Logic { op, .. } => {
            let (a, b) = (arg(args, 0)?, arg(args, 1)?);
            let dt = a.dtype();
            let f = |p: i64, q: i64| {
                Ok(match op {
                    LogicOp::And => p & q,
                    LogicOp::Or => p | q,
                    LogicOp::Xor => p ^ q,
                })
            };
            one(Array::Int(zip_i64(a.ints()?, b.ints()?, f)?, dt))
        }
        Op::BitShift { left } => {
            let (a, b) = (arg(args, 0)?, arg(args, 1)?);
            let dt = a.dtype();
            let width = 8 * dt.size() as i64;
            // BitShift-28: a negative shift or one of the width or more leaves what the sign
            // extension alone gives (-1 for a right shift of a negative value, else 0); right
            // shifts are arithmetic (unsigned values are held non-negative, so logical).
            let f = |p: i64, q: i64| {
                Ok(if !(0..width).contains(&q) {
                    if !*left && p < 0 { -1 } else { 0 }
                } else if *left {
                    dt.wrap(p << q)
                } else if dt == DType::U64 {
                    ((p as u64) >> q) as i64
                } else {
                    p >> q
                })
            };
            one(Array::Int(zip_i64(a.ints()?, b.ints()?, f)?, dt))
        }
        Op::Activation { kind, alpha, beta } => {
            let (k, a, b) = (*kind, *alpha, *beta);
            one(Array::F32(arg(args, 0)?.f32()?.mapv(|v| activation(k, a, b, v))))
        }
        Op::SwiGlu { alpha } => {
            let (a, g) = (arg(args, 0)?.f32()?, arg(args, 1)?.f32()?);
            let al = *alpha;
            one(Array::F32(zip_f32(a, g, |p, q| activation(ActKind::Swish, al, 0.0, p) * q)?))
        }
        Op::PRelu => match (arg(args, 0)?, arg(args, 1)?) {
            (Array::F32(x), Array::F32(s)) => {
                one(Array::F32(zip_f32(x, s, |v, k| if v < 0.0 { k * v } else { v })?))
            }
            (Array::Int(x, dt), Array::Int(s, _)) => {
                let dt = *dt;
                let f = |v: i64, k: i64| Ok(if v < 0 { dt.wrap(k.wrapping_mul(v)) } else { v });
                one(Array::Int(zip_i64(x, s, f)?, dt))
            }
            (a, b) => Err(format!("PRelu of {} with a slope of {}", a.dtype(), b.dtype())),
        },
        Op::Where => one(select(arg(args, 0)?, arg(args, 1)?, arg(args, 2)?)?),
        // Integer Neg, Abs and Relu (ONNX defines them for signed integers; the others are
        // float-only and refused by the shape rule): in the type's width, wrapping as numpy
        // does (Neg and Abs of the most negative value give it back).
        Op::Unary(op @ (UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu))
            if matches!(arg(args, 0)?, Array::Int(..)) =>
        {
            let Array::Int(x, dt) = arg(args, 0)? else {
                return Err("internal: not integer".into());
            };
            let wrap = |v: i64| if *dt == DType::Bool { i64::from(v as u8) } else { dt.wrap(v) };
            let f = |v: i64| match op {
                UnaryOp::Neg => wrap(v.wrapping_neg()),
                UnaryOp::Abs => wrap(v.wrapping_abs()),
                _ => v.max(0),
            };
            one(Array::Int(x.mapv(f), *dt))
        }
        Op::Unary(op) => {
            let x = arg(args, 0)?.f32()?;
            let f: fn(f32) -> f32 = match op {
                // NaN propagates (the book's numerics chapter): `v > 0` is false for NaN.
                UnaryOp::Relu => |v| if v > 0.0 || v.is_nan() { v } else { 0.0 },
                UnaryOp::Sigmoid => |v| (1.0 / (1.0 + (-f64::from(v)).exp())) as f32,
                UnaryOp::Tanh => |v| f64::from(v).tanh() as f32,
                UnaryOp::Exp => |v| f64::from(v).exp() as f32,
                UnaryOp::Erf => erf,
                UnaryOp::Sqrt => f32::sqrt,
                UnaryOp::HardSwish => |v| v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
                UnaryOp::Neg => |v| -v,
                UnaryOp::Abs => f32::abs,
                UnaryOp::Log => |v| f64::from(v).ln() as f32,
                UnaryOp::Reciprocal => |v| 1.0 / v,
                UnaryOp::Floor => f32::floor,
                UnaryOp::Ceil => f32::ceil,
                UnaryOp::Round => f32::round_ties_even,
                // NaN and ±0 stay as they are (numpy's sign).
                UnaryOp::Sign => |v| {
                    if v > 0.0 {
                        1.0
                    } else if v < 0.0 {
                        -1.0
                    } else {
                        v
                    }
                },
                UnaryOp::Sin => |v| f64::from(v).sin() as f32,
                UnaryOp::Cos => |v| f64::from(v).cos() as f32,
                UnaryOp::Tan => |v| f64::from(v).tan() as f32,
                UnaryOp::Asin => |v| f64::from(v).asin() as f32,
                UnaryOp::Acos => |v| f64::from(v).acos() as f32,
                UnaryOp::Atan => |v| f64::from(v).atan() as f32,
                UnaryOp::Sinh => |v| f64::from(v).sinh() as f32,
                UnaryOp::Cosh => |v| f64::from(v).cosh() as f32,
                UnaryOp::Asinh => |v| f64::from(v).asinh() as f32,
                UnaryOp::Acosh => |v| f64::from(v).acosh() as f32,
                UnaryOp::Atanh => |v| f64::from(v).atanh() as f32,
                // ONNX's definition, ln(e^x + 1), in f64: exact to f32 where e^x does not
                // overflow f64.
                UnaryOp::Softplus => |v| softplus(f64::from(v)) as f32,
                UnaryOp::Softsign => |v| v / (1.0 + v.abs()),
                UnaryOp::Mish => |v| {
                    let x = f64::from(v);
                    (x * softplus(x).tanh()) as f32
                },
                UnaryOp::Not | UnaryOp::BitwiseNot | UnaryOp::IsNaN => {
                    return Err(super::misrouted(&node.op, FAMILY));
                }
            };
            one(Array::F32(x.mapv(f)))
        }
        Op::LeakyRelu { alpha } => {
            one(Array::F32(arg(args, 0)?.f32()?.mapv(|v| if v < 0.0 { alpha * v } else { v })))
        }
        Op::HardSigmoid { alpha, beta } => {
            one(Array::F32(arg(args, 0)?.f32()?.mapv(|v| (alpha * v + beta).clamp(0.0, 1.0))))
        }
        Op::Gelu { tanh } => {
            let x = arg(args, 0)?.f32()?;
            let f = |v: f32| {
                let v = f64::from(v);
                let r = if *tanh {
                    0.5 * v
                        * (1.0
                            + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v))
                                .tanh())
                } else {
                    0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2))
                };
                r as f32
            };
            one(Array::F32(x.mapv(f)))
        }
        Op::Clip { .. } if matches!(arg(args, 0)?, Array::Int(..)) => {
            let Array::Int(x, dt) = arg(args, 0)? else { unreachable!("matched above") };
            let bound = |i: usize| -> R<Option<i64>> {
                opt(args, i)
                    .map(|a| a.ints().map(|v| v.iter().next().copied().unwrap_or(0)))
                    .transpose()
            };
            let (lo, hi) = (bound(1)?, bound(2)?);
            one(Array::Int(x.mapv(|v| hi.map_or(v, |h| v.min(h)).max(lo.unwrap_or(i64::MIN))), *dt))
        }
        Op::Clip { min, max } => {
            let x = arg(args, 0)?.f32()?;
            let scalar = |i: usize| -> R<Option<f32>> {
                opt(args, i)
                    .map(|a| a.f32().map(|v| v.iter().next().copied().unwrap_or(0.0)))
                    .transpose()
            };
            // Omitted bounds are the float range's ends (Clip-6's attribute defaults, Clip-11+'s
            // `numeric_limits::lowest()`/`max()`); `Min(max, Max(x, min))` with NaN propagating
            // from the input and from the bounds.
            let lo = if opset < 11 { *min } else { scalar(1)? }.unwrap_or(f32::MIN);
            let hi = if opset < 11 { *max } else { scalar(2)? }.unwrap_or(f32::MAX);
            one(Array::F32(x.mapv(|v| nan_min(nan_max(v, lo), hi))))
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    match op {
        Op::LeakyRelu { alpha } => a.push(format!("alpha: float = {}", flt(*alpha))),
        Op::Clip { min, max } => {
            if let Some(v) = min {
                a.push(format!("min: float = {}", flt(*v)));
            }
            if let Some(v) = max {
                a.push(format!("max: float = {}", flt(*v)));
            }
        }
        Op::HardSigmoid { alpha, beta } => {
            a.push(format!("alpha: float = {}", flt(*alpha)));
            a.push(format!("beta: float = {}", flt(*beta)));
        }
        Op::Gelu { tanh } => {
            a.push(format!("approximate: string = \"{}\"", if *tanh { "tanh" } else { "none" }))
        }
        Op::Binary(BinaryOp::Fmod) => a.push("fmod: int = 1".into()),
        Op::SwiGlu { alpha } => a.push(format!("alpha: float = {}", flt(*alpha))),
        Op::Activation { kind, alpha, beta } => match kind {
            ActKind::Elu | ActKind::Celu | ActKind::ThresholdedRelu | ActKind::Swish => {
                a.push(format!("alpha: float = {}", flt(*alpha)))
            }
            ActKind::Selu => {
                a.push(format!("alpha: float = {}", flt(*alpha)));
                a.push(format!("gamma: float = {}", flt(*beta)));
            }
            ActKind::Shrink => {
                a.push(format!("bias: float = {}", flt(*beta)));
                a.push(format!("lambd: float = {}", flt(*alpha)));
            }
        },
        Op::IsInf { positive, negative } => {
            a.push(format!("detect_negative: int = {}", i64::from(*negative)));
            a.push(format!("detect_positive: int = {}", i64::from(*positive)));
        }
        Op::BitShift { left } => {
            a.push(format!("direction: string = \"{}\"", if *left { "LEFT" } else { "RIGHT" }))
        }
        _ => {}
    }
}

/// Device lowering: `n` (node `idx` of the graph) as kernel steps of `b`, or the constraint
/// that keeps it off the device.
pub(crate) fn lower(b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    let name = n.name.clone();
    let err = |m: &str| LowerError::at(&name, m.to_string());
    match &n.op {
        Op::Binary(op) => {
            let bop = match op {
                BinaryOp::Add => BinOp::Add,
                BinaryOp::Sub => BinOp::Sub,
                BinaryOp::Mul => BinOp::Mul,
                BinaryOp::Div => BinOp::Div,
                BinaryOp::Pow => BinOp::Pow,
                BinaryOp::Mod | BinaryOp::Fmod => return Err(err("Mod is not lowered")),
            };
            ew_step(b, n, vec![Micro::Bin(bop, 0, Src::In(0), Src::In(1))], 1, vec![])
        }
        Op::Variadic(op) => {
            // Left to right into register 0, as the reference accumulates; one input is a copy.
            let count = n.inputs.len();
            if count == 0 || n.inputs.iter().any(Option::is_none) {
                return Err(err("every input must be present"));
            }
            let bop = match op {
                VariadicOp::Sum | VariadicOp::Mean => BinOp::Add,
                VariadicOp::Max => BinOp::Max,
                VariadicOp::Min => BinOp::Min,
            };
            let mut prog: Vec<Micro> = (1..count)
                .map(|i| {
                    let acc = if i == 1 { Src::In(0) } else { Src::Reg(0) };
                    Micro::Bin(bop, 0, acc, Src::In(i))
                })
                .collect();
            let mut imms = vec![];
            if *op == VariadicOp::Mean && count > 1 {
                prog.push(Micro::Bin(BinOp::Div, 0, Src::Reg(0), Src::Imm(0)));
                imms.push(count as f32);
            }
            let regs = usize::from(!prog.is_empty());
            ew_step(b, n, prog, regs, imms)
        }
        Op::Unary(u) => {
            let one = |op| (vec![Micro::Un(op, 0, Src::In(0))], 1, vec![]);
            let (prog, regs, imms) = match u {
                UnaryOp::Relu => one(UnOp::Relu),
                UnaryOp::Sigmoid => one(UnOp::Sigmoid),
                UnaryOp::Tanh => one(UnOp::Tanh),
                UnaryOp::Exp => one(UnOp::Exp),
                UnaryOp::Erf => one(UnOp::Erf),
                UnaryOp::Sqrt => one(UnOp::Sqrt),
                UnaryOp::Neg => one(UnOp::Neg),
                UnaryOp::Abs => one(UnOp::Abs),
                UnaryOp::HardSwish => {
                    (hard_sigmoid(1.0 / 6.0, 0.5, 1, true), 2, vec![1.0 / 6.0, 0.5, 0.0, 1.0])
                }
                UnaryOp::Log => one(UnOp::Log),
                UnaryOp::Reciprocal => one(UnOp::Recip),
                UnaryOp::Floor => one(UnOp::Floor),
                UnaryOp::Ceil => one(UnOp::Ceil),
                UnaryOp::Round => one(UnOp::Round),
                // max(x, 0) + ln(1 + e^−|x|): no exponential overflows.
                UnaryOp::Softplus => (softplus_prog(0, 1), 2, vec![1.0]),
                UnaryOp::Softsign => (
                    vec![
                        Micro::Un(UnOp::Abs, 1, Src::In(0)),
                        Micro::Bin(BinOp::Add, 1, Src::Reg(1), Src::Imm(0)),
                        Micro::Bin(BinOp::Div, 0, Src::In(0), Src::Reg(1)),
                    ],
                    2,
                    vec![1.0],
                ),
                // x · tanh(softplus(x)).
                UnaryOp::Mish => {
                    let mut p = softplus_prog(1, 0);
                    p.push(Micro::Un(UnOp::Tanh, 1, Src::Reg(1)));
                    p.push(Micro::Bin(BinOp::Mul, 0, Src::In(0), Src::Reg(1)));
                    (p, 2, vec![1.0])
                }
                other => return Err(err(&format!("{other:?} is not lowered to the device"))),
            };
            if !matches!(u, UnaryOp::Relu | UnaryOp::Neg | UnaryOp::Abs) {
                let x = b.input(n, 0)?;
                if b.s.tens[x].dtype != DType::F32 {
                    return Err(err(&format!("{u:?} of integers is not lowered to the device")));
                }
            }
            ew_step(b, n, prog, regs, imms)
        }
        Op::HardSigmoid { alpha, beta } => {
            ew_step(b, n, hard_sigmoid(*alpha, *beta, 0, false), 1, vec![*alpha, *beta, 0.0, 1.0])
        }
        Op::LeakyRelu { alpha } => {
            // relu(x) + alpha·min(x, 0)
            let prog = vec![
                Micro::Bin(BinOp::Min, 1, Src::In(0), Src::Imm(1)),
                Micro::Bin(BinOp::Mul, 1, Src::Reg(1), Src::Imm(0)),
                Micro::Un(UnOp::Relu, 0, Src::In(0)),
                Micro::Bin(BinOp::Add, 0, Src::Reg(0), Src::Reg(1)),
            ];
            ew_step(b, n, prog, 2, vec![*alpha, 0.0])
        }
        Op::Gelu { tanh } => {
            let (prog, imms) = if *tanh {
                // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
                (
                    vec![
                        Micro::Bin(BinOp::Mul, 1, Src::In(0), Src::In(0)),
                        Micro::Bin(BinOp::Mul, 1, Src::Reg(1), Src::In(0)),
                        Micro::Bin(BinOp::Mul, 1, Src::Reg(1), Src::Imm(0)),
                        Micro::Bin(BinOp::Add, 1, Src::Reg(1), Src::In(0)),
                        Micro::Bin(BinOp::Mul, 1, Src::Reg(1), Src::Imm(1)),
                        Micro::Un(UnOp::Tanh, 1, Src::Reg(1)),
                        Micro::Bin(BinOp::Add, 1, Src::Reg(1), Src::Imm(2)),
                        Micro::Bin(BinOp::Mul, 0, Src::In(0), Src::Imm(3)),
                        Micro::Bin(BinOp::Mul, 0, Src::Reg(0), Src::Reg(1)),
                    ],
                    vec![0.044715, (2.0f64 / std::f64::consts::PI).sqrt() as f32, 1.0, 0.5],
                )
            } else {
                // 0.5·x·(1 + erf(x / √2))
                (
                    vec![
                        Micro::Bin(BinOp::Div, 1, Src::In(0), Src::Imm(0)),
                        Micro::Un(UnOp::Erf, 1, Src::Reg(1)),
                        Micro::Bin(BinOp::Add, 1, Src::Reg(1), Src::Imm(1)),
                        Micro::Bin(BinOp::Mul, 0, Src::In(0), Src::Imm(2)),
                        Micro::Bin(BinOp::Mul, 0, Src::Reg(0), Src::Reg(1)),
                    ],
                    vec![std::f32::consts::SQRT_2, 1.0, 0.5],
                )
            };
            ew_step(b, n, prog, 2, imms)
        }
        Op::Clip { min, max } => {
            let bound =
                |b: &Builder<'_>, i: usize, d: Option<f32>, inf: f32| -> Result<f32, LowerError> {
                    match b.opt_input(n, i) {
                        Some(t) => b
                            .const_f32(t)
                            .and_then(|v| v.first().copied())
                            .ok_or_else(|| err("Clip bounds must be constant")),
                        // Attributes hold the bounds only before opset 11.
                        None if b.g.opset < 11 => Ok(d.unwrap_or(inf)),
                        None => Ok(inf),
                    }
                };
            let runtime = |b: &Builder<'_>, i: usize| {
                b.opt_input(n, i).is_some_and(|t| b.const_f32(t).is_none())
            };
            if runtime(b, 1) || runtime(b, 2) {
                // Bounds computed at run time: element-wise max and min with broadcast scalars;
                // an omitted bound is the float range's end (Clip-13's default).
                let mut n1 = n.clone();
                let mut prog = vec![Micro::Un(UnOp::Mov, 0, Src::In(0))];
                let mut imms = vec![];
                let mut next = 1;
                for (i, op, default) in [(1, BinOp::Max, f32::MIN), (2, BinOp::Min, f32::MAX)] {
                    if n.inputs.get(i).copied().flatten().is_some() {
                        prog.push(Micro::Bin(op, 0, Src::Reg(0), Src::In(next)));
                        next += 1;
                    } else {
                        prog.push(Micro::Bin(op, 0, Src::Reg(0), Src::Imm(imms.len())));
                        imms.push(default);
                    }
                }
                n1.inputs.retain(Option::is_some);
                return ew_step(b, &n1, prog, 1, imms);
            }
            // Omitted bounds default to the float range's ends (Clip-6 attributes and Clip-11+
            // inputs alike), so an infinite input is clamped to ±f32::MAX.
            let lo = bound(b, 1, *min, f32::MIN)?;
            let hi = bound(b, 2, *max, f32::MAX)?;
            let prog = vec![
                Micro::Bin(BinOp::Max, 0, Src::In(0), Src::Imm(0)),
                Micro::Bin(BinOp::Min, 0, Src::Reg(0), Src::Imm(1)),
            ];
            let mut n1 = n.clone();
            n1.inputs.truncate(1);
            ew_step(b, &n1, prog, 1, vec![lo, hi])
        }
        Op::Activation { kind: ActKind::Swish, alpha, .. } => {
            let x = b.input(n, 0)?;
            if b.s.tens[x].dtype != DType::F32 {
                return Err(err("Swish of integers is not lowered to the device"));
            }
            // x · sigmoid(α·x).
            let p = vec![
                Micro::Bin(BinOp::Mul, 1, Src::In(0), Src::Imm(0)),
                Micro::Un(UnOp::Sigmoid, 1, Src::Reg(1)),
                Micro::Bin(BinOp::Mul, 0, Src::In(0), Src::Reg(1)),
            ];
            ew_step(b, n, p, 2, vec![*alpha])
        }
        Op::SwiGlu { alpha } => {
            // a · sigmoid(α·a) · b, the two inputs of one shape.
            let p = vec![
                Micro::Bin(BinOp::Mul, 1, Src::In(0), Src::Imm(0)),
                Micro::Un(UnOp::Sigmoid, 1, Src::Reg(1)),
                Micro::Bin(BinOp::Mul, 1, Src::In(0), Src::Reg(1)),
                Micro::Bin(BinOp::Mul, 0, Src::Reg(1), Src::In(1)),
            ];
            ew_step(b, n, p, 2, vec![*alpha])
        }
        Op::Activation {
            kind: kind @ (ActKind::Elu | ActKind::Selu | ActKind::Celu),
            alpha,
            beta,
        } => {
            let x = b.input(n, 0)?;
            if b.s.tens[x].dtype != DType::F32 {
                return Err(err(&format!("{kind:?} of integers is not lowered to the device")));
            }
            // Elu and Selu: relu(x) + α·(e^min(x, 0) − 1) (times γ); Celu:
            // relu(x) + min(α·(e^(x/α) − 1), 0). Imms: 0, 1, α, γ.
            let mut p = match kind {
                ActKind::Celu => vec![
                    Micro::Bin(BinOp::Div, 1, Src::In(0), Src::Imm(2)),
                    Micro::Un(UnOp::Exp, 1, Src::Reg(1)),
                    Micro::Bin(BinOp::Sub, 1, Src::Reg(1), Src::Imm(1)),
                    Micro::Bin(BinOp::Mul, 1, Src::Reg(1), Src::Imm(2)),
                    Micro::Bin(BinOp::Min, 1, Src::Reg(1), Src::Imm(0)),
                ],
                _ => vec![
                    Micro::Bin(BinOp::Min, 1, Src::In(0), Src::Imm(0)),
                    Micro::Un(UnOp::Exp, 1, Src::Reg(1)),
                    Micro::Bin(BinOp::Sub, 1, Src::Reg(1), Src::Imm(1)),
                    Micro::Bin(BinOp::Mul, 1, Src::Reg(1), Src::Imm(2)),
                ],
            };
            p.push(Micro::Un(UnOp::Relu, 0, Src::In(0)));
            p.push(Micro::Bin(BinOp::Add, 0, Src::Reg(0), Src::Reg(1)));
            if *kind == ActKind::Selu {
                p.push(Micro::Bin(BinOp::Mul, 0, Src::Reg(0), Src::Imm(3)));
            }
            ew_step(b, n, p, 2, vec![0.0, 1.0, *alpha, *beta])
        }
        Op::Compare(_)
        | Op::Logic { .. }
        | Op::BitShift { .. }
        | Op::Activation { .. }
        | Op::IsInf { .. }
        | Op::PRelu
        | Op::Where => Err(err(&format!("{} is not lowered to the device", n.op_type))),
        other => Err(LowerError::at(&n.name, super::misrouted(other, FAMILY))),
    }
}

/// Cost inputs: one vector pass per element for plain arithmetic, more for composite
/// activations, at the slow rate for transcendental functions and division.
pub(crate) fn work(op: &Op, inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    let (passes, slow) = match op {
        Op::Binary(BinaryOp::Div | BinaryOp::Pow) => (1, true),
        Op::Binary(_) => (1, false),
        // One pass per input after the first (and a division for Mean).
        Op::Variadic(v) => {
            let n = (inputs.len() as u64).saturating_sub(1).max(1);
            if *v == VariadicOp::Mean { (n + 1, true) } else { (n, false) }
        }
        Op::Unary(
            UnaryOp::Relu
            | UnaryOp::Neg
            | UnaryOp::Abs
            | UnaryOp::Floor
            | UnaryOp::Ceil
            | UnaryOp::Round
            | UnaryOp::Sign
            | UnaryOp::Not
            | UnaryOp::BitwiseNot
            | UnaryOp::IsNaN,
        ) => (1, false),
        Op::Compare(_) | Op::Logic { .. } | Op::BitShift { .. } | Op::IsInf { .. } => (1, false),
        Op::PRelu | Op::Where => (2, false),
        Op::SwiGlu { .. } => (5, true),
        Op::Activation { .. } => (4, true),
        Op::Unary(UnaryOp::HardSwish) => (5, false),
        Op::Unary(_) => (1, true),
        Op::Clip { .. } => (2, false),
        Op::LeakyRelu { .. } | Op::HardSigmoid { .. } => (4, false),
        Op::Gelu { tanh } => (if *tanh { 9 } else { 5 }, true),
        _ => return Work::Traffic,
    };
    Work::Vector { passes, slow }
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`
/// (the operator schemas' `min_input`, `max_input`, `min_output`, `max_output`).
pub(crate) fn arity(op_type: &str, opset: i64) -> Arity {
    match op_type {
        "Clip" if opset >= 11 => counts(1, 3, 1, 1),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Mod" | "Equal" | "Less" | "Greater"
        | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor" | "BitwiseAnd" | "BitwiseOr"
        | "BitwiseXor" | "BitShift" | "PRelu" | "SwiGLU" => counts(2, 2, 1, 1),
        "Where" => counts(3, 3, 1, 1),
        "Sum" | "Mean" | "Max" | "Min" => counts(1, MANY, 1, 1),
        _ => counts(1, 1, 1, 1),
    }
}

/// No input determines the output shape.
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
}

pub(crate) fn binary(op: BinaryOp, a: &Array, b: &Array) -> R<Array> {
    match (a, b) {
        // Pow takes the base's type; the exponent may be of another numeric type.
        (Array::F32(_), Array::Int(..)) if op == BinaryOp::Pow => {
            binary(op, a, &cast(b, DType::F32))
        }
        (Array::Int(x, dt), Array::F32(y)) if op == BinaryOp::Pow => {
            let r =
                zip_f32(&x.mapv(|v| v as f32), y, |p, q| f64::from(p).powf(f64::from(q)) as f32)?;
            Ok(cast(&Array::F32(r), *dt))
        }
        (Array::F32(x), Array::F32(y)) => Ok(Array::F32(zip_f32(x, y, |p, q| match op {
            BinaryOp::Add => p + q,
            BinaryOp::Sub => p - q,
            BinaryOp::Mul => p * q,
            BinaryOp::Div => p / q,
            BinaryOp::Pow => f64::from(p).powf(f64::from(q)) as f32,
            // Mod with fmod = 0 on floats: numpy's `mod`, the sign of the divisor.
            BinaryOp::Mod => {
                let r = p % q;
                if r != 0.0 && (r < 0.0) != (q < 0.0) { r + q } else { r }
            }
            // Rust's `%` on floats is C's fmod.
            BinaryOp::Fmod => p % q,
        })?)),
        (Array::Int(x, DType::U64), Array::Int(y, _)) => Ok(Array::Int(
            zip_i64(x, y, |p, q| {
                let (pu, qu) = (p as u64, q as u64);
                match op {
                    BinaryOp::Add => Ok(p.wrapping_add(q)),
                    BinaryOp::Sub => Ok(p.wrapping_sub(q)),
                    BinaryOp::Mul => Ok(p.wrapping_mul(q)),
                    BinaryOp::Div if q == 0 => Err("integer division by zero".into()),
                    BinaryOp::Div => Ok((pu / qu) as i64),
                    BinaryOp::Pow => Ok(wrapping_pow64(p, qu)),
                    BinaryOp::Mod | BinaryOp::Fmod if q == 0 => {
                        Err("integer modulo by zero".into())
                    }
                    BinaryOp::Mod | BinaryOp::Fmod => Ok((pu % qu) as i64),
                }
            })?,
            DType::U64,
        )),
        (Array::Int(x, dt), Array::Int(y, yd)) => Ok(Array::Int(
            zip_i64(x, y, |p, q| match op {
                // A uint64 exponent is never negative.
                BinaryOp::Pow if *yd == DType::U64 => Ok(wrapping_pow64(p, q as u64)),
                BinaryOp::Add => Ok(p.wrapping_add(q)),
                BinaryOp::Sub => Ok(p.wrapping_sub(q)),
                BinaryOp::Mul => Ok(p.wrapping_mul(q)),
                BinaryOp::Div if q == 0 => Err("integer division by zero".into()),
                BinaryOp::Div => Ok(p.wrapping_div(q)),
                // A negative exponent: the real power truncated toward zero (onnxruntime's
                // result), which is 0 unless the base is ±1; 0 to a negative power has none.
                BinaryOp::Pow if q < 0 => match p {
                    0 => Err("integer 0 raised to a negative power".into()),
                    1 => Ok(1),
                    -1 => Ok(if q % 2 == 0 { 1 } else { -1 }),
                    _ => Ok(0),
                },
                BinaryOp::Pow => Ok(wrapping_pow64(p, q as u64)),
                BinaryOp::Mod if q == 0 => Err("integer modulo by zero".into()),
                // ONNX Mod (fmod = 0): the result has the sign of the divisor.
                // (wrapping: i64::MIN mod −1 is 0, not an overflow)
                BinaryOp::Mod => {
                    let r = p.wrapping_rem_euclid(q);
                    Ok(r + if q < 0 && r != 0 { q } else { 0 })
                }
                BinaryOp::Fmod if q == 0 => Err("integer modulo by zero".into()),
                BinaryOp::Fmod => Ok(p.wrapping_rem(q)),
            })?,
            *dt,
        )),
        _ => Err(format!("mixed operand types {} and {}", a.dtype(), b.dtype())),
    }
}

pub(crate) fn zip_i64(
    a: &ArrayD<i64>,
    b: &ArrayD<i64>,
    f: impl Fn(i64, i64) -> R<i64>,
) -> R<ArrayD<i64>> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let (av, bv) = (
        a.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?,
        b.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?,
    );
    let mut err = None;
    let out = Zip::from(&av).and(&bv).map_collect(|x, y| {
        f(*x, *y).unwrap_or_else(|e| {
            err = Some(e);
            0
        })
    });
    err.map_or(Ok(out), Err)
}

pub(crate) fn erf(x: f32) -> f32 {
    libm::erf(f64::from(x)) as f32
}

/// `max(0, min(1, a·x + b))` into register `dst` (then `x·that` into 0 for HardSwish).
pub(crate) fn hard_sigmoid(_a: f32, _b: f32, dst: usize, swish: bool) -> Vec<Micro> {
    let mut p = vec![
        Micro::Bin(BinOp::Mul, dst, Src::In(0), Src::Imm(0)),
        Micro::Bin(BinOp::Add, dst, Src::Reg(dst), Src::Imm(1)),
        Micro::Bin(BinOp::Max, dst, Src::Reg(dst), Src::Imm(2)),
        Micro::Bin(BinOp::Min, dst, Src::Reg(dst), Src::Imm(3)),
    ];
    if swish {
        p.push(Micro::Bin(BinOp::Mul, 0, Src::In(0), Src::Reg(dst)));
    }
    p
}

/// Sum, Mean, Max or Min of every input, broadcast together, accumulated left to right (the
/// ONNX reference's order, which fixes float rounding); Max and Min propagate NaN.
fn variadic(op: VariadicOp, args: &[Option<&Array>]) -> R<Array> {
    let mut acc = arg(args, 0)?.clone();
    for i in 1..args.len() {
        let x = arg(args, i)?;
        acc = match (op, &acc, x) {
            (VariadicOp::Sum | VariadicOp::Mean, _, _) => binary(BinaryOp::Add, &acc, x)?,
            (VariadicOp::Max, Array::F32(a), Array::F32(b)) => Array::F32(zip_f32(a, b, nan_max)?),
            (VariadicOp::Min, Array::F32(a), Array::F32(b)) => Array::F32(zip_f32(a, b, nan_min)?),
            (VariadicOp::Max, Array::Int(a, d), Array::Int(b, _)) => Array::Int(
                zip_i64(a, b, |p, q| Ok(if ukey(*d, q) > ukey(*d, p) { q } else { p }))?,
                *d,
            ),
            (VariadicOp::Min, Array::Int(a, d), Array::Int(b, _)) => Array::Int(
                zip_i64(a, b, |p, q| Ok(if ukey(*d, q) < ukey(*d, p) { q } else { p }))?,
                *d,
            ),
            _ => return Err(format!("{op:?} of {} and {}", acc.dtype(), x.dtype())),
        };
    }
    if op == VariadicOp::Mean {
        let n = args.len() as f32;
        acc = Array::F32(acc.f32()?.mapv(|v| v / n));
    }
    Ok(acc)
}

/// Softplus of input 0 into register `dst` as `relu(x) + ln(1 + e^−|x|)` (`tmp` a scratch
/// register; `Imm(0)` is 1).
fn softplus_prog(dst: usize, tmp: usize) -> Vec<Micro> {
    vec![
        Micro::Un(UnOp::Abs, tmp, Src::In(0)),
        Micro::Un(UnOp::Neg, tmp, Src::Reg(tmp)),
        Micro::Un(UnOp::Exp, tmp, Src::Reg(tmp)),
        Micro::Bin(BinOp::Add, tmp, Src::Reg(tmp), Src::Imm(0)),
        Micro::Un(UnOp::Log, tmp, Src::Reg(tmp)),
        Micro::Un(UnOp::Relu, dst, Src::In(0)),
        Micro::Bin(BinOp::Add, dst, Src::Reg(dst), Src::Reg(tmp)),
    ]
}

/// `ln(e^x + 1)` (ONNX Softplus), as `x + ln(1 + e^−x)` for positive `x` so that no
/// exponential overflows (an f32 input reaches 3.4e38).
fn softplus(x: f64) -> f64 {
    if x > 0.0 { x + ((-x).exp() + 1.0).ln() } else { (x.exp() + 1.0).ln() }
}

/// One element of a parameterised activation (ONNX's formulas; exponentials in `f64`).
fn activation(kind: ActKind, alpha: f32, beta: f32, v: f32) -> f32 {
    let (x, a, b) = (f64::from(v), f64::from(alpha), f64::from(beta));
    match kind {
        ActKind::Elu => {
            if v < 0.0 {
                (a * (x.exp() - 1.0)) as f32
            } else {
                v
            }
        }
        ActKind::Selu => {
            if v <= 0.0 {
                (b * (a * x.exp() - a)) as f32
            } else {
                (b * x) as f32
            }
        }
        // NaN propagates through both terms.
        ActKind::Celu => (nan_max(x, 0.0) + nan_min(a * ((x / a).exp() - 1.0), 0.0)) as f32,
        ActKind::ThresholdedRelu => {
            if v > alpha {
                v
            } else {
                0.0
            }
        }
        ActKind::Shrink => {
            if v < -alpha {
                v + beta
            } else if v > alpha {
                v - beta
            } else {
                0.0
            }
        }
        // In f64: x / (1 + e^(−alpha·x)).
        ActKind::Swish => (x / (1.0 + (-(a * x)).exp())) as f32,
    }
}

/// An element-wise comparison of two broadcast arrays of one type, as bools; floats compare
/// as IEEE ordered predicates (NaN compares false, `Equal` of NaN too).
fn compare(c: CmpOp, a: &Array, b: &Array) -> R<Array> {
    fn test<T: PartialOrd>(c: CmpOp, p: T, q: T) -> bool {
        match c {
            CmpOp::Equal => p == q,
            CmpOp::Less => p < q,
            CmpOp::Greater => p > q,
            CmpOp::LessOrEqual => p <= q,
            CmpOp::GreaterOrEqual => p >= q,
        }
    }
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let r = match (a, b) {
        (Array::F32(x), Array::F32(y)) => {
            let (xv, yv) = (
                x.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?,
                y.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?,
            );
            Zip::from(&xv).and(&yv).map_collect(|p, q| i64::from(test(c, *p, *q)))
        }
        (Array::Int(x, d), Array::Int(y, _)) => {
            let k = |v: i64| ukey(*d, v);
            zip_i64(x, y, |p, q| Ok(i64::from(test(c, k(p), k(q)))))?
        }
        _ => return Err(format!("{c:?} of {} and {}", a.dtype(), b.dtype())),
    };
    Ok(Array::Int(r, DType::Bool))
}

/// The value of integer `v` of type `d` in an order-preserving `i128` (uint64 is held as its
/// bit pattern, so its upper half reads negative in `i64`).
pub(crate) fn ukey(d: DType, v: i64) -> i128 {
    if d == DType::U64 { i128::from(v as u64) } else { i128::from(v) }
}

/// `p` to the power `q` (as unsigned 64 bits), wrapping: square-and-multiply, as the host.
fn wrapping_pow64(p: i64, q: u64) -> i64 {
    let (mut r, mut b, mut e) = (1i64, p, q);
    while e != 0 {
        if e & 1 == 1 {
            r = r.wrapping_mul(b);
        }
        b = b.wrapping_mul(b);
        e >>= 1;
    }
    r
}

/// `Where`: `x` where `cond` holds, else `y`, the three broadcast together.
fn select(cond: &Array, x: &Array, y: &Array) -> R<Array> {
    let c = cond.ints()?;
    let shape = broadcast_shape(&broadcast_shape(c.shape(), x.shape())?, y.shape())?;
    let cv = c.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?;
    match (x, y) {
        (Array::F32(p), Array::F32(q)) => {
            let (pv, qv) = (
                p.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?,
                q.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?,
            );
            Ok(Array::F32(
                Zip::from(&cv)
                    .and(&pv)
                    .and(&qv)
                    .map_collect(|c, p, q| if *c != 0 { *p } else { *q }),
            ))
        }
        (Array::Int(p, dt), Array::Int(q, _)) => {
            let (pv, qv) = (
                p.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?,
                q.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?,
            );
            Ok(Array::Int(
                Zip::from(&cv)
                    .and(&pv)
                    .and(&qv)
                    .map_collect(|c, p, q| if *c != 0 { *p } else { *q }),
                *dt,
            ))
        }
        _ => Err(format!("Where of {} and {}", x.dtype(), y.dtype())),
    }
}

/// Host lowering: every element of the output from its (broadcast) inputs, in the
/// interpreter's arithmetic: floats in `f32` (transcendentals through `f64` where the
/// interpreter uses it), integers in `i64` truncated to the output's width, integer division
/// and modulo by zero reported through the status instead of executed.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let out = n.outputs[0];
    let odt = b.ty(out)?.dtype;
    let ins: Vec<ValueId> = n.inputs.iter().flatten().copied().collect();
    if ins.is_empty() {
        return Err(b.err(n, "no inputs"));
    }
    let idt: Vec<DType> =
        ins.iter().map(|v| b.ty(*v).map(|t| t.dtype)).collect::<Result<_, _>>()?;
    let op = n.op.clone();
    let opset = b.g.opset;
    let node = n.clone();
    b.map_out(out, &mut |b, idx| {
        let mut xs = Vec::with_capacity(ins.len());
        for v in &ins {
            xs.push(b.load_bcast(*v, idx)?);
        }
        match &op {
            Op::Binary(bop) => host_binary(b, *bop, &xs[0], idt[0], &xs[1], idt[1], odt),
            Op::Unary(UnaryOp::IsNaN) => {
                let c = b.cmpf("uno", &xs[0], &xs[0], "f32");
                Ok(b.bool_byte(&c))
            }
            Op::IsInf { positive, negative } => {
                let pinf = b.let_("arith.constant 0x7F800000 : f32");
                let ninf = b.let_("arith.constant 0xFF800000 : f32");
                let p = b.cmpf("oeq", &xs[0], &pinf, "f32");
                let q = b.cmpf("oeq", &xs[0], &ninf, "f32");
                let (t, fl) = (b.let_("arith.constant true"), b.let_("arith.constant false"));
                let p = if *positive { b.select(&p, &t, &fl, "i1") } else { fl.clone() };
                let q = if *negative { q } else { fl };
                let r = b.op2("arith.ori", &p, &q, "i1");
                Ok(b.bool_byte(&r))
            }
            Op::Compare(c) => {
                let r = if idt[0] == DType::F32 {
                    let pred = match c {
                        CmpOp::Equal => "oeq",
                        CmpOp::Less => "olt",
                        CmpOp::Greater => "ogt",
                        CmpOp::LessOrEqual => "ole",
                        CmpOp::GreaterOrEqual => "oge",
                    };
                    b.cmpf(pred, &xs[0], &xs[1], "f32")
                } else {
                    let (p, q) = (b.widen(&xs[0], idt[0]), b.widen(&xs[1], idt[1]));
                    // Narrower types are widened to exact i64 values; uint64 compares unsigned.
                    let u = idt[0] == DType::U64;
                    let pred = match c {
                        CmpOp::Equal => "eq",
                        CmpOp::Less if u => "ult",
                        CmpOp::Greater if u => "ugt",
                        CmpOp::LessOrEqual if u => "ule",
                        CmpOp::GreaterOrEqual if u => "uge",
                        CmpOp::Less => "slt",
                        CmpOp::Greater => "sgt",
                        CmpOp::LessOrEqual => "sle",
                        CmpOp::GreaterOrEqual => "sge",
                    };
                    b.cmpi(pred, &p, &q, "i64")
                };
                Ok(b.bool_byte(&r))
            }
            Op::Logic { op: lop, .. } => {
                let (p, q) = (b.widen(&xs[0], idt[0]), b.widen(&xs[1], idt[1]));
                let o = match lop {
                    LogicOp::And => "arith.andi",
                    LogicOp::Or => "arith.ori",
                    LogicOp::Xor => "arith.xori",
                };
                let r = b.op2(o, &p, &q, "i64");
                Ok(b.narrow(&r, odt))
            }
            Op::BitShift { left } => {
                let (p, q) = (b.widen(&xs[0], idt[0]), b.widen(&xs[1], idt[1]));
                let width = b.i64c(8 * odt.size() as i64);
                let z = b.i64c(0);
                // A negative shift or one of the width or more (unsigned compare catches both)
                // is not executed (LLVM leaves it undefined): the sign extension's result.
                let big = b.cmpi("uge", &q, &width, "i64");
                let safe = b.select(&big, &z, &q, "i64");
                let o = match (*left, odt == DType::U64) {
                    (true, _) => "arith.shli",
                    (false, false) => "arith.shrsi",
                    (false, true) => "arith.shrui",
                };
                let r = b.op2(o, &p, &safe, "i64");
                let fill = if *left || odt == DType::U64 {
                    z.clone()
                } else {
                    let m1 = b.i64c(-1);
                    let neg = b.cmpi("slt", &p, &z, "i64");
                    b.select(&neg, &m1, &z, "i64")
                };
                let r = b.select(&big, &fill, &r, "i64");
                Ok(b.narrow(&r, odt))
            }
            Op::Activation { kind, alpha, beta } => {
                let x = &xs[0];
                Ok(host_activation(b, *kind, *alpha, *beta, x))
            }
            Op::SwiGlu { alpha } => {
                let s = host_activation(b, ActKind::Swish, *alpha, 0.0, &xs[0]);
                Ok(b.op2("arith.mulf", &s, &xs[1], "f32"))
            }
            Op::PRelu => {
                if odt == DType::F32 {
                    let z = b.f32c(0.0);
                    let neg = b.cmpf("olt", &xs[0], &z, "f32");
                    let m = b.op2("arith.mulf", &xs[1], &xs[0], "f32");
                    Ok(b.select(&neg, &m, &xs[0], "f32"))
                } else {
                    let (p, q) = (b.widen(&xs[0], odt), b.widen(&xs[1], odt));
                    let z = b.i64c(0);
                    let neg = b.cmpi("slt", &p, &z, "i64");
                    let m = b.op2("arith.muli", &q, &p, "i64");
                    let r = b.select(&neg, &m, &p, "i64");
                    Ok(b.narrow(&r, odt))
                }
            }
            Op::Where => {
                let z = b.int(DType::Bool, 0);
                let c = b.cmpi("ne", &xs[0], &z, "i8");
                Ok(b.select(&c, &xs[1], &xs[2], crate::lower::host::scalar(odt)))
            }
            Op::Variadic(vop) => {
                let mut acc = xs[0].clone();
                for x in &xs[1..] {
                    acc = match (vop, odt) {
                        (VariadicOp::Sum | VariadicOp::Mean, _) => {
                            host_binary(b, BinaryOp::Add, &acc, odt, x, odt, odt)?
                        }
                        (VariadicOp::Max, DType::F32) => b.op2("arith.maximumf", &acc, x, "f32"),
                        (VariadicOp::Min, DType::F32) => b.op2("arith.minimumf", &acc, x, "f32"),
                        (m, d) => {
                            let (p, q) = (b.widen(&acc, d), b.widen(x, d));
                            let o = match (*m == VariadicOp::Max, d == DType::U64) {
                                (true, false) => "arith.maxsi",
                                (false, false) => "arith.minsi",
                                (true, true) => "arith.maxui",
                                (false, true) => "arith.minui",
                            };
                            let r = b.op2(o, &p, &q, "i64");
                            b.narrow(&r, d)
                        }
                    };
                }
                if *vop == VariadicOp::Mean && xs.len() > 1 {
                    let c = b.f32c(xs.len() as f32);
                    acc = b.op2("arith.divf", &acc, &c, "f32");
                }
                Ok(acc)
            }
            Op::Unary(u) if odt != DType::F32 => {
                let w = b.widen(&xs[0], odt);
                let z = b.i64c(0);
                let r = match u {
                    UnaryOp::Not => {
                        let one = b.i64c(1);
                        b.op2("arith.xori", &w, &one, "i64")
                    }
                    UnaryOp::BitwiseNot => {
                        let m1 = b.i64c(-1);
                        b.op2("arith.xori", &w, &m1, "i64")
                    }
                    UnaryOp::Sign => {
                        let one = b.i64c(1);
                        let m1 = b.i64c(-1);
                        let pos = b.cmpi("sgt", &w, &z, "i64");
                        let neg = b.cmpi("slt", &w, &z, "i64");
                        let r = b.select(&neg, &m1, &z, "i64");
                        b.select(&pos, &one, &r, "i64")
                    }
                    UnaryOp::Neg => b.op2("arith.subi", &z, &w, "i64"),
                    UnaryOp::Abs => {
                        let neg = b.op2("arith.subi", &z, &w, "i64");
                        let lt = b.cmpi("slt", &w, &z, "i64");
                        b.select(&lt, &neg, &w, "i64")
                    }
                    UnaryOp::Relu => b.op2("arith.maxsi", &w, &z, "i64"),
                    other => return Err(b.err(&node, format!("{other:?} of {odt} on the host"))),
                };
                Ok(b.narrow(&r, odt))
            }
            Op::Unary(u) => {
                let x = &xs[0];
                Ok(match u {
                    UnaryOp::Relu => {
                        let z = b.f32c(0.0);
                        let keep = b.cmpf("ugt", x, &z, "f32");
                        b.select(&keep, x, &z, "f32")
                    }
                    UnaryOp::Sigmoid => {
                        let d = b.let_(&format!("arith.extf {x} : f32 to f64"));
                        let neg = b.op1("arith.negf", &d, "f64");
                        let e = b.op1("math.exp", &neg, "f64");
                        let one = b.f64c(1.0);
                        let s = b.op2("arith.addf", &one, &e, "f64");
                        let r = b.op2("arith.divf", &one, &s, "f64");
                        b.let_(&format!("arith.truncf {r} : f64 to f32"))
                    }
                    UnaryOp::Tanh | UnaryOp::Exp => {
                        let d = b.let_(&format!("arith.extf {x} : f32 to f64"));
                        let f = if *u == UnaryOp::Tanh { "math.tanh" } else { "math.exp" };
                        let r = b.op1(f, &d, "f64");
                        b.let_(&format!("arith.truncf {r} : f64 to f32"))
                    }
                    UnaryOp::Erf => {
                        let d = b.let_(&format!("arith.extf {x} : f32 to f64"));
                        let r = b.op1("math.erf", &d, "f64");
                        b.let_(&format!("arith.truncf {r} : f64 to f32"))
                    }
                    UnaryOp::Sqrt => b.op1("math.sqrt", x, "f32"),
                    UnaryOp::Neg => b.op1("arith.negf", x, "f32"),
                    UnaryOp::Abs => b.op1("math.absf", x, "f32"),
                    UnaryOp::HardSwish => {
                        let six = b.f32c(6.0);
                        let half = b.f32c(0.5);
                        let t = b.op2("arith.divf", x, &six, "f32");
                        let t = b.op2("arith.addf", &t, &half, "f32");
                        let t = clamp01(b, &t);
                        b.op2("arith.mulf", x, &t, "f32")
                    }
                    UnaryOp::Reciprocal => {
                        let one = b.f32c(1.0);
                        b.op2("arith.divf", &one, x, "f32")
                    }
                    UnaryOp::Floor => b.op1("math.floor", x, "f32"),
                    UnaryOp::Ceil => b.op1("math.ceil", x, "f32"),
                    UnaryOp::Round => b.op1("math.roundeven", x, "f32"),
                    UnaryOp::Sign => {
                        let (z, one, m1) = (b.f32c(0.0), b.f32c(1.0), b.f32c(-1.0));
                        let pos = b.cmpf("ogt", x, &z, "f32");
                        let neg = b.cmpf("olt", x, &z, "f32");
                        let r = b.select(&neg, &m1, x, "f32");
                        b.select(&pos, &one, &r, "f32")
                    }
                    UnaryOp::Softsign => {
                        let one = b.f32c(1.0);
                        let a = b.op1("math.absf", x, "f32");
                        let d = b.op2("arith.addf", &one, &a, "f32");
                        b.op2("arith.divf", x, &d, "f32")
                    }
                    UnaryOp::Log
                    | UnaryOp::Sin
                    | UnaryOp::Cos
                    | UnaryOp::Tan
                    | UnaryOp::Asin
                    | UnaryOp::Acos
                    | UnaryOp::Atan
                    | UnaryOp::Sinh
                    | UnaryOp::Cosh
                    | UnaryOp::Asinh
                    | UnaryOp::Acosh
                    | UnaryOp::Atanh => {
                        let d = b.let_(&format!("arith.extf {x} : f32 to f64"));
                        let f = match u {
                            UnaryOp::Log => "math.log",
                            UnaryOp::Sin => "math.sin",
                            UnaryOp::Cos => "math.cos",
                            UnaryOp::Tan => "math.tan",
                            UnaryOp::Asin => "math.asin",
                            UnaryOp::Acos => "math.acos",
                            UnaryOp::Atan => "math.atan",
                            UnaryOp::Sinh => "math.sinh",
                            UnaryOp::Cosh => "math.cosh",
                            UnaryOp::Asinh => "math.asinh",
                            UnaryOp::Acosh => "math.acosh",
                            _ => "math.atanh",
                        };
                        let r = b.op1(f, &d, "f64");
                        b.let_(&format!("arith.truncf {r} : f64 to f32"))
                    }
                    UnaryOp::Softplus | UnaryOp::Mish => {
                        let d = b.let_(&format!("arith.extf {x} : f32 to f64"));
                        let sp = host_softplus(b, &d);
                        let r = if *u == UnaryOp::Mish {
                            let t = b.op1("math.tanh", &sp, "f64");
                            b.op2("arith.mulf", &d, &t, "f64")
                        } else {
                            sp
                        };
                        b.let_(&format!("arith.truncf {r} : f64 to f32"))
                    }
                    UnaryOp::Not | UnaryOp::BitwiseNot | UnaryOp::IsNaN => {
                        return Err(b.err(&node, format!("{u:?} of {odt} on the host")));
                    }
                })
            }
            Op::LeakyRelu { alpha } => {
                let x = &xs[0];
                let z = b.f32c(0.0);
                let a = b.f32c(*alpha);
                let neg = b.cmpf("olt", x, &z, "f32");
                let m = b.op2("arith.mulf", &a, x, "f32");
                Ok(b.select(&neg, &m, x, "f32"))
            }
            Op::HardSigmoid { alpha, beta } => {
                let (a, c) = (b.f32c(*alpha), b.f32c(*beta));
                let t = b.op2("arith.mulf", &a, &xs[0], "f32");
                let t = b.op2("arith.addf", &t, &c, "f32");
                Ok(clamp01(b, &t))
            }
            Op::Gelu { tanh } => {
                let v = b.let_(&format!("arith.extf {} : f32 to f64", xs[0]));
                let half = b.f64c(0.5);
                let one = b.f64c(1.0);
                let hv = b.op2("arith.mulf", &half, &v, "f64");
                let inner = if *tanh {
                    let k = b.f64c((2.0 / std::f64::consts::PI).sqrt());
                    let c = b.f64c(0.044715);
                    let v2 = b.op2("arith.mulf", &c, &v, "f64");
                    let v3 = b.op2("arith.mulf", &v2, &v, "f64");
                    let v3 = b.op2("arith.mulf", &v3, &v, "f64");
                    let s = b.op2("arith.addf", &v, &v3, "f64");
                    let s = b.op2("arith.mulf", &k, &s, "f64");
                    b.op1("math.tanh", &s, "f64")
                } else {
                    let r2 = b.f64c(std::f64::consts::SQRT_2);
                    let s = b.op2("arith.divf", &v, &r2, "f64");
                    b.op1("math.erf", &s, "f64")
                };
                let s = b.op2("arith.addf", &one, &inner, "f64");
                let r = b.op2("arith.mulf", &hv, &s, "f64");
                Ok(b.let_(&format!("arith.truncf {r} : f64 to f32")))
            }
            Op::Clip { min, max } => {
                // Bounds: inputs 1 and 2 when present (their first element), else the
                // attributes before opset 11, else the type's range.
                let bound =
                    |b: &mut HostBuilder<'_>, i: usize| -> Result<Option<String>, LowerError> {
                        match node.inputs.get(i).copied().flatten() {
                            Some(v) => {
                                let t = b.ty(v)?;
                                let zero: Vec<String> = t.shape.iter().map(|_| b.idx(0)).collect();
                                if t.shape.iter().product::<usize>() == 0 {
                                    return Ok(None);
                                }
                                Ok(Some(b.load(v, &zero)?))
                            }
                            None => Ok(None),
                        }
                    };
                let (lo, hi) = (bound(b, 1)?, bound(b, 2)?);
                let x = &xs[0];
                if odt == DType::F32 {
                    let lo = match lo {
                        Some(l) => l,
                        None => b.f32c(if opset < 11 { min.unwrap_or(f32::MIN) } else { f32::MIN }),
                    };
                    let hi = match hi {
                        Some(h) => h,
                        None => b.f32c(if opset < 11 { max.unwrap_or(f32::MAX) } else { f32::MAX }),
                    };
                    let a = b.op2("arith.maximumf", x, &lo, "f32");
                    Ok(b.op2("arith.minimumf", &a, &hi, "f32"))
                } else {
                    let mut w = b.widen(x, odt);
                    if let Some(h) = hi {
                        let h = b.widen(&h, odt);
                        w = b.op2("arith.minsi", &w, &h, "i64");
                    }
                    if let Some(l) = lo {
                        let l = b.widen(&l, odt);
                        w = b.op2("arith.maxsi", &w, &l, "i64");
                    }
                    Ok(b.narrow(&w, odt))
                }
            }
            other => Err(LowerError::msg(super::misrouted(other, FAMILY))),
        }
    })
}

/// `ln(e^x + 1)` of an `f64`, as [`softplus`].
fn host_softplus(b: &mut HostBuilder<'_>, x: &str) -> String {
    // As [`softplus`]: ln(e^−|x| + 1) plus x where x is positive.
    let z = b.f64c(0.0);
    let pos = b.cmpf("ogt", x, &z, "f64");
    let nx = b.op1("arith.negf", x, "f64");
    let t = b.select(&pos, &nx, x, "f64");
    let e = b.op1("math.exp", &t, "f64");
    let one = b.f64c(1.0);
    let s = b.op2("arith.addf", &e, &one, "f64");
    let l = b.op1("math.log", &s, "f64");
    let xl = b.op2("arith.addf", x, &l, "f64");
    b.select(&pos, &xl, &l, "f64")
}

/// One element of a parameterised activation, as [`activation`].
fn host_activation(
    b: &mut HostBuilder<'_>,
    kind: ActKind,
    alpha: f32,
    beta: f32,
    x: &str,
) -> String {
    let ext = |b: &mut HostBuilder<'_>, v: &str| b.let_(&format!("arith.extf {v} : f32 to f64"));
    let trunc =
        |b: &mut HostBuilder<'_>, v: &str| b.let_(&format!("arith.truncf {v} : f64 to f32"));
    let z = b.f32c(0.0);
    match kind {
        ActKind::Elu | ActKind::Selu => {
            let d = ext(b, x);
            let e = b.op1("math.exp", &d, "f64");
            let a = b.f64c(f64::from(alpha));
            let neg_branch = if kind == ActKind::Elu {
                let one = b.f64c(1.0);
                let t = b.op2("arith.subf", &e, &one, "f64");
                b.op2("arith.mulf", &a, &t, "f64")
            } else {
                let g = b.f64c(f64::from(beta));
                let t = b.op2("arith.mulf", &a, &e, "f64");
                let t = b.op2("arith.subf", &t, &a, "f64");
                b.op2("arith.mulf", &g, &t, "f64")
            };
            let neg_branch = trunc(b, &neg_branch);
            let pos_branch = if kind == ActKind::Elu {
                x.to_string()
            } else {
                let g = b.f64c(f64::from(beta));
                let t = b.op2("arith.mulf", &g, &d, "f64");
                trunc(b, &t)
            };
            let pred = if kind == ActKind::Elu { "olt" } else { "ole" };
            let neg = b.cmpf(pred, x, &z, "f32");
            b.select(&neg, &neg_branch, &pos_branch, "f32")
        }
        ActKind::Celu => {
            let d = ext(b, x);
            let a = b.f64c(f64::from(alpha));
            let zd = b.f64c(0.0);
            let one = b.f64c(1.0);
            let t = b.op2("arith.divf", &d, &a, "f64");
            let t = b.op1("math.exp", &t, "f64");
            let t = b.op2("arith.subf", &t, &one, "f64");
            let t = b.op2("arith.mulf", &a, &t, "f64");
            let lo = b.op2("arith.minimumf", &t, &zd, "f64");
            let hi = b.op2("arith.maximumf", &d, &zd, "f64");
            let r = b.op2("arith.addf", &hi, &lo, "f64");
            trunc(b, &r)
        }
        ActKind::ThresholdedRelu => {
            let a = b.f32c(alpha);
            let keep = b.cmpf("ogt", x, &a, "f32");
            b.select(&keep, x, &z, "f32")
        }
        ActKind::Shrink => {
            let (l, nl, bias) = (b.f32c(alpha), b.f32c(-alpha), b.f32c(beta));
            let lo = b.cmpf("olt", x, &nl, "f32");
            let hi = b.cmpf("ogt", x, &l, "f32");
            let plus = b.op2("arith.addf", x, &bias, "f32");
            let minus = b.op2("arith.subf", x, &bias, "f32");
            let r = b.select(&hi, &minus, &z, "f32");
            b.select(&lo, &plus, &r, "f32")
        }
        ActKind::Swish => {
            let d = ext(b, x);
            let a = b.f64c(f64::from(alpha));
            let one = b.f64c(1.0);
            let t = b.op2("arith.mulf", &a, &d, "f64");
            let t = b.op1("arith.negf", &t, "f64");
            let t = b.op1("math.exp", &t, "f64");
            let t = b.op2("arith.addf", &one, &t, "f64");
            let r = b.op2("arith.divf", &d, &t, "f64");
            trunc(b, &r)
        }
    }
}

/// `min(max(t, 0), 1)` with NaN propagating, as `f32::clamp`.
fn clamp01(b: &mut HostBuilder<'_>, t: &str) -> String {
    let (z, one) = (b.f32c(0.0), b.f32c(1.0));
    let a = b.op2("arith.maximumf", t, &z, "f32");
    b.op2("arith.minimumf", &a, &one, "f32")
}

/// One binary element `p op q` (types `pd`, `qd`) of output type `od`, as [`binary`].
pub(crate) fn host_binary(
    b: &mut HostBuilder<'_>,
    op: BinaryOp,
    p: &str,
    pd: DType,
    q: &str,
    qd: DType,
    od: DType,
) -> Result<String, LowerError> {
    // Pow with a float exponent on an integer base, or an integer exponent on a float base:
    // through f32 as the interpreter does.
    if op == BinaryOp::Pow && pd != DType::F32 && qd == DType::F32 {
        let pf = b.convert(p, pd, DType::F32);
        let r = host_binary(b, op, &pf, DType::F32, q, qd, DType::F32)?;
        return Ok(b.convert(&r, DType::F32, od));
    }
    if op == BinaryOp::Pow && pd == DType::F32 && qd != DType::F32 {
        let qf = b.convert(q, qd, DType::F32);
        return host_binary(b, op, p, pd, &qf, DType::F32, od);
    }
    if pd == DType::F32 {
        let f = |o: &str, b: &mut HostBuilder<'_>| b.op2(o, p, q, "f32");
        return Ok(match op {
            BinaryOp::Add => f("arith.addf", b),
            BinaryOp::Sub => f("arith.subf", b),
            BinaryOp::Mul => f("arith.mulf", b),
            BinaryOp::Div => f("arith.divf", b),
            BinaryOp::Pow => {
                let x = b.let_(&format!("arith.extf {p} : f32 to f64"));
                let y = b.let_(&format!("arith.extf {q} : f32 to f64"));
                let r = b.op2("math.powf", &x, &y, "f64");
                b.let_(&format!("arith.truncf {r} : f64 to f32"))
            }
            BinaryOp::Fmod => f("arith.remf", b),
            BinaryOp::Mod => {
                // numpy's mod: the sign of the divisor.
                let r = f("arith.remf", b);
                let z = b.f32c(0.0);
                let nz = b.cmpf("une", &r, &z, "f32");
                let rn = b.cmpf("olt", &r, &z, "f32");
                let qn = b.cmpf("olt", q, &z, "f32");
                let differ = b.op2("arith.xori", &rn, &qn, "i1");
                let fix = b.op2("arith.andi", &nz, &differ, "i1");
                let s = b.op2("arith.addf", &r, q, "f32");
                b.select(&fix, &s, &r, "f32")
            }
        });
    }
    let (x, y) = (b.widen(p, pd), b.widen(q, qd));
    let z = b.i64c(0);
    let one = b.i64c(1);
    let m1 = b.i64c(-1);
    if pd == DType::U64 && matches!(op, BinaryOp::Div | BinaryOp::Mod | BinaryOp::Fmod) {
        // Unsigned: no negative operands, so Mod and Fmod agree and only 0 is unsafe.
        let zero = b.cmpi("eq", &y, &z, "i64");
        b.fail_if(&zero, if op == BinaryOp::Div { 1 } else { 2 });
        let safe = b.select(&zero, &one, &y, "i64");
        let o = if op == BinaryOp::Div { "arith.divui" } else { "arith.remui" };
        let r = b.op2(o, &x, &safe, "i64");
        return Ok(b.select(&zero, &z, &r, "i64"));
    }
    let r = match op {
        BinaryOp::Add => b.op2("arith.addi", &x, &y, "i64"),
        BinaryOp::Sub => b.op2("arith.subi", &x, &y, "i64"),
        BinaryOp::Mul => b.op2("arith.muli", &x, &y, "i64"),
        BinaryOp::Fmod => {
            let zero = b.cmpi("eq", &y, &z, "i64");
            b.fail_if(&zero, 2);
            // Neither a zero divisor nor i64::MIN % -1 reaches the remainder (both trap).
            let minus1 = b.cmpi("eq", &y, &m1, "i64");
            let unsafe_ = b.op2("arith.ori", &zero, &minus1, "i1");
            let safe = b.select(&unsafe_, &one, &y, "i64");
            let r = b.op2("arith.remsi", &x, &safe, "i64");
            b.select(&unsafe_, &z, &r, "i64")
        }
        BinaryOp::Div | BinaryOp::Mod => {
            let zero = b.cmpi("eq", &y, &z, "i64");
            b.fail_if(&zero, if op == BinaryOp::Div { 1 } else { 2 });
            // Neither a zero divisor nor i64::MIN / -1 reaches the division (both trap).
            let minus1 = b.cmpi("eq", &y, &m1, "i64");
            let unsafe_ = b.op2("arith.ori", &zero, &minus1, "i1");
            let safe = b.select(&unsafe_, &one, &y, "i64");
            if op == BinaryOp::Div {
                let d = b.op2("arith.divsi", &x, &safe, "i64");
                let neg = b.op2("arith.subi", &z, &x, "i64");
                let d = b.select(&minus1, &neg, &d, "i64");
                b.select(&zero, &z, &d, "i64")
            } else {
                let r = b.op2("arith.remsi", &x, &safe, "i64");
                let r = b.select(&unsafe_, &z, &r, "i64");
                let nz = b.cmpi("ne", &r, &z, "i64");
                let rn = b.cmpi("slt", &r, &z, "i64");
                let qn = b.cmpi("slt", &y, &z, "i64");
                let differ = b.op2("arith.xori", &rn, &qn, "i1");
                let fix = b.op2("arith.andi", &nz, &differ, "i1");
                let s = b.op2("arith.addi", &r, &y, "i64");
                b.select(&fix, &s, &r, "i64")
            }
        }
        BinaryOp::Pow => {
            // Square-and-multiply over the exponent's 64 bits (wrapping, as i64::wrapping_pow);
            // a negative exponent truncates the real power: 1 for base 1, ±1 for base -1, 0
            // otherwise, and 0 to a negative power is an error.
            let r = b.fold_n(
                64,
                &[one.clone(), x.clone(), y.clone()],
                &["i64", "i64", "i64"],
                &mut |b, _, acc| {
                    let one = b.i64c(1);
                    let bit = b.op2("arith.andi", &acc[2], &one, "i64");
                    let zero = b.i64c(0);
                    let set = b.cmpi("ne", &bit, &zero, "i64");
                    let m = b.op2("arith.muli", &acc[0], &acc[1], "i64");
                    let r = b.select(&set, &m, &acc[0], "i64");
                    let sq = b.op2("arith.muli", &acc[1], &acc[1], "i64");
                    let e = b.op2("arith.shrui", &acc[2], &one, "i64");
                    Ok(vec![r, sq, e])
                },
            )?;
            let pos = r[0].clone();
            if qd == DType::U64 {
                return Ok(b.narrow(&pos, od));
            }
            let negexp = b.cmpi("slt", &y, &z, "i64");
            let base0 = b.cmpi("eq", &x, &z, "i64");
            let bad = b.op2("arith.andi", &negexp, &base0, "i1");
            b.fail_if(&bad, 3);
            let base1 = b.cmpi("eq", &x, &one, "i64");
            let basem1 = b.cmpi("eq", &x, &m1, "i64");
            let two = b.i64c(2);
            let par = b.op2("arith.remsi", &y, &two, "i64");
            let even = b.cmpi("eq", &par, &z, "i64");
            let pm1 = b.select(&even, &one, &m1, "i64");
            let n = b.select(&basem1, &pm1, &z, "i64");
            let n = b.select(&base1, &one, &n, "i64");
            b.select(&negexp, &n, &pos, "i64")
        }
    };
    Ok(b.narrow(&r, od))
}
