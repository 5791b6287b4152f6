use convkit::gemm::{gemm, GemmParams, MatMut, MatRef};
use convkit::Parallelism;
use std::time::Instant;
fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (m, n, k, t) = (args[0], args[1], args[2], args[3]);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; m * n];
    let p = GemmParams::default().parallelism(if t == 1 { Parallelism::Sequential } else { Parallelism::Auto });
    let mut v = vec![];
    for _ in 0..15 {
        let s = Instant::now();
        gemm(
            MatRef::row_major(&a, m, k).unwrap(),
            MatRef::row_major(&b, k, n).unwrap(),
            MatMut::row_major(&mut c, m, n).unwrap(),
            &p,
        )
        .unwrap();
        v.push(s.elapsed().as_secs_f64());
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{m}x{n}x{k} t{t}: {:.1} GFLOP/s (median {:.3} ms)", 2.0 * (m * n * k) as f64 / v[7] / 1e9, v[7] * 1e3);
}
