//! Convolution as GEMM, with the im2col matrix packed straight from the image.
//!
//! For image `n` and group `g`, with `P = OH·OW` output pixels and `CRS = C/G·R·S`:
//!
//! ```text
//! Y_g[K/G × P] = W_g[K/G × CRS] · Col[CRS × P],   Col[(c,r,s), (oh,ow)] = x[n, g·C/G + c, ih, iw]
//! ```
//!
//! run as the transposed product `Y_gᵀ = Colᵀ · W_gᵀ` so that the GEMM vectorises along
//! pixels (contiguous in Y). [`Im2colRows`] packs `Colᵀ` (rows = pixels) for the forward
//! pass; [`Im2colTaps`] packs `Col` (rows = `(c,r,s)`, columns = pixels) for
//! backward-weight; strided 1×1 layers without padding run on a subsampled copy.

use super::padded::Padded;
use super::scratch::{with_index_scratch, with_scratch, with_scratch2};
use super::strided;
use super::Conv2dPlan;
use crate::gemm::{engine, run_problem, transpose_rows, CPtr, Operand, PackSource, Problem};
use crate::geometry::{Axis, Conv2dGeometry};
use crate::parallel::{for_each_block, for_each_part, Parallelism, SharedMut};
use crate::SimdLevel;
use std::ops::Range;

/// `$pack::<MR>(args)` for the kernel's sliver height `mr` (the packers' fixed-size copies
/// need it at compile time).
macro_rules! by_mr {
    ($s:ident.$pack:ident($($arg:expr),*), $mr:expr) => {
        match $mr {
            8 => $s.$pack::<8>($($arg),*),
            16 => $s.$pack::<16>($($arg),*),
            32 => $s.$pack::<32>($($arg),*),
            mr => unreachable!("no kernel has mr = {mr}"),
        }
    };
}

/// `Colᵀ` of one image and group: row `i` = output pixel `(i / OW, i % OW)`, column `j` =
/// tap `(c, r, s)`, read from the group's [`Padded`] copy `xp`: pixel `(oh, ow)` at tap `t`
/// is `xp[oh·sh·row_len + ow + tap_off[t]]`, so the pixels of one output row are
/// consecutive floats for every tap and no read needs a bounds check.
///
/// Rows may run on through several images (batched lowering of small images): row `i` is
/// then pixel `i % P` of image `i / P`, whose padded copy starts `image_stride` floats on.
pub(super) struct Im2colRows<'a> {
    pub xp: &'a [f32],
    pub pad: &'a Padded,
    pub tap_off: &'a [usize],
    pub geo: &'a Conv2dGeometry,
    pub image_stride: usize,
}

impl PackSource for Im2colRows<'_> {
    fn pack_block(
        &self,
        dst: &mut [f32],
        row0: usize,
        len: usize,
        col0: usize,
        kc: usize,
        mr: usize,
        level: SimdLevel,
    ) {
        by_mr!(self.pack(dst, row0, len, col0, kc, level), mr)
    }
}

