//! The device simulator: a bit-exact functional model of every instruction and a
//! cycle-approximate, event-driven timing model of the four engine queues.
//!
//! Each instruction executes atomically when it starts. That is exact for programs whose
//! semaphores order every producer before its consumers (what the validator's discipline and
//! the compiler guarantee): no engine can observe another's half-finished instruction. The
//! timing model decides when instructions start: queues run concurrently, blocked by their
//! semaphores and by barriers; DMA engines keep up to [`DMA_OUTSTANDING`] transfers in flight
//! and share one DRAM bus; the matrix and vector engines take the cycles of `accelc_isa::cost`.
//! With timing off every instruction takes one cycle; the functional results are the same.
//!
//! Anything the validator should have caught (an operand outside its memory, a DMA past its
//! segment, a write to a read-only segment, a deadlock, a semaphore overflow, an illegal type
//! combination) faults cleanly as a [`Fault`] value: the simulator never panics on a program.

mod exec;
mod kernels;
pub(crate) mod numerics;
pub mod trace;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Instant;

use accelc_isa::cost::{dram_data_cycles, op_cycles};
use accelc_isa::inst::{Inst, Op, Route};
use accelc_isa::{DeviceConfig, Dtype, Engine, Program, Seg, Sem};

/// Transfers each DMA engine keeps in flight.
pub const DMA_OUTSTANDING: usize = 4;

/// A DRAM buffer bound to a segment for one run.
#[derive(Debug)]
pub struct Segment<'a> {
    /// The bytes.
    pub data: &'a mut [u8],
    /// Whether the program may write it.
    pub writable: bool,
}

/// The buffers bound to the sixteen segments.
pub type Segments<'a> = [Option<Segment<'a>>; Seg::COUNT];

/// How to run.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Model time (otherwise every instruction takes one cycle).
    pub timing: bool,
    /// Record a trace event per instruction.
    pub trace: bool,
    /// Stop the job with a watchdog fault past this many cycles.
    pub max_cycles: Option<u64>,
    /// Stop the job with a watchdog fault past this wall-clock instant: checked before every
    /// instruction and, inside a long DMA, every [`WATCHDOG_ROWS`] rows, so one instruction
    /// cannot hold the device far past it.
    pub deadline: Option<Instant>,
}

/// Rows a DMA moves between two looks at the wall-clock deadline (a row is at most 64 KiB, so
/// this is at most a few milliseconds of copying).
pub const WATCHDOG_ROWS: usize = 4096;

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions { timing: true, trace: false, max_cycles: None, deadline: None }
    }
}

/// The fault of a job stopped at its wall-clock deadline while instruction `inst` ran.
pub(crate) fn past_deadline(inst: usize) -> Fault {
    Fault {
        kind: FaultKind::Watchdog,
        engine: None,
        inst,
        seg: None,
        offset: None,
        message: "the job ran past its wall-clock deadline".into(),
    }
}

/// What stopped a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// An instruction the device does not execute (unknown table index, unsupported type
    /// combination, missing weights).
    Illegal,
    /// A local operand outside its memory or in the wrong one.
    LocalRange,
    /// A DMA outside its segment's buffer, or on an unbound segment.
    SegmentRange,
    /// A write to a read-only segment.
    ReadOnly,
    /// A semaphore signalled past 255.
    SemOverflow,
    /// Invalid data (a requantisation shift out of range).
    Data,
    /// No queue can make progress.
    Deadlock,
    /// The job ran past its cycle budget.
    Watchdog,
}

/// A fault record: what, where, and the segment and offset when a DMA was involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// The engine, when one was executing.
    pub engine: Option<Engine>,
    /// Instruction index.
    pub inst: usize,
    /// Segment, for DMA faults.
    pub seg: Option<u8>,
    /// Byte offset in the segment, for DMA faults.
    pub offset: Option<u64>,
    /// Details.
    pub message: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} fault at instruction {}", self.kind, self.inst)?;
        if let Some(e) = self.engine {
            write!(f, " on the {e} engine")?;
        }
        if let Some(s) = self.seg {
            write!(f, ", segment {s}")?;
        }
        if let Some(o) = self.offset {
            write!(f, ", offset {o:#x}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Fault {}

/// Counters of one engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Instructions executed.
    pub insts: u64,
    /// Cycles spent executing (for DMA engines: cycles their data occupied the DRAM bus or the
    /// on-chip copy path).
    pub busy: u64,
    /// Cycles the head instruction waited for semaphore tokens.
    pub stall_sem: u64,
    /// Cycles the head instruction waited behind a barrier.
    pub stall_barrier: u64,
    /// Cycles the head instruction waited for a free DMA slot.
    pub stall_dma_slots: u64,
    /// Bytes moved (DMA) or read and written (vector).
    pub bytes: u64,
    /// Multiply-accumulates (matrix engine).
    pub macs: u64,
}

/// One executed instruction, for traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// The engine (`None` for the front-end).
    pub engine: Option<Engine>,
    /// Instruction index.
    pub inst: usize,
    /// Its mnemonic.
    pub mnemonic: &'static str,
    /// Start cycle.
    pub start: u64,
    /// End cycle.
    pub end: u64,
    /// The id of a `marker` instruction.
    pub marker: Option<u32>,
}

