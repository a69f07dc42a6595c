//! Normalizations over axis groups and selections along an axis: RMSNormalization,
//! LpNormalization, MeanVarianceNormalization, InstanceNormalization, Hardmax, LRN and TopK
//! (with a constant k), as the ONNX specifications and their reference implementations define
//! them. Statistics are computed once per group in `f64` (the reference interpreter and the
//! host alike); they run on the host.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer, device lowering (refused, with the reason) and host lowering.

use ndarray::{ArrayD, IxDyn};

use super::Work;
use crate::interp::*;
use crate::ir::*;
use crate::lower::LowerError;
use crate::lower::host::HostBuilder;
use crate::lower::schedule::*;
use crate::onnx::Attrs;
use crate::ops::{Arity, counts};
use crate::shape::*;

type R<T> = Result<T, String>;

/// The family's name in the registry.
pub(crate) const FAMILY: &str = "normalize";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &[
    "RMSNormalization",
    "LpNormalization",
    "MeanVarianceNormalization",
    "InstanceNormalization",
    "Hardmax",
    "LRN",
    "TopK",
];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, opset: i64) -> Result<Op, String> {
    let kind = match op_type {
        "RMSNormalization" => {
            if a.i64("stash_type", 1) != 1 {
                return Err("RMSNormalization with a stash_type other than float".into());
            }
            NormKind::Rms { axis: a.i64("axis", -1), epsilon: a.f32("epsilon", 1e-5) }
        }
        "LpNormalization" => {
            let p = a.i64("p", 2);
            if p != 1 && p != 2 {
                return Err(a.invalid(format!("LpNormalization p = {p} (1 or 2)")));
            }
            NormKind::Lp { axis: a.i64("axis", -1), p: p as u8 }
        }
        "MeanVarianceNormalization" => {
            NormKind::Mvn { axes: a.ints("axes").unwrap_or_else(|| vec![0, 2, 3]) }
        }
        "InstanceNormalization" => NormKind::Instance { epsilon: a.f32("epsilon", 1e-5) },
        // Before opset 13 Hardmax works on the input coerced to 2-D at `axis` (default 1).
        "Hardmax" if opset < 13 => NormKind::Hardmax { axis: a.i64("axis", 1), flatten: true },
        "Hardmax" => NormKind::Hardmax { axis: a.i64("axis", -1), flatten: false },
        "LRN" => {
            let size = a.i64("size", 0);
            let size = usize::try_from(size)
                .ok()
                .filter(|s| *s >= 1)
                .ok_or_else(|| a.invalid(format!("LRN size {size} is not positive")))?;
            NormKind::Lrn {
                alpha: a.f32("alpha", 1e-4),
                beta: a.f32("beta", 0.75),
                bias: a.f32("bias", 1.0),
                size,
            }
        }
        "TopK" => {
            if opset < 10 {
                return Err("TopK before opset 10 (k as an attribute) is not supported".into());
            }
            NormKind::TopK {
                axis: a.i64("axis", -1),
                largest: a.i64("largest", 1) != 0,
                // Sorted or not, the reference returns the sorted order; so does accelc.
                sorted: a.i64("sorted", 1) != 0,
            }
        }
        other => return Err(super::misrouted_name(other, FAMILY)),
    };
    Ok(Op::Normalize(kind))
}

/// The axes each output element's statistics range over.
fn reduced_axes(kind: &NormKind, rank: usize) -> R<Vec<usize>> {
    Ok(match kind {
        NormKind::Rms { axis: a, .. } => (axis(*a, rank)?..rank).collect(),
        NormKind::Lp { axis: a, .. } => vec![axis(*a, rank)?],
        NormKind::Hardmax { axis: a, flatten: false } => vec![axis(*a, rank)?],
        NormKind::Hardmax { axis: a, flatten: true } => {
            let k = if *a == rank as i64 { rank } else { axis(*a, rank)? };
            (k..rank).collect()
        }
        NormKind::Mvn { axes } => {
            let mut v: Vec<usize> = axes.iter().map(|x| axis(*x, rank)).collect::<R<_>>()?;
            v.sort_unstable();
            v.dedup();
            v
        }
        NormKind::Instance { .. } => (2..rank).collect(),
        NormKind::Lrn { .. } | NormKind::TopK { .. } => vec![],
    })
}

