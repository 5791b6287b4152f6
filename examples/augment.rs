//! What augmentation buys LeNet-5, how fast it runs, and what it looks like.
//!
//! ```sh
//! cargo run --release --example augment                      # the effect study (table)
//! cargo run --release --example augment -- --json            # the same as JSON lines
//! cargo run --release --example augment -- --grid grid.png   # originals + augmented variants
//! cargo run --release --example augment -- --throughput      # images per second, 1 and all threads
//!                                                            # (every preset, or those of --presets)
//! ```
//!
//! The study trains LeNet-5 (the main job's settings, no validation split) on the first
//! 1,000 and on all 8,000 training digits, with each pipeline of `--presets` (default
//! `none,digits`) and each seed of `--seeds` (default `1,2,3`), and reports test accuracy on
//! the 2,000 held-out digits and on the robustness set made from them
//! ([`convkit::augment::robustness_set`]). `--sizes 1000,8000` and `--epochs 1000:60,8000:15`
//! (epochs per training-set size) change the grid; `--data DIR` reads another MNIST.
//! JSON lines have `train_size`, `augment`, `seed`, `test_accuracy`, `robust_accuracy`,
//! `epochs`, `seconds`. The augmentation options of the main job (`--augment NAME`,
//! `--rotate DEG`, …) choose the pipeline of `--grid`.

use convkit::augment::{robustness_set, Pipeline};
use convkit::data::{load_mnist, MNIST_MEAN, MNIST_STD};
use convkit::nn::{evaluate, fit, lenet5, Activation, Adam, FitConfig, LrSchedule, Pooling};
use convkit::parallel::{current_threads, with_threads};
use convkit::Tensor;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "common/augment_cli.rs"]
mod augment_cli;
#[path = "common/timing.rs"]
mod timing;

struct Args {
    data: PathBuf,
    json: bool,
    grid: Option<PathBuf>,
    throughput: bool,
    presets: Vec<String>,
    presets_given: bool,
    seeds: Vec<u64>,
    sizes: Vec<usize>,
    epochs: Vec<(usize, usize)>,
    augment: augment_cli::AugmentArgs,
}

fn list<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Vec<T>, String> {
    v.split(',').map(|s| s.trim().parse::<T>().map_err(|_| format!("{flag}: cannot read {s}"))).collect()
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        data: Path::new(env!("CARGO_MANIFEST_DIR")).join("data"),
        json: false,
        grid: None,
        throughput: false,
        presets: vec!["none".into(), "digits".into()],
        presets_given: false,
        seeds: vec![1, 2, 3],
        sizes: vec![1000, 8000],
        epochs: vec![(1000, 60), (8000, 15)],
        augment: Default::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        if a.augment.take(&flag, &mut val)? {
            continue;
        }
        match flag.as_str() {
            "--data" => a.data = val()?.into(),
            "--json" => a.json = true,
            "--grid" => a.grid = Some(val()?.into()),
            "--throughput" => a.throughput = true,
            "--presets" => {
                a.presets = list(&flag, &val()?)?;
                a.presets_given = true;
            }
            "--seeds" => a.seeds = list(&flag, &val()?)?,
            "--sizes" => a.sizes = list(&flag, &val()?)?,
            "--epochs" => {
                a.epochs = val()?
                    .split(',')
                    .map(|p| {
                        let (s, e) = p.split_once(':').ok_or(format!("--epochs wants SIZE:EPOCHS, got {p}"))?;
                        Ok((
                            s.parse().map_err(|_| "--epochs: bad size")?,
                            e.parse().map_err(|_| "--epochs: bad count")?,
                        ))
                    })
                    .collect::<Result<_, String>>()?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("augment: {e}");
            std::process::exit(2);
        }
    };
    let result = if let Some(path) = &args.grid {
        grid(&args, path)
    } else if args.throughput {
        throughput(&args)
    } else {
        study(&args)
    };
    if let Err(e) = result {
        eprintln!("augment: {e}");
        std::process::exit(1);
    }
}

/// Normalised black and white.
fn black_white() -> (f32, f32) {
    (-MNIST_MEAN / MNIST_STD, (1.0 - MNIST_MEAN) / MNIST_STD)
}

fn first(images: &Tensor, n: usize) -> convkit::Result<Tensor> {
    let per: usize = images.shape()[1..].iter().product();
    let n = n.min(images.shape()[0]);
    let mut shape = images.shape().to_vec();
    shape[0] = n;
    Tensor::new(images.data()[..n * per].to_vec(), &shape)
}

/// Eight test digits down, the original and nine augmented variants across, 2× scale.
fn grid(args: &Args, path: &Path) -> convkit::Result<()> {
    let data = load_mnist(&args.data)?;
    let (black, white) = black_white();
    let pipe = args.augment.pipeline("digits", black, (black, white))?;
    let (rows, cols, zoom, gap) = (8usize, 10usize, 2u32, 4u32);
    let cell = 28 * zoom + gap;
    let mut img = image::GrayImage::from_pixel(cols as u32 * cell + gap, rows as u32 * cell + gap, image::Luma([128]));
    let originals = first(&data.test_images, rows)?;
    for col in 0..cols {
        let mut batch = originals.clone();
        if col > 0 {
            pipe.apply_batch(&mut batch, col as u64)?;
        }
        for (row, digit) in batch.data().chunks(784).enumerate() {
            for (i, &v) in digit.iter().enumerate() {
                let g = ((v - black) / (white - black)).clamp(0.0, 1.0);
                let byte = image::Luma([(g * 255.0).round() as u8]);
                let (x0, y0) = (
                    gap + col as u32 * cell + (i % 28) as u32 * zoom,
                    gap + row as u32 * cell + (i / 28) as u32 * zoom,
                );
                for (dx, dy) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    img.put_pixel(x0 + dx, y0 + dy, byte);
                }
            }
        }
    }
    img.save(path).map_err(|e| convkit::Error::Io { path: path.display().to_string(), reason: e.to_string() })?;
    println!("wrote {} ({} pipeline: originals in the first column)", path.display(), args.augment.name("digits"));
    Ok(())
}

