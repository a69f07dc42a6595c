//! A driver model in the style of the Linux drm/accel drivers (ethosu, ivpu, amdxdna, rocket),
//! in user space, with the simulator as the device.
//!
//! Objects: a [`Device`] (shared, `Send + Sync`) runs jobs on one worker thread, highest queue
//! priority first. Each client opens a [`Context`] with its own handle namespace: buffer
//! objects, programs and queues are named by handles that mean nothing in another context, so
//! a context can never reach another's memory. A program is created by **copying** the command
//! stream into driver-owned memory and validating that copy (never the caller's buffer); it is
//! immutable afterwards and cannot be mapped or bound as data. A job is a program plus segment
//! bindings plus input fences; submitting it checks every binding before anything is queued
//! (all or nothing) and returns a [`Fence`].
//!
//! A job that faults fails its own fence with the fault record. A job that runs past its cycle
//! budget is stopped by the watchdog, its fence fails with a timeout, and the device is reset
//! (on-chip memory scrubbed); other jobs carry on. Contexts whose jobs fault or time out
//! [`BAN_AFTER`] times are banned from submitting, as drm-uapi asks of drivers after resets.
//!
//! Time is bounded twice over, as in drm/sched: at submit, a program whose validated run-time
//! bound exceeds its context's cycle limit ([`DeviceOptions::max_job_cycles`], which a context
//! may lower but never raise) is refused, so no job can hold the single queue for long; while
//! running, a wall-clock watchdog ([`DeviceOptions::job_timeout`]) stops a job even inside one
//! long instruction, so a higher-priority job of another context waits at most that long.

use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use accelc_isa::program::EncodedProgram;
use accelc_isa::verify::{
    self, Binding, DEFAULT_MAX_CYCLES, ErrorKind, Limits, Location, Report, VerifyError,
    VerifyErrors,
};
use accelc_isa::{DeviceConfig, Program, Seg};

use crate::sim::{Fault, FaultKind, RunOptions, RunStats, Segment, Segments, Simulator};

/// Live objects of one kind (buffers, programs, queues) a context may hold.
pub const MAX_HANDLES: usize = 1 << 20;
/// Faults or timeouts after which a context may no longer submit.
pub const BAN_AFTER: u32 = 3;
/// Largest buffer object.
pub const MAX_BO_BYTES: u64 = accelc_isa::verify::MAX_BUFFER_BYTES;
/// A job's budget is this multiple of the validator's run-time bound (the bound already holds
/// for every schedule; the margin absorbs future timing-model refinements).
pub const BUDGET_FACTOR: u64 = 2;

/// The watchdog's default wall-clock limit per job. The simulator runs tens of millions of
/// modelled cycles a second, so a job within [`DEFAULT_MAX_CYCLES`] finishes well inside it.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(10);

/// Policy of a device, set by whoever opens it (the administrator, not its clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Largest validated run-time bound (cycles) of a job; every context starts at this limit.
    pub max_job_cycles: u64,
    /// Wall-clock time after which the watchdog stops a running job and resets the device.
    pub job_timeout: Duration,
}

impl Default for DeviceOptions {
    fn default() -> DeviceOptions {
        DeviceOptions { max_job_cycles: DEFAULT_MAX_CYCLES, job_timeout: DEFAULT_JOB_TIMEOUT }
    }
}

/// Errors of driver calls (the ioctl's errno, with the reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverError {
    /// A handle that does not exist in this context (`ENOENT`).
    NoSuchHandle(&'static str, u32),
    /// Invalid arguments (`EINVAL`).
    Invalid(String),
    /// The program failed validation (`EINVAL` with a structured record).
    Rejected(VerifyErrors),
    /// The context is banned after repeated faults or timeouts (`EIO`).
    Banned,
    /// The device has shut down (`ENODEV`).
    Gone,
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::NoSuchHandle(kind, h) => {
                write!(f, "no {kind} with handle {h} in this context")
            }
            DriverError::Invalid(why) => f.write_str(why),
            DriverError::Rejected(e) => write!(f, "program rejected by the validator:\n{e}"),
            DriverError::Banned => {
                f.write_str("context is banned after repeated faults or timeouts")
            }
            DriverError::Gone => f.write_str("device is gone"),
        }
    }
}

impl std::error::Error for DriverError {}

type Result<T> = std::result::Result<T, DriverError>;

