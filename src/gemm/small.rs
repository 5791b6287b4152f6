//! Tiny problems: a direct loop with no packing, no scratch tiles and no threads. Below a
//! few thousand multiply-adds the packed path's fixed costs (buffers, packing, edge tiles)
//! outweigh its speed.

use super::{Bias, GemmParams, MatMut, MatRef};
use wide::{f32x4, f32x8};

/// Problems with `m·n·k` at most this go through [`run`].
pub(super) const MAX_WORK: usize = 12 * 12 * 12;

/// `C ← epilogue(α·A·B + β·C)`. Each element is a dot product summed `p = 0, 1, …, k−1` in
/// order, multiply then add; where B's rows are contiguous, eight (then four) columns at a
/// time.
pub(super) fn run(a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>, p: &GemmParams<'_>) {
    let (m, n, k) = (c.rows, c.cols, a.cols);
    let a_at = |i: usize, q: usize| {
        // SAFETY: callers pass i < m and q < k; MatRef::new checked that A's last element,
        // (m−1)·rs + (k−1)·cs, is inside its buffer, and (i, q) lies before it.
        unsafe { *a.data.get_unchecked(i * a.rs + q * a.cs) }
    };
    let b_at = |q: usize, j: usize| {
        // SAFETY: as for A, with q < k and j < n.
        unsafe { *b.data.get_unchecked(q * b.rs + j * b.cs) }
    };
    let (cols8, cols4) = if b.cs == 1 { (n / 8 * 8, n / 4 * 4) } else { (0, 0) };
    for i in 0..m {
        let mut finish = |j: usize, dot: f32| {
            // SAFETY: i < m and j < n; MatMut::new checked that C's last element is inside
            // its buffer.
            let cell = unsafe { c.data.get_unchecked_mut(i * c.rs + j * c.cs) };
            let mut v = p.alpha * dot;
            if p.beta != 0.0 {
                v += p.beta * *cell;
            }
            v += match p.epilogue.bias {
                Bias::None => 0.0,
                Bias::PerRow(r) => r[i],
                Bias::PerCol(cb) => cb[j],
            };
            if p.epilogue.relu && v < 0.0 {
                v = 0.0;
            }
            *cell = v;
        };
        for j0 in (0..cols8).step_by(8) {
            let mut acc = f32x8::ZERO;
            for q in 0..k {
                let start = q * b.rs + j0;
                let lanes: [f32; 8] = b.data[start..start + 8].try_into().expect("8 columns");
                acc += f32x8::splat(a_at(i, q)) * f32x8::from(lanes);
            }
            for (jj, dot) in acc.to_array().into_iter().enumerate() {
                finish(j0 + jj, dot);
            }
        }
        for j0 in (cols8..cols4).step_by(4) {
            let mut acc = f32x4::ZERO;
            for q in 0..k {
                let start = q * b.rs + j0;
                let lanes: [f32; 4] = b.data[start..start + 4].try_into().expect("4 columns");
                acc += f32x4::splat(a_at(i, q)) * f32x4::from(lanes);
            }
            for (jj, dot) in acc.to_array().into_iter().enumerate() {
                finish(j0 + jj, dot);
            }
        }
        for j in cols4..n {
            let dot = (0..k).fold(0.0f32, |acc, q| acc + a_at(i, q) * b_at(q, j));
            finish(j, dot);
        }
    }
}
