//! The channel-interleaved copy of an image that the channel-vectorised forward kernel
//! ([`super::kvec_fwd`]) reads on layers with many input channels.
//!
//! [`Padded`] lays each channel out as its own plane, so the taps of one pixel are spread
//! over as many cache lines as there are channels times kernel rows: on a 64-channel 3×3
//! layer, a 6-pixel tile touched ~400 lines, and its kernel waited on L2 for a quarter of
//! its time. Here the same padded, phase-split rows hold the channels in blocks of [`IL`],
//! each position's `IL` channels side by side: a block's `IL` channels at one tap are one
//! 32-byte step, and a tile's pixels at that tap lie in a few consecutive lines.
//!
//! Taps are ordered `(block, r, s, channel in block)`, so that the kernel takes a block's
//! `IL` channels at one `(r, s)` with constant offsets `0 .. IL` from one base.

use super::padded::Padded;
use crate::geometry::Conv2dGeometry;
use crate::parallel::for_each_block;
use crate::simd::SimdLevel;

/// Channels per block (one AVX2 vector of floats).
pub(super) const IL: usize = 8;

/// Largest `R·S` taken: the weight reordering in [`reorder_panel`] works in a stack buffer of
/// one block's taps.
const MAX_RS: usize = 9;

/// Largest horizontal stride (column phases) taken: the row interleave has a loop per phase
/// count, and the per-phase gaps of a row are kept in an array.
const MAX_PHASES: usize = 4;

/// The layout: `Padded`'s rows (`pad`), channel `c` of padded row `pr`, padded column `pc` at
/// `(c / IL)·block + pr·row + ((pc % S)·wq + pc / S)·IL + c % IL`, where `row = S·wq·IL`
/// floats and `block = hp·row`.
pub(super) struct Interleaved {
    pad: Padded,
}

impl Interleaved {
    /// The layout for `g`, if it is read interleaved: whole blocks of at least two (`C` a
    /// multiple of [`IL`], `C ≥ 16`), kernels of at most 9 taps, horizontal strides up to 4,
    /// and a layer that needs a copy anyway (padding, or a horizontal stride: an unpadded
    /// stride-1 layer is read in place instead).
    pub fn new(g: &Conv2dGeometry) -> Option<Self> {
        let copied = Padded::unpadded(g).is_none();
        let fits =
            g.c.is_multiple_of(IL) && g.c >= 2 * IL && g.h.kernel * g.w.kernel <= MAX_RS && g.w.stride <= MAX_PHASES;
        (g.groups == 1 && copied && fits).then(|| Interleaved { pad: Padded::new(g) })
    }

    /// Floats of one channel block.
    fn block(&self) -> usize {
        IL * self.pad.plane()
    }

    /// Floats of one image's copy.
    pub fn len(&self, g: &Conv2dGeometry) -> usize {
        g.c / IL * self.block()
    }

    /// Floats from one output row's first pixel to the next row's.
    pub fn row_step(&self, g: &Conv2dGeometry) -> usize {
        g.h.stride * self.pad.row_len() * IL
    }

    /// `out[t]`: the offset of tap `t` (in the `(block, r, s, channel)` order) from a pixel's
    /// base, for `t < C·R·S`.
    pub fn tap_offsets(&self, g: &Conv2dGeometry, out: &mut [usize]) {
        let (r_n, s_n) = (g.h.kernel, g.w.kernel);
        let p = &self.pad;
        for (t, o) in out.iter_mut().enumerate() {
            let (cb, r, s, ci) = (t / (IL * r_n * s_n), t / (IL * s_n) % r_n, t / IL % s_n, t % IL);
            let col = s * g.w.dilation;
            *o = cb * self.block()
                + r * g.h.dilation * p.row_len() * IL
                + ((col % p.phases) * p.wq + col / p.phases) * IL
                + ci;
        }
    }

