//! Portable direct-convolution tile kernel on `wide::f32x8`.

use crate::simd::wide_ops::{fma, load, max, splat, store, zero};
use wide::f32x8;

super::tile_kernel! {
    /// Portable: 2 × f32x8 per channel row.
    fn tile_portable: f32x8, lanes 8, vectors 2;
    zero zero, load load, store store, splat splat, fma fma, max max
}
