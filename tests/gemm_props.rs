//! The packed GEMM against the naive triple loop, on every SIMD path this CPU runs, over
//! random shapes (0–300, primes, and sizes straddling every tile and block boundary),
//! layouts, α, β and epilogues; plus bitwise reproducibility across thread counts.

mod common;

use common::{cases, SplitMix};
use convkit::check::Tolerance;
use convkit::gemm::{blocking_for, gemm, Bias, GemmParams, MatMut, MatRef};
use convkit::parallel::with_threads;
use convkit::{reference, Parallelism, SimdLevel};
use proptest::prelude::*;

/// How an operand is laid out in memory.
#[derive(Clone, Copy, Debug)]
enum Layout {
    RowMajor,
    ColMajor,
    /// Row-major with 3 unused floats after each row.
    PaddedRows,
    /// Every element 2 floats apart along rows and a padded column stride.
    Strided,
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::RowMajor), Just(Layout::ColMajor), Just(Layout::PaddedRows), Just(Layout::Strided)]
}

impl Layout {
    /// (rs, cs, buffer length) for a rows × cols matrix.
    fn strides(self, rows: usize, cols: usize) -> (usize, usize, usize) {
        let (rs, cs) = match self {
            Layout::RowMajor => (cols, 1),
            Layout::ColMajor => (1, rows),
            Layout::PaddedRows => (cols + 3, 1),
            Layout::Strided => (2, 2 * rows + 5),
        };
        let len = if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 };
        (rs.max(1), cs.max(1), len)
    }
}

/// Dimensions that straddle every tile and block edge of every kernel, primes, tiny sizes.
fn dim() -> impl Strategy<Value = usize> {
    let mut edges = vec![0usize, 1, 2, 3, 5, 7, 13, 31, 37, 97, 127, 131, 257, 293];
    for level in SimdLevel::ALL {
        let b = blocking_for(level);
        for base in [b.mr, b.nr, 2 * b.mr, 3 * b.mr, b.kc, b.mc] {
            edges.extend([base - 1, base, base + 1]);
        }
    }
    edges.retain(|&d| d <= 300);
    prop_oneof![3 => proptest::sample::select(edges), 2 => 0..=300usize, 1 => 0..=40usize]
}

#[derive(Clone, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    la: Layout,
    lb: Layout,
    lc: Layout,
    alpha: f32,
    beta: f32,
    bias: u8,
    relu: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (dim(), dim(), dim()),
        (layout(), layout(), layout()),
        prop::sample::select(vec![1.0f32, 0.5, -2.0]),
        prop::sample::select(vec![0.0f32, 1.0, -0.5]),
        0..3u8,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|((m, n, k), (la, lb, lc), alpha, beta, bias, relu, seed)| Case {
            m,
            n,
            k,
            la,
            lb,
            lc,
            alpha,
            beta,
            bias,
            relu,
            seed,
        })
}

struct Data {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    bias: Vec<f32>,
}

impl Case {
    fn data(&self) -> Data {
        let mut rng = SplitMix::new(self.seed);
        let len = |l: Layout, r, c| l.strides(r, c).2;
        let mut fill = |n: usize| (0..n).map(|_| rng.uniform()).collect::<Vec<f32>>();
        let a = fill(len(self.la, self.m, self.k));
        let b = fill(len(self.lb, self.k, self.n));
        let mut c = fill(len(self.lc, self.m, self.n));
        if self.beta == 0.0 {
            // β = 0 must never read C: poison it.
            c.iter_mut().for_each(|x| *x = f32::NAN);
        }
        let bias = fill(self.m.max(self.n));
        Data { a, b, c, bias }
    }

    fn params<'a>(&self, d: &'a Data) -> GemmParams<'a> {
        let bias = match self.bias {
            0 => Bias::None,
            1 => Bias::PerRow(&d.bias[..self.m]),
            _ => Bias::PerCol(&d.bias[..self.n]),
        };
        GemmParams::default().alpha(self.alpha).beta(self.beta).bias(bias).relu(self.relu)
    }

    fn view<'a>(&self, buf: &'a [f32], l: Layout, r: usize, c: usize) -> MatRef<'a> {
        let (rs, cs, _) = l.strides(r, c);
        MatRef::new(buf, r, c, rs, cs).unwrap()
    }

    /// Runs the engine, returns C as row-major m × n.
    fn run(&self, d: &Data, p: &GemmParams<'_>) -> Vec<f32> {
        let (rs, cs, _) = self.lc.strides(self.m, self.n);
        let mut c = d.c.clone();
        let a = self.view(&d.a, self.la, self.m, self.k);
        let b = self.view(&d.b, self.lb, self.k, self.n);
        gemm(a, b, MatMut::new(&mut c, self.m, self.n, rs, cs).unwrap(), p).unwrap();
        let cv = MatRef::new(&c, self.m, self.n, rs, cs).unwrap();
        (0..self.m * self.n).map(|x| cv.at(x / self.n.max(1), x % self.n.max(1))).collect()
    }

    fn reference(&self, d: &Data) -> Vec<f32> {
        let a = self.view(&d.a, self.la, self.m, self.k);
        let b = self.view(&d.b, self.lb, self.k, self.n);
        let c = self.view(&d.c, self.lc, self.m, self.n);
        reference::gemm(a, b, c, &self.params(d))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(160), ..ProptestConfig::default() })]

    #[test]
    fn matches_the_triple_loop_on_every_path(case in case()) {
        let d = case.data();
        let want = case.reference(&d);
        // |α|·(sum of k products) + |β|·|C| + |bias|: scale 2 covers α = −2.
        let tol = Tolerance::reduction(case.k + 2).with_scale(2.0);
        for level in SimdLevel::supported() {
            let b = blocking_for(level);
            // Default (tiny problems take the direct loop), forced through the packed kernels
            // with the tuned blocks, and with small odd blocks so that every block edge,
            // partial sliver and k-block boundary appears even in small problems.
            let variants = [
                ("default", case.params(&d).simd(level)),
                ("packed", case.params(&d).simd(level).cache_blocking(b.kc, b.mc, b.nc)),
                ("small blocks", case.params(&d).simd(level).cache_blocking(5, b.mr + 3, 2 * b.nr + 1)),
            ];
            for (name, p) in variants {
                let got = case.run(&d, &p);
                if let Err(m) = tol.check(&format!("gemm[{}, {name}]", level.name()), &got, &want) {
                    prop_assert!(false, "{} in {:?}", m, case);
                }
            }
        }
    }
}

