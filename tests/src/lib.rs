//! Helpers shared by the integration tests: paths to fixtures and an in-process CLI runner.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A file under `tests/`.
pub fn tests_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// What a CLI run printed and returned.
#[derive(Debug)]
pub struct CliRun {
    /// Exit status.
    pub code: u8,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `accelc ARGS...` in-process.
pub fn accelc(args: &[&str]) -> CliRun {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv = std::iter::once("accelc").chain(args.iter().copied()).map(Into::into);
    let code = accelc_cli::run(argv, &mut out, &mut err);
    CliRun {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}
