//! The program validator: what a kernel driver runs on its own copy of an untrusted program
//! before letting it near the hardware.
//!
//! Rules, in the order they are checked (the book's validator page lists them with reasons):
//!
//! 1. sizes: 1..=2^20 instructions, at most 2^16 descriptors and shapes;
//! 2. whitelist decoding: known opcodes, reserved bits zero, enumerations in range;
//! 3. exactly one `end`, and it is last;
//! 4. every DMA descriptor and shape well formed (non-zero counts, extents that do not overflow,
//!    reserved flags clear), computed once per table entry;
//! 5. every instruction's fields valid for the target configuration (counts, array size, data
//!    types and features, descriptor indices) and every local operand inside the memory it
//!    must be in, with overflow-safe arithmetic;
//! 6. DMA offsets plus extents inside the 40-bit segment space; the DRAM extent read and written
//!    in each segment, computed once, for the driver's submit-time check;
//! 7. semaphores: each waited on by one queue only; a token-only dry run proves the program
//!    cannot deadlock and no counter can exceed 255 under any timing;
//! 8. a static bound on the run time in cycles, optionally checked against a limit.
//!
//! The validator never panics on any input; all arithmetic on program values is checked.

#![deny(clippy::arithmetic_side_effects)]

use crate::config::DeviceConfig;
use crate::cost::op_cycles;
use crate::fields::{Dtype, Seg, Sem};
use crate::inst::{INST_BYTES, Inst, Route};
use crate::program::{DESC_BYTES, DmaDesc, EncodedProgram, MAX_INSTS, Program, Shape};

mod error;
mod inst;
mod sync;

pub use error::*;
use inst::{DmaExtents, Verifier};
use sync::dry_run;

/// Largest DRAM offset plus extent: segments are at most 1 TiB (the 40-bit offset field).
pub const SEGMENT_SPACE: u64 = 1 << 40;
/// Largest semaphore value.
pub const SEM_MAX: u32 = 255;
/// At most this many errors are reported for one program.
pub const MAX_ERRORS: usize = 64;

/// The reference driver's default limit on a job's run-time bound: 2^28 cycles (0.27 s of
/// device time at 1 GHz, seven times resnet18's 36 M). A job is one inference; a program that
/// may run longer monopolises the device's single queue, so it is refused unless the device's
/// owner raises the limit (`--max-cycles`).
pub const DEFAULT_MAX_CYCLES: u64 = 1 << 28;

/// Policy limits a driver may impose beyond the hardware's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Reject programs whose run-time bound exceeds this many cycles (`None`: no limit).
    pub max_cycles: Option<u64>,
}

impl Limits {
    /// Only the hardware's limits, no policy: what a compiler checks its own output against
    /// (a long program is valid; whether a driver runs it is the driver's policy).
    pub const fn hardware() -> Limits {
        Limits { max_cycles: None }
    }
}

impl Default for Limits {
    /// The reference driver's policy: [`DEFAULT_MAX_CYCLES`].
    fn default() -> Limits {
        Limits { max_cycles: Some(DEFAULT_MAX_CYCLES) }
    }
}

/// How a program uses one DRAM segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentUse {
    /// Some DMA reads it; `read_end` is the end (exclusive) of the furthest read.
    pub read_end: Option<u64>,
    /// Some DMA writes it; `write_end` is the end (exclusive) of the furthest write.
    pub write_end: Option<u64>,
}

impl SegmentUse {
    /// Whether the program touches the segment.
    pub fn used(&self) -> bool {
        self.read_end.is_some() || self.write_end.is_some()
    }

    /// Bytes a buffer bound to the segment must have.
    pub fn required_size(&self) -> u64 {
        self.read_end.unwrap_or(0).max(self.write_end.unwrap_or(0))
    }
}

