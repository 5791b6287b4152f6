//! Portable micro-kernel on `wide::f32x8`: runs on every target (aarch64, x86-64 without
//! AVX, …). FMA is fused where the compile target has it, else a multiply and an add.

use crate::simd::prefetch_read;
use crate::simd::wide_ops::{add, fma, load, max, mul, splat, store, zero};
use wide::f32x8;

super::microkernel! {
    /// 8×4 portable kernel (one f32x8 × 4 columns).
    fn kernel_8x4: f32x8, lanes 8, vectors 1, cols 4;
    zero zero, load load, store store, splat splat, fma fma, mul mul, add add, max max, prefetch prefetch_read
}
