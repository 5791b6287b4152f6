//! The input rows under a band of Winograd tiles, each zero-padded row split by column
//! phase, shared by F(2×2, 3×3) (two phases) and F(4×4, 3×3) (four).

use crate::geometry::Conv2dGeometry;
use crate::simd::SimdLevel;

/// The padded input rows under `tile_rows` rows of `P × P`-output tiles of one group, each
/// row split by column modulo `P`: for tile column `t`, the patch's column `P·t + j` is
/// `phase[j % P][t + j / P]`, so a vector of consecutive tiles reads each of the patch's
/// `P + 2` columns contiguously.
pub(super) struct PhaseRows<const P: usize> {
    /// Floats per phase of a row: the tiles across, one more for the patches' overlap, and
    /// `slack` so that a vector of tiles may start at the last tile.
    pub per_phase: usize,
    /// Padded input rows held: `P` per tile row, plus the 3×3 patches' overlap.
    pub rows: usize,
}

impl<const P: usize> PhaseRows<P> {
    pub fn new(g: &Conv2dGeometry, tile_rows: usize, slack: usize) -> Self {
        let tw = g.w.output.div_ceil(P);
        PhaseRows { per_phase: tw + 1 + slack, rows: P * tile_rows + 2 }
    }

    /// Floats per padded row (all phases).
    pub fn row_len(&self) -> usize {
        P * self.per_phase
    }

    /// Floats per channel.
    pub fn channel_len(&self) -> usize {
        self.rows * self.row_len()
    }

    /// Fills `C/G` channels from tile row `tr0`: local row `r` is input row `P·tr0 + r − pt`,
    /// zero where that (or a column) is outside the input. `row_buf` holds one padded row.
    pub fn fill(
        &self,
        g: &Conv2dGeometry,
        xg: &[f32],
        tr0: usize,
        out: &mut [f32],
        row_buf: &mut [f32],
        level: SimdLevel,
    ) {
        let (h_in, w_in) = (g.h.input, g.w.input);
        let (pt, pl) = (g.h.pad_before, g.w.pad_before);
        let (q, len) = (self.per_phase, self.row_len());
        // Padded column `pl + iw` holds input column `iw`; the rest of the row is zero.
        let row_buf = &mut row_buf[..len];
        let (lo, hi) = (pl.min(len), (pl + w_in).min(len));
        row_buf[..lo].fill(0.0);
        row_buf[hi..].fill(0.0);
        for c in 0..g.c_per_group() {
            let chan = &xg[c * h_in * w_in..(c + 1) * h_in * w_in];
            let dst = &mut out[c * self.channel_len()..(c + 1) * self.channel_len()];
            for (r, row) in dst.chunks_exact_mut(len).enumerate() {
                let Some(ih) = (P * tr0 + r).checked_sub(pt).filter(|&ih| ih < h_in) else {
                    row.fill(0.0);
                    continue;
                };
                row_buf[lo..hi].copy_from_slice(&chan[ih * w_in + lo - pl.min(lo)..][..hi - lo]);
                deinterleave::<P>(row_buf, row, q, level);
            }
        }
    }
}

