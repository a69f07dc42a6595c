//! Scheduling: graph nodes become kernel steps, tensors get layouts and storage, and the DRAM
//! arena is planned by liveness.
//!
//! Layouts: a 4-D tensor that a convolution or pool produces is stored NHWC (channels
//! innermost, the order the matrix engine reduces over); element-wise results follow their
//! inputs; everything else is row-major. Conversions are copies through strided views,
//! inserted only where a kernel needs the other layout and the two differ in memory.

use std::collections::HashMap;

use accelc_isa::{BinOp, DeviceConfig, UnOp};

use super::view::{View, ViewOp};
use super::{CompileOptions, LowerError, emit, kernels};
use crate::interp::{axis as norm_axis, nearest_index_map, pads, resize_shape, split_sizes};
use crate::ir::{BinaryOp, DType, Graph, Node, Op, PadMode, ReduceKind, UnaryOp, ValueId};

/// A tensor of the schedule: an index in [`Sched::tens`] (graph values first, at their
/// `ValueId`, then temporaries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct T(pub(crate) u32);

impl T {
    /// The tensor of graph value `v` (graph values come first, in id order).
    pub(crate) fn of_value(v: ValueId) -> T {
        T(v.0)
    }

    /// The index, for side tables parallel to [`Sched::tens`].
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

/// The schedule's tensors, addressed by [`T`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Tensors(Vec<Tens>);

impl Tensors {
    pub(crate) fn with_capacity(n: usize) -> Tensors {
        Tensors(Vec::with_capacity(n))
    }

    /// Adds a tensor; returns its id.
    pub(crate) fn push(&mut self, t: Tens) -> T {
        self.0.push(t);
        T(self.0.len() as u32 - 1)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl std::ops::Index<T> for Tensors {
    type Output = Tens;
    fn index(&self, t: T) -> &Tens {
        &self.0[t.0 as usize]
    }
}

impl std::ops::IndexMut<T> for Tensors {
    fn index_mut(&mut self, t: T) -> &mut Tens {
        &mut self.0[t.0 as usize]
    }
}

/// Where a tensor lives.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    /// In the constant segment (bytes shared with the model where they come from it).
    Const(bytes::Bytes),
    /// In the input segment.
    Input,
    /// In the arena (or the output segment, decided by planning).
    Arena,
    /// Shares another tensor's bytes.
    Alias(T),
}

/// A tensor of the program.
#[derive(Clone, Debug)]
pub(crate) struct Tens {
    pub(crate) name: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
    /// Stored NHWC (4-D only).
    pub(crate) nhwc: bool,
    pub(crate) store: Store,
    /// Segment and byte offset, once planned.
    pub(crate) loc: Option<(u8, u64)>,
}

impl Tens {
    pub(crate) fn elem(&self) -> u64 {
        self.dtype.size() as u64
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * self.elem()
    }

    /// Whether NHWC storage equals row-major storage for this shape.
    fn layouts_agree(&self) -> bool {
        self.shape.len() != 4 || self.shape[1] == 1 || self.shape[2] * self.shape[3] == 1
    }
}

/// An activation applied in a kernel's epilogue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Act {
    None,
    Relu,
    Clip(f32, f32),
}

/// Where a matrix kernel's weights come from.
#[derive(Clone, Debug)]
pub(crate) enum Weights {
    /// Packed at compile time (tile order) into the step's constant 1.
    Const,
    /// A tensor in DRAM read at run time as `[K][N]` rows of `row` bytes, one base offset per
    /// image.
    Runtime { t: T, offs: Vec<u64>, row: u64 },
}

/// A matrix-engine kernel: convolution, Gemm or MatMul, with a fused epilogue.
#[derive(Clone, Debug)]
pub(crate) struct Mm {
    /// Activations, NHWC `img = [n, h, w, c]`; image `i` starts `a_offs[i]` bytes in.
    pub(crate) input: T,
    pub(crate) img: [usize; 4],
    pub(crate) a_offs: Vec<u64>,
    pub(crate) k: [usize; 2],
    pub(crate) s: [usize; 2],
    pub(crate) d: [usize; 2],
    /// Top, left, bottom, right.
    pub(crate) pad: [usize; 4],
    pub(crate) groups: usize,
    pub(crate) out_hw: [usize; 2],
    pub(crate) cout: usize,
    pub(crate) out: T,
    pub(crate) out_offs: Vec<u64>,
    pub(crate) weights: Weights,
    /// Logical weights `[cout][cin/groups][kh][kw]` for packing.
    pub(crate) oihw: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) residual: Option<T>,
    pub(crate) act: Act,
}

/// A 2-D sliding window over an NHWC tensor: what depthwise convolution and pooling share.
#[derive(Clone, Debug)]
pub(crate) struct Win {
    pub(crate) input: T,
    /// `[n, h, w, c]`.
    pub(crate) img: [usize; 4],
    pub(crate) k: [usize; 2],
    pub(crate) s: [usize; 2],
    pub(crate) d: [usize; 2],
    /// Top, left, bottom, right.
    pub(crate) pad: [usize; 4],
    pub(crate) out_hw: [usize; 2],
    pub(crate) out: T,
}

/// A depthwise convolution on the vector engine.
#[derive(Clone, Debug)]
pub(crate) struct Dw {
    pub(crate) win: Win,
    pub(crate) act: Act,
}

/// Max or average pooling, NHWC.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    pub(crate) win: Win,
    pub(crate) max: bool,
}

/// A source of an element-wise micro-op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Src {
    /// Input `i`.
    In(usize),
    /// Register `i` (0 is the result).
    Reg(usize),
    /// A scalar constant (index into the step's constant 0).
    Imm(usize),
}

/// One vector operation of an element-wise program.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Micro {
    Bin(BinOp, usize, Src, Src),
    Un(UnOp, usize, Src),
}

/// An element-wise kernel over strided views (a copy when `prog` is empty).
#[derive(Clone, Debug)]
pub(crate) struct Ew {
    pub(crate) out: T,
    pub(crate) out_view: Vec<ViewOp>,
    pub(crate) inputs: Vec<(T, Vec<ViewOp>)>,
    pub(crate) prog: Vec<Micro>,
    pub(crate) regs: usize,
}

/// Row-wise kernels over a dense `[rows][len]` input.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RowKind {
    Softmax {
        log: bool,
    },
    /// Gamma and beta are the step's constant 0 (`2·len` floats).
    LayerNorm {
        eps: f32,
    },
    Reduce(ReduceKind),
}

#[derive(Clone, Debug)]
pub(crate) struct Rw {
    pub(crate) input: T,
    pub(crate) out: T,
    pub(crate) rows: usize,
    pub(crate) len: usize,
    pub(crate) kind: RowKind,
    /// LayerNormalization's scale and bias read at run time (views broadcast to a row); the
    /// bias may be absent.
    pub(crate) affine: Option<[Option<TensorView>; 2]>,
    /// LayerNormalization's Mean and InvStdDev outputs, when the node has them.
    pub(crate) stats: [Option<T>; 2],
}

/// A tensor read through view transformations.
pub(crate) type TensorView = (T, Vec<ViewOp>);

/// A kernel step.
#[derive(Clone, Debug)]
pub(crate) enum Kernel {
    Matmul(Mm),
    Depthwise(Dw),
    Pool(Pool),
    GlobalPool { input: T, out: T, max: bool, img: [usize; 4] },
    Elementwise(Ew),
    Fill { out: T, value: u32 },
    Rowwise(Rw),
}

/// What kind of work a layer does (for reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// Matrix engine.
    Matmul,
    /// Depthwise convolution on the vector engine.
    Depthwise,
    /// Pooling.
    Pool,
    /// Element-wise arithmetic.
    Elementwise,
    /// Data movement only.
    Copy,
    /// Row-wise reductions (softmax, normalisation).
    Rowwise,
}

impl LayerKind {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Matmul => "matmul",
            LayerKind::Depthwise => "depthwise",
            LayerKind::Pool => "pool",
            LayerKind::Elementwise => "eltwise",
            LayerKind::Copy => "copy",
            LayerKind::Rowwise => "rowwise",
        }
    }
}

/// A step: a kernel, the ONNX nodes it implements, and its constants.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub(crate) kernel: Kernel,
    pub(crate) name: String,
    /// The graph value it completes, if any.
    pub(crate) output: Option<String>,
    /// Constant blobs (parameters, packed weights) and their offsets once planned.
    pub(crate) consts: Vec<Vec<u8>>,
    pub(crate) const_offs: Vec<u64>,
}

