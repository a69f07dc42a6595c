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

/// Legalizes `graph` (folded, typed): transposed convolutions first, then 1-D windows (the
/// convolutions the first step makes may be 1-D).
pub(crate) fn legalize(graph: &Graph) -> Result<Legalized, LowerError> {
    let first = conv_transpose_to_conv(graph)?;
    let mut second = lift_1d(&first.graph)?;
    let origin = second.origin.iter().map(|i| first.origin[*i]).collect();
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
