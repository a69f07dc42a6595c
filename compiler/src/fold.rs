//! Constant folding: every supported node whose inputs are all constants (and every `Shape` of
//! a statically shaped value) is evaluated with the reference interpreter and replaced by its
//! result; `Constant` nodes disappear into their values; nodes whose results nobody uses are
//! removed. Shape arithmetic of older exporters (Shape, Gather, Cast, Concat, Unsqueeze, Slice
//! on constants) vanishes this way. `DequantizeLinear` is left alone (see `fold_node`). Nodes
//! computing with float16 or bfloat16 get their casts to and from `f32` here (`crate::widen`).

use std::collections::HashSet;

use crate::interp::{Array, EvalError, eval};
use crate::ir::{Graph, Op, TensorType, ValueId};
use crate::widen::{narrow_outputs, touches_storage_float, widen_inputs};

/// What folding did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FoldStats {
    /// Nodes evaluated at compile time.
    pub folded: usize,
    /// Nodes removed because nothing used their results.
    pub dead: usize,
}

/// Folds constants in place, inferring types as it goes (a `Shape` folds once its input's type
/// is known).
pub fn fold_constants(g: &mut Graph) -> Result<FoldStats, EvalError> {
    let mut stats = FoldStats::default();
    let mut remove = Vec::with_capacity(g.nodes.len());
    let mut i = 0;
    while i < g.nodes.len() {
        // Storage floats become explicit casts around the node (`crate::widen`); the casts are
        // typed and folded like any node, before the node itself.
        let widened = widen_inputs(g, i);
        let node = i + widened.before;
        for j in i..=node {
            // Types of nodes fed by values that are not constant yet: a later `Shape` needs
            // them. Nodes whose shape depends on a value that is not constant cannot be typed
            // yet; the inference pass after folding reports them.
            let _ = crate::shape::infer_node(g, j);
            if j == node && widened.narrow.is_none() && touches_storage_float(g, &g.nodes[j]) {
                // A storage float out of a node without one in (a fill of ConstantOfShape is
                // handled by `widen_inputs`): nothing computes it.
                let n = &mut g.nodes[j];
                let reason = if n.outputs.is_empty() {
                    String::new()
                } else {
                    format!("{} producing a float type other than float32", n.op_type)
                };
                n.op = Op::Unsupported { op_type: n.op_type.clone(), reason };
                for o in n.outputs.clone() {
                    g.value_mut(o).ty = None;
                }
            }
            let folded = fold_node(g, j)?;
            stats.folded += usize::from(folded);
            remove.push(folded);
        }
        let after = match widened.narrow {
            Some(t) => narrow_outputs(g, node, t),
            None => 0,
        };
        for j in node + 1..=node + after {
            let _ = crate::shape::infer_node(g, j);
            let folded = fold_node(g, j)?;
            stats.folded += usize::from(folded);
            remove.push(folded);
        }
        i = node + after + 1;
    }
    let mut it = remove.iter();
    g.nodes.retain(|_| !*it.next().unwrap_or(&false));
    stats.dead = remove_dead(g);
    Ok(stats)
}

