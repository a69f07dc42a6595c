//! The driver model: program creation validates a private copy, submission checks every
//! binding before queueing, contexts cannot name each other's objects, jobs from many threads
//! and contexts run correctly, faults and timeouts fail only their own fence (a timeout resets
//! the device), repeat offenders are banned, and the high-level `Model` API runs blobs.

use std::borrow::Cow;
use std::time::Duration;

use accelc_isa::blob::{
    ACCESS_READ, ACCESS_WRITE, Blob, Direction, IoTensor, SegmentDecl, SegmentRole,
};
use accelc_isa::program::EncodedProgram;
use accelc_isa::verify::ErrorKind;
use accelc_isa::{DeviceConfig, Dtype};
use accelc_runtime::driver::{BoHandle, DriverError, Job, JobStatus, SegmentBinding};
use accelc_runtime::{Context, Device, Model};
use accelc_tests::{Rng, tests_path};

fn encoded(name: &str) -> EncodedProgram {
    let source = std::fs::read_to_string(tests_path(&format!("programs/{name}.s"))).unwrap();
    accelc_isa::asm::assemble(&source).unwrap().encode().unwrap()
}

fn wait(f: &accelc_runtime::Fence) -> JobStatus {
    f.wait(Duration::from_secs(30)).expect("the job finishes")
}

fn bind(seg: u8, bo: BoHandle, size: u64) -> SegmentBinding {
    SegmentBinding { seg, bo, offset: 0, size }
}

fn roundtrip_job(ctx: &Context, data: &[u8]) -> (Job, BoHandle) {
    let (prog, _) = ctx.create_program(&encoded("dma_roundtrip")).unwrap();
    let src = ctx.create_bo(4096, false).unwrap();
    let dst = ctx.create_bo(4096, false).unwrap();
    ctx.write_bo(src, 0, data).unwrap();
    (
        Job {
            program: Some(prog),
            bindings: vec![bind(0, src, 4096), bind(1, dst, 4096)],
            ..Job::default()
        },
        dst,
    )
}

#[test]
fn query_describes_the_device() {
    let dev = Device::open(DeviceConfig::tiny());
    let info = dev.query();
    assert_eq!(info.isa_version, accelc_isa::ISA_VERSION);
    assert_eq!(info.config.array_dim, 8);
    assert_eq!(info.fingerprint, DeviceConfig::tiny().fingerprint());
}

