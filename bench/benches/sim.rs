//! Simulator speed on matmul-heavy programs: simulated multiply-accumulates per second of wall
//! time for int8 and f32, next to a plain f32 GEMM of the same shape and MAC count through
//! ndarray (matrixmultiply's kernels), measured side by side in one run. The target is a ratio
//! of at least 0.5: the functional model is the device every test runs on.
//! Run with `cargo bench -p accelc-bench --bench sim`.

use accelc_bench::median;
use accelc_isa::inst::{End, Inst, MxLoadW, MxMatmul};
use accelc_isa::{DeviceConfig, Dtype, LocalAddr, Program};
use accelc_runtime::sim::{RunOptions, Simulator};
use ndarray::Array2;

const ROWS: u16 = 2000;
const REPEATS: usize = 50;
const K: usize = 32;
const N: usize = 32;

/// `mx.load_w` then `REPEATS` matmuls of `ROWS` rows, accumulating: all matrix-engine work.
fn matmul_program(dtype: Dtype) -> Program {
    let es = dtype.size();
    let a_stride = (K as u32 * es) as u16;
    let w_at = u32::from(ROWS) * u32::from(a_stride);
    let mut insts = vec![Inst::new(MxLoadW {
        src: LocalAddr::spad(w_at),
        k: K as u8,
        n: N as u8,
        stride: (N as u32 * es) as u16,
        dtype,
    })];
    for r in 0..REPEATS {
        insts.push(Inst::new(MxMatmul {
            a: LocalAddr::spad(0),
            a_stride,
            c: LocalAddr::acc(0),
            c_stride: (N * 4) as u16,
            rows: ROWS,
            dtype,
            accumulate: r > 0,
        }));
    }
    insts.push(Inst::new(End { code: 0 }));
    Program { insts, ..Program::default() }
}

fn main() {
    let cfg = DeviceConfig::default_npu();
    let macs = (REPEATS * usize::from(ROWS) * K * N) as f64;
    let runs = 5;

    let a = Array2::<f32>::from_shape_fn((usize::from(ROWS), K), |(i, j)| {
        ((i * 7 + j * 3) % 11) as f32 - 5.0
    });
    let w = Array2::<f32>::from_shape_fn((K, N), |(i, j)| ((i * 5 + j) % 13) as f32 - 6.0);
    let baseline = median(runs, || {
        let mut c = Array2::<f32>::zeros((usize::from(ROWS), N));
        for _ in 0..REPEATS {
            c += &a.dot(&w);
        }
        c
    });
    let base_rate = macs / baseline.as_secs_f64();
    println!(
        "matmul-heavy programs: {REPEATS} x mx.matmul of {ROWS} rows through a {K}x{N} weight tile ({macs:.3e} MACs), median of {runs}"
    );
    println!("{:<42} {:>10} {:>14} {:>12}", "", "time", "MAC/s", "vs baseline");
    println!(
        "{:<42} {:>8.2}ms {:>14.3e} {:>12.2}",
        "ndarray f32 GEMM, same shapes (baseline)",
        baseline.as_secs_f64() * 1e3,
        base_rate,
        1.0
    );
    for dtype in [Dtype::S8, Dtype::F32] {
        let program = matmul_program(dtype);
        let mut sim = Simulator::new(cfg.clone());
        for timing in [true, false] {
            let t = median(runs, || {
                let mut segs = Default::default();
                sim.run(
                    &program,
                    &mut segs,
                    RunOptions { timing, trace: false, max_cycles: None, deadline: None },
                )
                .unwrap()
            });
            let rate = macs / t.as_secs_f64();
            let label = format!("simulator, {dtype}, timing {}", if timing { "on" } else { "off" });
            println!(
                "{label:<42} {:>8.2}ms {:>14.3e} {:>12.2}",
                t.as_secs_f64() * 1e3,
                rate,
                rate / base_rate
            );
        }
    }
}
