//! Quantize and dequantize kernels on the vector engine: per-tensor `QuantizeLinear` (float32
//! to int8/uint8) and `DequantizeLinear` (int8/uint8/int32 to float32) over a dense tensor,
//! where a quantized region meets float work (graph inputs and outputs, float ops between
//! quantized ones).
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
use crate::lower::schedule::{Qk, Sched, Step};

use super::*;

/// Elements per vector row: a lane multiple that keeps rows long and the row count small.
const COLS: usize = 1024;

pub(super) fn quant(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
    q: &Qk,
) -> Result<(u64, u64), LowerError> {
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
