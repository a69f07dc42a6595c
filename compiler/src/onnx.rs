//! ONNX import: a binary `.onnx` file (with external-data weights) into the graph IR.
//!
//! Every node imports, supported or not: an op the compiler does not know, an attribute value it
//! does not handle, another domain or an unsupported data type becomes an `Op::Unsupported`
//! node that keeps its reason, so `accelc check` can list every blocker at once. Errors that make
//! the file unusable (malformed protobuf, an undefined input, a duplicate value name) name the
//! node and what is wrong.

use crate::Clipped;
use crate::ir::{AspectPolicy, NearestMode, ResizeCoords, ResizeMode};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use bytes::Bytes;
use prost::Message;

use crate::ir::{
    AutoPad, BinaryOp, DType, DeclaredType, Graph, Node, Op, Tensor, TensorType, UnaryOp, Value,
    ValueId, Window,
};
use crate::proto::attribute_proto::AttributeType;
use crate::proto::{self, AttributeProto, NodeProto, TensorProto};

/// How a refusal for an attribute the importer does not handle ends (after "attribute `NAME` of
/// OP "); tests look for it.
pub const UNREAD: &str = "is not supported (the importer does not handle it)";

/// Oldest default-domain opset accepted.
pub const MIN_OPSET: i64 = 7;
/// Newest default-domain opset accepted.
pub const MAX_OPSET: i64 = 28;

/// Why a model cannot be imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportError {
    /// The node, when one is at fault.
    pub node: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(n) => write!(f, "node `{}`: {}", Clipped(n), Clipped(&self.message)),
            None => write!(f, "{}", Clipped(&self.message)),
        }
    }
}

impl std::error::Error for ImportError {}

pub(crate) fn err(message: impl Into<String>) -> ImportError {
    ImportError { node: None, message: message.into() }
}

/// Import options.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Shapes for graph inputs with symbolic dimensions, by input name.
    pub input_shapes: HashMap<String, Vec<usize>>,
}

/// Reads and imports a model file; external data is resolved next to it.
pub fn load(path: &Path, opts: &ImportOptions) -> Result<Graph, ImportError> {
    let data = accelc_isa::file::read_regular(path, accelc_isa::file::MAX_FILE_BYTES)
        .map_err(|e| err(e.to_string()))?;
    import(Bytes::from(data), path.parent(), opts)
}

