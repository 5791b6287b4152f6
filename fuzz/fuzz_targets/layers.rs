//! Models built from arbitrary layer lists and input shapes: construction is `Err` or every
//! layer's output matches the reference loops applied to that layer's input and parameters,
//! with the shape `Sequential` predicted, and backward returns an input-shaped gradient.
#![no_main]

use convkit::check::Tolerance;
use convkit::nn::{
    AvgPool2d, Conv2d, Dense, Dropout, Flatten, GlobalAvgPool, Init, Layer, MaxPool2d, Relu, Sequential, Sigmoid,
    Softmax, Tanh,
};
use convkit::{reference, Conv2dParams, Padding, Pool2dParams, Tensor};
use libfuzzer_sys::fuzz_target;

fn take(data: &mut &[u8], modulo: u8) -> usize {
    let (b, rest) = data.split_first().map(|(b, r)| (*b, r)).unwrap_or((0, &[]));
    *data = rest;
    (b % modulo) as usize
}

#[derive(Debug)]
enum Spec {
    Conv(Conv2dParams),
    Dense,
    Max(Pool2dParams),
    Avg(Pool2dParams),
    Global,
    Flatten,
    Relu,
    Sigmoid,
    Tanh,
    Softmax,
    Dropout,
}

fn pool_params(d: &mut &[u8]) -> Pool2dParams {
    let k = (1 + take(d, 3), 1 + take(d, 3));
    let padding = if take(d, 2) == 0 { Padding::Valid } else { Padding::uniform(take(d, 2)) };
    Pool2dParams { kernel: k, stride: (1 + take(d, 3), 1 + take(d, 3)), padding, count_include_pad: take(d, 2) == 1 }
}

fn build(d: &mut &[u8]) -> Option<(Vec<usize>, Vec<Box<dyn Layer>>, Vec<Spec>)> {
    // Occasionally absurd sizes: they must be errors, not aborts.
    let huge = take(d, 16) == 0;
    let mut input = vec![1 + take(d, 3), 1 + take(d, 10), 1 + take(d, 10)];
    if take(d, 4) == 0 {
        input = vec![take(d, 20)];
    }
    let (mut layers, mut specs): (Vec<Box<dyn Layer>>, Vec<Spec>) = (Vec::new(), Vec::new());
    for _ in 0..take(d, 6) {
        let seed = take(d, 255) as u64;
        match take(d, 11) {
            0 => {
                let groups = 1 + take(d, 2);
                let (c_in, c_out) = (groups * (1 + take(d, 3)), groups * (1 + take(d, 3)));
                let c_out = if huge { usize::MAX / 3 } else { c_out };
                let p = Conv2dParams {
                    stride: (1 + take(d, 3), 1 + take(d, 3)),
                    dilation: (1 + take(d, 2), 1 + take(d, 2)),
                    padding: [Padding::Valid, Padding::Same, Padding::uniform(take(d, 3))][take(d, 3)],
                    groups,
                };
                let kernel = (1 + take(d, 4), 1 + take(d, 4));
                let layer = Conv2d::with(c_in, c_out, kernel, p, take(d, 2) == 1, Init::GlorotUniform, seed).ok()?;
                layers.push(Box::new(layer));
                specs.push(Spec::Conv(p));
            }
            1 => {
                let (i, o) = (take(d, 40), 1 + take(d, 12));
                let o = if huge { usize::MAX / 2 } else { o };
                layers.push(Box::new(Dense::try_with_init(i, o, Init::HeNormal, seed).ok()?));
                specs.push(Spec::Dense);
            }
            2 => {
                let p = pool_params(d);
                layers.push(Box::new(MaxPool2d::with(p)));
                specs.push(Spec::Max(p));
            }
            3 => {
                let p = pool_params(d);
                layers.push(Box::new(AvgPool2d::with(p)));
                specs.push(Spec::Avg(p));
            }
            4 => (layers.push(Box::new(GlobalAvgPool::default())), specs.push(Spec::Global)).1,
            5 => (layers.push(Box::new(Flatten::default())), specs.push(Spec::Flatten)).1,
            6 => (layers.push(Box::new(Relu::default())), specs.push(Spec::Relu)).1,
            7 => (layers.push(Box::new(Sigmoid::default())), specs.push(Spec::Sigmoid)).1,
            8 => (layers.push(Box::new(Tanh::default())), specs.push(Spec::Tanh)).1,
            9 => (layers.push(Box::new(Softmax::default())), specs.push(Spec::Softmax)).1,
            _ => {
                let p = take(d, 12) as f32 / 10.0; // 1.0 and 1.1 must be refused
                layers.push(Box::new(Dropout::new(p, seed).ok()?));
                specs.push(Spec::Dropout);
            }
        }
    }
    Some((input, layers, specs))
}

