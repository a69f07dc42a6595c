//! Parsing, checking, lowering and JIT-compiling a host module, and calling its functions: the
//! crate's only `unsafe` code (the workspace denies it elsewhere).
//!
//! Why `unsafe` is needed and why it is sound here:
//! - MLIR's C API creates the execution engine and returns a raw handle that melior's safe
//!   wrapper does not let us check for failure (a null handle); we call the C function
//!   ourselves, check for null and destroy it exactly once in `Drop`.
//! - Calling JIT-compiled code is a call through a function pointer the engine returned
//!   (`_mlir_<name>`, the packed wrapper MLIR generates for every function). Before a call we
//!   check that the function was declared with exactly these arguments (statically shaped
//!   memrefs), that each buffer has the bytes its memref type needs and is aligned for its
//!   element type, and that no output buffer is also an input (the borrow checker guarantees
//!   the buffers are distinct objects). What the compiled code does inside those bounds is the
//!   compiler's contract (see the crate's note on trust).
#![allow(unsafe_code, reason = "the execution engine's C API and calls into JIT code")]

use std::cell::RefCell;
use std::ffi::c_void;

use melior::dialect::DialectRegistry;
use melior::ir::operation::{OperationLike, WalkOrder, WalkResult};
use melior::ir::{Module, RegionLike};
use melior::pass::PassManager;
use melior::utility::{
    parse_pass_pipeline, register_all_dialects, register_all_llvm_translations, register_all_passes,
};
use melior::{Context, StringRef};

use crate::{ALLOWED_DIALECTS, ArgSpec, Buffer, FunctionSpec, HostError, PIPELINE};

type Packed = unsafe extern "C" fn(*mut *mut c_void);

/// A host module compiled to machine code, with the functions it defines.
pub struct HostModule {
    engine: mlir_sys::MlirExecutionEngine,
    functions: Vec<(FunctionSpec, Packed)>,
}

// SAFETY: the engine is only read after construction (function pointers were looked up
// then); the compiled functions keep no global state (they only touch their arguments and
// stack or heap memory they allocate and free), so calls from several threads are as safe as
// calls from one.
unsafe impl Send for HostModule {}
// SAFETY: as for `Send`: `call` takes `&self` and mutates nothing in the module.
unsafe impl Sync for HostModule {}

impl std::fmt::Debug for HostModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.functions.iter().map(|(s, _)| s.name.as_str()).collect();
        f.debug_struct("HostModule").field("functions", &names).finish()
    }
}

impl Drop for HostModule {
    fn drop(&mut self) {
        // SAFETY: `engine` is non-null (checked in `compile`) and destroyed only here.
        unsafe { mlir_sys::mlirExecutionEngineDestroy(self.engine) }
    }
}

/// The signature in a printed `function_type` such as `(memref<2xf32>, memref<2xf32>) -> ()`,
/// or why it is not one a host function may have.
fn parse_signature(ty: &str) -> Result<Vec<ArgSpec>, String> {
    let inner = ty
        .strip_suffix(" -> ()")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("type `{ty}` is not (memref, ...) -> ()"))?;
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(", ")
        .map(|a| {
            ArgSpec::parse(a).ok_or_else(|| {
                format!("argument type `{a}` is not a statically shaped memref of a host type")
            })
        })
        .collect()
}

