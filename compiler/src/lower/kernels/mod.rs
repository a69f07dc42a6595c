//! Kernel emission: each scheduled step becomes instructions, one module per kernel family
//! (`matmul`: the matrix engine; `window`: depthwise convolution and pooling; `elementwise`:
//! micro-programs and copies over strided views; `rowwise`: softmax, normalisation and
//! reductions along rows), with the helpers they share here (element types, parameters, fills).

use accelc_isa::{Dtype, Engine, LocalAddr};

use super::LowerError;
use super::emit::{Dir, Emitter, LD_VX, PARAMS, SEG_CONST, VX_ST, at};
use super::schedule::{Dw, Kernel, Pool, Sched, Step, T};

mod cstream;
mod elementwise;
mod matmul;
mod quant;
mod rowwise;
mod window;

pub(crate) use cstream::{
    bias_for_int8 as cstream_bias, pack as cstream_pack, plan as cstream_plan,
};
use elementwise::elementwise;
use matmul::matmul;
pub(crate) use matmul::pack_weights;
use rowwise::rowwise;
use window::{WinKind, global_pool, window};

/// The bits of float32 negative infinity (max pooling's padding).
pub(super) const NEG_INF: u32 = 0xff80_0000;

/// The device data type and element size of tensor `t` (kernels take both from the tensors
/// they move, never from a fixed float32 width).
pub(super) fn elem(s: &Sched, t: T) -> Result<(Dtype, u64), LowerError> {
    let dt = s.tens[t].dtype;
    let d = super::device_dtype(dt)
        .ok_or_else(|| LowerError::msg(format!("{dt} tensors have no device data type")))?;
    Ok((d, dt.size() as u64))
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
        Kernel::Quant(q) => q.input,
        Kernel::QAdd(q) => q.a,
        Kernel::Lut(l) => l.input,
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
        Kernel::GlobalPool { input, out, max, img, quant } => {
            global_pool(em, s, step, (*input, *out), *max, *img, *quant)
        }
        Kernel::Elementwise(ew) => elementwise(em, s, step, ew),
        Kernel::Fill { out, value } => fill(em, s, *out, *value),
        Kernel::Quant(q) => quant::quant(em, s, step, q),
        Kernel::QAdd(q) => quant::qadd(em, s, step, q),
        Kernel::Lut(l) => quant::lut(em, s, step, l),
        Kernel::Rowwise(rw) => rowwise(em, s, step, rw),
    }
}

/// Loads the step's constant 0 (if any) and fills `scalars` (bits) after it in one buffer
/// the vector engine waits for once. Returns the buffer.
pub(super) fn params(
    em: &mut Emitter,
    step: &Step,
    scalars: &[u32],
) -> Result<Option<LocalAddr>, LowerError> {
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

/// Fills `out` with the 32-bit pattern `value` repeated (whatever its element type: the
/// pattern is the element's bits repeated to 32 bits).
pub(super) fn fill(
    em: &mut Emitter,
    s: &Sched,
    out: T,
    value: u32,
) -> Result<(u64, u64), LowerError> {
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

/// The bytes of a `bytes`-byte NHWC input of `hw` pixels that some window of a 2-D sliding
/// window (output `out`, `stride`, kernel `k`, dilation `d`, top and left padding `pad`)
/// reads: the roofline's input traffic (a stride longer than the window skips the rest, a
/// stride-2 1×1 convolution reads a quarter).
pub(super) fn windowed_input_bytes(
    bytes: u64,
    hw: [usize; 2],
    out: [usize; 2],
    stride: [usize; 2],
    k: [usize; 2],
    d: [usize; 2],
    pad: [usize; 2],
) -> u64 {
    // Real positions of one dimension some output position reads: output `o` with tap `t`
    // reads padded position `o·stride + t·dil`.
    let touched = |i: usize| {
        let mut seen = vec![false; hw[i]];
        for o in 0..out[i] {
            for t in 0..k[i] {
                if let Some(p) =
                    (o * stride[i] + t * d[i]).checked_sub(pad[i]).filter(|p| *p < hw[i])
                {
                    seen[p] = true;
                }
            }
        }
        seen.iter().filter(|x| **x).count()
    };
    let (th, tw) = (touched(0), touched(1));
    if th * tw < hw[0] * hw[1] { bytes / (hw[0] * hw[1]) as u64 * (th * tw) as u64 } else { bytes }
}
