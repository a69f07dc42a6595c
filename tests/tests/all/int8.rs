//! The int8 QDQ models of the zoo on the device, on `default` and `u65`: every integer tensor
//! the device computes is bit-identical to the integer reference (the interpreter on the
//! optimized graph, whose QConv kernels follow the device's integer arithmetic; the few float
//! tensors between DequantizeLinear and QuantizeLinear agree within the float tolerance), and
//! the output is
//! within 3 steps of the output scale of onnxruntime's with the same top-1 class.

use accelc::{HostTensor, Options, Session, Source};
use accelc_compiler::ir::{Op, ValueId};
use accelc_isa::DeviceConfig;
use accelc_isa::blob::Direction;
use ndarray::ArrayD;
use ndarray_npy::read_npy;

use accelc_tests::zoo;

/// The scale of the DequantizeLinear producing the graph's output.
fn output_scale(g: &accelc_compiler::ir::Graph) -> f32 {
    let out = g.outputs[0];
    let n = g.nodes.iter().find(|n| n.outputs.contains(&out)).expect("output producer");
    assert!(matches!(n.op, Op::DequantizeLinear { .. }), "output of {}", n.op_type);
    let s = n.inputs[1].expect("scale");
    g.value(s).constant.as_ref().expect("constant scale").f32s()[0]
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn check(model: &str, config: DeviceConfig) {
    let path = zoo(&format!("{model}.onnx"));
    let opts = Options { config: config.clone(), expose_all: true, ..Options::default() };
    let c = accelc::compile(Source::Path(&path), &opts, &mut ())
        .unwrap_or_else(|e| panic!("{model} on {}: {e}", config.name));
    let qconvs = c.optimized.nodes.iter().filter(|n| matches!(n.op, Op::QConv { .. })).count();
    assert!(qconvs >= 20, "{model}: only {qconvs} integer kernels");
    let x: ArrayD<f32> = read_npy(zoo(&format!("{model}.input_0.npy"))).unwrap();
    let input = HostTensor::from_f32(x.shape().to_vec(), x.as_slice().unwrap()).unwrap();
    let got = Session::new(c.blob.clone()).unwrap().run(std::slice::from_ref(&input)).unwrap();
    // Every exposed tensor against the integer reference, byte for byte.
    let names: Vec<&str> = c
        .compiled
        .io
        .iter()
        .filter(|t| t.direction == Direction::Output)
        .map(|t| t.name.as_str())
        .collect();
    let mut g = c.oracle().clone();
    g.outputs = names
        .iter()
        .map(|n| ValueId(g.values.iter().position(|v| v.name == *n).unwrap() as u32))
        .collect();
    let want = accelc::reference(&g, std::slice::from_ref(&input)).unwrap();
    assert!(names.len() > 50, "{model}: only {} tensors exposed", names.len());
    let mut exact = 0;
    for ((name, a), b) in names.iter().zip(&got.outputs).zip(&want) {
        assert_eq!(a.dtype, b.dtype, "{model}: {name}");
        if a.f32s().is_none() {
            assert!(a.data == b.data, "{model} on {}: `{name}` differs", config.name);
            exact += 1;
        } else {
            // Float tensors between a DequantizeLinear and a QuantizeLinear (the global
            // average pool sums in the vector engine's order): within the float tolerance.
            let m = accelc::compare_tensors(a, b).unwrap();
            assert!(m.is_none(), "{model} on {}: `{name}`: {m:?}", config.name);
        }
    }
    assert!(exact > 30, "{model}: only {exact} integer tensors compared");
    // The model's output against onnxruntime, in steps of the output scale.
    let step = output_scale(&c.reference);
    let ort: ArrayD<f32> = read_npy(zoo(&format!("{model}.output_0.npy"))).unwrap();
    let y = got.outputs[0].f32s().unwrap();
    let ort = ort.as_slice().unwrap();
    assert_eq!(y.len(), ort.len());
    let worst = y.iter().zip(ort).map(|(a, b)| (a - b).abs() / step).fold(0.0f32, f32::max);
    assert!(worst <= 3.0 + 1e-3, "{model} on {}: {worst} steps from onnxruntime", config.name);
    assert_eq!(argmax(&y), argmax(ort), "{model} on {}: top-1", config.name);
}

#[test]
fn resnet18_int8_qdq() {
    check("resnet18_int8_qdq", DeviceConfig::default_npu());
    check("resnet18_int8_qdq", DeviceConfig::u65());
}

#[test]
fn mobilenet_v2_int8_qdq() {
    check("mobilenet_v2_int8_qdq", DeviceConfig::default_npu());
    check("mobilenet_v2_int8_qdq", DeviceConfig::u65());
}

#[test]
fn mobilenet_v2_int8_qdq_pc() {
    check("mobilenet_v2_int8_qdq_pc", DeviceConfig::default_npu());
    check("mobilenet_v2_int8_qdq_pc", DeviceConfig::u65());
}
