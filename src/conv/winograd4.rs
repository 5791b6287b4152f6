//! Winograd F(4×4, 3×3) for 3×3, stride-1 convolutions (dilated ones through their input's
//! dilation phases, see [`forward_dilated`]).
//!
//! Each 4×4 block of output pixels (a *tile*) is computed from the 6×6 input patch above it
//! with 36 multiplications per (input, output) channel pair instead of 144 (F(2×2, 3×3)
//! needs 64 for the same 16 outputs):
//!
//! ```text
//! U = G·g·Gᵀ   (6×6, per filter k, c)    V = Bᵀ·d·B   (6×6, per channel c, tile)
//! M[ξ] = Σ_c U[ξ][k, c] · V[ξ][c, tile]   (36 independent GEMMs, ξ = one of the 6×6 points)
//! Y = Aᵀ·M·A   (4×4 per k, tile)
//!
//!      ⎡ ¼    0    0  ⎤        ⎡ 4  0 −5  0  1  0 ⎤        ⎡ 1  1  1  1  1  0 ⎤
//!      ⎢−⅙   −⅙   −⅙  ⎥        ⎢ 0 −4 −4  1  1  0 ⎥   Aᵀ = ⎢ 0  1 −1  2 −2  0 ⎥
//!  G = ⎢−⅙    ⅙   −⅙  ⎥   Bᵀ = ⎢ 0  4 −4 −1  1  0 ⎥        ⎢ 0  1  1  4  4  0 ⎥
//!      ⎢1/24 1/12  ⅙  ⎥        ⎢ 0 −2 −1  2  1  0 ⎥        ⎣ 0  1 −1  8 −8  1 ⎦
//!      ⎢1/24 −1/12 ⅙  ⎥        ⎢ 0  2 −1 −2  1  0 ⎥
//!      ⎣ 0    0    1  ⎦        ⎣ 0  4  0 −5  0  1 ⎦
//! ```
//!
//! The 36 products are not handed to the general GEMM: the transforms write their results
//! in layouts the micro-kernel reads directly, so nothing is packed. Tiles run along the
//! kernel's vector dimension (V is tile-major, one row per (point, channel), written by the
//! input transform eight tiles at a time and read in place `MR` tiles at a time), output
//! channels along its broadcast dimension (U in packed-B slivers of `NR` channels, padded
//! with zero filters). Work is cut into *chunks* of whole slivers of one (image, group), sized so that
//! a chunk's V and M stay around a MiB; chunks run in parallel, each computed the same way
//! whatever the thread count.
//!
//! The interpolation points 0, ±1, ±2, ±½ make the transforms' coefficients larger than
//! F(2×2)'s, and so the rounding error: the tests bound it (`WINOGRAD4_LOOSEN` in
//! `tests/conv_props.rs`) and measure it on a realistic layer.

use super::kernels::store_row;
use super::phase_rows::PhaseRows;
use super::scratch::{with_scratch, with_scratch2};
use super::strided;
use super::Conv2dPlan;
use crate::gemm::kernels::{ahead_in_k, TileArgs};
use crate::geometry::{Axis, Conv2dGeometry, Conv2dParams};
use crate::parallel::{for_each_part, SharedMut};
use crate::SimdLevel;
use rayon::prelude::*;

/// Tiles per vector in the transforms.
const L: usize = 8;

/// Bytes of transformed input and products a chunk aims at (V and M together).
const CHUNK_BYTES: usize = 1 << 20;

/// Transformed filters up to this size stay in L2 between chunks.
const U_RESIDENT_BYTES: usize = 1 << 20;

/// Input channels per kernel call: longer reductions are cut into blocks (accumulated in
/// a fixed order) so that a sliver of V stays in L1.
const KC: usize = 256;

/// Why Winograd F(4×4, 3×3) cannot run `g`, if it cannot: F(2×2)'s domain, plus dilated
/// kernels (run as undilated convolutions of the input's dilation phases).
pub(super) fn unsupported_reason(g: &Conv2dGeometry) -> Option<String> {
    let undilated = Conv2dGeometry { h: Axis { dilation: 1, ..g.h }, w: Axis { dilation: 1, ..g.w }, ..*g };
    super::winograd::unsupported_reason(&undilated)
}

