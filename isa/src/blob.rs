//! The command blob (`NPB` format 1; format 2, the plan blob, is `crate::plan`): a versioned, self-describing container for a compiled
//! model, read by the runtime and written by the compiler.
//!
//! ```text
//! [header: 128 bytes][section table: count × 32 bytes][sections, each 64-byte aligned]
//! ```
//!
//! Header (little endian): magic `89 'N' 'P' 'B' 0D 0A 1A 0A`, u16 format major and minor, u32
//! header size (128), u64 file size, u32 flags (zero), u32 section count (≤ 64), u64 section
//! table offset, u16 ISA major and minor, u32 required features, 16-byte target fingerprint,
//! 32-byte SHA-256 of every byte after the header, 28 reserved bytes (zero), u32 CRC32C of the
//! header computed with this field zero.
//!
//! Section entry: u32 kind, u32 flags (bit 0: required), u64 offset, u64 size, u32 CRC32C of
//! the contents, u32 reserved (zero). A reader rejects unknown sections marked required and
//! skips other unknown ones, so later minor versions can add optional sections. A minor
//! version may also add a value to a field, which older readers refuse naming it (1.1: the
//! boolean interpretation of an I/O tensor).
//!
//! The reader checks every offset and size in subtraction form with 64-bit arithmetic, every
//! checksum, that sections neither overlap nor leave non-zero padding, and every cross-reference
//! (I/O tensors inside their segments, constant initialisers inside the constant section,
//! program table sizes). It never panics on any byte string.

#![deny(clippy::arithmetic_side_effects)]

use std::borrow::Cow;
use std::fmt;

use crc::{CRC_32_ISCSI, Crc, Table};
use sha2::{Digest, Sha256};

use crate::config::Target;
use crate::fields::Dtype;
use crate::inst::INST_BYTES;
use crate::program::{DESC_BYTES, EncodedProgram};

/// The magic bytes.
pub const MAGIC: [u8; 8] = [0x89, b'N', b'P', b'B', b'\r', b'\n', 0x1a, b'\n'];
/// Format version written, `(major, minor)`.
pub const FORMAT_VERSION: (u16, u16) = (1, 1);
/// Header size.
pub const HEADER_BYTES: usize = 128;
/// Section table entry size.
pub const SECTION_ENTRY_BYTES: usize = 32;
/// Most sections in one blob.
pub const MAX_SECTIONS: u32 = 64;
/// Section alignment (constants can be memory-mapped in place).
pub const SECTION_ALIGN: u64 = 64;
/// Section flag: a reader that does not know the kind must reject the blob.
pub const SECTION_REQUIRED: u32 = 1;

// Slice-by-16 tables: the checksums cover every constant byte on every load and write, and
// the byte-at-a-time table made them a third of loading resnet18.
const CRC32C: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

/// CRC32C (Castagnoli) of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    CRC32C.checksum(bytes)
}

/// Section kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum SectionKind {
    /// ISA version and hardware parameters the program was built for.
    Target = 1,
    /// DRAM segments: role, size, access, initialiser.
    Segments = 2,
    /// Input and output tensors.
    Io = 3,
    /// Program header: semaphore initial values, table sizes, run-time bound.
    Program = 4,
    /// Instructions, 16 bytes each.
    Text = 5,
    /// DMA descriptors, 32 bytes each.
    Dma = 6,
    /// Vector shapes, 32 bytes each.
    Shapes = 7,
    /// Constant data (weights, biases, tables).
    Const = 8,
    /// Key/value metadata.
    Meta = 9,
    /// Instruction ranges mapped back to source names.
    Debug = 10,
    /// Format 2: the execution plan (tensors, signature, ordered steps).
    Plan = 11,
    /// Format 2: the device programs, each a format-1 blob.
    Programs = 12,
    /// Format 2: the host code, one MLIR module as text.
    Host = 13,
}

impl SectionKind {
    const ALL: [SectionKind; 13] = [
        SectionKind::Target,
        SectionKind::Segments,
        SectionKind::Io,
        SectionKind::Program,
        SectionKind::Text,
        SectionKind::Dma,
        SectionKind::Shapes,
        SectionKind::Const,
        SectionKind::Meta,
        SectionKind::Debug,
        SectionKind::Plan,
        SectionKind::Programs,
        SectionKind::Host,
    ];

    /// The kind with number `v`, if this reader knows it.
    pub fn from_u32(v: u32) -> Option<SectionKind> {
        SectionKind::ALL.into_iter().find(|k| *k as u32 == v)
    }

    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Target => "TARGET",
            SectionKind::Segments => "SEGMENTS",
            SectionKind::Io => "IO",
            SectionKind::Program => "PROGRAM",
            SectionKind::Text => "TEXT",
            SectionKind::Dma => "DMA",
            SectionKind::Shapes => "SHAPES",
            SectionKind::Const => "CONST",
            SectionKind::Meta => "META",
            SectionKind::Debug => "DEBUG",
            SectionKind::Plan => "PLAN",
            SectionKind::Programs => "PROGRAMS",
            SectionKind::Host => "HOST",
        }
    }

    pub(crate) fn required(self) -> bool {
        !matches!(self, SectionKind::Const | SectionKind::Meta | SectionKind::Debug)
    }
}

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SegmentRole {
    /// Read-only constants, initialised from the CONST section.
    Const = 0,
    /// Scratch memory for intermediate tensors.
    Arena = 1,
    /// Model inputs.
    Input = 2,
    /// Model outputs.
    Output = 3,
    /// Both.
    InOut = 4,
}

