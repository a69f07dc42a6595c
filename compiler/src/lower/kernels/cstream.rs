//! Channel-streaming integer convolutions: the activations are the matrix array's stationary
//! operand and the output channels stream through it, for convolutions whose few output pixels
//! would leave the weight-stationary kernel ([`super::matmul`]) paying the array's fixed
//! costs (`mx.load_w`, fill and drain) on every short stream of pixels.
//!
//! For a 7×7 layer of 512 channels the weight-stationary kernel streams 61 flat pixel rows per
//! 32×32 weight tile (2,304 tiles); here each stationary tile is 32 input channels × 32 flat
//! output positions of one kernel tap, and all output channels (up to the accumulator's room)
//! stream past it as rows: 288 tiles of 512 rows.
//!
//! The input image is loaded NHWC with its padding, transposed to channel-major planes on the
//! vector engine and, for uint8 activations, moved to int8 by flipping the top bit
//! (`x − 128`, exact; the bias absorbs `128 · Σw`), since the array holds int8 weights only.
//! The accumulator tile `[output channel][position]` is transposed back, biased, requantised
//! per output channel and stored NHWC. A stride-2 convolution reads four phase planes per
//! channel (padded pixel `(2y + a, 2x + b)` at `(y, x)` of plane `(a, b)`), where each tap
//! is a stride-1 shift of one plane. One group, no dilation, integer kernels with
//! requantisation records only; [`plan`] decides by the array's cycle count.

use accelc_isa::inst::{MxLoadW, MxMatmul, VxTranspose, field_max};
use accelc_isa::program::SHAPE_SRC1_COL_BROADCAST;
use accelc_isa::{BinOp, DeviceConfig, Dtype, Engine};

use crate::lower::LowerError;
use crate::lower::emit::{Dir, Emitter, LD_MX_W, LD_VX, MX_VX, SEG_CONST, VX_ST, at, vshape};
use crate::lower::schedule::{Act, Mm, Sched, Step, Weights};

use super::matmul::chunks;
use super::*;

/// How a channel-streaming convolution runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Output channels per block (rows of every `mx.matmul`).
    r: usize,
    /// Flat output positions (`(oh − 1)·wp + ow`) and their tiles of `array_dim`.
    flat: usize,
    tiles: usize,
    /// Stride (1, or 2 through four phase planes), the padded input rounded up to the
    /// stride, and one phase plane's rows and columns; a channel's planes span `chan` bytes.
    s: usize,
    hp: usize,
    wp: usize,
    hq: usize,
    wq: usize,
    chan: usize,
    /// Accumulator buffers (2: the next block overlaps this one's epilogue).
    bufs: usize,
    /// Bytes per weight packet.
    packet: u64,
}

/// Array cycles of the weight-stationary kernel on one block holding the whole image (a lower
/// bound of what [`super::matmul`] runs): the comparison [`plan`] makes.
fn weight_stationary_cycles(mm: &Mm, cfg: &DeviceConfig, rate: u64) -> u64 {
    let a = cfg.array_dim as usize;
    let fd = 2 * u64::from(cfg.array_dim);
    let [_, _, w, _] = mm.img;
    let wp = w + mm.pad[1] + mm.pad[3];
    let [oh, ow] = mm.out_hw;
    // Flat mode (one matmul over the rows, reading `wb` padded columns per output row) or
    // row mode (one matmul per output row), whichever is cheaper.
    let wb = ((ow - 1) * mm.s[1] + mm.k[1]).min(wp);
    let flat = ((oh - 1) * wb + ow) as u64 * rate + fd;
    let row = oh as u64 * (ow as u64 * rate + fd);
    let tiles = chunks(mm, 0, a).len() as u64 * mm.cout.div_ceil(a) as u64;
    tiles * (flat.min(row) + a as u64)
}

