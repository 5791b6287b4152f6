//! Arbitrary shapes and parameters: `Conv2dGeometry::new` returns `Err` or a geometry whose
//! sizes obey the output-size formula; the reference forward then runs without panicking
//! (only on problems small enough to be quick).
#![no_main]

use convkit::{reference, Conv2dGeometry, Conv2dParams, Padding, Tensor};
use libfuzzer_sys::fuzz_target;

fn take(data: &mut &[u8]) -> usize {
    let (b, rest) = data.split_first().map(|(b, r)| (*b, r)).unwrap_or((0, &[]));
    *data = rest;
    // Mostly small values, sometimes huge ones to exercise overflow checks.
    if b >= 250 {
        usize::MAX >> (b - 250)
    } else {
        (b % 12) as usize
    }
}

fuzz_target!(|bytes: &[u8]| {
    let mut d = bytes;
    let input = [take(&mut d), take(&mut d), take(&mut d), take(&mut d)];
    let weight = [take(&mut d), take(&mut d), take(&mut d), take(&mut d)];
    let padding = match take(&mut d) % 3 {
        0 => Padding::Valid,
        1 => Padding::Same,
        _ => Padding::Explicit { top: take(&mut d), bottom: take(&mut d), left: take(&mut d), right: take(&mut d) },
    };
    let params = Conv2dParams {
        stride: (take(&mut d), take(&mut d)),
        dilation: (take(&mut d), take(&mut d)),
        padding,
        groups: take(&mut d),
    };
    let Ok(g) = Conv2dGeometry::new(&input, &weight, &params) else { return };
    for a in [g.h, g.w] {
        let padded = a.input + a.pad_before + a.pad_after;
        assert_eq!(a.output, (padded - a.dilation * (a.kernel - 1) - 1) / a.stride + 1);
    }
    let small = |shape: &[usize]| shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_some_and(|n| n < 1 << 20);
    if g.flops() < 1e6 && small(&input) && small(&weight) && small(&g.output_shape()) {
        let x = Tensor::zeros(&input).unwrap();
        let w = Tensor::zeros(&weight).unwrap();
        let y = reference::conv2d(&x, &w, None, &params).unwrap();
        assert_eq!(y.shape(), &g.output_shape());
    }
});
