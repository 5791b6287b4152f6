//! Direct forward convolution vectorised over output channels, for layers with a multiple
//! of 8 output channels (LeNet's C3: 16; ResNet's strided 3×3s: 64, 128) where the `KB×16`
//! tiles of `direct.rs` waste lanes on narrow output rows or lowering for the GEMM copies
//! every tap.
//!
//! `y[n, k, p] = b[k] + Σ_t x_pad[n, p + off(t)] · w[k, t]`: with the weight transposed to
//! `wt[t][k]`, a register tile of `P` pixels × 16 channels takes per tap two weight vectors
//! and `P` broadcast inputs — the GEMM micro-kernel's shape, with the input read in place
//! from the padded image instead of a packed panel. Each output is computed by one tile, in
//! tap order, so the result does not depend on the thread count.
//!
//! With AVX2, layers with whole blocks of 8 input channels read a channel-interleaved copy
//! instead ([`super::interleaved`]), the taps ordered `(block, r, s, channel)` and the
//! weight panels to match; the AVX2 tile then takes a block's 8 taps from one base at
//! constant offsets. With AVX-512 the tile (`tile_avx512`) steps through a row at the
//! stride itself: no phase split, unpadded layers read in place, and padded ones too,
//! except for the frame of outputs whose taps reach into the padding, which reads small
//! copies (see [`Layout::new`] and [`border`]).

use super::interleaved::{reorder_panel, Interleaved, IL};
use super::padded::Padded;
use super::scratch::{with_index_scratch, with_scratch, with_scratch2};
use super::Conv2dPlan;
use crate::gemm::transpose_rows;
use crate::geometry::Conv2dGeometry;
use crate::parallel::{for_each_block, for_each_part, SharedMut};
use crate::simd::SimdLevel;

#[cfg(target_arch = "x86_64")]
mod border;

/// Channels per vector.
const L: usize = 8;
/// Pixels per register tile (with two channel vectors: 12 accumulators).
const P: usize = 6;
/// Weights (`K·C·R·S` floats) from which [`forward`] packs them on several threads.
const PACK_SPLIT_FLOATS: usize = 1 << 15;

/// One group, 8 to 256 output channels in whole vectors, strides up to 4, and a reduction
/// long enough to amortise each tile's stores: the scatter of a tile into 16 channel
/// planes costs about as much as 60 taps (with CIFAR's 27-tap first layer it was half the
/// time, and the output-width kernel of [`super::direct`] ran 3–4× faster).
pub(super) fn preferred(g: &Conv2dGeometry) -> bool {
    g.groups == 1
        && g.k.is_multiple_of(L)
        && (L..=256).contains(&g.k)
        && g.h.stride <= 4
        && g.w.stride <= 4
        && g.reduction_len() >= 64
}

struct Ctx<'a> {
    g: &'a Conv2dGeometry,
    /// Floats from one output row's first pixel to the next row's in the copy read.
    row_step: usize,
    /// Floats from one pixel to the next along a row: 1, or [`IL`] when interleaved.
    px_step: usize,
    /// Subtracted from `oh·row_step + ow·px_step` to give the pixel's base: 0, except for
    /// the image read in place around its padding ([`border`]), where the base of pixel
    /// `(oh, ow)` is input row `oh·sh − pad_top`, column `ow·sw − pad_left`.
    shift: usize,
    /// Whether the taps come in blocks of [`IL`] channels at constant offsets `0 .. IL`
    /// (the interleaved copy).
    blocked: bool,
    wt: &'a [f32],
    tap_off: &'a [usize],
    /// The largest tap offset (how far past a pixel's base its taps read).
    reach: usize,
    bias: Option<&'a [f32]>,
    relu: bool,
    y: SharedMut,
}

pub(super) fn forward(plan: &Conv2dPlan, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let g = &plan.geo;
    let (crs, k) = (g.reduction_len(), g.k);
    if g.n == 0 || g.h.output == 0 || g.w.output == 0 {
        return;
    }
    with_scratch2(crs * k, |wt| {
        // Split among threads only when the pack is worth a fork (a 128 × 576 weight took
        // 6 µs on one thread; a few thousand floats take well under one).
        let parts = if crs * k >= PACK_SPLIT_FLOATS { plan.parallelism.threads_for(g.flops()) } else { 1 };
        pack(g, plan.level, w, wt, parts);
        forward_packed(plan, x, wt, bias, relu, y);
    });
}

