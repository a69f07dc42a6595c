//! The graph IR: values and nodes in arenas addressed by typed ids, ops with typed attributes,
//! tensors whose bytes are shared with the loaded model file.

use std::fmt;

use bytes::Bytes;

/// Element types the compiler knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer (shapes and indices).
    I64,
    /// Boolean, one byte.
    Bool,
    /// Signed 16-bit integer (host only).
    I16,
    /// Unsigned 16-bit integer (host only).
    U16,
    /// Unsigned 32-bit integer (host only).
    U32,
    /// Unsigned 64-bit integer (host only), held as its bit pattern in `i64`.
    U64,
    /// IEEE binary16, a storage type: ops compute in `f32` (see [`DType::storage_float`]).
    F16,
    /// bfloat16, a storage type like [`DType::F16`].
    BF16,
    /// IEEE binary64: graph inputs, outputs and constants, converted by `Cast` only.
    F64,
}

impl DType {
    /// The ONNX `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::Bool => 9,
            DType::U16 => 4,
            DType::I16 => 5,
            DType::U32 => 12,
            DType::F16 => 10,
            DType::F64 => 11,
            DType::U64 => 13,
            DType::BF16 => 16,
        }
    }

    /// The type for an ONNX data type code, if supported.
    pub fn from_onnx(code: i32) -> Option<DType> {
        Some(match code {
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            6 => DType::I32,
            7 => DType::I64,
            9 => DType::Bool,
            4 => DType::U16,
            5 => DType::I16,
            12 => DType::U32,
            10 => DType::F16,
            11 => DType::F64,
            13 => DType::U64,
            16 => DType::BF16,
            _ => return None,
        })
    }

    /// The name ONNX uses for a data type code (also for unsupported ones).
    pub fn onnx_name(code: i32) -> &'static str {
        const NAMES: [&str; 29] = [
            "undefined",
            "float",
            "uint8",
            "int8",
            "uint16",
            "int16",
            "int32",
            "int64",
            "string",
            "bool",
            "float16",
            "double",
            "uint32",
            "uint64",
            "complex64",
            "complex128",
            "bfloat16",
            "float8e4m3fn",
            "float8e4m3fnuz",
            "float8e5m2",
            "float8e5m2fnuz",
            "uint4",
            "int4",
            "float4e2m1",
            "float8e8m0",
            "uint2",
            "int2",
            "float6e2m3",
            "float6e3m2",
        ];
        usize::try_from(code).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or("unknown")
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }

    /// An integer computed in `i64` as the value of this type holds it: two's-complement wrap
    /// to the width, zero-extended for unsigned types; bool as its low bit; `F32` unchanged.
    pub fn wrap(self, v: i64) -> i64 {
        match self {
            DType::I8 => i64::from(v as i8),
            DType::U8 => i64::from(v as u8),
            DType::I16 => i64::from(v as i16),
            DType::U16 => i64::from(v as u16),
            DType::I32 => i64::from(v as i32),
            DType::U32 => i64::from(v as u32),
            DType::Bool => v & 1,
            DType::I64 | DType::U64 | DType::F32 => v,
            // Bit patterns of the storage floats.
            DType::F16 | DType::BF16 => i64::from(v as u16),
            DType::F64 => v,
        }
    }

    /// The smallest and largest values of an integer type (bool: 0 and 1).
    pub fn int_range(self) -> (i64, i64) {
        match self {
            DType::I8 => (i64::from(i8::MIN), i64::from(i8::MAX)),
            DType::U8 => (0, 255),
            DType::I16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
            DType::U16 => (0, i64::from(u16::MAX)),
            DType::I32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
            DType::U32 => (0, i64::from(u32::MAX)),
            DType::Bool => (0, 1),
            // uint64's upper half does not fit `i64`: callers that clamp to this range
            // (saturating casts) handle uint64 themselves.
            DType::U64 => (0, i64::MAX),
            _ => (i64::MIN, i64::MAX),
        }
    }

    /// Whether the type is unsigned (bool included).
    pub fn is_unsigned(self) -> bool {
        matches!(self, DType::U8 | DType::U16 | DType::U32 | DType::U64 | DType::Bool)
    }

    /// Whether the type is a float other than `f32`: [`DType::F16`] and [`DType::BF16`]
    /// (storage types: each op converts them to `f32` exactly, computes in `f32` and rounds
    /// its float results back, to nearest even, as onnxruntime's CPU kernels do for most
    /// float16 ops) and [`DType::F64`] (only `Cast` converts it; arithmetic in double is not
    /// supported). Arrays and tensors of these types hold their bit patterns.
    pub fn storage_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F64)
    }

    /// Whether the type is a float type.
    pub fn is_float(self) -> bool {
        self == DType::F32 || self.storage_float()
    }

    /// The value of bit pattern `bits` of a float type, exactly, as `f64`.
    pub fn float_from_bits(self, bits: i64) -> f64 {
        match self {
            DType::F16 => half::f16::from_bits(bits as u16).to_f64(),
            DType::BF16 => half::bf16::from_bits(bits as u16).to_f64(),
            DType::F64 => f64::from_bits(bits as u64),
            _ => f64::from(f32::from_bits(bits as u32)),
        }
    }

    /// The bit pattern of `v` rounded to a storage float type, to nearest even (infinities
    /// beyond the range, subnormals kept, NaN kept NaN). float16 and bfloat16 round once: `v`
    /// goes to f32 rounding to odd (exact when `v` is an f32), whose 24 bits leave the second
    /// rounding, to nearest even, correct (Boldo and Melquiond's rule); the host does the same.
    pub fn float_to_bits(self, v: f64) -> i64 {
        match self {
            DType::F16 => i64::from(half::f16::from_f32(f32_round_to_odd(v)).to_bits()),
            DType::BF16 => i64::from(half::bf16::from_f32(f32_round_to_odd(v)).to_bits()),
            DType::F64 => v.to_bits() as i64,
            _ => i64::from((v as f32).to_bits()),
        }
    }

    /// Little-endian bytes of integer value `v` in this type's width.
    pub fn int_bytes(self, v: i64) -> Vec<u8> {
        v.to_le_bytes()[..self.size()].to_vec()
    }

    /// The name in the ONNX text syntax.
    pub fn name(self) -> &'static str {
        DType::onnx_name(self.onnx_code())
    }
}

