//! A thin layer API over the kernels: layers own their parameters and the activations their
//! backward pass needs; every number is computed by a kernel of this crate.
//!
//! ```
//! use convkit::nn::{Conv2d, Dense, Flatten, Layer, MaxPool2d, Relu, Sequential};
//! use convkit::Tensor;
//! let mut model = Sequential::new(&[1, 28, 28], vec![
//!     Box::new(Conv2d::new(1, 6, 5, 2, 7)),
//!     Box::new(Relu::default()),
//!     Box::new(MaxPool2d::new(2)),
//!     Box::new(Flatten::default()),
//!     Box::new(Dense::new(6 * 14 * 14, 10, 7)),
//! ])?;
//! let logits = model.forward(&Tensor::zeros(&[4, 1, 28, 28])?, false)?;
//! assert_eq!(logits.shape(), &[4, 10]);
//! # Ok::<(), convkit::Error>(())
//! ```

mod init;
mod io;
mod layers;
mod lenet;
mod loss;
mod metrics;
mod optim;
mod train;

pub use init::Init;
pub use io::{load_safetensors, load_safetensors_bytes, safetensors_bytes, save_safetensors};
pub use layers::{AvgPool2d, Conv2d, Dense, Dropout, Flatten, GlobalAvgPool, MaxPool2d, Relu, Sigmoid, Softmax, Tanh};
pub use lenet::{lenet5, Activation, Pooling};
pub use loss::{softmax_cross_entropy, LossValue};
pub use metrics::ConfusionMatrix;
pub use optim::{Adam, LrSchedule, Optimizer, Sgd};
pub use train::{evaluate, fit, Augment, EpochRecord, Evaluation, FitConfig, History, Progress};

use crate::error::{Error, Result};
use crate::Tensor;

/// A parameter and its gradient, as optimizers see them.
pub struct Param<'a> {
    /// A stable name, e.g. `"weight"`.
    pub name: &'static str,
    /// The value.
    pub value: &'a mut Tensor,
    /// ∂loss/∂value from the last backward pass.
    pub grad: &'a Tensor,
    /// Whether L2 weight decay applies (weights yes, biases no).
    pub decay: bool,
}

/// One layer: forward (caching what backward needs when training), backward (filling its
/// parameters' gradients and returning the input gradient), and shape inference.
pub trait Layer: Send + Sync {
    /// A short description, e.g. `"Conv2d(1→6, 5×5, pad 2)"`.
    fn describe(&self) -> String;

    /// The output shape for an input shape (batch first), or an error saying what fits.
    ///
    /// # Errors
    /// [`Error::Shape`] when the input does not fit this layer.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>>;

    /// The forward pass; `train` selects training behaviour (dropout, caching).
    ///
    /// # Errors
    /// An input that does not fit.
    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// Inference through a shared reference: the values of `forward(x, false)`, bit for bit,
    /// touching no cache, so one model can serve several threads at once.
    ///
    /// # Errors
    /// An input that does not fit.
    fn infer(&self, x: &Tensor) -> Result<Tensor>;

    /// The backward pass from the output gradient; fills parameter gradients and returns
    /// the input gradient.
    ///
    /// # Errors
    /// Called without a training forward pass first, or with a gradient of the wrong shape.
    fn backward(&mut self, grad_out: &Tensor) -> Result<Tensor>;

    /// The backward pass when the input gradient is not wanted (the first layer with
    /// parameters): fills the parameter gradients only. The default runs
    /// [`Layer::backward`] and drops the input gradient.
    ///
    /// # Errors
    /// As [`Layer::backward`].
    fn backward_params(&mut self, grad_out: &Tensor) -> Result<()> {
        self.backward(grad_out).map(|_| ())
    }

    /// Whether [`Layer::params`] is non-empty (without needing `&mut`).
    fn has_params(&self) -> bool {
        false
    }

    /// The layer's parameters with their gradients (none for most layers).
    fn params(&mut self) -> Vec<Param<'_>> {
        Vec::new()
    }
}

/// Layers applied in order.
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
    input: Vec<usize>,
}