/// The weights transposed into channel panels for the kernel: the channels in blocks of 16
/// (the last one 8 wide when `K` is 8 more than a multiple of 16), block `k0` at `k0·CRS`
/// holding `[t][lane]`: `wt[k0·CRS + t·width + lane] = w[k0 + lane, t]` (`C·R·S × K`
/// floats). A tile's taps then read one contiguous panel, 64 bytes a tap. The 16-wide
/// panels are packed by `parts` threads side by side (serial, the pack was 2.4% of a
/// stride-2 ResNet layer's forward on two threads).
pub(super) fn pack(g: &Conv2dGeometry, level: SimdLevel, w: &[f32], wt: &mut [f32], parts: usize) {
    let (crs, k) = (g.reduction_len(), g.k);
    let interleaved = matches!(Layout::new(g, level), Layout::Interleaved(_));
    let k16 = k / (2 * L) * (2 * L);
    let (whole, last) = wt[..k * crs].split_at_mut(k16 * crs);
    for_each_block(whole, 2 * L * crs, parts, |blocks, mine| {
        for (i, panel) in mine.chunks_exact_mut(2 * L * crs).enumerate() {
            pack_panel(g, level, w, (blocks.start + i) * 2 * L, panel, interleaved);
        }
    });
    if k16 < k {
        pack_panel(g, level, w, k16, last, interleaved);
    }
}

/// The panel of channels `k0 .. k0 + panel.len() / CRS` (see [`pack`]).
fn pack_panel(g: &Conv2dGeometry, level: SimdLevel, w: &[f32], k0: usize, panel: &mut [f32], interleaved: bool) {
    let crs = g.reduction_len();
    let width = panel.len() / crs.max(1);
    // A transpose of the panel's filter rows: with AVX2, 8×8 register transposes (tap by
    // tap, each float came from a different row: 4.8% of a stride-2 layer's Direct forward,
    // 1.0% now).
    let rows = |i: usize| &w[(k0 + i) * crs..(k0 + i + 1) * crs];
    let done = match width {
        16 => transpose_rows::<16>(panel, &std::array::from_fn(rows), crs, level),
        _ => transpose_rows::<8>(panel, &std::array::from_fn(rows), crs, level),
    };
    if !done {
        for (t, step) in panel.chunks_exact_mut(width).enumerate() {
            for (lane, v) in step.iter_mut().enumerate() {
                *v = w[(k0 + lane) * crs + t];
            }
        }
    }
    if interleaved {
        // The taps in the order the interleaved copy is read in.
        reorder_panel(g, panel, width);
    }
}

/// Channels of the block of 16 starting at `k0` among `k` (a multiple of 8): 16, or 8 for
/// a last odd vector. (The weight panels here; the gradient blocks of [`super::kvec_bw`].)
pub(super) fn block_width(k: usize, k0: usize) -> usize {
    debug_assert!(k.is_multiple_of(L) && k0 < k);
    (k - k0).min(2 * L)
}

