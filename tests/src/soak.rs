//! A concurrency and fault soak of the driver model: threads, each with its own context,
//! submit a mix of jobs to one device for a given time: data round trips whose outputs are
//! checked byte for byte, jobs that fault (an invalid requantisation record), jobs over their
//! cycle budget (stopped by the watchdog, which resets the device), jobs stopped by the
//! wall-clock watchdog inside one long instruction, programs over the context's cycle limit
//! (refused at creation), and a spy context whose jobs read the scratchpad without writing it
//! (any non-zero byte is another client's data). Contexts banned after repeated faults are
//! replaced by fresh ones. The report counts each; a correct driver has no corrupted outputs
//! and no leaks.
//!
//! CI runs a short form (`driver::a_short_soak_corrupts_and_leaks_nothing`); the long form is
//! `cargo run --release -p accelc-bench --bin soak -- SECONDS THREADS`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use accelc_isa::DeviceConfig;
use accelc_isa::program::EncodedProgram;
use accelc_runtime::driver::{
    BoHandle, DeviceOptions, DriverError, ProgramHandle, QueueHandle, SegmentBinding,
};
use accelc_runtime::{Context, Device, Fence, Job, JobStatus};

use crate::Rng;

/// What a soak did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SoakReport {
    /// Jobs submitted.
    pub jobs: u64,
    /// Jobs that completed with the right output.
    pub completed: u64,
    /// Injected faults that faulted, as they must.
    pub faults: u64,
    /// Jobs over their cycle budget or wall-clock limit that the watchdog stopped.
    pub timeouts: u64,
    /// Of those, jobs the wall-clock watchdog stopped inside a long instruction.
    pub wall_clock_timeouts: u64,
    /// Device resets (the driver's count).
    pub resets: u64,
    /// Programs refused for exceeding the context's cycle limit.
    pub refused_over_limit: u64,
    /// Contexts banned after repeated faults (and replaced).
    pub bans: u64,
    /// Jobs whose output differed from what they must produce, or that ended otherwise than
    /// they must (a fault where none was injected, a completion of an injected fault).
    pub corrupted: u64,
    /// Spy jobs that saw another context's bytes in on-chip memory.
    pub leaks: u64,
    /// What the first corrupted job did, when there was one.
    pub first_corruption: Option<String>,
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} jobs: {} completed, {} injected faults, {} timeouts ({} by the wall clock), {} \
             resets, {} refused over the cycle limit, {} bans; {} corrupted, {} leaks",
            self.jobs,
            self.completed,
            self.faults,
            self.timeouts,
            self.wall_clock_timeouts,
            self.resets,
            self.refused_over_limit,
            self.bans,
            self.corrupted,
            self.leaks
        )?;
        if let Some(c) = &self.first_corruption {
            write!(f, " (first: {c})")?;
        }
        Ok(())
    }
}

fn program(src: &str) -> EncodedProgram {
    accelc_isa::asm::assemble(src).expect("soak programs assemble").encode().expect("encode")
}

const ROUNDTRIP: &str = ".dma d x_bytes=4096\n\
    dma.load desc=d seg=0 offset=0 dst=spad:0 signal=s0\n\
    dma.store desc=d seg=1 offset=0 src=spad:0 wait=s0\nend code=0\n";
/// Requantises with the record's shift: 40 is out of range, a data fault.
const REQUANT: &str = ".dma d x_bytes=16\n.shape v cols=1\n\
    dma.load desc=d seg=0 offset=0 dst=spad:0 signal=s0\n\
    vx.requant per_channel=0 bias=0 dtype=s8 shape=v dst=spad:0x100 src=acc:0 params=spad:0 wait=s0 signal=s1\n\
    dma.store desc=d seg=1 offset=0 src=spad:0x100 wait=s1\nend code=0\n";
/// Stores scratchpad bytes it never wrote.
const SPY: &str = ".dma d x_bytes=4096\ndma.store desc=d seg=1 offset=0 src=spad:0\nend code=0\n";
/// One copy of 16 x 65535 x 2000 rows: within the cycle limit, but about half a second of
/// simulation, so a 100 ms wall-clock limit stops it inside the instruction.
const LONG: &str = ".dma d x_bytes=16 y_count=65535 z_count=2000\n\
    dma.copy desc=d src=spad:0 dst=spad:0x100\nend code=0\n";
