//! Compiling a model: the frontend (import, fold, infer), the optimizer and the lowering, in
//! one place, with options and a progress observer.

use std::collections::HashMap;
use std::path::Path;

use accelc_compiler::ir::{Graph, Op};
use accelc_compiler::lower::execplan::{Lowered, PlanCompiled};
use accelc_compiler::lower::{self, CompileOptions, Compiled};
use accelc_compiler::onnx::ImportOptions;
use accelc_compiler::opt::{self, Level};
use accelc_compiler::pipeline;
use accelc_isa::DeviceConfig;
use bytes::Bytes;

use crate::{Error, HostTensor};

/// Where a model comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A file: binary ONNX, or the ONNX text syntax (by extension `.onnxtxt`/`.txt`, or a first
    /// non-blank character `<`); external data is resolved next to it.
    Path(&'a Path),
    /// Binary ONNX (no external data).
    Onnx(&'a [u8]),
    /// The ONNX text syntax.
    Text(&'a str),
}

impl Source<'_> {
    /// How errors name the model.
    pub fn describe(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Onnx(_) => "<onnx bytes>".into(),
            Source::Text(_) => "<onnx text>".into(),
        }
    }
}

/// What to compile for, and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// The target device.
    pub config: DeviceConfig,
    /// Optimizer level (`O2` by default).
    pub level: Level,
    /// Shapes for graph inputs with symbolic dimensions, by input name.
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Make every intermediate tensor an extra output (for [`crate::first_difference`]).
    pub expose_all: bool,
    /// Values of graph inputs known when compiling (by input name). Those the compiler needs
    /// as constants (shapes, axes, pads, scales, quantization parameters:
    /// [`accelc_compiler::pipeline::compile_time_inputs`]) are bound, so the result is
    /// specialised to these values and no longer takes them ([`Compilation::bound`]); the
    /// others stay run-time inputs and are ignored here.
    pub known_inputs: HashMap<String, HostTensor>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            config: DeviceConfig::default_npu(),
            level: Level::O2,
            input_shapes: HashMap::new(),
            expose_all: false,
            known_inputs: HashMap::new(),
        }
    }
}

/// Told what the compiler is doing; every method has an empty default.
pub trait Observer {
    /// The graph after a frontend pass or the optimizer (`import`, `fold-constants`,
    /// `infer-shapes`, `optimize`).
    fn graph(&mut self, _pass: &str, _graph: &Graph) {}
    /// The optimizer's report.
    fn optimized(&mut self, _report: &opt::Report) {}
    /// The lowering's intermediate forms as text: the graph after `legalize`, each node's
    /// placement after `select`, the kernels after `schedule` and `plan-memory`. `text` builds it (only call it when it is wanted).
    fn kernels(&mut self, _pass: &str, _text: &dyn Fn() -> String) {}
    /// `done` of `total` kernels emitted.
    fn progress(&mut self, _done: usize, _total: usize) {}
}

/// An observer that ignores everything.
impl Observer for () {}

/// A compiled model.
#[derive(Clone, Debug)]
pub struct Compilation {
    /// The graph after the frontend, before optimisation: the reference that `--compare` and
    /// `diff` run.
    pub reference: Graph,
    /// The graph the lowering compiled.
    pub optimized: Graph,
    /// The optimizer's report.
    pub report: opt::Report,
    /// The program, tables, layers and figures, when the device runs every node (`None`
    /// for a plan).
    pub compiled: Option<Compiled>,
    /// The plan, when some nodes run on the host: placements, steps (each device step with
    /// its program), the host module.
    pub plan: Option<PlanCompiled>,
    /// Graph inputs bound to their [`Options::known_inputs`] values at compile time (sorted):
    /// the blob does not take them.
    pub bound: Vec<String>,
}

impl Compilation {
    /// The command blob (format 1), or the plan blob (format 2), in memory.
    ///
    /// Errors: as [`Compilation::write_blob`].
    pub fn blob(&self) -> Result<Vec<u8>, Error> {
        let mut out = std::io::Cursor::new(Vec::new());
        self.write_blob(&mut out)?;
        Ok(out.into_inner())
    }

    /// Writes the blob to `w` from its current position and returns its bytes. A device
    /// program's packed weights are produced layer by layer as they are written, so the blob
    /// is never held whole (what `accelc compile -o` does).
    ///
    /// Errors: [`Error::Io`] with the writer's message when `w` fails; [`Error::Internal`]
    /// when the blob does not
    /// serialise ([`compile`] checked that it does).
    pub fn write_blob<W: std::io::Write + std::io::Seek>(&self, w: &mut W) -> Result<u64, Error> {
        match (&self.compiled, &self.plan) {
            (Some(c), _) => {
                // Whether a failure is the writer's (the disk) or accelc's own (its packing
                // disagreeing with its plan): only the writer knows.
                let mut t = Tracked { w, failed: None };
                c.write_blob(&mut t).map_err(|e| match t.failed.take() {
                    Some(io) => Error::Io(io),
                    None => Error::Internal(e.to_string()),
                })
            }
            (None, Some(p)) => {
                w.write_all(&p.blob).map_err(|e| Error::Io(format!("writing the blob: {e}")))?;
                Ok(p.blob.len() as u64)
            }
            (None, None) => {
                Err(Error::Internal("a compilation with neither a program nor a plan".into()))
            }
        }
    }

