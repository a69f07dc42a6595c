//! Semantic faithfulness: the edge cases of `../shared/cases` (expected values computed from the
//! ONNX specification, cross-checked against onnxruntime and `onnx.reference`) end to end through
//! `accelc run --expect`; every attribute of every ONNX schema version of a supported op either
//! honoured or refused by name (walking the schemas the pinned `onnx` package lists); the opset
//! changes of supported ops (hand-computed values, reference and device); the NaN rule; and
//! nearest `Resize` on the device against the op's index map.

use std::path::PathBuf;

use accelc_compiler::ir::Op;
use accelc_compiler::onnx::{ImportOptions, MAX_OPSET, MIN_OPSET, UNREAD, import};
use accelc_compiler::ops::{arity_of, onnx_ops, since};
use accelc_compiler::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
    attribute_proto,
};
use accelc_tests::{accelc, repo_root};
use ndarray::ArrayD;
use prost::Message;

fn case(name: &str, file: &str) -> String {
    repo_root().join("../shared/cases").join(name).join(file).display().to_string()
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("accelc-faithful-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `accelc run MODEL --input x=... --expect y=...` at `-O0` and `-O2`: exit status and output.
fn run_case(name: &str) -> Vec<(u8, String)> {
    ["-O0", "-O2"]
        .iter()
        .map(|o| {
            let r = accelc(&[
                "run",
                &case(name, "model.onnx"),
                o,
                "--input",
                &format!("x={}", case(name, "input_x.npy")),
                "--expect",
                &format!("y={}", case(name, "expected_y.npy")),
            ]);
            (r.code, format!("{}{}", r.stdout, r.stderr))
        })
        .collect()
}

#[test]
fn cases_with_known_answers_match_end_to_end() {
    for name in [
        "resize_nearest_noninteger_scale",
        "batchnorm_opset7_spatial0",
        "softmax_opset11_coerce",
        "softmax_opset11_coerce_folded",
        // A masked attention step (Where → Softmax → MatMul) concatenated with another slice:
        // Where runs (on the host) and the optimizer keeps every rewrite well-typed, at -O0
        // and -O2 alike.
        "where_upstream_of_concat",
    ] {
        for (code, text) in run_case(name) {
            assert_eq!(code, 0, "{name}: {text}");
            assert!(text.contains("matches the expected values"), "{name}: {text}");
        }
    }
}

#[test]
fn batchnorm_7_spatial_attribute_with_runtime_parameters() {
    // spatial = 0 with parameters as graph inputs (nothing folds): per activation; spatial = 1
    // (the default): per channel.
    let x: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let p = |v: [f32; 4]| arr(&[2, 2], v.to_vec());
    let (scale, bias, mean, var) = (
        p([1.0, 2.0, 3.0, 4.0]),
        p([0.5, 0.0, -0.5, 1.0]),
        p([1.0, 1.0, 2.0, 2.0]),
        p([1.0, 4.0, 9.0, 16.0]),
    );
    let model = "<ir_version: 3, opset_import: [\"\" : 7]>\n\
        g (float[2,2,2] x, float[2,2] s, float[2,2] b, float[2,2] m, float[2,2] v) => (float y) {\n\
          y = BatchNormalization <spatial: int = 0, epsilon: float = 0.0> (x, s, b, m, v)\n\
        }";
    let ins = [
        ("x", arr(&[2, 2, 2], x.clone())),
        ("s", scale.clone()),
        ("b", bias.clone()),
        ("m", mean.clone()),
        ("v", var.clone()),
    ];
    let r = run_text("bn7", model, &ins, "-O2").ok();
    let want: Vec<f64> = (0..8)
        .map(|i| {
            let k = i % 4;
            let f = |a: &ArrayD<f32>| f64::from(a.as_slice().unwrap()[k]);
            (f64::from(x[i]) - f(&mean)) / f(&var).sqrt() * f(&scale) + f(&bias)
        })
        .collect();
    close(&r.out("y"), &want, "spatial = 0");
}

// ---- attributes ---------------------------------------------------------------------------

/// One version of an operator's schema, as `tests/conformance/generate.py` writes it.
struct Schema {
    name: String,
    since_version: i64,
    /// `min_input..=max_input, min_output..=max_output` (onnx writes 2^31 - 1 for variadic).
    counts: [i64; 4],
    attributes: Vec<(String, SchemaAttr)>,
}

struct SchemaAttr {
    r#type: String,
    default: Option<serde_json::Value>,
}

fn schemas() -> Vec<Schema> {
    let path = repo_root().join("target/onnx-node-tests/schemas.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `bash .ci/setup`)", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| Schema {
            name: s["name"].as_str().unwrap().to_string(),
            since_version: s["since_version"].as_i64().unwrap(),
            counts: ["min_input", "max_input", "min_output", "max_output"].map(|k| {
                s[k].as_i64().unwrap_or_else(|| panic!("{k} missing (run `bash .ci/setup`)"))
            }),
            attributes: s["attributes"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, a)| {
                    let t = a["type"].as_str().unwrap().to_string();
                    (
                        k.clone(),
                        SchemaAttr {
                            r#type: t,
                            default: Some(a["default"].clone()).filter(|d| !d.is_null()),
                        },
                    )
                })
                .collect(),
        })
        .collect()
}

/// The schema version of `op` in force at `opset`.
fn schema_at<'s>(schemas: &'s [Schema], op: &str, opset: i64) -> Option<&'s Schema> {
    schemas
        .iter()
        .filter(|s| s.name == op && s.since_version <= opset)
        .max_by_key(|s| s.since_version)
}

