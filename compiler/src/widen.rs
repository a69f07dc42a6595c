//! Storage floats (float16, bfloat16) made explicit: every node that reads or writes one gets
//! `Cast`s around it, so it computes in `f32` and its float results are rounded back to the
//! storage type. After this, only `Cast`, `CastLike`, `Identity`, `Shape` and `Size` touch a
//! storage float, and every other op (reference, optimizer, device and host lowerings) sees
//! `f32`.
//!
//! This is the semantics of those types in accelc, written once (`DType::storage_float`): an
//! op's inputs are converted to `f32` exactly, the op computes in `f32`, and each float result
//! is rounded to nearest even into the storage type, as onnxruntime's CPU kernels compute
//! most float16 ops. Double is not widened (that would lose precision): a node other than
//! `Cast`/`CastLike` that touches double becomes unsupported, with that reason.
//!
//! It runs inside constant folding (`crate::fold`), node by node as folding types them, so the
//! casts of constants fold away and a shape operand held in float16 is a constant `f32`
//! tensor by the time a shape rule reads it.

use crate::ir::{DType, Graph, Node, Op, Tensor, TensorType, Value, ValueId};

/// What [`widen_inputs`] did to node `i`.
pub(crate) struct Widened {
    /// `Cast` nodes inserted before it (it is now at `i + before`).
    pub(crate) before: usize,
    /// The storage type its `f32` results are to be rounded to, once it is typed.
    pub(crate) narrow: Option<DType>,
}

/// The reason a node touching double is refused.
pub const DOUBLE_REASON: &str = "double is converted (Cast, CastLike) and passed through \
     (Identity, Shape, Size) only; other ops compute in float32, which would lose its precision \
     silently";

fn passes_through(op: &Op) -> bool {
    // Identity copies bytes of any type (the optimizer also adds it for aliased outputs);
    // Shape and Size read only the type.
    matches!(
        op,
        Op::Cast { .. }
            | Op::CastLike
            | Op::Identity
            | Op::Shape { .. }
            | Op::Size
            | Op::Unsupported { .. }
            | Op::Constant
    )
}