/// `v` as an f32 rounded to odd: exact values stay, an inexact one is truncated toward zero
/// and its last bit set (NaN stays NaN; beyond the range, the largest finite value with that
/// bit, which a narrower type's rounding still takes to infinity).
pub fn f32_round_to_odd(v: f64) -> f32 {
    let r = v as f32;
    if r.is_nan() || f64::from(r) == v {
        return r;
    }
    let mut bits = r.to_bits();
    if f64::from(r).abs() > v.abs() {
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor with its data: dense, row-major, little-endian bytes (shared, never copied
/// needlessly).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// `product(shape) · dtype.size()` bytes.
    pub data: Bytes,
}

impl Tensor {
    /// Elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as f32 (for `F32` tensors).
    pub fn f32s(&self) -> Vec<f32> {
        self.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }

    /// The elements as i64: integer and bool values; the bit patterns of storage floats
    /// ([`DType::storage_float`]).
    pub fn i64s(&self) -> Vec<i64> {
        match self.dtype {
            DType::I64 => self
                .data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect(),
            DType::I32 => self
                .data
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            DType::I8 => self.data.iter().map(|b| i64::from(*b as i8)).collect(),
            DType::U8 | DType::Bool => self.data.iter().map(|b| i64::from(*b)).collect(),
            DType::I16 => self
                .data
                .chunks_exact(2)
                .map(|b| i64::from(i16::from_le_bytes([b[0], b[1]])))
                .collect(),
            DType::U16 => self
                .data
                .chunks_exact(2)
                .map(|b| i64::from(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            DType::U32 => self
                .data
                .chunks_exact(4)
                .map(|b| i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            DType::U64 | DType::F64 => self
                .data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect(),
            DType::F16 | DType::BF16 => self
                .data
                .chunks_exact(2)
                .map(|b| i64::from(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            DType::F32 => self.f32s().into_iter().map(|v| v as i64).collect(),
        }
    }

    /// An f32 tensor.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Tensor {
        Tensor {
            dtype: DType::F32,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// An i64 tensor.
    pub fn from_i64(shape: Vec<usize>, values: &[i64]) -> Tensor {
        Tensor {
            dtype: DType::I64,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// A value's type: element type and static shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<usize>,
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(usize::to_string).collect();
        write!(f, "{}[{}]", self.dtype, dims.join(","))
    }
}

/// Identifies a value of a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// Identifies a node of a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// A value: a graph input, a constant, or a node output.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// Name (unique in the graph).
    pub name: String,
    /// Type, once known.
    pub ty: Option<TensorType>,
    /// Contents, for constants and initializers.
    pub constant: Option<Tensor>,
}

/// Auto-padding modes of convolution and pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    /// Explicit `pads`.
    NotSet,
    /// Pad so the output is `ceil(input / stride)`, extra padding at the end.
    SameUpper,
    /// As `SameUpper`, extra padding at the start.
    SameLower,
    /// No padding.
    Valid,
}

/// Window attributes shared by convolution and pooling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Kernel spatial shape (empty: from the weights).
    pub kernel: Vec<usize>,
    /// Strides per spatial axis.
    pub strides: Vec<usize>,
    /// Dilations per spatial axis.
    pub dilations: Vec<usize>,
    /// Begin pads then end pads.
    pub pads: Vec<usize>,
    /// Auto-padding.
    pub auto_pad: AutoPad,
    /// Pooling: round the output size up.
    pub ceil_mode: bool,
}

/// Operations with typed attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `alpha · A' · B' + beta · C`.
    Gemm {
        /// Scale of the product.
        alpha: f32,
        /// Scale of C.
        beta: f32,
        /// Transpose A.
        trans_a: bool,
        /// Transpose B.
        trans_b: bool,
    },
    /// Batched matrix product with broadcasting.
    MatMul,
    /// Element-wise binary arithmetic with broadcasting.
    Binary(BinaryOp),
    /// Element-wise unary function.
    Unary(UnaryOp),
    /// Element-wise combination of one or more inputs with broadcasting (Sum, Mean, Max, Min),
    /// accumulated left to right as the ONNX reference does.
    Variadic(VariadicOp),
    /// `max(x, alpha · x)`.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// Clamp (bounds from optional inputs, or attributes in old opsets).
    Clip {
        /// Lower bound from attributes (opset < 11).
        min: Option<f32>,
        /// Upper bound from attributes (opset < 11).
        max: Option<f32>,
    },
    /// `max(0, min(1, alpha · x + beta))`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// GELU (`approximate = "none"` or `"tanh"`).
    Gelu {
        /// Use the tanh approximation.
        tanh: bool,
    },
    /// Softmax along an axis.
    Softmax {
        /// The axis.
        axis: i64,
    },
    /// Log-softmax along an axis.
    LogSoftmax {
        /// The axis.
        axis: i64,
    },
    /// Layer normalisation over the trailing axes from `axis`.
    LayerNorm {
        /// First normalised axis.
        axis: i64,
        /// Added to the variance.
        epsilon: f32,
    },
    /// Batch normalisation, inference form.
    BatchNorm {
        /// Added to the variance.
        epsilon: f32,
    },
    /// N-d convolution.
    Conv {
        /// Window attributes.
        window: Window,
        /// Groups.
        group: usize,
    },
    /// Max or average pooling.
    Pool {
        /// Max (or average).
        max: bool,
        /// Window attributes.
        window: Window,
        /// Average pooling counts padding.
        count_include_pad: bool,
    },
    /// Lp pooling: `(Σ |x|^p)^(1/p)` over each window (padding contributes 0).
    LpPool {
        /// Window attributes.
        window: Window,
        /// The exponent (≥ 1).
        p: i64,
    },
    /// Global average or max pooling.
    GlobalPool {
        /// Max (or average).
        max: bool,
    },
    /// Reshape to a shape given as an input.
    Reshape {
        /// A 0 in the shape means an empty dimension (not "copy").
        allowzero: bool,
    },
    /// Flatten to 2-D at an axis.
    Flatten {
        /// The axis.
        axis: i64,
    },
    /// Permute axes.
    Transpose {
        /// The permutation (empty: reverse).
        perm: Vec<i64>,
    },
    /// Concatenate along an axis.
    Concat {
        /// The axis.
        axis: i64,
    },
    /// Gather along an axis.
    Gather {
        /// The axis.
        axis: i64,
    },
    /// Remove axes of size 1 (axes from an input or attribute).
    Squeeze {
        /// Axes from attributes (opset < 13).
        axes: Option<Vec<i64>>,
    },
    /// Insert axes of size 1.
    Unsqueeze {
        /// Axes from attributes (opset < 13).
        axes: Option<Vec<i64>>,
    },
    /// Reduction over axes.
    Reduce {
        /// The reduction.
        op: ReduceKind,
        /// Axes from attributes (opsets before they became inputs).
        axes: Option<Vec<i64>>,
        /// Keep reduced axes as size 1.
        keepdims: bool,
        /// With no axes: reduce nothing (instead of everything).
        noop_with_empty_axes: bool,
    },
    /// The index of the largest (or smallest) element along an axis, as int64.
    ArgReduce {
        /// Largest (else smallest).
        max: bool,
        /// The axis.
        axis: i64,
        /// Keep the axis as size 1.
        keepdims: bool,
        /// Of equal extremes, the last index (else the first).
        last: bool,
    },
    /// Type conversion.
    Cast {
        /// Target type.
        to: DType,
    },
    /// `saturate(round_half_even(x / scale) + zero_point)`, per tensor or per `axis`; the
    /// output type is the zero point's (`u8` without one).
    QuantizeLinear {
        /// The axis of per-axis scales.
        axis: i64,
    },
    /// `(x - zero_point) · scale` as f32, per tensor or per `axis`.
    DequantizeLinear {
        /// The axis of per-axis scales.
        axis: i64,
    },
    /// Padding of every axis (pads, constant value and axes as inputs; attributes before
    /// opset 11).
    Pad {
        /// How padded elements are filled.
        mode: PadMode,
        /// Pads from attributes (opset < 11).
        pads: Option<Vec<i64>>,
        /// Constant value from attributes (opset < 11).
        value: f32,
    },
    /// Split along an axis into several outputs.
    Split {
        /// The axis.
        axis: i64,
        /// Sizes from attributes (opset < 13).
        split: Option<Vec<i64>>,
    },
    /// Integer matrix product with zero points: `(A - a_zp) · (B - b_zp)` in int32.
    MatMulInteger,
    /// Quantized matrix product: int8/uint8 in and out, scales and zero points as inputs.
    QLinearMatMul,
    /// Integer convolution with zero points, int32 out.
    ConvInteger {
        /// Window attributes.
        window: Window,
        /// Groups.
        group: usize,
    },
    /// Quantized convolution: int8/uint8 in and out, scales and zero points as inputs.
    QLinearConv {
        /// Window attributes.
        window: Window,
        /// Groups.
        group: usize,
    },
    /// A quantized convolution in the device's integer arithmetic, made by the optimizer's
    /// `qdq-conv` and `qdq-gemm` rules and by `legalize` from the explicit integer operators
    /// (never imported). Inputs: `x` (int8/uint8, NCHW), `w` (int8 `[Cout, Cin/group, kh,
    /// kw]`), `bias` (int32 `[Cout]`), `rq` (int32 `[Cout, 2]` or `[1, 2]`: a
    /// requantisation multiplier and shift per output channel; absent when `out` is int32).
    /// Per output element, `acc = Σ (x − x_zp) · w + bias` exactly in int32, then
    /// `clamp(y_zp + rdbp(srdhm(acc, multiplier), shift), lo, hi)` in `out`
    /// (`accelc_isa::requant`, the book's numerics page), or `acc` itself for an int32 `out`.
    QConv {
        /// Window attributes.
        window: Window,
        /// Groups.
        group: usize,
        /// The input's zero point.
        x_zp: i32,
        /// The output's zero point.
        y_zp: i32,
        /// Lower clamp of the output (a fused Relu or Clip raises it).
        lo: i32,
        /// Upper clamp of the output.
        hi: i32,
        /// The output type (int8 or uint8).
        out: DType,
    },
    /// Global average pooling of 8-bit values, made by the optimizer's `qdq-gap` rule (never
    /// imported). Inputs: `x` (int8/uint8, NCHW) and `rq` (int32 `[1, 2]`: the multiplier and
    /// shift of `x_scale / (y_scale · H·W)`). Per image and channel,
    /// `clamp(y_zp + R(Σ x − H·W·x_zp))` in `out` (`accelc_isa::requant`), as onnxruntime's
    /// QLinearGlobalAveragePool rounds in fixed point.
    QGlobalAveragePool {
        /// The input's zero point.
        x_zp: i32,
        /// The output's zero point.
        y_zp: i32,
        /// The output type (int8 or uint8).
        out: DType,
    },
    /// Table lookup on 8-bit values, made by the optimizer's `qdq-lut` rule (never imported).
    /// Inputs: `x` (int8/uint8) and `table` (256 values of the output type, int8/uint8):
    /// `y = table[b]` for the bit pattern `b` of each `x` as an unsigned byte.
    Lut,
    /// Integer addition of two quantized tensors of one shape, made by the optimizer's
    /// `qdq-add` rule (never imported). Inputs: `a`, `b` (int8/uint8) and `rq` (int32
    /// `[3, 2]`: a requantisation multiplier and shift for `a`, `b` and the sum). Each input
    /// `v` is scaled on its own to a common fixed-point grid finer than the output's step,
    /// `t_v = R_v(v) − R_v(v_zp)` in int32 (`R_v` the record `rq[v]` with zero point 0), the
    /// two added with int32 saturation, and the sum requantised,
    /// `clamp(y_zp + R_out(t_a + t_b), lo, hi)` in `out` (`accelc_isa::requant`, the book's
    /// numerics page, "Integer addition").
    QAdd {
        /// The zero point of `a`.
        a_zp: i32,
        /// The zero point of `b`.
        b_zp: i32,
        /// The output's zero point.
        y_zp: i32,
        /// Lower clamp of the output (a fused Relu or Clip raises it).
        lo: i32,
        /// Upper clamp of the output.
        hi: i32,
        /// The output type (int8 or uint8).
        out: DType,
    },
    /// Transposed convolution.
    ConvTranspose {
        /// Window attributes.
        window: Window,
        /// Groups.
        group: usize,
        /// Extra size added at the end of each spatial axis.
        output_padding: Vec<usize>,
        /// Explicit output spatial shape (pads then derived).
        output_shape: Vec<usize>,
    },
    /// Nearest, linear or cubic resizing (scales or sizes as inputs).
    Resize {
        /// The interpolation.
        mode: ResizeMode,
        /// How output coordinates map to input coordinates.
        coords: ResizeCoords,
        /// Rounding of nearest-neighbour coordinates.
        nearest: NearestMode,
        /// The axes `scales`/`sizes` name (`None`: every axis, in order).
        axes: Option<Vec<i64>>,
        /// How `sizes` is honoured.
        policy: AspectPolicy,
    },
    /// Pass-through.
    Identity,
    /// A constant tensor.
    Constant,
    /// The input's shape (dimensions `start..end`) as an int64 vector.
    Shape {
        /// First dimension (negative counts from the end).
        start: i64,
        /// One past the last dimension (`None`: the rank).
        end: Option<i64>,
    },
    /// Slice with starts, ends, axes and steps as inputs (or attributes before opset 10).
    Slice {
        /// Starts, ends and axes from attributes (opset < 10).
        attrs: Option<SliceAttrs>,
    },
    /// `data[i with axis replaced by indices[i]]` for every position `i` of the indices.
    GatherElements {
        /// The axis.
        axis: i64,
    },
    /// Slices of the data addressed by index tuples (the last indices axis).
    GatherND {
        /// Leading axes shared by the data and the indices.
        batch_dims: usize,
    },
    /// The data with `updates[i]` written (or combined) at `i` with the axis replaced by
    /// `indices[i]`, in index order.
    ScatterElements {
        /// The axis.
        axis: i64,
        /// How an update combines with the element.
        reduction: ScatterReduction,
    },
    /// The data with slices addressed by index tuples replaced by (or combined with) updates.
    ScatterND {
        /// How an update combines with the element.
        reduction: ScatterReduction,
    },
    /// `values[1]` where the position along `axis` equals the index, else `values[0]`; the
    /// depth is input 1.
    OneHot {
        /// The new axis.
        axis: i64,
    },
    /// The upper (or lower) triangle of the last two axes, shifted by the diagonal offset `k`
    /// (input 1); the rest zero.
    Trilu {
        /// Upper (else lower).
        upper: bool,
    },
    /// The input repeated along each axis (repeats as input 1).
    Tile,
    /// NCHW depth moved into blocks of space.
    DepthToSpace {
        /// The block edge.
        blocksize: usize,
        /// Column-row-depth order (else depth-column-row, DCR).
        crd: bool,
    },
    /// NCHW blocks of space moved into depth.
    SpaceToDepth {
        /// The block edge.
        blocksize: usize,
        /// Column-row-depth order (else depth-column-row, DCR).
        crd: bool,
    },
    /// Running sums (CumSum) or products (CumProd) along an axis (input 1).
    CumSum {
        /// Each sum excludes its own element.
        exclusive: bool,
        /// Summed from the end.
        reverse: bool,
        /// Products (CumProd-26) instead of sums.
        product: bool,
    },
    /// NegativeLogLikelihoodLoss, or with `softmax` SoftmaxCrossEntropyLoss (log-softmax over
    /// axis 1 first; a second output holds the log-probabilities).
    Loss {
        /// The log-softmax first (SoftmaxCrossEntropyLoss).
        softmax: bool,
        /// How the per-position losses combine.
        reduction: LossReduction,
        /// A target value that contributes nothing.
        ignore_index: Option<i64>,
    },
    /// A normalization over axis groups, or a selection along an axis (see [`NormKind`]).
    Normalize(NormKind),
    /// Scaled dot-product attention (ONNX Attention-23 to 25).
    Attention(Box<AttentionAttrs>),
    /// The number of elements of the input, as an int64 scalar.
    Size,
    /// The input broadcast (numpy rules, both ways) with a shape given as input 1.
    Expand,
    /// A tensor of the shape given as input 0 filled with `value`'s one element.
    ConstantOfShape {
        /// The fill value (one element; its type is the output's). Default: float 0.
        value: Tensor,
    },
    /// `start + i·delta` for `i` in `0..max(ceil((limit − start) / delta), 0)`, the three
    /// scalars given as inputs.
    Range,
    /// Ones on diagonal `k` of a 2-D tensor shaped like the input, zeros elsewhere (ONNX
    /// EyeLike).
    EyeLike {
        /// The output type (`None`: the input's).
        dtype: Option<DType>,
        /// The diagonal: 0 the main one, positive above it.
        k: i64,
    },
    /// A window function of the length given as input 0 (ONNX HannWindow, HammingWindow,
    /// BlackmanWindow): `w[n]` for `n` in `0..size`, with `N = size` (periodic) or `size − 1`.
    Window {
        /// The window.
        kind: WindowKind,
        /// Periodic (else symmetric).
        periodic: bool,
    },
    /// Cast to the data type of input 1.
    CastLike,
    /// Dropout at inference (or with ratio 0): the input unchanged, and a mask of trues.
    Dropout,
    /// An element-wise comparison of two broadcast operands of one type; a bool result.
    Compare(CmpOp),
    /// Logical (`And`, `Or`, `Xor` of bools) or bitwise (`BitwiseAnd`... of integers).
    Logic {
        /// The operation.
        op: LogicOp,
        /// Bitwise on integers (else logical on bools).
        bitwise: bool,
    },
    /// `a << b` or `a >> b` of unsigned integers (shifts of the width or more give 0).
    BitShift {
        /// Left (else right).
        left: bool,
    },
    /// A parameterised activation.
    Activation {
        /// Which.
        kind: ActKind,
        /// The first parameter (see [`ActKind`]).
        alpha: f32,
        /// The second parameter (see [`ActKind`]).
        beta: f32,
    },
    /// Whether each element is an infinity of the selected signs (a bool result).
    IsInf {
        /// Detect +inf.
        positive: bool,
        /// Detect −inf.
        negative: bool,
    },
    /// `x < 0 ? slope·x : x`, the slope broadcast to `x`.
    PRelu,
    /// `cond ? x : y`, the three broadcast together.
    Where,
    /// The input cropped or zero-padded, centred, to the shape given as input 1 on `axes`.
    CenterCropPad {
        /// The axes input 1 names (`None`: every axis).
        axes: Option<Vec<i64>>,
    },
    /// `Swish_alpha(a) · b` of two inputs of one shape (ONNX SwiGLU-28).
    SwiGlu {
        /// Swish's alpha.
        alpha: f32,
    },
    /// Rotary position embedding (ONNX RotaryEmbedding): inputs X, cos_cache, sin_cache and
    /// optional position_ids.
    Rotary {
        /// Pairs are adjacent features (else the two halves of the rotated features).
        interleaved: bool,
        /// Heads of a 3-D input (`[batch, seq, heads·head_size]`).
        num_heads: usize,
        /// Rotated features per head (0: all).
        rotary_dim: usize,
    },
    /// A recurrent layer (ONNX RNN, GRU, LSTM) with the default activations.
    Recurrent {
        /// The cell.
        cell: Cell,
        /// Which way the sequence is read.
        direction: RnnDirection,
        /// Hidden units (0: R's last dimension).
        hidden: usize,
        /// Pre-activations are clipped to `±clip` when given.
        clip: Option<f32>,
        /// `layout` 1: batch before sequence in `X`, `Y` and the states.
        batch_first: bool,
    },
    /// Samples the input at the grid's points (ONNX GridSample).
    GridSample {
        /// The interpolation.
        mode: GridMode,
        /// What points outside the input read.
        padding: GridPadding,
        /// Whether −1 and 1 are the centres of the end elements (else their outer edges).
        align_corners: bool,
    },
    /// An op the compiler does not support; kept so the model still imports and `check` can
    /// list it.
    Unsupported {
        /// The ONNX op type.
        op_type: String,
        /// Why.
        reason: String,
    },
}

/// The attributes of an opset < 10 `Slice`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceAttrs {
    /// Start indices.
    pub starts: Vec<i64>,
    /// End indices (exclusive).
    pub ends: Vec<i64>,
    /// Axes (default: the first ones).
    pub axes: Option<Vec<i64>>,
}

/// `Resize` coordinate transformations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeCoords {
    /// `(x + 0.5) / scale - 0.5`.
    HalfPixel,
    /// Half-pixel, centred so the output is symmetric.
    HalfPixelSymmetric,
    /// Half-pixel, but 0 when the output length is 1.
    PytorchHalfPixel,
    /// Corners of input and output aligned.
    AlignCorners,
    /// `x / scale`.
    Asymmetric,
}

/// Window functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// `sin²(πn/N)`.
    Hann,
    /// `α − (1 − α)·cos(2πn/N)`, α = 25/46.
    Hamming,
    /// `0.42 − 0.5·cos(2πn/N) + 0.08·cos(4πn/N)`.
    Blackman,
}

/// The cell of a recurrent layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// `h = tanh(x·Wᵀ + h·Rᵀ + b)`.
    Rnn,
    /// Gated recurrent unit (gates z, r, h).
    Gru {
        /// Apply the reset gate after the recurrent product (else before).
        linear_before_reset: bool,
    },
    /// Long short-term memory (gates i, o, f, c; peepholes).
    Lstm,
}

/// The direction of a recurrent layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RnnDirection {
    /// First step to last.
    Forward,
    /// Last step to first.
    Reverse,
    /// Both, as two directions of the outputs.
    Bidirectional,
}

