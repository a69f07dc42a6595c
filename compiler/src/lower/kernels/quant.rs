//! Quantize and dequantize kernels on the vector engine: per-tensor `QuantizeLinear` (float32
//! to int8/uint8) and `DequantizeLinear` (int8/uint8/int32 to float32) over a dense tensor,
//! where a quantized region meets float work (graph inputs and outputs, float ops between
//! quantized ones); the integer addition `QAdd` of two 8-bit tensors; and the table lookup
//! `Lut` of one.
//!
//! Each is the reference's arithmetic, operation for operation, so the device agrees with
//! the interpreter bit for bit (the book's numerics page):
//! - dequantize: `(float(q) − float(zp)) · scale` (`vx.unary mov` to f32, `sub`, `mul`; the
//!   integer to float conversions and the subtraction of two small integers are exact);
//! - quantize: `saturate(round_half_even(x / scale) + zp)` (`div`, `mov` to s32 rounding half
//!   to even and saturating, `add` of the zero point saturating, `mov` saturating to the
//!   8-bit type). NaN becomes the zero point, as in the reference.

use accelc_isa::program::{MAX_SHAPE_DIM, MAX_VX_ELEMENTS, SHAPE_SRC1_COL_BROADCAST};
use accelc_isa::{BinOp, Dtype, Engine};

use crate::lower::LowerError;
use crate::lower::emit::{Dir, Emitter, LD_VX, VX_ST, at, vshape};
use crate::lower::schedule::{Lk, Qa, Qk, Sched, Step};

use super::*;

/// Elements per vector row: a lane multiple that keeps rows long and the row count small.
const COLS: usize = 1024;

pub(super) fn quant(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
    q: &Qk,
) -> Result<(u64, u64), LowerError> {
    if let Some(geom) = q.axis {
        return quant_axis(em, s, step, q, geom);
    }
    let (din, ein) = elem(s, q.input)?;
    let (dout, eout) = elem(s, q.out)?;
    let total = s.tens[q.input].shape.iter().product::<usize>();
    if s.tens[q.out].shape.iter().product::<usize>() != total {
        return Err(LowerError::msg("internal: quantize shapes differ"));
    }
    // Immediates: the scale (f32), the zero point as f32 and as s32.
    let pbuf = params(em, step, &[q.scale.to_bits(), (q.zp as f32).to_bits(), q.zp as u32])?
        .ok_or_else(|| LowerError::msg("internal: no quantization parameters"))?;
    let (scale, zp_f, zp_i) = (pbuf, at(pbuf, 4), at(pbuf, 8));
    // Buffers: input and output double-buffered, one 32-bit work buffer.
    let per_elem = 2 * ein + 2 * eout + 4;
    let budget = (em.spad_free().saturating_sub(5 * 64) / per_elem).min(MAX_VX_ELEMENTS) as usize;
    let rows_max = (budget / COLS).clamp(1, MAX_SHAPE_DIM);
    let chunk = (rows_max * COLS).min(total.max(1));
    let ibuf = [em.spad(chunk as u64 * ein)?, em.spad(chunk as u64 * ein)?];
    let obuf = [em.spad(chunk as u64 * eout)?, em.spad(chunk as u64 * eout)?];
    let work = em.spad(chunk as u64 * 4)?;
    let (in_seg, in_base) = s.addr(q.input)?;
    let (out_seg, out_base) = s.addr(q.out)?;
    let mut done = 0usize;
    let mut slot = 0usize;
    while done < total {
        let m = chunk.min(total - done);
        // `m` elements as rows of COLS, or one short row.
        let (rows, cols) = if m >= COLS { (m / COLS, COLS) } else { (1, m) };
        let m = rows * cols;
        let b = slot % 2;
        em.wait(Engine::Ld, LD_VX.free);
        em.dma_block(
            Dir::Load,
            in_seg,
            in_base + done as u64 * ein,
            &[(m * ein as usize, 1, 1)],
            1,
            ibuf[b],
        )?;
        em.signal(Engine::Ld, LD_VX.full)?;
        em.wait(Engine::Vx, LD_VX.full);
        em.wait(Engine::Vx, VX_ST.free);
        let (r, c) = (rows as u64, cols as u64);
        let dense = |e: u64| (c * e, r * c * e);
        let bcast = |dst: u64, src: u64| {
            vshape(1, r, c, dense(dst), dense(src), (0, 0), SHAPE_SRC1_COL_BROADCAST)
        };
        let conv = |dst: u64, src: u64| vshape(1, r, c, dense(dst), dense(src), (0, 0), 0);
        if q.dequant {
            em.vconv(din, Dtype::F32, conv(4, ein), obuf[b], ibuf[b])?;
            em.vbin(Dtype::F32, BinOp::Sub, bcast(4, 4), obuf[b], obuf[b], zp_f)?;
            em.vbin(Dtype::F32, BinOp::Mul, bcast(4, 4), obuf[b], obuf[b], scale)?;
        } else {
            em.vbin(Dtype::F32, BinOp::Div, bcast(4, 4), work, ibuf[b], scale)?;
            em.vconv(Dtype::F32, Dtype::S32, conv(4, 4), work, work)?;
            em.vbin(Dtype::S32, BinOp::Add, bcast(4, 4), work, work, zp_i)?;
            em.vconv(Dtype::S32, dout, conv(eout, 4), obuf[b], work)?;
        }
        em.signal(Engine::Vx, LD_VX.free)?;
        em.signal(Engine::Vx, VX_ST.full)?;
        em.wait(Engine::St, VX_ST.full);
        em.dma_block(
            Dir::Store,
            out_seg,
            out_base + done as u64 * eout,
            &[(m * eout as usize, 1, 1)],
            1,
            obuf[b],
        )?;
        em.signal(Engine::St, VX_ST.free)?;
        done += m;
        slot += 1;
    }
    Ok((0, total as u64 * (ein + eout)))
}