/// Over the default job limit of 2^28 cycles.
const OVER_LIMIT: &str = ".dma d x_bytes=16 y_count=65535 z_count=65535\n\
    dma.copy desc=d src=spad:0 dst=spad:0x100\nend code=0\n";

fn bind(seg: u8, bo: BoHandle, size: u64) -> SegmentBinding {
    SegmentBinding { seg, bo, offset: 0, size }
}

/// Runs the soak for `duration` with `threads` client threads (plus the spy), on a device
/// whose watchdog stops a job after 100 ms.
pub fn soak(duration: Duration, threads: u64, seed: u64) -> SoakReport {
    let opts = DeviceOptions { job_timeout: Duration::from_millis(100), ..Default::default() };
    let dev = Device::open_with(DeviceConfig::default_npu(), opts);
    let counters: [AtomicU64; 9] = Default::default();
    let first = std::sync::Mutex::new(None::<String>);
    let corrupt = |what: String| {
        // Slot 6: corrupted.
        counters[6].fetch_add(1, Ordering::Relaxed);
        first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(what);
    };
    let add = |i: usize| {
        counters[i].fetch_add(1, Ordering::Relaxed);
    };
    const JOBS: usize = 0;
    const COMPLETED: usize = 1;
    const FAULTS: usize = 2;
    const TIMEOUTS: usize = 3;
    const REFUSED: usize = 4;
    const BANS: usize = 5;
    const LEAKS: usize = 7;
    const WALL: usize = 8;
    let deadline = Instant::now() + duration;
    let wait = |f: &Fence| f.wait(Duration::from_secs(60)).expect("a job ends");
    std::thread::scope(|s| {
        // The spy: only ever stores on-chip memory it never wrote; it must see zeros.
        let dev2 = dev.clone();
        let add = &add;
        s.spawn(move || {
            let ctx = dev2.open_context();
            let q = ctx.create_queue(0).expect("queue");
            let (spy, _) = ctx.create_program(&program(SPY)).expect("spy program");
            let out = ctx.create_bo(4096, false).expect("buffer");
            while Instant::now() < deadline {
                add(JOBS);
                let job = Job {
                    program: Some(spy),
                    bindings: vec![bind(1, out, 4096)],
                    ..Job::default()
                };
                match ctx.submit(q, job).map(|f| wait(&f)) {
                    Ok(JobStatus::Done(_)) => {
                        add(COMPLETED);
                        if ctx.read_bo(out, 0, 4096).expect("read").iter().any(|b| *b != 0) {
                            add(LEAKS);
                        }
                    }
                    other => corrupt(format!("spy job ended {other:?}")),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        for t in 0..threads {
            let dev = dev.clone();
            s.spawn(move || {
                let mut rng = Rng::new(seed.wrapping_mul(1000).wrapping_add(t));
                let mut c = Client::open(&dev, (t % 3) as u8);
                while Instant::now() < deadline {
                    let kind = rng.next_u64() % 16;
                    add(JOBS);
                    // A fault (shift 40), a job over its cycle budget, one stopped by the
                    // wall-clock watchdog, a program over the cycle limit, else a round trip.
                    let result = match kind {
                        0 => c.finish(c.submit(c.requant, 40, None), Expect::Fault),
                        1 => c.finish(c.submit(c.roundtrip, 0, Some(50)), Expect::Timeout),
                        2 if rng.next_u64().is_multiple_of(4) => {
                            let job = Job { program: Some(c.long), ..Job::default() };
                            c.ctx.submit(c.q, job).map(|f| (wait(&f), Expect::Timeout))
                        }
                        3 => {
                            match c.ctx.create_program(&program(OVER_LIMIT)) {
                                Err(DriverError::Rejected(_)) => add(REFUSED),
                                Err(e) => corrupt(format!("over-limit program refused with {e}")),
                                Ok(_) => corrupt("over-limit program created".into()),
                            }
                            continue;
                        }
                        _ => {
                            let data = rng.bytes(4096);
                            c.roundtrip_data(&data).map(|(f, out)| {
                                let st = wait(&f);
                                let got = c.ctx.read_bo(out, 0, 4096).expect("read");
                                let _ = c.ctx.free_bo(out);
                                if matches!(st, JobStatus::Done(_)) && got != data {
                                    corrupt("a round trip's output differs from its input".into());
                                }
                                (st, Expect::Done)
                            })
                        }
                    };
                    match result {
                        Ok((JobStatus::Done(_), Expect::Done)) => add(COMPLETED),
                        Ok((JobStatus::Faulted(_), Expect::Fault)) => add(FAULTS),
                        Ok((JobStatus::TimedOut(f), Expect::Timeout)) => {
                            add(TIMEOUTS);
                            if f.message.contains("wall-clock") {
                                add(WALL);
                            }
                        }
                        Err(DriverError::Banned) => {
                            add(BANS);
                            c = Client::open(&dev, (t % 3) as u8);
                        }
                        Ok((status, expect)) => {
                            corrupt(format!("expected {expect:?}, the job ended {status:?}"))
                        }
                        Err(e) => corrupt(format!("expected {kind}, submit failed: {e}")),
                    }
                }
            });
        }
    });
    let get = |i: usize| counters[i].load(Ordering::Relaxed);
    SoakReport {
        jobs: get(JOBS),
        completed: get(COMPLETED),
        faults: get(FAULTS),
        timeouts: get(TIMEOUTS),
        wall_clock_timeouts: get(WALL),
        resets: dev.stats().resets,
        refused_over_limit: get(REFUSED),
        bans: get(BANS),
        corrupted: get(6),
        leaks: get(LEAKS),
        first_corruption: first.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner),
    }
}

#[derive(Debug)]
enum Expect {
    Done,
    Fault,
    Timeout,
}

/// One client: a context, a queue and its programs, created once.
struct Client {
    ctx: Context,
    q: QueueHandle,
    roundtrip: ProgramHandle,
    requant: ProgramHandle,
    long: ProgramHandle,
}

impl Client {
    fn open(dev: &Device, priority: u8) -> Client {
        let ctx = dev.open_context();
        let q = ctx.create_queue(priority).expect("queue");
        let make = |src: &str| ctx.create_program(&program(src)).expect("program").0;
        let (roundtrip, requant, long) = (make(ROUNDTRIP), make(REQUANT), make(LONG));
        Client { ctx, q, roundtrip, requant, long }
    }

    /// Submits `prog` with segment 0 holding a 16-byte requantisation record of `shift` and
    /// segment 1 a fresh output buffer (returned, for the caller to read and free).
    fn submit(
        &self,
        prog: ProgramHandle,
        shift: i32,
        budget: Option<u64>,
    ) -> Result<(Fence, BoHandle), DriverError> {
        let mut rec = vec![0u8; 4096];
        rec[4..8].copy_from_slice(&shift.to_le_bytes());
        rec[14..16].copy_from_slice(&127i16.to_le_bytes());
        self.run(prog, &rec, budget)
    }

    /// Waits for a submitted job and frees its output buffer.
    fn finish(
        &self,
        submitted: Result<(Fence, BoHandle), DriverError>,
        expect: Expect,
    ) -> Result<(JobStatus, Expect), DriverError> {
        let (fence, out) = submitted?;
        let status = fence.wait(Duration::from_secs(60)).expect("a job ends");
        let _ = self.ctx.free_bo(out);
        Ok((status, expect))
    }

    fn roundtrip_data(&self, data: &[u8]) -> Result<(Fence, BoHandle), DriverError> {
        self.run(self.roundtrip, data, None)
    }

    fn run(
        &self,
        prog: ProgramHandle,
        input: &[u8],
        budget: Option<u64>,
    ) -> Result<(Fence, BoHandle), DriverError> {
        let src = self.ctx.create_bo(4096, false)?;
        self.ctx.write_bo(src, 0, input)?;
        let out = self.ctx.create_bo(4096, false)?;
        let job = Job {
            program: Some(prog),
            bindings: vec![bind(0, src, 4096), bind(1, out, 4096)],
            budget_cycles: budget,
            ..Job::default()
        };
        let fence = self.ctx.submit(self.q, job);
        // Objects may go once submitted: the job holds its own references.
        let _ = self.ctx.free_bo(src);
        if fence.is_err() {
            let _ = self.ctx.free_bo(out);
        }
        Ok((fence?, out))
    }
}
