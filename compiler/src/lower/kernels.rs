//! Kernel emission: each scheduled step becomes instructions.
//!
//! Matrix kernels (convolution, Gemm, MatMul) keep NHWC activations: for a fixed kernel row,
//! the input elements that meet one weight tile are `k` contiguous channels (or, with one
//! group and no dilation, a contiguous run over kernel columns and channels, which keeps
//! the array full even for 3-channel images). Output rows stream through the array with a
//! constant input stride, so one `mx.matmul` covers a whole block of output rows ("flat"
//! mode, computing a few discarded columns in the padding) or one output row ("row" mode),
//! whichever the cost model says is cheaper. Activation blocks, weight packets, accumulator
//! tiles and residual tiles are double-buffered through the semaphore channels of
//! [`super::emit`], so loads, matrix work, epilogues and stores overlap.

use accelc_isa::inst::{MxLoadW, MxMatmul, VxReduce, VxTranspose, field_max};
use accelc_isa::program::{
    MAX_SHAPE_DIM, MAX_VX_ELEMENTS, SHAPE_SRC0_COL_BROADCAST, SHAPE_SRC1_COL_BROADCAST,
};
use accelc_isa::{Axis, BinOp, DeviceConfig, Dtype, Engine, LocalAddr, ReduceOp, UnOp};

use super::LowerError;
use super::emit::{
    Dir, Emitter, LD_MX_A, LD_MX_W, LD_VX, MX_VX, PARAMS, SEG_CONST, VX_ST, at, vshape,
};
use super::schedule::{
    Act, Dw, Ew, Kernel, Micro, Mm, Pool, RowKind, Rw, Sched, Src, Step, T, Weights,
};
use super::view::{View, collapse};
use crate::ir::ReduceKind;

const NEG_INF: u32 = 0xff80_0000;

/// The device data type and element size of tensor `t` (kernels take both from the tensors
/// they move, never from a fixed float32 width).
fn elem(s: &Sched, t: T) -> Result<(Dtype, u64), LowerError> {
    let dt = s.tens[t].dtype;
    let d = super::device_dtype(dt)
        .ok_or_else(|| LowerError::msg(format!("{dt} tensors have no device data type")))?;
    Ok((d, dt.size() as u64))
}

/// One weight tile's rows: for kernel row `kh`, `k` input elements starting `a_off` elements
/// after the pixel's first channel; row `r` meets weight `(kw, cin)` = `rows[r]`.
struct Chunk {
    kh: usize,
    a_off: u64,
    rows: Vec<(usize, usize)>,
}