/// `QAdd` (the arithmetic is on `Op::QAdd`): per chunk, each input widened to int32 and
/// requantised in place to the common grid, the two added (int32, saturating), the sum
/// requantised to the output type.
pub(super) fn qadd(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
    q: &Qa,
) -> Result<(u64, u64), LowerError> {
    let (da, ea) = elem(s, q.a)?;
    let (db, eb) = elem(s, q.b)?;
    let (dout, eout) = elem(s, q.out)?;
    let total = s.tens[q.out].shape.iter().product::<usize>();
    if [q.a, q.b].iter().any(|t| s.tens[*t].shape.iter().product::<usize>() != total) {
        return Err(LowerError::msg("internal: QAdd shapes differ"));
    }
    let recs = params(em, step, &[])?
        .ok_or_else(|| LowerError::msg("internal: no requantisation records"))?;
    let rec = |i: u64| at(recs, 16 * i);
    // Inputs and output double-buffered; two int32 work buffers.
    let per_elem = 2 * (ea + eb + eout) + 4 + 4;
    let budget = (em.spad_free().saturating_sub(8 * 64) / per_elem).min(MAX_VX_ELEMENTS) as usize;
    let rows_max = (budget / COLS).clamp(1, MAX_SHAPE_DIM);
    let chunk = (rows_max * COLS).min(total.max(1));
    let abuf = [em.spad(chunk as u64 * ea)?, em.spad(chunk as u64 * ea)?];
    let bbuf = [em.spad(chunk as u64 * eb)?, em.spad(chunk as u64 * eb)?];
    let obuf = [em.spad(chunk as u64 * eout)?, em.spad(chunk as u64 * eout)?];
    let (ta, tb) = (em.spad(chunk as u64 * 4)?, em.spad(chunk as u64 * 4)?);
    let (a_seg, a_base) = s.addr(q.a)?;
    let (b_seg, b_base) = s.addr(q.b)?;
    let (out_seg, out_base) = s.addr(q.out)?;
    let mut done = 0usize;
    let mut slot = 0usize;
    while done < total {
        let m = chunk.min(total - done);
        let (rows, cols) = if m >= COLS { (m / COLS, COLS) } else { (1, m) };
        let m = rows * cols;
        let i = slot % 2;
        em.wait(Engine::Ld, LD_VX.free);
        for (seg, base, e, buf) in [(a_seg, a_base, ea, abuf[i]), (b_seg, b_base, eb, bbuf[i])] {
            em.dma_block(
                Dir::Load,
                seg,
                base + done as u64 * e,
                &[(m * e as usize, 1, 1)],
                1,
                buf,
            )?;
        }
        em.signal(Engine::Ld, LD_VX.full)?;
        em.wait(Engine::Vx, LD_VX.full);
        em.wait(Engine::Vx, VX_ST.free);
        let (r, c) = (rows as u64, cols as u64);
        let dense = |e: u64| (c * e, r * c * e);
        let conv = |dst: u64, src: u64| vshape(1, r, c, dense(dst), dense(src), (0, 0), 0);
        em.vconv(da, Dtype::S32, conv(4, ea), ta, abuf[i])?;
        em.vrequant_tensor(Dtype::S32, conv(4, 4), ta, ta, rec(0))?;
        em.vconv(db, Dtype::S32, conv(4, eb), tb, bbuf[i])?;
        em.vrequant_tensor(Dtype::S32, conv(4, 4), tb, tb, rec(1))?;
        let sum = vshape(1, r, c, dense(4), dense(4), dense(4), 0);
        em.vbin(Dtype::S32, BinOp::Add, sum, ta, ta, tb)?;
        em.vrequant_tensor(dout, conv(eout, 4), obuf[i], ta, rec(2))?;
        em.signal(Engine::Vx, LD_VX.free)?;
        em.signal(Engine::Vx, VX_ST.full)?;
        em.wait(Engine::St, VX_ST.full);
        em.dma_block(
            Dir::Store,
            out_seg,
            out_base + done as u64 * eout,
            &[(m * eout as usize, 1, 1)],
            1,
            obuf[i],
        )?;
        em.signal(Engine::St, VX_ST.free)?;
        done += m;
        slot += 1;
    }
    Ok((0, total as u64 * (ea + eb + eout)))
}

