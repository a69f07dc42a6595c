//! The reference interpreter: evaluates a graph with `ndarray`, straightforwardly, as the oracle
//! every later stage is compared with. Clarity over speed, except that convolutions and matrix
//! products go through `ndarray`'s GEMM so the zoo models run in seconds.

use crate::Clipped;
use std::collections::HashMap;
use std::fmt;

use ndarray::{ArrayD, Axis, IxDyn, Zip};

use crate::ir::{AutoPad, DType, Graph, Node, Op, Tensor, ValueId, Window};

/// A runtime tensor: floats, or integers (any integer or bool type, held as i64 with its type).
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    /// `f32` data.
    F32(ArrayD<f32>),
    /// Integer or bool data of the given type, widened to i64.
    Int(ArrayD<i64>, DType),
}

impl Array {
    /// From an IR tensor.
    pub fn from_tensor(t: &Tensor) -> Array {
        let shape = IxDyn(&t.shape);
        match t.dtype {
            DType::F32 => Array::F32(
                ArrayD::from_shape_vec(shape, t.f32s())
                    .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&[0]))),
            ),
            dt => Array::Int(
                ArrayD::from_shape_vec(shape, t.i64s())
                    .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&[0]))),
                dt,
            ),
        }
    }

    /// As an IR tensor (integers narrowed to their type).
    pub fn to_tensor(&self) -> Tensor {
        let shape = self.shape().to_vec();
        match self {
            Array::F32(a) => Tensor::from_f32(shape, &a.iter().copied().collect::<Vec<_>>()),
            Array::Int(a, dt) => {
                let data: Vec<u8> = a.iter().flat_map(|v| dt.int_bytes(*v)).collect();
                Tensor { dtype: *dt, shape, data: data.into() }
            }
        }
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        match self {
            Array::F32(a) => a.shape(),
            Array::Int(a, _) => a.shape(),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Array::F32(_) => DType::F32,
            Array::Int(_, dt) => *dt,
        }
    }

    pub(crate) fn f32(&self) -> Result<&ArrayD<f32>, String> {
        match self {
            Array::F32(a) => Ok(a),
            Array::Int(_, dt) => Err(format!("expected float data, got {dt}")),
        }
    }

    pub(crate) fn ints(&self) -> Result<&ArrayD<i64>, String> {
        match self {
            Array::Int(a, _) => Ok(a),
            Array::F32(_) => Err("expected integer data, got float".into()),
        }
    }
}

/// An evaluation failure, naming the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalError {
    /// The node.
    pub node: String,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node `{}`: {}", Clipped(&self.node), Clipped(&self.message))
    }
}

impl std::error::Error for EvalError {}

type R<T> = Result<T, String>;

/// Runs `graph` on `inputs` (in graph-input order); returns the outputs in graph-output order.
pub fn run(graph: &Graph, inputs: &[Array]) -> Result<Vec<Array>, EvalError> {
    if inputs.len() != graph.inputs.len() {
        return Err(EvalError {
            node: "<graph>".into(),
            message: format!(
                "{} inputs given, the graph takes {}",
                inputs.len(),
                graph.inputs.len()
            ),
        });
    }
    let mut env: HashMap<ValueId, Array> = HashMap::new();
    for (i, v) in graph.values.iter().enumerate() {
        if let Some(t) = &v.constant {
            env.insert(ValueId(i as u32), Array::from_tensor(t));
        }
    }
    for (id, a) in graph.inputs.iter().zip(inputs) {
        env.insert(*id, a.clone());
    }
    for node in &graph.nodes {
        if node.op == Op::Constant {
            continue;
        }
        let args: Vec<Option<&Array>> =
            node.inputs.iter().map(|i| i.and_then(|id| env.get(&id))).collect();
        let outs = eval(node, &args, graph.opset)
            .map_err(|message| EvalError { node: node.name.clone(), message })?;
        for (id, a) in node.outputs.iter().zip(outs) {
            env.insert(*id, a);
        }
    }
    graph
        .outputs
        .iter()
        .map(|id| {
            env.get(id).cloned().ok_or_else(|| EvalError {
                node: "<graph>".into(),
                message: format!("output `{}` was not computed", graph.value(*id).name),
            })
        })
        .collect()
}

pub(crate) fn arg<'a>(args: &[Option<&'a Array>], i: usize) -> R<&'a Array> {
    args.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
}

pub(crate) fn opt<'a>(args: &[Option<&'a Array>], i: usize) -> Option<&'a Array> {
    args.get(i).copied().flatten()
}

/// Normalises a possibly negative axis.
pub(crate) fn axis(a: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    // A scalar has no axis: every ONNX operator with an axis needs rank >= 1 there.
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} is out of range for rank {rank}"))
    }
}

