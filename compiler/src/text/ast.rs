//! The parsed form of an ONNX text model, before it becomes a `ModelProto`.

pub use accelc_isa::asm::ast::Span;

/// A name or keyword with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Word {
    /// The text (unquoted).
    pub text: String,
    /// Where it is.
    pub span: Span,
}

/// A literal.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    /// An integer.
    Int(i64, Span),
    /// A float (also `inf`, `-inf`, `nan` written as names).
    Float(f64, Span),
    /// A string.
    Str(String, Span),
}

impl Lit {
    /// Where it is.
    pub fn span(&self) -> Span {
        match self {
            Lit::Int(_, s) | Lit::Float(_, s) | Lit::Str(_, s) => *s,
        }
    }
}

/// `elem[dims]`, or `elem` alone (a tensor of unknown shape).
#[derive(Clone, Debug, PartialEq)]
pub struct TypeAst {
    /// Element type name.
    pub elem: Word,
    /// Dimensions: a number, or a name for a symbolic one.
    pub dims: Option<Vec<Dim>>,
}

/// One dimension.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    /// A size.
    Size(i64),
    /// A symbolic size.
    Sym(String),
}

/// `type name`.
#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    /// Its type.
    pub ty: TypeAst,
    /// Its name.
    pub name: Word,
}

/// An initializer: `type name = {data}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Init {
    /// Its type.
    pub ty: TypeAst,
    /// Its name.
    pub name: Word,
    /// Its elements.
    pub data: Vec<Lit>,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrVal {
    /// A single literal.
    Lit(Lit),
    /// A list.
    List(Vec<Lit>, Span),
    /// A tensor literal `type {data}`.
    Tensor(TypeAst, Vec<Lit>),
}

/// `name [: type] = value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    /// The name.
    pub name: Word,
    /// The declared type, if given.
    pub ty: Option<Word>,
    /// The value.
    pub value: AttrVal,
}

/// `[name] outputs = Op <attrs> (inputs)`.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeAst {
    /// The node name.
    pub name: Option<Word>,
    /// Output names.
    pub outputs: Vec<Word>,
    /// The op type, possibly domain-qualified (`com.example.Op`).
    pub op: Word,
    /// Attributes.
    pub attrs: Vec<Attr>,
    /// Input names; `""` is an omitted optional input.
    pub inputs: Vec<Word>,
}

/// A graph.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphAst {
    /// Its name.
    pub name: Word,
    /// Inputs.
    pub inputs: Vec<Decl>,
    /// Outputs.
    pub outputs: Vec<Decl>,
    /// Initializers.
    pub inits: Vec<Init>,
    /// Nodes.
    pub nodes: Vec<NodeAst>,
}

/// A header value.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderVal {
    /// A literal.
    Lit(Lit),
    /// An opset list: `["domain" : version, ...]`.
    Opsets(Vec<(String, i64)>),
}

/// A model: header entries and the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelAst {
    /// `key: value` entries.
    pub header: Vec<(Word, HeaderVal)>,
    /// The main graph.
    pub graph: GraphAst,
}
