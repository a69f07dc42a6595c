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

// ---- quantization: QDQ regions into integer kernels ---------------------------------------
//
// onnxruntime's quantizer writes quantized models as float graphs wrapped in QuantizeLinear /
// DequantizeLinear pairs ("QDQ"). `Q(Conv(DQ(x), DQ(w), DQ(b)))` becomes one integer kernel,
// `QConv`: int8/uint8 in, int32 accumulation with the bias, requantisation by a fixed-point
// multiplier and shift to the output's scale and zero point. Unlike the rules above this is
// not an exact equality: the float graph rounds differently (its sums in float, its requant
// in float). It is the quantized model's intended arithmetic, the one every int8 runtime
// uses, within a few output steps of onnxruntime; the integer reference then computes the
// same integers as the device, bit for bit.

/// A scale (positive, normal f32 scalar) and zero point (8-bit scalar; absent: uint8 0) of a
/// per-tensor Quantize/DequantizeLinear.
fn qparams(eg: &EG, s: Id, z: Option<&Id>) -> Option<(f32, i64, DType)> {
    let scale = f32_value(eg, s).filter(|v| v.len() == 1)?[0];
    if !(scale.is_normal() && scale > 0.0) {
        return None;
    }
    match z.filter(|z| !absent(eg, **z)) {
        None => Some((scale, 0, DType::U8)),
        Some(z) => {
            let t = value(eg, *z).filter(|t| matches!(t.dtype, DType::U8 | DType::I8))?;
            let v = t.i64s();
            (v.len() == 1).then(|| (scale, v[0], t.dtype))
        }
    }
}

fn int_range(dt: DType) -> (i64, i64) {
    if dt == DType::I8 { (-128, 127) } else { (0, 255) }
}

/// `x` of a per-tensor `DequantizeLinear(x, scale, zp)` in class `c` with an 8-bit `x`.
fn dq_input(eg: &EG, c: Id) -> Option<(Id, f32, i64, DType)> {
    producers(eg, c).find_map(|(o, ch)| {
        if !matches!(o, Op::DequantizeLinear { .. }) {
            return None;
        }
        let (s, z, dt) = qparams(eg, ch[1], ch.get(2))?;
        let xt = ty(eg, ch[0])?;
        (xt.dtype == dt).then_some((ch[0], s, z, dt))
    })
}

/// Weights minus their zero points (up to ±255, so not always int8), `[Cout, ...]`.
struct Wide {
    /// 8-bit values minus 8-bit zero points fit 16 bits (a quarter of the memory `i64` took:
    /// resnet18's largest layer held 38 MB here).
    values: Vec<i16>,
    shape: Vec<usize>,
}

/// An 8-bit tensor's element: `b` as int8 or uint8.
fn byte_value(dtype: DType, b: u8) -> i64 {
    if dtype == DType::I8 { i64::from(b as i8) } else { i64::from(b) }
}

/// Constant 8-bit weights of a `DequantizeLinear` in class `c`, per tensor or per output
/// channel (axis 0 of `[Cout, ...]`): the values minus their zero points and the scale of
/// each of the `cout` channels.
fn dq_weights(eg: &EG, c: Id, cout: usize) -> Option<(Wide, Vec<f64>)> {
    producers(eg, c).find_map(|(o, ch)| {
        let Op::DequantizeLinear { axis } = o else { return None };
        let w = value(eg, ch[0]).filter(|t| matches!(t.dtype, DType::U8 | DType::I8))?;
        let scales = f32_value(eg, ch[1])?;
        let zps = match ch.get(2).filter(|z| !absent(eg, **z)) {
            Some(z) => value(eg, *z)?.i64s(),
            None => vec![0; scales.len()],
        };
        let per = scales.len() == cout && (*axis == 0 || scales.len() == 1);
        if !(scales.len() == 1 || per)
            || zps.len() != scales.len()
            || w.shape.first() != Some(&cout)
        {
            return None;
        }
        if !scales.iter().all(|s| s.is_normal() && *s > 0.0) {
            return None;
        }
        let inner = w.len() / cout.max(1);
        let mut out = Vec::with_capacity(w.len());
        // Channel by channel (a division per weight was most of this rule's time), each
        // zero point checked once: 8-bit values minus it then fit 16 bits.
        for (ch, row) in w.data.chunks(inner.max(1)).enumerate() {
            let zp = zps[if scales.len() == 1 { 0 } else { ch }];
            let zp = i16::try_from(zp).ok().filter(|z| (-32_000..=32_000).contains(z))?;
            if w.dtype == DType::I8 {
                out.extend(row.iter().map(|b| i16::from(*b as i8) - zp));
            } else {
                out.extend(row.iter().map(|b| i16::from(*b) - zp));
            }
        }
        let sc = (0..cout).map(|i| f64::from(scales[if scales.len() == 1 { 0 } else { i }]));
        Some((Wide { values: out, shape: w.shape.clone() }, sc.collect()))
    })
}

