//! Fast 2-D convolution, forward and backward, with several algorithms selectable by name.
//!
//! `y[n,k,oh,ow] = b[k] + Σ_{c,r,s} x[n, g·C/G + c, oh·sh + r·dh − pt, ow·sw + s·dw − pl] · w[k,c,r,s]`
//! (cross-correlation, as every CNN library computes it), checked against
//! [`reference::conv2d`](crate::reference::conv2d).
//!
//! | [`Algorithm`] | forward | when it is the right one |
//! |---|---|---|
//! | `Im2col` | the im2col matrix is packed straight from the image into the GEMM's panels (never materialised); 1×1 stride-1 unpadded convolutions read the input as the matrix it already is | many input channels: the reduction `C/G·R·S` is long and the GEMM runs near peak |
//! | `Direct` | register-blocked loops vectorised over output width, 6 output channels at a time | few input channels (C = 1 or 3) and small problems, where lowering wastes work |
//! | `Depthwise` | one plane per channel, vectorised over output width | `groups = C = K` |
//! | `Winograd` | F(2×2, 3×3): 16 GEMMs over transformed 4×4 tiles, 2.25× fewer multiplications | 3×3, stride 1, no dilation, many channels, when accuracy matters more |
//! | `Winograd4` | F(4×4, 3×3): 36 GEMMs over transformed 6×6 tiles, written in the micro-kernel's layouts, 4× fewer multiplications; dilated kernels through a grid of the input's dilation phases | 3×3, stride 1, any dilation, many channels: fastest (`Auto` picks it), larger rounding error |
//!
//! Every algorithm shares the backward passes: backward-data as a GEMM into a column tile
//! then col2im, backward-weight as one GEMM whose reduction runs over every pixel of every
//! image (in a fixed order, so the result is bitwise identical for any thread count),
//! backward-bias as a sum.
//!
//! [`Algorithm::Auto`] picks per shape (see [`Conv2dPlan::new`]); an explicit algorithm that
//! cannot run a shape is an [`Error::Unsupported`] naming the reason.
//!
//! ```
//! use convkit::conv::{Conv2dPlan, ConvOptions};
//! use convkit::{reference, Conv2dParams, Padding, Tensor};
//! let x = Tensor::from_fn(&[2, 3, 9, 9], |i| (i % 7) as f32 - 3.0)?;
//! let w = Tensor::from_fn(&[4, 3, 3, 3], |i| (i % 5) as f32 - 2.0)?;
//! let params = Conv2dParams::default().padding(Padding::Same);
//! let plan = Conv2dPlan::new(x.shape(), w.shape(), &params, &ConvOptions::default())?;
//! let y = plan.forward(&x, &w, None)?;
//! assert_eq!(y, reference::conv2d(&x, &w, None, &params)?);
//! # Ok::<(), convkit::Error>(())
//! ```

mod backward;
mod depthwise;
mod direct;
mod direct_bw;
mod im2col;
mod interleaved;
mod kernels;
mod kvec_bw;
mod kvec_fwd;
mod measured;
mod padded;
mod phase_rows;
mod scratch;
mod strided;
mod winograd;
mod winograd4;

use crate::error::{expect_shape, Error, Result};
use crate::geometry::{Conv2dGeometry, Conv2dParams};
use crate::parallel::Parallelism;
use crate::simd::{self, SimdLevel};
use crate::Tensor;

/// A convolution algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Choose per shape.
    Auto,
    /// Lowering to GEMM, packed straight from the image.
    Im2col,
    /// Direct register-blocked loops.
    Direct,
    /// Per-channel planes for `groups = C = K`.
    Depthwise,
    /// Winograd F(2×2, 3×3): 3×3, stride 1, no dilation; 16 instead of 36 multiplications
    /// per output tile and channel pair, at a slightly larger rounding error.
    Winograd,
    /// Winograd F(4×4, 3×3): 3×3, stride 1, any dilation (a dilated layer runs as one
    /// undilated convolution of its input's dilation phases); 36 instead of 144
    /// multiplications per 4×4 output tile and channel pair, at a larger rounding error.
    Winograd4,
    /// Measured: the first plan of a shape (per instruction set and thread count) times
    /// the forward pass of every algorithm that can run it and keeps the fastest for the
    /// rest of the process (`Auto`'s choice unless another is more than 5% faster).
    /// Planning that shape the first time costs a few calls of each candidate. The choice
    /// depends on timing, so two runs (or two thread counts) may choose differently and
    /// round differently; use `Auto` or an explicit algorithm for reproducible bits.
    Measured,
}

