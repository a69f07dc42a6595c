//! Ops that change only a tensor's shape or produce metadata or filled tensors: Reshape,
//! Flatten, Squeeze, Unsqueeze, Identity, Dropout (inference), Shape, Size, Constant,
//! ConstantOfShape, Range (no device kernel: views of the same bytes, or values folded at
//! compile time), Expand (a broadcast copy) and CastLike.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer and device lowering.

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
use crate::text::*;

type R<T> = Result<T, String>;

/// The family's name in the registry.
pub(crate) const FAMILY: &str = "shape_ops";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &[
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Constant",
    "Shape",
    "Size",
    "Expand",
    "ConstantOfShape",
    "Range",
    "HannWindow",
    "EyeLike",
    "HammingWindow",
    "BlackmanWindow",
    "CastLike",
    "Dropout",
];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, opset: i64) -> Result<Op, String> {
    match op_type {
        "Reshape" => Ok(Op::Reshape { allowzero: a.i64("allowzero", 0) != 0 }),
        "Flatten" => Ok(Op::Flatten { axis: a.i64("axis", 1) }),
        "Squeeze" => Ok(Op::Squeeze { axes: if opset < 13 { a.ints("axes") } else { None } }),
        "Unsqueeze" => Ok(Op::Unsqueeze { axes: if opset < 13 { a.ints("axes") } else { None } }),
        "Identity" => Ok(Op::Identity),
        "Constant" => {
            for other in ["sparse_value", "value_string", "value_strings"] {
                if a.get(other).is_some() {
                    return Err(format!("Constant with `{other}` is not supported"));
                }
            }
            // Read by `constant_value`. ONNX: exactly one value attribute.
            let given: Vec<&str> =
                ["value", "value_float", "value_floats", "value_int", "value_ints"]
                    .into_iter()
                    .filter(|v| a.get(v).is_some())
                    .collect();
            if given.len() != 1 {
                let others: Vec<String> = a
                    .node
                    .attribute
                    .iter()
                    .filter_map(|x| x.name.clone())
                    .filter(|n| !given.contains(&n.as_str()))
                    .map(|n| format!("`{n}`"))
                    .collect();
                let has = if given.is_empty() { "none".to_string() } else { given.join(", ") };
                let also = if others.is_empty() {
                    String::new()
                } else {
                    format!(" (and {})", others.join(", "))
                };
                return Err(a.invalid(format!(
                    "Constant needs exactly one value attribute; it has {has}{also}"
                )));
            }
            Ok(Op::Constant)
        }
        "Shape" => Ok(Op::Shape { start: a.i64("start", 0), end: a.get("end").and_then(|v| v.i) }),
        "Size" => Ok(Op::Size),
        "Expand" => Ok(Op::Expand),
        "Range" => {
            // Range-27's stash_type only concerns float16 and bfloat16 inputs (not supported).
            let _ = a.get("stash_type");
            Ok(Op::Range)
        }
        "EyeLike" => {
            let dtype = match a.get("dtype").and_then(|v| v.i) {
                None => None,
                Some(code) => Some(DType::from_onnx(code as i32).ok_or_else(|| {
                    format!("EyeLike of {} is not supported", DType::onnx_name(code as i32))
                })?),
            };
            Ok(Op::EyeLike { dtype, k: a.i64("k", 0) })
        }
        "HannWindow" | "HammingWindow" | "BlackmanWindow" => {
            let kind = match op_type {
                "HannWindow" => WindowKind::Hann,
                "HammingWindow" => WindowKind::Hamming,
                _ => WindowKind::Blackman,
            };
            let dt = a.i64("output_datatype", 1);
            if dt != 1 {
                return Err(format!(
                    "{op_type} of {} is not supported (float only)",
                    DType::onnx_name(dt as i32)
                ));
            }
            Ok(Op::Window { kind, periodic: a.i64("periodic", 1) != 0 })
        }
        "CastLike" => {
            // `saturate` and `round_mode` only concern float8/float4 targets, none supported.
            let _ = (a.get("saturate"), a.get("round_mode"));
            Ok(Op::CastLike)
        }
        "Dropout" => {
            // The seed only matters in training mode, which is refused unless the ratio is 0;
            // before opset 12 the ratio is an attribute and training mode does not exist, so
            // it does not matter either.
            let _ = (a.get("seed"), a.get("ratio"));
            if opset < 7 {
                return Err("Dropout before opset 7 (is_test) is not supported".into());
            }
            Ok(Op::Dropout)
        }
        "ConstantOfShape" => {
            let value = match a.typed("value", crate::proto::attribute_proto::AttributeType::Tensor)
            {
                Some(t) => {
                    let t = t.t.as_ref().ok_or("ConstantOfShape `value` holds no tensor")?;
                    let t = crate::onnx::tensor_from_proto(t, None)?;
                    if t.len() != 1 {
                        return Err(a.invalid(format!(
                            "ConstantOfShape `value` has {} elements, not one",
                            t.len()
                        )));
                    }
                    Tensor { dtype: t.dtype, shape: vec![], data: t.data }
                }
                None => Tensor::from_f32(vec![], &[0.0]),
            };
            Ok(Op::ConstantOfShape { value })
        }
        other => Err(super::misrouted_name(other, FAMILY)),
    }
}

