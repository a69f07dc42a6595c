//! `compile-peak MODEL OUT`: what `accelc compile MODEL -o OUT` does (the facade at its
//! default `-O2` for the default device, the blob written to `OUT`), then prints `seconds
//! peak_rss_bytes model_bytes blob_bytes`. The zoo benchmark runs it as a child process, so
//! each model's peak memory is its own and the process's whole wall time is the compile's.

use accelc::{Options, Source};

/// The process's peak resident set (VmHWM) in bytes, from /proc.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, out] = args.as_slice() else {
        eprintln!("usage: compile-peak MODEL OUT");
        std::process::exit(2);
    };
    let path = std::path::PathBuf::from(model);
    let started = std::time::Instant::now();
    let result = accelc::compile(Source::Path(&path), &Options::default(), &mut ())
        .map_err(|e| e.to_string())
        .and_then(|c| {
            std::fs::write(out, &c.blob).map(|()| c.blob.len()).map_err(|e| e.to_string())
        });
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(blob_len) => {
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            println!("{seconds} {} {size} {blob_len}", peak_rss());
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
