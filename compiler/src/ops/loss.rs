//! Losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (the log-softmax over axis 1,
//! then the negative log-likelihood), with class weights, `ignore_index` and the `none`, `sum`
//! and `mean` reductions as the ONNX operator specifications define them. They run on the
//! host: per-position class lookups are data-dependent addressing.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer, device lowering (refused, with the reason) and host lowering.

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

type R<T> = Result<T, String>;

/// The family's name in the registry.
pub(crate) const FAMILY: &str = "loss";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, _opset: i64) -> Result<Op, String> {
    let reduction = match a.string("reduction").as_deref() {
        None | Some("mean") => LossReduction::Mean,
        Some("sum") => LossReduction::Sum,
        Some("none") => LossReduction::None,
        Some(o) => return Err(a.invalid(format!("reduction `{o}` is not defined"))),
    };
    let ignore_index = a.get("ignore_index").and_then(|v| v.i);
    match op_type {
        "NegativeLogLikelihoodLoss" => Ok(Op::Loss { softmax: false, reduction, ignore_index }),
        "SoftmaxCrossEntropyLoss" => Ok(Op::Loss { softmax: true, reduction, ignore_index }),
        other => Err(super::misrouted_name(other, FAMILY)),
    }
}

/// Output types from input types `ins`: the loss (a scalar when reduced, else the target's
/// shape) and, for SoftmaxCrossEntropyLoss, the log-probabilities.
pub(crate) fn infer(_g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let Op::Loss { reduction, .. } = &node.op else {
        return Err(super::misrouted(&node.op, FAMILY));
    };
    let (x, t) = (input(ins, 0)?, input(ins, 1)?);
    if x.dtype != DType::F32 || !matches!(t.dtype, DType::I32 | DType::I64) {
        return Err(format!("{} of {x} with targets {t}", node.op_type));
    }
    let mut want = x.shape.clone();
    if want.len() < 2 {
        return Err(format!("{} of rank {} (N, C, ...)", node.op_type, want.len()));
    }
    want.remove(1);
    if t.shape != want {
        return Err(format!("targets {t} for input {x}: expected {want:?}"));
    }
    if let Some(Some(w)) = ins.get(2)
        && (w.dtype != DType::F32 || w.shape != [x.shape[1]])
    {
        return Err(format!("class weights {w} for {} classes", x.shape[1]));
    }
    let shape = if *reduction == LossReduction::None { want } else { vec![] };
    let mut out = vec![TensorType { dtype: DType::F32, shape }];
    if node.outputs.len() > 1 {
        out.push(x.clone());
    }
    Ok(out)
}

/// The log-softmax of `x` (`[N, C, rest]` flat) over axis 1, in `f64`, shifted by the maximum.
fn log_softmax(x: &[f32], n: usize, c: usize, rest: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for i in 0..n {
        for r in 0..rest {
            let at = |k: usize| i * c * rest + k * rest + r;
            let m = (0..c).map(|k| f64::from(x[at(k)])).fold(f64::NEG_INFINITY, nan_max);
            let s: f64 = (0..c).map(|k| (f64::from(x[at(k)]) - m).exp()).sum();
            let lse = m + s.ln();
            for k in 0..c {
                out[at(k)] = f64::from(x[at(k)]) - lse;
            }
        }
    }
    out
}