/// Imports a model from its bytes; `base_dir` resolves external-data files.
pub fn import(
    data: Bytes,
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Graph, ImportError> {
    let model = proto::ModelProto::decode(data)
        .map_err(|e| err(format!("malformed ONNX protobuf: {e}")))?;
    // ONNX's checker: each domain is imported once (two default-domain versions would make the
    // meaning of every node ambiguous).
    let mut domains: Vec<&str> = model
        .opset_import
        .iter()
        .map(|o| match o.domain.as_deref().unwrap_or("") {
            "ai.onnx" => "",
            d => d,
        })
        .collect();
    domains.sort_unstable();
    if let Some(w) = domains.windows(2).find(|w| w[0] == w[1]) {
        let d = if w[0].is_empty() { "the default domain" } else { w[0] };
        return Err(err(format!("opset_import lists {} twice", Clipped(d))));
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| {
            o.domain.as_deref().unwrap_or("").is_empty() || o.domain.as_deref() == Some("ai.onnx")
        })
        .and_then(|o| o.version)
        .unwrap_or(1);
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(err(format!(
            "default-domain opset {opset} is outside the supported {MIN_OPSET}..={MAX_OPSET}"
        )));
    }
    let graph = model.graph.ok_or_else(|| err("the model has no graph"))?;
    let mut b = Builder {
        g: Graph { opset, ..Graph::default() },
        names: HashMap::new(),
        base_dir,
        unsupported: HashMap::new(),
    };

    for init in &graph.initializer {
        let name = init.name.clone().unwrap_or_default();
        let code = init.data_type.unwrap_or(0);
        if DType::from_onnx(code).is_none() {
            // Not fatal: the nodes that use it become blockers that `check` lists.
            let id =
                b.define(&name, Value { name: name.clone(), ty: None, constant: None }, None)?;
            b.unsupported.insert(id, format!("data type {}", DType::onnx_name(code)));
            continue;
        }
        let t = b.tensor(init).map_err(|m| err(format!("initializer `{name}`: {m}")))?;
        let ty = TensorType { dtype: t.dtype, shape: t.shape.clone() };
        b.define(&name, Value { name: name.clone(), ty: Some(ty), constant: Some(t) }, None)?;
    }
    // A shape for an input the model does not have is a mistake worth naming (before any
    // input's own error, which would suggest the wrong fix).
    let input_names: Vec<&str> = graph
        .input
        .iter()
        .filter_map(|i| i.name.as_deref())
        .filter(|n| !b.names.contains_key(*n))
        .collect();
    let mut unknown: Vec<&String> =
        opts.input_shapes.keys().filter(|k| !input_names.contains(&k.as_str())).collect();
    unknown.sort();
    if let Some(k) = unknown.first() {
        return Err(err(format!(
            "--input-shape names `{k}`, which is not an input of the model (inputs: {})",
            input_names.join(", ")
        )));
    }
    for input in &graph.input {
        let name = input.name.clone().unwrap_or_default();
        if let Some(id) = b.names.get(name.as_str()) {
            if b.g.inputs.contains(id) {
                return Err(err(format!("graph input `{name}` is listed twice")));
            }
            // An initializer listed as an input (IR version < 4): the declaration must fit it.
            if let (Some(d), Some(t)) = (declared_type(input), b.g.value(*id).ty.as_ref())
                && !d.admits(t)
            {
                return Err(err(format!(
                    "graph input `{name}` is declared {d} but its initializer is {t}"
                )));
            }
            continue;
        }
        let ty = match value_type(input, opts) {
            Ok(ty) => Some(ty),
            Err(m) if m.starts_with("data type") => {
                let id =
                    b.define(&name, Value { name: name.clone(), ty: None, constant: None }, None)?;
                b.unsupported.insert(id, m.trim_end_matches(" is not supported").to_string());
                b.g.inputs.push(id);
                continue;
            }
            Err(m) => return Err(err(format!("graph input `{name}`: {m}"))),
        };
        let id = b.define(&name, Value { name: name.clone(), ty, constant: None }, None)?;
        b.g.inputs.push(id);
    }
    for (i, node) in graph.node.iter().enumerate() {
        b.node(node, i)?;
    }
    for out in &graph.output {
        let name = out.name.clone().unwrap_or_default();
        let id = *b
            .names
            .get(name.as_str())
            .ok_or_else(|| err(format!("graph output `{name}` is not produced")))?;
        if b.g.outputs.contains(&id) {
            return Err(err(format!("graph output `{name}` is listed twice")));
        }
        b.g.outputs.push(id);
        if let Some(d) = declared_type(out) {
            b.g.declared_outputs.push((id, d));
        }
    }
    Ok(b.g)
}

/// A value's type as declared, when it is a tensor type.
fn declared_type(v: &proto::ValueInfoProto) -> Option<DeclaredType> {
    let Some(proto::type_proto::Value::TensorType(tt)) =
        v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return None;
    };
    let dims = tt.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match d.value {
                Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) if v >= 0 => {
                    usize::try_from(v).ok()
                }
                _ => None,
            })
            .collect()
    });
    Some(DeclaredType { elem_type: tt.elem_type.unwrap_or(0), dims })
}

