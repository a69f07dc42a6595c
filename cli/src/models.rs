//! The model commands: `compile`, `run`, `diff` and `profile`, from ONNX (or a blob) to
//! results on the simulated device, checked against the reference interpreter.

use accelc_compiler::Clipped;
use std::io::Write;
use std::path::{Path, PathBuf};

use accelc_compiler::ir::Graph;
use accelc_compiler::lower::{Compiled, Layer};
use anyhow::{Context, anyhow, bail};

use crate::{config, invalid, is_blob, parse_input_shapes, read, write_atomic};
use accelc::{ATOL, RTOL, SCALE_TOL};
use accelc::{Compilation, HostTensor, Observer, Options, Session, Source, TensorSpec};

/// The optimizer options the model commands share.
#[derive(Clone, Copy, Debug, clap::Args)]
pub(crate) struct OptArgs {
    /// Optimisation level: 0 none, 1 rules without device costs, 2 full.
    #[arg(short = 'O', long = "opt-level", default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub(crate) level: u8,
    /// Print the optimizer's log (stop reason, rules applied, estimated cycles) to standard error.
    #[arg(short, long)]
    pub(crate) verbose: bool,
}

impl OptArgs {
    /// The optimizer level.
    pub(crate) fn level(&self) -> accelc::Level {
        accelc::Level::from_number(self.level).unwrap_or(accelc::Level::O2)
    }
}

/// The device and input shapes a model command compiles for.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct TargetArgs {
    /// Device configuration [default: `default`].
    #[arg(long)]
    pub(crate) config: Option<String>,
    /// Fix a symbolic input shape, `NAME=D,D,...` (repeatable).
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub(crate) input_shapes: Vec<String>,
}

/// The inputs of a run.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct InputArgs {
    /// An input, `NAME=FILE.npy` (repeatable); inputs not given are uniform random in
    /// [-1, 1) from a fixed seed.
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub(crate) inputs: Vec<String>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// The device's job limit: refuse blobs whose run-time bound exceeds this many cycles.
    #[arg(long, default_value_t = accelc_isa::verify::DEFAULT_MAX_CYCLES)]
    pub(crate) max_cycles: u64,
}

/// The facade's options for a model command.
pub(crate) fn facade_options(
    o: OptArgs,
    cfg: Option<&str>,
    shapes: &[String],
    expose_all: bool,
) -> anyhow::Result<Options> {
    Ok(Options {
        config: config(cfg.unwrap_or("default"))?,
        level: o.level(),
        input_shapes: parse_input_shapes(shapes)?.input_shapes,
        expose_all,
        ..Options::default()
    })
}

/// What the CLI shows of a compile: the optimizer's log (`-v`), IR and kernel dumps
/// (`--dump-ir`), and a progress bar on standard error once a compile takes a while.
struct CliObserver {
    verbose: bool,
    dump_ir: bool,
    /// Constants with more elements than this are summarised in IR dumps.
    elide: usize,
    log: String,
    dumps: String,
    bar: indicatif::ProgressBar,
    started: std::time::Instant,
}

impl CliObserver {
    fn new(verbose: bool, dump_ir: bool) -> CliObserver {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("compiling {bar:30} {pos}/{len} kernels")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        CliObserver {
            verbose,
            dump_ir,
            elide: 16,
            log: String::new(),
            dumps: String::new(),
            bar,
            started: std::time::Instant::now(),
        }
    }

    /// Writes the log, then the dumps, to `err`.
    fn finish(self, err: &mut dyn Write) -> anyhow::Result<()> {
        self.bar.finish_and_clear();
        err.write_all(self.log.as_bytes())?;
        err.write_all(self.dumps.as_bytes())?;
        Ok(())
    }
}

impl Observer for CliObserver {
    fn graph(&mut self, pass: &str, g: &Graph) {
        if self.dump_ir {
            let text = accelc_compiler::text::print_with(g, self.elide);
            self.dumps.push_str(&format!("# --- IR after {pass}\n{text}"));
        }
    }

    fn optimized(&mut self, report: &accelc_compiler::opt::Report) {
        if self.verbose {
            self.log.push_str(&report.to_string());
        }
    }

    fn kernels(&mut self, pass: &str, text: &dyn Fn() -> String) {
        if self.dump_ir {
            let what = match pass {
                "legalize" => "IR",
                "select" => "placement",
                _ => "kernels",
            };
            self.dumps.push_str(&format!("# --- {what} after {pass}\n{}", text()));
        }
    }

