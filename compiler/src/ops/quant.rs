//! Type conversion and quantisation: Cast, QuantizeLinear, DequantizeLinear, and the integer
//! kernels the quantization rules make of QDQ regions (QAdd, Lut).
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer and device lowering.

use ndarray::ArrayD;

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
pub(crate) const FAMILY: &str = "quant";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &["Cast", "QuantizeLinear", "DequantizeLinear"];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, _opset: i64) -> Result<Op, String> {
    match op_type {
        "Cast" => {
            // `saturate` and `round_mode` only concern float8/float4 targets, none supported.
            let _ = (a.get("saturate"), a.get("round_mode"));
            let code = a.i64("to", 0) as i32;
            let to = DType::from_onnx(code)
                .ok_or_else(|| format!("Cast to {} is not supported", DType::onnx_name(code)))?;
            Ok(Op::Cast { to })
        }
        "QuantizeLinear" | "DequantizeLinear" => {
            if a.i64("block_size", 0) != 0 {
                return Err(format!("{op_type} with block_size is not supported"));
            }
            if a.get("output_dtype").is_some_and(|v| v.i.unwrap_or(0) != 0) {
                return Err(format!("{op_type} with output_dtype is not supported"));
            }
            if a.get("precision").is_some_and(|v| v.i.unwrap_or(0) != 0) {
                return Err(format!("{op_type} with precision is not supported"));
            }
            // `saturate` only concerns float8 outputs, which are not supported.
            let _ = a.get("saturate");
            let axis = a.i64("axis", 1);
            Ok(if op_type == "QuantizeLinear" {
                Op::QuantizeLinear { axis }
            } else {
                Op::DequantizeLinear { axis }
            })
        }
        other => Err(super::misrouted_name(other, FAMILY)),
    }
}

