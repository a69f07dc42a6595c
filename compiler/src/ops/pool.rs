//! Pooling: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, and the integer global
//! average pool the quantization rules make (QGlobalAveragePool).
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
use crate::onnx::{Attrs, window};
use crate::ops::{Arity, counts};
use crate::shape::*;
use crate::text::*;

type R<T> = Result<T, String>;

/// The family's name in the registry.
pub(crate) const FAMILY: &str = "pool";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] =
    &["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, _opset: i64) -> Result<Op, String> {
    match op_type {
        "MaxPool" if a.node.output.iter().filter(|o| !o.is_empty()).count() > 1 => {
            Err("MaxPool's Indices output is not supported".into())
        }
        "MaxPool" => {
            if a.i64("storage_order", 0) != 0 {
                return Err("MaxPool with storage_order=1 is not supported".into());
            }
            Ok(Op::Pool { max: true, window: window(a)?, count_include_pad: false })
        }
        "AveragePool" => Ok(Op::Pool {
            max: false,
            window: window(a)?,
            count_include_pad: a.i64("count_include_pad", 0) != 0,
        }),
        "GlobalAveragePool" => Ok(Op::GlobalPool { max: false }),
        "LpPool" => {
            let p = a.i64("p", 2);
            if p < 1 {
                return Err(a.invalid(format!("LpPool p = {p} must be at least 1")));
            }
            Ok(Op::LpPool { window: window(a)?, p })
        }
        "GlobalMaxPool" => Ok(Op::GlobalPool { max: true }),
        other => Err(super::misrouted_name(other, FAMILY)),
    }
}

