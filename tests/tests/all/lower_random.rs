//! Randomised lowering tests: convolutions (strides, padding, dilation, groups, depthwise,
//! fused activations and residuals), pooling, batched matrix products, Gemm transposes and
//! data movement with random geometry, compiled for the `default` and `tiny` devices (the
//! latter's 8×8 array and 64 KiB scratchpad force every tiling path), run on the simulator
//! and compared with the reference interpreter. Tolerance: rtol 1e-3, atol 1e-5, plus 1e-5 of
//! the tensor's largest magnitude (sums in another order; see `accelc diff`).

use accelc_compiler::interp::{Array, run};
use accelc_compiler::ir::{
    AutoPad, BinaryOp, DType, Graph, Node, Op, ReduceKind, Tensor, TensorType, UnaryOp, Value,
    ValueId, Window,
};
use accelc_compiler::lower::{CompileOptions, compile};
use accelc_compiler::shape::infer;
use accelc_isa::DeviceConfig;
use accelc_isa::blob::Blob;
use accelc_tests::Rng;
use ndarray::{ArrayD, IxDyn};

fn input(g: &mut Graph, name: &str, shape: &[usize]) -> ValueId {
    let v = g.add_value(Value {
        name: name.into(),
        ty: Some(TensorType { dtype: DType::F32, shape: shape.to_vec() }),
        constant: None,
    });
    g.inputs.push(v);
    v
}

fn constant(g: &mut Graph, rng: &mut Rng, name: &str, shape: &[usize]) -> ValueId {
    let n: usize = shape.iter().product();
    let vals: Vec<f32> = (0..n).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let t = Tensor::from_f32(shape.to_vec(), &vals);
    g.add_value(Value {
        name: name.into(),
        ty: Some(TensorType { dtype: DType::F32, shape: shape.to_vec() }),
        constant: Some(t),
    })
}

fn scalar(g: &mut Graph, name: &str, v: f32) -> ValueId {
    g.add_value(Value {
        name: name.into(),
        ty: Some(TensorType { dtype: DType::F32, shape: vec![] }),
        constant: Some(Tensor::from_f32(vec![], &[v])),
    })
}

fn node(g: &mut Graph, op: Op, op_type: &str, inputs: Vec<Option<ValueId>>) -> ValueId {
    let out = g.add_value(Value { name: format!("v{}", g.values.len()), ty: None, constant: None });
    let name = format!("n{}_{op_type}", g.nodes.len());
    g.nodes.push(Node { name, op_type: op_type.into(), op, inputs, outputs: vec![out] });
    out
}

/// Compiles `g` for `cfg`, runs it on random inputs, compares with the interpreter.
fn check(mut g: Graph, cfg: DeviceConfig, rng: &mut Rng, what: &str) {
    infer(&mut g).unwrap_or_else(|e| panic!("{what}: {e}"));
    let c = compile(&g, &CompileOptions { config: cfg.clone(), expose_all: false })
        .unwrap_or_else(|e| panic!("{what} on {}: {e}", cfg.name));
    let ins: Vec<ArrayD<f32>> = g
        .inputs
        .iter()
        .map(|v| {
            let shape = g.value(*v).ty.as_ref().unwrap().shape.clone();
            let n: usize = shape.iter().product();
            ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|_| rng.f32_in(-1.0, 1.0)).collect())
                .unwrap()
        })
        .collect();
    let want = run(&g, &ins.iter().map(|a| Array::F32(a.clone())).collect::<Vec<_>>()).unwrap();
    let bytes = c.blob().unwrap();
    let blob = Blob::read(&bytes).unwrap();
    let data: Vec<Vec<u8>> =
        ins.iter().map(|a| a.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let (outs, _) = accelc_runtime::model::simulate(&blob, &refs, false)
        .unwrap_or_else(|e| panic!("{what} on {}: {e}", cfg.name));
    for (o, w) in outs.iter().zip(&want) {
        let Array::F32(w) = w else { panic!("{what}: not float") };
        let got: Vec<f32> =
            o.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        assert_eq!(got.len(), w.len(), "{what}");
        let big = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for (i, (a, b)) in got.iter().zip(w.iter()).enumerate() {
            let tol = 1e-5 + 1e-3 * b.abs() + 1e-5 * big;
            assert!((a - b).abs() <= tol, "{what} on {}: element {i}: {a} vs {b}", cfg.name);
        }
    }
}

