//! The layers.

use super::{Init, Layer, Param};
use crate::conv::{Conv2dPlan, ConvOptions, PackedWeights};
use crate::error::{expect_shape, Error, Result};
use crate::gemm::{gemm, Bias, GemmParams, MatMut, MatRef};
use crate::geometry::{Conv2dParams, Padding, Pool2dGeometry, Pool2dParams};
use crate::{pool, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, PoisonError, RwLock};

fn not_trained(layer: &str) -> Error {
    Error::param(format!("{layer} backward"), "called", "before a training forward pass (forward(x, true))")
}

/// 2-D convolution with optional bias; runs on the [`crate::conv`] kernels (a plan per
/// input shape, kept until the shape changes). Inference ([`Layer::infer`]) packs the
/// weights once for the plan's algorithm ([`Conv2dPlan::pack_weights`]: the Winograd
/// filter transforms) and keeps them until the weights or options change; training passes
/// use the weights as they are at each step.
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    grad_w: Tensor,
    grad_b: Option<Tensor>,
    params: Conv2dParams,
    opts: ConvOptions,
    plan: Option<(Vec<usize>, Conv2dPlan)>,
    input: Option<Tensor>,
    /// Weights packed for inference, dropped whenever the weights can change.
    packed: RwLock<Option<Arc<PackedWeights>>>,
}

impl Conv2d {
    /// `c_in → c_out` channels, a square `kernel`, symmetric `padding`, stride 1, with bias,
    /// He-uniform weights from `seed`.
    ///
    /// # Panics
    /// Never for sizes whose weight tensor fits in memory.
    pub fn new(c_in: usize, c_out: usize, kernel: usize, padding: usize, seed: u64) -> Self {
        let p = Conv2dParams::default().padding(Padding::uniform(padding));
        Self::with(c_in, c_out, (kernel, kernel), p, true, Init::HeUniform, seed).expect("valid convolution layer")
    }

    /// Any geometry: `c_in → c_out`, kernel `(r, s)`, `params` (stride, padding, dilation,
    /// groups), bias on or off, an initialisation.
    ///
    /// # Errors
    /// Groups that do not divide both channel counts; zero sizes; overflow.
    pub fn with(
        c_in: usize,
        c_out: usize,
        (r, s): (usize, usize),
        params: Conv2dParams,
        bias: bool,
        init: Init,
        seed: u64,
    ) -> Result<Self> {
        let g = params.groups.max(1);
        if !c_in.is_multiple_of(g) || !c_out.is_multiple_of(g) || r == 0 || s == 0 {
            return Err(Error::param(
                "Conv2d",
                format!("{c_in}→{c_out}, {r}×{s}, groups {g}"),
                "groups must divide both channel counts and the kernel must be non-empty",
            ));
        }
        let shape = [c_out, c_in / g, r, s];
        // Allocation is checked (an absurd size is an error, not an abort).
        let mut weight = Tensor::zeros(&shape)?;
        init.fill(weight.data_mut(), c_in / g * r * s, c_out / g * r * s, seed);
        Ok(Conv2d {
            weight,
            grad_w: Tensor::zeros(&shape)?,
            bias: bias.then(|| Tensor::zeros(&[c_out])).transpose()?,
            grad_b: bias.then(|| Tensor::zeros(&[c_out])).transpose()?,
            params,
            opts: ConvOptions::default(),
            plan: None,
            input: None,
            packed: RwLock::new(None),
        })
    }

    /// Sets how the kernels run (algorithm, threads, instruction set).
    pub fn options(mut self, opts: ConvOptions) -> Self {
        self.opts = opts;
        self.plan = None;
        *self.packed.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        self
    }

    /// The weight `[K, C/groups, R, S]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The forward pass through the cached plan (or a fresh one for another shape), with
    /// ReLU fused if asked; with the packed weights when `packed` (inference).
    fn run_forward(&self, x: &Tensor, relu: bool, packed: bool) -> Result<Tensor> {
        let fresh;
        let plan = match &self.plan {
            Some((s, p)) if s == x.shape() => p,
            _ => {
                fresh = Conv2dPlan::new(x.shape(), self.weight.shape(), &self.params, &self.opts)?;
                &fresh
            }
        };
        let mut y = Tensor::for_overwrite(&plan.geometry().output_shape())?;
        if packed {
            let weights = self.packed_for(plan)?;
            plan.forward_packed_into(x, &weights, self.bias.as_ref(), relu, &mut y)?;
        } else {
            plan.forward_into(x, &self.weight, self.bias.as_ref(), relu, &mut y)?;
        }
        Ok(y)
    }

