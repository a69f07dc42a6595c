//! `accelc._native`: the Python extension module over the `accelc` facade. It converts and
//! nothing else: tensors cross as `(dtype, shape, bytes)` triples that the pure-Python layer
//! (`python/accelc/`) turns into numpy arrays, configurations as [`PyDeviceConfig`], errors as
//! the exception hierarchy below carrying the facade's messages (node, byte offset, line and
//! column) unchanged. Every compile, run and profile releases the GIL.

use std::path::PathBuf;

use accelc::{DType, DeviceConfig, Error, HostTensor, Options, Session, Source};
use accelc_isa::blob::{Direction, IoTensor};
use accelc_runtime::driver::DeviceOptions;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

create_exception!(accelc._native, AccelcError, PyException, "Base of every accelc error.");
create_exception!(
    accelc._native,
    ModelError,
    AccelcError,
    "The model cannot be read, imported or processed (the message names the node, byte or line)."
);
create_exception!(
    accelc._native,
    UnsupportedError,
    ModelError,
    "The model imports but the device cannot run it (the node and the constraint)."
);
create_exception!(
    accelc._native,
    BlobError,
    AccelcError,
    "A blob is malformed, built for other hardware, or rejected by the driver."
);
create_exception!(accelc._native, DeviceError, AccelcError, "The device faulted or timed out.");
create_exception!(
    accelc._native,
    InputError,
    AccelcError,
    "Inputs, options or a device configuration do not fit (names what and why)."
);
create_exception!(
    accelc._native,
    InternalError,
    AccelcError,
    "An inconsistency accelc found in itself: a bug, please report it."
);

/// The facade's error as the exception of its kind, with its message.
fn py_err(e: Error) -> PyErr {
    let m = e.to_string();
    match e {
        Error::Model(_) => ModelError::new_err(m),
        Error::Unsupported(_) => UnsupportedError::new_err(m),
        Error::Blob(_) => BlobError::new_err(m),
        Error::Device(_) => DeviceError::new_err(m),
        Error::Input(_) => InputError::new_err(m),
        Error::Internal(_) => InternalError::new_err(m),
        Error::Io(_) => pyo3::exceptions::PyOSError::new_err(m),
    }
}

/// A model given from Python: a path, binary ONNX or the ONNX text syntax.
#[derive(FromPyObject)]
enum ModelArg {
    #[pyo3(transparent)]
    Bytes(Vec<u8>),
    #[pyo3(transparent)]
    Path(PathBuf),
}

impl ModelArg {
    /// Binary ONNX bytes, or text when they start (after blanks) with `<`.
    fn source(&self) -> Source<'_> {
        match self {
            ModelArg::Path(p) => Source::Path(p),
            ModelArg::Bytes(b) => {
                let first = b.iter().find(|c| !c.is_ascii_whitespace());
                match (first, std::str::from_utf8(b)) {
                    (Some(b'<'), Ok(text)) => Source::Text(text),
                    _ => Source::Onnx(b),
                }
            }
        }
    }
}

/// numpy's dtype string for an IR type (`<f4`, `|b1`, ...).
fn numpy_dtype(d: DType) -> &'static str {
    accelc::npy::descr(d)
}

fn dtype_from_numpy(s: &str) -> PyResult<DType> {
    accelc::npy::from_descr(s).ok_or_else(|| {
        InputError::new_err(format!(
            "numpy dtype `{s}` is not one accelc supports (float32, int8, uint8, int32, int64, \
             bool, little-endian)"
        ))
    })
}

/// One tensor as it crosses: numpy dtype string, shape, raw little-endian row-major bytes.
type Wire = (String, Vec<usize>, Vec<u8>);

fn from_wire((dtype, dims, data): Wire) -> PyResult<HostTensor> {
    HostTensor::new(dtype_from_numpy(&dtype)?, dims, data).map_err(py_err)
}

/// A tensor on its way out: as [`Wire`], the bytes as a Python `bytes` object.
type OutWire<'py> = (String, Vec<usize>, Bound<'py, PyBytes>);

/// A node's check: name, op type, stage, why not on the device, placement.
type CheckRow = (String, String, String, Option<String>, Option<String>);

/// A layer as compiled: name, kind, MACs, minimum DRAM bytes, roofline cycles.
type LayerRow = (String, String, u64, u64, u64);

