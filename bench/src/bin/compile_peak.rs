//! `compile-peak MODEL OUT`: runs `accelc compile MODEL -o OUT` through the CLI's own entry
//! point ([`accelc_cli::run`], all the `accelc` binary's `main` does), then prints `seconds
//! peak_rss_bytes model_bytes blob_bytes startup_rss_bytes`. The zoo benchmark runs it as a
//! child process, so each model's peak memory is its own and the process's whole wall time is
//! the compile's. `startup_rss_bytes` is the resident set before compiling: the program's
//! code and static initialisers (most of it LLVM's and MLIR's, linked for host fallback),
//! paid by every `accelc` process whatever the model.

use std::ffi::OsString;

/// A `/proc/self/status` figure (`VmHWM:` the peak resident set, `VmRSS:` the current one) in
/// bytes.
fn status_bytes(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let started = std::time::Instant::now();
    let startup = status_bytes("VmRSS:");
    let args: Vec<OsString> = std::env::args_os().collect();
    let [_, model, out] = args.as_slice() else {
        eprintln!("usage: compile-peak MODEL OUT");
        std::process::exit(2);
    };
    let argv = ["accelc".into(), "compile".into(), model.clone(), "-o".into(), out.clone()];
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let code = accelc_cli::run(argv, &mut stdout, &mut stderr);
    let seconds = started.elapsed().as_secs_f64();
    if code != 0 {
        eprint!("{}", String::from_utf8_lossy(&stderr));
        std::process::exit(1);
    }
    let size = |p: &OsString| std::fs::metadata(p).map_or(0, |m| m.len());
    println!("{seconds} {} {} {} {startup}", status_bytes("VmHWM:"), size(model), size(out));
}
