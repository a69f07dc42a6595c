//! The accelc compiler: ONNX import, the graph IR, e-graph optimisation and lowering to command
//! blobs. Not written yet (issues 4, 5 and 6); the crate exists so the workspace has its final
//! shape and the dependency rule `isa ← compiler` is in place from the start.
