//! Attention (ONNX opsets 23 to 25): scaled dot-product attention over 3-D (`[batch, seq,
//! heads·size]`) or 4-D (`[batch, heads, seq, size]`) query, key and value, with grouped-query
//! heads, a boolean or additive mask, causal and sliding-window masking aligned to the cache
//! offset, a key/value cache (`past_key`, `past_value` in, `present_*` out), padding by
//! `nonpad_kv_seqlen`, softcap, and the `qk_matmul_output` debug output.
//!
//! Semantics follow the ONNX specification and its reference implementation
//! (`onnx/reference/ops/op_attention.py`): scores `(q·√scale)·(k·√scale)`, softcap before the
//! bias, the bias summed from the mask (boolean: 0 or −inf; shorter than the keys: padded with
//! −inf), the causal frontier `j ≤ i + offset`, the window and the padding; softmax with an
//! all-masked row giving zeros. Both the reference and the host lowering compute each output
//! element from these per-element formulas, in `f32` as the reference does for float inputs.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer, device lowering (refused, with the reason) and host lowering.

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
pub(crate) const FAMILY: &str = "attention";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &["Attention"];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, _opset: i64) -> Result<Op, String> {
    if op_type != "Attention" {
        return Err(super::misrouted_name(op_type, FAMILY));
    }
    let heads = |name: &'static str| -> R<Option<usize>> {
        match a.get(name).and_then(|v| v.i) {
            None => Ok(None),
            Some(h) => usize::try_from(h)
                .ok()
                .filter(|h| *h >= 1)
                .map(Some)
                .ok_or_else(|| a.invalid(format!("{name} = {h} is not a positive count"))),
        }
    };
    // The softmax runs in the input's precision; another requested precision is refused.
    if let Some(p) = a.get("softmax_precision").and_then(|v| v.i)
        && p != 1
    {
        return Err(format!(
            "Attention with softmax_precision {} is not supported",
            DType::onnx_name(p as i32)
        ));
    }
    let window = |name: &'static str| -> R<i64> {
        let w = a.i64(name, -1);
        if w < -1 {
            return Err(a.invalid(format!("{name} = {w} (must be -1 or nonnegative)")));
        }
        Ok(w)
    };
    let mode = a.i64("qk_matmul_output_mode", 0);
    if !(0..=3).contains(&mode) {
        return Err(a.invalid(format!("qk_matmul_output_mode {mode} is not defined")));
    }
    Ok(Op::Attention(Box::new(AttentionAttrs {
        is_causal: a.i64("is_causal", 0) != 0,
        q_heads: heads("q_num_heads")?,
        kv_heads: heads("kv_num_heads")?,
        scale: a.get("scale").and_then(|v| v.f),
        softcap: a.f32("softcap", 0.0),
        qk_mode: mode as u8,
        left: window("left_window_size")?,
        right: window("right_window_size")?,
    })))
}

/// The geometry of one Attention node, from its input types.
#[derive(Clone, Debug)]
struct Geom {
    rank3: bool,
    batch: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    /// Incoming keys (without the past).
    skv: usize,
    past: usize,
    dk: usize,
    dv: usize,
    /// The attn_mask's shape, if any, and whether it is boolean.
    mask: Option<(Vec<usize>, bool)>,
    nonpad: bool,
}

impl Geom {
    fn total_kv(&self) -> usize {
        self.past + self.skv
    }
}

