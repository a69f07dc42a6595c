//! Fuzz target `asm`: the assembler: diagnostics in bounded size; encode/decode and disassemble/assemble give the program back
//! (the body is `accelc_tests::fuzz::asm`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| accelc_tests::fuzz::asm(data));