    fn progress(&mut self, done: usize, total: usize) {
        // Only compiles that take a while are worth a bar.
        if self.started.elapsed().as_millis() > 300 {
            self.bar.set_length(total as u64);
            self.bar.set_position(done as u64);
        }
    }
}

/// A facade error as a CLI error (exit status 1: the input, not the tool).
fn fail(e: accelc::Error) -> anyhow::Error {
    match e {
        accelc::Error::Io(m) => anyhow!(m),
        e => invalid(e.to_string()),
    }
}

/// A model or blob given on the command line, compiled if needed.
struct Loaded {
    /// The compilation, for models (not for blobs).
    compilation: Option<Compilation>,
    blob: Vec<u8>,
}

impl Loaded {
    /// The inputs the compile bound to their given values (none for a blob).
    fn bound(&self) -> &[String] {
        self.compilation.as_ref().map_or(&[], |c| c.bound.as_slice())
    }
}

/// Compiles a model, or reads a blob. `known` are the inputs given on the command line: those
/// the compiler needs as constants (a shape, axes, scales) are bound to these values, as the
/// run is for these values anyway; a note on `err` says which.
#[allow(clippy::too_many_arguments, reason = "one per command-line option")]
fn load_or_compile(
    path: &Path,
    cfg: Option<&str>,
    shapes: &[String],
    expose_all: bool,
    o: OptArgs,
    known: &[(String, HostTensor)],
    err: &mut dyn Write,
) -> anyhow::Result<Loaded> {
    let bytes = read(path)?;
    if is_blob(&bytes) {
        if expose_all {
            bail!(invalid(format!(
                "{}: a blob cannot be compared layer by layer; give the model",
                path.display()
            )));
        }
        // A blob runs on the configuration it was built for; a different `--config` is a
        // mistake to name, not to ignore.
        // (A plan blob's target is its programs'.)
        let target = if accelc_isa::plan::is_plan(&bytes) {
            accelc_isa::plan::PlanBlob::read(&bytes).ok().map(|p| p.target.config_name)
        } else {
            accelc_isa::blob::Blob::read(&bytes).ok().map(|b| b.target.config_name)
        };
        if let Some(name) = cfg
            && let Some(built) = target
            && built != name
        {
            bail!(invalid(format!(
                "{}: the blob was built for `{built}`, not `{name}` (recompile the model with \
                 --config {name}, or drop --config)",
                path.display(),
            )));
        }
        return Ok(Loaded { compilation: None, blob: bytes });
    }
    let mut opts = facade_options(o, cfg, shapes, expose_all)?;
    opts.known_inputs = known.iter().cloned().collect();
    let mut obs = CliObserver::new(o.verbose, false);
    let c = accelc::compile(Source::Path(path), &opts, &mut obs);
    obs.finish(err)?;
    let c = c.map_err(|e| {
        let hint = if e.to_string().contains("a static compiler needs it as a constant") {
            "\n(an input the compiler needs as a constant is bound to its value when given \
             with --input NAME=FILE)"
        } else {
            ""
        };
        invalid(format!("{e}{hint}"))
    })?;
    if !c.bound.is_empty() {
        writeln!(
            err,
            "note: compiled for the given values of {} (the compiler needs them as constants)",
            c.bound.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        )?;
    }
    let blob = c.blob().map_err(fail)?;
    Ok(Loaded { compilation: Some(c), blob })
}

/// Loads a blob through the driver model, naming the file in errors.
fn session(path: &Path, blob: Vec<u8>, max_cycles: u64) -> anyhow::Result<Session> {
    let opts =
        accelc_runtime::driver::DeviceOptions { max_job_cycles: max_cycles, ..Default::default() };
    Session::with_options(blob, opts).map_err(|e| {
        let hint = if e.to_string().contains("cycles per job") {
            "\n(--max-cycles N raises the job limit)"
        } else {
            ""
        };
        invalid(format!("{}: {e}{hint}", path.display()))
    })
}

/// What `compile` produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Emit {
    /// The blob.
    Blob,
    /// The plan's host module, printed.
    Mlir,
    /// The whole model as one host function, printed.
    MlirAll,
}

