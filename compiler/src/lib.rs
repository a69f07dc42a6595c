//! The accelc compiler: ONNX import (binary and text), the graph IR, constant folding, shape
//! inference, the verifier, the reference interpreter, the e-graph optimizer ([`opt`]) and the
//! lowering to command blobs ([`lower`]).

pub mod fold;
pub mod interp;
pub mod ir;
pub mod lower;
pub mod onnx;
pub mod ops;
pub mod opt;
pub mod pipeline;
pub mod shape;
pub mod text;
pub mod verify;
pub mod widen;

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

pub use accelc_isa::Clipped;
