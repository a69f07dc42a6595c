//! `legalize`: graph to graph, before scheduling. It rewrites nodes the kernels do not take as
//! they are into equivalent nodes they do take, in plain IR (so `--dump-ir` shows the result
//! and every later step sees ordinary nodes):
//!
//! - 1-D convolution and pooling (`[N, C, W]`) become their 2-D forms over a unit height:
//!   `Unsqueeze` of the input to `[N, C, 1, W]` (an alias), the 2-D node with a `1 × k` window
//!   (and weights reshaped to `[M, C/g, 1, k]`, sharing the bytes), and `Squeeze` back.
//!
//! - A transposed convolution with constant float weights becomes a convolution of the
//!   *spread* input: per spatial axis, `stride - 1` zeros between input elements and the
//!   kernel's reach (less the begin pads) around them, built from plain ops (`Unsqueeze` of a
//!   unit axis after each spatial one, a constant `Pad` of those axes and the spatial ones,
//!   `Reshape` merging them, and a `Slice` where the pads crop), then `Conv` with stride 1, the
//!   same dilations and the weights flipped and transposed to `[M, C/g, k...]` at compile time:
//!   `y[o] = Σ x[i]·w[o - s·i]` is a correlation of the spread input with the flipped kernel
//!   (Dumoulin & Visin, "A guide to convolution arithmetic", 2016, §4).
//!
//! - The explicit integer operators with constant weights and quantization parameters
//!   (ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul) become `QConv` with an int32
//!   output (the accumulator `Σ (x − x_zp)·(w − w_zp) + bias`, exactly the reference's), a
//!   matrix product as a 1×1 convolution between `Reshape`s. Weights minus their zero point
//!   that leave int8 (uint8 weights: up to ±255) are split into parts that fit,
//!   `w − w_zp = w₁ + w₂ (+ w₃)`, against the input repeated along channels (`Concat`).
//!   QLinear* then requantise in float exactly as the reference does:
//!   `DequantizeLinear(acc, m)` with `m = f32(x_scale·w_scale) / f32(y_scale)` gives
//!   `f32(acc)·m`, and `QuantizeLinear(·, 1, y_zp)` rounds it half to even and saturates.
//!
//! Each node of the result records the original node it came from, so per-node answers
//! (`select::device_support`) map back to the graph the user gave.

use crate::interp::pads;
use crate::ir::{
    AutoPad, DType, Graph, Node, Op, PadMode, Tensor, TensorType, Value, ValueId, Window,
};

use super::LowerError;

/// The legalized graph and, per node, the index of the original node it implements.
pub(crate) struct Legalized {
    pub(crate) graph: Graph,
    pub(crate) origin: Vec<usize>,
}

fn shape(g: &Graph, v: Option<ValueId>) -> Option<Vec<usize>> {
    v.and_then(|v| g.value(v).ty.as_ref().map(|t| t.shape.clone()))
}

fn add_value(g: &mut Graph, name: String, ty: TensorType, constant: Option<Tensor>) -> ValueId {
    g.add_value(Value { name, ty: Some(ty), constant })
}

/// Renames the values legalize added (ids from `first` on) whose names another value already
/// has, to `name~2`, `name~3`, ...: a user's value may be called anything, including what
/// legalize generates. One pass with a set of the names in use.
fn unique_names(g: &mut Graph, first: usize) {
    let mut used: std::collections::HashSet<String> =
        g.values[..first.min(g.values.len())].iter().map(|v| v.name.clone()).collect();
    for v in g.values.iter_mut().skip(first) {
        if !used.insert(v.name.clone()) {
            let base = v.name.clone();
            let mut k = 2;
            while !used.insert(format!("{base}~{k}")) {
                k += 1;
            }
            v.name = format!("{base}~{k}");
        }
    }
}

/// Appends `op` (Unsqueeze or Squeeze) of `x` at axis 2 as node `name`, producing `out`.
fn unit_axis(g: &mut Graph, name: String, op: Op, x: ValueId, out: ValueId) {
    let t = Tensor::from_i64(vec![1], &[2]);
    let ty = TensorType { dtype: DType::I64, shape: vec![1] };
    let axes = add_value(g, format!("{name}.axes"), ty, Some(t));
    let op_type = if matches!(op, Op::Squeeze { .. }) { "Squeeze" } else { "Unsqueeze" };
    g.nodes.push(Node {
        name,
        op_type: op_type.into(),
        op,
        inputs: vec![Some(x), Some(axes)],
        outputs: vec![out],
    });
}

