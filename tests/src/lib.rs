//! Helpers shared by the integration tests: paths to fixtures and an in-process CLI runner.

use std::path::{Path, PathBuf};

pub mod fuzz;
pub mod soak;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The ONNX backend node test directories `.ci/setup` generates, sorted (panics naming the
/// fix when they are missing, and when fewer than 1,800 are found).
pub fn node_test_dirs() -> Vec<PathBuf> {
    let root = repo_root().join("target/onnx-node-tests/node");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| {
            panic!("{}: {e}; run `bash .ci/setup` to generate the node tests", root.display())
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 1800, "only {} node tests found", dirs.len());
    dirs
}

/// Every model of the zoo, float and int8.
pub const ZOO_MODELS: &[&str] = &[
    "mlp_mnist",
    "transformer_encoder",
    "transformer_encoder_legacy",
    "squeezenet1_1",
    "mobilenet_v2",
    "resnet18",
    "mobilenet_v2_int8_qdq",
    "mobilenet_v2_int8_qdq_pc",
    "resnet18_int8_qdq",
];

/// A file of the model zoo (`../shared/models`).
pub fn zoo(name: &str) -> PathBuf {
    repo_root().join("../shared/models").join(name)
}

/// A file under `tests/`.
pub fn tests_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// What a CLI run printed and returned.
#[derive(Debug)]
pub struct CliRun {
    /// Exit status.
    pub code: u8,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `accelc ARGS...` in-process.
pub fn accelc(args: &[&str]) -> CliRun {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv = std::iter::once("accelc").chain(args.iter().copied()).map(Into::into);
    let code = accelc_cli::run(argv, &mut out, &mut err);
    CliRun {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

/// A small deterministic generator (SplitMix64) for test data.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A float uniform in `[lo, hi)`.
    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// The result of running an assembly program on the simulator.
pub struct SimRun {
    /// Final contents of every declared segment.
    pub segments: Vec<Option<Vec<u8>>>,
    /// Counters and trace.
    pub stats: accelc_runtime::sim::RunStats,
    /// The validator's run-time bound.
    pub bound: u64,
}

/// Assembles `tests/programs/NAME.s`, validates it for `cfg`, binds its declared segments
/// (filled from `inputs`, zero elsewhere) and runs it.
pub fn run_program(
    name: &str,
    cfg: &accelc_isa::DeviceConfig,
    inputs: &[(usize, Vec<u8>)],
    opts: accelc_runtime::sim::RunOptions,
) -> Result<SimRun, String> {
    let source = std::fs::read_to_string(tests_path(&format!("programs/{name}.s")))
        .map_err(|e| e.to_string())?;
    run_source(&source, cfg, inputs, opts, true)
}

/// Like [`run_program`] for a source text; with `validate` false the program goes to the
/// simulator unchecked (to test the device's own fault checks), and `bound` is 0.
pub fn run_source(
    source: &str,
    cfg: &accelc_isa::DeviceConfig,
    inputs: &[(usize, Vec<u8>)],
    opts: accelc_runtime::sim::RunOptions,
    validate: bool,
) -> Result<SimRun, String> {
    run_source_paths(source, cfg, inputs, opts, validate, false)
}

/// [`run_source`] with the simulator's vector engine on its element-by-element reference
/// paths (`reference_paths`) or its fast paths.
pub fn run_source_paths(
    source: &str,
    cfg: &accelc_isa::DeviceConfig,
    inputs: &[(usize, Vec<u8>)],
    opts: accelc_runtime::sim::RunOptions,
    validate: bool,
    reference_paths: bool,
) -> Result<SimRun, String> {
    use accelc_runtime::sim::{Segment, Segments, Simulator};
    let module = accelc_isa::asm::assemble_module(source).map_err(|d| format!("{d:?}"))?;
    let bound = if validate {
        accelc_isa::verify::verify(&module.program, cfg, &Default::default())
            .map_err(|e| e.to_string())?
            .cycle_bound
    } else {
        0
    };
    let mut bufs: Vec<Option<(Vec<u8>, bool)>> = vec![None; 16];
    for s in &module.segments {
        if let Some((size, role)) = s.decl {
            bufs[usize::from(s.id)] =
                Some((vec![0; size as usize], role.access() & accelc_isa::blob::ACCESS_WRITE != 0));
        }
    }
    for (seg, data) in inputs {
        let (buf, _) = bufs[*seg].as_mut().ok_or("input for an undeclared segment")?;
        buf[..data.len()].copy_from_slice(data);
    }
    let mut segs: Segments<'_> = Default::default();
    for (slot, b) in segs.iter_mut().zip(bufs.iter_mut()) {
        if let Some((data, writable)) = b {
            *slot = Some(Segment { data, writable: *writable });
        }
    }
    let mut sim = Simulator::new(cfg.clone());
    sim.set_reference_paths(reference_paths);
    let stats = sim.run(&module.program, &mut segs, opts).map_err(|f| f.to_string())?;
    Ok(SimRun { segments: bufs.into_iter().map(|b| b.map(|(d, _)| d)).collect(), stats, bound })
}

/// `resnet18_bn`: a copy of `g` with a BatchNormalization (seeded random statistics) after
/// every convolution, the form exporters produce without folding. The optimizer must fold them
/// all back into the convolutions.
pub fn insert_batchnorm(g: &accelc_compiler::ir::Graph, seed: u64) -> accelc_compiler::ir::Graph {
    use accelc_compiler::ir::{DType, Node, Op, Tensor, TensorType, Value};
    let mut rng = Rng::new(seed);
    let mut out = g.clone();
    out.nodes.clear();
    for n in &g.nodes {
        if !matches!(n.op, Op::Conv { .. }) {
            out.nodes.push(n.clone());
            continue;
        }
        let y = n.outputs[0];
        let ty = g.value(y).ty.clone();
        let c = ty.as_ref().map_or(1, |t| t.shape[1]);
        let pre = out.add_value(Value {
            name: format!("{}.pre_bn", g.value(y).name),
            ty,
            constant: None,
        });
        let mut conv = n.clone();
        conv.outputs = vec![pre];
        out.nodes.push(conv);
        let mut param = |name: &str, lo: f32, hi: f32| {
            let v: Vec<f32> = (0..c).map(|_| rng.f32_in(lo, hi)).collect();
            out.add_value(Value {
                name: format!("{}.bn.{name}", n.name),
                ty: Some(TensorType { dtype: DType::F32, shape: vec![c] }),
                constant: Some(Tensor::from_f32(vec![c], &v)),
            })
        };
        let (s, b, m, v) = (
            param("scale", 0.5, 1.5),
            param("bias", -0.1, 0.1),
            param("mean", -0.1, 0.1),
            param("var", 0.5, 1.5),
        );
        out.nodes.push(Node {
            name: format!("{}/BatchNormalization", n.name),
            op_type: "BatchNormalization".into(),
            op: Op::BatchNorm { epsilon: 1e-5 },
            inputs: vec![Some(pre), Some(s), Some(b), Some(m), Some(v)],
            outputs: vec![y],
        });
    }
    out
}

/// The built-in configurations with a float32 matmul (the float models' devices; `u65`, an
/// integer-only NPU like the Ethos-U, is not among them).
pub fn float_configs() -> Vec<accelc_isa::DeviceConfig> {
    accelc_isa::DeviceConfig::builtin()
        .into_iter()
        .filter(|c| c.matmul_supports(accelc_isa::Dtype::F32))
        .collect()
}
