//! Sampling at computed coordinates: GridSample (ONNX 16, and the N-D form of 20/22), where
//! each output position reads the input at a location a grid tensor gives, by nearest,
//! linear or cubic interpolation, with zeros, border or reflection padding. It runs on the
//! host: the addresses depend on the grid's values.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer, device lowering (refused, with the reason) and host lowering.
//!
//! Arithmetic (reference and host alike): a grid coordinate is denormalised, rounded
//! (nearest), clamped (border) or reflected (reflection) in `f32`, as onnxruntime and onnx's
//! reference compute them; the interpolation weights are `f32` and the weighted sum is `f64`,
//! rounded once to `f32`.

use ndarray::{ArrayD, IxDyn};

use super::Work;
use crate::interp::*;
use crate::ir::*;
use crate::lower::LowerError;
use crate::lower::host::HostBuilder;
use crate::lower::schedule::*;
use crate::onnx::Attrs;
use crate::ops::{Arity, counts};
use crate::shape::*;

type R<T> = Result<T, String>;

/// The family's name in the registry.
pub(crate) const FAMILY: &str = "sample";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &["GridSample"];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, opset: i64) -> Result<Op, String> {
    if op_type != "GridSample" {
        return Err(super::misrouted_name(op_type, FAMILY));
    }
    // Opset 16 names the modes bilinear and bicubic; 20 renamed them linear and cubic.
    let mode = match (a.string("mode").as_deref(), opset >= 20) {
        (None, false) | (Some("bilinear"), false) | (None, true) | (Some("linear"), true) => {
            GridMode::Linear
        }
        (Some("nearest"), _) => GridMode::Nearest,
        (Some("bicubic"), false) | (Some("cubic"), true) => GridMode::Cubic,
        (Some(other), _) => {
            return Err(a.invalid(format!("GridSample mode `{other}` is not defined")));
        }
    };
    let padding = match a.string("padding_mode").as_deref() {
        None | Some("zeros") => GridPadding::Zeros,
        Some("border") => GridPadding::Border,
        Some("reflection") => GridPadding::Reflection,
        Some(other) => {
            return Err(a.invalid(format!("GridSample padding_mode `{other}` is not defined")));
        }
    };
    Ok(Op::GridSample { mode, padding, align_corners: a.i64("align_corners", 0) != 0 })
}

/// Output types: `X` `[N, C, D1..Dr]` and `grid` `[N, H1..Hr, r]` give `[N, C, H1..Hr]`.
pub(crate) fn infer(_g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let Op::GridSample { mode, .. } = &node.op else {
        return Err(super::misrouted(&node.op, FAMILY));
    };
    let (x, grid) = (input(ins, 0)?, input(ins, 1)?);
    if x.dtype != DType::F32 || grid.dtype != DType::F32 {
        return Err(format!("GridSample of {x} at a grid of {grid}: both must be float"));
    }
    let r = x.shape.len().saturating_sub(2);
    if r == 0 || grid.shape.len() != r + 2 || grid.shape[r + 1] != r || grid.shape[0] != x.shape[0]
    {
        return Err(format!(
            "GridSample of {x} at a grid of {grid}: the grid must be [N, H1..Hr, r] for the \
             input's r spatial axes"
        ));
    }
    if *mode == GridMode::Cubic && r > 3 {
        return Err(format!("cubic GridSample of {r} spatial axes"));
    }
    let mut shape = vec![x.shape[0], x.shape[1]];
    shape.extend_from_slice(&grid.shape[1..=r]);
    Ok(vec![TensorType { dtype: DType::F32, shape }])
}

/// A normalised grid coordinate `n` (−1 to 1) on an axis of `len` as an input coordinate:
/// with `align_corners` −1 and 1 are the centres of the end elements, else their outer edges.
fn denormalize(n: f32, len: usize, align: bool) -> f32 {
    let l = len as f32;
    if align { (n + 1.0) / 2.0 * (l - 1.0) } else { ((n + 1.0) * l - 1.0) / 2.0 }
}

/// `x` reflected at `lo` and `hi` until it lies between them (onnx's `_gs_reflect`).
fn reflect(x: f32, lo: f32, hi: f32) -> f32 {
    let rng = hi - lo;
    if rng <= 0.0 {
        return lo;
    }
    let fold = |dx: f32| {
        let n = (dx / rng) as i64;
        (n, dx - n as f32 * rng)
    };
    if x < lo {
        let (n, r) = fold(lo - x);
        if n % 2 == 0 { lo + r } else { hi - r }
    } else if x > hi {
        let (n, r) = fold(x - hi);
        if n % 2 == 0 { hi - r } else { lo + r }
    } else {
        x
    }
}

