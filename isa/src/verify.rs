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

use std::fmt;

use crate::config::DeviceConfig;
use crate::cost::op_cycles;
use crate::fields::{Axis, DmaDescId, Dtype, Engine, LocalAddr, Seg, Sem, ShapeId, Space};
use crate::inst::{DecodeErrorKind, INST_BYTES, Inst, Op, Route};
use crate::program::{
    DESC_BYTES, DmaDesc, EncodedProgram, MAX_DMA_DESCS, MAX_INSTS, MAX_SHAPES, MAX_VX_ELEMENTS,
    Program, Shape, Walk,
};

/// Largest DRAM offset plus extent: segments are at most 1 TiB (the 40-bit offset field).
pub const SEGMENT_SPACE: u64 = 1 << 40;
/// Largest semaphore value.
pub const SEM_MAX: u32 = 255;
/// At most this many errors are reported for one program.
pub const MAX_ERRORS: usize = 64;

/// Policy limits a driver may impose beyond the hardware's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Reject programs whose run-time bound exceeds this many cycles.
    pub max_cycles: Option<u64>,
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

/// Where an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The program as a whole.
    Program,
    /// An instruction.
    Inst {
        /// Its index.
        index: usize,
        /// Its mnemonic, when it decoded.
        mnemonic: Option<&'static str>,
    },
    /// A DMA descriptor.
    Dma(usize),
    /// A vector shape.
    Shape(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Program => f.write_str("program"),
            Location::Inst { index, mnemonic: Some(m) } => write!(f, "instruction {index} ({m})"),
            Location::Inst { index, mnemonic: None } => write!(f, "instruction {index}"),
            Location::Dma(i) => write!(f, "dma descriptor {i}"),
            Location::Shape(i) => write!(f, "shape {i}"),
        }
    }
}

/// One queue's state when the dry run found no way forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// The queue.
    pub engine: Engine,
    /// The instruction at its head.
    pub inst: usize,
    /// What it waits for.
    pub on: BlockedOn,
}

/// What a blocked queue waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockedOn {
    /// A semaphore that holds fewer tokens than the instruction takes.
    Sem {
        /// The semaphore.
        sem: Sem,
        /// Tokens it holds.
        have: u32,
        /// Tokens the instruction takes.
        need: u32,
    },
    /// A barrier (or `end`) that waits for other queues to drain.
    Barrier(usize),
}