fn geom(op: &AttentionAttrs, ins: &[Option<&TensorType>]) -> R<Geom> {
    let (q, k, v) = (input(ins, 0)?, input(ins, 1)?, input(ins, 2)?);
    if [q, k, v].iter().any(|t| t.dtype != DType::F32) {
        return Err(format!("Attention of {q}, {k}, {v} (float32 is supported)"));
    }
    let rank = q.shape.len();
    if k.shape.len() != rank || v.shape.len() != rank || !(rank == 3 || rank == 4) {
        return Err(format!("Attention of {q}, {k}, {v}: Q, K and V must all be 3-D or 4-D"));
    }
    let (batch, hq, hkv, sq, skv, dk, dv);
    if rank == 3 {
        let (qh, kvh) = match (op.q_heads, op.kv_heads) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err("3-D Attention needs q_num_heads and kv_num_heads".into()),
        };
        if q.shape[2] % qh != 0 || k.shape[2] % kvh != 0 || v.shape[2] % kvh != 0 {
            return Err(format!("hidden sizes of {q}, {k}, {v} do not divide by the heads"));
        }
        (batch, hq, hkv, sq, skv) = (q.shape[0], qh, kvh, q.shape[1], k.shape[1]);
        (dk, dv) = (q.shape[2] / qh, v.shape[2] / kvh);
        if k.shape[2] / kvh != dk {
            return Err(format!(
                "query head size {dk} and key head size {} differ",
                k.shape[2] / kvh
            ));
        }
        if v.shape[1] != skv {
            return Err(format!("K and V sequence lengths {skv} and {} differ", v.shape[1]));
        }
    } else {
        if op.q_heads.is_some() || op.kv_heads.is_some() {
            return Err("q_num_heads and kv_num_heads must not be given for 4-D inputs".into());
        }
        (batch, hq, sq, dk) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
        (hkv, skv, dv) = (k.shape[1], k.shape[2], v.shape[3]);
        if k.shape[3] != dk || v.shape[1] != hkv || v.shape[2] != skv {
            return Err(format!("Attention of {q}, {k}, {v}: head sizes or key lengths differ"));
        }
    }
    if [k.shape[0], v.shape[0]].iter().any(|b| *b != batch) {
        return Err("Q, K and V batch sizes differ".into());
    }
    if hq % hkv != 0 {
        return Err(format!("{hq} query heads do not group over {hkv} key/value heads"));
    }
    let mask = match ins.get(3).copied().flatten() {
        Some(m) => {
            if !matches!(m.dtype, DType::Bool | DType::F32)
                || m.shape.is_empty()
                || m.shape.len() > 4
            {
                return Err(format!("attn_mask {m} (bool or float, rank 1 to 4)"));
            }
            Some((m.shape.clone(), m.dtype == DType::Bool))
        }
        None => None,
    };
    let (pk, pv) = (ins.get(4).copied().flatten(), ins.get(5).copied().flatten());
    let past = match (pk, pv) {
        (None, None) => 0,
        (Some(pk), Some(pv)) => {
            let want_k = [batch, hkv, pk.shape.get(2).copied().unwrap_or(0), dk];
            let want_v = [batch, hkv, pk.shape.get(2).copied().unwrap_or(0), dv];
            if pk.shape != want_k
                || pv.shape != want_v
                || pk.dtype != DType::F32
                || pv.dtype != DType::F32
            {
                return Err(format!("past_key {pk} and past_value {pv} for this attention"));
            }
            pk.shape[2]
        }
        _ => return Err("past_key and past_value must be given together".into()),
    };
    let nonpad = match ins.get(6).copied().flatten() {
        Some(t) => {
            if t.dtype != DType::I64 || t.shape != [batch] {
                return Err(format!("nonpad_kv_seqlen {t} (int64 [batch])"));
            }
            if past > 0 {
                return Err("nonpad_kv_seqlen cannot be combined with a past cache".into());
            }
            true
        }
        None => false,
    };
    if let Some((ms, _)) = &mask {
        let total = past + skv;
        let full = [batch, hq, sq, total];
        let r = ms.len();
        for (i, d) in ms.iter().enumerate() {
            let want = full[4 - r + i];
            let last = i + 1 == r;
            if !(*d == 1 || *d == want || (last && *d <= want)) {
                return Err(format!("attn_mask {ms:?} does not broadcast to {full:?}"));
            }
        }
    }
    Ok(Geom { rank3: rank == 3, batch, hq, hkv, sq, skv, past, dk, dv, mask, nonpad })
}

