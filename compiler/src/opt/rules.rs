//! The rewrite rules: small, named, one-directional, grouped by topic. Each looks at one
//! e-node (and the analysis facts of its children) and proposes an equivalent expression,
//! which the runner adds and unions with the node's class; nothing is ever removed, so
//! extraction still sees every alternative. No rule is associative or commutative in general,
//! so the e-graph stays small (egg's backoff scheduler bounds anything that matches too often).
//!
//! Every rule has its own test (`tests/tests/all/opt.rs`): a start graph in the ONNX text
//! syntax, the expected graph after the rule, and the interpreter's outputs before and after.

use egg::{Applier, Id, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};

use super::{EG, Facts, Node};
use crate::ir::{AutoPad, BinaryOp, DType, Op, PadMode, Tensor, TensorType};

/// An expression a rule builds.
#[derive(Clone, Debug)]
pub enum Build {
    /// An existing class.
    Class(Id),
    /// A new constant.
    Const(Tensor),
    /// An operation on built inputs (`None`: omitted optional input).
    Op(Op, &'static str, Vec<Option<Build>>),
}

/// A rule.
pub struct Rule {
    /// Name (unique).
    pub name: &'static str,
    /// Topic.
    pub topic: &'static str,
    /// What it does.
    pub doc: &'static str,
    /// Given a class and one of its nodes, the equivalent expression, if the rule applies.
    pub apply: fn(&EG, Id, &Node) -> Option<Build>,
}

fn op<'a>(eg: &'a EG, n: &'a Node) -> Option<(&'a Op, &'a str, &'a [Id])> {
    match n {
        Node::Op(k, ch) => {
            let o = &eg.analysis.ops[*k as usize];
            Some((&o.op, o.op_type.as_str(), ch))
        }
        _ => None,
    }
}

/// The operations in class `c`.
fn producers(eg: &EG, c: Id) -> impl Iterator<Item = (&Op, &[Id])> {
    eg[c].nodes.iter().filter_map(move |n| op(eg, n).map(|(o, _, ch)| (o, ch)))
}

fn ty(eg: &EG, c: Id) -> Option<&TensorType> {
    eg[c].data.ty.as_ref()
}

fn value(eg: &EG, c: Id) -> Option<&Tensor> {
    eg[c].data.value.as_ref()
}

fn f32_value(eg: &EG, c: Id) -> Option<Vec<f32>> {
    value(eg, c).filter(|t| t.dtype == DType::F32).map(Tensor::f32s)
}

fn i64_value(eg: &EG, c: Id) -> Option<Vec<i64>> {
    value(eg, c).filter(|t| t.dtype == DType::I64).map(Tensor::i64s)
}

fn absent(eg: &EG, c: Id) -> bool {
    eg[c].nodes.iter().any(|n| matches!(n, Node::Absent))
}

fn all_equal(v: &[f32], x: f32) -> bool {
    !v.is_empty() && v.iter().all(|y| *y == x)
}

fn same_type(eg: &EG, a: Id, b: Id) -> bool {
    ty(eg, a).is_some() && ty(eg, a) == ty(eg, b)
}

fn shape_const(shape: &[usize]) -> Build {
    let v: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
    Build::Const(Tensor::from_i64(vec![v.len()], &v))
}

fn norm_perm(perm: &[i64], rank: usize) -> Vec<usize> {
    if perm.is_empty() {
        (0..rank).rev().collect()
    } else {
        perm.iter()
            .map(|p| if *p < 0 { (*p + rank as i64) as usize } else { *p as usize })
            .collect()
    }
}

fn transpose_of(eg: &EG, c: Id) -> Option<(Vec<usize>, Id)> {
    producers(eg, c).find_map(|(o, ch)| match o {
        Op::Transpose { perm } => {
            let rank = ty(eg, ch[0])?.shape.len();
            Some((norm_perm(perm, rank), ch[0]))
        }
        _ => None,
    })
}

fn is_reshape_like(o: &Op) -> bool {
    matches!(o, Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. })
}

fn is_unary_elementwise(o: &Op) -> bool {
    matches!(
        o,
        Op::Unary(_)
            | Op::LeakyRelu { .. }
            | Op::HardSigmoid { .. }
            | Op::Gelu { .. }
            | Op::Clip { .. }
    )
}

// ---- identity and no-op removal -------------------------------------------------------------

