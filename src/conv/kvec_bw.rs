//! Backward-weight vectorised over output channels, for small layers (LeNet's C1 and C3)
//! where the im2col GEMM's reduction over one image's pixels is too short to pay for
//! packing a gathered column matrix per image, and the per-channel dot products re-pad
//! every image once per channel.
//!
//! `dW[k, t] = Σ_n Σ_p dY[n, k, p] · x_pad[n, p + off(t)]`: with the gradient laid out pixel
//! by pixel in blocks of 16 channels (`dyt[n][k / 16][p][k % 16]`, channels padded to a
//! multiple of 8), each pixel contributes `x_pad[p + off(t)] · dY[n, k..k + 8, p]` — one
//! broadcast and one FMA per tap and 8 channels, no lane wasted on row ends. A register
//! tile holds `TB` taps × 16 channels (32 with AVX-512). One task per block of taps sums
//! every image and pixel in a fixed order, so the result does not depend on the thread
//! count.

use super::kvec_fwd::block_width;
use super::padded::Padded;
use super::scratch::{with_index_scratch, with_scratch, with_scratch2};
use super::Conv2dPlan;
use crate::gemm::transpose_rows;
use crate::geometry::Conv2dGeometry;
use crate::parallel::{for_each_part, SharedMut};
use crate::simd::SimdLevel;

/// Channels per vector.
const L: usize = 8;
/// Taps per register tile (with two channel vectors: 12 accumulators).
const TB: usize = 6;
/// Largest scratch (padded images + transposed gradient), in floats, for which this path
/// is taken: both are built whole before the taps are shared among threads, and every tap
/// block streams the whole gradient, which must stay near the core (2 MB here).
const MAX_SCRATCH: usize = 1 << 19;
/// Most output channels: beyond, the GEMM's reuse of each packed block wins (with AVX2;
/// the AVX-512 tiles, 32 channels a pass, beat it to 256: resnet_down's K = 128 took
/// 0.548 ms against the GEMM's 0.619).
const MAX_K: usize = 64;
/// [`MAX_K`] with AVX-512.
const MAX_K_512: usize = 256;

/// Whether this path beats the per-image GEMM and the per-channel dot products (measured
/// with `examples/compare.rs`: LeNet's C1 and C3, ResNet's 64-channel 3×3 layer): one group,
/// 6 to 64 output channels (256 with AVX-512), strides up to 2 (AlexNet's stride-4 stem
/// lost), a reduction
/// long enough that the tap blocks are full, and
/// scratch that stays near the core.
pub(super) fn preferred(g: &Conv2dGeometry, level: SimdLevel) -> bool {
    let max_k = if level == SimdLevel::Avx512 { MAX_K_512 } else { MAX_K };
    let pixels = g.h.output * g.w.output;
    let kp = g.k.div_ceil(L) * L;
    let pad = Padded::new(g);
    let scratch = g.n.saturating_mul(g.c.saturating_mul(pad.plane()).saturating_add(pixels.saturating_mul(kp)));
    g.groups == 1
        && (6..=max_k).contains(&g.k)
        && g.h.stride <= 2
        && g.w.stride <= 2
        && g.reduction_len() >= 4 * TB
        && scratch <= MAX_SCRATCH
}

pub(super) fn weight(plan: &Conv2dPlan, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let g = &plan.geo;
    // An unpadded stride-1 layer (LeNet's C3) is read in place: a row's span ends at most
    // at its image's end (see `row_slices`), so no copy and no slack are needed.
    if let Some(pad) = Padded::unpadded(g) {
        return weight_from(plan, x, &pad, dy, dw);
    }
    let pad = Padded::new(g);
    let cplane = g.c * pad.plane();
    let plane_in = g.h.input * g.w.input;
    // Slack: the last tap of the last pixel reads inside the buffer by construction; keep
    // one extra row so the phase-split layout's tails stay in bounds.
    with_scratch(g.n * cplane + pad.row_len(), |xp| {
        xp[g.n * cplane..].fill(0.0);
        for n in 0..g.n {
            let image = &x[n * g.c * plane_in..(n + 1) * g.c * plane_in];
            pad.fill(g, image, g.c, &mut xp[n * cplane..(n + 1) * cplane], plan.level);
        }
        weight_from(plan, xp, &pad, dy, dw);
    });
}

