//! Nodes that do not import (another domain, an unknown op type, an attribute or data type
//! the importer refuses): kept in the graph so `check` can list them; every facet refuses.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer and device lowering.

use super::Work;
use crate::interp::*;
use crate::ir::*;
use crate::lower::LowerError;
use crate::lower::host::HostBuilder;
use crate::lower::schedule::*;
use crate::onnx::Attrs;
use crate::ops::{Arity, MANY, counts};

type R<T> = Result<T, String>;

/// The family's name in the registry.
pub(crate) const FAMILY: &str = "unsupported";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &[];

/// Nothing imports into this family directly (the importer builds these ops itself).
pub(crate) fn import(op_type: &str, _a: &Attrs<'_>, _opset: i64) -> Result<Op, String> {
    Err(super::misrouted_name(op_type, FAMILY))
}

/// Output types from input types `ins` (and constant shape operands of `g`).
pub(crate) fn infer(_g: &Graph, node: &Node, _ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    match &node.op {
        Op::Unsupported { .. } => Ok(vec![]),
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// Reference semantics: the outputs for inputs `args` (the oracle the device is checked
/// against).
pub(crate) fn eval(node: &Node, _args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    match &node.op {
        Op::Unsupported { reason, .. } => Err(format!("unsupported: {reason}")),
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// Nothing: an unsupported node's attributes were not imported (the printed op type says what
/// it was).
pub(crate) fn print(_op: &Op, _a: &mut Vec<String>) {}

/// Device lowering: `n` (node `idx` of the graph) as kernel steps of `b`, or the constraint
/// that keeps it off the device.
pub(crate) fn lower(_b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    let name = n.name.clone();
    let err = |m: &str| LowerError::at(&name, m.to_string());
    match &n.op {
        Op::Unsupported { op_type, reason } => {
            // The importer's reason may already say just that.
            if *reason == format!("`{op_type}` is not supported") {
                Err(err(&format!("{op_type} is not supported")))
            } else {
                Err(err(&format!("{op_type} is not supported: {reason}")))
            }
        }
        other => Err(LowerError::at(&n.name, super::misrouted(other, FAMILY))),
    }
}

/// Cost inputs: unknown work, costed by its traffic.
pub(crate) fn work(_op: &Op, _inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    Work::Traffic
}

/// The inputs and outputs ONNX allows op type `op_type` at `opset`
/// (the operator schemas' `min_input`, `max_input`, `min_output`, `max_output`).
pub(crate) fn arity(op_type: &str, opset: i64) -> Arity {
    let _ = (op_type, opset);
    counts(0, MANY, 0, MANY)
}

/// No input is known to determine the output shape.
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
}

/// Host lowering: not written yet for this family (the node is refused, naming its op).
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    crate::lower::host::not_yet(b, n)
}