/// Whether the reference and the host lowering of `op` treat uint64 as unsigned (a uint64 is
/// held as its bit pattern, so an op comparing, dividing or shifting it as a signed `i64`
/// would be wrong past 2^63): the ops that were checked, and the ones that only move bits.
fn handles_u64(op: &Op) -> bool {
    use crate::ir::VariadicOp;
    matches!(
        op,
        Op::Binary(_)
            | Op::Compare(_)
            | Op::Logic { .. }
            | Op::BitShift { .. }
            | Op::Variadic(VariadicOp::Max | VariadicOp::Min | VariadicOp::Sum)
            | Op::Normalize(crate::ir::NormKind::TopK { .. })
            | Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Gather { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Split { .. }
            | Op::Identity
            | Op::Shape { .. }
            | Op::Size
            | Op::Slice { .. }
            | Op::GatherElements { .. }
            | Op::GatherND { .. }
            | Op::Tile
            | Op::DepthToSpace { .. }
            | Op::SpaceToDepth { .. }
            | Op::Expand
            | Op::Where
            | Op::Cast { .. }
            | Op::CastLike
            | Op::Trilu { .. }
            | Op::CumSum { .. }
            | Op::Dropout
            | Op::CenterCropPad { .. }
            | Op::EyeLike { .. }
            | Op::Constant
            | Op::Unsupported { .. }
    )
}

/// Inserts `Cast`s to `f32` before node `i` for each of its storage-float inputs (typed ones:
/// a node runs after its producers are typed), or makes the node unsupported when it touches
/// double or two storage types.
pub(crate) fn widen_inputs(g: &mut Graph, i: usize) -> Widened {
    let none = Widened { before: 0, narrow: None };
    if passes_through(&g.nodes[i].op) {
        return none;
    }
    if !handles_u64(&g.nodes[i].op)
        && g.nodes[i]
            .inputs
            .iter()
            .flatten()
            .any(|id| g.value(*id).ty.as_ref().is_some_and(|t| t.dtype == DType::U64))
    {
        let n = &mut g.nodes[i];
        let reason = format!(
            "{} of uint64 is not supported (uint64 runs through casts, arithmetic, comparisons, \
             bitwise ops, Max, Min, Sum, TopK and data movement)",
            n.op_type
        );
        n.op = Op::Unsupported { op_type: n.op_type.clone(), reason };
        return none;
    }
    let mut kinds: Vec<DType> = Vec::new();
    for id in g.nodes[i].inputs.iter().flatten() {
        if let Some(t) = &g.value(*id).ty
            && t.dtype.storage_float()
            && !kinds.contains(&t.dtype)
        {
            kinds.push(t.dtype);
        }
    }
    // A fill value held in a storage type: the fill becomes f32, and the result is narrowed.
    if let Op::ConstantOfShape { value } = &g.nodes[i].op
        && value.dtype.storage_float()
        && value.dtype != DType::F64
    {
        let t = value.dtype;
        let bits = value.i64s().first().copied().unwrap_or(0);
        let f = t.float_from_bits(bits) as f32;
        g.nodes[i].op = Op::ConstantOfShape { value: Tensor::from_f32(vec![1], &[f]) };
        return Widened { before: 0, narrow: Some(t) };
    }
    // Ones and zeros in a float type: made in f32 and cast (exactly, double included).
    if let Op::EyeLike { dtype: Some(t), k } = g.nodes[i].op
        && t.storage_float()
    {
        g.nodes[i].op = Op::EyeLike { dtype: Some(DType::F32), k };
        return Widened { before: 0, narrow: Some(t) };
    }
    let (t, refuse) = match kinds.as_slice() {
        [] => return none,
        [DType::F64] => (DType::F64, Some(DOUBLE_REASON.to_string())),
        [t] => (*t, None),
        many => {
            let names: Vec<String> = many.iter().map(ToString::to_string).collect();
            (many[0], Some(format!("inputs of several float types ({})", names.join(", "))))
        }
    };
    if let Some(reason) = refuse {
        let n = &mut g.nodes[i];
        n.op = Op::Unsupported { op_type: n.op_type.clone(), reason };
        return none;
    }
    let mut casts = Vec::new();
    let inputs = g.nodes[i].inputs.clone();
    let name = g.nodes[i].name.clone();
    for (k, id) in inputs.iter().enumerate() {
        let Some(id) = id else { continue };
        let Some(ty) = g.value(*id).ty.clone() else { continue };
        if !ty.dtype.storage_float() {
            continue;
        }
        // One cast per value would do; one per use keeps this local, and the optimizer's
        // common-subexpression elimination merges them.
        let wide = g.add_value(Value {
            name: format!("{}__{name}_f32_{k}", g.value(*id).name),
            ty: None,
            constant: None,
        });
        casts.push(Node {
            name: format!("{name}__widen_{k}"),
            op_type: "Cast".into(),
            op: Op::Cast { to: DType::F32 },
            inputs: vec![Some(*id)],
            outputs: vec![wide],
        });
        g.nodes[i].inputs[k] = Some(wide);
    }
    let before = casts.len();
    g.nodes.splice(i..i, casts);
    Widened { before, narrow: Some(t) }
}

/// After node `i` (widened by [`widen_inputs`]) is typed: each `f32` result becomes a fresh
/// value, and a `Cast` inserted after the node rounds it into the original value as type `t`.
/// Returns how many casts were inserted. An untyped node (its shape rule failed) is left; the
/// shape-inference pass reports it.
pub(crate) fn narrow_outputs(g: &mut Graph, i: usize, t: DType) -> usize {
    let outputs = g.nodes[i].outputs.clone();
    let name = g.nodes[i].name.clone();
    let mut casts = Vec::new();
    for (k, id) in outputs.iter().enumerate() {
        let Some(ty) = g.value(*id).ty.clone() else { continue };
        if ty.dtype != DType::F32 {
            continue;
        }
        let orig = g.value(*id).clone();
        let wide = g.add_value(Value {
            name: format!("{}__f32", orig.name),
            ty: Some(ty.clone()),
            constant: orig.constant.clone(),
        });
        let v = g.value_mut(*id);
        v.ty = Some(TensorType { dtype: t, shape: ty.shape.clone() });
        v.constant = None;
        g.nodes[i].outputs[k] = wide;
        casts.push(Node {
            name: format!("{name}__narrow_{k}"),
            op_type: "Cast".into(),
            op: Op::Cast { to: t },
            inputs: vec![Some(wide)],
            outputs: vec![*id],
        });
    }
    let n = casts.len();
    g.nodes.splice(i + 1..i + 1, casts);
    n
}

/// Whether node `n` of `g` breaks this module's invariant: it is not `Cast`/`CastLike` (or
/// unsupported) and an input or output of it is typed with a storage float.
pub fn touches_storage_float(g: &Graph, n: &Node) -> bool {
    !passes_through(&n.op)
        && n.inputs
            .iter()
            .flatten()
            .chain(&n.outputs)
            .any(|id: &ValueId| g.value(*id).ty.as_ref().is_some_and(|t| t.dtype.storage_float()))
}