fn identity(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    match op(eg, n)? {
        (Op::Identity, _, ch) => Some(Build::Class(ch[0])),
        _ => None,
    }
}

fn noop_reshape(eg: &EG, c: Id, n: &Node) -> Option<Build> {
    let (o, _, ch) = op(eg, n)?;
    (is_reshape_like(o) && same_type(eg, c, ch[0])).then_some(Build::Class(ch[0]))
}

fn noop_transpose(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::Transpose { perm }, _, ch) = op(eg, n)? else { return None };
    let p = norm_perm(perm, ty(eg, ch[0])?.shape.len());
    p.iter().enumerate().all(|(i, x)| i == *x).then_some(Build::Class(ch[0]))
}

fn noop_cast(eg: &EG, c: Id, n: &Node) -> Option<Build> {
    let (Op::Cast { .. }, _, ch) = op(eg, n)? else { return None };
    same_type(eg, c, ch[0]).then_some(Build::Class(ch[0]))
}

/// `x + 0`, `x - 0`, `x · 1`, `x / 1` (when the constant does not broadcast `x` larger).
fn noop_arith(eg: &EG, c: Id, n: &Node) -> Option<Build> {
    let (Op::Binary(b), _, ch) = op(eg, n)? else { return None };
    let (x, k) = (ch[0], ch[1]);
    let neutral = |id: Id, v: f32| f32_value(eg, id).is_some_and(|t| all_equal(&t, v));
    let keep = match b {
        BinaryOp::Add => {
            if neutral(k, 0.0) {
                Some(x)
            } else if neutral(x, 0.0) {
                Some(k)
            } else {
                None
            }
        }
        BinaryOp::Mul => {
            if neutral(k, 1.0) {
                Some(x)
            } else if neutral(x, 1.0) {
                Some(k)
            } else {
                None
            }
        }
        BinaryOp::Sub => neutral(k, 0.0).then_some(x),
        BinaryOp::Div => neutral(k, 1.0).then_some(x),
        _ => None,
    }?;
    same_type(eg, c, keep).then_some(Build::Class(keep))
}

// ---- reshape and transpose chains ---------------------------------------------------------

fn reshape_chain(eg: &EG, c: Id, n: &Node) -> Option<Build> {
    let (o, _, ch) = op(eg, n)?;
    if !is_reshape_like(o) {
        return None;
    }
    let inner = producers(eg, ch[0]).find(|(o2, _)| is_reshape_like(o2))?.1[0];
    let out = ty(eg, c)?.shape.clone();
    let allowzero = out.contains(&0);
    Some(Build::Op(
        Op::Reshape { allowzero },
        "Reshape",
        vec![Some(Build::Class(inner)), Some(shape_const(&out))],
    ))
}

fn transpose_chain(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::Transpose { perm }, _, ch) = op(eg, n)? else { return None };
    let q = norm_perm(perm, ty(eg, ch[0])?.shape.len());
    let (p, x) = transpose_of(eg, ch[0])?;
    let r: Vec<i64> = q.iter().map(|j| p[*j] as i64).collect();
    Some(Build::Op(Op::Transpose { perm: r }, "Transpose", vec![Some(Build::Class(x))]))
}

// ---- layout: transposes sunk through element-wise operations ------------------------------

fn transpose_through_unary(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (o, op_type, ch) = op(eg, n)?;
    if !is_unary_elementwise(o) {
        return None;
    }
    // Extra inputs (Clip bounds) must be scalars to commute with the transpose.
    if ch[1..].iter().any(|b| {
        !absent(eg, *b) && ty(eg, *b).is_none_or(|t| t.shape.iter().product::<usize>() != 1)
    }) {
        return None;
    }
    let (p, x) = transpose_of(eg, ch[0])?;
    let mut args = vec![Some(Build::Class(x))];
    args.extend(ch[1..].iter().map(|b| if absent(eg, *b) { None } else { Some(Build::Class(*b)) }));
    let inner = Build::Op(o.clone(), leak(op_type)?, args);
    let perm = p.iter().map(|x| *x as i64).collect();
    Some(Build::Op(Op::Transpose { perm }, "Transpose", vec![Some(inner)]))
}

