//! Direct convolution: register-blocked loops, vectorised over output width.
//!
//! A job computes `KB ≤ 6` output channels of one group for a band of output rows of one
//! image. For each output row, columns whose every tap reads inside the input (the
//! interior) go `V = 16` at a time through a `KB × V` accumulator block that stays in
//! registers: each tap loads `V` inputs and broadcasts `KB` weights, `KB·V` fused
//! multiply-adds (the same shape as the GEMM's 6×16 micro-kernel). Border columns and the
//! ragged end take a scalar loop. Every output element is summed in the same order,
//! `bias, then (c, r, s)` lexicographically, whichever path and job computes it, so results
//! do not depend on the thread count.
//!
//! The loops are written once as plain Rust over fixed-size arrays and compiled three
//! times: inside `#[target_feature]` functions for AVX-512F and AVX2+FMA, where the
//! compiler vectorises them and `mul_add` becomes a vector FMA, and for the portable
//! baseline, where a multiply and an add are used instead of a (software) FMA.

use super::Conv2dPlan;
use crate::geometry::Conv2dGeometry;
use crate::parallel::for_each_part;
use crate::simd::SimdLevel;

/// Output columns per vector block.
const V: usize = 16;
/// Output channels per register block.
const KB_MAX: usize = 6;

/// Direct convolution handles every geometry.
pub(super) fn unsupported_reason(_geo: &Conv2dGeometry) -> Option<String> {
    None
}

/// The output pointer, shared by jobs that write disjoint blocks.
#[derive(Clone, Copy)]
struct YPtr(*mut f32);
// SAFETY: every job writes only its own (image, channel block, row band) cells of y, which
// outlives the jobs.
unsafe impl Send for YPtr {}
// SAFETY: as above.
unsafe impl Sync for YPtr {}

/// One unit of work.
#[derive(Clone, Copy)]
struct Job {
    n: usize,
    k0: usize,
    kb: usize,
    oh0: usize,
    oh1: usize,
}

struct Ctx<'a> {
    g: &'a Conv2dGeometry,
    x: &'a [f32],
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    relu: bool,
    y: YPtr,
    /// Interior output columns: every tap in bounds.
    ow_lo: usize,
    ow_hi: usize,
}

pub(super) fn forward(plan: &Conv2dPlan, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let g = &plan.geo;
    let (kg, oh_n) = (g.k_per_group(), g.h.output);
    if g.n == 0 || kg == 0 || oh_n == 0 || g.w.output == 0 {
        return;
    }
    let (ow_lo, ow_hi) = interior(g);
    let ctx = Ctx { g, x, w, bias, relu, y: YPtr(y.as_mut_ptr()), ow_lo, ow_hi };
    // Jobs: images × channel blocks × row bands. Bands only split rows when the other two
    // leave threads idle (batch-1 inference).
    let threads = plan.parallelism.threads_for(g.flops());
    let blocks_per_group = kg.div_ceil(KB_MAX);
    let coarse = g.n * g.groups * blocks_per_group;
    let bands = if threads > 1 && coarse < 4 * threads { (4 * threads).div_ceil(coarse).min(oh_n) } else { 1 };
    let jobs = coarse * bands;
    let job = |j: usize| {
        let (rest, band) = (j / bands, j % bands);
        let (n, blk) = (rest / (g.groups * blocks_per_group), rest % (g.groups * blocks_per_group));
        let (grp, b) = (blk / blocks_per_group, blk % blocks_per_group);
        let k0 = grp * kg + b * KB_MAX;
        let kb = KB_MAX.min(kg - b * KB_MAX);
        let job = Job { n, k0, kb, oh0: oh_n * band / bands, oh1: oh_n * (band + 1) / bands };
        run_job(plan.level, &ctx, job);
    };
    if threads > 1 && jobs > 1 {
        for_each_part(jobs, job);
    } else {
        (0..jobs).for_each(job);
    }
}

/// The output columns `[lo, hi)` whose taps all fall inside the input.
fn interior(g: &Conv2dGeometry) -> (usize, usize) {
    let a = g.w;
    let lo = a.pad_before.div_ceil(a.stride);
    // ow·s + (S−1)·d − pl ≤ W − 1
    let reach = (a.kernel - 1) * a.dilation;
    let hi = match (a.input + a.pad_before).checked_sub(reach + 1) {
        Some(v) => (v / a.stride + 1).min(a.output),
        None => 0,
    };
    (lo.min(hi), hi)
}

