//! The training loop and evaluation.

use super::{softmax_cross_entropy, ConfusionMatrix, LrSchedule, Optimizer, Sequential};
use crate::error::{Error, Result};
use crate::Tensor;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::time::Instant;

/// A batch transform applied before each training step: it gets the batch (batch first)
/// and a seed derived from the fit seed, the epoch and the step, so runs are reproducible.
pub type Augment = std::sync::Arc<dyn Fn(&mut Tensor, u64) -> Result<()> + Send + Sync>;

/// How to train.
#[derive(Clone)]
pub struct FitConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Learning rate per epoch.
    pub schedule: LrSchedule,
    /// Seed of the validation split and of every epoch's shuffle.
    pub seed: u64,
    /// Fraction of the training images held out for validation (0 for none).
    pub validation: f32,
    /// Stop after this many epochs without a lower validation loss (and restore the best
    /// weights); `None` to always run every epoch.
    pub patience: Option<usize>,
    /// Optional augmentation of each training batch (never of validation data).
    pub augment: Option<Augment>,
}

impl std::fmt::Debug for FitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FitConfig")
            .field("epochs", &self.epochs)
            .field("batch_size", &self.batch_size)
            .field("schedule", &self.schedule)
            .field("seed", &self.seed)
            .field("validation", &self.validation)
            .field("patience", &self.patience)
            .field("augment", &self.augment.is_some())
            .finish()
    }
}

impl Default for FitConfig {
    /// 10 epochs of 64, Adam-sized constant rate 1e-3, seed 0, 10% validation, patience 3,
    /// no augmentation.
    fn default() -> Self {
        FitConfig {
            epochs: 10,
            batch_size: 64,
            schedule: LrSchedule::Constant(1e-3),
            seed: 0,
            validation: 0.1,
            patience: Some(3),
            augment: None,
        }
    }
}

/// One epoch's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f32,
    /// Mean training loss.
    pub train_loss: f32,
    /// Training accuracy (on the batches as they were trained).
    pub train_accuracy: f64,
    /// Validation loss and accuracy, if there is a validation split.
    pub validation: Option<(f32, f64)>,
    /// Wall time of the epoch's training steps.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_sec: f64,
}

/// What training did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Per epoch.
    pub epochs: Vec<EpochRecord>,
    /// Whether early stopping ended training.
    pub stopped_early: bool,
    /// The epoch whose weights the model holds at the end.
    pub best_epoch: usize,
}

/// Reported after every training step.
#[derive(Clone, Debug)]
pub struct Progress {
    /// 0-based epoch and the number of epochs.
    pub epoch: usize,
    /// Of this many.
    pub epochs: usize,
    /// Steps done this epoch and steps per epoch.
    pub batch: usize,
    /// Of this many.
    pub batches: usize,
    /// Mean loss and accuracy so far this epoch.
    pub running_loss: f32,
    /// As above.
    pub running_accuracy: f64,
    /// Training images per second so far this epoch.
    pub images_per_sec: f64,
}

/// Images `idx` of `images` as one batch tensor.
fn gather(images: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let per: usize = images.shape()[1..].iter().product();
    let mut data = crate::buffers::with_capacity(idx.len() * per);
    for &i in idx {
        data.extend_from_slice(&images.data()[i * per..(i + 1) * per]);
    }
    let shape: Vec<usize> = std::iter::once(idx.len()).chain(images.shape()[1..].iter().copied()).collect();
    Tensor::new(data, &shape)
}

fn check_data(images: &Tensor, labels: &[usize]) -> Result<()> {
    if images.shape().is_empty() || images.shape()[0] != labels.len() {
        return Err(Error::shape(
            "training images",
            format!("[{}, …] to match {} labels", labels.len(), labels.len()),
            images.shape(),
        ));
    }
    Ok(())
}

