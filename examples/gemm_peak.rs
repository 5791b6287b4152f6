//! Measures this machine's FMA peak with a tiny FMA-throughput loop (1 thread and all
//! threads), then runs the GEMM engine on square sizes and real im2col shapes and prints,
//! per size and thread count, GFLOP/s and the percentage of that peak (medians of repeats).
//! Small sizes are also compared with a plain blocked triple loop.
//!
//! ```sh
//! cargo run --release --example gemm_peak            # table
//! cargo run --release --example gemm_peak -- --json  # JSON lines: m, n, k, threads, gflops, peak_gflops
//! cargo run --release --example gemm_peak -- --quick # fewer sizes and repeats
//! ```

use convkit::gemm::{flops, gemm, GemmParams, MatMut, MatRef};
use convkit::parallel::{current_threads, for_each_part, with_threads};
use convkit::{simd, Parallelism, SimdLevel};
use std::hint::black_box;

#[path = "common/timing.rs"]
mod timing;
use std::time::Instant;

/// Independent FMA chains per thread: 12 covers FMA latency (4) × 2 pipes with margin and,
/// with the two constants, still fits the 16 ymm registers of AVX2 (more chains would spill
/// and measure the spills, not the FMA units).
const CHAINS: usize = 12;

/// Runs `iters` rounds of `CHAINS` independent vector FMAs; returns the flops done.
fn fma_loop(level: SimdLevel, iters: usize) -> f64 {
    let iters = black_box(iters);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx2,fma")]
        fn avx2(iters: usize) -> f32 {
            let mut acc = [_mm256_set1_ps(black_box(1.0)); CHAINS];
            let (m, c) = (_mm256_set1_ps(black_box(0.999_999)), _mm256_set1_ps(black_box(1e-6)));
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm256_fmadd_ps(*a, m, c);
                }
            }
            let s = acc.iter().fold(_mm256_setzero_ps(), |s, a| _mm256_add_ps(s, *a));
            _mm256_cvtss_f32(s)
        }
        #[target_feature(enable = "avx512f")]
        fn avx512(iters: usize) -> f32 {
            let mut acc = [_mm512_set1_ps(black_box(1.0)); CHAINS];
            let (m, c) = (_mm512_set1_ps(black_box(0.999_999)), _mm512_set1_ps(black_box(1e-6)));
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm512_fmadd_ps(*a, m, c);
                }
            }
            _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |s, a| _mm512_add_ps(s, *a)))
        }
        match level {
            SimdLevel::Avx512 => {
                // SAFETY: the caller checked that this CPU supports the level.
                black_box(unsafe { avx512(iters) });
                return (iters * CHAINS * 32) as f64;
            }
            SimdLevel::Avx2 => {
                // SAFETY: as above.
                black_box(unsafe { avx2(iters) });
                return (iters * CHAINS * 16) as f64;
            }
            SimdLevel::Portable => {}
        }
    }
    let mut acc = [wide::f32x8::splat(black_box(1.0)); CHAINS];
    let (m, c) = (wide::f32x8::splat(black_box(0.999_999)), wide::f32x8::splat(black_box(1e-6)));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(m, c);
        }
    }
    black_box(acc);
    (iters * CHAINS * 16) as f64
}

/// Peak GFLOP/s on `threads` threads, each running the FMA loop: median of 7.
fn peak(level: SimdLevel, threads: usize) -> f64 {
    let iters = 3_000_000;
    with_threads(threads, || {
        let mut v: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                let done = std::sync::Mutex::new(0.0);
                for_each_part(threads, |_| {
                    let f = fma_loop(level, iters);
                    *done.lock().unwrap() += f;
                });
                let flops = *done.lock().unwrap();
                flops / t.elapsed().as_secs_f64() / 1e9
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[3]
    })
}