impl SegmentRole {
    /// The access a segment of this role allows: constants and inputs are read, outputs
    /// written, arenas and in/out segments both.
    pub fn access(self) -> u8 {
        match self {
            SegmentRole::Const | SegmentRole::Input => ACCESS_READ,
            SegmentRole::Output => ACCESS_WRITE,
            SegmentRole::Arena | SegmentRole::InOut => ACCESS_READ | ACCESS_WRITE,
        }
    }

    const ALL: [SegmentRole; 5] = [
        SegmentRole::Const,
        SegmentRole::Arena,
        SegmentRole::Input,
        SegmentRole::Output,
        SegmentRole::InOut,
    ];

    /// Name used in listings.
    pub fn name(self) -> &'static str {
        match self {
            SegmentRole::Const => "const",
            SegmentRole::Arena => "arena",
            SegmentRole::Input => "input",
            SegmentRole::Output => "output",
            SegmentRole::InOut => "inout",
        }
    }
}

/// Access bit: the program reads the segment.
pub const ACCESS_READ: u8 = 1;
/// Access bit: the program writes the segment.
pub const ACCESS_WRITE: u8 = 2;

/// A DRAM segment the program expects to be bound at submit time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentDecl {
    /// Segment number, 0..16.
    pub id: u8,
    /// What it holds.
    pub role: SegmentRole,
    /// `ACCESS_*` bits.
    pub access: u8,
    /// Bytes.
    pub size: u64,
    /// For constant segments: offset and length of the initial contents in the CONST section
    /// (the rest of the segment is zero).
    pub init: Option<(u64, u64)>,
}

/// Direction of an I/O tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Written by the caller before the run.
    Input,
    /// Read by the caller after the run.
    Output,
}

/// Affine quantisation of an I/O tensor: `real = scale · (q − zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quant {
    /// Scale.
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
}

/// A model input or output: where it lives and how to read it.
#[derive(Clone, Debug, PartialEq)]
pub struct IoTensor {
    /// Name (from the model).
    pub name: String,
    /// Input or output.
    pub direction: Direction,
    /// The segment holding it.
    pub segment: u8,
    /// Byte offset in the segment.
    pub offset: u64,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first; elements are dense and row-major.
    pub dims: Vec<u64>,
    /// Quantisation, for integer tensors that represent real values.
    pub quant: Option<Quant>,
    /// Whether the elements are booleans: `u8` bytes holding 0 or 1 that the model types
    /// `bool` (ONNX's `tensor(bool)`, numpy's `|b1`), so hosts read and write them as such.
    /// Format 1.1; a 1.0 reader refuses it as an unknown interpretation kind.
    pub boolean: bool,
}

impl IoTensor {
    /// Bytes the tensor occupies, or `None` on overflow.
    pub fn byte_size(&self) -> Option<u64> {
        self.dims.iter().try_fold(u64::from(self.dtype.size()), |acc, d| acc.checked_mul(*d))
    }
}

/// An instruction range and the source operation it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugRange {
    /// First instruction.
    pub start: u32,
    /// One past the last instruction.
    pub end: u32,
    /// Source name (an ONNX node name, a tile label).
    pub name: String,
}

/// A container section as written: kind, flags, contents.
type OwnedSection<'a> = (u32, u32, Cow<'a, [u8]>);

/// A compiled model.
#[derive(Clone, Debug, PartialEq)]
pub struct Blob<'a> {
    /// What it was built for.
    pub target: Target,
    /// DRAM segments.
    pub segments: Vec<SegmentDecl>,
    /// Inputs and outputs, in signature order.
    pub io: Vec<IoTensor>,
    /// The program.
    pub program: EncodedProgram,
    /// The compiler's bound on the run time in cycles (the runtime recomputes its own).
    pub cycle_bound: u64,
    /// Constant data; borrowed from the file when read.
    pub consts: Cow<'a, [u8]>,
    /// Key/value metadata (compiler, options, source model hash; no timestamps).
    pub meta: Vec<(String, String)>,
    /// Debug ranges.
    pub debug: Vec<DebugRange>,
}

