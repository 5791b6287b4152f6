//! LeNet-5 (LeCun et al., 1998) for 28×28 digits.

use super::{AvgPool2d, Conv2d, Dense, Flatten, Layer, MaxPool2d, Relu, Sequential, Tanh};
use crate::error::Result;

/// Hidden-layer activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// ReLU (trains fastest here; the default).
    Relu,
    /// tanh, as in the original.
    Tanh,
}

/// Subsampling layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// 2×2 max pooling (the default).
    Max,
    /// 2×2 average pooling, as in the original's subsampling.
    Avg,
}

/// C1 6@5×5 (padding 2) → S2 2×2 → C3 16@5×5 → S4 2×2 → C5 120 → F6 84 → 10 logits.
/// C5 sees a 5×5 map with a 5×5 kernel, i.e. a dense layer on the 400 flattened values.
/// Weights are drawn from `seed` (He for ReLU, Glorot for tanh).
///
/// # Errors
/// None in practice (the shapes are fixed); the `Result` carries model validation.
pub fn lenet5(activation: Activation, pooling: Pooling, seed: u64) -> Result<Sequential> {
    let act = || -> Box<dyn Layer> {
        match activation {
            Activation::Relu => Box::new(Relu::default()),
            Activation::Tanh => Box::new(Tanh::default()),
        }
    };
    let pool = || -> Box<dyn Layer> {
        match pooling {
            Pooling::Max => Box::new(MaxPool2d::new(2)),
            Pooling::Avg => Box::new(AvgPool2d::new(2)),
        }
    };
    let init = match activation {
        Activation::Relu => super::Init::HeUniform,
        Activation::Tanh => super::Init::GlorotUniform,
    };
    let conv = |c_in, c_out, pad, s| -> Result<Box<dyn Layer>> {
        let p = crate::Conv2dParams::default().padding(crate::Padding::uniform(pad));
        Ok(Box::new(Conv2d::with(c_in, c_out, (5, 5), p, true, init, s)?))
    };
    Sequential::new(
        &[1, 28, 28],
        vec![
            conv(1, 6, 2, seed)?,
            act(),
            pool(),
            conv(6, 16, 0, seed + 1)?,
            act(),
            pool(),
            Box::new(Flatten::default()),
            Box::new(Dense::with_init(400, 120, init, seed + 2)),
            act(),
            Box::new(Dense::with_init(120, 84, init, seed + 3)),
            act(),
            Box::new(Dense::with_init(84, 10, super::Init::GlorotUniform, seed + 4)),
        ],
    )
}
