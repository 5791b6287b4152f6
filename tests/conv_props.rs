//! Every convolution algorithm, forward and all backward passes, against the reference
//! loops over random problems from the shared strategies, on every SIMD path this CPU runs.

mod common;

use common::{cases, conv_case, ConvCase};
use convkit::check::Tolerance;
use convkit::conv::{Algorithm, Conv2dPlan, ConvOptions};
use convkit::parallel::with_threads;
use convkit::{reference as r, Conv2dParams, Error, Padding, Parallelism, SimdLevel, Tensor};
use proptest::prelude::*;

fn check(what: &str, got: &Tensor, want: &Tensor, k: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape(), "{}", what);
    // Scale 2: bias and inputs in [-1, 1].
    if let Err(m) = Tolerance::reduction(k + 1).with_scale(2.0).check(what, got.data(), want.data()) {
        prop_assert!(false, "{}", m);
    }
    Ok(())
}

/// Runs every pass of `algorithm` on `case` at `level` and compares with the reference.
fn check_case(case: &ConvCase, algorithm: Algorithm, level: SimdLevel) -> Result<(), TestCaseError> {
    let opts = ConvOptions::default().algorithm(algorithm).simd(level);
    let plan = match Conv2dPlan::new(&case.input_shape, &case.weight_shape, &case.params, &opts) {
        Ok(p) => p,
        Err(Error::Unsupported { .. }) => {
            prop_assert!(algorithm == Algorithm::Depthwise, "{} refused {:?}", algorithm.name(), case);
            return Ok(());
        }
        Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
    };
    let g = plan.geometry();
    let tag = |pass: &str| format!("{}[{}] {pass} {:?}", algorithm.name(), level.name(), case);
    let (x, w, b, dy) = (case.input(), case.weight(), case.bias(), case.grad_out());
    let want = r::conv2d(&x, &w, Some(&b), &case.params).unwrap();
    check(&tag("forward"), &plan.forward(&x, &w, Some(&b)).unwrap(), &want, g.reduction_len())?;
    let mut fused = Tensor::zeros(&g.output_shape()).unwrap();
    plan.forward_into(&x, &w, Some(&b), true, &mut fused).unwrap();
    check(&tag("forward+relu"), &fused, &r::relu(&want), g.reduction_len())?;
    let want = r::conv2d_backward_data(&dy, &w, &case.input_shape, &case.params).unwrap();
    let terms = g.k_per_group() * g.h.kernel * g.w.kernel;
    check(&tag("backward_data"), &plan.backward_data(&dy, &w).unwrap(), &want, terms)?;
    let want = r::conv2d_backward_weight(&x, &dy, &case.weight_shape, &case.params).unwrap();
    let terms = g.n * g.h.output * g.w.output;
    check(&tag("backward_weight"), &plan.backward_weight(&x, &dy).unwrap(), &want, terms)?;
    let want = r::conv2d_backward_bias(&dy).unwrap();
    check(&tag("backward_bias"), &plan.backward_bias(&dy).unwrap(), &want, terms)?;
    Ok(())
}