impl Step {
    pub(crate) fn kind(&self) -> LayerKind {
        match &self.kernel {
            Kernel::Matmul(_) => LayerKind::Matmul,
            Kernel::Depthwise(_) => LayerKind::Depthwise,
            Kernel::Pool(_) | Kernel::GlobalPool { .. } => LayerKind::Pool,
            Kernel::Elementwise(e) if e.prog.is_empty() => LayerKind::Copy,
            Kernel::Elementwise(_) => LayerKind::Elementwise,
            Kernel::Fill { .. } => LayerKind::Copy,
            Kernel::Rowwise(_) => LayerKind::Rowwise,
        }
    }

    /// Tensors read and written.
    fn uses(&self) -> (Vec<T>, Vec<T>) {
        match &self.kernel {
            Kernel::Matmul(m) => {
                let mut r = vec![m.input];
                if let Weights::Runtime { t, .. } = &m.weights {
                    r.push(*t);
                }
                r.extend(m.residual);
                (r, vec![m.out])
            }
            Kernel::Depthwise(Dw { win, .. }) | Kernel::Pool(Pool { win, .. }) => {
                (vec![win.input], vec![win.out])
            }
            Kernel::GlobalPool { input, out, .. } => (vec![*input], vec![*out]),
            Kernel::Elementwise(e) => (e.inputs.iter().map(|i| i.0).collect(), vec![e.out]),
            Kernel::Fill { out, .. } => (vec![], vec![*out]),
            Kernel::Rowwise(r) => {
                let mut reads = vec![r.input];
                if let Some(a) = &r.affine {
                    reads.extend(a.iter().flatten().map(|(t, _)| *t));
                }
                let mut writes = vec![r.out];
                writes.extend(r.stats.iter().flatten());
                (reads, writes)
            }
        }
    }
}

/// The schedule: tensors and steps.
pub(crate) struct Sched {
    pub(crate) tens: Tensors,
    pub(crate) steps: Vec<Step>,
    pub(crate) inputs: Vec<(String, T)>,
    pub(crate) outputs: Vec<(String, T)>,
    pub(crate) cfg: DeviceConfig,
}

impl Sched {
    /// The tensor whose bytes `t` uses.
    pub(crate) fn root(&self, mut t: T) -> T {
        while let Store::Alias(s) = self.tens[t].store {
            t = s;
        }
        t
    }

    /// The logical view of `t` (NCHW dims for NHWC tensors, with NHWC strides).
    pub(crate) fn view(&self, t: T) -> Result<View, LowerError> {
        let tn = &self.tens[t];
        let (seg, off) = self.tens[self.root(t)]
            .loc
            .ok_or_else(|| LowerError::msg(format!("internal: `{}` has no address", tn.name)))?;
        let e = tn.elem();
        if tn.nhwc && tn.shape.len() == 4 {
            let [c, h, w] = [tn.shape[1], tn.shape[2], tn.shape[3]];
            let c8 = c as u64 * e;
            Ok(View {
                seg,
                off,
                dims: vec![(tn.shape[0], (h * w) as u64 * c8), (c, e), (h, w as u64 * c8), (w, c8)],
            })
        } else {
            Ok(View::dense(seg, off, &tn.shape, e))
        }
    }

    /// Segment and offset of `t`'s first byte.
    pub(crate) fn addr(&self, t: T) -> Result<(u8, u64), LowerError> {
        self.tens[self.root(t)].loc.ok_or_else(|| {
            LowerError::msg(format!("internal: `{}` has no address", self.tens[t].name))
        })
    }
}

struct Builder<'g> {
    g: &'g Graph,
    s: Sched,
    /// Consumers of each value (node indices).
    users: HashMap<ValueId, Vec<usize>>,
    /// Index of the node producing each value.
    producer: HashMap<ValueId, usize>,
    fused: Vec<bool>,
    /// Layout conversions already made: (tensor, to NHWC) → copy.
    converted: HashMap<(T, bool), T>,
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Builder<'_> {
    fn t(&self, v: ValueId) -> T {
        T::of_value(v)
    }

    fn input(&self, n: &Node, i: usize) -> Result<T, LowerError> {
        n.inputs
            .get(i)
            .copied()
            .flatten()
            .map(|v| self.t(v))
            .ok_or_else(|| LowerError::at(&n.name, format!("input {i} is missing")))
    }

    fn opt_input(&self, n: &Node, i: usize) -> Option<T> {
        n.inputs.get(i).copied().flatten().map(|v| self.t(v))
    }

    fn constant(&self, t: T) -> Option<&[u8]> {
        match &self.s.tens[t].store {
            Store::Const(b) => Some(b),
            _ => None,
        }
    }

    fn const_f32(&self, t: T) -> Option<Vec<f32>> {
        (self.s.tens[t].dtype == DType::F32).then(|| self.constant(t).map(f32s)).flatten()
    }

    fn const_i64(&self, t: T) -> Option<Vec<i64>> {
        let b = self.constant(t)?;
        match self.s.tens[t].dtype {
            DType::I64 => Some(
                b.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect(),
            ),
            DType::I32 => Some(
                b.chunks_exact(4)
                    .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
                    .collect(),
            ),
            _ => None,
        }
    }

    fn out(&self, n: &Node, i: usize) -> Result<T, LowerError> {
        n.outputs.get(i).map(|v| self.t(*v)).ok_or_else(|| LowerError::at(&n.name, "no output"))
    }

    fn shape(&self, t: T) -> Vec<usize> {
        self.s.tens[t].shape.clone()
    }

    fn temp(
        &mut self,
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        nhwc: bool,
        store: Store,
    ) -> T {
        self.s.tens.push(Tens { name, shape, dtype, nhwc, store, loc: None })
    }

    fn step(&mut self, kernel: Kernel, name: &str, output: Option<T>, consts: Vec<Vec<u8>>) {
        let output = output.map(|t| self.s.tens[t].name.clone());
        self.s.steps.push(Step {
            kernel,
            name: name.to_string(),
            output,
            const_offs: vec![0; consts.len()],
            consts,
        });
    }

    /// `t` in the requested layout, converting by a copy if the bytes differ.
    fn layout(&mut self, t: T, nhwc: bool) -> T {
        let tn = &self.s.tens[t];
        if tn.nhwc == nhwc || tn.layouts_agree() {
            return t;
        }
        if let Some(c) = self.converted.get(&(t, nhwc)) {
            return *c;
        }
        let (name, shape, dtype) = (
            format!("{}.{}", tn.name, if nhwc { "nhwc" } else { "nchw" }),
            tn.shape.clone(),
            tn.dtype,
        );
        let c = self.temp(name.clone(), shape, dtype, nhwc, Store::Arena);
        let ew = Ew { out: c, out_view: vec![], inputs: vec![(t, vec![])], prog: vec![], regs: 0 };
        self.step(Kernel::Elementwise(ew), &format!("layout:{name}"), None, vec![]);
        self.converted.insert((t, nhwc), c);
        c
    }

    /// The single consumer of `v`'s tensor if it has exactly one and `v` is not a graph output.
    fn sole_user(&self, t: T) -> Option<usize> {
        let v = ValueId(t.0);
        if self.g.outputs.contains(&v) {
            return None;
        }
        match self.users.get(&v).map(Vec::as_slice) {
            Some([u]) if !self.fused[*u] => Some(*u),
            _ => None,
        }
    }

    /// Whether tensor `t` is available before node `at` runs.
    fn ready_before(&self, t: T, at: usize) -> bool {
        match self.producer.get(&ValueId(t.0)) {
            Some(p) => *p < at,
            None => true,
        }
    }

    /// Fuses an activation following `cur`, if any; returns it and the new end tensor.
    fn fuse_act(&mut self, cur: T, names: &mut Vec<String>) -> (Act, T) {
        let Some(u) = self.sole_user(cur) else { return (Act::None, cur) };
        let n = &self.g.nodes[u];
        let act = match &n.op {
            Op::Unary(UnaryOp::Relu) => Act::Relu,
            Op::Clip { min, max } => {
                let lo = match self.opt_input(n, 1) {
                    Some(t) => match self.const_f32(t) {
                        Some(v) if v.len() == 1 => v[0],
                        _ => return (Act::None, cur),
                    },
                    None if self.g.opset < 11 => min.unwrap_or(f32::MIN),
                    None => f32::MIN,
                };
                let hi = match self.opt_input(n, 2) {
                    Some(t) => match self.const_f32(t) {
                        Some(v) if v.len() == 1 => v[0],
                        _ => return (Act::None, cur),
                    },
                    None if self.g.opset < 11 => max.unwrap_or(f32::MAX),
                    None => f32::MAX,
                };
                Act::Clip(lo, hi)
            }
            _ => return (Act::None, cur),
        };
        self.fused[u] = true;
        names.push(n.name.clone());
        (act, self.t(n.outputs[0]))
    }

    /// Fuses a residual `Add` of a same-shaped tensor in `layout` following `cur`.
    fn fuse_residual(
        &mut self,
        cur: T,
        at: usize,
        nhwc: bool,
        names: &mut Vec<String>,
    ) -> (Option<T>, T) {
        let Some(u) = self.sole_user(cur) else { return (None, cur) };
        let n = &self.g.nodes[u];
        if n.op != Op::Binary(BinaryOp::Add) || n.inputs.len() != 2 {
            return (None, cur);
        }
        let (Some(a), Some(b)) = (self.opt_input(n, 0), self.opt_input(n, 1)) else {
            return (None, cur);
        };
        let other = if a == cur { b } else { a };
        let o = &self.s.tens[other];
        let out = self.t(n.outputs[0]);
        if other == cur
            || o.shape != self.s.tens[cur].shape
            || o.dtype != DType::F32
            || !(o.nhwc == nhwc || o.layouts_agree())
            || !self.ready_before(other, at)
        {
            return (None, cur);
        }
        self.fused[u] = true;
        names.push(n.name.clone());
        (Some(other), out)
    }

    /// Fuses an `Add` of a constant `[N]` (or `[1, N]`) bias following `cur`.
    fn fuse_bias(&mut self, cur: T, cout: usize, bias: &mut [f32], names: &mut Vec<String>) -> T {
        let Some(u) = self.sole_user(cur) else { return cur };
        let n = &self.g.nodes[u];
        if n.op != Op::Binary(BinaryOp::Add) || n.inputs.len() != 2 {
            return cur;
        }
        let (Some(a), Some(b)) = (self.opt_input(n, 0), self.opt_input(n, 1)) else { return cur };
        let other = if a == cur { b } else { a };
        let Some(v) = self.const_f32(other) else { return cur };
        let shape = &self.s.tens[other].shape;
        if v.len() != cout
            || shape.last() != Some(&cout)
            || self.s.tens[self.t(n.outputs[0])].shape != self.s.tens[cur].shape
        {
            return cur;
        }
        for (b, x) in bias.iter_mut().zip(v) {
            *b += x;
        }
        self.fused[u] = true;
        names.push(n.name.clone());
        self.t(n.outputs[0])
    }
}