/// What is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The program has no instructions.
    Empty,
    /// A table or the instruction stream is larger than the ISA allows.
    TooLarge {
        /// `instructions`, `dma descriptors` or `shapes`.
        what: &'static str,
        /// How many there are.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A section's byte length is not a multiple of its entry size.
    Size {
        /// `text`, `dma` or `shapes`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The entry size.
        entry: usize,
    },
    /// The instruction does not decode.
    Decode(DecodeErrorKind),
    /// No `end` instruction.
    MissingEnd,
    /// An `end` that is not the last instruction.
    EndNotLast,
    /// A front-end instruction carries wait or signal slots.
    FrontEndSync,
    /// A descriptor or shape is malformed.
    BadTableEntry(&'static str),
    /// An instruction names a descriptor or shape that does not exist.
    MissingTableEntry {
        /// `dma descriptor` or `shape`.
        table: &'static str,
        /// The index named.
        index: u16,
        /// The table's length.
        len: usize,
    },
    /// An instruction names a descriptor or shape that is itself malformed.
    UsesBadTableEntry {
        /// `dma descriptor` or `shape`.
        table: &'static str,
        /// The index named.
        index: u16,
    },
    /// A field value the target does not accept.
    Field {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A local operand outside its memory.
    LocalRange {
        /// The operand field.
        operand: &'static str,
        /// Its memory.
        space: Space,
        /// First byte.
        start: u64,
        /// One past the last byte (saturated on overflow).
        end: u64,
        /// The memory's size.
        size: u64,
    },
    /// A local operand in the wrong memory.
    WrongSpace {
        /// The operand field.
        operand: &'static str,
        /// The memory it must be in.
        expected: Space,
    },
    /// A DMA transfer that reaches past the 40-bit segment space.
    DramRange {
        /// The segment.
        seg: Seg,
        /// The transfer's offset.
        offset: u64,
        /// Its far-side extent.
        extent: u64,
    },
    /// `mx.matmul` before any `mx.load_w` in the matrix queue.
    NoWeights,
    /// `mx.matmul` input type does not match the loaded weights.
    WeightDtype {
        /// The weights' type.
        weights: Dtype,
        /// The input's type.
        input: Dtype,
    },
    /// A semaphore waited on by more than one queue (timing would decide who gets a token).
    SharedSem {
        /// The semaphore.
        sem: Sem,
        /// The queues waiting on it.
        engines: Vec<Engine>,
    },
    /// A signal that can push a semaphore past 255.
    SemOverflow {
        /// The semaphore.
        sem: Sem,
        /// The value it would reach.
        value: u32,
    },
    /// No queue can make progress.
    Deadlock(Vec<Blocked>),
    /// A segment the program uses has no buffer bound.
    SegmentUnbound {
        /// The segment.
        seg: Seg,
    },
    /// A buffer is bound to a segment the program does not use.
    SegmentUnused {
        /// The segment.
        seg: Seg,
    },
    /// A bound buffer is smaller than the program's extent in it.
    SegmentTooSmall {
        /// The segment.
        seg: Seg,
        /// Bytes the program needs.
        required: u64,
        /// Bytes bound.
        size: u64,
    },
    /// A read-only buffer is bound to a segment the program writes.
    SegmentReadOnly {
        /// The segment.
        seg: Seg,
    },
    /// The run-time bound exceeds the driver's limit.
    CycleLimit {
        /// The bound.
        bound: u64,
        /// The limit.
        limit: u64,
    },
}

/// One validation error: what and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// Where.
    pub at: Location,
    /// What.
    pub kind: ErrorKind,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.at)?;
        match &self.kind {
            ErrorKind::Empty => f.write_str("program has no instructions"),
            ErrorKind::TooLarge { what, count, max } => {
                write!(f, "{count} {what}, more than the {max} allowed")
            }
            ErrorKind::Size { what, len, entry } => {
                write!(f, "{what} is {len} bytes, not a multiple of {entry}")
            }
            ErrorKind::Decode(kind) => kind.fmt(f),
            ErrorKind::MissingEnd => f.write_str("no `end` instruction; the last must be `end`"),
            ErrorKind::EndNotLast => f.write_str("`end` must be the last instruction"),
            ErrorKind::FrontEndSync => {
                f.write_str("front-end instruction carries wait/signal slots")
            }
            ErrorKind::BadTableEntry(why) => f.write_str(why),
            ErrorKind::MissingTableEntry { table, index, len } => {
                write!(f, "{table} {index} does not exist (the table has {len})")
            }
            ErrorKind::UsesBadTableEntry { table, index } => {
                write!(f, "uses malformed {table} {index}")
            }
            ErrorKind::Field { field, reason } => write!(f, "field `{field}`: {reason}"),
            ErrorKind::LocalRange { operand, space, start, end, size } => write!(
                f,
                "operand `{operand}` spans {space}:{start:#x}..{end:#x}, outside the {size}-byte {}",
                space_name(*space)
            ),
            ErrorKind::WrongSpace { operand, expected } => {
                write!(f, "operand `{operand}` must be in the {}", space_name(*expected))
            }
            ErrorKind::DramRange { seg, offset, extent } => write!(
                f,
                "segment {seg} offset {offset:#x} plus extent {extent:#x} exceeds the 2^40-byte segment space"
            ),
            ErrorKind::NoWeights => f.write_str("no `mx.load_w` precedes it in the matrix queue"),
            ErrorKind::WeightDtype { weights, input } => {
                write!(f, "{input} inputs cannot multiply the loaded {weights} weights")
            }
            ErrorKind::SharedSem { sem, engines } => {
                let names: Vec<&str> = engines.iter().map(|e| e.name()).collect();
                write!(f, "semaphore {sem} is waited on by several queues ({})", names.join(", "))
            }
            ErrorKind::SemOverflow { sem, value } => {
                write!(f, "signal can raise semaphore {sem} to {value}, past {SEM_MAX}")
            }
            ErrorKind::Deadlock(blocked) => {
                f.write_str("deadlock: no queue can proceed")?;
                for b in blocked {
                    write!(f, "\n  {} queue blocked at instruction {} ", b.engine, b.inst)?;
                    match &b.on {
                        BlockedOn::Sem { sem, have, need } => {
                            write!(f, "waiting for {need} token(s) on {sem}, which holds {have}")?
                        }
                        BlockedOn::Barrier(at) => {
                            write!(f, "behind the barrier at instruction {at}")?
                        }
                    }
                }
                Ok(())
            }
            ErrorKind::CycleLimit { bound, limit } => {
                write!(f, "run-time bound of {bound} cycles exceeds the limit of {limit}")
            }
            ErrorKind::SegmentUnbound { seg } => {
                write!(f, "segment {seg} is used by the program but not bound")
            }
            ErrorKind::SegmentUnused { seg } => {
                write!(f, "segment {seg} is bound but the program does not use it")
            }
            ErrorKind::SegmentTooSmall { seg, required, size } => write!(
                f,
                "segment {seg} is {size} bytes but the program reaches byte {required} (a DMA past its end)"
            ),
            ErrorKind::SegmentReadOnly { seg } => {
                write!(f, "segment {seg} is read-only but the program writes it")
            }
        }
    }
}