impl Algorithm {
    /// Every explicit (non-`Auto`) algorithm.
    pub const EXPLICIT: [Algorithm; 5] =
        [Algorithm::Im2col, Algorithm::Direct, Algorithm::Depthwise, Algorithm::Winograd, Algorithm::Winograd4];

    /// The algorithm's name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Auto => "auto",
            Algorithm::Measured => "measured",
            Algorithm::Im2col => "im2col",
            Algorithm::Direct => "direct",
            Algorithm::Depthwise => "depthwise",
            Algorithm::Winograd => "winograd",
            Algorithm::Winograd4 => "winograd4",
        }
    }

    /// Parses a name as [`Algorithm::name`] spells it.
    pub fn from_name(s: &str) -> Option<Self> {
        [Algorithm::Auto, Algorithm::Measured]
            .into_iter()
            .chain(Algorithm::EXPLICIT)
            .find(|a| a.name().eq_ignore_ascii_case(s))
    }

    /// Why this algorithm cannot run `geo`, if it cannot.
    fn unsupported_reason(self, geo: &Conv2dGeometry) -> Option<String> {
        match self {
            Algorithm::Auto | Algorithm::Measured | Algorithm::Im2col => None,
            Algorithm::Direct => direct::unsupported_reason(geo),
            Algorithm::Winograd => winograd::unsupported_reason(geo),
            Algorithm::Winograd4 => winograd4::unsupported_reason(geo),
            Algorithm::Depthwise => (!(geo.groups == geo.c && geo.groups == geo.k))
                .then(|| format!("needs groups = C = K, got groups {}, C {}, K {}", geo.groups, geo.c, geo.k)),
        }
    }
}

/// A plan's weights prepared once for its forward algorithm (see
/// [`Conv2dPlan::pack_weights`]).
#[derive(Clone, Debug)]
pub struct PackedWeights {
    algorithm: Algorithm,
    level: SimdLevel,
    shape: [usize; 4],
    form: WeightForm,
    data: Vec<f32>,
}

impl PackedWeights {
    /// The algorithm the weights were prepared for.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// What [`PackedWeights`] hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WeightForm {
    /// The weights as given.
    AsGiven,
    /// 16-channel panels `[K/16][C·R·S][16]`, for the channel-vectorised direct kernel.
    KPanels,
    /// F(2×2, 3×3)'s transformed filters.
    Winograd,
    /// F(4×4, 3×3)'s transformed filters in packed-B slivers.
    Winograd4,
}

/// How a convolution runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    /// Which algorithm.
    pub algorithm: Algorithm,
    /// Threading.
    pub parallelism: Parallelism,
    /// Instruction set; `None` uses [`simd::active`].
    pub simd: Option<SimdLevel>,
}

impl Default for ConvOptions {
    /// Automatic algorithm, threading and instruction set.
    fn default() -> Self {
        ConvOptions { algorithm: Algorithm::Auto, parallelism: Parallelism::Auto, simd: None }
    }
}

impl ConvOptions {
    /// Sets the algorithm.
    pub fn algorithm(mut self, a: Algorithm) -> Self {
        self.algorithm = a;
        self
    }
    /// Sets the threading.
    pub fn parallelism(mut self, p: Parallelism) -> Self {
        self.parallelism = p;
        self
    }
    /// Forces an instruction set.
    pub fn simd(mut self, level: SimdLevel) -> Self {
        self.simd = Some(level);
        self
    }
}

