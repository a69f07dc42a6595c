//! The instruction table: every instruction of the ISA, listed once.
//!
//! `for_each_op!` hands the whole table to a macro. The encoder, decoder, mnemonic table,
//! assembler, disassembler, validator, cost model, the book's reference pages and (later) the
//! simulator's dispatch are all generated from, or match exhaustively over, this one list, so
//! adding an instruction is one entry here and a missing case anywhere else fails to compile.
//!
//! Entry grammar:
//!
//! ```text
//! /// doc
//! Name = OPCODE, "mnemonic", route(ROUTE) {
//!     /// doc
//!     field: Type [LO..HI],
//! }
//! ```
//!
//! `ROUTE` is `front` (executed by the front-end itself), an engine (`ld`, `mx`, `vx`, `st`), or
//! `queue` (the engine named by the instruction's `queue` field). Bit ranges are absolute
//! positions in the 128-bit word; bits 0..32 are the common header. Bits that no field covers are
//! reserved and must be zero; overlaps and out-of-range positions are compile errors.

/// Calls `$m!` with the full instruction table.
#[macro_export]
macro_rules! for_each_op {
    ($m:ident) => {
        $m! {
            /// Does nothing but carry its wait and signal slots through the chosen queue.
            Nop = 0x00, "nop", route(queue) {
                /// The engine queue the instruction joins.
                queue: Engine [32..34],
            }

            /// Ends the program: waits until every queue is idle and every DRAM write is
            /// visible, then completes the job with status `code`. Exactly one, and last.
            End = 0x01, "end", route(front) {
                /// Completion code reported in the job status.
                code: u16 [32..48],
            }

            /// Stops dispatch until every queue is idle and all earlier writes are visible.
            Barrier = 0x02, "barrier", route(front) {}

            /// Adds `count` to semaphore `sem` when it reaches the head of `queue`.
            SemSignal = 0x03, "sem.signal", route(queue) {
                /// The engine queue the instruction joins.
                queue: Engine [32..34],
                /// The semaphore.
                sem: Sem [36..40],
                /// Tokens to add (1..=255).
                count: u8 [40..48],
            }

            /// Blocks `queue` until semaphore `sem` holds at least `count`, then subtracts it.
            SemWait = 0x04, "sem.wait", route(queue) {
                /// The engine queue the instruction joins.
                queue: Engine [32..34],
                /// The semaphore.
                sem: Sem [36..40],
                /// Tokens to take (1..=255).
                count: u8 [40..48],
            }

            /// Records `{id, queue, cycle}` in the trace when tracing is on; otherwise a no-op.
            Marker = 0x05, "marker", route(queue) {
                /// The engine queue the instruction joins.
                queue: Engine [32..34],
                /// Any value; shown in traces.
                id: u32 [64..96],
            }

            /// Copies a 3-D block from DRAM `(seg, offset)` to local memory at `dst`, shaped by
            /// DMA descriptor `desc` (far side: DRAM strides; near side: local pitches).
            DmaLoad = 0x10, "dma.load", route(ld) {
                /// The DMA descriptor.
                desc: DmaDescId [32..48],
                /// The DRAM segment read.
                seg: Seg [48..52],
                /// Byte offset of the block in the segment (40 bits).
                offset: u64 [56..96],
                /// Local destination.
                dst: LocalAddr [96..120],
            }

            /// Copies a 3-D block from local memory at `src` to DRAM `(seg, offset)`, shaped
            /// by DMA descriptor `desc`.
            DmaStore = 0x11, "dma.store", route(st) {
                /// The DMA descriptor.
                desc: DmaDescId [32..48],
                /// The DRAM segment written.
                seg: Seg [48..52],
                /// Byte offset of the block in the segment (40 bits).
                offset: u64 [56..96],
                /// Local source.
                src: LocalAddr [96..120],
            }

            /// Fills the near-side block of descriptor `desc` at `dst` with the little-endian
            /// 32-bit pattern `value` (zero padding, accumulator clears, constants).
            DmaFill = 0x12, "dma.fill", route(ld) {
                /// The DMA descriptor (only its near side is used).
                desc: DmaDescId [32..48],
                /// The 32-bit pattern, repeated from the start of every row.
                value: u32 [64..96],
                /// Local destination.
                dst: LocalAddr [96..120],
            }

            /// Copies a 3-D block between local memories: the source is walked with the
            /// descriptor's far-side strides, the destination with its near-side pitches.
            DmaCopy = 0x13, "dma.copy", route(ld) {
                /// The DMA descriptor.
                desc: DmaDescId [32..48],
                /// Local source (far side).
                src: LocalAddr [64..88],
                /// Local destination (near side).
                dst: LocalAddr [96..120],
            }

            /// Loads a `k`×`n` weight tile from the scratchpad into the matrix array, row `i`
            /// at `src + i·stride`. It stays until the next `mx.load_w`.
            MxLoadW = 0x20, "mx.load_w", route(mx) {
                /// Scratchpad address of weight row 0.
                src: LocalAddr [32..56],
                /// Weight rows (the reduction depth), 1..=array size.
                k: u8 [56..64],
                /// Weight columns (output channels), 1..=array size.
                n: u8 [64..72],
                /// Bytes from one weight row to the next.
                stride: u16 [72..88],
                /// Weight element type: `s8`, `bf16` or `f32`.
                dtype: Dtype [88..91],
            }

            /// Streams `rows` input rows through the array: for each row `i`,
            /// `C[i] (+)= A[i] · W` with `A[i]` at `a + i·a_stride` (`k` elements) and `C[i]` at
            /// `c + i·c_stride` (`n` 32-bit elements in the accumulator).
            MxMatmul = 0x21, "mx.matmul", route(mx) {
                /// Scratchpad address of input row 0.
                a: LocalAddr [32..56],
                /// Bytes from one input row to the next.
                a_stride: u16 [56..72],
                /// Accumulator address of output row 0.
                c: LocalAddr [72..96],
                /// Bytes from one output row to the next.
                c_stride: u16 [96..112],
                /// Number of rows, 1..=4095.
                rows: u16 [112..124],
                /// Input element type: `s8`/`u8` with `s8` weights (`s32` sums), `bf16` or `f32`
                /// with the same weights (`f32` sums).
                dtype: Dtype [124..127],
                /// Add to the accumulator (1) instead of overwriting it (0).
                accumulate: bool [127..128],
            }

            /// Element-wise `dst = src0 op src1` over a vector shape, all in `dtype`.
            VxBinary = 0x30, "vx.binary", route(vx) {
                /// The operation.
                op: BinOp [32..37],
                /// Element type of all operands.
                dtype: Dtype [37..40],
                /// The vector shape (sizes and per-operand strides).
                shape: ShapeId [40..56],
                /// Destination.
                dst: LocalAddr [56..80],
                /// First source.
                src0: LocalAddr [80..104],
                /// Second source.
                src1: LocalAddr [104..128],
            }

            /// Element-wise `dst = op(src)` over a vector shape, converting from `dtype` to
            /// `out_dtype` where the operation allows it.
            VxUnary = 0x31, "vx.unary", route(vx) {
                /// The operation.
                op: UnOp [32..37],
                /// Source element type.
                dtype: Dtype [37..40],
                /// The vector shape (`dst` and `src0` strides are used).
                shape: ShapeId [40..56],
                /// Destination.
                dst: LocalAddr [56..80],
                /// Source.
                src: LocalAddr [80..104],
                /// Destination element type.
                out_dtype: Dtype [104..107],
            }

            /// Folds the columns of every row (or the rows of every plane) of `src` with `op`.
            VxReduce = 0x32, "vx.reduce", route(vx) {
                /// The reduction.
                op: ReduceOp [32..34],
                /// The axis folded.
                axis: Axis [34..35],
                /// Source element type.
                dtype: Dtype [37..40],
                /// The source shape (`dst` and `src0` strides are used).
                shape: ShapeId [40..56],
                /// Destination.
                dst: LocalAddr [56..80],
                /// Source.
                src: LocalAddr [80..104],
                /// Destination element type.
                out_dtype: Dtype [104..107],
            }

            /// Requantizes `s32` values to `dtype` (`s8`, `u8`, `s16`, or `s32` to rescale
            /// between integer grids, where the clamp fields do not apply) with per-tensor or
            /// per-column parameters: `clamp(zp + round_shift(sat_rdmulh(x + bias, m), shift))`.
            VxRequant = 0x33, "vx.requant", route(vx) {
                /// One parameter record per column (1) or one for all (0).
                per_channel: bool [32..33],
                /// Records carry an `s32` bias (20 bytes each), added with saturation before
                /// the multiply (1); no bias (0, 16-byte records).
                bias: bool [33..34],
                /// Destination element type.
                dtype: Dtype [37..40],
                /// The vector shape (`dst` and `src0` strides are used).
                shape: ShapeId [40..56],
                /// Destination.
                dst: LocalAddr [56..80],
                /// Source (`s32`).
                src: LocalAddr [80..104],
                /// Parameter records, 16 bytes each (20 with `bias`).
                params: LocalAddr [104..128],
            }

            /// Table lookup on 8-bit values: `dst = table[src as u8]`, 256 one-byte entries.
            VxLut = 0x34, "vx.lut", route(vx) {
                /// Element type of source and destination: `s8` or `u8`.
                dtype: Dtype [37..40],
                /// The vector shape (`dst` and `src0` strides are used).
                shape: ShapeId [40..56],
                /// Destination.
                dst: LocalAddr [56..80],
                /// Source.
                src: LocalAddr [80..104],
                /// The 256-byte table.
                table: LocalAddr [104..128],
            }

            /// Transposes the rows and columns of every plane: element `(p, r, c)` of `src` goes
            /// to `dst + p·dst_plane + c·dst_row + r·size`.
            VxTranspose = 0x35, "vx.transpose", route(vx) {
                /// Element type.
                dtype: Dtype [37..40],
                /// The source shape (`dst` and `src0` strides are used).
                shape: ShapeId [40..56],
                /// Destination.
                dst: LocalAddr [56..80],
                /// Source.
                src: LocalAddr [80..104],
            }
        }
    };
}