#[allow(clippy::too_many_arguments, reason = "one per command-line option")]
pub(crate) fn cmd_compile(
    model: &Path,
    output: Option<PathBuf>,
    target: &TargetArgs,
    o: OptArgs,
    dump_ir: bool,
    emit: Emit,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let opts = facade_options(o, target.config.as_deref(), &target.input_shapes, false)?;
    let mut obs = CliObserver::new(o.verbose, dump_ir);
    // MLIR goes to `-o FILE` when given, else to standard output.
    let emit_text = |text: &str, out: &mut dyn Write| -> anyhow::Result<()> {
        match &output {
            Some(path) => {
                crate::not_the_input(model, path)?;
                write_atomic(path, text.as_bytes())
            }
            None => Ok(write!(out, "{text}")?),
        }
    };
    if emit == Emit::MlirAll {
        let text = accelc::host_mlir(Source::Path(model), &opts, &mut obs);
        obs.finish(err)?;
        return emit_text(&text.map_err(fail)?, out);
    }
    let c = accelc::compile(Source::Path(model), &opts, &mut obs);
    obs.finish(err)?;
    let c = c.map_err(fail)?;
    if emit == Emit::Mlir {
        match &c.plan {
            Some(p) => emit_text(&p.host, out)?,
            None => bail!(invalid(format!(
                "{}: every node runs on the device, so there is no host module (--emit mlir-all \
                 prints the whole model as MLIR)",
                model.display()
            ))),
        }
        return Ok(());
    }
    let path = output.unwrap_or_else(|| model.with_extension("blob"));
    crate::not_the_input(model, &path)?;
    crate::replaces_only_a_blob(&path)?;
    // The blob streams into the file: a large model's packed weights are never all in memory.
    let mut failed = None;
    let mut bytes = 0;
    let written = crate::write_atomic_with(&path, &mut |w| match c.write_blob(w) {
        Ok(n) => {
            bytes = n;
            Ok(())
        }
        Err(e) => {
            let m = e.to_string();
            failed = Some(e);
            Err(m)
        }
    });
    if let Some(e @ accelc::Error::Internal(_)) = failed {
        return Err(fail(e));
    }
    written?;
    let elapsed = started.elapsed();
    writeln!(
        out,
        "{} -> {} ({} bytes, {:.2} s)",
        model.display(),
        path.display(),
        bytes,
        elapsed.as_secs_f64()
    )?;
    match (&c.compiled, &c.plan) {
        (Some(compiled), _) => summary(compiled, out),
        (None, Some(plan)) => plan_summary(&c.optimized, plan, out),
        (None, None) => bail!("internal: a compilation with neither a program nor a plan"),
    }
}

/// A plan's steps, and every node the host runs with the reason it is not on the device.
fn plan_summary(
    g: &accelc::Graph,
    plan: &accelc_compiler::lower::execplan::PlanCompiled,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let host_nodes = plan.placements.iter().filter(|p| p.reason.is_some()).count();
    writeln!(
        out,
        "plan:          {} steps ({} device jobs, {} host calls); {} of {} nodes on the host",
        plan.steps.len(),
        plan.device_steps().count(),
        plan.steps.len() - plan.device_steps().count(),
        host_nodes,
        g.nodes.len()
    )?;
    for s in &plan.steps {
        match &s.compiled {
            Some(c) => writeln!(
                out,
                "  {:<10} device: {} nodes, {} kernels, est. {} cycles",
                s.name,
                s.nodes.len(),
                c.layers.len(),
                c.estimate_cycles()
            )?,
            None => writeln!(out, "  {:<10} host:   {} nodes", s.name, s.nodes.len())?,
        }
    }
    for (n, p) in g.nodes.iter().zip(&plan.placements) {
        if let Some(why) = &p.reason {
            writeln!(out, "  host node `{}` ({}): {why}", n.name, n.op_type)?;
        }
    }
    Ok(())
}

fn summary(c: &Compiled, out: &mut dyn Write) -> anyhow::Result<()> {
    let cfg = &c.config;
    writeln!(
        out,
        "target:        {} ({}x{} array, {} KiB scratchpad)",
        cfg.name,
        cfg.array_dim,
        cfg.array_dim,
        cfg.spad_bytes / 1024
    )?;
    writeln!(out, "graph nodes:   {}", c.nodes)?;
    writeln!(out, "kernels:       {}", c.layers.len())?;
    writeln!(out, "instructions:  {}", c.program.insts.len())?;
    writeln!(out, "constants:     {} bytes", c.consts.len())?;
    writeln!(out, "arena:         {} bytes", c.arena_bytes)?;
    writeln!(
        out,
        "scratchpad:    {} bytes peak, accumulator {} bytes peak",
        c.spad_peak, c.acc_peak
    )?;
    writeln!(out, "MACs:          {}", c.macs())?;
    writeln!(
        out,
        "est. cycles:   {} (roofline {}, serial bound {})",
        c.estimate_cycles(),
        c.roofline_cycles(),
        c.report.cycle_bound
    )?;
    if c.report.cycle_bound > accelc_isa::verify::DEFAULT_MAX_CYCLES {
        writeln!(
            out,
            "note:          the serial bound exceeds the driver's default job limit of {} cycles; run with --max-cycles {}",
            accelc_isa::verify::DEFAULT_MAX_CYCLES,
            c.report.cycle_bound
        )?;
    }
    Ok(())
}