#[test]
fn program_creation_validates_a_private_copy() {
    let dev = Device::open(DeviceConfig::default_npu());
    let ctx = dev.open_context();
    let mut enc = encoded("dma_roundtrip");
    let (prog, report) = ctx.create_program(&enc).unwrap();
    assert_eq!(report.segments[0].read_end, Some(4096));
    // Changing the caller's buffer afterwards changes nothing the driver holds.
    enc.text.iter_mut().for_each(|b| *b = 0xff);
    let data = Rng::new(2).bytes(4096);
    let src = ctx.create_bo(4096, false).unwrap();
    let dst = ctx.create_bo(4096, false).unwrap();
    ctx.write_bo(src, 0, &data).unwrap();
    let job = Job {
        program: Some(prog),
        bindings: vec![bind(0, src, 4096), bind(1, dst, 4096)],
        ..Job::default()
    };
    let q = ctx.create_queue(0).unwrap();
    assert!(matches!(wait(&ctx.submit(q, job).unwrap()), JobStatus::Done(_)));
    assert_eq!(ctx.read_bo(dst, 0, 4096).unwrap(), data);
    // A rejected program reports the validator's errors.
    let bad = EncodedProgram { text: vec![0xff; 16], ..EncodedProgram::default() };
    match ctx.create_program(&bad) {
        Err(DriverError::Rejected(e)) => {
            assert_eq!(e.to_string(), "instruction 0: unknown opcode 0xff")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn submission_checks_every_binding_first() {
    let dev = Device::open(DeviceConfig::default_npu());
    let ctx = dev.open_context();
    let q = ctx.create_queue(0).unwrap();
    let (prog, _) = ctx.create_program(&encoded("dma_roundtrip")).unwrap();
    let big = ctx.create_bo(8192, false).unwrap();
    let out = ctx.create_bo(4096, false).unwrap();
    let small = ctx.create_bo(100, false).unwrap();
    let ro = ctx.create_bo(4096, true).unwrap();
    let extra = ctx.create_bo(64, false).unwrap();
    let job =
        |bindings: Vec<SegmentBinding>| Job { program: Some(prog), bindings, ..Job::default() };
    let rejected = |r: Result<accelc_runtime::Fence, DriverError>| -> Vec<ErrorKind> {
        match r {
            Err(DriverError::Rejected(e)) => e.0.into_iter().map(|e| e.kind).collect(),
            other => panic!("expected a rejection, got {other:?}"),
        }
    };
    let seg = |n| accelc_isa::Seg::new(n).unwrap();
    assert_eq!(
        rejected(ctx.submit(q, job(vec![bind(0, big, 4096)]))),
        vec![ErrorKind::SegmentUnbound { seg: seg(1) }]
    );
    assert_eq!(
        rejected(
            ctx.submit(q, job(vec![bind(0, big, 4096), bind(1, out, 4096), bind(5, extra, 64)]))
        ),
        vec![ErrorKind::SegmentUnused { seg: seg(5) }]
    );
    assert_eq!(
        rejected(ctx.submit(q, job(vec![bind(0, small, 100), bind(1, out, 4096)]))),
        vec![ErrorKind::SegmentTooSmall { seg: seg(0), required: 4096, size: 100 }]
    );
    assert_eq!(
        rejected(ctx.submit(q, job(vec![bind(0, big, 4096), bind(1, ro, 4096)]))),
        vec![ErrorKind::SegmentReadOnly { seg: seg(1) }]
    );
    // Bindings must lie inside their buffer, and neither a segment nor a buffer twice.
    let e = ctx.submit(
        q,
        job(vec![SegmentBinding { seg: 0, bo: big, offset: 8000, size: 4096 }, bind(1, out, 4096)]),
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "binding of segment 0: 4096 bytes at 8000 lie outside the 8192-byte buffer"
    );
    let e = ctx.submit(q, job(vec![bind(0, big, 4096), bind(0, out, 4096)]));
    assert_eq!(e.unwrap_err().to_string(), "segment 0 is bound twice");
    let e = ctx.submit(q, job(vec![bind(0, big, 4096), bind(1, big, 4096)]));
    assert_eq!(e.unwrap_err().to_string(), format!("buffer {} is bound to two segments", big.0));
    // A buffer at an offset is fine.
    let ok = ctx.submit(
        q,
        job(vec![SegmentBinding { seg: 0, bo: big, offset: 4096, size: 4096 }, bind(1, out, 4096)]),
    );
    assert!(matches!(wait(&ok.unwrap()), JobStatus::Done(_)));
}

#[test]
fn contexts_cannot_name_each_others_objects() {
    let dev = Device::open(DeviceConfig::default_npu());
    let a = dev.open_context();
    let b = dev.open_context();
    let secret = a.create_bo(4096, false).unwrap();
    a.write_bo(secret, 0, b"secret").unwrap();
    let (prog_a, _) = a.create_program(&encoded("dma_roundtrip")).unwrap();
    // B has no objects yet: A's handle numbers name nothing in B.
    assert_eq!(b.read_bo(secret, 0, 6), Err(DriverError::NoSuchHandle("buffer", secret.0)));
    let qb = b.create_queue(0).unwrap();
    let job =
        Job { program: Some(prog_a), bindings: vec![bind(0, secret, 4096)], ..Job::default() };
    assert_eq!(b.submit(qb, job).unwrap_err(), DriverError::NoSuchHandle("program", prog_a.0));
    // B's own buffer may get the same number, but it is B's memory, not A's.
    let mine = b.create_bo(4096, false).unwrap();
    assert_eq!(mine.0, secret.0);
    assert_eq!(b.read_bo(mine, 0, 6).unwrap(), vec![0; 6]);
    assert_eq!(a.read_bo(secret, 0, 6).unwrap(), b"secret");
}

#[test]
fn many_threads_and_contexts_run_concurrently() {
    let dev = Device::open(DeviceConfig::default_npu());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let dev = dev.clone();
            s.spawn(move || {
                let ctx = dev.open_context();
                let q = ctx.create_queue((t % 2) as u8).unwrap();
                let mut pending = Vec::new();
                for j in 0..8u64 {
                    let data = Rng::new(t * 100 + j).bytes(4096);
                    let (job, dst) = roundtrip_job(&ctx, &data);
                    pending.push((ctx.submit(q, job).unwrap(), dst, data));
                }
                for (fence, dst, data) in pending {
                    assert!(matches!(wait(&fence), JobStatus::Done(_)));
                    assert_eq!(ctx.read_bo(dst, 0, 4096).unwrap(), data);
                }
            });
        }
    });
    assert_eq!(dev.stats().completed, 32);
}

