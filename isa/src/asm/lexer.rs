//! Tokens of the assembly language, lexed with `logos`.

use logos::Logos;

/// A token. Comments (`;` or `//` to the end of the line) and blanks are skipped; newlines end
/// statements and are tokens.
#[derive(Logos, Clone, Copy, Debug, PartialEq, Eq)]
#[logos(skip r"[ \t\r\f]+")]
// Comments stop at the newline, so the greedy class reads one line, not the whole input.
#[logos(skip(r"(;|//)[^\n]*", allow_greedy = true))]
#[logos(error = LexError)]
pub enum Tok<'s> {
    /// End of a statement.
    #[token("\n")]
    Newline,
    /// `.name`: a directive.
    #[regex(r"\.[A-Za-z_][A-Za-z0-9_]*")]
    Directive(&'s str),
    /// A name or a mnemonic (mnemonics contain dots: `mx.load_w`).
    #[regex(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")]
    Ident(&'s str),
    /// An unsigned integer: decimal, `0x` hexadecimal or `0b` binary, with `_` separators.
    #[regex(r"0[xX][0-9a-fA-F_]+", |lex| parse_int(&lex.slice()[2..], 16))]
    #[regex(r"0[bB][01_]+", |lex| parse_int(&lex.slice()[2..], 2))]
    #[regex(r"[0-9][0-9_]*", |lex| parse_int(lex.slice(), 10))]
    Int(u64),
    /// `=`
    #[token("=")]
    Eq,
    /// `,`
    #[token(",")]
    Comma,
    /// `:`
    #[token(":")]
    Colon,
    /// `+`
    #[token("+")]
    Plus,
    /// `-`
    #[token("-")]
    Minus,
    /// `*`
    #[token("*")]
    Star,
    /// `(`
    #[token("(")]
    LParen,
    /// `)`
    #[token(")")]
    RParen,
}

/// Why the lexer stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LexError {
    /// A character that starts no token.
    #[default]
    Unexpected,
    /// An integer that does not fit 64 bits, or has no digits.
    BadInt,
}

fn parse_int(digits: &str, radix: u32) -> Result<u64, LexError> {
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    if clean.is_empty() {
        return Err(LexError::BadInt);
    }
    u64::from_str_radix(&clean, radix).map_err(|_| LexError::BadInt)
}

impl std::fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Newline => f.write_str("end of line"),
            Tok::Directive(s) | Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Int(v) => write!(f, "`{v}`"),
            Tok::Eq => f.write_str("`=`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Colon => f.write_str("`:`"),
            Tok::Plus => f.write_str("`+`"),
            Tok::Minus => f.write_str("`-`"),
            Tok::Star => f.write_str("`*`"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
        }
    }
}
