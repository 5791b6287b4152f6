//! Convolution and pooling geometry: parameters, padding rules and output sizes.
//!
//! For one spatial axis with input size `H`, kernel size `R`, stride `s`, dilation `d` and
//! padding `pt` (before) / `pb` (after), the effective kernel is `d·(R−1)+1` and
//!
//! ```text
//! OH = floor((H + pt + pb − d·(R−1) − 1) / s) + 1
//! ```
//!
//! [`Padding::Same`] picks `OH = ceil(H / s)` and the smallest total padding that gives it;
//! an odd total puts the extra row/column at the bottom/right, as TensorFlow and PyTorch do.
//! For stride 1 and odd `R` this is `(R−1)/2` on each side.

use crate::error::{checked_product, Error, Result};

/// How the input is padded with zeros before the window slides over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Explicit, possibly asymmetric, padding.
    Explicit {
        /// Rows added above.
        top: usize,
        /// Rows added below.
        bottom: usize,
        /// Columns added on the left.
        left: usize,
        /// Columns added on the right.
        right: usize,
    },
    /// Output size `ceil(input / stride)`; odd total padding puts the extra at bottom/right.
    Same,
    /// No padding.
    Valid,
}

impl Padding {
    /// The same padding `p` on all four sides.
    pub fn uniform(p: usize) -> Self {
        Padding::Explicit { top: p, bottom: p, left: p, right: p }
    }

    /// Padding `ph` above and below, `pw` left and right.
    pub fn symmetric(ph: usize, pw: usize) -> Self {
        Padding::Explicit { top: ph, bottom: ph, left: pw, right: pw }
    }
}

/// One spatial axis after padding is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Axis {
    /// Input size.
    pub input: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride (≥ 1).
    pub stride: usize,
    /// Dilation (≥ 1).
    pub dilation: usize,
    /// Padding before.
    pub pad_before: usize,
    /// Padding after.
    pub pad_after: usize,
    /// Output size.
    pub output: usize,
}

impl Axis {
    /// Resolves one axis, checking every value. `axis` is `"height"` or `"width"` for messages.
    ///
    /// # Errors
    /// Zero stride, dilation or kernel; an effective kernel larger than the padded input;
    /// overflow.
    pub fn resolve(
        axis: &str,
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        pad: Option<(usize, usize)>,
    ) -> Result<Axis> {
        if stride == 0 {
            return Err(Error::param(format!("stride ({axis})"), 0, "must be at least 1"));
        }
        if dilation == 0 {
            return Err(Error::param(format!("dilation ({axis})"), 0, "must be at least 1"));
        }
        if kernel == 0 {
            return Err(Error::param(format!("kernel {axis}"), 0, "must be at least 1"));
        }
        let ovf = || Error::overflow(format!("effective kernel {axis}"));
        let effective = (kernel - 1).checked_mul(dilation).and_then(|v| v.checked_add(1)).ok_or_else(ovf)?;
        let (pad_before, pad_after) = match pad {
            Some(p) => p,
            None => {
                // Same: output = ceil(input / stride).
                if input == 0 {
                    return Err(Error::param(format!("input {axis}"), 0, "\"same\" padding needs a non-empty input"));
                }
                let out = input.div_ceil(stride);
                let needed = (out - 1)
                    .checked_mul(stride)
                    .and_then(|v| v.checked_add(effective))
                    .ok_or_else(|| Error::overflow(format!("\"same\" padding ({axis})")))?;
                let total = needed.saturating_sub(input);
                (total / 2, total - total / 2)
            }
        };
        let padded = input
            .checked_add(pad_before)
            .and_then(|v| v.checked_add(pad_after))
            .ok_or_else(|| Error::overflow(format!("padded input {axis}")))?;
        if effective > padded {
            return Err(Error::param(
                format!("kernel {axis}"),
                kernel,
                format!(
                    "effective kernel {effective} (dilation {dilation}) is larger than the padded input {padded} ({input} + {pad_before} + {pad_after})"
                ),
            ));
        }
        let output = (padded - effective) / stride + 1;
        Ok(Axis { input, kernel, stride, dilation, pad_before, pad_after, output })
    }