/// The reference output of one layer on `x`, from its parameters.
fn reference(spec: &Spec, layer: &mut dyn Layer, x: &Tensor) -> Tensor {
    let params: Vec<(&str, Tensor)> = layer.params().into_iter().map(|p| (p.name, p.value.clone())).collect();
    let get = |n: &str| params.iter().find(|(name, _)| *name == n).map(|(_, t)| t);
    match spec {
        Spec::Conv(p) => reference::conv2d(x, get("weight").unwrap(), get("bias"), p).unwrap(),
        Spec::Dense => {
            let flat = Tensor::new(x.data().to_vec(), &[x.shape()[0], x.shape()[1..].iter().product()]).unwrap();
            reference::dense(&flat, get("weight").unwrap(), get("bias")).unwrap()
        }
        Spec::Max(p) => reference::max_pool2d(x, p).unwrap(),
        Spec::Avg(p) => reference::avg_pool2d(x, p).unwrap(),
        // The reference keeps [N, C, 1, 1]; the layer flattens to [N, C].
        Spec::Global => reference::global_avg_pool(x).unwrap().reshape(&x.shape()[..2]).unwrap(),
        Spec::Flatten => Tensor::new(x.data().to_vec(), &[x.shape()[0], x.shape()[1..].iter().product()]).unwrap(),
        Spec::Relu => reference::relu(x),
        Spec::Sigmoid => reference::sigmoid(x),
        Spec::Tanh => reference::tanh(x),
        Spec::Softmax => reference::softmax(x).unwrap(),
        Spec::Dropout => x.clone(),
    }
}

fuzz_target!(|bytes: &[u8]| {
    let mut d = bytes;
    let Some((input, layers, specs)) = build(&mut d) else { return };
    let Ok(mut model) = Sequential::new(&input, layers) else { return };
    let n = take(&mut d, 3);
    let shape: Vec<usize> = std::iter::once(n).chain(input.iter().copied()).collect();
    let x = Tensor::from_fn(&shape, |i| ((i * 7 + n) % 23) as f32 / 6.0 - 2.0).unwrap();
    // Layer by layer against the reference, in inference mode.
    let mut h = x.clone();
    for (spec, layer) in specs.iter().zip(model.layers_mut()) {
        let predicted = layer.output_shape(h.shape()).unwrap();
        let y = layer.forward(&h, false).unwrap();
        assert_eq!(y.shape(), &predicted[..], "{spec:?}");
        let want = reference(spec, layer.as_mut(), &h);
        assert_eq!(y.shape(), want.shape(), "{spec:?}");
        let k = h.shape()[1..].iter().product::<usize>() + 1;
        Tolerance::reduction(k).with_scale(8.0).check(&format!("{spec:?}"), y.data(), want.data()).unwrap();
        h = y;
    }
    // The whole model agrees with the chain, and training mode runs backward.
    assert_eq!(model.forward(&x, false).unwrap().data(), h.data());
    let y = model.forward(&x, true).unwrap();
    let dy = Tensor::from_fn(y.shape(), |i| (i % 3) as f32 - 1.0).unwrap();
    let dx = model.backward(&dy).unwrap();
    assert_eq!(dx.shape(), x.shape());
});