/// Output types from input types `ins` (and constant shape operands of `g`).
pub(crate) fn infer(g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let Op::Normalize(kind) = &node.op else { return Err(super::misrouted(&node.op, FAMILY)) };
    let x = input(ins, 0)?;
    if x.dtype != DType::F32 && !matches!(kind, NormKind::TopK { .. }) {
        return Err(format!("{} of {} (float32 is supported)", node.op_type, x.dtype));
    }
    let rank = x.shape.len();
    reduced_axes(kind, rank)?;
    match kind {
        NormKind::Rms { axis: a, .. } => {
            let s = input(ins, 1)?;
            let k = axis(*a, rank)?;
            if broadcast_shape(&x.shape[k..], &s.shape)? != x.shape[k..] || s.dtype != x.dtype {
                return Err(format!("RMSNormalization scale {s} for {x} from axis {k}"));
            }
        }
        NormKind::Instance { .. } => {
            if rank < 3 {
                return Err(format!("InstanceNormalization of {x} (rank 3 or more)"));
            }
            for i in [1, 2] {
                let t = input(ins, i)?;
                if t.shape != [x.shape[1]] || t.dtype != x.dtype {
                    return Err(format!("InstanceNormalization parameter {t} for {x}"));
                }
            }
        }
        NormKind::Lrn { .. } if rank != 4 => return Err(format!("LRN of {x} (4-D only)")),
        NormKind::TopK { axis: a, .. } => {
            let k = axis(*a, rank)?;
            let kv = const_ints(g, node, 1)?.ok_or("TopK needs k")?;
            let kk = *kv.first().ok_or("TopK's k is empty")?;
            let kk = usize::try_from(kk)
                .ok()
                .filter(|v| *v <= x.shape[k])
                .ok_or(format!("TopK k = {kk} for an axis of {}", x.shape[k]))?;
            if x.dtype == DType::Bool {
                return Err("TopK of bool".into());
            }
            let mut shape = x.shape.clone();
            shape[k] = kk;
            return Ok(vec![
                TensorType { dtype: x.dtype, shape: shape.clone() },
                TensorType { dtype: DType::I64, shape },
            ]);
        }
        _ => {}
    }
    Ok(vec![x.clone()])
}

/// Per group (the elements sharing every axis not in `red`), `f` of its flat input indices;
/// returns, per flat element, its group's index, and the groups' member lists.
fn groups(shape: &[usize], red: &[usize]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let n: usize = shape.iter().product();
    let keep: Vec<usize> = (0..shape.len()).filter(|a| !red.contains(a)).collect();
    let gcount: usize = keep.iter().map(|a| shape[*a]).product();
    let mut of = vec![0; n];
    let mut members = vec![Vec::new(); gcount.max(1)];
    for (f, slot) in of.iter_mut().enumerate() {
        let mut rest = f;
        let mut idx = vec![0; shape.len()];
        for k in (0..shape.len()).rev() {
            idx[k] = rest % shape[k].max(1);
            rest /= shape[k].max(1);
        }
        let gi = keep.iter().fold(0, |acc, a| acc * shape[*a] + idx[*a]);
        *slot = gi;
        members[gi].push(f);
    }
    (of, members)
}

