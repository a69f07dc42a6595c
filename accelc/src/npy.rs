//! `.npy` files (NumPy's format, version 1.0 to 3.0) for every data type the IR has, read with
//! every size checked before anything is allocated and written atomically; and `.pb` tensors
//! (ONNX `TensorProto`s, as the ONNX backend tests store theirs) for reading.
//!
//! The format (numpy.lib.format): the magic `\x93NUMPY`, a major and minor version byte, the
//! header length (2 bytes little-endian in version 1, 4 bytes in versions 2 and 3), an ASCII
//! (version 3: UTF-8) Python dict literal `{'descr': ..., 'fortran_order': ..., 'shape': (...)}`
//! padded with spaces and a newline, then the elements. Only what a tensor needs is accepted:
//! little-endian (or byte-order-free) `f4`, `i1`, `u1`, `i2`, `u2`, `i4`, `u4`, `i8` and `b1`, in C order or
//! Fortran order (rearranged to row-major on reading), and a data
//! section of exactly `product(shape) · itemsize` bytes: a header claiming more elements than
//! the file holds is an error naming both counts, never an allocation of the claimed size.

use std::io::Read;
use std::path::Path;

use accelc_compiler::ir::DType;

use crate::{Error, HostTensor};

/// The largest header accepted (numpy itself writes a few hundred bytes; version 1 cannot
/// exceed 64 KiB).
pub const MAX_HEADER_BYTES: usize = 1 << 20;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

fn bad(path: &Path, m: impl std::fmt::Display) -> Error {
    // Messages quote the header; a header may hold up to 1 MiB.
    Error::Input(format!("{}: {}", path.display(), accelc_isa::Clipped(&m.to_string())))
}

/// The `descr` string (numpy's `dtype.str`) for a data type: `<f4`, `|i1`, `|u1`, `<i2`,
/// `<u2`, `<i4`, `<u4`, `<i8`, `<u8`, `|b1`, `<f2`, `<f8`; bfloat16, which numpy lacks, as
/// `|V2` (two opaque bytes, as `ml_dtypes` saves it; read back as bfloat16).
pub fn descr(d: DType) -> &'static str {
    match d {
        DType::F32 => "<f4",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::Bool => "|b1",
        DType::I16 => "<i2",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::F16 => "<f2",
        DType::F64 => "<f8",
        // numpy has no bfloat16; ml_dtypes writes it as two opaque bytes.
        DType::BF16 => "|V2",
    }
}

/// The data type of a `descr` string (numpy's `dtype.str`), little-endian or one byte; `None`
/// for any other type or byte order.
pub fn from_descr(s: &str) -> Option<DType> {
    // `<` little-endian, `|` not applicable (one byte), `=` native (little-endian here).
    let (order, code) = s.split_at_checked(1)?;
    if !matches!(order, "<" | "|" | "=") {
        return None;
    }
    Some(match code {
        "f4" => DType::F32,
        "i1" => DType::I8,
        "u1" => DType::U8,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "b1" => DType::Bool,
        "i2" => DType::I16,
        "u2" => DType::U16,
        "u4" => DType::U32,
        "u8" => DType::U64,
        "f2" => DType::F16,
        "f8" => DType::F64,
        "V2" => DType::BF16,
        _ => return None,
    })
}

/// The value of `key` in the header dict: the text after `'key':` up to the next top-level
/// comma or the closing brace.
fn field<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0usize;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// Parses a header dict into (data type, dimensions, Fortran order).
fn parse_header(path: &Path, header: &str) -> Result<(DType, Vec<usize>, bool), Error> {
    // numpy would take the last of a repeated key, this reader the first: refuse instead.
    for key in ["descr", "fortran_order", "shape"] {
        if header.matches(&format!("'{key}'")).count() > 1 {
            return Err(bad(path, format!("the header gives '{key}' twice")));
        }
    }
    let descr_text =
        field(header, "descr").ok_or_else(|| bad(path, "the header has no 'descr'"))?;
    let d = descr_text.trim_matches(|c| c == '\'' || c == '"');
    let dtype = from_descr(d).ok_or_else(|| {
        bad(
            path,
            format!(
                "data type `{d}` is not supported (float16, float32, float64, int8/16/32/64, \
                 uint8/16/32/64, bool and |V2 for bfloat16, little-endian)"
            ),
        )
    })?;
    let fortran = match field(header, "fortran_order") {
        Some("False") => false,
        Some("True") => true,
        _ => return Err(bad(path, "the header has no valid 'fortran_order'")),
    };
    let shape = field(header, "shape").ok_or_else(|| bad(path, "the header has no 'shape'"))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad(path, format!("shape `{shape}` is not a tuple")))?;
    let dims = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| bad(path, format!("shape `{shape}` has a dimension `{s}`")))
        })
        .collect::<Result<Vec<usize>, Error>>()?;
    Ok((dtype, dims, fortran))
}

