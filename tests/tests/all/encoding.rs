//! Encoding table: instruction text, its 128-bit encoding written out by hand from the bit
//! layout in the book, and back. Each row was computed independently of the encoder (the
//! comments show the arithmetic), in the manner of Cranelift's emit tests.

use accelc_isa::asm::assemble;
use accelc_isa::disasm::{hex_words, inst_text};
use accelc_isa::inst::{DecodeErrorKind, Inst};

/// (assembly, the four 32-bit words low first)
const TABLE: &[(&str, [u32; 4])] = &[
    ("end code=0", [0x0000_0001, 0, 0, 0]),
    // code occupies bits 32..48, the low half of word 1.
    ("end code=0xbeef", [0x0000_0001, 0x0000_beef, 0, 0]),
    ("barrier", [0x0000_0002, 0, 0, 0]),
    // queue st = 3 in bits 32..34.
    ("nop queue=st", [0x0000_0000, 0x0000_0003, 0, 0]),
    // sem 1 in bits 36..40 (word 1 bit 4), count 2 in bits 40..48 (word 1 bits 8..16).
    ("sem.signal queue=ld sem=s1 count=2", [0x0000_0003, 0x0000_0210, 0, 0]),
    ("sem.wait queue=mx sem=s15 count=255", [0x0000_0004, 0x0000_fff1, 0, 0]),
    // id in bits 64..96 = word 2.
    ("marker queue=vx id=0xdeadbeef", [0x0000_0005, 0x0000_0002, 0xdead_beef, 0]),
    // wait0 = enable | s1<<1 = 0b00011 at bit 8 -> 0x300; signal0 = enable | s0 at bit 18 ->
    // 0x40000. desc 3 in bits 32..48, seg 1 in bits 48..52 -> word 1 = 0x00010003. offset
    // 0x2000 in bits 56..96: its low byte (0) in word 1 bits 24..32, 0x2000 >> 8 = 0x20 in
    // word 2. dst spad:0x400 in bits 96..120 = word 3.
    (
        "dma.load desc=3 seg=1 offset=0x2000 dst=spad:0x400 wait=s1 signal=s0",
        [0x0004_0310, 0x0001_0003, 0x0000_0020, 0x0000_0400],
    ),
    // offset 0x12_3456_789a: low byte 0x9a -> word 1 bits 24..32; the rest -> word 2.
    // src acc:0x10 = bit 23 | 0x10.
    (
        "dma.store desc=7 seg=3 offset=0x123456789a src=acc:0x10",
        [0x0000_0011, 0x9a03_0007, 0x1234_5678, 0x0080_0010],
    ),
    // value in bits 64..96 = word 2, dst in word 3.
    ("dma.fill desc=0 value=0xffffffff dst=acc:0", [0x0000_0012, 0, 0xffff_ffff, 0x0080_0000]),
    // src in bits 64..88 (word 2), dst in bits 96..120 (word 3).
    (
        "dma.copy desc=1 src=spad:0x20 dst=spad:0x40",
        [0x0000_0013, 0x0000_0001, 0x0000_0020, 0x0000_0040],
    ),
    // src bits 32..56, k 56..64, n 64..72, stride 72..88, dtype 88..91 (f32 = 5).
    (
        "mx.load_w src=spad:0x100 k=32 n=16 stride=64 dtype=f32",
        [0x0000_0020, 0x2000_0100, 0x0500_4010, 0],
    ),
    // a bits 32..56; a_stride 32 in bits 56..72 -> word 1 top byte 0x20; c acc:0x80 in bits
    // 72..96 -> word 2 bits 8..32 = 0x800080; c_stride 128 in word 3 bits 0..16; rows 64 in
    // bits 112..124 -> 0x40 << 16; dtype s8 = 0; accumulate bit 127.
    (
        "mx.matmul a=spad:0x40 a_stride=32 c=acc:0x80 c_stride=128 rows=64 dtype=s8 accumulate=1",
        [0x0000_0021, 0x2000_0040, 0x8000_8000, 0x8040_0080],
    ),
    // op max = 4 (bits 32..37), dtype f32 = 5 (37..40) -> 0xa4; shape 2 (40..56) -> 0x200;
    // dst 0x100 (56..80) -> word 1 top byte 0, word 2 low 16 = 0x0001; src0 0x200 (80..104)
    // -> word 2 high 16 = 0x0200; src1 acc:0 (104..128) -> word 3 = 0x800000 << 8.
    (
        "vx.binary op=max dtype=f32 shape=2 dst=spad:0x100 src0=spad:0x200 src1=acc:0",
        [0x0000_0030, 0x0000_02a4, 0x0200_0001, 0x8000_0000],
    ),
    // op exp = 4, dtype bf16 = 4 -> 4 | 4<<5 = 0x84; out_dtype bf16 in bits 104..107 -> word 3
    // bits 8..11 = 0x400.
    (
        "vx.unary op=exp dtype=bf16 shape=0 dst=spad:0 src=spad:0 out_dtype=bf16",
        [0x0000_0031, 0x0000_0084, 0, 0x0000_0400],
    ),
    // op sum = 0, axis rows = 1 (bit 34) -> 0x4; dtype s8 = 0; shape 1 (40..56) -> 0x100;
    // dst acc:0 = 0x800000 at bit 56 -> its bit 23 lands at bit 79 = word 2 bit 15; out_dtype
    // s32 = 3 at bits 104..107 -> word 3 = 0x300.
    (
        "vx.reduce op=sum axis=rows dtype=s8 shape=1 dst=acc:0 src=spad:0 out_dtype=s32",
        [0x0000_0032, 0x0000_0104, 0x0000_8000, 0x0000_0300],
    ),
    // per_channel bit 32, dtype u8 = 1 at 37..40 -> 0x21; src acc:0 at bit 80 -> bit 103 =
    // word 3 bit 7; params spad:0x400 in 104..128 -> 0x400 << 8.
    (
        "vx.requant per_channel=1 bias=0 dtype=u8 shape=0 dst=spad:0 src=acc:0 params=spad:0x400",
        [0x0000_0033, 0x0000_0021, 0, 0x0004_0080],
    ),
    // bias bit 33 = word 1 bit 1.
    (
        "vx.requant per_channel=1 bias=1 dtype=u8 shape=0 dst=spad:0 src=acc:0 params=spad:0x400",
        [0x0000_0033, 0x0000_0023, 0, 0x0004_0080],
    ),
    (
        "vx.lut dtype=s8 shape=0 dst=spad:0 src=spad:0 table=spad:0x100",
        [0x0000_0034, 0, 0, 0x0001_0000],
    ),
    // dtype f32 = 5 << 5 = 0xa0.
    ("vx.transpose dtype=f32 shape=3 dst=spad:0 src=spad:0", [0x0000_0035, 0x0000_03a0, 0, 0]),
];

