//! Data augmentation: seeded, composable image transforms applied on the fly, in parallel.
//!
//! A [`Pipeline`] is a list of [`Transform`]s, each applied with its own probability, to
//! planar `f32` images: a batch tensor `[N, C, H, W]` ([`Pipeline::apply_batch`]), one
//! `C × H × W` buffer ([`Pipeline::apply_planes`]), or an `image` crate picture
//! ([`Pipeline::apply_image`], grey or RGB). Geometric transforms resample bilinearly and fill
//! what comes in from outside the picture with the pipeline's background value; photometric
//! ones clamp to the pipeline's value range, so an image whose values lie in the range comes
//! out in the range.
//!
//! Runs of consecutive geometric transforms (affine, flip, crop) are composed into one map
//! and resampled once: less blur than resampling after each, and cheaper.
//!
//! Randomness: image `i` of a batch draws from its own generator seeded by `(seed, i)`, so a
//! batch comes out the same whatever the number of threads and however rayon splits it.
//!
//! ```
//! use convkit::augment::{Pipeline, Transform};
//! use convkit::Tensor;
//! let pipe = Pipeline::builder()
//!     .background(0.0)
//!     .range(0.0, 1.0)
//!     .push(Transform::rotation(15.0))
//!     .push_with_probability(0.5, Transform::elastic(34.0, 4.0))
//!     .build()?;
//! let mut batch = Tensor::from_fn(&[8, 1, 28, 28], |i| (i % 7) as f32 / 6.0)?;
//! let before = batch.clone();
//! pipe.apply_batch(&mut batch, 42)?;
//! assert_eq!(batch.shape(), before.shape());
//! assert!(batch.data().iter().all(|v| (0.0..=1.0).contains(v)));
//! # Ok::<(), convkit::Error>(())
//! ```

mod image_io;
mod warp;

pub use image_io::{image_to_planes, planes_to_image};

use crate::error::{Error, Result};
use crate::Tensor;
use rayon::prelude::*;
use warp::Affine2;

/// A small, portable generator (SplitMix64): the same sequence on every platform and every
/// version of this crate's dependencies, which is what reproducible augmentation needs.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi]` (returns `lo` exactly when `lo == hi`).
    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        if lo == hi {
            lo
        } else {
            lo + (hi - lo) * self.unit()
        }
    }

    /// Uniform integer in `-max..=max`.
    pub(crate) fn offset(&mut self, max: usize) -> isize {
        if max == 0 {
            return 0;
        }
        let span = 2 * max as u64 + 1;
        (self.next_u64() % span) as isize - max as isize
    }

    /// A standard normal sample (Box–Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit(); // (0, 1]
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// The generator of image `index` under pipeline seed `seed`.
fn image_rng(seed: u64, index: u64) -> SplitMix {
    let mut mix = SplitMix::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    SplitMix::new(mix.next_u64())
}

/// Random affine parameters, each drawn uniformly from its range per image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomAffine {
    /// Rotation in `[-degrees, degrees]`, counter-clockwise as displayed.
    pub degrees: f32,
    /// Translation in `[-pixels, pixels]` along each axis (real-valued).
    pub translate: f32,
    /// Scale factor in `[lo, hi]` (both > 0; `(1, 1)` for none).
    pub scale: (f32, f32),
    /// Horizontal shear angle in `[-degrees, degrees]` (below 90).
    pub shear: f32,
}

impl Default for RandomAffine {
    /// The identity: no rotation, translation, scaling or shear.
    fn default() -> Self {
        RandomAffine { degrees: 0.0, translate: 0.0, scale: (1.0, 1.0), shear: 0.0 }
    }
}

/// One fixed (not random) affine change of an image about its centre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineParams {
    /// Rotation in degrees, counter-clockwise as displayed.
    pub rotation: f32,
    /// Translation in pixels, `(right, down)`.
    pub translate: (f32, f32),
    /// Scale factor (> 0).
    pub scale: f32,
    /// Horizontal shear angle in degrees (|shear| < 90).
    pub shear: f32,
}

impl Default for AffineParams {
    /// The identity.
    fn default() -> Self {
        AffineParams { rotation: 0.0, translate: (0.0, 0.0), scale: 1.0, shear: 0.0 }
    }
}

