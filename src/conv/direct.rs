//! Direct convolution: register-blocked loops, vectorised over output width.
//!
//! A job computes `KB ≤ 6` output channels of one group for a band of output rows of one
//! image. It copies the group's input channels into a zero-padded buffer split by column
//! phase (see [`Padded`]), so that for any stride and dilation every tap of a `V = 16`-wide
//! tile of output columns reads 16 consecutive floats with no bounds logic, and packs the
//! block's weights tap-major. The tile kernel ([`super::kernels`]) then holds a `KB × 16`
//! accumulator block in registers: per tap 16 loads, `KB` broadcasts and `KB·16` fused
//! multiply-adds, the GEMM micro-kernel's shape. The ragged last tile of a row goes through
//! a scratch tile. Every output element is summed in the same order, `bias, then (c, r, s)`
//! lexicographically, whichever job computes it, so results do not depend on the thread
//! count. Padded taps add `0·w`; with an infinite or NaN weight that is NaN where the
//! reference skips the tap.

use super::depthwise;
use super::kernels::{self, V};
use super::padded::Padded;
use super::scratch::{with_index_scratch, with_scratch, with_scratch2};
use super::Conv2dPlan;
use crate::geometry::Conv2dGeometry;
use crate::parallel::{for_each_part, SharedMut};
use crate::simd::SimdLevel;

/// Output channels per register block.
const KB_MAX: usize = 6;

/// Direct convolution handles every geometry.
pub(super) fn unsupported_reason(_geo: &Conv2dGeometry) -> Option<String> {
    None
}

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

    w: &'a [f32],
    bias: Option<&'a [f32]>,
    relu: bool,
    y: SharedMut,
}

pub(super) fn forward(plan: &Conv2dPlan, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let g = &plan.geo;
    let (kg, oh_n) = (g.k_per_group(), g.h.output);
    if g.n == 0 || kg == 0 || oh_n == 0 || g.w.output == 0 {
        return;
    }
    let ctx = Ctx { g, w, bias, relu, y: SharedMut::new(y) };
    let pad = Padded::new(g);
    let cg = g.c_per_group();
    let threads = plan.parallelism.threads_for(g.flops());
    let units = g.n * g.groups;
    let blocks = kg.div_ceil(KB_MAX);
    // A unit is one (image, group): its input is padded once and read by every channel
    // block. Threads take whole units when there are plenty; otherwise each unit's channel
    // blocks and row bands are shared out (batch-1 inference).
    let outer = threads > 1 && units >= 2 * threads;
    let taps = cg * g.h.kernel * g.w.kernel;
    // The tap offsets and every block's weights (tap-major, block b of group grp at
    // (grp·blocks + b)·taps·KB_MAX) are the same for every image: made once per call, not
    // per job (per image they had cost a fifth of LeNet's C3 backward-data).
    with_index_scratch(taps, |off| {
        pad.tap_offsets(g, off);
        let off: &[usize] = off;
        with_scratch2(g.groups * blocks * taps * KB_MAX, |wpack| {
            for grp in 0..g.groups {
                for b in 0..blocks {
                    let k0 = grp * kg + b * KB_MAX;
                    let kb = KB_MAX.min(kg - b * KB_MAX);
                    let dst = &mut wpack[(grp * blocks + b) * taps * KB_MAX..][..taps * kb];
                    for (t, row) in dst.chunks_exact_mut(kb).enumerate() {
                        for (j, v) in row.iter_mut().enumerate() {
                            *v = w[(k0 + j) * taps + t];
                        }
                    }
                }
            }
            let wpack: &[f32] = wpack;
            let shared = Shared { off, wpack, blocks, taps };
            units_run(plan, &ctx, &pad, x, &shared, outer, threads);
        });
    });
}

/// What every job of a call shares: tap offsets and packed weights.
struct Shared<'a> {
    off: &'a [usize],
    wpack: &'a [f32],
    blocks: usize,
    taps: usize,
}

impl Shared<'_> {
    /// Block `b` of group `grp`'s weights, `kb` channels, tap-major.
    fn weights(&self, grp: usize, b: usize, kb: usize) -> &[f32] {
        &self.wpack[(grp * self.blocks + b) * self.taps * KB_MAX..][..self.taps * kb]
    }
}

