//! Per-layer profiles: a traced run through the driver, cut at each kernel's closing barrier,
//! set beside each layer's MACs, DMA traffic and roofline bound.

use accelc_compiler::lower::{self, Layer, LayerKind};
use accelc_isa::blob::Blob;
use accelc_isa::{Dtype, Op, Program};
use accelc_runtime::sim::RunStats;

use crate::{Error, HostTensor, Session};

/// One layer (kernel) of a profiled run.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerProfile {
    /// The ONNX nodes it implements, joined with `+`.
    pub name: String,
    /// Kernel kind.
    pub kind: LayerKind,
    /// Cycles from the previous kernel's barrier to this one's.
    pub cycles: u64,
    /// Multiply-accumulates of useful work.
    pub macs: u64,
    /// Bytes its DMA loads and stores move.
    pub dma_bytes: u64,
    /// MACs over `cycles` times the matrix engine's peak MACs per cycle for the layer's type
    /// (int8, bf16 or f32; 0..1).
    pub utilisation: f64,
    /// The element type the layer computes in (its MACs run at this type's peak).
    pub dtype: Dtype,
    /// The roofline bound in cycles ([`Layer::roofline_cycles`]).
    pub roofline_cycles: u64,
}

/// A profiled run.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Per layer, in program order (for a plan, every device job's layers in step order).
    pub layers: Vec<LayerProfile>,
    /// The job's counters, with the per-instruction trace (for a plan, summed over the jobs,
    /// with the last job's trace).
    pub stats: RunStats,
    /// For a plan, every step: its name, its device cycles or host wall time.
    pub steps: Vec<crate::StepRun>,
}

impl Profile {
    /// Utilisation of the whole run: MACs over the layers' cycles, each cycle at the peak
    /// rate of its layer's type.
    pub fn utilisation(&self, session: &Session) -> f64 {
        let macs: u64 = self.layers.iter().map(|l| l.macs).sum();
        let capacity: f64 =
            self.layers.iter().map(|l| l.cycles as f64 * peak_per_cycle(session, l.dtype)).sum();
        if capacity > 0.0 { macs as f64 / capacity } else { 0.0 }
    }
}

fn peak_per_cycle(session: &Session, dtype: Dtype) -> f64 {
    let cfg = session.config();
    cfg.peak_macs_per_sec(dtype) as f64 / cfg.clock_hz as f64
}

/// The layer records a blob carries, if any.
pub fn blob_layers(blob: &[u8]) -> Result<Option<Vec<Layer>>, Error> {
    let b = Blob::read(blob).map_err(|e| Error::Blob(format!("malformed blob: {e}")))?;
    Ok(lower::layers_from_blob(&b))
}

/// Runs `session` once on `inputs` with a trace and cuts it into `layers` (the compiler's
/// records, or the blob's when `None`).
///
/// Errors: [`Error::Blob`] when the blob has no layer records and none are given, and those of
/// [`Session::run`].
pub fn profile(
    session: &Session,
    layers: Option<&[Layer]>,
    inputs: &[HostTensor],
) -> Result<Profile, Error> {
    if session.is_plan() {
        return profile_plan(session, inputs);
    }
    let owned;
    let layers = match layers {
        Some(l) => l,
        None => {
            owned = blob_layers(session.blob())?
                .ok_or_else(|| Error::Blob("the blob has no layer records".into()))?;
            &owned
        }
    };
    let stats = session.run_with(inputs, true)?.stats;
    let out = cut(session, session.blob(), layers, &stats)?;
    Ok(Profile { layers: out, stats, steps: Vec::new() })
}

/// A plan's profile: each device job's layers from its own program and trace, and each host
/// call's wall time.
fn profile_plan(session: &Session, inputs: &[HostTensor]) -> Result<Profile, Error> {
    let plan = accelc_isa::plan::PlanBlob::read(session.blob())
        .map_err(|e| Error::Blob(format!("malformed blob: {e}")))?;
    let run = session.run_with(inputs, true)?;
    let mut layers = Vec::new();
    for s in &run.steps {
        if let Some((program, stats)) = &s.device {
            let bytes = plan
                .programs
                .get(*program as usize)
                .ok_or_else(|| Error::Blob(format!("step `{}`: no program {program}", s.name)))?;
            let ls = blob_layers(bytes)?
                .ok_or_else(|| Error::Blob(format!("step `{}`: no layer records", s.name)))?;
            layers.extend(cut(session, bytes, &ls, stats)?);
        }
    }
    Ok(Profile { layers, stats: run.stats, steps: run.steps })
}

/// Cuts the trace of one job of program `blob` into `layers`.
fn cut(
    session: &Session,
    blob: &[u8],
    layers: &[Layer],
    stats: &RunStats,
) -> Result<Vec<LayerProfile>, Error> {
    let blob = Blob::read(blob).map_err(|e| Error::Blob(e.to_string()))?;
    let program = Program::decode(&blob.program).map_err(|e| Error::Blob(e.to_string()))?;
    // Completion cycle of every barrier.
    let mut barrier_end = std::collections::HashMap::new();
    for e in &stats.trace {
        if e.mnemonic == "barrier" {
            barrier_end.insert(e.inst, e.end);
        }
    }
    let cfg = session.config();
    let mut prev = 0u64;
    let mut out = Vec::with_capacity(layers.len());
    for l in layers {
        let end = barrier_end.get(&(l.end as usize).saturating_sub(1)).copied().unwrap_or(prev);
        let cycles = end.saturating_sub(prev);
        prev = end;
        let insts = program.insts.get(l.start as usize..l.end as usize).unwrap_or(&[]);
        let dma_bytes: u64 = insts
            .iter()
            .map(|i| match &i.op {
                Op::DmaLoad(x) => program.dma.get(usize::from(x.desc.0)).map_or(0, |d| d.bytes()),
                Op::DmaStore(x) => program.dma.get(usize::from(x.desc.0)).map_or(0, |d| d.bytes()),
                _ => 0,
            })
            .sum();
        out.push(LayerProfile {
            name: l.name.clone(),
            kind: l.kind,
            cycles,
            macs: l.macs,
            dtype: l.dtype,
            dma_bytes,
            utilisation: {
                let peak = peak_per_cycle(session, l.dtype);
                if peak > 0.0 { l.macs as f64 / (cycles.max(1) as f64 * peak) } else { 0.0 }
            },
            roofline_cycles: l.roofline_cycles(cfg),
        });
    }
    Ok(out)
}
