//! Fuzz target `validator`: the validator against the simulator: an accepted program never faults or passes its cycle bound
//! (the body is `accelc_tests::fuzz::validator`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| accelc_tests::fuzz::validator(data));
