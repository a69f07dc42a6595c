//! The model zoo end to end: per float model, the compile time (in process at `-O0`, and the
//! whole `accelc compile` process at `-O2` against creating onnxruntime's session for the same
//! file in one Python process), the peak memory of that compile against the file's size, the
//! simulated cycles against the sum of per-layer roofline bounds, and the simulator's wall
//! time next to onnxruntime's CPU time for the same model and input (onnxruntime from the
//! test venv, one thread, timed in the same run). Then the int8 QDQ models at `-O2` (the
//! quantization rules make their integer kernels): the same figures on `default`, and the
//! cycles on `u65` next to Vela 5.2's estimates for Ethos-U65-512. Under each model, the
//! optimizer's cost model against the simulated cycles, whole and per layer.
//! Run with `cargo bench -p accelc-bench --bench zoo` after `bash .ci/setup`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use accelc::{HostTensor, Level, Options, Session, Source};
use accelc_isa::DeviceConfig;

const MODELS: &[&str] = &[
    "mlp_mnist",
    "transformer_encoder",
    "transformer_encoder_legacy",
    "squeezenet1_1",
    "mobilenet_v2",
    "resnet18",
];

/// The int8 QDQ models and Vela 5.2's cycle estimate for the same architecture on
/// Ethos-U65-512 (the int8 issue's figures).
const INT8_MODELS: &[(&str, f64)] = &[
    ("resnet18_int8_qdq", 5.54e6),
    ("mobilenet_v2_int8_qdq", 2.29e6),
    ("mobilenet_v2_int8_qdq_pc", 2.29e6),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ has a parent").to_path_buf()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// onnxruntime's median inference time in seconds (one intra-op thread, like the simulator).
fn onnxruntime_seconds(model: &Path, input: &Path, runs: usize) -> Option<f64> {
    let py = root().join(".venv/bin/python");
    let script = format!(
        "import time, numpy as np, onnxruntime as ort\n\
         o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1\n\
         s = ort.InferenceSession(r'{}', o, providers=['CPUExecutionProvider'])\n\
         x = np.load(r'{}'); name = s.get_inputs()[0].name\n\
         s.run(None, {{name: x}})\n\
         t = []\n\
         for _ in range({runs}):\n\
         \x20   a = time.perf_counter(); s.run(None, {{name: x}}); t.append(time.perf_counter() - a)\n\
         print(sorted(t)[len(t) // 2])\n",
        model.display(),
        input.display()
    );
    let out = Command::new(py).arg("-c").arg(script).output().ok()?;
    if !out.status.success() {
        eprintln!("onnxruntime: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Runs the compile-peak helper (`accelc compile MODEL -o BLOB` through the CLI's entry point,
/// in its own process), the median of three runs: (the whole process's wall seconds, peak RSS,
/// model file bytes, RSS at startup before compiling).
fn compile_peak(model: &Path) -> Option<(f64, u64, u64, u64)> {
    let exe = std::env::current_exe().ok()?;
    // target/release/deps/zoo-HASH -> target/release/compile-peak
    let bin = exe.parent()?.parent()?.join("compile-peak");
    let blob = std::env::temp_dir().join(format!("accelc-bench-{}.blob", std::process::id()));
    let mut walls = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new(&bin).arg(model).arg(&blob).output().ok()?;
        walls.push(t.elapsed().as_secs_f64());
        if !out.status.success() {
            eprintln!("compile-peak: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        last = Some(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let _ = std::fs::remove_file(&blob);
    let text = last?;
    let f: Vec<&str> = text.split_whitespace().collect();
    Some((median(walls), f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?, f.get(4)?.parse().ok()?))
}

/// onnxruntime's side of the compile comparison, medians of three: the wall time of a whole
/// Python process that imports onnxruntime and creates an `InferenceSession` for `model`
/// (default graph optimisations, one thread), and the session creation alone inside it.
fn onnxruntime_session_seconds(model: &Path) -> Option<(f64, f64)> {
    let py = root().join(".venv/bin/python");
    let script = format!(
        "import time, onnxruntime as ort\n\
         o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1\n\
         a = time.perf_counter(); ort.InferenceSession(r'{}', o, providers=['CPUExecutionProvider'])\n\
         print(time.perf_counter() - a)\n",
        model.display()
    );
    let (mut process, mut session) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new(&py).arg("-c").arg(&script).output().ok()?;
        process.push(t.elapsed().as_secs_f64());
        session.push(String::from_utf8_lossy(&out.stdout).trim().parse().ok()?);
    }
    Some((median(process), median(session)))
}

/// Simulated cycles and the median wall time of `runs` inferences of `c` on `input` (.npy).
fn simulate(c: &accelc::Compilation, input: &Path, runs: usize) -> (u64, f64) {
    let session = Session::new(c.blob().unwrap()).expect("the blob loads through the driver");
    let x: Vec<u8> = std::fs::read(input).expect("input");
    // The .npy payload: the header ends with a newline, data is float32 little endian.
    let header = x.iter().position(|b| *b == b'\n').expect("npy header") + 1;
    let spec = session.inputs()[0].dims.clone();
    let data = HostTensor::new(accelc::DType::F32, spec, x[header..].to_vec())
        .expect("the input matches the model");
    let mut walls = Vec::new();
    let mut cycles = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let r = session.run(std::slice::from_ref(&data)).expect("the model runs");
        walls.push(t.elapsed().as_secs_f64());
        cycles = r.stats.cycles;
    }
    (cycles, median(walls))
}

/// The optimizer's cost model against the simulator, per layer: for each layer the compiler
/// recorded, the e-graph's estimate (summed over the layer's nodes) over the simulated cycles.
/// Returns a line: the whole model's ratio, the median and the extremes of the per-layer
/// ratios (layers with no node of their own, such as layout copies, are left out).
fn estimate_vs_simulated(c: &accelc::Compilation, input: &Path, config: &DeviceConfig) -> String {
    let Some(compiled) = c.compiled.as_ref() else { return "?".into() };
    let est = accelc_compiler::opt::cost::node_cycles(&c.optimized, config);
    let by_name: std::collections::HashMap<&str, f64> =
        c.optimized.nodes.iter().zip(&est).map(|(n, e)| (n.name.as_str(), *e)).collect();
    let Ok(session) = Session::new(c.blob().unwrap()) else { return "?".into() };
    let Ok(x) = accelc::npy::read(input) else { return "?".into() };
    let Ok(p) = accelc::profile(&session, Some(&compiled.layers), &[x]) else {
        return "?".into();
    };
    let mut ratios: Vec<(f64, String)> = Vec::new();
    let (mut est_total, mut sim_total) = (0.0, 0u64);
    for l in &p.layers {
        let e: f64 = l.name.split('+').filter_map(|n| by_name.get(n)).sum();
        if e > 0.0 && l.cycles > 0 {
            ratios.push((e / l.cycles as f64, l.name.clone()));
            est_total += e;
            sim_total += l.cycles;
        }
    }
    if ratios.is_empty() {
        return "?".into();
    }
    ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (lo, hi) = (&ratios[0], &ratios[ratios.len() - 1]);
    format!(
        "cost model / simulated: {:.2} whole, per layer median {:.2}, {:.2} ({}) to {:.2} ({}) over {} layers",
        est_total / sim_total as f64,
        ratios[ratios.len() / 2].0,
        lo.0,
        lo.1.chars().take(40).collect::<String>(),
        hi.0,
        hi.1.chars().take(40).collect::<String>(),
        ratios.len()
    )
}

/// Median compile time (the blob serialised in memory included) of three `-O2` compiles for
/// `config`, and the last compilation.
fn compile_o2(model: &Path, config: DeviceConfig) -> (f64, accelc::Compilation) {
    let opts = Options { config, ..Options::default() };
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let t = Instant::now();
        let c = accelc::compile(Source::Path(model), &opts, &mut ()).expect("the model compiles");
        std::hint::black_box(c.blob().expect("the blob serialises"));
        times.push(t.elapsed().as_secs_f64());
        last = Some(c);
    }
    (median(times), last.expect("compiled three times"))
}

fn int8_table(zoo: &Path, runs: usize) {
    println!();
    println!(
        "{:<28} {:>9} {:>12} {:>12} {:>6} {:>10} {:>10} {:>7} {:>12} {:>10} {:>9}",
        "int8 model (-O2)",
        "compile",
        "cycles",
        "roofline",
        "ratio",
        "sim wall",
        "ort cpu",
        "sim/ort",
        "u65 cycles",
        "Vela U65",
        "u65/Vela"
    );
    for (m, vela) in INT8_MODELS {
        let model = zoo.join(format!("{m}.onnx"));
        let input = zoo.join(format!("{m}.input_0.npy"));
        let (compile_s, c) = compile_o2(&model, DeviceConfig::default_npu());
        let (cycles, wall) = simulate(&c, &input, runs);
        let roof =
            c.compiled.as_ref().expect("zoo models run wholly on the device").roofline_cycles();
        let est_line = estimate_vs_simulated(&c, &input, &DeviceConfig::default_npu());
        let (_, u) = compile_o2(&model, DeviceConfig::u65());
        let (u65, _) = simulate(&u, &input, 1);
        let ort = onnxruntime_seconds(&model, &input, runs * 4);
        println!(
            "{:<28} {:>8.3}s {:>12} {:>12} {:>6.2} {:>9.3}s {:>10} {:>7} {:>12} {:>9.2}M {:>9.2}",
            m,
            compile_s,
            cycles,
            roof,
            cycles as f64 / roof as f64,
            wall,
            ort.map_or("?".into(), |o| format!("{o:.4}s")),
            ort.map_or("?".into(), |o| format!("{:.1}", wall / o)),
            u65,
            vela / 1e6,
            u65 as f64 / vela
        );
        println!("    {est_line}");
    }
}

fn main() {
    let zoo = root().join("../shared/models");
    let runs = 5;
    println!(
        "{:<28} {:>9} {:>10} {:>12} {:>12} {:>6} {:>10} {:>10} {:>7}",
        "model",
        "compile",
        "peak MB",
        "cycles",
        "roofline",
        "ratio",
        "sim wall",
        "ort cpu",
        "sim/ort"
    );
    for m in MODELS {
        let model = zoo.join(format!("{m}.onnx"));
        let input = zoo.join(format!("{m}.input_0.npy"));
        let mut times = Vec::new();
        let mut compiled = None;
        // The lowering alone (-O0): the optimizer's payoff is the `opt` bench's. The blob is
        // serialised in memory (its weights are packed then).
        let opts = Options { level: Level::O0, ..Options::default() };
        for _ in 0..3 {
            let t = Instant::now();
            let c = accelc::compile(Source::Path(&model), &opts, &mut ())
                .expect("the zoo model compiles");
            std::hint::black_box(c.blob().expect("the blob serialises"));
            times.push(t.elapsed().as_secs_f64());
            compiled = Some(c);
        }
        let c = compiled.expect("compiled three times");
        let compile_s = median(times);
        let peak = compile_peak(&model);
        let (cycles, wall) = simulate(&c, &input, runs);
        let roof =
            c.compiled.as_ref().expect("zoo models run wholly on the device").roofline_cycles();
        let ort = onnxruntime_seconds(&model, &input, runs * 4);
        let session = onnxruntime_session_seconds(&model);
        let (peak_mb, peak_note, process) = match peak {
            Some((process, rss, size, startup)) => (
                format!("{:.0}", rss as f64 / 1e6),
                format!(
                    "{:.2}x the {:.1} MB file (the process's {:.0} MB at startup, code and \
                     static initialisers, excluded: {:.2}x)",
                    rss as f64 / size as f64,
                    size as f64 / 1e6,
                    startup as f64 / 1e6,
                    rss.saturating_sub(startup) as f64 / size as f64
                ),
                format!(
                    "{process:.3}s, {}",
                    session.map_or("?".into(), |(p, o)| format!(
                        "{:.2}x onnxruntime's session process ({p:.3}s; the session alone {o:.3}s)",
                        process / p
                    ))
                ),
            ),
            None => ("?".into(), "helper not built".into(), "?".into()),
        };
        println!(
            "{:<28} {:>8.3}s {:>10} {:>12} {:>12} {:>6.2} {:>9.3}s {:>10} {:>7}   peak {}; `accelc compile` process {}",
            m,
            compile_s,
            peak_mb,
            cycles,
            roof,
            cycles as f64 / roof as f64,
            wall,
            ort.map_or("?".into(), |o| format!("{o:.4}s")),
            ort.map_or("?".into(), |o| format!("{:.1}", wall / o)),
            peak_note,
            process
        );
        println!("    {}", estimate_vs_simulated(&c, &input, &DeviceConfig::default_npu()));
    }
    int8_table(&zoo, runs);
}