/// The coordinate range of an axis of `len`: the end elements' centres with `align`, else
/// their outer edges.
fn bounds(len: usize, align: bool) -> (f32, f32) {
    if align { (0.0, len as f32 - 1.0) } else { (-0.5, len as f32 - 0.5) }
}

/// Keys' cubic kernel at the four taps around fractional offset `f` (a = −0.75).
fn cubic_coeffs(f: f32) -> [f32; 4] {
    let a = -0.75f32;
    let (x1, x2) = (f + 1.0, 2.0 - f);
    let g = 1.0 - f;
    [
        ((a * x1 - 5.0 * a) * x1 + 8.0 * a) * x1 - 4.0 * a,
        ((a + 2.0) * f - (a + 3.0)) * f * f + 1.0,
        ((a + 2.0) * g - (a + 3.0)) * g * g + 1.0,
        ((a * x2 - 5.0 * a) * x2 + 8.0 * a) * x2 - 4.0 * a,
    ]
}

/// One axis's taps for grid coordinate `n`: input indices (possibly outside the axis) and
/// weights.
fn taps(n: f32, len: usize, mode: GridMode, padding: GridPadding, align: bool) -> Vec<(i64, f32)> {
    let mut x = denormalize(n, len, align);
    if mode == GridMode::Nearest {
        x = x.round_ties_even();
    }
    let (lo, hi) = bounds(len, align);
    // Cubic taps are padded one by one (`pixel_index`), the coordinate left as it is: as
    // PyTorch's grid_sample, where the op comes from, and onnxruntime compute it. (onnx's
    // reference also clamps the coordinate with border padding, moving the taps; no
    // backend test covers that case.)
    if (x < lo || x > hi) && mode != GridMode::Cubic {
        match padding {
            GridPadding::Border => x = x.clamp(0.0, len as f32 - 1.0),
            GridPadding::Reflection => x = reflect(x, lo, hi),
            GridPadding::Zeros => {}
        }
    }
    match mode {
        GridMode::Nearest => vec![(x as i64, 1.0)],
        GridMode::Linear => {
            let x0 = x.floor();
            let f = x - x0;
            vec![(x0 as i64, 1.0 - f), (x0 as i64 + 1, f)]
        }
        GridMode::Cubic => {
            let x0 = x.floor();
            let c = cubic_coeffs(x - x0);
            (0..4).map(|t| (x0 as i64 - 1 + t as i64, c[t as usize])).collect()
        }
    }
}

/// Where tap index `i` on an axis of `len` reads: `None` (a zero) outside it with zeros
/// padding; clamped with border padding; reflected (then truncated) with reflection padding.
fn pixel_index(i: i64, len: usize, padding: GridPadding, align: bool) -> Option<usize> {
    let last = len as i64 - 1;
    match padding {
        GridPadding::Zeros => (0..=last).contains(&i).then_some(i as usize),
        GridPadding::Border => Some(i.clamp(0, last) as usize),
        GridPadding::Reflection => {
            let (lo, hi) = bounds(len, align);
            Some((reflect(i as f32, lo, hi) as i64).clamp(0, last) as usize)
        }
    }
}

