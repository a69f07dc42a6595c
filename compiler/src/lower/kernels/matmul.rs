//! Matrix kernels (convolution, Gemm, MatMul) on the matrix engine: NHWC activation blocks
//! streamed against packed weight tiles, epilogues (bias, activation, residual) on the vector
//! engine, everything double-buffered.
//!
//! Matrix kernels (convolution, Gemm, MatMul) keep NHWC activations: for a fixed kernel row,
//! the input elements that meet one weight tile are `k` contiguous channels (or, with one
//! group and no dilation, a contiguous run over kernel columns and channels, which keeps
//! the array full even for 3-channel images). Output rows stream through the array with a
//! constant input stride, so one `mx.matmul` covers a whole block of output rows ("flat"
//! mode, computing a few discarded columns in the padding) or one output row ("row" mode),
//! whichever the cost model says is cheaper. Activation blocks, weight packets, accumulator
//! tiles and residual tiles are double-buffered through the semaphore channels of
//! [`crate::lower::emit`], so loads, matrix work, epilogues and stores overlap.

use std::cell::Cell;

use accelc_isa::inst::{MxLoadW, MxMatmul, field_max};
use accelc_isa::program::SHAPE_SRC1_COL_BROADCAST;
use accelc_isa::{BinOp, DeviceConfig, Engine, UnOp};

use crate::lower::LowerError;
use crate::lower::emit::{
    Dir, Emitter, LD_MX_A, LD_MX_W, LD_VX, MX_VX, SEG_CONST, VX_ST, at, vshape,
};
use crate::lower::schedule::{Act, Mm, Sched, Step, Weights};

use super::*;

/// One weight tile's rows: for kernel row `kh`, `k` input elements starting `a_off` elements
/// after the pixel's first channel; row `r` meets weight `(kw, cin)` = `rows[r]`.
pub(super) struct Chunk {
    kh: usize,
    a_off: u64,
    rows: Vec<(usize, usize)>,
}

pub(super) fn chunks(mm: &Mm, g: usize, a: usize) -> Vec<Chunk> {
    let c = mm.img[3];
    let cg = c / mm.groups;
    let mut out = Vec::new();
    for kh in 0..mm.k[0] {
        if mm.groups == 1 && mm.d[1] == 1 {
            let span = mm.k[1] * c;
            for j in (0..span).step_by(a) {
                let k = a.min(span - j);
                out.push(Chunk {
                    kh,
                    a_off: j as u64,
                    rows: (j..j + k).map(|e| (e / c, e % c)).collect(),
                });
            }
        } else {
            for kw in 0..mm.k[1] {
                for c0 in (g * cg..(g + 1) * cg).step_by(a) {
                    let k = a.min((g + 1) * cg - c0);
                    out.push(Chunk {
                        kh,
                        a_off: (kw * mm.d[1] * c + c0) as u64,
                        rows: (c0..c0 + k).map(|ci| (kw, ci)).collect(),
                    });
                }
            }
        }
    }
    out
}

/// Output-channel tiles of group `g`: `(first channel, width)`.
pub(super) fn cout_tiles(mm: &Mm, g: usize, a: usize) -> Vec<(usize, usize)> {
    let cog = mm.cout / mm.groups;
    (g * cog..(g + 1) * cog).step_by(a).map(|n0| (n0, a.min((g + 1) * cog - n0))).collect()
}

/// Packs constant weights in the order the kernel streams them: per group, per output tile,
/// per chunk, a `k × n` row-major tile. The bytes go to `sink` one output tile at a time (a
/// permutation of `mm.oihw`: the same length).
///
/// Errors: `sink`'s.
pub(crate) fn pack_weights(
    mm: &Mm,
    cfg: &DeviceConfig,
    e: usize,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let a = cfg.array_dim as usize;
    let cg = mm.img[3] / mm.groups;
    let (kh_n, kw_n) = (mm.k[0], mm.k[1]);
    let mut out = Vec::new();
    for g in 0..mm.groups {
        let ch = chunks(mm, g, a);
        for (n0, nt) in cout_tiles(mm, g, a) {
            out.clear();
            for c in &ch {
                for &(kw, ci) in &c.rows {
                    for j in 0..nt {
                        let o = n0 + j;
                        let idx = ((o * cg + (ci - g * cg)) * kh_n + c.kh) * kw_n + kw;
                        out.extend_from_slice(&mm.oihw[idx * e..(idx + 1) * e]);
                    }
                }
            }
            sink(&out)?;
        }
    }
    Ok(())
}

