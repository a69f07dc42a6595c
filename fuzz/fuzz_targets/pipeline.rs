//! Fuzz target `pipeline`: the whole pipeline on structured random graphs: the device matches the reference interpreter
//! (the body is `accelc_tests::fuzz::pipeline`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| accelc_tests::fuzz::pipeline(data));
