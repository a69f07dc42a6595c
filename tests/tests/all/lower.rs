//! End to end: every float model of the zoo compiled to a blob, run on the simulated device,
//! and compared with its stored onnxruntime output (rtol 1e-3, atol 1e-5).

use accelc_compiler::lower::{CompileOptions, Compiled, compile};
use accelc_compiler::onnx::ImportOptions;
use accelc_compiler::pipeline::{load_any, run_frontend};
use accelc_isa::DeviceConfig;
use accelc_isa::blob::Blob;
use accelc_runtime::driver::Device;
use accelc_runtime::model::Model;
use ndarray::ArrayD;
use ndarray_npy::read_npy;

use accelc_tests::zoo;

/// Compiles a model file for `cfg`.
pub(crate) fn compile_model(path: &std::path::Path, cfg: DeviceConfig) -> Compiled {
    let mut g = load_any(path, &ImportOptions::default()).unwrap();
    run_frontend(&mut g, &mut |_, _| {}).unwrap();
    compile(&g, &CompileOptions { config: cfg, expose_all: false })
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a compiled model on its device.
pub(crate) fn run_compiled(c: &Compiled, inputs: &[&[u8]]) -> Vec<Vec<u8>> {
    let bytes = c.blob().unwrap();
    let blob = Blob::read(&bytes).unwrap();
    let model = Model::load_blob(&Device::open(c.config.clone()), &blob).unwrap();
    model.run(inputs).unwrap().tensors
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn check(model: &str, cfg: DeviceConfig) {
    let c = compile_model(&zoo(&format!("{model}.onnx")), cfg);
    let input: ArrayD<f32> = read_npy(zoo(&format!("{model}.input_0.npy"))).unwrap();
    let want: ArrayD<f32> = read_npy(zoo(&format!("{model}.output_0.npy"))).unwrap();
    let bytes: Vec<u8> = input.iter().flat_map(|x| x.to_le_bytes()).collect();
    let out = run_compiled(&c, &[&bytes]);
    let got = f32s(&out[0]);
    assert_eq!(got.len(), want.len(), "{model}: output size");
    let mut worst = (0.0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        let excess = (g - w).abs() - (1e-5 + 1e-3 * w.abs());
        if excess > worst.0 || g.is_nan() {
            worst = (excess.max(f32::MIN_POSITIVE), i);
        }
    }
    assert!(
        worst.0 <= 0.0,
        "{model}: element {} is {}, onnxruntime {}",
        worst.1,
        got[worst.1],
        want.as_slice().unwrap()[worst.1]
    );
}

#[test]
fn mlp_mnist() {
    check("mlp_mnist", DeviceConfig::default_npu());
}

#[test]
fn mlp_mnist_tiny() {
    check("mlp_mnist", DeviceConfig::tiny());
}

#[test]
fn transformer_encoder() {
    check("transformer_encoder", DeviceConfig::default_npu());
}

#[test]
fn transformer_encoder_legacy() {
    check("transformer_encoder_legacy", DeviceConfig::default_npu());
}

#[test]
fn squeezenet1_1() {
    check("squeezenet1_1", DeviceConfig::default_npu());
}

#[test]
fn mobilenet_v2() {
    check("mobilenet_v2", DeviceConfig::default_npu());
}

#[test]
fn resnet18() {
    check("resnet18", DeviceConfig::default_npu());
}

#[test]
fn zz_debug_print() {
    for m in ["mlp_mnist", "resnet18", "transformer_encoder"] {
        let c = compile_model(&zoo(&format!("{m}.onnx")), DeviceConfig::default_npu());
        let input: ArrayD<f32> = read_npy(zoo(&format!("{m}.input_0.npy"))).unwrap();
        let bytes: Vec<u8> = input.iter().flat_map(|x| x.to_le_bytes()).collect();
        let blob = c.blob().unwrap();
        let b = Blob::read(&blob).unwrap();
        let model = Model::load_blob(&Device::open(c.config.clone()), &b).unwrap();
        let out = model.run(&[&bytes]).unwrap();
        eprintln!(
            "{m}: insts {} layers {} cycles {} roofline {} arena {} spad {} out[..4] {:?}",
            c.program.insts.len(),
            c.layers.len(),
            out.stats.cycles,
            c.roofline_cycles(),
            c.arena_bytes,
            c.spad_peak,
            &f32s(&out.tensors[0])[..4]
        );
    }
}