/// Reads `NAME=FILE` arguments (`.npy`, or `.pb`: an ONNX `TensorProto`), or `FILE.pb` alone
/// when the file records the tensor's name; sizes are checked before anything is allocated.
/// Errors: an argument of neither form, a file that does not read, a name given twice.
pub(crate) fn read_tensor_args(
    args: &[String],
    what: &str,
) -> anyhow::Result<Vec<(String, HostTensor)>> {
    let mut out: Vec<(String, HostTensor)> = Vec::new();
    for a in args {
        let (name, t) = match a.split_once('=') {
            Some((name, file)) => {
                (name.to_string(), accelc::npy::read_any(Path::new(file)).map_err(fail)?.1)
            }
            None => match accelc::npy::read_any(Path::new(a)).map_err(fail)? {
                (Some(name), t) => (name, t),
                (None, _) => bail!(invalid(format!(
                    "`{a}` is not NAME=FILE (only a `.pb` tensor records its name)"
                ))),
            },
        };
        if out.iter().any(|(n, _)| *n == name) {
            bail!(invalid(format!("{what} `{name}` is given twice")));
        }
        out.push((name, t));
    }
    Ok(out)
}

/// The inputs of a run (in signature order): from the given tensors (any data type the
/// model's input has; those in `bound`, compiled in as constants, are skipped), or random
/// values of the input's type from one stream with a fixed seed (floats uniform in [-1, 1)).
pub fn inputs(
    specs: &[TensorSpec],
    args: &[(String, HostTensor)],
    bound: &[String],
    seed: u64,
) -> anyhow::Result<Vec<HostTensor>> {
    let mut given = std::collections::HashMap::new();
    for (name, t) in args {
        let name = name.as_str();
        if bound.iter().any(|b| b == name) {
            continue;
        }
        if !specs.iter().any(|s| s.name == name) {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            bail!(invalid(format!(
                "the model has no input `{name}` (inputs: {})",
                names.join(", ")
            )));
        }
        given.insert(name.to_string(), t.clone());
    }
    // Random values for the inputs not given, from one stream in signature order.
    let mut missing = Vec::new();
    for s in specs.iter().filter(|s| !given.contains_key(&s.name)) {
        missing.push((s.dtype, s.dims.clone()));
    }
    let mut random = HostTensor::random(&missing, seed).into_iter();
    let mut out = Vec::new();
    for s in specs {
        let dims = s.dims.clone();
        let t = match given.remove(&s.name) {
            Some(t) => {
                let want = s.dtype;
                if t.dims != dims || t.dtype != want {
                    bail!(invalid(format!(
                        "input `{}` is {}{:?}; the model takes {want}{dims:?}",
                        s.name, t.dtype, t.dims
                    )));
                }
                t
            }
            None => random.next().ok_or_else(|| anyhow!("internal: too few random inputs"))?,
        };
        out.push(t);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments, reason = "one per command-line option")]
