//! Functional execution of one instruction: an exhaustive match over the ISA's generated `Op`
//! enum, so an instruction added to the table does not compile until it is simulated here.

use accelc_isa::inst::MxMatmul;
use accelc_isa::program::{DmaDesc, MAX_VX_ELEMENTS, Shape, Walk};
use accelc_isa::{Axis, BinOp, Dtype, LocalAddr, Op, Program, ReduceOp, Space, UnOp};

use super::numerics::{
    RequantRecord, bf16_to_f32, canon, f32_to_bf16, float_to_int, fmax, fmin, int_to_float,
    saturate, sigmoid,
};
use std::time::Instant;

use super::{Fault, FaultKind, Segments, Simulator, WATCHDOG_ROWS, Weights, Work, kernels};

fn fault(kind: FaultKind, inst: usize, message: impl Into<String>) -> Fault {
    Fault { kind, engine: None, inst, seg: None, offset: None, message: message.into() }
}

/// Executes instruction `i` of `program`.
pub(crate) fn execute(
    sim: &mut Simulator,
    program: &Program,
    i: usize,
    segs: &mut Segments<'_>,
    deadline: Option<Instant>,
) -> Result<Work, Fault> {
    let mut x = Exec { sim, program, i, deadline };
    match program.insts[i].op {
        Op::Nop(_)
        | Op::End(_)
        | Op::Barrier(_)
        | Op::SemSignal(_)
        | Op::SemWait(_)
        | Op::Marker(_) => Ok(Work::default()),
        Op::DmaLoad(it) => x.dma_dram(it.desc.0, it.seg.index(), it.offset, it.dst, false, segs),
        Op::DmaStore(it) => x.dma_dram(it.desc.0, it.seg.index(), it.offset, it.src, true, segs),
        Op::DmaFill(it) => x.fill(it.desc.0, it.value, it.dst),
        Op::DmaCopy(it) => x.copy(it.desc.0, it.src, it.dst),
        Op::MxLoadW(it) => x.load_w(it.src, it.k, it.n, it.stride, it.dtype),
        Op::MxMatmul(it) => x.matmul(&it),
        Op::VxBinary(it) => x.binary(it.op, it.dtype, it.shape.0, it.dst, it.src0, it.src1),
        Op::VxUnary(it) => x.unary(it.op, it.dtype, it.out_dtype, it.shape.0, it.dst, it.src),
        Op::VxReduce(it) => {
            x.reduce(it.op, it.axis, it.dtype, it.out_dtype, it.shape.0, it.dst, it.src)
        }
        Op::VxRequant(it) => {
            x.requant(it.per_channel, it.bias, it.dtype, it.shape.0, it.dst, it.src, it.params)
        }
        Op::VxLut(it) => x.lut(it.dtype, it.shape.0, it.dst, it.src, it.table),
        Op::VxTranspose(it) => x.transpose(it.dtype, it.shape.0, it.dst, it.src),
    }
}

/// Values of one operand, decoded: integers exactly, floats widened to f32.
enum Vals {
    I(Vec<i64>),
    F(Vec<f32>),
}

struct Exec<'s, 'p> {
    sim: &'s mut Simulator,
    program: &'p Program,
    i: usize,
    deadline: Option<Instant>,
}

