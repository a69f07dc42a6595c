//! Normalisations along axes: Softmax, LogSoftmax, LayerNormalization, BatchNormalization.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer and device lowering.

use accelc_isa::BinOp;
use ndarray::{Array2, ArrayD, Axis, IxDyn};

use super::Work;
use crate::interp::axis as norm_axis;
use crate::interp::*;
use crate::ir::*;
use crate::lower::LowerError;
use crate::lower::host::HostBuilder;
use crate::lower::schedule::*;
use crate::lower::view::{View, ViewOp};
use crate::onnx::Attrs;
use crate::ops::{Arity, counts};
use crate::shape::*;
use crate::text::*;

type R<T> = Result<T, String>;

/// The family's name in the registry.
pub(crate) const FAMILY: &str = "norm";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] =
    &["Softmax", "LogSoftmax", "LayerNormalization", "BatchNormalization"];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, opset: i64) -> Result<Op, String> {
    match op_type {
        "Softmax" => Ok(Op::Softmax { axis: a.i64("axis", if opset < 13 { 1 } else { -1 }) }),
        "LogSoftmax" => Ok(Op::LogSoftmax { axis: a.i64("axis", if opset < 13 { 1 } else { -1 }) }),
        "LayerNormalization" => {
            if a.i64("stash_type", 1) != 1 {
                return Err(
                    "LayerNormalization with stash_type other than float is not supported".into()
                );
            }
            Ok(Op::LayerNorm { axis: a.i64("axis", -1), epsilon: a.f32("epsilon", 1e-5) })
        }
        "BatchNormalization" => {
            if a.node.output.iter().filter(|o| !o.is_empty()).count() > 1 {
                return Err("BatchNormalization's running-statistics outputs (training) are not \
                            supported"
                    .into());
            }
            if a.i64("training_mode", 0) != 0 {
                return Err("BatchNormalization in training mode is not supported".into());
            }
            // Before opset 9, `spatial = 0` means per-activation statistics of shape
            // (C, D1, ...); such nodes are expanded before conversion (`Builder::node`).
            if opset < 9 && a.i64("spatial", 1) == 0 {
                return Err("internal: BatchNormalization with spatial = 0 reached convert".into());
            }
            // `momentum` only updates running statistics in training, which is refused above.
            let _ = a.get("momentum");
            Ok(Op::BatchNorm { epsilon: a.f32("epsilon", 1e-5) })
        }
        other => Err(super::misrouted_name(other, FAMILY)),
    }
}