/// `out[p·q + u] = src[P·u + p]`: one padded row split into its `P` column phases of `q`
/// floats (`src` and `out` hold `P·q`). AVX2 de-interleaves eight groups at a time with
/// shuffles; otherwise each phase is a strided gather. (Indexing the phase slices, the
/// baseline build moved one float at a time behind a bounds check: 13% of a dilated
/// Winograd4 layer.)
fn deinterleave<const P: usize>(src: &[f32], out: &mut [f32], q: usize, level: SimdLevel) {
    let (src, out) = (&src[..P * q], &mut out[..P * q]);
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 && matches!(P, 2 | 4) {
        // SAFETY: AVX2 is available (the plan's level, which the CPU supports); the slices
        // hold P·q floats.
        unsafe { avx2::deinterleave::<P>(src, out, q) };
        return;
    }
    let _ = level;
    for (p, phase) in out.chunks_exact_mut(q).enumerate() {
        super::strided::gather(phase, &src[p..], P);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::deinterleave`] for `P` = 2 or 4, eight groups of `P` per step.
    ///
    /// # Safety
    /// The CPU must support AVX2; `src` and `out` must hold `P·q` floats.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn deinterleave<const P: usize>(src: &[f32], out: &mut [f32], q: usize) {
        assert!(src.len() >= P * q && out.len() >= P * q && matches!(P, 2 | 4));
        // Eight groups a step; a ragged end takes the last eight groups again, overlapping
        // the step before (same values rewritten), instead of a scalar tail: with
        // ResNet's rows (q = 23) the tail's 28 bounds-checked moves took longer than the
        // two vector steps.
        let (s, o) = (src.as_ptr(), out.as_mut_ptr());
        let last = (q >= 8 && !q.is_multiple_of(8)).then(|| q - 8);
        for u in (0..q / 8 * 8).step_by(8).chain(last) {
            // SAFETY: groups u .. u + 8 (P·(u + 8) ≤ P·q floats of src) go to phase p's
            // floats u .. u + 8 (p·q + u + 8 ≤ P·q of out), asserted lengths.
            unsafe {
                let a: [__m256; P] = std::array::from_fn(|i| _mm256_loadu_ps(s.add(P * u + 8 * i)));
                if P == 4 {
                    // Per 128-bit lane a 4×4 transpose of groups (u, u+2 | u+1, u+3) and
                    // (u+4, u+6 | u+5, u+7); then lanes back in group order.
                    let (t0, t1) = (_mm256_unpacklo_ps(a[0], a[1]), _mm256_unpackhi_ps(a[0], a[1]));
                    let (t2, t3) = (_mm256_unpacklo_ps(a[2], a[3]), _mm256_unpackhi_ps(a[2], a[3]));
                    let pd = |x: __m256| _mm256_castps_pd(x);
                    let r = [
                        _mm256_castpd_ps(_mm256_unpacklo_pd(pd(t0), pd(t2))),
                        _mm256_castpd_ps(_mm256_unpackhi_pd(pd(t0), pd(t2))),
                        _mm256_castpd_ps(_mm256_unpacklo_pd(pd(t1), pd(t3))),
                        _mm256_castpd_ps(_mm256_unpackhi_pd(pd(t1), pd(t3))),
                    ];
                    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                    for (p, v) in r.iter().enumerate() {
                        _mm256_storeu_ps(o.add(p * q + u), _mm256_permutevar8x32_ps(*v, order));
                    }
                } else {
                    // Evens and odds of groups (u, u+1, u+4, u+5 | u+2, u+3, u+6, u+7).
                    let even = _mm256_shuffle_ps::<0b10_00_10_00>(a[0], a[1]);
                    let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a[0], a[1]);
                    let fix = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
                    _mm256_storeu_ps(o.add(u), fix(even));
                    _mm256_storeu_ps(o.add(q + u), fix(odd));
                }
            }
        }
        // Fewer than eight groups: one by one.
        for u in (if q >= 8 { q } else { 0 })..q {
            for p in 0..P {
                out[p * q + u] = src[P * u + p];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every group lands in its phase, for every length (whole vectors, ragged ends that
    /// overlap the step before, fewer groups than a vector), on every level. (The
    /// Winograd layouts never read a row's ragged end, which lies in its slack: their
    /// properties cannot see it.)
    #[test]
    fn deinterleave_splits_every_group() {
        fn check<const P: usize>(level: SimdLevel) {
            for q in 1..41 {
                let src: Vec<f32> = (0..P * q).map(|i| i as f32).collect();
                let mut out = vec![-1.0; P * q];
                deinterleave::<P>(&src, &mut out, q, level);
                for (i, &v) in out.iter().enumerate() {
                    let (p, u) = (i / q, i % q);
                    assert_eq!(v, (P * u + p) as f32, "P = {P}, q = {q}, {level:?}");
                }
            }
        }
        for level in SimdLevel::supported() {
            check::<2>(level);
            check::<4>(level);
        }
    }
}