/// `GridSample` interpolation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GridMode {
    /// The nearest element (coordinates rounded half to even).
    Nearest,
    /// Linear in every spatial axis.
    Linear,
    /// Keys' cubic convolution (a = −0.75) in every spatial axis.
    Cubic,
}

/// `GridSample` padding: what a tap outside the input reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GridPadding {
    /// Zero.
    Zeros,
    /// The nearest edge element.
    Border,
    /// The input reflected at its bounds.
    Reflection,
}

/// `Resize` interpolation modes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeMode {
    /// Nearest neighbour (see [`NearestMode`]).
    Nearest,
    /// Linear in each resized axis.
    Linear,
    /// Cubic convolution in each resized axis (Keys' kernel with coefficient `a`).
    Cubic {
        /// `cubic_coeff_a` (-0.75 by default, as TensorFlow; PyTorch uses -0.5).
        a: f32,
        /// Weights of taps outside the input set to 0 and the rest renormalised.
        exclude_outside: bool,
    },
}

/// `Resize` `keep_aspect_ratio_policy`: how a `sizes` input is honoured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspectPolicy {
    /// Each axis gets its size.
    Stretch,
    /// One scale for the resized axes, the smallest of `size / input` (no axis larger than
    /// its size).
    NotLarger,
    /// One scale, the largest (no axis smaller than its size).
    NotSmaller,
}

