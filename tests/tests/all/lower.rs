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

/// The small device's 8x8 array, 64 KiB scratchpad and 16 KiB accumulator force width,
/// channel and row tiling everywhere.
#[test]
fn zoo_on_the_tiny_device() {
    for m in ["mlp_mnist", "transformer_encoder", "squeezenet1_1", "mobilenet_v2"] {
        check(m, DeviceConfig::tiny());
    }
}

/// resnet18 with an 8x8 array needs more instructions than a program may hold: a clear error
/// naming the layer, not a panic or a truncated program.
#[test]
fn too_large_for_the_tiny_device_is_a_clear_error() {
    let mut g = load_any(&zoo("resnet18.onnx"), &ImportOptions::default()).unwrap();
    run_frontend(&mut g, &mut |_, _| {}).unwrap();
    let e = compile(&g, &CompileOptions { config: DeviceConfig::tiny(), expose_all: false })
        .unwrap_err();
    assert!(e.message.contains("2^20 instructions"), "{e}");
    assert!(e.node.as_deref().is_some_and(|n| n.contains("Conv")), "{e}");
}

/// The bundled model against the bundled onnxruntime output (no `../shared` needed).
#[test]
fn bundled_model() {
    let root = accelc_tests::repo_root().join("models");
    let c = compile_model(&root.join("mlp_mnist.onnx"), DeviceConfig::default_npu());
    let input: ArrayD<f32> = read_npy(root.join("mlp_mnist.input_0.npy")).unwrap();
    let want: ArrayD<f32> = read_npy(root.join("mlp_mnist.output_0.npy")).unwrap();
    let bytes: Vec<u8> = input.iter().flat_map(|x| x.to_le_bytes()).collect();
    let got = f32s(&run_compiled(&c, &[&bytes])[0]);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want.iter()) {
        assert!((g - w).abs() <= 1e-5 + 1e-3 * w.abs(), "{g} vs {w}");
    }
}

/// `diff` finds a planted bug: the Relu of the MLP's second layer turned into an absolute
/// value is reported as the first difference, at that layer's tensor and instruction range.
#[test]
fn diff_reports_the_first_wrong_layer() {
    use accelc_isa::{Op, UnOp};
    let mut g = load_any(&zoo("mlp_mnist.onnx"), &ImportOptions::default()).unwrap();
    run_frontend(&mut g, &mut |_, _| {}).unwrap();
    let opts = CompileOptions { config: DeviceConfig::default_npu(), expose_all: true };
    let input: ArrayD<f32> = read_npy(zoo("mlp_mnist.input_0.npy")).unwrap();
    let mut c = compile(&g, &opts).unwrap();
    let input = accelc::HostTensor::from_f32(
        input.shape().to_vec(),
        &input.iter().copied().collect::<Vec<_>>(),
    )
    .unwrap();
    let clean =
        accelc::first_difference(&g, &c, std::slice::from_ref(&input), Default::default()).unwrap();
    assert_eq!(clean, Ok(3));
    let layer = c.layers.iter().find(|l| l.name.contains("net.4/Relu")).unwrap().clone();
    let mut planted = 0;
    for inst in &mut c.program.insts[layer.start as usize..layer.end as usize] {
        if let Op::VxUnary(u) = &mut inst.op
            && u.op == UnOp::Relu
        {
            u.op = UnOp::Abs;
            planted += 1;
        }
    }
    assert!(planted > 0);
    let d = accelc::first_difference(&g, &c, &[input], Default::default()).unwrap().unwrap_err();
    assert_eq!(d.tensor, "/net/net.4/Relu_output_0");
    assert_eq!(d.layer, layer.name);
    assert_eq!(d.insts, (layer.start, layer.end));
    assert!(d.element.1 > 0.0 && d.element.2 == 0.0, "{d:?}");
}

fn disassembly(c: &Compiled) -> String {
    accelc_isa::disasm::disassemble(&c.program, accelc_isa::disasm::Options::default())
}

