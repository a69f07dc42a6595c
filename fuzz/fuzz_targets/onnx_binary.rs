//! Fuzz target `onnx_binary`: ONNX binary import, the frontend and the compiler: no panic, no internal error, the reference accepts what the frontend accepts
//! (the body is `accelc_tests::fuzz::onnx_binary`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| accelc_tests::fuzz::onnx_binary(data));
