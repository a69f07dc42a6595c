//! The bodies of the fuzz targets: `fuzz/` runs each under libFuzzer (coverage-guided), and the
//! test `fuzz_corpus` runs every input of the minimised corpora and every crash ever found
//! through the same function, without the fuzzer, in CI. A target returns normally on any input
//! it handles correctly (an error for bad input is correct); it panics on a bug: a panic inside
//! accelc, an internal error, two tools disagreeing, or the device disagreeing with the
//! reference interpreter.

use std::fmt::Write as _;

use accelc::{Error, HostTensor, Options, Session, Source};
use accelc_compiler::ir::DType;
use accelc_isa::blob::Blob;
use accelc_isa::inst::{Inst, OPS, RouteInfo};
use accelc_isa::program::{DmaDesc, Program, Shape};
use accelc_isa::verify::{self, Limits};
use accelc_isa::{DeviceConfig, FieldKind, Sem, Sync};
use accelc_runtime::sim::{RunOptions, Segment, Segments, Simulator};
use arbitrary::Unstructured;

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/*.rs` file and corpus directory.
pub const TARGETS: &[(&str, Body)] = &[
    ("blob", blob),
    ("validator", validator),
    ("asm", asm),
    ("onnx_binary", onnx_binary),
    ("onnx_text", onnx_text),
    ("pipeline", pipeline),
];

/// The blob reader, twice: on the bytes as given (the checksums and the content hash reject
/// almost every mutation, which tests those checks), and on the bytes with every checksum and
/// the hash recomputed (see [`reseal`]), so that mutations reach the section parsers. Any
/// bytes read or fail with an error; a blob that reads writes back to bytes that read as the
/// same blob, and the validator takes its program without panicking.
pub fn blob(data: &[u8]) {
    read_blob(data);
    read_blob(&reseal(data));
}

/// `bytes` with the container's integrity fields made to match its contents, as a writer
/// would leave them: the file size, each section entry's CRC-32C (entries whose range lies in
/// the file), the SHA-256 of everything after the header, then the header's CRC-32C (layout:
/// `book/src/blob.md`).
pub fn reseal(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut b = bytes.to_vec();
    if b.len() < 128 {
        return b;
    }
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let len = b.len() as u64;
    b[16..24].copy_from_slice(&len.to_le_bytes());
    let count = u32::from_le_bytes([b[28], b[29], b[30], b[31]]) as usize;
    let table = le64(&b, 32);
    for i in 0..count.min(64) {
        let Some(at) = table
            .checked_add(32 * i as u64)
            .filter(|a| a.checked_add(32).is_some_and(|e| e <= len))
        else {
            break;
        };
        let at = at as usize;
        let (off, size) = (le64(&b, at + 8), le64(&b, at + 16));
        if let Some(end) = off.checked_add(size).filter(|e| *e <= len) {
            let crc = accelc_isa::blob::crc32c(&b[off as usize..end as usize]);
            b[at + 24..at + 28].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let hash = sha2::Sha256::digest(&b[128..]);
    b[64..96].copy_from_slice(&hash);
    b[124..128].fill(0);
    let crc = accelc_isa::blob::crc32c(&b[..128]);
    b[124..128].copy_from_slice(&crc.to_le_bytes());
    b
}

fn read_blob(data: &[u8]) {
    let Ok(b) = Blob::read(data) else { return };
    let bytes = b.to_bytes().unwrap_or_else(|e| panic!("a blob that reads does not write: {e}"));
    let again = Blob::read(&bytes).unwrap_or_else(|e| panic!("a written blob does not read: {e}"));
    assert_eq!(again, b, "a blob changes through write and read");
    if let Some(cfg) = DeviceConfig::by_name(&b.target.config_name) {
        let _ = verify::verify_encoded(&b.program, &cfg, &Limits::default());
    }
}

/// A structured random program for the `tiny` device: instructions of any engine with fields
/// in small ranges (so that operands often fit), synchronisation slots, DMA descriptors and
/// vector shapes.
fn random_program(u: &mut Unstructured<'_>) -> arbitrary::Result<Program> {
    let n = u.int_in_range(1..=8)?;
    let mut insts = Vec::new();
    for _ in 0..n {
        let info = u.choose(OPS)?;
        let mut word = u128::from(info.opcode);
        for f in info.fields {
            let r = u64::from(u.arbitrary::<u32>()?);
            let raw = match f.kind {
                FieldKind::Enum(names) => r % names.len() as u64,
                FieldKind::Local => (r & (1 << 23)) | (r % 4096),
                FieldKind::Sem | FieldKind::Seg => r % 4,
                FieldKind::DmaDesc | FieldKind::Shape => r % 3,
                FieldKind::Bool => r % 2,
                FieldKind::Uint => r % 9,
            };
            let width = f.hi - f.lo + 1;
            let raw = if width >= 64 { raw } else { raw & ((1u64 << width) - 1) };
            word |= u128::from(raw) << f.lo;
        }
        let Ok(mut inst) = Inst::from_word(word) else { continue };
        inst.sync = if info.route != RouteInfo::Front && u.ratio(1, 4)? {
            let sem = |u: &mut Unstructured<'_>| -> arbitrary::Result<Option<Sem>> {
                Ok(if u.arbitrary()? { Sem::new(u.int_in_range(0..=3)?) } else { None })
            };
            Sync { wait: [sem(u)?, None], signal: [sem(u)?, None] }
        } else {
            Sync::NONE
        };
        insts.push(inst);
    }
    insts.push(Inst::new(accelc_isa::inst::End { code: 0 }));
    let mut dma = Vec::new();
    for _ in 0..3 {
        dma.push(DmaDesc {
            x_bytes: u.int_in_range(1..=256)?,
            y_count: u.int_in_range(1..=3)?,
            z_count: u.int_in_range(1..=2)?,
            y_stride: u.int_in_range(0..=511)?,
            z_stride: u.int_in_range(0..=1023)?,
            near_y_pitch: u.int_in_range(0..=511)?,
            near_z_pitch: u.int_in_range(0..=1023)?,
        });
    }
    let mut shapes = Vec::new();
    for _ in 0..3 {
        let mut s = || u.int_in_range(0..=255u32);
        let (dst_row, src0_row, src1_row) = (s()?, s()?, s()?);
        let (dst_plane, src0_plane, src1_plane) = (s()?, s()?, s()?);
        shapes.push(Shape {
            cols: u.int_in_range(1..=16)?,
            rows: u.int_in_range(1..=4)?,
            planes: u.int_in_range(1..=2)?,
            flags: u.int_in_range(0..=3)?,
            dst_row,
            src0_row,
            src1_row,
            dst_plane,
            src0_plane,
            src1_plane,
        });
    }
    let mut sem_init = [0u8; 16];
    for s in sem_init.iter_mut().take(4) {
        *s = u.int_in_range(0..=2)?;
    }
    Ok(Program { insts, dma, shapes, sem_init })
}

/// The validator against the simulator: a program the validator accepts runs, with buffers
/// exactly as large as the validator's extents (zero-filled), to its end within the
/// validator's cycle bound, without a fault other than a data fault (a requantisation record
/// the program wrote itself with an out-of-range shift: data the validator cannot see).
pub fn validator(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(program) = random_program(&mut u) else { return };
    let cfg = DeviceConfig::tiny();
    let Ok(report) = verify::verify(&program, &cfg, &Limits::default()) else { return };
    let total: u64 = report.segments.iter().map(|s| s.required_size()).sum();
    assert!(total <= 1 << 26, "accepted segments of {total} bytes from a tiny program");
    let run = run_within_extents(&program, &report, &cfg);
    let listing = || accelc_isa::disasm::disassemble(&program, Default::default());
    match run {
        Ok(stats) => assert!(
            stats.cycles <= report.cycle_bound,
            "ran {} cycles past the bound {}:\n{}",
            stats.cycles,
            report.cycle_bound,
            listing()
        ),
        // The one run-time check the ISA leaves to the data: a requantisation record the
        // program itself wrote may hold an out-of-range shift (isa/numerics.md).
        Err(f) if f.kind == accelc_runtime::sim::FaultKind::Data => {}
        Err(f) => panic!("the validator accepted a program that faults: {f}\n{}", listing()),
    }
}

/// Runs a validated `program` as the validator's report sizes it: every used segment a
/// zero-filled, writable buffer exactly as large as its extent, the cycle bound as budget.
pub fn run_within_extents(
    program: &Program,
    report: &verify::Report,
    cfg: &DeviceConfig,
) -> Result<accelc_runtime::sim::RunStats, accelc_runtime::sim::Fault> {
    let mut bufs: Vec<Option<Vec<u8>>> = report
        .segments
        .iter()
        .map(|s| s.used().then(|| vec![0u8; s.required_size() as usize]))
        .collect();
    let mut segs: Segments<'_> = Default::default();
    for (slot, b) in segs.iter_mut().zip(bufs.iter_mut()) {
        if let Some(data) = b {
            *slot = Some(Segment { data, writable: true });
        }
    }
    let opts = RunOptions {
        timing: true,
        trace: false,
        max_cycles: Some(report.cycle_bound),
        deadline: None,
    };
    Simulator::new(cfg.clone()).run(program, &mut segs, opts)
}

/// The assembler: any text assembles or gives diagnostics that render in bounded size; an
/// assembled program encodes and decodes to itself, and its disassembly assembles back to it.
pub fn asm(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let program = match accelc_isa::asm::assemble(text) {
        Ok(p) => p,
        Err(diags) => {
            assert!(!diags.is_empty(), "assembly failed without a diagnostic");
            let shown = accelc_isa::asm::render(&diags, text, "fuzz.s");
            assert!(shown.len() < 200_000, "{} bytes of diagnostics", shown.len());
            return;
        }
    };
    if let Ok(enc) = program.encode() {
        let back = Program::decode(&enc).unwrap_or_else(|e| panic!("encoded, not decoded: {e}"));
        assert_eq!(back, program, "encode then decode changes the program");
    }
    let listing = accelc_isa::disasm::disassemble(&program, Default::default());
    let again = accelc_isa::asm::assemble(&listing)
        .unwrap_or_else(|d| panic!("disassembly does not assemble: {d:?}\n{listing}"));
    assert_eq!(again, program, "disassembly does not give back the program:\n{listing}");
}

/// Elements of every value of a frontend graph, when all are typed.
fn total_elements(g: &accelc::Graph) -> Option<u64> {
    g.values.iter().try_fold(0u64, |acc, v| {
        let t = v.ty.as_ref()?;
        acc.checked_add(t.shape.iter().try_fold(1u64, |a, d| a.checked_mul(*d as u64))?)
    })
}

/// A model through the frontend and the compiler: errors are fine, internal errors are bugs;
/// a small graph the frontend accepts (float inputs, every value typed) is also accepted by
/// the reference interpreter on random inputs, so the frontend's validity rules are no weaker
/// than the reference's.
fn frontend(src: Source<'_>) {
    let opts = Options::default();
    let g = match accelc::load_graph(src, &opts, &mut ()) {
        Ok(g) => g,
        Err(Error::Internal(m)) => panic!("internal error in the frontend: {m}"),
        Err(_) => return,
    };
    if let Err(Error::Internal(m)) = accelc::compile(src, &opts, &mut ()) {
        panic!("internal error in the compiler: {m}");
    }
    let small = total_elements(&g).is_some_and(|n| n <= 1 << 16);
    let specs: Option<Vec<(DType, Vec<usize>)>> = g
        .inputs
        .iter()
        .map(|i| g.value(*i).ty.as_ref().map(|t| (t.dtype, t.shape.clone())))
        .collect();
    let Some(specs) = specs else { return };
    if !small || specs.iter().any(|(d, _)| *d != DType::F32) {
        return;
    }
    let ins = HostTensor::random(&specs, 1);
    if let Err(e) = accelc::reference(&g, &ins) {
        panic!("the frontend accepts a graph the reference refuses: {e}");
    }
}

/// ONNX binary import (protobuf), then the frontend and compiler as [`frontend`] checks.
pub fn onnx_binary(data: &[u8]) {
    frontend(Source::Onnx(data));
}

/// The ONNX text syntax, then the frontend and compiler as [`frontend`] checks; a parse error
/// renders in bounded size.
pub fn onnx_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    frontend(Source::Text(text));
}

/// A random graph in the ONNX text syntax, of the operators the device runs, with random
/// geometry: built from the fuzzer's bytes by [`random_graph`].
struct Built {
    text: String,
    inputs: Vec<(DType, Vec<usize>)>,
}

/// Builds a random model: one float input (an image `[N,C,H,W]` or a matrix), then up to six
/// operators chosen and shaped by the bytes, each valid for its input's shape.
fn random_graph(u: &mut Unstructured<'_>) -> arbitrary::Result<Built> {
    let image = u.arbitrary::<bool>()?;
    let shape: Vec<usize> = if image {
        vec![u.int_in_range(1..=2)?, u.int_in_range(1..=8)?, u.int_in_range(1..=10)?, {
            u.int_in_range(1..=10)?
        }]
    } else {
        vec![u.int_in_range(1..=12)?, u.int_in_range(1..=40)?]
    };
    let mut inits: Vec<String> = Vec::new();
    let mut nodes: Vec<String> = Vec::new();
    let mut vals: Vec<(String, Vec<usize>)> = vec![("x".into(), shape.clone())];
    let mut constant = |u: &mut Unstructured<'_>, dims: &[usize], positive: bool| {
        let n: usize = dims.iter().product();
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let k: i8 = u.int_in_range(-8..=8)?;
            let k =
                if positive { f32::from(k.unsigned_abs()) / 8.0 + 0.5 } else { f32::from(k) / 8.0 };
            v.push(format!("{k:?}"));
        }
        let name = format!("c{}", inits.len());
        let dims_s: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        inits.push(format!("float[{}] {name} = {{{}}}", dims_s.join(","), v.join(",")));
        Ok::<String, arbitrary::Error>(name)
    };
    let ops = u.int_in_range(1..=6)?;
    for _ in 0..ops {
        let (cur, s) = vals.last().cloned().unwrap_or_default();
        let out = format!("v{}", vals.len());
        let rank = s.len();
        let pick: u8 = u.int_in_range(0..=13)?;
        let (node, shape) = match pick {
            0 => {
                let f = u.choose(&["Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Erf"])?;
                (format!("{out} = {f} ({cur})"), s.clone())
            }
            1 => {
                let a = f32::from(u.int_in_range(1..=9u8)?) / 10.0;
                (format!("{out} = LeakyRelu <alpha: float = {a:?}> ({cur})"), s.clone())
            }
            2 => {
                // Another value of the same shape, else the value itself.
                let same: Vec<&(String, Vec<usize>)> = vals.iter().filter(|v| v.1 == s).collect();
                let other = u.choose(&same)?.0.clone();
                let f = u.choose(&["Add", "Sub", "Mul", "Max", "Min"])?;
                (format!("{out} = {f} ({cur}, {other})"), s.clone())
            }
            3 => {
                // A per-channel (image) or per-column (matrix) constant, broadcast.
                let dims: Vec<usize> =
                    if rank == 4 { vec![1, s[1], 1, 1] } else { vec![s[rank - 1]] };
                let c = constant(u, &dims, false)?;
                let f = u.choose(&["Add", "Mul", "Sub"])?;
                (format!("{out} = {f} ({cur}, {c})"), s.clone())
            }
            4 => {
                let n = u.int_in_range(1..=40)?;
                let w = constant(u, &[s[rank - 1], n], false)?;
                let mut t = s.clone();
                t[rank - 1] = n;
                (format!("{out} = MatMul ({cur}, {w})"), t)
            }
            5 if rank == 2 => {
                let n = u.int_in_range(1..=40)?;
                let w = constant(u, &[n, s[1]], false)?;
                let b = constant(u, &[n], false)?;
                (format!("{out} = Gemm <transB: int = 1> ({cur}, {w}, {b})"), vec![s[0], n])
            }
            6 if rank == 4 => {
                let (c, h, w) = (s[1], s[2], s[3]);
                let groups: Vec<usize> = (1..=c).filter(|g| c % g == 0).collect();
                let g = *u.choose(&groups)?;
                let co = g * u.int_in_range(1..=3)?;
                let k = u.int_in_range(1..=3)?;
                let (st, d) = (u.int_in_range(1..=2)?, u.int_in_range(1..=2)?);
                let p = u.int_in_range(0..=k - 1)?;
                let span = d * (k - 1) + 1;
                if h + 2 * p < span || w + 2 * p < span {
                    continue;
                }
                let wt = constant(u, &[co, c / g, k, k], false)?;
                let bias = if u.arbitrary()? {
                    format!(", {}", constant(u, &[co], false)?)
                } else {
                    String::new()
                };
                let oh = (h + 2 * p - span) / st + 1;
                let ow = (w + 2 * p - span) / st + 1;
                (
                    format!(
                        "{out} = Conv <group: int = {g}, strides: ints = [{st},{st}], dilations: ints = [{d},{d}], pads: ints = [{p},{p},{p},{p}]> ({cur}, {wt}{bias})"
                    ),
                    vec![s[0], co, oh, ow],
                )
            }
            7 if rank == 4 => {
                let k = u.int_in_range(1..=3)?.min(s[2]).min(s[3]);
                let st = u.int_in_range(1..=2)?;
                let p = u.int_in_range(0..=k - 1)?;
                let f = u.choose(&["MaxPool", "AveragePool"])?;
                let oh = (s[2] + 2 * p - k) / st + 1;
                let ow = (s[3] + 2 * p - k) / st + 1;
                (
                    format!(
                        "{out} = {f} <kernel_shape: ints = [{k},{k}], strides: ints = [{st},{st}], pads: ints = [{p},{p},{p},{p}]> ({cur})"
                    ),
                    vec![s[0], s[1], oh, ow],
                )
            }
            8 if rank == 4 => {
                (format!("{out} = GlobalAveragePool ({cur})"), vec![s[0], s[1], 1, 1])
            }
            9 => (format!("{out} = Softmax <axis: int = -1> ({cur})"), s.clone()),
            10 => {
                let mut perm: Vec<usize> = (0..rank).collect();
                for i in (1..rank).rev() {
                    let j = u.int_in_range(0..=i)?;
                    perm.swap(i, j);
                }
                let p: Vec<String> = perm.iter().map(|p| p.to_string()).collect();
                let t = perm.iter().map(|&p| s[p]).collect();
                (format!("{out} = Transpose <perm: ints = [{}]> ({cur})", p.join(",")), t)
            }
            11 if rank > 2 => {
                let t = vec![s[0], s[1..].iter().product()];
                (format!("{out} = Flatten <axis: int = 1> ({cur})"), t)
            }
            12 => {
                let a = u.int_in_range(0..=rank - 1)?;
                let f = u.choose(&["ReduceMean", "ReduceMax"])?;
                let mut t = s.clone();
                t[a] = 1;
                (format!("{out} = {f} <axes: ints = [{a}], keepdims: int = 1> ({cur})"), t)
            }
            13 if rank == 4 => {
                let c = s[1];
                let (sc, b) = (constant(u, &[c], false)?, constant(u, &[c], false)?);
                let (m, v) = (constant(u, &[c], false)?, constant(u, &[c], true)?);
                (format!("{out} = BatchNormalization ({cur}, {sc}, {b}, {m}, {v})"), s.clone())
            }
            _ => continue,
        };
        nodes.push(node);
        vals.push((out, shape));
    }
    if nodes.is_empty() {
        nodes.push("v1 = Relu (x)".into());
        vals.push(("v1".into(), shape.clone()));
    }
    let last = vals.last().map(|v| v.0.clone()).unwrap_or_default();
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut text = String::from("<ir_version: 8, opset_import: [\"\" : 17]>\n");
    let _ = write!(text, "g (float[{}] x) => (float {last})", dims.join(","));
    if !inits.is_empty() {
        let _ = write!(text, "\n  <{}>", inits.join(",\n   "));
    }
    text.push_str("\n{\n");
    for n in &nodes {
        let _ = writeln!(text, "  {n}");
    }
    text.push_str("}\n");
    Ok(Built { text, inputs: vec![(DType::F32, shape)] })
}

/// The whole pipeline on a random graph: ONNX text, frontend, optimizer (`-O0` or `-O2`),
/// lowering for `default` or `tiny` (whose 8×8 array and 64 KiB scratchpad force tiling), the
/// driver and simulator; the outputs match the reference interpreter within the tolerance of
/// `accelc diff` (rtol 1e-3, atol 1e-5, plus 1e-5 of the tensor's largest magnitude).
pub fn pipeline(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(built) = random_graph(&mut u) else { return };
    let tiny = u.arbitrary::<bool>().unwrap_or(false);
    let o2 = u.arbitrary::<bool>().unwrap_or(true);
    let opts = Options {
        config: if tiny { DeviceConfig::tiny() } else { DeviceConfig::default_npu() },
        level: if o2 { accelc::Level::O2 } else { accelc::Level::O0 },
        ..Options::default()
    };
    let text = &built.text;
    let c = match accelc::compile(Source::Text(text), &opts, &mut ()) {
        Ok(c) => c,
        // The device cannot run every geometry (a limit of the target, said by name).
        Err(Error::Unsupported(_)) => return,
        Err(e) => panic!("a valid generated model fails to compile: {e}\n{text}"),
    };
    let ins = HostTensor::random(&built.inputs, 7);
    let want = accelc::reference(c.oracle(), &ins)
        .unwrap_or_else(|e| panic!("the reference refuses a generated model: {e}\n{text}"));
    let session = Session::new(c.blob().unwrap()).unwrap_or_else(|e| panic!("load: {e}\n{text}"));
    let got = session.run(&ins).unwrap_or_else(|e| panic!("run: {e}\n{text}")).outputs;
    for (g, w) in got.iter().zip(&want) {
        let (gv, wv) = (g.f32s().unwrap_or_default(), w.f32s().unwrap_or_default());
        assert_eq!(g.dims, w.dims, "output shape\n{text}");
        let largest = wv.iter().fold(0f32, |m, v| m.max(v.abs()));
        if let Some(m) = accelc::compare_scaled(&gv, &wv, accelc::SCALE_TOL * largest) {
            panic!(
                "device and reference differ at {} ({} vs {}) on `{}` at {:?}:\n{text}",
                m.index, m.got, m.want, opts.config.name, opts.level
            );
        }
    }
}
