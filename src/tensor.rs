//! A small owned `f32` tensor for NCHW (4-D) and matrix (2-D) data, with borrowed views.
//!
//! Data is always dense and row-major (the last dimension varies fastest). This is a kernel
//! crate, not an array library: the tensor is a validated `Vec<f32>` plus a shape.

use crate::error::{checked_product, Error, Result};
use std::sync::Arc;

pub use crate::buffers::{cached_bytes, release_cached_buffers};

/// An owned, dense, row-major `f32` tensor of rank 1 to 4.
///
/// Clones share the element buffer until one of them is written through
/// [`Tensor::data_mut`] (copy on write), so layers keep the activations their backward pass
/// needs without copying them. Large buffers (64 KiB and up) go back to a bounded cache when
/// their last tensor is dropped and are reused by later tensors, so a training loop does not
/// pay the system allocator's fresh pages on every step ([`release_cached_buffers`] empties
/// the cache).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    data: Arc<Vec<f32>>,
    shape: Vec<usize>,
}

/// The buffer, made the caller's own first (copied) if other tensors share it.
fn unique(data: &mut Arc<Vec<f32>>) -> &mut Vec<f32> {
    if Arc::get_mut(data).is_none() {
        *data = Arc::new(crate::buffers::copied(data));
    }
    // No `Weak` is ever made, so a buffer just wrapped in a new `Arc` has no other owner.
    Arc::get_mut(data).expect("a fresh Arc has no other owner")
}

impl Drop for Tensor {
    fn drop(&mut self) {
        if let Some(v) = Arc::get_mut(&mut self.data) {
            crate::buffers::give(std::mem::take(v));
        }
    }
}

/// A borrowed, read-only view of a dense tensor (cheap to copy).
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    data: &'a [f32],
    shape: &'a [usize],
}

/// A borrowed, mutable view of a dense tensor.
#[derive(Debug)]
pub struct TensorViewMut<'a> {
    data: &'a mut [f32],
    shape: &'a [usize],
}

const MAX_RANK: usize = 4;

fn validate(shape: &[usize], len: usize, tensor: &str) -> Result<()> {
    if shape.is_empty() || shape.len() > MAX_RANK {
        return Err(Error::shape(tensor, "rank 1 to 4", shape));
    }
    let want = checked_product(shape, &format!("{tensor} element count"))?;
    if want != len {
        return Err(Error::Length { tensor: tensor.to_string(), expected: want, actual: len });
    }
    Ok(())
}

impl Tensor {
    /// Wraps `data` with `shape`.
    ///
    /// # Errors
    /// [`Error::Shape`] if the rank is not 1–4, [`Error::Length`] if `data.len()` is not the
    /// product of `shape`, [`Error::Overflow`] if that product overflows.
    ///
    /// ```
    /// use convkit::Tensor;
    /// let t = Tensor::new(vec![0.0; 6], &[1, 1, 2, 3])?;
    /// assert_eq!(t.shape(), &[1, 1, 2, 3]);
    /// assert!(Tensor::new(vec![0.0; 5], &[1, 1, 2, 3]).is_err());
    /// # Ok::<(), convkit::Error>(())
    /// ```
    pub fn new(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        validate(shape, data.len(), "tensor")?;
        Ok(Tensor { data: Arc::new(data), shape: shape.to_vec() })
    }

    /// A tensor of zeros.
    ///
    /// # Errors
    /// As [`Tensor::new`], for the rank and an overflowing element count; [`Error::Overflow`]
    /// when the system refuses the allocation.
    pub fn zeros(shape: &[usize]) -> Result<Self> {
        Self::allocated(shape, crate::buffers::try_zeroed)
    }

    /// A tensor of `shape` in a buffer from `alloc`, with absurd sizes rejected before the
    /// allocation is tried, and an allocation the system refuses an error, not an abort.
    fn allocated(shape: &[usize], alloc: fn(usize) -> std::result::Result<Vec<f32>, ()>) -> Result<Self> {
        let n = checked_product(shape, "tensor element count")?;
        if n.checked_mul(std::mem::size_of::<f32>()).is_none_or(|b| b > isize::MAX as usize) {
            return Err(Error::overflow("tensor byte size"));
        }
        let data = alloc(n)
            .map_err(|()| Error::overflow(format!("tensor of {n} elements ({shape:?}): the allocation was refused")))?;
        Tensor::new(data, shape)
    }

    /// A tensor whose every element the caller is about to overwrite: its values are
    /// unspecified (reused memory is not zeroed first; NaN in debug builds, so a kernel
    /// that misses a cell fails its tests).
    pub(crate) fn for_overwrite(shape: &[usize]) -> Result<Self> {
        Self::allocated(shape, crate::buffers::try_dirty)
    }

    /// A tensor filled by `f(flat_index)`.
    ///
    /// # Errors
    /// As [`Tensor::zeros`].
    pub fn from_fn(shape: &[usize], mut f: impl FnMut(usize) -> f32) -> Result<Self> {
        let mut t = Tensor::zeros(shape)?;
        t.data_mut().iter_mut().enumerate().for_each(|(i, x)| *x = f(i));
        Ok(t)
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The elements in row-major order, mutable.
    ///
    /// The first write to a tensor whose buffer is shared with clones copies it.
    pub fn data_mut(&mut self) -> &mut [f32] {
        unique(&mut self.data)
    }

    /// Gives back the element buffer.
    pub fn into_vec(mut self) -> Vec<f32> {
        std::mem::take(unique(&mut self.data))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The same data under another shape with the same element count (no copy).
    ///
    /// # Errors
    /// As [`Tensor::new`].
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        validate(shape, self.data.len(), "reshape")?;
        Ok(Tensor { data: Arc::clone(&self.data), shape: shape.to_vec() })
    }

    /// A borrowed view.
    pub fn view(&self) -> TensorView<'_> {
        TensorView { data: &self.data, shape: &self.shape }
    }

