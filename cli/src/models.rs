//! The model commands: `compile`, `run`, `diff` and `profile`, from ONNX (or a blob) to
//! results on the simulated device, checked against the reference interpreter.

use std::io::Write;
use std::path::{Path, PathBuf};

use accelc_compiler::interp::{self, Array};
use accelc_compiler::ir::Graph;
use accelc_compiler::lower::{self, CompileOptions, Compiled, Layer};
use accelc_isa::DeviceConfig;
use accelc_isa::blob::{Blob, Direction, IoTensor};
use anyhow::{Context, anyhow, bail};
use ndarray::{ArrayD, IxDyn};

use crate::{config, invalid, is_blob, parse_input_shapes, read, read_blob, write_atomic};

/// Relative and absolute tolerance of comparisons with the reference interpreter (the
/// zoo's onnxruntime tolerance).
const RTOL: f32 = 1e-3;
const ATOL: f32 = 1e-5;

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
    pub(crate) fn options(&self) -> accelc_compiler::opt::Options {
        accelc_compiler::opt::Options {
            level: accelc_compiler::opt::Level::from_number(self.level)
                .unwrap_or(accelc_compiler::opt::Level::O2),
            ..accelc_compiler::opt::Options::default()
        }
    }
}

/// Runs the optimizer on a frontend graph, logging to `err` when asked.
fn optimize(
    g: &mut Graph,
    model: &Path,
    o: OptArgs,
    cfg: &DeviceConfig,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut opts = o.options();
    opts.config = cfg.clone();
    let report = accelc_compiler::pipeline::run_optimizer(g, &opts, &mut |_, _| {})
        .map_err(|e| invalid(format!("{}: {e}", model.display())))?;
    if o.verbose {
        write!(err, "{report}")?;
    }
    Ok(())
}

/// Loads a model and runs the frontend.
fn load_graph(model: &Path, shape_args: &[String]) -> anyhow::Result<Graph> {
    let opts = parse_input_shapes(shape_args)?;
    let mut g = accelc_compiler::pipeline::load_any(model, &opts).map_err(invalid)?;
    accelc_compiler::pipeline::run_frontend(&mut g, &mut |_, _| {})
        .map_err(|e| invalid(format!("{}: {e}", model.display())))?;
    Ok(g)
}

/// Compiles with a progress bar on standard error when it is a terminal.
fn compile_graph(g: &Graph, model: &Path, opts: &CompileOptions) -> anyhow::Result<Compiled> {
    compile_graph_dumping(g, model, opts, &mut |_, _| {})
}

fn compile_graph_dumping(
    g: &Graph,
    model: &Path,
    opts: &CompileOptions,
    dump: &mut dyn FnMut(&str, &str),
) -> anyhow::Result<Compiled> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("compiling {bar:30} {pos}/{len} kernels")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let result = lower::compile_with(
        g,
        opts,
        &mut |done, total| {
            // Only compiles that take a while are worth a bar.
            if started.elapsed().as_millis() > 300 {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
        },
        dump,
    );
    bar.finish_and_clear();
    result.map_err(|e| invalid(format!("{}: {e}", model.display())))
}

/// A model or blob given on the command line, compiled if needed.
struct Loaded {
    /// The graph before optimisation (the reference).
    graph: Option<Graph>,
    blob: Vec<u8>,
    compiled: Option<Compiled>,
}

fn load_or_compile(
    path: &Path,
    cfg: Option<&str>,
    shapes: &[String],
    expose_all: bool,
    o: OptArgs,
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
        return Ok(Loaded { graph: None, blob: bytes, compiled: None });
    }
    let g = load_graph(path, shapes)?;
    let config = config(cfg.unwrap_or("default"))?;
    let mut opt = g.clone();
    optimize(&mut opt, path, o, &config, err)?;
    let c = compile_graph(&opt, path, &CompileOptions { config, expose_all })?;
    let blob = c.blob().map_err(|e| invalid(e.to_string()))?;
    Ok(Loaded { graph: Some(g), blob, compiled: Some(c) })
}