/// Legalizes `graph` (folded, typed): the explicit integer operators, transposed convolutions, then 1-D windows (the
/// convolutions the first step makes may be 1-D).
pub(crate) fn legalize(graph: &Graph) -> Result<Legalized, LowerError> {
    let zero = explicit_integer(graph)?;
    let first = conv_transpose_to_conv(&zero.graph)?;
    let mut second = lift_1d(&first.graph)?;
    let origin = second.origin.iter().map(|i| zero.origin[first.origin[*i]]).collect();
    unique_names(&mut second.graph, graph.values.len());
    Ok(Legalized { graph: second.graph, origin })
}

/// Appends node `name` computing `op` of `inputs` into a new value of type `ty`; returns it.
fn push(
    g: &mut Graph,
    name: String,
    op_type: &str,
    op: Op,
    inputs: Vec<Option<ValueId>>,
    ty: TensorType,
) -> ValueId {
    let out = add_value(g, format!("{name}.out"), ty, None);
    g.nodes.push(Node { name, op_type: op_type.into(), op, inputs, outputs: vec![out] });
    out
}

/// A new int64 vector constant.
fn ints(g: &mut Graph, name: String, v: &[i64]) -> ValueId {
    let ty = TensorType { dtype: DType::I64, shape: vec![v.len()] };
    add_value(g, name, ty, Some(Tensor::from_i64(vec![v.len()], v)))
}

/// The transposed convolutions with constant float weights as spread + convolution (see the
/// module documentation); every other node as it is.
fn conv_transpose_to_conv(graph: &Graph) -> Result<Legalized, LowerError> {
    let mut g = Graph { nodes: Vec::with_capacity(graph.nodes.len()), ..graph.clone() };
    let mut origin = Vec::with_capacity(graph.nodes.len());
    for (i, n) in graph.nodes.iter().enumerate() {
        let before = g.nodes.len();
        if !spread_conv(graph, &mut g, n)? {
            g.nodes.push(n.clone());
        }
        origin.resize(g.nodes.len(), i);
        debug_assert!(g.nodes.len() > before);
    }
    Ok(Legalized { graph: g, origin })
}