impl std::error::Error for VerifyError {}

fn space_name(space: Space) -> &'static str {
    match space {
        Space::Spad => "scratchpad",
        Space::Acc => "accumulator",
    }
}

/// All errors found in one program (never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyErrors(pub Vec<VerifyError>);

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for VerifyErrors {}

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

/// The submit-time check a driver runs against a validated program's report: every segment the
/// program uses is bound, no unused one is, bound buffers cover the program's extents, and
/// written segments are writable.
pub fn check_bindings(
    report: &Report,
    bindings: &[Option<Binding>; Seg::COUNT],
) -> Result<(), VerifyErrors> {
    let mut errors = Vec::new();
    for (n, (used, bound)) in (0u8..).zip(report.segments.iter().zip(bindings)) {
        let Some(seg) = Seg::new(n) else { continue };
        let kind = match (used.used(), bound) {
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

/// A descriptor's extents, computed once.
#[derive(Clone, Copy, Debug)]
struct DmaExtents {
    far: u64,
    near: u64,
}

struct Verifier<'a> {
    cfg: &'a DeviceConfig,
    program: &'a Program,
    errors: Vec<VerifyError>,
    segments: [SegmentUse; Seg::COUNT],
}

impl Verifier<'_> {
    fn error(&mut self, at: Location, kind: ErrorKind) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(VerifyError { at, kind });
        }
    }

    fn check_sizes(&mut self) {
        let p = self.program;
        if p.insts.is_empty() {
            self.error(Location::Program, ErrorKind::Empty);
        }
        for (what, count, max) in [
            ("instructions", p.insts.len(), MAX_INSTS),
            ("dma descriptors", p.dma.len(), MAX_DMA_DESCS),
            ("shapes", p.shapes.len(), MAX_SHAPES),
        ] {
            if count > max {
                self.error(Location::Program, ErrorKind::TooLarge { what, count, max });
            }
        }
    }

    fn check_end(&mut self) {
        let insts = &self.program.insts;
        let last = insts.len().saturating_sub(1);
        let mut seen = false;
        for (index, inst) in insts.iter().enumerate() {
            if let Op::End(_) = inst.op {
                seen = true;
                if index != last {
                    self.error(
                        Location::Inst { index, mnemonic: Some("end") },
                        ErrorKind::EndNotLast,
                    );
                }
            }
        }
        if !seen {
            let at =
                Location::Inst { index: last, mnemonic: insts.last().map(|i| i.op.mnemonic()) };
            self.error(at, ErrorKind::MissingEnd);
        }
    }

    fn check_dma_desc(&mut self, index: usize, d: &DmaDesc) -> Option<DmaExtents> {
        let at = Location::Dma(index);
        let why = if d.x_bytes == 0 {
            "x_bytes is 0"
        } else if d.y_count == 0 {
            "y_count is 0"
        } else if d.z_count == 0 {
            "z_count is 0"
        } else {
            match (d.far_extent(), d.near_extent()) {
                (Some(far), Some(near)) if far <= SEGMENT_SPACE => {
                    return Some(DmaExtents { far, near });
                }
                (Some(_), Some(_)) => "far-side extent exceeds the 2^40-byte segment space",
                (None, _) => "far-side extent overflows 64 bits",
                (_, None) => "near-side extent overflows 64 bits",
            }
        };
        self.error(at, ErrorKind::BadTableEntry(why));
        None
    }

    fn check_shape(&mut self, index: usize, s: &Shape) -> bool {
        let why = if s.cols == 0 {
            "cols is 0"
        } else if s.rows == 0 {
            "rows is 0"
        } else if s.planes == 0 {
            "planes is 0"
        } else if !s.flags_ok() {
            "reserved flag bits set"
        } else {
            return true;
        };
        self.error(Location::Shape(index), ErrorKind::BadTableEntry(why));
        false
    }

    fn check_inst(
        &mut self,
        index: usize,
        inst: &Inst,
        dma_ok: &[Option<DmaExtents>],
        shapes_ok: &[bool],
        weights: &mut Option<(u8, u8, Dtype)>,
    ) {
        let at = Location::Inst { index, mnemonic: Some(inst.op.mnemonic()) };
        let mut c = InstCheck { v: self, at };
        if inst.op.route() == Route::Front && !inst.sync.is_empty() {
            c.err(ErrorKind::FrontEndSync);
        }
        match &inst.op {
            Op::Nop(_) | Op::End(_) | Op::Barrier(_) | Op::Marker(_) => {}
            Op::SemSignal(it) => c.nonzero("count", it.count.into()),
            Op::SemWait(it) => c.nonzero("count", it.count.into()),
            Op::DmaLoad(it) => {
                if let Some(ext) = c.dma(it.desc, dma_ok) {
                    c.dram(it.seg, it.offset, ext.far, false);
                    c.local("dst", it.dst, ext.near, None);
                }
            }
            Op::DmaStore(it) => {
                if let Some(ext) = c.dma(it.desc, dma_ok) {
                    c.dram(it.seg, it.offset, ext.far, true);
                    c.local("src", it.src, ext.near, None);
                }
            }
            Op::DmaFill(it) => {
                if let Some(ext) = c.dma(it.desc, dma_ok) {
                    c.local("dst", it.dst, ext.near, None);
                }
            }
            Op::DmaCopy(it) => {
                if let Some(ext) = c.dma(it.desc, dma_ok) {
                    c.local("src", it.src, ext.far, None);
                    c.local("dst", it.dst, ext.near, None);
                }
            }
            Op::MxLoadW(it) => {
                let dim = c.v.cfg.array_dim;
                c.in_range("k", it.k.into(), 1, dim.into());
                c.in_range("n", it.n.into(), 1, dim.into());
                if !matches!(it.dtype, Dtype::S8 | Dtype::Bf16 | Dtype::F32) {
                    c.field("dtype", format!("weights must be s8, bf16 or f32, not {}", it.dtype));
                } else if !c.v.cfg.matmul_supports(it.dtype) {
                    c.field(
                        "dtype",
                        format!("{} matmul is not a feature of this device", it.dtype),
                    );
                }
                let extent = row_block(
                    it.k.into(),
                    it.stride.into(),
                    u64::from(it.n).saturating_mul(it.dtype.size().into()),
                );
                c.local_opt("src", it.src, extent, Some(Space::Spad));
                *weights = Some((it.k, it.n, it.dtype));
            }
            Op::MxMatmul(it) => {
                c.in_range("rows", it.rows.into(), 1, 4095);
                let Some((k, n, wdtype)) = *weights else {
                    c.err(ErrorKind::NoWeights);
                    return;
                };
                let compatible = match wdtype {
                    Dtype::S8 => matches!(it.dtype, Dtype::S8 | Dtype::U8),
                    other => it.dtype == other,
                };
                if !compatible {
                    c.err(ErrorKind::WeightDtype { weights: wdtype, input: it.dtype });
                }
                let a_extent = row_block(
                    it.rows.into(),
                    it.a_stride.into(),
                    u64::from(k).saturating_mul(it.dtype.size().into()),
                );
                c.local_opt("a", it.a, a_extent, Some(Space::Spad));
                let c_extent =
                    row_block(it.rows.into(), it.c_stride.into(), u64::from(n).saturating_mul(4));
                c.local_opt("c", it.c, c_extent, Some(Space::Acc));
            }
            Op::VxBinary(it) => {
                if !it.op.supports(it.dtype) {
                    c.field("op", format!("{} is not defined for {}", it.op, it.dtype));
                }
                if let Some(s) = c.shape(it.shape, shapes_ok) {
                    let size = it.dtype.size();
                    c.walk("dst", it.dst, s.dst(size), &s, size);
                    c.walk("src0", it.src0, s.src0(size), &s, size);
                    c.walk("src1", it.src1, s.src1(size), &s, size);
                }
            }
            Op::VxUnary(it) => {
                if !it.op.supports(it.dtype, it.out_dtype) {
                    c.field(
                        "op",
                        format!("{} is not defined from {} to {}", it.op, it.dtype, it.out_dtype),
                    );
                }
                if let Some(s) = c.shape(it.shape, shapes_ok) {
                    c.walk("dst", it.dst, s.dst(it.out_dtype.size()), &s, it.out_dtype.size());
                    c.walk("src", it.src, s.src0(it.dtype.size()), &s, it.dtype.size());
                }
            }
            Op::VxReduce(it) => {
                let ok = it.op.supports(it.dtype, it.out_dtype);
                if !ok {
                    c.field(
                        "out_dtype",
                        format!("{} of {} cannot produce {}", it.op.name(), it.dtype, it.out_dtype),
                    );
                }
                if let Some(s) = c.shape(it.shape, shapes_ok) {
                    c.walk("src", it.src, s.src0(it.dtype.size()), &s, it.dtype.size());
                    let out = it.out_dtype.size();
                    let (rows, cols) = match it.axis {
                        Axis::Cols => (s.rows, 1),
                        Axis::Rows => (1, s.cols),
                    };
                    let extent = Shape::extent(s.dst(out), s.planes, rows, cols, out);
                    c.local_opt("dst", it.dst, extent, None);
                }
            }
            Op::VxRequant(it) => {
                if !matches!(it.dtype, Dtype::S8 | Dtype::U8 | Dtype::S16) {
                    c.field(
                        "dtype",
                        format!("requantization produces s8, u8 or s16, not {}", it.dtype),
                    );
                }
                if let Some(s) = c.shape(it.shape, shapes_ok) {
                    c.walk("dst", it.dst, s.dst(it.dtype.size()), &s, it.dtype.size());
                    c.walk("src", it.src, s.src0(4), &s, 4);
                    let records = if it.per_channel { u64::from(s.cols) } else { 1 };
                    c.local("params", it.params, records.saturating_mul(16), None);
                }
            }
            Op::VxLut(it) => {
                if !matches!(it.dtype, Dtype::S8 | Dtype::U8) {
                    c.field("dtype", format!("table lookup takes s8 or u8, not {}", it.dtype));
                }
                if let Some(s) = c.shape(it.shape, shapes_ok) {
                    c.walk("dst", it.dst, s.dst(1), &s, 1);
                    c.walk("src", it.src, s.src0(1), &s, 1);
                    c.local("table", it.table, 256, None);
                }
            }
            Op::VxTranspose(it) => {
                if let Some(s) = c.shape(it.shape, shapes_ok) {
                    let size = it.dtype.size();
                    c.walk("src", it.src, s.src0(size), &s, size);
                    // Source column c becomes destination row c.
                    let walk =
                        Walk { col: s.dst_row.into(), row: size.into(), plane: s.dst_plane.into() };
                    let extent = Shape::extent(walk, s.planes, s.rows, s.cols, size);
                    c.local_opt("dst", it.dst, extent, None);
                }
            }
        }
    }
}