fn pick(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    lo + (rng.next_u64() as usize) % (hi - lo + 1)
}

fn conv_case(rng: &mut Rng) -> (Graph, String) {
    let mut g = Graph { opset: 17, ..Graph::default() };
    let n = pick(rng, 1, 2);
    let depthwise = rng.next_u64().is_multiple_of(4);
    let groups = if depthwise { 0 } else { [1, 1, 1, 2, 3][pick(rng, 0, 4)] };
    let cin = if depthwise { pick(rng, 1, 40) } else { groups * pick(rng, 1, 12) };
    let groups = if depthwise { cin } else { groups };
    let cout = if depthwise { cin } else { groups * pick(rng, 1, 20) };
    let (kh, kw) = (pick(rng, 1, 5), pick(rng, 1, 5));
    let (sh, sw) = (pick(rng, 1, 3), pick(rng, 1, 3));
    let (dh, dw) = (pick(rng, 1, 2), pick(rng, 1, 2));
    let pads: Vec<usize> = (0..4).map(|_| pick(rng, 0, 2)).collect();
    let h = ((kh - 1) * dh + 1).saturating_sub(pads[0] + pads[2]).max(1) + pick(rng, 0, 20);
    let w = ((kw - 1) * dw + 1).saturating_sub(pads[1] + pads[3]).max(1) + pick(rng, 0, 20);
    let x = input(&mut g, "x", &[n, cin, h, w]);
    // Sometimes the weights are computed (a graph input), read at run time.
    // (Depthwise kernels take constant weights only.)
    let computed =
        !(groups == cin && cout == cin && groups > 1) && rng.next_u64().is_multiple_of(4);
    let wt = if computed {
        input(&mut g, "w", &[cout, cin / groups, kh, kw])
    } else {
        constant(&mut g, rng, "w", &[cout, cin / groups, kh, kw])
    };
    let bias = (rng.next_u64().is_multiple_of(2)).then(|| constant(&mut g, rng, "b", &[cout]));
    let window = Window {
        kernel: vec![kh, kw],
        strides: vec![sh, sw],
        dilations: vec![dh, dw],
        pads: pads.clone(),
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
    };
    let mut y =
        node(&mut g, Op::Conv { window, group: groups }, "Conv", vec![Some(x), Some(wt), bias]);
    let oh = (h + pads[0] + pads[2] - ((kh - 1) * dh + 1)) / sh + 1;
    let ow = (w + pads[1] + pads[3] - ((kw - 1) * dw + 1)) / sw + 1;
    let residual = rng.next_u64().is_multiple_of(3);
    if residual {
        let r = input(&mut g, "r", &[n, cout, oh, ow]);
        y = node(&mut g, Op::Binary(BinaryOp::Add), "Add", vec![Some(y), Some(r)]);
    }
    match rng.next_u64() % 3 {
        0 => y = node(&mut g, Op::Unary(UnaryOp::Relu), "Relu", vec![Some(y)]),
        1 => {
            let lo = scalar(&mut g, "lo", -0.5);
            let hi = scalar(&mut g, "hi", 0.75);
            y = node(
                &mut g,
                Op::Clip { min: None, max: None },
                "Clip",
                vec![Some(y), Some(lo), Some(hi)],
            );
        }
        _ => {}
    }
    g.outputs.push(y);
    let what = format!(
        "conv n{n} c{cin}->{cout} g{groups} {h}x{w} k{kh}x{kw} s{sh},{sw} d{dh},{dw} pads{pads:?} residual {residual} computed weights {computed}"
    );
    (g, what)
}

#[test]
fn random_convolutions() {
    let mut rng = Rng::new(7);
    for i in 0..200 {
        let (g, what) = conv_case(&mut rng);
        let cfg = if i % 2 == 0 { DeviceConfig::tiny() } else { DeviceConfig::default_npu() };
        check(g, cfg, &mut rng, &what);
    }
}

