//! Every convolution algorithm, forward and all backward passes, against the reference
//! loops over random problems from the shared strategies, on every SIMD path this CPU runs.

mod common;

use common::{cases, conv_case, ConvCase};
use convkit::check::Tolerance;
use convkit::conv::{Algorithm, Conv2dPlan, ConvOptions};
use convkit::parallel::with_threads;
use convkit::{reference as r, Conv2dParams, Error, Padding, Parallelism, SimdLevel, Tensor};
use proptest::prelude::*;

/// Winograd's transforms add and subtract up to 4 inputs and 3 weights before multiplying,
/// so its rounding error is bounded at this multiple of the direct tolerance (measured: it
/// passes at 1× over 400 property cases, and on a 64-channel layer its error is below
/// im2col's; see `winograd_error_is_measured_and_bounded`).
const WINOGRAD_LOOSEN: f32 = 4.0;

/// F(4×4, 3×3)'s transforms have coefficients up to 8 (output) and 5 (input), and its
/// filter transform divides by 6 and 24, so its bound is looser (measured in
/// `winograd_error_is_measured_and_bounded`).
const WINOGRAD4_LOOSEN: f32 = 16.0;

/// The tolerance multiple for the algorithm a plan runs.
fn loosen_for(algorithm: Algorithm) -> f32 {
    match algorithm {
        Algorithm::Winograd => WINOGRAD_LOOSEN,
        Algorithm::Winograd4 => WINOGRAD4_LOOSEN,
        _ => 1.0,
    }
}

fn check(what: &str, got: &Tensor, want: &Tensor, k: usize) -> Result<(), TestCaseError> {
    check_tol(what, got, want, Tolerance::reduction(k + 1).with_scale(2.0))
}

fn check_tol(what: &str, got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape(), "{}", what);
    // Scale 2: bias and inputs in [-1, 1].
    if let Err(m) = tol.check(what, got.data(), want.data()) {
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
            prop_assert!(
                matches!(algorithm, Algorithm::Depthwise | Algorithm::Winograd | Algorithm::Winograd4),
                "{} refused {:?}",
                algorithm.name(),
                case
            );
            return Ok(());
        }
        Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
    };
    let g = plan.geometry();
    let tag = |pass: &str| format!("{}[{}] {pass} {:?}", algorithm.name(), level.name(), case);
    let (x, w, b, dy) = (case.input(), case.weight(), case.bias(), case.grad_out());
    let want = r::conv2d(&x, &w, Some(&b), &case.params).unwrap();
    let loosen = loosen_for(plan.algorithm());
    let fwd_tol = Tolerance::reduction(g.reduction_len() + 1).with_scale(2.0).loosen(loosen);
    check_tol(&tag("forward"), &plan.forward(&x, &w, Some(&b)).unwrap(), &want, fwd_tol)?;
    let mut fused = Tensor::zeros(&g.output_shape()).unwrap();
    plan.forward_into(&x, &w, Some(&b), true, &mut fused).unwrap();
    check_tol(&tag("forward+relu"), &fused, &r::relu(&want), fwd_tol)?;
    // Weights packed once give bitwise the plain forward's result, fused or not.
    let packed = plan.pack_weights(&w).unwrap();
    let plain = plan.forward(&x, &w, Some(&b)).unwrap();
    let from_packed = plan.forward_packed(&x, &packed, Some(&b)).unwrap();
    prop_assert_eq!(from_packed.data(), plain.data(), "{}", tag("packed"));
    let mut fused_packed = Tensor::zeros(&g.output_shape()).unwrap();
    plan.forward_packed_into(&x, &packed, Some(&b), true, &mut fused_packed).unwrap();
    prop_assert_eq!(fused_packed.data(), fused.data(), "{}", tag("packed+relu"));
    let want = r::conv2d_backward_data(&dy, &w, &case.input_shape, &case.params).unwrap();
    let terms = g.k_per_group() * g.h.kernel * g.w.kernel;
    // Backward-data may run as a forward convolution that Auto gives to Winograd4.
    let bwd_tol = Tolerance::reduction(terms + 1).with_scale(2.0).loosen(WINOGRAD4_LOOSEN);
    check_tol(&tag("backward_data"), &plan.backward_data(&dy, &w).unwrap(), &want, bwd_tol)?;
    let want = r::conv2d_backward_weight(&x, &dy, &case.weight_shape, &case.params).unwrap();
    let terms = g.n * g.h.output * g.w.output;
    check(&tag("backward_weight"), &plan.backward_weight(&x, &dy).unwrap(), &want, terms)?;
    let want = r::conv2d_backward_bias(&dy).unwrap();
    check(&tag("backward_bias"), &plan.backward_bias(&dy).unwrap(), &want, terms)?;
    Ok(())
}

