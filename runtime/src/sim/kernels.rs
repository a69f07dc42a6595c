//! The matrix engine's inner loops, written so the compiler vectorises them: whole rows of the
//! output are accumulated in fixed-size register arrays across the reduction, never one element
//! at a time through memory.
//!
//! Floats follow the book's order exactly (for every output, increasing `k`, each product and
//! each sum rounded, no fused multiply-add); vectorising across output columns keeps that order.
//!
//! Integer matmuls use the same kernel. Every product of 8-bit values is at most
//! 255 · 128 = 32,640 in magnitude, and at most 255 of them (the `k` field is 8 bits) sum to at
//! most 8,323,200 < 2^24: every partial sum is an integer binary32 represents exactly, so the
//! float kernel computes the exact integer dot products, at the speed of the float path.

use accelc_isa::{BinOp, Dtype};

use super::numerics::{bf16_to_f32, canon, fmax, fmin, saturate};

/// Calls `$generic(args)`, compiled for AVX2 when the CPU has it (detected at run time). Only
/// the vector width changes, never a result: Rust does not fuse multiplies and adds.
macro_rules! with_avx2 {
    ($generic:ident($($arg:ident: $ty:ty),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            fn avx2($($arg: $ty),*) {
                $generic($($arg),*);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked on the line above; the callee is safe
                // code.
                #[allow(unsafe_code, reason = "calling an AVX2-compiled kernel after runtime detection")]
                unsafe {
                    avx2($($arg),*);
                }
                return;
            }
        }
        $generic($($arg),*);
    }};
}

/// One `mx.matmul`: where its operands live and how to combine them.
pub(crate) struct MatmulJob<'a> {
    /// The scratchpad (inputs).
    pub(crate) spad: &'a [u8],
    /// The accumulator memory (outputs).
    pub(crate) acc: &'a mut [u8],
    /// Byte offset of input row 0 and bytes between input rows.
    pub(crate) abase: usize,
    pub(crate) a_stride: usize,
    /// Byte offset of output row 0 and bytes between output rows.
    pub(crate) cbase: usize,
    pub(crate) c_stride: usize,
    /// Rows, reduction depth, output columns.
    pub(crate) rows: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    /// Input element type.
    pub(crate) dtype: Dtype,
    /// Integer matmul (exact through f32; sums from zero, added to C with wrapping).
    pub(crate) int: bool,
    /// Add to C instead of overwriting it.
    pub(crate) accumulate: bool,
    /// The weights, `k × n`, widened to f32.
    pub(crate) w: &'a [f32],
}

