//! Hostile and careless inputs from `../shared/reliability` (each once made accelc panic, abort
//! or accept something invalid) end in a clear error, and every blob `compile` writes passes
//! `verify`: one validation path for the tools and the driver.

use std::os::unix::fs::FileTypeExt;

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
        ("resize_nan.onnx", "Resize scale NaN is not a positive finite number"),
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
/// `verify` and `sim` naming the driver's 16 GiB buffer limit; a buffer sized from a program's 2^40-byte
/// extent is refused the same way; a blob declaring no segments for a
/// program that uses two fails `verify` (as it would fail `run`).
#[test]
fn segment_sizes_are_checked_before_allocating() {
    let r = accelc(&["verify", &shared("seg_decl_u64max.s")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("a segment's buffer is at most 17179869184 bytes"), "{}", r.stderr);
    let r = accelc(&["sim", &shared("seg_decl_u64max.s")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("a segment's buffer is at most 17179869184 bytes"), "{}", r.stderr);
    let r = accelc(&["sim", &shared("sim_alloc_2p40_undeclared.s")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("a segment's buffer is at most 17179869184 bytes"), "{}", r.stderr);
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

/// 30 KB of invalid text gives one bounded diagnostic (a run of bad characters is one error, a
/// long line is shown as a window around the column), not an error per character re-printing
/// the whole line.
#[test]
fn garbage_text_gives_a_bounded_diagnostic() {
    let r = accelc(&["ir", &shared("garbage_30000.onnxtxt")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.len() < 4096, "{} bytes of errors", r.stderr.len());
    assert!(r.stderr.starts_with("error: unexpected characters `@@@"), "{}", r.stderr);
    assert!(r.stderr.contains("garbage_30000.onnxtxt:7:14"), "{}", r.stderr);
}

/// Invalid attributes and options are refused at import or inference, naming what: a
/// transposed convolution's output_padding not smaller than its stride, an output_shape beyond
/// the full result by as much (an implicit output padding), a zero stride; an --input-shape for an input the model lacks, or one
/// contradicting a declared dimension.
#[test]
fn invalid_attributes_and_shapes_are_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("accelc-invalid-attrs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ct = |attrs: &str, out: &str| {
        format!(
            "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[1,1,3,3] x) => (float[1,1,{out}] y)\n   <float[1,1,3,3] w = {{1,1,1,1,1,1,1,1,1}}>\n{{\n  y = ConvTranspose <{attrs}> (x, w)\n}}\n"
        )
    };
    for (tag, text, needle) in [
        (
            "outpad",
            ct("strides: ints = [2,2], output_padding: ints = [3,3]", "10,10"),
            "output_padding 3 on axis 0 is not smaller than its stride 2",
        ),
        (
            "outshape",
            ct("output_shape: ints = [8,8]", "8,8"),
            "output_shape 8 on axis 0 exceeds the full result 5 by 3, not less than its stride 1",
        ),
        ("stride0", ct("strides: ints = [0,1]", "5,5"), "must be positive"),
    ] {
        let p = dir.join(format!("{tag}.onnxtxt"));
        std::fs::write(&p, text).unwrap();
        let r = accelc(&["compile", p.to_str().unwrap(), "-o", &out(tag)]);
        assert_eq!(r.code, 1, "{tag}: {r:?}");
        assert!(r.stderr.contains(needle), "{tag}: {}", r.stderr);
    }
    let p = dir.join("sym.onnxtxt");
    std::fs::write(
        &p,
        "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[N,4] x) => (float[N,4] y) {\n  y = Relu (x)\n}\n",
    )
    .unwrap();
    let r = accelc(&["compile", p.to_str().unwrap(), "-o", &out("sym1"), "--input-shape", "N=3"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("names `N`, which is not an input of the model (inputs: x)"),
        "{}",
        r.stderr
    );
    let r = accelc(&["compile", p.to_str().unwrap(), "-o", &out("sym2"), "--input-shape", "x=3,5"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("gives dimension 1 as 5; the model declares 4"), "{}", r.stderr);
    let r = accelc(&["compile", p.to_str().unwrap(), "-o", &out("sym3"), "--input-shape", "x=3,4"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// More invalid models, each refused naming what and where: a graph input listed twice, an
/// axis reduced twice, BatchNormalization parameters that are not one per channel, a declared
/// output type the graph does not compute (here a convolution padded by 10^8, whose 4·10^16
/// outputs would otherwise reach the lowering), text that is not UTF-8 (line, column and byte
/// offset); and a huge padding whose declared shape agrees fails at the instruction limit
/// instead of allocating its tile list.
#[test]
fn invalid_models_are_refused_naming_what_and_where() {
    let dir = std::env::temp_dir().join(format!("accelc-invalid-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let h = "<ir_version: 8, opset_import: [\"\" : 17]>\n";
    let pad = |p: u64, o: u64| {
        format!(
            "{h}g (float[1,1,4,4] x) => (float[1,1,{o},{o}] y) <float[1,1,3,3] w = {{1,1,1,1,1,1,1,1,1}}> {{ y = Conv <pads: ints = [{p},{p},{p},{p}]> (x, w) }}\n"
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "dupin",
            format!("{h}g (float[2,3] x, float[2,3] x) => (float[2,3] y) {{ y = Add (x, x) }}\n"),
            "graph input `x` is listed twice",
        ),
        (
            "dupaxes",
            format!(
                "{h}g (float[2,3] x) => (float[2,1] y) {{ y = ReduceMean <axes: ints = [1,-1]> (x) }}\n"
            ),
            "node `ReduceMean_0`: axis 1 is reduced twice (axes [1, -1])",
        ),
        (
            "bn",
            format!(
                "{h}g (float[1,2,2,2] x) => (float[1,2,2,2] y) <float[3] s = {{1,1,1}}, float[2] b = {{0,0}}, float[2] m = {{0,0}}, float[2] v = {{1,1}}> {{ y = BatchNormalization (x, s, b, m, v) }}\n"
            ),
            "BatchNormalization's scale is float[3]; 2 channels need float[2]",
        ),
        (
            "declared",
            pad(100_000_000, 4),
            "graph output `y` is declared float[1,1,4,4] but the graph computes float[1,1,200000002,200000002]",
        ),
        (
            "hugepad",
            pad(100_000, 200_002),
            // Too large for the device's program, so the plan puts it on the host, where
            // its 160 GB output is refused before anything is allocated.
            "node `Conv_0`: not on the device (the program needs more than 2^20 instructions), and `y` is float[1,1,200002,200002], more than the 17179869184 bytes",
        ),
    ];
    for (tag, text, needle) in cases {
        let p = dir.join(format!("{tag}.onnxtxt"));
        std::fs::write(&p, text).unwrap();
        let r = accelc(&["compile", p.to_str().unwrap(), "-o", &out(tag)]);
        assert_eq!(r.code, 1, "{tag}: {r:?}");
        assert!(r.stderr.contains(needle), "{tag}: {}", r.stderr);
        assert!(r.stderr.contains(&format!("{tag}.onnxtxt")), "{tag}: no file name: {}", r.stderr);
    }
    let p = dir.join("latin1.onnxtxt");
    std::fs::write(
        &p,
        b"<ir_version: 8>\ng (float[2] x) => (float[2] y) {\n  y = Relu (x) \xe9\n}\n",
    )
    .unwrap();
    let r = accelc(&["compile", p.to_str().unwrap(), "-o", &out("latin1")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("latin1.onnxtxt:3:16: text model is not UTF-8 (invalid byte at offset 64)"),
        "{}",
        r.stderr
    );
}

/// Defects a hostile review found, each refused by name: a convolution bias that is not one
/// value per output channel (it silently became 0), an axis sliced twice, a negative Transpose
/// perm, Resize with both scales and sizes, an attribute given twice, a Constant with two
/// values; outputs that would replace a FIFO, a directory or the input file; a FIFO as input
/// (it used to block); an assembly expression of 10^5 terms (it overflowed the stack); a
/// blob whose target names no built-in configuration (`verify` used to fall back to
/// `default`).
#[test]
fn review_findings_are_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("accelc-review-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let h = "<ir_version: 8, opset_import: [\"\" : 17]>\n";
    let cases = [
        (
            "bias",
            format!(
                "{h}g (float[1,2,5,5] x) => (float y) <float[4,2,1,1] w = {{1,1,1,1,1,1,1,1}}, float[3] b = {{1,2,3}}> {{ y = Conv (x, w, b) }}\n"
            ),
            "the bias is float[3]; 4 output channels need one value each",
        ),
        (
            "slice",
            format!(
                "{h}g (float[4,3] x) => (float y) <int64[2] s = {{0,0}}, int64[2] e = {{2,1}}, int64[2] a = {{0,-2}}> {{ y = Slice (x, s, e, a) }}\n"
            ),
            "Slice axis 0 is given twice",
        ),
        (
            "perm",
            format!(
                "{h}g (float[4,3] x) => (float y) {{ y = Transpose <perm: ints = [-1,0]> (x) }}\n"
            ),
            "Transpose perm has the negative axis -1",
        ),
        (
            "resize",
            format!(
                "{h}g (float[1,1,2,2] x) => (float y) <float[4] sc = {{1,1,2,2}}, int64[4] sz = {{1,1,4,4}}> {{ y = Resize (x, \"\", sc, sz) }}\n"
            ),
            "Resize has both scales and sizes",
        ),
        (
            "dupattr",
            format!(
                "{h}g (float[4,3] x) => (float y) {{ y = Softmax <axis: int = 1, axis: int = 0> (x) }}\n"
            ),
            "attribute `axis` is given twice",
        ),
        (
            "const2",
            format!(
                "{h}g (float[1] x) => (float y) {{ c = Constant <value_float: float = 1.0, value_int: int = 2> ()\n y = Add (x, c) }}\n"
            ),
            "Constant needs exactly one value attribute; it has value_float, value_int",
        ),
    ];
    let rank = vec!["1"; 300].join(",");
    let long = "n".repeat(70_000);
    let more = [
        (
            "dup_opset",
            "<ir_version: 8, opset_import: [\"\" : 17, \"\" : 13]>\ng (float[2] x) => (float y) { y = Relu (x) }\n".to_string(),
            "opset_import lists the default domain twice".to_string(),
        ),
        (
            "pool_pads",
            format!("{h}g (float[1,1,4,4] x) => (float y) {{ y = AveragePool <kernel_shape: ints = [2, 2], pads: ints = [3, 3, 3, 3]> (x) }}\n"),
            "pads 3 and 3 of spatial axis 0 are not smaller than the kernel's 2".to_string(),
        ),
        (
            "arity",
            format!("{h}g (float[2] x) => (float y) {{ y = Relu (x, x, x) }}\n"),
            "node `Relu_0`: Relu-17 takes 1 input, not 3".to_string(),
        ),
        (
            "rank",
            format!("{h}g (float[{rank}] x) => (float y) {{ y = Relu (x) }}\n"),
            "tensor `x` has rank 300; a blob records at most 255 dimensions".to_string(),
        ),
        (
            "name",
            format!("{h}g (float[2] {long}) => (float y) {{ y = Relu ({long}) }}\n"),
            "tensor name of 70000 bytes; a blob records names of at most 65535".to_string(),
        ),
    ];
    let cases = cases.into_iter().map(|(t, x, n)| (t, x, n.to_string())).chain(more);
    for (tag, text, needle) in cases {
        let p = dir.join(format!("{tag}.onnxtxt"));
        std::fs::write(&p, text).unwrap();
        let r = accelc(&["compile", p.to_str().unwrap(), "-o", &out(tag)]);
        assert_eq!(r.code, 1, "{tag}: {r:?}");
        assert!(r.stderr.contains(&needle), "{tag}: {}", &r.stderr[..r.stderr.len().min(400)]);
    }
    // Outputs: never replace anything but a regular file, never the input.
    let model = dir.join("relu.onnxtxt");
    std::fs::write(&model, format!("{h}g (float[2] x) => (float[2] y) {{ y = Relu (x) }}\n"))
        .unwrap();
    let m = model.to_str().unwrap();
    let fifo = dir.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    for target in [fifo.to_str().unwrap(), sub.to_str().unwrap()] {
        let r = accelc(&["compile", m, "-o", target]);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains("exists and is not a regular file"), "{}", r.stderr);
    }
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(!dir.join("sub.tmp").exists(), "a temporary file was left behind");
    // A directory that does not exist: the operating system's error, naming the path (a
    // failing write is exit status 2, as every I/O failure of the tool).
    let missing = dir.join("no-such-dir").join("m.blob");
    let r = accelc(&["compile", m, "-o", missing.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("cannot write") && r.stderr.contains("no-such-dir"), "{}", r.stderr);
    // An existing file that is not a blob (a model's external weights, say) is not replaced.
    let weights = dir.join("weights.bin");
    std::fs::write(&weights, [1u8, 2, 3, 4]).unwrap();
    let r = accelc(&["compile", m, "-o", weights.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("exists and is not an accelc blob"), "{}", r.stderr);
    assert_eq!(std::fs::read(&weights).unwrap(), [1, 2, 3, 4]);
    // A symbolic link planted at the temporary name is not followed (the in-process CLI's
    // temporary files carry this test's process id), and a replaced blob keeps its mode.
    {
        use std::os::unix::fs::PermissionsExt;
        let victim = dir.join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let target = dir.join("planted.blob");
        let tmp = dir.join(format!(".planted.blob.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let r = accelc(&["compile", m, "-o", target.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&target).unwrap().is_file());
        assert!(std::fs::symlink_metadata(&tmp).is_err(), "the planted link is left");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(accelc(&["compile", m, "-o", target.to_str().unwrap()]).code, 0);
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a replaced blob's mode changed to {mode:o}");
        // A symbolic link as the output is refused, and said to be one.
        let link = dir.join("link.blob");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let r = accelc(&["compile", m, "-o", link.to_str().unwrap()]);
        assert!(r.code == 1 && r.stderr.contains("is a symbolic link"), "{r:?}");
    }
    // A legal name near the 255-byte limit (the temporary name beside it must still fit).
    let long = dir.join(format!("{}.blob", "a".repeat(245)));
    let r = accelc(&["compile", m, "-o", long.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(long.is_file());
    std::fs::remove_file(&long).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "a temporary file was left behind: {name}");
    }
    let r = accelc(&["compile", m, "-o", m]);
    assert!(r.code == 1 && r.stderr.contains("would overwrite the input"), "{r:?}");
    assert!(std::fs::read_to_string(&model).unwrap().contains("Relu"));
    // Inputs: a FIFO is refused at once instead of blocking.
    for cmd in ["compile", "verify", "ir"] {
        let r = accelc(&[cmd, fifo.to_str().unwrap()]);
        assert!(r.code == 1 && r.stderr.contains("not a regular file"), "{cmd}: {r:?}");
    }
    // A 100,000-term expression assembles (evaluated and dropped without recursion).
    let s = dir.join("long.s");
    std::fs::write(&s, format!(".equ A {}\nend code=0\n", vec!["1"; 100_000].join("+"))).unwrap();
    let r = accelc(&["verify", s.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    // A blob naming no built-in configuration, its checksums made consistent.
    let blob = out("cfgname");
    assert_eq!(accelc(&["compile", m, "-o", &blob]).code, 0);
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.windows(7).position(|w| w == b"default").unwrap();
    bytes[at + 6] = b'x';
    let bad = out("cfgname-bad");
    std::fs::write(&bad, accelc_tests::fuzz::reseal(&bytes)).unwrap();
    for cmd in ["verify", "run", "sim"] {
        let r = accelc(&[cmd, &bad]);
        assert_eq!(r.code, 1, "{cmd}: {r:?}");
        assert!(r.stderr.contains("defaulx"), "{cmd}: {}", r.stderr);
    }
}

/// Chains the optimizer collapses into one e-class (20,000 `Mul(x, 1)` and 20,000
/// `Identity`) compile to one node: merging e-class data is small-to-large, not a sort per
/// merge (which made these quadratic: 11 s). Given twice, an input is refused.
#[test]
fn collapsing_chains_compile_and_inputs_are_given_once() {
    let dir = std::env::temp_dir().join(format!("accelc-collapse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (tag, op) in [("mul", "Mul (t{p}, c)"), ("id", "Identity (t{p})")] {
        let mut text = String::from(
            "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[4] t0) => (float[4] y) <float c = {1.0}>\n{\n",
        );
        for i in 1..20_000 {
            text.push_str(&format!("  t{i} = {}\n", op.replace("{p}", &(i - 1).to_string())));
        }
        text.push_str("  y = Relu (t19999)\n}\n");
        let p = dir.join(format!("{tag}.onnxtxt"));
        std::fs::write(&p, text).unwrap();
        let r = accelc(&["compile", p.to_str().unwrap(), "-o", &out(tag)]);
        assert_eq!(r.code, 0, "{tag}: {r:?}");
        assert!(r.stdout.contains("graph nodes:   1\n"), "{tag}: {}", r.stdout);
    }
    let blob = dir.join("mlp.blob");
    let model = repo_root().join("models/mlp_mnist.onnx");
    assert_eq!(accelc(&["compile", model.to_str().unwrap(), "-o", blob.to_str().unwrap()]).code, 0);
    let x = repo_root().join("models/mlp_mnist.input_0.npy");
    let x = format!("input={}", x.display());
    let r = accelc(&["run", blob.to_str().unwrap(), "--input", &x, "--input", &x]);
    assert!(r.code == 1 && r.stderr.contains("input `input` is given twice"), "{r:?}");
}

/// Second hostile review: constant folding stays within its budget (a constant Pad to 10^9
/// elements is left to the device instead of allocating 4 GB); Clip's bounds are scalars; a
/// blob whose output segment is declared read-only, or whose segment exceeds the driver's
/// buffer limit, is refused by `run` as by `verify`; `run --output` replaces only regular files.
#[test]
fn second_review_findings() {
    let dir = std::path::PathBuf::from(out("second-review"));
    std::fs::create_dir_all(&dir).unwrap();
    let h = "<ir_version: 8, opset_import: [\"\" : 17]>\n";
    let fold = dir.join("fold.onnxtxt");
    std::fs::write(
        &fold,
        format!(
            "{h}g (float[1] x) => (float[1] y) <float[1] c = {{1.0}}, int64[2] p = {{0, 1000000000}}> {{\n  \
             z = Pad (c, p)\n  s = ReduceSum <keepdims = 0> (z)\n  y = Add (x, s)\n}}\n"
        ),
    )
    .unwrap();
    let r = accelc(&["ir", fold.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("z = Pad <"), "folded anyway:\n{}", r.stdout);
    let clip = dir.join("clip.onnxtxt");
    std::fs::write(
        &clip,
        format!(
            "{h}g (float[4] x) => (float[4] y) <float[3] lo = {{0.0, 5.0, 7.0}}> {{\n  y = Clip (x, lo)\n}}\n"
        ),
    )
    .unwrap();
    let r = accelc(&["compile", clip.to_str().unwrap(), "-o", &out("clip.blob")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("Clip's `min` must be a scalar, not of shape [3]"), "{}", r.stderr);

    // A compiled blob with its output segment's access changed to read-only.
    let model = dir.join("relu.onnxtxt");
    std::fs::write(&model, format!("{h}g (float[4] x) => (float[4] y) {{ y = Relu (x) }}\n"))
        .unwrap();
    let blob_path = dir.join("relu.blob");
    let r = accelc(&["compile", model.to_str().unwrap(), "-o", blob_path.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let bytes = std::fs::read(&blob_path).unwrap();
    let patched = |name: &str, f: &dyn Fn(&mut accelc_isa::blob::SegmentDecl)| {
        let mut b = accelc_isa::blob::Blob::read(&bytes).unwrap();
        let out_seg = b.io.iter().find(|t| t.name == "y").unwrap().segment;
        f(b.segments.iter_mut().find(|s| s.id == out_seg).unwrap());
        let p = dir.join(name);
        std::fs::write(&p, b.to_bytes().unwrap()).unwrap();
        p
    };
    for (what, p, needle) in [
        (
            "read-only",
            patched("ro.blob", &|s| s.access = accelc_isa::blob::ACCESS_READ),
            "is read-only but the program writes it",
        ),
        (
            "huge",
            patched("huge.blob", &|s| s.size = 1 << 40),
            "a segment's buffer is at most 17179869184",
        ),
    ] {
        for cmd in ["verify", "run", "sim"] {
            let r = accelc(&[cmd, p.to_str().unwrap()]);
            assert_eq!(r.code, 1, "{what} {cmd}: {r:?}");
            assert!(r.stderr.contains(needle), "{what} {cmd}: {}", r.stderr);
        }
    }

    // `run --output` refuses to replace a FIFO or a symlink, and writes nothing else.
    let outdir = dir.join("out");
    std::fs::create_dir_all(&outdir).unwrap();
    let fifo = outdir.join("y.npy");
    let _ = std::fs::remove_file(&fifo);
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let r = accelc(&["run", blob_path.to_str().unwrap(), "--output", outdir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not a regular file; not replacing it"), "{}", r.stderr);
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    std::fs::remove_file(&fifo).unwrap();
    std::os::unix::fs::symlink("../relu.onnxtxt", &fifo).unwrap();
    let r = accelc(&["run", blob_path.to_str().unwrap(), "--output", outdir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_dir(&outdir).unwrap().count(), 1, "a temporary file was left");
}
