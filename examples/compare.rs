//! Compares convolution algorithms and stride/padding variants on a suite of real layer
//! shapes: forward, backward-data and backward-weight, 1 thread and all threads. The
//! `forward_packed` pass is the forward with the weights packed once beforehand
//! (`Conv2dPlan::pack_weights`, as an inference session would), `forward` packs per call.
//!
//! ```sh
//! cargo run --release --example compare                 # table
//! cargo run --release --example compare -- --json       # JSON lines: name, algorithm, pass, threads, ms, ms_min, gflops
//! cargo run --release --example compare -- --quick      # fewer repeats
//! cargo run --release --example compare -- --min-time 0.2  # samples to fill 0.2 s each (the anchors' rule)
//! cargo run --release --example compare -- --only resnet_c2 --passes forward --algorithms auto,im2col
//! ```
//! Times are medians of repeated samples; GFLOP/s counts direct-convolution flops
//! `2·N·K·OH·OW·(C/groups)·R·S` for every pass.

use convkit::conv::{Algorithm, Conv2dPlan, ConvOptions};
use convkit::parallel::{current_threads, with_threads};
use convkit::Tensor;
use std::hint::black_box;

#[path = "common/suite.rs"]
mod suite;
#[path = "common/timing.rs"]
mod timing;

use suite::SUITE;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> convkit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let samples = if args.iter().any(|a| a == "--quick") { 5 } else { 11 };
    // `--min-time S`: samples to fill S seconds per measurement instead (as the anchors do).
    let min_time: Option<f64> = arg(&args, "--min-time").and_then(|v| v.parse().ok());
    let measure = |f: &mut dyn FnMut()| match min_time {
        Some(t) => timing::sampled_for(f, t),
        None => timing::sampled(f, samples),
    };
    let only: Option<Vec<String>> = arg(&args, "--only").map(|s| s.split(',').map(String::from).collect());
    let passes: Vec<String> = arg(&args, "--passes")
        .unwrap_or_else(|| "forward,forward_packed,backward_data,backward_weight".into())
        .split(',')
        .map(String::from)
        .collect();
    let algorithms: Vec<Algorithm> = arg(&args, "--algorithms")
        .unwrap_or_else(|| "auto,im2col,direct,depthwise".into())
        .split(',')
        .filter_map(Algorithm::from_name)
        .collect();
    let all = current_threads();
    let thread_counts: Vec<usize> = match arg(&args, "--threads") {
        Some(t) => t.split(',').filter_map(|v| v.parse().ok()).collect(),
        None if all > 1 => vec![1, all],
        None => vec![1],
    };
    if !json {
        println!("| shape | algorithm | pass | threads | ms (median) | GFLOP/s |\n|---|---|---|---|---|---|");
    }
    for s in SUITE.iter().filter(|s| only.as_ref().is_none_or(|o| o.iter().any(|n| n == s.name))) {
        let params = s.params();
        let ws = s.weight_shape();
        let x = Tensor::from_fn(&s.x, |i| ((i * 37 % 101) as f32 - 50.0) / 50.0)?;
        let w = Tensor::from_fn(&ws, |i| ((i * 13 % 29) as f32 - 14.0) / 140.0)?;
        let b = Tensor::from_fn(&[s.k], |i| i as f32 / 10.0)?;
        for &algorithm in &algorithms {
            let opts = ConvOptions::default().algorithm(algorithm);
            let plan = match Conv2dPlan::new(&s.x, &ws, &params, &opts) {
                Ok(p) => p,
                Err(_) => continue, // e.g. depthwise on a dense layer
            };
            let label = match algorithm {
                Algorithm::Auto | Algorithm::Measured => format!("{} ({})", algorithm.name(), plan.algorithm().name()),
                a => a.name().to_string(),
            };
            let flops = plan.geometry().flops();
            let mut y = Tensor::zeros(&plan.geometry().output_shape())?;
            let dy = Tensor::from_fn(y.shape(), |i| ((i * 7 % 23) as f32 - 11.0) / 11.0)?;
            let mut dx = Tensor::zeros(&s.x)?;
            let mut dw = Tensor::zeros(&ws)?;
            for pass in &passes {
                for &t in &thread_counts {
                    let secs = with_threads(t, || match pass.as_str() {
                        "forward" => {
                            measure(&mut || plan.forward_into(&x, &w, Some(&b), false, black_box(&mut y)).unwrap())
                        }
                        "forward_packed" => {
                            let packed = plan.pack_weights(&w).unwrap();
                            measure(&mut || {
                                plan.forward_packed_into(&x, &packed, Some(&b), false, black_box(&mut y)).unwrap()
                            })
                        }
                        "backward_data" => {
                            measure(&mut || plan.backward_data_into(&dy, &w, black_box(&mut dx)).unwrap())
                        }
                        "backward_weight" => {
                            measure(&mut || plan.backward_weight_into(&x, &dy, black_box(&mut dw)).unwrap())
                        }
                        _ => timing::Sampled { median: f64::NAN, min: f64::NAN },
                    });
                    let (secs, min_secs) = (secs.median, secs.min);
                    if secs.is_nan() {
                        continue;
                    }
                    let gflops = flops / secs / 1e9;
                    if json {
                        println!(
                            "{{\"name\":\"{}\",\"algorithm\":\"{}\",\"chosen\":\"{}\",\"pass\":\"{pass}\",\"threads\":{t},\"ms\":{:.5},\"ms_min\":{:.5},\"gflops\":{gflops:.3}}}",
                            s.name,
                            algorithm.name(),
                            plan.algorithm().name(),
                            secs * 1e3,
                            min_secs * 1e3
                        );
                    } else {
                        println!("| {} | {label} | {pass} | {t} | {:.4} | {gflops:.1} |", s.name, secs * 1e3);
                    }
                }
            }
        }
    }
    Ok(())
}
