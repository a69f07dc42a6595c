//! A program: the instruction stream plus the two tables its instructions index (DMA
//! descriptors and vector shapes) and the semaphores' initial values.

use std::fmt;

use crate::inst::{DecodeError, EncodeError, Inst, decode_all, encode_all};

/// Largest number of instructions in one program (16 MiB of text).
pub const MAX_INSTS: usize = 1 << 20;
/// Largest number of DMA descriptors (the index field is 16 bits).
pub const MAX_DMA_DESCS: usize = 1 << 16;
/// Largest number of vector shapes (the index field is 16 bits).
pub const MAX_SHAPES: usize = 1 << 16;
/// Most elements one vector instruction may process (larger work is split by the compiler;
/// the bound keeps every instruction's working set and run time finite in practice).
pub const MAX_VX_ELEMENTS: u64 = 1 << 24;

/// Largest extent of a vector shape's dimension (`cols`, `rows` and `planes` are `u16`).
pub const MAX_SHAPE_DIM: usize = u16::MAX as usize;

/// Largest row or plane count of a DMA descriptor (`y_count` and `z_count` are `u16`).
pub const MAX_DMA_COUNT: u64 = u16::MAX as u64;
/// Bytes per DMA descriptor and per shape.
pub const DESC_BYTES: usize = 32;

/// A 3-D block transfer. The *far* side is DRAM for loads and stores and the source for
/// on-chip copies; the *near* side is local memory (the destination of copies and fills).
/// Element `(z, y)` is the `x_bytes` run at `far + z·z_stride + y·y_stride` and at
/// `near + z·near_z_pitch + y·near_y_pitch`. Strides are unsigned by design: extents are then a
/// single checked sum, with none of the wrap-around reasoning signed strides need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DmaDesc {
    /// Bytes per contiguous run, at least 1.
    pub x_bytes: u32,
    /// Runs per plane, at least 1.
    pub y_count: u16,
    /// Planes, at least 1.
    pub z_count: u16,
    /// Far-side bytes between runs.
    pub y_stride: u64,
    /// Far-side bytes between planes.
    pub z_stride: u64,
    /// Near-side bytes between runs.
    pub near_y_pitch: u32,
    /// Near-side bytes between planes.
    pub near_z_pitch: u32,
}

/// End (exclusive) of a 3-D block relative to its base, with checked arithmetic.
fn block_extent(x: u64, y_count: u16, y_step: u64, z_count: u16, z_step: u64) -> Option<u64> {
    let y_span = u64::from(y_count.checked_sub(1)?).checked_mul(y_step)?;
    let z_span = u64::from(z_count.checked_sub(1)?).checked_mul(z_step)?;
    x.checked_add(y_span)?.checked_add(z_span)
}

impl DmaDesc {
    /// Bytes the far side spans from its base; `None` for zero counts or overflow.
    pub fn far_extent(&self) -> Option<u64> {
        if self.x_bytes == 0 {
            return None;
        }
        block_extent(self.x_bytes.into(), self.y_count, self.y_stride, self.z_count, self.z_stride)
    }

    /// Bytes the near side spans from its base; `None` for zero counts or overflow.
    pub fn near_extent(&self) -> Option<u64> {
        if self.x_bytes == 0 {
            return None;
        }
        block_extent(
            self.x_bytes.into(),
            self.y_count,
            self.near_y_pitch.into(),
            self.z_count,
            self.near_z_pitch.into(),
        )
    }

    /// Bytes moved.
    pub fn bytes(&self) -> u64 {
        u64::from(self.x_bytes) * u64::from(self.y_count) * u64::from(self.z_count)
    }

    /// The 32-byte little-endian encoding.
    pub fn to_bytes(&self) -> [u8; DESC_BYTES] {
        let mut b = [0u8; DESC_BYTES];
        b[0..4].copy_from_slice(&self.x_bytes.to_le_bytes());
        b[4..6].copy_from_slice(&self.y_count.to_le_bytes());
        b[6..8].copy_from_slice(&self.z_count.to_le_bytes());
        b[8..16].copy_from_slice(&self.y_stride.to_le_bytes());
        b[16..24].copy_from_slice(&self.z_stride.to_le_bytes());
        b[24..28].copy_from_slice(&self.near_y_pitch.to_le_bytes());
        b[28..32].copy_from_slice(&self.near_z_pitch.to_le_bytes());
        b
    }

