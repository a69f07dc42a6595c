//! The accelc compiler: ONNX import, the graph IR, e-graph optimisation and lowering to command
//! blobs. So far: the ONNX protobuf types (issue 4 is in progress).

/// The ONNX protobuf messages, generated from `proto/onnx.proto`.
#[allow(missing_docs, clippy::all, unreachable_pub, clippy::allow_attributes_without_reason, reason = "generated code")]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
