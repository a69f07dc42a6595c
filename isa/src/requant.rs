//! Requantisation, defined once for the compiler (which writes records and will compute the
//! integer reference) and the simulator (which executes `vx.requant`): the 16-byte record
//! layout and the fixed-point arithmetic, exactly as TFLite and gemmlowp compute it (the book's
//! numerics page, "Requantisation").

use crate::Dtype;

/// Bytes of one record in a requantisation table.
pub const RECORD_BYTES: usize = 16;

/// Bytes of one record with a bias (`vx.requant bias=1`): the record, then the `s32` bias.
pub const BIASED_RECORD_BYTES: usize = 20;

/// The record size `vx.requant` reads: [`BIASED_RECORD_BYTES`] with `bias`, else
/// [`RECORD_BYTES`].
pub fn record_bytes(bias: bool) -> usize {
    if bias { BIASED_RECORD_BYTES } else { RECORD_BYTES }
}

/// Smallest and largest value of an integer type.
#[inline]
pub fn int_range(dtype: Dtype) -> (i64, i64) {
    match dtype {
        Dtype::S8 => (i8::MIN.into(), i8::MAX.into()),
        Dtype::U8 => (0, u8::MAX.into()),
        Dtype::S16 => (i16::MIN.into(), i16::MAX.into()),
        Dtype::S32 => (i32::MIN.into(), i32::MAX.into()),
        // Float types never reach integer saturation.
        Dtype::Bf16 | Dtype::F32 => (i64::MIN, i64::MAX),
    }
}

/// TFLite's saturating rounding doubling high multiply, as written there: the oracle the
/// branch-free [`Prepared::apply`] is tested against.
#[cfg(test)]
fn srdhm(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Division truncates toward zero, as in C.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// TFLite's rounding divide by a power of two (round half away from zero), as written there
/// (the test oracle, as [`srdhm`]).
#[cfg(test)]
fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    let mask: i32 = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// One requantisation record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequantRecord {
    /// A Q31 fraction: the real multiplier times 2^31.
    pub multiplier: i32,
    /// Power-of-two exponent: positive shifts left, negative right; -31..=30.
    pub shift: i32,
    /// Added after scaling.
    pub zero_point: i32,
    /// Lower clamp (intersected with the output type's range; not applied to `s32` results).
    pub clamp_lo: i16,
    /// Upper clamp.
    pub clamp_hi: i16,
}

impl RequantRecord {
    /// Encodes as 16 little-endian bytes: multiplier, shift, zero point (`s32` each), then
    /// clamp_lo and clamp_hi (`s16` each).
    pub fn to_bytes(&self) -> [u8; RECORD_BYTES] {
        let mut b = [0u8; RECORD_BYTES];
        b[0..4].copy_from_slice(&self.multiplier.to_le_bytes());
        b[4..8].copy_from_slice(&self.shift.to_le_bytes());
        b[8..12].copy_from_slice(&self.zero_point.to_le_bytes());
        b[12..14].copy_from_slice(&self.clamp_lo.to_le_bytes());
        b[14..16].copy_from_slice(&self.clamp_hi.to_le_bytes());
        b
    }

    /// Encodes with a bias as [`BIASED_RECORD_BYTES`] little-endian bytes: the record's 16
    /// bytes, then `bias` (`s32`).
    pub fn to_bytes_with_bias(&self, bias: i32) -> [u8; BIASED_RECORD_BYTES] {
        let mut b = [0u8; BIASED_RECORD_BYTES];
        b[..RECORD_BYTES].copy_from_slice(&self.to_bytes());
        b[RECORD_BYTES..].copy_from_slice(&bias.to_le_bytes());
        b
    }

    /// Decodes 16 little-endian bytes.
    pub fn from_bytes(b: &[u8; 16]) -> RequantRecord {
        let i32_at = |o: usize| i32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        RequantRecord {
            multiplier: i32_at(0),
            shift: i32_at(4),
            zero_point: i32_at(8),
            clamp_lo: i16::from_le_bytes([b[12], b[13]]),
            clamp_hi: i16::from_le_bytes([b[14], b[15]]),
        }
    }