impl Exec<'_, '_> {
    /// Called once per DMA row: every [`WATCHDOG_ROWS`] rows, stops the instruction if the
    /// job is past its wall-clock deadline.
    fn tick(&self, rows: &mut usize) -> Result<(), Fault> {
        *rows += 1;
        if (*rows).is_multiple_of(WATCHDOG_ROWS)
            && self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return Err(super::past_deadline(self.i));
        }
        Ok(())
    }

    fn mem(&self, space: Space) -> &[u8] {
        match space {
            Space::Spad => &self.sim.spad,
            Space::Acc => &self.sim.acc,
        }
    }

    fn mem_mut(&mut self, space: Space) -> &mut Vec<u8> {
        match space {
            Space::Spad => &mut self.sim.spad,
            Space::Acc => &mut self.sim.acc,
        }
    }

    /// Checks that `extent` bytes at `addr` lie in its memory (and in `space`, if given).
    fn check(
        &self,
        operand: &str,
        addr: LocalAddr,
        extent: Option<u64>,
        space: Option<Space>,
    ) -> Result<usize, Fault> {
        if let Some(s) = space
            && addr.space != s
        {
            return Err(fault(
                FaultKind::LocalRange,
                self.i,
                format!("operand `{operand}` must be in {}", s.name()),
            ));
        }
        let len = self.mem(addr.space).len() as u64;
        let start = u64::from(addr.offset);
        match extent.and_then(|e| start.checked_add(e)) {
            Some(end) if end <= len => Ok(addr.offset as usize),
            _ => Err(fault(
                FaultKind::LocalRange,
                self.i,
                format!(
                    "operand `{operand}` at {addr} reaches past the {len}-byte {}",
                    addr.space.name()
                ),
            )),
        }
    }

    fn desc(&self, id: u16) -> Result<DmaDesc, Fault> {
        let d = self.program.dma.get(usize::from(id)).copied();
        d.filter(|d| d.far_extent().is_some() && d.near_extent().is_some()).ok_or_else(|| {
            fault(
                FaultKind::Illegal,
                self.i,
                format!("dma descriptor {id} is missing or malformed"),
            )
        })
    }

    fn shape(&self, id: u16) -> Result<Shape, Fault> {
        let s = self.program.shapes.get(usize::from(id)).copied();
        s.filter(|s| s.elements() > 0 && s.elements() <= MAX_VX_ELEMENTS && s.flags_ok())
            .ok_or_else(|| {
                fault(FaultKind::Illegal, self.i, format!("shape {id} is missing or malformed"))
            })
    }

    fn dma_dram(
        &mut self,
        desc: u16,
        seg: usize,
        offset: u64,
        local: LocalAddr,
        store: bool,
        segs: &mut Segments<'_>,
    ) -> Result<Work, Fault> {
        let d = self.desc(desc)?;
        let far = d.far_extent().unwrap_or(u64::MAX);
        let near = d.near_extent();
        let base = self.check(if store { "src" } else { "dst" }, local, near, None)?;
        let i = self.i;
        let seg_fault = |kind, message: String| Fault {
            kind,
            engine: None,
            inst: i,
            seg: Some(seg as u8),
            offset: Some(offset),
            message,
        };
        let Some(buf) = segs.get_mut(seg).and_then(Option::as_mut) else {
            return Err(seg_fault(FaultKind::SegmentRange, format!("segment {seg} is not bound")));
        };
        let len = buf.data.len() as u64;
        if offset.checked_add(far).is_none_or(|end| end > len) {
            return Err(seg_fault(
                FaultKind::SegmentRange,
                format!(
                    "transfer of extent {far:#x} at {offset:#x} reaches past the {len}-byte segment"
                ),
            ));
        }
        if store && !buf.writable {
            return Err(seg_fault(FaultKind::ReadOnly, format!("segment {seg} is read-only")));
        }
        let x = d.x_bytes as usize;
        let (deadline, mut rows) = (self.deadline, 0usize);
        let mem = match local.space {
            Space::Spad => &mut self.sim.spad,
            Space::Acc => &mut self.sim.acc,
        };
        // Offsets are within the checked extents, so they fit in usize.
        for z in 0..usize::from(d.z_count) {
            for y in 0..usize::from(d.y_count) {
                rows += 1;
                if rows.is_multiple_of(WATCHDOG_ROWS)
                    && deadline.is_some_and(|t| Instant::now() >= t)
                {
                    return Err(super::past_deadline(i));
                }
                let f = offset as usize + z * d.z_stride as usize + y * d.y_stride as usize;
                let n = base + z * d.near_z_pitch as usize + y * d.near_y_pitch as usize;
                if store {
                    buf.data[f..f + x].copy_from_slice(&mem[n..n + x]);
                } else {
                    mem[n..n + x].copy_from_slice(&buf.data[f..f + x]);
                }
            }
        }
        Ok(Work { bytes: d.bytes(), macs: 0 })
    }

    fn fill(&mut self, desc: u16, value: u32, dst: LocalAddr) -> Result<Work, Fault> {
        let d = self.desc(desc)?;
        let base = self.check("dst", dst, d.near_extent(), None)?;
        let pattern = value.to_le_bytes();
        let x = d.x_bytes as usize;
        let (deadline, mut rows) = (self.deadline, 0usize);
        let i = self.i;
        let mem = self.mem_mut(dst.space);
        for z in 0..usize::from(d.z_count) {
            for y in 0..usize::from(d.y_count) {
                rows += 1;
                if rows.is_multiple_of(WATCHDOG_ROWS)
                    && deadline.is_some_and(|t| Instant::now() >= t)
                {
                    return Err(super::past_deadline(i));
                }
                let n = base + z * d.near_z_pitch as usize + y * d.near_y_pitch as usize;
                for (k, b) in mem[n..n + x].iter_mut().enumerate() {
                    *b = pattern[k % 4];
                }
            }
        }
        Ok(Work { bytes: d.bytes(), macs: 0 })
    }

    fn copy(&mut self, desc: u16, src: LocalAddr, dst: LocalAddr) -> Result<Work, Fault> {
        let d = self.desc(desc)?;
        let sbase = self.check("src", src, d.far_extent(), None)?;
        let dbase = self.check("dst", dst, d.near_extent(), None)?;
        let x = d.x_bytes as usize;
        let mut rows = 0usize;
        for z in 0..usize::from(d.z_count) {
            for y in 0..usize::from(d.y_count) {
                self.tick(&mut rows)?;
                let s = sbase + z * d.z_stride as usize + y * d.y_stride as usize;
                let t = dbase + z * d.near_z_pitch as usize + y * d.near_y_pitch as usize;
                if src.space == dst.space {
                    self.mem_mut(src.space).copy_within(s..s + x, t);
                } else {
                    let run = self.mem(src.space)[s..s + x].to_vec();
                    self.mem_mut(dst.space)[t..t + x].copy_from_slice(&run);
                }
            }
        }
        Ok(Work { bytes: d.bytes(), macs: 0 })
    }

    fn load_w(
        &mut self,
        src: LocalAddr,
        k: u8,
        n: u8,
        stride: u16,
        dtype: Dtype,
    ) -> Result<Work, Fault> {
        let dim = self.sim.cfg.array_dim;
        if k == 0 || n == 0 || u32::from(k) > dim || u32::from(n) > dim {
            return Err(fault(
                FaultKind::Illegal,
                self.i,
                format!("weight tile {k}x{n} does not fit the {dim}x{dim} array"),
            ));
        }
        if !matches!(dtype, Dtype::S8 | Dtype::Bf16 | Dtype::F32)
            || !self.sim.cfg.matmul_supports(dtype)
        {
            return Err(fault(
                FaultKind::Illegal,
                self.i,
                format!("{dtype} weights are not supported"),
            ));
        }
        let (k, n) = (usize::from(k), usize::from(n));
        let es = dtype.size() as usize;
        let extent = (k as u64 - 1) * u64::from(stride) + (n * es) as u64;
        let base = self.check("src", src, Some(extent), Some(Space::Spad))?;
        let mem = &self.sim.spad;
        // Row by row: each weight row is `n` contiguous elements, decoded from one slice.
        let rows = (0..k).map(|r| &mem[base + r * usize::from(stride)..][..n * es]);
        if dtype == Dtype::S8 {
            let w = kernels::pair_weights(rows, k, n);
            self.sim.weights = Some(Weights::Int { k, n, w });
            return Ok(Work { bytes: (k * n * es) as u64, macs: 0 });
        }
        let mut w = Vec::with_capacity(k * n);
        match dtype {
            Dtype::Bf16 => rows.for_each(|row| {
                w.extend(row.chunks_exact(2).map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))))
            }),
            _ => rows.for_each(|row| {
                w.extend(row.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }),
        }
        self.sim.weights = Some(Weights::Float { k, n, dtype, w });
        Ok(Work { bytes: (k * n * es) as u64, macs: 0 })
    }

    fn matmul(&mut self, it: &MxMatmul) -> Result<Work, Fault> {
        let Some(weights) = self.sim.weights.take() else {
            return Err(fault(FaultKind::Illegal, self.i, "no weights loaded"));
        };
        let result = self.matmul_with(&weights, it);
        self.sim.weights = Some(weights);
        result
    }

    fn matmul_with(&mut self, weights: &Weights, it: &MxMatmul) -> Result<Work, Fault> {
        let MxMatmul { a, a_stride, c, c_stride, rows, dtype, accumulate } = *it;
        let (k, n) = match weights {
            Weights::Int { k, n, .. } | Weights::Float { k, n, .. } => (*k, *n),
        };
        let compatible = match weights {
            Weights::Int { .. } => matches!(dtype, Dtype::S8 | Dtype::U8),
            Weights::Float { dtype: w, .. } => *w == dtype,
        };
        if !compatible || rows == 0 {
            return Err(fault(
                FaultKind::Illegal,
                self.i,
                format!("{dtype} inputs cannot multiply the loaded weights"),
            ));
        }
        let rows = usize::from(rows);
        let es = dtype.size() as usize;
        let a_ext = (rows as u64 - 1) * u64::from(a_stride) + (k * es) as u64;
        let c_ext = (rows as u64 - 1) * u64::from(c_stride) + (n * 4) as u64;
        let abase = self.check("a", a, Some(a_ext), Some(Space::Spad))?;
        let cbase = self.check("c", c, Some(c_ext), Some(Space::Acc))?;
        let (spad, acc) = (&self.sim.spad, &mut self.sim.acc);
        let a_stride = usize::from(a_stride);
        let c_stride = usize::from(c_stride);
        let job = kernels::MatmulJob {
            spad,
            acc,
            abase,
            a_stride,
            cbase,
            c_stride,
            rows,
            k,
            n,
            dtype,
            accumulate,
        };
        match weights {
            Weights::Int { w, .. } => kernels::int_matmul_rows(job, w),
            Weights::Float { w, .. } => kernels::matmul_rows(job, w),
        }
        Ok(Work { bytes: (rows * (k * es + n * 4)) as u64, macs: (rows * k * n) as u64 })
    }

    /// Reads an operand's elements in (plane, row, column) order.
    fn gather(
        &self,
        operand: &str,
        addr: LocalAddr,
        walk: Walk,
        dims: (u16, u16, u16),
        dtype: Dtype,
    ) -> Result<Vals, Fault> {
        let (p, r, c) = dims;
        let size = dtype.size();
        let base = self.check(operand, addr, Shape::extent(walk, p, r, c, size), None)?;
        let mem = self.mem(addr.space);
        let n = usize::from(p) * usize::from(r) * usize::from(c);
        if !self.sim.reference_paths {
            return Ok(gather_fast(mem, base, walk, dims, dtype));
        }
        let offsets = (0..usize::from(p)).flat_map(move |pi| {
            (0..usize::from(r)).flat_map(move |ri| {
                (0..usize::from(c)).map(move |ci| {
                    base + pi * walk.plane as usize
                        + ri * walk.row as usize
                        + ci * walk.col as usize
                })
            })
        });
        Ok(if dtype.is_float() {
            let mut v = Vec::with_capacity(n);
            v.extend(offsets.map(|o| read_f32(mem, o, dtype)));
            Vals::F(v)
        } else {
            let mut v = Vec::with_capacity(n);
            v.extend(offsets.map(|o| read_int(mem, o, dtype)));
            Vals::I(v)
        })
    }

    /// Writes values in (plane, row, column) order, saturating integers and rounding bf16.
    fn scatter(
        &mut self,
        operand: &str,
        addr: LocalAddr,
        walk: Walk,
        dims: (u16, u16, u16),
        dtype: Dtype,
        vals: &Vals,
    ) -> Result<(), Fault> {
        let (p, r, c) = dims;
        let size = dtype.size() as usize;
        let base = self.check(operand, addr, Shape::extent(walk, p, r, c, size as u32), None)?;
        let fast = !self.sim.reference_paths;
        let mem = self.mem_mut(addr.space);
        if fast {
            scatter_fast(mem, base, walk, dims, dtype, vals);
            return Ok(());
        }
        let mut idx = 0usize;
        for pi in 0..usize::from(p) {
            for ri in 0..usize::from(r) {
                for ci in 0..usize::from(c) {
                    let o = base
                        + pi * walk.plane as usize
                        + ri * walk.row as usize
                        + ci * walk.col as usize;
                    match vals {
                        Vals::I(v) => write_int(mem, o, dtype, v[idx]),
                        Vals::F(v) => write_f32(mem, o, dtype, v[idx]),
                    }
                    idx += 1;
                }
            }
        }
        Ok(())
    }

    fn binary(
        &mut self,
        op: BinOp,
        dtype: Dtype,
        shape: u16,
        dst: LocalAddr,
        src0: LocalAddr,
        src1: LocalAddr,
    ) -> Result<Work, Fault> {
        if !op.supports(dtype) {
            return Err(fault(
                FaultKind::Illegal,
                self.i,
                format!("{op} is not defined for {dtype}"),
            ));
        }
        let s = self.shape(shape)?;
        let size = dtype.size();
        let dims = (s.planes, s.rows, s.cols);
        if !self.sim.reference_paths
            && let Some(work) = self.binary_rows(op, dtype, &s, dst, src0, src1)
        {
            return Ok(work);
        }
        let a = self.gather("src0", src0, s.src0(size), dims, dtype)?;
        let b = self.gather("src1", src1, s.src1(size), dims, dtype)?;
        let fast = !self.sim.reference_paths;
        let mut out = match (a, b) {
            (Vals::F(a), Vals::F(b)) if fast => Vals::F(float_binary_fast(op, &a, &b)),
            (Vals::F(a), Vals::F(b)) => {
                Vals::F(a.iter().zip(&b).map(|(&x, &y)| float_binary(op, x, y)).collect())
            }
            (Vals::I(a), Vals::I(b)) if fast => Vals::I(int_binary_fast(op, &a, &b, dtype)),
            (Vals::I(a), Vals::I(b)) => {
                Vals::I(a.iter().zip(&b).map(|(&x, &y)| int_binary(op, x, y, dtype)).collect())
            }
            _ => return Err(fault(FaultKind::Illegal, self.i, "mixed operand classes")),
        };
        // Multiply-accumulate: the product above (rounded or saturated), plus the old
        // destination, read before any element is written.
        if op == BinOp::Mac {
            // The product as `mul` would store it.
            let round = |p: f32| {
                if dtype == Dtype::Bf16 { bf16_to_f32(f32_to_bf16(p)) } else { p }
            };
            out = match (out, self.gather("dst", dst, s.dst(size), dims, dtype)?) {
                (Vals::F(p), Vals::F(d)) => {
                    Vals::F(p.iter().zip(&d).map(|(&p, &d)| canon(d + round(p))).collect())
                }
                (Vals::I(p), Vals::I(d)) => {
                    Vals::I(p.iter().zip(&d).map(|(&p, &d)| d + saturate(p, dtype)).collect())
                }
                _ => return Err(fault(FaultKind::Illegal, self.i, "mixed operand classes")),
            };
        }
        self.scatter("dst", dst, s.dst(size), dims, dtype, &out)?;
        Ok(Work { bytes: 3 * s.elements() * u64::from(size), macs: 0 })
    }

    /// The fast path of [`Exec::binary`] for f32 and s32 arithmetic: row by row in place,
    /// without decoding whole operands. Taken only when that cannot differ from reading every
    /// operand before writing (destination rows disjoint from each other and from the sources,
    /// or a source that is the destination itself); `None` leaves the instruction (and any
    /// fault) to the general path.
    fn binary_rows(
        &mut self,
        op: BinOp,
        dtype: Dtype,
        s: &Shape,
        dst: LocalAddr,
        src0: LocalAddr,
        src1: LocalAddr,
    ) -> Option<Work> {
        let f32s = match (dtype, op) {
            (Dtype::F32, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Mac | BinOp::Max)
            | (Dtype::F32, BinOp::Min) => true,
            (Dtype::S32, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Mac | BinOp::Max)
            | (Dtype::S32, BinOp::Min) => false,
            _ => return None,
        };
        let (p, r, c) = (s.planes, s.rows, s.cols);
        let (wd, w0, w1) = (s.dst(4), s.src0(4), s.src1(4));
        let ext = |w: Walk| Shape::extent(w, p, r, c, 4);
        let (ed, e0, e1) = (ext(wd)?, ext(w0)?, ext(w1)?);
        let bd = self.check("dst", dst, Some(ed), None).ok()?;
        let b0 = self.check("src0", src0, Some(e0), None).ok()?;
        let b1 = self.check("src1", src1, Some(e1), None).ok()?;
        let row_bytes = usize::from(c) * 4;
        // Destination rows must not overlap each other.
        if (r > 1 && (wd.row as usize) < row_bytes)
            || (p > 1 && (wd.plane as usize) < (usize::from(r) - 1) * wd.row as usize + row_bytes)
        {
            return None;
        }
        let safe = |a: LocalAddr, base: usize, w: Walk, e: u64| {
            a.space != dst.space
                || base + e as usize <= bd
                || bd + ed as usize <= base
                || (base == bd && w == wd)
        };
        if !safe(src0, b0, w0, e0) || !safe(src1, b1, w1, e1) {
            return None;
        }
        let mut row0 = vec![0u8; row_bytes];
        let mut row1 = vec![0u8; row_bytes];
        let copy_row = |mem: &[u8], base: usize, w: Walk, out: &mut Vec<u8>| {
            let n = if w.col == 0 { 4 } else { row_bytes };
            out[..n].copy_from_slice(&mem[base..base + n]);
        };
        for pi in 0..usize::from(p) {
            for ri in 0..usize::from(r) {
                let at = |b: usize, w: Walk| b + pi * w.plane as usize + ri * w.row as usize;
                copy_row(self.mem(src0.space), at(b0, w0), w0, &mut row0);
                copy_row(self.mem(src1.space), at(b1, w1), w1, &mut row1);
                let od = at(bd, wd);
                let out = &mut self.mem_mut(dst.space)[od..od + row_bytes];
                let (s0, s1) = (usize::from(w0.col != 0), usize::from(w1.col != 0));
                kernels::binary_row(op, f32s, out, &row0, &row1, s0, s1);
            }
        }
        Some(Work { bytes: 3 * s.elements() * 4, macs: 0 })
    }

    fn unary(
        &mut self,
        op: UnOp,
        dtype: Dtype,
        out_dtype: Dtype,
        shape: u16,
        dst: LocalAddr,
        src: LocalAddr,
    ) -> Result<Work, Fault> {
        if !op.supports(dtype, out_dtype) {
            return Err(fault(
                FaultKind::Illegal,
                self.i,
                format!("{op} is not defined from {dtype} to {out_dtype}"),
            ));
        }
        let s = self.shape(shape)?;
        let dims = (s.planes, s.rows, s.cols);
        let x = self.gather("src", src, s.src0(dtype.size()), dims, dtype)?;
        let y = match x {
            Vals::F(v) => {
                let v: Vec<f32> = v.into_iter().map(|x| float_unary(op, x)).collect();
                if out_dtype.is_float() {
                    Vals::F(v)
                } else {
                    Vals::I(v.into_iter().map(|x| float_to_int(x, out_dtype)).collect())
                }
            }
            Vals::I(v) => {
                let v: Vec<i64> = v.into_iter().map(|x| int_unary(op, x)).collect();
                if out_dtype.is_float() {
                    Vals::F(v.into_iter().map(int_to_float).collect())
                } else {
                    Vals::I(v)
                }
            }
        };
        self.scatter("dst", dst, s.dst(out_dtype.size()), dims, out_dtype, &y)?;
        Ok(Work { bytes: s.elements() * u64::from(dtype.size() + out_dtype.size()), macs: 0 })
    }

    #[allow(clippy::too_many_arguments, reason = "mirrors the instruction's fields")]
    fn reduce(
        &mut self,
        op: ReduceOp,
        axis: Axis,
        dtype: Dtype,
        out_dtype: Dtype,
        shape: u16,
        dst: LocalAddr,
        src: LocalAddr,
    ) -> Result<Work, Fault> {
        let ok = op.supports(dtype, out_dtype);
        if !ok {
            return Err(fault(
                FaultKind::Illegal,
                self.i,
                format!("{op} of {dtype} cannot produce {out_dtype}"),
            ));
        }
        let s = self.shape(shape)?;
        let (p, r, c) = (usize::from(s.planes), usize::from(s.rows), usize::from(s.cols));
        let x = self.gather("src", src, s.src0(dtype.size()), (s.planes, s.rows, s.cols), dtype)?;
        // Groups of source indices folded into each output element, in index order.
        let (out_dims, groups): ((u16, u16, u16), Vec<Vec<usize>>) = match axis {
            Axis::Cols => {
                ((s.planes, s.rows, 1), (0..p * r).map(|g| (g * c..g * c + c).collect()).collect())
            }
            Axis::Rows => (
                (s.planes, 1, s.cols),
                (0..p * c)
                    .map(|g| (0..r).map(|ri| (g / c) * r * c + ri * c + g % c).collect())
                    .collect(),
            ),
        };
        let y = match x {
            Vals::F(v) => Vals::F(
                groups
                    .iter()
                    .map(|g| {
                        let mut it = g.iter().map(|&i| v[i]);
                        let first = it.next().unwrap_or(0.0);
                        it.fold(first, |acc, x| match op {
                            ReduceOp::Sum => canon(acc + x),
                            ReduceOp::Max => fmax(acc, x),
                            ReduceOp::Min => fmin(acc, x),
                        })
                    })
                    .collect(),
            ),
            Vals::I(v) => Vals::I(
                groups
                    .iter()
                    .map(|g| {
                        let vals = g.iter().map(|&i| v[i]);
                        match op {
                            ReduceOp::Sum => {
                                let total: i128 = vals.map(i128::from).sum();
                                total.clamp(i32::MIN.into(), i32::MAX.into()) as i64
                            }
                            ReduceOp::Max => vals.max().unwrap_or(0),
                            ReduceOp::Min => vals.min().unwrap_or(0),
                        }
                    })
                    .collect(),
            ),
        };
        self.scatter("dst", dst, s.dst(out_dtype.size()), out_dims, out_dtype, &y)?;
        Ok(Work { bytes: s.elements() * u64::from(dtype.size()), macs: 0 })
    }

    #[allow(clippy::too_many_arguments, reason = "the instruction's fields")]
    fn requant(
        &mut self,
        per_channel: bool,
        bias: bool,
        dtype: Dtype,
        shape: u16,
        dst: LocalAddr,
        src: LocalAddr,
        params: LocalAddr,
    ) -> Result<Work, Fault> {
        if !matches!(dtype, Dtype::S8 | Dtype::U8 | Dtype::S16 | Dtype::S32) {
            return Err(fault(
                FaultKind::Illegal,
                self.i,
                format!("requantization cannot produce {dtype}"),
            ));
        }
        let s = self.shape(shape)?;
        let records = if per_channel { usize::from(s.cols) } else { 1 };
        let size = accelc_isa::requant::record_bytes(bias);
        let pbase = self.check("params", params, Some((size * records) as u64), None)?;
        let mem = self.mem(params.space);
        let recs: Vec<RequantRecord> = (0..records)
            .map(|r| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&mem[pbase + size * r..pbase + size * r + 16]);
                RequantRecord::from_bytes(&b)
            })
            .collect();
        // The records' biases (`bias=1`), added with saturation before requantising.
        let biases: Vec<i64> = if bias {
            (0..records)
                .map(|r| {
                    let o = pbase + size * r + 16;
                    i64::from(i32::from_le_bytes([mem[o], mem[o + 1], mem[o + 2], mem[o + 3]]))
                })
                .collect()
        } else {
            Vec::new()
        };
        if let Some(bad) = recs.iter().position(|r| !r.valid()) {
            return Err(fault(
                FaultKind::Data,
                self.i,
                format!(
                    "requantization record {bad} has shift {} outside -31..=30",
                    recs[bad].shift
                ),
            ));
        }
        let dims = (s.planes, s.rows, s.cols);
        let Vals::I(mut x) = self.gather("src", src, s.src0(4), dims, Dtype::S32)? else {
            return Err(fault(FaultKind::Illegal, self.i, "requantization reads s32"));
        };
        let cols = usize::from(s.cols);
        if bias {
            let (lo, hi) = (i64::from(i32::MIN), i64::from(i32::MAX));
            for (i, v) in x.iter_mut().enumerate() {
                *v = (*v + biases[if per_channel { i % cols } else { 0 }]).clamp(lo, hi);
            }
        }
        let y: Vec<i64> = if self.sim.reference_paths {
            x.iter()
                .enumerate()
                .map(|(i, &v)| recs[if per_channel { i % cols } else { 0 }].apply(v as i32, dtype))
                .collect()
        } else {
            kernels::requant_rows(&x, &recs, if per_channel { cols } else { 0 }, dtype)
        };
        self.scatter("dst", dst, s.dst(dtype.size()), dims, dtype, &Vals::I(y))?;
        Ok(Work { bytes: s.elements() * u64::from(4 + dtype.size()), macs: 0 })
    }

    fn lut(
        &mut self,
        dtype: Dtype,
        shape: u16,
        dst: LocalAddr,
        src: LocalAddr,
        table: LocalAddr,
    ) -> Result<Work, Fault> {
        if !matches!(dtype, Dtype::S8 | Dtype::U8) {
            return Err(fault(
                FaultKind::Illegal,
                self.i,
                format!("table lookup takes s8 or u8, not {dtype}"),
            ));
        }
        let s = self.shape(shape)?;
        let tbase = self.check("table", table, Some(256), None)?;
        let t: Vec<u8> = self.mem(table.space)[tbase..tbase + 256].to_vec();
        let dims = (s.planes, s.rows, s.cols);
        // Bit patterns: gather and scatter as u8 whatever the signedness.
        let Vals::I(x) = self.gather("src", src, s.src0(1), dims, Dtype::U8)? else {
            return Err(fault(FaultKind::Illegal, self.i, "table lookup reads bytes"));
        };
        let y = x.iter().map(|&v| i64::from(t[v as usize])).collect();
        self.scatter("dst", dst, s.dst(1), dims, Dtype::U8, &Vals::I(y))?;
        Ok(Work { bytes: 2 * s.elements(), macs: 0 })
    }

    fn transpose(
        &mut self,
        dtype: Dtype,
        shape: u16,
        dst: LocalAddr,
        src: LocalAddr,
    ) -> Result<Work, Fault> {
        let s = self.shape(shape)?;
        let size = dtype.size();
        // Move raw bit patterns: gather and scatter with an integer type of the same size.
        let raw = match size {
            1 => Dtype::U8,
            2 => Dtype::S16,
            _ => Dtype::S32,
        };
        let Vals::I(x) = self.gather("src", src, s.src0(size), (s.planes, s.rows, s.cols), raw)?
        else {
            return Err(fault(FaultKind::Illegal, self.i, "transpose reads raw elements"));
        };
        let (p, r, c) = (usize::from(s.planes), usize::from(s.rows), usize::from(s.cols));
        let mut y = vec![0i64; x.len()];
        for pi in 0..p {
            for ri in 0..r {
                for ci in 0..c {
                    y[pi * r * c + ci * r + ri] = x[pi * r * c + ri * c + ci];
                }
            }
        }
        let walk = Walk { col: size.into(), row: s.dst_row.into(), plane: s.dst_plane.into() };
        self.scatter("dst", dst, walk, (s.planes, s.cols, s.rows), raw, &Vals::I(y))?;
        Ok(Work { bytes: 2 * s.elements() * u64::from(size), macs: 0 })
    }
}