fn requant_job(ctx: &Context, shift: i32) -> Job {
    let src = ".seg p 0 size=16 role=input\n.seg o 1 size=16 role=output\n.dma d x_bytes=16\n.shape v cols=1\n\
               dma.load desc=d seg=p offset=0 dst=spad:0 signal=s0\n\
               vx.requant per_channel=0 bias=0 dtype=s8 shape=v dst=spad:0x100 src=acc:0 params=spad:0 wait=s0 signal=s1\n\
               dma.store desc=d seg=o offset=0 src=spad:0x100 wait=s1\nend code=0\n";
    let enc = accelc_isa::asm::assemble(src).unwrap().encode().unwrap();
    let (prog, _) = ctx.create_program(&enc).unwrap();
    let params = ctx.create_bo(16, false).unwrap();
    let mut rec = vec![0u8; 16];
    rec[4..8].copy_from_slice(&shift.to_le_bytes());
    rec[14..16].copy_from_slice(&127i16.to_le_bytes());
    ctx.write_bo(params, 0, &rec).unwrap();
    let out = ctx.create_bo(16, false).unwrap();
    Job {
        program: Some(prog),
        bindings: vec![bind(0, params, 16), bind(1, out, 16)],
        ..Job::default()
    }
}

#[test]
fn a_fault_fails_only_its_own_fence() {
    let dev = Device::open(DeviceConfig::default_npu());
    let bad = dev.open_context();
    let good = dev.open_context();
    let (qb, qg) = (bad.create_queue(0).unwrap(), good.create_queue(0).unwrap());
    let f_bad = bad.submit(qb, requant_job(&bad, 40)).unwrap();
    let (job, dst) = roundtrip_job(&good, &[7; 4096]);
    let f_good = good.submit(qg, job).unwrap();
    match wait(&f_bad) {
        JobStatus::Faulted(f) => {
            assert_eq!(f.kind, accelc_runtime::sim::FaultKind::Data);
            assert_eq!((f.inst, f.engine), (1, Some(accelc_isa::Engine::Vx)));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(wait(&f_good), JobStatus::Done(_)));
    assert_eq!(good.read_bo(dst, 0, 4096).unwrap(), vec![7; 4096]);
    assert_eq!(bad.strikes(), 1);
    assert_eq!(dev.stats().faults, 1);
    // A valid record runs.
    assert!(matches!(wait(&bad.submit(qb, requant_job(&bad, -1)).unwrap()), JobStatus::Done(_)));
}

#[test]
fn a_timeout_resets_the_device_and_others_complete() {
    let dev = Device::open(DeviceConfig::default_npu());
    let slow = dev.open_context();
    let other = dev.open_context();
    let q = slow.create_queue(0).unwrap();
    let (job, _) = roundtrip_job(&slow, &[1; 4096]);
    let f = slow.submit(q, Job { budget_cycles: Some(600), ..job }).unwrap();
    let (job, dst) = roundtrip_job(&other, &[9; 4096]);
    let g = other.submit(other.create_queue(0).unwrap(), job).unwrap();
    assert!(matches!(wait(&f), JobStatus::TimedOut(_)));
    assert!(matches!(wait(&g), JobStatus::Done(_)));
    assert_eq!(other.read_bo(dst, 0, 4096).unwrap(), vec![9; 4096]);
    let stats = dev.stats();
    assert_eq!((stats.timeouts, stats.resets), (1, 1));
}

#[test]
fn repeat_offenders_are_banned() {
    let dev = Device::open(DeviceConfig::default_npu());
    let ctx = dev.open_context();
    let q = ctx.create_queue(0).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            wait(&ctx.submit(q, requant_job(&ctx, 99)).unwrap()),
            JobStatus::Faulted(_)
        ));
    }
    assert_eq!(ctx.submit(q, requant_job(&ctx, 0)).unwrap_err(), DriverError::Banned);
    // Other contexts are unaffected.
    let fine = dev.open_context();
    assert!(matches!(
        wait(&fine.submit(fine.create_queue(0).unwrap(), requant_job(&fine, 0)).unwrap()),
        JobStatus::Done(_)
    ));
}