/// The forward pass with the weights already transposed by [`pack`].
pub(super) fn forward_packed(
    plan: &Conv2dPlan,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) {
    let g = &plan.geo;
    let crs = g.reduction_len();
    if g.n == 0 || g.h.output == 0 || g.w.output == 0 {
        return;
    }
    let layout = Layout::new(g, plan.level);
    #[cfg(target_arch = "x86_64")]
    if let Layout::Bordered(b) = &layout {
        return border::forward(plan, b, x, wt, bias, relu, y);
    }
    let plane_in = g.h.input * g.w.input;
    let image = |n: usize| &x[n * g.c * plane_in..(n + 1) * g.c * plane_in];
    with_index_scratch(crs, |tap_off| {
        let (row_step, px_step) = match &layout {
            Layout::InPlace(p) | Layout::Planar(p) => {
                p.tap_offsets(g, tap_off);
                // A pixel a float on, or `stride` floats on without a phase split.
                (g.h.stride * p.row_len(), if p.phases == 1 { g.w.stride } else { 1 })
            }
            Layout::Interleaved(il) => {
                il.tap_offsets(g, tap_off);
                (il.row_step(g), IL)
            }
            #[cfg(target_arch = "x86_64")]
            Layout::Bordered(_) => unreachable!("bordered layouts run `border::forward`"),
        };
        let blocked = matches!(layout, Layout::Interleaved(_));
        // The blocked tile's reads rest on this (checked once per call: C·R·S offsets).
        assert!(
            !blocked || tap_off.chunks_exact(IL).all(|b| b.iter().enumerate().all(|(ci, &o)| o == b[0] + ci)),
            "interleaved taps come in blocks at offsets 0 .. IL"
        );
        let reach = tap_off.iter().copied().max().unwrap_or(0);
        let ctx = Ctx { g, row_step, px_step, shift: 0, blocked, wt, tap_off, reach, bias, relu, y: SharedMut::new(y) };
        let threads = plan.parallelism.threads_for(g.flops());
        let rows = |xp: &[f32], n: usize, band: std::ops::Range<usize>| {
            for oh in band {
                row(plan.level, &ctx, xp, n, oh);
            }
        };
        // Image n as the kernel reads it: in place, or its padded copy (filled by `parts`
        // threads side by side).
        let with_image = |n: usize, parts: usize, f: &mut dyn FnMut(&[f32])| match &layout {
            Layout::InPlace(_) => f(image(n)),
            Layout::Planar(p) => with_scratch(g.c * p.plane(), |xp| {
                p.fill_parallel(g, image(n), g.c, xp, parts, plan.level);
                f(xp);
            }),
            Layout::Interleaved(il) => with_scratch(il.len(g), |xp| {
                il.fill(g, image(n), xp, parts, plan.level);
                f(xp);
            }),
            #[cfg(target_arch = "x86_64")]
            Layout::Bordered(_) => unreachable!("bordered layouts run `border::forward`"),
        };
        if threads > 1 && g.n >= 2 * threads {
            // Whole images side by side.
            for_each_part(g.n, |n| with_image(n, 1, &mut |xp| rows(xp, n, 0..g.h.output)));
        } else {
            // Image by image, each split into bands of output rows (one per thread).
            let (bands, oh_n) = (threads.min(g.h.output), g.h.output);
            for n in 0..g.n {
                with_image(n, bands, &mut |xp| {
                    for_each_part(bands, |b| rows(xp, n, oh_n * b / bands..oh_n * (b + 1) / bands));
                });
            }
        }
    });
}

/// The copy of an image the kernel reads.
enum Layout {
    /// The input itself (no padding; stride 1, or with AVX-512 any stride it steps by).
    InPlace(Padded),
    /// [`Padded`]: plane by plane, split by phase or (AVX-512) not.
    Planar(Padded),
    /// [`Interleaved`]: channels in blocks of [`IL`].
    Interleaved(Interleaved),
    /// AVX-512, padded: the inside of the image read in place, its border from small
    /// copies ([`border`]).
    #[cfg(target_arch = "x86_64")]
    Bordered(border::Bordered),
}

impl Layout {
    fn new(g: &Conv2dGeometry, level: SimdLevel) -> Self {
        #[cfg(target_arch = "x86_64")]
        if level == SimdLevel::Avx512 && STEPS_512.contains(&g.w.stride) {
            // The AVX-512 tile steps through a row at any of these strides, so a layer
            // without padding is read in place (a stride-2 ResNet layer's interleaved copy
            // was 7% of its forward), and a padded one too except for its frame (`border`);
            // where that does not apply, from a plain row copy.
            let (p, whole) = Padded::unsplit(g);
            if whole {
                return Layout::InPlace(p);
            }
            return border::Bordered::new(g).map_or(Layout::Planar(p), Layout::Bordered);
        }
        let _ = level;
        // A layer without padding, at stride 1, is read in place: no copy (LeNet C3's copy,
        // memset and memmove were ~9% of its forward). Its tiles' reads stay inside the
        // image (see `tile_avx2`). Layers with many channels read a channel-interleaved copy.
        match (Padded::unpadded(g), Interleaved::new(g)) {
            (Some(p), _) => Layout::InPlace(p),
            (None, Some(il)) => Layout::Interleaved(il),
            (None, None) => Layout::Planar(Padded::new(g)),
        }
    }
}