/// Evaluates node `i` if it can be, recording its results as constants; returns whether it did.
fn fold_node(g: &mut Graph, i: usize) -> Result<bool, EvalError> {
    let node = &g.nodes[i];
    match &node.op {
        Op::Unsupported { .. } => return Ok(false),
        Op::Constant => return Ok(true),
        // Quantized weights stay quantized: the optimizer fuses `DequantizeLinear` of a
        // constant into integer kernels (`qdq-*` rules), and the lowering computes any it
        // leaves at compile time. Folding here would keep only the float copy, 4x larger.
        Op::DequantizeLinear { .. } => return Ok(false),
        _ => {}
    }
    // `Shape` and `Size` only need their input's type.
    let shape_of_typed = matches!(node.op, Op::Shape { .. } | Op::Size)
        && node.inputs.first().copied().flatten().is_some_and(|id| g.value(id).ty.is_some());
    let all_const = node.inputs.iter().flatten().all(|id| g.value(*id).constant.is_some());
    if !(all_const || shape_of_typed) {
        return Ok(false);
    }
    if let (Op::Shape { start, end }, Some(id)) = (&node.op, node.inputs.first().copied().flatten())
        && let Some(ty) = &g.value(id).ty
    {
        // From the type alone: a stand-in tensor of that shape could be gigabytes.
        let dims = crate::ops::shape_ops::shape_dims(&ty.shape, *start, *end);
        let t = crate::ir::Tensor::from_i64(vec![dims.len()], &dims);
        let out = node.outputs[0];
        let v = g.value_mut(out);
        v.ty = Some(TensorType { dtype: t.dtype, shape: t.shape.clone() });
        v.constant = Some(t);
        return Ok(true);
    }
    if let (Op::Size, Some(id)) = (&node.op, node.inputs.first().copied().flatten())
        && let Some(ty) = &g.value(id).ty
    {
        let n = ty.shape.iter().product::<usize>() as i64;
        let t = crate::ir::Tensor::from_i64(vec![], &[n]);
        let out = node.outputs[0];
        let v = g.value_mut(out);
        v.ty = Some(TensorType { dtype: t.dtype, shape: vec![] });
        v.constant = Some(t);
        return Ok(true);
    }
    if !within_fold_budget(g, i) {
        return Ok(false);
    }
    let node = &g.nodes[i];
    let arrays: Vec<Option<Array>> = node
        .inputs
        .iter()
        .map(|v| v.and_then(|id| g.value(id).constant.as_ref().map(Array::from_tensor)))
        .collect();
    let args: Vec<Option<&Array>> = arrays.iter().map(Option::as_ref).collect();
    let outs = eval(node, &args, g.opset)
        .map_err(|message| EvalError { node: node.name.clone(), message })?;
    let outputs = node.outputs.clone();
    for (id, a) in outputs.iter().zip(outs) {
        let t = a.to_tensor();
        let v = g.value_mut(*id);
        v.ty = Some(TensorType { dtype: t.dtype, shape: t.shape.clone() });
        v.constant = Some(t);
    }
    Ok(true)
}

/// The most bytes one folded result may have (256 MiB), and the most multiply-accumulates
/// the interpreter spends on one folded node (2^31, seconds): a node past either is left for
/// the device, so a constant Pad to 10^9 elements or a huge constant MatMul cannot make the
/// compiler allocate gigabytes or run for hours.
pub const FOLD_MAX_BYTES: usize = 256 << 20;
/// See [`FOLD_MAX_BYTES`].
pub const FOLD_MAX_MACS: u64 = 1 << 31;

/// Whether node `i`'s results are typed and within the folding budget.
fn within_fold_budget(g: &Graph, i: usize) -> bool {
    let node = &g.nodes[i];
    let mut outs = Vec::with_capacity(node.outputs.len());
    for o in &node.outputs {
        let Some(t) = &g.value(*o).ty else { return false };
        let bytes = t.shape.iter().try_fold(t.dtype.size(), |a, d| a.checked_mul(*d));
        if bytes.is_none_or(|b| b > FOLD_MAX_BYTES) {
            return false;
        }
        outs.push(t.clone());
    }
    let ins: Vec<Option<TensorType>> =
        node.inputs.iter().map(|v| v.and_then(|id| g.value(id).ty.clone())).collect();
    match (crate::ops::def(&node.op).work)(&node.op, &ins, &outs) {
        crate::ops::Work::Macs(m) => m <= FOLD_MAX_MACS,
        _ => true,
    }
}

/// Removes nodes none of whose outputs is used; returns how many.
pub fn remove_dead(g: &mut Graph) -> usize {
    let before = g.nodes.len();
    loop {
        let used: HashSet<ValueId> = g
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter().flatten().copied())
            .chain(g.outputs.iter().copied())
            .collect();
        let n = g.nodes.len();
        g.nodes.retain(|node| node.outputs.iter().any(|o| used.contains(o)));
        if g.nodes.len() == n {
            break;
        }
    }
    before - g.nodes.len()
}
