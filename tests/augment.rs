//! Augmentation: shapes and ranges kept, identities exact, seeded reproducibility across
//! thread counts, geometry against a hand-written inverse map, bad parameters rejected.

mod common;

use common::{cases, SplitMix};
use convkit::augment::{self, AffineParams, Pipeline, RandomAffine, Transform, PRESETS};
use convkit::parallel::with_threads;
use convkit::{Error, Tensor};
use proptest::prelude::*;

/// Images with values in [0, 1].
fn images(shape: &[usize], seed: u64) -> Tensor {
    let mut r = SplitMix::new(seed);
    Tensor::from_fn(shape, |_| 0.5 * (r.uniform() + 1.0)).unwrap()
}

/// Every transform, with magnitudes large enough to do something.
fn every_transform() -> Vec<Transform> {
    vec![
        Transform::rotation(30.0),
        Transform::translation(3.0),
        Transform::scale(0.7, 1.3),
        Transform::shear(20.0),
        Transform::Affine(RandomAffine { degrees: 15.0, translate: 2.0, scale: (0.9, 1.1), shear: 10.0 }),
        Transform::elastic(34.0, 4.0),
        Transform::elastic(8.0, 0.0),
        Transform::HorizontalFlip,
        Transform::CropPad { pad: 4 },
        Transform::brightness_contrast(0.3, 0.5),
        Transform::noise(0.2),
        Transform::erase((0.1, 0.3), (0.3, 3.3)),
    ]
}

#[test]
fn each_transform_keeps_shape_and_value_range() {
    for shape in [[3, 1, 28, 28], [2, 3, 17, 9], [1, 1, 1, 1], [2, 2, 1, 5]] {
        for t in every_transform() {
            let pipe = Pipeline::builder().background(0.0).range(0.0, 1.0).push(t.clone()).build().unwrap();
            let mut x = images(&shape, 3);
            pipe.apply_batch(&mut x, 11).unwrap();
            assert_eq!(x.shape(), &shape);
            assert!(x.data().iter().all(|v| (0.0..=1.0).contains(v)), "{t:?} on {shape:?} left [0, 1]");
        }
    }
}

#[test]
fn transforms_change_the_image() {
    let x = images(&[2, 1, 28, 28], 5);
    for t in every_transform() {
        let pipe = Pipeline::builder().background(0.0).range(0.0, 1.0).push(t.clone()).build().unwrap();
        let mut y = x.clone();
        pipe.apply_batch(&mut y, 1).unwrap();
        assert_ne!(y.data(), x.data(), "{t:?} did nothing");
    }
}

#[test]
fn identity_parameters_give_back_the_input_exactly() {
    let identities = [
        Transform::Affine(RandomAffine::default()),
        Transform::rotation(0.0),
        Transform::translation(0.0),
        Transform::scale(1.0, 1.0),
        Transform::shear(0.0),
        Transform::elastic(0.0, 4.0),
        Transform::CropPad { pad: 0 },
        Transform::brightness_contrast(0.0, 0.0),
        Transform::noise(0.0),
        Transform::erase((0.0, 0.0), (1.0, 1.0)),
    ];
    for shape in [[2, 1, 28, 28], [1, 3, 10, 7]] {
        let x = images(&shape, 9);
        for t in &identities {
            let pipe = Pipeline::builder().background(0.0).range(0.0, 1.0).push(t.clone()).build().unwrap();
            let mut y = x.clone();
            pipe.apply_batch(&mut y, 123).unwrap();
            assert_eq!(y.data(), x.data(), "{t:?}");
        }
        // Probability 0 never applies, and a flip twice is the identity.
        let never = Pipeline::builder().push_with_probability(0.0, Transform::rotation(45.0)).build().unwrap();
        let twice =
            Pipeline::builder().push(Transform::HorizontalFlip).push(Transform::HorizontalFlip).build().unwrap();
        for pipe in [never, twice] {
            let mut y = x.clone();
            pipe.apply_batch(&mut y, 5).unwrap();
            assert_eq!(y.data(), x.data());
        }
        assert_eq!(augment::warp_affine(&x, &AffineParams::default(), 0.0).unwrap().data(), x.data());
    }
}