    /// The weights packed for `plan`'s algorithm: the kept ones, or packed now and kept.
    /// (Several threads may pack at once; each packing is the same, the last one is kept.)
    fn packed_for(&self, plan: &Conv2dPlan) -> Result<Arc<PackedWeights>> {
        let kept = self.packed.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(p) = kept.filter(|p| plan.accepts(p)) {
            return Ok(p);
        }
        let p = Arc::new(plan.pack_weights(&self.weight)?);
        *self.packed.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&p));
        Ok(p)
    }

    /// Makes sure the cached plan is for `shape`.
    fn ensure_plan(&mut self, shape: &[usize]) -> Result<()> {
        if self.plan.as_ref().is_none_or(|(s, _)| s != shape) {
            let plan = Conv2dPlan::new(shape, self.weight.shape(), &self.params, &self.opts)?;
            self.plan = Some((shape.to_vec(), plan));
        }
        Ok(())
    }
}

impl Layer for Conv2d {
    fn describe(&self) -> String {
        let [k, cg, r, s] = self.weight.dims4("w").unwrap_or([0; 4]);
        format!("Conv2d({}→{k}, {r}×{s})", cg * self.params.groups)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let g = crate::Conv2dGeometry::new(input, self.weight.shape(), &self.params)?;
        Ok(g.output_shape().to_vec())
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.ensure_plan(x.shape())?;
        // Training changes the weights after every step: packing them would not be reused.
        let y = self.run_forward(x, false, !train)?;
        self.input = train.then(|| x.clone());
        Ok(y)
    }

    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        self.run_forward(x, false, true)
    }

    fn infer_relu(&self, x: &Tensor) -> Option<Result<Tensor>> {
        Some(self.run_forward(x, true, true))
    }

    fn backward(&mut self, grad_out: &Tensor) -> Result<Tensor> {
        self.backward_params(grad_out)?;
        let plan = self.plan.as_ref().map(|(_, p)| p).ok_or_else(|| not_trained("Conv2d"))?;
        plan.backward_data(grad_out, &self.weight)
    }

    fn has_params(&self) -> bool {
        true
    }

    fn backward_params(&mut self, grad_out: &Tensor) -> Result<()> {
        let x = self.input.as_ref().ok_or_else(|| not_trained("Conv2d"))?;
        let plan = match &self.plan {
            Some((s, p)) if s == x.shape() => p,
            _ => return Err(not_trained("Conv2d")),
        };
        plan.backward_weight_into(x, grad_out, &mut self.grad_w)?;
        if let Some(gb) = &mut self.grad_b {
            *gb = plan.backward_bias(grad_out)?;
        }
        Ok(())
    }

    fn params(&mut self) -> Vec<Param<'_>> {
        // The caller may change the weights: the packed copy is stale from here.
        *self.packed.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        let mut v = vec![Param { name: "weight", value: &mut self.weight, grad: &mut self.grad_w, decay: true }];
        if let (Some(b), Some(gb)) = (&mut self.bias, &mut self.grad_b) {
            v.push(Param { name: "bias", value: b, grad: gb, decay: false });
        }
        v
    }

    fn per_sample(&self) -> bool {
        true
    }

    fn replicate(&self, _index: usize) -> Option<Box<dyn Layer>> {
        Some(Box::new(Conv2d {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            grad_w: self.grad_w.clone(),
            grad_b: self.grad_b.clone(),
            params: self.params,
            opts: self.opts,
            plan: None,
            input: None,
            packed: RwLock::new(None),
        }))
    }
}

/// Fully connected: `y = x·Wᵀ + b`, `x: [N, IN]`, `W: [OUT, IN]`, on the GEMM engine.
pub struct Dense {
    weight: Tensor,
    bias: Tensor,
    grad_w: Tensor,
    grad_b: Tensor,
    input: Option<Tensor>,
}

impl Dense {
    /// `inputs → outputs` with He-uniform weights from `seed` and zero bias.
    ///
    /// # Panics
    /// If `inputs · outputs` overflows.
    pub fn new(inputs: usize, outputs: usize, seed: u64) -> Self {
        Self::with_init(inputs, outputs, Init::HeUniform, seed)
    }

