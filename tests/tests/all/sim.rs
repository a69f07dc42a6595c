//! The simulator against independent computations: hand-written programs from
//! `tests/programs/` run on random data and are compared with plain Rust reference code
//! (bit-exact for integers and for the specified float order), timing is checked against the
//! analytic model, results must not depend on timing, and programs the validator would reject
//! fault cleanly instead of panicking.

use accelc_isa::DeviceConfig;
use accelc_runtime::sim::{RunOptions, RunStats};
use accelc_tests::{Rng, run_program, run_source};

fn opts() -> RunOptions {
    RunOptions { timing: true, trace: true, max_cycles: None, deadline: None }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn dma_round_trip() {
    let data = Rng::new(1).bytes(4096);
    let run =
        run_program("dma_roundtrip", &DeviceConfig::default_npu(), &[(0, data.clone())], opts())
            .unwrap();
    assert_eq!(run.segments[1].as_deref(), Some(&data[..]));
}

/// TFLite's requantisation written independently of the simulator: the doubling high multiply
/// rounds half up, the power-of-two division rounds half away from zero.
fn requant_ref(acc: i32, m: i32, shift: i32, zp: i32, lo: i32, hi: i32) -> i8 {
    let left = shift.max(0);
    let right = (-shift).max(0);
    let a = (i128::from(acc) << left).clamp(i32::MIN.into(), i32::MAX.into());
    let p = if a == i128::from(i32::MIN) && m == i32::MIN {
        i128::from(i32::MAX)
    } else {
        (2 * a * i128::from(m) + (1i128 << 31)).div_euclid(1i128 << 32)
    };
    let q = if right == 0 { p } else { p.signum() * ((p.abs() + (1i128 << (right - 1))) >> right) };
    (q + i128::from(zp)).clamp(lo.into(), hi.into()) as i8
}

#[test]
fn tiled_int8_gemm_with_requantization() {
    let mut rng = Rng::new(7);
    let a: Vec<i8> = rng.bytes(128 * 32).into_iter().map(|b| b as i8).collect();
    let w: Vec<i8> = rng.bytes(32 * 32).into_iter().map(|b| b as i8).collect();
    let (m, shift, zp, lo, hi) = (1_518_500_250i32, -12i32, -3i32, -100i16, 120i16);
    let mut wseg: Vec<u8> = w.iter().map(|x| *x as u8).collect();
    for v in [m, shift, zp] {
        wseg.extend_from_slice(&v.to_le_bytes());
    }
    wseg.extend_from_slice(&lo.to_le_bytes());
    wseg.extend_from_slice(&hi.to_le_bytes());
    let aseg: Vec<u8> = a.iter().map(|x| *x as u8).collect();
    let run = run_program(
        "gemm_i8_pipeline",
        &DeviceConfig::default_npu(),
        &[(0, aseg), (1, wseg)],
        opts(),
    )
    .unwrap();
    let c = run.segments[2].as_ref().unwrap();
    let mut saturated = 0;
    for i in 0..128 {
        for j in 0..32 {
            let acc: i32 =
                (0..32).map(|k| i32::from(a[i * 32 + k]) * i32::from(w[k * 32 + j])).sum();
            let want = requant_ref(acc, m, shift, zp, lo.into(), hi.into());
            assert_eq!(c[i * 32 + j] as i8, want, "C[{i}][{j}] from acc {acc}");
            saturated += usize::from(want == lo as i8 || want == hi as i8);
        }
    }
    // The data exercises rounding, not just the clamp.
    assert!(saturated < 128 * 32 / 10, "{saturated} outputs saturated");
}

/// `vx.requant bias=1`: 20-byte records whose `s32` bias is added, with saturation, before the
/// multiply; checked per column against [`requant_ref`], including sums that saturate.
#[test]
fn requantization_with_per_channel_bias() {
    let (rows, cols) = (8usize, 4usize);
    let recs: [(i32, i32, i32, i16, i16, i32); 4] = [
        (1_518_500_250, -12, -3, -100, 120, 1_000),
        (1_073_741_824, -20, 5, -128, 127, -2_000_000_000),
        (2_147_483_647, -31, 0, -128, 127, i32::MAX),
        (1_900_000_000, -7, 10, 0, 127, -40_000),
    ];
    let mut seg = Vec::new();
    for (m, sh, zp, lo, hi, b) in recs {
        for v in [m, sh, zp] {
            seg.extend_from_slice(&v.to_le_bytes());
        }
        seg.extend_from_slice(&lo.to_le_bytes());
        seg.extend_from_slice(&hi.to_le_bytes());
        seg.extend_from_slice(&b.to_le_bytes());
    }
    let mut rng = Rng::new(11);
    let mut acc: Vec<i32> = rng
        .bytes(rows * cols * 4)
        .chunks(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) >> 8)
        .collect();
    // Sums past both ends of s32.
    acc[2] = i32::MAX - 5;
    acc[5] = i32::MIN + 7;
    for v in &acc {
        seg.extend_from_slice(&v.to_le_bytes());
    }
    let src = format!(
        ".seg p 0 size={} role=input\n.seg o 1 size={} role=output\n\
         .dma r x_bytes=80\n.dma x x_bytes={}\n.dma y x_bytes={}\n\
         .shape v cols={cols} rows={rows} dst_row={cols} src0_row={}\n\
         dma.load desc=r seg=p offset=0 dst=spad:0 signal=s0\n\
         dma.load desc=x seg=p offset=80 dst=acc:0 signal=s0\n\
         sem.wait queue=vx sem=s0 count=1\n\
         vx.requant per_channel=1 bias=1 dtype=s8 shape=v dst=spad:0x200 src=acc:0 params=spad:0 wait=s0 signal=s1\n\
         dma.store desc=y seg=o offset=0 src=spad:0x200 wait=s1\nend code=0\n",
        seg.len(),
        rows * cols,
        rows * cols * 4,
        rows * cols,
        cols * 4,
    );
    let run = run_source(&src, &DeviceConfig::default_npu(), &[(0, seg)], opts(), true).unwrap();
    let out = run.segments[1].as_ref().unwrap();
    for (i, &a) in acc.iter().enumerate() {
        let (m, sh, zp, lo, hi, b) = recs[i % cols];
        let x = a.saturating_add(b);
        assert_eq!(out[i] as i8, requant_ref(x, m, sh, zp, lo.into(), hi.into()), "element {i}");
    }
}