/// Output types: Y, then present_key, present_value (`[batch, kv_heads, past + kv, size]`) and
/// qk_matmul_output (`[batch, q_heads, q, past + kv]`) where listed.
pub(crate) fn infer(_g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let Op::Attention(op) = &node.op else { return Err(super::misrouted(&node.op, FAMILY)) };
    let g = geom(op, ins)?;
    let f = |shape: Vec<usize>| TensorType { dtype: DType::F32, shape };
    let y =
        if g.rank3 { vec![g.batch, g.sq, g.hq * g.dv] } else { vec![g.batch, g.hq, g.sq, g.dv] };
    let t = g.total_kv();
    let all = [
        f(y),
        f(vec![g.batch, g.hkv, t, g.dk]),
        f(vec![g.batch, g.hkv, t, g.dv]),
        f(vec![g.batch, g.hq, g.sq, t]),
    ];
    Ok(all[..node.outputs.len().min(4)].to_vec())
}

/// Reads of the inputs in the 4-D view, for the reference.
struct Inputs<'a> {
    g: &'a Geom,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    mask: Option<Vec<f64>>,
    pk: Option<Vec<f32>>,
    pv: Option<Vec<f32>>,
    nonpad: Option<Vec<i64>>,
}

impl Inputs<'_> {
    /// Q[b, h, i, e] (4-D view).
    fn q(&self, b: usize, h: usize, i: usize, e: usize) -> f32 {
        let g = self.g;
        if g.rank3 {
            self.q[(b * g.sq + i) * g.hq * g.dk + h * g.dk + e]
        } else {
            self.q[((b * g.hq + h) * g.sq + i) * g.dk + e]
        }
    }
    /// The present key or value (`value`) at [b, h, j, e], the past first.
    fn kv(&self, value: bool, b: usize, h: usize, j: usize, e: usize) -> f32 {
        let g = self.g;
        let d = if value { g.dv } else { g.dk };
        if j < g.past {
            let p = if value { &self.pv } else { &self.pk };
            return p.as_ref().map_or(0.0, |p| p[((b * g.hkv + h) * g.past + j) * d + e]);
        }
        let j = j - g.past;
        let x = if value { &self.v } else { &self.k };
        if g.rank3 {
            x[(b * g.skv + j) * g.hkv * d + h * d + e]
        } else {
            x[((b * g.hkv + h) * g.skv + j) * d + e]
        }
    }
}

/// The additive bias at (b, h, i, j): the mask (boolean: 0 or −inf; beyond its last axis: −inf),
/// the causal frontier, the window and the padding (per the module documentation).
fn bias(
    op: &AttentionAttrs,
    g: &Geom,
    mask_at: &dyn Fn(&[usize]) -> Option<f64>,
    nonpad: Option<i64>,
    idx: [usize; 4],
) -> f64 {
    let [_, _, i, j] = idx;
    let mut s = 0.0f64;
    if g.mask.is_some() {
        s += mask_at(&idx).unwrap_or(f64::NEG_INFINITY);
    }
    let offset = match nonpad {
        Some(n) if g.past == 0 => n - g.sq as i64,
        _ => g.past as i64,
    };
    let (i, j) = (i as i64, j as i64);
    if op.is_causal && j > i + offset {
        s = f64::NEG_INFINITY;
    }
    let diff = i + offset - j;
    if (op.left >= 0 && diff > op.left) || (op.right >= 0 && -diff > op.right) {
        s = f64::NEG_INFINITY;
    }
    if let Some(n) = nonpad
        && j >= n
    {
        s = f64::NEG_INFINITY;
    }
    s
}

/// The flat index into the mask of position `idx` (`[b, h, i, j]`): leading axes broadcast
/// (size 1), the last axis is padded (the reference pads a mask shorter than the keys with
/// −inf or false): `None` past its end.
fn mask_flat(shape: &[usize], idx: &[usize; 4]) -> Option<usize> {
    let r = shape.len();
    let mut f = 0;
    for (k, d) in shape.iter().enumerate() {
        let v = idx[4 - r + k];
        let v = if k + 1 < r && *d == 1 { 0 } else { v };
        if v >= *d {
            return None;
        }
        f = f * d + v;
    }
    Some(f)
}