fn transpose_through_binary(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::Binary(b), op_type, ch) = op(eg, n)? else { return None };
    let (pa, a) = transpose_of(eg, ch[0])?;
    let (pb, bb) = transpose_of(eg, ch[1])?;
    if pa != pb || !same_type(eg, a, bb) {
        return None;
    }
    let inner = Build::Op(
        Op::Binary(*b),
        leak(op_type)?,
        vec![Some(Build::Class(a)), Some(Build::Class(bb))],
    );
    let perm = pa.iter().map(|x| *x as i64).collect();
    Some(Build::Op(Op::Transpose { perm }, "Transpose", vec![Some(inner)]))
}

/// The registry's own `'static` name for ONNX op type `s` (every op the importer converts has
/// one); `None` stops a rewrite rather than invent a name.
fn leak(s: &str) -> Option<&'static str> {
    crate::ops::REGISTRY.iter().flat_map(|d| d.onnx.iter().copied()).find(|n| *n == s)
}

// ---- arithmetic the device prefers --------------------------------------------------------

/// `x / c` → `x · (1/c)`: division is a slow vector operation; the cost model decides.
fn div_to_mul(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::Binary(BinaryOp::Div), _, ch) = op(eg, n)? else { return None };
    let t = value(eg, ch[1]).filter(|t| t.dtype == DType::F32)?;
    let v = t.f32s();
    // Only where the reciprocal is an ordinary number: for a subnormal divisor 1/c overflows
    // (x/c finite, x·(1/c) infinite), and for a huge one it underflows.
    let inv: Vec<f32> = v.iter().map(|x| 1.0 / x).collect();
    if v.iter().zip(&inv).any(|(x, r)| !x.is_normal() || !r.is_normal()) {
        return None;
    }
    Some(Build::Op(
        Op::Binary(BinaryOp::Mul),
        "Mul",
        vec![
            Some(Build::Class(ch[0])),
            Some(Build::Const(Tensor::from_f32(t.shape.clone(), &inv))),
        ],
    ))
}

// ---- fusion ------------------------------------------------------------------------------

/// Whether class `c` holds the scalar constant `v` (to within rounding of the exporter).
fn is_scalar(eg: &EG, c: Id, v: f32) -> bool {
    f32_value(eg, c).is_some_and(|t| t.len() == 1 && (t[0] - v).abs() <= 1e-6 * v.abs().max(1.0))
}

/// The operands of a commutative binary `op` in class `c` with one side the scalar `v`: the
/// other side.
fn with_scalar(eg: &EG, c: Id, op: BinaryOp, v: f32) -> Vec<Id> {
    producers(eg, c)
        .filter_map(|(o, ch)| match o {
            Op::Binary(b) if *b == op => {
                if is_scalar(eg, ch[1], v) {
                    Some(ch[0])
                } else if is_scalar(eg, ch[0], v) {
                    Some(ch[1])
                } else {
                    None
                }
            }
            _ => None,
        })
        .collect()
}

/// Whether class `a` is `1 + erf(x / √2)` (either order of the addition, division or
/// multiplication by 1/√2).
fn is_erf_term(eg: &EG, x: Id, a: Id) -> bool {
    let sqrt2 = std::f32::consts::SQRT_2;
    with_scalar(eg, a, BinaryOp::Add, 1.0).into_iter().any(|e| {
        producers(eg, e).any(|(o, ech)| {
            if !matches!(o, Op::Unary(crate::ir::UnaryOp::Erf)) {
                return false;
            }
            let d = ech[0];
            let by_div = producers(eg, d).any(|(o, dch)| {
                matches!(o, Op::Binary(BinaryOp::Div))
                    && eg.find(dch[0]) == x
                    && is_scalar(eg, dch[1], sqrt2)
            });
            by_div
                || with_scalar(eg, d, BinaryOp::Mul, 1.0 / sqrt2).iter().any(|y| eg.find(*y) == x)
        })
    })
}

/// GELU as exporters write it, `x · (0.5 · (1 + erf(x / √2)))` or `(x · (1 + erf(x / √2))) ·
/// 0.5` → `Gelu(x)`: one element-wise kernel instead of five.
fn gelu_from_erf(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::Binary(BinaryOp::Mul), _, ch) = op(eg, n)? else { return None };
    let gelu = |x: Id| Build::Op(Op::Gelu { tanh: false }, "Gelu", vec![Some(Build::Class(x))]);
    for (x, m) in [(ch[0], ch[1]), (ch[1], ch[0])] {
        // x · (0.5 · A)
        let x = eg.find(x);
        if with_scalar(eg, m, BinaryOp::Mul, 0.5).into_iter().any(|a| is_erf_term(eg, x, a)) {
            return Some(gelu(x));
        }
    }
    // (x · A) · 0.5
    let half_side = if is_scalar(eg, ch[1], 0.5) {
        Some(ch[0])
    } else if is_scalar(eg, ch[0], 0.5) {
        Some(ch[1])
    } else {
        None
    }?;
    for (o, pch) in producers(eg, half_side) {
        if !matches!(o, Op::Binary(BinaryOp::Mul)) {
            continue;
        }
        for (x, a) in [(pch[0], pch[1]), (pch[1], pch[0])] {
            let x = eg.find(x);
            if is_erf_term(eg, x, a) {
                return Some(gelu(x));
            }
        }
    }
    None
}