#[test]
fn flip_mirrors_exactly() {
    let x = Tensor::from_fn(&[1, 2, 3, 4], |i| i as f32).unwrap();
    let mut y = x.clone();
    Pipeline::builder().push(Transform::HorizontalFlip).build().unwrap().apply_batch(&mut y, 0).unwrap();
    for (row_x, row_y) in x.data().chunks(4).zip(y.data().chunks(4)) {
        let mirrored: Vec<f32> = row_x.iter().rev().copied().collect();
        assert_eq!(row_y, &mirrored[..]);
    }
}

#[test]
fn crop_pad_shifts_by_whole_pixels_filling_with_background() {
    let x = images(&[64, 1, 8, 8], 2);
    let mut y = x.clone();
    Pipeline::builder()
        .background(-1.0)
        .push(Transform::CropPad { pad: 2 })
        .build()
        .unwrap()
        .apply_batch(&mut y, 4)
        .unwrap();
    for (a, b) in x.data().chunks(64).zip(y.data().chunks(64)) {
        // Find the shift that explains the output.
        let found = (-2..=2isize).flat_map(|dy| (-2..=2isize).map(move |dx| (dy, dx))).find(|&(dy, dx)| {
            (0..8isize).all(|yy| {
                (0..8isize).all(|xx| {
                    let (sy, sx) = (yy - dy, xx - dx);
                    let want =
                        if (0..8).contains(&sy) && (0..8).contains(&sx) { a[(sy * 8 + sx) as usize] } else { -1.0 };
                    b[(yy * 8 + xx) as usize] == want
                })
            })
        });
        assert!(found.is_some(), "output is not a whole-pixel shift of the input");
    }
}

#[test]
fn rotation_by_90_degrees_moves_a_marked_pixel() {
    // 29×29: the centre is pixel (14, 14). A pixel 10 above it goes 10 to its left under a
    // counter-clockwise quarter turn (as displayed), and 10 to its right under a clockwise one.
    let mut x = Tensor::zeros(&[1, 1, 29, 29]).unwrap();
    x.data_mut()[4 * 29 + 14] = 1.0;
    let argmax = |t: &Tensor| {
        let (i, v) = t.data().iter().enumerate().fold((0, f32::MIN), |m, (i, &v)| if v > m.1 { (i, v) } else { m });
        (i / 29, i % 29, v)
    };
    let ccw = augment::warp_affine(&x, &AffineParams { rotation: 90.0, ..AffineParams::default() }, 0.0).unwrap();
    let (r, c, v) = argmax(&ccw);
    assert_eq!((r, c), (14, 4));
    assert!((v - 1.0).abs() < 1e-5, "{v}");
    let cw = augment::warp_affine(&x, &AffineParams { rotation: -90.0, ..AffineParams::default() }, 0.0).unwrap();
    let (r, c, _) = argmax(&cw);
    assert_eq!((r, c), (14, 24));
    // Integer translations are exact.
    let moved =
        augment::warp_affine(&x, &AffineParams { translate: (3.0, -2.0), ..AffineParams::default() }, 0.0).unwrap();
    assert_eq!(moved.data()[2 * 29 + 17], 1.0);
    assert_eq!(moved.data().iter().sum::<f32>(), 1.0);
}

