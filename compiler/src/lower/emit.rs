//! The instruction emitter: the program under construction, its interned descriptor and shape
//! tables, the fixed semaphore channels kernels synchronise through, per-kernel local memory
//! allocation, and DMA of arbitrary strided blocks.
//!
//! Every kernel ends with a `barrier`, and each uses every channel in balance (as many waits
//! as signals on each semaphore), so the semaphores hold their initial values again at every
//! kernel boundary and each kernel owns all of local memory.

use std::collections::HashMap;

use accelc_isa::inst::{
    Barrier, DmaFill, DmaLoad, DmaStore, Nop, SemSignal, SemWait, VxBinary, VxUnary,
};
use accelc_isa::program::{MAX_DMA_COUNT, MAX_DMA_DESCS, MAX_INSTS, MAX_SHAPES};
use accelc_isa::{
    BinOp, DeviceConfig, DmaDesc, DmaDescId, Dtype, Engine, Inst, LocalAddr, Op, Route, Seg, Sem,
    Shape, ShapeId, UnOp,
};

use super::LowerError;

/// A producer→consumer channel: the producer waits on `free` before filling a buffer and
/// signals `full` after; the consumer waits on `full` and signals `free` when done with it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chan {
    pub(crate) full: u8,
    pub(crate) free: u8,
}

/// Activation blocks, DMA-in → matrix engine.
pub(crate) const LD_MX_A: Chan = Chan { full: 0, free: 1 };
/// Weight packets, DMA-in → matrix engine.
pub(crate) const LD_MX_W: Chan = Chan { full: 2, free: 3 };
/// Accumulator tiles, matrix engine → vector engine (freed by the store that drains them).
pub(crate) const MX_VX: Chan = Chan { full: 4, free: 5 };
/// Results, vector engine → DMA-out.
pub(crate) const VX_ST: Chan = Chan { full: 6, free: 7 };
/// Operand blocks, DMA-in → vector engine.
pub(crate) const LD_VX: Chan = Chan { full: 8, free: 9 };
/// Per-kernel parameters (bias, constants), DMA-in → vector engine, once per kernel.
pub(crate) const PARAMS: u8 = 10;
/// Buffers per channel (double buffering).
pub(crate) const DEPTH: u8 = 2;

/// The semaphores' values at job start.
pub(crate) fn sem_init() -> [u8; 16] {
    let mut s = [0u8; 16];
    for c in [LD_MX_A, LD_MX_W, MX_VX, VX_ST, LD_VX] {
        s[usize::from(c.free)] = DEPTH;
    }
    s
}

fn sem(n: u8) -> Sem {
    Sem::new(n).expect("channel semaphores are below 16")
}

/// Segment numbers of a compiled model.
pub(crate) const SEG_CONST: u8 = 0;
pub(crate) const SEG_INPUT: u8 = 1;
pub(crate) const SEG_OUTPUT: u8 = 2;
pub(crate) const SEG_ARENA: u8 = 3;

/// Which way a DMA block moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// DRAM → local.
    Load,
    /// Local → DRAM.
    Store,
}

/// The program being built.
pub(crate) struct Emitter {
    pub(crate) cfg: DeviceConfig,
    pub(crate) insts: Vec<Inst>,
    pub(crate) dma: Vec<DmaDesc>,
    dma_ids: HashMap<DmaDesc, u16>,
    pub(crate) shapes: Vec<Shape>,
    shape_ids: HashMap<Shape, u16>,
    /// Waits to put on the next instruction of each queue.
    pending: [Vec<u8>; 4],
    /// Index of the latest instruction of each queue.
    last: [Option<usize>; 4],
    /// Local memory bump pointers of the current kernel.
    spad_top: u32,
    acc_top: u32,
    /// Largest scratchpad use of any kernel.
    pub(crate) spad_peak: u32,
    pub(crate) acc_peak: u32,
}

fn qi(e: Engine) -> usize {
    e as usize
}

impl Emitter {
    pub(crate) fn new(cfg: DeviceConfig) -> Emitter {
        Emitter {
            cfg,
            insts: Vec::new(),
            dma: Vec::new(),
            dma_ids: HashMap::new(),
            shapes: Vec::new(),
            shape_ids: HashMap::new(),
            pending: Default::default(),
            last: [None; 4],
            spad_top: 0,
            acc_top: 0,
            spad_peak: 0,
            acc_peak: 0,
        }
    }