pub(crate) fn cmd_run(
    o: OptArgs,
    err: &mut dyn Write,
    model: &Path,
    input_args: &InputArgs,
    output_dir: Option<&Path>,
    compare_ref: bool,
    (expect, rtol, atol): (&[String], f32, f32),
    target: &TargetArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    for (name, v) in [("--rtol", rtol), ("--atol", atol)] {
        if !(v.is_finite() && v >= 0.0) {
            bail!("{name} {v}: a tolerance is a finite number, 0 or more");
        }
    }
    let (cfg, shapes, seed) = (target.config.as_deref(), &target.input_shapes, input_args.seed);
    let given = read_tensor_args(&input_args.inputs, "input")?;
    let loaded = load_or_compile(model, cfg, shapes, false, o, &given, err)?;
    let bound = loaded.bound().to_vec();
    let session = session(model, loaded.blob, input_args.max_cycles)?;
    let ins = inputs(session.inputs(), &given, &bound, seed)?;
    let result = session.run(&ins).map_err(|e| invalid(format!("{}: {e}", model.display())))?;
    let (outs, stats) = (result.outputs, result.stats);
    let cfgd = session.config().clone();
    let device_jobs = result.steps.iter().filter(|s| s.device.is_some()).count();
    if result.steps.is_empty() || device_jobs > 0 {
        writeln!(
            out,
            "ran on `{}` in {} cycles ({:.3} ms at {} GHz)",
            cfgd.name,
            stats.cycles,
            stats.cycles as f64 * 1e3 / cfgd.clock_hz as f64,
            cfgd.clock_hz as f64 / 1e9
        )?;
    } else {
        writeln!(out, "ran on the host (the plan has no device job)")?;
    }
    if !result.steps.is_empty() {
        let host: Vec<std::time::Duration> =
            result.steps.iter().filter_map(|s| s.host_time).collect();
        writeln!(
            out,
            "plan:         {} device jobs ({} cycles), {} host calls ({:.3} ms wall time on this CPU; the host module took {:.1} ms to JIT-compile when the blob loaded)",
            result.steps.len() - host.len(),
            stats.cycles,
            host.len(),
            host.iter().sum::<std::time::Duration>().as_secs_f64() * 1e3,
            session.host_compile_time().as_secs_f64() * 1e3
        )?;
    }
    let specs: Vec<TensorSpec> = session.outputs().to_vec();
    let reference = if compare_ref {
        let c = loaded
            .compilation
            .as_ref()
            .ok_or_else(|| invalid("--compare needs the model, not a blob"))?;
        Some(accelc::reference(c.oracle(), &ins).map_err(fail)?)
    } else {
        None
    };
    let mut expected = std::collections::HashMap::new();
    for (name, t) in read_tensor_args(expect, "expected output")? {
        if !specs.iter().any(|s| s.name == name) {
            bail!(invalid(format!("the model has no output `{name}`")));
        }
        expected.insert(name, t);
    }
    // Output files, decided before any is written: two outputs whose names map to the same
    // file name would overwrite each other.
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(dir) = output_dir {
        for spec in &specs {
            let safe: String = spec
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let path = dir.join(format!("{safe}.npy"));
            if let Some(k) = files.iter().position(|p| *p == path) {
                bail!(invalid(format!(
                    "outputs `{}` and `{}` would both be written to {}",
                    specs[k].name,
                    spec.name,
                    path.display()
                )));
            }
            files.push(path);
        }
    }
    // Which comparisons failed: against the reference interpreter, against the expected files.
    let (mut failed_ref, mut failed_expect) = (false, false);
    for (i, (spec, data)) in specs.iter().zip(&outs).enumerate() {
        write!(out, "output `{}` {}{:?}", spec.name, data.dtype, data.dims)?;
        // `against` names what is compared with (`reference`, `expected values`); a type or
        // shape that differs counts as a difference.
        let mut check = |want: &HostTensor,
                         against: &str,
                         sep: &str,
                         (rtol, atol): (f32, f32)|
         -> anyhow::Result<bool> {
            match accelc::compare_tensors_within(data, want, rtol, atol) {
                Ok(None) => {
                    let diff = match (data.f32s(), want.f32s()) {
                        (Some(g), Some(w)) => {
                            format!("max abs diff {:.3e}", accelc::max_abs_diff(&g, &w))
                        }
                        _ => "exactly".into(),
                    };
                    write!(out, "{sep} matches the {against} ({diff})")?;
                    Ok(false)
                }
                Ok(Some(m)) => {
                    let (g, w) = (
                        data.element_text(m.index).unwrap_or_default(),
                        want.element_text(m.index).unwrap_or_default(),
                    );
                    write!(
                        out,
                        "{sep} DIFFERS from the {against} at element {}: {g} vs {w}",
                        m.index
                    )?;
                    Ok(true)
                }
                Err(e) => {
                    write!(out, "{sep} DIFFERS from the {against}: {e}")?;
                    Ok(true)
                }
            }
        };
        if let Some(r) = &reference {
            let want = r.get(i).ok_or_else(|| anyhow!("internal: no reference output {i}"))?;
            failed_ref |= check(want, "reference", ":", (accelc::RTOL, accelc::ATOL))?;
        }
        if let Some(want) = expected.get(&spec.name) {
            failed_expect |= check(want, "expected values", ";", (rtol, atol))?;
        }
        writeln!(out)?;
        if let (Some(dir), Some(path)) = (output_dir, files.get(i)) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            accelc::npy::write(path, data).map_err(fail)?;
            writeln!(out, "  written to {}", path.display())?;
        }
    }
    match (failed_ref, failed_expect) {
        (false, false) => {}
        (true, false) => {
            bail!(invalid("the results differ from the reference interpreter"))
        }
        (false, true) if compare_ref => bail!(invalid(
            "the results differ from the expected values (--expect) but match the \
             reference interpreter, so the model's reference semantics or the expected file \
             are in question"
        )),
        (false, true) => {
            bail!(invalid("the results differ from the expected values (--expect)"))
        }
        (true, true) => bail!(invalid(
            "the device's results differ from the reference interpreter and from the expected \
             values (--expect)"
        )),
    }
    Ok(())
}

