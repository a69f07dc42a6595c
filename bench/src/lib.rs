//! Benchmark helpers: program generators and a small timing harness that reports medians and
//! ratios against a baseline measured in the same run.

use std::time::{Duration, Instant};

use accelc_isa::asm::assemble;
use accelc_isa::program::Program;

/// A pipelined int8 GEMM over `tiles` 32-row tiles, double-buffered on all four engines (the
/// shape of program the compiler will emit for a large matmul).
pub fn pipeline_source(tiles: usize) -> String {
    let mut s = String::from(
        ".sem in_full 0\n.sem in_free 1 init=2\n.sem w_ready 2\n.sem p_ready 3\n.sem acc_full 4\n\
         .sem acc_free 5 init=2\n.sem out_full 6\n.sem out_free 7 init=2\n.dma tile x_bytes=1024\n\
         .dma params x_bytes=16\n.shape rq cols=32 rows=32 dst_row=32 src0_row=128\n\
         dma.load desc=tile seg=1 offset=0 dst=spad:0 signal=w_ready\n\
         dma.load desc=params seg=1 offset=1024 dst=spad:0x400 signal=p_ready\n\
         mx.load_w src=spad:0 k=32 n=32 stride=32 dtype=s8 wait=w_ready\n\
         nop queue=vx wait=p_ready\n",
    );
    for t in 0..tiles {
        let slot = t % 2;
        let (inp, acc, out) = (0x1000 + 0x400 * slot, 0x1000 * slot, 0x2000 + 0x400 * slot);
        s.push_str(&format!(
            "dma.load desc=tile seg=0 offset={off} dst=spad:{inp:#x} wait=in_free signal=in_full\n\
             mx.matmul a=spad:{inp:#x} a_stride=32 c=acc:{acc:#x} c_stride=128 rows=32 dtype=s8 accumulate=0 wait=in_full,acc_free signal=in_free,acc_full\n\
             vx.requant per_channel=0 bias=0 dtype=s8 shape=rq dst=spad:{out:#x} src=acc:{acc:#x} params=spad:0x400 wait=acc_full,out_free signal=acc_free,out_full\n\
             dma.store desc=tile seg=2 offset={off} src=spad:{out:#x} wait=out_full signal=out_free\n",
            off = t * 1024
        ));
    }
    s.push_str("end code=0\n");
    s
}

/// The pipeline program, assembled.
pub fn pipeline(tiles: usize) -> Program {
    assemble(&pipeline_source(tiles)).expect("the generated pipeline assembles")
}

/// Median wall time of `runs` calls of `f`.
pub fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}
