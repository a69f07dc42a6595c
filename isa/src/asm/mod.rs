//! The assembler: text to [`Program`].
//!
//! One statement per line. A statement is a directive or an instruction mnemonic followed by
//! `key=value` arguments; comments run from `;` or `//` to the end of the line:
//!
//! ```text
//! .equ  TILE 512                       ; a named constant
//! .sem  in_full 0                      ; name semaphore 0
//! .sem  in_free 1 init=2               ; name semaphore 1, two tokens at job start
//! .seg  weights 1 size=4096 role=const ; name DRAM segment 1 and declare its size and role
//! .dma  tile x_bytes=TILE y_count=4 y_stride=2048 near_y_pitch=TILE
//! .shape row cols=32 dst_row=128 src0_row=128
//! dma.load desc=tile seg=weights offset=0x2000 dst=spad:0x400 wait=in_free signal=in_full
//! end code=0
//! ```
//!
//! Every field of an instruction must be given (the disassembler prints them all, so its
//! output always reassembles to the same bytes). Values are unsigned integer expressions with
//! `+ - * ( )`, names from `.equ`, `spad:OFFSET`/`acc:OFFSET` for local addresses, and names or
//! `s0`..`s15` for semaphores. Errors carry line and column and show the offending text; all of
//! a file's errors are reported at once.

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
    "/asm/grammar.rs"
);

use std::collections::HashMap;
use std::fmt::Write as _;

use logos::Logos;

use crate::blob::SegmentRole;
use crate::fields::{FieldKind, FieldValue, LocalAddr, Sem, Space};
use crate::inst::{Inst, OPS, OpInfo, RouteInfo, Sync, op_by_mnemonic};
use crate::program::{
    DmaDesc, MAX_DMA_DESCS, MAX_SHAPES, Program, SHAPE_SRC0_COL_BROADCAST,
    SHAPE_SRC1_COL_BROADCAST, Shape,
};
use ast::{Arg, Expr, Item, Span, Stmt, Word};
use lexer::{LexError, Tok};

/// An error at a place in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where.
    pub span: Span,
    /// What.
    pub message: String,
}

impl Diagnostic {
    fn new(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic { span, message: message.into() }
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
pub fn line_col(source: &str, at: usize) -> (usize, usize) {
    let at = at.min(source.len());
    let before = source.get(..at).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// Diagnostics [`render`] shows in full; the rest are counted.
pub const MAX_RENDERED: usize = 20;

/// Characters of a source line shown around the offending column (longer lines are cut).
const LINE_WINDOW: usize = 100;

/// Renders diagnostics the way compilers do: message, `file:line:col`, the line (a window of
/// it around the column when long), a caret under the offending text. At most
/// [`MAX_RENDERED`] are shown, then how many more there are, so the output stays bounded
/// whatever the input.
pub fn render(diags: &[Diagnostic], source: &str, filename: &str) -> String {
    let mut out = String::new();
    for d in diags.iter().take(MAX_RENDERED) {
        let (line, col) = line_col(source, d.span.start);
        let text = source.lines().nth(line - 1).unwrap_or("");
        let width = source
            .get(d.span.start..d.span.end.max(d.span.start))
            .map_or(1, |s| s.lines().next().unwrap_or("").chars().count().max(1));
        // A window of the line around the column, with `…` where it is cut.
        let chars: Vec<char> = text.chars().collect();
        let from = if chars.len() <= LINE_WINDOW {
            0
        } else {
            (col - 1).saturating_sub(LINE_WINDOW / 2).min(chars.len() - LINE_WINDOW)
        };
        let to = (from + LINE_WINDOW).min(chars.len());
        let lead = if from > 0 { "…" } else { "" };
        let tail = if to < chars.len() { "…" } else { "" };
        let shown: String = chars[from..to].iter().collect();
        let caret_at = col - 1 - from + lead.chars().count();
        let width = width.min(to.saturating_sub(col - 1).max(1));
        let gutter = line.to_string().len();
        let _ = writeln!(out, "error: {}", crate::Clipped(&d.message));
        let _ = writeln!(out, "{:gutter$}--> {filename}:{line}:{col}", "");
        let _ = writeln!(out, "{:gutter$} |", "");
        let _ = writeln!(out, "{line} | {lead}{shown}{tail}");
        let _ = writeln!(out, "{:gutter$} | {}{}", "", " ".repeat(caret_at), "^".repeat(width));
    }
    if diags.len() > MAX_RENDERED {
        let _ = writeln!(out, "... and {} more errors", diags.len() - MAX_RENDERED);
    }
    out
}

/// A segment named with `.seg`, with its declared size and role when given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSpec {
    /// Segment number.
    pub id: u8,
    /// The name in the source.
    pub name: String,
    /// `size=` and `role=`, when declared.
    pub decl: Option<(u64, SegmentRole)>,
}

/// An assembled source file: the program and the segments it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembled {
    /// The program.
    pub program: Program,
    /// Segments named with `.seg`, in source order.
    pub segments: Vec<SegmentSpec>,
}

/// Assembles `source` into a program, or returns every error found.
pub fn assemble(source: &str) -> Result<Program, Vec<Diagnostic>> {
    assemble_module(source).map(|m| m.program)
}

/// Assembles `source` and also returns the segment declarations.
pub fn assemble_module(source: &str) -> Result<Assembled, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let stmts = parse(source, &mut diags);
    let mut asm = Assembler::default();
    for stmt in stmts.iter().filter(|s| s.is_directive()) {
        if let Err(d) = asm.directive(stmt) {
            diags.push(d);
        }
    }
    let mut insts = Vec::new();
    for stmt in stmts.iter().filter(|s| !s.is_directive()) {
        match asm.instruction(stmt) {
            Ok(inst) => insts.push(inst),
            Err(d) => diags.push(d),
        }
    }
    if !diags.is_empty() {
        diags.sort_by_key(|d| d.span.start);
        return Err(diags);
    }
    let program = Program { insts, dma: asm.dma, shapes: asm.shapes, sem_init: asm.sem_init };
    Ok(Assembled { program, segments: asm.segments })
}