/// Builds the schedule.
pub(crate) fn schedule(graph: &Graph, opts: &CompileOptions) -> Result<Sched, LowerError> {
    schedule_inner(graph, opts, None)
}

/// Schedules every node it can, recording each node's failure (by node index) instead of
/// stopping at the first: the per-node answer of [`super::device_support`]. A node fed by a
/// value without a type (downstream of one that does not import) fails naming that value.
pub(crate) fn schedule_all(graph: &Graph, opts: &CompileOptions) -> Vec<(usize, LowerError)> {
    let mut errors = Vec::new();
    let _ = schedule_inner(graph, opts, Some(&mut errors));
    errors
}

fn schedule_inner(
    graph: &Graph,
    opts: &CompileOptions,
    mut errors: Option<&mut Vec<(usize, LowerError)>>,
) -> Result<Sched, LowerError> {
    let mut s = Sched {
        tens: Tensors::with_capacity(graph.values.len()),
        steps: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        cfg: opts.config.clone(),
    };
    for v in &graph.values {
        let ty = v.ty.as_ref();
        let (shape, dtype) = match (&v.constant, ty) {
            (Some(c), _) => (c.shape.clone(), c.dtype),
            (None, Some(t)) => (t.shape.clone(), t.dtype),
            (None, None) => (vec![], DType::F32),
        };
        let store = match &v.constant {
            Some(c) => Store::Const(c.data.clone()),
            None => Store::Arena,
        };
        s.tens.push(Tens { name: v.name.clone(), shape, dtype, nhwc: false, store, loc: None });
    }
    for id in &graph.inputs {
        let t = T::of_value(*id);
        s.tens[t].store = Store::Input;
        s.inputs.push((graph.value(*id).name.clone(), t));
    }
    let mut users: HashMap<ValueId, Vec<usize>> = HashMap::new();
    let mut producer = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for v in n.inputs.iter().flatten() {
            users.entry(*v).or_default().push(i);
        }
        for v in &n.outputs {
            producer.insert(*v, i);
        }
    }
    let mut b = Builder {
        g: graph,
        s,
        users,
        producer,
        fused: vec![false; graph.nodes.len()],
        converted: HashMap::new(),
    };
    for (i, n) in graph.nodes.iter().enumerate() {
        if b.fused[i] || n.op == Op::Constant {
            continue;
        }
        // Values already constant (folded) need no kernel.
        if n.outputs.iter().all(|o| graph.value(*o).constant.is_some()) {
            continue;
        }
        let result = match (&n.op, &errors) {
            (Op::Unsupported { reason, .. }, Some(_)) => {
                Err(LowerError::at(&n.name, format!("does not import: {reason}")))
            }
            (_, Some(_)) => match n.inputs.iter().flatten().find(|v| {
                let v = graph.value(**v);
                v.ty.is_none() && v.constant.is_none()
            }) {
                Some(v) => Err(LowerError::at(
                    &n.name,
                    format!(
                        "input `{}` has no type (a node upstream does not import)",
                        graph.value(*v).name
                    ),
                )),
                None => lower_node(&mut b, i, n),
            },
            _ => lower_node(&mut b, i, n),
        };
        let result = result.map_err(|mut e| {
            if e.node.is_none() {
                e.node = Some(n.name.clone());
            }
            e
        });
        match (result, errors.as_deref_mut()) {
            (Ok(()), _) => {}
            (Err(e), Some(list)) => list.push((i, e)),
            (Err(e), None) => return Err(e),
        }
    }
    let mut outs: Vec<ValueId> = graph.outputs.clone();
    if opts.expose_all {
        for n in &graph.nodes {
            for o in &n.outputs {
                let v = graph.value(*o);
                if v.constant.is_none()
                    && !outs.contains(o)
                    && v.ty.as_ref().is_some_and(|t| t.dtype == DType::F32)
                {
                    outs.push(*o);
                }
            }
        }
    }
    for id in outs {
        let t = T::of_value(id);
        b.s.outputs.push((graph.value(id).name.clone(), t));
    }
    Ok(b.s)
}

/// Strides, dilations and (top, left, bottom, right) padding of a 2-D window.
type WindowGeometry = ([usize; 2], [usize; 2], [usize; 4]);

fn window_geometry(
    n: &Node,
    w: &crate::ir::Window,
    x: &[usize],
    kernel: [usize; 2],
    out_hw: [usize; 2],
) -> Result<WindowGeometry, LowerError> {
    let g = pads(w, &x[2..], &kernel).map_err(|e| LowerError::at(&n.name, e))?;
    let (s, d) = ([g.strides[0], g.strides[1]], [g.dilations[0], g.dilations[1]]);
    let mut pad = [g.begin[0], g.begin[1], g.end[0], g.end[1]];
    // Ceil-mode outputs may reach past the padded input: pad further at the end.
    for a in 0..2 {
        let need = (out_hw[a] - 1) * s[a] + (kernel[a] - 1) * d[a] + 1;
        let have = x[2 + a] + pad[a] + pad[2 + a];
        if need > have {
            pad[2 + a] += need - have;
        }
    }
    Ok((s, d, pad))
}