/// The result of a completed job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Cycles from start to `end`.
    pub cycles: u64,
    /// The `end` instruction's code.
    pub end_code: u16,
    /// Counters per engine, in `Engine` order.
    pub engines: [EngineStats; 4],
    /// Trace events, when requested.
    pub trace: Vec<TraceEvent>,
}

/// Weights held by the matrix array.
#[derive(Clone, Debug)]
pub(crate) enum Weights {
    /// `s8` weights, as pairs of 16-bit values (`kernels::pair_weights`).
    Int { k: usize, n: usize, w: Vec<i32> },
    /// `bf16` or `f32` weights, widened to f32.
    Float { k: usize, n: usize, dtype: Dtype, w: Vec<f32> },
}

/// The device: configuration and on-chip state.
#[derive(Debug)]
pub struct Simulator {
    cfg: DeviceConfig,
    spad: Vec<u8>,
    acc: Vec<u8>,
    weights: Option<Weights>,
    /// Run the vector engine through the element-by-element reference paths instead of the
    /// per-dtype fast paths (for the test that compares the two byte for byte).
    reference_paths: bool,
}

/// What executing one instruction did, for the counters.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Work {
    pub(crate) bytes: u64,
    pub(crate) macs: u64,
}

impl Simulator {
    /// A device with zeroed memories.
    pub fn new(cfg: DeviceConfig) -> Simulator {
        let spad = vec![0; cfg.spad_bytes as usize];
        let acc = vec![0; cfg.acc_bytes as usize];
        Simulator { cfg, spad, acc, weights: None, reference_paths: false }
    }

    /// Selects the vector engine's element-by-element reference paths (`true`) or its
    /// per-dtype fast paths for contiguous, strided and broadcast runs (`false`, the default).
    /// Both are bit-exact implementations of the same instructions; a property test runs
    /// random programs through both and compares every byte of memory.
    pub fn set_reference_paths(&mut self, on: bool) {
        self.reference_paths = on;
    }

    /// The configuration.
    pub fn config(&self) -> &DeviceConfig {
        &self.cfg
    }

    /// Clears all on-chip state (between contexts, and on reset), so no data leaks between
    /// clients through on-chip memory.
    pub fn scrub(&mut self) {
        self.spad.fill(0);
        self.acc.fill(0);
        self.weights = None;
    }

    /// Runs `program` to its `end` with `segs` bound.
    pub fn run(
        &mut self,
        program: &Program,
        segs: &mut Segments<'_>,
        opts: RunOptions,
    ) -> Result<RunStats, Fault> {
        let mut s = Schedule::new(program, opts);
        let result = s.run(self, program, segs);
        // Matrix weights and semaphores are job-local: the next job starts clean.
        self.weights = None;
        result
    }
}

/// The event-driven scheduler for one job.
struct Schedule {
    opts: RunOptions,
    /// Instruction indices per engine queue.
    queues: [Vec<usize>; 4],
    pos: [usize; 4],
    /// Cycle at which each engine can start its next instruction.
    free_at: [u64; 4],
    /// Completion times of each DMA engine's transfers in flight.
    in_flight: [Vec<u64>; 4],
    /// Completion time of each queue's latest instruction.
    last_done: [u64; 4],
    /// Epoch (front-end instructions before it) of each instruction.
    epoch: Vec<usize>,
    /// Queued instructions of each epoch not yet complete.
    remaining: Vec<usize>,
    /// The first epoch with unfinished queued instructions (counts only fall, so it only
    /// advances).
    open: usize,
    /// Instructions started.
    starts: u32,
    /// Cycles of the instructions started since the clock was last read.
    unclocked: u64,
    /// Front-end instruction indices, in order.
    front: Vec<usize>,
    /// Front-end instructions already in the trace.
    front_traced: usize,
    sems: [u32; Sem::COUNT],
    /// Pending completions: (time, instruction).
    events: BinaryHeap<Reverse<(u64, usize)>>,
    dram_free: u64,
    now: u64,
    stats: RunStats,
}

