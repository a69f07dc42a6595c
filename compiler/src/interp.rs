//! The reference interpreter: evaluates a graph with `ndarray`, straightforwardly, as the oracle
//! every later stage is compared with. Clarity over speed, except that convolutions and matrix
//! products go through `ndarray`'s GEMM so the zoo models run in seconds.

use std::collections::HashMap;
use std::fmt;

use ndarray::{Array2, ArrayD, Axis, IxDyn, Zip, s};

use crate::ir::{
    AutoPad, BinaryOp, DType, Graph, NearestMode, Node, Op, PadMode, ResizeCoords, Tensor, ValueId,
    Window,
};

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
                let data: Vec<u8> = match dt {
                    DType::I64 => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    DType::I32 => a.iter().flat_map(|v| (*v as i32).to_le_bytes()).collect(),
                    _ => a.iter().map(|v| *v as u8).collect(),
                };
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
        write!(f, "node `{}`: {}", self.node, self.message)
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
    if (0..r.max(1)).contains(&v) || (rank == 0 && v == 0) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} is out of range for rank {rank}"))
    }
}

/// The part sizes of a `Split` of a `d`-long axis into `outputs` parts: the given sizes (all
/// non-negative, summing to `d`), or equal parts. From opset 18 (`num_outputs`) an axis that
/// does not divide evenly gets a smaller last part; before it, the parts must be equal.
pub(crate) fn split_sizes(
    d: usize,
    given: Option<&[i64]>,
    outputs: usize,
    opset: i64,
) -> R<Vec<usize>> {
    match given {
        Some(s) => {
            let sizes: Vec<usize> = s
                .iter()
                .map(|v| usize::try_from(*v).map_err(|_| format!("negative split size {v}")))
                .collect::<R<_>>()?;
            if sizes.iter().try_fold(0usize, |a, b| a.checked_add(*b)) != Some(d) {
                return Err(format!("split sizes {sizes:?} do not add up to {d}"));
            }
            Ok(sizes)
        }
        None => {
            let n = outputs.max(1);
            if opset < 18 && !d.is_multiple_of(n) {
                return Err(format!(
                    "Split of an axis of {d} into {n} equal parts (before opset 18 the parts \
                     must be equal)"
                ));
            }
            let part = d.div_ceil(n);
            Ok((0..n).map(|i| part.min(d.saturating_sub(i * part))).collect())
        }
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

pub(crate) fn zip_i64(
    a: &ArrayD<i64>,
    b: &ArrayD<i64>,
    f: impl Fn(i64, i64) -> R<i64>,
) -> R<ArrayD<i64>> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let (av, bv) = (
        a.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?,
        b.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?,
    );
    let mut err = None;
    let out = Zip::from(&av).and(&bv).map_collect(|x, y| {
        f(*x, *y).unwrap_or_else(|e| {
            err = Some(e);
            0
        })
    });
    err.map_or(Ok(out), Err)
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

pub(crate) fn erf(x: f32) -> f32 {
    libm::erf(f64::from(x)) as f32
}

pub(crate) fn eval(node: &Node, args: &[Option<&Array>], opset: i64) -> R<Vec<Array>> {
    (crate::ops::def(&node.op).eval)(node, args, opset)
}

pub(crate) fn binary(op: BinaryOp, a: &Array, b: &Array) -> R<Array> {
    match (a, b) {
        // Pow takes the base's type; the exponent may be of another numeric type.
        (Array::F32(_), Array::Int(y, _)) if op == BinaryOp::Pow => {
            binary(op, a, &Array::F32(y.mapv(|v| v as f32)))
        }
        (Array::Int(x, dt), Array::F32(y)) if op == BinaryOp::Pow => {
            let r =
                zip_f32(&x.mapv(|v| v as f32), y, |p, q| f64::from(p).powf(f64::from(q)) as f32)?;
            Ok(cast(&Array::F32(r), *dt))
        }
        (Array::F32(x), Array::F32(y)) => Ok(Array::F32(zip_f32(x, y, |p, q| match op {
            BinaryOp::Add => p + q,
            BinaryOp::Sub => p - q,
            BinaryOp::Mul => p * q,
            BinaryOp::Div => p / q,
            BinaryOp::Pow => f64::from(p).powf(f64::from(q)) as f32,
            // Mod with fmod = 0 on floats: numpy's `mod`, the sign of the divisor.
            BinaryOp::Mod => {
                let r = p % q;
                if r != 0.0 && (r < 0.0) != (q < 0.0) { r + q } else { r }
            }
        })?)),
        (Array::Int(x, dt), Array::Int(y, _)) => Ok(Array::Int(
            zip_i64(x, y, |p, q| match op {
                BinaryOp::Add => Ok(p.wrapping_add(q)),
                BinaryOp::Sub => Ok(p.wrapping_sub(q)),
                BinaryOp::Mul => Ok(p.wrapping_mul(q)),
                BinaryOp::Div if q == 0 => Err("integer division by zero".into()),
                BinaryOp::Div => Ok(p.wrapping_div(q)),
                // A negative exponent: the real power truncated toward zero (onnxruntime's
                // result), which is 0 unless the base is ±1; 0 to a negative power has none.
                BinaryOp::Pow if q < 0 => match p {
                    0 => Err("integer 0 raised to a negative power".into()),
                    1 => Ok(1),
                    -1 => Ok(if q % 2 == 0 { 1 } else { -1 }),
                    _ => Ok(0),
                },
                BinaryOp::Pow => Ok(p.wrapping_pow(q.min(u32::MAX as i64) as u32)),
                BinaryOp::Mod if q == 0 => Err("integer modulo by zero".into()),
                // ONNX Mod (fmod = 0): the result has the sign of the divisor.
                BinaryOp::Mod => {
                    Ok(p.rem_euclid(q) + if q < 0 && p.rem_euclid(q) != 0 { q } else { 0 })
                }
            })?,
            *dt,
        )),
        _ => Err(format!("mixed operand types {} and {}", a.dtype(), b.dtype())),
    }
}

pub(crate) fn cast(x: &Array, to: DType) -> Array {
    match (x, to) {
        (Array::F32(a), DType::F32) => Array::F32(a.clone()),
        (Array::F32(a), dt) => Array::Int(
            a.mapv(|v| match dt {
                DType::Bool => i64::from(v != 0.0),
                _ => v as i64,
            }),
            dt,
        ),
        (Array::Int(a, _), DType::F32) => Array::F32(a.mapv(|v| v as f32)),
        (Array::Int(a, _), dt) => Array::Int(
            a.mapv(|v| match dt {
                DType::Bool => i64::from(v != 0),
                DType::I8 => i64::from(v as i8),
                DType::U8 => i64::from(v as u8),
                DType::I32 => i64::from(v as i32),
                _ => v,
            }),
            dt,
        ),
    }
}

pub(crate) fn reshape(x: &Array, shape: &[usize]) -> R<Array> {
    let n: usize = shape.iter().product();
    if n != x.shape().iter().product::<usize>() {
        return Err(format!("cannot reshape {:?} to {shape:?}", x.shape()));
    }
    Ok(match x {
        Array::F32(a) => Array::F32(
            a.as_standard_layout().to_shape(IxDyn(shape)).map_err(|e| e.to_string())?.to_owned(),
        ),
        Array::Int(a, dt) => Array::Int(
            a.as_standard_layout().to_shape(IxDyn(shape)).map_err(|e| e.to_string())?.to_owned(),
            *dt,
        ),
    })
}

/// The target of a Reshape: 0 copies the input dimension (unless `allowzero`), -1 is inferred.
pub fn reshape_target(
    input: &[usize],
    spec: impl Iterator<Item = i64>,
    allowzero: bool,
) -> R<Vec<usize>> {
    let spec: Vec<i64> = spec.collect();
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => {
                out.push(*input.get(i).ok_or("0 in a Reshape shape beyond the input rank")?)
            }
            d if d >= 0 => out.push(d as usize),
            d => return Err(format!("invalid Reshape dimension {d}")),
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot infer a dimension reshaping {input:?} to {spec:?}"));
        }
        out[i] = total / known;
    }
    // The element count must not change (ONNX Reshape).
    let n = out.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
    if n != Some(total) {
        return Err(format!(
            "Reshape of {input:?} ({total} elements) to {out:?} changes the element count"
        ));
    }
    Ok(out)
}