#[test]
fn random_pools() {
    let mut rng = Rng::new(11);
    for i in 0..150 {
        let mut g = Graph { opset: 17, ..Graph::default() };
        let (n, c) = (pick(&mut rng, 1, 2), pick(&mut rng, 1, 70));
        let (kh, kw) = (pick(&mut rng, 1, 4), pick(&mut rng, 1, 4));
        let max = rng.next_u64().is_multiple_of(2);
        let pads: Vec<usize> = (0..4).map(|_| pick(&mut rng, 0, kh.min(kw) - 1)).collect();
        let include = rng.next_u64().is_multiple_of(2);
        let (h, w) = (kh + pick(&mut rng, 0, 30), kw + pick(&mut rng, 0, 30));
        let x = input(&mut g, "x", &[n, c, h, w]);
        let window = Window {
            kernel: vec![kh, kw],
            strides: vec![pick(&mut rng, 1, 3), pick(&mut rng, 1, 3)],
            dilations: vec![],
            pads,
            auto_pad: AutoPad::NotSet,
            ceil_mode: rng.next_u64().is_multiple_of(2),
        };
        let what = format!("pool max {max} n{n} c{c} {h}x{w} include pads {include} {window:?}");
        let y = node(
            &mut g,
            Op::Pool { max, window, count_include_pad: include },
            "Pool",
            vec![Some(x)],
        );
        let z = node(&mut g, Op::GlobalPool { max: !max }, "GlobalPool", vec![Some(y)]);
        g.outputs = vec![y, z];
        let cfg = if i % 2 == 0 { DeviceConfig::tiny() } else { DeviceConfig::default_npu() };
        check(g, cfg, &mut rng, &what);
    }
}

#[test]
fn random_matrix_products() {
    let mut rng = Rng::new(13);
    for i in 0..150 {
        let mut g = Graph { opset: 17, ..Graph::default() };
        let (m, k, n) = (pick(&mut rng, 1, 70), pick(&mut rng, 1, 90), pick(&mut rng, 1, 70));
        let what = if rng.next_u64().is_multiple_of(2) {
            // Batched MatMul, both operands computed, with broadcasting batch dims; B may be
            // 2-D or constant.
            let b1 = pick(&mut rng, 1, 3);
            let b2 = if rng.next_u64().is_multiple_of(2) { 1 } else { b1 };
            let a = input(&mut g, "a", &[b1, m, k]);
            let bshape = if rng.next_u64().is_multiple_of(3) { vec![k, n] } else { vec![b2, k, n] };
            let b = if rng.next_u64().is_multiple_of(2) {
                input(&mut g, "b", &bshape)
            } else {
                constant(&mut g, &mut rng, "b", &bshape)
            };
            let y = node(&mut g, Op::MatMul, "MatMul", vec![Some(a), Some(b)]);
            g.outputs.push(y);
            format!("matmul [{b1},{m},{k}] x {bshape:?}")
        } else {
            let (ta, tb) = (rng.next_u64().is_multiple_of(2), rng.next_u64().is_multiple_of(2));
            let a = input(&mut g, "a", &if ta { [k, m] } else { [m, k] });
            let b = constant(&mut g, &mut rng, "b", &if tb { [n, k] } else { [k, n] });
            let c = constant(&mut g, &mut rng, "c", &[n]);
            let op = Op::Gemm { alpha: 0.5, beta: 2.0, trans_a: ta, trans_b: tb };
            let y = node(&mut g, op, "Gemm", vec![Some(a), Some(b), Some(c)]);
            let z = node(&mut g, Op::Unary(UnaryOp::Relu), "Relu", vec![Some(y)]);
            g.outputs.push(z);
            format!("gemm {m}x{k}x{n} transA {ta} transB {tb}")
        };
        let cfg = if i % 2 == 0 { DeviceConfig::tiny() } else { DeviceConfig::default_npu() };
        check(g, cfg, &mut rng, &what);
    }
}

