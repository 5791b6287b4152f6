//! Arbitrary augmentation pipelines on arbitrary image sizes: `Err` for bad parameters,
//! otherwise the shape is kept, values stay in the range, and the same seed reproduces
//! the same batch.
#![no_main]

use convkit::augment::{Pipeline, RandomAffine, Transform};
use convkit::Tensor;
use libfuzzer_sys::fuzz_target;

fn take(data: &mut &[u8], modulo: u8) -> usize {
    let (b, rest) = data.split_first().map(|(b, r)| (*b, r)).unwrap_or((0, &[]));
    *data = rest;
    (b % modulo) as usize
}

/// A parameter from a byte: mostly ordinary, sometimes negative, huge or not a number.
fn value(d: &mut &[u8], scale: f32) -> f32 {
    match take(d, 32) {
        0 => -1.0,
        1 => f32::NAN,
        2 => f32::INFINITY,
        3 => 1e30,
        v => (v - 4) as f32 * scale,
    }
}

fuzz_target!(|bytes: &[u8]| {
    let mut d = bytes;
    let shape = [take(&mut d, 4), 1 + 2 * take(&mut d, 2), take(&mut d, 40), take(&mut d, 40)];
    let mut b = Pipeline::builder().background(0.0).range(0.0, 1.0);
    for _ in 0..take(&mut d, 5) {
        let t = match take(&mut d, 8) {
            0 => Transform::Affine(RandomAffine {
                degrees: value(&mut d, 10.0),
                translate: value(&mut d, 0.5),
                scale: (value(&mut d, 0.1), value(&mut d, 0.1)),
                shear: value(&mut d, 5.0),
            }),
            1 => Transform::elastic(value(&mut d, 4.0), value(&mut d, 0.5)),
            2 => Transform::HorizontalFlip,
            3 => Transform::CropPad { pad: take(&mut d, 255) },
            4 => Transform::brightness_contrast(value(&mut d, 0.05), value(&mut d, 0.05)),
            5 => Transform::noise(value(&mut d, 0.05)),
            _ => Transform::erase((value(&mut d, 0.05), value(&mut d, 0.05)), (value(&mut d, 0.3), value(&mut d, 0.3))),
        };
        b = b.push_with_probability(value(&mut d, 0.1), t);
    }
    let Ok(pipe) = b.build() else { return };
    let x = Tensor::from_fn(&shape, |i| ((i * 31) % 101) as f32 / 100.0).unwrap();
    let (mut y1, mut y2) = (x.clone(), x.clone());
    pipe.apply_batch(&mut y1, 9).unwrap();
    pipe.apply_batch(&mut y2, 9).unwrap();
    assert_eq!(y1.shape(), x.shape());
    assert!(y1.data().iter().all(|v| (0.0..=1.0).contains(v)), "left the range");
    assert_eq!(y1.data(), y2.data(), "not reproducible");
});