    /// The graph whose interpretation the device must match: the optimized graph when it
    /// holds integer kernels the quantization rules made (`QConv`, `QAdd`, `QGlobalAveragePool`: their arithmetic, the
    /// device's, is the model's integer semantics and differs from the float QDQ graph by
    /// rounding), else the frontend's graph. `diff` and `run --compare` check against it;
    /// against it a quantized model's integer tensors agree exactly.
    pub fn oracle(&self) -> &Graph {
        let integer = (self.optimized.nodes.iter()).any(|n| {
            matches!(n.op, Op::QConv { .. } | Op::QAdd { .. } | Op::QGlobalAveragePool { .. })
        });
        if integer { &self.optimized } else { &self.reference }
    }
}

fn model_err(src: &Source<'_>, e: impl std::fmt::Display) -> Error {
    Error::Model(format!("{}: {e}", src.describe()))
}

/// Imports a model (no passes): the one place a [`Source`] is read.
pub fn import(src: Source<'_>, opts: &Options) -> Result<Graph, Error> {
    let import = ImportOptions { input_shapes: opts.input_shapes.clone() };
    match src {
        Source::Path(p) => pipeline::load_any(p, &import).map_err(Error::Model),
        Source::Onnx(b) => accelc_compiler::onnx::import(Bytes::copy_from_slice(b), None, &import)
            .map_err(|e| model_err(&src, e)),
        Source::Text(t) => {
            pipeline::load_text(t, "<onnx text>", None, &import).map_err(Error::Model)
        }
    }
}

/// Runs the frontend passes (fold, infer, verify) on an imported graph.
pub fn frontend(g: &mut Graph, src: &Source<'_>, obs: &mut dyn Observer) -> Result<(), Error> {
    pipeline::run_frontend(g, &mut |pass, g| obs.graph(pass, g)).map_err(|e| model_err(src, e))
}

/// Imports a model and runs the frontend passes (fold, infer, verify).
/// Inputs with [`Options::known_inputs`] values that the compiler needs are bound first.
pub fn load_graph(src: Source<'_>, opts: &Options, obs: &mut dyn Observer) -> Result<Graph, Error> {
    let mut g = import(src, opts)?;
    bind_known_inputs(&mut g, &src, opts)?;
    frontend(&mut g, &src, obs)?;
    Ok(g)
}

/// Binds the compile-time inputs (see [`Options::known_inputs`]) whose values are known;
/// returns their names, sorted.
fn bind_known_inputs(
    g: &mut Graph,
    src: &Source<'_>,
    opts: &Options,
) -> Result<Vec<String>, Error> {
    if opts.known_inputs.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = pipeline::compile_time_inputs(g);
    let mut names: Vec<String> = wanted.iter().map(|id| g.value(*id).name.clone()).collect();
    names.retain(|n| opts.known_inputs.contains_key(n));
    names.sort();
    for n in &names {
        let t = opts.known_inputs[n].to_ir();
        pipeline::bind_input(g, n, t)
            .map_err(|e| Error::Input(format!("{}: {e}", src.describe())))?;
    }
    Ok(names)
}

/// Runs the optimizer on a frontend graph for `opts.config` at `opts.level`.
pub fn optimize(
    g: &mut Graph,
    src: &Source<'_>,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Result<opt::Report, Error> {
    let o =
        opt::Options { level: opts.level, config: opts.config.clone(), ..opt::Options::default() };
    let report = pipeline::run_optimizer(g, &o, &mut |pass, g| obs.graph(pass, g))
        .map_err(|e| model_err(src, e))?;
    obs.optimized(&report);
    Ok(report)
}

/// A configuration built at run time must be one the ISA and timing model can use.
pub(crate) fn validate_config(c: &DeviceConfig) -> Result<(), Error> {
    c.validate().map_err(|e| Error::Input(format!("device configuration `{}`: {e}", c.name)))
}