fn to_wire<'py>(py: Python<'py>, t: &HostTensor) -> OutWire<'py> {
    (numpy_dtype(t.dtype).to_string(), t.dims.clone(), PyBytes::new(py, &t.data))
}

/// A model input or output: name, host type (`None` for a device-only type), dimensions.
#[derive(Clone, Debug)]
struct Io {
    name: String,
    input: bool,
    dtype: Option<accelc::DType>,
    dims: Vec<u64>,
}

impl Io {
    /// From a format-1 blob's I/O descriptor.
    fn from_blob(t: &IoTensor) -> Io {
        Io {
            name: t.name.clone(),
            input: t.direction == Direction::Input,
            dtype: accelc::io_dtype(t),
            dims: t.dims.clone(),
        }
    }

    /// From a plan blob's signature (every tensor has a host type there).
    fn from_plan(p: &accelc_isa::plan::PlanBlob<'_>) -> Vec<Io> {
        let one = |i: &u32, input: bool| {
            let t = &p.tensors[*i as usize];
            Io {
                name: t.name.clone(),
                input,
                dtype: accelc::DType::from_onnx(i32::from(t.onnx_type)),
                dims: t.dims.clone(),
            }
        };
        p.inputs
            .iter()
            .map(|i| one(i, true))
            .chain(p.outputs.iter().map(|i| one(i, false)))
            .collect()
    }
}

/// An I/O tensor's description: name, numpy dtype string (`None` for a device-only type),
/// shape.
fn describe(t: &Io) -> (String, Option<&'static str>, Vec<u64>) {
    (t.name.clone(), t.dtype.map(numpy_dtype), t.dims.clone())
}

/// The optimizer level from 0, 1 or 2.
fn level(opt_level: u8) -> PyResult<accelc::Level> {
    accelc::Level::from_number(opt_level)
        .ok_or_else(|| InputError::new_err(format!("opt_level {opt_level}: must be 0, 1 or 2")))
}

/// A device configuration: a built-in one or one built at run time.
#[pyclass(name = "DeviceConfig", module = "accelc._native", frozen, eq, skip_from_py_object)]
#[derive(Clone, PartialEq)]
struct PyDeviceConfig {
    inner: DeviceConfig,
}