/// Reference semantics (see the module documentation).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let Op::Attention(op) = &node.op else { return Err(super::misrouted(&node.op, FAMILY)) };
    let types: Vec<Option<TensorType>> = args
        .iter()
        .map(|a| a.map(|a| TensorType { dtype: a.dtype(), shape: a.shape().to_vec() }))
        .collect();
    let refs: Vec<Option<&TensorType>> = types.iter().map(Option::as_ref).collect();
    let g = geom(op, &refs)?;
    let vals = |i: usize| -> R<Option<Vec<f32>>> {
        opt(args, i).map(|a| a.f32().map(|a| a.iter().copied().collect())).transpose()
    };
    let mask = match opt(args, 3) {
        Some(Array::F32(m)) => Some(m.iter().map(|v| f64::from(*v)).collect()),
        Some(Array::Int(m, _)) => {
            Some(m.iter().map(|v| if *v != 0 { 0.0 } else { f64::NEG_INFINITY }).collect())
        }
        None => None,
    };
    let inp = Inputs {
        g: &g,
        q: vals(0)?.unwrap_or_default(),
        k: vals(1)?.unwrap_or_default(),
        v: vals(2)?.unwrap_or_default(),
        mask,
        pk: vals(4)?,
        pv: vals(5)?,
        nonpad: opt(args, 6).map(|a| a.ints().map(|v| v.iter().copied().collect())).transpose()?,
    };
    let mshape = g.mask.as_ref().map(|m| m.0.clone()).unwrap_or_default();
    let mask_at = |idx: &[usize]| -> Option<f64> {
        let idx: [usize; 4] = idx.try_into().ok()?;
        let f = mask_flat(&mshape, &idx)?;
        inp.mask.as_ref().map(|m| m[f])
    };
    let scale = op.scale.map_or(1.0 / (g.dk as f64).sqrt(), f64::from).sqrt() as f32;
    let t = g.total_kv();
    let reps = g.hq / g.hkv;
    let mut y = vec![0f32; g.batch * g.hq * g.sq * g.dv];
    let mut qk = vec![0f32; g.batch * g.hq * g.sq * t];
    for b in 0..g.batch {
        let np = inp.nonpad.as_ref().map(|n| n[b]);
        for h in 0..g.hq {
            let hk = h / reps;
            for i in 0..g.sq {
                // Scores (softcapped), biases.
                let mut s = vec![0f32; t];
                let mut raw = vec![0f32; t];
                let mut bs = vec![0f32; t];
                for j in 0..t {
                    let mut acc = 0f32;
                    for e in 0..g.dk {
                        acc += (inp.q(b, h, i, e) * scale) * (inp.kv(false, b, hk, j, e) * scale);
                    }
                    raw[j] = acc;
                    if op.softcap > 0.0 {
                        acc = ((f64::from(acc) / f64::from(op.softcap)).tanh() as f32) * op.softcap;
                    }
                    s[j] = acc;
                    bs[j] = bias(op, &g, &mask_at, np, [b, h, i, j]) as f32;
                }
                let with_bias: Vec<f32> = s.iter().zip(&bs).map(|(a, c)| a + c).collect();
                let p = softmax_row(&with_bias, &bs);
                for j in 0..t {
                    qk[((b * g.hq + h) * g.sq + i) * t + j] = match op.qk_mode {
                        // The specification's modes: 0 the raw product, 1 after softcap.
                        0 => raw[j],
                        1 => s[j],
                        2 => with_bias[j],
                        _ => p[j],
                    };
                }
                for e in 0..g.dv {
                    let mut acc = 0f32;
                    for (j, pj) in p.iter().enumerate() {
                        acc += pj * inp.kv(true, b, hk, j, e);
                    }
                    let at = if g.rank3 {
                        (b * g.sq + i) * g.hq * g.dv + h * g.dv + e
                    } else {
                        ((b * g.hq + h) * g.sq + i) * g.dv + e
                    };
                    y[at] = acc;
                }
            }
        }
    }
    let arr = |shape: Vec<usize>, v: Vec<f32>| -> R<Array> {
        Ok(Array::F32(ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| e.to_string())?))
    };
    let yshape =
        if g.rank3 { vec![g.batch, g.sq, g.hq * g.dv] } else { vec![g.batch, g.hq, g.sq, g.dv] };
    let mut out = vec![arr(yshape, y)?];
    for (value, d) in [(false, g.dk), (true, g.dv)] {
        let mut p = Vec::with_capacity(g.batch * g.hkv * t * d);
        for b in 0..g.batch {
            for h in 0..g.hkv {
                for j in 0..t {
                    for e in 0..d {
                        p.push(inp.kv(value, b, h, j, e));
                    }
                }
            }
        }
        out.push(arr(vec![g.batch, g.hkv, t, d], p)?);
    }
    out.push(arr(vec![g.batch, g.hq, g.sq, t], qk)?);
    out.truncate(node.outputs.len());
    Ok(out)
}