/// A validated convolution problem with its algorithm chosen: build it once per shape and
/// reuse it for every call (the geometry is checked once; scratch buffers are per thread and
/// reused, so steady-state calls into `*_into` allocate nothing).
#[derive(Clone, Debug)]
pub struct Conv2dPlan {
    geo: Conv2dGeometry,
    algorithm: Algorithm,
    level: SimdLevel,
    parallelism: Parallelism,
    /// For stride-1 problems whose padding is at most the kernel's reach, backward-data is
    /// the forward convolution of the output gradient with the flipped, transposed weight:
    /// this is that convolution's plan.
    transposed: Option<Box<Conv2dPlan>>,
}

impl Conv2dPlan {
    /// Plans a convolution of an input of `input_shape` `[N, C, H, W]` with a weight of
    /// `weight_shape` `[K, C/groups, R, S]`.
    ///
    /// `Auto` picks `Depthwise` when `groups = C = K`; `Direct` when the reduction per
    /// output is short (`C/groups·R·S ≤ 32`, as in LeNet's first layer and RGB stems), when
    /// there are at most 16 output channels per group, or when the whole problem is tiny;
    /// `Direct` also, with AVX2 or AVX-512, for strided layers (2 to 4, both axes) of one
    /// group with kernels larger than 1×1 and 8 to 256 output channels in whole vectors
    /// (ResNet's downsampling 3×3s, AlexNet's 11×11 stem);
    /// `Winograd4` (F(4×4, 3×3)) for 3×3, stride-1 layers (dilated or not) with at least 32 input
    /// and output channels per group; and `Im2col` otherwise. (Winograd4's rounding error is
    /// larger than the GEMM's — 7.6× on a 64-channel layer, still inside the direct
    /// tolerance; choose `Im2col` or `Winograd` explicitly where that matters.)
    ///
    /// # Errors
    /// Any geometry error of [`Conv2dGeometry::new`]; [`Error::Unsupported`] when an explicit
    /// algorithm cannot run this shape or the requested instruction set is missing.
    pub fn new(
        input_shape: &[usize],
        weight_shape: &[usize],
        params: &Conv2dParams,
        opts: &ConvOptions,
    ) -> Result<Self> {
        Self::build(input_shape, weight_shape, params, opts, true)
    }

    fn build(
        input_shape: &[usize],
        weight_shape: &[usize],
        params: &Conv2dParams,
        opts: &ConvOptions,
        with_backward: bool,
    ) -> Result<Self> {
        let geo = Conv2dGeometry::new(input_shape, weight_shape, params)?;
        let level = opts.simd.unwrap_or_else(simd::active);
        level.require("conv2d")?;
        let algorithm = match opts.algorithm {
            Algorithm::Auto => select(&geo, level),
            Algorithm::Measured => measured::choose(&geo, params, opts, level)?,
            explicit => {
                if let Some(reason) = explicit.unsupported_reason(&geo) {
                    return Err(Error::Unsupported { algorithm: explicit.name().to_string(), reason });
                }
                explicit
            }
        };
        let transposed = backward::transposed_params(&geo)
            .filter(|_| with_backward)
            .map(|(dy_shape, w_shape, p)| {
                let opts = ConvOptions { algorithm: Algorithm::Auto, ..*opts };
                Conv2dPlan::build(&dy_shape, &w_shape, &p, &opts, false).map(Box::new)
            })
            .transpose()?;
        Ok(Conv2dPlan { geo, algorithm, level, parallelism: opts.parallelism, transposed })
    }

    /// The validated geometry.
    pub fn geometry(&self) -> &Conv2dGeometry {
        &self.geo
    }

    /// The algorithm the forward pass uses (never `Auto`).
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The forward pass's shape checks: input, weight (`weight` names it), bias, output.
    fn check_forward(
        &self,
        input: &Tensor,
        weight: (&str, &[usize]),
        bias: Option<&Tensor>,
        out: &Tensor,
    ) -> Result<()> {
        expect_shape("conv2d input", input.shape(), &self.geo.input_shape())?;
        expect_shape(weight.0, weight.1, &self.geo.weight_shape())?;
        if let Some(b) = bias {
            expect_shape("conv2d bias", b.shape(), &[self.geo.k])?;
        }
        expect_shape("conv2d output", out.shape(), &self.geo.output_shape())
    }