/// What [`Device::query`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// ISA version `(major, minor)`.
    pub isa_version: (u16, u16),
    /// The configuration (limits, sizes, features, clock).
    pub config: DeviceConfig,
    /// The configuration's fingerprint.
    pub fingerprint: [u8; 16],
}

/// Counters of a device since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Jobs that completed.
    pub completed: u64,
    /// Jobs that faulted.
    pub faults: u64,
    /// Jobs stopped by the watchdog.
    pub timeouts: u64,
    /// Device resets.
    pub resets: u64,
}

/// Lock, recovering from a poisoned mutex: the data under our locks stays consistent even if
/// a thread panicked while holding one, and a driver must keep serving other clients.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The final state of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Completed: the `end` code and the counters.
    Done(Box<RunStats>),
    /// Stopped by a fault.
    Faulted(Fault),
    /// Stopped by the watchdog; the device was reset.
    TimedOut(Fault),
    /// Not run because an input fence failed.
    Cancelled,
}

#[derive(Debug, Default)]
struct FenceState {
    status: Option<JobStatus>,
    /// Position of the job among all the device's finished jobs.
    order: Option<u64>,
}

/// Completion of a job. Cloneable; waiting never blocks past the given timeout.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    inner: Arc<(Mutex<FenceState>, Condvar)>,
}

impl Fence {
    fn signal(&self, status: JobStatus, order: u64) {
        let (m, cv) = &*self.inner;
        let mut state = lock(m);
        state.status = Some(status);
        state.order = Some(order);
        cv.notify_all();
    }

    /// The job's position among all jobs the device has finished (completed, faulted, timed
    /// out or cancelled), once it has finished: the order the device ran them in.
    pub fn order(&self) -> Option<u64> {
        lock(&self.inner.0).order
    }

    /// The status if the job has finished.
    pub fn status(&self) -> Option<JobStatus> {
        lock(&self.inner.0).status.clone()
    }

    /// Waits up to `timeout` for the job; `None` if it has not finished by then.
    pub fn wait(&self, timeout: Duration) -> Option<JobStatus> {
        let (m, cv) = &*self.inner;
        let guard = lock(m);
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |s| s.status.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        guard.status.clone()
    }
}

/// A buffer object: device-accessible memory owned by one context.
#[derive(Debug)]
struct Bo {
    data: Arc<Mutex<Vec<u8>>>,
    /// The device may only read it (constants); it can never back a written segment.
    read_only: bool,
}

/// A validated program: the driver's private copy and what the validator learned.
#[derive(Debug)]
struct ProgramObj {
    program: Program,
    report: Report,
}

/// Handles of one kind in one context.
#[derive(Debug)]
struct Table<T> {
    next: u32,
    items: HashMap<u32, Arc<T>>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table { next: 1, items: HashMap::new() }
    }
}

impl<T> Table<T> {
    /// Inserts `item` under a fresh handle: the next one after the last handed out that names
    /// nothing live (handles wrap after 2^32 - 1, and must never alias a live object).
    fn insert(&mut self, item: T) -> Result<u32> {
        if self.items.len() >= MAX_HANDLES {
            return Err(DriverError::Invalid(format!(
                "this context already has {MAX_HANDLES} objects of this kind"
            )));
        }
        // At most `items.len()` handles are taken, so this finds a free one within that many
        // steps.
        let mut h = self.next;
        while self.items.contains_key(&h) {
            h = h.wrapping_add(1).max(1);
        }
        self.next = h.wrapping_add(1).max(1);
        self.items.insert(h, Arc::new(item));
        Ok(h)
    }

    fn get(&self, kind: &'static str, h: u32) -> Result<Arc<T>> {
        self.items.get(&h).cloned().ok_or(DriverError::NoSuchHandle(kind, h))
    }
}

/// A buffer object handle (meaningful only in its context).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BoHandle(pub u32);
/// A program handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProgramHandle(pub u32);
/// A queue handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueueHandle(pub u32);

/// A buffer bound to a segment for one job: `size` bytes at `offset` in `bo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentBinding {
    /// The segment.
    pub seg: u8,
    /// The buffer object.
    pub bo: BoHandle,
    /// Byte offset in the buffer object.
    pub offset: u64,
    /// Bytes bound.
    pub size: u64,
}