/// `U` for every group in the kernel's packed-B layout, `[group][K/G sliver][ξ][C/G][NR]`:
/// each sliver of `NR` output channels is one contiguous block (filled by one task), and
/// within it the `C/G × NR` panel of each point ξ is what the kernel reads. Output channels
/// past `K/G` (the last sliver's padding) are zero.
#[allow(clippy::needless_range_loop)] // i indexes two arrays (a transpose)
fn transform_filters(g: &Conv2dGeometry, w: &[f32], nr: usize, u: &mut [f32], threads: usize, level: SimdLevel) {
    use wide::f32x8;
    let (cg, kg) = (g.c_per_group(), g.k_per_group());
    let slivers = kg.div_ceil(nr);
    let block = 36 * cg * nr;
    // G·(a, b, c)ᵀ: one column (or row) of the 3×3 filter interpolated at the six points,
    // for the NR filters of a sliver at once (lanes past NR are zero and never stored).
    let interp = |a: f32x8, b: f32x8, c: f32x8| {
        let (sixth, b12) = (f32x8::splat(1.0 / 6.0), b * f32x8::splat(1.0 / 12.0));
        let a24 = a * f32x8::splat(1.0 / 24.0);
        let c6 = c * sixth;
        [a * f32x8::splat(0.25), -(a + b + c) * sixth, -(a - b + c) * sixth, a24 + b12 + c6, a24 - b12 + c6, c]
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = level; // only the x86 build has a sliver for a level
    let one = |(grp, js): (usize, usize), out: &mut [f32]| {
        let lanes = nr.min(kg - js * nr);
        #[cfg(target_arch = "x86_64")]
        if level >= SimdLevel::Avx2 && nr <= 8 {
            // SAFETY: the plan's level, which this CPU supports; the bounds are asserted
            // inside.
            unsafe { avx2::filter_sliver(w, (grp * kg + js * nr) * cg * 9, lanes, cg, nr, out) };
            return;
        }
        for c in 0..cg {
            let tap = |t: usize| {
                let mut v = [0.0f32; 8];
                for (l, x) in v.iter_mut().enumerate().take(lanes) {
                    *x = w[((grp * kg + js * nr + l) * cg + c) * 9 + t];
                }
                f32x8::new(v)
            };
            let f: [f32x8; 9] = std::array::from_fn(tap);
            // t = G·f (6×3), then t·Gᵀ (6×6).
            let cols: [[f32x8; 6]; 3] = std::array::from_fn(|j| interp(f[j], f[3 + j], f[6 + j]));
            for i in 0..6 {
                let row = interp(cols[0][i], cols[1][i], cols[2][i]);
                for (j, v) in row.into_iter().enumerate() {
                    let at = ((i * 6 + j) * cg + c) * nr;
                    let v = v.to_array();
                    if c + 1 < cg {
                        // Eight floats: the ones past NR land on channel c + 1's lanes,
                        // written next (a fixed-size store, not a library call).
                        let dst: &mut [f32; 8] = (&mut out[at..at + 8]).try_into().expect("8 floats");
                        *dst = v;
                    } else {
                        out[at..at + nr].copy_from_slice(&v[..nr]);
                    }
                }
            }
        }
    };
    let parts = g.groups * slivers;
    if threads > 1 && parts > 1 {
        use rayon::prelude::*;
        u[..parts * block].par_chunks_mut(block).enumerate().for_each(|(p, out)| one((p / slivers, p % slivers), out));
    } else {
        u[..parts * block].chunks_mut(block).enumerate().for_each(|(p, out)| one((p / slivers, p % slivers), out));
    }
}

/// How one (image, group) is cut into chunks of slivers.
struct Chunking {
    /// Tiles across and down.
    tw: usize,
    th: usize,
    /// Slivers of `mr` tiles covering the image's `tw·th` tiles (row-major tile order).
    slivers: usize,
    /// Chunks per (image, group).
    chunks: usize,
}

impl Chunking {
    fn new(g: &Conv2dGeometry, mr: usize, nr: usize) -> Self {
        let (tw, th) = (g.w.output.div_ceil(4), g.h.output.div_ceil(4));
        let slivers = (tw * th).div_ceil(mr);
        let per_tile = 36 * 4 * (g.c_per_group() + g.k_per_group().next_multiple_of(nr));
        // Each chunk streams all of U (36 × C/G × K/G transformed filters) past its tiles:
        // when U outgrows L2 it comes from memory once per chunk, so wide layers take at
        // least 4 slivers a chunk (VGG's 256 × 256: U is 9.5 MB; 1 sliver a chunk re-read it
        // 13 times per image: 1.13–1.24× slower on one thread than 4 slivers).
        let u_bytes = 36 * 4 * g.c_per_group() * g.k_per_group().next_multiple_of(nr);
        let min_slivers = if u_bytes > U_RESIDENT_BYTES { 4 } else { 1 };
        let per_chunk = (CHUNK_BYTES / per_tile / mr).max(min_slivers);
        // Several chunks per image only to share one image among threads: a multiple of 4
        // (at most one sliver each) so that 2 or 4 threads get equal shares. The chunking
        // depends on the shape alone, never on the thread count.
        let chunks = match slivers.div_ceil(per_chunk) {
            1 if g.n * g.groups >= 4 => 1,
            c if g.n * g.groups >= 4 => c,
            c => c.max(4).next_multiple_of(4).min(slivers),
        };
        Chunking { tw, th, slivers, chunks }
    }

    /// Slivers of chunk `i`.
    fn slivers_of(&self, i: usize) -> std::ops::Range<usize> {
        self.slivers * i / self.chunks..self.slivers * (i + 1) / self.chunks
    }
}

pub(super) fn forward(plan: &Conv2dPlan, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let g = &plan.geo;
    if g.n == 0 || g.k == 0 || g.h.output == 0 || g.w.output == 0 {
        return;
    }
    with_scratch2(packed_len(plan), |u| {
        pack(plan, w, u);
        forward_packed(plan, x, u, bias, relu, y);
    });
}

/// Floats of the transformed filters `U` ([`pack`]'s output).
pub(super) fn packed_len(plan: &Conv2dPlan) -> usize {
    let (g, nr) = (&plan.geo, crate::gemm::engine(plan.level).blocking.nr);
    g.groups * 36 * g.k_per_group().div_ceil(nr) * g.c_per_group() * nr
}

/// The filters transformed into `u` (`packed_len` floats): the micro-kernel's packed-B
/// slivers of `U = G·f·Gᵀ` per point, for every call of [`forward_packed`].
pub(super) fn pack(plan: &Conv2dPlan, w: &[f32], u: &mut [f32]) {
    let g = &plan.geo;
    let nr = crate::gemm::engine(plan.level).blocking.nr;
    transform_filters(g, w, nr, u, plan.parallelism.threads_for(g.flops() / 4.0), plan.level);
}

/// The forward pass with the filters already transformed by [`pack`].
pub(super) fn forward_packed(plan: &Conv2dPlan, x: &[f32], u: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let g = &plan.geo;
    if g.n == 0 || g.k == 0 || g.h.output == 0 || g.w.output == 0 {
        return;
    }
    if (g.h.dilation, g.w.dilation) != (1, 1) {
        forward_dilated(plan, x, u, bias, relu, y);
    } else {
        run(plan, x, u, bias, relu, y);
    }
}

/// The undilated forward with the filters already transformed into `u`.
fn run(plan: &Conv2dPlan, x: &[f32], u: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let g = &plan.geo;
    let (cg, kg) = (g.c_per_group(), g.k_per_group());
    debug_assert!(g.n > 0 && kg > 0 && g.h.output > 0 && g.w.output > 0, "forward returns early on empty work");
    let eng = crate::gemm::engine(plan.level);
    let (kernel, mr, nr) = (eng.kernel, eng.blocking.mr, eng.blocking.nr);
    let kslivers = kg.div_ceil(nr);
    let chunking = Chunking::new(g, mr, nr);
    let jobs = g.n * g.groups * chunking.chunks;
    let threads = plan.parallelism.threads_for(g.flops() / 4.0);
    let y_ptr = SharedMut::new(y);
    let job = |j: usize| {
        let (n, rest) = (j / (g.groups * chunking.chunks), j % (g.groups * chunking.chunks));
        let (grp, chunk) = (rest / chunking.chunks, rest % chunking.chunks);
        let sl = chunking.slivers_of(chunk);
        let plane = g.h.input * g.w.input;
        let xg = &x[(n * g.c + grp * cg) * plane..(n * g.c + (grp + 1) * cg) * plane];
        let ug = &u[grp * 36 * kslivers * cg * nr..(grp + 1) * 36 * kslivers * cg * nr];
        let q0 = sl.start * mr;
        let q1 = (sl.end * mr).min(chunking.tw * chunking.th);
        let ns = sl.len();
        let tr0 = q0 / chunking.tw;
        let tr1 = (q1 - 1) / chunking.tw + 1;
        let layout = PhaseRows::<4>::new(g, tr1 - tr0, L);
        // V and M rows hold the chunk's tiles plus L slack, so a vector of tiles may
        // start at the last one; rows are whole cache lines apart.
        let ld = (ns * mr + L).next_multiple_of(16);
        // Consecutive points ξ are one cache line further apart than their rows need:
        // the transforms touch all 36 at once, and a stride that is a multiple of 4 KiB
        // would put them all in one L1 set (measured: the input transform took 2× as
        // long with 64 channels).
        let (v_stride, m_stride) = (cg * ld + 16, kslivers * nr * ld + 16);
        let v_len = 36 * v_stride;
        let m_len = 36 * m_stride;
        with_scratch(cg * layout.channel_len() + layout.row_len() + v_len + m_len, |buf| {
            let (xs, rest) = buf.split_at_mut(cg * layout.channel_len());
            let (row_buf, rest) = rest.split_at_mut(layout.row_len());
            let (v, m) = rest.split_at_mut(v_len);
            layout.fill(g, xg, tr0, xs, row_buf, plan.level);
            let chunk = Chunk { g, layout: &layout, tw: chunking.tw, q0, q1, tr0, mr, ld, v_stride, m_stride };
            chunk.run_input(plan, xs, v);
            // SAFETY (of the kernel calls): V[ξ] (cg rows of ld ≥ (s + 1)·mr tiles, read
            // in place, a step of k per row) and U's sliver (cg × nr) hold `kc` steps
            // past each offset; the C tile (mr tiles × nr channels, rows ld apart) lies
            // inside M[ξ] (kslivers·nr rows of ld); the plan checked that this CPU runs
            // the kernel.
            for xi in 0..36 {
                let vx = &v[xi * v_stride..];
                let mx = &mut m[xi * m_stride..(xi + 1) * m_stride];
                for c0 in (0..cg).step_by(KC) {
                    let kc = KC.min(cg - c0);
                    let args = TileArgs {
                        alpha: 1.0,
                        beta: if c0 == 0 { 0.0 } else { 1.0 },
                        row_bias: std::ptr::null(),
                        col_bias: std::ptr::null(),
                        relu: false,
                        a_ahead: ahead_in_k(ld),
                    };
                    for s in 0..ns {
                        let a = vx[c0 * ld + s * mr..].as_ptr();
                        for js in 0..kslivers {
                            let b = ug[((js * 36 + xi) * cg + c0) * nr..].as_ptr();
                            let c = mx[js * nr * ld + s * mr..].as_mut_ptr();
                            // SAFETY: see above.
                            unsafe { kernel(kc, a, ld, b, c, ld, &args) };
                        }
                    }
                }
            }
            let bias_g = bias.map(|b| &b[grp * kg..(grp + 1) * kg]);
            // SAFETY: the offset is y[n, grp·K/G, 0, 0], inside y; the output transform
            // writes only this chunk's tiles of this image's group channels, which no
            // other job writes.
            let yg = unsafe { y_ptr.get().add((n * g.k + grp * kg) * g.h.output * g.w.output) };
            chunk.run_output(plan, m, bias_g, relu, yg);
        });
    };
    if threads > 1 && jobs > 1 {
        for_each_part(jobs, job);
    } else {
        (0..jobs).for_each(job);
    }
}

/// One axis of one dilation phase: the outputs `o ≡ first (mod d)` of a dilated axis read
/// only the inputs `i ≡ phase (mod d)`, and among those they are an undilated convolution.
#[derive(Debug)]
struct PhaseAxis {
    /// Input index of the phase's first input (`i = phase + d·j`).
    phase: usize,
    /// Inputs of the phase the undilated convolution reads.
    inputs: usize,
    pad_before: usize,
    pad_after: usize,
    /// Output index of the phase's first output (`o = first + d·t`).
    first: usize,
    outputs: usize,
}

impl PhaseAxis {
    /// Phase `phase` of `a` (stride 1): output `o` reads inputs `o − pad + d·r`, all of
    /// phase `(o − pad) mod d`; with `o = first + d·t` and `i = phase + d·j` that is
    /// `j = t − pad_before + r`.
    fn new(a: &Axis, phase: usize) -> Self {
        let d = a.dilation;
        let pad_before = (a.pad_before + phase) / d;
        let first = (a.pad_before + phase) % d;
        let outputs = if first < a.output { (a.output - 1 - first) / d + 1 } else { 0 };
        let available = if phase < a.input { (a.input - phase).div_ceil(d) } else { 0 };
        // Inputs up to the last output's reach: (outputs − 1) − pad_before + kernel.
        let reach = (outputs + a.kernel).saturating_sub(pad_before + 1);
        let inputs = available.min(reach);
        PhaseAxis { phase, inputs, pad_before, pad_after: reach - inputs, first, outputs }
    }
}

impl PhaseAxis {
    /// Length of the phase's block in the combined image (its padding included): the
    /// undilated convolution's `outputs + kernel − 1`, or more when the padding alone is
    /// longer (then every output reads only padding).
    fn block(&self) -> usize {
        self.pad_before + self.inputs + self.pad_after
    }
}

/// A dilated 3×3 convolution as one undilated one: the input's dilation phases, each with
/// its own zero padding, are laid out as a grid of blocks in one combined image, whose
/// unpadded (valid) convolution holds every phase's outputs at the top left of its block
/// (outputs straddling two blocks are computed and dropped: 2 rows and columns per block).
/// One call keeps the tiles and the parallel chunks as large as the undilated layer's.
fn forward_dilated(plan: &Conv2dPlan, x: &[f32], u: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    let g = &plan.geo;
    let (dh, dw) = (g.h.dilation, g.w.dilation);
    let (h_in, w_in, oh_n, ow_n) = (g.h.input, g.w.input, g.h.output, g.w.output);
    let rows: Vec<PhaseAxis> = (0..dh).map(|p| PhaseAxis::new(&g.h, p)).collect();
    let cols: Vec<PhaseAxis> = (0..dw).map(|p| PhaseAxis::new(&g.w, p)).collect();
    // Where each phase's block starts in the combined image.
    let starts = |axes: &[PhaseAxis]| {
        axes.iter()
            .scan(0, |at, a| {
                let start = *at;
                *at += a.block();
                Some(start)
            })
            .collect::<Vec<usize>>()
    };
    let (row_at, col_at) = (starts(&rows), starts(&cols));
    let hc: usize = rows.iter().map(PhaseAxis::block).sum();
    let wc: usize = cols.iter().map(PhaseAxis::block).sum();
    let params = Conv2dParams { groups: g.groups, ..Conv2dParams::default() };
    let opts = super::ConvOptions {
        algorithm: super::Algorithm::Winograd4,
        parallelism: plan.parallelism,
        simd: Some(plan.level),
    };
    let sub = Conv2dPlan::build(&[g.n, g.c, hc, wc], &g.weight_shape(), &params, &opts, false)
        .expect("the combined image holds at least one whole 3×3 window");
    // The gather and the scatter are a tenth of the work: planes go to threads too.
    let parallel = plan.parallelism.threads_for(g.flops() / 4.0) > 1;
    let mut xc = crate::Tensor::for_overwrite(&sub.geo.input_shape()).expect("about the padded input's size");
    let gather = |(plane, dst): (usize, &mut [f32])| {
        dst.fill(0.0);
        let src = &x[plane * h_in * w_in..(plane + 1) * h_in * w_in];
        for (ra, &r0) in rows.iter().zip(&row_at) {
            for j in 0..ra.inputs {
                let srow = &src[(ra.phase + dh * j) * w_in..][..w_in];
                let drow = &mut dst[(r0 + ra.pad_before + j) * wc..][..wc];
                // (A phase past the input's width has no inputs, and no column to start at.)
                for (ca, &c0) in cols.iter().zip(&col_at).filter(|(ca, _)| ca.inputs > 0) {
                    let at = c0 + ca.pad_before;
                    strided::gather(&mut drow[at..at + ca.inputs], &srow[ca.phase..], dw);
                }
            }
        }
    };
    if parallel {
        xc.data_mut().par_chunks_exact_mut(hc * wc).enumerate().for_each(gather);
    } else {
        xc.data_mut().chunks_exact_mut(hc * wc).enumerate().for_each(gather);
    }
    let mut yc = crate::Tensor::for_overwrite(&sub.geo.output_shape()).expect("about the output's size");
    run(&sub, xc.data(), u, bias, relu, yc.data_mut());
    let (oc_h, oc_w) = (sub.geo.h.output, sub.geo.w.output);
    let scatter = |(yp, src): (&mut [f32], &[f32])| {
        for (ra, &r0) in rows.iter().zip(&row_at) {
            for t in 0..ra.outputs {
                let srow = &src[(r0 + t) * oc_w..][..oc_w];
                let drow = &mut yp[(ra.first + dh * t) * ow_n..][..ow_n];
                for (ca, &c0) in cols.iter().zip(&col_at).filter(|(ca, _)| ca.outputs > 0) {
                    strided::scatter(&mut drow[ca.first..], &srow[c0..c0 + ca.outputs], dw);
                }
            }
        }
    };
    if parallel {
        y.par_chunks_exact_mut(oh_n * ow_n).zip(yc.data().par_chunks_exact(oc_h * oc_w)).for_each(scatter);
    } else {
        y.chunks_exact_mut(oh_n * ow_n).zip(yc.data().chunks_exact(oc_h * oc_w)).for_each(scatter);
    }
}

/// The tiles `q0 .. q1` (row-major tile order) of one (image, group).
struct Chunk<'a> {
    g: &'a Conv2dGeometry,
    layout: &'a PhaseRows<4>,
    tw: usize,
    q0: usize,
    q1: usize,
    /// The tile row of `q0` (the layout's first).
    tr0: usize,
    mr: usize,
    /// Row length of M.
    ld: usize,
    /// Floats from one point ξ to the next in V and in M.
    v_stride: usize,
    m_stride: usize,
}

