//! Recurrent layers: RNN, GRU and LSTM (ONNX 7–22), forward, reverse and bidirectional, with
//! biases, initial states, per-batch sequence lengths, LSTM peepholes, GRU's
//! `linear_before_reset`, `clip` and both layouts. The default activations only (RNN: Tanh;
//! GRU: Sigmoid, Tanh; LSTM: Sigmoid, Tanh, Tanh); others are refused by name. They run on
//! the host: each step depends on the last.
//!
//! One home per op family (see `ops/mod.rs`): import, shape rule, reference semantics,
//! printer, device lowering (refused, with the reason) and host lowering.
//!
//! Arithmetic (reference and host alike): a gate's pre-activation is
//! `Σ x·W + Σ h·R + Wb + Rb` summed in `f64` in that order (inputs ascending, then the
//! recurrent inputs), plus the peephole term for LSTM, clipped when `clip` is given, then the
//! activation in `f64`; the hidden and cell states are rounded to `f32` after each step, as
//! onnxruntime keeps them.

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
pub(crate) const FAMILY: &str = "recurrent";

/// The ONNX op types this family imports.
pub(crate) const ONNX: &[&str] = &["RNN", "GRU", "LSTM"];

/// The IR op for ONNX node `op_type` (one of [`ONNX`]) with attributes `a` at `opset`, or why
/// it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, _opset: i64) -> Result<Op, String> {
    let (cell, defaults): (Cell, &[&str]) = match op_type {
        "RNN" => (Cell::Rnn, &["tanh"]),
        "GRU" => (
            Cell::Gru { linear_before_reset: a.i64("linear_before_reset", 0) != 0 },
            &["sigmoid", "tanh"],
        ),
        "LSTM" => (Cell::Lstm, &["sigmoid", "tanh", "tanh"]),
        other => return Err(super::misrouted_name(other, FAMILY)),
    };
    let direction = match a.string("direction").as_deref() {
        None | Some("forward") => RnnDirection::Forward,
        Some("reverse") => RnnDirection::Reverse,
        Some("bidirectional") => RnnDirection::Bidirectional,
        Some(other) => return Err(a.invalid(format!("direction `{other}` is not defined"))),
    };
    if let Some(acts) = a.get("activations") {
        let names: Vec<String> =
            acts.strings.iter().map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()).collect();
        let dirs = if direction == RnnDirection::Bidirectional { 2 } else { 1 };
        let want: Vec<String> =
            (0..dirs).flat_map(|_| defaults.iter().map(|s| s.to_string())).collect();
        if names != want {
            return Err(format!(
                "{op_type} activations {names:?} are not supported (only the defaults {want:?})"
            ));
        }
    }
    // Only parameterised activations read these; the defaults take none.
    let _ = (a.get("activation_alpha"), a.get("activation_beta"));
    if op_type == "LSTM" && a.i64("input_forget", 0) != 0 {
        return Err("LSTM with input_forget is not supported".into());
    }
    let hidden = a.i64("hidden_size", 0);
    // Absent (0): R's last dimension, as onnxruntime reads it.
    let hidden = usize::try_from(hidden)
        .map_err(|_| a.invalid(format!("hidden_size {hidden} is negative")))?;
    let clip = a.get("clip").map(|_| a.f32("clip", f32::INFINITY));
    Ok(Op::Recurrent { cell, direction, hidden, clip, batch_first: a.i64("layout", 0) != 0 })
}

/// The hidden size: the attribute, or when it is absent (0) R's last dimension.
fn hidden_of(hidden: usize, r: &[usize]) -> R<usize> {
    let h = if hidden > 0 { hidden } else { r.get(2).copied().unwrap_or(0) };
    if h == 0 { Err(format!("no hidden size (R is {r:?})")) } else { Ok(h) }
}

/// Gates per cell: RNN 1, GRU 3 (z, r, h), LSTM 4 (i, o, f, c).
fn gates(cell: Cell) -> usize {
    match cell {
        Cell::Rnn => 1,
        Cell::Gru { .. } => 3,
        Cell::Lstm => 4,
    }
}

/// The dimensions of a recurrent node: `(seq, batch, input, directions)`.
struct Dims {
    seq: usize,
    batch: usize,
    input: usize,
    dirs: usize,
}

