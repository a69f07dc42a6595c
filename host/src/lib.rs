//! accelc's host executor: the CPU half of a compiled model.
//!
//! The compiler writes each host region of a model as an MLIR module of upstream dialects
//! (`func`, `scf`, `memref`, `arith`, `math`, `linalg`) whose functions take one statically
//! shaped, identity-layout `memref` per tensor, inputs first, outputs last, and return nothing
//! (destination-passing style: nothing allocated inside crosses the boundary). This crate
//! parses such a module with MLIR, checks it (only those dialects, no external symbols but
//! libm's, every function's signature as the plan declares it), lowers it to the LLVM dialect
//! with one pass pipeline ([`PIPELINE`]) and JIT-compiles it with MLIR's `ExecutionEngine` at
//! LLVM optimisation level 3. [`HostModule::call`] then runs a function on caller buffers.
//!
//! It is its own crate so that the runtime (the driver model and the simulator) keeps no LLVM
//! dependency; the facade uses both. The one `unsafe` call into JIT code lives in `jit.rs`.
//!
//! **Trust.** A host module is native code once compiled. The checks here catch a corrupted or
//! mismatched blob (wrong dialects, signatures that disagree with the plan, calls to arbitrary
//! symbols) but are no sandbox: `memref` accesses are not bounds-checked by MLIR's lowering.
//! Load blobs with host regions only from sources you would take a shared library from.

mod jit;

use std::fmt;

pub use jit::HostModule;

/// The pass pipeline from our dialects to the LLVM dialect, in MLIR's textual pipeline syntax.
/// Function arguments use the bare-pointer calling convention (one pointer per statically
/// shaped memref), which is what [`HostModule::call`] passes.
pub const PIPELINE: &str = "builtin.module(convert-linalg-to-loops,lower-affine,\
convert-scf-to-cf,convert-math-to-llvm,convert-math-to-libm,expand-strided-metadata,\
finalize-memref-to-llvm,convert-arith-to-llvm,convert-index-to-llvm,convert-cf-to-llvm,\
convert-func-to-llvm{use-bare-ptr-memref-call-conv=1},reconcile-unrealized-casts)";

/// Operation-name prefixes a host module may contain (before lowering).
pub const ALLOWED_DIALECTS: &[&str] =
    &["builtin.", "func.", "scf.", "memref.", "arith.", "math.", "linalg.", "affine.", "index."];

/// Why a host module could not be built or called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostError {
    /// What is wrong, naming the function, operation or argument.
    pub message: String,
}

impl HostError {
    pub(crate) fn new(m: impl Into<String>) -> HostError {
        HostError { message: m.into() }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HostError {}

/// The element types a host function's memrefs may have, with their MLIR spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `i8`, also booleans (one byte each, 0 or 1), as the IR stores them.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `f16` (IEEE binary16).
    F16,
    /// `bf16` (bfloat16).
    BF16,
}

impl Elem {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Elem::I8 => 1,
            Elem::I16 | Elem::F16 | Elem::BF16 => 2,
            Elem::F32 | Elem::I32 => 4,
            Elem::F64 | Elem::I64 => 8,
        }
    }

    /// The MLIR type name.
    pub fn mlir(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::F64 => "f64",
            Elem::I8 => "i8",
            Elem::I16 => "i16",
            Elem::I32 => "i32",
            Elem::I64 => "i64",
            Elem::F16 => "f16",
            Elem::BF16 => "bf16",
        }
    }

    fn from_mlir(s: &str) -> Option<Elem> {
        [Elem::F32, Elem::F64, Elem::I8, Elem::I16, Elem::I32, Elem::I64, Elem::F16, Elem::BF16]
            .into_iter()
            .find(|e| e.mlir() == s)
    }
}

/// One argument of a host function: a statically shaped memref.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgSpec {
    /// Dimensions (empty for a rank-0 memref).
    pub dims: Vec<usize>,
    /// Element type.
    pub elem: Elem,
}

impl ArgSpec {
    /// Bytes of the buffer the argument points to, `None` on overflow.
    pub fn bytes(&self) -> Option<usize> {
        self.dims.iter().try_fold(self.elem.bytes(), |a, d| a.checked_mul(*d))
    }

    /// The MLIR type, `memref<2x3xf32>` (`memref<f32>` for rank 0).
    pub fn mlir(&self) -> String {
        let mut s = String::from("memref<");
        for d in &self.dims {
            s.push_str(&d.to_string());
            s.push('x');
        }
        s.push_str(self.elem.mlir());
        s.push('>');
        s
    }

    /// Parses the printed form [`ArgSpec::mlir`] writes; `None` for any other type (dynamic
    /// dimensions, layouts, memory spaces, other element types).
    pub fn parse(s: &str) -> Option<ArgSpec> {
        let body = s.strip_prefix("memref<")?.strip_suffix('>')?;
        let mut parts: Vec<&str> = body.split('x').collect();
        let elem = Elem::from_mlir(parts.pop()?)?;
        let dims = parts
            .iter()
            .map(|p| {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    None
                } else {
                    p.parse().ok()
                }
            })
            .collect::<Option<Vec<usize>>>()?;
        Some(ArgSpec { dims, elem })
    }
}

/// A function a host module must define, with its arguments (inputs then outputs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSpec {
    /// The symbol name.
    pub name: String,
    /// Its memref arguments.
    pub args: Vec<ArgSpec>,
}

/// A buffer aligned for every element type (16 bytes), zero-filled, for host-function
/// arguments.
#[derive(Clone, Debug, Default)]
pub struct Buffer {
    words: Vec<u128>,
    len: usize,
}

impl Buffer {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Buffer {
        Buffer { words: vec![0; len.div_ceil(16)], len }
    }

    /// A copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Buffer {
        let mut b = Buffer::zeroed(bytes.len());
        b.as_mut_bytes().copy_from_slice(bytes);
        b
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        let all: &[u8] = bytemuck_bytes(&self.words);
        &all[..self.len]
    }

    /// Its bytes, writable.
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        let len = self.len;
        let all: &mut [u8] = bytemuck_bytes_mut(&mut self.words);
        &mut all[..len]
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.words.as_mut_ptr().cast()
    }
}

fn bytemuck_bytes(w: &[u128]) -> &[u8] {
    jit::words_as_bytes(w)
}

fn bytemuck_bytes_mut(w: &mut [u128]) -> &mut [u8] {
    jit::words_as_bytes_mut(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_spec_round_trips_and_refuses_other_types() {
        let a = ArgSpec { dims: vec![2, 3], elem: Elem::F32 };
        assert_eq!(a.mlir(), "memref<2x3xf32>");
        assert_eq!(ArgSpec::parse("memref<2x3xf32>"), Some(a));
        assert_eq!(ArgSpec::parse("memref<f32>"), Some(ArgSpec { dims: vec![], elem: Elem::F32 }));
        let h = ArgSpec { dims: vec![2, 3], elem: Elem::BF16 };
        assert_eq!(ArgSpec::parse("memref<2x3xbf16>"), Some(h));
        for bad in
            ["memref<?x3xf32>", "memref<2x3xf8E4M3FN>", "tensor<2xf32>", "memref<2x3xf32, 1>"]
        {
            assert_eq!(ArgSpec::parse(bad), None, "{bad}");
        }
    }
}