#[test]
fn random_data_movement() {
    let mut rng = Rng::new(17);
    for i in 0..150 {
        let mut g = Graph { opset: 17, ..Graph::default() };
        let rank = pick(&mut rng, 2, 4);
        let shape: Vec<usize> = (0..rank).map(|_| pick(&mut rng, 1, 9)).collect();
        let x = input(&mut g, "x", &shape);
        let mut perm: Vec<i64> = (0..rank as i64).collect();
        for j in (1..rank).rev() {
            perm.swap(j, pick(&mut rng, 0, j));
        }
        let t = node(&mut g, Op::Transpose { perm: perm.clone() }, "Transpose", vec![Some(x)]);
        let axis = pick(&mut rng, 0, rank - 1) as i64;
        let cat = node(&mut g, Op::Concat { axis }, "Concat", vec![Some(x), Some(x)]);
        // Broadcast a [last] row against the transposed tensor and apply a Softmax.
        let tshape: Vec<usize> = perm.iter().map(|p| shape[*p as usize]).collect();
        let row = constant(&mut g, &mut rng, "row", &[*tshape.last().unwrap()]);
        let s = node(&mut g, Op::Binary(BinaryOp::Mul), "Mul", vec![Some(t), Some(row)]);
        let sm = node(
            &mut g,
            Op::Softmax { axis: pick(&mut rng, 0, rank - 1) as i64 },
            "Softmax",
            vec![Some(s)],
        );
        g.outputs = vec![cat, sm];
        let what = format!("shape {shape:?} perm {perm:?} concat axis {axis}");
        let cfg = if i % 2 == 0 { DeviceConfig::tiny() } else { DeviceConfig::default_npu() };
        check(g, cfg, &mut rng, &what);
    }
}

fn random_perm(rng: &mut Rng, n: usize) -> Vec<i64> {
    let mut p: Vec<i64> = (0..n as i64).collect();
    for j in (1..n).rev() {
        p.swap(j, pick(rng, 0, j));
    }
    p
}