#[test]
fn f32_gemm_in_the_specified_order() {
    let mut rng = Rng::new(3);
    let a: Vec<f32> = (0..64 * 64).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let w: Vec<f32> = (0..64 * 32).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let run = run_program(
        "gemm_f32",
        &DeviceConfig::default_npu(),
        &[(0, f32_bytes(&a)), (1, f32_bytes(&w))],
        opts(),
    )
    .unwrap();
    let c = f32s(run.segments[2].as_ref().unwrap());
    for i in 0..64 {
        for j in 0..32 {
            let mut s = 0.0f32;
            let mut exact = 0.0f64;
            for k in 0..64 {
                s += a[i * 64 + k] * w[k * 32 + j];
                exact += f64::from(a[i * 64 + k]) * f64::from(w[k * 32 + j]);
            }
            assert_eq!(c[i * 32 + j].to_bits(), s.to_bits(), "C[{i}][{j}]");
            assert!((f64::from(s) - exact).abs() < 1e-4);
        }
    }
}

fn fmax(a: f32, b: f32) -> f32 {
    if a > b || (a == b && b.is_sign_negative()) { a } else { b }
}

#[test]
fn vector_engine_ops() {
    let mut rng = Rng::new(11);
    let x: Vec<f32> = (0..8 * 32).map(|_| rng.f32_in(-4.0, 4.0)).collect();
    let b: Vec<f32> = (0..32).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let table = rng.bytes(256);
    let mut bt = f32_bytes(&b);
    bt.extend_from_slice(&table);
    let run = run_program(
        "vector_ops",
        &DeviceConfig::default_npu(),
        &[(0, f32_bytes(&x)), (2, bt)],
        opts(),
    )
    .unwrap();
    let y = f32s(run.segments[1].as_ref().unwrap());
    let z = f32s(run.segments[3].as_ref().unwrap());
    let t = f32s(run.segments[4].as_ref().unwrap());
    let q = run.segments[5].as_ref().unwrap();
    for r in 0..8 {
        let row = &x[r * 32..r * 32 + 32];
        let m = row[1..].iter().fold(row[0], |acc, v| fmax(acc, *v));
        let e: Vec<f32> = row.iter().map(|v| libm::expf(v - m)).collect();
        let sum = e[1..].iter().fold(e[0], |acc, v| acc + v);
        let inv = 1.0 / sum;
        for c in 0..32 {
            assert_eq!(y[r * 32 + c].to_bits(), (e[c] * inv).to_bits(), "softmax[{r}][{c}]");
            let relu = if row[c] > 0.0 { row[c] } else { 0.0 };
            assert_eq!(z[r * 32 + c].to_bits(), (relu + b[c]).to_bits(), "relu+b[{r}][{c}]");
            assert_eq!(t[c * 8 + r].to_bits(), row[c].to_bits(), "transpose[{c}][{r}]");
            let qi = (row[c] * 16.0).round_ties_even().clamp(-128.0, 127.0) as i8;
            assert_eq!(q[r * 32 + c], table[qi as u8 as usize], "lut[{r}][{c}]");
        }
        let total: f32 = (0..32).map(|c| y[r * 32 + c]).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }
}

/// Segment contents to bind before a run.
type Inputs = Vec<(usize, Vec<u8>)>;

fn all_programs() -> Vec<(&'static str, Inputs)> {
    let mut rng = Rng::new(5);
    vec![
        ("dma_roundtrip", vec![(0, rng.bytes(4096))]),
        ("gemm_i8_pipeline", vec![(0, rng.bytes(4096)), (1, rng.bytes(1024))]),
        (
            "gemm_f32",
            vec![(0, f32_bytes(&(0..4096).map(|_| rng.f32_in(-1.0, 1.0)).collect::<Vec<_>>()))],
        ),
        (
            "vector_ops",
            vec![(0, f32_bytes(&(0..256).map(|_| rng.f32_in(-4.0, 4.0)).collect::<Vec<_>>()))],
        ),
    ]
}

