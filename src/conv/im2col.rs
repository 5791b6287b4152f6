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
//! pass; [`Im2colCols`] packs `Col` (rows = `(c,r,s)`, columns = pixels of every image) for
//! backward-weight.

use super::Conv2dPlan;
use crate::gemm::{engine, run_problem, CPtr, Operand, PackSource, Problem};
use crate::geometry::{Axis, Conv2dGeometry};
use crate::parallel::{for_each_part, Parallelism};

/// The input coordinate read by output `o` at tap `t`, or `None` in the padding.
#[inline(always)]
fn src(axis: &Axis, o: usize, t: usize) -> Option<usize> {
    axis.input_index(o, t)
}

/// Splits a flat `(c, r, s)` index.
#[inline(always)]
fn crs(geo: &Conv2dGeometry, j: usize) -> (usize, usize, usize) {
    let (r_s, s) = (geo.h.kernel * geo.w.kernel, geo.w.kernel);
    (j / r_s, (j % r_s) / s, j % s)
}

/// `Colᵀ` of one image and group: row `i` = output pixel `(i / OW, i % OW)`, column `j` =
/// `(c, r, s)`. `x` starts at the group's first input channel of the image.
pub(super) struct Im2colRows<'a> {
    pub x: &'a [f32],
    pub geo: &'a Conv2dGeometry,
}

impl PackSource for Im2colRows<'_> {
    fn pack_block(&self, dst: &mut [f32], row0: usize, len: usize, col0: usize, kc: usize, mr: usize) {
        let g = self.geo;
        let (ow_n, plane) = (g.w.output, g.h.input * g.w.input);
        let slivers = len.div_ceil(mr);
        let dst = &mut dst[..slivers * mr * kc];
        for p in 0..kc {
            let (c, r, s) = crs(g, col0 + p);
            let chan = &self.x[c * plane..(c + 1) * plane];
            // Walk the pixels row by row of the output; write lane by lane into the slivers.
            let (mut oh, mut ow) = (row0 / ow_n, row0 % ow_n);
            let (mut sliver, mut lane) = (0usize, 0usize);
            let mut q = 0;
            while q < len {
                let seg = (len - q).min(ow_n - ow);
                let ih = src(&g.h, oh, r);
                for o in ow..ow + seg {
                    let v = match (ih, src(&g.w, o, s)) {
                        (Some(ih), Some(iw)) => chan[ih * g.w.input + iw],
                        _ => 0.0,
                    };
                    dst[(sliver * kc + p) * mr + lane] = v;
                    lane += 1;
                    if lane == mr {
                        lane = 0;
                        sliver += 1;
                    }
                }
                q += seg;
                ow = 0;
                oh += 1;
            }
            // Zero the unused lanes of a ragged last sliver.
            if lane != 0 {
                dst[(sliver * kc + p) * mr + lane..(sliver * kc + p + 1) * mr].fill(0.0);
            }
        }
    }
}

/// `Col` of one group over every image: row `j` = `(c, r, s)`, column `q` = pixel `q % P` of
/// image `q / P`. `x` is the whole input; `c0` the group's first channel.
pub(super) struct Im2colCols<'a> {
    pub x: &'a [f32],
    pub geo: &'a Conv2dGeometry,
    pub c0: usize,
}

impl PackSource for Im2colCols<'_> {
    fn pack_block(&self, dst: &mut [f32], row0: usize, len: usize, col0: usize, kc: usize, mr: usize) {
        let g = self.geo;
        let (ow_n, pixels, plane) = (g.w.output, g.h.output * g.w.output, g.h.input * g.w.input);
        let slivers = len.div_ceil(mr);
        let dst = &mut dst[..slivers * mr * kc];
        if !len.is_multiple_of(mr) {
            dst.fill(0.0);
        }
        for row in 0..len {
            let (c, r, s) = crs(g, row0 + row);
            let base = (row / mr) * kc * mr + row % mr;
            for q in 0..kc {
                let col = col0 + q;
                let (n, pix) = (col / pixels, col % pixels);
                let (oh, ow) = (pix / ow_n, pix % ow_n);
                let v = match (src(&g.h, oh, r), src(&g.w, ow, s)) {
                    (Some(ih), Some(iw)) => self.x[(n * g.c + self.c0 + c) * plane + ih * g.w.input + iw],
                    _ => 0.0,
                };
                dst[base + q * mr] = v;
            }
        }
    }
}

