//! Shared property-test strategies and helpers. Fast kernels plug in here: a strategy gives a
//! problem, the reference gives the expected answer, [`convkit::check`] decides.
#![allow(dead_code)]

use convkit::{Conv2dGeometry, Conv2dParams, Padding, Pool2dGeometry, Pool2dParams, Tensor};
use proptest::prelude::*;

/// SplitMix64: a tiny deterministic generator, so that a problem is its dimensions plus a seed
/// (proptest then shrinks the dimensions, not thousands of floats).
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn tensor(&mut self, shape: &[usize]) -> Tensor {
        Tensor::from_fn(shape, |_| self.uniform()).unwrap()
    }
    pub fn vec_f64(&mut self, len: usize) -> Vec<f64> {
        (0..len).map(|_| self.uniform() as f64).collect()
    }
}

pub fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![
        1 => Just(Padding::Valid),
        1 => Just(Padding::Same),
        3 => (0..=6usize, 0..=6usize, 0..=6usize, 0..=6usize)
            .prop_map(|(top, bottom, left, right)| Padding::Explicit { top, bottom, left, right }),
    ]
}

/// Smallest input extent that the padded window fits, for one axis.
fn min_input(padding: &Padding, eff: usize, vertical: bool) -> usize {
    match *padding {
        Padding::Valid => eff,
        Padding::Same => 1,
        Padding::Explicit { top, bottom, left, right } => {
            let p = if vertical { top + bottom } else { left + right };
            eff.saturating_sub(p).max(1)
        }
    }
}

/// A random, valid convolution problem.
#[derive(Clone, Debug)]
pub struct ConvCase {
    pub input_shape: [usize; 4],
    pub weight_shape: [usize; 4],
    pub params: Conv2dParams,
    pub geometry: Conv2dGeometry,
    pub seed: u64,
}

impl ConvCase {
    /// A hand-written problem (the fixed cases beside the properties); panics if invalid.
    pub fn fixed(input_shape: [usize; 4], weight_shape: [usize; 4], params: Conv2dParams, seed: u64) -> Self {
        let geometry = Conv2dGeometry::new(&input_shape, &weight_shape, &params).expect("a valid fixed case");
        ConvCase { input_shape, weight_shape, params, geometry, seed }
    }
    pub fn input(&self) -> Tensor {
        SplitMix::new(self.seed).tensor(&self.input_shape)
    }
    pub fn weight(&self) -> Tensor {
        SplitMix::new(self.seed ^ 1).tensor(&self.weight_shape)
    }
    pub fn bias(&self) -> Tensor {
        SplitMix::new(self.seed ^ 2).tensor(&[self.weight_shape[0]])
    }
    pub fn grad_out(&self) -> Tensor {
        SplitMix::new(self.seed ^ 3).tensor(&self.geometry.output_shape())
    }
}

/// Convolution problems: batch 0–`max_n`, groups 1–3 with 1–3 channels per group each way,
/// kernels 1–`max_k`, stride 1–4, dilation 1–3, valid/same/explicit asymmetric padding up to
/// 6 (often larger than the kernel), spatial sizes from the smallest that fits upwards.
pub fn conv_case(max_n: usize, max_k: usize, max_extra: usize) -> impl Strategy<Value = ConvCase> {
    (
        prop_oneof![1 => Just(0usize), 12 => 1..=max_n],
        (1..=3usize, 1..=3usize, 1..=3usize),
        (1..=max_k, 1..=max_k),
        (1..=4usize, 1..=4usize, 1..=3usize, 1..=3usize),
        padding(),
        (0..=max_extra, 0..=max_extra),
        any::<u64>(),
    )
        .prop_map(|(n, (groups, cg, kg), (r, s), (sh, sw, dh, dw), padding, (eh, ew), seed)| {
            let h = min_input(&padding, dh * (r - 1) + 1, true) + eh;
            let w = min_input(&padding, dw * (s - 1) + 1, false) + ew;
            let params = Conv2dParams { stride: (sh, sw), dilation: (dh, dw), padding, groups };
            let input_shape = [n, groups * cg, h, w];
            let weight_shape = [groups * kg, cg, r, s];
            let geometry =
                Conv2dGeometry::new(&input_shape, &weight_shape, &params).expect("strategy builds only valid problems");
            ConvCase { input_shape, weight_shape, params, geometry, seed }
        })
}

/// A random, valid pooling problem.
#[derive(Clone, Debug)]
pub struct PoolCase {
    pub input_shape: [usize; 4],
    pub params: Pool2dParams,
    pub geometry: Pool2dGeometry,
    pub seed: u64,
}

impl PoolCase {
    pub fn input(&self) -> Tensor {
        SplitMix::new(self.seed).tensor(&self.input_shape)
    }
    pub fn grad_out(&self) -> Tensor {
        SplitMix::new(self.seed ^ 3).tensor(&self.geometry.output_shape())
    }
}