/// The most statements (instructions and directives) a source may have: twice the most
/// instructions a program may have ([`crate::program::MAX_INSTS`]), so memory stays bounded
/// by the limit, not by the file.
pub const MAX_STATEMENTS: usize = 2 * crate::program::MAX_INSTS;

/// The most diagnostics collected before the assembler stops reading.
pub const MAX_DIAGNOSTICS: usize = 10_000;

/// Lexes and parses every line; lines with errors are reported and skipped. Stops, with a
/// diagnostic where it stopped, after [`MAX_STATEMENTS`] statements or [`MAX_DIAGNOSTICS`]
/// errors.
fn parse<'s>(source: &'s str, diags: &mut Vec<Diagnostic>) -> Vec<Stmt<'s>> {
    let mut stmts = Vec::new();
    let mut line: Vec<(usize, Tok<'s>, usize)> = Vec::new();
    let mut line_ok = true;
    let mut lexer = Tok::lexer(source).spanned().peekable();
    loop {
        let next = lexer.next();
        let end_of_input = next.is_none();
        let end_of_line = matches!(next, None | Some((Ok(Tok::Newline), _)));
        match next {
            Some((Ok(Tok::Newline), _)) | None => {}
            Some((Ok(tok), span)) => line.push((span.start, tok, span.end)),
            Some((Err(e), span)) => {
                let text = source.get(span.clone()).unwrap_or("");
                let msg = match e {
                    LexError::Unexpected => format!("unexpected character `{text}`"),
                    LexError::BadInt => format!("`{text}` is not a 64-bit unsigned integer"),
                };
                diags.push(Diagnostic::new(Span::new(span.start, span.end), msg));
                line_ok = false;
            }
        }
        if end_of_line {
            if line_ok && !line.is_empty() {
                let tokens = line.iter().cloned().map(Ok::<_, LexError>);
                match grammar::StmtParser::new().parse(tokens) {
                    Ok(stmt) => stmts.push(stmt),
                    Err(e) => diags.push(parse_error(e, &line)),
                }
            }
            line.clear();
            line_ok = true;
            if end_of_input {
                break;
            }
            let at = lexer.peek().map_or(source.len(), |(_, span)| span.start);
            if stmts.len() >= MAX_STATEMENTS {
                diags.push(Diagnostic::new(
                    Span::new(at, at),
                    format!(
                        "more than {MAX_STATEMENTS} statements; a program has at most {} \
                         instructions (reading stopped here)",
                        crate::program::MAX_INSTS
                    ),
                ));
                break;
            }
            if diags.len() >= MAX_DIAGNOSTICS {
                diags.push(Diagnostic::new(
                    Span::new(at, at),
                    format!("{MAX_DIAGNOSTICS} errors; reading stopped here"),
                ));
                break;
            }
        }
    }
    stmts
}

