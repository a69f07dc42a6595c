//! Convolutions: Conv, ConvTranspose, and the integer ConvInteger and QLinearConv.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer and device lowering.

use ndarray::{Array2, ArrayD, Axis, IxDyn, s};

use super::Work;
use crate::interp::*;
use crate::ir::*;
use crate::lower::LowerError;
use crate::lower::host::HostBuilder;
use crate::lower::schedule::*;
use crate::onnx::{Attrs, group, window};
use crate::ops::{Arity, counts};
use crate::shape::*;
use crate::text::*;

type R<T> = Result<T, String>;

/// The family's name in the registry.
pub(crate) const FAMILY: &str = "conv";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &["Conv", "ConvInteger", "QLinearConv", "ConvTranspose"];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, _opset: i64) -> Result<Op, String> {
    match op_type {
        "Conv" => Ok(Op::Conv { window: window(a)?, group: group(a)? }),
        "ConvInteger" => Ok(Op::ConvInteger { window: window(a)?, group: group(a)? }),
        "QLinearConv" => Ok(Op::QLinearConv { window: window(a)?, group: group(a)? }),
        "ConvTranspose" => Ok(Op::ConvTranspose {
            window: window(a)?,
            group: group(a)?,
            output_padding: a.usizes("output_padding")?,
            output_shape: a.usizes("output_shape")?,
        }),
        other => Err(super::misrouted_name(other, FAMILY)),
    }
}