    /// With a chosen initialisation.
    ///
    /// # Panics
    /// If `inputs · outputs` overflows or cannot be allocated; [`Dense::try_with_init`]
    /// returns an error instead.
    pub fn with_init(inputs: usize, outputs: usize, init: Init, seed: u64) -> Self {
        Self::try_with_init(inputs, outputs, init, seed).expect("Dense layer size")
    }

    /// [`Dense::with_init`] for sizes that come from outside the program.
    ///
    /// # Errors
    /// [`Error::Overflow`] if the weight's size overflows or cannot be allocated.
    pub fn try_with_init(inputs: usize, outputs: usize, init: Init, seed: u64) -> Result<Self> {
        let mut weight = Tensor::zeros(&[outputs, inputs])?;
        init.fill(weight.data_mut(), inputs, outputs, seed);
        Ok(Dense {
            grad_w: Tensor::zeros(&[outputs, inputs])?,
            weight,
            bias: Tensor::zeros(&[outputs])?,
            grad_b: Tensor::zeros(&[outputs])?,
            input: None,
        })
    }

    /// The weight `[OUT, IN]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `x·Wᵀ + b`, then ReLU if asked (fused into the GEMM's epilogue).
    fn run_forward(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let [n, o] = self.output_shape(x.shape())?[..] else {
            return Err(Error::shape("dense output", "2-D", &[]));
        };
        let i = x.shape()[1];
        let mut y = Tensor::for_overwrite(&[n, o])?;
        gemm(
            MatRef::row_major(x.data(), n, i)?,
            MatRef::row_major(self.weight.data(), o, i)?.t(),
            MatMut::row_major(y.data_mut(), n, o)?,
            &GemmParams::default().bias(Bias::PerCol(self.bias.data())).relu(relu),
        )?;
        Ok(y)
    }
}

impl Layer for Dense {
    fn describe(&self) -> String {
        let [o, i] = self.weight.dims2("w").unwrap_or([0; 2]);
        format!("Dense({i}→{o})")
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let [o, i] = self.weight.dims2("dense weight")?;
        match *input {
            [n, inp] if inp == i => Ok(vec![n, o]),
            _ => Err(Error::shape("dense input", format!("[N, {i}]"), input)),
        }
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.infer(x)?;
        self.input = train.then(|| x.clone());
        Ok(y)
    }

    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        self.run_forward(x, false)
    }

    fn infer_relu(&self, x: &Tensor) -> Option<Result<Tensor>> {
        Some(self.run_forward(x, true))
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        self.backward_params(dy)?;
        let [o, i] = self.weight.dims2("dense weight")?;
        let n = dy.shape()[0];
        // dx = dy·W.
        let mut dx = Tensor::for_overwrite(&[n, i])?;
        gemm(
            MatRef::row_major(dy.data(), n, o)?,
            MatRef::row_major(self.weight.data(), o, i)?,
            MatMut::row_major(dx.data_mut(), n, i)?,
            &GemmParams::default(),
        )?;
        Ok(dx)
    }

    fn has_params(&self) -> bool {
        true
    }

    fn backward_params(&mut self, dy: &Tensor) -> Result<()> {
        let x = self.input.as_ref().ok_or_else(|| not_trained("Dense"))?;
        let [o, i] = self.weight.dims2("dense weight")?;
        let n = x.shape()[0];
        expect_shape("dense grad_output", dy.shape(), &[n, o])?;
        // dW = dyᵀ·x, db = Σ_rows dy.
        gemm(
            MatRef::row_major(dy.data(), n, o)?.t(),
            MatRef::row_major(x.data(), n, i)?,
            MatMut::row_major(self.grad_w.data_mut(), o, i)?,
            &GemmParams::default(),
        )?;
        let gb = self.grad_b.data_mut();
        gb.fill(0.0);
        for row in dy.data().chunks_exact(o.max(1)) {
            gb.iter_mut().zip(row).for_each(|(b, &g)| *b += g);
        }
        Ok(())
    }

    fn params(&mut self) -> Vec<Param<'_>> {
        vec![
            Param { name: "weight", value: &mut self.weight, grad: &mut self.grad_w, decay: true },
            Param { name: "bias", value: &mut self.bias, grad: &mut self.grad_b, decay: false },
        ]
    }

    fn per_sample(&self) -> bool {
        true
    }

    fn replicate(&self, _index: usize) -> Option<Box<dyn Layer>> {
        Some(Box::new(Dense {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            grad_w: self.grad_w.clone(),
            grad_b: self.grad_b.clone(),
            input: None,
        }))
    }
}

