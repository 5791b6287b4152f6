//! Depthwise 3×3 convolution, stride 1 and dilation 1 down the columns (any stride and
//! dilation across): a register tile of 3 output rows × 16 output columns (two vectors of 8),
//! or with AVX-512 6 rows × 16 columns (one zmm a row).
//!
//! The output-width tile of [`super::direct`] with one channel per block loads 16 inputs and
//! broadcasts one weight for every 16 multiply-adds: a depthwise layer is bound by loads. Here
//! the nine weights stay in registers and each input row segment is loaded once for the up to
//! three output rows that use it: for three rows, 30 loads feed 54 multiply-adds instead of 81
//! loads. Every output is still `bias, then taps (r, s) in order`, one fused multiply-add per
//! tap, the order of the direct kernel, so the two paths agree bit for bit where both use FMA.

use super::padded::Padded;
use crate::geometry::Conv2dGeometry;
use crate::simd::SimdLevel;

/// Most output rows per register tile (AVX-512's; AVX2 and portable take 3).
const MAX_RB: usize = 6;
/// Output columns per register tile (two vectors of 8).
const W: usize = 16;

/// Whether this path computes `g`: one input and one output channel per group, a 3×3
/// kernel, stride 1 and dilation 1 vertically.
pub(super) fn eligible(g: &Conv2dGeometry) -> bool {
    g.c_per_group() == 1
        && g.k_per_group() == 1
        && (g.h.kernel, g.w.kernel) == (3, 3)
        && (g.h.stride, g.h.dilation) == (1, 1)
}

/// One channel's rows `oh0 .. oh1`.
pub(super) struct Plane<'a> {
    /// The channel's padded copy.
    pub xp: &'a [f32],
    /// Offsets of the taps `(0, s)` in `xp` from a tile's base ([`Padded::tap_offset`]).
    pub s_off: [usize; 3],
    /// Floats per padded row.
    pub row_len: usize,
    /// The nine weights, `w[r·3 + s]`.
    pub w: [f32; 9],
    pub bias: f32,
    pub relu: bool,
    /// Output rows `y_row0 ..` of the channel's plane, `OW` floats each.
    pub y: &'a mut [f32],
    /// The plane row that `y` starts at.
    pub y_row0: usize,
    pub ow_n: usize,
}

impl Plane<'_> {
    /// The offsets of the taps `(0, s)`.
    pub(super) fn taps(g: &Conv2dGeometry, pad: &Padded) -> [usize; 3] {
        std::array::from_fn(|s| pad.tap_offset(g, 0, 0, s))
    }

    /// Computes output rows `oh0 .. oh1`.
    pub(super) fn run(&mut self, level: SimdLevel, oh0: usize, oh1: usize) {
        debug_assert!(oh0 >= self.y_row0 && self.y.len() >= (oh1 - self.y_row0) * self.ow_n);
        #[cfg(target_arch = "x86_64")]
        if level == SimdLevel::Avx512 {
            // SAFETY: the caller's plan checked that this CPU has AVX-512F.
            return unsafe { rows_avx512(self, oh0, oh1) };
        }
        #[cfg(target_arch = "x86_64")]
        if level >= SimdLevel::Avx2 {
            // SAFETY: the caller's plan checked that this CPU has AVX2 and FMA.
            return unsafe { rows_avx2(self, oh0, oh1) };
        }
        let _ = level;
        rows_portable(self, oh0, oh1);
    }
}