/// Every output of row `oh` of image `n`.
fn row(level: SimdLevel, c: &Ctx<'_>, xp: &[f32], n: usize, oh: usize) {
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx512 && c.g.w.output >= P512_MIN {
        // SAFETY: the plan checked that this CPU supports AVX-512F.
        let done = unsafe { row_avx512(c, xp, n, oh, 0..c.g.w.output) };
        // A last block of 8 channels goes through the AVX2 tiles.
        return row_from(level, c, xp, n, oh, done);
    }
    row_from(level, c, xp, n, oh, 0)
}

/// The outputs of row `oh` of image `n` in channels `k_start ..` (a multiple of 16).
fn row_from(level: SimdLevel, c: &Ctx<'_>, xp: &[f32], n: usize, oh: usize, k_start: usize) {
    debug_assert_eq!(c.shift, 0, "only the AVX-512 tiles read around the padding");
    let (ow_n, k) = (c.g.w.output, c.g.k);
    if k_start >= k {
        return;
    }
    // The AVX2 tile takes 5 pixels instead of 6 where a mix of the two tiles the row exactly
    // and 6 alone does not: the row's last `fives` tiles take 5 (LeNet C3's rows of 10:
    // 5 + 5, not 12 lanes per 10 pixels; a stride-2 ResNet layer's rows of 27: 6·2 + 5·3,
    // not 30 lanes per 27 pixels).
    let avx2 = matches!(level, SimdLevel::Avx2 | SimdLevel::Avx512);
    let fives = if avx2 { five_tiles(ow_n) } else { 0 };
    let sixes = (ow_n - 5 * fives).div_ceil(P);
    for (i, ow0) in (0..sixes).map(|i| i * P).chain((0..fives).map(|i| ow_n - 5 * (fives - i))).enumerate() {
        let tp = if i < sixes { P } else { 5 };
        let mut k0 = k_start;
        while k0 < k {
            let width = block_width(k, k0);
            let two = width == 2 * L;
            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the plan checked that this CPU supports the level.
                SimdLevel::Avx2 | SimdLevel::Avx512 => unsafe {
                    match (two, tp, c.blocked) {
                        (true, 5, false) => tile_avx2::<2, 5, false>(c, xp, n, oh, ow0, k0),
                        (false, 5, false) => tile_avx2::<1, 5, false>(c, xp, n, oh, ow0, k0),
                        (true, _, false) => tile_avx2::<2, P, false>(c, xp, n, oh, ow0, k0),
                        (false, _, false) => tile_avx2::<1, P, false>(c, xp, n, oh, ow0, k0),
                        (true, 5, true) => tile_avx2::<2, 5, true>(c, xp, n, oh, ow0, k0),
                        (false, 5, true) => tile_avx2::<1, 5, true>(c, xp, n, oh, ow0, k0),
                        (true, _, true) => tile_avx2::<2, P, true>(c, xp, n, oh, ow0, k0),
                        (false, _, true) => tile_avx2::<1, P, true>(c, xp, n, oh, ow0, k0),
                    }
                },
                _ => {
                    let mut tile = [[0.0f32; 2 * L]; P];
                    tile_portable(c, xp, oh, ow0, k0, width / L, &mut tile);
                    store(c, n, oh, ow0, k0, width, &tile);
                }
            }
            k0 += width;
        }
    }
}

/// How many 5-pixel tiles end a row of `ow_n` pixels so that the rest is whole 6-pixel
/// tiles: the fewest that make `ow_n − 5·fives` a multiple of 6, or none when no mix fits
/// (the row then ends in a ragged 6-pixel tile).
fn five_tiles(ow_n: usize) -> usize {
    // 5·b ≡ ow_n (mod 6) ⇔ b ≡ −ow_n (mod 6).
    let fives = (P - ow_n % P) % P;
    if 5 * fives <= ow_n {
        fives
    } else {
        0
    }
}