fn lower_node(b: &mut Builder<'_>, idx: usize, n: &Node) -> Result<(), LowerError> {
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
                oihw,
                bias,
                residual,
                act,
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
                oihw,
                bias,
                residual: None,
                act,
            };
            push_mm(b, mm, &names.join("+"), end)
        }
        Op::Pool { max, window, count_include_pad } => {
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            // 1-D pooling arrives as 2-D (`legalize`).
            if xs.len() != 4 || b.s.tens[x].dtype != DType::F32 {
                return Err(err("only 1-D and 2-D float32 pooling is lowered"));
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
                },
                &name,
                Some(out),
                vec![f32_bytes(&[hw])],
            );
            Ok(())
        }
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
        Op::Transpose { perm } => {
            let x = b.input(n, 0)?;
            let rank = b.shape(x).len();
            let perm: Vec<usize> = if perm.is_empty() {
                (0..rank).rev().collect()
            } else {
                perm.iter()
                    .map(|p| norm_axis(*p, rank))
                    .collect::<Result<_, _>>()
                    .map_err(|e| err(&e))?
            };
            let out = b.out(n, 0)?;
            copy_step(b, &name, out, vec![], x, vec![ViewOp::Permute(perm)]);
            Ok(())
        }
        Op::Concat { axis } => {
            let out = b.out(n, 0)?;
            let os = b.shape(out);
            let ax = norm_axis(*axis, os.len()).map_err(|e| err(&e))?;
            let ins: Vec<T> = n.inputs.iter().flatten().map(|v| b.t(*v)).collect();
            if os.len() == 4 && ins.iter().all(|t| b.s.tens[*t].nhwc) {
                b.s.tens[out].nhwc = true;
            }
            let mut start = 0;
            for (j, t) in ins.iter().enumerate() {
                let len = b.shape(*t)[ax];
                if len > 0 {
                    let v = vec![ViewOp::Slice { axis: ax, start, len, step: 1 }];
                    let nm = if j == 0 { name.clone() } else { format!("{name}#{j}") };
                    copy_step(b, &nm, out, v, *t, vec![]);
                }
                start += len;
            }
            if let Some(last) = b.s.steps.last_mut() {
                last.output = Some(b.s.tens[out].name.clone());
            }
            Ok(())
        }
        Op::Split { axis, split } => {
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            let ax = norm_axis(*axis, xs.len()).map_err(|e| err(&e))?;
            let given = match b.opt_input(n, 1) {
                Some(t) => Some(b.const_i64(t).ok_or_else(|| err("Split sizes must be constant"))?),
                None => split.clone(),
            };
            let sizes = split_sizes(xs[ax], given.as_deref(), n.outputs.len(), b.g.opset)
                .map_err(|e| err(&e))?;
            let mut start = 0;
            for (j, len) in sizes.into_iter().enumerate() {
                let out = b.out(n, j)?;
                copy_step(
                    b,
                    &format!("{name}#{j}"),
                    out,
                    vec![],
                    x,
                    vec![ViewOp::Slice { axis: ax, start, len, step: 1 }],
                );
                start += len;
            }
            Ok(())
        }
        Op::Slice { attrs } => {
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            let rank = xs.len();
            let get = |b: &Builder<'_>, i: usize| -> Result<Option<Vec<i64>>, LowerError> {
                match b.opt_input(n, i) {
                    Some(t) => b
                        .const_i64(t)
                        .map(Some)
                        .ok_or_else(|| err("Slice parameters must be constant")),
                    None => Ok(None),
                }
            };
            let (starts, ends, axes, steps) = match attrs {
                Some(a) => (a.starts.clone(), a.ends.clone(), a.axes.clone(), None),
                None => (
                    get(b, 1)?.unwrap_or_default(),
                    get(b, 2)?.unwrap_or_default(),
                    get(b, 3)?,
                    get(b, 4)?,
                ),
            };
            let axes: Vec<usize> = match axes {
                Some(a) => a
                    .iter()
                    .map(|v| norm_axis(*v, rank))
                    .collect::<Result<_, _>>()
                    .map_err(|e| err(&e))?,
                None => (0..starts.len()).collect(),
            };
            let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
            let out = b.out(n, 0)?;
            let os = b.shape(out);
            let mut view = vec![];
            for (((&k, &s0), &e0), &st) in axes.iter().zip(&starts).zip(&ends).zip(&steps) {
                if st <= 0 {
                    return Err(err("Slice with a negative step is not lowered"));
                }
                let (s, _) = crate::shape::slice_range(xs[k] as i64, s0, e0, st);
                view.push(ViewOp::Slice {
                    axis: k,
                    start: s as usize,
                    len: os[k],
                    step: st as usize,
                });
            }
            copy_step(b, &name, out, vec![], x, view);
            Ok(())
        }
        Op::Gather { axis } => {
            let x = b.input(n, 0)?;
            let ix = b.input(n, 1)?;
            let xs = b.shape(x);
            let ax = norm_axis(*axis, xs.len()).map_err(|e| err(&e))?;
            let idx = b.const_i64(ix).ok_or_else(|| err("Gather indices must be constant"))?;
            let out = b.out(n, 0)?;
            let norm = |v: i64| -> Result<usize, LowerError> {
                let d = xs[ax] as i64;
                let w = if v < 0 { v + d } else { v };
                if (0..d).contains(&w) {
                    Ok(w as usize)
                } else {
                    Err(err("Gather index out of range"))
                }
            };
            if b.shape(ix).is_empty() {
                let i = norm(idx[0])?;
                copy_step(b, &name, out, vec![], x, vec![ViewOp::Select { axis: ax, index: i }]);
            } else {
                let mut flat_shape = xs.clone();
                flat_shape[ax] = idx.len();
                for (j, v) in idx.iter().enumerate() {
                    let i = norm(*v)?;
                    let ov = vec![
                        ViewOp::Reshape(flat_shape.clone()),
                        ViewOp::Slice { axis: ax, start: j, len: 1, step: 1 },
                    ];
                    copy_step(
                        b,
                        &format!("{name}#{j}"),
                        out,
                        ov,
                        x,
                        vec![ViewOp::Slice { axis: ax, start: i, len: 1, step: 1 }],
                    );
                }
            }
            Ok(())
        }
        Op::Pad { mode, pads, value } => {
            if *mode != PadMode::Constant {
                return Err(err("only constant padding is lowered"));
            }
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            let pads = match b.opt_input(n, 1) {
                Some(t) => b.const_i64(t).ok_or_else(|| err("Pad pads must be constant"))?,
                None => pads.clone().unwrap_or_default(),
            };
            let value = match b.opt_input(n, 2) {
                Some(t) => b
                    .const_f32(t)
                    .and_then(|v| v.first().copied())
                    .ok_or_else(|| err("Pad value must be a float constant"))?,
                None => *value,
            };
            if b.opt_input(n, 3).is_some() {
                return Err(err("Pad with axes is not lowered"));
            }
            if pads.len() != 2 * xs.len() || pads.iter().any(|p| *p < 0) {
                return Err(err("Pad with negative or mismatched pads is not lowered"));
            }
            let out = b.out(n, 0)?;
            b.step(
                Kernel::Fill { out, value: value.to_bits() },
                &format!("{name}:fill"),
                None,
                vec![],
            );
            let view = xs
                .iter()
                .enumerate()
                .map(|(a, &len)| ViewOp::Slice { axis: a, start: pads[a] as usize, len, step: 1 })
                .collect();
            copy_step(b, &name, out, view, x, vec![]);
            Ok(())
        }
        Op::Resize { linear, coords, nearest } => {
            if *linear {
                return Err(err("linear Resize is not lowered"));
            }
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            let out = b.out(n, 0)?;
            let os = b.shape(out);
            let scales = match b.opt_input(n, 2) {
                Some(t) => Some(
                    b.const_f32(t)
                        .ok_or_else(|| err("Resize scales must be constant"))?
                        .iter()
                        .map(|v| f64::from(*v))
                        .collect::<Vec<_>>(),
                ),
                None => None,
            }
            .filter(|v| !v.is_empty());
            let sizes = match b.opt_input(n, 3) {
                Some(t) => {
                    Some(b.const_i64(t).ok_or_else(|| err("Resize sizes must be constant"))?)
                }
                None => None,
            }
            .filter(|v| !v.is_empty());
            let (shape, scales) =
                resize_shape(&xs, scales.as_deref(), sizes.as_deref()).map_err(|e| err(&e))?;
            if shape != os || os.contains(&0) {
                return Err(err("Resize to an empty or mismatched shape is not lowered"));
            }
            // The op's own index map per axis; a shortcut is taken only where it is proven
            // equal to this map.
            let maps: Vec<Vec<usize>> = (0..xs.len())
                .map(|a| nearest_index_map(xs[a], os[a], scales[a], *coords, *nearest))
                .collect();
            let is_repeat = |a: usize| {
                os[a].is_multiple_of(xs[a])
                    && maps[a].iter().enumerate().all(|(o, &i)| i == o / (os[a] / xs[a]))
            };
            if (0..xs.len()).all(is_repeat) {
                // Every axis is a plain integer repeat: one copy through a stride-0 view.
                let mut view = vec![];
                let mut split_shape = vec![];
                for a in 0..xs.len() {
                    split_shape.push(xs[a]);
                    split_shape.push(os[a] / xs[a]);
                }
                for a in (0..xs.len()).rev() {
                    view.push(ViewOp::Repeat { axis: a, times: os[a] / xs[a] });
                }
                copy_step(b, &name, out, vec![ViewOp::Reshape(split_shape)], x, view);
                return Ok(());
            }
            // The general path: a gather per resized axis, one copy per run of output indices
            // reading the same input index (broadcast along the run).
            let axes: Vec<usize> = (0..xs.len())
                .filter(|&a| !(xs[a] == os[a] && maps[a].iter().enumerate().all(|(o, &i)| o == i)))
                .collect();
            let mut cur = x;
            let mut cur_shape = xs.clone();
            for (k, &a) in axes.iter().enumerate() {
                let mut dst_shape = cur_shape.clone();
                dst_shape[a] = os[a];
                let dst = if k + 1 == axes.len() {
                    out
                } else {
                    let dtype = b.s.tens[x].dtype;
                    b.temp(format!("{name}.axis{a}"), dst_shape.clone(), dtype, false, Store::Arena)
                };
                let mut o0 = 0;
                while o0 < os[a] {
                    let src = maps[a][o0];
                    let len = maps[a][o0..].iter().take_while(|i| **i == src).count();
                    let mut run_shape = dst_shape.clone();
                    run_shape[a] = len;
                    copy_step(
                        b,
                        &format!("{name}:axis{a}@{o0}"),
                        dst,
                        vec![ViewOp::Slice { axis: a, start: o0, len, step: 1 }],
                        cur,
                        vec![
                            ViewOp::Slice { axis: a, start: src, len: 1, step: 1 },
                            ViewOp::Broadcast(run_shape),
                        ],
                    );
                    o0 += len;
                }
                cur = dst;
                cur_shape = dst_shape;
            }
            Ok(())
        }
        Op::Binary(op) => {
            let bop = match op {
                BinaryOp::Add => BinOp::Add,
                BinaryOp::Sub => BinOp::Sub,
                BinaryOp::Mul => BinOp::Mul,
                BinaryOp::Div => BinOp::Div,
                BinaryOp::Pow => BinOp::Pow,
                BinaryOp::Mod => return Err(err("Mod is not lowered")),
            };
            ew_step(b, n, vec![Micro::Bin(bop, 0, Src::In(0), Src::In(1))], 1, vec![])
        }
        Op::Unary(u) => {
            let one = |op| (vec![Micro::Un(op, 0, Src::In(0))], 1, vec![]);
            let (prog, regs, imms) = match u {
                UnaryOp::Relu => one(UnOp::Relu),
                UnaryOp::Sigmoid => one(UnOp::Sigmoid),
                UnaryOp::Tanh => one(UnOp::Tanh),
                UnaryOp::Exp => one(UnOp::Exp),
                UnaryOp::Erf => one(UnOp::Erf),
                UnaryOp::Sqrt => one(UnOp::Sqrt),
                UnaryOp::Neg => one(UnOp::Neg),
                UnaryOp::Abs => one(UnOp::Abs),
                UnaryOp::HardSwish => {
                    (hard_sigmoid(1.0 / 6.0, 0.5, 1, true), 2, vec![1.0 / 6.0, 0.5, 0.0, 1.0])
                }
            };
            ew_step(b, n, prog, regs, imms)
        }
        Op::HardSigmoid { alpha, beta } => {
            ew_step(b, n, hard_sigmoid(*alpha, *beta, 0, false), 1, vec![*alpha, *beta, 0.0, 1.0])
        }
        Op::LeakyRelu { alpha } => {
            // relu(x) + alpha·min(x, 0)
            let prog = vec![
                Micro::Bin(BinOp::Min, 1, Src::In(0), Src::Imm(1)),
                Micro::Bin(BinOp::Mul, 1, Src::Reg(1), Src::Imm(0)),
                Micro::Un(UnOp::Relu, 0, Src::In(0)),
                Micro::Bin(BinOp::Add, 0, Src::Reg(0), Src::Reg(1)),
            ];
            ew_step(b, n, prog, 2, vec![*alpha, 0.0])
        }
        Op::Gelu { tanh } => {
            let (prog, imms) = if *tanh {
                // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
                (
                    vec![
                        Micro::Bin(BinOp::Mul, 1, Src::In(0), Src::In(0)),
                        Micro::Bin(BinOp::Mul, 1, Src::Reg(1), Src::In(0)),
                        Micro::Bin(BinOp::Mul, 1, Src::Reg(1), Src::Imm(0)),
                        Micro::Bin(BinOp::Add, 1, Src::Reg(1), Src::In(0)),
                        Micro::Bin(BinOp::Mul, 1, Src::Reg(1), Src::Imm(1)),
                        Micro::Un(UnOp::Tanh, 1, Src::Reg(1)),
                        Micro::Bin(BinOp::Add, 1, Src::Reg(1), Src::Imm(2)),
                        Micro::Bin(BinOp::Mul, 0, Src::In(0), Src::Imm(3)),
                        Micro::Bin(BinOp::Mul, 0, Src::Reg(0), Src::Reg(1)),
                    ],
                    vec![0.044715, (2.0f64 / std::f64::consts::PI).sqrt() as f32, 1.0, 0.5],
                )
            } else {
                // 0.5·x·(1 + erf(x / √2))
                (
                    vec![
                        Micro::Bin(BinOp::Div, 1, Src::In(0), Src::Imm(0)),
                        Micro::Un(UnOp::Erf, 1, Src::Reg(1)),
                        Micro::Bin(BinOp::Add, 1, Src::Reg(1), Src::Imm(1)),
                        Micro::Bin(BinOp::Mul, 0, Src::In(0), Src::Imm(2)),
                        Micro::Bin(BinOp::Mul, 0, Src::Reg(0), Src::Reg(1)),
                    ],
                    vec![std::f32::consts::SQRT_2, 1.0, 0.5],
                )
            };
            ew_step(b, n, prog, 2, imms)
        }
        Op::Clip { min, max } => {
            let bound =
                |b: &Builder<'_>, i: usize, d: Option<f32>, inf: f32| -> Result<f32, LowerError> {
                    match b.opt_input(n, i) {
                        Some(t) => b
                            .const_f32(t)
                            .and_then(|v| v.first().copied())
                            .ok_or_else(|| err("Clip bounds must be constant")),
                        // Attributes hold the bounds only before opset 11.
                        None if b.g.opset < 11 => Ok(d.unwrap_or(inf)),
                        None => Ok(inf),
                    }
                };
            let runtime = |b: &Builder<'_>, i: usize| {
                b.opt_input(n, i).is_some_and(|t| b.const_f32(t).is_none())
            };
            if runtime(b, 1) || runtime(b, 2) {
                // Bounds computed at run time: element-wise max and min with broadcast scalars;
                // an omitted bound is the float range's end (Clip-13's default).
                let mut n1 = n.clone();
                let mut prog = vec![Micro::Un(UnOp::Mov, 0, Src::In(0))];
                let mut imms = vec![];
                let mut next = 1;
                for (i, op, default) in [(1, BinOp::Max, f32::MIN), (2, BinOp::Min, f32::MAX)] {
                    if n.inputs.get(i).copied().flatten().is_some() {
                        prog.push(Micro::Bin(op, 0, Src::Reg(0), Src::In(next)));
                        next += 1;
                    } else {
                        prog.push(Micro::Bin(op, 0, Src::Reg(0), Src::Imm(imms.len())));
                        imms.push(default);
                    }
                }
                n1.inputs.retain(Option::is_some);
                return ew_step(b, &n1, prog, 1, imms);
            }
            // Omitted bounds default to the float range's ends (Clip-6 attributes and Clip-11+
            // inputs alike), so an infinite input is clamped to ±f32::MAX.
            let lo = bound(b, 1, *min, f32::MIN)?;
            let hi = bound(b, 2, *max, f32::MAX)?;
            let prog = vec![
                Micro::Bin(BinOp::Max, 0, Src::In(0), Src::Imm(0)),
                Micro::Bin(BinOp::Min, 0, Src::Reg(0), Src::Imm(1)),
            ];
            let mut n1 = n.clone();
            n1.inputs.truncate(1);
            ew_step(b, &n1, prog, 1, vec![lo, hi])
        }
        Op::BatchNorm { epsilon } => {
            let x = b.input(n, 0)?;
            let xs = b.shape(x);
            let p: Vec<Vec<f32>> = (1..5)
                .map(|i| {
                    b.input(n, i)
                        .ok()
                        .and_then(|t| b.const_f32(t))
                        .ok_or_else(|| err("BatchNormalization parameters must be constant"))
                })
                .collect::<Result<_, _>>()?;
            let c = xs.get(1).copied().unwrap_or(1);
            let scale: Vec<f32> = (0..c).map(|i| p[0][i] / (p[3][i] + epsilon).sqrt()).collect();
            let shift: Vec<f32> = (0..c).map(|i| p[1][i] - p[2][i] * scale[i]).collect();
            let mut shp = vec![c];
            shp.extend(std::iter::repeat_n(1, xs.len().saturating_sub(2)));
            let st = b.temp(
                format!("{name}.scale"),
                shp.clone(),
                DType::F32,
                false,
                Store::Const(f32_bytes(&scale).into()),
            );
            let sh = b.temp(
                format!("{name}.shift"),
                shp,
                DType::F32,
                false,
                Store::Const(f32_bytes(&shift).into()),
            );
            let out = b.out(n, 0)?;
            let os = b.shape(out);
            b.s.tens[out].nhwc = b.s.tens[x].nhwc;
            let mut inputs = vec![
                (x, vec![]),
                (st, vec![ViewOp::Broadcast(os.clone())]),
                (sh, vec![ViewOp::Broadcast(os.clone())]),
            ];
            let mut prog = vec![
                Micro::Bin(BinOp::Mul, 0, Src::In(0), Src::In(1)),
                Micro::Bin(BinOp::Add, 0, Src::Reg(0), Src::In(2)),
            ];
            if !scale.iter().chain(&shift).all(|v| v.is_finite()) {
                // A zero variance (plus epsilon) makes the scale infinite, and `x·scale + shift`
                // would be inf − inf; the definition's `(x − mean)·scale + bias` is not.
                let mut shp = vec![c];
                shp.extend(std::iter::repeat_n(1, xs.len().saturating_sub(2)));
                let mean = b.temp(
                    format!("{name}.mean"),
                    shp,
                    DType::F32,
                    false,
                    Store::Const(f32_bytes(&p[2]).into()),
                );
                inputs[2].0 = b.temp(
                    format!("{name}.bias"),
                    b.shape(mean),
                    DType::F32,
                    false,
                    Store::Const(f32_bytes(&p[1]).into()),
                );
                inputs.push((mean, vec![ViewOp::Broadcast(os)]));
                prog = vec![
                    Micro::Bin(BinOp::Sub, 0, Src::In(0), Src::In(3)),
                    Micro::Bin(BinOp::Mul, 0, Src::Reg(0), Src::In(1)),
                    Micro::Bin(BinOp::Add, 0, Src::Reg(0), Src::In(2)),
                ];
            }
            let ew = Ew { out, out_view: vec![], inputs, prog, regs: 1 };
            b.step(Kernel::Elementwise(ew), &name, Some(out), vec![]);
            Ok(())
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let log = matches!(n.op, Op::LogSoftmax { .. });
            let x = b.layout(b.input(n, 0)?, false);
            let xs = b.shape(x);
            let ax = norm_axis(*axis, xs.len()).map_err(|e| err(&e))?;
            let out = b.out(n, 0)?;
            if b.g.opset >= 13 && ax + 1 != xs.len() {
                // Move the axis last, normalise rows, move it back.
                let rank = xs.len();
                let mut perm: Vec<usize> = (0..rank).filter(|a| *a != ax).collect();
                perm.push(ax);
                let mut inv = vec![0; rank];
                for (i, p) in perm.iter().enumerate() {
                    inv[*p] = i;
                }
                let t1 = permuted(b, x, perm, "axis-last", &format!("{name}:to-last"));
                let t2 =
                    b.temp(format!("{name}.out"), b.shape(t1), DType::F32, false, Store::Arena);
                rowwise(b, &name, t1, t2, rank - 1, RowKind::Softmax { log }, vec![])?;
                copy_step(b, &format!("{name}:back"), out, vec![], t2, vec![ViewOp::Permute(inv)]);
                return Ok(());
            }
            rowwise(b, &name, x, out, ax, RowKind::Softmax { log }, vec![])
        }
        Op::LayerNorm { axis, epsilon } => {
            let x = b.layout(b.input(n, 0)?, false);
            let xs = b.shape(x);
            let ax = norm_axis(*axis, xs.len()).map_err(|e| err(&e))?;
            let len: usize = xs[ax..].iter().product();
            let expand = |b: &Builder<'_>, i: usize, d: f32| -> Result<Vec<f32>, LowerError> {
                match b.opt_input(n, i) {
                    Some(t) => {
                        let v = b.const_f32(t).ok_or_else(|| {
                            err("LayerNormalization scale and bias must be constant")
                        })?;
                        let src = View::dense(0, 0, &b.shape(t), 1)
                            .apply(&ViewOp::Broadcast(xs[ax..].to_vec()))?;
                        let (sizes, strides) =
                            (src.shape(), src.dims.iter().map(|d| d.1).collect::<Vec<_>>());
                        Ok((0..len)
                            .map(|f| {
                                let (mut r, mut o) = (f, 0u64);
                                for dd in (0..sizes.len()).rev() {
                                    o += (r % sizes[dd]) as u64 * strides[dd];
                                    r /= sizes[dd];
                                }
                                v[o as usize]
                            })
                            .collect())
                    }
                    None => Ok(vec![d; len]),
                }
            };
            let out = b.out(n, 0)?;
            let stats = [n.outputs.get(1).map(|v| b.t(*v)), n.outputs.get(2).map(|v| b.t(*v))];
            let computed = |i: usize| b.opt_input(n, i).is_some_and(|t| b.const_f32(t).is_none());
            let (consts, affine) = if computed(1) || computed(2) {
                // Scale and bias read at run time through views broadcast to the rows.
                let view = |i: usize| {
                    b.opt_input(n, i).map(|t| (t, vec![ViewOp::Broadcast(xs[ax..].to_vec())]))
                };
                (vec![], Some([view(1), view(2)]))
            } else {
                let mut gb = expand(b, 1, 1.0)?;
                gb.extend(expand(b, 2, 0.0)?);
                (f32_bytes(&gb), None)
            };
            let rows: usize = xs[..ax].iter().product();
            let rw = Rw {
                input: x,
                out,
                rows,
                len,
                kind: RowKind::LayerNorm { eps: *epsilon },
                affine,
                stats,
            };
            b.step(Kernel::Rowwise(rw), &name, Some(out), vec![consts]);
            Ok(())
        }
        Op::Reduce { op, axes, noop_with_empty_axes, .. } => {
            let x0 = b.input(n, 0)?;
            let xs = b.shape(x0);
            let rank = xs.len();
            let axes = match b.opt_input(n, 1) {
                Some(t) => {
                    Some(b.const_i64(t).ok_or_else(|| err("reduction axes must be constant"))?)
                }
                None => axes.clone(),
            };
            let mut ax: Vec<usize> = match axes {
                Some(a) if !a.is_empty() => a
                    .iter()
                    .map(|v| norm_axis(*v, rank))
                    .collect::<Result<_, _>>()
                    .map_err(|e| err(&e))?,
                _ if *noop_with_empty_axes => vec![],
                _ => (0..rank).collect(),
            };
            ax.sort_unstable();
            ax.dedup();
            let out = b.out(n, 0)?;
            if ax.is_empty() {
                copy_step(b, &name, out, vec![ViewOp::Reshape(xs.clone())], x0, vec![]);
                return Ok(());
            }
            // Move the reduced axes last (a copy unless they already are).
            let keep: Vec<usize> = (0..rank).filter(|a| !ax.contains(a)).collect();
            let perm: Vec<usize> = keep.iter().chain(&ax).copied().collect();
            let x = if perm.iter().enumerate().all(|(i, p)| i == *p) {
                b.layout(x0, false)
            } else {
                permuted(b, x0, perm, "reduced-last", &format!("{name}:permute"))
            };
            let len: usize = ax.iter().map(|a| xs[*a]).product();
            if len == 0 {
                // The reduction of nothing is its identity.
                let value = match (op, b.s.tens[out].dtype) {
                    (ReduceKind::Mean, _) => {
                        return Err(err("the mean of an empty axis is undefined"));
                    }
                    (ReduceKind::Sum, _) => 0,
                    (ReduceKind::Max, DType::F32) => f32::NEG_INFINITY.to_bits(),
                    // The least value of the type, as a repeated 32-bit pattern.
                    (ReduceKind::Max, DType::U8 | DType::Bool) => 0,
                    (ReduceKind::Max, DType::I8) => 0x8080_8080,
                    (ReduceKind::Max, DType::I32) => 0x8000_0000,
                    (ReduceKind::Max, DType::I64) => return Err(err("int64 is not a device type")),
                };
                b.step(Kernel::Fill { out, value }, &name, Some(out), vec![]);
                return Ok(());
            }
            rowwise(b, &name, x, out, keep.len(), RowKind::Reduce(*op), vec![])
        }
        Op::ConvTranspose { window, group, output_padding, output_shape } => {
            conv_transpose(b, idx, n, window, *group, output_padding, output_shape)
        }
        Op::Constant | Op::Shape { .. } => Ok(()),
        Op::Unsupported { op_type, reason } => {
            Err(err(&format!("{op_type} is not supported: {reason}")))
        }
        other => Err(err(&format!("{} is not lowered to the device yet", op_name(other, n)))),
    }
}