/// Output types from input types `ins` (and constant shape operands of `g`).
pub(crate) fn infer(_g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = || input(ins, 0);
    match &node.op {
        Op::Pool { window, .. } | Op::LpPool { window, .. } => {
            let t = x()?;
            if matches!(node.op, Op::LpPool { .. }) && t.dtype != DType::F32 {
                return Err(format!("LpPool of {t}"));
            }
            if t.shape.len() < 3 {
                return Err("pooling needs N, C and spatial axes".into());
            }
            let mut shape = t.shape[..2].to_vec();
            shape.extend(window_out(&t.shape[2..], &window.kernel, window, true)?);
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        Op::GlobalPool { .. } => {
            let t = x()?;
            if t.shape.len() < 3 {
                return Err("global pooling needs N, C and spatial axes".into());
            }
            if t.dtype != DType::F32 {
                return Err(format!("global pooling of {} is not supported", t.dtype));
            }
            let shape =
                t.shape.iter().enumerate().map(|(i, d)| if i < 2 { *d } else { 1 }).collect();
            Ok(vec![TensorType { dtype: t.dtype, shape }])
        }
        Op::QGlobalAveragePool { out, .. } => {
            let (t, rq) = (x()?, input(ins, 1)?);
            if !matches!(t.dtype, DType::U8 | DType::I8) || t.shape.len() < 3 {
                return Err(format!("QGlobalAveragePool of {t}"));
            }
            if rq.dtype != DType::I32 || rq.shape != [1, 2] {
                return Err(format!("QGlobalAveragePool requantisation {rq}: needs int32[1, 2]"));
            }
            let shape =
                t.shape.iter().enumerate().map(|(i, d)| if i < 2 { *d } else { 1 }).collect();
            Ok(vec![TensorType { dtype: *out, shape }])
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// The record of `QGlobalAveragePool` from its `[multiplier, shift]` table, with the output
/// zero point and the type's full range (shared by the reference and the lowering).
pub(crate) fn qgap_record(rq: &[i64], y_zp: i32) -> R<accelc_isa::requant::RequantRecord> {
    let (Some(m), Some(sh)) = (rq.first(), rq.get(1)) else {
        return Err("QGlobalAveragePool needs a multiplier and a shift".into());
    };
    let (Ok(multiplier), Ok(shift)) = (i32::try_from(*m), i32::try_from(*sh)) else {
        return Err("QGlobalAveragePool record out of int32".into());
    };
    let r = accelc_isa::requant::RequantRecord {
        multiplier,
        shift,
        zero_point: y_zp,
        clamp_lo: i16::MIN,
        clamp_hi: i16::MAX,
    };
    if r.valid() { Ok(r) } else { Err(format!("requantisation shift {shift} outside -31..=30")) }
}

/// Reference semantics: the outputs for inputs `args` (the oracle the device is checked
/// against).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let one = |a: Array| Ok(vec![a]);
    match &node.op {
        Op::Pool { max, window, count_include_pad } => match arg(args, 0)? {
            Array::F32(x) => one(Array::F32(pool(x, *max, window, *count_include_pad, None)?)),
            // 8-bit values are exact in f32, so integer max pooling can share the float path.
            Array::Int(x, dt @ (DType::U8 | DType::I8)) if *max => {
                let y = pool(&x.mapv(|v| v as f32), true, window, false, None)?;
                one(Array::Int(y.mapv(|v| v as i64), *dt))
            }
            Array::Int(_, dt) => Err(format!("pooling of {dt} is not supported")),
        },
        Op::QGlobalAveragePool { x_zp, y_zp, out } => {
            let x = arg(args, 0)?.ints()?;
            let rq: Vec<i64> = arg(args, 1)?.ints()?.iter().copied().collect();
            let rec = qgap_record(&rq, *y_zp)?;
            let dt = crate::lower::device_dtype(*out).ok_or("QGlobalAveragePool to int64")?;
            if x.ndim() < 3 {
                return Err("global pooling needs N, C and spatial axes".into());
            }
            let (n, c) = (x.shape()[0], x.shape()[1]);
            let hw = x.len() / (n * c).max(1);
            let mut shape = vec![n, c];
            shape.extend(std::iter::repeat_n(1, x.ndim() - 2));
            let flat: Vec<i64> = x.iter().copied().collect();
            let mut vals = Vec::with_capacity(n * c);
            for plane in flat.chunks(hw.max(1)) {
                let sum: i64 = plane.iter().sum::<i64>() - hw as i64 * i64::from(*x_zp);
                let sum = i32::try_from(sum).map_err(|_| "pool sum overflows int32")?;
                vals.push(rec.apply(sum, dt));
            }
            let y = ArrayD::from_shape_vec(IxDyn(&shape), vals).map_err(|e| e.to_string())?;
            one(Array::Int(y, *out))
        }
        Op::LpPool { window, p } => {
            one(Array::F32(pool(arg(args, 0)?.f32()?, false, window, false, Some(*p))?))
        }
        Op::GlobalPool { max } => {
            let x = arg(args, 0)?.f32()?;
            if x.ndim() < 3 {
                return Err("global pooling needs N, C and spatial axes".into());
            }
            let (n, c) = (x.shape()[0], x.shape()[1]);
            let mut shape = vec![n, c];
            shape.extend(std::iter::repeat_n(1, x.ndim() - 2));
            let flat = x
                .as_standard_layout()
                .to_shape((n, c, x.len() / (n * c).max(1)))
                .map_err(|e| e.to_string())?
                .to_owned();
            let vals: Vec<f32> = flat
                .outer_iter()
                .flat_map(|img| {
                    img.outer_iter()
                        .map(|ch| {
                            if *max {
                                ch.fold(f32::NEG_INFINITY, |a, &b| nan_max(a, b))
                            } else {
                                (ch.iter().map(|v| f64::from(*v)).sum::<f64>() / ch.len() as f64)
                                    as f32
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            one(Array::F32(ArrayD::from_shape_vec(IxDyn(&shape), vals).map_err(|e| e.to_string())?))
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    match op {
        Op::Pool { window: w, count_include_pad, max } => {
            print_window(a, w);
            if !*max && *count_include_pad {
                a.push("count_include_pad: int = 1".into());
            }
        }
        Op::LpPool { window: w, p } => {
            print_window(a, w);
            a.push(format!("p: int = {p}"));
        }
        Op::GlobalPool { .. } => {}
        Op::QGlobalAveragePool { x_zp, y_zp, out } => {
            a.push(format!("x_zero_point: int = {x_zp}"));
            a.push(format!("y_zero_point: int = {y_zp}"));
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
        Op::Pool { max, window, count_include_pad } => {
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            // 1-D pooling arrives as 2-D (`legalize`).
            let dt = b.s.tens[x].dtype;
            let int8 = *max && matches!(dt, DType::I8 | DType::U8);
            if xs.len() != 4 || !(dt == DType::F32 || int8) {
                return Err(err(
                    "only 1-D and 2-D float32 pooling and int8/uint8 max pooling are lowered",
                ));
            }
            let out = b.out(n, 0)?;
            let os = b.shape(out);
            let k = [window.kernel[0], window.kernel[1]];
            let out_hw = [os[2], os[3]];
            let (s, d, pad) = window_geometry(n, window, &xs, k, out_hw)?;
            // Average pooling divides by the taps inside the input (plus, with
            // count_include_pad, those in the declared pads, not the ceil-mode overhang): a
            // table per output position.
            let mut consts = vec![];
            if !max {
                let g = pads(window, &xs[2..], &k).map_err(|e| err(&e))?;
                let per_axis = |a: usize, o: usize| -> f32 {
                    let (mut valid, mut padded) = (0, 0);
                    for t in 0..k[a] {
                        let pos = (o * s[a] + t * d[a]) as isize - g.begin[a] as isize;
                        if pos >= 0 && pos < xs[2 + a] as isize {
                            valid += 1;
                        } else if pos < (xs[2 + a] + g.end[a]) as isize {
                            padded += 1;
                        }
                    }
                    if *count_include_pad { (valid + padded) as f32 } else { valid as f32 }
                };
                let mut table = Vec::with_capacity(out_hw[0] * out_hw[1]);
                for oy in 0..out_hw[0] {
                    for ox in 0..out_hw[1] {
                        table.push((per_axis(0, oy) * per_axis(1, ox)).max(1.0));
                    }
                }
                consts.push(f32_bytes(&table));
            }
            let xin = b.layout(x, true);
            b.s.tens[out].nhwc = true;
            let img = [xs[0], xs[2], xs[3], xs[1]];
            let p = Pool { win: Win { input: xin, img, k, s, d, pad, out_hw, out }, max: *max };
            b.step(Kernel::Pool(p), &name, Some(out), consts);
            Ok(())
        }
        Op::GlobalPool { max } => {
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            if xs.len() != 4 || b.s.tens[x].dtype != DType::F32 {
                return Err(err("only 2-D float32 pooling is lowered"));
            }
            let out = b.out(n, 0)?;
            let xin = b.layout(x, true);
            b.s.tens[out].nhwc = true;
            let hw = (xs[2] * xs[3]) as f32;
            b.step(
                Kernel::GlobalPool {
                    input: xin,
                    out,
                    max: *max,
                    img: [xs[0], xs[2], xs[3], xs[1]],
                    quant: false,
                },
                &name,
                Some(out),
                vec![f32_bytes(&[hw])],
            );
            Ok(())
        }
        Op::QGlobalAveragePool { x_zp, y_zp, .. } => {
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            if xs.len() != 4 {
                return Err(err("only 2-D integer global pooling is lowered"));
            }
            let rq = b
                .opt_input(n, 1)
                .and_then(|t| b.const_ints(t))
                .ok_or_else(|| err("the requantisation record must be constant"))?;
            let rec = qgap_record(&rq, *y_zp).map_err(|e| err(&e))?;
            let out = b.out(n, 0)?;
            let xin = b.layout(x, true);
            b.s.tens[out].nhwc = true;
            // The record, then the sum's offset −H·W·x_zp (s32).
            let hw = (xs[2] * xs[3]) as i64;
            let offset = i32::try_from(-hw * i64::from(*x_zp))
                .map_err(|_| err("the zero point's sum overflows int32"))?;
            let mut p = rec.to_bytes().to_vec();
            p.extend(offset.to_le_bytes());
            let img = [xs[0], xs[2], xs[3], xs[1]];
            let k = Kernel::GlobalPool { input: xin, out, max: false, img, quant: true };
            b.step(k, &name, Some(out), vec![p]);
            Ok(())
        }
        Op::LpPool { .. } => Err(err("LpPool is not lowered to the device")),
        other => Err(LowerError::at(&n.name, super::misrouted(other, FAMILY))),
    }
}

/// Cost inputs: one vector pass per window tap and output element for windowed pooling;
/// global pooling runs bounded by traffic.
pub(crate) fn work(op: &Op, _inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    match op {
        Op::Pool { window, .. } => {
            Work::Vector { passes: window.kernel.iter().product::<usize>() as u64, slow: false }
        }
        Op::LpPool { window, .. } => {
            Work::Vector { passes: window.kernel.iter().product::<usize>() as u64, slow: true }
        }
        _ => Work::Traffic,
    }
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`
/// (the operator schemas' `min_input`, `max_input`, `min_output`, `max_output`).
pub(crate) fn arity(op_type: &str, opset: i64) -> Arity {
    match op_type {
        "MaxPool" if opset >= 8 => counts(1, 1, 1, 2),
        _ => counts(1, 1, 1, 1),
    }
}

/// No input determines the output shape.
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
}

/// N-d max or average pooling (N, C, spatial...).
/// Windowed pooling of `x` `[N, C, spatial...]`: max (NaN propagating), average (summed in
/// `f32`, divided by the taps inside, or with `count_include_pad` also those in the declared
/// pads), or with `lp` = `Some(p)` Lp pooling, `(Σ |x|^p)^(1/p)` in `f64` over the taps
/// inside (padding adds 0), as ONNX LpPool-18.
pub(crate) fn pool(
    x: &ArrayD<f32>,
    max: bool,
    win: &Window,
    count_include_pad: bool,
    lp: Option<i64>,
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
        let mut lp_sum = 0.0f64;
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
            if let Some(p) = lp {
                lp_sum += f64::from(v).abs().powf(p as f64);
            }
            acc = if max { nan_max(acc, v) } else { acc + v };
            count += 1;
        }
        *slot = if let Some(p) = lp {
            lp_sum.powf(1.0 / p as f64) as f32
        } else if max {
            acc
        } else {
            acc / (if count_include_pad { count + padded } else { count }).max(1) as f32
        };
    }
    Ok(out)
}

/// The input position (per spatial axis, an `index` that may lie in the padding) that window
/// tap `t` (a flat index into `kernel`) of output position `out` (spatial indices) reads:
/// `out·stride + k·dilation − pad_begin`.
fn tap_position(
    b: &mut HostBuilder<'_>,
    out: &[String],
    t: &str,
    kernel: &[usize],
    g: &Geometry,
) -> Vec<String> {
    let tk = b.delinearize(t, kernel);
    (0..kernel.len())
        .map(|i| {
            let s = b.idx(g.strides[i]);
            let d = b.idx(g.dilations[i]);
            let pb = b.idx(g.begin[i]);
            let a = b.iop("arith.muli", &out[i], &s);
            let k = b.iop("arith.muli", &tk[i], &d);
            let a = b.iop("arith.addi", &a, &k);
            b.iop("arith.subi", &a, &pb)
        })
        .collect()
}

/// Host lowering: max and average pooling over any number of spatial axes (8-bit max pooling
/// through `f32`, exact), with the reference's padding and `count_include_pad` rules, global
/// pooling (averages summed in `f64`), and the integer global average pool with its record.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the data input is missing"))?;
    let xt = b.ty(x)?;
    let out = n.outputs[0];
    let dt = xt.dtype;
    match &n.op {
        Op::LpPool { window, p } => {
            let spatial = xt.shape[2..].to_vec();
            let g = pads(window, &spatial, &window.kernel).map_err(|e| b.err(n, e))?;
            let kernel = window.kernel.clone();
            let taps: usize = kernel.iter().product();
            let p = *p as f64;
            b.map_out(out, &mut |b, idx| {
                let init = b.f64c(0.0);
                let r = b.fold_n(taps, &[init], &["f64"], &mut |b, t, acc| {
                    let pos = tap_position(b, &idx[2..], t, &kernel, &g);
                    let ok = b.in_bounds(&pos, &spatial);
                    let cl = b.clamp_pos(&pos, &spatial);
                    let mut xi = vec![idx[0].clone(), idx[1].clone()];
                    xi.extend(cl);
                    let v = b.load(x, &xi)?;
                    let v = b.f64_of(&v);
                    let v = b.op1("math.absf", &v, "f64");
                    let pc = b.f64c(p);
                    let v = b.op2("math.powf", &v, &pc, "f64");
                    let s = b.op2("arith.addf", &acc[0], &v, "f64");
                    Ok(vec![b.select(&ok, &s, &acc[0], "f64")])
                })?;
                let inv = b.f64c(1.0 / p);
                let y = b.op2("math.powf", &r[0], &inv, "f64");
                Ok(b.f32_of(&y))
            })
        }
        Op::Pool { max, window, count_include_pad } => {
            let spatial = xt.shape[2..].to_vec();
            let g = pads(window, &spatial, &window.kernel).map_err(|e| b.err(n, e))?;
            let kernel = window.kernel.clone();
            let taps: usize = kernel.iter().product();
            let (max, cip) = (*max, *count_include_pad);
            b.map_out(out, &mut |b, idx| {
                let init = b.f32c(if max { f32::NEG_INFINITY } else { 0.0 });
                let z = b.i64c(0);
                let r = b.fold_n(
                    taps,
                    &[init, z.clone(), z],
                    &["f32", "i64", "i64"],
                    &mut |b, t, acc| {
                        let pos = tap_position(b, &idx[2..], t, &kernel, &g);
                        let mut in_pads = b.let_("arith.constant true");
                        for (i, p) in pos.iter().enumerate() {
                            let lim = b.idx(spatial[i] + g.end[i]);
                            let below = b.cmpi("slt", p, &lim, "index");
                            in_pads = b.op2("arith.andi", &in_pads, &below, "i1");
                        }
                        let ok = b.in_bounds(&pos, &spatial);
                        let cl = b.clamp_pos(&pos, &spatial);
                        let mut xi = vec![idx[0].clone(), idx[1].clone()];
                        xi.extend(cl);
                        let v = b.load(x, &xi)?;
                        let v = b.convert(&v, dt, DType::F32);
                        let next = if max {
                            b.op2("arith.maximumf", &acc[0], &v, "f32")
                        } else {
                            b.op2("arith.addf", &acc[0], &v, "f32")
                        };
                        let a = b.select(&ok, &next, &acc[0], "f32");
                        let one = b.i64c(1);
                        let c1 = b.op2("arith.addi", &acc[1], &one, "i64");
                        let cnt = b.select(&ok, &c1, &acc[1], "i64");
                        let padded_here = {
                            let f = b.let_("arith.constant false");
                            let nok = b.cmpi("eq", &ok, &f, "i1");
                            b.op2("arith.andi", &nok, &in_pads, "i1")
                        };
                        let p1 = b.op2("arith.addi", &acc[2], &one, "i64");
                        let pad = b.select(&padded_here, &p1, &acc[2], "i64");
                        Ok(vec![a, cnt, pad])
                    },
                )?;
                if max {
                    return Ok(b.convert(&r[0], DType::F32, dt));
                }
                let total =
                    if cip { b.op2("arith.addi", &r[1], &r[2], "i64") } else { r[1].clone() };
                let one = b.i64c(1);
                let total = b.op2("arith.maxsi", &total, &one, "i64");
                let tf = b.let_(&format!("arith.sitofp {total} : i64 to f32"));
                Ok(b.op2("arith.divf", &r[0], &tf, "f32"))
            })
        }
        Op::QGlobalAveragePool { x_zp, y_zp, out: odt } => {
            // Σ x − H·W·x_zp exactly (an int32), then the record of `rq`.
            let rq = n.inputs.get(1).copied().flatten().ok_or_else(|| b.err(n, "rq is missing"))?;
            let spatial = xt.shape[2..].to_vec();
            let count: usize = spatial.iter().product();
            let odt = *odt;
            let dtd = crate::lower::device_dtype(odt).ok_or_else(|| b.err(n, "int64 output"))?;
            let (lo, hi) = accelc_isa::requant::int_range(dtd);
            let off = count as i64 * i64::from(*x_zp);
            let y_zp = i64::from(*y_zp);
            b.map_out(out, &mut |b, idx| {
                let z = b.i64c(0);
                let r = b.fold_n(count, &[z], &["i64"], &mut |b, t, acc| {
                    let sp = b.delinearize(t, &spatial);
                    let mut xi = vec![idx[0].clone(), idx[1].clone()];
                    xi.extend(sp);
                    let v = b.load(x, &xi)?;
                    let v = b.widen(&v, dt);
                    Ok(vec![b.op2("arith.addi", &acc[0], &v, "i64")])
                })?;
                let o = b.i64c(off);
                let sum = b.op2("arith.subi", &r[0], &o, "i64");
                b.check_i32(&sum);
                let (c0, c1) = (b.idx(0), b.idx(1));
                let m = b.load(rq, &[c0.clone(), c0.clone()])?;
                let sh = b.load(rq, &[c0, c1])?;
                let (m, sh) = (b.widen(&m, DType::I32), b.widen(&sh, DType::I32));
                let (zp, l, h) = (b.i64c(y_zp), b.i64c(lo), b.i64c(hi));
                let q = b.requant(&sum, &m, &sh, &zp, &l, &h);
                Ok(b.narrow(&q, odt))
            })
        }
        Op::GlobalPool { max } => {
            let spatial = xt.shape[2..].to_vec();
            let count: usize = spatial.iter().product();
            let max = *max;
            b.map_out(out, &mut |b, idx| {
                let init = if max { b.f32c(f32::NEG_INFINITY) } else { b.f64c(0.0) };
                let ty = if max { "f32" } else { "f64" };
                let r = b.fold_n(count, &[init], &[ty], &mut |b, t, acc| {
                    let sp = b.delinearize(t, &spatial);
                    let mut xi = vec![idx[0].clone(), idx[1].clone()];
                    xi.extend(sp);
                    let v = b.load(x, &xi)?;
                    Ok(vec![if max {
                        b.op2("arith.maximumf", &acc[0], &v, "f32")
                    } else {
                        let v = b.f64_of(&v);
                        b.op2("arith.addf", &acc[0], &v, "f64")
                    }])
                })?;
                if max {
                    return Ok(r[0].clone());
                }
                let c = b.f64c(count as f64);
                let m = b.op2("arith.divf", &r[0], &c, "f64");
                Ok(b.f32_of(&m))
            })
        }
        _ => Err(b.err(n, format!("{} has no host lowering yet", n.op_type))),
    }
}