/// Hand-written inverse of the documented forward map: out = c + t + R·Sh·S·(in − c), so
/// in = c + S⁻¹·Sh⁻¹·R⁻¹·(out − c − t), undone one factor at a time.
fn naive_warp(x: &[f32], h: usize, w: usize, p: &AffineParams, bg: f32) -> Vec<f64> {
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let th = (p.rotation as f64).to_radians();
    let sh = (p.shear as f64).to_radians().tan();
    let at = |xx: i64, yy: i64| {
        if xx >= 0 && yy >= 0 && (xx as usize) < w && (yy as usize) < h {
            x[yy as usize * w + xx as usize] as f64
        } else {
            bg as f64
        }
    };
    let mut out = Vec::new();
    for oy in 0..h {
        for ox in 0..w {
            let (u, v) = (ox as f64 - cx - p.translate.0 as f64, oy as f64 - cy - p.translate.1 as f64);
            // R⁻¹ = [cos −sin; sin cos] for R = [cos sin; −sin cos].
            let (u, v) = (th.cos() * u - th.sin() * v, th.sin() * u + th.cos() * v);
            let (u, v) = (u - sh * v, v); // Sh⁻¹
            let (u, v) = (u / p.scale as f64 + cx, v / p.scale as f64 + cy); // S⁻¹, back to pixels
            let (x0, y0) = (u.floor(), v.floor());
            let (fx, fy) = (u - x0, v - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            out.push(
                at(x0, y0) * (1.0 - fx) * (1.0 - fy)
                    + at(x0 + 1, y0) * fx * (1.0 - fy)
                    + at(x0, y0 + 1) * (1.0 - fx) * fy
                    + at(x0 + 1, y0 + 1) * fx * fy,
            );
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn affine_warp_matches_the_naive_inverse_map(
        h in 1usize..14, w in 1usize..14, c in 1usize..3,
        rotation in -180.0f32..180.0, tx in -4.0f32..4.0, ty in -4.0f32..4.0,
        scale in 0.5f32..2.0, shear in -40.0f32..40.0, seed in any::<u64>(),
    ) {
        let x = images(&[1, c, h, w], seed);
        let p = AffineParams { rotation, translate: (tx, ty), scale, shear };
        let got = augment::warp_affine(&x, &p, 0.25).unwrap();
        for ch in 0..c {
            let plane = &x.data()[ch * h * w..(ch + 1) * h * w];
            let want = naive_warp(plane, h, w, &p, 0.25);
            for (i, (&g, &e)) in got.data()[ch * h * w..(ch + 1) * h * w].iter().zip(&want).enumerate() {
                // Positions are computed in f64 then rounded to f32; values are within [0, 1]
                // and a position error of a few f32 ulps of the image size moves the blend by
                // at most that much.
                prop_assert!((g as f64 - e).abs() < 1e-4, "pixel {i}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn seeded_pipelines_are_reproducible_whatever_the_thread_count(
        n in 1usize..40, seed in any::<u64>(), preset in 1usize..PRESETS.len(),
    ) {
        let pipe = Pipeline::preset(PRESETS[preset], 0.0, (0.0, 1.0)).unwrap();
        let x = images(&[n, 1, 28, 28], seed ^ 1);
        let run = |threads| with_threads(threads, || {
            let mut y = x.clone();
            pipe.apply_batch(&mut y, seed).unwrap();
            y
        });
        let one = run(1);
        let (two, three) = (run(2), run(3));
        prop_assert_eq!(one.data(), two.data());
        prop_assert_eq!(one.data(), three.data());
        // Each image depends only on (seed, index) and its own pixels.
        let mut first = Tensor::new(x.data()[..784].to_vec(), &[1, 1, 28, 28]).unwrap();
        pipe.apply_batch(&mut first, seed).unwrap();
        prop_assert_eq!(first.data(), &one.data()[..784]);
    }
}

#[test]
fn different_seeds_give_different_batches() {
    let pipe = Pipeline::preset("digits", 0.0, (0.0, 1.0)).unwrap();
    let x = images(&[4, 1, 28, 28], 1);
    let (mut a, mut b) = (x.clone(), x.clone());
    pipe.apply_batch(&mut a, 1).unwrap();
    pipe.apply_batch(&mut b, 2).unwrap();
    assert_ne!(a.data(), b.data());
}

#[test]
fn elastic_distortion_moves_pixels_by_about_the_expected_amount() {
    // A horizontal ramp: the value at a pixel is its x coordinate, so (away from the borders)
    // the output minus the input is the x displacement.
    let (h, w) = (64, 64);
    let x = Tensor::from_fn(&[1, 1, h, w], |i| (i % w) as f32).unwrap();
    let mut y = x.clone();
    let pipe = Pipeline::builder().push(Transform::elastic(34.0, 4.0)).build().unwrap();
    pipe.apply_batch(&mut y, 8).unwrap();
    let mut sq = 0.0f64;
    let mut count = 0;
    for yy in 16..48 {
        for xx in 16..48 {
            let d = (y.data()[yy * w + xx] - x.data()[yy * w + xx]) as f64;
            sq += d * d;
            count += 1;
        }
    }
    let rms = (sq / count as f64).sqrt();
    // Uniform[-1, 1] has σ = 1/√3; a normalised 2-D Gaussian of σ = 4 shrinks it by about
    // 1/(2√π·4) ≈ 0.07: α = 34 gives about 1.4 px (the field is smooth, so one image varies).
    assert!((0.4..4.0).contains(&rms), "rms displacement {rms}");
}

#[test]
fn robustness_set_is_fixed_and_moves_every_digit() {
    let x = images(&[16, 1, 28, 28], 7);
    let a = augment::robustness_set(&x, 0.0).unwrap();
    let b = augment::robustness_set(&x, 0.0).unwrap();
    assert_eq!(a.data(), b.data());
    assert_eq!(a.shape(), x.shape());
    for (i, (p, q)) in a.data().chunks(784).zip(x.data().chunks(784)).enumerate() {
        assert_ne!(p, q, "image {i} unchanged");
    }
}

#[test]
fn images_from_the_image_crate_round_trip() {
    let grey = image::GrayImage::from_fn(9, 5, |x, y| image::Luma([(x * 20 + y * 7) as u8]));
    let rgb = image::RgbImage::from_fn(4, 6, |x, y| image::Rgb([x as u8 * 50, y as u8 * 30, 200]));
    let identity = Pipeline::builder().range(0.0, 1.0).push(Transform::noise(0.0)).build().unwrap();
    for img in [image::DynamicImage::ImageLuma8(grey), image::DynamicImage::ImageRgb8(rgb)] {
        let out = identity.apply_image(&img, 3).unwrap();
        assert_eq!(out, img);
        let moved = Pipeline::preset("strong", 0.0, (0.0, 1.0)).unwrap().apply_image(&img, 3).unwrap();
        assert_eq!((moved.width(), moved.height(), moved.color()), (img.width(), img.height(), img.color()));
    }
    let (planes, c, h, w) = augment::image_to_planes(&image::DynamicImage::new_rgba8(3, 2));
    assert_eq!((planes.len(), c, h, w), (18, 3, 2, 3));
    assert!(matches!(augment::planes_to_image(&planes, 2, h, w), Err(Error::Parameter { .. })));
    assert!(matches!(augment::planes_to_image(&planes[1..], 3, h, w), Err(Error::Length { .. })));
}

#[test]
fn bad_parameters_are_errors_naming_them() {
    let cases: Vec<(convkit::augment::PipelineBuilder, &str)> = vec![
        (Pipeline::builder().push(Transform::elastic(34.0, -1.0)), "sigma"),
        (Pipeline::builder().push(Transform::elastic(-1.0, 4.0)), "alpha"),
        (Pipeline::builder().push(Transform::elastic(f32::NAN, 4.0)), "alpha"),
        (Pipeline::builder().push_with_probability(1.5, Transform::HorizontalFlip), "probability"),
        (Pipeline::builder().push_with_probability(-0.1, Transform::HorizontalFlip), "probability"),
        (Pipeline::builder().push_with_probability(f32::NAN, Transform::HorizontalFlip), "probability"),
        (Pipeline::builder().push(Transform::rotation(-5.0)), "degrees"),
        (Pipeline::builder().push(Transform::scale(1.2, 0.8)), "scale"),
        (Pipeline::builder().push(Transform::scale(0.0, 1.0)), "scale"),
        (Pipeline::builder().push(Transform::shear(90.0)), "shear"),
        (Pipeline::builder().push(Transform::translation(f32::INFINITY)), "translate"),
        (Pipeline::builder().push(Transform::noise(-0.1)), "std"),
        (Pipeline::builder().push(Transform::brightness_contrast(0.1, 1.5)), "contrast"),
        (Pipeline::builder().push(Transform::erase((0.5, 0.2), (1.0, 1.0))), "area"),
        (Pipeline::builder().push(Transform::erase((0.1, 0.2), (0.0, 1.0))), "aspect"),
        (Pipeline::builder().range(1.0, 0.0), "range"),
        (Pipeline::builder().range(0.0, 1.0).background(2.0), "background"),
    ];
    for (builder, name) in cases {
        match builder.build() {
            Err(Error::Parameter { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: expected a parameter error, got {other:?}"),
        }
    }
    assert!(matches!(Pipeline::preset("wobbly", 0.0, (0.0, 1.0)), Err(Error::Parameter { .. })));
    let bad_scale = AffineParams { scale: -1.0, ..AffineParams::default() };
    assert!(matches!(augment::warp_affine(&images(&[1, 1, 4, 4], 0), &bad_scale, 0.0), Err(Error::Parameter { .. })));
    let pipe = Pipeline::preset("digits", 0.0, (0.0, 1.0)).unwrap();
    let mut flat = Tensor::zeros(&[4, 784]).unwrap();
    assert!(matches!(pipe.apply_batch(&mut flat, 0), Err(Error::Shape { .. })));
    assert!(matches!(pipe.apply_planes(&mut [0.0; 10], 1, 3, 3, 0), Err(Error::Length { .. })));
    assert!(matches!(pipe.apply_planes(&mut [], usize::MAX, 3, 3, 0), Err(Error::Overflow { .. })));
}
