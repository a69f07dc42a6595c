//! The op registry: every ONNX op the compiler understands has one home, a module per op
//! family, holding all of its facets, and is listed once in [`REGISTRY`].
//!
//! A family module defines, for its ops:
//! - `ONNX`: the op types it imports, and `import`: the attribute schema (every attribute
//!   read, defaults per opset, values it refuses), giving an [`Op`];
//! - `infer`: the shape and type rule;
//! - `eval`: the reference semantics (the interpreter, the oracle for everything else);
//! - `print`: the attributes in the ONNX text syntax, so that printing and re-importing gives
//!   the same op;
//! - `work`: the cost estimate's inputs (multiply-accumulates, vector passes or traffic);
//! - `arity`: how many inputs and outputs ONNX allows a node of each op type at an opset
//!   (the schema's `min_input..=max_input`, `min_output..=max_output`);
//! - `shape_operand`: which inputs determine the output shape (and must be constant);
//! - `lower`: the device lowering (kernel steps), or the constraint that keeps it off the
//!   device;
//! - `host`: the host lowering (MLIR loop nests through `lower::host::HostBuilder`), for nodes
//!   the partitioner places on the CPU.
//!
//! [`def`] maps every [`Op`] variant to its family with an exhaustive `match`, so a new
//! variant does not compile until it has a home; a test walks the registry with a sample node
//! per op type through every facet, so a family that misses a case fails a test.

use crate::interp::Array;
use crate::ir::{Graph, Node, Op, TensorType};
use crate::lower::LowerError;
use crate::lower::host::HostBuilder;
use crate::lower::schedule::Builder;
use crate::onnx::Attrs;

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod indexing;
pub(crate) mod loss;
pub(crate) mod matmul;
pub(crate) mod movement;
pub(crate) mod norm;
pub(crate) mod normalize;
pub(crate) mod pool;
pub(crate) mod quant;
pub(crate) mod recurrent;
pub(crate) mod reduce;
pub(crate) mod rotary;
pub(crate) mod sample;
pub(crate) mod shape_ops;
pub(crate) mod unsupported;

/// What one operation costs, as the optimizer's cost model (`opt::cost`) turns into cycles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// No kernel of its own (a view of the same bytes, or folded at compile time).
    Free,
    /// A matrix-engine kernel of this many multiply-accumulates.
    Macs(u64),
    /// A vector-engine kernel: passes per output element, at the slow (transcendental) rate.
    Vector {
        /// Passes per output element.
        passes: u64,
        /// Whether the passes run at the slow rate.
        slow: bool,
    },
    /// A kernel bounded by its DRAM traffic (copies, gathers, integer kernels).
    Traffic,
}

/// How many inputs and outputs a node may list, as the ONNX schema of its op type at the
/// model's opset says (`min_input..=max_input`, `min_output..=max_output`; omitted optional
/// ones listed as `""` count). The first `inputs.start()` inputs are required and may not be
/// omitted. Checked by the importer for every node of a supported op type, and against
/// onnx's own schemas by a test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arity {
    /// Input counts allowed.
    pub inputs: std::ops::RangeInclusive<usize>,
    /// Output counts allowed.
    pub outputs: std::ops::RangeInclusive<usize>,
}

/// Shorthand for the families' `arity` tables: `min_in..=max_in` inputs and
/// `min_out..=max_out` outputs ([`MANY`] for variadic).
pub(crate) const fn counts(min_in: usize, max_in: usize, min_out: usize, max_out: usize) -> Arity {
    Arity { inputs: min_in..=max_in, outputs: min_out..=max_out }
}

/// The upper bound of a variadic input or output list.
pub(crate) const MANY: usize = usize::MAX;

/// The shape and type rule: output types from the graph (for constant shape operands), the
/// node and its input types.
type InferFn = fn(&Graph, &Node, &[Option<&TensorType>]) -> Result<Vec<TensorType>, String>;

/// The reference semantics: outputs from the node, its input arrays and the opset.
type EvalFn = fn(&Node, &[Option<&Array>], i64) -> Result<Vec<Array>, String>;