/// The type of a graph input.
pub(crate) fn value_type(
    v: &proto::ValueInfoProto,
    opts: &ImportOptions,
) -> Result<TensorType, String> {
    let name = v.name.clone().unwrap_or_default();
    let Some(proto::type_proto::Value::TensorType(tt)) =
        v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err("is not a tensor".into());
    };
    let code = tt.elem_type.unwrap_or(0);
    let dtype = DType::from_onnx(code)
        .ok_or_else(|| format!("data type {} is not supported", DType::onnx_name(code)))?;
    let fits = |shape: &[usize]| -> Result<(), String> {
        shape
            .iter()
            .try_fold(dtype.size() as u64, |a, d| a.checked_mul(*d as u64))
            .map(|_| ())
            .ok_or_else(|| format!("shape {shape:?} has more bytes than 64 bits can count"))
    };
    let dims = tt.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]);
    if let Some(shape) = opts.input_shapes.get(&name) {
        fits(shape)?;
        // A given shape fixes symbolic dimensions; it may not contradict declared ones.
        let declared = tt.shape.is_some();
        if declared && dims.len() != shape.len() {
            return Err(format!(
                "--input-shape gives {} dimensions; the model declares {}",
                shape.len(),
                dims.len()
            ));
        }
        for (i, (d, s)) in dims.iter().zip(shape).enumerate() {
            if let Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) = &d.value
                && *v >= 0
                && *v as usize != *s
            {
                return Err(format!(
                    "--input-shape gives dimension {i} as {s}; the model declares {v}"
                ));
            }
        }
        return Ok(TensorType { dtype, shape: shape.clone() });
    }
    let mut shape = Vec::with_capacity(dims.len());
    for d in dims {
        match &d.value {
            Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => {
                shape.push(*v as usize)
            }
            Some(proto::tensor_shape_proto::dimension::Value::DimParam(p)) => {
                return Err(format!(
                    "dimension `{p}` is symbolic; fix it with --input-shape {name}=..."
                ));
            }
            _ => return Err("has an unknown dimension; fix it with --input-shape".into()),
        }
    }
    fits(&shape)?;
    Ok(TensorType { dtype, shape })
}

pub(crate) struct Builder<'a> {
    g: Graph,
    names: HashMap<String, ValueId>,
    base_dir: Option<&'a Path>,
    /// Values of a data type the compiler does not support, with the type's description.
    unsupported: HashMap<ValueId, String>,
}

/// Attribute lookup for one node. An attribute read as the wrong type is recorded in `bad`
/// (the file is malformed) instead of silently taking the default.
///
/// Every lookup is recorded, so after conversion an attribute the converter never asked for is
/// known to be unhandled and the node is refused naming it (an attribute is either honoured or
/// refused, never silently dropped).
pub(crate) struct Attrs<'n> {
    pub(crate) node: &'n NodeProto,
    pub(crate) bad: std::cell::RefCell<Option<String>>,
    pub(crate) read: std::cell::RefCell<Vec<&'static str>>,
}

impl<'n> Attrs<'n> {
    pub(crate) fn new(node: &'n NodeProto) -> Attrs<'n> {
        Attrs {
            node,
            bad: std::cell::RefCell::new(None),
            read: std::cell::RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn get(&self, name: &'static str) -> Option<&AttributeProto> {
        self.read.borrow_mut().push(name);
        self.node.attribute.iter().find(|a| a.name.as_deref() == Some(name))
    }

    /// The first attribute on the node that conversion did not look at.
    pub(crate) fn unread(&self) -> Option<String> {
        let read = self.read.borrow();
        self.node
            .attribute
            .iter()
            .map(|a| a.name.clone().unwrap_or_default())
            .find(|n| !read.contains(&n.as_str()))
    }

    /// Records that the node breaks an ONNX rule (an undefined mode, a count that contradicts
    /// the node), so the importer refuses the model naming the node instead of keeping the
    /// node as merely unsupported; returns `message` for the caller's `Err`.
    pub(crate) fn invalid(&self, message: String) -> String {
        self.bad.borrow_mut().get_or_insert(message.clone());
        message
    }

    /// The attribute, if present with type `want`.
    pub(crate) fn typed(&self, name: &'static str, want: AttributeType) -> Option<&AttributeProto> {
        let a = self.get(name)?;
        if a.r#type != Some(want as i32) {
            let got = a
                .r#type
                .and_then(|t| AttributeType::try_from(t).ok())
                .map_or("untyped", |t| t.as_str_name());
            self.bad.borrow_mut().get_or_insert(format!(
                "attribute `{name}` is {got}, expected {}",
                want.as_str_name()
            ));
            return None;
        }
        Some(a)
    }
    pub(crate) fn f32(&self, name: &'static str, default: f32) -> f32 {
        self.typed(name, AttributeType::Float).and_then(|a| a.f).unwrap_or(default)
    }
    pub(crate) fn i64(&self, name: &'static str, default: i64) -> i64 {
        self.typed(name, AttributeType::Int).and_then(|a| a.i).unwrap_or(default)
    }
    pub(crate) fn ints(&self, name: &'static str) -> Option<Vec<i64>> {
        self.typed(name, AttributeType::Ints).map(|a| a.ints.clone())
    }
    pub(crate) fn string(&self, name: &'static str) -> Option<String> {
        self.typed(name, AttributeType::String)
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }
    pub(crate) fn usizes(&self, name: &'static str) -> Result<Vec<usize>, String> {
        self.ints(name)
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                usize::try_from(v).map_err(|_| format!("attribute `{name}` has negative value {v}"))
            })
            .collect()
    }
}

