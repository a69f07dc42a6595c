//! The matrix engine's inner loops, written so the compiler vectorises them: whole rows of the
//! output are accumulated in fixed-size register arrays across the reduction, never one element
//! at a time through memory.
//!
//! Floats follow the book's order exactly (for every output, increasing `k`, each product and
//! each sum rounded, no fused multiply-add); vectorising across output columns keeps that order.
//!
//! Integer matmuls have their own kernel in 32-bit integers: two steps of the reduction per
//! 16-bit multiply-add (`pmaddwd` under AVX2), twice the float kernel's rate. Every product of
//! 8-bit values is at most 255 · 128 = 32,640 in magnitude, and at most 255 of them (the `k`
//! field is 8 bits) sum to at most 8,323,200: the sums are exact, as the device's are.

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

/// One `mx.matmul`: where its operands live and how to combine them (the weights, float or
/// integer, are passed beside it).
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
    /// Add to C instead of overwriting it.
    pub(crate) accumulate: bool,
}

/// Columns of the integer kernel's weight lanes: `n` rounded up to whole 8-lane vectors.
pub(crate) fn int_cols(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Two 16-bit values in one 32-bit lane, `lo` in the low half: the operand layout of a 16-bit
/// multiply-add, `lo·lo' + hi·hi'` per lane.
fn lane(lo: i16, hi: i16) -> i32 {
    (u32::from(lo as u16) | (u32::from(hi as u16) << 16)) as i32
}

/// `s8` weights (`k` rows of `n` bytes) as the integer kernel reads them: `⌈k/2⌉` rows of
/// [`int_cols`]`(n)` lanes, lane `(p, j)` holding `w[2p][j]` and `w[2p+1][j]` (zero past `k`
/// and `n`).
pub(crate) fn pair_weights<'r>(
    rows: impl Iterator<Item = &'r [u8]>,
    k: usize,
    n: usize,
) -> Vec<i32> {
    let cols = int_cols(n);
    let mut halves = vec![0i16; k.div_ceil(2) * 2 * cols];
    for (r, row) in rows.enumerate() {
        for (j, b) in row.iter().take(n).enumerate() {
            halves[(r / 2 * cols + j) * 2 + r % 2] = i16::from(*b as i8);
        }
    }
    halves.chunks_exact(2).map(|h| lane(h[0], h[1])).collect()
}