    /// The forward pass into a new `[N, K, OH, OW]` tensor.
    ///
    /// # Errors
    /// Tensors whose shapes differ from the plan's.
    pub fn forward(&self, input: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let mut out = Tensor::for_overwrite(&self.geo.output_shape())?;
        self.forward_into(input, weight, bias, false, &mut out)?;
        Ok(out)
    }

    /// The forward pass, then `max(·, 0)` if `relu`, written into `out` (fused: the bias
    /// and ReLU are applied while each tile is in registers).
    ///
    /// # Errors
    /// Tensors whose shapes differ from the plan's.
    pub fn forward_into(
        &self,
        input: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        relu: bool,
        out: &mut Tensor,
    ) -> Result<()> {
        self.check_forward(input, ("conv2d weight", weight.shape()), bias, out)?;
        let (x, w, b) = (input.data(), weight.data(), bias.map(Tensor::data));
        self.forward_raw(x, w, b, relu, out.data_mut());
        Ok(())
    }

    /// The forward pass on checked slices, weights as given.
    fn forward_raw(&self, x: &[f32], w: &[f32], b: Option<&[f32]>, relu: bool, y: &mut [f32]) {
        match self.algorithm {
            Algorithm::Im2col | Algorithm::Auto | Algorithm::Measured => im2col::forward(self, x, w, b, relu, y),
            Algorithm::Direct if kvec_fwd::preferred(&self.geo) => kvec_fwd::forward(self, x, w, b, relu, y),
            Algorithm::Direct | Algorithm::Depthwise => direct::forward(self, x, w, b, relu, y),
            Algorithm::Winograd => winograd::forward(self, x, w, b, relu, y),
            Algorithm::Winograd4 => winograd4::forward(self, x, w, b, relu, y),
        }
    }

    /// The weights prepared once for this plan's forward algorithm, for any number of
    /// [`Conv2dPlan::forward_packed`] calls (inference with fixed weights).
    ///
    /// What is prepared: `Winograd4` and `Winograd` store the transformed filters
    /// `G·f·Gᵀ` (`Winograd4` in the micro-kernel's packed layout), which every plain
    /// [`Conv2dPlan::forward`] call recomputes (measured: 9% of a `Winograd4` call on a 3×3,
    /// 256-channel layer); `Direct` on its channel-vectorised path stores the weights
    /// as 16-channel panels `[K/16][C·R·S][16]`. `Im2col`, the other `Direct` paths and `Depthwise` read
    /// the weights as given and keep a copy (the GEMM packs its panels per call, a 1–2%
    /// share).
    ///
    /// The packed weights belong to plans with the same algorithm, instruction set and
    /// weight shape (any batch size or image size that plans the same algorithm).
    ///
    /// ```
    /// use convkit::conv::{Conv2dPlan, ConvOptions};
    /// use convkit::{Conv2dParams, Padding, Tensor};
    /// let x = Tensor::from_fn(&[1, 32, 12, 12], |i| (i % 7) as f32 - 3.0)?;
    /// let w = Tensor::from_fn(&[32, 32, 3, 3], |i| (i % 5) as f32 * 0.1)?;
    /// let plan = Conv2dPlan::new(x.shape(), w.shape(),
    ///     &Conv2dParams::default().padding(Padding::Same), &ConvOptions::default())?;
    /// let packed = plan.pack_weights(&w)?;
    /// let y = plan.forward_packed(&x, &packed, None)?;
    /// assert_eq!(y.data(), plan.forward(&x, &w, None)?.data());
    /// # Ok::<(), convkit::Error>(())
    /// ```
    ///
    /// # Errors
    /// A weight whose shape differs from the plan's.
    pub fn pack_weights(&self, weight: &Tensor) -> Result<PackedWeights> {
        expect_shape("conv2d weight", weight.shape(), &self.geo.weight_shape())?;
        let w = weight.data();
        let form = self.weight_form();
        let data = match form {
            WeightForm::AsGiven => w.to_vec(),
            WeightForm::KPanels => {
                let mut wt = vec![0.0; w.len()];
                kvec_fwd::pack(&self.geo, self.level, w, &mut wt, 1);
                wt
            }
            WeightForm::Winograd => winograd::transform_filters(&self.geo, w),
            WeightForm::Winograd4 => {
                let mut u = vec![0.0; winograd4::packed_len(self)];
                winograd4::pack(self, w, &mut u);
                u
            }
        };
        Ok(PackedWeights { algorithm: self.algorithm, level: self.level, shape: self.geo.weight_shape(), form, data })
    }

