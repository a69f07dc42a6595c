//! Lowering: from the graph IR to a command blob for the device.
//!
//! The passes, in order (listed once in [`PASSES`]):
//!
//! 1. **legalize**: graph to graph, rewriting what the kernels do not take as they are
//!    (transposed convolutions, 1-D windows) into plain nodes they do take;
//! 2. **select** ([`select`]): per node, whether it runs on the device and, if not, the failing
//!    constraint, answered by each op family's lowering facet (`crate::ops`);
//! 3. **schedule** ([`schedule`]): each node, or a fused group (Conv/Gemm/MatMul with bias,
//!    residual Add and activation), becomes one kernel step through the same facets; layouts
//!    are chosen (NHWC for tensors convolutions and pools touch, row-major otherwise, with
//!    conversions where they meet); data-movement ops become strided views, reshapes aliases;
//! 4. **plan-memory** ([`plan::plan_memory`]): constants are packed into the constant segment,
//!    inputs and outputs get their segments, and intermediate tensors get static offsets in one
//!    DRAM arena, reusing space by liveness;
//! 5. **emit** ([`kernels`]): each step becomes instructions, tiled to the scratchpad and
//!    accumulator of the target, double-buffered, synchronised with semaphores, and closed by
//!    a barrier; the program is validated and packed into a blob with I/O descriptors and
//!    debug ranges mapping instructions back to ONNX nodes.
//!
//! `compile` stops at the first node select refuses: the schedule is built by the same facets
//! and fails at that node with the same reason, so select's answers are not computed twice
//! (`--dump-ir` prints them).

mod consts;
pub use consts::ConstImage;
pub(crate) mod emit;
pub mod execplan;
pub mod host;
pub(crate) mod kernels;
mod legalize;
pub mod partition;
mod plan;
pub(crate) mod schedule;
pub mod select;
pub(crate) mod view;

use crate::Clipped;
use std::fmt;

use accelc_isa::blob::{Blob, DebugRange, Direction, IoTensor, SegmentDecl, SegmentRole};
use accelc_isa::verify::{Limits, Report, verify};
use accelc_isa::{DeviceConfig, Dtype, Program};

use crate::ir::{DType, Graph};

pub use schedule::LayerKind;
pub use select::{device_support, device_supports};

/// The lowering passes, in order.
pub const PASSES: &[&str] = &["legalize", "select", "schedule", "plan-memory", "emit"];

/// Why a graph could not be lowered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowerError {
    /// The ONNX node, when one is to blame.
    pub node: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl LowerError {
    pub(crate) fn msg(m: impl Into<String>) -> LowerError {
        LowerError { node: None, message: m.into() }
    }

    pub(crate) fn at(node: &str, m: impl Into<String>) -> LowerError {
        LowerError { node: Some(node.to_string()), message: m.into() }
    }
}

impl fmt::Display for LowerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(n) => write!(f, "node `{}`: {}", Clipped(n), Clipped(&self.message)),
            None => write!(f, "{}", Clipped(&self.message)),
        }
    }
}

impl std::error::Error for LowerError {}

/// Options of a compile.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// The target device.
    pub config: DeviceConfig,
    /// Make every intermediate tensor an extra output (for `accelc diff`).
    pub expose_all: bool,
}

impl Default for CompileOptions {
    fn default() -> CompileOptions {
        CompileOptions { config: DeviceConfig::default_npu(), expose_all: false }
    }
}

/// One kernel of the compiled program.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Display name: the ONNX nodes it implements, joined with `+`.
    pub name: String,
    /// What kind of kernel.
    pub kind: LayerKind,
    /// Instructions `start..end` (the last one is the kernel's barrier).
    pub start: u32,
    /// One past the last instruction.
    pub end: u32,
    /// Multiply-accumulates of useful work.
    pub macs: u64,
    /// The least DRAM traffic the layer needs: its inputs read once, its outputs written once.
    pub min_bytes: u64,
    /// The value the layer produces (for `diff`), if it produces a graph value.
    pub output: Option<String>,
    /// The element type the layer computes in (its MACs run at this type's peak rate).
    pub dtype: Dtype,
}

impl Layer {
    /// The roofline bound in cycles: the larger of compute at the peak rate of the layer's
    /// `dtype` and the minimum traffic at the DRAM bandwidth.
    pub fn roofline_cycles(&self, cfg: &DeviceConfig) -> u64 {
        let peak = cfg.peak_macs_per_sec(self.dtype).max(1) as f64 / cfg.clock_hz as f64;
        let compute = (self.macs as f64 / peak).ceil() as u64;
        compute.max(cfg.dram_cycles(self.min_bytes))
    }
}

