//! convkit: SIMD and multithreaded kernels for convolutional neural networks.
//!
//! Every fast kernel has a plain [`reference`](mod@reference) loop that is its ground truth.
//!
//! ```
//! use convkit::{reference, Conv2dParams, Padding, Tensor};
//! let x = Tensor::from_fn(&[1, 1, 5, 5], |i| i as f32)?;
//! let w = Tensor::new(vec![1.0; 9], &[1, 1, 3, 3])?;
//! let y = reference::conv2d(&x, &w, None, &Conv2dParams::default().padding(Padding::Same))?;
//! assert_eq!(y.shape(), &[1, 1, 5, 5]);
//! assert_eq!(y.data()[12], 9.0 * 12.0);
//! # Ok::<(), convkit::Error>(())
//! ```
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod augment;
mod buffers;
pub mod check;
pub mod conv;
pub mod data;
pub mod error;
pub mod geometry;
pub mod nn;
pub mod reference;
pub mod tensor;

pub use error::{Error, Result};
pub use geometry::{Axis, Conv2dGeometry, Conv2dParams, Padding, Pool2dGeometry, Pool2dParams};
pub use tensor::{Tensor, TensorView, TensorViewMut};
pub mod gemm;
pub mod parallel;
pub mod pool;
pub mod simd;

pub use parallel::Parallelism;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
pub use simd::SimdLevel;
