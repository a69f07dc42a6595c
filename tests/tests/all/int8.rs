//! The int8 QDQ models of the zoo on the device, on `default` and `u65`: every integer tensor
//! the device computes is bit-identical to the integer reference (the interpreter on the
//! optimized graph, whose integer kernels follow the device's integer arithmetic; float
//! tensors agree within the float tolerance), and the output is
//! within 3 steps of the output scale of onnxruntime's with the same top-1 class. Small QDQ
//! models check the other integer kernels (table lookup, integer addition, 8-bit max pooling)
//! the same way.

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
    let count = |f: fn(&Op) -> bool| c.optimized.nodes.iter().filter(|n| f(&n.op)).count();
    let qconvs = count(|o| matches!(o, Op::QConv { .. }));
    assert!(qconvs >= 20, "{model}: only {qconvs} integer convolutions");
    // Every residual Add of these models is an integer addition.
    let qadds = count(|o| matches!(o, Op::QAdd { .. }));
    assert!(qadds >= 8, "{model}: only {qadds} integer additions");
    let x: ArrayD<f32> = read_npy(zoo(&format!("{model}.input_0.npy"))).unwrap();
    let input = HostTensor::from_f32(x.shape().to_vec(), x.as_slice().unwrap()).unwrap();
    let got = Session::new(c.blob().unwrap()).unwrap().run(std::slice::from_ref(&input)).unwrap();
    // Every exposed tensor against the integer reference, byte for byte.
    let names: Vec<&str> = c
        .compiled
        .as_ref()
        .expect("the int8 zoo models run wholly on the device")
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
    assert!(names.len() > 30, "{model}: only {} tensors exposed", names.len());
    let mut exact = 0;
    for ((name, a), b) in names.iter().zip(&got.outputs).zip(&want) {
        assert_eq!(a.dtype, b.dtype, "{model}: {name}");
        if a.f32s().is_none() {
            assert!(a.data == b.data, "{model} on {}: `{name}` differs", config.name);
            exact += 1;
        } else {
            // Float tensors (the dequantized output, and any float region a model keeps
            // between a DequantizeLinear and a QuantizeLinear): within the float tolerance.
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

/// A small QDQ model: `x` quantized by `(0.03, xz)`, then `body` from `d` (its dequantized
/// value) to `o` (quantized), dequantized to `y`.
fn small(xdt: &str, xz: i32, extra: &str, body: &str, out: &str) -> String {
    format!(
        "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[1,8,9,9] x) => ({out} y)\n\
         <float s = {{0.03}}, {xdt} xz = {{{xz}}}{extra}>\n{{\n\
         q = QuantizeLinear (x, s, xz)\n d = DequantizeLinear (q, s, xz)\n {body}\n}}\n"
    )
}

/// Table lookups (a HardSwish chain, Sigmoid), an integer addition of a tensor with a
/// requantised copy of itself, and int8 max pooling with padding, each on both built-in
/// int8 configurations: the optimized graph holds the integer kernel, the device matches the
/// integer reference byte for byte, and (for the exact rules) the float QDQ graph too.
#[test]
fn small_integer_kernels_on_device() {
    let mut cases: Vec<(&str, String, bool)> = vec![
        (
            "Lut",
            small(
                "uint8",
                128,
                ", float s2 = {0.004}, uint8 z2 = {3}",
                "h = HardSigmoid (d)\n a = Mul (d, h)\n o = QuantizeLinear (a, s2, z2)\n \
                 y = DequantizeLinear (o, s2, z2)",
                "float[1,8,9,9]",
            ),
            true,
        ),
        (
            "Lut",
            small(
                "int8",
                -3,
                ", float s2 = {0.0039}, int8 z2 = {-128}",
                "a = Sigmoid (d)\n o = QuantizeLinear (a, s2, z2)\n y = DequantizeLinear (o, s2, z2)",
                "float[1,8,9,9]",
            ),
            true,
        ),
        (
            "QAdd",
            small(
                "uint8",
                120,
                ", float s2 = {0.05}, int8 z2 = {7}, float s3 = {0.045}, uint8 z3 = {100}",
                "e = Exp (d)\n eq = QuantizeLinear (e, s2, z2)\n ed = DequantizeLinear (eq, s2, z2)\n \
                 a = Add (d, ed)\n o = QuantizeLinear (a, s3, z3)\n y = DequantizeLinear (o, s3, z3)",
                "float[1,8,9,9]",
            ),
            false,
        ),
        (
            "MaxPool",
            small(
                "int8",
                -7,
                "",
                "m = MaxPool <kernel_shape: ints = [3,3], strides: ints = [2,2], pads: ints = [1,1,1,1]> (d)\n \
                 o = QuantizeLinear (m, s, xz)\n y = DequantizeLinear (o, s, xz)",
                "float[1,8,5,5]",
            ),
            true,
        ),
    ];
    // Asymmetric int8 weights (onnxruntime's `WeightSymmetric: False`): minus their zero
    // points they leave int8, so the integer convolution takes them in two parts.
    let mut wrng = accelc_tests::Rng::new(3);
    let w: Vec<String> = wrng.bytes(4 * 8 * 9).iter().map(|b| (*b as i8).to_string()).collect();
    cases.push((
        "QConv",
        small(
            "uint8",
            128,
            &format!(
                ", int8[4,8,3,3] wq = {{{}}}, float ws = {{0.003}}, int8 wz = {{-90}}, \
                 float s2 = {{0.2}}, uint8 z2 = {{60}}",
                w.join(",")
            ),
            "w = DequantizeLinear (wq, ws, wz)\n c = Conv <pads: ints = [1,1,1,1]> (d, w)\n \
             o = QuantizeLinear (c, s2, z2)\n y = DequantizeLinear (o, s2, z2)",
            "float[1,4,9,9]",
        ),
        false,
    ));
    let mut rng = accelc_tests::Rng::new(12);
    let x: Vec<f32> = (0..8 * 81).map(|_| rng.f32_in(-4.0, 4.0)).collect();
    let input = HostTensor::from_f32(vec![1, 8, 9, 9], &x).unwrap();
    for (kernel, text, exact) in &cases {
        for config in [DeviceConfig::default_npu(), DeviceConfig::u65()] {
            let opts = Options { config: config.clone(), ..Options::default() };
            let c = accelc::compile(Source::Text(text), &opts, &mut ())
                .unwrap_or_else(|e| panic!("{kernel} on {}: {e}\n{text}", config.name));
            assert!(
                c.optimized.nodes.iter().any(|n| n.op_type == *kernel),
                "{kernel}: not in the optimized graph"
            );
            let got = Session::new(c.blob().unwrap()).unwrap().run(std::slice::from_ref(&input));
            let got = got.unwrap().outputs.remove(0);
            let want = accelc::reference(c.oracle(), std::slice::from_ref(&input)).unwrap();
            assert!(
                got.data == want[0].data,
                "{kernel} on {}: differs from the oracle",
                config.name
            );
            let float = accelc::reference(&c.reference, std::slice::from_ref(&input)).unwrap();
            let y = got.f32s().unwrap();
            let distinct: std::collections::BTreeSet<u32> = y.iter().map(|v| v.to_bits()).collect();
            assert!(distinct.len() > 8, "{kernel}: outputs span only {} values", distinct.len());
            if *exact {
                assert!(got.data == float[0].data, "{kernel}: differs from the float QDQ graph");
            } else {
                // One output step (0.045 for QAdd, 0.2 for QConv) at most.
                let step = if *kernel == "QAdd" { 0.045 } else { 0.2 };
                let f = float[0].f32s().unwrap();
                let worst = y.iter().zip(&f).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(worst <= step * 1.001, "{kernel}: {worst} from the float QDQ graph");
            }
        }
    }
}

/// The explicit integer operators with constant weights, through `legalize` on both int8
/// configurations, against the reference exactly: uint8 weights whose zero point leaves
/// them up to 255 away (split into three int8 parts), a batch of two with stride and
/// padding, per-channel weight zero points, and a batched B.
#[test]
fn explicit_integer_operators_on_device() {
    let mut rng = accelc_tests::Rng::new(5);
    let mut bytes = |n: usize| -> String {
        let v: Vec<String> = rng.bytes(n).iter().map(|b| b.to_string()).collect();
        v.join(",")
    };
    let conv = format!(
        "<ir_version: 8, opset_import: [\"\" : 13]>\n\
         g (uint8[2,3,9,9] x) => (uint8[2,4,5,5] y)\n\
         <float xs = {{0.02}}, uint8 xz = {{131}}, uint8[4,3,3,3] w = {{255,0,{}}}, float[1] ws = {{0.004}}, \
         uint8[1] wz = {{0}}, float ys = {{0.3}}, uint8 yz = {{120}}, int32[4] b = {{100,-2000,3000,0}}>\n\
         {{\n y = QLinearConv <strides: ints = [2,2], pads: ints = [1,1,1,1]> (x, xs, xz, w, ws, wz, ys, yz, b)\n}}\n",
        bytes(4 * 27 - 2)
    );
    let conv_int = format!(
        "<ir_version: 8, opset_import: [\"\" : 13]>\n\
         g (uint8[1,3,6,6] x) => (int32[1,2,6,6] y)\n\
         <uint8[2,3,3,3] w = {{{}}}, uint8 xz = {{7}}, uint8[2] wz = {{3,250}}>\n\
         {{\n y = ConvInteger <pads: ints = [1,1,1,1]> (x, w, xz, wz)\n}}\n",
        bytes(54)
    );
    let matmul = format!(
        "<ir_version: 8, opset_import: [\"\" : 13]>\n\
         g (int8[3,5,40] a) => (int8[3,5,6] y)\n\
         <float as = {{0.01}}, int8 az = {{-3}}, int8[3,40,6] b = {{{}}}, float bs = {{0.02}}, int8 bz = {{-100}}, \
         float ys = {{0.5}}, int8 yz = {{4}}>\n\
         {{\n y = QLinearMatMul (a, as, az, b, bs, bz, ys, yz)\n}}\n",
        bytes(720)
            .split(',')
            .map(|v| (v.parse::<i32>().unwrap() - 128).to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    // int8 weights that fit one part, −128 among them (it used to be clamped to −127).
    let mut int8_with_min = |n: usize| -> String {
        let v: Vec<String> = rng
            .bytes(n)
            .iter()
            .enumerate()
            .map(|(i, b)| if i % 5 == 0 { "-128".into() } else { (*b as i8).to_string() })
            .collect();
        v.join(",")
    };
    let matmul_int = format!(
        "<ir_version: 8, opset_import: [\"\" : 13]>\n\
         g (uint8[4,40] a) => (int32[4,8] y)\n<int8[40,8] b = {{{}}}>\n\
         {{\n y = MatMulInteger (a, b)\n}}\n",
        int8_with_min(320)
    );
    let conv_int8 = format!(
        "<ir_version: 8, opset_import: [\"\" : 13]>\n\
         g (uint8[1,16,8,8] x) => (int32[1,16,8,8] y)\n<int8[16,16,1,1] w = {{{}}}>\n\
         {{\n y = ConvInteger (x, w)\n}}\n",
        int8_with_min(256)
    );
    let inputs: [(&str, accelc::DType, Vec<usize>); 5] = [
        (&conv, accelc::DType::U8, vec![2, 3, 9, 9]),
        (&conv_int, accelc::DType::U8, vec![1, 3, 6, 6]),
        (&matmul, accelc::DType::I8, vec![3, 5, 40]),
        (&matmul_int, accelc::DType::U8, vec![4, 40]),
        (&conv_int8, accelc::DType::U8, vec![1, 16, 8, 8]),
    ];
    for (text, dt, shape) in inputs {
        let data = rng.bytes(shape.iter().product());
        let input = HostTensor::new(dt, shape, data).unwrap();
        for config in [DeviceConfig::default_npu(), DeviceConfig::u65()] {
            let opts = Options { config: config.clone(), ..Options::default() };
            let c = accelc::compile(Source::Text(text), &opts, &mut ())
                .unwrap_or_else(|e| panic!("on {}: {e}\n{text}", config.name));
            let got = Session::new(c.blob().unwrap()).unwrap().run(std::slice::from_ref(&input));
            let got = got.unwrap().outputs.remove(0);
            let want = accelc::reference(&c.reference, std::slice::from_ref(&input)).unwrap();
            assert!(
                got.data == want[0].data,
                "on {}: differs from the reference\n{text}",
                config.name
            );
            let distinct: std::collections::BTreeSet<&u8> = got.data.iter().collect();
            assert!(distinct.len() > 8, "outputs span only {} byte values\n{text}", distinct.len());
        }
    }
}

/// `QAdd` against exact arithmetic (the QDQ semantics in real numbers), over every pair of
/// uint8 codes, on both int8 configurations: a result may differ from
/// `round((a − za)·sa/sy + (b − zb)·sb/sy) + zy` only where that value lies within 1e-5 of
/// a half step (ties, which float arithmetic breaks by its own rounding too).
#[test]
fn integer_addition_matches_exact_arithmetic_on_every_code_pair() {
    for (sa, za, sb, zb, sy, zy) in [
        (0.013f32, 77i32, 0.013f32, 77i32, 0.017f32, 128i32),
        (0.0123, 60, 0.0456, 200, 0.05, 10),
        (0.02, 0, 0.5, 255, 0.3, 3),
    ] {
        let text = format!(
            "<ir_version: 8, opset_import: [\"\" : 17]>\n\
             g (uint8[256,256] a, uint8[256,256] b) => (uint8[256,256] y)\n\
             <float sa = {{{sa}}}, uint8 za = {{{za}}}, float sb = {{{sb}}}, uint8 zb = {{{zb}}}, \
             float sy = {{{sy}}}, uint8 zy = {{{zy}}}>\n\
             {{\n da = DequantizeLinear (a, sa, za)\n db = DequantizeLinear (b, sb, zb)\n \
             s = Add (da, db)\n y = QuantizeLinear (s, sy, zy)\n}}\n"
        );
        let a: Vec<u8> = (0..65536).map(|i| (i / 256) as u8).collect();
        let b: Vec<u8> = (0..65536).map(|i| (i % 256) as u8).collect();
        let ins = [
            HostTensor::new(accelc::DType::U8, vec![256, 256], a.clone()).unwrap(),
            HostTensor::new(accelc::DType::U8, vec![256, 256], b.clone()).unwrap(),
        ];
        for config in [DeviceConfig::default_npu(), DeviceConfig::u65()] {
            let opts = Options { config: config.clone(), ..Options::default() };
            let c = accelc::compile(Source::Text(&text), &opts, &mut ()).unwrap();
            assert!(c.optimized.nodes.iter().any(|n| matches!(n.op, Op::QAdd { .. })));
            let got = Session::new(c.blob().unwrap()).unwrap().run(&ins).unwrap().outputs.remove(0);
            let mut off = 0;
            for i in 0..65536 {
                let real = (f64::from(a[i]) - f64::from(za)) * f64::from(sa) / f64::from(sy)
                    + (f64::from(b[i]) - f64::from(zb)) * f64::from(sb) / f64::from(sy);
                let want = (real.round() + f64::from(zy)).clamp(0.0, 255.0);
                if f64::from(got.data[i]) != want {
                    let tie = ((real - real.floor()) - 0.5).abs() < 1e-5;
                    assert!(
                        tie,
                        "{} on {}: codes ({}, {}): {} instead of {want} (exact {real})",
                        sa, config.name, a[i], b[i], got.data[i]
                    );
                    off += 1;
                }
            }
            assert!(off < 100, "{off} ties rounded the other way");
        }
    }
}

/// One quantized convolution case: activation type, zero point, batch, `[cin, h, w]`,
/// `[cout, k, stride]`, pads.
type ConvCase = (&'static str, i32, usize, [usize; 3], [usize; 3], usize);

/// Runs each case as a QDQ convolution (random int8 weights divided by `wdiv`, output scale
/// `s2`) on both int8 configurations: the program must show that `kernel` was chosen
/// (`chosen(program, cin)`), and the output must match the integer reference byte for byte and
/// span more than 32 values.
fn check_qdq_convs(
    seed: u64,
    cases: &[ConvCase],
    wdiv: i8,
    s2: f32,
    kernel: &str,
    chosen: impl Fn(&accelc_isa::program::Program, usize) -> bool,
) {
    let mut rng = accelc_tests::Rng::new(seed);
    for &(xdt, xz, n, [cin, h, w], [cout, k, st], pad) in cases {
        let weights: Vec<String> =
            rng.bytes(cout * cin * k * k).iter().map(|b| (*b as i8 / wdiv).to_string()).collect();
        let bias: Vec<String> = (0..cout).map(|_| rng.f32_in(-1.0, 1.0).to_string()).collect();
        let (oh, ow) = ((h + 2 * pad - k) / st + 1, (w + 2 * pad - k) / st + 1);
        let text = format!(
            "<ir_version: 8, opset_import: [\"\" : 17]>\n\
             g (float[{n},{cin},{h},{w}] x) => (float[{n},{cout},{oh},{ow}] y)\n\
             <float s = {{0.03}}, {xdt} xz = {{{xz}}}, int8[{cout},{cin},{k},{k}] wq = {{{}}}, \
             float ws = {{0.002}}, int8 wz = {{0}}, float[{cout}] b = {{{}}}, float s2 = {{{s2}}}, \
             uint8 z2 = {{90}}>\n{{\n q = QuantizeLinear (x, s, xz)\n d = DequantizeLinear (q, s, xz)\n \
             wd = DequantizeLinear (wq, ws, wz)\n \
             c = Conv <pads: ints = [{pad},{pad},{pad},{pad}], strides: ints = [{st},{st}]> (d, wd, b)\n \
             o = QuantizeLinear (c, s2, z2)\n y = DequantizeLinear (o, s2, z2)\n}}\n",
            weights.join(","),
            bias.join(",")
        );
        let x: Vec<f32> = (0..n * cin * h * w).map(|_| rng.f32_in(-4.0, 4.0)).collect();
        let input = HostTensor::from_f32(vec![n, cin, h, w], &x).unwrap();
        for config in [DeviceConfig::default_npu(), DeviceConfig::u65()] {
            let what = format!("{xdt} {n}x{cin}x{h}x{w} -> {cout} k{k} s{st} on {}", config.name);
            let opts = Options { config: config.clone(), ..Options::default() };
            let c = accelc::compile(Source::Text(&text), &opts, &mut ())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let program = &c.compiled.as_ref().expect("wholly on the device").program;
            assert!(chosen(program, cin), "{what}: the {kernel} was not chosen");
            let got = Session::new(c.blob().unwrap()).unwrap().run(std::slice::from_ref(&input));
            let got = got.unwrap().outputs.remove(0);
            let want = accelc::reference(c.oracle(), std::slice::from_ref(&input)).unwrap();
            assert!(got.data == want[0].data, "{what}: differs from the integer reference");
            let distinct: std::collections::BTreeSet<u32> =
                got.f32s().unwrap().iter().map(|v| v.to_bits()).collect();
            assert!(distinct.len() > 32, "{what}: outputs span only {} values", distinct.len());
        }
    }
}

/// Channel-streaming convolutions (`kernels::cstream`: activations stationary in the array,
/// output channels streamed) on the shapes that choose them, small spatial extents with many
/// channels: uint8 and int8 activations, padded 3×3 and unpadded 1×1 kernels, input channels
/// not a multiple of the array, several output-channel blocks, a batch of two, stride 2 (phase
/// planes; odd sizes and a strided 1×1), on both int8 configurations. The program holds the
/// kernel's int32 transposes (it was chosen) and the output matches the integer reference
/// byte for byte.
#[test]
fn channel_streaming_convolutions_match_the_integer_reference() {
    let cases: &[ConvCase] = &[
        ("uint8", 131, 1, [64, 7, 7], [256, 3, 1], 1),
        ("int8", -5, 2, [72, 4, 5], [200, 3, 1], 1),
        ("uint8", 0, 1, [256, 4, 4], [320, 1, 1], 0),
        ("int8", 100, 1, [64, 7, 7], [600, 3, 1], 1),
        ("uint8", 77, 1, [96, 14, 14], [256, 3, 2], 1),
        ("int8", 3, 1, [64, 13, 11], [200, 3, 2], 1),
        ("uint8", 200, 1, [128, 14, 14], [256, 1, 2], 0),
    ];
    // Its int32 transposes read the accumulator (a layout copy's read the scratchpad).
    check_qdq_convs(21, cases, 1, 0.25, "channel-streaming kernel", |program, _| {
        program.insts.iter().any(|i| {
            matches!(i.op, accelc_isa::Op::VxTranspose(t)
                if t.dtype == accelc_isa::Dtype::S32 && t.src.space == accelc_isa::Space::Acc)
        })
    });
}

/// Stride-2 convolutions on the weight-stationary kernel read phase planes (the activation
/// block loaded as its even/odd rows × even/odd columns, so each tap walks one plane at stride
/// 1): padded 3×3 and 5×5 and unpadded 1×1 kernels, odd image sizes, a batch of two, uint8 and
/// int8 activations, on both int8 configurations. The program loads a plane (every other
/// pixel, one pixel's channels per run: it was chosen) and the output matches the integer
/// reference byte for byte.
#[test]
fn stride_two_phase_planes_match_the_integer_reference() {
    let cases: &[ConvCase] = &[
        ("uint8", 131, 1, [64, 40, 40], [96, 3, 2], 1),
        ("int8", -5, 2, [32, 29, 27], [64, 3, 2], 1),
        ("uint8", 0, 1, [64, 38, 38], [96, 1, 2], 0),
        ("int8", 100, 1, [32, 45, 47], [40, 5, 2], 2),
    ];
    check_qdq_convs(23, cases, 4, 0.1, "phase-plane load", |program, cin| {
        program.insts.iter().any(|i| {
            matches!(i.op, accelc_isa::Op::DmaLoad(l)
                if program.dma[usize::from(l.desc.0)].x_bytes == cin as u32
                    && program.dma[usize::from(l.desc.0)].y_stride == 2 * cin as u64)
        })
    });
}

/// Phase planes hold more than the strided block (a 7×7 window's four planes 64 pixels'
/// channels, the block's rows 49): when they do not fit, the kernel falls back to the strided
/// block instead of leaving the convolution to the host (found by a reviewer: 128 channels on
/// `tiny` went to the host while 127 stayed on the device).
#[test]
fn stride_two_falls_back_when_phase_planes_do_not_fit() {
    let (cin, cout, hw, k) = (128usize, 8usize, 16usize, 7usize);
    let mut rng = accelc_tests::Rng::new(29);
    let weights: Vec<String> =
        (0..cout * cin * k * k).map(|_| format!("{:.3}", rng.f32_in(-0.1, 0.1))).collect();
    let o = (hw + 6 - k) / 2 + 1;
    let text = format!(
        "<ir_version: 8, opset_import: [\"\" : 17]>\n\
         g (float[1,{cin},{hw},{hw}] x) => (float[1,{cout},{o},{o}] y)\n\
         <float[{cout},{cin},{k},{k}] w = {{{}}}>\n\
         {{\n y = Conv <pads: ints = [3,3,3,3], strides: ints = [2,2]> (x, w)\n}}\n",
        weights.join(",")
    );
    let x: Vec<f32> = (0..cin * hw * hw).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let input = HostTensor::from_f32(vec![1, cin, hw, hw], &x).unwrap();
    let opts = Options { config: DeviceConfig::tiny(), ..Options::default() };
    let c = accelc::compile(Source::Text(&text), &opts, &mut ()).unwrap();
    assert!(c.compiled.is_some(), "the convolution left the device");
    let got = Session::new(c.blob().unwrap()).unwrap().run(std::slice::from_ref(&input));
    let got = got.unwrap().outputs.remove(0).f32s().unwrap();
    let want = accelc::reference(c.oracle(), std::slice::from_ref(&input)).unwrap();
    let want = want[0].f32s().unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 + 1e-3 * w.abs(), "{g} vs {w}");
    }
}