/// What the validator learned about a valid program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Instructions per engine queue, in `Engine` order.
    pub per_engine: [usize; 4],
    /// Front-end instructions (`end`, `barrier`).
    pub front_end: usize,
    /// DRAM use per segment.
    pub segments: [SegmentUse; Seg::COUNT],
    /// Upper bound on the run time in cycles.
    pub cycle_bound: u64,
    /// The highest value each semaphore can reach under any timing.
    pub sem_peak: [u8; Sem::COUNT],
}

/// Validates a program given as raw parts (the driver's case: bytes from an untrusted caller).
pub fn verify_encoded(
    enc: &EncodedProgram,
    cfg: &DeviceConfig,
    limits: &Limits,
) -> Result<(Program, Report), VerifyErrors> {
    let mut errors = Vec::new();
    for (what, len, entry) in [
        ("text", enc.text.len(), INST_BYTES),
        ("dma", enc.dma.len(), DESC_BYTES),
        ("shapes", enc.shapes.len(), DESC_BYTES),
    ] {
        if !len.is_multiple_of(entry) {
            errors.push(VerifyError {
                at: Location::Program,
                kind: ErrorKind::Size { what, len, entry },
            });
        }
    }
    if !errors.is_empty() {
        return Err(VerifyErrors(errors));
    }
    let n_insts = enc.text.len().checked_div(INST_BYTES).unwrap_or(0);
    if n_insts > MAX_INSTS {
        return Err(VerifyErrors(vec![VerifyError {
            at: Location::Program,
            kind: ErrorKind::TooLarge { what: "instructions", count: n_insts, max: MAX_INSTS },
        }]));
    }
    let mut insts = Vec::with_capacity(n_insts);
    for (index, chunk) in enc.text.chunks_exact(INST_BYTES).enumerate() {
        let mut word = [0u8; INST_BYTES];
        word.copy_from_slice(chunk);
        match Inst::decode(word) {
            Ok(inst) => insts.push(inst),
            Err(kind) => {
                if errors.len() < MAX_ERRORS {
                    errors.push(VerifyError {
                        at: Location::Inst { index, mnemonic: None },
                        kind: ErrorKind::Decode(kind),
                    });
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(VerifyErrors(errors));
    }
    let decode_table = |bytes: &[u8]| -> Vec<[u8; DESC_BYTES]> {
        bytes
            .chunks_exact(DESC_BYTES)
            .map(|c| {
                let mut a = [0u8; DESC_BYTES];
                a.copy_from_slice(c);
                a
            })
            .collect()
    };
    let program = Program {
        insts,
        dma: decode_table(&enc.dma).iter().map(DmaDesc::from_bytes).collect(),
        shapes: decode_table(&enc.shapes).iter().map(Shape::from_bytes).collect(),
        sem_init: enc.sem_init,
    };
    let report = verify(&program, cfg, limits)?;
    Ok((program, report))
}

/// Validates a decoded program against a device configuration.
pub fn verify(
    program: &Program,
    cfg: &DeviceConfig,
    limits: &Limits,
) -> Result<Report, VerifyErrors> {
    let mut v = Verifier { cfg, program, errors: Vec::new(), segments: Default::default() };
    v.check_sizes();
    if !v.errors.is_empty() {
        return Err(VerifyErrors(v.errors));
    }
    let dma_ok: Vec<Option<DmaExtents>> =
        program.dma.iter().enumerate().map(|(i, d)| v.check_dma_desc(i, d)).collect();
    let shapes_ok: Vec<bool> =
        program.shapes.iter().enumerate().map(|(i, s)| v.check_shape(i, s)).collect();
    v.check_end();
    let mut weights: Option<(u8, u8, Dtype)> = None;
    for (index, inst) in program.insts.iter().enumerate() {
        v.check_inst(index, inst, &dma_ok, &shapes_ok, &mut weights);
    }
    if !v.errors.is_empty() {
        return Err(VerifyErrors(v.errors));
    }
    let sem_peak = match dry_run(program) {
        Ok(peak) => peak,
        Err(e) => return Err(VerifyErrors(vec![e])),
    };
    let mut cycle_bound = 0u64;
    for inst in &program.insts {
        // Every index was checked above, so the cost is always known.
        let cost = op_cycles(&inst.op, &program.dma, &program.shapes, cfg).unwrap_or(u64::MAX);
        cycle_bound = cycle_bound.saturating_add(cost);
    }
    if let Some(limit) = limits.max_cycles
        && cycle_bound > limit
    {
        return Err(VerifyErrors(vec![VerifyError {
            at: Location::Program,
            kind: ErrorKind::CycleLimit { bound: cycle_bound, limit },
        }]));
    }
    let mut per_engine = [0usize; 4];
    let mut front_end = 0usize;
    for inst in &program.insts {
        match inst.op.route() {
            Route::Front => front_end = front_end.saturating_add(1),
            Route::Engine(e) => {
                let slot = &mut per_engine[e as usize];
                *slot = slot.saturating_add(1);
            }
        }
    }
    Ok(Report { per_engine, front_end, segments: v.segments, cycle_bound, sem_peak })
}

/// A buffer bound to a segment at submit time (or declared for it in a blob).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Bytes available.
    pub size: u64,
    /// Whether the program may write it.
    pub writable: bool,
}

/// The largest buffer object a driver creates, and so the largest segment a program can be
/// bound to: 16 GiB.
pub const MAX_BUFFER_BYTES: u64 = 1 << 34;

/// [`check_bindings`] against a blob's or module's declared segments, as a loader that binds
/// a buffer of each declared size and access to every segment the program uses would: the one
/// check `verify`, the driver model's `Model` and the simulator's blob path share, so none
/// accepts what another refuses. A declared segment the program does not use is not bound (an
/// input nothing reads, a zero-size tensor), but its size is still checked.
pub fn check_declared(
    report: &Report,
    segments: &[crate::blob::SegmentDecl],
) -> Result<(), VerifyErrors> {
    let mut bindings = [None; Seg::COUNT];
    for s in segments {
        let used = report.segments.get(usize::from(s.id)).is_some_and(SegmentUse::used);
        if !used && s.size <= MAX_BUFFER_BYTES {
            continue;
        }
        if let Some(slot) = bindings.get_mut(usize::from(s.id)) {
            *slot =
                Some(Binding { size: s.size, writable: s.access & crate::blob::ACCESS_WRITE != 0 });
        }
    }
    check_bindings(report, &bindings)
}

/// The submit-time check a driver runs against a validated program's report: every segment the
/// program uses is bound, no unused one is, no buffer exceeds [`MAX_BUFFER_BYTES`], bound buffers cover the program's extents, and written segments are
/// writable.
pub fn check_bindings(
    report: &Report,
    bindings: &[Option<Binding>; Seg::COUNT],
) -> Result<(), VerifyErrors> {
    let mut errors = Vec::new();
    for (n, (used, bound)) in (0u8..).zip(report.segments.iter().zip(bindings)) {
        let Some(seg) = Seg::new(n) else { continue };
        let kind = match (used.used(), bound) {
            (_, Some(b)) if b.size > MAX_BUFFER_BYTES => {
                ErrorKind::SegmentTooLarge { seg, size: b.size }
            }
            (false, None) => continue,
            (true, None) => ErrorKind::SegmentUnbound { seg },
            (false, Some(_)) => ErrorKind::SegmentUnused { seg },
            (true, Some(b)) if used.write_end.is_some() && !b.writable => {
                ErrorKind::SegmentReadOnly { seg }
            }
            (true, Some(b)) if used.required_size() > b.size => {
                ErrorKind::SegmentTooSmall { seg, required: used.required_size(), size: b.size }
            }
            (true, Some(_)) => continue,
        };
        errors.push(VerifyError { at: Location::Program, kind });
    }
    if errors.is_empty() { Ok(()) } else { Err(VerifyErrors(errors)) }
}