/// Extent of `rows` rows of `row_bytes` bytes, `stride` apart.
fn row_block(rows: u64, stride: u64, row_bytes: u64) -> Option<u64> {
    rows.checked_sub(1)?.checked_mul(stride)?.checked_add(row_bytes)
}

/// Checks for one instruction.
struct InstCheck<'v, 'a> {
    v: &'v mut Verifier<'a>,
    at: Location,
}

impl InstCheck<'_, '_> {
    fn err(&mut self, kind: ErrorKind) {
        self.v.error(self.at, kind);
    }

    fn field(&mut self, field: &'static str, reason: String) {
        self.err(ErrorKind::Field { field, reason });
    }

    fn nonzero(&mut self, field: &'static str, value: u64) {
        if value == 0 {
            self.field(field, "must not be 0".into());
        }
    }

    fn in_range(&mut self, field: &'static str, value: u64, min: u64, max: u64) {
        if value < min || value > max {
            self.field(field, format!("{value} is outside {min}..={max}"));
        }
    }

    fn dma(&mut self, id: DmaDescId, ok: &[Option<DmaExtents>]) -> Option<DmaExtents> {
        let index = id.0;
        match ok.get(usize::from(index)) {
            None => {
                self.err(ErrorKind::MissingTableEntry {
                    table: "dma descriptor",
                    index,
                    len: ok.len(),
                });
                None
            }
            Some(None) => {
                self.err(ErrorKind::UsesBadTableEntry { table: "dma descriptor", index });
                None
            }
            Some(Some(ext)) => Some(*ext),
        }
    }