/// A transposed convolution as an ordinary one: the input is spread with `stride - 1` zeros
/// between elements into a zero-filled buffer padded by `dilation·(k - 1)` less the declared
/// padding (a fill, then a copy into a strided view), and convolved with the weights flipped
/// in space and transposed in channels.
#[allow(clippy::too_many_arguments, reason = "the operation's attributes")]
fn conv_transpose(
    b: &mut Builder<'_>,
    idx: usize,
    n: &Node,
    window: &crate::ir::Window,
    group: usize,
    output_padding: &[usize],
    output_shape: &[usize],
) -> Result<(), LowerError> {
    let err = |m: &str| LowerError::at(&n.name, m.to_string());
    let x = b.layout(b.input(n, 0)?, false);
    let w = b.input(n, 1)?;
    let (xs, ws) = (b.shape(x), b.shape(w));
    if xs.len() != 4 || b.s.tens[x].dtype != DType::F32 {
        return Err(err("only 2-D float32 transposed convolutions are lowered"));
    }
    let wv =
        b.const_f32(w).ok_or_else(|| err("transposed convolution weights must be constant"))?;
    let (shape, begin, kernel, strides, dil) =
        crate::interp::conv_transpose_shape(&xs, &ws, window, group, output_padding, output_shape)
            .map_err(|e| err(&e))?;
    let (cin, cout_g) = (ws[0], ws[1]);
    let cin_g = cin / group;
    let cout = cout_g * group;
    // Where input element i lands in the spread buffer, per spatial axis.
    let mut len = [0usize; 2];
    let (mut first_in, mut first_at, mut count) = ([0usize; 2], [0usize; 2], [0usize; 2]);
    for a in 0..2 {
        let reach = dil[a] * (kernel[a] - 1);
        len[a] = shape[2 + a] + reach;
        let front = reach as i64 - begin[a] as i64;
        let s = strides[a] as i64;
        let i0 = if front >= 0 { 0 } else { (-front + s - 1) / s };
        let mut c = 0;
        while i0 + c < xs[2 + a] as i64 && (i0 + c) * s + front < len[a] as i64 {
            c += 1;
        }
        first_in[a] = i0 as usize;
        first_at[a] = (i0 * s + front).max(0) as usize;
        count[a] = c as usize;
    }
    let name = &n.name;
    let spread = b.temp(
        format!("{name}.spread"),
        vec![xs[0], xs[1], len[0], len[1]],
        DType::F32,
        false,
        Store::Arena,
    );
    b.step(Kernel::Fill { out: spread, value: 0 }, &format!("{name}:zeros"), None, vec![]);
    if count[0] > 0 && count[1] > 0 {
        let into = (0..2)
            .map(|a| ViewOp::Slice {
                axis: 2 + a,
                start: first_at[a],
                len: count[a],
                step: strides[a],
            })
            .collect();
        let from = (0..2)
            .map(|a| ViewOp::Slice { axis: 2 + a, start: first_in[a], len: count[a], step: 1 })
            .collect();
        let ew = Ew { out: spread, out_view: into, inputs: vec![(x, from)], prog: vec![], regs: 0 };
        b.step(Kernel::Elementwise(ew), &format!("{name}:spread"), None, vec![]);
    }
    // w'[o][i][a][c] = w[g·cin_g + i][o - g·cout_g][kh-1-a][kw-1-c]
    let (kh, kw) = (kernel[0], kernel[1]);
    let mut flipped = vec![0f32; cout * cin_g * kh * kw];
    for o in 0..cout {
        let g = o / cout_g;
        for i in 0..cin_g {
            for a in 0..kh {
                for c in 0..kw {
                    let src = (((g * cin_g + i) * cout_g + (o - g * cout_g)) * kh + (kh - 1 - a))
                        * kw
                        + (kw - 1 - c);
                    flipped[((o * cin_g + i) * kh + a) * kw + c] = wv[src];
                }
            }
        }
    }
    let w2 = b.temp(
        format!("{name}.w"),
        vec![cout, cin_g, kh, kw],
        DType::F32,
        false,
        Store::Const(f32_bytes(&flipped).into()),
    );
    let mut n2 = n.clone();
    n2.inputs[0] = Some(ValueId(spread.0));
    n2.inputs[1] = Some(ValueId(w2.0));
    n2.op = Op::Conv {
        window: crate::ir::Window {
            kernel: vec![kh, kw],
            strides: vec![1, 1],
            dilations: dil.clone(),
            pads: vec![0; 4],
            auto_pad: crate::ir::AutoPad::NotSet,
            ceil_mode: false,
        },
        group,
    };
    lower_node(b, idx, &n2)
}

