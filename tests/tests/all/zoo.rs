//! The reference interpreter against onnxruntime on the float models of the model zoo
//! (`../shared/models`): import, run on the stored input, compare with the stored onnxruntime
//! output (rtol 1e-3, atol 1e-5, the zoo's tolerance).

use accelc_compiler::interp::{Array, run};
use accelc_compiler::onnx::{ImportOptions, load};
use ndarray::ArrayD;
use ndarray_npy::read_npy;

use accelc_tests::{ZOO_MODELS, zoo};

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

/// Constant folding, shape inference and the verifier on every zoo model: the folded graph
/// computes exactly what the imported one does, every value gets a type, the inferred output
/// shape is onnxruntime's, and the legacy transformer export folds to the op set of the
/// modern one.
#[test]
fn fold_infer_and_verify_every_zoo_model() {
    use accelc_compiler::fold::fold_constants;
    use accelc_compiler::shape::infer;
    use accelc_compiler::verify::verify;
    use std::collections::BTreeSet;

    let mut op_sets = Vec::new();
    for &model in ZOO_MODELS {
        let mut g = load(&zoo(&format!("{model}.onnx")), &ImportOptions::default()).unwrap();
        verify(&g, false).unwrap_or_else(|e| panic!("{model} as imported: {e}"));
        let before = g.clone();
        fold_constants(&mut g).unwrap_or_else(|e| panic!("{model}: {e}"));
        infer(&mut g).unwrap_or_else(|e| panic!("{model}: {e}"));
        verify(&g, true).unwrap_or_else(|e| panic!("{model} after folding and inference: {e}"));
        let want: ArrayD<f32> = read_npy(zoo(&format!("{model}.output_0.npy"))).unwrap();
        if model.contains("int8") {
            // QuantizeLinear/DequantizeLinear are not supported yet: the graph output stays untyped.
            continue;
        }
        let out_ty = g.value(g.outputs[0]).ty.clone().unwrap();
        assert_eq!(out_ty.shape, want.shape(), "{model}: inferred output shape");
        let input: ArrayD<f32> = read_npy(zoo(&format!("{model}.input_0.npy"))).unwrap();
        let a = run(&before, &[Array::F32(input.clone())]).unwrap();
        let b = run(&g, &[Array::F32(input)]).unwrap();
        assert_eq!(a, b, "{model}: folding changed the result");
        let ops: BTreeSet<String> = g.nodes.iter().map(|n| n.op_type.clone()).collect();
        op_sets.push((model, ops));
    }
    let modern = &op_sets.iter().find(|(m, _)| *m == "transformer_encoder").unwrap().1;
    let legacy = &op_sets.iter().find(|(m, _)| *m == "transformer_encoder_legacy").unwrap().1;
    assert_eq!(legacy, modern, "the legacy export folds to the modern op set");
    assert!(!legacy.contains("Shape") && !legacy.contains("Constant") && !legacy.contains("Cast"));
}

/// The int8 QDQ models through the interpreter (quantisation emulated in float, as onnxruntime
/// does without its integer kernels): every output within 3 steps of the output scale of
/// optimised onnxruntime's and the same top-1 class (the zoo README's criterion; onnxruntime's
/// own optimised and unoptimised runs differ by up to 2-3 steps), and within 1 step of
/// unoptimised onnxruntime's.
fn check_int8(model: &str) {
    use accelc_compiler::ir::Op;
    let graph = load(&zoo(&format!("{model}.onnx")), &ImportOptions::default()).unwrap();
    // The output scale: the scale input of the DequantizeLinear that produces the output.
    let out_id = graph.outputs[0];
    let dq = graph.nodes.iter().find(|n| n.outputs.contains(&out_id)).unwrap();
    assert!(matches!(dq.op, Op::DequantizeLinear { .. }), "{model}: output is not dequantized");
    let scale = graph.value(dq.inputs[1].unwrap()).constant.as_ref().unwrap().f32s()[0];
    let input: ArrayD<f32> = read_npy(zoo(&format!("{model}.input_0.npy"))).unwrap();
    let want: ArrayD<f32> = read_npy(zoo(&format!("{model}.output_0.npy"))).unwrap();
    let out = run(&graph, &[Array::F32(input)]).unwrap_or_else(|e| panic!("{model}: {e}"));
    let Array::F32(got) = &out[0] else { panic!("{model}: output is not float") };
    assert_eq!(got.shape(), want.shape());
    let steps =
        got.iter().zip(want.iter()).map(|(g, w)| ((g - w) / scale).abs()).fold(0.0f32, f32::max);
    assert!(steps <= 3.0 + 1e-3, "{model}: {steps} output steps from onnxruntime");
    let argmax = |a: &ArrayD<f32>| {
        a.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |b, (i, v)| if *v > b.1 { (i, *v) } else { b })
            .0
    };
    assert_eq!(argmax(got), argmax(&want), "{model}: top-1");
    // Against onnxruntime without graph optimisations (float QDQ emulation, like ours).
    let noopt: ArrayD<f32> = read_npy(zoo(&format!("{model}.output_0.ort_noopt.npy"))).unwrap();
    let steps =
        got.iter().zip(noopt.iter()).map(|(g, w)| ((g - w) / scale).abs()).fold(0.0f32, f32::max);
    // Values next to a rounding boundary may land one step apart (float summation order).
    assert!(steps <= 1.0 + 1e-3, "{model}: {steps} output steps from unoptimised onnxruntime");
}

#[test]
fn mobilenet_v2_int8_qdq() {
    check_int8("mobilenet_v2_int8_qdq");
}

#[test]
fn mobilenet_v2_int8_qdq_pc() {
    check_int8("mobilenet_v2_int8_qdq_pc");
}

#[test]
fn resnet18_int8_qdq() {
    check_int8("resnet18_int8_qdq");
}
