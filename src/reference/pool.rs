//! Max and average pooling (forward and backward) and global average pooling.
//!
//! Padded cells never win a max. An average divides by the number of real cells in the
//! window, or by the full window size when `count_include_pad` is set. Max-pool ties go to
//! the first cell in row-major window order, in forward and backward alike.

use crate::error::{expect_shape, Result};
use crate::geometry::{Pool2dGeometry, Pool2dParams};
use crate::reference::{fits_f64, to_f64, to_tensor};
use crate::Tensor;

/// Calls `f(y_index, window)` for every output cell, where `window` lists the flat input
/// indices of the real cells it covers, and gives the full window size.
fn for_each_window(g: &Pool2dGeometry, mut f: impl FnMut(usize, &[usize], usize)) {
    let (h, w) = (g.h, g.w);
    let mut cells = Vec::with_capacity(h.kernel * w.kernel);
    for plane in 0..g.n * g.c {
        for oh in 0..h.output {
            for ow in 0..w.output {
                cells.clear();
                for r in 0..h.kernel {
                    let Some(ih) = h.input_index(oh, r) else { continue };
                    for s in 0..w.kernel {
                        let Some(iw) = w.input_index(ow, s) else { continue };
                        cells.push((plane * h.input + ih) * w.input + iw);
                    }
                }
                f((plane * h.output + oh) * w.output + ow, &cells, h.kernel * w.kernel);
            }
        }
    }
}

fn argmax(x: &[f64], cells: &[usize]) -> usize {
    // Geometry guarantees at least one real cell per window. NaN wins, so it propagates.
    let mut best = cells[0];
    for &i in &cells[1..] {
        if x[i] > x[best] || (x[i].is_nan() && !x[best].is_nan()) {
            best = i;
        }
    }
    best
}

/// Max-pool forward in `f64`.
pub fn max_pool2d_f64(g: &Pool2dGeometry, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; g.output_shape().iter().product()];
    for_each_window(g, |yi, cells, _| y[yi] = x[argmax(x, cells)]);
    y
}

/// Max-pool backward in `f64`: each output gradient goes to its window's (first) maximum.
pub fn max_pool2d_backward_f64(g: &Pool2dGeometry, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; x.len()];
    for_each_window(g, |yi, cells, _| dx[argmax(x, cells)] += dy[yi]);
    dx
}

fn divisor(g: &Pool2dGeometry, cells: &[usize], full: usize) -> f64 {
    if g.count_include_pad {
        full as f64
    } else {
        cells.len() as f64
    }
}

/// Average-pool forward in `f64`.
pub fn avg_pool2d_f64(g: &Pool2dGeometry, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; g.output_shape().iter().product()];
    for_each_window(g, |yi, cells, full| {
        y[yi] = cells.iter().map(|&i| x[i]).sum::<f64>() / divisor(g, cells, full);
    });
    y
}

/// Average-pool backward in `f64`: each output gradient is spread evenly over its window.
pub fn avg_pool2d_backward_f64(g: &Pool2dGeometry, dy: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; g.input_shape().iter().product()];
    for_each_window(g, |yi, cells, full| {
        let share = dy[yi] / divisor(g, cells, full);
        cells.iter().for_each(|&i| dx[i] += share);
    });
    dx
}

fn pool_geometry(input_shape: &[usize], p: &Pool2dParams) -> Result<Pool2dGeometry> {
    let g = Pool2dGeometry::new(input_shape, p)?;
    fits_f64(&[&g.input_shape(), &g.output_shape()], "reference pool2d")?;
    Ok(g)
}

/// Max pooling over `[N,C,H,W]`.
///
/// # Errors
/// Geometry errors of [`Pool2dGeometry::new`].
pub fn max_pool2d(input: &Tensor, p: &Pool2dParams) -> Result<Tensor> {
    let g = pool_geometry(input.shape(), p)?;
    Ok(to_tensor(&max_pool2d_f64(&g, &to_f64(input.data())), &g.output_shape()))
}

/// Gradient of max pooling with respect to its input.
///
/// # Errors
/// Geometry errors; an output gradient whose shape is not the forward output's.
pub fn max_pool2d_backward(input: &Tensor, grad_out: &Tensor, p: &Pool2dParams) -> Result<Tensor> {
    let g = pool_geometry(input.shape(), p)?;
    expect_shape("max_pool2d grad_output", grad_out.shape(), &g.output_shape())?;
    let dx = max_pool2d_backward_f64(&g, &to_f64(input.data()), &to_f64(grad_out.data()));
    Ok(to_tensor(&dx, &g.input_shape()))
}

/// Average pooling over `[N,C,H,W]`.
///
/// # Errors
/// Geometry errors of [`Pool2dGeometry::new`].
pub fn avg_pool2d(input: &Tensor, p: &Pool2dParams) -> Result<Tensor> {
    let g = pool_geometry(input.shape(), p)?;
    Ok(to_tensor(&avg_pool2d_f64(&g, &to_f64(input.data())), &g.output_shape()))
}