/// [`weight`] from the images laid out as `pad` describes, `C` planes apart each.
fn weight_from(plan: &Conv2dPlan, xp: &[f32], pad: &Padded, dy: &[f32], dw: &mut [f32]) {
    let g = &plan.geo;
    let (crs, pixels) = (g.reduction_len(), g.h.output * g.w.output);
    let kp = g.k.div_ceil(L) * L;
    let cplane = g.c * pad.plane();
    with_scratch2(g.n * pixels * kp, |dyt| {
        // dyt[n][b][p][kk] = dY[n, 16·b + kk, p]: per image, blocks of 16 channels (the last
        // 8 wide when kp is not a multiple of 16), each pixel-major, so every block is one
        // run of the GEMM packer's 8×8 register transposes (element by element, K = 64 was
        // 7% of ResNet's 3×3 backward-weight). Past K: copies of channel K − 1, finite, their
        // sums dropped.
        for n in 0..g.n {
            let image = &mut dyt[n * pixels * kp..(n + 1) * pixels * kp];
            for k0 in (0..kp).step_by(2 * L) {
                let wb = block_width(kp, k0);
                let dst = &mut image[k0 * pixels..(k0 + wb) * pixels];
                let rows = |i: usize| {
                    let k = (k0 + i).min(g.k - 1);
                    &dy[(n * g.k + k) * pixels..(n * g.k + k + 1) * pixels]
                };
                let done = match wb {
                    16 => transpose_rows::<16>(dst, &std::array::from_fn(rows), pixels, plan.level),
                    _ => transpose_rows::<8>(dst, &std::array::from_fn(rows), pixels, plan.level),
                };
                if !done {
                    for i in 0..wb {
                        for (p, &v) in rows(i).iter().enumerate() {
                            dst[p * wb + i] = v;
                        }
                    }
                }
            }
        }
        with_index_scratch(crs, |tap_off| {
            pad.tap_offsets(g, tap_off);
            let args = Args { g, pad, xp, cplane, dyt, kp, tap_off };
            let out = SharedMut::new(dw);
            let blocks = crs.div_ceil(TB);
            let task = |b: usize| {
                let taps = b * TB..((b + 1) * TB).min(crs);
                // Up to two 16-channel tiles a pass (32 channels with AVX-512).
                let mut tiles = [[[0.0f32; 2 * L]; TB]; 2];
                let mut k0 = 0;
                while k0 < kp {
                    let [tile, tile2] = &mut tiles;
                    let width = match plan.level {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: the plan checked that this CPU supports the level.
                        SimdLevel::Avx512 if k0 + 4 * L <= kp => unsafe {
                            tile_avx512_32(&args, taps.clone(), k0, tile, tile2);
                            4 * L
                        },
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: the plan checked that this CPU supports the level.
                        SimdLevel::Avx512 if k0 + 2 * L <= kp => unsafe {
                            tile_avx512(&args, taps.clone(), k0, tile);
                            2 * L
                        },
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: the plan checked that this CPU supports the level.
                        SimdLevel::Avx2 | SimdLevel::Avx512 => unsafe {
                            tile_fma(&args, taps.clone(), k0, tile);
                            2 * L
                        },
                        _ => {
                            tile_portable(&args, taps.clone(), k0, tile);
                            2 * L
                        }
                    };
                    for (ti, t) in taps.clone().enumerate() {
                        let lanes = tiles[0][ti].iter().chain(&tiles[1][ti]);
                        for (kk, &v) in lanes.enumerate().take(g.k.saturating_sub(k0).min(width)) {
                            // SAFETY: (k0 + kk, t) is inside dW (k0 + kk < K, t < CRS) and
                            // tap t belongs to this task's block alone.
                            unsafe { *out.get().add((k0 + kk) * crs + t) = v };
                        }
                    }
                    k0 += width;
                }
            };
            if plan.parallelism.threads_for(g.flops()) > 1 {
                for_each_part(blocks, task);
            } else {
                (0..blocks).for_each(task);
            }
        });
    });
}

struct Args<'a> {
    g: &'a Conv2dGeometry,
    pad: &'a Padded,
    xp: &'a [f32],
    cplane: usize,
    dyt: &'a [f32],
    kp: usize,
    tap_off: &'a [usize],
}

/// A block's tap offsets (a short block repeats its first tap) and the farthest of them.
#[inline(always)]
fn block_offsets(a: &Args<'_>, taps: &std::ops::Range<usize>) -> ([usize; TB], usize) {
    let used = taps.len();
    let offs: [usize; TB] = std::array::from_fn(|i| a.tap_off[taps.start + if i < used { i } else { 0 }]);
    let reach = offs.iter().copied().max().unwrap_or(0);
    (offs, reach)
}

