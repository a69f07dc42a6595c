//! Running a blob through the driver model: load (target check, program created and validated
//! by the driver, constants uploaded once), then per run bind buffer objects, submit, wait on
//! the fence and read the outputs.

use accelc_compiler::ir::DType;
use accelc_isa::blob::{Blob, Direction, IoTensor};
use accelc_isa::{DeviceConfig, Dtype};
use accelc_runtime::driver::{Device, DeviceOptions};
use accelc_runtime::model::{Model, ModelError};
use accelc_runtime::sim::RunStats;

use crate::{Error, HostTensor};

/// A blob loaded onto a simulated device.
#[derive(Debug)]
pub struct Session {
    model: Model,
    config: DeviceConfig,
    io: Vec<IoTensor>,
    blob: Vec<u8>,
}

/// A run's outputs (in signature order) and the job's counters.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Output tensors, in the blob's signature order.
    pub outputs: Vec<HostTensor>,
    /// Cycles, per-engine counters and (for traced runs) the trace.
    pub stats: RunStats,
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
        let parsed = Blob::read(&blob).map_err(|e| Error::Blob(format!("malformed blob: {e}")))?;
        let config = match config {
            Some(c) => c,
            None => DeviceConfig::by_name(&parsed.target.config_name).ok_or_else(|| {
                Error::Blob(format!(
                    "the blob targets `{}`, which is not a built-in device configuration \
                     (load it with the configuration it was compiled for)",
                    parsed.target.config_name
                ))
            })?,
        };
        let device = Device::open_with(config.clone(), opts);
        let model = Model::load_blob(&device, &parsed).map_err(driver_err)?;
        let io = parsed.io.clone();
        drop(parsed);
        Ok(Session { model, config, io, blob })
    }

    /// The device configuration it runs on.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The blob's bytes.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// Input descriptors, in signature order.
    pub fn inputs(&self) -> Vec<&IoTensor> {
        self.io.iter().filter(|t| t.direction == Direction::Input).collect()
    }

    /// Output descriptors, in signature order.
    pub fn outputs(&self) -> Vec<&IoTensor> {
        self.io.iter().filter(|t| t.direction == Direction::Output).collect()
    }

    /// Runs on `inputs` (in signature order, each of the descriptor's type and dimensions).
    pub fn run(&self, inputs: &[HostTensor]) -> Result<RunResult, Error> {
        self.run_with(inputs, false)
    }

    /// As [`Session::run`], recording a trace event per instruction (for profiles).
    pub fn run_with(&self, inputs: &[HostTensor], trace: bool) -> Result<RunResult, Error> {
        let specs = self.inputs();
        if specs.len() != inputs.len() {
            return Err(Error::Input(format!(
                "the model takes {} inputs, {} given",
                specs.len(),
                inputs.len()
            )));
        }
        for (s, t) in specs.iter().zip(inputs) {
            let dims: Vec<usize> = s.dims.iter().map(|d| *d as usize).collect();
            if io_dtype(s) != Some(t.dtype) || dims != t.dims {
                let takes = io_dtype(s).map_or_else(|| s.dtype.to_string(), |d| d.to_string());
                return Err(Error::Input(format!(
                    "input `{}` is {}{:?}; the model takes {takes}{:?}",
                    s.name, t.dtype, t.dims, dims
                )));
            }
        }
        let refs: Vec<&[u8]> = inputs.iter().map(|t| t.data.as_slice()).collect();
        let out = self.model.run_with(&refs, trace).map_err(driver_err)?;
        let mut outputs = Vec::new();
        for (spec, data) in self.outputs().iter().zip(out.tensors) {
            let dtype = io_dtype(spec).ok_or_else(|| {
                Error::Blob(format!("output `{}` has device type {}", spec.name, spec.dtype))
            })?;
            let dims = spec.dims.iter().map(|d| *d as usize).collect();
            // A boolean output holding another byte means the blob's program does not compute
            // what its I/O table says: the blob is at fault, not the caller.
            outputs.push(HostTensor::new(dtype, dims, data).map_err(|e| {
                Error::Blob(format!("output `{}`: {e} (the blob marks it boolean)", spec.name))
            })?);
        }
        Ok(RunResult { outputs, stats: out.stats })
    }
}
