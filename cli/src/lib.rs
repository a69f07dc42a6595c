//! The `accelc` command line: argument parsing and the subcommands, as a library function so
//! tests drive it in-process with captured output.
//!
//! Exit status: 0 success, 1 the input is invalid (assembly errors, validation errors, a
//! malformed blob), 2 usage or I/O errors.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use accelc_isa::DeviceConfig;
use accelc_isa::blob::{self, Blob};
use anyhow::{anyhow, bail};
use clap::{Parser, Subcommand};

mod isa_tools;
mod models;

pub use models::inputs as model_inputs;

/// Compiler, assembler and tools for the accelc accelerator.
#[derive(Parser, Debug)]
#[command(name = "accelc", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Assemble a program (`.s`) into a command blob or raw instruction words.
    Asm {
        /// The assembly source.
        input: PathBuf,
        /// Output file [default: the input with extension `.blob`, or `.bin` with --raw].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write only the instruction words (16 bytes each), not a blob.
        #[arg(long)]
        raw: bool,
        /// Device configuration the blob targets.
        #[arg(long, default_value = "default")]
        config: String,
    },
    /// Disassemble a blob or raw instruction words; `accelc asm` of the output gives back the
    /// same program, tables and segment table (constant bytes, I/O descriptors, metadata and
    /// debug ranges are not carried by assembly text, and are listed in a comment).
    Disasm {
        /// A blob, or raw instruction words with --raw.
        input: PathBuf,
        /// The input is raw instruction words.
        #[arg(long)]
        raw: bool,
        /// Add each instruction's index and encoding as a comment.
        #[arg(long)]
        hex: bool,
    },
    /// Validate a program as a driver would, and print per-segment DRAM extents and the
    /// run-time bound.
    Verify {
        /// Assembly source, a blob, or raw instruction words with --raw.
        input: PathBuf,
        /// The input is raw instruction words.
        #[arg(long)]
        raw: bool,
        /// Device configuration to validate against [default: the blob's, else `default`].
        #[arg(long)]
        config: Option<String>,
        /// Reject programs whose run-time bound exceeds this many cycles, the driver's job
        /// limit.
        #[arg(long, default_value_t = accelc_isa::verify::DEFAULT_MAX_CYCLES)]
        max_cycles: u64,
    },
    /// Show a blob's header, sections, target, segments, I/O tensors, metadata and program.
    Inspect {
        /// The blob.
        input: PathBuf,
        /// Leave out the disassembly.
        #[arg(long)]
        no_disasm: bool,
    },
    /// Run a program or blob on the simulator and print cycles and engine counters.
    Sim {
        /// Assembly source or a blob.
        input: PathBuf,
        /// Device configuration [default: the blob's, else `default`].
        #[arg(long)]
        config: Option<String>,
        /// Initial contents of a segment, `N=FILE` (repeatable); others are zero-filled.
        #[arg(long = "seg", value_name = "N=FILE")]
        segs: Vec<String>,
        /// Write a segment's final contents, `N=FILE` (repeatable).
        #[arg(long = "dump", value_name = "N=FILE")]
        dumps: Vec<String>,
        /// Write a Chrome trace (opens in Perfetto).
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Functional only: every instruction takes one cycle.
        #[arg(long)]
        no_timing: bool,
        /// Refuse programs whose run-time bound exceeds this many cycles (the driver's job
        /// limit; raise it to run a longer program).
        #[arg(long, default_value_t = accelc_isa::verify::DEFAULT_MAX_CYCLES)]
        max_cycles: u64,
    },
    /// For every node of a model: whether it imports, whether it runs on the device (the
    /// failing constraint when not) and where the compiled model runs it (the device, or the
    /// host CPU). Exit status 0 exactly when `compile` succeeds.
    Check {
        /// The model (binary ONNX or the text syntax).
        model: PathBuf,
        #[command(flatten)]
        opt: models::OptArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: models::TargetArgs,
    },
    /// Run the frontend on a model (binary ONNX or the ONNX text syntax) and print the IR in
    /// the ONNX text syntax.
    Ir {
        /// The model.
        model: PathBuf,
        #[command(flatten)]
        opt: models::OptArgs,
        /// Write the IR here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Also print the IR after import and after every pass, to standard error.
        #[arg(long)]
        dump_ir: bool,
        /// Summarise constants with more elements than this (the output is then not parseable).
        #[arg(long)]
        elide: Option<usize>,
        /// Fix a symbolic input shape, `NAME=D,D,...` (repeatable).
        #[arg(long = "input-shape", value_name = "NAME=DIMS")]
        input_shapes: Vec<String>,
    },
    /// Compile a model (binary ONNX or the text syntax) to a command blob and print a summary.
    Compile {
        /// The model.
        model: PathBuf,
        #[command(flatten)]
        opt: models::OptArgs,
        /// Output blob [default: the model with extension `.blob`].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print the IR after import and after every pass (frontend, optimizer, and the
        /// lowering's legalize, select, schedule and memory plan) to standard error, constants
        /// elided.
        #[arg(long)]
        dump_ir: bool,
        /// What to produce: `blob` (the command blob, or a plan blob when some nodes run on
        /// the host), `mlir` (print the host module of the plan to standard output instead),
        /// or `mlir-all` (print the whole model as one host function: every node lowered to
        /// the `scf`/`memref`/`arith`/`math` dialects, for use with MLIR's own tools).
        #[arg(long, value_name = "WHAT", default_value = "blob")]
        emit: models::Emit,
        #[command(flatten)]
        target: models::TargetArgs,
    },
    /// Run a model (compiled first) or a blob on the simulated device; a plan blob's host
    /// steps run on this CPU.
    Run {
        /// A model or a blob.
        model: PathBuf,
        #[command(flatten)]
        opt: models::OptArgs,
        #[command(flatten)]
        inputs: models::InputArgs,
        /// Write every output to DIR/NAME.npy.
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
        /// Check the outputs against the reference interpreter (rtol 1e-3, atol 1e-5).
        #[arg(long)]
        compare: bool,
        /// Check an output against stored values, `NAME=FILE.npy` (repeatable; within
        /// `--atol` + `--rtol` × |expected|), for instance onnxruntime's output.
        #[arg(long = "expect", value_name = "NAME=FILE")]
        expect: Vec<String>,
        /// Relative tolerance of `--expect`.
        #[arg(long, value_name = "R", default_value_t = accelc::RTOL)]
        rtol: f32,
        /// Absolute tolerance of `--expect`; for a quantized model's dequantized output, a few
        /// steps of its scale (3 × 0.056 for resnet18_int8_qdq's).
        #[arg(long, value_name = "A", default_value_t = accelc::ATOL)]
        atol: f32,
        #[command(flatten)]
        target: models::TargetArgs,
    },
    /// Run a model layer by layer on the device (and the host, for a plan) and on the
    /// reference interpreter and report the first tensor that differs, with its node and
    /// instruction range (or host step).
    Diff {
        /// The model.
        model: PathBuf,
        #[command(flatten)]
        opt: models::OptArgs,
        #[command(flatten)]
        inputs: models::InputArgs,
        #[command(flatten)]
        target: models::TargetArgs,
    },
    /// Per-layer cycles, MACs, DMA bytes, matrix-engine utilisation and roofline bounds of a
    /// model (compiled first) or blob on the simulated device.
    Profile {
        /// A model or a blob.
        model: PathBuf,
        #[command(flatten)]
        opt: models::OptArgs,
        #[command(flatten)]
        inputs: models::InputArgs,
        /// Write a Chrome trace (opens in Perfetto).
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Write the roofline chart as SVG: each layer a point (operational intensity against
        /// achieved rate) under the device's roof.
        #[arg(long)]
        roofline: Option<PathBuf>,
        #[command(flatten)]
        target: models::TargetArgs,
    },
    /// Show device configurations with their peak rates and roofline ridge points.
    Config {
        /// A configuration name [default: all].
        name: Option<String>,
    },
}