/// 3×3, stride-1, undilated problems (Winograd's domain), otherwise as random as the rest.
fn winograd_case() -> impl Strategy<Value = ConvCase> {
    conv_case(2, 3, 12).prop_map(|mut c| {
        c.params.stride = (1, 1);
        c.params.dilation = (1, 1);
        c.weight_shape[2] = 3;
        c.weight_shape[3] = 3;
        c.input_shape[2] = c.input_shape[2].max(3);
        c.input_shape[3] = c.input_shape[3].max(3);
        c.geometry = convkit::Conv2dGeometry::new(&c.input_shape, &c.weight_shape, &c.params).unwrap();
        c
    })
}

/// 3×3, stride-1 problems with the strategy's dilation (1–3): Winograd4 runs dilated ones
/// as one undilated convolution per dilation phase, each phase with its own padding.
fn dilated_winograd_case() -> impl Strategy<Value = ConvCase> {
    conv_case(2, 3, 14).prop_map(|mut c| {
        let (dh, dw) = c.params.dilation;
        c.params.stride = (1, 1);
        c.weight_shape[2] = 3;
        c.weight_shape[3] = 3;
        // Keep small inputs with large padding (phases with no input at all) where the
        // geometry allows them; otherwise make room for the dilated kernel.
        if convkit::Conv2dGeometry::new(&c.input_shape, &c.weight_shape, &c.params).is_err() {
            c.input_shape[2] = c.input_shape[2].max(2 * dh + 1);
            c.input_shape[3] = c.input_shape[3].max(2 * dw + 1);
        }
        c.geometry = convkit::Conv2dGeometry::new(&c.input_shape, &c.weight_shape, &c.params).unwrap();
        c
    })
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

/// 1×1 convolutions with stride 1 and no padding, whose column matrix is the input itself
/// (read in place by the forward and backward-weight GEMMs): channel counts on both sides
/// of the channel-vectorised paths' limits, groups.
fn pointwise_case() -> impl Strategy<Value = ConvCase> {
    ((1usize..3, 1usize..5, 1usize..20, 1usize..40), (1usize..8, 1usize..8), 1usize..3, any::<u64>()).prop_filter_map(
        "fits",
        |((n, cm, km, groups_hint), (h, w), groups, seed)| {
            let (c, k) = (cm * groups * (groups_hint % 4 + 1), km * groups);
            let params = Conv2dParams::default().groups(groups);
            let input_shape = [n, c, h, w];
            let weight_shape = [k, c / groups, 1, 1];
            let geometry = convkit::Conv2dGeometry::new(&input_shape, &weight_shape, &params).ok()?;
            Some(ConvCase { input_shape, weight_shape, params, geometry, seed })
        },
    )
}

/// Depthwise 3×3 problems with stride 1 and dilation 1 down the columns (the row-blocked
/// depthwise kernel): heights that leave 1 to 5 rows after blocks of 6 (AVX-512) or 1 or 2
/// after blocks of 3, widths on both sides of the 16-column tile, any stride and dilation
/// across, asymmetric padding.
fn depthwise3x3_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..3, 1usize..5, 1usize..17, 1usize..40),
        (1usize..4, 1usize..3),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3),
        any::<u64>(),
    )
        .prop_filter_map("fits", |((n, c, h, w), (sw, dw), (top, bottom, left, right), seed)| {
            let params = Conv2dParams::default().stride(1, sw).dilation(1, dw).groups(c).padding(Padding::Explicit {
                top,
                bottom,
                left,
                right,
            });
            let input_shape = [n, c, h, w];
            let weight_shape = [c, 1, 3, 3];
            let geometry = convkit::Conv2dGeometry::new(&input_shape, &weight_shape, &params).ok()?;
            Some(ConvCase { input_shape, weight_shape, params, geometry, seed })
        })
}

