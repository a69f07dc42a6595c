//! The high-level API: load a blob, run it on inputs, get outputs.
//!
//! `Model::load` checks the blob, creates the program once (validated by the driver), and
//! uploads constant segments once into read-only buffer objects shared by every run. Each run
//! allocates its own input, output and arena buffers, so runs from several threads proceed
//! independently.

use std::fmt;
use std::path::Path;

use accelc_isa::blob::{Blob, BlobError, Direction, IoTensor, SegmentRole};
use accelc_isa::verify::Report;

use crate::driver::{
    BoHandle, Context, Device, DriverError, Job, JobStatus, ProgramHandle, QueueHandle,
    SegmentBinding,
};
use crate::sim::RunStats;

/// Why a model could not be loaded or run.
#[derive(Debug)]
pub enum ModelError {
    /// Reading the file failed.
    Io(std::io::Error),
    /// The blob is malformed.
    Blob(BlobError),
    /// The blob was built for other hardware.
    Target(String),
    /// A driver call failed (for instance the program was rejected).
    Driver(DriverError),
    /// The inputs do not match the model's signature.
    Inputs(String),
    /// The job did not complete.
    Job(JobStatus),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Io(e) => write!(f, "cannot read the blob: {e}"),
            ModelError::Blob(e) => write!(f, "malformed blob: {e}"),
            ModelError::Target(why) | ModelError::Inputs(why) => f.write_str(why),
            ModelError::Driver(e) => e.fmt(f),
            ModelError::Job(JobStatus::Faulted(fault)) => write!(f, "the job faulted: {fault}"),
            ModelError::Job(JobStatus::TimedOut(fault)) => write!(f, "the job timed out: {fault}"),
            ModelError::Job(other) => write!(f, "the job did not complete: {other:?}"),
        }
    }
}

impl std::error::Error for ModelError {}

impl From<DriverError> for ModelError {
    fn from(e: DriverError) -> ModelError {
        ModelError::Driver(e)
    }
}

/// A segment's buffer plan.
#[derive(Clone, Debug)]
struct SegPlan {
    id: u8,
    size: u64,
    /// The shared read-only buffer, for constant segments.
    constant: Option<BoHandle>,
    /// Whether the blob declares it writable (per-run buffers are made read-only otherwise,
    /// so the driver's submit check enforces the declared access too).
    writable: bool,
}

/// A loaded model.
#[derive(Debug)]
pub struct Model {
    ctx: Context,
    queue: QueueHandle,
    program: ProgramHandle,
    report: Report,
    segments: Vec<SegPlan>,
    io: Vec<IoTensor>,
}

/// A run's outputs and counters.
#[derive(Clone, Debug)]
pub struct Outputs {
    /// Output tensors' bytes, in signature order.
    pub tensors: Vec<Vec<u8>>,
    /// The job's counters.
    pub stats: RunStats,
}