impl AffineParams {
    fn map(&self, w: usize, h: usize) -> Affine2 {
        Affine2::about_centre(
            w,
            h,
            (self.rotation as f64).to_radians(),
            (self.shear as f64).to_radians(),
            self.scale as f64,
            self.translate.0 as f64,
            self.translate.1 as f64,
        )
    }

    fn validate(&self) -> Result<()> {
        check_finite("rotation", self.rotation)?;
        check_finite("translate", self.translate.0)?;
        check_finite("translate", self.translate.1)?;
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::param("scale", self.scale, "must be finite and > 0"));
        }
        if !(self.shear.is_finite() && self.shear.abs() < 90.0) {
            return Err(Error::param("shear", self.shear, "must be finite and strictly between -90 and 90 degrees"));
        }
        Ok(())
    }
}

/// One augmentation step. Build with the constructors; [`PipelineBuilder::build`] checks the
/// parameters.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Transform {
    /// Random rotation, translation, scaling and shear, composed about the centre.
    Affine(RandomAffine),
    /// The elastic distortion of Simard, Steinkraus & Platt (2003): a random displacement
    /// field, uniform in `[-1, 1]` per pixel and component, smoothed by a Gaussian of
    /// standard deviation `sigma` pixels and scaled by `alpha`.
    Elastic {
        /// Displacement scale (0 for none).
        alpha: f32,
        /// Smoothing in pixels (0 for none; larger is smoother).
        sigma: f32,
    },
    /// Mirror left to right.
    HorizontalFlip,
    /// Pad by `pad` background pixels on every side, then crop a random window of the
    /// original size: a random whole-pixel shift in `-pad..=pad` along each axis.
    CropPad {
        /// Padding (and largest shift) in pixels.
        pad: usize,
    },
    /// `x ↦ c·x + (1 − c)·mean + b·(hi − lo)` with `c` in `[1 − contrast, 1 + contrast]`
    /// about the image mean and `b` in `[-brightness, brightness]` of the value range
    /// (of `[0, 1]` if the range is unbounded).
    BrightnessContrast {
        /// Largest brightness change, as a fraction of the value range.
        brightness: f32,
        /// Largest relative contrast change, in `[0, 1]`.
        contrast: f32,
    },
    /// Adds independent Gaussian noise of standard deviation `std` to every value.
    GaussianNoise {
        /// Standard deviation, in the images' units.
        std: f32,
    },
    /// Random erasing (Zhong et al., 2017): fills a rectangle with the background value.
    Erase {
        /// Area of the rectangle as a fraction of the image, drawn in `[lo, hi]` ⊆ `[0, 1]`.
        area: (f32, f32),
        /// Height/width ratio, drawn log-uniformly in `[lo, hi]` (both > 0).
        aspect: (f32, f32),
    },
}

impl Transform {
    /// Random rotation in `[-degrees, degrees]`.
    pub fn rotation(degrees: f32) -> Transform {
        Transform::Affine(RandomAffine { degrees, ..RandomAffine::default() })
    }

    /// Random translation in `[-pixels, pixels]` along each axis (sub-pixel, bilinear).
    pub fn translation(pixels: f32) -> Transform {
        Transform::Affine(RandomAffine { translate: pixels, ..RandomAffine::default() })
    }

    /// Random scaling by a factor in `[lo, hi]`.
    pub fn scale(lo: f32, hi: f32) -> Transform {
        Transform::Affine(RandomAffine { scale: (lo, hi), ..RandomAffine::default() })
    }

    /// Random horizontal shear in `[-degrees, degrees]`.
    pub fn shear(degrees: f32) -> Transform {
        Transform::Affine(RandomAffine { shear: degrees, ..RandomAffine::default() })
    }

    /// Simard's elastic distortion with displacement scale `alpha` and smoothing `sigma`.
    pub fn elastic(alpha: f32, sigma: f32) -> Transform {
        Transform::Elastic { alpha, sigma }
    }

    /// Brightness and contrast jitter.
    pub fn brightness_contrast(brightness: f32, contrast: f32) -> Transform {
        Transform::BrightnessContrast { brightness, contrast }
    }

    /// Additive Gaussian noise.
    pub fn noise(std: f32) -> Transform {
        Transform::GaussianNoise { std }
    }

    /// Random erasing of a rectangle covering `area` of the image with aspect in `aspect`.
    pub fn erase(area: (f32, f32), aspect: (f32, f32)) -> Transform {
        Transform::Erase { area, aspect }
    }

