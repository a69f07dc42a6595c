//! Rotary position embedding (ONNX RotaryEmbedding-23): the first `rotary_embedding_dim`
//! features of each head are rotated pairwise by the angles of a cosine and a sine cache
//! (looked up by position ids, or given per batch entry and position). It runs on the host:
//! the cache rows depend on the position ids' values.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer, device lowering (refused, with the reason) and host lowering.
//!
//! Arithmetic (reference and host alike, as onnx's reference in `f32`): a pair `(x1, x2)`
//! becomes `(cos·x1 − sin·x2, sin·x1 + cos·x2)`, each product rounded to `f32`.

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
pub(crate) const FAMILY: &str = "rotary";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &["RotaryEmbedding"];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, _opset: i64) -> Result<Op, String> {
    if op_type != "RotaryEmbedding" {
        return Err(super::misrouted_name(op_type, FAMILY));
    }
    let nonneg = |name: &'static str| -> Result<usize, String> {
        let v = a.i64(name, 0);
        usize::try_from(v).map_err(|_| a.invalid(format!("{name} {v} is negative")))
    };
    Ok(Op::Rotary {
        interleaved: a.i64("interleaved", 0) != 0,
        num_heads: nonneg("num_heads")?,
        rotary_dim: nonneg("rotary_embedding_dim")?,
    })
}

/// The geometry: batch, sequence, heads, head size, rotated features.
#[derive(Clone, Copy)]
struct Geom {
    batch: usize,
    seq: usize,
    heads: usize,
    head: usize,
    rd: usize,
}

fn geom(op: &Op, x: &[usize]) -> R<Geom> {
    let Op::Rotary { num_heads, rotary_dim, .. } = op else { return Err("not rotary".into()) };
    let (batch, seq, heads, head) = match x {
        [b, h, s, d] => (*b, *s, *h, *d),
        [b, s, hidden] => {
            if *num_heads == 0 || hidden % num_heads != 0 {
                return Err(format!(
                    "a 3-D input of hidden size {hidden} needs num_heads dividing it, not \
                     {num_heads}"
                ));
            }
            (*b, *s, *num_heads, hidden / num_heads)
        }
        _ => return Err(format!("RotaryEmbedding of rank {} (3 or 4)", x.len())),
    };
    let rd = if *rotary_dim == 0 { head } else { *rotary_dim };
    if rd > head || rd % 2 != 0 {
        return Err(format!("rotary_embedding_dim {rd} for heads of {head}: must be even, ≤"));
    }
    Ok(Geom { batch, seq, heads, head, rd })
}

/// Output types: the input's. Checks the caches: `[max_position, rd/2]` with position ids
/// (`[batch, seq]` int64), else `[batch, seq, rd/2]`.
pub(crate) fn infer(_g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = input(ins, 0)?;
    let g = geom(&node.op, &x.shape)?;
    let (cos, sin) = (input(ins, 1)?, input(ins, 2)?);
    if x.dtype != DType::F32 || cos.dtype != DType::F32 || sin.dtype != DType::F32 {
        return Err(format!("RotaryEmbedding of {x} with caches {cos} and {sin}"));
    }
    let half = g.rd / 2;
    match ins.get(3).copied().flatten() {
        Some(p) => {
            if p.dtype != DType::I64 || p.shape != [g.batch, g.seq] {
                return Err(format!("position_ids {p}: expected int64[{}, {}]", g.batch, g.seq));
            }
            for c in [cos, sin] {
                if c.shape.len() != 2 || c.shape[1] != half {
                    return Err(format!("cache {c}: expected [max_position, {half}]"));
                }
            }
        }
        None => {
            for c in [cos, sin] {
                if c.shape != [g.batch, g.seq, half] {
                    return Err(format!("cache {c}: expected [{}, {}, {half}]", g.batch, g.seq));
                }
            }
        }
    }
    Ok(vec![x.clone()])
}

/// The flat offset of feature `d` of head `h` at position `s` of batch entry `b`.
fn at(x: &[usize], g: Geom, b: usize, s: usize, h: usize, d: usize) -> usize {
    if x.len() == 4 {
        ((b * g.heads + h) * g.seq + s) * g.head + d
    } else {
        (b * g.seq + s) * g.heads * g.head + h * g.head + d
    }
}

