//! Running a blob through the driver model: load (target check, program created and validated
//! by the driver, constants uploaded once), then per run bind buffer objects, submit, wait on
//! the fence and read the outputs. A plan blob (format 2: device programs and host code) loads
//! each program the same way and JIT-compiles its host module (`accelc-host`); a run walks the
//! plan, submitting a device job and waiting on its fence, or calling a host function on the
//! tensors, step by step.

use std::time::{Duration, Instant};

use accelc_compiler::ir::DType;
use accelc_isa::blob::{Blob, Direction, IoTensor};
use accelc_isa::plan::{PlanBlob, StepKind, is_plan};
use accelc_isa::{DeviceConfig, Dtype};
use accelc_runtime::driver::{Device, DeviceOptions};
use accelc_runtime::model::{Model, ModelError};
use accelc_runtime::sim::RunStats;

use crate::{Error, HostTensor};

/// A model input or output as a caller sees it: name, host data type and dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The model's name for it.
    pub name: String,
    /// Its data type.
    pub dtype: DType,
    /// Its dimensions.
    pub dims: Vec<usize>,
}

/// A blob loaded onto a simulated device.
#[derive(Debug)]
pub struct Session {
    exec: Exec,
    config: DeviceConfig,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    blob: Vec<u8>,
}

#[derive(Debug)]
enum Exec {
    /// One device program.
    Device(Box<Model>),
    /// A plan of device jobs and host calls.
    Plan(Box<Plan>),
}

/// A loaded plan: the programs on one device, the compiled host module, the steps.
#[derive(Debug)]
struct Plan {
    models: Vec<Model>,
    host: Option<accelc_host::HostModule>,
    /// How long the host module took to lower and JIT-compile.
    host_compile: Duration,
    /// Graph node index to name, for host run-time errors (the blob's `host_nodes` metadata).
    node_names: std::collections::HashMap<i64, String>,
    tensors: Vec<TensorSpec>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    steps: Vec<(StepKind, String, Vec<usize>, Vec<usize>)>,
}

/// One step of a plan's run: a device job's counters, or a host call's wall time.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRun {
    /// The step: the host function, or the device job's label.
    pub name: String,
    /// For a device job, the index of its program in the plan blob, and its counters (with
    /// the trace on a traced run).
    pub device: Option<(u32, RunStats)>,
    /// For a host call, the wall time of the call (the JIT-compiled code on this machine's
    /// CPU).
    pub host_time: Option<Duration>,
}

/// A run's outputs (in signature order) and the job's counters.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Output tensors, in the blob's signature order.
    pub outputs: Vec<HostTensor>,
    /// Cycles, per-engine counters and (for traced runs) the trace; for a plan, the device
    /// jobs' cycles and counters summed (the trace is the last job's; each job's is in
    /// `steps`).
    pub stats: RunStats,
    /// For a plan, every step in execution order (empty otherwise).
    pub steps: Vec<StepRun>,
}

/// The host (IR) type of a blob I/O tensor: its device element type, read as `bool` when the
/// blob marks the bytes boolean ([`IoTensor::boolean`]); `None` for device-only types.
pub fn io_dtype(t: &IoTensor) -> Option<DType> {
    if t.boolean {
        return (t.dtype == Dtype::U8).then_some(DType::Bool);
    }
    host_dtype(t.dtype)
}

/// The IR type of a device tensor type (the blob's I/O descriptors carry the device's).
pub fn host_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::S8 => DType::I8,
        Dtype::U8 => DType::U8,
        Dtype::S32 => DType::I32,
        Dtype::S16 | Dtype::Bf16 => return None,
    })
}

fn driver_err(e: ModelError) -> Error {
    match e {
        ModelError::Job(_) => Error::Device(e.to_string()),
        ModelError::Inputs(m) => Error::Input(m),
        _ => Error::Blob(e.to_string()),
    }
}

fn spec(t: &IoTensor) -> Result<TensorSpec, Error> {
    let dtype = io_dtype(t).ok_or_else(|| {
        Error::Blob(format!("`{}` has device type {}, which has no host type", t.name, t.dtype))
    })?;
    Ok(TensorSpec {
        name: t.name.clone(),
        dtype,
        dims: t.dims.iter().map(|d| *d as usize).collect(),
    })
}

