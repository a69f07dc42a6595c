//! Data movement: Transpose, Concat, Split, Slice, Gather, Pad, Resize.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer and device lowering.

use ndarray::{ArrayD, Axis, IxDyn};

use super::Work;
use crate::interp::axis as norm_axis;
use crate::interp::*;
use crate::ir::*;
use crate::lower::LowerError;
use crate::lower::host::HostBuilder;
use crate::lower::schedule::*;
use crate::lower::view::ViewOp;
use crate::onnx::Attrs;
use crate::ops::{Arity, MANY, counts};
use crate::shape::*;
use crate::text::*;

type R<T> = Result<T, String>;

/// The family's name in the registry.
pub(crate) const FAMILY: &str = "movement";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] =
    &["Transpose", "Concat", "Gather", "Pad", "Split", "Resize", "Slice"];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, opset: i64) -> Result<Op, String> {
    match op_type {
        "Transpose" => Ok(Op::Transpose { perm: a.ints("perm").unwrap_or_default() }),
        "Concat" => Ok(Op::Concat { axis: a.i64("axis", 0) }),
        "Gather" => Ok(Op::Gather { axis: a.i64("axis", 0) }),
        "Pad" => {
            let mode = match a.string("mode").as_deref() {
                None | Some("constant") => PadMode::Constant,
                Some("reflect") => PadMode::Reflect,
                Some("edge") => PadMode::Edge,
                Some("wrap") => PadMode::Wrap,
                Some(other) => return Err(a.invalid(format!("Pad mode `{other}` is not defined"))),
            };
            let old = opset < 11;
            Ok(Op::Pad {
                mode,
                pads: if old { a.ints("pads") } else { None },
                value: if old { a.f32("value", 0.0) } else { 0.0 },
            })
        }
        // Without sizes (and with `num_outputs`, opset 18) the outputs' count gives the parts.
        "Split" => {
            if let Some(k) = a.get("num_outputs").map(|_| a.i64("num_outputs", 0)) {
                let outputs = a.node.output.len();
                if usize::try_from(k).ok() != Some(outputs) {
                    return Err(a.invalid(format!(
                        "Split num_outputs = {k} but the node has {outputs} outputs"
                    )));
                }
            }
            Ok(Op::Split {
                axis: a.i64("axis", 0),
                split: if opset < 13 { a.ints("split") } else { None },
            })
        }
        "Resize" => {
            let mode = match a.string("mode").as_deref() {
                None | Some("nearest") => ResizeMode::Nearest,
                Some("linear") => ResizeMode::Linear,
                Some("cubic") => ResizeMode::Cubic {
                    a: a.f32("cubic_coeff_a", -0.75),
                    exclude_outside: a.i64("exclude_outside", 0) != 0,
                },
                Some(other) => {
                    return Err(a.invalid(format!("Resize mode `{other}` is not defined")));
                }
            };
            let coords = match a.string("coordinate_transformation_mode").as_deref() {
                None | Some("half_pixel") => ResizeCoords::HalfPixel,
                Some("half_pixel_symmetric") => ResizeCoords::HalfPixelSymmetric,
                Some("pytorch_half_pixel") => ResizeCoords::PytorchHalfPixel,
                Some("align_corners") => ResizeCoords::AlignCorners,
                Some("asymmetric") => ResizeCoords::Asymmetric,
                Some(other) => {
                    return Err(format!(
                        "Resize coordinate_transformation_mode `{other}` is not supported"
                    ));
                }
            };
            let nearest = match a.string("nearest_mode").as_deref() {
                None | Some("round_prefer_floor") => NearestMode::RoundPreferFloor,
                Some("round_prefer_ceil") => NearestMode::RoundPreferCeil,
                Some("floor") => NearestMode::Floor,
                Some("ceil") => NearestMode::Ceil,
                Some(other) => {
                    return Err(a.invalid(format!("Resize nearest_mode `{other}` is not defined")));
                }
            };
            if a.i64("antialias", 0) != 0 {
                return Err("Resize with antialias is not supported".into());
            }
            let axes = a.ints("axes");
            // `extrapolation_value` belongs to tf_crop_and_resize, refused above;
            // `exclude_outside` reweights only taps outside the input, which linear taps
            // (clamped into it, as onnx's edge padding gives) never are, and nearest has one.
            let _ =
                (a.get("cubic_coeff_a"), a.get("extrapolation_value"), a.get("exclude_outside"));
            let policy = match a.string("keep_aspect_ratio_policy").as_deref() {
                None | Some("stretch") => AspectPolicy::Stretch,
                Some("not_larger") => AspectPolicy::NotLarger,
                Some("not_smaller") => AspectPolicy::NotSmaller,
                Some(other) => {
                    return Err(a.invalid(format!(
                        "Resize keep_aspect_ratio_policy `{other}` is not defined"
                    )));
                }
            };
            if opset < 11 {
                return Err("Resize before opset 11 is not supported".into());
            }
            Ok(Op::Resize { mode, coords, nearest, axes, policy })
        }
        "Slice" if opset < 10 => Ok(Op::Slice {
            attrs: Some(SliceAttrs {
                starts: a.ints("starts").unwrap_or_default(),
                ends: a.ints("ends").unwrap_or_default(),
                axes: a.ints("axes"),
            }),
        }),
        "Slice" => Ok(Op::Slice { attrs: None }),
        other => Err(super::misrouted_name(other, FAMILY)),
    }
}

