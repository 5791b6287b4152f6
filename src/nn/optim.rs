//! Optimisers and learning-rate schedules.

use super::Sequential;

/// Updates a model's parameters from their gradients.
pub trait Optimizer {
    /// One update with learning rate `lr`.
    fn step(&mut self, model: &mut Sequential, lr: f32);
}

/// Stochastic gradient descent with momentum (optionally Nesterov) and L2 weight decay
/// (on weights, not biases): `v ← μ·v + (g + λ·w)`, `w ← w − lr·(g + λ·w + μ·v)` if Nesterov
/// else `w ← w − lr·v`.
#[derive(Clone, Debug, Default)]
pub struct Sgd {
    /// μ (0 = plain SGD).
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// λ.
    pub weight_decay: f32,
    velocity: Vec<Vec<f32>>,
}

impl Sgd {
    /// SGD with momentum `momentum`, Nesterov or not, L2 decay `weight_decay`.
    pub fn new(momentum: f32, nesterov: bool, weight_decay: f32) -> Self {
        Sgd { momentum, nesterov, weight_decay, velocity: Vec::new() }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, model: &mut Sequential, lr: f32) {
        for (i, p) in model.params().into_iter().enumerate() {
            if self.velocity.len() <= i {
                self.velocity.push(vec![0.0; p.value.len()]);
            }
            let v = &mut self.velocity[i];
            let decay = if p.decay { self.weight_decay } else { 0.0 };
            let (w, g) = (p.value.data_mut(), p.grad.data());
            // One loop per variant (branch-free bodies, so they vectorise).
            let mu = self.momentum;
            match (mu == 0.0, self.nesterov) {
                (true, _) => w.iter_mut().zip(g).for_each(|(w, &g)| *w -= lr * (g + decay * *w)),
                (false, false) => w.iter_mut().zip(g).zip(v.iter_mut()).for_each(|((w, &g), vi)| {
                    *vi = mu * *vi + (g + decay * *w);
                    *w -= lr * *vi;
                }),
                (false, true) => w.iter_mut().zip(g).zip(v.iter_mut()).for_each(|((w, &g), vi)| {
                    let g = g + decay * *w;
                    *vi = mu * *vi + g;
                    *w -= lr * (g + mu * *vi);
                }),
            }
        }
    }
}

/// Adam (Kingma & Ba) with bias correction and optional L2 weight decay on weights.
#[derive(Clone, Debug)]
pub struct Adam {
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// λ.
    pub weight_decay: f32,
    t: i32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Default for Adam {
    /// β₁ = 0.9, β₂ = 0.999, ε = 1e-8, no decay.
    fn default() -> Self {
        Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, t: 0, m: Vec::new(), v: Vec::new() }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, model: &mut Sequential, lr: f32) {
        self.t += 1;
        let (c1, c2) = (1.0 - self.beta1.powi(self.t), 1.0 - self.beta2.powi(self.t));
        for (i, p) in model.params().into_iter().enumerate() {
            if self.m.len() <= i {
                self.m.push(vec![0.0; p.value.len()]);
                self.v.push(vec![0.0; p.value.len()]);
            }
            let decay = if p.decay { self.weight_decay } else { 0.0 };
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            // Scalars in locals, so the loop body is plain arithmetic that vectorises.
            let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
            for (((w, &g), mi), vi) in
                p.value.data_mut().iter_mut().zip(p.grad.data()).zip(m.iter_mut()).zip(v.iter_mut())
            {
                let g = g + decay * *w;
                *mi = b1 * *mi + (1.0 - b1) * g;
                *vi = b2 * *vi + (1.0 - b2) * g * g;
                *w -= lr * (*mi / c1) / ((*vi / c2).sqrt() + eps);
            }
        }
    }
}

/// The learning rate as a function of the epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// Always `lr`.
    Constant(f32),
    /// `lr · gamma^(epoch / every)`.
    Step {
        /// Initial rate.
        lr: f32,
        /// Epochs between decays.
        every: usize,
        /// Factor per decay.
        gamma: f32,
    },
    /// Cosine from `lr` down to `min` over `epochs`.
    Cosine {
        /// Initial rate.
        lr: f32,
        /// Final rate.
        min: f32,
        /// Length of the schedule.
        epochs: usize,
    },
}

impl LrSchedule {
    /// The rate for `epoch` (0-based).
    pub fn at(&self, epoch: usize) -> f32 {
        match *self {
            LrSchedule::Constant(lr) => lr,
            LrSchedule::Step { lr, every, gamma } => lr * gamma.powi((epoch / every.max(1)) as i32),
            LrSchedule::Cosine { lr, min, epochs } => {
                let t = (epoch as f32 / epochs.max(1) as f32).min(1.0);
                min + 0.5 * (lr - min) * (1.0 + (std::f32::consts::PI * t).cos())
            }
        }
    }
}
