//! Randomised op chains over the operators beyond the first fifty (element-wise math,
//! comparisons and logic, parameterised activations, the new reductions, normalizations,
//! indexing and selection ops, sampling, recurrent layers, rotary embeddings, cubic Resize,
//! float16/bfloat16 storage): each chain is written as an ONNX text model with random shapes,
//! attributes and constants, compiled through the facade for both built-in devices (`default`
//! and `tiny`; a plan of device jobs and host calls wherever the device does not take a node),
//! run through the session, and compared with the reference interpreter on the same graph.
//! Tolerance: rtol 1e-3, atol 1e-5 (transcendental functions are computed by different
//! libraries on the device, the host and the reference); integers and bools exactly.

use accelc::{HostTensor, Options, Session, Source};
use accelc_tests::Rng;

/// A chain under construction: ONNX text lines, initializers, the current value and its shape.
struct Chain {
    lines: Vec<String>,
    inits: Vec<String>,
    cur: String,
    shape: Vec<usize>,
    next: usize,
}

impl Chain {
    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("t{}", self.next)
    }

    fn floats(&mut self, rng: &mut Rng, shape: &[usize], lo: f32, hi: f32) -> String {
        let name = self.fresh();
        let n: usize = shape.iter().product();
        let vals: Vec<String> = (0..n).map(|_| format!("{:.4}", rng.f32_in(lo, hi))).collect();
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        self.inits.push(format!("float[{}] {name} = {{{}}}", dims.join(","), vals.join(",")));
        name
    }

    fn ints(&mut self, shape: &[usize], vals: &[i64]) -> String {
        let name = self.fresh();
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        let v: Vec<String> = vals.iter().map(i64::to_string).collect();
        self.inits.push(format!("int64[{}] {name} = {{{}}}", dims.join(","), v.join(",")));
        name
    }

    /// Appends `out = text` (text names the inputs) and makes `out` current with `shape`.
    fn step(&mut self, text: String, shape: Vec<usize>) {
        let out = self.fresh();
        self.lines.push(format!("{out} = {text}"));
        self.cur = out;
        self.shape = shape;
    }
}

fn pick(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    lo + (rng.next_u64() as usize) % (hi - lo + 1)
}