pub(super) fn matmul(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
    mm: &Mm,
) -> Result<(u64, u64), LowerError> {
    let (dt, e) = elem(s, mm.input)?;
    if let Some(p) = super::cstream::plan(mm, &em.cfg, dt, elem(s, mm.out)?.1) {
        return super::cstream::cstream(em, s, step, mm, &p);
    }
    // Element sizes: `e` of activations and weights, `ea` of the accumulator (s32 sums for
    // integers, f32 otherwise: the same 4 bytes for f32 inputs), `eo` of the output.
    let q = mm.quant.as_ref();
    // Integer kernels without records store the int32 accumulator itself.
    let requant = q.is_some_and(|q| !q.records.is_empty());
    let (odt, eo) = elem(s, mm.out)?;
    let ea: u64 = if q.is_some() { 4 } else { e };
    let wdt = if q.is_some() { accelc_isa::Dtype::S8 } else { dt };
    let cfg = em.cfg.clone();
    let a = cfg.array_dim as usize;
    let [n, h, w, c] = mm.img;
    let [oh, ow] = mm.out_hw;
    let [pt, pl, pb, pr] = mm.pad;
    let (wp, hp) = (w + pl + pr, h + pt + pb);
    let (sh, sw) = (mm.s[0], mm.s[1]);
    let (dh, _dw) = (mm.d[0], mm.d[1]);
    let kh_n = mm.k[0];
    let cg = c / mm.groups;
    let rate = cfg.matmul_cycles_per_row(dt);
    let fill_drain = 2 * u64::from(cfg.array_dim);
    let has_bias = if q.is_some() { true } else { mm.bias.iter().any(|b| *b != 0.0) };
    let clip = match mm.act {
        Act::Clip(lo, hi) => Some((lo, hi)),
        _ => None,
    };
    let nt_max = a.min(mm.cout / mm.groups);
    // Requantised output tiles are stored in groups of `qgroup` consecutive channel tiles:
    // an 8-bit tile of 32 channels alone makes 32-byte runs in the NHWC output, each taking a
    // whole 64-byte DRAM burst.
    let ntiles: usize = (0..mm.groups).map(|g| cout_tiles(mm, g, a).len()).sum();
    let burst = u64::from(cfg.dram_burst_bytes.max(1));
    let (_, eo_q) = elem(s, mm.out)?;
    // Groups of whole bursts when the channels split into them evenly; otherwise all the
    // channels (whole pixels, runs as long as the block's rows: 96 channels would leave a
    // 32-channel group), unless that makes the buffers large.
    let burst_group = (burst.div_ceil(nt_max as u64 * eo_q) as usize).clamp(1, ntiles.max(1));
    let even = (mm.cout as u64 * eo_q).is_multiple_of(burst_group as u64 * nt_max as u64 * eo_q)
        && (burst_group as u64 * nt_max as u64 * eo_q).is_multiple_of(burst);
    let qgroup =
        if !even && mm.cout as u64 * eo_q <= 8 * burst { ntiles.max(1) } else { burst_group };
    let all_chunks: Vec<Vec<Chunk>> = (0..mm.groups).map(|g| chunks(mm, g, a)).collect();
    // Stride-2 convolutions whose weight tiles each hold one kernel column (channels a
    // multiple of the array) read phase planes: the block is loaded as up to four planes of
    // the even/odd padded rows × even/odd padded columns, so every tap is a stride-1 walk of
    // one plane and flat mode computes no skipped columns or rows (a 1×1 kernel loads only
    // the even/even plane, a quarter of the block).
    // A cell: when the planes (larger than the strided block: four planes of a 3×3 window hold
    // 16 pixels' channels, the block's rows 9) do not fit, the kernel falls back to them.
    let phase =
        Cell::new(sh == 2 && sw == 2 && mm.d == [1, 1] && mm.groups == 1 && c.is_multiple_of(a));
    let (pky, pkx) = (mm.k[0].min(2), mm.k[1].min(2));
    if (sw * c) as u64 * e > field_max("mx.matmul", "a_stride").unwrap_or(0) && ow > 1 {
        return Err(LowerError::msg(format!(
            "input rows of {c} channels are too wide for the matrix engine's stride field"
        )));
    }
    // Local memory: parameters, then the rest split between the double buffers.
    let pbuf = if has_bias || clip.is_some() {
        let mut st = step.clone();
        st.consts.truncate(1);
        let scal: Vec<u32> =
            clip.map(|(lo, hi)| vec![lo.to_bits(), hi.to_bits()]).unwrap_or_default();
        if !has_bias {
            st.consts[0].clear();
        }
        params(em, &st, &scal)?
    } else {
        None
    };
    // Requantised kernels carry the bias in their records (`vx.requant bias=1`).
    let bias_bytes = if has_bias && !requant { mm.cout as u64 * ea } else { 0 };
    let rec_size = accelc_isa::requant::BIASED_RECORD_BYTES as u64;
    let packet_max = (u64::from(cfg.spad_bytes) / 16).max((a * a) as u64 * e);
    // A tile of `owt` output columns reads `wb(owt)` padded input columns.
    let (kw_n, dw) = (mm.k[1], mm.d[1]);
    let wb_of = |owt: usize| ((owt - 1) * sw + (kw_n - 1) * dw + 1).min(wp);
    // The row length of flat mode's virtual grid: padded input columns, or a phase plane's.
    let vw_of = |owt: usize| if phase.get() { owt + (kw_n - 1) / 2 } else { wb_of(owt) };
    // Rows of a phase plane.
    let hq_of = |r: usize| r + (kh_n - 1) / 2;
    let res_tile = |r: usize, owt: usize| (r * owt * nt_max) as u64 * e;
    let acc_rows =
        |r: usize, owt: usize, flat: bool| if flat { (r - 1) * vw_of(owt) + owt } else { r * owt };
    let act_bytes = |r: usize, owt: usize| {
        if phase.get() {
            (pky * pkx * hq_of(r) * vw_of(owt) * c) as u64 * e
        } else {
            (((r - 1) * sh + (kh_n - 1) * dh + 1).min(hp) * wb_of(owt) * c) as u64 * e
        }
    };
    let spad_avail = em.spad_free();
    // Constant weights small enough stay resident: loaded once, as the first block needs
    // them, instead of once per block, and never queued behind the stores of earlier tiles.
    let wtotal = mm.oihw.len() as u64;
    let may_reside = matches!(mm.weights, Weights::Const) && wtotal <= spad_avail / 4;
    let max_rows = field_max("mx.matmul", "rows").unwrap_or(0) as usize;
    let fits = |r: usize, owt: usize, flat: bool, qdepth: u64, res: bool| {
        let w_reserve = if res { wtotal } else { 2 * packet_max };
        let rows = acc_rows(r, owt, flat);
        rows <= max_rows
            && 2 * (rows * nt_max) as u64 * ea <= u64::from(cfg.acc_bytes)
            && 2 * act_bytes(r, owt)
                + w_reserve
                + if mm.residual.is_some() { 2 * res_tile(r, owt) } else { 0 }
                + if requant { qdepth * (rows * nt_max * qgroup) as u64 * eo } else { 0 }
                + 8 * 64
                <= spad_avail
    };
    // The widest tile (then the most rows) that fits, and its matrix-engine cycles.
    let plan = |flat: bool, qd: u64, res: bool| -> Option<(usize, usize, u64)> {
        let parts = (1..=ow).find(|p| fits(1, ow.div_ceil(*p), flat, qd, res))?;
        let owt = ow.div_ceil(parts);
        let r = (1..=oh).rev().find(|&r| fits(r, owt, flat, qd, res))?;
        let blocks = oh.div_ceil(r);
        let r = oh.div_ceil(blocks);
        let per_block = if flat {
            acc_rows(r, owt, true) as u64 * rate + fill_drain
        } else {
            r as u64 * (owt as u64 * rate + fill_drain)
        };
        Some((r, owt, per_block * (blocks * parts) as u64))
    };
    let flat_ok = sh == sw;
    // Requantised tiles: four buffers when they fit, so that stores, which wait out the
    // DRAM's write latency behind the loads in flight, do not hold up the epilogue.
    let choose = |res: bool| -> Option<(u64, (bool, usize, usize))> {
        let four = (flat_ok && plan(true, 4, res).is_some()) || plan(false, 4, res).is_some();
        let qdepth = if four { 4 } else { 2 };
        // Phase planes are laid out for flat mode only.
        let row_plan = if phase.get() { None } else { plan(false, qdepth, res) };
        let choice = match (if flat_ok { plan(true, qdepth, res) } else { None }, row_plan) {
            (Some(f), Some(r)) if r.2 < f.2 => (false, r.0, r.1),
            (Some(f), _) => (true, f.0, f.1),
            (None, Some(r)) => (false, r.0, r.1),
            (None, None) => return None,
        };
        Some((qdepth, choice))
    };
    // Resident weights save reloads when several blocks reuse them. With one block they only
    // stream without waiting for packet buffers, which paid off for the zoo's requantised
    // kernels (their stores compete for the bus) and cost the float ones a little (their
    // larger reservation shrinks the other buffers): mobilenet_v2_int8_qdq -0.3%,
    // transformer_encoder +2.7% (measured with `accelc profile`).
    let pick = || {
        let mut resident = may_reside;
        let mut chosen = if resident { choose(true) } else { None };
        if let Some((_, (_, r, owt))) = chosen
            && n * oh.div_ceil(r) * ow.div_ceil(owt) == 1
            && !requant
        {
            chosen = None;
        }
        if chosen.is_none() {
            resident = false;
            chosen = choose(false);
        }
        (resident, chosen)
    };
    let (mut resident, mut chosen) = pick();
    if chosen.is_none() && phase.get() {
        phase.set(false);
        (resident, chosen) = pick();
    }
    let phase = phase.get();
    let a_stride = if phase { c as u64 * e } else { (sw * c) as u64 * e };
    let Some((qdepth, (flat, rblk, owblk))) = chosen else {
        return Err(LowerError::msg(format!(
            "a {h}x{w}x{c} input does not fit the scratchpad even one output pixel at a time"
        )));
    };
    // Whether a weight tile keeps the array busy longer than its bytes take to arrive.
    let array_bound = {
        let rows = if flat { acc_rows(rblk, owblk, true) as u64 } else { (rblk * owblk) as u64 };
        let mx = rows * rate + fill_drain * if flat { 1 } else { rblk as u64 } + a as u64;
        let bytes_per_cycle = (cfg.dram_bytes_per_sec / cfg.clock_hz).max(1);
        mx * bytes_per_cycle > (a * nt_max) as u64 * e
    };
    let act_buf = [em.spad(act_bytes(rblk, owblk))?, em.spad(act_bytes(rblk, owblk))?];
    let w_buf = if resident {
        let b = em.spad(wtotal.max(1))?;
        [b, b]
    } else {
        [em.spad(packet_max)?, em.spad(packet_max)?]
    };
    let mut first_block = true;
    let res_buf = if mm.residual.is_some() {
        Some([em.spad(res_tile(rblk, owblk))?, em.spad(res_tile(rblk, owblk))?])
    } else {
        None
    };
    let acc_tile = (acc_rows(rblk, owblk, flat) * nt_max) as u64 * ea;
    let acc_buf = [em.acc(acc_tile)?, em.acc(acc_tile)?];
    // Requantised output tiles (integer kernels), in the accumulator tile's geometry.
    let out_tile = (acc_rows(rblk, owblk, flat) * nt_max * qgroup) as u64 * eo;
    let q_buf = if requant {
        let mut b = Vec::new();
        for _ in 0..qdepth {
            b.push(em.spad(out_tile)?);
        }
        Some(b)
    } else {
        None
    };
    // The channel's extra buffers, given at the start and taken back at the end.
    let extra_q = if requant { qdepth - u64::from(crate::lower::emit::DEPTH) } else { 0 };
    for _ in 0..extra_q {
        em.signal(Engine::St, VX_ST.free)?;
    }
    let pad_pattern = q.map_or(0, |q| u32::from_le_bytes([q.pad_byte; 4]));
    let (in_seg, in_base) = s.addr(mm.input)?;
    let (out_seg, out_base) = s.addr(mm.out)?;
    let res_addr = mm.residual.map(|r| s.addr(r)).transpose()?;
    // Tile byte offsets inside the packed weights, in streaming order.
    let tile_bytes = |ch: &Chunk, nt: usize| (ch.rows.len() * nt) as u64 * e;
    let wconst_off = step.const_offs.get(1).copied().unwrap_or(0);
    let (mut ia, mut iw, mut iacc, mut iq) = (0usize, 0usize, 0usize, 0usize);
    // Every tile's (first channel, width), in streaming order, and each tile's output group:
    // (first channel, width, the tile's column in the group).
    let tiles: Vec<(usize, usize)> = (0..mm.groups).flat_map(|g| cout_tiles(mm, g, a)).collect();
    let tile_group = |t: usize| {
        let g0 = t - t % qgroup;
        let g1 = (g0 + qgroup).min(tiles.len());
        let width: usize = tiles[g0..g1].iter().map(|x| x.1).sum();
        let col: usize = tiles[g0..t].iter().map(|x| x.1).sum();
        (tiles[g0].0, width, col, t + 1 == g1)
    };
    let mut packed_cursor: Vec<u64> = Vec::new();
    // Start offset of each (g, tile) in the packed weights.
    {
        let mut off = wconst_off;
        for (g, ch) in all_chunks.iter().enumerate() {
            for (_, nt) in cout_tiles(mm, g, a) {
                packed_cursor.push(off);
                off += ch.iter().map(|x| tile_bytes(x, nt)).sum::<u64>();
            }
        }
    }
    // Generated as needed, not collected: a huge output then stops at the emitter's
    // instruction limit instead of allocating its block list first.
    let blocks = || {
        (0..oh).step_by(rblk).flat_map(move |oy0| {
            (0..ow)
                .step_by(owblk)
                .map(move |ox0| (oy0, rblk.min(oh - oy0), ox0, owblk.min(ow - ox0)))
        })
    };
    for img in 0..n {
        for (oy0, r, ox0, owt) in blocks() {
            let wb = wb_of(owt);
            let px0 = ox0 * sw;
            let ix0 = px0.saturating_sub(pl).min(w);
            let ix1 = (px0 + wb).saturating_sub(pl).min(w);
            // The activation block: padded rows from oy0·sh, real rows clipped to the image.
            let pr0 = oy0 * sh;
            let nrows = ((r - 1) * sh + (kh_n - 1) * dh + 1).min(hp - pr0);
            let iy0 = pr0.saturating_sub(pt);
            let iy1 = (pr0 + nrows).saturating_sub(pt).min(h);
            let abuf = act_buf[ia % 2];
            em.wait(Engine::Ld, LD_MX_A.free);
            let padded = px0 < pl || px0 + wb > pl + w || pr0 < pt || pr0 + nrows > pt + h;
            if phase {
                load_phases(
                    em,
                    &PhaseBlock {
                        seg: in_seg,
                        base: in_base + mm.a_offs[img],
                        img: [h, w, c],
                        pad: [pt, pl],
                        origin: [pr0, px0],
                        planes: [pky, pkx],
                        plane: [hq_of(r), vw_of(owt)],
                        e,
                        pad_pattern,
                        buf: abuf,
                    },
                )?;
            } else if padded {
                em.fill(abuf, (nrows * wb * c) as u64 * e, pad_pattern)?;
            }
            if !phase && iy1 > iy0 && ix1 > ix0 {
                let near = ((iy0 + pt - pr0) * wb + (ix0 + pl - px0)) * c;
                em.dma_block(
                    Dir::Load,
                    in_seg,
                    in_base + mm.a_offs[img] + ((iy0 * w + ix0) * c) as u64 * e,
                    &[
                        (iy1 - iy0, (w * c) as u64 * e, (wb * c) as u64 * e),
                        ((ix1 - ix0) * c, e, e),
                    ],
                    e,
                    at(abuf, near as u64 * e),
                )?;
            } else if !padded && !phase {
                em.fill(abuf, e, 0)?;
            }
            em.signal(Engine::Ld, LD_MX_A.full)?;
            em.wait(Engine::Mx, LD_MX_A.full);
            let mut tile_idx = 0usize;
            for (g, ch) in all_chunks.iter().enumerate() {
                for (n0, nt) in cout_tiles(mm, g, a) {
                    // Packets of consecutive tiles. When the array is the bottleneck they
                    // are balanced: a full packet followed by a small one would leave the
                    // array idle while the next tile's first packet loads behind the small
                    // one. When the weights' DRAM traffic is, full packets keep fewer
                    // latencies exposed.
                    let total: u64 = ch.iter().map(|x| tile_bytes(x, nt)).sum();
                    let target = if array_bound {
                        total.div_ceil(total.div_ceil(packet_max).max(1))
                    } else {
                        packet_max
                    };
                    let mut packets: Vec<(usize, usize)> = Vec::new();
                    let mut i = 0;
                    while i < ch.len() {
                        let mut j = i;
                        let mut bytes = 0;
                        // Fill to the target (the last tile may pass it), never past the
                        // buffer: equal tiles then split evenly instead of leaving a sliver.
                        while j < ch.len()
                            && bytes < target
                            && bytes + tile_bytes(&ch[j], nt) <= packet_max
                        {
                            bytes += tile_bytes(&ch[j], nt);
                            j += 1;
                        }
                        packets.push((i, j));
                        i = j;
                    }
                    let abase = acc_buf[iacc % 2];
                    em.wait(Engine::Mx, MX_VX.free);
                    let mut tile_off = packed_cursor[tile_idx];
                    for (pi, &(c0, c1)) in packets.iter().enumerate() {
                        let wbuf = if resident {
                            at(w_buf[0], tile_off - wconst_off)
                        } else {
                            w_buf[iw % 2]
                        };
                        let load = !resident || first_block;
                        if !resident {
                            em.wait(Engine::Ld, LD_MX_W.free);
                        }
                        match &mm.weights {
                            _ if !load => {
                                tile_off +=
                                    ch[c0..c1].iter().map(|x| tile_bytes(x, nt)).sum::<u64>();
                            }
                            Weights::Const => {
                                let bytes: u64 = ch[c0..c1].iter().map(|x| tile_bytes(x, nt)).sum();
                                em.dma_block(
                                    Dir::Load,
                                    SEG_CONST,
                                    tile_off,
                                    &[(bytes as usize, 1, 1)],
                                    1,
                                    wbuf,
                                )?;
                                tile_off += bytes;
                            }
                            Weights::Runtime { t, offs, row } => {
                                let (bseg, bbase) = s.addr(*t)?;
                                let mut o = 0;
                                for x in &ch[c0..c1] {
                                    // Row of the [kh][kw][cin/group][cout] matrix (a
                                    // MatMul's B is the case kh = kw = 0, one group).
                                    let (kw0, ci0) = x.rows[0];
                                    let k0 = ((x.kh * kw_n + kw0) * cg + (ci0 - g * cg)) as u64;
                                    em.dma_block(
                                        Dir::Load,
                                        bseg,
                                        bbase + offs[img] + k0 * row + n0 as u64 * e,
                                        &[(x.rows.len(), *row, nt as u64 * e), (nt, e, e)],
                                        e,
                                        at(wbuf, o),
                                    )?;
                                    o += tile_bytes(x, nt);
                                }
                            }
                        }
                        if load {
                            em.signal(Engine::Ld, LD_MX_W.full)?;
                            em.wait(Engine::Mx, LD_MX_W.full);
                        }
                        let mut o = 0;
                        for (ci, x) in ch[c0..c1].iter().enumerate() {
                            let first = pi == 0 && ci == 0;
                            em.push(MxLoadW {
                                src: at(wbuf, o),
                                k: x.rows.len() as u8,
                                n: nt as u8,
                                stride: (nt as u64 * e) as u16,
                                dtype: wdt,
                            })?;
                            o += tile_bytes(x, nt);
                            let row_off = if phase {
                                // Tap (kh, kw) is plane (kh mod 2, kw mod 2), shifted by
                                // (kh / 2, kw / 2) in it.
                                let (kw, c0) = (x.a_off as usize / c, x.a_off as usize % c);
                                let (vw, hq) = (vw_of(owt), hq_of(r));
                                let plane = (x.kh % 2) * pkx + kw % 2;
                                ((plane * hq * vw + (x.kh / 2) * vw + kw / 2) * c + c0) as u64
                            } else {
                                (x.kh * dh * wb * c) as u64 + x.a_off
                            };
                            if flat {
                                em.push(MxMatmul {
                                    a: at(abuf, row_off * e),
                                    a_stride: if owt > 1 || r > 1 { a_stride as u16 } else { 0 },
                                    c: abase,
                                    c_stride: (nt as u64 * ea) as u16,
                                    rows: acc_rows(r, owt, true) as u16,
                                    dtype: dt,
                                    accumulate: !first,
                                })?;
                            } else {
                                for oy in 0..r {
                                    em.push(MxMatmul {
                                        a: at(abuf, (row_off + (oy * sh * wb * c) as u64) * e),
                                        a_stride: if owt > 1 { a_stride as u16 } else { 0 },
                                        c: at(abase, (oy * owt * nt) as u64 * ea),
                                        c_stride: (nt as u64 * ea) as u16,
                                        rows: owt as u16,
                                        dtype: dt,
                                        accumulate: !first,
                                    })?;
                                }
                            }
                        }
                        if !resident {
                            em.signal(Engine::Mx, LD_MX_W.free)?;
                        }
                        iw += 1;
                    }
                    tile_idx += 1;
                    em.signal(Engine::Mx, MX_VX.full)?;
                    if tile_idx == ntiles {
                        em.signal(Engine::Mx, LD_MX_A.free)?;
                    }
                    // Residual tile.
                    // Accumulator rows and planes (`plane`), and the output's (`oplane`).
                    let pix = if flat { vw_of(owt) * nt } else { owt * nt } as u64;
                    let (plane, oplane) = (pix * ea, pix * eo);
                    let out_off =
                        mm.out_offs[img] + (((oy0 * ow + ox0) * mm.cout + n0) as u64) * eo;
                    if let (Some(rb), Some((rseg, rbase))) = (res_buf, res_addr) {
                        em.wait(Engine::Ld, LD_VX.free);
                        em.dma_block(
                            Dir::Load,
                            rseg,
                            rbase + out_off,
                            &[
                                (r, (ow * mm.cout) as u64 * e, (owt * nt) as u64 * e),
                                (owt, mm.cout as u64 * e, nt as u64 * e),
                                (nt, e, e),
                            ],
                            e,
                            rb[iacc % 2],
                        )?;
                        em.signal(Engine::Ld, LD_VX.full)?;
                    }
                    // Epilogue on the accumulator tile.
                    em.wait(Engine::Vx, MX_VX.full);
                    let shape = |src1: (u64, u64), flags| {
                        vshape(
                            r as u64,
                            owt as u64,
                            nt as u64,
                            (nt as u64 * ea, plane),
                            (nt as u64 * ea, plane),
                            src1,
                            flags,
                        )
                    };
                    let mut did = false;
                    // The accumulator's type: s32 sums of integers, else the inputs' float type.
                    let adt = if q.is_some() { accelc_isa::Dtype::S32 } else { dt };
                    if has_bias
                        && !requant
                        && let Some(pb) = pbuf
                    {
                        em.vbin(
                            adt,
                            BinOp::Add,
                            shape((0, 0), 0),
                            abase,
                            abase,
                            at(pb, n0 as u64 * ea),
                        )?;
                        did = true;
                    }
                    // The requantised tile goes into its output group's buffer: the
                    // accumulator tile is free once read, not when the (latency-bound) store
                    // completes.
                    let (gn0, gw, gcol, glast) = tile_group(tile_idx - 1);
                    let gplane = if flat { vw_of(owt) * gw } else { owt * gw } as u64 * eo;
                    let qt = q_buf.as_ref().map(|qb| qb[iq % qb.len()]);
                    if q_buf.is_some() && gcol == 0 {
                        em.wait(Engine::Vx, VX_ST.free);
                    }
                    if let (Some(qt), Some(pb)) = (qt, pbuf) {
                        let sh = vshape(
                            r as u64,
                            owt as u64,
                            nt as u64,
                            (gw as u64 * eo, gplane),
                            (nt as u64 * ea, plane),
                            (0, 0),
                            0,
                        );
                        let recs = at(pb, n0 as u64 * rec_size);
                        em.vrequant_biased(odt, sh, at(qt, gcol as u64 * eo), abase, recs)?;
                    }
                    if let Some(rb) = res_buf {
                        em.wait(Engine::Vx, LD_VX.full);
                        em.vbin(
                            dt,
                            BinOp::Add,
                            shape((nt as u64 * e, (owt * nt) as u64 * e), 0),
                            abase,
                            abase,
                            rb[iacc % 2],
                        )?;
                        em.signal(Engine::Vx, LD_VX.free)?;
                        did = true;
                    }
                    match mm.act {
                        Act::None => {}
                        Act::Relu => {
                            em.vun(dt, UnOp::Relu, shape((0, 0), 0), abase, abase)?;
                            did = true;
                        }
                        Act::Clip(..) => {
                            let pb = pbuf.ok_or_else(|| {
                                LowerError::msg("internal: clip without parameters")
                            })?;
                            let imm = at(pb, bias_bytes);
                            em.vbin(
                                dt,
                                BinOp::Max,
                                shape((0, 0), SHAPE_SRC1_COL_BROADCAST),
                                abase,
                                abase,
                                imm,
                            )?;
                            em.vbin(
                                dt,
                                BinOp::Min,
                                shape((0, 0), SHAPE_SRC1_COL_BROADCAST),
                                abase,
                                abase,
                                at(imm, e),
                            )?;
                            did = true;
                        }
                    }
                    if !did && q_buf.is_none() {
                        em.nop(Engine::Vx)?;
                    }
                    // What the store drains: the group's requantised tile once its last
                    // channel tile is in (the accumulator is free already), or the accumulator
                    // tile itself, which the store then frees.
                    let store = match qt {
                        Some(qt) => {
                            em.signal(Engine::Vx, MX_VX.free)?;
                            glast.then_some((gn0, gw, gplane, qt, VX_ST.free))
                        }
                        None => Some((n0, nt, oplane, abase, MX_VX.free)),
                    };
                    if let Some((c0, width, plane, from, freed)) = store {
                        em.signal(Engine::Vx, VX_ST.full)?;
                        em.wait(Engine::St, VX_ST.full);
                        let off =
                            mm.out_offs[img] + (((oy0 * ow + ox0) * mm.cout + c0) as u64) * eo;
                        em.dma_block(
                            Dir::Store,
                            out_seg,
                            out_base + off,
                            &[
                                (r, (ow * mm.cout) as u64 * eo, plane),
                                (owt, mm.cout as u64 * eo, width as u64 * eo),
                                (width, eo, eo),
                            ],
                            eo,
                            from,
                        )?;
                        em.signal(Engine::St, freed)?;
                        iq += usize::from(qt.is_some());
                    }
                    iacc += 1;
                }
            }
            ia += 1;
            first_block = false;
        }
    }
    for _ in 0..extra_q {
        em.wait(Engine::Vx, VX_ST.free);
        em.nop(Engine::Vx)?;
    }
    let macs = (n * oh * ow * mm.cout * mm.k[0] * mm.k[1] * cg) as u64;
    let wbytes = match &mm.weights {
        Weights::Const => mm.oihw.len() as u64,
        Weights::Runtime { t, .. } => s.tens[*t].bytes(),
    };
    // The input bytes some window reads (a stride-2 1×1 convolution reads a quarter): the
    // roofline's traffic is what the layer needs, not the whole tensor.
    let in_bytes = windowed_input_bytes(
        s.tens[mm.input].bytes(),
        [h, w],
        [oh, ow],
        [sh, sw],
        [kh_n, kw_n],
        [dh, dw],
        [pt, pl],
    );
    let bytes =
        in_bytes + wbytes + s.tens[mm.out].bytes() + mm.residual.map_or(0, |r| s.tens[r].bytes());
    Ok((macs, bytes))
}