    /// The record for the real multiplier `m` (an input step over an output step, `m > 0`),
    /// as TFLite's `QuantizeMultiplier` computes it: `m = q · 2^shift` with `q` in
    /// `[0.5, 1)`, `multiplier = round(q · 2^31)` (a result of `2^31` halves and bumps the
    /// shift). A multiplier below `2^-32` rounds every `s32` input to 0 and is recorded as
    /// multiplier 0. `None` when `m` is not finite and positive or is `2^30` or more (the
    /// shift field's range).
    pub fn from_real(
        m: f64,
        zero_point: i32,
        clamp_lo: i16,
        clamp_hi: i16,
    ) -> Option<RequantRecord> {
        if !(m.is_finite() && m > 0.0) {
            return None;
        }
        // frexp: m = q · 2^e with q in [0.5, 1).
        let mut e = m.log2().floor() as i32 + 1;
        let mut q = m / 2f64.powi(e);
        // log2 can be off by one at exact powers of two.
        while q >= 1.0 {
            q /= 2.0;
            e += 1;
        }
        while q < 0.5 {
            q *= 2.0;
            e -= 1;
        }
        let mut fixed = (q * 2f64.powi(31)).round() as i64;
        if fixed == 1i64 << 31 {
            fixed /= 2;
            e += 1;
        }
        let (multiplier, shift) = if e < -31 { (0, 0) } else { (fixed as i32, e) };
        let r = RequantRecord { multiplier, shift, zero_point, clamp_lo, clamp_hi };
        r.valid().then_some(r)
    }

    /// Whether the shift is in the defined range.
    pub fn valid(&self) -> bool {
        (-31..=30).contains(&self.shift)
    }

    /// `x` requantised to `dtype` (the record must be valid).
    #[inline]
    pub fn apply(&self, x: i32, dtype: Dtype) -> i64 {
        self.prepare(dtype).apply(i64::from(x))
    }

    /// The record for results of type `dtype`, in the form a row of elements reads (the record
    /// must be valid): shifts split, clamps intersected with the type's range.
    pub fn prepare(&self, dtype: Dtype) -> Prepared {
        let (tlo, thi) = int_range(dtype);
        // An s32 result (a rescaling between integer grids) only saturates: the 16-bit clamp
        // fields bound 8- and 16-bit outputs.
        let (lo, hi) = if dtype == Dtype::S32 {
            (tlo, thi)
        } else {
            (i64::from(self.clamp_lo).max(tlo), i64::from(self.clamp_hi).min(thi))
        };
        Prepared {
            left: self.shift.max(0) as u32,
            multiplier: self.multiplier,
            right: (-self.shift).max(0) as u32,
            zero_point: i64::from(self.zero_point),
            lo,
            hi,
        }
    }
}

/// A [`RequantRecord`] prepared for one result type ([`RequantRecord::prepare`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    left: u32,
    multiplier: i32,
    right: u32,
    zero_point: i64,
    lo: i64,
    hi: i64,
}

