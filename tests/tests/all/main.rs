//! Integration tests, in one binary so the workspace links them once.

mod encoding;
mod roundtrip;
