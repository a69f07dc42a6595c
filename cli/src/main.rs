//! The `accelc` binary: a thin wrapper around [`accelc_cli::run`].

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let code = accelc_cli::run(std::env::args_os(), &mut stdout, &mut stderr);
    ExitCode::from(code)
}