/// Compiles a model: frontend, optimizer, lowering, blob.
///
/// Errors: [`Error::Input`] when `opts.config` is out of range ([`DeviceConfig::validate`]),
/// [`Error::Model`] when the model cannot be read or processed, [`Error::Unsupported`]
/// when a node does not run on the device (its name and the constraint), [`Error::Internal`]
/// when accelc finds an inconsistency in its own output.
pub fn compile(
    src: Source<'_>,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Result<Compilation, Error> {
    validate_config(&opts.config)?;
    let mut reference = import(src, opts)?;
    let bound = bind_known_inputs(&mut reference, &src, opts)?;
    frontend(&mut reference, &src, obs)?;
    let mut optimized = reference.clone();
    let report = optimize(&mut optimized, &src, opts, obs)?;
    let lowered = lower(&optimized, &src, opts, obs)?;
    let (compiled, plan) = match lowered {
        Lowered::Device(c) => (Some(*c), None),
        Lowered::Plan(p) => (None, Some(p)),
    };
    Ok(Compilation { reference, optimized, report, compiled, plan, bound })
}

/// The lowering step of [`compile`]: an optimized graph to its program (checked to serialise
/// as a blob), or to a plan of device programs and host code when the device does not run
/// every node.
pub(crate) fn lower(
    optimized: &Graph,
    src: &Source<'_>,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Result<Lowered, Error> {
    let copts = CompileOptions { config: opts.config.clone(), expose_all: opts.expose_all };
    let support = lower::device_support(optimized, &copts);
    let plan = |obs: &mut dyn Observer| -> Result<Lowered, Error> {
        let p = accelc_compiler::lower::execplan::compile_any(optimized, &copts)
            .map_err(|e| lower_err(src, e))?;
        if let Lowered::Plan(p) = &p {
            obs.kernels("plan", &|| p.host.clone());
        }
        if let Lowered::Device(c) = &p {
            c.check_blob().map_err(|e| Error::Internal(e.to_string()))?;
        }
        Ok(p)
    };
    if support.iter().any(Result::is_err) {
        return plan(obs);
    }
    // Both callbacks report to the one observer.
    let cell = std::cell::RefCell::new(&mut *obs);
    let compiled = lower::compile_with(
        optimized,
        &copts,
        &mut |done, total| cell.borrow_mut().progress(done, total),
        &mut |pass, text| cell.borrow_mut().kernels(pass, text),
    );
    let compiled = match compiled {
        Ok(c) => c,
        // A limit only emission (or the program's I/O) meets: the plan moves that node to the
        // host, as `check` reports.
        Err(e) if !e.message.contains("internal") => return plan(obs),
        Err(e) => return Err(lower_err(src, e)),
    };
    // What the blob format cannot record is the model's limit, said by tensor.
    for t in &compiled.io {
        if t.name.len() > usize::from(u16::MAX) {
            return Err(Error::Unsupported(format!(
                "{}: tensor name of {} bytes; a blob records names of at most 65535",
                src.describe(),
                t.name.len()
            )));
        }
        if t.dims.len() > usize::from(u8::MAX) {
            return Err(Error::Unsupported(format!(
                "{}: tensor `{}` has rank {}; a blob records at most 255 dimensions",
                src.describe(),
                t.name,
                t.dims.len()
            )));
        }
    }
    compiled.check_blob().map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Lowered::Device(Box::new(compiled)))
}

/// The whole model as one MLIR host function (every node through its host lowering, after
/// the frontend and the optimizer), as text: what `accelc compile --emit mlir-all` prints.
///
/// Errors: as [`compile`]; a node without a host lowering is [`Error::Unsupported`].
pub fn host_mlir(src: Source<'_>, opts: &Options, obs: &mut dyn Observer) -> Result<String, Error> {
    validate_config(&opts.config)?;
    let mut g = load_graph(src, opts, obs)?;
    optimize(&mut g, &src, opts, obs)?;
    let copts = CompileOptions { config: opts.config.clone(), expose_all: false };
    accelc_compiler::lower::execplan::compile_host_only(&g, &copts)
        .map(|p| p.host)
        .map_err(|e| lower_err(&src, e))
}

/// A lowering error: internal when accelc contradicts itself, else a device limitation.
pub(crate) fn lower_err(src: &Source<'_>, e: lower::LowerError) -> Error {
    let m = format!("{}: {e}", src.describe());
    if e.message.contains("internal") { Error::Internal(m) } else { Error::Unsupported(m) }
}

/// A writer that remembers its first error's message.
struct Tracked<'a, W> {
    w: &'a mut W,
    failed: Option<String>,
}

impl<W> Tracked<'_, W> {
    fn note<T>(&mut self, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r
            && self.failed.is_none()
        {
            self.failed = Some(e.to_string());
        }
        r
    }
}

impl<W: std::io::Write> std::io::Write for Tracked<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.w.write(buf);
        self.note(r)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.w.flush();
        self.note(r)
    }
}

impl<W: std::io::Seek> std::io::Seek for Tracked<'_, W> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let r = self.w.seek(pos);
        self.note(r)
    }
}