/// `Resize` nearest-neighbour rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    /// Round, halves down.
    RoundPreferFloor,
    /// Round, halves up.
    RoundPreferCeil,
    /// Floor.
    Floor,
    /// Ceiling.
    Ceil,
}

/// How `Pad` fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// Mirror without repeating the edge.
    Reflect,
    /// Repeat the edge.
    Edge,
    /// Wrap around.
    Wrap,
}

impl Op {
    /// Whether input `i` determines the output's shape (a static compiler needs it constant):
    /// Reshape's shape, Resize's roi, scales and sizes, Slice's starts/ends/axes/steps, the axes
    /// of Squeeze, Unsqueeze and reductions, Split's sizes, Pad's pads and axes (each family's
    /// `shape_operand`, [`crate::ops`]).
    pub fn is_shape_operand(&self, i: usize) -> bool {
        (crate::ops::def(self).shape_operand)(self, i)
    }
}

/// Element-wise binary operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// `a ^ b`.
    Pow,
    /// Remainder (`Mod`, `fmod = 0` semantics for integers).
    Mod,
    /// Remainder truncated toward zero, the sign of the dividend (`Mod` with `fmod = 1`, C's
    /// `fmod`).
    Fmod,
}

/// Element-wise operations over any number of inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VariadicOp {
    /// `x0 + x1 + ...`.
    Sum,
    /// `(x0 + x1 + ...) / n`.
    Mean,
    /// The largest (NaN if any is NaN).
    Max,
    /// The smallest (NaN if any is NaN).
    Min,
}