/// Problems for the channel-vectorised paths (backward-weight, and the direct forward for
/// multiples of 8 channels and reductions of at least 64 taps): one group, 8–32 output
/// channels (padded lanes when not a multiple of 8), reductions of 27 to 150 taps and few
/// pixels per image; strides, dilations and asymmetric padding as elsewhere.
fn kvec_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..4, 3usize..6, prop_oneof![6usize..25, (1usize..5).prop_map(|m| 8 * m)], 3usize..6, 3usize..6),
        (1usize..4, 1usize..4, 1usize..3, 1usize..3),
        (0usize..4, 0usize..4, 0usize..4, 0usize..4),
        (0usize..12, 0usize..12, any::<u64>()),
    )
        .prop_filter_map(
            "fits",
            |((n, c, k, r, s), (sh, sw, dh, dw), (top, bottom, left, right), (eh, ew, seed))| {
                let params = Conv2dParams::default().stride(sh, sw).dilation(dh, dw).padding(Padding::Explicit {
                    top,
                    bottom,
                    left,
                    right,
                });
                let (ih, iw) = (
                    ((r - 1) * dh + 1 + eh).saturating_sub(top + bottom).max(1),
                    ((s - 1) * dw + 1 + ew).saturating_sub(left + right).max(1),
                );
                let input_shape = [n, c, ih, iw];
                let weight_shape = [k, c, r, s];
                let geometry = convkit::Conv2dGeometry::new(&input_shape, &weight_shape, &params).ok()?;
                Some(ConvCase { input_shape, weight_shape, params, geometry, seed })
            },
        )
}

/// Long reductions (252 to 567 taps) and wide channel counts (8 to 128, odd vectors) on
/// one image: the channel-vectorised kernel's panels and row bands up to its 64 channels,
/// the output-width kernel beyond.
fn kvec_long_case() -> impl Strategy<Value = ConvCase> {
    ((1usize..3, 28usize..64, 1usize..17, 1usize..3, 0usize..3), (1usize..3, 3usize..12, 3usize..24, any::<u64>()))
        .prop_filter_map("fits", |((n, c, kv, stride, pad), (dilation, ih, iw, seed))| {
            // Many input channels (multiples of 8 read through the channel-interleaved
            // copy when padded or strided, other counts through the planar one), one or
            // two images, dilated or not, rows wide enough for the copy's 8-column
            // transposes.
            let params = Conv2dParams::default()
                .stride(stride, stride)
                .dilation(dilation, dilation)
                .padding(Padding::uniform(pad));
            let (input_shape, weight_shape) = ([n, c, ih, iw], [8 * kv, c, 3, 3]);
            let geometry = convkit::Conv2dGeometry::new(&input_shape, &weight_shape, &params).ok()?;
            Some(ConvCase { input_shape, weight_shape, params, geometry, seed })
        })
}