/// A job to submit.
#[derive(Clone, Debug, Default)]
pub struct Job {
    /// The program.
    pub program: Option<ProgramHandle>,
    /// Segment bindings (each segment at most once).
    pub bindings: Vec<SegmentBinding>,
    /// Fences that must signal success before the job starts.
    pub wait_for: Vec<Fence>,
    /// A cycle budget below the default, for callers with a deadline.
    pub budget_cycles: Option<u64>,
    /// Record a trace event per instruction in the job's counters (for profiling; the
    /// functional result and the cycles are the same either way).
    pub trace: bool,
}

#[derive(Debug, Default)]
struct ContextState {
    bos: Table<Bo>,
    programs: Table<ProgramObj>,
    queues: Table<u8>,
}

#[derive(Debug)]
struct ContextShared {
    id: u64,
    /// Largest run-time bound of a job of this context (only ever lowered).
    cycle_limit: AtomicU64,
    state: Mutex<ContextState>,
    strikes: AtomicU32,
}

/// A checked binding: `size` bytes at `offset` of a buffer, for segment `seg`.
struct Bound {
    seg: usize,
    data: Arc<Mutex<Vec<u8>>>,
    offset: usize,
    size: usize,
    writable: bool,
}

/// A job ready for the worker, with its resolved objects.
struct QueuedJob {
    priority: u8,
    seq: u64,
    ctx: Arc<ContextShared>,
    program: Arc<ProgramObj>,
    bindings: Vec<Bound>,
    wait_for: Vec<Fence>,
    budget: u64,
    trace: bool,
    fence: Fence,
}

impl PartialEq for QueuedJob {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.seq) == (other.priority, other.seq)
    }
}
impl Eq for QueuedJob {}
impl PartialOrd for QueuedJob {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for QueuedJob {
    /// Higher priority first, then submission order.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.priority.cmp(&other.priority).then(other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct Pending {
    jobs: BinaryHeap<QueuedJob>,
    shutdown: bool,
}

struct DeviceShared {
    cfg: DeviceConfig,
    opts: DeviceOptions,
    pending: Mutex<Pending>,
    wake: Condvar,
    seq: AtomicU64,
    /// Jobs finished so far (gives every fence its completion order).
    finished: AtomicU64,
    next_ctx: AtomicU64,
    stats: Mutex<DeviceStats>,
}

/// The device. Cloning shares it; the worker stops when the last clone is dropped.
#[derive(Clone)]
pub struct Device {
    shared: Arc<DeviceShared>,
    _worker: Arc<Worker>,
}

/// Joins the worker thread when the last device clone goes.
struct Worker {
    shared: Arc<DeviceShared>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        lock(&self.shared.pending).shutdown = true;
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.handle).take() {
            let _ = h.join();
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device").field("config", &self.shared.cfg.name).finish()
    }
}

impl Device {
    /// Opens a simulated device with configuration `cfg` and the default policy.
    pub fn open(cfg: DeviceConfig) -> Device {
        Device::open_with(cfg, DeviceOptions::default())
    }

    /// Opens a simulated device with configuration `cfg` and policy `opts`.
    pub fn open_with(cfg: DeviceConfig, opts: DeviceOptions) -> Device {
        let shared = Arc::new(DeviceShared {
            cfg: cfg.clone(),
            opts,
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            seq: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            next_ctx: AtomicU64::new(1),
            stats: Mutex::new(DeviceStats::default()),
        });
        let worker_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("accelc-device".into())
            .spawn(move || worker(&worker_shared, Simulator::new(cfg)))
            .ok();
        let worker = Arc::new(Worker { shared: Arc::clone(&shared), handle: Mutex::new(handle) });
        Device { shared, _worker: worker }
    }

    /// What the device is.
    pub fn query(&self) -> DeviceInfo {
        DeviceInfo {
            isa_version: accelc_isa::ISA_VERSION,
            config: self.shared.cfg.clone(),
            fingerprint: self.shared.cfg.fingerprint(),
        }
    }

    /// Counters since the device was opened.
    pub fn stats(&self) -> DeviceStats {
        *lock(&self.shared.stats)
    }

    /// Opens a client context.
    pub fn open_context(&self) -> Context {
        Context {
            device: self.clone(),
            shared: Arc::new(ContextShared {
                id: self.shared.next_ctx.fetch_add(1, Ordering::Relaxed),
                cycle_limit: AtomicU64::new(self.shared.opts.max_job_cycles),
                state: Mutex::new(ContextState::default()),
                strikes: AtomicU32::new(0),
            }),
        }
    }
}

