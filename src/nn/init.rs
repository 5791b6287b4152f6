//! Weight initialisation from a seeded generator.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How a layer's weights are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Glorot/Xavier uniform: U(−a, a), `a = √(6 / (fan_in + fan_out))` (tanh, sigmoid).
    GlorotUniform,
    /// Glorot/Xavier normal: N(0, 2 / (fan_in + fan_out)).
    GlorotNormal,
    /// He/Kaiming uniform: U(−a, a), `a = √(6 / fan_in)` (ReLU).
    HeUniform,
    /// He/Kaiming normal: N(0, 2 / fan_in).
    HeNormal,
}

impl Init {
    /// `len` values for a layer with the given fans, from generator seed `seed`.
    pub fn sample(self, len: usize, fan_in: usize, fan_out: usize, seed: u64) -> Vec<f32> {
        let mut v = vec![0.0; len];
        self.fill(&mut v, fan_in, fan_out, seed);
        v
    }

    /// Fills `out` with the values [`Init::sample`] would return for `out.len()`.
    pub fn fill(self, out: &mut [f32], fan_in: usize, fan_out: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let (fi, fo) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
        let (uniform, var) = match self {
            Init::GlorotUniform => (true, 2.0 / (fi + fo)),
            Init::GlorotNormal => (false, 2.0 / (fi + fo)),
            Init::HeUniform => (true, 2.0 / fi),
            Init::HeNormal => (false, 2.0 / fi),
        };
        for v in out.iter_mut() {
            *v = {
                if uniform {
                    // U(−a, a) has variance a²/3.
                    let a = (3.0 * var).sqrt();
                    rng.random_range(-a..a) as f32
                } else {
                    // Box–Muller.
                    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
                    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * var.sqrt()) as f32
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variances_and_seeds() {
        for init in [Init::GlorotUniform, Init::GlorotNormal, Init::HeUniform, Init::HeNormal] {
            let v = init.sample(40_000, 100, 50, 3);
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
            let want = match init {
                Init::GlorotUniform | Init::GlorotNormal => 2.0 / 150.0,
                _ => 2.0 / 100.0,
            };
            assert!(mean.abs() < 0.01 && (var / want - 1.0).abs() < 0.05, "{init:?}: mean {mean} var {var}");
            assert_eq!(v, init.sample(40_000, 100, 50, 3));
            assert_ne!(v, init.sample(40_000, 100, 50, 4));
        }
    }
}