    /// The input coordinate read by output `o` and kernel tap `r`, or `None` if it falls in
    /// the padding.
    #[inline]
    pub fn input_index(&self, o: usize, r: usize) -> Option<usize> {
        (o * self.stride + r * self.dilation).checked_sub(self.pad_before).filter(|&i| i < self.input)
    }
}

/// Convolution hyper-parameters (everything but the tensor shapes).
///
/// ```
/// use convkit::{Conv2dParams, Padding};
/// let p = Conv2dParams::default().stride(2, 2).padding(Padding::Same).groups(1);
/// assert_eq!(p.stride, (2, 2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// `(sh, sw)`.
    pub stride: (usize, usize),
    /// `(dh, dw)`.
    pub dilation: (usize, usize),
    /// Padding rule.
    pub padding: Padding,
    /// Number of groups; must divide both channel counts.
    pub groups: usize,
}

impl Default for Conv2dParams {
    /// Stride 1, dilation 1, no padding, one group.
    fn default() -> Self {
        Conv2dParams { stride: (1, 1), dilation: (1, 1), padding: Padding::Valid, groups: 1 }
    }
}

impl Conv2dParams {
    /// Sets the stride.
    pub fn stride(mut self, sh: usize, sw: usize) -> Self {
        self.stride = (sh, sw);
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dh: usize, dw: usize) -> Self {
        self.dilation = (dh, dw);
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }
    /// Sets the group count.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
}

/// A fully resolved and validated 2-D convolution problem: the tensor sizes plus the
/// per-axis geometry. Kernels take this and trust it.
///
/// Input `[N, C, H, W]`, weight `[K, C/groups, R, S]`, output `[N, K, OH, OW]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dGeometry {
    /// Batch size N.
    pub n: usize,
    /// Input channels C.
    pub c: usize,
    /// Output channels K.
    pub k: usize,
    /// Groups.
    pub groups: usize,
    /// Height axis (H, R, OH, …).
    pub h: Axis,
    /// Width axis (W, S, OW, …).
    pub w: Axis,
}

