//! The layer API: gradients through every layer type, save/load, corrupted files, shape
//! errors, determinism across thread counts, and a short training run that must learn.

use convkit::data::load_mnist;
use convkit::nn::{
    evaluate, fit, lenet5, load_safetensors, save_safetensors, Activation, Adam, AvgPool2d, Conv2d, Dense, Dropout,
    FitConfig, Flatten, GlobalAvgPool, Layer, LrSchedule, MaxPool2d, Pooling, Relu, Sequential, Sigmoid, Softmax, Tanh,
};
use convkit::parallel::with_threads;
use convkit::{Error, Tensor};
use std::path::Path;

fn data(shape: &[usize], seed: usize) -> Tensor {
    Tensor::from_fn(shape, |i| (((i + seed) * 7919 % 1013) as f32 / 506.5) - 1.0).unwrap()
}

/// L = Σ out·r: its gradient with respect to the output is r.
fn loss(model: &mut Sequential, x: &Tensor, r: &Tensor) -> f64 {
    let y = model.forward(x, true).unwrap();
    y.data().iter().zip(r.data()).map(|(a, b)| *a as f64 * *b as f64).sum()
}

fn check_model(layers: Vec<Box<dyn Layer>>, input: &[usize]) {
    let mut model = Sequential::new(&input[1..], layers).unwrap();
    let x = data(input, 1);
    let y = model.forward(&x, true).unwrap();
    let r = data(y.shape(), 2);
    let dx = model.backward(&r).unwrap();
    let grads: Vec<(String, Tensor, Tensor)> = {
        let mut ps = model.params();
        ps.iter_mut().map(|p| (p.name.to_string(), p.value.clone(), p.grad.clone())).collect()
    };
    let h = 1e-3f32;
    let close = |what: &str, fd: f64, an: f64| {
        assert!((fd - an).abs() <= 0.03 * an.abs().max(0.05), "{what}: analytic {an} vs finite difference {fd}");
    };
    // Input gradient at a spread of cells.
    for i in (0..x.len()).step_by(x.len() / 13 + 1) {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp.data_mut()[i] += h;
        xm.data_mut()[i] -= h;
        let fd = (loss(&mut model, &xp, &r) - loss(&mut model, &xm, &r)) / (2.0 * h as f64);
        close(&format!("d/dx[{i}]"), fd, dx.data()[i] as f64);
    }
    // Parameter gradients at a spread of cells of every parameter.
    for (pi, (name, value, grad)) in grads.iter().enumerate() {
        for i in (0..value.len()).step_by(value.len() / 7 + 1) {
            let set = |m: &mut Sequential, v: f32| {
                let mut ps = m.params();
                ps[pi].value.data_mut()[i] = v;
            };
            set(&mut model, value.data()[i] + h);
            let lp = loss(&mut model, &x, &r);
            set(&mut model, value.data()[i] - h);
            let lm = loss(&mut model, &x, &r);
            set(&mut model, value.data()[i]);
            close(&format!("d/d{name}[{i}] (param {pi})"), (lp - lm) / (2.0 * h as f64), grad.data()[i] as f64);
        }
    }
}

#[test]
fn gradients_through_every_layer_type() {
    check_model(
        vec![
            Box::new(Conv2d::new(2, 3, 3, 1, 1)),
            Box::new(Tanh::default()),
            Box::new(MaxPool2d::new(2)),
            Box::new(Conv2d::new(3, 4, 3, 1, 2)),
            Box::new(Relu::default()),
            Box::new(AvgPool2d::new(2)),
            Box::new(Sigmoid::default()),
            Box::new(Flatten::default()),
            Box::new(Dense::new(16, 5, 3)),
            Box::new(Dropout::new(0.0, 4).unwrap()),
            Box::new(Softmax::default()),
        ],
        &[2, 2, 8, 8],
    );
    check_model(
        vec![Box::new(Conv2d::new(3, 4, 3, 0, 5)), Box::new(GlobalAvgPool::default()), Box::new(Dense::new(4, 3, 6))],
        &[2, 3, 6, 7],
    );
}

