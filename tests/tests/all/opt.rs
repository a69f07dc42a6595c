//! The e-graph optimizer: every rule on its own (a start graph in the ONNX text syntax, the
//! expected operators after, and the interpreter's outputs before and after), every zoo model
//! and a BatchNorm variant of resnet18 with outputs unchanged, and snapshots of the optimized
//! IR of the small models.

use accelc_compiler::interp::{Array, run};
use accelc_compiler::ir::Graph;
use accelc_compiler::onnx::ImportOptions;
use accelc_compiler::opt::{Level, Options, optimize, optimize_with};
use accelc_compiler::pipeline::{load_any, run_frontend};
use accelc_tests::{Rng, zoo};
use ndarray::{ArrayD, IxDyn};

fn frontend(path: &std::path::Path) -> Graph {
    let mut g = load_any(path, &ImportOptions::default()).unwrap();
    run_frontend(&mut g, &mut |_, _| {}).unwrap();
    g
}

fn random_inputs(g: &Graph, seed: u64) -> Vec<Array> {
    let mut rng = Rng::new(seed);
    g.inputs
        .iter()
        .map(|v| {
            let shape = g.value(*v).ty.as_ref().unwrap().shape.clone();
            let n: usize = shape.iter().product();
            Array::F32(
                ArrayD::from_shape_vec(
                    IxDyn(&shape),
                    (0..n).map(|_| rng.f32_in(-1.0, 1.0)).collect(),
                )
                .unwrap(),
            )
        })
        .collect()
}

fn assert_close(a: &[Array], b: &[Array], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: output count");
    for (x, y) in a.iter().zip(b) {
        let (Array::F32(x), Array::F32(y)) = (x, y) else {
            assert_eq!(x, y, "{what}");
            continue;
        };
        assert_eq!(x.shape(), y.shape(), "{what}");
        let big = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (p, q) in x.iter().zip(y.iter()) {
            assert!((p - q).abs() <= 1e-5 + 1e-3 * q.abs() + 1e-5 * big, "{what}: {p} vs {q}");
        }
    }
}

#[test]
fn zoo_models_keep_their_outputs() {
    for m in [
        "mlp_mnist",
        "transformer_encoder",
        "transformer_encoder_legacy",
        "squeezenet1_1",
        "mobilenet_v2",
        "resnet18",
    ] {
        let g0 = frontend(&zoo(&format!("{m}.onnx")));
        let mut g = g0.clone();
        let report = optimize(&mut g, &Options::default()).unwrap();
        eprintln!("{m}: {report}");
        let ins = random_inputs(&g0, 3);
        assert_close(&run(&g, &ins).unwrap(), &run(&g0, &ins).unwrap(), m);
    }
}

/// resnet18 with a BatchNormalization after every convolution: none is left at -O2, the
/// outputs are unchanged on the interpreter, and the device runs fewer cycles than at -O0.
#[test]
fn resnet18_bn_loses_every_batchnorm() {
    use accelc_compiler::ir::Op;
    use accelc_compiler::lower::{CompileOptions, compile};
    let g0 = accelc_tests::insert_batchnorm(&frontend(&zoo("resnet18.onnx")), 5);
    let bn = |g: &Graph| g.nodes.iter().filter(|n| matches!(n.op, Op::BatchNorm { .. })).count();
    assert_eq!(bn(&g0), 20);
    let mut g = g0.clone();
    let report = optimize(&mut g, &Options::default()).unwrap();
    assert_eq!(bn(&g), 0, "{report}");
    assert_eq!(g.nodes.len(), g0.nodes.len() - 20, "{report}");
    let ins = random_inputs(&g0, 9);
    assert_close(&run(&g, &ins).unwrap(), &run(&g0, &ins).unwrap(), "resnet18_bn");
    let o0 = compile(&g0, &CompileOptions::default()).unwrap().estimate_cycles();
    let o2 = compile(&g, &CompileOptions::default()).unwrap().estimate_cycles();
    assert!(o2 < o0, "{o2} vs {o0}");
}

