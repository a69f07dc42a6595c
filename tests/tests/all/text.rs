//! The ONNX text syntax: print∘parse is the identity on every zoo model, `onnx.parser` (from the
//! pinned onnx package) accepts what we print, hand-written models parse and run, errors carry
//! line and column, and random text never panics the parser.

use accelc_compiler::interp::{Array, run};
use accelc_compiler::onnx::{ImportOptions, import, load};
use accelc_compiler::text::{parse, print};
use accelc_isa::asm::render;
use accelc_tests::repo_root;
use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;

use accelc_tests::{ZOO_MODELS, zoo};

fn from_text(text: &str) -> accelc_compiler::ir::Graph {
    let model = parse(text).unwrap_or_else(|d| panic!("{}", render(&d, text, "printed.onnxtxt")));
    import(Bytes::from(model.encode_to_vec()), None, &ImportOptions::default()).unwrap()
}

#[test]
fn print_parse_round_trips_every_zoo_model() {
    for &model in ZOO_MODELS {
        let g = load(&zoo(&format!("{model}.onnx")), &ImportOptions::default()).unwrap();
        let text = print(&g);
        let back = from_text(&text);
        assert!(print(&back) == text, "{model}: print(parse(print(g))) differs from print(g)");
        assert_eq!(back.nodes.len(), g.nodes.len(), "{model}");
    }
}

#[test]
fn parsed_text_computes_what_the_binary_does() {
    let g = load(&zoo("mlp_mnist.onnx"), &ImportOptions::default()).unwrap();
    let back = from_text(&print(&g));
    let x: ndarray::ArrayD<f32> = ndarray_npy::read_npy(zoo("mlp_mnist.input_0.npy")).unwrap();
    assert_eq!(run(&g, &[Array::F32(x.clone())]).unwrap(), run(&back, &[Array::F32(x)]).unwrap());
}

