//! The IR verifier: structural invariants every pass must keep. Run between passes; a failure
//! is a compiler bug, reported with the node and value involved.

use std::collections::HashSet;

use crate::ir::{Graph, Op, ValueId};

/// Checks `g`; with `typed`, also that every value a supported node computes has a type,
/// every constant's data matches its type, and only casts touch storage floats
/// (`crate::widen`).
pub fn verify(g: &Graph, typed: bool) -> Result<(), String> {
    let n = g.values.len();
    let in_range = |id: ValueId| (id.0 as usize) < n;
    let mut defined: HashSet<ValueId> = HashSet::new();
    for &id in &g.inputs {
        if !in_range(id) {
            return Err(format!("graph input {} does not exist", id.0));
        }
        if g.value(id).constant.is_some() {
            return Err(format!("graph input `{}` is a constant", g.value(id).name));
        }
        defined.insert(id);
    }
    // Constants are available from the start, except those a `Constant` node produces.
    let produced: HashSet<ValueId> =
        g.nodes.iter().flat_map(|node| node.outputs.iter().copied()).collect();
    for (i, v) in g.values.iter().enumerate() {
        if let Some(t) = &v.constant {
            if t.data.len() != t.len() * t.dtype.size() {
                return Err(format!(
                    "constant `{}` holds {} bytes for {}{:?}",
                    v.name,
                    t.data.len(),
                    t.dtype,
                    t.shape
                ));
            }
            if v.ty.as_ref().is_some_and(|ty| ty.dtype != t.dtype || ty.shape != t.shape) {
                return Err(format!("constant `{}` disagrees with its type", v.name));
            }
            if !produced.contains(&ValueId(i as u32)) {
                defined.insert(ValueId(i as u32));
            }
        }
    }
    for node in &g.nodes {
        for input in node.inputs.iter().flatten() {
            if !in_range(*input) {
                return Err(format!(
                    "node `{}` reads value {} that does not exist",
                    node.name, input.0
                ));
            }
            // An unsupported node may read a value of an unsupported data type (an
            // initializer kept without contents); its own reason says so.
            if !defined.contains(input) && !matches!(node.op, crate::ir::Op::Unsupported { .. }) {
                return Err(format!(
                    "node `{}` reads `{}` before it is computed",
                    node.name,
                    g.value(*input).name
                ));
            }
        }
        for out in &node.outputs {
            if !in_range(*out) {
                return Err(format!(
                    "node `{}` writes value {} that does not exist",
                    node.name, out.0
                ));
            }
            if !defined.insert(*out) {
                return Err(format!(
                    "`{}` is computed twice (second time by node `{}`)",
                    g.value(*out).name,
                    node.name
                ));
            }
            if typed && crate::widen::touches_storage_float(g, node) {
                return Err(format!(
                    "node `{}` computes with a float type other than float32 (only casts may)",
                    node.name
                ));
            }
            if typed && !matches!(node.op, Op::Unsupported { .. }) && g.value(*out).ty.is_none() {
                let fed_by_unsupported =
                    node.inputs.iter().flatten().any(|i| g.value(*i).ty.is_none());
                if !fed_by_unsupported {
                    return Err(format!(
                        "`{}` computed by node `{}` has no type",
                        g.value(*out).name,
                        node.name
                    ));
                }
            }
        }
    }
    for out in &g.outputs {
        if !in_range(*out) || !defined.contains(out) {
            return Err(format!("graph output {} is never computed", out.0));
        }
    }
    Ok(())
}