/// Constant 8-bit weights `[K, N]` of a `DequantizeLinear` in class `c` (a MatMul's B, or
/// Gemm's without `transB`: per tensor or per column, axis 1), as [`dq_weights`] gives
/// them for `[N, K]`: transposed, minus their zero points, and the scale of each column.
fn dq_weights_kn(eg: &EG, c: Id, n: usize) -> Option<(Wide, Vec<f64>)> {
    producers(eg, c).find_map(|(o, ch)| {
        let Op::DequantizeLinear { axis } = o else { return None };
        let w = value(eg, ch[0]).filter(|t| matches!(t.dtype, DType::U8 | DType::I8))?;
        if w.shape.len() != 2 || w.shape[1] != n {
            return None;
        }
        let k = w.shape[0];
        let scales = f32_value(eg, ch[1])?;
        let zps = match ch.get(2).filter(|z| !absent(eg, **z)) {
            Some(z) => value(eg, *z)?.i64s(),
            None => vec![0; scales.len()],
        };
        let per = scales.len() == n && (*axis == 1 || *axis == -1);
        if !(scales.len() == 1 || per) || zps.len() != scales.len() {
            return None;
        }
        if !scales.iter().all(|s| s.is_normal() && *s > 0.0) {
            return None;
        }
        let at = |j: usize| if scales.len() == 1 { 0 } else { j };
        let vals = &w.data;
        let mut out = Vec::with_capacity(vals.len());
        for j in 0..n {
            for i in 0..k {
                let v = byte_value(w.dtype, *vals.get(i * n + j)?) - zps[at(j)];
                out.push(i16::try_from(v).ok()?);
            }
        }
        let sc = (0..n).map(|j| f64::from(scales[at(j)])).collect();
        Some((Wide { values: out, shape: vec![n, k] }, sc))
    })
}

/// The bias of class `c` (absent, a float constant or a `DequantizeLinear` of one) in units
/// of the accumulator, `x_scale · w_scale[ch]`: the int32 values themselves when the bias's
/// own scale is that product (as onnxruntime's quantizer writes it), else rounded.
fn acc_bias(eg: &EG, c: Option<Id>, acc_scale: &[f64]) -> Option<Vec<i64>> {
    let n = acc_scale.len();
    let Some(c) = c.filter(|c| !absent(eg, *c)) else { return Some(vec![0; n]) };
    let (real, ints): (Vec<f64>, Option<Vec<i64>>) = if let Some(v) = f32_value(eg, c) {
        (v.iter().map(|x| f64::from(*x)).collect(), None)
    } else {
        producers(eg, c).find_map(|(o, ch)| {
            if !matches!(o, Op::DequantizeLinear { .. }) {
                return None;
            }
            let q = value(eg, ch[0]).filter(|t| t.dtype == DType::I32)?.i64s();
            let s = f32_value(eg, ch[1])?;
            let z = match ch.get(2).filter(|z| !absent(eg, **z)) {
                Some(z) => value(eg, *z)?.i64s(),
                None => vec![0; s.len()],
            };
            if q.len() != n || !(s.len() == 1 || s.len() == n) || z.len() != s.len() {
                return None;
            }
            let at = |i: usize| if s.len() == 1 { 0 } else { i };
            let real = (0..n).map(|i| (q[i] - z[at(i)]) as f64 * f64::from(s[at(i)])).collect();
            let same = (0..n).all(|i| {
                let want = acc_scale[i];
                z[at(i)] == 0 && (f64::from(s[at(i)]) - want).abs() <= 1e-6 * want
            });
            Some((real, same.then_some(q)))
        })?
    };
    if real.len() != n {
        return None;
    }
    if let Some(q) = ints {
        return Some(q);
    }
    real.iter()
        .zip(acc_scale)
        .map(|(r, s)| {
            let q = (r / s).round();
            (q.is_finite() && q.abs() < f64::from(1u32 << 30)).then_some(q as i64)
        })
        .collect()
}

/// `v` quantized as QuantizeLinear does (f32 division, round half to even, saturate).
fn quantize_scalar(v: f32, scale: f32, zp: i64, dt: DType) -> i64 {
    let (lo, hi) = int_range(dt);
    ((v / scale).round_ties_even() as i64).saturating_add(zp).clamp(lo, hi)
}