    /// Whether `weights` were packed for this plan's algorithm, instruction set and weight
    /// shape (so that [`Conv2dPlan::forward_packed`] takes them).
    pub fn accepts(&self, weights: &PackedWeights) -> bool {
        (weights.algorithm, weights.level, weights.form, weights.shape)
            == (self.algorithm, self.level, self.weight_form(), self.geo.weight_shape())
    }

    /// How [`Conv2dPlan::pack_weights`] prepares weights for this plan.
    fn weight_form(&self) -> WeightForm {
        match self.algorithm {
            Algorithm::Winograd4 => WeightForm::Winograd4,
            Algorithm::Winograd => WeightForm::Winograd,
            Algorithm::Direct if kvec_fwd::preferred(&self.geo) => WeightForm::KPanels,
            _ => WeightForm::AsGiven,
        }
    }

    /// [`Conv2dPlan::forward`] with weights prepared by [`Conv2dPlan::pack_weights`]; the
    /// result is bitwise the same.
    ///
    /// # Errors
    /// Tensors whose shapes differ from the plan's; weights packed for another algorithm,
    /// instruction set or weight shape.
    pub fn forward_packed(&self, input: &Tensor, weights: &PackedWeights, bias: Option<&Tensor>) -> Result<Tensor> {
        let mut out = Tensor::for_overwrite(&self.geo.output_shape())?;
        self.forward_packed_into(input, weights, bias, false, &mut out)?;
        Ok(out)
    }

    /// [`Conv2dPlan::forward_into`] with weights prepared by [`Conv2dPlan::pack_weights`].
    ///
    /// # Errors
    /// As [`Conv2dPlan::forward_packed`].
    pub fn forward_packed_into(
        &self,
        input: &Tensor,
        weights: &PackedWeights,
        bias: Option<&Tensor>,
        relu: bool,
        out: &mut Tensor,
    ) -> Result<()> {
        self.check_forward(input, ("conv2d packed weight", &weights.shape), bias, out)?;
        if !self.accepts(weights) {
            return Err(Error::param(
                "packed weights",
                format!("{} at {:?}", weights.algorithm.name(), weights.level),
                format!("were packed for another plan: this one runs {} at {:?}", self.algorithm.name(), self.level),
            ));
        }
        let (x, p, b) = (input.data(), weights.data.as_slice(), bias.map(Tensor::data));
        let y = out.data_mut();
        match weights.form {
            WeightForm::Winograd4 => winograd4::forward_packed(self, x, p, b, relu, y),
            WeightForm::Winograd => winograd::forward_packed(self, x, p, b, relu, y),
            WeightForm::KPanels => kvec_fwd::forward_packed(self, x, p, b, relu, y),
            WeightForm::AsGiven => self.forward_raw(x, p, b, relu, y),
        }
        Ok(())
    }

    /// Gradient with respect to the input, `[N, C, H, W]`.
    ///
    /// # Errors
    /// Tensors whose shapes differ from the plan's.
    pub fn backward_data(&self, grad_out: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let mut dx = Tensor::zeros(&self.geo.input_shape())?;
        self.backward_data_into(grad_out, weight, &mut dx)?;
        Ok(dx)
    }