impl Im2colRows<'_> {
    /// Sliver by sliver: split the sliver's pixels into runs along output rows (one run
    /// unless the sliver wraps a row), then copy each run for every tap.
    fn pack<const MR: usize>(
        &self,
        dst: &mut [f32],
        row0: usize,
        len: usize,
        col0: usize,
        kc: usize,
        level: SimdLevel,
    ) {
        let g = self.geo;
        let ow_n = g.w.output;
        let row_step = g.h.stride * self.pad.row_len();
        let taps = &self.tap_off[col0..col0 + kc];
        for (sl, out) in dst.chunks_exact_mut(MR * kc).take(len.div_ceil(MR)).enumerate() {
            let q0 = row0 + sl * MR;
            let lanes = MR.min(len - sl * MR);
            // Runs: (first lane, length, base offset in xp).
            let mut runs = [(0usize, 0usize, 0usize); MR];
            let mut count = 0;
            let pixels = g.h.output * ow_n;
            let (mut n, mut oh, mut ow, mut lane) = (q0 / pixels, (q0 % pixels) / ow_n, q0 % ow_n, 0);
            while lane < lanes {
                let run = (lanes - lane).min(ow_n - ow);
                runs[count] = (lane, run, n * self.image_stride + oh * row_step + ow);
                count += 1;
                lane += run;
                ow = 0;
                oh += 1;
                if oh == g.h.output {
                    oh = 0;
                    n += 1;
                }
            }
            if count == 1 && lanes == MR {
                let base = runs[0].2;
                for (step, &t) in out.chunks_exact_mut(MR).zip(taps) {
                    let step: &mut [f32; MR] = step.try_into().expect("MR lanes");
                    *step = self.xp[base + t..base + t + MR].try_into().expect("MR inputs");
                }
            } else if MR == 16 && count == 2 && lanes == MR && runs[1].2 >= runs[0].1 && two_runs_simd(level) {
                // One row break (the common case when rows are not a multiple of 16 wide):
                // per tap, 16 floats from each run's start, blended.
                #[cfg(target_arch = "x86_64")]
                {
                    let ((_, a_len, base0), (_, _, base1)) = (runs[0], runs[1]);
                    // SAFETY: AVX2 is available (the plan's level, which the CPU supports);
                    // the bounds are asserted inside.
                    unsafe { two_runs_avx2(out, self.xp, taps, a_len, base0, base1) };
                }
            } else {
                // Several runs (row breaks, small images): copy run by run with plain loops
                // (contiguous loads; no copy call per run per tap).
                for (step, &t) in out.chunks_exact_mut(MR).zip(taps) {
                    for &(l0, n, base) in &runs[..count] {
                        let src = &self.xp[base + t..base + t + n];
                        for (d, &v) in step[l0..l0 + n].iter_mut().zip(src) {
                            *d = v;
                        }
                    }
                    step[lanes..].fill(0.0);
                }
            }
        }
    }
}

/// Whether [`two_runs_avx2`] can run here.
fn two_runs_simd(level: SimdLevel) -> bool {
    cfg!(target_arch = "x86_64") && level >= SimdLevel::Avx2
}

/// A 16-pixel sliver that breaks once across output rows: pixels `0 .. a_len` from the run
/// at `base0`, the rest from the run at `base1`. Per tap, 16 floats are loaded from each
/// run's start (the second shifted back by `a_len`, so its lanes line up) and blended: the
/// reads past the first run and before the second stay inside the padded copy, which has a
/// tile's slack after every row.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn two_runs_avx2(out: &mut [f32], xp: &[f32], taps: &[usize], a_len: usize, base0: usize, base1: usize) {
    use std::arch::x86_64::*;
    const MR: usize = 16;
    let last = taps.last().copied().unwrap_or(0);
    assert!((1..MR).contains(&a_len) && base1 >= a_len, "a 16-lane sliver with one row break");
    assert!(base0.max(base1) + last + MR <= xp.len() && out.len() >= taps.len() * MR);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let cut = _mm256_set1_epi32(a_len as i32);
    // Lanes below a_len come from the first run: mask = lane < a_len.
    let m0 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(cut, lane));
    let m1 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(cut, _mm256_add_epi32(lane, _mm256_set1_epi32(8))));
    let (src, dst) = (xp.as_ptr(), out.as_mut_ptr());
    for (i, &t) in taps.iter().enumerate() {
        // SAFETY: base0 + t + 16 and base1 − a_len + t + 16 ≤ base1 + last + 16 ≤ xp.len()
        // (asserted, t ≤ last), base1 ≥ a_len; dst has 16 floats per tap (asserted).
        unsafe {
            let (p0, p1) = (src.add(base0 + t), src.add(base1 - a_len + t));
            let lo = _mm256_blendv_ps(_mm256_loadu_ps(p1), _mm256_loadu_ps(p0), m0);
            let hi = _mm256_blendv_ps(_mm256_loadu_ps(p1.add(8)), _mm256_loadu_ps(p0.add(8)), m1);
            _mm256_storeu_ps(dst.add(i * MR), lo);
            _mm256_storeu_ps(dst.add(i * MR + 8), hi);
        }
    }
}

/// `Col` of one image and group: row `j` = tap `(c, r, s)`, column `q` = output pixel
/// `(q / OW, q % OW)`, read from the group's [`Padded`] copy like [`Im2colRows`].
pub(super) struct Im2colTaps<'a> {
    pub xp: &'a [f32],
    pub pad: &'a Padded,
    pub tap_off: &'a [usize],
    pub geo: &'a Conv2dGeometry,
}