/// The activation between a matrix op and its QuantizeLinear, as a clamp of the quantized
/// output (exact, QuantizeLinear being monotone: `Q(clip(v, a, b)) = clip(Q(v), Q(a), Q(b))`):
/// the op's class and `(lo, hi)`; no activation gives the type's range.
fn through_activation(eg: &EG, c: Id, scale: f32, zp: i64, dt: DType) -> Vec<(Id, i64, i64)> {
    let (tlo, thi) = int_range(dt);
    let mut out = vec![(c, tlo, thi)];
    for (o, ch) in producers(eg, c) {
        match o {
            Op::Unary(crate::ir::UnaryOp::Relu) => out.push((ch[0], zp.max(tlo), thi)),
            Op::Clip { min, max } => {
                let bound = |i: usize, attr: Option<f32>| match ch.get(i) {
                    Some(b) if !absent(eg, *b) => {
                        f32_value(eg, *b).filter(|v| v.len() == 1).map(|v| Some(v[0]))
                    }
                    _ => Some(attr),
                };
                let (Some(a), Some(b)) = (bound(1, *min), bound(2, *max)) else { continue };
                let lo = a.map_or(tlo, |a| quantize_scalar(a, scale, zp, dt));
                let hi = b.map_or(thi, |b| quantize_scalar(b, scale, zp, dt));
                out.push((ch[0], lo, hi));
            }
            _ => {}
        }
    }
    out
}

/// Requantisation records (`multiplier, shift` pairs) for real multipliers `m`, one pair when
/// all are equal.
fn rq_table(m: &[f64]) -> Option<Tensor> {
    let recs: Vec<_> = m
        .iter()
        .map(|m| accelc_isa::requant::RequantRecord::from_real(*m, 0, 0, 0))
        .collect::<Option<_>>()?;
    let all_same = recs.windows(2).all(|w| w[0] == w[1]);
    let recs = if all_same { &recs[..1] } else { &recs[..] };
    let data: Vec<u8> = recs
        .iter()
        .flat_map(|r| r.multiplier.to_le_bytes().into_iter().chain(r.shift.to_le_bytes()))
        .collect();
    Some(Tensor { dtype: DType::I32, shape: vec![recs.len(), 2], data: data.into() })
}

/// Requantisation records (`multiplier, shift` pairs), one per real multiplier in `m`.
fn rq_table_rows(m: &[f64]) -> Option<Tensor> {
    let mut data = Vec::with_capacity(8 * m.len());
    for m in m {
        let r = accelc_isa::requant::RequantRecord::from_real(*m, 0, 0, 0)?;
        data.extend(r.multiplier.to_le_bytes().into_iter().chain(r.shift.to_le_bytes()));
    }
    Some(Tensor { dtype: DType::I32, shape: vec![m.len(), 2], data: data.into() })
}

/// The parts of a quantized matrix product: input, int8 weights `[Cout, K...]`, int32 bias,
/// requantisation table, zero points and clamp; `None` when the accumulator could leave
/// int32 or a multiplier is out of the record's range.
struct QMatmul {
    x: Id,
    /// `[Cout, parts·Cin, ...]`: the weights split into int8 parts against the input
    /// repeated `parts` times along channels.
    w: Tensor,
    parts: usize,
    bias: Tensor,
    rq: Tensor,
    x_zp: i64,
    y_zp: i64,
    lo: i64,
    hi: i64,
    out: DType,
}

/// Weights as `[Cout, ...]` (convolutions, Gemm with `transB`) or `[K, N]` (MatMul, Gemm).
#[derive(Clone, Copy, PartialEq)]
enum WLayout {
    OutFirst,
    Kn,
}