    fn shape(&mut self, id: ShapeId, ok: &[bool]) -> Option<Shape> {
        let index = id.0;
        if let Some(s) = self.v.program.shapes.get(usize::from(index))
            && s.elements() > MAX_VX_ELEMENTS
        {
            self.field(
                "shape",
                format!(
                    "{} elements, more than the 2^24 one instruction may process",
                    s.elements()
                ),
            );
            return None;
        }
        match ok.get(usize::from(index)) {
            None => {
                self.err(ErrorKind::MissingTableEntry { table: "shape", index, len: ok.len() });
                None
            }
            Some(false) => {
                self.err(ErrorKind::UsesBadTableEntry { table: "shape", index });
                None
            }
            Some(true) => self.v.program.shapes.get(usize::from(index)).copied(),
        }
    }

    fn dram(&mut self, seg: Seg, offset: u64, extent: u64, write: bool) {
        let Some(end) = offset.checked_add(extent).filter(|end| *end <= SEGMENT_SPACE) else {
            self.err(ErrorKind::DramRange { seg, offset, extent });
            return;
        };
        let slot = &mut self.v.segments[seg.index()];
        let field = if write { &mut slot.write_end } else { &mut slot.read_end };
        *field = Some(field.unwrap_or(0).max(end));
    }

    fn walk(&mut self, operand: &'static str, addr: LocalAddr, walk: Walk, s: &Shape, size: u32) {
        let extent = Shape::extent(walk, s.planes, s.rows, s.cols, size);
        self.local_opt(operand, addr, extent, None);
    }

