//! The ISA tools: `asm`, `disasm`, `verify`, `inspect`, `config` and `sim`, on assembly
//! programs, raw instruction words and blobs.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use accelc_isa::blob::{self, Blob};
use accelc_isa::disasm::{self, Options};
use accelc_isa::inst::{INST_BYTES, decode_all};
use accelc_isa::program::{EncodedProgram, Program};
use accelc_isa::verify::{self, Limits, Report};
use accelc_isa::{DeviceConfig, Engine, asm};
use anyhow::{anyhow, bail};

use crate::{config, invalid, is_blob, read, read_blob, write_atomic};

/// Assembles a source file, rendering every error with line, column and the offending text.
fn assemble_file(path: &Path, bytes: &[u8]) -> anyhow::Result<asm::Assembled> {
    let source = std::str::from_utf8(bytes).map_err(|e| {
        invalid(format!(
            "{}: not a blob and not UTF-8 assembly text (byte {})",
            path.display(),
            e.valid_up_to()
        ))
    })?;
    asm::assemble_module(source).map_err(|diags| {
        let rendered = asm::render(&diags, source, &path.display().to_string());
        invalid(format!("{} error(s) in {}\n{}", diags.len(), path.display(), rendered.trim_end()))
    })
}

pub(crate) fn cmd_asm(
    input: &Path,
    output: Option<PathBuf>,
    raw: bool,
    cfg_name: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let cfg = config(cfg_name)?;
    let module = assemble_file(input, &read(input)?)?;
    let program = module.program;
    let enc = program.encode().map_err(|(i, e)| invalid(format!("instruction {i}: {e}")))?;
    let output = output.unwrap_or_else(|| input.with_extension(if raw { "bin" } else { "blob" }));
    crate::not_the_input(input, &output)?;
    // The blob records the validator's run-time bound; a program that does not validate is
    // still written (so `verify` can be shown it), without one.
    let cycle_bound = match verify::verify(&program, &cfg, &Limits::hardware()) {
        Ok(report) => report.cycle_bound,
        Err(errors) => {
            writeln!(
                out,
                "note: the program does not validate for `{}` ({} error(s); see accelc verify); no cycle bound recorded",
                cfg.name,
                errors.0.len()
            )?;
            0
        }
    };
    let bytes = if raw {
        enc.text.clone()
    } else {
        let source_name =
            input.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let blob = Blob {
            target: cfg.target(),
            segments: declared_segments(&module.segments),
            io: Vec::new(),
            program: enc,
            cycle_bound,
            consts: std::borrow::Cow::Borrowed(&[]),
            meta: vec![
                ("source".into(), source_name),
                ("producer".into(), format!("accelc asm {}", env!("CARGO_PKG_VERSION"))),
            ],
            debug: Vec::new(),
        };
        blob.to_bytes().map_err(|e| invalid(e.to_string()))?
    };
    write_atomic(&output, &bytes)?;
    writeln!(
        out,
        "wrote {} ({} instructions, {} bytes)",
        output.display(),
        program.insts.len(),
        bytes.len()
    )?;
    Ok(())
}

fn declared_segments(specs: &[asm::SegmentSpec]) -> Vec<blob::SegmentDecl> {
    specs
        .iter()
        .filter_map(|s| {
            let (size, role) = s.decl?;
            Some(blob::SegmentDecl { id: s.id, role, access: role.access(), size, init: None })
        })
        .collect()
}

fn raw_program(path: &Path, bytes: &[u8]) -> anyhow::Result<Program> {
    let insts = decode_all(bytes).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    Ok(Program { insts, ..Program::default() })
}

