//! Blob format tests: a full round trip, the streamed writer against the in-memory one,
//! rejection of every truncation and every single-byte corruption, the required/optional rule
//! for unknown sections, cross-reference checks, and random bytes never panicking the reader.

use std::borrow::Cow;

use accelc_isa::blob::{
    self, Blob, DebugRange, Direction, IoTensor, Quant, SECTION_REQUIRED, SectionSource,
    SegmentDecl, SegmentRole, write_container, write_container_to,
};
use accelc_isa::program::EncodedProgram;
use accelc_isa::{DeviceConfig, Dtype};
use proptest::prelude::*;

fn sample() -> Blob<'static> {
    let program = accelc_isa::asm::assemble(
        ".dma d x_bytes=64\n.shape v cols=16\n.sem s1 1 init=3\ndma.load desc=d seg=0 offset=0 dst=spad:0\nend code=7\n",
    )
    .unwrap();
    Blob {
        target: DeviceConfig::tiny().target(),
        segments: vec![
            SegmentDecl {
                id: 0,
                role: SegmentRole::Input,
                access: blob::ACCESS_READ,
                size: 64,
                init: None,
            },
            SegmentDecl {
                id: 1,
                role: SegmentRole::Output,
                access: blob::ACCESS_WRITE,
                size: 40,
                init: None,
            },
            SegmentDecl {
                id: 2,
                role: SegmentRole::Const,
                access: blob::ACCESS_READ,
                size: 256,
                init: Some((64, 100)),
            },
        ],
        io: vec![
            IoTensor {
                name: "x".into(),
                direction: Direction::Input,
                segment: 0,
                offset: 0,
                dtype: Dtype::F32,
                dims: vec![1, 16],
                quant: None,
                boolean: false,
            },
            IoTensor {
                name: "y".into(),
                direction: Direction::Output,
                segment: 1,
                offset: 0,
                dtype: Dtype::U8,
                dims: vec![1, 10],
                quant: Some(Quant { scale: 0.25, zero_point: 128 }),
                boolean: false,
            },
            IoTensor {
                name: "mask".into(),
                direction: Direction::Output,
                segment: 1,
                offset: 16,
                dtype: Dtype::U8,
                dims: vec![4],
                quant: None,
                boolean: true,
            },
        ],
        program: program.encode().unwrap(),
        cycle_bound: 1234,
        consts: Cow::Owned((0..=255u8).cycle().take(300).collect()),
        meta: vec![("producer".into(), "test".into())],
        debug: vec![DebugRange { start: 0, end: 1, name: "/layer0/Conv".into() }],
    }
}

#[test]
fn round_trip() {
    let b = sample();
    let bytes = b.to_bytes().unwrap();
    let back = Blob::read(&bytes).unwrap();
    assert_eq!(back, b);
    assert!(matches!(back.consts, Cow::Borrowed(_)), "constants are borrowed, not copied");
    assert_eq!(back.segment_init(2).unwrap(), &b.consts[64..164]);
    // Every section starts 64-byte aligned, so constants can be mapped in place.
    let count = u32::from_le_bytes(bytes[28..32].try_into().unwrap()) as usize;
    for i in 0..count {
        let e = &bytes[128 + 32 * i..];
        assert_eq!(u64::from_le_bytes(e[8..16].try_into().unwrap()) % 64, 0);
    }
    // Writing is deterministic.
    assert_eq!(back.to_bytes().unwrap(), bytes);
}

/// A section produced in pieces of `step` bytes, optionally lying about its length or
/// changing its bytes on a second pass.
struct Pieces {
    data: Vec<u8>,
    step: usize,
    declared: u64,
    fickle: std::cell::Cell<u8>,
}

impl SectionSource for Pieces {
    fn len(&self) -> u64 {
        self.declared
    }
    fn emit(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let mut data = self.data.clone();
        // A fickle source flips a byte from its second pass on.
        if self.fickle.get() > 0 {
            if self.fickle.get() > 1 {
                data[0] ^= 1;
            }
            self.fickle.set(self.fickle.get() + 1);
        }
        data.chunks(self.step).try_for_each(sink)
    }
}