impl Model {
    /// Loads a blob file onto a new simulated device with the configuration it was built for.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        let bytes = accelc_isa::file::read_regular(path.as_ref(), accelc_isa::file::MAX_FILE_BYTES)
            .map_err(|e| ModelError::Io(std::io::Error::other(e.to_string())))?;
        let blob = Blob::read(&bytes).map_err(ModelError::Blob)?;
        let cfg = accelc_isa::DeviceConfig::by_name(&blob.target.config_name).ok_or_else(|| {
            ModelError::Target(format!(
                "no built-in device configuration `{}`",
                blob.target.config_name
            ))
        })?;
        Model::load_blob(&Device::open(cfg), &blob)
    }

    /// Loads a parsed blob onto `device`.
    pub fn load_blob(device: &Device, blob: &Blob<'_>) -> Result<Model, ModelError> {
        let info = device.query();
        if !blob.target.runs_on(&info.config) {
            return Err(ModelError::Target(format!(
                "built for ISA {}.{} on `{}`; this device is ISA {}.{} `{}`",
                blob.target.isa_major,
                blob.target.isa_minor,
                blob.target.config_name,
                info.isa_version.0,
                info.isa_version.1,
                info.config.name
            )));
        }
        let ctx = device.open_context();
        let (program, report) = ctx.create_program(&blob.program)?;
        // The declared segments as the buffers this model binds: the check `verify` makes.
        accelc_isa::verify::check_declared(&report, &blob.segments)
            .map_err(|e| ModelError::Driver(DriverError::Rejected(e)))?;
        let mut segments = Vec::with_capacity(blob.segments.len());
        for s in &blob.segments {
            let constant = if s.role == SegmentRole::Const {
                let bo = ctx.create_bo(s.size.max(1), true)?;
                if let Some(init) = blob.segment_init(s.id) {
                    ctx.write_bo(bo, 0, init)?;
                }
                Some(bo)
            } else {
                None
            };
            let writable = s.access & accelc_isa::blob::ACCESS_WRITE != 0;
            segments.push(SegPlan { id: s.id, size: s.size, constant, writable });
        }
        let queue = ctx.create_queue(0)?;
        Ok(Model { ctx, queue, program, report, segments, io: blob.io.clone() })
    }

    /// Input tensors, in signature order.
    pub fn inputs(&self) -> impl Iterator<Item = &IoTensor> {
        self.io.iter().filter(|t| t.direction == Direction::Input)
    }

    /// Output tensors, in signature order.
    pub fn outputs(&self) -> impl Iterator<Item = &IoTensor> {
        self.io.iter().filter(|t| t.direction == Direction::Output)
    }

    /// The validator's report on the program.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Runs the model on `inputs` (little-endian tensor bytes, in signature order).
    pub fn run(&self, inputs: &[&[u8]]) -> Result<Outputs, ModelError> {
        self.run_with(inputs, false)
    }

    /// As [`Model::run`]; with `trace`, the job records a trace event per instruction
    /// (`Outputs::stats.trace`), for profiles.
    pub fn run_with(&self, inputs: &[&[u8]], trace: bool) -> Result<Outputs, ModelError> {
        let specs: Vec<&IoTensor> = self.inputs().collect();
        if specs.len() != inputs.len() {
            return Err(ModelError::Inputs(format!(
                "the model takes {} inputs, {} given",
                specs.len(),
                inputs.len()
            )));
        }
        let mut bindings = Vec::new();
        // Buffers of this run, by segment; the ones to free afterwards.
        let mut seg_bo: Vec<(u8, BoHandle)> = Vec::new();
        let mut fresh = Vec::new();
        for s in &self.segments {
            let bo = match s.constant {
                Some(bo) => bo,
                None => {
                    let bo = self.ctx.create_bo(s.size.max(1), !s.writable)?;
                    fresh.push(bo);
                    bo
                }
            };
            seg_bo.push((s.id, bo));
            // The program decides which segments it uses; bind exactly those.
            if self.report.segments[usize::from(s.id)].used() {
                bindings.push(SegmentBinding { seg: s.id, bo, offset: 0, size: s.size });
            }
        }
        let bo_of = |seg: u8| seg_bo.iter().find(|(id, _)| *id == seg).map(|(_, bo)| *bo);
        let result = (|| {
            for (spec, data) in specs.iter().zip(inputs) {
                let size = spec.byte_size().unwrap_or(u64::MAX);
                if data.len() as u64 != size {
                    return Err(ModelError::Inputs(format!(
                        "input `{}` ({}{:?}) is {size} bytes; {} given",
                        spec.name,
                        spec.dtype,
                        spec.dims,
                        data.len()
                    )));
                }
                let bo = bo_of(spec.segment).ok_or_else(|| {
                    ModelError::Inputs(format!(
                        "input `{}` lives in a segment the program does not use",
                        spec.name
                    ))
                })?;
                self.ctx.write_bo(bo, spec.offset, data)?;
            }
            let job = Job {
                program: Some(self.program),
                bindings: bindings.clone(),
                trace,
                ..Job::default()
            };
            let fence = self.ctx.submit(self.queue, job)?;
            let status = loop {
                if let Some(s) = fence.wait(std::time::Duration::from_secs(1)) {
                    break s;
                }
            };
            let JobStatus::Done(stats) = status else { return Err(ModelError::Job(status)) };
            let mut tensors = Vec::new();
            for spec in self.outputs() {
                let bo = bo_of(spec.segment).ok_or_else(|| {
                    ModelError::Inputs(format!(
                        "output `{}` lives in a segment the program does not use",
                        spec.name
                    ))
                })?;
                tensors.push(self.ctx.read_bo(bo, spec.offset, spec.byte_size().unwrap_or(0))?);
            }
            Ok(Outputs { tensors, stats: *stats })
        })();
        for bo in fresh {
            let _ = self.ctx.free_bo(bo);
        }
        result
    }
}