#[allow(clippy::too_many_arguments, reason = "the parts of one quantized product")]
fn qmatmul(
    eg: &EG,
    xd: Id,
    (wd, layout): (Id, WLayout),
    bd: Option<Id>,
    cout: usize,
    (ys, yz, ydt): (f32, i64, DType),
    (lo, hi): (i64, i64),
) -> Option<QMatmul> {
    let (x, xs, xz, xdt) = dq_input(eg, xd)?;
    let (w, ws) = match layout {
        WLayout::OutFirst => dq_weights(eg, wd, cout)?,
        WLayout::Kn => dq_weights_kn(eg, wd, cout)?,
    };
    let acc_scale: Vec<f64> = ws.iter().map(|s| f64::from(xs) * s).collect();
    let bias = acc_bias(eg, bd, &acc_scale)?;
    // Every partial sum, and the sum with the bias, stays inside int32.
    let (tlo, thi) = int_range(xdt);
    let xmax = (xz - tlo).max(thi - xz);
    let inner = w.values.len() / cout.max(1);
    let k = inner as i64;
    // One pass for the range (vectorised), instead of a search per question.
    let (wlo, whi) = w.values.iter().fold((0i16, 0i16), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let wmax = i64::from(wlo.unsigned_abs().max(whi.unsigned_abs()));
    let bmax = bias.iter().map(|b| b.abs()).max().unwrap_or(0);
    if k * xmax * wmax + bmax + k * 255 * 128 >= i64::from(i32::MAX) {
        return None;
    }
    // Weights outside int8 (asymmetric weights: up to ±255) as ⌈max / 127⌉ int8 parts, the
    // kernel summing Σ x·w₁ + Σ x·w₂ (+ …) over the input repeated along channels: the same
    // integer.
    let parts = if wlo >= -128 && whi <= 127 { 1 } else { (wmax as u64).div_ceil(127) as usize };
    let mut packed = Vec::with_capacity(w.values.len() * parts);
    if parts == 1 {
        packed.extend(w.values.iter().map(|v| *v as i8 as u8));
    }
    for row in w.values.chunks(inner.max(1)).filter(|_| parts > 1) {
        let mut rest = row.to_vec();
        for _ in 0..parts {
            for r in rest.iter_mut() {
                let part = if parts == 1 { *r } else { (*r).clamp(-127, 127) };
                packed.push(part as i8 as u8);
                *r -= part;
            }
        }
    }
    let mut shape = w.shape.clone();
    shape[1] *= parts;
    let w = Tensor { dtype: DType::I8, shape, data: packed.into() };
    let m: Vec<f64> = acc_scale.iter().map(|a| a / f64::from(ys)).collect();
    let rq = rq_table(&m)?;
    let b32: Vec<u8> = bias.iter().flat_map(|b| (*b as i32).to_le_bytes()).collect();
    let bias = Tensor { dtype: DType::I32, shape: vec![cout], data: b32.into() };
    Some(QMatmul { x, w, parts, bias, rq, x_zp: xz, y_zp: yz, lo, hi, out: ydt })
}

fn qconv_build(q: QMatmul, x: Build, window: crate::ir::Window, group: usize) -> Build {
    let x = if q.parts > 1 {
        let xs: Vec<Option<Build>> = (0..q.parts).map(|_| Some(x.clone())).collect();
        Build::Op(Op::Concat { axis: 1 }, "Concat", xs)
    } else {
        x
    };
    let op = Op::QConv {
        window,
        group,
        x_zp: q.x_zp as i32,
        y_zp: q.y_zp as i32,
        lo: q.lo as i32,
        hi: q.hi as i32,
        out: q.out,
    };
    Build::Op(
        op,
        "QConv",
        vec![
            Some(x),
            Some(Build::Const(q.w)),
            Some(Build::Const(q.bias)),
            Some(Build::Const(q.rq)),
        ],
    )
}

/// Whether class `c` already holds an integer convolution: the quantization rules then have
/// nothing to add, and re-deriving the packed weights every iteration (twice: search and
/// apply) was a third of compiling resnet18_int8_qdq.
fn has_qconv(eg: &EG, c: Id) -> bool {
    eg[c].nodes.iter().any(|m| matches!(op(eg, m), Some((Op::QConv { .. }, _, _))))
}

/// `Q(act(Conv(DQ(x), DQ(w), DQ(b))))` → `QConv(x, w − w_zp, b, rq)`.
fn qdq_conv(eg: &EG, c: Id, n: &Node) -> Option<Build> {
    let (Op::QuantizeLinear { .. }, _, ch) = op(eg, n)? else { return None };
    if has_qconv(eg, c) {
        return None;
    }
    let qp = qparams(eg, ch[1], ch.get(2))?;
    for (y, lo, hi) in through_activation(eg, ch[0], qp.0, qp.1, qp.2) {
        for (o, cc) in producers(eg, y) {
            let Op::Conv { window, group } = o else { continue };
            let wt = ty(eg, cc[1])?;
            if wt.shape.len() != 4 {
                continue;
            }
            let w = (cc[1], WLayout::OutFirst);
            let Some(q) = qmatmul(eg, cc[0], w, cc.get(2).copied(), wt.shape[0], qp, (lo, hi))
            else {
                continue;
            };
            // Split weights need the input repeated along channels, which groups forbid.
            if q.parts > 1 && *group > 1 {
                continue;
            }
            let x = Build::Class(q.x);
            return Some(qconv_build(q, x, window.clone(), *group));
        }
    }
    None
}

/// `Q(act(Gemm(DQ(x), DQ(w), DQ(b))))` (2-D, α = β = 1, A not transposed; `w` `[N, K]` with
/// `transB` as exporters write fully connected layers, per-channel scales on axis 0, or
/// `[K, N]` without, per-channel on axis 1) and `Q(act(MatMul(DQ(x), DQ(w))))` (`x` of rank
/// 2 or more, `w` `[K, N]`) → a 1×1 `QConv` between reshapes (`[..., K] → [M, K, 1, 1]`,
/// `[M, N, 1, 1] → [..., N]`).
fn qdq_gemm(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::QuantizeLinear { .. }, _, ch) = op(eg, n)? else { return None };
    let qp = qparams(eg, ch[1], ch.get(2))?;
    for (y, lo, hi) in through_activation(eg, ch[0], qp.0, qp.1, qp.2) {
        for (o, cc) in producers(eg, y) {
            let (layout, bias) = match o {
                Op::Gemm { alpha, beta, trans_a: false, trans_b } => {
                    if *alpha != 1.0 || (*beta != 1.0 && cc.len() >= 3) {
                        continue;
                    }
                    let layout = if *trans_b { WLayout::OutFirst } else { WLayout::Kn };
                    (layout, cc.get(2).copied().filter(|b| !absent(eg, *b)))
                }
                Op::MatMul => (WLayout::Kn, None),
                _ => continue,
            };
            let (xt, wt) = (ty(eg, cc[0])?, ty(eg, cc[1])?);
            let gemm = matches!(o, Op::Gemm { .. });
            if wt.shape.len() != 2 || xt.shape.len() < 2 || (gemm && xt.shape.len() != 2) {
                continue;
            }
            let k = *xt.shape.last()?;
            let m = xt.shape.iter().product::<usize>() / k.max(1);
            let nn = if layout == WLayout::OutFirst { wt.shape[0] } else { wt.shape[1] };
            // The bias must be one value per output column.
            if let Some(b) = bias
                && ty(eg, b)?.shape.iter().product::<usize>() != nn
            {
                continue;
            }
            let Some(mut q) = qmatmul(eg, cc[0], (cc[1], layout), bias, nn, qp, (lo, hi)) else {
                continue;
            };
            q.w.shape = vec![nn, k * q.parts, 1, 1];
            let mut out_shape = xt.shape.clone();
            *out_shape.last_mut()? = nn;
            let x4 = Build::Op(
                Op::Reshape { allowzero: false },
                "Reshape",
                vec![Some(Build::Class(q.x)), Some(shape_const(&[m, k, 1, 1]))],
            );
            let window = crate::ir::Window {
                kernel: vec![1, 1],
                strides: vec![1, 1],
                dilations: vec![1, 1],
                pads: vec![0, 0, 0, 0],
                auto_pad: AutoPad::NotSet,
                ceil_mode: false,
            };
            let conv = qconv_build(q, x4, window, 1);
            return Some(Build::Op(
                Op::Reshape { allowzero: false },
                "Reshape",
                vec![Some(conv), Some(shape_const(&out_shape))],
            ));
        }
    }
    None
}

