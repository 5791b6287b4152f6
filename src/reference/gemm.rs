//! The naive triple loop for `C ← epilogue(α·A·B + β·C)`, accumulated in `f64`.

use crate::gemm::{Bias, GemmParams, MatRef};

/// Returns the `m × n` result, row-major. `c` is the input C (read only when `β ≠ 0`).
pub fn gemm(a: MatRef<'_>, b: MatRef<'_>, c: MatRef<'_>, p: &GemmParams<'_>) -> Vec<f32> {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let mut out = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let acc: f64 = (0..k).map(|q| a.at(i, q) as f64 * b.at(q, j) as f64).sum();
            let mut v = p.alpha as f64 * acc;
            if p.beta != 0.0 {
                v += p.beta as f64 * c.at(i, j) as f64;
            }
            v += match p.epilogue.bias {
                Bias::None => 0.0,
                Bias::PerRow(r) => r[i] as f64,
                Bias::PerCol(cb) => cb[j] as f64,
            };
            if p.epilogue.relu && v < 0.0 {
                v = 0.0;
            }
            out[i * n + j] = v as f32;
        }
    }
    out
}
