//! The zero-padded, phase-split copy of an image's channels that the direct kernel and the
//! im2col packer read from.

use super::kernels::V;
use crate::geometry::Conv2dGeometry;
use crate::parallel::for_each_block;
use crate::simd::SimdLevel;

/// The zero-padded copy of one group's input channels that a job reads from, split by
/// column phase: with horizontal stride `sw`, padded column `col` is stored in phase
/// `col % sw` at position `col / sw`. Output column `ow` at tap `s` reads padded column
/// `ow·sw + s·dw`, i.e. phase `(s·dw) % sw` at `ow + (s·dw) / sw`, so consecutive output
/// columns read consecutive floats for every stride. Rows and phases have slack so that the
/// ragged last tile of a row reads inside the buffer.
pub(super) struct Padded {
    /// Padded rows.
    pub hp: usize,
    /// Floats per phase of a row.
    pub wq: usize,
    /// Phases (the horizontal stride).
    pub phases: usize,
}

impl Padded {
    pub fn new(g: &Conv2dGeometry) -> Self {
        let (h, w) = (&g.h, &g.w);
        let hp = h.input + h.pad_before + h.pad_after;
        let wp = w.input + w.pad_before + w.pad_after;
        let phases = w.stride;
        let max_shift = (w.kernel - 1) * w.dilation / phases;
        let wq = wp.div_ceil(phases).max(w.output.div_ceil(V) * V + max_shift);
        Padded { hp, wq, phases }
    }

    /// The input itself as the layout, when it needs no padding and no phase split (stride
    /// 1): rows `W` long, planes `H·W`. Only for readers that never read past a row's last
    /// tap (the channel-vectorised kernel clamps a ragged tile's pixels), not for those
    /// that read a whole vector past the output's end.
    pub fn unpadded(g: &Conv2dGeometry) -> Option<Self> {
        let (h, w) = (&g.h, &g.w);
        let no_pad = h.pad_before + h.pad_after + w.pad_before + w.pad_after == 0;
        (no_pad && w.stride == 1).then_some(Padded { hp: h.input, wq: w.input, phases: 1 })
    }

    /// The copy without a phase split, whatever the stride: rows `pad + W + pad` long, read
    /// by the AVX-512 channel-vectorised tiles `stride` floats a pixel (they broadcast one
    /// float a pixel, never reading past a row's last tap); or, with no padding, the input
    /// itself.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the AVX-512 tiles only
    pub fn unsplit(g: &Conv2dGeometry) -> (Self, bool) {
        let (h, w) = (&g.h, &g.w);
        let hp = h.input + h.pad_before + h.pad_after;
        let wp = w.input + w.pad_before + w.pad_after;
        (Padded { hp, wq: wp, phases: 1 }, hp == h.input && wp == w.input)
    }

    pub fn row_len(&self) -> usize {
        self.phases * self.wq
    }

    pub fn plane(&self) -> usize {
        self.hp * self.row_len()
    }

    /// Offset of tap (c, r, s) from a tile's base.
    pub fn tap_offset(&self, g: &Conv2dGeometry, c: usize, r: usize, s: usize) -> usize {
        let col = s * g.w.dilation;
        c * self.plane() + r * g.h.dilation * self.row_len() + (col % self.phases) * self.wq + col / self.phases
    }

    /// `out[t]` = the offset of tap `t` of the flattened `(c, r, s)` reduction, for every
    /// `t < out.len()` (the layout im2col, the direct backward-weight paths and the
    /// channel-vectorised kernels all index by).
    pub fn tap_offsets(&self, g: &Conv2dGeometry, out: &mut [usize]) {
        tap_grid(g, out, self.plane(), |r, s| self.tap_offset(g, 0, r, s));
    }

    /// [`Padded::fill`] in `parts` blocks of channels, run side by side.
    pub fn fill_parallel(
        &self,
        g: &Conv2dGeometry,
        x: &[f32],
        channels: usize,
        buf: &mut [f32],
        parts: usize,
        level: SimdLevel,
    ) {
        let plane_in = g.h.input * g.w.input;
        for_each_block(&mut buf[..channels * self.plane()], self.plane(), parts, |cs, mine| {
            self.fill(g, &x[cs.start * plane_in..cs.end * plane_in], cs.len(), mine, level);
        });
    }