fn parse_error(
    e: lalrpop_util::ParseError<usize, Tok<'_>, LexError>,
    line: &[(usize, Tok<'_>, usize)],
) -> Diagnostic {
    use lalrpop_util::ParseError as P;
    let expected = |exp: &[String]| -> String {
        let names: Vec<String> = exp.iter().map(|e| describe_terminal(e)).collect();
        if names.is_empty() { String::new() } else { format!(", expected {}", names.join(" or ")) }
    };
    let line_end = line.last().map_or(0, |t| t.2);
    match e {
        P::UnrecognizedToken { token: (l, tok, r), expected: exp } => {
            Diagnostic::new(Span::new(l, r), format!("unexpected {tok}{}", expected(&exp)))
        }
        P::UnrecognizedEof { expected: exp, .. } => Diagnostic::new(
            Span::new(line_end, line_end),
            format!("unexpected end of line{}", expected(&exp)),
        ),
        P::ExtraToken { token: (l, tok, r) } => {
            Diagnostic::new(Span::new(l, r), format!("unexpected {tok}"))
        }
        P::InvalidToken { location } => {
            Diagnostic::new(Span::new(location, location), "invalid token")
        }
        P::User { error } => Diagnostic::new(Span::new(line_end, line_end), format!("{error:?}")),
    }
}

fn describe_terminal(t: &str) -> String {
    match t.trim_matches('"') {
        "ident" => "a name".into(),
        "int" => "a number".into(),
        "directive" => "a directive".into(),
        other => format!("`{other}`"),
    }
}

/// What a name stands for.
#[derive(Clone, Copy, Debug)]
enum Sym {
    Const(u64),
    Sem(u8),
    Seg(u8),
    Dma(u16),
    Shape(u16),
}

impl Sym {
    fn what(&self) -> &'static str {
        match self {
            Sym::Const(_) => "a constant",
            Sym::Sem(_) => "a semaphore",
            Sym::Seg(_) => "a segment",
            Sym::Dma(_) => "a dma descriptor",
            Sym::Shape(_) => "a shape",
        }
    }
}

#[derive(Default)]
struct Assembler<'s> {
    syms: HashMap<&'s str, Sym>,
    dma: Vec<DmaDesc>,
    shapes: Vec<Shape>,
    sem_init: [u8; 16],
    segments: Vec<SegmentSpec>,
}

type Res<T> = Result<T, Diagnostic>;

/// `sN` for `N < 16`.
fn builtin_sem(name: &str) -> Option<u8> {
    let n: u8 = name.strip_prefix('s')?.parse().ok()?;
    if name.len() > 2 && name.as_bytes()[1] == b'0' {
        return None;
    }
    Sem::new(n).map(|_| n)
}

impl<'s> Assembler<'s> {
    fn define(&mut self, name: Word<'s>, sym: Sym) -> Res<()> {
        if let Some(n) = builtin_sem(name.text)
            && !matches!(sym, Sym::Sem(m) if m == n)
        {
            return Err(Diagnostic::new(
                name.span,
                format!("`{}` is the name of semaphore {n}", name.text),
            ));
        }
        if let Some(old) = self.syms.insert(name.text, sym) {
            return Err(Diagnostic::new(
                name.span,
                format!("`{}` is already defined as {}", name.text, old.what()),
            ));
        }
        Ok(())
    }

