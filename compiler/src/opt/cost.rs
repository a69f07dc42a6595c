//! The optimizer's cost model: estimated device cycles per operation on the target, from its
//! multiply-accumulates, vector work and DRAM bytes, with the constants of `accelc_isa`'s cost
//! module (peak matrix rate, vector lanes and slow-operation factor, DRAM bandwidth and
//! latency) that the validator, the simulator's timing model and `accelc profile` use.
//!
//! Each operation is costed as the lowering runs it: one kernel (a DRAM latency to drain at its
//! barrier) bounded by the larger of its compute and its traffic; reshapes cost nothing; an
//! activation or an addition the lowering fuses into a preceding Conv/Gemm/MatMul costs only
//! its vector work on the accumulator.

use std::collections::HashMap;

use accelc_isa::DeviceConfig;
use accelc_isa::config::{VX_LATENCY, VX_SLOW_FACTOR};

use super::{EG, Level, Node};
use crate::ir::{BinaryOp, Graph, Op, TensorType, UnaryOp};
use crate::ops::Work;

fn elems(t: &TensorType) -> u64 {
    t.shape.iter().product::<usize>() as u64
}

fn bytes(t: &TensorType) -> u64 {
    elems(t) * t.dtype.size() as u64
}

/// Whether the lowering gives `op` no kernel of its own, whatever its types.
fn is_alias(op: &Op) -> bool {
    (crate::ops::def(op).work)(op, &[], &[]) == Work::Free
}

/// Whether `op` produces a matrix kernel whose epilogue can absorb what follows.
fn is_matrix(op: &Op) -> bool {
    matches!(op, Op::Conv { .. } | Op::Gemm { .. } | Op::MatMul)
}

/// Estimated cycles of one operation; `fused` when it follows a matrix kernel the lowering
/// merges it into.
pub fn op_cycles(
    op: &Op,
    inputs: &[Option<TensorType>],
    outputs: &[TensorType],
    fused: bool,
    cfg: &DeviceConfig,
) -> f64 {
    let lanes = u64::from(cfg.vx_lanes.max(1));
    let vx = |n: u64, passes: u64, slow: bool| {
        (n.div_ceil(lanes) * passes * if slow { VX_SLOW_FACTOR } else { 1 } + VX_LATENCY) as f64
    };
    let out_elems: u64 = outputs.iter().map(elems).sum();
    let read = read_fraction(op, inputs);
    let traffic: u64 = inputs
        .iter()
        .enumerate()
        .filter(|(i, _)| !op.is_shape_operand(*i))
        .filter_map(|(i, t)| {
            t.as_ref().map(|t| if i == 0 { (bytes(t) as f64 * read) as u64 } else { bytes(t) })
        })
        .sum::<u64>()
        + outputs.iter().map(bytes).sum::<u64>();
    let dram = cfg.dram_cycles(traffic) as f64;
    let overhead = f64::from(cfg.dram_read_latency + cfg.dram_write_latency);
    // The matrix engine's rate for the activations' type (int8 kernels run 16x faster than
    // f32 ones), as the lowering's layers record it.
    let act = inputs
        .first()
        .and_then(|t| t.as_ref())
        .and_then(|t| crate::lower::device_dtype(t.dtype))
        .unwrap_or(accelc_isa::Dtype::F32);
    let peak = cfg.peak_macs_per_sec(act).max(1) as f64 / cfg.clock_hz as f64;
    match (crate::ops::def(op).work)(op, inputs, outputs) {
        Work::Free => 0.0,
        Work::Macs(macs) => (macs as f64 / peak).max(dram) + overhead,
        // Fused into the matrix kernel's epilogue: vector work on the accumulator only.
        Work::Vector { passes, slow } if fused => vx(out_elems, passes, slow),
        Work::Vector { passes, slow } => vx(out_elems, passes, slow).max(dram) + overhead,
        Work::Traffic => dram + overhead,
    }
}