    /// Gradient with respect to the input, written into `grad_in` (overwritten).
    ///
    /// # Errors
    /// Tensors whose shapes differ from the plan's.
    pub fn backward_data_into(&self, grad_out: &Tensor, weight: &Tensor, grad_in: &mut Tensor) -> Result<()> {
        expect_shape("conv2d grad_output", grad_out.shape(), &self.geo.output_shape())?;
        expect_shape("conv2d weight", weight.shape(), &self.geo.weight_shape())?;
        expect_shape("conv2d grad_input", grad_in.shape(), &self.geo.input_shape())?;
        backward::data(self, grad_out.data(), weight.data(), grad_in.data_mut());
        Ok(())
    }

    /// Gradient with respect to the weight, `[K, C/groups, R, S]`.
    ///
    /// # Errors
    /// Tensors whose shapes differ from the plan's.
    pub fn backward_weight(&self, input: &Tensor, grad_out: &Tensor) -> Result<Tensor> {
        let mut dw = Tensor::zeros(&self.geo.weight_shape())?;
        self.backward_weight_into(input, grad_out, &mut dw)?;
        Ok(dw)
    }

    /// Gradient with respect to the weight, written into `grad_weight` (overwritten).
    ///
    /// # Errors
    /// Tensors whose shapes differ from the plan's.
    pub fn backward_weight_into(&self, input: &Tensor, grad_out: &Tensor, grad_weight: &mut Tensor) -> Result<()> {
        expect_shape("conv2d input", input.shape(), &self.geo.input_shape())?;
        expect_shape("conv2d grad_output", grad_out.shape(), &self.geo.output_shape())?;
        expect_shape("conv2d grad_weight", grad_weight.shape(), &self.geo.weight_shape())?;
        let (x, dy, dw) = (input.data(), grad_out.data(), grad_weight.data_mut());
        let direct = matches!(self.algorithm, Algorithm::Direct | Algorithm::Depthwise);
        if kvec_bw::preferred(&self.geo, self.level) {
            kvec_bw::weight(self, x, dy, dw);
        } else if direct && direct_bw::preferred(&self.geo) {
            direct_bw::weight(self, x, dy, dw);
        } else {
            backward::weight(self, x, dy, dw);
        }
        Ok(())
    }

    /// Gradient with respect to the bias: the output gradient summed over batch and space.
    ///
    /// # Errors
    /// An output gradient whose shape differs from the plan's.
    pub fn backward_bias(&self, grad_out: &Tensor) -> Result<Tensor> {
        expect_shape("conv2d grad_output", grad_out.shape(), &self.geo.output_shape())?;
        let mut db = Tensor::zeros(&[self.geo.k])?;
        backward::bias(self, grad_out.data(), db.data_mut());
        Ok(db)
    }
}

/// The `Auto` heuristic (documented on [`Conv2dPlan::new`]), from the measured crossovers
/// of the shape suite (`examples/compare.rs`): the GEMM wins once the reduction is long and
/// there are enough output channels to fill its 6-wide tiles; the direct kernel wins on
/// few input or output channels, where lowering is mostly packing and tile waste.
fn select(geo: &Conv2dGeometry, level: SimdLevel) -> Algorithm {
    if geo.groups == geo.c && geo.groups == geo.k && geo.groups > 1 {
        return Algorithm::Depthwise;
    }
    if geo.reduction_len() <= 32 || geo.k_per_group() <= 16 || geo.flops() < 2.0e4 {
        Algorithm::Direct
    } else if level >= SimdLevel::Avx2
        && geo.h.stride > 1
        && geo.w.stride > 1
        && geo.h.kernel * geo.w.kernel > 1
        && kvec_fwd::preferred(geo)
    {
        // Strided layers read their taps in place, where im2col copies each of them.
        Algorithm::Direct
    } else if winograd4::unsupported_reason(geo).is_none() && geo.c_per_group() >= 32 && geo.k_per_group() >= 32 {
        Algorithm::Winograd4
    } else {
        Algorithm::Im2col
    }
}

/// Plans and runs one forward convolution.
///
/// # Errors
/// As [`Conv2dPlan::new`] and [`Conv2dPlan::forward`].
pub fn conv2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    params: &Conv2dParams,
    opts: &ConvOptions,
) -> Result<Tensor> {
    Conv2dPlan::new(input.shape(), weight.shape(), params, opts)?.forward(input, weight, bias)
}