    fn is_geometric(&self) -> bool {
        matches!(self, Transform::Affine(_) | Transform::HorizontalFlip | Transform::CropPad { .. })
    }

    fn validate(&self) -> Result<()> {
        match *self {
            Transform::Affine(a) => {
                check_nonneg("degrees", a.degrees)?;
                check_nonneg("translate", a.translate)?;
                let (lo, hi) = a.scale;
                if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
                    return Err(Error::param("scale", format!("({lo}, {hi})"), "must be finite with 0 < lo <= hi"));
                }
                if !(a.shear.is_finite() && (0.0..90.0).contains(&a.shear)) {
                    return Err(Error::param("shear", a.shear, "must be finite, >= 0 and below 90 degrees"));
                }
            }
            Transform::Elastic { alpha, sigma } => {
                check_nonneg("alpha", alpha)?;
                check_nonneg("sigma", sigma)?;
            }
            Transform::HorizontalFlip | Transform::CropPad { .. } => {}
            Transform::BrightnessContrast { brightness, contrast } => {
                check_nonneg("brightness", brightness)?;
                if !(contrast.is_finite() && (0.0..=1.0).contains(&contrast)) {
                    return Err(Error::param("contrast", contrast, "must be in [0, 1]"));
                }
            }
            Transform::GaussianNoise { std } => check_nonneg("std", std)?,
            Transform::Erase { area: (a0, a1), aspect: (r0, r1) } => {
                if !(a0.is_finite() && a1.is_finite() && 0.0 <= a0 && a0 <= a1 && a1 <= 1.0) {
                    return Err(Error::param("area", format!("({a0}, {a1})"), "must satisfy 0 <= lo <= hi <= 1"));
                }
                if !(r0.is_finite() && r1.is_finite() && 0.0 < r0 && r0 <= r1) {
                    return Err(Error::param("aspect", format!("({r0}, {r1})"), "must be finite with 0 < lo <= hi"));
                }
            }
        }
        Ok(())
    }
}

fn check_finite(name: &str, v: f32) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::param(name, v, "must be finite"))
    }
}

fn check_nonneg(name: &str, v: f32) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Error::param(name, v, "must be finite and >= 0"))
    }
}

/// Builds a [`Pipeline`]; see [`Pipeline::builder`].
#[derive(Clone, Debug)]
pub struct PipelineBuilder {
    steps: Vec<(f32, Transform)>,
    background: f32,
    range: (f32, f32),
}

impl PipelineBuilder {
    /// The value that fills pixels coming from outside the image and erased rectangles
    /// (default 0).
    pub fn background(mut self, value: f32) -> Self {
        self.background = value;
        self
    }

    /// The value range photometric transforms clamp to (default unbounded).
    pub fn range(mut self, lo: f32, hi: f32) -> Self {
        self.range = (lo, hi);
        self
    }

    /// Appends a transform applied to every image.
    pub fn push(self, transform: Transform) -> Self {
        self.push_with_probability(1.0, transform)
    }

    /// Appends a transform applied to each image with probability `p`.
    pub fn push_with_probability(mut self, p: f32, transform: Transform) -> Self {
        self.steps.push((p, transform));
        self
    }

    /// Checks every parameter and returns the pipeline.
    ///
    /// # Errors
    /// [`Error::Parameter`] naming the first bad parameter: a probability outside `[0, 1]`, a
    /// negative or non-finite magnitude (σ, α, degrees, …), an empty or reversed range, a
    /// background outside the value range.
    pub fn build(self) -> Result<Pipeline> {
        let (lo, hi) = self.range;
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(Error::param("range", format!("({lo}, {hi})"), "must satisfy lo <= hi"));
        }
        if !(self.background.is_finite() && lo <= self.background && self.background <= hi) {
            return Err(Error::param("background", self.background, format!("must be finite and within ({lo}, {hi})")));
        }
        for (p, t) in &self.steps {
            if !(0.0..=1.0).contains(p) {
                return Err(Error::param("probability", p, "must be in [0, 1]"));
            }
            t.validate()?;
        }
        Ok(Pipeline { steps: self.steps, background: self.background, range: self.range })
    }
}

/// A validated chain of transforms with probabilities. See the [module docs](self).
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    steps: Vec<(f32, Transform)>,
    background: f32,
    range: (f32, f32),
}