/// A random chain of real operations with valid shapes and attributes: element-wise (with
/// broadcast constants and earlier tensors), data movement, reductions, normalisations,
/// matrix products and, on 4-D tensors, convolutions, pooling and BatchNormalization.
fn random_chain(rng: &mut Rng) -> (Graph, String) {
    let mut g = Graph { opset: 17, ..Graph::default() };
    let rank = pick(rng, 1, 4);
    let shape: Vec<usize> = (0..rank).map(|_| pick(rng, 1, 6)).collect();
    let x = input(&mut g, "x", &shape);
    let mut live: Vec<(ValueId, Vec<usize>)> = vec![(x, shape)];
    let mut log = String::new();
    for step in 0..pick(rng, 1, 6) {
        let (t, ts) = live[pick(rng, 0, live.len() - 1)].clone();
        let r = ts.len();
        let choice = pick(rng, 0, 15);
        let k = |g: &mut Graph, rng: &mut Rng, shape: &[usize]| {
            constant(g, rng, &format!("k{step}"), shape)
        };
        let (y, ys): (ValueId, Vec<usize>) = match choice {
            0 => {
                let ops = [
                    UnaryOp::Relu,
                    UnaryOp::Sigmoid,
                    UnaryOp::Tanh,
                    UnaryOp::Erf,
                    UnaryOp::HardSwish,
                    UnaryOp::Abs,
                    UnaryOp::Neg,
                ];
                let u = ops[pick(rng, 0, ops.len() - 1)];
                (node(&mut g, Op::Unary(u), "Unary", vec![Some(t)]), ts.clone())
            }
            1 | 2 => {
                // Broadcast constant: a suffix of the shape with some dims set to 1.
                let n = pick(rng, 0, r);
                let cs: Vec<usize> = ts[r - n..]
                    .iter()
                    .map(|d| if rng.next_u64().is_multiple_of(2) { 1 } else { *d })
                    .collect();
                let c = k(&mut g, rng, &cs);
                let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul];
                let b = ops[pick(rng, 0, 2)];
                let (a0, a1) = if rng.next_u64().is_multiple_of(2) { (t, c) } else { (c, t) };
                (node(&mut g, Op::Binary(b), "Binary", vec![Some(a0), Some(a1)]), ts.clone())
            }
            3 => {
                let perm = random_perm(rng, r);
                let ys = perm.iter().map(|p| ts[*p as usize]).collect();
                (node(&mut g, Op::Transpose { perm }, "Transpose", vec![Some(t)]), ys)
            }
            4 => {
                let n: usize = ts.iter().product();
                let ys = if rng.next_u64().is_multiple_of(2) { vec![n] } else { vec![1, n] };
                let sh = g.add_value(Value {
                    name: format!("shape{step}"),
                    ty: Some(TensorType { dtype: DType::I64, shape: vec![ys.len()] }),
                    constant: Some(Tensor::from_i64(
                        vec![ys.len()],
                        &ys.iter().map(|d| *d as i64).collect::<Vec<_>>(),
                    )),
                });
                (
                    node(
                        &mut g,
                        Op::Reshape { allowzero: false },
                        "Reshape",
                        vec![Some(t), Some(sh)],
                    ),
                    ys,
                )
            }
            5 => {
                let axis = pick(rng, 0, r - 1) as i64;
                (node(&mut g, Op::Softmax { axis }, "Softmax", vec![Some(t)]), ts.clone())
            }
            6 => {
                let mut keep = rng.next_u64().is_multiple_of(2);
                let mut axes: Vec<i64> =
                    (0..r as i64).filter(|_| rng.next_u64().is_multiple_of(2)).collect();
                if axes.is_empty() {
                    axes.push(0);
                }
                // Keep at least one dimension.
                keep |= axes.len() == r;
                let ops = [ReduceKind::Mean, ReduceKind::Sum, ReduceKind::Max];
                let ys: Vec<usize> = ts
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| {
                        if axes.contains(&(i as i64)) { keep.then_some(1) } else { Some(*d) }
                    })
                    .collect();
                let op = Op::Reduce {
                    op: ops[pick(rng, 0, 2)],
                    axes: Some(axes),
                    keepdims: keep,
                    noop_with_empty_axes: false,
                };
                (node(&mut g, op, "Reduce", vec![Some(t)]), ys)
            }
            7 => {
                let axis = pick(rng, 0, r - 1);
                let mut ys = ts.clone();
                ys[axis] *= 2;
                (
                    node(
                        &mut g,
                        Op::Concat { axis: axis as i64 },
                        "Concat",
                        vec![Some(t), Some(t)],
                    ),
                    ys,
                )
            }
            8 => {
                let axis = pick(rng, 0, r - 1);
                let start = pick(rng, 0, ts[axis] - 1);
                let len = pick(rng, 1, ts[axis] - start);
                let mk = |g: &mut Graph, n: &str, v: i64| {
                    g.add_value(Value {
                        name: format!("{n}{step}"),
                        ty: Some(TensorType { dtype: DType::I64, shape: vec![1] }),
                        constant: Some(Tensor::from_i64(vec![1], &[v])),
                    })
                };
                let (s0, e0, a0) = (
                    mk(&mut g, "st", start as i64),
                    mk(&mut g, "en", (start + len) as i64),
                    mk(&mut g, "ax", axis as i64),
                );
                let mut ys = ts.clone();
                ys[axis] = len;
                (
                    node(
                        &mut g,
                        Op::Slice { attrs: None },
                        "Slice",
                        vec![Some(t), Some(s0), Some(e0), Some(a0)],
                    ),
                    ys,
                )
            }
            9 => {
                let pads: Vec<i64> = (0..2 * r).map(|_| pick(rng, 0, 2) as i64).collect();
                let p = g.add_value(Value {
                    name: format!("pads{step}"),
                    ty: Some(TensorType { dtype: DType::I64, shape: vec![2 * r] }),
                    constant: Some(Tensor::from_i64(vec![2 * r], &pads)),
                });
                let ys = ts
                    .iter()
                    .enumerate()
                    .map(|(i, d)| d + (pads[i] + pads[r + i]) as usize)
                    .collect();
                (
                    node(
                        &mut g,
                        Op::Pad {
                            mode: accelc_compiler::ir::PadMode::Constant,
                            pads: None,
                            value: 0.0,
                        },
                        "Pad",
                        vec![Some(t), Some(p)],
                    ),
                    ys,
                )
            }
            10 => {
                let axis = pick(rng, 0, r - 1);
                let sc = k(&mut g, rng, &ts[axis..]);
                (
                    node(
                        &mut g,
                        Op::LayerNorm { axis: axis as i64, epsilon: 1e-5 },
                        "LayerNormalization",
                        vec![Some(t), Some(sc)],
                    ),
                    ts.clone(),
                )
            }
            11 => {
                let n = pick(rng, 1, 7);
                let b = k(&mut g, rng, &[ts[r - 1], n]);
                let mut ys = ts.clone();
                ys[r - 1] = n;
                (node(&mut g, Op::MatMul, "MatMul", vec![Some(t), Some(b)]), ys)
            }
            12 if r == 4 => {
                let (kh, kw) = (pick(rng, 1, ts[2].min(3)), pick(rng, 1, ts[3].min(3)));
                let cout = pick(rng, 1, 6);
                let w = k(&mut g, rng, &[cout, ts[1], kh, kw]);
                let window = Window {
                    kernel: vec![kh, kw],
                    strides: vec![1, 1],
                    dilations: vec![],
                    pads: vec![0, 0, 0, 0],
                    auto_pad: AutoPad::NotSet,
                    ceil_mode: false,
                };
                let ys = vec![ts[0], cout, ts[2] - kh + 1, ts[3] - kw + 1];
                (
                    node(
                        &mut g,
                        Op::Conv { window, group: 1 },
                        "Conv",
                        vec![Some(t), Some(w), None],
                    ),
                    ys,
                )
            }
            13 if r == 4 => {
                let c = ts[1];
                let p: Vec<ValueId> = (0..4)
                    .map(|i| {
                        let lo = if i == 3 { 0.5 } else { -0.5 };
                        let v: Vec<f32> = (0..c).map(|_| rng.f32_in(lo, 1.0)).collect();
                        g.add_value(Value {
                            name: format!("bn{step}_{i}"),
                            ty: Some(TensorType { dtype: DType::F32, shape: vec![c] }),
                            constant: Some(Tensor::from_f32(vec![c], &v)),
                        })
                    })
                    .collect();
                (
                    node(
                        &mut g,
                        Op::BatchNorm { epsilon: 1e-5 },
                        "BatchNormalization",
                        vec![Some(t), Some(p[0]), Some(p[1]), Some(p[2]), Some(p[3])],
                    ),
                    ts.clone(),
                )
            }
            14 if r == 4 => {
                let window = Window {
                    kernel: vec![ts[2].min(2), ts[3].min(2)],
                    strides: vec![1, 1],
                    dilations: vec![],
                    pads: vec![0, 0, 0, 0],
                    auto_pad: AutoPad::NotSet,
                    ceil_mode: false,
                };
                let ys = vec![ts[0], ts[1], ts[2] - ts[2].min(2) + 1, ts[3] - ts[3].min(2) + 1];
                (
                    node(
                        &mut g,
                        Op::Pool { max: true, window, count_include_pad: false },
                        "MaxPool",
                        vec![Some(t)],
                    ),
                    ys,
                )
            }
            _ => {
                // Two live tensors of one shape combined, else a Clip.
                if let Some((u, _)) = live.iter().find(|(v, s)| *s == ts && *v != t).cloned() {
                    (
                        node(&mut g, Op::Binary(BinaryOp::Add), "Add", vec![Some(t), Some(u)]),
                        ts.clone(),
                    )
                } else {
                    let lo = scalar(&mut g, &format!("lo{step}"), -0.3);
                    let hi = scalar(&mut g, &format!("hi{step}"), 0.6);
                    (
                        node(
                            &mut g,
                            Op::Clip { min: None, max: None },
                            "Clip",
                            vec![Some(t), Some(lo), Some(hi)],
                        ),
                        ts.clone(),
                    )
                }
            }
        };
        log.push_str(&format!("{} {:?} -> {:?}; ", g.nodes.last().unwrap().op_type, ts, ys));
        live.push((y, ys));
    }
    g.outputs = vec![live.last().unwrap().0];
    if live.len() > 2 {
        g.outputs.push(live[1].0);
    }
    (g, log)
}