/// Output types from input types `ins` (and constant shape operands of `g`).
pub(crate) fn infer(_g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = || input(ins, 0);
    match &node.op {
        Op::Cast { to } => Ok(vec![TensorType { dtype: *to, shape: x()?.shape.clone() }]),
        Op::QuantizeLinear { axis } => {
            let t = x()?;
            let dtype = ins.get(2).copied().flatten().map_or(DType::U8, |z| z.dtype);
            if t.dtype != DType::F32 {
                return Err(format!("QuantizeLinear of {} data", t.dtype));
            }
            if !matches!(dtype, DType::U8 | DType::I8 | DType::U16 | DType::I16) {
                return Err(format!("quantizing to {dtype} is not supported"));
            }
            quant_params(t, ins, *axis)?;
            Ok(vec![TensorType { dtype, shape: t.shape.clone() }])
        }
        Op::DequantizeLinear { axis } => {
            let t = x()?;
            if t.dtype == DType::F32 {
                return Err("DequantizeLinear of float data".into());
            }
            if let Some(z) = ins.get(2).copied().flatten()
                && z.dtype != t.dtype
            {
                return Err(format!("zero point of {} for {} data", z.dtype, t.dtype));
            }
            quant_params(t, ins, *axis)?;
            Ok(vec![TensorType { dtype: DType::F32, shape: t.shape.clone() }])
        }
        Op::Lut => {
            let (t, table) = (x()?, input(ins, 1)?);
            if !matches!(t.dtype, DType::U8 | DType::I8) {
                return Err(format!("table lookup of {} data", t.dtype));
            }
            if !matches!(table.dtype, DType::U8 | DType::I8) || table.shape != [256] {
                return Err(format!("lookup table {table}: needs 256 int8 or uint8 values"));
            }
            Ok(vec![TensorType { dtype: table.dtype, shape: t.shape.clone() }])
        }
        Op::QAdd { out, .. } => {
            let (a, b, rq) = (x()?, input(ins, 1)?, input(ins, 2)?);
            for t in [a, b] {
                if !matches!(t.dtype, DType::U8 | DType::I8) {
                    return Err(format!("QAdd of {} data", t.dtype));
                }
            }
            if a.shape != b.shape {
                return Err(format!("QAdd of {a} and {b}: the shapes differ"));
            }
            if rq.dtype != DType::I32 || rq.shape != [3, 2] {
                return Err(format!("QAdd requantisation {rq}: needs int32[3, 2]"));
            }
            Ok(vec![TensorType { dtype: *out, shape: a.shape.clone() }])
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// The rules ONNX gives (Quantize/DequantizeLinear) for the scale (input 1: float, a scalar or
/// one per element of `axis`) and the zero point (input 2: the scale's shape), as the
/// reference applies them.
fn quant_params(x: &TensorType, ins: &[Option<&TensorType>], ax: i64) -> R<()> {
    let scale = input(ins, 1)?;
    if scale.dtype != DType::F32 {
        return Err(format!("scale of {} is not float", scale.dtype));
    }
    if scale.shape.len() > 1 {
        return Err(format!("scale of shape {:?} is neither a scalar nor 1-D", scale.shape));
    }
    let n: usize = scale.shape.iter().product();
    crate::interp::per_axis(&x.shape, n, ax)?;
    if let Some(z) = ins.get(2).copied().flatten() {
        let m: usize = z.shape.iter().product();
        if m != n {
            return Err(format!("{m} zero points for {n} scales"));
        }
    }
    Ok(())
}

/// Reference semantics: the outputs for inputs `args` (the oracle the device is checked
/// against).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let one = |a: Array| Ok(vec![a]);
    match &node.op {
        Op::Cast { to } => one(cast(arg(args, 0)?, *to)),
        Op::QuantizeLinear { axis: ax } => {
            let x = arg(args, 0)?.f32()?;
            let scale = arg(args, 1)?.f32()?;
            let (zp, dt) = match opt(args, 2) {
                Some(Array::Int(z, dt)) => (Some(z), *dt),
                Some(Array::F32(_)) => return Err("float zero points are not supported".into()),
                None => (None, DType::U8),
            };
            let (lo, hi) = match dt {
                DType::U8 | DType::I8 | DType::U16 | DType::I16 => dt.int_range(),
                other => return Err(format!("quantizing to {other} is not supported")),
            };
            let per = per_axis(x.shape(), scale.len(), *ax)?;
            let scales: Vec<f32> = scale.iter().copied().collect();
            let zps: Vec<i64> =
                zp.map_or_else(|| vec![0; scales.len()], |z| z.iter().copied().collect());
            if zps.len() != scales.len() {
                return Err(format!("{} zero points for {} scales", zps.len(), scales.len()));
            }
            let mut y = ArrayD::<i64>::zeros(x.raw_dim());
            for (i, (v, out)) in x.iter().zip(y.iter_mut()).enumerate() {
                let c = per.map_or(0, |(inner, n)| (i / inner) % n);
                let q = (v / scales[c]).round_ties_even();
                // `as` saturates (and maps NaN to 0), so a huge quotient cannot wrap.
                *out = (q as i64).saturating_add(zps[c]).clamp(lo, hi);
            }
            one(Array::Int(y, dt))
        }
        Op::DequantizeLinear { axis: ax } => {
            let Array::Int(x, _) = arg(args, 0)? else {
                return Err("DequantizeLinear of float data".into());
            };
            let scale = arg(args, 1)?.f32()?;
            let zps: Option<Vec<i64>> =
                opt(args, 2).map(|z| z.ints().map(|v| v.iter().copied().collect())).transpose()?;
            let per = per_axis(x.shape(), scale.len(), *ax)?;
            let scales: Vec<f32> = scale.iter().copied().collect();
            if zps.as_ref().is_some_and(|z| z.len() != scales.len()) {
                return Err("zero points and scales differ in length".into());
            }
            let mut y = ArrayD::<f32>::zeros(x.raw_dim());
            for (i, (v, out)) in x.iter().zip(y.iter_mut()).enumerate() {
                let c = per.map_or(0, |(inner, n)| (i / inner) % n);
                let z = zps.as_ref().map_or(0, |z| z[c]);
                *out = (v - z) as f32 * scales[c];
            }
            one(Array::F32(y))
        }
        Op::Lut => {
            let x = arg(args, 0)?.ints()?;
            let Array::Int(table, dt) = arg(args, 1)? else {
                return Err("a float lookup table".into());
            };
            let table: Vec<i64> = table.iter().copied().collect();
            if table.len() != 256 {
                return Err(format!("a lookup table of {} entries", table.len()));
            }
            one(Array::Int(x.mapv(|v| table[usize::from(v as u8)]), *dt))
        }
        Op::QAdd { a_zp, b_zp, y_zp, lo, hi, out } => {
            let (a, b) = (arg(args, 0)?.ints()?, arg(args, 1)?.ints()?);
            let rq: Vec<i64> = arg(args, 2)?.ints()?.iter().copied().collect();
            let [ra, rb, ro] = qadd_records(&rq, *a_zp, *b_zp, *y_zp, *lo, *hi)?;
            if a.shape() != b.shape() {
                return Err("QAdd of different shapes".into());
            }
            let dt = crate::lower::device_dtype(*out).ok_or("QAdd to int64")?;
            let s32 = |v: i64| v.clamp(i32::MIN.into(), i32::MAX.into()) as i32;
            let mut y = ArrayD::<i64>::zeros(a.raw_dim());
            for ((o, va), vb) in y.iter_mut().zip(a.iter()).zip(b.iter()) {
                let ta = ra.apply(*va as i32, accelc_isa::Dtype::S32);
                let tb = rb.apply(*vb as i32, accelc_isa::Dtype::S32);
                *o = ro.apply(s32(ta + tb), dt);
            }
            one(Array::Int(y, *out))
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    match op {
        Op::QuantizeLinear { axis } | Op::DequantizeLinear { axis } => {
            a.push(format!("axis: int = {axis}"))
        }
        Op::Cast { to } => a.push(format!("to: int = {}", to.onnx_code())),
        Op::QAdd { a_zp, b_zp, y_zp, lo, hi, out } => {
            a.push(format!("a_zero_point: int = {a_zp}"));
            a.push(format!("b_zero_point: int = {b_zp}"));
            a.push(format!("y_zero_point: int = {y_zp}"));
            a.push(format!("clamp: ints = [{lo},{hi}]"));
            a.push(format!("to: int = {}", out.onnx_code()));
        }
        _ => {}
    }
}

/// Device lowering: `n` (node `idx` of the graph) as kernel steps of `b`, or the constraint
/// that keeps it off the device.
pub(crate) fn lower(b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    let name = n.name.clone();
    let err = |m: &str| LowerError::at(&name, m.to_string());
    match &n.op {
        Op::Cast { to } => {
            let x = b.input(n, 0)?;
            if *to != b.s.tens[x].dtype {
                return Err(err("type conversions are not lowered"));
            }
            let out = b.out(n, 0)?;
            let src = b.layout(x, false);
            b.s.tens[out].store = Store::Alias(src);
            Ok(())
        }
        Op::DequantizeLinear { .. } | Op::QuantizeLinear { .. } => {
            let dequant = matches!(n.op, Op::DequantizeLinear { .. });
            let x = b.input(n, 0)?;
            let out = b.out(n, 0)?;
            // Quantized weights (the frontend keeps them quantized) dequantized at compile
            // time, by the reference itself.
            if let Some(bytes) = constant_result(b, n)? {
                b.s.tens[out].store = Store::Const(bytes);
                return Ok(());
            }
            let scale = b
                .opt_input(n, 1)
                .and_then(|t| b.const_f32(t))
                .ok_or_else(|| err("the scale must be constant"))?;
            let zp = match b.opt_input(n, 2) {
                Some(t) => b.const_ints(t),
                None => Some(vec![0]),
            }
            .ok_or_else(|| err("the zero point must be constant"))?;
            let in_dt = b.s.tens[x].dtype;
            if dequant && !matches!(in_dt, DType::U8 | DType::I8 | DType::I32) {
                return Err(err(&format!("dequantizing {in_dt} is not lowered")));
            }
            if zp.len() != scale.len() {
                return Err(err("zero points and scales differ in length"));
            }
            if scale.len() == 1 {
                let nhwc = b.s.tens[x].nhwc;
                b.s.tens[out].nhwc = nhwc;
                let qk =
                    Qk { input: x, out, scale: scale[0], zp: zp[0] as i32, dequant, axis: None };
                b.step(Kernel::Quant(qk), &name, Some(out), vec![]);
                return Ok(());
            }
            // Per axis: the tensor as [outer, n, inner] in the plain layout.
            let (Op::DequantizeLinear { axis } | Op::QuantizeLinear { axis }) = &n.op else {
                unreachable!("matched above")
            };
            let shape = b.shape(x);
            let (inner, count) = per_axis(&shape, scale.len(), *axis)
                .map_err(|e| err(&e))?
                .ok_or_else(|| err("internal: per-axis parameters of a scalar"))?;
            let total: usize = shape.iter().product();
            let outer = total / (count * inner).max(1);
            let x = b.layout(x, false);
            b.s.tens[out].nhwc = false;
            let mut consts: Vec<u8> = scale.iter().flat_map(|v| v.to_le_bytes()).collect();
            consts.extend(zp.iter().flat_map(|z| (*z as f32).to_le_bytes()));
            consts.extend(zp.iter().flat_map(|z| (*z as i32).to_le_bytes()));
            let qk =
                Qk { input: x, out, scale: 0.0, zp: 0, dequant, axis: Some([outer, count, inner]) };
            b.step(Kernel::Quant(qk), &name, Some(out), vec![consts]);
            Ok(())
        }
        Op::Lut => {
            let x = b.input(n, 0)?;
            let table = b
                .opt_input(n, 1)
                .and_then(|t| b.const_ints(t))
                .filter(|t| t.len() == 256)
                .ok_or_else(|| err("the lookup table must be 256 constant values"))?;
            let out = b.out(n, 0)?;
            b.s.tens[out].nhwc = b.s.tens[x].nhwc;
            let bytes: Vec<u8> = table.iter().map(|v| *v as u8).collect();
            b.step(Kernel::Lut(Lk { input: x, out }), &name, Some(out), vec![bytes]);
            Ok(())
        }
        Op::QAdd { a_zp, b_zp, y_zp, lo, hi, .. } => {
            let (x, y) = (b.input(n, 0)?, b.input(n, 1)?);
            let rq = b
                .opt_input(n, 2)
                .and_then(|t| b.const_ints(t))
                .ok_or_else(|| err("the requantisation records must be constant"))?;
            let recs = qadd_records(&rq, *a_zp, *b_zp, *y_zp, *lo, *hi).map_err(|e| err(&e))?;
            let out = b.out(n, 0)?;
            // Both inputs in the first one's layout; the sum keeps it.
            let nhwc = b.s.tens[x].nhwc;
            let y = b.layout(y, nhwc);
            b.s.tens[out].nhwc = nhwc;
            let bytes: Vec<u8> = recs.iter().flat_map(|r| r.to_bytes()).collect();
            b.step(Kernel::QAdd(Qa { a: x, b: y, out }), &name, Some(out), vec![bytes]);
            Ok(())
        }
        other => Err(LowerError::at(&n.name, super::misrouted(other, FAMILY))),
    }
}

/// The records of `QAdd` from its table `rq` (`[3, 2]` multiplier and shift pairs): input `a`
/// and `b` to int32 with zero point `−R(zp)` (so the record computes `R(v) − R(zp)`), the
/// sum to the output with its zero point and clamp. Shared by the reference and the
/// lowering so that both compute the same integers.
pub(crate) fn qadd_records(
    rq: &[i64],
    a_zp: i32,
    b_zp: i32,
    y_zp: i32,
    lo: i32,
    hi: i32,
) -> R<[accelc_isa::requant::RequantRecord; 3]> {
    use accelc_isa::requant::RequantRecord;
    if rq.len() != 6 {
        return Err(format!("QAdd needs 3 requantisation records, not {} values", rq.len()));
    }
    let i16c = |v: i32| v.clamp(i16::MIN.into(), i16::MAX.into()) as i16;
    let rec = |i: usize, zero_point: i32, clamp_lo: i16, clamp_hi: i16| {
        let (m, shift) = (i32::try_from(rq[2 * i]), i32::try_from(rq[2 * i + 1]));
        let (Ok(multiplier), Ok(shift)) = (m, shift) else {
            return Err(format!("QAdd record {i} out of int32"));
        };
        let r = RequantRecord { multiplier, shift, zero_point, clamp_lo, clamp_hi };
        if r.valid() {
            Ok(r)
        } else {
            Err(format!("QAdd record {i}: shift {shift} outside -31..=30"))
        }
    };
    let input = |i: usize, zp: i32| {
        let r = rec(i, 0, i16::MIN, i16::MAX)?;
        let offset = r.apply(zp, accelc_isa::Dtype::S32);
        let offset = i32::try_from(-offset).map_err(|_| format!("QAdd record {i}: offset"))?;
        rec(i, offset, i16::MIN, i16::MAX)
    };
    Ok([input(0, a_zp)?, input(1, b_zp)?, rec(2, y_zp, i16c(lo), i16c(hi))?])
}

/// The result of `n` when every input is constant, evaluated by the reference (its bytes).
fn constant_result(b: &Builder<'_>, n: &Node) -> Result<Option<bytes::Bytes>, LowerError> {
    let mut arrays = Vec::with_capacity(n.inputs.len());
    for v in &n.inputs {
        match v {
            None => arrays.push(None),
            Some(v) => {
                let t = b.t(*v);
                let Some(data) = b.constant(t) else { return Ok(None) };
                let tn = &b.s.tens[t];
                let tensor = crate::ir::Tensor {
                    dtype: tn.dtype,
                    shape: tn.shape.clone(),
                    data: bytes::Bytes::copy_from_slice(data),
                };
                arrays.push(Some(Array::from_tensor(&tensor)));
            }
        }
    }
    let args: Vec<Option<&Array>> = arrays.iter().map(Option::as_ref).collect();
    let out = eval(n, &args, b.g.opset).map_err(|e| LowerError::at(&n.name, e))?;
    Ok(out.first().map(|a| a.to_tensor().data))
}

/// Cost inputs: a Cast to the type it already has is free; conversions are bounded by
/// traffic; an integer addition is six vector passes.
pub(crate) fn work(op: &Op, inputs: &[Option<TensorType>], outputs: &[TensorType]) -> Work {
    let same = match (inputs.first().and_then(|t| t.as_ref()), outputs.first()) {
        (Some(i), Some(o)) => i.dtype == o.dtype,
        _ => false,
    };
    match op {
        Op::Cast { .. } if same => Work::Free,
        // Widen, scale, widen, scale, add, requantise.
        Op::QAdd { .. } => Work::Vector { passes: 6, slow: false },
        Op::Lut => Work::Vector { passes: 1, slow: false },
        _ => Work::Traffic,
    }
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`
/// (the operator schemas' `min_input`, `max_input`, `min_output`, `max_output`).
pub(crate) fn arity(op_type: &str, opset: i64) -> Arity {
    let _ = opset;
    match op_type {
        "QuantizeLinear" | "DequantizeLinear" => counts(2, 3, 1, 1),
        _ => counts(1, 1, 1, 1),
    }
}

/// No input determines the output shape.
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
}

/// Host lowering: Cast as the interpreter converts; QuantizeLinear and DequantizeLinear per
/// tensor or per axis (round half to even, saturating); lookup tables; QAdd with the records
/// of its constant table, bit-exact with the device and the reference.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
    let xt = b.ty(x)?;
    let out = n.outputs[0];
    let odt = b.ty(out)?.dtype;
    // The parameter index of an element: its coordinate on the axis for per-axis parameters.
    let param = |b: &mut HostBuilder<'_>, v: ValueId, axis: i64, idx: &[String]| {
        let t = b.ty(v)?;
        let len: usize = t.shape.iter().product();
        let i = if len > 1 {
            let k = crate::interp::axis(axis, xt.shape.len()).map_err(|e| b.err(n, e))?;
            idx[k].clone()
        } else {
            b.idx(0)
        };
        let at: Vec<String> = t.shape.iter().map(|_| i.clone()).collect();
        b.load(v, &at)
    };
    match &n.op {
        Op::Cast { to } => {
            let to = *to;
            b.map_out(out, &mut |b, idx| {
                let v = b.load(x, idx)?;
                Ok(b.convert(&v, xt.dtype, to))
            })
        }
        Op::QuantizeLinear { axis } => {
            let s = n.inputs[1].ok_or_else(|| b.err(n, "the scale is missing"))?;
            let z = n.inputs.get(2).copied().flatten();
            let (lo, hi) = odt.int_range();
            let axis = *axis;
            b.map_out(out, &mut |b, idx| {
                let v = b.load(x, idx)?;
                let sc = param(b, s, axis, idx)?;
                let q = b.op2("arith.divf", &v, &sc, "f32");
                let q = b.op1("math.roundeven", &q, "f32");
                // Saturate to a range no zero point can overflow, then add and clamp.
                let big = b.f32c(1.0e12);
                let nbig = b.f32c(-1.0e12);
                let q = b.op2("arith.minimumf", &q, &big, "f32");
                let q = b.op2("arith.maximumf", &q, &nbig, "f32");
                let q = b.convert(&q, DType::F32, DType::I64);
                let zp = match z {
                    Some(z) => {
                        let zv = param(b, z, axis, idx)?;
                        let zt = b.ty(z)?.dtype;
                        b.widen(&zv, zt)
                    }
                    None => b.i64c(0),
                };
                let r = b.op2("arith.addi", &q, &zp, "i64");
                let (l, h) = (b.i64c(lo), b.i64c(hi));
                let r = b.op2("arith.maxsi", &r, &l, "i64");
                let r = b.op2("arith.minsi", &r, &h, "i64");
                Ok(b.narrow(&r, odt))
            })
        }
        Op::DequantizeLinear { axis } => {
            let s = n.inputs[1].ok_or_else(|| b.err(n, "the scale is missing"))?;
            let z = n.inputs.get(2).copied().flatten();
            let axis = *axis;
            b.map_out(out, &mut |b, idx| {
                let v = b.load(x, idx)?;
                let v = b.widen(&v, xt.dtype);
                let zp = match z {
                    Some(z) => {
                        let zv = param(b, z, axis, idx)?;
                        let zt = b.ty(z)?.dtype;
                        b.widen(&zv, zt)
                    }
                    None => b.i64c(0),
                };
                let d = b.op2("arith.subi", &v, &zp, "i64");
                let f = b.let_(&format!("arith.sitofp {d} : i64 to f32"));
                let sc = param(b, s, axis, idx)?;
                Ok(b.op2("arith.mulf", &f, &sc, "f32"))
            })
        }
        Op::Lut => {
            let t = n.inputs[1].ok_or_else(|| b.err(n, "the table is missing"))?;
            b.map_out(out, &mut |b, idx| {
                let v = b.load(x, idx)?;
                let i = b.let_(&format!("arith.extui {v} : i8 to i64"));
                let i = b.let_(&format!("arith.index_cast {i} : i64 to index"));
                b.load(t, &[i])
            })
        }
        Op::QAdd { a_zp, b_zp, y_zp, lo, hi, out: odt } => {
            // The records come from the constant table (the optimizer's): each input rescaled
            // to the common int32 grid, the sum saturated to int32, requantised to the output.
            let rq = n.inputs.get(2).copied().flatten().ok_or_else(|| b.err(n, "rq is missing"))?;
            let table = b.g.value(rq).constant.as_ref().ok_or_else(|| {
                b.err(n, "QAdd's requantisation table must be constant on the host")
            })?;
            let rqv: Vec<i64> = Array::from_tensor(table)
                .ints()
                .map_err(|e| b.err(n, e))?
                .iter()
                .copied()
                .collect();
            let recs =
                qadd_records(&rqv, *a_zp, *b_zp, *y_zp, *lo, *hi).map_err(|e| b.err(n, e))?;
            let bv = n.inputs[1].ok_or_else(|| b.err(n, "input b is missing"))?;
            let bd = b.ty(bv)?.dtype;
            let odt = *odt;
            let dt = crate::lower::device_dtype(odt).ok_or_else(|| b.err(n, "int64 output"))?;
            let (tlo, thi) = accelc_isa::requant::int_range(dt);
            let (olo, ohi) =
                (i64::from(recs[2].clamp_lo).max(tlo), i64::from(recs[2].clamp_hi).min(thi));
            b.map_out(out, &mut |b, idx| {
                let (imin, imax) = (b.i64c(i64::from(i32::MIN)), b.i64c(i64::from(i32::MAX)));
                let mut t = Vec::with_capacity(2);
                for (k, (v, d)) in [(x, xt.dtype), (bv, bd)].into_iter().enumerate() {
                    let e = b.load(v, idx)?;
                    let e = b.widen(&e, d);
                    let r = &recs[k];
                    let (m, sh, zp) = (
                        b.i64c(i64::from(r.multiplier)),
                        b.i64c(i64::from(r.shift)),
                        b.i64c(i64::from(r.zero_point)),
                    );
                    t.push(b.requant(&e, &m, &sh, &zp, &imin, &imax));
                }
                let s = b.op2("arith.addi", &t[0], &t[1], "i64");
                let s = b.op2("arith.maxsi", &s, &imin, "i64");
                let s = b.op2("arith.minsi", &s, &imax, "i64");
                let r = &recs[2];
                let (m, sh, zp) = (
                    b.i64c(i64::from(r.multiplier)),
                    b.i64c(i64::from(r.shift)),
                    b.i64c(i64::from(r.zero_point)),
                );
                let (l, h) = (b.i64c(olo), b.i64c(ohi));
                let q = b.requant(&s, &m, &sh, &zp, &l, &h);
                Ok(b.narrow(&q, odt))
            })
        }
        other => Err(LowerError::msg(super::misrouted(other, FAMILY))),
    }
}
