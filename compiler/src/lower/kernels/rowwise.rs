//! Row-wise kernels: softmax, log-softmax, layer normalisation and reductions along the
//! innermost axis, a block of rows at a time.

use accelc_isa::inst::VxReduce;
use accelc_isa::program::{MAX_SHAPE_DIM, MAX_VX_ELEMENTS, SHAPE_SRC1_COL_BROADCAST};
use accelc_isa::{Axis, BinOp, Engine, LocalAddr, ReduceOp, UnOp};

use crate::ir::ReduceKind;
use crate::lower::LowerError;
use crate::lower::emit::{Dir, Emitter, LD_VX, PARAMS, VX_ST, at, vshape};
use crate::lower::schedule::{RowKind, Rw, Sched, Step};

use super::*;

pub(super) fn rowwise(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
    rw: &Rw,
) -> Result<(u64, u64), LowerError> {
    let (dt, e) = elem(s, rw.input)?;
    let (rows, len) = (rw.rows, rw.len);
    let scalars: Vec<u32> = match rw.kind {
        RowKind::LayerNorm { eps } => vec![(len as f32).to_bits(), eps.to_bits()],
        RowKind::Reduce(ReduceKind::Mean) => vec![(len as f32).to_bits()],
        _ => vec![],
    };
    let (pbuf, cbytes) = match &rw.affine {
        None => (params(em, step, &scalars)?, step.consts.first().map_or(0, |c| c.len() as u64)),
        Some(affine) => {
            // Scale then bias as dense rows, loaded from their tensors, then the scalars.
            let l4 = rw.len as u64 * e;
            let buf = em.spad(2 * l4 + 4 * scalars.len() as u64)?;
            for (i, part) in affine.iter().enumerate() {
                let dst = at(buf, i as u64 * l4);
                match part {
                    Some((t, ops)) => {
                        let v = s.view(*t)?.apply_all(ops)?;
                        let shape = v.shape();
                        let mut dims = Vec::new();
                        let mut near = e;
                        for (k, &(size, far)) in v.dims.iter().enumerate().rev() {
                            dims.push((size, far, near));
                            near *= shape[k] as u64;
                        }
                        dims.reverse();
                        em.dma_block(Dir::Load, v.seg, v.off, &dims, e, dst)?;
                    }
                    None => em.fill(dst, l4, 0)?,
                }
            }
            for (i, v) in scalars.iter().enumerate() {
                em.fill(at(buf, 2 * l4 + 4 * i as u64), 4, *v)?;
            }
            em.signal(Engine::Ld, PARAMS)?;
            em.wait(Engine::Vx, PARAMS);
            (Some(buf), 2 * l4)
        }
    };
    let imm = pbuf.map(|p| at(p, cbytes));
    if len > MAX_SHAPE_DIM {
        return Err(LowerError::msg(format!(
            "rows longer than {MAX_SHAPE_DIM} elements are not lowered"
        )));
    }
    let reduce = matches!(rw.kind, RowKind::Reduce(_));
    let out_len = if reduce { 1 } else { len };
    // Per row: two input buffers, two output buffers, one temporary, two statistics.
    // Per row: two input and two output buffers, a temporary, two statistics per slot; eight
    // buffers rounded up to 64 bytes.
    let per_row = (2 * len + 2 * out_len + len + 4) as u64 * e;
    let rc = ((em.spad_free().saturating_sub(8 * 64) / per_row) as usize)
        .min(rows)
        .min(MAX_SHAPE_DIM)
        .min(MAX_VX_ELEMENTS as usize / len.max(1));
    if rc == 0 {
        return Err(LowerError::msg("a row does not fit the scratchpad"));
    }
    let rc = rows.div_ceil(rows.div_ceil(rc));
    let ib = [em.spad((rc * len) as u64 * e)?, em.spad((rc * len) as u64 * e)?];
    let ob = [em.spad((rc * out_len) as u64 * e)?, em.spad((rc * out_len) as u64 * e)?];
    let tmp = em.spad((rc * len) as u64 * e)?;
    // Statistics per slot: the store of one chunk's Mean and InvStdDev may still be reading
    // them while the next chunk is computed.
    let st1s = [em.spad(rc as u64 * e)?, em.spad(rc as u64 * e)?];
    let st2s = [em.spad(rc as u64 * e)?, em.spad(rc as u64 * e)?];
    let stat_outs: Vec<Option<(u8, u64)>> =
        rw.stats.iter().map(|t| t.map(|t| s.addr(t)).transpose()).collect::<Result<_, _>>()?;
    let (in_seg, in_base) = s.addr(rw.input)?;
    let (out_seg, out_base) = s.addr(rw.out)?;
    let l4 = len as u64 * e;
    for (i, r0) in (0..rows).step_by(rc).enumerate() {
        let r = rc.min(rows - r0);
        let b = i % 2;
        em.wait(Engine::Ld, LD_VX.free);
        em.dma_block(Dir::Load, in_seg, in_base + r0 as u64 * l4, &[(r * len, e, e)], e, ib[b])?;
        em.signal(Engine::Ld, LD_VX.full)?;
        em.wait(Engine::Vx, LD_VX.full);
        em.wait(Engine::Vx, VX_ST.free);
        let rr = r as u64;
        let full =
            |src1: (u64, u64), flags| vshape(1, rr, len as u64, (l4, 0), (l4, 0), src1, flags);
        let col = |src1: (u64, u64), flags| vshape(1, rr, 1, (e, 0), (e, 0), src1, flags);
        let red = |em: &mut Emitter,
                   op,
                   src: LocalAddr,
                   dst: LocalAddr|
         -> Result<(), LowerError> {
            let shape = em.shape(vshape(1, rr, len as u64, (e, 0), (l4, 0), (0, 0), 0))?;
            em.push(VxReduce { op, axis: Axis::Cols, dtype: dt, shape, dst, src, out_dtype: dt })?;
            Ok(())
        };
        let x = ib[b];
        let y = ob[b];
        let (st1, st2) = (st1s[b], st2s[b]);
        let bc = SHAPE_SRC1_COL_BROADCAST;
        match rw.kind {
            RowKind::Softmax { log } => {
                red(em, ReduceOp::Max, x, st1)?;
                em.vbin(dt, BinOp::Sub, full((e, 0), bc), tmp, x, st1)?;
                em.signal(Engine::Vx, LD_VX.free)?;
                em.vun(dt, UnOp::Exp, full((0, 0), 0), y, tmp)?;
                red(em, ReduceOp::Sum, y, st2)?;
                if log {
                    em.vun(dt, UnOp::Log, col((0, 0), 0), st2, st2)?;
                    em.vbin(dt, BinOp::Sub, full((e, 0), bc), y, tmp, st2)?;
                } else {
                    em.vbin(dt, BinOp::Div, full((e, 0), bc), y, y, st2)?;
                }
            }
            RowKind::LayerNorm { .. } => {
                let imm = imm.ok_or_else(|| LowerError::msg("internal: no scalars"))?;
                let pb = pbuf.ok_or_else(|| LowerError::msg("internal: no parameters"))?;
                red(em, ReduceOp::Sum, x, st1)?;
                em.vbin(dt, BinOp::Div, col((0, 0), bc), st1, st1, imm)?;
                em.vbin(dt, BinOp::Sub, full((e, 0), bc), tmp, x, st1)?;
                em.signal(Engine::Vx, LD_VX.free)?;
                em.vbin(dt, BinOp::Mul, full((l4, 0), 0), y, tmp, tmp)?;
                red(em, ReduceOp::Sum, y, st2)?;
                em.vbin(dt, BinOp::Div, col((0, 0), bc), st2, st2, imm)?;
                em.vbin(dt, BinOp::Add, col((0, 0), bc), st2, st2, at(imm, e))?;
                em.vun(dt, UnOp::Sqrt, col((0, 0), 0), st2, st2)?;
                em.vbin(dt, BinOp::Div, full((e, 0), bc), y, tmp, st2)?;
                em.vbin(dt, BinOp::Mul, full((0, 0), 0), y, y, pb)?;
                em.vbin(dt, BinOp::Add, full((0, 0), 0), y, y, at(pb, l4))?;
                if rw.stats[1].is_some() {
                    em.vun(dt, UnOp::Recip, col((0, 0), 0), st2, st2)?;
                }
            }
            RowKind::Reduce(k) => {
                let op = match k {
                    ReduceKind::Max => ReduceOp::Max,
                    ReduceKind::Min => ReduceOp::Min,
                    ReduceKind::Sum | ReduceKind::Mean => ReduceOp::Sum,
                    other => {
                        return Err(LowerError::msg(format!(
                            "internal: {other:?} reaches the row-wise kernel"
                        )));
                    }
                };
                red(em, op, x, y)?;
                em.signal(Engine::Vx, LD_VX.free)?;
                if k == ReduceKind::Mean {
                    let imm = imm.ok_or_else(|| LowerError::msg("internal: no scalars"))?;
                    em.vbin(dt, BinOp::Div, col((0, 0), bc), y, y, imm)?;
                }
            }
        }
        em.signal(Engine::Vx, VX_ST.full)?;
        em.wait(Engine::St, VX_ST.full);
        let ol = out_len as u64 * e;
        em.dma_block(Dir::Store, out_seg, out_base + r0 as u64 * ol, &[(r * out_len, e, e)], e, y)?;
        for (stat, buf) in stat_outs.iter().zip([st1, st2]) {
            if let Some((seg, base)) = stat {
                em.dma_block(Dir::Store, *seg, base + r0 as u64 * e, &[(r, e, e)], e, buf)?;
            }
        }
        em.signal(Engine::St, VX_ST.free)?;
    }
    Ok((0, s.tens[rw.input].bytes() + s.tens[rw.out].bytes()))
}