/// [`Exec::gather`]'s fast path: the dtype is matched once per row, and a contiguous row
/// (column stride = element size) is decoded from one slice, which the compiler vectorises.
fn gather_fast(mem: &[u8], base: usize, walk: Walk, dims: (u16, u16, u16), dtype: Dtype) -> Vals {
    let (p, r, c) = (usize::from(dims.0), usize::from(dims.1), usize::from(dims.2));
    let size = dtype.size() as usize;
    let (col, row, plane) = (walk.col as usize, walk.row as usize, walk.plane as usize);
    let rows = (0..p).flat_map(move |pi| (0..r).map(move |ri| base + pi * plane + ri * row));
    macro_rules! decode {
        ($v:ident, $read:expr, $conv:expr) => {{
            let mut $v = Vec::with_capacity(p * r * c);
            for o in rows {
                if col == size {
                    $v.extend(mem[o..o + c * size].chunks_exact(size).map($conv));
                } else if col == 0 {
                    let x = $read(o);
                    $v.resize($v.len() + c, x);
                } else {
                    $v.extend((0..c).map(|ci| $read(o + ci * col)));
                }
            }
            $v
        }};
    }
    match dtype {
        Dtype::F32 => Vals::F(decode!(v, |o: usize| read_f32(mem, o, dtype), |b: &[u8]| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })),
        Dtype::Bf16 => Vals::F(decode!(v, |o: usize| read_f32(mem, o, dtype), |b: &[u8]| {
            bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))
        })),
        Dtype::S8 => Vals::I(decode!(v, |o: usize| read_int(mem, o, dtype), |b: &[u8]| {
            i64::from(b[0] as i8)
        })),
        Dtype::U8 => {
            Vals::I(decode!(v, |o: usize| read_int(mem, o, dtype), |b: &[u8]| i64::from(b[0])))
        }
        Dtype::S16 => Vals::I(decode!(v, |o: usize| read_int(mem, o, dtype), |b: &[u8]| {
            i64::from(i16::from_le_bytes([b[0], b[1]]))
        })),
        Dtype::S32 => Vals::I(decode!(v, |o: usize| read_int(mem, o, dtype), |b: &[u8]| {
            i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        })),
    }
}