/// One client's view of the device.
#[derive(Clone)]
pub struct Context {
    device: Device,
    shared: Arc<ContextShared>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("id", &self.shared.id).finish()
    }
}

impl Context {
    fn state(&self) -> MutexGuard<'_, ContextState> {
        lock(&self.shared.state)
    }

    /// Creates a zero-filled buffer object of `size` bytes.
    pub fn create_bo(&self, size: u64, read_only: bool) -> Result<BoHandle> {
        if size == 0 || size > MAX_BO_BYTES {
            return Err(DriverError::Invalid(format!(
                "buffer size {size} is outside 1..={MAX_BO_BYTES}"
            )));
        }
        let data = zeroed(size).map_err(DriverError::Invalid)?;
        let bo = Bo { data: Arc::new(Mutex::new(data)), read_only };
        Ok(BoHandle(self.state().bos.insert(bo)?))
    }

    /// Frees a buffer object (jobs already submitted keep their reference until they finish).
    pub fn free_bo(&self, bo: BoHandle) -> Result<()> {
        self.state()
            .bos
            .items
            .remove(&bo.0)
            .map(|_| ())
            .ok_or(DriverError::NoSuchHandle("buffer", bo.0))
    }

    /// Runs `f` on the CPU view of a buffer object (waits while a running job uses it).
    pub fn map_bo<R>(&self, bo: BoHandle, f: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        let obj = self.state().bos.get("buffer", bo.0)?;
        let mut data = lock(&obj.data);
        Ok(f(&mut data))
    }

    /// Copies `bytes` into a buffer object at `offset`.
    pub fn write_bo(&self, bo: BoHandle, offset: u64, bytes: &[u8]) -> Result<()> {
        self.map_bo(bo, |data| {
            let start = usize::try_from(offset).ok().filter(|o| *o <= data.len());
            match start.and_then(|s| {
                s.checked_add(bytes.len()).filter(|e| *e <= data.len()).map(|e| (s, e))
            }) {
                Some((s, e)) => {
                    data[s..e].copy_from_slice(bytes);
                    Ok(())
                }
                None => Err(DriverError::Invalid(format!(
                    "write of {} bytes at {offset} is outside the {}-byte buffer",
                    bytes.len(),
                    data.len()
                ))),
            }
        })?
    }

    /// Copies `len` bytes out of a buffer object at `offset`.
    pub fn read_bo(&self, bo: BoHandle, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.map_bo(bo, |data| {
            let range = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(len).ok())
                .and_then(|(s, l)| s.checked_add(l).filter(|e| *e <= data.len()).map(|e| s..e));
            range.map(|r| data[r].to_vec()).ok_or_else(|| {
                DriverError::Invalid(format!(
                    "read of {len} bytes at {offset} is outside the {}-byte buffer",
                    data.len()
                ))
            })
        })?
    }

    /// Creates a program: copies the caller's command stream and tables into driver memory,
    /// then validates the copy against this device. Returns the handle and the validator's
    /// report (per-segment extents, run-time bound).
    pub fn create_program(&self, enc: &EncodedProgram) -> Result<(ProgramHandle, Report)> {
        // Copy first, validate the copy: the caller cannot change what was checked.
        let copy = EncodedProgram {
            text: enc.text.clone(),
            dma: enc.dma.clone(),
            shapes: enc.shapes.clone(),
            sem_init: enc.sem_init,
        };
        let limits = Limits { max_cycles: Some(self.cycle_limit()) };
        let (program, report) = verify::verify_encoded(&copy, &self.device.shared.cfg, &limits)
            .map_err(DriverError::Rejected)?;
        let h = self.state().programs.insert(ProgramObj { program, report: report.clone() })?;
        Ok((ProgramHandle(h), report))
    }

    /// Creates a queue; higher `priority` jobs run first.
    pub fn create_queue(&self, priority: u8) -> Result<QueueHandle> {
        Ok(QueueHandle(self.state().queues.insert(priority)?))
    }

    /// The largest run-time bound (cycles) a job of this context may have.
    pub fn cycle_limit(&self) -> u64 {
        self.shared.cycle_limit.load(Ordering::Relaxed)
    }

    /// Lowers this context's cycle limit to `cycles` (a limit is never raised: a client
    /// cannot give itself more of the device than its owner allows). Returns the new limit.
    pub fn lower_cycle_limit(&self, cycles: u64) -> u64 {
        let prev = self.shared.cycle_limit.fetch_min(cycles, Ordering::Relaxed);
        prev.min(cycles)
    }

    /// Faults and timeouts charged to this context.
    pub fn strikes(&self) -> u32 {
        self.shared.strikes.load(Ordering::Relaxed)
    }

    /// Checks a job and queues it; returns its fence. Nothing is queued if any check fails.
    pub fn submit(&self, queue: QueueHandle, job: Job) -> Result<Fence> {
        if self.strikes() >= BAN_AFTER {
            return Err(DriverError::Banned);
        }
        let (priority, program, bindings) = {
            let st = self.state();
            let priority = *st.queues.get("queue", queue.0)?;
            let ph =
                job.program.ok_or_else(|| DriverError::Invalid("job has no program".into()))?;
            let program = st.programs.get("program", ph.0)?;
            let mut table: [Option<Binding>; Seg::COUNT] = [None; Seg::COUNT];
            let mut resolved = Vec::with_capacity(job.bindings.len());
            let mut seen_bos: Vec<u32> = Vec::new();
            for b in &job.bindings {
                let seg = usize::from(b.seg);
                if seg >= Seg::COUNT {
                    return Err(DriverError::Invalid(format!("segment {} does not exist", b.seg)));
                }
                if table[seg].is_some() {
                    return Err(DriverError::Invalid(format!("segment {seg} is bound twice")));
                }
                if seen_bos.contains(&b.bo.0) {
                    return Err(DriverError::Invalid(format!(
                        "buffer {} is bound to two segments",
                        b.bo.0
                    )));
                }
                seen_bos.push(b.bo.0);
                let bo = st.bos.get("buffer", b.bo.0)?;
                let len = lock(&bo.data).len() as u64;
                if b.offset > len || b.size > len - b.offset {
                    return Err(DriverError::Invalid(format!(
                        "binding of segment {seg}: {} bytes at {} lie outside the {len}-byte buffer",
                        b.size, b.offset
                    )));
                }
                table[seg] = Some(Binding { size: b.size, writable: !bo.read_only });
                resolved.push(Bound {
                    seg,
                    data: Arc::clone(&bo.data),
                    offset: b.offset as usize,
                    size: b.size as usize,
                    writable: !bo.read_only,
                });
            }
            verify::check_bindings(&program.report, &table).map_err(DriverError::Rejected)?;
            (priority, program, resolved)
        };
        // The limit may have been lowered since the program was created.
        let limit = self.cycle_limit();
        if program.report.cycle_bound > limit {
            return Err(DriverError::Rejected(VerifyErrors(vec![VerifyError {
                at: Location::Program,
                kind: ErrorKind::CycleLimit { bound: program.report.cycle_bound, limit },
            }])));
        }
        let default_budget =
            program.report.cycle_bound.saturating_mul(BUDGET_FACTOR).clamp(1, limit.max(1));
        let budget = job.budget_cycles.map_or(default_budget, |b| b.min(default_budget));
        let fence = Fence::default();
        let shared = &self.device.shared;
        let queued = QueuedJob {
            priority,
            seq: shared.seq.fetch_add(1, Ordering::Relaxed),
            ctx: Arc::clone(&self.shared),
            program,
            bindings,
            wait_for: job.wait_for,
            budget,
            trace: job.trace,
            fence: fence.clone(),
        };
        let mut pending = lock(&shared.pending);
        if pending.shutdown {
            return Err(DriverError::Gone);
        }
        pending.jobs.push(queued);
        drop(pending);
        shared.wake.notify_all();
        Ok(fence)
    }
}