impl Builder<'_> {
    fn define(
        &mut self,
        name: &str,
        value: Value,
        node: Option<&str>,
    ) -> Result<ValueId, ImportError> {
        if self.names.contains_key(name) {
            return Err(ImportError {
                node: node.map(str::to_string),
                message: format!("value `{name}` is defined twice"),
            });
        }
        let id = self.g.add_value(value);
        self.names.insert(name.to_string(), id);
        Ok(id)
    }

    fn tensor(&self, t: &TensorProto) -> Result<Tensor, String> {
        tensor_from_proto(t, self.base_dir)
    }
}

/// Decodes a serialized `TensorProto` (the `.pb` files of the ONNX backend tests) into its name
/// (empty when unset) and tensor; external data is refused.
///
/// Errors: the bytes are not a `TensorProto`, or the tensor is not one [`tensor_from_proto`]
/// accepts.
pub fn decode_tensor(bytes: &[u8]) -> Result<(String, Tensor), String> {
    let t = TensorProto::decode(bytes).map_err(|e| format!("not a TensorProto: {e}"))?;
    let tensor = tensor_from_proto(&t, None)?;
    Ok((t.name.clone().unwrap_or_default(), tensor))
}

/// Converts a `TensorProto` (raw or typed data, or external data next to `base_dir`).
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor, String> {
    let code = t.data_type.unwrap_or(0);
    let dtype = DType::from_onnx(code)
        .ok_or_else(|| format!("data type {} is not supported", DType::onnx_name(code)))?;
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    let n =
        shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or("element count overflows")?;
    let bytes = n.checked_mul(dtype.size()).ok_or("byte size overflows")?;
    let data: Bytes = if t.data_location == Some(proto::tensor_proto::DataLocation::External as i32)
    {
        external(t, base_dir)?
    } else if let Some(raw) = t.raw_data.as_ref().filter(|r| !r.is_empty()) {
        raw.clone()
    } else {
        match dtype {
            DType::F32 => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::I64 => t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::I32 => t.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::I8 | DType::U8 | DType::Bool => t.int32_data.iter().map(|v| *v as u8).collect(),
            DType::I16 | DType::U16 => {
                t.int32_data.iter().flat_map(|v| (*v as u16).to_le_bytes()).collect()
            }
            DType::U32 => t.uint64_data.iter().flat_map(|v| (*v as u32).to_le_bytes()).collect(),
            DType::U64 => t.uint64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::F64 => t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            // ONNX keeps the 16-bit patterns of float16 and bfloat16 in `int32_data`.
            DType::F16 | DType::BF16 => {
                t.int32_data.iter().flat_map(|v| (*v as u16).to_le_bytes()).collect()
            }
        }
    };
    if data.len() != bytes {
        return Err(format!("holds {} bytes, but {dtype}{shape:?} needs {bytes}", data.len()));
    }
    Ok(Tensor { dtype, shape, data })
}