/// Reference semantics (ONNX's reference implementations, statistics in `f64`).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let Op::Normalize(kind) = &node.op else { return Err(super::misrouted(&node.op, FAMILY)) };
    let xa = arg(args, 0)?;
    let shape = xa.shape().to_vec();
    let rank = shape.len();
    if let NormKind::TopK { axis: a, largest, .. } = kind {
        let k = axis(*a, rank)?;
        let kk = *arg(args, 1)?.ints()?.iter().next().ok_or("TopK's k is empty")? as usize;
        // The order: NaN above every number (numpy's sort, as onnx's reference), integers
        // exactly.
        let cmp_at: Box<dyn Fn(usize, usize) -> std::cmp::Ordering> = match xa {
            Array::F32(x) => {
                let v: Vec<f32> = x.iter().copied().collect();
                Box::new(move |p, q| match (v[p].is_nan(), v[q].is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ => v[p].partial_cmp(&v[q]).unwrap_or(std::cmp::Ordering::Equal),
                })
            }
            Array::Int(x, d) => {
                let v: Vec<i128> = x.iter().map(|e| super::elementwise::ukey(*d, *e)).collect();
                Box::new(move |p, q| v[p].cmp(&v[q]))
            }
        };
        let n = shape[k];
        let stride: usize = shape[k + 1..].iter().product();
        let mut oshape = shape.clone();
        oshape[k] = kk;
        let outer: usize = shape[..k].iter().product();
        let mut ii = vec![0i64; outer * kk * stride];
        let mut pos = vec![0usize; outer * kk * stride];
        for o in 0..outer {
            for s in 0..stride {
                let at = |j: usize| o * n * stride + j * stride + s;
                let mut order: Vec<usize> = (0..n).collect();
                // Largest (or smallest) first; equal values by index.
                order.sort_by(|&p, &q| {
                    let c = if *largest { cmp_at(at(q), at(p)) } else { cmp_at(at(p), at(q)) };
                    c.then(p.cmp(&q))
                });
                for (t, j) in order.iter().take(kk).enumerate() {
                    let oi = o * kk * stride + t * stride + s;
                    ii[oi] = *j as i64;
                    pos[oi] = at(*j);
                }
            }
        }
        let values = match xa {
            Array::F32(x) => {
                let f: Vec<f32> = x.iter().copied().collect();
                Array::F32(
                    ArrayD::from_shape_vec(IxDyn(&oshape), pos.iter().map(|p| f[*p]).collect())
                        .map_err(|e| e.to_string())?,
                )
            }
            Array::Int(x, dt) => {
                let f: Vec<i64> = x.iter().copied().collect();
                Array::Int(
                    ArrayD::from_shape_vec(IxDyn(&oshape), pos.iter().map(|p| f[*p]).collect())
                        .map_err(|e| e.to_string())?,
                    *dt,
                )
            }
        };
        let idx = Array::Int(
            ArrayD::from_shape_vec(IxDyn(&oshape), ii).map_err(|e| e.to_string())?,
            DType::I64,
        );
        return Ok(vec![values, idx]);
    }
    let x: Vec<f64> = xa.f32()?.iter().map(|v| f64::from(*v)).collect();
    let mut y = vec![0f32; x.len()];
    if let NormKind::Lrn { alpha, beta, bias, size } = kind {
        let (c, hw) = (shape[1], shape[2] * shape[3]);
        let (lo, hi) = ((size - 1) / 2, (size - 1).div_ceil(2));
        for (f, out) in y.iter_mut().enumerate() {
            let ch = (f / hw) % c;
            let base = f - ch * hw;
            let (b0, b1) = (ch.saturating_sub(lo), (ch + hi + 1).min(c));
            let sq: f64 = (b0..b1).map(|k| x[base + k * hw].powi(2)).sum();
            let d =
                (f64::from(*bias) + f64::from(*alpha) / *size as f64 * sq).powf(f64::from(*beta));
            *out = (x[f] / d) as f32;
        }
        return Ok(vec![Array::F32(
            ArrayD::from_shape_vec(IxDyn(&shape), y).map_err(|e| e.to_string())?,
        )]);
    }
    let red = reduced_axes(kind, rank)?;
    let (of, members) = groups(&shape, &red);
    let cnt = |m: &[usize]| m.len().max(1) as f64;
    let sum = |m: &[usize], f: &dyn Fn(f64) -> f64| m.iter().map(|i| f(x[*i])).sum::<f64>();
    let param = |i: usize| -> R<Vec<f64>> {
        Ok(arg(args, i)?.f32()?.iter().map(|v| f64::from(*v)).collect())
    };
    match kind {
        NormKind::Rms { epsilon, axis: a } => {
            let s = arg(args, 1)?.f32()?;
            let k = axis(*a, rank)?;
            let sb = s
                .broadcast(IxDyn(&shape[k..]))
                .ok_or("RMSNormalization scale does not broadcast")?;
            let sv: Vec<f64> = sb.iter().map(|v| f64::from(*v)).collect();
            let inner = sv.len().max(1);
            let rms: Vec<f64> = members
                .iter()
                .map(|m| 1.0 / (sum(m, &|v| v * v) / cnt(m) + f64::from(*epsilon)).sqrt())
                .collect();
            for (f, out) in y.iter_mut().enumerate() {
                *out = (x[f] * rms[of[f]] * sv[f % inner]) as f32;
            }
        }
        NormKind::Lp { p, .. } => {
            let norm: Vec<f64> = members
                .iter()
                .map(|m| if *p == 1 { sum(m, &f64::abs) } else { sum(m, &|v| v * v).sqrt() })
                .collect();
            for (f, out) in y.iter_mut().enumerate() {
                let n = norm[of[f]];
                *out = if n == 0.0 { 0.0 } else { (x[f] / n) as f32 };
            }
        }
        NormKind::Mvn { .. } | NormKind::Instance { .. } => {
            let stats: Vec<(f64, f64)> = members
                .iter()
                .map(|m| {
                    let mean = sum(m, &|v| v) / cnt(m);
                    (mean, sum(m, &|v| (v - mean) * (v - mean)) / cnt(m))
                })
                .collect();
            let (sc, bi) = match kind {
                NormKind::Instance { .. } => (Some(param(1)?), Some(param(2)?)),
                _ => (None, None),
            };
            let hw: usize = shape[2.min(rank)..].iter().product();
            for (f, out) in y.iter_mut().enumerate() {
                let (mean, var) = stats[of[f]];
                *out = match (kind, &sc, &bi) {
                    (NormKind::Instance { epsilon }, Some(s), Some(b)) => {
                        let c = (f / hw) % shape[1];
                        (s[c] * (x[f] - mean) / (var + f64::from(*epsilon)).sqrt() + b[c]) as f32
                    }
                    // ONNX's function body: (X − E[X]) / (√(E[X²] − E[X]²) + 1e−9).
                    _ => ((x[f] - mean) / (var.sqrt() + 1e-9)) as f32,
                };
            }
        }
        NormKind::Hardmax { .. } => {
            // The first maximum of each group (NaN counting as the maximum, as numpy).
            let best: Vec<usize> = members
                .iter()
                .map(|m| {
                    let mut b = m.first().copied().unwrap_or(0);
                    for i in m {
                        let (v, w) = (x[*i], x[b]);
                        if !w.is_nan() && (v.is_nan() || v > w) {
                            b = *i;
                        }
                    }
                    b
                })
                .collect();
            for (f, out) in y.iter_mut().enumerate() {
                *out = if best[of[f]] == f { 1.0 } else { 0.0 };
            }
        }
        _ => return Err(super::misrouted(&node.op, FAMILY)),
    }
    Ok(vec![Array::F32(ArrayD::from_shape_vec(IxDyn(&shape), y).map_err(|e| e.to_string())?)])
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    let Op::Normalize(kind) = op else { return };
    let f = crate::text::flt;
    match kind {
        NormKind::Rms { axis, epsilon } => {
            a.push(format!("axis: int = {axis}"));
            a.push(format!("epsilon: float = {}", f(*epsilon)));
        }
        NormKind::Lp { axis, p } => {
            a.push(format!("axis: int = {axis}"));
            a.push(format!("p: int = {p}"));
        }
        NormKind::Mvn { axes } => a.push(format!("axes: ints = {}", crate::text::ints(axes))),
        NormKind::Instance { epsilon } => a.push(format!("epsilon: float = {}", f(*epsilon))),
        NormKind::Hardmax { axis, .. } => a.push(format!("axis: int = {axis}")),
        NormKind::Lrn { alpha, beta, bias, size } => {
            a.push(format!("alpha: float = {}", f(*alpha)));
            a.push(format!("beta: float = {}", f(*beta)));
            a.push(format!("bias: float = {}", f(*bias)));
            a.push(format!("size: int = {size}"));
        }
        NormKind::TopK { axis, largest, sorted } => {
            a.push(format!("axis: int = {axis}"));
            a.push(format!("largest: int = {}", i64::from(*largest)));
            a.push(format!("sorted: int = {}", i64::from(*sorted)));
        }
    }
}