impl PackSource for Im2colTaps<'_> {
    fn pack_block(
        &self,
        dst: &mut [f32],
        row0: usize,
        len: usize,
        col0: usize,
        kc: usize,
        mr: usize,
        level: SimdLevel,
    ) {
        by_mr!(self.pack(dst, row0, len, col0, kc, level), mr)
    }
}

impl Im2colTaps<'_> {
    /// Sliver by sliver (`MR` taps), run by run (the pixels of one output row, contiguous
    /// in the padded copy for every tap): a whole sliver's run is an `MR`-row transpose
    /// (8×8 register transposes on AVX2); ragged slivers and other levels copy element by
    /// element, zero-filling the rows past `len`.
    fn pack<const MR: usize>(
        &self,
        dst: &mut [f32],
        row0: usize,
        len: usize,
        col0: usize,
        kc: usize,
        level: SimdLevel,
    ) {
        let ow_n = self.geo.w.output;
        let row_step = self.geo.h.stride * self.pad.row_len();
        for (sl, out) in dst.chunks_exact_mut(MR * kc).take(len.div_ceil(MR)).enumerate() {
            let taps = &self.tap_off[row0 + sl * MR..row0 + (sl * MR + MR).min(len)];
            // Walk the kc pixels as runs along output rows.
            let (mut oh, mut ow, mut q) = (col0 / ow_n, col0 % ow_n, 0);
            while q < kc {
                let run = (kc - q).min(ow_n - ow);
                let base = oh * row_step + ow;
                let steps = &mut out[q * MR..(q + run) * MR];
                let whole = taps.len() == MR && {
                    let rows: [&[f32]; MR] = std::array::from_fn(|r| &self.xp[base + taps[r]..][..run]);
                    transpose_rows::<MR>(steps, &rows, run, level)
                };
                if !whole {
                    for (p, step) in steps.chunks_exact_mut(MR).enumerate() {
                        for (d, &t) in step.iter_mut().zip(taps) {
                            *d = self.xp[base + t + p];
                        }
                        step[taps.len()..].fill(0.0);
                    }
                }
                q += run;
                ow = 0;
                oh += 1;
            }
        }
    }
}

/// Whether a 1×1 convolution without padding can be packed straight from the input.
fn is_subsampled(g: &Conv2dGeometry) -> bool {
    g.h.kernel == 1 && g.w.kernel == 1 && g.h.pad_before + g.h.pad_after + g.w.pad_before + g.w.pad_after == 0
}

/// Whether the convolution reads its input as the im2col matrix directly: 1×1 kernel, stride
/// 1, no padding (dilation is then irrelevant).
pub(super) fn is_pointwise(g: &Conv2dGeometry) -> bool {
    g.h.kernel == 1
        && g.w.kernel == 1
        && g.h.stride == 1
        && g.w.stride == 1
        && g.h.pad_before + g.h.pad_after + g.w.pad_before + g.w.pad_after == 0
}

