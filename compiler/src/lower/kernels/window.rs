//! Window kernels on the vector engine: depthwise convolution and pooling (one vector
//! operation per kernel tap over a padded block) and global pooling (a reduction per channel
//! block).

use accelc_isa::inst::VxReduce;
use accelc_isa::program::{MAX_SHAPE_DIM, MAX_VX_ELEMENTS, SHAPE_SRC1_COL_BROADCAST};
use accelc_isa::{Axis, BinOp, Engine, ReduceOp, UnOp};

use crate::lower::LowerError;
use crate::lower::emit::{Dir, Emitter, LD_VX, PARAMS, VX_ST, at, vshape};
use crate::lower::schedule::{Act, Dw, Pool, Sched, Step, T};

use super::*;

pub(super) enum WinKind<'a> {
    Depthwise(&'a Dw),
    Pool(&'a Pool),
}

/// Depthwise convolution and pooling: per kernel tap, one vector operation over a block of
/// output rows, reading the padded input block with the stride of the window.
pub(super) fn window(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
    kind: WinKind<'_>,
) -> Result<(u64, u64), LowerError> {
    let (input, img, k, st, d, pad, out_hw, out) = match kind {
        WinKind::Depthwise(Dw { win, .. }) | WinKind::Pool(Pool { win, .. }) => {
            (win.input, win.img, win.k, win.s, win.d, win.pad, win.out_hw, win.out)
        }
    };
    let (dt, e) = elem(s, input)?;
    let [n, h, w, c] = img;
    let [oh, ow] = out_hw;
    let [pt, pl, pb, pr] = pad;
    let (wp, hp) = (w + pl + pr, h + pt + pb);
    let taps = k[0] * k[1];
    // An integer depthwise convolution loads 8-bit blocks (`e`), widens them to int32 and
    // computes there (`ec`), and requantises to the output type (`eo`); everything else
    // computes in its input type.
    let quant = matches!(kind, WinKind::Depthwise(Dw { quant: Some(_), .. }));
    let (odt, eo) = elem(s, out)?;
    let (cdt, ec) = if quant { (accelc_isa::Dtype::S32, 4) } else { (dt, e) };
    let (pad_value, scalars): (u32, Vec<u32>) = match kind {
        // Padding takes the input zero point, whose contribution the bias already removed.
        WinKind::Depthwise(Dw { quant: Some(zp), .. }) => (u32::from_le_bytes([*zp; 4]), vec![]),
        WinKind::Depthwise(x) => match x.act {
            Act::Clip(lo, hi) => (0, vec![lo.to_bits(), hi.to_bits()]),
            _ => (0, vec![]),
        },
        // Max pooling pads with the type's least value, which no tap can beat.
        WinKind::Pool(p) if p.max => match dt {
            accelc_isa::Dtype::S8 => (0x8080_8080, vec![]),
            accelc_isa::Dtype::U8 => (0, vec![]),
            _ => (NEG_INF, vec![]),
        },
        WinKind::Pool(_) => (0, vec![]),
    };
    let pbuf = params(em, step, &scalars)?;
    let const_bytes = step.consts.first().map_or(0, |c| c.len() as u64);
    let imm = pbuf.map(|p| at(p, const_bytes));
    // Blocks of output rows over a slice of `ct` channels.
    let act_bytes = |r: usize, ct: usize| {
        (((r - 1) * st[0] + (k[0] - 1) * d[0] + 1).min(hp) * wp * ct) as u64 * e
    };
    let out_bytes = |r: usize, ct: usize| (r * ow * ct) as u64 * ec;
    // Integer kernels: the widened block and two requantised output tiles.
    let extra = |r: usize, ct: usize| {
        if quant { act_bytes(r, ct) / e * ec + 2 * (r * ow * ct) as u64 * eo } else { 0 }
    };
    let avail = em.spad_free();
    // Three output blocks' room for two: smaller blocks overlap loads, vector work and
    // stores better than the largest that fits (measured on the zoo's pools and depthwise).
    let fits = |r: usize, ct: usize| {
        2 * act_bytes(r, ct) + 3 * out_bytes(r, ct) + extra(r, ct) + 7 * 64 <= avail
            && (r * ow * ct) as u64 <= MAX_VX_ELEMENTS
            && r <= MAX_SHAPE_DIM
            && ct <= MAX_SHAPE_DIM
    };
    let parts = (1..=c)
        .find(|p| fits(1, c.div_ceil(*p)))
        .ok_or_else(|| LowerError::msg("a window kernel's rows do not fit the scratchpad"))?;
    let ctile = c.div_ceil(parts);
    let rblk = (1..=oh).rev().find(|&r| fits(r, ctile)).unwrap_or(1);
    let rblk = oh.div_ceil(oh.div_ceil(rblk));
    if ow > MAX_SHAPE_DIM {
        return Err(LowerError::msg("too many columns for a vector shape"));
    }
    let act_buf = [em.spad(act_bytes(rblk, ctile))?, em.spad(act_bytes(rblk, ctile))?];
    let out_buf = [em.spad(out_bytes(rblk, ctile))?, em.spad(out_bytes(rblk, ctile))?];
    let wide = if quant { Some(em.spad(act_bytes(rblk, ctile) / e * ec)?) } else { None };
    let qout = if quant {
        let b = (rblk * ow * ctile) as u64 * eo;
        Some([em.spad(b)?, em.spad(b)?])
    } else {
        None
    };
    let blocks: Vec<(usize, usize, usize, usize)> = (0..oh)
        .step_by(rblk)
        .flat_map(|oy0| {
            (0..c).step_by(ctile).map(move |c0| (oy0, rblk.min(oh - oy0), c0, ctile.min(c - c0)))
        })
        .collect();
    let (in_seg, in_base) = s.addr(input)?;
    let (out_seg, out_base) = s.addr(out)?;
    let mut i = 0usize;
    for im in 0..n {
        for &(oy0, r, c0, ct) in &blocks {
            let pr0 = oy0 * st[0];
            let nrows = ((r - 1) * st[0] + (k[0] - 1) * d[0] + 1).min(hp - pr0);
            let iy0 = pr0.saturating_sub(pt);
            let iy1 = (pr0 + nrows).saturating_sub(pt).min(h);
            let abuf = act_buf[i % 2];
            let obuf = out_buf[i % 2];
            em.wait(Engine::Ld, LD_VX.free);
            let padded = pl + pr > 0 || pr0 < pt || pr0 + nrows > pt + h;
            if padded {
                em.fill(abuf, (nrows * wp * ct) as u64 * e, pad_value)?;
            }
            if iy1 > iy0 {
                em.dma_block(
                    Dir::Load,
                    in_seg,
                    in_base + (((im * h + iy0) * w * c) + c0) as u64 * e,
                    &[
                        (iy1 - iy0, (w * c) as u64 * e, (wp * ct) as u64 * e),
                        (w, c as u64 * e, ct as u64 * e),
                        (ct, e, e),
                    ],
                    e,
                    at(abuf, (((iy0 + pt - pr0) * wp + pl) * ct) as u64 * e),
                )?;
            } else if !padded {
                em.fill(abuf, e, pad_value)?;
            }
            em.signal(Engine::Ld, LD_VX.full)?;
            em.wait(Engine::Vx, LD_VX.full);
            em.wait(Engine::Vx, VX_ST.free);
            // The block the taps read: the loaded one, or its int32 widening.
            let block = match wide {
                Some(wb) => {
                    let elems = (nrows * wp * ct) as u64;
                    let cols = elems.min(MAX_SHAPE_DIM as u64);
                    // Whole rows of `cols`, then the remainder as one short row.
                    let full = elems / cols;
                    if full > 0 {
                        let sh = vshape(1, full, cols, (cols * ec, 0), (cols * e, 0), (0, 0), 0);
                        em.vconv(dt, cdt, sh, wb, abuf)?;
                    }
                    let rest = elems - full * cols;
                    if rest > 0 {
                        let sh = vshape(1, 1, rest, (rest * ec, 0), (rest * e, 0), (0, 0), 0);
                        em.vconv(dt, cdt, sh, at(wb, full * cols * ec), at(abuf, full * cols * e))?;
                    }
                    wb
                }
                None => abuf,
            };
            let dst = (ct as u64 * ec, (ow * ct) as u64 * ec);
            let src = ((st[1] * ct) as u64 * ec, (st[0] * wp * ct) as u64 * ec);
            for t in 0..taps {
                let (kh, kw) = (t / k[1], t % k[1]);
                let a0 = at(block, ((kh * d[0] * wp + kw * d[1]) * ct) as u64 * ec);
                match kind {
                    WinKind::Depthwise(_) => {
                        // Float parameters start with the bias; integer ones carry it in
                        // their records, after the taps.
                        let skip = if quant { 0 } else { c };
                        let wts = at(
                            pbuf.ok_or_else(|| LowerError::msg("internal: no taps"))?,
                            (skip + t * c + c0) as u64 * ec,
                        );
                        let shape = vshape(r as u64, ow as u64, ct as u64, dst, src, (0, 0), 0);
                        // The first tap writes the sum, the others accumulate into it.
                        let op = if t == 0 { BinOp::Mul } else { BinOp::Mac };
                        em.vbin(cdt, op, shape, obuf, a0, wts)?;
                    }
                    WinKind::Pool(p) => {
                        if t == 0 {
                            em.vun(
                                dt,
                                UnOp::Mov,
                                vshape(r as u64, ow as u64, ct as u64, dst, src, (0, 0), 0),
                                obuf,
                                a0,
                            )?;
                        } else {
                            let op = if p.max { BinOp::Max } else { BinOp::Add };
                            em.vbin(
                                dt,
                                op,
                                vshape(r as u64, ow as u64, ct as u64, dst, dst, src, 0),
                                obuf,
                                obuf,
                                a0,
                            )?;
                        }
                    }
                }
            }
            em.signal(Engine::Vx, LD_VX.free)?;
            let full = |flags| vshape(r as u64, ow as u64, ct as u64, dst, dst, (0, 0), flags);
            let mut store_from = obuf;
            match kind {
                WinKind::Depthwise(_) if quant => {
                    let pb = pbuf.ok_or_else(|| LowerError::msg("internal: no bias"))?;
                    let qb = qout.map(|q| q[i % 2]).unwrap_or(obuf);
                    let sh = vshape(
                        r as u64,
                        ow as u64,
                        ct as u64,
                        (ct as u64 * eo, (ow * ct) as u64 * eo),
                        dst,
                        (0, 0),
                        0,
                    );
                    let rec = accelc_isa::requant::BIASED_RECORD_BYTES as u64;
                    let recs = at(pb, ((taps * c) as u64) * ec + c0 as u64 * rec);
                    em.vrequant_biased(odt, sh, qb, obuf, recs)?;
                    store_from = qb;
                }
                WinKind::Depthwise(x) => {
                    let pb = pbuf.ok_or_else(|| LowerError::msg("internal: no bias"))?;
                    em.vbin(dt, BinOp::Add, full(0), obuf, obuf, at(pb, c0 as u64 * e))?;
                    match x.act {
                        Act::None => {}
                        Act::Relu => em.vun(dt, UnOp::Relu, full(0), obuf, obuf)?,
                        Act::Clip(..) => {
                            let imm =
                                imm.ok_or_else(|| LowerError::msg("internal: no clip bounds"))?;
                            em.vbin(
                                dt,
                                BinOp::Max,
                                full(SHAPE_SRC1_COL_BROADCAST),
                                obuf,
                                obuf,
                                imm,
                            )?;
                            em.vbin(
                                dt,
                                BinOp::Min,
                                full(SHAPE_SRC1_COL_BROADCAST),
                                obuf,
                                obuf,
                                at(imm, e),
                            )?;
                        }
                    }
                }
                WinKind::Pool(p) if !p.max => {
                    // Divisors per output position, the same for every channel.
                    let table = pbuf.ok_or_else(|| LowerError::msg("internal: no divisors"))?;
                    let shape = vshape(
                        r as u64,
                        ow as u64,
                        ct as u64,
                        dst,
                        dst,
                        (e, ow as u64 * e),
                        SHAPE_SRC1_COL_BROADCAST,
                    );
                    em.vbin(dt, BinOp::Div, shape, obuf, obuf, at(table, (oy0 * ow) as u64 * e))?;
                }
                WinKind::Pool(_) => {}
            }
            em.signal(Engine::Vx, VX_ST.full)?;
            em.wait(Engine::St, VX_ST.full);
            em.dma_block(
                Dir::Store,
                out_seg,
                out_base + (((im * oh + oy0) * ow * c) + c0) as u64 * eo,
                &[(r * ow, c as u64 * eo, ct as u64 * eo), (ct, eo, eo)],
                eo,
                store_from,
            )?;
            em.signal(Engine::St, VX_ST.free)?;
            i += 1;
        }
    }
    let macs = match kind {
        WinKind::Depthwise(_) => (n * oh * ow * c * taps) as u64,
        WinKind::Pool(_) => 0,
    };
    // The input some window reads (a stride longer than the window skips the rest).
    let in_bytes =
        windowed_input_bytes(s.tens[input].bytes(), [h, w], [oh, ow], st, k, d, [pt, pl]);
    let bytes = in_bytes + s.tens[out].bytes() + step.consts.first().map_or(0, |c| c.len() as u64);
    Ok((macs, bytes))
}

/// Global pooling: per image and channel block, one reduction over the positions (then the
/// float average's division, or the integer pool's offset and requantisation).
pub(super) fn global_pool(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
    (input, out): (T, T),
    max: bool,
    img: [usize; 4],
    quant: bool,
) -> Result<(u64, u64), LowerError> {
    let (dt, e) = elem(s, input)?;
    let (odt, eo) = elem(s, out)?;
    let [n, h, w, c] = img;
    let hw = h * w;
    if hw > MAX_SHAPE_DIM {
        return Err(LowerError::msg(format!(
            "global pooling over more than {MAX_SHAPE_DIM} positions"
        )));
    }
    // Sums in `ea` bytes: int32 for the integer pool, else the input's type.
    let (adt, ea) = if quant { (accelc_isa::Dtype::S32, 4) } else { (dt, e) };
    let scal = if quant {
        params(em, step, &[])?.ok_or_else(|| LowerError::msg("internal: no record"))?
    } else {
        let scal = em.spad(4)?;
        if !max {
            em.fill(scal, 4, (hw as f32).to_bits())?;
            em.signal(Engine::Ld, PARAMS)?;
            em.wait(Engine::Vx, PARAMS);
        }
        scal
    };
    // Six buffers, each rounded up to 64 bytes.
    let avail = em.spad_free().saturating_sub(6 * 64);
    let per_ch = 2 * (hw as u64 * e + ea + if quant { eo } else { 0 });
    let ct = ((avail / per_ch) as usize).min(c).clamp(1, MAX_SHAPE_DIM);
    if per_ch * ct as u64 > avail {
        return Err(LowerError::msg("global pooling input too large for the scratchpad"));
    }
    let ibuf = [em.spad((hw * ct) as u64 * e)?, em.spad((hw * ct) as u64 * e)?];
    let obuf = [em.spad(ct as u64 * ea)?, em.spad(ct as u64 * ea)?];
    let qbuf =
        if quant { Some([em.spad(ct as u64 * eo)?, em.spad(ct as u64 * eo)?]) } else { None };
    let (in_seg, in_base) = s.addr(input)?;
    let (out_seg, out_base) = s.addr(out)?;
    let mut i = 0;
    for im in 0..n {
        for c0 in (0..c).step_by(ct) {
            let cn = ct.min(c - c0);
            em.wait(Engine::Ld, LD_VX.free);
            em.dma_block(
                Dir::Load,
                in_seg,
                in_base + ((im * hw * c + c0) as u64) * e,
                &[(hw, c as u64 * e, cn as u64 * e), (cn, e, e)],
                e,
                ibuf[i % 2],
            )?;
            em.signal(Engine::Ld, LD_VX.full)?;
            em.wait(Engine::Vx, LD_VX.full);
            em.wait(Engine::Vx, VX_ST.free);
            let shape =
                em.shape(vshape(1, hw as u64, cn as u64, (0, 0), (cn as u64 * e, 0), (0, 0), 0))?;
            em.push(VxReduce {
                op: if max { ReduceOp::Max } else { ReduceOp::Sum },
                axis: Axis::Rows,
                dtype: dt,
                shape,
                dst: obuf[i % 2],
                src: ibuf[i % 2],
                out_dtype: adt,
            })?;
            em.signal(Engine::Vx, LD_VX.free)?;
            let mut store_from = obuf[i % 2];
            if let Some(qb) = qbuf {
                let row = |flags| vshape(1, 1, cn as u64, (0, 0), (0, 0), (0, 0), flags);
                let (o32, q8) = (obuf[i % 2], qb[i % 2]);
                em.vbin(adt, BinOp::Add, row(SHAPE_SRC1_COL_BROADCAST), o32, o32, at(scal, 16))?;
                em.vrequant_tensor(odt, row(0), q8, o32, scal)?;
                store_from = q8;
            } else if !max {
                em.vbin(
                    dt,
                    BinOp::Div,
                    vshape(1, 1, cn as u64, (0, 0), (0, 0), (0, 0), SHAPE_SRC1_COL_BROADCAST),
                    obuf[i % 2],
                    obuf[i % 2],
                    scal,
                )?;
            }
            em.signal(Engine::Vx, VX_ST.full)?;
            em.wait(Engine::St, VX_ST.full);
            em.dma_block(
                Dir::Store,
                out_seg,
                out_base + ((im * c + c0) as u64) * eo,
                &[(cn, eo, eo)],
                eo,
                store_from,
            )?;
            em.signal(Engine::St, VX_ST.free)?;
            i += 1;
        }
    }
    Ok((0, s.tens[input].bytes() + s.tens[out].bytes()))
}