/// The device's worker: runs one job at a time, highest priority first, among jobs whose input
/// fences have signalled.
fn worker(shared: &DeviceShared, mut sim: Simulator) {
    let mut last_ctx = None;
    loop {
        let job = {
            let mut pending = lock(&shared.pending);
            loop {
                if pending.shutdown {
                    // Fail what is still queued so no fence waits forever.
                    for j in pending.jobs.drain() {
                        j.fence.signal(
                            JobStatus::Cancelled,
                            shared.finished.fetch_add(1, Ordering::Relaxed),
                        );
                    }
                    return;
                }
                if let Some(job) = take_ready(&mut pending.jobs) {
                    break job;
                }
                let (p, _) = shared
                    .wake
                    .wait_timeout(pending, Duration::from_millis(5))
                    .unwrap_or_else(PoisonError::into_inner);
                pending = p;
            }
        };
        if job.wait_for.iter().any(|f| !matches!(f.status(), Some(JobStatus::Done(_)))) {
            job.fence.signal(JobStatus::Cancelled, shared.finished.fetch_add(1, Ordering::Relaxed));
            continue;
        }
        // On-chip memory never carries one client's data into another's job.
        if last_ctx != Some(job.ctx.id) {
            sim.scrub();
            last_ctx = Some(job.ctx.id);
        }
        let status = run_job(&mut sim, &job, Instant::now() + shared.opts.job_timeout);
        let mut stats = lock(&shared.stats);
        match &status {
            JobStatus::Done(_) => stats.completed += 1,
            JobStatus::Faulted(_) => {
                stats.faults += 1;
                job.ctx.strikes.fetch_add(1, Ordering::Relaxed);
            }
            JobStatus::TimedOut(_) => {
                stats.timeouts += 1;
                stats.resets += 1;
                job.ctx.strikes.fetch_add(1, Ordering::Relaxed);
                sim.scrub();
                last_ctx = None;
            }
            JobStatus::Cancelled => {}
        }
        drop(stats);
        job.fence.signal(status, shared.finished.fetch_add(1, Ordering::Relaxed));
    }
}

