//! Reference pages for the book, generated from the instruction table and the built-in device
//! configurations so they cannot drift from the code. A test compares them with the committed
//! files under `book/src/` and rewrites them when run with `UPDATE_EXPECT=1`.

use std::fmt::Write as _;

use crate::config::{ARRAY_FILL_DRAIN_FACTOR, DeviceConfig, VX_LATENCY, VX_SLOW_FACTOR};
use crate::fields::{Axis, BinOp, Dtype, Engine, FieldKind, ReduceOp, UnOp};
use crate::inst::{OPS, OpInfo, RouteInfo};

/// Generated pages: (path under `book/src/`, contents).
pub fn pages() -> Vec<(&'static str, String)> {
    vec![("isa/instructions.md", instructions()), ("isa/configs.md", configs())]
}

const GENERATED: &str = "<!-- Generated from the ISA crate (isa/src/book.rs) by `UPDATE_EXPECT=1 cargo test -p accelc-tests book`; do not edit. -->\n\n";

fn doc_line(doc: &str) -> String {
    doc.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

fn kind_name(kind: FieldKind) -> String {
    match kind {
        FieldKind::Uint => "unsigned".into(),
        FieldKind::Bool => "bit".into(),
        FieldKind::Enum(names) => names.join(" \\| "),
        FieldKind::Sem => "semaphore".into(),
        FieldKind::Seg => "segment".into(),
        FieldKind::Local => "local address".into(),
        FieldKind::DmaDesc => "DMA descriptor index".into(),
        FieldKind::Shape => "shape index".into(),
    }
}

fn route(info: &OpInfo) -> String {
    match info.route {
        RouteInfo::Front => "front-end".into(),
        RouteInfo::Fixed(e) => format!("`{e}` queue"),
        RouteInfo::QueueField => "the queue named by `queue`".into(),
    }
}

fn bits(lo: u32, hi: u32) -> String {
    if hi - lo == 1 { format!("{lo}") } else { format!("{}:{lo}", hi - 1) }
}

/// The encoding of one instruction as rows `(lo, hi, field, type, meaning)`, reserved gaps
/// included.
fn layout(info: &OpInfo) -> Vec<(u32, u32, String, String, String)> {
    let mut rows =
        vec![(0, 8, "opcode".to_string(), format!("`{:#04x}`", info.opcode), String::new())];
    if info.has_sync() {
        rows.push((
            8,
            13,
            "wait0".into(),
            "slot".into(),
            "enable bit, then semaphore number".into(),
        ));
        rows.push((13, 18, "wait1".into(), "slot".into(), "only if wait0 is used".into()));
        rows.push((
            18,
            23,
            "signal0".into(),
            "slot".into(),
            "enable bit, then semaphore number".into(),
        ));
        rows.push((23, 28, "signal1".into(), "slot".into(), "only if signal0 is used".into()));
    }
    let mut fields: Vec<_> = info.fields.iter().collect();
    fields.sort_by_key(|f| f.lo);
    let mut at = if info.has_sync() { 28 } else { 8 };
    for f in fields {
        if f.lo > at {
            rows.push((at, f.lo, "reserved".into(), "must be 0".into(), String::new()));
        }
        rows.push((f.lo, f.hi, format!("`{}`", f.name), kind_name(f.kind), doc_line(f.doc)));
        at = f.hi;
    }
    if at < 128 {
        rows.push((at, 128, "reserved".into(), "must be 0".into(), String::new()));
    }
    rows
}

fn enum_table(out: &mut String, title: &str, names: &[&str], docs: &[&str]) {
    let _ = writeln!(out, "### {title}\n\n| value | name | meaning |\n|---|---|---|");
    for (i, (n, d)) in names.iter().zip(docs).enumerate() {
        let _ = writeln!(out, "| {i} | `{n}` | {} |", d.trim());
    }
    out.push('\n');
}

/// The instruction reference: a summary table, then every instruction with its semantics,
/// assembly form and encoding diagram, then the enumerations.
pub fn instructions() -> String {
    let mut out = String::from("# Instruction reference\n\n");
    out.push_str(GENERATED);
    out.push_str(
        "Every instruction is 128 bits, little endian. Bits 0..8 hold the opcode; queued \
         instructions carry two wait and two signal slots in bits 8..28; bits 28..32 are \
         reserved; operands follow. Every bit not listed for an instruction must be zero: the \
         decoder rejects it, naming the bits.\n\n",
    );
    out.push_str("| opcode | mnemonic | executes on | summary |\n|---|---|---|---|\n");
    for op in OPS {
        let summary = doc_line(op.doc);
        let first = summary.split(". ").next().unwrap_or("").trim_end_matches('.');
        let _ = writeln!(
            out,
            "| `{:#04x}` | [`{}`](#{}) | {} | {first}. |",
            op.opcode,
            op.mnemonic,
            anchor(op.mnemonic),
            route(op)
        );
    }
    out.push('\n');
    for op in OPS {
        let _ = writeln!(out, "## `{}`\n", op.mnemonic);
        let _ = writeln!(out, "{}\n", doc_line(op.doc));
        let _ = writeln!(out, "Opcode `{:#04x}`, executes on {}.\n", op.opcode, route(op));
        let mut form = String::from(op.mnemonic);
        for f in op.fields {
            let _ = write!(form, " {}=…", f.name);
        }
        if op.has_sync() {
            form.push_str(" [wait=S[,S]] [signal=S[,S]]");
        }
        let _ = writeln!(out, "```text\n{form}\n```\n");
        out.push_str("| bits | field | type | meaning |\n|---|---|---|---|\n");
        for (lo, hi, name, ty, meaning) in layout(op) {
            let _ = writeln!(out, "| {} | {name} | {ty} | {meaning} |", bits(lo, hi));
        }
        out.push('\n');
    }
    out.push_str("# Enumerations\n\n");
    enum_table(&mut out, "Engines (`queue`)", Engine::NAMES, Engine::DOCS);
    enum_table(&mut out, "Data types (`dtype`, `out_dtype`)", Dtype::NAMES, Dtype::DOCS);
    enum_table(&mut out, "Binary operations (`vx.binary op`)", BinOp::NAMES, BinOp::DOCS);
    enum_table(&mut out, "Unary operations (`vx.unary op`)", UnOp::NAMES, UnOp::DOCS);
    enum_table(&mut out, "Reductions (`vx.reduce op`)", ReduceOp::NAMES, ReduceOp::DOCS);
    enum_table(&mut out, "Reduction axes (`vx.reduce axis`)", Axis::NAMES, Axis::DOCS);
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

fn anchor(mnemonic: &str) -> String {
    mnemonic.replace('.', "")
}

/// The built-in device configurations with their derived figures and the timing formulas.
pub fn configs() -> String {
    let mut out = String::from("# Device configurations\n\n");
    out.push_str(GENERATED);
    out.push_str(
        "`--config NAME` selects one. Field widths never depend on the configuration; the \
         validator checks values against it, and a blob records the fingerprint of the \
         parameters below that decide validity (array size, lanes, memory sizes, features, ISA \
         major version), so a runtime refuses blobs built for other hardware. Timing \
         parameters are not in the fingerprint.\n\n",
    );
    let cfgs = DeviceConfig::builtin();
    out.push_str("| parameter |");
    for c in &cfgs {
        let _ = write!(out, " `{}` |", c.name);
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(cfgs.len()));
    out.push('\n');
    let row = |out: &mut String, name: &str, f: &dyn Fn(&DeviceConfig) -> String| {
        let _ = write!(out, "| {name} |");
        for c in &cfgs {
            let _ = write!(out, " {} |", f(c));
        }
        out.push('\n');
    };
    row(&mut out, "matrix array", &|c| format!("{0}×{0}", c.array_dim));
    row(&mut out, "cycles per int8 row", &|c| c.array_row_cycles.to_string());
    row(&mut out, "vector lanes", &|c| c.vx_lanes.to_string());
    row(&mut out, "scratchpad", &|c| format!("{} KiB", c.spad_bytes / 1024));
    row(&mut out, "accumulator", &|c| format!("{} KiB", c.acc_bytes / 1024));
    row(&mut out, "clock", &|c| format!("{} GHz", c.clock_hz as f64 / 1e9));
    row(&mut out, "DRAM bandwidth", &|c| format!("{} GB/s", c.dram_bytes_per_sec as f64 / 1e9));
    row(&mut out, "DRAM read / write latency", &|c| {
        format!("{} / {} cycles", c.dram_read_latency, c.dram_write_latency)
    });
    row(&mut out, "DRAM burst", &|c| format!("{} B", c.dram_burst_bytes));
    row(&mut out, "on-chip copy/fill", &|c| format!("{} B/cycle", c.sram_bytes_per_cycle));
    for dtype in [Dtype::S8, Dtype::Bf16, Dtype::F32] {
        row(&mut out, &format!("{dtype} peak"), &|c| {
            let p = c.peak_macs_per_sec(dtype) as f64;
            format!("{:.3} TMAC/s ({:.3} TOPS)", p / 1e12, 2.0 * p / 1e12)
        });
        row(&mut out, &format!("{dtype} ridge point"), &|c| {
            format!("{:.0} ops/byte", c.ridge_ops_per_byte(dtype))
        });
    }
    row(&mut out, "fingerprint", &|c| c.fingerprint().iter().map(|b| format!("{b:02x}")).collect());
    let _ = write!(
        out,
        "\nThe ridge point is where a layer's arithmetic intensity (operations, two per \
         multiply-accumulate, per DRAM byte) makes compute and bandwidth limits meet: below it \
         a layer is bandwidth-bound.\n\n\
         ## Timing formulas\n\n\
         One set of formulas (`isa/src/cost.rs`) gives every instruction's cycles when it runs \
         alone; the validator's run-time bound is their sum, and the simulator and the \
         compiler's cost model use the same functions.\n\n\
         | instruction | cycles |\n|---|---|\n\
         | `nop`, `end`, `barrier`, `sem.*`, `marker` | 1 |\n\
         | `dma.load` | read latency + ⌈(runs × run bytes rounded up to bursts) / bytes per cycle⌉ |\n\
         | `dma.store` | write latency + the same transfer term |\n\
         | `dma.fill`, `dma.copy` | ⌈bytes / on-chip bytes per cycle⌉, at least 1 |\n\
         | `mx.load_w` | k |\n\
         | `mx.matmul` | rows × cycles per int8 row × (1 for s8/u8, 4 for bf16, 16 for f32) + {ARRAY_FILL_DRAIN_FACTOR} × array size (fill and drain) |\n\
         | `vx.*` | ⌈elements / lanes⌉ × ({VX_SLOW_FACTOR} for div, pow, exp, log, sqrt, rsqrt, recip, tanh, sigmoid, erf; else 1) + {VX_LATENCY} |\n"
    );
    out
}
