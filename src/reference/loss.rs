//! Losses with their gradients with respect to the prediction.
//!
//! Every loss is a mean: over all elements ([`mse`], the binary cross-entropies) or over the
//! rows of a `[N, classes]` batch ([`half_squared_error`], [`cross_entropy`]). The returned
//! gradient is of that mean.

use crate::error::{expect_shape, Error, Result};
use crate::reference::{activation::sigmoid_f64, to_f64, to_tensor};
use crate::Tensor;

/// A loss value and its gradient with respect to the prediction (or logits).
#[derive(Clone, Debug, PartialEq)]
pub struct LossOutput {
    /// The loss.
    pub value: f32,
    /// ∂loss/∂prediction, the prediction's shape.
    pub grad: Tensor,
}

/// Targets of a categorical cross-entropy.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// One class index per row.
    Classes(&'a [usize]),
    /// A probability row per row (one-hot or soft labels), the logits' shape.
    Distribution(&'a Tensor),
}

/// Probabilities are clamped to `[BCE_EPS, 1 − BCE_EPS]` before taking logs.
pub const BCE_EPS: f64 = 1e-7;

/// Mean squared error `mean((p − t)²)` and gradient `2(p − t)/len`, in `f64`.
pub fn mse_f64(p: &[f64], t: &[f64]) -> (f64, Vec<f64>) {
    let len = p.len().max(1) as f64;
    let loss = p.iter().zip(t).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / len;
    (loss, p.iter().zip(t).map(|(a, b)| 2.0 * (a - b) / len).collect())
}

/// Half squared error `(1/N) Σ ½(p − t)²` over `rows = N` rows and gradient `(p − t)/N`.
pub fn half_squared_error_f64(p: &[f64], t: &[f64], rows: usize) -> (f64, Vec<f64>) {
    let n = rows.max(1) as f64;
    let loss = p.iter().zip(t).map(|(a, b)| 0.5 * (a - b) * (a - b)).sum::<f64>() / n;
    (loss, p.iter().zip(t).map(|(a, b)| (a - b) / n).collect())
}

/// Binary cross-entropy on probabilities (clamped to `[ε, 1−ε]`), in `f64`.
pub fn bce_f64(p: &[f64], t: &[f64]) -> (f64, Vec<f64>) {
    let len = p.len().max(1) as f64;
    let mut loss = 0.0;
    let grad = p
        .iter()
        .zip(t)
        .map(|(&p, &t)| {
            let q = p.clamp(BCE_EPS, 1.0 - BCE_EPS);
            loss -= t * q.ln() + (1.0 - t) * (1.0 - q).ln();
            (q - t) / (q * (1.0 - q)) / len
        })
        .collect();
    (loss / len, grad)
}

/// Binary cross-entropy from logits, stable for any magnitude:
/// `max(z, 0) − z·t + ln(1 + e^−|z|)`, gradient `(σ(z) − t)/len`.
pub fn bce_with_logits_f64(z: &[f64], t: &[f64]) -> (f64, Vec<f64>) {
    let len = z.len().max(1) as f64;
    let loss = z.iter().zip(t).map(|(&z, &t)| z.max(0.0) - z * t + (-z.abs()).exp().ln_1p()).sum::<f64>() / len;
    (loss, z.iter().zip(t).map(|(&z, &t)| (sigmoid_f64(z) - t) / len).collect())
}

/// Categorical cross-entropy from logits (log-softmax fused with the negative
/// log-likelihood) against target distributions, mean over rows; gradient
/// `(softmax(z) − t)·(Σt)/N` per row.
pub fn cross_entropy_f64(z: &[f64], t: &[f64], cols: usize) -> (f64, Vec<f64>) {
    let rows = z.len().checked_div(cols).unwrap_or(0);
    let n = rows.max(1) as f64;
    let mut loss = 0.0;
    let mut grad = vec![0.0; z.len()];
    for r in 0..rows {
        let zr = &z[r * cols..(r + 1) * cols];
        let tr = &t[r * cols..(r + 1) * cols];
        let m = zr.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + zr.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let mass: f64 = tr.iter().sum();
        for j in 0..cols {
            let log_p = zr[j] - lse;
            if tr[j] != 0.0 {
                loss -= tr[j] * log_p;
            }
            grad[r * cols + j] = (log_p.exp() * mass - tr[j]) / n;
        }
    }
    (loss / n, grad)
}

fn same_shape(what: &str, pred: &Tensor, target: &Tensor) -> Result<()> {
    expect_shape(&format!("{what} target"), target.shape(), pred.shape())
}

fn output(value: f64, grad: &[f64], shape: &[usize]) -> LossOutput {
    LossOutput { value: value as f32, grad: to_tensor(grad, shape) }
}

/// Mean squared error.
///
/// # Errors
/// A target of a different shape than the prediction.
pub fn mse(pred: &Tensor, target: &Tensor) -> Result<LossOutput> {
    same_shape("mse", pred, target)?;
    let (l, g) = mse_f64(&to_f64(pred.data()), &to_f64(target.data()));
    Ok(output(l, &g, pred.shape()))
}

/// Half squared error `½(ŷ − y)²` summed over a row, averaged over the first dimension.
///
/// # Errors
/// A target of a different shape than the prediction.
pub fn half_squared_error(pred: &Tensor, target: &Tensor) -> Result<LossOutput> {
    same_shape("half_squared_error", pred, target)?;
    let (l, g) = half_squared_error_f64(&to_f64(pred.data()), &to_f64(target.data()), pred.shape()[0]);
    Ok(output(l, &g, pred.shape()))
}

/// Binary cross-entropy on probabilities.
///
/// # Errors
/// A target of a different shape than the prediction.
pub fn bce(prob: &Tensor, target: &Tensor) -> Result<LossOutput> {
    same_shape("bce", prob, target)?;
    let (l, g) = bce_f64(&to_f64(prob.data()), &to_f64(target.data()));
    Ok(output(l, &g, prob.shape()))
}

/// Binary cross-entropy from logits.
///
/// # Errors
/// A target of a different shape than the logits.
pub fn bce_with_logits(logits: &Tensor, target: &Tensor) -> Result<LossOutput> {
    same_shape("bce_with_logits", logits, target)?;
    let (l, g) = bce_with_logits_f64(&to_f64(logits.data()), &to_f64(target.data()));
    Ok(output(l, &g, logits.shape()))
}

/// Expands class indices to one-hot rows in `f64`.
///
/// # Errors
/// A label count other than `rows`, or a label `≥ classes`.
pub fn one_hot_f64(labels: &[usize], rows: usize, classes: usize) -> Result<Vec<f64>> {
    if labels.len() != rows {
        return Err(Error::shape("cross_entropy targets", format!("{rows} class indices"), &[labels.len()]));
    }
    let mut t = vec![0.0; rows * classes];
    for (r, &l) in labels.iter().enumerate() {
        if l >= classes {
            return Err(Error::param("cross_entropy target class", l, format!("must be below {classes}")));
        }
        t[r * classes + l] = 1.0;
    }
    Ok(t)
}

/// Categorical cross-entropy from logits `[N, classes]`, mean over rows.
///
/// # Errors
/// Logits that are not 2-D; targets of the wrong count or shape; a class index out of range.
pub fn cross_entropy(logits: &Tensor, targets: Targets<'_>) -> Result<LossOutput> {
    let [rows, cols] = logits.dims2("cross_entropy logits")?;
    let t = match targets {
        Targets::Classes(c) => one_hot_f64(c, rows, cols)?,
        Targets::Distribution(t) => {
            same_shape("cross_entropy", logits, t)?;
            to_f64(t.data())
        }
    };
    let (l, g) = cross_entropy_f64(&to_f64(logits.data()), &t, cols);
    Ok(output(l, &g, logits.shape()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_at_extremes() {
        let z = Tensor::new(vec![1000.0, -1000.0], &[1, 2]).unwrap();
        let out = cross_entropy(&z, Targets::Classes(&[0])).unwrap();
        assert_eq!(out.value, 0.0);
        let out = cross_entropy(&z, Targets::Classes(&[1])).unwrap();
        assert_eq!(out.value, 2000.0);
        assert_eq!(out.grad.data(), &[1.0, -1.0]);
        let t = Tensor::new(vec![0.0, 1.0], &[1, 2]).unwrap();
        let b = bce_with_logits(&z, &t).unwrap();
        assert!((b.value - 1000.0).abs() < 1e-3, "{}", b.value);
        let p = Tensor::new(vec![0.0, 1.0], &[1, 2]).unwrap();
        let b = bce(&p, &Tensor::new(vec![1.0, 0.0], &[1, 2]).unwrap()).unwrap();
        assert!(b.value.is_finite() && b.value > 15.0);
    }

    #[test]
    fn class_index_errors() {
        let z = Tensor::zeros(&[2, 3]).unwrap();
        let e = cross_entropy(&z, Targets::Classes(&[0, 3])).unwrap_err();
        assert!(e.to_string().contains("must be below 3"), "{e}");
        let e = cross_entropy(&z, Targets::Classes(&[0])).unwrap_err();
        assert!(e.to_string().contains("2 class indices"), "{e}");
        let one_hot = Tensor::new(vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0], &[2, 3]).unwrap();
        let a = cross_entropy(&z, Targets::Distribution(&one_hot)).unwrap();
        let b = cross_entropy(&z, Targets::Classes(&[0, 2])).unwrap();
        assert_eq!(a, b);
        assert!((a.value - 3f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn mse_values() {
        let p = Tensor::new(vec![1.0, 3.0], &[1, 2]).unwrap();
        let t = Tensor::new(vec![0.0, 0.0], &[1, 2]).unwrap();
        let l = mse(&p, &t).unwrap();
        assert_eq!(l.value, 5.0);
        assert_eq!(l.grad.data(), &[1.0, 3.0]);
        let l = half_squared_error(&p, &t).unwrap();
        assert_eq!(l.value, 5.0);
        assert_eq!(l.grad.data(), &[1.0, 3.0]);
    }
}