/// The base offsets of the tile's pixels (a ragged tile repeats its last pixel; the copies
/// are not stored) and the slice of `xp` they and every tap stay inside.
fn pixel_bases<const TP: usize>(c: &Ctx<'_>, oh: usize, ow0: usize) -> [usize; TP] {
    let ow_n = c.g.w.output;
    let base = oh * c.row_step;
    std::array::from_fn(|p| base + (ow0 + p).min(ow_n - 1) * c.px_step)
}

/// Bias, ReLU and the scatter of a `P × width` tile (pixel-major) into NCHW `y`.
fn store(c: &Ctx<'_>, n: usize, oh: usize, ow0: usize, k0: usize, width: usize, tile: &[[f32; 2 * L]; P]) {
    let g = c.g;
    let (ow_n, pixels) = (g.w.output, g.h.output * g.w.output);
    for (p, lanes) in tile.iter().enumerate().take(ow_n - ow0) {
        for (kk, &v) in lanes.iter().enumerate().take(width) {
            let k = k0 + kk;
            let mut v = v + c.bias.map_or(0.0, |b| b[k]);
            if c.relu && v < 0.0 {
                v = 0.0;
            }
            // SAFETY: (n, k, oh, ow0 + p) is inside y (k < K, ow0 + p < OW), and each output
            // belongs to exactly one tile, computed by one task.
            unsafe { *c.y.get().add((n * g.k + k) * pixels + oh * ow_n + ow0 + p) = v };
        }
    }
}

fn tile_portable(c: &Ctx<'_>, xp: &[f32], oh: usize, ow0: usize, k0: usize, nv: usize, tile: &mut [[f32; 2 * L]; P]) {
    let bases = pixel_bases::<P>(c, oh, ow0);
    let (crs, width) = (c.tap_off.len(), nv * L);
    for (t, &off) in c.tap_off.iter().enumerate() {
        let wrow = &c.wt[k0 * crs + t * width..k0 * crs + (t + 1) * width];
        for (acc, &b) in tile.iter_mut().zip(&bases) {
            let xv = xp[b + off];
            for (a, &wv) in acc.iter_mut().zip(wrow) {
                *a += xv * wv;
            }
        }
    }
}