/// The fraction of a convolution's input its windows read: a stride longer than the
/// window's extent skips the positions between (a stride-2 1×1 convolution reads a quarter,
/// and the lowering loads only that); 1 for everything else.
fn read_fraction(op: &Op, inputs: &[Option<TensorType>]) -> f64 {
    let (Op::Conv { window, .. } | Op::QConv { window, .. }) = op else { return 1.0 };
    let kernel: &[usize] = if window.kernel.is_empty() {
        match inputs.get(1).and_then(|t| t.as_ref()) {
            Some(w) if w.shape.len() > 2 => &w.shape[2..],
            _ => return 1.0,
        }
    } else {
        &window.kernel
    };
    kernel
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let s = window.strides.get(i).copied().unwrap_or(1).max(1);
            let d = window.dilations.get(i).copied().unwrap_or(1).max(1);
            let extent = (k.max(1) - 1) * d + 1;
            if s > extent { extent as f64 / s as f64 } else { 1.0 }
        })
        .product()
}

/// Whether an element-wise `op` reading `inputs` is fused into a matrix kernel producing one
/// of them (Relu, Clip, or an Add).
fn fusable(op: &Op) -> bool {
    matches!(op, Op::Unary(UnaryOp::Relu) | Op::Clip { .. } | Op::Binary(BinaryOp::Add))
}

/// Cost of every e-node: device cycles at `-O2`, one per operation at `-O1`.
pub fn node_costs(eg: &EG, cfg: &DeviceConfig, level: Level) -> HashMap<Node, f64> {
    let mut table = HashMap::new();
    for class in eg.classes() {
        for node in &class.nodes {
            let c = match node {
                Node::Op(k, children) => {
                    let op = &eg.analysis.ops[*k as usize].op;
                    if level == Level::O1 {
                        if is_alias(op) { 0.0 } else { 1.0 }
                    } else {
                        let ins: Vec<Option<TensorType>> =
                            children.iter().map(|c| eg[*c].data.ty.clone()).collect();
                        let outs: Vec<TensorType> = match (&class.data.ty, &class.data.tuple) {
                            (Some(t), _) => vec![t.clone()],
                            (None, Some(v)) => v.clone(),
                            _ => vec![],
                        };
                        let fused = fusable(op)
                            && children.iter().any(|c| {
                                eg[*c].nodes.iter().any(|n| match n {
                                    Node::Op(k2, _) => is_matrix(&eg.analysis.ops[*k2 as usize].op),
                                    _ => false,
                                })
                            });
                        op_cycles(op, &ins, &outs, fused, cfg)
                    }
                }
                _ => 0.0,
            };
            table.insert(node.clone(), c);
        }
    }
    table
}

/// Estimated cycles of a whole graph (each node once).
pub fn graph_cycles(g: &Graph, cfg: &DeviceConfig) -> f64 {
    node_cycles(g, cfg).iter().sum()
}

/// The cost model's estimated cycles of each node of `g`, in node order (0 for nodes whose
/// outputs are constants): what extraction weighs, set beside the simulator's per-layer cycles
/// by the zoo bench.
pub fn node_cycles(g: &Graph, cfg: &DeviceConfig) -> Vec<f64> {
    let mut producer: HashMap<crate::ir::ValueId, &Op> = HashMap::new();
    let mut out = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        if n.outputs.iter().all(|o| g.value(*o).constant.is_some()) {
            out.push(0.0);
            continue;
        }
        let ins: Vec<Option<TensorType>> = n
            .inputs
            .iter()
            .map(|i| {
                i.and_then(|v| {
                    let val = g.value(v);
                    val.ty.clone().or_else(|| {
                        val.constant
                            .as_ref()
                            .map(|t| TensorType { dtype: t.dtype, shape: t.shape.clone() })
                    })
                })
            })
            .collect();
        let outs: Vec<TensorType> =
            n.outputs.iter().filter_map(|o| g.value(*o).ty.clone()).collect();
        let fused = fusable(&n.op)
            && n.inputs.iter().flatten().any(|v| producer.get(v).is_some_and(|op| is_matrix(op)));
        out.push(op_cycles(&n.op, &ins, &outs, fused, cfg));
        for o in &n.outputs {
            producer.insert(*o, &n.op);
        }
    }
    out
}
