//! The ONNX importer on hand-built models: `accelc check` lists every blocker at once, and
//! malformed files (truncated or random bytes, cycles, missing inputs, wrong attribute types,
//! duplicate names, escaping external data) give errors naming what and where, never panics.

use accelc_compiler::onnx::{ImportOptions, import, load};
use accelc_compiler::proto::attribute_proto::AttributeType;
use accelc_compiler::proto::tensor_proto::DataLocation;
use accelc_compiler::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};
use accelc_tests::accelc;
use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;

fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(*d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>, initializers: Vec<TensorProto>) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: nodes,
            initializer: initializers,
            input: vec![value("x", &[1, 4])],
            output: vec![value("y", &[1, 4])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn import_err(m: &ModelProto) -> String {
    import(Bytes::from(m.encode_to_vec()), None, &ImportOptions::default()).unwrap_err().to_string()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("accelc-frontend-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn check_lists_every_blocker() {
    let mut custom = node("custom", "FancyOp", &["a"], &["b"]);
    custom.domain = Some("com.example".into());
    let m = model(
        vec![
            node("relu", "Relu", &["x"], &["a"]),
            custom,
            node("nms", "NonMaxSuppression", &["b"], &["c"]),
            node("uniq", "Unique", &["c"], &["y"]),
        ],
        vec![],
    );
    let dir = scratch("check");
    let path = dir.join("m.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let run = accelc(&["check", path.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");
    let text = run.stdout.replace(path.to_str().unwrap(), "m.onnx");
    insta::assert_snapshot!("check_blockers", text);
    let run = accelc(&["check", "--json", path.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["supported"], false);
    let blockers = v["blockers"].as_array().unwrap();
    let ops: Vec<&str> = blockers.iter().map(|b| b["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["FancyOp", "NonMaxSuppression", "Unique"]);
    assert_eq!(blockers[0]["reason"], "domain `com.example` is not supported");
    assert_eq!(blockers[1]["node"], "nms");
    assert_eq!(blockers[2]["opset"], 17);
    // Unsupported data types are blockers too, listed with everything else.
    let f16 = TensorProto {
        name: Some("h".into()),
        dims: vec![4],
        data_type: Some(17),
        raw_data: Some(vec![0; 4].into()),
        ..Default::default()
    };
    let m = model(
        vec![
            node("half", "Add", &["x", "h"], &["a"]),
            node("nms", "NonMaxSuppression", &["a"], &["y"]),
        ],
        vec![f16],
    );
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let run = accelc(&["check", path.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains(
            "node `half` (Add, opset 17): input `h` has data type float8e4m3fn, which is not \
             supported"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("node `nms` (NonMaxSuppression"));
    // A fully supported model.
    let mlp = accelc_tests::repo_root().join("../shared/models/mlp_mnist.onnx");
    let run = accelc(&["check", mlp.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.ends_with("opset 17, 6 nodes, 0 on the host, 0 blocker(s) for `default`\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn malformed_models_give_clear_errors() {
    // A cycle: `a` is used before the node that produces it.
    let m = model(
        vec![node("first", "Relu", &["a"], &["b"]), node("second", "Relu", &["b"], &["a"])],
        vec![],
    );
    assert_eq!(
        import_err(&m),
        "node `first`: input `a` is not defined before this node (missing, or a cycle)"
    );
    // A missing input.
    let m = model(vec![node("only", "Relu", &["nope"], &["y"])], vec![]);
    assert_eq!(
        import_err(&m),
        "node `only`: input `nope` is not defined before this node (missing, or a cycle)"
    );
    // An attribute of the wrong type.
    let mut gemm = node("gemm", "LeakyRelu", &["x"], &["y"]);
    gemm.attribute.push(AttributeProto {
        name: Some("alpha".into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: vec![1, 2],
        ..Default::default()
    });
    assert_eq!(
        import_err(&model(vec![gemm], vec![])),
        "node `gemm`: attribute `alpha` is INTS, expected FLOAT"
    );
    // A name defined twice.
    let m =
        model(vec![node("a", "Relu", &["x"], &["y"]), node("b", "Relu", &["x"], &["y"])], vec![]);
    assert_eq!(import_err(&m), "node `b`: value `y` is defined twice");
    // An output nobody produces.
    let m = model(vec![node("a", "Relu", &["x"], &["z"])], vec![]);
    assert_eq!(import_err(&m), "graph output `y` is not produced");
    // An initializer whose data does not match its shape.
    let bad = TensorProto {
        name: Some("w".into()),
        dims: vec![2, 2],
        data_type: Some(1),
        float_data: vec![1.0],
        ..Default::default()
    };
    let m = model(vec![node("a", "Relu", &["x"], &["y"])], vec![bad]);
    assert_eq!(import_err(&m), "initializer `w`: holds 4 bytes, but float[2, 2] needs 16");
    // Truncated files.
    let bytes =
        std::fs::read(accelc_tests::repo_root().join("../shared/models/mlp_mnist.onnx")).unwrap();
    for cut in [1, 10, 100, 1000, bytes.len() / 2, bytes.len() - 1] {
        let e = import(Bytes::copy_from_slice(&bytes[..cut]), None, &ImportOptions::default())
            .unwrap_err();
        assert!(
            e.message.starts_with("malformed ONNX protobuf")
                || e.message.contains("no graph")
                || e.message.contains("opset"),
            "cut {cut}: {e}"
        );
    }
}

#[test]
fn external_data_is_read_next_to_the_model_and_cannot_escape() {
    let dir = scratch("external");
    let weights: Vec<u8> = [1.0f32, -2.0, 3.0, -4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut blob = vec![0u8; 16];
    blob.extend_from_slice(&weights);
    std::fs::write(dir.join("w.bin"), &blob).unwrap();
    let ext = |location: &str| TensorProto {
        name: Some("w".into()),
        dims: vec![1, 4],
        data_type: Some(1),
        data_location: Some(DataLocation::External as i32),
        external_data: [("location", location), ("offset", "16"), ("length", "16")]
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v.to_string()),
            })
            .collect(),
        ..Default::default()
    };
    let m = model(vec![node("add", "Add", &["x", "w"], &["y"])], vec![ext("w.bin")]);
    std::fs::write(dir.join("m.onnx"), m.encode_to_vec()).unwrap();
    let g = load(&dir.join("m.onnx"), &ImportOptions::default()).unwrap();
    let w = g.values.iter().find(|v| v.name == "w").unwrap().constant.as_ref().unwrap();
    assert_eq!(w.f32s(), [1.0, -2.0, 3.0, -4.0]);
    let m = model(vec![node("add", "Add", &["x", "w"], &["y"])], vec![ext("../w.bin")]);
    std::fs::write(dir.join("evil.onnx"), m.encode_to_vec()).unwrap();
    let e = load(&dir.join("evil.onnx"), &ImportOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "initializer `w`: external data location `../w.bin` leaves the model's directory"
    );
    // A symbolic link out of the directory, a FIFO (which would block every command) and a
    // range past the end are refused; only the tensor's own bytes of a large sparse file are
    // read.
    let outside = scratch("external-outside");
    std::fs::write(outside.join("secret.bin"), &blob).unwrap();
    let link = dir.join("link.bin");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(outside.join("secret.bin"), &link).unwrap();
    let m = model(vec![node("add", "Add", &["x", "w"], &["y"])], vec![ext("link.bin")]);
    std::fs::write(dir.join("link.onnx"), m.encode_to_vec()).unwrap();
    let e = load(&dir.join("link.onnx"), &ImportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("resolves outside the model's directory"), "{e}");
    let fifo = dir.join("fifo.bin");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let m = model(vec![node("add", "Add", &["x", "w"], &["y"])], vec![ext("fifo.bin")]);
    std::fs::write(dir.join("fifo.onnx"), m.encode_to_vec()).unwrap();
    let e = load(&dir.join("fifo.onnx"), &ImportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("is not a regular file"), "{e}");
    let big = std::fs::File::create(dir.join("big.bin")).unwrap();
    big.set_len(1 << 30).unwrap(); // sparse: no disk, and reading it all would take 1 GiB
    drop(big);
    let m = model(vec![node("add", "Add", &["x", "w"], &["y"])], vec![ext("big.bin")]);
    std::fs::write(dir.join("big.onnx"), m.encode_to_vec()).unwrap();
    let g = load(&dir.join("big.onnx"), &ImportOptions::default()).unwrap();
    let w = g.values.iter().find(|v| v.name == "w").unwrap().constant.as_ref().unwrap();
    assert_eq!(w.data.len(), 16);
    std::fs::write(dir.join("short.bin"), [0u8; 20]).unwrap();
    let m = model(vec![node("add", "Add", &["x", "w"], &["y"])], vec![ext("short.bin")]);
    std::fs::write(dir.join("short.onnx"), m.encode_to_vec()).unwrap();
    let e = load(&dir.join("short.onnx"), &ImportOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("external data 16+16 lies outside `short.bin` (20 bytes)"),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_the_importer(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = import(Bytes::from(bytes), None, &ImportOptions::default());
    }

    #[test]
    fn corrupted_models_never_panic_the_importer(at in 0usize..2000, v in any::<u8>(), cut in 0usize..2000) {
        let mut bytes = model(vec![node("relu", "Relu", &["x"], &["y"])], vec![]).encode_to_vec();
        let n = bytes.len();
        bytes[at % n] = v;
        bytes.truncate(n - cut % n);
        let _ = import(Bytes::from(bytes), None, &ImportOptions::default());
    }
}
