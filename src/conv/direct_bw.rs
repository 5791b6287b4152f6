//! Backward-weight for the direct and depthwise algorithms: each weight is a dot product of
//! an output-gradient plane with a shifted input plane, summed over the batch.
//!
//! `dW[k, (c, r, s)] = Σ_n Σ_{oh, ow} dY[n, k, oh, ow] · x_pad[n, c, oh·sh + r·dh, ow·sw + s·dw]`
//!
//! When the GEMM's tiles would be mostly empty (few taps and few channels per group, as in
//! LeNet's first layer or a depthwise layer) these dot products are cheaper run directly:
//! one task per output channel walks every image in order, eight pixels at a time, holding
//! eight partial sums per tap. A weight is computed by exactly one task, in one fixed
//! order, so the result does not depend on the thread count.

use super::padded::Padded;
use super::scratch::{with_index_scratch, with_scratch, with_scratch2};
use super::Conv2dPlan;
use crate::geometry::Conv2dGeometry;
use crate::parallel::{for_each_part, SharedMut};
use crate::simd::SimdLevel;

/// Taps summed together per pass over a gradient row (eight partial-sum vectors each).
const TAP_BLOCK: usize = 8;
/// Pixels per vector.
const L: usize = 8;

/// Whether the direct dot products beat the GEMM for this problem.
pub(super) fn preferred(g: &Conv2dGeometry) -> bool {
    g.reduction_len() <= 32 && g.k_per_group() <= 8 && g.h.stride == 1 && g.w.stride == 1
}

pub(super) fn weight(plan: &Conv2dPlan, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let g = &plan.geo;
    let taps = g.reduction_len();
    let ptr = SharedMut::new(dw);
    let task = |k: usize| {
        // SAFETY: row k of dW (taps floats) lies inside dw and belongs to this task alone.
        let row = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(k * taps), taps) };
        channel(plan, x, dy, k, row);
    };
    let threads = plan.parallelism.threads_for(g.flops());
    if threads > 1 && g.k > 1 {
        for_each_part(g.k, task);
    } else {
        (0..g.k).for_each(task);
    }
}

/// The weight gradient of output channel `k` into `out` (`C/G·R·S` values).
///
/// With stride 1 the padded input has `wq` floats per row, so pixel `(oh, ow)` of tap `t`
/// is `xp[j + off[t]]` with `j = oh·wq + ow`: laying the gradient plane out with the same
/// row length (zeros past `OW`) turns each weight into one long dot product over `j`.
fn channel(plan: &Conv2dPlan, x: &[f32], dy: &[f32], k: usize, out: &mut [f32]) {
    let g = &plan.geo;
    let (cg, kg) = (g.c_per_group(), g.k_per_group());
    let grp = k / kg;
    let pad = Padded::new(g);
    let plane_in = g.h.input * g.w.input;
    let (oh_n, ow_n) = (g.h.output, g.w.output);
    let pixels = oh_n * ow_n;
    let span = (oh_n * pad.wq).div_ceil(L) * L;
    // Slack past the last channel: the dot products run up to L − 1 floats past a row.
    let xp_len = cg * pad.plane() + L + g.w.kernel * g.w.dilation;
    out.fill(0.0);
    with_scratch(xp_len, |xp| {
        xp[cg * pad.plane()..].fill(0.0);
        with_scratch2(span, |dyp| {
            with_index_scratch(out.len(), |tap_off| {
                pad.tap_offsets(g, tap_off);
                for n in 0..g.n {
                    let xg = &x[(n * g.c + grp * cg) * plane_in..(n * g.c + (grp + 1) * cg) * plane_in];
                    pad.fill(g, xg, cg, xp, plan.level);
                    let dyk = &dy[(n * g.k + k) * pixels..(n * g.k + k + 1) * pixels];
                    dyp.fill(0.0);
                    for (oh, row) in dyk.chunks_exact(ow_n).enumerate() {
                        dyp[oh * pad.wq..oh * pad.wq + ow_n].copy_from_slice(row);
                    }
                    let args = Args { xp, tap_off, dy: dyp };
                    match plan.level {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: the plan checked that this CPU supports the level.
                        SimdLevel::Avx2 | SimdLevel::Avx512 => unsafe { accumulate_fma(&args, out) },
                        _ => accumulate::<false>(&args, out),
                    }
                }
            });
        });
    });
}

struct Args<'a> {
    xp: &'a [f32],
    tap_off: &'a [usize],
    /// One image's gradient plane for the channel, rows `wq` long, length a multiple of L.
    dy: &'a [f32],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn accumulate_fma(a: &Args<'_>, out: &mut [f32]) {
    accumulate::<true>(a, out);
}

/// `out[t] += Σ_j dy[j] · xp[j + off[t]]` for one image, taps in blocks of [`TAP_BLOCK`],
/// `j` in vectors of [`L`], each tap's `L` partial sums reduced in a fixed order at the end.
#[inline(always)]
fn accumulate<const FMA: bool>(a: &Args<'_>, out: &mut [f32]) {
    let madd = |p: f32, q: f32, acc: f32| if FMA { p.mul_add(q, acc) } else { p * q + acc };
    for (tb, out_block) in out.chunks_mut(TAP_BLOCK).enumerate() {
        // A short last block repeats its first tap in the unused slots (results dropped), so
        // every loop below has a constant trip count and the sums stay in registers.
        let used = out_block.len();
        let offs: [usize; TAP_BLOCK] =
            std::array::from_fn(|i| a.tap_off[tb * TAP_BLOCK + if i < used { i } else { 0 }]);
        let mut acc = [[0.0f32; L]; TAP_BLOCK];
        for (j, dv) in a.dy.chunks_exact(L).enumerate() {
            let dv: [f32; L] = dv.try_into().expect("L gradients");
            for ti in 0..TAP_BLOCK {
                let start = j * L + offs[ti];
                let xv: [f32; L] = a.xp[start..start + L].try_into().expect("L inputs");
                for l in 0..L {
                    acc[ti][l] = madd(dv[l], xv[l], acc[ti][l]);
                }
            }
        }
        for (o, accr) in out_block.iter_mut().zip(&acc) {
            // Fixed-order reduction of the partial sums.
            *o += accr.iter().sum::<f32>();
        }
    }
}
