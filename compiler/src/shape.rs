//! Shape and type inference: every supported op's output types from its input types (and, for
//! ops whose output shape depends on a tensor such as Reshape's shape, from constant inputs).
//! Unsupported nodes are skipped; their outputs stay untyped, and so does everything computed
//! from them.

use crate::Clipped;
use std::fmt;

use crate::interp::{Geometry, out_size, pads};
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
        write!(f, "node `{}`: {}", Clipped(&self.node), Clipped(&self.message))
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
        None => Err(format!(
            "input {i} is computed at run time; a static compiler needs it as a constant (an \
             initializer, or computed from constants)"
        )),
    }
}

pub(crate) fn same(t: &TensorType) -> R<Vec<TensorType>> {
    Ok(vec![t.clone()])
}

pub(crate) fn node_types(
    g: &Graph,
    node: &Node,
    ins: &[Option<&TensorType>],
) -> R<Vec<TensorType>> {
    (crate::ops::def(&node.op).infer)(g, node, ins)
}

pub(crate) fn window_out(
    input: &[usize],
    kernel: &[usize],
    w: &Window,
    trim_ceil: bool,
) -> R<Vec<usize>> {
    let Geometry { begin, end, strides, dilations } = pads(w, input, kernel)?;
    // onnxruntime's rule (the spec is silent): padding is smaller than the window, so no
    // window lies wholly in padding.
    if trim_ceil
        && let Some(i) = (0..input.len()).find(|&i| begin[i] >= kernel[i] || end[i] >= kernel[i])
    {
        return Err(format!(
            "pads {} and {} of spatial axis {i} are not smaller than the kernel's {}",
            begin[i], end[i], kernel[i]
        ));
    }
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