#[test]
fn the_streamed_writer_writes_what_the_in_memory_one_does() {
    // Sizes around the 64-byte alignment, an empty section, and pieces of odd sizes.
    for sizes in [vec![1usize, 63, 64, 65, 0, 1000], vec![0], vec![4096, 7], vec![]] {
        let data: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (0..*n).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let whole: Vec<(u32, u32, &[u8])> =
            data.iter().enumerate().map(|(i, d)| (100 + i as u32, 0, d.as_slice())).collect();
        let expected = write_container(&whole, &target());
        for step in [1, 7, 64, 5000] {
            let pieces: Vec<Pieces> = data
                .iter()
                .map(|d| Pieces {
                    data: d.clone(),
                    step,
                    declared: d.len() as u64,
                    fickle: 0.into(),
                })
                .collect();
            let sections: Vec<(u32, u32, &dyn SectionSource)> = pieces
                .iter()
                .enumerate()
                .map(|(i, p)| (100 + i as u32, 0, p as &dyn SectionSource))
                .collect();
            // Written after 5 bytes already in the output: the container starts where it is.
            let mut out = std::io::Cursor::new(b"lead:".to_vec());
            out.set_position(5);
            let n =
                write_container_to(&mut out, &sections, &target(), blob::FORMAT_VERSION).unwrap();
            let out = out.into_inner();
            assert_eq!(n as usize, expected.len(), "sizes {sizes:?}, pieces of {step}");
            assert_eq!(&out[..5], b"lead:");
            assert!(out[5..] == expected[..], "sizes {sizes:?}, pieces of {step}");
        }
    }
    // A blob's constants given as a source write the same blob as constants in the struct.
    let b = sample();
    let consts = b.consts.to_vec();
    let source = Pieces { data: consts.clone(), step: 17, declared: 300, fickle: 0.into() };
    let without = Blob { consts: Cow::Borrowed(&[]), ..b.clone() };
    let mut out = std::io::Cursor::new(Vec::new());
    without.write_to(Some(&source), &mut out).unwrap();
    assert!(out.into_inner() == b.to_bytes().unwrap());
    let mut out = std::io::Cursor::new(Vec::new());
    b.write_to(None, &mut out).unwrap();
    assert!(out.into_inner() == b.to_bytes().unwrap());
    // Constants given twice are refused.
    let e = b.write_to(Some(&source), &mut std::io::Cursor::new(Vec::new())).unwrap_err();
    assert!(e.to_string().contains("constants given twice"), "{e}");
}

#[test]
fn a_section_source_that_misreports_is_refused() {
    let write = |p: &Pieces| {
        let sections: [(u32, u32, &dyn SectionSource); 1] = [(100, 0, p)];
        write_container_to(
            &mut std::io::Cursor::new(Vec::new()),
            &sections,
            &target(),
            blob::FORMAT_VERSION,
        )
        .unwrap_err()
        .to_string()
    };
    let data: Vec<u8> = (0..100).collect();
    for declared in [99, 101, 0] {
        let p = Pieces { data: data.clone(), step: 9, declared, fickle: 0.into() };
        let e = write(&p);
        assert!(e.contains(&format!("emitted 100 bytes, not the {declared}")), "{e}");
    }
    let p = Pieces { data, step: 9, declared: 100, fickle: 1.into() };
    let e = write(&p);
    assert!(e.contains("different bytes the second time"), "{e}");
}

/// A boolean tensor is a plain `u8` one: the writer refuses any other, and the reader refuses
/// the boolean kind on other element types, naming the tensor and the byte.
#[test]
fn a_boolean_tensor_is_plain_u8() {
    let mut b = sample();
    b.io[2].quant = Some(Quant { scale: 1.0, zero_point: 0 });
    let e = b.to_bytes().unwrap_err();
    assert!(e.message.contains("mask"), "{e}");
    let mut b = sample();
    b.io[2].dtype = Dtype::S8;
    assert!(b.to_bytes().unwrap_err().message.contains("mask"));
    // Patch the element type byte of `mask` in a valid blob and reseal it.
    let bytes = sample().to_bytes().unwrap();
    let name = bytes.windows(4).position(|w| w == b"mask").unwrap();
    let mut bad = bytes.clone();
    // After the name: direction, segment, dtype.
    assert_eq!(bad[name + 6], Dtype::U8 as u8);
    bad[name + 6] = Dtype::S8 as u8;
    let bad = accelc_tests::fuzz::reseal(&bad);
    let e = Blob::read(&bad).unwrap_err();
    assert!(e.message.contains("`mask` is boolean") && e.offset.is_some(), "{e}");
}

#[test]
fn every_truncation_is_rejected() {
    let bytes = sample().to_bytes().unwrap();
    for len in 0..bytes.len() {
        let e = Blob::read(&bytes[..len]).unwrap_err();
        assert!(!e.message.is_empty());
    }
}

#[test]
fn every_single_byte_corruption_is_rejected() {
    let bytes = sample().to_bytes().unwrap();
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[at] ^= flip;
            assert!(Blob::read(&bad).is_err(), "flipping {flip:#x} at byte {at} went unnoticed");
        }
    }
}

fn target() -> accelc_isa::config::Target {
    DeviceConfig::default_npu().target()
}

/// Raw sections of a minimal valid blob, to add to or break.
fn minimal_sections() -> Vec<(u32, u32, Vec<u8>)> {
    let b = Blob {
        target: target(),
        segments: vec![],
        io: vec![],
        program: EncodedProgram { text: 1u128.to_le_bytes().to_vec(), ..EncodedProgram::default() },
        cycle_bound: 0,
        consts: Cow::Borrowed(&[]),
        meta: vec![],
        debug: vec![],
    };
    let bytes = b.to_bytes().unwrap();
    let count = u32::from_le_bytes(bytes[28..32].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| {
            let e = &bytes[128 + 32 * i..160 + 32 * i];
            let off = u64::from_le_bytes(e[8..16].try_into().unwrap()) as usize;
            let size = u64::from_le_bytes(e[16..24].try_into().unwrap()) as usize;
            let kind = u32::from_le_bytes(e[0..4].try_into().unwrap());
            let flags = u32::from_le_bytes(e[4..8].try_into().unwrap());
            (kind, flags, bytes[off..off + size].to_vec())
        })
        .collect()
}