#[test]
fn results_do_not_depend_on_timing_and_stay_within_the_bound() {
    for cfg in [DeviceConfig::default_npu()] {
        for (name, inputs) in all_programs() {
            let timed = run_program(name, &cfg, &inputs, opts()).unwrap();
            let untimed =
                run_program(name, &cfg, &inputs, RunOptions { timing: false, ..opts() }).unwrap();
            assert_eq!(timed.segments, untimed.segments, "{name}");
            assert!(
                timed.stats.cycles <= timed.bound,
                "{name}: {} cycles, bound {}",
                timed.stats.cycles,
                timed.bound
            );
            // Running with the bound as the watchdog budget never trips it.
            let budgeted = run_program(
                name,
                &cfg,
                &inputs,
                RunOptions { max_cycles: Some(timed.bound), ..opts() },
            );
            assert!(budgeted.is_ok(), "{name}: {:?}", budgeted.err());
        }
    }
}

fn single(source: &str, cfg: &DeviceConfig) -> RunStats {
    run_source(source, cfg, &[], opts(), true).unwrap().stats
}

#[test]
fn dma_time_is_latency_plus_bytes_over_bandwidth() {
    let cfg = DeviceConfig::default_npu();
    for n in [64u64, 4096, 65536] {
        let src = format!(
            ".seg s 0 size={n} role=input\n.dma d x_bytes={n}\ndma.load desc=d seg=s offset=0 dst=spad:0\nend code=0\n"
        );
        let stats = single(&src, &cfg);
        // 8 GB/s at 1 GHz is 8 bytes per cycle; `end` takes the last cycle.
        assert_eq!(stats.cycles, 500 + n / 8 + 1, "{n} bytes");
        assert_eq!(stats.engines[0].busy, n / 8);
    }
    // A 65-byte run occupies two 64-byte bursts.
    let src = ".seg s 0 size=65 role=input\n.dma d x_bytes=65\ndma.load desc=d seg=s offset=0 dst=spad:0\nend code=0\n";
    assert_eq!(single(src, &cfg).cycles, 500 + 128 / 8 + 1);
}

#[test]
fn matmul_time_is_rows_times_rate_plus_fill_and_drain() {
    let cfg = DeviceConfig::default_npu();
    for (dtype, rate) in [("s8", 1u64), ("bf16", 4), ("f32", 16)] {
        for rows in [1u64, 32, 1000] {
            let src = format!(
                "mx.load_w src=spad:0 k=32 n=32 stride=128 dtype={dtype}\n\
                 mx.matmul a=spad:0x1000 a_stride=128 c=acc:0 c_stride=128 rows={rows} dtype={dtype} accumulate=0\nend code=0\n"
            );
            let stats = single(&src, &cfg);
            assert_eq!(stats.engines[1].busy, 32 + rows * rate + 64, "{dtype} x {rows} rows");
            assert_eq!(stats.engines[1].macs, rows * 32 * 32);
            assert_eq!(stats.cycles, 32 + rows * rate + 64 + 1);
        }
    }
}

#[test]
fn pipelined_program_overlaps_dma_and_compute() {
    let cfg = DeviceConfig::default_npu();
    let inputs = &all_programs()[1].1;
    let run = run_program("gemm_i8_pipeline", &cfg, inputs, opts()).unwrap();
    let events = &run.stats.trace;
    let overlaps = |a: accelc_isa::Engine, b: accelc_isa::Engine| {
        events.iter().filter(|x| x.engine == Some(a)).any(|x| {
            events
                .iter()
                .filter(|y| y.engine == Some(b))
                .any(|y| x.start < y.end && y.start < x.end)
        })
    };
    use accelc_isa::Engine::{Ld, Mx, St, Vx};
    assert!(overlaps(Ld, Mx), "loads overlap matrix work");
    assert!(overlaps(Mx, Vx) || overlaps(Vx, St), "compute overlaps the next stage");
    assert!(overlaps(St, Ld), "stores overlap loads");
    // Overlap shows in the totals too: far fewer cycles than the serialised sum.
    assert!(
        run.stats.cycles * 2 < run.bound,
        "{} cycles vs serial {}",
        run.stats.cycles,
        run.bound
    );
    let json = accelc_runtime::sim::trace::chrome_json(events, cfg.clock_hz);
    assert!(json.contains("\"name\":\"mx.matmul\"") && json.contains("\"tid\":1"));
}

fn fault_of(source: &str, inputs: &[(usize, Vec<u8>)], max_cycles: Option<u64>) -> String {
    let opts = RunOptions { max_cycles, ..opts() };
    run_source(source, &DeviceConfig::default_npu(), inputs, opts, false)
        .err()
        .expect("the program faults")
}