/// Why bytes are not a valid blob: what, and the byte offset and section where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobError {
    /// Absolute byte offset in the file, when one applies.
    pub offset: Option<u64>,
    /// The section, when one applies.
    pub section: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for BlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.section, self.offset) {
            (Some(s), Some(o)) => write!(f, "section {s}, byte {o:#x}: {}", self.message),
            (Some(s), None) => write!(f, "section {s}: {}", self.message),
            (None, Some(o)) => write!(f, "byte {o:#x}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for BlobError {}

pub(crate) fn err(
    offset: Option<u64>,
    section: Option<&'static str>,
    message: impl Into<String>,
) -> BlobError {
    BlobError { offset, section, message: message.into() }
}

/// A bounds-checked little-endian reader over one region of the file.
pub(crate) struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
    /// File offset of `buf[0]`.
    base: u64,
    section: Option<&'static str>,
}

impl<'a> Cur<'a> {
    pub(crate) fn new(buf: &'a [u8], base: u64, section: Option<&'static str>) -> Cur<'a> {
        Cur { buf, pos: 0, base, section }
    }

    pub(crate) fn at(&self) -> u64 {
        self.base.saturating_add(self.pos as u64)
    }

    pub(crate) fn fail(&self, message: impl Into<String>) -> BlobError {
        err(Some(self.at()), self.section, message)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], BlobError> {
        let left = self.buf.len().saturating_sub(self.pos);
        if n > left {
            return Err(self.fail(format!("truncated: needs {n} bytes, {left} left")));
        }
        let end = self.pos.saturating_add(n);
        let out = self.buf.get(self.pos..end).ok_or_else(|| self.fail("truncated"))?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BlobError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, BlobError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, BlobError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, BlobError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, BlobError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn zero(&mut self, n: usize, what: &str) -> Result<(), BlobError> {
        let at = self.at();
        if self.bytes(n)?.iter().any(|b| *b != 0) {
            return Err(err(Some(at), self.section, format!("{what} must be zero")));
        }
        Ok(())
    }
    pub(crate) fn str(&mut self) -> Result<String, BlobError> {
        let len = self.u16()?;
        let at = self.at();
        let bytes = self.bytes(usize::from(len))?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| err(Some(at), self.section, "string is not UTF-8"))
    }
    /// A count of entries of at least `entry` bytes each, checked against the bytes left so a
    /// forged count cannot make the reader allocate or loop far beyond the data.
    pub(crate) fn count(&mut self, entry: usize) -> Result<usize, BlobError> {
        let n = self.u32()? as usize;
        let left = self.buf.len().saturating_sub(self.pos);
        if n.checked_mul(entry).is_none_or(|need| need > left) {
            return Err(self.fail(format!("count {n} needs more bytes than the section has")));
        }
        Ok(n)
    }
    pub(crate) fn finish(&self) -> Result<(), BlobError> {
        if self.pos != self.buf.len() {
            return Err(self.fail(format!(
                "{} unexpected trailing bytes",
                self.buf.len().saturating_sub(self.pos)
            )));
        }
        Ok(())
    }
}

/// Little-endian writer.
#[derive(Default)]
pub(crate) struct Out(pub(crate) Vec<u8>);

impl Out {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn str(&mut self, s: &str) -> Result<(), BlobError> {
        let len = u16::try_from(s.len()).map_err(|_| {
            let start: String = s.chars().take(40).collect();
            err(
                None,
                None,
                format!("string `{start}...` of {} bytes is longer than 65535 bytes", s.len()),
            )
        })?;
        self.u16(len);
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
    pub(crate) fn count(&mut self, n: usize, what: &str) -> Result<(), BlobError> {
        let n = u32::try_from(n).map_err(|_| err(None, None, format!("too many {what}")))?;
        self.u32(n);
        Ok(())
    }
}

fn dtype_from(v: u8, cur: &Cur<'_>) -> Result<Dtype, BlobError> {
    Dtype::ALL.get(usize::from(v)).copied().ok_or_else(|| cur.fail(format!("unknown dtype {v}")))
}

impl<'a> Blob<'a> {
    /// The container's sections `(kind, flags, contents)` in order, the constants (borrowed)
    /// among them when there are any.
    fn raw_sections(&self) -> Result<Vec<OwnedSection<'_>>, BlobError> {
        // Owned sections built here; the constants are borrowed, not copied (they are most
        // of a large model's blob).
        let mut sections: Vec<(SectionKind, Cow<'_, [u8]>)> = Vec::new();

        sections.push((SectionKind::Target, target_section(&self.target)?.into()));

        let mut o = Out::default();
        o.count(self.segments.len(), "segments")?;
        for s in &self.segments {
            o.u8(s.id);
            o.u8(s.role as u8);
            o.u8(s.access);
            o.u8(u8::from(s.init.is_some()));
            o.u32(0);
            o.u64(s.size);
            let (off, len) = s.init.unwrap_or((0, 0));
            o.u64(off);
            o.u64(len);
        }
        sections.push((SectionKind::Segments, o.0.into()));

        let mut o = Out::default();
        o.count(self.io.len(), "I/O tensors")?;
        for t in &self.io {
            o.str(&t.name)?;
            o.u8(match t.direction {
                Direction::Input => 0,
                Direction::Output => 1,
            });
            o.u8(t.segment);
            o.u8(t.dtype as u8);
            o.u8(u8::try_from(t.dims.len())
                .map_err(|_| err(None, None, format!("tensor {} has too many dims", t.name)))?);
            o.u64(t.offset);
            for d in &t.dims {
                o.u64(*d);
            }
            // The interpretation kind: 0 plain, 1 quantised (scale, zero point), 2 boolean.
            match (t.quant, t.boolean) {
                (None, false) => o.u8(0),
                (Some(q), false) => {
                    o.u8(1);
                    o.u32(q.scale.to_bits());
                    o.u32(q.zero_point as u32);
                }
                (None, true) if t.dtype == Dtype::U8 => o.u8(2),
                _ => {
                    return Err(err(
                        None,
                        None,
                        format!("tensor {}: a boolean is a plain u8 tensor", t.name),
                    ));
                }
            }
        }
        sections.push((SectionKind::Io, o.0.into()));

        let p = &self.program;
        let mut o = Out::default();
        o.0.extend_from_slice(&p.sem_init);
        o.count(p.text.len() / INST_BYTES, "instructions")?;
        o.count(p.dma.len() / DESC_BYTES, "dma descriptors")?;
        o.count(p.shapes.len() / DESC_BYTES, "shapes")?;
        o.u32(0);
        o.u64(self.cycle_bound);
        sections.push((SectionKind::Program, o.0.into()));
        sections.push((SectionKind::Text, p.text.clone().into()));
        sections.push((SectionKind::Dma, p.dma.clone().into()));
        sections.push((SectionKind::Shapes, p.shapes.clone().into()));
        if !self.consts.is_empty() {
            sections.push((SectionKind::Const, Cow::Borrowed(self.consts.as_ref())));
        }
        if !self.meta.is_empty() {
            let mut o = Out::default();
            o.count(self.meta.len(), "metadata entries")?;
            for (k, v) in &self.meta {
                o.str(k)?;
                o.str(v)?;
            }
            sections.push((SectionKind::Meta, o.0.into()));
        }
        if !self.debug.is_empty() {
            let mut o = Out::default();
            o.count(self.debug.len(), "debug ranges")?;
            for d in &self.debug {
                o.u32(d.start);
                o.u32(d.end);
                o.str(&d.name)?;
            }
            sections.push((SectionKind::Debug, o.0.into()));
        }
        let raw: Vec<(u32, u32, Cow<'_, [u8]>)> = sections
            .into_iter()
            .map(|(kind, data)| {
                (kind as u32, if kind.required() { SECTION_REQUIRED } else { 0 }, data)
            })
            .collect();
        Ok(raw)
    }

    /// Serialises the blob.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BlobError> {
        Ok(write_container(&self.raw_sections()?, &self.target))
    }

