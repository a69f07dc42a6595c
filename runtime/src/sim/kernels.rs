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

/// `c[r][j] (+)= Σ_k a[r][k] · w[k][j]` for `rows` rows: `a` is `rows × k`, `w` is `k × n`,
/// `c` is `rows × n`, all dense row-major.
pub(crate) fn matmul_f32(a: &[f32], w: &[f32], c: &mut [f32], k: usize, n: usize) {
    with_avx2!(matmul_f32_generic(a: &[f32], w: &[f32], c: &mut [f32], k: usize, n: usize))
}

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
