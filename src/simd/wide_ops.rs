//! The vector operations of the portable kernels, on `wide::f32x8`, named as the kernel
//! macros expect them (the x86 kernels pass `std::arch` intrinsics of the same shapes).
//! `fma` is fused where the compile target has FMA, else a multiply and an add.

use wide::f32x8;

#[inline(always)]
pub(crate) fn zero() -> f32x8 {
    f32x8::ZERO
}

/// # Safety
/// 8 floats at `p` must be readable.
#[inline(always)]
pub(crate) unsafe fn load(p: *const f32) -> f32x8 {
    // SAFETY: the caller guarantees 8 readable floats at p; read_unaligned needs no alignment.
    unsafe { p.cast::<f32x8>().read_unaligned() }
}

/// # Safety
/// 8 floats at `p` must be writable.
#[inline(always)]
pub(crate) unsafe fn store(p: *mut f32, v: f32x8) {
    // SAFETY: the caller guarantees 8 writable floats at p.
    unsafe { p.cast::<f32x8>().write_unaligned(v) }
}

#[inline(always)]
pub(crate) fn splat(x: f32) -> f32x8 {
    f32x8::splat(x)
}

#[inline(always)]
pub(crate) fn fma(a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
    a.mul_add(b, c)
}

#[inline(always)]
pub(crate) fn mul(a: f32x8, b: f32x8) -> f32x8 {
    a * b
}

#[inline(always)]
pub(crate) fn add(a: f32x8, b: f32x8) -> f32x8 {
    a + b
}

/// `max(zero, t)` with NaN propagated (lanes where `t` is NaN keep it), as `maxps(0, t)`.
#[inline(always)]
pub(crate) fn max(zero: f32x8, t: f32x8) -> f32x8 {
    t.is_nan().blend(t, t.max(zero))
}