    /// Checks that the blob serialises (every count, string and rank within the format's
    /// fields) without building it: what [`Blob::to_bytes`] and [`Blob::write_to`] would
    /// refuse.
    pub fn check(&self) -> Result<(), BlobError> {
        self.raw_sections().map(|_| ())
    }

    /// Writes the blob to `w` from its current position, as [`Blob::to_bytes`] lays it out,
    /// with the constant section's contents taken from `consts` (when given, `self.consts`
    /// must be empty) so that a large one is produced piece by piece rather than held
    /// ([`write_container_to`]). Returns the bytes written.
    ///
    /// Errors: as [`Blob::to_bytes`]; both constant sources at once; the writer's errors, with
    /// their message.
    pub fn write_to<W: std::io::Write + std::io::Seek>(
        &self,
        consts: Option<&dyn SectionSource>,
        w: &mut W,
    ) -> Result<u64, BlobError> {
        let raw = self.raw_sections()?;
        let mut sections: Vec<(u32, u32, &dyn SectionSource)> =
            raw.iter().map(|(k, f, d)| (*k, *f, d as &dyn SectionSource)).collect();
        if let Some(c) = consts.filter(|c| !c.is_empty()) {
            if !self.consts.is_empty() {
                return Err(err(None, Some("CONST"), "constants given twice"));
            }
            let kind = SectionKind::Const as u32;
            let at = sections.iter().position(|(k, _, _)| *k > kind).unwrap_or(sections.len());
            let flags = if SectionKind::Const.required() { SECTION_REQUIRED } else { 0 };
            sections.insert(at, (kind, flags, c));
        }
        write_container_to(w, &sections, &self.target, FORMAT_VERSION)
            .map_err(|e| err(None, None, format!("writing the blob: {e}")))
    }

