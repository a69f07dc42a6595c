//! The `accelc` command line, run in-process: the tools chain (asm → verify → inspect → disasm →
//! asm gives the same bytes), exit codes and messages for bad input, outputs never clobbered on
//! error, and no input file of random bytes or text making any subcommand panic.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use accelc_tests::{accelc, tests_path};
use proptest::prelude::*;

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "accelc-test-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn tools_chain_round_trips() {
    let dir = scratch("chain");
    let src = tests_path("programs/gemm_i8_pipeline.s");
    let blob = dir.join("g.blob");
    let run = accelc(&["asm", s(&src), "-o", s(&blob)]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = accelc(&["verify", s(&blob)]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("valid for configuration `default`"));
    assert!(run.stdout.contains("within their declared sizes"));

    let run = accelc(&["disasm", s(&blob)]);
    assert_eq!(run.code, 0);
    let text = dir.join("g2.s");
    std::fs::write(&text, &run.stdout).unwrap();
    let blob2 = dir.join("g2.blob");
    assert_eq!(accelc(&["asm", s(&text), "-o", s(&blob2)]).code, 0);
    // The program sections are identical (the metadata names a different source file).
    let a = accelc_isa::blob::Blob::read(&std::fs::read(&blob).unwrap()).unwrap().program.clone();
    let b = accelc_isa::blob::Blob::read(&std::fs::read(&blob2).unwrap()).unwrap().program.clone();
    assert_eq!(a, b);

    let raw = dir.join("g.bin");
    assert_eq!(accelc(&["asm", s(&src), "--raw", "-o", s(&raw)]).code, 0);
    assert_eq!(std::fs::read(&raw).unwrap(), a.text);
    let run = accelc(&["disasm", "--raw", s(&raw)]);
    assert_eq!(run.code, 0);
    assert_eq!(run.stdout.lines().count(), 21);
}

#[test]
fn inspect_and_config_output() {
    let dir = scratch("inspect");
    let blob = dir.join("roundtrip.blob");
    assert_eq!(
        accelc(&["asm", s(&tests_path("programs/dma_roundtrip.s")), "-o", s(&blob)]).code,
        0
    );
    let run = accelc(&["inspect", s(&blob)]);
    assert_eq!(run.code, 0, "{run:?}");
    let stdout = run.stdout.replace(s(&blob), "roundtrip.blob");
    insta::assert_snapshot!("inspect_roundtrip", stdout);
    let run = accelc(&["config"]);
    assert_eq!(run.code, 0);
    insta::assert_snapshot!("config", run.stdout);
}

#[test]
fn rejects_what_the_issue_lists() {
    // Each case: fixture, a phrase the error must contain.
    let cases = [
        ("fixtures/verify/err_spad_out_of_range.s", "outside the 1048576-byte scratchpad"),
        ("fixtures/verify/err_dma_past_segment.s", "a DMA past its end"),
        ("fixtures/verify/err_deadlock.s", "deadlock"),
        ("fixtures/verify/err_missing_end.s", "no `end` instruction"),
        ("fixtures/verify/err_desc_extent_overflow.s", "overflows 64 bits"),
    ];
    for (file, phrase) in cases {
        let run = accelc(&["verify", s(&tests_path(file))]);
        assert_eq!(run.code, 1, "{file}: {run:?}");
        assert!(run.stderr.contains(phrase), "{file}: {}", run.stderr);
    }
    // A set reserved bit, in raw words and inside a blob.
    let dir = scratch("reserved");
    let mut word = 1u128.to_le_bytes();
    word[15] = 0x01; // bit 120: beyond every `end` field
    let raw = dir.join("bad.bin");
    std::fs::write(&raw, word).unwrap();
    let run = accelc(&["verify", "--raw", s(&raw)]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("instruction 0: end: reserved bits set: bit 120"),
        "{}",
        run.stderr
    );
    let run = accelc(&["disasm", "--raw", s(&raw)]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("instruction 0: end: reserved bits set: bit 120"));
}