/// An error that means "the input is bad" (exit 1) rather than "the tool could not run" (2).
#[derive(Debug)]
struct Invalid(String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

pub(crate) fn invalid(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Invalid(msg.into()))
}

/// Runs the command line `args` (including the program name), writing results to `out` and
/// diagnostics to `err`; returns the exit status.
pub fn run(
    args: impl IntoIterator<Item = OsString>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            let code = if e.use_stderr() { 2 } else { 0 };
            let sink: &mut dyn Write = if e.use_stderr() { err } else { out };
            let _ = sink.write_all(text.as_bytes());
            return code;
        }
    };
    // A reader that went away (`accelc inspect x.blob | head`) only stops the output: the
    // command still does all its work (files, checks) and its status says how that went.
    let mut out = PipeTolerant { inner: out, closed: false };
    match dispatch(cli.command, &mut out, err) {
        Ok(()) => 0,
        Err(e) => {
            // Rendered diagnostics (text syntax, assembly) already start with `error: `.
            let msg = format!("{e:#}");
            let _ = if msg.starts_with("error: ") {
                writeln!(err, "{msg}")
            } else {
                writeln!(err, "error: {msg}")
            };
            if e.downcast_ref::<Invalid>().is_some() { 1 } else { 2 }
        }
    }
}