// ---- folding into convolution and Gemm weights --------------------------------------------

/// A convolution with constant weights (and bias) in class `c`: `(x, w, bias, op)`.
fn conv_of(eg: &EG, c: Id) -> Option<(Id, Tensor, Vec<f32>, Op)> {
    producers(eg, c).find_map(|(o, ch)| {
        if !matches!(o, Op::Conv { .. }) {
            return None;
        }
        let w = value(eg, ch[1]).filter(|t| t.dtype == DType::F32)?.clone();
        let cout = w.shape[0];
        let bias = match ch.get(2) {
            Some(b) if !absent(eg, *b) => f32_value(eg, *b)?,
            _ => vec![0.0; cout],
        };
        Some((ch[0], w, bias, o.clone()))
    })
}

/// A constant that is one value per output channel of a `[N, C, ...]` result (or a scalar).
fn per_channel(eg: &EG, k: Id, out_rank: usize, channels: usize) -> Option<Vec<f32>> {
    let t = value(eg, k).filter(|t| t.dtype == DType::F32)?;
    let v = t.f32s();
    if v.len() == 1 {
        return Some(vec![v[0]; channels]);
    }
    if t.shape.len() > out_rank || v.len() != channels {
        return None;
    }
    // The channel axis (1 of the result) must be the constant's only non-unit axis.
    let pad = out_rank - t.shape.len();
    let ok = t
        .shape
        .iter()
        .enumerate()
        .all(|(i, d)| if i + pad == 1 { *d == channels } else { *d == 1 });
    ok.then_some(v)
}

/// The convolution with weights scaled per output channel and a new bias; `None` when a scale,
/// a folded weight or the bias is not finite, where folding would change the result (a zero
/// weight times an infinite scale is NaN, while the unfolded graph gives an infinity).
fn rebuild_conv(x: Id, w: &Tensor, scale: &[f32], bias: Vec<f32>, o: Op) -> Option<Build> {
    let per = w.len() / scale.len().max(1);
    let wv: Vec<f32> = w.f32s().iter().enumerate().map(|(i, v)| v * scale[i / per]).collect();
    if !scale.iter().chain(&wv).chain(&bias).all(|v| v.is_finite()) {
        return None;
    }
    let cout = scale.len();
    Some(Build::Op(
        o,
        "Conv",
        vec![
            Some(Build::Class(x)),
            Some(Build::Const(Tensor::from_f32(w.shape.clone(), &wv))),
            Some(Build::Const(Tensor::from_f32(vec![cout], &bias))),
        ],
    ))
}

fn batchnorm_into_conv(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::BatchNorm { epsilon }, _, ch) = op(eg, n)? else { return None };
    let (x, w, b, o) = conv_of(eg, ch[0])?;
    let [s, bb, m, v] = [1, 2, 3, 4].map(|i| ch.get(i).and_then(|id| f32_value(eg, *id)));
    let (s, bb, m, v) = (s?, bb?, m?, v?);
    let cout = w.shape[0];
    if [s.len(), bb.len(), m.len(), v.len()] != [cout; 4] {
        return None;
    }
    let scale: Vec<f32> = (0..cout).map(|i| s[i] / (v[i] + epsilon).sqrt()).collect();
    let bias: Vec<f32> = (0..cout).map(|i| (b[i] - m[i]) * scale[i] + bb[i]).collect();
    rebuild_conv(x, &w, &scale, bias, o)
}