#[test]
fn unknown_sections_required_or_optional() {
    let mut s = minimal_sections();
    s.push((77, 0, b"future optional data".to_vec()));
    assert!(
        Blob::read(&write_container(&s, &target())).is_ok(),
        "unknown optional sections are skipped"
    );
    let mut s = minimal_sections();
    s.push((77, SECTION_REQUIRED, b"future required data".to_vec()));
    let e = Blob::read(&write_container(&s, &target())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "section unknown, byte 0x160: unknown section kind 77 is marked required"
    );
}

#[test]
fn structural_errors() {
    let check = |sections: Vec<(u32, u32, Vec<u8>)>| {
        Blob::read(&write_container(&sections, &target())).unwrap_err().to_string()
    };

    let mut s = minimal_sections();
    s.retain(|(k, _, _)| *k != 5);
    assert_eq!(check(s), "section TEXT: required section is missing");

    let mut s = minimal_sections();
    let dup = s[0].clone();
    s.push(dup);
    assert!(check(s).ends_with("section appears twice"));

    // A TEXT section that disagrees with the PROGRAM header's count.
    let mut s = minimal_sections();
    s.iter_mut().find(|x| x.0 == 5).unwrap().2.extend_from_slice(&[0; 16]);
    assert!(check(s).ends_with("holds 32 bytes but PROGRAM declares 1 entries of 16"));

    // A fingerprint for another device.
    let mut s = minimal_sections();
    let t = &mut s.iter_mut().find(|x| x.0 == 1).unwrap().2;
    t[4] = 16; // array_dim 32 -> 16
    assert_eq!(
        check(s),
        "section TARGET, byte 0x30: target fingerprint does not match the target parameters"
    );

    // An I/O tensor that does not fit its segment.
    let mut s = minimal_sections();
    let seg = &mut s.iter_mut().find(|x| x.0 == 2).unwrap().2;
    seg.clear();
    seg.extend_from_slice(&1u32.to_le_bytes());
    seg.extend_from_slice(&[0, SegmentRole::Input as u8, 1, 0, 0, 0, 0, 0]);
    seg.extend_from_slice(&16u64.to_le_bytes());
    seg.extend_from_slice(&[0; 16]);
    let io = &mut s.iter_mut().find(|x| x.0 == 3).unwrap().2;
    io.clear();
    io.extend_from_slice(&1u32.to_le_bytes());
    io.extend_from_slice(&1u16.to_le_bytes());
    io.push(b'x');
    io.extend_from_slice(&[0, 0, Dtype::F32 as u8, 1]);
    io.extend_from_slice(&0u64.to_le_bytes());
    io.extend_from_slice(&8u64.to_le_bytes());
    io.push(0);
    let e = check(s);
    assert!(e.ends_with("tensor `x` (32 bytes at 0x0) does not fit its 16-byte segment 0"), "{e}");

    // A forged count larger than the section cannot make the reader allocate.
    let mut s = minimal_sections();
    let io = &mut s.iter_mut().find(|x| x.0 == 3).unwrap().2;
    io.clear();
    io.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(check(s).ends_with("count 4294967295 needs more bytes than the section has"));
}

#[test]
fn header_errors() {
    let bytes = sample().to_bytes().unwrap();
    let e = |b: &[u8]| Blob::read(b).unwrap_err().to_string();
    assert_eq!(e(b"hello"), "byte 0x0: truncated: 5 bytes, less than the 128-byte header");
    assert_eq!(e(&[0u8; 200]), "byte 0x0: not a command blob (bad magic)");
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(e(&longer).contains("truncated or padded"));
    let mut v3 = bytes.clone();
    v3[8] = 3;
    assert_eq!(
        e(&v3),
        "byte 0x8: format version 3.1 is not supported (this reader knows 1.x and 2.x)"
    );
    // Format 2 (a plan blob) is read by the plan reader; the single-program reader names it.
    let plan = accelc_isa::plan::PlanBlob {
        target: sample().target,
        tensors: vec![],
        inputs: vec![],
        outputs: vec![],
        steps: vec![],
        programs: vec![],
        host: String::new(),
        meta: vec![],
    };
    let e2 = e(&plan.to_bytes().unwrap());
    assert!(e2.starts_with("byte 0x8: format version 2.x is a plan blob"), "{e2}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Blob::read(&bytes);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..600),
        cut in 0usize..2000,
    ) {
        // Keep the magic and version so the reader gets past the first checks.
        let good = sample().to_bytes().unwrap();
        let mut bytes = good[..16].to_vec();
        bytes.extend_from_slice(&tail);
        let _ = Blob::read(&bytes);
        let mut spliced = good.clone();
        let at = cut % good.len();
        for (i, b) in tail.iter().enumerate().take(32) {
            if let Some(x) = spliced.get_mut(at + i) { *x = *b; }
        }
        let _ = Blob::read(&spliced);
    }
}
