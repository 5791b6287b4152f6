//! Winograd F(2×2, 3×3) for 3×3, stride-1, undilated convolutions.
//!
//! Each 2×2 block of output pixels (a *tile*) is computed from the 4×4 input patch above it
//! with 16 multiplications per (input, output) channel pair instead of 36:
//!
//! ```text
//! U = G·g·Gᵀ   (4×4, per filter k, c)     G  = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]
//! V = Bᵀ·d·B   (4×4, per channel c, tile) Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]
//! M[ξ] = Σ_c U[ξ][k, c] · V[ξ][c, tile]   (16 independent GEMMs, ξ = one of the 4×4 points)
//! Y = Aᵀ·M·A   (2×2 per k, tile)           Aᵀ = [1 1 1 0; 0 1 −1 −1]
//! ```
//!
//! Tiles are processed in chunks of [`TILE_CHUNK`] so that the transformed input and the
//! products stay a few MB; chunks of all images run in parallel, each an independent job
//! whose GEMMs run sequentially, so every output is computed the same way for any thread
//! count. The transforms add and subtract values of the input and of the filter, so the
//! rounding error grows with their magnitude as well as with the reduction length; the
//! tests bound it at 4× the direct tolerance. Measured on a 64 → 32-channel layer
//! (`tests/conv_props.rs`): max error 7e-6, below im2col's 1.8e-5, whose sums are 9× longer.

use super::kernels::store_row;
use super::phase_rows::PhaseRows;
use super::scratch::with_scratch;
use super::Conv2dPlan;
use crate::gemm::{gemm, GemmParams, MatMut, MatRef};
use crate::geometry::Conv2dGeometry;
use crate::parallel::{for_each_part, Parallelism, SharedMut};

/// Output tiles per job (rounded to whole tile rows).
const TILE_CHUNK: usize = 128;

/// Why Winograd F(2×2, 3×3) cannot run `g`, if it cannot.
pub(super) fn unsupported_reason(g: &Conv2dGeometry) -> Option<String> {
    let (h, w) = (&g.h, &g.w);
    if (h.kernel, w.kernel) != (3, 3) {
        Some(format!("needs a 3×3 kernel, got {}×{}", h.kernel, w.kernel))
    } else if (h.stride, w.stride) != (1, 1) {
        Some(format!("needs stride 1, got ({}, {})", h.stride, w.stride))
    } else if (h.dilation, w.dilation) != (1, 1) {
        Some(format!("needs dilation 1, got ({}, {})", h.dilation, w.dilation))
    } else {
        None
    }
}

/// `U[ξ][k][c]` for every group, laid out `[group][ξ][K/G][C/G]`.
pub(super) fn transform_filters(g: &Conv2dGeometry, w: &[f32]) -> Vec<f32> {
    let (cg, kg) = (g.c_per_group(), g.k_per_group());
    let mut u = vec![0.0f32; packed_len(g)];
    for grp in 0..g.groups {
        for kk in 0..kg {
            for c in 0..cg {
                let f = &w[((grp * kg + kk) * cg + c) * 9..][..9];
                // t = G·f (4×3), then t·Gᵀ (4×4).
                let mut t = [[0.0f32; 3]; 4];
                for j in 0..3 {
                    let (a, b, d) = (f[j], f[3 + j], f[6 + j]);
                    t[0][j] = a;
                    t[1][j] = 0.5 * (a + b + d);
                    t[2][j] = 0.5 * (a - b + d);
                    t[3][j] = d;
                }
                for (i, row) in t.iter().enumerate() {
                    let (a, b, d) = (row[0], row[1], row[2]);
                    let vals = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                    for (j, v) in vals.into_iter().enumerate() {
                        u[((grp * 16 + i * 4 + j) * kg + kk) * cg + c] = v;
                    }
                }
            }
        }
    }
    u
}

/// Tiles per vector in the transforms.
const L: usize = 8;

