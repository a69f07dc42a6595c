//! Rules 4 to 6: every descriptor, shape and instruction checked on its own against the
//! target (fields, local operands, DRAM extents per segment), with overflow-safe arithmetic.

#![deny(clippy::arithmetic_side_effects)]

use crate::config::DeviceConfig;
use crate::fields::{Axis, DmaDescId, Dtype, LocalAddr, Seg, ShapeId, Space};
use crate::inst::{Inst, Op, Route};
use crate::program::{
    DmaDesc, MAX_DMA_DESCS, MAX_INSTS, MAX_SHAPES, MAX_VX_ELEMENTS, Program, Shape, Walk,
};

use super::*;

/// A descriptor's extents, computed once.
#[derive(Clone, Copy, Debug)]
pub(super) struct DmaExtents {
    pub(super) far: u64,
    pub(super) near: u64,
}

pub(super) struct Verifier<'a> {
    pub(super) cfg: &'a DeviceConfig,
    pub(super) program: &'a Program,
    pub(super) errors: Vec<VerifyError>,
    pub(super) segments: [SegmentUse; Seg::COUNT],
}

impl Verifier<'_> {
    pub(super) fn error(&mut self, at: Location, kind: ErrorKind) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(VerifyError { at, kind });
        }
    }

    pub(super) fn check_sizes(&mut self) {
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

    pub(super) fn check_end(&mut self) {
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

    pub(super) fn check_dma_desc(&mut self, index: usize, d: &DmaDesc) -> Option<DmaExtents> {
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

    pub(super) fn check_shape(&mut self, index: usize, s: &Shape) -> bool {
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

    pub(super) fn check_inst(
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
                if !matches!(it.dtype, Dtype::S8 | Dtype::U8 | Dtype::S16 | Dtype::S32) {
                    c.field(
                        "dtype",
                        format!("requantization produces s8, u8, s16 or s32, not {}", it.dtype),
                    );
                }
                if let Some(s) = c.shape(it.shape, shapes_ok) {
                    c.walk("dst", it.dst, s.dst(it.dtype.size()), &s, it.dtype.size());
                    c.walk("src", it.src, s.src0(4), &s, 4);
                    let records = if it.per_channel { u64::from(s.cols) } else { 1 };
                    let size = crate::requant::record_bytes(it.bias) as u64;
                    c.local("params", it.params, records.saturating_mul(size), None);
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
pub(super) fn row_block(rows: u64, stride: u64, row_bytes: u64) -> Option<u64> {
    rows.checked_sub(1)?.checked_mul(stride)?.checked_add(row_bytes)
}

/// Checks for one instruction.
pub(super) struct InstCheck<'v, 'a> {
    pub(super) v: &'v mut Verifier<'a>,
    pub(super) at: Location,
}

impl InstCheck<'_, '_> {
    pub(super) fn err(&mut self, kind: ErrorKind) {
        self.v.error(self.at, kind);
    }

    pub(super) fn field(&mut self, field: &'static str, reason: String) {
        self.err(ErrorKind::Field { field, reason });
    }

    pub(super) fn nonzero(&mut self, field: &'static str, value: u64) {
        if value == 0 {
            self.field(field, "must not be 0".into());
        }
    }

    pub(super) fn in_range(&mut self, field: &'static str, value: u64, min: u64, max: u64) {
        if value < min || value > max {
            self.field(field, format!("{value} is outside {min}..={max}"));
        }
    }

    pub(super) fn dma(&mut self, id: DmaDescId, ok: &[Option<DmaExtents>]) -> Option<DmaExtents> {
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

    pub(super) fn shape(&mut self, id: ShapeId, ok: &[bool]) -> Option<Shape> {
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

    pub(super) fn dram(&mut self, seg: Seg, offset: u64, extent: u64, write: bool) {
        let Some(end) = offset.checked_add(extent).filter(|end| *end <= SEGMENT_SPACE) else {
            self.err(ErrorKind::DramRange { seg, offset, extent });
            return;
        };
        let slot = &mut self.v.segments[seg.index()];
        let field = if write { &mut slot.write_end } else { &mut slot.read_end };
        *field = Some(field.unwrap_or(0).max(end));
    }

    pub(super) fn walk(
        &mut self,
        operand: &'static str,
        addr: LocalAddr,
        walk: Walk,
        s: &Shape,
        size: u32,
    ) {
        let extent = Shape::extent(walk, s.planes, s.rows, s.cols, size);
        self.local_opt(operand, addr, extent, None);
    }

    pub(super) fn local(
        &mut self,
        operand: &'static str,
        addr: LocalAddr,
        extent: u64,
        space: Option<Space>,
    ) {
        self.local_opt(operand, addr, Some(extent), space);
    }

    /// Checks that `extent` bytes at `addr` lie inside its memory (and in `space`, if given);
    /// `None` means the extent overflowed.
    pub(super) fn local_opt(
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