fn word(w: [u32; 4]) -> u128 {
    w.iter().rev().fold(0u128, |acc, x| acc << 32 | u128::from(*x))
}

#[test]
fn encoding_table() {
    for (text, words) in TABLE {
        let program = assemble(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let inst = program.insts[0];
        assert_eq!(
            hex_words(inst.to_word().unwrap()),
            hex_words(word(*words)),
            "encoding of `{text}`"
        );
        let decoded = Inst::from_word(word(*words)).unwrap();
        assert_eq!(decoded, inst, "decoding of `{text}`");
        let printed = inst_text(&decoded, None);
        let reparsed = assemble(&printed).unwrap().insts[0];
        assert_eq!(reparsed, inst, "`{printed}` does not reassemble to `{text}`");
    }
}

#[test]
fn table_covers_every_instruction() {
    for op in accelc_isa::inst::OPS {
        assert!(
            TABLE.iter().any(|(t, _)| t.split_whitespace().next() == Some(op.mnemonic)),
            "no encoding-table row for {}",
            op.mnemonic
        );
    }
}

#[test]
fn decoder_rejects_unknown_opcodes() {
    let known: Vec<u8> = accelc_isa::inst::OPS.iter().map(|o| o.opcode).collect();
    for op in 0..=255u8 {
        let r = Inst::from_word(u128::from(op));
        if known.contains(&op) {
            // Fields all zero may still be invalid (none are, today), but never "unknown".
            assert!(!matches!(r, Err(DecodeErrorKind::UnknownOpcode(_))));
        } else {
            assert_eq!(r, Err(DecodeErrorKind::UnknownOpcode(op)));
        }
    }
}

#[test]
fn decoder_rejects_reserved_bits() {
    // Bits 28..32 are reserved in every instruction.
    let e = Inst::from_word(1 | 1 << 30).unwrap_err();
    assert_eq!(e.to_string(), "end: reserved bits set: bit 30");
    // `end` has no sync slots: a wait slot is a reserved field for it.
    let e = Inst::from_word(1 | 0b11 << 8).unwrap_err();
    assert_eq!(e.to_string(), "end: reserved bits set: bits 8..10");
    // A disabled slot must be all zero.
    let e = Inst::from_word(0x10 | 0b10 << 8).unwrap_err();
    assert_eq!(e.to_string(), "dma.load: reserved bits set: bit 9");
    // wait1 without wait0 would give two encodings of one instruction.
    let e = Inst::from_word(0x10 | 0b00011 << 13).unwrap_err();
    assert_eq!(e.to_string(), "dma.load: slot `wait1` is used while the slot before it is empty");
    // Bits 52..56 of dma.load lie between `seg` and `offset`.
    let e = Inst::from_word(0x10 | 0b1010 << 52).unwrap_err();
    assert_eq!(e.to_string(), "dma.load: reserved bits set: bit 53, bit 55");
    // vx.unary uses bits up to 107; 107..128 are reserved.
    let e = Inst::from_word(0x31 | 0x7f << 110).unwrap_err();
    assert_eq!(e.to_string(), "vx.unary: reserved bits set: bits 110..117");
}

#[test]
fn decoder_rejects_out_of_range_enums() {
    // dtype 7 is undefined (bits 37..40 of vx.binary).
    let e = Inst::from_word(0x30 | 7 << 37).unwrap_err();
    assert_eq!(e.to_string(), "vx.binary: field `dtype` has invalid value 7");
    // op 31 is not a binary operation.
    let e = Inst::from_word(0x30 | 31 << 32).unwrap_err();
    assert_eq!(e.to_string(), "vx.binary: field `op` has invalid value 31");
    // reduce op 3 is undefined.
    let e = Inst::from_word(0x32 | 3 << 32).unwrap_err();
    assert_eq!(e.to_string(), "vx.reduce: field `op` has invalid value 3");
}

#[test]
fn encoder_rejects_values_wider_than_their_field() {
    use accelc_isa::inst::MxMatmul;
    use accelc_isa::{Dtype, LocalAddr};
    let op = MxMatmul {
        a: LocalAddr::spad(0),
        a_stride: 32,
        c: LocalAddr::acc(0),
        c_stride: 128,
        rows: 5000,
        dtype: Dtype::S8,
        accumulate: false,
    };
    let e = Inst::new(op).encode().unwrap_err();
    assert_eq!(e.to_string(), "mx.matmul: value 5000 does not fit the 12-bit field `rows`");
    let far = MxMatmul { rows: 1, a: LocalAddr::spad(1 << 23), ..op };
    let e = Inst::new(far).encode().unwrap_err();
    assert_eq!(e.field, "a");
}
