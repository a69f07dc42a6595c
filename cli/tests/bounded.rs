//! Every file of `../shared/reliability` (hostile and careless inputs, each of which once made
//! accelc panic, abort, hang or allocate without bound), through every command its README
//! names, as a separate `accelc` process under a 4 GiB address-space limit (`ulimit -v`) and a
//! wall-clock limit: each command ends with exit status 0 or 1 (never a panic's 101 or a
//! signal), an error is one clear `error:` message, and what compiles also verifies.
//!
//! One test per kind of defect; a file added there without a kind fails
//! `every_reliability_file_has_a_kind`. (Kind 1, external data, needs symbolic links and FIFOs
//! made at test time: `tests/all/frontend.rs`.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MEMORY_KIB: u64 = 4 << 20;
/// Far above any command's time on this machine (the slowest, compiling a 16,000-node chain
/// in the test profile, takes a few seconds), far below a hang.
const WALL: Duration = Duration::from_secs(120);

struct Outcome {
    code: i32,
    stderr: String,
}

/// Runs `accelc args...` under the limits; panics on a signal, a timeout or a panic.
fn bounded(args: &[&str]) -> Outcome {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let err_path =
        std::env::temp_dir().join(format!("accelc-bounded-{}-{n}.err", std::process::id()));
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_KIB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_accelc"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > WALL {
            let _ = child.kill();
            panic!("accelc {args:?} ran past {WALL:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    let Some(code) = status.code() else {
        panic!("accelc {args:?} was killed by a signal ({status}):\n{stderr}");
    };
    assert!(
        code == 0 || code == 1,
        "accelc {args:?} exited with {code} after {:?}:\n{stderr}",
        started.elapsed()
    );
    assert!(!stderr.contains("panicked"), "accelc {args:?} panicked:\n{stderr}");
    if code == 1 {
        assert!(stderr.starts_with("error: "), "accelc {args:?}: unclear error:\n{stderr}");
    }
    Outcome { code, stderr }
}

fn reliability_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reliability")
}

/// The files of `../shared/reliability` by the kind of defect they showed (the issue's
/// numbering): 2 sizes trusted without bound, 3 unbounded time, 4 invalid models accepted,
/// 5 tools disagreeing.
const KINDS: &[(&str, u8)] = &[
    ("shape_i64overflow.onnx", 2),
    ("huge_shape_header.npy", 2),
    ("seg_decl_u64max.s", 2),
    ("sim_alloc_2p40_undeclared.s", 2),
    ("chain_16000.onnxtxt", 3),
    ("many_nodes_5k.onnxtxt", 3),
    ("garbage_30000.onnxtxt", 3),
    ("dma_copy_many.s", 3),
    ("conv_group0.onnx", 4),
    ("squeeze_nonone.onnx", 4),
    ("resize_nan.onnx", 4),
    ("transpose_perm_bad.onnx", 4),
    ("noseg_roundtrip.s", 5),
    ("relu_ok.onnxtxt", 5),
];

/// Runs every command the reliability README names for `file` (and the ones a user would try
/// next) under the limits.
fn try_all(file: &Path, tmp: &Path, mlp: &str) {
    let path = file.to_str().unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    let blob = tmp.join(format!("{name}.blob"));
    let blob = blob.to_str().unwrap();
    match file.extension().and_then(|e| e.to_str()) {
        Some("onnx" | "onnxtxt") => {
            bounded(&["ir", path]);
            bounded(&["check", path]);
            for level in ["-O0", "-O2"] {
                if bounded(&["compile", path, level, "-o", blob]).code == 0 {
                    let v = bounded(&["verify", blob]);
                    assert_eq!(v.code, 0, "{name}: verify rejects compile's blob: {}", v.stderr);
                    bounded(&["run", blob]);
                }
            }
        }
        Some("s") => {
            bounded(&["verify", path]);
            bounded(&["sim", path]);
            if bounded(&["asm", path, "-o", blob]).code == 0 {
                bounded(&["verify", blob]);
                bounded(&["run", blob]);
                bounded(&["inspect", blob]);
            }
        }
        Some("npy") => {
            bounded(&["run", mlp, "--input", &format!("input={path}")]);
        }
        _ => panic!("{name}: no commands for this kind of file"),
    }
}

/// Runs the files of one kind; the scratch directory is per kind.
fn kind(k: u8) {
    let tmp = std::env::temp_dir().join(format!("accelc-bounded-{}-{k}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mlp = tmp.join("mlp.blob");
    let mlp_model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mlp_mnist.onnx");
    let mlp = mlp.to_str().unwrap();
    assert_eq!(bounded(&["compile", mlp_model.to_str().unwrap(), "-o", mlp]).code, 0);
    let files: Vec<&str> = KINDS.iter().filter(|(_, n)| *n == k).map(|(f, _)| *f).collect();
    assert!(!files.is_empty());
    for f in files {
        try_all(&reliability_dir().join(f), &tmp, mlp);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn sizes_read_from_files_are_bounded() {
    kind(2);
}

#[test]
fn time_is_bounded() {
    kind(3);
}

#[test]
fn invalid_models_are_refused() {
    kind(4);
}

#[test]
fn tools_agree() {
    kind(5);
}

/// A file added to `../shared/reliability` must be given a kind here (and so be run).
#[test]
fn every_reliability_file_has_a_kind() {
    let mut missing = Vec::new();
    for e in std::fs::read_dir(reliability_dir()).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name != "README.md" && !KINDS.iter().any(|(f, _)| *f == name) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "reliability files without a kind: {missing:?}");
}
