//! Shape and type inference: every supported op's output types from its input types (and, for
//! ops whose output shape depends on a tensor such as Reshape's shape, from constant inputs).
//! Unsupported nodes are skipped; their outputs stay untyped, and so does everything computed
//! from them.

use std::fmt;

use crate::interp::{Geometry, axis, broadcast_shape, out_size, pads, reshape_target};
use crate::ir::{DType, Graph, Node, Op, TensorType, Window};

/// A node whose output types cannot be inferred.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InferError {
    /// The node.
    pub node: String,
    /// Why.
    pub message: String,
}

impl fmt::Display for InferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node `{}`: {}", self.node, self.message)
    }
}

impl std::error::Error for InferError {}

type R<T> = Result<T, String>;

/// Fills in the type of every value computed by a supported node.
pub fn infer(g: &mut Graph) -> Result<(), InferError> {
    for i in 0..g.nodes.len() {
        infer_node(g, i)?;
    }
    Ok(())
}

/// Fills in the output types of node `i` (inputs must already be typed; a node fed by an
/// untyped value, downstream of an unsupported one, stays untyped).
pub fn infer_node(g: &mut Graph, i: usize) -> Result<(), InferError> {
    let node = &g.nodes[i];
    if matches!(node.op, Op::Unsupported { .. } | Op::Constant) {
        return Ok(());
    }
    let ins: Vec<Option<&TensorType>> =
        node.inputs.iter().map(|v| v.and_then(|id| g.value(id).ty.as_ref())).collect();
    if node.inputs.iter().zip(&ins).any(|(v, t)| v.is_some() && t.is_none()) {
        return Ok(());
    }
    let types = node_types(g, node, &ins)
        .map_err(|message| InferError { node: node.name.clone(), message })?;
    // Every size downstream (tiling, memory plans, buffers) is computed from these shapes:
    // a tensor whose byte size does not fit in 64 bits is refused here, by node.
    for t in &types {
        if t.shape.iter().try_fold(t.dtype.size() as u64, |a, d| a.checked_mul(*d as u64)).is_none()
        {
            return Err(InferError {
                node: node.name.clone(),
                message: format!("the result {t} has more bytes than 64 bits can count"),
            });
        }
    }
    let outputs = g.nodes[i].outputs.clone();
    for (id, ty) in outputs.iter().zip(types) {
        g.value_mut(*id).ty = Some(ty);
    }
    Ok(())
}

fn input<'a>(ins: &[Option<&'a TensorType>], i: usize) -> R<&'a TensorType> {
    ins.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
}

/// A constant integer input, as a vector.
fn const_ints(g: &Graph, node: &Node, i: usize) -> R<Option<Vec<i64>>> {
    let Some(Some(id)) = node.inputs.get(i) else { return Ok(None) };
    match &g.value(*id).constant {
        Some(t) if t.dtype != DType::F32 => Ok(Some(t.i64s())),
        Some(_) => Err(format!("input {i} must be an integer tensor")),
        None => Err(format!("input {i} must be a constant (fold constants first)")),
    }
}

fn same(t: &TensorType) -> R<Vec<TensorType>> {
    Ok(vec![t.clone()])
}

fn window_out(input: &[usize], kernel: &[usize], w: &Window, trim_ceil: bool) -> R<Vec<usize>> {
    let Geometry { begin, end, strides, dilations } = pads(w, input, kernel)?;
    (0..input.len())
        .map(|i| {
            let mut o = out_size(
                input[i],
                kernel[i],
                strides[i],
                dilations[i],
                begin[i],
                end[i],
                w.ceil_mode,
            )?;
            if trim_ceil && w.ceil_mode && (o - 1) * strides[i] >= input[i] + begin[i] {
                o -= 1;
            }
            Ok(o)
        })
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
    let n = if d == 0 {
        0
    } else if step > 0 {
        (e - s + step - 1).div_euclid(step)
    } else {
        (s - e + (-step) - 1).div_euclid(-step)
    };
    Ok(n.max(0) as usize)
}