/// The AVX2 tile: `TP` (5 or 6) pixels × `NV·L` channels accumulated in registers, then bias and
/// ReLU on the vectors, an 8×8 transpose per channel vector and a store of the tile's
/// pixels per channel plane (the scalar scatter it replaces took as long as ~60 taps).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // v indexes the inner dimension of acc and the channels
fn tile_avx2<const NV: usize, const TP: usize, const BLOCKED: bool>(
    c: &Ctx<'_>,
    xp: &[f32],
    n: usize,
    oh: usize,
    ow0: usize,
    k0: usize,
) {
    use std::arch::x86_64::*;
    let bases = pixel_bases::<TP>(c, oh, ow0);
    // Every read below lies in xs = xp[lo .. hi] and in the panel, checked once here.
    let (lo, hi) = (bases[0], bases[TP - 1] + c.reach + 1);
    let xs = &xp[lo..hi];
    let crs = c.tap_off.len();
    let panel = &c.wt[k0 * crs..(k0 + NV * L) * crs];
    let rel: [usize; TP] = std::array::from_fn(|p| bases[p] - lo);
    let mut acc = [[_mm256_setzero_ps(); NV]; TP];
    let offs = c.tap_off;
    // The pixels' base pointers, each broadcast one address off them. (Indexing xs by
    // rel[p] + off instead, the compiler kept the six rel values rotating through
    // registers, four moves a tap: the tile ran at ~40 GFLOP/s, now ~65 on one thread.)
    let px: [*const f32; TP] = std::array::from_fn(|p| xs[rel[p]..].as_ptr());
    if BLOCKED {
        // A block's IL taps at one (r, s) lie at offsets off .. off + IL (the interleaved
        // copy's tap order; `Interleaved::tap_offsets`): one offset load per block, the
        // channels at constant displacements.
        for (wblock, &off) in panel.chunks_exact(IL * NV * L).zip(offs.iter().step_by(IL)) {
            for ci in 0..IL {
                // SAFETY: wblock holds IL·NV·L floats; off + ci is the offset of tap
                // (block, r, s, ci) (asserted in `forward_packed`), ≤ reach, so
                // px[p] + off + ci stays inside xs as below;
                // AVX2 and FMA are enabled in this function.
                unsafe {
                    let wv: [__m256; NV] =
                        std::array::from_fn(|v| _mm256_loadu_ps(wblock.as_ptr().add((ci * NV + v) * L)));
                    for p in 0..TP {
                        let xv = _mm256_broadcast_ss(&*px[p].add(off + ci));
                        for v in 0..NV {
                            acc[p][v] = _mm256_fmadd_ps(xv, wv[v], acc[p][v]);
                        }
                    }
                }
            }
        }
    } else {
        for (wrow, &off) in panel.chunks_exact(NV * L).zip(offs) {
            // SAFETY: wrow holds NV·L floats; px[p] + off = xs + rel[p] + off with rel[p] + off
            // ≤ bases[TP−1] − lo + reach < xs.len(); AVX2 and FMA are enabled in this function.
            unsafe {
                let wv: [__m256; NV] = std::array::from_fn(|v| _mm256_loadu_ps(wrow.as_ptr().add(v * L)));
                for p in 0..TP {
                    let xv = _mm256_broadcast_ss(&*px[p].add(off));
                    for v in 0..NV {
                        acc[p][v] = _mm256_fmadd_ps(xv, wv[v], acc[p][v]);
                    }
                }
            }
        }
    }
    let g = c.g;
    let (ow_n, pixels) = (g.w.output, g.h.output * g.w.output);
    let valid = TP.min(ow_n - ow0);
    let zero = _mm256_setzero_ps();
    for v in 0..NV {
        let kv = k0 + v * L;
        let bias = match c.bias {
            // SAFETY: kv + 8 ≤ k0 + NV·L ≤ K = b.len().
            Some(b) => unsafe { _mm256_loadu_ps(b[kv..kv + L].as_ptr()) },
            None => zero,
        };
        // Rows: pixels (P of them, then zero rows); after the transpose, one vector per
        // channel holding its P pixels.
        let rows: [__m256; L] = std::array::from_fn(|p| {
            if p < TP {
                let t = _mm256_add_ps(acc[p][v], bias);
                // maxps(0, t) returns t when t is NaN: NaN passes through ReLU.
                if c.relu {
                    _mm256_max_ps(zero, t)
                } else {
                    t
                }
            } else {
                zero
            }
        });
        let cols = crate::simd::x86::transpose8(rows);
        for (j, col) in cols.iter().enumerate() {
            let at = (n * g.k + kv + j) * pixels + oh * ow_n + ow0;
            // SAFETY: channel kv + j < K, pixels ow0 .. ow0 + valid of row oh < OH: inside y;
            // the lanes past `valid` are not written. Each output belongs to one tile,
            // computed by one task.
            unsafe { crate::simd::x86::store_prefix(c.y.get().add(at), *col, valid) };
        }
    }
}

/// Channels per AVX-512 vector.
#[cfg(target_arch = "x86_64")]
const L512: usize = 16;
/// Most pixels per AVX-512 tile: with two channel vectors, 24 of the 32 zmm registers
/// accumulate.
#[cfg(target_arch = "x86_64")]
const P512: usize = 12;
/// Fewest pixels per AVX-512 tile: rows shorter than this take the AVX2 tiles.
#[cfg(target_arch = "x86_64")]
const P512_MIN: usize = 6;

