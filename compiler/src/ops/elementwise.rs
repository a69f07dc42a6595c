//! Element-wise arithmetic and activations: Add, Sub, Mul, Div, Pow, Mod, Relu, Sigmoid,
//! Tanh, Exp, Erf, Sqrt, HardSwish, Neg, Abs, LeakyRelu, Clip, HardSigmoid, Gelu, and the variadic
//! Sum, Mean, Max, Min.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer and device lowering.

use accelc_isa::{BinOp, UnOp};
use ndarray::{ArrayD, IxDyn, Zip};

use super::Work;
use crate::interp::*;
use crate::ir::*;
use crate::lower::LowerError;
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
];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, opset: i64) -> Result<Op, String> {
    let unary = |u| Ok(Op::Unary(u));
    let binary = |b| Ok(Op::Binary(b));
    match op_type {
        "Add" => binary(BinaryOp::Add),
        "Sub" => binary(BinaryOp::Sub),
        "Mul" => binary(BinaryOp::Mul),
        "Div" => binary(BinaryOp::Div),
        "Pow" => binary(BinaryOp::Pow),
        "Mod" if a.i64("fmod", 0) != 0 => Err("Mod with fmod=1 is not supported".into()),
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
pub(crate) fn infer(_g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = || input(ins, 0);
    match &node.op {
        // Integers only where ONNX defines them (Neg, Abs, Relu); the rest are float-only.
        Op::Unary(u)
            if x()?.dtype != DType::F32
                && !matches!(u, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu) =>
        {
            Err(format!("{u:?} of {} (ONNX defines it for floats)", x()?.dtype))
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
        // Integer Neg, Abs and Relu (ONNX defines them for signed integers; the others are
        // float-only and refused by the shape rule): in the type's width, wrapping as numpy
        // does (Neg and Abs of the most negative value give it back).
        Op::Unary(op @ (UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu))
            if matches!(arg(args, 0)?, Array::Int(..)) =>
        {
            let Array::Int(x, dt) = arg(args, 0)? else {
                return Err("internal: not integer".into());
            };
            let wrap = |v: i64| match dt {
                DType::I8 => i64::from(v as i8),
                DType::U8 | DType::Bool => i64::from(v as u8),
                DType::I32 => i64::from(v as i32),
                _ => v,
            };
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
        Op::Binary(_) => {}
        Op::Unary(_) => {}
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
                BinaryOp::Mod => return Err(err("Mod is not lowered")),
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
            };
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
        Op::Unary(UnaryOp::Relu | UnaryOp::Neg | UnaryOp::Abs) => (1, false),
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
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Mod" => counts(2, 2, 1, 1),
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
        (Array::F32(_), Array::Int(y, _)) if op == BinaryOp::Pow => {
            binary(op, a, &Array::F32(y.mapv(|v| v as f32)))
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
        })?)),
        (Array::Int(x, dt), Array::Int(y, _)) => Ok(Array::Int(
            zip_i64(x, y, |p, q| match op {
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
                BinaryOp::Pow => Ok(p.wrapping_pow(q.min(u32::MAX as i64) as u32)),
                BinaryOp::Mod if q == 0 => Err("integer modulo by zero".into()),
                // ONNX Mod (fmod = 0): the result has the sign of the divisor.
                BinaryOp::Mod => {
                    Ok(p.rem_euclid(q) + if q < 0 && p.rem_euclid(q) != 0 { q } else { 0 })
                }
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
            (VariadicOp::Max, Array::Int(a, d), Array::Int(b, _)) => {
                Array::Int(zip_i64(a, b, |p, q| Ok(p.max(q)))?, *d)
            }
            (VariadicOp::Min, Array::Int(a, d), Array::Int(b, _)) => {
                Array::Int(zip_i64(a, b, |p, q| Ok(p.min(q)))?, *d)
            }
            _ => return Err(format!("{op:?} of {} and {}", acc.dtype(), x.dtype())),
        };
    }
    if op == VariadicOp::Mean {
        let n = args.len() as f32;
        acc = Array::F32(acc.f32()?.mapv(|v| v / n));
    }
    Ok(acc)
}