pub(crate) fn cmd_disasm(
    input: &Path,
    raw: bool,
    hex: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let bytes = read(input)?;
    let mut segments = Vec::new();
    let mut header = String::new();
    let program = if raw {
        raw_program(input, &bytes)?
    } else if is_blob(&bytes) {
        let blob = read_blob(input, &bytes)?;
        let _ = writeln!(
            header,
            "; from a blob for `{}` (reassemble with --config {}); not carried by the text: \
             {} bytes of constants, {} I/O descriptor(s), {} metadata entries, {} debug range(s)",
            blob.target.config_name,
            blob.target.config_name,
            blob.consts.len(),
            blob.io.len(),
            blob.meta.len(),
            blob.debug.len()
        );
        segments = blob.segments.clone();
        Program::decode(&blob.program).map_err(|e| invalid(format!("{}: {e}", input.display())))?
    } else {
        bail!(invalid(format!(
            "{}: not a command blob (use --raw for raw instruction words)",
            input.display()
        )));
    };
    let text = if raw {
        // Without tables, descriptor and shape operands stay plain indices.
        let mut s = String::new();
        for (i, inst) in program.insts.iter().enumerate() {
            s.push_str(&disasm::inst_text(inst, None));
            if hex {
                let _ = write!(s, " ; {i}: {}", disasm::hex_words(inst.to_word().unwrap_or(0)));
            }
            s.push('\n');
        }
        s
    } else {
        header + &disasm::disassemble_with_segments(&program, &segments, Options { hex })
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

pub(crate) fn cmd_verify(
    input: &Path,
    raw: bool,
    cfg_name: Option<&str>,
    max_cycles: u64,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let bytes = read(input)?;
    if !raw && accelc_isa::plan::is_plan(&bytes) {
        // A plan blob: every device program, as the driver validates each when it loads.
        let plan = accelc_isa::plan::PlanBlob::read(&bytes)
            .map_err(|e| invalid(format!("{}: {e}", input.display())))?;
        for (k, p) in plan.programs.iter().enumerate() {
            let step = plan
                .steps
                .iter()
                .find(|s| s.kind == accelc_isa::plan::StepKind::Device { program: k as u32 });
            writeln!(
                out,
                "program {k} of {} (step `{}`):",
                plan.programs.len(),
                step.map_or("none", |s| s.name.as_str())
            )?;
            verify_bytes(input, p, false, cfg_name, max_cycles, out)?;
        }
        writeln!(
            out,
            "plan: {} steps, {} device programs valid; host module of {} bytes (checked when \
             the plan loads)",
            plan.steps.len(),
            plan.programs.len(),
            plan.host.len()
        )?;
        return Ok(());
    }
    verify_bytes(input, &bytes, raw, cfg_name, max_cycles, out)
}

/// `verify` of one program, blob or assembly file given as `bytes` (read from `input`).
fn verify_bytes(
    input: &Path,
    bytes: &[u8],
    raw: bool,
    cfg_name: Option<&str>,
    max_cycles: u64,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let bytes = bytes.to_vec();
    let limits = Limits { max_cycles: Some(max_cycles) };
    let (program_enc, blob_cfg, segments) = if raw {
        let n = bytes.len();
        if !n.is_multiple_of(INST_BYTES) {
            bail!(invalid(format!(
                "{}: {n} bytes is not a whole number of {INST_BYTES}-byte instructions",
                input.display()
            )));
        }
        (EncodedProgram { text: bytes, ..EncodedProgram::default() }, None, Vec::new())
    } else if is_blob(&bytes) {
        let blob = read_blob(input, &bytes)?;
        (blob.program.clone(), Some(blob.target), blob.segments)
    } else {
        let module = assemble_file(input, &bytes)?;
        let enc =
            module.program.encode().map_err(|(i, e)| invalid(format!("instruction {i}: {e}")))?;
        (enc, None, declared_segments(&module.segments))
    };
    let cfg = match (cfg_name, &blob_cfg) {
        (Some(name), _) => config(name)?,
        // A blob naming no built-in configuration is refused, as the driver refuses it.
        (None, Some(t)) => config(&t.config_name)
            .map_err(|e| invalid(format!("{}: the blob targets {e}", input.display())))?,
        (None, None) => DeviceConfig::default_npu(),
    };
    if let Some(t) = &blob_cfg
        && !t.runs_on(&cfg)
    {
        bail!(invalid(format!(
            "{}: built for ISA {}.{} on `{}`, which does not match configuration `{}`",
            input.display(),
            t.isa_major,
            t.isa_minor,
            t.config_name,
            cfg.name
        )));
    }
    match verify::verify_encoded(&program_enc, &cfg, &limits) {
        Ok((_, report)) => {
            // Declared segment sizes stand in for the buffers a driver would bind; a blob is
            // checked even when it declares none (its program then cannot be bound at all).
            if (!segments.is_empty() || blob_cfg.is_some())
                && let Err(errors) = verify::check_declared(&report, &segments)
            {
                let n = errors.0.len();
                bail!(invalid(format!(
                    "{}: the program does not fit its declared segments ({n} error(s))\n{errors}",
                    input.display()
                )));
            }
            write_report(out, &report, &cfg, !segments.is_empty())?;
            Ok(())
        }
        Err(errors) => {
            let n = errors.0.len();
            Err(invalid(format!(
                "{}: rejected with {n} error(s) for configuration `{}`\n{errors}{}",
                input.display(),
                cfg.name,
                limit_hint(&errors)
            )))
        }
    }
}

fn write_report(
    out: &mut dyn Write,
    r: &Report,
    cfg: &DeviceConfig,
    declared: bool,
) -> anyhow::Result<()> {
    let total: usize = r.per_engine.iter().sum::<usize>() + r.front_end;
    writeln!(out, "valid for configuration `{}`", cfg.name)?;
    let per: Vec<String> =
        Engine::ALL.iter().map(|e| format!("{} {}", e.name(), r.per_engine[*e as usize])).collect();
    writeln!(out, "instructions: {total} ({}, front-end {})", per.join(", "), r.front_end)?;
    let micros = r.cycle_bound as f64 * 1e6 / cfg.clock_hz as f64;
    writeln!(
        out,
        "run-time bound: {} cycles ({micros:.3} us at {} GHz)",
        r.cycle_bound,
        cfg.clock_hz as f64 / 1e9
    )?;
    let used: Vec<usize> = (0..r.segments.len()).filter(|i| r.segments[*i].used()).collect();
    if used.is_empty() {
        writeln!(out, "segments: none")?;
    } else {
        let note = if declared { "within their declared sizes" } else { "sizes not declared" };
        writeln!(out, "segments ({note}):")?;
        writeln!(out, "  seg  access  read extent     write extent    bytes required")?;
        for i in used {
            let s = &r.segments[i];
            let access = format!(
                "{}{}",
                if s.read_end.is_some() { "r" } else { "-" },
                if s.write_end.is_some() { "w" } else { "-" }
            );
            let ext = |e: Option<u64>| e.map_or("-".to_string(), |v| format!("{v:#x}"));
            writeln!(
                out,
                "  {i:<4} {access:<7} {:<15} {:<15} {}",
                ext(s.read_end),
                ext(s.write_end),
                s.required_size()
            )?;
        }
    }
    let peaks: Vec<String> = r
        .sem_peak
        .iter()
        .enumerate()
        .filter(|(_, p)| **p > 0)
        .map(|(i, p)| format!("s{i} {p}"))
        .collect();
    if !peaks.is_empty() {
        writeln!(out, "semaphore peaks: {}", peaks.join(", "))?;
    }
    Ok(())
}

pub(crate) fn cmd_inspect(
    input: &Path,
    with_disasm: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let bytes = read(input)?;
    if !is_blob(&bytes) {
        bail!(invalid(format!("{}: not a command blob (bad magic)", input.display())));
    }
    if accelc_isa::plan::is_plan(&bytes) {
        return inspect_plan(input, &bytes, with_disasm, out);
    }
    let blob = read_blob(input, &bytes)?;
    let mut s = String::new();
    let _ = writeln!(s, "blob {} ({} bytes)", input.display(), bytes.len());
    let _ = writeln!(
        s,
        "format {}.{}",
        u16::from_le_bytes([bytes[8], bytes[9]]),
        u16::from_le_bytes([bytes[10], bytes[11]])
    );
    let _ = writeln!(s, "content sha256 {}", hex(&bytes[64..96]));
    section_table(&bytes, &mut s);
    let t = &blob.target;
    let _ = writeln!(
        s,
        "target: ISA {}.{}, config `{}` (array {}x{}, {} lanes, scratchpad {} KiB, accumulator {} KiB, features {:#x}), fingerprint {}",
        t.isa_major,
        t.isa_minor,
        t.config_name,
        t.array_dim,
        t.array_dim,
        t.vx_lanes,
        t.spad_bytes / 1024,
        t.acc_bytes / 1024,
        t.features,
        hex(&t.fingerprint())
    );
    let _ = writeln!(s, "segments: {}", blob.segments.len());
    for seg in &blob.segments {
        let init =
            seg.init.map_or(String::new(), |(o, l)| format!(", init CONST[{o:#x}..+{l:#x}]"));
        let _ = writeln!(
            s,
            "  {:<3} {:<6} {:>12} bytes, access {:#x}{init}",
            seg.id,
            seg.role.name(),
            seg.size,
            seg.access
        );
    }
    let _ = writeln!(s, "io tensors: {}", blob.io.len());
    for t in &blob.io {
        let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
        let mut q = t
            .quant
            .map_or(String::new(), |q| format!(", scale {} zero point {}", q.scale, q.zero_point));
        if t.boolean {
            q.push_str(", boolean");
        }
        let _ = writeln!(
            s,
            "  {:?} {} {}[{}] in segment {} at {:#x}{q}",
            t.direction,
            t.name,
            t.dtype,
            dims.join(", "),
            t.segment,
            t.offset
        );
    }
    let _ = writeln!(s, "constants: {} bytes", blob.consts.len());
    let _ = writeln!(s, "cycle bound (declared): {}", blob.cycle_bound);
    for (k, v) in &blob.meta {
        let _ = writeln!(s, "meta {k} = {v}");
    }
    for d in &blob.debug {
        let _ = writeln!(s, "debug {}..{} {}", d.start, d.end, d.name);
    }
    if with_disasm {
        let program = Program::decode(&blob.program)
            .map_err(|e| invalid(format!("{}: {e}", input.display())))?;
        let _ = writeln!(s, "program:");
        s.push_str(&disasm::disassemble(&program, Options { hex: true }));
    }
    out.write_all(s.as_bytes())?;
    Ok(())
}

/// The container's section table (the reader has checked it), one line per section.
fn section_table(bytes: &[u8], s: &mut String) {
    let _ = writeln!(s, "sections:");
    let count = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]) as usize;
    for i in 0..count {
        let Some(e) = bytes.get(128 + 32 * i..160 + 32 * i) else { break };
        let kind = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let flags = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let off = u64::from_le_bytes(e[8..16].try_into().unwrap_or([0; 8]));
        let size = u64::from_le_bytes(e[16..24].try_into().unwrap_or([0; 8]));
        let crc = u32::from_le_bytes([e[24], e[25], e[26], e[27]]);
        let _ = writeln!(
            s,
            "  {:<9} offset {off:#08x} size {size:>9} crc32c {crc:08x}{}",
            section_name(kind),
            if flags & blob::SECTION_REQUIRED != 0 { " required" } else { "" }
        );
    }
}

