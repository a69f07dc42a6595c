//! The optimizer's payoff on the device: per zoo model (and `resnet18_bn`, resnet18 with a
//! BatchNormalization after every convolution), the simulated cycles of the model compiled at
//! -O0 and at -O2 side by side, the nodes the optimizer removed, the BatchNormalization nodes
//! left, the optimizer's own time, and how far the extractor's tree cost (shared subterms
//! counted once per use) is from the cost of the extracted graph (each node once).
//! Run with `cargo bench -p accelc-bench --bench opt`.

use std::path::{Path, PathBuf};

use accelc_compiler::ir::{Graph, Op};
use accelc_compiler::lower::{CompileOptions, compile};
use accelc_compiler::onnx::ImportOptions;
use accelc_compiler::opt::{Options, optimize};
use accelc_compiler::pipeline::{load_any, run_frontend};
use accelc_isa::blob::Blob;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ has a parent").to_path_buf()
}

fn load(model: &str) -> Graph {
    let name = model.trim_end_matches("_bn");
    let path = root().join(format!("../shared/models/{name}.onnx"));
    let mut g = load_any(&path, &ImportOptions::default()).expect("the zoo model loads");
    run_frontend(&mut g, &mut |_, _| {}).expect("the frontend runs");
    if model.ends_with("_bn") { accelc_tests::insert_batchnorm(&g, 5) } else { g }
}

/// Simulated cycles of `g` on the default device, inputs all zero (cycles do not depend on
/// values).
fn cycles(g: &Graph) -> u64 {
    let c = compile(g, &CompileOptions::default()).expect("the model compiles");
    let bytes = c.blob().expect("the blob serialises");
    let blob = Blob::read(&bytes).expect("the blob reads back");
    let inputs: Vec<Vec<u8>> =
        c.io.iter()
            .filter(|t| t.direction == accelc_isa::blob::Direction::Input)
            .map(|t| vec![0u8; t.byte_size().unwrap_or(0) as usize])
            .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    accelc_runtime::model::simulate(&blob, &refs, false).expect("the model runs").1.cycles
}

fn main() {
    println!(
        "{:<28} {:>12} {:>12} {:>7} {:>13} {:>6} {:>9} {:>10} {:>8}",
        "model", "cycles -O0", "cycles -O2", "ratio", "nodes", "BN", "opt time", "stop", "tree/dag"
    );
    for m in [
        "mlp_mnist",
        "transformer_encoder",
        "transformer_encoder_legacy",
        "squeezenet1_1",
        "mobilenet_v2",
        "resnet18",
        "resnet18_bn",
    ] {
        let g0 = load(m);
        let mut g2 = g0.clone();
        let report = optimize(&mut g2, &Options::default()).expect("the optimizer runs");
        let (c0, c2) = (cycles(&g0), cycles(&g2));
        let bn =
            |g: &Graph| g.nodes.iter().filter(|n| matches!(n.op, Op::BatchNorm { .. })).count();
        println!(
            "{:<28} {:>12} {:>12} {:>7.3} {:>6} -> {:<4} {:>2}->{:<2} {:>8.3}s {:>10} {:>8.3}   rules {:?}",
            m,
            c0,
            c2,
            c2 as f64 / c0 as f64,
            report.nodes_before,
            report.nodes_after,
            bn(&g0),
            bn(&g2),
            report.seconds,
            report.stop,
            report.tree_cost / report.cycles_after.max(1.0),
            report.applied,
        );
    }
}