/// Reference semantics (ONNX GridSample-22): each output position `[n, c, h...]` reads
/// `X[n, c]` at the grid's point `grid[n, h..., :]` (its components in reverse axis order:
/// x for the last axis first), interpolated over every combination of one tap per axis.
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let Op::GridSample { mode, padding, align_corners } = &node.op else {
        return Err(super::misrouted(&node.op, FAMILY));
    };
    let (x, grid) = (arg(args, 0)?.f32()?, arg(args, 1)?.f32()?);
    let xs = x.shape().to_vec();
    let gs = grid.shape().to_vec();
    let r = xs.len() - 2;
    let dims = &xs[2..];
    let mut oshape = vec![xs[0], xs[1]];
    oshape.extend_from_slice(&gs[1..=r]);
    let xv: Vec<f32> = x.iter().copied().collect();
    let gv: Vec<f32> = grid.iter().copied().collect();
    let positions: usize = gs[1..=r].iter().product();
    let plane: usize = dims.iter().product();
    let strides: Vec<usize> = (0..r).map(|k| dims[k + 1..].iter().product()).collect();
    let mut out = Vec::with_capacity(oshape.iter().product());
    for n in 0..xs[0] {
        // Per output position, each axis's taps (the same for every channel).
        let mut per_pos = Vec::with_capacity(positions);
        for p in 0..positions {
            let at = (n * positions + p) * r;
            let axes: Vec<Vec<(Option<usize>, f32)>> = (0..r)
                .map(|k| {
                    taps(gv[at + r - 1 - k], dims[k], *mode, *padding, *align_corners)
                        .into_iter()
                        .map(|(i, w)| (pixel_index(i, dims[k], *padding, *align_corners), w))
                        .collect()
                })
                .collect();
            per_pos.push(axes);
        }
        for c in 0..xs[1] {
            let base = (n * xs[1] + c) * plane;
            for axes in &per_pos {
                let combos: usize = axes.iter().map(Vec::len).product();
                let mut acc = 0.0f64;
                for combo in 0..combos {
                    let (mut rest, mut w, mut at) = (combo, 1.0f64, Some(base));
                    for (k, t) in axes.iter().enumerate() {
                        let (i, wk) = t[rest % t.len()];
                        rest /= t.len();
                        w *= f64::from(wk);
                        at = match (at, i) {
                            (Some(a), Some(i)) => Some(a + i * strides[k]),
                            _ => None,
                        };
                    }
                    acc += w * at.map_or(0.0, |a| f64::from(xv[a]));
                }
                out.push(acc as f32);
            }
        }
    }
    one(Array::F32(ArrayD::from_shape_vec(IxDyn(&oshape), out).map_err(|e| e.to_string())?))
}

fn one(a: Array) -> R<Vec<Array>> {
    Ok(vec![a])
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a` (the opset-20
/// mode names; importing at an older opset reads them too).
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    if let Op::GridSample { mode, padding, align_corners } = op {
        let m = match mode {
            GridMode::Nearest => "nearest",
            GridMode::Linear => "linear",
            GridMode::Cubic => "cubic",
        };
        let p = match padding {
            GridPadding::Zeros => "zeros",
            GridPadding::Border => "border",
            GridPadding::Reflection => "reflection",
        };
        a.push(format!("mode: string = \"{m}\""));
        a.push(format!("padding_mode: string = \"{p}\""));
        a.push(format!("align_corners: int = {}", i64::from(*align_corners)));
    }
}

/// Device lowering: none (addresses come from the grid's values), so GridSample runs on the
/// host.
pub(crate) fn lower(_b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    Err(LowerError::at(&n.name, format!("{} is not lowered to the device", n.op_type)))
}

/// Cost inputs: gathers.
pub(crate) fn work(_op: &Op, _inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    Work::Traffic
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`.
pub(crate) fn arity(_op_type: &str, _opset: i64) -> Arity {
    counts(2, 2, 1, 1)
}

/// No input determines the output shape (the grid's shape does, not its values).
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
}