#[allow(clippy::too_many_arguments, reason = "one per command-line option")]
pub(crate) fn cmd_compile(
    model: &Path,
    output: Option<PathBuf>,
    cfg: &str,
    shapes: &[String],
    o: OptArgs,
    dump_ir: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    use accelc_compiler::text::print_with;
    let started = std::time::Instant::now();
    let config = config(cfg)?;
    let mut dumps = String::new();
    let mut g = accelc_compiler::pipeline::load_any(model, &parse_input_shapes(shapes)?)
        .map_err(invalid)?;
    let mut dump_graph = |pass: &str, g: &Graph| {
        if dump_ir {
            dumps.push_str(&format!("# --- IR after {pass}\n{}", print_with(g, 16)));
        }
    };
    accelc_compiler::pipeline::run_frontend(&mut g, &mut dump_graph)
        .map_err(|e| invalid(format!("{}: {e}", model.display())))?;
    let mut opts = o.options();
    opts.config = config.clone();
    let report = accelc_compiler::pipeline::run_optimizer(&mut g, &opts, &mut dump_graph)
        .map_err(|e| invalid(format!("{}: {e}", model.display())))?;
    if o.verbose {
        write!(err, "{report}")?;
    }
    let c = compile_graph_dumping(
        &g,
        model,
        &CompileOptions { config, expose_all: false },
        &mut |pass, text| {
            if dump_ir {
                dumps.push_str(&format!("# --- kernels after {pass}\n{text}"));
            }
        },
    );
    err.write_all(dumps.as_bytes())?;
    let c = c?;
    let blob = c.blob().map_err(|e| invalid(e.to_string()))?;
    let path = output.unwrap_or_else(|| model.with_extension("blob"));
    write_atomic(&path, &blob)?;
    let elapsed = started.elapsed();
    writeln!(
        out,
        "{} -> {} ({} bytes, {:.2} s)",
        model.display(),
        path.display(),
        blob.len(),
        elapsed.as_secs_f64()
    )?;
    summary(&c, out)
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
    Ok(())
}

/// A small deterministic generator (SplitMix64) for default inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // Uniform in [-1, 1).
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// The inputs of a run (in signature order): from `NAME=FILE.npy` arguments, or uniform random in [-1, 1) with a
/// fixed seed.
pub fn inputs(io: &[IoTensor], args: &[String], seed: u64) -> anyhow::Result<Vec<ArrayD<f32>>> {
    let specs: Vec<&IoTensor> = io.iter().filter(|t| t.direction == Direction::Input).collect();
    let mut given = std::collections::HashMap::new();
    for a in args {
        let (name, file) =
            a.split_once('=').ok_or_else(|| anyhow!("`{a}` is not NAME=FILE.npy"))?;
        if !specs.iter().any(|s| s.name == name) {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            bail!(invalid(format!(
                "the model has no input `{name}` (inputs: {})",
                names.join(", ")
            )));
        }
        let arr: ArrayD<f32> = ndarray_npy::read_npy(file)
            .map_err(|e| invalid(format!("{file}: not a float32 .npy file: {e}")))?;
        given.insert(name.to_string(), arr);
    }
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for s in specs {
        let dims: Vec<usize> = s.dims.iter().map(|d| *d as usize).collect();
        let arr = match given.remove(&s.name) {
            Some(a) => {
                if a.shape() != dims.as_slice() {
                    bail!(invalid(format!(
                        "input `{}` is {:?}; the model takes {:?}",
                        s.name,
                        a.shape(),
                        dims
                    )));
                }
                a
            }
            None => {
                let n: usize = dims.iter().product();
                ArrayD::from_shape_vec(IxDyn(&dims), (0..n).map(|_| rng.next()).collect())?
            }
        };
        out.push(arr);
    }
    Ok(out)
}

fn to_bytes(a: &ArrayD<f32>) -> Vec<u8> {
    a.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The worst element of a comparison: `(index, got, want, excess over the tolerance)`.
fn compare(got: &[f32], want: &[f32]) -> Option<(usize, f32, f32, f32)> {
    compare_scaled(got, want, 0.0)
}

fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max)
}

