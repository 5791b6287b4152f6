//! Property tests of the reference kernels: forward convolution against an independent
//! im2col formulation, every backward against f64 finite differences.

mod common;

use common::*;
use convkit::check::Tolerance;
use convkit::reference as r;
use convkit::reference::{Targets, BCE_EPS};
use convkit::Tensor;
use proptest::prelude::*;

fn f64s(t: &Tensor) -> Vec<f64> {
    t.data().iter().map(|&v| v as f64).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(96), ..ProptestConfig::default() })]

    #[test]
    fn conv_forward_matches_independent_im2col(case in conv_case(4, 5, 8)) {
        let (x, w, b) = (case.input(), case.weight(), case.bias());
        let y = r::conv2d(&x, &w, Some(&b), &case.params).unwrap();
        prop_assert_eq!(y.shape(), &case.geometry.output_shape());
        let want = slow_im2col_conv(&x, &w, Some(&b), &case.geometry);
        let tol = Tolerance::reduction(case.geometry.reduction_len() + 1);
        if let Err(m) = tol.check("reference conv2d", y.data(), &want) { prop_assert!(false, "{} {:?}", m, case); }
    }

    #[test]
    fn conv_backward_matches_finite_differences(case in conv_case(2, 4, 4)) {
        let g = case.geometry;
        let (x, w, dy) = (f64s(&case.input()), f64s(&case.weight()), f64s(&case.grad_out()));
        let b = f64s(&case.bias());
        let mut rng = SplitMix::new(case.seed);
        // L = <dy, conv(x, w, b)>, so ∂L/∂x = backward_data(dy), ∂L/∂w = backward_weight, ∂L/∂b = backward_bias.
        let dx = r::conv2d_backward_data_f64(&g, &dy, &w);
        let fx = |xv: &[f64]| dot(&dy, &r::conv2d_forward_f64(&g, xv, &w, Some(&b)));
        check_gradient("conv2d backward_data", &fx, &x, &dx, &mut rng, 24)?;
        let dw = r::conv2d_backward_weight_f64(&g, &x, &dy);
        let fw = |wv: &[f64]| dot(&dy, &r::conv2d_forward_f64(&g, &x, wv, Some(&b)));
        check_gradient("conv2d backward_weight", &fw, &w, &dw, &mut rng, 24)?;
        let db = r::conv2d_backward_bias_f64(&g, &dy);
        let fb = |bv: &[f64]| dot(&dy, &r::conv2d_forward_f64(&g, &x, &w, Some(bv)));
        check_gradient("conv2d backward_bias", &fb, &b, &db, &mut rng, 24)?;
        // The f32 wrappers agree with the f64 core.
        let t = r::conv2d_backward_bias(&case.grad_out()).unwrap();
        prop_assert!(Tolerance::reduction(dy.len()).check("bias", t.data(), &db.iter().map(|&v| v as f32).collect::<Vec<_>>()).is_ok());
    }

    #[test]
    fn conv_backward_is_the_adjoint_everywhere(case in conv_case(3, 5, 6)) {
        // <dy, conv(x)> = <backward_data(dy), x> = <backward_weight(x, dy), w> without bias, for every cell at once.
        let g = case.geometry;
        let (x, w, dy) = (f64s(&case.input()), f64s(&case.weight()), f64s(&case.grad_out()));
        let lhs = dot(&dy, &r::conv2d_forward_f64(&g, &x, &w, None));
        let via_x = dot(&r::conv2d_backward_data_f64(&g, &dy, &w), &x);
        let via_w = dot(&r::conv2d_backward_weight_f64(&g, &x, &dy), &w);
        prop_assert!((lhs - via_x).abs() <= 1e-9 * (1.0 + lhs.abs()), "{} vs {}", lhs, via_x);
        prop_assert!((lhs - via_w).abs() <= 1e-9 * (1.0 + lhs.abs()), "{} vs {}", lhs, via_w);
        let dx = r::conv2d_backward_data(&case.grad_out(), &case.weight(), &case.input_shape, &case.params).unwrap();
        prop_assert_eq!(dx.shape(), &case.input_shape);
        let dw = r::conv2d_backward_weight(&case.input(), &case.grad_out(), &case.weight_shape, &case.params).unwrap();
        prop_assert_eq!(dw.shape(), &case.weight_shape);
    }

    #[test]
    fn pool_backward_matches_finite_differences(case in pool_case()) {
        let g = case.geometry;
        let (x, dy) = (f64s(&case.input()), f64s(&case.grad_out()));
        let mut rng = SplitMix::new(case.seed);
        let dx = r::max_pool2d_backward_f64(&g, &x, &dy);
        let f = |xv: &[f64]| dot(&dy, &r::max_pool2d_f64(&g, xv));
        check_gradient("max_pool2d backward", &f, &x, &dx, &mut rng, 32)?;
        let dx = r::avg_pool2d_backward_f64(&g, &dy);
        let f = |xv: &[f64]| dot(&dy, &r::avg_pool2d_f64(&g, xv));
        check_gradient("avg_pool2d backward", &f, &x, &dx, &mut rng, 32)?;
        // Forward through the f32 wrapper keeps the geometry's output shape.
        let (ym, ya) = (r::max_pool2d(&case.input(), &case.params).unwrap(), r::avg_pool2d(&case.input(), &case.params).unwrap());
        prop_assert_eq!(ym.shape(), &g.output_shape());
        prop_assert_eq!(ya.shape(), &g.output_shape());
    }

    #[test]
    fn global_pool_and_dense_backward(n in 0..4usize, inp in 1..9usize, out in 1..7usize, hw in 1..10usize, seed: u64) {
        let mut rng = SplitMix::new(seed);
        let x = rng.vec_f64(n * inp * hw);
        let dy = rng.vec_f64(n * inp);
        let dx = r::global_avg_pool_backward_f64(&dy, hw);
        let f = |xv: &[f64]| dot(&dy, &r::global_avg_pool_f64(xv, hw));
        check_gradient("global_avg_pool backward", &f, &x, &dx, &mut rng, 32)?;

        let (x, w, b, dy) = (rng.vec_f64(n * inp), rng.vec_f64(out * inp), rng.vec_f64(out), rng.vec_f64(n * out));
        let (dx, dw, db) = r::dense_backward_f64(n, inp, out, &x, &w, &dy);
        let fx = |v: &[f64]| dot(&dy, &r::dense_forward_f64(n, inp, out, v, &w, Some(&b)));
        check_gradient("dense backward x", &fx, &x, &dx, &mut rng, 32)?;
        let fw = |v: &[f64]| dot(&dy, &r::dense_forward_f64(n, inp, out, &x, v, Some(&b)));
        check_gradient("dense backward w", &fw, &w, &dw, &mut rng, 32)?;
        let fb = |v: &[f64]| dot(&dy, &r::dense_forward_f64(n, inp, out, &x, &w, Some(v)));
        check_gradient("dense backward b", &fb, &b, &db, &mut rng, 32)?;
    }

    #[test]
    fn activations_backward(rows in 1..5usize, cols in 1..8usize, seed: u64) {
        let mut rng = SplitMix::new(seed);
        let x: Vec<f64> = rng.vec_f64(rows * cols).iter().map(|v| 4.0 * v).collect();
        let dy = rng.vec_f64(rows * cols);
        let xt = Tensor::new(x.iter().map(|&v| v as f32).collect(), &[rows, cols]).unwrap();
        let dyt = Tensor::new(dy.iter().map(|&v| v as f32).collect(), &[rows, cols]).unwrap();
        // Elementwise: the backward wrappers (f32, from cached input/output) against f64 differences.
        type Fwd = fn(f64) -> f64;
        let cases: [(&str, Fwd, Tensor); 3] = [
            ("relu", r::relu_f64, r::relu_backward(&xt, &dyt).unwrap()),
            ("sigmoid", r::sigmoid_f64, r::sigmoid_backward(&r::sigmoid(&xt), &dyt).unwrap()),
            ("tanh", f64::tanh, r::tanh_backward(&r::tanh(&xt), &dyt).unwrap()),
        ];
        for (name, f, dx) in cases {
            for i in 0..x.len() {
                if name == "relu" && x[i].abs() < 1e-3 { continue; }
                let fd = (f(x[i] + 1e-6) - f(x[i] - 1e-6)) / 2e-6 * dy[i];
                prop_assert!((fd - dx.data()[i] as f64).abs() < 1e-5, "{} at {}: {} vs {}", name, x[i], dx.data()[i], fd);
            }
        }
        let y = r::softmax_f64(&x, cols);
        let dx = r::softmax_backward_f64(&y, &dy, cols);
        let f = |v: &[f64]| dot(&dy, &r::softmax_f64(v, cols));
        check_gradient("softmax backward", &f, &x, &dx, &mut rng, 40)?;
        for row in y.chunks(cols) { prop_assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12); }
    }

    #[test]
    fn losses_backward(rows in 1..5usize, cols in 1..8usize, seed: u64) {
        let mut rng = SplitMix::new(seed);
        let p = rng.vec_f64(rows * cols);
        let t = rng.vec_f64(rows * cols);
        let (_, g) = r::mse_f64(&p, &t);
        check_gradient("mse", &|v: &[f64]| r::mse_f64(v, &t).0, &p, &g, &mut rng, 40)?;
        let (_, g) = r::half_squared_error_f64(&p, &t, rows);
        check_gradient("half squared error", &|v: &[f64]| r::half_squared_error_f64(v, &t, rows).0, &p, &g, &mut rng, 40)?;
        // Probabilities well inside (ε, 1−ε) so the clamp is inactive; targets in [0, 1].
        let prob: Vec<f64> = p.iter().map(|v| 0.5 + 0.45 * v).collect();
        let t01: Vec<f64> = t.iter().map(|v| 0.5 + 0.5 * v).collect();
        let (_, g) = r::bce_f64(&prob, &t01);
        check_gradient("bce", &|v: &[f64]| r::bce_f64(v, &t01).0, &prob, &g, &mut rng, 40)?;
        let z: Vec<f64> = p.iter().map(|v| 6.0 * v).collect();
        let (l, g) = r::bce_with_logits_f64(&z, &t01);
        check_gradient("bce with logits", &|v: &[f64]| r::bce_with_logits_f64(v, &t01).0, &z, &g, &mut rng, 40)?;
        // The logits form equals the probability form where the clamp is inactive.
        let via_prob = r::bce_f64(&z.iter().map(|&v| r::sigmoid_f64(v)).collect::<Vec<_>>(), &t01).0;
        prop_assert!((l - via_prob).abs() < 1e-9 + BCE_EPS, "{} vs {}", l, via_prob);
        // Cross-entropy with soft targets and with class indices.
        let dist = r::softmax_f64(&t, cols);
        let (_, g) = r::cross_entropy_f64(&z, &dist, cols);
        check_gradient("cross entropy", &|v: &[f64]| r::cross_entropy_f64(v, &dist, cols).0, &z, &g, &mut rng, 40)?;
        let labels: Vec<usize> = (0..rows).map(|_| rng.below(cols)).collect();
        let onehot = r::one_hot_f64(&labels, rows, cols).unwrap();
        let (_, g) = r::cross_entropy_f64(&z, &onehot, cols);
        check_gradient("cross entropy (classes)", &|v: &[f64]| r::cross_entropy_f64(v, &onehot, cols).0, &z, &g, &mut rng, 40)?;
        let zt = Tensor::new(z.iter().map(|&v| v as f32).collect(), &[rows, cols]).unwrap();
        let a = r::cross_entropy(&zt, Targets::Classes(&labels)).unwrap();
        prop_assert!(a.value.is_finite() && a.value >= 0.0);
    }
}