fn dims(op: &Op, x: &[usize]) -> R<Dims> {
    let Op::Recurrent { direction, batch_first, .. } = op else {
        return Err("not recurrent".into());
    };
    if x.len() != 3 {
        return Err(format!("the input has rank {}, not 3", x.len()));
    }
    let (seq, batch) = if *batch_first { (x[1], x[0]) } else { (x[0], x[1]) };
    let dirs = if *direction == RnnDirection::Bidirectional { 2 } else { 1 };
    Ok(Dims { seq, batch, input: x[2], dirs })
}

/// Output types: `Y` `[seq, dirs, batch, hidden]` (`[batch, seq, dirs, hidden]` batch-first),
/// `Y_h` and LSTM's `Y_c` `[dirs, batch, hidden]` (`[batch, dirs, hidden]`).
pub(crate) fn infer(_g: &Graph, node: &Node, ins: &[Option<&TensorType>]) -> R<Vec<TensorType>> {
    let Op::Recurrent { cell, hidden, batch_first, .. } = &node.op else {
        return Err(super::misrouted(&node.op, FAMILY));
    };
    let x = input(ins, 0)?;
    let d = dims(&node.op, &x.shape)?;
    let h = hidden_of(*hidden, &input(ins, 2)?.shape)?;
    let g = gates(*cell);
    let expect = |i: usize, name: &str, shape: Vec<usize>, dtype: DType| -> R<()> {
        match ins.get(i).copied().flatten() {
            Some(t) if t.shape != shape || t.dtype != dtype => Err(format!(
                "{name} is {t}, expected {dtype}{shape:?} for {} direction(s), hidden size {h} \
                 and input size {}",
                d.dirs, d.input
            )),
            _ => Ok(()),
        }
    };
    if x.dtype != DType::F32 {
        return Err(format!("{} of {x}", node.op_type));
    }
    input(ins, 1)?;
    input(ins, 2)?;
    expect(1, "W", vec![d.dirs, g * h, d.input], DType::F32)?;
    expect(2, "R", vec![d.dirs, g * h, h], DType::F32)?;
    expect(3, "B", vec![d.dirs, 2 * g * h], DType::F32)?;
    if let Some(t) = ins.get(4).copied().flatten()
        && (t.shape != [d.batch] || !matches!(t.dtype, DType::I32 | DType::I64))
    {
        return Err(format!("sequence_lens is {t}, expected int32[{}]", d.batch));
    }
    let state = if *batch_first { vec![d.batch, d.dirs, h] } else { vec![d.dirs, d.batch, h] };
    expect(5, "initial_h", state.clone(), DType::F32)?;
    expect(6, "initial_c", state.clone(), DType::F32)?;
    expect(7, "P", vec![d.dirs, 3 * h], DType::F32)?;
    let y = if *batch_first {
        vec![d.batch, d.seq, d.dirs, h]
    } else {
        vec![d.seq, d.dirs, d.batch, h]
    };
    let mut out = vec![TensorType { dtype: DType::F32, shape: y }];
    for _ in 1..node.outputs.len() {
        out.push(TensorType { dtype: DType::F32, shape: state.clone() });
    }
    out.truncate(node.outputs.len());
    Ok(out)
}

/// Flat offsets of the layouts: `x(t, b)` the start of `X[t, b, :]`; `y(t, d, b)` of
/// `Y[t, d, b, :]`; `s(d, b)` of a state `[d, b, :]`.
struct Layout {
    d: Dims,
    h: usize,
    batch_first: bool,
}

