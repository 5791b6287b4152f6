//! Trains LeNet-5 on the handwritten digits shipped in `data/` (or any MNIST directory),
//! prints the test metrics, saves the weights (safetensors) and pictures.
//!
//! ```sh
//! cargo run --release --example lenet5                          # train, evaluate, save
//! cargo run --release --example lenet5 -- --json                # one JSON object at the end
//! cargo run --release --example lenet5 -- --eval lenet5-out/lenet5.safetensors
//! cargo run --release --example lenet5 -- --predict digit.png   # with --eval FILE, or trains first
//! ```
//! Options: `--data DIR`, `--epochs N`, `--batch N`, `--lr X`, `--seed N`, `--threads N`,
//! `--activation relu|tanh`, `--pooling max|avg`, `--train-limit N`, `--weight-decay X`,
//! `--validation FRACTION`, `--out DIR`, and augmentation: `--augment NAME` (a preset of
//! [`convkit::augment::Pipeline::preset`]: `none`, `shift`, `affine`, `digits`, `strong`;
//! default `DEFAULT_AUGMENT` below) or per-transform options (`--rotate DEG`, `--translate PX`,
//! `--scale LO:HI`, `--shear DEG`, `--crop PAD`, `--flip P`, `--elastic ALPHA:SIGMA`,
//! `--elastic-p P`, `--jitter B:C`, `--noise STD`, `--erase P`) that replace the preset.

use convkit::data::{load_mnist, MNIST_MEAN, MNIST_STD};
use convkit::nn::{
    evaluate, fit, lenet5, load_safetensors, save_safetensors, Activation, Adam, FitConfig, History, LrSchedule,
    Pooling, Progress, Sequential,
};
use convkit::parallel::with_threads;
use convkit::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "common/augment_cli.rs"]
mod augment_cli;
#[path = "common/plot.rs"]
mod plot;

use augment_cli::AugmentArgs;

/// The preset that gave the best test accuracy on the embedded data (see README.md).
const DEFAULT_AUGMENT: &str = "digits";