/// Standard output that swallows what is written after its reader has gone.
struct PipeTolerant<'a> {
    inner: &'a mut dyn Write,
    closed: bool,
}

impl Write for PipeTolerant<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            r => r,
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.inner.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            r => r,
        }
    }
}

fn dispatch(cmd: Command, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        Command::Asm { input, output, raw, config } => {
            isa_tools::cmd_asm(&input, output, raw, &config, out)
        }
        Command::Disasm { input, raw, hex } => isa_tools::cmd_disasm(&input, raw, hex, out),
        Command::Verify { input, raw, config, max_cycles } => {
            isa_tools::cmd_verify(&input, raw, config.as_deref(), max_cycles, out)
        }
        Command::Inspect { input, no_disasm } => isa_tools::cmd_inspect(&input, !no_disasm, out),
        Command::Config { name } => isa_tools::cmd_config(name.as_deref(), out),
        Command::Check { model, opt, json, target } => {
            models::cmd_check(&model, opt, json, &target, out)
        }
        Command::Ir { model, output, dump_ir, elide, input_shapes, opt } => {
            let o = opt;
            models::cmd_ir(&model, output.as_deref(), dump_ir, elide, &input_shapes, o, out, err)
        }
        Command::Compile { model, output, dump_ir, emit, target, opt } => {
            models::cmd_compile(&model, output, &target, opt, dump_ir, emit, out, err)
        }
        Command::Run { model, inputs, output, compare, expect, rtol, atol, target, opt } => {
            models::cmd_run(
                opt,
                err,
                &model,
                &inputs,
                output.as_deref(),
                compare,
                (&expect, rtol, atol),
                &target,
                out,
            )
        }
        Command::Diff { model, inputs, target, opt } => {
            models::cmd_diff(&model, &inputs, &target, opt, out, err)
        }
        Command::Profile { model, inputs, trace, roofline, target, opt } => {
            let files =
                models::ProfileFiles { trace: trace.as_deref(), roofline: roofline.as_deref() };
            models::cmd_profile(opt, err, &model, &inputs, files, &target, out)
        }
        Command::Sim { input, config, segs, dumps, trace, no_timing, max_cycles } => {
            isa_tools::cmd_sim(
                &input,
                config.as_deref(),
                &segs,
                &dumps,
                trace.as_deref(),
                !no_timing,
                max_cycles,
                out,
            )
        }
    }
}

