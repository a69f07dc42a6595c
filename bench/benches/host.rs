//! Host fallback measured: models that run partly on the host (a plan of device jobs and
//! JIT-compiled MLIR host calls) timed end to end through the session, next to the reference
//! interpreter and onnxruntime (one thread) on the same input, in the same run; plus the
//! split between host wall time and simulated device cycles. The zoo's own figures are in the
//! `zoo` bench: every zoo model compiles to a device program, so host fallback leaves them
//! unchanged (that bench asserts there is no plan).
//! Run with `cargo bench -p accelc-bench --bench host` after `bash .ci/setup`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use accelc::{HostTensor, Options, Session, Source};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ has a parent").to_path_buf()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Host-heavy models in the ONNX text syntax: (name, text, input shape).
fn models() -> Vec<(&'static str, String, Vec<usize>)> {
    let h = "<ir_version: 8, opset_import: [\"\" : 17]>\n";
    vec![
        (
            // Upsampling and integer post-processing around one device convolution.
            "resize_conv_int64",
            format!(
                "{h}g (float[1,3,96,96] x) => (float[1,8,192,192] y) \
                 <float[4] sc = {{1.0, 1.0, 2.0, 2.0}}, float[8,3,3,3] w = {{{}}}, int64[1] q = {{7}}> {{\n\
                 r = Resize <mode: string = \"linear\"> (x, \"\", sc)\n\
                 c = Conv <pads: ints = [1,1,1,1]> (r, w)\n\
                 i = Cast <to: int = 7> (c)\n\
                 m = Mod (i, q)\n\
                 y = Cast <to: int = 1> (m)\n}}\n",
                (0..216)
                    .map(|k| format!("{:.3}", ((k * 37 % 23) as f32 - 11.0) / 9.0))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            vec![1, 3, 96, 96],
        ),
        (
            // 3-D pooling (the device pools in 1-D and 2-D only), all on the host.
            "maxpool3d",
            format!(
                "{h}g (float[1,16,16,64,64] x) => (float[1,16,8,32,32] y) {{\n\
                 y = MaxPool <kernel_shape: ints = [2,2,2], strides: ints = [2,2,2]> (x)\n}}\n"
            ),
            vec![1, 16, 16, 64, 64],
        ),
    ]
}

/// onnxruntime's median time in seconds for `runs` inferences (one thread).
fn onnxruntime(model: &Path, input: &Path, runs: usize) -> Option<f64> {
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

/// The text model as a binary `.onnx` file (through the pinned onnx package's parser), so
/// onnxruntime reads the same graph.
fn to_binary(text: &str, path: &Path) -> bool {
    let py = root().join(".venv/bin/python");
    let script = "import sys, onnx, onnx.parser\n\
                  m = onnx.parser.parse_model(sys.stdin.read())\n\
                  onnx.save(m, sys.argv[1])\n";
    let mut child = match Command::new(py)
        .arg("-c")
        .arg(script)
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return false,
    };
    use std::io::Write as _;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    child.wait().is_ok_and(|s| s.success())
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("accelc-bench-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    println!(
        "{:<20} {:>5} {:>5} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>9} {:>9}",
        "model (-O2)",
        "jobs",
        "calls",
        "accelc",
        "host part",
        "device cyc",
        "compile",
        "load+JIT",
        "reference",
        "ort cpu",
        "acc/ref",
        "acc/ort"
    );
    for (name, text, shape) in models() {
        let t = Instant::now();
        let c = accelc::compile(Source::Text(&text), &Options::default(), &mut ())
            .expect("the model compiles");
        let compile = t.elapsed().as_secs_f64();
        let plan = c.plan.as_ref().expect("a host-heavy model compiles to a plan");
        let jobs = plan.device_steps().count();
        let calls = plan.steps.len() - jobs;
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0).collect();
        let input = HostTensor::from_f32(shape.clone(), &x).expect("the input");
        let t = Instant::now();
        let session = Session::new(c.blob().unwrap()).expect("the plan loads");
        let load = t.elapsed().as_secs_f64();
        let (mut walls, mut host, mut cycles) = (Vec::new(), Vec::new(), 0);
        let mut out = None;
        for _ in 0..runs {
            let t = Instant::now();
            let r = session.run(std::slice::from_ref(&input)).expect("the plan runs");
            walls.push(t.elapsed().as_secs_f64());
            host.push(r.steps.iter().filter_map(|s| s.host_time).map(|d| d.as_secs_f64()).sum());
            cycles = r.stats.cycles;
            out = Some(r.outputs);
        }
        let mut refs = Vec::new();
        let mut want = None;
        for _ in 0..runs.min(3) {
            let t = Instant::now();
            want = Some(accelc::reference(c.oracle(), std::slice::from_ref(&input)).expect("ref"));
            refs.push(t.elapsed().as_secs_f64());
        }
        // The three agree before their times mean anything.
        for (g, w) in out.expect("ran").iter().zip(want.expect("reference ran").iter()) {
            assert_eq!(accelc::compare_tensors(g, w).expect("comparable"), None, "{name}");
        }
        let model = dir.join(format!("{name}.onnx"));
        let npy = dir.join(format!("{name}.input.npy"));
        accelc::npy::write(&npy, &input).expect("the input file");
        let ort = to_binary(&text, &model).then(|| onnxruntime(&model, &npy, runs * 4)).flatten();
        let (wall, reference) = (median(walls), median(refs));
        println!(
            "{name:<20} {jobs:>5} {calls:>5} {:>10.4}s {:>10.4}s {cycles:>11} {compile:>10.3}s {load:>10.3}s {reference:>10.4}s {:>11} {:>9.2} {:>9}",
            wall,
            median(host),
            ort.map_or("?".into(), |o| format!("{o:.4}s")),
            wall / reference,
            ort.map_or("?".into(), |o| format!("{:.1}", wall / o)),
        );
    }
    println!(
        "\naccelc: the session's wall time per inference (device jobs simulated, host calls \
         JIT-compiled MLIR); host part: the host calls' share; load+JIT: loading the plan (programs \
         validated by the driver, the host module lowered and compiled by LLVM); reference: \
         accelc's interpreter; \
         ort: onnxruntime 1 thread. Medians of {runs} runs."
    );
}