/// Pixels `ows` of row `oh` of image `n` with AVX-512 tiles in its whole 16-channel blocks:
/// the pixels are cut into the fewest tiles of at most [`P512`], as even as they come
/// (LeNet C3's rows of 10: one tile; a stride-2 ResNet layer's 27: three of 9), each tile
/// taking 32 channels a pass, then a last 16. Returns where the channels it did not cover
/// begin.
///
/// # Safety
/// The CPU must support AVX-512F; `ows` must lie in the row and hold at least
/// [`P512_MIN`] pixels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn row_avx512(c: &Ctx<'_>, xp: &[f32], n: usize, oh: usize, ows: std::ops::Range<usize>) -> usize {
    let (ow_n, k16) = (ows.len(), c.g.k / L512 * L512);
    let tiles = ow_n.div_ceil(P512);
    let (short, extra) = (ow_n / tiles, ow_n % tiles);
    let mut ow0 = ows.start;
    for i in 0..tiles {
        let tp = short + usize::from(i < extra);
        let mut k0 = 0;
        while k0 < k16 {
            let nv = if k0 + 2 * L512 <= k16 { 2 } else { 1 };
            // SAFETY: AVX-512F is enabled here; ow0 + tp ≤ ow_n and k0 + nv·16 ≤ k16.
            unsafe { tile512(nv, tp, c.px_step)(c, xp, n, oh, ow0, k0) };
            k0 += nv * L512;
        }
        ow0 += tp;
    }
    k16
}