#[test]
fn what_the_validator_rejects_faults_cleanly_on_the_device() {
    let f = fault_of(
        ".seg s 0 size=512 role=input\n.dma d x_bytes=512\ndma.load desc=d seg=s offset=0 dst=spad:0xfff00\nend code=0\n",
        &[],
        None,
    );
    assert_eq!(
        f,
        "LocalRange fault at instruction 0 on the ld engine: operand `dst` at spad:0xfff00 reaches past the 1048576-byte spad"
    );
    let f = fault_of(
        ".seg s 0 size=100 role=input\n.dma d x_bytes=4096\ndma.load desc=d seg=s offset=0 dst=spad:0\nend code=0\n",
        &[],
        None,
    );
    assert_eq!(
        f,
        "SegmentRange fault at instruction 0 on the ld engine, segment 0, offset 0x0: transfer of extent 0x1000 at 0x0 reaches past the 100-byte segment"
    );
    let f = fault_of(
        ".seg s 3 size=64 role=const\n.dma d x_bytes=64\ndma.store desc=d seg=s offset=0 src=spad:0\nend code=0\n",
        &[],
        None,
    );
    assert!(f.starts_with("ReadOnly fault at instruction 0 on the st engine, segment 3"), "{f}");
    let deadlock =
        std::fs::read_to_string(accelc_tests::tests_path("fixtures/verify/err_deadlock.s"))
            .unwrap();
    let f = fault_of(&format!(".seg s 0 size=1024 role=input\n{deadlock}"), &[], None);
    assert!(f.starts_with("Deadlock fault"), "{f}");
    assert!(
        f.contains("mx queue at instruction 2 waiting for 1 token(s) on s5, which holds 0"),
        "{f}"
    );
    let overflow =
        std::fs::read_to_string(accelc_tests::tests_path("fixtures/verify/err_sem_overflow.s"))
            .unwrap();
    assert!(fault_of(&overflow, &[], None).starts_with("SemOverflow fault at instruction 1"));
    // A requantisation record with shift 40.
    let src = ".seg p 0 size=16 role=input\n.dma d x_bytes=16\n.shape v cols=1\n\
               dma.load desc=d seg=p offset=0 dst=spad:0 signal=s0\n\
               vx.requant per_channel=0 bias=0 dtype=s8 shape=v dst=spad:0x100 src=acc:0 params=spad:0 wait=s0\nend code=0\n";
    let mut rec = vec![0u8; 16];
    rec[4] = 40;
    assert!(
        fault_of(src, &[(0, rec)], None)
            .starts_with("Data fault at instruction 1 on the vx engine")
    );
    // The watchdog stops a job that runs past its budget.
    let long = "mx.load_w src=spad:0 k=32 n=32 stride=32 dtype=s8\nmx.matmul a=spad:0 a_stride=0 c=acc:0 c_stride=0 rows=4000 dtype=s8 accumulate=1\nend code=0\n";
    assert!(
        fault_of(long, &[], Some(1000))
            .starts_with("Watchdog fault at instruction 1 on the mx engine")
    );
}

mod fuzz {
    use accelc_isa::inst::Inst;
    use accelc_isa::program::{DmaDesc, Program, Shape};
    use accelc_runtime::sim::{RunOptions, Segment, Segments, Simulator};
    use proptest::prelude::*;

    use crate::roundtrip::any_inst;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Unvalidated programs of valid instructions with random tables never panic the device:
        /// every run completes or faults.
        #[test]
        fn random_programs_never_panic(
            words in proptest::collection::vec(any_inst(), 1..12),
            dma in proptest::collection::vec((1u32..300, 1u16..4, 1u16..4, 0u64..600, 0u64..600, 0u32..300, 0u32..300), 0..3),
            shapes in proptest::collection::vec((1u16..40, 1u16..4, 1u16..3, 0u16..4, any::<[u16; 6]>()), 0..3),
            sem_init in any::<[u8; 16]>(),
        ) {
            let mut insts: Vec<Inst> = words.iter().map(|w| Inst::from_word(*w).unwrap()).collect();
            // Small addresses, so many instructions touch real memory instead of faulting at once.
            for inst in &mut insts {
                let mut w = inst.to_word().unwrap();
                w &= !(0xfff_f000u128 << 32) & !(0xfff_f000u128 << 56) & !(0xfff_f000u128 << 80) & !(0xfff_f000u128 << 104);
                if let Ok(small) = Inst::from_word(w) {
                    *inst = small;
                }
            }
            let program = Program {
                insts,
                dma: dma.iter().map(|&(x, y, z, ys, zs, ny, nz)| DmaDesc { x_bytes: x, y_count: y, z_count: z, y_stride: ys, z_stride: zs, near_y_pitch: ny, near_z_pitch: nz }).collect(),
                shapes: shapes.iter().map(|&(c, r, p, f, s)| Shape { cols: c, rows: r, planes: p, flags: f, dst_row: s[0].into(), src0_row: s[1].into(), src1_row: s[2].into(), dst_plane: s[3].into(), src0_plane: s[4].into(), src1_plane: s[5].into() }).collect(),
                sem_init,
            };
            let mut bufs: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8; 4096]).collect();
            let mut segs: Segments<'_> = Default::default();
            for (i, (slot, b)) in segs.iter_mut().zip(bufs.iter_mut()).enumerate() {
                *slot = Some(Segment { data: b, writable: i % 3 != 0 });
            }
            let mut sim = Simulator::new(accelc_isa::DeviceConfig::tiny());
            for timing in [true, false] {
                let _ = sim.run(&program, &mut segs, RunOptions { timing, trace: false, max_cycles: Some(1_000_000), deadline: None });
            }
        }
    }
}