    fn local(&mut self, operand: &'static str, addr: LocalAddr, extent: u64, space: Option<Space>) {
        self.local_opt(operand, addr, Some(extent), space);
    }

    /// Checks that `extent` bytes at `addr` lie inside its memory (and in `space`, if given);
    /// `None` means the extent overflowed.
    fn local_opt(
        &mut self,
        operand: &'static str,
        addr: LocalAddr,
        extent: Option<u64>,
        space: Option<Space>,
    ) {
        if let Some(expected) = space
            && addr.space != expected
        {
            self.err(ErrorKind::WrongSpace { operand, expected });
            return;
        }
        let size = u64::from(match addr.space {
            Space::Spad => self.v.cfg.spad_bytes,
            Space::Acc => self.v.cfg.acc_bytes,
        });
        let start = u64::from(addr.offset);
        let end = extent.and_then(|e| start.checked_add(e));
        if end.is_none_or(|end| end > size) {
            let end = end.unwrap_or(u64::MAX);
            self.err(ErrorKind::LocalRange { operand, space: addr.space, start, end, size });
        }
    }
}

/// Tokens an instruction takes from and gives to each semaphore.
#[derive(Clone, Debug, Default)]
struct Tokens {
    take: Vec<(Sem, u32)>,
    give: Vec<(Sem, u32)>,
}

