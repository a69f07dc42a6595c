//! Bit-exact arithmetic as the book's numerics page specifies it: saturation, conversions,
//! bf16 rounding, requantisation and the float functions.

use accelc_isa::Dtype;

/// Smallest and largest value of an integer type.
pub(crate) fn int_range(dtype: Dtype) -> (i64, i64) {
    match dtype {
        Dtype::S8 => (i8::MIN.into(), i8::MAX.into()),
        Dtype::U8 => (0, u8::MAX.into()),
        Dtype::S16 => (i16::MIN.into(), i16::MAX.into()),
        Dtype::S32 => (i32::MIN.into(), i32::MAX.into()),
        // Float types never reach integer saturation.
        Dtype::Bf16 | Dtype::F32 => (i64::MIN, i64::MAX),
    }
}

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

/// TFLite's saturating rounding doubling high multiply.
fn srdhm(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Division truncates toward zero, as in C.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// TFLite's rounding divide by a power of two (round half away from zero).
fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    let mask: i32 = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// One requantisation record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequantRecord {
    pub(crate) multiplier: i32,
    pub(crate) shift: i32,
    pub(crate) zero_point: i32,
    pub(crate) clamp_lo: i16,
    pub(crate) clamp_hi: i16,
}

impl RequantRecord {
    /// Decodes 16 little-endian bytes.
    pub(crate) fn from_bytes(b: &[u8; 16]) -> RequantRecord {
        let i32_at = |o: usize| i32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        RequantRecord {
            multiplier: i32_at(0),
            shift: i32_at(4),
            zero_point: i32_at(8),
            clamp_lo: i16::from_le_bytes([b[12], b[13]]),
            clamp_hi: i16::from_le_bytes([b[14], b[15]]),
        }
    }

    /// Whether the shift is in the defined range.
    pub(crate) fn valid(&self) -> bool {
        (-31..=30).contains(&self.shift)
    }

    /// `x` requantised to `dtype` (the record must be valid).
    pub(crate) fn apply(&self, x: i32, dtype: Dtype) -> i64 {
        let left = self.shift.max(0) as u32;
        let right = (-self.shift).max(0) as u32;
        let a = (i64::from(x) << left).clamp(i32::MIN.into(), i32::MAX.into()) as i32;
        let q = rounding_divide_by_pot(srdhm(a, self.multiplier), right);
        let (tlo, thi) = int_range(dtype);
        let lo = i64::from(self.clamp_lo).max(tlo);
        let hi = i64::from(self.clamp_hi).min(thi);
        // An empty clamp range (lo > hi) yields hi, as clamp-to-hi-after-lo would.
        (i64::from(q) + i64::from(self.zero_point)).max(lo).min(hi)
    }
}

/// `1 / (1 + expf(-x))` in binary32, as written.
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

/// IEEE max/min with NaN propagation and -0 < +0.
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
    fn requant_matches_tflite_reference_values() {
        // multiplier 0.5 in Q31, no shift: 100 * 0.5 = 50.
        let r = RequantRecord {
            multiplier: 1 << 30,
            shift: 0,
            zero_point: 0,
            clamp_lo: -128,
            clamp_hi: 127,
        };
        assert_eq!(r.apply(100, Dtype::S8), 50);
        // 0.5 with a right shift of 2: 100 * 0.5 / 4 = 12.5, rounded away from zero: 13.
        let r = RequantRecord { shift: -2, ..r };
        assert_eq!(r.apply(100, Dtype::S8), 13);
        assert_eq!(r.apply(-100, Dtype::S8), -13);
        // Saturation of the doubling multiply (MIN x MIN is the one overflowing case); the
        // record's clamp then bounds it.
        let r = RequantRecord {
            multiplier: i32::MIN,
            shift: 0,
            zero_point: 0,
            clamp_lo: i16::MIN,
            clamp_hi: i16::MAX,
        };
        assert_eq!(r.apply(i32::MIN, Dtype::S16), i64::from(i16::MAX));
        assert_eq!(r.apply(i32::MIN + 1, Dtype::S16), i64::from(i16::MAX));
        // Zero point and clamp (a fused ReLU at zero point 10).
        let r = RequantRecord {
            multiplier: 1 << 30,
            shift: 0,
            zero_point: 10,
            clamp_lo: 10,
            clamp_hi: 255,
        };
        assert_eq!(r.apply(-100, Dtype::U8), 10);
        assert_eq!(r.apply(1000, Dtype::U8), 255);
    }

    #[test]
    fn max_min_nan_and_signed_zero() {
        assert!(fmax(f32::NAN, 1.0).is_nan());
        assert_eq!(fmax(-0.0, 0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(fmin(-0.0, 0.0).to_bits(), (-0.0f32).to_bits());
    }
}
