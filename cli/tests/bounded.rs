//! Every file of `../shared/reliability` (hostile and careless inputs, each of which once made
//! accelc panic, abort, hang or allocate without bound), through every command its README
//! names, as a separate `accelc` process under a 4 GiB address-space limit (`ulimit -v`) and a
//! wall-clock limit: each command ends with exit status 0 or 1 (never a panic's 101 or a
//! signal), an error is one clear `error:` message, and what compiles also verifies.
//!
//! The directory is walked, so a file added there is covered without editing this test.

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

#[test]
fn every_hostile_input_ends_in_bounded_time_and_memory() {
    let dir = reliability_dir();
    let tmp = std::env::temp_dir().join(format!("accelc-bounded-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mlp = tmp.join("mlp.blob");
    let mlp_model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mlp_mnist.onnx");
    let mlp = mlp.to_str().unwrap();
    assert_eq!(bounded(&["compile", mlp_model.to_str().unwrap(), "-o", mlp]).code, 0);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut tried = 0;
    for f in &files {
        let path = f.to_str().unwrap();
        let name = f.file_name().unwrap().to_str().unwrap();
        let blob = tmp.join(format!("{name}.blob"));
        let blob = blob.to_str().unwrap();
        match f.extension().and_then(|e| e.to_str()) {
            Some("onnx" | "onnxtxt") => {
                bounded(&["ir", path]);
                bounded(&["check", path]);
                for level in ["-O0", "-O2"] {
                    if bounded(&["compile", path, level, "-o", blob]).code == 0 {
                        let v = bounded(&["verify", blob]);
                        assert_eq!(
                            v.code, 0,
                            "{name}: verify rejects compile's blob: {}",
                            v.stderr
                        );
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
            _ => continue,
        }
        tried += 1;
    }
    assert!(tried >= 14, "only {tried} inputs found in {}", dir.display());
    let _ = std::fs::remove_dir_all(&tmp);
}