/// Fractional bits of `qdq-add`'s common grid: the largest `L ≤ 20` with
/// `255 · max(r_a, r_b) · 2^L ≤ 2^29` (`r` an input scale over the output scale), so each
/// scaled input stays within ±2^29 and their sum inside int32; `None` below 8 bits. Each
/// input's rounding on the grid is at most half a unit, `2^-(L+1)` output steps (TFLite's
/// Add shifts its inputs left by 20 bits for the same reason).
pub(crate) fn qadd_grid_bits(ra: f64, rb: f64) -> Option<i32> {
    let r = ra.max(rb);
    (8..=20).rev().find(|l| 255.0 * r * f64::from(1u32 << l) <= f64::from(1u32 << 29))
}

/// `Q(act(Add(DQ(a), DQ(b))))` with per-tensor parameters and `a`, `b` of one shape →
/// `QAdd(a, b, rq)`: each input scaled to a grid of `2^-L` output steps in int32, summed,
/// and requantised by `2^-L` to the output (the arithmetic is on `Op::QAdd`).
fn qdq_add(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::QuantizeLinear { .. }, _, ch) = op(eg, n)? else { return None };
    let (ys, yz, ydt) = qparams(eg, ch[1], ch.get(2))?;
    for (y, lo, hi) in through_activation(eg, ch[0], ys, yz, ydt) {
        for (o, cc) in producers(eg, y) {
            let Op::Binary(crate::ir::BinaryOp::Add) = o else { continue };
            let (Some((a, sa, za, _)), Some((b, sb, zb, _))) =
                (dq_input(eg, cc[0]), dq_input(eg, cc[1]))
            else {
                continue;
            };
            if ty(eg, a)?.shape != ty(eg, b)?.shape {
                continue;
            }
            let (ra, rb) = (f64::from(sa) / f64::from(ys), f64::from(sb) / f64::from(ys));
            let Some(l) = qadd_grid_bits(ra, rb) else { continue };
            let g = f64::from(1u32 << l);
            let Some(rq) = rq_table_rows(&[ra * g, rb * g, 1.0 / g]) else { continue };
            let op = Op::QAdd {
                a_zp: za as i32,
                b_zp: zb as i32,
                y_zp: yz as i32,
                lo: lo as i32,
                hi: hi as i32,
                out: ydt,
            };
            return Some(Build::Op(
                op,
                "QAdd",
                vec![Some(Build::Class(a)), Some(Build::Class(b)), Some(Build::Const(rq))],
            ));
        }
    }
    None
}