impl Conv2dGeometry {
    /// Validates a problem given the input shape `[N, C, H, W]`, the weight shape
    /// `[K, C/groups, R, S]` and the parameters.
    ///
    /// # Errors
    /// Wrong ranks, channels not divisible by groups, a weight whose second dimension is not
    /// `C/groups`, zero stride/dilation/groups/kernel, an effective kernel larger than the
    /// padded input, and arithmetic overflow of any derived size.
    ///
    /// ```
    /// use convkit::{Conv2dGeometry, Conv2dParams, Padding};
    /// let g = Conv2dGeometry::new(&[1, 3, 32, 32], &[16, 3, 3, 3],
    ///     &Conv2dParams::default().padding(Padding::Same))?;
    /// assert_eq!(g.output_shape(), [1, 16, 32, 32]);
    /// # Ok::<(), convkit::Error>(())
    /// ```
    pub fn new(input: &[usize], weight: &[usize], p: &Conv2dParams) -> Result<Self> {
        let [n, c, h, w] = match *input {
            [n, c, h, w] => [n, c, h, w],
            _ => return Err(Error::shape("conv2d input", "4-D [N, C, H, W]", input)),
        };
        let g = p.groups;
        if g == 0 {
            return Err(Error::param("groups", 0, "must be at least 1"));
        }
        let [k, cg, r, s] = match *weight {
            [k, cg, r, s] => [k, cg, r, s],
            _ => {
                return Err(Error::shape(
                    "conv2d weight",
                    format!("4-D [K, C/groups, R, S] with C/groups = {}", c / g),
                    weight,
                ))
            }
        };
        if c % g != 0 {
            return Err(Error::param("groups", g, format!("does not divide the {c} input channels")));
        }
        if k % g != 0 {
            return Err(Error::param("groups", g, format!("does not divide the {k} output channels")));
        }
        if cg != c / g {
            return Err(Error::shape(
                "conv2d weight",
                format!("4-D [K, C/groups, R, S] with C/groups = {}", c / g),
                weight,
            ));
        }
        let (pad_h, pad_w) = match p.padding {
            Padding::Explicit { top, bottom, left, right } => (Some((top, bottom)), Some((left, right))),
            Padding::Valid => (Some((0, 0)), Some((0, 0))),
            Padding::Same => (None, None),
        };
        let h = Axis::resolve("height", h, r, p.stride.0, p.dilation.0, pad_h)?;
        let w = Axis::resolve("width", w, s, p.stride.1, p.dilation.1, pad_w)?;
        let geo = Conv2dGeometry { n, c, k, groups: g, h, w };
        // Every derived element count must fit in usize (and in memory-addressable bytes).
        for (shape, what) in [
            (geo.input_shape(), "conv2d input size"),
            (geo.weight_shape(), "conv2d weight size"),
            (geo.output_shape(), "conv2d output size"),
        ] {
            let len = checked_product(&shape, what)?;
            len.checked_mul(4).filter(|&b| b <= isize::MAX as usize).ok_or_else(|| Error::overflow(what))?;
        }
        // Each factor group on its own as well: a zero batch or channel count must not hide
        // a reduction length that overflows (found by fuzzing).
        checked_product(&[geo.c_per_group(), r, s], "conv2d reduction length (C/groups·R·S)")?;
        checked_product(&[geo.k_per_group(), r, s], "conv2d backward reduction length (K/groups·R·S)")?;
        checked_product(&[geo.n, geo.h.output, geo.w.output], "conv2d pixels (N·OH·OW)")?;
        checked_product(&[geo.n, geo.k, geo.h.output, geo.w.output, geo.c_per_group(), r, s], "conv2d flop count")?;
        // Per-image sizes (the kernels index by image and plane; a zero batch must not hide
        // an overflowing plane, found by the bad-input catalogue). The padded extents fit:
        // `Axis::resolve` checked them.
        let (hp, wp) = (h.input + h.pad_before + h.pad_after, w.input + w.pad_before + w.pad_after);
        checked_product(&[geo.c, hp, wp], "conv2d padded input image (C·Hp·Wp)")?;
        checked_product(&[geo.k, geo.h.output, geo.w.output], "conv2d output image (K·OH·OW)")?;
        checked_product(&[hp, wp], "conv2d padded input plane (Hp·Wp)")?;
        checked_product(&[geo.h.output, geo.w.output], "conv2d output plane (OH·OW)")?;
        Ok(geo)
    }

    /// Input channels per group.
    pub fn c_per_group(&self) -> usize {
        self.c / self.groups
    }

    /// Output channels per group.
    pub fn k_per_group(&self) -> usize {
        self.k / self.groups
    }

    /// `[N, C, H, W]`.
    pub fn input_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h.input, self.w.input]
    }

    /// `[K, C/groups, R, S]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.k, self.c_per_group(), self.h.kernel, self.w.kernel]
    }

    /// `[N, K, OH, OW]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.k, self.h.output, self.w.output]
    }

    /// The reduction length of one output element: `C/groups · R · S`.
    pub fn reduction_len(&self) -> usize {
        self.c_per_group() * self.h.kernel * self.w.kernel
    }

    /// Floating-point operations of the forward pass, `2·N·K·OH·OW·(C/groups)·R·S`.
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.k * self.h.output * self.w.output) as f64 * self.reduction_len() as f64
    }
}

/// Pooling hyper-parameters.
///
/// Padding must be smaller than the window on every side so that every window holds at
/// least one input element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Window `(kh, kw)`.
    pub kernel: (usize, usize),
    /// `(sh, sw)`.
    pub stride: (usize, usize),
    /// Padding rule (padded cells never win a max and, unless `count_include_pad`, are not
    /// counted by an average).
    pub padding: Padding,
    /// Average pooling: divide by the full window size, padding included.
    pub count_include_pad: bool,
}