/// One rule (plus the clean-up rules it relies on): a start graph, the operators expected after
/// optimisation at -O2, and the same outputs on the interpreter.
struct RuleCase {
    output: &'static str,
    rules: &'static [&'static str],
    inputs: &'static str,
    consts: &'static str,
    body: &'static str,
    expect: &'static [&'static str],
}

const RULE_CASES: &[RuleCase] = &[
    RuleCase {
        output: "float[2,3]",
        rules: &["identity"],
        inputs: "float[2,3] x",
        consts: "",
        body: "a = Identity (x)\n y = Relu (a)",
        expect: &["Relu"],
    },
    RuleCase {
        output: "float[2,3]",
        rules: &["noop-reshape"],
        inputs: "float[2,3] x",
        consts: "int64[2] s = {2,3}",
        body: "a = Reshape (x, s)\n y = Relu (a)",
        expect: &["Relu"],
    },
    RuleCase {
        output: "float[2,3]",
        rules: &["noop-transpose"],
        inputs: "float[2,3] x",
        consts: "",
        body: "a = Transpose <perm: ints = [0,1]> (x)\n y = Relu (a)",
        expect: &["Relu"],
    },
    RuleCase {
        output: "float[2,3]",
        rules: &["noop-cast"],
        inputs: "float[2,3] x",
        consts: "",
        body: "a = Cast <to: int = 1> (x)\n y = Relu (a)",
        expect: &["Relu"],
    },
    RuleCase {
        output: "float[2,3]",
        rules: &["noop-arith"],
        inputs: "float[2,3] x",
        consts: "float one = {1.0}, float zero = {0.0}",
        body: "a = Mul (x, one)\n b = Add (zero, a)\n y = Relu (b)",
        expect: &["Relu"],
    },
    RuleCase {
        output: "float[4,6]",
        rules: &["reshape-chain"],
        inputs: "float[2,3,4] x",
        consts: "int64[2] s1 = {6,4}, int64[2] s2 = {4,6}",
        body: "a = Reshape (x, s1)\n b = Reshape (a, s2)\n y = Relu (b)",
        expect: &["Reshape", "Relu"],
    },
    RuleCase {
        output: "float[6,4]",
        rules: &["reshape-chain", "noop-reshape"],
        inputs: "float[2,3,4] x",
        consts: "int64[2] s1 = {6,4}",
        body: "a = Reshape (x, s1)\n b = Unsqueeze (a, k0)\n c = Flatten <axis: int = 1> (b)\n d = Reshape (c, k64)\n y = Relu (d)",
        expect: &["Reshape", "Relu"],
    },
    RuleCase {
        output: "float[3,4,2]",
        rules: &["transpose-chain"],
        inputs: "float[2,3,4] x",
        consts: "",
        body: "a = Transpose <perm: ints = [1,0,2]> (x)\n b = Transpose <perm: ints = [0,2,1]> (a)\n y = Relu (b)",
        expect: &["Transpose", "Relu"],
    },
    RuleCase {
        output: "float[2,3,4]",
        rules: &["transpose-chain", "noop-transpose"],
        inputs: "float[2,3,4] x",
        consts: "",
        body: "a = Transpose <perm: ints = [1,0,2]> (x)\n b = Transpose <perm: ints = [1,0,2]> (a)\n y = Relu (b)",
        expect: &["Relu"],
    },
    RuleCase {
        output: "float[2,3]",
        rules: &["transpose-through-unary", "transpose-chain", "noop-transpose"],
        inputs: "float[2,3] x",
        consts: "",
        body: "a = Transpose <perm: ints = [1,0]> (x)\n b = Sigmoid (a)\n y = Transpose <perm: ints = [1,0]> (b)",
        expect: &["Sigmoid"],
    },
    RuleCase {
        output: "float[2,3]",
        rules: &["transpose-through-binary", "transpose-chain", "noop-transpose"],
        inputs: "float[2,3] x, float[2,3] z",
        consts: "",
        body: "a = Transpose <perm: ints = [1,0]> (x)\n b = Transpose <perm: ints = [1,0]> (z)\n c = Add (a, b)\n y = Transpose <perm: ints = [1,0]> (c)",
        expect: &["Add"],
    },
    RuleCase {
        output: "float[2,3]",
        rules: &["gelu-from-erf"],
        inputs: "float[2,3] x",
        consts: "float r2 = {1.4142135}, float one = {1.0}, float half = {0.5}",
        body: "d = Div (x, r2)\n e = Erf (d)\n a = Add (e, one)\n m = Mul (half, a)\n y = Mul (x, m)",
        expect: &["Gelu"],
    },
    RuleCase {
        output: "float[2,3]",
        rules: &["gelu-from-erf"],
        inputs: "float[2,3] x",
        consts: "float r2 = {1.4142135}, float one = {1.0}, float half = {0.5}",
        body: "d = Div (x, r2)\n e = Erf (d)\n a = Add (one, e)\n m = Mul (a, x)\n y = Mul (m, half)",
        expect: &["Gelu"],
    },
    RuleCase {
        output: "float[2,3]",
        rules: &["div-to-mul"],
        inputs: "float[2,3] x",
        consts: "float c = {1.4142135}",
        body: "y = Div (x, c)",
        expect: &["Mul"],
    },
    RuleCase {
        output: "float[1,3,3,3]",
        rules: &["batchnorm-into-conv"],
        inputs: "float[1,2,5,5] x",
        consts: "float[3,2,3,3] w = {0.1,-0.2,0.3,0.4,-0.5,0.6,0.7,0.8,-0.9,0.1,0.2,0.3,-0.4,0.5,0.6,0.7,-0.8,0.9,0.2,0.1,-0.3,0.5,0.4,-0.6,0.8,0.7,0.9,-0.1,0.3,0.2,0.6,-0.5,0.4,0.9,0.8,-0.7,0.3,0.1,0.2,-0.6,0.4,0.5,0.9,0.7,-0.8,0.1,0.1,0.1,0.2,0.2,0.2,-0.3,-0.3,-0.3}, float[3] b = {0.1,0.2,0.3}, float[3] s = {1.5,0.5,2.0}, float[3] bb = {0.0,0.1,-0.1}, float[3] m = {0.2,-0.2,0.1}, float[3] v = {0.5,1.5,1.0}",
        body: "c = Conv (x, w, b)\n y = BatchNormalization (c, s, bb, m, v)",
        expect: &["Conv"],
    },
    RuleCase {
        output: "float[1,3,5,5]",
        rules: &["mul-into-conv"],
        inputs: "float[1,2,5,5] x",
        consts: "float[3,2,1,1] w = {0.1,-0.2,0.3,0.4,-0.5,0.6}, float[3,1,1] k = {2.0,-1.0,0.5}",
        body: "c = Conv (x, w)\n y = Mul (c, k)",
        expect: &["Conv"],
    },
    RuleCase {
        output: "float[1,3,5,5]",
        rules: &["add-into-conv"],
        inputs: "float[1,2,5,5] x",
        consts: "float[3,2,1,1] w = {0.1,-0.2,0.3,0.4,-0.5,0.6}, float[1,3,1,1] k = {2.0,-1.0,0.5}",
        body: "c = Conv (x, w)\n y = Add (k, c)",
        expect: &["Conv"],
    },
    RuleCase {
        output: "float[2,4]",
        rules: &["matmul-add-to-gemm"],
        inputs: "float[2,3] x",
        consts: "float[3,4] w = {0.1,-0.2,0.3,0.4,-0.5,0.6,0.7,0.8,-0.9,0.1,0.2,0.3}, float[4] c = {1.0,2.0,3.0,4.0}",
        body: "m = MatMul (x, w)\n y = Add (m, c)",
        expect: &["Gemm"],
    },
    RuleCase {
        output: "float[1,3,6,6]",
        rules: &["pad-into-conv"],
        inputs: "float[1,2,5,5] x",
        consts: "float[3,2,3,3] w = {0.1,-0.2,0.3,0.4,-0.5,0.6,0.7,0.8,-0.9,0.1,0.2,0.3,-0.4,0.5,0.6,0.7,-0.8,0.9,0.2,0.1,-0.3,0.5,0.4,-0.6,0.8,0.7,0.9,-0.1,0.3,0.2,0.6,-0.5,0.4,0.9,0.8,-0.7,0.3,0.1,0.2,-0.6,0.4,0.5,0.9,0.7,-0.8,0.1,0.1,0.1,0.2,0.2,0.2,-0.3,-0.3,-0.3}, int64[8] p = {0,0,1,2,0,0,1,0}",
        body: "a = Pad (x, p)\n y = Conv <pads: ints = [1,0,0,1]> (a, w)",
        expect: &["Conv"],
    },
    RuleCase {
        output: "float[1,2,5,5]",
        rules: &["pad-into-pool"],
        inputs: "float[1,2,5,5] x",
        consts: "int64[8] p = {0,0,1,1,0,0,1,1}, float neg = {-1.0}, float zero = {0.0}",
        body: "ninf = Div (neg, zero)\n a = Pad (x, p, ninf)\n y = MaxPool <kernel_shape: ints = [3,3]> (a)",
        expect: &["MaxPool"],
    },
    RuleCase {
        output: "float[1,2,3,3]",
        rules: &["qdq-maxpool"],
        inputs: "float[1,2,5,5] x",
        consts: "float s = {0.03}, int8 z = {-7}",
        body: "q = QuantizeLinear (x, s, z)\n d = DequantizeLinear (q, s, z)\n m = MaxPool <kernel_shape: ints = [3,3], strides: ints = [2,2], pads: ints = [1,1,1,1]> (d)\n o = QuantizeLinear (m, s, z)\n y = DequantizeLinear (o, s, z)",
        expect: &["QuantizeLinear", "MaxPool", "DequantizeLinear"],
    },
    RuleCase {
        output: "float[1,5,5,5]",
        rules: &["qdq-concat", "qdq-requant"],
        inputs: "float[1,2,5,5] x, float[1,3,5,5] x2",
        consts: "float s = {0.03}, int8 z = {-7}, float s2 = {0.05}, int8 z2 = {3}, float s3 = {0.04}, int8 z3 = {-2}",
        body: "q = QuantizeLinear (x, s, z)\n d = DequantizeLinear (q, s, z)\n q2 = QuantizeLinear (x2, s2, z2)\n d2 = DequantizeLinear (q2, s2, z2)\n c = Concat <axis: int = 1> (d, d2)\n o = QuantizeLinear (c, s3, z3)\n y = DequantizeLinear (o, s3, z3)",
        expect: &["QuantizeLinear", "Lut", "QuantizeLinear", "Lut", "Concat", "DequantizeLinear"],
    },
    RuleCase {
        output: "float[1,2,5,5]",
        rules: &["qdq-requant"],
        inputs: "float[1,2,5,5] x",
        consts: "float s = {0.03}, int8 z = {-7}",
        body: "q = QuantizeLinear (x, s, z)\n d = DequantizeLinear (q, s, z)\n o = QuantizeLinear (d, s, z)\n y = DequantizeLinear (o, s, z)",
        expect: &["QuantizeLinear", "DequantizeLinear"],
    },
    RuleCase {
        output: "float[2,25]",
        rules: &["qdq-movement"],
        inputs: "float[1,2,5,5] x",
        consts: "float s = {0.03}, int8 z = {-7}, int64[2] sh = {2,25}",
        body: "q = QuantizeLinear (x, s, z)\n d = DequantizeLinear (q, s, z)\n t = Transpose <perm: ints = [0,1,3,2]> (d)\n tq = QuantizeLinear (t, s, z)\n td = DequantizeLinear (tq, s, z)\n r = Reshape (td, sh)\n o = QuantizeLinear (r, s, z)\n y = DequantizeLinear (o, s, z)",
        expect: &["QuantizeLinear", "Transpose", "Reshape", "DequantizeLinear"],
    },
    RuleCase {
        output: "float[1,2,5,5]",
        rules: &["qdq-lut"],
        inputs: "float[1,2,5,5] x",
        consts: "float s = {0.03}, uint8 z = {128}, float s2 = {0.004}, uint8 z2 = {3}",
        body: "q = QuantizeLinear (x, s, z)\n d = DequantizeLinear (q, s, z)\n h = HardSigmoid (d)\n a = Mul (d, h)\n o = QuantizeLinear (a, s2, z2)\n y = DequantizeLinear (o, s2, z2)",
        expect: &["QuantizeLinear", "Lut", "DequantizeLinear"],
    },
];