#[allow(clippy::too_many_arguments, reason = "one per command-line option")]
pub(crate) fn cmd_run(
    o: OptArgs,
    err: &mut dyn Write,
    model: &Path,
    input_args: &[String],
    output_dir: Option<&Path>,
    compare_ref: bool,
    expect: &[String],
    cfg: Option<&str>,
    seed: u64,
    shapes: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let loaded = load_or_compile(model, cfg, shapes, false, o, err)?;
    let blob = read_blob(model, &loaded.blob)?;
    let ins = inputs(&blob.io, input_args, seed)?;
    let bytes: Vec<Vec<u8>> = ins.iter().map(to_bytes).collect();
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let (outs, stats) = accelc_runtime::model::simulate(&blob, &refs, false)
        .map_err(|e| invalid(format!("{}: {e}", model.display())))?;
    let cfgd =
        DeviceConfig::by_name(&blob.target.config_name).unwrap_or_else(DeviceConfig::default_npu);
    writeln!(
        out,
        "ran on `{}` in {} cycles ({:.3} ms at {} GHz)",
        cfgd.name,
        stats.cycles,
        stats.cycles as f64 * 1e3 / cfgd.clock_hz as f64,
        cfgd.clock_hz as f64 / 1e9
    )?;
    let specs: Vec<&IoTensor> =
        blob.io.iter().filter(|t| t.direction == Direction::Output).collect();
    let reference = if compare_ref {
        let g = loaded
            .graph
            .as_ref()
            .ok_or_else(|| invalid("--compare needs the model, not a blob"))?;
        let arrays: Vec<Array> = ins.iter().map(|a| Array::F32(a.clone())).collect();
        Some(interp::run(g, &arrays).map_err(|e| invalid(format!("reference interpreter: {e}")))?)
    } else {
        None
    };
    let mut expected = std::collections::HashMap::new();
    for a in expect {
        let (name, file) =
            a.split_once('=').ok_or_else(|| anyhow!("`{a}` is not NAME=FILE.npy"))?;
        if !specs.iter().any(|s| s.name == name) {
            bail!(invalid(format!("the model has no output `{name}`")));
        }
        let arr: ArrayD<f32> = ndarray_npy::read_npy(file)
            .map_err(|e| invalid(format!("{file}: not a float32 .npy file: {e}")))?;
        expected.insert(name.to_string(), arr);
    }
    // Which comparisons failed: against the reference interpreter, against the expected files.
    let (mut failed_ref, mut failed_expect) = (false, false);
    for (i, (spec, data)) in specs.iter().zip(&outs).enumerate() {
        let vals = f32s(data);
        let dims: Vec<usize> = spec.dims.iter().map(|d| *d as usize).collect();
        write!(out, "output `{}` {:?}", spec.name, dims)?;
        if let Some(r) = &reference {
            let Some(Array::F32(want)) = r.get(i) else {
                bail!("reference output {i} is not float")
            };
            let want: Vec<f32> = want.iter().copied().collect();
            match compare(&vals, &want) {
                None => write!(
                    out,
                    ": matches the reference (max abs diff {:.3e})",
                    max_abs_diff(&vals, &want)
                )?,
                Some((at, g, w, _)) => {
                    failed_ref = true;
                    write!(out, ": DIFFERS from the reference at element {at}: {g} vs {w}")?;
                }
            }
        }
        if let Some(want) = expected.get(&spec.name) {
            let w: Vec<f32> = want.iter().copied().collect();
            if want.shape() != dims.as_slice() {
                failed_expect = true;
                write!(out, "; expected shape {:?}", want.shape())?;
            } else {
                match compare(&vals, &w) {
                    None => write!(
                        out,
                        "; matches the expected values (max abs diff {:.3e})",
                        max_abs_diff(&vals, &w)
                    )?,
                    Some((at, g, wv, _)) => {
                        failed_expect = true;
                        write!(
                            out,
                            "; DIFFERS from the expected values at element {at}: {g} vs {wv}"
                        )?;
                    }
                }
            }
        }
        writeln!(out)?;
        if let Some(dir) = output_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
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
            let arr = ArrayD::from_shape_vec(IxDyn(&dims), vals)?;
            ndarray_npy::write_npy(&path, &arr)
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(out, "  written to {}", path.display())?;
        }
    }
    match (failed_ref, failed_expect) {
        (false, false) => {}
        (true, false) => {
            bail!(invalid("the device's results differ from the reference interpreter"))
        }
        (false, true) if compare_ref => bail!(invalid(
            "the device's results differ from the expected values (--expect) but match the \
             reference interpreter, so the model's reference semantics or the expected file \
             are in question"
        )),
        (false, true) => {
            bail!(invalid("the device's results differ from the expected values (--expect)"))
        }
        (true, true) => bail!(invalid(
            "the device's results differ from the reference interpreter and from the expected \
             values (--expect)"
        )),
    }
    Ok(())
}

/// Error allowed on intermediate tensors in proportion to the tensor's largest magnitude:
/// summing in another order leaves rounding errors that scale with the terms, not with the
/// (possibly cancelled) result, so elementwise tolerances alone flag near-zero outputs of
/// residual additions. About 170 ulps of the largest element.
const SCALE_TOL: f32 = 1e-5;

