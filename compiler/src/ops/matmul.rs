//! Matrix products: Gemm, MatMul, and the integer MatMulInteger and QLinearMatMul.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer and device lowering.

use accelc_isa::BinOp;
use ndarray::{Array2, ArrayD, Axis, IxDyn, s};

use super::Work;
use crate::interp::*;
use crate::ir::*;
use crate::lower::LowerError;
use crate::lower::host::HostBuilder;
use crate::lower::schedule::*;
use crate::lower::view::{View, ViewOp};
use crate::onnx::Attrs;
use crate::ops::{Arity, counts};
use crate::shape::*;
use crate::text::*;

type R<T> = Result<T, String>;

/// The family's name in the registry.
pub(crate) const FAMILY: &str = "matmul";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &["Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, _opset: i64) -> Result<Op, String> {
    match op_type {
        "Gemm" => Ok(Op::Gemm {
            alpha: a.f32("alpha", 1.0),
            beta: a.f32("beta", 1.0),
            trans_a: a.i64("transA", 0) != 0,
            trans_b: a.i64("transB", 0) != 0,
        }),
        "MatMul" => Ok(Op::MatMul),
        "MatMulInteger" => Ok(Op::MatMulInteger),
        "QLinearMatMul" => Ok(Op::QLinearMatMul),
        other => Err(super::misrouted_name(other, FAMILY)),
    }
}

/// Output types from input types `ins` (and constant shape operands of `g`).
pub(crate) fn infer(_g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let x = || input(ins, 0);
    match &node.op {
        Op::Gemm { trans_a, trans_b, .. } => {
            let (a, b) = (x()?, input(ins, 1)?);
            if a.shape.len() != 2 || b.shape.len() != 2 {
                return Err("Gemm needs matrices".into());
            }
            let (m, k) = if *trans_a { (a.shape[1], a.shape[0]) } else { (a.shape[0], a.shape[1]) };
            let (k2, n) =
                if *trans_b { (b.shape[1], b.shape[0]) } else { (b.shape[0], b.shape[1]) };
            if k != k2 {
                return Err(format!("Gemm of {:?} and {:?}", a.shape, b.shape));
            }
            // ONNX: C is unidirectionally broadcastable to (M, N).
            if let Some(c) = ins.get(2).copied().flatten()
                && crate::interp::broadcast_shape(&[m, n], &c.shape).ok().as_deref()
                    != Some(&[m, n])
            {
                return Err(format!(
                    "Gemm's C of shape {:?} does not broadcast to [{m}, {n}]",
                    c.shape
                ));
            }
            Ok(vec![TensorType { dtype: a.dtype, shape: vec![m, n] }])
        }
        Op::MatMul => {
            Ok(vec![TensorType { dtype: x()?.dtype, shape: matmul_shape(x()?, input(ins, 1)?)? }])
        }
        Op::MatMulInteger => {
            Ok(vec![TensorType { dtype: DType::I32, shape: matmul_shape(x()?, input(ins, 1)?)? }])
        }
        Op::QLinearMatMul => {
            let dtype = ins.get(7).copied().flatten().map_or(DType::U8, |z| z.dtype);
            Ok(vec![TensorType { dtype, shape: matmul_shape(x()?, input(ins, 3)?)? }])
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// Reference semantics: the outputs for inputs `args` (the oracle the device is checked
/// against).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let one = |a: Array| Ok(vec![a]);
    match &node.op {
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            let a = to2(arg(args, 0)?.f32()?)?;
            let b = to2(arg(args, 1)?.f32()?)?;
            let a = if *trans_a { a.t().to_owned() } else { a };
            let b = if *trans_b { b.t().to_owned() } else { b };
            if a.ncols() != b.nrows() {
                return Err(format!("Gemm of {:?} and {:?}", a.shape(), b.shape()));
            }
            let mut y = a.dot(&b).into_dyn() * *alpha;
            // beta = 0 skips C (onnxruntime and onnx.reference do), so 0·inf never enters.
            if let Some(c) = opt(args, 2).filter(|_| *beta != 0.0) {
                let c = c.f32()?.mapv(|v| v * beta);
                y = zip_f32(&y, &c, |p, q| p + q)?;
            }
            one(Array::F32(y))
        }
        Op::MatMul => one(Array::F32(matmul(arg(args, 0)?.f32()?, arg(args, 1)?.f32()?)?)),
        Op::MatMulInteger => {
            let (a, b) = (
                centered(arg(args, 0)?, opt(args, 2), true)?,
                centered(arg(args, 1)?, opt(args, 3), false)?,
            );
            let y = matmul(&a, &b)?;
            one(Array::Int(y.mapv(|v| v as i64), DType::I32))
        }
        Op::QLinearMatMul => {
            let a = centered(arg(args, 0)?, opt(args, 2), true)?;
            let b = centered(arg(args, 3)?, opt(args, 5), false)?;
            let acc = matmul(&a, &b)?;
            requantize(&acc, arg(args, 1)?, arg(args, 4)?, arg(args, 6)?, opt(args, 7), 1)
        }
        other => Err(super::misrouted(other, FAMILY)),
    }
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    match op {
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            a.push(format!("alpha: float = {}", flt(*alpha)));
            a.push(format!("beta: float = {}", flt(*beta)));
            a.push(format!("transA: int = {}", i64::from(*trans_a)));
            a.push(format!("transB: int = {}", i64::from(*trans_b)));
        }
        Op::MatMul => {}
        Op::MatMulInteger => {}
        Op::QLinearMatMul => {}
        _ => {}
    }
}