    /// A borrowed mutable view.
    pub fn view_mut(&mut self) -> TensorViewMut<'_> {
        TensorViewMut { data: unique(&mut self.data), shape: &self.shape }
    }

    /// The shape as `[N, C, H, W]`, or an error naming `tensor` if the rank is not 4.
    ///
    /// # Errors
    /// [`Error::Shape`] if the tensor is not 4-D.
    pub fn dims4(&self, tensor: &str) -> Result<[usize; 4]> {
        self.view().dims4(tensor)
    }

    /// The shape as `[rows, cols]`, or an error naming `tensor` if the rank is not 2.
    ///
    /// # Errors
    /// [`Error::Shape`] if the tensor is not 2-D.
    pub fn dims2(&self, tensor: &str) -> Result<[usize; 2]> {
        self.view().dims2(tensor)
    }

    /// Largest absolute difference to `other`, or `None` if the shapes differ.
    pub fn max_abs_diff(&self, other: &Tensor) -> Option<f32> {
        (self.shape == other.shape)
            .then(|| self.data.iter().zip(other.data.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max))
    }
}

impl<'a> TensorView<'a> {
    /// A view of `data` with `shape`.
    ///
    /// # Errors
    /// As [`Tensor::new`].
    pub fn new(data: &'a [f32], shape: &'a [usize]) -> Result<Self> {
        validate(shape, data.len(), "tensor view")?;
        Ok(TensorView { data, shape })
    }

    /// The shape.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// The elements.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Copies into an owned tensor.
    pub fn to_tensor(&self) -> Tensor {
        Tensor { data: Arc::new(crate::buffers::copied(self.data)), shape: self.shape.to_vec() }
    }

    /// The shape as `[N, C, H, W]`.
    ///
    /// # Errors
    /// [`Error::Shape`] naming `tensor` if the rank is not 4.
    pub fn dims4(&self, tensor: &str) -> Result<[usize; 4]> {
        match *self.shape {
            [n, c, h, w] => Ok([n, c, h, w]),
            _ => Err(Error::shape(tensor, "4-D [N, C, H, W]", self.shape)),
        }
    }

    /// The shape as `[rows, cols]`.
    ///
    /// # Errors
    /// [`Error::Shape`] naming `tensor` if the rank is not 2.
    pub fn dims2(&self, tensor: &str) -> Result<[usize; 2]> {
        match *self.shape {
            [r, c] => Ok([r, c]),
            _ => Err(Error::shape(tensor, "2-D [rows, cols]", self.shape)),
        }
    }
}

impl<'a> TensorViewMut<'a> {
    /// A mutable view of `data` with `shape`.
    ///
    /// # Errors
    /// As [`Tensor::new`].
    pub fn new(data: &'a mut [f32], shape: &'a [usize]) -> Result<Self> {
        validate(shape, data.len(), "tensor view")?;
        Ok(TensorViewMut { data, shape })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.shape
    }

    /// The elements, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        self.data
    }

    /// A read-only view of the same data.
    pub fn as_view(&self) -> TensorView<'_> {
        TensorView { data: self.data, shape: self.shape }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_is_validated() {
        assert!(matches!(Tensor::new(vec![1.0; 5], &[2, 3]), Err(Error::Length { expected: 6, actual: 5, .. })));
        assert!(matches!(Tensor::new(vec![], &[]), Err(Error::Shape { .. })));
        assert!(matches!(Tensor::new(vec![], &[1, 1, 1, 1, 0]), Err(Error::Shape { .. })));
        assert!(matches!(Tensor::zeros(&[usize::MAX, 2]), Err(Error::Overflow { .. })));
        assert!(matches!(Tensor::zeros(&[usize::MAX / 2, 1]), Err(Error::Overflow { .. })));
        // Within isize::MAX bytes but beyond any address space: refused, not aborted.
        assert!(matches!(Tensor::zeros(&[1 << 59]), Err(Error::Overflow { .. })));
        let t = Tensor::new(vec![0.0; 0], &[0, 3, 4, 4]).unwrap();
        assert!(t.is_empty());
    }

    #[test]
    fn views_and_reshape() {
        let t = Tensor::from_fn(&[1, 2, 2, 3], |i| i as f32).unwrap();
        assert_eq!(t.dims4("x").unwrap(), [1, 2, 2, 3]);
        let e = t.dims2("x").unwrap_err().to_string();
        assert_eq!(e, "x: expected 2-D [rows, cols], got [1, 2, 2, 3]");
        let v = t.view();
        assert_eq!(v.data()[5], 5.0);
        let m = t.clone().reshape(&[2, 6]).unwrap();
        assert_eq!(m.dims2("m").unwrap(), [2, 6]);
        assert!(t.clone().reshape(&[5]).is_err());
        assert_eq!(t.max_abs_diff(&t), Some(0.0));
        assert_eq!(t.max_abs_diff(&m), None);
    }
}