/// [`Exec::scatter`]'s fast path, with the same per-row structure as [`gather_fast`]. Rows
/// are written in order, so overlapping or broadcast destinations end with the last value
/// written, as in the reference path.
fn scatter_fast(
    mem: &mut [u8],
    base: usize,
    walk: Walk,
    dims: (u16, u16, u16),
    dtype: Dtype,
    vals: &Vals,
) {
    let (p, r, c) = (usize::from(dims.0), usize::from(dims.1), usize::from(dims.2));
    let size = dtype.size() as usize;
    let (col, row, plane) = (walk.col as usize, walk.row as usize, walk.plane as usize);
    let mut idx = 0usize;
    for pi in 0..p {
        for ri in 0..r {
            let o = base + pi * plane + ri * row;
            if col == size {
                let dst = &mut mem[o..o + c * size];
                match (vals, dtype) {
                    (Vals::F(v), Dtype::F32) => {
                        for (d, x) in dst.chunks_exact_mut(4).zip(&v[idx..idx + c]) {
                            d.copy_from_slice(&x.to_le_bytes());
                        }
                    }
                    (Vals::I(v), Dtype::S8 | Dtype::U8) => {
                        for (d, &x) in dst.iter_mut().zip(&v[idx..idx + c]) {
                            *d = saturate(x, dtype) as u8;
                        }
                    }
                    (Vals::I(v), Dtype::S32) => {
                        for (d, &x) in dst.chunks_exact_mut(4).zip(&v[idx..idx + c]) {
                            d.copy_from_slice(&(saturate(x, dtype) as i32).to_le_bytes());
                        }
                    }
                    (Vals::F(v), _) => {
                        for ci in 0..c {
                            write_f32(mem, o + ci * size, dtype, v[idx + ci]);
                        }
                    }
                    (Vals::I(v), _) => {
                        for ci in 0..c {
                            write_int(mem, o + ci * size, dtype, v[idx + ci]);
                        }
                    }
                }
            } else {
                for ci in 0..c {
                    match vals {
                        Vals::F(v) => write_f32(mem, o + ci * col, dtype, v[idx + ci]),
                        Vals::I(v) => write_int(mem, o + ci * col, dtype, v[idx + ci]),
                    }
                }
            }
            idx += c;
        }
    }
}

