//! The plan blob (`NPB` format 2): a model that runs partly on the device and partly on the
//! host CPU. It holds device programs (each a complete, separately validated format-1 blob),
//! the host code (one MLIR module as text, compiled when the blob is loaded) and an ordered
//! plan of steps, each a device job or a host call, naming the tensors they exchange.
//!
//! The container is format 1's (header, section table, checksums, content hash); the header's
//! format major is 2, so a format-1 reader refuses a plan blob by its version ("format version
//! 2.0 is not supported") instead of misreading it. Sections:
//!
//! - `TARGET` (required): as in format 1; every embedded program targets the same device.
//! - `PLAN` (required): `u32` tensor count, then per tensor `str` name, `u8` ONNX element type
//!   code (1 float, 2 uint8, 3 int8, 6 int32, 7 int64, 9 bool), `u8` rank and `u64` dimensions;
//!   `u32` count and `u32` tensor indices of the model's inputs, then of its outputs; `u32`
//!   step count, then per step `u8` kind (0 device job, 1 host call), `str` name (the host
//!   function's symbol, or a label), `u32` program index (0 for host calls), and `u32` counts
//!   and indices of the tensors it reads and writes (for a device job, in the program's
//!   signature order).
//! - `PROGRAMS` (required): `u32` count, then per program a `u64` length and that many bytes.
//! - `HOST` (required when a step is a host call): the MLIR module, UTF-8.
//! - `META` (optional): key/value strings, as in format 1.
//!
//! The reader checks every count against the bytes left, every index against its table, that
//! each tensor is written by one step or is a model input, that a step only reads tensors that
//! exist by then, and that every output is produced; it never panics on any byte string. What
//! it cannot check (that a program's signature matches its step, that the host module defines
//! the functions) is checked by whoever loads the programs and compiles the module.

#![deny(clippy::arithmetic_side_effects)]

use std::borrow::Cow;

use crate::blob::{
    BlobError, Cur, FORMAT_VERSION, Out, SECTION_REQUIRED, SectionKind, err, read_container,
    read_target, target_section, write_container_version,
};
use crate::config::Target;

/// Format version of plan blobs, `(major, minor)`.
pub const PLAN_FORMAT_VERSION: (u16, u16) = (2, 0);

/// The largest dimension a plan tensor may have (as for format-1 I/O tensors).
const MAX_DIM: u64 = crate::verify::SEGMENT_SPACE;

/// A tensor the plan's steps exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanTensor {
    /// Its name (the model's value name).
    pub name: String,
    /// ONNX element type code (`TensorProto.DataType`): 1, 2, 3, 4, 5, 6, 7, 9 or 12.
    pub onnx_type: u8,
    /// Dimensions, outermost first; dense and row-major.
    pub dims: Vec<u64>,
}

/// What a step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// A device job: program `program` of [`PlanBlob::programs`].
    Device {
        /// Index into the programs.
        program: u32,
    },
    /// A call of host function [`Step::name`].
    Host,
}

/// One step of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Device job or host call.
    pub kind: StepKind,
    /// The host function's symbol, or the device job's label.
    pub name: String,
    /// Tensors read (indices into [`PlanBlob::tensors`]).
    pub inputs: Vec<u32>,
    /// Tensors written.
    pub outputs: Vec<u32>,
}

/// A plan blob.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanBlob<'a> {
    /// The device every program targets.
    pub target: Target,
    /// The tensors.
    pub tensors: Vec<PlanTensor>,
    /// The model's inputs, in signature order.
    pub inputs: Vec<u32>,
    /// The model's outputs, in signature order.
    pub outputs: Vec<u32>,
    /// The steps, in execution order.
    pub steps: Vec<Step>,
    /// The device programs, each a format-1 blob; borrowed from the file when read.
    pub programs: Vec<Cow<'a, [u8]>>,
    /// The host module (MLIR text; empty when no step is a host call).
    pub host: String,
    /// Key/value metadata.
    pub meta: Vec<(String, String)>,
}

