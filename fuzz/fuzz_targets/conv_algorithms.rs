//! Arbitrary small convolution problems through every algorithm, forward and backward:
//! each must return `Err` (and only `Unsupported` for a valid geometry) or match the
//! reference loops within the crate's stated tolerance.
#![no_main]

use convkit::check::Tolerance;
use convkit::conv::{Algorithm, Conv2dPlan, ConvOptions};
use convkit::{reference, Conv2dGeometry, Conv2dParams, Error, Padding, Tensor};
use libfuzzer_sys::fuzz_target;

fn take(data: &mut &[u8], modulo: u8) -> usize {
    let (b, rest) = data.split_first().map(|(b, r)| (*b, r)).unwrap_or((0, &[]));
    *data = rest;
    (b % modulo) as usize
}

fuzz_target!(|bytes: &[u8]| {
    let mut d = bytes;
    let groups = 1 + take(&mut d, 3);
    // Now and then 16, 32 or 48 output channels a group: the channel-vectorised kernels
    // (and their AVX-512 tiles) take only whole vectors of output channels.
    let cg = 1 + take(&mut d, 4);
    let kg = match take(&mut d, 8) {
        0 => 16 * (1 + take(&mut d, 3)),
        v => 1 + v % 4,
    };
    let input = [take(&mut d, 3), groups * cg, 1 + take(&mut d, 12), 1 + take(&mut d, 12)];
    let weight = [groups * kg, cg, 1 + take(&mut d, 5), 1 + take(&mut d, 5)];
    let padding = match take(&mut d, 3) {
        0 => Padding::Valid,
        1 => Padding::Same,
        _ => Padding::Explicit {
            top: take(&mut d, 7),
            bottom: take(&mut d, 7),
            left: take(&mut d, 7),
            right: take(&mut d, 7),
        },
    };
    let params = Conv2dParams {
        stride: (1 + take(&mut d, 4), 1 + take(&mut d, 4)),
        dilation: (1 + take(&mut d, 3), 1 + take(&mut d, 3)),
        padding,
        groups,
    };
    let Ok(g) = Conv2dGeometry::new(&input, &weight, &params) else { return };
    let seed = d.iter().fold(7u32, |h, &b| h.wrapping_mul(31).wrapping_add(b as u32));
    let fill = |shape: &[usize], salt: u32| {
        Tensor::from_fn(shape, |i| {
            (((i as u32).wrapping_mul(2654435761).wrapping_add(seed ^ salt) >> 8) % 2001) as f32 / 1000.0 - 1.0
        })
        .unwrap()
    };
    let (x, w, b) = (fill(&input, 1), fill(&weight, 2), fill(&[weight[0]], 3));
    let dy = fill(&g.output_shape(), 4);
    let want = reference::conv2d(&x, &w, Some(&b), &params).unwrap();
    let want_dx = reference::conv2d_backward_data(&dy, &w, &input, &params).unwrap();
    let want_dw = reference::conv2d_backward_weight(&x, &dy, &weight, &params).unwrap();
    for algorithm in [Algorithm::Auto].into_iter().chain(Algorithm::EXPLICIT) {
        let plan = match Conv2dPlan::new(&input, &weight, &params, &ConvOptions::default().algorithm(algorithm)) {
            Ok(p) => p,
            Err(Error::Unsupported { .. }) => continue,
            Err(e) => panic!("{} refused a valid geometry: {e}", algorithm.name()),
        };
        // Winograd's and Winograd4's bounds (tests/conv_props.rs); backward-data may run
        // as a forward convolution that Auto gives to Winograd4.
        let loosen: f32 = match plan.algorithm() {
            Algorithm::Winograd => 4.0,
            Algorithm::Winograd4 => 16.0,
            _ => 1.0,
        };
        let tol = |k: usize| Tolerance::reduction(k + 1).with_scale(2.0).loosen(loosen.max(4.0));
        let bwd_tol = |k: usize| Tolerance::reduction(k + 1).with_scale(2.0).loosen(16.0);
        let y = plan.forward(&x, &w, Some(&b)).unwrap();
        tol(g.reduction_len()).check("forward", y.data(), want.data()).unwrap();
        // Weights packed once: bitwise the per-call forward.
        let packed = plan.pack_weights(&w).unwrap();
        assert_eq!(plan.forward_packed(&x, &packed, Some(&b)).unwrap().data(), y.data(), "packed forward");
        let dx = plan.backward_data(&dy, &w).unwrap();
        bwd_tol(g.k_per_group() * g.h.kernel * g.w.kernel).check("backward_data", dx.data(), want_dx.data()).unwrap();
        let dw = plan.backward_weight(&x, &dy).unwrap();
        tol(g.n * g.h.output * g.w.output).check("backward_weight", dw.data(), want_dw.data()).unwrap();
    }
});