/// One op family's facets (see the module documentation).
pub struct OpDef {
    /// The family's name (its module).
    pub family: &'static str,
    /// The ONNX op types it imports.
    pub onnx: &'static [&'static str],
    pub(crate) import: fn(&str, &Attrs<'_>, i64) -> Result<Op, String>,
    pub(crate) infer: InferFn,
    pub(crate) eval: EvalFn,
    pub(crate) print: fn(&Op, &mut Vec<String>),
    pub(crate) work: fn(&Op, &[Option<TensorType>], &[TensorType]) -> Work,
    pub(crate) arity: fn(&str, i64) -> Arity,
    pub(crate) shape_operand: fn(&Op, usize) -> bool,
    pub(crate) lower: fn(&mut Builder<'_>, usize, &Node) -> Result<(), LowerError>,
    pub(crate) host: fn(&mut HostBuilder<'_>, &Node) -> Result<(), LowerError>,
}

macro_rules! family {
    ($m:ident) => {
        OpDef {
            family: $m::FAMILY,
            onnx: $m::ONNX,
            import: $m::import,
            infer: $m::infer,
            eval: $m::eval,
            print: $m::print,
            work: $m::work,
            arity: $m::arity,
            shape_operand: $m::shape_operand,
            lower: $m::lower,
            host: $m::host,
        }
    };
}

static ELEMENTWISE: OpDef = family!(elementwise);
static MATMUL: OpDef = family!(matmul);
static CONV: OpDef = family!(conv);
static POOL: OpDef = family!(pool);
static NORM: OpDef = family!(norm);
static REDUCE: OpDef = family!(reduce);
static SHAPE_OPS: OpDef = family!(shape_ops);
static MOVEMENT: OpDef = family!(movement);
static QUANT: OpDef = family!(quant);
static INDEXING: OpDef = family!(indexing);
static LOSS: OpDef = family!(loss);
static ATTENTION: OpDef = family!(attention);
static NORMALIZE: OpDef = family!(normalize);
static SAMPLE: OpDef = family!(sample);
static RECURRENT: OpDef = family!(recurrent);
static ROTARY: OpDef = family!(rotary);
static UNSUPPORTED: OpDef = family!(unsupported);

/// Every op family, once.
pub static REGISTRY: &[&OpDef] = &[
    &ELEMENTWISE,
    &MATMUL,
    &CONV,
    &POOL,
    &NORM,
    &REDUCE,
    &SHAPE_OPS,
    &MOVEMENT,
    &QUANT,
    &INDEXING,
    &LOSS,
    &ATTENTION,
    &NORMALIZE,
    &SAMPLE,
    &RECURRENT,
    &ROTARY,
    &UNSUPPORTED,
];

/// The family of an op (exhaustive: a new [`Op`] variant needs a home here).
pub fn def(op: &Op) -> &'static OpDef {
    match op {
        Op::Binary(_)
        | Op::Unary(_)
        | Op::Variadic(_)
        | Op::LeakyRelu { .. }
        | Op::Clip { .. }
        | Op::HardSigmoid { .. }
        | Op::Gelu { .. }
        | Op::Compare(_)
        | Op::Logic { .. }
        | Op::BitShift { .. }
        | Op::Activation { .. }
        | Op::IsInf { .. }
        | Op::PRelu
        | Op::SwiGlu { .. }
        | Op::Where => &ELEMENTWISE,
        Op::Gemm { .. } | Op::MatMul | Op::MatMulInteger | Op::QLinearMatMul => &MATMUL,
        Op::Conv { .. }
        | Op::ConvTranspose { .. }
        | Op::ConvInteger { .. }
        | Op::QLinearConv { .. }
        | Op::QConv { .. } => &CONV,
        Op::Pool { .. }
        | Op::LpPool { .. }
        | Op::GlobalPool { .. }
        | Op::QGlobalAveragePool { .. } => &POOL,
        Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::LayerNorm { .. }
        | Op::BatchNorm { .. } => &NORM,
        Op::Reduce { .. } | Op::ArgReduce { .. } => &REDUCE,
        Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Identity
        | Op::Shape { .. }
        | Op::Constant
        | Op::Size
        | Op::Expand
        | Op::ConstantOfShape { .. }
        | Op::Range
        | Op::Window { .. }
        | Op::EyeLike { .. }
        | Op::CastLike
        | Op::Dropout => &SHAPE_OPS,
        Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::Gather { .. }
        | Op::Pad { .. }
        | Op::Resize { .. } => &MOVEMENT,
        Op::Cast { .. }
        | Op::QuantizeLinear { .. }
        | Op::DequantizeLinear { .. }
        | Op::QAdd { .. }
        | Op::Lut => &QUANT,
        Op::GatherElements { .. }
        | Op::GatherND { .. }
        | Op::ScatterElements { .. }
        | Op::ScatterND { .. }
        | Op::OneHot { .. }
        | Op::Trilu { .. }
        | Op::Tile
        | Op::CenterCropPad { .. }
        | Op::DepthToSpace { .. }
        | Op::SpaceToDepth { .. }
        | Op::CumSum { .. } => &INDEXING,
        Op::Loss { .. } => &LOSS,
        Op::GridSample { .. } => &SAMPLE,
        Op::Recurrent { .. } => &RECURRENT,
        Op::Rotary { .. } => &ROTARY,
        Op::Attention(_) => &ATTENTION,
        Op::Normalize(_) => &NORMALIZE,
        Op::Unsupported { .. } => &UNSUPPORTED,
    }
}

/// The family importing ONNX op type `op_type` (default domain), if any.
pub fn family_of(op_type: &str) -> Option<&'static OpDef> {
    REGISTRY.iter().copied().find(|d| d.onnx.contains(&op_type))
}