/// Element-wise unary functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// `e^x`.
    Exp,
    /// The error function.
    Erf,
    /// Square root.
    Sqrt,
    /// `x · hardsigmoid(x)` with alpha 1/6, beta 1/2.
    HardSwish,
    /// Negation.
    Neg,
    /// Absolute value.
    Abs,
    /// Natural logarithm.
    Log,
    /// `1 / x`.
    Reciprocal,
    /// Round toward negative infinity.
    Floor,
    /// Round toward positive infinity.
    Ceil,
    /// Round half to even.
    Round,
    /// -1, 0 or 1 (NaN stays NaN); integers too.
    Sign,
    /// Sine.
    Sin,
    /// Cosine.
    Cos,
    /// Tangent.
    Tan,
    /// Arcsine.
    Asin,
    /// Arccosine.
    Acos,
    /// Arctangent.
    Atan,
    /// Hyperbolic sine.
    Sinh,
    /// Hyperbolic cosine.
    Cosh,
    /// Inverse hyperbolic sine.
    Asinh,
    /// Inverse hyperbolic cosine.
    Acosh,
    /// Inverse hyperbolic tangent.
    Atanh,
    /// `ln(e^x + 1)`.
    Softplus,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `x · tanh(softplus(x))`.
    Mish,
    /// Logical not of a bool.
    Not,
    /// Bitwise not of an integer.
    BitwiseNot,
    /// Whether `x` is NaN (a bool).
    IsNaN,
}

