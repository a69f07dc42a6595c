//! The cost of each instruction in cycles when it runs alone: the one set of timing formulas
//! that the validator's run-time bound, the simulator's timing model and the compiler's cost
//! model all use.
//!
//! The validator sums these costs over the program. Engines overlap in reality, and DRAM
//! bandwidth shared by two DMA engines never lets both move more bytes per cycle together than
//! one alone, so the fully serialised sum is an upper bound on a job's run time.

use crate::config::{ARRAY_FILL_DRAIN_FACTOR, DeviceConfig, VX_LATENCY, VX_SLOW_FACTOR};
use crate::inst::Op;
use crate::program::{DmaDesc, Shape};

/// Bytes a DRAM transfer of `desc` occupies the bus for: every run rounded up to whole bursts.
pub fn dram_bus_bytes(desc: &DmaDesc, cfg: &DeviceConfig) -> u64 {
    let burst = u64::from(cfg.dram_burst_bytes.max(1));
    let run = u64::from(desc.x_bytes).div_ceil(burst).saturating_mul(burst);
    let runs = u64::from(desc.y_count).saturating_mul(u64::from(desc.z_count));
    run.saturating_mul(runs)
}

/// Cycles the data of a DRAM transfer of `desc` occupies the shared bus.
pub fn dram_data_cycles(desc: &DmaDesc, cfg: &DeviceConfig) -> u64 {
    cfg.dram_cycles(dram_bus_bytes(desc, cfg))
}

/// Cycles for a DRAM transfer of `desc` on its own: latency, then the data at the sustained
/// bandwidth.
pub fn dram_transfer_cycles(desc: &DmaDesc, latency: u32, cfg: &DeviceConfig) -> u64 {
    u64::from(latency).saturating_add(dram_data_cycles(desc, cfg))
}

/// Cycles for an on-chip transfer (fill or copy) of `desc`.
pub fn sram_transfer_cycles(desc: &DmaDesc, cfg: &DeviceConfig) -> u64 {
    desc.bytes().div_ceil(u64::from(cfg.sram_bytes_per_cycle.max(1))).max(1)
}

/// Cycles for a vector instruction over `shape`.
pub fn vx_cycles(shape: &Shape, slow: bool, cfg: &DeviceConfig) -> u64 {
    let beats = shape.elements().div_ceil(u64::from(cfg.vx_lanes.max(1)));
    let factor = if slow { VX_SLOW_FACTOR } else { 1 };
    beats.saturating_mul(factor).saturating_add(VX_LATENCY)
}

/// Cycles `op` takes on its own, or `None` when it names a descriptor or shape that does not
/// exist (the validator reports that separately).
pub fn op_cycles(op: &Op, dma: &[DmaDesc], shapes: &[Shape], cfg: &DeviceConfig) -> Option<u64> {
    let desc = |id: crate::DmaDescId| dma.get(usize::from(id.0));
    let shape = |id: crate::ShapeId| shapes.get(usize::from(id.0));
    Some(match op {
        Op::Nop(_)
        | Op::End(_)
        | Op::Barrier(_)
        | Op::SemSignal(_)
        | Op::SemWait(_)
        | Op::Marker(_) => 1,
        Op::DmaLoad(it) => dram_transfer_cycles(desc(it.desc)?, cfg.dram_read_latency, cfg),
        Op::DmaStore(it) => dram_transfer_cycles(desc(it.desc)?, cfg.dram_write_latency, cfg),
        Op::DmaFill(it) => sram_transfer_cycles(desc(it.desc)?, cfg),
        Op::DmaCopy(it) => sram_transfer_cycles(desc(it.desc)?, cfg),
        Op::MxLoadW(it) => u64::from(it.k).max(1),
        Op::MxMatmul(it) => u64::from(it.rows)
            .saturating_mul(cfg.matmul_cycles_per_row(it.dtype))
            .saturating_add(ARRAY_FILL_DRAIN_FACTOR * u64::from(cfg.array_dim)),
        Op::VxBinary(it) => vx_cycles(shape(it.shape)?, it.op.is_slow(), cfg),
        Op::VxUnary(it) => vx_cycles(shape(it.shape)?, it.op.is_slow(), cfg),
        Op::VxReduce(it) => vx_cycles(shape(it.shape)?, false, cfg),
        Op::VxRequant(it) => vx_cycles(shape(it.shape)?, false, cfg),
        Op::VxLut(it) => vx_cycles(shape(it.shape)?, false, cfg),
        Op::VxTranspose(it) => vx_cycles(shape(it.shape)?, false, cfg),
    })
}