#[pymethods]
impl PyDeviceConfig {
    /// A configuration called `name`: `base` (a built-in's name) with the given fields
    /// changed. Units: bytes, Hz, bytes per second, cycles. Raises `InputError` naming the
    /// first field out of range (see the book's configuration page for the limits).
    #[new]
    #[pyo3(signature = (name, *, base = "default", array_dim = None, vx_lanes = None,
        spad_bytes = None, acc_bytes = None, clock_hz = None, dram_bytes_per_sec = None,
        dram_read_latency = None, dram_write_latency = None, dram_burst_bytes = None,
        sram_bytes_per_cycle = None, features = None, array_row_cycles = None))]
    #[allow(clippy::too_many_arguments, reason = "one keyword per configuration field")]
    fn new(
        name: String,
        base: &str,
        array_dim: Option<u32>,
        vx_lanes: Option<u32>,
        spad_bytes: Option<u32>,
        acc_bytes: Option<u32>,
        clock_hz: Option<u64>,
        dram_bytes_per_sec: Option<u64>,
        dram_read_latency: Option<u32>,
        dram_write_latency: Option<u32>,
        dram_burst_bytes: Option<u32>,
        sram_bytes_per_cycle: Option<u32>,
        features: Option<u32>,
        array_row_cycles: Option<u32>,
    ) -> PyResult<PyDeviceConfig> {
        let mut c = accelc::config(base).map_err(py_err)?;
        c.name = name;
        c.array_dim = array_dim.unwrap_or(c.array_dim);
        c.vx_lanes = vx_lanes.unwrap_or(c.vx_lanes);
        c.spad_bytes = spad_bytes.unwrap_or(c.spad_bytes);
        c.acc_bytes = acc_bytes.unwrap_or(c.acc_bytes);
        c.clock_hz = clock_hz.unwrap_or(c.clock_hz);
        c.dram_bytes_per_sec = dram_bytes_per_sec.unwrap_or(c.dram_bytes_per_sec);
        c.dram_read_latency = dram_read_latency.unwrap_or(c.dram_read_latency);
        c.dram_write_latency = dram_write_latency.unwrap_or(c.dram_write_latency);
        c.dram_burst_bytes = dram_burst_bytes.unwrap_or(c.dram_burst_bytes);
        c.sram_bytes_per_cycle = sram_bytes_per_cycle.unwrap_or(c.sram_bytes_per_cycle);
        c.features = features.unwrap_or(c.features);
        c.array_row_cycles = array_row_cycles.unwrap_or(c.array_row_cycles);
        c.validate()
            .map_err(|e| InputError::new_err(format!("device configuration `{}`: {e}", c.name)))?;
        // Blobs name their configuration; a custom one under a built-in's name would load as
        // the built-in and be refused.
        if DeviceConfig::by_name(&c.name).is_some_and(|b| b != c) {
            return Err(InputError::new_err(format!(
                "`{}` is a built-in configuration's name; give a configuration with other \
                 parameters another name",
                c.name
            )));
        }
        Ok(PyDeviceConfig { inner: c })
    }

    /// The built-in configuration called `name`.
    #[staticmethod]
    fn builtin(name: &str) -> PyResult<PyDeviceConfig> {
        Ok(PyDeviceConfig { inner: accelc::config(name).map_err(py_err)? })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }
    #[getter]
    fn array_dim(&self) -> u32 {
        self.inner.array_dim
    }
    #[getter]
    fn vx_lanes(&self) -> u32 {
        self.inner.vx_lanes
    }
    #[getter]
    fn spad_bytes(&self) -> u32 {
        self.inner.spad_bytes
    }
    #[getter]
    fn acc_bytes(&self) -> u32 {
        self.inner.acc_bytes
    }
    #[getter]
    fn clock_hz(&self) -> u64 {
        self.inner.clock_hz
    }
    #[getter]
    fn dram_bytes_per_sec(&self) -> u64 {
        self.inner.dram_bytes_per_sec
    }
    #[getter]
    fn dram_read_latency(&self) -> u32 {
        self.inner.dram_read_latency
    }
    #[getter]
    fn dram_write_latency(&self) -> u32 {
        self.inner.dram_write_latency
    }
    #[getter]
    fn dram_burst_bytes(&self) -> u32 {
        self.inner.dram_burst_bytes
    }
    #[getter]
    fn sram_bytes_per_cycle(&self) -> u32 {
        self.inner.sram_bytes_per_cycle
    }
    #[getter]
    fn features(&self) -> u32 {
        self.inner.features
    }

    #[getter]
    fn array_row_cycles(&self) -> u32 {
        self.inner.array_row_cycles
    }

    /// Peak multiply-accumulates per second of the matrix engine for `dtype` (`"int8"`,
    /// `"bf16"` or `"float32"`; 0 when the device does not multiply it).
    fn peak_macs_per_sec(&self, dtype: &str) -> PyResult<u64> {
        Ok(self.inner.peak_macs_per_sec(device_dtype(dtype)?))
    }

    /// The roofline ridge point for `dtype`: operations (2 per MAC) per DRAM byte.
    fn ridge_ops_per_byte(&self, dtype: &str) -> PyResult<f64> {
        Ok(self.inner.ridge_ops_per_byte(device_dtype(dtype)?))
    }

    /// Pickling (protocol 2 and later): the name and every field, rebuilt by the constructor.
    #[allow(clippy::type_complexity, reason = "pickle's (args, kwargs) pair")]
    fn __getnewargs_ex__(&self) -> ((String,), std::collections::HashMap<&'static str, u64>) {
        let c = &self.inner;
        let fields = [
            ("array_dim", u64::from(c.array_dim)),
            ("vx_lanes", u64::from(c.vx_lanes)),
            ("spad_bytes", u64::from(c.spad_bytes)),
            ("acc_bytes", u64::from(c.acc_bytes)),
            ("clock_hz", c.clock_hz),
            ("dram_bytes_per_sec", c.dram_bytes_per_sec),
            ("dram_read_latency", u64::from(c.dram_read_latency)),
            ("dram_write_latency", u64::from(c.dram_write_latency)),
            ("dram_burst_bytes", u64::from(c.dram_burst_bytes)),
            ("sram_bytes_per_cycle", u64::from(c.sram_bytes_per_cycle)),
            ("features", u64::from(c.features)),
            ("array_row_cycles", u64::from(c.array_row_cycles)),
        ];
        ((c.name.clone(),), fields.into_iter().collect())
    }

    fn __repr__(&self) -> String {
        let c = &self.inner;
        format!(
            "DeviceConfig(name={:?}, array_dim={}, vx_lanes={}, spad_bytes={}, acc_bytes={}, \
             clock_hz={}, dram_bytes_per_sec={}, dram_read_latency={}, dram_write_latency={}, \
             dram_burst_bytes={}, sram_bytes_per_cycle={}, features={:#x}, \
             array_row_cycles={})",
            c.name,
            c.array_dim,
            c.vx_lanes,
            c.spad_bytes,
            c.acc_bytes,
            c.clock_hz,
            c.dram_bytes_per_sec,
            c.dram_read_latency,
            c.dram_write_latency,
            c.dram_burst_bytes,
            c.sram_bytes_per_cycle,
            c.features,
            c.array_row_cycles
        )
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }
}

