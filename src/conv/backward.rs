//! Backward passes shared by every algorithm.
//!
//! - data: per image and group, `dCol = W_gᵀ · dY_g` one L2-sized tile of pixels at a time,
//!   then col2im adds each column entry into the input cell it was read from; 1×1 stride-1
//!   unpadded convolutions need no col2im (`dX_g = W_gᵀ · dY_g` directly).
//! - weight: per group one GEMM `dW_gᵀ = Col · dY_gᵀ` whose reduction runs over every pixel of
//!   every image, packed straight from the input and the output gradient; the GEMM never
//!   splits its reduction, so the sum over the batch has one fixed order.
//! - bias: per channel, a sum over images and pixels in f64.
//!
//! All three are bitwise identical for any thread count: threads split images (data),
//! output blocks (weight) or channels (bias), never a sum.

use super::im2col;
use super::im2col::Im2colTaps;
use super::padded::Padded;
use super::scratch::{with_index_scratch, with_scratch, with_scratch2};
use super::strided;
use super::Conv2dPlan;
use crate::gemm::{engine, gemm, run_problem, CPtr, GemmParams, MatMut, MatRef, Operand, PackSource, Problem};
use crate::geometry::{Conv2dGeometry, Conv2dParams, Padding};
use crate::parallel::{for_each_part, Parallelism, SharedMut};

/// Floats in one column tile of backward-data (2 MiB). Each tile is one GEMM, which packs
/// the weight again, and one col2im pass: on Zen 5 (1 MiB L2) a stride-2 ResNet layer took
/// 0.77 ms with 1 MiB tiles (two per image), 0.68 with 2 MiB (one), 0.92 and 1.13 with 512
/// and 256 KiB.
const DCOL_TILE_FLOATS: usize = 1 << 19;

/// For a stride-1 convolution whose padding on each side is at most the kernel's reach
/// `d·(R−1)`, backward-data is a forward convolution: `dX = conv(dY, W')` with
/// `W'[g·C/G + c, kk, r, s] = W[g·K/G + kk, c, R−1−r, S−1−s]`, the same groups and dilation,
/// and padding `d·(R−1) − p` on each side. Returns the shapes and parameters of that
/// convolution.
pub(super) fn transposed_params(g: &Conv2dGeometry) -> Option<([usize; 4], [usize; 4], Conv2dParams)> {
    let (h, w) = (&g.h, &g.w);
    if h.stride != 1 || w.stride != 1 {
        return None;
    }
    let (reach_h, reach_w) = ((h.kernel - 1) * h.dilation, (w.kernel - 1) * w.dilation);
    let padding = Padding::Explicit {
        top: reach_h.checked_sub(h.pad_before)?,
        bottom: reach_h.checked_sub(h.pad_after)?,
        left: reach_w.checked_sub(w.pad_before)?,
        right: reach_w.checked_sub(w.pad_after)?,
    };
    let params = Conv2dParams { stride: (1, 1), dilation: (h.dilation, w.dilation), padding, groups: g.groups };
    Some((g.output_shape(), [g.c, g.k_per_group(), h.kernel, w.kernel], params))
}

/// `W'` of [`transposed_params`] from `W`.
fn transpose_weight(g: &Conv2dGeometry, w: &[f32]) -> Vec<f32> {
    let (cg, kg, r_n, s_n) = (g.c_per_group(), g.k_per_group(), g.h.kernel, g.w.kernel);
    let mut out = vec![0.0; w.len()];
    for grp in 0..g.groups {
        for kk in 0..kg {
            for c in 0..cg {
                for r in 0..r_n {
                    for s in 0..s_n {
                        let src = (((grp * kg + kk) * cg + c) * r_n + r) * s_n + s;
                        let dst = (((grp * cg + c) * kg + kk) * r_n + (r_n - 1 - r)) * s_n + (s_n - 1 - s);
                        out[dst] = w[src];
                    }
                }
            }
        }
    }
    out
}