    /// The value of `e`, with an explicit stack (an expression may be 10^5 terms deep).
    fn eval(&self, e: &Expr<'s>) -> Res<u64> {
        enum Task<'e, 's> {
            Visit(&'e Expr<'s>),
            Apply(ast::BinOp, Span),
        }
        let mut tasks = vec![Task::Visit(e)];
        let mut vals: Vec<u64> = Vec::new();
        while let Some(task) = tasks.pop() {
            match task {
                Task::Visit(Expr::Int(v, _)) => vals.push(*v),
                Task::Visit(Expr::Name(w)) => vals.push(match self.syms.get(w.text) {
                    Some(Sym::Const(v)) => *v,
                    Some(other) => {
                        return Err(Diagnostic::new(
                            w.span,
                            format!("`{}` is {}, not a number", w.text, other.what()),
                        ));
                    }
                    None => {
                        return Err(Diagnostic::new(
                            w.span,
                            format!("`{}` is not defined", w.text),
                        ));
                    }
                }),
                Task::Visit(Expr::Bin(a, op, b, span)) => {
                    tasks.push(Task::Apply(*op, *span));
                    tasks.push(Task::Visit(b));
                    tasks.push(Task::Visit(a));
                }
                Task::Apply(op, span) => {
                    let (b, a) = (vals.pop().unwrap_or(0), vals.pop().unwrap_or(0));
                    let r = match op {
                        ast::BinOp::Add => a.checked_add(b),
                        ast::BinOp::Sub => a.checked_sub(b),
                        ast::BinOp::Mul => a.checked_mul(b),
                    };
                    vals.push(r.ok_or_else(|| {
                        Diagnostic::new(span, "value is negative or overflows 64 bits")
                    })?);
                }
            }
        }
        Ok(vals.pop().unwrap_or(0))
    }