/// One group of the output gradient over every image, as a matrix: row `kk` = output channel
/// `k0 + kk`, column `q` = pixel `q % P` of image `q / P`.
pub(super) struct GradOutRows<'a> {
    pub dy: &'a [f32],
    pub geo: &'a Conv2dGeometry,
    pub k0: usize,
}

impl PackSource for GradOutRows<'_> {
    fn pack_block(&self, dst: &mut [f32], row0: usize, len: usize, col0: usize, kc: usize, mr: usize) {
        let g = self.geo;
        let pixels = g.h.output * g.w.output;
        let slivers = len.div_ceil(mr);
        let dst = &mut dst[..slivers * mr * kc];
        if !len.is_multiple_of(mr) {
            dst.fill(0.0);
        }
        for row in 0..len {
            let k = self.k0 + row0 + row;
            let base = (row / mr) * kc * mr + row % mr;
            let mut q = 0;
            while q < kc {
                // A run of pixels inside one image is contiguous in dy.
                let col = col0 + q;
                let (n, pix) = (col / pixels, col % pixels);
                let run = (kc - q).min(pixels - pix);
                let start = (n * g.k + k) * pixels + pix;
                for (t, &v) in self.dy[start..start + run].iter().enumerate() {
                    dst[base + (q + t) * mr] = v;
                }
                q += run;
            }
        }
    }
}

/// Whether the convolution reads its input as the im2col matrix directly: 1×1 kernel, stride
/// 1, no padding (dilation is then irrelevant).
fn is_pointwise(g: &Conv2dGeometry) -> bool {
    g.h.kernel == 1
        && g.w.kernel == 1
        && g.h.stride == 1
        && g.w.stride == 1
        && g.h.pad_before + g.h.pad_after + g.w.pad_before + g.w.pad_after == 0
}

/// Forward pass: one GEMM per (image, group), bias and ReLU fused into its epilogue.
pub(super) fn forward(plan: &Conv2dPlan, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let g = &plan.geo;
    let (kernel, blocking) = engine(plan.level);
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
    let outer = threads > 1 && jobs >= 2 * threads && per_job < 4.0e7;
    let inner = if outer { Parallelism::Sequential } else { plan.parallelism };
    let y_ptr = YPtr(y.as_mut_ptr());
    let job = |j: usize| {
        let (n, grp) = (j / g.groups, j % g.groups);
        let xg = &x[(n * g.c + grp * cg) * plane_in..(n * g.c + (grp + 1) * cg) * plane_in];
        let wg = Operand { data: &w[grp * kg * crs_len..(grp + 1) * kg * crs_len], rs: crs_len, cs: 1 };
        let rows = Im2colRows { x: xg, geo: g };
        let pointwise = Operand { data: xg, rs: 1, cs: plane_in };
        let a: &dyn PackSource = if is_pointwise(g) { &pointwise } else { &rows };
        let prob = Problem {
            m: pixels,
            n: kg,
            k: crs_len,
            a,
            bt: &wg,
            // SAFETY: the offset is that of y[n, grp·kg, 0, 0], inside y (n < N, grp < G).
            c: CPtr { ptr: unsafe { y_ptr.get().add((n * g.k + grp * kg) * pixels) }, rs: 1, cs: pixels },
            alpha: 1.0,
            beta: 0.0,
            row_bias: None,
            col_bias: bias.map(|b| &b[grp * kg..(grp + 1) * kg]),
            relu,
        };
        // The C block (pixels × kg at stride pixels) lies inside y and is this job's alone.
        run_problem(kernel, blocking, &prob, inner);
    };
    if outer {
        for_each_part(jobs, job);
    } else {
        (0..jobs).for_each(job);
    }
}

/// The output pointer, shared by jobs that write disjoint `(image, group)` blocks.
#[derive(Clone, Copy)]
struct YPtr(*mut f32);
// SAFETY: every job writes only its own (image, group) block of y, which outlives the jobs.
unsafe impl Send for YPtr {}
// SAFETY: as above.
unsafe impl Sync for YPtr {}

impl YPtr {
    /// The pointer (a method, so closures capture the whole Sync wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}