pub(crate) fn config(name: &str) -> anyhow::Result<DeviceConfig> {
    DeviceConfig::by_name(name).ok_or_else(|| {
        let names: Vec<String> = DeviceConfig::builtin().into_iter().map(|c| c.name).collect();
        anyhow!("unknown configuration `{name}` (known: {})", names.join(", "))
    })
}

/// A regular file of at most 4 GiB (never a FIFO or a device).
pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    use accelc_isa::file::{MAX_FILE_BYTES, ReadError, read_regular};
    read_regular(path, MAX_FILE_BYTES).map_err(|e| match e {
        // Exit status 2, as for other I/O errors; a refused file is invalid input (1).
        ReadError::Io(m) => anyhow!(m),
        ReadError::Refused(m) => invalid(m),
    })
}

pub(crate) fn is_blob(bytes: &[u8]) -> bool {
    bytes.starts_with(&blob::MAGIC)
}

pub(crate) fn read_blob(path: &Path, bytes: &[u8]) -> anyhow::Result<Blob<'static>> {
    let b = Blob::read(bytes).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    Ok(Blob { consts: std::borrow::Cow::Owned(b.consts.to_vec()), ..b })
}

/// Writes `bytes` to `path` atomically, replacing only a regular file
/// ([`accelc_isa::file::write_atomic`]); a refused target is bad input (exit 1), a failing
/// write the tool's problem (exit 2).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    accelc_isa::file::write_atomic(path, bytes).map_err(file_err)
}

/// As [`write_atomic`], the contents written by `write` ([`accelc_isa::file::write_atomic_with`]).
pub(crate) fn write_atomic_with(
    path: &Path,
    write: &mut dyn FnMut(&mut std::io::BufWriter<std::fs::File>) -> Result<(), String>,
) -> anyhow::Result<()> {
    accelc_isa::file::write_atomic_with(path, write).map_err(file_err)
}

fn file_err(e: accelc_isa::file::ReadError) -> anyhow::Error {
    match e {
        accelc_isa::file::ReadError::Io(m) => anyhow!(m),
        accelc_isa::file::ReadError::Refused(m) => invalid(m),
    }
}

/// Refuses to replace an existing regular file that is neither empty nor a blob (a model's
/// external weights, a source file): `-o` naming it is a slip, and replacing it would lose it.
/// Only the first bytes are read; what is not a regular file is left to
/// [`write_atomic`] to refuse.
pub(crate) fn replaces_only_a_blob(path: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let mut head = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(blob::MAGIC.len() as u64).read_to_end(&mut head);
    }
    if !head.is_empty() && !is_blob(&head) {
        bail!(invalid(format!(
            "{}: exists and is not an accelc blob; not replacing it (remove it first, or give \
             another -o)",
            path.display()
        )));
    }
    Ok(())
}

/// Refuses an output path that names the input file (writing would destroy the source).
pub(crate) fn not_the_input(input: &Path, output: &Path) -> anyhow::Result<()> {
    let same = match (std::fs::canonicalize(input), std::fs::canonicalize(output)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!(invalid(format!(
            "{}: the output would overwrite the input; give another -o",
            output.display()
        )));
    }
    Ok(())
}

pub(crate) fn parse_input_shapes(
    args: &[String],
) -> anyhow::Result<accelc_compiler::onnx::ImportOptions> {
    let mut opts = accelc_compiler::onnx::ImportOptions::default();
    for arg in args {
        let (name, dims) =
            arg.split_once('=').ok_or_else(|| anyhow!("`{arg}` is not NAME=D,D,..."))?;
        let dims: Vec<usize> = dims
            .split(',')
            .map(|d| d.trim().parse().map_err(|_| anyhow!("`{d}` in `{arg}` is not a dimension")))
            .collect::<anyhow::Result<_>>()?;
        opts.input_shapes.insert(name.to_string(), dims);
    }
    Ok(opts)
}
