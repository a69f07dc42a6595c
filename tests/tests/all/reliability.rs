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