fn op_name(_op: &Op, n: &Node) -> String {
    n.op_type.clone()
}

/// `max(0, min(1, a·x + b))` into register `dst` (then `x·that` into 0 for HardSwish).
fn hard_sigmoid(_a: f32, _b: f32, dst: usize, swish: bool) -> Vec<Micro> {
    let mut p = vec![
        Micro::Bin(BinOp::Mul, dst, Src::In(0), Src::Imm(0)),
        Micro::Bin(BinOp::Add, dst, Src::Reg(dst), Src::Imm(1)),
        Micro::Bin(BinOp::Max, dst, Src::Reg(dst), Src::Imm(2)),
        Micro::Bin(BinOp::Min, dst, Src::Reg(dst), Src::Imm(3)),
    ];
    if swish {
        p.push(Micro::Bin(BinOp::Mul, 0, Src::In(0), Src::Reg(dst)));
    }
    p
}

/// A temporary holding `x` with its dimensions permuted (new dimension `i` is old `perm[i]`,
/// as Transpose's), made by a copy kernel called `step`.
fn permuted(b: &mut Builder<'_>, x: T, perm: Vec<usize>, tag: &str, step: &str) -> T {
    let xs = b.shape(x);
    let shape = perm.iter().map(|p| xs[*p]).collect();
    let (name, dtype) = (format!("{}.{tag}", b.s.tens[x].name), b.s.tens[x].dtype);
    let t = b.temp(name, shape, dtype, false, Store::Arena);
    let ew = Ew {
        out: t,
        out_view: vec![],
        inputs: vec![(x, vec![ViewOp::Permute(perm)])],
        prog: vec![],
        regs: 0,
    };
    b.step(Kernel::Elementwise(ew), step, None, vec![]);
    t
}

