//! The accelc runtime: a driver model in the style of Linux drm/accel ([`driver`]), the
//! device simulator it submits to ([`sim`]), and the high-level [`model::Model`] API. Depends
//! on the ISA crate only, never on the compiler.

pub mod driver;
pub mod model;
pub mod sim;

pub use driver::{Context, Device, Fence, Job, JobStatus};
pub use model::Model;
