//! `select`: the lowering's answer to "does this node run on this device configuration, and if
//! not, which constraint fails". It is decided by each op family's lowering facet (the same
//! code `compile` runs, never a second list of rules that could drift from it), either in the
//! context of the whole graph ([`device_support`], which sees fusion and layouts as `compile`
//! does) or for one node on its own ([`device_supports`], what a partitioner asks of each
//! node before it knows the regions).
//!
//! Whole-program limits (instruction count, memory) are decided later, in planning and
//! emission, and only show in `compile`.

use accelc_isa::DeviceConfig;

use super::{CompileOptions, LowerError};
use crate::ir::{Graph, Node, ValueId};

/// Asks the lowering, for every node of `graph` (folded and typed; it may hold unsupported
/// nodes), whether it runs on `opts.config`: `Err` with the failing constraint when the
/// lowering refuses it (or it does not import, or an input is untyped because a node upstream
/// does not import); `Ok` when it is lowered, fused into another node's kernel, or folded
/// away. It is the lowering's own answer, from the code [`super::compile`] runs, so the two cannot
/// disagree on a node; whole-program limits (instruction count, memory) only show in
/// [`super::compile`].
pub fn device_support(graph: &Graph, opts: &CompileOptions) -> Vec<Result<(), LowerError>> {
    let mut nodes: Vec<Result<(), LowerError>> = vec![Ok(()); graph.nodes.len()];
    let legal = match super::legalize::legalize(graph) {
        Ok(l) => l,
        Err(e) => {
            // Blame the node legalize stopped at (or every node when it names none); the
            // others, which the whole graph never reached, are judged on their own.
            let single = graph.nodes.len() == 1;
            for (i, (n, r)) in graph.nodes.iter().zip(&mut nodes).enumerate() {
                if e.node.as_deref().is_none_or(|x| x == n.name) {
                    *r = Err(e.clone());
                } else if !single {
                    *r = device_supports(graph, i, &opts.config);
                }
            }
            return nodes;
        }
    };
    for (i, e) in super::schedule::schedule_all(&legal.graph, opts) {
        let o = legal.origin[i];
        if nodes[o].is_ok() {
            nodes[o] = Err(e);
        }
    }
    nodes
}

/// Whether node `node` of `graph` (folded and typed) runs on `config` by itself: the node is
/// taken out with its inputs (constants stay constants, the rest become graph inputs of their
/// types) and its outputs, legalized and handed to its family's lowering facet. `Err` names the
/// failing constraint. Unlike [`device_support`] nothing is fused into it or into a neighbour,
/// so a node the whole-graph answer accepts as part of a fused kernel is judged as a kernel of
/// its own.
///
/// Errors: an index out of range is an error naming it (never a panic).
pub fn device_supports(
    graph: &Graph,
    node: usize,
    config: &DeviceConfig,
) -> Result<(), LowerError> {
    let n = graph.nodes.get(node).ok_or_else(|| {
        LowerError::msg(format!("no node {node} (the graph has {})", graph.nodes.len()))
    })?;
    let mut g = Graph { opset: graph.opset, ..Graph::default() };
    let mut map = std::collections::HashMap::new();
    let mut copy = |g: &mut Graph, v: ValueId| -> ValueId {
        *map.entry(v).or_insert_with(|| {
            let mut value = graph.value(v).clone();
            // What the whole graph computes at compile time is a constant here too: a
            // DequantizeLinear of constants (the frontend keeps quantized weights quantized).
            if value.constant.is_none() {
                value.constant = compile_time_dequantized(graph, v);
            }
            g.add_value(value)
        })
    };
    let inputs: Vec<Option<ValueId>> =
        n.inputs.iter().map(|v| v.map(|v| copy(&mut g, v))).collect();
    let outputs: Vec<ValueId> = n.outputs.iter().map(|v| copy(&mut g, *v)).collect();
    for v in inputs.iter().flatten() {
        if g.value(*v).constant.is_none() && !g.inputs.contains(v) {
            g.inputs.push(*v);
        }
    }
    g.outputs = outputs.clone();
    g.nodes.push(Node { inputs, outputs, ..n.clone() });
    let opts = CompileOptions { config: config.clone(), expose_all: false };
    device_support(&g, &opts).into_iter().next().unwrap_or(Ok(()))
}

/// The value of `v` when a `DequantizeLinear` of constants produces it (as the lowering
/// evaluates it), else `None`.
fn compile_time_dequantized(graph: &Graph, v: ValueId) -> Option<crate::ir::Tensor> {
    use crate::interp::{Array, eval};
    let n = graph.nodes.iter().find(|n| n.outputs.contains(&v))?;
    if !matches!(n.op, crate::ir::Op::DequantizeLinear { .. }) {
        return None;
    }
    let mut arrays: Vec<Option<Array>> = Vec::with_capacity(n.inputs.len());
    for i in &n.inputs {
        arrays.push(match i {
            None => None,
            Some(i) => Some(Array::from_tensor(graph.value(*i).constant.as_ref()?)),
        });
    }
    let args: Vec<Option<&Array>> = arrays.iter().map(Option::as_ref).collect();
    eval(n, &args, graph.opset).ok()?.first().map(Array::to_tensor)
}

/// Select's answers for `graph` as text, one node per line (`device` or the reason), for
/// `--dump-ir`.
pub(crate) fn report(graph: &Graph, opts: &CompileOptions) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (n, r) in graph.nodes.iter().zip(device_support(graph, opts)) {
        let _ = match r {
            Ok(()) => writeln!(out, "device  {} ({})", n.name, n.op_type),
            Err(e) => writeln!(out, "refused {} ({}): {}", n.name, n.op_type, e.message),
        };
    }
    out
}
