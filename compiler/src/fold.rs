//! Constant folding: every supported node whose inputs are all constants (and every `Shape` of
//! a statically shaped value) is evaluated with the reference interpreter and replaced by its
//! result; `Constant` nodes disappear into their values; nodes whose results nobody uses are
//! removed. Shape arithmetic of older exporters (Shape, Gather, Cast, Concat, Unsqueeze, Slice
//! on constants) vanishes this way.

use std::collections::HashSet;

use crate::interp::{Array, EvalError, eval};
use crate::ir::{Graph, Op, TensorType, ValueId};

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
    for i in 0..g.nodes.len() {
        // Types of nodes fed by values that are not constant yet: a later `Shape` needs them.
        // Nodes whose shape depends on a value that is not constant cannot be typed yet; the
        // inference pass after folding reports them.
        let _ = crate::shape::infer_node(g, i);
        let folded = fold_node(g, i)?;
        stats.folded += usize::from(folded);
        remove.push(folded);
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
        _ => {}
    }
    // `Shape` only needs its input's type.
    let shape_of_typed = matches!(node.op, Op::Shape { .. })
        && node.inputs.first().copied().flatten().is_some_and(|id| g.value(id).ty.is_some());
    let all_const = node.inputs.iter().flatten().all(|id| g.value(*id).constant.is_some());
    if !(all_const || shape_of_typed) {
        return Ok(false);
    }
    let arrays: Vec<Option<Array>> = node
        .inputs
        .iter()
        .map(|v| {
            v.map(|id| {
                let value = g.value(id);
                match (&value.constant, &value.ty) {
                    (Some(t), _) => Array::from_tensor(t),
                    // Shape reads only dimensions: zeros of the right shape stand in.
                    (None, Some(ty)) => Array::from_tensor(&crate::ir::Tensor {
                        dtype: ty.dtype,
                        shape: ty.shape.clone(),
                        data: vec![0u8; ty.shape.iter().product::<usize>() * ty.dtype.size()]
                            .into(),
                    }),
                    (None, None) => Array::F32(ndarray::ArrayD::zeros(ndarray::IxDyn(&[0]))),
                }
            })
        })
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