/// Reference semantics (ONNX RotaryEmbedding-23): pair `i` of the rotated features is
/// `(i, i + rd/2)`, or `(2i, 2i + 1)` interleaved; features past `rd` pass through. A position
/// id outside the cache is an error.
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let Op::Rotary { interleaved, .. } = &node.op else {
        return Err(super::misrouted(&node.op, FAMILY));
    };
    let x = arg(args, 0)?.f32()?;
    let xs = x.shape().to_vec();
    let g = geom(&node.op, &xs)?;
    let xv: Vec<f32> = x.iter().copied().collect();
    let cos: Vec<f32> = arg(args, 1)?.f32()?.iter().copied().collect();
    let sin: Vec<f32> = arg(args, 2)?.f32()?.iter().copied().collect();
    let rows = arg(args, 1)?.shape()[0];
    let pid: Option<Vec<i64>> =
        opt(args, 3).map(|p| p.ints().map(|v| v.iter().copied().collect())).transpose()?;
    let half = g.rd / 2;
    let mut out = xv.clone();
    for b in 0..g.batch {
        for s in 0..g.seq {
            let row = match &pid {
                Some(p) => {
                    let v = p[b * g.seq + s];
                    usize::try_from(v).ok().filter(|r| *r < rows).ok_or_else(|| {
                        format!("position id {v} is outside the cache's {rows} rows")
                    })?
                }
                None => b * g.seq + s,
            };
            for h in 0..g.heads {
                for i in 0..half {
                    let (d1, d2) = if *interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                    let (c, sn) = (cos[row * half + i], sin[row * half + i]);
                    let (p, q) = (at(&xs, g, b, s, h, d1), at(&xs, g, b, s, h, d2));
                    let (x1, x2) = (xv[p], xv[q]);
                    out[p] = c * x1 - sn * x2;
                    out[q] = sn * x1 + c * x2;
                }
            }
        }
    }
    Ok(vec![Array::F32(ArrayD::from_shape_vec(IxDyn(&xs), out).map_err(|e| e.to_string())?)])
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    if let Op::Rotary { interleaved, num_heads, rotary_dim } = op {
        a.push(format!("interleaved: int = {}", i64::from(*interleaved)));
        a.push(format!("num_heads: int = {num_heads}"));
        a.push(format!("rotary_embedding_dim: int = {rotary_dim}"));
    }
}

/// Device lowering: none (cache rows chosen by the position ids' values).
pub(crate) fn lower(_b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    Err(LowerError::at(&n.name, format!("{} is not lowered to the device", n.op_type)))
}

/// Cost inputs: a few vector passes.
pub(crate) fn work(_op: &Op, _inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    Work::Vector { passes: 3, slow: false }
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`.
pub(crate) fn arity(_op_type: &str, _opset: i64) -> Arity {
    counts(3, 4, 1, 1)
}

/// No input determines the output shape.
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
}

/// Host lowering, as [`eval`]: a copy of the input, then a loop over the pairs (batch,
/// position, head, pair) writing both rotated features; a position id outside the cache sets
/// the status (code 4) and reads row 0.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let Op::Rotary { interleaved, .. } = n.op.clone() else {
        return Err(LowerError::msg(super::misrouted(&n.op, FAMILY)));
    };
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the input is missing"))?;
    let inp = |i: usize| n.inputs.get(i).copied().flatten();
    let cos = inp(1).ok_or_else(|| b.err(n, "cos_cache is missing"))?;
    let sin = inp(2).ok_or_else(|| b.err(n, "sin_cache is missing"))?;
    let pid = inp(3);
    let xt = b.ty(x)?;
    let g = geom(&n.op, &xt.shape).map_err(|e| b.err(n, e))?;
    let rows = b.ty(cos)?.shape[0];
    let out = n.outputs[0];
    let half = g.rd / 2;
    b.map_out(out, &mut |b, idx| b.load(x, idx))?;
    let rank = xt.shape.len();
    // The tensor indices of feature `d` (an index) of (b, s, h).
    let place = |b: &mut HostBuilder<'_>, bi: &str, s: &str, h: &str, d: &str| -> Vec<String> {
        if rank == 4 {
            vec![bi.into(), h.into(), s.into(), d.into()]
        } else {
            let hd = b.idx(g.head);
            let m = b.iop("arith.muli", h, &hd);
            vec![bi.into(), s.into(), b.iop("arith.addi", &m, d)]
        }
    };
    b.nest(&[g.batch, g.seq, g.heads, half], &mut |b, ix| {
        let (bi, s, h, i) = (&ix[0], &ix[1], &ix[2], &ix[3]);
        let (d1, d2) = if interleaved {
            let two = b.idx(2);
            let one = b.idx(1);
            let d1 = b.iop("arith.muli", i, &two);
            let d2 = b.iop("arith.addi", &d1, &one);
            (d1, d2)
        } else {
            let hf = b.idx(half);
            (i.clone(), b.iop("arith.addi", i, &hf))
        };
        let (c, sn) = match pid {
            Some(p) => {
                let v = b.load(p, &[bi.clone(), s.clone()])?;
                let z = b.i64c(0);
                let r = b.i64c(rows as i64);
                let lo = b.cmpi("slt", &v, &z, "i64");
                let hi = b.cmpi("sge", &v, &r, "i64");
                let bad = b.op2("arith.ori", &lo, &hi, "i1");
                b.fail_if(&bad, 4);
                let v = b.select(&bad, &z, &v, "i64");
                let row = b.let_(&format!("arith.index_cast {v} : i64 to index"));
                (b.load(cos, &[row.clone(), i.clone()])?, b.load(sin, &[row, i.clone()])?)
            }
            None => (
                b.load(cos, &[bi.clone(), s.clone(), i.clone()])?,
                b.load(sin, &[bi.clone(), s.clone(), i.clone()])?,
            ),
        };
        let p = place(b, bi, s, h, &d1);
        let q = place(b, bi, s, h, &d2);
        let x1 = b.load(x, &p)?;
        let x2 = b.load(x, &q)?;
        let a = b.op2("arith.mulf", &c, &x1, "f32");
        let bb = b.op2("arith.mulf", &sn, &x2, "f32");
        let re = b.op2("arith.subf", &a, &bb, "f32");
        let a = b.op2("arith.mulf", &sn, &x1, "f32");
        let bb = b.op2("arith.mulf", &c, &x2, "f32");
        let im = b.op2("arith.addf", &a, &bb, "f32");
        b.store(&re, out, &p)?;
        b.store(&im, out, &q)
    })
}