pub fn pool_case() -> impl Strategy<Value = PoolCase> {
    (
        0..=3usize,
        1..=3usize,
        (1..=4usize, 1..=4usize),
        (1..=4usize, 1..=4usize),
        any::<bool>(),
        0..=3usize,
        0..=6usize,
        0..=6usize,
        any::<u64>(),
    )
        .prop_flat_map(|(n, c, (kh, kw), (sh, sw), include, mode, eh, ew, seed)| {
            let pad = (0..kh, 0..kh, 0..kw, 0..kw);
            (Just((n, c, kh, kw, sh, sw, include, mode, eh, ew, seed)), pad)
        })
        .prop_map(|((n, c, kh, kw, sh, sw, include, mode, eh, ew, seed), (t, b, l, r))| {
            let padding = match mode {
                0 => Padding::Valid,
                _ => Padding::Explicit { top: t, bottom: b, left: l, right: r },
            };
            let h = min_input(&padding, kh, true) + eh;
            let w = min_input(&padding, kw, false) + ew;
            let params = Pool2dParams { kernel: (kh, kw), stride: (sh, sw), padding, count_include_pad: include };
            let input_shape = [n, c, h, w];
            let geometry = Pool2dGeometry::new(&input_shape, &params).expect("valid pooling problem");
            PoolCase { input_shape, params, geometry, seed }
        })
}

/// An independent formulation of the forward convolution: lower each (image, group) to an
/// explicit column matrix `[C/G·R·S, OH·OW]`, then multiply by the group's weight matrix
/// `[K/G, C/G·R·S]`, in f64. Written apart from `reference::conv` on purpose.
pub fn slow_im2col_conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &Conv2dGeometry) -> Vec<f32> {
    let (cg, kg, (r, s)) = (g.c_per_group(), g.k_per_group(), (g.h.kernel, g.w.kernel));
    let (oh, ow) = (g.h.output, g.w.output);
    let rows = cg * r * s;
    let mut y = vec![0.0f32; g.output_shape().iter().product()];
    for n in 0..g.n {
        for grp in 0..g.groups {
            let mut col = vec![0.0f64; rows * oh * ow];
            for c in 0..cg {
                for i in 0..r {
                    for j in 0..s {
                        let row = (c * r + i) * s + j;
                        for p in 0..oh {
                            for q in 0..ow {
                                let ih = (p * g.h.stride + i * g.h.dilation) as isize - g.h.pad_before as isize;
                                let iw = (q * g.w.stride + j * g.w.dilation) as isize - g.w.pad_before as isize;
                                if ih >= 0 && iw >= 0 && (ih as usize) < g.h.input && (iw as usize) < g.w.input {
                                    let ch = grp * cg + c;
                                    col[row * oh * ow + p * ow + q] = x.data()
                                        [((n * g.c + ch) * g.h.input + ih as usize) * g.w.input + iw as usize]
                                        as f64;
                                }
                            }
                        }
                    }
                }
            }
            for kk in 0..kg {
                let k = grp * kg + kk;
                for pq in 0..oh * ow {
                    let mut acc = b.map_or(0.0, |b| b.data()[k] as f64);
                    for row in 0..rows {
                        acc += w.data()[k * rows + row] as f64 * col[row * oh * ow + pq];
                    }
                    y[(n * g.k + k) * oh * ow + pq] = acc as f32;
                }
            }
        }
    }
    y
}

/// Central finite difference of `f` at `x` along coordinate `i`, in f64.
pub fn central_difference(f: &dyn Fn(&[f64]) -> f64, x: &[f64], i: usize, h: f64) -> f64 {
    let mut xp = x.to_vec();
    xp[i] += h;
    let fp = f(&xp);
    xp[i] = x[i] - h;
    let fm = f(&xp);
    (fp - fm) / (2.0 * h)
}

/// Checks an analytic gradient against central differences at up to `samples` coordinates.
pub fn check_gradient(
    what: &str,
    f: &dyn Fn(&[f64]) -> f64,
    x: &[f64],
    grad: &[f64],
    rng: &mut SplitMix,
    samples: usize,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(x.len(), grad.len(), "{}: gradient length", what);
    if x.is_empty() {
        return Ok(());
    }
    let idx: Vec<usize> =
        if x.len() <= samples { (0..x.len()).collect() } else { (0..samples).map(|_| rng.below(x.len())).collect() };
    for i in idx {
        let fd = central_difference(f, x, i, 1e-6);
        let tol = 1e-6 * (1.0 + fd.abs().max(grad[i].abs()));
        prop_assert!(
            (fd - grad[i]).abs() <= tol,
            "{}: d/dx[{}] analytic {} vs finite difference {}",
            what,
            i,
            grad[i],
            fd
        );
    }
    Ok(())
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Case count for a property: `PROPTEST_CASES` if set (for long local runs), else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