/// Row `oh` of image `n`: the input span every tap of the block reads, and the gradient
/// rows (pixel-major), each sliced once so the per-pixel reads need no further checks.
#[inline(always)]
fn row_slices<'a>(a: &'a Args<'_>, n: usize, oh: usize, reach: usize, k0: usize) -> (&'a [f32], &'a [f32]) {
    let g = a.g;
    let (oh_n, ow_n) = (g.h.output, g.w.output);
    let start = n * a.cplane + oh * g.h.stride * a.pad.row_len();
    let wb = block_width(a.kp, k0);
    let d0 = (n * a.kp + k0) * oh_n * ow_n + oh * ow_n * wb;
    (&a.xp[start..start + ow_n + reach], &a.dyt[d0..d0 + ow_n * wb])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tile_fma(a: &Args<'_>, taps: std::ops::Range<usize>, k0: usize, tile: &mut [[f32; 2 * L]; TB]) {
    if k0 + 2 * L <= a.kp {
        tile_avx2::<2>(a, taps, k0, tile);
    } else {
        tile_avx2::<1>(a, taps, k0, tile);
    }
}

/// [`tile_sum`] with AVX2 intrinsics: the `TB × NV` accumulators are named registers (the
/// auto-vectoriser spilled them).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tile_avx2<const NV: usize>(a: &Args<'_>, taps: std::ops::Range<usize>, k0: usize, tile: &mut [[f32; 2 * L]; TB]) {
    use std::arch::x86_64::*;
    let (offs, reach) = block_offsets(a, &taps);
    let mut acc = [[_mm256_setzero_ps(); NV]; TB];
    for n in 0..a.g.n {
        for oh in 0..a.g.h.output {
            let (xrow, drow) = row_slices(a, n, oh, reach, k0);
            for ow in 0..a.g.w.output {
                let at = ow * NV * L;
                // SAFETY: at + NV·L ≤ ow_n·NV·L = drow.len() (the block is NV·L wide), and
                // ow + offs[ti] < ow_n + reach = xrow.len(); AVX2/FMA are enabled here.
                unsafe {
                    let dv: [__m256; NV] = std::array::from_fn(|v| _mm256_loadu_ps(drow.as_ptr().add(at + v * L)));
                    for ti in 0..TB {
                        let xv = _mm256_broadcast_ss(&*xrow.as_ptr().add(ow + offs[ti]));
                        for v in 0..NV {
                            acc[ti][v] = _mm256_fmadd_ps(xv, dv[v], acc[ti][v]);
                        }
                    }
                }
            }
        }
    }
    for (t, a) in tile.iter_mut().zip(&acc) {
        t.fill(0.0);
        for (v, &lanes) in a.iter().enumerate() {
            // SAFETY: t holds 2·L ≥ (v + 1)·L floats; unaligned store.
            unsafe { _mm256_storeu_ps(t.as_mut_ptr().add(v * L), lanes) };
        }
    }
}

/// The AVX-512 tile: `TB` taps × 16 channels (one zmm), pixels taken in pairs with one set
/// of accumulators each (six would leave the two FMA pipes waiting on their latency), the
/// two sets added at the end. Each tap block is still summed by one task in a fixed order.
///
/// # Safety
/// The CPU must support AVX-512F; `k0 + 16 ≤ kp`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(a: &Args<'_>, taps: std::ops::Range<usize>, k0: usize, tile: &mut [[f32; 2 * L]; TB]) {
    use std::arch::x86_64::*;
    assert!(k0 + 2 * L <= a.kp, "a whole 16-channel block");
    let (offs, reach) = block_offsets(a, &taps);
    let mut acc = [[_mm512_setzero_ps(); TB]; 2];
    let ow_n = a.g.w.output;
    for n in 0..a.g.n {
        for oh in 0..a.g.h.output {
            let (xrow, drow) = row_slices(a, n, oh, reach, k0);
            let pixel = |set: &mut [__m512; TB], ow: usize| {
                // SAFETY: ow·16 + 16 ≤ ow_n·16 = drow.len() (the block is 16 wide), and
                // ow + offs[ti] < ow_n + reach = xrow.len(); AVX-512F is enabled here.
                unsafe {
                    let dv = _mm512_loadu_ps(drow.as_ptr().add(ow * 2 * L));
                    for ti in 0..TB {
                        let xv = _mm512_set1_ps(*xrow.as_ptr().add(ow + offs[ti]));
                        set[ti] = _mm512_fmadd_ps(xv, dv, set[ti]);
                    }
                }
            };
            let [even, odd] = &mut acc;
            for ow in (0..ow_n / 2 * 2).step_by(2) {
                pixel(even, ow);
                pixel(odd, ow + 1);
            }
            if ow_n % 2 == 1 {
                pixel(even, ow_n - 1);
            }
        }
    }
    for (ti, t) in tile.iter_mut().enumerate() {
        // SAFETY: t holds 16 floats; unaligned store.
        unsafe { _mm512_storeu_ps(t.as_mut_ptr(), _mm512_add_ps(acc[0][ti], acc[1][ti])) };
    }
}