/// Output types from input types `ins` (and constant shape operands of `g`).
pub(crate) fn infer(_g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = || input(ins, 0);
    match &node.op {
        Op::Softmax { .. } | Op::LogSoftmax { .. } => same(x()?),
        Op::BatchNorm { .. } => {
            // ONNX: X is (N, C, D1, ...); scale, B, input_mean and input_var are (C).
            let t = x()?;
            let c = *t.shape.get(1).ok_or("BatchNormalization needs a channel axis")?;
            for (i, name) in [(1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")] {
                let p = input(ins, i)?;
                if p.shape != [c] {
                    return Err(format!(
                        "BatchNormalization's {name} is {p}; {c} channels need float[{c}]"
                    ));
                }
            }
            same(t)
        }
        Op::LayerNorm { axis: ax, .. } => {
            let t = x()?;
            let k = axis(*ax, t.shape.len())?;
            let stat: Vec<usize> =
                t.shape.iter().enumerate().map(|(i, d)| if i < k { *d } else { 1 }).collect();
            Ok(vec![
                t.clone(),
                TensorType { dtype: DType::F32, shape: stat.clone() },
                TensorType { dtype: DType::F32, shape: stat },
            ])
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// Reference semantics: the outputs for inputs `args` (the oracle the device is checked
/// against).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], opset: i64) -> R<Vec<Array>> {
    let one = |a: Array| Ok(vec![a]);
    match &node.op {
        Op::Softmax { axis: ax } | Op::LogSoftmax { axis: ax } => {
            let x = arg(args, 0)?.f32()?;
            let k = axis(*ax, x.ndim())?;
            // Before opset 13 the input is coerced to 2-D at `axis`: each row of the trailing
            // block `shape[axis..]` is normalised as one (ONNX changelog, Softmax-13).
            let (lanes_shape, k) = if opset < 13 {
                let outer: usize = x.shape()[..k].iter().product();
                (vec![outer, x.shape()[k..].iter().product()], 1)
            } else {
                (x.shape().to_vec(), k)
            };
            let mut y = x
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(&lanes_shape))
                .map_err(|e| e.to_string())?;
            let log = matches!(node.op, Op::LogSoftmax { .. });
            for mut lane in y.lanes_mut(Axis(k)) {
                let m = lane.fold(f32::NEG_INFINITY, |a, &b| nan_max(a, b));
                let sum: f64 = lane.iter().map(|v| f64::from(v - m).exp()).sum();
                lane.mapv_inplace(|v| {
                    if log {
                        ((f64::from(v - m)) - sum.ln()) as f32
                    } else {
                        (f64::from(v - m).exp() / sum) as f32
                    }
                });
            }
            one(Array::F32(y.into_shape_with_order(IxDyn(x.shape())).map_err(|e| e.to_string())?))
        }
        Op::LayerNorm { axis: ax, epsilon } => {
            let x = arg(args, 0)?.f32()?;
            let k = axis(*ax, x.ndim())?;
            let outer: usize = x.shape()[..k].iter().product();
            let inner: usize = x.shape()[k..].iter().product();
            let flat = x
                .as_standard_layout()
                .to_shape((outer, inner))
                .map_err(|e| e.to_string())?
                .to_owned();
            let mut y = Array2::<f32>::zeros((outer, inner));
            let (mut means, mut invs) = (Vec::with_capacity(outer), Vec::with_capacity(outer));
            for (src, mut dst) in flat.rows().into_iter().zip(y.rows_mut()) {
                let mean = src.iter().map(|v| f64::from(*v)).sum::<f64>() / inner as f64;
                let var =
                    src.iter().map(|v| (f64::from(*v) - mean).powi(2)).sum::<f64>() / inner as f64;
                let inv = 1.0 / (var + f64::from(*epsilon)).sqrt();
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = ((f64::from(*s) - mean) * inv) as f32;
                }
                means.push(mean as f32);
                invs.push(inv as f32);
            }
            let y = y.into_shape_with_order(IxDyn(x.shape())).map_err(|e| e.to_string())?;
            let mut y = zip_f32(&y, arg(args, 1)?.f32()?, |p, q| p * q)?;
            if let Some(b) = opt(args, 2) {
                y = zip_f32(&y, b.f32()?, |p, q| p + q)?;
            }
            // The optional Mean and InvStdDev outputs keep the normalised axes as size 1.
            let stat_shape: Vec<usize> =
                x.shape().iter().enumerate().map(|(i, d)| if i < k { *d } else { 1 }).collect();
            let stat = |v: Vec<f32>| {
                ArrayD::from_shape_vec(IxDyn(&stat_shape), v)
                    .map(Array::F32)
                    .map_err(|e| e.to_string())
            };
            Ok(vec![Array::F32(y), stat(means)?, stat(invs)?])
        }
        Op::BatchNorm { epsilon } => {
            let x = arg(args, 0)?.f32()?;
            let c = x.shape().get(1).copied().ok_or("BatchNormalization needs a channel axis")?;
            let p =
                |i: usize| -> R<Vec<f32>> { Ok(arg(args, i)?.f32()?.iter().copied().collect()) };
            let (scale, bias, mean, var) = (p(1)?, p(2)?, p(3)?, p(4)?);
            if [&scale, &bias, &mean, &var].iter().any(|v| v.len() != c) {
                return Err("BatchNormalization parameters do not match the channels".into());
            }
            let mut y = x.clone();
            for (ci, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
                let inv = 1.0 / (var[ci] + epsilon).sqrt();
                plane.mapv_inplace(|v| (v - mean[ci]) * inv * scale[ci] + bias[ci]);
            }
            one(Array::F32(y))
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    match op {
        Op::Softmax { axis } | Op::LogSoftmax { axis } => a.push(format!("axis: int = {axis}")),
        Op::LayerNorm { axis, epsilon } => {
            a.push(format!("axis: int = {axis}"));
            a.push(format!("epsilon: float = {}", flt(*epsilon)));
        }
        Op::BatchNorm { epsilon } => a.push(format!("epsilon: float = {}", flt(*epsilon))),
        _ => {}
    }
}

/// Device lowering: `n` (node `idx` of the graph) as kernel steps of `b`, or the constraint
/// that keeps it off the device.
pub(crate) fn lower(b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    let name = n.name.clone();
    let err = |m: &str| LowerError::at(&name, m.to_string());
    match &n.op {
        Op::BatchNorm { epsilon } => {
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            let p: Vec<Vec<f32>> = (1..5)
                .map(|i| {
                    b.input(n, i)
                        .ok()
                        .and_then(|t| b.const_f32(t))
                        .ok_or_else(|| err("BatchNormalization parameters must be constant"))
                })
                .collect::<Result<_, _>>()?;
            let c = xs.get(1).copied().unwrap_or(1);
            let scale: Vec<f32> = (0..c).map(|i| p[0][i] / (p[3][i] + epsilon).sqrt()).collect();
            let shift: Vec<f32> = (0..c).map(|i| p[1][i] - p[2][i] * scale[i]).collect();
            let mut shp = vec![c];
            shp.extend(std::iter::repeat_n(1, xs.len().saturating_sub(2)));
            let st = b.temp(
                format!("{name}.scale"),
                shp.clone(),
                DType::F32,
                false,
                Store::Const(f32_bytes(&scale).into()),
            );
            let sh = b.temp(
                format!("{name}.shift"),
                shp,
                DType::F32,
                false,
                Store::Const(f32_bytes(&shift).into()),
            );
            let out = b.out(n, 0)?;
            let os = b.shape(out);
            b.s.tens[out].nhwc = b.s.tens[x].nhwc;
            let mut inputs = vec![
                (x, vec![]),
                (st, vec![ViewOp::Broadcast(os.clone())]),
                (sh, vec![ViewOp::Broadcast(os.clone())]),
            ];
            let mut prog = vec![
                Micro::Bin(BinOp::Mul, 0, Src::In(0), Src::In(1)),
                Micro::Bin(BinOp::Add, 0, Src::Reg(0), Src::In(2)),
            ];
            if !scale.iter().chain(&shift).all(|v| v.is_finite()) {
                // A zero variance (plus epsilon) makes the scale infinite, and `x·scale + shift`
                // would be inf − inf; the definition's `(x − mean)·scale + bias` is not.
                let mut shp = vec![c];
                shp.extend(std::iter::repeat_n(1, xs.len().saturating_sub(2)));
                let mean = b.temp(
                    format!("{name}.mean"),
                    shp,
                    DType::F32,
                    false,
                    Store::Const(f32_bytes(&p[2]).into()),
                );
                inputs[2].0 = b.temp(
                    format!("{name}.bias"),
                    b.shape(mean),
                    DType::F32,
                    false,
                    Store::Const(f32_bytes(&p[1]).into()),
                );
                inputs.push((mean, vec![ViewOp::Broadcast(os)]));
                prog = vec![
                    Micro::Bin(BinOp::Sub, 0, Src::In(0), Src::In(3)),
                    Micro::Bin(BinOp::Mul, 0, Src::Reg(0), Src::In(1)),
                    Micro::Bin(BinOp::Add, 0, Src::Reg(0), Src::In(2)),
                ];
            }
            let ew = Ew { out, out_view: vec![], inputs, prog, regs: 1 };
            b.step(Kernel::Elementwise(ew), &name, Some(out), vec![]);
            Ok(())
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let log = matches!(n.op, Op::LogSoftmax { .. });
            let x = b.layout(b.input(n, 0)?, false);
            let xs = b.shape(x);
            let ax = norm_axis(*axis, xs.len()).map_err(|e| err(&e))?;
            let out = b.out(n, 0)?;
            if b.g.opset >= 13 && ax + 1 != xs.len() {
                // Move the axis last, normalise rows, move it back.
                let rank = xs.len();
                let mut perm: Vec<usize> = (0..rank).filter(|a| *a != ax).collect();
                perm.push(ax);
                let mut inv = vec![0; rank];
                for (i, p) in perm.iter().enumerate() {
                    inv[*p] = i;
                }
                let t1 = permuted(b, x, perm, "axis-last", &format!("{name}:to-last"));
                let t2 =
                    b.temp(format!("{name}.out"), b.shape(t1), DType::F32, false, Store::Arena);
                rowwise(b, &name, t1, t2, rank - 1, RowKind::Softmax { log }, vec![])?;
                copy_step(b, &format!("{name}:back"), out, vec![], t2, vec![ViewOp::Permute(inv)]);
                return Ok(());
            }
            rowwise(b, &name, x, out, ax, RowKind::Softmax { log }, vec![])
        }
        Op::LayerNorm { axis, epsilon } => {
            let x = b.layout(b.input(n, 0)?, false);
            let xs = b.shape(x);
            let ax = norm_axis(*axis, xs.len()).map_err(|e| err(&e))?;
            let len: usize = xs[ax..].iter().product();
            let expand = |b: &Builder<'_>, i: usize, d: f32| -> Result<Vec<f32>, LowerError> {
                match b.opt_input(n, i) {
                    Some(t) => {
                        let v = b.const_f32(t).ok_or_else(|| {
                            err("LayerNormalization scale and bias must be constant")
                        })?;
                        let src = View::dense(0, 0, &b.shape(t), 1)
                            .apply(&ViewOp::Broadcast(xs[ax..].to_vec()))?;
                        let (sizes, strides) =
                            (src.shape(), src.dims.iter().map(|d| d.1).collect::<Vec<_>>());
                        Ok((0..len)
                            .map(|f| {
                                let (mut r, mut o) = (f, 0u64);
                                for dd in (0..sizes.len()).rev() {
                                    o += (r % sizes[dd]) as u64 * strides[dd];
                                    r /= sizes[dd];
                                }
                                v[o as usize]
                            })
                            .collect())
                    }
                    None => Ok(vec![d; len]),
                }
            };
            let out = b.out(n, 0)?;
            let stats = [n.outputs.get(1).map(|v| b.t(*v)), n.outputs.get(2).map(|v| b.t(*v))];
            let computed = |i: usize| b.opt_input(n, i).is_some_and(|t| b.const_f32(t).is_none());
            let (consts, affine) = if computed(1) || computed(2) {
                // Scale and bias read at run time through views broadcast to the rows.
                let view = |i: usize| {
                    b.opt_input(n, i).map(|t| (t, vec![ViewOp::Broadcast(xs[ax..].to_vec())]))
                };
                (vec![], Some([view(1), view(2)]))
            } else {
                let mut gb = expand(b, 1, 1.0)?;
                gb.extend(expand(b, 2, 0.0)?);
                (f32_bytes(&gb), None)
            };
            let rows: usize = xs[..ax].iter().product();
            let rw = Rw {
                input: x,
                out,
                rows,
                len,
                kind: RowKind::LayerNorm { eps: *epsilon },
                affine,
                stats,
            };
            b.step(Kernel::Rowwise(rw), &name, Some(out), vec![consts]);
            Ok(())
        }
        other => Err(LowerError::at(&n.name, super::misrouted(other, FAMILY))),
    }
}

/// Cost inputs: vector passes per element (exponentials for the softmaxes).
pub(crate) fn work(op: &Op, _inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    match op {
        Op::BatchNorm { .. } => Work::Vector { passes: 2, slow: false },
        Op::Softmax { .. } | Op::LogSoftmax { .. } => Work::Vector { passes: 5, slow: true },
        Op::LayerNorm { .. } => Work::Vector { passes: 9, slow: false },
        _ => Work::Traffic,
    }
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`
/// (the operator schemas' `min_input`, `max_input`, `min_output`, `max_output`).
pub(crate) fn arity(op_type: &str, opset: i64) -> Arity {
    match op_type {
        "LayerNormalization" => counts(2, 3, 1, 3),
        "BatchNormalization" if opset < 14 => counts(5, 5, 1, 5),
        "BatchNormalization" => counts(5, 5, 1, 3),
        _ => counts(1, 1, 1, 1),
    }
}

/// No input determines the output shape.
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
}

/// Host lowering: Softmax and LogSoftmax per lane (the coerced 2-D rows before opset 13),
/// LayerNormalization with its optional statistics outputs, and BatchNormalization, with the
/// reference's `f64` sums.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
    let xt = b.ty(x)?;
    let rank = xt.shape.len();
    let out = n.outputs[0];
    let opset = b.g.opset;
    match &n.op {
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let k = norm_axis(*axis, rank).map_err(|e| b.err(n, e))?;
            let outer: usize = xt.shape[..k].iter().product();
            let (lane, inner) = if opset < 13 {
                (xt.shape[k..].iter().product::<usize>(), 1)
            } else {
                (xt.shape[k], xt.shape[k + 1..].iter().product::<usize>())
            };
            let log = matches!(n.op, Op::LogSoftmax { .. });
            b.out(out)?;
            b.nest(&[outer, inner], &mut |b, oi| {
                let lc = b.idx(lane);
                let ic = b.idx(inner);
                let base = b.iop("arith.muli", &oi[0], &lc);
                let flat = |b: &mut HostBuilder<'_>, l: &str| {
                    let r = b.iop("arith.addi", &base, l);
                    let r = b.iop("arith.muli", &r, &ic);
                    b.iop("arith.addi", &r, &oi[1])
                };
                let ninf = b.f32c(f32::NEG_INFINITY);
                let m = b.fold_n(lane, &[ninf], &["f32"], &mut |b, l, acc| {
                    let f = flat(b, l);
                    let v = b.load_flat(x, &f)?;
                    Ok(vec![b.op2("arith.maximumf", &acc[0], &v, "f32")])
                })?;
                let z = b.f64c(0.0);
                let sum = b.fold_n(lane, &[z], &["f64"], &mut |b, l, acc| {
                    let f = flat(b, l);
                    let v = b.load_flat(x, &f)?;
                    let d = b.op2("arith.subf", &v, &m[0], "f32");
                    let d = b.f64_of(&d);
                    let e = b.op1("math.exp", &d, "f64");
                    Ok(vec![b.op2("arith.addf", &acc[0], &e, "f64")])
                })?;
                let ln = b.op1("math.log", &sum[0], "f64");
                b.nest(&[lane], &mut |b, l| {
                    let f = flat(b, &l[0]);
                    let v = b.load_flat(x, &f)?;
                    let d = b.op2("arith.subf", &v, &m[0], "f32");
                    let d = b.f64_of(&d);
                    let r = if log {
                        b.op2("arith.subf", &d, &ln, "f64")
                    } else {
                        let e = b.op1("math.exp", &d, "f64");
                        b.op2("arith.divf", &e, &sum[0], "f64")
                    };
                    let r = b.f32_of(&r);
                    b.store_flat(&r, out, &f)
                })
            })
        }
        Op::LayerNorm { axis, epsilon } => {
            let k = norm_axis(*axis, rank).map_err(|e| b.err(n, e))?;
            let outer: usize = xt.shape[..k].iter().product();
            let inner: usize = xt.shape[k..].iter().product();
            let scale = n.inputs[1].ok_or_else(|| b.err(n, "the scale is missing"))?;
            let bias = n.inputs.get(2).copied().flatten();
            let stats: Vec<Option<ValueId>> = (1..3).map(|i| n.outputs.get(i).copied()).collect();
            for s in stats.iter().flatten() {
                b.out(*s)?;
            }
            b.out(out)?;
            let eps = f64::from(*epsilon);
            let shape = xt.shape.clone();
            b.nest(&[outer], &mut |b, oi| {
                let ic = b.idx(inner);
                let base = b.iop("arith.muli", &oi[0], &ic);
                let z = b.f64c(0.0);
                let sum =
                    b.fold_n(inner, std::slice::from_ref(&z), &["f64"], &mut |b, j, acc| {
                        let f = b.iop("arith.addi", &base, j);
                        let v = b.load_flat(x, &f)?;
                        let v = b.f64_of(&v);
                        Ok(vec![b.op2("arith.addf", &acc[0], &v, "f64")])
                    })?;
                let cnt = b.f64c(inner as f64);
                let mean = b.op2("arith.divf", &sum[0], &cnt, "f64");
                let ss = b.fold_n(inner, &[z], &["f64"], &mut |b, j, acc| {
                    let f = b.iop("arith.addi", &base, j);
                    let v = b.load_flat(x, &f)?;
                    let v = b.f64_of(&v);
                    let d = b.op2("arith.subf", &v, &mean, "f64");
                    let d2 = b.op2("arith.mulf", &d, &d, "f64");
                    Ok(vec![b.op2("arith.addf", &acc[0], &d2, "f64")])
                })?;
                let var = b.op2("arith.divf", &ss[0], &cnt, "f64");
                let e = b.f64c(eps);
                let ve = b.op2("arith.addf", &var, &e, "f64");
                let sd = b.op1("math.sqrt", &ve, "f64");
                let one = b.f64c(1.0);
                let inv = b.op2("arith.divf", &one, &sd, "f64");
                for (s, val) in stats.iter().zip([&mean, &inv]) {
                    if let Some(s) = s {
                        let v = b.f32_of(val);
                        b.store_flat(&v, *s, &oi[0])?;
                    }
                }
                b.nest(&[inner], &mut |b, j| {
                    let f = b.iop("arith.addi", &base, &j[0]);
                    let v = b.load_flat(x, &f)?;
                    let v = b.f64_of(&v);
                    let d = b.op2("arith.subf", &v, &mean, "f64");
                    let y = b.op2("arith.mulf", &d, &inv, "f64");
                    let y = b.f32_of(&y);
                    let full = b.delinearize(&f, &shape);
                    let sc = b.load_bcast(scale, &full)?;
                    let mut y = b.op2("arith.mulf", &y, &sc, "f32");
                    if let Some(bv) = bias {
                        let bb = b.load_bcast(bv, &full)?;
                        y = b.op2("arith.addf", &y, &bb, "f32");
                    }
                    b.store(&y, out, &full)
                })
            })
        }
        Op::BatchNorm { epsilon } => {
            let p: Vec<ValueId> = (1..5)
                .map(|i| {
                    n.inputs
                        .get(i)
                        .copied()
                        .flatten()
                        .ok_or_else(|| b.err(n, "a parameter is missing"))
                })
                .collect::<Result<_, _>>()?;
            let eps = *epsilon;
            b.map_out(out, &mut |b, idx| {
                let c = [idx[1].clone()];
                let v = b.load(x, idx)?;
                let sc = b.load(p[0], &c)?;
                let bi = b.load(p[1], &c)?;
                let me = b.load(p[2], &c)?;
                let va = b.load(p[3], &c)?;
                let e = b.f32c(eps);
                let ve = b.op2("arith.addf", &va, &e, "f32");
                let sd = b.op1("math.sqrt", &ve, "f32");
                let one = b.f32c(1.0);
                let inv = b.op2("arith.divf", &one, &sd, "f32");
                let d = b.op2("arith.subf", &v, &me, "f32");
                let y = b.op2("arith.mulf", &d, &inv, "f32");
                let y = b.op2("arith.mulf", &y, &sc, "f32");
                Ok(b.op2("arith.addf", &y, &bi, "f32"))
            })
        }
        _ => Err(b.err(n, format!("{} has no host lowering yet", n.op_type))),
    }
}
