//! Element-wise activations and row-wise softmax, with their derivatives.
//!
//! Backward functions take the upstream gradient `dy` and return `dx`. ReLU's derivative at
//! exactly 0 is taken as 0. Sigmoid and tanh backward use the forward *output* `y`
//! (σ' = y(1−y), tanh' = 1−y²), as layers cache it.

use crate::error::{expect_shape, Result};
use crate::reference::{to_f64, to_tensor};
use crate::Tensor;

/// `max(x, 0)`.
pub fn relu_f64(x: f64) -> f64 {
    // NaN fails `x > 0` and `x <= 0` alike; keep it so it propagates.
    if x > 0.0 || x.is_nan() {
        x
    } else {
        0.0
    }
}

/// σ(x) = 1/(1+e^−x), evaluated without overflow for large |x|.
pub fn sigmoid_f64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Row-wise softmax of a `rows × cols` matrix in `f64`, stable (the row max is subtracted).
pub fn softmax_f64(x: &[f64], cols: usize) -> Vec<f64> {
    let mut y = x.to_vec();
    if cols == 0 {
        return y;
    }
    for row in y.chunks_mut(cols) {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        row.iter_mut().for_each(|v| *v = (*v - m).exp());
        let s: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    y
}

/// Softmax backward (Jacobian-vector product) in `f64`: `dx = y ⊙ (dy − Σ_j dy_j·y_j)` per row.
pub fn softmax_backward_f64(y: &[f64], dy: &[f64], cols: usize) -> Vec<f64> {
    let mut dx = vec![0.0; y.len()];
    if cols == 0 {
        return dx;
    }
    for ((yr, dyr), dxr) in y.chunks(cols).zip(dy.chunks(cols)).zip(dx.chunks_mut(cols)) {
        let dot: f64 = yr.iter().zip(dyr).map(|(a, b)| a * b).sum();
        for ((d, &yv), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
            *d = yv * (g - dot);
        }
    }
    dx
}

fn map(x: &Tensor, f: impl Fn(f64) -> f64) -> Tensor {
    let y: Vec<f64> = x.data().iter().map(|&v| f(v as f64)).collect();
    to_tensor(&y, x.shape())
}

fn zip_map(tensor: &str, a: &Tensor, dy: &Tensor, f: impl Fn(f64, f64) -> f64) -> Result<Tensor> {
    expect_shape(tensor, dy.shape(), a.shape())?;
    let dx: Vec<f64> = a.data().iter().zip(dy.data()).map(|(&a, &g)| f(a as f64, g as f64)).collect();
    Ok(to_tensor(&dx, a.shape()))
}

/// ReLU forward.
pub fn relu(x: &Tensor) -> Tensor {
    map(x, relu_f64)
}

/// ReLU backward from the forward input `x`: `dx = dy · [x > 0]`.
///
/// # Errors
/// `grad_out` of a different shape than `x`.
pub fn relu_backward(x: &Tensor, grad_out: &Tensor) -> Result<Tensor> {
    zip_map("relu grad_output", x, grad_out, |x, g| if x > 0.0 { g } else { 0.0 })
}

/// Sigmoid forward.
pub fn sigmoid(x: &Tensor) -> Tensor {
    map(x, sigmoid_f64)
}

/// Sigmoid backward from the forward output `y`: `dx = dy · y(1−y)`.
///
/// # Errors
/// `grad_out` of a different shape than `y`.
pub fn sigmoid_backward(y: &Tensor, grad_out: &Tensor) -> Result<Tensor> {
    zip_map("sigmoid grad_output", y, grad_out, |y, g| g * y * (1.0 - y))
}

/// tanh forward.
pub fn tanh(x: &Tensor) -> Tensor {
    map(x, f64::tanh)
}

/// tanh backward from the forward output `y`: `dx = dy · (1−y²)`.
///
/// # Errors
/// `grad_out` of a different shape than `y`.
pub fn tanh_backward(y: &Tensor, grad_out: &Tensor) -> Result<Tensor> {
    zip_map("tanh grad_output", y, grad_out, |y, g| g * (1.0 - y * y))
}

/// Row-wise softmax of a 2-D `[rows, classes]` tensor.
///
/// # Errors
/// An input that is not 2-D.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let [_, cols] = x.dims2("softmax input")?;
    Ok(to_tensor(&softmax_f64(&to_f64(x.data()), cols), x.shape()))
}

/// Softmax backward from the forward output `y` (Jacobian-vector product).
///
/// # Errors
/// `y` not 2-D, or `grad_out` of a different shape.
pub fn softmax_backward(y: &Tensor, grad_out: &Tensor) -> Result<Tensor> {
    let [_, cols] = y.dims2("softmax output")?;
    expect_shape("softmax grad_output", grad_out.shape(), y.shape())?;
    Ok(to_tensor(&softmax_backward_f64(&to_f64(y.data()), &to_f64(grad_out.data()), cols), y.shape()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        let x = Tensor::new(vec![-2.0, 0.0, 3.0], &[1, 3]).unwrap();
        assert_eq!(relu(&x).data(), &[0.0, 0.0, 3.0]);
        assert!((sigmoid(&x).data()[1] - 0.5).abs() < 1e-7);
        assert_eq!(sigmoid_f64(-800.0), 0.0);
        assert_eq!(sigmoid_f64(800.0), 1.0);
        let s = softmax(&Tensor::new(vec![1000.0, 1000.0, f32::MIN], &[1, 3]).unwrap()).unwrap();
        assert_eq!(s.data(), &[0.5, 0.5, 0.0]);
        assert!(relu_f64(f64::NAN).is_nan());
    }
}