/// Runs an integer matmul (`u8`/`s8` inputs, operands already range-checked; `w` as
/// [`pair_weights`] lays it out) in blocks of rows: gathers them as pairs of 16-bit values,
/// runs the kernel, adds the `s32` sums to C with wrapping (or writes them). The gathers and
/// scatters are compiled for AVX2 when the CPU has it.
pub(crate) fn int_matmul_rows(job: MatmulJob<'_>, w: &[i32]) {
    with_avx2!(int_matmul_rows_generic(job: MatmulJob<'_>, w: &[i32]))
}

#[inline(always)]
fn int_matmul_rows_generic(job: MatmulJob<'_>, w: &[i32]) {
    const BLOCK: usize = 64;
    let MatmulJob { spad, acc, abase, a_stride, cbase, c_stride, rows, k, n, dtype, accumulate } =
        job;
    let signed = dtype == Dtype::S8;
    let kp = k.div_ceil(2);
    let cols = int_cols(n);
    // Rows of `2·kp` 16-bit values (a zero after an odd `k`): element pairs are the lanes.
    let mut av: Vec<i16> = vec![0; BLOCK * 2 * kp];
    let mut cv: Vec<i32> = Vec::with_capacity(BLOCK * cols);
    for r0 in (0..rows).step_by(BLOCK) {
        let block = BLOCK.min(rows - r0);
        for (r, dst) in (r0..r0 + block).zip(av.chunks_exact_mut(2 * kp)) {
            let row = &spad[abase + r * a_stride..][..k];
            // Slice to slice, one loop per sign, so each widening vectorises.
            if signed {
                dst.iter_mut().zip(row).for_each(|(t, b)| *t = i16::from(*b as i8));
            } else {
                dst.iter_mut().zip(row).for_each(|(t, b)| *t = i16::from(*b));
            }
        }
        let av = &av[..block * 2 * kp];
        cv.clear();
        cv.resize(block * cols, 0);
        int_kernel(av, w, &mut cv, kp, cols);
        for (r, crow) in cv.chunks_exact(cols).enumerate() {
            let bytes = &mut acc[cbase + (r0 + r) * c_stride..][..4 * n];
            let pairs = crow.iter().zip(bytes.chunks_exact_mut(4));
            if accumulate {
                pairs.for_each(|(v, b)| {
                    let old = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    b.copy_from_slice(&old.wrapping_add(*v).to_le_bytes());
                });
            } else {
                pairs.for_each(|(v, b)| b.copy_from_slice(&v.to_le_bytes()));
            }
        }
    }
}

/// `c[r][j] = Σ_p a[r][2p]·lo(w[p][j]) + a[r][2p+1]·hi(w[p][j])`: `a` is `rows × 2·kp`, `w`
/// is `kp × cols` lanes, `c` is `rows × cols`. AVX2 when the CPU has it and the row fits four
/// vectors, else portable code (the same sums: integer addition is associative).
fn int_kernel(a: &[i16], w: &[i32], c: &mut [i32], kp: usize, cols: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked on the line above.
        #[allow(unsafe_code, reason = "calling an AVX2 kernel after runtime detection")]
        let done = unsafe {
            match cols {
                8 => int_rows_avx2::<1>(a, w, c, kp),
                16 => int_rows_avx2::<2>(a, w, c, kp),
                24 => int_rows_avx2::<3>(a, w, c, kp),
                32 => int_rows_avx2::<4>(a, w, c, kp),
                _ => false,
            }
        };
        if done {
            return;
        }
    }
    int_rows_portable(a, w, c, kp, cols);
}

fn int_rows_portable(a: &[i16], w: &[i32], c: &mut [i32], kp: usize, cols: usize) {
    let half = |x: i32| (i32::from(x as i16), i32::from((x >> 16) as i16));
    for (arow, crow) in a.chunks_exact(2 * kp.max(1)).zip(c.chunks_exact_mut(cols)) {
        for (x, wrow) in arow.chunks_exact(2).zip(w.chunks_exact(cols)) {
            let (x0, x1) = (i32::from(x[0]), i32::from(x[1]));
            for (cv, &wv) in crow.iter_mut().zip(wrow) {
                let (w0, w1) = half(wv);
                *cv = cv.wrapping_add(x0 * w0 + x1 * w1);
            }
        }
    }
}

/// The AVX2 kernel for rows of `8·V` lanes, two rows at a time (each weight vector loaded once
/// for both). Returns whether it ran (the slices have the shapes the caller gave).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code, reason = "unaligned vector loads and stores of checked 8-lane slices")]
fn int_rows_avx2<const V: usize>(a: &[i16], w: &[i32], c: &mut [i32], kp: usize) -> bool {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi32, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_set1_epi32,
        _mm256_setzero_si256, _mm256_storeu_si256,
    };
    let cols = 8 * V;
    if kp == 0
        || w.len() < kp * cols
        || !a.len().is_multiple_of(2 * kp)
        || c.len() != a.len() / (2 * kp) * cols
    {
        return false;
    }
    let load = |s: &[i32]| -> __m256i {
        let s: &[i32; 8] = s.try_into().unwrap_or(&[0; 8]);
        // SAFETY: `s` is 8 readable i32s, 32 bytes; the load is unaligned.
        unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
    };
    let store = |d: &mut [i32], v: __m256i| {
        if let Ok(d) = <&mut [i32; 8]>::try_from(d) {
            // SAFETY: `d` is 8 writable i32s, 32 bytes; the store is unaligned.
            unsafe { _mm256_storeu_si256(d.as_mut_ptr().cast(), v) }
        }
    };
    let x = |p: &[i16]| _mm256_set1_epi32(lane(p[0], p[1]));
    let mut rows = a.chunks_exact(2 * kp).zip(c.chunks_exact_mut(cols));
    while let Some((ra, ca)) = rows.next() {
        let second = rows.next();
        let mut acc_a = [_mm256_setzero_si256(); V];
        let mut acc_b = [_mm256_setzero_si256(); V];
        match &second {
            Some((rb, _)) => {
                let pairs = ra.chunks_exact(2).zip(rb.chunks_exact(2));
                for ((pa, pb), wrow) in pairs.zip(w.chunks_exact(cols)) {
                    let (xa, xb) = (x(pa), x(pb));
                    for v in 0..V {
                        let wv = load(&wrow[8 * v..8 * v + 8]);
                        acc_a[v] = _mm256_add_epi32(acc_a[v], _mm256_madd_epi16(xa, wv));
                        acc_b[v] = _mm256_add_epi32(acc_b[v], _mm256_madd_epi16(xb, wv));
                    }
                }
            }
            None => {
                for (pa, wrow) in ra.chunks_exact(2).zip(w.chunks_exact(cols)) {
                    let xa = x(pa);
                    for v in 0..V {
                        let wv = load(&wrow[8 * v..8 * v + 8]);
                        acc_a[v] = _mm256_add_epi32(acc_a[v], _mm256_madd_epi16(xa, wv));
                    }
                }
            }
        }
        for v in 0..V {
            store(&mut ca[8 * v..8 * v + 8], acc_a[v]);
        }
        if let Some((_, cb)) = second {
            for v in 0..V {
                store(&mut cb[8 * v..8 * v + 8], acc_b[v]);
            }
        }
    }
    true
}

