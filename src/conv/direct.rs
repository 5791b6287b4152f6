//! Direct convolution: register-blocked loops, vectorised over output width.
//!
//! A job computes `KB ≤ 6` output channels of one group for a band of output rows of one
//! image, from a zero-padded copy of the group's input channels (so no tap needs a bounds
//! check). Output columns go `V = 16` at a time through a `KB × V` accumulator block that
//! stays in registers: each tap loads `V` inputs and broadcasts `KB` weights, `KB·V` fused
//! multiply-adds (the same shape as the GEMM's 6×16 micro-kernel); the ragged last block is
//! computed whole and stored in part. Every output element is summed in the same order,
//! `bias, then (c, r, s)` lexicographically, whichever job computes it, so results do not
//! depend on the thread count. Padded taps add `0·w`; with an infinite or NaN weight that
//! is NaN where the reference skips the tap.
//!
//! The loops are written once as plain Rust over fixed-size arrays and compiled three
//! times: inside `#[target_feature]` functions for AVX-512F and AVX2+FMA, where the
//! compiler vectorises them and `mul_add` becomes a vector FMA, and for the portable
//! baseline, where a multiply and an add are used instead of a (software) FMA.

use super::scratch::with_scratch;
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
}

pub(super) fn forward(plan: &Conv2dPlan, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let g = &plan.geo;
    let (kg, oh_n) = (g.k_per_group(), g.h.output);
    if g.n == 0 || kg == 0 || oh_n == 0 || g.w.output == 0 {
        return;
    }
    let ctx = Ctx { g, x, w, bias, relu, y: YPtr(y.as_mut_ptr()) };
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

/// The zero-padded copy of one group's input channels a job reads from: every tap of
/// every output column, including the ragged last vector block, lands inside it, so the
/// inner loops need no bounds logic.
struct Padded {
    /// Padded height and width.
    hp: usize,
    wp: usize,
}

impl Padded {
    fn new(g: &Conv2dGeometry) -> Self {
        let (h, w) = (&g.h, &g.w);
        let hp = h.input + h.pad_before + h.pad_after;
        // The last vector block starts at ow0 = (ceil(OW / V) − 1)·V and reads up to
        // (ow0 + V − 1)·sw + (S − 1)·dw.
        let last = (w.output.div_ceil(V) * V - 1) * w.stride + (w.kernel - 1) * w.dilation + 1;
        Padded { hp, wp: (w.input + w.pad_before + w.pad_after).max(last) }
    }

    fn len(&self, channels: usize) -> usize {
        channels * self.hp * self.wp
    }

    /// Copies `channels` planes of `x` (each `H × W`) into `buf` with the padding zeroed.
    fn fill(&self, g: &Conv2dGeometry, x: &[f32], channels: usize, buf: &mut [f32]) {
        let (h, w) = (&g.h, &g.w);
        let plane = self.hp * self.wp;
        for c in 0..channels {
            let out = &mut buf[c * plane..(c + 1) * plane];
            out[..h.pad_before * self.wp].fill(0.0);
            for ih in 0..h.input {
                let row = &mut out[(h.pad_before + ih) * self.wp..(h.pad_before + ih + 1) * self.wp];
                row[..w.pad_before].fill(0.0);
                let src = &x[(c * h.input + ih) * w.input..(c * h.input + ih + 1) * w.input];
                row[w.pad_before..w.pad_before + w.input].copy_from_slice(src);
                row[w.pad_before + w.input..].fill(0.0);
            }
            out[(h.pad_before + h.input) * self.wp..].fill(0.0);
        }
    }
}

#[inline(always)]
fn block<const KB: usize, const FMA: bool>(ctx: &Ctx<'_>, job: Job) {
    let g = ctx.g;
    let (cg, kg) = (g.c_per_group(), g.k_per_group());
    let (r_n, s_n) = (g.h.kernel, g.w.kernel);
    let crs = cg * r_n * s_n;
    let grp = job.k0 / kg;
    let plane_in = g.h.input * g.w.input;
    let x_grp = &ctx.x[(job.n * g.c + grp * cg) * plane_in..(job.n * g.c + (grp + 1) * cg) * plane_in];
    let w_blk = &ctx.w[job.k0 * crs..(job.k0 + KB) * crs];
    let bias: [f32; KB] = std::array::from_fn(|kb| ctx.bias.map_or(0.0, |b| b[job.k0 + kb]));
    let (sh, dh, sw, dw) = (g.h.stride, g.h.dilation, g.w.stride, g.w.dilation);
    let ow_n = g.w.output;
    let pad = Padded::new(g);
    let plane = pad.hp * pad.wp;
    with_scratch(pad.len(cg), |xp| {
        pad.fill(g, x_grp, cg, xp);
        for oh in job.oh0..job.oh1 {
            for ow0 in (0..ow_n).step_by(V) {
                let mut acc: [[f32; V]; KB] = std::array::from_fn(|kb| [bias[kb]; V]);
                for c in 0..cg {
                    for r in 0..r_n {
                        let row_start = c * plane + (oh * sh + r * dh) * pad.wp;
                        let row = &xp[row_start..row_start + pad.wp];
                        for s in 0..s_n {
                            let base = ow0 * sw + s * dw;
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
                store::<KB>(ctx, job, oh, ow0, V.min(ow_n - ow0), &acc);
            }
        }
    });
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