pub(crate) fn external(t: &TensorProto, base_dir: Option<&Path>) -> Result<Bytes, String> {
    let entry = |k: &str| {
        t.external_data.iter().find(|e| e.key.as_deref() == Some(k)).and_then(|e| e.value.clone())
    };
    let location = entry("location").ok_or("external data without a location")?;
    if Path::new(&location).is_absolute() || location.split(['/', '\\']).any(|c| c == "..") {
        return Err(format!("external data location `{location}` leaves the model's directory"));
    }
    let base = base_dir.ok_or("external data needs the model's directory")?;
    let base = if base.as_os_str().is_empty() { Path::new(".") } else { base };
    let cannot = |e: std::io::Error| format!("cannot read external data `{location}`: {e}");
    // A symbolic link may point anywhere: the file, resolved, must lie inside the model's
    // directory, resolved; and only a regular file is read (a FIFO would block, a device
    // would never end).
    let root = base.canonicalize().map_err(cannot)?;
    let real = base.join(&location).canonicalize().map_err(cannot)?;
    if !real.starts_with(&root) {
        return Err(format!(
            "external data location `{location}` resolves outside the model's directory"
        ));
    }
    let meta = std::fs::metadata(&real).map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("external data `{location}` is not a regular file"));
    }
    let size = meta.len();
    let offset: u64 =
        entry("offset").map_or(Ok(0), |v| v.parse()).map_err(|_| "bad external data offset")?;
    let length: u64 = match entry("length") {
        Some(v) => v.parse().map_err(|_| "bad external data length")?,
        None => size.saturating_sub(offset),
    };
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "external data {offset}+{length} lies outside `{location}` ({size} bytes)"
        ));
    }
    // Exactly offset..offset+length, never the whole file.
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&real).map_err(cannot)?;
    f.seek(SeekFrom::Start(offset)).map_err(cannot)?;
    let mut data = Vec::new();
    f.take(length).read_to_end(&mut data).map_err(cannot)?;
    if data.len() as u64 != length {
        return Err(format!("external data `{location}` changed while it was read"));
    }
    Ok(Bytes::from(data))
}

/// The ONNX checker's count rule: a node of a converted op type lists as many inputs and
/// outputs as its schema allows at `opset`, and none of the required inputs is omitted.
fn check_arity(n: &NodeProto, op_type: &str, opset: i64) -> Result<(), String> {
    let Some(a) = crate::ops::arity_of(op_type, opset) else { return Ok(()) };
    let range = |r: &std::ops::RangeInclusive<usize>, what: &str| match (*r.start(), *r.end()) {
        (1, 1) => format!("1 {what}"),
        (lo, hi) if lo == hi => format!("{lo} {what}s"),
        (lo, crate::ops::MANY) => format!("at least {lo} {what}{}", if lo == 1 { "" } else { "s" }),
        (lo, hi) => format!("{lo} to {hi} {what}s"),
    };
    if !a.inputs.contains(&n.input.len()) {
        return Err(format!(
            "{op_type}-{opset} takes {}, not {}",
            range(&a.inputs, "input"),
            n.input.len()
        ));
    }
    if let Some(i) = n.input.iter().take(*a.inputs.start()).position(String::is_empty) {
        return Err(format!("input {i} of {op_type} is required but omitted (an empty name)"));
    }
    if !a.outputs.contains(&n.output.len()) {
        return Err(format!(
            "{op_type}-{opset} has {}, not {}",
            range(&a.outputs, "output"),
            n.output.len()
        ));
    }
    if n.output.first().is_some_and(String::is_empty) && *a.outputs.start() > 0 {
        return Err(format!("output 0 of {op_type} is required but omitted (an empty name)"));
    }
    Ok(())
}

