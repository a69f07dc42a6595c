//! Operand types of the instruction set: every field an instruction carries has one of these
//! types, and each type knows its raw encoding, its valid values and how it reads in assembly.

use std::fmt;

/// How a field's raw bits are interpreted; the assembler, the disassembler, the book and the
/// round-trip tests are all driven by this, so they need no per-instruction code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// An unsigned integer of the field's width.
    Uint,
    /// A single bit, written `0` or `1`.
    Bool,
    /// A dense enumeration; the raw value indexes the list of assembly names.
    Enum(&'static [&'static str]),
    /// A semaphore number `s0`..`s15`.
    Sem,
    /// A DRAM segment number `0`..`15`.
    Seg,
    /// A local (on-chip) address: `spad:OFFSET` or `acc:OFFSET`.
    Local,
    /// An index into the program's DMA descriptor table.
    DmaDesc,
    /// An index into the program's vector shape table.
    Shape,
}

/// A type that can be stored in an instruction field.
pub trait FieldValue: Copy + Sized {
    /// How the raw bits read.
    const KIND: FieldKind;
    /// Narrowest field that holds every value of this type.
    const MIN_WIDTH: u32;
    /// Widest field the raw value can fill (checked at compile time for every table field).
    const MAX_WIDTH: u32;
    /// The raw value; it may still be too wide for a narrow integer field (checked at encode).
    fn to_raw(self) -> u64;
    /// The value for raw bits, or `None` when the bits name no valid value.
    fn from_raw(raw: u64) -> Option<Self>;
}

macro_rules! uint_field {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            const KIND: FieldKind = FieldKind::Uint;
            const MIN_WIDTH: u32 = 1;
            const MAX_WIDTH: u32 = <$t>::BITS;
            fn to_raw(self) -> u64 {
                u64::from(self)
            }
            fn from_raw(raw: u64) -> Option<Self> {
                <$t>::try_from(raw).ok()
            }
        }
    )*};
}
uint_field!(u8, u16, u32, u64);