/// `Q(Concat(DQ(a₁), …, DQ(aₙ)))` → `Concat(Q(DQ(a₁)), …, Q(DQ(aₙ)))` with the same
/// per-tensor Q: exact, quantization being element-wise and Concat only moving elements;
/// `qdq-requant` then makes each `Q(DQ(aᵢ))` the 8-bit values or a table lookup.
fn qdq_concat(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::QuantizeLinear { axis }, _, ch) = op(eg, n)? else { return None };
    qparams(eg, ch[1], ch.get(2))?;
    for (o, cc) in producers(eg, ch[0]) {
        let Op::Concat { .. } = o else { continue };
        if !cc.iter().all(|k| dq_input(eg, *k).is_some()) {
            continue;
        }
        let q = |k: Id| {
            let mut ins = vec![Some(Build::Class(k)), Some(Build::Class(ch[1]))];
            ins.extend(ch.get(2).map(|z| Some(Build::Class(*z))));
            Some(Build::Op(Op::QuantizeLinear { axis: *axis }, "QuantizeLinear", ins))
        };
        return Some(Build::Op(o.clone(), "Concat", cc.iter().map(|k| q(*k)).collect()));
    }
    None
}

/// `Q(DQ(x))` with per-tensor parameters and 8-bit `x` → `x` when the round trip is the
/// identity (same scale, zero point and type), else `Lut(x, table)` with each entry the
/// reference's own `Q(DQ(v))`: a requantisation, exact by construction.
fn qdq_requant(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::QuantizeLinear { .. }, _, ch) = op(eg, n)? else { return None };
    let (ys, yz, ydt) = qparams(eg, ch[1], ch.get(2))?;
    let (x, xs, xz, xdt) = dq_input(eg, ch[0])?;
    let table: Vec<u8> = (0..256i64)
        .map(|b| {
            let v = if xdt == DType::I8 { i64::from(b as u8 as i8) } else { b };
            quantize_scalar((v - xz) as f32 * xs, ys, yz, ydt) as u8
        })
        .collect();
    if xdt == ydt && table.iter().enumerate().all(|(b, t)| usize::from(*t) == b) {
        return Some(Build::Class(x));
    }
    let table = Tensor { dtype: ydt, shape: vec![256], data: table.into() };
    Some(Build::Op(Op::Lut, "Lut", vec![Some(Build::Class(x)), Some(Build::Const(table))]))
}

/// `Q(R(DQ(x)))` for a data movement `R` (Reshape, Flatten, Squeeze, Unsqueeze, Transpose)
/// with the same scale, zero point and type on both sides → `R(x)` on the 8-bit values:
/// exact, `R` moving values unchanged and `Q(DQ(v)) = v`.
fn qdq_movement(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::QuantizeLinear { .. }, _, ch) = op(eg, n)? else { return None };
    let (ys, yz, ydt) = qparams(eg, ch[1], ch.get(2))?;
    for nd in &eg[ch[0]].nodes {
        let Some((o, _, cc)) = op(eg, nd) else { continue };
        let name = match o {
            Op::Reshape { .. } => "Reshape",
            Op::Flatten { .. } => "Flatten",
            Op::Squeeze { .. } => "Squeeze",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Transpose { .. } => "Transpose",
            _ => continue,
        };
        let Some((x, xs, xz, xdt)) = dq_input(eg, cc[0]) else { continue };
        if (xs, xz, xdt) != (ys, yz, ydt) {
            continue;
        }
        let mut inputs = vec![Some(Build::Class(x))];
        inputs.extend(cc[1..].iter().map(|k| Some(Build::Class(*k))));
        return Some(Build::Op(o.clone(), name, inputs));
    }
    None
}