/// Trains `model` on `images` (batch first) with class `labels`, softmax cross-entropy on
/// its logits, `opt` and `cfg`. Everything random comes from `cfg.seed`, and every kernel
/// gives the same bits for any thread count, so the same seed gives the same model on 1 or
/// 2 threads.
///
/// # Errors
/// Mismatched images and labels, a zero batch size, or a model error.
pub fn fit(
    model: &mut Sequential,
    opt: &mut dyn Optimizer,
    images: &Tensor,
    labels: &[usize],
    cfg: &FitConfig,
    on_step: &mut dyn FnMut(&Progress),
) -> Result<History> {
    check_data(images, labels)?;
    if cfg.batch_size == 0 {
        return Err(Error::param("batch_size", 0, "must be at least 1"));
    }
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(cfg.seed));
    let n_val = ((labels.len() as f64) * cfg.validation.clamp(0.0, 0.9) as f64) as usize;
    let (val_idx, train_idx) = order.split_at(n_val);
    let (mut train_idx, val_idx) = (train_idx.to_vec(), val_idx.to_vec());
    let val = if val_idx.is_empty() {
        None
    } else {
        Some((gather(images, &val_idx)?, val_idx.iter().map(|&i| labels[i]).collect::<Vec<_>>()))
    };
    let mut history = History::default();
    let (mut best_loss, mut best_params, mut since_best) = (f32::INFINITY, None, 0usize);
    let batches = train_idx.len().div_ceil(cfg.batch_size);
    for epoch in 0..cfg.epochs {
        let lr = cfg.schedule.at(epoch);
        train_idx.shuffle(&mut StdRng::seed_from_u64(cfg.seed.wrapping_add(1 + epoch as u64)));
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (b, idx) in train_idx.chunks(cfg.batch_size).enumerate() {
            let mut x = gather(images, idx)?;
            if let Some(aug) = &cfg.augment {
                let seed = cfg.seed ^ ((epoch as u64) << 32 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                aug(&mut x, seed)?;
            }
            let y: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
            let logits = model.forward(&x, true)?;
            let l = softmax_cross_entropy(&logits, &y)?;
            model.backward_params(&l.grad)?;
            opt.step(model, lr);
            loss_sum += l.loss as f64 * idx.len() as f64;
            correct += l.correct;
            seen += idx.len();
            on_step(&Progress {
                epoch,
                epochs: cfg.epochs,
                batch: b + 1,
                batches,
                running_loss: (loss_sum / seen as f64) as f32,
                running_accuracy: correct as f64 / seen as f64,
                images_per_sec: seen as f64 / start.elapsed().as_secs_f64().max(1e-9),
            });
        }
        let seconds = start.elapsed().as_secs_f64();
        let validation = match &val {
            Some((vx, vy)) => {
                let e = evaluate(model, vx, vy, 256)?;
                Some((e.loss, e.accuracy))
            }
            None => None,
        };
        history.epochs.push(EpochRecord {
            epoch,
            lr,
            train_loss: (loss_sum / seen.max(1) as f64) as f32,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            validation,
            seconds,
            images_per_sec: seen as f64 / seconds.max(1e-9),
        });
        if let (Some(patience), Some((vl, _))) = (cfg.patience, validation) {
            if vl < best_loss {
                (best_loss, since_best, history.best_epoch) = (vl, 0, epoch);
                best_params = Some(model.named_params());
            } else {
                since_best += 1;
                if since_best >= patience {
                    history.stopped_early = true;
                    break;
                }
            }
        } else {
            history.best_epoch = epoch;
        }
    }
    if let Some(best) = best_params.filter(|_| history.best_epoch + 1 < history.epochs.len()) {
        for (p, (_, v)) in model.params().into_iter().zip(best) {
            *p.value = v;
        }
    }
    Ok(history)
}

/// Loss, accuracy and confusion matrix of `model` on a labelled set.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Fraction correct.
    pub accuracy: f64,
    /// Per-class counts.
    pub confusion: ConfusionMatrix,
}

/// Runs `model` in inference mode over `images` in batches of `batch`.
///
/// # Errors
/// Mismatched images and labels, a zero batch, or a model error.
pub fn evaluate(model: &mut Sequential, images: &Tensor, labels: &[usize], batch: usize) -> Result<Evaluation> {
    check_data(images, labels)?;
    if batch == 0 {
        return Err(Error::param("batch", 0, "must be at least 1"));
    }
    let idx: Vec<usize> = (0..labels.len()).collect();
    let mut confusion: Option<ConfusionMatrix> = None;
    let mut loss_sum = 0.0f64;
    for chunk in idx.chunks(batch) {
        let x = gather(images, chunk)?;
        let y: Vec<usize> = chunk.iter().map(|&i| labels[i]).collect();
        let logits = model.forward(&x, false)?;
        let classes = logits.shape()[1];
        let cm = confusion.get_or_insert_with(|| ConfusionMatrix::new(classes));
        loss_sum += softmax_cross_entropy(&logits, &y)?.loss as f64 * chunk.len() as f64;
        for (row, &t) in logits.data().chunks_exact(classes.max(1)).zip(&y) {
            let p =
                row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
            cm.add(t, p);
        }
    }
    let confusion = confusion.unwrap_or_else(|| ConfusionMatrix::new(0));
    Ok(Evaluation { loss: (loss_sum / labels.len().max(1) as f64) as f32, accuracy: confusion.accuracy(), confusion })
}
