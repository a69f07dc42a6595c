//! The disassembler: [`Program`] (or raw instruction words) to text that the assembler turns
//! back into the identical bytes.
//!
//! Like the assembler it is driven entirely by the instruction table: it prints every field of
//! every instruction, in table order, so nothing depends on defaults.

use std::fmt::Write as _;

use crate::blob::{SegmentDecl, SegmentRole};
use crate::fields::{FieldKind, FieldValue, LocalAddr, Sem};
use crate::inst::{Inst, Sync};
use crate::program::{DmaDesc, Program, SHAPE_SRC0_COL_BROADCAST, SHAPE_SRC1_COL_BROADCAST, Shape};

/// Options for [`disassemble`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Append each instruction's index and encoding as a comment.
    pub hex: bool,
}

/// Writes a whole program: semaphore initial values, tables, instructions.
pub fn disassemble(program: &Program, opts: Options) -> String {
    disassemble_with_segments(program, &[], opts)
}

/// As [`disassemble`], starting with a `.seg` declaration (size and role) for each of a blob's
/// segments, so that assembling the text gives back the same program, tables and segment table.
/// What assembly cannot express is said in comments: the initial contents of constant segments
/// (bytes of the blob's CONST section), access bits that differ from the role's, and (by the
/// caller) I/O descriptors, metadata and debug ranges.
pub fn disassemble_with_segments(
    program: &Program,
    segments: &[SegmentDecl],
    opts: Options,
) -> String {
    let mut out = String::new();
    for s in segments {
        let role = match s.role {
            SegmentRole::Const => "const",
            SegmentRole::Arena => "arena",
            SegmentRole::Input => "input",
            SegmentRole::Output => "output",
            SegmentRole::InOut => "inout",
        };
        let _ = write!(out, ".seg seg{id} {id} size={} role={role}", s.size, id = s.id);
        if let Some((off, len)) = s.init {
            let _ = write!(
                out,
                " ; initialised from {len} bytes at offset {off} of the blob's constants (not carried by the text)"
            );
        }
        if s.access != s.role.access() {
            let _ =
                write!(out, " ; access bits {:#x} differ from the role's (not carried)", s.access);
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "; {} instructions, {} dma descriptors, {} shapes",
        program.insts.len(),
        program.dma.len(),
        program.shapes.len()
    );
    for (i, init) in program.sem_init.iter().enumerate() {
        if *init != 0 {
            let _ = writeln!(out, ".sem s{i} {i} init={init}");
        }
    }
    for (i, d) in program.dma.iter().enumerate() {
        let _ = writeln!(out, "{}", dma_line(i, d));
    }
    for (i, s) in program.shapes.iter().enumerate() {
        let _ = writeln!(out, "{}", shape_line(i, s));
    }
    for (i, inst) in program.insts.iter().enumerate() {
        let _ = write!(out, "{}", inst_text(inst, Some((program.dma.len(), program.shapes.len()))));
        if opts.hex {
            let word = inst.to_word().unwrap_or(0);
            let _ = write!(out, " ; {i}: {}", hex_words(word));
        }
        out.push('\n');
    }
    out
}

/// The word as four 32-bit little-endian words, low first (`0x00040310 0x04001003 ...`).
pub fn hex_words(word: u128) -> String {
    (0..4).map(|i| format!("{:08x}", (word >> (32 * i)) as u32)).collect::<Vec<_>>().join(" ")
}

fn dma_line(i: usize, d: &DmaDesc) -> String {
    format!(
        ".dma d{i} x_bytes={} y_count={} z_count={} y_stride={} z_stride={} near_y_pitch={} near_z_pitch={}",
        d.x_bytes, d.y_count, d.z_count, d.y_stride, d.z_stride, d.near_y_pitch, d.near_z_pitch
    )
}

fn shape_line(i: usize, s: &Shape) -> String {
    // Reserved flag bits cannot be written in assembly; the validator rejects them anyway, and
    // the comment keeps the disassembly honest about what the bytes held.
    let reserved = s.flags & !(SHAPE_SRC0_COL_BROADCAST | SHAPE_SRC1_COL_BROADCAST);
    let note = if reserved != 0 {
        format!(" ; reserved flag bits {reserved:#x} dropped")
    } else {
        String::new()
    };
    format!(
        ".shape sh{i} cols={} rows={} planes={} src0_col_bcast={} src1_col_bcast={} dst_row={} src0_row={} src1_row={} dst_plane={} src0_plane={} src1_plane={}{note}",
        s.cols,
        s.rows,
        s.planes,
        u8::from(s.flags & SHAPE_SRC0_COL_BROADCAST != 0),
        u8::from(s.flags & SHAPE_SRC1_COL_BROADCAST != 0),
        s.dst_row,
        s.src0_row,
        s.src1_row,
        s.dst_plane,
        s.src0_plane,
        s.src1_plane
    )
}

/// One instruction. With `tables` (the number of DMA descriptors and shapes), operands that
/// index an existing entry are written as the names [`disassemble`] defines (`d3`, `sh1`);
/// other indices are written as plain numbers.
pub fn inst_text(inst: &Inst, tables: Option<(usize, usize)>) -> String {
    let (n_dma, n_shapes) = tables.unwrap_or((0, 0));
    let info = inst.op.info();
    let word = inst.to_word().unwrap_or(0);
    let mut out = String::from(info.mnemonic);
    for field in info.fields {
        let raw = field.extract(word);
        let _ = write!(out, " {}=", field.name);
        match field.kind {
            FieldKind::Uint => write_uint(&mut out, raw),
            FieldKind::Bool | FieldKind::Seg => {
                let _ = write!(out, "{raw}");
            }
            FieldKind::Enum(names) => out.push_str(names.get(raw as usize).copied().unwrap_or("?")),
            FieldKind::Sem => {
                let _ = write!(out, "s{raw}");
            }
            FieldKind::Local => match LocalAddr::from_raw(raw) {
                Some(a) => {
                    let _ = write!(out, "{a}");
                }
                None => out.push('?'),
            },
            FieldKind::DmaDesc if (raw as usize) < n_dma => {
                let _ = write!(out, "d{raw}");
            }
            FieldKind::Shape if (raw as usize) < n_shapes => {
                let _ = write!(out, "sh{raw}");
            }
            FieldKind::DmaDesc | FieldKind::Shape => {
                let _ = write!(out, "{raw}");
            }
        }
    }
    write_sync(&mut out, &inst.sync);
    out
}

fn write_uint(out: &mut String, v: u64) {
    if v < 4096 {
        let _ = write!(out, "{v}");
    } else {
        let _ = write!(out, "{v:#x}");
    }
}

fn write_sync(out: &mut String, sync: &Sync) {
    for (key, slots) in [("wait", &sync.wait), ("signal", &sync.signal)] {
        let sems: Vec<String> = slots.iter().flatten().map(Sem::to_string).collect();
        if !sems.is_empty() {
            let _ = write!(out, " {key}={}", sems.join(","));
        }
    }
}