    /// Interns a DMA descriptor.
    pub(crate) fn desc(&mut self, d: DmaDesc) -> Result<DmaDescId, LowerError> {
        if let Some(id) = self.dma_ids.get(&d) {
            return Ok(DmaDescId(*id));
        }
        if self.dma.len() >= MAX_DMA_DESCS {
            return Err(LowerError::msg("the program needs more than 65536 DMA descriptors"));
        }
        let id = self.dma.len() as u16;
        self.dma.push(d);
        self.dma_ids.insert(d, id);
        Ok(DmaDescId(id))
    }

    /// Interns a vector shape.
    pub(crate) fn shape(&mut self, s: Shape) -> Result<ShapeId, LowerError> {
        if let Some(id) = self.shape_ids.get(&s) {
            return Ok(ShapeId(*id));
        }
        if self.shapes.len() >= MAX_SHAPES {
            return Err(LowerError::msg("the program needs more than 65536 vector shapes"));
        }
        let id = self.shapes.len() as u16;
        self.shapes.push(s);
        self.shape_ids.insert(s, id);
        Ok(ShapeId(id))
    }

    /// Appends an instruction, giving it the pending waits of its queue.
    pub(crate) fn push(&mut self, op: impl Into<Op>) -> Result<usize, LowerError> {
        let op: Op = op.into();
        let mut inst = Inst::new(op);
        if let Route::Engine(e) = op.route() {
            let q = qi(e);
            let mut waits = std::mem::take(&mut self.pending[q]);
            // Up to two waits ride on the instruction; any more go first as `sem.wait`s.
            while waits.len() > 2 {
                let s = waits.remove(0);
                self.raw(Inst::new(SemWait { queue: e, sem: sem(s), count: 1 }))?;
            }
            for s in waits {
                inst = inst.wait(sem(s));
            }
        }
        self.raw(inst)
    }

    fn raw(&mut self, inst: Inst) -> Result<usize, LowerError> {
        if self.insts.len() >= MAX_INSTS - 1 {
            return Err(LowerError::msg("the program needs more than 2^20 instructions"));
        }
        let i = self.insts.len();
        if let Route::Engine(e) = inst.op.route() {
            self.last[qi(e)] = Some(i);
        }
        self.insts.push(inst);
        Ok(i)
    }

    /// The next instruction of `queue` waits on `s` first.
    pub(crate) fn wait(&mut self, queue: Engine, s: u8) {
        self.pending[qi(queue)].push(s);
    }

    /// Signals `s` when the latest instruction of `queue` completes (or right away, with an
    /// instruction of its own, if that one's slots are taken or there is none).
    pub(crate) fn signal(&mut self, queue: Engine, s: u8) -> Result<(), LowerError> {
        let q = qi(queue);
        if self.pending[q].is_empty()
            && let Some(i) = self.last[q]
        {
            let inst = &mut self.insts[i];
            if inst.sync.signal[0].is_none() {
                inst.sync.signal[0] = Some(sem(s));
                return Ok(());
            }
            if inst.sync.signal[1].is_none() {
                inst.sync.signal[1] = Some(sem(s));
                return Ok(());
            }
        }
        self.push(SemSignal { queue, sem: sem(s), count: 1 })?;
        Ok(())
    }

    /// A `nop` on `queue` (to carry waits and signals).
    pub(crate) fn nop(&mut self, queue: Engine) -> Result<(), LowerError> {
        self.push(Nop { queue })?;
        Ok(())
    }

    /// A barrier inside a kernel: every engine idle and every write visible before the next
    /// instruction; local memory stays allocated.
    pub(crate) fn barrier(&mut self) -> Result<(), LowerError> {
        if !self.pending.iter().all(Vec::is_empty) {
            return Err(LowerError::msg("internal error: waits left before a barrier"));
        }
        self.raw(Inst::new(Barrier {}))?;
        self.last = [None; 4];
        Ok(())
    }

    /// Ends a kernel: a barrier, and local memory is free again. Returns the barrier's index.
    pub(crate) fn end_kernel(&mut self) -> Result<usize, LowerError> {
        if !self.pending.iter().all(Vec::is_empty) {
            return Err(LowerError::msg("internal error: waits left without an instruction"));
        }
        let i = self.raw(Inst::new(Barrier {}))?;
        self.last = [None; 4];
        self.spad_top = 0;
        self.acc_top = 0;
        Ok(i)
    }

    /// Allocates `bytes` of scratchpad for the current kernel (64-byte aligned).
    pub(crate) fn spad(&mut self, bytes: u64) -> Result<LocalAddr, LowerError> {
        let at = self.spad_top;
        let end = u64::from(at) + bytes.div_ceil(64) * 64;
        if end > u64::from(self.cfg.spad_bytes) {
            return Err(LowerError::msg(format!(
                "scratchpad exhausted: {end} bytes needed, {} available",
                self.cfg.spad_bytes
            )));
        }
        self.spad_top = end as u32;
        self.spad_peak = self.spad_peak.max(self.spad_top);
        Ok(LocalAddr::spad(at))
    }

