//! Shape and type inference: every supported op's output types from its input types (and, for
//! ops whose output shape depends on a tensor such as Reshape's shape, from constant inputs).
//! Unsupported nodes are skipped; their outputs stay untyped, and so does everything computed
//! from them.

use std::fmt;

use crate::interp::{Geometry, broadcast_shape, out_size, pads};
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

pub(crate) fn input<'a>(ins: &[Option<&'a TensorType>], i: usize) -> R<&'a TensorType> {
    ins.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
}

/// A constant integer input, as a vector.
pub(crate) fn const_ints(g: &Graph, node: &Node, i: usize) -> R<Option<Vec<i64>>> {
    let Some(Some(id)) = node.inputs.get(i) else { return Ok(None) };
    match &g.value(*id).constant {
        Some(t) if t.dtype != DType::F32 => Ok(Some(t.i64s())),
        Some(_) => Err(format!("input {i} must be an integer tensor")),
        None => Err(format!("input {i} must be a constant (fold constants first)")),
    }
}

pub(crate) fn same(t: &TensorType) -> R<Vec<TensorType>> {
    Ok(vec![t.clone()])
}

pub(crate) fn window_out(
    input: &[usize],
    kernel: &[usize],
    w: &Window,
    trim_ceil: bool,
) -> R<Vec<usize>> {
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

pub(crate) fn matmul_shape(a: &TensorType, b: &TensorType) -> R<Vec<usize>> {
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

pub(crate) fn conv_shape(
    t: &TensorType,
    w: &TensorType,
    window: &Window,
    group: usize,
) -> R<Vec<usize>> {
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

pub(crate) fn node_types(
    g: &Graph,
    node: &Node,
    ins: &[Option<&TensorType>],
) -> R<Vec<TensorType>> {
    (crate::ops::def(&node.op).infer)(g, node, ins)
}
