//! The validator's findings: where (instruction, descriptor, shape or the whole program) and
//! what, each with the text a driver log shows.

#![deny(clippy::arithmetic_side_effects)]

use std::fmt;

use crate::fields::{Dtype, Engine, Seg, Sem, Space};
use crate::inst::DecodeErrorKind;

use super::*;

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
    /// A declared or bound segment larger than the segment space.
    SegmentTooLarge {
        /// The segment.
        seg: Seg,
        /// Bytes declared or bound.
        size: u64,
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
                write!(
                    f,
                    "run-time bound of {bound} cycles exceeds the limit of {limit} cycles per job"
                )
            }
            ErrorKind::SegmentUnbound { seg } => {
                write!(f, "segment {seg} is used by the program but not bound")
            }
            ErrorKind::SegmentUnused { seg } => {
                write!(f, "segment {seg} is bound but the program does not use it")
            }
            ErrorKind::SegmentTooLarge { seg, size } => write!(
                f,
                "segment {seg} is declared {size} bytes; a segment's buffer is at most {MAX_BUFFER_BYTES} bytes (16 GiB)"
            ),
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