/// Reference semantics (ONNX's NegativeLogLikelihoodLoss): `loss = −input[n, t, rest]·w[t]`,
/// 0 where `t` is `ignore_index`; `sum` adds them, `mean` divides the sum by the summed
/// weights of the positions not ignored. Sums in `f64`.
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let Op::Loss { softmax, reduction, ignore_index } = &node.op else {
        return Err(super::misrouted(&node.op, FAMILY));
    };
    let x = arg(args, 0)?.f32()?;
    let shape = x.shape().to_vec();
    let (n, c) = (shape[0], shape[1]);
    let rest: usize = shape[2..].iter().product();
    let xv: Vec<f32> = x.iter().copied().collect();
    let input: Vec<f64> = if *softmax {
        log_softmax(&xv, n, c, rest)
    } else {
        xv.iter().map(|v| f64::from(*v)).collect()
    };
    let targets: Vec<i64> = arg(args, 1)?.ints()?.iter().copied().collect();
    let weights: Option<Vec<f32>> =
        opt(args, 2).map(|w| w.f32().map(|w| w.iter().copied().collect())).transpose()?;
    let mut losses = Vec::with_capacity(n * rest);
    let (mut total, mut wsum) = (0.0f64, 0.0f64);
    for i in 0..n {
        for r in 0..rest {
            let t = targets[i * rest + r];
            if Some(t) == *ignore_index {
                losses.push(0.0f32);
                continue;
            }
            let k = usize::try_from(t)
                .ok()
                .filter(|k| *k < c)
                .ok_or(format!("target {t} is out of range for {c} classes"))?;
            let w = weights.as_ref().map_or(1.0, |w| f64::from(w[k]));
            let l = -input[i * c * rest + k * rest + r] * w;
            losses.push(l as f32);
            total += l;
            wsum += w;
        }
    }
    let mut tshape = shape.clone();
    tshape.remove(1);
    let loss = match reduction {
        LossReduction::None => {
            ArrayD::from_shape_vec(IxDyn(&tshape), losses).map_err(|e| e.to_string())?
        }
        LossReduction::Sum => ArrayD::from_elem(IxDyn(&[]), total as f32),
        LossReduction::Mean => ArrayD::from_elem(IxDyn(&[]), (total / wsum) as f32),
    };
    let mut out = vec![Array::F32(loss)];
    if node.outputs.len() > 1 {
        let lp: Vec<f32> = input.iter().map(|v| *v as f32).collect();
        out.push(Array::F32(ArrayD::from_shape_vec(IxDyn(&shape), lp).map_err(|e| e.to_string())?));
    }
    Ok(out)
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    if let Op::Loss { reduction, ignore_index, .. } = op {
        let r = match reduction {
            LossReduction::None => "none",
            LossReduction::Sum => "sum",
            LossReduction::Mean => "mean",
        };
        a.push(format!("reduction: string = \"{r}\""));
        if let Some(i) = ignore_index {
            a.push(format!("ignore_index: int = {i}"));
        }
    }
}

/// Device lowering: none (a class lookup per position), so these run on the host.
pub(crate) fn lower(_b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    Err(LowerError::at(&n.name, format!("{} is not lowered to the device", n.op_type)))
}