/// `Lut`: per chunk, one `vx.lut` over the bytes (the table maps bit patterns, so both sides
/// are read and written as `u8` whatever their types).
pub(super) fn lut(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
    l: &Lk,
) -> Result<(u64, u64), LowerError> {
    let total = s.tens[l.out].shape.iter().product::<usize>();
    if s.tens[l.input].shape.iter().product::<usize>() != total {
        return Err(LowerError::msg("internal: lookup shapes differ"));
    }
    let table =
        params(em, step, &[])?.ok_or_else(|| LowerError::msg("internal: no lookup table"))?;
    let budget = (em.spad_free().saturating_sub(5 * 64) / 4).min(MAX_VX_ELEMENTS) as usize;
    let rows_max = (budget / COLS).clamp(1, MAX_SHAPE_DIM);
    let chunk = (rows_max * COLS).min(total.max(1));
    let ibuf = [em.spad(chunk as u64)?, em.spad(chunk as u64)?];
    let obuf = [em.spad(chunk as u64)?, em.spad(chunk as u64)?];
    let (in_seg, in_base) = s.addr(l.input)?;
    let (out_seg, out_base) = s.addr(l.out)?;
    let mut done = 0usize;
    let mut slot = 0usize;
    while done < total {
        let m = chunk.min(total - done);
        let (rows, cols) = if m >= COLS { (m / COLS, COLS) } else { (1, m) };
        let m = rows * cols;
        let i = slot % 2;
        em.wait(Engine::Ld, LD_VX.free);
        em.dma_block(Dir::Load, in_seg, in_base + done as u64, &[(m, 1, 1)], 1, ibuf[i])?;
        em.signal(Engine::Ld, LD_VX.full)?;
        em.wait(Engine::Vx, LD_VX.full);
        em.wait(Engine::Vx, VX_ST.free);
        let (r, c) = (rows as u64, cols as u64);
        let shape = em.shape(vshape(1, r, c, (c, r * c), (c, r * c), (0, 0), 0))?;
        em.push(accelc_isa::inst::VxLut {
            dtype: Dtype::U8,
            shape,
            dst: obuf[i],
            src: ibuf[i],
            table,
        })?;
        em.signal(Engine::Vx, LD_VX.free)?;
        em.signal(Engine::Vx, VX_ST.full)?;
        em.wait(Engine::St, VX_ST.full);
        em.dma_block(Dir::Store, out_seg, out_base + done as u64, &[(m, 1, 1)], 1, obuf[i])?;
        em.signal(Engine::St, VX_ST.free)?;
        done += m;
        slot += 1;
    }
    Ok((0, 2 * total as u64))
}