/// `inspect` of a plan blob: the container, the tensors, the steps, each device program
/// (with its disassembly on request) and the host module's size.
fn inspect_plan(
    input: &Path,
    bytes: &[u8],
    with_disasm: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use accelc_isa::plan::{PlanBlob, StepKind};
    let plan = PlanBlob::read(bytes).map_err(|e| invalid(format!("{}: {e}", input.display())))?;
    let mut s = String::new();
    let _ = writeln!(s, "plan blob {} ({} bytes)", input.display(), bytes.len());
    let _ = writeln!(
        s,
        "format {}.{}",
        u16::from_le_bytes([bytes[8], bytes[9]]),
        u16::from_le_bytes([bytes[10], bytes[11]])
    );
    let _ = writeln!(s, "content sha256 {}", hex(&bytes[64..96]));
    section_table(bytes, &mut s);
    let _ = writeln!(
        s,
        "target: config `{}`, fingerprint {}",
        plan.target.config_name,
        hex(&plan.target.fingerprint())
    );
    let name = |i: &u32| plan.tensors[*i as usize].name.clone();
    let names = |v: &[u32]| v.iter().map(name).collect::<Vec<_>>().join(", ");
    let _ = writeln!(s, "tensors: {}", plan.tensors.len());
    for t in &plan.tensors {
        let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
        let ty = accelc::DType::from_onnx(i32::from(t.onnx_type))
            .map_or_else(|| t.onnx_type.to_string(), |d| d.to_string());
        let _ = writeln!(s, "  {} {ty}[{}]", t.name, dims.join(", "));
    }
    let _ = writeln!(s, "inputs: {}", names(&plan.inputs));
    let _ = writeln!(s, "outputs: {}", names(&plan.outputs));
    let _ = writeln!(s, "steps: {}", plan.steps.len());
    for st in &plan.steps {
        let what = match st.kind {
            StepKind::Device { program } => format!("device job, program {program}"),
            StepKind::Host => "host call".to_string(),
        };
        let _ = writeln!(
            s,
            "  {:<10} {what}: reads {}; writes {}",
            st.name,
            names(&st.inputs),
            names(&st.outputs)
        );
    }
    for (k, p) in plan.programs.iter().enumerate() {
        let b = blob::Blob::read(p)
            .map_err(|e| invalid(format!("{}: program {k}: {e}", input.display())))?;
        let _ = writeln!(
            s,
            "program {k}: {} bytes, {} instructions, {} bytes of constants",
            p.len(),
            b.program.text.len() / INST_BYTES,
            b.consts.len()
        );
        if with_disasm {
            let program = Program::decode(&b.program)
                .map_err(|e| invalid(format!("{}: program {k}: {e}", input.display())))?;
            s.push_str(&disasm::disassemble(&program, Options { hex: true }));
        }
    }
    let _ = writeln!(
        s,
        "host module: {} bytes, {} lines (accelc compile --emit mlir prints it)",
        plan.host.len(),
        plan.host.lines().count()
    );
    for (k, v) in &plan.meta {
        let _ = writeln!(s, "meta {k} = {v}");
    }
    out.write_all(s.as_bytes())?;
    Ok(())
}