fn device_dtype(s: &str) -> PyResult<accelc_isa::Dtype> {
    use accelc_isa::Dtype;
    Ok(match s {
        "int8" | "s8" => Dtype::S8,
        "uint8" | "u8" => Dtype::U8,
        "bf16" | "bfloat16" => Dtype::Bf16,
        "float32" | "f32" => Dtype::F32,
        other => {
            return Err(InputError::new_err(format!(
                "`{other}` is not a matrix-engine type (int8, uint8, bf16, float32)"
            )));
        }
    })
}

/// Every built-in device configuration.
#[pyfunction]
fn configs() -> Vec<PyDeviceConfig> {
    DeviceConfig::builtin().into_iter().map(|inner| PyDeviceConfig { inner }).collect()
}

/// A compiled model: the blob and what the compiler knows of it.
#[pyclass(name = "NativeBlob", module = "accelc._native", frozen)]
struct NativeBlob {
    bytes: Vec<u8>,
    config: DeviceConfig,
    io: Vec<Io>,
    /// Per layer: name, kind, MACs, minimum DRAM bytes, roofline bound in cycles.
    layers: Option<Vec<accelc::Layer>>,
    /// From the compiler (not recorded in blobs): scratchpad and accumulator peaks, arena
    /// bytes, estimated cycles, graph nodes.
    figures: Option<(u32, u32, u64, u64, usize)>,
    /// The device, loaded once on first run.
    session: std::sync::OnceLock<Session>,
    /// The device's job cycle limit (the driver's default unless raised).
    max_job_cycles: u64,
}

impl NativeBlob {
    /// The device session, loaded (and the program validated) on first use without the GIL.
    fn session(&self, py: Python<'_>) -> PyResult<&Session> {
        if let Some(s) = self.session.get() {
            return Ok(s);
        }
        let opts =
            DeviceOptions { max_job_cycles: self.max_job_cycles, ..DeviceOptions::default() };
        let s = py
            .detach(|| Session::with_config(self.bytes.clone(), self.config.clone(), opts))
            .map_err(|e| match e {
            // The driver refusing a program over its job limit: say how to raise it.
            Error::Blob(m) if m.contains("cycles per job") => DeviceError::new_err(format!(
                "{m} (pass max_job_cycles= to raise the device's job limit)"
            )),
            e => py_err(e),
        })?;
        Ok(self.session.get_or_init(|| s))
    }
}

fn device_options() -> DeviceOptions {
    DeviceOptions::default()
}