/// The input gradient, overwriting `dx`.
pub(super) fn data(plan: &Conv2dPlan, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let g = &plan.geo;
    if let Some(t) = &plan.transposed {
        let wt = transpose_weight(g, w);
        // The transposed convolution's own forward path (its channel-vectorised kernel
        // included, which a dispatch on the algorithm alone would skip).
        t.forward_raw(dy, &wt, None, false, dx);
        debug_assert_eq!(t.geo.output_shape(), g.input_shape());
        return;
    }
    dx.fill(0.0);
    let (cg, kg, crs_len) = (g.c_per_group(), g.k_per_group(), g.reduction_len());
    let pixels = g.h.output * g.w.output;
    let plane = g.h.input * g.w.input;
    if g.n == 0 || pixels == 0 || kg == 0 || cg == 0 {
        return;
    }
    let per_image = 2.0 * (g.groups * crs_len * kg * pixels) as f64;
    let threads = plan.parallelism.threads_for(per_image * g.n as f64);
    let outer = threads > 1 && g.n >= threads;
    let inner = if outer { Parallelism::Sequential } else { plan.parallelism };
    let params = GemmParams::default().simd(plan.level).parallelism(inner);
    let tile = (DCOL_TILE_FLOATS / crs_len).clamp(1, pixels);
    let image_len = g.c * plane;
    let one_image = |n: usize, dxn: &mut [f32]| {
        for grp in 0..g.groups {
            let wg = &w[grp * kg * crs_len..(grp + 1) * kg * crs_len];
            let wgt = MatRef::new(wg, crs_len, kg, 1, crs_len).expect("weight block in bounds");
            let dy_g = &dy[(n * g.k + grp * kg) * pixels..(n * g.k + (grp + 1) * kg) * pixels];
            let dxg = &mut dxn[grp * cg * plane..(grp + 1) * cg * plane];
            if im2col::is_pointwise(g) {
                let b = MatRef::row_major(dy_g, kg, pixels).expect("grad block in bounds");
                let c = MatMut::row_major(dxg, cg, plane).expect("input block in bounds");
                gemm(wgt, b, c, &params).expect("shapes agree by construction");
                continue;
            }
            with_scratch(crs_len * tile, |dcol| {
                for p0 in (0..pixels).step_by(tile) {
                    let t = tile.min(pixels - p0);
                    let b = MatRef::new(&dy_g[p0..], kg, t, pixels, 1).expect("grad tile in bounds");
                    let c = MatMut::row_major(&mut dcol[..crs_len * t], crs_len, t).expect("tile in bounds");
                    gemm(wgt, b, c, &params).expect("shapes agree by construction");
                    col2im(plan, &dcol[..crs_len * t], p0, t, dxg, !outer && threads > 1);
                }
            });
        }
    };
    if outer {
        let ptr = SharedMut::new(dx);
        for_each_part(g.n, |n| {
            // SAFETY: image n's gradient is dx[n·C·H·W .. (n+1)·C·H·W], inside dx, and only
            // this part touches it; dx outlives the parallel section.
            let dxn = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(n * image_len), image_len) };
            one_image(n, dxn);
        });
    } else {
        for (n, dxn) in dx.chunks_exact_mut(image_len).enumerate() {
            one_image(n, dxn);
        }
    }
}