impl Prepared {
    /// The `s32` value `x` requantised: the left shift (saturating to `s32`), TFLite's
    /// saturating rounding doubling high multiply, its rounding divide by a power of two (half
    /// away from zero), the zero point, the clamp. Written without branches (the truncating
    /// division by 2³¹ as a shift with the sign's correction) so a row of them vectorises.
    #[inline(always)]
    pub fn apply(&self, x: i64) -> i64 {
        let a = (x << self.left).clamp(i32::MIN.into(), i32::MAX.into());
        let ab = a * i64::from(self.multiplier);
        let t = ab + if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
        let q0 = (t + ((t >> 63) & ((1 << 31) - 1))) >> 31;
        // The one product that overflows: (−2³¹)·(−2³¹) saturates.
        let q0 = if a == i64::from(i32::MIN) && self.multiplier == i32::MIN {
            i64::from(i32::MAX)
        } else {
            q0
        };
        let mask = (1i64 << self.right) - 1;
        let threshold = (mask >> 1) + i64::from(q0 < 0);
        let q = (q0 >> self.right) + i64::from((q0 & mask) > threshold);
        // An empty clamp range (lo > hi) yields hi, as clamp-to-hi-after-lo would.
        (q + self.zero_point).max(self.lo).min(self.hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The branch-free rule against TFLite's functions as written, over every shift, extreme
    /// multipliers (the one overflowing product, −2³¹·−2³¹, among them) and inputs, zero points
    /// and clamps, and every result type.
    #[test]
    fn the_branch_free_rule_is_tflites() {
        let textbook = |r: &RequantRecord, x: i32, dtype: Dtype| -> i64 {
            let left = r.shift.max(0) as u32;
            let right = (-r.shift).max(0) as u32;
            let a = (i64::from(x) << left).clamp(i32::MIN.into(), i32::MAX.into()) as i32;
            let q = rounding_divide_by_pot(srdhm(a, r.multiplier), right);
            let (tlo, thi) = int_range(dtype);
            let (lo, hi) = if dtype == Dtype::S32 {
                (tlo, thi)
            } else {
                (i64::from(r.clamp_lo).max(tlo), i64::from(r.clamp_hi).min(thi))
            };
            (i64::from(q) + i64::from(r.zero_point)).max(lo).min(hi)
        };
        // xorshift64*, enough to vary the values.
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let specials = [i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX - 1, i32::MAX];
        for dtype in [Dtype::S8, Dtype::U8, Dtype::S16, Dtype::S32] {
            for shift in -31..=30 {
                for k in 0..12usize {
                    let multiplier = specials.get(k).copied().unwrap_or(next() as i32);
                    let r = RequantRecord {
                        multiplier,
                        shift,
                        zero_point: if k % 3 == 1 { 0 } else { next() as i32 >> (k % 24 + 4) },
                        clamp_lo: next() as i16,
                        clamp_hi: if k % 2 == 0 { i16::MAX } else { next() as i16 },
                    };
                    let xs = specials.into_iter().chain((0..40).map(|i| next() as i32 >> (i % 31)));
                    for x in xs {
                        assert_eq!(r.apply(x, dtype), textbook(&r, x, dtype), "{dtype} {r:?} {x}");
                    }
                }
            }
        }
    }

    #[test]
    fn records_round_trip_through_bytes() {
        let r = RequantRecord {
            multiplier: 0x4000_0001,
            shift: -7,
            zero_point: -3,
            clamp_lo: -128,
            clamp_hi: 127,
        };
        assert_eq!(RequantRecord::from_bytes(&r.to_bytes()), r);
    }

    #[test]
    fn multipliers_from_real_scales() {
        // 0.5 = 0.5 · 2^0; 1.0 = 0.5 · 2^1; 0.75 · 2^-3.
        let r = |m| RequantRecord::from_real(m, 0, -128, 127).map(|r| (r.multiplier, r.shift));
        assert_eq!(r(0.5), Some((1 << 30, 0)));
        assert_eq!(r(1.0), Some((1 << 30, 1)));
        assert_eq!(r(0.75 / 8.0), Some((3 << 29, -3)));
        // Rounding up to 2^31 moves to the next power of two.
        assert_eq!(r(1.0 - 1e-12), Some((1 << 30, 1)));
        assert_eq!(r(0.0), None);
        assert_eq!(r(f64::NAN), None);
        assert_eq!(r(2f64.powi(31)), None);
        assert_eq!(r(1e-12), Some((0, 0)));
        // The record reproduces x · m within one step of rounding.
        let rec = RequantRecord::from_real(0.0123, 3, -128, 127).unwrap();
        for x in [-9000, -100, 0, 1, 77, 5000] {
            let want = (f64::from(x) * 0.0123).round() as i64 + 3;
            assert!((rec.apply(x, Dtype::S8) - want.clamp(-128, 127)).abs() <= 1, "{x}");
        }
    }

    #[test]
    fn s32_results_only_saturate() {
        // The clamp fields bound 8- and 16-bit results; an s32 rescaling ignores them.
        let r = RequantRecord::from_real(1000.0, -7, -5, 5).unwrap();
        assert_eq!(r.apply(3, Dtype::S32), 2993);
        assert_eq!(r.apply(3, Dtype::S16), 5);
        assert_eq!(r.apply(-3, Dtype::S32), -3007);
        let near_top = RequantRecord::from_real(1000.0, i32::MAX - 5, 0, 0).unwrap();
        assert_eq!(near_top.apply(3, Dtype::S32), i64::from(i32::MAX));
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
}