fn section_name(kind: u32) -> String {
    blob::SectionKind::from_u32(kind).map_or(format!("kind {kind}"), |k| k.name().to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn cmd_config(name: Option<&str>, out: &mut dyn Write) -> anyhow::Result<()> {
    let configs = match name {
        Some(n) => vec![config(n)?],
        None => DeviceConfig::builtin(),
    };
    for (i, c) in configs.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "{c}")?;
    }
    Ok(())
}

fn parse_seg_arg(arg: &str) -> anyhow::Result<(usize, PathBuf)> {
    let (n, file) = arg.split_once('=').ok_or_else(|| anyhow!("`{arg}` is not N=FILE"))?;
    let n: usize = n
        .parse()
        .ok()
        .filter(|n| *n < 16)
        .ok_or_else(|| anyhow!("`{n}` is not a segment number 0..15"))?;
    Ok((n, PathBuf::from(file)))
}

/// Where a program is refused for its run-time bound, how to allow it.
fn limit_hint(errors: &verify::VerifyErrors) -> &'static str {
    let over = errors.0.iter().any(|e| matches!(e.kind, verify::ErrorKind::CycleLimit { .. }));
    if over { "\n(--max-cycles N raises the job limit)" } else { "" }
}

#[allow(clippy::too_many_arguments, reason = "one parameter per flag of `accelc sim`")]
pub(crate) fn cmd_sim(
    input: &Path,
    cfg_name: Option<&str>,
    seg_args: &[String],
    dump_args: &[String],
    trace: Option<&Path>,
    timing: bool,
    max_cycles: u64,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use accelc_runtime::sim::{RunOptions, Segment, Simulator, trace::chrome_json};
    let bytes = read(input)?;
    let (program, decls, blob_cfg, consts) = if is_blob(&bytes) {
        let blob = read_blob(input, &bytes)?;
        let program = Program::decode(&blob.program)
            .map_err(|e| invalid(format!("{}: {e}", input.display())))?;
        let consts: Vec<(u8, Vec<u8>)> = blob
            .segments
            .iter()
            .filter_map(|s| blob.segment_init(s.id).map(|d| (s.id, d.to_vec())))
            .collect();
        (program, blob.segments.clone(), Some(blob.target.clone()), consts)
    } else {
        let module = assemble_file(input, &bytes)?;
        (module.program, declared_segments(&module.segments), None, Vec::new())
    };
    let cfg = match (cfg_name, &blob_cfg) {
        (Some(name), _) => config(name)?,
        // A blob naming no built-in configuration is refused, as the driver refuses it.
        (None, Some(t)) => config(&t.config_name)
            .map_err(|e| invalid(format!("{}: the blob targets {e}", input.display())))?,
        (None, None) => DeviceConfig::default_npu(),
    };
    // The driver's checks come first: the simulator only ever sees validated programs.
    let limits = Limits { max_cycles: Some(max_cycles) };
    let report = verify::verify(&program, &cfg, &limits).map_err(|e| {
        invalid(format!(
            "{}: rejected by the validator for `{}`\n{e}{}",
            input.display(),
            cfg.name,
            limit_hint(&e)
        ))
    })?;
    // The buffers a driver would bind: declared sizes, else the program's extents; checked as
    // the driver checks a submit, and allocated only after (at most the driver's largest
    // buffer object, and an allocation failure is an error, not an abort).
    let mut sizes: Vec<Option<(u64, bool)>> = vec![None; 16];
    for (i, u) in report.segments.iter().enumerate() {
        let decl = decls.iter().find(|d| usize::from(d.id) == i);
        if u.used() || decl.is_some() {
            let size = decl.map_or(u.required_size(), |d| d.size);
            let writable = decl.is_none_or(|d| d.access & blob::ACCESS_WRITE != 0);
            sizes[i] = Some((size, writable));
        }
    }
    let mut seg_files = Vec::new();
    for arg in seg_args {
        let (n, file) = parse_seg_arg(arg)?;
        // Never more than the declared segment: a huge file is refused without reading it.
        let limit = decls
            .iter()
            .find(|d| usize::from(d.id) == n)
            .map_or(accelc_isa::file::MAX_FILE_BYTES, |d| d.size);
        let data = accelc_isa::file::read_regular(&file, limit).map_err(|e| match e {
            accelc_isa::file::ReadError::Io(m) => anyhow::anyhow!(m),
            accelc_isa::file::ReadError::Refused(m) => invalid(m),
        })?;
        let len = data.len() as u64;
        seg_files.push((n, data));
        match sizes.get_mut(n) {
            Some(Some((size, _))) if decls.iter().any(|d| usize::from(d.id) == n) => {
                if len > *size {
                    bail!(invalid(format!(
                        "{}: {len} bytes do not fit segment {n}, declared {size} bytes",
                        file.display()
                    )));
                }
            }
            Some(Some((size, _))) => *size = (*size).max(len),
            _ => bail!(invalid(format!("segment {n} is not used by the program"))),
        }
    }
    let mut bindings = [None; 16];
    for (b, s) in bindings.iter_mut().zip(&sizes) {
        *b = s.map(|(size, writable)| verify::Binding { size, writable });
    }
    verify::check_bindings(&report, &bindings).map_err(|e| {
        invalid(format!("{}: the segments do not fit the program\n{e}", input.display()))
    })?;
    let mut buffers: Vec<Option<(Vec<u8>, bool)>> = vec![None; 16];
    for (i, s) in sizes.iter().enumerate() {
        if let Some((size, writable)) = *s {
            let data = accelc_runtime::driver::zeroed(size)
                .map_err(|e| invalid(format!("segment {i}: {e}")))?;
            buffers[i] = Some((data, writable));
        }
    }
    for (id, data) in consts {
        if let Some(Some((buf, _))) = buffers.get_mut(usize::from(id)) {
            buf[..data.len()].copy_from_slice(&data);
        }
    }
    for (n, data) in seg_files {
        if let Some(Some((buf, _))) = buffers.get_mut(n)
            && let Some(dst) = buf.get_mut(..data.len())
        {
            dst.copy_from_slice(&data);
        }
    }
    let mut segs: accelc_runtime::sim::Segments<'_> = Default::default();
    for (slot, buf) in segs.iter_mut().zip(buffers.iter_mut()) {
        if let Some((data, writable)) = buf {
            *slot = Some(Segment { data: data.as_mut_slice(), writable: *writable });
        }
    }
    let mut sim = Simulator::new(cfg.clone());
    // The validator's bound holds for every schedule, so it is the job's budget.
    let opts = RunOptions {
        timing,
        trace: trace.is_some(),
        max_cycles: Some(report.cycle_bound.max(1)),
        // The driver's wall-clock watchdog, as `run` has it.
        deadline: Some(std::time::Instant::now() + accelc_runtime::driver::DEFAULT_JOB_TIMEOUT),
    };
    let stats = sim
        .run(&program, &mut segs, opts)
        .map_err(|f| invalid(format!("{}: {f}", input.display())))?;
    writeln!(
        out,
        "completed with code {} in {} cycles ({:.3} us at {} GHz){}",
        stats.end_code,
        stats.cycles,
        stats.cycles as f64 * 1e6 / cfg.clock_hz as f64,
        cfg.clock_hz as f64 / 1e9,
        if timing { "" } else { " [timing off]" }
    )?;
    writeln!(
        out,
        "engine  insts  busy cycles  util   stall sem  stall barrier  stall dma  bytes        MACs"
    )?;
    for e in Engine::ALL {
        let s = &stats.engines[*e as usize];
        writeln!(
            out,
            "{:<7} {:>5}  {:>11}  {:>4.0}%  {:>9}  {:>13}  {:>9}  {:>11}  {:>9}",
            e.name(),
            s.insts,
            s.busy,
            100.0 * s.busy as f64 / stats.cycles.max(1) as f64,
            s.stall_sem,
            s.stall_barrier,
            s.stall_dma_slots,
            s.bytes,
            s.macs
        )?;
    }
    if let Some(path) = trace {
        write_atomic(path, chrome_json(&stats.trace, cfg.clock_hz).as_bytes())?;
        writeln!(out, "trace: {} ({} events)", path.display(), stats.trace.len())?;
    }
    for arg in dump_args {
        let (n, file) = parse_seg_arg(arg)?;
        let Some(Some((data, _))) = buffers.get(n) else {
            bail!(invalid(format!("segment {n} is not bound")))
        };
        write_atomic(&file, data)?;
        writeln!(out, "segment {n}: {} bytes written to {}", data.len(), file.display())?;
    }
    Ok(())
}