/// Whether `bytes` start like a plan blob (the magic and format major 2), so a loader can
/// choose between [`PlanBlob::read`] and the format-1 reader before parsing.
pub fn is_plan(bytes: &[u8]) -> bool {
    bytes.get(..8) == Some(&crate::blob::MAGIC[..])
        && bytes.get(8..10) == Some(&PLAN_FORMAT_VERSION.0.to_le_bytes()[..])
}

const ONNX_TYPES: [u8; 13] = [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 16];

/// Bytes per element of an ONNX element type code this reader knows.
fn elem_bytes(onnx_type: u8) -> u64 {
    match onnx_type {
        1 | 6 | 12 => 4,
        4 | 5 | 10 | 16 => 2,
        7 | 11 | 13 => 8,
        _ => 1,
    }
}

impl<'a> PlanBlob<'a> {
    /// Serialises the plan.
    ///
    /// Errors: a string longer than 65,535 bytes, a rank over 255, or a count over `u32`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BlobError> {
        let mut sections: Vec<(SectionKind, Vec<u8>)> =
            vec![(SectionKind::Target, target_section(&self.target)?)];
        let mut o = Out::default();
        o.count(self.tensors.len(), "plan tensors")?;
        for t in &self.tensors {
            o.str(&t.name)?;
            o.u8(t.onnx_type);
            o.u8(u8::try_from(t.dims.len()).map_err(|_| {
                err(None, Some("PLAN"), format!("tensor `{}` has rank over 255", t.name))
            })?);
            for d in &t.dims {
                o.u64(*d);
            }
        }
        for list in [&self.inputs, &self.outputs] {
            o.count(list.len(), "plan signature entries")?;
            for i in list {
                o.u32(*i);
            }
        }
        o.count(self.steps.len(), "plan steps")?;
        for s in &self.steps {
            let (kind, program) = match s.kind {
                StepKind::Device { program } => (0, program),
                StepKind::Host => (1, 0),
            };
            o.u8(kind);
            o.str(&s.name)?;
            o.u32(program);
            for list in [&s.inputs, &s.outputs] {
                o.count(list.len(), "step tensors")?;
                for i in list {
                    o.u32(*i);
                }
            }
        }
        sections.push((SectionKind::Plan, o.0));
        let mut o = Out::default();
        o.count(self.programs.len(), "programs")?;
        for p in &self.programs {
            o.u64(p.len() as u64);
            o.0.extend_from_slice(p);
        }
        sections.push((SectionKind::Programs, o.0));
        if !self.host.is_empty() {
            sections.push((SectionKind::Host, self.host.as_bytes().to_vec()));
        }
        if !self.meta.is_empty() {
            let mut o = Out::default();
            o.count(self.meta.len(), "metadata entries")?;
            for (k, v) in &self.meta {
                o.str(k)?;
                o.str(v)?;
            }
            sections.push((SectionKind::Meta, o.0));
        }
        let raw: Vec<(u32, u32, Vec<u8>)> = sections
            .into_iter()
            .map(|(k, d)| (k as u32, if k.required() { SECTION_REQUIRED } else { 0 }, d))
            .collect();
        Ok(write_container_version(&raw, &self.target, PLAN_FORMAT_VERSION))
    }

    /// Parses and checks a plan blob (see the module documentation for what is checked).
    /// Programs are borrowed from `bytes`.
    ///
    /// Errors: a [`BlobError`] with the byte offset and section; a format-1 blob is refused
    /// as such.
    pub fn read(bytes: &'a [u8]) -> Result<PlanBlob<'a>, BlobError> {
        let (major, sections) = read_container(bytes)?;
        if major != PLAN_FORMAT_VERSION.0 {
            return Err(err(
                Some(8),
                None,
                format!(
                    "format version {major}.x is a single device program, not a plan blob \
                     (format {}.x)",
                    PLAN_FORMAT_VERSION.0
                ),
            ));
        }
        debug_assert_ne!(FORMAT_VERSION.0, PLAN_FORMAT_VERSION.0);
        let target = read_target(bytes, &sections)?;
        let get = |kind: SectionKind| sections.iter().find(|s| s.kind == kind);
        let cur = |kind: SectionKind| -> Result<Cur<'a>, BlobError> {
            get(kind)
                .map(|s| Cur::new(s.data, s.offset, Some(kind.name())))
                .ok_or_else(|| err(None, Some(kind.name()), "required section is missing"))
        };

        let mut c = cur(SectionKind::Plan)?;
        let n = c.count(4)?;
        let mut tensors = Vec::with_capacity(n);
        for _ in 0..n {
            let at = c.at();
            let name = c.str()?;
            let onnx_type = c.u8()?;
            if !ONNX_TYPES.contains(&onnx_type) {
                return Err(err(
                    Some(at),
                    Some("PLAN"),
                    format!("tensor `{name}` has unknown element type {onnx_type}"),
                ));
            }
            let rank = c.u8()?;
            let mut dims = Vec::with_capacity(usize::from(rank));
            for _ in 0..rank {
                let d = c.u64()?;
                if d > MAX_DIM {
                    return Err(c.fail(format!("tensor `{name}` has a dimension of {d}")));
                }
                dims.push(d);
            }
            let bytes = dims.iter().try_fold(elem_bytes(onnx_type), |a, d| a.checked_mul(*d));
            if bytes.is_none_or(|b| b > crate::verify::MAX_BUFFER_BYTES) {
                return Err(err(
                    Some(at),
                    Some("PLAN"),
                    format!(
                        "tensor `{name}` holds more than {} bytes (16 GiB, the buffer limit)",
                        crate::verify::MAX_BUFFER_BYTES
                    ),
                ));
            }
            if tensors.iter().any(|t: &PlanTensor| t.name == name) {
                return Err(err(Some(at), Some("PLAN"), format!("tensor `{name}` appears twice")));
            }
            tensors.push(PlanTensor { name, onnx_type, dims });
        }
        let index = |c: &mut Cur<'_>| -> Result<u32, BlobError> {
            let at = c.at();
            let i = c.u32()?;
            if i as usize >= tensors.len() {
                return Err(err(
                    Some(at),
                    Some("PLAN"),
                    format!("tensor index {i} is not below the {} tensors", tensors.len()),
                ));
            }
            Ok(i)
        };
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = c.count(4)?;
            for _ in 0..n {
                list.push(index(&mut c)?);
            }
        }
        let [inputs, outputs] = lists;
        let n = c.count(14)?;
        let mut steps = Vec::with_capacity(n);
        for _ in 0..n {
            let at = c.at();
            let kind = c.u8()?;
            let name = c.str()?;
            let program = c.u32()?;
            let kind = match (kind, program) {
                (0, program) => StepKind::Device { program },
                (1, 0) => StepKind::Host,
                (1, p) => return Err(c.fail(format!("host step `{name}` names program {p}"))),
                (k, _) => return Err(c.fail(format!("step `{name}` has unknown kind {k}"))),
            };
            let mut lists = [Vec::new(), Vec::new()];
            for list in &mut lists {
                let n = c.count(4)?;
                for _ in 0..n {
                    list.push(index(&mut c)?);
                }
            }
            let [si, so] = lists;
            let _ = at;
            steps.push(Step { kind, name, inputs: si, outputs: so });
        }
        c.finish()?;

        let mut c = cur(SectionKind::Programs)?;
        let n = c.count(8)?;
        let mut programs = Vec::with_capacity(n);
        for _ in 0..n {
            let len = c.u64()?;
            let len = usize::try_from(len).map_err(|_| c.fail("program length overflows"))?;
            programs.push(Cow::Borrowed(c.bytes(len)?));
        }
        c.finish()?;

        let host = match get(SectionKind::Host) {
            Some(s) => String::from_utf8(s.data.to_vec()).map_err(|e| {
                err(
                    Some(s.offset.saturating_add(e.utf8_error().valid_up_to() as u64)),
                    Some("HOST"),
                    "host module is not UTF-8",
                )
            })?,
            None => String::new(),
        };
        let mut meta = Vec::new();
        if let Some(s) = get(SectionKind::Meta) {
            let mut c = Cur::new(s.data, s.offset, Some("META"));
            let n = c.count(4)?;
            for _ in 0..n {
                meta.push((c.str()?, c.str()?));
            }
            c.finish()?;
        }
        let plan = PlanBlob { target, tensors, inputs, outputs, steps, programs, host, meta };
        plan.check_dataflow()?;
        Ok(plan)
    }

    /// Every tensor written once (by one step, or as a model input), read only after it is
    /// written, and every model output written; device steps name existing programs; host
    /// steps need a host module.
    fn check_dataflow(&self) -> Result<(), BlobError> {
        let plan_err = |m: String| err(None, Some("PLAN"), m);
        let mut written = vec![false; self.tensors.len()];
        for &i in &self.inputs {
            if std::mem::replace(&mut written[i as usize], true) {
                return Err(plan_err(format!(
                    "input `{}` is listed twice",
                    self.tensors[i as usize].name
                )));
            }
        }
        for (k, s) in self.steps.iter().enumerate() {
            match s.kind {
                StepKind::Device { program } if program as usize >= self.programs.len() => {
                    return Err(plan_err(format!(
                        "step {k} (`{}`) runs program {program} of {}",
                        s.name,
                        self.programs.len()
                    )));
                }
                StepKind::Host if self.host.is_empty() => {
                    return Err(plan_err(format!(
                        "step {k} calls host function `{}` but the blob has no HOST section",
                        s.name
                    )));
                }
                _ => {}
            }
            for &i in &s.inputs {
                if !written[i as usize] {
                    return Err(plan_err(format!(
                        "step {k} (`{}`) reads tensor `{}` before any step writes it",
                        s.name, self.tensors[i as usize].name
                    )));
                }
            }
            for &i in &s.outputs {
                if std::mem::replace(&mut written[i as usize], true) {
                    return Err(plan_err(format!(
                        "step {k} (`{}`) writes tensor `{}`, which is already written",
                        s.name, self.tensors[i as usize].name
                    )));
                }
            }
        }
        for &i in &self.outputs {
            if !written[i as usize] {
                return Err(plan_err(format!(
                    "output `{}` is never written",
                    self.tensors[i as usize].name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceConfig;

    fn sample() -> PlanBlob<'static> {
        let t = |name: &str, onnx_type| PlanTensor { name: name.into(), onnx_type, dims: vec![2] };
        PlanBlob {
            target: DeviceConfig::default_npu().target(),
            tensors: vec![t("x", 1), t("i", 7), t("y", 1)],
            inputs: vec![0],
            outputs: vec![2],
            steps: vec![
                Step {
                    kind: StepKind::Host,
                    name: "region_0".into(),
                    inputs: vec![0],
                    outputs: vec![1],
                },
                Step {
                    kind: StepKind::Device { program: 0 },
                    name: "region_1".into(),
                    inputs: vec![1],
                    outputs: vec![2],
                },
            ],
            programs: vec![Cow::Owned(vec![1, 2, 3])],
            host: "module {}".into(),
            meta: vec![("producer".into(), "test".into())],
        }
    }

    #[test]
    fn round_trips_and_old_readers_refuse_it_by_version() {
        let p = sample();
        let bytes = p.to_bytes().unwrap();
        assert!(is_plan(&bytes));
        assert_eq!(PlanBlob::read(&bytes).unwrap(), p);
        let e = crate::blob::Blob::read(&bytes).unwrap_err().to_string();
        assert!(e.contains("plan blob"), "{e}");
    }

    #[test]
    fn refuses_broken_dataflow_and_never_panics_on_corruption() {
        let mut p = sample();
        p.steps.swap(0, 1);
        let e = PlanBlob::read(&p.to_bytes().unwrap()).unwrap_err().to_string();
        assert!(e.contains("reads tensor `i` before any step writes it"), "{e}");
        let mut p = sample();
        p.host.clear();
        let e = PlanBlob::read(&p.to_bytes().unwrap()).unwrap_err().to_string();
        assert!(e.contains("no HOST section"), "{e}");
        // Every single-byte corruption is an error (checksums) and never a panic.
        let bytes = sample().to_bytes().unwrap();
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            assert!(PlanBlob::read(&b).is_err(), "byte {i}");
        }
    }
}