/// Device lowering: `n` (node `idx` of the graph) as kernel steps of `b`, or the constraint
/// that keeps it off the device.
pub(crate) fn lower(b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    let name = n.name.clone();
    let err = |m: &str| LowerError::at(&name, m.to_string());
    match &n.op {
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            let mut a = b.input(n, 0)?;
            let bm = b.input(n, 1)?;
            if b.s.tens[a].dtype != DType::F32 {
                return Err(err("only float32 Gemm is lowered"));
            }
            a = b.layout(a, false);
            if *trans_a {
                a = permuted(b, a, vec![1, 0], "T", &format!("{name}:transA"));
            }
            let sa = b.shape(a);
            let (m, kk) = (sa[0], sa[1]);
            let out0 = b.out(n, 0)?;
            let nn = b.shape(out0)[1];
            let mut names = vec![name.clone()];
            let mut bias = vec![0.0f32; nn];
            let mut residual = None;
            // With beta = 0, C is not read at all (onnxruntime and onnx.reference skip it), so
            // an infinite or NaN C does not turn the result into NaN through 0·C.
            if let Some(c) = b.opt_input(n, 2).filter(|_| *beta != 0.0) {
                let cs = b.shape(c);
                match b.const_f32(c) {
                    Some(v) if v.len() == nn && cs.last() == Some(&nn) => {
                        bias = v.iter().map(|x| x * beta).collect();
                    }
                    Some(v) if v.len() == 1 => bias = vec![v[0] * beta; nn],
                    Some(v) => {
                        // Any other broadcast: expand to [M, N] and add as a residual.
                        let src = View::dense(0, 0, &cs, 1);
                        let bv = src.apply(&ViewOp::Broadcast(vec![m, nn]))?;
                        let mut full = Vec::with_capacity(m * nn);
                        for i in 0..m {
                            for j in 0..nn {
                                let off = i as u64 * bv.dims[0].1 + j as u64 * bv.dims[1].1;
                                full.push(v[off as usize] * beta);
                            }
                        }
                        residual = Some(b.temp(
                            format!("{name}.C"),
                            vec![m, nn],
                            DType::F32,
                            false,
                            Store::Const(f32_bytes(&full).into()),
                        ));
                    }
                    None if *beta == 1.0 && cs == vec![m, nn] => {
                        residual = Some(b.layout(c, false))
                    }
                    None => {
                        // Expand (and scale) C into an [M, N] temporary added as a residual.
                        let t = b.temp(
                            format!("{name}.C"),
                            vec![m, nn],
                            DType::F32,
                            false,
                            Store::Arena,
                        );
                        let ew = Ew {
                            out: t,
                            out_view: vec![],
                            inputs: vec![(c, vec![ViewOp::Broadcast(vec![m, nn])])],
                            prog: vec![Micro::Bin(BinOp::Mul, 0, Src::In(0), Src::Imm(0))],
                            regs: 1,
                        };
                        b.step(
                            Kernel::Elementwise(ew),
                            &format!("{name}:C"),
                            None,
                            vec![f32_bytes(&[*beta])],
                        );
                        residual = Some(t);
                    }
                }
            }
            let (weights, oihw) = match b.const_f32(bm) {
                Some(v) => {
                    // oihw is [N][K].
                    let w: Vec<f32> = if *trans_b {
                        v.iter().map(|x| x * alpha).collect()
                    } else {
                        let mut t = vec![0.0; nn * kk];
                        for k in 0..kk {
                            for j in 0..nn {
                                t[j * kk + k] = v[k * nn + j] * alpha;
                            }
                        }
                        t
                    };
                    (Weights::Const, w)
                }
                None => {
                    if *alpha != 1.0 {
                        return Err(err("Gemm with a computed B needs alpha 1"));
                    }
                    let mut bt = b.layout(bm, false);
                    if *trans_b {
                        bt = permuted(b, bt, vec![1, 0], "T", &format!("{name}:transB"));
                    }
                    (Weights::Runtime { t: bt, offs: vec![0], row: nn as u64 * 4 }, vec![])
                }
            };
            let mut end = out0;
            if residual.is_none() {
                end = b.fuse_bias(end, nn, &mut bias, &mut names);
            }
            let (act, end) = b.fuse_act(end, &mut names);
            let mm = Mm {
                input: a,
                img: [1, m, 1, kk],
                a_offs: vec![0],
                k: [1, 1],
                s: [1, 1],
                d: [1, 1],
                pad: [0; 4],
                groups: 1,
                out_hw: [m, 1],
                cout: nn,
                out: end,
                out_offs: vec![0],
                weights,
                oihw: f32_bytes(&oihw).into(),
                bias,
                residual,
                act,
                quant: None,
            };
            push_mm(b, mm, &names.join("+"), end)
        }
        Op::MatMul => {
            let a0 = b.input(n, 0)?;
            let bm = b.input(n, 1)?;
            if b.s.tens[a0].dtype != DType::F32 {
                return Err(err("only float32 MatMul is lowered"));
            }
            let a = b.layout(a0, false);
            let mut sa = b.shape(a);
            let mut sb = b.shape(bm);
            if sa.len() == 1 {
                sa.insert(0, 1);
            }
            if sb.len() == 1 {
                sb.push(1);
            }
            let (m, kk) = (sa[sa.len() - 2], sa[sa.len() - 1]);
            let nn = sb[sb.len() - 1];
            let out0 = b.out(n, 0)?;
            // The output with any vector dimensions put back.
            let (ab, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
            let mut os = if bb.len() > ab.len() { bb.to_vec() } else { ab.to_vec() };
            let off = os.len();
            for (i, d) in ab.iter().rev().enumerate() {
                os[off - 1 - i] = os[off - 1 - i].max(*d);
            }
            for (i, d) in bb.iter().rev().enumerate() {
                os[off - 1 - i] = os[off - 1 - i].max(*d);
            }
            os.extend([sa[sa.len() - 2], sb[sb.len() - 1]]);
            let batch: Vec<usize> = os[..os.len() - 2].to_vec();
            let nb: usize = batch.iter().product();
            let mut names = vec![name.clone()];
            let mut bias = vec![0.0f32; nn];
            let a_batch: usize = sa[..sa.len() - 2].iter().product();
            let const_b = if sb.len() == 2 { b.const_f32(bm) } else { None };
            let (img, a_offs, out_offs, weights, oihw) = match const_b {
                Some(v) if a_batch == nb => {
                    let mut t = vec![0.0; nn * kk];
                    for k in 0..kk {
                        for j in 0..nn {
                            t[j * kk + k] = v[k * nn + j];
                        }
                    }
                    ([1, nb * m, 1, kk], vec![0], vec![0], Weights::Const, t)
                }
                _ => {
                    let bt = b.layout(bm, false);
                    // Per batch index: offsets of A, B and the output under broadcasting.
                    let av = View::dense(0, 0, &sa[..sa.len() - 2], (m * kk * 4) as u64)
                        .apply(&ViewOp::Broadcast(batch.clone()))?;
                    let bv = View::dense(0, 0, &sb[..sb.len() - 2], (kk * nn * 4) as u64)
                        .apply(&ViewOp::Broadcast(batch.clone()))?;
                    let mut ao = Vec::new();
                    let mut bo = Vec::new();
                    for i in 0..nb {
                        let (mut rest, mut oa, mut ob) = (i, 0u64, 0u64);
                        for d in (0..batch.len()).rev() {
                            let k = rest % batch[d];
                            rest /= batch[d];
                            oa += k as u64 * av.dims[d].1;
                            ob += k as u64 * bv.dims[d].1;
                        }
                        ao.push(oa);
                        bo.push(ob);
                    }
                    let oo = (0..nb as u64).map(|i| i * (m * nn * 4) as u64).collect();
                    (
                        [nb, m, 1, kk],
                        ao,
                        oo,
                        Weights::Runtime { t: bt, offs: bo, row: nn as u64 * 4 },
                        vec![],
                    )
                }
            };
            let end = b.fuse_bias(out0, nn, &mut bias, &mut names);
            let (act, end) = b.fuse_act(end, &mut names);
            let mm = Mm {
                input: a,
                img,
                a_offs,
                k: [1, 1],
                s: [1, 1],
                d: [1, 1],
                pad: [0; 4],
                groups: 1,
                out_hw: [img[1], 1],
                cout: nn,
                out: end,
                out_offs,
                weights,
                oihw: f32_bytes(&oihw).into(),
                bias,
                residual: None,
                quant: None,
                act,
            };
            push_mm(b, mm, &names.join("+"), end)
        }
        // `legalize` rewrites every typed one (or says why not); an untyped input comes from
        // an op the compiler does not support, which `select` names first.
        Op::MatMulInteger | Op::QLinearMatMul => {
            Err(err(&format!("{}: its input's type is unknown", n.op_type)))
        }
        other => Err(LowerError::at(&n.name, super::misrouted(other, FAMILY))),
    }
}