/// A blob's inputs and outputs (signature order), from a format-1 blob's I/O table or a plan
/// blob's signature, without loading it.
///
/// Errors: [`Error::Blob`] for a malformed blob or an I/O tensor of a device-only type.
pub fn blob_signature(blob: &[u8]) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>), Error> {
    let malformed = |e: accelc_isa::blob::BlobError| Error::Blob(format!("malformed blob: {e}"));
    if is_plan(blob) {
        let p = PlanBlob::read(blob).map_err(malformed)?;
        let spec = |i: &u32| -> Result<TensorSpec, Error> {
            let t = &p.tensors[*i as usize];
            Ok(TensorSpec {
                name: t.name.clone(),
                dtype: DType::from_onnx(i32::from(t.onnx_type)).ok_or_else(|| {
                    Error::Blob(format!("plan tensor `{}` has type {}", t.name, t.onnx_type))
                })?,
                dims: t.dims.iter().map(|d| *d as usize).collect(),
            })
        };
        let ins = p.inputs.iter().map(spec).collect::<Result<_, _>>()?;
        let outs = p.outputs.iter().map(spec).collect::<Result<_, _>>()?;
        return Ok((ins, outs));
    }
    let b = Blob::read(blob).map_err(malformed)?;
    let side = |d: Direction| -> Result<Vec<TensorSpec>, Error> {
        b.io.iter().filter(|t| t.direction == d).map(spec).collect()
    };
    Ok((side(Direction::Input)?, side(Direction::Output)?))
}

fn host_elem(d: DType) -> accelc_host::Elem {
    match d {
        DType::F32 => accelc_host::Elem::F32,
        DType::I8 | DType::U8 | DType::Bool => accelc_host::Elem::I8,
        DType::I16 | DType::U16 => accelc_host::Elem::I16,
        DType::I32 | DType::U32 => accelc_host::Elem::I32,
        DType::I64 | DType::U64 => accelc_host::Elem::I64,
        DType::F64 => accelc_host::Elem::F64,
        DType::F16 => accelc_host::Elem::F16,
        DType::BF16 => accelc_host::Elem::BF16,
    }
}

impl Session {
    /// Loads a blob onto a new simulated device of the configuration it was built for.
    ///
    /// Errors: [`Error::Blob`] when the blob is malformed (with the byte offset), names no
    /// built-in configuration, was built for another fingerprint, or its program is rejected.
    pub fn new(blob: Vec<u8>) -> Result<Session, Error> {
        Session::with_options(blob, DeviceOptions::default())
    }

    /// As [`Session::new`], on a device with policy `opts` (its job cycle limit and watchdog
    /// timeout); a program whose run-time bound exceeds the limit is an [`Error::Blob`].
    pub fn with_options(blob: Vec<u8>, opts: DeviceOptions) -> Result<Session, Error> {
        Session::open(blob, None, opts)
    }

    /// Loads a blob onto a new simulated device of configuration `config` (one built at run
    /// time: blobs record the parameters a program's validity depends on, not the timing, so
    /// a blob for a custom configuration is loaded with that configuration).
    ///
    /// Errors: [`Error::Input`] when `config` is out of range ([`DeviceConfig::validate`]),
    /// [`Error::Blob`] when the blob is malformed, was built for a device with other
    /// parameters (the fingerprint differs) or its program is rejected.
    pub fn with_config(
        blob: Vec<u8>,
        config: DeviceConfig,
        opts: DeviceOptions,
    ) -> Result<Session, Error> {
        config.validate().map_err(|e| Error::Input(format!("device configuration: {e}")))?;
        Session::open(blob, Some(config), opts)
    }