    /// Scratchpad bytes still free in the current kernel.
    pub(crate) fn spad_free(&self) -> u64 {
        u64::from(self.cfg.spad_bytes - self.spad_top)
    }

    /// Allocates `bytes` of accumulator for the current kernel.
    pub(crate) fn acc(&mut self, bytes: u64) -> Result<LocalAddr, LowerError> {
        let at = self.acc_top;
        let end = u64::from(at) + bytes.div_ceil(64) * 64;
        if end > u64::from(self.cfg.acc_bytes) {
            return Err(LowerError::msg(format!(
                "accumulator exhausted: {end} bytes needed, {} available",
                self.cfg.acc_bytes
            )));
        }
        self.acc_top = end as u32;
        self.acc_peak = self.acc_peak.max(self.acc_top);
        Ok(LocalAddr::acc(at))
    }

    /// Moves a block between DRAM (`seg`, `offset`, `far` dims outermost first as
    /// `(count, stride)`) and local memory at `local` with `near` strides (same dims), in as
    /// few DMA instructions as the descriptor's three levels allow.
    #[allow(clippy::too_many_arguments, reason = "both sides of a transfer")]
    pub(crate) fn dma_block(
        &mut self,
        dir: Dir,
        seg: u8,
        offset: u64,
        dims: &[(usize, u64, u64)],
        elem: u64,
        local: LocalAddr,
    ) -> Result<(), LowerError> {
        // (count, far stride, near stride), without unit dims, merged where both sides allow.
        let mut d: Vec<(u64, u64, u64)> =
            dims.iter().filter(|x| x.0 != 1).map(|&(c, f, n)| (c as u64, f, n)).collect();
        if d.iter().any(|x| x.0 == 0) {
            return Ok(());
        }
        let mut i = d.len();
        while i >= 2 {
            let (c1, f1, n1) = d[i - 1];
            let (_, f0, n0) = d[i - 2];
            if f0 == c1 * f1 && n0 == c1 * n1 {
                d[i - 2] = (d[i - 2].0 * c1, f1, n1);
                d.remove(i - 1);
            }
            i -= 1;
        }
        let mut x = elem;
        if let Some(&(c, f, n)) = d.last()
            && f == elem
            && n == elem
        {
            x = c * elem;
            d.pop();
        }
        if x > u64::from(u32::MAX) {
            return Err(LowerError::msg("a DMA run longer than 4 GiB"));
        }
        // Split counts above the 16-bit field into an outer loop.
        let mut e: Vec<(u64, u64, u64)> = Vec::new();
        for (c, f, n) in d {
            if c > MAX_DMA_COUNT {
                let inner = (1..=MAX_DMA_COUNT).rev().find(|k| c % k == 0).unwrap_or(1);
                e.push((c / inner, f * inner, n * inner));
                e.push((inner, f, n));
            } else {
                e.push((c, f, n));
            }
        }
        let (loops, desc_dims) = e.split_at(e.len().saturating_sub(2));
        let (y, z) = match desc_dims {
            [] => ((1, 0, 0), (1, 0, 0)),
            [y] => (*y, (1, 0, 0)),
            [z, y] => (*y, *z),
            _ => unreachable!(),
        };
        let desc = DmaDesc {
            x_bytes: x as u32,
            y_count: y.0 as u16,
            z_count: z.0 as u16,
            y_stride: y.1,
            z_stride: z.1,
            near_y_pitch: u32::try_from(y.2).map_err(|_| LowerError::msg("near pitch"))?,
            near_z_pitch: u32::try_from(z.2).map_err(|_| LowerError::msg("near pitch"))?,
        };
        let id = self.desc(desc)?;
        let total: u64 = loops.iter().map(|l| l.0).product();
        let seg = Seg::new(seg).expect("segment numbers are below 16");
        for flat in 0..total {
            let (mut fo, mut no) = (offset, u64::from(local.offset));
            let mut rest = flat;
            for &(c, f, n) in loops.iter().rev() {
                let k = rest % c;
                rest /= c;
                fo += k * f;
                no += k * n;
            }
            let near = LocalAddr { space: local.space, offset: no as u32 };
            match dir {
                Dir::Load => self.push(DmaLoad { desc: id, seg, offset: fo, dst: near })?,
                Dir::Store => self.push(DmaStore { desc: id, seg, offset: fo, src: near })?,
            };
        }
        Ok(())
    }

