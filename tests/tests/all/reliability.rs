//! Hostile and careless inputs from `../shared/reliability` (each once made accelc panic, abort
//! or accept something invalid) end in a clear error, and every blob `compile` writes passes
//! `verify`: one validation path for the tools and the driver.

use accelc_tests::{accelc, repo_root};

fn shared(name: &str) -> String {
    repo_root().join("../shared/reliability").join(name).display().to_string()
}

fn out(tag: &str) -> String {
    std::env::temp_dir()
        .join(format!("accelc-reliability-{}-{tag}.blob", std::process::id()))
        .display()
        .to_string()
}

#[test]
fn invalid_models_end_in_a_clear_error() {
    for (file, needle) in [
        ("shape_i64overflow.onnx", "more bytes than 64 bits"),
        ("conv_group0.onnx", "group = 0"),
        ("squeeze_nonone.onnx", "Squeeze of axis"),
        ("transpose_perm_bad.onnx", "not a permutation"),
    ] {
        let r = accelc(&["compile", &shared(file), "-o", &out(file)]);
        assert_eq!(r.code, 1, "{file}: {r:?}");
        assert!(r.stderr.contains(needle), "{file}: {}", r.stderr);
    }
}

#[test]
fn every_blob_compile_writes_passes_verify() {
    let mut models: Vec<String> = accelc_tests::ZOO_MODELS
        .iter()
        .map(|m| accelc_tests::zoo(&format!("{m}.onnx")).display().to_string())
        .collect();
    models.push(shared("relu_ok.onnxtxt"));
    for m in ["small_cnn.onnxtxt", "opt_demo.onnxtxt"] {
        models.push(accelc_tests::tests_path(&format!("models/{m}")).display().to_string());
    }
    for e in std::fs::read_dir(repo_root().join("../shared/cases")).unwrap() {
        models.push(e.unwrap().path().join("model.onnx").display().to_string());
    }
    let mut verified = 0;
    for (i, m) in models.iter().enumerate() {
        let blob = out(&format!("all{i}"));
        if accelc(&["compile", m, "-o", &blob]).code != 0 {
            continue; // not compilable yet (int8 models, unsupported ops): `check` says why
        }
        let v = accelc(&["verify", &blob]);
        assert_eq!(v.code, 0, "{m}: verify rejects compile's own blob:\n{}{}", v.stdout, v.stderr);
        verified += 1;
    }
    assert!(verified >= 10, "only {verified} models compiled");
}

/// `.npy` inputs: a header claiming 2^40 elements (the file holds a few bytes) is refused with
/// both counts before anything is allocated; files of the wrong type or shape name what the
/// model takes; non-float inputs and outputs keep their type end to end (written by our `.npy`
/// writer, read back by ndarray-npy, an independent reader).
#[test]
fn npy_files_are_bounded_typed_and_written_atomically() {
    let dir = std::env::temp_dir().join(format!("accelc-npy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let blob = dir.join("mlp.blob").display().to_string();
    let model = repo_root().join("models/mlp_mnist.onnx").display().to_string();
    assert_eq!(accelc(&["compile", &model, "-o", &blob]).code, 0);
    let huge = format!("input={}", shared("huge_shape_header.npy"));
    let r = accelc(&["run", &blob, "--input", &huge]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("data bytes; the file has"), "{}", r.stderr);
    // An int64 file for a float input.
    let ints = dir.join("ints.npy");
    let a = ndarray::ArrayD::<i64>::zeros(ndarray::IxDyn(&[1, 1, 28, 28]));
    ndarray_npy::write_npy(&ints, &a).unwrap();
    let r = accelc(&["run", &blob, "--input", &format!("input={}", ints.display())]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("is int64[1, 1, 28, 28]; the model takes float[1, 1, 28, 28]"),
        "{}",
        r.stderr
    );
    // An integer model end to end: int32 in, int32 out, compared exactly.
    let text = dir.join("add.onnxtxt");
    std::fs::write(
        &text,
        "<ir_version: 8, opset_import: [\"\" : 17]>\ng (int32[4] x) => (int32[4] y) {\n  y = Identity (x)\n}\n",
    )
    .unwrap();
    let xs = dir.join("x.npy");
    ndarray_npy::write_npy(&xs, &ndarray::arr1(&[1i32, -2, 3, 2147483647]).into_dyn()).unwrap();
    let outdir = dir.join("out");
    let r = accelc(&[
        "run",
        text.to_str().unwrap(),
        "--input",
        &format!("x={}", xs.display()),
        "--expect",
        &format!("y={}", xs.display()),
        "--compare",
        "--output",
        outdir.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("int32[4]: matches the reference (exactly)"), "{}", r.stdout);
    assert!(r.stdout.contains("matches the expected values (exactly)"), "{}", r.stdout);
    let y: ndarray::ArrayD<i32> = ndarray_npy::read_npy(outdir.join("y.npy")).unwrap();
    assert_eq!(y.as_slice().unwrap(), &[1, -2, 3, 2147483647]);
}

/// Segment sizes read from a file are checked before anything is allocated, by the same check
/// the driver makes at submit (`check_bindings`): a declaration of 2^64 - 1 bytes is refused by
/// `verify` and `sim` naming the 40-bit segment space; a buffer sized from a program's 2^40-byte
/// extent is refused naming the driver's buffer limit; a blob declaring no segments for a
/// program that uses two fails `verify` (as it would fail `run`).
#[test]
fn segment_sizes_are_checked_before_allocating() {
    let r = accelc(&["verify", &shared("seg_decl_u64max.s")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("a segment spans at most 1099511627776 bytes"), "{}", r.stderr);
    let r = accelc(&["sim", &shared("seg_decl_u64max.s")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("a segment spans at most 1099511627776 bytes"), "{}", r.stderr);
    let r = accelc(&["sim", &shared("sim_alloc_2p40_undeclared.s")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("more than a buffer may have"), "{}", r.stderr);
    let blob = out("noseg");
    assert_eq!(accelc(&["asm", &shared("noseg_roundtrip.s"), "-o", &blob]).code, 0);
    let r = accelc(&["verify", &blob]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("segment 0 is used by the program but not bound"), "{}", r.stderr);
    let r = accelc(&["run", &blob]);
    assert_eq!(r.code, 1, "{r:?}");
}

/// A valid 5,001-node chain compiles, and its blob keeps every layer's record (metadata split
/// across entries within the container's string limit) for `profile`.
#[test]
fn a_long_chain_compiles_and_profiles() {
    let blob = out("chain5k");
    let r = accelc(&["compile", &shared("many_nodes_5k.onnxtxt"), "-o", &blob]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = accelc(&["profile", &blob]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Relu_5000"), "{}", &r.stdout[r.stdout.len().saturating_sub(500)..]);
    let bytes = std::fs::read(&blob).unwrap();
    let b = accelc_isa::blob::Blob::read(&bytes).unwrap();
    assert_eq!(accelc_compiler::lower::layers_from_blob(&b).map(|l| l.len()), Some(5001));
}