mod fast_paths {
    use accelc_isa::DeviceConfig;
    use accelc_runtime::sim::RunOptions;
    use accelc_tests::run_source_paths;
    use proptest::prelude::*;

    // Weighted towards what compiled programs run most (f32 and the int8 path's types).
    const DTYPES: &[&str] = &["s8", "u8", "s16", "s32", "bf16", "f32", "f32", "s32", "s8", "f32"];
    const BIN: &[&str] = &[
        "add", "sub", "mul", "mac", "div", "max", "min", "pow", "and", "or", "xor", "shl", "shr",
        "add", "mac", "max", "mul", "sub", "sub",
    ];
    const UN: &[&str] = &[
        "mov", "relu", "abs", "neg", "exp", "log", "sqrt", "rsqrt", "recip", "tanh", "sigmoid",
        "erf", "floor", "ceil", "round",
    ];

    /// One random vector instruction over a random shape: `(text, shape line)`.
    fn vx_inst(i: usize, pick: &[u32; 12]) -> (String, String) {
        let p = |j: usize, n: usize| pick[j] as usize % n;
        // Higher bits of the same word, independent of `p`'s choice.
        let q = |j: usize, n: usize| (pick[j] >> 20) as usize % n;
        // Mostly short rows; a quarter past the fast paths' 64-element blocks.
        let cols = if q(0, 4) == 0 { 1 + (pick[0] as usize >> 8) % 200 } else { 1 + p(0, 40) };
        let rows = 1 + p(1, 4);
        let planes = 1 + p(2, 3);
        // Row strides from 0 (broadcast) to past the row; plane strides chosen separately
        // (contiguous, interleaved with the rows, or broadcast). Either source may broadcast
        // its columns.
        let st = |j: usize| [0, 4, 16, cols * 2, cols * 4, 160][p(j, 6)];
        let pst = |j: usize| [st(j) * rows, st(j) * rows + 64, 8, 0][q(j + 3, 4)];
        // A quarter of the time src0 is the destination itself (same address and walk), the
        // in-place form compiled code uses most.
        let in_place = q(11, 4) == 0;
        let (s0row, s0plane) = if in_place { (st(5), pst(5)) } else { (st(6), pst(6)) };
        let shape = format!(
            ".shape v{i} cols={cols} rows={rows} planes={planes} src0_col_bcast={} src1_col_bcast={} dst_row={} src0_row={} src1_row={} dst_plane={} src0_plane={} src1_plane={}",
            u32::from(!in_place && p(3, 5) == 0),
            u32::from(p(4, 4) == 0),
            st(5),
            s0row,
            st(7),
            pst(5),
            s0plane,
            pst(7)
        );
        // Both memories with any stride; one address in 16 near the end of its memory, so
        // range faults (and their src0, src1, dst order) occur too.
        // Half the time each operand has a region of its own (dst, src0, src1 20 KiB apart),
        // which the in-place fast paths need; otherwise all start in the first 2 KiB and
        // overlap freely.
        let apart = (pick[8] >> 8).is_multiple_of(2);
        let mem = |j: usize| {
            let j = if in_place && j == 6 { 5 } else { j };
            let acc = q(j, 3) == 0;
            let size = if acc { 256 << 10 } else { 1 << 20 };
            let off = if q(j + 1, 16) == 0 {
                size - 1 - (pick[j] as usize >> 4) % 512
            } else {
                (pick[j] as usize >> 4) % 2048 + if apart { (j - 5) * 20480 } else { 0 }
            };
            format!("{}:{off}", if acc { "acc" } else { "spad" })
        };
        let dt = DTYPES[p(9, DTYPES.len())];
        let dt2 = DTYPES[p(10, DTYPES.len())];
        let text = match p(11, 6) {
            0 | 1 => format!(
                "vx.binary op={} dtype={dt} shape=v{i} dst={} src0={} src1={}",
                BIN[(pick[11] as usize >> 3) % BIN.len()],
                mem(5),
                mem(6),
                mem(7)
            ),
            2 => format!(
                "vx.unary op={} dtype={dt} shape=v{i} dst={} src={} out_dtype={dt2}",
                UN[(pick[11] as usize >> 3) % UN.len()],
                mem(5),
                mem(6)
            ),
            3 => format!(
                "vx.reduce op={} axis={} dtype={dt} shape=v{i} dst={} src={} out_dtype={dt2}",
                ["sum", "max", "min"][(pick[11] as usize >> 3) % 3],
                ["rows", "cols"][(pick[11] as usize >> 5) % 2],
                mem(5),
                mem(6)
            ),
            // Records from the valid ones the test writes at spad:3072 (one in eight from
            // random bytes, whose shifts are mostly out of range: a data fault).
            4 => format!(
                "vx.requant per_channel={} bias=0 dtype={dt} shape=v{i} dst={} src={} params={}",
                (pick[11] >> 3) % 2,
                mem(5),
                mem(6),
                if q(7, 8) == 0 { mem(7) } else { format!("spad:{}", 3072 + 16 * p(7, 32)) }
            ),
            _ => {
                if (pick[11] >> 3).is_multiple_of(2) {
                    format!(
                        "vx.lut dtype={dt} shape=v{i} dst={} src={} table={}",
                        mem(5),
                        mem(6),
                        mem(7)
                    )
                } else {
                    format!("vx.transpose dtype={dt} shape=v{i} dst={} src={}", mem(5), mem(6))
                }
            }
        };
        (text, shape)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// The vector engine's fast paths and its element-by-element reference paths are the
        /// same machine: random vector programs over random data (all dtypes and operations,
        /// contiguous, strided, broadcast and overlapping operands, both memories) leave every
        /// byte of the scratchpad and the accumulator, and any fault, identical.
        #[test]
        fn fast_and_reference_paths_agree(
            spad in proptest::collection::vec(any::<u8>(), 65536),
            acc in proptest::collection::vec(any::<u8>(), 65536),
            insts in proptest::collection::vec(any::<[u32; 12]>(), 1..6),
        ) {
            let mut shapes = String::new();
            let mut body = String::new();
            for (i, pick) in insts.iter().enumerate() {
                let (text, shape) = vx_inst(i, pick);
                shapes.push_str(&shape);
                shapes.push('\n');
                body.push_str(&text);
                body.push('\n');
            }
            // The programs run unvalidated, so faults are part of what must agree.
            let src = format!(
                ".seg a 0 size=65536 role=input\n.seg b 1 size=65536 role=input\n\
                 .seg o 2 size=65536 role=output\n.seg q 3 size=65536 role=output\n\
                 .dma d x_bytes=65536\n{shapes}\
                 dma.load desc=d seg=a offset=0 dst=spad:0\n\
                 dma.load desc=d seg=b offset=0 dst=acc:0\n\
                 barrier\n{body}barrier\n\
                 dma.store desc=d seg=o offset=0 src=spad:0\n\
                 dma.store desc=d seg=q offset=0 src=acc:0\n\
                 end code=0\n"
            );
            let opts = RunOptions { timing: false, trace: false, max_cycles: None, deadline: None };
            let cfg = DeviceConfig::default_npu();
            // One 4-byte word in eight a special float: NaNs with either sign and any
            // payload, infinities, zeros of both signs, subnormals.
            let special = |m: &mut Vec<u8>| {
                for w in m.chunks_exact_mut(4) {
                    if w[0] % 8 == 0 {
                        let bits: u32 = match w[1] % 6 {
                            0 => 0x7f80_0000 | u32::from(w[2]) << 8 | 1,
                            1 => 0xff80_0000 | u32::from(w[2]) << 12 | 0x40_0000,
                            2 => 0x7f80_0000 | u32::from(w[3] & 0x80) << 24,
                            3 => u32::from(w[2] & 0x80) << 24,
                            4 => u32::from(w[2]) | u32::from(w[3] & 0x80) << 24,
                            _ => 0x7fc0_0000,
                        };
                        w.copy_from_slice(&bits.to_le_bytes());
                    }
                }
            };
            let (mut spad, mut acc) = (spad, acc);
            special(&mut spad);
            special(&mut acc);
            // Valid requantisation records at 3072..4096: shift (the i32 at byte 4) in -31..=30.
            for r in spad[3072..4096].chunks_exact_mut(16) {
                let shift = i32::from(r[4] % 62) - 31;
                r[4..8].copy_from_slice(&shift.to_le_bytes());
            }
            let inputs = [(0usize, spad), (1usize, acc)];
            let fast = run_source_paths(&src, &cfg, &inputs, opts, false, false);
            let slow = run_source_paths(&src, &cfg, &inputs, opts, false, true);
            prop_assert_eq!(fast.as_ref().map(|r| &r.segments), slow.as_ref().map(|r| &r.segments), "{}", src);
        }
    }