impl FieldValue for bool {
    const KIND: FieldKind = FieldKind::Bool;
    const MIN_WIDTH: u32 = 1;
    const MAX_WIDTH: u32 = 1;
    fn to_raw(self) -> u64 {
        u64::from(self)
    }
    fn from_raw(raw: u64) -> Option<Self> {
        match raw {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

/// Defines a dense field enumeration: raw value = position in the list.
macro_rules! field_enum {
    (
        $(#[doc = $doc:literal])*
        $name:ident [$bits:literal] {
            $( $(#[doc = $vdoc:literal])* $variant:ident => $text:literal ),* $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name {
            $( $(#[doc = $vdoc])* $variant, )*
        }

        impl $name {
            /// Every value, in encoding order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            /// Assembly names, in encoding order.
            pub const NAMES: &'static [&'static str] = &[$($text),*];
            /// One-line descriptions, in encoding order (for the book).
            pub const DOCS: &'static [&'static str] = &[$(concat!($($vdoc),*)),*];

            /// The assembly name.
            pub fn name(self) -> &'static str {
                Self::NAMES[self as usize]
            }

            /// The value with assembly name `name`, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::NAMES.iter().position(|n| *n == name).map(|i| Self::ALL[i])
            }
        }

        const _: () = assert!($name::ALL.len() <= 1 << $bits, "enumeration too large for its field");

        impl FieldValue for $name {
            const KIND: FieldKind = FieldKind::Enum(Self::NAMES);
            const MIN_WIDTH: u32 = $bits;
            const MAX_WIDTH: u32 = $bits;
            fn to_raw(self) -> u64 {
                self as u64
            }
            fn from_raw(raw: u64) -> Option<Self> {
                usize::try_from(raw).ok().and_then(|i| Self::ALL.get(i).copied())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.name())
            }
        }
    };
}

field_enum! {
    /// The four in-order engine queues. The front-end routes each instruction to one of them
    /// (or executes it itself: `end`, `barrier`).
    Engine [2] {
        /// DMA in: DRAM to scratchpad/accumulator, fills and on-chip copies.
        Ld => "ld",
        /// The matrix engine.
        Mx => "mx",
        /// The vector engine.
        Vx => "vx",
        /// DMA out: scratchpad/accumulator to DRAM.
        St => "st",
    }
}

field_enum! {
    /// Element data types.
    Dtype [3] {
        /// Signed 8-bit integer.
        S8 => "s8",
        /// Unsigned 8-bit integer.
        U8 => "u8",
        /// Signed 16-bit integer.
        S16 => "s16",
        /// Signed 32-bit integer.
        S32 => "s32",
        /// bfloat16 (1 sign, 8 exponent, 7 mantissa bits).
        Bf16 => "bf16",
        /// IEEE 754 binary32.
        F32 => "f32",
    }
}

impl Dtype {
    /// Size of one element in bytes.
    pub fn size(self) -> u32 {
        match self {
            Dtype::S8 | Dtype::U8 => 1,
            Dtype::S16 | Dtype::Bf16 => 2,
            Dtype::S32 | Dtype::F32 => 4,
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::Bf16 | Dtype::F32)
    }
}

field_enum! {
    /// Element-wise binary operations of `vx.binary`.
    BinOp [5] {
        /// `a + b` (integers saturate).
        Add => "add",
        /// `a - b` (integers saturate).
        Sub => "sub",
        /// `a * b` (integers saturate).
        Mul => "mul",
        /// `a / b` (floating point only).
        Div => "div",
        /// `max(a, b)`.
        Max => "max",
        /// `min(a, b)`.
        Min => "min",
        /// `a` raised to `b` (floating point only).
        Pow => "pow",
        /// Bitwise and (integers only).
        And => "and",
        /// Bitwise or (integers only).
        Or => "or",
        /// Bitwise exclusive or (integers only).
        Xor => "xor",
        /// `a << b`, `b` taken modulo the element width (integers only).
        Shl => "shl",
        /// Arithmetic (signed) or logical (unsigned) `a >> b`, `b` modulo the width (integers only).
        Shr => "shr",
        /// Multiply-accumulate `d + a * b`, `d` the destination's old value: exactly `mul`
        /// then `add` (the product rounded or saturated to the type first, not fused).
        Mac => "mac",
    }
}

impl BinOp {
    /// Whether the operation is defined for `dtype`.
    pub fn supports(self, dtype: Dtype) -> bool {
        match self {
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Max | BinOp::Min | BinOp::Mac => true,
            BinOp::Div | BinOp::Pow => dtype.is_float(),
            BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Shl | BinOp::Shr => !dtype.is_float(),
        }
    }

    /// Whether the vector engine runs this operation at the slow (transcendental) rate.
    pub fn is_slow(self) -> bool {
        matches!(self, BinOp::Div | BinOp::Pow)
    }
}

field_enum! {
    /// Element-wise unary operations of `vx.unary`.
    UnOp [5] {
        /// Copy; converts when the input and output types differ (round half to even, saturate).
        Mov => "mov",
        /// `max(x, 0)`.
        Relu => "relu",
        /// `|x|` (integers saturate).
        Abs => "abs",
        /// `-x` (integers saturate).
        Neg => "neg",
        /// `e^x` (floating point only).
        Exp => "exp",
        /// Natural logarithm (floating point only).
        Log => "log",
        /// Square root (floating point only).
        Sqrt => "sqrt",
        /// `1 / sqrt(x)` (floating point only).
        Rsqrt => "rsqrt",
        /// `1 / x` (floating point only).
        Recip => "recip",
        /// Hyperbolic tangent (floating point only).
        Tanh => "tanh",
        /// `1 / (1 + e^-x)` (floating point only).
        Sigmoid => "sigmoid",
        /// The error function (floating point only).
        Erf => "erf",
        /// Round toward negative infinity (floating point only).
        Floor => "floor",
        /// Round toward positive infinity (floating point only).
        Ceil => "ceil",
        /// Round half to even (floating point only).
        Round => "round",
    }
}

impl UnOp {
    /// Whether the operation is defined from `input` to `output`.
    pub fn supports(self, input: Dtype, output: Dtype) -> bool {
        match self {
            UnOp::Mov => true,
            UnOp::Relu | UnOp::Abs | UnOp::Neg => input == output,
            _ => input == output && input.is_float(),
        }
    }

    /// Whether the vector engine runs this operation at the slow (transcendental) rate.
    pub fn is_slow(self) -> bool {
        matches!(
            self,
            UnOp::Exp
                | UnOp::Log
                | UnOp::Sqrt
                | UnOp::Rsqrt
                | UnOp::Recip
                | UnOp::Tanh
                | UnOp::Sigmoid
                | UnOp::Erf
        )
    }
}

field_enum! {
    /// Reductions of `vx.reduce`.
    ReduceOp [2] {
        /// Sum (integers: exact, then saturated to the output type; floats: in index order).
        Sum => "sum",
        /// Maximum.
        Max => "max",
        /// Minimum.
        Min => "min",
    }
}

impl ReduceOp {
    /// Whether the reduction of `input` elements may produce `output`: sums of integers give
    /// `s32`, sums of floats the same type or `f32`, max and min the input type.
    pub fn supports(self, input: Dtype, output: Dtype) -> bool {
        match self {
            ReduceOp::Sum if input.is_float() => output == input || output == Dtype::F32,
            ReduceOp::Sum => output == Dtype::S32,
            ReduceOp::Max | ReduceOp::Min => output == input,
        }
    }
}

field_enum! {
    /// Which axis of a shape `vx.reduce` folds.
    Axis [1] {
        /// Fold the columns of each row into one element.
        Cols => "cols",
        /// Fold the rows of each plane into one row.
        Rows => "rows",
    }
}

/// Defines a 4-bit architectural number (semaphore, segment): a checked constructor, its
/// index, and its field encoding.
macro_rules! small_index {
    ($(#[doc = $doc:literal])* $name:ident, $kind:expr, $count_doc:literal, $prefix:literal) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u8);

        impl $name {
            #[doc = $count_doc]
            pub const COUNT: usize = 16;

            /// The one numbered `n`, if it exists.
            pub fn new(n: u8) -> Option<$name> {
                (usize::from(n) < Self::COUNT).then_some($name(n))
            }

            /// Its number.
            pub fn index(self) -> usize {
                usize::from(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl FieldValue for $name {
            const KIND: FieldKind = $kind;
            const MIN_WIDTH: u32 = 4;
            const MAX_WIDTH: u32 = 4;
            fn to_raw(self) -> u64 {
                u64::from(self.0)
            }
            fn from_raw(raw: u64) -> Option<Self> {
                u8::try_from(raw).ok().and_then($name::new)
            }
        }
    };
}

small_index!(
    /// A semaphore number, `0..16`.
    Sem, FieldKind::Sem, "Number of architectural semaphores.", "s"
);

small_index!(
    /// A DRAM segment number, `0..16`. Segments are bound to buffers at submit time; programs
    /// never see raw addresses.
    Seg, FieldKind::Seg, "Number of architectural segments.", ""
);

/// The two on-chip memories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// The scratchpad: inputs, weights, tables, vector results.
    Spad,
    /// The accumulator memory: 32-bit partial sums written by the matrix engine.
    Acc,
}

impl Space {
    /// The assembly prefix.
    pub fn name(self) -> &'static str {
        match self {
            Space::Spad => "spad",
            Space::Acc => "acc",
        }
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A byte address in one of the on-chip memories. Encoded in 24 bits: bit 23 selects the
/// accumulator, bits 22..0 are the byte offset (so either memory can be up to 8 MiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalAddr {
    /// Which memory.
    pub space: Space,
    /// Byte offset, below [`LocalAddr::MAX_OFFSET`].
    pub offset: u32,
}

impl LocalAddr {
    /// One past the largest encodable offset (8 MiB).
    pub const MAX_OFFSET: u32 = 1 << 23;

    /// A scratchpad address.
    pub fn spad(offset: u32) -> LocalAddr {
        LocalAddr { space: Space::Spad, offset }
    }

    /// An accumulator address.
    pub fn acc(offset: u32) -> LocalAddr {
        LocalAddr { space: Space::Acc, offset }
    }
}

impl fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:#x}", self.space, self.offset)
    }
}

impl FieldValue for LocalAddr {
    const KIND: FieldKind = FieldKind::Local;
    const MIN_WIDTH: u32 = 24;
    const MAX_WIDTH: u32 = 24;
    fn to_raw(self) -> u64 {
        let space = match self.space {
            Space::Spad => 0,
            Space::Acc => 1 << 23,
        };
        // An offset too large for 23 bits spills into bit 24 and is rejected by the encoder's
        // width check instead of silently changing the space bit.
        let offset = if self.offset >= Self::MAX_OFFSET { 1 << 24 } else { u64::from(self.offset) };
        space | offset
    }
    fn from_raw(raw: u64) -> Option<Self> {
        if raw >= 1 << 24 {
            return None;
        }
        let space = if raw & (1 << 23) != 0 { Space::Acc } else { Space::Spad };
        let offset = u32::try_from(raw & ((1 << 23) - 1)).ok()?;
        Some(LocalAddr { space, offset })
    }
}

/// Index into the program's DMA descriptor table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DmaDescId(pub u16);

impl FieldValue for DmaDescId {
    const KIND: FieldKind = FieldKind::DmaDesc;
    const MIN_WIDTH: u32 = 16;
    const MAX_WIDTH: u32 = 16;
    fn to_raw(self) -> u64 {
        u64::from(self.0)
    }
    fn from_raw(raw: u64) -> Option<Self> {
        u16::try_from(raw).ok().map(DmaDescId)
    }
}

/// Index into the program's vector shape table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeId(pub u16);

impl FieldValue for ShapeId {
    const KIND: FieldKind = FieldKind::Shape;
    const MIN_WIDTH: u32 = 16;
    const MAX_WIDTH: u32 = 16;
    fn to_raw(self) -> u64 {
        u64::from(self.0)
    }
    fn from_raw(raw: u64) -> Option<Self> {
        u16::try_from(raw).ok().map(ShapeId)
    }
}
