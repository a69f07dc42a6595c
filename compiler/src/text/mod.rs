//! The ONNX text syntax: the format `onnx.printer` writes and `onnx.parser` reads.
//!
//! ```text
//! <ir_version: 8, opset_import: ["" : 17]>
//! agraph (float[1,4] x) => (float[1,4] y)
//!    <float[4] b = {1, 2, 3, 4}>
//! {
//!    ["add"] y = Add (x, b)
//! }
//! ```
//!
//! [`parse`] turns text into a `ModelProto` (lexed with `logos`, parsed with `lalrpop`), so a
//! text model goes through the same importer as a binary one. [`print`] writes a graph in the
//! same syntax, quoting names that are not plain identifiers (as `onnx.printer` does) and
//! writing floats in their shortest exact form, so print∘parse is the identity on the IR.
//! Omitted optional inputs are written `""`. Errors carry line and column.

pub mod ast;
pub mod lexer;

lalrpop_util::lalrpop_mod!(
    #[allow(
        clippy::all,
        clippy::allow_attributes_without_reason,
        unreachable_pub,
        missing_docs,
        reason = "generated parser"
    )]
    grammar,
    "/text/grammar.rs"
);

use std::fmt::Write as _;

use accelc_isa::asm::Diagnostic;
use logos::Logos;

use crate::ir::{DType, Graph, Op, Tensor};
use crate::proto::attribute_proto::AttributeType;
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};
use ast::{AttrVal, Dim, Lit, ModelAst, Span, TypeAst};

/// An error at a place in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextError {
    /// Where.
    pub span: Span,
    /// What.
    pub message: String,
}

fn diag(span: Span, message: impl Into<String>) -> Diagnostic {
    Diagnostic { span, message: message.into() }
}

/// Parses a model in the text syntax.
pub fn parse(source: &str) -> Result<ModelProto, Vec<Diagnostic>> {
    let mut lex_errors = Vec::new();
    let tokens: Vec<(usize, lexer::Tok, usize)> = lexer::Tok::lexer(source)
        .spanned()
        .filter_map(|(t, span)| match t {
            Ok(t) => Some((span.start, t, span.end)),
            Err(e) => {
                let text = source.get(span.clone()).unwrap_or("");
                let msg = match e {
                    lexer::LexError::Unexpected => format!("unexpected character `{text}`"),
                    lexer::LexError::BadNumber => format!("`{text}` is out of range"),
                };
                // A run of bad characters is one error, not one per character.
                match lex_errors.last_mut() {
                    Some(Diagnostic { span: last, message })
                        if last.end == span.start
                            && message.starts_with("unexpected character")
                            && matches!(e, lexer::LexError::Unexpected) =>
                    {
                        last.end = span.end;
                        let run = source.get(last.start..last.end).unwrap_or("");
                        let shown: String = run.chars().take(20).collect();
                        let more = if run.chars().count() > 20 { "…" } else { "" };
                        *message = format!("unexpected characters `{shown}{more}`");
                    }
                    _ => lex_errors.push(diag(Span::new(span.start, span.end), msg)),
                }
                None
            }
        })
        .collect();
    if !lex_errors.is_empty() {
        return Err(lex_errors);
    }
    let end = source.len();
    let ast = grammar::ModelParser::new()
        .parse(tokens.into_iter().map(Ok::<_, TextError>))
        .map_err(|e| {
            use lalrpop_util::ParseError as P;
            let expected = |exp: &[String]| {
                if exp.is_empty() {
                    String::new()
                } else {
                    format!(", expected {}", exp.join(" or ").replace('"', "`"))
                }
            };
            vec![match e {
                P::UnrecognizedToken { token: (l, t, r), expected: exp } => {
                    diag(Span::new(l, r), format!("unexpected {t}{}", expected(&exp)))
                }
                P::UnrecognizedEof { expected: exp, .. } => {
                    diag(Span::new(end, end), format!("unexpected end of text{}", expected(&exp)))
                }
                P::ExtraToken { token: (l, t, r) } => {
                    diag(Span::new(l, r), format!("unexpected {t}"))
                }
                P::InvalidToken { location } => {
                    diag(Span::new(location, location), "invalid token")
                }
                P::User { error } => diag(error.span, error.message),
            }]
        })?;
    to_proto(&ast).map_err(|d| vec![d])
}