    /// Copies `channels` planes of `x` (each `H × W`) into `buf`, padding zeroed, with
    /// instructions up to `level` (the caller's plan's).
    pub fn fill(&self, g: &Conv2dGeometry, x: &[f32], channels: usize, buf: &mut [f32], level: SimdLevel) {
        let (h, w) = (&g.h, &g.w);
        let buf = &mut buf[..channels * self.plane()];
        let (top, rows) = (h.pad_before * self.row_len(), h.input * self.row_len());
        if rows == 0 || w.input == 0 {
            // No input rows, or empty ones: padding alone.
            return buf.fill(0.0);
        }
        // Rows walked as exact chunks, with no index arithmetic per row (with the row copy
        // at a few nanoseconds, that was 4% of MobileNet's depthwise layer).
        let planes_in = x.chunks_exact(h.input * w.input).take(channels);
        for (chan, x_c) in buf.chunks_exact_mut(self.plane()).zip(planes_in) {
            // Padding rows zeroed; each input row zeroed just before its copy (in L1 then,
            // where a memset of the whole buffer first would stream it through twice).
            chan[..top].fill(0.0);
            chan[top + rows..].fill(0.0);
            let rows_in = x_c.chunks_exact(w.input);
            for (row, src) in chan[top..top + rows].chunks_exact_mut(self.row_len()).zip(rows_in) {
                if self.phases == 1 {
                    pad_row(row, w.pad_before, src, level);
                    continue;
                }
                row.fill(0.0);
                if self.phases == 2 {
                    // Stride 2: deinterleave the row in pairs (vectorisable). Input column iw
                    // is padded column pl + iw, stored at phase (pl + iw) % 2, index (pl + iw) / 2.
                    let pl = w.pad_before;
                    let (even, odd) = row.split_at_mut(self.wq);
                    // `first` takes the even input columns, `second` the odd ones.
                    let (first, second) = if pl % 2 == 0 {
                        (&mut even[pl / 2..], &mut odd[pl / 2..])
                    } else {
                        (&mut odd[pl / 2..], &mut even[pl / 2 + 1..])
                    };
                    let pairs = src.chunks_exact(2);
                    let rest = pairs.remainder();
                    for ((a, b), pair) in first.iter_mut().zip(second.iter_mut()).zip(pairs) {
                        *a = pair[0];
                        *b = pair[1];
                    }
                    if let [last] = rest {
                        // An odd width's last input column lands in `first` at index W / 2.
                        first[w.input / 2] = *last;
                    }
                } else {
                    // Phase by phase: padded columns ph, ph + sw, … are input columns
                    // col − pl, taken with stride sw (`strided::gather`: fixed-stride
                    // loops for strides up to 4).
                    let (sw, pl) = (self.phases, w.pad_before);
                    for ph in 0..sw {
                        let first = pl + (ph + sw - pl % sw) % sw; // first padded col ≥ pl in phase ph
                        if first >= pl + w.input {
                            continue;
                        }
                        let dst = &mut row[ph * self.wq + first / sw..(ph + 1) * self.wq];
                        let n = dst.len().min((pl + w.input - first).div_ceil(sw));
                        super::strided::gather(&mut dst[..n], &src[first - pl..], sw);
                    }
                }
            }
        }
    }
}

/// `out[t]` = the offset of tap `t` of the flattened `(c, r, s)` reduction in a copy whose
/// channel planes are `plane` floats apart, channel 0's tap `(r, s)` being at `first(r, s)`:
/// channel 0's offsets once, then each further channel's a plane on (a division per tap
/// was 1.2% of a stride-2 ResNet layer's forward).
pub(super) fn tap_grid(g: &Conv2dGeometry, out: &mut [usize], plane: usize, first: impl Fn(usize, usize) -> usize) {
    let s_n = g.w.kernel;
    let rs = g.h.kernel * s_n;
    if rs == 0 {
        return;
    }
    let (chan0, rest) = out.split_at_mut(rs.min(out.len()));
    for (j, o) in chan0.iter_mut().enumerate() {
        *o = first(j / s_n, j % s_n);
    }
    for (c, chunk) in rest.chunks_mut(rs).enumerate() {
        let shift = (c + 1) * plane;
        for (o, &f) in chunk.iter_mut().zip(chan0.iter()) {
            *o = f + shift;
        }
    }
}