fn mul_into_conv(eg: &EG, c: Id, n: &Node) -> Option<Build> {
    let (Op::Binary(BinaryOp::Mul), _, ch) = op(eg, n)? else { return None };
    let rank = ty(eg, c)?.shape.len();
    for (conv, k) in [(ch[0], ch[1]), (ch[1], ch[0])] {
        if let Some((x, w, b, o)) = conv_of(eg, conv)
            && same_type(eg, c, conv)
            && let Some(s) = per_channel(eg, k, rank, w.shape[0])
        {
            let bias = b.iter().zip(&s).map(|(b, s)| b * s).collect();
            return rebuild_conv(x, &w, &s, bias, o);
        }
    }
    None
}

fn add_into_conv(eg: &EG, c: Id, n: &Node) -> Option<Build> {
    let (Op::Binary(BinaryOp::Add), _, ch) = op(eg, n)? else { return None };
    let rank = ty(eg, c)?.shape.len();
    for (conv, k) in [(ch[0], ch[1]), (ch[1], ch[0])] {
        if let Some((x, w, b, o)) = conv_of(eg, conv)
            && same_type(eg, c, conv)
            && let Some(a) = per_channel(eg, k, rank, w.shape[0])
        {
            let bias = b.iter().zip(&a).map(|(b, a)| b + a).collect();
            return rebuild_conv(x, &w, &vec![1.0; w.shape[0]], bias, o);
        }
    }
    None
}

/// `MatMul(a, B) + c` with 2-D operands and `c` a constant row → `Gemm(a, B, c)`.
fn matmul_add_to_gemm(eg: &EG, c: Id, n: &Node) -> Option<Build> {
    let (Op::Binary(BinaryOp::Add), _, ch) = op(eg, n)? else { return None };
    for (mm, k) in [(ch[0], ch[1]), (ch[1], ch[0])] {
        let Some((_, args)) = producers(eg, mm).find(|(o, _)| matches!(o, Op::MatMul)) else {
            continue;
        };
        let (a, b) = (args[0], args[1]);
        let (ta, tb, tc) = (ty(eg, a)?, ty(eg, b)?, ty(eg, k)?);
        let nn = *tb.shape.last()?;
        let row = tc.shape.iter().product::<usize>() == nn && tc.shape.last() == Some(&nn);
        if ta.shape.len() == 2
            && tb.shape.len() == 2
            && row
            && same_type(eg, c, mm)
            && value(eg, k).is_some()
        {
            let op = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false };
            return Some(Build::Op(
                op,
                "Gemm",
                vec![Some(Build::Class(a)), Some(Build::Class(b)), Some(Build::Class(k))],
            ));
        }
    }
    None
}

// ---- padding folded into windows ----------------------------------------------------------

/// Spatial pads of a constant `Pad` of class `c` with fill `fill`: `(x, begin, end)`.
fn pad_of(eg: &EG, c: Id, fill: f32) -> Option<(Id, Vec<usize>, Vec<usize>)> {
    producers(eg, c).find_map(|(o, ch)| {
        let Op::Pad { mode: PadMode::Constant, pads, value: attr_value } = o else { return None };
        let rank = ty(eg, ch[0])?.shape.len();
        let pads = match ch.get(1) {
            Some(p) if !absent(eg, *p) => i64_value(eg, *p)?,
            _ => pads.clone()?,
        };
        let v = match ch.get(2) {
            Some(p) if !absent(eg, *p) => *f32_value(eg, *p)?.first()?,
            _ if eg.analysis.opset < 11 => *attr_value,
            _ => 0.0,
        };
        if ch.get(3).is_some_and(|a| !absent(eg, *a))
            || pads.len() != 2 * rank
            || pads.iter().any(|p| *p < 0)
            || pads[0] != 0
            || pads[1] != 0
            || pads[rank] != 0
            || pads[rank + 1] != 0
            || v != fill
        {
            return None;
        }
        let begin = pads[2..rank].iter().map(|p| *p as usize).collect();
        let end = pads[rank + 2..].iter().map(|p| *p as usize).collect();
        Some((ch[0], begin, end))
    })
}

fn add_pads(w: &crate::ir::Window, begin: &[usize], end: &[usize]) -> Option<crate::ir::Window> {
    if w.auto_pad != AutoPad::NotSet {
        return None;
    }
    let nd = begin.len();
    let mut pads = if w.pads.is_empty() { vec![0; 2 * nd] } else { w.pads.clone() };
    if pads.len() != 2 * nd {
        return None;
    }
    for i in 0..nd {
        pads[i] += begin[i];
        pads[nd + i] += end[i];
    }
    Some(crate::ir::Window { pads, ..w.clone() })
}