#[allow(clippy::too_many_arguments, reason = "one per command-line option")]
pub(crate) fn cmd_diff(
    model: &Path,
    input_args: &InputArgs,
    target: &TargetArgs,
    o: OptArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let (cfg, shapes, seed) = (target.config.as_deref(), &target.input_shapes, input_args.seed);
    let max_cycles = input_args.max_cycles;
    let given = read_tensor_args(&input_args.inputs, "input")?;
    let loaded = load_or_compile(model, cfg, shapes, true, o, &given, err)?;
    let Some(c) = &loaded.compilation else { bail!("internal: no graph") };
    let (specs, _) = accelc::blob_signature(&c.blob().map_err(fail)?).map_err(fail)?;
    let ins = inputs(&specs, &given, &c.bound, seed)?;
    let device =
        accelc_runtime::driver::DeviceOptions { max_job_cycles: max_cycles, ..Default::default() };
    let result = match (&c.compiled, &c.plan) {
        (Some(compiled), _) => accelc::first_difference(c.oracle(), compiled, &ins, device),
        (None, Some(plan)) => {
            accelc::first_difference_plan(c.oracle(), &c.optimized, plan, &ins, device)
        }
        (None, None) => bail!("internal: a compilation with neither a program nor a plan"),
    };
    match result.map_err(fail)? {
        // Nothing compared is not a match.
        Ok(0) => bail!(invalid("no tensor of the device's run has a counterpart in the reference")),
        Ok(n) => {
            writeln!(
                out,
                "all {n} tensors match the reference interpreter (integers exactly; floats within rtol {RTOL}, atol {ATOL}, plus {SCALE_TOL} of each tensor's largest magnitude)"
            )?;
            Ok(())
        }
        Err(d) => {
            writeln!(out, "first difference: tensor `{}`", d.tensor)?;
            writeln!(out, "  produced by:   {}", d.layer)?;
            if d.insts != (0, 0) {
                writeln!(out, "  instructions:  {}..{}", d.insts.0, d.insts.1)?;
            }
            writeln!(
                out,
                "  element {}: device {}, reference {}",
                d.element.0, d.element.1, d.element.2
            )?;
            writeln!(
                out,
                "  max abs diff {:.3e}; largest |reference| {:.3e}",
                d.max_abs_diff, d.max_ref
            )?;
            writeln!(
                out,
                "  tolerance: integers exactly; floats rtol {RTOL}, atol {ATOL}, plus {SCALE_TOL} of the largest magnitude"
            )?;
            bail!(invalid(format!("`{}` differs from the reference", d.tensor)))
        }
    }
}

/// The files `profile` writes besides its table.
pub(crate) struct ProfileFiles<'a> {
    /// A Chrome trace.
    pub(crate) trace: Option<&'a Path>,
    /// The roofline chart (SVG).
    pub(crate) roofline: Option<&'a Path>,
}