fn add_tokens(list: &mut Vec<(Sem, u32)>, sem: Sem, n: u32) {
    match list.iter_mut().find(|(s, _)| *s == sem) {
        Some((_, count)) => *count = count.saturating_add(n),
        None => list.push((sem, n)),
    }
}

fn tokens(inst: &Inst) -> Tokens {
    let mut t = Tokens::default();
    for sem in inst.sync.wait.iter().flatten() {
        add_tokens(&mut t.take, *sem, 1);
    }
    match inst.op {
        Op::SemWait(it) => add_tokens(&mut t.take, it.sem, it.count.into()),
        Op::SemSignal(it) => add_tokens(&mut t.give, it.sem, it.count.into()),
        _ => {}
    }
    for sem in inst.sync.signal.iter().flatten() {
        add_tokens(&mut t.give, *sem, 1);
    }
    t
}

/// One queued instruction as the dry run sees it.
struct Step {
    inst: usize,
    /// Front-end instructions before it: it may start only when every queued instruction of
    /// an earlier epoch has completed.
    epoch: usize,
    tokens: Tokens,
}

/// The token-only dry run.
///
/// Each semaphore has one consuming queue and queues are in order, so the program is a Kahn
/// process network: whether it completes does not depend on timing. For the overflow check,
/// the dry run is repeated once per consuming queue with that queue held back as long as
/// possible while every other queue runs as far as it can; that schedule reaches the largest
/// value each of the held queue's semaphores can take under any timing (progress is monotone).
fn dry_run(program: &Program) -> Result<[u8; Sem::COUNT], VerifyError> {
    let mut queues: [Vec<Step>; 4] = Default::default();
    let mut barriers = Vec::new();
    // For each semaphore, the queues that wait on it with the first instruction of each.
    let mut consumers: [Vec<(Engine, usize)>; Sem::COUNT] = Default::default();
    for (index, inst) in program.insts.iter().enumerate() {
        match inst.op.route() {
            Route::Front => barriers.push(index),
            Route::Engine(e) => {
                let tokens = tokens(inst);
                for (sem, _) in &tokens.take {
                    let list = &mut consumers[sem.index()];
                    if !list.iter().any(|(q, _)| *q == e) {
                        list.push((e, index));
                    }
                }
                queues[e as usize].push(Step { inst: index, epoch: barriers.len(), tokens });
            }
        }
    }
    for (n, list) in (0u8..).zip(&consumers) {
        if let (Some(sem), [_, (_, second), ..]) = (Sem::new(n), list.as_slice()) {
            let inst = &program.insts[*second];
            return Err(VerifyError {
                at: Location::Inst { index: *second, mnemonic: Some(inst.op.mnemonic()) },
                kind: ErrorKind::SharedSem { sem, engines: list.iter().map(|(e, _)| *e).collect() },
            });
        }
    }
    let mut held: Vec<Option<Engine>> = Engine::ALL
        .iter()
        .filter(|e| consumers.iter().any(|c| c.iter().any(|(q, _)| q == *e)))
        .map(|e| Some(*e))
        .collect();
    if held.is_empty() {
        held.push(None);
    }
    let mut peak = program.sem_init;
    for hold in held {
        run_schedule(program, &queues, &barriers, hold, &mut peak)?;
    }
    Ok(peak)
}