/// Runs a blob directly on a fresh simulator (no driver), with the simulator's options: the
/// path tools take when they need a trace or the job's counters. The program is validated
/// first, exactly as the driver would, and the job's budget is the validator's bound.
pub fn simulate(
    blob: &Blob<'_>,
    inputs: &[&[u8]],
    trace: bool,
) -> Result<(Vec<Vec<u8>>, RunStats), ModelError> {
    use crate::sim::{RunOptions, Segment, Segments, Simulator};
    let cfg = accelc_isa::DeviceConfig::by_name(&blob.target.config_name).ok_or_else(|| {
        ModelError::Target(format!(
            "no built-in device configuration `{}`",
            blob.target.config_name
        ))
    })?;
    if !blob.target.runs_on(&cfg) {
        return Err(ModelError::Target(format!(
            "built for ISA {}.{} on a `{}` whose fingerprint differs from the built-in one",
            blob.target.isa_major, blob.target.isa_minor, blob.target.config_name
        )));
    }
    let (program, report) = accelc_isa::verify::verify_encoded(
        &blob.program,
        &cfg,
        &accelc_isa::verify::Limits::default(),
    )
    .map_err(|e| ModelError::Driver(DriverError::Rejected(e)))?;
    accelc_isa::verify::check_declared(&report, &blob.segments)
        .map_err(|e| ModelError::Driver(DriverError::Rejected(e)))?;
    let mut buffers: Vec<Option<(Vec<u8>, bool)>> = (0..16).map(|_| None).collect();
    for s in &blob.segments {
        // Failing to allocate a segment is an error for this run, never an abort.
        let len = usize::try_from(s.size).unwrap_or(usize::MAX);
        let mut data = Vec::new();
        data.try_reserve_exact(len).map_err(|_| {
            ModelError::Inputs(format!("cannot allocate segment {} of {} bytes", s.id, s.size))
        })?;
        data.resize(len, 0u8);
        if let Some(init) = blob.segment_init(s.id) {
            data[..init.len()].copy_from_slice(init);
        }
        buffers[usize::from(s.id)] = Some((data, s.role != SegmentRole::Const));
    }
    let specs: Vec<&IoTensor> =
        blob.io.iter().filter(|t| t.direction == Direction::Input).collect();
    if specs.len() != inputs.len() {
        return Err(ModelError::Inputs(format!(
            "the model takes {} inputs, {} given",
            specs.len(),
            inputs.len()
        )));
    }
    for (spec, data) in specs.iter().zip(inputs) {
        let size = spec.byte_size().unwrap_or(u64::MAX);
        let buf = buffers.get_mut(usize::from(spec.segment)).and_then(Option::as_mut);
        match buf {
            Some((b, _)) if data.len() as u64 == size && spec.offset + size <= b.len() as u64 => {
                b[spec.offset as usize..(spec.offset + size) as usize].copy_from_slice(data);
            }
            _ => {
                return Err(ModelError::Inputs(format!(
                    "input `{}` is {size} bytes; {} given",
                    spec.name,
                    data.len()
                )));
            }
        }
    }
    let mut segs: Segments<'_> = Default::default();
    for (slot, buf) in segs.iter_mut().zip(buffers.iter_mut()) {
        if let Some((data, writable)) = buf {
            *slot = Some(Segment { data: data.as_mut_slice(), writable: *writable });
        }
    }
    let mut sim = Simulator::new(cfg);
    let opts = RunOptions {
        timing: true,
        trace,
        max_cycles: Some(report.cycle_bound.max(1)),
        deadline: None,
    };
    let stats =
        sim.run(&program, &mut segs, opts).map_err(|f| ModelError::Job(JobStatus::Faulted(f)))?;
    let mut outs = Vec::new();
    for spec in blob.io.iter().filter(|t| t.direction == Direction::Output) {
        let size = spec.byte_size().unwrap_or(0);
        let b = buffers
            .get(usize::from(spec.segment))
            .and_then(Option::as_ref)
            .filter(|(b, _)| spec.offset + size <= b.len() as u64)
            .ok_or_else(|| {
                ModelError::Inputs(format!("output `{}` is outside its segment", spec.name))
            })?;
        outs.push(b.0[spec.offset as usize..(spec.offset + size) as usize].to_vec());
    }
    Ok((outs, stats))
}