/// Depthwise problems: groups = C = K.
fn depthwise_case() -> impl Strategy<Value = ConvCase> {
    conv_case(3, 5, 10).prop_map(|mut c| {
        let groups = c.params.groups;
        c.input_shape[1] = groups;
        c.weight_shape = [groups, 1, c.weight_shape[2], c.weight_shape[3]];
        c.geometry = convkit::Conv2dGeometry::new(&c.input_shape, &c.weight_shape, &c.params).unwrap();
        c
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn every_algorithm_matches_the_reference(case in conv_case(3, 5, 10)) {
        for level in SimdLevel::supported() {
            for algorithm in Algorithm::EXPLICIT.into_iter().chain([Algorithm::Auto]) {
                check_case(&case, algorithm, level)?;
            }
        }
    }

    #[test]
    fn wide_images_match_the_reference(case in conv_case(2, 4, 40)) {
        // Wide enough that the vectorised interior paths run, not just the borders.
        for level in SimdLevel::supported() {
            for algorithm in Algorithm::EXPLICIT {
                check_case(&case, algorithm, level)?;
            }
        }
    }

    #[test]
    fn depthwise_matches_the_reference(case in depthwise_case()) {
        for level in SimdLevel::supported() {
            for algorithm in Algorithm::EXPLICIT {
                check_case(&case, algorithm, level)?;
            }
        }
    }
}

#[test]
fn unsupported_algorithms_say_why() {
    let p = Conv2dParams::default();
    let e = Conv2dPlan::new(&[1, 4, 8, 8], &[8, 4, 3, 3], &p, &ConvOptions::default().algorithm(Algorithm::Depthwise))
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("groups = C = K"), "{e}");
    let plan = Conv2dPlan::new(&[1, 4, 8, 8], &[8, 4, 3, 3], &p, &ConvOptions::default()).unwrap();
    let x = Tensor::zeros(&[1, 3, 8, 8]).unwrap();
    let w = Tensor::zeros(&[8, 4, 3, 3]).unwrap();
    let e = plan.forward(&x, &w, None).unwrap_err();
    assert_eq!(e.to_string(), "conv2d input: expected [1, 4, 8, 8], got [1, 3, 8, 8]");
}

#[test]
fn auto_choice_follows_the_documented_heuristic() {
    let plan = |x: &[usize], w: &[usize], groups: usize| {
        Conv2dPlan::new(x, w, &Conv2dParams::default().groups(groups).padding(Padding::Same), &ConvOptions::default())
            .unwrap()
            .algorithm()
    };
    assert_eq!(plan(&[64, 1, 28, 28], &[6, 1, 5, 5], 1), Algorithm::Direct);
    assert_eq!(plan(&[1, 32, 112, 112], &[32, 1, 3, 3], 32), Algorithm::Depthwise);
    assert_eq!(plan(&[1, 64, 56, 56], &[64, 64, 3, 3], 1), Algorithm::Im2col);
    assert_eq!(plan(&[1, 1, 3, 3], &[1, 1, 2, 2], 1), Algorithm::Direct);
}

#[test]
fn bitwise_identical_for_any_thread_count() {
    // (input, weight, stride, padding, groups)
    type Shape = ([usize; 4], [usize; 4], usize, usize, usize);
    let shapes: [Shape; 5] = [
        ([8, 1, 28, 28], [6, 1, 5, 5], 1, 2, 1),
        ([4, 6, 14, 14], [16, 6, 5, 5], 1, 0, 1),
        ([1, 32, 30, 30], [32, 32, 3, 3], 1, 1, 1),
        ([2, 16, 31, 29], [16, 1, 3, 3], 2, 1, 16),
        ([3, 12, 17, 17], [24, 4, 3, 3], 2, 1, 3),
    ];
    for (xs, ws, stride, pad, groups) in shapes {
        let params = Conv2dParams::default().stride(stride, stride).padding(Padding::uniform(pad)).groups(groups);
        let x = Tensor::from_fn(&xs, |i| ((i * 37 % 101) as f32 - 50.0) / 50.0).unwrap();
        let w = Tensor::from_fn(&ws, |i| ((i * 13 % 29) as f32 - 14.0) / 14.0).unwrap();
        for level in SimdLevel::supported() {
            for algorithm in Algorithm::EXPLICIT {
                let opts = ConvOptions::default().algorithm(algorithm).simd(level);
                let Ok(seq) = Conv2dPlan::new(&xs, &ws, &params, &opts.parallelism(Parallelism::Sequential)) else {
                    continue;
                };
                let par = Conv2dPlan::new(&xs, &ws, &params, &opts).unwrap();
                let y = seq.forward(&x, &w, None).unwrap();
                let dy = Tensor::from_fn(y.shape(), |i| ((i * 7 % 23) as f32 - 11.0) / 11.0).unwrap();
                let want = (y, seq.backward_data(&dy, &w).unwrap(), seq.backward_weight(&x, &dy).unwrap());
                for threads in [1, 2, 3] {
                    let got = with_threads(threads, || {
                        (
                            par.forward(&x, &w, None).unwrap(),
                            par.backward_data(&dy, &w).unwrap(),
                            par.backward_weight(&x, &dy).unwrap(),
                        )
                    });
                    let same =
                        |a: &Tensor, b: &Tensor| a.data().iter().zip(b.data()).all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(
                        same(&got.0, &want.0) && same(&got.1, &want.1) && same(&got.2, &want.2),
                        "{}[{}] {xs:?}: {threads} threads differ",
                        algorithm.name(),
                        level.name()
                    );
                }
            }
        }
    }
}
