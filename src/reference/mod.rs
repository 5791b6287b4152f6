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

pub(crate) fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

pub(crate) fn to_tensor(x: &[f64], shape: &[usize]) -> Tensor {
    let data = x.iter().map(|&v| v as f32).collect();
    Tensor::new(data, shape).expect("reference output length matches its shape")
}
