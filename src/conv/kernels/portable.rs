//! Portable direct-convolution tile kernel on `wide::f32x8`.

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
fn max(zero: f32x8, t: f32x8) -> f32x8 {
    t.is_nan().blend(t, t.max(zero))
}

super::tile_kernel! {
    /// Portable: 2 × f32x8 per channel row.
    fn tile_portable: f32x8, lanes 8, vectors 2;
    zero zero, load load, store store, splat splat, fma fma, max max
}
