//! The reference interpreter against onnxruntime on the float models of the model zoo
//! (`../shared/models`): import, run on the stored input, compare with the stored onnxruntime
//! output (rtol 1e-3, atol 1e-5, the zoo's tolerance).

use accelc_compiler::interp::{Array, run};
use accelc_compiler::onnx::{ImportOptions, load};
use ndarray::ArrayD;
use ndarray_npy::read_npy;

fn zoo(name: &str) -> std::path::PathBuf {
    accelc_tests::repo_root().join("../shared/models").join(name)
}

fn check(model: &str) {
    let graph = load(&zoo(&format!("{model}.onnx")), &ImportOptions::default()).unwrap();
    let input: ArrayD<f32> = read_npy(zoo(&format!("{model}.input_0.npy"))).unwrap();
    let want: ArrayD<f32> = read_npy(zoo(&format!("{model}.output_0.npy"))).unwrap();
    let out = run(&graph, &[Array::F32(input)]).unwrap_or_else(|e| panic!("{model}: {e}"));
    let Array::F32(got) = &out[0] else { panic!("{model}: output is not float") };
    assert_eq!(got.shape(), want.shape(), "{model}: output shape");
    let mut worst = 0.0f32;
    for (g, w) in got.iter().zip(want.iter()) {
        let excess = (g - w).abs() - (1e-5 + 1e-3 * w.abs());
        worst = worst.max(excess);
        assert!(excess <= 0.0, "{model}: got {g}, onnxruntime {w}");
    }
    assert!(worst <= 0.0);
}

#[test]
fn mlp_mnist() {
    check("mlp_mnist");
}

#[test]
fn transformer_encoder() {
    check("transformer_encoder");
}

#[test]
fn transformer_encoder_legacy() {
    check("transformer_encoder_legacy");
}

#[test]
fn squeezenet1_1() {
    check("squeezenet1_1");
}

#[test]
fn mobilenet_v2() {
    check("mobilenet_v2");
}

#[test]
fn resnet18() {
    check("resnet18");
}
