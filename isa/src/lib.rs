//! The accelc accelerator's instruction set architecture, defined once.
//!
//! - [`table`]: the instruction table every other part is generated from;
//! - [`fields`] and [`inst`]: operand types, typed instructions and their 128-bit encoding;
//! - [`program`]: programs with their DMA descriptor and vector shape tables;
//! - [`config`]: device configurations and derived figures;
//! - [`cost`]: per-instruction cycle costs shared by validator, simulator and compiler;
//! - [`asm`] and [`disasm`]: the textual form;
//! - [`verify`]: the validator a driver runs before an untrusted program reaches the device;
//! - [`blob`]: the container a compiled model travels in;
//! - [`book`]: reference pages for the book, generated from the table.

pub mod table;

pub mod asm;
pub mod blob;
pub mod book;
pub mod config;
pub mod cost;
pub mod disasm;
pub mod fields;
pub mod file;
pub mod inst;
pub mod plan;
pub mod program;
pub mod requant;
pub mod verify;

pub use config::DeviceConfig;
pub use fields::{
    Axis, BinOp, DmaDescId, Dtype, Engine, FieldKind, FieldValue, LocalAddr, ReduceOp, Seg, Sem,
    ShapeId, Space, UnOp,
};
pub use inst::{Inst, Op, OpKind, Route, Sync};
pub use program::{DmaDesc, Program, Shape};

/// The ISA version implemented here, `(major, minor)`. Instruction semantics never change
/// within a major version; new instructions take new opcodes and bump the minor version.
pub const ISA_VERSION: (u16, u16) = (1, 1);

/// Text from the input (a node name, a message quoting attribute values) shown in an error,
/// cut to at most [`Clipped::MAX`] bytes at a character boundary with the rest counted, so a
/// megabyte-long `perm` or name does not become a megabyte-long message.
pub struct Clipped<'a>(pub &'a str);

impl Clipped<'_> {
    /// The longest text shown whole (bytes).
    pub const MAX: usize = 1024;
}

impl std::fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        if s.len() <= Self::MAX {
            return f.write_str(s);
        }
        let mut end = Self::MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}… ({} more bytes)", &s[..end], s.len() - end)
    }
}
