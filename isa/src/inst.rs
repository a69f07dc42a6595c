//! Instructions in typed form, generated from the instruction table, and their fixed 128-bit
//! little-endian encoding.
//!
//! Word layout: bits 0..8 opcode, 8..13 `wait0`, 13..18 `wait1`, 18..23 `signal0`,
//! 23..28 `signal1` (each slot: enable bit, then a 4-bit semaphore number), 28..32 reserved,
//! 32..128 operands as the table places them. Every bit no field uses must be zero.

use std::fmt;

use crate::fields::{
    Axis, BinOp, DmaDescId, Dtype, Engine, FieldKind, FieldValue, LocalAddr, ReduceOp, Seg, Sem,
    ShapeId, UnOp,
};

/// Bytes per instruction.
pub const INST_BYTES: usize = 16;

/// Bits of the header that hold the four synchronisation slots.
const SYNC_MASK: u128 = ((1 << 28) - 1) & !0xff;
/// Opcode bits.
const OPCODE_MASK: u128 = 0xff;

/// Bit position of each synchronisation slot: `wait0`, `wait1`, `signal0`, `signal1`.
const SLOT_POS: [u32; 4] = [8, 13, 18, 23];

/// The wait and signal slots every queued instruction carries. A wait blocks the instruction's
/// queue until the semaphore is positive, then takes one token; a signal adds one token after
/// the instruction's effects are visible to every engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sync {
    /// Semaphores waited on before the instruction starts, in order.
    pub wait: [Option<Sem>; 2],
    /// Semaphores signalled after it completes, in order.
    pub signal: [Option<Sem>; 2],
}

impl Sync {
    /// No waits, no signals.
    pub const NONE: Sync = Sync { wait: [None, None], signal: [None, None] };

    /// Whether any slot is in use.
    pub fn is_empty(&self) -> bool {
        self.wait.iter().chain(&self.signal).all(Option::is_none)
    }

    fn slots(&self) -> [Option<Sem>; 4] {
        [self.wait[0], self.wait[1], self.signal[0], self.signal[1]]
    }

    fn to_bits(self) -> u128 {
        let mut bits = 0u128;
        for (slot, pos) in self.slots().into_iter().zip(SLOT_POS) {
            if let Some(sem) = slot {
                bits |= (1 | (sem.to_raw() as u128) << 1) << pos;
            }
        }
        bits
    }

    fn from_bits(word: u128) -> Result<Sync, SyncError> {
        let mut slots = [None; 4];
        let mut bad = 0u128;
        for (slot, pos) in slots.iter_mut().zip(SLOT_POS) {
            let raw = (word >> pos) & 0x1f;
            if raw & 1 == 1 {
                *slot = Sem::new((raw >> 1) as u8);
            } else if raw != 0 {
                // A disabled slot must be all zero.
                bad |= raw << pos;
            }
        }
        if bad != 0 {
            return Err(SyncError::Reserved(bad));
        }
        // Slots fill in order, so every slot set has one encoding (and one text form).
        if slots[0].is_none() && slots[1].is_some() {
            return Err(SyncError::Order("wait1"));
        }
        if slots[2].is_none() && slots[3].is_some() {
            return Err(SyncError::Order("signal1"));
        }
        Ok(Sync { wait: [slots[0], slots[1]], signal: [slots[2], slots[3]] })
    }
}

/// Why the synchronisation slots of a word are invalid.
enum SyncError {
    /// A disabled slot with non-zero bits.
    Reserved(u128),
    /// The second slot of a pair used while the first is empty.
    Order(&'static str),
}

/// Where an instruction executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// In the front-end (`end`, `barrier`): it orders all queues.
    Front,
    /// In the queue of one engine, in program order within that queue.
    Engine(Engine),
}

/// How an instruction's route is determined, as the table says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteInfo {
    /// Always the front-end.
    Front,
    /// Always this engine.
    Fixed(Engine),
    /// The engine in the instruction's `queue` field.
    QueueField,
}