/// The ops of the `normalize` family.
#[derive(Clone, Debug, PartialEq)]
pub enum NormKind {
    /// RMSNormalization over the axes from `axis`.
    Rms {
        /// The first normalised axis.
        axis: i64,
        /// Added to the mean square.
        epsilon: f32,
    },
    /// LpNormalization (p = 1 or 2) along an axis.
    Lp {
        /// The axis.
        axis: i64,
        /// The norm's order.
        p: u8,
    },
    /// MeanVarianceNormalization over axes.
    Mvn {
        /// The axes.
        axes: Vec<i64>,
    },
    /// InstanceNormalization over the spatial axes, with per-channel scale and bias.
    Instance {
        /// Added to the variance.
        epsilon: f32,
    },
    /// One at the first maximum along the axis (or, before opset 13, of the input coerced to
    /// 2-D there), zero elsewhere.
    Hardmax {
        /// The axis.
        axis: i64,
        /// Coerce to 2-D at `axis` (opset < 13).
        flatten: bool,
    },
    /// Local response normalization across channels.
    Lrn {
        /// Scale.
        alpha: f32,
        /// Exponent.
        beta: f32,
        /// Offset.
        bias: f32,
        /// Channels in the window.
        size: usize,
    },
    /// The k largest (or smallest) elements along an axis and their indices, sorted.
    TopK {
        /// The axis.
        axis: i64,
        /// Largest (else smallest).
        largest: bool,
        /// The attribute (the result is sorted either way).
        sorted: bool,
    },
}

