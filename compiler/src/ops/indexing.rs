//! Indexed data movement: GatherElements, GatherND, ScatterElements, ScatterND, OneHot,
//! Trilu, Tile, DepthToSpace, SpaceToDepth and CumSum. Data-dependent addressing the device's
//! DMA descriptors cannot express (indices computed at run time), so they run on the host.
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
pub(crate) const FAMILY: &str = "indexing";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &[
    "GatherElements",
    "GatherND",
    "ScatterElements",
    "ScatterND",
    "OneHot",
    "Trilu",
    "Tile",
    "CenterCropPad",
    "DepthToSpace",
    "SpaceToDepth",
    "CumSum",
    "CumProd",
];

fn reduction(a: &Attrs<'_>) -> R<ScatterReduction> {
    match a.string("reduction").as_deref() {
        None | Some("none") => Ok(ScatterReduction::None),
        Some("add") => Ok(ScatterReduction::Add),
        Some("mul") => Ok(ScatterReduction::Mul),
        Some("max") => Ok(ScatterReduction::Max),
        Some("min") => Ok(ScatterReduction::Min),
        Some(o) => Err(a.invalid(format!("reduction `{o}` is not defined"))),
    }
}

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, _opset: i64) -> Result<Op, String> {
    let blocksize = || {
        let b = a.i64("blocksize", 0);
        usize::try_from(b)
            .ok()
            .filter(|b| *b >= 1)
            .ok_or_else(|| a.invalid(format!("blocksize {b} is not a positive count")))
    };
    match op_type {
        "GatherElements" => Ok(Op::GatherElements { axis: a.i64("axis", 0) }),
        "GatherND" => {
            let b = a.i64("batch_dims", 0);
            let batch_dims =
                usize::try_from(b).map_err(|_| a.invalid(format!("batch_dims {b} is negative")))?;
            Ok(Op::GatherND { batch_dims })
        }
        "ScatterElements" => {
            Ok(Op::ScatterElements { axis: a.i64("axis", 0), reduction: reduction(a)? })
        }
        "ScatterND" => Ok(Op::ScatterND { reduction: reduction(a)? }),
        "OneHot" => Ok(Op::OneHot { axis: a.i64("axis", -1) }),
        "Trilu" => Ok(Op::Trilu { upper: a.i64("upper", 1) != 0 }),
        "Tile" => Ok(Op::Tile),
        "CenterCropPad" => Ok(Op::CenterCropPad { axes: a.ints("axes") }),
        "DepthToSpace" => {
            let crd = match a.string("mode").as_deref() {
                None | Some("DCR") => false,
                Some("CRD") => true,
                Some(o) => return Err(a.invalid(format!("DepthToSpace mode `{o}` is not defined"))),
            };
            Ok(Op::DepthToSpace { blocksize: blocksize()?, crd })
        }
        "SpaceToDepth" => {
            let crd = match a.string("mode").as_deref() {
                None | Some("DCR") => false,
                Some("CRD") => true,
                Some(o) => return Err(a.invalid(format!("SpaceToDepth mode `{o}` is not defined"))),
            };
            Ok(Op::SpaceToDepth { blocksize: blocksize()?, crd })
        }
        "CumSum" | "CumProd" => Ok(Op::CumSum {
            exclusive: a.i64("exclusive", 0) != 0,
            reverse: a.i64("reverse", 0) != 0,
            product: op_type == "CumProd",
        }),
        other => Err(super::misrouted_name(other, FAMILY)),
    }
}

fn is_index(d: DType) -> bool {
    matches!(d, DType::I32 | DType::I64)
}

/// The constant integer input `i` (a shape operand).
fn const_list(g: &Graph, node: &Node, i: usize, what: &str) -> R<Vec<i64>> {
    const_ints(g, node, i)?.ok_or_else(|| format!("{} needs {what}", node.op_type))
}

