//! The accelc compiler: ONNX import, the graph IR, e-graph optimisation and lowering to command
//! blobs. Issue 4 (the frontend) is in progress: the protobuf import and the IR exist; shape
//! inference, constant folding, the text syntax and the reference interpreter follow.

pub mod fold;
pub mod interp;
pub mod ir;
pub mod onnx;
pub mod pipeline;
pub mod shape;
pub mod text;
pub mod verify;

/// The ONNX protobuf messages, generated from `proto/onnx.proto`.
#[allow(
    missing_docs,
    clippy::all,
    unreachable_pub,
    clippy::allow_attributes_without_reason,
    reason = "generated code"
)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
