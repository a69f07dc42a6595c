//! Host code generation: a host region (nodes the device does not run) becomes one MLIR
//! function of upstream dialects (`func`, `scf`, `memref`, `arith`, `math`) that `accelc-host`
//! lowers to LLVM and JIT-compiles.
//!
//! Convention (what the plan and the host executor rely on): the function takes one
//! statically shaped, identity-layout `memref` per tensor, the region's inputs first, then its
//! outputs, then a `memref<2xi64>` *status* the caller zeroes; it allocates its intermediates
//! itself and frees them before returning. Constants are private `memref.global`s holding the
//! tensor's bytes. Element types: `f32`; `i8` for int8, uint8 and bool (0 or 1); `i32`; `i64`.
//!
//! Each op family's `host` facet (`crate::ops`) writes its nodes through [`HostBuilder`]: loop
//! nests over the output (`scf.for`), loads with broadcasting or computed indices, and scalar
//! arithmetic that follows the reference interpreter's rules exactly (integers computed in
//! `i64` and truncated to the type's width as the interpreter's `Array` does; float
//! transcendental functions in `f64` where the interpreter computes in `f64`).
//!
//! Run-time errors the reference reports (an integer division by zero, an index out of
//! range) are guarded: the unsafe operation is not executed, and the status records
//! `[code, node]` ([`STATUS_CODES`]), which the caller turns into an error naming the node.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::LowerError;
use crate::ir::{DType, Graph, Node, TensorType, ValueId};

/// Status codes a host function writes to `status[0]` (with the node index in `status[1]`),
/// and their messages.
pub const STATUS_CODES: &[(i64, &str)] = &[
    (1, "integer division by zero"),
    (2, "integer modulo by zero"),
    (3, "integer 0 raised to a negative power"),
    (4, "an index is out of range"),
    (5, "an int32 accumulator overflows"),
];

/// The message of status code `code`.
pub fn status_message(code: i64) -> &'static str {
    STATUS_CODES.iter().find(|(c, _)| *c == code).map_or("unknown host error", |(_, m)| m)
}

/// The MLIR element type of an IR type.
pub(crate) fn scalar(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::I8 | DType::U8 | DType::Bool => "i8",
        DType::I16 | DType::U16 => "i16",
        DType::I32 | DType::U32 => "i32",
        DType::I64 | DType::U64 => "i64",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
    }
}

/// The `memref` type of a tensor type: `memref<2x3xf32>`, `memref<f32>` for rank 0.
pub(crate) fn memref(t: &TensorType) -> String {
    let mut s = String::from("memref<");
    for d in &t.shape {
        let _ = write!(s, "{d}x");
    }
    s.push_str(scalar(t.dtype));
    s.push('>');
    s
}

/// The dimensions a host function's argument is declared with for a tensor of `dims`: the
/// same, except that a tensor with no elements is `[0]` (MLIR's bare-pointer convention does
/// not lower a multi-dimensional memref with a zero dimension).
pub fn arg_dims(dims: &[usize]) -> Vec<usize> {
    if dims.len() > 1 && dims.contains(&0) { vec![0] } else { dims.to_vec() }
}

/// The type of value `v`: inferred, or a folded constant's own.
pub(crate) fn value_type(g: &Graph, v: ValueId) -> R<TensorType> {
    let value = g.value(v);
    if let Some(t) = &value.ty {
        return Ok(t.clone());
    }
    match &value.constant {
        Some(c) => Ok(TensorType { dtype: c.dtype, shape: c.shape.clone() }),
        None => Err(LowerError::msg(format!(
            "`{}` has no type (a node upstream does not import, or its shape is not known)",
            value.name
        ))),
    }
}

/// Module-wide state: the constant globals, shared by every function of the module.
#[derive(Default)]
pub(crate) struct ModuleText {
    globals: String,
    count: usize,
}

/// Writes one host function; handed to each family's `host` facet per node.
pub(crate) struct HostBuilder<'g> {
    /// The graph.
    pub(crate) g: &'g Graph,
    /// The node being written (its index, for the status).
    node: usize,
    module: &'g mut ModuleText,
    prologue: String,
    body: String,
    epilogue: String,
    next: usize,
    consts: HashMap<String, String>,
    mems: HashMap<ValueId, String>,
    status: String,
}

type R<T> = Result<T, LowerError>;

/// A loop body with carried values: the builder, the induction variable, the carried values;
/// returns their next state.
pub(crate) type FoldBody<'a, 'g> =
    dyn FnMut(&mut HostBuilder<'g>, &str, &[String]) -> R<Vec<String>> + 'a;

/// A host region to write as one function: its symbol, nodes (topological order), inputs and
/// outputs.
pub type HostRegion<'a> = (String, &'a [usize], &'a [ValueId], &'a [ValueId]);