/// Forward pass: one GEMM per (image, group), bias and ReLU fused into its epilogue.
pub(super) fn forward(plan: &Conv2dPlan, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let g = &plan.geo;
    let eng = engine(plan.level);
    let (cg, kg, crs_len) = (g.c_per_group(), g.k_per_group(), g.reduction_len());
    let pixels = g.h.output * g.w.output;
    let plane_in = g.h.input * g.w.input;
    let jobs = g.n * g.groups;
    if jobs == 0 || pixels == 0 || kg == 0 {
        return;
    }
    // Threads across (image, group) jobs when there are enough of them and each is small;
    // otherwise inside each GEMM. Either way every output element is computed by one GEMM
    // with the same blocking, so the result does not depend on the thread count.
    let per_job = 2.0 * (pixels * kg * crs_len) as f64;
    let threads = plan.parallelism.threads_for(per_job * jobs as f64);
    let outer = threads > 1 && jobs >= 2 * threads;
    let inner = if outer { Parallelism::Sequential } else { plan.parallelism };
    let y_ptr = SharedMut::new(y);
    let pointwise = is_pointwise(g);
    let pad = Padded::new(g);
    // Small images in a batch: one GEMM per group over every image's pixels, so the weights
    // are packed once and threads split a tall problem instead of many short ones.
    let batched_len = g.n * cg * pad.plane();
    if g.n > 1 && pixels <= BATCH_PIXELS && !pointwise && batched_len <= BATCH_FLOATS {
        return forward_batched(plan, x, w, bias, relu, y, &pad);
    }
    let job = |j: usize| {
        let (n, grp) = (j / g.groups, j % g.groups);
        let xg = &x[(n * g.c + grp * cg) * plane_in..(n * g.c + (grp + 1) * cg) * plane_in];
        let wg = Operand { data: &w[grp * kg * crs_len..(grp + 1) * kg * crs_len], rs: crs_len, cs: 1 };
        // Output pixels `first .. first + m` of every channel of this (image, group), with A
        // the lowered rows of those pixels.
        let run_rows = |a: &dyn PackSource, first: usize, m: usize, par: Parallelism| {
            let prob = Problem {
                m,
                n: kg,
                k: crs_len,
                a,
                bt: &wg,
                // SAFETY: the offset is that of y[n, grp·kg, pixel first], inside y (n < N,
                // grp < G, first < P).
                c: CPtr { ptr: unsafe { y_ptr.get().add((n * g.k + grp * kg) * pixels + first) }, rs: 1, cs: pixels },
                alpha: 1.0,
                beta: 0.0,
                row_bias: None,
                col_bias: bias.map(|b| &b[grp * kg..(grp + 1) * kg]),
                relu,
            };
            // The C block (m × kg at stride pixels) lies inside y and is this job's alone
            // (or, for a band, this band's alone).
            run_problem(eng, &prob, par);
        };
        let run = |a: &dyn PackSource| run_rows(a, 0, pixels, inner);
        if pointwise {
            run(&Operand { data: xg, rs: 1, cs: plane_in });
            return;
        }
        if is_subsampled(g) {
            // A strided 1×1 layer without padding: the input subsampled into a contiguous
            // [C/G × P] copy (long stride-S runs, split by channels like the GEMM), which
            // the GEMM then reads as a pointwise layer's input.
            with_scratch(cg * pixels, |xs| {
                let (ow_n, row_step) = (g.w.output, g.h.stride * g.w.input);
                for_each_block(&mut xs[..cg * pixels], pixels, inner.threads_for(per_job), |cs, block| {
                    for (c, dst) in cs.zip(block.chunks_exact_mut(pixels)) {
                        let plane = &xg[c * plane_in..(c + 1) * plane_in];
                        strided::gather_rows(dst, plane, ow_n, row_step, g.w.stride, plan.level);
                    }
                });
                run(&Operand { data: xs, rs: 1, cs: pixels });
            });
            return;
        }
        let bands = inner.threads_for(per_job).min(g.h.output);
        if bands <= 1 {
            with_scratch(cg * pad.plane(), |xp| {
                pad.fill(g, xg, cg, xp, plan.level);
                let xp = &*xp;
                with_index_scratch(crs_len, |tap_off| {
                    pad.tap_offsets(g, tap_off);
                    run(&Im2colRows { xp, pad: &pad, tap_off, geo: g, image_stride: 0 });
                });
            });
            return;
        }
        // Threaded inside one image: each thread takes a band of output rows, copies the
        // padded input rows under it and runs the band's GEMM, with no join between the
        // copy and the GEMM (a whole-image copy split by channels, then a GEMM split by
        // rows, left a thread waiting at each join: a tenth of a stride-2 layer's time).
        // Every output element is still one GEMM row with the same k blocking, so the
        // bits do not depend on the bands.
        for_each_part(bands, |b| {
            let (oh0, oh1) = (g.h.output * b / bands, g.h.output * (b + 1) / bands);
            let (gb, rows_in) = band_geometry(g, oh0, oh1);
            let pb = Padded::new(&gb);
            with_scratch(cg * pb.plane(), |xp| {
                for (c, dst) in xp.chunks_exact_mut(pb.plane()).enumerate() {
                    let plane = &xg[c * plane_in..(c + 1) * plane_in];
                    pb.fill(&gb, &plane[rows_in.start * g.w.input..rows_in.end * g.w.input], 1, dst, plan.level);
                }
                let xp = &*xp;
                with_index_scratch(crs_len, |tap_off| {
                    pb.tap_offsets(&gb, tap_off);
                    let a = Im2colRows { xp, pad: &pb, tap_off, geo: &gb, image_stride: 0 };
                    run_rows(&a, oh0 * g.w.output, (oh1 - oh0) * g.w.output, Parallelism::Sequential);
                });
            });
        });
    };
    if outer {
        for_each_part(jobs, job);
    } else {
        (0..jobs).for_each(job);
    }
}

