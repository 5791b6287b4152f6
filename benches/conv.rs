//! Criterion benchmarks of the convolution suite (the same shapes as `examples/compare.rs`):
//! forward with `Auto` and each explicit algorithm that supports the shape, and the two
//! backward passes. Throughput is set to the direct-convolution flop count, so criterion's
//! "Gelem/s" reads as GFLOP/s. The reference loop runs beside the fast paths on the tiny
//! shape as a baseline.

use convkit::conv::{Algorithm, Conv2dPlan, ConvOptions};
use convkit::{reference, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

#[path = "../examples/common/suite.rs"]
mod suite;

fn bench_conv(c: &mut Criterion) {
    for shape in suite::SUITE {
        let (name, xs, params, ws) = (shape.name, shape.x, shape.params(), shape.weight_shape());
        let x = Tensor::from_fn(&xs, |i| ((i * 37 % 101) as f32 - 50.0) / 50.0).unwrap();
        let w = Tensor::from_fn(&ws, |i| ((i * 13 % 29) as f32 - 14.0) / 140.0).unwrap();
        let auto = Conv2dPlan::new(&xs, &ws, &params, &ConvOptions::default()).unwrap();
        let flops = auto.geometry().flops();
        let mut group = c.benchmark_group(format!("conv/{name}"));
        group.throughput(Throughput::Elements(flops as u64));
        group.sample_size(if flops > 5e8 { 10 } else { 20 });
        let mut y = Tensor::zeros(&auto.geometry().output_shape()).unwrap();
        for algorithm in [Algorithm::Auto].into_iter().chain(Algorithm::EXPLICIT) {
            let Ok(plan) = Conv2dPlan::new(&xs, &ws, &params, &ConvOptions::default().algorithm(algorithm)) else {
                continue;
            };
            group.bench_function(BenchmarkId::new("forward", algorithm.name()), |b| {
                b.iter(|| plan.forward_into(&x, &w, None, false, black_box(&mut y)).unwrap())
            });
        }
        let dy = Tensor::from_fn(y.shape(), |i| ((i * 7 % 23) as f32 - 11.0) / 11.0).unwrap();
        let mut dx = Tensor::zeros(&xs).unwrap();
        let mut dw = Tensor::zeros(&ws).unwrap();
        group.bench_function("backward_data", |b| {
            b.iter(|| auto.backward_data_into(&dy, &w, black_box(&mut dx)).unwrap())
        });
        group.bench_function("backward_weight", |b| {
            b.iter(|| auto.backward_weight_into(&x, &dy, black_box(&mut dw)).unwrap())
        });
        if name == "seed_tiny" {
            group.bench_function("reference", |b| {
                b.iter(|| black_box(reference::conv2d(&x, &w, None, &params).unwrap()))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);
