//! Dense (fully connected) layer: `y = x·Wᵀ + b` with `x: [N, IN]`, `W: [OUT, IN]`, `b: [OUT]`.

use crate::error::{expect_shape, Error, Result};
use crate::reference::{fits_f64, to_f64, to_tensor};
use crate::Tensor;

/// Dense forward in `f64`.
pub fn dense_forward_f64(n: usize, inp: usize, out: usize, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let mut y = vec![0.0; n * out];
    for i in 0..n {
        for o in 0..out {
            let dot: f64 = (0..inp).map(|j| x[i * inp + j] * w[o * inp + j]).sum();
            y[i * out + o] = dot + b.map_or(0.0, |b| b[o]);
        }
    }
    y
}

/// Dense backward in `f64`: returns `(dx, dW, db)` with `dx = dy·W`, `dW = dyᵀ·x`,
/// `db = Σ_rows dy`.
pub fn dense_backward_f64(
    n: usize,
    inp: usize,
    out: usize,
    x: &[f64],
    w: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; n * inp];
    let mut dw = vec![0.0; out * inp];
    let mut db = vec![0.0; out];
    for i in 0..n {
        for o in 0..out {
            let g = dy[i * out + o];
            db[o] += g;
            for j in 0..inp {
                dx[i * inp + j] += g * w[o * inp + j];
                dw[o * inp + j] += g * x[i * inp + j];
            }
        }
    }
    (dx, dw, db)
}

fn dense_dims(input: &Tensor, weight: &Tensor) -> Result<(usize, usize, usize)> {
    let [n, inp] = input.dims2("dense input")?;
    let [out, win] = weight.dims2("dense weight")?;
    if win != inp {
        return Err(Error::shape("dense weight", format!("2-D [OUT, IN] with IN = {inp}"), weight.shape()));
    }
    fits_f64(&[&[n, inp], &[out, inp], &[n, out]], "reference dense")?;
    Ok((n, inp, out))
}

/// Dense forward: `[N, IN] × [OUT, IN]ᵀ + [OUT] → [N, OUT]`.
///
/// # Errors
/// Inputs that are not 2-D, a weight whose second dimension is not IN, a bias that is not
/// `[OUT]`.
pub fn dense(input: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (n, inp, out) = dense_dims(input, weight)?;
    if let Some(b) = bias {
        expect_shape("dense bias", b.shape(), &[out])?;
    }
    let b = bias.map(|b| to_f64(b.data()));
    let y = dense_forward_f64(n, inp, out, &to_f64(input.data()), &to_f64(weight.data()), b.as_deref());
    Ok(to_tensor(&y, &[n, out]))
}

/// Gradients of the dense layer: returns `(grad_input, grad_weight, grad_bias)`.
///
/// # Errors
/// As [`dense`], and an output gradient that is not `[N, OUT]`.
pub fn dense_backward(input: &Tensor, weight: &Tensor, grad_out: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, inp, out) = dense_dims(input, weight)?;
    expect_shape("dense grad_output", grad_out.shape(), &[n, out])?;
    let (dx, dw, db) =
        dense_backward_f64(n, inp, out, &to_f64(input.data()), &to_f64(weight.data()), &to_f64(grad_out.data()));
    Ok((to_tensor(&dx, &[n, inp]), to_tensor(&dw, &[out, inp]), to_tensor(&db, &[out])))
}