fn run_job(level: SimdLevel, ctx: &Ctx<'_>, job: Job) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the plan checked that this CPU supports the level.
        SimdLevel::Avx512 => unsafe { job_avx512(ctx, job) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2 => unsafe { job_avx2(ctx, job) },
        _ => job_portable(ctx, job),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn job_avx512(ctx: &Ctx<'_>, job: Job) {
    dispatch_kb::<true>(ctx, job);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn job_avx2(ctx: &Ctx<'_>, job: Job) {
    dispatch_kb::<true>(ctx, job);
}

fn job_portable(ctx: &Ctx<'_>, job: Job) {
    dispatch_kb::<false>(ctx, job);
}

#[inline(always)]
fn dispatch_kb<const FMA: bool>(ctx: &Ctx<'_>, job: Job) {
    match job.kb {
        1 => block::<1, FMA>(ctx, job),
        2 => block::<2, FMA>(ctx, job),
        3 => block::<3, FMA>(ctx, job),
        4 => block::<4, FMA>(ctx, job),
        5 => block::<5, FMA>(ctx, job),
        _ => block::<6, FMA>(ctx, job),
    }
}

/// `a·b + c`, fused where the target has FMA (one rounding), else multiply then add.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn block<const KB: usize, const FMA: bool>(ctx: &Ctx<'_>, job: Job) {
    let g = ctx.g;
    let (cg, kg) = (g.c_per_group(), g.k_per_group());
    let (r_n, s_n) = (g.h.kernel, g.w.kernel);
    let crs = cg * r_n * s_n;
    let grp = job.k0 / kg;
    let (h_in, w_in, ow_n) = (g.h.input, g.w.input, g.w.output);
    let plane = h_in * w_in;
    let x_img = &ctx.x[(job.n * g.c + grp * cg) * plane..(job.n * g.c + (grp + 1) * cg) * plane];
    let w_blk = &ctx.w[job.k0 * crs..(job.k0 + KB) * crs];
    let bias: [f32; KB] = std::array::from_fn(|kb| ctx.bias.map_or(0.0, |b| b[job.k0 + kb]));
    let (sw, dw, pl) = (g.w.stride, g.w.dilation, g.w.pad_before);
    let mut out = [[0.0f32; V]; KB];
    for oh in job.oh0..job.oh1 {
        // Interior columns, V at a time.
        let mut ow0 = ctx.ow_lo;
        while ow0 + V <= ctx.ow_hi {
            let mut acc: [[f32; V]; KB] = std::array::from_fn(|kb| [bias[kb]; V]);
            for c in 0..cg {
                let chan = &x_img[c * plane..(c + 1) * plane];
                for r in 0..r_n {
                    let Some(ih) = g.h.input_index(oh, r) else { continue };
                    let row = &chan[ih * w_in..(ih + 1) * w_in];
                    for s in 0..s_n {
                        // Every tap of an interior column is inside the row.
                        let base = ow0 * sw + s * dw - pl;
                        let xv: [f32; V] = if sw == 1 {
                            row[base..base + V].try_into().expect("V inputs")
                        } else {
                            std::array::from_fn(|v| row[base + v * sw])
                        };
                        let tap = (c * r_n + r) * s_n + s;
                        for (kb, accr) in acc.iter_mut().enumerate() {
                            let wv = w_blk[kb * crs + tap];
                            for v in 0..V {
                                accr[v] = madd::<FMA>(wv, xv[v], accr[v]);
                            }
                        }
                    }
                }
            }
            out = acc;
            store::<KB>(ctx, job, oh, ow0, V, &out);
            ow0 += V;
        }
        // Border and ragged columns, one at a time.
        for ow in (0..ctx.ow_lo).chain(ow0.max(ctx.ow_lo)..ow_n) {
            let mut acc = bias;
            for c in 0..cg {
                let chan = &x_img[c * plane..(c + 1) * plane];
                for r in 0..r_n {
                    let Some(ih) = g.h.input_index(oh, r) else { continue };
                    for s in 0..s_n {
                        let Some(iw) = g.w.input_index(ow, s) else { continue };
                        let xvs = chan[ih * w_in + iw];
                        let tap = (c * r_n + r) * s_n + s;
                        for (kb, a) in acc.iter_mut().enumerate() {
                            *a = madd::<FMA>(w_blk[kb * crs + tap], xvs, *a);
                        }
                    }
                }
            }
            for kb in 0..KB {
                out[kb][0] = acc[kb];
            }
            store::<KB>(ctx, job, oh, ow, 1, &out);
        }
    }
}

/// Writes `len` columns starting at `ow` of output row `oh` for the job's channels.
#[inline(always)]
fn store<const KB: usize>(ctx: &Ctx<'_>, job: Job, oh: usize, ow: usize, len: usize, vals: &[[f32; V]; KB]) {
    let g = ctx.g;
    let (oh_n, ow_n) = (g.h.output, g.w.output);
    for (kb, row) in vals.iter().enumerate() {
        let start = ((job.n * g.k + job.k0 + kb) * oh_n + oh) * ow_n + ow;
        for (v, &val) in row.iter().enumerate().take(len) {
            let val = if ctx.relu && val < 0.0 { 0.0 } else { val };
            // SAFETY: n < N, k0 + kb < K, oh < OH and ow + v < OW, so the cell is inside y,
            // and it belongs to this job alone (its image, channel block and row band).
            unsafe { *ctx.y.0.add(start + v) = val };
        }
    }
}