/// An AVX-512 tile function (see [`tile_avx512`]).
#[cfg(target_arch = "x86_64")]
type Tile512 = unsafe fn(&Ctx<'_>, &[f32], usize, usize, usize, usize);

/// Pixel steps the AVX-512 tile is compiled for besides [`IL`]: the strides it reads
/// without a phase split.
#[cfg(target_arch = "x86_64")]
const STEPS_512: [usize; 3] = [1, 2, 4];

/// The AVX-512 tile for `nv` channel vectors, `tp` pixels (`P512_MIN ..= P512`) and a pixel
/// step of `step` floats (one of [`STEPS_512`] or [`IL`]).
#[cfg(target_arch = "x86_64")]
fn tile512(nv: usize, tp: usize, step: usize) -> Tile512 {
    macro_rules! by_pixels {
        ($nv:literal, $step:expr) => {
            match tp {
                6 => tile_avx512::<$nv, 6, { $step }>,
                7 => tile_avx512::<$nv, 7, { $step }>,
                8 => tile_avx512::<$nv, 8, { $step }>,
                9 => tile_avx512::<$nv, 9, { $step }>,
                10 => tile_avx512::<$nv, 10, { $step }>,
                11 => tile_avx512::<$nv, 11, { $step }>,
                12 => tile_avx512::<$nv, 12, { $step }>,
                _ => unreachable!("AVX-512 tiles are {P512_MIN}..={P512} pixels, not {tp}"),
            }
        };
    }
    macro_rules! by_step {
        ($nv:literal) => {
            match step {
                1 => by_pixels!($nv, 1),
                2 => by_pixels!($nv, 2),
                4 => by_pixels!($nv, 4),
                IL => by_pixels!($nv, IL),
                _ => unreachable!("AVX-512 tiles step 1, 2, 4 or {IL} floats a pixel, not {step}"),
            }
        };
    }
    if nv == 2 {
        by_step!(2)
    } else {
        by_step!(1)
    }
}

/// The AVX-512 tile: `TP` consecutive pixels × `NV` vectors of 16 channels (the panels at
/// `k0`, `k0 + 16`), accumulated in zmm registers. Pixel `p` of a tile reads at a constant
/// displacement `p·STEP` from pixel 0 (`STEP` = the layout's pixel step: 1, the stride of an
/// unsplit row, or [`IL`]), so every broadcast addresses one base register plus an
/// immediate. Each channel vector is stored through one 16×16 transpose
/// and a masked store of the tile's pixels per channel.
///
/// # Safety
/// The CPU must support AVX-512F; `ow0 + TP ≤ OW`, `k0 + NV·16 ≤ K` with `k0` a multiple
/// of 16 (the pixel step is checked here).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)] // p and v index acc and the panels alike
unsafe fn tile_avx512<const NV: usize, const TP: usize, const STEP: usize>(
    c: &Ctx<'_>,
    xp: &[f32],
    n: usize,
    oh: usize,
    ow0: usize,
    k0: usize,
) {
    use std::arch::x86_64::*;
    let g = c.g;
    let (ow_n, crs) = (g.w.output, c.tap_off.len());
    assert!(ow0 + TP <= ow_n && c.px_step == STEP, "whole tiles at the layout's pixel step");
    // Every read below lies in xs (pixel 0's base .. the last pixel's last tap) and in the
    // panels, checked once here.
    let lo = oh * c.row_step + ow0 * STEP - c.shift;
    let xs = &xp[lo..lo + (TP - 1) * STEP + c.reach + 1];
    // The NV panels, one after another: panel v's tap t at v·16·crs + t·16.
    let w0 = c.wt[k0 * crs..(k0 + NV * L512) * crs].as_ptr();
    let x0 = xs.as_ptr();
    // The weights of tap t, one vector per panel.
    let weights = |t: usize| {
        let mut wv = [_mm512_setzero_ps(); NV];
        for (v, w) in wv.iter_mut().enumerate() {
            // SAFETY: t < crs, so each panel holds floats t·16 .. t·16 + 16; AVX-512F is
            // enabled.
            *w = unsafe { _mm512_loadu_ps(w0.add((v * crs + t) * L512)) };
        }
        wv
    };
    // The input of pixel p at tap offset `off`, broadcast.
    let input = |off: usize, p: usize| {
        // SAFETY: every call passes a tap offset (≤ reach) and p < TP, so x0 + off + p·STEP
        // ≤ x0 + (TP − 1)·STEP + reach lies in xs; AVX-512F is enabled.
        unsafe { _mm512_set1_ps(*x0.add(off + p * STEP)) }
    };
    // The accumulators start as the first tap's products (layers take this path only with
    // C·R·S ≥ 64 taps, `preferred`). Built from values, not zeroed: a zeroed array that
    // the epilogue indexes stayed on the stack, cleared by a call to memset in every tile.
    let (&off0, rest) = c.tap_off.split_first().expect("a direct layer has taps");
    let w_first = weights(0);
    let mut acc: [[__m512; NV]; TP] = std::array::from_fn(|p| {
        let xv = input(off0, p);
        std::array::from_fn(|v| _mm512_mul_ps(xv, w_first[v]))
    });
    let mut tap = |t: usize, off: usize| {
        let wv = weights(t);
        for p in 0..TP {
            let xv = input(off, p);
            for v in 0..NV {
                acc[p][v] = _mm512_fmadd_ps(xv, wv[v], acc[p][v]);
            }
        }
    };
    for (t, &off) in rest.iter().enumerate() {
        tap(t + 1, off);
    }
    let pixels = g.h.output * ow_n;
    let zero = _mm512_setzero_ps();
    for v in 0..NV {
        let kv = k0 + v * L512;
        let bias = match c.bias {
            // SAFETY: kv + 16 ≤ K = b.len().
            Some(b) => unsafe { _mm512_loadu_ps(b[kv..kv + L512].as_ptr()) },
            None => zero,
        };
        let mut out = [zero; TP];
        for p in 0..TP {
            let t = _mm512_add_ps(acc[p][v], bias);
            // maxps(0, t) returns t when t is NaN: NaN passes through ReLU.
            out[p] = if c.relu { _mm512_max_ps(zero, t) } else { t };
        }
        // One 16×16 transpose (pixels × channels to channels × pixels) and one masked
        // store of the TP pixels per channel. (Against each half's 8×8 transposes with a
        // store per group of 8 pixels: AlexNet's 11-pixel tiles 1.022–1.031× on its
        // forward, the stride-2 ResNet layers' 9 1.008–1.018×, 6–8-pixel tiles level.)
        let cols = crate::simd::x86::transpose16(&out);
        let at = (n * g.k + kv) * pixels + oh * ow_n + ow0;
        let mask = ((1u32 << TP) - 1) as u16;
        for (j, col) in cols.iter().enumerate() {
            // SAFETY: channel kv + j < K, pixels ow0 .. ow0 + TP of row oh (ow0 + TP ≤ OW):
            // inside y, and this tile's alone (each output belongs to one tile, computed by
            // one task); the masked lanes are not written.
            unsafe { _mm512_mask_storeu_ps(c.y.get().add(at + j * pixels), mask, *col) };
        }
    }
}