    /// The generator above mostly makes instructions that run rather than fault, so the
    /// comparison exercises the data paths and not only fault reporting.
    #[test]
    fn generated_programs_mostly_run() {
        let mut ran = 0;
        let mut rng = accelc_tests::Rng::new(7);
        for _ in 0..200 {
            let pick: [u32; 12] = std::array::from_fn(|_| rng.next_u64() as u32);
            let (text, shape) = vx_inst(0, &pick);
            let src = format!(
                ".seg a 0 size=4096 role=input\n.dma d x_bytes=4096\n{shape}\n\
                 dma.load desc=d seg=a offset=0 dst=spad:0\nbarrier\n{text}\nend code=0\n"
            );
            let data: Vec<u8> = (0..4096).map(|i| (i * 7 % 251) as u8).collect();
            let opts = RunOptions { timing: false, trace: false, max_cycles: None, deadline: None };
            let cfg = DeviceConfig::default_npu();
            if run_source_paths(&src, &cfg, &[(0, data)], opts, false, false).is_ok() {
                ran += 1;
            }
        }
        // Many random combinations are illegal (bitwise ops on floats, shapes past memory);
        // a generator where almost nothing runs would test nothing.
        assert!(ran >= 40, "only {ran} of 200 generated vector instructions ran");
    }
}