impl Chunk<'_> {
    /// Every run of at most [`L`] tiles of the chunk within one tile row, as (tile row,
    /// first tile column, tiles). (An iterator, not a callback: a closure would be compiled
    /// without the caller's `target_feature`s.)
    #[inline(always)]
    fn vectors(&self) -> Vectors {
        Vectors { q: self.q0, q1: self.q1, tw: self.tw }
    }

    fn run_input(&self, plan: &Conv2dPlan, xs: &[f32], v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if plan.level >= crate::SimdLevel::Avx2 {
            // SAFETY: the plan checked that this CPU supports AVX2 and FMA.
            return unsafe { avx2::input(self, xs, v) };
        }
        self.input(xs, v);
    }

    fn run_output(&self, plan: &Conv2dPlan, m: &[f32], bias: Option<&[f32]>, relu: bool, yg: *mut f32) {
        #[cfg(target_arch = "x86_64")]
        if plan.level >= crate::SimdLevel::Avx2 {
            // SAFETY: the plan checked that this CPU supports AVX2 and FMA.
            return unsafe { avx2::output(self, m, bias, relu, yg) };
        }
        self.output(m, bias, relu, yg);
    }

    /// `V[ξ][c][tile] = (Bᵀ·d·B)[ξ]` for every tile of the chunk (rows of `ld`), read in
    /// place by the kernel. A vector's lanes past its tile row hold the transform of slack
    /// columns and are overwritten by the next vector; the tiles of the last sliver past
    /// the chunk are zeroed (they feed only products that are never read, but stale bits
    /// could be slow denormals).
    #[inline(always)]
    fn input(&self, xs: &[f32], v: &mut [f32]) {
        let cg = self.g.c_per_group();
        let (ld, q) = (self.ld, self.layout.per_phase);
        let tiles = self.q1 - self.q0;
        let padded = tiles.next_multiple_of(self.mr);
        for c in 0..cg {
            let ch = &xs[c * self.layout.channel_len()..(c + 1) * self.layout.channel_len()];
            for (tr, tc, _) in self.vectors() {
                // d[i][j][l]: patch row i, column j, tile tc + l (lanes past the row's last
                // tile read the slack columns).
                let mut d = [[[0.0f32; L]; 6]; 6];
                for (i, di) in d.iter_mut().enumerate() {
                    let row = &ch[(4 * (tr - self.tr0) + i) * 4 * q..][..4 * q];
                    for (j, dij) in di.iter_mut().enumerate() {
                        let at = (j % 4) * q + tc + j / 4;
                        *dij = row[at..at + L].try_into().expect("L tiles");
                    }
                }
                // Bᵀ·d along the rows, then ·B along the columns.
                let mut e = [[[0.0f32; L]; 6]; 6];
                for j in 0..6 {
                    let col = bt_apply([d[0][j], d[1][j], d[2][j], d[3][j], d[4][j], d[5][j]]);
                    for (i, vec) in col.into_iter().enumerate() {
                        e[i][j] = vec;
                    }
                }
                let ql = tr * self.tw + tc - self.q0;
                for (i, ei) in e.iter().enumerate() {
                    for (j, o) in bt_apply(*ei).iter().enumerate() {
                        let at = (i * 6 + j) * self.v_stride + c * ld + ql;
                        let dst: &mut [f32; L] = (&mut v[at..at + L]).try_into().expect("L tiles");
                        *dst = *o;
                    }
                }
            }
            if padded > tiles {
                for xi in 0..36 {
                    let at = xi * self.v_stride + c * ld;
                    v[at + tiles..at + padded].fill(0.0);
                }
            }
        }
    }

    /// `Y = Aᵀ·M·A` (+ bias, ReLU) for every tile of the chunk, written into the group's
    /// output planes at `yg`. M is `[ξ][K/G rounded up to NR][ld]` (ξ `m_stride` apart), tiles along
    /// the rows.
    #[inline(always)]
    fn output(&self, m: &[f32], bias: Option<&[f32]>, relu: bool, yg: *mut f32) {
        let g = self.g;
        let (oh_n, ow_n) = (g.h.output, g.w.output);
        let ld = self.ld;
        for kk in 0..g.k_per_group() {
            let b = bias.map_or(0.0, |b| b[kk]);
            for (tr, tc, lanes) in self.vectors() {
                let ql = tr * self.tw + tc - self.q0;
                let mut s = [[[0.0f32; L]; 6]; 6];
                for (xi, sv) in s.iter_mut().flatten().enumerate() {
                    let at = xi * self.m_stride + kk * ld + ql;
                    *sv = m[at..at + L].try_into().expect("L tiles");
                }
                // Aᵀ·M along the rows, then ·A along the columns.
                let mut r = [[[0.0f32; L]; 6]; 4];
                for j in 0..6 {
                    let col = at_apply([s[0][j], s[1][j], s[2][j], s[3][j], s[4][j], s[5][j]]);
                    for (i, vec) in col.into_iter().enumerate() {
                        r[i][j] = vec;
                    }
                }
                for (i, ri) in r.iter().enumerate() {
                    let oh = 4 * tr + i;
                    if oh >= oh_n {
                        continue;
                    }
                    let o = at_apply(*ri);
                    // Interleave: tile l's four columns are consecutive outputs.
                    let mut quad = [[0.0f32; 4]; L];
                    for (l, p) in quad.iter_mut().enumerate() {
                        for (j, pj) in p.iter_mut().enumerate() {
                            let val = o[j][l] + b;
                            // `x < 0` is false for NaN, so NaN passes through ReLU.
                            *pj = if relu && val < 0.0 { 0.0 } else { val };
                        }
                    }
                    let ow0 = 4 * tc;
                    let cols = (4 * lanes).min(ow_n - ow0);
                    let flat = quad.as_flattened();
                    // SAFETY: kk < K/G, oh < OH and ow0 + cols ≤ OW: inside the group's
                    // planes, in this chunk's tiles, which no other job writes; `flat` is a
                    // local array, so the two ranges do not overlap.
                    unsafe {
                        store_row::<{ 4 * L }>(
                            yg.add((kk * oh_n + oh) * ow_n + ow0),
                            flat.try_into().expect("4·L"),
                            cols,
                        )
                    };
                }
            }
        }
    }
}