    /// Parses and checks a blob. Constants are borrowed from `bytes`.
    pub fn read(bytes: &'a [u8]) -> Result<Blob<'a>, BlobError> {
        let (major, sections) = read_container(bytes)?;
        if major != FORMAT_VERSION.0 {
            return Err(err(
                Some(8),
                None,
                format!(
                    "format version {major}.x is a plan blob (device programs with host code), \
                     not a single device program: load it as a plan"
                ),
            ));
        }
        let get = |kind: SectionKind| sections.iter().find(|s| s.kind == kind);
        let cur = |kind: SectionKind| -> Option<Cur<'a>> {
            get(kind).map(|s| Cur::new(s.data, s.offset, Some(kind.name())))
        };
        let missing =
            |kind: SectionKind| err(None, Some(kind.name()), "required section is missing");

        let target = read_target(bytes, &sections)?;

        let consts_section = get(SectionKind::Const);
        let consts_len = consts_section.map_or(0, |s| s.data.len() as u64);
        let mut c = cur(SectionKind::Segments).ok_or_else(|| missing(SectionKind::Segments))?;
        let n = c.count(32)?;
        let mut segments: Vec<SegmentDecl> = Vec::with_capacity(n);
        for _ in 0..n {
            let at = c.at();
            let id = c.u8()?;
            let role_raw = c.u8()?;
            let access = c.u8()?;
            let has_init = c.u8()?;
            c.zero(4, "reserved segment bytes")?;
            let size = c.u64()?;
            let init_off = c.u64()?;
            let init_len = c.u64()?;
            let fail = |m: String| err(Some(at), Some("SEGMENTS"), m);
            if id >= 16 {
                return Err(fail(format!("segment id {id} is not below 16")));
            }
            if segments.iter().any(|s| s.id == id) {
                return Err(fail(format!("segment {id} is declared twice")));
            }
            let role = *SegmentRole::ALL
                .get(usize::from(role_raw))
                .ok_or_else(|| fail(format!("segment {id} has unknown role {role_raw}")))?;
            if access & !(ACCESS_READ | ACCESS_WRITE) != 0 {
                return Err(fail(format!("segment {id} has unknown access bits {access:#x}")));
            }
            if role == SegmentRole::Const && access & ACCESS_WRITE != 0 {
                return Err(fail(format!("constant segment {id} is writable")));
            }
            let init = match has_init {
                0 if init_off == 0 && init_len == 0 => None,
                0 => {
                    return Err(fail(format!(
                        "segment {id} has an initialiser range without its flag"
                    )));
                }
                1 if role != SegmentRole::Const => {
                    return Err(fail(format!(
                        "segment {id} is {} but has an initialiser",
                        role.name()
                    )));
                }
                1 => {
                    if init_off > consts_len
                        || init_len > consts_len.saturating_sub(init_off)
                        || init_len > size
                    {
                        return Err(fail(format!(
                            "segment {id} initialiser {init_off:#x}+{init_len:#x} lies outside the {consts_len}-byte CONST section or the {size}-byte segment"
                        )));
                    }
                    Some((init_off, init_len))
                }
                other => {
                    return Err(fail(format!("segment {id} has invalid initialiser flag {other}")));
                }
            };
            segments.push(SegmentDecl { id, role, access, size, init });
        }
        c.finish()?;

        let mut c = cur(SectionKind::Io).ok_or_else(|| missing(SectionKind::Io))?;
        let n = c.count(14)?;
        let mut io = Vec::with_capacity(n);
        for _ in 0..n {
            let at = c.at();
            let name = c.str()?;
            let direction = match c.u8()? {
                0 => Direction::Input,
                1 => Direction::Output,
                other => {
                    return Err(c.fail(format!("tensor `{name}` has unknown direction {other}")));
                }
            };
            let segment = c.u8()?;
            let dtype_raw = c.u8()?;
            let dtype = dtype_from(dtype_raw, &c)?;
            let rank = c.u8()?;
            let offset = c.u64()?;
            let mut dims = Vec::with_capacity(usize::from(rank));
            for _ in 0..rank {
                let d = c.u64()?;
                // No segment holds more bytes than this, so neither can a dimension (even of
                // an empty tensor, whose other dimensions would multiply to nothing).
                if d > crate::verify::SEGMENT_SPACE {
                    return Err(c.fail(format!(
                        "tensor `{name}` has a dimension of {d}; at most {} fit a segment",
                        crate::verify::SEGMENT_SPACE
                    )));
                }
                dims.push(d);
            }
            let kind_at = c.at();
            let (quant, boolean) = match c.u8()? {
                0 => (None, false),
                1 => (
                    Some(Quant { scale: f32::from_bits(c.u32()?), zero_point: c.u32()? as i32 }),
                    false,
                ),
                2 if dtype == Dtype::U8 => (None, true),
                2 => {
                    return Err(err(
                        Some(kind_at),
                        Some("IO"),
                        format!("tensor `{name}` is boolean but its elements are {dtype}, not u8"),
                    ));
                }
                other => {
                    return Err(
                        c.fail(format!("tensor `{name}` has unknown interpretation kind {other}"))
                    );
                }
            };
            let t = IoTensor { name, direction, segment, offset, dtype, dims, quant, boolean };
            let fail = |m: String| err(Some(at), Some("IO"), m);
            let seg = segments.iter().find(|s| s.id == t.segment).ok_or_else(|| {
                fail(format!("tensor `{}` is in undeclared segment {}", t.name, t.segment))
            })?;
            let role_ok = match t.direction {
                Direction::Input => matches!(seg.role, SegmentRole::Input | SegmentRole::InOut),
                Direction::Output => matches!(seg.role, SegmentRole::Output | SegmentRole::InOut),
            };
            if !role_ok {
                return Err(fail(format!(
                    "tensor `{}` is in {} segment {}",
                    t.name,
                    seg.role.name(),
                    seg.id
                )));
            }
            let size =
                t.byte_size().ok_or_else(|| fail(format!("tensor `{}` size overflows", t.name)))?;
            if t.offset > seg.size || size > seg.size.saturating_sub(t.offset) {
                return Err(fail(format!(
                    "tensor `{}` ({size} bytes at {:#x}) does not fit its {}-byte segment {}",
                    t.name, t.offset, seg.size, seg.id
                )));
            }
            if io.iter().any(|o: &IoTensor| o.name == t.name && o.direction == t.direction) {
                return Err(fail(format!("tensor `{}` is declared twice", t.name)));
            }
            io.push(t);
        }
        c.finish()?;

        let mut c = cur(SectionKind::Program).ok_or_else(|| missing(SectionKind::Program))?;
        let sem_init: [u8; 16] = c.array()?;
        let counts = [c.u32()?, c.u32()?, c.u32()?];
        c.zero(4, "reserved program bytes")?;
        let cycle_bound = c.u64()?;
        c.finish()?;
        let mut tables = [Vec::new(), Vec::new(), Vec::new()];
        for ((kind, entry), (count, table)) in [
            (SectionKind::Text, INST_BYTES),
            (SectionKind::Dma, DESC_BYTES),
            (SectionKind::Shapes, DESC_BYTES),
        ]
        .into_iter()
        .zip(counts.iter().zip(tables.iter_mut()))
        {
            let s = get(kind).ok_or_else(|| missing(kind))?;
            let expected = (*count as usize).checked_mul(entry);
            if expected != Some(s.data.len()) {
                return Err(err(
                    Some(s.offset),
                    Some(kind.name()),
                    format!(
                        "holds {} bytes but PROGRAM declares {count} entries of {entry}",
                        s.data.len()
                    ),
                ));
            }
            *table = s.data.to_vec();
        }
        let [text, dma, shapes] = tables;
        let program = EncodedProgram { text, dma, shapes, sem_init };

        let mut meta = Vec::new();
        if let Some(mut c) = cur(SectionKind::Meta) {
            let n = c.count(4)?;
            for _ in 0..n {
                meta.push((c.str()?, c.str()?));
            }
            c.finish()?;
        }
        let mut debug = Vec::new();
        if let Some(mut c) = cur(SectionKind::Debug) {
            let n = c.count(10)?;
            let n_insts = counts[0];
            for _ in 0..n {
                let at = c.at();
                let (start, end, name) = (c.u32()?, c.u32()?, c.str()?);
                if start > end || end > n_insts {
                    return Err(err(
                        Some(at),
                        Some("DEBUG"),
                        format!(
                            "range {start}..{end} of `{name}` is outside the {n_insts} instructions"
                        ),
                    ));
                }
                debug.push(DebugRange { start, end, name });
            }
            c.finish()?;
        }
        let consts = Cow::Borrowed(consts_section.map_or(&[][..], |s| s.data));
        Ok(Blob { target, segments, io, program, cycle_bound, consts, meta, debug })
    }