mod timing_independence {
    use accelc_isa::DeviceConfig;
    use accelc_runtime::sim::RunOptions;
    use accelc_tests::run_program;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Functional results are the same with the timing model on and off, for any data.
        #[test]
        fn outputs_do_not_depend_on_timing(a in proptest::collection::vec(any::<u8>(), 4096), w in proptest::collection::vec(any::<u8>(), 1040), tiny in any::<bool>()) {
            let cfg = if tiny { DeviceConfig::tiny() } else { DeviceConfig::default_npu() };
            let mut w = w;
            // A valid requantisation record: shift in range.
            w[1028] %= 31;
            w[1029..1032].fill(0);
            let inputs = [(0usize, a), (1usize, w)];
            let name = if tiny { "dma_roundtrip" } else { "gemm_i8_pipeline" };
            let inputs = if tiny { vec![inputs[0].clone()] } else { inputs.to_vec() };
            let on = run_program(name, &cfg, &inputs, RunOptions { timing: true, trace: false, max_cycles: None, deadline: None });
            let off = run_program(name, &cfg, &inputs, RunOptions { timing: false, trace: false, max_cycles: None, deadline: None });
            prop_assert_eq!(on.map(|r| r.segments), off.map(|r| r.segments));
        }
    }
}

/// The validator and the device agree: every random program the validator accepts runs on the
/// simulator, with buffers exactly as large as the validator's extents, to completion without
/// a fault and within the validator's cycle bound.
#[test]
fn accepted_programs_never_fault_and_meet_their_bound() {
    use accelc_isa::inst::{End, Inst, OPS, RouteInfo};
    use accelc_isa::program::{DmaDesc, Program, Shape};
    use accelc_isa::verify::{Limits, verify};
    use accelc_isa::{FieldKind, Sync};

    let cfg = DeviceConfig::tiny();
    let mut rng = Rng::new(99);
    let (mut accepted, mut tried, mut executed_insts) = (0, 0, 0u64);
    while accepted < 300 && tried < 200_000 {
        tried += 1;
        let n = 1 + (rng.next_u64() % 6) as usize;
        let mut insts = Vec::new();
        for _ in 0..n {
            let info = &OPS[(rng.next_u64() as usize) % OPS.len()];
            if info.route == RouteInfo::Front {
                continue;
            }
            // Small field values, so that operands often fit the tiny device.
            let mut word = u128::from(info.opcode);
            for f in info.fields {
                let r = rng.next_u64();
                let raw = match f.kind {
                    FieldKind::Enum(names) => r % names.len() as u64,
                    FieldKind::Local => (r & (1 << 23)) | (r % 4096),
                    FieldKind::Sem | FieldKind::Seg => r % 4,
                    FieldKind::DmaDesc | FieldKind::Shape => r % 3,
                    FieldKind::Bool => r % 2,
                    FieldKind::Uint => r % 9,
                };
                word |= u128::from(raw) << f.lo;
            }
            let Ok(mut inst) = Inst::from_word(word) else { continue };
            inst.sync = Sync::NONE;
            insts.push(inst);
        }
        insts.push(Inst::new(End { code: 0 }));
        let dma = (0..3)
            .map(|_| DmaDesc {
                x_bytes: 1 + (rng.next_u64() % 256) as u32,
                y_count: 1 + (rng.next_u64() % 3) as u16,
                z_count: 1 + (rng.next_u64() % 2) as u16,
                y_stride: rng.next_u64() % 512,
                z_stride: rng.next_u64() % 1024,
                near_y_pitch: (rng.next_u64() % 512) as u32,
                near_z_pitch: (rng.next_u64() % 1024) as u32,
            })
            .collect();
        let shapes = (0..3)
            .map(|_| {
                let s = |rng: &mut Rng| (rng.next_u64() % 256) as u32;
                Shape {
                    cols: 1 + (rng.next_u64() % 16) as u16,
                    rows: 1 + (rng.next_u64() % 4) as u16,
                    planes: 1 + (rng.next_u64() % 2) as u16,
                    flags: (rng.next_u64() % 4) as u16,
                    dst_row: s(&mut rng),
                    src0_row: s(&mut rng),
                    src1_row: s(&mut rng),
                    dst_plane: s(&mut rng),
                    src0_plane: s(&mut rng),
                    src1_plane: s(&mut rng),
                }
            })
            .collect();
        let program = Program { insts, dma, shapes, sem_init: [0; 16] };
        let Ok(report) = verify(&program, &cfg, &Limits::default()) else { continue };
        accepted += 1;
        executed_insts += program.insts.len() as u64;
        // Buffers exactly as large as the validator says, filled with data that keeps
        // requantisation records valid (all zero).
        let stats = accelc_tests::fuzz::run_within_extents(&program, &report, &cfg);
        assert!(
            stats.is_ok(),
            "accepted program faulted: {:?}\n{}",
            stats.err(),
            accelc_isa::disasm::disassemble(&program, Default::default())
        );
        assert!(stats.unwrap().cycles <= report.cycle_bound);
    }
    assert!(accepted >= 300, "only {accepted} of {tried} random programs were accepted");
    assert!(executed_insts > 900);
}

