//! Property tests: every instruction with every field value encodes, decodes, disassembles and
//! reassembles to the same bytes; whole programs with tables survive disassembly; random words
//! either decode canonically or are rejected, never mis-decoded.

use accelc_isa::asm::assemble;
use accelc_isa::disasm::{Options, disassemble, inst_text};
use accelc_isa::inst::{Inst, OPS, RouteInfo};
use accelc_isa::program::{DmaDesc, Program, Shape};
use accelc_isa::{FieldKind, Sem};
use proptest::prelude::*;

/// A valid raw word for table entry `op`, built from the table's field metadata only: field
/// values are uniform over their width (enumerations over their variants) and sync slots are
/// random where the instruction has them.
fn valid_word(op: usize, seeds: &[u64; 8], slots: [Option<u8>; 4]) -> u128 {
    let info = &OPS[op];
    let mut word = u128::from(info.opcode);
    for (field, seed) in info.fields.iter().zip(seeds) {
        let width = field.width();
        let raw = match field.kind {
            FieldKind::Enum(names) => seed % names.len() as u64,
            FieldKind::Sem | FieldKind::Seg => seed % 16,
            _ if width >= 64 => *seed,
            _ => seed & ((1u64 << width) - 1),
        };
        word |= u128::from(raw) << field.lo;
    }
    if info.route != RouteInfo::Front {
        // Slots fill in order: the second of a pair only when the first is used.
        let slots = [slots[0], slots[0].and(slots[1]), slots[2], slots[2].and(slots[3])];
        for (slot, pos) in slots.iter().zip([8u32, 13, 18, 23]) {
            if let Some(sem) = slot {
                word |= u128::from(1 | (u32::from(*sem) << 1)) << pos;
            }
        }
    }
    word
}

fn slot() -> impl Strategy<Value = Option<u8>> {
    proptest::option::of(0u8..16)
}

pub(crate) fn any_inst() -> impl Strategy<Value = u128> {
    (0..OPS.len(), any::<[u64; 8]>(), [slot(), slot(), slot(), slot()])
        .prop_map(|(op, seeds, slots)| valid_word(op, &seeds, slots))
}

fn any_dma() -> impl Strategy<Value = DmaDesc> {
    any::<(u32, u16, u16, u64, u64, u32, u32)>().prop_map(|(x, y, z, ys, zs, ny, nz)| DmaDesc {
        x_bytes: x,
        y_count: y,
        z_count: z,
        y_stride: ys,
        z_stride: zs,
        near_y_pitch: ny,
        near_z_pitch: nz,
    })
}

fn any_shape() -> impl Strategy<Value = Shape> {
    (any::<(u16, u16, u16)>(), 0u16..4, any::<[u32; 6]>()).prop_map(|((c, r, p), flags, s)| Shape {
        cols: c,
        rows: r,
        planes: p,
        flags,
        dst_row: s[0],
        src0_row: s[1],
        src1_row: s[2],
        dst_plane: s[3],
        src0_plane: s[4],
        src1_plane: s[5],
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_instruction_round_trips(word in any_inst()) {
        let inst = Inst::from_word(word).expect("a word built from the table decodes");
        prop_assert_eq!(inst.to_word().unwrap(), word);
        let text = inst_text(&inst, None);
        let program = assemble(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e:?}")))?;
        prop_assert_eq!(program.insts.len(), 1);
        prop_assert_eq!(program.insts[0].to_word().unwrap(), word, "{}", text);
    }

    #[test]
    fn random_words_decode_canonically_or_not_at_all(word in any::<u128>()) {
        if let Ok(inst) = Inst::from_word(word) {
            prop_assert_eq!(inst.to_word().unwrap(), word);
        }
    }

    #[test]
    fn random_low_opcode_words_decode_canonically_or_not_at_all(op in 0u128..0x40, rest in any::<u128>()) {
        // Most random words have an unknown opcode; this variant hits the known ones.
        let word = (rest & !0xff) | op;
        if let Ok(inst) = Inst::from_word(word) {
            prop_assert_eq!(inst.to_word().unwrap(), word);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn programs_with_tables_round_trip(
        words in proptest::collection::vec(any_inst(), 1..40),
        dma in proptest::collection::vec(any_dma(), 0..6),
        shapes in proptest::collection::vec(any_shape(), 0..6),
        sem_init in any::<[u8; 16]>(),
    ) {
        let insts = words.iter().map(|w| Inst::from_word(*w).unwrap()).collect();
        let program = Program { insts, dma, shapes, sem_init };
        let text = disassemble(&program, Options { hex: true });
        let back = assemble(&text).map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
        prop_assert_eq!(back.encode().unwrap(), program.encode().unwrap());
    }
}

#[test]
fn sems_print_as_their_names() {
    let s = Sem::new(12).unwrap();
    assert_eq!(s.to_string(), "s12");
}

/// `accelc asm` of `accelc disasm BLOB` gives back the blob's program, tables and segment table
/// (all but constant segments' initial contents, which the text says it does not carry), for
/// every assembly program under `tests/` and for compiled models on every built-in device.
#[test]
fn disassembled_blobs_reassemble_to_the_same_program_and_segments() {
    use accelc_isa::blob::Blob;
    let dir = std::env::temp_dir().join(format!("accelc-disasm-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |n: &str| dir.join(n).display().to_string();
    let mut blobs: Vec<(String, String)> = Vec::new();
    for sub in ["programs", "fixtures/verify"] {
        let mut files: Vec<_> = std::fs::read_dir(accelc_tests::tests_path(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "s"))
            .collect();
        files.sort();
        for f in files {
            let name = f.file_stem().unwrap().to_string_lossy().into_owned();
            let out = path(&format!("{name}.blob"));
            let r = accelc_tests::accelc(&["asm", &f.display().to_string(), "-o", &out]);
            // A fixture that does not assemble has no blob to disassemble.
            if r.code == 0 {
                blobs.push((name, "default".into()));
            }
        }
    }
    assert!(blobs.len() >= 20, "only {} assembly programs found", blobs.len());
    let models =
        [accelc_tests::zoo("mlp_mnist.onnx"), accelc_tests::tests_path("models/small_cnn.onnxtxt")];
    for cfg in accelc_tests::float_configs() {
        for m in &models {
            let name = format!("{}-{}", m.file_stem().unwrap().to_string_lossy(), cfg.name);
            let r = accelc_tests::accelc(&[
                "compile",
                &m.display().to_string(),
                "--config",
                &cfg.name,
                "-o",
                &path(&format!("{name}.blob")),
            ]);
            assert_eq!(r.code, 0, "{name}: {}", r.stderr);
            blobs.push((name, cfg.name.to_string()));
        }
    }
    for (name, cfg) in &blobs {
        let original = path(&format!("{name}.blob"));
        let r = accelc_tests::accelc(&["disasm", &original]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        let text = path(&format!("{name}.rt.s"));
        std::fs::write(&text, &r.stdout).unwrap();
        let again = path(&format!("{name}.rt.blob"));
        let r = accelc_tests::accelc(&["asm", &text, "--config", cfg, "-o", &again]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        let (a, b) = (std::fs::read(&original).unwrap(), std::fs::read(&again).unwrap());
        let (a, b) = (Blob::read(&a).unwrap(), Blob::read(&b).unwrap());
        assert_eq!(a.program, b.program, "{name}: program");
        assert_eq!(a.target, b.target, "{name}: target");
        let strip = |b: &Blob<'_>| {
            b.segments.iter().map(|s| (s.id, s.role, s.access, s.size)).collect::<Vec<_>>()
        };
        assert_eq!(strip(&a), strip(&b), "{name}: segments");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
