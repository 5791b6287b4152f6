//! Arbitrary GEMM problems with arbitrary strides, transposes, α, β and epilogue: `Err`
//! for inconsistent views, otherwise the reference triple loop within the stated tolerance.
#![no_main]

use convkit::check::Tolerance;
use convkit::gemm::{gemm, Bias, GemmParams, MatMut, MatRef};
use convkit::{reference, SimdLevel};
use libfuzzer_sys::fuzz_target;

fn take(data: &mut &[u8], modulo: u16) -> usize {
    let (b, rest) = data.split_first().map(|(b, r)| (*b, r)).unwrap_or((0, &[]));
    *data = rest;
    (b as u16 % modulo) as usize
}

/// Strides for a `rows × cols` view: row- or column-major with slack, or arbitrary (maybe
/// overlapping or out of range, which the view constructor must reject or handle).
fn strides(d: &mut &[u8], rows: usize, cols: usize) -> (usize, usize) {
    match take(d, 4) {
        0 => (cols + take(d, 3), 1),
        1 => (1, rows + take(d, 3)),
        2 => (take(d, 9), take(d, 9)),
        _ => (cols.max(1) * (1 + take(d, 2)), 1 + take(d, 2)),
    }
}

fn len_for(rows: usize, cols: usize, (rs, cs): (usize, usize), extra: usize) -> usize {
    if rows == 0 || cols == 0 {
        extra
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1 + extra
    }
}

fuzz_target!(|bytes: &[u8]| {
    let mut d = bytes;
    let (m, n, k) = (take(&mut d, 70), take(&mut d, 70), take(&mut d, 70));
    let (sa, sb, sc) = (strides(&mut d, m, k), strides(&mut d, k, n), strides(&mut d, m, n));
    // Sometimes hand the views a buffer that is too short.
    let short = take(&mut d, 6) == 0;
    let cut = |len: usize| if short { len.saturating_sub(1) } else { len };
    let a_buf: Vec<f32> = (0..cut(len_for(m, k, sa, 0))).map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0).collect();
    let b_buf: Vec<f32> = (0..cut(len_for(k, n, sb, 0))).map(|i| ((i * 53) % 19) as f32 / 9.0 - 1.0).collect();
    let mut c_buf: Vec<f32> = (0..cut(len_for(m, n, sc, 0))).map(|i| ((i * 11) % 7) as f32 - 3.0).collect();
    let (Ok(a), Ok(b)) = (MatRef::new(&a_buf, m, k, sa.0, sa.1), MatRef::new(&b_buf, k, n, sb.0, sb.1)) else { return };
    let c_copy = c_buf.clone();
    let Ok(c_view) = MatRef::new(&c_copy, m, n, sc.0, sc.1) else { return };
    let bias_vals: Vec<f32> = (0..m.max(n)).map(|i| i as f32 / 4.0 - 2.0).collect();
    let bias = match take(&mut d, 3) {
        0 => Bias::None,
        1 => Bias::PerRow(&bias_vals[..m]),
        _ => Bias::PerCol(&bias_vals[..n]),
    };
    let alpha = [1.0, -0.5, 2.0, 0.0][take(&mut d, 4)];
    let beta = [0.0, 1.0, -1.5][take(&mut d, 3)];
    let level = [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512][take(&mut d, 3)];
    let p = GemmParams::default().alpha(alpha).beta(beta).bias(bias).relu(take(&mut d, 2) == 1).simd(level);
    let want = reference::gemm(a, b, c_view, &p);
    let Ok(c) = MatMut::new(&mut c_buf, m, n, sc.0, sc.1) else { return };
    match gemm(a, b, c, &p) {
        Err(_) => return, // e.g. an instruction set the machine lacks, or overlapping C
        Ok(()) => {}
    }
    let got: Vec<f32> = (0..m * n).map(|i| c_buf[(i / n.max(1)) * sc.0 + (i % n.max(1)) * sc.1]).collect();
    Tolerance::reduction(k + 2).with_scale(4.0).check("gemm", &got, &want).unwrap();
});