/// Fixed bugs, kept as named cases on every path.
#[test]
fn regressions() {
    let base = Case {
        m: 1,
        n: 16,
        k: 0,
        la: Layout::RowMajor,
        lb: Layout::RowMajor,
        lc: Layout::PaddedRows,
        alpha: 1.0,
        beta: 0.0,
        bias: 0,
        relu: false,
        seed: 0,
    };
    // k = 0 with an A read in place: A has no storage, nothing may index it.
    let cases = [base.clone(), Case { m: 1, n: 3, bias: 2, ..base.clone() }, Case { m: 40, n: 2, beta: 1.0, ..base }];
    for case in cases {
        let d = case.data();
        let want = case.reference(&d);
        for level in SimdLevel::supported() {
            let b = blocking_for(level);
            for p in [case.params(&d).simd(level), case.params(&d).simd(level).cache_blocking(b.kc, b.mc, b.nc)] {
                let got = case.run(&d, &p);
                Tolerance::reduction(2).check(&format!("{case:?} [{}]", level.name()), &got, &want).unwrap();
            }
        }
    }
}

#[test]
fn unsupported_paths_are_reported_not_run() {
    for level in SimdLevel::ALL {
        if level.is_supported() {
            continue;
        }
        println!("skipping gemm[{}]: not supported by this CPU", level.name());
        let (a, b, mut c) = ([1.0f32], [1.0f32], [0.0f32]);
        let r = gemm(
            MatRef::row_major(&a, 1, 1).unwrap(),
            MatRef::row_major(&b, 1, 1).unwrap(),
            MatMut::row_major(&mut c, 1, 1).unwrap(),
            &GemmParams::default().simd(level),
        );
        assert!(matches!(r, Err(convkit::Error::Unsupported { .. })), "{r:?}");
    }
}

#[test]
fn bitwise_identical_for_any_thread_count() {
    // Shapes large enough to be split, with ragged edges and several k blocks.
    let shapes = [(301, 277, 530), (64, 3136, 96), (1000, 37, 300), (17, 900, 257)];
    for (m, n, k) in shapes {
        for level in SimdLevel::supported() {
            let case = Case {
                m,
                n,
                k,
                la: Layout::RowMajor,
                lb: Layout::ColMajor,
                lc: Layout::RowMajor,
                alpha: 0.5,
                beta: 1.0,
                bias: 1,
                relu: true,
                seed: (m * n * k) as u64,
            };
            let d = case.data();
            let p = case.params(&d).simd(level);
            let seq = case.run(&d, &p.parallelism(Parallelism::Sequential));
            for threads in [1, 2, 3] {
                let par = with_threads(threads, || case.run(&d, &p));
                assert!(
                    seq.iter().zip(&par).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "gemm[{}] {m}×{n}×{k}: {threads} threads differ from sequential",
                    level.name()
                );
            }
            let cv = case.reference(&d);
            Tolerance::reduction(k + 2).with_scale(2.0).check("gemm", &seq, &cv).unwrap();
        }
    }
}

#[test]
fn shape_errors_name_the_operand() {
    let (a, b, mut c) = (vec![0.0; 6], vec![0.0; 6], vec![0.0; 4]);
    let e = gemm(
        MatRef::row_major(&a, 2, 3).unwrap(),
        MatRef::row_major(&b, 2, 3).unwrap(),
        MatMut::row_major(&mut c, 2, 2).unwrap(),
        &GemmParams::default(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "gemm B: expected [k, n] with k = 3 (A is [2, 3]), got [2, 3]");
    let e = gemm(
        MatRef::row_major(&a, 2, 3).unwrap(),
        MatRef::row_major(&b, 3, 2).unwrap(),
        MatMut::row_major(&mut c, 2, 2).unwrap(),
        &GemmParams::default().bias(Bias::PerRow(&[1.0])),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "gemm row bias: expected [2], got [1]");
    assert!(MatRef::row_major(&a, 3, 3).is_err());
    assert!(MatMut::new(&mut c, 2, 2, 1, 1).is_err(), "overlapping C must be rejected");
    assert!(MatRef::new(&a, usize::MAX, 2, usize::MAX, 1).is_err());
}