/// `onnx.parser.parse_model` from the pinned onnx package reads our output: the syntax is the
/// real one, not a look-alike.
#[test]
fn onnx_parser_accepts_what_we_print() {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run `bash .ci/setup`", python.display());
    let dir = std::env::temp_dir().join(format!("accelc-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for model in ["mlp_mnist", "transformer_encoder_legacy"] {
        let g = load(&zoo(&format!("{model}.onnx")), &ImportOptions::default()).unwrap();
        let path = dir.join(format!("{model}.onnxtxt"));
        std::fs::write(&path, print(&g)).unwrap();
        let script = "import sys, onnx, onnx.parser\nm = onnx.parser.parse_model(open(sys.argv[1]).read())\nonnx.checker.check_model(m)\nprint(len(m.graph.node), len(m.graph.initializer))";
        let out = std::process::Command::new(&python)
            .args(["-c", script, path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{model}: onnx.parser rejected our text:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let counts = String::from_utf8_lossy(&out.stdout);
        let constants = g.values.iter().filter(|v| v.constant.is_some()).count()
            - g.nodes.iter().filter(|n| n.op == accelc_compiler::ir::Op::Constant).count();
        assert_eq!(counts.trim(), format!("{} {constants}", g.nodes.len()), "{model}");
    }
}

#[test]
fn hand_written_model_parses_and_runs() {
    let text = r#"
<ir_version: 8, opset_import: ["" : 17]>
agraph (float[2, 3] X) => (float[2, 2] Y)
   <float[3, 2] W = {1, 0, 0, 1, 1, 1}, float[2] B = {0.5, -0.5}>
{
   # a comment
   T = MatMul (X, W)
   ["bias"] S = Add (T, B)
   Y = LeakyRelu <alpha: float = 0.1> (S)
}
"#;
    let g = from_text(text);
    let x = ndarray::ArrayD::from_shape_vec(
        ndarray::IxDyn(&[2, 3]),
        vec![1.0f32, 2.0, 3.0, -4.0, -5.0, -6.0],
    )
    .unwrap();
    let Array::F32(y) = &run(&g, &[Array::F32(x)]).unwrap()[0] else { panic!() };
    let want = [4.5f32, 4.5, -0.95, -1.15];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}

#[test]
fn errors_carry_line_and_column() {
    let cases = [
        ("bad token", "<ir_version: 8>\ng (float[1] x) => (float[1] y) {\n  y = Relu (x) $\n}\n"),
        ("missing paren", "g (float[1] x) => (float[1] y) {\n  y = Relu (x\n}\n"),
        ("unknown type", "g (floaty[1] x) => (float[1] y) {\n  y = Relu (x)\n}\n"),
        (
            "wrong count",
            "g (float[1] x) => (float[1] y)\n  <float[2] w = {1}>\n{\n  y = Add (x, w)\n}\n",
        ),
        (
            "bad header",
            "<ir_version: \"eight\">\ng (float[1] x) => (float[1] y) {\n  y = Relu (x)\n}\n",
        ),
        ("not a value", "g (float[1] x) => (float[1] y) {\n  y = Clip <min = low> (x)\n}\n"),
    ];
    let mut out = String::new();
    for (name, text) in cases {
        let d = parse(text).expect_err(name);
        out.push_str(&format!("=== {name}\n{}\n", render(&d, text, "m.onnxtxt")));
    }
    insta::assert_snapshot!(out);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_text_never_panics(s in "[ -~\n]{0,200}") {
        let _ = parse(&s);
    }

    #[test]
    fn random_statements_never_panic(s in "(<ir_version: [0-9]>)?[a-z]{1,4} \\((float\\[[0-9,N]{0,5}\\] [a-z]{1,3}(, )?){0,2}\\) => \\(float\\[1\\] y\\) \\{( [a-z]{1,2} = [A-Z][a-z]{1,5} (<[a-z]{1,4}( : [a-z]+)? = [-0-9.e\\[\\],]{1,6}>)? \\([a-z\",]{0,6}\\))*\\}") {
        if let Ok(m) = parse(&s) {
            let _ = import(Bytes::from(m.encode_to_vec()), None, &ImportOptions::default());
        }
    }
}

/// The IR of the small models after the frontend, as `accelc ir` prints it (large constants
/// summarised), reviewed as snapshots.
#[test]
fn ir_snapshots_of_small_models() {
    for model in ["mlp_mnist", "transformer_encoder_legacy"] {
        let path = zoo(&format!("{model}.onnx"));
        // The frontend's result; the optimizer's is snapshotted in `opt.rs`.
        let run = accelc_tests::accelc(&["ir", path.to_str().unwrap(), "--elide", "16", "-O0"]);
        assert_eq!(run.code, 0, "{run:?}");
        insta::assert_snapshot!(format!("ir_{model}"), run.stdout);
    }
    // --dump-ir shows the graph after import and after every pass.
    let path = zoo("mlp_mnist.onnx");
    let run = accelc_tests::accelc(&["ir", path.to_str().unwrap(), "--elide", "16", "--dump-ir"]);
    for pass in ["import", "fold-constants", "infer-shapes", "optimize"] {
        assert!(run.stderr.contains(&format!("# --- IR after {pass}\n")), "{pass}");
    }
}

/// Each folding rule on a small model in the text syntax, the IR after folding snapshotted.
#[test]
fn folding_rules() {
    use accelc_compiler::fold::fold_constants;
    let header = "<ir_version: 8, opset_import: [\"\" : 17]>\n";
    let cases = [
        (
            "constant_nodes_become_values",
            "g (float[2] x) => (float[2] y) {\n  c = Constant <value: tensor = float[2] {1.0, 2.0}> ()\n  y = Add (x, c)\n}\n",
        ),
        (
            "constant_subgraphs_are_evaluated",
            "g (float[2] x) => (float[2] y) <float[2] a = {1.0, 2.0}, float[2] b = {3.0, 4.0}> {\n  s = Mul (a, b)\n  t = Sqrt (s)\n  y = Add (x, t)\n}\n",
        ),
        (
            "shape_of_a_typed_value",
            "g (float[2,3,4] x) => (float[12,2] y) <int64 i0 = {0}, int64[1] zero = {0}, int64[1] minus1 = {-1}> {\n  s = Shape (x)\n  d = Gather <axis: int = 0> (s, i0)\n  two = Unsqueeze (d, zero)\n  shp = Concat <axis: int = 0> (minus1, two)\n  c = Cast <to: int = 7> (shp)\n  k = Slice (s, minus1, zero)\n  y0 = Reshape (x, c)\n  y = Identity (y0)\n}\n",
        ),
        (
            "dead_nodes_are_removed",
            "g (float[2] x) => (float[2] y) {\n  unused = Relu (x)\n  y = Neg (x)\n}\n",
        ),
    ];
    for (name, body) in cases {
        let mut g = from_text(&format!("{header}{body}"));
        let stats = fold_constants(&mut g).unwrap();
        insta::assert_snapshot!(format!("fold_{name}"), format!("{stats:?}\n{}", print(&g)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Random small graphs of real ops with random attributes, shapes and constants: import,
    /// folding, shape inference, the verifier and the interpreter return errors, never panic.
    #[test]
    fn random_graphs_never_panic_the_frontend(
        nodes in proptest::collection::vec(
            (
                "(Relu|Add|Mul|Conv|ConvTranspose|Reshape|Gather|Concat|Slice|Pad|Split|Transpose|MatMul|Gemm|Softmax|Resize|MaxPool|AveragePool|QuantizeLinear|DequantizeLinear|Squeeze|Unsqueeze|ReduceMean|Flatten|LayerNormalization|Cast|Shape|Clip)",
                "(<(axis|perm|pads|kernel_shape|strides|group|to|mode|axes|epsilon) = ([-0-9]{1,2}|\\[[-0-9,]{1,7}\\]|\"[a-z]{1,6}\")>)?",
                proptest::collection::vec("(x|a|b|c|w|k|\"\")", 0..4),
                "(a|b|c)",
            ),
            1..5,
        ),
        dims in proptest::collection::vec(1usize..4, 1..5),
    ) {
        let shape: Vec<String> = dims.iter().map(usize::to_string).collect();
        let mut text = format!(
            "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[{}] x) => (float[{}] c)\n   <float[2] w = {{1.5, -2.0}}, int64[2] k = {{1, -1}}>\n{{\n",
            shape.join(","),
            shape.join(",")
        );
        for (i, (op, attrs, inputs, out)) in nodes.iter().enumerate() {
            text.push_str(&format!("  [n{i}] {out}{i} = {op} {attrs} ({})\n", inputs.join(", ")));
        }
        text.push_str("  c = Identity (x)\n}\n");
        if let Ok(model) = parse(&text)
            && let Ok(mut g) = import(Bytes::from(model.encode_to_vec()), None, &ImportOptions::default())
        {
            let _ = accelc_compiler::fold::fold_constants(&mut g);
            let _ = accelc_compiler::shape::infer(&mut g);
            let _ = accelc_compiler::verify::verify(&g, true);
            let x = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&dims));
            let _ = run(&g, &[Array::F32(x)]);
        }
    }
}