/// Output types from input types `ins` (and constant shape operands of `g`).
pub(crate) fn infer(g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = input(ins, 0)?;
    let out = |shape: Vec<usize>| Ok(vec![TensorType { dtype: x.dtype, shape }]);
    match &node.op {
        Op::GatherElements { axis: ax } => {
            let i = input(ins, 1)?;
            axis(*ax, x.shape.len())?;
            if !is_index(i.dtype) || i.shape.len() != x.shape.len() {
                return Err(format!(
                    "GatherElements indices must be int32 or int64 of the data's rank; they are {i}"
                ));
            }
            out(i.shape.clone())
        }
        Op::GatherND { batch_dims } => {
            let i = input(ins, 1)?;
            let (b, r, q) = (*batch_dims, x.shape.len(), i.shape.len());
            let k = *i.shape.last().ok_or("GatherND indices of rank 0")?;
            if !is_index(i.dtype) || q < 1 || b >= q.min(r) || b + k > r {
                return Err(format!("GatherND of {x} with indices {i} and batch_dims {b}"));
            }
            if x.shape[..b] != i.shape[..b] {
                return Err("GatherND's batch dimensions differ".into());
            }
            let mut shape = i.shape[..q - 1].to_vec();
            shape.extend_from_slice(&x.shape[b + k..]);
            out(shape)
        }
        Op::ScatterElements { axis: ax, .. } => {
            let (i, u) = (input(ins, 1)?, input(ins, 2)?);
            axis(*ax, x.shape.len())?;
            if !is_index(i.dtype) || i.shape != u.shape || i.shape.len() != x.shape.len() {
                return Err(format!("ScatterElements of {x} with indices {i} and updates {u}"));
            }
            if u.dtype != x.dtype {
                return Err(format!("ScatterElements updates {u} into {x}"));
            }
            out(x.shape.clone())
        }
        Op::ScatterND { .. } => {
            let (i, u) = (input(ins, 1)?, input(ins, 2)?);
            let (q, r) = (i.shape.len(), x.shape.len());
            let k = *i.shape.last().ok_or("ScatterND indices of rank 0")?;
            let mut want = i.shape[..q.saturating_sub(1)].to_vec();
            if k <= r {
                want.extend_from_slice(&x.shape[k..]);
            }
            if !is_index(i.dtype) || k > r || u.shape != want || u.dtype != x.dtype {
                return Err(format!("ScatterND of {x} with indices {i} and updates {u}"));
            }
            out(x.shape.clone())
        }
        Op::OneHot { axis: ax } => {
            let values = input(ins, 2)?;
            let d = const_ints(g, node, 1).ok().flatten();
            let d = match d {
                Some(d) => d,
                // A float depth (ONNX allows any numeric type): truncated.
                None => {
                    let id = node.inputs.get(1).copied().flatten().ok_or("OneHot needs a depth")?;
                    let c = g.value(id).constant.as_ref().ok_or(
                        "input 1 is computed at run time; a static compiler needs it as a constant",
                    )?;
                    c.f32s().iter().map(|v| *v as i64).collect()
                }
            };
            let depth = *d.first().ok_or("OneHot's depth is empty")?;
            let depth = usize::try_from(depth)
                .ok()
                .filter(|d| *d >= 1)
                .ok_or(format!("OneHot depth {depth} is not positive"))?;
            if values.shape.iter().product::<usize>() != 2 {
                return Err(format!("OneHot values must hold 2 elements, not {:?}", values.shape));
            }
            let r = x.shape.len();
            let k = axis(*ax, r + 1)?;
            let mut shape = x.shape.clone();
            shape.insert(k, depth);
            Ok(vec![TensorType { dtype: values.dtype, shape }])
        }
        Op::Trilu { .. } => {
            if x.shape.len() < 2 {
                return Err(format!("Trilu of rank {}", x.shape.len()));
            }
            if let Some(k) = ins.get(1).copied().flatten()
                && (k.dtype != DType::I64 || k.shape.iter().product::<usize>() != 1)
            {
                return Err(format!("Trilu's k must be an int64 scalar, not {k}"));
            }
            out(x.shape.clone())
        }
        Op::CenterCropPad { axes } => {
            let target = const_list(g, node, 1, "shape")?;
            let (shape, _) = crop_pad_map(&x.shape, &target, axes.as_deref())?;
            out(shape)
        }
        Op::Tile => {
            let reps = const_list(g, node, 1, "repeats")?;
            if reps.len() != x.shape.len() || reps.iter().any(|r| *r < 0) {
                return Err(format!("Tile repeats {reps:?} for {x}"));
            }
            let shape = x
                .shape
                .iter()
                .zip(&reps)
                .map(|(d, r)| {
                    usize::try_from(*r).ok().and_then(|r| d.checked_mul(r)).ok_or_else(|| {
                        format!("Tile of {x} by {reps:?} has more elements than 64 bits can count")
                    })
                })
                .collect::<R<Vec<usize>>>()?;
            out(shape)
        }
        Op::DepthToSpace { blocksize: b, .. } => {
            let [n, c, h, w] = x.shape[..] else {
                return Err(format!("DepthToSpace of {x} (4-D only)"));
            };
            // Checked first: a blocksize near 2^32 wraps b·b (and the spatial sizes).
            if b.checked_mul(*b).is_none_or(|bb| bb > c) {
                return Err(format!(
                    "DepthToSpace blocksize {b} is larger than the {c} channels allow"
                ));
            }
            if h.checked_mul(*b).is_none() || w.checked_mul(*b).is_none() {
                return Err(format!("DepthToSpace blocksize {b} overflows the spatial size"));
            }
            if c % (b * b) != 0 {
                return Err(format!("DepthToSpace: {c} channels do not divide by {b}x{b}"));
            }
            out(vec![n, c / (b * b), h * b, w * b])
        }
        Op::SpaceToDepth { blocksize: b, .. } => {
            let [n, c, h, w] = x.shape[..] else {
                return Err(format!("SpaceToDepth of {x} (4-D only)"));
            };
            if h % b != 0 || w % b != 0 {
                return Err(format!("SpaceToDepth: {h}x{w} does not divide by {b}"));
            }
            if c.checked_mul(*b).and_then(|v| v.checked_mul(*b)).is_none() {
                return Err(format!("SpaceToDepth blocksize {b} overflows the channel count"));
            }
            out(vec![n, c * b * b, h / b, w / b])
        }
        Op::CumSum { .. } => {
            if x.dtype == DType::Bool {
                return Err("CumSum of bool".into());
            }
            let ax = const_list(g, node, 1, "an axis")?;
            axis(*ax.first().ok_or("CumSum's axis is empty")?, x.shape.len())?;
            out(x.shape.clone())
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1];
    }
    s
}