/// Softmax of one row of biased scores: shifted by the maximum (0 when it is −inf), a zero sum
/// taken as 1, and all zeros when every bias is −inf.
fn softmax_row(x: &[f32], bias: &[f32]) -> Vec<f32> {
    if bias.iter().all(|b| *b == f32::NEG_INFINITY) {
        return vec![0.0; x.len()];
    }
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let m = if m == f32::NEG_INFINITY { 0.0 } else { m };
    let e: Vec<f32> = x.iter().map(|v| f64::from(v - m).exp() as f32).collect();
    let s: f32 = e.iter().sum();
    let s = if s == 0.0 { 1.0 } else { s };
    e.iter().map(|v| v / s).collect()
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    let Op::Attention(op) = op else { return };
    a.push(format!("is_causal: int = {}", i64::from(op.is_causal)));
    if let Some(h) = op.q_heads {
        a.push(format!("q_num_heads: int = {h}"));
    }
    if let Some(h) = op.kv_heads {
        a.push(format!("kv_num_heads: int = {h}"));
    }
    if let Some(s) = op.scale {
        a.push(format!("scale: float = {}", crate::text::flt(s)));
    }
    if op.softcap != 0.0 {
        a.push(format!("softcap: float = {}", crate::text::flt(op.softcap)));
    }
    a.push(format!("qk_matmul_output_mode: int = {}", op.qk_mode));
    if op.left != -1 {
        a.push(format!("left_window_size: int = {}", op.left));
    }
    if op.right != -1 {
        a.push(format!("right_window_size: int = {}", op.right));
    }
}

/// Device lowering: not yet (the matrix engine could run the two products; the masks and the
/// per-row softmax guard are not lowered), so Attention runs on the host.
pub(crate) fn lower(_b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    Err(LowerError::at(&n.name, "Attention is not lowered to the device".to_string()))
}

/// Cost inputs: the two products' multiply-accumulates.
pub(crate) fn work(_op: &Op, inputs: &[Option<TensorType>], outputs: &[TensorType]) -> Work {
    let q: u64 =
        inputs.first().cloned().flatten().map_or(0, |t| t.shape.iter().product::<usize>() as u64);
    let y: u64 = outputs.first().map_or(0, |t| t.shape.iter().product::<usize>() as u64);
    let kv =
        inputs.get(1).cloned().flatten().map_or(1, |t| t.shape[t.shape.len() - 2].max(1) as u64);
    Work::Macs((q + y) * kv)
}

/// The inputs and outputs ONNX allows (Attention-23 to 25).
pub(crate) fn arity(_op_type: &str, opset: i64) -> Arity {
    if opset >= 24 { counts(3, 7, 1, 4) } else { counts(3, 6, 1, 4) }
}

/// No input determines the output shape.
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
}