impl<'g> HostBuilder<'g> {
    pub(crate) fn new(g: &'g Graph, module: &'g mut ModuleText) -> HostBuilder<'g> {
        HostBuilder {
            g,
            node: 0,
            module,
            prologue: String::new(),
            body: String::new(),
            epilogue: String::new(),
            next: 0,
            consts: HashMap::new(),
            mems: HashMap::new(),
            status: "%status".into(),
        }
    }

    /// A fresh SSA name.
    pub(crate) fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%v{}", self.next)
    }

    /// Appends a line to the body.
    pub(crate) fn line(&mut self, s: &str) {
        self.body.push_str(s);
        self.body.push('\n');
    }

    /// `%r = <rhs>` in the body; returns `%r`.
    pub(crate) fn let_(&mut self, rhs: &str) -> String {
        let r = self.fresh();
        let _ = writeln!(self.body, "{r} = {rhs}");
        r
    }

    /// The type of value `v` (every value is typed after the frontend).
    pub(crate) fn ty(&self, v: ValueId) -> R<TensorType> {
        value_type(self.g, v)
    }

    /// An error naming the current node.
    pub(crate) fn err(&self, n: &Node, m: impl Into<String>) -> LowerError {
        LowerError::at(&n.name, m)
    }

    /// An `index` constant (in the prologue, so it dominates every use).
    pub(crate) fn idx(&mut self, v: usize) -> String {
        self.constant(&format!("{v} : index"))
    }

    /// A scalar constant of IR type `d` with value `v` (integers wrap to the width).
    pub(crate) fn int(&mut self, d: DType, v: i64) -> String {
        // MLIR integer constants are signless, written as the signed value of the bits.
        let v = match d {
            DType::I8 | DType::U8 | DType::Bool => i64::from(v as i8),
            DType::I16 | DType::U16 => i64::from(v as i16),
            DType::I32 | DType::U32 => i64::from(v as i32),
            _ => v,
        };
        self.constant(&format!("{v} : {}", scalar(d)))
    }

    /// An `i64` constant.
    pub(crate) fn i64c(&mut self, v: i64) -> String {
        self.constant(&format!("{v} : i64"))
    }

    /// An `f32` constant, exactly (by its bits).
    pub(crate) fn f32c(&mut self, v: f32) -> String {
        self.constant(&format!("0x{:08X} : f32", v.to_bits()))
    }

    /// An `f64` constant, exactly.
    pub(crate) fn f64c(&mut self, v: f64) -> String {
        self.constant(&format!("0x{:016X} : f64", v.to_bits()))
    }

    fn constant(&mut self, body: &str) -> String {
        if let Some(r) = self.consts.get(body) {
            return r.clone();
        }
        let r = self.fresh();
        let _ = writeln!(self.prologue, "{r} = arith.constant {body}");
        self.consts.insert(body.to_string(), r.clone());
        r
    }

    /// The memref holding value `v`: a function argument, an intermediate written earlier,
    /// or a constant's global.
    pub(crate) fn mem(&mut self, v: ValueId) -> R<String> {
        if let Some(m) = self.mems.get(&v) {
            return Ok(m.clone());
        }
        let value = self.g.value(v);
        let Some(c) = &value.constant else {
            return Err(LowerError::msg(format!(
                "internal: host code reads `{}` before it is written",
                value.name
            )));
        };
        let c = c.clone();
        let r = self.global(&c);
        self.mems.insert(v, r.clone());
        Ok(r)
    }

    /// A constant tensor as a private global (an empty one as an empty allocation); returns
    /// its memref, defined in the prologue.
    pub(crate) fn global(&mut self, c: &crate::ir::Tensor) -> String {
        let t = TensorType { dtype: c.dtype, shape: c.shape.clone() };
        let ty = memref(&t);
        let r = self.fresh();
        if c.data.is_empty() {
            let _ = writeln!(self.prologue, "{r} = memref.alloc() : {ty}");
            let _ = writeln!(self.epilogue, "memref.dealloc {r} : {ty}");
            return r;
        }
        self.module.count += 1;
        let name = format!("@const_{}", self.module.count);
        let mut hex = String::with_capacity(c.data.len() * 2);
        for b in c.data.iter() {
            let _ = write!(hex, "{b:02X}");
        }
        let _ = writeln!(
            self.module.globals,
            "memref.global \"private\" constant {name} : {ty} = dense<\"0x{hex}\"> {{alignment = 16 : i64}}"
        );
        let _ = writeln!(self.prologue, "{r} = memref.get_global {name} : {ty}");
        r
    }

    /// `memref.load` from memref `m` of type `t`.
    pub(crate) fn load_raw(&mut self, m: &str, t: &TensorType, idx: &[String]) -> String {
        self.let_(&format!("memref.load {m}[{}] : {}", idx.join(", "), memref(t)))
    }

    /// The memref to write value `v` into: its function argument, or a new allocation freed
    /// when the function returns.
    pub(crate) fn out(&mut self, v: ValueId) -> R<String> {
        if let Some(m) = self.mems.get(&v) {
            return Ok(m.clone());
        }
        let ty = memref(&self.ty(v)?);
        let r = self.fresh();
        let _ = writeln!(self.prologue, "{r} = memref.alloc() {{alignment = 16 : i64}} : {ty}");
        let _ = writeln!(self.epilogue, "memref.dealloc {r} : {ty}");
        self.mems.insert(v, r.clone());
        Ok(r)
    }

    /// A scratch buffer of type `t`, allocated when the function starts and freed when it
    /// returns.
    pub(crate) fn scratch(&mut self, t: &TensorType) -> String {
        let ty = memref(t);
        let r = self.fresh();
        let _ = writeln!(self.prologue, "{r} = memref.alloc() {{alignment = 16 : i64}} : {ty}");
        let _ = writeln!(self.epilogue, "memref.dealloc {r} : {ty}");
        r
    }

    /// Loads element `flat` (row-major) of `v`.
    pub(crate) fn load_flat(&mut self, v: ValueId, flat: &str) -> R<String> {
        let t = self.ty(v)?;
        let idx = self.delinearize(flat, &t.shape);
        self.load(v, &idx)
    }

    /// Stores `x` at element `flat` (row-major) of `v`.
    pub(crate) fn store_flat(&mut self, x: &str, v: ValueId, flat: &str) -> R<()> {
        let t = self.ty(v)?;
        let idx = self.delinearize(flat, &t.shape);
        self.store(x, v, &idx)
    }

    /// `x` (an `f32`) widened to `f64`.
    pub(crate) fn f64_of(&mut self, x: &str) -> String {
        self.let_(&format!("arith.extf {x} : f32 to f64"))
    }

    /// `x` (an `f64`) rounded to `f32`.
    pub(crate) fn f32_of(&mut self, x: &str) -> String {
        self.let_(&format!("arith.truncf {x} : f64 to f32"))
    }

    /// Whether every `pos[i]` (an `index`, possibly negative) lies in `0..dims[i]`, as an `i1`.
    pub(crate) fn in_bounds(&mut self, pos: &[String], dims: &[usize]) -> String {
        let mut ok = self.let_("arith.constant true");
        let c0 = self.idx(0);
        for (p, d) in pos.iter().zip(dims) {
            let dn = self.idx(*d);
            let ge = self.cmpi("sge", p, &c0, "index");
            let lt = self.cmpi("slt", p, &dn, "index");
            let both = self.op2("arith.andi", &ge, &lt, "i1");
            ok = self.op2("arith.andi", &ok, &both, "i1");
        }
        ok
    }

    /// Each `pos[i]` clamped into `0..dims[i]` (so a guarded load stays in bounds).
    pub(crate) fn clamp_pos(&mut self, pos: &[String], dims: &[usize]) -> Vec<String> {
        let c0 = self.idx(0);
        pos.iter()
            .zip(dims)
            .map(|(p, d)| {
                let hi = self.idx(d.saturating_sub(1));
                let a = self.op2("arith.maxsi", p, &c0, "index");
                self.op2("arith.minsi", &a, &hi, "index")
            })
            .collect()
    }

    /// `memref.load` of `v` at indices `idx`.
    pub(crate) fn load(&mut self, v: ValueId, idx: &[String]) -> R<String> {
        let m = self.mem(v)?;
        let t = self.ty(v)?;
        Ok(self.let_(&format!("memref.load {m}[{}] : {}", idx.join(", "), memref(&t))))
    }

    /// `memref.store` of `x` into `v` at `idx`.
    pub(crate) fn store(&mut self, x: &str, v: ValueId, idx: &[String]) -> R<()> {
        let m = self.out(v)?;
        let t = self.ty(v)?;
        self.line(&format!("memref.store {x}, {m}[{}] : {}", idx.join(", "), memref(&t)));
        Ok(())
    }

    /// Loads `v` at the output indices `out_idx` with ONNX (numpy) broadcasting: `v`'s axes
    /// align with the trailing output axes, and an axis of size 1 reads index 0.
    pub(crate) fn load_bcast(&mut self, v: ValueId, out_idx: &[String]) -> R<String> {
        let t = self.ty(v)?;
        let skip = out_idx.len().saturating_sub(t.shape.len());
        let mut idx = Vec::with_capacity(t.shape.len());
        for (k, d) in t.shape.iter().enumerate() {
            idx.push(if *d == 1 { self.idx(0) } else { out_idx[skip + k].clone() });
        }
        self.load(v, &idx)
    }

    /// Nested `scf.for` loops over `dims`, calling `f` with the induction variables innermost.
    pub(crate) fn nest(
        &mut self,
        dims: &[usize],
        f: &mut dyn FnMut(&mut HostBuilder<'g>, &[String]) -> R<()>,
    ) -> R<()> {
        let mut ivs = Vec::with_capacity(dims.len());
        let c0 = self.idx(0);
        let c1 = self.idx(1);
        for d in dims {
            let n = self.idx(*d);
            let iv = self.fresh();
            self.line(&format!("scf.for {iv} = {c0} to {n} step {c1} {{"));
            ivs.push(iv);
        }
        f(self, &ivs)?;
        for _ in dims {
            self.line("}");
        }
        Ok(())
    }

    /// A loop `k = lo..hi` carrying values `init` (of MLIR types `tys`); `f` returns the
    /// carried values' next state. Returns the final values.
    pub(crate) fn fold(
        &mut self,
        lo: &str,
        hi: &str,
        init: &[String],
        tys: &[&str],
        f: &mut FoldBody<'_, 'g>,
    ) -> R<Vec<String>> {
        let c1 = self.idx(1);
        let r = self.fresh();
        let k = self.fresh();
        let accs: Vec<String> = init.iter().map(|_| self.fresh()).collect();
        let args: Vec<String> = accs.iter().zip(init).map(|(a, i)| format!("{a} = {i}")).collect();
        let multi = if init.len() > 1 { format!(":{}", init.len()) } else { String::new() };
        self.line(&format!(
            "{r}{multi} = scf.for {k} = {lo} to {hi} step {c1} iter_args({}) -> ({}) {{",
            args.join(", "),
            tys.join(", ")
        ));
        let next = f(self, &k, &accs)?;
        self.line(&format!("scf.yield {} : {}", next.join(", "), tys.join(", ")));
        self.line("}");
        Ok(if init.len() > 1 {
            (0..init.len()).map(|i| format!("{r}#{i}")).collect()
        } else {
            vec![r]
        })
    }

    /// `fold` from 0 to `n`.
    pub(crate) fn fold_n(
        &mut self,
        n: usize,
        init: &[String],
        tys: &[&str],
        f: &mut FoldBody<'_, 'g>,
    ) -> R<Vec<String>> {
        let lo = self.idx(0);
        let hi = self.idx(n);
        self.fold(&lo, &hi, init, tys, f)
    }

    /// A binary arithmetic operation `op` (`arith.addf`, ...) on type `ty`.
    pub(crate) fn op2(&mut self, op: &str, a: &str, b: &str, ty: &str) -> String {
        self.let_(&format!("{op} {a}, {b} : {ty}"))
    }

    /// A unary operation (`math.exp`, `arith.negf`, ...).
    pub(crate) fn op1(&mut self, op: &str, a: &str, ty: &str) -> String {
        self.let_(&format!("{op} {a} : {ty}"))
    }

    /// `arith.cmpf` with predicate `pred`.
    pub(crate) fn cmpf(&mut self, pred: &str, a: &str, b: &str, ty: &str) -> String {
        self.let_(&format!("arith.cmpf {pred}, {a}, {b} : {ty}"))
    }

    /// `arith.cmpi` with predicate `pred`.
    pub(crate) fn cmpi(&mut self, pred: &str, a: &str, b: &str, ty: &str) -> String {
        self.let_(&format!("arith.cmpi {pred}, {a}, {b} : {ty}"))
    }

    /// `arith.select`.
    pub(crate) fn select(&mut self, c: &str, a: &str, b: &str, ty: &str) -> String {
        self.let_(&format!("arith.select {c}, {a}, {b} : {ty}"))
    }

    /// Index arithmetic (`arith.addi`, `arith.muli`, `arith.divui`, `arith.remui`, ...).
    pub(crate) fn iop(&mut self, op: &str, a: &str, b: &str) -> String {
        self.op2(op, a, b, "index")
    }

    /// `Σ idx[k] · stride[k]` for row-major `dims`.
    pub(crate) fn linearize(&mut self, idx: &[String], dims: &[usize]) -> String {
        let mut acc = self.idx(0);
        for (i, d) in idx.iter().zip(dims) {
            let dn = self.idx(*d);
            let m = self.iop("arith.muli", &acc, &dn);
            acc = self.iop("arith.addi", &m, i);
        }
        acc
    }

    /// The row-major indices of flat index `flat` in `dims`.
    pub(crate) fn delinearize(&mut self, flat: &str, dims: &[usize]) -> Vec<String> {
        let mut out = vec![String::new(); dims.len()];
        let mut rest = flat.to_string();
        for k in (0..dims.len()).rev() {
            let d = self.idx(dims[k].max(1));
            out[k] = self.iop("arith.remui", &rest, &d);
            rest = self.iop("arith.divui", &rest, &d);
        }
        out
    }

    /// An integer scalar of IR type `d` widened to `i64` as the interpreter holds it (unsigned
    /// types and bool zero-extended, the others sign-extended).
    pub(crate) fn widen(&mut self, x: &str, d: DType) -> String {
        match d {
            DType::I64 | DType::U64 => x.to_string(),
            DType::U8 | DType::Bool | DType::U16 | DType::U32 => {
                self.let_(&format!("arith.extui {x} : {} to i64", scalar(d)))
            }
            DType::F32 => x.to_string(),
            _ => self.let_(&format!("arith.extsi {x} : {} to i64", scalar(d))),
        }
    }

    /// An `i64` truncated to IR integer type `d` (two's-complement wrap, as the interpreter
    /// stores integers).
    pub(crate) fn narrow(&mut self, x: &str, d: DType) -> String {
        match d {
            DType::I64 | DType::U64 | DType::F32 => x.to_string(),
            _ => self.let_(&format!("arith.trunci {x} : i64 to {}", scalar(d))),
        }
    }

    /// An `i1` as a bool byte.
    pub(crate) fn bool_byte(&mut self, c: &str) -> String {
        self.let_(&format!("arith.extui {c} : i1 to i8"))
    }

    /// `x` of IR type `from` converted to `to` as the interpreter's Cast does: float to
    /// integer truncates toward zero through `i64` (NaN to 0, out of range saturating at
    /// `i64`'s ends, then wrapping to the width), to bool is `x != 0`, integer to integer
    /// wraps, integer to float rounds to nearest.
    pub(crate) fn convert(&mut self, x: &str, from: DType, to: DType) -> String {
        if from == to {
            return x.to_string();
        }
        if from.storage_float() || to.storage_float() || from == DType::U64 || to == DType::U64 {
            return self.convert_wide(x, from, to);
        }
        match (from, to) {
            (DType::F32, DType::Bool) => {
                let z = self.f32c(0.0);
                let c = self.cmpf("une", x, &z, "f32");
                self.bool_byte(&c)
            }
            (DType::F32, _) => {
                // Rust's `as i64`: NaN to 0, saturating at i64's ends (2^63 is the first f32
                // at or beyond i64::MAX), then the interpreter's wrap to the width.
                let lo = self.f32c(-9.223_372e18);
                let top = self.f32c(9.223_372e18);
                let hi = self.f32c(9.223_371_5e18);
                let z = self.f32c(0.0);
                let nan = self.cmpf("uno", x, x, "f32");
                let a = self.op2("arith.maximumf", x, &lo, "f32");
                let b = self.op2("arith.minimumf", &a, &hi, "f32");
                let s = self.select(&nan, &z, &b, "f32");
                let i = self.let_(&format!("arith.fptosi {s} : f32 to i64"));
                let over = self.cmpf("oge", x, &top, "f32");
                let max = self.i64c(i64::MAX);
                let i = self.select(&over, &max, &i, "i64");
                self.narrow(&i, to)
            }
            (_, DType::F32) => {
                let w = self.widen(x, from);
                self.let_(&format!("arith.sitofp {w} : i64 to f32"))
            }
            (_, DType::Bool) => {
                let z = self.int(from, 0);
                let c = self.cmpi("ne", x, &z, scalar(from));
                self.bool_byte(&c)
            }
            _ => {
                let w = self.widen(x, from);
                self.narrow(&w, to)
            }
        }
    }

    /// `f64` value `x` rounded once to float16 or bfloat16 as `DType::float_to_bits`: to f32
    /// rounding to odd, then to nearest even; bfloat16's second step in integer arithmetic
    /// (the top half of the f32 bits, rounded; NaN made quiet), float16's by `arith.truncf`.
    fn narrow_float(&mut self, x: &str, to: DType) -> String {
        let r = self.let_(&format!("arith.truncf {x} : f64 to f32"));
        let back = self.let_(&format!("arith.extf {r} : f32 to f64"));
        let exact = self.cmpf("oeq", &back, x, "f64");
        let nan = self.cmpf("uno", x, x, "f64");
        let keep = self.op2("arith.ori", &exact, &nan, "i1");
        let ab = self.op1("math.absf", &back, "f64");
        let ax = self.op1("math.absf", x, "f64");
        let above = self.cmpf("ogt", &ab, &ax, "f64");
        let bits = self.let_(&format!("arith.bitcast {r} : f32 to i32"));
        let one = self.constant("1 : i32");
        let zero = self.constant("0 : i32");
        let dec = self.select(&above, &one, &zero, "i32");
        let t = self.op2("arith.subi", &bits, &dec, "i32");
        let t = self.op2("arith.ori", &t, &one, "i32");
        let odd = self.select(&keep, &bits, &t, "i32");
        if to == DType::F16 {
            let f = self.let_(&format!("arith.bitcast {odd} : i32 to f32"));
            return self.let_(&format!("arith.truncf {f} : f32 to f16"));
        }
        // bfloat16: (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16; NaN: (bits >> 16) | 0x40.
        let sixteen = self.constant("16 : i32");
        let hi = self.op2("arith.shrui", &odd, &sixteen, "i32");
        let lsb = self.op2("arith.andi", &hi, &one, "i32");
        let bias = self.constant("32767 : i32");
        let r = self.op2("arith.addi", &odd, &bias, "i32");
        let r = self.op2("arith.addi", &r, &lsb, "i32");
        let r = self.op2("arith.shrui", &r, &sixteen, "i32");
        let q = self.constant("64 : i32");
        let qn = self.op2("arith.ori", &hi, &q, "i32");
        let f = self.let_(&format!("arith.bitcast {odd} : i32 to f32"));
        let isnan = self.cmpf("uno", &f, &f, "f32");
        let r = self.select(&isnan, &qn, &r, "i32");
        let r = self.let_(&format!("arith.trunci {r} : i32 to i16"));
        self.let_(&format!("arith.bitcast {r} : i16 to bf16"))
    }

    /// [`HostBuilder::convert`] where a storage float or uint64 is involved: floats go through
    /// their exact `f64` value and round once into the target; integers through `i64`
    /// (uint64 unsigned); float to integer truncates with Rust's saturating `as` (to `i64`,
    /// then wrapping to the width; to uint64 at its own ends), as the interpreter's Cast.
    fn convert_wide(&mut self, x: &str, from: DType, to: DType) -> String {
        let (fs, ts) = (scalar(from), scalar(to));
        if from.is_float() {
            let wide = if from == DType::F64 {
                x.to_string()
            } else {
                self.let_(&format!("arith.extf {x} : {fs} to f64"))
            };
            if to.is_float() {
                return match to {
                    DType::F64 => wide,
                    // f16/bf16 to f32 is exact either way; the direct form needs no libcall.
                    DType::F32 if from == DType::F64 => {
                        self.let_(&format!("arith.truncf {x} : f64 to f32"))
                    }
                    DType::F32 => self.let_(&format!("arith.extf {x} : {fs} to f32")),
                    _ => self.narrow_float(&wide, to),
                };
            }
            if to == DType::Bool {
                let z = self.f64c(0.0);
                let c = self.cmpf("une", &wide, &z, "f64");
                return self.bool_byte(&c);
            }
            let nan = self.cmpf("uno", &wide, &wide, "f64");
            let z = self.i64c(0);
            // Saturate at the target's ends: clamp below the first f64 at or beyond the top
            // (2^64 or 2^63), convert, then the top itself and beyond give the largest value.
            let (lo, hi, top, max, op) = if to == DType::U64 {
                (0.0, 18_446_744_073_709_549_568.0, 18_446_744_073_709_551_616.0, -1, "fptoui")
            } else {
                let lo = -9_223_372_036_854_775_808.0;
                (lo, 9_223_372_036_854_774_784.0, -lo, i64::MAX, "fptosi")
            };
            let (lo, hi, top) = (self.f64c(lo), self.f64c(hi), self.f64c(top));
            let a = self.op2("arith.maximumf", &wide, &lo, "f64");
            let b = self.op2("arith.minimumf", &a, &hi, "f64");
            let i = self.let_(&format!("arith.{op} {b} : f64 to i64"));
            let over = self.cmpf("oge", &wide, &top, "f64");
            let max = self.i64c(max);
            let i = self.select(&over, &max, &i, "i64");
            let i = self.select(&nan, &z, &i, "i64");
            return self.narrow(&i, to);
        }
        // From an integer.
        if to == DType::Bool {
            let z = self.int(from, 0);
            let c = self.cmpi("ne", x, &z, fs);
            return self.bool_byte(&c);
        }
        let w = self.widen(x, from);
        let to_float = if from == DType::U64 { "arith.uitofp" } else { "arith.sitofp" };
        match to {
            DType::F32 | DType::F64 => self.let_(&format!("{to_float} {w} : i64 to {ts}")),
            DType::F16 | DType::BF16 => {
                let f = self.let_(&format!("{to_float} {w} : i64 to f64"));
                self.narrow_float(&f, to)
            }
            _ => self.narrow(&w, to),
        }
    }

    /// `x` (an `i64` holding an `i32`) requantised by a record as `accelc_isa::requant`
    /// defines it (TFLite's arithmetic): shifted left by `max(shift, 0)` with `i32`
    /// saturation, multiplied by the Q31 `multiplier` with rounding (saturating rounding
    /// doubling high multiply), divided by `2^max(-shift, 0)` rounding half away from zero,
    /// plus `zero_point`, clamped to `lo..=hi`. Every operand is an `i64` SSA value.
    pub(crate) fn requant(
        &mut self,
        x: &str,
        multiplier: &str,
        shift: &str,
        zero_point: &str,
        lo: &str,
        hi: &str,
    ) -> String {
        let z = self.i64c(0);
        let one = self.i64c(1);
        let (imin, imax) = (self.i64c(i64::from(i32::MIN)), self.i64c(i64::from(i32::MAX)));
        let left = self.op2("arith.maxsi", shift, &z, "i64");
        let nshift = self.op2("arith.subi", &z, shift, "i64");
        let right = self.op2("arith.maxsi", &nshift, &z, "i64");
        let a = self.op2("arith.shli", x, &left, "i64");
        let a = self.op2("arith.maxsi", &a, &imin, "i64");
        let a = self.op2("arith.minsi", &a, &imax, "i64");
        // srdhm(a, m)
        let ab = self.op2("arith.muli", &a, multiplier, "i64");
        let pos = self.cmpi("sge", &ab, &z, "i64");
        let (p30, n30) = (self.i64c(1 << 30), self.i64c(1 - (1 << 30)));
        let nudge = self.select(&pos, &p30, &n30, "i64");
        let s = self.op2("arith.addi", &ab, &nudge, "i64");
        let d31 = self.i64c(1 << 31);
        let q = self.op2("arith.divsi", &s, &d31, "i64");
        let amin = self.cmpi("eq", &a, &imin, "i64");
        let mmin = self.cmpi("eq", multiplier, &imin, "i64");
        let both = self.op2("arith.andi", &amin, &mmin, "i1");
        let q = self.select(&both, &imax, &q, "i64");
        // rounding_divide_by_pot(q, right)
        let pw = self.op2("arith.shli", &one, &right, "i64");
        let mask = self.op2("arith.subi", &pw, &one, "i64");
        let rem = self.op2("arith.andi", &q, &mask, "i64");
        let half = self.op2("arith.shrsi", &mask, &one, "i64");
        let neg = self.cmpi("slt", &q, &z, "i64");
        let negi = self.let_(&format!("arith.extui {neg} : i1 to i64"));
        let thr = self.op2("arith.addi", &half, &negi, "i64");
        let sh = self.op2("arith.shrsi", &q, &right, "i64");
        let up = self.cmpi("sgt", &rem, &thr, "i64");
        let upi = self.let_(&format!("arith.extui {up} : i1 to i64"));
        let r = self.op2("arith.addi", &sh, &upi, "i64");
        let r = self.op2("arith.addi", &r, zero_point, "i64");
        let r = self.op2("arith.maxsi", &r, lo, "i64");
        self.op2("arith.minsi", &r, hi, "i64")
    }

    /// Records error 5 (an `i32` accumulator overflows) when `x` (an `i64`) leaves `i32`.
    pub(crate) fn check_i32(&mut self, x: &str) {
        let (imin, imax) = (self.i64c(i64::from(i32::MIN)), self.i64c(i64::from(i32::MAX)));
        let lo = self.cmpi("slt", x, &imin, "i64");
        let hi = self.cmpi("sgt", x, &imax, "i64");
        let bad = self.op2("arith.ori", &lo, &hi, "i1");
        self.fail_if(&bad, 5);
    }

    /// Records run-time error `code` for the current node when `cond` (an `i1`) holds.
    pub(crate) fn fail_if(&mut self, cond: &str, code: i64) {
        let c = self.i64c(code);
        let node = self.i64c(self.node as i64);
        let (c0, c1) = (self.idx(0), self.idx(1));
        let s = self.status.clone();
        self.line(&format!("scf.if {cond} {{"));
        self.line(&format!("memref.store {c}, {s}[{c0}] : memref<2xi64>"));
        self.line(&format!("memref.store {node}, {s}[{c1}] : memref<2xi64>"));
        self.line("}");
    }

    /// An index `j` of IR integer type `dt`, normalised into `0..dim` as the reference does
    /// (a negative one counts from the end), as an `index`; out of range sets the status
    /// (code 4) and reads index 0 instead, so no access leaves the tensor.
    pub(crate) fn checked_index(&mut self, j: &str, dt: DType, dim: usize) -> String {
        let j = self.widen(j, dt);
        let d = self.i64c(dim as i64);
        let z = self.i64c(0);
        let neg = self.cmpi("slt", &j, &z, "i64");
        let jd = self.op2("arith.addi", &j, &d, "i64");
        let j = self.select(&neg, &jd, &j, "i64");
        let lo = self.cmpi("slt", &j, &z, "i64");
        let hi = self.cmpi("sge", &j, &d, "i64");
        let bad = self.op2("arith.ori", &lo, &hi, "i1");
        self.fail_if(&bad, 4);
        let j = self.select(&bad, &z, &j, "i64");
        self.let_(&format!("arith.index_cast {j} : i64 to index"))
    }

    /// Every element of output `out` from `f(indices)` (a loop nest over its shape).
    pub(crate) fn map_out(
        &mut self,
        out: ValueId,
        f: &mut dyn FnMut(&mut HostBuilder<'g>, &[String]) -> R<String>,
    ) -> R<()> {
        let t = self.ty(out)?;
        self.out(out)?;
        self.nest(&t.shape, &mut |b, idx| {
            let x = f(b, idx)?;
            b.store(&x, out, idx)
        })
    }
}

/// One host function: its symbol, the values of its arguments (inputs, then outputs) and
/// their types.
#[derive(Clone, Debug)]
pub struct HostFunction {
    /// The symbol.
    pub name: String,
    /// Input values, in argument order.
    pub inputs: Vec<ValueId>,
    /// Output values, in argument order (after the inputs; the status follows them).
    pub outputs: Vec<ValueId>,
}

/// Writes functions for `regions` (each `(name, nodes, inputs, outputs)`, nodes in
/// topological order) of `g` into one module. Every node goes through its family's `host`
/// facet.
///
/// Errors: the first node without a host lowering, naming it and why.
pub fn module(g: &Graph, regions: &[HostRegion<'_>]) -> R<String> {
    let mut m = ModuleText::default();
    let mut funcs = String::new();
    for (name, nodes, inputs, outputs) in regions {
        let mut b = HostBuilder::new(g, &mut m);
        let mut args = Vec::new();
        for (k, v) in inputs.iter().chain(outputs.iter()).enumerate() {
            let a = format!("%arg{k}");
            let t = b.ty(*v)?;
            let at = TensorType { dtype: t.dtype, shape: arg_dims(&t.shape) };
            args.push(format!("{a}: {}", memref(&at)));
            // An output that is also an input (a pass-through) keeps its input argument; a
            // constant output is copied from its global below.
            if g.value(*v).constant.is_none() && !b.mems.contains_key(v) {
                if at.shape == t.shape {
                    b.mems.insert(*v, a);
                } else {
                    // An empty tensor: nothing is read or written; the body addresses an
                    // empty allocation of its real type.
                    b.out(*v)?;
                }
            }
        }
        args.push("%status: memref<2xi64>".into());
        for &i in nodes.iter() {
            let n = &g.nodes[i];
            b.node = i;
            (crate::ops::def(&n.op).host)(&mut b, n).map_err(|mut e| {
                if e.node.is_none() {
                    e.node = Some(n.name.clone());
                }
                e
            })?;
        }
        // Outputs that the region passes through from its inputs are copied.
        for (k, v) in outputs.iter().enumerate() {
            let arg = format!("%arg{}", inputs.len() + k);
            let cur = b.mem(*v)?;
            let t = b.ty(*v)?;
            if cur != arg && t.shape.iter().product::<usize>() > 0 {
                let t = b.ty(*v)?;
                b.line(&format!("memref.copy {cur}, {arg} : {} to {}", memref(&t), memref(&t)));
            }
        }
        let _ = writeln!(funcs, "func.func @{name}({}) {{", args.join(", "));
        funcs.push_str(&b.prologue);
        funcs.push_str(&b.body);
        funcs.push_str(&b.epilogue);
        funcs.push_str("return\n}\n");
    }
    // In the globals' own buffer: they hold every constant as hex (twice a large model's
    // weights), and formatting them into a new string held them twice more.
    let head = "module {\n";
    let mut text = std::mem::take(&mut m.globals);
    text.reserve_exact(head.len() + funcs.len() + 2);
    text.insert_str(0, head);
    text.push_str(&funcs);
    text.push_str("}\n");
    Ok(text)
}

/// The host facet of an op family without host lowerings yet: the node is refused, naming
/// the op.
pub(crate) fn not_yet(_b: &mut HostBuilder<'_>, n: &Node) -> R<()> {
    Err(LowerError::at(&n.name, format!("{} has no host lowering yet", n.op_type)))
}

impl<'g> HostBuilder<'g> {
    /// A private constant global of `i64` values; returns its memref (in the prologue).
    pub(crate) fn table(&mut self, values: &[i64]) -> String {
        self.module.count += 1;
        let name = format!("@table_{}", self.module.count);
        let ty = format!("memref<{}xi64>", values.len());
        let mut hex = String::with_capacity(values.len() * 16);
        for v in values {
            for byte in v.to_le_bytes() {
                let _ = write!(hex, "{byte:02X}");
            }
        }
        let _ = writeln!(
            self.module.globals,
            "memref.global \"private\" constant {name} : {ty} = dense<\"0x{hex}\"> {{alignment = 16 : i64}}"
        );
        let r = self.fresh();
        let _ = writeln!(self.prologue, "{r} = memref.get_global {name} : {ty}");
        r
    }

    /// Output `out` as a selection of `input`'s elements given per axis at compile time:
    /// element `[i0, i1, ...]` copies `input[tables[0][i0], tables[1][i1], ...]`, or is `fill`
    /// where an entry is negative. The tables hold one entry per output index of their axis.
    pub(crate) fn gather_axes(
        &mut self,
        out: ValueId,
        input: ValueId,
        tables: &[Vec<i64>],
        fill: Option<&str>,
    ) -> R<()> {
        let t = self.ty(out)?;
        let it = self.ty(input)?;
        if tables.len() != t.shape.len() || tables.iter().zip(&t.shape).any(|(v, d)| v.len() != *d)
        {
            return Err(LowerError::msg("internal: a selection table of the wrong size"));
        }
        self.out(out)?;
        if t.shape.contains(&0) {
            return Ok(());
        }
        let empty_input = it.shape.contains(&0);
        let tabs: Vec<(String, usize)> = tables.iter().map(|v| (self.table(v), v.len())).collect();
        let fill = fill.map(str::to_string);
        self.map_out(out, &mut |b, idx| {
            let z = b.i64c(0);
            let mut neg = b.let_("arith.constant false");
            let mut src = Vec::with_capacity(idx.len());
            for ((tab, len), i) in tabs.iter().zip(idx) {
                let j = b.let_(&format!("memref.load {tab}[{i}] : memref<{len}xi64>"));
                let lt = b.cmpi("slt", &j, &z, "i64");
                neg = b.op2("arith.ori", &neg, &lt, "i1");
                let jj = b.op2("arith.maxsi", &j, &z, "i64");
                src.push(b.let_(&format!("arith.index_cast {jj} : i64 to index")));
            }
            match &fill {
                Some(f) if empty_input => Ok(f.clone()),
                Some(f) => {
                    let x = b.load(input, &src)?;
                    Ok(b.select(&neg, f, &x, scalar(it.dtype)))
                }
                None => b.load(input, &src),
            }
        })
    }
}