/// Every default-domain ONNX op type the importer converts, sorted.
pub fn onnx_ops() -> Vec<&'static str> {
    let mut v: Vec<&str> = REGISTRY.iter().flat_map(|d| d.onnx.iter().copied()).collect();
    v.sort_unstable();
    v
}

/// Imports ONNX op `op_type` through its family, or says it is not supported.
pub(crate) fn import(op_type: &str, a: &Attrs<'_>, opset: i64) -> Result<Op, String> {
    match family_of(op_type) {
        Some(d) => (d.import)(op_type, a, opset),
        None => Err(match refusal_reason(op_type) {
            Some(why) => format!("`{op_type}` is not supported: {why}"),
            None => format!("`{op_type}` is not supported"),
        }),
    }
}

/// The first default-domain opset defining op type `op_type`, for the registry's op types
/// that appear after opset 7 (onnx's schemas); a node of one in a model importing an older
/// opset is refused, as onnxruntime refuses the model.
pub fn since(op_type: &str) -> Option<i64> {
    Some(match op_type {
        "Expand" => 8,
        "Sign"
        | "EyeLike"
        | "OneHot"
        | "IsNaN"
        | "MeanVarianceNormalization"
        | "ConstantOfShape"
        | "Sinh"
        | "Asinh"
        | "Acosh"
        | "Cosh"
        | "Atanh"
        | "Shrink"
        | "Erf"
        | "Where" => 9,
        "DequantizeLinear" | "QuantizeLinear" | "QLinearConv" | "ConvInteger" | "QLinearMatMul"
        | "MatMulInteger" | "IsInf" | "Mod" | "ThresholdedRelu" | "Resize" => 10,
        "GatherND" | "ScatterND" | "GatherElements" | "CumSum" | "Range" | "Round" | "BitShift"
        | "ScatterElements" => 11,
        "SoftmaxCrossEntropyLoss"
        | "GreaterOrEqual"
        | "LessOrEqual"
        | "Celu"
        | "NegativeLogLikelihoodLoss" => 12,
        "HardSwish" | "Trilu" => 14,
        "CastLike" => 15,
        "GridSample" => 16,
        "BlackmanWindow" | "HammingWindow" | "HannWindow" | "LayerNormalization" => 17,
        "BitwiseOr" | "BitwiseAnd" | "Mish" | "BitwiseXor" | "BitwiseNot" | "CenterCropPad" => 18,
        "Gelu" => 20,
        "RotaryEmbedding" | "RMSNormalization" | "Attention" => 23,
        "Swish" => 24,
        "CumProd" => 26,
        "SwiGLU" => 28,
        _ => return None,
    })
}

/// Why a class of ONNX ops is refused by design (not merely not implemented yet).
fn refusal_reason(op_type: &str) -> Option<&'static str> {
    match op_type {
        "NonZero" | "Unique" | "Compress" | "NonMaxSuppression" | "StringSplit" => Some(
            "its output shape depends on the data, and a static compiler plans every buffer ahead",
        ),
        "If" | "Loop" | "Scan" => Some("control flow (subgraphs) is not compiled"),
        "RandomNormal" | "RandomNormalLike" | "RandomUniform" | "RandomUniformLike"
        | "Bernoulli" | "Multinomial" => Some("it draws random numbers"),
        o if o.starts_with("Sequence")
            || o.starts_with("Optional")
            || o == "SplitToSequence"
            || o == "ConcatFromSequence" =>
        {
            Some("sequences and optionals are not tensors")
        }
        _ => None,
    }
}

/// The inputs and outputs ONNX allows a node of default-domain op type `op_type` at `opset`,
/// for a type the importer converts (`None` for any other).
pub fn arity_of(op_type: &str, opset: i64) -> Option<Arity> {
    family_of(op_type).map(|d| (d.arity)(op_type, opset))
}

/// The error of a family facet without an arm for `op`: `ops::def` routed it here but this
/// facet does not handle it (a registry bug, never user input).
pub(crate) fn misrouted(op: &Op, family: &str) -> String {
    format!(
        "internal: the {family} family has no arm for {op:?} in this facet (ops::def routes it here)"
    )
}

/// As [`misrouted`], for an ONNX op type handed to the wrong family's importer.
pub(crate) fn misrouted_name(op_type: &str, family: &str) -> String {
    format!("internal: `{op_type}` reached the {family} family's importer")
}
