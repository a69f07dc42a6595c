//! Strided views of tensors in DRAM: how data-movement ops (transpose, slice, gather of
//! constant indices, concat, split, broadcasting) are expressed without special kernels. A
//! view is a base address plus a size and a byte stride per logical dimension; the copy and
//! element-wise kernels read and write any view.

use super::LowerError;

/// A strided view of DRAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct View {
    /// Segment.
    pub(crate) seg: u8,
    /// Byte offset of element 0.
    pub(crate) off: u64,
    /// `(size, stride in bytes)` per dimension, outermost first.
    pub(crate) dims: Vec<(usize, u64)>,
}

/// A transformation of a view, recorded in a kernel step and applied at emission, when the
/// tensor's address is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ViewOp {
    /// Reorders dimensions: new dim `i` is old dim `perm[i]`.
    Permute(Vec<usize>),
    /// Keeps `len` indices of `axis` from `start`, every `step`.
    Slice { axis: usize, start: usize, len: usize, step: usize },
    /// Fixes `axis` at `index` and drops it.
    Select { axis: usize, index: usize },
    /// Numpy broadcasting to `shape` (stride 0 on expanded dims).
    Broadcast(Vec<usize>),
    /// Reinterprets a contiguous view with another shape.
    Reshape(Vec<usize>),
    /// Splits `axis` into `(outer, inner)` with `inner` a repeat of stride 0 (nearest
    /// upsampling by an integer factor, once reshaped).
    Repeat { axis: usize, times: usize },
}

impl View {
    /// A dense row-major view of `shape` with `elem`-byte elements.
    pub(crate) fn dense(seg: u8, off: u64, shape: &[usize], elem: u64) -> View {
        let mut dims = vec![(0, 0); shape.len()];
        let mut stride = elem;
        for (i, &s) in shape.iter().enumerate().rev() {
            dims[i] = (s, stride);
            stride *= s as u64;
        }
        View { seg, off, dims }
    }

    /// The logical shape.
    pub(crate) fn shape(&self) -> Vec<usize> {
        self.dims.iter().map(|d| d.0).collect()
    }

    /// Applies one transformation.
    pub(crate) fn apply(&self, op: &ViewOp) -> Result<View, LowerError> {
        let mut v = self.clone();
        match op {
            ViewOp::Permute(perm) => {
                if perm.len() != v.dims.len() {
                    return Err(LowerError::msg("permutation rank mismatch"));
                }
                v.dims = perm.iter().map(|&p| self.dims[p]).collect();
            }
            ViewOp::Slice { axis, start, len, step } => {
                let (size, stride) = v.dims[*axis];
                if start + (len.max(&1) - 1) * step >= size.max(1) && *len > 0 {
                    return Err(LowerError::msg("slice out of range"));
                }
                v.off += *start as u64 * stride;
                v.dims[*axis] = (*len, stride * *step as u64);
            }
            ViewOp::Select { axis, index } => {
                let (_, stride) = v.dims[*axis];
                v.off += *index as u64 * stride;
                v.dims.remove(*axis);
            }
            ViewOp::Broadcast(shape) => {
                if shape.len() < v.dims.len() {
                    return Err(LowerError::msg("broadcast to a lower rank"));
                }
                let pad = shape.len() - v.dims.len();
                let mut dims = vec![(0, 0); shape.len()];
                for (i, &s) in shape.iter().enumerate() {
                    dims[i] = if i < pad {
                        (s, 0)
                    } else {
                        let (size, stride) = v.dims[i - pad];
                        if size == s {
                            (s, stride)
                        } else if size == 1 {
                            (s, 0)
                        } else {
                            return Err(LowerError::msg("shapes do not broadcast"));
                        }
                    };
                }
                v.dims = dims;
            }
            ViewOp::Reshape(shape) => {
                let n: usize = shape.iter().product();
                let m: usize = v.dims.iter().map(|d| d.0).product();
                if n != m {
                    return Err(LowerError::msg("reshape changes the element count"));
                }
                let elem = v.dims.last().map_or(1, |d| d.1).max(1);
                if !v.is_dense(elem) {
                    return Err(LowerError::msg("reshape of a strided view"));
                }
                v = View::dense(v.seg, v.off, shape, elem);
            }
            ViewOp::Repeat { axis, times } => {
                let (size, stride) = v.dims[*axis];
                v.dims[*axis] = (size, stride);
                v.dims.insert(axis + 1, (*times, 0));
            }
        }
        Ok(v)
    }

    /// Applies transformations in order.
    pub(crate) fn apply_all(&self, ops: &[ViewOp]) -> Result<View, LowerError> {
        let mut v = self.clone();
        for op in ops {
            v = v.apply(op)?;
        }
        Ok(v)
    }

    /// Whether the view is dense row-major with `elem`-byte elements.
    pub(crate) fn is_dense(&self, elem: u64) -> bool {
        let mut stride = elem;
        for &(s, st) in self.dims.iter().rev() {
            if s != 1 && st != stride {
                return false;
            }
            stride *= s as u64;
        }
        true
    }
}

/// Merges adjacent dimensions that are contiguous in every view (all views share the shape),
/// and drops unit dimensions; returns the common sizes and each view's strides.
pub(crate) fn collapse(views: &[&View]) -> (Vec<usize>, Vec<Vec<u64>>) {
    let rank = views.first().map_or(0, |v| v.dims.len());
    let mut sizes: Vec<usize> = Vec::new();
    let mut strides: Vec<Vec<u64>> = vec![Vec::new(); views.len()];
    for d in 0..rank {
        let size = views[0].dims[d].0;
        if size == 1 {
            continue;
        }
        let mergeable = !sizes.is_empty()
            && views.iter().enumerate().all(|(k, v)| {
                let inner = v.dims[d].1;
                let outer = *strides[k].last().unwrap_or(&0);
                outer == inner * size as u64
            });
        if mergeable {
            let last = sizes.len() - 1;
            sizes[last] *= size;
            for (k, v) in views.iter().enumerate() {
                let l = strides[k].len() - 1;
                strides[k][l] = v.dims[d].1;
            }
        } else {
            sizes.push(size);
            for (k, v) in views.iter().enumerate() {
                strides[k].push(v.dims[d].1);
            }
        }
    }
    (sizes, strides)
}