    /// The initial contents of constant segment `id`, if it has any.
    pub fn segment_init(&self, id: u8) -> Option<&[u8]> {
        let seg = self.segments.iter().find(|s| s.id == id)?;
        let (off, len) = seg.init?;
        let start = usize::try_from(off).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.consts.get(start..end)
    }
}

/// The TARGET section's contents for `t`.
pub(crate) fn target_section(t: &Target) -> Result<Vec<u8>, BlobError> {
    let mut o = Out::default();
    o.u16(t.isa_major);
    o.u16(t.isa_minor);
    for v in [t.array_dim, t.vx_lanes, t.spad_bytes, t.acc_bytes, t.features] {
        o.u32(v);
    }
    o.str(&t.config_name)?;
    Ok(o.0)
}

/// The TARGET section of a container, checked against the header's ISA version, features
/// and fingerprint.
pub(crate) fn read_target(bytes: &[u8], sections: &[RawSection<'_>]) -> Result<Target, BlobError> {
    let s = sections
        .iter()
        .find(|s| s.kind == SectionKind::Target)
        .ok_or_else(|| err(None, Some("TARGET"), "required section is missing"))?;
    let mut c = Cur::new(s.data, s.offset, Some("TARGET"));
    let target = Target {
        isa_major: c.u16()?,
        isa_minor: c.u16()?,
        array_dim: c.u32()?,
        vx_lanes: c.u32()?,
        spad_bytes: c.u32()?,
        acc_bytes: c.u32()?,
        features: c.u32()?,
        config_name: c.str()?,
    };
    c.finish()?;
    let h_isa = (read_u16(bytes, 40), read_u16(bytes, 42));
    if (target.isa_major, target.isa_minor) != h_isa || read_u32(bytes, 44) != target.features {
        return Err(err(
            Some(40),
            Some("TARGET"),
            "ISA version or features differ from the header",
        ));
    }
    if bytes.get(48..64) != Some(&target.fingerprint()[..]) {
        return Err(err(
            Some(48),
            Some("TARGET"),
            "target fingerprint does not match the target parameters",
        ));
    }
    Ok(target)
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at.saturating_add(2)) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at.saturating_add(4)) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn align_up(v: usize) -> usize {
    v.div_ceil(SECTION_ALIGN as usize).saturating_mul(SECTION_ALIGN as usize)
}

/// Lays out a container from raw sections `(kind, flags, contents)`: header, table, 64-byte
/// aligned sections, checksums and content hash. [`Blob::to_bytes`] uses it; tests use it to
/// build containers with sections this version does not know.
pub fn write_container<D: AsRef<[u8]>>(sections: &[(u32, u32, D)], target: &Target) -> Vec<u8> {
    write_container_version(sections, target, FORMAT_VERSION)
}

/// As [`write_container`], with format version `version` in the header (format 2 is the
/// plan blob, `crate::plan`).
pub fn write_container_version<D: AsRef<[u8]>>(
    sections: &[(u32, u32, D)],
    target: &Target,
    version: (u16, u16),
) -> Vec<u8> {
    let lens: Vec<usize> = sections.iter().map(|(_, _, d)| d.as_ref().len()).collect();
    let (offsets, file_size) = layout(&lens);
    let mut out = vec![0u8; file_size];
    for (i, ((kind, flags, data), off)) in sections.iter().zip(&offsets).enumerate() {
        let data = data.as_ref();
        out[*off..off.saturating_add(data.len())].copy_from_slice(data);
        let entry_at = HEADER_BYTES.saturating_add(i.saturating_mul(SECTION_ENTRY_BYTES));
        let e = table_entry(*kind, *flags, *off, data.len(), crc32c(data));
        out[entry_at..entry_at.saturating_add(SECTION_ENTRY_BYTES)].copy_from_slice(&e);
    }
    let digest: [u8; 32] = Sha256::digest(&out[HEADER_BYTES..]).into();
    let h = header(version, target, file_size, sections.len(), &digest);
    out[..HEADER_BYTES].copy_from_slice(&h);
    out
}

/// A section's contents produced piece by piece, so that a section too large to want in memory
/// twice (a model's packed weights) can be written without being held whole:
/// [`write_container_to`] asks for the contents twice (checksums, then hash and write), and
/// both times they must be the same `len` bytes.
pub trait SectionSource {
    /// Bytes in all.
    fn len(&self) -> u64;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Calls `sink` with the contents in order, in pieces of any size; stops at the first error
    /// `sink` returns and returns it.
    fn emit(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()>;
}

impl<T: AsRef<[u8]>> SectionSource for T {
    fn len(&self) -> u64 {
        self.as_ref().len() as u64
    }
    fn emit(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        sink(self.as_ref())
    }
}

/// Writes a container as [`write_container_version`] lays it out, to `w` from its current
/// position, without holding the sections: a first pass over each source computes its CRC32C
/// (the section table needs them, and the header's SHA-256 covers the table), a second hashes
/// and writes it; the header goes last, by seeking back. Returns the bytes written; `w` is left
/// at their end.
///
/// Errors: the writer's, and [`std::io::ErrorKind::InvalidData`] when a source emits other than
/// its `len` bytes or different bytes the second time.
pub fn write_container_to<W: std::io::Write + std::io::Seek>(
    w: &mut W,
    sections: &[(u32, u32, &dyn SectionSource)],
    target: &Target,
    version: (u16, u16),
) -> std::io::Result<u64> {
    use std::io::{Error, ErrorKind, SeekFrom};
    let lens = sections
        .iter()
        .map(|(_, _, d)| usize::try_from(d.len()))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| Error::new(ErrorKind::InvalidData, "a section larger than memory"))?;
    let (offsets, file_size) = layout(&lens);
    // One pass: each section's checksum and length, checked against what it declared.
    let checked = |i: usize, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>| {
        let mut digest = CRC32C.digest();
        let mut seen = 0usize;
        sections[i].2.emit(&mut |piece| {
            digest.update(piece);
            seen = seen.saturating_add(piece.len());
            sink(piece)
        })?;
        if seen != lens[i] {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("section {i} emitted {seen} bytes, not the {} it declared", lens[i]),
            ));
        }
        Ok(digest.finalize())
    };
    let mut table = Vec::with_capacity(sections.len().saturating_mul(SECTION_ENTRY_BYTES));
    let mut crcs = Vec::with_capacity(sections.len());
    for (i, ((kind, flags, _), off)) in sections.iter().zip(&offsets).enumerate() {
        let crc = checked(i, &mut |_| Ok(()))?;
        crcs.push(crc);
        table.extend_from_slice(&table_entry(*kind, *flags, *off, lens[i], crc));
    }
    let base = w.stream_position()?;
    w.write_all(&[0u8; HEADER_BYTES])?;
    let mut sha = Sha256::new();
    let mut at = HEADER_BYTES.saturating_add(table.len());
    sha.update(&table);
    w.write_all(&table)?;
    let zeros = [0u8; SECTION_ALIGN as usize];
    for (i, off) in offsets.iter().enumerate() {
        let pad = &zeros[..off.saturating_sub(at)];
        sha.update(pad);
        w.write_all(pad)?;
        let crc = checked(i, &mut |piece| {
            sha.update(piece);
            w.write_all(piece)
        })?;
        if crc != crcs[i] {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("section {i} emitted different bytes the second time"),
            ));
        }
        at = off.saturating_add(lens[i]);
    }
    let digest: [u8; 32] = sha.finalize().into();
    w.seek(SeekFrom::Start(base))?;
    w.write_all(&header(version, target, file_size, sections.len(), &digest))?;
    w.seek(SeekFrom::Start(base.saturating_add(file_size as u64)))?;
    Ok(file_size as u64)
}

