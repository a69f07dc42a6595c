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