fn chunks(mm: &Mm, g: usize, a: usize) -> Vec<Chunk> {
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
fn cout_tiles(mm: &Mm, g: usize, a: usize) -> Vec<(usize, usize)> {
    let cog = mm.cout / mm.groups;
    (g * cog..(g + 1) * cog).step_by(a).map(|n0| (n0, a.min((g + 1) * cog - n0))).collect()
}

/// Packs constant weights in the order the kernel streams them: per group, per output tile,
/// per chunk, a `k × n` row-major tile.
pub(crate) fn pack_weights(mm: &Mm, cfg: &DeviceConfig, e: usize) -> Vec<u8> {
    let a = cfg.array_dim as usize;
    let cg = mm.img[3] / mm.groups;
    let (kh_n, kw_n) = (mm.k[0], mm.k[1]);
    let mut out = Vec::with_capacity(mm.oihw.len());
    for g in 0..mm.groups {
        let ch = chunks(mm, g, a);
        for (n0, nt) in cout_tiles(mm, g, a) {
            for c in &ch {
                for &(kw, ci) in &c.rows {
                    for j in 0..nt {
                        let o = n0 + j;
                        let idx = ((o * cg + (ci - g * cg)) * kh_n + c.kh) * kw_n + kw;
                        out.extend_from_slice(&mm.oihw[idx * e..(idx + 1) * e]);
                    }
                }
            }
        }
    }
    out
}

/// The element type step `step` computes in: its activations' (the output's for copies and
/// fills), as the device names it (int64 copies move bytes: `u8`).
pub(crate) fn step_dtype(s: &Sched, step: &Step) -> Dtype {
    let t = match &step.kernel {
        Kernel::Matmul(mm) => mm.input,
        Kernel::Depthwise(Dw { win, .. }) | Kernel::Pool(Pool { win, .. }) => win.input,
        Kernel::GlobalPool { input, .. } => *input,
        Kernel::Elementwise(ew) => ew.out,
        Kernel::Fill { out, .. } => *out,
        Kernel::Rowwise(rw) => rw.input,
    };
    super::device_dtype(s.tens[t].dtype).unwrap_or(Dtype::U8)
}

/// Emits one step; returns its useful MACs and minimum DRAM bytes.
pub(crate) fn emit_step(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
) -> Result<(u64, u64), LowerError> {
    match &step.kernel {
        Kernel::Matmul(mm) => matmul(em, s, step, mm),
        Kernel::Depthwise(dw) => window(em, s, step, WinKind::Depthwise(dw)),
        Kernel::Pool(p) => window(em, s, step, WinKind::Pool(p)),
        Kernel::GlobalPool { input, out, max, img } => global_pool(em, s, *input, *out, *max, *img),
        Kernel::Elementwise(ew) => elementwise(em, s, step, ew),
        Kernel::Fill { out, value } => fill(em, s, *out, *value),
        Kernel::Rowwise(rw) => rowwise(em, s, step, rw),
    }
}

/// Loads the step's constant 0 (if any) and fills `scalars` (bits) after it in one buffer
/// the vector engine waits for once. Returns the buffer.
fn params(em: &mut Emitter, step: &Step, scalars: &[u32]) -> Result<Option<LocalAddr>, LowerError> {
    let bytes = step.consts.first().map_or(0, |c| c.len() as u64);
    if bytes == 0 && scalars.is_empty() {
        return Ok(None);
    }
    let buf = em.spad(bytes + 4 * scalars.len() as u64)?;
    if bytes > 0 {
        em.dma_block(Dir::Load, SEG_CONST, step.const_offs[0], &[(bytes as usize, 1, 1)], 1, buf)?;
    }
    for (i, v) in scalars.iter().enumerate() {
        em.fill(at(buf, bytes + 4 * i as u64), 4, *v)?;
    }
    em.signal(Engine::Ld, PARAMS)?;
    em.wait(Engine::Vx, PARAMS);
    Ok(Some(buf))
}

fn matmul(em: &mut Emitter, s: &Sched, step: &Step, mm: &Mm) -> Result<(u64, u64), LowerError> {
    let (dt, e) = elem(s, mm.input)?;
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
    let rate = DeviceConfig::matmul_cycles_per_row(dt);
    let fill_drain = 2 * u64::from(cfg.array_dim);
    let has_bias = mm.bias.iter().any(|b| *b != 0.0);
    let clip = match mm.act {
        Act::Clip(lo, hi) => Some((lo, hi)),
        _ => None,
    };
    let nt_max = a.min(mm.cout / mm.groups);
    let all_chunks: Vec<Vec<Chunk>> = (0..mm.groups).map(|g| chunks(mm, g, a)).collect();
    let a_stride = (sw * c) as u64 * e;
    if a_stride > field_max("mx.matmul", "a_stride").unwrap_or(0) && ow > 1 {
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
    let bias_bytes = if has_bias { mm.cout as u64 * e } else { 0 };
    let packet_max = (u64::from(cfg.spad_bytes) / 16).max((a * a) as u64 * e);
    // A tile of `owt` output columns reads `wb(owt)` padded input columns.
    let (kw_n, dw) = (mm.k[1], mm.d[1]);
    let wb_of = |owt: usize| ((owt - 1) * sw + (kw_n - 1) * dw + 1).min(wp);
    let res_tile = |r: usize, owt: usize| (r * owt * nt_max) as u64 * e;
    let acc_rows =
        |r: usize, owt: usize, flat: bool| if flat { (r - 1) * wb_of(owt) + owt } else { r * owt };
    let act_bytes = |r: usize, owt: usize| {
        (((r - 1) * sh + (kh_n - 1) * dh + 1).min(hp) * wb_of(owt) * c) as u64 * e
    };
    let spad_avail = em.spad_free();
    let max_rows = field_max("mx.matmul", "rows").unwrap_or(0) as usize;
    let fits = |r: usize, owt: usize, flat: bool| {
        let rows = acc_rows(r, owt, flat);
        rows <= max_rows
            && 2 * (rows * nt_max) as u64 * e <= u64::from(cfg.acc_bytes)
            && 2 * act_bytes(r, owt)
                + 2 * packet_max
                + if mm.residual.is_some() { 2 * res_tile(r, owt) } else { 0 }
                + 6 * 64
                <= spad_avail
    };
    // The widest tile (then the most rows) that fits, and its matrix-engine cycles.
    let plan = |flat: bool| -> Option<(usize, usize, u64)> {
        let parts = (1..=ow).find(|p| fits(1, ow.div_ceil(*p), flat))?;
        let owt = ow.div_ceil(parts);
        let r = (1..=oh).rev().find(|&r| fits(r, owt, flat))?;
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
    let choice = match (if flat_ok { plan(true) } else { None }, plan(false)) {
        (Some(f), Some(r)) => {
            if f.2 <= r.2 {
                (true, f.0, f.1)
            } else {
                (false, r.0, r.1)
            }
        }
        (Some(f), None) => (true, f.0, f.1),
        (None, Some(r)) => (false, r.0, r.1),
        (None, None) => {
            return Err(LowerError::msg(format!(
                "a {h}x{w}x{c} input does not fit the scratchpad even one output pixel at a time"
            )));
        }
    };
    let (flat, rblk, owblk) = choice;
    let act_buf = [em.spad(act_bytes(rblk, owblk))?, em.spad(act_bytes(rblk, owblk))?];
    let w_buf = [em.spad(packet_max)?, em.spad(packet_max)?];
    let res_buf = if mm.residual.is_some() {
        Some([em.spad(res_tile(rblk, owblk))?, em.spad(res_tile(rblk, owblk))?])
    } else {
        None
    };
    let acc_tile = (acc_rows(rblk, owblk, flat) * nt_max) as u64 * e;
    let acc_buf = [em.acc(acc_tile)?, em.acc(acc_tile)?];
    let (in_seg, in_base) = s.addr(mm.input)?;
    let (out_seg, out_base) = s.addr(mm.out)?;
    let res_addr = mm.residual.map(|r| s.addr(r)).transpose()?;
    // Tile byte offsets inside the packed weights, in streaming order.
    let tile_bytes = |ch: &Chunk, nt: usize| (ch.rows.len() * nt) as u64 * e;
    let wconst_off = step.const_offs.get(1).copied().unwrap_or(0);
    let (mut ia, mut iw, mut iacc) = (0usize, 0usize, 0usize);
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
    let blocks: Vec<(usize, usize, usize, usize)> = (0..oh)
        .step_by(rblk)
        .flat_map(|oy0| {
            (0..ow)
                .step_by(owblk)
                .map(move |ox0| (oy0, rblk.min(oh - oy0), ox0, owblk.min(ow - ox0)))
        })
        .collect();
    for img in 0..n {
        for &(oy0, r, ox0, owt) in &blocks {
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
            if padded {
                em.fill(abuf, (nrows * wb * c) as u64 * e, 0)?;
            }
            if iy1 > iy0 && ix1 > ix0 {
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
            } else if !padded {
                em.fill(abuf, e, 0)?;
            }
            em.signal(Engine::Ld, LD_MX_A.full)?;
            em.wait(Engine::Mx, LD_MX_A.full);
            let mut tile_idx = 0usize;
            let ntiles: usize = (0..mm.groups).map(|g| cout_tiles(mm, g, a).len()).sum();
            for (g, ch) in all_chunks.iter().enumerate() {
                for (n0, nt) in cout_tiles(mm, g, a) {
                    // Packets of consecutive tiles.
                    let mut packets: Vec<(usize, usize)> = Vec::new();
                    let mut i = 0;
                    while i < ch.len() {
                        let mut j = i;
                        let mut bytes = 0;
                        while j < ch.len() && bytes + tile_bytes(&ch[j], nt) <= packet_max {
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
                        let wbuf = w_buf[iw % 2];
                        em.wait(Engine::Ld, LD_MX_W.free);
                        match &mm.weights {
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
                        em.signal(Engine::Ld, LD_MX_W.full)?;
                        em.wait(Engine::Mx, LD_MX_W.full);
                        let mut o = 0;
                        for (ci, x) in ch[c0..c1].iter().enumerate() {
                            let first = pi == 0 && ci == 0;
                            em.push(MxLoadW {
                                src: at(wbuf, o),
                                k: x.rows.len() as u8,
                                n: nt as u8,
                                stride: (nt as u64 * e) as u16,
                                dtype: dt,
                            })?;
                            o += tile_bytes(x, nt);
                            let row_off = (x.kh * dh * wb * c) as u64 + x.a_off;
                            if flat {
                                em.push(MxMatmul {
                                    a: at(abuf, row_off * e),
                                    a_stride: if owt > 1 || r > 1 { a_stride as u16 } else { 0 },
                                    c: abase,
                                    c_stride: (nt as u64 * e) as u16,
                                    rows: acc_rows(r, owt, true) as u16,
                                    dtype: dt,
                                    accumulate: !first,
                                })?;
                            } else {
                                for oy in 0..r {
                                    em.push(MxMatmul {
                                        a: at(abuf, (row_off + (oy * sh * wb * c) as u64) * e),
                                        a_stride: if owt > 1 { a_stride as u16 } else { 0 },
                                        c: at(abase, (oy * owt * nt) as u64 * e),
                                        c_stride: (nt as u64 * e) as u16,
                                        rows: owt as u16,
                                        dtype: dt,
                                        accumulate: !first,
                                    })?;
                                }
                            }
                        }
                        em.signal(Engine::Mx, LD_MX_W.free)?;
                        iw += 1;
                    }
                    tile_idx += 1;
                    em.signal(Engine::Mx, MX_VX.full)?;
                    if tile_idx == ntiles {
                        em.signal(Engine::Mx, LD_MX_A.free)?;
                    }
                    // Residual tile.
                    let plane = if flat { (wb * nt) as u64 * e } else { (owt * nt) as u64 * e };
                    let out_off = mm.out_offs[img] + (((oy0 * ow + ox0) * mm.cout + n0) as u64) * e;
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
                            (nt as u64 * e, plane),
                            (nt as u64 * e, plane),
                            src1,
                            flags,
                        )
                    };
                    let mut did = false;
                    if has_bias && let Some(pb) = pbuf {
                        em.vbin(
                            dt,
                            BinOp::Add,
                            shape((0, 0), 0),
                            abase,
                            abase,
                            at(pb, n0 as u64 * e),
                        )?;
                        did = true;
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
                    if !did {
                        em.nop(Engine::Vx)?;
                    }
                    em.signal(Engine::Vx, VX_ST.full)?;
                    em.wait(Engine::St, VX_ST.full);
                    em.dma_block(
                        Dir::Store,
                        out_seg,
                        out_base + out_off,
                        &[
                            (r, (ow * mm.cout) as u64 * e, plane),
                            (owt, mm.cout as u64 * e, nt as u64 * e),
                            (nt, e, e),
                        ],
                        e,
                        abase,
                    )?;
                    em.signal(Engine::St, MX_VX.free)?;
                    iacc += 1;
                }
            }
            ia += 1;
        }
    }
    let macs = (n * oh * ow * mm.cout * mm.k[0] * mm.k[1] * cg) as u64;
    let wbytes = match &mm.weights {
        Weights::Const => mm.oihw.len() as u64,
        Weights::Runtime { t, .. } => s.tens[*t].bytes(),
    };
    let bytes = s.tens[mm.input].bytes()
        + wbytes
        + s.tens[mm.out].bytes()
        + mm.residual.map_or(0, |r| s.tens[r].bytes());
    Ok((macs, bytes))
}

enum WinKind<'a> {
    Depthwise(&'a Dw),
    Pool(&'a Pool),
}

/// Depthwise convolution and pooling: per kernel tap, one vector operation over a block of
/// output rows, reading the padded input block with the stride of the window.
fn window(
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
    let (pad_value, scalars): (u32, Vec<u32>) = match kind {
        WinKind::Depthwise(x) => match x.act {
            Act::Clip(lo, hi) => (0, vec![lo.to_bits(), hi.to_bits()]),
            _ => (0, vec![]),
        },
        WinKind::Pool(p) if p.max => (NEG_INF, vec![]),
        WinKind::Pool(_) => (0, vec![]),
    };
    let pbuf = params(em, step, &scalars)?;
    let const_bytes = step.consts.first().map_or(0, |c| c.len() as u64);
    let imm = pbuf.map(|p| at(p, const_bytes));
    // Blocks of output rows over a slice of `ct` channels.
    let act_bytes = |r: usize, ct: usize| {
        (((r - 1) * st[0] + (k[0] - 1) * d[0] + 1).min(hp) * wp * ct) as u64 * e
    };
    let out_bytes = |r: usize, ct: usize| (r * ow * ct) as u64 * e;
    let avail = em.spad_free();
    let fits = |r: usize, ct: usize| {
        2 * act_bytes(r, ct) + 3 * out_bytes(r, ct) + 5 * 64 <= avail
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
    let tmp = em.spad(out_bytes(rblk, ctile))?;
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
            let dst = (ct as u64 * e, (ow * ct) as u64 * e);
            let src = ((st[1] * ct) as u64 * e, (st[0] * wp * ct) as u64 * e);
            for t in 0..taps {
                let (kh, kw) = (t / k[1], t % k[1]);
                let a0 = at(abuf, ((kh * d[0] * wp + kw * d[1]) * ct) as u64 * e);
                match kind {
                    WinKind::Depthwise(_) => {
                        let wts = at(
                            pbuf.ok_or_else(|| LowerError::msg("internal: no taps"))?,
                            (c + t * c + c0) as u64 * e,
                        );
                        let shape = vshape(r as u64, ow as u64, ct as u64, dst, src, (0, 0), 0);
                        if t == 0 {
                            em.vbin(dt, BinOp::Mul, shape, obuf, a0, wts)?;
                        } else {
                            em.vbin(dt, BinOp::Mul, shape, tmp, a0, wts)?;
                            em.vbin(
                                dt,
                                BinOp::Add,
                                vshape(r as u64, ow as u64, ct as u64, dst, dst, dst, 0),
                                obuf,
                                obuf,
                                tmp,
                            )?;
                        }
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
            match kind {
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
                out_base + (((im * oh + oy0) * ow * c) + c0) as u64 * e,
                &[(r * ow, c as u64 * e, ct as u64 * e), (ct, e, e)],
                e,
                obuf,
            )?;
            em.signal(Engine::St, VX_ST.free)?;
            i += 1;
        }
    }
    let macs = match kind {
        WinKind::Depthwise(_) => (n * oh * ow * c * taps) as u64,
        WinKind::Pool(_) => 0,
    };
    let bytes = s.tens[input].bytes()
        + s.tens[out].bytes()
        + step.consts.first().map_or(0, |c| c.len() as u64);
    Ok((macs, bytes))
}

fn global_pool(
    em: &mut Emitter,
    s: &Sched,
    input: T,
    out: T,
    max: bool,
    img: [usize; 4],
) -> Result<(u64, u64), LowerError> {
    let (dt, e) = elem(s, input)?;
    let [n, h, w, c] = img;
    let hw = h * w;
    if hw > MAX_SHAPE_DIM {
        return Err(LowerError::msg(format!(
            "global pooling over more than {MAX_SHAPE_DIM} positions"
        )));
    }
    let scal = em.spad(4)?;
    if !max {
        em.fill(scal, 4, (hw as f32).to_bits())?;
        em.signal(Engine::Ld, PARAMS)?;
        em.wait(Engine::Vx, PARAMS);
    }
    // Four buffers, each rounded up to 64 bytes.
    let avail = em.spad_free().saturating_sub(4 * 64);
    let ct = ((avail / (2 * (hw as u64 + 1) * e)) as usize).min(c).clamp(1, MAX_SHAPE_DIM);
    if 2 * (hw as u64 + 1) * e * ct as u64 > avail {
        return Err(LowerError::msg("global pooling input too large for the scratchpad"));
    }
    let ibuf = [em.spad((hw * ct) as u64 * e)?, em.spad((hw * ct) as u64 * e)?];
    let obuf = [em.spad(ct as u64 * e)?, em.spad(ct as u64 * e)?];
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
                out_dtype: dt,
            })?;
            em.signal(Engine::Vx, LD_VX.free)?;
            if !max {
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
                out_base + ((im * c + c0) as u64) * e,
                &[(cn, e, e)],
                e,
                obuf[i % 2],
            )?;
            em.signal(Engine::St, VX_ST.free)?;
            i += 1;
        }
    }
    Ok((0, s.tens[input].bytes() + s.tens[out].bytes()))
}

/// Fills `out` with the 32-bit pattern `value` repeated (whatever its element type: the
/// pattern is the element's bits repeated to 32 bits).
fn fill(em: &mut Emitter, s: &Sched, out: T, value: u32) -> Result<(u64, u64), LowerError> {
    let bytes = s.tens[out].bytes();
    let (seg, base) = s.addr(out)?;
    let chunk = (em.spad_free() / 2).min(bytes).max(4) / 4 * 4;
    let buf = em.spad(chunk)?;
    // DMA-in fills, the vector engine passes the buffer on, DMA-out stores it.
    em.wait(Engine::Ld, LD_VX.free);
    em.fill(buf, chunk, value)?;
    em.signal(Engine::Ld, LD_VX.full)?;
    em.wait(Engine::Vx, LD_VX.full);
    em.nop(Engine::Vx)?;
    em.signal(Engine::Vx, VX_ST.full)?;
    em.wait(Engine::St, VX_ST.full);
    let mut done = 0;
    while done < bytes {
        let m = chunk.min(bytes - done);
        em.dma_block(Dir::Store, seg, base + done, &[(m as usize, 1, 1)], 1, buf)?;
        done += m;
    }
    em.signal(Engine::St, LD_VX.free)?;
    Ok((0, bytes))
}

/// The base offset of each view (`bases[v] + Σ index·strides[v][dim]`) at flat index `o` of
/// the `outer` dimensions, which the program walks instruction by instruction.
fn outer_offsets(o: usize, outer: &[usize], bases: &[u64], strides: &[Vec<u64>]) -> Vec<u64> {
    let mut offs = bases.to_vec();
    let mut rest = o;
    for dd in (0..outer.len()).rev() {
        let k = (rest % outer[dd]) as u64;
        rest /= outer[dd];
        for (off, st) in offs.iter_mut().zip(strides) {
            *off += k * st[dd];
        }
    }
    offs
}

/// How one operand of an element-wise chunk sits in local memory.
#[derive(Clone, Copy)]
struct Operand {
    addr: LocalAddr,
    /// Column broadcast.
    bcast: bool,
    row: u64,
    plane: u64,
}

fn elementwise(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
    ew: &Ew,
) -> Result<(u64, u64), LowerError> {
    let copy = ew.prog.is_empty();
    // A copy moves bytes of any type; computing needs the type's device form.
    let dt = match super::device_dtype(s.tens[ew.out].dtype) {
        Some(d) => d,
        None if copy => Dtype::U8,
        None => {
            return Err(LowerError::msg(
                "internal: element-wise arithmetic on a type the device lacks",
            ));
        }
    };
    let out_view = s.view(ew.out)?.apply_all(&ew.out_view)?;
    let in_views: Vec<_> =
        ew.inputs.iter().map(|(t, ops)| s.view(*t)?.apply_all(ops)).collect::<Result<_, _>>()?;
    for v in &in_views {
        if v.shape() != out_view.shape() {
            return Err(LowerError::msg(format!(
                "internal: operand view {:?} does not match the result {:?}",
                v.shape(),
                out_view.shape()
            )));
        }
    }
    let e = s.tens[ew.out].elem();
    if out_view.dims.iter().any(|d| d.0 == 0) {
        // Nothing to compute; the kernel is just its barrier.
        return Ok((0, 0));
    }
    // Element-wise work may visit elements in any order: walk the result in memory order
    // so runs are as long as the layouts allow.
    let mut order: Vec<usize> = (0..out_view.dims.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(out_view.dims[i].1));
    let reorder = |v: &View| View { dims: order.iter().map(|&i| v.dims[i]).collect(), ..v.clone() };
    let out_view = reorder(&out_view);
    let in_views: Vec<View> = in_views.iter().map(reorder).collect();
    let mut all = vec![&out_view];
    all.extend(in_views.iter());
    let (mut sizes, mut strides) = collapse(&all);
    if copy && let Some(r) = copy_transposed(em, &out_view, &in_views[0], &sizes, &strides, e)? {
        return Ok(r);
    }
    if sizes.is_empty() {
        sizes.push(1);
        for st in &mut strides {
            st.push(e);
        }
    }
    while sizes.len() < 3 {
        sizes.insert(0, 1);
        for st in &mut strides {
            st.insert(0, 0);
        }
    }
    let d = sizes.len();
    let (outer, inner) = sizes.split_at(d - 3);
    let [pn, rn, cn] = [inner[0], inner[1], inner[2]];
    let pbuf = if copy { None } else { params(em, step, &[])? };
    let nin = ew.inputs.len() as u64;
    let bufs = if copy { 2 } else { 2 * nin + 2 + ew.regs.saturating_sub(1) as u64 };
    let budget =
        (em.spad_free().saturating_sub(bufs * 64) / (bufs * e)).min(MAX_VX_ELEMENTS) as usize;
    if budget == 0 {
        return Err(LowerError::msg("no scratchpad left for an element-wise kernel"));
    }
    let (pc, rc, cc) = if rn * cn <= budget {
        (
            (budget / (rn * cn)).min(pn).min(MAX_SHAPE_DIM),
            rn.min(MAX_SHAPE_DIM),
            cn.min(MAX_SHAPE_DIM),
        )
    } else if cn <= budget {
        (1, (budget / cn).min(rn).min(MAX_SHAPE_DIM), cn.min(MAX_SHAPE_DIM))
    } else {
        (1, 1, budget.min(cn).min(MAX_SHAPE_DIM))
    };
    let chunk_bytes = (pc * rc * cc) as u64 * e;
    let ibufs: Vec<[LocalAddr; 2]> = (0..nin)
        .map(|_| Ok([em.spad(chunk_bytes)?, em.spad(chunk_bytes)?]))
        .collect::<Result<_, LowerError>>()?;
    let obufs = if copy { None } else { Some([em.spad(chunk_bytes)?, em.spad(chunk_bytes)?]) };
    let regs: Vec<LocalAddr> =
        (1..ew.regs.max(1)).map(|_| em.spad(chunk_bytes)).collect::<Result<_, _>>()?;
    let total_outer: usize = outer.iter().product();
    let mut slot = 0usize;
    for o in 0..total_outer {
        let bases: Vec<u64> = all.iter().map(|v| v.off).collect();
        let offs = outer_offsets(o, outer, &bases, &strides);
        for p0 in (0..pn).step_by(pc) {
            for r0 in (0..rn).step_by(rc) {
                for c0 in (0..cn).step_by(cc) {
                    let (pp, rr, ccn) = (pc.min(pn - p0), rc.min(rn - r0), cc.min(cn - c0));
                    let b = slot % 2;
                    em.wait(Engine::Ld, LD_VX.free);
                    let mut ops: Vec<Operand> = Vec::new();
                    for (k, v) in in_views.iter().enumerate() {
                        let st = &strides[k + 1];
                        let (sp, sr, sc) = (st[d - 3], st[d - 2], st[d - 1]);
                        let cnt = |n: usize, stride: u64| if stride == 0 { 1 } else { n };
                        let (lp, lr, lc) = (cnt(pp, sp), cnt(rr, sr), cnt(ccn, sc));
                        let row = if sr == 0 { 0 } else { lc as u64 * e };
                        let plane = if sp == 0 { 0 } else { (lr * lc) as u64 * e };
                        let far = offs[k + 1] + p0 as u64 * sp + r0 as u64 * sr + c0 as u64 * sc;
                        em.dma_block(
                            Dir::Load,
                            v.seg,
                            far,
                            &[(lp, sp, plane), (lr, sr, row), (lc, sc, e)],
                            e,
                            ibufs[k][b],
                        )?;
                        ops.push(Operand {
                            addr: ibufs[k][b],
                            bcast: sc == 0 && ccn > 1,
                            row,
                            plane,
                        });
                    }
                    em.signal(Engine::Ld, LD_VX.full)?;
                    em.wait(Engine::Vx, LD_VX.full);
                    let dense_row = ccn as u64 * e;
                    let dense_plane = (rr * ccn) as u64 * e;
                    let (src_buf, src_row, src_plane, src_col) = if copy {
                        em.nop(Engine::Vx)?;
                        em.signal(Engine::Vx, VX_ST.full)?;
                        let o0 = ops[0];
                        (o0.addr, o0.row, o0.plane, if o0.bcast { 0 } else { e })
                    } else {
                        em.wait(Engine::Vx, VX_ST.free);
                        let ob = obufs.map(|x| x[b]).unwrap_or(ops[0].addr);
                        let reg = |i: usize| Operand {
                            addr: if i == 0 { ob } else { regs[i - 1] },
                            bcast: false,
                            row: dense_row,
                            plane: dense_plane,
                        };
                        let src = |x: Src| -> Result<Operand, LowerError> {
                            Ok(match x {
                                Src::In(i) => ops[i],
                                Src::Reg(i) => reg(i),
                                Src::Imm(i) => Operand {
                                    addr: at(
                                        pbuf.ok_or_else(|| {
                                            LowerError::msg("internal: no immediates")
                                        })?,
                                        4 * i as u64,
                                    ),
                                    bcast: true,
                                    row: 0,
                                    plane: 0,
                                },
                            })
                        };
                        for m in &ew.prog {
                            match *m {
                                Micro::Bin(op, dst, a0, a1) => {
                                    let (x, y) = (src(a0)?, src(a1)?);
                                    let mut flags = 0;
                                    if x.bcast || (matches!(a0, Src::Imm(_))) {
                                        flags |= SHAPE_SRC0_COL_BROADCAST;
                                    }
                                    if y.bcast || (matches!(a1, Src::Imm(_))) {
                                        flags |= SHAPE_SRC1_COL_BROADCAST;
                                    }
                                    let sh = vshape(
                                        pp as u64,
                                        rr as u64,
                                        ccn as u64,
                                        (dense_row, dense_plane),
                                        (x.row, x.plane),
                                        (y.row, y.plane),
                                        flags,
                                    );
                                    em.vbin(dt, op, sh, reg(dst).addr, x.addr, y.addr)?;
                                }
                                Micro::Un(op, dst, a0) => {
                                    let x = src(a0)?;
                                    if x.bcast {
                                        // A broadcast column: materialise it with a broadcasting add of 0.
                                        return Err(LowerError::msg(
                                            "internal: unary of a broadcast column",
                                        ));
                                    }
                                    let sh = vshape(
                                        pp as u64,
                                        rr as u64,
                                        ccn as u64,
                                        (dense_row, dense_plane),
                                        (x.row, x.plane),
                                        (0, 0),
                                        0,
                                    );
                                    em.vun(dt, op, sh, reg(dst).addr, x.addr)?;
                                }
                            }
                        }
                        em.signal(Engine::Vx, LD_VX.free)?;
                        em.signal(Engine::Vx, VX_ST.full)?;
                        (ob, dense_row, dense_plane, e)
                    };
                    em.wait(Engine::St, VX_ST.full);
                    let ost = &strides[0];
                    let far = offs[0]
                        + p0 as u64 * ost[d - 3]
                        + r0 as u64 * ost[d - 2]
                        + c0 as u64 * ost[d - 1];
                    em.dma_block(
                        Dir::Store,
                        out_view.seg,
                        far,
                        &[
                            (pp, ost[d - 3], src_plane),
                            (rr, ost[d - 2], src_row),
                            (ccn, ost[d - 1], src_col),
                        ],
                        e,
                        src_buf,
                    )?;
                    em.signal(Engine::St, if copy { LD_VX.free } else { VX_ST.free })?;
                    slot += 1;
                }
            }
        }
    }
    let elems: u64 = out_view.shape().iter().product::<usize>() as u64;
    Ok((0, elems * e * (1 + nin)))
}

fn rowwise(em: &mut Emitter, s: &Sched, step: &Step, rw: &Rw) -> Result<(u64, u64), LowerError> {
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
                    ReduceKind::Sum | ReduceKind::Mean => ReduceOp::Sum,
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

/// A copy whose source is contiguous along the result's second-innermost dimension (a
/// batched 2-D transpose: layout conversions, `K^T`): loads contiguous source runs, swaps
/// rows and columns with `vx.transpose`, stores contiguous result runs. `None` when the copy
/// is not of that form.
fn copy_transposed(
    em: &mut Emitter,
    out: &View,
    input: &View,
    sizes: &[usize],
    strides: &[Vec<u64>],
    e: u64,
) -> Result<Option<(u64, u64)>, LowerError> {
    let d = sizes.len();
    if d < 2 || strides[0][d - 1] != e || strides[1][d - 1] == e || strides[1][d - 2] != e {
        return Ok(None);
    }
    let dtype = match e {
        1 => Dtype::U8,
        2 => Dtype::S16,
        4 => Dtype::S32,
        _ => return Ok(None),
    };
    // Result dims [outer.., P?, A, B]: B contiguous in the result, A in the source.
    let (an, bn) = (sizes[d - 2], sizes[d - 1]);
    let (pn, p_out, p_in, outer_n) = if d >= 3 {
        (sizes[d - 3], strides[0][d - 3], strides[1][d - 3], d - 3)
    } else {
        (1, 0, 0, 0)
    };
    let budget = (em.spad_free().saturating_sub(4 * 64) / (4 * e)).min(MAX_VX_ELEMENTS) as usize;
    let bc = bn.min(MAX_SHAPE_DIM).min(budget).max(1);
    let ac = an.min(MAX_SHAPE_DIM).min((budget / bc).max(1));
    let pc = pn.min(MAX_SHAPE_DIM).min((budget / (ac * bc)).max(1));
    if (pc * ac * bc) as u64 > budget as u64 || budget == 0 {
        return Ok(None);
    }
    let chunk = (pc * ac * bc) as u64 * e;
    let src = [em.spad(chunk)?, em.spad(chunk)?];
    let dst = [em.spad(chunk)?, em.spad(chunk)?];
    let outer: &[usize] = &sizes[..outer_n];
    let total: usize = outer.iter().product();
    let mut slot = 0usize;
    for o in 0..total {
        let offs = outer_offsets(o, outer, &[out.off, input.off], strides);
        let (oo, io) = (offs[0], offs[1]);
        for p0 in (0..pn).step_by(pc) {
            for a0 in (0..an).step_by(ac) {
                for b0 in (0..bn).step_by(bc) {
                    let (pp, aa, bb) = (pc.min(pn - p0), ac.min(an - a0), bc.min(bn - b0));
                    let b = slot % 2;
                    // Source chunk as [p][b][a], runs along a.
                    em.wait(Engine::Ld, LD_VX.free);
                    em.dma_block(
                        Dir::Load,
                        input.seg,
                        io + p0 as u64 * p_in + a0 as u64 * e + b0 as u64 * strides[1][d - 1],
                        &[
                            (pp, p_in, (aa * bb) as u64 * e),
                            (bb, strides[1][d - 1], aa as u64 * e),
                            (aa, e, e),
                        ],
                        e,
                        src[b],
                    )?;
                    em.signal(Engine::Ld, LD_VX.full)?;
                    em.wait(Engine::Vx, LD_VX.full);
                    em.wait(Engine::Vx, VX_ST.free);
                    let plane = (aa * bb) as u64 * e;
                    let shape = em.shape(vshape(
                        pp as u64,
                        bb as u64,
                        aa as u64,
                        (bb as u64 * e, plane),
                        (aa as u64 * e, plane),
                        (0, 0),
                        0,
                    ))?;
                    em.push(VxTranspose { dtype, shape, dst: dst[b], src: src[b] })?;
                    em.signal(Engine::Vx, LD_VX.free)?;
                    em.signal(Engine::Vx, VX_ST.full)?;
                    // Result chunk as [p][a][b], runs along b.
                    em.wait(Engine::St, VX_ST.full);
                    em.dma_block(
                        Dir::Store,
                        out.seg,
                        oo + p0 as u64 * p_out + a0 as u64 * strides[0][d - 2] + b0 as u64 * e,
                        &[(pp, p_out, plane), (aa, strides[0][d - 2], bb as u64 * e), (bb, e, e)],
                        e,
                        dst[b],
                    )?;
                    em.signal(Engine::St, VX_ST.free)?;
                    slot += 1;
                }
            }
        }
    }
    let elems: u64 = sizes.iter().product::<usize>() as u64;
    Ok(Some((0, 2 * elems * e)))
}