/// Cost inputs: a few vector passes per input element.
pub(crate) fn work(_op: &Op, _inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    Work::Vector { passes: 4, slow: true }
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`.
pub(crate) fn arity(op_type: &str, _opset: i64) -> Arity {
    match op_type {
        "SoftmaxCrossEntropyLoss" => counts(2, 3, 1, 2),
        _ => counts(2, 3, 1, 1),
    }
}

/// No input determines the output shape.
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
}

/// Host lowering, as [`eval`]: the log-softmax's log-sum-exp per position by two passes over
/// the classes (maximum, then the shifted sum), in `f64`; a target out of range (and not
/// ignored) sets the status (code 4).
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let Op::Loss { softmax, reduction, ignore_index } = n.op.clone() else {
        return Err(LowerError::msg(super::misrouted(&n.op, FAMILY)));
    };
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the input is missing"))?;
    let t =
        n.inputs.get(1).copied().flatten().ok_or_else(|| b.err(n, "the targets are missing"))?;
    let w = n.inputs.get(2).copied().flatten();
    let xt = b.ty(x)?;
    let tt = b.ty(t)?;
    let c = xt.shape[1];
    // The log-sum-exp over the classes at target position `pos` (indices without axis 1).
    let lse = |b: &mut HostBuilder<'_>, pos: &[String]| -> Result<String, LowerError> {
        let at = |k: &str| -> Vec<String> {
            let mut i = vec![pos[0].clone(), k.to_string()];
            i.extend_from_slice(&pos[1..]);
            i
        };
        let init = b.f64c(f64::NEG_INFINITY);
        let m = b.fold_n(c, &[init], &["f64"], &mut |b, k, acc| {
            let i = at(k);
            let v = b.load(x, &i)?;
            let v = b.f64_of(&v);
            Ok(vec![b.op2("arith.maximumf", &acc[0], &v, "f64")])
        })?;
        let z = b.f64c(0.0);
        let s = b.fold_n(c, &[z], &["f64"], &mut |b, k, acc| {
            let i = at(k);
            let v = b.load(x, &i)?;
            let v = b.f64_of(&v);
            let d = b.op2("arith.subf", &v, &m[0], "f64");
            let e = b.op1("math.exp", &d, "f64");
            Ok(vec![b.op2("arith.addf", &acc[0], &e, "f64")])
        })?;
        let l = b.op1("math.log", &s[0], "f64");
        Ok(b.op2("arith.addf", &m[0], &l, "f64"))
    };
    // (loss, weight) at target position `pos`, both f64; zero for an ignored target.
    let term = |b: &mut HostBuilder<'_>, pos: &[String]| -> Result<(String, String), LowerError> {
        let tv = b.load(t, pos)?;
        let tv = b.widen(&tv, tt.dtype);
        let ign = match ignore_index {
            Some(i) => {
                let iv = b.i64c(i);
                b.cmpi("eq", &tv, &iv, "i64")
            }
            None => b.let_("arith.constant false"),
        };
        let z = b.i64c(0);
        let cc = b.i64c(c as i64);
        let lo = b.cmpi("slt", &tv, &z, "i64");
        let hi = b.cmpi("sge", &tv, &cc, "i64");
        let bad = b.op2("arith.ori", &lo, &hi, "i1");
        let tru = b.let_("arith.constant true");
        let ok = b.op2("arith.xori", &ign, &tru, "i1");
        let bad = b.op2("arith.andi", &bad, &ok, "i1");
        b.fail_if(&bad, 4);
        let out_of = b.op2("arith.ori", &bad, &ign, "i1");
        let safe = b.select(&out_of, &z, &tv, "i64");
        let k = b.let_(&format!("arith.index_cast {safe} : i64 to index"));
        let mut i = vec![pos[0].clone(), k.clone()];
        i.extend_from_slice(&pos[1..]);
        let v = b.load(x, &i)?;
        let mut v = b.f64_of(&v);
        if softmax {
            let l = lse(b, pos)?;
            v = b.op2("arith.subf", &v, &l, "f64");
        }
        let wv = match w {
            Some(w) => {
                let wv = b.load(w, &[k])?;
                b.f64_of(&wv)
            }
            None => b.f64c(1.0),
        };
        let l = b.op2("arith.mulf", &v, &wv, "f64");
        let l = b.op1("arith.negf", &l, "f64");
        let zf = b.f64c(0.0);
        let l = b.select(&ign, &zf, &l, "f64");
        let wv = b.select(&ign, &zf, &wv, "f64");
        Ok((l, wv))
    };
    let out = n.outputs[0];
    if reduction == LossReduction::None {
        b.map_out(out, &mut |b, pos| {
            let (l, _) = term(b, pos)?;
            Ok(b.f32_of(&l))
        })?;
    } else {
        let dims = tt.shape.clone();
        let count: usize = dims.iter().product();
        b.map_out(out, &mut |b, _| {
            let (z0, z1) = (b.f64c(0.0), b.f64c(0.0));
            let r = b.fold_n(count, &[z0, z1], &["f64", "f64"], &mut |b, f, acc| {
                let pos = b.delinearize(f, &dims);
                let (l, wv) = term(b, &pos)?;
                let s = b.op2("arith.addf", &acc[0], &l, "f64");
                let ws = b.op2("arith.addf", &acc[1], &wv, "f64");
                Ok(vec![s, ws])
            })?;
            let v = if reduction == LossReduction::Mean {
                b.op2("arith.divf", &r[0], &r[1], "f64")
            } else {
                r[0].clone()
            };
            Ok(b.f32_of(&v))
        })?;
    }
    if let Some(lp) = n.outputs.get(1) {
        b.map_out(*lp, &mut |b, i| {
            let mut pos = vec![i[0].clone()];
            pos.extend_from_slice(&i[2..]);
            let l = lse(b, &pos)?;
            let v = b.load(x, i)?;
            let v = b.f64_of(&v);
            let r = b.op2("arith.subf", &v, &l, "f64");
            Ok(b.f32_of(&r))
        })?;
    }
    Ok(())
}