/// Images per second of each preset on 256-image batches of training digits, median of 15.
fn throughput(args: &Args) -> convkit::Result<()> {
    let data = load_mnist(&args.data)?;
    let (black, white) = black_white();
    let batch = first(&data.train_images, 256)?;
    let all = current_threads();
    println!("{:<8} {:>14} {:>14}", "preset", "1 thread", format!("{all} threads"));
    let names: Vec<&str> = if args.presets_given {
        args.presets.iter().map(String::as_str).collect()
    } else {
        convkit::augment::PRESETS[1..].to_vec()
    };
    for name in names {
        let pipe = Pipeline::preset(name, black, (black, white))?;
        let mut rates = Vec::new();
        for threads in [1, all] {
            let mut seed = 0u64;
            let secs = with_threads(threads, || {
                timing::median_secs(
                    || {
                        let mut b = batch.clone();
                        seed += 1;
                        pipe.apply_batch(&mut b, seed).expect("4-D batch");
                    },
                    15,
                )
            });
            rates.push(256.0 / secs);
        }
        if args.json {
            println!("{{\"preset\":\"{name}\",\"threads\":1,\"images_per_sec\":{:.0}}}", rates[0]);
            println!("{{\"preset\":\"{name}\",\"threads\":{all},\"images_per_sec\":{:.0}}}", rates[1]);
        } else {
            println!("{:<8} {:>14.0} {:>14.0}", name, rates[0], rates[1]);
        }
    }
    Ok(())
}

struct Run {
    size: usize,
    preset: String,
    accuracy: f64,
    robust: f64,
}

fn study(args: &Args) -> convkit::Result<()> {
    let data = load_mnist(&args.data)?;
    let (black, white) = black_white();
    let robust = robustness_set(&data.test_images, black)?;
    let mut runs = Vec::new();
    if !args.json {
        println!(
            "{:>6} {:<8} {:>5} {:>7} {:>9} {:>10} {:>8}",
            "train", "augment", "seed", "epochs", "test %", "robust %", "seconds"
        );
    }
    for &size in &args.sizes {
        let epochs = args.epochs.iter().find(|(s, _)| *s == size).map_or(15, |&(_, e)| e);
        let images = first(&data.train_images, size)?;
        let labels = &data.train_labels[..images.shape()[0]];
        for preset in &args.presets {
            let pipe = Pipeline::preset(preset, black, (black, white))?;
            for &seed in &args.seeds {
                let started = Instant::now();
                let mut model = lenet5(Activation::Relu, Pooling::Max, seed)?;
                let p = pipe.clone();
                let cfg = FitConfig {
                    epochs,
                    batch_size: 64,
                    schedule: LrSchedule::Cosine { lr: 2e-3, min: 1e-4, epochs },
                    seed,
                    validation: 0.0,
                    patience: None,
                    augment: (!pipe.steps().is_empty()).then(|| -> convkit::nn::Augment {
                        std::sync::Arc::new(move |b: &mut Tensor, s| p.apply_batch(b, s))
                    }),
                };
                let mut opt = Adam::default();
                opt.weight_decay = 5e-4;
                fit(&mut model, &mut opt, &images, labels, &cfg, &mut |_| {})?;
                let acc = evaluate(&mut model, &data.test_images, &data.test_labels, 256)?.accuracy;
                let rob = evaluate(&mut model, &robust, &data.test_labels, 256)?.accuracy;
                let secs = started.elapsed().as_secs_f64();
                if args.json {
                    println!(
                        "{{\"train_size\":{},\"augment\":\"{preset}\",\"seed\":{seed},\"test_accuracy\":{acc:.4},\"robust_accuracy\":{rob:.4},\"epochs\":{epochs},\"seconds\":{secs:.1}}}",
                        labels.len()
                    );
                } else {
                    println!(
                        "{:>6} {:<8} {:>5} {:>7} {:>9.2} {:>10.2} {:>8.1}",
                        labels.len(),
                        preset,
                        seed,
                        epochs,
                        100.0 * acc,
                        100.0 * rob,
                        secs
                    );
                }
                runs.push(Run { size: labels.len(), preset: preset.clone(), accuracy: acc, robust: rob });
            }
        }
    }
    if !args.json {
        println!("\nmeans over seeds {:?}:", args.seeds);
        println!("{:>6} {:<8} {:>9} {:>10}", "train", "augment", "test %", "robust %");
        let mut keys: Vec<(usize, String)> = runs.iter().map(|r| (r.size, r.preset.clone())).collect();
        keys.dedup();
        for (size, preset) in keys {
            let sel: Vec<&Run> = runs.iter().filter(|r| r.size == size && r.preset == preset).collect();
            let mean = |f: fn(&Run) -> f64| 100.0 * sel.iter().map(|r| f(r)).sum::<f64>() / sel.len() as f64;
            println!("{:>6} {:<8} {:>9.2} {:>10.2}", size, preset, mean(|r| r.accuracy), mean(|r| r.robust));
        }
    }
    Ok(())
}