/// One random op on the chain's current float value (the result stays float).
fn random_op(c: &mut Chain, rng: &mut Rng) -> String {
    let x = c.cur.clone();
    let s = c.shape.clone();
    let rank = s.len();
    let ax = pick(rng, 0, rank - 1);
    let unary = [
        "Log",
        "Reciprocal",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Sin",
        "Cos",
        "Tan",
        "Atan",
        "Sinh",
        "Asinh",
        "Softplus",
        "Softsign",
        "Mish",
        "Exp",
        "Abs",
        "Neg",
    ];
    match pick(rng, 0, 27) {
        0 => {
            let op = unary[pick(rng, 0, unary.len() - 1)];
            c.step(format!("{op} ({x})"), s);
            op.into()
        }
        1 => {
            let (op, attrs) = [
                ("Elu", "<alpha: float = 0.7>"),
                ("Selu", "<alpha: float = 1.5, gamma: float = 1.1>"),
                ("Celu", "<alpha: float = 0.8>"),
                ("ThresholdedRelu", "<alpha: float = 0.2>"),
                ("Shrink", "<bias: float = 0.1, lambd: float = 0.3>"),
            ][pick(rng, 0, 4)];
            c.step(format!("{op} {attrs} ({x})"), s);
            op.into()
        }
        2 => {
            // A comparison picks between the value and a constant (Where), or is cast back.
            let k = c.floats(rng, &s[rank - 1..], -0.5, 0.5);
            let cmp =
                ["Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Equal"][pick(rng, 0, 4)];
            let b = c.fresh();
            c.lines.push(format!("{b} = {cmp} ({x}, {k})"));
            if rng.next_u64().is_multiple_of(2) {
                let nb = c.fresh();
                c.lines.push(format!("{nb} = Not ({b})"));
                let both = c.fresh();
                let logic = ["And", "Or", "Xor"][pick(rng, 0, 2)];
                c.lines.push(format!("{both} = {logic} ({b}, {nb})"));
                c.step(format!("Where ({both}, {x}, {k})"), s);
                format!("{cmp}/Not/{logic}/Where")
            } else {
                c.step(format!("Cast <to: int = 1> ({b})"), s);
                format!("{cmp}/Cast")
            }
        }
        3 => {
            let slope = c.floats(rng, &s[rank - 1..], -0.5, 0.5);
            c.step(format!("PRelu ({x}, {slope})"), s);
            "PRelu".into()
        }
        4 => {
            let op = [
                "ReduceMin",
                "ReduceProd",
                "ReduceL1",
                "ReduceL2",
                "ReduceSumSquare",
                "ReduceLogSumExp",
                "ReduceMax",
            ][pick(rng, 0, 6)];
            let axes = c.ints(&[1], &[ax as i64]);
            let mut shape = s.clone();
            shape[ax] = 1;
            c.step(format!("{op} <keepdims: int = 1> ({x}, {axes})"), shape);
            op.into()
        }
        5 => {
            let op = if rng.next_u64().is_multiple_of(2) { "ArgMax" } else { "ArgMin" };
            let i = c.fresh();
            c.lines.push(format!("{i} = {op} <axis: int = {ax}, keepdims: int = 1> ({x})"));
            let mut shape = s.clone();
            shape[ax] = 1;
            c.step(format!("Cast <to: int = 1> ({i})"), shape);
            op.into()
        }
        6 => {
            let a = c.ints(&[], &[ax as i64]);
            let (e, r) = (rng.next_u64() % 2, rng.next_u64() % 2);
            c.step(format!("CumSum <exclusive: int = {e}, reverse: int = {r}> ({x}, {a})"), s);
            "CumSum".into()
        }
        7 if rank >= 2 => {
            let k = c.ints(&[], &[pick(rng, 0, 2) as i64 - 1]);
            let up = rng.next_u64() % 2;
            c.step(format!("Trilu <upper: int = {up}> ({x}, {k})"), s);
            "Trilu".into()
        }
        8 => {
            let reps: Vec<i64> = (0..rank).map(|_| pick(rng, 1, 2) as i64).collect();
            let r = c.ints(&[rank], &reps);
            let shape = s.iter().zip(&reps).map(|(d, r)| d * *r as usize).collect();
            c.step(format!("Tile ({x}, {r})"), shape);
            "Tile".into()
        }
        9 => {
            c.step(format!("Hardmax <axis: int = {ax}> ({x})"), s);
            "Hardmax".into()
        }
        10 => {
            let p = pick(rng, 1, 2);
            c.step(format!("LpNormalization <axis: int = {ax}, p: int = {p}> ({x})"), s);
            "LpNormalization".into()
        }
        11 => {
            let scale = c.floats(rng, &s[ax..], 0.5, 1.5);
            c.step(format!("RMSNormalization <axis: int = {ax}> ({x}, {scale})"), s);
            "RMSNormalization".into()
        }
        12 => {
            let k = pick(rng, 1, s[ax]);
            let kk = c.ints(&[1], &[k as i64]);
            let (v, i) = (c.fresh(), c.fresh());
            let largest = rng.next_u64() % 2;
            c.lines.push(format!(
                "{v}, {i} = TopK <axis: int = {ax}, largest: int = {largest}> ({x}, {kk})"
            ));
            let mut shape = s.clone();
            shape[ax] = k;
            let fi = c.fresh();
            c.lines.push(format!("{fi} = Cast <to: int = 1> ({i})"));
            c.step(format!("Add ({v}, {fi})"), shape);
            "TopK".into()
        }
        13 => {
            let n: usize = s.iter().product();
            let idx: Vec<i64> = (0..n)
                .map(|_| {
                    pick(rng, 0, s[ax] - 1) as i64
                        - if rng.next_u64().is_multiple_of(3) { s[ax] as i64 } else { 0 }
                })
                .collect();
            let i = c.ints(&s, &idx);
            c.step(format!("GatherElements <axis: int = {ax}> ({x}, {i})"), s);
            "GatherElements".into()
        }
        14 => {
            // Expand a size-1 axis (after reducing one).
            let axes = c.ints(&[1], &[ax as i64]);
            let r = c.fresh();
            c.lines.push(format!("{r} = ReduceMean <keepdims: int = 1> ({x}, {axes})"));
            let dims: Vec<i64> = s.iter().map(|d| *d as i64).collect();
            let sh = c.ints(&[rank], &dims);
            c.step(format!("Expand ({r}, {sh})"), s);
            "ReduceMean/Expand".into()
        }
        15 => {
            let like = c.floats(rng, &[1], 0.0, 1.0);
            let i = c.fresh();
            c.lines.push(format!("{i} = Cast <to: int = 6> ({x})"));
            c.step(format!("CastLike ({i}, {like})"), s);
            "Cast/CastLike".into()
        }
        16 => {
            let scat: Vec<i64> = (0..s[ax]).rev().map(|v| v as i64).collect();
            let mut ishape = s.clone();
            ishape[ax] = s[ax];
            let n: usize = ishape.iter().product();
            let stride: usize = s[ax + 1..].iter().product();
            let idx: Vec<i64> = (0..n).map(|f| scat[(f / stride) % s[ax]]).collect();
            let i = c.ints(&ishape, &idx);
            let u = c.floats(rng, &ishape, -1.0, 1.0);
            let red = ["none", "add", "mul", "max", "min"][pick(rng, 0, 4)];
            c.step(format!("ScatterElements <axis: int = {ax}, reduction: string = \"{red}\"> ({x}, {i}, {u})"), s);
            "ScatterElements".into()
        }
        17 => {
            if rng.next_u64().is_multiple_of(2) {
                c.step(format!("Swish <alpha: float = 0.7> ({x})"), s);
                "Swish".into()
            } else {
                let b = c.floats(rng, &s, -1.0, 1.0);
                c.step(format!("SwiGLU <alpha: float = 1.3> ({x}, {b})"), s);
                "SwiGLU".into()
            }
        }
        18 => {
            let a = c.ints(&[], &[ax as i64]);
            let (e, r) = (rng.next_u64() % 2, rng.next_u64() % 2);
            c.step(format!("CumProd <exclusive: int = {e}, reverse: int = {r}> ({x}, {a})"), s);
            "CumProd".into()
        }
        19 if rank >= 3 => {
            // A window of 1 or 2 per spatial axis; a window of 2 padded by 1 at the end.
            let k: Vec<usize> = s[2..].iter().map(|d| pick(rng, 1, (*d).min(2))).collect();
            let p = pick(rng, 1, 3);
            let ks: Vec<String> = k.iter().map(usize::to_string).collect();
            let end: Vec<usize> = k.iter().map(|kk| kk - 1).collect();
            let pads: Vec<String> = (0..k.len())
                .map(|_| "0".to_string())
                .chain(end.iter().map(usize::to_string))
                .collect();
            let mut shape = s.clone();
            for (i, kk) in k.iter().enumerate() {
                shape[2 + i] = s[2 + i] + end[i] - kk + 1;
            }
            c.step(
                format!(
                    "LpPool <kernel_shape: ints = [{}], pads: ints = [{}], p: int = {p}> ({x})",
                    ks.join(","),
                    pads.join(",")
                ),
                shape,
            );
            "LpPool".into()
        }
        20 if rank == 4 => {
            let (h, w) = (pick(rng, 1, 3), pick(rng, 1, 3));
            let g = c.floats(rng, &[s[0], h, w, 2], -1.3, 1.3);
            let mode = ["nearest", "linear", "cubic"][pick(rng, 0, 2)];
            let pad = ["zeros", "border", "reflection"][pick(rng, 0, 2)];
            let al = rng.next_u64() % 2;
            c.step(
                format!(
                    "GridSample <mode: string = \"{mode}\", padding_mode: string = \"{pad}\", align_corners: int = {al}> ({x}, {g})"
                ),
                vec![s[0], s[1], h, w],
            );
            format!("GridSample {mode} {pad}")
        }
        21 if rank == 3 => {
            // [seq, batch, input] through a recurrent layer; its final state continues.
            let cell = ["RNN", "GRU", "LSTM"][pick(rng, 0, 2)];
            let gates = match cell {
                "RNN" => 1,
                "GRU" => 3,
                _ => 4,
            };
            let hid = pick(rng, 1, 3);
            let dir = ["forward", "reverse", "bidirectional"][pick(rng, 0, 2)];
            let d = if dir == "bidirectional" { 2 } else { 1 };
            let w = c.floats(rng, &[d, gates * hid, s[2]], -0.8, 0.8);
            let r = c.floats(rng, &[d, gates * hid, hid], -0.8, 0.8);
            let b = c.floats(rng, &[d, 2 * gates * hid], -0.3, 0.3);
            let (y, yh) = (c.fresh(), c.fresh());
            c.lines.push(format!(
                "{y}, {yh} = {cell} <hidden_size: int = {hid}, direction: string = \"{dir}\"> ({x}, {w}, {r}, {b})"
            ));
            c.step(format!("Identity ({yh})"), vec![d, s[1], hid]);
            format!("{cell} {dir}")
        }
        22 => {
            let target: Vec<i64> =
                s.iter().map(|d| (*d as i64 + pick(rng, 0, 2) as i64 - 1).max(1)).collect();
            let t = c.ints(&[rank], &target);
            c.step(
                format!("CenterCropPad ({x}, {t})"),
                target.iter().map(|v| *v as usize).collect(),
            );
            "CenterCropPad".into()
        }
        23 if rank == 4 && s[3].is_multiple_of(2) => {
            let half = s[3] / 2;
            let cos = c.floats(rng, &[s[0], s[2], half], -1.0, 1.0);
            let sin = c.floats(rng, &[s[0], s[2], half], -1.0, 1.0);
            let il = rng.next_u64() % 2;
            c.step(format!("RotaryEmbedding <interleaved: int = {il}> ({x}, {cos}, {sin})"), s);
            "RotaryEmbedding".into()
        }
        24 => {
            let sc: Vec<String> =
                (0..rank).map(|i| if i == ax { "1.5".to_string() } else { "1.0".into() }).collect();
            let name = c.fresh();
            c.inits.push(format!("float[{rank}] {name} = {{{}}}", sc.join(",")));
            let mut shape = s.clone();
            shape[ax] = (s[ax] as f64 * 1.5).floor() as usize;
            let ex = rng.next_u64() % 2;
            c.step(
                format!(
                    "Resize <mode: string = \"cubic\", exclude_outside: int = {ex}> ({x}, \"\", {name})"
                ),
                shape,
            );
            "Resize cubic".into()
        }
        25 => {
            // Through float16 and bfloat16: each op computes in f32 and rounds to the type.
            let (h, r, b) = (c.fresh(), c.fresh(), c.fresh());
            let t = if rng.next_u64().is_multiple_of(2) { 10 } else { 16 };
            c.lines.push(format!("{h} = Cast <to: int = {t}> ({x})"));
            c.lines.push(format!("{r} = Tanh ({h})"));
            c.lines.push(format!("{b} = Mul ({r}, {h})"));
            c.step(format!("Cast <to: int = 1> ({b})"), s);
            if t == 10 { "float16".into() } else { "bfloat16".into() }
        }
        26 if rank == 2 => {
            let e = c.fresh();
            let k = pick(rng, 0, 2) as i64 - 1;
            c.lines.push(format!("{e} = EyeLike <k: int = {k}> ({x})"));
            c.step(format!("Add ({x}, {e})"), s);
            "EyeLike".into()
        }
        _ => {
            let y = c.floats(rng, &s, -1.0, 1.0);
            let z = c.floats(rng, &s[rank - 1..], -1.0, 1.0);
            c.step(format!("Max ({x}, {y}, {z})"), s);
            "Max".into()
        }
    }
}

