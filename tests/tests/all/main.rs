//! Integration tests, in one binary so the workspace links them once.

mod asm_errors;
mod blob;
mod book;
mod check;
mod cli;
mod configs;
mod conformance;
mod driver;
mod encoding;
mod faithful;
mod frontend;
mod fuzz_corpus;
mod golden;
mod host;
mod int8;
mod lower;
mod lower_random;
mod op_chains;
mod opt;
mod registry;
mod reliability;
mod roundtrip;
mod sim;
mod text;
mod verify;
mod zoo;