fn copy_step(
    b: &mut Builder<'_>,
    name: &str,
    out: T,
    out_view: Vec<ViewOp>,
    x: T,
    in_view: Vec<ViewOp>,
) {
    let ew = Ew { out, out_view, inputs: vec![(x, in_view)], prog: vec![], regs: 0 };
    b.step(Kernel::Elementwise(ew), name, Some(out), vec![]);
}

fn ew_step(
    b: &mut Builder<'_>,
    n: &Node,
    prog: Vec<Micro>,
    regs: usize,
    imms: Vec<f32>,
) -> Result<(), LowerError> {
    let out = b.out(n, 0)?;
    let os = b.shape(out);
    if b.s.tens[out].dtype != DType::F32 {
        return Err(LowerError::at(&n.name, "only float32 element-wise operations are lowered"));
    }
    let ins: Vec<T> = n.inputs.iter().flatten().map(|v| b.t(*v)).collect();
    // The result follows a same-shaped NHWC input.
    let nhwc = os.len() == 4 && ins.iter().any(|t| b.s.tens[*t].nhwc && b.s.tens[*t].shape == os);
    b.s.tens[out].nhwc = nhwc;
    for t in &ins {
        if b.s.tens[*t].dtype != DType::F32 {
            return Err(LowerError::at(
                &n.name,
                "only float32 element-wise operations are lowered",
            ));
        }
    }
    let inputs = ins.iter().map(|t| (*t, vec![ViewOp::Broadcast(os.clone())])).collect();
    let ew = Ew { out, out_view: vec![], inputs, prog, regs };
    b.step(Kernel::Elementwise(ew), &n.name, Some(out), vec![f32_bytes(&imms)]);
    Ok(())
}

fn rowwise(
    b: &mut Builder<'_>,
    name: &str,
    x: T,
    out: T,
    ax: usize,
    kind: RowKind,
    consts: Vec<u8>,
) -> Result<(), LowerError> {
    let xs = b.shape(x);
    let rows: usize = xs[..ax].iter().product();
    let len: usize = xs[ax..].iter().product();
    if b.s.tens[x].dtype != DType::F32 {
        return Err(LowerError::at(name, "only float32 is lowered"));
    }
    let rw = Rw { input: x, out, rows, len, kind, affine: None, stats: [None, None] };
    b.step(Kernel::Rowwise(rw), name, Some(out), vec![consts]);
    Ok(())
}

