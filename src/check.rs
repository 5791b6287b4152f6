//! Comparing fast kernels with the reference: the one place where tolerances are stated.
//!
//! A fast `f32` kernel computes each output as a sum of `k` products (`k` = the reduction
//! length: `C/groups·R·S` for a convolution, the inner dimension for GEMM). With inputs of
//! magnitude ≤ `scale`, the rounding error of any summation order is bounded by about
//! `k·ε·scale²`; random data does far better (`√k·ε`), so the bound below leaves room for
//! blocked and vectorised orders without hiding real bugs (an off-by-one tap is an error of
//! order `scale²`, many orders of magnitude above it).
//!
//! ```text
//! |actual − expected| ≤ tol(k) · max(scale², |expected|),   tol(k) = 4·ε_f32·(k + 1)
//! ```
//!
//! NaN must meet NaN and infinities must match exactly.

use std::fmt;

/// Relative tolerance for a reduction of length `k` (see the module docs).
pub fn tolerance(reduction_len: usize) -> f32 {
    4.0 * f32::EPSILON * (reduction_len as f32 + 1.0)
}

/// A comparison rule: the tolerance for a reduction length, at a data scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance.
    pub rel: f32,
    /// Magnitude bound of the inputs (the error floor is `rel · scale²`).
    pub scale: f32,
}

impl Tolerance {
    /// The rule for sums of `k` products of inputs of magnitude ≤ 1.
    pub fn reduction(k: usize) -> Self {
        Tolerance { rel: tolerance(k), scale: 1.0 }
    }

    /// The same rule for inputs of magnitude ≤ `scale`.
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = scale;
        self
    }

    /// Multiplies the tolerance by `factor`, for algorithms with a known, measured extra
    /// error (Winograd transforms); say why where it is used.
    pub fn loosen(mut self, factor: f32) -> Self {
        self.rel *= factor;
        self
    }

    /// Whether one element passes.
    pub fn accepts(&self, actual: f32, expected: f32) -> bool {
        if expected.is_nan() || actual.is_nan() {
            return expected.is_nan() && actual.is_nan();
        }
        if expected.is_infinite() || actual.is_infinite() {
            return actual == expected;
        }
        let floor = self.scale * self.scale;
        (actual - expected).abs() <= self.rel * floor.max(expected.abs())
    }

    /// Compares two buffers element by element.
    ///
    /// # Errors
    /// A [`Mismatch`] describing the differing lengths or the wrong cells.
    pub fn check(&self, what: &str, actual: &[f32], expected: &[f32]) -> Result<(), Mismatch> {
        if actual.len() != expected.len() {
            return Err(Mismatch {
                what: what.to_string(),
                detail: format!("length {} != expected length {}", actual.len(), expected.len()),
            });
        }
        let bad: Vec<usize> = (0..actual.len()).filter(|&i| !self.accepts(actual[i], expected[i])).collect();
        if bad.is_empty() {
            return Ok(());
        }
        let worst = *bad
            .iter()
            .max_by(|&&a, &&b| {
                let da = (actual[a] - expected[a]).abs();
                let db = (actual[b] - expected[b]).abs();
                da.partial_cmp(&db).unwrap_or(std::cmp::Ordering::Greater)
            })
            .unwrap_or(&bad[0]);
        let first: Vec<String> =
            bad.iter().take(8).map(|&i| format!("[{i}] {} vs {}", actual[i], expected[i])).collect();
        Err(Mismatch {
            what: what.to_string(),
            detail: format!(
                "{} of {} cells off (tol {:.3e}, scale {}); worst [{worst}] {} vs {}; first: {}",
                bad.len(),
                actual.len(),
                self.rel,
                self.scale,
                actual[worst],
                expected[worst],
                first.join(", ")
            ),
        })
    }
}

/// Where two buffers differ beyond the tolerance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// What was compared.
    pub what: String,
    /// Which cells, by how much.
    pub detail: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} differs from the reference: {}", self.what, self.detail)
    }
}

impl std::error::Error for Mismatch {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_real_errors_and_passes_rounding() {
        let t = Tolerance::reduction(100);
        assert!(t.check("x", &[1.0, 2.0], &[1.0 + 1e-6, 2.0]).is_ok());
        assert!(t.check("x", &[1.0, 2.0], &[1.1, 2.0]).is_err());
        assert!(t.check("x", &[1.0], &[1.0, 2.0]).is_err());
        assert!(t.check("x", &[f32::NAN], &[f32::NAN]).is_ok());
        assert!(t.check("x", &[0.0], &[f32::NAN]).is_err());
        assert!(t.check("x", &[f32::INFINITY], &[f32::INFINITY]).is_ok());
        assert!(t.check("x", &[f32::MAX], &[f32::INFINITY]).is_err());
        let m = t.check("conv", &[0.0, 5.0], &[0.0, 1.0]).unwrap_err().to_string();
        assert!(m.contains("[1] 5 vs 1"), "{m}");
    }
}