/// A compiled model.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The program.
    pub program: Program,
    /// The validator's report on it.
    pub report: Report,
    /// The constant segment's contents (weights packed as they are written).
    pub consts: ConstImage,
    /// Segment declarations.
    pub segments: Vec<SegmentDecl>,
    /// Inputs and outputs.
    pub io: Vec<IoTensor>,
    /// Kernels, in program order.
    pub layers: Vec<Layer>,
    /// Bytes of the DRAM arena.
    pub arena_bytes: u64,
    /// Largest scratchpad use of any kernel.
    pub spad_peak: u32,
    /// Largest accumulator use of any kernel.
    pub acc_peak: u32,
    /// The target.
    pub config: DeviceConfig,
    /// Graph nodes lowered.
    pub nodes: usize,
}

impl Compiled {
    /// The blob, in memory.
    ///
    /// Errors: as [`Compiled::write_blob`].
    pub fn blob(&self) -> Result<Vec<u8>, LowerError> {
        let mut out = std::io::Cursor::new(Vec::new());
        self.write_blob(&mut out)?;
        Ok(out.into_inner())
    }

    /// Checks that the blob serialises (the program encodes; names, ranks and counts fit the
    /// format) without writing it: all [`Compiled::write_blob`] can refuse except the writer's
    /// own errors.
    ///
    /// Errors: as [`Compiled::write_blob`].
    pub fn check_blob(&self) -> Result<(), LowerError> {
        self.blob_header()?.check().map_err(|e| LowerError::msg(format!("blob: {e}")))
    }

    /// Writes the blob to `w` from its current position, packing each layer's weights as it
    /// goes ([`ConstImage`]): the blob is never held whole. Returns its bytes.
    ///
    /// Errors: an instruction that does not encode, a field the format cannot record, or `w`'s
    /// own error, each as a message.
    pub fn write_blob<W: std::io::Write + std::io::Seek>(
        &self,
        w: &mut W,
    ) -> Result<u64, LowerError> {
        self.blob_header()?
            .write_to(Some(&self.consts), w)
            .map_err(|e| LowerError::msg(format!("blob: {e}")))
    }

    /// The blob without its constants.
    fn blob_header(&self) -> Result<Blob<'static>, LowerError> {
        let program = self
            .program
            .encode()
            .map_err(|(i, e)| LowerError::msg(format!("instruction {i} does not encode: {e}")))?;
        let debug = self
            .layers
            .iter()
            .map(|l| DebugRange { start: l.start, end: l.end, name: l.name.clone() })
            .collect();
        let blob = Blob {
            target: self.config.target(),
            segments: self.segments.clone(),
            io: self.io.clone(),
            program,
            cycle_bound: self.report.cycle_bound,
            consts: std::borrow::Cow::Borrowed(&[]),
            meta: [
                ("producer".to_string(), format!("accelc {}", env!("CARGO_PKG_VERSION"))),
                ("arena_bytes".into(), self.arena_bytes.to_string()),
                ("spad_peak".into(), self.spad_peak.to_string()),
            ]
            .into_iter()
            .chain(self.layers_meta())
            .collect(),
            debug,
        };
        Ok(blob)
    }

    /// Per-layer figures for the blob's metadata: `start end macs min_bytes kind dtype` per
    /// line (names are in the debug section), as entries `layers`, `layers.1`, `layers.2`, ...
    /// of whole lines, each within the container's 65,535-byte string limit, to be
    /// concatenated in order.
    fn layers_meta(&self) -> Vec<(String, String)> {
        let mut chunks: Vec<String> = vec![String::new()];
        for l in &self.layers {
            let dt = l.dtype.name();
            let line = format!(
                "{} {} {} {} {} {dt}\n",
                l.start,
                l.end,
                l.macs,
                l.min_bytes,
                l.kind.name()
            );
            if chunks.last().is_some_and(|c| c.len() + line.len() > usize::from(u16::MAX)) {
                chunks.push(String::new());
            }
            if let Some(c) = chunks.last_mut() {
                c.push_str(&line);
            }
        }
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| (if i == 0 { "layers".into() } else { format!("layers.{i}") }, c))
            .collect()
    }

    /// A static estimate of the run time: per layer, the busiest engine (DMA engines share
    /// the DRAM bus), summed over layers.
    pub fn estimate_cycles(&self) -> u64 {
        estimate_cycles(&self.program, &self.layers, &self.config)
    }

    /// Total multiply-accumulates.
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }

    /// Sum of the layers' roofline bounds in cycles.
    pub fn roofline_cycles(&self) -> u64 {
        self.layers.iter().map(|l| l.roofline_cycles(&self.config)).sum()
    }
}