/// Max pooling.
pub struct MaxPool2d {
    params: Pool2dParams,
    cache: Option<(Vec<usize>, Vec<u32>)>,
}

impl MaxPool2d {
    /// A `k × k` window with stride `k`.
    pub fn new(k: usize) -> Self {
        Self::with(Pool2dParams::new(k, k))
    }
    /// Any pooling geometry.
    pub fn with(params: Pool2dParams) -> Self {
        MaxPool2d { params, cache: None }
    }
}

impl Layer for MaxPool2d {
    fn per_sample(&self) -> bool {
        true
    }
    fn replicate(&self, _index: usize) -> Option<Box<dyn Layer>> {
        Some(Box::new(MaxPool2d::with(self.params)))
    }
    fn describe(&self) -> String {
        format!("MaxPool2d({}×{})", self.params.kernel.0, self.params.kernel.1)
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(Pool2dGeometry::new(input, &self.params)?.output_shape().to_vec())
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        pool::max_pool2d_values(x, &self.params)
    }
    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            self.cache = None;
            return self.infer(x);
        }
        let (y, arg) = pool::max_pool2d(x, &self.params)?;
        self.cache = Some((x.shape().to_vec(), arg));
        Ok(y)
    }
    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let (shape, arg) = self.cache.as_ref().ok_or_else(|| not_trained("MaxPool2d"))?;
        pool::max_pool2d_backward(dy, arg, shape)
    }
}

/// Average pooling.
pub struct AvgPool2d {
    params: Pool2dParams,
    input_shape: Option<Vec<usize>>,
}

impl AvgPool2d {
    /// A `k × k` window with stride `k`.
    pub fn new(k: usize) -> Self {
        Self::with(Pool2dParams::new(k, k))
    }
    /// Any pooling geometry.
    pub fn with(params: Pool2dParams) -> Self {
        AvgPool2d { params, input_shape: None }
    }
}

impl Layer for AvgPool2d {
    fn per_sample(&self) -> bool {
        true
    }
    fn replicate(&self, _index: usize) -> Option<Box<dyn Layer>> {
        Some(Box::new(AvgPool2d::with(self.params)))
    }
    fn describe(&self) -> String {
        format!("AvgPool2d({}×{})", self.params.kernel.0, self.params.kernel.1)
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(Pool2dGeometry::new(input, &self.params)?.output_shape().to_vec())
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        pool::avg_pool2d(x, &self.params)
    }
    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.input_shape = train.then(|| x.shape().to_vec());
        self.infer(x)
    }
    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let shape = self.input_shape.as_ref().ok_or_else(|| not_trained("AvgPool2d"))?;
        pool::avg_pool2d_backward(dy, shape, &self.params)
    }
}

/// Global average pooling `[N, C, H, W] → [N, C]`.
#[derive(Default)]
pub struct GlobalAvgPool {
    input_shape: Option<Vec<usize>>,
}

impl Layer for GlobalAvgPool {
    fn per_sample(&self) -> bool {
        true
    }
    fn replicate(&self, _index: usize) -> Option<Box<dyn Layer>> {
        Some(Box::new(GlobalAvgPool::default()))
    }
    fn describe(&self) -> String {
        "GlobalAvgPool".into()
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match *input {
            [n, c, h, w] if h > 0 && w > 0 => Ok(vec![n, c]),
            _ => Err(Error::shape("global_avg_pool input", "[N, C, H, W] with H, W ≥ 1", input)),
        }
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let [n, c, h, w] = x.dims4("global_avg_pool input")?;
        self.output_shape(x.shape())?;
        let hw = h * w;
        let y: Vec<f32> = x.data().chunks_exact(hw).map(|p| p.iter().sum::<f32>() / hw as f32).collect();
        Tensor::new(y, &[n, c])
    }
    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.infer(x)?;
        self.input_shape = train.then(|| x.shape().to_vec());
        Ok(y)
    }
    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let shape = self.input_shape.as_ref().ok_or_else(|| not_trained("GlobalAvgPool"))?;
        let hw = shape[2] * shape[3];
        expect_shape("global_avg_pool grad_output", dy.shape(), &shape[..2])?;
        let d: Vec<f32> = dy.data().iter().flat_map(|&g| std::iter::repeat_n(g / hw as f32, hw)).collect();
        Tensor::new(d, shape)
    }
}