fn run_schedule(
    program: &Program,
    queues: &[Vec<Step>; 4],
    barriers: &[usize],
    hold: Option<Engine>,
    peak: &mut [u8; Sem::COUNT],
) -> Result<(), VerifyError> {
    let mut sems: [u32; Sem::COUNT] = program.sem_init.map(u32::from);
    let mut pos = [0usize; 4];
    let epoch_of =
        |e: usize, pos: &[usize; 4]| queues[e].get(pos[e]).map_or(usize::MAX, |s| s.epoch);
    // Whether queue `e` can start its head instruction.
    let ready = |e: usize, pos: &[usize; 4], sems: &[u32; Sem::COUNT]| -> bool {
        let Some(step) = queues[e].get(pos[e]) else {
            return false;
        };
        let earliest = (0..4).map(|q| epoch_of(q, pos)).min().unwrap_or(usize::MAX);
        step.epoch <= earliest && step.tokens.take.iter().all(|(s, n)| sems[s.index()] >= *n)
    };
    let mut step =
        |e: usize, pos: &mut [usize; 4], sems: &mut [u32; Sem::COUNT]| -> Result<(), VerifyError> {
            let s = &queues[e][pos[e]];
            for (sem, n) in &s.tokens.take {
                let v = &mut sems[sem.index()];
                *v = v.saturating_sub(*n);
            }
            for (sem, n) in &s.tokens.give {
                let v = &mut sems[sem.index()];
                *v = v.saturating_add(*n);
                if *v > SEM_MAX {
                    let inst = &program.insts[s.inst];
                    return Err(VerifyError {
                        at: Location::Inst { index: s.inst, mnemonic: Some(inst.op.mnemonic()) },
                        kind: ErrorKind::SemOverflow { sem: *sem, value: *v },
                    });
                }
                let p = &mut peak[sem.index()];
                *p = (*p).max(u8::try_from(*v).unwrap_or(u8::MAX));
            }
            pos[e] = pos[e].saturating_add(1);
            Ok(())
        };
    let held = hold.map(|e| e as usize);
    loop {
        // Run every queue but the held one as far as it can go.
        let mut progress = true;
        while progress {
            progress = false;
            for e in (0..4).filter(|e| Some(*e) != held) {
                while ready(e, &pos, &sems) {
                    step(e, &mut pos, &mut sems)?;
                    progress = true;
                }
            }
        }
        match held {
            Some(h) if ready(h, &pos, &sems) => step(h, &mut pos, &mut sems)?,
            _ => break,
        }
    }
    if (0..4).all(|e| pos[e] == queues[e].len()) {
        return Ok(());
    }
    let earliest = (0..4).map(|q| epoch_of(q, &pos)).min().unwrap_or(usize::MAX);
    let mut blocked = Vec::new();
    for (e, engine) in Engine::ALL.iter().enumerate() {
        let Some(s) = queues[e].get(pos[e]) else {
            continue;
        };
        let on = if s.epoch > earliest {
            BlockedOn::Barrier(barriers.get(s.epoch.saturating_sub(1)).copied().unwrap_or(0))
        } else {
            // A queue that is not behind a barrier and not ready lacks tokens somewhere.
            let Some((sem, need)) =
                s.tokens.take.iter().find(|(sem, n)| sems[sem.index()] < *n).copied()
            else {
                continue;
            };
            BlockedOn::Sem { sem, have: sems[sem.index()], need }
        };
        blocked.push(Blocked { engine: *engine, inst: s.inst, on });
    }
    Err(VerifyError { at: Location::Program, kind: ErrorKind::Deadlock(blocked) })
}
