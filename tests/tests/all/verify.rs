//! Validator tests: every rule has a rejected program under `tests/fixtures/verify/` (checked
//! through `accelc verify`, the error snapshotted with insta), the hand-written programs in
//! `tests/programs/` are accepted with their reports snapshotted, and the rules that assembly
//! cannot express are exercised on typed programs and raw bytes.

use std::path::Path;

use accelc_isa::inst::{Barrier, End, Inst, Nop};
use accelc_isa::program::{EncodedProgram, Program};
use accelc_isa::verify::{ErrorKind, Limits, verify, verify_encoded};
use accelc_isa::{DeviceConfig, Engine, Sem};
use accelc_tests::{CliRun, accelc};

fn show(run: &CliRun) -> String {
    format!("exit {}\n--- stdout\n{}--- stderr\n{}", run.code, run.stdout, run.stderr)
}

fn fixture_config(source: &str) -> &str {
    source.lines().find_map(|l| l.strip_prefix("; config: ")).unwrap_or("default").trim()
}

fn check_dir(dir: &str) -> usize {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "s"))
        .collect();
    names.sort();
    for path in &names {
        let source = std::fs::read_to_string(path).unwrap();
        let rel = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(path)
            .to_str()
            .unwrap()
            .to_string();
        let rel = rel.trim_start_matches('/');
        let run = accelc(&["verify", rel, "--config", fixture_config(&source)]);
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let expect_ok = !stem.starts_with("err_");
        assert_eq!(run.code, if expect_ok { 0 } else { 1 }, "{rel}: {}", show(&run));
        insta::assert_snapshot!(format!("verify_{stem}"), show(&run));
    }
    names.len()
}

#[test]
fn fixtures() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    assert!(check_dir("fixtures/verify") >= 19);
}

#[test]
fn programs_are_valid() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    assert!(check_dir("programs") >= 2);
}

fn kinds(program: &Program, limits: &Limits) -> Vec<ErrorKind> {
    match verify(program, &DeviceConfig::default_npu(), limits) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.into_iter().map(|e| e.kind).collect(),
    }
}

#[test]
fn front_end_instructions_have_no_sync_slots() {
    let s0 = Sem::new(0).unwrap();
    let program = Program {
        insts: vec![Inst::new(Barrier {}).signal(s0), Inst::new(End { code: 0 })],
        ..Program::default()
    };
    assert_eq!(kinds(&program, &Limits::default()), vec![ErrorKind::FrontEndSync]);
}

#[test]
fn empty_program() {
    assert_eq!(kinds(&Program::default(), &Limits::default()), vec![ErrorKind::Empty]);
}

#[test]
fn cycle_limit() {
    let program = Program {
        insts: vec![Inst::new(Nop { queue: Engine::Ld }), Inst::new(End { code: 0 })],
        ..Program::default()
    };
    assert_eq!(kinds(&program, &Limits { max_cycles: Some(2) }), Vec::new());
    assert_eq!(
        kinds(&program, &Limits { max_cycles: Some(1) }),
        vec![ErrorKind::CycleLimit { bound: 2, limit: 1 }]
    );
}

#[test]
fn raw_bytes_reserved_bit_and_sizes() {
    let cfg = DeviceConfig::default_npu();
    let mut text = Inst::new(End { code: 0 }).encode().unwrap().to_vec();
    text[3] |= 0x80; // bit 31: reserved in every instruction
    let enc = EncodedProgram { text, ..EncodedProgram::default() };
    let err = verify_encoded(&enc, &cfg, &Limits::default()).unwrap_err();
    assert_eq!(err.to_string(), "instruction 0: end: reserved bits set: bit 31");

    let enc = EncodedProgram { text: vec![1; 17], dma: vec![0; 31], ..EncodedProgram::default() };
    let err = verify_encoded(&enc, &cfg, &Limits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "program: text is 17 bytes, not a multiple of 16\nprogram: dma is 31 bytes, not a multiple of 32"
    );
}

#[test]
fn reports_every_error_not_just_the_first() {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/verify/err_op_dtype.s"),
    )
    .unwrap();
    let program = accelc_isa::asm::assemble(&source).unwrap();
    assert_eq!(kinds(&program, &Limits::default()).len(), 5);
}