#[pymethods]
impl NativeBlob {
    /// The blob's bytes.
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.bytes)
    }

    /// Size in bytes.
    fn __len__(&self) -> usize {
        self.bytes.len()
    }

    #[getter]
    fn config(&self) -> PyDeviceConfig {
        PyDeviceConfig { inner: self.config.clone() }
    }

    /// Inputs as `(name, numpy dtype or None, shape)`, in signature order.
    fn inputs(&self) -> Vec<(String, Option<&'static str>, Vec<u64>)> {
        self.io.iter().filter(|t| t.input).map(describe).collect()
    }

    /// Outputs as `(name, numpy dtype or None, shape)`, in order.
    fn outputs(&self) -> Vec<(String, Option<&'static str>, Vec<u64>)> {
        self.io.iter().filter(|t| !t.input).map(describe).collect()
    }

    /// Per layer `(name, kind, macs, min_dram_bytes, roofline_cycles)`, when known (compiled
    /// here, or a blob with layer records).
    fn layers(&self) -> Option<Vec<LayerRow>> {
        self.layers.as_ref().map(|ls| {
            ls.iter()
                .map(|l| {
                    let kind = l.kind.name().to_string();
                    (l.name.clone(), kind, l.macs, l.min_bytes, l.roofline_cycles(&self.config))
                })
                .collect()
        })
    }

    /// The compiler's figures `(spad_peak_bytes, acc_peak_bytes, arena_bytes,
    /// estimated_cycles, graph_nodes)`, for a blob compiled in this process.
    fn figures(&self) -> Option<(u32, u32, u64, u64, usize)> {
        self.figures
    }

    /// Runs once on the simulated device: inputs in signature order as `(dtype, shape,
    /// bytes)`; returns the outputs the same way and the job's cycles. Raises `InputError` for
    /// inputs that do not match, `DeviceError` for a fault or timeout.
    fn run<'py>(&self, py: Python<'py>, inputs: Vec<Wire>) -> PyResult<(Vec<OutWire<'py>>, u64)> {
        let ins = inputs.into_iter().map(from_wire).collect::<PyResult<Vec<_>>>()?;
        let session = self.session(py)?;
        let r = py.detach(|| session.run(&ins)).map_err(py_err)?;
        Ok((r.outputs.iter().map(|t| to_wire(py, t)).collect(), r.stats.cycles))
    }

    /// A traced run cut per layer: `(layers, total_cycles)` with each layer `(name, kind,
    /// cycles, macs, dma_bytes, utilisation, roofline_cycles)`. Raises `BlobError` when the
    /// blob has no layer records.
    #[allow(clippy::type_complexity, reason = "a plain tuple crosses to Python")]
    fn profile(
        &self,
        py: Python<'_>,
        inputs: Vec<Wire>,
    ) -> PyResult<(Vec<(String, String, u64, u64, u64, f64, u64)>, u64)> {
        let ins = inputs.into_iter().map(from_wire).collect::<PyResult<Vec<_>>>()?;
        let session = self.session(py)?;
        let layers = self.layers.as_deref();
        let p = py.detach(|| accelc::profile(session, layers, &ins)).map_err(py_err)?;
        let rows = p
            .layers
            .iter()
            .map(|l| {
                let kind = l.kind.name().to_string();
                (
                    l.name.clone(),
                    kind,
                    l.cycles,
                    l.macs,
                    l.dma_bytes,
                    l.utilisation,
                    l.roofline_cycles,
                )
            })
            .collect();
        Ok((rows, p.stats.cycles))
    }

    /// Random inputs as the CLI makes them (seeded SplitMix64), as `(dtype, shape, bytes)`.
    fn random_inputs<'py>(&self, py: Python<'py>, seed: u64) -> PyResult<Vec<OutWire<'py>>> {
        let mut specs = Vec::new();
        for t in self.io.iter().filter(|t| t.input) {
            let d = t.dtype.ok_or_else(|| {
                BlobError::new_err(format!("input `{}` has no host type", t.name))
            })?;
            specs.push((d, t.dims.iter().map(|d| *d as usize).collect()));
        }
        Ok(HostTensor::random(&specs, seed).iter().map(|t| to_wire(py, t)).collect())
    }
}