pub(crate) fn to2(a: &ArrayD<f32>) -> R<Array2<f32>> {
    a.clone()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|_| format!("expected a matrix, got shape {:?}", a.shape()))
}

/// Batched matrix product with numpy broadcasting of the batch axes.
pub(crate) fn matmul<T: ndarray::LinalgScalar>(a: &ArrayD<T>, b: &ArrayD<T>) -> R<ArrayD<T>> {
    // 1-D operands become matrices and the added axis is removed afterwards.
    let (a2, drop_m) =
        if a.ndim() == 1 { (a.clone().insert_axis(Axis(0)), true) } else { (a.clone(), false) };
    let (b2, drop_n) =
        if b.ndim() == 1 { (b.clone().insert_axis(Axis(1)), true) } else { (b.clone(), false) };
    let (ra, rb) = (a2.ndim(), b2.ndim());
    let (m, k) = (a2.shape()[ra - 2], a2.shape()[ra - 1]);
    let (k2, n) = (b2.shape()[rb - 2], b2.shape()[rb - 1]);
    if k != k2 {
        return Err(format!("MatMul of {:?} and {:?}", a.shape(), b.shape()));
    }
    let batch = broadcast_shape(&a2.shape()[..ra - 2], &b2.shape()[..rb - 2])?;
    let mut ashape = batch.clone();
    ashape.extend([m, k]);
    let mut bshape = batch.clone();
    bshape.extend([k, n]);
    let av =
        a2.broadcast(IxDyn(&ashape)).ok_or("broadcast failed")?.as_standard_layout().to_owned();
    let bv =
        b2.broadcast(IxDyn(&bshape)).ok_or("broadcast failed")?.as_standard_layout().to_owned();
    let nb: usize = batch.iter().product();
    let av = av.into_shape_with_order((nb, m, k)).map_err(|e| e.to_string())?;
    let bv = bv.into_shape_with_order((nb, k, n)).map_err(|e| e.to_string())?;
    let mut out = ndarray::Array3::<T>::zeros((nb, m, n));
    for i in 0..nb {
        out.slice_mut(s![i, .., ..]).assign(&av.slice(s![i, .., ..]).dot(&bv.slice(s![i, .., ..])));
    }
    let mut shape = batch;
    if !drop_m {
        shape.push(m);
    }
    if !drop_n {
        shape.push(n);
    }
    out.into_shape_with_order(IxDyn(&shape)).map_err(|e| e.to_string())
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
    if strides.len() != nd
        || dil.len() != nd
        || kernel.len() != nd
        || strides.contains(&0)
        || dil.contains(&0)
    {
        return Err("window attributes do not match the spatial rank".into());
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
                let eff = (kernel[i] - 1) * dil[i] + 1;
                let total = ((out - 1) * strides[i] + eff).saturating_sub(input[i]);
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
    let eff = (k - 1) * dil + 1;
    let span = (input + pb + pe).checked_sub(eff).ok_or("window larger than the padded input")?;
    Ok(if ceil { span.div_ceil(stride) + 1 } else { span / stride + 1 })
}

/// 1-D or 2-D convolution (NCHW) with a bias, in f32.
pub(crate) fn conv(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    bias: Option<&Array>,
    win: &Window,
    group: usize,
) -> R<ArrayD<f32>> {
    let mut out = conv_t(x, w, win, group)?;
    if let Some(bias) = bias {
        let bias = bias.f32()?;
        for (mi, mut plane) in out.axis_iter_mut(Axis(1)).enumerate() {
            let bv = bias.iter().nth(mi).copied().ok_or("bias shorter than the output channels")?;
            plane.mapv_inplace(|v| v + bv);
        }
    }
    Ok(out)
}

/// 1-D or 2-D convolution (NCHW) via im2col and a GEMM per group, in any GEMM element type
/// (f32 for float models, f64 for exact integer convolutions).
pub(crate) fn conv_t<T: ndarray::LinalgScalar>(
    x: &ArrayD<T>,
    w: &ArrayD<T>,
    win: &Window,
    group: usize,
) -> R<ArrayD<T>> {
    if x.ndim() != 4 && x.ndim() != 3 {
        return Err("only 1-D and 2-D convolutions are supported".into());
    }
    if w.ndim() != x.ndim() {
        return Err(format!("Conv of {:?} with weights {:?}", x.shape(), w.shape()));
    }
    let one_d = x.ndim() == 3;
    let x = if one_d { x.clone().insert_axis(Axis(2)) } else { x.clone() };
    let w = if one_d { w.clone().insert_axis(Axis(2)) } else { w.clone() };
    let win = if one_d {
        let lift = |v: &[usize], d: usize| {
            if v.is_empty() {
                vec![]
            } else {
                std::iter::once(d).chain(v.iter().copied()).collect()
            }
        };
        let pads = if win.pads.len() == 2 {
            vec![0, win.pads[0], 0, win.pads[1]]
        } else {
            win.pads.clone()
        };
        Window {
            kernel: lift(&win.kernel, 1),
            strides: lift(&win.strides, 1),
            dilations: lift(&win.dilations, 1),
            pads,
            ..win.clone()
        }
    } else {
        win.clone()
    };
    let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (m, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    if group == 0 || c != cg * group || m % group != 0 {
        return Err(format!(
            "Conv of input {:?} with weights {:?} in {group} groups",
            x.shape(),
            w.shape()
        ));
    }
    let Geometry { begin: pb, end: pe, strides: st, dilations: dl } =
        pads(&win, &[h, wd], &[kh, kw])?;
    let oh = out_size(h, kh, st[0], dl[0], pb[0], pe[0], false)?;
    let ow = out_size(wd, kw, st[1], dl[1], pb[1], pe[1], false)?;
    let mg = m / group;
    let mut out = ndarray::Array4::<T>::zeros((n, m, oh, ow));
    let w2 =
        w.as_standard_layout().to_shape((m, cg * kh * kw)).map_err(|e| e.to_string())?.to_owned();
    for b in 0..n {
        for g in 0..group {
            let mut cols = Array2::<T>::zeros((cg * kh * kw, oh * ow));
            for ci in 0..cg {
                let plane = x.slice(s![b, g * cg + ci, .., ..]);
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = (ci * kh + ky) * kw + kx;
                        for oy in 0..oh {
                            let iy = (oy * st[0] + ky * dl[0]) as isize - pb[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for ox in 0..ow {
                                let ix = (ox * st[1] + kx * dl[1]) as isize - pb[1] as isize;
                                if ix >= 0 && ix < wd as isize {
                                    cols[[row, oy * ow + ox]] = plane[[iy as usize, ix as usize]];
                                }
                            }
                        }
                    }
                }
            }
            let y = w2.slice(s![g * mg..(g + 1) * mg, ..]).dot(&cols);
            for (mi, yrow) in y.outer_iter().enumerate() {
                let mut dst = out.slice_mut(s![b, g * mg + mi, .., ..]);
                for (d, v) in dst.iter_mut().zip(yrow.iter()) {
                    *d = *v;
                }
            }
        }
    }
    let out = out.into_dyn();
    Ok(if one_d { out.remove_axis(Axis(2)) } else { out })
}

/// N-d max or average pooling (N, C, spatial...).
pub(crate) fn pool(
    x: &ArrayD<f32>,
    max: bool,
    win: &Window,
    count_include_pad: bool,
) -> R<ArrayD<f32>> {
    let nd =
        x.ndim().checked_sub(2).filter(|n| *n >= 1).ok_or("pooling needs N, C and spatial axes")?;
    if win.kernel.len() != nd {
        return Err(format!("kernel_shape has {} values for {nd} spatial axes", win.kernel.len()));
    }
    let spatial = &x.shape()[2..];
    let Geometry { begin, end, strides, dilations } = pads(win, spatial, &win.kernel)?;
    let mut out_shape = x.shape()[..2].to_vec();
    for i in 0..nd {
        let mut o = out_size(
            spatial[i],
            win.kernel[i],
            strides[i],
            dilations[i],
            begin[i],
            end[i],
            win.ceil_mode,
        )?;
        // With ceil_mode, a last window that starts in the end padding is dropped.
        if win.ceil_mode && (o - 1) * strides[i] >= spatial[i] + begin[i] {
            o -= 1;
        }
        out_shape.push(o);
    }
    let mut out = ArrayD::<f32>::zeros(IxDyn(&out_shape));
    let mut at = vec![0usize; x.ndim()];
    for (idx, slot) in out.indexed_iter_mut() {
        let (mut acc, mut count, mut padded) =
            (if max { f32::NEG_INFINITY } else { 0.0 }, 0usize, 0usize);
        for k in ndarray::indices(IxDyn(&win.kernel)) {
            at[0] = idx[0];
            at[1] = idx[1];
            let mut inside = true;
            let mut in_pads = true;
            for i in 0..nd {
                let pos =
                    (idx[i + 2] * strides[i] + k[i] * dilations[i]) as isize - begin[i] as isize;
                if pos < 0 || pos >= spatial[i] as isize {
                    inside = false;
                    // Padding inside the declared pads counts for count_include_pad.
                    in_pads &= pos < (spatial[i] + end[i]) as isize;
                } else {
                    at[i + 2] = pos as usize;
                }
            }
            if !inside {
                padded += usize::from(in_pads);
                continue;
            }
            let v = x[IxDyn(&at)];
            acc = if max { nan_max(acc, v) } else { acc + v };
            count += 1;
        }
        *slot = if max {
            acc
        } else {
            acc / (if count_include_pad { count + padded } else { count }).max(1) as f32
        };
    }
    Ok(out)
}

pub(crate) fn slice(
    x: &Array,
    starts: &[i64],
    ends: &[i64],
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
) -> R<Array> {
    let rank = x.shape().len();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|v| axis(*v, rank)).collect::<R<_>>()?,
        None => (0..starts.len()).map(|i| axis(i as i64, rank)).collect::<R<_>>()?,
    };
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("Slice starts, ends, axes and steps differ in length".into());
    }
    let mut info: Vec<ndarray::SliceInfoElem> =
        (0..rank).map(|_| ndarray::SliceInfoElem::from(..)).collect();
    for (((&k, &s0), &e0), &st) in axes.iter().zip(starts).zip(ends).zip(&steps) {
        if st == 0 {
            return Err("Slice step 0".into());
        }
        let d = x.shape()[k] as i64;
        let (s, e) = crate::shape::slice_range(d, s0, e0, st);
        info[k] = if st > 0 {
            ndarray::SliceInfoElem::Slice {
                start: s as isize,
                end: Some(e.max(s) as isize),
                step: st as isize,
            }
        } else {
            // A negative step walks from `s` down to just above `e`: ndarray expresses it as the
            // range (e, s] traversed backwards.
            let (lo, hi) = (e + 1, s + 1);
            if hi <= lo || d == 0 {
                ndarray::SliceInfoElem::Slice { start: 0, end: Some(0), step: 1 }
            } else {
                let len = hi - lo;
                let steps_taken = (len - 1) / (-st);
                let first = s - steps_taken * (-st);
                ndarray::SliceInfoElem::Slice {
                    start: first as isize,
                    end: Some(hi as isize),
                    step: st as isize,
                }
            }
        };
    }
    let info = ndarray::SliceInfo::<_, IxDyn, IxDyn>::try_from(info).map_err(|e| e.to_string())?;
    Ok(match x {
        Array::F32(a) => Array::F32(a.slice(info.as_ref()).to_owned()),
        Array::Int(a, dt) => Array::Int(a.slice(info.as_ref()).to_owned(), *dt),
    })
}

