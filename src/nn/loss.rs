//! Training losses (fast `f32` forms; the `reference` module holds the f64 ground truth).

use crate::error::{Error, Result};
use crate::Tensor;

/// A loss value and its gradient with respect to the model output.
#[derive(Clone, Debug)]
pub struct LossValue {
    /// Mean loss over the batch.
    pub loss: f32,
    /// ∂loss/∂logits, the logits' shape.
    pub grad: Tensor,
    /// Rows whose largest logit is the target class.
    pub correct: usize,
}

/// Softmax fused with categorical cross-entropy on logits `[N, classes]` against class
/// indices, averaged over the batch: stable for any logit magnitude (the row max is
/// subtracted before exponentiating). Gradient `(softmax − onehot) / N`.
///
/// # Errors
/// Logits that are not 2-D, a label count other than `N`, a label out of range.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &[usize]) -> Result<LossValue> {
    let [n, c] = logits.dims2("cross_entropy logits")?;
    if labels.len() != n {
        return Err(Error::shape("cross_entropy labels", format!("{n} class indices"), &[labels.len()]));
    }
    let mut grad = logits.clone();
    let (mut total, mut correct) = (0.0f64, 0);
    for (row, &label) in grad.data_mut().chunks_exact_mut(c.max(1)).zip(labels) {
        if label >= c {
            return Err(Error::param("cross_entropy label", label, format!("must be below {c}")));
        }
        let (argmax, m) =
            row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        correct += usize::from(argmax == label);
        let sum: f32 = row.iter().map(|&v| (v - m).exp()).sum();
        let lse = m + sum.ln();
        total += (lse - row[label]) as f64;
        let inv_n = 1.0 / n as f32;
        for (i, v) in row.iter_mut().enumerate() {
            let p = (*v - lse).exp();
            *v = (p - if i == label { 1.0 } else { 0.0 }) * inv_n;
        }
    }
    Ok(LossValue { loss: (total / n.max(1) as f64) as f32, grad, correct })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{cross_entropy, Targets};

    #[test]
    fn matches_the_reference() {
        let z = Tensor::from_fn(&[5, 7], |i| ((i * 13 % 17) as f32 - 8.0) * 0.7).unwrap();
        let labels = [0, 3, 6, 2, 2];
        let fast = softmax_cross_entropy(&z, &labels).unwrap();
        let slow = cross_entropy(&z, Targets::Classes(&labels)).unwrap();
        assert!((fast.loss - slow.value).abs() < 1e-5);
        assert!(fast.grad.max_abs_diff(&slow.grad).unwrap() < 1e-6);
        let big = Tensor::new(vec![1e4, -1e4, 0.0], &[1, 3]).unwrap();
        assert!(softmax_cross_entropy(&big, &[1]).unwrap().loss.is_finite());
        assert!(softmax_cross_entropy(&z, &[0, 1]).is_err());
        assert!(softmax_cross_entropy(&z, &[0, 1, 2, 3, 7]).is_err());
    }
}
