//! Reductions over axes: ReduceMean, ReduceSum, ReduceMax.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer and device lowering.

use ndarray::{ArrayD, Axis};

use super::Work;
use crate::interp::axis as norm_axis;
use crate::interp::*;
use crate::ir::*;
use crate::lower::LowerError;
use crate::lower::host::HostBuilder;
use crate::lower::schedule::*;
use crate::lower::view::ViewOp;
use crate::onnx::Attrs;
use crate::ops::{Arity, counts};
use crate::shape::*;
use crate::text::*;

type R<T> = Result<T, String>;

/// The family's name in the registry.
pub(crate) const FAMILY: &str = "reduce";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &["ReduceMean", "ReduceSum", "ReduceMax"];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, opset: i64) -> Result<Op, String> {
    match op_type {
        "ReduceMean" | "ReduceSum" | "ReduceMax" => {
            let op = match op_type {
                "ReduceMean" => ReduceKind::Mean,
                "ReduceSum" => ReduceKind::Sum,
                _ => ReduceKind::Max,
            };
            // Axes moved from an attribute to an input in opset 13 (ReduceSum) and 18 (others).
            let axes_input = if op == ReduceKind::Sum { opset >= 13 } else { opset >= 18 };
            Ok(Op::Reduce {
                op,
                axes: if axes_input { None } else { a.ints("axes") },
                keepdims: a.i64("keepdims", 1) != 0,
                noop_with_empty_axes: a.i64("noop_with_empty_axes", 0) != 0,
            })
        }
        other => Err(super::misrouted_name(other, FAMILY)),
    }
}