    /// Copies image `x` (`C` planes of `H × W`) into `buf` (at least [`Interleaved::len`]
    /// floats), padding zeroed, in `parts` runs of channel blocks side by side.
    pub fn fill(&self, g: &Conv2dGeometry, x: &[f32], buf: &mut [f32], parts: usize, level: SimdLevel) {
        let block_in = IL * g.h.input * g.w.input;
        let len = self.len(g);
        let slots = Slots { phases: self.pad.phases, wq: self.pad.wq, first: g.w.pad_before };
        // Every row's gaps are the same: the positions of each phase that no input column
        // lands in (found once here, not with divisions per row and phase).
        let mut spans = [(0, 0); MAX_PHASES];
        for (ph, span) in spans.iter_mut().enumerate().take(slots.phases) {
            *span = slots.span(ph, g.w.input);
        }
        for_each_block(&mut buf[..len], self.block(), parts, |blocks, mine| {
            for (cb, dst) in blocks.zip(mine.chunks_exact_mut(self.block())) {
                self.fill_block(g, &x[cb * block_in..(cb + 1) * block_in], dst, &slots, &spans, level);
            }
        });
    }

    /// One block: `src` holds its `IL` input planes, `dst` its `IL·plane` floats; `spans[ph]`
    /// are the positions of phase `ph` that input columns fill.
    fn fill_block(
        &self,
        g: &Conv2dGeometry,
        src: &[f32],
        dst: &mut [f32],
        slots: &Slots,
        spans: &[(usize, usize); MAX_PHASES],
        level: SimdLevel,
    ) {
        let (h_in, w_in, top) = (g.h.input, g.w.input, g.h.pad_before);
        let row_len = self.pad.row_len() * IL;
        dst[..top * row_len].fill(0.0);
        dst[(top + h_in) * row_len..].fill(0.0);
        for ih in 0..h_in {
            let row = &mut dst[(top + ih) * row_len..][..row_len];
            // Only the positions no input column lands in are zeroed: per phase, those
            // before its first input column and after its last.
            for (ph, &(q0, q1)) in spans.iter().enumerate().take(slots.phases) {
                let part = &mut row[ph * slots.wq * IL..(ph + 1) * slots.wq * IL];
                part[..q0 * IL].fill(0.0);
                part[q1 * IL..].fill(0.0);
            }
            let rows: [&[f32]; IL] = std::array::from_fn(|ci| &src[(ci * h_in + ih) * w_in..][..w_in]);
            let done = interleave_simd(row, &rows, slots, level);
            for (iw, at) in slots.iter().take(w_in).enumerate().skip(done) {
                for (ci, src_row) in rows.iter().enumerate() {
                    row[at + ci] = src_row[iw];
                }
            }
        }
    }
}

/// The row's columns in whole groups of 8 on levels with AVX2 (see `avx2::interleave_row`);
/// returns the first column not done (0 on other levels).
fn interleave_simd(row: &mut [f32], rows: &[&[f32]; IL], slots: &Slots, level: SimdLevel) -> usize {
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 {
        // SAFETY: AVX2 is available (the plan's level, which the CPU supports).
        return unsafe { avx2::interleave_row(row, rows, slots) };
    }
    let _ = (row, rows, slots, level);
    0
}

/// Where the input columns of a row go: input column `iw` is padded column `first + iw`,
/// stored in phase `col % phases` at position `col / phases`, `IL` floats a position.
struct Slots {
    phases: usize,
    wq: usize,
    first: usize,
}

impl Slots {
    /// The positions `q0 .. q1` of phase `ph` that the row's `w_in` input columns fill.
    fn span(&self, ph: usize, w_in: usize) -> (usize, usize) {
        let (p, end) = (self.phases, self.first + w_in);
        // The first padded column ≥ first in phase ph.
        let c0 = self.first + (ph + p - self.first % p) % p;
        if c0 >= end {
            return (self.wq, self.wq);
        }
        (c0 / p, c0 / p + (end - c0).div_ceil(p))
    }