/// The attributes of an Attention node.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionAttrs {
    /// Causal masking (aligned to the cache offset).
    pub is_causal: bool,
    /// Query heads (3-D inputs).
    pub q_heads: Option<usize>,
    /// Key/value heads (3-D inputs).
    pub kv_heads: Option<usize>,
    /// The score scale (default `1/√head_size`).
    pub scale: Option<f32>,
    /// Scores pass through `softcap·tanh(s/softcap)` when positive.
    pub softcap: f32,
    /// What `qk_matmul_output` holds: 0 the raw scores, 1 after softcap, 2 with the bias, 3
    /// the softmax.
    pub qk_mode: u8,
    /// Keys visible before a query's position (−1: unbounded).
    pub left: i64,
    /// Keys visible after a query's position (−1: unbounded).
    pub right: i64,
}

/// How a loss combines its per-position values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReduction {
    /// Kept per position.
    None,
    /// Summed.
    Sum,
    /// Summed and divided by the summed weights.
    Mean,
}

/// How a scatter combines an update with the element it lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScatterReduction {
    /// Replaced.
    None,
    /// Added.
    Add,
    /// Multiplied.
    Mul,
    /// The larger.
    Max,
    /// The smaller.
    Min,
}

/// Element-wise comparisons (a bool result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `a == b`.
    Equal,
    /// `a < b`.
    Less,
    /// `a > b`.
    Greater,
    /// `a <= b`.
    LessOrEqual,
    /// `a >= b`.
    GreaterOrEqual,
}