/// The disassembly of the smallest zoo model: tiling, synchronisation and descriptor choices
/// show up in review as diffs.
#[test]
fn disassembly_snapshots() {
    let path = accelc_tests::repo_root().join("models/mlp_mnist.onnx");
    let c = compile_model(&path, DeviceConfig::default_npu());
    insta::assert_snapshot!("mlp_mnist_default", disassembly(&c));
}

/// A small convolutional model in the ONNX text syntax (strided padded convolution, max
/// pooling, a residual add, global pooling, Gemm) on both devices: disassembly snapshots and
/// results against the reference interpreter.
#[test]
fn small_cnn_from_text() {
    use accelc_compiler::interp::{Array, run};
    let path = accelc_tests::tests_path("models/small_cnn.onnxtxt");
    let mut g = load_any(&path, &ImportOptions::default()).unwrap();
    run_frontend(&mut g, &mut |_, _| {}).unwrap();
    let input = ArrayD::from_shape_fn(ndarray::IxDyn(&[1, 3, 12, 12]), |ix| {
        ((ix[1] * 144 + ix[2] * 12 + ix[3]) % 17) as f32 / 8.0 - 1.0
    });
    let want = run(&g, &[Array::F32(input.clone())]).unwrap();
    let Array::F32(want) = &want[0] else { panic!("float output") };
    let bytes: Vec<u8> = input.iter().flat_map(|x| x.to_le_bytes()).collect();
    for cfg in accelc_tests::float_configs() {
        let c = compile_model(&path, cfg.clone());
        insta::assert_snapshot!(format!("small_cnn_{}", cfg.name), disassembly(&c));
        let got = f32s(&run_compiled(&c, &[&bytes])[0]);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((g - w).abs() <= 1e-5 + 1e-3 * w.abs(), "{}: {g} vs {w}", cfg.name);
        }
    }
}

/// A writer that fails after `left` bytes, as a full disk does.
struct FullDisk {
    inner: std::io::Cursor<Vec<u8>>,
    left: usize,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.left {
            return Err(std::io::Error::other("no space left on device"));
        }
        self.left -= buf.len();
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for FullDisk {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn a_streamed_blob_is_the_in_memory_blob_and_a_failing_writer_is_an_io_error() {
    // Convolutions (weights packed as they are written, grouped and dense) and a Gemm, with
    // weights that differ element by element, so a misplaced byte shows.
    let values = |n: usize, seed: usize| {
        let v: Vec<String> =
            (0..n).map(|i| format!("{:.3}", ((i * 7 + seed) % 23) as f32 / 23.0 - 0.5)).collect();
        v.join(",")
    };
    let text = format!(
        r#"<ir_version: 8, opset_import: ["" : 13]>
g (float[1,8,6,6] x) => (float[1,5] y) {{
    w1 = Constant <value = float[16,8,3,3] {{{}}}> ()
    c1 = Conv <pads = [1,1,1,1]> (x, w1)
    w2 = Constant <value = float[16,4,3,3] {{{}}}> ()
    c2 = Conv <group = 4> (c1, w2)
    f = Flatten (c2)
    wg = Constant <value = float[256,5] {{{}}}> ()
    y = MatMul (f, wg)
}}"#,
        values(16 * 8 * 9, 1),
        values(16 * 4 * 9, 2),
        values(256 * 5, 3)
    );
    let text = text.as_str();
    let c =
        accelc::compile(accelc::Source::Text(text), &accelc::Options::default(), &mut ()).unwrap();
    let whole = c.blob().unwrap();
    accelc_isa::blob::Blob::read(&whole).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    let n = c.write_blob(&mut out).unwrap();
    assert_eq!(n as usize, whole.len());
    assert!(out.into_inner() == whole, "the streamed blob differs from the in-memory one");
    for left in [0, 100, whole.len() / 2, whole.len() - 1] {
        let mut w = FullDisk { inner: std::io::Cursor::new(Vec::new()), left };
        match c.write_blob(&mut w) {
            Err(accelc::Error::Io(m)) => assert!(m.contains("no space left"), "{m}"),
            other => panic!("a failing writer after {left} bytes: {other:?}"),
        }
    }
}