/// Output types from input types `ins` (and constant shape operands of `g`).
pub(crate) fn infer(g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = || input(ins, 0);
    match &node.op {
        Op::Reduce { axes, keepdims, noop_with_empty_axes, .. } => {
            let t = x()?;
            let axes = match axes {
                Some(a) => a.clone(),
                None => const_ints(g, node, 1)?.unwrap_or_default(),
            };
            if axes.is_empty() && *noop_with_empty_axes {
                return same(t);
            }
            let ks: Vec<usize> = if axes.is_empty() {
                (0..t.shape.len()).collect()
            } else {
                axes.iter().map(|a| axis(*a, t.shape.len())).collect::<R<_>>()?
            };
            // ONNX's reduction shape inference refuses an axis named twice (also as -1 and
            // rank - 1).
            for (i, k) in ks.iter().enumerate() {
                if ks[..i].contains(k) {
                    return Err(format!("axis {k} is reduced twice (axes {axes:?})"));
                }
            }
            let shape = t
                .shape
                .iter()
                .enumerate()
                .filter_map(|(i, d)| if ks.contains(&i) { keepdims.then_some(1) } else { Some(*d) })
                .collect();
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// Reference semantics: the outputs for inputs `args` (the oracle the device is checked
/// against).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let one = |a: Array| Ok(vec![a]);
    match &node.op {
        Op::Reduce { op, axes, keepdims, noop_with_empty_axes } => {
            let input = arg(args, 0)?;
            // Reduce in f64: exact for integers below 2^53, and a more accurate float reference.
            let x: ArrayD<f64> = match input {
                Array::F32(a) => a.mapv(f64::from),
                Array::Int(a, _) => a.mapv(|v| v as f64),
            };
            let axes: Vec<i64> = match axes {
                Some(a) => a.clone(),
                None => opt(args, 1)
                    .map(|a| a.ints().map(|v| v.iter().copied().collect()))
                    .transpose()?
                    .unwrap_or_default(),
            };
            if axes.is_empty() && *noop_with_empty_axes {
                return one(input.clone());
            }
            let mut ks: Vec<usize> = if axes.is_empty() {
                (0..x.ndim()).collect()
            } else {
                axes.iter().map(|a| axis(*a, x.ndim())).collect::<R<_>>()?
            };
            ks.sort_unstable();
            ks.dedup();
            let mut y = x;
            for &k in ks.iter().rev() {
                y = match op {
                    ReduceKind::Sum => y.sum_axis(Axis(k)),
                    ReduceKind::Mean => y.mean_axis(Axis(k)).ok_or("mean of an empty axis")?,
                    ReduceKind::Max => {
                        y.fold_axis(Axis(k), f64::NEG_INFINITY, |a, b| nan_max(*a, *b))
                    }
                };
                if *keepdims {
                    y.insert_axis_inplace(Axis(k));
                }
            }
            one(match input {
                Array::F32(_) => Array::F32(y.mapv(|v| v as f32)),
                // The maximum of nothing is the type's smallest value (false for bool).
                Array::Int(_, dt) => {
                    let least = match dt {
                        DType::I8 => i64::from(i8::MIN),
                        DType::I32 => i64::from(i32::MIN),
                        DType::I64 => i64::MIN,
                        _ => 0,
                    };
                    Array::Int(
                        y.mapv(|v| if v == f64::NEG_INFINITY { least } else { v as i64 }),
                        *dt,
                    )
                }
            })
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    if let Op::Reduce { axes, keepdims, noop_with_empty_axes, .. } = op {
        if let Some(ax) = axes {
            a.push(format!("axes: ints = {}", ints(ax)));
        }
        a.push(format!("keepdims: int = {}", i64::from(*keepdims)));
        if *noop_with_empty_axes {
            a.push("noop_with_empty_axes: int = 1".into());
        }
    }
}

/// Device lowering: `n` (node `idx` of the graph) as kernel steps of `b`, or the constraint
/// that keeps it off the device.
pub(crate) fn lower(b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    let name = n.name.clone();
    let err = |m: &str| LowerError::at(&name, m.to_string());
    match &n.op {
        Op::Reduce { op, axes, noop_with_empty_axes, .. } => {
            let x0 = b.input(n, 0)?;
            let xs = b.shape(x0);
            let rank = xs.len();
            let axes = match b.opt_input(n, 1) {
                Some(t) => {
                    Some(b.const_i64(t).ok_or_else(|| err("reduction axes must be constant"))?)
                }
                None => axes.clone(),
            };
            let mut ax: Vec<usize> = match axes {
                Some(a) if !a.is_empty() => a
                    .iter()
                    .map(|v| norm_axis(*v, rank))
                    .collect::<Result<_, _>>()
                    .map_err(|e| err(&e))?,
                _ if *noop_with_empty_axes => vec![],
                _ => (0..rank).collect(),
            };
            ax.sort_unstable();
            ax.dedup();
            let out = b.out(n, 0)?;
            if ax.is_empty() {
                copy_step(b, &name, out, vec![ViewOp::Reshape(xs.clone())], x0, vec![]);
                return Ok(());
            }
            // Move the reduced axes last (a copy unless they already are).
            let keep: Vec<usize> = (0..rank).filter(|a| !ax.contains(a)).collect();
            let perm: Vec<usize> = keep.iter().chain(&ax).copied().collect();
            let x = if perm.iter().enumerate().all(|(i, p)| i == *p) {
                b.layout(x0, false)
            } else {
                permuted(b, x0, perm, "reduced-last", &format!("{name}:permute"))
            };
            let len: usize = ax.iter().map(|a| xs[*a]).product();
            if len == 0 {
                // The reduction of nothing is its identity.
                let value = match (op, b.s.tens[out].dtype) {
                    (ReduceKind::Mean, _) => {
                        return Err(err("the mean of an empty axis is undefined"));
                    }
                    (ReduceKind::Sum, _) => 0,
                    (ReduceKind::Max, DType::F32) => f32::NEG_INFINITY.to_bits(),
                    // The least value of the type, as a repeated 32-bit pattern.
                    (ReduceKind::Max, DType::U8 | DType::Bool) => 0,
                    (ReduceKind::Max, DType::I8) => 0x8080_8080,
                    (ReduceKind::Max, DType::I32) => 0x8000_0000,
                    (ReduceKind::Max, DType::I64) => return Err(err("int64 is not a device type")),
                };
                b.step(Kernel::Fill { out, value }, &name, Some(out), vec![]);
                return Ok(());
            }
            rowwise(b, &name, x, out, keep.len(), RowKind::Reduce(*op), vec![])
        }
        other => Err(LowerError::at(&n.name, super::misrouted(other, FAMILY))),
    }
}

/// Cost inputs: two vector passes per output element.
pub(crate) fn work(_op: &Op, _inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    Work::Vector { passes: 2, slow: false }
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`
/// (the operator schemas' `min_input`, `max_input`, `min_output`, `max_output`).
pub(crate) fn arity(op_type: &str, opset: i64) -> Arity {
    match op_type {
        "ReduceSum" if opset >= 13 => counts(1, 2, 1, 1),
        "ReduceMean" | "ReduceMax" if opset >= 18 => counts(1, 2, 1, 1),
        _ => counts(1, 1, 1, 1),
    }
}

/// Input 1, the axes (opsets where they are an input), determines the output shape.
pub(crate) fn shape_operand(_op: &Op, i: usize) -> bool {
    i == 1
}

/// Host lowering: ReduceSum, ReduceMean and ReduceMax over constant axes, floats summed in
/// `f64` as the reference does, integers in `i64` (a mean truncated toward zero).
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
    let xt = b.ty(x)?;
    let out = n.outputs[0];
    let Op::Reduce { op, axes, keepdims, noop_with_empty_axes } = &n.op else {
        return Err(LowerError::msg(super::misrouted(&n.op, FAMILY)));
    };
    let axes: Vec<i64> = match axes {
        Some(a) => a.clone(),
        None => match n.inputs.get(1).copied().flatten() {
            Some(v) => {
                let c =
                    b.g.value(v)
                        .constant
                        .as_ref()
                        .ok_or_else(|| b.err(n, "axes must be constant"))?;
                Array::from_tensor(c).ints().map_err(|e| b.err(n, e))?.iter().copied().collect()
            }
            None => vec![],
        },
    };
    let rank = xt.shape.len();
    let dt = xt.dtype;
    if axes.is_empty() && *noop_with_empty_axes {
        return b.map_out(out, &mut |b, idx| b.load(x, idx));
    }
    let mut ks: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.iter()
            .map(|a| norm_axis(*a, rank))
            .collect::<Result<_, _>>()
            .map_err(|e| b.err(n, e))?
    };
    ks.sort_unstable();
    ks.dedup();
    let red: Vec<usize> = ks.iter().map(|k| xt.shape[*k]).collect();
    let count: usize = red.iter().product();
    let (op, keep) = (*op, *keepdims);
    let float = dt == DType::F32;
    b.map_out(out, &mut |b, idx| {
        let (init, ty) = match (op, float) {
            (ReduceKind::Max, true) => (b.f64c(f64::NEG_INFINITY), "f64"),
            (_, true) => (b.f64c(0.0), "f64"),
            (ReduceKind::Max, false) => {
                let least = match dt {
                    DType::I8 => i64::from(i8::MIN),
                    DType::I32 => i64::from(i32::MIN),
                    DType::I64 => i64::MIN,
                    _ => 0,
                };
                (b.i64c(least), "i64")
            }
            (_, false) => (b.i64c(0), "i64"),
        };
        let r = b.fold_n(count, &[init], &[ty], &mut |b, t, acc| {
            let ri = b.delinearize(t, &red);
            let mut xi = Vec::with_capacity(rank);
            let mut o = 0;
            let mut r = 0;
            for a in 0..rank {
                if ks.contains(&a) {
                    xi.push(ri[r].clone());
                    r += 1;
                    if keep {
                        o += 1;
                    }
                } else {
                    xi.push(idx[o].clone());
                    o += 1;
                }
            }
            let v = b.load(x, &xi)?;
            Ok(vec![if float {
                let v = b.f64_of(&v);
                match op {
                    ReduceKind::Max => b.op2("arith.maximumf", &acc[0], &v, "f64"),
                    _ => b.op2("arith.addf", &acc[0], &v, "f64"),
                }
            } else {
                let v = b.widen(&v, dt);
                match op {
                    ReduceKind::Max => b.op2("arith.maxsi", &acc[0], &v, "i64"),
                    _ => b.op2("arith.addi", &acc[0], &v, "i64"),
                }
            }])
        })?;
        let mut v = r[0].clone();
        if op == ReduceKind::Mean {
            let c = b.f64c(count as f64);
            if float {
                v = b.op2("arith.divf", &v, &c, "f64");
            } else {
                let f = b.let_(&format!("arith.sitofp {v} : i64 to f64"));
                let q = b.op2("arith.divf", &f, &c, "f64");
                v = b.let_(&format!("arith.fptosi {q} : f64 to i64"));
            }
        }
        Ok(if float { b.f32_of(&v) } else { b.narrow(&v, dt) })
    })
}
