//! 2-D convolution (cross-correlation), forward and backward, by direct loops.
//!
//! `y[n,k,oh,ow] = b[k] + Σ_{c,r,s} x[n, g·C/G + c, oh·sh + r·dh − pt, ow·sw + s·dw − pl] · w[k,c,r,s]`
//! where `g = k / (K/G)` is the group of output channel `k` and reads outside the input are 0.

use crate::error::{expect_shape, Result};
use crate::geometry::{Conv2dGeometry, Conv2dParams};
use crate::reference::{fits_f64, to_f64, to_tensor};
use crate::Tensor;

/// Visits every (output element, weight tap, input element) triple of the convolution that
/// reads a real (non-padding) input cell: `f(y_index, w_index, x_index)`. The three passes
/// below are the same sum read three ways, so they share this one loop nest.
fn for_each_tap(g: &Conv2dGeometry, mut f: impl FnMut(usize, usize, usize)) {
    let (cg, kg) = (g.c_per_group(), g.k_per_group());
    let (h, w) = (g.h, g.w);
    for n in 0..g.n {
        for k in 0..g.k {
            let group = k / kg;
            for oh in 0..h.output {
                for ow in 0..w.output {
                    let yi = ((n * g.k + k) * h.output + oh) * w.output + ow;
                    for c in 0..cg {
                        let ci = group * cg + c;
                        for r in 0..h.kernel {
                            let Some(ih) = h.input_index(oh, r) else { continue };
                            for s in 0..w.kernel {
                                let Some(iw) = w.input_index(ow, s) else { continue };
                                let wi = ((k * cg + c) * h.kernel + r) * w.kernel + s;
                                let xi = ((n * g.c + ci) * h.input + ih) * w.input + iw;
                                f(yi, wi, xi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Forward convolution in `f64`: `x` is `[N,C,H,W]`, `w` `[K,C/G,R,S]`, `b` `[K]`.
pub fn conv2d_forward_f64(g: &Conv2dGeometry, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let [n, k, oh, ow] = g.output_shape();
    let mut y = vec![0.0; n * k * oh * ow];
    if let Some(b) = b {
        for (i, v) in y.iter_mut().enumerate() {
            *v = b[(i / (oh * ow)) % k];
        }
    }
    for_each_tap(g, |yi, wi, xi| y[yi] += x[xi] * w[wi]);
    y
}

/// Gradient with respect to the input, in `f64`: `dx[xi] = Σ dy[yi] · w[wi]`.
pub fn conv2d_backward_data_f64(g: &Conv2dGeometry, dy: &[f64], w: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; g.input_shape().iter().product()];
    for_each_tap(g, |yi, wi, xi| dx[xi] += dy[yi] * w[wi]);
    dx
}

/// Gradient with respect to the weight, in `f64`: `dw[wi] = Σ dy[yi] · x[xi]`.
pub fn conv2d_backward_weight_f64(g: &Conv2dGeometry, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let mut dw = vec![0.0; g.weight_shape().iter().product()];
    for_each_tap(g, |yi, wi, xi| dw[wi] += dy[yi] * x[xi]);
    dw
}

/// Gradient with respect to the bias, in `f64`: `db[k] = Σ_{n,oh,ow} dy[n,k,oh,ow]`.
pub fn conv2d_backward_bias_f64(g: &Conv2dGeometry, dy: &[f64]) -> Vec<f64> {
    let [_, k, oh, ow] = g.output_shape();
    let mut db = vec![0.0; k];
    for (i, v) in dy.iter().enumerate() {
        db[(i / (oh * ow)) % k] += v;
    }
    db
}

/// Forward convolution: input `[N,C,H,W]`, weight `[K,C/groups,R,S]`, optional bias `[K]`,
/// gives `[N,K,OH,OW]`.
///
/// # Errors
/// Any geometry error of [`Conv2dGeometry::new`]; a bias that is not `[K]`.
///
/// ```
/// use convkit::{reference, Conv2dParams, Tensor};
/// let x = Tensor::new((1..=9).map(|v| v as f32).collect(), &[1, 1, 3, 3])?;
/// let w = Tensor::new(vec![1.0, 0.0, 0.0, -1.0], &[1, 1, 2, 2])?;
/// let y = reference::conv2d(&x, &w, None, &Conv2dParams::default())?;
/// assert_eq!(y.data(), &[-4.0, -4.0, -4.0, -4.0]);
/// # Ok::<(), convkit::Error>(())
/// ```
pub fn conv2d(input: &Tensor, weight: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Result<Tensor> {
    let g = Conv2dGeometry::new(input.shape(), weight.shape(), p)?;
    if let Some(b) = bias {
        expect_shape("conv2d bias", b.shape(), &[g.k])?;
    }
    fits_f64(&[&g.input_shape(), &g.weight_shape(), &g.output_shape()], "reference conv2d")?;
    let b = bias.map(|b| to_f64(b.data()));
    let y = conv2d_forward_f64(&g, &to_f64(input.data()), &to_f64(weight.data()), b.as_deref());
    Ok(to_tensor(&y, &g.output_shape()))
}

/// Gradient of the convolution with respect to its input, given the output gradient
/// `[N,K,OH,OW]`, the weight and the input's shape.
///
/// # Errors
/// Geometry errors; an output gradient whose shape is not the forward output's.
pub fn conv2d_backward_data(
    grad_out: &Tensor,
    weight: &Tensor,
    input_shape: &[usize],
    p: &Conv2dParams,
) -> Result<Tensor> {
    let g = Conv2dGeometry::new(input_shape, weight.shape(), p)?;
    expect_shape("conv2d grad_output", grad_out.shape(), &g.output_shape())?;
    fits_f64(&[&g.input_shape(), &g.weight_shape(), &g.output_shape()], "reference conv2d backward_data")?;
    let dx = conv2d_backward_data_f64(&g, &to_f64(grad_out.data()), &to_f64(weight.data()));
    Ok(to_tensor(&dx, &g.input_shape()))
}

/// Gradient of the convolution with respect to its weight, given the input, the output
/// gradient and the weight's shape.
///
/// # Errors
/// Geometry errors; an output gradient whose shape is not the forward output's.
pub fn conv2d_backward_weight(
    input: &Tensor,
    grad_out: &Tensor,
    weight_shape: &[usize],
    p: &Conv2dParams,
) -> Result<Tensor> {
    let g = Conv2dGeometry::new(input.shape(), weight_shape, p)?;
    expect_shape("conv2d grad_output", grad_out.shape(), &g.output_shape())?;
    fits_f64(&[&g.input_shape(), &g.weight_shape(), &g.output_shape()], "reference conv2d backward_weight")?;
    let dw = conv2d_backward_weight_f64(&g, &to_f64(input.data()), &to_f64(grad_out.data()));
    Ok(to_tensor(&dw, &g.weight_shape()))
}

/// Gradient of the convolution with respect to its bias: the sum of the output gradient over
/// batch and space, shape `[K]`.
///
/// # Errors
/// An output gradient that is not 4-D.
pub fn conv2d_backward_bias(grad_out: &Tensor) -> Result<Tensor> {
    let [_, k, oh, ow] = grad_out.dims4("conv2d grad_output")?;
    let mut db = vec![0.0f64; k];
    // No element exists when k or oh·ow is 0, so the divisions below never see 0.
    for (i, v) in grad_out.data().iter().enumerate() {
        db[(i / (oh * ow)) % k] += *v as f64;
    }
    Ok(to_tensor(&db, &[k]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Padding;

    fn image() -> Tensor {
        Tensor::new((1..=9).map(|v| v as f32).collect(), &[1, 1, 3, 3]).unwrap()
    }
    fn kernel() -> Tensor {
        Tensor::new(vec![1.0, 0.0, 0.0, -1.0], &[1, 1, 2, 2]).unwrap()
    }

    #[test]
    fn textbook_valid_stride_one() {
        let y = conv2d(&image(), &kernel(), None, &Conv2dParams::default()).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.data(), &[-4.0, -4.0, -4.0, -4.0]);
    }

    #[test]
    fn textbook_padding_one() {
        // out[i][j] = xp[i][j] − xp[i+1][j+1] on the zero-padded 5×5 image.
        let y = conv2d(&image(), &kernel(), None, &Conv2dParams::default().padding(Padding::uniform(1))).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 4]);
        #[rustfmt::skip]
        let want = [-1.0, -2.0, -3.0, 0.0,
                    -4.0, -4.0, -4.0, 3.0,
                    -7.0, -4.0, -4.0, 6.0,
                     0.0,  7.0,  8.0, 9.0];
        assert_eq!(y.data(), &want);
    }

    #[test]
    fn textbook_stride_two() {
        let p = Conv2dParams::default().stride(2, 2);
        let y = conv2d(&image(), &kernel(), None, &p).unwrap();
        assert_eq!((y.shape(), y.data()), (&[1usize, 1, 1, 1][..], &[-4.0f32][..]));
        // With padding 1 the stride-2 windows start at padded (0,0), (0,2), (2,0), (2,2).
        let y = conv2d(&image(), &kernel(), None, &p.padding(Padding::uniform(1))).unwrap();
        assert_eq!(y.data(), &[-1.0, -3.0, -7.0, -4.0]);
    }

    #[test]
    fn textbook_dilation_two() {
        // The dilated kernel touches x[0][0] and x[2][2]: 1 − 9.
        let y = conv2d(&image(), &kernel(), None, &Conv2dParams::default().dilation(2, 2)).unwrap();
        assert_eq!((y.shape(), y.data()), (&[1usize, 1, 1, 1][..], &[-8.0f32][..]));
    }

    #[test]
    fn bias_and_groups() {
        // Two groups, each a 1×1 identity, with bias.
        let x = Tensor::from_fn(&[1, 2, 2, 2], |i| i as f32).unwrap();
        let w = Tensor::new(vec![1.0, 2.0], &[2, 1, 1, 1]).unwrap();
        let b = Tensor::new(vec![10.0, 20.0], &[2]).unwrap();
        let y = conv2d(&x, &w, Some(&b), &Conv2dParams::default().groups(2)).unwrap();
        assert_eq!(y.data(), &[10.0, 11.0, 12.0, 13.0, 28.0, 30.0, 32.0, 34.0]);
        let db = conv2d_backward_bias(&y).unwrap();
        assert_eq!(db.data(), &[46.0, 124.0]);
        let bad = Tensor::new(vec![0.0; 3], &[3]).unwrap();
        let e = conv2d(&x, &w, Some(&bad), &Conv2dParams::default().groups(2)).unwrap_err();
        assert_eq!(e.to_string(), "conv2d bias: expected [2], got [3]");
    }

    #[test]
    fn backward_shape_errors() {
        let p = Conv2dParams::default();
        let dy = Tensor::zeros(&[1, 1, 3, 3]).unwrap();
        let e = conv2d_backward_data(&dy, &kernel(), &[1, 1, 3, 3], &p).unwrap_err();
        assert_eq!(e.to_string(), "conv2d grad_output: expected [1, 1, 2, 2], got [1, 1, 3, 3]");
        let e = conv2d_backward_weight(&image(), &dy, &[1, 1, 2, 2], &p).unwrap_err();
        assert!(e.to_string().contains("grad_output"));
    }
}