/// Table metadata of one operand field.
#[derive(Clone, Copy, Debug)]
pub struct FieldInfo {
    /// Field name, as written in assembly.
    pub name: &'static str,
    /// First bit (inclusive).
    pub lo: u32,
    /// Last bit (exclusive).
    pub hi: u32,
    /// How the bits read.
    pub kind: FieldKind,
    /// One-line description.
    pub doc: &'static str,
}

impl FieldInfo {
    /// Width in bits.
    pub fn width(&self) -> u32 {
        self.hi - self.lo
    }

    /// The field's raw bits in `word`.
    pub fn extract(&self, word: u128) -> u64 {
        ((word >> self.lo) & ((1u128 << self.width()) - 1)) as u64
    }
}

/// Table metadata of one instruction.
#[derive(Clone, Copy, Debug)]
pub struct OpInfo {
    /// The Rust type name (`MxMatmul`).
    pub name: &'static str,
    /// The assembly mnemonic (`mx.matmul`).
    pub mnemonic: &'static str,
    /// The opcode byte.
    pub opcode: u8,
    /// Where it executes.
    pub route: RouteInfo,
    /// Description (one or more lines).
    pub doc: &'static str,
    /// Operand fields in table order.
    pub fields: &'static [FieldInfo],
    /// Union of the operand fields' bits.
    pub operand_mask: u128,
}

impl OpInfo {
    /// Whether the instruction has synchronisation slots (front-end instructions do not).
    pub fn has_sync(&self) -> bool {
        self.route != RouteInfo::Front
    }

    /// Every bit the encoding may set; the rest are reserved.
    pub fn allowed_mask(&self) -> u128 {
        let sync = if self.has_sync() { SYNC_MASK } else { 0 };
        OPCODE_MASK | sync | self.operand_mask
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&'static FieldInfo> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Why 16 bytes are not an instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// No instruction has this opcode.
    UnknownOpcode(u8),
    /// Bits that must be zero are set (the set bits are given).
    ReservedBits {
        /// The instruction's mnemonic.
        mnemonic: &'static str,
        /// The offending bits.
        bits: u128,
    },
    /// A second wait or signal slot is used while the first is empty.
    SlotOrder {
        /// The instruction's mnemonic.
        mnemonic: &'static str,
        /// `wait1` or `signal1`.
        slot: &'static str,
    },
    /// A field holds a value with no meaning (an enumeration out of range).
    BadField {
        /// The instruction's mnemonic.
        mnemonic: &'static str,
        /// The field.
        field: &'static str,
        /// Its raw value.
        raw: u64,
    },
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::UnknownOpcode(op) => write!(f, "unknown opcode {op:#04x}"),
            DecodeErrorKind::ReservedBits { mnemonic, bits } => {
                write!(f, "{mnemonic}: reserved bits set: {}", BitRanges(*bits))
            }
            DecodeErrorKind::SlotOrder { mnemonic, slot } => {
                write!(f, "{mnemonic}: slot `{slot}` is used while the slot before it is empty")
            }
            DecodeErrorKind::BadField { mnemonic, field, raw } => {
                write!(f, "{mnemonic}: field `{field}` has invalid value {raw}")
            }
        }
    }
}

/// Lists the set bits of a word as ranges (`28..32, 120`).
struct BitRanges(u128);

impl fmt::Display for BitRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bit = 0u32;
        let mut first = true;
        while bit < 128 {
            if self.0 >> bit & 1 == 1 {
                let start = bit;
                while bit < 128 && self.0 >> bit & 1 == 1 {
                    bit += 1;
                }
                if !first {
                    f.write_str(", ")?;
                }
                first = false;
                if bit - start == 1 {
                    write!(f, "bit {start}")?;
                } else {
                    write!(f, "bits {start}..{bit}")?;
                }
            } else {
                bit += 1;
            }
        }
        Ok(())
    }
}