/// Runs every (image, group) unit.
fn units_run(
    plan: &Conv2dPlan,
    ctx: &Ctx<'_>,
    pad: &Padded,
    x: &[f32],
    shared: &Shared<'_>,
    outer: bool,
    threads: usize,
) {
    let g = &plan.geo;
    let (kg, oh_n, cg, blocks) = (g.k_per_group(), g.h.output, g.c_per_group(), shared.blocks);
    let units = g.n * g.groups;
    let unit = |u: usize| {
        let (n, grp) = (u / g.groups, u % g.groups);
        let plane_in = g.h.input * g.w.input;
        let x_grp = &x[(n * g.c + grp * cg) * plane_in..(n * g.c + (grp + 1) * cg) * plane_in];
        with_scratch(cg * pad.plane(), |xp| {
            pad.fill(g, x_grp, cg, xp, plan.level);
            let xp: &[f32] = xp;
            let bands = if outer || threads == 1 { 1 } else { (4 * threads).div_ceil(blocks).min(oh_n) };
            let job = |j: usize| {
                let (b, band) = (j / bands, j % bands);
                let k0 = grp * kg + b * KB_MAX;
                let job = Job {
                    n,
                    k0,
                    kb: KB_MAX.min(kg - b * KB_MAX),
                    oh0: oh_n * band / bands,
                    oh1: oh_n * (band + 1) / bands,
                };
                let wb = shared.weights(grp, b, job.kb);
                run_job(plan.level, ctx, pad, xp, shared.off, wb, job);
            };
            if bands * blocks > 1 && !outer && threads > 1 {
                for_each_part(blocks * bands, job);
            } else {
                (0..blocks * bands).for_each(job);
            }
        });
    };
    if outer {
        for_each_part(units, unit);
    } else {
        (0..units).for_each(unit);
    }
}

/// One job: its block's packed weights `wb` (tap-major) and the tap offsets `off`.
fn run_job(level: SimdLevel, ctx: &Ctx<'_>, pad: &Padded, xp: &[f32], off: &[usize], wb: &[f32], job: Job) {
    let g = ctx.g;
    if job.kb == 1 && depthwise::eligible(g) {
        let (ow_n, pixels) = (g.w.output, g.h.output * g.w.output);
        let plane = (job.n * g.k + job.k0) * pixels;
        // SAFETY: rows oh0 .. oh1 of output plane (n, k0) lie inside y (k0 < K, oh1 ≤ OH) and
        // belong to this job alone; no other reference to them exists while it runs.
        let y = unsafe {
            std::slice::from_raw_parts_mut(ctx.y.get().add(plane + job.oh0 * ow_n), (job.oh1 - job.oh0) * ow_n)
        };
        let mut p = depthwise::Plane {
            xp,
            s_off: depthwise::Plane::taps(g, pad),
            row_len: pad.row_len(),
            w: std::array::from_fn(|t| ctx.w[job.k0 * 9 + t]),
            bias: ctx.bias.map_or(0.0, |b| b[job.k0]),
            relu: ctx.relu,
            y,
            y_row0: job.oh0,
            ow_n,
        };
        p.run(level, job.oh0, job.oh1);
        return;
    }
    match job.kb {
        1 => block::<1>(ctx, pad, xp, off, wb, job, level),
        2 => block::<2>(ctx, pad, xp, off, wb, job, level),
        3 => block::<3>(ctx, pad, xp, off, wb, job, level),
        4 => block::<4>(ctx, pad, xp, off, wb, job, level),
        5 => block::<5>(ctx, pad, xp, off, wb, job, level),
        _ => block::<6>(ctx, pad, xp, off, wb, job, level),
    }
}

/// One job: the tile kernel over every `V`-column tile of the band's rows, reading the unit's
/// padded input `xp` with the block's packed weights `wb` and the tap offsets `off`.
fn block<const KB: usize>(
    ctx: &Ctx<'_>,
    pad: &Padded,
    xp: &[f32],
    off: &[usize],
    wb: &[f32],
    job: Job,
    level: SimdLevel,
) {
    let g = ctx.g;
    let taps = off.len();
    let bias: [f32; KB] = std::array::from_fn(|kb| ctx.bias.map_or(0.0, |b| b[job.k0 + kb]));
    let kernel = kernels::tile::<KB>(level);
    let (oh_n, ow_n) = (g.h.output, g.w.output);
    let pixels = oh_n * ow_n;
    let mut tile = [0.0f32; KB_MAX * V];
    let args = kernels::Taps { count: taps, off, w: wb, bias, relu: ctx.relu };
    for oh in job.oh0..job.oh1 {
        let row_base = oh * g.h.stride * pad.row_len();
        for ow0 in (0..ow_n).step_by(V) {
            let base = row_base + ow0;
            debug_assert!(base + args.off[taps - 1] + V <= xp.len());
            let y_off = (job.n * g.k + job.k0) * pixels + oh * ow_n + ow0;
            let whole = ow0 + V <= ow_n;
            let (dst, stride) = if whole {
                // SAFETY: y_off + kb·pixels + v < N·K·OH·OW for kb < KB, v < V, as the
                // tile is whole; these cells belong to this job alone.
                (unsafe { ctx.y.get().add(y_off) }, pixels)
            } else {
                (tile.as_mut_ptr(), V)
            };
            // SAFETY: the padded buffer has slack for every tap of every tile (see
            // Padded), `off` and `wb` hold `taps` and `taps·KB` entries, `dst` is valid
            // for KB rows of V floats at `stride`, and the plan checked the CPU's level.
            unsafe { kernel(&args, xp.as_ptr().add(base), dst, stride) };
            if !whole {
                let n_valid = ow_n - ow0;
                for kb in 0..KB {
                    for (v, &val) in tile[kb * V..kb * V + n_valid].iter().enumerate() {
                        // SAFETY: as above, for the valid columns of a ragged tile.
                        unsafe { *ctx.y.get().add(y_off + kb * pixels + v) = val };
                    }
                }
            }
        }
    }
}