fn matmul_shape(a: &TensorType, b: &TensorType) -> R<Vec<usize>> {
    let (sa, sb) = (&a.shape, &b.shape);
    if sa.is_empty() || sb.is_empty() {
        return Err("MatMul of a scalar".into());
    }
    let a2: Vec<usize> = if sa.len() == 1 { vec![1, sa[0]] } else { sa.clone() };
    let b2: Vec<usize> = if sb.len() == 1 { vec![sb[0], 1] } else { sb.clone() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(format!("MatMul of {sa:?} and {sb:?}"));
    }
    let mut shape = broadcast_shape(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if sa.len() > 1 {
        shape.push(m);
    }
    if sb.len() > 1 {
        shape.push(n);
    }
    Ok(shape)
}

fn conv_shape(t: &TensorType, w: &TensorType, window: &Window, group: usize) -> R<Vec<usize>> {
    if t.shape.len() < 3 || w.shape.len() != t.shape.len() {
        return Err(format!("Conv of {:?} with weights {:?}", t.shape, w.shape));
    }
    if t.shape[1] != w.shape[1] * group || !w.shape[0].is_multiple_of(group) {
        return Err(format!("Conv of {:?} with weights {:?} in {group} groups", t.shape, w.shape));
    }
    // `kernel_shape`, when given, must be the weights' spatial shape (ONNX Conv).
    if !window.kernel.is_empty() && window.kernel != w.shape[2..] {
        return Err(format!(
            "kernel_shape {:?} does not match the weights' spatial shape {:?}",
            window.kernel,
            &w.shape[2..]
        ));
    }
    if group == 0 {
        return Err("Conv with group 0".into());
    }
    let kernel = w.shape[2..].to_vec();
    let mut shape = vec![t.shape[0], w.shape[0]];
    shape.extend(window_out(&t.shape[2..], &kernel, window, false)?);
    Ok(shape)
}

fn node_types(g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = || input(ins, 0);
    match &node.op {
        Op::Unsupported { .. } | Op::Constant => Ok(vec![]),
        Op::Identity
        | Op::Unary(_)
        | Op::LeakyRelu { .. }
        | Op::HardSigmoid { .. }
        | Op::Gelu { .. }
        | Op::Clip { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::BatchNorm { .. } => same(x()?),
        Op::Binary(_) => {
            let (a, b) = (x()?, input(ins, 1)?);
            Ok(vec![TensorType { dtype: a.dtype, shape: broadcast_shape(&a.shape, &b.shape)? }])
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
        Op::Gemm { trans_a, trans_b, .. } => {
            let (a, b) = (x()?, input(ins, 1)?);
            if a.shape.len() != 2 || b.shape.len() != 2 {
                return Err("Gemm needs matrices".into());
            }
            let (m, k) = if *trans_a { (a.shape[1], a.shape[0]) } else { (a.shape[0], a.shape[1]) };
            let (k2, n) =
                if *trans_b { (b.shape[1], b.shape[0]) } else { (b.shape[0], b.shape[1]) };
            if k != k2 {
                return Err(format!("Gemm of {:?} and {:?}", a.shape, b.shape));
            }
            Ok(vec![TensorType { dtype: a.dtype, shape: vec![m, n] }])
        }
        Op::MatMul => {
            Ok(vec![TensorType { dtype: x()?.dtype, shape: matmul_shape(x()?, input(ins, 1)?)? }])
        }
        Op::MatMulInteger => {
            Ok(vec![TensorType { dtype: DType::I32, shape: matmul_shape(x()?, input(ins, 1)?)? }])
        }
        Op::QLinearMatMul => {
            let dtype = ins.get(7).copied().flatten().map_or(DType::U8, |z| z.dtype);
            Ok(vec![TensorType { dtype, shape: matmul_shape(x()?, input(ins, 3)?)? }])
        }
        Op::ConvInteger { window, group } => Ok(vec![TensorType {
            dtype: DType::I32,
            shape: conv_shape(x()?, input(ins, 1)?, window, *group)?,
        }]),
        Op::QLinearConv { window, group } => {
            let dtype = ins.get(7).copied().flatten().map_or(DType::U8, |z| z.dtype);
            Ok(vec![TensorType { dtype, shape: conv_shape(x()?, input(ins, 3)?, window, *group)? }])
        }
        Op::ConvTranspose { window, group, output_padding, output_shape } => {
            let (t, w) = (x()?, input(ins, 1)?);
            let shape = crate::interp::conv_transpose_shape(
                &t.shape,
                &w.shape,
                window,
                *group,
                output_padding,
                output_shape,
            )?
            .0;
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
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
            let sizes = crate::interp::split_sizes(d, given.as_deref(), n, g.opset)?;
            Ok(sizes
                .into_iter()
                .map(|size| {
                    let mut shape = t.shape.clone();
                    shape[k] = size;
                    TensorType { dtype: t.dtype, shape }
                })
                .collect())
        }
        Op::Conv { window, group } => Ok(vec![TensorType {
            dtype: x()?.dtype,
            shape: conv_shape(x()?, input(ins, 1)?, window, *group)?,
        }]),
        Op::Pool { window, .. } => {
            let t = x()?;
            if t.shape.len() < 3 {
                return Err("pooling needs N, C and spatial axes".into());
            }
            let mut shape = t.shape[..2].to_vec();
            shape.extend(window_out(&t.shape[2..], &window.kernel, window, true)?);
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        Op::GlobalPool { .. } => {
            let t = x()?;
            let shape =
                t.shape.iter().enumerate().map(|(i, d)| if i < 2 { *d } else { 1 }).collect();
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        Op::Reshape { allowzero } => {
            let t = x()?;
            let spec = const_ints(g, node, 1)?.ok_or("Reshape needs a shape")?;
            Ok(vec![TensorType {
                dtype: t.dtype,
                shape: reshape_target(&t.shape, spec.into_iter(), *allowzero)?,
            }])
        }
        Op::Flatten { axis: ax } => {
            let t = x()?;
            let k =
                if *ax == t.shape.len() as i64 { t.shape.len() } else { axis(*ax, t.shape.len())? };
            Ok(vec![TensorType {
                dtype: t.dtype,
                shape: vec![t.shape[..k].iter().product(), t.shape[k..].iter().product()],
            }])
        }
        Op::Transpose { perm } => {
            let t = x()?;
            let rank = t.shape.len();
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
        Op::Squeeze { axes } => {
            let t = x()?;
            let axes = match axes {
                Some(a) => Some(a.clone()),
                None => const_ints(g, node, 1)?,
            };
            let rank = t.shape.len();
            let drop: Vec<usize> = match axes {
                Some(a) => a.iter().map(|v| axis(*v, rank)).collect::<R<_>>()?,
                None => (0..rank).filter(|i| t.shape[*i] == 1).collect(),
            };
            for (i, k) in drop.iter().enumerate() {
                if t.shape[*k] != 1 {
                    return Err(format!("Squeeze of axis {k}, which has size {}", t.shape[*k]));
                }
                if drop[..i].contains(k) {
                    return Err(format!("Squeeze axis {k} given twice"));
                }
            }
            Ok(vec![TensorType {
                dtype: t.dtype,
                shape: t
                    .shape
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !drop.contains(i))
                    .map(|(_, d)| *d)
                    .collect(),
            }])
        }
        Op::Unsqueeze { axes } => {
            let t = x()?;
            let axes = match axes {
                Some(a) => a.clone(),
                None => const_ints(g, node, 1)?.ok_or("Unsqueeze needs axes")?,
            };
            let rank = t.shape.len() + axes.len();
            let ins_at: Vec<usize> = axes.iter().map(|v| axis(*v, rank)).collect::<R<_>>()?;
            if let Some(k) =
                ins_at.iter().enumerate().find_map(|(i, k)| ins_at[..i].contains(k).then_some(k))
            {
                return Err(format!("Unsqueeze axis {k} given twice"));
            }
            let mut dims = t.shape.iter();
            let shape = (0..rank)
                .map(|i| if ins_at.contains(&i) { 1 } else { dims.next().copied().unwrap_or(1) })
                .collect();
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
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
            let shape = t
                .shape
                .iter()
                .enumerate()
                .filter_map(|(i, d)| if ks.contains(&i) { keepdims.then_some(1) } else { Some(*d) })
                .collect();
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        Op::Cast { to } => Ok(vec![TensorType { dtype: *to, shape: x()?.shape.clone() }]),
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
            let (shape, _) =
                crate::interp::resize_shape(&t.shape, scales.as_deref(), sizes.as_deref())?;
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        Op::QuantizeLinear { .. } => {
            let dtype = ins.get(2).copied().flatten().map_or(DType::U8, |z| z.dtype);
            Ok(vec![TensorType { dtype, shape: x()?.shape.clone() }])
        }
        Op::DequantizeLinear { .. } => {
            Ok(vec![TensorType { dtype: DType::F32, shape: x()?.shape.clone() }])
        }
        Op::Shape { start, end } => {
            let rank = x()?.shape.len() as i64;
            let c = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank);
            let n = (c(end.unwrap_or(rank)) - c(*start)).max(0) as usize;
            Ok(vec![TensorType { dtype: DType::I64, shape: vec![n] }])
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
            let mut shape = t.shape.clone();
            for (((k, s), e), st) in axes.iter().zip(&starts).zip(&ends).zip(&steps) {
                shape[*k] = slice_len(t.shape[*k] as i64, *s, *e, *st)?;
            }
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
    }
}
