//! Reductions over axes: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL1,
//! ReduceL2, ReduceSumSquare, ReduceLogSum, ReduceLogSumExp; ArgMax and ArgMin.
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
pub(crate) const ONNX: &[&str] = &[
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ArgMax",
    "ArgMin",
];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, opset: i64) -> Result<Op, String> {
    match op_type {
        "ArgMax" | "ArgMin" => Ok(Op::ArgReduce {
            max: op_type == "ArgMax",
            axis: a.i64("axis", 0),
            keepdims: a.i64("keepdims", 1) != 0,
            last: a.i64("select_last_index", 0) != 0,
        }),
        _ => {
            let op = match op_type {
                "ReduceMean" => ReduceKind::Mean,
                "ReduceSum" => ReduceKind::Sum,
                "ReduceMax" => ReduceKind::Max,
                "ReduceMin" => ReduceKind::Min,
                "ReduceProd" => ReduceKind::Prod,
                "ReduceL1" => ReduceKind::L1,
                "ReduceL2" => ReduceKind::L2,
                "ReduceSumSquare" => ReduceKind::SumSquare,
                "ReduceLogSum" => ReduceKind::LogSum,
                "ReduceLogSumExp" => ReduceKind::LogSumExp,
                other => return Err(super::misrouted_name(other, FAMILY)),
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
        Op::ArgReduce { axis: ax, keepdims, .. } => {
            let t = x()?;
            let k = axis(*ax, t.shape.len())?;
            if t.shape[k] == 0 {
                return Err(format!("{} over the empty axis {k}", node.op_type));
            }
            let mut shape = t.shape.clone();
            if *keepdims {
                shape[k] = 1;
            } else {
                shape.remove(k);
            }
            Ok(vec![TensorType { dtype: DType::I64, shape }])
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// An element of IR type `dt` as an `f64` (integers exactly below 2^53, as the reference).
fn as_f64(b: &mut HostBuilder<'_>, v: &str, dt: DType) -> String {
    if dt == DType::F32 {
        b.f64_of(v)
    } else {
        let w = b.widen(v, dt);
        b.let_(&format!("arith.sitofp {w} : i64 to f64"))
    }
}

/// Whether a reduction over no axes is the identity (else an element-wise map remains).
fn identity_when_noop(op: ReduceKind) -> bool {
    matches!(
        op,
        ReduceKind::Sum | ReduceKind::Mean | ReduceKind::Max | ReduceKind::Min | ReduceKind::Prod
    )
}

/// The smallest and largest values of integer type `dt`.
fn int_range(dt: DType) -> (i64, i64) {
    dt.int_range()
}

/// The index of the extreme of `lane` (`max` or min; NaN counts as the extreme, as numpy's
/// argmax and argmin; of equal values the first, or the last with `last`).
fn arg_extreme<T: PartialOrd + Copy>(
    lane: impl Iterator<Item = T>,
    max: bool,
    last: bool,
    is_nan: impl Fn(T) -> bool,
) -> i64 {
    let mut best: Option<(T, i64)> = None;
    for (i, v) in lane.enumerate() {
        let i = i as i64;
        best = Some(match best {
            None => (v, i),
            Some((b, j)) => {
                let better = if is_nan(b) {
                    false
                } else if is_nan(v) {
                    true
                } else if max {
                    v > b || (last && v == b)
                } else {
                    v < b || (last && v == b)
                };
                if better { (v, i) } else { (b, j) }
            }
        });
    }
    best.map_or(0, |(_, i)| i)
}

/// Reference semantics: the outputs for inputs `args` (the oracle the device is checked
/// against).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let one = |a: Array| Ok(vec![a]);
    match &node.op {
        Op::ArgReduce { max, axis: ax, keepdims, last } => {
            let input = arg(args, 0)?;
            let k = axis(*ax, input.shape().len())?;
            // Integers compared exactly (not through f64, which rounds beyond 2^53).
            let mut y = match input {
                Array::F32(a) => a.map_axis(Axis(k), |lane| {
                    arg_extreme(lane.iter().copied(), *max, *last, f32::is_nan)
                }),
                Array::Int(a, _) => a.map_axis(Axis(k), |lane| {
                    arg_extreme(lane.iter().copied(), *max, *last, |_| false)
                }),
            };
            if *keepdims {
                y.insert_axis_inplace(Axis(k));
            }
            one(Array::Int(y, DType::I64))
        }
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
            // With no axes and noop_with_empty_axes, nothing is reduced, but the element-wise
            // part (|x|, x², √(x²), ln x) still applies.
            let noop = axes.is_empty() && *noop_with_empty_axes;
            if noop && identity_when_noop(*op) {
                return one(input.clone());
            }
            let mut ks: Vec<usize> = if noop {
                vec![]
            } else if axes.is_empty() {
                (0..x.ndim()).collect()
            } else {
                axes.iter().map(|a| axis(*a, x.ndim())).collect::<R<_>>()?
            };
            ks.sort_unstable();
            ks.dedup();
            // LogSumExp is shifted by the maximum over the reduced axes (no exponential
            // overflows): ln(sum(e^(x − m))) + m.
            let shift = if *op == ReduceKind::LogSumExp {
                let mut m = x.clone();
                for &k in ks.iter().rev() {
                    m = m.fold_axis(Axis(k), f64::NEG_INFINITY, |a, b| nan_max(*a, *b));
                    m.insert_axis_inplace(Axis(k));
                }
                // An infinite (or empty) maximum is not a usable shift.
                Some(m.mapv(|v| if v.is_finite() { v } else { 0.0 }))
            } else {
                None
            };
            // Each element mapped, then summed (or max, min, product) over every reduced
            // axis, then the square root or logarithm.
            let mut y = match (op, &shift) {
                (ReduceKind::L1, _) => x.mapv(f64::abs),
                (ReduceKind::L2 | ReduceKind::SumSquare, _) => x.mapv(|v| v * v),
                (ReduceKind::LogSumExp, Some(m)) => {
                    let mb = m.broadcast(x.raw_dim()).ok_or("internal: LogSumExp shift")?;
                    ndarray::Zip::from(&x).and(&mb).map_collect(|v, m| (v - m).exp())
                }
                _ => x,
            };
            for &k in ks.iter().rev() {
                y = match op {
                    ReduceKind::Mean => y.mean_axis(Axis(k)).ok_or("mean of an empty axis")?,
                    ReduceKind::Max => {
                        y.fold_axis(Axis(k), f64::NEG_INFINITY, |a, b| nan_max(*a, *b))
                    }
                    ReduceKind::Min => y.fold_axis(Axis(k), f64::INFINITY, |a, b| nan_min(*a, *b)),
                    ReduceKind::Prod => y.fold_axis(Axis(k), 1.0, |a, b| a * b),
                    _ => y.sum_axis(Axis(k)),
                };
                if *keepdims {
                    y.insert_axis_inplace(Axis(k));
                }
            }
            match op {
                ReduceKind::L2 => y.mapv_inplace(f64::sqrt),
                ReduceKind::LogSum => y.mapv_inplace(f64::ln),
                ReduceKind::LogSumExp => {
                    let mut m = shift.ok_or("internal: LogSumExp shift")?;
                    for &k in ks.iter().rev() {
                        if !*keepdims {
                            m = m.index_axis(Axis(k), 0).to_owned();
                        }
                    }
                    let mb = m.broadcast(y.raw_dim()).ok_or("internal: LogSumExp shift")?;
                    y = ndarray::Zip::from(&y).and(&mb).map_collect(|s, m| s.ln() + m);
                }
                _ => {}
            }
            one(match input {
                Array::F32(_) => Array::F32(y.mapv(|v| v as f32)),
                // The maximum of nothing is the type's smallest value (false for bool), the
                // minimum of nothing its largest.
                Array::Int(_, dt) => {
                    let (least, most) = int_range(*dt);
                    Array::Int(
                        y.mapv(|v| {
                            if v == f64::NEG_INFINITY {
                                least
                            } else if v == f64::INFINITY {
                                most
                            } else {
                                v as i64
                            }
                        }),
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
    if let Op::ArgReduce { axis, keepdims, last, .. } = op {
        a.push(format!("axis: int = {axis}"));
        a.push(format!("keepdims: int = {}", i64::from(*keepdims)));
        a.push(format!("select_last_index: int = {}", i64::from(*last)));
    }
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
        Op::Reduce { op, .. }
            if !matches!(
                op,
                ReduceKind::Sum | ReduceKind::Mean | ReduceKind::Max | ReduceKind::Min
            ) =>
        {
            Err(err(&format!("{} is not lowered to the device", n.op_type)))
        }
        Op::ArgReduce { .. } => Err(err(&format!("{} is not lowered to the device", n.op_type))),
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
                    (ReduceKind::Min, DType::F32) => f32::INFINITY.to_bits(),
                    (ReduceKind::Min, DType::U8) => 0xffff_ffff,
                    (ReduceKind::Min, DType::Bool) => 0x0101_0101,
                    (ReduceKind::Min, DType::I8) => 0x7f7f_7f7f,
                    (ReduceKind::Min, DType::I32) => 0x7fff_ffff,
                    (_, DType::I64) => return Err(err("int64 is not a device type")),
                    _ => return Err(err("internal: a reduction the device does not run")),
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
        "ArgMax" | "ArgMin" => counts(1, 1, 1, 1),
        _ if opset >= 18 => counts(1, 2, 1, 1),
        _ => counts(1, 1, 1, 1),
    }
}

/// Input 1, the axes (opsets where they are an input), determines the output shape.
pub(crate) fn shape_operand(op: &Op, i: usize) -> bool {
    matches!(op, Op::Reduce { .. }) && i == 1
}

/// Host lowering: every reduction over constant axes, floats in `f64` as the reference
/// computes (each element mapped, summed, maxed, mined or multiplied, then the square root or
/// logarithm; LogSumExp shifted by the maximum in a first pass), integers in `i64` (a mean
/// truncated toward zero); ArgMax and ArgMin by a scan carrying the best value and index.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
    let xt = b.ty(x)?;
    let out = n.outputs[0];
    if let Op::ArgReduce { max, axis: ax, keepdims, last } = &n.op {
        let rank = xt.shape.len();
        let k = norm_axis(*ax, rank).map_err(|e| b.err(n, e))?;
        let (max, keep, last, dt) = (*max, *keepdims, *last, xt.dtype);
        let len = xt.shape[k];
        return b.map_out(out, &mut |b, idx| {
            let at = |i: &str| -> Vec<String> {
                let mut xi: Vec<String> = Vec::with_capacity(rank);
                let mut o = 0;
                for a in 0..rank {
                    if a == k {
                        xi.push(i.to_string());
                        if keep {
                            o += 1;
                        }
                    } else {
                        xi.push(idx[o].clone());
                        o += 1;
                    }
                }
                xi
            };
            let i0 = b.idx(0);
            let first = at(&i0);
            let v0 = b.load(x, &first)?;
            let float = dt == DType::F32;
            // Floats as f64; integers exactly, as i64.
            let v0 = if float { b.f64_of(&v0) } else { b.widen(&v0, dt) };
            let ty = if float { "f64" } else { "i64" };
            let z = b.i64c(0);
            let r = b.fold_n(len, &[v0, z], &[ty, "i64"], &mut |b, t, acc| {
                let xi = at(t);
                let v = b.load(x, &xi)?;
                if !float {
                    let v = b.widen(&v, dt);
                    let strict = b.cmpi(if max { "sgt" } else { "slt" }, &v, &acc[0], "i64");
                    let take = if last {
                        let eq = b.cmpi("eq", &v, &acc[0], "i64");
                        b.op2("arith.ori", &strict, &eq, "i1")
                    } else {
                        strict
                    };
                    let ti = b.let_(&format!("arith.index_cast {t} : index to i64"));
                    let nv = b.select(&take, &v, &acc[0], "i64");
                    let ni = b.select(&take, &ti, &acc[1], "i64");
                    return Ok(vec![nv, ni]);
                }
                let v = b.f64_of(&v);
                // As `arg_extreme`: a NaN best stays; a NaN value wins; else strictly better,
                // or equal with `last`.
                let best_nan = b.cmpf("uno", &acc[0], &acc[0], "f64");
                let v_nan = b.cmpf("uno", &v, &v, "f64");
                let strict = b.cmpf(if max { "ogt" } else { "olt" }, &v, &acc[0], "f64");
                let better = if last {
                    let eq = b.cmpf("oeq", &v, &acc[0], "f64");
                    b.op2("arith.ori", &strict, &eq, "i1")
                } else {
                    strict
                };
                let better = b.op2("arith.ori", &better, &v_nan, "i1");
                let t_ = b.let_("arith.constant true");
                let not_best_nan = b.op2("arith.xori", &best_nan, &t_, "i1");
                let take = b.op2("arith.andi", &better, &not_best_nan, "i1");
                let ti = b.let_(&format!("arith.index_cast {t} : index to i64"));
                let nv = b.select(&take, &v, &acc[0], "f64");
                let ni = b.select(&take, &ti, &acc[1], "i64");
                Ok(vec![nv, ni])
            })?;
            Ok(r[1].clone())
        });
    }
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
    let noop = axes.is_empty() && *noop_with_empty_axes;
    if noop && identity_when_noop(*op) {
        return b.map_out(out, &mut |b, idx| b.load(x, idx));
    }
    let mut ks: Vec<usize> = if noop {
        vec![]
    } else if axes.is_empty() {
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
    // Integer L2, LogSum and LogSumExp go through f64 as the reference does, truncated back.
    let via_f64 =
        !float && matches!(op, ReduceKind::L2 | ReduceKind::LogSum | ReduceKind::LogSumExp);
    let (least, most) = int_range(dt);
    b.map_out(out, &mut |b, idx| {
        // The input index of reduced position `t` (flat over the reduced axes).
        let at = |b: &mut HostBuilder<'_>, t: &str| -> Vec<String> {
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
            xi
        };
        if float || via_f64 {
            // LogSumExp's shift: the maximum, when finite.
            let shift = if op == ReduceKind::LogSumExp {
                let init = b.f64c(f64::NEG_INFINITY);
                let m = b.fold_n(count, &[init], &["f64"], &mut |b, t, acc| {
                    let xi = at(b, t);
                    let v = b.load(x, &xi)?;
                    let v = as_f64(b, &v, dt);
                    Ok(vec![b.op2("arith.maximumf", &acc[0], &v, "f64")])
                })?;
                let inf = b.f64c(f64::INFINITY);
                let a = b.op1("math.absf", &m[0], "f64");
                let fin = b.cmpf("olt", &a, &inf, "f64");
                let z = b.f64c(0.0);
                Some(b.select(&fin, &m[0], &z, "f64"))
            } else {
                None
            };
            let init = match op {
                ReduceKind::Max => b.f64c(f64::NEG_INFINITY),
                ReduceKind::Min => b.f64c(f64::INFINITY),
                ReduceKind::Prod => b.f64c(1.0),
                _ => b.f64c(0.0),
            };
            let r = b.fold_n(count, &[init], &["f64"], &mut |b, t, acc| {
                let xi = at(b, t);
                let v = b.load(x, &xi)?;
                let v = as_f64(b, &v, dt);
                Ok(vec![match op {
                    ReduceKind::Max => b.op2("arith.maximumf", &acc[0], &v, "f64"),
                    ReduceKind::Min => b.op2("arith.minimumf", &acc[0], &v, "f64"),
                    ReduceKind::Prod => b.op2("arith.mulf", &acc[0], &v, "f64"),
                    ReduceKind::L1 => {
                        let a = b.op1("math.absf", &v, "f64");
                        b.op2("arith.addf", &acc[0], &a, "f64")
                    }
                    ReduceKind::L2 | ReduceKind::SumSquare => {
                        let sq = b.op2("arith.mulf", &v, &v, "f64");
                        b.op2("arith.addf", &acc[0], &sq, "f64")
                    }
                    ReduceKind::LogSumExp => {
                        let m = shift.clone().unwrap_or_default();
                        let d = b.op2("arith.subf", &v, &m, "f64");
                        let e = b.op1("math.exp", &d, "f64");
                        b.op2("arith.addf", &acc[0], &e, "f64")
                    }
                    _ => b.op2("arith.addf", &acc[0], &v, "f64"),
                }])
            })?;
            let mut v = r[0].clone();
            match op {
                ReduceKind::Mean => {
                    let c = b.f64c(count as f64);
                    v = b.op2("arith.divf", &v, &c, "f64");
                }
                ReduceKind::L2 => v = b.op1("math.sqrt", &v, "f64"),
                ReduceKind::LogSum => v = b.op1("math.log", &v, "f64"),
                ReduceKind::LogSumExp => {
                    let l = b.op1("math.log", &v, "f64");
                    v = b.op2("arith.addf", &l, shift.as_deref().unwrap_or_default(), "f64");
                }
                _ => {}
            }
            if !float {
                // As the reference: NaN to 0, ±inf (and anything beyond the type) to the
                // type's ends.
                let (lo, hi) = (b.f64c(least as f64), b.f64c(most as f64));
                let z = b.f64c(0.0);
                let nan = b.cmpf("uno", &v, &v, "f64");
                let c = b.op2("arith.maximumf", &v, &lo, "f64");
                let c = b.op2("arith.minimumf", &c, &hi, "f64");
                let c = b.select(&nan, &z, &c, "f64");
                let i = b.let_(&format!("arith.fptosi {c} : f64 to i64"));
                let top = b.f64c(most as f64);
                let over = b.cmpf("oge", &v, &top, "f64");
                let max = b.i64c(most);
                let i = b.select(&over, &max, &i, "i64");
                return Ok(b.narrow(&i, dt));
            }
            return Ok(b.f32_of(&v));
        }
        // Integers: exact in i64 for sums, products (wrapping), extremes; the rest through
        // f64 as the reference.
        let init = match op {
            ReduceKind::Max => b.i64c(least),
            ReduceKind::Min => b.i64c(most),
            ReduceKind::Prod => b.i64c(1),
            _ => b.i64c(0),
        };
        let r = b.fold_n(count, &[init], &["i64"], &mut |b, t, acc| {
            let xi = at(b, t);
            let v = b.load(x, &xi)?;
            let v = b.widen(&v, dt);
            Ok(vec![match op {
                ReduceKind::Max => b.op2("arith.maxsi", &acc[0], &v, "i64"),
                ReduceKind::Min => b.op2("arith.minsi", &acc[0], &v, "i64"),
                ReduceKind::Prod => b.op2("arith.muli", &acc[0], &v, "i64"),
                ReduceKind::L1 => {
                    let z = b.i64c(0);
                    let ng = b.op2("arith.subi", &z, &v, "i64");
                    let a = b.op2("arith.maxsi", &v, &ng, "i64");
                    b.op2("arith.addi", &acc[0], &a, "i64")
                }
                ReduceKind::SumSquare => {
                    let sq = b.op2("arith.muli", &v, &v, "i64");
                    b.op2("arith.addi", &acc[0], &sq, "i64")
                }
                _ => b.op2("arith.addi", &acc[0], &v, "i64"),
            }])
        })?;
        let mut v = r[0].clone();
        if op == ReduceKind::Mean {
            let c = b.f64c(count as f64);
            let f = b.let_(&format!("arith.sitofp {v} : i64 to f64"));
            let q = b.op2("arith.divf", &f, &c, "f64");
            v = b.let_(&format!("arith.fptosi {q} : f64 to i64"));
        }
        Ok(b.narrow(&v, dt))
    })
}