/// The channel-streaming plan for `mm` with `in_dt` activations and `out_bytes`-byte outputs,
/// when the kernel applies and its array cycles are at most 85% of the weight-stationary
/// kernel's (the margin covers the transposes, which run beside the array).
pub(crate) fn plan(mm: &Mm, cfg: &DeviceConfig, in_dt: Dtype, out_bytes: u64) -> Option<Plan> {
    let q = mm.quant.as_ref()?;
    if q.records.is_empty()
        || !matches!(mm.weights, Weights::Const)
        || mm.groups != 1
        || !(mm.s == [1, 1] || mm.s == [2, 2])
        || mm.d != [1, 1]
        || mm.residual.is_some()
        || !matches!(mm.act, Act::None)
        || !matches!(in_dt, Dtype::U8 | Dtype::S8)
        || (in_dt == Dtype::U8 && bias_for_int8(mm, &q.bias).is_none())
    {
        return None;
    }
    let a = cfg.array_dim as usize;
    let [_, h, w, c] = mm.img;
    let [pt, pl, pb, pr] = mm.pad;
    let st = mm.s[0];
    let (hp, wp) = (h + pt + pb, w + pl + pr);
    let [oh, ow] = mm.out_hw;
    let [kh, kw] = mm.k;
    if oh == 0 || ow == 0 || hp < kh || wp < kw {
        return None;
    }
    if (hp - kh) / st + 1 != oh || (wp - kw) / st + 1 != ow {
        return None;
    }
    // Phase planes: padded pixel (st·y + a, st·x + b) is (y, x) of plane (a, b).
    let (hq, wq) = (hp.div_ceil(st), wp.div_ceil(st));
    let (hp, wp) = (hq * st, wq * st);
    let chan = st * st * hq * wq;
    if chan as u64 > field_max("mx.load_w", "stride").unwrap_or(0) {
        return None;
    }
    let flat = (oh - 1) * wq + ow;
    // The furthest position a tap reads stays inside its phase plane.
    if ((kh - 1) / st + oh - 1) * wq + (kw - 1) / st + ow > hq * wq {
        return None;
    }
    let plane = chan;
    let tiles = flat.div_ceil(a);
    let rate = cfg.matmul_cycles_per_row(Dtype::S8);
    let fd = 2 * u64::from(cfg.array_dim);
    let units = (mm.k[0] * mm.k[1] * c.div_ceil(a)) as u64;
    let max_rows = field_max("mx.matmul", "rows").unwrap_or(0) as usize;
    let lanes = u64::from(cfg.vx_lanes.max(1));
    let mut best: Option<(u64, Plan)> = None;
    for bufs in [2usize, 1] {
        let r = (cfg.acc_bytes as usize / (bufs * tiles * a * 4)).min(mm.cout).min(max_rows);
        if r == 0 {
            continue;
        }
        let blocks = mm.cout.div_ceil(r) as u64;
        let mut cycles = blocks * units * tiles as u64 * (a as u64 + r as u64 * rate + fd);
        if bufs == 1 {
            // The epilogue (transpose, bias, requantisation) no longer overlaps the array.
            cycles += blocks * 3 * (tiles * a * r) as u64 / lanes;
        }
        let packet = (u64::from(cfg.spad_bytes) / 16).max((r * a) as u64);
        let spad = (plane * c) as u64 * 2
            + (a * r * 4) as u64
            + 2 * (tiles * a * r) as u64 * out_bytes
            + 2 * packet
            + mm.cout as u64 * 20
            + 4096;
        if spad > u64::from(cfg.spad_bytes) {
            continue;
        }
        let p = Plan { r, flat, tiles, s: st, hp, wp, hq, wq, chan, bufs, packet };
        if best.as_ref().is_none_or(|(b, _)| cycles < *b) {
            best = Some((cycles, p));
        }
    }
    let (cycles, p) = best?;
    (cycles * 100 <= weight_stationary_cycles(mm, cfg, rate) * 85).then_some(p)
}