pub(super) fn forward(plan: &Conv2dPlan, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let g = &plan.geo;
    if g.n == 0 || g.k == 0 || g.h.output == 0 || g.w.output == 0 {
        return;
    }
    forward_packed(plan, x, &transform_filters(g, w), bias, relu, y);
}

/// Floats of the transformed filters ([`transform_filters`]'s output).
pub(super) fn packed_len(g: &Conv2dGeometry) -> usize {
    g.groups * 16 * g.k_per_group() * g.c_per_group()
}

/// The forward pass with the filters already transformed by [`transform_filters`].
pub(super) fn forward_packed(plan: &Conv2dPlan, x: &[f32], u: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let g = &plan.geo;
    let (cg, kg) = (g.c_per_group(), g.k_per_group());
    let (oh_n, ow_n) = (g.h.output, g.w.output);
    let (th, tw) = (oh_n.div_ceil(2), ow_n.div_ceil(2));
    if g.n == 0 || kg == 0 || th == 0 || tw == 0 {
        return;
    }
    // A job is a band of whole tile rows of one (image, group): at most TILE_CHUNK tiles,
    // and a multiple of 4 bands (when there are more than one), so that two or four threads
    // get equal shares of a single image (7 bands had split 4 : 3). The bands depend on the
    // shape alone, never on the thread count.
    let rows_per_job = (TILE_CHUNK / tw).max(1);
    let bands = match th.div_ceil(rows_per_job) {
        1 => 1,
        b => b.next_multiple_of(4).min(th),
    };
    let jobs = g.n * g.groups * bands;
    let threads = plan.parallelism.threads_for(g.flops() * 16.0 / 36.0);
    let outer = threads > 1 && jobs >= threads;
    let gemm_params = GemmParams::default().simd(plan.level).parallelism(if outer {
        Parallelism::Sequential
    } else {
        plan.parallelism
    });
    let y_ptr = SharedMut::new(y);
    let job = |j: usize| {
        let (n, rest) = (j / (g.groups * bands), j % (g.groups * bands));
        let (grp, band) = (rest / bands, rest % bands);
        let (tr0, tr1) = (th * band / bands, th * (band + 1) / bands);
        let tc = (tr1 - tr0) * tw;
        let plane = g.h.input * g.w.input;
        let xg = &x[(n * g.c + grp * cg) * plane..(n * g.c + (grp + 1) * cg) * plane];
        let ug = &u[grp * 16 * kg * cg..(grp + 1) * 16 * kg * cg];
        let layout = PhaseRows::<2>::new(g, tr1 - tr0, L);
        let eo_len = cg * layout.channel_len();
        // V and M rows are `ld = tc + L` long so that a ragged last vector of tiles can be
        // stored and loaded whole (the extra lanes are never used).
        let ld = tc + L;
        with_scratch(eo_len + layout.row_len() + 16 * ld * (cg + kg), |buf| {
            let (eo, rest) = buf.split_at_mut(eo_len);
            let (row_buf, rest) = rest.split_at_mut(layout.row_len());
            let (v, m) = rest.split_at_mut(16 * cg * ld);
            layout.fill(g, xg, tr0, eo, row_buf, plan.level);
            let band = Band { g, layout: &layout, tr0, tr1, ld };
            band.run_input(plan, eo, v);
            for xi in 0..16 {
                let a = MatRef::row_major(&ug[xi * kg * cg..(xi + 1) * kg * cg], kg, cg).expect("U block");
                let b = MatRef::new(&v[xi * cg * ld..(xi + 1) * cg * ld], cg, tc, ld, 1).expect("V block");
                let c = MatMut::new(&mut m[xi * kg * ld..(xi + 1) * kg * ld], kg, tc, ld, 1).expect("M block");
                gemm(a, b, c, &gemm_params).expect("shapes agree by construction");
            }
            let bias_g = bias.map(|b| &b[grp * kg..(grp + 1) * kg]);
            // SAFETY: the offset is y[n, grp·K/G, 0, 0], inside y; the output transform writes
            // only this band's rows of this image's group channels, which no other job writes.
            let yg = unsafe { y_ptr.get().add((n * g.k + grp * kg) * oh_n * ow_n) };
            band.run_output(plan, m, bias_g, relu, yg);
        });
    };
    if outer {
        for_each_part(jobs, job);
    } else {
        (0..jobs).for_each(job);
    }
}