impl Builder<'_> {
    fn node(&mut self, n: &NodeProto, index: usize) -> Result<(), ImportError> {
        let op_type = n.op_type.clone().unwrap_or_default();
        let name = n
            .name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{op_type}_{index}"));
        let fail = |m: String| ImportError { node: Some(name.clone()), message: m };
        let mut inputs = Vec::with_capacity(n.input.len());
        for input in &n.input {
            if input.is_empty() {
                inputs.push(None);
            } else {
                let id = self.names.get(input.as_str()).ok_or_else(|| {
                    fail(format!(
                        "input `{input}` is not defined before this node (missing, or a cycle)"
                    ))
                })?;
                inputs.push(Some(*id));
            }
        }
        let mut attr_names: Vec<&str> =
            n.attribute.iter().filter_map(|a| a.name.as_deref()).collect();
        attr_names.sort_unstable();
        if let Some(w) = attr_names.windows(2).find(|w| w[0] == w[1]) {
            return Err(fail(format!("attribute `{}` is given twice", w[0])));
        }
        let domain = n.domain.clone().unwrap_or_default();
        if domain.is_empty() || domain == "ai.onnx" {
            check_arity(n, &op_type, self.g.opset).map_err(&fail)?;
        }
        let unsupported_input = inputs.iter().flatten().find_map(|id| {
            self.unsupported.get(id).map(|why| {
                format!("input `{}` has {why}, which is not supported", self.g.value(*id).name)
            })
        });
        if unsupported_input.is_none()
            && domain.is_empty()
            && op_type == "BatchNormalization"
            && self.g.opset < 9
            && n.output.iter().filter(|o| !o.is_empty()).count() == 1
            && Attrs::new(n).i64("spatial", 1) == 0
        {
            return self.batchnorm_per_activation(n, &name, &inputs);
        }
        if unsupported_input.is_none() && domain.is_empty() && op_type == "Upsample" {
            return self.upsample(n, &name, &inputs);
        }
        let op = if let Some(reason) = unsupported_input {
            Op::Unsupported { op_type: op_type.clone(), reason }
        } else if !domain.is_empty() && domain != "ai.onnx" {
            Op::Unsupported {
                op_type: op_type.clone(),
                reason: format!("domain `{domain}` is not supported"),
            }
        } else {
            let attrs = Attrs::new(n);
            let opset = self.g.opset;
            let op = convert(&op_type, &attrs, opset)
                .and_then(|op| match attrs.unread() {
                    Some(a) => Err(format!("attribute `{a}` of {op_type} {UNREAD}")),
                    None => Ok(op),
                })
                .and_then(|op| match crate::ops::since(&op_type) {
                    Some(v) if opset < v => Err(format!(
                        "{op_type} is not defined before opset {v} (the model imports {opset})"
                    )),
                    _ => Ok(op),
                });
            let op =
                op.unwrap_or_else(|reason| Op::Unsupported { op_type: op_type.clone(), reason });
            if let Some(bad) = attrs.bad.into_inner() {
                return Err(fail(bad));
            }
            op
        };
        // A Constant's value becomes the output's contents.
        let constant =
            if op == Op::Constant { Some(self.constant_value(n).map_err(&fail)?) } else { None };
        // Outputs keep their positions: an omitted optional output before a present one
        // (LayerNormalization's `y, "", inv_std_dev`) gets an unused placeholder value, so
        // output `i` of the node is always the op's output `i`. Trailing omitted ones are dropped.
        let used = n.output.iter().rposition(|o| !o.is_empty()).map_or(0, |i| i + 1);
        let mut outputs = Vec::with_capacity(used);
        for (i, out) in n.output[..used].iter().enumerate() {
            let out =
                if out.is_empty() { format!("{name}:omitted_output_{i}") } else { out.clone() };
            let ty =
                constant.as_ref().map(|t| TensorType { dtype: t.dtype, shape: t.shape.clone() });
            let v = Value { name: out.clone(), ty, constant: constant.clone() };
            outputs.push(self.define(&out, v, Some(&name))?);
        }
        self.g.nodes.push(Node { name, op_type, op, inputs, outputs });
        Ok(())
    }

    /// BatchNormalization-7 with `spatial = 0`: scale, bias, mean and variance have shape
    /// (C, D1, ..., Dn) and apply per activation, `y = scale · (x - mean) / sqrt(var + epsilon)
    /// plus bias` with the parameters broadcast over the batch axis (ONNX
    /// BatchNormalization-7). Imported as those element-wise nodes, so every later stage sees
    /// ops it knows.
    fn batchnorm_per_activation(
        &mut self,
        n: &NodeProto,
        name: &str,
        inputs: &[Option<ValueId>],
    ) -> Result<(), ImportError> {
        let fail = |m: String| ImportError { node: Some(name.to_string()), message: m };
        let a = Attrs::new(n);
        let epsilon = a.f32("epsilon", 1e-5);
        let _ = (a.get("momentum"), a.get("spatial"));
        if let Some(bad) = a.bad.borrow().clone() {
            return Err(fail(bad));
        }
        if let Some(other) = a.unread() {
            return Err(fail(format!("attribute `{other}` of BatchNormalization {UNREAD}")));
        }
        let [Some(x), Some(scale), Some(bias), Some(mean), Some(var)] = inputs else {
            return Err(fail("BatchNormalization needs five inputs".into()));
        };
        let out = n.output.iter().find(|o| !o.is_empty()).cloned().unwrap_or_default();
        let eps_name = format!("{name}/epsilon");
        let eps = self.define(
            &eps_name,
            Value {
                name: eps_name.clone(),
                ty: Some(TensorType { dtype: DType::F32, shape: vec![] }),
                constant: Some(Tensor::from_f32(vec![], &[epsilon])),
            },
            Some(name),
        )?;
        // One element-wise node per step; the last one keeps the node's name and output.
        let push = |b: &mut Self, tag: &str, op_type: &str, op: Op, ins: Vec<ValueId>| {
            let (vname, nname) = if tag.is_empty() {
                (out.clone(), name.to_string())
            } else {
                (format!("{name}/{tag}"), format!("{name}/{tag}"))
            };
            let v = b.define(
                &vname,
                Value { name: vname.clone(), ty: None, constant: None },
                Some(name),
            )?;
            b.g.nodes.push(Node {
                name: nname,
                op_type: op_type.into(),
                op,
                inputs: ins.into_iter().map(Some).collect(),
                outputs: vec![v],
            });
            Ok::<ValueId, ImportError>(v)
        };
        let centered = push(self, "centered", "Sub", Op::Binary(BinaryOp::Sub), vec![*x, *mean])?;
        let var_eps = push(self, "var_eps", "Add", Op::Binary(BinaryOp::Add), vec![*var, eps])?;
        let std = push(self, "std", "Sqrt", Op::Unary(UnaryOp::Sqrt), vec![var_eps])?;
        let normalized =
            push(self, "normalized", "Div", Op::Binary(BinaryOp::Div), vec![centered, std])?;
        let scaled =
            push(self, "scaled", "Mul", Op::Binary(BinaryOp::Mul), vec![normalized, *scale])?;
        push(self, "", "Add", Op::Binary(BinaryOp::Add), vec![scaled, *bias])?;
        Ok(())
    }

    /// Upsample (opsets 7–9, deprecated since 10) as the Resize it is: nearest (rounding
    /// down) or linear, with the asymmetric coordinate transformation (`x_in = x_out / scale`),
    /// the scales from the attribute (7, 8) or input 1 (9).
    fn upsample(
        &mut self,
        n: &NodeProto,
        name: &str,
        inputs: &[Option<ValueId>],
    ) -> Result<(), ImportError> {
        let fail = |m: String| ImportError { node: Some(name.to_string()), message: m };
        let a = Attrs::new(n);
        let mode = match a.string("mode").as_deref() {
            None | Some("nearest") => ResizeMode::Nearest,
            Some("linear" | "bilinear") => ResizeMode::Linear,
            Some(other) => return Err(fail(format!("Upsample mode `{other}` is not defined"))),
        };
        // accelc's own IR dump prints it as it holds it: (X, "", scales) with the coordinate
        // rule spelled out; that form reads back too.
        let printed = inputs.len() == 3;
        if printed {
            let coords = a.string("coordinate_transformation_mode");
            let near = a.string("nearest_mode");
            if coords.as_deref().is_some_and(|c| c != "asymmetric")
                || near.as_deref().is_some_and(|c| c != "floor")
            {
                return Err(fail("Upsample is asymmetric, rounding down".into()));
            }
        }
        if !(7..=9).contains(&self.g.opset) && !printed {
            return Err(fail(format!(
                "Upsample is defined at opsets 7 to 9 (deprecated since 10), not {}",
                self.g.opset
            )));
        }
        let scales = if printed {
            inputs[2].ok_or_else(|| fail("Upsample needs the scales".into()))?
        } else if self.g.opset < 9 {
            let s = a.typed("scales", AttributeType::Floats).map(|v| v.floats.clone());
            if let Some(bad) = a.bad.borrow().clone() {
                return Err(fail(bad));
            }
            let s = s.ok_or_else(|| fail("Upsample-7 needs the scales attribute".into()))?;
            if let Some(v) = s.iter().find(|v| v.is_nan() || **v < 1.0) {
                return Err(fail(format!("Upsample scale {v} is below 1 (it only enlarges)")));
            }
            let sname = format!("{name}/scales");
            self.define(
                &sname,
                Value {
                    name: sname.clone(),
                    ty: Some(TensorType { dtype: DType::F32, shape: vec![s.len()] }),
                    constant: Some(Tensor::from_f32(vec![s.len()], &s)),
                },
                Some(name),
            )?
        } else {
            inputs
                .get(1)
                .copied()
                .flatten()
                .ok_or_else(|| fail("Upsample-9 needs the scales input".into()))?
        };
        if let Some(bad) = a.bad.borrow().clone() {
            return Err(fail(bad));
        }
        if let Some(other) = a.unread() {
            return Err(fail(format!("attribute `{other}` of Upsample {UNREAD}")));
        }
        let x = inputs.first().copied().flatten().ok_or_else(|| fail("Upsample needs X".into()))?;
        let out = n.output.iter().find(|o| !o.is_empty()).cloned().unwrap_or_default();
        let v =
            self.define(&out, Value { name: out.clone(), ty: None, constant: None }, Some(name))?;
        self.g.nodes.push(Node {
            name: name.to_string(),
            op_type: "Upsample".into(),
            op: Op::Resize {
                mode,
                coords: ResizeCoords::Asymmetric,
                nearest: NearestMode::Floor,
                axes: None,
                policy: AspectPolicy::Stretch,
            },
            inputs: vec![Some(x), None, Some(scales)],
            outputs: vec![v],
        });
        Ok(())
    }

    fn constant_value(&self, n: &NodeProto) -> Result<Tensor, String> {
        // Typed lookups: a value attribute of the wrong type (`value_floats` holding INTS) is
        // an error naming it, never an empty tensor.
        let a = Attrs::new(n);
        let t = if let Some(t) = a.typed("value", AttributeType::Tensor) {
            self.tensor(t.t.as_ref().ok_or("Constant `value` holds no tensor")?)
        } else if let Some(v) = a.typed("value_float", AttributeType::Float) {
            Ok(Tensor::from_f32(vec![], &[v.f.unwrap_or(0.0)]))
        } else if let Some(v) = a.typed("value_floats", AttributeType::Floats) {
            Ok(Tensor::from_f32(vec![v.floats.len()], &v.floats))
        } else if let Some(v) = a.typed("value_int", AttributeType::Int) {
            Ok(Tensor::from_i64(vec![], &[v.i.unwrap_or(0)]))
        } else if let Some(v) = a.typed("value_ints", AttributeType::Ints) {
            Ok(Tensor::from_i64(vec![v.ints.len()], &v.ints))
        } else {
            Err("Constant without a supported value attribute".to_string())
        };
        if let Some(bad) = a.bad.into_inner() {
            return Err(bad);
        }
        t
    }
}