/// Output shape and, per output element, the flat input index it copies (`None`: filled).
pub(crate) fn pad_map(
    shape: &[usize],
    begin: &[i64],
    end: &[i64],
    mode: PadMode,
) -> R<(Vec<usize>, Vec<Option<usize>>)> {
    let out: Vec<usize> = shape
        .iter()
        .zip(begin.iter().zip(end))
        .map(|(d, (b, e))| {
            let n = *d as i64 + b + e;
            usize::try_from(n).map_err(|_| format!("padding makes a dimension negative ({n})"))
        })
        .collect::<R<_>>()?;
    if mode != PadMode::Constant && shape.contains(&0) && out.iter().product::<usize>() > 0 {
        return Err("cannot pad an empty axis by reflection, edge or wrap".into());
    }
    let strides: Vec<usize> = (0..shape.len()).map(|k| shape[k + 1..].iter().product()).collect();
    let mut map = Vec::with_capacity(out.iter().product());
    for idx in ndarray::indices(IxDyn(&out)) {
        let mut flat = 0usize;
        let mut inside = true;
        for k in 0..shape.len() {
            let d = shape[k] as i64;
            let i = idx[k] as i64 - begin[k];
            let src = if (0..d).contains(&i) {
                i
            } else {
                match mode {
                    PadMode::Constant => {
                        inside = false;
                        break;
                    }
                    PadMode::Edge => i.clamp(0, d - 1),
                    PadMode::Wrap => i.rem_euclid(d),
                    PadMode::Reflect if d == 1 => 0,
                    PadMode::Reflect => {
                        let period = 2 * (d - 1);
                        let r = i.rem_euclid(period);
                        if r >= d { period - r } else { r }
                    }
                }
            };
            flat += src as usize * strides[k];
        }
        map.push(inside.then_some(flat));
    }
    Ok((out, map))
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

/// Convolution weights minus their zero point (per tensor, or per output channel).
pub(crate) fn centered_channels(w: &Array, zp: Option<&Array>) -> R<ArrayD<f64>> {
    let mut y = w.ints()?.mapv(|v| v as f64);
    if let Some(z) = zp {
        let z: Vec<f64> = z.ints()?.iter().map(|v| *v as f64).collect();
        for (m, mut plane) in y.axis_iter_mut(Axis(0)).enumerate() {
            let zv = if z.len() == 1 {
                z[0]
            } else {
                *z.get(m).ok_or("per-channel zero point shorter than the channels")?
            };
            plane.mapv_inplace(|v| v - zv);
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

/// Geometry of a transposed convolution: output shape, begin pads, kernel, strides, dilations.
#[allow(clippy::type_complexity, reason = "a private helper's tuple of related vectors")]
pub(crate) fn conv_transpose_shape(
    x: &[usize],
    w: &[usize],
    win: &Window,
    group: usize,
    output_padding: &[usize],
    output_shape: &[usize],
) -> R<(Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>)> {
    let nd = x
        .len()
        .checked_sub(2)
        .filter(|n| (1..=2).contains(n))
        .ok_or("only 1-D and 2-D transposed convolutions are supported")?;
    if group == 0 || w.len() != x.len() || w[0] != x[1] || !x[1].is_multiple_of(group) {
        return Err(format!("ConvTranspose of {x:?} with weights {w:?} in {group} groups"));
    }
    let kernel: Vec<usize> =
        if win.kernel.is_empty() { w[2..].to_vec() } else { win.kernel.clone() };
    if kernel != w[2..] {
        return Err(format!("kernel_shape {kernel:?} does not match weights {w:?}"));
    }
    let strides = if win.strides.is_empty() { vec![1; nd] } else { win.strides.clone() };
    let dil = if win.dilations.is_empty() { vec![1; nd] } else { win.dilations.clone() };
    let outpad = if output_padding.is_empty() { vec![0; nd] } else { output_padding.to_vec() };
    if kernel.len() != nd || strides.len() != nd || dil.len() != nd || outpad.len() != nd {
        return Err("window attributes do not match the spatial rank".into());
    }
    let input = &x[2..];
    let (mut begin, mut out) = (vec![0usize; nd], vec![0usize; nd]);
    for i in 0..nd {
        let full = strides[i] * input[i].saturating_sub(1)
            + outpad[i]
            + (kernel[i].max(1) - 1) * dil[i]
            + 1;
        if !output_shape.is_empty()
            || matches!(win.auto_pad, AutoPad::SameUpper | AutoPad::SameLower)
        {
            let target = if output_shape.is_empty() {
                input[i] * strides[i]
            } else {
                output_shape[output_shape.len().saturating_sub(nd) + i]
            };
            let total = full.saturating_sub(target);
            begin[i] =
                if win.auto_pad == AutoPad::SameUpper { total / 2 } else { total - total / 2 };
            out[i] = target;
        } else {
            let (b, e) =
                if win.pads.len() == 2 * nd { (win.pads[i], win.pads[i + nd]) } else { (0, 0) };
            begin[i] = b;
            out[i] = full.checked_sub(b + e).ok_or("padding larger than the output")?;
        }
    }
    let mut shape = vec![x[0], w[1] * group];
    shape.extend(&out);
    Ok((shape, begin, kernel, strides, dil))
}

/// Transposed convolution (NCHW, 1-D or 2-D) by scattering every input element.
pub(crate) fn conv_transpose(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    win: &Window,
    group: usize,
    output_padding: &[usize],
    output_shape: &[usize],
) -> R<ArrayD<f32>> {
    // The shape function checks ranks, channels and groups.
    let (shape, begin, kernel, strides, dil) =
        conv_transpose_shape(x.shape(), w.shape(), win, group, output_padding, output_shape)?;
    let nd = x.ndim() - 2;
    let mg = w.shape()[1];
    let out = &shape[2..];
    let cg = x.shape()[1] / group;
    let mut y = ArrayD::<f32>::zeros(IxDyn(&shape));
    let x4 = x.view();
    for ((b, ci, ix, jx), v) in
        x4.indexed_iter().map(|(i, v)| ((i[0], i[1], i[2], if nd == 2 { i[3] } else { 0 }), *v))
    {
        let g = ci / cg;
        for mo in 0..mg {
            for ky in 0..kernel[0] {
                let oy = (ix * strides[0] + ky * dil[0]) as isize - begin[0] as isize;
                if oy < 0 || oy >= out[0] as isize {
                    continue;
                }
                let kxs = if nd == 2 { kernel[1] } else { 1 };
                for kx in 0..kxs {
                    if nd == 2 {
                        let ox = (jx * strides[1] + kx * dil[1]) as isize - begin[1] as isize;
                        if ox < 0 || ox >= out[1] as isize {
                            continue;
                        }
                        y[[b, g * mg + mo, oy as usize, ox as usize]] += v * w[[ci, mo, ky, kx]];
                    } else {
                        y[[b, g * mg + mo, oy as usize]] += v * w[[ci, mo, ky]];
                    }
                }
            }
        }
    }
    Ok(y)
}

/// Output shape and per-axis scales of a `Resize` (from `sizes`, or `floor(input · scale)`).
pub(crate) fn resize_shape(
    input: &[usize],
    scales: Option<&[f64]>,
    sizes: Option<&[i64]>,
) -> R<(Vec<usize>, Vec<f64>)> {
    match (scales, sizes) {
        (_, Some(sz)) => {
            if sz.len() != input.len() {
                return Err(format!("{} sizes for rank {}", sz.len(), input.len()));
            }
            let out: Vec<usize> = sz
                .iter()
                .map(|v| usize::try_from(*v).map_err(|_| "negative Resize size"))
                .collect::<Result<_, _>>()?;
            let sc = out.iter().zip(input).map(|(o, i)| *o as f64 / (*i).max(1) as f64).collect();
            Ok((out, sc))
        }
        (Some(sc), None) => {
            if sc.len() != input.len() {
                return Err(format!("{} scales for rank {}", sc.len(), input.len()));
            }
            let out = input.iter().zip(sc).map(|(i, s)| (*i as f64 * s).floor() as usize).collect();
            Ok((out, sc.to_vec()))
        }
        (None, None) => Err("Resize needs scales or sizes".into()),
    }
}

pub(crate) fn resize(
    x: &ArrayD<f64>,
    out: &[usize],
    scales: &[f64],
    linear: bool,
    coords: ResizeCoords,
    nearest: NearestMode,
) -> ArrayD<f64> {
    let input = x.shape().to_vec();
    let rank = input.len();
    // Per axis and output coordinate: the source coordinate.
    let src: Vec<Vec<f64>> =
        (0..rank).map(|k| resize_coords(input[k], out[k], scales[k], coords)).collect();
    let strides: Vec<usize> = (0..rank).map(|k| input[k + 1..].iter().product()).collect();
    let flat: Vec<f64> = x.iter().copied().collect();
    let mut y = ArrayD::<f64>::zeros(IxDyn(out));
    for (idx, slot) in y.indexed_iter_mut() {
        if linear {
            // Each axis contributes a floor index, the next one, and a weight.
            let taps: Vec<(usize, usize, f64)> = (0..rank)
                .map(|k| {
                    let last = input[k].saturating_sub(1) as f64;
                    let c = src[k][idx[k]].clamp(0.0, last);
                    let i0 = c.floor();
                    let i1 = (i0 + 1.0).min(last);
                    (i0 as usize, i1 as usize, c - i0)
                })
                .collect();
            let mut acc = 0.0;
            for corner in 0..(1usize << rank) {
                let (mut at, mut w) = (0usize, 1.0);
                for (k, (i0, i1, f)) in taps.iter().enumerate() {
                    let hi = corner >> k & 1 == 1;
                    at += (if hi { *i1 } else { *i0 }) * strides[k];
                    w *= if hi { *f } else { 1.0 - f };
                }
                if w != 0.0 {
                    acc += w * flat[at];
                }
            }
            *slot = acc;
        } else {
            let mut at = 0usize;
            for k in 0..rank {
                at += nearest_index(src[k][idx[k]], input[k], nearest) * strides[k];
            }
            *slot = flat[at];
        }
    }
    y
}

/// The input index nearest-neighbour `Resize` reads for source coordinate `c` on an axis of
/// `len` elements: rounded by `mode`, then clamped into the axis (ONNX Resize-19, `nearest_mode`).
pub(crate) fn nearest_index(c: f64, len: usize, mode: NearestMode) -> usize {
    let r = match mode {
        NearestMode::RoundPreferFloor => {
            if c.fract() == 0.5 {
                c.floor()
            } else {
                c.round()
            }
        }
        NearestMode::RoundPreferCeil => {
            if c.fract() == 0.5 {
                c.ceil()
            } else {
                c.round()
            }
        }
        NearestMode::Floor => c.floor(),
        NearestMode::Ceil => c.ceil(),
    };
    (r.max(0.0) as usize).min(len.saturating_sub(1))
}

/// The source coordinate of each output index on one axis of a `Resize` from `len_in` to
/// `len_out` elements at `scale` (ONNX Resize-19, `coordinate_transformation_mode`).
pub(crate) fn resize_coords(
    len_in: usize,
    len_out: usize,
    scale: f64,
    coords: ResizeCoords,
) -> Vec<f64> {
    // `lo` is the integer output length, `lf` the real one (`input · scale`). Resize-19 defines
    // `scale = length_resized / length_original`, so with a given scale `length_resized` is
    // `lf`, which align_corners and pytorch_half_pixel use: the ONNX backend tests' data (from
    // onnx's reference) follow this reading, onnxruntime the integer length instead; they
    // differ only for non-integer output lengths, and we follow the conformance tests.
    let (li, lo, s) = (len_in as f64, len_out as f64, scale);
    let lf = li * s;
    (0..len_out)
        .map(|o| {
            let o = o as f64;
            match coords {
                ResizeCoords::HalfPixel => (o + 0.5) / s - 0.5,
                ResizeCoords::HalfPixelSymmetric => {
                    let adjustment = lo / (s * li);
                    let center = li / 2.0;
                    let offset = center * (1.0 - adjustment);
                    offset + (o + 0.5) / s - 0.5
                }
                ResizeCoords::PytorchHalfPixel => {
                    if lf > 1.0 {
                        (o + 0.5) / s - 0.5
                    } else {
                        0.0
                    }
                }
                ResizeCoords::AlignCorners => {
                    if lf == 1.0 {
                        0.0
                    } else {
                        o * (li - 1.0) / (lf - 1.0)
                    }
                }
                ResizeCoords::Asymmetric => o / s,
            }
        })
        .collect()
}

/// For each output index on one axis of a nearest-neighbour `Resize`, the input index it
/// copies: the op's definition, shared by the reference and the lowering (which may only take
/// a shortcut, such as a plain repeat, when it equals this map).
pub(crate) fn nearest_index_map(
    len_in: usize,
    len_out: usize,
    scale: f64,
    coords: ResizeCoords,
    mode: NearestMode,
) -> Vec<usize> {
    resize_coords(len_in, len_out, scale, coords)
        .into_iter()
        .map(|c| nearest_index(c, len_in, mode))
        .collect()
}