/// Runs a matmul (operands already range-checked) in blocks of rows small enough to stay in
/// the L1 cache: gather them densely as f32, run the kernel, scatter the results back. The
/// whole loop, gathers and scatters included, is compiled for AVX2 when the CPU has it.
pub(crate) fn matmul_rows(job: MatmulJob<'_>) {
    with_avx2!(matmul_rows_generic(job: MatmulJob<'_>))
}

#[inline(always)]
fn matmul_rows_generic(job: MatmulJob<'_>) {
    const BLOCK: usize = 64;
    let MatmulJob {
        spad,
        acc,
        abase,
        a_stride,
        cbase,
        c_stride,
        rows,
        k,
        n,
        dtype,
        int,
        accumulate,
        w,
    } = job;
    let es = dtype.size() as usize;
    let mut av: Vec<f32> = Vec::with_capacity(BLOCK * k);
    let mut cv: Vec<f32> = Vec::with_capacity(BLOCK * n);
    for r0 in (0..rows).step_by(BLOCK) {
        let block = BLOCK.min(rows - r0);
        av.clear();
        for r in r0..r0 + block {
            let row = &spad[abase + r * a_stride..][..k * es];
            // Slice-to-slice loops (not `extend` over an iterator) so the widening vectorises.
            let start = av.len();
            match dtype {
                Dtype::U8 => {
                    av.resize(start + k, 0.0);
                    av[start..].iter_mut().zip(row).for_each(|(t, &b)| *t = f32::from(b));
                }
                Dtype::S8 => {
                    av.resize(start + k, 0.0);
                    av[start..].iter_mut().zip(row).for_each(|(t, &b)| *t = f32::from(b as i8));
                }
                Dtype::Bf16 => av.extend(
                    row.chunks_exact(2).map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
                ),
                _ => av.extend(
                    row.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                ),
            }
        }
        cv.clear();
        if accumulate && !int {
            for r in r0..r0 + block {
                let bytes = &acc[cbase + r * c_stride..][..4 * n];
                cv.extend(
                    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
        } else {
            cv.resize(block * n, 0.0);
        }
        matmul_f32_generic(&av, w, &mut cv, k, n);
        for (r, crow) in cv.chunks_exact(n).enumerate() {
            let bytes = &mut acc[cbase + (r0 + r) * c_stride..][..4 * n];
            let pairs = crow.iter().zip(bytes.chunks_exact_mut(4));
            match (int, accumulate) {
                (true, true) => pairs.for_each(|(v, b)| {
                    let old = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    b.copy_from_slice(&old.wrapping_add(*v as i32).to_le_bytes());
                }),
                (true, false) => {
                    pairs.for_each(|(v, b)| b.copy_from_slice(&(*v as i32).to_le_bytes()))
                }
                (false, _) => pairs.for_each(|(v, b)| {
                    b.copy_from_slice(&super::numerics::canon(*v).to_le_bytes())
                }),
            }
        }
    }
}

/// `c[r][j] (+)= Σ_k a[r][k] · w[k][j]` for `rows` rows: `a` is `rows × k`, `w` is `k × n`,
/// `c` is `rows × n`, all dense row-major.
#[inline(always)]
fn matmul_f32_generic(a: &[f32], w: &[f32], c: &mut [f32], k: usize, n: usize) {
    match n {
        32 => rows_f32::<32>(a, w, c, k),
        16 => rows_f32::<16>(a, w, c, k),
        8 => rows_f32::<8>(a, w, c, k),
        _ => {
            for (arow, crow) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)) {
                for (kk, &av) in arow.iter().enumerate() {
                    for (cv, &wv) in crow.iter_mut().zip(&w[kk * n..kk * n + n]) {
                        *cv += av * wv;
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn rows_f32<const N: usize>(a: &[f32], w: &[f32], c: &mut [f32], k: usize) {
    // Two rows at a time: two independent chains of additions per column hide the adder's
    // latency. Each output's own order (increasing k) is unchanged.
    let pairs = a.len() / (2 * k);
    let (a2, a1) = a.split_at(pairs * 2 * k);
    let (c2, c1) = c.split_at_mut(pairs * 2 * N);
    for (arows, crows) in a2.chunks_exact(2 * k).zip(c2.chunks_exact_mut(2 * N)) {
        let (ra, rb) = arows.split_at(k);
        let (ca, cb) = crows.split_at_mut(N);
        let mut acc_a: [f32; N] = (&*ca).try_into().unwrap_or([0.0; N]);
        let mut acc_b: [f32; N] = (&*cb).try_into().unwrap_or([0.0; N]);
        for ((&xa, &xb), wrow) in ra.iter().zip(rb).zip(w.chunks_exact(N)) {
            let Ok(wrow) = <&[f32; N]>::try_from(wrow) else { continue };
            for j in 0..N {
                acc_a[j] += xa * wrow[j];
                acc_b[j] += xb * wrow[j];
            }
        }
        ca.copy_from_slice(&acc_a);
        cb.copy_from_slice(&acc_b);
    }
    let (a, c) = (a1, c1);
    for (arow, crow) in a.chunks_exact(k).zip(c.chunks_exact_mut(N)) {
        let mut acc: [f32; N] = crow.try_into().unwrap_or([0.0; N]);
        for (&av, wrow) in arow.iter().zip(w.chunks_exact(N)) {
            let Ok(wrow) = <&[f32; N]>::try_from(wrow) else { continue };
            for j in 0..N {
                acc[j] += av * wrow[j];
            }
        }
        crow.copy_from_slice(&acc);
    }
}

/// One row of the vector engine's in-place f32/s32 binary fast path (`Exec::binary_rows`):
/// `out[j] = op(src0[j·s0], src1[j·s1], out[j])`, compiled for AVX2 when the CPU has it.
#[allow(clippy::too_many_arguments, reason = "one row's operands")]
pub(crate) fn binary_row(
    op: BinOp,
    f32s: bool,
    out: &mut [u8],
    a: &[u8],
    b: &[u8],
    s0: usize,
    s1: usize,
) {
    with_avx2!(binary_row_generic(
        op: BinOp,
        f32s: bool,
        out: &mut [u8],
        a: &[u8],
        b: &[u8],
        s0: usize,
        s1: usize
    ))
}

#[inline(always)]
fn binary_row_generic(
    op: BinOp,
    f32s: bool,
    out: &mut [u8],
    a: &[u8],
    b: &[u8],
    s0: usize,
    s1: usize,
) {
    if f32s {
        match op {
            BinOp::Add => vrow_f32(out, a, b, s0, s1, |x, y, _| canon(x + y)),
            BinOp::Sub => vrow_f32(out, a, b, s0, s1, |x, y, _| canon(x - y)),
            BinOp::Mul => vrow_f32(out, a, b, s0, s1, |x, y, _| canon(x * y)),
            BinOp::Mac => vrow_f32(out, a, b, s0, s1, |x, y, d| canon(d + canon(x * y))),
            BinOp::Max => vrow_f32(out, a, b, s0, s1, |x, y, _| fmax(x, y)),
            _ => vrow_f32(out, a, b, s0, s1, |x, y, _| fmin(x, y)),
        }
    } else {
        match op {
            BinOp::Add => vrow_s32(out, a, b, s0, s1, |x, y, _| x + y),
            BinOp::Sub => vrow_s32(out, a, b, s0, s1, |x, y, _| x - y),
            BinOp::Mul => vrow_s32(out, a, b, s0, s1, |x, y, _| x * y),
            BinOp::Mac => vrow_s32(out, a, b, s0, s1, |x, y, d| d + saturate(x * y, Dtype::S32)),
            BinOp::Max => vrow_s32(out, a, b, s0, s1, |x, y, _| x.max(y)),
            _ => vrow_s32(out, a, b, s0, s1, |x, y, _| x.min(y)),
        }
    }
}

/// Decodes `n` little-endian 4-byte words of `row` from element `j0` into `out` (a step of
/// 0 repeats element 0: a broadcast source).
#[inline(always)]
fn words(row: &[u8], j0: usize, step: usize, out: &mut [[u8; 4]; 64], n: usize) {
    if step == 0 {
        let w = [row[0], row[1], row[2], row[3]];
        out[..n].fill(w);
    } else {
        for (o, b) in out[..n].iter_mut().zip(row[4 * j0..4 * (j0 + n)].chunks_exact(4)) {
            *o = [b[0], b[1], b[2], b[3]];
        }
    }
}

/// One row of [`Exec::binary_rows`] on 4-byte words: `out[j] = f(src0[j·s0], src1[j·s1],
/// out[j])` (a source step of 0 broadcasts its first element), in blocks of 64 elements
/// decoded into arrays so the arithmetic vectorises.
#[inline(always)]
fn vrow(
    out: &mut [u8],
    a: &[u8],
    b: &[u8],
    s0: usize,
    s1: usize,
    f: impl Fn([u8; 4], [u8; 4], [u8; 4]) -> [u8; 4],
) {
    let (mut x, mut y) = ([[0u8; 4]; 64], [[0u8; 4]; 64]);
    for (blk, o) in out.chunks_mut(256).enumerate() {
        let n = o.len() / 4;
        words(a, blk * 64, s0, &mut x, n);
        words(b, blk * 64, s1, &mut y, n);
        for ((o, x), y) in o.chunks_exact_mut(4).zip(&x[..n]).zip(&y[..n]) {
            let v = f(*x, *y, [o[0], o[1], o[2], o[3]]);
            o.copy_from_slice(&v);
        }
    }
}

/// [`vrow`] in f32.
#[inline(always)]
fn vrow_f32(
    out: &mut [u8],
    a: &[u8],
    b: &[u8],
    s0: usize,
    s1: usize,
    f: impl Fn(f32, f32, f32) -> f32,
) {
    let g = f32::from_le_bytes;
    vrow(out, a, b, s0, s1, |x, y, d| f(g(x), g(y), g(d)).to_le_bytes());
}

/// [`vrow`] in s32: the result computed in i64 and saturated, as the general path does.
#[inline(always)]
fn vrow_s32(
    out: &mut [u8],
    a: &[u8],
    b: &[u8],
    s0: usize,
    s1: usize,
    f: impl Fn(i64, i64, i64) -> i64,
) {
    let g = |w: [u8; 4]| i64::from(i32::from_le_bytes(w));
    vrow(out, a, b, s0, s1, |x, y, d| {
        (saturate(f(g(x), g(y), g(d)), Dtype::S32) as i32).to_le_bytes()
    });
}

/// `vx.requant`'s fast path: `x` requantised to `dtype` with record `j` for column `j` of
/// rows of `cols` (`cols` 0: the one record for every element), row by row without a
/// division per element, compiled for AVX2 when the CPU has it.
pub(crate) fn requant_rows(
    x: &[i64],
    recs: &[super::numerics::RequantRecord],
    cols: usize,
    dtype: Dtype,
) -> Vec<i64> {
    let mut y = Vec::with_capacity(x.len());
    requant_into(x, recs, cols, dtype, &mut y);
    y
}

fn requant_into(
    x: &[i64],
    recs: &[super::numerics::RequantRecord],
    cols: usize,
    dtype: Dtype,
    y: &mut Vec<i64>,
) {
    with_avx2!(requant_generic(
        x: &[i64],
        recs: &[super::numerics::RequantRecord],
        cols: usize,
        dtype: Dtype,
        y: &mut Vec<i64>
    ))
}

#[inline(always)]
fn requant_generic(
    x: &[i64],
    recs: &[super::numerics::RequantRecord],
    cols: usize,
    dtype: Dtype,
    y: &mut Vec<i64>,
) {
    if cols == 0 {
        y.extend(x.iter().map(|&v| recs[0].apply(v as i32, dtype)));
    } else {
        for row in x.chunks_exact(cols) {
            y.extend(row.iter().zip(recs).map(|(&v, r)| r.apply(v as i32, dtype)));
        }
    }
}