/// Compiles a model for `config` at `opt_level`. Raises `ModelError` (or `UnsupportedError`)
/// naming the node, `InputError` for a bad option.
#[pyfunction]
#[pyo3(signature = (model, config, opt_level = 2, input_shapes = None, max_job_cycles = None))]
fn compile(
    py: Python<'_>,
    model: ModelArg,
    config: &PyDeviceConfig,
    opt_level: u8,
    input_shapes: Option<std::collections::HashMap<String, Vec<usize>>>,
    max_job_cycles: Option<u64>,
) -> PyResult<NativeBlob> {
    let opts = Options {
        config: config.inner.clone(),
        level: level(opt_level)?,
        input_shapes: input_shapes.unwrap_or_default(),
        ..Options::default()
    };
    let (c, bytes) = py
        .detach(|| {
            let c = accelc::compile(model.source(), &opts, &mut ())?;
            let bytes = c.blob()?;
            Ok::<_, accelc::Error>((c, bytes))
        })
        .map_err(py_err)?;
    let Some(compiled) = &c.compiled else {
        // A plan (some nodes on the host): its signature, no device figures.
        let plan = accelc_isa::plan::PlanBlob::read(&bytes)
            .map_err(|e| InternalError::new_err(format!("plan blob: {e}")))?;
        let io = Io::from_plan(&plan);
        drop(plan);
        return Ok(NativeBlob {
            io,
            layers: None,
            figures: None,
            bytes,
            config: config.inner.clone(),
            session: std::sync::OnceLock::new(),
            max_job_cycles: max_job_cycles.unwrap_or(device_options().max_job_cycles),
        });
    };
    let figures = Some((
        compiled.spad_peak,
        compiled.acc_peak,
        compiled.arena_bytes,
        compiled.estimate_cycles(),
        compiled.nodes,
    ));
    Ok(NativeBlob {
        io: compiled.io.iter().map(Io::from_blob).collect(),
        layers: Some(compiled.layers.clone()),
        figures,
        bytes,
        config: config.inner.clone(),
        session: std::sync::OnceLock::new(),
        max_job_cycles: max_job_cycles.unwrap_or(device_options().max_job_cycles),
    })
}

/// A blob from its bytes, for `config` (its built-in configuration when `None`). Raises
/// `BlobError` with the byte offset of what is malformed.
#[pyfunction]
#[pyo3(signature = (data, config = None, max_job_cycles = None))]
fn load_blob(
    py: Python<'_>,
    data: Vec<u8>,
    config: Option<&PyDeviceConfig>,
    max_job_cycles: Option<u64>,
) -> PyResult<NativeBlob> {
    // A plan blob (format 2) or a single device program (format 1).
    let (target, io) = if accelc_isa::plan::is_plan(&data) {
        let p = py
            .detach(|| accelc_isa::plan::PlanBlob::read(&data))
            .map_err(|e| BlobError::new_err(format!("malformed blob: {e}")))?;
        (p.target.clone(), Io::from_plan(&p))
    } else {
        let b = py
            .detach(|| accelc_isa::blob::Blob::read(&data))
            .map_err(|e| BlobError::new_err(format!("malformed blob: {e}")))?;
        (b.target.clone(), b.io.iter().map(Io::from_blob).collect())
    };
    let config = match config {
        Some(c) => c.inner.clone(),
        None => accelc::config(&target.config_name).map_err(|_| {
            BlobError::new_err(format!(
                "the blob targets `{}`, which is not a built-in device configuration (pass \
                 config=)",
                target.config_name
            ))
        })?,
    };
    if !target.runs_on(&config) {
        return Err(BlobError::new_err(format!(
            "the blob was built for a device `{}` with other parameters than `{}`",
            target.config_name, config.name
        )));
    }
    let layers = if accelc_isa::plan::is_plan(&data) {
        None
    } else {
        accelc::blob_layers(&data).map_err(py_err)?
    };
    Ok(NativeBlob {
        bytes: data,
        config,
        io,
        layers,
        figures: None,
        session: std::sync::OnceLock::new(),
        max_job_cycles: max_job_cycles.unwrap_or(device_options().max_job_cycles),
    })
}

/// The model's metadata as onnxruntime's `ModelMetadata` gives it: `(producer_name,
/// graph_name, graph_description, domain, description, version, custom_metadata_map)`.
#[pyfunction]
#[allow(clippy::type_complexity, reason = "a plain tuple crosses to Python")]
fn model_meta(
    model: ModelArg,
) -> PyResult<(String, String, String, String, String, i64, Vec<(String, String)>)> {
    use prost::Message;
    let bytes = match &model {
        ModelArg::Path(p) => accelc_isa::file::read_regular(p, accelc_isa::file::MAX_FILE_BYTES)
            .map_err(|e| ModelError::new_err(format!("{}: {e}", p.display())))?,
        ModelArg::Bytes(b) => b.clone(),
    };
    // Text models carry no metadata fields of their own beyond the header; report empty ones.
    if let Source::Text(_) = ModelArg::Bytes(bytes.clone()).source() {
        return Ok(Default::default());
    }
    let m = accelc_compiler::proto::ModelProto::decode(bytes.as_slice())
        .map_err(|e| ModelError::new_err(format!("not an ONNX model: {e}")))?;
    let g = m.graph.unwrap_or_default();
    let meta = m
        .metadata_props
        .into_iter()
        .map(|p| (p.key.unwrap_or_default(), p.value.unwrap_or_default()))
        .collect();
    Ok((
        m.producer_name.unwrap_or_default(),
        g.name.unwrap_or_default(),
        g.doc_string.unwrap_or_default(),
        m.domain.unwrap_or_default(),
        m.doc_string.unwrap_or_default(),
        // onnxruntime reports an unset version as the largest int64.
        m.model_version.unwrap_or(i64::MAX),
        meta,
    ))
}