/// Host lowering, as [`eval`]: per output element, each axis's taps from the grid (in `f32`,
/// the same operations), then every combination's weighted input (zero where a tap is
/// outside with zeros padding), summed in `f64`.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let Op::GridSample { mode, padding, align_corners: align } = n.op.clone() else {
        return Err(LowerError::msg(super::misrouted(&n.op, FAMILY)));
    };
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the input is missing"))?;
    let grid = n.inputs.get(1).copied().flatten().ok_or_else(|| b.err(n, "the grid is missing"))?;
    let xt = b.ty(x)?;
    let r = xt.shape.len() - 2;
    let dims = xt.shape[2..].to_vec();
    let ntaps = match mode {
        GridMode::Nearest => 1,
        GridMode::Linear => 2,
        GridMode::Cubic => 4,
    };
    let combos = (ntaps as usize).pow(r as u32);
    if combos > 64 {
        return Err(b.err(n, format!("GridSample with {combos} taps per element")));
    }
    b.map_out(n.outputs[0], &mut |b, idx| {
        // Per axis: (index as i64, weight as f32) per tap.
        let mut axes: Vec<Vec<(String, String)>> = Vec::with_capacity(r);
        for (k, &len) in dims.iter().enumerate() {
            let mut gi = vec![idx[0].clone()];
            gi.extend_from_slice(&idx[2..]);
            gi.push(b.idx(r - 1 - k));
            let g = b.load(grid, &gi)?;
            let l = b.f32c(len as f32);
            let one = b.f32c(1.0);
            let two = b.f32c(2.0);
            let g1 = b.op2("arith.addf", &g, &one, "f32");
            let mut xc = if align {
                let lm1 = b.f32c(len as f32 - 1.0);
                let h = b.op2("arith.divf", &g1, &two, "f32");
                b.op2("arith.mulf", &h, &lm1, "f32")
            } else {
                let p = b.op2("arith.mulf", &g1, &l, "f32");
                let p = b.op2("arith.subf", &p, &one, "f32");
                b.op2("arith.divf", &p, &two, "f32")
            };
            if mode == GridMode::Nearest {
                xc = b.op1("math.roundeven", &xc, "f32");
            }
            let (lo, hi) = bounds(len, align);
            match padding {
                // As `taps`: cubic taps are padded one by one.
                _ if mode == GridMode::Cubic => {}
                GridPadding::Zeros => {}
                GridPadding::Border => {
                    // Inside [lo, hi] the value stays; outside it is clamped to [0, len − 1],
                    // which leaves values in [lo, hi] alone too when they lie in it.
                    let (lc, hc) = (b.f32c(lo), b.f32c(hi));
                    let below = b.cmpf("olt", &xc, &lc, "f32");
                    let above = b.cmpf("ogt", &xc, &hc, "f32");
                    let out = b.op2("arith.ori", &below, &above, "i1");
                    let z = b.f32c(0.0);
                    let last = b.f32c(len as f32 - 1.0);
                    let c = b.op2("arith.maximumf", &xc, &z, "f32");
                    let c = b.op2("arith.minimumf", &c, &last, "f32");
                    xc = b.select(&out, &c, &xc, "f32");
                }
                GridPadding::Reflection => xc = host_reflect(b, &xc, lo, hi),
            }
            let mut taps = Vec::with_capacity(ntaps as usize);
            match mode {
                GridMode::Nearest => {
                    let i = b.let_(&format!("arith.fptosi {xc} : f32 to i64"));
                    taps.push((i, b.f32c(1.0)));
                }
                GridMode::Linear | GridMode::Cubic => {
                    let x0 = b.op1("math.floor", &xc, "f32");
                    let f = b.op2("arith.subf", &xc, &x0, "f32");
                    let i0 = b.let_(&format!("arith.fptosi {x0} : f32 to i64"));
                    let ws = if mode == GridMode::Linear {
                        vec![b.op2("arith.subf", &one, &f, "f32"), f.clone()]
                    } else {
                        host_cubic(b, &f)
                    };
                    let first = if mode == GridMode::Linear { 0 } else { -1 };
                    for (t, w) in ws.into_iter().enumerate() {
                        let off = b.i64c(first + t as i64);
                        let i = b.op2("arith.addi", &i0, &off, "i64");
                        taps.push((i, w));
                    }
                }
            }
            // Each tap's index as where it reads (with its validity for zeros padding).
            let mut placed = Vec::with_capacity(taps.len());
            for (i, w) in taps {
                let last = b.i64c(len as i64 - 1);
                let z = b.i64c(0);
                let (i, ok) = match padding {
                    GridPadding::Zeros => {
                        let ge = b.cmpi("sge", &i, &z, "i64");
                        let le = b.cmpi("sle", &i, &last, "i64");
                        let ok = b.op2("arith.andi", &ge, &le, "i1");
                        (i, ok)
                    }
                    GridPadding::Border => (i, b.let_("arith.constant true")),
                    GridPadding::Reflection => {
                        let f = b.let_(&format!("arith.sitofp {i} : i64 to f32"));
                        let f = host_reflect(b, &f, lo, hi);
                        (
                            b.let_(&format!("arith.fptosi {f} : f32 to i64")),
                            b.let_("arith.constant true"),
                        )
                    }
                };
                let i = b.op2("arith.maxsi", &i, &z, "i64");
                let i = b.op2("arith.minsi", &i, &last, "i64");
                let i = b.let_(&format!("arith.index_cast {i} : i64 to index"));
                placed.push((format!("{i}|{ok}"), w));
            }
            axes.push(placed);
        }
        let zero = b.f64c(0.0);
        let mut acc = zero.clone();
        for combo in 0..combos {
            let mut rest = combo;
            let mut w = b.f64c(1.0);
            let mut at = vec![idx[0].clone(), idx[1].clone()];
            let mut ok = b.let_("arith.constant true");
            for t in &axes {
                let (key, wk) = &t[rest % t.len()];
                rest /= t.len();
                let (i, v) = key.split_once('|').unwrap_or((key, ""));
                at.push(i.to_string());
                ok = b.op2("arith.andi", &ok, v, "i1");
                let wf = b.f64_of(wk);
                w = b.op2("arith.mulf", &w, &wf, "f64");
            }
            let v = b.load(x, &at)?;
            let v = b.f64_of(&v);
            let v = b.select(&ok, &v, &zero, "f64");
            let p = b.op2("arith.mulf", &w, &v, "f64");
            acc = b.op2("arith.addf", &acc, &p, "f64");
        }
        Ok(b.f32_of(&acc))
    })
}