/// Adds a `CRS × t` column tile (pixels `p0 .. p0 + t`) into one group's input gradient.
/// With `parallel`, channels are shared among threads; each channel's additions keep the
/// same order (taps, then pixels), so the result does not depend on the thread count.
fn col2im(plan: &Conv2dPlan, dcol: &[f32], p0: usize, t: usize, dxg: &mut [f32], parallel: bool) {
    let g = &plan.geo;
    let (rs, plane) = (g.h.kernel * g.w.kernel, g.h.input * g.w.input);
    let channels = dxg.len() / plane.max(1);
    let one = |c: usize, chan: &mut [f32]| {
        let (s_n, ow_n, w_in) = (g.w.kernel, g.w.output, g.w.input);
        let (sw, pl) = (g.w.stride, g.w.pad_before);
        for (jr, row) in dcol[c * rs * t..(c + 1) * rs * t].chunks_exact(t).enumerate() {
            let (r, s) = (jr / s_n, jr % s_n);
            // Output columns whose input column is inside the image for tap s:
            // iw = ow·sw + s·dw − pl ∈ [0, W), i.e. ow ∈ [ow_lo, ow_hi).
            let shift = s * g.w.dilation;
            let ow_lo = pl.saturating_sub(shift).div_ceil(sw);
            let ow_hi = (w_in + pl).saturating_sub(shift).div_ceil(sw).min(ow_n);
            // The tile's pixels, output row by output row, each row's valid columns added
            // with a fixed stride (the additions keep their order: taps, then pixels).
            let (mut oh, mut ow, mut q) = (p0 / ow_n, p0 % ow_n, 0);
            while q < t {
                let run = (t - q).min(ow_n - ow);
                if let Some(ih) = g.h.input_index(oh, r) {
                    let (a, b) = (ow.max(ow_lo), (ow + run).min(ow_hi));
                    if a < b {
                        let src = &row[q + a - ow..q + b - ow];
                        let start = ih * w_in + a * sw + shift - pl;
                        strided::add(&mut chan[start..start + (src.len() - 1) * sw + 1], src, sw, plan.level);
                    }
                }
                q += run;
                (oh, ow) = (oh + 1, 0);
            }
        }
    };
    if parallel && channels > 1 {
        let ptr = SharedMut::new(dxg);
        for_each_part(channels, |c| {
            // SAFETY: channel c's plane is dxg[c·plane .. (c+1)·plane], inside dxg, and only
            // this part touches it.
            let chan = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(c * plane), plane) };
            one(c, chan);
        });
    } else {
        for (c, chan) in dxg.chunks_exact_mut(plane).enumerate() {
            one(c, chan);
        }
    }
}

/// Images are summed in at most this many chunks, each into its own partial gradient;
/// the partials are then added in chunk order. The count depends only on the batch size,
/// never on the thread count, so the summation order is fixed.
const WEIGHT_CHUNKS: usize = 8;

/// The weight gradient, overwriting `dw`: per image and group `dW_gᵀ += Col · dY_gᵀ`, a GEMM
/// whose A operand is packed from a padded copy of the image (rows = taps, columns =
/// pixels) and whose B operand is the image's output gradient read as a matrix.
pub(super) fn weight(plan: &Conv2dPlan, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let g = &plan.geo;
    let chunks = g.n.clamp(1, WEIGHT_CHUNKS);
    let per_image = 2.0 * (g.groups * g.reduction_len() * g.k_per_group() * g.h.output * g.w.output) as f64;
    let threads = plan.parallelism.threads_for(per_image * g.n as f64);
    if chunks == 1 {
        return weight_images(plan, x, dy, 0..g.n, dw, plan.parallelism);
    }
    let len = dw.len();
    with_scratch2(chunks * len, |partials| {
        let ptr = SharedMut::new(partials);
        let chunk = |ci: usize| {
            // SAFETY: chunk ci owns partials[ci·len .. (ci+1)·len], inside the buffer, which
            // outlives the parallel section.
            let part = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(ci * len), len) };
            let images = g.n * ci / chunks..g.n * (ci + 1) / chunks;
            weight_images(plan, x, dy, images, part, Parallelism::Sequential);
        };
        if threads > 1 {
            for_each_part(chunks, chunk);
        } else {
            (0..chunks).for_each(chunk);
        }
        dw.copy_from_slice(&partials[..len]);
        for part in partials.chunks_exact(len).skip(1) {
            dw.iter_mut().zip(part).for_each(|(d, p)| *d += p);
        }
    });
}