/// Per node `(name, op_type, stage, reason or None)` and `(opset, imported_nodes, compile
/// error or None)`: where each node runs, decided by the code `compile` runs.
#[pyfunction]
#[pyo3(signature = (model, config, opt_level = 2))]
#[allow(clippy::type_complexity, reason = "a plain tuple crosses to Python")]
fn check(
    py: Python<'_>,
    model: ModelArg,
    config: &PyDeviceConfig,
    opt_level: u8,
) -> PyResult<(Vec<CheckRow>, (i64, usize, Option<String>))> {
    let opts =
        Options { config: config.inner.clone(), level: level(opt_level)?, ..Options::default() };
    let r = py.detach(|| accelc::check(model.source(), &opts)).map_err(py_err)?;
    let nodes = r
        .nodes
        .iter()
        .map(|n| {
            let placement = n.placement.map(|p| match p {
                accelc_compiler::lower::partition::Place::Device => "device".to_string(),
                accelc_compiler::lower::partition::Place::Host => "host".to_string(),
            });
            (
                n.name.clone(),
                n.op_type.clone(),
                n.stage.to_string(),
                n.result.clone().err(),
                placement,
            )
        })
        .collect();
    Ok((nodes, (r.opset, r.imported_nodes, r.compile.err())))
}

/// Orders inputs given by name as `names` lists them: every name given once, no other.
fn by_name(
    names: &[String],
    types: &[Option<accelc_compiler::ir::TensorType>],
    mut given: std::collections::HashMap<String, Wire>,
) -> PyResult<Vec<HostTensor>> {
    let mut out = Vec::with_capacity(names.len());
    for (n, ty) in names.iter().zip(types) {
        let (dtype, dims, data) = given
            .remove(n)
            .ok_or_else(|| InputError::new_err(format!("input `{n}` is not given")))?;
        let d = accelc::npy::from_descr(&dtype).ok_or_else(|| {
            InputError::new_err(format!("input `{n}`: numpy dtype `{dtype}` is not supported"))
        })?;
        // The signature first, so a wrong shape is named here and not deep inside a node.
        if let Some(t) = ty
            && (t.dtype != d || t.shape != dims)
        {
            return Err(InputError::new_err(format!(
                "input `{n}` is {d}{dims:?}; the model takes {}{:?}",
                t.dtype, t.shape
            )));
        }
        let t = HostTensor::new(d, dims, data)
            .map_err(|e| InputError::new_err(format!("input `{n}`: {e}")))?;
        out.push(t);
    }
    if let Some(k) = given.keys().next() {
        return Err(InputError::new_err(format!(
            "no input named `{k}` (the model takes {})",
            names.join(", ")
        )));
    }
    Ok(out)
}

/// Runs the model on the reference interpreter (the oracle) on inputs given by name; returns
/// the outputs in order as `(name, (dtype, shape, bytes))`.
#[pyfunction]
fn reference<'py>(
    py: Python<'py>,
    model: ModelArg,
    inputs: std::collections::HashMap<String, Wire>,
) -> PyResult<Vec<(String, OutWire<'py>)>> {
    let g = py
        .detach(|| accelc::load_graph(model.source(), &Options::default(), &mut ()))
        .map_err(py_err)?;
    let names: Vec<String> = g.inputs.iter().map(|v| g.value(*v).name.clone()).collect();
    let types: Vec<_> = g.inputs.iter().map(|v| g.value(*v).ty.clone()).collect();
    let ins = by_name(&names, &types, inputs)?;
    let outs = py.detach(|| accelc::reference(&g, &ins)).map_err(py_err)?;
    let out_names = g.outputs.iter().map(|v| g.value(*v).name.clone());
    Ok(out_names.zip(outs.iter().map(|t| to_wire(py, t))).collect())
}