/// The first tensor, in program order, on which the device and the reference interpreter
/// disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    /// The tensor (ONNX value name).
    pub tensor: String,
    /// The kernel that produced it (its ONNX nodes joined with `+`).
    pub layer: String,
    /// Its instruction range.
    pub insts: (u32, u32),
    /// The worst element: index, device value, reference value.
    pub element: (usize, f32, f32),
    /// Largest absolute difference and largest reference magnitude in the tensor.
    pub max_abs_diff: f32,
    /// Largest reference magnitude.
    pub max_ref: f32,
}

/// Runs a model compiled with `expose_all` on the simulator and `graph` (the reference: the
/// model before optimisation) on the interpreter, and returns the first tensor, in program
/// order, that differs (or the number of tensors compared). Tensors are matched by name; the
/// optimizer keeps a value's name only on values equal to it, and tensors it introduced (no
/// counterpart in the reference) are skipped.
pub fn first_difference(
    graph: &Graph,
    compiled: &Compiled,
    inputs: &[ArrayD<f32>],
) -> anyhow::Result<Result<usize, Difference>> {
    let bytes = compiled.blob().map_err(|e| invalid(e.to_string()))?;
    let blob = Blob::read(&bytes).map_err(|e| invalid(e.to_string()))?;
    let data: Vec<Vec<u8>> = inputs.iter().map(to_bytes).collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let (outs, _) =
        accelc_runtime::model::simulate(&blob, &refs, false).map_err(|e| invalid(e.to_string()))?;
    let names: Vec<String> = compiled
        .io
        .iter()
        .filter(|t| t.direction == Direction::Output)
        .map(|t| t.name.clone())
        .collect();
    // Reference values with the device's output names (those the reference has).
    let mut g2 = graph.clone();
    let mut known: Vec<String> = Vec::new();
    g2.outputs = names
        .iter()
        .filter_map(|n| {
            let i = graph.values.iter().position(|v| &v.name == n && v.constant.is_none())?;
            known.push(n.clone());
            Some(accelc_compiler::ir::ValueId(i as u32))
        })
        .collect();
    let arrays: Vec<Array> = inputs.iter().map(|a| Array::F32(a.clone())).collect();
    let want =
        interp::run(&g2, &arrays).map_err(|e| invalid(format!("reference interpreter: {e}")))?;
    let mut checked = 0;
    for layer in &compiled.layers {
        let Some(v) = &layer.output else { continue };
        let (Some(i), Some(r)) =
            (names.iter().position(|x| x == v), known.iter().position(|x| x == v))
        else {
            continue;
        };
        let Array::F32(w) = &want[r] else { continue };
        let w: Vec<f32> = w.iter().copied().collect();
        let got = f32s(&outs[i]);
        checked += 1;
        let max_ref = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        if let Some((at, gv, wv, _)) = compare_scaled(&got, &w, SCALE_TOL * max_ref) {
            return Ok(Err(Difference {
                tensor: v.clone(),
                layer: layer.name.clone(),
                insts: (layer.start, layer.end),
                element: (at, gv, wv),
                max_abs_diff: max_abs_diff(&got, &w),
                max_ref,
            }));
        }
    }
    Ok(Ok(checked))
}

/// As [`compare`] with an extra absolute allowance.
fn compare_scaled(got: &[f32], want: &[f32], extra: f32) -> Option<(usize, f32, f32, f32)> {
    let mut worst: Option<(usize, f32, f32, f32)> = None;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // NaN matches only NaN and an infinity only itself (inf - inf is NaN, which would
        // compare as within any tolerance).
        let excess = if g.is_finite() && w.is_finite() {
            (g - w).abs() - (ATOL + RTOL * w.abs() + extra)
        } else if g == w || (g.is_nan() && w.is_nan()) {
            0.0
        } else {
            f32::INFINITY
        };
        if excess > 0.0 && worst.is_none_or(|x| excess > x.3) {
            worst = Some((i, *g, *w, excess));
        }
    }
    worst
}