impl Layout {
    fn x(&self, t: usize, b: usize) -> usize {
        let row = if self.batch_first { b * self.d.seq + t } else { t * self.d.batch + b };
        row * self.d.input
    }
    fn y(&self, t: usize, d: usize, b: usize) -> usize {
        let row = if self.batch_first {
            (b * self.d.seq + t) * self.d.dirs + d
        } else {
            (t * self.d.dirs + d) * self.d.batch + b
        };
        row * self.h
    }
    fn s(&self, d: usize, b: usize) -> usize {
        let row = if self.batch_first { b * self.d.dirs + d } else { d * self.d.batch + b };
        row * self.h
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Reference semantics (ONNX RNN/GRU/LSTM-22 with the default activations; see the module
/// documentation for the arithmetic): each direction runs over the first `sequence_lens[b]`
/// steps of batch entry `b` (reverse: from the last of them back), writing `Y` at each step's
/// time index and zeros past the length; `Y_h`/`Y_c` are the states after the last step (zero
/// for an entry of length 0, as onnxruntime).
pub(crate) fn eval(node: &Node, args: &[Option<&Array>], _opset: i64) -> R<Vec<Array>> {
    let Op::Recurrent { cell, direction, hidden, clip, batch_first } = &node.op else {
        return Err(super::misrouted(&node.op, FAMILY));
    };
    let x = arg(args, 0)?.f32()?;
    let d = dims(&node.op, x.shape())?;
    let h = hidden_of(*hidden, arg(args, 2)?.shape())?;
    let g = gates(*cell);
    let flat = |a: &Array| -> R<Vec<f32>> { Ok(a.f32()?.iter().copied().collect()) };
    let xv = flat(arg(args, 0)?)?;
    let w = flat(arg(args, 1)?)?;
    let r = flat(arg(args, 2)?)?;
    let bias = opt(args, 3).map(flat).transpose()?;
    let lens: Option<Vec<i64>> =
        opt(args, 4).map(|a| a.ints().map(|v| v.iter().copied().collect())).transpose()?;
    let h0 = opt(args, 5).map(flat).transpose()?;
    let c0 = opt(args, 6).map(flat).transpose()?;
    let p = opt(args, 7).map(flat).transpose()?;
    let lay = Layout { d: Dims { ..d }, h, batch_first: *batch_first };
    let (seq, batch, input, dirs) = (lay.d.seq, lay.d.batch, lay.d.input, lay.d.dirs);
    let mut y = vec![0f32; seq * dirs * batch * h];
    let mut yh = vec![0f32; dirs * batch * h];
    let mut yc = vec![0f32; dirs * batch * h];
    let cl = |v: f64| clip.map_or(v, |c| v.clamp(-f64::from(c), f64::from(c)));
    for di in 0..dirs {
        let reverse = *direction == RnnDirection::Reverse || di == 1;
        for b in 0..batch {
            let len = lens.as_ref().map_or(seq, |l| l[b].clamp(0, seq as i64) as usize);
            let so = lay.s(di, b);
            let mut hs: Vec<f32> = h0.as_ref().map_or(vec![0.0; h], |v| v[so..so + h].to_vec());
            let mut cs: Vec<f32> = c0.as_ref().map_or(vec![0.0; h], |v| v[so..so + h].to_vec());
            for s in 0..len {
                let t = if reverse { len - 1 - s } else { s };
                let xo = lay.x(t, b);
                // Σ x·W of gate row `row`, and Σ hin·R.
                let xs = |row: usize| -> f64 {
                    let wo = (di * g * h + row) * input;
                    let mut acc = 0.0f64;
                    for k in 0..input {
                        acc += f64::from(xv[xo + k]) * f64::from(w[wo + k]);
                    }
                    acc
                };
                let hsum = |row: usize, hin: &[f64], acc: f64| -> f64 {
                    let ro = (di * g * h + row) * h;
                    let mut acc = acc;
                    for k in 0..h {
                        acc += hin[k] * f64::from(r[ro + k]);
                    }
                    acc
                };
                let wb =
                    |row: usize| bias.as_ref().map_or(0.0, |v| f64::from(v[di * 2 * g * h + row]));
                let rb = |row: usize| {
                    bias.as_ref().map_or(0.0, |v| f64::from(v[di * 2 * g * h + g * h + row]))
                };
                let hprev: Vec<f64> = hs.iter().map(|v| f64::from(*v)).collect();
                let pre = |row: usize, hin: &[f64]| hsum(row, hin, xs(row)) + wb(row) + rb(row);
                let mut hn = vec![0f32; h];
                match cell {
                    Cell::Rnn => {
                        for (j, v) in hn.iter_mut().enumerate() {
                            *v = cl(pre(j, &hprev)).tanh() as f32;
                        }
                    }
                    Cell::Gru { linear_before_reset } => {
                        let z: Vec<f64> = (0..h).map(|j| sigmoid(cl(pre(j, &hprev)))).collect();
                        let rg: Vec<f64> =
                            (0..h).map(|j| sigmoid(cl(pre(h + j, &hprev)))).collect();
                        let rh: Vec<f64> = (0..h).map(|k| rg[k] * hprev[k]).collect();
                        for j in 0..h {
                            let row = 2 * h + j;
                            let a = if *linear_before_reset {
                                xs(row) + wb(row) + rg[j] * (hsum(row, &hprev, 0.0) + rb(row))
                            } else {
                                pre(row, &rh)
                            };
                            let ht = cl(a).tanh();
                            hn[j] = ((1.0 - z[j]) * ht + z[j] * hprev[j]) as f32;
                        }
                    }
                    Cell::Lstm => {
                        let peep = |k: usize, j: usize| {
                            p.as_ref().map_or(0.0, |v| f64::from(v[di * 3 * h + k * h + j]))
                        };
                        let mut cn = vec![0f32; h];
                        for j in 0..h {
                            let cp = f64::from(cs[j]);
                            let i = sigmoid(cl(pre(j, &hprev) + peep(0, j) * cp));
                            let f = sigmoid(cl(pre(2 * h + j, &hprev) + peep(2, j) * cp));
                            let c = cl(pre(3 * h + j, &hprev)).tanh();
                            cn[j] = (f * cp + i * c) as f32;
                            let cnf = f64::from(cn[j]);
                            let o = sigmoid(cl(pre(h + j, &hprev) + peep(1, j) * cnf));
                            hn[j] = (o * cnf.tanh()) as f32;
                        }
                        cs = cn;
                    }
                }
                hs = hn;
                let yo = lay.y(t, di, b);
                y[yo..yo + h].copy_from_slice(&hs);
            }
            // An entry of length 0 has zero states, as onnxruntime gives (the specification
            // does not say).
            if len > 0 {
                yh[so..so + h].copy_from_slice(&hs);
                yc[so..so + h].copy_from_slice(&cs);
            }
        }
    }
    let ys = if *batch_first { vec![batch, seq, dirs, h] } else { vec![seq, dirs, batch, h] };
    let ss = if *batch_first { vec![batch, dirs, h] } else { vec![dirs, batch, h] };
    let arr = |shape: &[usize], v: Vec<f32>| -> R<Array> {
        Ok(Array::F32(ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| e.to_string())?))
    };
    let mut out = vec![arr(&ys, y)?, arr(&ss, yh)?, arr(&ss, yc)?];
    out.truncate(node.outputs.len());
    Ok(out)
}

/// The attributes of `op` as ONNX text (`name: type = value`), appended to `a`.
pub(crate) fn print(op: &Op, a: &mut Vec<String>) {
    if let Op::Recurrent { cell, direction, hidden, clip, batch_first } = op {
        if *hidden > 0 {
            a.push(format!("hidden_size: int = {hidden}"));
        }
        let dir = match direction {
            RnnDirection::Forward => "forward",
            RnnDirection::Reverse => "reverse",
            RnnDirection::Bidirectional => "bidirectional",
        };
        a.push(format!("direction: string = \"{dir}\""));
        if let Some(c) = clip {
            a.push(format!("clip: float = {}", crate::text::flt(*c)));
        }
        if *batch_first {
            a.push("layout: int = 1".into());
        }
        if let Cell::Gru { linear_before_reset: true } = cell {
            a.push("linear_before_reset: int = 1".into());
        }
    }
}

/// Device lowering: none (a chain of small dependent steps), so these run on the host.
pub(crate) fn lower(_b: &mut Builder<'_>, _idx: usize, n: &Node) -> Result<(), LowerError> {
    Err(LowerError::at(&n.name, format!("{} is not lowered to the device", n.op_type)))
}

/// Cost inputs: the matrix products of every step.
pub(crate) fn work(op: &Op, inputs: &[Option<TensorType>], _outputs: &[TensorType]) -> Work {
    let (Op::Recurrent { cell, hidden, .. }, Some(Some(x)), Some(Some(r))) =
        (op, inputs.first(), inputs.get(2))
    else {
        return Work::Traffic;
    };
    let (Ok(d), Ok(hidden)) = (dims(op, &x.shape), hidden_of(*hidden, &r.shape)) else {
        return Work::Traffic;
    };
    let rows = (gates(*cell) * hidden * d.dirs) as u64;
    Work::Macs(d.seq as u64 * d.batch as u64 * rows * (d.input + hidden) as u64)
}

/// The inputs and outputs ONNX allows op type `op_type` (one of [`ONNX`]) at `opset`.
pub(crate) fn arity(op_type: &str, _opset: i64) -> Arity {
    match op_type {
        "LSTM" => counts(3, 8, 0, 3),
        _ => counts(3, 6, 0, 2),
    }
}

/// No input determines the output shape.
pub(crate) fn shape_operand(_op: &Op, _i: usize) -> bool {
    false
}

/// Host lowering, as [`eval`], the same operations in the same order: per direction and batch
/// entry an `scf.for` over the steps (those past the entry's length do nothing), the states
/// in scratch buffers, the gate values of a step in an `f64` scratch buffer.
pub(crate) fn host(b: &mut HostBuilder<'_>, n: &Node) -> Result<(), LowerError> {
    let Op::Recurrent { cell, direction, hidden, clip, batch_first } = n.op.clone() else {
        return Err(LowerError::msg(super::misrouted(&n.op, FAMILY)));
    };
    let x = n.inputs[0].ok_or_else(|| b.err(n, "the input is missing"))?;
    let inp = |i: usize| n.inputs.get(i).copied().flatten();
    let (w, r) = (
        inp(1).ok_or_else(|| b.err(n, "W is missing"))?,
        inp(2).ok_or_else(|| b.err(n, "R is missing"))?,
    );
    let (bias, lens, h0, c0, p) = (inp(3), inp(4), inp(5), inp(6), inp(7));
    let xt = b.ty(x)?;
    let d = dims(&n.op, &xt.shape).map_err(|e| b.err(n, e))?;
    let h = hidden_of(hidden, &b.ty(r)?.shape).map_err(|e| b.err(n, e))?;
    let g = gates(cell);
    let lay = Layout { d: Dims { ..d }, h, batch_first };
    let (seq, batch, input, dirs) = (lay.d.seq, lay.d.batch, lay.d.input, lay.d.dirs);
    let f32t = |shape: Vec<usize>| TensorType { dtype: DType::F32, shape };
    let hs = b.scratch(&f32t(vec![h]));
    let cs = b.scratch(&f32t(vec![h]));
    let hn = b.scratch(&f32t(vec![h]));
    let gv = b.scratch(&TensorType { dtype: DType::F64, shape: vec![g * h] });
    let (hs_t, gv_t) = (format!("memref<{h}xf32>"), format!("memref<{}xf64>", g * h));
    // Y starts as zeros: steps past a sequence's length leave it so.
    if let Some(&yv) = n.outputs.first() {
        let z = b.f32c(0.0);
        b.map_out(yv, &mut |_, _| Ok(z.clone()))?;
    }
    let flat = |b: &mut HostBuilder<'_>, v: ValueId, at: &str| b.load_flat(v, at);
    let clipv = clip.map(f64::from);
    let cl = |b: &mut HostBuilder<'_>, v: &str| -> String {
        match clipv {
            Some(c) => {
                let (lo, hi) = (b.f64c(-c), b.f64c(c));
                let a = b.op2("arith.maximumf", v, &lo, "f64");
                b.op2("arith.minimumf", &a, &hi, "f64")
            }
            None => v.to_string(),
        }
    };
    let sig = |b: &mut HostBuilder<'_>, v: &str| -> String {
        let one = b.f64c(1.0);
        let neg = b.op1("arith.negf", v, "f64");
        let e = b.op1("math.exp", &neg, "f64");
        let s = b.op2("arith.addf", &one, &e, "f64");
        b.op2("arith.divf", &one, &s, "f64")
    };
    for di in 0..dirs {
        let reverse = direction == RnnDirection::Reverse || di == 1;
        for bi in 0..batch {
            let so = lay.s(di, bi);
            // The states from initial_h/initial_c, or zeros.
            for (state, init) in [(&hs, h0), (&cs, c0)] {
                let (state, init) = (state.clone(), init);
                b.nest(&[h], &mut |b, j| {
                    let v = match init {
                        Some(iv) => {
                            let o = b.idx(so);
                            let at = b.let_(&format!("arith.addi {o}, {} : index", j[0]));
                            flat(b, iv, &at)?
                        }
                        None => b.f32c(0.0),
                    };
                    b.line(&format!("memref.store {v}, {state}[{}] : {hs_t}", j[0]));
                    Ok(())
                })?;
            }
            let len = match lens {
                Some(l) => {
                    let lt = b.ty(l)?;
                    let bidx = b.idx(bi);
                    let v = b.load(l, &[bidx])?;
                    let v = b.widen(&v, lt.dtype);
                    let (z, sq) = (b.i64c(0), b.i64c(seq as i64));
                    let v = b.op2("arith.maxsi", &v, &z, "i64");
                    let v = b.op2("arith.minsi", &v, &sq, "i64");
                    b.let_(&format!("arith.index_cast {v} : i64 to index"))
                }
                None => b.idx(seq),
            };
            let (c0i, c1i) = (b.idx(0), b.idx(1));
            let s = b.fresh();
            b.line(&format!("scf.for {s} = {c0i} to {len} step {c1i} {{"));
            let t = if reverse {
                let l1 = b.let_(&format!("arith.subi {len}, {c1i} : index"));
                b.let_(&format!("arith.subi {l1}, {s} : index"))
            } else {
                s.clone()
            };
            // x offset: X[t, b, :] start.
            let xo = if batch_first {
                let base = b.idx(bi * seq * input);
                let inc = b.idx(input);
                let m = b.let_(&format!("arith.muli {t}, {inc} : index"));
                b.let_(&format!("arith.addi {base}, {m} : index"))
            } else {
                let base = b.idx(bi * input);
                let inc = b.idx(batch * input);
                let m = b.let_(&format!("arith.muli {t}, {inc} : index"));
                b.let_(&format!("arith.addi {base}, {m} : index"))
            };
            // Σ x·W of row `row` (an index SSA value).
            let xs = |b: &mut HostBuilder<'_>, row: &str| -> Result<String, LowerError> {
                let base = b.idx(di * g * h * input);
                let inc = b.idx(input);
                let m = b.let_(&format!("arith.muli {row}, {inc} : index"));
                let wo = b.let_(&format!("arith.addi {base}, {m} : index"));
                let z = b.f64c(0.0);
                let r = b.fold_n(input, &[z], &["f64"], &mut |b, k, acc| {
                    let xa = b.let_(&format!("arith.addi {xo}, {k} : index"));
                    let wa = b.let_(&format!("arith.addi {wo}, {k} : index"));
                    let xv = flat(b, x, &xa)?;
                    let wv = flat(b, w, &wa)?;
                    let (xv, wv) = (b.f64_of(&xv), b.f64_of(&wv));
                    let m = b.op2("arith.mulf", &xv, &wv, "f64");
                    Ok(vec![b.op2("arith.addf", &acc[0], &m, "f64")])
                })?;
                Ok(r[0].clone())
            };
            // acc + Σ hin·R of row `row`; `hin(k)` loads the recurrent input as f64.
            let hsum = |b: &mut HostBuilder<'_>,
                        row: &str,
                        acc: &str,
                        scaled: bool|
             -> Result<String, LowerError> {
                let base = b.idx(di * g * h * h);
                let inc = b.idx(h);
                let m = b.let_(&format!("arith.muli {row}, {inc} : index"));
                let ro = b.let_(&format!("arith.addi {base}, {m} : index"));
                let r0 = b.fold_n(h, &[acc.to_string()], &["f64"], &mut |b, k, a| {
                    let hv = b.let_(&format!("memref.load {hs}[{k}] : {hs_t}"));
                    let mut hv = b.f64_of(&hv);
                    if scaled {
                        // GRU: r ⊙ h, r from the gate buffer's second block.
                        let hh = b.idx(h);
                        let at = b.let_(&format!("arith.addi {hh}, {k} : index"));
                        let rg = b.let_(&format!("memref.load {gv}[{at}] : {gv_t}"));
                        hv = b.op2("arith.mulf", &rg, &hv, "f64");
                    }
                    let ra = b.let_(&format!("arith.addi {ro}, {k} : index"));
                    let rv = flat(b, r, &ra)?;
                    let rv = b.f64_of(&rv);
                    let m = b.op2("arith.mulf", &hv, &rv, "f64");
                    Ok(vec![b.op2("arith.addf", &a[0], &m, "f64")])
                })?;
                Ok(r0[0].clone())
            };
            let bias_of =
                |b: &mut HostBuilder<'_>, row: &str, rec: bool| -> Result<String, LowerError> {
                    match bias {
                        Some(bv) => {
                            let o = b.idx(di * 2 * g * h + if rec { g * h } else { 0 });
                            let at = b.let_(&format!("arith.addi {o}, {row} : index"));
                            let v = flat(b, bv, &at)?;
                            Ok(b.f64_of(&v))
                        }
                        None => Ok(b.f64c(0.0)),
                    }
                };
            let pre =
                |b: &mut HostBuilder<'_>, row: &str, scaled: bool| -> Result<String, LowerError> {
                    let a = xs(b, row)?;
                    let a = hsum(b, row, &a, scaled)?;
                    let wb = bias_of(b, row, false)?;
                    let a = b.op2("arith.addf", &a, &wb, "f64");
                    let rb = bias_of(b, row, true)?;
                    Ok(b.op2("arith.addf", &a, &rb, "f64"))
                };
            let row_of = |b: &mut HostBuilder<'_>, gate: usize, j: &str| {
                let o = b.idx(gate * h);
                b.let_(&format!("arith.addi {o}, {j} : index"))
            };
            let peep = |b: &mut HostBuilder<'_>, k: usize, j: &str| -> Result<String, LowerError> {
                match p {
                    Some(pv) => {
                        let o = b.idx(di * 3 * h + k * h);
                        let at = b.let_(&format!("arith.addi {o}, {j} : index"));
                        let v = flat(b, pv, &at)?;
                        Ok(b.f64_of(&v))
                    }
                    None => Ok(b.f64c(0.0)),
                }
            };
            match cell {
                Cell::Rnn => {
                    b.nest(&[h], &mut |b, j| {
                        let row = row_of(b, 0, &j[0]);
                        let a = pre(b, &row, false)?;
                        let a = cl(b, &a);
                        let v = b.op1("math.tanh", &a, "f64");
                        let v = b.f32_of(&v);
                        b.line(&format!("memref.store {v}, {hn}[{}] : {hs_t}", j[0]));
                        Ok(())
                    })?;
                }
                Cell::Gru { linear_before_reset } => {
                    // z and r into the gate buffer, then the new state.
                    for gate in 0..2 {
                        b.nest(&[h], &mut |b, j| {
                            let row = row_of(b, gate, &j[0]);
                            let a = pre(b, &row, false)?;
                            let a = cl(b, &a);
                            let v = sig(b, &a);
                            b.line(&format!("memref.store {v}, {gv}[{row}] : {gv_t}"));
                            Ok(())
                        })?;
                    }
                    b.nest(&[h], &mut |b, j| {
                        let row = row_of(b, 2, &j[0]);
                        let zr = row_of(b, 0, &j[0]);
                        let rr = row_of(b, 1, &j[0]);
                        let z = b.let_(&format!("memref.load {gv}[{zr}] : {gv_t}"));
                        let a = if linear_before_reset {
                            let rg = b.let_(&format!("memref.load {gv}[{rr}] : {gv_t}"));
                            let xa = xs(b, &row)?;
                            let wb = bias_of(b, &row, false)?;
                            let xa = b.op2("arith.addf", &xa, &wb, "f64");
                            let z0 = b.f64c(0.0);
                            let ha = hsum(b, &row, &z0, false)?;
                            let rb = bias_of(b, &row, true)?;
                            let ha = b.op2("arith.addf", &ha, &rb, "f64");
                            let m = b.op2("arith.mulf", &rg, &ha, "f64");
                            b.op2("arith.addf", &xa, &m, "f64")
                        } else {
                            pre(b, &row, true)?
                        };
                        let a = cl(b, &a);
                        let ht = b.op1("math.tanh", &a, "f64");
                        let one = b.f64c(1.0);
                        let omz = b.op2("arith.subf", &one, &z, "f64");
                        let l = b.op2("arith.mulf", &omz, &ht, "f64");
                        let hp = b.let_(&format!("memref.load {hs}[{}] : {hs_t}", j[0]));
                        let hp = b.f64_of(&hp);
                        let rgt = b.op2("arith.mulf", &z, &hp, "f64");
                        let v = b.op2("arith.addf", &l, &rgt, "f64");
                        let v = b.f32_of(&v);
                        b.line(&format!("memref.store {v}, {hn}[{}] : {hs_t}", j[0]));
                        Ok(())
                    })?;
                }
                Cell::Lstm => {
                    // Cell states go to the gate buffer's first block (as f64 of the f32) until
                    // every unit's gates have read the old ones.
                    // σ(clip(pre + P·c)) of gate `gate`, peephole block `k`, cell value `c`.
                    let peeped = |b: &mut HostBuilder<'_>,
                                  gate: usize,
                                  k: usize,
                                  j: &str,
                                  c: &str|
                     -> Result<String, LowerError> {
                        let row = row_of(b, gate, j);
                        let a = pre(b, &row, false)?;
                        let pk = peep(b, k, j)?;
                        let pc = b.op2("arith.mulf", &pk, c, "f64");
                        let a = b.op2("arith.addf", &a, &pc, "f64");
                        let a = cl(b, &a);
                        Ok(sig(b, &a))
                    };
                    b.nest(&[h], &mut |b, j| {
                        let cp = b.let_(&format!("memref.load {cs}[{}] : {hs_t}", j[0]));
                        let cp = b.f64_of(&cp);
                        let i = peeped(b, 0, 0, &j[0], &cp)?;
                        let f = peeped(b, 2, 2, &j[0], &cp)?;
                        let rc = row_of(b, 3, &j[0]);
                        let a = pre(b, &rc, false)?;
                        let a = cl(b, &a);
                        let c = b.op1("math.tanh", &a, "f64");
                        let fc = b.op2("arith.mulf", &f, &cp, "f64");
                        let ic = b.op2("arith.mulf", &i, &c, "f64");
                        let cn = b.op2("arith.addf", &fc, &ic, "f64");
                        let cnf = b.f32_of(&cn);
                        let cn = b.f64_of(&cnf);
                        let o = peeped(b, 1, 1, &j[0], &cn)?;
                        let tc = b.op1("math.tanh", &cn, "f64");
                        let v = b.op2("arith.mulf", &o, &tc, "f64");
                        let v = b.f32_of(&v);
                        b.line(&format!("memref.store {v}, {hn}[{}] : {hs_t}", j[0]));
                        b.line(&format!("memref.store {cn}, {gv}[{}] : {gv_t}", j[0]));
                        Ok(())
                    })?;
                    b.nest(&[h], &mut |b, j| {
                        let v = b.let_(&format!("memref.load {gv}[{}] : {gv_t}", j[0]));
                        let v = b.f32_of(&v);
                        b.line(&format!("memref.store {v}, {cs}[{}] : {hs_t}", j[0]));
                        Ok(())
                    })?;
                }
            }
            // The new state, and Y at this step's time index.
            let yv = n.outputs.first().copied();
            b.nest(&[h], &mut |b, j| {
                let v = b.let_(&format!("memref.load {hn}[{}] : {hs_t}", j[0]));
                b.line(&format!("memref.store {v}, {hs}[{}] : {hs_t}", j[0]));
                if let Some(yv) = yv {
                    let mut idx = if batch_first {
                        vec![b.idx(bi), t.clone(), b.idx(di)]
                    } else {
                        vec![t.clone(), b.idx(di), b.idx(bi)]
                    };
                    idx.push(j[0].clone());
                    b.store(&v, yv, &idx)?;
                }
                Ok(())
            })?;
            b.line("}");
            // Y_h and Y_c: the states after the last step.
            for (k, state) in [(1usize, &hs), (2, &cs)] {
                let Some(&ov) = n.outputs.get(k) else { continue };
                let state = state.clone();
                b.out(ov)?;
                let c0 = b.idx(0);
                let empty = b.let_(&format!("arith.cmpi eq, {len}, {c0} : index"));
                b.nest(&[h], &mut |b, j| {
                    let v = b.let_(&format!("memref.load {state}[{}] : {hs_t}", j[0]));
                    let z = b.f32c(0.0);
                    let v = b.select(&empty, &z, &v, "f32");
                    let idx = if batch_first {
                        vec![b.idx(bi), b.idx(di), j[0].clone()]
                    } else {
                        vec![b.idx(di), b.idx(bi), j[0].clone()]
                    };
                    b.store(&v, ov, &idx)
                })?;
            }
        }
    }
    Ok(())
}
