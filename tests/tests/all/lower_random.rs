//! Randomised lowering tests: convolutions (strides, padding, dilation, groups, depthwise,
//! fused activations and residuals), pooling, batched matrix products, Gemm transposes and
//! data movement with random geometry, compiled for the `default` and `tiny` devices (the
//! latter's 8×8 array and 64 KiB scratchpad force every tiling path), run on the simulator
//! and compared with the reference interpreter. Tolerance: rtol 1e-3, atol 1e-5, plus 1e-5 of
//! the tensor's largest magnitude (sums in another order; see `accelc diff`).

use accelc_compiler::interp::{Array, run};
use accelc_compiler::ir::{
    AutoPad, BinaryOp, DType, Graph, Node, Op, Tensor, TensorType, UnaryOp, Value, ValueId, Window,
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
    let wt = constant(&mut g, rng, "w", &[cout, cin / groups, kh, kw]);
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
        "conv n{n} c{cin}->{cout} g{groups} {h}x{w} k{kh}x{kw} s{sh},{sw} d{dh},{dw} pads{pads:?} residual {residual}"
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