    fn open(
        blob: Vec<u8>,
        config: Option<DeviceConfig>,
        opts: DeviceOptions,
    ) -> Result<Session, Error> {
        let by_name = |name: &str| {
            DeviceConfig::by_name(name).ok_or_else(|| {
                Error::Blob(format!(
                    "the blob targets `{name}`, which is not a built-in device configuration \
                     (load it with the configuration it was compiled for)"
                ))
            })
        };
        if is_plan(&blob) {
            let parsed =
                PlanBlob::read(&blob).map_err(|e| Error::Blob(format!("malformed blob: {e}")))?;
            let config = match config {
                Some(c) => c,
                None => by_name(&parsed.target.config_name)?,
            };
            let plan = Plan::load(&parsed, &config, opts)?;
            let inputs = plan.inputs.iter().map(|i| plan.tensors[*i].clone()).collect();
            let outputs = plan.outputs.iter().map(|i| plan.tensors[*i].clone()).collect();
            drop(parsed);
            return Ok(Session { exec: Exec::Plan(Box::new(plan)), config, inputs, outputs, blob });
        }
        let parsed = Blob::read(&blob).map_err(|e| Error::Blob(format!("malformed blob: {e}")))?;
        let config = match config {
            Some(c) => c,
            None => by_name(&parsed.target.config_name)?,
        };
        let device = Device::open_with(config.clone(), opts);
        let model = Model::load_blob(&device, &parsed).map_err(driver_err)?;
        let specs = |d: Direction| -> Result<Vec<TensorSpec>, Error> {
            parsed.io.iter().filter(|t| t.direction == d).map(spec).collect()
        };
        let (inputs, outputs) = (specs(Direction::Input)?, specs(Direction::Output)?);
        drop(parsed);
        Ok(Session { exec: Exec::Device(Box::new(model)), config, inputs, outputs, blob })
    }

    /// For a plan blob, how long its host module took to lower and JIT-compile when it
    /// loaded (zero otherwise).
    pub fn host_compile_time(&self) -> Duration {
        match &self.exec {
            Exec::Plan(p) => p.host_compile,
            Exec::Device(_) => Duration::ZERO,
        }
    }

    /// Whether the blob is a plan with host steps (format 2).
    pub fn is_plan(&self) -> bool {
        matches!(self.exec, Exec::Plan(_))
    }

    /// The device configuration it runs on.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The blob's bytes.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The inputs, in signature order.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// The outputs, in signature order.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// Runs on `inputs` (in signature order, each of the descriptor's type and dimensions).
    pub fn run(&self, inputs: &[HostTensor]) -> Result<RunResult, Error> {
        self.run_with(inputs, false)
    }

    /// As [`Session::run`], recording a trace event per instruction (for profiles).
    pub fn run_with(&self, inputs: &[HostTensor], trace: bool) -> Result<RunResult, Error> {
        let specs = &self.inputs;
        if specs.len() != inputs.len() {
            return Err(Error::Input(format!(
                "the model takes {} inputs, {} given",
                specs.len(),
                inputs.len()
            )));
        }
        for (s, t) in specs.iter().zip(inputs) {
            if s.dtype != t.dtype || s.dims != t.dims {
                return Err(Error::Input(format!(
                    "input `{}` is {}{:?}; the model takes {}{:?}",
                    s.name, t.dtype, t.dims, s.dtype, s.dims
                )));
            }
        }
        match &self.exec {
            Exec::Device(model) => {
                let refs: Vec<&[u8]> = inputs.iter().map(|t| t.data.as_slice()).collect();
                let out = model.run_with(&refs, trace).map_err(driver_err)?;
                let outputs = self.wrap_outputs(&self.outputs, out.tensors)?;
                Ok(RunResult { outputs, stats: out.stats, steps: Vec::new() })
            }
            Exec::Plan(plan) => plan.run(inputs, trace),
        }
    }

    fn wrap_outputs(
        &self,
        specs: &[TensorSpec],
        data: Vec<Vec<u8>>,
    ) -> Result<Vec<HostTensor>, Error> {
        let mut outputs = Vec::new();
        for (spec, data) in specs.iter().zip(data) {
            // A boolean output holding another byte means the blob's program does not compute
            // what its I/O table says: the blob is at fault, not the caller.
            outputs.push(HostTensor::new(spec.dtype, spec.dims.clone(), data).map_err(|e| {
                Error::Blob(format!("output `{}`: {e} (the blob marks it boolean)", spec.name))
            })?);
        }
        Ok(outputs)
    }
}

