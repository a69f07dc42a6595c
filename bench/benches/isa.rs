//! ISA tool throughput on a large generated program: decoding is the baseline (the least a
//! driver must do with a command stream); validation, assembly, disassembly and blob I/O are
//! reported as instructions per second and as multiples of the decode time, measured side by
//! side in one run. Run with `cargo bench -p accelc-bench`.

use std::borrow::Cow;

use accelc_bench::{median, pipeline, pipeline_source};
use accelc_isa::blob::Blob;
use accelc_isa::disasm::{Options, disassemble};
use accelc_isa::inst::decode_all;
use accelc_isa::verify::{Limits, verify_encoded};
use accelc_isa::{DeviceConfig, asm};

fn main() {
    let tiles = 50_000;
    let source = pipeline_source(tiles);
    let program = pipeline(tiles);
    let enc = program.encode().unwrap();
    let n = program.insts.len();
    let cfg = DeviceConfig::default_npu();
    let blob = Blob {
        target: cfg.target(),
        segments: vec![],
        io: vec![],
        program: enc.clone(),
        cycle_bound: 0,
        consts: Cow::Owned(vec![0; 1 << 20]),
        meta: vec![],
        debug: vec![],
    };
    let blob_bytes = blob.to_bytes().unwrap();
    let runs = 7;

    let decode = median(runs, || decode_all(&enc.text).unwrap());
    let rows = [
        ("decode (baseline)", decode),
        (
            "validate (decode + all rules + dry runs)",
            median(runs, || verify_encoded(&enc, &cfg, &Limits::default()).unwrap()),
        ),
        ("assemble", median(runs, || asm::assemble(&source).unwrap())),
        ("disassemble", median(runs, || disassemble(&program, Options::default()))),
        ("blob write (+1 MiB constants)", median(runs, || blob.to_bytes().unwrap())),
        ("blob read and check", median(runs, || Blob::read(&blob_bytes).unwrap())),
    ];
    println!("program: {n} instructions ({tiles} pipelined GEMM tiles), median of {runs} runs");
    println!("{:<44} {:>12} {:>16} {:>10}", "step", "time", "instructions/s", "× decode");
    for (name, t) in rows {
        println!(
            "{name:<44} {:>10.2}ms {:>16.3e} {:>10.2}",
            t.as_secs_f64() * 1e3,
            n as f64 / t.as_secs_f64(),
            t.as_secs_f64() / decode.as_secs_f64()
        );
    }
}