fn pad_into_conv(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::Conv { window, group }, _, ch) = op(eg, n)? else { return None };
    let (x, begin, end) = pad_of(eg, ch[0], 0.0)?;
    let window = add_pads(window, &begin, &end)?;
    let mut args = vec![Some(Build::Class(x))];
    args.extend(ch[1..].iter().map(|b| if absent(eg, *b) { None } else { Some(Build::Class(*b)) }));
    Some(Build::Op(Op::Conv { window, group: *group }, "Conv", args))
}

fn pad_into_pool(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::Pool { max, window, count_include_pad }, op_type, ch) = op(eg, n)? else {
        return None;
    };
    // Max pooling pads with -inf; average pooling with zeros that count.
    let (x, begin, end) = if *max {
        pad_of(eg, ch[0], f32::NEG_INFINITY)?
    } else if *count_include_pad {
        pad_of(eg, ch[0], 0.0)?
    } else {
        return None;
    };
    if window.ceil_mode {
        return None;
    }
    let window = add_pads(window, &begin, &end)?;
    let name = if op_type == "MaxPool" { "MaxPool" } else { "AveragePool" };
    Some(Build::Op(
        Op::Pool { max: *max, window, count_include_pad: *count_include_pad },
        name,
        vec![Some(Build::Class(x))],
    ))
}

/// Every rule, in application order.
pub fn all() -> Vec<Rule> {
    vec![
        Rule { name: "identity", topic: "no-ops", doc: "Identity(x) → x", apply: identity },
        Rule {
            name: "noop-reshape",
            topic: "no-ops",
            doc: "a reshape (Reshape, Flatten, Squeeze, Unsqueeze) to the same shape → x",
            apply: noop_reshape,
        },
        Rule {
            name: "noop-transpose",
            topic: "no-ops",
            doc: "Transpose with the identity permutation → x",
            apply: noop_transpose,
        },
        Rule {
            name: "noop-cast",
            topic: "no-ops",
            doc: "Cast to the input's type → x",
            apply: noop_cast,
        },
        Rule {
            name: "noop-arith",
            topic: "no-ops",
            doc: "x+0, 0+x, x−0, x·1, 1·x, x/1 → x, when the constant broadcasts nothing",
            apply: noop_arith,
        },
        Rule {
            name: "reshape-chain",
            topic: "reshape/transpose",
            doc: "a reshape of a reshape → one Reshape",
            apply: reshape_chain,
        },
        Rule {
            name: "transpose-chain",
            topic: "reshape/transpose",
            doc: "Transpose(Transpose(x, p), q) → Transpose(x, p∘q)",
            apply: transpose_chain,
        },
        Rule {
            name: "transpose-through-unary",
            topic: "layout",
            doc: "f(Transpose(x)) → Transpose(f(x)) for element-wise f",
            apply: transpose_through_unary,
        },
        Rule {
            name: "transpose-through-binary",
            topic: "layout",
            doc: "Transpose(a, p) ∘ Transpose(b, p) → Transpose(a ∘ b, p)",
            apply: transpose_through_binary,
        },
        Rule {
            name: "div-to-mul",
            topic: "device arithmetic",
            doc: "x / c → x · (1/c) when c and 1/c are normal numbers (division runs at the vector engine's slow rate)",
            apply: div_to_mul,
        },
        Rule {
            name: "batchnorm-into-conv",
            topic: "weight folding",
            doc: "BatchNormalization(Conv(x, w, b)) → Conv(x, w·s, (b−m)·s + β), when every folded value is finite",
            apply: batchnorm_into_conv,
        },
        Rule {
            name: "mul-into-conv",
            topic: "weight folding",
            doc: "Conv(x, w, b) · c → Conv(x, w·c, b·c), c scalar or per channel, when every folded value is finite",
            apply: mul_into_conv,
        },
        Rule {
            name: "add-into-conv",
            topic: "weight folding",
            doc: "Conv(x, w, b) + c → Conv(x, w, b + c), c scalar or per channel, when every folded value is finite",
            apply: add_into_conv,
        },
        Rule {
            name: "matmul-add-to-gemm",
            topic: "weight folding",
            doc: "MatMul(a, B) + c → Gemm(a, B, c), 2-D operands, constant row c",
            apply: matmul_add_to_gemm,
        },
        Rule {
            name: "gelu-from-erf",
            topic: "fusion",
            doc: "x·(0.5·(1+erf(x/√2))) or (x·(1+erf(x/√2)))·0.5 → Gelu(x): one kernel instead of five",
            apply: gelu_from_erf,
        },
        Rule {
            name: "pad-into-conv",
            topic: "padding",
            doc: "Conv(Pad(x, zeros on H and W)) → Conv with the pads added",
            apply: pad_into_conv,
        },
        Rule {
            name: "pad-into-pool",
            topic: "padding",
            doc: "MaxPool(Pad(x, −∞)), AveragePool(Pad(x, 0)) counting pads → the pool with the pads",
            apply: pad_into_pool,
        },
    ]
}