#[test]
fn traces_show_markers_and_barriers_when_they_happen() {
    let src = ".seg s 0 size=4096 role=input\n.dma d x_bytes=4096\n\
               marker queue=ld id=7\n\
               dma.load desc=d seg=s offset=0 dst=spad:0\n\
               barrier\n\
               marker queue=vx id=8\n\
               end code=0\n";
    let stats = run_source(src, &DeviceConfig::default_npu(), &[], opts(), true).unwrap().stats;
    let ev = |m: &str| stats.trace.iter().filter(|e| e.mnemonic == m).cloned().collect::<Vec<_>>();
    let markers = ev("marker");
    assert_eq!(markers.iter().map(|e| e.marker).collect::<Vec<_>>(), [Some(7), Some(8)]);
    let load = &ev("dma.load")[0];
    let barrier = &ev("barrier")[0];
    // The barrier completes when the load does, and the second marker runs after it.
    assert_eq!(barrier.start, load.end);
    assert!(markers[1].start >= barrier.start);
    assert_eq!(ev("end")[0].end, stats.cycles);
    let json = accelc_runtime::sim::trace::chrome_json(&stats.trace, 1_000_000_000);
    assert!(json.contains("\"marker\":7") && json.contains("\"marker\":8"));
}

/// `vx.binary mac` is `mul` then `add`, bit for bit, in every type (rounded or saturated
/// product first, then the sum), on random operands including saturating ones.
#[test]
fn multiply_accumulate_is_mul_then_add() {
    let mut rng = Rng::new(29);
    for (dtype, size) in [("s8", 1), ("u8", 1), ("s16", 2), ("s32", 4), ("bf16", 2), ("f32", 4)] {
        let cols = 256 / size;
        let source = format!(
            ".seg in 0 size=768 role=input\n.seg mac 1 size=256 role=output\n\
             .seg ref 2 size=256 role=output\n.sem loaded 0\n.sem done 1\n\
             .dma all x_bytes=768\n.dma one x_bytes=256\n.shape v cols={cols}\n\
             dma.load desc=all seg=in offset=0 dst=spad:0x0\n\
             dma.load desc=one seg=in offset=0 dst=spad:0x400 signal=loaded\n\
             vx.binary op=mac dtype={dtype} shape=v dst=spad:0x0 src0=spad:0x100 src1=spad:0x200 wait=loaded\n\
             vx.binary op=mul dtype={dtype} shape=v dst=spad:0x500 src0=spad:0x100 src1=spad:0x200\n\
             vx.binary op=add dtype={dtype} shape=v dst=spad:0x400 src0=spad:0x400 src1=spad:0x500 signal=done\n\
             dma.store desc=one seg=mac offset=0 src=spad:0x0 wait=done\n\
             dma.store desc=one seg=ref offset=0 src=spad:0x400\nend code=0\n"
        );
        let mut data = rng.bytes(768);
        if dtype.ends_with("f16") || dtype == "f32" {
            // Finite floats (random bits make NaNs, whose payloads both paths keep anyway).
            let v: Vec<f32> = (0..768 / size).map(|_| rng.f32_in(-300.0, 300.0)).collect();
            data = if size == 4 {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            } else {
                v.iter().flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes()).collect()
            };
        }
        if !(dtype.ends_with("f16") || dtype == "f32") {
            // Half the products small enough not to saturate, half (mostly) saturating.
            for region in [256, 512] {
                for i in 0..cols / 2 {
                    let e = &mut data[region + i * size..region + (i + 1) * size];
                    e[0] &= if size == 1 { 0x0f } else { 0xff };
                    e[1..].fill(0);
                }
            }
        }
        let run = run_source(&source, &DeviceConfig::default_npu(), &[(0, data)], opts(), true)
            .unwrap_or_else(|e| panic!("{dtype}: {e}"));
        let (mac, reference) = (run.segments[1].as_ref(), run.segments[2].as_ref());
        assert_eq!(mac, reference, "{dtype}: mac differs from mul then add");
        let distinct: std::collections::BTreeSet<&u8> = mac.unwrap().iter().collect();
        assert!(distinct.len() > 16, "{dtype}: results span only {} byte values", distinct.len());
    }
}