/// See [`Chunk::vectors`].
struct Vectors {
    q: usize,
    q1: usize,
    tw: usize,
}

impl Iterator for Vectors {
    type Item = (usize, usize, usize);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.q >= self.q1 {
            return None;
        }
        let (tr, tc) = (self.q / self.tw, self.q % self.tw);
        let lanes = L.min(self.tw - tc).min(self.q1 - self.q);
        self.q += lanes;
        Some((tr, tc, lanes))
    }
}

/// `Bᵀ·d` for six vectors `d` (one column of six patch rows, or one row of six columns).
#[inline(always)]
fn bt_apply(d: [[f32; L]; 6]) -> [[f32; L]; 6] {
    let mut out = [[0.0f32; L]; 6];
    for l in 0..L {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        let a = d4 - 4.0 * d2;
        let b = d3 - 4.0 * d1;
        let c = d4 - d2;
        let e = 2.0 * (d3 - d1);
        out[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        out[1][l] = a + b;
        out[2][l] = a - b;
        out[3][l] = c + e;
        out[4][l] = c - e;
        out[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    out
}

/// `Aᵀ·m` for six vectors `m`.
#[inline(always)]
fn at_apply(m: [[f32; L]; 6]) -> [[f32; L]; 4] {
    let mut out = [[0.0f32; L]; 4];
    for l in 0..L {
        let s12 = m[1][l] + m[2][l];
        let d12 = m[1][l] - m[2][l];
        let s34 = m[3][l] + m[4][l];
        let d34 = m[3][l] - m[4][l];
        out[0][l] = m[0][l] + s12 + s34;
        out[1][l] = d12 + 2.0 * d34;
        out[2][l] = s12 + 4.0 * s34;
        out[3][l] = d12 + 8.0 * d34 + m[5][l];
    }
    out
}

/// The transforms with AVX2 intrinsics: the same arithmetic as [`Chunk::input`] and
/// [`Chunk::output`] (the portable versions are written for the compiler to vectorise, which
/// it did with bounds checks, zeroed temporaries and scalar shuffles: ~3× slower here).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // the passes store transposed: j indexes both sides
mod avx2 {
    use super::{store_row, Chunk, L};
    use std::arch::x86_64::*;

    /// One sliver of [`super::transform_filters`]: the `lanes` (≤ 8, at most `nr`) filters
    /// starting at `w[first..]`, every input channel, into `out` as `[ξ][C/G][nr]`. The
    /// same operations in the same order as the portable closure (no FMA contraction), so
    /// U's values do not depend on the level (only a zero's sign may, in the lanes past K).
    /// Per channel the filters' first eight taps are loaded as rows and transposed in
    /// registers (the portable gather took one bounds-checked load per float, with its
    /// vectors split into SSE halves and spilled).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn filter_sliver(w: &[f32], first: usize, lanes: usize, cg: usize, nr: usize, out: &mut [f32]) {
        assert!(lanes <= nr && nr <= 8 && first + lanes * cg * 9 <= w.len() && out.len() >= 36 * cg * nr);
        let splat = |v: f32| _mm256_set1_ps(v);
        let neg = |v: __m256| _mm256_xor_ps(v, _mm256_set1_ps(-0.0));
        let interp = |a: __m256, b: __m256, c: __m256| {
            let (sixth, b12) = (splat(1.0 / 6.0), _mm256_mul_ps(b, splat(1.0 / 12.0)));
            let a24 = _mm256_mul_ps(a, splat(1.0 / 24.0));
            let c6 = _mm256_mul_ps(c, sixth);
            [
                _mm256_mul_ps(a, splat(0.25)),
                _mm256_mul_ps(neg(_mm256_add_ps(_mm256_add_ps(a, b), c)), sixth),
                _mm256_mul_ps(neg(_mm256_add_ps(_mm256_sub_ps(a, b), c)), sixth),
                _mm256_add_ps(_mm256_add_ps(a24, b12), c6),
                _mm256_add_ps(_mm256_sub_ps(a24, b12), c6),
                c,
            ]
        };
        let zero = _mm256_setzero_ps();
        for c in 0..cg {
            // Lane l's nine taps start at w[first + (l·cg + c)·9]; its first eight are one
            // load (the ninth float exists), its ninth a scalar.
            let row = |l: usize| first + (l * cg + c) * 9;
            let rows: [__m256; 8] = std::array::from_fn(|l| {
                if l < lanes {
                    // SAFETY: row(l) + 9 ≤ first + lanes·cg·9 ≤ w.len() for l < lanes (asserted).
                    unsafe { _mm256_loadu_ps(w.as_ptr().add(row(l))) }
                } else {
                    zero
                }
            });
            let t = crate::simd::x86::transpose8(rows);
            let last: [f32; 8] = std::array::from_fn(|l| if l < lanes { w[row(l) + 8] } else { 0.0 });
            // SAFETY: `last` holds 8 floats.
            let ninth = unsafe { _mm256_loadu_ps(last.as_ptr()) };
            let f: [__m256; 9] = std::array::from_fn(|i| if i < 8 { t[i] } else { ninth });
            let cols: [[__m256; 6]; 3] = std::array::from_fn(|j| interp(f[j], f[3 + j], f[6 + j]));
            for i in 0..6 {
                let r = interp(cols[0][i], cols[1][i], cols[2][i]);
                for (j, v) in r.into_iter().enumerate() {
                    let at = ((i * 6 + j) * cg + c) * nr;
                    if c + 1 < cg {
                        // Eight floats: the ones past nr land on channel c + 1's lanes,
                        // written next.
                        let dst = &mut out[at..at + 8];
                        // SAFETY: dst holds 8 floats.
                        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
                    } else {
                        let dst = &mut out[at..at + nr];
                        // SAFETY: dst holds nr ≤ 8 floats, and only nr lanes are written.
                        unsafe { crate::simd::x86::store_prefix(dst.as_mut_ptr(), v, nr) };
                    }
                }
            }
        }
    }

    /// `Bᵀ·d` for six vectors.
    #[inline(always)]
    unsafe fn bt(d: [__m256; 6]) -> [__m256; 6] {
        let [d0, d1, d2, d3, d4, d5] = d;
        let (four, five, two) = (_mm256_set1_ps(4.0), _mm256_set1_ps(5.0), _mm256_set1_ps(2.0));
        let a = _mm256_fnmadd_ps(four, d2, d4);
        let b = _mm256_fnmadd_ps(four, d1, d3);
        let c = _mm256_sub_ps(d4, d2);
        let e = _mm256_mul_ps(two, _mm256_sub_ps(d3, d1));
        [
            _mm256_fmadd_ps(four, d0, _mm256_fnmadd_ps(five, d2, d4)),
            _mm256_add_ps(a, b),
            _mm256_sub_ps(a, b),
            _mm256_add_ps(c, e),
            _mm256_sub_ps(c, e),
            _mm256_fmadd_ps(four, d1, _mm256_fnmadd_ps(five, d3, d5)),
        ]
    }

    /// `Aᵀ·m` for six vectors.
    #[inline(always)]
    unsafe fn at(m: [__m256; 6]) -> [__m256; 4] {
        let s12 = _mm256_add_ps(m[1], m[2]);
        let d12 = _mm256_sub_ps(m[1], m[2]);
        let s34 = _mm256_add_ps(m[3], m[4]);
        let d34 = _mm256_sub_ps(m[3], m[4]);
        [
            _mm256_add_ps(_mm256_add_ps(m[0], s12), s34),
            _mm256_fmadd_ps(_mm256_set1_ps(2.0), d34, d12),
            _mm256_fmadd_ps(_mm256_set1_ps(4.0), s34, s12),
            _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0), d34, d12), m[5]),
        ]
    }

    /// See [`Chunk::input`].
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `xs` holds the chunk's filled [`PhaseRows`] rows and
    /// `v` is 36 blocks of `chunk.v_stride` ≥ `C/G` rows of `chunk.ld`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn input(chunk: &Chunk<'_>, xs: &[f32], v: &mut [f32]) {
        let cg = chunk.g.c_per_group();
        let (ld, q) = (chunk.ld, chunk.layout.per_phase);
        let tiles = chunk.q1 - chunk.q0;
        let padded = tiles.next_multiple_of(chunk.mr);
        let rows_len = chunk.layout.channel_len();
        assert!(xs.len() >= cg * rows_len && v.len() >= 36 * chunk.v_stride, "buffers too short");
        for c in 0..cg {
            let ch = xs[c * rows_len..].as_ptr();
            for (tr, tc, _) in chunk.vectors() {
                let ql = tr * chunk.tw + tc - chunk.q0;
                // SAFETY: patch row i of tile row tr is layout row 4·(tr − tr0) + i < rows,
                // and its columns tc + j/4 + l ≤ tw + L < per_phase lie in the phase rows; V's
                // row (ξ, c) has ld ≥ ql + L floats. (Checked by the assert above and the
                // layout's construction.)
                unsafe {
                    let base = ch.add(4 * (tr - chunk.tr0) * 4 * q + tc);
                    let mut e = [[_mm256_setzero_ps(); 6]; 6];
                    for j in 0..6 {
                        let col = base.add((j % 4) * q + j / 4);
                        let d = [0, 1, 2, 3, 4, 5].map(|i| _mm256_loadu_ps(col.add(i * 4 * q)));
                        let t = bt(d);
                        for i in 0..6 {
                            e[i][j] = t[i];
                        }
                    }
                    let out = v.as_mut_ptr().add(c * ld + ql);
                    for (i, ei) in e.iter().enumerate() {
                        let t = bt(*ei);
                        for (j, tj) in t.iter().enumerate() {
                            _mm256_storeu_ps(out.add((i * 6 + j) * chunk.v_stride), *tj);
                        }
                    }
                }
            }
            if padded > tiles {
                for xi in 0..36 {
                    let at = xi * chunk.v_stride + c * ld;
                    v[at + tiles..at + padded].fill(0.0);
                }
            }
        }
    }

    /// See [`Chunk::output`].
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `m` is 36 blocks of `chunk.m_stride` ≥ `K/G` rows of
    /// `chunk.ld`; `yg` is the group's output planes, which only this chunk writes at its
    /// tiles.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn output(chunk: &Chunk<'_>, m: &[f32], bias: Option<&[f32]>, relu: bool, yg: *mut f32) {
        let g = chunk.g;
        let (oh_n, ow_n) = (g.h.output, g.w.output);
        let (ld, kg) = (chunk.ld, g.k_per_group());
        assert!(m.len() >= 36 * chunk.m_stride && chunk.m_stride >= kg * ld, "buffers too short");
        let zero = _mm256_setzero_ps();
        for kk in 0..kg {
            let b = _mm256_set1_ps(bias.map_or(0.0, |b| b[kk]));
            for (tr, tc, lanes) in chunk.vectors() {
                let ql = tr * chunk.tw + tc - chunk.q0;
                // SAFETY: M's rows (ξ, kk) have ld ≥ ql + L floats; the output writes stay
                // inside row oh < OH, columns ow0 .. ow0 + cols ≤ OW of plane kk < K/G.
                unsafe {
                    let src = m.as_ptr().add(kk * ld + ql);
                    let mut r = [[zero; 6]; 4];
                    for j in 0..6 {
                        let t = at([0, 1, 2, 3, 4, 5].map(|i| _mm256_loadu_ps(src.add((i * 6 + j) * chunk.m_stride))));
                        for i in 0..4 {
                            r[i][j] = t[i];
                        }
                    }
                    let ow0 = 4 * tc;
                    let cols = (4 * lanes).min(ow_n - ow0);
                    for (i, ri) in r.iter().enumerate() {
                        let oh = 4 * tr + i;
                        if oh >= oh_n {
                            break;
                        }
                        let mut o = at(*ri).map(|x| _mm256_add_ps(x, b));
                        if relu {
                            // max(0, NaN) is NaN: the second operand wins on NaN.
                            o = o.map(|x| _mm256_max_ps(zero, x));
                        }
                        // Interleave: tile l's four columns are consecutive outputs.
                        let a = _mm256_unpacklo_ps(o[0], o[1]);
                        let bb = _mm256_unpackhi_ps(o[0], o[1]);
                        let c = _mm256_unpacklo_ps(o[2], o[3]);
                        let d = _mm256_unpackhi_ps(o[2], o[3]);
                        let t04 = _mm256_shuffle_ps::<0x44>(a, c);
                        let t15 = _mm256_shuffle_ps::<0xEE>(a, c);
                        let t26 = _mm256_shuffle_ps::<0x44>(bb, d);
                        let t37 = _mm256_shuffle_ps::<0xEE>(bb, d);
                        let quads = [
                            _mm256_permute2f128_ps::<0x20>(t04, t15),
                            _mm256_permute2f128_ps::<0x20>(t26, t37),
                            _mm256_permute2f128_ps::<0x31>(t04, t15),
                            _mm256_permute2f128_ps::<0x31>(t26, t37),
                        ];
                        let dst = yg.add((kk * oh_n + oh) * ow_n + ow0);
                        if cols == 4 * L {
                            for (h, qv) in quads.iter().enumerate() {
                                _mm256_storeu_ps(dst.add(h * L), *qv);
                            }
                        } else {
                            let mut row = [0.0f32; 4 * L];
                            for (h, qv) in quads.iter().enumerate() {
                                _mm256_storeu_ps(row.as_mut_ptr().add(h * L), *qv);
                            }
                            store_row(dst, &row, cols);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter transform gives the same values on every level (the AVX2 sliver repeats
    /// the portable arithmetic), for whole and partial slivers, one channel and several, and
    /// groups. Only the sign of a zero may differ, in the lanes past K (never stored).
    #[test]
    fn filter_transform_is_the_same_on_every_level() {
        for (c, k, groups) in [(1, 1, 1), (3, 6, 1), (5, 13, 1), (4, 14, 2), (17, 8, 1)] {
            let params = Conv2dParams { groups, ..Conv2dParams::default() };
            let g = Conv2dGeometry::new(&[1, c, 6, 6], &[k, c / groups, 3, 3], &params).unwrap();
            let w: Vec<f32> = (0..k * (c / groups) * 9).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let nr = crate::gemm::engine(crate::simd::active()).blocking.nr;
            let len = groups * 36 * g.k_per_group().div_ceil(nr) * g.c_per_group() * nr;
            let transform = |level: SimdLevel| {
                let mut u = vec![f32::NAN; len];
                transform_filters(&g, &w, nr, &mut u, 1, level);
                u
            };
            let want = transform(SimdLevel::Portable);
            for level in SimdLevel::supported() {
                let got = transform(level);
                // `==`: non-zero values bitwise, zeros of either sign; no NaN (all written).
                let first = got.iter().zip(&want).position(|(a, b)| a != b);
                assert!(first.is_none(), "C = {c}, K = {k}, G = {groups}, {level:?}: U[{first:?}] differs");
            }
        }
    }
}