/// Output types from input types `ins` (and constant shape operands of `g`).
pub(crate) fn infer(_g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = || input(ins, 0);
    match &node.op {
        Op::ConvInteger { window, group } => Ok(vec![TensorType {
            dtype: DType::I32,
            shape: conv_shape(x()?, input(ins, 1)?, window, *group)?,
        }]),
        Op::QConv { window, group, out, x_zp, .. } => {
            let (t, w) = (x()?, input(ins, 1)?);
            if !matches!(t.dtype, DType::U8 | DType::I8) || w.dtype != DType::I8 {
                return Err(format!("QConv of {} data with {} weights", t.dtype, w.dtype));
            }
            let (lo, hi) = match t.dtype {
                DType::U8 => (0, 255),
                _ => (-128, 127),
            };
            if !(lo..=hi).contains(x_zp) {
                return Err(format!("input zero point {x_zp} outside {}", t.dtype));
            }
            let cout = w.shape.first().copied().unwrap_or(0);
            let b = input(ins, 2)?;
            if b.dtype != DType::I32 || b.shape != [cout] {
                return Err(format!("QConv bias {b}: needs int32[{cout}]"));
            }
            match (ins.get(3).copied().flatten(), out) {
                (None, DType::I32) => {}
                (Some(rq), DType::U8 | DType::I8)
                    if rq.dtype == DType::I32 && (rq.shape == [cout, 2] || rq.shape == [1, 2]) => {}
                (Some(rq), DType::U8 | DType::I8) => {
                    return Err(format!(
                        "QConv requantisation {rq}: needs int32[{cout}, 2] or [1, 2]"
                    ));
                }
                (rq, out) => {
                    return Err(format!(
                        "QConv to {out} {} requantisation",
                        if rq.is_some() { "with" } else { "without" }
                    ));
                }
            }
            Ok(vec![TensorType { dtype: *out, shape: conv_shape(t, w, window, *group)? }])
        }
        Op::QLinearConv { window, group } => {
            let dtype = ins.get(7).copied().flatten().map_or(DType::U8, |z| z.dtype);
            let w = input(ins, 3)?;
            bias_is_per_output_channel(ins, 8, w.shape.first().copied().unwrap_or(0))?;
            Ok(vec![TensorType { dtype, shape: conv_shape(x()?, w, window, *group)? }])
        }
        Op::ConvTranspose { window, group, output_padding, output_shape } => {
            let (t, w) = (x()?, input(ins, 1)?);
            let shape = conv_transpose_shape(
                &t.shape,
                &w.shape,
                window,
                *group,
                output_padding,
                output_shape,
            )?
            .0;
            bias_is_per_output_channel(ins, 2, shape.get(1).copied().unwrap_or(0))?;
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        Op::Conv { window, group } => {
            let w = input(ins, 1)?;
            bias_is_per_output_channel(ins, 2, w.shape.first().copied().unwrap_or(0))?;
            Ok(vec![TensorType { dtype: x()?.dtype, shape: conv_shape(x()?, w, window, *group)? }])
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// ONNX: a convolution's bias B (input `i`, optional) is 1-D with one value per output
/// channel (`m` of them).
fn bias_is_per_output_channel(ins: &[Option<&TensorType>], i: usize, m: usize) -> R<()> {
    match ins.get(i).copied().flatten() {
        Some(b) if b.shape != [m] => {
            Err(format!("the bias is {b}; {m} output channels need one value each"))
        }
        _ => Ok(()),
    }
}

/// Reference semantics: the outputs for inputs `args` (the oracle the device is checked
/// against).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let one = |a: Array| Ok(vec![a]);
    match &node.op {
        Op::Conv { window, group } => one(Array::F32(conv(
            arg(args, 0)?.f32()?,
            arg(args, 1)?.f32()?,
            opt(args, 2),
            window,
            *group,
        )?)),
        Op::ConvInteger { window, group } => {
            let x = centered(arg(args, 0)?, opt(args, 2), false)?;
            let w = centered_channels(arg(args, 1)?, opt(args, 3))?;
            let y = conv_t(&x, &w, window, *group)?;
            one(Array::Int(y.mapv(|v| v as i64), DType::I32))
        }
        Op::QConv { window, group, x_zp, y_zp, lo, hi, out } => {
            let xi = arg(args, 0)?.ints()?.mapv(|v| (v - i64::from(*x_zp)) as f64);
            let w = arg(args, 1)?.ints()?.mapv(|v| v as f64);
            let bias = arg(args, 2)?.ints()?;
            // Exact: products of 8-bit values summed below 2^53.
            let acc = conv_t(&xi, &w, window, *group)?;
            if *out == DType::I32 {
                let mut y = acc.mapv(|v| v as i64);
                for (m, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
                    let b = bias.iter().nth(m).copied().ok_or("bias shorter than the channels")?;
                    plane.mapv_inplace(|v| v + b);
                }
                if let Some(v) = y.iter().find(|v| i32::try_from(**v).is_err()) {
                    return Err(format!("accumulator {v} overflows int32"));
                }
                return one(Array::Int(y, DType::I32));
            }
            let rq: Vec<i64> = arg(args, 3)?.ints()?.iter().copied().collect();
            one(Array::Int(qconv_requant(&acc, bias, &rq, *y_zp, *lo, *hi, *out)?, *out))
        }
        Op::QLinearConv { window, group } => {
            let x = centered(arg(args, 0)?, opt(args, 2), false)?;
            let w = centered_channels(arg(args, 3)?, opt(args, 5))?;
            let mut acc = conv_t(&x, &w, window, *group)?;
            if let Some(bias) = opt(args, 8) {
                let b: Vec<f64> = bias.ints()?.iter().map(|v| *v as f64).collect();
                for (m, mut plane) in acc.axis_iter_mut(Axis(1)).enumerate() {
                    let bv = b.get(m).copied().ok_or("bias shorter than the output channels")?;
                    plane.mapv_inplace(|v| v + bv);
                }
            }
            requantize(&acc, arg(args, 1)?, arg(args, 4)?, arg(args, 6)?, opt(args, 7), 1)
        }
        Op::ConvTranspose { window, group, output_padding, output_shape } => {
            let x = arg(args, 0)?.f32()?;
            let w = arg(args, 1)?.f32()?;
            let mut y = conv_transpose(x, w, window, *group, output_padding, output_shape)?;
            if let Some(b) = opt(args, 2) {
                let b: Vec<f32> = b.f32()?.iter().copied().collect();
                for (m, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
                    let bv = b.get(m).copied().ok_or("bias shorter than the output channels")?;
                    plane.mapv_inplace(|v| v + bv);
                }
            }
            one(Array::F32(y))
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    match op {
        Op::Conv { window: w, group }
        | Op::ConvInteger { window: w, group }
        | Op::QLinearConv { window: w, group } => {
            print_window(a, w);
            a.push(format!("group: int = {group}"));
        }
        Op::QConv { window: w, group, x_zp, y_zp, lo, hi, out } => {
            print_window(a, w);
            a.push(format!("group: int = {group}"));
            a.push(format!("x_zero_point: int = {x_zp}"));
            a.push(format!("y_zero_point: int = {y_zp}"));
            a.push(format!("clamp: ints = [{lo},{hi}]"));
            a.push(format!("to: int = {}", out.onnx_code()));
        }
        Op::ConvTranspose { window: w, group, output_padding, output_shape } => {
            print_window(a, w);
            a.push(format!("group: int = {group}"));
            if !output_padding.is_empty() {
                a.push(format!("output_padding: ints = {}", usizes(output_padding)));
            }
            if !output_shape.is_empty() {
                a.push(format!("output_shape: ints = {}", usizes(output_shape)));
            }
        }
        _ => {}
    }
}

/// Device lowering: `n` (node `idx` of the graph) as kernel steps of `b`, or the constraint
/// that keeps it off the device.
pub(crate) fn lower(b: &mut Builder<'_>, idx: usize, n: &Node) -> Result<(), LowerError> {
    let name = n.name.clone();
    let err = |m: &str| LowerError::at(&name, m.to_string());
    match &n.op {
        Op::Conv { window, group } => {
            let x = b.input(n, 0)?;
            let w = b.input(n, 1)?;
            let xs = b.shape(x);
            let ws = b.shape(w);
            // 1-D convolutions arrive as 2-D ones (`legalize`).
            if xs.len() != 4 {
                return Err(err("only 1-D and 2-D convolutions are lowered"));
            }
            if b.s.tens[x].dtype != DType::F32 {
                return Err(err("only float32 convolutions are lowered"));
            }
            // The weights' bytes, shared with the model: a regular convolution packs them
            // straight from there; only the depthwise kernel reorders decoded values.
            let const_w = b.const_f32_bytes(w);
            let cout = ws[0];
            let mut bias = match b.opt_input(n, 2) {
                Some(t) => {
                    b.const_f32(t).ok_or_else(|| err("convolution bias must be constant"))?
                }
                None => vec![0.0; cout],
            };
            bias.resize(cout, 0.0);
            let out0 = b.out(n, 0)?;
            let os = b.shape(out0);
            let k = [ws[2], ws[3]];
            let out_hw = [os[2], os[3]];
            let (s, d, pad) = window_geometry(n, window, &xs, k, out_hw)?;
            let xin = b.layout(x, true);
            let mut names = vec![name.clone()];
            let img = [xs[0], xs[2], xs[3], xs[1]];
            let depthwise = *group == xs[1] && ws[1] == 1 && cout == xs[1] && *group > 1;
            // Computed weights: permuted by a copy kernel into [kh][kw][cin/group][cout] rows,
            // read tile by tile at run time like a MatMul's B.
            let (weights, oihw) = match const_w {
                Some(v) => (Weights::Const, v),
                None if !depthwise => {
                    let wt = permuted(b, w, vec![2, 3, 1, 0], "rows", &format!("{name}:weights"));
                    let row = cout as u64 * 4;
                    (Weights::Runtime { t: wt, offs: vec![0; xs[0]], row }, bytes::Bytes::new())
                }
                None => return Err(err("depthwise convolution weights must be constant")),
            };
            if depthwise {
                let (act, end) = b.fuse_act(out0, &mut names);
                b.s.tens[end].nhwc = true;
                // Constants: bias, then the taps as [kh·kw][c].
                let taps = k[0] * k[1];
                let oihw = f32s(&oihw);
                let mut packed = vec![0f32; taps * cout];
                for c in 0..cout {
                    for t in 0..taps {
                        packed[t * cout + c] = oihw[c * taps + t];
                    }
                }
                let mut params = bias.clone();
                params.extend(packed);
                let dw = Dw {
                    win: Win { input: xin, img, k, s, d, pad, out_hw, out: end },
                    act,
                    quant: None,
                };
                b.step(
                    Kernel::Depthwise(dw),
                    &names.join("+"),
                    Some(end),
                    vec![f32_bytes(&params)],
                );
                return Ok(());
            }
            let (residual, end) = b.fuse_residual(out0, idx, true, &mut names);
            let (act, end) = b.fuse_act(end, &mut names);
            b.s.tens[end].nhwc = true;
            let out_img = (os[1] * os[2] * os[3]) as u64 * 4;
            let in_img = (xs[1] * xs[2] * xs[3]) as u64 * 4;
            let mm = Mm {
                input: xin,
                img,
                a_offs: (0..xs[0] as u64).map(|i| i * in_img).collect(),
                k,
                s,
                d,
                pad,
                groups: *group,
                out_hw,
                cout,
                out: end,
                out_offs: (0..xs[0] as u64).map(|i| i * out_img).collect(),
                weights,
                oihw,
                bias,
                residual: residual.map(|r| b.layout(r, true)),
                act,
                quant: None,
            };
            push_mm(b, mm, &names.join("+"), end)
        }
        // `legalize` rewrites every transposed convolution the device runs into a spread of
        // the input and a convolution; what reaches here is what it left alone.
        Op::ConvTranspose { .. } => {
            let (x, w) = (b.input(n, 0)?, b.input(n, 1)?);
            let xs = b.shape(x);
            if !(3..=4).contains(&xs.len()) || b.s.tens[x].dtype != DType::F32 {
                Err(err("only 1-D and 2-D float32 transposed convolutions are lowered"))
            } else if b.const_f32(w).is_none() {
                Err(err("transposed convolution weights must be constant"))
            } else {
                Err(err("internal: a transposed convolution legalize should have rewritten"))
            }
        }
        Op::QConv { .. } => lower_qconv(b, idx, n),
        // `legalize` rewrites every other one into an int32 QConv (or says why not).
        Op::ConvInteger { .. } | Op::QLinearConv { .. } => Err(err(&format!(
            "{}: grouped and depthwise integer convolutions are not lowered",
            n.op_type
        ))),
        other => Err(LowerError::at(&n.name, super::misrouted(other, FAMILY))),
    }
}

/// Cost inputs: per output element, `Cin/group · kh · kw` multiply-accumulates (from the
/// weights' shape `[Cout, Cin/group, kh, kw]`) for Conv; the others run bounded by traffic.
pub(crate) fn work(op: &Op, inputs: &[Option<TensorType>], outputs: &[TensorType]) -> Work {
    let out_elems: u64 = outputs.iter().map(|t| t.shape.iter().product::<usize>() as u64).sum();
    match op {
        Op::Conv { .. } | Op::QConv { .. } => {
            let w = inputs.get(1).and_then(|t| t.as_ref()).map(|t| t.shape.clone());
            let per_out = w.unwrap_or_default().iter().skip(1).product::<usize>() as u64;
            Work::Macs(out_elems * per_out)
        }
        _ => Work::Traffic,
    }
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`
/// (the operator schemas' `min_input`, `max_input`, `min_output`, `max_output`).
pub(crate) fn arity(op_type: &str, opset: i64) -> Arity {
    let _ = opset;
    match op_type {
        "ConvInteger" => counts(2, 4, 1, 1),
        "QLinearConv" => counts(8, 9, 1, 1),
        _ => counts(2, 3, 1, 1),
    }
}

/// No input determines the output shape.
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
}

/// Lowers a `QConv` onto the matrix engine: int8/uint8 activations (NHWC, padding filled with
/// the input zero point) against int8 weight tiles, int32 sums with the corrected bias added
/// in the accumulator, `vx.requant` per output channel to the output type.
fn lower_qconv(b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    let Op::QConv { window, group, x_zp, y_zp, lo, hi, .. } = &n.op else {
        return Err(LowerError::at(&n.name, super::misrouted(&n.op, FAMILY)));
    };
    let err = |m: &str| LowerError::at(&n.name, m.to_string());
    let (x, w, bias_t) = (b.input(n, 0)?, b.input(n, 1)?, b.input(n, 2)?);
    // Without records (an int32 output) the kernel stores the accumulator.
    let rq_t = b.opt_input(n, 3);
    let (xs, ws) = (b.shape(x), b.shape(w));
    if xs.len() != 4 || ws.len() != 4 {
        return Err(err("only 2-D quantized convolutions are lowered"));
    }
    let wv = b.constant(w).ok_or_else(|| err("QConv weights must be constant"))?.to_vec();
    let bias = b.const_ints(bias_t).ok_or_else(|| err("QConv bias must be constant"))?;
    let rq = match rq_t {
        Some(t) => b.const_ints(t).ok_or_else(|| err("QConv requantisation must be constant"))?,
        None => vec![],
    };
    let cout = ws[0];
    let per = wv.len() / cout.max(1);
    let clamp16 = |v: i32| v.clamp(i16::MIN.into(), i16::MAX.into()) as i16;
    let mut qbias = Vec::with_capacity(cout);
    let mut records = Vec::with_capacity(cout);
    for c in 0..cout {
        let wsum: i64 = wv[c * per..(c + 1) * per].iter().map(|v| i64::from(*v as i8)).sum();
        let corrected = bias[c] - i64::from(*x_zp) * wsum;
        qbias.push(i32::try_from(corrected).map_err(|_| err("QConv bias overflows int32"))?);
        if rq.is_empty() {
            continue;
        }
        let pair = if rq.len() == 2 { 0 } else { 2 * c };
        records.push(accelc_isa::requant::RequantRecord {
            multiplier: rq[pair] as i32,
            shift: rq[pair + 1] as i32,
            zero_point: *y_zp,
            clamp_lo: clamp16(*lo),
            clamp_hi: clamp16(*hi),
        });
    }
    let out = b.out(n, 0)?;
    let os = b.shape(out);
    let k = [ws[2], ws[3]];
    let out_hw = [os[2], os[3]];
    let (s, d, pad) = window_geometry(n, window, &xs, k, out_hw)?;
    let xin = b.layout(x, true);
    b.s.tens[out].nhwc = true;
    if *group > 1 && records.is_empty() {
        return Err(err("grouped integer convolutions with an int32 output are not lowered"));
    }
    if *group == xs[1] && ws[1] == 1 && cout == xs[1] && *group > 1 {
        // Depthwise: on the vector engine in int32, taps as [kh·kw][c], then one biased
        // requantisation record per channel.
        let taps = k[0] * k[1];
        let mut p: Vec<u8> = Vec::new();
        for t in 0..taps {
            for c in 0..cout {
                p.extend(i32::from(wv[c * taps + t] as i8).to_le_bytes());
            }
        }
        p.extend(records.iter().zip(&qbias).flat_map(|(r, b)| r.to_bytes_with_bias(*b)));
        let img = [xs[0], xs[2], xs[3], xs[1]];
        let win = Win { input: xin, img, k, s, d, pad, out_hw, out };
        let dw = Dw { win, act: Act::None, quant: Some(*x_zp as u8) };
        b.step(Kernel::Depthwise(dw), &n.name, Some(out), vec![p]);
        return Ok(());
    }
    // Image strides in bytes: 8-bit inputs, 8-bit or int32 outputs.
    let out_img = (os[1] * os[2] * os[3]) as u64 * b.s.tens[out].dtype.size() as u64;
    let in_img = (xs[1] * xs[2] * xs[3]) as u64 * b.s.tens[x].dtype.size() as u64;
    // A matrix product as a 1x1 convolution of [M, K, 1, 1] (`qdq-gemm`, `legalize`): its
    // NHWC bytes are the [M, K] matrix, so one image of M rows, not M images of one pixel
    // (each paying the array's fill and drain), as the float Gemm kernel streams it.
    let product = xs[2] == 1 && xs[3] == 1 && k == [1, 1] && *group == 1 && pad == [0; 4];
    let (img, out_hw, images) = if product {
        ([1, xs[0], 1, xs[1]], [xs[0], 1], 1)
    } else {
        ([xs[0], xs[2], xs[3], xs[1]], out_hw, xs[0])
    };
    let mm = Mm {
        input: xin,
        img,
        a_offs: (0..images as u64).map(|i| i * in_img).collect(),
        k,
        s: if product { [1, 1] } else { s },
        d,
        pad,
        groups: *group,
        out_hw,
        cout,
        out,
        out_offs: (0..images as u64).map(|i| i * out_img).collect(),
        weights: Weights::Const,
        oihw: wv.into(),
        bias: vec![],
        residual: None,
        act: Act::None,
        quant: Some(MmQuant { pad_byte: *x_zp as u8, bias: qbias, records }),
    };
    push_mm(b, mm, &n.name, out)
}

/// QConv's epilogue: `acc + bias` per output channel (axis 1), requantised by the channel's
/// record (`rq` holds `multiplier, shift` pairs, one pair for all or one per channel).
/// Errors: an accumulator outside int32 (the rules bound it, so only a hand-made graph).
pub(crate) fn qconv_requant(
    acc: &ArrayD<f64>,
    bias: &ArrayD<i64>,
    rq: &[i64],
    y_zp: i32,
    lo: i32,
    hi: i32,
    out: DType,
) -> R<ArrayD<i64>> {
    let dt = crate::lower::device_dtype(out).ok_or("QConv to int64")?;
    let clamp = |v: i32| v.clamp(i16::MIN.into(), i16::MAX.into()) as i16;
    let mut y = ArrayD::<i64>::zeros(acc.raw_dim());
    for (idx, v) in acc.indexed_iter() {
        let c = if acc.ndim() > 1 { idx[1] } else { 0 };
        let b = bias.iter().nth(c).copied().ok_or("bias shorter than the output channels")?;
        let pair = if rq.len() == 2 { 0 } else { 2 * c };
        let (m, sh) = (rq.get(pair).copied(), rq.get(pair + 1).copied());
        let (Some(m), Some(sh)) = (m, sh) else {
            return Err("requantisation table shorter than the output channels".into());
        };
        let rec = accelc_isa::requant::RequantRecord {
            multiplier: m as i32,
            shift: sh as i32,
            zero_point: y_zp,
            clamp_lo: clamp(lo),
            clamp_hi: clamp(hi),
        };
        if !rec.valid() {
            return Err(format!("requantisation shift {sh} outside -31..=30"));
        }
        let a = *v as i64 + b;
        let a = i32::try_from(a).map_err(|_| format!("accumulator {a} overflows int32"))?;
        y[idx] = rec.apply(a, dt);
    }
    Ok(y)
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
    if strides.contains(&0) || dil.contains(&0) {
        return Err(format!("strides {strides:?} and dilations {dil:?} must be positive"));
    }
    // ONNX ConvTranspose: output_padding must be smaller than the stride or the dilation.
    if let Some(i) = (0..nd).find(|&i| outpad[i] >= strides[i].max(dil[i])) {
        return Err(format!(
            "output_padding {} on axis {i} is not smaller than its stride {} or dilation {}",
            outpad[i], strides[i], dil[i]
        ));
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
            // An explicit output_shape beyond the full result is an implicit output padding,
            // which (as any output padding) must stay below the stride or the dilation.
            if !output_shape.is_empty() && target >= full + strides[i].max(dil[i]) {
                return Err(format!(
                    "output_shape {target} on axis {i} exceeds the full result {full} by {}, not \
                     less than its stride {} or dilation {}",
                    target - full,
                    strides[i],
                    dil[i]
                ));
            }
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

pub(crate) fn conv_shape(
    t: &TensorType,
    w: &TensorType,
    window: &Window,
    group: usize,
) -> R<Vec<usize>> {
    if t.shape.len() < 3 || w.shape.len() != t.shape.len() {
        return Err(format!("Conv of {:?} with weights {:?}", t.shape, w.shape));
    }
    if t.shape[1] != w.shape[1] * group || !w.shape[0].is_multiple_of(group) {
        return Err(format!("Conv of {:?} with weights {:?} in {group} groups", t.shape, w.shape));
    }
    // `kernel_shape`, when given, must be the weights' spatial shape (ONNX Conv).
    if !window.kernel.is_empty() && window.kernel != w.shape[2..] {
        return Err(format!(
            "kernel_shape {:?} does not match the weights' spatial shape {:?}",
            window.kernel,
            &w.shape[2..]
        ));
    }
    if group == 0 {
        return Err("Conv with group 0".into());
    }
    let kernel = w.shape[2..].to_vec();
    let mut shape = vec![t.shape[0], w.shape[0]];
    shape.extend(window_out(&t.shape[2..], &kernel, window, false)?);
    Ok(shape)
}

/// Host lowering: Conv (any number of spatial axes, groups, dilations, padding) and
/// ConvTranspose as direct loops over each output element, summing `f32` products in `f64`; ConvInteger and
/// QLinearConv summing `(x − x_zp)·(w − w_zp)` exactly in `i64`, the latter requantised as the
/// reference does (`f32` scale `f32(sx·sw)/sy`, round half to even, saturating); QConv with
/// its fixed-point requantisation records, bit-exact with the device and the reference.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
    let wi_ = if matches!(n.op, Op::QLinearConv { .. }) { 3 } else { 1 };
    let w = n.inputs[wi_].ok_or_else(|| b.err(n, "the weights are missing"))?;
    let (xt, wt) = (b.ty(x)?, b.ty(w)?);
    let out = n.outputs[0];
    let ot = b.ty(out)?;
    let nd = xt.shape.len().saturating_sub(2);
    let e = |m: String| LowerError::at(&n.name, m);
    let input = |i: usize| n.inputs.get(i).copied().flatten();
    match &n.op {
        Op::Conv { window, group } => {
            let bias = input(2);
            let geo = Taps::new(window, *group, &xt.shape, &wt.shape, &ot.shape).map_err(e)?;
            // Summed in f64 (then rounded once): a long reduction in f32 drifts further from
            // the exact sum than the reference's blocked f32 product does.
            b.map_out(out, &mut |b, idx| {
                let init = match bias {
                    Some(bv) => {
                        let v = b.load(bv, &[idx[1].clone()])?;
                        b.f64_of(&v)
                    }
                    None => b.f64c(0.0),
                };
                let r = geo.sum(b, idx, init, "f64", &mut |b, xi, ok, wi, acc| {
                    let xv = b.load(x, xi)?;
                    let z = b.f32c(0.0);
                    let xv = b.select(ok, &xv, &z, "f32");
                    let wv = b.load(w, wi)?;
                    let p = b.op2("arith.mulf", &xv, &wv, "f32");
                    let p = b.f64_of(&p);
                    Ok(b.op2("arith.addf", acc, &p, "f64"))
                })?;
                Ok(b.f32_of(&r))
            })
        }
        Op::ConvInteger { window, group } | Op::QLinearConv { window, group } => {
            let q = matches!(n.op, Op::QLinearConv { .. });
            let (xz, wz) = if q { (input(2), input(5)) } else { (input(2), input(3)) };
            let bias = if q { input(8) } else { None };
            let geo = Taps::new(window, *group, &xt.shape, &wt.shape, &ot.shape).map_err(e)?;
            let (xd, wd) = (xt.dtype, wt.dtype);
            b.map_out(out, &mut |b, idx| {
                // Zero points: x's per tensor, w's per output channel (or per tensor).
                let xzp = zero_point(b, xz, None)?;
                let wzp = zero_point(b, wz, Some(&idx[1]))?;
                let init = match bias {
                    Some(bv) => {
                        let v = b.load(bv, &[idx[1].clone()])?;
                        let d = b.ty(bv)?.dtype;
                        b.widen(&v, d)
                    }
                    None => b.i64c(0),
                };
                let acc = geo.sum(b, idx, init, "i64", &mut |b, xi, ok, wi, acc| {
                    let xv = b.load(x, xi)?;
                    let xv = b.widen(&xv, xd);
                    let xv = b.op2("arith.subi", &xv, &xzp, "i64");
                    let z = b.i64c(0);
                    let xv = b.select(ok, &xv, &z, "i64");
                    let wv = b.load(w, wi)?;
                    let wv = b.widen(&wv, wd);
                    let wv = b.op2("arith.subi", &wv, &wzp, "i64");
                    let p = b.op2("arith.muli", &xv, &wv, "i64");
                    Ok(b.op2("arith.addi", acc, &p, "i64"))
                })?;
                if !q {
                    return Ok(b.narrow(&acc, DType::I32));
                }
                let scales = [input(1), input(4), input(6)];
                requantize_one(b, n, &acc, scales, input(7), &idx[1], ot.dtype)
            })
        }
        Op::QConv { window, group, x_zp, y_zp, lo, hi, out: odt } => {
            // acc = Σ (x − x_zp)·w + bias exactly, then the per-channel record (the device's
            // and the reference's arithmetic, `accelc_isa::requant`).
            let bias = input(2).ok_or_else(|| b.err(n, "the bias is missing"))?;
            let rq = input(3);
            let geo = Taps::new(window, *group, &xt.shape, &wt.shape, &ot.shape).map_err(e)?;
            let (xd, wd, odt, x_zp) = (xt.dtype, wt.dtype, *odt, i64::from(*x_zp));
            let dt = crate::lower::device_dtype(odt).ok_or_else(|| b.err(n, "QConv to int64"))?;
            let (tlo, thi) = accelc_isa::requant::int_range(dt);
            let c16 = |v: i32| i64::from(v.clamp(i16::MIN.into(), i16::MAX.into()));
            let (lo, hi) = (c16(*lo).max(tlo), c16(*hi).min(thi));
            let y_zp = i64::from(*y_zp);
            b.map_out(out, &mut |b, idx| {
                let bv = b.load(bias, &[idx[1].clone()])?;
                let init = b.widen(&bv, DType::I32);
                let xzp = b.i64c(x_zp);
                let acc = geo.sum(b, idx, init, "i64", &mut |b, xi, ok, wi, acc| {
                    let xv = b.load(x, xi)?;
                    let xv = b.widen(&xv, xd);
                    let xv = b.op2("arith.subi", &xv, &xzp, "i64");
                    let z = b.i64c(0);
                    let xv = b.select(ok, &xv, &z, "i64");
                    let wv = b.load(w, wi)?;
                    let wv = b.widen(&wv, wd);
                    let p = b.op2("arith.muli", &xv, &wv, "i64");
                    Ok(b.op2("arith.addi", acc, &p, "i64"))
                })?;
                b.check_i32(&acc);
                if odt == DType::I32 {
                    return Ok(b.narrow(&acc, DType::I32));
                }
                let rq = rq.ok_or_else(|| b.err(n, "the requantisation table is missing"))?;
                let rows = b.ty(rq)?.shape.first().copied().unwrap_or(1);
                let row = if rows == 1 { b.idx(0) } else { idx[1].clone() };
                let (c0, c1) = (b.idx(0), b.idx(1));
                let m = b.load(rq, &[row.clone(), c0])?;
                let sh = b.load(rq, &[row, c1])?;
                let (m, sh) = (b.widen(&m, DType::I32), b.widen(&sh, DType::I32));
                let (zp, l, h) = (b.i64c(y_zp), b.i64c(lo), b.i64c(hi));
                let r = b.requant(&acc, &m, &sh, &zp, &l, &h);
                Ok(b.narrow(&r, odt))
            })
        }
        Op::ConvTranspose { window, group, output_padding, output_shape } => {
            let bias = input(2);
            let (_, begin, kernel, strides, dil) = conv_transpose_shape(
                &xt.shape,
                &wt.shape,
                window,
                *group,
                output_padding,
                output_shape,
            )
            .map_err(e)?;
            // y[n, m, o] = Σ over input channels c of m's group and taps k with
            // o + begin = i·stride + k·dilation of x[n, c, i] · w[c, m mod Mg, k].
            let mg = wt.shape[1];
            let cg = xt.shape[1] / (*group).max(1);
            let taps: usize = cg * kernel.iter().product::<usize>();
            b.map_out(out, &mut |b, idx| {
                let mgc = b.idx(mg.max(1));
                let cgc = b.idx(cg);
                let grp = b.iop("arith.divui", &idx[1], &mgc);
                let mm = b.iop("arith.remui", &idx[1], &mgc);
                let c0 = b.iop("arith.muli", &grp, &cgc);
                let init = match bias {
                    Some(bv) => {
                        let v = b.load(bv, &[idx[1].clone()])?;
                        b.f64_of(&v)
                    }
                    None => b.f64c(0.0),
                };
                let mut dims = vec![cg];
                dims.extend(&kernel);
                let r = b.fold_n(taps, &[init], &["f64"], &mut |b, t, acc| {
                    let tk = b.delinearize(t, &dims);
                    let mut ok = b.let_("arith.constant true");
                    let mut pos = Vec::with_capacity(nd);
                    for i in 0..nd {
                        let s = b.idx(strides[i]);
                        let d = b.idx(dil[i]);
                        let pb = b.idx(begin[i]);
                        let a = b.iop("arith.addi", &idx[2 + i], &pb);
                        let k = b.iop("arith.muli", &tk[1 + i], &d);
                        let num = b.iop("arith.subi", &a, &k);
                        let q = b.iop("arith.divsi", &num, &s);
                        let back = b.iop("arith.muli", &q, &s);
                        let exact = b.cmpi("eq", &back, &num, "index");
                        ok = b.op2("arith.andi", &ok, &exact, "i1");
                        pos.push(q);
                    }
                    let inb = b.in_bounds(&pos, &xt.shape[2..]);
                    let ok = b.op2("arith.andi", &ok, &inb, "i1");
                    let cl = b.clamp_pos(&pos, &xt.shape[2..]);
                    let ch = b.iop("arith.addi", &c0, &tk[0]);
                    let mut xi = vec![idx[0].clone(), ch.clone()];
                    xi.extend(cl);
                    let xv = b.load(x, &xi)?;
                    let z = b.f32c(0.0);
                    let xv = b.select(&ok, &xv, &z, "f32");
                    let mut wi = vec![ch, mm.clone()];
                    wi.extend_from_slice(&tk[1..]);
                    let wv = b.load(w, &wi)?;
                    let p = b.op2("arith.mulf", &xv, &wv, "f32");
                    let p = b.f64_of(&p);
                    Ok(vec![b.op2("arith.addf", &acc[0], &p, "f64")])
                })?;
                Ok(b.f32_of(&r[0]))
            })
        }
        _ => Err(b.err(n, format!("{} has no host lowering yet", n.op_type))),
    }
}

/// What a convolution's sum does with one tap: the builder, the input index (clamped), whether
/// it is inside the input, the weight index, the accumulator; returns the next accumulator.
type TapBody<'a> = dyn FnMut(&mut HostBuilder<'_>, &[String], &str, &[String], &str) -> Result<String, LowerError>
    + 'a;

/// The taps of a (grouped, strided, dilated, padded) convolution's output element.
struct Taps {
    g: crate::interp::Geometry,
    kernel: Vec<usize>,
    spatial: Vec<usize>,
    cg: usize,
    mg: usize,
}

impl Taps {
    fn new(w: &Window, group: usize, x: &[usize], wt: &[usize], out: &[usize]) -> R<Taps> {
        let kernel = wt[2..].to_vec();
        let g = pads(w, &x[2..], &kernel)?;
        Ok(Taps { g, kernel, spatial: x[2..].to_vec(), cg: wt[1], mg: out[1] / group.max(1) })
    }

    /// Folds `f(input index (clamped), in bounds, weight index, acc)` over every tap of output
    /// element `idx`, from `init` (of MLIR type `ty`).
    fn sum(
        &self,
        b: &mut HostBuilder<'_>,
        idx: &[String],
        init: String,
        ty: &str,
        f: &mut TapBody<'_>,
    ) -> Result<String, LowerError> {
        let nd = self.spatial.len();
        let mgc = b.idx(self.mg.max(1));
        let cgc = b.idx(self.cg);
        let grp = b.iop("arith.divui", &idx[1], &mgc);
        let c0 = b.iop("arith.muli", &grp, &cgc);
        let mut dims = vec![self.cg];
        dims.extend(&self.kernel);
        let taps: usize = dims.iter().product();
        let r = b.fold_n(taps, &[init], &[ty], &mut |b, t, acc| {
            let tk = b.delinearize(t, &dims);
            let mut pos = Vec::with_capacity(nd);
            for i in 0..nd {
                let s = b.idx(self.g.strides[i]);
                let d = b.idx(self.g.dilations[i]);
                let pb = b.idx(self.g.begin[i]);
                let a = b.iop("arith.muli", &idx[2 + i], &s);
                let k = b.iop("arith.muli", &tk[1 + i], &d);
                let a = b.iop("arith.addi", &a, &k);
                pos.push(b.iop("arith.subi", &a, &pb));
            }
            let ok = b.in_bounds(&pos, &self.spatial);
            let cl = b.clamp_pos(&pos, &self.spatial);
            let ch = b.iop("arith.addi", &c0, &tk[0]);
            let mut xi = vec![idx[0].clone(), ch];
            xi.extend(cl);
            let mut wi = vec![idx[1].clone(), tk[0].clone()];
            wi.extend_from_slice(&tk[1..]);
            Ok(vec![f(b, &xi, &ok, &wi, &acc[0])?])
        })?;
        Ok(r[0].clone())
    }
}

/// A zero point as `i64`: element `at` of `z` (per channel) when it has more than one, else
/// its first; 0 without one.
pub(crate) fn zero_point(
    b: &mut HostBuilder<'_>,
    z: Option<ValueId>,
    at: Option<&String>,
) -> Result<String, LowerError> {
    let Some(z) = z else { return Ok(b.i64c(0)) };
    let t = b.ty(z)?;
    let len: usize = t.shape.iter().product();
    let i = match at {
        Some(a) if len > 1 => a.clone(),
        _ => b.idx(0),
    };
    let ix: Vec<String> = t.shape.iter().map(|_| i.clone()).collect();
    let v = b.load(z, &ix)?;
    Ok(b.widen(&v, t.dtype))
}

/// One QLinear* output from its `i64` accumulator, as the reference's `requantize`: the scale
/// `f32(sa·sb[c]) / sy` in `f32` (`sb` per channel `c` when it has several), then
/// `clamp(round_half_even(f32(acc)·scale) + zp)` in the zero point's type.
pub(crate) fn requantize_one(
    b: &mut HostBuilder<'_>,
    n: &Node,
    acc: &str,
    scales: [Option<ValueId>; 3],
    y_zp: Option<ValueId>,
    channel: &str,
    out: DType,
) -> Result<String, LowerError> {
    let [sa, sb, sy] = scales;
    let first = |b: &mut HostBuilder<'_>, v: Option<ValueId>, at: Option<&str>| {
        let v = v.ok_or_else(|| b.err(n, "a scale is missing"))?;
        let t = b.ty(v)?;
        let len: usize = t.shape.iter().product();
        let i = match at {
            Some(a) if len > 1 => a.to_string(),
            _ => b.idx(0),
        };
        let ix: Vec<String> = t.shape.iter().map(|_| i.clone()).collect();
        b.load(v, &ix)
    };
    let a = first(b, sa, None)?;
    let c = first(b, sb, Some(channel))?;
    let y = first(b, sy, None)?;
    let a = b.f64_of(&a);
    let c = b.f64_of(&c);
    let p = b.op2("arith.mulf", &a, &c, "f64");
    let p = b.f32_of(&p);
    let scale = b.op2("arith.divf", &p, &y, "f32");
    let af = b.let_(&format!("arith.sitofp {acc} : i64 to f32"));
    let q = b.op2("arith.mulf", &af, &scale, "f32");
    let q = b.op1("math.roundeven", &q, "f32");
    let big = b.f32c(1.0e12);
    let nbig = b.f32c(-1.0e12);
    let q = b.op2("arith.minimumf", &q, &big, "f32");
    let q = b.op2("arith.maximumf", &q, &nbig, "f32");
    let q = b.convert(&q, DType::F32, DType::I64);
    let zp = zero_point(b, y_zp, None)?;
    let r = b.op2("arith.addi", &q, &zp, "i64");
    let (lo, hi) = if out == DType::I8 { (-128, 127) } else { (0, 255) };
    let (l, h) = (b.i64c(lo), b.i64c(hi));
    let r = b.op2("arith.maxsi", &r, &l, "i64");
    let r = b.op2("arith.minsi", &r, &h, "i64");
    Ok(b.narrow(&r, out))
}
