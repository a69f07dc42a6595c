//! The parsed form of one assembly statement, before names and fields are resolved.

/// A byte range in the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The range `start..end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
}

/// A word with its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word<'s> {
    /// The text.
    pub text: &'s str,
    /// Where it is.
    pub span: Span,
}

/// A statement: a directive or mnemonic followed by arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stmt<'s> {
    /// `.dma`, `mx.matmul`, ...
    pub head: Word<'s>,
    /// Arguments in order.
    pub args: Vec<Arg<'s>>,
}

impl Stmt<'_> {
    /// Whether the head is a directive.
    pub fn is_directive(&self) -> bool {
        self.head.text.starts_with('.')
    }
}

/// `key=value` or a positional value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg<'s> {
    /// The key, for `key=value`.
    pub key: Option<Word<'s>>,
    /// One or more comma-separated items.
    pub items: Vec<Item<'s>>,
    /// The whole argument.
    pub span: Span,
}

/// One value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item<'s> {
    /// An expression.
    Expr(Expr<'s>),
    /// `space:expr`, a local address.
    Qualified {
        /// `spad` or `acc`.
        space: Word<'s>,
        /// The offset.
        offset: Expr<'s>,
        /// The whole item.
        span: Span,
    },
}

impl Item<'_> {
    /// Where the item is.
    pub fn span(&self) -> Span {
        match self {
            Item::Expr(e) => e.span(),
            Item::Qualified { span, .. } => *span,
        }
    }
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
}

/// An integer expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr<'s> {
    /// A literal.
    Int(u64, Span),
    /// A name.
    Name(Word<'s>),
    /// `lhs op rhs`.
    Bin(Box<Expr<'s>>, BinOp, Box<Expr<'s>>, Span),
}

/// Dropped iteratively: `1+1+...+1` with 10^5 terms is a tree that deep, and the derived drop
/// would recurse once per level.
impl Drop for Expr<'_> {
    fn drop(&mut self) {
        let leaf = || Expr::Int(0, Span::new(0, 0));
        let Expr::Bin(a, _, b, _) = self else { return };
        let mut stack =
            vec![std::mem::replace(&mut **a, leaf()), std::mem::replace(&mut **b, leaf())];
        while let Some(mut e) = stack.pop() {
            if let Expr::Bin(a, _, b, _) = &mut e {
                stack.push(std::mem::replace(&mut **a, leaf()));
                stack.push(std::mem::replace(&mut **b, leaf()));
            }
        }
    }
}

impl Expr<'_> {
    /// Where the expression is.
    pub fn span(&self) -> Span {
        match self {
            Expr::Int(_, s) | Expr::Bin(_, _, _, s) => *s,
            Expr::Name(w) => w.span,
        }
    }
}
