//! The fast pooling kernels against the reference loops over random problems, and their
//! parallel split against the sequential one, bit for bit.

mod common;

use common::{cases, pool_case, SplitMix};
use convkit::check::Tolerance;
use convkit::parallel::with_threads;
use convkit::{pool, reference as r, Padding, Pool2dParams, Tensor};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), ..ProptestConfig::default() })]

    #[test]
    fn fast_pooling_matches_the_reference(case in pool_case()) {
        let (x, dy, p) = (case.input(), case.grad_out(), case.params);
        let (y, arg) = pool::max_pool2d(&x, &p).unwrap();
        prop_assert_eq!(&y, &r::max_pool2d(&x, &p).unwrap());
        prop_assert_eq!(&pool::max_pool2d_values(&x, &p).unwrap(), &y);
        let dx = pool::max_pool2d_backward(&dy, &arg, x.shape()).unwrap();
        let want = r::max_pool2d_backward(&x, &dy, &p).unwrap();
        let window = p.kernel.0 * p.kernel.1;
        Tolerance::reduction(window).check("max_pool2d backward", dx.data(), want.data()).unwrap();
        let ya = pool::avg_pool2d(&x, &p).unwrap();
        Tolerance::reduction(window).check("avg_pool2d", ya.data(), r::avg_pool2d(&x, &p).unwrap().data()).unwrap();
        let da = pool::avg_pool2d_backward(&dy, x.shape(), &p).unwrap();
        let want = r::avg_pool2d_backward(&dy, x.shape(), &p).unwrap();
        Tolerance::reduction(window).check("avg_pool2d backward", da.data(), want.data()).unwrap();
    }
}

#[test]
fn parallel_planes_are_bitwise_identical() {
    // Large enough that the planes are split among threads.
    let x = SplitMix::new(3).tensor(&[16, 32, 30, 30]);
    for p in [Pool2dParams::new(2, 2), Pool2dParams::new(3, 3).stride(2, 2).padding(Padding::uniform(1))] {
        let one = with_threads(1, || {
            (
                pool::max_pool2d(&x, &p).unwrap(),
                pool::max_pool2d_values(&x, &p).unwrap(),
                pool::avg_pool2d(&x, &p).unwrap(),
            )
        });
        let two = with_threads(2, || {
            (
                pool::max_pool2d(&x, &p).unwrap(),
                pool::max_pool2d_values(&x, &p).unwrap(),
                pool::avg_pool2d(&x, &p).unwrap(),
            )
        });
        let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!((bits(&one.0 .0), &one.0 .1), (bits(&two.0 .0), &two.0 .1));
        assert_eq!(bits(&one.1), bits(&two.1));
        assert_eq!(bits(&one.2), bits(&two.2));
        assert_eq!(one.0 .0, r::max_pool2d(&x, &p).unwrap());
    }
}
