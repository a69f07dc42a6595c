//! Fuzz target `onnx_text`: the ONNX text syntax, the frontend and the compiler, as onnx_binary
//! (the body is `accelc_tests::fuzz::onnx_text`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| accelc_tests::fuzz::onnx_text(data));
