//! Element-wise kernels: a micro-program of vector operations over strided views of its
//! operands (copies when the program is empty, transposing copies on the vector engine).

use accelc_isa::inst::VxTranspose;
use accelc_isa::program::{
    MAX_SHAPE_DIM, MAX_VX_ELEMENTS, SHAPE_SRC0_COL_BROADCAST, SHAPE_SRC1_COL_BROADCAST,
};
use accelc_isa::{Dtype, Engine, LocalAddr};

use crate::lower::LowerError;
use crate::lower::emit::{Dir, Emitter, LD_VX, VX_ST, at, vshape};
use crate::lower::schedule::{Ew, Micro, Sched, Src, Step};
use crate::lower::view::{View, collapse};

use super::*;

/// How one operand of an element-wise chunk sits in local memory.
#[derive(Clone, Copy)]
pub(super) struct Operand {
    addr: LocalAddr,
    /// Column broadcast.
    bcast: bool,
    row: u64,
    plane: u64,
}

/// The base offset of each view (`bases[v] + Σ index·strides[v][dim]`) at flat index `o` of
/// the `outer` dimensions, which the program walks instruction by instruction.
pub(super) fn outer_offsets(
    o: usize,
    outer: &[usize],
    bases: &[u64],
    strides: &[Vec<u64>],
) -> Vec<u64> {
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

pub(super) fn elementwise(
    em: &mut Emitter,
    s: &Sched,
    step: &Step,
    ew: &Ew,
) -> Result<(u64, u64), LowerError> {
    let copy = ew.prog.is_empty();
    // A copy moves bytes of any type; computing needs the type's device form.
    let dt = match super::super::device_dtype(s.tens[ew.out].dtype) {
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
    // The roofline's traffic: the result, and each operand once (a broadcast operand's own
    // bytes, not the result's size: a scalar is one element).
    let elems: u64 = out_view.shape().iter().product::<usize>() as u64;
    let reads: u64 = ew.inputs.iter().map(|(t, _)| s.tens[*t].bytes().min(elems * e)).sum();
    Ok((0, elems * e + reads))
}

/// A copy whose source is contiguous along the result's second-innermost dimension (a
/// batched 2-D transpose: layout conversions, `K^T`): loads contiguous source runs, swaps
/// rows and columns with `vx.transpose`, stores contiguous result runs. `None` when the copy
/// is not of that form.
pub(super) fn copy_transposed(
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