/// Writes the row loop over one register tile shape from a vector type and its operations.
macro_rules! dw_rows {
    (
        $(#[$attr:meta])*
        fn $name:ident: $V:ty, lanes $L:expr, rows $RB:expr;
        zero $zero:path, load $load:path, store $store:path, splat $splat:path,
        fma $fma:path, max $max:path
    ) => {
        $(#[$attr])*
        pub(super) fn $name(p: &mut Plane<'_>, oh0: usize, oh1: usize) {
            /// `N ≤ RB` output rows at `oh`, columns `ow0 .. ow0 + 16`, into `out` (`N` rows
            /// of `stride` floats).
            $(#[$attr])*
            #[inline]
            fn tile<const N: usize>(p: &Plane<'_>, w: &[$V; 9], oh: usize, ow0: usize, out: *mut f32, stride: usize) {
                const L: usize = $L;
                let bias = $splat(p.bias);
                let mut acc = [[bias; W / L]; N];
                let base = oh * p.row_len + ow0;
                // Every read lies in the padded copy: rows oh .. oh + N + 2 exist (the output
                // has them), and a row's slack covers the 16 columns of its last tile.
                let last = base + (N + 1) * p.row_len + p.s_off[2] + W;
                assert!(last <= p.xp.len(), "padded copy too short");
                let xp = p.xp.as_ptr();
                for i in 0..N + 2 {
                    for s in 0..3 {
                        let at = base + i * p.row_len + p.s_off[s];
                        // SAFETY: at + 16 ≤ last ≤ xp.len().
                        let xv: [$V; W / L] = std::array::from_fn(|v| unsafe { $load(xp.add(at + v * L)) });
                        // Output row o uses input row i at tap r = i − o (0 ≤ r < 3); with
                        // N and i known when unrolled, the test folds away.
                        for (o, a) in acc.iter_mut().enumerate() {
                            if i >= o && i - o < 3 {
                                let wv = w[(i - o) * 3 + s];
                                for (av, &x) in a.iter_mut().zip(&xv) {
                                    *av = $fma(x, wv, *av);
                                }
                            }
                        }
                    }
                }
                let zero = $zero();
                for (o, a) in acc.iter().enumerate() {
                    for (v, &t) in a.iter().enumerate() {
                        let t = if p.relu { $max(zero, t) } else { t };
                        // SAFETY: the caller passes `out` valid for N rows of 16 floats at
                        // `stride`.
                        unsafe { $store(out.add(o * stride + v * L), t) };
                    }
                }
            }

            $(#[$attr])*
            #[inline]
            fn rows<const N: usize>(p: &mut Plane<'_>, w: &[$V; 9], oh: usize) {
                let ow_n = p.ow_n;
                let row = oh - p.y_row0;
                let mut scratch = [0.0f32; MAX_RB * W];
                for ow0 in (0..ow_n).step_by(W) {
                    if ow0 + W <= ow_n {
                        // SAFETY: rows oh .. oh + N, columns ow0 .. ow0 + 16 of the plane,
                        // inside `y` (checked by the caller's debug assertion and slicing).
                        let out = p.y[row * ow_n + ow0..(row + N - 1) * ow_n + ow0 + W].as_mut_ptr();
                        tile::<N>(p, w, oh, ow0, out, ow_n);
                    } else {
                        tile::<N>(p, w, oh, ow0, scratch.as_mut_ptr(), W);
                        let cols = ow_n - ow0;
                        for o in 0..N {
                            let dst = (row + o) * ow_n + ow0;
                            p.y[dst..dst + cols].copy_from_slice(&scratch[o * W..o * W + cols]);
                        }
                    }
                }
            }

            let w: [$V; 9] = std::array::from_fn(|t| $splat(p.w[t]));
            let mut oh = oh0;
            const RB: usize = $RB;
            while oh + RB <= oh1 {
                rows::<RB>(p, &w, oh);
                oh += RB;
            }
            // The last rows, fewer than RB (≤ MAX_RB − 1).
            match oh1 - oh {
                0 => {}
                1 => rows::<1>(p, &w, oh),
                2 => rows::<2>(p, &w, oh),
                3 => rows::<3>(p, &w, oh),
                4 => rows::<4>(p, &w, oh),
                _ => rows::<5>(p, &w, oh),
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Plane, MAX_RB, W};
    use std::arch::x86_64::*;

    // `maxps(0, t)` returns its second operand when either is NaN: NaN propagates.
    dw_rows! {
        /// AVX2+FMA: 3 rows × 2 vectors.
        #[target_feature(enable = "avx2,fma")]
        fn rows_avx2: __m256, lanes 8, rows 3;
        zero _mm256_setzero_ps, load _mm256_loadu_ps, store _mm256_storeu_ps, splat _mm256_set1_ps,
        fma _mm256_fmadd_ps, max _mm256_max_ps
    }

    dw_rows! {
        /// AVX-512F: 6 rows × one zmm (one vector per row would leave three accumulators
        /// waiting on the FMA latency; six rows also load each input segment for up to
        /// three of them).
        #[target_feature(enable = "avx512f")]
        fn rows_avx512: __m512, lanes 16, rows 6;
        zero _mm512_setzero_ps, load _mm512_loadu_ps, store _mm512_storeu_ps, splat _mm512_set1_ps,
        fma _mm512_fmadd_ps, max _mm512_max_ps
    }
}
#[cfg(target_arch = "x86_64")]
use x86::{rows_avx2, rows_avx512};

mod portable {
    use super::{Plane, MAX_RB, W};
    use crate::simd::wide_ops::{fma, load, max, splat, store, zero};
    use wide::f32x8;

    dw_rows! {
        /// Portable `wide`: 3 rows × 2 vectors.
        fn rows_portable: f32x8, lanes 8, rows 3;
        zero zero, load load, store store, splat splat, fma fma, max max
    }
}
use portable::rows_portable;
