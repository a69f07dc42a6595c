//! The driver soak in long form: `soak [SECONDS] [THREADS] [SEED]` (default 180 s, 8 threads)
//! prints jobs, injected faults, timeouts, resets, bans, corrupted outputs and leaks, and
//! exits 1 if anything was corrupted or leaked.

fn main() {
    let arg = |i: usize, d: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (secs, threads, seed) = (arg(1, 180), arg(2, 8), arg(3, 1));
    let r = accelc_tests::soak::soak(std::time::Duration::from_secs(secs), threads, seed);
    println!("soak of {secs} s, {threads} threads: {r}");
    if r.corrupted + r.leaks > 0 {
        std::process::exit(1);
    }
}
