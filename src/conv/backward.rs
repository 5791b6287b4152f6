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

use super::im2col::{GradOutRows, Im2colCols};
use super::scratch::with_scratch;
use super::Conv2dPlan;
use crate::gemm::{engine, gemm, run_problem, CPtr, GemmParams, MatMut, MatRef, Problem};
use crate::parallel::{for_each_part, Parallelism};

/// Floats in one column tile of backward-data (1 MiB: half of L2 and then some, shared with
/// the GEMM's packed panels).
const DCOL_TILE_FLOATS: usize = 1 << 18;

fn pointwise(plan: &Conv2dPlan) -> bool {
    let g = &plan.geo;
    g.h.kernel == 1
        && g.w.kernel == 1
        && g.h.stride == 1
        && g.w.stride == 1
        && g.h.pad_before + g.h.pad_after + g.w.pad_before + g.w.pad_after == 0
}

/// The input gradient, overwriting `dx`.
pub(super) fn data(plan: &Conv2dPlan, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let g = &plan.geo;
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
            if pointwise(plan) {
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
                    col2im(plan, &dcol[..crs_len * t], p0, t, dxg);
                }
            });
        }
    };
    if outer {
        let ptr = DxPtr(dx.as_mut_ptr());
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
fn col2im(plan: &Conv2dPlan, dcol: &[f32], p0: usize, t: usize, dxg: &mut [f32]) {
    let g = &plan.geo;
    let (rs, s_n, ow_n) = (g.h.kernel * g.w.kernel, g.w.kernel, g.w.output);
    let (plane, w_in) = (g.h.input * g.w.input, g.w.input);
    for (j, row) in dcol.chunks_exact(t).enumerate() {
        let (c, r, s) = (j / rs, (j % rs) / s_n, j % s_n);
        let chan = &mut dxg[c * plane..(c + 1) * plane];
        for (q, &v) in row.iter().enumerate() {
            let pix = p0 + q;
            let (oh, ow) = (pix / ow_n, pix % ow_n);
            if let (Some(ih), Some(iw)) = (g.h.input_index(oh, r), g.w.input_index(ow, s)) {
                chan[ih * w_in + iw] += v;
            }
        }
    }
}

#[derive(Clone, Copy)]
struct DxPtr(*mut f32);
// SAFETY: parts write disjoint per-image blocks of dx, which outlives them.
unsafe impl Send for DxPtr {}
// SAFETY: as above.
unsafe impl Sync for DxPtr {}

impl DxPtr {
    /// The pointer (a method, so closures capture the whole Sync wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// The weight gradient, overwriting `dw`.
pub(super) fn weight(plan: &Conv2dPlan, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let g = &plan.geo;
    let (kernel, blocking) = engine(plan.level);
    let (cg, kg, crs_len) = (g.c_per_group(), g.k_per_group(), g.reduction_len());
    let pixels = g.h.output * g.w.output;
    for grp in 0..g.groups {
        let dwg = &mut dw[grp * kg * crs_len..(grp + 1) * kg * crs_len];
        let a = Im2colCols { x, geo: g, c0: grp * cg };
        let bt = GradOutRows { dy, geo: g, k0: grp * kg };
        let prob = Problem {
            m: crs_len,
            n: kg,
            k: g.n * pixels,
            a: &a,
            bt: &bt,
            // dW_gᵀ: element (j, kk) of the product is dw_g[kk·CRS + j].
            c: CPtr { ptr: dwg.as_mut_ptr(), rs: 1, cs: crs_len },
            alpha: 1.0,
            beta: 0.0,
            row_bias: None,
            col_bias: None,
            relu: false,
        };
        // The C block (crs × kg at stride crs) is exactly dwg, borrowed mutably here.
        run_problem(kernel, blocking, &prob, plan.parallelism);
    }
}

/// The bias gradient: per channel, the output gradient summed over images and pixels.
pub(super) fn bias(plan: &Conv2dPlan, dy: &[f32], db: &mut [f32]) {
    let g = &plan.geo;
    let pixels = g.h.output * g.w.output;
    for (k, out) in db.iter_mut().enumerate() {
        let mut acc = 0.0f64;
        for n in 0..g.n {
            let start = (n * g.k + k) * pixels;
            acc += dy[start..start + pixels].iter().map(|&v| v as f64).sum::<f64>();
        }
        *out = acc as f32;
    }
}