/// Gradient of average pooling with respect to its input, whose shape is `input_shape`.
///
/// # Errors
/// Geometry errors; an output gradient whose shape is not the forward output's.
pub fn avg_pool2d_backward(grad_out: &Tensor, input_shape: &[usize], p: &Pool2dParams) -> Result<Tensor> {
    let g = pool_geometry(input_shape, p)?;
    expect_shape("avg_pool2d grad_output", grad_out.shape(), &g.output_shape())?;
    let dx = avg_pool2d_backward_f64(&g, &to_f64(grad_out.data()));
    Ok(to_tensor(&dx, &g.input_shape()))
}

/// Global average pooling `[N,C,H,W] → [N,C,1,1]` in `f64`; `hw = H·W` must be ≥ 1.
pub fn global_avg_pool_f64(x: &[f64], hw: usize) -> Vec<f64> {
    x.chunks(hw).map(|plane| plane.iter().sum::<f64>() / hw as f64).collect()
}

/// Global average pooling backward in `f64`.
pub fn global_avg_pool_backward_f64(dy: &[f64], hw: usize) -> Vec<f64> {
    dy.iter().flat_map(|&d| std::iter::repeat_n(d / hw as f64, hw)).collect()
}

fn global_dims(shape: &[usize], tensor: &str) -> Result<[usize; 4]> {
    match *shape {
        [n, c, h, w] if h > 0 && w > 0 => Ok([n, c, h, w]),
        _ => Err(crate::Error::shape(tensor, "4-D [N, C, H, W] with H, W ≥ 1", shape)),
    }
}

/// Global average pooling `[N,C,H,W] → [N,C,1,1]`.
///
/// # Errors
/// An input that is not 4-D with non-empty planes.
pub fn global_avg_pool(input: &Tensor) -> Result<Tensor> {
    let [n, c, h, w] = global_dims(input.shape(), "global_avg_pool input")?;
    Ok(to_tensor(&global_avg_pool_f64(&to_f64(input.data()), h * w), &[n, c, 1, 1]))
}

/// Gradient of global average pooling with respect to its input of shape `input_shape`.
///
/// # Errors
/// A bad input shape, or an output gradient that is not `[N,C,1,1]`.
pub fn global_avg_pool_backward(grad_out: &Tensor, input_shape: &[usize]) -> Result<Tensor> {
    let [n, c, h, w] = global_dims(input_shape, "global_avg_pool input")?;
    expect_shape("global_avg_pool grad_output", grad_out.shape(), &[n, c, 1, 1])?;
    Ok(to_tensor(&global_avg_pool_backward_f64(&to_f64(grad_out.data()), h * w), input_shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Padding;

    #[test]
    fn max_and_average_by_hand() {
        let x = Tensor::from_fn(&[1, 1, 4, 4], |i| i as f32).unwrap();
        let p = Pool2dParams::new(2, 2);
        assert_eq!(max_pool2d(&x, &p).unwrap().data(), &[5.0, 7.0, 13.0, 15.0]);
        assert_eq!(avg_pool2d(&x, &p).unwrap().data(), &[2.5, 4.5, 10.5, 12.5]);
        let dy = Tensor::new(vec![1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
        let dx = max_pool2d_backward(&x, &dy, &p).unwrap();
        assert_eq!(dx.data()[5], 1.0);
        assert_eq!(dx.data()[15], 4.0);
        assert_eq!(dx.data().iter().sum::<f32>(), 10.0);
        let dx = avg_pool2d_backward(&dy, &[1, 1, 4, 4], &p).unwrap();
        assert_eq!(dx.data()[0], 0.25);
        assert_eq!(dx.data()[15], 1.0);
    }

    #[test]
    fn padding_and_count_include_pad() {
        let x = Tensor::new(vec![1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
        let p = Pool2dParams::new(2, 2).padding(Padding::uniform(1));
        // Corner windows hold one real cell each.
        assert_eq!(avg_pool2d(&x, &p).unwrap().data(), &[1.0, 2.0, 3.0, 4.0]);
        let y = avg_pool2d(&x, &p.count_include_pad(true)).unwrap();
        assert_eq!(y.data(), &[0.25, 0.5, 0.75, 1.0]);
        let neg = Tensor::new(vec![-1.0, -2.0, -3.0, -4.0], &[1, 1, 2, 2]).unwrap();
        assert_eq!(max_pool2d(&neg, &p).unwrap().data(), &[-1.0, -2.0, -3.0, -4.0]);
    }

    #[test]
    fn global_average() {
        let x = Tensor::from_fn(&[1, 2, 1, 3], |i| i as f32).unwrap();
        assert_eq!(global_avg_pool(&x).unwrap().data(), &[1.0, 4.0]);
        let dy = Tensor::new(vec![3.0, 6.0], &[1, 2, 1, 1]).unwrap();
        assert_eq!(global_avg_pool_backward(&dy, &[1, 2, 1, 3]).unwrap().data(), &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert!(global_avg_pool(&Tensor::zeros(&[1, 2, 0, 3]).unwrap()).is_err());
    }
}