/// [`reflect`] of `f32` value `x` between constants `lo` and `hi`, in MLIR.
fn host_reflect(b: &mut HostBuilder<'_>, x: &str, lo: f32, hi: f32) -> String {
    let rng = hi - lo;
    let (lc, hc) = (b.f32c(lo), b.f32c(hi));
    if rng <= 0.0 {
        return lc;
    }
    let rc = b.f32c(rng);
    let two = b.i64c(2);
    let z = b.i64c(0);
    // (n, r) of distance `d` past a bound, and whether n is even.
    let fold = |b: &mut HostBuilder<'_>, d: &str| -> (String, String) {
        let q = b.op2("arith.divf", d, &rc, "f32");
        let nq = b.let_(&format!("arith.fptosi {q} : f32 to i64"));
        let nf = b.let_(&format!("arith.sitofp {nq} : i64 to f32"));
        let m = b.op2("arith.mulf", &nf, &rc, "f32");
        let r = b.op2("arith.subf", d, &m, "f32");
        let par = b.op2("arith.remsi", &nq, &two, "i64");
        (r, b.cmpi("eq", &par, &z, "i64"))
    };
    let dl = b.op2("arith.subf", &lc, x, "f32");
    let (rl, el) = fold(b, &dl);
    let a = b.op2("arith.addf", &lc, &rl, "f32");
    let s = b.op2("arith.subf", &hc, &rl, "f32");
    let below_v = b.select(&el, &a, &s, "f32");
    let dh = b.op2("arith.subf", x, &hc, "f32");
    let (rh, eh) = fold(b, &dh);
    let s2 = b.op2("arith.subf", &hc, &rh, "f32");
    let a2 = b.op2("arith.addf", &lc, &rh, "f32");
    let above_v = b.select(&eh, &s2, &a2, "f32");
    let below = b.cmpf("olt", x, &lc, "f32");
    let above = b.cmpf("ogt", x, &hc, "f32");
    let v = b.select(&above, &above_v, x, "f32");
    b.select(&below, &below_v, &v, "f32")
}

/// [`cubic_coeffs`] of `f32` value `f`, in MLIR, the same operations in the same order.
fn host_cubic(b: &mut HostBuilder<'_>, f: &str) -> Vec<String> {
    let c = |b: &mut HostBuilder<'_>, v: f32| b.f32c(v);
    let a = -0.75f32;
    let (one, two) = (c(b, 1.0), c(b, 2.0));
    let (ca, c5a, c8a, c4a) = (c(b, a), c(b, 5.0 * a), c(b, 8.0 * a), c(b, 4.0 * a));
    let (ca2, ca3) = (c(b, a + 2.0), c(b, a + 3.0));
    let outer = |b: &mut HostBuilder<'_>, x: &str| {
        let t = b.op2("arith.mulf", &ca, x, "f32");
        let t = b.op2("arith.subf", &t, &c5a, "f32");
        let t = b.op2("arith.mulf", &t, x, "f32");
        let t = b.op2("arith.addf", &t, &c8a, "f32");
        let t = b.op2("arith.mulf", &t, x, "f32");
        b.op2("arith.subf", &t, &c4a, "f32")
    };
    let inner = |b: &mut HostBuilder<'_>, x: &str| {
        let t = b.op2("arith.mulf", &ca2, x, "f32");
        let t = b.op2("arith.subf", &t, &ca3, "f32");
        let t = b.op2("arith.mulf", &t, x, "f32");
        let t = b.op2("arith.mulf", &t, x, "f32");
        b.op2("arith.addf", &t, &one, "f32")
    };
    let x1 = b.op2("arith.addf", f, &one, "f32");
    let x2 = b.op2("arith.subf", &two, f, "f32");
    let g = b.op2("arith.subf", &one, f, "f32");
    vec![outer(b, &x1), inner(b, f), inner(b, &g), outer(b, &x2)]
}