impl Schedule {
    fn new(program: &Program, opts: RunOptions) -> Schedule {
        let mut queues: [Vec<usize>; 4] = Default::default();
        let mut epoch = Vec::with_capacity(program.insts.len());
        let mut front = Vec::new();
        let mut remaining = vec![0usize];
        for (i, inst) in program.insts.iter().enumerate() {
            epoch.push(front.len());
            match inst.op.route() {
                Route::Front => {
                    front.push(i);
                    remaining.push(0);
                }
                Route::Engine(e) => {
                    queues[e as usize].push(i);
                    if let Some(r) = remaining.last_mut() {
                        *r += 1;
                    }
                }
            }
        }
        Schedule {
            opts,
            queues,
            pos: [0; 4],
            free_at: [0; 4],
            in_flight: Default::default(),
            last_done: [0; 4],
            epoch,
            open: remaining.iter().position(|r| *r > 0).unwrap_or(remaining.len()),
            remaining,
            starts: 0,
            unclocked: 0,
            front,
            front_traced: 0,
            sems: program.sem_init.map(u32::from),
            events: BinaryHeap::new(),
            dram_free: 0,
            now: 0,
            stats: RunStats::default(),
        }
    }

    /// The first epoch with unfinished queued instructions.
    fn open_epoch(&self) -> usize {
        self.open
    }

    fn head(&self, e: usize) -> Option<usize> {
        self.queues[e].get(self.pos[e]).copied()
    }

    /// Why engine `e` cannot start its head now, or `None` if it can.
    fn blocked(&self, e: usize, program: &Program) -> Option<Block> {
        let i = self.head(e)?;
        if self.epoch[i] > self.open_epoch() {
            return Some(Block::Barrier);
        }
        if self.free_at[e] > self.now {
            return Some(Block::Busy);
        }
        if self.in_flight[e].len() >= DMA_OUTSTANDING {
            return Some(Block::Slots);
        }
        let needs = token_needs(&program.insts[i]);
        if needs.iter().any(|(s, n)| self.sems[s] < n) {
            return Some(Block::Sem);
        }
        None
    }

    fn run(
        &mut self,
        sim: &mut Simulator,
        program: &Program,
        segs: &mut Segments<'_>,
    ) -> Result<RunStats, Fault> {
        loop {
            for e in 0..4 {
                while self.head(e).is_some() && self.blocked(e, program).is_none() {
                    self.start(e, sim, program, segs)?;
                }
            }
            let all_started = (0..4).all(|e| self.head(e).is_none());
            if all_started && self.events.is_empty() {
                break;
            }
            // Advance to the next moment anything can change.
            let next_event = self.events.peek().map(|Reverse((t, _))| *t);
            let next_free = (0..4)
                .filter(|e| self.head(*e).is_some() && self.free_at[*e] > self.now)
                .map(|e| self.free_at[e])
                .min();
            let Some(next) = [next_event, next_free].into_iter().flatten().min() else {
                return Err(self.deadlock(program));
            };
            self.account_stalls(program, next);
            self.now = next;
            if let Some(limit) = self.opts.max_cycles
                && self.now > limit
            {
                return Err(Fault {
                    kind: FaultKind::Watchdog,
                    engine: None,
                    inst: self
                        .head((0..4).find(|e| self.head(*e).is_some()).unwrap_or(0))
                        .unwrap_or(0),
                    seg: None,
                    offset: None,
                    message: format!("the job ran past its budget of {limit} cycles"),
                });
            }
            while let Some(Reverse((t, i))) = self.events.peek().copied() {
                if t > self.now {
                    break;
                }
                self.events.pop();
                self.complete(i, program)?;
            }
        }
        // The front-end's `end` completes once every queue is drained.
        let end = self.front.last().copied().unwrap_or(0);
        let end_code = match program.insts.get(end).map(|i| i.op) {
            Some(Op::End(it)) => it.code,
            _ => 0,
        };
        let finish = self.now.saturating_add(1);
        if self.opts.trace {
            // Barriers whose epoch had no queued instructions complete here, with `end`.
            for &b in &self.front[self.front_traced..] {
                self.stats.trace.push(TraceEvent {
                    engine: None,
                    inst: b,
                    mnemonic: program.insts[b].op.mnemonic(),
                    start: self.now,
                    end: finish,
                    marker: None,
                });
            }
        }
        self.stats.cycles = finish;
        self.stats.end_code = end_code;
        Ok(std::mem::take(&mut self.stats))
    }