/// A stream of bytes that is not a sequence of valid instructions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The length is not a multiple of [`INST_BYTES`].
    Truncated {
        /// The length in bytes.
        len: usize,
    },
    /// The instruction at `index` does not decode.
    Inst {
        /// Instruction index.
        index: usize,
        /// What is wrong.
        kind: DecodeErrorKind,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { len } => write!(
                f,
                "program is {len} bytes, not a multiple of the {INST_BYTES}-byte instruction size"
            ),
            DecodeError::Inst { index, kind } => write!(f, "instruction {index}: {kind}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A field value too wide for its field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeError {
    /// The instruction's mnemonic.
    pub mnemonic: &'static str,
    /// The field.
    pub field: &'static str,
    /// The value given.
    pub value: u64,
    /// The field's width in bits.
    pub width: u32,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: value {} does not fit the {}-bit field `{}`",
            self.mnemonic, self.value, self.width, self.field
        )
    }
}

impl std::error::Error for EncodeError {}

fn pack_field<F: FieldValue>(
    value: F,
    lo: u32,
    hi: u32,
    mnemonic: &'static str,
    field: &'static str,
) -> Result<u128, EncodeError> {
    let raw = value.to_raw();
    let width = hi - lo;
    if width < 64 && raw >> width != 0 {
        return Err(EncodeError { mnemonic, field, value: raw, width });
    }
    Ok(u128::from(raw) << lo)
}

fn unpack_field<F: FieldValue>(
    word: u128,
    lo: u32,
    hi: u32,
    mnemonic: &'static str,
    field: &'static str,
) -> Result<F, DecodeErrorKind> {
    let raw = ((word >> lo) & ((1u128 << (hi - lo)) - 1)) as u64;
    F::from_raw(raw).ok_or(DecodeErrorKind::BadField { mnemonic, field, raw })
}

const fn field_mask(lo: u32, hi: u32) -> u128 {
    ((1u128 << (hi - lo)) - 1) << lo
}

/// Checks at compile time that a table entry's fields lie in the operand area and do not
/// overlap.
const fn check_layout(ranges: &[(u32, u32)]) {
    let mut i = 0;
    while i < ranges.len() {
        let (lo, hi) = ranges[i];
        assert!(lo >= 32 && lo < hi && hi <= 128, "field outside the operand bits 32..128");
        let mut j = i + 1;
        while j < ranges.len() {
            let (lo2, hi2) = ranges[j];
            assert!(hi <= lo2 || hi2 <= lo, "overlapping fields");
            j += 1;
        }
        i += 1;
    }
}

const fn check_unique(opcodes: &[u8]) {
    let mut i = 0;
    while i < opcodes.len() {
        let mut j = i + 1;
        while j < opcodes.len() {
            assert!(opcodes[i] != opcodes[j], "duplicate opcode");
            j += 1;
        }
        i += 1;
    }
}

macro_rules! route_of {
    (front, $it:ident) => {
        Route::Front
    };
    (ld, $it:ident) => {
        Route::Engine(Engine::Ld)
    };
    (mx, $it:ident) => {
        Route::Engine(Engine::Mx)
    };
    (vx, $it:ident) => {
        Route::Engine(Engine::Vx)
    };
    (st, $it:ident) => {
        Route::Engine(Engine::St)
    };
    (queue, $it:ident) => {
        Route::Engine($it.queue)
    };
}

macro_rules! route_info {
    (front) => {
        RouteInfo::Front
    };
    (ld) => {
        RouteInfo::Fixed(Engine::Ld)
    };
    (mx) => {
        RouteInfo::Fixed(Engine::Mx)
    };
    (vx) => {
        RouteInfo::Fixed(Engine::Vx)
    };
    (st) => {
        RouteInfo::Fixed(Engine::St)
    };
    (queue) => {
        RouteInfo::QueueField
    };
}