    /// The slot of every input column in turn, from column 0 (no division per column).
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        let (mut ph, mut q) = (self.first % self.phases, self.first / self.phases);
        std::iter::from_fn(move || {
            let at = (ph * self.wq + q) * IL;
            ph += 1;
            if ph == self.phases {
                ph = 0;
                q += 1;
            }
            Some(at)
        })
    }
}

/// Weight steps of one kernel's panel (`width` lanes a tap, taps in the natural `(c, r, s)`
/// order) reordered in place into the interleaved tap order `(block, r, s, channel)`.
pub(super) fn reorder_panel(g: &Conv2dGeometry, panel: &mut [f32], width: usize) {
    let rs = g.h.kernel * g.w.kernel;
    assert!(rs <= MAX_RS && width <= 16, "a block of {rs} taps × {width} lanes");
    let mut tmp = [0.0f32; IL * MAX_RS * 16];
    let step = IL * rs * width;
    for block in panel.chunks_exact_mut(step) {
        tmp[..step].copy_from_slice(block);
        for ci in 0..IL {
            for t in 0..rs {
                // Natural step ci·RS + t goes to t·IL + ci.
                let from = (ci * rs + t) * width;
                let to = (t * IL + ci) * width;
                block[to..to + width].copy_from_slice(&tmp[from..from + width]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Slots, IL};
    use std::arch::x86_64::*;

    /// The row's columns eight at a time: an 8×8 register transpose of the `IL` rows'
    /// columns, each result stored whole at its column's slot. Returns the first column
    /// not done (the ragged end, fewer than 8).
    #[target_feature(enable = "avx2")]
    pub(super) fn interleave_row(out: &mut [f32], rows: &[&[f32]; IL], slots: &Slots) -> usize {
        match slots.phases {
            1 => interleave_row_p::<1>(out, rows, slots),
            2 => interleave_row_p::<2>(out, rows, slots),
            3 => interleave_row_p::<3>(out, rows, slots),
            4 => interleave_row_p::<4>(out, rows, slots),
            p => unreachable!("Interleaved::new takes at most {} phases, not {p}", super::MAX_PHASES),
        }
    }

    /// [`interleave_row`] for `P` phases: column `iw`'s slot computed from `P` known at
    /// compile time (a shift or a multiply, where the slot iterator's branch per column and
    /// the rows' bounds checks made the loop instruction-bound: 6.5% of a stride-2 layer's
    /// Direct forward).
    #[target_feature(enable = "avx2")]
    fn interleave_row_p<const P: usize>(out: &mut [f32], rows: &[&[f32]; IL], slots: &Slots) -> usize {
        let w = rows[0].len();
        let whole = w / 8 * 8;
        if whole == 0 {
            return 0;
        }
        assert!(rows.iter().all(|r| r.len() == w) && slots.phases == P);
        // Every slot written lies below the last column's slot + IL (slots grow with the
        // column within a phase, and phase P − 1's last position ends the row's data).
        let slot = |col: usize| ((col % P) * slots.wq + col / P) * IL;
        let last = (0..P.min(whole)).map(|j| slot(slots.first + whole - 1 - j)).max().unwrap_or(0);
        assert!(last + IL <= out.len(), "the row's slots lie inside it");
        let (src, dst) = (rows.map(|r| r.as_ptr()), out.as_mut_ptr());
        for iw0 in (0..whole).step_by(8) {
            // SAFETY: every row holds w ≥ iw0 + 8 floats (asserted lengths).
            let cols =
                crate::simd::x86::transpose8(std::array::from_fn(|c| unsafe { _mm256_loadu_ps(src[c].add(iw0)) }));
            for (j, col) in cols.into_iter().enumerate() {
                // SAFETY: column iw0 + j < whole; its slot + IL ≤ last + IL ≤ out.len()
                // (asserted: the last P columns hold the largest slot of each phase).
                unsafe { _mm256_storeu_ps(dst.add(slot(slots.first + iw0 + j)), col) };
            }
        }
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Conv2dParams, Padding};

    /// For every output pixel and every tap, the interleaved copy holds what the planar
    /// padded copy holds at that pixel and tap (the tap renumbered from `(c, r, s)` order),
    /// padding and slack included, on every level: strides 1–3 (phase splits), dilation,
    /// asymmetric padding, rows narrower and wider than a transpose's 8 columns. The buffer
    /// starts full of NaN, so a position left unwritten shows.
    #[test]
    fn interleaved_reads_match_the_planar_copy() {
        let cases = [
            ([16, 9, 19], (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
            ([16, 7, 5], (3, 3), (1, 1), (1, 1), (2, 0, 0, 3)),
            ([24, 11, 30], (3, 2), (3, 2), (1, 2), (0, 1, 2, 0)),
            ([32, 6, 17], (1, 1), (2, 2), (1, 1), (0, 0, 0, 0)),
            ([16, 8, 16], (3, 3), (1, 3), (2, 1), (0, 2, 1, 1)),
        ];
        for ([c, h, w], (r, s), (sh, sw), (dh, dw), (top, bottom, left, right)) in cases {
            let params = Conv2dParams::default().stride(sh, sw).dilation(dh, dw).padding(Padding::Explicit {
                top,
                bottom,
                left,
                right,
            });
            let g = Conv2dGeometry::new(&[1, c, h, w], &[8, c, r, s], &params).unwrap();
            let x: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
            let il = Interleaved::new(&g).expect("interleaved");
            let pad = Padded::new(&g);
            let mut planar = vec![0.0; c * pad.plane()];
            pad.fill(&g, &x, c, &mut planar, SimdLevel::Portable);
            let crs = c * r * s;
            let (mut off_p, mut off_i) = (vec![0; crs], vec![0; crs]);
            pad.tap_offsets(&g, &mut off_p);
            il.tap_offsets(&g, &mut off_i);
            for level in SimdLevel::supported() {
                for parts in [1, 2] {
                    let mut buf = vec![f32::NAN; il.len(&g)];
                    il.fill(&g, &x, &mut buf, parts, level);
                    for (oh, ow) in (0..g.h.output).flat_map(|oh| (0..g.w.output).map(move |ow| (oh, ow))) {
                        let base_p = oh * sh * pad.row_len() + ow;
                        let base_i = oh * il.row_step(&g) + ow * IL;
                        for (t, &o) in off_i.iter().enumerate() {
                            // Interleaved tap t = (block, r, s, channel) is planar tap (c, r, s).
                            let (cb, rs, ci) = (t / (IL * r * s), t / IL % (r * s), t % IL);
                            let natural = (cb * IL + ci) * r * s + rs;
                            let (got, want) = (buf[base_i + o], planar[base_p + off_p[natural]]);
                            assert_eq!(got.to_bits(), want.to_bits(), "{g:?} {level:?} pixel ({oh}, {ow}) tap {t}");
                        }
                    }
                }
            }
        }
    }

    /// Step `(ci·RS + t)` of each block of a natural-order panel moves to `(t·IL + ci)`.
    #[test]
    fn reordered_panels_follow_the_tap_order() {
        let params = Conv2dParams::default().padding(Padding::uniform(1));
        let g = Conv2dGeometry::new(&[1, 16, 5, 5], &[16, 16, 3, 3], &params).unwrap();
        for width in [8, 16] {
            let crs = 16 * 9;
            let natural: Vec<f32> = (0..crs * width).map(|i| i as f32).collect();
            let mut panel = natural.clone();
            reorder_panel(&g, &mut panel, width);
            for t in 0..crs {
                let (cb, rs, ci) = (t / (IL * 9), t / IL % 9, t % IL);
                let from = (cb * IL + ci) * 9 + rs;
                assert_eq!(panel[t * width..(t + 1) * width], natural[from * width..(from + 1) * width], "tap {t}");
            }
        }
    }
}