/// Writes the spread + convolution form of `n` into `g` if `n` is a transposed convolution the
/// device can run that way; returns whether it did.
fn spread_conv(graph: &Graph, g: &mut Graph, n: &Node) -> Result<bool, LowerError> {
    let Op::ConvTranspose { window, group, output_padding, output_shape } = &n.op else {
        return Ok(false);
    };
    let (Some(x), Some(w), Some(&out)) = (
        n.inputs.first().copied().flatten(),
        n.inputs.get(1).copied().flatten(),
        n.outputs.first(),
    ) else {
        return Ok(false);
    };
    let (Some(xt), Some(wt)) = (graph.value(x).ty.as_ref(), graph.value(w).constant.as_ref())
    else {
        return Ok(false);
    };
    let nd = xt.shape.len().saturating_sub(2);
    if !(1..=2).contains(&nd) || xt.dtype != DType::F32 || wt.dtype != DType::F32 {
        return Ok(false);
    }
    let err = |m: String| LowerError::at(&n.name, m);
    let (xs, ws) = (&xt.shape, &wt.shape);
    let (shape, begin, kernel, strides, dil) = crate::ops::conv::conv_transpose_shape(
        xs,
        ws,
        window,
        *group,
        output_padding,
        output_shape,
    )
    .map_err(err)?;
    if strides.contains(&0) || kernel.contains(&0) {
        return Err(err("a zero stride or kernel size".into()));
    }
    let name = &n.name;
    let f32t = |shape: Vec<usize>| TensorType { dtype: DType::F32, shape };
    // Per spatial axis: input element `j` lands at `front + j·s` of a buffer of `len` elements.
    let (mut pad_begin, mut pad_end) = (vec![0i64; 2 + 2 * nd], vec![0i64; 2 + 2 * nd]);
    let (mut merged, mut len) = (vec![xs[0], xs[1]], vec![]);
    let (mut crop_start, mut crop) = (vec![], false);
    for a in 0..nd {
        let (h, s) = (xs[2 + a] as i64, strides[a] as i64);
        let reach = (dil[a] * (kernel[a] - 1)) as i64;
        let l = shape[2 + a] as i64 + reach;
        let front = reach - begin[a] as i64;
        let lead = front.max(0);
        let start = (-front).max(0);
        // Whole strides of zeros before (on the input axis), the rest on the unit axis.
        let (bh, bs) = (lead / s, lead % s);
        let ah = ((l + start + s - 1) / s - h - bh).max(0);
        pad_begin[2 + 2 * a] = bh;
        pad_begin[3 + 2 * a] = bs;
        pad_end[2 + 2 * a] = ah;
        pad_end[3 + 2 * a] = s - 1 - bs;
        let m = (h + bh + ah) * s;
        crop |= start > 0 || m - start != l;
        merged.push(m as usize);
        crop_start.push(start);
        len.push(l as usize);
    }
    let mut unit_shape = vec![xs[0], xs[1]];
    for a in 0..nd {
        unit_shape.extend([xs[2 + a], 1]);
    }
    let axes: Vec<i64> = (0..nd).map(|a| 3 + 2 * a as i64).collect();
    let axes_v = ints(g, format!("{name}/spread.axes"), &axes);
    let op = Op::Unsqueeze { axes: None };
    let t = push(
        g,
        format!("{name}/spread.units"),
        "Unsqueeze",
        op,
        vec![Some(x), Some(axes_v)],
        f32t(unit_shape.clone()),
    );
    let padded: Vec<usize> = unit_shape
        .iter()
        .enumerate()
        .map(|(k, d)| (*d as i64 + pad_begin[k] + pad_end[k]) as usize)
        .collect();
    let pads = ints(g, format!("{name}/spread.pads"), &[pad_begin, pad_end].concat());
    let op = Op::Pad { mode: PadMode::Constant, pads: None, value: 0.0 };
    let t =
        push(g, format!("{name}/spread.zeros"), "Pad", op, vec![Some(t), Some(pads)], f32t(padded));
    let dims: Vec<i64> = merged.iter().map(|d| *d as i64).collect();
    let dims_v = ints(g, format!("{name}/spread.shape"), &dims);
    let op = Op::Reshape { allowzero: false };
    let mut t = push(
        g,
        format!("{name}/spread.merge"),
        "Reshape",
        op,
        vec![Some(t), Some(dims_v)],
        f32t(merged.clone()),
    );
    if crop {
        let ends: Vec<i64> = crop_start.iter().zip(&len).map(|(s, l)| s + *l as i64).collect();
        let axes: Vec<i64> = (0..nd).map(|a| 2 + a as i64).collect();
        let starts = ints(g, format!("{name}/spread.starts"), &crop_start);
        let ends = ints(g, format!("{name}/spread.ends"), &ends);
        let axes = ints(g, format!("{name}/spread.crop_axes"), &axes);
        let mut cropped = vec![xs[0], xs[1]];
        cropped.extend(&len);
        let op = Op::Slice { attrs: None };
        let inputs = vec![Some(t), Some(starts), Some(ends), Some(axes)];
        t = push(g, format!("{name}/spread.crop"), "Slice", op, inputs, f32t(cropped));
    }
    // w'[o][i][k...] = w[g·cin_g + i][o - g·cout_g][flipped k...]
    let (cin, cout_g) = (ws[0], ws[1]);
    let cin_g = cin / group;
    let cout = cout_g * group;
    let taps: usize = kernel.iter().product();
    let wv = wt.f32s();
    let mut flipped = vec![0f32; cout * cin_g * taps];
    for o in 0..cout {
        let gi = o / cout_g;
        for i in 0..cin_g {
            for k in 0..taps {
                let src = ((gi * cin_g + i) * cout_g + (o - gi * cout_g)) * taps + (taps - 1 - k);
                flipped[(o * cin_g + i) * taps + k] = wv[src];
            }
        }
    }
    let mut w2shape = vec![cout, cin_g];
    w2shape.extend(&kernel);
    let w2 = add_value(
        g,
        format!("{}/flipped", graph.value(w).name),
        f32t(w2shape.clone()),
        Some(Tensor::from_f32(w2shape, &flipped)),
    );
    let mut inputs = n.inputs.clone();
    inputs[0] = Some(t);
    inputs[1] = Some(w2);
    let op = Op::Conv {
        window: Window {
            kernel: kernel.clone(),
            strides: vec![1; nd],
            dilations: dil,
            pads: vec![0; 2 * nd],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        },
        group: *group,
    };
    g.nodes.push(Node {
        name: name.clone(),
        op_type: "Conv".into(),
        op,
        inputs,
        outputs: vec![out],
    });
    Ok(true)
}