/// Every multi-index of `shape` in row-major order.
fn indices(shape: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    let n: usize = shape.iter().product();
    (0..n).map(move |mut f| {
        let mut idx = vec![0; shape.len()];
        for k in (0..shape.len()).rev() {
            idx[k] = f % shape[k].max(1);
            f /= shape[k].max(1);
        }
        idx
    })
}

/// An index normalised into `0..dim` (negative counts from the end), or an error.
fn norm_index(j: i64, dim: usize) -> R<usize> {
    let d = dim as i64;
    let j = if j < 0 { j + d } else { j };
    if (0..d).contains(&j) {
        Ok(j as usize)
    } else {
        Err(format!("index {j} is out of range for a dimension of {dim}"))
    }
}

/// A new array of `shape` whose element at each multi-index is `x`'s flat element `src(idx)`,
/// or zero where `src` gives `None`.
fn take(x: &Array, shape: &[usize], src: impl Fn(&[usize]) -> R<Option<usize>>) -> R<Array> {
    let sh = IxDyn(shape);
    match x {
        Array::F32(a) => {
            let flat: Vec<f32> = a.iter().copied().collect();
            let v = indices(shape)
                .map(|i| Ok(src(&i)?.map_or(0.0, |s| flat[s])))
                .collect::<R<Vec<f32>>>()?;
            Ok(Array::F32(ArrayD::from_shape_vec(sh, v).map_err(|e| e.to_string())?))
        }
        Array::Int(a, dt) => {
            let flat: Vec<i64> = a.iter().copied().collect();
            let v = indices(shape)
                .map(|i| Ok(src(&i)?.map_or(0, |s| flat[s])))
                .collect::<R<Vec<i64>>>()?;
            Ok(Array::Int(ArrayD::from_shape_vec(sh, v).map_err(|e| e.to_string())?, *dt))
        }
    }
}

/// Integer values of an index (or, for OneHot, any numeric) array, floats truncated.
/// CenterCropPad of a tensor of dims `xs` to sizes `target` on `axes` (ONNX CenterCropPad-18):
/// the output dims, and per axis the input index each output index reads (−1: padding). A
/// smaller size keeps the centre, starting at `(dim − size) / 2`; a larger one puts the input
/// at `(size − dim) / 2`, zeros around it.
fn crop_pad_map(
    xs: &[usize],
    target: &[i64],
    axes: Option<&[i64]>,
) -> R<(Vec<usize>, Vec<Vec<i64>>)> {
    let rank = xs.len();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|v| axis(*v, rank)).collect::<R<_>>()?,
        None => (0..rank).collect(),
    };
    if axes.len() != target.len() {
        return Err(format!("{} sizes for {} axes", target.len(), axes.len()));
    }
    if let Some(k) = (0..axes.len()).find(|&i| axes[..i].contains(&axes[i])) {
        return Err(format!("axis {} is given twice", axes[k]));
    }
    let mut shape = xs.to_vec();
    let mut tables: Vec<Vec<i64>> = xs.iter().map(|d| (0..*d as i64).collect()).collect();
    for (k, t) in axes.iter().zip(target) {
        let t = usize::try_from(*t).map_err(|_| format!("negative size {t}"))?;
        let d = xs[*k];
        shape[*k] = t;
        tables[*k] = if t <= d {
            let start = (d - t) / 2;
            (0..t).map(|o| (o + start) as i64).collect()
        } else {
            let begin = (t - d) / 2;
            (0..t)
                .map(|o| if o >= begin && o < begin + d { (o - begin) as i64 } else { -1 })
                .collect()
        };
    }
    Ok((shape, tables))
}

fn int_values(a: &Array) -> Vec<i64> {
    match a {
        Array::F32(x) => x.iter().map(|v| *v as i64).collect(),
        Array::Int(x, _) => x.iter().copied().collect(),
    }
}

/// Combines an existing element with an update (ScatterElements/ScatterND `reduction`; floats
/// with NaN propagating through max and min, integers wrapping).
fn combine_f(r: ScatterReduction, a: f32, b: f32) -> f32 {
    match r {
        ScatterReduction::None => b,
        ScatterReduction::Add => a + b,
        ScatterReduction::Mul => a * b,
        ScatterReduction::Max => nan_max(a, b),
        ScatterReduction::Min => nan_min(a, b),
    }
}

fn combine_i(r: ScatterReduction, a: i64, b: i64, dt: DType) -> i64 {
    let v = match r {
        ScatterReduction::None => b,
        ScatterReduction::Add => a.wrapping_add(b),
        ScatterReduction::Mul => a.wrapping_mul(b),
        ScatterReduction::Max => a.max(b),
        ScatterReduction::Min => a.min(b),
    };
    dt.wrap(v)
}

