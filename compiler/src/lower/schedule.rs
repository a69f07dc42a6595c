//! Scheduling: graph nodes become kernel steps, tensors get layouts and storage, and the DRAM
//! arena is planned by liveness.
//!
//! Layouts: a 4-D tensor that a convolution or pool produces is stored NHWC (channels
//! innermost, the order the matrix engine reduces over); element-wise results follow their
//! inputs; everything else is row-major. Conversions are copies through strided views,
//! inserted only where a kernel needs the other layout and the two differ in memory.

use std::collections::HashMap;
use std::sync::Arc;

use accelc_isa::{BinOp, DeviceConfig, UnOp};

use super::view::{View, ViewOp};
use super::{CompileOptions, LowerError, kernels};
use crate::interp::pads;
use crate::ir::{BinaryOp, DType, Graph, Node, Op, ReduceKind, UnaryOp, ValueId};

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
    pub(crate) fn layouts_agree(&self) -> bool {
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
    /// Logical weights `[cout][cin/groups][kh][kw]` for packing: little-endian element bytes
    /// of the activations' type.
    pub(crate) oihw: bytes::Bytes,
    pub(crate) bias: Vec<f32>,
    pub(crate) residual: Option<T>,
    pub(crate) act: Act,
    /// Integer arithmetic (int8/uint8 activations, int8 weights): `bias` is then unused.
    pub(crate) quant: Option<MmQuant>,
}

/// A quantized matrix kernel's epilogue: the int32 bias with the input zero point folded in
/// (`bias − x_zp · Σ w` per output channel, so the array multiplies raw inputs and padding is
/// filled with the zero point), then one requantisation record per output channel.
#[derive(Clone, Debug)]
pub(crate) struct MmQuant {
    /// The input zero point's byte (the padding value).
    pub(crate) pad_byte: u8,
    /// Per output channel.
    pub(crate) bias: Vec<i32>,
    /// Per output channel; none: the output is the int32 accumulator (ConvInteger).
    pub(crate) records: Vec<accelc_isa::requant::RequantRecord>,
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
    /// Integer arithmetic, with the input zero point's byte (the padding value): the step's
    /// constant 0 then holds the int32 taps (`[kh·kw][c]`) and one biased requantisation
    /// record per channel (the corrected int32 bias in it). Float: the bias (`[c]`), then the
    /// taps.
    pub(crate) quant: Option<u8>,
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

/// Per-tensor quantization (float32 to 8-bit) or dequantization (integer to float32) of a
/// dense tensor; input and output share their layout.
#[derive(Clone, Debug)]
pub(crate) struct Qk {
    pub(crate) input: T,
    pub(crate) out: T,
    pub(crate) scale: f32,
    pub(crate) zp: i32,
    pub(crate) dequant: bool,
    /// Per-axis parameters: the tensor as `[outer, n, inner]` (plain layout) with one scale
    /// and zero point per `n`, in the step's constant 0 (`n` f32 scales, `n` f32 and `n` s32
    /// zero points); `None`: per tensor (`scale`, `zp`).
    pub(crate) axis: Option<[usize; 3]>,
}

/// Table lookup on a dense 8-bit tensor (`Op::Lut`): the step's constant 0 holds the 256-byte
/// table.
#[derive(Clone, Debug)]
pub(crate) struct Lk {
    pub(crate) input: T,
    pub(crate) out: T,
}

/// Integer addition of two dense 8-bit tensors of one shape and layout (`Op::QAdd`): the
/// step's constant 0 holds the three requantisation records (for `a`, `b`, the sum; 16
/// bytes each, `accelc_isa::requant`).
#[derive(Clone, Debug)]
pub(crate) struct Qa {
    pub(crate) a: T,
    pub(crate) b: T,
    pub(crate) out: T,
}

/// A kernel step.
#[derive(Clone, Debug)]
pub(crate) enum Kernel {
    Quant(Qk),
    QAdd(Qa),
    Lut(Lk),
    Matmul(Box<Mm>),
    Depthwise(Dw),
    Pool(Pool),
    /// `quant`: 8-bit input summed to int32, requantised (`QGlobalAveragePool`); the step's
    /// constant 0 then holds the record and the sum's offset.
    GlobalPool {
        input: T,
        out: T,
        max: bool,
        img: [usize; 4],
        quant: bool,
    },
    Elementwise(Ew),
    Fill {
        out: T,
        value: u32,
    },
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
    /// Constant blobs (parameters first) and their offsets once planned.
    pub(crate) consts: Vec<Vec<u8>>,
    /// Constant weights packed when the blob is written, placed after `consts` (their offset
    /// is `const_offs[consts.len()]`).
    pub(crate) packed: Option<super::consts::Packed>,
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
            Kernel::Quant(_) | Kernel::QAdd(_) | Kernel::Lut(_) => LayerKind::Elementwise,
            Kernel::Rowwise(_) => LayerKind::Rowwise,
        }
    }

    /// Tensors read and written.
    pub(crate) fn uses(&self) -> (Vec<T>, Vec<T>) {
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
            Kernel::Quant(q) => (vec![q.input], vec![q.out]),
            Kernel::QAdd(q) => (vec![q.a, q.b], vec![q.out]),
            Kernel::Lut(l) => (vec![l.input], vec![l.out]),
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

pub(crate) struct Builder<'g> {
    pub(crate) g: &'g Graph,
    pub(crate) s: Sched,
    /// Consumers of each value (node indices).
    pub(crate) users: HashMap<ValueId, Vec<usize>>,
    /// Index of the node producing each value.
    pub(crate) producer: HashMap<ValueId, usize>,
    pub(crate) fused: Vec<bool>,
    /// Layout conversions already made: (tensor, to NHWC) → copy.
    pub(crate) converted: HashMap<(T, bool), T>,
    /// Whether to pack constant weights into the kernels' streaming order. The support check
    /// ([`schedule_all`]) only needs each kernel's verdict, and packing copies every weight.
    pub(crate) pack: bool,
}

pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Builder<'_> {
    pub(crate) fn t(&self, v: ValueId) -> T {
        T::of_value(v)
    }

    pub(crate) fn input(&self, n: &Node, i: usize) -> Result<T, LowerError> {
        n.inputs
            .get(i)
            .copied()
            .flatten()
            .map(|v| self.t(v))
            .ok_or_else(|| LowerError::at(&n.name, format!("input {i} is missing")))
    }

    pub(crate) fn opt_input(&self, n: &Node, i: usize) -> Option<T> {
        n.inputs.get(i).copied().flatten().map(|v| self.t(v))
    }

    pub(crate) fn constant(&self, t: T) -> Option<&[u8]> {
        match &self.s.tens[t].store {
            Store::Const(b) => Some(b),
            _ => None,
        }
    }

    /// A float32 constant's bytes, shared (no copy).
    pub(crate) fn const_f32_bytes(&self, t: T) -> Option<bytes::Bytes> {
        match &self.s.tens[t].store {
            Store::Const(b) if self.s.tens[t].dtype == DType::F32 => Some(b.clone()),
            _ => None,
        }
    }

    pub(crate) fn const_f32(&self, t: T) -> Option<Vec<f32>> {
        (self.s.tens[t].dtype == DType::F32).then(|| self.constant(t).map(f32s)).flatten()
    }

    pub(crate) fn const_i64(&self, t: T) -> Option<Vec<i64>> {
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

    /// A constant of any integer (or bool) type, widened.
    pub(crate) fn const_ints(&self, t: T) -> Option<Vec<i64>> {
        let tn = &self.s.tens[t];
        if tn.dtype == DType::F32 {
            return None;
        }
        let data = bytes::Bytes::copy_from_slice(self.constant(t)?);
        Some(crate::ir::Tensor { dtype: tn.dtype, shape: tn.shape.clone(), data }.i64s())
    }

    pub(crate) fn out(&self, n: &Node, i: usize) -> Result<T, LowerError> {
        n.outputs.get(i).map(|v| self.t(*v)).ok_or_else(|| LowerError::at(&n.name, "no output"))
    }

    pub(crate) fn shape(&self, t: T) -> Vec<usize> {
        self.s.tens[t].shape.clone()
    }

    pub(crate) fn temp(
        &mut self,
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        nhwc: bool,
        store: Store,
    ) -> T {
        self.s.tens.push(Tens { name, shape, dtype, nhwc, store, loc: None })
    }

    pub(crate) fn step(
        &mut self,
        kernel: Kernel,
        name: &str,
        output: Option<T>,
        consts: Vec<Vec<u8>>,
    ) {
        let output = output.map(|t| self.s.tens[t].name.clone());
        self.s.steps.push(Step {
            kernel,
            name: name.to_string(),
            output,
            const_offs: vec![0; consts.len()],
            consts,
            packed: None,
        });
    }

    /// `t` in the requested layout, converting by a copy if the bytes differ.
    pub(crate) fn layout(&mut self, t: T, nhwc: bool) -> T {
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
    pub(crate) fn sole_user(&self, t: T) -> Option<usize> {
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
    pub(crate) fn ready_before(&self, t: T, at: usize) -> bool {
        match self.producer.get(&ValueId(t.0)) {
            Some(p) => *p < at,
            None => true,
        }
    }

    /// Fuses an activation following `cur`, if any; returns it and the new end tensor.
    pub(crate) fn fuse_act(&mut self, cur: T, names: &mut Vec<String>) -> (Act, T) {
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
    pub(crate) fn fuse_residual(
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
    pub(crate) fn fuse_bias(
        &mut self,
        cur: T,
        cout: usize,
        bias: &mut [f32],
        names: &mut Vec<String>,
    ) -> T {
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

pub(crate) fn schedule_inner(
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
        pack: errors.is_none(),
    };
    for (i, n) in graph.nodes.iter().enumerate() {
        if b.fused[i] || n.op == Op::Constant {
            continue;
        }
        // Values already constant (folded) need no kernel.
        if n.outputs.iter().all(|o| graph.value(*o).constant.is_some()) {
            continue;
        }
        let untyped = |v: &ValueId| {
            let v = graph.value(*v);
            v.ty.is_none() && v.constant.is_none()
        };
        let result = match (&n.op, &errors) {
            (Op::Unsupported { reason, .. }, Some(_)) => {
                Err(LowerError::at(&n.name, format!("does not import: {reason}")))
            }
            (Op::Unsupported { .. }, None) => lower_node(&mut b, i, n),
            _ => match (
                n.inputs.iter().flatten().find(|v| untyped(v)),
                n.outputs.iter().find(|v| untyped(v)),
            ) {
                (Some(v), _) => Err(LowerError::at(
                    &n.name,
                    format!(
                        "input `{}` has no type (a node upstream does not import, or shape \
                         inference has not run)",
                        graph.value(*v).name
                    ),
                )),
                (None, Some(v)) => Err(LowerError::at(
                    &n.name,
                    format!(
                        "output `{}` has no type (shape inference has not run)",
                        graph.value(*v).name
                    ),
                )),
                (None, None) => lower_node(&mut b, i, n),
            },
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
                    && v.ty.as_ref().is_some_and(|t| crate::lower::device_dtype(t.dtype).is_some())
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
pub(crate) type WindowGeometry = ([usize; 2], [usize; 2], [usize; 4]);

pub(crate) fn window_geometry(
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

pub(crate) fn lower_node(b: &mut Builder<'_>, idx: usize, n: &Node) -> Result<(), LowerError> {
    (crate::ops::def(&n.op).lower)(b, idx, n)
}

/// A temporary holding `x` with its dimensions permuted (new dimension `i` is old `perm[i]`,
/// as Transpose's), made by a copy kernel called `step`.
pub(crate) fn permuted(b: &mut Builder<'_>, x: T, perm: Vec<usize>, tag: &str, step: &str) -> T {
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

pub(crate) fn copy_step(
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

pub(crate) fn ew_step(
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

pub(crate) fn rowwise(
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

pub(crate) fn push_mm(b: &mut Builder<'_>, mm: Mm, name: &str, end: T) -> Result<(), LowerError> {
    // The matrix engine multiplies the activations' type only where the device has it (a
    // configuration built without the f32 matmul feature runs no float matmul).
    let dtype = crate::lower::device_dtype(b.s.tens[mm.input].dtype)
        .ok_or_else(|| LowerError::at(name, "int64 operands are not lowered"))?;
    if !b.s.cfg.matmul_supports(dtype) {
        return Err(LowerError::at(
            name,
            format!(
                "`{}` has no {dtype} matmul feature (features {:#x}){}",
                b.s.cfg.name,
                b.s.cfg.features,
                if dtype == accelc_isa::Dtype::F32 {
                    "; in a quantized model, a float convolution or matrix product no \
                     quantization rule took (see the book's lowering page, \"Quantized models\")"
                } else {
                    ""
                }
            ),
        ));
    }
    // Channel-streaming integer convolutions take their own weight order, and uint8 ones a
    // bias for int8 activations (`kernels::cstream`).
    let cstream = kernels::cstream_plan(&mm, &b.s.cfg, dtype, b.s.tens[mm.out].elem());
    let params = match &mm.quant {
        Some(q) => {
            let bias = match (&cstream, dtype) {
                (Some(_), accelc_isa::Dtype::U8) => kernels::cstream_bias(&mm, &q.bias)
                    .ok_or_else(|| LowerError::at(name, "internal: channel-streaming bias"))?,
                _ => q.bias.clone(),
            };
            if q.records.is_empty() {
                // The int32 accumulator is the output: the bias alone, added on the vector
                // engine.
                bias.iter().flat_map(|b| b.to_le_bytes()).collect()
            } else {
                // One biased record per output channel (`vx.requant bias=1` adds it).
                q.records.iter().zip(&bias).flat_map(|(r, b)| r.to_bytes_with_bias(*b)).collect()
            }
        }
        None => {
            let mut params = mm.bias.clone();
            if let Act::Clip(lo, hi) = mm.act {
                params.extend([lo, hi]);
            }
            f32_bytes(&params)
        }
    };
    // Constant weights are packed only when the blob is written (`consts::ConstImage`): both
    // orders are permutations of the logical weights, so their size is known now.
    let packed = match mm.weights {
        Weights::Const if b.pack => {
            let (cfg, w, e) = (b.s.cfg.clone(), mm.clone(), b.s.tens[mm.input].elem() as usize);
            let pack: super::consts::PackFn = match cstream {
                Some(p) => Arc::new(move |sink| kernels::cstream_pack(&w, &cfg, &p, sink)),
                None => Arc::new(move |sink| kernels::pack_weights(&w, &cfg, e, sink)),
            };
            Some(super::consts::Packed { len: mm.oihw.len() as u64, pack })
        }
        Weights::Const | Weights::Runtime { .. } => None,
    };
    let consts = if packed.is_some() { vec![params] } else { vec![params, vec![]] };
    b.step(Kernel::Matmul(Box::new(mm)), name, Some(end), consts);
    if let Some(st) = b.s.steps.last_mut()
        && packed.is_some()
    {
        st.const_offs.push(0);
        st.packed = packed;
    }
    Ok(())
}

impl Sched {
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