#[test]
fn shape_errors_name_the_layer() {
    let e = Sequential::new(
        &[1, 28, 28],
        vec![Box::new(Conv2d::new(1, 6, 5, 0, 1)), Box::new(Flatten::default()), Box::new(Dense::new(100, 10, 1))],
    )
    .err()
    .expect("24·24·6 inputs do not fit a 100-input dense layer");
    let msg = e.to_string();
    assert!(msg.contains("layer 2 (Dense(100→10))") && msg.contains("[N, 100]") && msg.contains("[1, 3456]"), "{msg}");
    let mut m = lenet5(Activation::Relu, Pooling::Max, 1).unwrap();
    let e = m.forward(&Tensor::zeros(&[2, 1, 32, 32]).unwrap(), false).unwrap_err();
    assert_eq!(e.to_string(), "model input: expected [N, 1, 28, 28], got [2, 1, 32, 32]");
    assert!(Dropout::new(1.0, 0).is_err());
    assert!(Conv2d::new(1, 6, 5, 0, 1).backward(&Tensor::zeros(&[1, 6, 24, 24]).unwrap()).is_err());
}

#[test]
fn save_load_round_trip_and_bad_files() {
    let dir = std::env::temp_dir().join(format!("convkit-nn-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    let x = data(&[3, 1, 28, 28], 9);
    let mut a = lenet5(Activation::Relu, Pooling::Max, 11).unwrap();
    save_safetensors(&mut a, &path, &[("model", "lenet5")]).unwrap();
    let mut b = lenet5(Activation::Relu, Pooling::Max, 99).unwrap();
    assert_ne!(a.forward(&x, false).unwrap(), b.forward(&x, false).unwrap());
    let meta = load_safetensors(&mut b, &path).unwrap();
    assert_eq!(meta, vec![("model".to_string(), "lenet5".to_string())]);
    let (ya, yb) = (a.forward(&x, false).unwrap(), b.forward(&x, false).unwrap());
    assert!(
        ya.data().iter().zip(yb.data()).all(|(p, q)| p.to_bits() == q.to_bits()),
        "predictions must match bit for bit"
    );

    let bytes = std::fs::read(&path).unwrap();
    let bad = dir.join("bad.safetensors");
    for (what, corrupt) in [
        ("truncated data", bytes[..bytes.len() - 5].to_vec()),
        ("truncated header", bytes[..20].to_vec()),
        ("garbage header", [&bytes[..8], &vec![b'x'; bytes.len() - 8][..]].concat()),
        ("huge header length", [&u64::MAX.to_le_bytes()[..], &bytes[8..]].concat()),
    ] {
        std::fs::write(&bad, corrupt).unwrap();
        let e = load_safetensors(&mut b, &bad).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{what}: {e}");
    }
    // Weights of another model: a different first layer.
    let mut other = Sequential::new(&[1, 28, 28], vec![Box::new(Conv2d::new(1, 8, 3, 1, 1))]).unwrap();
    let e = load_safetensors(&mut other, &path).unwrap_err();
    assert!(e.to_string().contains("0.weight") && e.to_string().contains("[8, 1, 3, 3]"), "{e}");
    assert!(matches!(load_safetensors(&mut b, Path::new("/nonexistent.safetensors")), Err(Error::Io { .. })));
    std::fs::remove_dir_all(&dir).ok();
}

fn train(threads: usize, n: usize, epochs: usize) -> (Sequential, Vec<u32>) {
    train_with(threads, n, epochs, None)
}

fn train_with(
    threads: usize,
    n: usize,
    epochs: usize,
    augment: Option<convkit::nn::Augment>,
) -> (Sequential, Vec<u32>) {
    let m = load_mnist(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data")).unwrap();
    let images = Tensor::new(m.train_images.data()[..n * 784].to_vec(), &[n, 1, 28, 28]).unwrap();
    let mut model = lenet5(Activation::Relu, Pooling::Max, 5).unwrap();
    let cfg = FitConfig {
        epochs,
        batch_size: 32,
        schedule: LrSchedule::Constant(2e-3),
        seed: 7,
        validation: 0.0,
        patience: None,
        augment,
    };
    with_threads(threads, || {
        fit(&mut model, &mut Adam::default(), &images, &m.train_labels[..n], &cfg, &mut |_| {}).unwrap()
    });
    let bits = model
        .named_params()
        .iter()
        .flat_map(|(_, t)| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        .collect();
    (model, bits)
}

#[test]
fn training_is_identical_on_one_two_and_three_threads() {
    // With the digits augmentation, so its per-image generators are covered too.
    let pipe = convkit::augment::Pipeline::preset("digits", -0.42, (-0.42, 2.83)).unwrap();
    let aug: convkit::nn::Augment = std::sync::Arc::new(move |b: &mut Tensor, s| pipe.apply_batch(b, s));
    let (_, one) = train_with(1, 256, 1, Some(aug.clone()));
    let (_, two) = train_with(2, 256, 1, Some(aug.clone()));
    let (_, three) = train_with(3, 256, 1, Some(aug));
    assert!(one == two, "weights after one epoch differ between 1 and 2 threads");
    assert!(one == three, "weights after one epoch differ between 1 and 3 threads");
}

#[test]
fn threads_can_share_one_model_and_one_plan() {
    let mut model = lenet5(Activation::Relu, Pooling::Max, 3).unwrap();
    let x = data(&[37, 1, 28, 28], 4);
    let want = model.forward(&x, false).unwrap();
    // `infer` through &self gives forward's values bit for bit, before and after the layers
    // have cached plans for this shape, and from several threads at once.
    let fresh = lenet5(Activation::Relu, Pooling::Max, 3).unwrap();
    for m in [&model, &fresh] {
        assert_eq!(m.infer(&x).unwrap().data(), want.data());
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| m.infer(&x).unwrap())).collect();
            for h in handles {
                assert_eq!(h.join().unwrap().data(), want.data());
            }
        });
    }
    let plan = convkit::conv::Conv2dPlan::new(
        &[3, 8, 20, 20],
        &[16, 8, 3, 3],
        &convkit::Conv2dParams::default(),
        &convkit::conv::ConvOptions::default(),
    )
    .unwrap();
    let (cx, cw) = (data(&[3, 8, 20, 20], 1), data(&[16, 8, 3, 3], 2));
    let y = plan.forward(&cx, &cw, None).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| plan.forward(&cx, &cw, None).unwrap())).collect();
        for h in handles {
            assert_eq!(h.join().unwrap().data(), y.data());
        }
    });
}