fn push_mm(b: &mut Builder<'_>, mm: Mm, name: &str, end: T) -> Result<(), LowerError> {
    let mut params = mm.bias.clone();
    if let Act::Clip(lo, hi) = mm.act {
        params.extend([lo, hi]);
    }
    let packed = match mm.weights {
        Weights::Const => kernels::pack_weights(&mm, &b.s.cfg),
        Weights::Runtime { .. } => vec![],
    };
    b.step(Kernel::Matmul(mm), name, Some(end), vec![f32_bytes(&params), packed]);
    Ok(())
}

/// The memory plan's results.
pub(crate) struct MemPlan {
    /// Arena tensors: `(tensor, first step, last step)`.
    pub lifetimes: Vec<(T, usize, usize)>,
    pub(crate) consts: Vec<u8>,
    pub(crate) input_bytes: u64,
    pub(crate) output_bytes: u64,
    pub(crate) arena_bytes: u64,
    /// `(name, segment, offset, tensor)`.
    pub(crate) inputs: Vec<(String, u8, u64, T)>,
    pub(crate) outputs: Vec<(String, u8, u64, T)>,
}

fn align(x: u64) -> u64 {
    x.div_ceil(64) * 64
}

/// Places constants, inputs, outputs and the arena.
pub(crate) fn plan_memory(s: &mut Sched) -> Result<MemPlan, LowerError> {
    // Outputs: computed in place in the output segment when nothing reads them afterwards
    // and they are row-major; otherwise copied there at the end.
    let mut read = vec![false; s.tens.len()];
    for st in &s.steps {
        for t in st.uses().0 {
            read[s.root(t).index()] = true;
        }
    }
    let mut placed_out: Vec<T> = Vec::new();
    let mut outputs = Vec::new();
    let mut out_top = 0u64;
    for (name, t) in s.outputs.clone() {
        let tn = &s.tens[t];
        let direct = matches!(tn.store, Store::Arena)
            && !read[t.index()]
            && (!tn.nhwc || tn.layouts_agree())
            && !placed_out.contains(&t)
            && !s.steps.is_empty();
        let target = if direct {
            t
        } else {
            let c = s.tens.push(Tens {
                name: format!("{name}.out"),
                shape: tn.shape.clone(),
                dtype: tn.dtype,
                nhwc: false,
                store: Store::Arena,
                loc: None,
            });
            let ew =
                Ew { out: c, out_view: vec![], inputs: vec![(t, vec![])], prog: vec![], regs: 0 };
            s.steps.push(Step {
                kernel: Kernel::Elementwise(ew),
                name: format!("output:{name}"),
                output: None,
                consts: vec![],
                const_offs: vec![],
            });
            c
        };
        s.tens[target].loc = Some((emit::SEG_OUTPUT, out_top));
        placed_out.push(target);
        outputs.push((name, emit::SEG_OUTPUT, out_top, target));
        out_top = align(out_top + s.tens[target].bytes());
    }
    // Constants: tensors any step reads, then step constants.
    let mut consts: Vec<u8> = Vec::new();
    let mut used = vec![false; s.tens.len()];
    for st in &s.steps {
        let (r, w) = st.uses();
        for t in r.into_iter().chain(w) {
            used[s.root(t).index()] = true;
        }
    }
    for (i, is_used) in used.iter().enumerate() {
        let t = T(i as u32);
        if let Store::Const(bytes) = &s.tens[t].store
            && *is_used
        {
            let off = align(consts.len() as u64);
            consts.resize(off as usize, 0);
            consts.extend_from_slice(bytes);
            s.tens[t].loc = Some((emit::SEG_CONST, off));
        }
    }
    for st in &mut s.steps {
        for (i, c) in st.consts.iter().enumerate() {
            let off = align(consts.len() as u64);
            consts.resize(off as usize, 0);
            consts.extend_from_slice(c);
            st.const_offs[i] = off;
        }
    }
    // Inputs.
    let mut inputs = Vec::new();
    let mut in_top = 0u64;
    for (name, t) in s.inputs.clone() {
        s.tens[t].loc = Some((emit::SEG_INPUT, in_top));
        inputs.push((name, emit::SEG_INPUT, in_top, t));
        in_top = align(in_top + s.tens[t].bytes());
    }
    // Arena: lifetimes in steps, then first fit by decreasing size.
    let mut life: HashMap<T, (usize, usize)> = HashMap::new();
    for (i, st) in s.steps.iter().enumerate() {
        let (r, w) = st.uses();
        for t in r.into_iter().chain(w) {
            let root = s.root(t);
            if matches!(s.tens[root].store, Store::Arena) && s.tens[root].loc.is_none() {
                let e = life.entry(root).or_insert((i, i));
                e.0 = e.0.min(i);
                e.1 = e.1.max(i);
            }
        }
    }
    let mut lifetimes: Vec<(T, usize, usize)> = life.iter().map(|(t, l)| (*t, l.0, l.1)).collect();
    lifetimes.sort_unstable();
    let mut order: Vec<(T, (usize, usize))> = life.into_iter().collect();
    order.sort_by_key(|(t, l)| (std::cmp::Reverse(s.tens[*t].bytes()), l.0, *t));
    let mut placed: Vec<(u64, u64, usize, usize)> = Vec::new();
    let mut arena = 0u64;
    for (t, (a, z)) in order {
        let size = align(s.tens[t].bytes().max(1));
        let mut conflicts: Vec<(u64, u64)> =
            placed.iter().filter(|p| p.2 <= z && a <= p.3).map(|p| (p.0, p.1)).collect();
        conflicts.sort_unstable();
        let mut off = 0u64;
        for (o, e) in conflicts {
            if off + size <= o {
                break;
            }
            off = off.max(e);
        }
        placed.push((off, off + size, a, z));
        arena = arena.max(off + size);
        s.tens[t].loc = Some((emit::SEG_ARENA, off));
    }
    Ok(MemPlan {
        lifetimes,
        consts,
        input_bytes: in_top,
        output_bytes: out_top,
        arena_bytes: arena,
        inputs,
        outputs,
    })
}

impl Sched {
    /// The memory plan's invariants: every tensor a step touches has an address inside its
    /// segment, and no two arena tensors alive in the same step overlap.
    pub(crate) fn verify_memory(&self, mem: &MemPlan) -> Result<(), String> {
        for (i, st) in self.steps.iter().enumerate() {
            let (r, w) = st.uses();
            for t in r.into_iter().chain(w) {
                let root = self.root(t);
                let Some((seg, off)) = self.tens[root].loc else {
                    return Err(format!(
                        "step {i} (`{}`) uses `{}`, which has no address",
                        st.name, self.tens[t].name
                    ));
                };
                let size = match seg {
                    emit::SEG_ARENA => mem.arena_bytes,
                    emit::SEG_INPUT => mem.input_bytes,
                    emit::SEG_OUTPUT => mem.output_bytes,
                    _ => mem.consts.len() as u64,
                };
                if off + self.tens[t].bytes() > size {
                    return Err(format!("`{}` ends past its segment", self.tens[t].name));
                }
            }
        }
        for (k, &(a, a0, a1)) in mem.lifetimes.iter().enumerate() {
            for &(b, b0, b1) in &mem.lifetimes[k + 1..] {
                let ((_, oa), (_, ob)) =
                    (self.tens[a].loc.unwrap_or_default(), self.tens[b].loc.unwrap_or_default());
                let (ea, eb) = (oa + self.tens[a].bytes(), ob + self.tens[b].bytes());
                if a0 <= b1 && b0 <= a1 && oa < eb && ob < ea {
                    return Err(format!(
                        "arena tensors `{}` and `{}` are alive together (steps {a0}..={a1} and {b0}..={b1}) and overlap",
                        self.tens[a].name, self.tens[b].name
                    ));
                }
            }
        }
        Ok(())
    }

    /// The schedule as text: each kernel with the tensors it reads and writes (shape, layout,
    /// segment and offset once planned).
    pub(crate) fn dump(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let tensor = |t: T| {
            let tn = &self.tens[t];
            let layout = if tn.nhwc && !tn.layouts_agree() { " nhwc" } else { "" };
            let at = match self.tens[self.root(t)].loc {
                Some((seg, off)) => format!(" @seg{seg}+{off}"),
                None => String::new(),
            };
            format!("{}{:?}{layout}{at}", tn.name, tn.shape)
        };
        for (i, st) in self.steps.iter().enumerate() {
            let (r, w) = st.uses();
            let _ = writeln!(
                out,
                "{i:4} {:<8} {}\n       reads  {}\n       writes {}",
                st.kind().name(),
                st.name,
                r.iter().map(|t| tensor(*t)).collect::<Vec<_>>().join(", "),
                w.iter().map(|t| tensor(*t)).collect::<Vec<_>>().join(", ")
            );
        }
        out
    }
}