impl Sequential {
    /// Builds a model for per-sample inputs of shape `input` (no batch dimension), checking
    /// every layer's shape in turn.
    ///
    /// # Errors
    /// [`Error::Shape`] naming the first layer whose input does not fit, with both shapes.
    pub fn new(input: &[usize], layers: Vec<Box<dyn Layer>>) -> Result<Self> {
        let mut shape: Vec<usize> = std::iter::once(1).chain(input.iter().copied()).collect();
        for (i, layer) in layers.iter().enumerate() {
            shape = layer.output_shape(&shape).map_err(|e| match e {
                Error::Shape { tensor, expected, actual } => Error::Shape {
                    tensor: format!("layer {i} ({}) on input {shape:?}, from {tensor}", layer.describe()),
                    expected,
                    actual,
                },
                other => other,
            })?;
        }
        Ok(Sequential { layers, input: input.to_vec() })
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input
    }

    /// The layers.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// Mutable access to the layers (for loading weights, inspecting activations).
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Layer>] {
        &mut self.layers
    }

    /// Inference through every layer via [`Layer::infer`]: the same values as
    /// `forward(x, false)`, through `&self`, so threads can share one model.
    ///
    /// # Errors
    /// An input whose per-sample shape differs from the model's.
    pub fn infer(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.infer(&h)?;
        }
        Ok(h)
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        if x.shape().len() != self.input.len() + 1 || x.shape()[1..] != self.input[..] {
            let want: Vec<String> =
                std::iter::once("N".to_string()).chain(self.input.iter().map(usize::to_string)).collect();
            return Err(Error::shape("model input", format!("[{}]", want.join(", ")), x.shape()));
        }
        Ok(())
    }

    /// Forward through every layer.
    ///
    /// # Errors
    /// An input whose per-sample shape differs from the model's.
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        let mut h = x.clone();
        for layer in &mut self.layers {
            h = layer.forward(&h, train)?;
        }
        Ok(h)
    }

    /// Backward through every layer, last first; returns the input gradient.
    ///
    /// # Errors
    /// As [`Layer::backward`].
    pub fn backward(&mut self, grad: &Tensor) -> Result<Tensor> {
        let mut layers = self.layers.iter_mut().rev();
        let Some(last) = layers.next() else { return Ok(grad.clone()) };
        let mut g = last.backward(grad)?;
        for layer in layers {
            g = layer.backward(&g)?;
        }
        Ok(g)
    }

    /// The backward pass for training: every parameter gradient, without the input gradient
    /// of the first layer with parameters nor anything below it (for LeNet-5 that skips
    /// C1's backward-data convolution).
    ///
    /// # Errors
    /// As [`Layer::backward`].
    pub fn backward_params(&mut self, grad: &Tensor) -> Result<()> {
        let Some(first) = self.layers.iter().position(|l| l.has_params()) else { return Ok(()) };
        let mut g = grad.clone();
        for layer in self.layers[first + 1..].iter_mut().rev() {
            g = layer.backward(&g)?;
        }
        self.layers[first].backward_params(&g)
    }

    /// Every parameter of every layer, named `"{layer index}.{name}"` by [`Self::named_params`].
    pub fn params(&mut self) -> Vec<Param<'_>> {
        self.layers.iter_mut().flat_map(|l| l.params()).collect()
    }

    /// `(name, value)` for every parameter, e.g. `("0.weight", …)`.
    pub fn named_params(&mut self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            for p in l.params() {
                out.push((format!("{i}.{}", p.name), p.value.clone()));
            }
        }
        out
    }

    /// One line per layer with its output shape.
    pub fn summary(&self) -> String {
        let mut shape: Vec<usize> = std::iter::once(1).chain(self.input.iter().copied()).collect();
        let mut s = String::new();
        for (i, l) in self.layers.iter().enumerate() {
            shape = l.output_shape(&shape).unwrap_or_default();
            s.push_str(&format!("{i:>2} {:<32} -> {:?}\n", l.describe(), &shape[1..]));
        }
        s
    }
}