/// [`float_binary`] over two operands, the operation matched once so each arm is a plain
/// loop the compiler vectorises. Same formulas, so the same bits.
fn float_binary_fast(op: BinOp, a: &[f32], b: &[f32]) -> Vec<f32> {
    fn map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
        a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
    }
    match op {
        BinOp::Add => map(a, b, |x, y| canon(x + y)),
        BinOp::Sub => map(a, b, |x, y| canon(x - y)),
        BinOp::Mul | BinOp::Mac => map(a, b, |x, y| canon(x * y)),
        BinOp::Div => map(a, b, |x, y| canon(x / y)),
        BinOp::Max => map(a, b, fmax),
        BinOp::Min => map(a, b, fmin),
        _ => map(a, b, |x, y| float_binary(op, x, y)),
    }
}

/// [`int_binary`] over two operands, the operation matched once (as [`float_binary_fast`]).
fn int_binary_fast(op: BinOp, a: &[i64], b: &[i64], dtype: Dtype) -> Vec<i64> {
    fn map(a: &[i64], b: &[i64], f: impl Fn(i64, i64) -> i64) -> Vec<i64> {
        a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
    }
    match op {
        BinOp::Add => map(a, b, |x, y| x + y),
        BinOp::Sub => map(a, b, |x, y| x - y),
        BinOp::Mul | BinOp::Mac => map(a, b, |x, y| x * y),
        BinOp::Max => map(a, b, i64::max),
        BinOp::Min => map(a, b, i64::min),
        _ => map(a, b, |x, y| int_binary(op, x, y, dtype)),
    }
}