/// Random chains through the whole pipeline (frontend, -O2 optimizer, lowering for both
/// devices, the simulator): every intermediate tensor matches the interpreter on the
/// unoptimized graph (`accelc diff`'s comparison), or compilation fails with a message that
/// is not an internal error.
#[test]
fn random_chains_through_the_whole_pipeline() {
    let mut rng = Rng::new(23);
    let (mut compiled, mut total) = (0, 0);
    for _ in 0..400 {
        let (mut g, what) = random_chain(&mut rng);
        total += 1;
        infer(&mut g).unwrap_or_else(|e| panic!("{what}: {e}"));
        accelc_compiler::verify::verify(&g, true).unwrap_or_else(|e| panic!("{what}: {e}"));
        let shape = g.value(g.inputs[0]).ty.as_ref().unwrap().shape.clone();
        let n: usize = shape.iter().product();
        let x =
            ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|_| rng.f32_in(-1.0, 1.0)).collect())
                .unwrap();
        let mut opt = g.clone();
        accelc_compiler::pipeline::run_optimizer(
            &mut opt,
            &accelc_compiler::opt::Options::default(),
            &mut |_, _| {},
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        for cfg in accelc_tests::float_configs() {
            let c = match compile(&opt, &CompileOptions { config: cfg.clone(), expose_all: true }) {
                Ok(c) => c,
                Err(e) => {
                    assert!(!e.message.contains("internal"), "{what} on {}: {e}", cfg.name);
                    continue;
                }
            };
            compiled += 1;
            let xt = accelc::HostTensor::from_f32(
                x.shape().to_vec(),
                &x.iter().copied().collect::<Vec<_>>(),
            )
            .unwrap();
            let d = accelc::first_difference(&g, &c, std::slice::from_ref(&xt), Default::default())
                .unwrap();
            assert!(d.is_ok(), "{what} on {}: {d:?}", cfg.name);
        }
    }
    // Nearly every chain is lowerable; a generator that stops producing them is a broken test.
    assert!(compiled > total * 3 / 2, "only {compiled} of {} compiles", 2 * total);
}