/// The ONNX data type code of a type name.
fn elem_code(name: &str) -> Option<i32> {
    (0..24).find(|c| DType::onnx_name(*c) == name)
}

fn type_proto(ty: &TypeAst) -> Result<TypeProto, Diagnostic> {
    let elem = elem_code(&ty.elem.text)
        .ok_or_else(|| diag(ty.elem.span, format!("unknown type `{}`", ty.elem.text)))?;
    let shape = ty.dims.as_ref().map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| tensor_shape_proto::Dimension {
                value: Some(match d {
                    Dim::Size(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                    Dim::Sym(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
                }),
                ..Default::default()
            })
            .collect(),
    });
    Ok(TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(elem),
            shape,
        })),
        ..Default::default()
    })
}

fn number(l: &Lit) -> Result<f64, Diagnostic> {
    match l {
        Lit::Int(v, _) => Ok(*v as f64),
        Lit::Float(v, _) => Ok(*v),
        Lit::Str(_, s) => Err(diag(*s, "expected a number")),
    }
}

fn integer(l: &Lit) -> Result<i64, Diagnostic> {
    match l {
        Lit::Int(v, _) => Ok(*v),
        other => Err(diag(other.span(), "expected an integer")),
    }
}

/// A tensor literal as a `TensorProto` with raw little-endian data.
fn tensor_proto(name: &str, ty: &TypeAst, data: &[Lit]) -> Result<TensorProto, Diagnostic> {
    let code = elem_code(&ty.elem.text)
        .ok_or_else(|| diag(ty.elem.span, format!("unknown type `{}`", ty.elem.text)))?;
    let dims: Vec<i64> = match &ty.dims {
        None => vec![],
        Some(d) => d
            .iter()
            .map(|d| match d {
                Dim::Size(v) => Ok(*v),
                Dim::Sym(s) => Err(diag(
                    ty.elem.span,
                    format!("a tensor literal cannot have the symbolic dimension `{s}`"),
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    let count = dims.iter().try_fold(1i64, |a, d| if *d < 0 { None } else { a.checked_mul(*d) });
    let Some(count) = count else {
        return Err(diag(
            ty.elem.span,
            format!("`{name}` has dimensions {dims:?}, whose element count is not a 64-bit count"),
        ));
    };
    if count != data.len() as i64 {
        return Err(diag(
            ty.elem.span,
            format!("`{name}` has {} values for {count} elements", data.len()),
        ));
    }
    let mut raw = Vec::new();
    for l in data {
        match DType::onnx_name(code) {
            "float" => raw.extend_from_slice(&(number(l)? as f32).to_le_bytes()),
            "double" => raw.extend_from_slice(&number(l)?.to_le_bytes()),
            "int64" => raw.extend_from_slice(&integer(l)?.to_le_bytes()),
            "int32" => raw.extend_from_slice(&(integer(l)? as i32).to_le_bytes()),
            "int16" | "uint16" => raw.extend_from_slice(&(integer(l)? as i16).to_le_bytes()),
            "int8" | "uint8" | "bool" => raw.push(integer(l)? as u8),
            "uint32" => raw.extend_from_slice(&(integer(l)? as u32).to_le_bytes()),
            "uint64" => raw.extend_from_slice(&(integer(l)? as u64).to_le_bytes()),
            other => {
                return Err(diag(
                    ty.elem.span,
                    format!("tensor literals of type {other} are not supported"),
                ));
            }
        }
    }
    Ok(TensorProto {
        name: Some(name.to_string()),
        dims,
        data_type: Some(code),
        raw_data: Some(raw.into()),
        ..Default::default()
    })
}

fn attribute(a: &ast::Attr) -> Result<AttributeProto, Diagnostic> {
    let mut p = AttributeProto { name: Some(a.name.text.clone()), ..Default::default() };
    let declared = a.ty.as_ref().map(|t| t.text.as_str());
    let set = |p: &mut AttributeProto, t: AttributeType| p.r#type = Some(t as i32);
    match &a.value {
        AttrVal::Lit(l) => match (l, declared) {
            (Lit::Str(s, _), _) => {
                p.s = Some(s.clone().into_bytes().into());
                set(&mut p, AttributeType::String);
            }
            (Lit::Int(v, _), None | Some("int")) => {
                p.i = Some(*v);
                set(&mut p, AttributeType::Int);
            }
            (l, None | Some("float")) => {
                p.f = Some(number(l)? as f32);
                set(&mut p, AttributeType::Float);
            }
            (_, Some(other)) => {
                return Err(diag(
                    a.name.span,
                    format!("a single value cannot have type `{other}`"),
                ));
            }
        },
        AttrVal::List(items, span) => {
            let any_str = items.iter().any(|l| matches!(l, Lit::Str(..)));
            let any_float = items.iter().any(|l| matches!(l, Lit::Float(..)));
            match declared {
                Some("strings") | None if any_str => {
                    p.strings = items
                        .iter()
                        .map(|l| match l {
                            Lit::Str(s, _) => Ok(s.clone().into_bytes().into()),
                            other => Err(diag(other.span(), "expected a string")),
                        })
                        .collect::<Result<_, _>>()?;
                    set(&mut p, AttributeType::Strings);
                }
                Some("floats") => {
                    p.floats = items
                        .iter()
                        .map(|l| number(l).map(|v| v as f32))
                        .collect::<Result<_, _>>()?;
                    set(&mut p, AttributeType::Floats);
                }
                None if any_float => {
                    p.floats = items
                        .iter()
                        .map(|l| number(l).map(|v| v as f32))
                        .collect::<Result<_, _>>()?;
                    set(&mut p, AttributeType::Floats);
                }
                Some("ints") | None => {
                    p.ints = items.iter().map(integer).collect::<Result<_, _>>()?;
                    set(&mut p, AttributeType::Ints);
                }
                Some(other) => {
                    return Err(diag(*span, format!("a list cannot have type `{other}`")));
                }
            }
        }
        AttrVal::Tensor(ty, data) => {
            p.t = Some(tensor_proto("", ty, data)?);
            set(&mut p, AttributeType::Tensor);
        }
    }
    Ok(p)
}

fn to_proto(m: &ModelAst) -> Result<ModelProto, Diagnostic> {
    let mut model = ModelProto::default();
    for (k, v) in &m.header {
        match (k.text.as_str(), v) {
            ("ir_version", ast::HeaderVal::Lit(l)) => model.ir_version = Some(integer(l)?),
            ("model_version", ast::HeaderVal::Lit(l)) => model.model_version = Some(integer(l)?),
            ("opset_import", ast::HeaderVal::Opsets(list)) => {
                model.opset_import = list
                    .iter()
                    .map(|(d, v)| OperatorSetIdProto { domain: Some(d.clone()), version: Some(*v) })
                    .collect();
            }
            (
                key @ ("producer_name" | "producer_version" | "domain" | "doc_string"),
                ast::HeaderVal::Lit(Lit::Str(s, _)),
            ) => {
                let s = Some(s.clone());
                match key {
                    "producer_name" => model.producer_name = s,
                    "producer_version" => model.producer_version = s,
                    "domain" => model.domain = s,
                    _ => model.doc_string = s,
                }
            }
            (other, _) => {
                return Err(diag(k.span, format!("unknown or mistyped header entry `{other}`")));
            }
        }
    }
    let g = &m.graph;
    let decl = |d: &ast::Decl| -> Result<ValueInfoProto, Diagnostic> {
        Ok(ValueInfoProto {
            name: Some(d.name.text.clone()),
            r#type: Some(type_proto(&d.ty)?),
            ..Default::default()
        })
    };
    let mut graph = GraphProto {
        name: Some(g.name.text.clone()),
        input: g.inputs.iter().map(decl).collect::<Result<_, _>>()?,
        output: g.outputs.iter().map(decl).collect::<Result<_, _>>()?,
        initializer: g
            .inits
            .iter()
            .map(|i| tensor_proto(&i.name.text, &i.ty, &i.data))
            .collect::<Result<_, _>>()?,
        ..Default::default()
    };
    for n in &g.nodes {
        // `domain.Op`: everything before the last dot is the domain.
        let (domain, op) = match n.op.text.rfind('.') {
            Some(i) => (n.op.text[..i].to_string(), n.op.text[i + 1..].to_string()),
            None => (String::new(), n.op.text.clone()),
        };
        graph.node.push(NodeProto {
            name: n.name.as_ref().map(|w| w.text.clone()),
            op_type: Some(op),
            domain: Some(domain),
            input: n.inputs.iter().map(|w| w.text.clone()).collect(),
            output: n.outputs.iter().map(|w| w.text.clone()).collect(),
            attribute: n.attrs.iter().map(attribute).collect::<Result<_, _>>()?,
            ..Default::default()
        });
    }
    model.graph = Some(graph);
    Ok(model)
}

/// Whether `name` can be written without quotes.
fn plain(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(name, "inf" | "nan" | "NaN")
}

fn name(out: &mut String, n: &str) {
    if plain(n) {
        out.push_str(n);
    } else {
        out.push('"');
        for c in n.chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                '\n' => out.push_str("\\n"),
                _ => out.push(c),
            }
        }
        out.push('"');
    }
}

fn float(out: &mut String, v: f32) {
    if v.is_nan() {
        out.push_str("nan");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "inf" } else { "-inf" });
    } else if v == v.trunc() && v.abs() < 1e15 {
        // Integral values: keep a decimal point so the literal stays a float.
        let _ = write!(out, "{v:.1}");
    } else {
        let _ = write!(out, "{v:?}");
    }
}

fn type_text(out: &mut String, dtype: DType, shape: &[usize]) {
    // A scalar is written as its element type alone (`int64 {1}`), as onnx.printer does.
    if shape.is_empty() {
        let _ = write!(out, "{dtype}");
        return;
    }
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let _ = write!(out, "{dtype}[{}]", dims.join(","));
}

pub(crate) fn tensor_text(out: &mut String, t: &Tensor, max_values: usize) {
    type_text(out, t.dtype, &t.shape);
    if t.len() > max_values {
        let _ = write!(out, " {{...{} values}}", t.len());
        return;
    }
    out.push_str(" {");
    match t.dtype {
        DType::F32 => {
            for (i, v) in t.f32s().into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                float(out, v);
            }
        }
        _ => {
            let vals: Vec<String> = t.i64s().iter().map(i64::to_string).collect();
            out.push_str(&vals.join(","));
        }
    }
    out.push('}');
}