#[test]
fn a_short_run_learns() {
    // 600 digits, 3 epochs: chance is 10%; LeNet must reach 85% on the 2,000 test digits.
    let (mut model, _) = train(2, 600, 3);
    let m = load_mnist(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data")).unwrap();
    let e = evaluate(&mut model, &m.test_images, &m.test_labels, 256).unwrap();
    println!("short run: test accuracy {:.4}", e.accuracy);
    assert!(e.accuracy >= 0.85, "test accuracy {} after a short run", e.accuracy);
}

#[test]
fn backward_params_fills_the_same_gradients_as_backward() {
    let grads = |model: &mut Sequential| -> Vec<u32> {
        model.params().iter().flat_map(|p| p.grad.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>()).collect()
    };
    let x = data(&[5, 1, 28, 28], 2);
    let (mut a, mut b) =
        (lenet5(Activation::Tanh, Pooling::Avg, 4).unwrap(), lenet5(Activation::Tanh, Pooling::Avg, 4).unwrap());
    let g = data(&[5, 10], 3);
    a.forward(&x, true).unwrap();
    a.backward(&g).unwrap();
    b.forward(&x, true).unwrap();
    b.backward_params(&g).unwrap();
    let (ga, gb) = (grads(&mut a), grads(&mut b));
    assert!(!ga.is_empty() && ga == gb);
    // Before a training forward pass it is an error, as backward is.
    let mut fresh = lenet5(Activation::Relu, Pooling::Max, 4).unwrap();
    assert!(fresh.backward_params(&g).is_err());
}

/// Layer by layer on the whole batch, bypassing `Sequential`'s shards and fusions: the
/// output, the input gradient and every parameter gradient.
fn whole_batch(model: &mut Sequential, x: &Tensor, g: &Tensor) -> (Tensor, Tensor, Vec<Tensor>) {
    let layers = model.layers_mut();
    let mut h = x.clone();
    for l in layers.iter_mut() {
        h = l.forward(&h, true).unwrap();
    }
    let mut d = g.clone();
    for l in layers.iter_mut().rev() {
        d = l.backward(&d).unwrap();
    }
    let grads = model.params().iter().map(|p| p.grad.clone()).collect();
    (h, d, grads)
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let scale = want.data().iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    let diff = got.max_abs_diff(want).unwrap();
    assert!(diff <= 1e-4 * scale, "{what}: max difference {diff} at scale {scale}");
}

#[test]
fn sharded_batches_give_the_whole_batch_gradients() {
    // 70 samples: three shards of 23, 23 and 24, run on replicas side by side.
    let build = || -> Vec<Box<dyn Layer>> {
        vec![
            Box::new(Conv2d::new(2, 4, 3, 1, 11)),
            Box::new(Tanh::default()),
            Box::new(AvgPool2d::new(2)),
            Box::new(Conv2d::new(4, 6, 3, 0, 12)),
            Box::new(Relu::default()),
            Box::new(MaxPool2d::new(2)),
            Box::new(Flatten::default()),
            Box::new(Dense::new(6 * 2 * 2, 9, 13)),
            Box::new(Sigmoid::default()),
            Box::new(Dense::new(9, 5, 14)),
            Box::new(Softmax::default()),
        ]
    };
    let x = data(&[70, 2, 12, 12], 5);
    let g = data(&[70, 5], 6);
    for threads in [1, 2] {
        let mut sharded = Sequential::new(&[2, 12, 12], build()).unwrap();
        let (y, dx, grads) = with_threads(threads, || {
            let y = sharded.forward(&x, true).unwrap();
            let dx = sharded.backward(&g).unwrap();
            (y, dx, sharded.params().iter().map(|p| p.grad.clone()).collect::<Vec<_>>())
        });
        let mut whole = Sequential::new(&[2, 12, 12], build()).unwrap();
        let (wy, wdx, wgrads) = whole_batch(&mut whole, &x, &g);
        assert_close("output", &y, &wy);
        assert_close("input gradient", &dx, &wdx);
        assert_eq!(grads.len(), wgrads.len());
        for (i, (a, b)) in grads.iter().zip(&wgrads).enumerate() {
            assert_close(&format!("parameter gradient {i}"), a, b);
        }
        // The optimiser sees the summed gradients; a second step starts from the updated
        // parameters (the replicas are refreshed before every forward pass).
        for p in sharded.params() {
            p.value.data_mut().iter_mut().zip(p.grad.data()).for_each(|(w, g)| *w -= 0.1 * g);
        }
        for p in whole.params() {
            p.value.data_mut().iter_mut().zip(p.grad.data()).for_each(|(w, g)| *w -= 0.1 * g);
        }
        let y2 = with_threads(threads, || sharded.forward(&x, true).unwrap());
        let (wy2, _, _) = whole_batch(&mut whole, &x, &g);
        assert_close("output after a step", &y2, &wy2);
        // A gradient whose batch differs from the forward pass's is an error.
        assert!(matches!(sharded.backward(&data(&[69, 5], 1)), Err(Error::Shape { .. })));
    }
}

#[test]
fn sharded_inference_and_fused_relu_match_layer_by_layer() {
    let model = lenet5(Activation::Relu, Pooling::Max, 9).unwrap();
    let x = data(&[75, 1, 28, 28], 8);
    let mut h = x.clone();
    for l in model.layers() {
        h = l.infer(&h).unwrap();
    }
    let y = model.infer(&x).unwrap();
    assert_close("sharded, fused inference", &y, &h);
    // One sample alone gives its row of the batch.
    let one = Tensor::new(x.data()[40 * 784..41 * 784].to_vec(), &[1, 1, 28, 28]).unwrap();
    let y1 = model.infer(&one).unwrap();
    assert_close("sample 40 alone", &y1, &Tensor::new(y.data()[400..410].to_vec(), &[1, 10]).unwrap());
}

#[test]
fn sharded_training_with_dropout_is_identical_on_one_two_and_three_threads() {
    let run = |threads: usize| -> Vec<u32> {
        let mut model = Sequential::new(
            &[1, 12, 12],
            vec![
                Box::new(Conv2d::new(1, 4, 3, 1, 21)),
                Box::new(Relu::default()),
                Box::new(Dropout::new(0.3, 22).unwrap()),
                Box::new(Flatten::default()),
                Box::new(Dense::new(4 * 144, 10, 23)),
            ],
        )
        .unwrap();
        let x = data(&[200, 1, 12, 12], 3);
        let labels: Vec<usize> = (0..200).map(|i| (i * 7) % 10).collect();
        let cfg = FitConfig {
            epochs: 2,
            batch_size: 70,
            schedule: LrSchedule::Constant(1e-2),
            seed: 5,
            validation: 0.0,
            patience: None,
            augment: None,
        };
        with_threads(threads, || fit(&mut model, &mut Adam::default(), &x, &labels, &cfg, &mut |_| {}).unwrap());
        model
            .named_params()
            .iter()
            .flat_map(|(_, t)| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            .collect()
    };
    let one = run(1);
    assert!(one == run(2), "1 vs 2 threads");
    assert!(one == run(3), "1 vs 3 threads");
}

#[test]
fn optimizer_steps_follow_their_formulas() {
    use convkit::nn::{Optimizer, Sgd};
    // (name, optimiser, momentum, nesterov, adam); decay 0.01 on weights, none on biases.
    let adam = || {
        let mut a = Adam::default();
        a.weight_decay = 0.01;
        a
    };
    type Case = (&'static str, Box<dyn Optimizer>, f32, bool, bool);
    let cases: Vec<Case> = vec![
        ("sgd", Box::new(Sgd::new(0.0, false, 0.01)), 0.0, false, false),
        ("momentum", Box::new(Sgd::new(0.9, false, 0.01)), 0.9, false, false),
        ("nesterov", Box::new(Sgd::new(0.9, true, 0.01)), 0.9, true, false),
        ("adam", Box::new(adam()), 0.0, false, true),
    ];
    let (lr, b1, b2, eps) = (0.05f32, 0.9f32, 0.999f32, 1e-8f32);
    for (name, mut opt, mu, nesterov, is_adam) in cases {
        let mut model = Sequential::new(&[3], vec![Box::new(Dense::new(3, 2, 5))]).unwrap();
        let (x, g) = (data(&[4, 3], 1), data(&[4, 2], 2));
        // Per parameter element: (velocity or first moment, second moment).
        let mut state: Vec<Vec<(f32, f32)>> = Vec::new();
        for step in 1..=3 {
            model.forward(&x, true).unwrap();
            model.backward_params(&g).unwrap();
            let before: Vec<(Vec<f32>, Vec<f32>, bool)> =
                model.params().iter().map(|p| (p.value.data().to_vec(), p.grad.data().to_vec(), p.decay)).collect();
            opt.step(&mut model, lr);
            let after: Vec<Vec<f32>> = model.params().iter().map(|p| p.value.data().to_vec()).collect();
            state.resize_with(before.len(), Vec::new);
            for (pi, ((w0, grad, decay), w1)) in before.iter().zip(&after).enumerate() {
                state[pi].resize(w0.len(), (0.0, 0.0));
                for i in 0..w0.len() {
                    let gd = grad[i] + if *decay { 0.01 * w0[i] } else { 0.0 };
                    let (m, v) = &mut state[pi][i];
                    let want = if is_adam {
                        *m = b1 * *m + (1.0 - b1) * gd;
                        *v = b2 * *v + (1.0 - b2) * gd * gd;
                        let (c1, c2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
                        w0[i] - lr * (*m / c1) / ((*v / c2).sqrt() + eps)
                    } else if mu == 0.0 {
                        w0[i] - lr * gd
                    } else {
                        *m = mu * *m + gd;
                        w0[i] - lr * if nesterov { gd + mu * *m } else { *m }
                    };
                    let err = (w1[i] - want).abs();
                    assert!(
                        err <= 1e-6 * want.abs().max(1.0),
                        "{name} step {step} param {pi}[{i}]: {} vs {want}",
                        w1[i]
                    );
                }
            }
        }
    }
}

/// Inference keeps the weights packed for the plan's algorithm (Winograd4 here), and drops
/// them when the weights may change: after `params()` the next inference sees the new
/// weights, and equals a fresh plan's forward bitwise.
#[test]
fn packed_inference_weights_follow_weight_changes() {
    use convkit::conv::{Algorithm, Conv2dPlan, ConvOptions};
    use convkit::{Conv2dParams, Padding};
    let mut layer = Conv2d::new(32, 32, 3, 1, 3);
    let x = data(&[2, 32, 12, 12], 5);
    let p = Conv2dParams::default().padding(Padding::uniform(1));
    let plan = Conv2dPlan::new(x.shape(), &[32, 32, 3, 3], &p, &ConvOptions::default()).unwrap();
    assert_eq!(plan.algorithm(), Algorithm::Winograd4);
    let fresh = |l: &mut Conv2d| {
        let ps = l.params();
        plan.forward(&x, ps[0].value, Some(&*ps[1].value)).unwrap()
    };
    let before = layer.infer(&x).unwrap();
    assert_eq!(before.data(), fresh(&mut layer).data());
    for p in layer.params() {
        p.value.data_mut().iter_mut().enumerate().for_each(|(i, v)| *v = *v * 2.0 + (i % 3) as f32 * 0.01);
    }
    let after = layer.infer(&x).unwrap();
    assert_ne!(after.data(), before.data());
    assert_eq!(after.data(), fresh(&mut layer).data());
    // A training forward uses the weights as they are too.
    assert_eq!(layer.forward(&x, true).unwrap().data(), after.data());
}
