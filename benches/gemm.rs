//! Criterion benchmarks of the GEMM engine: square sizes 64–2048 and the im2col shapes of
//! real layers. The throughput is set to the flop count, so criterion's "Gelem/s" reads as
//! GFLOP/s.
//! The naive reference loop sits in the same group at the smallest size as a baseline.

use convkit::gemm::{flops, gemm, GemmParams, MatMut, MatRef};
use convkit::reference;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

fn operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let a = (0..m * k).map(|i| ((i * 7 + 3) % 13) as f32 / 13.0 - 0.5).collect();
    let b = (0..k * n).map(|i| ((i * 5 + 1) % 11) as f32 / 11.0 - 0.5).collect();
    (a, b, vec![0.0; m * n])
}

fn bench_gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    let shapes: Vec<(String, usize, usize, usize)> = [64usize, 128, 256, 512, 1024, 2048]
        .iter()
        .map(|&s| (s.to_string(), s, s, s))
        .chain([
            ("im2col_resnet_c2".to_string(), 64, 3136, 576),
            ("im2col_vgg_c3".to_string(), 256, 3136, 2304),
            ("im2col_lenet_c1".to_string(), 6, 784 * 64, 25),
        ])
        .collect();
    for (name, m, n, k) in shapes {
        let (a, b, mut cbuf) = operands(m, n, k);
        group.throughput(Throughput::Elements(flops(m, n, k) as u64));
        if m * n * k >= 1 << 30 {
            group.sample_size(10);
        } else {
            group.sample_size(30);
        }
        group.bench_function(BenchmarkId::new("convkit", &name), |bch| {
            bch.iter(|| {
                gemm(
                    MatRef::row_major(&a, m, k).unwrap(),
                    MatRef::row_major(&b, k, n).unwrap(),
                    MatMut::row_major(&mut cbuf, m, n).unwrap(),
                    &GemmParams::default(),
                )
                .unwrap();
                black_box(&mut cbuf);
            })
        });
        if m == 64 && n == 64 {
            group.bench_function(BenchmarkId::new("reference", &name), |bch| {
                bch.iter(|| {
                    let cv = MatRef::row_major(&cbuf, m, n).unwrap();
                    black_box(reference::gemm(
                        MatRef::row_major(&a, m, k).unwrap(),
                        MatRef::row_major(&b, k, n).unwrap(),
                        cv,
                        &GemmParams::default(),
                    ))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