/// A plain blocked single-thread loop (i-k-j order, row-major), the tiny-size baseline.
fn plain_loop(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    c.fill(0.0);
    for i in 0..m {
        for p in 0..k {
            let aip = a[i * k + p];
            for (cij, bpj) in c[i * n..(i + 1) * n].iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *cij += aip * bpj;
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let quick = args.iter().any(|a| a == "--quick");
    let level = simd::active();
    let all = current_threads();
    let thread_counts: Vec<usize> = if all > 1 { vec![1, all] } else { vec![1] };
    let peaks: Vec<(usize, f64)> = thread_counts.iter().map(|&t| (t, peak(level, t))).collect();
    let peak_of = |t: usize| peaks.iter().find(|p| p.0 == t).map_or(f64::NAN, |p| p.1);
    if !json {
        println!("SIMD level: {} (detected {})", level.name(), simd::detected().name());
        for (t, p) in &peaks {
            println!("FMA peak, {t} thread(s): {p:.1} GFLOP/s");
        }
        println!("\n| m | n | k | threads | ms (median) | GFLOP/s | % of peak |\n|---|---|---|---|---|---|---|");
    }
    let mut shapes: Vec<(usize, usize, usize)> = if quick {
        vec![(256, 256, 256), (1024, 1024, 1024)]
    } else {
        [64, 128, 256, 512, 1024, 2048].iter().map(|&s| (s, s, s)).collect()
    };
    shapes.extend([(64, 3136, 576), (256, 3136, 2304), (6, 784 * 64, 25)]);
    let samples = if quick { 5 } else { 11 };
    for (m, n, k) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 + 3) % 13) as f32 / 13.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 + 1) % 11) as f32 / 11.0 - 0.5).collect();
        let mut c = vec![0.0f32; m * n];
        for &t in &thread_counts {
            let secs = with_threads(t, || {
                timing::median_secs(
                    || {
                        let p = GemmParams::default().parallelism(Parallelism::Auto);
                        gemm(
                            MatRef::row_major(&a, m, k).unwrap(),
                            MatRef::row_major(&b, k, n).unwrap(),
                            MatMut::row_major(&mut c, m, n).unwrap(),
                            &p,
                        )
                        .unwrap();
                        black_box(&mut c);
                    },
                    samples,
                )
            });
            let gflops = flops(m, n, k) / secs / 1e9;
            let pk = peak_of(t);
            if json {
                println!(
                    "{{\"m\":{m},\"n\":{n},\"k\":{k},\"threads\":{t},\"gflops\":{gflops:.2},\"peak_gflops\":{pk:.2},\"ms\":{:.4},\"simd\":\"{}\"}}",
                    secs * 1e3,
                    level.name()
                );
            } else {
                println!("| {m} | {n} | {k} | {t} | {:.3} | {gflops:.1} | {:.0}% |", secs * 1e3, 100.0 * gflops / pk);
            }
        }
    }
    if !json {
        println!("\nTiny sizes, 1 thread: engine vs a plain blocked loop (µs per call, median)\n");
        println!("| m=n=k | engine µs | plain loop µs | ratio |\n|---|---|---|---|");
    }
    for s in [4usize, 8, 12, 16, 24, 32] {
        let a: Vec<f32> = (0..s * s).map(|i| (i % 7) as f32).collect();
        let b = a.clone();
        let mut c = vec![0.0f32; s * s];
        let eng = timing::median_secs(
            || {
                gemm(
                    MatRef::row_major(&a, s, s).unwrap(),
                    MatRef::row_major(&b, s, s).unwrap(),
                    MatMut::row_major(&mut c, s, s).unwrap(),
                    &GemmParams::default(),
                )
                .unwrap();
                black_box(&mut c);
            },
            samples,
        );
        let plain = timing::median_secs(
            || {
                plain_loop(s, s, s, black_box(&a), black_box(&b), &mut c);
                black_box(&mut c);
            },
            samples,
        );
        if json {
            println!(
                "{{\"tiny\":{s},\"engine_us\":{:.3},\"plain_us\":{:.3},\"ratio\":{:.2}}}",
                eng * 1e6,
                plain * 1e6,
                eng / plain
            );
        } else {
            println!("| {s} | {:.3} | {:.3} | {:.2} |", eng * 1e6, plain * 1e6, eng / plain);
        }
    }
}