/// Removes the best job whose input fences have all finished (successfully or not).
fn take_ready(jobs: &mut BinaryHeap<QueuedJob>) -> Option<QueuedJob> {
    let mut waiting = Vec::new();
    let mut found = None;
    while let Some(j) = jobs.pop() {
        if j.wait_for.iter().all(|f| f.status().is_some()) {
            found = Some(j);
            break;
        }
        waiting.push(j);
    }
    jobs.extend(waiting);
    found
}

fn run_job(sim: &mut Simulator, job: &QueuedJob, deadline: Instant) -> JobStatus {
    let mut guards: Vec<(&Bound, MutexGuard<'_, Vec<u8>>)> =
        job.bindings.iter().map(|b| (b, lock(&b.data))).collect();
    let mut segs: Segments<'_> = Default::default();
    for (b, guard) in guards.iter_mut() {
        segs[b.seg] =
            Some(Segment { data: &mut guard[b.offset..b.offset + b.size], writable: b.writable });
    }
    let opts = RunOptions {
        timing: true,
        trace: job.trace,
        max_cycles: Some(job.budget),
        deadline: Some(deadline),
    };
    match sim.run(&job.program.program, &mut segs, opts) {
        Ok(stats) => JobStatus::Done(Box::new(stats)),
        Err(f) if f.kind == FaultKind::Watchdog => JobStatus::TimedOut(f),
        Err(f) => JobStatus::Faulted(f),
    }
}

/// `n` zero bytes, or an error when the host cannot provide them: the allocation is probed
/// first (`try_reserve_exact`), so a request the allocator refuses fails this request instead
/// of aborting the process; the zeroed buffer itself comes from the allocator's zeroed pages,
/// untouched until used.
pub fn zeroed(n: u64) -> std::result::Result<Vec<u8>, String> {
    if n > MAX_BO_BYTES {
        return Err(format!("{n} bytes is more than a buffer may have ({MAX_BO_BYTES})"));
    }
    let n = usize::try_from(n)
        .map_err(|_| format!("{n} bytes do not fit this host's address space"))?;
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(n).map_err(|e| format!("cannot allocate {n} bytes: {e}"))?;
    drop(probe);
    Ok(vec![0; n])
}

#[cfg(test)]
mod tests {
    use super::Table;

    /// After 2^32 - 1 handles the counter wraps; the next handle skips every live one (here 1
    /// and 3) instead of replacing its object.
    #[test]
    fn handles_wrap_onto_free_handles_only() {
        let mut t: Table<&str> = Table::default();
        assert_eq!(t.insert("first").unwrap(), 1);
        t.next = 3;
        assert_eq!(t.insert("third").unwrap(), 3);
        t.next = u32::MAX;
        assert_eq!(t.insert("last").unwrap(), u32::MAX);
        assert_eq!(t.insert("wrapped").unwrap(), 2, "0 is never a handle; 1 is live");
        assert_eq!(t.insert("next").unwrap(), 4, "3 is live");
        assert_eq!(*t.get("x", 1).unwrap(), "first");
        assert_eq!(*t.get("x", 3).unwrap(), "third");
    }
}
