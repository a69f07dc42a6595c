//! Generates the ONNX protobuf types from `proto/onnx.proto` with a pure-Rust protobuf compiler
//! (protox), so building needs no `protoc`, and the ONNX text syntax parser from
//! `src/text/grammar.lalrpop`.

fn main() {
    lalrpop::Configuration::new()
        .use_cargo_dir_conventions()
        .process()
        .expect("lalrpop failed to generate the ONNX text parser");
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds =
        protox::compile(["onnx.proto"], ["proto"]).expect("proto/onnx.proto does not compile");
    prost_build::Config::new()
        // `bytes::Bytes` for bytes fields: decoding from a `Bytes` buffer then shares the file's
        // memory, so large initializers are never copied.
        .bytes(["."])
        .compile_fds(fds)
        .expect("generating Rust types from onnx.proto failed");
}