    /// Decodes 32 bytes (every bit pattern is a descriptor; the validator judges it).
    pub fn from_bytes(b: &[u8; DESC_BYTES]) -> DmaDesc {
        let r = Le(b);
        DmaDesc {
            x_bytes: r.u32(0),
            y_count: r.u16(4),
            z_count: r.u16(6),
            y_stride: r.u64(8),
            z_stride: r.u64(16),
            near_y_pitch: r.u32(24),
            near_z_pitch: r.u32(28),
        }
    }
}

/// Flag: `src0` reads one element per row, broadcast across the columns.
pub const SHAPE_SRC0_COL_BROADCAST: u16 = 1 << 0;
/// Flag: `src1` reads one element per row, broadcast across the columns.
pub const SHAPE_SRC1_COL_BROADCAST: u16 = 1 << 1;
const SHAPE_FLAGS: u16 = SHAPE_SRC0_COL_BROADCAST | SHAPE_SRC1_COL_BROADCAST;

/// The iteration space of a vector instruction: `planes × rows × cols` elements, with a row
/// and a plane stride (in bytes) per operand. Columns are contiguous elements, or a single
/// broadcast element when the operand's column-broadcast flag is set; a zero row or plane
/// stride broadcasts along that axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Elements per row, at least 1.
    pub cols: u16,
    /// Rows per plane, at least 1.
    pub rows: u16,
    /// Planes, at least 1.
    pub planes: u16,
    /// `SHAPE_*` flags; other bits are reserved.
    pub flags: u16,
    /// Destination bytes between rows.
    pub dst_row: u32,
    /// First source's bytes between rows.
    pub src0_row: u32,
    /// Second source's bytes between rows.
    pub src1_row: u32,
    /// Destination bytes between planes.
    pub dst_plane: u32,
    /// First source's bytes between planes.
    pub src0_plane: u32,
    /// Second source's bytes between planes.
    pub src1_plane: u32,
}

/// One operand's walk through a shape: strides in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    /// Bytes between consecutive columns (the element size, or 0 when broadcast).
    pub col: u64,
    /// Bytes between rows.
    pub row: u64,
    /// Bytes between planes.
    pub plane: u64,
}

impl Shape {
    /// Total elements.
    pub fn elements(&self) -> u64 {
        u64::from(self.cols) * u64::from(self.rows) * u64::from(self.planes)
    }

    /// Whether flags hold only defined bits.
    pub fn flags_ok(&self) -> bool {
        self.flags & !SHAPE_FLAGS == 0
    }

    /// The destination walk for elements of `size` bytes.
    pub fn dst(&self, size: u32) -> Walk {
        Walk { col: size.into(), row: self.dst_row.into(), plane: self.dst_plane.into() }
    }

    /// The first source's walk for elements of `size` bytes.
    pub fn src0(&self, size: u32) -> Walk {
        let col = if self.flags & SHAPE_SRC0_COL_BROADCAST != 0 { 0 } else { size.into() };
        Walk { col, row: self.src0_row.into(), plane: self.src0_plane.into() }
    }

    /// The second source's walk for elements of `size` bytes.
    pub fn src1(&self, size: u32) -> Walk {
        let col = if self.flags & SHAPE_SRC1_COL_BROADCAST != 0 { 0 } else { size.into() };
        Walk { col, row: self.src1_row.into(), plane: self.src1_plane.into() }
    }

    /// Bytes an operand walking `walk` over `planes × rows × cols` elements of `size` bytes spans
    /// from its base; `None` for zero counts or overflow.
    pub fn extent(walk: Walk, planes: u16, rows: u16, cols: u16, size: u32) -> Option<u64> {
        let c = u64::from(cols.checked_sub(1)?).checked_mul(walk.col)?;
        let r = u64::from(rows.checked_sub(1)?).checked_mul(walk.row)?;
        let p = u64::from(planes.checked_sub(1)?).checked_mul(walk.plane)?;
        u64::from(size).checked_add(c)?.checked_add(r)?.checked_add(p)
    }