/// `[N, …] → [N, ∏…]`.
#[derive(Default)]
pub struct Flatten {
    input_shape: Option<Vec<usize>>,
}

impl Layer for Flatten {
    fn per_sample(&self) -> bool {
        true
    }
    fn replicate(&self, _index: usize) -> Option<Box<dyn Layer>> {
        Some(Box::new(Flatten::default()))
    }
    fn describe(&self) -> String {
        "Flatten".into()
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input.split_first() {
            Some((&n, rest)) if !rest.is_empty() => Ok(vec![n, rest.iter().product()]),
            _ => Err(Error::shape("flatten input", "at least 2-D [N, …]", input)),
        }
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        x.clone().reshape(&self.output_shape(x.shape())?)
    }
    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.infer(x)?;
        self.input_shape = train.then(|| x.shape().to_vec());
        Ok(y)
    }
    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let shape = self.input_shape.as_ref().ok_or_else(|| not_trained("Flatten"))?;
        dy.clone().reshape(shape)
    }
}

/// Maps `f` over `src` into a new buffer, in parallel chunks when large (each element is
/// computed the same way whatever the split).
fn par_map(src: &[f32], f: impl Fn(usize, f32) -> f32 + Sync + Send) -> Vec<f32> {
    const CHUNK: usize = 1 << 14;
    let mut out = crate::buffers::dirty(src.len());
    let threads = crate::parallel::Parallelism::Auto.threads_for(8.0 * src.len() as f64);
    if threads > 1 && src.len() > CHUNK {
        let ptr = crate::parallel::SharedMut::new(&mut out);
        crate::parallel::for_each_part(src.len().div_ceil(CHUNK), |c| {
            let (lo, hi) = (c * CHUNK, ((c + 1) * CHUNK).min(src.len()));
            for (i, &v) in src[lo..hi].iter().enumerate() {
                // SAFETY: chunk c writes only out[lo..hi], inside out, no other part does.
                unsafe { *ptr.get().add(lo + i) = f(lo + i, v) };
            }
        });
    } else {
        out.iter_mut().zip(src).enumerate().for_each(|(i, (o, &v))| *o = f(i, v));
    }
    out
}

/// Element-wise layers share this: forward `y = f(x)`, backward `dx = dy · f'` written in
/// terms of the cached output `y` alone (ReLU: `y > 0` exactly when `x > 0`).
macro_rules! elementwise {
    ($(#[$doc:meta])* $name:ident, $label:literal, relu $is_relu:literal, |$x:ident| $f:expr, |$yc:ident, $g:ident| $df:expr) => {
        $(#[$doc])*
        #[derive(Default)]
        pub struct $name {
            output: Option<Tensor>,
        }

        impl Layer for $name {
            fn per_sample(&self) -> bool {
                true
            }
            fn replicate(&self, _index: usize) -> Option<Box<dyn Layer>> {
                Some(Box::new($name::default()))
            }
            fn is_relu(&self) -> bool {
                $is_relu
            }
            fn describe(&self) -> String {
                $label.into()
            }
            fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
                Ok(input.to_vec())
            }
            fn infer(&self, x: &Tensor) -> Result<Tensor> {
                Tensor::new(par_map(x.data(), |_, $x| $f), x.shape())
            }
            fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
                let y = self.infer(x)?;
                self.output = train.then(|| y.clone());
                Ok(y)
            }
            fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
                let ys = self.output.as_ref().ok_or_else(|| not_trained($label))?;
                expect_shape(concat!($label, " grad_output"), dy.shape(), ys.shape())?;
                let yd = ys.data();
                Tensor::new(par_map(dy.data(), |i, $g| { let $yc = yd[i]; $df }), ys.shape())
            }
        }
    };
}

elementwise!(
    /// `max(x, 0)` (NaN propagates); derivative 0 at 0.
    Relu, "ReLU", relu true, |x| if x < 0.0 { 0.0 } else { x }, |y, g| if y > 0.0 { g } else { 0.0 }
);
elementwise!(
    /// `1 / (1 + e^−x)`, computed without overflow.
    Sigmoid, "Sigmoid", relu false,
    |x| if x >= 0.0 { 1.0 / (1.0 + (-x).exp()) } else { let e = x.exp(); e / (1.0 + e) },
    |y, g| g * y * (1.0 - y)
);
elementwise!(
    /// `tanh(x)`.
    Tanh, "Tanh", relu false, |x| x.tanh(), |y, g| g * (1.0 - y * y)
);

