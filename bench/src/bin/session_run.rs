//! The Rust side of the Python calling-overhead measurement (`python/bench/overhead.py`):
//! `session-run MODEL INPUT.npy N` compiles MODEL, then times N calls of the facade's
//! `Session::run` on INPUT and prints the median microseconds per call.

use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, input, n] = args.as_slice() else {
        eprintln!("usage: session-run MODEL INPUT.npy N");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N is a count");
    let c = accelc::compile(
        accelc::Source::Path(Path::new(model)),
        &accelc::Options::default(),
        &mut (),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let session = accelc::Session::new(c.blob().unwrap()).unwrap_or_else(|e| panic!("{e}"));
    let x = accelc::npy::read(Path::new(input)).unwrap_or_else(|e| panic!("{e}"));
    let inputs = [x];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        let out = session.run(&inputs).unwrap_or_else(|e| panic!("{e}"));
        times.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(out);
    }
    times.sort_by(f64::total_cmp);
    println!("{:.1}", times[n / 2]);
}