/// Section offsets (after the header and table, each 64-byte aligned) and the file size, for
/// sections of `lens` bytes.
fn layout(lens: &[usize]) -> (Vec<usize>, usize) {
    let table_end = HEADER_BYTES.saturating_add(lens.len().saturating_mul(SECTION_ENTRY_BYTES));
    let mut offsets = Vec::with_capacity(lens.len());
    let mut at = align_up(table_end);
    for len in lens {
        offsets.push(at);
        at = align_up(at.saturating_add(*len));
    }
    let file_size = offsets.last().zip(lens.last()).map_or(at, |(o, l)| o.saturating_add(*l));
    (offsets, file_size)
}

/// One section table entry.
fn table_entry(kind: u32, flags: u32, off: usize, len: usize, crc: u32) -> Vec<u8> {
    let mut e = Out::default();
    e.u32(kind);
    e.u32(flags);
    e.u64(off as u64);
    e.u64(len as u64);
    e.u32(crc);
    e.u32(0);
    e.0
}

/// The header, its own CRC32C included; `digest` is the SHA-256 of everything after it.
fn header(
    version: (u16, u16),
    target: &Target,
    file_size: usize,
    sections: usize,
    digest: &[u8; 32],
) -> Vec<u8> {
    let mut h = Out::default();
    h.0.extend_from_slice(&MAGIC);
    h.u16(version.0);
    h.u16(version.1);
    h.u32(HEADER_BYTES as u32);
    h.u64(file_size as u64);
    h.u32(0);
    h.u32(sections as u32);
    h.u64(HEADER_BYTES as u64);
    h.u16(target.isa_major);
    h.u16(target.isa_minor);
    h.u32(target.features);
    h.0.extend_from_slice(&target.fingerprint());
    h.0.extend_from_slice(digest);
    h.0.resize(HEADER_BYTES, 0);
    let crc = crc32c(&h.0);
    h.0[124..128].copy_from_slice(&crc.to_le_bytes());
    h.0
}

/// One section as found in the file.
pub(crate) struct RawSection<'a> {
    pub(crate) kind: SectionKind,
    pub(crate) offset: u64,
    pub(crate) data: &'a [u8],
}

/// The format major versions this reader knows: 1 (one device program, [`Blob`]) and 2 (a
/// plan of device programs and host code, `crate::plan`).
pub const KNOWN_MAJORS: [u16; 2] = [FORMAT_VERSION.0, crate::plan::PLAN_FORMAT_VERSION.0];