macro_rules! define_ops {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = $opcode:literal, $mnem:literal, route($route:ident) {
            $( $(#[doc = $fdoc:literal])* $field:ident : $fty:ident [$lo:literal .. $hi:literal] ),* $(,)?
        }
    )*) => {
        $(
            $(#[doc = $doc])*
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
            pub struct $name {
                $( $(#[doc = $fdoc])* pub $field: $fty, )*
            }

            impl From<$name> for Op {
                fn from(it: $name) -> Op {
                    Op::$name(it)
                }
            }

            const _: () = {
                check_layout(&[$(($lo, $hi)),*]);
                $(
                    assert!(
                        <$fty as FieldValue>::MIN_WIDTH <= $hi - $lo
                            && $hi - $lo <= <$fty as FieldValue>::MAX_WIDTH,
                        "field width does not suit its type"
                    );
                )*
            };
        )*

        /// An instruction's operation and operands.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Op {
            $( $(#[doc = $doc])* $name($name), )*
        }

        /// The instruction kinds, in table order (indexes [`OPS`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum OpKind {
            $( $(#[doc = $doc])* $name, )*
        }

        const _: () = check_unique(&[$($opcode),*]);

        /// Metadata of every instruction, in table order.
        pub static OPS: &[OpInfo] = &[
            $(
                OpInfo {
                    name: stringify!($name),
                    mnemonic: $mnem,
                    opcode: $opcode,
                    route: route_info!($route),
                    doc: concat!($($doc, "\n"),*),
                    fields: &[
                        $(
                            FieldInfo {
                                name: stringify!($field),
                                lo: $lo,
                                hi: $hi,
                                kind: <$fty as FieldValue>::KIND,
                                doc: concat!($($fdoc),*),
                            },
                        )*
                    ],
                    operand_mask: 0 $(| field_mask($lo, $hi))*,
                },
            )*
        ];

        impl Op {
            /// Which kind of instruction this is.
            pub fn kind(&self) -> OpKind {
                match self {
                    $( Op::$name(_) => OpKind::$name, )*
                }
            }

            /// Where it executes.
            pub fn route(&self) -> Route {
                match self {
                    $( Op::$name(_it) => route_of!($route, _it), )*
                }
            }

            fn pack(&self) -> Result<u128, EncodeError> {
                match self {
                    $(
                        Op::$name(_it) => {
                            #[allow(unused_mut, reason = "entries without fields")]
                            let mut word = 0u128;
                            $( word |= pack_field(_it.$field, $lo, $hi, $mnem, stringify!($field))?; )*
                            Ok(word)
                        }
                    )*
                }
            }

            fn unpack(opcode: u8, _word: u128) -> Result<Op, DecodeErrorKind> {
                match opcode {
                    $(
                        $opcode => Ok(Op::$name($name {
                            $( $field: unpack_field(_word, $lo, $hi, $mnem, stringify!($field))?, )*
                        })),
                    )*
                    other => Err(DecodeErrorKind::UnknownOpcode(other)),
                }
            }
        }

        /// The table entry for `opcode`.
        pub fn op_by_opcode(opcode: u8) -> Option<&'static OpInfo> {
            match opcode {
                $( $opcode => Some(&OPS[OpKind::$name as usize]), )*
                _ => None,
            }
        }
    };
}

crate::for_each_op!(define_ops);

impl OpKind {
    /// Its table entry.
    pub fn info(self) -> &'static OpInfo {
        &OPS[self as usize]
    }
}

impl Op {
    /// Its table entry.
    pub fn info(&self) -> &'static OpInfo {
        self.kind().info()
    }

    /// Its mnemonic.
    pub fn mnemonic(&self) -> &'static str {
        self.info().mnemonic
    }
}

/// The table entry for `mnemonic`.
pub fn op_by_mnemonic(mnemonic: &str) -> Option<&'static OpInfo> {
    OPS.iter().find(|op| op.mnemonic == mnemonic)
}

/// One instruction: an operation and its synchronisation slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Inst {
    /// Wait and signal slots (must be empty for front-end instructions).
    pub sync: Sync,
    /// The operation.
    pub op: Op,
}

impl Inst {
    /// An instruction without synchronisation.
    pub fn new(op: impl Into<Op>) -> Inst {
        Inst { sync: Sync::NONE, op: op.into() }
    }

    /// Adds a wait slot (panics past two: a programming error in the caller).
    pub fn wait(mut self, sem: Sem) -> Inst {
        let slot = self.sync.wait.iter_mut().find(|s| s.is_none()).expect("both wait slots used");
        *slot = Some(sem);
        self
    }

