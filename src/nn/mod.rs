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

use crate::error::{expect_shape as expect_same, Error, Result};
use crate::Tensor;

/// A parameter and its gradient, as optimizers see them.
pub struct Param<'a> {
    /// A stable name, e.g. `"weight"`.
    pub name: &'static str,
    /// The value.
    pub value: &'a mut Tensor,
    /// ∂loss/∂value from the last backward pass.
    pub grad: &'a mut Tensor,
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

    /// [`Layer::infer`] followed by ReLU in one pass, for layers that can apply `max(·, 0)`
    /// while each output tile is still in registers (convolution, dense). `None` (the
    /// default) when the layer cannot. [`Sequential::infer`] uses it for a layer followed
    /// by one whose [`Layer::is_relu`] is true.
    fn infer_relu(&self, x: &Tensor) -> Option<Result<Tensor>> {
        let _ = x;
        None
    }

    /// Whether this layer is exactly `max(x, 0)` (so that [`Layer::infer_relu`] of the layer
    /// before it may stand for both).
    fn is_relu(&self) -> bool {
        false
    }

    /// Whether the layer treats the samples of a batch independently (every output row
    /// depends on its own input row alone, in inference). [`Sequential`] splits large
    /// batches into shards only when every layer says so. Default: `false`.
    fn per_sample(&self) -> bool {
        false
    }

    /// A copy of this layer for shard `index` of a batch: the same configuration and
    /// parameter values, with its own gradients and caches, so that shards can run
    /// forward and backward at the same time. A layer with randomness (dropout) derives
    /// its replica's stream from `index`. `None` (the default) keeps the model from
    /// splitting batches in training.
    fn replicate(&self, index: usize) -> Option<Box<dyn Layer>> {
        let _ = index;
        None
    }
}

/// Samples per shard: batches larger than this are split into `⌈N / SHARD_SIZE⌉` shards of
/// nearly equal size that run forward and backward side by side, each on its own replica
/// of the layers, with the parameter gradients summed shard by shard in order. The split
/// depends on the batch size alone, never on the number of threads, so training gives the
/// same bits on any number of threads.
pub const SHARD_SIZE: usize = 32;

/// The shards of a batch of `n`: one range when `n ≤ SHARD_SIZE`.
fn shard_ranges(n: usize) -> Vec<std::ops::Range<usize>> {
    let shards = n.div_ceil(SHARD_SIZE).max(1);
    (0..shards).map(|i| n * i / shards..n * (i + 1) / shards).collect()
}