/// The device element type of an IR type.
pub(crate) fn device_dtype(d: DType) -> Option<Dtype> {
    Some(match d {
        DType::F32 => Dtype::F32,
        DType::I8 => Dtype::S8,
        DType::U8 | DType::Bool => Dtype::U8,
        DType::I32 => Dtype::S32,
        DType::I64
        | DType::I16
        | DType::U16
        | DType::U32
        | DType::U64
        | DType::F16
        | DType::BF16
        | DType::F64 => return None,
    })
}

/// Lowers a frontend-processed graph (folded, shapes inferred) to a program for `opts.config`.
pub fn compile(graph: &Graph, opts: &CompileOptions) -> Result<Compiled, LowerError> {
    compile_with_progress(graph, opts, &mut |_, _| {})
}

/// As [`compile`], calling `progress(done, total)` after each kernel is emitted.
pub fn compile_with_progress(
    graph: &Graph,
    opts: &CompileOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Compiled, LowerError> {
    compile_with(graph, opts, progress, &mut |_, _| {})
}

/// As [`compile_with_progress`], also offering `dump(pass, text)` the graph after `legalize`
/// and the schedule after `schedule` and after `plan-memory` (with addresses), for
/// `--dump-ir`. The text is built only when `dump` calls `text`.
pub fn compile_with(
    graph: &Graph,
    opts: &CompileOptions,
    progress: &mut dyn FnMut(usize, usize),
    dump: &mut dyn FnMut(&str, &dyn Fn() -> String),
) -> Result<Compiled, LowerError> {
    let legal = legalize::legalize(graph)?;
    dump("legalize", &|| crate::text::print_with(&legal.graph, 16));
    dump("select", &|| select::report(&legal.graph, opts));
    let graph = &legal.graph;
    let mut sched = schedule::schedule(graph, opts)?;
    dump("schedule", &|| sched.dump());
    let mem = plan::plan_memory(&mut sched)?;
    sched
        .verify_memory(&mem)
        .map_err(|e| LowerError::msg(format!("internal error: after plan-memory: {e}")))?;
    dump("plan-memory", &|| sched.dump());
    let mut em = emit::Emitter::new(opts.config.clone());
    let mut layers = Vec::with_capacity(sched.steps.len());
    let total = sched.steps.len();
    for (i, step) in sched.steps.iter().enumerate() {
        progress(i, total);
        let start = em.insts.len() as u32;
        // A step whose results are all empty (a zero dimension) has nothing to compute.
        let empty = step.uses().1.iter().all(|t| sched.tens[*t].bytes() == 0);
        let (macs, min_bytes) = if empty {
            (0, 0)
        } else {
            kernels::emit_step(&mut em, &sched, step).map_err(|mut e| {
                if e.node.is_none() {
                    e.node = Some(step.name.clone());
                }
                e
            })?
        };
        em.end_kernel()?;
        layers.push(Layer {
            name: step.name.clone(),
            kind: step.kind(),
            start,
            end: em.insts.len() as u32,
            macs,
            min_bytes,
            output: step.output.clone(),
            dtype: kernels::step_dtype(&sched, step),
        });
    }
    progress(total, total);
    em.push(accelc_isa::inst::End { code: 0 })?;
    let program = Program {
        insts: std::mem::take(&mut em.insts),
        dma: std::mem::take(&mut em.dma),
        shapes: std::mem::take(&mut em.shapes),
        sem_init: emit::sem_init(),
    };
    let report = verify(&program, &opts.config, &Limits::hardware()).map_err(|e| {
        LowerError::msg(format!("internal error: the emitted program is invalid: {e}"))
    })?;
    let mut segments = vec![SegmentDecl {
        id: emit::SEG_CONST,
        role: SegmentRole::Const,
        access: SegmentRole::Const.access(),
        size: mem.consts.len().max(1),
        init: Some((0, mem.consts.len())),
    }];
    for (id, role, size) in [
        (emit::SEG_INPUT, SegmentRole::Input, mem.input_bytes),
        (emit::SEG_OUTPUT, SegmentRole::Output, mem.output_bytes),
        (emit::SEG_ARENA, SegmentRole::Arena, mem.arena_bytes),
    ] {
        segments.push(SegmentDecl {
            id,
            role,
            access: role.access(),
            size: size.max(1),
            init: None,
        });
    }
    // Declare only what the program uses (or an I/O tensor lives in): a driver refuses to bind
    // a segment the program does not touch, so `accelc verify` of this blob must not see one.
    let io_segs: Vec<u8> =
        mem.inputs.iter().chain(&mem.outputs).map(|(_, seg, _, _)| *seg).collect();
    segments.retain(|d| {
        report.segments.get(usize::from(d.id)).is_some_and(|u| u.used()) || io_segs.contains(&d.id)
    });
    let mut io = Vec::new();
    for (dir, list) in [(Direction::Input, &mem.inputs), (Direction::Output, &mem.outputs)] {
        for (name, seg, offset, t) in list {
            let tens = &sched.tens[*t];
            io.push(IoTensor {
                name: name.clone(),
                direction: dir,
                segment: *seg,
                offset: *offset,
                dtype: device_dtype(tens.dtype)
                    .ok_or_else(|| LowerError::msg(format!("`{name}` is int64")))?,
                dims: tens.shape.iter().map(|&d| d as u64).collect(),
                quant: None,
                boolean: tens.dtype == DType::Bool,
            });
        }
    }
    Ok(Compiled {
        program,
        report,
        consts: mem.consts,
        segments,
        io,
        layers,
        arena_bytes: mem.arena_bytes,
        spad_peak: em.spad_peak,
        acc_peak: em.acc_peak,
        config: opts.config.clone(),
        nodes: graph.nodes.len(),
    })
}

/// Per layer, the busiest engine's summed instruction costs (the two DMA engines' data
/// transfers share the DRAM bus; each layer pays one DRAM latency), summed over layers.
pub fn estimate_cycles(program: &Program, layers: &[Layer], cfg: &DeviceConfig) -> u64 {
    use accelc_isa::cost::{dram_data_cycles, op_cycles};
    use accelc_isa::{Op, Route};
    let mut total = 0u64;
    for l in layers {
        let mut busy = [0u64; 4];
        let mut bus = 0u64;
        let range = l.start as usize..(l.end as usize).min(program.insts.len());
        for inst in &program.insts[range] {
            let Route::Engine(e) = inst.op.route() else { continue };
            let c = match &inst.op {
                Op::DmaLoad(it) => {
                    let d = dram_data_cycles(&program.dma[usize::from(it.desc.0)], cfg);
                    bus += d;
                    d
                }
                Op::DmaStore(it) => {
                    let d = dram_data_cycles(&program.dma[usize::from(it.desc.0)], cfg);
                    bus += d;
                    d
                }
                op => op_cycles(op, &program.dma, &program.shapes, cfg).unwrap_or(0),
            };
            busy[e as usize] += c;
        }
        let latency = u64::from(cfg.dram_read_latency + cfg.dram_write_latency);
        total += busy.iter().copied().max().unwrap_or(0).max(bus) + latency;
    }
    total
}

/// The layers recorded in a blob (debug ranges and the `layers` metadata), if it has them.
pub fn layers_from_blob(blob: &Blob<'_>) -> Option<Vec<Layer>> {
    let mut meta = blob.meta.iter().find(|(k, _)| k == "layers")?.1.clone();
    for i in 1.. {
        let key = format!("layers.{i}");
        match blob.meta.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => meta.push_str(v),
            None => break,
        }
    }
    let mut out = Vec::new();
    for (line, d) in meta.lines().zip(&blob.debug) {
        let f: Vec<&str> = line.split(' ').collect();
        // Blobs before the element type was recorded have five fields: float32.
        let (fields, dtype) = match f.as_slice() {
            [rest @ .., dt] if rest.len() == 5 => (rest, Dtype::from_name(dt)?),
            rest => (rest, Dtype::F32),
        };
        let [start, end, macs, min_bytes, kind] = fields else { return None };
        let kind = match *kind {
            "matmul" => LayerKind::Matmul,
            "depthwise" => LayerKind::Depthwise,
            "pool" => LayerKind::Pool,
            "eltwise" => LayerKind::Elementwise,
            "copy" => LayerKind::Copy,
            "rowwise" => LayerKind::Rowwise,
            _ => return None,
        };
        out.push(Layer {
            name: d.name.clone(),
            kind,
            start: start.parse().ok()?,
            end: end.parse().ok()?,
            macs: macs.parse().ok()?,
            min_bytes: min_bytes.parse().ok()?,
            output: None,
            dtype,
        });
    }
    Some(out)
}