struct Args {
    data: PathBuf,
    epochs: usize,
    batch: usize,
    lr: f32,
    seed: u64,
    threads: Option<usize>,
    activation: Activation,
    pooling: Pooling,
    train_limit: Option<usize>,
    weight_decay: f32,
    validation: f32,
    augment: AugmentArgs,
    out: PathBuf,
    json: bool,
    eval: Option<PathBuf>,
    predict: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        data: Path::new(env!("CARGO_MANIFEST_DIR")).join("data"),
        epochs: 15,
        batch: 64,
        lr: 2e-3,
        seed: 1,
        threads: None,
        activation: Activation::Relu,
        pooling: Pooling::Max,
        train_limit: None,
        weight_decay: 5e-4,
        validation: 0.1,
        augment: AugmentArgs::default(),
        out: PathBuf::from("lenet5-out"),
        json: false,
        eval: None,
        predict: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        if a.augment.take(&flag, &mut val)? {
            continue;
        }
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--data" => a.data = val()?.into(),
            "--epochs" => a.epochs = num(val()?)? as usize,
            "--batch" => a.batch = num(val()?)? as usize,
            "--lr" => a.lr = num(val()?)? as f32,
            "--seed" => a.seed = num(val()?)? as u64,
            "--threads" => a.threads = Some(num(val()?)? as usize),
            "--train-limit" => a.train_limit = Some(num(val()?)? as usize),
            "--weight-decay" => a.weight_decay = num(val()?)? as f32,
            "--validation" => a.validation = num(val()?)? as f32,
            "--out" => a.out = val()?.into(),
            "--json" => a.json = true,
            "--eval" => a.eval = Some(val()?.into()),
            "--predict" => a.predict = Some(val()?.into()),
            "--activation" => {
                a.activation = match val()?.as_str() {
                    "relu" => Activation::Relu,
                    "tanh" => Activation::Tanh,
                    other => return Err(format!("--activation: {other} (relu or tanh)")),
                }
            }
            "--pooling" => {
                a.pooling = match val()?.as_str() {
                    "max" => Pooling::Max,
                    "avg" => Pooling::Avg,
                    other => return Err(format!("--pooling: {other} (max or avg)")),
                }
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
            eprintln!("lenet5: {e}");
            std::process::exit(2);
        }
    };
    let threads = args.threads.unwrap_or_else(convkit::parallel::current_threads);
    if let Err(e) = with_threads(threads, || run(&args, threads)) {
        eprintln!("lenet5: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args, threads: usize) -> convkit::Result<()> {
    let data = load_mnist(&args.data)?;
    let mut model = lenet5(args.activation, args.pooling, args.seed)?;
    let started = Instant::now();
    let mut history = History::default();
    if let Some(weights) = &args.eval {
        load_safetensors(&mut model, weights)?;
        if !args.json {
            println!("loaded {}", weights.display());
        }
    } else {
        let n = args.train_limit.unwrap_or(data.train_labels.len()).min(data.train_labels.len());
        let per: usize = data.train_images.shape()[1..].iter().product();
        let images = Tensor::new(data.train_images.data()[..n * per].to_vec(), &[n, 1, 28, 28])?;
        if !args.json {
            println!(
                "LeNet-5 ({:?}, {:?} pooling), {n} training digits, {threads} thread(s)\n{}",
                args.activation,
                args.pooling,
                model.summary()
            );
        }
        let cfg = FitConfig {
            epochs: args.epochs,
            batch_size: args.batch,
            schedule: LrSchedule::Cosine { lr: args.lr, min: args.lr * 0.05, epochs: args.epochs },
            seed: args.seed,
            validation: args.validation,
            patience: None,
            augment: augmentation(&args.augment)?,
        };
        let bar = ProgressBar::new(0);
        if args.json {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        let mut on_step = |p: &Progress| {
            if p.batch == 1 {
                bar.set_length(p.batches as u64);
                bar.set_prefix(format!("{}/{}", p.epoch + 1, p.epochs));
            }
            bar.set_position(p.batch as u64);
            bar.set_message(format!(
                "loss {:.4} acc {:.2}% {:.0} img/s",
                p.running_loss,
                100.0 * p.running_accuracy,
                p.images_per_sec
            ));
        };
        let mut opt = Adam::default();
        opt.weight_decay = args.weight_decay;
        history = fit(&mut model, &mut opt, &images, &data.train_labels[..n], &cfg, &mut on_step)?;
        bar.finish_and_clear();
        if !args.json {
            for e in &history.epochs {
                let (vl, va) = e.validation.unwrap_or((f32::NAN, f64::NAN));
                println!(
                    "epoch {:>2}: lr {:.2e}  train loss {:.4} acc {:.2}%  val loss {:.4} acc {:.2}%  {:.0} img/s",
                    e.epoch + 1,
                    e.lr,
                    e.train_loss,
                    100.0 * e.train_accuracy,
                    vl,
                    100.0 * va,
                    e.images_per_sec
                );
            }
            if history.stopped_early {
                println!("early stop; keeping epoch {}'s weights", history.best_epoch + 1);
            }
        }
        std::fs::create_dir_all(&args.out)
            .map_err(|e| convkit::Error::Io { path: args.out.display().to_string(), reason: e.to_string() })?;
        let path = args.out.join("lenet5.safetensors");
        let arch = format!("lenet5 {:?} {:?}", args.activation, args.pooling);
        save_safetensors(&mut model, &path, &[("model", &arch)])?;
        plot::curves(&history, &args.out.join("curves.png"))?;
        plot::filters(&mut model, &args.out.join("c1_filters.png"))?;
        let first = Tensor::new(data.test_images.data()[..784].to_vec(), &[1, 1, 28, 28])?;
        plot::feature_maps(&mut model, &first, &args.out.join("feature_maps.png"))?;
        if !args.json {
            println!("wrote {}, curves.png, c1_filters.png, feature_maps.png", path.display());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let eval = evaluate(&mut model, &data.test_images, &data.test_labels, 256)?;
    let infer = inference_rate(&mut model, &data.test_images)?;
    let train_rate = history.epochs.iter().map(|e| e.images_per_sec).fold(0.0, f64::max);
    if let Some(png) = &args.predict {
        predict(&mut model, png, args.json)?;
    }
    if args.json {
        println!(
            "{{\"test_accuracy\":{:.4},\"test_loss\":{:.4},\"train_images_per_sec\":{:.0},\"inference_images_per_sec\":{:.0},\"epochs\":{},\"seconds\":{:.2},\"threads\":{threads}}}",
            eval.accuracy,
            eval.loss,
            train_rate,
            infer,
            history.epochs.len(),
            seconds
        );
    } else {
        println!(
            "\ntest ({} digits): loss {:.4}, accuracy {:.2}%\n{}",
            data.test_labels.len(),
            eval.loss,
            100.0 * eval.accuracy,
            eval.confusion
        );
        println!("training {train_rate:.0} images/s (best epoch), inference {infer:.0} images/s at batch 256, {seconds:.1} s in all");
    }
    Ok(())
}

/// The training-batch augmentation asked for, in normalised units (background = a black
/// pixel, range = black to white); `None` for `none`.
fn augmentation(args: &AugmentArgs) -> convkit::Result<Option<convkit::nn::Augment>> {
    let (black, white) = (-MNIST_MEAN / MNIST_STD, (1.0 - MNIST_MEAN) / MNIST_STD);
    let pipe = args.pipeline(DEFAULT_AUGMENT, black, (black, white))?;
    if pipe.steps().is_empty() {
        return Ok(None);
    }
    Ok(Some(std::sync::Arc::new(move |batch: &mut Tensor, seed: u64| pipe.apply_batch(batch, seed))))
}

/// Images per second of inference at batch 256 (median of 5 passes over the test set).
fn inference_rate(model: &mut Sequential, images: &Tensor) -> convkit::Result<f64> {
    let n = images.shape()[0].min(2048) / 256 * 256;
    if n == 0 {
        return Ok(0.0);
    }
    let batch = Tensor::new(images.data()[..256 * 784].to_vec(), &[256, 1, 28, 28])?;
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n / 256 {
                std::hint::black_box(model.forward(&batch, false).expect("fixed shapes"));
            }
            n as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    Ok(rates[2])
}

/// Classifies a grey PNG (resized to 28×28 with a warning if needed; light digits on a dark
/// background, as MNIST — a mostly light image is inverted).
fn predict(model: &mut Sequential, path: &Path, json: bool) -> convkit::Result<()> {
    let err = |e: image::ImageError| convkit::Error::Format { what: path.display().to_string(), reason: e.to_string() };
    let img = image::open(path).map_err(err)?.to_luma8();
    let img = if img.dimensions() != (28, 28) {
        eprintln!("warning: {} is {}×{}, resizing to 28×28", path.display(), img.width(), img.height());
        image::imageops::resize(&img, 28, 28, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    let mean = img.pixels().map(|p| p.0[0] as f32).sum::<f32>() / 784.0;
    let invert = mean > 127.0;
    let data: Vec<f32> = img
        .pixels()
        .map(|p| {
            let v = p.0[0] as f32 / 255.0;
            ((if invert { 1.0 - v } else { v }) - MNIST_MEAN) / MNIST_STD
        })
        .collect();
    let logits = model.forward(&Tensor::new(data, &[1, 1, 28, 28])?, false)?;
    let z = logits.data();
    let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    let (digit, p) = e.iter().enumerate().fold((0, 0.0f32), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
    if json {
        eprintln!("{{\"predicted\":{digit},\"probability\":{:.4}}}", p / s);
    } else {
        println!("{}: digit {digit} (p = {:.3})", path.display(), p / s);
    }
    Ok(())
}