/// A stride-2 activation block to load as phase planes.
struct PhaseBlock {
    seg: u8,
    /// Byte offset of the image in `seg`.
    base: u64,
    /// `[h, w, c]` of the NHWC image.
    img: [usize; 3],
    /// Top and left padding.
    pad: [usize; 2],
    /// The block's first padded row and column.
    origin: [usize; 2],
    /// Row and column phases present (1 or 2 each).
    planes: [usize; 2],
    /// Rows and columns of each plane.
    plane: [usize; 2],
    /// Element bytes.
    e: u64,
    pad_pattern: u32,
    buf: accelc_isa::LocalAddr,
}

/// Loads `b` as its phase planes: plane `(py, px)` (at `(py·planes[1] + px)` plane sizes) holds
/// padded rows `origin[0] + 2·y + py` and columns `origin[1] + 2·x + px`; positions in the
/// padding or past the padded image hold the pad pattern.
fn load_phases(em: &mut Emitter, b: &PhaseBlock) -> Result<(), LowerError> {
    let [h, w, c] = b.img;
    let [hq, vw] = b.plane;
    // The real rows (columns) of a phase: the first plane index at or past the image's start,
    // and the first past its end.
    let span = |origin: usize, ph: usize, pad: usize, len: usize, n: usize| {
        let lo = pad.saturating_sub(origin + ph).div_ceil(2).min(n);
        let hi = (pad + len).saturating_sub(origin + ph).div_ceil(2).min(n);
        (lo, hi.max(lo))
    };
    let mut loads = Vec::new();
    let mut padded = false;
    for py in 0..b.planes[0] {
        for px in 0..b.planes[1] {
            let (y0, y1) = span(b.origin[0], py, b.pad[0], h, hq);
            let (x0, x1) = span(b.origin[1], px, b.pad[1], w, vw);
            padded |= y0 > 0 || y1 < hq || x0 > 0 || x1 < vw;
            if y1 > y0 && x1 > x0 {
                loads.push((py * b.planes[1] + px, py, px, y0, y1, x0, x1));
            }
        }
    }
    let plane_elems = hq * vw * c;
    if padded {
        let all = (b.planes[0] * b.planes[1] * plane_elems) as u64 * b.e;
        em.fill(b.buf, all, b.pad_pattern)?;
    }
    if loads.is_empty() && !padded {
        // Nothing to load: the channel still needs its one load-queue instruction.
        em.fill(b.buf, b.e, b.pad_pattern)?;
    }
    let e = b.e;
    for (p, py, px, y0, y1, x0, x1) in loads {
        let iy = b.origin[0] + 2 * y0 + py - b.pad[0];
        let ix = b.origin[1] + 2 * x0 + px - b.pad[1];
        em.dma_block(
            Dir::Load,
            b.seg,
            b.base + ((iy * w + ix) * c) as u64 * e,
            &[
                (y1 - y0, (2 * w * c) as u64 * e, (vw * c) as u64 * e),
                (x1 - x0, (2 * c) as u64 * e, c as u64 * e),
                (c, e, e),
            ],
            e,
            at(b.buf, (p * plane_elems + (y0 * vw + x0) * c) as u64 * e),
        )?;
    }
    Ok(())
}