/// The transforms compiled for the plan's instruction set: `Band::input` and
/// `Band::output` are `#[inline(always)]`, so inside these `target_feature` functions they
/// are compiled with AVX2 and FMA. (Passing them as closures through a `target_feature`
/// trampoline did not work: the closures were not inlined into it and ran as SSE code,
/// ~30% of a ResNet layer's time.)
impl Band<'_> {
    fn run_input(&self, plan: &Conv2dPlan, eo: &[f32], v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if plan.level >= crate::SimdLevel::Avx2 {
            #[target_feature(enable = "avx2,fma")]
            fn avx2(band: &Band<'_>, eo: &[f32], v: &mut [f32]) {
                band.input(eo, v, true);
            }
            // SAFETY: the plan checked that this CPU supports AVX2 and FMA.
            return unsafe { avx2(self, eo, v) };
        }
        self.input(eo, v, false);
    }

    fn run_output(&self, plan: &Conv2dPlan, m: &[f32], bias: Option<&[f32]>, relu: bool, yg: *mut f32) {
        #[cfg(target_arch = "x86_64")]
        if plan.level >= crate::SimdLevel::Avx2 {
            #[target_feature(enable = "avx2,fma")]
            fn avx2(band: &Band<'_>, m: &[f32], bias: Option<&[f32]>, relu: bool, yg: *mut f32) {
                band.output(m, bias, relu, yg, true);
            }
            // SAFETY: the plan checked that this CPU supports AVX2 and FMA.
            return unsafe { avx2(self, m, bias, relu, yg) };
        }
        self.output(m, bias, relu, yg, false);
    }
}

/// The tile rows `tr0 .. tr1` of one (image, group): `tc` tiles, row-major.
struct Band<'a> {
    g: &'a Conv2dGeometry,
    layout: &'a PhaseRows<2>,
    tr0: usize,
    tr1: usize,
    /// Row length of V and M (the band's tiles plus [`L`] slack).
    ld: usize,
}