/// For per-axis quantisation parameters of length `n` along `ax`: `(elements per step of that
/// axis, n)`; `None` for per-tensor parameters.
pub(crate) fn per_axis(shape: &[usize], n: usize, ax: i64) -> R<Option<(usize, usize)>> {
    if n <= 1 {
        return Ok(None);
    }
    let k = axis(ax, shape.len())?;
    if shape[k] != n {
        return Err(format!("{n} quantisation parameters for axis {k} of {shape:?}"));
    }
    Ok(Some((shape[k + 1..].iter().product(), n)))
}

/// Numpy broadcasting of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

pub(crate) fn zip_f32(
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    f: impl Fn(f32, f32) -> f32,
) -> R<ArrayD<f32>> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let (av, bv) = (
        a.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?,
        b.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?,
    );
    Ok(Zip::from(&av).and(&bv).map_collect(|x, y| f(*x, *y)))
}

/// The larger of two values, NaN if either is NaN: the rule for every max-like op (Relu,
/// MaxPool, ReduceMax, GlobalMaxPool, Softmax's shift), as numpy's `maximum` and PyTorch do and
/// as the simulator's `vx` max does (book: numerics, NaN).
pub(crate) fn nan_max<F: ndarray::NdFloat>(a: F, b: F) -> F {
    if a.is_nan() || b.is_nan() { F::nan() } else { a.max(b) }
}

/// The smaller of two values, NaN if either is NaN (see [`nan_max`]).
pub(crate) fn nan_min<F: ndarray::NdFloat>(a: F, b: F) -> F {
    if a.is_nan() || b.is_nan() { F::nan() } else { a.min(b) }
}

pub(crate) fn eval(node: &Node, args: &[Option<&Array>], opset: i64) -> R<Vec<Array>> {
    (crate::ops::def(&node.op).eval)(node, args, opset)
}

/// A window's geometry per spatial axis.
pub(crate) struct Geometry {
    pub(crate) begin: Vec<usize>,
    pub(crate) end: Vec<usize>,
    pub(crate) strides: Vec<usize>,
    pub(crate) dilations: Vec<usize>,
}

/// Padding, strides and dilations per spatial axis for a window.
pub(crate) fn pads(w: &Window, input: &[usize], kernel: &[usize]) -> R<Geometry> {
    let nd = input.len();
    let strides = if w.strides.is_empty() { vec![1; nd] } else { w.strides.clone() };
    let dil = if w.dilations.is_empty() { vec![1; nd] } else { w.dilations.clone() };
    if strides.len() != nd || dil.len() != nd || kernel.len() != nd {
        return Err(format!(
            "window attributes (strides {strides:?}, dilations {dil:?}, kernel {kernel:?}) do not \
             match the {nd} spatial axes"
        ));
    }
    if strides.contains(&0) || dil.contains(&0) {
        return Err(format!("strides {strides:?} and dilations {dil:?} must be positive"));
    }
    if kernel.contains(&0) {
        return Err(format!("kernel {kernel:?} must be positive"));
    }
    let (mut begin, mut end) = (vec![0; nd], vec![0; nd]);
    match w.auto_pad {
        AutoPad::NotSet => {
            if !w.pads.is_empty() {
                if w.pads.len() != 2 * nd {
                    return Err(format!("pads has {} values for {nd} spatial axes", w.pads.len()));
                }
                begin.copy_from_slice(&w.pads[..nd]);
                end.copy_from_slice(&w.pads[nd..]);
            }
        }
        AutoPad::Valid => {}
        AutoPad::SameUpper | AutoPad::SameLower => {
            for i in 0..nd {
                let out = input[i].div_ceil(strides[i]);
                let eff = (kernel[i] - 1).saturating_mul(dil[i]).saturating_add(1);
                let total = (out.saturating_sub(1).saturating_mul(strides[i]))
                    .saturating_add(eff)
                    .saturating_sub(input[i]);
                let small = total / 2;
                let (b, e) = if w.auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                begin[i] = b;
                end[i] = e;
            }
        }
    }
    Ok(Geometry { begin, end, strides, dilations: dil })
}

pub(crate) fn out_size(
    input: usize,
    k: usize,
    stride: usize,
    dil: usize,
    pb: usize,
    pe: usize,
    ceil: bool,
) -> R<usize> {
    if k == 0 || stride == 0 || dil == 0 {
        return Err(format!(
            "a window of {k} with stride {stride} and dilation {dil}: each must be positive"
        ));
    }
    let eff = (k - 1).checked_mul(dil).and_then(|e| e.checked_add(1));
    let padded = input.checked_add(pb).and_then(|p| p.checked_add(pe));
    let (Some(eff), Some(padded)) = (eff, padded) else {
        return Err("window or padding too large".into());
    };
    let span = padded.checked_sub(eff).ok_or("window larger than the padded input")?;
    Ok(if ceil { span.div_ceil(stride) + 1 } else { span / stride + 1 })
}