    fn account_stalls(&mut self, program: &Program, until: u64) {
        let dt = until - self.now;
        for e in 0..4 {
            let block = self.blocked(e, program);
            let slot = &mut self.stats.engines[e];
            match block {
                Some(Block::Sem) => slot.stall_sem += dt,
                Some(Block::Barrier) => slot.stall_barrier += dt,
                Some(Block::Slots) => slot.stall_dma_slots += dt,
                Some(Block::Busy) | None => {}
            }
        }
    }

    fn start(
        &mut self,
        e: usize,
        sim: &mut Simulator,
        program: &Program,
        segs: &mut Segments<'_>,
    ) -> Result<(), Fault> {
        let i = self.head(e).unwrap_or(0);
        let inst = &program.insts[i];
        // The watchdog stops a job before it starts work that cannot finish in its budget, so
        // an enormous instruction never runs.
        let cost = op_cycles(&inst.op, &program.dma, &program.shapes, &sim.cfg).unwrap_or(0);
        if let Some(limit) = self.opts.max_cycles
            && self.now.saturating_add(cost) > limit
        {
            return Err(Fault {
                kind: FaultKind::Watchdog,
                engine: Some(Engine::ALL[e]),
                inst: i,
                seg: None,
                offset: None,
                message: format!("the job would run past its budget of {limit} cycles"),
            });
        }
        // The clock is read every 16th instruction, or sooner once the instructions since the
        // last reading add up to 2^16 cycles (large vector instructions take a while to
        // simulate): reading it per instruction was 5% of a small model's simulation.
        self.starts = self.starts.wrapping_add(1);
        self.unclocked = self.unclocked.saturating_add(cost);
        if (self.starts % 16 == 1 || self.unclocked >= 1 << 16) && self.opts.deadline.is_some() {
            self.unclocked = 0;
        }
        if self.unclocked == 0 && self.opts.deadline.is_some_and(|d| Instant::now() >= d) {
            let mut f = past_deadline(i);
            f.engine = Some(Engine::ALL[e]);
            return Err(f);
        }
        for (s, n) in token_needs(inst).iter() {
            self.sems[s] -= n;
        }
        let work = exec::execute(sim, program, i, segs, self.opts.deadline).map_err(|mut f| {
            f.engine = Some(Engine::ALL[e]);
            f
        })?;
        let cfg = &sim.cfg;
        let (issue, done, busy) = if !self.opts.timing {
            (1, 1, 1)
        } else {
            match &inst.op {
                Op::DmaLoad(it) => {
                    self.dram(program.dma.get(usize::from(it.desc.0)), cfg.dram_read_latency, cfg)
                }
                Op::DmaStore(it) => {
                    self.dram(program.dma.get(usize::from(it.desc.0)), cfg.dram_write_latency, cfg)
                }
                op => {
                    let c = op_cycles(op, &program.dma, &program.shapes, cfg).unwrap_or(1);
                    (c, c, c)
                }
            }
        };
        // Queues complete and signal in program order, even with transfers in flight.
        let end = (self.now + done).max(self.last_done[e]);
        self.last_done[e] = end;
        self.free_at[e] = self.now + issue;
        if matches!(inst.op, Op::DmaLoad(_) | Op::DmaStore(_)) {
            self.in_flight[e].push(end);
        }
        let st = &mut self.stats.engines[e];
        st.insts += 1;
        st.busy += busy;
        st.bytes += work.bytes;
        st.macs += work.macs;
        if self.opts.trace {
            let marker = if let Op::Marker(m) = inst.op { Some(m.id) } else { None };
            self.stats.trace.push(TraceEvent {
                engine: Some(Engine::ALL[e]),
                inst: i,
                mnemonic: inst.op.mnemonic(),
                start: self.now,
                end,
                marker,
            });
        }
        self.events.push(Reverse((end, i)));
        self.pos[e] += 1;
        Ok(())
    }

