//! The accelc runtime: the device simulator and (next) a driver model in the style of Linux
//! drm/accel. Depends on the ISA crate only, never on the compiler.

pub mod sim;