/// `row = [0; left] ++ src ++ [0; rest]`, writing every float once: with AVX-512 in masked
/// vector loads and stores, otherwise the gaps zeroed around a copy (zeroing whole rows
/// first was 8% of MobileNet's depthwise layer, which is mostly this copy).
#[inline(always)]
pub(super) fn pad_row(row: &mut [f32], left: usize, src: &[f32], level: SimdLevel) {
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx512 {
        // SAFETY: the caller's plan checked that this CPU supports the level.
        return unsafe { x86::pad_row(row, left, src) };
    }
    let _ = level;
    let (gap, rest) = row.split_at_mut(left);
    let (mid, right) = rest.split_at_mut(src.len());
    gap.fill(0.0);
    mid.copy_from_slice(src);
    right.fill(0.0);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `row = [0; left] ++ src ++ [0; rest]` in 16-float loads and stores, masked only at
    /// the gaps: no call per gap or row (the `memset`, `memmove` pair per row of a 56-wide
    /// image, with the loop around it, was 8.5% of a stride-2 ResNet layer's forward).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pad_row(row: &mut [f32], left: usize, src: &[f32]) {
        const L: usize = 16;
        let (n, end) = (row.len(), left + src.len());
        assert!(end <= n, "pad_row: the row is too short");
        let (rp, sp) = (row.as_mut_ptr(), src.as_ptr());
        // The piece of lanes i .. i + 16 (those below n) under masks: lanes lo .. hi from
        // src, the others zero.
        let piece = |i: usize| {
            let lo = left.saturating_sub(i).min(L);
            let hi = end.saturating_sub(i).min(L);
            let take = if hi > lo { ((1u32 << hi) - 1) as u16 & !(((1u32 << lo) - 1) as u16) } else { 0 };
            let keep = ((1u32 << (n - i).min(L)) - 1) as u16;
            // SAFETY: lane j of the load reads src[i + j − left] only where take has bit j,
            // i.e. left ≤ i + j < end, inside src (masked-off lanes are not accessed and
            // cannot fault); the store writes row[i + j] only where i + j < n.
            unsafe {
                let v = _mm512_maskz_loadu_ps(take, sp.wrapping_add(i).wrapping_sub(left));
                _mm512_mask_storeu_ps(rp.add(i), keep, v);
            }
        };
        // The pieces that reach into the left gap, then whole pieces of src in a tight loop
        // (computing both masks for every piece was 36% of MobileNet's depthwise layer,
        // mostly bookkeeping), then the pieces that reach past src's end.
        let mut i = 0;
        while i < n && i < left {
            piece(i);
            i += L;
        }
        while i + L <= end {
            // SAFETY: left ≤ i and i + 16 ≤ end ≤ n: src[i − left .. + 16] and row[i .. + 16]
            // are in bounds.
            unsafe { _mm512_storeu_ps(rp.add(i), _mm512_loadu_ps(sp.add(i - left))) };
            i += L;
        }
        while i < n {
            piece(i);
            i += L;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::simd::SimdLevel;

    /// The row copy writes exactly `[0; left] ++ src ++ [0; rest]` on every level (AVX-512:
    /// masked vector loads and stores) for rows shorter and longer than a vector, gaps
    /// wider than a vector, and empty sources, into a NaN-filled row (so a lane it skipped
    /// shows), and never past the row.
    #[test]
    fn row_copy_writes_exactly_the_padded_row() {
        for level in SimdLevel::supported() {
            for n in 0..45 {
                for left in 0..=n.min(20) {
                    for len in [0, 1, 7, 16, 17, n - left].into_iter().filter(|&l| left + l <= n) {
                        let src: Vec<f32> = (0..len).map(|i| i as f32 + 1.0).collect();
                        let mut buf = vec![f32::NAN; n + 3];
                        super::pad_row(&mut buf[..n], left, &src, level);
                        for (i, &v) in buf[..n].iter().enumerate() {
                            let want = if (left..left + len).contains(&i) { src[i - left] } else { 0.0 };
                            assert_eq!(v.to_bits(), want.to_bits(), "{level:?} n {n} left {left} len {len} at {i}");
                        }
                        assert!(buf[n..].iter().all(|v| v.is_nan()), "{level:?} wrote past the row: n {n}");
                    }
                }
            }
        }
    }
}