/// The work units of one block, in streaming order: `(kh, kw, first input channel, count)`.
fn units(mm: &Mm, a: usize) -> Vec<(usize, usize, usize, usize)> {
    let c = mm.img[3];
    let mut out = Vec::new();
    for kh in 0..mm.k[0] {
        for kw in 0..mm.k[1] {
            for c0 in (0..c).step_by(a) {
                out.push((kh, kw, c0, a.min(c - c0)));
            }
        }
    }
    out
}

/// Packs int8 weights in streaming order: per block of `r` output channels, per unit, the
/// block's rows of `count` weights (one row per output channel).
pub(crate) fn pack(
    mm: &Mm,
    cfg: &DeviceConfig,
    p: &Plan,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let a = cfg.array_dim as usize;
    let c = mm.img[3];
    let (khn, kwn) = (mm.k[0], mm.k[1]);
    let mut out = Vec::new();
    for o0 in (0..mm.cout).step_by(p.r) {
        let o1 = (o0 + p.r).min(mm.cout);
        out.clear();
        for (kh, kw, c0, kc) in units(mm, a) {
            for o in o0..o1 {
                for ci in c0..c0 + kc {
                    out.push(mm.oihw[((o * c + ci) * khn + kh) * kwn + kw]);
                }
            }
        }
        sink(&out)?;
    }
    Ok(())
}

/// The int32 bias per output channel for uint8 activations moved to int8 (`x − 128`):
/// `bias + 128 · Σw`, so `Σ (x − 128)·w + bias'` equals the weight-stationary kernel's
/// `Σ x·w + bias`. Overflow leaves the kernel to the weight-stationary path (`None`).
pub(crate) fn bias_for_int8(mm: &Mm, bias: &[i32]) -> Option<Vec<i32>> {
    let per = mm.oihw.len() / mm.cout.max(1);
    bias.iter()
        .enumerate()
        .map(|(o, b)| {
            let sum: i64 =
                mm.oihw[o * per..(o + 1) * per].iter().map(|w| i64::from(*w as i8)).sum();
            i32::try_from(i64::from(*b) + 128 * sum).ok()
        })
        .collect()
}