impl Pool2dParams {
    /// A `kh × kw` window with stride equal to the window, no padding.
    pub fn new(kh: usize, kw: usize) -> Self {
        Pool2dParams { kernel: (kh, kw), stride: (kh, kw), padding: Padding::Valid, count_include_pad: false }
    }
    /// Sets the stride.
    pub fn stride(mut self, sh: usize, sw: usize) -> Self {
        self.stride = (sh, sw);
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }
    /// Sets whether average pooling counts padded cells.
    pub fn count_include_pad(mut self, yes: bool) -> Self {
        self.count_include_pad = yes;
        self
    }
}

/// A validated pooling problem over an `[N, C, H, W]` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dGeometry {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height axis.
    pub h: Axis,
    /// Width axis.
    pub w: Axis,
    /// Whether averages count padded cells.
    pub count_include_pad: bool,
}

impl Pool2dGeometry {
    /// Validates a pooling problem.
    ///
    /// # Errors
    /// Wrong rank, an empty image (H or W = 0; an empty batch or no channels is fine), zero
    /// window or stride, padding not smaller than the window, a window larger than the padded
    /// input, overflow.
    pub fn new(input: &[usize], p: &Pool2dParams) -> Result<Self> {
        let [n, c, h, w] = match *input {
            [n, c, h, w] => [n, c, h, w],
            _ => return Err(Error::shape("pool2d input", "4-D [N, C, H, W]", input)),
        };
        if h == 0 || w == 0 {
            // Every window would lie in the padding: no maximum, no average (found by fuzzing).
            return Err(Error::shape("pool2d input", "H, W ≥ 1 (an empty image has nothing to pool)", input));
        }
        let (pad_h, pad_w) = match p.padding {
            Padding::Explicit { top, bottom, left, right } => (Some((top, bottom)), Some((left, right))),
            Padding::Valid => (Some((0, 0)), Some((0, 0))),
            Padding::Same => (None, None),
        };
        let h = Axis::resolve("height", h, p.kernel.0, p.stride.0, 1, pad_h)?;
        let w = Axis::resolve("width", w, p.kernel.1, p.stride.1, 1, pad_w)?;
        for a in [&h, &w] {
            let worst = a.pad_before.max(a.pad_after);
            if worst >= a.kernel {
                return Err(Error::param(
                    "pool2d padding",
                    worst,
                    format!("must be smaller than the window size {} so no window is all padding", a.kernel),
                ));
            }
        }
        let geo = Pool2dGeometry { n, c, h, w, count_include_pad: p.count_include_pad };
        checked_product(&geo.input_shape(), "pool2d input size")?;
        checked_product(&geo.output_shape(), "pool2d output size")?;
        // A zero batch or channel count makes the totals 0 whatever the planes; the kernels
        // still index by plane, so the plane sizes must not overflow on their own.
        checked_product(&[geo.h.input, geo.w.input], "pool2d input plane size")?;
        checked_product(&[geo.h.output, geo.w.output], "pool2d output plane size")?;
        checked_product(&[geo.c, geo.h.input, geo.w.input], "pool2d input image size")?;
        checked_product(&[geo.c, geo.h.output, geo.w.output], "pool2d output image size")?;
        Ok(geo)
    }

