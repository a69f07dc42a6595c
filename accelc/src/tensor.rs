//! Host tensors: a data type, dimensions and little-endian row-major bytes, for every data type
//! the IR has; the currency of [`crate::Session::run`], [`crate::reference`] and the bindings.

use accelc_compiler::interp::Array;
use accelc_compiler::ir::{DType, Tensor};

use crate::Error;

/// A dense tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Element type.
    pub dtype: DType,
    /// Dimensions (empty for a scalar).
    pub dims: Vec<usize>,
    /// `product(dims) · dtype.size()` bytes, little-endian, row-major.
    pub data: Vec<u8>,
}

impl HostTensor {
    /// A tensor from its parts; errors when the byte count does not match the dimensions or a
    /// bool byte is neither 0 nor 1.
    pub fn new(dtype: DType, dims: Vec<usize>, data: Vec<u8>) -> Result<HostTensor, Error> {
        let want = dims
            .iter()
            .try_fold(dtype.size(), |a, d| a.checked_mul(*d))
            .ok_or_else(|| Error::Input(format!("{dtype}{dims:?} has too many elements")))?;
        if data.len() != want {
            return Err(Error::Input(format!(
                "{dtype}{dims:?} needs {want} bytes; {} given",
                data.len()
            )));
        }
        // A bool is one byte holding 0 or 1 (numpy's `|b1`); another byte is not a bool and
        // would not compare equal to `true` on the device.
        if dtype == DType::Bool
            && let Some(i) = data.iter().position(|b| *b > 1)
        {
            return Err(Error::Input(format!(
                "bool element {i} is the byte {}, not 0 or 1",
                data[i]
            )));
        }
        Ok(HostTensor { dtype, dims, data })
    }

    /// An `f32` tensor.
    pub fn from_f32(dims: Vec<usize>, values: &[f32]) -> Result<HostTensor, Error> {
        HostTensor::new(DType::F32, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Tensors of the given types and dimensions, filled from one SplitMix64 stream seeded with
    /// `seed`, in order: floats uniform in [-1, 1), integers the type's low bits of the stream,
    /// bools its lowest bit. These are the inputs tools use when none are given.
    pub fn random(specs: &[(DType, Vec<usize>)], seed: u64) -> Vec<HostTensor> {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        specs
            .iter()
            .map(|(dtype, dims)| {
                let n: usize = dims.iter().product();
                let data: Vec<u8> = match dtype {
                    DType::F32 => (0..n)
                        .flat_map(|_| {
                            ((next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).to_le_bytes()
                        })
                        .collect(),
                    DType::Bool => (0..n).map(|_| (next() & 1) as u8).collect(),
                    d if d.storage_float() => (0..n)
                        .flat_map(|_| {
                            let v = f64::from((next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0);
                            d.int_bytes(d.float_to_bits(v))
                        })
                        .collect(),
                    _ => {
                        (0..n).flat_map(|_| next().to_le_bytes()[..dtype.size()].to_vec()).collect()
                    }
                };
                HostTensor { dtype: *dtype, dims: dims.clone(), data }
            })
            .collect()
    }

    /// Elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as `f32` (`None` unless the type is a float type): float16 and bfloat16
    /// exactly, double rounded to nearest (for comparisons within a tolerance; see
    /// [`HostTensor::f64s`]).
    pub fn f32s(&self) -> Option<Vec<f32>> {
        if self.dtype == DType::F32 {
            return Some(
                self.data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            );
        }
        Some(self.f64s()?.into_iter().map(|v| v as f32).collect())
    }

    /// The values of a float tensor, exactly, as `f64` (`None` for other types).
    pub fn f64s(&self) -> Option<Vec<f64>> {
        if self.dtype == DType::F32 {
            return Some(self.f32s()?.into_iter().map(f64::from).collect());
        }
        self.dtype.storage_float().then(|| {
            self.to_ir().i64s().into_iter().map(|b| self.dtype.float_from_bits(b)).collect()
        })
    }

    /// The values as `i64` (`None` for float types): integers sign- or zero-extended, bools
    /// 0 or 1, uint64 as its bit pattern.
    pub fn ints(&self) -> Option<Vec<i64>> {
        let d = &self.data;
        Some(match self.dtype {
            DType::F32 | DType::F16 | DType::BF16 | DType::F64 => return None,
            DType::I8 => d.iter().map(|b| i64::from(*b as i8)).collect(),
            DType::U8 | DType::Bool => d.iter().map(|b| i64::from(*b)).collect(),
            DType::I32 => d
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            DType::I16 => {
                d.chunks_exact(2).map(|b| i64::from(i16::from_le_bytes([b[0], b[1]]))).collect()
            }
            DType::U16 => {
                d.chunks_exact(2).map(|b| i64::from(u16::from_le_bytes([b[0], b[1]]))).collect()
            }
            DType::U32 => d
                .chunks_exact(4)
                .map(|b| i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            DType::I64 | DType::U64 => d
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
        })
    }

    /// Element `i` (flat, row-major) as text, exactly (`None` past the end).
    pub fn element_text(&self, i: usize) -> Option<String> {
        match self.dtype {
            DType::F32 => self.f32s()?.get(i).map(|v| v.to_string()),
            d if d.is_float() => self.f64s()?.get(i).map(|v| v.to_string()),
            DType::U64 => self.ints()?.get(i).map(|v| (*v as u64).to_string()),
            _ => self.ints()?.get(i).map(|v| v.to_string()),
        }
    }

    /// The IR tensor with the same contents.
    pub fn to_ir(&self) -> Tensor {
        Tensor { dtype: self.dtype, shape: self.dims.clone(), data: self.data.clone().into() }
    }

    /// From an IR tensor.
    pub fn from_ir(t: &Tensor) -> HostTensor {
        HostTensor { dtype: t.dtype, dims: t.shape.clone(), data: t.data.to_vec() }
    }

    /// The reference interpreter's array.
    pub(crate) fn to_array(&self) -> Array {
        Array::from_tensor(&self.to_ir())
    }

    /// From the reference interpreter's array.
    pub(crate) fn from_array(a: &Array) -> HostTensor {
        HostTensor::from_ir(&a.to_tensor())
    }
}