    /// The 32-byte little-endian encoding.
    pub fn to_bytes(&self) -> [u8; DESC_BYTES] {
        let mut b = [0u8; DESC_BYTES];
        b[0..2].copy_from_slice(&self.cols.to_le_bytes());
        b[2..4].copy_from_slice(&self.rows.to_le_bytes());
        b[4..6].copy_from_slice(&self.planes.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        let words = [
            self.dst_row,
            self.src0_row,
            self.src1_row,
            self.dst_plane,
            self.src0_plane,
            self.src1_plane,
        ];
        for (i, w) in words.iter().enumerate() {
            b[8 + 4 * i..12 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    /// Decodes 32 bytes (every bit pattern is a shape; the validator judges it).
    pub fn from_bytes(b: &[u8; DESC_BYTES]) -> Shape {
        let r = Le(b);
        Shape {
            cols: r.u16(0),
            rows: r.u16(2),
            planes: r.u16(4),
            flags: r.u16(6),
            dst_row: r.u32(8),
            src0_row: r.u32(12),
            src1_row: r.u32(16),
            dst_plane: r.u32(20),
            src0_plane: r.u32(24),
            src1_plane: r.u32(28),
        }
    }
}

/// Little-endian reads at fixed offsets of a fixed-size array (offsets are constants above).
struct Le<'a>(&'a [u8; DESC_BYTES]);

impl Le<'_> {
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from(self.u32(at)) | u64::from(self.u32(at + 4)) << 32
    }
}

/// A complete program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    /// The instruction stream.
    pub insts: Vec<Inst>,
    /// DMA descriptors, indexed by `desc` fields.
    pub dma: Vec<DmaDesc>,
    /// Vector shapes, indexed by `shape` fields.
    pub shapes: Vec<Shape>,
    /// Semaphore values at job start.
    pub sem_init: [u8; 16],
}

/// A program's encoded parts, as the blob stores them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedProgram {
    /// Instructions, 16 bytes each.
    pub text: Vec<u8>,
    /// DMA descriptors, 32 bytes each.
    pub dma: Vec<u8>,
    /// Shapes, 32 bytes each.
    pub shapes: Vec<u8>,
    /// Semaphore values at job start.
    pub sem_init: [u8; 16],
}

/// Why encoded parts are not a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramDecodeError {
    /// The instruction stream does not decode.
    Text(DecodeError),
    /// A table's length is not a multiple of 32 bytes.
    TableSize {
        /// `dma` or `shapes`.
        table: &'static str,
        /// Its length.
        len: usize,
    },
}

impl fmt::Display for ProgramDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgramDecodeError::Text(e) => e.fmt(f),
            ProgramDecodeError::TableSize { table, len } => {
                write!(f, "{table} table is {len} bytes, not a multiple of {DESC_BYTES}")
            }
        }
    }
}

impl std::error::Error for ProgramDecodeError {}

impl Program {
    /// Encodes the program's parts.
    pub fn encode(&self) -> Result<EncodedProgram, (usize, EncodeError)> {
        Ok(EncodedProgram {
            text: encode_all(&self.insts)?,
            dma: self.dma.iter().flat_map(DmaDesc::to_bytes).collect(),
            shapes: self.shapes.iter().flat_map(Shape::to_bytes).collect(),
            sem_init: self.sem_init,
        })
    }

    /// Decodes encoded parts; decoding checks the instruction whitelist, not the program's
    /// validity (see [`crate::verify`]).
    pub fn decode(enc: &EncodedProgram) -> Result<Program, ProgramDecodeError> {
        fn table<T>(
            bytes: &[u8],
            name: &'static str,
            f: fn(&[u8; DESC_BYTES]) -> T,
        ) -> Result<Vec<T>, ProgramDecodeError> {
            let chunks = bytes.chunks_exact(DESC_BYTES);
            if !chunks.remainder().is_empty() {
                return Err(ProgramDecodeError::TableSize { table: name, len: bytes.len() });
            }
            Ok(chunks
                .map(|c| {
                    let mut a = [0u8; DESC_BYTES];
                    a.copy_from_slice(c);
                    f(&a)
                })
                .collect())
        }
        Ok(Program {
            insts: decode_all(&enc.text).map_err(ProgramDecodeError::Text)?,
            dma: table(&enc.dma, "dma", DmaDesc::from_bytes)?,
            shapes: table(&enc.shapes, "shapes", Shape::from_bytes)?,
            sem_init: enc.sem_init,
        })
    }
}