/// Problems big enough to run threaded (above the 2 MFLOP threshold), one or two images, so
/// that one image's work is split among threads (im2col's bands of output rows), with every
/// stride, dilation and asymmetric padding. (Bands that lie wholly in the padding are rare
/// here: `threaded_bands_in_the_padding` has them.)
fn threaded_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..3, 1usize..3, 8usize..33, 8usize..41),
        (1usize..6, 1usize..6, 1usize..5, 1usize..5, 1usize..4, 1usize..4),
        (0usize..7, 0usize..7, 0usize..7, 0usize..7),
        (0usize..30, 0usize..30, any::<u64>()),
    )
        .prop_filter_map(
            "threaded",
            |((n, groups, cg, kg), (r, s, sh, sw, dh, dw), (top, bottom, left, right), (eh, ew, seed))| {
                let padding = Padding::Explicit { top, bottom, left, right };
                let params = Conv2dParams { stride: (sh, sw), dilation: (dh, dw), padding, groups };
                let ih = ((r - 1) * dh + 1 + eh).saturating_sub(top + bottom).max(1);
                let iw = ((s - 1) * dw + 1 + ew).saturating_sub(left + right).max(1);
                let (input_shape, weight_shape) = ([n, groups * cg, ih, iw], [groups * kg, cg, r, s]);
                let geometry = convkit::Conv2dGeometry::new(&input_shape, &weight_shape, &params).ok()?;
                let flops =
                    2 * geometry.n * geometry.k * geometry.reduction_len() * geometry.h.output * geometry.w.output;
                (flops >= 3_000_000 && geometry.h.output >= 3).then_some(ConvCase {
                    input_shape,
                    weight_shape,
                    params,
                    geometry,
                    seed,
                })
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    /// Threads split one image's work without changing a bit of the forward result.
    #[test]
    fn threaded_forward_is_bitwise_the_sequential_one(case in threaded_case()) {
        check_threads_bitwise(&case)?;
    }
}

/// Every explicit algorithm's forward on 2 and 3 threads against its sequential plan, bit
/// for bit, on every level.
fn check_threads_bitwise(case: &ConvCase) -> Result<(), TestCaseError> {
    let (x, w, b) = (case.input(), case.weight(), case.bias());
    for level in SimdLevel::supported() {
        for algorithm in Algorithm::EXPLICIT {
            let opts = ConvOptions::default().algorithm(algorithm).simd(level);
            let sequential = opts.parallelism(Parallelism::Sequential);
            let Ok(seq) = Conv2dPlan::new(&case.input_shape, &case.weight_shape, &case.params, &sequential) else {
                continue;
            };
            let par = Conv2dPlan::new(&case.input_shape, &case.weight_shape, &case.params, &opts).unwrap();
            let want = seq.forward(&x, &w, Some(&b)).unwrap();
            for threads in [2, 3] {
                let got = with_threads(threads, || par.forward(&x, &w, Some(&b)).unwrap());
                let same = got.data().iter().zip(want.data()).all(|(p, q)| p.to_bits() == q.to_bits());
                prop_assert!(same, "{}[{}] {threads} threads differ: {:?}", algorithm.name(), level.name(), case);
            }
        }
    }
    Ok(())
}

/// One input row under six rows of padding on each side: with 2 or 3 threads, im2col's
/// first and last bands of output rows read padding only.
#[test]
fn threaded_bands_in_the_padding() {
    let padding = Padding::Explicit { top: 6, bottom: 6, left: 1, right: 1 };
    let params = Conv2dParams { padding, ..Conv2dParams::default() };
    let case = ConvCase::fixed([1, 32, 1, 40], [32, 32, 1, 3], params, 3);
    check_threads_bitwise(&case).unwrap();
}

proptest! {
    // Each case times every candidate for ≥ 20 ms once: few cases.
    #![proptest_config(ProptestConfig { cases: cases(8), ..ProptestConfig::default() })]

    #[test]
    fn measured_choice_matches_the_reference(case in conv_case(3, 5, 10)) {
        for level in SimdLevel::supported() {
            check_case(&case, Algorithm::Measured, level)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    #[test]
    fn channel_vectorised_long_reductions_match_the_reference(case in kvec_long_case()) {
        for level in SimdLevel::supported() {
            check_case(&case, Algorithm::Direct, level)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn channel_vectorised_paths_match_the_reference(case in kvec_case()) {
        for level in SimdLevel::supported() {
            check_case(&case, Algorithm::Im2col, level)?;
            check_case(&case, Algorithm::Direct, level)?;
        }
    }

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
    fn winograd_shapes_match_the_reference(case in winograd_case()) {
        for level in SimdLevel::supported() {
            for algorithm in [Algorithm::Winograd, Algorithm::Winograd4, Algorithm::Auto] {
                check_case(&case, algorithm, level)?;
            }
        }
    }

    #[test]
    fn dilated_winograd4_matches_the_reference(case in dilated_winograd_case()) {
        for level in SimdLevel::supported() {
            check_case(&case, Algorithm::Winograd4, level)?;
        }
    }

    #[test]
    fn pointwise_matches_the_reference(case in pointwise_case()) {
        for level in SimdLevel::supported() {
            for algorithm in [Algorithm::Im2col, Algorithm::Direct, Algorithm::Auto] {
                check_case(&case, algorithm, level)?;
            }
        }
    }

    #[test]
    fn depthwise_3x3_rows_match_the_reference(case in depthwise3x3_case()) {
        for level in SimdLevel::supported() {
            for algorithm in [Algorithm::Depthwise, Algorithm::Direct, Algorithm::Auto] {
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

/// Output rows that the channel-vectorised forward ends with 5-pixel tiles (6 otherwise):
/// 5, 10 and 15 wide (LeNet's C3, a wider 5×5 layer and a strided one: 5-pixel tiles only),
/// 11, 27 and 28 wide (6-pixel tiles, then one, three or two of 5: a stride-2 ResNet
/// layer's rows of 27 and 28; the last case with 16 channels, read through the interleaved
/// copy by the blocked tile), on every level.
#[test]
fn five_pixel_tiles_match_the_reference() {
    let s2 = Conv2dParams::default().stride(2, 2);
    let cases = [
        ([2, 6, 14, 14], [16, 6, 5, 5], Conv2dParams::default()),
        ([1, 3, 19, 19], [8, 3, 5, 5], Conv2dParams::default()),
        ([1, 4, 21, 21], [24, 4, 4, 4], s2.padding(Padding::uniform(1))),
        ([1, 8, 3, 13], [16, 8, 3, 3], Conv2dParams::default()),
        ([1, 8, 7, 55], [16, 8, 3, 3], s2),
        ([1, 8, 6, 56], [8, 8, 3, 3], s2.padding(Padding::uniform(1))),
        ([1, 16, 7, 55], [16, 16, 3, 3], s2),
    ];
    for (seed, (input_shape, weight_shape, params)) in cases.into_iter().enumerate() {
        let case = ConvCase::fixed(input_shape, weight_shape, params, seed as u64);
        assert!(!case.geometry.w.output.is_multiple_of(6), "{input_shape:?}");
        for level in SimdLevel::supported() {
            check_case(&case, Algorithm::Direct, level).unwrap();
        }
    }
}

/// The AVX-512 channel-vectorised forward cuts a row into the fewest tiles of 6 to 12
/// pixels and takes 32 channels a pass, then 16, then (AVX2) 8: rows of 6 to 27 pixels,
/// 16 to 56 channels, strides 1 to 4, read in place, through the planar copy and (16 input
/// channels, padded or strided) through the interleaved copy, on every level; with up to
/// 136 channels for the backward-weight passes.
#[test]
fn wide_channel_tiles_match_the_reference() {
    let (s1, s2) = (Conv2dParams::default(), Conv2dParams::default().stride(2, 2));
    let cases = [
        ([1, 6, 6, 10], [16, 6, 5, 5], s1),
        ([1, 6, 5, 11], [32, 6, 5, 5], s1),
        ([1, 6, 5, 16], [32, 6, 5, 5], s1),
        ([2, 8, 4, 14], [48, 8, 3, 3], s1.padding(Padding::uniform(1))),
        ([1, 8, 5, 15], [56, 8, 3, 3], s1),
        ([1, 16, 7, 55], [32, 16, 3, 3], s2),
        ([1, 16, 6, 26], [48, 16, 3, 3], s2.padding(Padding::uniform(1))),
        ([1, 16, 5, 14], [40, 16, 3, 3], s1.padding(Padding::Explicit { top: 0, bottom: 1, left: 1, right: 0 })),
        // Strides 3 and 4: an AlexNet-like stem (planar copy) and an interleaved layer.
        ([1, 3, 27, 63], [16, 3, 11, 11], Conv2dParams::default().stride(4, 4).padding(Padding::uniform(2))),
        ([1, 16, 9, 40], [32, 16, 3, 3], Conv2dParams::default().stride(3, 3).padding(Padding::uniform(1))),
        // 96 and 136 channels: backward-weight takes them on the AVX-512 path in passes of
        // 32, then 16, then 8.
        ([2, 8, 9, 20], [96, 8, 3, 3], s2.padding(Padding::uniform(1))),
        ([1, 8, 7, 13], [136, 8, 3, 3], s1),
    ];
    for (seed, (input_shape, weight_shape, params)) in cases.into_iter().enumerate() {
        let case = ConvCase::fixed(input_shape, weight_shape, params, 100 + seed as u64);
        for level in SimdLevel::supported() {
            check_case(&case, Algorithm::Direct, level).unwrap();
        }
    }
}

/// Padded layers whose inside the AVX-512 tiles read in place, the frame from copies:
/// frame rows above and below, frame columns on one side or both, several columns a side
/// (padding wider than the stride), padding as wide as the kernel (outputs reading only
/// zeros), unequal strides and dilations, an AlexNet-like stem, rows too few to tile
/// down a column when split among threads, and weights packed by several threads. On
/// every level (the others take the padded copy) against the reference, and bitwise the
/// same on 1, 2 and 3 threads.
#[test]
fn padded_layers_read_in_place_match_the_reference() {
    let p = Conv2dParams::default();
    let ex = |top, bottom, left, right| Padding::Explicit { top, bottom, left, right };
    let cases = [
        ([1, 16, 28, 28], [48, 16, 3, 3], p.stride(2, 2).padding(Padding::uniform(1))),
        ([1, 4, 12, 20], [32, 4, 3, 3], p.padding(Padding::uniform(1))),
        ([4, 16, 20, 20], [32, 16, 3, 3], p.padding(Padding::uniform(1))),
        ([1, 3, 20, 30], [16, 3, 5, 5], p.padding(ex(4, 0, 3, 5))),
        ([2, 3, 27, 63], [16, 3, 11, 11], p.stride(4, 4).padding(Padding::uniform(2))),
        ([1, 4, 16, 24], [48, 4, 3, 3], p.stride(1, 2).dilation(2, 1).padding(ex(2, 1, 0, 3))),
        ([1, 4, 30, 18], [16, 4, 3, 3], p.stride(4, 1).dilation(1, 2).padding(ex(0, 2, 2, 2))),
        ([1, 16, 9, 30], [48, 16, 3, 3], p.padding(Padding::uniform(1))),
        ([1, 6, 13, 13], [32, 6, 3, 3], p.stride(2, 2).padding(Padding::Same)),
        // Weights large enough (K·C·R·S ≥ 2^15) to be packed by several threads.
        ([1, 64, 14, 14], [64, 64, 3, 3], p.stride(2, 2).padding(Padding::uniform(1))),
    ];
    for (seed, (input_shape, weight_shape, params)) in cases.into_iter().enumerate() {
        let case = ConvCase::fixed(input_shape, weight_shape, params, 300 + seed as u64);
        let (x, w, b) = (case.input(), case.weight(), case.bias());
        for level in SimdLevel::supported() {
            check_case(&case, Algorithm::Direct, level).unwrap();
            let opts = ConvOptions::default().algorithm(Algorithm::Direct).simd(level);
            let plan = Conv2dPlan::new(&input_shape, &weight_shape, &params, &opts).unwrap();
            let one = with_threads(1, || plan.forward(&x, &w, Some(&b)).unwrap());
            for threads in [2, 3] {
                let got = with_threads(threads, || plan.forward(&x, &w, Some(&b)).unwrap());
                let same = got.data().iter().zip(one.data()).all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(same, "{}: {threads} threads differ from 1 on {input_shape:?}", level.name());
            }
        }
    }
}

/// The channel-vectorised backward-weight transposes dY in registers for up to 16 output
/// channels, the lanes past K repeating the last channel: K = 6 and 7 (LeNet's C1, one lane
/// vector), 12 (two), 16 (whole), padded and unpadded (read in place), on every level.
#[test]
fn few_channel_backward_weight_matches_the_reference() {
    let cases = [
        ([2, 1, 28, 28], [6, 1, 5, 5], Conv2dParams::default().padding(Padding::uniform(2))),
        ([2, 3, 12, 11], [7, 3, 3, 3], Conv2dParams::default()),
        ([1, 4, 9, 10], [12, 4, 3, 3], Conv2dParams::default().stride(2, 1).padding(Padding::uniform(1))),
        ([2, 6, 14, 14], [16, 6, 5, 5], Conv2dParams::default()),
    ];
    for (seed, (input_shape, weight_shape, params)) in cases.into_iter().enumerate() {
        let case = ConvCase::fixed(input_shape, weight_shape, params, seed as u64);
        for level in SimdLevel::supported() {
            check_case(&case, Algorithm::Direct, level).unwrap();
        }
    }
}

/// Packed weights run only on plans with the algorithm, instruction set and weight shape
/// they were packed for; anything else is an error naming both, never a wrong result.
#[test]
fn packed_weights_belong_to_their_plan() {
    let p = Conv2dParams::default().padding(Padding::uniform(1));
    let (xs, ws) = ([1, 32, 8, 8], [32, 32, 3, 3]);
    let plan = |a: Algorithm| Conv2dPlan::new(&xs, &ws, &p, &ConvOptions::default().algorithm(a)).unwrap();
    let w = Tensor::from_fn(&ws, |i| (i % 7) as f32 * 0.1).unwrap();
    let x = Tensor::from_fn(&xs, |i| (i % 5) as f32 - 2.0).unwrap();
    let w4 = plan(Algorithm::Winograd4).pack_weights(&w).unwrap();
    assert_eq!(w4.algorithm(), Algorithm::Winograd4);
    for other in [Algorithm::Im2col, Algorithm::Winograd, Algorithm::Direct] {
        let err = plan(other).forward_packed(&x, &w4, None).unwrap_err().to_string();
        assert!(err.contains("winograd4") && err.contains(other.name()), "{err}");
    }
    // Another batch and image size that plans the same algorithm takes the same weights.
    let big =
        Conv2dPlan::new(&[2, 32, 16, 16], &ws, &p, &ConvOptions::default().algorithm(Algorithm::Winograd4)).unwrap();
    let x2 = Tensor::from_fn(&[2, 32, 16, 16], |i| (i % 3) as f32).unwrap();
    assert_eq!(big.forward_packed(&x2, &w4, None).unwrap().data(), big.forward(&x2, &w, None).unwrap().data());
    // A weight of another shape is refused when packing, and its packing by another plan.
    let narrow = Tensor::zeros(&[16, 32, 3, 3]).unwrap();
    assert!(matches!(plan(Algorithm::Im2col).pack_weights(&narrow), Err(Error::Shape { .. })));
    let other =
        Conv2dPlan::new(&xs, &[16, 32, 3, 3], &p, &ConvOptions::default().algorithm(Algorithm::Im2col)).unwrap();
    let packed = other.pack_weights(&narrow).unwrap();
    assert!(matches!(plan(Algorithm::Im2col).forward_packed(&x, &packed, None), Err(Error::Shape { .. })));
    assert!(matches!(plan(Algorithm::Im2col).forward_packed(&xs_wrong(), &w4, None), Err(Error::Shape { .. })));
}

fn xs_wrong() -> Tensor {
    Tensor::zeros(&[1, 31, 8, 8]).unwrap()
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
fn winograd4_long_reductions_accumulate_in_blocks() {
    // More than 256 input channels: Winograd4 cuts each point's product into blocks of 256
    // channels accumulated into M in a fixed order (the proptests' channels never get there).
    let params = Conv2dParams::default().padding(Padding::uniform(1));
    let case = ConvCase::fixed([1, 300, 7, 6], [5, 300, 3, 3], params, 11);
    for level in SimdLevel::supported() {
        check_case(&case, Algorithm::Winograd4, level).unwrap();
    }
}

#[test]
fn winograd4_wide_layers_take_several_slivers_a_chunk() {
    // Transformed filters larger than L2 (96 × 96 channels: 1.3 MB): chunks of at least 4
    // slivers of 16 tiles, over several images (the proptests' filters are far smaller).
    let params = Conv2dParams::default().padding(Padding::uniform(1));
    let case = ConvCase::fixed([4, 96, 22, 21], [96, 96, 3, 3], params, 5);
    let (x, w, b) = (case.input(), case.weight(), case.bias());
    let want = r::conv2d(&x, &w, Some(&b), &params).unwrap();
    let tol = Tolerance::reduction(case.geometry.reduction_len() + 1).with_scale(2.0).loosen(WINOGRAD4_LOOSEN);
    for level in SimdLevel::supported() {
        let opts = ConvOptions::default().algorithm(Algorithm::Winograd4).simd(level);
        let plan = Conv2dPlan::new(&case.input_shape, &case.weight_shape, &params, &opts).unwrap();
        check_tol(&format!("winograd4[{}]", level.name()), &plan.forward(&x, &w, Some(&b)).unwrap(), &want, tol)
            .unwrap();
    }
}

#[test]
fn dilation_phases_without_inputs() {
    // Inputs narrower (or shorter) than the dilation, with padding wide enough for the
    // kernel: some of Winograd4's dilation phases hold no input at all, only padding (the
    // fuzzer's first find in the phase gather).
    let cases = [
        ([1, 2, 5, 1], [3, 2, 3, 3], (1, 2), Padding::Explicit { top: 1, bottom: 1, left: 2, right: 2 }),
        ([2, 1, 1, 2], [2, 1, 3, 3], (3, 1), Padding::Explicit { top: 3, bottom: 3, left: 1, right: 1 }),
        ([1, 3, 2, 2], [4, 3, 3, 3], (3, 3), Padding::Explicit { top: 4, bottom: 2, left: 2, right: 5 }),
        ([1, 2, 4, 1], [2, 2, 3, 3], (1, 3), Padding::Explicit { top: 1, bottom: 1, left: 3, right: 3 }),
    ];
    for (seed, (input_shape, weight_shape, dilation, padding)) in cases.into_iter().enumerate() {
        let params = Conv2dParams { dilation, padding, ..Conv2dParams::default() };
        let case = ConvCase::fixed(input_shape, weight_shape, params, seed as u64);
        for level in SimdLevel::supported() {
            check_case(&case, Algorithm::Winograd4, level).unwrap();
        }
    }
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
    assert_eq!(plan(&[1, 64, 56, 56], &[64, 64, 3, 3], 1), Algorithm::Winograd4);
    assert_eq!(plan(&[1, 64, 56, 56], &[128, 64, 1, 1], 1), Algorithm::Im2col);
    assert_eq!(plan(&[1, 1, 3, 3], &[1, 1, 2, 2], 1), Algorithm::Direct);
    // Strided layers with whole vectors of output channels: Direct with AVX2 or AVX-512,
    // im2col on the portable level.
    let strided = |level: SimdLevel, ws: [usize; 4], stride: usize| {
        let opts = ConvOptions::default().simd(level);
        Conv2dPlan::new(&[1, 64, 56, 56], &ws, &Conv2dParams::default().stride(stride, stride), &opts)
            .unwrap()
            .algorithm()
    };
    for level in SimdLevel::supported() {
        let want = if level >= SimdLevel::Avx2 { Algorithm::Direct } else { Algorithm::Im2col };
        assert_eq!(strided(level, [128, 64, 3, 3], 2), want, "{level:?}");
        assert_eq!(strided(level, [64, 64, 3, 3], 4), want, "{level:?}");
        // 1×1 layers subsample while packing for the GEMM.
        assert_eq!(strided(level, [128, 64, 1, 1], 2), Algorithm::Im2col, "{level:?}");
    }
}

#[test]
fn bitwise_identical_for_any_thread_count() {
    // (input, weight, stride, padding, groups)
    type Shape = ([usize; 4], [usize; 4], usize, usize, usize);
    let shapes: [Shape; 6] = [
        // One image, stride 2: backward-data's col2im shares channels among threads.
        ([1, 32, 40, 40], [32, 32, 3, 3], 2, 1, 1),
        ([8, 1, 28, 28], [6, 1, 5, 5], 1, 2, 1),
        // LeNet C3 with enough images (and flops) to run whole images side by side.
        ([8, 6, 14, 14], [16, 6, 5, 5], 1, 0, 1),
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

#[test]
fn winograd_error_is_measured_and_bounded() {
    // A realistic layer: 64 → 32 channels, 3×3, "same" padding, inputs and weights in [-1, 1].
    let params = Conv2dParams::default().padding(Padding::Same);
    let (xs, ws) = ([2, 64, 20, 20], [32, 64, 3, 3]);
    let x = Tensor::from_fn(&xs, |i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0).unwrap();
    let w = Tensor::from_fn(&ws, |i| ((i * 104729 % 1009) as f32 / 504.5) - 1.0).unwrap();
    let want = r::conv2d(&x, &w, None, &params).unwrap();
    let max_err = |algorithm: Algorithm| {
        let plan = Conv2dPlan::new(&xs, &ws, &params, &ConvOptions::default().algorithm(algorithm)).unwrap();
        let got = plan.forward(&x, &w, None).unwrap();
        got.data().iter().zip(want.data()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max)
    };
    let (wino, wino4, gemm) = (max_err(Algorithm::Winograd), max_err(Algorithm::Winograd4), max_err(Algorithm::Im2col));
    let bound = Tolerance::reduction(64 * 9).rel;
    println!(
        "max |error|: winograd {wino:.3e}, winograd4 {wino4:.3e}, im2col {gemm:.3e} (ratios {:.2}, {:.2}); \
         direct tolerance {bound:.3e}",
        wino / gemm,
        wino4 / gemm
    );
    assert!(
        wino <= WINOGRAD_LOOSEN * bound,
        "winograd error {wino} above {WINOGRAD_LOOSEN}× the direct tolerance {bound}"
    );
    assert!(
        wino4 <= WINOGRAD4_LOOSEN * bound,
        "winograd4 error {wino4} above {WINOGRAD4_LOOSEN}× the direct tolerance {bound}"
    );
    assert!(wino > 0.0 && wino4 > 0.0 && gemm > 0.0, "a float sum this long cannot be exact");
}