fn read_f32(mem: &[u8], o: usize, dtype: Dtype) -> f32 {
    match dtype {
        Dtype::Bf16 => bf16_to_f32(u16::from_le_bytes([mem[o], mem[o + 1]])),
        _ => f32::from_le_bytes([mem[o], mem[o + 1], mem[o + 2], mem[o + 3]]),
    }
}

fn write_f32(mem: &mut [u8], o: usize, dtype: Dtype, v: f32) {
    match dtype {
        Dtype::Bf16 => mem[o..o + 2].copy_from_slice(&f32_to_bf16(v).to_le_bytes()),
        _ => mem[o..o + 4].copy_from_slice(&v.to_le_bytes()),
    }
}

fn read_int(mem: &[u8], o: usize, dtype: Dtype) -> i64 {
    match dtype {
        Dtype::S8 => i64::from(mem[o] as i8),
        Dtype::U8 => i64::from(mem[o]),
        Dtype::S16 => i64::from(i16::from_le_bytes([mem[o], mem[o + 1]])),
        _ => i64::from(i32::from_le_bytes([mem[o], mem[o + 1], mem[o + 2], mem[o + 3]])),
    }
}

fn write_int(mem: &mut [u8], o: usize, dtype: Dtype, v: i64) {
    let v = saturate(v, dtype);
    match dtype {
        Dtype::S8 | Dtype::U8 => mem[o] = v as u8,
        Dtype::S16 => mem[o..o + 2].copy_from_slice(&(v as i16).to_le_bytes()),
        _ => mem[o..o + 4].copy_from_slice(&(v as i32).to_le_bytes()),
    }
}

