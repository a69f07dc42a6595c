//! The frontend's pass pipeline, listed in one place: import, then each pass with the verifier
//! after it, and an optional dump of the IR after every step (`--dump-ir`).

use std::path::Path;

use bytes::Bytes;
use prost::Message;

use crate::fold::fold_constants;
use crate::ir::Graph;
use crate::onnx::{ImportOptions, import};
use crate::shape::infer;
use crate::verify::verify;

/// The frontend passes, in order, by name; the optimizer ([`run_optimizer`]) and the lowering
/// (`crate::lower::PASSES`) follow.
pub const PASSES: &[&str] = &["fold-constants", "infer-shapes", "optimize"];

/// Loads a model: binary ONNX, or the text syntax when the file starts like text.
pub fn load_any(path: &Path, opts: &ImportOptions) -> Result<Graph, String> {
    let bytes = accelc_isa::file::read_regular(path, accelc_isa::file::MAX_FILE_BYTES)?;
    let is_text = path.extension().is_some_and(|e| e == "onnxtxt" || e == "txt")
        || bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'<');
    if is_text {
        let source = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let before = &e.as_bytes()[..at];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let col = at - before.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1) + 1;
            format!(
                "{}:{line}:{col}: text model is not UTF-8 (invalid byte at offset {at})",
                path.display()
            )
        })?;
        load_text(&source, &path.display().to_string(), path.parent(), opts)
    } else {
        // The bytes already read (reading the file again would hold the model twice).
        crate::onnx::import(bytes::Bytes::from(bytes), path.parent(), opts)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Imports a model in the ONNX text syntax; `name` names it in errors (with line and column),
/// `base_dir` resolves external data.
pub fn load_text(
    source: &str,
    name: &str,
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Graph, String> {
    let model = crate::text::parse(source)
        .map_err(|d| accelc_isa::asm::render(&d, source, name).trim_end().to_string())?;
    import(Bytes::from(model.encode_to_vec()), base_dir, opts).map_err(|e| format!("{name}: {e}"))
}

/// Runs every pass on `g`, verifying after each; `dump` receives `(pass, graph)` after import
/// and after every pass.
pub fn run_frontend(g: &mut Graph, dump: &mut dyn FnMut(&str, &Graph)) -> Result<(), String> {
    verify(g, false).map_err(|e| format!("after import: {e}"))?;
    dump("import", g);
    fold_constants(g).map_err(|e| e.to_string())?;
    verify(g, false).map_err(|e| format!("after fold-constants: {e}"))?;
    dump("fold-constants", g);
    infer(g).map_err(|e| e.to_string())?;
    for (id, declared) in &g.declared_outputs {
        let v = g.value(*id);
        if let Some(t) = &v.ty
            && !declared.admits(t)
        {
            return Err(format!(
                "graph output `{}` is declared {declared} but the graph computes {t}",
                v.name
            ));
        }
    }
    verify(g, true).map_err(|e| format!("after infer-shapes: {e}"))?;
    dump("infer-shapes", g);
    Ok(())
}

/// Runs the e-graph optimizer on a frontend-processed graph, then the verifier and shape
/// inference again; `dump` receives the graph after it.
pub fn run_optimizer(
    g: &mut Graph,
    opts: &crate::opt::Options,
    dump: &mut dyn FnMut(&str, &Graph),
) -> Result<crate::opt::Report, String> {
    let report = crate::opt::optimize(g, opts)?;
    infer(g).map_err(|e| format!("after optimize: {e}"))?;
    verify(g, true).map_err(|e| format!("after optimize: {e}"))?;
    dump("optimize", g);
    Ok(report)
}

/// The graph inputs whose values a static compiler needs at compile time: inputs that
/// determine a shape (a Reshape's shape, Slice's starts, Resize's scales: what
/// [`crate::ir::Op::is_shape_operand`] names), directly or through the nodes computing such an
/// operand (a Shape node's input excepted: only its shape matters), and the quantization
/// parameters and integer weights of the quantization operators (every input but the first of
/// QuantizeLinear, DequantizeLinear, ConvInteger, QLinearConv, MatMulInteger and
/// QLinearMatMul, which a real quantized model holds as initializers). Given their values,
/// [`bind_input`] makes them constants.
pub fn compile_time_inputs(g: &Graph) -> Vec<crate::ir::ValueId> {
    use crate::ir::Op;
    let mut needed = vec![false; g.values.len()];
    for n in &g.nodes {
        let quant = matches!(
            n.op,
            Op::QuantizeLinear { .. }
                | Op::DequantizeLinear { .. }
                | Op::ConvInteger { .. }
                | Op::QLinearConv { .. }
                | Op::MatMulInteger
                | Op::QLinearMatMul
        );
        for (i, v) in n.inputs.iter().enumerate() {
            if let Some(v) = v
                && (n.op.is_shape_operand(i) || (quant && i > 0))
            {
                needed[v.0 as usize] = true;
            }
        }
    }
    // Backwards through the nodes (imported in topological order): the inputs of a node
    // computing a needed value are needed.
    for n in g.nodes.iter().rev() {
        if matches!(n.op, Op::Shape { .. }) || !n.outputs.iter().any(|o| needed[o.0 as usize]) {
            continue;
        }
        for v in n.inputs.iter().flatten() {
            needed[v.0 as usize] = true;
        }
    }
    g.inputs.iter().copied().filter(|id| needed[id.0 as usize]).collect()
}

/// Makes graph input `name` the constant `t`: no longer an input, its type `t`'s.
///
/// Errors: no input has that name; the input is declared with another data type, or with a
/// shape (symbolic dimensions aside) `t` does not have.
pub fn bind_input(g: &mut Graph, name: &str, t: crate::ir::Tensor) -> Result<(), String> {
    let Some(k) = g.inputs.iter().position(|id| g.value(*id).name == name) else {
        return Err(format!("the model has no input `{name}`"));
    };
    let id = g.inputs[k];
    if let Some(ty) = &g.value(id).ty
        && (ty.dtype != t.dtype || ty.shape != t.shape)
    {
        return Err(format!("input `{name}` is {ty}; the value given is {}{:?}", t.dtype, t.shape));
    }
    let v = g.value_mut(id);
    v.ty = Some(crate::ir::TensorType { dtype: t.dtype, shape: t.shape.clone() });
    v.constant = Some(t);
    g.inputs.remove(k);
    Ok(())
}