#[test]
fn jobs_wait_for_their_input_fences() {
    let dev = Device::open(DeviceConfig::default_npu());
    let ctx = dev.open_context();
    let q = ctx.create_queue(0).unwrap();
    let failing = ctx.submit(q, requant_job(&ctx, 77)).unwrap();
    let (job, _) = roundtrip_job(&ctx, &[0; 4096]);
    let dependent = ctx.submit(q, Job { wait_for: vec![failing.clone()], ..job }).unwrap();
    assert!(matches!(wait(&failing), JobStatus::Faulted(_)));
    assert_eq!(wait(&dependent), JobStatus::Cancelled);
    let (job, _) = roundtrip_job(&ctx, &[0; 4096]);
    let first = ctx.submit(q, job).unwrap();
    let (job, _) = roundtrip_job(&ctx, &[0; 4096]);
    let second = ctx.submit(q, Job { wait_for: vec![first.clone()], ..job }).unwrap();
    assert!(matches!(wait(&second), JobStatus::Done(_)));
    assert!(matches!(first.status(), Some(JobStatus::Done(_))));
}

/// A blob for `gemm_f32.s`: W as a constant segment initialised from the CONST section, A an
/// input tensor, C an output tensor.
fn gemm_blob(w: &[f32]) -> Vec<u8> {
    let consts: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    let tensor = |name: &str, direction, segment, dims: Vec<u64>| IoTensor {
        name: name.into(),
        direction,
        segment,
        offset: 0,
        dtype: Dtype::F32,
        dims,
        quant: None,
        boolean: false,
    };
    Blob {
        target: DeviceConfig::default_npu().target(),
        segments: vec![
            SegmentDecl {
                id: 0,
                role: SegmentRole::Input,
                access: ACCESS_READ,
                size: 16384,
                init: None,
            },
            SegmentDecl {
                id: 1,
                role: SegmentRole::Const,
                access: ACCESS_READ,
                size: 8192,
                init: Some((0, 8192)),
            },
            SegmentDecl {
                id: 2,
                role: SegmentRole::Output,
                access: ACCESS_WRITE,
                size: 8192,
                init: None,
            },
        ],
        io: vec![
            tensor("a", Direction::Input, 0, vec![64, 64]),
            tensor("c", Direction::Output, 2, vec![64, 32]),
        ],
        program: encoded("gemm_f32"),
        cycle_bound: 0,
        consts: Cow::Owned(consts),
        meta: vec![],
        debug: vec![],
    }
    .to_bytes()
    .unwrap()
}