    /// Adds a signal slot (panics past two: a programming error in the caller).
    pub fn signal(mut self, sem: Sem) -> Inst {
        let slot =
            self.sync.signal.iter_mut().find(|s| s.is_none()).expect("both signal slots used");
        *slot = Some(sem);
        self
    }

    /// The 128-bit word.
    pub fn to_word(&self) -> Result<u128, EncodeError> {
        let info = self.op.info();
        if !info.has_sync() && !self.sync.is_empty() {
            return Err(EncodeError {
                mnemonic: info.mnemonic,
                field: "wait/signal",
                value: 0,
                width: 0,
            });
        }
        Ok(u128::from(info.opcode) | self.sync.to_bits() | self.op.pack()?)
    }

    /// The 16 little-endian bytes.
    pub fn encode(&self) -> Result<[u8; INST_BYTES], EncodeError> {
        Ok(self.to_word()?.to_le_bytes())
    }

    /// Decodes a 128-bit word, rejecting unknown opcodes, reserved bits and invalid values.
    pub fn from_word(word: u128) -> Result<Inst, DecodeErrorKind> {
        let opcode = (word & OPCODE_MASK) as u8;
        let info = op_by_opcode(opcode).ok_or(DecodeErrorKind::UnknownOpcode(opcode))?;
        let reserved = word & !info.allowed_mask();
        if reserved != 0 {
            return Err(DecodeErrorKind::ReservedBits { mnemonic: info.mnemonic, bits: reserved });
        }
        let sync = Sync::from_bits(word).map_err(|e| match e {
            SyncError::Reserved(bits) => {
                DecodeErrorKind::ReservedBits { mnemonic: info.mnemonic, bits }
            }
            SyncError::Order(slot) => DecodeErrorKind::SlotOrder { mnemonic: info.mnemonic, slot },
        })?;
        let op = Op::unpack(opcode, word)?;
        Ok(Inst { sync, op })
    }

    /// Decodes 16 little-endian bytes.
    pub fn decode(bytes: [u8; INST_BYTES]) -> Result<Inst, DecodeErrorKind> {
        Inst::from_word(u128::from_le_bytes(bytes))
    }
}

/// Decodes a whole instruction stream.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Inst>, DecodeError> {
    let chunks = bytes.chunks_exact(INST_BYTES);
    if !chunks.remainder().is_empty() {
        return Err(DecodeError::Truncated { len: bytes.len() });
    }
    chunks
        .enumerate()
        .map(|(index, chunk)| {
            let mut word = [0u8; INST_BYTES];
            word.copy_from_slice(chunk);
            Inst::decode(word).map_err(|kind| DecodeError::Inst { index, kind })
        })
        .collect()
}

/// Encodes a whole instruction stream.
pub fn encode_all(insts: &[Inst]) -> Result<Vec<u8>, (usize, EncodeError)> {
    let mut out = Vec::with_capacity(insts.len() * INST_BYTES);
    for (index, inst) in insts.iter().enumerate() {
        out.extend_from_slice(&inst.encode().map_err(|e| (index, e))?);
    }
    Ok(out)
}

/// The largest value field `field` of instruction `mnemonic` can hold, from the instruction
/// table (so limits the compiler respects are never written as separate literals); `None` for
/// an unknown instruction or field.
pub fn field_max(mnemonic: &str, field: &str) -> Option<u64> {
    let op = OPS.iter().find(|o| o.mnemonic == mnemonic)?;
    let f = op.fields.iter().find(|f| f.name == field)?;
    Some(if f.width() >= 64 { u64::MAX } else { (1u64 << f.width()) - 1 })
}

#[cfg(test)]
mod limit_tests {
    use super::field_max;

    #[test]
    fn field_limits_come_from_the_table() {
        assert_eq!(field_max("mx.matmul", "rows"), Some(4095));
        assert_eq!(field_max("mx.matmul", "a_stride"), Some(u64::from(u16::MAX)));
        assert_eq!(field_max("mx.matmul", "nope"), None);
        assert_eq!(field_max("nope", "rows"), None);
    }
}