/// Host lowering: each output element from the per-element formulas; a row's softmax
/// statistics (shift, sum, all-masked) are computed once per output element of Y, the scores
/// recomputed from Q and K where needed (host attention serves correctness, not speed).
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let Op::Attention(op) = &n.op else {
        return Err(LowerError::msg(super::misrouted(&n.op, FAMILY)));
    };
    let op = (**op).clone();
    let types: Vec<Option<TensorType>> =
        n.inputs.iter().map(|v| v.map(|v| b.ty(v)).transpose()).collect::<Result<_, _>>()?;
    let refs: Vec<Option<&TensorType>> = types.iter().map(Option::as_ref).collect();
    let g = geom(&op, &refs).map_err(|e| b.err(n, e))?;
    let inp = |i: usize| n.inputs.get(i).copied().flatten();
    let (qv, kv, vv) = (
        inp(0).unwrap_or(n.outputs[0]),
        inp(1).unwrap_or(n.outputs[0]),
        inp(2).unwrap_or(n.outputs[0]),
    );
    let (maskv, pkv, pvv, npv) = (inp(3), inp(4), inp(5), inp(6));
    let t = g.total_kv();
    let reps = g.hq / g.hkv;
    let scale = op.scale.map_or(1.0 / (g.dk as f64).sqrt(), f64::from).sqrt() as f32;

    // The present key/value element at (b, h, j, e) (index values), past first.
    let kv_at = |b: &mut HostBuilder<'_>,
                 value: bool,
                 bi: &str,
                 h: &str,
                 j: &str,
                 e: &str|
     -> Result<String, LowerError> {
        let (x, d) = if value { (vv, g.dv) } else { (kv, g.dk) };
        let p = if value { pvv } else { pkv };
        let load_cur = |b: &mut HostBuilder<'_>, j: &str| -> Result<String, LowerError> {
            if g.rank3 {
                let dd = b.idx(d);
                let c = b.iop("arith.muli", h, &dd);
                let c = b.iop("arith.addi", &c, e);
                b.load(x, &[bi.to_string(), j.to_string(), c])
            } else {
                b.load(x, &[bi.to_string(), h.to_string(), j.to_string(), e.to_string()])
            }
        };
        match p {
            Some(p) if g.past > 0 => {
                let past = b.idx(g.past);
                let z = b.idx(0);
                let is_past = b.let_(&format!("arith.cmpi ult, {j}, {past} : index"));
                let jp = b.let_(&format!("arith.select {is_past}, {j}, {z} : index"));
                let jc = b.iop("arith.subi", j, &past);
                let jc = b.let_(&format!("arith.select {is_past}, {z}, {jc} : index"));
                let a = b.load(p, &[bi.to_string(), h.to_string(), jp, e.to_string()])?;
                let c = load_cur(b, &jc)?;
                Ok(b.select(&is_past, &a, &c, "f32"))
            }
            _ => load_cur(b, j),
        }
    };
    let q_at = |b: &mut HostBuilder<'_>,
                bi: &str,
                h: &str,
                i: &str,
                e: &str|
     -> Result<String, LowerError> {
        if g.rank3 {
            let dd = b.idx(g.dk);
            let c = b.iop("arith.muli", h, &dd);
            let c = b.iop("arith.addi", &c, e);
            b.load(qv, &[bi.to_string(), i.to_string(), c])
        } else {
            b.load(qv, &[bi.to_string(), h.to_string(), i.to_string(), e.to_string()])
        }
    };
    // The score at (b, h, i, j), softcapped unless `raw`.
    let score_at = |b: &mut HostBuilder<'_>,
                    bi: &str,
                    h: &str,
                    i: &str,
                    j: &str,
                    raw: bool|
     -> Result<String, LowerError> {
        let r = b.idx(reps);
        let hk = b.iop("arith.divui", h, &r);
        let sc = b.f32c(scale);
        let z = b.f32c(0.0);
        let acc = b.fold_n(g.dk, &[z], &["f32"], &mut |b, e, acc| {
            let qe = q_at(b, bi, h, i, e)?;
            let ke = kv_at(b, false, bi, &hk, j, e)?;
            let qe = b.op2("arith.mulf", &qe, &sc, "f32");
            let ke = b.op2("arith.mulf", &ke, &sc, "f32");
            let m = b.op2("arith.mulf", &qe, &ke, "f32");
            Ok(vec![b.op2("arith.addf", &acc[0], &m, "f32")])
        })?;
        let mut s = acc[0].clone();
        if op.softcap > 0.0 && !raw {
            let c = b.f64c(f64::from(op.softcap));
            let d = b.f64_of(&s);
            let d = b.op2("arith.divf", &d, &c, "f64");
            let d = b.op1("math.tanh", &d, "f64");
            let d = b.f32_of(&d);
            let cf = b.f32c(op.softcap);
            s = b.op2("arith.mulf", &d, &cf, "f32");
        }
        Ok(s)
    };
    let score = |b: &mut HostBuilder<'_>, bi: &str, h: &str, i: &str, j: &str| {
        score_at(b, bi, h, i, j, false)
    };
    // The bias at (b, h, i, j), as `bias`.
    let bias_at = |b: &mut HostBuilder<'_>,
                   bi: &str,
                   h: &str,
                   i: &str,
                   j: &str|
     -> Result<String, LowerError> {
        let ninf = b.f32c(f32::NEG_INFINITY);
        let mut s = b.f32c(0.0);
        if let (Some(m), Some((ms, boolean))) = (maskv, &g.mask) {
            let r = ms.len();
            let full = [bi, h, i, j];
            let last = *ms.last().unwrap_or(&1);
            let mut idx = Vec::with_capacity(r);
            for (k, d) in ms.iter().enumerate() {
                let v = full[4 - r + k];
                idx.push(if k + 1 < r && *d == 1 { b.idx(0) } else { v.to_string() });
            }
            // Past the mask's last axis: padding (−inf); the load uses a clamped index.
            let lastc = b.idx(last);
            let inside = b.let_(&format!("arith.cmpi ult, {j}, {lastc} : index"));
            let z = b.idx(0);
            idx[r - 1] = b.let_(&format!("arith.select {inside}, {j}, {z} : index"));
            let mv = b.load(m, &idx)?;
            let v = if *boolean {
                let zb = b.int(DType::Bool, 0);
                let on = b.cmpi("ne", &mv, &zb, "i8");
                let zf = b.f32c(0.0);
                b.select(&on, &zf, &ninf, "f32")
            } else {
                mv
            };
            s = b.select(&inside, &v, &ninf, "f32");
        }
        let ii = b.let_(&format!("arith.index_cast {i} : index to i64"));
        let jj = b.let_(&format!("arith.index_cast {j} : index to i64"));
        let npval = match npv {
            Some(v) if g.nonpad => Some(b.load(v, &[bi.to_string()])?),
            _ => None,
        };
        let offset = match &npval {
            Some(nv) => {
                let sq = b.i64c(g.sq as i64);
                b.op2("arith.subi", nv, &sq, "i64")
            }
            None => b.i64c(g.past as i64),
        };
        let front = b.op2("arith.addi", &ii, &offset, "i64");
        let mut masked = b.let_("arith.constant false");
        if op.is_causal {
            let c = b.cmpi("sgt", &jj, &front, "i64");
            masked = b.op2("arith.ori", &masked, &c, "i1");
        }
        let diff = b.op2("arith.subi", &front, &jj, "i64");
        if op.left >= 0 {
            let l = b.i64c(op.left);
            let c = b.cmpi("sgt", &diff, &l, "i64");
            masked = b.op2("arith.ori", &masked, &c, "i1");
        }
        if op.right >= 0 {
            let r = b.i64c(op.right);
            let z = b.i64c(0);
            let nd = b.op2("arith.subi", &z, &diff, "i64");
            let c = b.cmpi("sgt", &nd, &r, "i64");
            masked = b.op2("arith.ori", &masked, &c, "i1");
        }
        if let Some(nv) = &npval {
            let c = b.cmpi("sge", &jj, nv, "i64");
            masked = b.op2("arith.ori", &masked, &c, "i1");
        }
        Ok(b.select(&masked, &ninf, &s, "f32"))
    };
    // The softmax probability at (b, h, i, j): row maximum and sum over every key.
    // The biased score at (b, h, i, j) and its bias.
    let biased = |b: &mut HostBuilder<'_>, bi: &str, h: &str, i: &str, j: &str| {
        let s = score(b, bi, h, i, j)?;
        let bs = bias_at(b, bi, h, i, j)?;
        Ok::<_, LowerError>((b.op2("arith.addf", &s, &bs, "f32"), bs))
    };
    // A row's softmax statistics, computed once per row: the shift (the maximum, 0 when it is
    // −inf), the sum of exponentials (1 when it is 0) and whether every bias is −inf.
    let row = |b: &mut HostBuilder<'_>, bi: &str, h: &str, i: &str| {
        let ninf = b.f32c(f32::NEG_INFINITY);
        let stats =
            b.fold_n(t, &[ninf.clone(), ninf.clone()], &["f32", "f32"], &mut |b, k, acc| {
                let (x, bs) = biased(b, bi, h, i, k)?;
                let m = b.op2("arith.maxnumf", &acc[0], &x, "f32");
                let bm = b.op2("arith.maxnumf", &acc[1], &bs, "f32");
                Ok(vec![m, bm])
            })?;
        let is_ninf = b.cmpf("oeq", &stats[0], &ninf, "f32");
        let zf = b.f32c(0.0);
        let m = b.select(&is_ninf, &zf, &stats[0], "f32");
        let sum = b.fold_n(t, std::slice::from_ref(&zf), &["f32"], &mut |b, k, acc| {
            let (x, _) = biased(b, bi, h, i, k)?;
            let e = exp_f32(b, &x, &m);
            Ok(vec![b.op2("arith.addf", &acc[0], &e, "f32")])
        })?;
        let one = b.f32c(1.0);
        let zero_sum = b.cmpf("oeq", &sum[0], &zf, "f32");
        let sum = b.select(&zero_sum, &one, &sum[0], "f32");
        let all_masked = b.cmpf("oeq", &stats[1], &ninf, "f32");
        Ok::<_, LowerError>((m, sum, all_masked))
    };
    // The softmax probability at (b, h, i, j), given its row's statistics.
    let prob = |b: &mut HostBuilder<'_>,
                (m, sum, all_masked): &(String, String, String),
                bi: &str,
                h: &str,
                i: &str,
                j: &str|
     -> Result<String, LowerError> {
        let (x, _) = biased(b, bi, h, i, j)?;
        let e = exp_f32(b, &x, m);
        let p = b.op2("arith.divf", &e, sum, "f32");
        // Every bias −inf: the row is all zeros.
        let zf = b.f32c(0.0);
        Ok(b.select(all_masked, &zf, &p, "f32"))
    };
    // Y.
    b.map_out(n.outputs[0], &mut |b, o| {
        let (bi, h, i, e) = if g.rank3 {
            let dv = b.idx(g.dv);
            let h = b.iop("arith.divui", &o[2], &dv);
            let e = b.iop("arith.remui", &o[2], &dv);
            (o[0].clone(), h, o[1].clone(), e)
        } else {
            (o[0].clone(), o[1].clone(), o[2].clone(), o[3].clone())
        };
        let r = b.idx(reps);
        let hk = b.iop("arith.divui", &h, &r);
        let stats = row(b, &bi, &h, &i)?;
        let z = b.f32c(0.0);
        let acc = b.fold_n(t, &[z], &["f32"], &mut |b, j, acc| {
            let p = prob(b, &stats, &bi, &h, &i, j)?;
            let v = kv_at(b, true, &bi, &hk, j, &e)?;
            let m = b.op2("arith.mulf", &p, &v, "f32");
            Ok(vec![b.op2("arith.addf", &acc[0], &m, "f32")])
        })?;
        Ok(acc[0].clone())
    })?;
    for (k, value) in [(1usize, false), (2, true)] {
        if let Some(out) = n.outputs.get(k) {
            b.map_out(*out, &mut |b, o| kv_at(b, value, &o[0], &o[1], &o[2], &o[3]))?;
        }
    }
    if let Some(out) = n.outputs.get(3) {
        let mode = op.qk_mode;
        b.map_out(*out, &mut |b, o| match mode {
            0 => score_at(b, &o[0], &o[1], &o[2], &o[3], true),
            1 => score(b, &o[0], &o[1], &o[2], &o[3]),
            2 => Ok(biased(b, &o[0], &o[1], &o[2], &o[3])?.0),
            _ => {
                let stats = row(b, &o[0], &o[1], &o[2])?;
                prob(b, &stats, &o[0], &o[1], &o[2], &o[3])
            }
        })?;
    }
    Ok(())
}

/// `e^(x − m)` of two `f32`s, the exponential in `f64` as the reference computes it.
fn exp_f32(b: &mut HostBuilder<'_>, x: &str, m: &str) -> String {
    let d = b.op2("arith.subf", x, m, "f32");
    let d = b.f64_of(&d);
    let e = b.op1("math.exp", &d, "f64");
    b.f32_of(&e)
}