/// `Q(GlobalAveragePool(DQ(x)))` with per-tensor parameters → `QGlobalAveragePool(x, rq)`:
/// the int32 sum of each channel less `H·W·x_zp`, requantised by `x_scale / (y_scale·H·W)`
/// (the arithmetic of onnxruntime's QLinearGlobalAveragePool, in fixed point).
fn qdq_gap(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::QuantizeLinear { .. }, _, ch) = op(eg, n)? else { return None };
    let (ys, yz, ydt) = qparams(eg, ch[1], ch.get(2))?;
    for (o, cc) in producers(eg, ch[0]) {
        let Op::GlobalPool { max: false } = o else { continue };
        let Some((x, xs, xz, _)) = dq_input(eg, cc[0]) else { continue };
        let xt = ty(eg, x)?;
        if xt.shape.len() < 3 {
            continue;
        }
        let hw: usize = xt.shape[2..].iter().product();
        // The sums stay inside int32.
        if (hw as i64) * 510 >= i64::from(i32::MAX) {
            continue;
        }
        let m = f64::from(xs) / (f64::from(ys) * hw as f64);
        let Some(rq) = rq_table_rows(&[m]) else { continue };
        let op = Op::QGlobalAveragePool { x_zp: xz as i32, y_zp: yz as i32, out: ydt };
        return Some(Build::Op(
            op,
            "QGlobalAveragePool",
            vec![Some(Build::Class(x)), Some(Build::Const(rq))],
        ));
    }
    None
}

/// `Q(MaxPool(DQ(x)))` with the same scale, zero point and type on both sides → `MaxPool(x)`
/// on the 8-bit values: exact, dequantization being monotone and `Q(DQ(v)) = v`.
fn qdq_maxpool(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    let (Op::QuantizeLinear { .. }, _, ch) = op(eg, n)? else { return None };
    let (ys, yz, ydt) = qparams(eg, ch[1], ch.get(2))?;
    for (o, cc) in producers(eg, ch[0]) {
        let Op::Pool { max: true, window, .. } = o else { continue };
        let Some((x, xs, xz, xdt)) = dq_input(eg, cc[0]) else { continue };
        if (xs, xz, xdt) != (ys, yz, ydt) {
            continue;
        }
        let op = Op::Pool { max: true, window: window.clone(), count_include_pad: false };
        return Some(Build::Op(op, "MaxPool", vec![Some(Build::Class(x))]));
    }
    None
}

/// The values of class `c` for every 8-bit `x` when `c` is an element-wise function of
/// `DQ(x)` (class `dq`) and scalar constants, computed by the reference's own operations; at
/// most `depth` operations deep.
fn pointwise_values(
    eg: &EG,
    c: Id,
    dq: Id,
    dq_values: &crate::interp::Array,
    depth: usize,
) -> Option<crate::interp::Array> {
    use crate::interp::Array;
    if eg.find(c) == eg.find(dq) {
        return Some(dq_values.clone());
    }
    if let Some(v) = value(eg, c) {
        return (v.len() == 1 && v.shape.len() <= 1).then(|| Array::from_tensor(v));
    }
    if depth == 0 {
        return None;
    }
    for n in &eg[c].nodes {
        let Some((o, op_type, ch)) = op(eg, n) else { continue };
        if crate::ops::def(o).family != "elementwise" {
            continue;
        }
        let args: Option<Vec<Option<Array>>> = ch
            .iter()
            .map(|k| {
                if absent(eg, *k) {
                    Some(None)
                } else {
                    pointwise_values(eg, *k, dq, dq_values, depth - 1).map(Some)
                }
            })
            .collect();
        let Some(args) = args else { continue };
        let node = crate::ir::Node {
            name: String::new(),
            op_type: op_type.to_string(),
            op: o.clone(),
            inputs: vec![],
            outputs: vec![],
        };
        let refs: Vec<Option<&Array>> = args.iter().map(Option::as_ref).collect();
        let Ok(mut out) = crate::interp::eval(&node, &refs, eg.analysis.opset) else { continue };
        if out.len() == 1 && out[0].shape() == dq_values.shape() {
            return out.pop();
        }
    }
    None
}