fn close(got: &HostTensor, want: &HostTensor) -> Result<(), String> {
    if got.dtype != want.dtype || got.dims != want.dims {
        return Err(format!("{}{:?} vs {}{:?}", got.dtype, got.dims, want.dtype, want.dims));
    }
    match (got.f32s(), want.f32s()) {
        (Some(g), Some(w)) => {
            for (i, (a, b)) in g.iter().zip(&w).enumerate() {
                let ok =
                    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-5 + 1e-3 * b.abs();
                if !ok {
                    return Err(format!("element {i}: {a} vs {b}"));
                }
            }
            Ok(())
        }
        _ => (got.data == want.data).then_some(()).ok_or("integer data differ".into()),
    }
}

#[test]
fn random_op_chains_match_the_reference_on_both_devices() {
    let mut rng = Rng::new(0x0ac1_c0de);
    let mut ops_seen = std::collections::BTreeSet::new();
    for case in 0..128 {
        let rank = pick(&mut rng, 1, 4);
        let shape: Vec<usize> = (0..rank).map(|_| pick(&mut rng, 1, 4)).collect();
        let mut c =
            Chain { lines: vec![], inits: vec![], cur: "x".into(), shape: shape.clone(), next: 0 };
        let mut log = Vec::new();
        for _ in 0..pick(&mut rng, 2, 5) {
            log.push(random_op(&mut c, &mut rng));
        }
        ops_seen.extend(log.iter().cloned());
        let dims = |s: &[usize]| s.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        let inits =
            if c.inits.is_empty() { String::new() } else { format!("<{}>", c.inits.join(", ")) };
        let text = format!(
            "<ir_version: 10, opset_import: [\"\" : 28]>\nchain (float[{}] x) => (float[{}] {})\n{inits}\n{{\n{}\n}}\n",
            dims(&shape),
            dims(&c.shape),
            c.cur,
            c.lines.join("\n")
        );
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = (0..n).map(|_| rng.f32_in(-2.0, 2.0)).collect();
        let x = HostTensor::from_f32(shape.clone(), &vals).unwrap();
        for cfg in ["default", "tiny"] {
            let what = format!("case {case} on {cfg}: {log:?}\n{text}");
            let opts = Options { config: accelc::config(cfg).unwrap(), ..Options::default() };
            let comp = accelc::compile(Source::Text(&text), &opts, &mut ())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let session =
                Session::new(comp.blob().unwrap()).unwrap_or_else(|e| panic!("{what}: {e}"));
            let got =
                session.run(std::slice::from_ref(&x)).unwrap_or_else(|e| panic!("{what}: {e}"));
            let want = accelc::reference(comp.oracle(), std::slice::from_ref(&x))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            close(&got.outputs[0], &want[0]).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
    // The chains reached the ops they are for.
    assert!(ops_seen.len() >= 45, "only {} kinds: {ops_seen:?}", ops_seen.len());
}

/// Edge cases with known answers (onnxruntime 1.32 and `onnx.reference` agree on each): the
/// reference interpreter and the compiled plan must both give them.
#[test]
fn edge_cases_match_known_answers() {
    let nan = f32::NAN;
    let f = |dims: Vec<usize>, v: &[f32]| HostTensor::from_f32(dims, v).unwrap();
    let i64s = |dims: Vec<usize>, v: &[i64]| {
        HostTensor::new(accelc::DType::I64, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .unwrap()
    };
    let big = 1i64 << 53;
    let cases: Vec<(&str, String, HostTensor, Vec<HostTensor>)> = vec![
        (
            // Beyond 2^53 the int64 values differ only exactly.
            "ArgMax of int64 beyond 2^53",
            "(int64[1,4] x) => (int64[1] y) { y = ArgMax <axis: int = 1, keepdims: int = 0> (x) }".into(),
            i64s(vec![1, 4], &[big, big + 1, big - 1, big + 1]),
            vec![i64s(vec![1], &[1])],
        ),
        (
            "TopK with a NaN (above every number)",
            "(float[1,5] x) => (float[1,3] v, int64[1,3] i) <int64[1] k = {3}> { v, i = TopK (x, k) }".into(),
            f(vec![1, 5], &[5.0, 4.0, nan, 1.0, 2.0]),
            vec![f(vec![1, 3], &[nan, 5.0, 4.0]), i64s(vec![1, 3], &[2, 0, 1])],
        ),
        (
            "ReduceSumSquare with noop_with_empty_axes keeps x²",
            "(float[2,2] x) => (float[2,2] y) { y = ReduceSumSquare <noop_with_empty_axes: int = 1> (x) }".into(),
            f(vec![2, 2], &[-2.0, 0.5, 3.0, -0.25]),
            vec![f(vec![2, 2], &[4.0, 0.25, 9.0, 0.0625])],
        ),
    ];
    for (what, graph, x, want) in cases {
        let text = format!("<ir_version: 10, opset_import: [\"\" : 21]>\ng {graph}\n");
        let comp = accelc::compile(Source::Text(&text), &Options::default(), &mut ())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let session = Session::new(comp.blob().unwrap()).unwrap();
        let got = session.run(std::slice::from_ref(&x)).unwrap().outputs;
        let reference = accelc::reference(comp.oracle(), std::slice::from_ref(&x)).unwrap();
        for (k, w) in want.iter().enumerate() {
            close(&got[k], w).unwrap_or_else(|e| panic!("{what}, compiled, output {k}: {e}"));
            close(&reference[k], w)
                .unwrap_or_else(|e| panic!("{what}, reference, output {k}: {e}"));
        }
    }
}
