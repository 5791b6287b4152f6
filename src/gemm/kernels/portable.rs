//! Portable micro-kernel on `wide::f32x8`: runs on every target (aarch64, x86-64 without
//! AVX, …). FMA is fused where the compile target has it, else a multiply and an add.

use wide::f32x8;

#[inline(always)]
fn zero() -> f32x8 {
    f32x8::ZERO
}
#[inline(always)]
unsafe fn load(p: *const f32) -> f32x8 {
    // SAFETY: the caller guarantees 8 readable floats at p; read_unaligned needs no alignment.
    unsafe { p.cast::<f32x8>().read_unaligned() }
}
#[inline(always)]
unsafe fn store(p: *mut f32, v: f32x8) {
    // SAFETY: the caller guarantees 8 writable floats at p.
    unsafe { p.cast::<f32x8>().write_unaligned(v) }
}
#[inline(always)]
fn splat(x: f32) -> f32x8 {
    f32x8::splat(x)
}
#[inline(always)]
fn fma(a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
    a.mul_add(b, c)
}
#[inline(always)]
fn mul(a: f32x8, b: f32x8) -> f32x8 {
    a * b
}
#[inline(always)]
fn add(a: f32x8, b: f32x8) -> f32x8 {
    a + b
}
#[inline(always)]
fn max(zero: f32x8, t: f32x8) -> f32x8 {
    // NaN propagates: lanes where t is NaN keep t.
    t.is_nan().blend(t, t.max(zero))
}

/// The portable path leaves prefetching to the hardware.
#[inline(always)]
fn no_prefetch(_: *const f32) {}

super::microkernel! {
    /// 8×4 portable kernel (one f32x8 × 4 columns).
    fn kernel_8x4: f32x8, lanes 8, vectors 1, cols 4;
    zero zero, load load, store store, splat splat, fma fma, mul mul, add add, max max, prefetch no_prefetch
}