fn float_binary(op: BinOp, a: f32, b: f32) -> f32 {
    match op {
        BinOp::Add => canon(a + b),
        BinOp::Sub => canon(a - b),
        BinOp::Mul | BinOp::Mac => canon(a * b),
        BinOp::Div => canon(a / b),
        BinOp::Max => fmax(a, b),
        BinOp::Min => fmin(a, b),
        BinOp::Pow => canon(libm::powf(a, b)),
        // Rejected before execution: bitwise operations are integer only.
        BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Shl | BinOp::Shr => f32::NAN,
    }
}

/// Wraps `v` to the two's-complement range of an integer type.
fn wrap(v: i64, dtype: Dtype) -> i64 {
    match dtype {
        Dtype::S8 => i64::from(v as i8),
        Dtype::U8 => i64::from(v as u8),
        Dtype::S16 => i64::from(v as i16),
        _ => i64::from(v as i32),
    }
}

fn int_binary(op: BinOp, a: i64, b: i64, dtype: Dtype) -> i64 {
    let width = i64::from(dtype.size() * 8);
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul | BinOp::Mac => a * b,
        BinOp::Max => a.max(b),
        BinOp::Min => a.min(b),
        BinOp::And => a & b,
        BinOp::Or => a | b,
        BinOp::Xor => a ^ b,
        BinOp::Shl => wrap(a << (b & (width - 1)), dtype),
        BinOp::Shr => a >> (b & (width - 1)),
        // Rejected before execution: division and powers are floating point only.
        BinOp::Div | BinOp::Pow => 0,
    }
}