/// The quantization rules on their own. They are not exact equalities (integer kernels round
/// as the device does, the float QDQ graph in float), so the outputs may differ by one step of
/// the output scale (`OUT_STEP`), never more.
const QUANT_CASES: &[RuleCase] = &[
    RuleCase {
        output: "float[1,3,5,5]",
        rules: &["qdq-conv"],
        inputs: "float[1,2,5,5] x",
        consts: "float xs = {0.02}, uint8 xz = {128}, int8[3,2,3,3] wq = {12,-20,33,41,-55,60,70,80,-90,10,20,30,-40,50,60,70,-80,90,20,10,-30,50,40,-60,80,70,90,-10,30,20,60,-50,40,90,80,-70,30,10,20,-60,40,50,90,70,-80,10,10,10,20,20,20,-30,-30,-30}, float[3] ws = {0.01,0.005,0.002}, int32[3] bq = {500,-2000,100000}, float[3] bs = {0.0002,0.0001,0.00004}, float ys = {0.05}, uint8 yz = {10}",
        body: "q = QuantizeLinear (x, xs, xz)\n d = DequantizeLinear (q, xs, xz)\n w = DequantizeLinear <axis: int = 0> (wq, ws)\n b = DequantizeLinear <axis: int = 0> (bq, bs)\n c = Conv <pads: ints = [1,1,1,1]> (d, w, b)\n r = Relu (c)\n o = QuantizeLinear (r, ys, yz)\n y = DequantizeLinear (o, ys, yz)",
        expect: &["QuantizeLinear", "QConv", "DequantizeLinear"],
    },
    RuleCase {
        output: "float[2,4]",
        rules: &["qdq-gemm", "reshape-chain", "noop-reshape"],
        inputs: "float[2,3] x",
        consts: "float xs = {0.01}, int8 xz = {-3}, int8[4,3] wq = {10,-20,30,40,-50,60,70,80,-90,100,110,-120}, float ws = {0.004}, int32[4] bq = {1000,-1000,2500,0}, float bs = {0.00004}, float ys = {0.02}, int8 yz = {5}",
        body: "q = QuantizeLinear (x, xs, xz)\n d = DequantizeLinear (q, xs, xz)\n w = DequantizeLinear (wq, ws)\n b = DequantizeLinear (bq, bs)\n g = Gemm <transB: int = 1> (d, w, b)\n o = QuantizeLinear (g, ys, yz)\n y = DequantizeLinear (o, ys, yz)",
        expect: &["QuantizeLinear", "Reshape", "QConv", "Reshape", "DequantizeLinear"],
    },
    RuleCase {
        output: "float[1,3,4,4]",
        rules: &["qdq-add"],
        inputs: "float[1,3,4,4] x, float[1,3,4,4] x2",
        consts: "float as = {0.02}, uint8 az = {120}, float bs = {0.035}, int8 bz = {-4}, float ys = {0.045}, uint8 yz = {100}",
        body: "qa = QuantizeLinear (x, as, az)\n da = DequantizeLinear (qa, as, az)\n qb = QuantizeLinear (x2, bs, bz)\n db = DequantizeLinear (qb, bs, bz)\n s = Add (da, db)\n r = Relu (s)\n o = QuantizeLinear (r, ys, yz)\n y = DequantizeLinear (o, ys, yz)",
        expect: &["QuantizeLinear", "QuantizeLinear", "QAdd", "DequantizeLinear"],
    },
    RuleCase {
        output: "float[2,3,4]",
        rules: &["qdq-gemm", "reshape-chain", "noop-reshape"],
        inputs: "float[2,3,5] x",
        consts: "float xs = {0.01}, uint8 xz = {120}, int8[5,4] wq = {10,-20,30,40,-50,60,70,80,-90,100,110,-120,5,6,7,8,-9,-10,11,12}, float[4] ws = {0.004,0.002,0.003,0.001}, int8[4] wz = {0,1,-1,2}, float ys = {0.02}, int8 yz = {-5}",
        body: "q = QuantizeLinear (x, xs, xz)\n d = DequantizeLinear (q, xs, xz)\n w = DequantizeLinear <axis: int = 1> (wq, ws, wz)\n m = MatMul (d, w)\n o = QuantizeLinear (m, ys, yz)\n y = DequantizeLinear (o, ys, yz)",
        expect: &["QuantizeLinear", "Reshape", "QConv", "Reshape", "DequantizeLinear"],
    },
    RuleCase {
        output: "float[1,3,5,5]",
        rules: &["qdq-conv"],
        inputs: "float[1,2,5,5] x",
        consts: "float xs = {0.02}, uint8 xz = {128}, int8[3,2,3,3] wq = {127,-128,33,41,-55,60,70,80,-90,10,20,30,-40,50,60,70,-80,90,20,10,-30,50,40,-60,80,70,90,-10,30,20,60,-50,40,90,80,-70,30,10,20,-60,40,50,90,70,-80,10,10,10,20,20,20,-30,-30,-30}, float[3] ws = {0.01,0.005,0.002}, int8[3] wz = {-100,3,90}, float ys = {0.05}, uint8 yz = {10}",
        body: "q = QuantizeLinear (x, xs, xz)\n d = DequantizeLinear (q, xs, xz)\n w = DequantizeLinear <axis: int = 0> (wq, ws, wz)\n c = Conv <pads: ints = [1,1,1,1]> (d, w)\n o = QuantizeLinear (c, ys, yz)\n y = DequantizeLinear (o, ys, yz)",
        expect: &["QuantizeLinear", "Concat", "QConv", "DequantizeLinear"],
    },
    RuleCase {
        output: "float[1,8,1,1]",
        rules: &["qdq-gap"],
        inputs: "float[1,8,6,7] x",
        consts: "float xs = {0.02}, int8 xz = {-9}, float ys = {0.0025}, uint8 yz = {120}",
        body: "q = QuantizeLinear (x, xs, xz)\n d = DequantizeLinear (q, xs, xz)\n g = GlobalAveragePool (d)\n o = QuantizeLinear (g, ys, yz)\n y = DequantizeLinear (o, ys, yz)",
        expect: &["QuantizeLinear", "QGlobalAveragePool", "DequantizeLinear"],
    },
];