/// An attribute holding the schema's default, or a plausible value when it has none.
fn attribute(name: &str, a: &SchemaAttr) -> Option<AttributeProto> {
    use attribute_proto::AttributeType as T;
    let mut p = AttributeProto { name: Some(name.into()), ..Default::default() };
    let d = a.default.as_ref();
    match a.r#type.as_str() {
        "INT" => {
            p.r#type = Some(T::Int as i32);
            p.i = Some(d.and_then(|v| v.as_i64()).unwrap_or(match name {
                "to" => 1,
                "axis" => 0,
                _ => 1,
            }));
        }
        "FLOAT" => {
            p.r#type = Some(T::Float as i32);
            p.f = Some(d.and_then(|v| v.as_f64()).unwrap_or(0.5) as f32);
        }
        "STRING" => {
            p.r#type = Some(T::String as i32);
            p.s = Some(d.and_then(|v| v.as_str()).unwrap_or("").as_bytes().to_vec().into());
        }
        "INTS" => {
            p.r#type = Some(T::Ints as i32);
            p.ints = d
                .and_then(|v| v.as_array())
                .map(|v| v.iter().filter_map(|x| x.as_i64()).collect())
                .unwrap_or_else(|| vec![if name == "perm" || name == "axes" { 0 } else { 1 }]);
        }
        "FLOATS" => {
            p.r#type = Some(T::Floats as i32);
            p.floats = vec![1.0];
        }
        // Tensors, graphs, sparse tensors and string lists: only Constant's values, which are
        // checked by the Constant tests of the frontend.
        _ => return None,
    }
    Some(p)
}