/// Output types from input types `ins` (and constant shape operands of `g`).
pub(crate) fn infer(g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = || input(ins, 0);
    match &node.op {
        Op::Pad { pads, .. } => {
            let t = x()?;
            let rank = t.shape.len();
            let pads = match pads {
                Some(p) => p.clone(),
                None => const_ints(g, node, 1)?.ok_or("Pad needs pads")?,
            };
            let axes: Vec<usize> = match const_ints(g, node, 3)? {
                Some(a) => a.iter().map(|v| axis(*v, rank)).collect::<R<_>>()?,
                None => (0..rank).collect(),
            };
            if pads.len() != 2 * axes.len() {
                return Err(format!("{} pads for {} axes", pads.len(), axes.len()));
            }
            let mut shape = t.shape.clone();
            for (i, &k) in axes.iter().enumerate() {
                let d = shape[k] as i64 + pads[i] + pads[i + axes.len()];
                shape[k] = usize::try_from(d).map_err(|_| "padding makes a dimension negative")?;
            }
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        Op::Split { axis: ax, split } => {
            let t = x()?;
            let k = axis(*ax, t.shape.len())?;
            let d = t.shape[k];
            let n = node.outputs.len().max(1);
            let given = match split {
                Some(s) => Some(s.clone()),
                None => const_ints(g, node, 1)?,
            };
            let sizes = split_sizes(d, given.as_deref(), n, g.opset)?;
            Ok(sizes
                .into_iter()
                .map(|size| {
                    let mut shape = t.shape.clone();
                    shape[k] = size;
                    TensorType { dtype: t.dtype, shape }
                })
                .collect())
        }
        Op::Transpose { perm } => {
            let t = x()?;
            let rank = t.shape.len();
            // ONNX's perm lists axes 0..rank, never negative ones.
            if let Some(p) = perm.iter().find(|p| **p < 0) {
                return Err(format!("Transpose perm has the negative axis {p}"));
            }
            let perm: Vec<usize> = if perm.is_empty() {
                (0..rank).rev().collect()
            } else {
                perm.iter().map(|p| axis(*p, rank)).collect::<R<_>>()?
            };
            let mut seen = vec![false; rank];
            if perm.len() != rank || perm.iter().any(|p| std::mem::replace(&mut seen[*p], true)) {
                return Err(format!("Transpose perm {perm:?} is not a permutation of {rank} axes"));
            }
            Ok(vec![TensorType {
                dtype: t.dtype,
                shape: perm.iter().map(|p| t.shape[*p]).collect(),
            }])
        }
        Op::Concat { axis: ax } => {
            let parts: Vec<&TensorType> = ins.iter().flatten().copied().collect();
            let first = parts.first().ok_or("Concat of nothing")?;
            let k = axis(*ax, first.shape.len())?;
            // Every part has the first's type and dimensions except along the axis.
            for p in &parts {
                let same_rank = p.shape.len() == first.shape.len();
                if p.dtype != first.dtype
                    || !same_rank
                    || p.shape
                        .iter()
                        .zip(&first.shape)
                        .enumerate()
                        .any(|(i, (a, b))| i != k && a != b)
                {
                    return Err(format!(
                        "Concat along axis {k} of {first} and {p}, which differ elsewhere"
                    ));
                }
            }
            let mut shape = first.shape.clone();
            shape[k] = parts.iter().map(|p| p.shape.get(k).copied().unwrap_or(0)).sum();
            Ok(vec![TensorType { dtype: first.dtype, shape }])
        }
        Op::Gather { axis: ax } => {
            let (t, idx) = (x()?, input(ins, 1)?);
            let k = axis(*ax, t.shape.len())?;
            let mut shape = t.shape[..k].to_vec();
            shape.extend(&idx.shape);
            shape.extend(&t.shape[k + 1..]);
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        Op::Resize { .. } => {
            let t = x()?;
            let scales: Option<Vec<f64>> = match node.inputs.get(2) {
                Some(Some(id)) => match &g.value(*id).constant {
                    Some(c) if c.dtype == DType::F32 => {
                        Some(c.f32s().into_iter().map(f64::from).collect())
                    }
                    Some(_) => return Err("Resize scales must be float".into()),
                    None => return Err("Resize scales must be a constant".into()),
                },
                _ => None,
            }
            .filter(|v: &Vec<f64>| !v.is_empty());
            let sizes = const_ints(g, node, 3)?.filter(|v| !v.is_empty());
            // ONNX: "Only one of 'scales' and 'sizes' can be specified."
            if scales.is_some() && sizes.is_some() {
                return Err("Resize has both scales and sizes; only one may be given".into());
            }
            let (shape, _) = resize_shape(&t.shape, scales.as_deref(), sizes.as_deref(), &node.op)?;
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        Op::Slice { attrs } => {
            let t = x()?;
            let (starts, ends, axes, steps) = match attrs {
                Some(a) => (a.starts.clone(), a.ends.clone(), a.axes.clone(), None),
                None => (
                    const_ints(g, node, 1)?.ok_or("Slice needs starts")?,
                    const_ints(g, node, 2)?.ok_or("Slice needs ends")?,
                    const_ints(g, node, 3)?,
                    const_ints(g, node, 4)?,
                ),
            };
            let rank = t.shape.len();
            let axes: Vec<usize> = match axes {
                Some(a) => a.iter().map(|v| axis(*v, rank)).collect::<R<_>>()?,
                None => (0..starts.len()).map(|i| axis(i as i64, rank)).collect::<R<_>>()?,
            };
            let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err("Slice starts, ends, axes and steps differ in length".into());
            }
            // ONNX: an axis is sliced at most once (also as -1 and rank - 1).
            for (i, k) in axes.iter().enumerate() {
                if axes[..i].contains(k) {
                    return Err(format!("Slice axis {k} is given twice"));
                }
            }
            let mut shape = t.shape.clone();
            for (((k, s), e), st) in axes.iter().zip(&starts).zip(&ends).zip(&steps) {
                shape[*k] = slice_len(t.shape[*k] as i64, *s, *e, *st)?;
            }
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// Reference semantics: the outputs for inputs `args` (the oracle the device is checked
/// against).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], opset: i64) -> R<Vec<Array>> {
    let one = |a: Array| Ok(vec![a]);
    match &node.op {
        Op::Transpose { perm } => {
            let x = arg(args, 0)?;
            let rank = x.shape().len();
            let perm: Vec<usize> = if perm.is_empty() {
                (0..rank).rev().collect()
            } else {
                perm.iter().map(|p| axis(*p, rank)).collect::<R<_>>()?
            };
            let mut seen = perm.clone();
            seen.sort_unstable();
            if seen != (0..rank).collect::<Vec<_>>() {
                return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
            }
            one(match x {
                Array::F32(a) => Array::F32(
                    a.clone().permuted_axes(IxDyn(&perm)).as_standard_layout().to_owned(),
                ),
                Array::Int(a, dt) => Array::Int(
                    a.clone().permuted_axes(IxDyn(&perm)).as_standard_layout().to_owned(),
                    *dt,
                ),
            })
        }
        Op::Concat { axis: ax } => {
            let parts: Vec<&Array> = args.iter().flatten().copied().collect();
            let first = parts.first().ok_or("Concat of nothing")?;
            let k = axis(*ax, first.shape().len())?;
            one(match first {
                Array::F32(_) => {
                    let views: Vec<_> =
                        parts.iter().map(|p| p.f32().map(|a| a.view())).collect::<R<_>>()?;
                    Array::F32(ndarray::concatenate(Axis(k), &views).map_err(|e| e.to_string())?)
                }
                Array::Int(_, dt) => {
                    let views: Vec<_> =
                        parts.iter().map(|p| p.ints().map(|a| a.view())).collect::<R<_>>()?;
                    Array::Int(
                        ndarray::concatenate(Axis(k), &views).map_err(|e| e.to_string())?,
                        *dt,
                    )
                }
            })
        }
        Op::Gather { axis: ax } => {
            let x = arg(args, 0)?;
            let idx = arg(args, 1)?.ints()?;
            let k = axis(*ax, x.shape().len())?;
            let dim = x.shape()[k] as i64;
            let picks: Vec<usize> = idx
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + dim } else { i };
                    if (0..dim).contains(&j) {
                        Ok(j as usize)
                    } else {
                        Err(format!("index {i} is out of range for axis of {dim}"))
                    }
                })
                .collect::<R<_>>()?;
            let mut shape: Vec<usize> = x.shape()[..k].to_vec();
            shape.extend(idx.shape());
            shape.extend(&x.shape()[k + 1..]);
            fn take<T: Clone>(
                a: &ArrayD<T>,
                k: usize,
                picks: &[usize],
                shape: &[usize],
            ) -> R<ArrayD<T>> {
                let sel = a.select(Axis(k), picks);
                sel.as_standard_layout()
                    .to_shape(IxDyn(shape))
                    .map(|v| v.to_owned())
                    .map_err(|e| e.to_string())
            }
            one(match x {
                Array::F32(a) => Array::F32(take(a, k, &picks, &shape)?),
                Array::Int(a, dt) => Array::Int(take(a, k, &picks, &shape)?, *dt),
            })
        }
        Op::Pad { mode, pads, value } => {
            let x = arg(args, 0)?;
            let rank = x.shape().len();
            let pads: Vec<i64> = match pads {
                Some(p) => p.clone(),
                None => arg(args, 1)?.ints()?.iter().copied().collect(),
            };
            let axes: Vec<usize> = match opt(args, 3) {
                Some(a) => a.ints()?.iter().map(|v| axis(*v, rank)).collect::<R<_>>()?,
                None => (0..rank).collect(),
            };
            if pads.len() != 2 * axes.len() {
                return Err(format!("{} pads for {} axes", pads.len(), axes.len()));
            }
            let (mut begin, mut end) = (vec![0i64; rank], vec![0i64; rank]);
            for (i, &k) in axes.iter().enumerate() {
                begin[k] = pads[i];
                end[k] = pads[i + axes.len()];
            }
            let (shape, map) = pad_map(x.shape(), &begin, &end, *mode)?;
            one(match x {
                Array::F32(a) => {
                    let cv = match opt(args, 2) {
                        Some(c) => c.f32()?.iter().next().copied().unwrap_or(0.0),
                        None => *value,
                    };
                    let flat: Vec<f32> = a.iter().copied().collect();
                    Array::F32(
                        ArrayD::from_shape_vec(
                            IxDyn(&shape),
                            map.iter().map(|m| m.map_or(cv, |i| flat[i])).collect(),
                        )
                        .map_err(|e| e.to_string())?,
                    )
                }
                Array::Int(a, dt) => {
                    let cv = match opt(args, 2) {
                        Some(c) => c.ints()?.iter().next().copied().unwrap_or(0),
                        None => *value as i64,
                    };
                    let flat: Vec<i64> = a.iter().copied().collect();
                    Array::Int(
                        ArrayD::from_shape_vec(
                            IxDyn(&shape),
                            map.iter().map(|m| m.map_or(cv, |i| flat[i])).collect(),
                        )
                        .map_err(|e| e.to_string())?,
                        *dt,
                    )
                }
            })
        }
        Op::Split { axis: ax, split } => {
            let x = arg(args, 0)?;
            let k = axis(*ax, x.shape().len())?;
            let d = x.shape()[k];
            let given: Option<Vec<i64>> = match split {
                Some(s) => Some(s.clone()),
                None => opt(args, 1)
                    .map(|s| s.ints().map(|v| v.iter().copied().collect()))
                    .transpose()?,
            };
            let sizes = split_sizes(d, given.as_deref(), node.outputs.len(), opset)?;
            if sizes.len() != node.outputs.len() {
                return Err(format!(
                    "split sizes {sizes:?} do not divide axis {k} of {:?} into {} outputs",
                    x.shape(),
                    node.outputs.len()
                ));
            }
            let mut at = 0usize;
            let mut outs = Vec::new();
            for size in sizes {
                let r = (at, at + size);
                at += size;
                outs.push(match x {
                    Array::F32(a) => {
                        Array::F32(a.slice_axis(Axis(k), ndarray::Slice::from(r.0..r.1)).to_owned())
                    }
                    Array::Int(a, dt) => Array::Int(
                        a.slice_axis(Axis(k), ndarray::Slice::from(r.0..r.1)).to_owned(),
                        *dt,
                    ),
                });
            }
            Ok(outs)
        }
        Op::Resize { mode, coords, nearest, .. } => {
            let x = arg(args, 0)?;
            let scales = opt(args, 2)
                .map(|a| a.f32().map(|v| v.iter().map(|s| f64::from(*s)).collect::<Vec<_>>()))
                .transpose()?
                .filter(|v| !v.is_empty());
            let sizes = opt(args, 3)
                .map(|a| a.ints().map(|v| v.iter().copied().collect::<Vec<_>>()))
                .transpose()?
                .filter(|v| !v.is_empty());
            let (out_shape, scales) =
                resize_shape(x.shape(), scales.as_deref(), sizes.as_deref(), &node.op)?;
            let xf = match x {
                Array::F32(a) => a.mapv(f64::from),
                Array::Int(a, _) => a.mapv(|v| v as f64),
            };
            let y = resize(&xf, &out_shape, &scales, *mode, *coords, *nearest);
            one(match x {
                Array::F32(_) => Array::F32(y.mapv(|v| v as f32)),
                Array::Int(_, dt) => Array::Int(y.mapv(|v| v.round_ties_even() as i64), *dt),
            })
        }
        Op::Slice { attrs } => {
            let x = arg(args, 0)?;
            let vec_of = |i: usize| -> R<Option<Vec<i64>>> {
                opt(args, i).map(|a| a.ints().map(|v| v.iter().copied().collect())).transpose()
            };
            let (starts, ends, axes, steps) = match attrs {
                Some(a) => (a.starts.clone(), a.ends.clone(), a.axes.clone(), None),
                None => (
                    vec_of(1)?.ok_or("Slice needs starts")?,
                    vec_of(2)?.ok_or("Slice needs ends")?,
                    vec_of(3)?,
                    vec_of(4)?,
                ),
            };
            one(slice(x, &starts, &ends, axes, steps)?)
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    match op {
        Op::Concat { axis } | Op::Gather { axis } => a.push(format!("axis: int = {axis}")),
        Op::Transpose { perm } if !perm.is_empty() => {
            a.push(format!("perm: ints = {}", ints(perm)))
        }
        Op::Slice { attrs: Some(s) } => {
            a.push(format!("starts: ints = {}", ints(&s.starts)));
            a.push(format!("ends: ints = {}", ints(&s.ends)));
            if let Some(ax) = &s.axes {
                a.push(format!("axes: ints = {}", ints(ax)));
            }
        }
        Op::Transpose { .. } | Op::Slice { attrs: None } => {}
        Op::Pad { mode, pads, value } => {
            let mode = match mode {
                PadMode::Constant => "constant",
                PadMode::Reflect => "reflect",
                PadMode::Edge => "edge",
                PadMode::Wrap => "wrap",
            };
            a.push(format!("mode: string = \"{mode}\""));
            // The attribute forms of opsets before 11.
            if let Some(p) = pads {
                a.push(format!("pads: ints = {}", ints(p)));
            }
            if pads.is_some() || *value != 0.0 {
                a.push(format!("value: float = {}", flt(*value)));
            }
        }
        Op::Split { axis, split } => {
            a.push(format!("axis: int = {axis}"));
            if let Some(s) = split {
                a.push(format!("split: ints = {}", ints(s)));
            }
        }
        Op::Resize { mode, coords, nearest, axes, policy } => {
            let m = match mode {
                ResizeMode::Nearest => "nearest",
                ResizeMode::Linear => "linear",
                ResizeMode::Cubic { a: ca, exclude_outside } => {
                    a.push(format!("cubic_coeff_a: float = {}", flt(*ca)));
                    a.push(format!("exclude_outside: int = {}", i64::from(*exclude_outside)));
                    "cubic"
                }
            };
            a.push(format!("mode: string = \"{m}\""));
            if let Some(ax) = axes {
                a.push(format!("axes: ints = {}", ints(ax)));
            }
            match policy {
                AspectPolicy::Stretch => {}
                AspectPolicy::NotLarger => {
                    a.push("keep_aspect_ratio_policy: string = \"not_larger\"".into())
                }
                AspectPolicy::NotSmaller => {
                    a.push("keep_aspect_ratio_policy: string = \"not_smaller\"".into())
                }
            }
            let coords = match coords {
                ResizeCoords::HalfPixel => "half_pixel",
                ResizeCoords::HalfPixelSymmetric => "half_pixel_symmetric",
                ResizeCoords::PytorchHalfPixel => "pytorch_half_pixel",
                ResizeCoords::AlignCorners => "align_corners",
                ResizeCoords::Asymmetric => "asymmetric",
            };
            a.push(format!("coordinate_transformation_mode: string = \"{coords}\""));
            let nearest = match nearest {
                NearestMode::RoundPreferFloor => "round_prefer_floor",
                NearestMode::RoundPreferCeil => "round_prefer_ceil",
                NearestMode::Floor => "floor",
                NearestMode::Ceil => "ceil",
            };
            a.push(format!("nearest_mode: string = \"{nearest}\""));
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
        Op::Transpose { perm } => {
            let x = b.input(n, 0)?;
            let rank = b.shape(x).len();
            let perm: Vec<usize> = if perm.is_empty() {
                (0..rank).rev().collect()
            } else {
                perm.iter()
                    .map(|p| norm_axis(*p, rank))
                    .collect::<Result<_, _>>()
                    .map_err(|e| err(&e))?
            };
            let out = b.out(n, 0)?;
            copy_step(b, &name, out, vec![], x, vec![ViewOp::Permute(perm)]);
            Ok(())
        }
        Op::Concat { axis } => {
            let out = b.out(n, 0)?;
            let os = b.shape(out);
            let ax = norm_axis(*axis, os.len()).map_err(|e| err(&e))?;
            let ins: Vec<T> = n.inputs.iter().flatten().map(|v| b.t(*v)).collect();
            if os.len() == 4 && ins.iter().all(|t| b.s.tens[*t].nhwc) {
                b.s.tens[out].nhwc = true;
            }
            let mut start = 0;
            for (j, t) in ins.iter().enumerate() {
                let len = b.shape(*t)[ax];
                if len > 0 {
                    let v = vec![ViewOp::Slice { axis: ax, start, len, step: 1 }];
                    let nm = if j == 0 { name.clone() } else { format!("{name}#{j}") };
                    copy_step(b, &nm, out, v, *t, vec![]);
                }
                start += len;
            }
            if let Some(last) = b.s.steps.last_mut() {
                last.output = Some(b.s.tens[out].name.clone());
            }
            Ok(())
        }
        Op::Split { axis, split } => {
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            let ax = norm_axis(*axis, xs.len()).map_err(|e| err(&e))?;
            let given = match b.opt_input(n, 1) {
                Some(t) => Some(b.const_i64(t).ok_or_else(|| err("Split sizes must be constant"))?),
                None => split.clone(),
            };
            let sizes = split_sizes(xs[ax], given.as_deref(), n.outputs.len(), b.g.opset)
                .map_err(|e| err(&e))?;
            let mut start = 0;
            for (j, len) in sizes.into_iter().enumerate() {
                let out = b.out(n, j)?;
                copy_step(
                    b,
                    &format!("{name}#{j}"),
                    out,
                    vec![],
                    x,
                    vec![ViewOp::Slice { axis: ax, start, len, step: 1 }],
                );
                start += len;
            }
            Ok(())
        }
        Op::Slice { attrs } => {
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            let rank = xs.len();
            let get = |b: &Builder<'_>, i: usize| -> Result<Option<Vec<i64>>, LowerError> {
                match b.opt_input(n, i) {
                    Some(t) => b
                        .const_i64(t)
                        .map(Some)
                        .ok_or_else(|| err("Slice parameters must be constant")),
                    None => Ok(None),
                }
            };
            let (starts, ends, axes, steps) = match attrs {
                Some(a) => (a.starts.clone(), a.ends.clone(), a.axes.clone(), None),
                None => (
                    get(b, 1)?.unwrap_or_default(),
                    get(b, 2)?.unwrap_or_default(),
                    get(b, 3)?,
                    get(b, 4)?,
                ),
            };
            let axes: Vec<usize> = match axes {
                Some(a) => a
                    .iter()
                    .map(|v| norm_axis(*v, rank))
                    .collect::<Result<_, _>>()
                    .map_err(|e| err(&e))?,
                None => (0..starts.len()).collect(),
            };
            let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
            let out = b.out(n, 0)?;
            let os = b.shape(out);
            let mut view = vec![];
            for (((&k, &s0), &e0), &st) in axes.iter().zip(&starts).zip(&ends).zip(&steps) {
                if st <= 0 {
                    return Err(err("Slice with a negative step is not lowered"));
                }
                let (s, _) = slice_range(xs[k] as i64, s0, e0, st);
                view.push(ViewOp::Slice {
                    axis: k,
                    start: s as usize,
                    len: os[k],
                    step: st as usize,
                });
            }
            copy_step(b, &name, out, vec![], x, view);
            Ok(())
        }
        Op::Gather { axis } => {
            let x = b.input(n, 0)?;
            let ix = b.input(n, 1)?;
            let xs = b.shape(x);
            let ax = norm_axis(*axis, xs.len()).map_err(|e| err(&e))?;
            let idx = b.const_i64(ix).ok_or_else(|| err("Gather indices must be constant"))?;
            let out = b.out(n, 0)?;
            let norm = |v: i64| -> Result<usize, LowerError> {
                let d = xs[ax] as i64;
                let w = if v < 0 { v + d } else { v };
                if (0..d).contains(&w) {
                    Ok(w as usize)
                } else {
                    Err(err("Gather index out of range"))
                }
            };
            if b.shape(ix).is_empty() {
                let i = norm(idx[0])?;
                copy_step(b, &name, out, vec![], x, vec![ViewOp::Select { axis: ax, index: i }]);
            } else {
                let mut flat_shape = xs.clone();
                flat_shape[ax] = idx.len();
                for (j, v) in idx.iter().enumerate() {
                    let i = norm(*v)?;
                    let ov = vec![
                        ViewOp::Reshape(flat_shape.clone()),
                        ViewOp::Slice { axis: ax, start: j, len: 1, step: 1 },
                    ];
                    copy_step(
                        b,
                        &format!("{name}#{j}"),
                        out,
                        ov,
                        x,
                        vec![ViewOp::Slice { axis: ax, start: i, len: 1, step: 1 }],
                    );
                }
            }
            Ok(())
        }
        Op::Pad { mode, pads, value } => {
            if *mode != PadMode::Constant {
                return Err(err("only constant padding is lowered"));
            }
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            let pads = match b.opt_input(n, 1) {
                Some(t) => b.const_i64(t).ok_or_else(|| err("Pad pads must be constant"))?,
                None => pads.clone().unwrap_or_default(),
            };
            let value = match b.opt_input(n, 2) {
                Some(t) => b
                    .const_f32(t)
                    .and_then(|v| v.first().copied())
                    .ok_or_else(|| err("Pad value must be a float constant"))?,
                None => *value,
            };
            if b.opt_input(n, 3).is_some() {
                return Err(err("Pad with axes is not lowered"));
            }
            if pads.len() != 2 * xs.len() || pads.iter().any(|p| *p < 0) {
                return Err(err("Pad with negative or mismatched pads is not lowered"));
            }
            let out = b.out(n, 0)?;
            b.step(
                Kernel::Fill { out, value: value.to_bits() },
                &format!("{name}:fill"),
                None,
                vec![],
            );
            let view = xs
                .iter()
                .enumerate()
                .map(|(a, &len)| ViewOp::Slice { axis: a, start: pads[a] as usize, len, step: 1 })
                .collect();
            copy_step(b, &name, out, view, x, vec![]);
            Ok(())
        }
        Op::Resize { mode, coords, nearest, .. } => {
            if *mode != ResizeMode::Nearest {
                return Err(err("linear and cubic Resize are not lowered"));
            }
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            let out = b.out(n, 0)?;
            let os = b.shape(out);
            let scales = match b.opt_input(n, 2) {
                Some(t) => Some(
                    b.const_f32(t)
                        .ok_or_else(|| err("Resize scales must be constant"))?
                        .iter()
                        .map(|v| f64::from(*v))
                        .collect::<Vec<_>>(),
                ),
                None => None,
            }
            .filter(|v| !v.is_empty());
            let sizes = match b.opt_input(n, 3) {
                Some(t) => {
                    Some(b.const_i64(t).ok_or_else(|| err("Resize sizes must be constant"))?)
                }
                None => None,
            }
            .filter(|v| !v.is_empty());
            let (shape, scales) = resize_shape(&xs, scales.as_deref(), sizes.as_deref(), &n.op)
                .map_err(|e| err(&e))?;
            if shape != os || os.contains(&0) {
                return Err(err("Resize to an empty or mismatched shape is not lowered"));
            }
            // The op's own index map per axis; a shortcut is taken only where it is proven
            // equal to this map.
            let maps: Vec<Vec<usize>> = (0..xs.len())
                .map(|a| nearest_index_map(xs[a], os[a], scales[a], *coords, *nearest))
                .collect();
            let is_repeat = |a: usize| {
                os[a].is_multiple_of(xs[a])
                    && maps[a].iter().enumerate().all(|(o, &i)| i == o / (os[a] / xs[a]))
            };
            if (0..xs.len()).all(is_repeat) {
                // Every axis is a plain integer repeat: one copy through a stride-0 view.
                let mut view = vec![];
                let mut split_shape = vec![];
                for a in 0..xs.len() {
                    split_shape.push(xs[a]);
                    split_shape.push(os[a] / xs[a]);
                }
                for a in (0..xs.len()).rev() {
                    view.push(ViewOp::Repeat { axis: a, times: os[a] / xs[a] });
                }
                copy_step(b, &name, out, vec![ViewOp::Reshape(split_shape)], x, view);
                return Ok(());
            }
            // The general path: a gather per resized axis, one copy per run of output indices
            // reading the same input index (broadcast along the run).
            let axes: Vec<usize> = (0..xs.len())
                .filter(|&a| !(xs[a] == os[a] && maps[a].iter().enumerate().all(|(o, &i)| o == i)))
                .collect();
            let mut cur = x;
            let mut cur_shape = xs.clone();
            for (k, &a) in axes.iter().enumerate() {
                let mut dst_shape = cur_shape.clone();
                dst_shape[a] = os[a];
                let dst = if k + 1 == axes.len() {
                    out
                } else {
                    let dtype = b.s.tens[x].dtype;
                    b.temp(format!("{name}.axis{a}"), dst_shape.clone(), dtype, false, Store::Arena)
                };
                let mut o0 = 0;
                while o0 < os[a] {
                    let src = maps[a][o0];
                    let len = maps[a][o0..].iter().take_while(|i| **i == src).count();
                    let mut run_shape = dst_shape.clone();
                    run_shape[a] = len;
                    copy_step(
                        b,
                        &format!("{name}:axis{a}@{o0}"),
                        dst,
                        vec![ViewOp::Slice { axis: a, start: o0, len, step: 1 }],
                        cur,
                        vec![
                            ViewOp::Slice { axis: a, start: src, len: 1, step: 1 },
                            ViewOp::Broadcast(run_shape),
                        ],
                    );
                    o0 += len;
                }
                cur = dst;
                cur_shape = dst_shape;
            }
            Ok(())
        }
        other => Err(LowerError::at(&n.name, super::misrouted(other, FAMILY))),
    }
}

/// Cost inputs: copies, bounded by their DRAM traffic.
pub(crate) fn work(_op: &Op, _inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    Work::Traffic
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`
/// (the operator schemas' `min_input`, `max_input`, `min_output`, `max_output`).
pub(crate) fn arity(op_type: &str, opset: i64) -> Arity {
    match op_type {
        "Concat" => counts(1, MANY, 1, 1),
        "Gather" => counts(2, 2, 1, 1),
        "Pad" if opset < 11 => counts(1, 1, 1, 1),
        "Pad" if opset < 18 => counts(2, 3, 1, 1),
        "Pad" => counts(2, 4, 1, 1),
        "Split" if (2..13).contains(&opset) => counts(1, 1, 1, MANY),
        "Split" => counts(1, 2, 1, MANY),
        "Resize" if opset < 11 => counts(2, 2, 1, 1),
        "Resize" if opset < 13 => counts(3, 4, 1, 1),
        "Resize" => counts(1, 4, 1, 1),
        "Slice" if opset < 10 => counts(1, 1, 1, 1),
        "Slice" => counts(3, 5, 1, 1),
        _ => counts(1, 1, 1, 1),
    }
}

/// Split's sizes, Resize's roi, scales and sizes, Slice's starts/ends/axes/steps and Pad's
/// pads and axes determine the output shape.
pub(crate) fn shape_operand(op: &Op, i: usize) -> bool {
    match op {
        Op::Split { .. } => i == 1,
        Op::Resize { .. } => (1..=3).contains(&i),
        Op::Slice { .. } => (1..=4).contains(&i),
        Op::Pad { .. } => i == 1 || i == 3,
        _ => false,
    }
}

/// The part sizes of a `Split` of a `d`-long axis into `outputs` parts: the given sizes (all
/// non-negative, summing to `d`), or equal parts. From opset 18 (`num_outputs`) an axis that
/// does not divide evenly gets a smaller last part; before it, the parts must be equal.
pub(crate) fn split_sizes(
    d: usize,
    given: Option<&[i64]>,
    outputs: usize,
    opset: i64,
) -> R<Vec<usize>> {
    match given {
        Some(s) => {
            let sizes: Vec<usize> = s
                .iter()
                .map(|v| usize::try_from(*v).map_err(|_| format!("negative split size {v}")))
                .collect::<R<_>>()?;
            if sizes.iter().try_fold(0usize, |a, b| a.checked_add(*b)) != Some(d) {
                return Err(format!("split sizes {sizes:?} do not add up to {d}"));
            }
            Ok(sizes)
        }
        None => {
            let n = outputs.max(1);
            if opset < 18 && !d.is_multiple_of(n) {
                return Err(format!(
                    "Split of an axis of {d} into {n} equal parts (before opset 18 the parts \
                     must be equal)"
                ));
            }
            let part = d.div_ceil(n);
            Ok((0..n).map(|i| part.min(d.saturating_sub(i * part))).collect())
        }
    }
}

pub(crate) fn slice(
    x: &Array,
    starts: &[i64],
    ends: &[i64],
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
) -> R<Array> {
    let rank = x.shape().len();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|v| axis(*v, rank)).collect::<R<_>>()?,
        None => (0..starts.len()).map(|i| axis(i as i64, rank)).collect::<R<_>>()?,
    };
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("Slice starts, ends, axes and steps differ in length".into());
    }
    let mut info: Vec<ndarray::SliceInfoElem> =
        (0..rank).map(|_| ndarray::SliceInfoElem::from(..)).collect();
    for (((&k, &s0), &e0), &st) in axes.iter().zip(starts).zip(ends).zip(&steps) {
        if st == 0 {
            return Err("Slice step 0".into());
        }
        let d = x.shape()[k] as i64;
        let (s, e) = slice_range(d, s0, e0, st);
        // A step that takes at most one element is a step of ±1 (and keeps the arithmetic
        // below far from i64's ends).
        let taken = slice_len(d, s0, e0, st)?;
        if taken <= 1 {
            let first = if taken == 0 { 0 } else { s.clamp(0, (d - 1).max(0)) };
            info[k] = ndarray::SliceInfoElem::Slice {
                start: first as isize,
                end: Some((first + taken as i64) as isize),
                step: 1,
            };
            continue;
        }
        info[k] = if st > 0 {
            ndarray::SliceInfoElem::Slice {
                start: s as isize,
                end: Some(e.max(s) as isize),
                step: st as isize,
            }
        } else {
            // A negative step walks from `s` down to just above `e`: ndarray expresses it as the
            // range (e, s] traversed backwards.
            let (lo, hi) = (e + 1, s + 1);
            if hi <= lo || d == 0 {
                ndarray::SliceInfoElem::Slice { start: 0, end: Some(0), step: 1 }
            } else {
                let len = hi - lo;
                let steps_taken = (len - 1) / (-st);
                let first = s - steps_taken * (-st);
                ndarray::SliceInfoElem::Slice {
                    start: first as isize,
                    end: Some(hi as isize),
                    step: st as isize,
                }
            }
        };
    }
    let info = ndarray::SliceInfo::<_, IxDyn, IxDyn>::try_from(info).map_err(|e| e.to_string())?;
    Ok(match x {
        Array::F32(a) => Array::F32(a.slice(info.as_ref()).to_owned()),
        Array::Int(a, dt) => Array::Int(a.slice(info.as_ref()).to_owned(), *dt),
    })
}

/// Output shape and, per output element, the flat input index it copies (`None`: filled).
/// Negative pads crop first and the positive ones pad what is left (onnxruntime's order, which
/// is what `wrap` and `reflect` padding of a cropped axis read from).
pub(crate) fn pad_map(
    shape: &[usize],
    begin: &[i64],
    end: &[i64],
    mode: PadMode,
) -> R<(Vec<usize>, Vec<Option<usize>>)> {
    let out: Vec<usize> = shape
        .iter()
        .zip(begin.iter().zip(end))
        .map(|(d, (b, e))| {
            let n = (*d as i64).checked_add(*b).and_then(|n| n.checked_add(*e));
            n.and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("padding makes a dimension negative ({d} + {b} + {e})"))
        })
        .collect::<R<_>>()?;
    // Per axis: the kept range after cropping, and the positive begin pad.
    let kept: Vec<(i64, i64, i64)> = shape
        .iter()
        .zip(begin.iter().zip(end))
        .map(|(d, (b, e))| {
            let lo = (-b).max(0).min(*d as i64);
            let hi = (*d as i64 - (-e).max(0)).max(lo);
            (lo, hi - lo, (*b).max(0))
        })
        .collect();
    if mode != PadMode::Constant
        && kept.iter().any(|(_, len, _)| *len == 0)
        && out.iter().product::<usize>() > 0
    {
        return Err("cannot pad an empty axis by reflection, edge or wrap".into());
    }
    let strides: Vec<usize> = (0..shape.len()).map(|k| shape[k + 1..].iter().product()).collect();
    let mut map = Vec::with_capacity(out.iter().product());
    for idx in ndarray::indices(IxDyn(&out)) {
        let mut flat = 0usize;
        let mut inside = true;
        for (k, &(lo, d, b)) in kept.iter().enumerate() {
            let i = idx[k] as i64 - b;
            let src = if (0..d).contains(&i) {
                i
            } else {
                match mode {
                    PadMode::Constant => {
                        inside = false;
                        break;
                    }
                    PadMode::Edge => i.clamp(0, d - 1),
                    PadMode::Wrap => i.rem_euclid(d),
                    PadMode::Reflect if d == 1 => 0,
                    PadMode::Reflect => {
                        let period = 2 * (d - 1);
                        let r = i.rem_euclid(period);
                        if r >= d { period - r } else { r }
                    }
                }
            };
            flat += (lo + src) as usize * strides[k];
        }
        map.push(inside.then_some(flat));
    }
    Ok((out, map))
}

/// Output shape and per-axis scales of `Resize` op `op` (from `sizes`, or `floor(input ·
/// scale)`): `scales`/`sizes` name the op's `axes` (the others keep scale 1 and their length),
/// and with a `keep_aspect_ratio_policy` other than stretch every resized axis gets one
/// scale, the smallest (`not_larger`) or largest (`not_smaller`) of `size / input`, and the
/// length `round_half_up(scale · input)` (ONNX Resize-18).
pub(crate) fn resize_shape(
    input: &[usize],
    scales: Option<&[f64]>,
    sizes: Option<&[i64]>,
    op: &Op,
) -> R<(Vec<usize>, Vec<f64>)> {
    let (axes, policy) = match op {
        Op::Resize { axes, policy, .. } => (axes.as_deref(), *policy),
        _ => (None, AspectPolicy::Stretch),
    };
    let rank = input.len();
    let axes: Vec<usize> = match axes {
        Some(a) => {
            let v: Vec<usize> = a.iter().map(|x| axis(*x, rank)).collect::<R<_>>()?;
            if let Some(k) = (0..v.len()).find(|&i| v[..i].contains(&v[i])) {
                return Err(format!("Resize axis {} is given twice", v[k]));
            }
            v
        }
        None => (0..rank).collect(),
    };
    let n = axes.len();
    let full_scales: Option<Vec<f64>> = match scales {
        Some(sc) => {
            if sc.len() != n {
                return Err(format!("{} scales for {n} axes", sc.len()));
            }
            let mut f = vec![1.0; rank];
            for (i, k) in axes.iter().enumerate() {
                f[*k] = sc[i];
            }
            Some(f)
        }
        None => None,
    };
    let full_sizes: Option<Vec<i64>> = match sizes {
        Some(sz) => {
            if sz.len() != n {
                return Err(format!("{} sizes for {n} axes", sz.len()));
            }
            let mut f: Vec<i64> = input.iter().map(|d| *d as i64).collect();
            for (i, k) in axes.iter().enumerate() {
                f[*k] = sz[i];
            }
            if policy != AspectPolicy::Stretch {
                if let Some(v) = sz.iter().find(|v| **v < 0) {
                    return Err(format!("negative Resize size {v}"));
                }
                let ratios = axes.iter().map(|k| f[*k] as f64 / input[*k].max(1) as f64);
                let s = if policy == AspectPolicy::NotLarger {
                    ratios.fold(f64::INFINITY, f64::min)
                } else {
                    ratios.fold(0.0, f64::max)
                };
                let mut sc = vec![1.0; rank];
                let mut out = input.to_vec();
                for k in &axes {
                    sc[*k] = s;
                    // onnx's round_half_up: int(x + 0.5).
                    out[*k] = (s * input[*k] as f64 + 0.5) as usize;
                }
                return Ok((out, sc));
            }
            Some(f)
        }
        None => None,
    };
    let (scales, sizes) = (full_scales.as_deref(), full_sizes.as_deref());
    match (scales, sizes) {
        (_, Some(sz)) => {
            if sz.len() != input.len() {
                return Err(format!("{} sizes for rank {}", sz.len(), input.len()));
            }
            let out: Vec<usize> = sz
                .iter()
                .map(|v| usize::try_from(*v).map_err(|_| "negative Resize size"))
                .collect::<Result<_, _>>()?;
            let sc = out.iter().zip(input).map(|(o, i)| *o as f64 / (*i).max(1) as f64).collect();
            Ok((out, sc))
        }
        (Some(sc), None) => {
            if sc.len() != input.len() {
                return Err(format!("{} scales for rank {}", sc.len(), input.len()));
            }
            // ONNX: every scale is a positive number (NaN, zero and negative ones are invalid).
            if let Some(s) = sc.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                return Err(format!("Resize scale {s} is not a positive finite number"));
            }
            let out = input.iter().zip(sc).map(|(i, s)| (*i as f64 * s).floor() as usize).collect();
            Ok((out, sc.to_vec()))
        }
        (None, None) => Err("Resize needs scales or sizes".into()),
    }
}

pub(crate) fn resize(
    x: &ArrayD<f64>,
    out: &[usize],
    scales: &[f64],
    mode: ResizeMode,
    coords: ResizeCoords,
    nearest: NearestMode,
) -> ArrayD<f64> {
    let input = x.shape().to_vec();
    let rank = input.len();
    // Per axis and output coordinate: the source coordinate.
    let src: Vec<Vec<f64>> =
        (0..rank).map(|k| resize_coords(input[k], out[k], scales[k], coords)).collect();
    let strides: Vec<usize> = (0..rank).map(|k| input[k + 1..].iter().product()).collect();
    let flat: Vec<f64> = x.iter().copied().collect();
    let mut y = ArrayD::<f64>::zeros(IxDyn(out));
    let taps: Vec<Vec<Vec<(usize, f64)>>> = if mode == ResizeMode::Nearest {
        vec![]
    } else {
        (0..rank).map(|k| resize_taps(input[k], &src[k], mode)).collect()
    };
    for (idx, slot) in y.indexed_iter_mut() {
        if mode != ResizeMode::Nearest {
            // Every combination of one tap per axis, the first axis's taps varying fastest;
            // the weight is the product of the axes' weights, in axis order.
            let per: Vec<&Vec<(usize, f64)>> = (0..rank).map(|k| &taps[k][idx[k]]).collect();
            let combos: usize = per.iter().map(|t| t.len()).product();
            let mut acc = 0.0;
            for c in 0..combos {
                let (mut at, mut w, mut rest) = (0usize, 1.0, c);
                for (k, t) in per.iter().enumerate() {
                    let (i, wk) = t[rest % t.len()];
                    rest /= t.len();
                    at += i * strides[k];
                    w *= wk;
                }
                if w != 0.0 {
                    acc += w * flat[at];
                }
            }
            *slot = acc;
        } else {
            let mut at = 0usize;
            for k in 0..rank {
                at += nearest_index(src[k][idx[k]], input[k], nearest) * strides[k];
            }
            *slot = flat[at];
        }
    }
    y
}

/// The taps of linear or cubic `Resize` on one axis of `len` input elements, per output index
/// (source coordinates `src`): the input indices and weights with a nonzero weight, in index
/// order. Linear: the coordinate clamped into the axis, its floor and the next index (clamped)
/// weighted `1 − f` and `f`. Cubic (ONNX Resize-19): the four indices around the coordinate,
/// weighted by Keys' kernel with coefficient `a` at the fractional part `r`, indices outside
/// the axis reading its edge (onnx pads with the edge values) or, with `exclude_outside`,
/// weighted 0 and the rest renormalised.
pub(crate) fn resize_taps(len: usize, src: &[f64], mode: ResizeMode) -> Vec<Vec<(usize, f64)>> {
    let last = len.saturating_sub(1);
    src.iter()
        .map(|&c| {
            let mut taps: Vec<(i64, f64)> = match mode {
                ResizeMode::Cubic { a, .. } => {
                    let a = f64::from(a);
                    let i = c.floor();
                    let r = c - i;
                    let s = 1.0 - r;
                    let w = [
                        ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                        ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                        ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
                        ((a * (s + 1.0) - 5.0 * a) * (s + 1.0) + 8.0 * a) * (s + 1.0) - 4.0 * a,
                    ];
                    (0..4).map(|t| (i as i64 - 1 + t as i64, w[t as usize])).collect()
                }
                _ => {
                    let cc = c.clamp(0.0, last as f64);
                    let i0 = cc.floor();
                    let i1 = (i0 + 1.0).min(last as f64);
                    vec![(i0 as i64, 1.0 - (cc - i0)), (i1 as i64, cc - i0)]
                }
            };
            if let ResizeMode::Cubic { exclude_outside: true, .. } = mode {
                for t in &mut taps {
                    if t.0 < 0 || t.0 > last as i64 {
                        t.1 = 0.0;
                    }
                }
                let sum: f64 = taps.iter().map(|t| t.1).sum();
                for t in &mut taps {
                    t.1 /= sum;
                }
            }
            taps.into_iter()
                .filter(|t| t.1 != 0.0)
                .map(|(i, w)| (i.clamp(0, last as i64) as usize, w))
                .collect()
        })
        .collect()
}

/// The input index nearest-neighbour `Resize` reads for source coordinate `c` on an axis of
/// `len` elements: rounded by `mode`, then clamped into the axis (ONNX Resize-19, `nearest_mode`).
pub(crate) fn nearest_index(c: f64, len: usize, mode: NearestMode) -> usize {
    let r = match mode {
        NearestMode::RoundPreferFloor => {
            if c.fract() == 0.5 {
                c.floor()
            } else {
                c.round()
            }
        }
        NearestMode::RoundPreferCeil => {
            if c.fract() == 0.5 {
                c.ceil()
            } else {
                c.round()
            }
        }
        NearestMode::Floor => c.floor(),
        NearestMode::Ceil => c.ceil(),
    };
    (r.max(0.0) as usize).min(len.saturating_sub(1))
}

/// The source coordinate of each output index on one axis of a `Resize` from `len_in` to
/// `len_out` elements at `scale` (ONNX Resize-19, `coordinate_transformation_mode`).
pub(crate) fn resize_coords(
    len_in: usize,
    len_out: usize,
    scale: f64,
    coords: ResizeCoords,
) -> Vec<f64> {
    // `lo` is the integer output length, `lf` the real one (`input · scale`). Resize-19 defines
    // `scale = length_resized / length_original`, so with a given scale `length_resized` is
    // `lf`, which align_corners and pytorch_half_pixel use: the ONNX backend tests' data (from
    // onnx's reference) follow this reading, onnxruntime the integer length instead; they
    // differ only for non-integer output lengths, and we follow the conformance tests.
    let (li, lo, s) = (len_in as f64, len_out as f64, scale);
    let lf = li * s;
    (0..len_out)
        .map(|o| {
            let o = o as f64;
            match coords {
                ResizeCoords::HalfPixel => (o + 0.5) / s - 0.5,
                ResizeCoords::HalfPixelSymmetric => {
                    let adjustment = lo / (s * li);
                    let center = li / 2.0;
                    let offset = center * (1.0 - adjustment);
                    offset + (o + 0.5) / s - 0.5
                }
                ResizeCoords::PytorchHalfPixel => {
                    if lf > 1.0 {
                        (o + 0.5) / s - 0.5
                    } else {
                        0.0
                    }
                }
                ResizeCoords::AlignCorners => {
                    if lf == 1.0 {
                        0.0
                    } else {
                        o * (li - 1.0) / (lf - 1.0)
                    }
                }
                ResizeCoords::Asymmetric => o / s,
            }
        })
        .collect()
}

/// For each output index on one axis of a nearest-neighbour `Resize`, the input index it
/// copies: the op's definition, shared by the reference and the lowering (which may only take
/// a shortcut, such as a plain repeat, when it equals this map).
pub(crate) fn nearest_index_map(
    len_in: usize,
    len_out: usize,
    scale: f64,
    coords: ResizeCoords,
    mode: NearestMode,
) -> Vec<usize> {
    resize_coords(len_in, len_out, scale, coords)
        .into_iter()
        .map(|c| nearest_index(c, len_in, mode))
        .collect()
}

/// Number of elements ONNX `Slice` takes from a dimension of size `d`.
/// The effective `(start, end)` of a Slice on an axis of `d` elements (ONNX Slice-13): negative
/// values count from the end; then for a positive step both are clamped to `[0, d]`, for a
/// negative step `start` to `[0, d - 1]` and `end` to `[-1, d - 1]`. The one definition the
/// shape rule, the reference and the lowering use.
pub(crate) fn slice_range(d: i64, start: i64, end: i64, step: i64) -> (i64, i64) {
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    if step > 0 {
        (norm(start).clamp(0, d), norm(end).clamp(0, d))
    } else {
        // `max` after `min`, so an empty axis (d = 0) gives start 0 and nothing to take.
        (norm(start).min(d - 1).max(0), norm(end).clamp(-1, (d - 1).max(-1)))
    }
}

/// Elements a Slice takes from an axis of `d` elements.
pub(crate) fn slice_len(d: i64, start: i64, end: i64, step: i64) -> R<usize> {
    if step == 0 {
        return Err("Slice step 0".into());
    }
    let (s, e) = slice_range(d, start, end, step);
    // In i128: a step near i64's ends must not overflow (ceil((e − s) / step)).
    let (s, e, step) = (i128::from(s), i128::from(e), i128::from(step));
    let n = if d == 0 {
        0
    } else if step > 0 {
        (e - s + step - 1).div_euclid(step)
    } else {
        (s - e + (-step) - 1).div_euclid(-step)
    };
    Ok(n.clamp(0, i128::from(d)) as usize)
}

/// Host lowering: Transpose, Concat, Split and Gather by index arithmetic (Gather's indices
/// checked at run time); Slice, Pad and nearest Resize as per-axis selection tables computed
/// at compile time by the reference's own functions (`slice`, `pad_map`, `nearest_index`),
/// so a table holds one entry per output index of its axis; linear Resize as per-axis taps.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
    let xt = b.ty(x)?;
    let rank = xt.shape.len();
    let ax = |a: i64| norm_axis(a, rank).map_err(|e| LowerError::at(&n.name, e));
    match &n.op {
        Op::Transpose { perm } => {
            let perm: Vec<usize> = if perm.is_empty() {
                (0..rank).rev().collect()
            } else {
                perm.iter().map(|p| ax(*p)).collect::<Result<_, _>>()?
            };
            b.map_out(n.outputs[0], &mut |b, idx| {
                let mut src = vec![String::new(); rank];
                for (k, p) in perm.iter().enumerate() {
                    src[*p] = idx[k].clone();
                }
                b.load(x, &src)
            })
        }
        Op::Concat { axis } => {
            let k = ax(*axis)?;
            let out = n.outputs[0];
            b.out(out)?;
            let mut at = 0usize;
            for v in n.inputs.iter().flatten() {
                let t = b.ty(*v)?;
                let off = b.idx(at);
                b.nest(&t.shape, &mut |b, idx| {
                    let e = b.load(*v, idx)?;
                    let mut o = idx.to_vec();
                    o[k] = b.iop("arith.addi", &idx[k], &off);
                    b.store(&e, out, &o)
                })?;
                at += t.shape[k];
            }
            Ok(())
        }
        Op::Split { axis, .. } => {
            let k = ax(*axis)?;
            let mut at = 0usize;
            for out in &n.outputs {
                let t = b.ty(*out)?;
                let off = b.idx(at);
                b.map_out(*out, &mut |b, idx| {
                    let mut s = idx.to_vec();
                    s[k] = b.iop("arith.addi", &idx[k], &off);
                    b.load(x, &s)
                })?;
                at += t.shape[k];
            }
            Ok(())
        }
        Op::Gather { axis } => {
            let k = ax(*axis)?;
            let ind = n.inputs[1].ok_or_else(|| b.err(n, "the indices are missing"))?;
            let it = b.ty(ind)?;
            let dim = xt.shape[k];
            b.map_out(n.outputs[0], &mut |b, idx| {
                let r = it.shape.len();
                let j = b.load(ind, &idx[k..k + r])?;
                let ji = b.checked_index(&j, it.dtype, dim);
                let mut src: Vec<String> = idx[..k].to_vec();
                src.push(ji);
                src.extend_from_slice(&idx[k + r..]);
                if dim == 0 {
                    // Nothing can be read; every index is out of range and reported.
                    return Ok(match xt.dtype {
                        DType::F32 => b.f32c(0.0),
                        d => b.int(d, 0),
                    });
                }
                b.load(x, &src)
            })
        }
        Op::Slice { attrs } => {
            // Per axis, the input index each output index reads: the reference's own slice
            // of that axis alone (an axis listed again overrides, as in the reference).
            let ints = |i: usize| const_vec(b.g, n, i);
            let (starts, ends, axes, steps) = match attrs {
                Some(a) => (a.starts.clone(), a.ends.clone(), a.axes.clone(), None),
                None => (
                    ints(1).ok_or_else(|| b.err(n, "Slice starts must be constant"))?,
                    ints(2).ok_or_else(|| b.err(n, "Slice ends must be constant"))?,
                    ints(3),
                    ints(4),
                ),
            };
            let mut tables: Vec<Vec<i64>> =
                xt.shape.iter().map(|d| (0..*d as i64).collect()).collect();
            for (i, &s0) in starts.iter().enumerate() {
                let k = ax(axes.as_ref().and_then(|a| a.get(i).copied()).unwrap_or(i as i64))?;
                let step = steps.as_ref().and_then(|s| s.get(i).copied()).unwrap_or(1);
                let iota = Array::Int(
                    ArrayD::from_shape_vec(
                        IxDyn(&[xt.shape[k]]),
                        (0..xt.shape[k] as i64).collect(),
                    )
                    .map_err(|e| b.err(n, e.to_string()))?,
                    DType::I64,
                );
                let e0 = *ends.get(i).ok_or_else(|| b.err(n, "Slice ends"))?;
                let r = slice(&iota, &[s0], &[e0], Some(vec![0]), Some(vec![step]))
                    .map_err(|e| b.err(n, e))?;
                tables[k] = r.ints().map_err(|e| b.err(n, e))?.iter().copied().collect();
            }
            b.gather_axes(n.outputs[0], x, &tables, None)
        }
        Op::Pad { mode, pads, value } => {
            let fill = match n.inputs.get(2).copied().flatten() {
                Some(c) => {
                    let t = b.ty(c)?;
                    if t.shape.iter().product::<usize>() == 0 {
                        None
                    } else {
                        let zero: Vec<String> = t.shape.iter().map(|_| b.idx(0)).collect();
                        Some(b.load(c, &zero)?)
                    }
                }
                None => None,
            };
            let fill = match (fill, xt.dtype) {
                (Some(f), _) => f,
                (None, DType::F32) => b.f32c(*value),
                (None, d) => b.int(d, *value as i64),
            };
            let pads = match pads {
                Some(p) => p.clone(),
                None => const_vec(b.g, n, 1).ok_or_else(|| b.err(n, "pads must be constant"))?,
            };
            let axes: Vec<usize> = match const_vec(b.g, n, 3) {
                Some(a) => a.iter().map(|v| ax(*v)).collect::<Result<_, _>>()?,
                None => (0..rank).collect(),
            };
            if pads.len() != 2 * axes.len() {
                return Err(b.err(n, format!("{} pads for {} axes", pads.len(), axes.len())));
            }
            // Per axis, the reference's padding map of that axis alone (crop, then pad).
            let mut tables: Vec<Vec<i64>> =
                xt.shape.iter().map(|d| (0..*d as i64).collect()).collect();
            for (i, &k) in axes.iter().enumerate() {
                let (_, map) = pad_map(&[xt.shape[k]], &[pads[i]], &[pads[i + axes.len()]], *mode)
                    .map_err(|e| b.err(n, e))?;
                tables[k] = map.iter().map(|m| m.map_or(-1, |v| v as i64)).collect();
            }
            b.gather_axes(n.outputs[0], x, &tables, Some(&fill))
        }
        Op::Resize { mode: ResizeMode::Nearest, coords, nearest, .. } => {
            // Per axis, the nearest input index of each output index (the reference's rule).
            let (oshape, scales) = resize_params(b.g, n, &xt.shape).map_err(|e| b.err(n, e))?;
            let tables: Vec<Vec<i64>> = (0..rank)
                .map(|k| {
                    resize_coords(xt.shape[k], oshape[k], scales[k], *coords)
                        .into_iter()
                        .map(|c| nearest_index(c, xt.shape[k], *nearest) as i64)
                        .collect()
                })
                .collect();
            b.gather_axes(n.outputs[0], x, &tables, None)
        }
        Op::Resize { mode, coords, .. } => {
            // Per axis and output coordinate, the taps (input index, weight) are compile-time
            // tables (the reference's own `resize_taps`), padded with weight-0 taps to the
            // axis's most; each output element sums every combination of one tap per axis,
            // in the reference's order and in f64, skipping zero weights as it does.
            let (oshape, scales) = resize_params(b.g, n, &xt.shape).map_err(|e| b.err(n, e))?;
            let mut tables = Vec::with_capacity(rank);
            for k in 0..rank {
                let src = resize_coords(xt.shape[k], oshape[k], scales[k], *coords);
                let taps = resize_taps(xt.shape[k], &src, *mode);
                let width = taps.iter().map(Vec::len).max().unwrap_or(1).max(1);
                let (mut is, mut ws) = (vec![], vec![]);
                for t in &taps {
                    for j in 0..width {
                        let (i, w) = t.get(j).copied().unwrap_or((0, 0.0));
                        is.push(i as i64);
                        ws.push(w.to_bits() as i64);
                    }
                }
                tables.push((b.table(&is), b.table(&ws), oshape[k] * width, width));
            }
            let combos: usize = tables.iter().map(|t| t.3).product();
            if combos > 4096 {
                return Err(b.err(n, format!("Resize with {combos} taps per element")));
            }
            let dt = xt.dtype;
            b.map_out(n.outputs[0], &mut |b, idx| {
                // Per axis, its taps for this output index.
                let mut taps: Vec<Vec<(String, String)>> = Vec::with_capacity(rank);
                for (k, (ti, tw, len, width)) in tables.iter().enumerate() {
                    let ty = format!("memref<{len}xi64>");
                    let wc = b.idx(*width);
                    let base = b.let_(&format!("arith.muli {}, {wc} : index", idx[k]));
                    let mut axis_taps = Vec::with_capacity(*width);
                    for j in 0..*width {
                        let jc = b.idx(j);
                        let at = b.let_(&format!("arith.addi {base}, {jc} : index"));
                        let i = b.let_(&format!("memref.load {ti}[{at}] : {ty}"));
                        let wb = b.let_(&format!("memref.load {tw}[{at}] : {ty}"));
                        let w = b.let_(&format!("arith.bitcast {wb} : i64 to f64"));
                        let i = b.let_(&format!("arith.index_cast {i} : i64 to index"));
                        axis_taps.push((i, w));
                    }
                    taps.push(axis_taps);
                }
                let one = b.f64c(1.0);
                let zero = b.f64c(0.0);
                let mut acc = zero.clone();
                for c in 0..combos {
                    let mut w = one.clone();
                    let mut at = Vec::with_capacity(rank);
                    let mut rest = c;
                    for t in &taps {
                        let (i, wk) = &t[rest % t.len()];
                        rest /= t.len();
                        at.push(i.clone());
                        w = b.op2("arith.mulf", &w, wk, "f64");
                    }
                    let v = b.load(x, &at)?;
                    let v = match dt {
                        DType::F32 => b.f64_of(&v),
                        d => {
                            let i = b.widen(&v, d);
                            b.let_(&format!("arith.sitofp {i} : i64 to f64"))
                        }
                    };
                    let p = b.op2("arith.mulf", &w, &v, "f64");
                    let s = b.op2("arith.addf", &acc, &p, "f64");
                    let nz = b.cmpf("une", &w, &zero, "f64");
                    acc = b.select(&nz, &s, &acc, "f64");
                }
                Ok(match dt {
                    DType::F32 => b.f32_of(&acc),
                    d => {
                        let r = b.op1("math.roundeven", &acc, "f64");
                        let i = b.let_(&format!("arith.fptosi {r} : f64 to i64"));
                        b.narrow(&i, d)
                    }
                })
            })
        }
        other => Err(LowerError::msg(super::misrouted(other, FAMILY))),
    }
}

/// The constant integer contents of input `i` of `n`, if present and constant.
fn const_vec(g: &Graph, n: &Node, i: usize) -> Option<Vec<i64>> {
    let v = n.inputs.get(i).copied().flatten()?;
    let c = g.value(v).constant.as_ref()?;
    Array::from_tensor(c).ints().ok().map(|a| a.iter().copied().collect())
}

/// A Resize's output shape and per-axis scales from its constant `scales` or `sizes` input.
fn resize_params(g: &Graph, n: &Node, input: &[usize]) -> R<(Vec<usize>, Vec<f64>)> {
    let cst = |i: usize| -> Option<Array> {
        let v = n.inputs.get(i).copied().flatten()?;
        g.value(v).constant.as_ref().map(Array::from_tensor)
    };
    let scales = cst(2)
        .and_then(|a| a.f32().ok().map(|v| v.iter().map(|s| f64::from(*s)).collect::<Vec<_>>()))
        .filter(|v| !v.is_empty());
    let sizes = cst(3)
        .and_then(|a| a.ints().ok().map(|v| v.iter().copied().collect::<Vec<_>>()))
        .filter(|v| !v.is_empty());
    resize_shape(input, scales.as_deref(), sizes.as_deref(), &n.op)
}