/// 1-D convolutions and pooling as their 2-D forms over a unit height.
fn lift_1d(graph: &Graph) -> Result<Legalized, LowerError> {
    let mut g = Graph { nodes: Vec::with_capacity(graph.nodes.len()), ..graph.clone() };
    let mut origin = Vec::with_capacity(graph.nodes.len());
    for (i, n) in graph.nodes.iter().enumerate() {
        let x = n.inputs.first().copied().flatten();
        let lift = matches!(n.op, Op::Conv { .. } | Op::Pool { .. })
            && shape(graph, x).is_some_and(|s| s.len() == 3)
            && graph
                .value(x.unwrap_or(ValueId(0)))
                .ty
                .as_ref()
                .is_some_and(|t| t.dtype == DType::F32);
        if !lift {
            g.nodes.push(n.clone());
            origin.push(i);
            continue;
        }
        let err = |m: String| LowerError::at(&n.name, m);
        let (Some(x), Some(&out)) = (x, n.outputs.first()) else {
            return Err(err("a window operation without input or output".into()));
        };
        let xs = shape(graph, Some(x)).unwrap_or_default();
        let os = shape(graph, Some(out)).ok_or_else(|| err("untyped output".into()))?;
        let (window, kernel) = match &n.op {
            Op::Conv { window, .. } => {
                let ws = shape(graph, n.inputs.get(1).copied().flatten())
                    .ok_or_else(|| err("untyped weights".into()))?;
                (window, ws[2])
            }
            Op::Pool { window, .. } => {
                (window, *window.kernel.first().ok_or_else(|| err("no kernel_shape".into()))?)
            }
            _ => unreachable!("matched above"),
        };
        let geo = pads(window, &xs[2..], &[kernel]).map_err(err)?;
        let window2 = Window {
            kernel: vec![1, kernel],
            strides: vec![1, geo.strides[0]],
            dilations: vec![1, geo.dilations[0]],
            pads: vec![0, geo.begin[0], 0, geo.end[0]],
            auto_pad: AutoPad::NotSet,
            ceil_mode: window.ceil_mode,
        };
        let name = &n.name;
        let f32t = |shape: Vec<usize>| TensorType { dtype: DType::F32, shape };
        let x4 =
            add_value(&mut g, format!("{name}/lift.in"), f32t(vec![xs[0], xs[1], 1, xs[2]]), None);
        unit_axis(&mut g, format!("{name}/lift"), Op::Unsqueeze { axes: None }, x, x4);
        origin.push(i);
        let mut inputs = n.inputs.clone();
        inputs[0] = Some(x4);
        let op = match &n.op {
            Op::Conv { group, .. } => {
                let w = n.inputs[1].ok_or_else(|| err("no weights".into()))?;
                let wv = graph.value(w);
                let ws = shape(graph, Some(w)).unwrap_or_default();
                let w4shape = vec![ws[0], ws[1], 1, ws[2]];
                // Constant weights are reshaped in place (same bytes); computed ones through an
                // Unsqueeze.
                let w4 = match &wv.constant {
                    Some(t) => {
                        let t4 = Tensor { shape: w4shape.clone(), ..t.clone() };
                        add_value(&mut g, format!("{}/2d", wv.name), f32t(w4shape), Some(t4))
                    }
                    None => {
                        let w4 = add_value(&mut g, format!("{name}/lift.w"), f32t(w4shape), None);
                        let op = Op::Unsqueeze { axes: None };
                        unit_axis(&mut g, format!("{name}/lift.weights"), op, w, w4);
                        origin.push(i);
                        w4
                    }
                };
                inputs[1] = Some(w4);
                Op::Conv { window: window2, group: *group }
            }
            Op::Pool { max, count_include_pad, .. } => {
                Op::Pool { max: *max, window: window2, count_include_pad: *count_include_pad }
            }
            _ => unreachable!("matched above"),
        };
        let out4 =
            add_value(&mut g, format!("{name}/lift.out"), f32t(vec![os[0], os[1], 1, os[2]]), None);
        g.nodes.push(Node {
            name: name.clone(),
            op_type: n.op_type.clone(),
            op,
            inputs,
            outputs: vec![out4],
        });
        origin.push(i);
        unit_axis(&mut g, format!("{name}/unlift"), Op::Squeeze { axes: None }, out4, out);
        origin.push(i);
    }
    Ok(Legalized { graph: g, origin })
}