#[allow(clippy::too_many_arguments, reason = "one per command-line option")]
pub(crate) fn cmd_diff(
    model: &Path,
    input_args: &[String],
    cfg: Option<&str>,
    seed: u64,
    shapes: &[String],
    o: OptArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let loaded = load_or_compile(model, cfg, shapes, true, o, err)?;
    let (Some(g), Some(c)) = (&loaded.graph, &loaded.compiled) else { bail!("internal: no graph") };
    let ins = inputs(&c.io, input_args, seed)?;
    match first_difference(g, c, &ins)? {
        Ok(n) => {
            writeln!(
                out,
                "all {n} tensors match the reference interpreter (rtol {RTOL}, atol {ATOL}, plus {SCALE_TOL} of each tensor's largest magnitude)"
            )?;
            Ok(())
        }
        Err(d) => {
            writeln!(out, "first difference: tensor `{}`", d.tensor)?;
            writeln!(out, "  produced by:   {}", d.layer)?;
            writeln!(out, "  instructions:  {}..{}", d.insts.0, d.insts.1)?;
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
                "  tolerance: rtol {RTOL}, atol {ATOL}, plus {SCALE_TOL} of the largest magnitude"
            )?;
            bail!(invalid(format!("`{}` differs from the reference", d.tensor)))
        }
    }
}

/// Per layer: cycles from the trace (barrier to barrier), DMA bytes from the descriptors.
#[allow(clippy::too_many_arguments, reason = "one per command-line option")]
pub(crate) fn cmd_profile(
    o: OptArgs,
    err: &mut dyn Write,
    model: &Path,
    input_args: &[String],
    trace: Option<&Path>,
    cfg: Option<&str>,
    shapes: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use accelc_isa::{Op, Program};
    let loaded = load_or_compile(model, cfg, shapes, false, o, err)?;
    let blob: Blob<'static> = read_blob(model, &loaded.blob)?;
    let layers: Vec<Layer> = match &loaded.compiled {
        Some(c) => c.layers.clone(),
        None => lower::layers_from_blob(&blob).ok_or_else(|| {
            invalid(format!("{}: the blob has no layer records", model.display()))
        })?,
    };
    let cfgd =
        DeviceConfig::by_name(&blob.target.config_name).unwrap_or_else(DeviceConfig::default_npu);
    let ins = inputs(&blob.io, input_args, 0)?;
    let bytes: Vec<Vec<u8>> = ins.iter().map(to_bytes).collect();
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let (_, stats) = accelc_runtime::model::simulate(&blob, &refs, true)
        .map_err(|e| invalid(format!("{}: {e}", model.display())))?;
    let program = Program::decode(&blob.program).map_err(|e| invalid(e.to_string()))?;
    // Completion cycle of every barrier.
    let mut barrier_end = std::collections::HashMap::new();
    for e in &stats.trace {
        if e.mnemonic == "barrier" {
            barrier_end.insert(e.inst, e.end);
        }
    }
    let peak_per_cycle =
        cfgd.peak_macs_per_sec(accelc_isa::Dtype::F32) as f64 / cfgd.clock_hz as f64;
    writeln!(
        out,
        "{:<44} {:>9} {:>11} {:>13} {:>11} {:>6} {:>11} {:>6}",
        "layer", "kind", "cycles", "MACs", "DMA bytes", "util", "roofline", "ratio"
    )?;
    let (mut prev, mut t_cycles, mut t_macs, mut t_bytes, mut t_roof) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for l in &layers {
        let end = barrier_end.get(&(l.end as usize - 1)).copied().unwrap_or(prev);
        let cycles = end.saturating_sub(prev);
        prev = end;
        let moved: u64 = program.insts[l.start as usize..l.end as usize]
            .iter()
            .map(|i| match &i.op {
                Op::DmaLoad(x) => program.dma[usize::from(x.desc.0)].bytes(),
                Op::DmaStore(x) => program.dma[usize::from(x.desc.0)].bytes(),
                _ => 0,
            })
            .sum();
        let roof = l.roofline_cycles(&cfgd);
        let util = l.macs as f64 / (cycles.max(1) as f64 * peak_per_cycle);
        let mut name = l.name.clone();
        if name.len() > 44 {
            name.truncate(41);
            name.push_str("...");
        }
        writeln!(
            out,
            "{name:<44} {:>9} {cycles:>11} {:>13} {moved:>11} {:>5.1}% {roof:>11} {:>6.2}",
            l.kind.name(),
            l.macs,
            util * 100.0,
            cycles as f64 / roof.max(1) as f64
        )?;
        t_cycles += cycles;
        t_macs += l.macs;
        t_bytes += moved;
        t_roof += roof;
    }
    let util = t_macs as f64 / (t_cycles.max(1) as f64 * peak_per_cycle);
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
    if let Some(path) = trace {
        let json = accelc_runtime::sim::trace::chrome_json(&stats.trace, cfgd.clock_hz);
        write_atomic(path, json.as_bytes())?;
        writeln!(out, "trace: {} ({} events)", path.display(), stats.trace.len())?;
    }
    Ok(())
}