/// Checks the parsed module: allowed dialects only, no function declarations (external
/// symbols), and every expected function defined with exactly its arguments.
fn check(module: &Module<'_>, functions: &[FunctionSpec]) -> Result<(), HostError> {
    let mut problem: Option<String> = None;
    let mut found: Vec<(String, Vec<ArgSpec>)> = Vec::new();
    module.as_operation().walk(WalkOrder::PreOrder, |op| {
        let name = op.name().as_string_ref().as_str().unwrap_or("?").to_string();
        if !ALLOWED_DIALECTS.iter().any(|d| name.starts_with(d)) {
            problem = Some(format!("operation `{name}` is outside the host dialects"));
            return WalkResult::Interrupt;
        }
        if name == "func.func" {
            let sym = op
                .attribute("sym_name")
                .map(|a| a.to_string().trim_matches('"').to_string())
                .unwrap_or_default();
            let body = op.region(0).ok().and_then(|r| r.first_block()).is_some();
            if !body {
                problem = Some(format!("function `{sym}` is a declaration (an external symbol)"));
                return WalkResult::Interrupt;
            }
            let ty = op.attribute("function_type").map(|a| a.to_string()).unwrap_or_default();
            match parse_signature(&ty) {
                Ok(args) => found.push((sym, args)),
                Err(e) => {
                    problem = Some(format!("function `{sym}`: {e}"));
                    return WalkResult::Interrupt;
                }
            }
        }
        WalkResult::Advance
    });
    if let Some(p) = problem {
        return Err(HostError::new(p));
    }
    for f in functions {
        match found.iter().find(|(n, _)| *n == f.name) {
            None => {
                return Err(HostError::new(format!("the module defines no function `{}`", f.name)));
            }
            Some((_, args)) if *args != f.args => {
                let got: Vec<String> = args.iter().map(ArgSpec::mlir).collect();
                let want: Vec<String> = f.args.iter().map(ArgSpec::mlir).collect();
                return Err(HostError::new(format!(
                    "function `{}` takes ({}); the plan passes ({})",
                    f.name,
                    got.join(", "),
                    want.join(", ")
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

pub(crate) fn words_as_bytes(w: &[u128]) -> &[u8] {
    // SAFETY: u128 has no padding and every byte pattern is a valid u8; the length is the
    // slice's size in bytes and the lifetime is the borrow's.
    unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u8>(), std::mem::size_of_val(w)) }
}

pub(crate) fn words_as_bytes_mut(w: &mut [u128]) -> &mut [u8] {
    // SAFETY: as in `words_as_bytes`; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(w)) }
}

impl HostModule {
    /// Parses MLIR `source`, checks it (see the crate documentation) against `functions`,
    /// lowers it with [`PIPELINE`] and compiles it at LLVM `-O3`.
    ///
    /// Errors: the parser's or verifier's diagnostics with their locations (line and column
    /// of `source`), an operation outside the host dialects, a declaration, a function missing
    /// or with other arguments than `functions` says, a pass failure, or the engine's refusal.
    pub fn compile(source: &str, functions: &[FunctionSpec]) -> Result<HostModule, HostError> {
        let registry = DialectRegistry::new();
        register_all_dialects(&registry);
        let context = Context::new();
        context.append_dialect_registry(&registry);
        context.load_all_available_dialects();
        register_all_passes();
        register_all_llvm_translations(&context);
        let diagnostics = RefCell::new(Vec::<String>::new());
        let handler = context.attach_diagnostic_handler(|d| {
            diagnostics.borrow_mut().push(format!("{}: {d}", d.location()));
            true
        });
        let result = (|| {
            let fail = |what: &str| {
                let d = diagnostics.borrow();
                HostError::new(if d.is_empty() {
                    what.to_string()
                } else {
                    format!("{what}: {}", d.join("; "))
                })
            };
            let mut module = Module::parse(&context, source)
                .ok_or_else(|| fail("host module does not parse"))?;
            if !module.as_operation().verify() {
                return Err(fail("host module does not verify"));
            }
            check(&module, functions)?;
            let pm = PassManager::new(&context);
            parse_pass_pipeline(pm.as_operation_pass_manager(), PIPELINE)
                .map_err(|e| HostError::new(format!("pass pipeline: {e}")))?;
            pm.run(&mut module).map_err(|_| fail("lowering the host module to LLVM failed"))?;
            // SAFETY: the module is a valid, verified LLVM-dialect module owned by `context`,
            // alive for the call; no shared libraries are passed (the pointer is unused).
            let engine = unsafe {
                mlir_sys::mlirExecutionEngineCreate(
                    module.to_raw(),
                    3,
                    0,
                    std::ptr::null(),
                    false,
                    false,
                )
            };
            if engine.ptr.is_null() {
                return Err(fail("LLVM could not compile the host module"));
            }
            let mut m = HostModule { engine, functions: Vec::new() };
            for f in functions {
                // SAFETY: `engine` is live; the name outlives the call.
                let p = unsafe {
                    mlir_sys::mlirExecutionEngineLookupPacked(
                        m.engine,
                        StringRef::new(&f.name).to_raw(),
                    )
                };
                if p.is_null() {
                    return Err(HostError::new(format!("no compiled function `{}`", f.name)));
                }
                // SAFETY: MLIR's packed wrappers have exactly this type: one pointer to an
                // array of pointers, one per argument.
                let p: Packed = unsafe { std::mem::transmute::<*mut c_void, Packed>(p) };
                m.functions.push((f.clone(), p));
            }
            Ok(m)
        })();
        context.detach_diagnostic_handler(handler);
        result
    }

    /// The functions it defines, as declared.
    pub fn functions(&self) -> impl Iterator<Item = &FunctionSpec> {
        self.functions.iter().map(|(f, _)| f)
    }

    /// Calls function `name` on `args` (inputs then outputs, in declaration order).
    ///
    /// Errors: no such function, the wrong number of buffers, or a buffer whose size is not
    /// its memref's (dimensions × element size).
    pub fn call(&self, name: &str, args: &mut [&mut Buffer]) -> Result<(), HostError> {
        let (spec, f) = self
            .functions
            .iter()
            .find(|(s, _)| s.name == name)
            .ok_or_else(|| HostError::new(format!("no host function `{name}`")))?;
        if args.len() != spec.args.len() {
            return Err(HostError::new(format!(
                "host function `{name}` takes {} buffers, {} given",
                spec.args.len(),
                args.len()
            )));
        }
        for (i, (a, s)) in args.iter().zip(&spec.args).enumerate() {
            if s.bytes() != Some(a.len()) {
                return Err(HostError::new(format!(
                    "host function `{name}` argument {i} is {}: {:?} bytes, {} given",
                    s.mlir(),
                    s.bytes(),
                    a.len()
                )));
            }
        }
        // One data pointer per memref (the bare-pointer convention), and the packed wrapper's
        // array of pointers to those.
        let mut ptrs: Vec<*mut u8> = args.iter_mut().map(|a| a.as_mut_ptr()).collect();
        let mut packed: Vec<*mut c_void> =
            ptrs.iter_mut().map(|p| (p as *mut *mut u8).cast::<c_void>()).collect();
        // SAFETY: `f` is the packed wrapper of a function whose arguments were checked above
        // against the buffers: each pointer is 16-byte aligned (Buffer's storage) and points
        // to exactly the bytes its statically shaped memref covers; `ptrs` and `packed` live
        // across the call.
        unsafe { f(packed.as_mut_ptr()) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Elem;

    const ADD: &str = r#"
func.func @add(%a: memref<4xf32>, %b: memref<4xf32>, %y: memref<4xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  scf.for %i = %c0 to %c4 step %c1 {
    %x = memref.load %a[%i] : memref<4xf32>
    %z = memref.load %b[%i] : memref<4xf32>
    %s = arith.addf %x, %z : f32
    %t = math.tanh %s : f32
    memref.store %t, %y[%i] : memref<4xf32>
  }
  return
}
"#;

    fn spec() -> FunctionSpec {
        let a = ArgSpec { dims: vec![4], elem: Elem::F32 };
        FunctionSpec { name: "add".into(), args: vec![a.clone(), a.clone(), a] }
    }

    fn f32s(v: &[f32]) -> Buffer {
        Buffer::from_bytes(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
    }

    #[test]
    fn compiles_and_calls_a_loop_with_libm() {
        let m = HostModule::compile(ADD, &[spec()]).unwrap();
        let mut a = f32s(&[1.0, 2.0, -3.0, 0.5]);
        let mut b = f32s(&[0.5, -2.0, 1.0, 0.25]);
        let mut y = Buffer::zeroed(16);
        m.call("add", &mut [&mut a, &mut b, &mut y]).unwrap();
        let got: Vec<f32> =
            y.as_bytes().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let want: Vec<f32> = [1.5f32, 0.0, -2.0, 0.75].iter().map(|x| x.tanh()).collect();
        assert_eq!(got, want);
        let mut short = Buffer::zeroed(12);
        let e = m.call("add", &mut [&mut a, &mut b, &mut short]).unwrap_err();
        assert!(e.message.contains("argument 2"), "{e}");
    }

    #[test]
    fn refuses_bad_modules_with_a_reason() {
        let cases = [
            ("func.func @add(", "does not parse"),
            (
                "func.func private @puts(memref<4xf32>)\nfunc.func @add(%a: memref<4xf32>, %b: memref<4xf32>, %y: memref<4xf32>) { return }",
                "declaration",
            ),
            (
                "func.func @add(%a: memref<4xf32>, %b: memref<4xf32>, %y: memref<3xf32>) { return }",
                "the plan passes",
            ),
            ("func.func @other() { return }", "no function `add`"),
            (
                "func.func @add(%a: memref<4xf32>, %b: memref<4xf32>, %y: memref<4xf32>) { llvm.unreachable }",
                "outside the host dialects",
            ),
        ];
        for (src, want) in cases {
            let e = HostModule::compile(src, &[spec()]).unwrap_err();
            assert!(e.message.contains(want), "{src}: {e}");
        }
    }
}
