//! Integration tests, in one binary so the workspace links them once.

mod asm_errors;
mod blob;
mod encoding;
mod roundtrip;
mod verify;