pub(super) fn cstream(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
    mm: &Mm,
    p: &Plan,
) -> Result<(u64, u64), LowerError> {
    let (dt, _) = elem(s, mm.input)?;
    let (odt, eo) = elem(s, mm.out)?;
    let q = mm.quant.as_ref().ok_or_else(|| LowerError::msg("internal: cstream without quant"))?;
    let cfg = em.cfg.clone();
    let a = cfg.array_dim as usize;
    let [n, h, w, c] = mm.img;
    let [pt, pl, _, _] = mm.pad;
    let [oh, ow] = mm.out_hw;
    let (hp, wp, plane) = (p.hp, p.wp, p.chan);
    let (st, hq, wq) = (p.s, p.hq, p.wq);
    let r = p.r;
    // Parameters: the records with the (adjusted) bias, and the byte 0x80 for the sign flip.
    let pbuf = params(em, step, &[0x8080_8080])?
        .ok_or_else(|| LowerError::msg("internal: cstream without parameters"))?;
    let rec_size = accelc_isa::requant::BIASED_RECORD_BYTES as u64;
    let flip = at(pbuf, mm.cout as u64 * rec_size);
    let stage = em.spad((plane * c) as u64)?;
    let cm = em.spad((plane * c) as u64)?;
    let tr = em.spad((a * r * 4) as u64)?;
    let out_tile = (p.tiles * a * r) as u64 * eo;
    let q_buf = [em.spad(out_tile)?, em.spad(out_tile)?];
    let w_buf = [em.spad(p.packet)?, em.spad(p.packet)?];
    let acc_block = (p.tiles * a * r * 4) as u64;
    let acc_buf: Vec<_> = (0..p.bufs).map(|_| em.acc(acc_block)).collect::<Result<_, _>>()?;
    let (in_seg, in_base) = s.addr(mm.input)?;
    let (out_seg, out_base) = s.addr(mm.out)?;
    let wconst_off = step.const_offs.get(1).copied().unwrap_or(0);
    let work = units(mm, a);
    let lanes_max = accelc_isa::program::MAX_VX_ELEMENTS as usize;
    let (mut iw, mut blk) = (0usize, 0usize);
    let nblocks = mm.cout.div_ceil(r);
    for img in 0..n {
        if img > 0 {
            // The array is done with the previous image's planes.
            em.barrier()?;
        }
        // The padded image, NHWC, then channel-major int8 planes.
        em.wait(Engine::Ld, LD_VX.free);
        let padded = hp != h || wp != w;
        debug_assert!(hp >= h + pt && wp >= w + pl);
        if padded {
            em.fill(stage, (plane * c) as u64, u32::from_le_bytes([q.pad_byte; 4]))?;
        }
        em.dma_block(
            Dir::Load,
            in_seg,
            in_base + mm.a_offs[img],
            &[(h, (w * c) as u64, (wp * c) as u64), (w * c, 1, 1)],
            1,
            at(stage, ((pt * wp + pl) * c) as u64),
        )?;
        em.signal(Engine::Ld, LD_VX.full)?;
        em.wait(Engine::Vx, LD_VX.full);
        // `vx.transpose` of each phase's [y][x][c] into [c][phase][y][x] (one phase at
        // stride 1), a plane of rows per instruction within the element limit.
        let ys = (lanes_max / (wq * c)).clamp(1, usize::from(u16::MAX));
        for (pa, pb) in (0..st).flat_map(|a| (0..st).map(move |b| (a, b))) {
            for y0 in (0..hq).step_by(ys) {
                let ny = ys.min(hq - y0);
                let shape = vshape(
                    ny as u64,
                    wq as u64,
                    c as u64,
                    (plane as u64, wq as u64),
                    ((st * c) as u64, (st * wp * c) as u64),
                    (0, 0),
                    0,
                );
                let shape = em.shape(shape)?;
                em.push(VxTranspose {
                    dtype: Dtype::U8,
                    shape,
                    dst: at(cm, ((pa * st + pb) * hq * wq + y0 * wq) as u64),
                    src: at(stage, (((st * y0 + pa) * wp + pb) * c) as u64),
                })?;
            }
        }
        if dt == Dtype::U8 {
            let cols = plane.min(usize::from(u16::MAX));
            for x0 in (0..plane).step_by(cols) {
                let cw = cols.min(plane - x0);
                let shape = vshape(
                    1,
                    c as u64,
                    cw as u64,
                    (plane as u64, 0),
                    (plane as u64, 0),
                    (0, 0),
                    SHAPE_SRC1_COL_BROADCAST,
                );
                em.vbin(Dtype::U8, BinOp::Xor, shape, at(cm, x0 as u64), at(cm, x0 as u64), flip)?;
            }
        }
        em.signal(Engine::Vx, LD_VX.free)?;
        // Every engine sees the planes before the array reads them.
        em.barrier()?;
        let mut packed = wconst_off;
        for o0 in (0..mm.cout).step_by(r) {
            let rb = r.min(mm.cout - o0);
            let abuf = acc_buf[blk % p.bufs];
            // One buffer: hold both of the channel's tokens so the next block waits for
            // this one's store.
            let waits = if p.bufs == 1 && blk == 0 { 2 } else { 1 };
            for _ in 0..waits {
                em.wait(Engine::Mx, MX_VX.free);
            }
            // Packets of whole units.
            let unit_bytes = |kc: usize| (rb * kc) as u64;
            let mut u = 0;
            let mut first = true;
            while u < work.len() {
                let mut v = u;
                let mut bytes = 0;
                while v < work.len() && bytes + unit_bytes(work[v].3) <= p.packet {
                    bytes += unit_bytes(work[v].3);
                    v += 1;
                }
                let wbuf = w_buf[iw % 2];
                em.wait(Engine::Ld, LD_MX_W.free);
                em.dma_block(Dir::Load, SEG_CONST, packed, &[(bytes as usize, 1, 1)], 1, wbuf)?;
                packed += bytes;
                em.signal(Engine::Ld, LD_MX_W.full)?;
                em.wait(Engine::Mx, LD_MX_W.full);
                let mut off = 0u64;
                for &(kh, kw, c0, kc) in &work[u..v] {
                    for t in 0..p.tiles {
                        let f0 = t * a;
                        let nt = a.min(p.flat - f0);
                        em.push(MxLoadW {
                            src: at(
                                cm,
                                (c0 * plane
                                    + ((kh % st) * st + kw % st) * hq * wq
                                    + (kh / st) * wq
                                    + kw / st
                                    + f0) as u64,
                            ),
                            k: kc as u8,
                            n: nt as u8,
                            stride: plane as u16,
                            dtype: Dtype::S8,
                        })?;
                        em.push(MxMatmul {
                            a: at(wbuf, off),
                            a_stride: kc as u16,
                            c: at(abuf, (t * r * a * 4) as u64),
                            c_stride: (a * 4) as u16,
                            rows: rb as u16,
                            dtype: Dtype::S8,
                            accumulate: !first,
                        })?;
                    }
                    first = false;
                    off += unit_bytes(kc);
                }
                em.signal(Engine::Mx, LD_MX_W.free)?;
                iw += 1;
                u = v;
            }
            em.signal(Engine::Mx, MX_VX.full)?;
            // Epilogue: per tile, [channel][position] to [position][channel], bias, records.
            em.wait(Engine::Vx, MX_VX.full);
            let qb = q_buf[blk % 2];
            for t in 0..p.tiles {
                let nt = a.min(p.flat - t * a);
                let shape = vshape(
                    1,
                    rb as u64,
                    nt as u64,
                    ((rb * 4) as u64, 0),
                    ((a * 4) as u64, 0),
                    (0, 0),
                    0,
                );
                let shape = em.shape(shape)?;
                em.push(VxTranspose {
                    dtype: Dtype::S32,
                    shape,
                    dst: tr,
                    src: at(abuf, (t * r * a * 4) as u64),
                })?;
                let rows = |dst: u64, src: u64| {
                    vshape(1, nt as u64, rb as u64, (dst, 0), (src, 0), (0, 0), 0)
                };
                em.vrequant_biased(
                    odt,
                    rows(rb as u64 * eo, (rb * 4) as u64),
                    at(qb, (t * a * rb) as u64 * eo),
                    tr,
                    at(pbuf, o0 as u64 * rec_size),
                )?;
            }
            em.signal(Engine::Vx, VX_ST.full)?;
            em.wait(Engine::St, VX_ST.full);
            // Valid positions only: per output row, its run of columns.
            for oy in 0..oh {
                let f0 = oy * wq;
                em.dma_block(
                    Dir::Store,
                    out_seg,
                    out_base + mm.out_offs[img] + ((oy * ow * mm.cout + o0) as u64) * eo,
                    &[(ow, mm.cout as u64 * eo, rb as u64 * eo), (rb, eo, eo)],
                    eo,
                    at(qb, (f0 * rb) as u64 * eo),
                )?;
            }
            let gives = if p.bufs == 1 && blk + 1 == nblocks * n { 2 } else { 1 };
            for _ in 0..gives {
                em.signal(Engine::St, MX_VX.free)?;
            }
            blk += 1;
        }
    }
    let macs = (n * oh * ow * mm.cout * mm.k[0] * mm.k[1] * c) as u64;
    let bytes = s.tens[mm.input].bytes() + mm.oihw.len() as u64 + s.tens[mm.out].bytes();
    Ok((macs, bytes))
}