struct Search(fn(&EG, Id, &Node) -> Option<Build>);
struct Apply(fn(&EG, Id, &Node) -> Option<Build>);

impl Searcher<Node, Facts> for Search {
    fn search_eclass_with_limit(
        &self,
        eg: &EG,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, Node>> {
        // Rewrites fire only on typed classes: an untyped one (downstream of an unsupported
        // node) has nothing to preserve the type of.
        if limit == 0 || eg[eclass].data.ty.is_none() {
            return None;
        }
        let hit = eg[eclass].nodes.iter().any(|n| (self.0)(eg, eclass, n).is_some());
        hit.then(|| SearchMatches { eclass, substs: vec![Subst::default()], ast: None })
    }

    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

/// Adds a built expression; returns its class.
pub fn build(eg: &mut EG, b: &Build) -> Option<Id> {
    Some(match b {
        Build::Class(c) => eg.find(*c),
        Build::Const(t) => {
            let k = eg.analysis.constant(t.clone());
            eg.add(Node::Const(k))
        }
        Build::Op(o, op_type, args) => {
            let mut ch = Vec::with_capacity(args.len());
            for a in args {
                ch.push(match a {
                    Some(a) => build(eg, a)?,
                    None => eg.add(Node::Absent),
                });
            }
            let k = eg.analysis.op(o.clone(), op_type, 1);
            eg.add(Node::Op(k, ch))
        }
    })
}

impl Applier<Node, Facts> for Apply {
    fn apply_one(
        &self,
        eg: &mut EG,
        eclass: Id,
        _subst: &Subst,
        _ast: Option<&egg::PatternAst<Node>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        let want = eg[eclass].data.ty.clone();
        if want.is_none() {
            return vec![];
        }
        let nodes = eg[eclass].nodes.clone();
        let builds: Vec<Build> = nodes.iter().filter_map(|n| (self.0)(eg, eclass, n)).collect();
        let mut changed = vec![];
        for b in builds {
            // The replacement must have exactly the class's type: a rule that would change it
            // is wrong for this match and is not applied.
            if let Some(id) = build(eg, &b)
                && eg[id].data.ty == want
                && eg.union(eclass, id)
            {
                changed.push(id);
            }
        }
        changed
    }
}

/// The rules as egg rewrites, optionally only those named in `only`.
pub fn rewrites_of(only: Option<&[&str]>) -> Vec<Rewrite<Node, Facts>> {
    all()
        .into_iter()
        .filter(|r| only.is_none_or(|o| o.contains(&r.name)))
        .map(|r| {
            Rewrite::new(r.name, Search(r.apply), Apply(r.apply))
                .expect("rules bind no pattern variables")
        })
        .collect()
}

/// Every rule as an egg rewrite.
pub fn rewrites() -> Vec<Rewrite<Node, Facts>> {
    rewrites_of(None)
}

/// The book's rule table (`book/src/compiler/rules.md`), generated from [`all`] so it cannot go
/// stale; a test compares it with the committed page.
pub fn book_page() -> String {
    let mut out = String::from(
        "# Optimizer rules\n\n<!-- Generated from compiler/src/opt/rules.rs by \
         `UPDATE_EXPECT=1 cargo test -p accelc-tests book`; do not edit. -->\n\n\
         Every rule of the e-graph optimizer, in application order, by topic. See \
         [the optimizer](optimizer.md) for how they are applied and extracted.\n\n\
         | topic | rule | rewrite |\n|---|---|---|\n",
    );
    let mut last = "";
    for r in all() {
        let topic = if r.topic == last { "" } else { r.topic };
        last = r.topic;
        out.push_str(&format!("| {topic} | `{}` | {} |\n", r.name, r.doc));
    }
    out
}
