//! Pictures for the LeNet-5 example, drawn with the `image` crate.

use convkit::nn::{History, Sequential};
use convkit::Tensor;
use image::{GrayImage, Luma, Rgb, RgbImage};
use std::path::Path;

fn save_err(path: &Path, e: image::ImageError) -> convkit::Error {
    convkit::Error::Io { path: path.display().to_string(), reason: e.to_string() }
}

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: Rgb<u8>) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for t in 0..=steps {
        let x = x0 + (x1 - x0) * t / steps;
        let y = y0 + (y1 - y0) * t / steps;
        for (dx, dy) in [(0, 0), (0, 1), (1, 0)] {
            if let Some(p) = img.get_pixel_mut_checked((x + dx) as u32, (y + dy) as u32) {
                *p = color;
            }
        }
    }
}

/// A curve: the value (0–1 of the panel's height) at each epoch, if any, and its colour.
type Series<'a> = (Box<dyn Fn(usize) -> Option<f64> + 'a>, Rgb<u8>);

/// Loss (left panel) and accuracy (right panel) per epoch; training solid colours,
/// validation lighter. Axes: epochs across; loss from 0 to its maximum, accuracy from the
/// lowest value to 100%.
pub fn curves(h: &History, path: &Path) -> convkit::Result<()> {
    let (w, ht, pad) = (800u32, 320u32, 30i64);
    let mut img = RgbImage::from_pixel(w, ht, Rgb([255, 255, 255]));
    let n = h.epochs.len().max(2) as i64;
    let panel = (w as i64 / 2 - 2 * pad, ht as i64 - 2 * pad);
    let max_loss = h.epochs.iter().map(|e| e.train_loss.max(e.validation.map_or(0.0, |v| v.0))).fold(1e-6, f32::max);
    let min_acc = h.epochs.iter().map(|e| e.train_accuracy.min(e.validation.map_or(1.0, |v| v.1))).fold(1.0, f64::min);
    for (i, (x0, _)) in [(pad, 0), (w as i64 / 2 + pad, 1)].into_iter().enumerate() {
        let grey = Rgb([160, 160, 160]);
        line(&mut img, (x0, ht as i64 - pad), (x0 + panel.0, ht as i64 - pad), grey);
        line(&mut img, (x0, pad), (x0, ht as i64 - pad), grey);
        let series: [Series<'_>; 2] = if i == 0 {
            [
                (Box::new(|e| Some((h.epochs[e].train_loss / max_loss) as f64)), Rgb([200, 40, 40])),
                (Box::new(|e| h.epochs[e].validation.map(|v| (v.0 / max_loss) as f64)), Rgb([240, 150, 150])),
            ]
        } else {
            let scale = move |a: f64| (a - min_acc) / (1.0 - min_acc).max(1e-9);
            [
                (Box::new(move |e| Some(scale(h.epochs[e].train_accuracy))), Rgb([40, 40, 200])),
                (Box::new(move |e| h.epochs[e].validation.map(|v| scale(v.1))), Rgb([150, 150, 240])),
            ]
        };
        for (f, color) in &series {
            let pt = |e: usize| {
                f(e).map(|v| (x0 + panel.0 * e as i64 / (n - 1), ht as i64 - pad - (v * panel.1 as f64) as i64))
            };
            for e in 1..h.epochs.len() {
                if let (Some(a), Some(b)) = (pt(e - 1), pt(e)) {
                    line(&mut img, a, b, *color);
                }
            }
        }
    }
    img.save(path).map_err(|e| save_err(path, e))
}

/// Grey tiles of `maps` (each `h × w`), `cols` per row, scaled by `zoom`, each normalised
/// to its own range.
fn grid(maps: &[&[f32]], h: usize, w: usize, cols: usize, zoom: usize) -> GrayImage {
    let rows = maps.len().div_ceil(cols);
    let (cw, ch) = (w * zoom + 2, h * zoom + 2);
    let mut img = GrayImage::from_pixel((cols * cw) as u32, (rows * ch) as u32, Luma([255]));
    for (i, m) in maps.iter().enumerate() {
        let (lo, hi) = m.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let (ox, oy) = ((i % cols) * cw + 1, (i / cols) * ch + 1);
        for y in 0..h * zoom {
            for x in 0..w * zoom {
                let v = (m[(y / zoom) * w + x / zoom] - lo) / (hi - lo).max(1e-12);
                img.put_pixel((ox + x) as u32, (oy + y) as u32, Luma([(v * 255.0) as u8]));
            }
        }
    }
    img
}

/// The six learned C1 filters (5×5), side by side.
pub fn filters(model: &mut Sequential, path: &Path) -> convkit::Result<()> {
    let (_, w) = model
        .named_params()
        .into_iter()
        .next()
        .ok_or_else(|| convkit::Error::Format { what: "model".into(), reason: "no parameters".into() })?;
    let [k, _, r, s] = w.dims4("C1 weight")?;
    let maps: Vec<&[f32]> = w.data().chunks_exact(r * s).take(k).collect();
    grid(&maps, r, s, k, 16).save(path).map_err(|e| save_err(path, e))
}

/// The input digit, then the C1 maps (after activation) and the C3 maps for it.
pub fn feature_maps(model: &mut Sequential, digit: &Tensor, path: &Path) -> convkit::Result<()> {
    let mut acts = vec![digit.clone()];
    for layer in model.layers_mut().iter_mut().take(5) {
        let next = layer.forward(acts.last().expect("non-empty"), false)?;
        acts.push(next);
    }
    let (c1, c3) = (&acts[2], &acts[5]);
    let [_, k1, h1, w1] = c1.dims4("C1 maps")?;
    let [_, k3, h3, w3] = c3.dims4("C3 maps")?;
    let top = grid(
        &std::iter::once(digit.data()).chain(c1.data().chunks_exact(h1 * w1)).collect::<Vec<_>>(),
        h1,
        w1,
        k1 + 1,
        4,
    );
    let bottom = grid(&c3.data().chunks_exact(h3 * w3).collect::<Vec<_>>(), h3, w3, k3 / 2, 8);
    let width = top.width().max(bottom.width());
    let mut img = GrayImage::from_pixel(width, top.height() + bottom.height() + 8, Luma([255]));
    image::imageops::overlay(&mut img, &top, 0, 0);
    image::imageops::overlay(&mut img, &bottom, 0, (top.height() + 8) as i64);
    img.save(path).map_err(|e| save_err(path, e))
}
