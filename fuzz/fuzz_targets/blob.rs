//! Fuzz target `blob`: the blob reader: read, write back, read again; the validator on its program
//! (the body is `accelc_tests::fuzz::blob`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| accelc_tests::fuzz::blob(data));