#[test]
fn exit_codes_and_usage() {
    let run = accelc(&["--help"]);
    assert_eq!(run.code, 0);
    for cmd in ["asm", "disasm", "verify", "inspect", "config"] {
        assert!(run.stdout.contains(cmd), "help lists {cmd}");
    }
    assert_eq!(accelc(&["frobnicate"]).code, 2);
    let run = accelc(&["verify", "/nonexistent/x.s"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("cannot read /nonexistent/x.s"));
    let run = accelc(&["config", "huge"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("unknown configuration `huge` (known: default, tiny, u65)"));
    let run = accelc(&["inspect", s(&tests_path("programs/dma_roundtrip.s"))]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not a command blob"));
}

#[test]
fn blob_for_another_configuration_is_refused() {
    let dir = scratch("target");
    let blob = dir.join("t.blob");
    assert_eq!(
        accelc(&[
            "asm",
            s(&tests_path("programs/dma_roundtrip.s")),
            "--config",
            "tiny",
            "-o",
            s(&blob)
        ])
        .code,
        0
    );
    assert_eq!(
        accelc(&["verify", s(&blob)]).code,
        0,
        "validated against the blob's own configuration"
    );
    let run = accelc(&["verify", s(&blob), "--config", "default"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("built for ISA 1.1 on `tiny`, which does not match configuration `default`")
    );
    // `run` of a compiled model's blob: its own configuration, or an explicit one that agrees;
    // another is named, not ignored.
    let mb = dir.join("m.blob");
    let mlp = accelc_tests::repo_root().join("models/mlp_mnist.onnx");
    assert_eq!(accelc(&["compile", s(&mlp), "--config", "tiny", "-o", s(&mb)]).code, 0);
    let own = accelc(&["run", s(&mb)]);
    assert_eq!(own.code, 0, "{}", own.stderr);
    assert!(own.stdout.contains("ran on `tiny`"), "{}", own.stdout);
    assert_eq!(accelc(&["run", s(&mb), "--config", "tiny"]).code, 0);
    let other = accelc(&["run", s(&mb), "--config", "default"]);
    assert_eq!(other.code, 1);
    assert!(
        other.stderr.contains("the blob was built for `tiny`, not `default`"),
        "{}",
        other.stderr
    );
}

#[test]
fn failed_assembly_leaves_existing_output_untouched() {
    let dir = scratch("clobber");
    let out = dir.join("keep.blob");
    std::fs::write(&out, b"precious").unwrap();
    let bad = dir.join("bad.s");
    std::fs::write(&bad, "end code=0\nmx.bogus\n").unwrap();
    let run = accelc(&["asm", s(&bad), "-o", s(&out)]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("bad.s:2:1"), "{}", run.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_input_panics_any_subcommand(bytes in proptest::collection::vec(any::<u8>(), 0..400), text in "[ -~\n]{0,300}") {
        let dir = scratch("fuzz");
        let bin = dir.join("in.bin");
        let txt = dir.join("in.s");
        std::fs::write(&bin, &bytes).unwrap();
        std::fs::write(&txt, &text).unwrap();
        let out = dir.join("out.blob");
        for args in [
            vec!["asm", s(&txt), "-o", s(&out)],
            vec!["asm", s(&bin), "-o", s(&out)],
            vec!["disasm", s(&bin)],
            vec!["disasm", "--raw", s(&bin)],
            vec!["verify", s(&bin)],
            vec!["verify", "--raw", s(&bin)],
            vec!["verify", s(&txt)],
            vec!["inspect", s(&bin)],
            vec!["compile", s(&bin), "-o", s(&out)],
            vec!["compile", s(&txt), "-o", s(&out)],
            vec!["run", s(&bin)],
            vec!["profile", s(&bin)],
        ] {
            let run = accelc(&args);
            prop_assert!(run.code <= 1, "{args:?}: {run:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn sim_runs_programs_and_writes_traces_and_segments() {
    let dir = scratch("sim");
    let a = dir.join("a.bin");
    std::fs::write(&a, accelc_tests::Rng::new(4).bytes(4096)).unwrap();
    let (trace, out) = (dir.join("t.json"), dir.join("c.bin"));
    let src = tests_path("programs/gemm_i8_pipeline.s");
    let seg_arg = format!("0={}", s(&a));
    let dump_arg = format!("2={}", s(&out));
    let run =
        accelc(&["sim", s(&src), "--seg", &seg_arg, "--dump", &dump_arg, "--trace", s(&trace)]);
    assert_eq!(run.code, 0, "{run:?}");
    let stdout = run.stdout.replace(s(&dir), "DIR");
    insta::assert_snapshot!("sim_pipeline", stdout);
    assert_eq!(std::fs::read(&out).unwrap().len(), 4096);
    let json = std::fs::read_to_string(&trace).unwrap();
    assert!(
        json.starts_with("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[")
            && json.trim_end().ends_with("]}")
    );
    assert_eq!(json.matches("\"ph\":\"X\"").count(), 21);
    // The same run through a blob gives the same cycles.
    let blob = dir.join("g.blob");
    assert_eq!(accelc(&["asm", s(&src), "-o", s(&blob)]).code, 0);
    let via_blob = accelc(&["sim", s(&blob), "--seg", &seg_arg]);
    assert_eq!(via_blob.stdout.lines().next(), run.stdout.lines().next());
    // Programs the validator rejects never reach the simulator.
    let run = accelc(&["sim", s(&tests_path("fixtures/verify/err_deadlock.s"))]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("rejected by the validator"), "{}", run.stderr);
    let run = accelc(&["sim", s(&src), "--seg", "0=/nonexistent"]);
    assert_eq!(run.code, 2);
}

#[test]
fn model_commands() {
    let dir = scratch("models");
    let root = accelc_tests::repo_root().join("models");
    let model = root.join("mlp_mnist.onnx");
    let input = format!("input={}", s(&root.join("mlp_mnist.input_0.npy")));
    let expect = format!("output={}", s(&root.join("mlp_mnist.output_0.npy")));
    let blob = dir.join("mlp.blob");
    let run = accelc(&["compile", s(&model), "-o", s(&blob)]);
    assert_eq!(run.code, 0, "{run:?}");
    for key in ["kernels:", "instructions:", "constants:", "arena:", "est. cycles:"] {
        assert!(run.stdout.contains(key), "{key}: {}", run.stdout);
    }
    // --dump-ir: the graph after every frontend pass, the optimizer and legalize, each node's
    // placement after select, then the kernels after scheduling and with their addresses
    // after memory planning.
    let run = accelc(&["compile", s(&model), "-o", s(&blob), "--dump-ir"]);
    assert_eq!(run.code, 0, "{run:?}");
    for pass in [
        "IR after import",
        "IR after optimize",
        "IR after legalize",
        "placement after select",
        "kernels after schedule",
        "kernels after plan-memory",
    ] {
        assert!(run.stderr.contains(pass), "{pass}: {}", run.stderr);
    }
    assert!(run.stderr.contains("@seg3+"), "{}", run.stderr);
    assert!(run.stderr.contains("device  /net/net.1/Gemm (Gemm)"), "{}", run.stderr);
    // The blob runs, matches onnxruntime's stored output and writes .npy files.
    let outdir = dir.join("out");
    let run =
        accelc(&["run", s(&blob), "--input", &input, "--expect", &expect, "--output", s(&outdir)]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("matches the expected values"), "{}", run.stdout);
    let written: ndarray::ArrayD<f32> = ndarray_npy::read_npy(outdir.join("output.npy")).unwrap();
    assert_eq!(written.shape(), &[1, 10]);
    // The model against the reference interpreter, with random inputs.
    let run = accelc(&["run", s(&model), "--compare"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("matches the reference"), "{}", run.stdout);
    // Wrong values expected: exit 1 with the element.
    let zeros_file = dir.join("zeros.npy");
    let zeros = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[1, 10]));
    ndarray_npy::write_npy(&zeros_file, &zeros).unwrap();
    let wrong = format!("output={}", s(&zeros_file));
    let run = accelc(&["run", s(&blob), "--input", &input, "--expect", &wrong]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("DIFFERS from the expected values at element"), "{}", run.stdout);
    // Bad input names and shapes are usage errors of the model, exit 1.
    let nope = format!("nope={}", s(&zeros_file));
    let run = accelc(&["run", s(&blob), "--input", &nope]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no input `nope`") && run.stderr.contains("input"),
        "{}",
        run.stderr
    );
    // Layer by layer.
    let run = accelc(&["diff", s(&model)]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("all 3 tensors match"), "{}", run.stdout);
    // Profile of the blob: per-layer lines and totals; a Perfetto trace.
    let trace = dir.join("t.json");
    let run = accelc(&["profile", s(&blob), "--trace", s(&trace)]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("/net/net.1/Gemm+/net/net.2/Relu"), "{}", run.stdout);
    assert!(run.stdout.lines().any(|l| l.starts_with("total")), "{}", run.stdout);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    assert!(json["traceEvents"].as_array().unwrap().len() > 500);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A model the compiler cannot lower: exit 1 naming the node and the reason, and an existing
/// output file is left alone.
#[test]
fn compile_errors_name_the_node() {
    let dir = scratch("unsupported");
    let model = dir.join("m.onnxtxt");
    std::fs::write(
        &model,
        "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[2,3] x, float[2,3] y) => (float[2,3] z) {\n  [the_mod] z = Einsum <equation: string = \"ij,ij->ij\"> (x, y)\n}\n",
    )
    .unwrap();
    let out = dir.join("m.blob");
    std::fs::write(&out, b"precious").unwrap();
    let run = accelc(&["compile", s(&model), "-o", s(&out)]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("node `the_mod`") && run.stderr.contains("Einsum"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `diff` compares what the device produced through an alias too: a 1-D convolution (lifted to
/// 2-D by legalize, its output a Squeeze of the kernel's) is checked against the reference,
/// not passed with nothing compared.
#[test]
fn diff_compares_outputs_produced_through_aliases() {
    let dir = std::env::temp_dir().join(format!("accelc-diff-alias-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("c1d.onnxtxt");
    std::fs::write(
        &p,
        "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[1,2,10] x) => (float[1,3,8] y)\n   <float[3,2,3] w = {1,2,3,4,5,6,7,8,9,1,2,3,4,5,6,7,8,9}>\n{\n  y = Conv (x, w)\n}\n",
    )
    .unwrap();
    let run = accelc(&["diff", p.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("all 1 tensors match"), "{}", run.stdout);
}

/// A model's bool inputs and outputs stay bool through the blob (u8 bytes marked boolean):
/// `run` of the model and of its blob take a bool `.npy`, refuse a uint8 one naming both types,
/// write bool outputs equal to the reference, and refuse a bool byte other than 0 or 1.
#[test]
fn bool_tensors_cross_the_blob_as_bool() {
    let dir = scratch("bool-io");
    let model = dir.join("b.onnxtxt");
    std::fs::write(
        &model,
        "<ir_version: 8, opset_import: [\"\" : 17]>\n\
         g (bool[4] m) => (bool[4] y, bool[2,2] r) {\n  y = Identity (m)\n  \
         s = Constant <value_ints: ints = [2, 2]> ()\n  r = Reshape (m, s)\n}\n",
    )
    .unwrap();
    let blob = dir.join("b.blob");
    let c = accelc(&["compile", s(&model), "-o", s(&blob)]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    let insp = accelc(&["inspect", s(&blob)]);
    assert!(insp.stdout.contains("Input m u8[4] in segment"), "{}", insp.stdout);
    assert!(insp.stdout.contains(", boolean"), "{}", insp.stdout);
    let m = dir.join("m.npy");
    let mask = ndarray::arr1(&[true, false, true, false]).into_dyn();
    ndarray_npy::write_npy(&m, &mask).unwrap();
    for (i, src) in [&model, &blob].into_iter().enumerate() {
        let out = dir.join(format!("out{i}"));
        let input = format!("m={}", s(&m));
        let mut args = vec!["run", s(src), "--input", &input, "--output", s(&out)];
        if i == 0 {
            args.push("--compare");
        }
        let r = accelc(&args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let y: ndarray::ArrayD<bool> = ndarray_npy::read_npy(out.join("y.npy")).unwrap();
        assert_eq!(y, mask);
        let r: ndarray::ArrayD<bool> = ndarray_npy::read_npy(out.join("r.npy")).unwrap();
        assert_eq!(r.into_raw_vec_and_offset().0, vec![true, false, true, false]);
    }
    let u8s = dir.join("u8.npy");
    ndarray_npy::write_npy(&u8s, &ndarray::arr1(&[1u8, 0, 1, 0]).into_dyn()).unwrap();
    let input = format!("m={}", s(&u8s));
    let r = accelc(&["run", s(&blob), "--input", &input]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is uint8[4]; the model takes bool[4]"), "{}", r.stderr);
    // A hand-written bool file holding the byte 2.
    let mut bytes = std::fs::read(&m).unwrap();
    *bytes.last_mut().unwrap() = 2;
    std::fs::write(&m, bytes).unwrap();
    let input = format!("m={}", s(&m));
    let r = accelc(&["run", s(&blob), "--input", &input]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("bool element 3 is the byte 2"), "{}", r.stderr);
}

/// An ONNX backend node test runs through `accelc run` as its files stand: `.pb` inputs named
/// by their `TensorProto`, `.pb` expected outputs, and an int64 input that a Pad's pads are
/// computed from (through Sub, Concat...) bound at compile time to the value given. A wrong
/// expected value fails, naming the output.
#[test]
fn run_takes_node_test_files_and_binds_compile_time_inputs() {
    let t = accelc_tests::repo_root()
        .join("target/onnx-node-tests/node/test_center_crop_pad_crop_and_pad_expanded");
    let ds = t.join("test_data_set_0");
    let model = t.join("model.onnx");
    let (in0, in1, out0) = (ds.join("input_0.pb"), ds.join("input_1.pb"), ds.join("output_0.pb"));
    let run =
        accelc(&["run", s(&model), "--input", s(&in0), "--input", s(&in1), "--expect", s(&out0)]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("matches the expected values"), "{}", run.stdout);
    assert!(run.stderr.contains("compiled for the given values of `shape`"), "{}", run.stderr);
    // Without the shape's value the compile names what it needs.
    let run = accelc(&["run", s(&model), "--input", s(&in0)]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("needs it as a constant") && run.stderr.contains("--input"),
        "{}",
        run.stderr
    );
    // The output checked against a wrong file fails (the input given as the expected output).
    let dir = scratch("nodetest");
    let wrong = dir.join("y.npy");
    let ok =
        accelc(&["run", s(&model), "--input", s(&in0), "--input", s(&in1), "--output", s(&dir)]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let name = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&name).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&wrong, bytes).unwrap();
    let out_name = name.file_stem().unwrap().to_str().unwrap().to_string();
    let expect = format!("{out_name}={}", s(&wrong));
    let run =
        accelc(&["run", s(&model), "--input", s(&in0), "--input", s(&in1), "--expect", &expect]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("DIFFERS from the expected values"), "{}", run.stdout);
    // A `.npy` alone does not name its tensor.
    let run = accelc(&["run", s(&model), "--input", s(&wrong)]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("is not NAME=FILE"), "{}", run.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A reader that went away: every write fails with a broken pipe.
struct ClosedPipe;

impl std::io::Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_closed_output_pipe_stops_the_output_not_the_work() {
    let run = |args: &[&str]| {
        let mut err = Vec::new();
        let args = args.iter().map(std::ffi::OsString::from);
        let code = accelc_cli::run(args, &mut ClosedPipe, &mut err);
        (code, String::from_utf8_lossy(&err).into_owned())
    };
    // `accelc config | head -1`: exit 0, nothing on stderr.
    assert_eq!(run(&["accelc", "config"]), (0, String::new()));
    // The work still happens: the outputs are written, and a failed check still fails.
    let dir = scratch("pipe");
    let model = dir.join("m.onnxtxt");
    std::fs::write(
        &model,
        "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[2] x) => (float[2] y) { y = Relu (x) }\n",
    )
    .unwrap();
    let outd = dir.join("out");
    let (code, err) = run(&["accelc", "run", s(&model), "--output", s(&outd)]);
    assert_eq!(code, 0, "{err}");
    assert!(outd.join("y.npy").is_file(), "the output was not written");
    let wrong = dir.join("wrong.npy");
    let hundreds = accelc::HostTensor::from_f32(vec![2], &[100.0, 100.0]).unwrap();
    accelc::npy::write(&wrong, &hundreds).unwrap();
    let expect = format!("y={}", s(&wrong));
    let (code, err) = run(&["accelc", "run", s(&model), "--expect", &expect]);
    assert_eq!(code, 1, "a failed --expect must fail with its output pipe closed: {err}");
}

#[test]
fn expect_takes_the_tolerance_given() {
    // A quantized model's output is right within a few steps of its scale, not within the
    // float default (rtol 1e-3, atol 1e-5): `--atol` says how many.
    let dir = scratch("tol");
    let model = dir.join("m.onnxtxt");
    std::fs::write(
        &model,
        "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[2] x) => (float[2] y) { y = Relu (x) }\n",
    )
    .unwrap();
    let x = dir.join("x.npy");
    accelc::npy::write(&x, &accelc::HostTensor::from_f32(vec![2], &[1.0, -1.0]).unwrap()).unwrap();
    let y = dir.join("y.npy");
    accelc::npy::write(&y, &accelc::HostTensor::from_f32(vec![2], &[1.1, 0.0]).unwrap()).unwrap();
    let (input, expect) = (format!("x={}", s(&x)), format!("y={}", s(&y)));
    let base = ["run", s(&model), "--input", &input, "--expect", &expect];
    let with = |extra: &[&str]| accelc(&[&base[..], extra].concat());
    let r = with(&[]);
    assert_eq!(r.code, 1, "0.1 off fails the default tolerance: {r:?}");
    assert!(r.stdout.contains("DIFFERS from the expected values"), "{r:?}");
    let r = with(&["--atol", "0.11"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(with(&["--rtol", "0.05"]).code == 1 && with(&["--rtol", "0.1"]).code == 0);
    for bad in ["-1", "NaN", "inf"] {
        let arg = format!("--atol={bad}");
        let r = with(&[arg.as_str()]);
        assert!(r.code == 2 && r.stderr.contains("tolerance"), "--atol {bad}: {r:?}");
    }
}