/// Transposed convolutions, 1-D and 2-D, with random strides, padding (cropping the spread
/// input where it exceeds the kernel's reach), output padding, dilation and groups (constant
/// weights, as exported models have them), on both devices.
#[test]
fn random_transposed_convolutions() {
    let mut rng = Rng::new(29);
    for i in 0..80 {
        let mut g = Graph { opset: 17, ..Graph::default() };
        let groups = pick(&mut rng, 1, 2);
        let (cin, cout_g) = (groups * pick(&mut rng, 1, 6), pick(&mut rng, 1, 6));
        let (kh, kw) = (pick(&mut rng, 1, 4), pick(&mut rng, 1, 4));
        let (sh, sw) = (pick(&mut rng, 1, 3), pick(&mut rng, 1, 3));
        let (dh, dw) = (pick(&mut rng, 1, 2), pick(&mut rng, 1, 2));
        let (h, w) = (pick(&mut rng, 1, 9), pick(&mut rng, 1, 9));
        let full = |n: usize, s: usize, k: usize, d: usize| (n - 1) * s + (k - 1) * d + 1;
        let (fh, fw) = (full(h, sh, kh, dh), full(w, sw, kw, dw));
        // Pads that leave at least one output element.
        let pt = pick(&mut rng, 0, (fh - 1) / 2);
        let pb = pick(&mut rng, 0, (fh - 1 - pt).min(2));
        let pl = pick(&mut rng, 0, (fw - 1) / 2);
        let pr = pick(&mut rng, 0, (fw - 1 - pl).min(2));
        let op = vec![pick(&mut rng, 0, sh - 1), pick(&mut rng, 0, sw - 1)];
        // Every third one is 1-D (the width axis alone).
        let one_d = i % 3 == 2;
        let (xshape, wshape, window) = if one_d {
            let window = Window {
                kernel: vec![kw],
                strides: vec![sw],
                dilations: vec![dw],
                pads: vec![pl, pr],
                auto_pad: AutoPad::NotSet,
                ceil_mode: false,
            };
            (vec![1, cin, w], vec![cin, cout_g, kw], window)
        } else {
            let window = Window {
                kernel: vec![kh, kw],
                strides: vec![sh, sw],
                dilations: vec![dh, dw],
                pads: vec![pt, pl, pb, pr],
                auto_pad: AutoPad::NotSet,
                ceil_mode: false,
            };
            (vec![1, cin, h, w], vec![cin, cout_g, kh, kw], window)
        };
        let op = if one_d { vec![op[1]] } else { op };
        let x = input(&mut g, "x", &xshape);
        let wt = constant(&mut g, &mut rng, "w", &wshape);
        let bias = constant(&mut g, &mut rng, "b", &[cout_g * groups]);
        let what = format!(
            "conv-transpose{} c{cin}->{} g{groups} {h}x{w} k{kh}x{kw} s{sh},{sw} d{dh},{dw} pads [{pt},{pl},{pb},{pr}] out-pad {op:?}",
            if one_d { " 1-D" } else { "" },
            cout_g * groups
        );
        let y = node(
            &mut g,
            Op::ConvTranspose { window, group: groups, output_padding: op, output_shape: vec![] },
            "ConvTranspose",
            vec![Some(x), Some(wt), Some(bias)],
        );
        g.outputs.push(y);
        let cfg = if i % 2 == 0 { DeviceConfig::tiny() } else { DeviceConfig::default_npu() };
        check(g, cfg, &mut rng, &what);
    }
}