/// `out = Σ_{n ∈ images} dW(n)`, images in order.
fn weight_images(
    plan: &Conv2dPlan,
    x: &[f32],
    dy: &[f32],
    images: std::ops::Range<usize>,
    out: &mut [f32],
    parallelism: Parallelism,
) {
    let g = &plan.geo;
    let eng = engine(plan.level);
    let (cg, kg, crs_len) = (g.c_per_group(), g.k_per_group(), g.reduction_len());
    let pixels = g.h.output * g.w.output;
    let plane_in = g.h.input * g.w.input;
    let pad = Padded::new(g);
    if images.is_empty() {
        out.fill(0.0);
        return;
    }
    let first = images.start;
    // The tap offsets are the same for every image: found once.
    with_index_scratch(crs_len, |tap_off| {
        pad.tap_offsets(g, tap_off);
        let tap_off: &[usize] = tap_off;
        for n in images {
            for grp in 0..g.groups {
                let xg = &x[(n * g.c + grp * cg) * plane_in..(n * g.c + (grp + 1) * cg) * plane_in];
                let dy_g = &dy[(n * g.k + grp * kg) * pixels..(n * g.k + (grp + 1) * kg) * pixels];
                let out_g = &mut out[grp * kg * crs_len..(grp + 1) * kg * crs_len];
                let bt = Operand { data: dy_g, rs: pixels, cs: 1 };
                // dW_gᵀ: element (j, kk) of the product is out_g[kk·CRS + j].
                let c = CPtr { ptr: out_g.as_mut_ptr(), rs: 1, cs: crs_len };
                let beta = if n == first { 0.0 } else { 1.0 };
                let dims = (crs_len, kg, pixels);
                if im2col::is_pointwise(g) {
                    // A 1×1, stride-1, unpadded layer's column matrix is the input itself
                    // (channels × pixels): no padded copy, no tap offsets.
                    let a = Operand { data: xg, rs: pixels, cs: 1 };
                    // The C block (crs × kg at stride crs) is exactly out_g, borrowed here.
                    run_problem(eng, &weight_problem(&a, &bt, c, dims, beta), parallelism);
                    continue;
                }
                with_scratch(cg * pad.plane(), |xp| {
                    pad.fill(g, xg, cg, xp, plan.level);
                    let a = Im2colTaps { xp, pad: &pad, tap_off, geo: g };
                    // The C block (crs × kg at stride crs) is exactly out_g, borrowed here.
                    run_problem(eng, &weight_problem(&a, &bt, c, dims, beta), parallelism);
                });
            }
        }
    });
}

/// One image's backward-weight GEMM `dW_gᵀ (+)= Col · dY_gᵀ`: `m × k` columns `a`, `n × k`
/// output gradients `bt`, into `c`.
fn weight_problem<'a>(
    a: &'a dyn PackSource,
    bt: &'a dyn PackSource,
    c: CPtr,
    (m, n, k): (usize, usize, usize),
    beta: f32,
) -> Problem<'a> {
    Problem { m, n, k, a, bt, c, alpha: 1.0, beta, row_bias: None, col_bias: None, relu: false }
}

/// The bias gradient: per channel, the output gradient summed over images and pixels.
pub(super) fn bias(plan: &Conv2dPlan, dy: &[f32], db: &mut [f32]) {
    let g = &plan.geo;
    let pixels = g.h.output * g.w.output;
    // Each plane summed in 16 interleaved f32 lanes (vectorised; each lane adds at most
    // pixels/16 values) reduced in a fixed order, the planes then added in f64 image by
    // image: a fixed order, so the result does not depend on the thread count.
    let plane_sum = |p: &[f32]| {
        const W: usize = 16;
        let mut acc = [0.0f32; W];
        let mut blocks = p.chunks_exact(W);
        for b in blocks.by_ref() {
            for (a, &v) in acc.iter_mut().zip(b) {
                *a += v;
            }
        }
        let tail: f64 = blocks.remainder().iter().map(|&v| v as f64).sum();
        acc.iter().map(|&a| a as f64).sum::<f64>() + tail
    };
    let channel = |k: usize| {
        let mut total = 0.0f64;
        for n in 0..g.n {
            let start = (n * g.k + k) * pixels;
            total += plane_sum(&dy[start..start + pixels]);
        }
        total as f32
    };
    let threads = plan.parallelism.threads_for(4.0 * dy.len() as f64);
    if threads > 1 && g.k > 1 {
        let out = SharedMut::new(db);
        for_each_part(g.k, |k| {
            // SAFETY: each part writes only db[k], inside db.
            unsafe { *out.get().add(k) = channel(k) };
        });
    } else {
        db.iter_mut().enumerate().for_each(|(k, o)| *o = channel(k));
    }
}