/// Column-major (Fortran-order) element bytes of `dims` rearranged into row-major order.
fn to_row_major(data: &[u8], dims: &[usize], size: usize) -> Vec<u8> {
    let n: usize = dims.iter().product();
    let mut out = vec![0u8; data.len()];
    // Row-major strides (in elements) of each axis, applied to the column-major walk.
    let mut strides = vec![1usize; dims.len()];
    for a in (0..dims.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * dims[a + 1];
    }
    let mut index = vec![0usize; dims.len()];
    for f in 0..n {
        let r: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out[r * size..(r + 1) * size].copy_from_slice(&data[f * size..(f + 1) * size]);
        // Next column-major index: the first axis varies fastest.
        for (a, i) in index.iter_mut().enumerate() {
            *i += 1;
            if *i < dims[a] {
                break;
            }
            *i = 0;
        }
    }
    out
}

/// Reads a `.npy` file of any supported data type.
///
/// Errors ([`Error::Input`], naming the file): not a regular file, a bad magic or version, a
/// header over [`MAX_HEADER_BYTES`] or malformed, an unsupported data type or order, or a data
/// section whose length is not exactly what the shape needs (both counts given). Memory is
/// bounded by the file's own size.
pub fn read(path: &Path) -> Result<HostTensor, Error> {
    let meta = std::fs::metadata(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(bad(path, "not a regular file"));
    }
    let mut f = std::fs::File::open(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let mut pre = [0u8; 8];
    f.read_exact(&mut pre).map_err(|_| bad(path, "too short for a .npy file (8-byte preamble)"))?;
    if &pre[..6] != MAGIC {
        return Err(bad(path, "not a .npy file (bad magic at byte 0)"));
    }
    let (major, minor) = (pre[6], pre[7]);
    let (len_bytes, header_len) = match major {
        1 => {
            let mut b = [0u8; 2];
            f.read_exact(&mut b).map_err(|_| bad(path, "truncated header length at byte 8"))?;
            (2, usize::from(u16::from_le_bytes(b)))
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            f.read_exact(&mut b).map_err(|_| bad(path, "truncated header length at byte 8"))?;
            (4, u32::from_le_bytes(b) as usize)
        }
        _ => return Err(bad(path, format!("version {major}.{minor} is not supported"))),
    };
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(
            path,
            format!("header of {header_len} bytes at byte 8 (at most {MAX_HEADER_BYTES})"),
        ));
    }
    let data_at = 8 + len_bytes + header_len;
    if (meta.len() as u128) < data_at as u128 {
        return Err(bad(
            path,
            format!("the header claims {header_len} bytes; the file has {} in all", meta.len()),
        ));
    }
    let mut header = vec![0u8; header_len];
    f.read_exact(&mut header).map_err(|_| bad(path, "truncated header"))?;
    let header = std::str::from_utf8(&header).map_err(|e| {
        bad(path, format!("header is not text (byte {})", 8 + len_bytes + e.valid_up_to()))
    })?;
    let (dtype, dims, fortran) = parse_header(path, header)?;
    let need = dims.iter().try_fold(dtype.size() as u64, |a, d| a.checked_mul(*d as u64));
    let have = meta.len() - data_at as u64;
    match need {
        Some(n) if n == have => {}
        Some(n) => {
            return Err(bad(
                path,
                format!(
                    "shape {dims:?} of {dtype} needs {n} data bytes; the file has {have} after the \
                     header (byte {data_at})"
                ),
            ));
        }
        None => return Err(bad(path, format!("shape {dims:?} has more bytes than 64 bits count"))),
    }
    let mut data = Vec::new();
    f.take(have).read_to_end(&mut data).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    if data.len() as u64 != have {
        return Err(bad(path, "the file changed while it was read"));
    }
    if fortran && dims.len() > 1 {
        data = to_row_major(&data, &dims, dtype.size());
    }
    HostTensor::new(dtype, dims, data)
}