/// `Q(f(DQ(x)))` for an element-wise `f` of `DQ(x)` and scalar constants (an activation such
/// as Sigmoid, Tanh, HardSwish, Gelu, LeakyRelu, or a chain of up to four operations), per-tensor
/// parameters and 8-bit `x` → `Lut(x, table)`: exact, the 256 entries being the reference's
/// own `Q(f(DQ(v)))` for every value `v`.
fn qdq_lut(eg: &EG, _c: Id, n: &Node) -> Option<Build> {
    use crate::interp::Array;
    let (Op::QuantizeLinear { .. }, _, ch) = op(eg, n)? else { return None };
    let (ys, yz, ydt) = qparams(eg, ch[1], ch.get(2))?;
    // The activation's class: an element-wise op (not the DequantizeLinear itself).
    let f = ch[0];
    if !producers(eg, f).any(|(o, _)| crate::ops::def(o).family == "elementwise") {
        return None;
    }
    // Every DequantizeLinear reachable through the activation's first inputs.
    let mut dqs = vec![];
    let mut frontier = vec![(f, 0usize)];
    while let Some((c, d)) = frontier.pop() {
        if let Some(q) = dq_input(eg, c) {
            dqs.push((c, q));
            continue;
        }
        if d >= 4 {
            continue;
        }
        for (o, kids) in producers(eg, c) {
            if crate::ops::def(o).family == "elementwise" {
                frontier.extend(kids.iter().map(|k| (*k, d + 1)));
            }
        }
    }
    for (dq, (x, xs, xz, xdt)) in dqs {
        let (lo, hi) = int_range(xdt);
        let vals: Vec<i64> =
            (0..256).map(|b| if xdt == DType::I8 { b as u8 as i8 as i64 } else { b }).collect();
        debug_assert!(vals.iter().all(|v| (lo..=hi).contains(v)));
        let deq: Vec<f32> = vals.iter().map(|v| (v - xz) as f32 * xs).collect();
        let deq = Array::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[256]), deq).ok()?);
        let Some(Array::F32(y)) = pointwise_values(eg, f, dq, &deq, 4) else { continue };
        let table: Vec<u8> = y.iter().map(|v| quantize_scalar(*v, ys, yz, ydt) as u8).collect();
        let table = Tensor { dtype: ydt, shape: vec![256], data: table.into() };
        return Some(Build::Op(
            Op::Lut,
            "Lut",
            vec![Some(Build::Class(x)), Some(Build::Const(table))],
        ));
    }
    None
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
            name: "qdq-conv",
            topic: "quantization",
            doc: "Q(act(Conv(DQ(x), DQ(w), DQ(b)))) → QConv(x, w − w_zp, b, rq): int8 weights, int32 accumulation with the bias, fixed-point requantisation; Relu/Clip become the output clamp",
            apply: qdq_conv,
        },
        Rule {
            name: "qdq-gemm",
            topic: "quantization",
            doc: "Q(act(Gemm(DQ(x), DQ(w), DQ(b)))), Q(act(MatMul(DQ(x), DQ(w)))) → Reshape(QConv 1×1(Reshape(x))): the same integer kernel for fully connected layers and constant-weight matrix products",
            apply: qdq_gemm,
        },
        Rule {
            name: "qdq-add",
            topic: "quantization",
            doc: "Q(act(DQ(a) + DQ(b))) → QAdd(a, b, rq): both inputs scaled to a grid of 2^-L output steps (L ≤ 20) in int32, summed, requantised; Relu/Clip become the output clamp",
            apply: qdq_add,
        },
        Rule {
            name: "qdq-maxpool",
            topic: "quantization",
            doc: "Q(MaxPool(DQ(x))) → MaxPool(x) on the 8-bit values, when both sides share scale, zero point and type (exact)",
            apply: qdq_maxpool,
        },
        Rule {
            name: "qdq-gap",
            topic: "quantization",
            doc: "Q(GlobalAveragePool(DQ(x))) → QGlobalAveragePool(x, rq): the int32 sum per channel less H·W·x_zp, requantised by x_scale / (y_scale·H·W)",
            apply: qdq_gap,
        },
        Rule {
            name: "qdq-concat",
            topic: "quantization",
            doc: "Q(Concat(DQ(a₁), …, DQ(aₙ))) → Concat(Q(DQ(a₁)), …, Q(DQ(aₙ))) (exact: quantization is element-wise)",
            apply: qdq_concat,
        },
        Rule {
            name: "qdq-requant",
            topic: "quantization",
            doc: "Q(DQ(x)) → x when the round trip is the identity, else Lut(x, table), each entry the reference's Q(DQ(v)) (exact)",
            apply: qdq_requant,
        },
        Rule {
            name: "qdq-movement",
            topic: "quantization",
            doc: "Q(R(DQ(x))) → R(x) for Reshape, Flatten, Squeeze, Unsqueeze and Transpose, when both sides share scale, zero point and type (exact)",
            apply: qdq_movement,
        },
        Rule {
            name: "qdq-lut",
            topic: "quantization",
            doc: "Q(f(DQ(x))) → Lut(x, table) for element-wise f (activations, chains of up to four operations with scalar constants): exact, each entry the reference's Q(f(DQ(v)))",
            apply: qdq_lut,
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