/// Row-wise softmax of `[N, classes]` (stable); backward is the Jacobian-vector product.
/// Train on logits with [`super::softmax_cross_entropy`] instead where possible (fused,
/// stabler); this layer is for models that must output probabilities.
#[derive(Default)]
pub struct Softmax {
    output: Option<Tensor>,
}

impl Layer for Softmax {
    fn per_sample(&self) -> bool {
        true
    }
    fn replicate(&self, _index: usize) -> Option<Box<dyn Layer>> {
        Some(Box::new(Softmax::default()))
    }
    fn describe(&self) -> String {
        "Softmax".into()
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match *input {
            [n, c] => Ok(vec![n, c]),
            _ => Err(Error::shape("softmax input", "2-D [N, classes]", input)),
        }
    }
    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.infer(x)?;
        self.output = train.then(|| y.clone());
        Ok(y)
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let [_, c] = x.dims2("softmax input")?;
        let mut y = x.clone();
        for row in y.data_mut().chunks_exact_mut(c.max(1)) {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|v| *v = (*v - m).exp());
            let s: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
        }
        Ok(y)
    }
    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let y = self.output.as_ref().ok_or_else(|| not_trained("Softmax"))?;
        expect_shape("softmax grad_output", dy.shape(), y.shape())?;
        let c = y.shape()[1].max(1);
        let mut dx = dy.clone();
        for (d, yr) in dx.data_mut().chunks_exact_mut(c).zip(y.data().chunks_exact(c)) {
            let dot: f32 = d.iter().zip(yr).map(|(a, b)| a * b).sum();
            d.iter_mut().zip(yr).for_each(|(g, &p)| *g = p * (*g - dot));
        }
        Ok(dx)
    }
}

/// Inverted dropout: in training, zero each element with probability `p` and scale the rest
/// by `1/(1−p)`; in inference, the identity. The mask comes from a seeded generator.
pub struct Dropout {
    p: f32,
    seed: u64,
    rng: StdRng,
    mask: Option<Vec<f32>>,
}

impl Dropout {
    /// Drop probability `p` in `[0, 1)`, mask generator seeded with `seed`.
    ///
    /// # Errors
    /// `p` outside `[0, 1)` or not finite.
    pub fn new(p: f32, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::param("dropout probability", p, "must be in [0, 1)"));
        }
        Ok(Dropout { p, seed, rng: StdRng::seed_from_u64(seed), mask: None })
    }
}

impl Layer for Dropout {
    fn per_sample(&self) -> bool {
        true
    }
    /// Replica `index` draws its masks from its own generator, seeded from this layer's
    /// seed and `index`.
    fn replicate(&self, index: usize) -> Option<Box<dyn Layer>> {
        let seed = self.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Some(Box::new(Dropout { p: self.p, seed, rng: StdRng::seed_from_u64(seed), mask: None }))
    }
    fn describe(&self) -> String {
        format!("Dropout({})", self.p)
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            self.mask = None;
            return self.infer(x);
        }
        let keep = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = (0..x.len()).map(|_| if self.rng.random::<f32>() < self.p { 0.0 } else { keep }).collect();
        let y: Vec<f32> = x.data().iter().zip(&mask).map(|(a, m)| a * m).collect();
        self.mask = Some(mask);
        Tensor::new(y, x.shape())
    }
    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let mask = self.mask.as_ref().ok_or_else(|| not_trained("Dropout"))?;
        if mask.len() != dy.len() {
            return Err(Error::shape("dropout grad_output", format!("{} elements", mask.len()), dy.shape()));
        }
        Tensor::new(dy.data().iter().zip(mask).map(|(g, m)| g * m).collect(), dy.shape())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::with_threads;

    #[test]
    fn par_map_splits_without_changing_a_bit() {
        // Above the chunk size and the thread threshold, so two threads really split it.
        let src: Vec<f32> = (0..300_000usize).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0).collect();
        let f = |i: usize, v: f32| (v * 1.5).tanh() + i as f32 * 1e-6;
        let one = with_threads(1, || par_map(&src, f));
        let two = with_threads(2, || par_map(&src, f));
        assert!(one.iter().zip(&two).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(one[123_456], f(123_456, src[123_456]));
    }
}
