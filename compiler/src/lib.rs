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

/// Text from the input (a node name, a message quoting attribute values) shown in an error,
/// cut to at most [`Clipped::MAX`] bytes at a character boundary with the rest counted, so a
/// megabyte-long `perm` or name does not become a megabyte-long message.
pub struct Clipped<'a>(pub &'a str);

impl Clipped<'_> {
    /// The longest text shown whole (bytes).
    pub const MAX: usize = 1024;
}

impl std::fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        if s.len() <= Self::MAX {
            return f.write_str(s);
        }
        let mut end = Self::MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}… ({} more bytes)", &s[..end], s.len() - end)
    }
}
