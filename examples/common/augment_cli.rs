//! Command-line options that build an augmentation pipeline, shared by the examples.
//!
//! `--augment NAME` picks a preset (`none`, `shift`, `affine`, `digits`, `strong`). Any of the
//! per-transform options replaces the preset with a custom pipeline made of just those, in
//! this order: `--rotate DEG`, `--translate PX`, `--scale LO:HI`, `--shear DEG` (one affine
//! step), `--crop PAD`, `--flip P`, `--elastic ALPHA:SIGMA` (with `--elastic-p P`, default 1),
//! `--jitter BRIGHTNESS:CONTRAST`, `--noise STD`, `--erase P` (2–10% of the image).
#![allow(dead_code)]

use convkit::augment::{Pipeline, RandomAffine, Transform};

#[derive(Clone, Debug, Default)]
pub struct AugmentArgs {
    pub preset: Option<String>,
    affine: Option<RandomAffine>,
    crop: Option<usize>,
    flip: Option<f32>,
    elastic: Option<(f32, f32)>,
    elastic_p: Option<f32>,
    jitter: Option<(f32, f32)>,
    noise: Option<f32>,
    erase: Option<f32>,
}

fn pair(flag: &str, v: &str) -> Result<(f32, f32), String> {
    let (a, b) = v.split_once(':').ok_or(format!("{flag} wants A:B, got {v}"))?;
    Ok((a.parse().map_err(|e| format!("{flag}: {e}"))?, b.parse().map_err(|e| format!("{flag}: {e}"))?))
}

fn one(flag: &str, v: &str) -> Result<f32, String> {
    v.parse().map_err(|e| format!("{flag}: {e}"))
}

impl AugmentArgs {
    /// Consumes `flag` (with its value from `value()`) if it is an augmentation option.
    pub fn take(&mut self, flag: &str, value: &mut dyn FnMut() -> Result<String, String>) -> Result<bool, String> {
        fn affine(a: &mut Option<RandomAffine>) -> &mut RandomAffine {
            a.get_or_insert_with(RandomAffine::default)
        }
        match flag {
            "--augment" => self.preset = Some(value()?),
            "--rotate" => affine(&mut self.affine).degrees = one(flag, &value()?)?,
            "--translate" => affine(&mut self.affine).translate = one(flag, &value()?)?,
            "--scale" => affine(&mut self.affine).scale = pair(flag, &value()?)?,
            "--shear" => affine(&mut self.affine).shear = one(flag, &value()?)?,
            "--crop" => self.crop = Some(one(flag, &value()?)? as usize),
            "--flip" => self.flip = Some(one(flag, &value()?)?),
            "--elastic" => self.elastic = Some(pair(flag, &value()?)?),
            "--elastic-p" => self.elastic_p = Some(one(flag, &value()?)?),
            "--jitter" => self.jitter = Some(pair(flag, &value()?)?),
            "--noise" => self.noise = Some(one(flag, &value()?)?),
            "--erase" => self.erase = Some(one(flag, &value()?)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn is_custom(&self) -> bool {
        self.affine.is_some()
            || self.crop.is_some()
            || self.flip.is_some()
            || self.elastic.is_some()
            || self.jitter.is_some()
            || self.noise.is_some()
            || self.erase.is_some()
    }

    /// The preset's name, `custom`, or `default` when nothing was asked for.
    pub fn name(&self, default: &str) -> String {
        if self.is_custom() {
            "custom".into()
        } else {
            self.preset.clone().unwrap_or_else(|| default.to_string())
        }
    }

    /// The pipeline asked for (`default` preset when nothing was).
    pub fn pipeline(&self, default: &str, background: f32, range: (f32, f32)) -> convkit::Result<Pipeline> {
        if !self.is_custom() {
            return Pipeline::preset(self.preset.as_deref().unwrap_or(default), background, range);
        }
        let mut b = Pipeline::builder().background(background).range(range.0, range.1);
        if let Some(a) = self.affine {
            b = b.push(Transform::Affine(a));
        }
        if let Some(pad) = self.crop {
            b = b.push(Transform::CropPad { pad });
        }
        if let Some(p) = self.flip {
            b = b.push_with_probability(p, Transform::HorizontalFlip);
        }
        if let Some((alpha, sigma)) = self.elastic {
            b = b.push_with_probability(self.elastic_p.unwrap_or(1.0), Transform::elastic(alpha, sigma));
        }
        if let Some((brightness, contrast)) = self.jitter {
            b = b.push(Transform::brightness_contrast(brightness, contrast));
        }
        if let Some(std) = self.noise {
            b = b.push(Transform::noise(std));
        }
        if let Some(p) = self.erase {
            b = b.push_with_probability(p, Transform::erase((0.02, 0.1), (0.3, 3.3)));
        }
        b.build()
    }
}