    /// Timing of a DRAM transfer starting now: (cycles until the engine can issue again,
    /// cycles until completion, cycles of bus occupancy).
    fn dram(
        &mut self,
        desc: Option<&accelc_isa::DmaDesc>,
        latency: u32,
        cfg: &DeviceConfig,
    ) -> (u64, u64, u64) {
        let Some(desc) = desc else { return (1, 1, 1) };
        let data = dram_data_cycles(desc, cfg).max(1);
        let data_start = (self.now + u64::from(latency)).max(self.dram_free);
        self.dram_free = data_start + data;
        (1, self.dram_free - self.now, data)
    }

    fn complete(&mut self, i: usize, program: &Program) -> Result<(), Fault> {
        let inst = &program.insts[i];
        for (s, n) in token_gives(inst).iter() {
            self.sems[s] += n;
            if self.sems[s] > 255 {
                return Err(Fault {
                    kind: FaultKind::SemOverflow,
                    engine: route_engine(inst),
                    inst: i,
                    seg: None,
                    offset: None,
                    message: format!("semaphore s{s} reached {}", self.sems[s]),
                });
            }
        }
        if let Some(e) = route_engine(inst) {
            let e = e as usize;
            if let Some(p) = self.in_flight[e].iter().position(|t| *t <= self.now) {
                self.in_flight[e].remove(p);
            }
        }
        let ep = self.epoch[i];
        self.remaining[ep] -= 1;
        while self.open < self.remaining.len() && self.remaining[self.open] == 0 {
            self.open += 1;
        }
        // Each front-end instruction completes when the queued instructions before it have:
        // trace every one whose epoch is now closed.
        while self.opts.trace
            && self.front_traced < self.front.len()
            && self.remaining[self.front_traced] == 0
        {
            let b = self.front[self.front_traced];
            self.stats.trace.push(TraceEvent {
                engine: None,
                inst: b,
                mnemonic: program.insts[b].op.mnemonic(),
                start: self.now,
                end: self.now + 1,
                marker: None,
            });
            self.front_traced += 1;
        }
        Ok(())
    }

    fn deadlock(&self, program: &Program) -> Fault {
        let mut parts = Vec::new();
        let mut first = None;
        for e in 0..4 {
            if let Some(i) = self.head(e) {
                first.get_or_insert((e, i));
                let why = match self.blocked(e, program) {
                    Some(Block::Barrier) => "behind a barrier".to_string(),
                    _ => {
                        let needs = token_needs(&program.insts[i]);
                        let (s, n) =
                            needs.iter().find(|(s, n)| self.sems[*s] < *n).unwrap_or((0, 0));
                        format!("waiting for {n} token(s) on s{s}, which holds {}", self.sems[s])
                    }
                };
                parts.push(format!("{} queue at instruction {i} {why}", Engine::ALL[e]));
            }
        }
        let (e, i) = first.unwrap_or((0, 0));
        Fault {
            kind: FaultKind::Deadlock,
            engine: Some(Engine::ALL[e]),
            inst: i,
            seg: None,
            offset: None,
            message: parts.join("; "),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Busy,
    Slots,
    Sem,
    Barrier,
}

fn route_engine(inst: &Inst) -> Option<Engine> {
    match inst.op.route() {
        Route::Engine(e) => Some(e),
        Route::Front => None,
    }
}

/// Up to three (semaphore, count) pairs, held inline (this runs for every instruction): an
/// instruction's two wait or signal slots and a `sem.wait`'s or `sem.signal`'s operand.
#[derive(Clone, Copy, Default)]
struct Tokens {
    v: [(usize, u32); 3],
    n: usize,
}

impl Tokens {
    /// Adds `c` tokens of semaphore `s`, merged with an earlier entry for `s`.
    fn add(&mut self, s: usize, c: u32) {
        if let Some(x) = self.v[..self.n].iter_mut().find(|x| x.0 == s) {
            x.1 += c;
        } else {
            self.v[self.n] = (s, c);
            self.n += 1;
        }
    }

    fn iter(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.v[..self.n].iter().copied()
    }
}

/// Tokens an instruction takes, per semaphore index.
fn token_needs(inst: &Inst) -> Tokens {
    let mut t = Tokens::default();
    for s in inst.sync.wait.iter().flatten() {
        t.add(s.index(), 1);
    }
    if let Op::SemWait(it) = inst.op {
        t.add(it.sem.index(), it.count.into());
    }
    t
}

fn token_gives(inst: &Inst) -> Tokens {
    let mut t = Tokens::default();
    for s in inst.sync.signal.iter().flatten() {
        t.add(s.index(), 1);
    }
    if let Op::SemSignal(it) = inst.op {
        t.add(it.sem.index(), it.count.into());
    }
    t
}