/// Checks a container (header, table, checksums, layout) and returns its format major version
/// and sections.
pub(crate) fn read_container(bytes: &[u8]) -> Result<(u16, Vec<RawSection<'_>>), BlobError> {
    let len = bytes.len() as u64;
    let mut h = Cur::new(bytes, 0, None);
    if bytes.len() < HEADER_BYTES {
        return Err(err(
            Some(0),
            None,
            format!("truncated: {len} bytes, less than the {HEADER_BYTES}-byte header"),
        ));
    }
    if h.array::<8>()? != MAGIC {
        return Err(err(Some(0), None, "not a command blob (bad magic)"));
    }
    let (major, minor) = (h.u16()?, h.u16()?);
    if !KNOWN_MAJORS.contains(&major) {
        return Err(err(
            Some(8),
            None,
            format!(
                "format version {major}.{minor} is not supported (this reader knows 1.x and 2.x)"
            ),
        ));
    }
    if h.u32()? as usize != HEADER_BYTES {
        return Err(err(Some(12), None, "header size is not 128"));
    }
    let file_size = h.u64()?;
    if file_size != len {
        return Err(err(
            Some(16),
            None,
            format!("header says {file_size} bytes but the file has {len} (truncated or padded)"),
        ));
    }
    let mut zeroed = [0u8; HEADER_BYTES];
    zeroed.copy_from_slice(&bytes[..HEADER_BYTES]);
    zeroed[124..128].fill(0);
    if crc32c(&zeroed) != read_u32(bytes, 124) {
        return Err(err(Some(124), None, "header checksum mismatch"));
    }
    if h.u32()? != 0 {
        return Err(err(Some(24), None, "unknown header flags"));
    }
    let count = h.u32()?;
    if count > MAX_SECTIONS {
        return Err(err(Some(28), None, format!("{count} sections, more than {MAX_SECTIONS}")));
    }
    let table_off = h.u64()?;
    let table_len = u64::from(count).saturating_mul(SECTION_ENTRY_BYTES as u64);
    if table_off < HEADER_BYTES as u64
        || table_off > len
        || table_len > len.saturating_sub(table_off)
    {
        return Err(err(
            Some(32),
            None,
            format!("section table at {table_off:#x} ({table_len} bytes) lies outside the file"),
        ));
    }
    let isa_major = h.u16()?;
    if isa_major != crate::ISA_VERSION.0 {
        return Err(err(
            Some(40),
            None,
            format!(
                "ISA major version {isa_major} is not supported (this reader knows {})",
                crate::ISA_VERSION.0
            ),
        ));
    }
    let mut z = Cur::new(bytes.get(96..124).unwrap_or(&[]), 96, None);
    z.zero(28, "reserved header bytes")?;

    // Offsets fit in usize here: they are at most `len`, the length of a slice.
    let table_start = table_off as usize;
    let mut t = Cur::new(bytes.get(table_start..).unwrap_or(&[]), table_off, Some("section table"));
    let mut sections: Vec<RawSection<'_>> = Vec::new();
    let mut ranges: Vec<(u64, u64, &'static str)> = Vec::new();
    for _ in 0..count {
        let at = t.at();
        let kind_raw = t.u32()?;
        let flags = t.u32()?;
        let offset = t.u64()?;
        let size = t.u64()?;
        let crc = t.u32()?;
        t.zero(4, "reserved section entry bytes")?;
        let kind = SectionKind::from_u32(kind_raw);
        let name = kind.map_or("unknown", SectionKind::name);
        let fail = |m: String| err(Some(at), Some(name), m);
        if flags & !SECTION_REQUIRED != 0 {
            return Err(fail(format!("unknown section flags {flags:#x}")));
        }
        if offset > len || size > len.saturating_sub(offset) {
            return Err(fail(format!(
                "section {offset:#x}+{size:#x} lies outside the {len}-byte file"
            )));
        }
        if offset % SECTION_ALIGN != 0 {
            return Err(fail(format!(
                "section offset {offset:#x} is not {SECTION_ALIGN}-byte aligned"
            )));
        }
        let data = &bytes[offset as usize..(offset as usize).saturating_add(size as usize)];
        if crc32c(data) != crc {
            return Err(err(Some(offset), Some(name), "checksum mismatch (corrupted contents)"));
        }
        ranges.push((offset, size, name));
        match kind {
            Some(kind) => {
                if sections.iter().any(|s| s.kind == kind) {
                    return Err(fail("section appears twice".into()));
                }
                sections.push(RawSection { kind, offset, data });
            }
            None if flags & SECTION_REQUIRED != 0 => {
                return Err(fail(format!("unknown section kind {kind_raw} is marked required")));
            }
            None => {}
        }
    }
    // Sections may not overlap each other, the header or the table, and padding must be zero
    // (so every byte of the file is accounted for by a checksum).
    ranges.sort_unstable();
    let mut covered_to = table_off.saturating_add(table_len);
    if table_off != HEADER_BYTES as u64 {
        return Err(err(Some(32), None, "section table must follow the header"));
    }
    for (offset, size, name) in &ranges {
        if *offset < covered_to && *size > 0 {
            return Err(err(
                Some(*offset),
                Some(name),
                "section overlaps the header, the table or another section",
            ));
        }
        let gap = bytes.get(covered_to as usize..(*offset).max(covered_to) as usize).unwrap_or(&[]);
        if let Some(i) = gap.iter().position(|b| *b != 0) {
            return Err(err(
                Some(covered_to.saturating_add(i as u64)),
                None,
                "padding between sections is not zero",
            ));
        }
        covered_to = covered_to.max(offset.saturating_add(*size));
    }
    if covered_to != len {
        return Err(err(Some(covered_to), None, "bytes after the last section"));
    }
    if Sha256::digest(&bytes[HEADER_BYTES..])[..] != bytes[64..96] {
        return Err(err(Some(64), None, "content hash mismatch"));
    }
    Ok((major, sections))
}