/// A unary float operation. `mov`, `abs` and `neg` act on the bits (sign); every other NaN
/// result is the canonical one.
fn float_unary(op: UnOp, x: f32) -> f32 {
    match op {
        UnOp::Mov | UnOp::Abs | UnOp::Neg => float_unary_raw(op, x),
        _ => canon(float_unary_raw(op, x)),
    }
}

fn float_unary_raw(op: UnOp, x: f32) -> f32 {
    match op {
        UnOp::Mov => x,
        UnOp::Relu => fmax(x, 0.0),
        UnOp::Abs => x.abs(),
        UnOp::Neg => -x,
        UnOp::Exp => libm::expf(x),
        UnOp::Log => libm::logf(x),
        UnOp::Sqrt => x.sqrt(),
        UnOp::Rsqrt => 1.0 / x.sqrt(),
        UnOp::Recip => 1.0 / x,
        UnOp::Tanh => libm::tanhf(x),
        UnOp::Sigmoid => sigmoid(x),
        UnOp::Erf => libm::erff(x),
        UnOp::Floor => x.floor(),
        UnOp::Ceil => x.ceil(),
        UnOp::Round => x.round_ties_even(),
    }
}

fn int_unary(op: UnOp, x: i64) -> i64 {
    match op {
        UnOp::Relu => x.max(0),
        UnOp::Abs => x.abs(),
        UnOp::Neg => -x,
        // Mov converts at the scatter; float-only operations are rejected before execution.
        _ => x,
    }
}