/// Per-axis quantize or dequantize: blocks of `[planes, n, cols]` of the `[outer, n, inner]`
/// tensor, the operations of the per-tensor kernel with each row's own scale and zero point
/// (a per-row operand broadcast across the columns).
fn quant_axis(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
    q: &Qk,
    [outer, n, inner]: [usize; 3],
) -> Result<(u64, u64), LowerError> {
    let (din, ein) = elem(s, q.input)?;
    let (dout, eout) = elem(s, q.out)?;
    if n > MAX_SHAPE_DIM {
        return Err(LowerError::msg(format!(
            "per-axis quantization over more than {MAX_SHAPE_DIM} channels"
        )));
    }
    let pbuf = params(em, step, &[])?
        .ok_or_else(|| LowerError::msg("internal: no quantization parameters"))?;
    let (scale, zp_f, zp_i) = (pbuf, at(pbuf, 4 * n as u64), at(pbuf, 8 * n as u64));
    let per_elem = 2 * ein + 2 * eout + 4;
    let budget = (em.spad_free().saturating_sub(5 * 64) / per_elem).min(MAX_VX_ELEMENTS) as usize;
    let cols = inner.min(MAX_SHAPE_DIM).min((budget / n).max(1));
    if n > budget {
        return Err(LowerError::msg("a per-axis quantization row does not fit the scratchpad"));
    }
    let planes =
        if cols == inner { outer.min(MAX_SHAPE_DIM).min((budget / (n * cols)).max(1)) } else { 1 };
    let chunk = (planes * n * cols) as u64;
    let ibuf = [em.spad(chunk * ein)?, em.spad(chunk * ein)?];
    let obuf = [em.spad(chunk * eout)?, em.spad(chunk * eout)?];
    let work = em.spad(chunk * 4)?;
    let (in_seg, in_base) = s.addr(q.input)?;
    let (out_seg, out_base) = s.addr(q.out)?;
    let blocks: Vec<(usize, usize, usize, usize)> = (0..outer)
        .step_by(planes)
        .flat_map(|p0| {
            (0..inner)
                .step_by(cols)
                .map(move |c0| (p0, planes.min(outer - p0), c0, cols.min(inner - c0)))
        })
        .collect();
    for (slot, &(p0, p, c0, c)) in blocks.iter().enumerate() {
        let b = slot % 2;
        let far = |e: u64| ((p0 * n * inner + c0) as u64) * e;
        let dims = |e: u64| {
            [
                (p, (n * inner) as u64 * e, (n * c) as u64 * e),
                (n, inner as u64 * e, c as u64 * e),
                (c, e, e),
            ]
        };
        em.wait(Engine::Ld, LD_VX.free);
        em.dma_block(Dir::Load, in_seg, in_base + far(ein), &dims(ein), ein, ibuf[b])?;
        em.signal(Engine::Ld, LD_VX.full)?;
        em.wait(Engine::Vx, LD_VX.full);
        em.wait(Engine::Vx, VX_ST.free);
        let (pp, r, cc) = (p as u64, n as u64, c as u64);
        let dense = |e: u64| (cc * e, r * cc * e);
        let per_row = |dst: u64, src: u64| {
            vshape(pp, r, cc, dense(dst), dense(src), (4, 0), SHAPE_SRC1_COL_BROADCAST)
        };
        let conv = |dst: u64, src: u64| vshape(pp, r, cc, dense(dst), dense(src), (0, 0), 0);
        if q.dequant {
            em.vconv(din, Dtype::F32, conv(4, ein), obuf[b], ibuf[b])?;
            em.vbin(Dtype::F32, BinOp::Sub, per_row(4, 4), obuf[b], obuf[b], zp_f)?;
            em.vbin(Dtype::F32, BinOp::Mul, per_row(4, 4), obuf[b], obuf[b], scale)?;
        } else {
            em.vbin(Dtype::F32, BinOp::Div, per_row(4, 4), work, ibuf[b], scale)?;
            em.vconv(Dtype::F32, Dtype::S32, conv(4, 4), work, work)?;
            em.vbin(Dtype::S32, BinOp::Add, per_row(4, 4), work, work, zp_i)?;
            em.vconv(Dtype::S32, dout, conv(eout, 4), obuf[b], work)?;
        }
        em.signal(Engine::Vx, LD_VX.free)?;
        em.signal(Engine::Vx, VX_ST.full)?;
        em.wait(Engine::St, VX_ST.full);
        em.dma_block(Dir::Store, out_seg, out_base + far(eout), &dims(eout), eout, obuf[b])?;
        em.signal(Engine::St, VX_ST.free)?;
    }
    let total = (outer * n * inner) as u64;
    Ok((0, total * (ein + eout) + step.consts.first().map_or(0, |c| c.len() as u64)))
}