/// Output types from input types `ins` (and constant shape operands of `g`).
pub(crate) fn infer(g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = || input(ins, 0);
    match &node.op {
        Op::Constant => Ok(vec![]),
        Op::Identity => same(x()?),
        Op::Reshape { allowzero } => {
            let t = x()?;
            let spec = const_ints(g, node, 1)?.ok_or("Reshape needs a shape")?;
            Ok(vec![TensorType {
                dtype: t.dtype,
                shape: reshape_target(&t.shape, spec.into_iter(), *allowzero)?,
            }])
        }
        Op::Flatten { axis: ax } => {
            let t = x()?;
            let k =
                if *ax == t.shape.len() as i64 { t.shape.len() } else { axis(*ax, t.shape.len())? };
            Ok(vec![TensorType {
                dtype: t.dtype,
                shape: vec![t.shape[..k].iter().product(), t.shape[k..].iter().product()],
            }])
        }
        Op::Squeeze { axes } => {
            let t = x()?;
            let axes = match axes {
                Some(a) => Some(a.clone()),
                None => const_ints(g, node, 1)?,
            };
            let rank = t.shape.len();
            let drop: Vec<usize> = match axes {
                Some(a) => a.iter().map(|v| axis(*v, rank)).collect::<R<_>>()?,
                None => (0..rank).filter(|i| t.shape[*i] == 1).collect(),
            };
            for (i, k) in drop.iter().enumerate() {
                if t.shape[*k] != 1 {
                    return Err(format!("Squeeze of axis {k}, which has size {}", t.shape[*k]));
                }
                if drop[..i].contains(k) {
                    return Err(format!("Squeeze axis {k} given twice"));
                }
            }
            Ok(vec![TensorType {
                dtype: t.dtype,
                shape: t
                    .shape
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !drop.contains(i))
                    .map(|(_, d)| *d)
                    .collect(),
            }])
        }
        Op::Unsqueeze { axes } => {
            let t = x()?;
            let axes = match axes {
                Some(a) => a.clone(),
                None => const_ints(g, node, 1)?.ok_or("Unsqueeze needs axes")?,
            };
            let rank = t.shape.len() + axes.len();
            let ins_at: Vec<usize> = axes.iter().map(|v| axis(*v, rank)).collect::<R<_>>()?;
            if let Some(k) =
                ins_at.iter().enumerate().find_map(|(i, k)| ins_at[..i].contains(k).then_some(k))
            {
                return Err(format!("Unsqueeze axis {k} given twice"));
            }
            let mut dims = t.shape.iter();
            let shape = (0..rank)
                .map(|i| if ins_at.contains(&i) { 1 } else { dims.next().copied().unwrap_or(1) })
                .collect();
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        Op::Shape { start, end } => {
            let rank = x()?.shape.len() as i64;
            let c = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank);
            let n = (c(end.unwrap_or(rank)) - c(*start)).max(0) as usize;
            Ok(vec![TensorType { dtype: DType::I64, shape: vec![n] }])
        }
        Op::Size => {
            x()?;
            Ok(vec![TensorType { dtype: DType::I64, shape: vec![] }])
        }
        Op::Expand => {
            let t = x()?;
            let spec = const_ints(g, node, 1)?.ok_or("Expand needs a shape")?;
            let spec = dims_of(&spec, "Expand")?;
            Ok(vec![TensorType { dtype: t.dtype, shape: broadcast_shape(&t.shape, &spec)? }])
        }
        Op::ConstantOfShape { value } => {
            let spec = const_ints(g, node, 0)?.ok_or("ConstantOfShape needs a shape")?;
            Ok(vec![TensorType { dtype: value.dtype, shape: dims_of(&spec, "ConstantOfShape")? }])
        }
        Op::EyeLike { dtype, .. } => {
            let t = x()?;
            if t.shape.len() != 2 {
                return Err(format!("EyeLike of {t} (2-D only)"));
            }
            Ok(vec![TensorType { dtype: dtype.unwrap_or(t.dtype), shape: t.shape.clone() }])
        }
        Op::Window { .. } => {
            let size = const_ints(g, node, 0)?.ok_or(
                "the window size is computed at run time; a static compiler needs it as a constant",
            )?;
            let n = size.first().copied().unwrap_or(0);
            let n = usize::try_from(n).map_err(|_| format!("window size {n} is negative"))?;
            Ok(vec![TensorType { dtype: DType::F32, shape: vec![n] }])
        }
        Op::Range => {
            let t = x()?;
            for i in 1..3 {
                if input(ins, i)?.dtype != t.dtype {
                    return Err(format!("Range of {} and {}", t.dtype, input(ins, i)?.dtype));
                }
            }
            let n = match g.value(node.inputs[0].ok_or("Range needs a start")?).constant {
                Some(_) => {
                    let get = |i: usize| -> R<Array> {
                        let id = node.inputs.get(i).copied().flatten().ok_or("missing input")?;
                        let c = g.value(id).constant.as_ref().ok_or_else(|| {
                            format!(
                                "input {i} is computed at run time; a static compiler needs it as a constant"
                            )
                        })?;
                        Ok(Array::from_tensor(c))
                    };
                    range(&get(0)?, &get(1)?, &get(2)?)?.shape()[0]
                }
                None => {
                    return Err("input 0 is computed at run time; a static compiler needs it as \
                                a constant"
                        .into());
                }
            };
            Ok(vec![TensorType { dtype: t.dtype, shape: vec![n] }])
        }
        Op::CastLike => {
            let (t, like) = (x()?, input(ins, 1)?);
            Ok(vec![TensorType { dtype: like.dtype, shape: t.shape.clone() }])
        }
        Op::Dropout => {
            let t = x()?;
            if let Some(Some(id)) = node.inputs.get(2) {
                let training = g.value(*id).constant.as_ref().ok_or(
                    "training_mode is computed at run time; a static compiler needs it as a constant",
                )?;
                if training.i64s().first().copied().unwrap_or(0) != 0 {
                    let ratio = match node.inputs.get(1).copied().flatten() {
                        Some(r) => g
                            .value(r)
                            .constant
                            .as_ref()
                            .map(Array::from_tensor)
                            .ok_or("the ratio of a training-mode Dropout must be a constant")?,
                        None => Array::F32(ArrayD::from_elem(IxDyn(&[]), 0.5)),
                    };
                    if ratio.f32()?.iter().any(|v| *v != 0.0) {
                        return Err("Dropout in training mode with a nonzero ratio draws random \
                                    numbers; accelc runs inference only"
                            .into());
                    }
                }
            }
            let mut out = vec![t.clone()];
            if node.outputs.len() > 1 {
                out.push(TensorType { dtype: DType::Bool, shape: t.shape.clone() });
            }
            Ok(out)
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// Shape's result for dimensions `dims`: `dims[start..end]`, negative bounds counting from the
/// end and both clamped to `0..=rank` (ONNX Shape-15).
pub(crate) fn shape_dims(dims: &[usize], start: i64, end: Option<i64>) -> Vec<i64> {
    let rank = dims.len() as i64;
    let clampd = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let (s0, e0) = (clampd(start), clampd(end.unwrap_or(rank)));
    dims[s0..e0.max(s0)].iter().map(|d| *d as i64).collect()
}

/// Reference semantics: the outputs for inputs `args` (the oracle the device is checked
/// against).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let one = |a: Array| Ok(vec![a]);
    match &node.op {
        Op::Constant => Err("constants are bound before evaluation".into()),
        Op::Identity => one(arg(args, 0)?.clone()),
        Op::Reshape { allowzero } => {
            let x = arg(args, 0)?;
            let spec = arg(args, 1)?.ints()?;
            let shape = reshape_target(x.shape(), spec.iter().copied(), *allowzero)?;
            one(reshape(x, &shape)?)
        }
        Op::Flatten { axis: ax } => {
            let x = arg(args, 0)?;
            let k = if *ax == x.shape().len() as i64 {
                x.shape().len()
            } else {
                axis(*ax, x.shape().len())?
            };
            let outer: usize = x.shape()[..k].iter().product();
            let inner: usize = x.shape()[k..].iter().product();
            one(reshape(x, &[outer, inner])?)
        }
        Op::Squeeze { axes } | Op::Unsqueeze { axes } => {
            let x = arg(args, 0)?;
            let axes: Option<Vec<i64>> = match axes {
                Some(a) => Some(a.clone()),
                None => opt(args, 1)
                    .map(|a| a.ints().map(|v| v.iter().copied().collect()))
                    .transpose()?,
            };
            let shape = if matches!(node.op, Op::Squeeze { .. }) {
                let rank = x.shape().len();
                let drop: Vec<usize> = match axes {
                    Some(a) => a.iter().map(|v| axis(*v, rank)).collect::<R<_>>()?,
                    None => (0..rank).filter(|i| x.shape()[*i] == 1).collect(),
                };
                if drop.iter().any(|d| x.shape()[*d] != 1) {
                    return Err(format!("cannot squeeze axes {drop:?} of {:?}", x.shape()));
                }
                x.shape()
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !drop.contains(i))
                    .map(|(_, d)| *d)
                    .collect()
            } else {
                let axes = axes.ok_or("Unsqueeze needs axes")?;
                let rank = x.shape().len() + axes.len();
                let mut ins: Vec<usize> = axes.iter().map(|v| axis(*v, rank)).collect::<R<_>>()?;
                ins.sort_unstable();
                let mut dims = x.shape().iter();
                (0..rank)
                    .map(|i| if ins.contains(&i) { 1 } else { dims.next().copied().unwrap_or(1) })
                    .collect::<Vec<_>>()
            };
            one(reshape(x, &shape)?)
        }
        Op::Shape { start, end } => {
            let dims = shape_dims(arg(args, 0)?.shape(), *start, *end);
            one(Array::Int(
                ArrayD::from_shape_vec(IxDyn(&[dims.len()]), dims).map_err(|e| e.to_string())?,
                DType::I64,
            ))
        }
        Op::Size => {
            let n = arg(args, 0)?.shape().iter().product::<usize>() as i64;
            one(Array::Int(ArrayD::from_elem(IxDyn(&[]), n), DType::I64))
        }
        Op::Expand => {
            let x = arg(args, 0)?;
            let spec: Vec<i64> = arg(args, 1)?.ints()?.iter().copied().collect();
            let shape = broadcast_shape(x.shape(), &dims_of(&spec, "Expand")?)?;
            one(broadcast_to(x, &shape)?)
        }
        Op::ConstantOfShape { value } => {
            let spec: Vec<i64> = arg(args, 0)?.ints()?.iter().copied().collect();
            let shape = dims_of(&spec, "ConstantOfShape")?;
            let v = Array::from_tensor(value);
            one(broadcast_to(&v, &shape)?)
        }
        Op::Range => one(range(arg(args, 0)?, arg(args, 1)?, arg(args, 2)?)?),
        Op::EyeLike { dtype, k } => {
            let x = arg(args, 0)?;
            let dt = dtype.unwrap_or(x.dtype());
            let sh = x.shape().to_vec();
            let (rows, cols) = (sh[0], sh[1]);
            let on = |r: usize, c: usize| c as i64 - r as i64 == *k;
            one(if dt == DType::F32 {
                Array::F32(ArrayD::from_shape_fn(IxDyn(&sh), |i| {
                    f32::from(u8::from(on(i[0], i[1])))
                }))
            } else {
                Array::Int(
                    ArrayD::from_shape_fn(IxDyn(&[rows, cols]), |i| i64::from(on(i[0], i[1]))),
                    dt,
                )
            })
        }
        Op::Window { kind, periodic } => {
            let size = arg(args, 0)?.ints()?.iter().next().copied().unwrap_or(0).max(0) as usize;
            one(Array::F32(
                ArrayD::from_shape_vec(IxDyn(&[size]), window(*kind, *periodic, size))
                    .map_err(|e| e.to_string())?,
            ))
        }
        Op::CastLike => one(cast(arg(args, 0)?, arg(args, 1)?.dtype())),
        Op::Dropout => {
            let x = arg(args, 0)?;
            let mut out = vec![x.clone()];
            if node.outputs.len() > 1 {
                out.push(Array::Int(ArrayD::from_elem(IxDyn(x.shape()), 1), DType::Bool));
            }
            Ok(out)
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    match op {
        Op::Flatten { axis } => a.push(format!("axis: int = {axis}")),
        Op::EyeLike { dtype, k } => {
            if let Some(d) = dtype {
                a.push(format!("dtype: int = {}", d.onnx_code()));
            }
            a.push(format!("k: int = {k}"));
        }
        Op::Window { periodic, .. } => a.push(format!("periodic: int = {}", i64::from(*periodic))),
        Op::Reshape { allowzero } => a.push(format!("allowzero: int = {}", i64::from(*allowzero))),
        Op::Squeeze { axes: Some(ax) } | Op::Unsqueeze { axes: Some(ax) } => {
            a.push(format!("axes: ints = {}", ints(ax)))
        }
        Op::Shape { start, end } => {
            if *start != 0 {
                a.push(format!("start: int = {start}"));
            }
            if let Some(e) = end {
                a.push(format!("end: int = {e}"));
            }
        }
        Op::ConstantOfShape { value } => {
            let mut t = String::from("value: tensor = ");
            crate::text::tensor_text(&mut t, &Tensor { shape: vec![1], ..value.clone() }, 1);
            a.push(t);
        }
        _ => {}
    }
}

/// Device lowering: `n` (node `idx` of the graph) as kernel steps of `b`, or the constraint
/// that keeps it off the device.
pub(crate) fn lower(b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    match &n.op {
        Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Identity => {
            let x = b.input(n, 0)?;
            let out = b.out(n, 0)?;
            let src = b.layout(x, false);
            b.s.tens[out].store = Store::Alias(src);
            Ok(())
        }
        Op::Dropout if n.outputs.len() == 1 => {
            let x = b.input(n, 0)?;
            let out = b.out(n, 0)?;
            let src = b.layout(x, false);
            b.s.tens[out].store = Store::Alias(src);
            Ok(())
        }
        Op::CastLike => {
            let (x, like) = (b.input(n, 0)?, b.input(n, 1)?);
            if b.s.tens[x].dtype != b.s.tens[like].dtype {
                return Err(LowerError::at(&n.name, "type conversions are not lowered"));
            }
            let out = b.out(n, 0)?;
            let src = b.layout(x, false);
            b.s.tens[out].store = Store::Alias(src);
            Ok(())
        }
        Op::Constant | Op::Shape { .. } | Op::Size => Ok(()),
        Op::Expand
        | Op::ConstantOfShape { .. }
        | Op::Range
        | Op::Dropout
        | Op::Window { .. }
        | Op::EyeLike { .. } => {
            Err(LowerError::at(&n.name, format!("{} is not lowered to the device", n.op_type)))
        }
        other => Err(LowerError::at(&n.name, super::misrouted(other, FAMILY))),
    }
}

/// Cost inputs: none (views of the same bytes, or folded at compile time).
pub(crate) fn work(op: &Op, _inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    match op {
        Op::Expand | Op::CastLike => Work::Traffic,
        _ => Work::Free,
    }
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`
/// (the operator schemas' `min_input`, `max_input`, `min_output`, `max_output`).
pub(crate) fn arity(op_type: &str, opset: i64) -> Arity {
    match op_type {
        "Reshape" if opset >= 5 => counts(2, 2, 1, 1),
        "Squeeze" if opset >= 13 => counts(1, 2, 1, 1),
        "Unsqueeze" if opset >= 13 => counts(2, 2, 1, 1),
        "Constant" => counts(0, 0, 1, 1),
        "Expand" | "CastLike" => counts(2, 2, 1, 1),
        "Range" => counts(3, 3, 1, 1),
        "Dropout" if opset >= 12 => counts(1, 3, 1, 2),
        "Dropout" => counts(1, 1, 1, 2),
        _ => counts(1, 1, 1, 1),
    }
}

/// The window function `kind` of `size` points in `f64`, rounded to `f32`, computed as onnx's
/// reference writes the formulas (ONNX HannWindow, HammingWindow, BlackmanWindow-17).
fn window(kind: WindowKind, periodic: bool, size: usize) -> Vec<f32> {
    let n1 = if periodic { size as f64 } else { size as f64 - 1.0 };
    let pi = std::f64::consts::PI;
    (0..size)
        .map(|i| {
            let n = i as f64;
            let v = match kind {
                WindowKind::Hann => {
                    let s = (n * pi / n1).sin();
                    s * s
                }
                WindowKind::Hamming => {
                    let alpha = 25.0 / 46.0;
                    alpha - (n * pi * 2.0 / n1).cos() * (1.0 - alpha)
                }
                WindowKind::Blackman => {
                    (n * (pi * 2.0) / n1).cos() * -0.5 + (n * (pi * 4.0) / n1).cos() * 0.08 + 0.42
                }
            };
            v as f32
        })
        .collect()
}

/// Reshape's shape and the axes of Squeeze and Unsqueeze (input 1) determine the output shape.
/// Expand's shape, ConstantOfShape's shape and Range's three inputs too; Dropout's
/// training_mode decides whether it is defined at all.
pub(crate) fn shape_operand(op: &Op, i: usize) -> bool {
    match op {
        Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Expand => i == 1,
        Op::ConstantOfShape { .. } => i == 0,
        Op::Range => true,
        Op::Window { .. } => i == 0,
        Op::Dropout => i >= 1,
        _ => false,
    }
}

/// Dimensions from a shape operand (each non-negative).
fn dims_of(spec: &[i64], op: &str) -> R<Vec<usize>> {
    spec.iter()
        .map(|d| usize::try_from(*d).map_err(|_| format!("{op} dimension {d} is negative")))
        .collect()
}

/// `x` broadcast to `shape` (which `x` broadcasts to), as a new array.
pub(crate) fn broadcast_to(x: &Array, shape: &[usize]) -> R<Array> {
    let err = || format!("{:?} does not broadcast to {shape:?}", x.shape());
    Ok(match x {
        Array::F32(a) => Array::F32(a.broadcast(IxDyn(shape)).ok_or_else(err)?.to_owned()),
        Array::Int(a, dt) => Array::Int(a.broadcast(IxDyn(shape)).ok_or_else(err)?.to_owned(), *dt),
    })
}

/// ONNX Range of three scalars: `max(ceil((limit − start) / delta), 0)` elements
/// `start + i·delta` (floats in `f32`, integers wrapping in the type).
pub(crate) fn range(start: &Array, limit: &Array, delta: &Array) -> R<Array> {
    let scalar_f = |a: &Array| -> R<f32> {
        a.f32()?.iter().next().copied().ok_or("an empty Range input".into())
    };
    let scalar_i = |a: &Array| -> R<i64> {
        a.ints()?.iter().next().copied().ok_or("an empty Range input".into())
    };
    // The element count is bounded: a Range is materialised.
    const MAX: f64 = (1u64 << 28) as f64;
    match start {
        Array::F32(_) => {
            let (s, l, d) = (scalar_f(start)?, scalar_f(limit)?, scalar_f(delta)?);
            if d == 0.0 {
                return Err("Range with delta 0".into());
            }
            let n = ((f64::from(l) - f64::from(s)) / f64::from(d)).ceil().max(0.0);
            if n > MAX || n.is_nan() {
                return Err(format!("Range of {n} elements"));
            }
            let v: Vec<f32> = (0..n as usize).map(|i| s + i as f32 * d).collect();
            Ok(Array::F32(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).map_err(|e| e.to_string())?))
        }
        Array::Int(_, dt) => {
            let (s, l, d) = (scalar_i(start)?, scalar_i(limit)?, scalar_i(delta)?);
            if d == 0 {
                return Err("Range with delta 0".into());
            }
            let span = i128::from(l) - i128::from(s);
            // ceil(span / d) in exact integers.
            let d128 = i128::from(d);
            let bump = i128::from(span % d128 != 0 && (span > 0) == (d > 0));
            let n = (span / d128 + bump).max(0);
            if n as f64 > MAX {
                return Err(format!("Range of {n} elements"));
            }
            let v: Vec<i64> =
                (0..n as i64).map(|i| dt.wrap(s.wrapping_add(i.wrapping_mul(d)))).collect();
            Ok(Array::Int(
                ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).map_err(|e| e.to_string())?,
                *dt,
            ))
        }
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
pub(crate) fn reshape_target(
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

/// Host lowering: the reshaping ops copy the bytes in order (row-major flat index to flat
/// index); Shape writes the dimensions; a Constant writes its tensor.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let out = n.outputs[0];
    let ot = b.ty(out)?;
    match &n.op {
        Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Identity => {
            let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
            b.map_out(out, &mut |b, idx| {
                let flat = b.linearize(idx, &ot.shape);
                b.load_flat(x, &flat)
            })
        }
        Op::Shape { start, end } => {
            let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
            let dims = shape_dims(&b.ty(x)?.shape, *start, *end);
            b.out(out)?;
            for (k, d) in dims.iter().enumerate() {
                let (c, i) = (b.i64c(*d), b.idx(k));
                b.store(&c, out, &[i])?;
            }
            Ok(())
        }
        Op::Constant => {
            let Some(c) = b.g.value(out).constant.clone() else {
                return Err(b.err(n, "a Constant without its value"));
            };
            let src = b.global(&c);
            b.map_out(out, &mut |b, idx| Ok(b.load_raw(&src, &ot, idx)))
        }
        Op::Dropout => {
            let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
            b.map_out(out, &mut |b, idx| b.load(x, idx))?;
            if let Some(mask) = n.outputs.get(1) {
                b.map_out(*mask, &mut |b, _| Ok(b.int(DType::Bool, 1)))?;
            }
            Ok(())
        }
        Op::Expand => {
            let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
            b.map_out(out, &mut |b, idx| b.load_bcast(x, idx))
        }
        Op::CastLike => {
            let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
            let from = b.ty(x)?.dtype;
            b.map_out(out, &mut |b, idx| {
                let v = b.load(x, idx)?;
                Ok(b.convert(&v, from, ot.dtype))
            })
        }
        Op::EyeLike { k, .. } => {
            let k = *k;
            b.map_out(out, &mut |b, idx| {
                let r = b.let_(&format!("arith.index_cast {} : index to i64", idx[0]));
                let c = b.let_(&format!("arith.index_cast {} : index to i64", idx[1]));
                let d = b.op2("arith.subi", &c, &r, "i64");
                let kc = b.i64c(k);
                let on = b.cmpi("eq", &d, &kc, "i64");
                Ok(if ot.dtype == DType::F32 {
                    let (one, zero) = (b.f32c(1.0), b.f32c(0.0));
                    b.select(&on, &one, &zero, "f32")
                } else {
                    let (one, zero) = (b.int(ot.dtype, 1), b.int(ot.dtype, 0));
                    b.select(&on, &one, &zero, crate::lower::host::scalar(ot.dtype))
                })
            })
        }
        // Computed from constants only (their inputs are shape operands): their value is known.
        Op::Size | Op::ConstantOfShape { .. } | Op::Range | Op::Window { .. } => {
            let Some(c) = b.g.value(out).constant.clone() else {
                return Err(b.err(n, format!("{} of values computed at run time", n.op_type)));
            };
            let src = b.global(&c);
            b.map_out(out, &mut |b, idx| Ok(b.load_raw(&src, &ot, idx)))
        }
        other => Err(LowerError::msg(super::misrouted(other, FAMILY))),
    }
}