    /// Fills `bytes` of local memory at `dst` with the 32-bit pattern `value`.
    pub(crate) fn fill(
        &mut self,
        dst: LocalAddr,
        bytes: u64,
        value: u32,
    ) -> Result<(), LowerError> {
        let mut done = 0u64;
        while done < bytes {
            let n = (bytes - done).min(1 << 30);
            let id = self.desc(DmaDesc {
                x_bytes: n as u32,
                y_count: 1,
                z_count: 1,
                ..DmaDesc::default()
            })?;
            let at = LocalAddr { space: dst.space, offset: dst.offset + done as u32 };
            self.push(DmaFill { desc: id, value, dst: at })?;
            done += n;
        }
        Ok(())
    }

    /// `dst = a op b` over `shape`, elements of `dtype`.
    pub(crate) fn vbin(
        &mut self,
        dtype: Dtype,
        op: BinOp,
        shape: Shape,
        dst: LocalAddr,
        src0: LocalAddr,
        src1: LocalAddr,
    ) -> Result<(), LowerError> {
        let shape = self.shape(shape)?;
        self.push(VxBinary { op, dtype, shape, dst, src0, src1 })?;
        Ok(())
    }

    /// `dst = op(a)` over `shape`, elements of `dtype` in and out.
    pub(crate) fn vun(
        &mut self,
        dtype: Dtype,
        op: UnOp,
        shape: Shape,
        dst: LocalAddr,
        src: LocalAddr,
    ) -> Result<(), LowerError> {
        let shape = self.shape(shape)?;
        self.push(VxUnary { op, dtype, shape, dst, src, out_dtype: dtype })?;
        Ok(())
    }
}

impl Emitter {
    /// `dst = src` converted from `from` to `to` over `shape` (`vx.unary mov`: round half to
    /// even, saturate).
    pub(crate) fn vconv(
        &mut self,
        from: Dtype,
        to: Dtype,
        shape: Shape,
        dst: LocalAddr,
        src: LocalAddr,
    ) -> Result<(), LowerError> {
        let shape = self.shape(shape)?;
        self.push(VxUnary { op: UnOp::Mov, dtype: from, shape, dst, src, out_dtype: to })?;
        Ok(())
    }

    /// `dst = requant(src + bias)` to `dtype` over `shape` with one biased record
    /// (`accelc_isa::requant::BIASED_RECORD_BYTES`) per column at `params`.
    pub(crate) fn vrequant_biased(
        &mut self,
        dtype: Dtype,
        shape: Shape,
        dst: LocalAddr,
        src: LocalAddr,
        params: LocalAddr,
    ) -> Result<(), LowerError> {
        self.vrequant_with(true, true, dtype, shape, dst, src, params)
    }

    /// `dst = requant(src)` to `dtype` over `shape` with the one record at `params`.
    pub(crate) fn vrequant_tensor(
        &mut self,
        dtype: Dtype,
        shape: Shape,
        dst: LocalAddr,
        src: LocalAddr,
        params: LocalAddr,
    ) -> Result<(), LowerError> {
        self.vrequant_with(false, false, dtype, shape, dst, src, params)
    }

    #[allow(clippy::too_many_arguments, reason = "the instruction's fields")]
    fn vrequant_with(
        &mut self,
        per_channel: bool,
        bias: bool,
        dtype: Dtype,
        shape: Shape,
        dst: LocalAddr,
        src: LocalAddr,
        params: LocalAddr,
    ) -> Result<(), LowerError> {
        let shape = self.shape(shape)?;
        self.push(accelc_isa::inst::VxRequant {
            per_channel,
            bias,
            dtype,
            shape,
            dst,
            src,
            params,
        })?;
        Ok(())
    }
}

/// Address `off` bytes past `a`.
pub(crate) fn at(a: LocalAddr, off: u64) -> LocalAddr {
    LocalAddr { space: a.space, offset: a.offset + off as u32 }
}

/// A vector shape over `planes × rows × cols` with per-operand `(row, plane)` strides in bytes;
/// `bcast` flags sources read one element per row.
#[allow(clippy::too_many_arguments, reason = "one shape record")]
pub(crate) fn vshape(
    planes: u64,
    rows: u64,
    cols: u64,
    dst: (u64, u64),
    src0: (u64, u64),
    src1: (u64, u64),
    flags: u16,
) -> Shape {
    Shape {
        cols: cols as u16,
        rows: rows as u16,
        planes: planes as u16,
        flags,
        dst_row: dst.0 as u32,
        src0_row: src0.0 as u32,
        src1_row: src1.0 as u32,
        dst_plane: dst.1 as u32,
        src0_plane: src0.1 as u32,
        src1_plane: src1.1 as u32,
    }
}