    /// `[N, C, H, W]`.
    pub fn input_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h.input, self.w.input]
    }

    /// `[N, C, OH, OW]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h.output, self.w.output]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(h: usize, r: usize, s: usize, d: usize, p: Option<(usize, usize)>) -> Result<Axis> {
        Axis::resolve("height", h, r, s, d, p)
    }

    #[test]
    fn output_size_table() {
        // (H, R, stride, dilation, pad_before, pad_after, expected OH)
        let table = [
            (3, 2, 1, 1, 0, 0, 2),
            (3, 2, 1, 1, 1, 1, 4),
            (3, 2, 2, 1, 1, 1, 2),
            (3, 2, 1, 2, 0, 0, 1),
            (28, 5, 1, 1, 2, 2, 28),
            (14, 5, 1, 1, 0, 0, 10),
            (224, 11, 4, 1, 2, 2, 55),
            (56, 3, 2, 1, 1, 1, 28),
            (56, 3, 2, 1, 0, 0, 27),
            (56, 3, 1, 2, 2, 2, 56),
            (7, 3, 3, 1, 0, 1, 2),
            (1, 1, 4, 1, 0, 0, 1),
            (5, 1, 7, 1, 3, 3, 2),
        ];
        for (h, r, s, d, pt, pb, want) in table {
            let a = axis(h, r, s, d, Some((pt, pb))).unwrap();
            assert_eq!(a.output, want, "H={h} R={r} s={s} d={d} p=({pt},{pb})");
            // The formula itself: floor((H + pt + pb − d(R−1) − 1)/s) + 1.
            assert_eq!(a.output, (h + pt + pb - d * (r - 1) - 1) / s + 1);
        }
    }

    #[test]
    fn same_padding_stride_one_odd_kernel_is_half_kernel() {
        for f in [1usize, 3, 5, 7, 11] {
            for h in [f, f + 1, 17, 32] {
                let a = axis(h, f, 1, 1, None).unwrap();
                // P = (S·(H−1) − H + F)/2 = (F−1)/2 for S = 1.
                let p = (h - 1 + f - h) / 2;
                assert_eq!(p, (f - 1) / 2);
                assert_eq!((a.pad_before, a.pad_after), (p, p), "F={f} H={h}");
                assert_eq!(a.output, h);
            }
        }
    }

    #[test]
    fn same_padding_odd_total_goes_after() {
        // H=5, R=2, stride 1: total 1 → (0, 1).
        let a = axis(5, 2, 1, 1, None).unwrap();
        assert_eq!((a.pad_before, a.pad_after, a.output), (0, 1, 5));
        // H=56, R=3, stride 2: out 28, needed 27·2+3 = 57, total 1 → (0, 1).
        let a = axis(56, 3, 2, 1, None).unwrap();
        assert_eq!((a.pad_before, a.pad_after, a.output), (0, 1, 28));
        // H=7, R=4, stride 3: out 3, needed 2·3+4 = 10, total 3 → (1, 2).
        let a = axis(7, 4, 3, 1, None).unwrap();
        assert_eq!((a.pad_before, a.pad_after, a.output), (1, 2, 3));
        // H=4, R=1, stride 3: out 2, needed 4, total 0.
        let a = axis(4, 1, 3, 1, None).unwrap();
        assert_eq!((a.pad_before, a.pad_after, a.output), (0, 0, 2));
        // dilation: H=10, R=3, d=2: effective 5, total 4 → (2, 2).
        let a = axis(10, 3, 1, 2, None).unwrap();
        assert_eq!((a.pad_before, a.pad_after, a.output), (2, 2, 10));
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = axis(5, 3, 0, 1, Some((0, 0))).unwrap_err();
        assert!(matches!(&e, Error::Parameter { name, .. } if name == "stride (height)"), "{e}");
        let e = axis(5, 3, 1, 0, Some((0, 0))).unwrap_err();
        assert!(matches!(&e, Error::Parameter { name, .. } if name == "dilation (height)"), "{e}");
        let e = axis(2, 3, 1, 1, Some((0, 0))).unwrap_err();
        assert!(e.to_string().contains("effective kernel 3"), "{e}");
        let e = axis(4, 3, 1, 2, Some((0, 0))).unwrap_err();
        assert!(e.to_string().contains("effective kernel 5"), "{e}");
        assert!(axis(4, 3, 1, 2, Some((1, 0))).is_ok());
        let e = axis(usize::MAX, 3, 1, 1, Some((1, 1))).unwrap_err();
        assert!(matches!(e, Error::Overflow { .. }), "{e}");
        let e = axis(10, usize::MAX, 1, 2, Some((0, 0))).unwrap_err();
        assert!(matches!(e, Error::Overflow { .. }), "{e}");
        let e = axis(0, 1, 1, 1, None).unwrap_err();
        assert!(e.to_string().contains("same"), "{e}");
    }

    #[test]
    fn conv_geometry_errors() {
        let p = Conv2dParams::default();
        let e = Conv2dGeometry::new(&[1, 6, 8, 8], &[8, 4, 3, 3], &p.groups(2)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "conv2d weight: expected 4-D [K, C/groups, R, S] with C/groups = 3, got [8, 4, 3, 3]"
        );
        let e = Conv2dGeometry::new(&[1, 6, 8, 8], &[8, 1, 3, 3], &p.groups(4)).unwrap_err();
        assert!(e.to_string().contains("does not divide the 6 input channels"), "{e}");
        let e = Conv2dGeometry::new(&[1, 6, 8, 8], &[8, 2, 3, 3], &p.groups(3)).unwrap_err();
        assert!(e.to_string().contains("does not divide the 8 output channels"), "{e}");
        let e = Conv2dGeometry::new(&[1, 6, 8, 8], &[8, 6, 3, 3], &p.groups(0)).unwrap_err();
        assert!(matches!(&e, Error::Parameter { name, .. } if name == "groups"));
        let e = Conv2dGeometry::new(&[1, 6, 8], &[8, 6, 3, 3], &p).unwrap_err();
        assert_eq!(e.to_string(), "conv2d input: expected 4-D [N, C, H, W], got [1, 6, 8]");
        let e = Conv2dGeometry::new(&[1, 6, 8, 8], &[8, 6, 3, 3], &p.stride(1, 0)).unwrap_err();
        assert!(matches!(&e, Error::Parameter { name, .. } if name == "stride (width)"));
        let e = Conv2dGeometry::new(&[1, 6, 8, 8], &[8, 6, 0, 3], &p).unwrap_err();
        assert!(matches!(&e, Error::Parameter { name, .. } if name == "kernel height"));
        let e = Conv2dGeometry::new(&[usize::MAX / 4, 6, 8, 8], &[8, 6, 3, 3], &p).unwrap_err();
        assert!(matches!(e, Error::Overflow { .. }), "{e}");
        let e = Conv2dGeometry::new(&[1, 1 << 40, 1 << 20, 1 << 20], &[1, 1 << 40, 1, 1], &p).unwrap_err();
        assert!(matches!(e, Error::Overflow { .. }), "{e}");
        // A zero batch must not hide a kernel area that overflows (fuzzing found this).
        let huge = Padding::Explicit { top: 1 << 40, bottom: 0, left: 1 << 40, right: 0 };
        let e = Conv2dGeometry::new(&[0, 1, 1, 1], &[1, 1, 1 << 33, 1 << 33], &p.padding(huge)).unwrap_err();
        assert!(matches!(e, Error::Overflow { .. }), "{e}");
        let g = Conv2dGeometry::new(&[2, 6, 9, 7], &[4, 3, 3, 2], &p.groups(2).stride(2, 1).dilation(1, 2)).unwrap();
        assert_eq!(g.output_shape(), [2, 4, 4, 5]);
        assert_eq!(g.reduction_len(), 18);
    }

    #[test]
    fn pool_geometry_errors() {
        let e = Pool2dGeometry::new(&[1, 1, 4, 4], &Pool2dParams::new(2, 2).padding(Padding::uniform(2))).unwrap_err();
        assert!(e.to_string().contains("smaller than the window"), "{e}");
        let e = Pool2dGeometry::new(&[1, 1, 4, 4], &Pool2dParams::new(2, 2).stride(0, 1)).unwrap_err();
        assert!(matches!(&e, Error::Parameter { name, .. } if name == "stride (height)"));
        let g = Pool2dGeometry::new(&[1, 1, 5, 5], &Pool2dParams::new(2, 2)).unwrap();
        assert_eq!(g.output_shape(), [1, 1, 2, 2]);
        let g = Pool2dGeometry::new(&[1, 1, 5, 5], &Pool2dParams::new(3, 3).stride(2, 2).padding(Padding::uniform(1)))
            .unwrap();
        assert_eq!(g.output_shape(), [1, 1, 3, 3]);
    }
}