/// The bytes of a version 1.0 `.npy` file holding `t`.
pub fn encode(t: &HostTensor) -> Vec<u8> {
    let shape = match t.dims.as_slice() {
        [d] => format!("({d},)"),
        dims => format!("({})", dims.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let mut header =
        format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", descr(t.dtype));
    // Pad so the data starts at a multiple of 64 bytes, ending the header with a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.data);
    out
}

/// Writes `t` to `path` atomically ([`accelc_isa::file::write_atomic`]: a temporary file
/// next to it, then a rename), so a failed write never leaves a truncated file where a previous
/// result was; a symlink, device, directory or FIFO at `path` is refused, not replaced.
pub fn write(path: &Path, t: &HostTensor) -> Result<(), Error> {
    accelc_isa::file::write_atomic(path, &encode(t)).map_err(|e| Error::Input(e.to_string()))
}

/// Reads a tensor file: `.pb` (a serialized ONNX `TensorProto`, as the ONNX backend tests store
/// their inputs and outputs) or, for any other name, `.npy` ([`read`]). Returns the name the
/// file records (a `TensorProto`'s `name`; `None` for `.npy`) and the tensor.
///
/// Errors ([`Error::Input`], naming the file): as [`read`], or a `.pb` that is not a tensor
/// accelc reads (the reason).
pub fn read_any(path: &Path) -> Result<(Option<String>, HostTensor), Error> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("pb")) {
        let meta = std::fs::metadata(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
        if !meta.is_file() {
            return Err(bad(path, "not a regular file"));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
        let (name, t) = accelc_compiler::onnx::decode_tensor(&bytes).map_err(|e| bad(path, e))?;
        let name = (!name.is_empty()).then_some(name);
        return Ok((name, HostTensor::from_ir(&t)));
    }
    Ok((None, read(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        let dir = std::env::temp_dir().join(format!("accelc-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for dtype in [DType::F32, DType::I8, DType::U8, DType::I32, DType::I64, DType::Bool] {
            for dims in [vec![], vec![3], vec![2, 3, 1]] {
                let n: usize = dims.iter().product();
                let data: Vec<u8> = (0..n * dtype.size()).map(|i| (i % 2) as u8).collect();
                let t = HostTensor::new(dtype, dims.clone(), data).unwrap();
                let p = dir.join("t.npy");
                write(&p, &t).unwrap();
                assert_eq!(read(&p).unwrap(), t, "{dtype} {dims:?}");
                assert_eq!(std::fs::read(&p).unwrap().len() % 64, (n * dtype.size()) % 64);
            }
        }
    }

    #[test]
    fn fortran_order_is_read_row_major() {
        let dir = std::env::temp_dir().join(format!("accelc-npy-f-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // [[1, 2, 3], [4, 5, 6]] stored column by column.
        let t = HostTensor::new(DType::I8, vec![2, 3], vec![1, 4, 2, 5, 3, 6]).unwrap();
        let bytes = encode(&t);
        let hlen = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        let header = String::from_utf8(bytes[10..10 + hlen].to_vec()).unwrap();
        let header = header.replace("'fortran_order': False", "'fortran_order': True ");
        let mut f = bytes[..10].to_vec();
        f.extend(header.bytes());
        f.extend(&bytes[10 + hlen..]);
        let p = dir.join("f.npy");
        std::fs::write(&p, &f).unwrap();
        assert_eq!(read(&p).unwrap().data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_header_claiming_more_than_the_file_holds_is_refused_before_allocating() {
        let dir = std::env::temp_dir().join(format!("accelc-npy-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = HostTensor::from_f32(vec![2], &[1.0, 2.0]).unwrap();
        let mut bytes = encode(&t);
        // Same header length: the longer shape takes the place of padding.
        let hlen = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        let header = String::from_utf8(bytes[10..10 + hlen].to_vec()).unwrap();
        let end = header.find('\n').unwrap();
        let big = header[..end].trim_end().replace("(2,)", "(1099511627776,)");
        let big = format!("{big:<end$}");
        assert_eq!(big.len(), end);
        bytes.splice(10..10 + end, big.bytes());
        let p = dir.join("big.npy");
        std::fs::write(&p, &bytes).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("needs 4398046511104 data bytes; the file has 8"), "{e}");
    }
}
