//! Convolutions: Conv, ConvTranspose, and the integer ConvInteger and QLinearConv.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer and device lowering.

use ndarray::Axis;

use crate::interp::*;
use crate::ir::*;
use crate::lower::LowerError;
use crate::lower::schedule::*;
use crate::onnx::{Attrs, group, window};
use crate::shape::*;
use crate::text::*;

use super::Work;

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
        Op::QLinearConv { window, group } => {
            let dtype = ins.get(7).copied().flatten().map_or(DType::U8, |z| z.dtype);
            Ok(vec![TensorType { dtype, shape: conv_shape(x()?, input(ins, 3)?, window, *group)? }])
        }
        Op::ConvTranspose { window, group, output_padding, output_shape } => {
            let (t, w) = (x()?, input(ins, 1)?);
            let shape = crate::interp::conv_transpose_shape(
                &t.shape,
                &w.shape,
                window,
                *group,
                output_padding,
                output_shape,
            )?
            .0;
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        Op::Conv { window, group } => Ok(vec![TensorType {
            dtype: x()?.dtype,
            shape: conv_shape(x()?, input(ins, 1)?, window, *group)?,
        }]),
        other => Err(super::misrouted(other, FAMILY)),
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
            let const_w = b.const_f32(w);
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
                    (Weights::Runtime { t: wt, offs: vec![0; xs[0]], row }, vec![])
                }
                None => return Err(err("depthwise convolution weights must be constant")),
            };
            if depthwise {
                let (act, end) = b.fuse_act(out0, &mut names);
                b.s.tens[end].nhwc = true;
                // Constants: bias, then the taps as [kh·kw][c].
                let taps = k[0] * k[1];
                let mut packed = vec![0f32; taps * cout];
                for c in 0..cout {
                    for t in 0..taps {
                        packed[t * cout + c] = oihw[c * taps + t];
                    }
                }
                let mut params = bias.clone();
                params.extend(packed);
                let dw = Dw { win: Win { input: xin, img, k, s, d, pad, out_hw, out: end }, act };
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
            };
            push_mm(b, mm, &names.join("+"), end)
        }
        Op::ConvTranspose { window, group, output_padding, output_shape } => {
            lower_conv_transpose(b, idx, n, window, *group, output_padding, output_shape)
        }
        Op::ConvInteger { .. } => {
            Err(err(&format!("{} is not lowered to the device yet", n.op_type)))
        }
        Op::QLinearConv { .. } => {
            Err(err(&format!("{} is not lowered to the device yet", n.op_type)))
        }
        other => Err(LowerError::at(&n.name, super::misrouted(other, FAMILY))),
    }
}

/// Cost inputs: per output element, `Cin/group · kh · kw` multiply-accumulates (from the
/// weights' shape `[Cout, Cin/group, kh, kw]`) for Conv; the others run bounded by traffic.
pub(crate) fn work(op: &Op, inputs: &[Option<TensorType>], outputs: &[TensorType]) -> Work {
    let out_elems: u64 = outputs.iter().map(|t| t.shape.iter().product::<usize>() as u64).sum();
    match op {
        Op::Conv { .. } => {
            let w = inputs.get(1).and_then(|t| t.as_ref()).map(|t| t.shape.clone());
            let per_out = w.unwrap_or_default().iter().skip(1).product::<usize>() as u64;
            Work::Macs(out_elems * per_out)
        }
        _ => Work::Traffic,
    }
}

/// No input determines the output shape.
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
}
