//! Bit-exact arithmetic as the book's numerics page specifies it: saturation, conversions,
//! bf16 rounding and the float functions (requantisation is `accelc_isa::requant`, shared with
//! the compiler).

use accelc_isa::Dtype;

pub(crate) use accelc_isa::requant::{RequantRecord, int_range};

/// Saturates `v` to an integer type.
pub(crate) fn saturate(v: i64, dtype: Dtype) -> i64 {
    let (lo, hi) = int_range(dtype);
    v.clamp(lo, hi)
}

/// bf16 bits to f32 (exact).
pub(crate) fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// f32 to bf16 bits: round to nearest, ties to even; NaN becomes the quiet NaN `0x7fc0` with
/// the input's sign.
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16 & 0x8000) | 0x7fc0;
    }
    let lsb = (bits >> 16) & 1;
    let rounded = bits.wrapping_add(0x7fff + lsb);
    (rounded >> 16) as u16
}

/// Float to integer: round half to even, saturate, NaN to 0.
pub(crate) fn float_to_int(x: f32, dtype: Dtype) -> i64 {
    if x.is_nan() {
        return 0;
    }
    let r = x.round_ties_even();
    let (lo, hi) = int_range(dtype);
    // Compare in f64, where every i32 bound is exact.
    let r = f64::from(r);
    if r <= lo as f64 {
        lo
    } else if r >= hi as f64 {
        hi
    } else {
        r as i64
    }
}

/// Integer to f32: round to nearest, ties to even (Rust's `as` conversion does exactly this).
pub(crate) fn int_to_float(v: i64) -> f32 {
    v as f32
}

/// `1 / (1 + expf(-x))` in binary32, as written.
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

/// IEEE max/min with NaN propagation and -0 < +0.
/// The canonical quiet NaN, `0x7fc00000`: every NaN a float operation produces (see
/// [`canon`]).
pub(crate) const CANONICAL_NAN: u32 = 0x7fc0_0000;

/// `x`, or the canonical quiet NaN if `x` is any NaN. Arithmetic results pass through this so
/// a NaN's sign and payload never depend on which operand the host's instruction propagated
/// (x86 returns the first operand's, and the compiler may commute additions), as on Arm's
/// default-NaN mode.
#[inline(always)]
pub(crate) fn canon(x: f32) -> f32 {
    if x.is_nan() { f32::from_bits(CANONICAL_NAN) } else { x }
}

pub(crate) fn fmax(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a == b {
        // Equal values differ only in the sign of zero.
        if a.is_sign_negative() { b } else { a }
    } else if a > b {
        a
    } else {
        b
    }
}

/// See [`fmax`].
pub(crate) fn fmin(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a == b {
        if a.is_sign_negative() { a } else { b }
    } else if a < b {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding() {
        // 1.0 + 2^-8 is exactly halfway between two bf16 values: ties to even (1.0).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1.0 + 3·2^-8 is halfway between 0x3f81 and 0x3f82: ties to even (0x3f82).
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(f32_to_bf16(-f32::NAN), 0xffc0);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
    }

    #[test]
    fn float_to_int_rounds_half_even_and_saturates() {
        assert_eq!(float_to_int(2.5, Dtype::S8), 2);
        assert_eq!(float_to_int(-2.5, Dtype::S8), -2);
        assert_eq!(float_to_int(3.5, Dtype::S8), 4);
        assert_eq!(float_to_int(1e9, Dtype::S8), 127);
        assert_eq!(float_to_int(-1.0, Dtype::U8), 0);
        assert_eq!(float_to_int(f32::NAN, Dtype::S32), 0);
        assert_eq!(float_to_int(3e9, Dtype::S32), i64::from(i32::MAX));
    }

    #[test]
    fn max_min_nan_and_signed_zero() {
        assert!(fmax(f32::NAN, 1.0).is_nan());
        assert_eq!(fmax(-0.0, 0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(fmin(-0.0, 0.0).to_bits(), (-0.0f32).to_bits());
    }
}