/// The convolution of output rows `oh0 .. oh1` alone: the same layer on the input rows
/// under them (returned), with the padding that falls inside the band.
fn band_geometry(g: &Conv2dGeometry, oh0: usize, oh1: usize) -> (Conv2dGeometry, Range<usize>) {
    let h = &g.h;
    // Padded rows p0 .. p1 are read; padded row p is input row p − pad_before.
    let p0 = oh0 * h.stride;
    let p1 = (oh1 - 1) * h.stride + (h.kernel - 1) * h.dilation + 1;
    let i0 = (p0.max(h.pad_before) - h.pad_before).min(h.input);
    let i1 = p1.min(h.pad_before + h.input).saturating_sub(h.pad_before).max(i0);
    let pad_before = h.pad_before.saturating_sub(p0).min(p1 - p0);
    let axis =
        Axis { input: i1 - i0, pad_before, pad_after: p1 - p0 - pad_before - (i1 - i0), output: oh1 - oh0, ..*h };
    (Conv2dGeometry { h: axis, ..*g }, i0..i1)
}

/// Images with at most this many output pixels are lowered together.
const BATCH_PIXELS: usize = 1024;
/// Largest padded batch (floats) lowered at once (16 MiB).
const BATCH_FLOATS: usize = 1 << 22;

/// [`forward`] for a batch of small images: per group, `Tᵀ[(n, pix), kk]` for every image in
/// one GEMM (bias and ReLU fused), into a scratch `[K/G × N·P]`, then copied out image by
/// image.
fn forward_batched(
    plan: &Conv2dPlan,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
    pad: &Padded,
) {
    let g = &plan.geo;
    let eng = engine(plan.level);
    let (cg, kg, crs_len) = (g.c_per_group(), g.k_per_group(), g.reduction_len());
    let pixels = g.h.output * g.w.output;
    let plane_in = g.h.input * g.w.input;
    let image_stride = cg * pad.plane();
    let rows = g.n * pixels;
    for grp in 0..g.groups {
        with_scratch(g.n * image_stride, |xp| {
            for n in 0..g.n {
                let xg = &x[(n * g.c + grp * cg) * plane_in..(n * g.c + (grp + 1) * cg) * plane_in];
                pad.fill(g, xg, cg, &mut xp[n * image_stride..(n + 1) * image_stride], plan.level);
            }
            with_index_scratch(crs_len, |tap_off| {
                pad.tap_offsets(g, tap_off);
                with_scratch2(kg * rows, |t| {
                    let a = Im2colRows { xp, pad, tap_off, geo: g, image_stride };
                    let wg = Operand { data: &w[grp * kg * crs_len..(grp + 1) * kg * crs_len], rs: crs_len, cs: 1 };
                    let prob = Problem {
                        m: rows,
                        n: kg,
                        k: crs_len,
                        a: &a,
                        bt: &wg,
                        // T[kk][n·P + pix]: element (row, kk) at row + kk·rows, inside t.
                        c: CPtr { ptr: t.as_mut_ptr(), rs: 1, cs: rows },
                        alpha: 1.0,
                        beta: 0.0,
                        row_bias: None,
                        col_bias: bias.map(|b| &b[grp * kg..(grp + 1) * kg]),
                        relu,
                    };
                    run_problem(eng, &prob, plan.parallelism);
                    for kk in 0..kg {
                        for n in 0..g.n {
                            let src = &t[kk * rows + n * pixels..kk * rows + (n + 1) * pixels];
                            let at = (n * g.k + grp * kg + kk) * pixels;
                            y[at..at + pixels].copy_from_slice(src);
                        }
                    }
                });
            });
        });
    }
}
