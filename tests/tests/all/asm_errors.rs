//! Assembler diagnostics: each bad source's rendered errors (message, line:column, the line and
//! a caret under the offending text) are snapshotted; random text never panics the assembler.

use accelc_isa::asm::{assemble, render};
use proptest::prelude::*;

const CASES: &[(&str, &str)] = &[
    ("unknown instruction", "nop queue=ld\nmx.matmull rows=1\n"),
    (
        "unknown field",
        ".shape v cols=4\nvx.binary op=add dtype=f32 shape=v dst=spad:0 src0=spad:0 src1=spad:0 rowz=4\n",
    ),
    ("missing fields", "dma.load desc=0 seg=0\n"),
    (
        "field too wide",
        "mx.matmul a=spad:0 a_stride=70000 c=acc:0 c_stride=0 rows=1 dtype=s8 accumulate=0\n",
    ),
    ("bad enum", "vx.unary op=gelu dtype=f32 shape=0 dst=spad:0 src=spad:0 out_dtype=f32\n"),
    ("bad memory", "dma.fill desc=0 value=0 dst=dram:0x40\n"),
    ("not a local address", "dma.fill desc=0 value=0 dst=0x40\n"),
    ("undefined name", "dma.fill desc=0 value=ZERO dst=spad:0\n"),
    (
        "wrong kind of name",
        ".dma d x_bytes=16\ndma.fill desc=0 value=d dst=spad:0\nnop queue=ld wait=d\n",
    ),
    ("sync on front-end", "end code=0 wait=s1\n"),
    ("three waits", "nop queue=ld wait=s1,s2,s3\n"),
    ("duplicate key", "end code=0 code=1\n"),
    ("redefinition", ".equ X 1\n.equ X 2\n.sem s3 4\n"),
    ("lexer error", "end code=0 ; fine\nend code=$\nend code=0x\n"),
    ("parse error", "end code=(1\nend code=1 +\n= 4\n"),
    ("negative value", ".equ A 1\nend code=A-2\n"),
    ("unknown directive", ".align 16\n.dma x y_count=2\n"),
    ("segment declarations", ".seg a 0 role=input\n.seg b 16\n.seg c 1 size=4 role=rom\n"),
    ("multibyte text before the error", "; ünïcödé comment\nnop queue=lq ; ≠\n"),
];

#[test]
fn diagnostics() {
    let mut out = String::new();
    for (name, source) in CASES {
        let diags = assemble(source).expect_err(name);
        out.push_str(&format!("=== {name}\n{}\n", render(&diags, source, "case.s")));
    }
    insta::assert_snapshot!(out);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_text_never_panics(source in "[ -~\n\t\u{e9}\u{2260}]{0,200}") {
        let _ = assemble(&source).map_err(|d| render(&d, &source, "x.s"));
    }

    #[test]
    fn random_statements_never_panic(
        source in proptest::collection::vec(
            "(nop|end|dma.load|mx.matmul|vx.binary|.dma|.sem|.seg|.shape|.equ) ([a-z_0-9]{1,6}(=|:)?(spad:|acc:)?[0-9xa-f+*(),s]{0,8} ?){0,6}",
            0..8,
        ).prop_map(|lines| lines.join("\n"))
    ) {
        let _ = assemble(&source).map_err(|d| render(&d, &source, "x.s"));
    }
}