/// The presets [`Pipeline::preset`] knows, for `--augment NAME` style options.
pub const PRESETS: [&str; 5] = ["none", "shift", "affine", "digits", "strong"];

/// Per-worker buffers, reused from image to image.
#[derive(Default)]
struct Scratch {
    tmp: Vec<f32>,
    dx: Vec<f32>,
    dy: Vec<f32>,
    blur: Vec<f32>,
}

impl Pipeline {
    /// An empty builder: background 0, unbounded range, no steps.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder { steps: Vec::new(), background: 0.0, range: (f32::NEG_INFINITY, f32::INFINITY) }
    }

    /// A named preset for handwritten digits (see [`PRESETS`]) with the given background
    /// and value range:
    ///
    /// - `none`: nothing;
    /// - `shift`: whole-pixel shifts of up to 2 pixels ([`Transform::CropPad`]);
    /// - `affine`: rotation ±10°, translation ±2 px, scale 0.9–1.1, shear ±10°;
    /// - `digits`: `affine`, then with probability ½ an elastic distortion (α = 34, σ = 4,
    ///   Simard's values for MNIST);
    /// - `strong`: `digits`, then brightness/contrast jitter (0.1, 0.2) and random erasing
    ///   of 2–10% of the image, each with probability ½.
    ///
    /// # Errors
    /// [`Error::Parameter`] for an unknown name or a bad background/range.
    pub fn preset(name: &str, background: f32, range: (f32, f32)) -> Result<Pipeline> {
        let b = Pipeline::builder().background(background).range(range.0, range.1);
        let affine = Transform::Affine(RandomAffine { degrees: 10.0, translate: 2.0, scale: (0.9, 1.1), shear: 10.0 });
        let b = match name {
            "none" => b,
            "shift" => b.push(Transform::CropPad { pad: 2 }),
            "affine" => b.push(affine),
            "digits" => b.push(affine).push_with_probability(0.5, Transform::elastic(34.0, 4.0)),
            "strong" => b
                .push(affine)
                .push_with_probability(0.5, Transform::elastic(34.0, 4.0))
                .push_with_probability(0.5, Transform::brightness_contrast(0.1, 0.2))
                .push_with_probability(0.5, Transform::erase((0.02, 0.1), (0.3, 3.3))),
            other => {
                return Err(Error::param(
                    "augmentation preset",
                    other,
                    format!("must be one of {}", PRESETS.join(", ")),
                ))
            }
        };
        b.build()
    }

    /// The steps, with their probabilities.
    pub fn steps(&self) -> &[(f32, Transform)] {
        &self.steps
    }

    /// The background value.
    pub fn background_value(&self) -> f32 {
        self.background
    }

    /// Augments every image of a `[N, C, H, W]` batch in place, image `i` with the generator
    /// of `(seed, i)`; images are shared among the threads of the current rayon pool.
    ///
    /// # Errors
    /// [`Error::Shape`] if `batch` is not 4-D.
    pub fn apply_batch(&self, batch: &mut Tensor, seed: u64) -> Result<()> {
        let [n, c, h, w] = batch.dims4("augmentation batch")?;
        let per = c * h * w;
        if n == 0 || per == 0 || self.steps.is_empty() {
            return Ok(());
        }
        let data = batch.data_mut();
        // About 2 µs of work per 1,000 values and step: below ~64K values the split costs more.
        if n == 1 || n * per * self.steps.len() < 2 * SEQUENTIAL_BELOW || crate::parallel::current_threads() == 1 {
            let mut s = Scratch::default();
            for (i, img) in data.chunks_exact_mut(per).enumerate() {
                self.apply_one(img, c, h, w, &mut image_rng(seed, i as u64), &mut s);
            }
        } else {
            data.par_chunks_exact_mut(per)
                .enumerate()
                .with_min_len(4)
                .for_each_init(Scratch::default, |s, (i, img)| {
                    self.apply_one(img, c, h, w, &mut image_rng(seed, i as u64), s)
                });
        }
        Ok(())
    }

    /// Augments one `channels × height × width` image (planar) in place.
    ///
    /// # Errors
    /// [`Error::Length`] if `image.len() != channels·height·width` (or that overflows).
    pub fn apply_planes(
        &self,
        image: &mut [f32],
        channels: usize,
        height: usize,
        width: usize,
        seed: u64,
    ) -> Result<()> {
        let want = crate::error::checked_product(&[channels, height, width], "augmented image")?;
        if image.len() != want {
            return Err(Error::Length { tensor: "augmented image".into(), expected: want, actual: image.len() });
        }
        if want > 0 {
            self.apply_one(image, channels, height, width, &mut image_rng(seed, 0), &mut Scratch::default());
        }
        Ok(())
    }

    /// Augments a picture from the `image` crate: grey images stay grey (one plane), every
    /// other colour type is processed as RGB (alpha dropped). Values are scaled to `[0, 1]`
    /// on the way in and back on the way out, so the pipeline's background and range should
    /// be given in those units. Returns an 8-bit grey or RGB image.
    pub fn apply_image(&self, image: &image::DynamicImage, seed: u64) -> Result<image::DynamicImage> {
        let (mut planes, c, h, w) = image_to_planes(image);
        self.apply_planes(&mut planes, c, h, w, seed)?;
        planes_to_image(&planes, c, h, w)
    }

    /// One image, compiled for AVX2+FMA when the machine has it (`CONVKIT_SIMD` caps it):
    /// the same operations, just wider — LLVM does not contract `a·b + c` into an FMA, so
    /// both builds give the same bits.
    fn apply_one(&self, img: &mut [f32], c: usize, h: usize, w: usize, rng: &mut SplitMix, s: &mut Scratch) {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::active() != crate::SimdLevel::Portable {
            // SAFETY: `active()` only reports AVX2 or above when the CPU has AVX2 and FMA.
            unsafe { self.apply_one_avx2(img, c, h, w, rng, s) };
            return;
        }
        self.apply_one_body(img, c, h, w, rng, s);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn apply_one_avx2(
        &self,
        img: &mut [f32],
        c: usize,
        h: usize,
        w: usize,
        rng: &mut SplitMix,
        s: &mut Scratch,
    ) {
        self.apply_one_body(img, c, h, w, rng, s);
    }

    #[inline(always)]
    fn apply_one_body(&self, img: &mut [f32], c: usize, h: usize, w: usize, rng: &mut SplitMix, s: &mut Scratch) {
        let mut pending: Option<Affine2> = None;
        for (p, t) in &self.steps {
            if *p < 1.0 && rng.unit() >= *p as f64 {
                continue;
            }
            if t.is_geometric() {
                let m = self.sample_map(t, w, h, rng);
                pending = Some(m.after(&pending.unwrap_or(Affine2::IDENTITY)));
            } else {
                if let Transform::Elastic { alpha, sigma } = *t {
                    // The elastic field and any pending affine change share one resampling.
                    let before = pending.take().unwrap_or(Affine2::IDENTITY);
                    self.elastic(img, c, h, w, alpha, sigma, &before, rng, s);
                    continue;
                }
                if let Some(m) = pending.take() {
                    self.resample(img, c, h, w, &m, s);
                }
                self.apply_pixelwise(t, img, h, w, rng);
            }
        }
        if let Some(m) = pending {
            self.resample(img, c, h, w, &m, s);
        }
    }

    /// One photometric step.
    #[inline(always)]
    fn apply_pixelwise(&self, t: &Transform, img: &mut [f32], h: usize, w: usize, rng: &mut SplitMix) {
        match *t {
            Transform::BrightnessContrast { brightness, contrast } => {
                let plane = h * w;
                let cf = rng.range(1.0 - contrast as f64, 1.0 + contrast as f64) as f32;
                let span = if (self.range.1 - self.range.0).is_finite() { self.range.1 - self.range.0 } else { 1.0 };
                let b = rng.range(-(brightness as f64), brightness as f64) as f32 * span;
                for ch in img.chunks_exact_mut(plane) {
                    let mean = (ch.iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32;
                    let shift = mean * (1.0 - cf) + b;
                    for v in ch.iter_mut() {
                        *v = (*v * cf + shift).clamp(self.range.0, self.range.1);
                    }
                }
            }
            Transform::GaussianNoise { std } => {
                for v in img.iter_mut() {
                    *v = (*v + (std as f64 * rng.normal()) as f32).clamp(self.range.0, self.range.1);
                }
            }
            Transform::Erase { area, aspect } => {
                let a = rng.range(area.0 as f64, area.1 as f64) * (h * w) as f64;
                let r = rng.range((aspect.0 as f64).ln(), (aspect.1 as f64).ln()).exp();
                let eh = ((a * r).sqrt().round() as usize).min(h);
                let ew = ((a / r).sqrt().round() as usize).min(w);
                let y0 = (rng.unit() * (h - eh + 1) as f64) as usize;
                let x0 = (rng.unit() * (w - ew + 1) as f64) as usize;
                for plane in img.chunks_exact_mut(h * w) {
                    for row in plane.chunks_exact_mut(w).skip(y0).take(eh) {
                        row[x0..x0 + ew].fill(self.background);
                    }
                }
            }
            // Resampled by `apply_one`.
            Transform::Affine(_)
            | Transform::HorizontalFlip
            | Transform::CropPad { .. }
            | Transform::Elastic { .. } => {}
        }
    }

    /// The forward map of one geometric step, drawn for this image.
    fn sample_map(&self, t: &Transform, w: usize, h: usize, rng: &mut SplitMix) -> Affine2 {
        match *t {
            Transform::Affine(a) => {
                let rot = rng.range(-(a.degrees as f64), a.degrees as f64).to_radians();
                let tx = rng.range(-(a.translate as f64), a.translate as f64);
                let ty = rng.range(-(a.translate as f64), a.translate as f64);
                let scale = rng.range(a.scale.0 as f64, a.scale.1 as f64);
                let shear = rng.range(-(a.shear as f64), a.shear as f64).to_radians();
                Affine2::about_centre(w, h, rot, shear, scale, tx, ty)
            }
            Transform::HorizontalFlip => Affine2 { a: -1.0, e: w as f64 - 1.0, ..Affine2::IDENTITY },
            Transform::CropPad { pad } => {
                let (dx, dy) = (rng.offset(pad), rng.offset(pad));
                Affine2 { e: dx as f64, f: dy as f64, ..Affine2::IDENTITY }
            }
            _ => Affine2::IDENTITY,
        }
    }

    #[inline(always)]
    fn resample(&self, img: &mut [f32], c: usize, h: usize, w: usize, forward: &Affine2, s: &mut Scratch) {
        if *forward == Affine2::IDENTITY {
            return;
        }
        s.tmp.resize(c * h * w, 0.0);
        match forward.inverse() {
            Some(inv) => warp::warp_affine(img, &mut s.tmp, w, h, &inv, self.background),
            // Singular maps cannot come from validated parameters; fill rather than panic.
            None => s.tmp.fill(self.background),
        }
        img.copy_from_slice(&s.tmp);
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn elastic(
        &self,
        img: &mut [f32],
        c: usize,
        h: usize,
        w: usize,
        alpha: f32,
        sigma: f32,
        before: &Affine2,
        rng: &mut SplitMix,
        s: &mut Scratch,
    ) {
        if alpha == 0.0 {
            self.resample(img, c, h, w, before, s);
            return;
        }
        let Some(inv) = before.inverse() else {
            // Singular maps cannot come from validated parameters; fill rather than panic.
            img.fill(self.background);
            return;
        };
        let plane = h * w;
        let taps = warp::gaussian_taps(sigma, h.max(w));
        s.dx.resize(plane, 0.0);
        s.dy.resize(plane, 0.0);
        for field in [&mut s.dx, &mut s.dy] {
            // Two uniforms in [-1, 1) per 64-bit draw (24 bits each).
            for pair in field.chunks_mut(2) {
                let bits = rng.next_u64();
                for (k, v) in pair.iter_mut().enumerate() {
                    *v = ((bits >> (40 - 32 * k)) & 0xFF_FFFF) as f32 * (2.0 / (1 << 24) as f32) - 1.0;
                }
            }
            warp::smooth(field, &mut s.blur, w, h, &taps);
            for v in field.iter_mut() {
                *v *= alpha;
            }
        }
        s.tmp.resize(c * plane, 0.0);
        warp::warp_displaced(img, &mut s.tmp, w, h, &s.dx, &s.dy, &inv, self.background);
        img.copy_from_slice(&s.tmp);
    }
}

/// Below this many values (about 40 µs of warping) the fixed warps run on the calling thread.
const SEQUENTIAL_BELOW: usize = 1 << 15;

/// Warps every image of a `[N, C, H, W]` batch by one fixed affine change (bilinear,
/// `background` outside), returning a new tensor.
///
/// # Errors
/// [`Error::Shape`] if `images` is not 4-D; [`Error::Parameter`] for a non-finite parameter,
/// a scale ≤ 0 or a shear of 90° or more.
pub fn warp_affine(images: &Tensor, params: &AffineParams, background: f32) -> Result<Tensor> {
    params.validate()?;
    check_finite("background", background)?;
    let [_, _, h, w] = images.dims4("images")?;
    let mut out = Tensor::zeros(images.shape())?;
    let inv =
        params.map(w, h).inverse().ok_or_else(|| Error::param("scale", params.scale, "makes the map singular"))?;
    let plane = h * w;
    if plane == 0 {
        return Ok(out);
    }
    let one = |(d, s): (&mut [f32], &[f32])| warp::warp_affine(s, d, w, h, &inv, background);
    if images.len() < SEQUENTIAL_BELOW {
        out.data_mut().chunks_mut(plane).zip(images.data().chunks(plane)).for_each(one);
    } else {
        out.data_mut().par_chunks_mut(plane).zip(images.data().par_chunks(plane)).for_each(one);
    }
    Ok(out)
}

/// The fixed changes of [`robustness_set`]: image `i` gets change `i % 8`.
pub const ROBUSTNESS_CHANGES: [AffineParams; 8] = [
    AffineParams { rotation: 15.0, translate: (0.0, 0.0), scale: 1.0, shear: 0.0 },
    AffineParams { rotation: -15.0, translate: (0.0, 0.0), scale: 1.0, shear: 0.0 },
    AffineParams { rotation: 0.0, translate: (3.0, -2.0), scale: 1.0, shear: 0.0 },
    AffineParams { rotation: 0.0, translate: (-3.0, 2.0), scale: 1.0, shear: 0.0 },
    AffineParams { rotation: 0.0, translate: (0.0, 0.0), scale: 0.85, shear: 0.0 },
    AffineParams { rotation: 0.0, translate: (0.0, 0.0), scale: 1.15, shear: 0.0 },
    AffineParams { rotation: 0.0, translate: (0.0, 0.0), scale: 1.0, shear: 20.0 },
    AffineParams { rotation: 10.0, translate: (-2.0, -2.0), scale: 1.0, shear: -10.0 },
];

/// A robustness test set: every image of a `[N, C, H, W]` batch moved by a fixed change,
/// image `i` by [`ROBUSTNESS_CHANGES`]`[i % 8]` (rotations of ±15°, shifts of 3 and 2 px,
/// scaling by 0.85 and 1.15, a 20° shear, and a rotation + shift + shear), so that accuracy on
/// it measures how much a model tolerates the variation of real handwriting.
///
/// # Errors
/// [`Error::Shape`] if `images` is not 4-D.
pub fn robustness_set(images: &Tensor, background: f32) -> Result<Tensor> {
    let [n, c, h, w] = images.dims4("images")?;
    check_finite("background", background)?;
    let per = c * h * w;
    let mut out = Tensor::zeros(images.shape())?;
    if per == 0 || n == 0 {
        return Ok(out);
    }
    let maps: Vec<Affine2> = ROBUSTNESS_CHANGES
        .iter()
        .map(|p| p.map(w, h).inverse().ok_or_else(|| Error::param("robustness change", p.scale, "is singular")))
        .collect::<Result<_>>()?;
    let one =
        |(i, (d, s)): (usize, (&mut [f32], &[f32]))| warp::warp_affine(s, d, w, h, &maps[i % maps.len()], background);
    if images.len() < SEQUENTIAL_BELOW {
        out.data_mut().chunks_mut(per).zip(images.data().chunks(per)).enumerate().for_each(one);
    } else {
        out.data_mut().par_chunks_mut(per).zip(images.data().par_chunks(per)).enumerate().for_each(one);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_ranges() {
        let mut r = SplitMix::new(1);
        for _ in 0..1000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            let o = r.offset(2);
            assert!((-2..=2).contains(&o));
        }
        assert_eq!(r.range(3.0, 3.0), 3.0);
        let mean: f64 = (0..20000).map(|_| r.normal()).sum::<f64>() / 20000.0;
        assert!(mean.abs() < 0.03, "{mean}");
    }

    #[test]
    fn per_image_generators_differ() {
        assert_ne!(image_rng(7, 0).next_u64(), image_rng(7, 1).next_u64());
        assert_ne!(image_rng(7, 0).next_u64(), image_rng(8, 0).next_u64());
    }
}
