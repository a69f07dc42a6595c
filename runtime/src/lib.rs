//! The accelc runtime: a driver model in the style of Linux drm/accel and the device simulator.
//! Not written yet (issue 3); the crate exists so the workspace has its final shape and the
//! dependency rule `isa ← runtime` (never the compiler) is in place from the start.
