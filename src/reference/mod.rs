//! Reference kernels: the plainest loops, the ground truth for every fast path.
//!
//! Clarity over speed — never optimise this module. Every function here accumulates in `f64`.
//! Each operation comes in two forms:
//! - an `f32` [`Tensor`] form that validates shapes and returns `Result`,
//!   which tests, benchmarks and fuzz targets compare fast kernels against;
//! - an `_f64` slice form on a validated geometry, used by finite-difference gradient checks
//!   (which need the extra precision) and by the `f32` form itself.

pub mod activation;
pub mod conv;
pub mod dense;
pub mod gemm;
pub mod loss;
pub mod pool;

pub use activation::*;
pub use conv::*;
pub use dense::*;
pub use gemm::gemm;
pub use loss::*;
pub use pool::*;

use crate::Tensor;

/// The reference computes in f64: buffers twice the bytes of the f32 tensors. A shape the
/// f32 API accepts but whose f64 copy cannot exist is an error here, not an abort.
pub(crate) fn fits_f64(shapes: &[&[usize]], what: &str) -> crate::Result<()> {
    for shape in shapes {
        let n = crate::error::checked_product(shape, what)?;
        let mut probe: Vec<f64> = Vec::new();
        probe
            .try_reserve_exact(n)
            .map_err(|_| crate::Error::overflow(format!("{what}: f64 buffer of {n} elements refused")))?;
    }
    Ok(())
}

pub(crate) fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

pub(crate) fn to_tensor(x: &[f64], shape: &[usize]) -> Tensor {
    let data = x.iter().map(|&v| v as f32).collect();
    Tensor::new(data, shape).expect("reference output length matches its shape")
}