/// A float attribute value in the text syntax (shortest round-tripping form).
pub(crate) fn flt(v: f32) -> String {
    let mut s = String::new();
    float(&mut s, v);
    s
}

/// An ints attribute value: `[1,2,3]`.
pub(crate) fn ints(v: &[i64]) -> String {
    format!("[{}]", v.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
}

/// An ints attribute value from sizes.
pub(crate) fn usizes(v: &[usize]) -> String {
    format!("[{}]", v.iter().map(usize::to_string).collect::<Vec<_>>().join(","))
}

/// The window attributes of convolution and pooling (those that differ from the defaults).
pub(crate) fn print_window(a: &mut Vec<String>, w: &crate::ir::Window) {
    use crate::ir::AutoPad;
    let pad = match w.auto_pad {
        AutoPad::NotSet => None,
        AutoPad::SameUpper => Some("SAME_UPPER"),
        AutoPad::SameLower => Some("SAME_LOWER"),
        AutoPad::Valid => Some("VALID"),
    };
    if let Some(p) = pad {
        a.push(format!("auto_pad: string = \"{p}\""));
    }
    if w.ceil_mode {
        a.push("ceil_mode: int = 1".into());
    }
    for (k, v) in [
        ("dilations", &w.dilations),
        ("kernel_shape", &w.kernel),
        ("pads", &w.pads),
        ("strides", &w.strides),
    ] {
        if !v.is_empty() {
            a.push(format!("{k}: ints = {}", usizes(v)));
        }
    }
}

/// The attributes of an op, as `name: type = value` texts.
fn attributes(op: &Op) -> Vec<String> {
    let mut a = Vec::new();
    (crate::ops::def(op).print)(op, &mut a);
    a
}

/// Writes `g` in the ONNX text syntax. Constants (initializers and the results of `Constant`
/// nodes) are written with all their values.
pub fn print(g: &Graph) -> String {
    print_with(g, usize::MAX)
}

/// Like [`print`], but constants with more than `max_values` elements are summarised as
/// `{...N values}`: readable dumps of large models (not parseable back).
pub fn print_with(g: &Graph, max_values: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "<\n   ir_version: 8,\n   opset_import: [\"\" : {}]\n>", g.opset);
    let decls = |ids: &[crate::ir::ValueId]| -> String {
        ids.iter()
            .map(|id| {
                let v = g.value(*id);
                let mut s = String::new();
                match &v.ty {
                    Some(t) => type_text(&mut s, t.dtype, &t.shape),
                    None => s.push_str("float"),
                }
                s.push(' ');
                name(&mut s, &v.name);
                s
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str("main_graph (");
    out.push_str(&decls(&g.inputs));
    out.push_str(") => (");
    out.push_str(&decls(&g.outputs));
    out.push(')');
    // Initializers: constants that no node produces and something uses (folding leaves the
    // constants it consumed behind in the value arena).
    let produced: std::collections::HashSet<_> =
        g.nodes.iter().flat_map(|n| n.outputs.iter().copied()).collect();
    let used: std::collections::HashSet<_> = g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().flatten().copied())
        .chain(g.outputs.iter().copied())
        .collect();
    let inits: Vec<String> = g
        .values
        .iter()
        .enumerate()
        .filter(|(i, v)| {
            let id = crate::ir::ValueId(*i as u32);
            v.constant.is_some() && !produced.contains(&id) && used.contains(&id)
        })
        .filter_map(|(_, v)| {
            let t = v.constant.as_ref()?;
            let mut s = String::new();
            type_text(&mut s, t.dtype, &t.shape);
            s.push(' ');
            name(&mut s, &v.name);
            s.push_str(" = ");
            let mut data = String::new();
            tensor_text(&mut data, t, max_values);
            // Drop the type prefix: an initializer's type is written before its name.
            s.push_str(&data[data.find('{').unwrap_or(0)..]);
            Some(s)
        })
        .collect();
    if !inits.is_empty() {
        let _ = write!(out, "\n   <{}>", inits.join(",\n    "));
    }
    out.push_str("\n{\n");
    for n in &g.nodes {
        out.push_str("   [");
        name(&mut out, &n.name);
        out.push_str("] ");
        let outs: Vec<String> = n
            .outputs
            .iter()
            .map(|o| {
                let mut s = String::new();
                name(&mut s, &g.value(*o).name);
                s
            })
            .collect();
        out.push_str(&outs.join(", "));
        out.push_str(" = ");
        out.push_str(&n.op_type);
        let mut attrs = attributes(&n.op);
        if n.op == Op::Constant
            && let Some(t) = n.outputs.first().and_then(|o| g.value(*o).constant.as_ref())
        {
            let mut s = String::from("value: tensor = ");
            tensor_text(&mut s, t, max_values);
            attrs.push(s);
        }
        if !attrs.is_empty() {
            let _ = write!(out, " <{}>", attrs.join(", "));
        }
        let ins: Vec<String> = n
            .inputs
            .iter()
            .map(|i| match i {
                Some(id) => {
                    let mut s = String::new();
                    name(&mut s, &g.value(*id).name);
                    s
                }
                None => "\"\"".to_string(),
            })
            .collect();
        let _ = writeln!(out, " ({})", ins.join(", "));
    }
    out.push_str("}\n");
    out
}
