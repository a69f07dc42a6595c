//! Compiles one model (`compile-peak MODEL`) and prints `seconds peak_rss_bytes model_bytes`:
//! the zoo benchmark runs it as a child process so each model's peak memory is its own.

use accelc_compiler::lower::{CompileOptions, compile};
use accelc_compiler::onnx::ImportOptions;
use accelc_compiler::pipeline::{load_any, run_frontend};

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
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: compile-peak MODEL");
        std::process::exit(2);
    };
    let path = std::path::PathBuf::from(path);
    let started = std::time::Instant::now();
    let result = load_any(&path, &ImportOptions::default()).and_then(|mut g| {
        run_frontend(&mut g, &mut |_, _| {})?;
        let c = compile(&g, &CompileOptions::default()).map_err(|e| e.to_string())?;
        c.blob().map_err(|e| e.to_string())
    });
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(blob) => {
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            println!("{seconds} {} {size} {}", peak_rss(), blob.len());
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