/// A graph input `name` of type float (shape unknown).
fn float_input(name: &str) -> ValueInfoProto {
    use accelc_compiler::proto::{TypeProto, type_proto};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A model of one node `n` of type `op` with `attrs`, reading as many graph inputs as its
/// schema requires at `opset` (`x0`, `x1`, ...), writing `y`.
fn one_node_model(op: &str, opset: i64, attrs: Vec<AttributeProto>) -> ModelProto {
    let needs = arity_of(op, opset).map_or(0, |a| *a.inputs.start());
    let outs = arity_of(op, opset).map_or(1, |a| *a.outputs.start()).max(1);
    let inputs: Vec<String> = (0..needs).map(|i| format!("x{i}")).collect();
    let node = NodeProto {
        op_type: Some(op.into()),
        name: Some("n".into()),
        input: inputs.clone(),
        output: (0..outs).map(|i| if i == 0 { "y".into() } else { format!("y{i}") }).collect(),
        attribute: attrs,
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            node: vec![node],
            input: inputs.iter().map(|i| float_input(i)).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The refusal reason of the model's only node (or the import error), if it is refused.
fn refusal(m: &ModelProto) -> Option<String> {
    let g = match import(m.encode_to_vec().into(), None, &ImportOptions::default()) {
        Ok(g) => g,
        Err(e) => return Some(e.to_string()),
    };
    match &g.nodes[0].op {
        Op::Unsupported { reason, .. } => Some(reason.clone()),
        _ => None,
    }
}

#[test]
fn every_schema_attribute_of_a_supported_op_is_known_to_the_importer() {
    let schemas = schemas();
    let mut checked = 0;
    let mut unknown = vec![];
    for op in &onnx_ops() {
        let versions: Vec<&Schema> = schemas.iter().filter(|s| s.name == *op).collect();
        assert!(!versions.is_empty(), "{op} is not an ONNX operator");
        for opset in MIN_OPSET..=MAX_OPSET {
            let Some(s) = versions
                .iter()
                .filter(|s| s.since_version <= opset)
                .max_by_key(|s| s.since_version)
            else {
                continue;
            };
            for (name, a) in &s.attributes {
                let Some(attr) = attribute(name, a) else { continue };
                checked += 1;
                let mut base = vec![];
                if *op == "Cast" && name != "to" {
                    base.push(
                        attribute("to", &SchemaAttr { r#type: "INT".into(), default: None })
                            .unwrap(),
                    );
                }
                // A refusal of the op at this opset whatever its attributes says nothing about
                // this one.
                let whole_op = refusal(&one_node_model(op, opset, base.clone()));
                let mut attrs = base;
                attrs.push(attr);
                // Imported as supported (the attribute is honoured), or refused naming it.
                if let Some(r) = refusal(&one_node_model(op, opset, attrs))
                    && (r.contains(UNREAD)
                        || (!r.contains(name.as_str()) && whole_op.as_ref() != Some(&r)))
                {
                    unknown
                        .push(format!("{op}-{} at opset {opset}, `{name}`: {r}", s.since_version));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "attributes neither honoured nor refused by name:\n{}",
        unknown.join("\n")
    );
    assert!(checked > 500, "only {checked} attributes checked");
}

#[test]
fn every_supported_op_takes_the_input_and_output_counts_of_its_schema() {
    let schemas = schemas();
    let mut wrong = vec![];
    let mut checked = 0;
    for op in &onnx_ops() {
        for opset in MIN_OPSET..=MAX_OPSET {
            let Some(s) = schema_at(&schemas, op, opset) else { continue };
            let ours = arity_of(op, opset).unwrap();
            let bound = |n: usize| if n == usize::MAX { i64::from(i32::MAX) } else { n as i64 };
            let got = [
                bound(*ours.inputs.start()),
                bound(*ours.inputs.end()),
                bound(*ours.outputs.start()),
                bound(*ours.outputs.end()),
            ];
            checked += 1;
            if got != s.counts {
                wrong.push(format!(
                    "{op}-{} at opset {opset}: schema {:?}, ours {got:?}",
                    s.since_version, s.counts
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "counts differing from onnx's schemas:\n{}", wrong.join("\n"));
    assert!(checked > 1000, "only {checked} op versions checked");
}

/// A node listing one input more than its schema allows, one fewer than it needs, or an empty
/// name for a required input, is an error naming the node, for every supported op type.
#[test]
fn a_node_with_the_wrong_number_of_inputs_is_refused_naming_it() {
    let opset = 17;
    for op in &onnx_ops() {
        let a = arity_of(op, opset).unwrap();
        let mut cases: Vec<Vec<String>> = vec![];
        if *a.inputs.end() != usize::MAX {
            cases.push((0..=*a.inputs.end()).map(|i| format!("x{i}")).collect());
        }
        if *a.inputs.start() > 0 {
            cases.push((0..*a.inputs.start() - 1).map(|i| format!("x{i}")).collect());
            let mut v: Vec<String> = (0..*a.inputs.start()).map(|i| format!("x{i}")).collect();
            v[0] = String::new();
            cases.push(v);
        }
        for inputs in cases {
            let mut m = one_node_model(op, opset, vec![]);
            let g = m.graph.as_mut().unwrap();
            g.node[0].input = inputs.clone();
            g.input = inputs.iter().filter(|i| !i.is_empty()).map(|i| float_input(i)).collect();
            let err = import(m.encode_to_vec().into(), None, &ImportOptions::default())
                .map(|_| ())
                .expect_err(&format!("{op} with inputs {inputs:?} imported"));
            let text = err.to_string();
            assert!(text.contains("`n`") && text.contains("input"), "{op} {inputs:?}: {text}");
        }
    }
}

#[test]
fn an_attribute_no_schema_has_is_refused_by_name() {
    for op in &onnx_ops() {
        let bogus = AttributeProto {
            name: Some("bogus".into()),
            r#type: Some(attribute_proto::AttributeType::Int as i32),
            i: Some(1),
            ..Default::default()
        };
        let mut attrs = vec![bogus];
        // Required attributes, so that the refusal is the bogus one's.
        let int = |name: &str, v: i64| AttributeProto {
            name: Some(name.into()),
            r#type: Some(attribute_proto::AttributeType::Int as i32),
            i: Some(v),
            ..Default::default()
        };
        match *op {
            "Cast" => attrs.push(
                attribute("to", &SchemaAttr { r#type: "INT".into(), default: None }).unwrap(),
            ),
            "BitShift" => attrs.push(AttributeProto {
                name: Some("direction".into()),
                r#type: Some(attribute_proto::AttributeType::String as i32),
                s: Some(b"LEFT".to_vec().into()),
                ..Default::default()
            }),
            "DepthToSpace" | "SpaceToDepth" => attrs.push(int("blocksize", 2)),
            "LRN" => attrs.push(int("size", 3)),
            _ => {}
        }
        let r = refusal(&one_node_model(op, 17, attrs))
            .unwrap_or_else(|| panic!("{op} with an unknown attribute imported as supported"));
        assert!(r.contains("`bogus`"), "{op}: {r}");
    }
}

// ---- opset changes ------------------------------------------------------------------------

/// Writes a text model, runs it with `--compare` and returns the outputs by name.
fn run_text(tag: &str, model: &str, inputs: &[(&str, ArrayD<f32>)], opt: &str) -> RunResult {
    let dir = scratch(tag);
    let path = dir.join("m.onnxtxt");
    std::fs::write(&path, model).unwrap();
    let mut args: Vec<String> = vec!["run".into(), path.display().to_string(), opt.into()];
    for (name, a) in inputs {
        let f = dir.join(format!("{name}.npy"));
        ndarray_npy::write_npy(&f, a).unwrap();
        args.push("--input".into());
        args.push(format!("{name}={}", f.display()));
    }
    args.extend(["--compare".into(), "--output".into(), dir.join("out").display().to_string()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = accelc(&argv);
    RunResult { code: r.code, text: format!("{}{}", r.stdout, r.stderr), dir }
}

struct RunResult {
    code: u8,
    text: String,
    dir: PathBuf,
}

impl RunResult {
    fn ok(self) -> RunResult {
        assert_eq!(self.code, 0, "{}", self.text);
        self
    }

    fn out(&self, name: &str) -> Vec<f32> {
        let a: ArrayD<f32> =
            ndarray_npy::read_npy(self.dir.join("out").join(format!("{name}.npy")))
                .unwrap_or_else(|e| panic!("{name}: {e}\n{}", self.text));
        a.iter().copied().collect()
    }
}

fn arr(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(shape, v).unwrap()
}

fn close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(*g) - w).abs() <= 1e-6 + 1e-5 * w.abs(), "{what}[{i}]: {g} vs {w}");
    }
}

/// Softmax of `v` in `rows` rows, in f64 (the definition).
fn softmax_rows(v: &[f32], row: usize, log: bool) -> Vec<f64> {
    v.chunks(row)
        .flat_map(|r| {
            let m = r.iter().fold(f64::NEG_INFINITY, |a, b| a.max(f64::from(*b)));
            let s: f64 = r.iter().map(|x| (f64::from(*x) - m).exp()).sum();
            r.iter()
                .map(
                    move |x| {
                        if log { f64::from(*x) - m - s.ln() } else { (f64::from(*x) - m).exp() / s }
                    },
                )
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn softmax_before_opset_13_normalises_the_trailing_block() {
    let x: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.0).collect();
    for op in ["Softmax", "LogSoftmax"] {
        let log = op == "LogSoftmax";
        for (opset, axis, row) in [(11, 1, 12), (11, 2, 4), (11, 0, 24), (13, 1, 0), (13, 2, 4)] {
            let model = format!(
                "<ir_version: 8, opset_import: [\"\" : {opset}]>\n\
                 g (float[2,3,4] x) => (float y) {{ y = {op} <axis: int = {axis}> (x) }}"
            );
            for o in ["-O0", "-O2"] {
                let r = run_text(
                    &format!("{op}{opset}{axis}{o}"),
                    &model,
                    &[("x", arr(&[2, 3, 4], x.clone()))],
                    o,
                )
                .ok();
                let want = if row == 0 {
                    // opset 13, axis 1: along the middle axis only.
                    let mut w = vec![0.0; 24];
                    for n in 0..2 {
                        for k in 0..4 {
                            let lane: Vec<f32> = (0..3).map(|c| x[n * 12 + c * 4 + k]).collect();
                            for (c, v) in softmax_rows(&lane, 3, log).into_iter().enumerate() {
                                w[n * 12 + c * 4 + k] = v;
                            }
                        }
                    }
                    w
                } else {
                    softmax_rows(&x, row, log)
                };
                close(&r.out("y"), &want, &format!("{op}-{opset} axis {axis} {o}"));
            }
        }
    }
}

#[test]
fn clip_6_defaults_clamp_infinities_to_the_float_range() {
    let model = "<ir_version: 8, opset_import: [\"\" : 9]>\n\
                 g (float[4] x) => (float y, float z) {\n\
                   y = Clip (x)\n\
                   z = Clip <min: float = -1.0> (x)\n\
                 }";
    let x = arr(&[4], vec![f32::INFINITY, f32::NEG_INFINITY, 2.0, -3.0]);
    for o in ["-O0", "-O2"] {
        let r = run_text(&format!("clip{o}"), model, &[("x", x.clone())], o).ok();
        assert_eq!(r.out("y"), vec![f32::MAX, f32::MIN, 2.0, -3.0]);
        assert_eq!(r.out("z"), vec![f32::MAX, -1.0, 2.0, -1.0]);
    }
}

#[test]
fn split_into_equal_parts_before_opset_18_and_a_smaller_last_part_after() {
    let x = arr(&[5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let old = "<ir_version: 8, opset_import: [\"\" : 13]>\n\
               g (float[5] x) => (float a, float b) { a, b = Split (x) }";
    let r = run_text("split13", old, &[("x", x.clone())], "-O0");
    assert_ne!(r.code, 0, "{}", r.text);
    assert!(r.text.contains("equal parts"), "{}", r.text);
    let new = "<ir_version: 8, opset_import: [\"\" : 18]>\n\
               g (float[5] x) => (float a, float b, float c) {\n\
                 a, b, c = Split <num_outputs: int = 3> (x)\n\
               }";
    let r = run_text("split18", new, &[("x", x)], "-O0").ok();
    assert_eq!((r.out("a"), r.out("b"), r.out("c")), (vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0]));
}

#[test]
fn batchnorm_training_outputs_are_refused() {
    let model = "<ir_version: 8, opset_import: [\"\" : 9]>\n\
                 g (float[1,2,1,1] x) => (float y, float m) \n\
                 <float[2] s = {1.0, 1.0}, float[2] b = {0.0, 0.0}, float[2] mu = {0.0, 0.0}, float[2] v = {1.0, 1.0}> {\n\
                   y, m = BatchNormalization (x, s, b, mu, v)\n\
                 }";
    let r = run_text("bn-train", model, &[("x", arr(&[1, 2, 1, 1], vec![1.0, 2.0]))], "-O0");
    assert_ne!(r.code, 0, "{}", r.text);
    assert!(r.text.contains("running-statistics outputs"), "{}", r.text);
}

// ---- NaN ----------------------------------------------------------------------------------

#[test]
fn nan_propagates_through_max_like_ops_on_device_reference_and_folder() {
    // `k / 0 · 0` folds to NaN everywhere; the same ops then run on folded constants.
    let model = "<ir_version: 8, opset_import: [\"\" : 17]>\n\
        g (float[1,2,2,2] x) => (float r, float mp, float rm, float gm, float cl, float lr, float fr, float fm)\n\
        <float[1,2,2,2] k = {1.0, 0.0, 0.0, 0.0, 2.0, 3.0, 0.0, -1.0}, float[1] z = {0.0}, float lo = {0.0}, float hi = {1.0}> {\n\
          r = Relu (x)\n\
          mp = MaxPool <kernel_shape: ints = [2, 2]> (x)\n\
          rm = ReduceMax <keepdims: int = 0> (x)\n\
          gm = GlobalMaxPool (x)\n\
          cl = Clip (x, lo, hi)\n\
          lr = LeakyRelu (x)\n\
          kn = Div (k, z)\n\
          kz = Mul (kn, z)\n\
          fr = Relu (kz)\n\
          fm = ReduceMax <keepdims: int = 0> (kz)\n\
        }";
    let x = arr(&[1, 2, 2, 2], vec![1.0, f32::NAN, -2.0, 3.0, -1.0, -2.0, -3.0, -4.0]);
    for o in ["-O0", "-O2"] {
        let r = run_text(&format!("nan{o}"), model, &[("x", x.clone())], o).ok();
        let nan = |v: &[f32]| v.iter().map(|x| x.is_nan()).collect::<Vec<_>>();
        assert_eq!(nan(&r.out("r")), [false, true, false, false, false, false, false, false]);
        assert_eq!(r.out("r")[0], 1.0);
        assert_eq!(nan(&r.out("mp")), [true, false]);
        assert_eq!(r.out("mp")[1], -1.0);
        assert_eq!(nan(&r.out("rm")), [true]);
        assert_eq!(nan(&r.out("gm")), [true, false]);
        assert!(r.out("cl")[1].is_nan() && r.out("lr")[1].is_nan());
        assert!(r.out("fr").iter().all(|v| v.is_nan()));
        assert!(r.out("fm")[0].is_nan());
    }
}

// ---- nearest Resize -----------------------------------------------------------------------

/// The shared case's index map, [0, 0, 1, 1, 1, 2], through a non-integer scale whose output
/// is an integer multiple of the input; and true integer factors under modes whose maps are
/// not plain repeats. Every mode and rounding runs on the device against the reference.
#[test]
fn nearest_resize_follows_the_index_map_in_every_mode() {
    let coords =
        ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"];
    let modes = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"];
    let x: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32).collect();
    let mut tried = 0;
    for (scales, out) in
        [("2.3, 2.3", "6,9"), ("2.0, 2.0", "6,8"), ("0.5, 0.75", "1,3"), ("1.5, 1.0", "4,4")]
    {
        for c in coords {
            for m in modes {
                let model = format!(
                    "<ir_version: 8, opset_import: [\"\" : 19]>\n\
                     g (float[1,2,3,4] x) => (float[1,2,{out}] y) <float[4] s = {{1.0, 1.0, {scales}}}> {{\n\
                       y = Resize <coordinate_transformation_mode: string = \"{c}\", nearest_mode: string = \"{m}\"> (x, \"\", s)\n\
                     }}"
                );
                let r = run_text(
                    &format!("resize{tried}"),
                    &model,
                    &[("x", arr(&[1, 2, 3, 4], x.clone()))],
                    "-O2",
                );
                assert_eq!(r.code, 0, "scales {scales}, {c}, {m}: {}", r.text);
                assert!(r.text.contains("matches the reference"), "{}", r.text);
                tried += 1;
            }
        }
    }
    assert_eq!(tried, 80);
}

#[test]
fn the_noninteger_case_follows_the_spec_index_map_on_the_device() {
    // 1×1×3×3 at scale 2.3 (half_pixel, round_prefer_floor): rows and columns read
    // [0, 0, 1, 1, 1, 2] (the case's README and the ONNX definition), checked on what the
    // device wrote, independently of the expected file.
    let dir = scratch("resize-map");
    for o in ["-O0", "-O2"] {
        let r = accelc(&[
            "run",
            &case("resize_nearest_noninteger_scale", "model.onnx"),
            o,
            "--input",
            &format!("x={}", case("resize_nearest_noninteger_scale", "input_x.npy")),
            "--output",
            &dir.display().to_string(),
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let y: ArrayD<f32> = ndarray_npy::read_npy(dir.join("y.npy")).unwrap();
        let input: ArrayD<f32> =
            ndarray_npy::read_npy(case("resize_nearest_noninteger_scale", "input_x.npy")).unwrap();
        let map = [0, 0, 1, 1, 1, 2];
        assert_eq!(y.shape(), [1, 1, 6, 6]);
        for (i, r) in map.iter().enumerate() {
            for (j, c) in map.iter().enumerate() {
                assert_eq!(y[[0, 0, i, j]], input[[0, 0, *r, *c]], "{o} at ({i}, {j})");
            }
        }
    }
}

// ---- extreme values through the optimizer and the lowering ----------------------------------

#[test]
fn rewrites_do_not_change_infinities_or_overflow() {
    // x / c with a subnormal c must not become x · (1/c) = x · inf.
    let div = "<ir_version: 8, opset_import: [\"\" : 13]>\n\
               g (float[4] x) => (float y) <float[4] c = {1e-39, 3e38, 7.0, -1e-40}> { y = Div (x, c) }";
    let x = arr(&[4], vec![1e-5, 3e38, 1.0, 1e-30]);
    for o in ["-O0", "-O2"] {
        let r = run_text(&format!("div{o}"), div, &[("x", x.clone())], o).ok();
        let y = r.out("y");
        let want = [1e-5f32 / 1e-39, 1.0, 1.0 / 7.0, 1e-30 / -1e-40];
        for (g, w) in y.iter().zip(want) {
            assert!(g.is_finite() && (g - w).abs() <= 1e-6 * w.abs(), "{o}: {y:?} vs {want:?}");
        }
    }
    // Conv · inf with a zero weight: the graph gives +inf everywhere (ORT agrees); folding the
    // scale into the weights would give 0 · inf = NaN.
    let conv = "<ir_version: 8, opset_import: [\"\" : 13]>\n\
        g (float[1,1,3,3] x) => (float y)\n\
        <float[2,1,2,2] w = {0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0}, float[1] s = {inf}> {\n\
          c = Conv (x, w)\n\
          y = Mul (c, s)\n\
        }";
    for o in ["-O0", "-O2"] {
        let r =
            run_text(&format!("convinf{o}"), conv, &[("x", arr(&[1, 1, 3, 3], vec![1.0; 9]))], o)
                .ok();
        assert!(r.out("y").iter().all(|v| *v == f32::INFINITY), "{o}: {:?}", r.out("y"));
    }
}

#[test]
fn batchnorm_with_zero_variance_follows_the_definition() {
    // (x - mean) / sqrt(var + eps) · scale + bias with var + eps = 0: ±inf where x ≠ mean, NaN
    // where x = mean; `x · scale + shift` would give inf − inf = NaN everywhere.
    let model = "<ir_version: 8, opset_import: [\"\" : 13]>\n\
        g (float[1,2,1,2] x) => (float y)\n\
        <float[2] s = {1.0, 1.0}, float[2] b = {0.0, 0.0}, float[2] m = {2.0, 0.0}, float[2] v = {0.0, 1.0}> {\n\
          y = BatchNormalization <epsilon: float = 0.0> (x, s, b, m, v)\n\
        }";
    let x = arr(&[1, 2, 1, 2], vec![3.0, 1.0, 5.0, -1.0]);
    for o in ["-O0", "-O2"] {
        let r = run_text(&format!("bnzero{o}"), model, &[("x", x.clone())], o).ok();
        assert_eq!(r.out("y"), vec![f32::INFINITY, f32::NEG_INFINITY, 5.0, -1.0], "{o}");
    }
}

#[test]
fn a_constant_value_of_the_wrong_attribute_type_is_an_error() {
    use attribute_proto::AttributeType as T;
    let ints = AttributeProto {
        name: Some("value_floats".into()),
        r#type: Some(T::Ints as i32),
        ints: vec![5, 6],
        ..Default::default()
    };
    let r = refusal(&one_node_model("Constant", 13, vec![ints])).expect("must not import");
    assert!(r.contains("value_floats") && r.contains("INTS"), "{r}");
}

// ---- found by the second review --------------------------------------------------------------

/// Runs a text model at -O0 and -O2 and returns the named float output of each run.
fn outputs(tag: &str, model: &str, inputs: &[(&str, ArrayD<f32>)], name: &str) -> Vec<Vec<f32>> {
    ["-O0", "-O2"]
        .iter()
        .map(|o| run_text(&format!("{tag}{o}"), model, inputs, o).ok().out(name))
        .collect()
}

#[test]
fn clip_defaults_are_the_float_range_and_nan_bounds_propagate() {
    let x = arr(&[3], vec![f32::INFINITY, f32::NEG_INFINITY, 5.0]);
    // Clip-13 with only min: max defaults to f32::MAX, so +inf is clamped.
    let only_min = "<ir_version: 8, opset_import: [\"\" : 13]>\n\
        g (float[3] x) => (float y) <float lo = {0.0}> { y = Clip (x, lo) }";
    for y in outputs("clipmin", only_min, &[("x", x.clone())], "y") {
        assert_eq!(y, vec![f32::MAX, 0.0, 5.0]);
    }
    // A NaN bound: Min(max, Max(x, NaN)) is NaN everywhere, folded or not.
    let nan_lo = "<ir_version: 8, opset_import: [\"\" : 13]>\n\
        g (float[3] x) => (float y, float z) <float lo = {nan}, float hi = {1.0}, float[3] k = {-5.0, 0.0, 3.0}> {\n\
          y = Clip (x, lo, hi)\n\
          z = Clip (k, lo, hi)\n\
        }";
    for o in ["-O0", "-O2"] {
        let r = run_text(&format!("clipnan{o}"), nan_lo, &[("x", x.clone())], o).ok();
        assert!(r.out("y").iter().chain(&r.out("z")).all(|v| v.is_nan()), "{o}: {}", r.text);
    }
}

#[test]
fn an_omitted_optional_output_keeps_the_others_in_place() {
    // LayerNormalization's outputs `y, "", istd`: istd is the inverse standard deviation, not
    // the mean.
    let model = "<ir_version: 8, opset_import: [\"\" : 17]>\n\
        g (float[2,4] x) => (float y, float istd) <float[4] s = {1.0, 1.0, 1.0, 1.0}> {\n\
          y, \"\", istd = LayerNormalization <epsilon: float = 0.0> (x, s)\n\
        }";
    let x = arr(&[2, 4], vec![1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 4.0, -4.0]);
    for istd in outputs("lnskip", model, &[("x", x)], "istd") {
        // Row variances 3.5 and 8.
        close(&istd, &[1.0 / 3.5f64.sqrt(), 1.0 / 8f64.sqrt()], "istd");
    }
}

#[test]
fn slice_with_a_negative_step_clamps_start_into_the_axis() {
    use accelc_compiler::interp::{Array, run};
    use accelc_compiler::pipeline::{load_text, run_frontend};
    // starts = -7 on 6 elements with step -1: start clamps to 0 (Slice-13: [0, dim - 1] for
    // negative steps), so one element per row is taken, both at run time and when folded.
    let model = "<ir_version: 8, opset_import: [\"\" : 13]>\n\
        g (float[2,6] x) => (float y, float f)\n\
        <int64[1] st = {-7}, int64[1] en = {-100}, int64[1] ax = {1}, int64[1] sp = {-1}, float[2,6] k = {0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0}> {\n\
          y = Slice (x, st, en, ax, sp)\n\
          f = Slice (k, st, en, ax, sp)\n\
        }";
    let mut g = load_text(model, "slice", None, &Default::default()).unwrap();
    run_frontend(&mut g, &mut |_, _| {}).unwrap();
    let x: Vec<f32> = (0..12).map(|i| i as f32 * 10.0).collect();
    let x = ndarray::ArrayD::from_shape_vec(vec![2, 6], x).unwrap();
    let out = run(&g, &[Array::F32(x)]).unwrap();
    let (y, f) = (out[0].to_tensor(), out[1].to_tensor());
    assert_eq!((y.shape.clone(), y.f32s()), (vec![2, 1], vec![0.0, 60.0]));
    assert_eq!((f.shape.clone(), f.f32s()), (vec![2, 1], vec![0.0, 6.0]));
}

#[test]
fn integer_pow_with_a_negative_exponent_truncates() {
    use accelc_compiler::interp::{Array, run};
    use accelc_compiler::pipeline::{load_text, run_frontend};
    let model = "<ir_version: 8, opset_import: [\"\" : 15]>\n\
        g (int32[4] x) => (int32 y) <int32[4] e = {-1, -2, -3, 2}> { y = Pow (x, e) }";
    let mut g = load_text(model, "pow", None, &Default::default()).unwrap();
    run_frontend(&mut g, &mut |_, _| {}).unwrap();
    let x = ndarray::ArrayD::from_shape_vec(vec![4], vec![2i64, 1, -1, -3]).unwrap();
    let y = run(&g, &[Array::Int(x, accelc_compiler::ir::DType::I32)]).unwrap();
    assert_eq!(y[0].to_tensor().i64s(), vec![0, 1, -1, 9]);
}

#[test]
fn gemm_with_beta_zero_does_not_read_c() {
    // C holds inf and NaN; with beta = 0 the result is A·B (onnxruntime and onnx.reference).
    let model = "<ir_version: 8, opset_import: [\"\" : 13]>\n\
        g (float[2,2] a) => (float y) <float[2,2] b = {1.0, 2.0, 3.0, 4.0}, float[2] c = {inf, nan}> {\n\
          y = Gemm <beta: float = 0.0> (a, b, c)\n\
        }";
    for y in outputs("gemmb0", model, &[("a", arr(&[2, 2], vec![1.0, 0.0, 0.0, 1.0]))], "y") {
        assert_eq!(y, vec![1.0, 2.0, 3.0, 4.0]);
    }
}

#[test]
fn invalid_models_are_refused_by_node() {
    for (what, body, inputs, needle) in [
        ("reshape", "y = Reshape (x, s)", "<int64[2] s = {4, 2}>", "changes the element count"),
        ("squeeze", "y = Squeeze (x, s)", "<int64[1] s = {1}>", "Squeeze of axis 1"),
        ("transpose", "y = Transpose <perm: ints = [0, 0]> (x)", "", "not a permutation"),
        ("unsqueeze", "y = Unsqueeze (x, s)", "<int64[2] s = {1, 1}>", "given twice"),
    ] {
        let model = format!(
            "<ir_version: 8, opset_import: [\"\" : 13]>\ng (float[2,3] x) => (float y) {inputs} {{ {body} }}"
        );
        let r = run_text(what, &model, &[("x", arr(&[2, 3], vec![1.0; 6]))], "-O0");
        assert_ne!(r.code, 0, "{what}: {}", r.text);
        assert!(r.text.contains(needle) && r.text.contains("node `"), "{what}: {}", r.text);
    }
    let conv = "<ir_version: 8, opset_import: [\"\" : 13]>\n\
        g (float[1,1,4,4] x) => (float y) <float[1,1,3,3] w = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0}> {\n\
          y = Conv <kernel_shape: ints = [2, 2]> (x, w)\n\
        }";
    let r = run_text("convks", conv, &[("x", arr(&[1, 1, 4, 4], vec![1.0; 16]))], "-O0");
    assert!(r.code != 0 && r.text.contains("kernel_shape [2, 2]"), "{}", r.text);
}

#[test]
fn refusals_blame_the_right_thing() {
    // Concat of parts that differ off the axis: a shape error at the Concat, not an internal
    // lowering error.
    let concat = "<ir_version: 8, opset_import: [\"\" : 13]>\n\
        g (float[1,3] x) => (float y) <float[1,4] k = {1.0, 2.0, 3.0, 4.0}> { y = Concat <axis: int = 0> (x, k) }";
    let r = run_text("concat", concat, &[("x", arr(&[1, 3], vec![1.0; 3]))], "-O0");
    assert!(r.code != 0 && r.text.contains("Concat") && !r.text.contains("internal"), "{}", r.text);
    // The same value listed twice among the graph outputs.
    let dup = "<ir_version: 8, opset_import: [\"\" : 13]>\n\
        g (float[2] x) => (float y, float y) { y = Relu (x) }";
    let r = run_text("dupout", dup, &[("x", arr(&[2], vec![1.0; 2]))], "-O0");
    assert!(r.code != 0 && r.text.contains("listed twice"), "{}", r.text);
    // An initializer of an unsupported type (float8): the data type is the reason, not "read
    // before it is computed".
    let f64_model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(GraphProto {
            node: vec![NodeProto {
                op_type: Some("Cast".into()),
                name: Some("c".into()),
                input: vec!["a".into()],
                output: vec!["y".into()],
                attribute: vec![
                    attribute("to", &SchemaAttr { r#type: "INT".into(), default: None }).unwrap(),
                ],
                ..Default::default()
            }],
            initializer: vec![accelc_compiler::proto::TensorProto {
                name: Some("a".into()),
                dims: vec![1],
                data_type: Some(17),
                raw_data: Some(vec![0u8; 1].into()),
                ..Default::default()
            }],
            output: vec![accelc_compiler::proto::ValueInfoProto {
                name: Some("y".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let dir = scratch("f64");
    let path = dir.join("m.onnx");
    std::fs::write(&path, f64_model.encode_to_vec()).unwrap();
    let r = accelc(&["run", &path.display().to_string()]);
    let text = format!("{}{}", r.stdout, r.stderr);
    assert!(
        r.code != 0 && text.contains("float8e4m3fn") && !text.contains("before it is computed"),
        "{text}"
    );
}

/// The printer facet writes every attribute the import facet honours: each int and float
/// attribute of every supported op's schema, set to a value other than its default, survives
/// print → parse → import unchanged (a family whose `print` drops one fails here, not in a
/// user's `--dump-ir`).
#[test]
fn every_honoured_attribute_survives_printing() {
    use accelc_compiler::text::{parse, print};
    use attribute_proto::AttributeType as T;
    let schemas = schemas();
    let (mut checked, mut lost) = (0, vec![]);
    for op in &onnx_ops() {
        for opset in [MIN_OPSET, 13, MAX_OPSET] {
            let Some(s) = schema_at(&schemas, op, opset) else { continue };
            for (name, a) in &s.attributes {
                let d = a.default.as_ref();
                let mut p = AttributeProto { name: Some(name.clone()), ..Default::default() };
                match a.r#type.as_str() {
                    "INT" => {
                        p.r#type = Some(T::Int as i32);
                        p.i = Some(d.and_then(|v| v.as_i64()).map_or(2, |v| v + 1));
                    }
                    "FLOAT" => {
                        p.r#type = Some(T::Float as i32);
                        p.f = Some(d.and_then(|v| v.as_f64()).map_or(0.75, |v| v + 0.25) as f32);
                    }
                    _ => continue,
                }
                let mut attrs = vec![p];
                if *op == "Cast" && name != "to" {
                    attrs.push(
                        attribute("to", &SchemaAttr { r#type: "INT".into(), default: None })
                            .unwrap(),
                    );
                }
                let m = one_node_model(op, opset, attrs);
                let Ok(g) = import(m.encode_to_vec().into(), None, &ImportOptions::default())
                else {
                    continue;
                };
                if matches!(g.nodes[0].op, Op::Unsupported { .. } | Op::Constant) {
                    continue; // refused: nothing to print
                }
                checked += 1;
                let text = print(&g);
                let back = parse(&text)
                    .map_err(|e| format!("{e:?}"))
                    .and_then(|m| {
                        import(m.encode_to_vec().into(), None, &ImportOptions::default())
                            .map_err(|e| e.to_string())
                    })
                    .map(|b| b.nodes[0].op.clone());
                if back.as_ref() != Ok(&g.nodes[0].op) {
                    lost.push(format!(
                        "{op} at opset {opset}, `{name}`: {:?} -> {back:?}",
                        g.nodes[0].op
                    ));
                }
            }
        }
    }
    assert!(lost.is_empty(), "attributes the printer loses:\n{}", lost.join("\n"));
    assert!(checked > 40, "only {checked} attributes checked");
}

/// Integer Neg, Abs and Relu follow ONNX (signed integer types allowed) in the type's width,
/// as numpy computes them: Neg and Abs of the most negative value give it back; other unary
/// functions of integers are refused by the shape rule, naming the type.
#[test]
fn integer_neg_abs_relu_wrap_like_numpy() {
    use accelc_compiler::interp::{Array, run};
    let text = |op: &str, ty: &str| {
        format!(
            "<ir_version: 8, opset_import: [\"\" : 17]>\ng ({ty}[4] x) => ({ty}[4] y) {{\n  y = {op} (x)\n}}\n"
        )
    };
    let load = |t: &str| {
        let m = accelc_compiler::text::parse(t).unwrap();
        let mut g = import(m.encode_to_vec().into(), None, &ImportOptions::default()).unwrap();
        accelc_compiler::pipeline::run_frontend(&mut g, &mut |_, _| {}).map(|()| g)
    };
    let x = ndarray::arr1(&[-3i64, 4, i64::from(i32::MIN), 0]).into_dyn();
    for (op, want) in [
        ("Neg", [3, -4, i64::from(i32::MIN), 0]),
        ("Abs", [3, 4, i64::from(i32::MIN), 0]),
        ("Relu", [0, 4, 0, 0]),
    ] {
        let g = load(&text(op, "int32")).unwrap();
        let y = run(&g, &[Array::Int(x.clone(), accelc_compiler::ir::DType::I32)]).unwrap();
        let Array::Int(y, _) = &y[0] else { panic!("{op}: not integer") };
        assert_eq!(y.as_slice().unwrap(), &want, "{op}");
    }
    let e = load(&text("Sigmoid", "int32")).unwrap_err();
    assert!(e.contains("Sigmoid of int32 (ONNX defines it for floats)"), "{e}");
}

/// A graph output that is a graph input (passed through) prints as an output of the same
/// value, not as `x = Identity (x)` (which defines `x` twice and does not re-import), at
/// every optimization level.
#[test]
fn a_passed_through_input_prints_and_reimports() {
    let dir = scratch("passthrough");
    let model = dir.join("m.onnxtxt");
    std::fs::write(
        &model,
        "<ir_version: 8, opset_import: [\"\" : 17]>\n\
         g (float[2] x) => (float[2] x, float[2] y) {\n  y = Relu(x)\n}\n",
    )
    .unwrap();
    for opt in ["-O0", "-O2"] {
        let first = accelc(&["ir", &model.display().to_string(), opt]);
        assert_eq!(first.code, 0, "{}", first.stderr);
        assert!(!first.stdout.contains("Identity"), "{opt}: {}", first.stdout);
        let again = dir.join(format!("again{opt}.onnxtxt"));
        std::fs::write(&again, &first.stdout).unwrap();
        let second = accelc(&["ir", &again.display().to_string(), opt]);
        assert_eq!(second.code, 0, "{opt}: {}", second.stderr);
        assert_eq!(second.stdout, first.stdout, "{opt}: printing is not a fixed point");
    }
}

/// An error quoting text from the model (a 100,000-byte node name, a 300,000-entry `perm`)
/// stays short: the quoted text is cut with the rest counted, in `compile` and `check`.
#[test]
fn errors_quoting_huge_input_stay_short() {
    let dir = scratch("huge-quote");
    let mut m = one_node_model("Transpose", 17, vec![]);
    let perm = AttributeProto {
        name: Some("perm".into()),
        r#type: Some(attribute_proto::AttributeType::Ints as i32),
        ints: (0..300_000).collect(),
        ..Default::default()
    };
    let g = m.graph.as_mut().unwrap();
    g.output = vec![ValueInfoProto { name: Some("y".into()), ..Default::default() }];
    let node = &mut g.node[0];
    node.name = Some("n".repeat(100_000));
    node.attribute = vec![perm];
    let path = dir.join("m.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let p = path.display().to_string();
    let out = dir.join("m.blob").display().to_string();
    for args in [vec!["compile", &p, "-o", &out], vec!["check", &p]] {
        let r = accelc(&args);
        assert_ne!(r.code, 0, "{args:?} accepted a 300,000-axis perm of a rank-1 tensor");
        let text = format!("{}{}", r.stdout, r.stderr);
        assert!(text.contains("more bytes)"), "{args:?}: {}", &text[..text.len().min(300)]);
        assert!(text.len() < 4096, "{args:?}: {} bytes of message", text.len());
    }
}

/// A node breaking an ONNX rule at import (a value count, an undefined mode, a zero group) is
/// an error for the whole model naming the node, not an unsupported node a host could take.
#[test]
fn rule_breaking_attributes_are_model_errors_not_unsupported_nodes() {
    use attribute_proto::AttributeType as T;
    let int = |name: &str, v: i64| AttributeProto {
        name: Some(name.into()),
        r#type: Some(T::Int as i32),
        i: Some(v),
        ..Default::default()
    };
    let string = |name: &str, v: &str| AttributeProto {
        name: Some(name.into()),
        r#type: Some(T::String as i32),
        s: Some(v.as_bytes().to_vec().into()),
        ..Default::default()
    };
    let float = |name: &str, v: f32| AttributeProto {
        name: Some(name.into()),
        r#type: Some(T::Float as i32),
        f: Some(v),
        ..Default::default()
    };
    let cases = [
        ("Constant", vec![float("value_float", 1.0), int("value_int", 2)], "exactly one value"),
        ("Constant", vec![], "exactly one value"),
        ("Conv", vec![int("group", 0)], "group = 0"),
        ("Conv", vec![string("auto_pad", "SIDEWAYS")], "auto_pad `SIDEWAYS`"),
        ("Pad", vec![string("mode", "mirror")], "Pad mode `mirror`"),
        ("Gelu", vec![string("approximate", "fast")], "approximate `fast`"),
        ("Resize", vec![string("nearest_mode", "up")], "nearest_mode `up`"),
    ];
    for (op, attrs, needle) in cases {
        let opset = if op == "Gelu" { 20 } else { 17 };
        let m = one_node_model(op, opset, attrs);
        let err = import(m.encode_to_vec().into(), None, &ImportOptions::default())
            .map(|g| format!("{:?}", g.nodes[0].op))
            .expect_err(&format!("{op} ({needle}) imported"));
        let text = err.to_string();
        assert!(text.contains("node `n`") && text.contains(needle), "{op}: {text}");
    }
}

/// `ops::since` (the opset an op type first appears in, where the importer refuses earlier
/// models) agrees with onnx's schemas for every op type the registry imports.
#[test]
fn each_op_is_refused_before_the_opset_that_defines_it() {
    let schemas = schemas();
    let mut wrong = Vec::new();
    for op in &onnx_ops() {
        let first = schemas.iter().filter(|s| s.name == *op).map(|s| s.since_version).min();
        let want = first.filter(|v| *v > MIN_OPSET);
        if since(op) != want {
            wrong.push(format!("{op}: since {:?}, the schemas say {want:?}", since(op)));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A model of an older opset is refused by name (onnxruntime refuses it too).
    let m = one_node_model("CumProd", 21, vec![]);
    let r = refusal(&m).expect("CumProd at opset 21 imported as supported");
    assert!(r.contains("not defined before opset 26"), "{r}");
}