impl Band<'_> {
    /// `V[ξ][c][q] = (Bᵀ·d·B)[ξ]` for every tile `q` of the band, [`L`] tiles at a time.
    #[inline(always)]
    fn input(&self, eo: &[f32], v: &mut [f32], _fma: bool) {
        let (cg, ld, half) = (self.g.c_per_group(), self.ld, self.layout.per_phase);
        let tw = self.g.w.output.div_ceil(2);
        for c in 0..cg {
            let ch = &eo[c * self.layout.channel_len()..(c + 1) * self.layout.channel_len()];
            for tr in 0..self.tr1 - self.tr0 {
                for t0 in (0..tw).step_by(L) {
                    // d[i][j][l]: patch row i, column j, tile t0 + l (lanes past the row's
                    // last tile read the slack columns and are overwritten or ignored).
                    let mut d = [[[0.0f32; L]; 4]; 4];
                    for (i, di) in d.iter_mut().enumerate() {
                        let row = &ch[(2 * tr + i) * 2 * half..(2 * tr + i + 1) * 2 * half];
                        let (even, odd) = row.split_at(half);
                        for l in 0..L {
                            di[0][l] = even[t0 + l];
                            di[1][l] = odd[t0 + l];
                            di[2][l] = even[t0 + l + 1];
                            di[3][l] = odd[t0 + l + 1];
                        }
                    }
                    let mut e = [[[0.0f32; L]; 4]; 4];
                    for j in 0..4 {
                        for l in 0..L {
                            e[0][j][l] = d[0][j][l] - d[2][j][l];
                            e[1][j][l] = d[1][j][l] + d[2][j][l];
                            e[2][j][l] = d[2][j][l] - d[1][j][l];
                            e[3][j][l] = d[1][j][l] - d[3][j][l];
                        }
                    }
                    let q = tr * tw + t0;
                    for (i, ei) in e.iter().enumerate() {
                        let mut out = [[0.0f32; L]; 4];
                        for l in 0..L {
                            out[0][l] = ei[0][l] - ei[2][l];
                            out[1][l] = ei[1][l] + ei[2][l];
                            out[2][l] = ei[2][l] - ei[1][l];
                            out[3][l] = ei[1][l] - ei[3][l];
                        }
                        for (j, o) in out.iter().enumerate() {
                            // Whole vectors: the next tile row (written later) or the slack
                            // takes any lanes past this row's end.
                            let at = ((i * 4 + j) * cg + c) * ld + q;
                            let dst: &mut [f32; L] = (&mut v[at..at + L]).try_into().expect("L tiles");
                            *dst = *o;
                        }
                    }
                }
            }
        }
    }

    /// `Y = Aᵀ·M·A` (+ bias, ReLU) for every tile of the band, written into the group's
    /// output planes at `yg`.
    #[inline(always)]
    fn output(&self, m: &[f32], bias: Option<&[f32]>, relu: bool, yg: *mut f32, _fma: bool) {
        let g = self.g;
        let (kg, ld) = (g.k_per_group(), self.ld);
        let (oh_n, ow_n) = (g.h.output, g.w.output);
        let tw = ow_n.div_ceil(2);
        for kk in 0..kg {
            let b = bias.map_or(0.0, |b| b[kk]);
            for tr in 0..self.tr1 - self.tr0 {
                for t0 in (0..tw).step_by(L) {
                    let lanes = L.min(tw - t0);
                    let q = tr * tw + t0;
                    let mut s = [[[0.0f32; L]; 4]; 4];
                    for (xi, sv) in s.iter_mut().flatten().enumerate() {
                        let at = (xi * kg + kk) * ld + q;
                        *sv = m[at..at + L].try_into().expect("L tiles");
                    }
                    let mut r = [[[0.0f32; L]; 4]; 2];
                    for j in 0..4 {
                        for l in 0..L {
                            r[0][j][l] = s[0][j][l] + s[1][j][l] + s[2][j][l];
                            r[1][j][l] = s[1][j][l] - s[2][j][l] - s[3][j][l];
                        }
                    }
                    for (i, ri) in r.iter().enumerate() {
                        let oh = 2 * (self.tr0 + tr) + i;
                        if oh >= oh_n {
                            continue;
                        }
                        let mut pair = [[0.0f32; 2]; L];
                        for (l, p) in pair.iter_mut().enumerate() {
                            let o0 = ri[0][l] + ri[1][l] + ri[2][l] + b;
                            let o1 = ri[1][l] - ri[2][l] - ri[3][l] + b;
                            // `x < 0` is false for NaN, so NaN passes through ReLU.
                            let act = |x: f32| if relu && x < 0.0 { 0.0 } else { x };
                            *p = [act(o0), act(o1)];
                        }
                        let ow0 = 2 * t0;
                        let cols = (2 * lanes).min(ow_n - ow0);
                        let flat = pair.as_flattened();
                        // SAFETY: kk < K/G, oh < OH and ow0 + cols ≤ OW: inside the group's
                        // planes, in this job's rows, which no other job writes; `flat` is a
                        // local array, so the two ranges do not overlap.
                        unsafe {
                            store_row::<{ 2 * L }>(
                                yg.add((kk * oh_n + oh) * ow_n + ow0),
                                flat.try_into().expect("2·L"),
                                cols,
                            )
                        };
                    }
                }
            }
        }
    }
}