    fn single<'a>(&self, arg: &'a Arg<'s>) -> Res<&'a Item<'s>> {
        match arg.items.as_slice() {
            [item] => Ok(item),
            _ => Err(Diagnostic::new(arg.span, "expected a single value, not a list")),
        }
    }

    fn number(&self, arg: &Arg<'s>, max: u64) -> Res<u64> {
        match self.single(arg)? {
            Item::Expr(e) => {
                let v = self.eval(e)?;
                if v > max {
                    return Err(Diagnostic::new(e.span(), format!("{v} is larger than {max}")));
                }
                Ok(v)
            }
            Item::Qualified { span, .. } => Err(Diagnostic::new(*span, "expected a number")),
        }
    }

    /// A number, or a name of the given kind.
    fn index(&self, arg: &Arg<'s>, max: u64, pick: fn(Sym) -> Option<u64>, what: &str) -> Res<u64> {
        if let Item::Expr(Expr::Name(w)) = self.single(arg)?
            && let Some(sym) = self.syms.get(w.text)
        {
            if let Some(v) = pick(*sym) {
                return Ok(v);
            }
            if !matches!(sym, Sym::Const(_)) {
                return Err(Diagnostic::new(
                    w.span,
                    format!("`{}` is {}, not {what}", w.text, sym.what()),
                ));
            }
        }
        self.number(arg, max)
    }

    fn sem(&self, item: &Item<'s>) -> Res<Sem> {
        if let Item::Expr(Expr::Name(w)) = item {
            let n = match self.syms.get(w.text) {
                Some(Sym::Sem(n)) => Some(*n),
                Some(other) => {
                    return Err(Diagnostic::new(
                        w.span,
                        format!("`{}` is {}, not a semaphore", w.text, other.what()),
                    ));
                }
                None => builtin_sem(w.text),
            };
            if let Some(sem) = n.and_then(Sem::new) {
                return Ok(sem);
            }
        }
        Err(Diagnostic::new(item.span(), "expected a semaphore (`s0`..`s15` or a `.sem` name)"))
    }

    fn local(&self, arg: &Arg<'s>) -> Res<LocalAddr> {
        match self.single(arg)? {
            Item::Qualified { space, offset, .. } => {
                let space_kind = match space.text {
                    "spad" => Space::Spad,
                    "acc" => Space::Acc,
                    other => {
                        return Err(Diagnostic::new(
                            space.span,
                            format!("unknown memory `{other}`, expected `spad` or `acc`"),
                        ));
                    }
                };
                let v = self.eval(offset)?;
                if v >= u64::from(LocalAddr::MAX_OFFSET) {
                    return Err(Diagnostic::new(
                        offset.span(),
                        format!("offset {v:#x} does not fit 23 bits"),
                    ));
                }
                Ok(LocalAddr { space: space_kind, offset: v as u32 })
            }
            Item::Expr(e) => Err(Diagnostic::new(
                e.span(),
                "expected a local address (`spad:OFFSET` or `acc:OFFSET`)",
            )),
        }
    }

    /// Splits `args` into a leading positional name and keyed arguments.
    fn keyed<'a>(
        &self,
        stmt: &'a Stmt<'s>,
        positional: usize,
    ) -> Res<(Vec<&'a Arg<'s>>, Keyed<'a, 's>)> {
        let mut pos = Vec::new();
        let mut keyed = Keyed { head: stmt.head, args: Vec::new() };
        for arg in &stmt.args {
            match &arg.key {
                None if keyed.args.is_empty() && pos.len() < positional => pos.push(arg),
                None => return Err(Diagnostic::new(arg.span, "expected `key=value`")),
                Some(k) => {
                    if keyed.args.iter().any(|(k2, _)| k2.text == k.text) {
                        return Err(Diagnostic::new(
                            k.span,
                            format!("`{}` is given twice", k.text),
                        ));
                    }
                    keyed.args.push((*k, arg));
                }
            }
        }
        if pos.len() < positional {
            let at = stmt.args.last().map_or(stmt.head.span.end, |a| a.span.end);
            return Err(Diagnostic::new(
                Span::new(at, at),
                format!("`{}` takes {positional} positional argument(s)", stmt.head.text),
            ));
        }
        Ok((pos, keyed))
    }

    fn name_arg(&self, arg: &Arg<'s>) -> Res<Word<'s>> {
        match self.single(arg)? {
            Item::Expr(Expr::Name(w)) => Ok(*w),
            other => Err(Diagnostic::new(other.span(), "expected a name")),
        }
    }

    /// A `key=value` of a table directive, or its default; `None` marks a required key.
    fn table_field(
        &self,
        stmt: &Stmt<'s>,
        keyed: &mut Keyed<'_, 's>,
        key: &str,
        default: Option<u64>,
        max: u64,
    ) -> Res<u64> {
        match (keyed.take(key), default) {
            (Some(a), _) => self.number(a, max),
            (None, Some(d)) => Ok(d),
            (None, None) => {
                Err(Diagnostic::new(stmt.head.span, format!("`{}` needs `{key}`", stmt.head.text)))
            }
        }
    }

    fn role(&self, arg: &Arg<'s>) -> Res<SegmentRole> {
        let roles = ["const", "arena", "input", "output", "inout"];
        match self.single(arg)? {
            Item::Expr(Expr::Name(w)) if roles.contains(&w.text) => Ok(match w.text {
                "const" => SegmentRole::Const,
                "arena" => SegmentRole::Arena,
                "input" => SegmentRole::Input,
                "output" => SegmentRole::Output,
                _ => SegmentRole::InOut,
            }),
            other => Err(Diagnostic::new(
                other.span(),
                format!("expected a role: {}", quote_list(&roles)),
            )),
        }
    }

    fn directive(&mut self, stmt: &Stmt<'s>) -> Res<()> {
        match stmt.head.text {
            ".equ" => {
                let (pos, keyed) = self.keyed(stmt, 2)?;
                keyed.done(&[])?;
                let name = self.name_arg(pos[0])?;
                let value = self.number(pos[1], u64::MAX)?;
                self.define(name, Sym::Const(value))
            }
            ".sem" => {
                let (pos, mut keyed) = self.keyed(stmt, 2)?;
                let name = self.name_arg(pos[0])?;
                let n = self.number(pos[1], 15)? as u8;
                let init = keyed.take("init").map(|a| self.number(a, 255)).transpose()?;
                keyed.done(&["init"])?;
                self.define(name, Sym::Sem(n))?;
                if let Some(init) = init {
                    self.sem_init[usize::from(n)] = init as u8;
                }
                Ok(())
            }
            ".seg" => {
                let (pos, mut keyed) = self.keyed(stmt, 2)?;
                let name = self.name_arg(pos[0])?;
                let n = self.number(pos[1], 15)? as u8;
                let size = keyed.take("size").map(|a| self.number(a, u64::MAX)).transpose()?;
                let role = keyed.take("role").map(|a| self.role(a)).transpose()?;
                keyed.done(&["size", "role"])?;
                if self.segments.iter().any(|s| s.id == n) {
                    return Err(Diagnostic::new(
                        pos[1].span,
                        format!("segment {n} is already named"),
                    ));
                }
                let decl = match (size, role) {
                    (Some(size), role) => Some((size, role.unwrap_or(SegmentRole::InOut))),
                    (None, Some(_)) => {
                        return Err(Diagnostic::new(stmt.head.span, "`role=` needs `size=`"));
                    }
                    (None, None) => None,
                };
                self.define(name, Sym::Seg(n))?;
                self.segments.push(SegmentSpec { id: n, name: name.text.to_string(), decl });
                Ok(())
            }
            ".dma" => {
                let (pos, mut k) = self.keyed(stmt, 1)?;
                let name = self.name_arg(pos[0])?;
                const KEYS: &[&str] = &[
                    "x_bytes",
                    "y_count",
                    "z_count",
                    "y_stride",
                    "z_stride",
                    "near_y_pitch",
                    "near_z_pitch",
                ];
                let mut get = |key, default, max| self.table_field(stmt, &mut k, key, default, max);
                let d = DmaDesc {
                    x_bytes: get("x_bytes", None, u32::MAX.into())? as u32,
                    y_count: get("y_count", Some(1), u16::MAX.into())? as u16,
                    z_count: get("z_count", Some(1), u16::MAX.into())? as u16,
                    y_stride: get("y_stride", Some(0), u64::MAX)?,
                    z_stride: get("z_stride", Some(0), u64::MAX)?,
                    near_y_pitch: get("near_y_pitch", Some(0), u32::MAX.into())? as u32,
                    near_z_pitch: get("near_z_pitch", Some(0), u32::MAX.into())? as u32,
                };
                k.done(KEYS)?;
                if self.dma.len() >= MAX_DMA_DESCS {
                    return Err(Diagnostic::new(stmt.head.span, "too many dma descriptors"));
                }
                self.define(name, Sym::Dma(self.dma.len() as u16))?;
                self.dma.push(d);
                Ok(())
            }
            ".shape" => {
                let (pos, mut k) = self.keyed(stmt, 1)?;
                let name = self.name_arg(pos[0])?;
                const KEYS: &[&str] = &[
                    "cols",
                    "rows",
                    "planes",
                    "src0_col_bcast",
                    "src1_col_bcast",
                    "dst_row",
                    "src0_row",
                    "src1_row",
                    "dst_plane",
                    "src0_plane",
                    "src1_plane",
                ];
                let mut get = |key, default, max| self.table_field(stmt, &mut k, key, default, max);
                let u16max = u64::from(u16::MAX);
                let u32max = u64::from(u32::MAX);
                let cols = get("cols", None, u16max)? as u16;
                let rows = get("rows", Some(1), u16max)? as u16;
                let planes = get("planes", Some(1), u16max)? as u16;
                let mut flags = 0;
                if get("src0_col_bcast", Some(0), 1)? == 1 {
                    flags |= SHAPE_SRC0_COL_BROADCAST;
                }
                if get("src1_col_bcast", Some(0), 1)? == 1 {
                    flags |= SHAPE_SRC1_COL_BROADCAST;
                }
                let s = Shape {
                    cols,
                    rows,
                    planes,
                    flags,
                    dst_row: get("dst_row", Some(0), u32max)? as u32,
                    src0_row: get("src0_row", Some(0), u32max)? as u32,
                    src1_row: get("src1_row", Some(0), u32max)? as u32,
                    dst_plane: get("dst_plane", Some(0), u32max)? as u32,
                    src0_plane: get("src0_plane", Some(0), u32max)? as u32,
                    src1_plane: get("src1_plane", Some(0), u32max)? as u32,
                };
                k.done(KEYS)?;
                if self.shapes.len() >= MAX_SHAPES {
                    return Err(Diagnostic::new(stmt.head.span, "too many shapes"));
                }
                self.define(name, Sym::Shape(self.shapes.len() as u16))?;
                self.shapes.push(s);
                Ok(())
            }
            other => Err(Diagnostic::new(
                stmt.head.span,
                format!("unknown directive `{other}` (expected .equ, .sem, .seg, .dma or .shape)"),
            )),
        }
    }

    fn instruction(&self, stmt: &Stmt<'s>) -> Res<Inst> {
        let Some(info) = op_by_mnemonic(stmt.head.text) else {
            return Err(Diagnostic::new(
                stmt.head.span,
                format!("unknown instruction `{}`", stmt.head.text),
            ));
        };
        let (_, mut k) = self.keyed(stmt, 0)?;
        let mut word = u128::from(info.opcode);
        let mut missing = Vec::new();
        for field in info.fields {
            let Some(arg) = k.take(field.name) else {
                missing.push(field.name);
                continue;
            };
            let raw = self.field(info, field.kind, field.width(), arg).map_err(|d| Diagnostic {
                message: format!("field `{}`: {}", field.name, d.message),
                ..d
            })?;
            word |= u128::from(raw) << field.lo;
        }
        let mut sync = Sync::NONE;
        for (key, slots) in [("wait", &mut sync.wait), ("signal", &mut sync.signal)] {
            let Some(arg) = k.take(key) else { continue };
            if info.route == RouteInfo::Front {
                return Err(Diagnostic::new(
                    arg.span,
                    format!("`{}` has no wait/signal slots", info.mnemonic),
                ));
            }
            if arg.items.len() > 2 {
                return Err(Diagnostic::new(arg.span, format!("at most two `{key}` semaphores")));
            }
            for (slot, item) in slots.iter_mut().zip(&arg.items) {
                *slot = Some(self.sem(item)?);
            }
        }
        let mut known: Vec<&str> = info.fields.iter().map(|f| f.name).collect();
        if info.route != RouteInfo::Front {
            known.extend(["wait", "signal"]);
        }
        k.done(&known)?;
        if !missing.is_empty() {
            return Err(Diagnostic::new(
                stmt.head.span,
                format!("`{}` is missing field(s) {}", info.mnemonic, quote_list(&missing)),
            ));
        }
        let op =
            Inst::from_word(word).map_err(|e| Diagnostic::new(stmt.head.span, e.to_string()))?.op;
        Ok(Inst { sync, op })
    }

    /// The raw bits of one field.
    fn field(&self, info: &OpInfo, kind: FieldKind, width: u32, arg: &Arg<'s>) -> Res<u64> {
        let max = if width >= 64 { u64::MAX } else { (1u64 << width) - 1 };
        match kind {
            FieldKind::Uint | FieldKind::Bool => self.number(arg, max),
            FieldKind::Enum(names) => match self.single(arg)? {
                Item::Expr(Expr::Name(w)) if names.contains(&w.text) => {
                    Ok(names.iter().position(|n| *n == w.text).unwrap_or(0) as u64)
                }
                other => Err(Diagnostic::new(
                    other.span(),
                    format!("expected one of {} for `{}`", quote_list(names), info.mnemonic),
                )),
            },
            FieldKind::Sem => Ok(self.sem(self.single(arg)?)?.index() as u64),
            FieldKind::Seg => self.index(
                arg,
                15,
                |s| {
                    if let Sym::Seg(n) = s { Some(n.into()) } else { None }
                },
                "a segment",
            ),
            FieldKind::Local => Ok(FieldValue::to_raw(self.local(arg)?)),
            FieldKind::DmaDesc => self.index(
                arg,
                max,
                |s| {
                    if let Sym::Dma(n) = s { Some(n.into()) } else { None }
                },
                "a dma descriptor",
            ),
            FieldKind::Shape => self.index(
                arg,
                max,
                |s| {
                    if let Sym::Shape(n) = s { Some(n.into()) } else { None }
                },
                "a shape",
            ),
        }
    }
}

fn quote_list(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// Keyed arguments not yet consumed.
struct Keyed<'a, 's> {
    head: Word<'s>,
    args: Vec<(Word<'s>, &'a Arg<'s>)>,
}

impl<'a, 's> Keyed<'a, 's> {
    fn take(&mut self, key: &str) -> Option<&'a Arg<'s>> {
        let i = self.args.iter().position(|(k, _)| k.text == key)?;
        Some(self.args.remove(i).1)
    }

    /// Fails on the first argument nobody took.
    fn done(self, known: &[&str]) -> Res<()> {
        match self.args.first() {
            None => Ok(()),
            Some((k, _)) => {
                let hint = if known.is_empty() {
                    String::new()
                } else {
                    format!(" (expected {})", quote_list(known))
                };
                Err(Diagnostic::new(
                    k.span,
                    format!("unknown key `{}` for `{}`{hint}", k.text, self.head.text),
                ))
            }
        }
    }
}

/// Every mnemonic, for help texts.
pub fn mnemonics() -> impl Iterator<Item = &'static str> {
    OPS.iter().map(|op| op.mnemonic)
}