/// The output scale of [`QUANT_CASES`] is at most this.
const OUT_STEP: f32 = 0.05;

#[test]
fn every_rule_on_its_own() {
    use accelc_compiler::opt::rules;
    let mut covered: Vec<&str> = Vec::new();
    let cases = RULE_CASES.iter().map(|c| (c, false)).chain(QUANT_CASES.iter().map(|c| (c, true)));
    for (i, (case, quant)) in cases.enumerate() {
        let consts = if case.consts.is_empty() {
            "int64[1] k0 = {0}, int64[2] k64 = {6,4}".to_string()
        } else {
            format!("{}, int64[1] k0 = {{0}}, int64[2] k64 = {{6,4}}", case.consts)
        };
        let text = format!(
            "<ir_version: 8, opset_import: [\"\" : 17]>\ng ({}) => ({} y)\n<{consts}>\n{{\n {}\n}}\n",
            case.inputs, case.output, case.body
        );
        let dir = std::env::temp_dir().join(format!("accelc-rule-{}-{i}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.onnxtxt");
        std::fs::write(&path, &text).unwrap();
        let g0 = frontend(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        let mut g = g0.clone();
        let report = optimize_with(&mut g, &Options::default(), Some(case.rules)).unwrap();
        let ops: Vec<&str> = g.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, case.expect, "{:?}: {report}\n{text}", case.rules);
        let applied = &case.rules[0];
        assert!(
            report.applied.iter().any(|(r, n)| r == applied && *n > 0),
            "{applied} never applied: {report}"
        );
        let ins = random_inputs(&g0, 1);
        let (after, before) = (run(&g, &ins).unwrap(), run(&g0, &ins).unwrap());
        if quant {
            let (Array::F32(a), Array::F32(b)) = (&after[0], &before[0]) else { panic!() };
            let worst = a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
            assert!(worst <= OUT_STEP * 1.0001, "{applied}: outputs differ by {worst}");
            // Not vacuous: the quantized outputs span many steps.
            let distinct: std::collections::BTreeSet<u32> = a.iter().map(|v| v.to_bits()).collect();
            assert!(distinct.len() > 4, "{applied}: outputs {a:?}");
        } else {
            assert_close(&after, &before, applied);
        }
        covered.push(applied);
    }
    for r in rules::all() {
        assert!(covered.contains(&r.name), "rule {} has no test", r.name);
    }
}

/// The optimized IR of the small models (constants elided), as `accelc ir` prints it.
#[test]
fn optimized_ir_snapshots() {
    use accelc_compiler::text::print_with;
    let models = [
        ("mlp_mnist", accelc_tests::repo_root().join("models/mlp_mnist.onnx")),
        ("small_cnn", accelc_tests::tests_path("models/small_cnn.onnxtxt")),
        ("opt_demo", accelc_tests::tests_path("models/opt_demo.onnxtxt")),
        ("transformer_encoder", zoo("transformer_encoder.onnx")),
    ];
    for (name, path) in models {
        let g0 = frontend(&path);
        let mut g = g0.clone();
        let report = optimize(&mut g, &Options::default()).unwrap();
        let ins = random_inputs(&g0, 6);
        assert_close(&run(&g, &ins).unwrap(), &run(&g0, &ins).unwrap(), name);
        let text = format!(
            "# {} -> {} nodes; rules: {:?}; stopped: {}\n{}",
            report.nodes_before,
            report.nodes_after,
            report.applied,
            report.stop,
            print_with(&g, 8)
        );
        insta::assert_snapshot!(format!("optimized_{name}"), text);
    }
}

/// The optimizer is deterministic: the same model gives the same graph, run after run.
#[test]
fn optimization_is_deterministic() {
    use accelc_compiler::text::print_with;
    let g0 = frontend(&zoo("transformer_encoder.onnx"));
    let once = |g: &Graph| {
        let mut g = g.clone();
        optimize(&mut g, &Options::default()).unwrap();
        print_with(&g, 4)
    };
    let first = once(&g0);
    for _ in 0..3 {
        assert_eq!(once(&g0), first);
    }
    // -O1 and -O0 are valid too and keep the outputs.
    let ins = random_inputs(&g0, 4);
    let want = run(&g0, &ins).unwrap();
    for level in [Level::O0, Level::O1] {
        let mut g = g0.clone();
        optimize(&mut g, &Options { level, ..Options::default() }).unwrap();
        assert_close(&run(&g, &ins).unwrap(), &want, "level");
    }
}