/// Cost inputs: `M·N·K` multiply-accumulates for the float products; the integer ones run
/// bounded by traffic (they are not lowered to the matrix engine yet).
pub(crate) fn work(op: &Op, inputs: &[Option<TensorType>], outputs: &[TensorType]) -> Work {
    let out_elems: u64 = outputs.iter().map(|t| t.shape.iter().product::<usize>() as u64).sum();
    let a = inputs.first().and_then(|t| t.as_ref()).map(|t| t.shape.clone()).unwrap_or_default();
    match op {
        Op::Gemm { trans_a, .. } => {
            let k = if *trans_a { a.first() } else { a.last() }.copied().unwrap_or(1) as u64;
            Work::Macs(out_elems * k)
        }
        Op::MatMul => Work::Macs(out_elems * a.last().copied().unwrap_or(1) as u64),
        _ => Work::Traffic,
    }
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`
/// (the operator schemas' `min_input`, `max_input`, `min_output`, `max_output`).
pub(crate) fn arity(op_type: &str, opset: i64) -> Arity {
    match op_type {
        "Gemm" if opset < 11 => counts(3, 3, 1, 1),
        "Gemm" => counts(2, 3, 1, 1),
        "MatMulInteger" => counts(2, 4, 1, 1),
        "QLinearMatMul" => counts(8, 8, 1, 1),
        _ => counts(2, 2, 1, 1),
    }
}

/// No input determines the output shape.
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
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

pub(crate) fn matmul_shape(a: &TensorType, b: &TensorType) -> R<Vec<usize>> {
    let (sa, sb) = (&a.shape, &b.shape);
    if sa.is_empty() || sb.is_empty() {
        return Err("MatMul of a scalar".into());
    }
    let a2: Vec<usize> = if sa.len() == 1 { vec![1, sa[0]] } else { sa.clone() };
    let b2: Vec<usize> = if sb.len() == 1 { vec![sb[0], 1] } else { sb.clone() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(format!("MatMul of {sa:?} and {sb:?}"));
    }
    let mut shape = broadcast_shape(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if sa.len() > 1 {
        shape.push(m);
    }
    if sb.len() > 1 {
        shape.push(n);
    }
    Ok(shape)
}

/// Host lowering: Gemm (`alpha · A'B' + beta · C`, C broadcast, skipped when beta is 0) and
/// MatMul (numpy's rules: 1-D operands promoted, batch axes broadcast), summing `f32`
/// products in `f64` (rounded once, nearer the exact sum than a long `f32` chain);
/// MatMulInteger and QLinearMatMul summing `(a − a_zp)·(b − b_zp)` exactly in `i64` (A's zero
/// point per row, B's per column), the latter requantised as the reference does.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let a = n.inputs[0].ok_or_else(|| b.err(n, "input A is missing"))?;
    let bm = n.inputs[1].ok_or_else(|| b.err(n, "input B is missing"))?;
    let (at, bt) = (b.ty(a)?, b.ty(bm)?);
    let out = n.outputs[0];
    let ot = b.ty(out)?;
    match &n.op {
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            let c = n.inputs.get(2).copied().flatten().filter(|_| *beta != 0.0);
            let k = if *trans_a { at.shape[0] } else { at.shape[1] };
            let (ta, tb, alpha, beta) = (*trans_a, *trans_b, *alpha, *beta);
            b.map_out(out, &mut |b, idx| {
                let z = b.f64c(0.0);
                let r = b.fold_n(k, &[z], &["f64"], &mut |b, kk, acc| {
                    let ai = if ta {
                        [kk.to_string(), idx[0].clone()]
                    } else {
                        [idx[0].clone(), kk.to_string()]
                    };
                    let bi = if tb {
                        [idx[1].clone(), kk.to_string()]
                    } else {
                        [kk.to_string(), idx[1].clone()]
                    };
                    let x = b.load(a, &ai)?;
                    let y = b.load(bm, &bi)?;
                    let p = b.op2("arith.mulf", &x, &y, "f32");
                    let p = b.f64_of(&p);
                    Ok(vec![b.op2("arith.addf", &acc[0], &p, "f64")])
                })?;
                let r = b.f32_of(&r[0]);
                let al = b.f32c(alpha);
                let y = b.op2("arith.mulf", &r, &al, "f32");
                match c {
                    Some(c) => {
                        let cv = b.load_bcast(c, idx)?;
                        let be = b.f32c(beta);
                        let cv = b.op2("arith.mulf", &cv, &be, "f32");
                        Ok(b.op2("arith.addf", &y, &cv, "f32"))
                    }
                    None => Ok(y),
                }
            })
        }
        Op::MatMul => b.map_out(out, &mut |b, idx| {
            let z = b.f64c(0.0);
            let r = mm_sum(b, &at, &bt, idx, z, "f64", &mut |b, ai, bi, acc| {
                let x = b.load(a, ai)?;
                let y = b.load(bm, bi)?;
                let p = b.op2("arith.mulf", &x, &y, "f32");
                let p = b.f64_of(&p);
                Ok(b.op2("arith.addf", acc, &p, "f64"))
            })?;
            Ok(b.f32_of(&r))
        }),
        Op::MatMulInteger | Op::QLinearMatMul => {
            let q = matches!(n.op, Op::QLinearMatMul);
            let input = |i: usize| n.inputs.get(i).copied().flatten();
            let (b_in, az, bz) =
                if q { (input(3), input(2), input(5)) } else { (input(1), input(2), input(3)) };
            let bv = b_in.ok_or_else(|| b.err(n, "input B is missing"))?;
            let bt = b.ty(bv)?;
            let (ad, bd) = (at.dtype, bt.dtype);
            let orank = ot.shape.len();
            let odt = ot.dtype;
            b.map_out(out, &mut |b, idx| {
                // A's zero point per row (its second-last axis), B's per column.
                let row = if at.shape.len() >= 2 && orank >= 2 {
                    Some(idx[orank - 2].clone())
                } else {
                    None
                };
                let col = if bt.shape.len() >= 2 { idx.last().cloned() } else { None };
                let azp = crate::ops::conv::zero_point(b, az, row.as_ref())?;
                let bzp = crate::ops::conv::zero_point(b, bz, col.as_ref())?;
                let z = b.i64c(0);
                let acc = mm_sum(b, &at, &bt, idx, z, "i64", &mut |b, ai, bi, acc| {
                    let x = b.load(a, ai)?;
                    let x = b.widen(&x, ad);
                    let x = b.op2("arith.subi", &x, &azp, "i64");
                    let y = b.load(bv, bi)?;
                    let y = b.widen(&y, bd);
                    let y = b.op2("arith.subi", &y, &bzp, "i64");
                    let p = b.op2("arith.muli", &x, &y, "i64");
                    Ok(b.op2("arith.addi", acc, &p, "i64"))
                })?;
                if !q {
                    return Ok(b.narrow(&acc, DType::I32));
                }
                // The reference's channel axis for B's per-column scales: axis 1 of the
                // output (its last when the output is 1-D).
                let ch = if orank > 1 {
                    idx[1].clone()
                } else {
                    idx.last().cloned().unwrap_or_else(|| b.idx(0))
                };
                crate::ops::conv::requantize_one(
                    b,
                    n,
                    &acc,
                    [input(1), input(4), input(6)],
                    input(7),
                    &ch,
                    odt,
                )
            })
        }
        _ => Err(b.err(n, format!("{} has no host lowering yet", n.op_type))),
    }
}

/// What a matrix product's sum does with one term: the builder, A's index, B's index, the
/// accumulator; returns the next accumulator.
type MmBody<'a> =
    dyn FnMut(&mut HostBuilder<'_>, &[String], &[String], &str) -> Result<String, LowerError> + 'a;

/// Folds `f(A index, B index, acc)` over the shared axis of a matrix product's output element
/// `idx` (numpy's matmul: 1-D operands promoted, batch axes broadcast), from `init`.
fn mm_sum(
    b: &mut HostBuilder<'_>,
    at: &TensorType,
    bt: &TensorType,
    idx: &[String],
    init: String,
    ty: &str,
    f: &mut MmBody<'_>,
) -> Result<String, LowerError> {
    let (a1, b1) = (at.shape.len() == 1, bt.shape.len() == 1);
    let k = *at.shape.last().unwrap_or(&0);
    let orank = idx.len();
    // The output's batch indices, row and column (absent for a promoted 1-D operand).
    let (nb, m, nn) = match (a1, b1) {
        (false, false) => (orank - 2, Some(idx[orank - 2].clone()), Some(idx[orank - 1].clone())),
        (true, false) => (orank - 1, None, Some(idx[orank - 1].clone())),
        (false, true) => (orank - 1, Some(idx[orank - 1].clone()), None),
        (true, true) => (0, None, None),
    };
    let batch = idx[..nb].to_vec();
    let r = b.fold_n(k, &[init], &[ty], &mut |b, kk, acc| {
        let mut ai = Vec::new();
        if !a1 {
            let skip = batch.len() + 2 - at.shape.len();
            for (j, d) in at.shape[..at.shape.len() - 2].iter().enumerate() {
                ai.push(if *d == 1 { b.idx(0) } else { batch[skip + j].clone() });
            }
            ai.push(m.clone().unwrap_or_else(|| b.idx(0)));
        }
        ai.push(kk.to_string());
        let mut bi = Vec::new();
        if !b1 {
            let skip = batch.len() + 2 - bt.shape.len();
            for (j, d) in bt.shape[..bt.shape.len() - 2].iter().enumerate() {
                bi.push(if *d == 1 { b.idx(0) } else { batch[skip + j].clone() });
            }
        }
        bi.push(kk.to_string());
        if !b1 {
            bi.push(nn.clone().unwrap_or_else(|| b.idx(0)));
        }
        Ok(vec![f(b, &ai, &bi, &acc[0])?])
    })?;
    Ok(r[0].clone())
}
