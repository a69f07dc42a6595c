//! The constant segment's image, described rather than held: each piece is either bytes the
//! compile already has (a constant tensor, which shares the model's bytes, or a kernel's
//! parameters) or a convolution's weights to pack into the kernel's streaming order when the
//! image is written. Written straight into a blob ([`accelc_isa::blob::SectionSource`]), the
//! packed weights, most of a large model's blob, exist one layer at a time, never all at once
//! beside the model's own bytes.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Packs one layer's weights into a sink, piece by piece (the same bytes every call).
pub(crate) type PackFn =
    Arc<dyn Fn(&mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> + Send + Sync>;

/// Weights to pack when written: `len` bytes from `pack`.
#[derive(Clone)]
pub(crate) struct Packed {
    pub(crate) len: u64,
    pub(crate) pack: PackFn,
}

impl fmt::Debug for Packed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Packed({} bytes)", self.len)
    }
}

#[derive(Clone, Debug)]
enum Piece {
    Bytes(Bytes),
    Packed(Packed),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::Packed(p) => p.len,
        }
    }
}

/// The constant segment's contents: pieces at increasing offsets, zeros between them.
#[derive(Clone, Debug, Default)]
pub struct ConstImage {
    /// `(byte offset, piece)`, in offset order, not overlapping.
    pieces: Vec<(u64, Piece)>,
    len: u64,
}

impl ConstImage {
    /// Appends `bytes` at `off` (at or past the end).
    pub(crate) fn push_bytes(&mut self, off: u64, bytes: Bytes) {
        self.push(off, Piece::Bytes(bytes));
    }

    /// Appends weights packed when written, at `off` (at or past the end).
    pub(crate) fn push_packed(&mut self, off: u64, packed: Packed) {
        self.push(off, Piece::Packed(packed));
    }

    fn push(&mut self, off: u64, piece: Piece) {
        debug_assert!(off >= self.len, "constant pieces are appended in order");
        self.len = off + piece.len();
        self.pieces.push((off, piece));
    }

    /// Bytes in the image.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole image in memory (packing every layer's weights).
    ///
    /// Errors: a layer's packing produced other than the bytes it declared (an internal error).
    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        accelc_isa::blob::SectionSource::emit(self, &mut |piece| {
            out.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(out)
    }
}

impl accelc_isa::blob::SectionSource for ConstImage {
    fn len(&self) -> u64 {
        self.len
    }

    fn emit(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        const RUN: u64 = 64;
        const ZEROS: [u8; RUN as usize] = [0; RUN as usize];
        let mut at = 0u64;
        for (off, piece) in &self.pieces {
            // Alignment gaps are under 64 bytes; larger ones still come out right.
            while at < *off {
                let n = (*off - at).min(RUN);
                sink(&ZEROS[..n as usize])?;
                at += n;
            }
            match piece {
                Piece::Bytes(b) => sink(b)?,
                Piece::Packed(p) => {
                    // Past the planned length would overwrite the next piece: refused before
                    // it reaches the sink.
                    let mut seen = 0u64;
                    let mut over = false;
                    (p.pack)(&mut |bytes| {
                        seen += bytes.len() as u64;
                        over |= seen > p.len;
                        if over { Ok(()) } else { sink(bytes) }
                    })?;
                    if seen != p.len {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "internal error: weights packed to {seen} bytes at constant \
                                 offset {off}, not the {} planned",
                                p.len
                            ),
                        ));
                    }
                }
            }
            at += piece.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accelc_isa::blob::SectionSource;

    fn packed(bytes: Vec<u8>, declared: u64) -> Packed {
        let pack: PackFn = Arc::new(move |sink| bytes.chunks(3).try_for_each(&mut *sink));
        Packed { len: declared, pack }
    }

    #[test]
    fn pieces_come_out_in_place_with_zeros_between() {
        let mut img = ConstImage::default();
        img.push_bytes(0, Bytes::from_static(b"ab"));
        img.push_packed(64, packed(vec![1, 2, 3, 4, 5], 5));
        img.push_bytes(200, Bytes::from_static(b"z"));
        assert_eq!(img.len(), 201);
        let v = img.to_vec().unwrap();
        let mut want = vec![0u8; 201];
        want[..2].copy_from_slice(b"ab");
        want[64..69].copy_from_slice(&[1, 2, 3, 4, 5]);
        want[200] = b'z';
        assert_eq!(v, want);
    }

    #[test]
    fn packing_other_than_planned_is_an_internal_error_and_never_overruns() {
        for (bytes, declared) in [(vec![7u8; 10], 8), (vec![7u8; 4], 8)] {
            let mut img = ConstImage::default();
            img.push_packed(0, packed(bytes.clone(), declared));
            img.push_bytes(64, Bytes::from_static(b"next"));
            let mut got = 0u64;
            let e = img
                .emit(&mut |p| {
                    got += p.len() as u64;
                    Ok(())
                })
                .unwrap_err();
            assert!(e.to_string().contains(&format!("packed to {} bytes", bytes.len())), "{e}");
            assert!(got <= declared, "{got} bytes reached the sink, {declared} planned");
        }
    }
}