/// Element-wise logical (bool) or bitwise (integer) operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogicOp {
    /// And.
    And,
    /// Or.
    Or,
    /// Exclusive or.
    Xor,
}

/// Element-wise activations with parameters (`alpha`, `beta` as named per kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActKind {
    /// `x < 0 ? alpha·(e^x − 1) : x`.
    Elu,
    /// `x <= 0 ? gamma·(alpha·e^x − alpha) : gamma·x` (`beta` holds gamma).
    Selu,
    /// `max(0, x) + min(0, alpha·(e^(x/alpha) − 1))`.
    Celu,
    /// `x > alpha ? x : 0`.
    ThresholdedRelu,
    /// `x < −lambd ? x + bias : x > lambd ? x − bias : 0` (`alpha` holds lambd, `beta` bias).
    Shrink,
    /// `x · sigmoid(alpha·x)` (Swish-24; SiLU at alpha 1).
    Swish,
}

/// Reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    /// Mean.
    Mean,
    /// Sum.
    Sum,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
    /// Product.
    Prod,
    /// Sum of absolute values.
    L1,
    /// Square root of the sum of squares.
    L2,
    /// Sum of squares.
    SumSquare,
    /// Natural logarithm of the sum.
    LogSum,
    /// Natural logarithm of the sum of exponentials.
    LogSumExp,
}

/// A node.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Name (from the model, or generated).
    pub name: String,
    /// The ONNX op type it came from.
    pub op_type: String,
    /// The operation.
    pub op: Op,
    /// Inputs; `None` for omitted optional inputs.
    pub inputs: Vec<Option<ValueId>>,
    /// Outputs.
    pub outputs: Vec<ValueId>,
}

/// A graph in topological order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// All values.
    pub values: Vec<Value>,
    /// Nodes, each after the producers of its inputs.
    pub nodes: Vec<Node>,
    /// Graph inputs (non-constant).
    pub inputs: Vec<ValueId>,
    /// Graph outputs.
    pub outputs: Vec<ValueId>,
    /// The default-domain opset the model imports.
    pub opset: i64,
    /// Types the model declares for its graph outputs, checked against what the graph computes
    /// after shape inference (as the ONNX checker's strict mode does).
    pub declared_outputs: Vec<(ValueId, DeclaredType)>,
}

/// A declared type as a model states it: the ONNX element type code (0: not stated) and the
/// dimensions (`None`: no shape stated; a `None` dimension: symbolic or unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeclaredType {
    /// ONNX `TensorProto.DataType` code, 0 when not stated.
    pub elem_type: i32,
    /// The dimensions, when a shape is stated.
    pub dims: Option<Vec<Option<usize>>>,
}

impl DeclaredType {
    /// Whether `t` is consistent with the declaration.
    pub fn admits(&self, t: &TensorType) -> bool {
        (self.elem_type == 0 || self.elem_type == t.dtype.onnx_code())
            && self.dims.as_ref().is_none_or(|d| {
                d.len() == t.shape.len()
                    && d.iter().zip(&t.shape).all(|(a, b)| a.is_none_or(|a| a == *b))
            })
    }
}

impl fmt::Display for DeclaredType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ty = if self.elem_type == 0 { "tensor" } else { DType::onnx_name(self.elem_type) };
        f.write_str(ty)?;
        if let Some(d) = &self.dims {
            let dims: Vec<String> =
                d.iter().map(|x| x.map_or_else(|| "?".to_string(), |v| v.to_string())).collect();
            write!(f, "[{}]", dims.join(","))?;
        }
        Ok(())
    }
}

impl Graph {
    /// A value by id.
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0 as usize]
    }

    /// A value by id, mutably.
    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.0 as usize]
    }

    /// Adds a value.
    pub fn add_value(&mut self, value: Value) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(value);
        id
    }
}