/// Per layer: cycles from the trace (barrier to barrier), DMA bytes from the descriptors.
#[allow(clippy::too_many_arguments, reason = "one per command-line option")]
pub(crate) fn cmd_profile(
    o: OptArgs,
    err: &mut dyn Write,
    model: &Path,
    input_args: &InputArgs,
    files: ProfileFiles<'_>,
    target: &TargetArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (cfg, shapes, seed) = (target.config.as_deref(), &target.input_shapes, input_args.seed);
    let given = read_tensor_args(&input_args.inputs, "input")?;
    let loaded = load_or_compile(model, cfg, shapes, false, o, &given, err)?;
    let bound = loaded.bound().to_vec();
    let session = session(model, loaded.blob, input_args.max_cycles)?;
    let layers: Option<&[Layer]> =
        loaded.compilation.as_ref().and_then(|c| c.compiled.as_ref()).map(|c| c.layers.as_slice());
    let ins = inputs(session.inputs(), &given, &bound, seed)?;
    let p = accelc::profile(&session, layers, &ins)
        .map_err(|e| invalid(format!("{}: {e}", model.display())))?;
    let cfgd = session.config().clone();
    let stats = &p.stats;
    writeln!(
        out,
        "{:<44} {:>9} {:>11} {:>13} {:>11} {:>6} {:>11} {:>6}",
        "layer", "kind", "cycles", "MACs", "DMA bytes", "util", "roofline", "ratio"
    )?;
    let (mut t_cycles, mut t_macs, mut t_bytes, mut t_roof) = (0u64, 0u64, 0u64, 0u64);
    for l in &p.layers {
        let mut name = l.name.clone();
        if name.len() > 44 {
            name.truncate(41);
            name.push_str("...");
        }
        writeln!(
            out,
            "{name:<44} {:>9} {:>11} {:>13} {:>11} {:>5.1}% {:>11} {:>6.2}",
            l.kind.name(),
            l.cycles,
            l.macs,
            l.dma_bytes,
            l.utilisation * 100.0,
            l.roofline_cycles,
            l.cycles as f64 / l.roofline_cycles.max(1) as f64
        )?;
        t_cycles += l.cycles;
        t_macs += l.macs;
        t_bytes += l.dma_bytes;
        t_roof += l.roofline_cycles;
    }
    let util = p.utilisation(&session);
    writeln!(
        out,
        "{:<44} {:>9} {t_cycles:>11} {t_macs:>13} {t_bytes:>11} {:>5.1}% {t_roof:>11} {:>6.2}",
        "total",
        "",
        util * 100.0,
        t_cycles as f64 / t_roof.max(1) as f64
    )?;
    writeln!(
        out,
        "job: {} cycles ({:.3} ms at {} GHz)",
        stats.cycles,
        stats.cycles as f64 * 1e3 / cfgd.clock_hz as f64,
        cfgd.clock_hz as f64 / 1e9
    )?;
    // A plan: every step, device jobs in simulated cycles, host calls in wall time.
    for s in &p.steps {
        match (&s.device, s.host_time) {
            (Some((_, st)), _) => {
                writeln!(out, "step {:<10} device {:>11} cycles", s.name, st.cycles)?
            }
            (None, Some(t)) => writeln!(
                out,
                "step {:<10} host   {:>11.3} ms wall time on this CPU",
                s.name,
                t.as_secs_f64() * 1e3
            )?,
            (None, None) => {}
        }
    }
    if !p.steps.is_empty() && files.trace.is_some() {
        writeln!(out, "note: the trace holds the last device job of the plan")?;
    }
    if let Some(path) = files.trace {
        let json = accelc_runtime::sim::trace::chrome_json(&stats.trace, cfgd.clock_hz);
        write_atomic(path, json.as_bytes())?;
        writeln!(out, "trace: {} ({} events)", path.display(), stats.trace.len())?;
    }
    if let Some(path) = files.roofline {
        let points: Vec<accelc::roofline::Point> = p
            .layers
            .iter()
            .map(|l| accelc::roofline::Point {
                name: l.name.clone(),
                cycles: l.cycles,
                macs: l.macs,
                dma_bytes: l.dma_bytes,
            })
            .collect();
        let file = model.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let title = format!("{file} on {}", cfgd.name);
        let svg =
            accelc::roofline::svg(&points, &cfgd, accelc_isa::Dtype::F32, &title).map_err(fail)?;
        write_atomic(path, svg.as_bytes())?;
        writeln!(out, "roofline: {} ({} layers)", path.display(), points.len())?;
    }
    Ok(())
}