/// Rows `range` of a batch-first tensor, as a tensor of their own.
fn batch_rows(x: &Tensor, range: std::ops::Range<usize>) -> Result<Tensor> {
    let per: usize = x.shape()[1..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[0] = range.len();
    Tensor::new(crate::buffers::copied(&x.data()[range.start * per..range.end * per]), &shape)
}

/// Batch-first tensors stacked along the batch dimension (all with the same sample shape).
fn concat_rows(parts: Vec<Tensor>) -> Result<Tensor> {
    let Some(first) = parts.first() else { return Err(Error::shape("model output", "at least one shard", &[])) };
    let mut shape = first.shape().to_vec();
    shape[0] = parts.iter().map(|t| t.shape()[0]).sum();
    if parts.len() == 1 {
        return Ok(parts.into_iter().next().expect("one part"));
    }
    let mut data = crate::buffers::with_capacity(parts.iter().map(Tensor::len).sum());
    for p in &parts {
        data.extend_from_slice(p.data());
    }
    Tensor::new(data, &shape)
}

/// Backward through `layers`, last first. With `params_only`, stops at the first layer with
/// parameters and skips its input gradient (returning `None`).
fn backward_through(layers: &mut [Box<dyn Layer>], grad: &Tensor, params_only: bool) -> Result<Option<Tensor>> {
    let stop = if params_only {
        match layers.iter().position(|l| l.has_params()) {
            Some(first) => first,
            None => return Ok(None),
        }
    } else {
        0
    };
    let mut g = grad.clone();
    if layers.is_empty() {
        return Ok(Some(g));
    }
    for layer in layers[stop + 1..].iter_mut().rev() {
        g = layer.backward(&g)?;
    }
    match layers.get_mut(stop) {
        Some(layer) if params_only => layer.backward_params(&g).map(|()| None),
        Some(layer) => layer.backward(&g).map(Some),
        None => Ok(Some(g)),
    }
}

/// Layers applied in order.
///
/// Batches larger than [`SHARD_SIZE`] are split into shards that run side by side: in
/// inference directly on the shared layers, in training on replicas of the layers (made on
/// first use with [`Layer::replicate`], their parameters refreshed from this model's before
/// every training forward pass). The parameter gradients of the shards are summed into this
/// model's in shard order, so [`Sequential::params`] and the optimizers see the whole
/// batch's gradients. After a sharded training forward, only [`Sequential::backward`] and
/// [`Sequential::backward_params`] can run its backward pass (the layers' own caches stay
/// empty). Models with a layer that is not [`Layer::per_sample`] or cannot replicate run
/// batches whole.
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
    input: Vec<usize>,
    /// One set of layers per shard (empty until a sharded training forward needs them).
    replicas: Vec<Vec<Box<dyn Layer>>>,
    /// The shards of the last training forward pass, if it was split.
    split: Option<Vec<std::ops::Range<usize>>>,
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
        Ok(Sequential { layers, input: input.to_vec(), replicas: Vec::new(), split: None })
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input
    }

    /// The layers.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// Mutable access to the layers (for loading weights, inspecting activations). Drops
    /// the shard replicas, which are rebuilt from the layers when next needed.
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Layer>] {
        self.replicas.clear();
        self.split = None;
        &mut self.layers
    }

    /// The shards for a batch of `n`, or `None` when it runs whole.
    fn shards(&self, n: usize) -> Option<Vec<std::ops::Range<usize>>> {
        (n > SHARD_SIZE && self.layers.iter().all(|l| l.per_sample())).then(|| shard_ranges(n))
    }

    /// Inference through every layer via [`Layer::infer`]: the same values as
    /// `forward(x, false)`, through `&self`, so threads can share one model.
    ///
    /// # Errors
    /// An input whose per-sample shape differs from the model's.
    pub fn infer(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let run = |x: &Tensor| -> Result<Tensor> {
            let mut h = x.clone();
            let mut i = 0;
            while let Some(layer) = self.layers.get(i) {
                let fused = match self.layers.get(i + 1) {
                    Some(next) if next.is_relu() => layer.infer_relu(&h),
                    _ => None,
                };
                (h, i) = match fused {
                    Some(y) => (y?, i + 2),
                    None => (layer.infer(&h)?, i + 1),
                };
            }
            Ok(h)
        };
        match self.shards(x.shape()[0]) {
            Some(mut ranges) => {
                let outs = crate::parallel::map_shards(&mut ranges, |_, r| run(&batch_rows(x, r.clone())?));
                concat_rows(outs.into_iter().collect::<Result<Vec<_>>>()?)
            }
            None => run(x),
        }
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        if x.shape().len() != self.input.len() + 1 || x.shape()[1..] != self.input[..] {
            let want: Vec<String> =
                std::iter::once("N".to_string()).chain(self.input.iter().map(usize::to_string)).collect();
            return Err(Error::shape("model input", format!("[{}]", want.join(", ")), x.shape()));
        }
        Ok(())
    }

    /// Makes `count` replicas with this model's parameter values; `false` if a layer cannot
    /// replicate.
    fn prepare_replicas(&mut self, count: usize) -> Result<bool> {
        while self.replicas.len() < count {
            let index = self.replicas.len();
            let Some(replica) = self.layers.iter().map(|l| l.replicate(index)).collect::<Option<Vec<_>>>() else {
                return Ok(false);
            };
            self.replicas.push(replica);
        }
        for (l, layer) in self.layers.iter_mut().enumerate() {
            if !layer.has_params() {
                continue;
            }
            let master = layer.params();
            for replica in &mut self.replicas[..count] {
                for (r, m) in replica[l].params().into_iter().zip(&master) {
                    expect_same(m.name, r.value.shape(), m.value.shape())?;
                    r.value.data_mut().copy_from_slice(m.value.data());
                }
            }
        }
        Ok(true)
    }

    /// Forward through every layer.
    ///
    /// # Errors
    /// An input whose per-sample shape differs from the model's.
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        self.split = None;
        if let Some(ranges) = self.shards(x.shape()[0]) {
            if !train {
                return self.infer(x);
            }
            if self.prepare_replicas(ranges.len())? {
                let replicas = &mut self.replicas[..ranges.len()];
                let outs = crate::parallel::map_shards(replicas, |s, layers| {
                    let mut h = batch_rows(x, ranges[s].clone())?;
                    for layer in layers.iter_mut() {
                        h = layer.forward(&h, true)?;
                    }
                    Ok(h)
                });
                let y = concat_rows(outs.into_iter().collect::<Result<Vec<_>>>()?)?;
                self.split = Some(ranges);
                return Ok(y);
            }
        }
        let mut h = x.clone();
        for layer in &mut self.layers {
            h = layer.forward(&h, train)?;
        }
        Ok(h)
    }

    /// Backward over the shards of the last training forward: each replica's backward on
    /// its rows of `grad`, then the parameter gradients summed into this model's in shard
    /// order. Returns the stacked input gradients (unless `params_only`).
    fn backward_shards(
        &mut self,
        ranges: &[std::ops::Range<usize>],
        grad: &Tensor,
        params_only: bool,
    ) -> Result<Option<Tensor>> {
        let n = ranges.last().map_or(0, |r| r.end);
        if grad.shape().first() != Some(&n) {
            return Err(Error::shape(
                "model grad_output",
                format!("[{n}, …] (the batch of the forward pass)"),
                grad.shape(),
            ));
        }
        let replicas = &mut self.replicas[..ranges.len()];
        let outs = crate::parallel::map_shards(replicas, |s, layers| {
            backward_through(layers, &batch_rows(grad, ranges[s].clone())?, params_only)
        });
        let input_grads = outs.into_iter().collect::<Result<Vec<_>>>()?;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            if !layer.has_params() {
                continue;
            }
            // Each replica's parameter list is built once per layer, not once per parameter.
            let mut shard_params: Vec<Vec<Param<'_>>> =
                self.replicas[..ranges.len()].iter_mut().map(|replica| replica[l].params()).collect();
            for (k, p) in layer.params().into_iter().enumerate() {
                let sum = p.grad.data_mut();
                for (s, rp) in shard_params.iter_mut().enumerate() {
                    let g = rp[k].grad.data();
                    if s == 0 {
                        sum.copy_from_slice(g);
                    } else {
                        sum.iter_mut().zip(g).for_each(|(a, &b)| *a += b);
                    }
                }
            }
        }
        if params_only {
            return Ok(None);
        }
        concat_rows(input_grads.into_iter().map(|g| g.expect("input gradients requested")).collect()).map(Some)
    }

    /// Backward through every layer, last first; returns the input gradient.
    ///
    /// # Errors
    /// As [`Layer::backward`].
    pub fn backward(&mut self, grad: &Tensor) -> Result<Tensor> {
        if let Some(ranges) = self.split.clone() {
            return Ok(self.backward_shards(&ranges, grad, false)?.expect("input gradient"));
        }
        Ok(backward_through(&mut self.layers, grad, false)?.expect("input gradient"))
    }

    /// The backward pass for training: every parameter gradient, without the input gradient
    /// of the first layer with parameters nor anything below it (for LeNet-5 that skips
    /// C1's backward-data convolution).
    ///
    /// # Errors
    /// As [`Layer::backward`].
    pub fn backward_params(&mut self, grad: &Tensor) -> Result<()> {
        if let Some(ranges) = self.split.clone() {
            return self.backward_shards(&ranges, grad, true).map(|_| ());
        }
        backward_through(&mut self.layers, grad, true).map(|_| ())
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
