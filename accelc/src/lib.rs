//! accelc as a library: the one entry point the CLI, the tests, the benches and the Python
//! bindings share (in the spirit of Cranelift's `Context` and tract's `api` crate).
//!
//! - [`compile`] a model given as a path, ONNX bytes or ONNX text ([`Source`]) with
//!   [`Options`] and an [`Observer`] for progress; [`check`] asks, node by node, whether it
//!   imports and whether it runs on the chosen device, with the same code `compile` runs.
//! - [`HostTensor`]: a tensor on the host (data type, dimensions, little-endian bytes) for every
//!   data type the IR has.
//! - [`Session`]: a blob loaded through the driver model (load, validate, bind, submit, wait on
//!   the fence) and run on host tensors.
//! - [`reference`] runs the reference interpreter; [`compare`] and [`first_difference`] compare
//!   the device with it; [`profile`] gives per-layer cycles, MACs, bytes and roofline bounds.
//!
//! Errors are [`Error`] values that carry the location the lower layers report (node, byte
//! offset, line and column).

mod check;
mod compare;
mod compile;
pub mod npy;
mod profile;
pub mod roofline;
mod session;
mod tensor;

pub use accelc_compiler::ir::{DType, Graph};
pub use accelc_compiler::lower::{Compiled, Layer, LayerKind};
pub use accelc_compiler::opt::Level;
pub use accelc_isa::DeviceConfig;
pub use check::{CheckReport, NodeCheck, check};
pub use compare::{
    ATOL, Difference, Mismatch, RTOL, SCALE_TOL, compare, compare_scaled, compare_tensors,
    compare_tensors_within, compare_within, first_difference, first_difference_plan, max_abs_diff,
    reference,
};
pub use compile::{
    Compilation, Observer, Options, Source, compile, frontend, host_mlir, import, load_graph,
    optimize,
};
pub use profile::{LayerProfile, Profile, blob_layers, profile};
pub use session::{RunResult, Session, StepRun, TensorSpec, blob_signature, host_dtype, io_dtype};
pub use tensor::HostTensor;

use std::fmt;

/// What went wrong, by kind; the message carries the location (node, byte offset, line and
/// column) the failing layer reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The model cannot be read, imported or processed by the frontend or optimizer.
    Model(String),
    /// The model imports but the device cannot run it (the node and constraint).
    Unsupported(String),
    /// A blob is malformed, built for other hardware, or rejected by the driver.
    Blob(String),
    /// The device faulted or timed out.
    Device(String),
    /// Inputs do not match the model's signature.
    Input(String),
    /// A bug in accelc (an inconsistency it detected in itself).
    Internal(String),
    /// Writing an output (a blob) failed: the operating system's message.
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Model(m)
            | Error::Unsupported(m)
            | Error::Blob(m)
            | Error::Device(m)
            | Error::Input(m)
            | Error::Internal(m)
            | Error::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// The built-in device configuration called `name`, or an error listing the names.
pub fn config(name: &str) -> Result<DeviceConfig, Error> {
    DeviceConfig::by_name(name).ok_or_else(|| {
        let names: Vec<String> = DeviceConfig::builtin().into_iter().map(|c| c.name).collect();
        Error::Input(format!("no device configuration `{name}` (built-in: {})", names.join(", ")))
    })
}