/// Device lowering: not yet (the row-wise kernels could take RMS and Lp norms), so these run
/// on the host.
pub(crate) fn lower(_b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    Err(LowerError::at(&n.name, format!("{} is not lowered to the device", n.op_type)))
}

/// Cost inputs: a few vector passes per element.
pub(crate) fn work(_op: &Op, _inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    Work::Vector { passes: 4, slow: true }
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`.
pub(crate) fn arity(op_type: &str, opset: i64) -> Arity {
    match op_type {
        "RMSNormalization" => counts(2, 2, 1, 1),
        "InstanceNormalization" => counts(3, 3, 1, 1),
        "TopK" if opset >= 10 => counts(2, 2, 2, 2),
        "TopK" => counts(1, 1, 2, 2),
        _ => counts(1, 1, 1, 1),
    }
}

/// TopK's k determines the output shape.
pub(crate) fn shape_operand(op: &Op, i: usize) -> bool {
    matches!(op, Op::Normalize(NormKind::TopK { .. })) && i == 1
}

/// Host lowering: per group (a loop nest over the kept axes), the statistics by a fold over
/// the group's elements, then every element of the group; LRN per element over its channel
/// window; TopK per output position by ranking (the element with exactly `t` better ones).
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let Op::Normalize(kind) = n.op.clone() else {
        return Err(LowerError::msg(super::misrouted(&n.op, FAMILY)));
    };
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the input is missing"))?;
    let xt = b.ty(x)?;
    let shape = xt.shape.clone();
    let rank = shape.len();
    let out = n.outputs[0];
    let param = |i: usize| n.inputs.get(i).copied().flatten();
    if let NormKind::TopK { axis: a, largest, .. } = kind {
        let k = axis(a, rank).map_err(|e| b.err(n, e))?;
        let len = shape[k];
        let dt = xt.dtype;
        let (vo, io) = (out, n.outputs[1]);
        b.out(io)?;
        let float = dt == DType::F32;
        return b.map_out(vo, &mut |b, o| {
            let at = |j: &str| -> Vec<String> {
                let mut i = o.to_vec();
                i[k] = j.to_string();
                i
            };
            // Floats as f64, integers as i64 (exact).
            let load = |b: &mut HostBuilder<'_>, j: &str| -> Result<String, LowerError> {
                let v = b.load(x, &at(j))?;
                Ok(if float { b.f64_of(&v) } else { b.widen(&v, dt) })
            };
            // (greater, equal) of two loaded values, NaN above every number.
            let order = |b: &mut HostBuilder<'_>, a: &str, c: &str| -> (String, String) {
                if !float {
                    let gt = if dt == DType::U64 { "ugt" } else { "sgt" };
                    return (b.cmpi(gt, a, c, "i64"), b.cmpi("eq", a, c, "i64"));
                }
                let an = b.cmpf("uno", a, a, "f64");
                let cn = b.cmpf("uno", c, c, "f64");
                let tr = b.let_("arith.constant true");
                let not_cn = b.op2("arith.xori", &cn, &tr, "i1");
                let nan_gt = b.op2("arith.andi", &an, &not_cn, "i1");
                let gt = b.cmpf("ogt", a, c, "f64");
                let gt = b.op2("arith.ori", &gt, &nan_gt, "i1");
                let both = b.op2("arith.andi", &an, &cn, "i1");
                let eq = b.cmpf("oeq", a, c, "f64");
                let eq = b.op2("arith.ori", &eq, &both, "i1");
                (gt, eq)
            };
            let t = b.let_(&format!("arith.index_cast {} : index to i64", o[k]));
            let z = b.idx(0);
            // The j whose count of better elements is t.
            let found = b.fold_n(len, std::slice::from_ref(&z), &["index"], &mut |b, j, acc| {
                let xj = load(b, j)?;
                let zero = b.i64c(0);
                let rank = b.fold_n(len, &[zero], &["i64"], &mut |b, l, acc2| {
                    let xl = load(b, l)?;
                    let (strict, eq) =
                        if largest { order(b, &xl, &xj) } else { order(b, &xj, &xl) };
                    let before = b.let_(&format!("arith.cmpi ult, {l}, {j} : index"));
                    let tie = b.op2("arith.andi", &eq, &before, "i1");
                    let better = b.op2("arith.ori", &strict, &tie, "i1");
                    let one = b.i64c(1);
                    let zero = b.i64c(0);
                    let inc = b.select(&better, &one, &zero, "i64");
                    Ok(vec![b.op2("arith.addi", &acc2[0], &inc, "i64")])
                })?;
                let hit = b.cmpi("eq", &rank[0], &t, "i64");
                Ok(vec![b.let_(&format!("arith.select {hit}, {j}, {} : index", acc[0]))])
            })?;
            let j = found[0].clone();
            let ji = b.let_(&format!("arith.index_cast {j} : index to i64"));
            b.store(&ji, io, o)?;
            b.load(x, &at(&j))
        });
    }
    if let NormKind::Lrn { alpha, beta, bias, size } = kind {
        let c = shape[1];
        // The window: channels ch − lo ..= ch + ceil((size − 1) / 2), `size` of them.
        let lo = (size - 1) / 2;
        return b.map_out(out, &mut |b, o| {
            let z = b.f64c(0.0);
            let acc = b.fold_n(size, &[z], &["f64"], &mut |b, t, acc| {
                // Channel ch − lo + t, when inside 0..c.
                let lo_c = b.idx(lo);
                let ch = b.iop("arith.addi", &o[1], t);
                let inside_lo = b.let_(&format!("arith.cmpi uge, {ch}, {lo_c} : index"));
                let chl = b.iop("arith.subi", &ch, &lo_c);
                let cc = b.idx(c);
                let inside_hi = b.let_(&format!("arith.cmpi ult, {chl}, {cc} : index"));
                let inside = b.op2("arith.andi", &inside_lo, &inside_hi, "i1");
                let z = b.idx(0);
                let safe = b.let_(&format!("arith.select {inside}, {chl}, {z} : index"));
                let v = b.load(x, &[o[0].clone(), safe, o[2].clone(), o[3].clone()])?;
                let v = b.f64_of(&v);
                let sq = b.op2("arith.mulf", &v, &v, "f64");
                let zf = b.f64c(0.0);
                let sq = b.select(&inside, &sq, &zf, "f64");
                Ok(vec![b.op2("arith.addf", &acc[0], &sq, "f64")])
            })?;
            let k = b.f64c(f64::from(alpha) / size as f64);
            let bb = b.f64c(f64::from(bias));
            let d = b.op2("arith.mulf", &k, &acc[0], "f64");
            let d = b.op2("arith.addf", &bb, &d, "f64");
            let be = b.f64c(f64::from(beta));
            let d = b.op2("math.powf", &d, &be, "f64");
            let v = b.load(x, o)?;
            let v = b.f64_of(&v);
            let r = b.op2("arith.divf", &v, &d, "f64");
            Ok(b.f32_of(&r))
        });
    }
    let red = reduced_axes(&kind, rank).map_err(|e| b.err(n, e))?;
    let keep: Vec<usize> = (0..rank).filter(|a| !red.contains(a)).collect();
    let kdims: Vec<usize> = keep.iter().map(|a| shape[*a]).collect();
    let rdims: Vec<usize> = red.iter().map(|a| shape[*a]).collect();
    let count: usize = rdims.iter().product();
    b.out(out)?;
    b.nest(&kdims, &mut |b, ki| {
        let full = |b: &mut HostBuilder<'_>, t: &str| -> Vec<String> {
            let ri = b.delinearize(t, &rdims);
            let mut idx = vec![String::new(); rank];
            for (a, v) in keep.iter().zip(ki) {
                idx[*a] = v.clone();
            }
            for (a, v) in red.iter().zip(ri) {
                idx[*a] = v;
            }
            idx
        };
        let load =
            |b: &mut HostBuilder<'_>, t: &str| -> Result<(Vec<String>, String), LowerError> {
                let idx = full(b, t);
                let v = b.load(x, &idx)?;
                let v = b.f64_of(&v);
                Ok((idx, v))
            };
        let z = b.f64c(0.0);
        // Sum, sum of squares and sum of absolute values.
        let sums = b.fold_n(
            count,
            &[z.clone(), z.clone(), z.clone()],
            &["f64", "f64", "f64"],
            &mut |b, t, acc| {
                let (_, v) = load(b, t)?;
                let s = b.op2("arith.addf", &acc[0], &v, "f64");
                let sq = b.op2("arith.mulf", &v, &v, "f64");
                let sq = b.op2("arith.addf", &acc[1], &sq, "f64");
                let ab = b.op1("math.absf", &v, "f64");
                let ab = b.op2("arith.addf", &acc[2], &ab, "f64");
                Ok(vec![s, sq, ab])
            },
        )?;
        let cnt = b.f64c(count.max(1) as f64);
        let mean = b.op2("arith.divf", &sums[0], &cnt, "f64");
        // The variance about the mean, a second pass (as the reference).
        let var = if matches!(kind, NormKind::Mvn { .. } | NormKind::Instance { .. }) {
            let dev = b.fold_n(count, std::slice::from_ref(&z), &["f64"], &mut |b, t, acc| {
                let (_, v) = load(b, t)?;
                let d = b.op2("arith.subf", &v, &mean, "f64");
                let d2 = b.op2("arith.mulf", &d, &d, "f64");
                Ok(vec![b.op2("arith.addf", &acc[0], &d2, "f64")])
            })?;
            b.op2("arith.divf", &dev[0], &cnt, "f64")
        } else {
            z.clone()
        };
        // Hardmax: the flat position of the first maximum (NaN counting as the maximum).
        let best = if matches!(kind, NormKind::Hardmax { .. }) {
            let i0 = b.idx(0);
            let (_, v0) = load(b, &i0)?;
            let r = b.fold_n(count, &[v0, i0], &["f64", "index"], &mut |b, t, acc| {
                let (_, v) = load(b, t)?;
                let best_nan = b.cmpf("uno", &acc[0], &acc[0], "f64");
                let v_nan = b.cmpf("uno", &v, &v, "f64");
                let gt = b.cmpf("ogt", &v, &acc[0], "f64");
                let better = b.op2("arith.ori", &gt, &v_nan, "i1");
                let tr = b.let_("arith.constant true");
                let nb = b.op2("arith.xori", &best_nan, &tr, "i1");
                let take = b.op2("arith.andi", &better, &nb, "i1");
                let nv = b.select(&take, &v, &acc[0], "f64");
                let ni = b.let_(&format!("arith.select {take}, {t}, {} : index", acc[1]));
                Ok(vec![nv, ni])
            })?;
            r[1].clone()
        } else {
            b.idx(0)
        };
        let kind = kind.clone();
        b.nest(&[count], &mut |b, ivs| {
            let iv = ivs[0].clone();
            let (idx, v) = load(b, &iv)?;
            let y = match &kind {
                NormKind::Rms { epsilon, axis: a } => {
                    let eps = b.f64c(f64::from(*epsilon));
                    let ms = b.op2("arith.divf", &sums[1], &cnt, "f64");
                    let ms = b.op2("arith.addf", &ms, &eps, "f64");
                    let r = b.op1("math.sqrt", &ms, "f64");
                    let one = b.f64c(1.0);
                    let r = b.op2("arith.divf", &one, &r, "f64");
                    let k = axis(*a, rank).map_err(|e| b.err(n, e))?;
                    let s = param(1).ok_or_else(|| b.err(n, "the scale is missing"))?;
                    let sv = b.load_bcast(s, &idx[k..])?;
                    let sv = b.f64_of(&sv);
                    let y = b.op2("arith.mulf", &v, &r, "f64");
                    b.op2("arith.mulf", &y, &sv, "f64")
                }
                NormKind::Lp { p, .. } => {
                    let norm =
                        if *p == 1 { sums[2].clone() } else { b.op1("math.sqrt", &sums[1], "f64") };
                    let zero = b.cmpf("oeq", &norm, &z, "f64");
                    let q = b.op2("arith.divf", &v, &norm, "f64");
                    b.select(&zero, &z, &q, "f64")
                }
                NormKind::Mvn { .. } => {
                    let sd = b.op1("math.sqrt", &var, "f64");
                    let e = b.f64c(1e-9);
                    let sd = b.op2("arith.addf", &sd, &e, "f64");
                    let d = b.op2("arith.subf", &v, &mean, "f64");
                    b.op2("arith.divf", &d, &sd, "f64")
                }
                NormKind::Instance { epsilon } => {
                    let eps = b.f64c(f64::from(*epsilon));
                    let ve = b.op2("arith.addf", &var, &eps, "f64");
                    let sd = b.op1("math.sqrt", &ve, "f64");
                    let d = b.op2("arith.subf", &v, &mean, "f64");
                    let s = param(1).ok_or_else(|| b.err(n, "the scale is missing"))?;
                    let bi = param(2).ok_or_else(|| b.err(n, "the bias is missing"))?;
                    let sv = b.load(s, &[idx[1].clone()])?;
                    let sv = b.f64_of(&sv);
                    let bv = b.load(bi, &[idx[1].clone()])?;
                    let bv = b.f64_of(&bv);
                    let y = b.op2("arith.mulf", &sv, &d, "f64");
                    let y = b.op2("arith.divf", &y, &sd, "f64");
                    b.op2("arith.addf", &y, &bv, "f64")
                }
                NormKind::Hardmax { .. } => {
                    let hit = b.let_(&format!("arith.cmpi eq, {iv}, {best} : index"));
                    let one = b.f64c(1.0);
                    b.select(&hit, &one, &z, "f64")
                }
                _ => return Err(LowerError::msg(super::misrouted(&n.op, FAMILY))),
            };
            let y = b.f32_of(&y);
            b.store(&y, out, &idx)
        })
    })
}