/// Integer data minus its zero point, as exact f64. A 1-D zero point applies per row (the
/// second-last axis) with `per_row`, else per column (the last axis).
pub(crate) fn centered(x: &Array, zp: Option<&Array>, per_row: bool) -> R<ArrayD<f64>> {
    let xi = x.ints()?;
    let mut y = xi.mapv(|v| v as f64);
    if let Some(z) = zp {
        let z = z.ints()?;
        if z.len() == 1 {
            let zv = z.iter().next().copied().unwrap_or(0) as f64;
            y.mapv_inplace(|v| v - zv);
        } else if per_row && y.ndim() >= 2 {
            let k = y.ndim() - 2;
            for (r, mut lane) in y.axis_iter_mut(Axis(k)).enumerate() {
                let zv = *z.iter().nth(r).ok_or("per-row zero point shorter than the rows")? as f64;
                lane.mapv_inplace(|v| v - zv);
            }
        } else {
            let k = y.ndim() - 1;
            for (c, mut lane) in y.axis_iter_mut(Axis(k)).enumerate() {
                let zv = *z.iter().nth(c).ok_or("per-column zero point shorter than the columns")?
                    as f64;
                lane.mapv_inplace(|v| v - zv);
            }
        }
    }
    Ok(y)
}

/// `round_half_even(acc · a_scale · b_scale / y_scale) + y_zp`, saturated to `y_zp`'s type;
/// `b_scale` may hold one value per channel along `channel_axis`.
pub(crate) fn requantize(
    acc: &ArrayD<f64>,
    a_scale: &Array,
    b_scale: &Array,
    y_scale: &Array,
    y_zp: Option<&Array>,
    channel_axis: usize,
) -> R<Vec<Array>> {
    let first =
        |a: &Array| -> R<f64> { Ok(f64::from(a.f32()?.iter().next().copied().unwrap_or(1.0))) };
    let (sa, sy) = (first(a_scale)?, first(y_scale)?);
    let sb: Vec<f64> = b_scale.f32()?.iter().map(|v| f64::from(*v)).collect();
    let (zp, dt) = match y_zp {
        Some(Array::Int(z, dt)) => (z.iter().next().copied().unwrap_or(0), *dt),
        Some(Array::F32(_)) => return Err("float zero points are not supported".into()),
        None => (0, DType::U8),
    };
    let (lo, hi) = match dt {
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        other => return Err(format!("quantizing to {other} is not supported")),
    };
    let axis_k =
        if channel_axis < acc.ndim() { channel_axis } else { acc.ndim().saturating_sub(1) };
    let mut y = ArrayD::<i64>::zeros(acc.raw_dim());
    for (idx, v) in acc.indexed_iter() {
        let c = if sb.len() > 1 { idx[axis_k] } else { 0 };
        let scale = (sa * sb.get(c).copied().unwrap_or(1.0)) as f32 / sy as f32;
        let q = (*v as f32 * scale).round_ties_even();
        y[idx] = (q as i64).saturating_add(zp).clamp(lo, hi);
    }
    Ok(vec![Array::Int(y, dt)])
}

/// `x` converted to `to` as ONNX's Cast: float to float and integer to float round to
/// nearest even (from the exact value, once); float to integer truncates toward zero through
/// `i64` (NaN to 0, saturating at `i64`'s ends; to uint64 at its own ends), then wraps to
/// the width; to bool is `x != 0`; integer to integer wraps. Storage floats and uint64 are
/// read from their bit patterns.
pub(crate) fn cast(x: &Array, to: DType) -> Array {
    /// One element: a float's exact value, or an integer's (uint64 needs more than `i64`).
    #[derive(Clone, Copy)]
    enum V {
        F(f64),
        I(i128),
    }
    let from = x.dtype();
    let read = |v: i64| -> V {
        if from.storage_float() {
            V::F(from.float_from_bits(v))
        } else if from == DType::U64 {
            V::I(i128::from(v as u64))
        } else {
            V::I(i128::from(v))
        }
    };
    let write = |v: V| -> i64 {
        match (v, to) {
            (V::F(f), DType::Bool) => i64::from(f != 0.0),
            (V::I(i), DType::Bool) => i64::from(i != 0),
            (V::F(f), t) if t.storage_float() => t.float_to_bits(f),
            // Rust's `i128 as f64` rounds to nearest even; float16 and bfloat16 then round
            // again, which only matters beyond 2^53, far past their ranges' integers.
            (V::I(i), t) if t.storage_float() => t.float_to_bits(i as f64),
            (V::F(f), DType::U64) => (f as u64) as i64,
            (V::F(f), t) => t.wrap(f as i64),
            (V::I(i), t) => t.wrap(i as i64),
        }
    };
    match (x, to) {
        (Array::F32(a), DType::F32) => Array::F32(a.clone()),
        (Array::F32(a), dt) => Array::Int(a.mapv(|v| write(V::F(f64::from(v)))), dt),
        (Array::Int(a, _), DType::F32) => Array::F32(a.mapv(|v| match read(v) {
            V::F(f) => f as f32,
            V::I(i) => i as f32,
        })),
        (Array::Int(a, _), dt) => Array::Int(a.mapv(|v| write(read(v))), dt),
    }
}