impl Plan {
    /// Loads every program onto one device and compiles the host module.
    fn load(p: &PlanBlob<'_>, config: &DeviceConfig, opts: DeviceOptions) -> Result<Plan, Error> {
        let tensors = p
            .tensors
            .iter()
            .map(|t| {
                let dtype = DType::from_onnx(i32::from(t.onnx_type)).ok_or_else(|| {
                    Error::Blob(format!("plan tensor `{}` has type {}", t.name, t.onnx_type))
                })?;
                Ok(TensorSpec {
                    name: t.name.clone(),
                    dtype,
                    dims: t.dims.iter().map(|d| *d as usize).collect(),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let device = Device::open_with(config.clone(), opts);
        let mut models = Vec::new();
        for (k, bytes) in p.programs.iter().enumerate() {
            let b = Blob::read(bytes)
                .map_err(|e| Error::Blob(format!("malformed blob: program {k}: {e}")))?;
            models.push(
                Model::load_blob(&device, &b)
                    .map_err(|e| Error::Blob(format!("program {k}: {}", driver_err(e))))?,
            );
        }
        let us = |v: &[u32]| v.iter().map(|i| *i as usize).collect::<Vec<_>>();
        let mut functions = Vec::new();
        let mut steps = Vec::new();
        for s in &p.steps {
            let (ins, outs) = (us(&s.inputs), us(&s.outputs));
            match s.kind {
                StepKind::Device { program } => {
                    // The program's signature must be the step's tensors, in order.
                    let m = &models[program as usize];
                    let check = |want: Vec<&IoTensor>, have: &[usize], what: &str| {
                        let names: Vec<&str> = want.iter().map(|t| t.name.as_str()).collect();
                        let got: Vec<&str> =
                            have.iter().map(|i| tensors[*i].name.as_str()).collect();
                        let types_ok = want.iter().zip(have).all(|(t, i)| {
                            spec(t).is_ok_and(|sp| {
                                sp.dtype == tensors[*i].dtype && sp.dims == tensors[*i].dims
                            })
                        });
                        if names != got || !types_ok {
                            let theirs: Vec<String> = want
                                .iter()
                                .map(|t| format!("{} {}{:?}", t.name, t.dtype, t.dims))
                                .collect();
                            let ours: Vec<String> = have
                                .iter()
                                .map(|i| {
                                    let t = &tensors[*i];
                                    format!("{} {}{:?}", t.name, t.dtype, t.dims)
                                })
                                .collect();
                            return Err(Error::Blob(format!(
                                "step `{}`: program {program} {what} {theirs:?}, the plan passes {ours:?}",
                                s.name
                            )));
                        }
                        Ok(())
                    };
                    check(m.inputs().collect(), &ins, "reads")?;
                    check(m.outputs().collect(), &outs, "writes")?;
                }
                StepKind::Host => {
                    let mut args: Vec<accelc_host::ArgSpec> = ins
                        .iter()
                        .chain(&outs)
                        .map(|i| accelc_host::ArgSpec {
                            dims: accelc_compiler::lower::host::arg_dims(&tensors[*i].dims),
                            elem: host_elem(tensors[*i].dtype),
                        })
                        .collect();
                    args.push(accelc_host::ArgSpec { dims: vec![2], elem: accelc_host::Elem::I64 });
                    functions.push(accelc_host::FunctionSpec { name: s.name.clone(), args });
                }
            }
            steps.push((s.kind, s.name.clone(), ins, outs));
        }
        let started = Instant::now();
        let host = if functions.is_empty() {
            None
        } else {
            Some(
                accelc_host::HostModule::compile(&p.host, &functions)
                    .map_err(|e| Error::Blob(format!("host module: {e}")))?,
            )
        };
        let host_compile = started.elapsed();
        let node_names = p
            .meta
            .iter()
            .filter(|(k, _)| k == "host_nodes")
            .flat_map(|(_, v)| v.lines())
            .filter_map(|l| {
                let (i, name) = l.split_once(' ')?;
                Some((i.parse().ok()?, name.to_string()))
            })
            .collect();
        Ok(Plan {
            models,
            host,
            host_compile,
            node_names,
            tensors,
            inputs: us(&p.inputs),
            outputs: us(&p.outputs),
            steps,
        })
    }

    fn run(&self, inputs: &[HostTensor], trace: bool) -> Result<RunResult, Error> {
        let mut values: Vec<Option<Vec<u8>>> = vec![None; self.tensors.len()];
        for (i, t) in self.inputs.iter().zip(inputs) {
            values[*i] = Some(t.data.clone());
        }
        let mut stats = RunStats::default();
        let mut steps = Vec::new();
        let missing = |i: usize| {
            Error::Internal(format!("plan tensor `{}` is not written", self.tensors[i].name))
        };
        for (kind, name, ins, outs) in &self.steps {
            match kind {
                StepKind::Device { program } => {
                    let refs: Vec<&[u8]> = ins
                        .iter()
                        .map(|i| values[*i].as_deref().ok_or_else(|| missing(*i)))
                        .collect::<Result<_, _>>()?;
                    let out =
                        self.models[*program as usize].run_with(&refs, trace).map_err(|e| {
                            match driver_err(e) {
                                Error::Device(m) => Error::Device(format!("step `{name}`: {m}")),
                                other => other,
                            }
                        })?;
                    stats.cycles += out.stats.cycles;
                    for (a, b) in stats.engines.iter_mut().zip(&out.stats.engines) {
                        a.insts += b.insts;
                        a.busy += b.busy;
                        a.stall_sem += b.stall_sem;
                        a.stall_barrier += b.stall_barrier;
                        a.stall_dma_slots += b.stall_dma_slots;
                        a.bytes += b.bytes;
                        a.macs += b.macs;
                    }
                    if trace {
                        stats.trace = out.stats.trace.clone();
                    }
                    steps.push(StepRun {
                        name: name.clone(),
                        device: Some((*program, out.stats)),
                        host_time: None,
                    });
                    for (i, data) in outs.iter().zip(out.tensors) {
                        values[*i] = Some(data);
                    }
                }
                StepKind::Host => {
                    let host = self
                        .host
                        .as_ref()
                        .ok_or_else(|| Error::Internal("no host module".into()))?;
                    let mut bufs: Vec<accelc_host::Buffer> =
                        Vec::with_capacity(ins.len() + outs.len() + 1);
                    for i in ins {
                        bufs.push(accelc_host::Buffer::from_bytes(
                            values[*i].as_deref().ok_or_else(|| missing(*i))?,
                        ));
                    }
                    for i in outs {
                        let t = &self.tensors[*i];
                        let bytes = t.dims.iter().product::<usize>() * t.dtype.size();
                        bufs.push(accelc_host::Buffer::zeroed(bytes));
                    }
                    bufs.push(accelc_host::Buffer::zeroed(16));
                    let mut refs: Vec<&mut accelc_host::Buffer> = bufs.iter_mut().collect();
                    let started = Instant::now();
                    host.call(name, &mut refs)
                        .map_err(|e| Error::Blob(format!("step `{name}`: {e}")))?;
                    steps.push(StepRun {
                        name: name.clone(),
                        device: None,
                        host_time: Some(started.elapsed()),
                    });
                    let status = bufs.pop().map(|b| b.as_bytes().to_vec()).unwrap_or_default();
                    let word = |k: usize| {
                        status
                            .get(8 * k..8 * k + 8)
                            .map_or(0, |w| i64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
                    };
                    if word(0) != 0 {
                        let node = self
                            .node_names
                            .get(&word(1))
                            .map_or_else(|| format!("node {}", word(1)), |n| format!("node `{n}`"));
                        return Err(Error::Input(format!(
                            "host step `{name}`, {node}: {}",
                            accelc_compiler::lower::host::status_message(word(0))
                        )));
                    }
                    for (i, b) in outs.iter().zip(bufs.into_iter().skip(ins.len())) {
                        values[*i] = Some(b.as_bytes().to_vec());
                    }
                }
            }
        }
        let mut outputs = Vec::new();
        for i in &self.outputs {
            let t = &self.tensors[*i];
            let data = values[*i].clone().ok_or_else(|| missing(*i))?;
            outputs.push(
                HostTensor::new(t.dtype, t.dims.clone(), data)
                    .map_err(|e| Error::Blob(format!("output `{}`: {e}", t.name)))?,
            );
        }
        Ok(RunResult { outputs, stats, steps })
    }
}