/// The explicit integer operators as `QConv` (see the module documentation); every other
/// node as it is.
fn explicit_integer(graph: &Graph) -> Result<Legalized, LowerError> {
    let mut g = Graph { nodes: Vec::with_capacity(graph.nodes.len()), ..graph.clone() };
    let mut origin = Vec::with_capacity(graph.nodes.len());
    for (i, n) in graph.nodes.iter().enumerate() {
        if !integer_op(graph, &mut g, n)? {
            g.nodes.push(n.clone());
        }
        origin.resize(g.nodes.len(), i);
    }
    Ok(Legalized { graph: g, origin })
}

/// Writes the `QConv` form of `n` into `g` if `n` is ConvInteger, MatMulInteger, QLinearConv
/// or QLinearMatMul; returns whether it did. Errors: what keeps such a node off the device
/// (computed weights or parameters, a per-row or per-channel parameter the kernels do not
/// take, a possible int32 overflow).
fn integer_op(graph: &Graph, g: &mut Graph, n: &Node) -> Result<bool, LowerError> {
    let (conv, qlinear) = match &n.op {
        Op::ConvInteger { .. } => (true, false),
        Op::QLinearConv { .. } => (true, true),
        Op::MatMulInteger => (false, false),
        Op::QLinearMatMul => (false, true),
        _ => return Ok(false),
    };
    let err = |m: &str| LowerError::at(&n.name, format!("{}: {m}", n.op_type));
    // Input positions of x, x_zp, w, w_zp (and the scales of QLinear*: x 1, w 4, y 6, y_zp 7).
    let (xi, xzi, wi, wzi) = if qlinear { (0, 2, 3, 5) } else { (0, 2, 1, 3) };
    let input = |i: usize| n.inputs.get(i).copied().flatten();
    let constant = |i: usize| input(i).and_then(|v| graph.value(v).constant.as_ref());
    let x = input(xi).ok_or_else(|| err("no input"))?;
    // An untyped input comes from a node the compiler does not support; `select` names it.
    let Some(xt) = graph.value(x).ty.clone() else { return Ok(false) };
    if !matches!(xt.dtype, DType::U8 | DType::I8) {
        return Err(err(&format!("{} input is not lowered", xt.dtype)));
    }
    let w = constant(wi).ok_or_else(|| err("the weights must be constant"))?;
    let params = if qlinear { vec![1, 2, 4, 5, 6, 7] } else { vec![2, 3] };
    if params.iter().any(|i| input(*i).is_some() && constant(*i).is_none()) {
        return Err(err("the quantization parameters must be constant"));
    }
    let int_input = |i: usize| constant(i).map(Tensor::i64s);
    let x_zp = match int_input(xzi) {
        None => 0,
        Some(v) if v.len() == 1 => v[0],
        Some(_) => return Err(err("a per-row input zero point is not lowered")),
    };
    let wz = int_input(wzi).unwrap_or_else(|| vec![0]);
    let wv = w.i64s();
    let name = &n.name;
    let out = *n.outputs.first().ok_or_else(|| err("no output"))?;
    let ot = graph.value(out).ty.clone().ok_or_else(|| err("untyped output"))?;
    let unit = Window {
        kernel: vec![1, 1],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![0, 0, 0, 0],
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
    };
    // Weight sets (one per batch of a batched B) as [cout][inner] minus their zero points,
    // and the geometry: convolutions take x as it is, matrix products A as [M, K, 1, 1].
    let (cout, inner, window, group, batches, m) = match &n.op {
        Op::ConvInteger { window, group } | Op::QLinearConv { window, group } => {
            if w.shape.len() != 4 || xt.shape.len() != 4 {
                return Err(err("only 2-D integer convolutions are lowered"));
            }
            (w.shape[0], w.len() / w.shape[0].max(1), window.clone(), *group, 1, 0)
        }
        _ => {
            let (r, ra) = (w.shape.len(), xt.shape.len());
            if r < 2 || ra < 2 {
                return Err(err("1-D matrix products are not lowered"));
            }
            let batch = &w.shape[..r - 2];
            if r > 2 && (ra != r || xt.shape[..ra - 2] != *batch) {
                return Err(err("a batched B with other batch dimensions than A is not lowered"));
            }
            let (k, nn) = (w.shape[r - 2], w.shape[r - 1]);
            let bt: usize = batch.iter().product();
            // A 2-D B serves every row of A at once.
            let m = if r == 2 {
                xt.shape.iter().product::<usize>() / k.max(1)
            } else {
                xt.shape[ra - 2]
            };
            (nn, k, unit, 1, bt, m)
        }
    };
    if !(wz.len() == 1 || wz.len() == cout) {
        return Err(err("the weight zero point is neither per tensor nor per output channel"));
    }
    let zp_of = |o: usize| wz[if wz.len() == 1 { 0 } else { o }];
    let per = cout * inner;
    let mut wd = vec![0i64; batches * per];
    for j in 0..batches {
        for o in 0..cout {
            for k in 0..inner {
                let v = if conv { wv[o * inner + k] } else { wv[j * per + k * cout + o] };
                wd[j * per + o * inner + k] = v - zp_of(o);
            }
        }
    }
    // Parts that fit int8: `ceil(max |w − w_zp| / 127)`.
    let maxabs = wd.iter().map(|v| v.abs()).max().unwrap_or(0);
    let parts = if wd.iter().all(|v| (-128..=127).contains(v)) {
        1
    } else {
        (maxabs as u64).div_ceil(127) as usize
    };
    // Grouped and depthwise ones are left to the conv family, which refuses them by name.
    if group > 1 {
        return Ok(false);
    }
    let bias: Vec<i64> = if n.op_type == "QLinearConv" && input(8).is_some() {
        let b = constant(8).ok_or_else(|| err("the bias must be constant"))?;
        if b.dtype != DType::I32 || b.len() != cout {
            return Err(err("the bias must be int32, one per output channel"));
        }
        b.i64s()
    } else {
        vec![0; cout]
    };
    // The accumulator stays inside int32 (the kernel's sums wrap).
    let (tlo, thi) = if xt.dtype == DType::I8 { (-128, 127) } else { (0, 255) };
    let xmax = (x_zp - tlo).max(thi - x_zp);
    let bmax = bias.iter().map(|b| b.abs()).max().unwrap_or(0);
    if (inner as i64) * xmax * maxabs + bmax + (inner as i64) * 255 * 128 >= i64::from(i32::MAX) {
        return Err(err("the int32 accumulator could overflow"));
    }
    let b32: Vec<u8> = bias.iter().flat_map(|b| (*b as i32).to_le_bytes()).collect();
    let bt = Tensor { dtype: DType::I32, shape: vec![cout], data: b32.into() };
    let bty = TensorType { dtype: DType::I32, shape: vec![cout] };
    let bv = add_value(g, format!("{name}/int.bias"), bty, Some(bt));
    let ty = |dtype: DType, shape: &[usize]| TensorType { dtype, shape: shape.to_vec() };
    // One QConv per weight set: `src` (4-D) repeated `parts` times along channels.
    let qconv = |g: &mut Graph, j: usize, src: ValueId, shape: &[usize], out_shape: &[usize]| {
        let mut src = src;
        if parts > 1 {
            let mut s2 = shape.to_vec();
            s2[1] *= parts;
            src = push(
                g,
                format!("{name}/int.repeat{j}"),
                "Concat",
                Op::Concat { axis: 1 },
                vec![Some(src); parts],
                ty(xt.dtype, &s2),
            );
        }
        let mut qw = Vec::with_capacity(per * parts);
        for o in 0..cout {
            let mut rest = wd[j * per + o * inner..j * per + (o + 1) * inner].to_vec();
            for _ in 0..parts {
                for r in rest.iter_mut() {
                    // One part holds any int8 weight, −128 included; only a split needs the
                    // symmetric ±127 parts.
                    let part = if parts == 1 { *r } else { (*r).clamp(-127, 127) };
                    qw.push(part as i8 as u8);
                    *r -= part;
                }
            }
        }
        let mut wshape = if conv { w.shape.clone() } else { vec![cout, inner, 1, 1] };
        wshape[1] *= parts;
        let wt = Tensor { dtype: DType::I8, shape: wshape.clone(), data: qw.into() };
        let wv = add_value(g, format!("{name}/int.w{j}"), ty(DType::I8, &wshape), Some(wt));
        let op = Op::QConv {
            window: window.clone(),
            group,
            x_zp: x_zp as i32,
            y_zp: 0,
            lo: 0,
            hi: 0,
            out: DType::I32,
        };
        push(
            g,
            format!("{name}/int.conv{j}"),
            "QConv",
            op,
            vec![Some(src), Some(wv), Some(bv), None],
            ty(DType::I32, out_shape),
        )
    };
    let reshape = |g: &mut Graph, nm: String, src: ValueId, dt: DType, shape: &[usize]| {
        let dims: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
        let sv = ints(g, format!("{nm}.shape"), &dims);
        push(
            g,
            nm,
            "Reshape",
            Op::Reshape { allowzero: false },
            vec![Some(src), Some(sv)],
            ty(dt, shape),
        )
    };
    let acc = if conv {
        qconv(g, 0, x, &xt.shape, &ot.shape)
    } else if batches == 1 && w.shape.len() == 2 {
        let a4 = reshape(g, format!("{name}/int.a"), x, xt.dtype, &[m, inner, 1, 1]);
        let y4 = qconv(g, 0, a4, &[m, inner, 1, 1], &[m, cout, 1, 1]);
        reshape(g, format!("{name}/int.y"), y4, DType::I32, &ot.shape)
    } else {
        // Per batch: A's slice, its product, and the products stacked again.
        let a3 = reshape(g, format!("{name}/int.a"), x, xt.dtype, &[batches, m, inner]);
        let mut ys = Vec::with_capacity(batches);
        for j in 0..batches {
            let (st, en, ax) = (
                ints(g, format!("{name}/int.slice{j}.starts"), &[j as i64]),
                ints(g, format!("{name}/int.slice{j}.ends"), &[j as i64 + 1]),
                ints(g, format!("{name}/int.slice{j}.axes"), &[0]),
            );
            let aj = push(
                g,
                format!("{name}/int.slice{j}"),
                "Slice",
                Op::Slice { attrs: None },
                vec![Some(a3), Some(st), Some(en), Some(ax)],
                ty(xt.dtype, &[1, m, inner]),
            );
            let a4 = reshape(g, format!("{name}/int.a{j}"), aj, xt.dtype, &[m, inner, 1, 1]);
            let y4 = qconv(g, j, a4, &[m, inner, 1, 1], &[m, cout, 1, 1]);
            ys.push(Some(reshape(g, format!("{name}/int.y{j}"), y4, DType::I32, &[1, m, cout])));
        }
        let y3 = push(
            g,
            format!("{name}/int.stack"),
            "Concat",
            Op::Concat { axis: 0 },
            ys,
            ty(DType::I32, &[batches, m, cout]),
        );
        reshape(g, format!("{name}/int.y"), y3, DType::I32, &ot.shape)
    };
    let last = g.nodes.len() - 1;
    if !qlinear {
        // The last node writes the original output.
        let _ = acc;
        g.nodes[last].outputs = vec![out];
        return Ok(true);
    }
    // Float requantisation, the reference's own formula (interp::requantize).
    let f = |i: usize| constant(i).map(Tensor::f32s).filter(|v| !v.is_empty());
    let (Some(sa), Some(sb), Some(sy)) = (f(1), f(4), f(6)) else {
        return Err(err("the scales must be constant floats"));
    };
    if sb.len() != 1 {
        return Err(err(
            "per-channel weight scales are not lowered (the output requantisation is per tensor)",
        ));
    }
    let mscale = (f64::from(sa[0]) * f64::from(sb[0])) as f32 / sy[0];
    let scalar = |g: &mut Graph, nm: &str, v: f32| {
        let t = Tensor::from_f32(vec![], &[v]);
        add_value(g, format!("{name}/int.{nm}"), ty(DType::F32, &[]), Some(t))
    };
    let mv = scalar(g, "m", mscale);
    let real = push(
        g,
        format!("{name}/int.real"),
        "DequantizeLinear",
        Op::DequantizeLinear { axis: 1 },
        vec![Some(acc), Some(mv)],
        ty(DType::F32, &ot.shape),
    );
    let one = scalar(g, "one", 1.0);
    g.nodes.push(Node {
        name: format!("{name}/int.requant"),
        op_type: "QuantizeLinear".into(),
        op: Op::QuantizeLinear { axis: 1 },
        inputs: vec![Some(real), Some(one), input(7)],
        outputs: vec![out],
    });
    Ok(true)
}