#[test]
fn model_api_runs_a_blob() {
    let mut rng = Rng::new(9);
    let w: Vec<f32> = (0..64 * 32).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let dir = std::env::temp_dir().join(format!("accelc-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gemm.blob");
    std::fs::write(&path, gemm_blob(&w)).unwrap();
    let model = Model::load(&path).unwrap();
    assert_eq!(model.inputs().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a"]);
    // Two runs with different inputs share the constant weights.
    for seed in [1, 2] {
        let a: Vec<f32> = (0..64 * 64).map(|_| Rng::new(seed).f32_in(-1.0, 1.0)).collect();
        let bytes: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
        let out = model.run(&[&bytes]).unwrap();
        let c: Vec<f32> = out.tensors[0]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        for i in 0..64 {
            for j in 0..32 {
                let mut s = 0.0f32;
                for k in 0..64 {
                    s += a[i * 64 + k] * w[k * 32 + j];
                }
                assert_eq!(c[i * 32 + j].to_bits(), s.to_bits());
            }
        }
        assert_eq!(out.stats.engines[1].macs, 2 * 64 * 32 * 32);
    }
    let e = model.run(&[&[0u8; 3]]).unwrap_err();
    assert_eq!(e.to_string(), "input `a` (f32[64, 64]) is 16384 bytes; 3 given");
    let e = model.run(&[]).unwrap_err();
    assert_eq!(e.to_string(), "the model takes 1 inputs, 0 given");
    // A blob for another device is refused.
    let other = Device::open(DeviceConfig::tiny());
    let bytes = gemm_blob(&w);
    let blob = Blob::read(&bytes).unwrap();
    let e = Model::load_blob(&other, &blob).unwrap_err();
    assert_eq!(e.to_string(), "built for ISA 1.1 on `default`; this device is ISA 1.1 `tiny`");
}

#[test]
fn higher_priority_queues_run_first() {
    let dev = Device::open(DeviceConfig::default_npu());
    let ctx = dev.open_context();
    let (low, high) = (ctx.create_queue(0).unwrap(), ctx.create_queue(5).unwrap());
    // A long job (about 2 G multiply-accumulates) keeps the device busy while the others are
    // queued behind it.
    let mut long = String::from("mx.load_w src=spad:0 k=32 n=32 stride=128 dtype=f32\n");
    for _ in 0..2000 {
        long.push_str("mx.matmul a=spad:0x1000 a_stride=128 c=acc:0 c_stride=128 rows=1000 dtype=f32 accumulate=1\n");
    }
    long.push_str("end code=0\n");
    let (prog, _) =
        ctx.create_program(&accelc_isa::asm::assemble(&long).unwrap().encode().unwrap()).unwrap();
    let busy = ctx.submit(low, Job { program: Some(prog), ..Job::default() }).unwrap();
    let lows: Vec<_> = (0..3)
        .map(|_| {
            let (job, _) = roundtrip_job(&ctx, &[1; 4096]);
            ctx.submit(low, job).unwrap()
        })
        .collect();
    let (job, _) = roundtrip_job(&ctx, &[2; 4096]);
    let urgent = ctx.submit(high, job).unwrap();
    for f in lows.iter().chain([&busy, &urgent]) {
        assert!(matches!(wait(f), JobStatus::Done(_)));
    }
    let order = |f: &accelc_runtime::Fence| f.order().unwrap();
    // The urgent job overtakes every low-priority job queued before it; those keep their order.
    assert!(
        lows.iter().all(|l| order(&urgent) < order(l)),
        "urgent {} vs lows {:?}",
        order(&urgent),
        lows.iter().map(order).collect::<Vec<_>>()
    );
    assert!(order(&lows[0]) < order(&lows[1]) && order(&lows[1]) < order(&lows[2]));
}

/// `../shared/reliability/dma_copy_many.s`: one `dma.copy` of 65535 x 65535 rows of 16 bytes.
fn dma_copy_many() -> EncodedProgram {
    let path = accelc_tests::repo_root().join("../shared/reliability/dma_copy_many.s");
    let source = std::fs::read_to_string(path).unwrap();
    accelc_isa::asm::assemble(&source).unwrap().encode().unwrap()
}

/// A program whose validated bound exceeds the context's cycle limit is refused at creation
/// (and at submit, when the limit was lowered after), with the bound and the limit; a context
/// can lower its limit but never raise it above the device owner's.
#[test]
fn the_cycle_limit_is_enforced_at_submit_and_never_raised() {
    let long = dma_copy_many();
    let dev = Device::open(DeviceConfig::default_npu());
    let ctx = dev.open_context();
    assert_eq!(ctx.cycle_limit(), accelc_isa::verify::DEFAULT_MAX_CYCLES);
    let Err(DriverError::Rejected(e)) = ctx.create_program(&long) else { panic!("accepted") };
    assert!(matches!(e.0[0].kind, ErrorKind::CycleLimit { bound: 1073709058, limit: 268435456 }));
    // Lowered after creation: the submit is refused, nothing runs.
    let (job, _) = roundtrip_job(&ctx, &[1; 4096]);
    let bound = ctx.create_program(&encoded("dma_roundtrip")).unwrap().1.cycle_bound;
    assert_eq!(ctx.lower_cycle_limit(bound - 1), bound - 1);
    assert_eq!(ctx.lower_cycle_limit(u64::MAX), bound - 1, "a limit is never raised");
    let q = ctx.create_queue(0).unwrap();
    let Err(DriverError::Rejected(e)) = ctx.submit(q, job) else { panic!("submitted") };
    assert!(matches!(e.0[0].kind, ErrorKind::CycleLimit { .. }));
    assert_eq!(dev.stats(), Default::default());
}

/// The wall-clock watchdog stops a job inside one long instruction (`dma_copy_many.s`: one
/// `dma.copy` of 65535 x 65535 rows, 20 s of simulation), fails its fence with a timeout and
/// resets the device; another context's job queued behind it then completes, long before the
/// long job could have finished.
#[test]
fn the_watchdog_stops_one_long_instruction_and_others_run() {
    use accelc_runtime::driver::DeviceOptions;
    let long = dma_copy_many();
    let opts = DeviceOptions { max_job_cycles: u64::MAX, job_timeout: Duration::from_millis(200) };
    let dev = Device::open_with(DeviceConfig::default_npu(), opts);
    let (hog, other) = (dev.open_context(), dev.open_context());
    let (prog, report) = hog.create_program(&long).unwrap();
    assert!(report.cycle_bound > 1 << 29);
    let started = std::time::Instant::now();
    let f = hog.submit(hog.create_queue(0).unwrap(), Job { program: Some(prog), ..Job::default() });
    let f = f.unwrap();
    let (job, dst) = roundtrip_job(&other, &[7; 4096]);
    let g = other.submit(other.create_queue(9).unwrap(), job).unwrap();
    let JobStatus::TimedOut(fault) = wait(&f) else { panic!("not stopped") };
    assert!(fault.message.contains("wall-clock"), "{fault}");
    assert!(matches!(wait(&g), JobStatus::Done(_)));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(other.read_bo(dst, 0, 4096).unwrap(), vec![7; 4096]);
    let stats = dev.stats();
    assert_eq!((stats.completed, stats.timeouts, stats.resets), (1, 1, 1));
}

/// The soak in short form (3 s, 3 client threads and a spy): every kind of event happens and
/// nothing is corrupted or leaked. The long form is `cargo run --release -p accelc-bench
/// --bin soak -- SECONDS THREADS`.
#[test]
fn a_short_soak_corrupts_and_leaks_nothing() {
    let r = accelc_tests::soak::soak(Duration::from_secs(3), 3, 1);
    println!("soak: {r}");
    assert_eq!((r.corrupted, r.leaks), (0, 0), "{r}");
    assert!(r.completed > 100 && r.faults > 0 && r.timeouts > r.wall_clock_timeouts, "{r}");
    assert!(r.wall_clock_timeouts > 0, "{r}");
    assert!(r.resets >= r.timeouts && r.refused_over_limit > 0 && r.bans > 0, "{r}");
}