/// The AVX-512 tile for 32 channels (two 16-channel blocks, one zmm each): `TB × 2`
/// accumulators, two gradient loads and `TB` broadcasts per pixel for `2·TB` FMAs. (One
/// generic function for 16 and 32 channels, the odd-pixel set picked by a constant, was
/// 1.08–2× slower: the accumulators, reached through a reference to either set, went to
/// memory.)
///
/// # Safety
/// The CPU must support AVX-512F; `k0 + 32 ≤ kp`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512_32(
    a: &Args<'_>,
    taps: std::ops::Range<usize>,
    k0: usize,
    tile: &mut [[f32; 2 * L]; TB],
    tile2: &mut [[f32; 2 * L]; TB],
) {
    use std::arch::x86_64::*;
    assert!(k0 + 4 * L <= a.kp, "two whole 16-channel blocks");
    let (offs, reach) = block_offsets(a, &taps);
    let mut acc = [[_mm512_setzero_ps(); 2]; TB];
    for n in 0..a.g.n {
        for oh in 0..a.g.h.output {
            let (xrow, d0) = row_slices(a, n, oh, reach, k0);
            let (_, d1) = row_slices(a, n, oh, reach, k0 + 2 * L);
            for ow in 0..a.g.w.output {
                // SAFETY: ow·16 + 16 ≤ ow_n·16 = d0.len() = d1.len() (both blocks are 16
                // wide), and ow + offs[ti] < ow_n + reach = xrow.len(); AVX-512F is enabled.
                unsafe {
                    let dv =
                        [_mm512_loadu_ps(d0.as_ptr().add(ow * 2 * L)), _mm512_loadu_ps(d1.as_ptr().add(ow * 2 * L))];
                    for ti in 0..TB {
                        let xv = _mm512_set1_ps(*xrow.as_ptr().add(ow + offs[ti]));
                        for v in 0..2 {
                            acc[ti][v] = _mm512_fmadd_ps(xv, dv[v], acc[ti][v]);
                        }
                    }
                }
            }
        }
    }
    for ti in 0..TB {
        // SAFETY: each tile row holds 16 floats; unaligned stores.
        unsafe {
            _mm512_storeu_ps(tile[ti].as_mut_ptr(), acc[ti][0]);
            _mm512_storeu_ps(tile2[ti].as_mut_ptr(), acc[ti][1]);
        }
    }
}

fn tile_portable(a: &Args<'_>, taps: std::ops::Range<usize>, k0: usize, tile: &mut [[f32; 2 * L]; TB]) {
    if k0 + 2 * L <= a.kp {
        tile_sum::<false, 2>(a, taps, k0, tile);
    } else {
        tile_sum::<false, 1>(a, taps, k0, tile);
    }
}

/// `tile[ti][kk] = Σ_n Σ_p x_pad[n, p + off(t0 + ti)] · dY[n, k0 + kk, p]` for the `NV·8`
/// channels from `k0` (a short tap block repeats its first tap; the caller drops it). Per
/// pixel: `TB` input values and `NV` gradient vectors are loaded first, then `TB·NV` FMAs
/// run on accumulators that stay in registers.
#[inline(always)]
fn tile_sum<const FMA: bool, const NV: usize>(
    a: &Args<'_>,
    taps: std::ops::Range<usize>,
    k0: usize,
    tile: &mut [[f32; 2 * L]; TB],
) {
    let madd = |p: f32, q: f32, acc: f32| if FMA { p.mul_add(q, acc) } else { p * q + acc };
    let (offs, reach) = block_offsets(a, &taps);
    let mut acc = [[[0.0f32; L]; NV]; TB];
    for n in 0..a.g.n {
        for oh in 0..a.g.h.output {
            let (xrow, drow) = row_slices(a, n, oh, reach, k0);
            for ow in 0..a.g.w.output {
                let xs: [f32; TB] = std::array::from_fn(|ti| xrow[ow + offs[ti]]);
                let at = ow * NV * L;
                let dv: [[f32; L]; NV] = std::array::from_fn(|v| {
                    let mut d = [0.0f32; L];
                    d.copy_from_slice(&drow[at + v * L..at + v * L + L]);
                    d
                });
                for ti in 0..TB {
                    for v in 0..NV {
                        for l in 0..L {
                            acc[ti][v][l] = madd(xs[ti], dv[v][l], acc[ti][v][l]);
                        }
                    }
                }
            }
        }
    }
    for (t, a) in tile.iter_mut().zip(&acc) {
        t.fill(0.0);
        for (v, lanes) in a.iter().enumerate() {
            t[v * L..(v + 1) * L].copy_from_slice(lanes);
        }
    }
}