/// `data` with `updates[i]` combined into flat element `target(i)` for every `i`, in order.
fn scatter(data: &Array, updates: &Array, r: ScatterReduction, targets: &[usize]) -> R<Array> {
    match (data, updates) {
        (Array::F32(d), Array::F32(u)) => {
            let mut out: Vec<f32> = d.iter().copied().collect();
            for (t, v) in targets.iter().zip(u.iter()) {
                out[*t] = combine_f(r, out[*t], *v);
            }
            Ok(Array::F32(ArrayD::from_shape_vec(d.raw_dim(), out).map_err(|e| e.to_string())?))
        }
        (Array::Int(d, dt), Array::Int(u, _)) => {
            let mut out: Vec<i64> = d.iter().copied().collect();
            for (t, v) in targets.iter().zip(u.iter()) {
                out[*t] = combine_i(r, out[*t], *v, *dt);
            }
            Ok(Array::Int(
                ArrayD::from_shape_vec(d.raw_dim(), out).map_err(|e| e.to_string())?,
                *dt,
            ))
        }
        _ => Err(format!("updates of {} into {}", updates.dtype(), data.dtype())),
    }
}

/// Reference semantics: the outputs for inputs `args` (the oracle the device is checked
/// against).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let x = arg(args, 0)?;
    let xs = x.shape().to_vec();
    let st = strides(&xs);
    let one = |a: Array| Ok(vec![a]);
    match &node.op {
        Op::GatherElements { axis: ax } => {
            let k = axis(*ax, xs.len())?;
            let ind = arg(args, 1)?;
            let iv = int_values(ind);
            let ishape = ind.shape().to_vec();
            let ist = strides(&ishape);
            one(take(x, &ishape, |i| {
                let f: usize = i.iter().zip(&ist).map(|(a, b)| a * b).sum();
                let j = norm_index(iv[f], xs[k])?;
                Ok(Some(
                    i.iter().enumerate().map(|(a, v)| if a == k { j } else { *v } * st[a]).sum(),
                ))
            })?)
        }
        Op::GatherND { batch_dims } => {
            let ind = arg(args, 1)?;
            let iv = int_values(ind);
            let ishape = ind.shape().to_vec();
            let q = ishape.len();
            let kk = ishape[q - 1];
            let b = *batch_dims;
            let mut shape = ishape[..q - 1].to_vec();
            shape.extend_from_slice(&xs[b + kk..]);
            let ist = strides(&ishape);
            one(take(x, &shape, |o| {
                // The index tuple at o[..q-1].
                let base: usize = o[..q - 1].iter().zip(&ist).map(|(a, s)| a * s).sum();
                let mut src = 0;
                for a in 0..b {
                    src += o[a] * st[a];
                }
                for t in 0..kk {
                    src += norm_index(iv[base + t], xs[b + t])? * st[b + t];
                }
                for (a, v) in o[q - 1..].iter().enumerate() {
                    src += v * st[b + kk + a];
                }
                Ok(Some(src))
            })?)
        }
        Op::ScatterElements { axis: ax, reduction } => {
            let k = axis(*ax, xs.len())?;
            let ind = arg(args, 1)?;
            let iv = int_values(ind);
            let targets = indices(ind.shape())
                .zip(&iv)
                .map(|(i, j)| {
                    let j = norm_index(*j, xs[k])?;
                    Ok(i.iter().enumerate().map(|(a, v)| if a == k { j } else { *v } * st[a]).sum())
                })
                .collect::<R<Vec<usize>>>()?;
            one(scatter(x, arg(args, 2)?, *reduction, &targets)?)
        }
        Op::ScatterND { reduction } => {
            let ind = arg(args, 1)?;
            let iv = int_values(ind);
            let ishape = ind.shape().to_vec();
            let kk = ishape[ishape.len() - 1];
            let rows: usize = ishape[..ishape.len() - 1].iter().product();
            let inner: usize = xs[kk..].iter().product();
            let mut targets = Vec::with_capacity(rows * inner);
            for r in 0..rows {
                let mut base = 0;
                for t in 0..kk {
                    base += norm_index(iv[r * kk + t], xs[t])? * st[t];
                }
                targets.extend((0..inner).map(|e| base + e));
            }
            one(scatter(x, arg(args, 2)?, *reduction, &targets)?)
        }
        Op::OneHot { axis: ax } => {
            let depth = *int_values(arg(args, 1)?).first().ok_or("OneHot's depth is empty")?;
            let values = arg(args, 2)?;
            let k = axis(*ax, xs.len() + 1)?;
            let mut shape = xs.clone();
            shape.insert(k, depth as usize);
            let iv = int_values(x);
            take(values, &shape, |o| {
                let f: usize = o
                    .iter()
                    .enumerate()
                    .filter(|(a, _)| *a != k)
                    .map(|(_, v)| *v)
                    .zip(&st)
                    .map(|(v, s)| v * s)
                    .sum();
                let j = iv[f];
                let j = if j < 0 { j + depth } else { j };
                Ok(Some(usize::from(j == o[k] as i64)))
            })
            .map(|a| vec![a])
        }
        Op::Trilu { upper } => {
            let k = match opt(args, 1) {
                Some(a) => *int_values(a).first().unwrap_or(&0),
                None => 0,
            };
            let r = xs.len();
            let upper = *upper;
            one(take(x, &xs, |i| {
                let d = i[r - 1] as i64 - i[r - 2] as i64;
                let keep = if upper { d >= k } else { d <= k };
                Ok(keep.then(|| i.iter().zip(&st).map(|(a, s)| a * s).sum()))
            })?)
        }
        Op::CenterCropPad { axes } => {
            let target = int_values(arg(args, 1)?);
            let (shape, tables) = crop_pad_map(&xs, &target, axes.as_deref())?;
            one(take(x, &shape, |o| {
                let mut at = 0;
                for (k, i) in o.iter().enumerate() {
                    let j = tables[k][*i];
                    if j < 0 {
                        return Ok(None);
                    }
                    at += j as usize * st[k];
                }
                Ok(Some(at))
            })?)
        }
        Op::Tile => {
            let reps = int_values(arg(args, 1)?);
            let shape: Vec<usize> = xs.iter().zip(&reps).map(|(d, r)| d * *r as usize).collect();
            one(take(x, &shape, |i| {
                Ok(Some(i.iter().zip(&xs).zip(&st).map(|((v, d), s)| (v % d) * s).sum()))
            })?)
        }
        Op::DepthToSpace { blocksize: b, crd } => {
            let (b, crd) = (*b, *crd);
            let c = xs[1] / (b * b);
            let shape = vec![xs[0], c, xs[2] * b, xs[3] * b];
            one(take(x, &shape, |o| {
                let (bh, bw) = (o[2] % b, o[3] % b);
                let ch = if crd { o[1] * b * b + bh * b + bw } else { (bh * b + bw) * c + o[1] };
                Ok(Some(o[0] * st[0] + ch * st[1] + (o[2] / b) * st[2] + (o[3] / b) * st[3]))
            })?)
        }
        Op::SpaceToDepth { blocksize: b, crd } => {
            let (b, crd) = (*b, *crd);
            let shape = vec![xs[0], xs[1] * b * b, xs[2] / b, xs[3] / b];
            one(take(x, &shape, |o| {
                // DCR: channel = block·C + c; CRD: channel = c·b² + block.
                let (blk, c) = if crd {
                    (o[1] % (b * b), o[1] / (b * b))
                } else {
                    (o[1] / xs[1], o[1] % xs[1])
                };
                let (bh, bw) = (blk / b, blk % b);
                Ok(Some(
                    o[0] * st[0] + c * st[1] + (o[2] * b + bh) * st[2] + (o[3] * b + bw) * st[3],
                ))
            })?)
        }
        Op::CumSum { exclusive, reverse, product } => {
            let k = axis(
                *int_values(arg(args, 1)?).first().ok_or("CumSum's axis is empty")?,
                xs.len(),
            )?;
            let (n, s) = (xs[k], st[k]);
            // Lanes along axis k, summed in order (reversed with `reverse`), in the type.
            let lanes: Vec<usize> = indices(&xs)
                .filter(|i| i[k] == 0)
                .map(|i| i.iter().zip(&st).map(|(a, b)| a * b).sum())
                .collect();
            let order: Vec<usize> =
                if *reverse { (0..n).rev().collect() } else { (0..n).collect() };
            match x {
                Array::F32(a) => {
                    let flat: Vec<f32> = a.iter().copied().collect();
                    let mut out = vec![0.0f32; flat.len()];
                    let f = |acc: f32, v: f32| if *product { acc * v } else { acc + v };
                    for l in &lanes {
                        let mut acc = if *product { 1.0f32 } else { 0.0 };
                        for &i in &order {
                            let v = flat[l + i * s];
                            if *exclusive {
                                out[l + i * s] = acc;
                                acc = f(acc, v);
                            } else {
                                acc = f(acc, v);
                                out[l + i * s] = acc;
                            }
                        }
                    }
                    one(Array::F32(
                        ArrayD::from_shape_vec(IxDyn(&xs), out).map_err(|e| e.to_string())?,
                    ))
                }
                Array::Int(a, dt) => {
                    let flat: Vec<i64> = a.iter().copied().collect();
                    let mut out = vec![0i64; flat.len()];
                    let f = |acc: i64, v: i64| {
                        dt.wrap(if *product { acc.wrapping_mul(v) } else { acc.wrapping_add(v) })
                    };
                    for l in &lanes {
                        let mut acc = i64::from(*product);
                        for &i in &order {
                            let v = flat[l + i * s];
                            if *exclusive {
                                out[l + i * s] = acc;
                                acc = f(acc, v);
                            } else {
                                acc = f(acc, v);
                                out[l + i * s] = acc;
                            }
                        }
                    }
                    one(Array::Int(
                        ArrayD::from_shape_vec(IxDyn(&xs), out).map_err(|e| e.to_string())?,
                        *dt,
                    ))
                }
            }
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    let red = |r: &ScatterReduction| match r {
        ScatterReduction::None => "none",
        ScatterReduction::Add => "add",
        ScatterReduction::Mul => "mul",
        ScatterReduction::Max => "max",
        ScatterReduction::Min => "min",
    };
    match op {
        Op::GatherElements { axis } | Op::OneHot { axis } => a.push(format!("axis: int = {axis}")),
        Op::GatherND { batch_dims } => a.push(format!("batch_dims: int = {batch_dims}")),
        Op::ScatterElements { axis, reduction } => {
            a.push(format!("axis: int = {axis}"));
            a.push(format!("reduction: string = \"{}\"", red(reduction)));
        }
        Op::ScatterND { reduction } => {
            a.push(format!("reduction: string = \"{}\"", red(reduction)))
        }
        Op::Trilu { upper } => a.push(format!("upper: int = {}", i64::from(*upper))),
        Op::DepthToSpace { blocksize, crd } => {
            a.push(format!("blocksize: int = {blocksize}"));
            a.push(format!("mode: string = \"{}\"", if *crd { "CRD" } else { "DCR" }));
        }
        Op::SpaceToDepth { blocksize, crd } => {
            a.push(format!("blocksize: int = {blocksize}"));
            a.push(format!("mode: string = \"{}\"", if *crd { "CRD" } else { "DCR" }));
        }
        Op::CenterCropPad { axes: Some(ax) } => {
            let v: Vec<String> = ax.iter().map(ToString::to_string).collect();
            a.push(format!("axes: ints = [{}]", v.join(", ")));
        }
        Op::CumSum { exclusive, reverse, .. } => {
            a.push(format!("exclusive: int = {}", i64::from(*exclusive)));
            a.push(format!("reverse: int = {}", i64::from(*reverse)));
        }
        _ => {}
    }
}

/// Device lowering: none (data-dependent or per-element addressing), so these run on the host.
pub(crate) fn lower(_b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    Err(LowerError::at(&n.name, format!("{} is not lowered to the device", n.op_type)))
}

/// Cost inputs: bounded by traffic.
pub(crate) fn work(_op: &Op, _inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    Work::Traffic
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`.
pub(crate) fn arity(op_type: &str, _opset: i64) -> Arity {
    match op_type {
        "GatherElements" | "GatherND" | "Tile" | "CumSum" | "CumProd" | "CenterCropPad" => {
            counts(2, 2, 1, 1)
        }
        "ScatterElements" | "ScatterND" | "OneHot" => counts(3, 3, 1, 1),
        "Trilu" => counts(1, 2, 1, 1),
        _ => counts(1, 1, 1, 1),
    }
}

/// OneHot's depth, Tile's repeats and CumSum's axis determine the result's shape or layout.
pub(crate) fn shape_operand(op: &Op, i: usize) -> bool {
    matches!(op, Op::OneHot { .. } | Op::Tile | Op::CumSum { .. } | Op::CenterCropPad { .. })
        && i == 1
}

/// The zero of IR type `d`.
fn zero(b: &mut HostBuilder<'_>, d: DType) -> String {
    if d == DType::F32 { b.f32c(0.0) } else { b.int(d, 0) }
}

/// `old` combined with `new` by `r`, as [`combine_f`] and [`combine_i`].
fn host_combine(
    b: &mut HostBuilder<'_>,
    r: ScatterReduction,
    old: &str,
    new: &str,
    d: DType,
) -> String {
    if d == DType::F32 {
        let o = match r {
            ScatterReduction::None => return new.to_string(),
            ScatterReduction::Add => "arith.addf",
            ScatterReduction::Mul => "arith.mulf",
            ScatterReduction::Max => "arith.maximumf",
            ScatterReduction::Min => "arith.minimumf",
        };
        return b.op2(o, old, new, "f32");
    }
    let (p, q) = (b.widen(old, d), b.widen(new, d));
    let o = match r {
        ScatterReduction::None => return new.to_string(),
        ScatterReduction::Add => "arith.addi",
        ScatterReduction::Mul => "arith.muli",
        ScatterReduction::Max => "arith.maxsi",
        ScatterReduction::Min => "arith.minsi",
    };
    let v = b.op2(o, &p, &q, "i64");
    b.narrow(&v, d)
}

/// Host lowering: each op as loops over its output (or, for the scatters, a copy of the data
/// then a loop over the updates in order), indices checked as the reference checks them.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
    let xt = b.ty(x)?;
    let xs = xt.shape.clone();
    let out = n.outputs[0];
    let ot = b.ty(out)?;
    let input = |i: usize| n.inputs.get(i).copied().flatten();
    let ax = |a: i64, r: usize| axis(a, r).map_err(|e| LowerError::at(&n.name, e));
    match &n.op {
        Op::GatherElements { axis: a } => {
            let k = ax(*a, xs.len())?;
            let ind = input(1).ok_or_else(|| b.err(n, "the indices are missing"))?;
            let idt = b.ty(ind)?.dtype;
            b.map_out(out, &mut |b, idx| {
                let j = b.load(ind, idx)?;
                let j = b.checked_index(&j, idt, xs[k]);
                let mut src = idx.to_vec();
                src[k] = j;
                if xs[k] == 0 {
                    return Ok(zero(b, xt.dtype));
                }
                b.load(x, &src)
            })
        }
        Op::GatherND { batch_dims } => {
            let ind = input(1).ok_or_else(|| b.err(n, "the indices are missing"))?;
            let it = b.ty(ind)?;
            let q = it.shape.len();
            let kk = it.shape[q - 1];
            let bd = *batch_dims;
            b.map_out(out, &mut |b, o| {
                let mut src: Vec<String> = o[..bd].to_vec();
                for t in 0..kk {
                    let mut ii = o[..q - 1].to_vec();
                    ii.push(b.idx(t));
                    let j = b.load(ind, &ii)?;
                    src.push(b.checked_index(&j, it.dtype, xs[bd + t]));
                }
                src.extend_from_slice(&o[q - 1..]);
                b.load(x, &src)
            })
        }
        Op::ScatterElements { axis: a, reduction } => {
            let k = ax(*a, xs.len())?;
            let (ind, upd) = (
                input(1).ok_or_else(|| b.err(n, "the indices are missing"))?,
                input(2).ok_or_else(|| b.err(n, "the updates are missing"))?,
            );
            let it = b.ty(ind)?;
            let r = *reduction;
            b.map_out(out, &mut |b, idx| b.load(x, idx))?;
            b.nest(&it.shape, &mut |b, i| {
                let j = b.load(ind, i)?;
                let j = b.checked_index(&j, it.dtype, xs[k]);
                let mut dst = i.to_vec();
                dst[k] = j;
                let u = b.load(upd, i)?;
                let old = b.load(out, &dst)?;
                let v = host_combine(b, r, &old, &u, ot.dtype);
                b.store(&v, out, &dst)
            })
        }
        Op::ScatterND { reduction } => {
            let (ind, upd) = (
                input(1).ok_or_else(|| b.err(n, "the indices are missing"))?,
                input(2).ok_or_else(|| b.err(n, "the updates are missing"))?,
            );
            let it = b.ty(ind)?;
            let q = it.shape.len();
            let kk = it.shape[q - 1];
            let r = *reduction;
            b.map_out(out, &mut |b, idx| b.load(x, idx))?;
            let ut = b.ty(upd)?;
            b.nest(&ut.shape, &mut |b, u_idx| {
                let mut dst = Vec::with_capacity(xs.len());
                for (t, dim) in xs.iter().enumerate().take(kk) {
                    let mut ii = u_idx[..q - 1].to_vec();
                    ii.push(b.idx(t));
                    let j = b.load(ind, &ii)?;
                    dst.push(b.checked_index(&j, it.dtype, *dim));
                }
                dst.extend_from_slice(&u_idx[q - 1..]);
                let u = b.load(upd, u_idx)?;
                let old = b.load(out, &dst)?;
                let v = host_combine(b, r, &old, &u, ot.dtype);
                b.store(&v, out, &dst)
            })
        }
        Op::OneHot { axis: a } => {
            let k = ax(*a, xs.len() + 1)?;
            let vals = input(2).ok_or_else(|| b.err(n, "the values are missing"))?;
            let vt = b.ty(vals)?;
            let depth = ot.shape[k] as i64;
            b.map_out(out, &mut |b, o| {
                let ii: Vec<String> =
                    o.iter().enumerate().filter(|(a, _)| *a != k).map(|(_, v)| v.clone()).collect();
                let j = b.load(x, &ii)?;
                let j = if xt.dtype == DType::F32 {
                    b.convert(&j, DType::F32, DType::I64)
                } else {
                    b.widen(&j, xt.dtype)
                };
                let z = b.i64c(0);
                let d = b.i64c(depth);
                let neg = b.cmpi("slt", &j, &z, "i64");
                let jd = b.op2("arith.addi", &j, &d, "i64");
                let j = b.select(&neg, &jd, &j, "i64");
                let pos = b.let_(&format!("arith.index_cast {} : index to i64", o[k]));
                let hit = b.cmpi("eq", &j, &pos, "i64");
                let flat = |b: &mut HostBuilder<'_>, e: usize| -> Result<String, LowerError> {
                    let f = b.idx(e);
                    let idx = b.delinearize(&f, &vt.shape);
                    b.load(vals, &idx)
                };
                let (off, on) = (flat(b, 0)?, flat(b, 1)?);
                Ok(b.select(&hit, &on, &off, crate::lower::host::scalar(vt.dtype)))
            })
        }
        Op::Trilu { upper } => {
            let r = xs.len();
            let upper = *upper;
            let kv = input(1);
            b.map_out(out, &mut |b, i| {
                let k = match kv {
                    Some(v) => {
                        let t = b.ty(v)?;
                        let zeros: Vec<String> = t.shape.iter().map(|_| b.idx(0)).collect();
                        b.load(v, &zeros)?
                    }
                    None => b.i64c(0),
                };
                let row = b.let_(&format!("arith.index_cast {} : index to i64", i[r - 2]));
                let col = b.let_(&format!("arith.index_cast {} : index to i64", i[r - 1]));
                let d = b.op2("arith.subi", &col, &row, "i64");
                let keep = b.cmpi(if upper { "sge" } else { "sle" }, &d, &k, "i64");
                let v = b.load(x, i)?;
                let z = zero(b, xt.dtype);
                Ok(b.select(&keep, &v, &z, crate::lower::host::scalar(xt.dtype)))
            })
        }
        Op::CenterCropPad { axes } => {
            let target = const_list(b.g, n, 1, "shape").map_err(|e| b.err(n, e))?;
            let (_, tables) =
                crop_pad_map(&xs, &target, axes.as_deref()).map_err(|e| b.err(n, e))?;
            let z = zero(b, xt.dtype);
            b.gather_axes(out, x, &tables, Some(&z))
        }
        Op::Tile => b.map_out(out, &mut |b, o| {
            let mut src = Vec::with_capacity(o.len());
            for (v, d) in o.iter().zip(&xs) {
                let dn = b.idx(*d);
                src.push(b.iop("arith.remui", v, &dn));
            }
            b.load(x, &src)
        }),
        Op::DepthToSpace { blocksize, crd } => {
            let (bs, crd) = (*blocksize, *crd);
            let c = xs[1] / (bs * bs);
            b.map_out(out, &mut |b, o| {
                let bi = b.idx(bs);
                let bh = b.iop("arith.remui", &o[2], &bi);
                let bw = b.iop("arith.remui", &o[3], &bi);
                let h = b.iop("arith.divui", &o[2], &bi);
                let w = b.iop("arith.divui", &o[3], &bi);
                let blk = b.iop("arith.muli", &bh, &bi);
                let blk = b.iop("arith.addi", &blk, &bw);
                let ch = if crd {
                    let bb = b.idx(bs * bs);
                    let t = b.iop("arith.muli", &o[1], &bb);
                    b.iop("arith.addi", &t, &blk)
                } else {
                    let ci = b.idx(c);
                    let t = b.iop("arith.muli", &blk, &ci);
                    b.iop("arith.addi", &t, &o[1])
                };
                b.load(x, &[o[0].clone(), ch, h, w])
            })
        }
        Op::SpaceToDepth { blocksize, crd } => {
            let (bs, crd) = (*blocksize, *crd);
            let c = xs[1];
            b.map_out(out, &mut |b, o| {
                let ci = b.idx(c);
                let bi = b.idx(bs);
                let bb = b.idx(bs * bs);
                let (blk, ch) = if crd {
                    (b.iop("arith.remui", &o[1], &bb), b.iop("arith.divui", &o[1], &bb))
                } else {
                    (b.iop("arith.divui", &o[1], &ci), b.iop("arith.remui", &o[1], &ci))
                };
                let bh = b.iop("arith.divui", &blk, &bi);
                let bw = b.iop("arith.remui", &blk, &bi);
                let h = b.iop("arith.muli", &o[2], &bi);
                let h = b.iop("arith.addi", &h, &bh);
                let w = b.iop("arith.muli", &o[3], &bi);
                let w = b.iop("arith.addi", &w, &bw);
                b.load(x, &[o[0].clone(), ch, h, w])
            })
        }
        Op::CumSum { exclusive, reverse, product } => {
            let av = input(1).ok_or_else(|| b.err(n, "the axis is missing"))?;
            let a =
                b.g.value(av)
                    .constant
                    .as_ref()
                    .and_then(|c| c.i64s().first().copied())
                    .ok_or_else(|| b.err(n, "CumSum's axis must be constant"))?;
            let k = ax(a, xs.len())?;
            let (ex, rev, dt, prod) = (*exclusive, *reverse, xt.dtype, *product);
            let len = xs[k];
            let mut lane = xs.clone();
            lane[k] = 1;
            b.out(out)?;
            b.nest(&lane, &mut |b, l| {
                let init = if prod {
                    if dt == DType::F32 { b.f32c(1.0) } else { b.int(dt, 1) }
                } else {
                    zero(b, dt)
                };
                let ty = crate::lower::host::scalar(dt);
                b.fold_n(len, &[init], &[ty], &mut |b, t, acc| {
                    let i = if rev {
                        let last = b.idx(len - 1);
                        b.iop("arith.subi", &last, t)
                    } else {
                        t.to_string()
                    };
                    let mut at = l.to_vec();
                    at[k] = i;
                    let v = b.load(x, &at)?;
                    let r = if prod { ScatterReduction::Mul } else { ScatterReduction::Add };
                    let next = host_combine(b, r, &acc[0], &v, dt);
                    b.store(if ex { &acc[0] } else { &next }, out, &at)?;
                    Ok(vec![next])
                })?;
                Ok(())
            })
        }
        other => Err(LowerError::msg(super::misrouted(other, FAMILY))),
    }
}