/// `check`: every node that does not import, every node of the optimized graph with whether it
/// runs on the device (the lowering's own answer), and whether the model compiles. Exit status
/// 0 exactly when `compile` with the same options succeeds.
pub(crate) fn cmd_check(
    model: &Path,
    o: OptArgs,
    json: bool,
    target: &TargetArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let opts = facade_options(o, target.config.as_deref(), &target.input_shapes, false)?;
    let report = match accelc::check(Source::Path(model), &opts) {
        Ok(r) => r,
        Err(e) => {
            if json {
                let v = serde_json::json!({ "model": model.display().to_string(), "supported": false, "error": e.to_string() });
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            }
            bail!(fail(e));
        }
    };
    let blockers: Vec<&accelc::NodeCheck> = report.blockers().collect();
    // A compile failure no node explains (a whole-program limit) counts as a blocker too.
    let whole = report.compile.as_ref().err().filter(|_| blockers.is_empty());
    let count = blockers.len() + usize::from(whole.is_some());
    if json {
        let node = |n: &accelc::NodeCheck| {
            serde_json::json!({
                "node": n.name,
                "op": n.op_type,
                "opset": report.opset,
                "stage": n.stage,
                "device": n.result.is_ok(),
                "placement": n.placement.map(|p| match p {
                    accelc_compiler::lower::partition::Place::Device => "device",
                    accelc_compiler::lower::partition::Place::Host => "host",
                }),
                "reason": n.result.as_ref().err().map(|e| Clipped(e).to_string()),
            })
        };
        let v = serde_json::json!({
            "model": model.display().to_string(),
            "opset": report.opset,
            "config": report.config,
            "nodes": report.imported_nodes,
            "supported": report.supported(),
            "blockers": blockers.iter().map(|n| node(n)).collect::<Vec<_>>(),
            "placement": report.nodes.iter().map(node).collect::<Vec<_>>(),
            "compile_error": report.compile.as_ref().err().map(|e| Clipped(e).to_string()),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        for n in &report.nodes {
            match (&n.result, n.stage) {
                (Err(why), "import") => writeln!(
                    out,
                    "  node `{}` ({}, opset {}): {}",
                    Clipped(&n.name),
                    Clipped(&n.op_type),
                    report.opset,
                    Clipped(why)
                )?,
                (Err(why), "frontend") => writeln!(
                    out,
                    "  node `{}` ({}): {}",
                    Clipped(&n.name),
                    Clipped(&n.op_type),
                    Clipped(why)
                )?,
                (Err(why), _)
                    if n.placement == Some(accelc_compiler::lower::partition::Place::Host) =>
                {
                    writeln!(
                        out,
                        "  node `{}` ({}): on the host: {}",
                        Clipped(&n.name),
                        Clipped(&n.op_type),
                        Clipped(why)
                    )?
                }
                (Err(why), _) => writeln!(
                    out,
                    "  node `{}` ({}): not on `{}`: {}",
                    Clipped(&n.name),
                    Clipped(&n.op_type),
                    report.config,
                    Clipped(why)
                )?,
                (Ok(()), _) => writeln!(
                    out,
                    "  node `{}` ({}): on `{}`",
                    Clipped(&n.name),
                    Clipped(&n.op_type),
                    report.config
                )?,
            }
        }
        if let Some(e) = whole {
            writeln!(out, "  whole program: {e}")?;
        }
        writeln!(
            out,
            "{}: opset {}, {} nodes, {} on the host, {count} blocker(s) for `{}`",
            model.display(),
            report.opset,
            report.imported_nodes,
            report.on_host().count(),
            report.config
        )?;
    }
    if report.supported() {
        Ok(())
    } else {
        // The list is the output; the exit status says the model does not compile.
        Err(invalid(format!(
            "{} does not compile for `{}` ({count} blocker(s))",
            model.display(),
            report.config
        )))
    }
}

/// `ir`: the frontend and the optimizer (the facade's steps), then the IR in the text syntax.
#[allow(clippy::too_many_arguments, reason = "one per command-line option")]
pub(crate) fn cmd_ir(
    model: &Path,
    output: Option<&Path>,
    dump_ir: bool,
    elide: Option<usize>,
    shapes: &[String],
    o: OptArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let opts = facade_options(o, None, shapes, false)?;
    let src = Source::Path(model);
    let mut obs = CliObserver::new(o.verbose, dump_ir);
    obs.elide = elide.unwrap_or(usize::MAX);
    let mut graph = accelc::load_graph(src, &opts, &mut obs).map_err(fail)?;
    accelc::optimize(&mut graph, &src, &opts, &mut obs).map_err(fail)?;
    // Dumps first, then the optimizer's log.
    err.write_all(obs.dumps.as_bytes())?;
    err.write_all(obs.log.as_bytes())?;
    let text = accelc_compiler::text::print_with(&graph, obs.elide);
    match output {
        Some(path) => write_atomic(path, text.as_bytes())?,
        None => out.write_all(text.as_bytes())?,
    }
    Ok(())
}