/// The `group` attribute: at least 1 (0 or a negative count is refused, not clamped).
pub(crate) fn group(a: &Attrs<'_>) -> Result<usize, String> {
    let g = a.i64("group", 1);
    usize::try_from(g)
        .ok()
        .filter(|g| *g >= 1)
        .ok_or_else(|| a.invalid(format!("group = {g} is not a positive count")))
}

pub(crate) fn window(a: &Attrs<'_>) -> Result<Window, String> {
    let auto_pad = match a.string("auto_pad").as_deref() {
        None | Some("NOTSET") | Some("") => AutoPad::NotSet,
        Some("SAME_UPPER") => AutoPad::SameUpper,
        Some("SAME_LOWER") => AutoPad::SameLower,
        Some("VALID") => AutoPad::Valid,
        Some(other) => return Err(a.invalid(format!("auto_pad `{other}` is not defined"))),
    };
    Ok(Window {
        kernel: a.usizes("kernel_shape")?,
        strides: a.usizes("strides")?,
        dilations: a.usizes("dilations")?,
        pads: a.usizes("pads")?,
        auto_pad,
        ceil_mode: a.i64("ceil_mode", 0) != 0,
    })
}

/// The IR op for an ONNX node, or why it is not supported.
pub(crate) fn convert(op_type: &str, a: &Attrs<'_>, opset: i64) -> Result<Op, String> {
    crate::ops::import(op_type, a, opset)
}