/// Runs a float matmul (operands already range-checked) in blocks of rows small enough to stay in
/// the L1 cache: gather them densely as f32, run the kernel, scatter the results back. The
/// whole loop, gathers and scatters included, is compiled for AVX2 when the CPU has it.
pub(crate) fn matmul_rows(job: MatmulJob<'_>, w: &[f32]) {
    with_avx2!(matmul_rows_generic(job: MatmulJob<'_>, w: &[f32]))
}

#[inline(always)]
fn matmul_rows_generic(job: MatmulJob<'_>, w: &[f32]) {
    const BLOCK: usize = 64;
    let MatmulJob { spad, acc, abase, a_stride, cbase, c_stride, rows, k, n, dtype, accumulate } =
        job;
    let es = dtype.size() as usize;
    let mut av: Vec<f32> = Vec::with_capacity(BLOCK * k);
    let mut cv: Vec<f32> = Vec::with_capacity(BLOCK * n);
    for r0 in (0..rows).step_by(BLOCK) {
        let block = BLOCK.min(rows - r0);
        av.clear();
        for r in r0..r0 + block {
            let row = &spad[abase + r * a_stride..][..k * es];
            match dtype {
                Dtype::Bf16 => av.extend(
                    row.chunks_exact(2).map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
                ),
                _ => av.extend(
                    row.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                ),
            }
        }
        cv.clear();
        if accumulate {
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
            crow.iter()
                .zip(bytes.chunks_exact_mut(4))
                .for_each(|(v, b)| b.copy_from_slice(&super::numerics::canon(*v).to_le_bytes()));
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
    // Prepared once per record, then applied branch-free, so the row loop vectorises.
    let rq: Vec<_> = recs.iter().map(|r| r.prepare(dtype)).collect();
    let start = y.len();
    y.resize(start + x.len(), 0);
    let out = &mut y[start..];
    if cols == 0 {
        let r = rq[0];
        out.iter_mut().zip(x).for_each(|(o, &v)| *o = r.apply(v));
    } else {
        for (orow, row) in out.chunks_exact_mut(cols).zip(x.chunks_exact(cols)) {
            orow.iter_mut().zip(row).zip(&rq).for_each(|((o, &v), r)| *o = r.apply(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), enough to vary shapes and values.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The requantisation row loop applies each column's own record (per channel), or the one
    /// record (per tensor), after what the output already holds; the rule itself is
    /// `accelc_isa::requant`'s, tested there against TFLite's functions.
    #[test]
    fn requantisation_rows_apply_each_columns_record() {
        use super::super::numerics::RequantRecord;
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let (rows, cols) = (5, 7);
        let recs: Vec<RequantRecord> = (0..cols)
            .map(|c| RequantRecord {
                multiplier: (1 << 30) + rng.next() as i32 / 4,
                shift: c as i32 * 3 - 12,
                zero_point: c as i32 * 5 - 15,
                clamp_lo: -100,
                clamp_hi: 100,
            })
            .collect();
        let x: Vec<i64> = (0..rows * cols).map(|_| i64::from(rng.next() as i32 >> 12)).collect();
        for dtype in [Dtype::S8, Dtype::U8, Dtype::S16, Dtype::S32] {
            let mut y = vec![7];
            requant_into(&x, &recs, cols, dtype, &mut y);
            let want: Vec<i64> = std::iter::once(7)
                .chain(x.iter().enumerate().map(|(i, v)| recs[i % cols].apply(*v as i32, dtype)))
                .collect();
            assert_eq!(y, want, "per channel, {dtype}");
            let mut y = vec![7];
            requant_into(&x, &recs[2..3], 0, dtype, &mut y);
            let want: Vec<i64> = std::iter::once(7)
                .chain(x.iter().map(|v| recs[2].apply(*v as i32, dtype)))
                .collect();
            assert_eq!(y, want, "per tensor, {dtype}");
        }
    }

    /// The integer kernel against the definition, `C (+)= A · W` in exact integers with
    /// wrapping addition into C, over shapes on both sides of the AVX2 kernel's (odd `k`,
    /// columns that are not whole vectors or more than four, one row and odd row counts,
    /// blocks of more than 64 rows, strided rows), both input signs, and accumulators near the
    /// ends of int32.
    #[test]
    fn integer_matmul_is_the_exact_product() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..400 {
            let k = 1 + rng.below(40);
            let n = 1 + rng.below(40);
            let rows = 1 + rng.below(if case % 10 == 0 { 150 } else { 9 });
            let signed = rng.below(2) == 0;
            let accumulate = rng.below(2) == 0;
            let a_stride = k + rng.below(5);
            let c_stride = 4 * n + 4 * rng.below(3);
            let spad: Vec<u8> = (0..rows * a_stride + 8).map(|_| rng.next() as u8).collect();
            let wbytes: Vec<u8> = (0..k * n).map(|_| rng.next() as u8).collect();
            let mut acc: Vec<u8> = (0..rows * c_stride)
                .flat_map(|_| {
                    let v = match rng.below(3) {
                        0 => i32::MAX - rng.below(1000) as i32,
                        1 => i32::MIN + rng.below(1000) as i32,
                        _ => rng.next() as i32,
                    };
                    v.to_le_bytes()
                })
                .take(rows * c_stride)
                .collect();
            let before = acc.clone();
            let w = pair_weights(wbytes.chunks(n), k, n);
            let job = MatmulJob {
                spad: &spad,
                acc: &mut acc,
                abase: 3,
                a_stride,
                cbase: 0,
                c_stride,
                rows,
                k,
                n,
                dtype: if signed { Dtype::S8 } else { Dtype::U8 },
                accumulate,
            };
            int_matmul_rows(job, &w);
            for r in 0..rows {
                for j in 0..n {
                    let mut sum = 0i64;
                    for kk in 0..k {
                        let b = spad[3 + r * a_stride + kk];
                        let x = if signed { i64::from(b as i8) } else { i64::from(b) };
                        sum += x * i64::from(wbytes[kk * n + j] as i8);
                    }
                    let at = r * c_stride + 4 * j;
                    let old = i32::from_le_bytes(before[at..at + 4].try_into().unwrap());
                    let want = if accumulate { old.wrapping_add(sum as i32) } else { sum as i32 };
                    let got = i32::from_le_bytes(acc[at..at + 4].try_into().unwrap());
                    assert_eq!(got, want, "case {case}: k {k} n {n} rows {rows} at ({r}, {j})");
                }
                // Bytes between rows are untouched.
                let (end, next) = (r * c_stride + 4 * n, (r + 1) * c_stride);
                assert_eq!(acc[end..next.min(acc.len())], before[end..next.min(acc.len())]);
            }
            // The portable kernel computes the same lanes as the dispatched one.
            let kp = k.div_ceil(2);
            let cols = int_cols(n);
            let a: Vec<i16> = (0..rows * 2 * kp).map(|_| rng.next() as u8 as i16 - 128).collect();
            let (mut c1, mut c2) = (vec![0; rows * cols], vec![0; rows * cols]);
            int_kernel(&a, &w, &mut c1, kp, cols);
            int_rows_portable(&a, &w, &mut c2, kp, cols);
            assert_eq!(c1, c2, "case {case}");
        }
    }
}