/// Compiles with every intermediate tensor exposed, runs device and reference on `inputs` (by
/// name; random ones from `seed` when `None`) and returns the first tensor that
/// differs as `(tensor, layer, (first_inst, end_inst), (index, device, reference),
/// max_abs_diff, max_ref)` beside 0, or the number of tensors compared beside `None` when all
/// match.
#[pyfunction]
#[pyo3(signature = (model, config, opt_level = 2, inputs = None, seed = 0))]
#[allow(clippy::type_complexity, reason = "a plain tuple crosses to Python")]
fn diff(
    py: Python<'_>,
    model: ModelArg,
    config: &PyDeviceConfig,
    opt_level: u8,
    inputs: Option<std::collections::HashMap<String, Wire>>,
    seed: u64,
) -> PyResult<(usize, Option<(String, String, (u32, u32), (usize, f32, f32), f32, f32)>)> {
    let opts = Options {
        config: config.inner.clone(),
        level: level(opt_level)?,
        expose_all: true,
        ..Options::default()
    };
    let c = py.detach(|| accelc::compile(model.source(), &opts, &mut ())).map_err(py_err)?;
    let (specs, _) = accelc::blob_signature(&c.blob().map_err(py_err)?).map_err(py_err)?;
    let given = match inputs {
        Some(named) => {
            let names: Vec<String> = specs.iter().map(|t| t.name.clone()).collect();
            let types: Vec<_> = specs
                .iter()
                .map(|t| {
                    Some(accelc_compiler::ir::TensorType { dtype: t.dtype, shape: t.dims.clone() })
                })
                .collect();
            Some(by_name(&names, &types, named)?)
        }
        None => None,
    };
    let r = py
        .detach(|| {
            let ins = match given {
                Some(v) => v,
                None => {
                    let s: Vec<_> = specs.iter().map(|t| (t.dtype, t.dims.clone())).collect();
                    HostTensor::random(&s, seed)
                }
            };
            match (&c.compiled, &c.plan) {
                (Some(compiled), _) => {
                    accelc::first_difference(c.oracle(), compiled, &ins, device_options())
                }
                (None, Some(plan)) => accelc::first_difference_plan(
                    c.oracle(),
                    &c.optimized,
                    plan,
                    &ins,
                    device_options(),
                ),
                (None, None) => Err(Error::Internal("neither a program nor a plan".into())),
            }
        })
        .map_err(py_err)?;
    Ok(match r {
        Ok(n) => (n, None),
        Err(d) => (0, Some((d.tensor, d.layer, d.insts, d.element, d.max_abs_diff, d.max_ref))),
    })
}

/// The roofline chart of a profile as SVG text: `layers` as `(name, cycles, macs,
/// dma_bytes)`; the roof is `config`'s peak for `dtype` and its DRAM bandwidth.
#[pyfunction]
#[pyo3(signature = (layers, config, title, dtype = "float32"))]
fn roofline_svg(
    layers: Vec<(String, u64, u64, u64)>,
    config: &PyDeviceConfig,
    title: &str,
    dtype: &str,
) -> PyResult<String> {
    let points: Vec<accelc::roofline::Point> = layers
        .into_iter()
        .map(|(name, cycles, macs, dma_bytes)| accelc::roofline::Point {
            name,
            cycles,
            macs,
            dma_bytes,
        })
        .collect();
    accelc::roofline::svg(&points, &config.inner, device_dtype(dtype)?, title).map_err(py_err)
}

/// The native half of the `accelc` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("AccelcError", py.get_type::<AccelcError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    m.add("BlobError", py.get_type::<BlobError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    m.add_class::<PyDeviceConfig>()?;
    m.add_class::<NativeBlob>()?;
    m.add_function(wrap_pyfunction!(configs, m)?)?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(load_blob, m)?)?;
    m.add_function(wrap_pyfunction!(model_meta, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(reference, m)?)?;
    m.add_function(wrap_pyfunction!(diff, m)?)?;
    m.add_function(wrap_pyfunction!(roofline_svg, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
