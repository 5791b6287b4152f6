//! Conversions between `image` crate pictures and planar `f32` buffers.

use crate::error::{Error, Result};
use image::{DynamicImage, GrayImage, RgbImage};

/// A picture as planar `f32` values in `[0, 1]`: `(planes, channels, height, width)`.
///
/// Grey pictures (with or without alpha, any bit depth) give one plane, everything else three
/// (RGB, alpha dropped).
pub fn image_to_planes(image: &DynamicImage) -> (Vec<f32>, usize, usize, usize) {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let grey = matches!(
        image,
        DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
    );
    if grey {
        let g = image.to_luma32f();
        (g.into_raw(), 1, h, w)
    } else {
        let rgb = image.to_rgb32f();
        let plane = w * h;
        let mut planes = vec![0.0f32; 3 * plane];
        for (i, px) in rgb.pixels().enumerate() {
            for ch in 0..3 {
                planes[ch * plane + i] = px.0[ch];
            }
        }
        (planes, 3, h, w)
    }
}

/// Planar `[0, 1]` values back to an 8-bit grey (1 channel) or RGB (3 channels) picture,
/// rounding and clamping each value.
///
/// # Errors
/// [`Error::Parameter`] for a channel count other than 1 or 3 or a size beyond `u32`;
/// [`Error::Length`] if `planes` does not hold `channels·height·width` values.
pub fn planes_to_image(planes: &[f32], channels: usize, height: usize, width: usize) -> Result<DynamicImage> {
    if channels != 1 && channels != 3 {
        return Err(Error::param("channels", channels, "must be 1 (grey) or 3 (RGB)"));
    }
    let plane = crate::error::checked_product(&[height, width], "image")?;
    let want = crate::error::checked_product(&[channels, plane], "image")?;
    if planes.len() != want {
        return Err(Error::Length { tensor: "image planes".into(), expected: want, actual: planes.len() });
    }
    let (w32, h32) = match (u32::try_from(width), u32::try_from(height)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => return Err(Error::param("image size", format!("{width}×{height}"), "must fit in u32")),
    };
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let too_big = || Error::overflow("image buffer");
    if channels == 1 {
        let raw: Vec<u8> = planes.iter().map(|&v| byte(v)).collect();
        GrayImage::from_raw(w32, h32, raw).map(DynamicImage::ImageLuma8).ok_or_else(too_big)
    } else {
        let mut raw = vec![0u8; want];
        for i in 0..plane {
            for ch in 0..3 {
                raw[3 * i + ch] = byte(planes[ch * plane + i]);
            }
        }
        RgbImage::from_raw(w32, h32, raw).map(DynamicImage::ImageRgb8).ok_or_else(too_big)
    }
}
