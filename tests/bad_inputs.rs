//! The bad-input catalogue: for each public entry point, the ways a caller can get it
//! wrong, each asserting the error kind and that the message names the tensor or parameter
//! and the shapes involved. Non-finite values are not errors: their documented propagation
//! is asserted at the end.

use convkit::conv::{Algorithm, Conv2dPlan, ConvOptions};
use convkit::data::read_idx;
use convkit::gemm::{gemm, Bias, GemmParams, MatMut, MatRef};
use convkit::nn::{
    fit, lenet5, load_safetensors, load_safetensors_bytes, safetensors_bytes, softmax_cross_entropy, Activation,
    Conv2d, Dense, Dropout, FitConfig, Flatten, Init, Layer, MaxPool2d, Pooling, Sequential, Sgd,
};
use convkit::{pool, reference, Conv2dGeometry, Conv2dParams, Error, Padding, Pool2dGeometry, Pool2dParams, Tensor};

/// Asserts the error's kind by name and that its message mentions every one of `parts`.
#[track_caller]
fn expect_err<T>(r: convkit::Result<T>, kind: &str, parts: &[&str]) {
    let Err(e) = r else { panic!("expected a {kind} error, got Ok") };
    let got = match e {
        Error::Shape { .. } => "Shape",
        Error::Length { .. } => "Length",
        Error::Parameter { .. } => "Parameter",
        Error::Overflow { .. } => "Overflow",
        Error::Unsupported { .. } => "Unsupported",
        Error::Io { .. } => "Io",
        Error::Format { .. } => "Format",
        _ => "other",
    };
    let msg = e.to_string();
    assert_eq!(got, kind, "wrong kind: {msg}");
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} does not mention {p:?}");
    }
}

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape).unwrap()
}

const BIG: usize = usize::MAX / 2 + 1;

#[test]
fn tensors() {
    expect_err(Tensor::new(vec![0.0; 5], &[2, 3]), "Length", &["6", "5"]);
    expect_err(Tensor::zeros(&[BIG, 4]), "Overflow", &[]);
    expect_err(Tensor::zeros(&[1 << 40, 1 << 20]), "Overflow", &[]); // fits usize, not memory
    expect_err(zeros(&[2, 3]).reshape(&[4, 2]), "Length", &["8", "6"]);
    expect_err(zeros(&[2, 3]).dims4("x"), "Shape", &["x", "[2, 3]"]);
}

#[test]
fn convolution_geometry() {
    let p = Conv2dParams::default();
    expect_err(Conv2dGeometry::new(&[1, 3, 8], &[4, 3, 3, 3], &p), "Shape", &["input", "[1, 3, 8]"]);
    expect_err(Conv2dGeometry::new(&[1, 3, 8, 8], &[4, 3, 3], &p), "Shape", &["weight", "[4, 3, 3]"]);
    expect_err(Conv2dGeometry::new(&[1, 3, 8, 8], &[4, 2, 3, 3], &p), "Shape", &["weight", "[4, 2, 3, 3]"]);
    expect_err(Conv2dGeometry::new(&[1, 3, 8, 8], &[4, 3, 3, 3], &p.stride(0, 1)), "Parameter", &["stride"]);
    expect_err(Conv2dGeometry::new(&[1, 3, 8, 8], &[4, 3, 3, 3], &p.dilation(1, 0)), "Parameter", &["dilation"]);
    let grouped = Conv2dParams { groups: 2, ..p };
    expect_err(Conv2dGeometry::new(&[1, 3, 8, 8], &[4, 1, 3, 3], &grouped), "Parameter", &["groups"]);
    let zero_groups = Conv2dParams { groups: 0, ..p };
    expect_err(Conv2dGeometry::new(&[1, 3, 8, 8], &[4, 3, 3, 3], &zero_groups), "Parameter", &["groups"]);
    // Kernel larger than the padded input.
    expect_err(
        Conv2dGeometry::new(&[1, 1, 4, 4], &[1, 1, 7, 7], &p.padding(Padding::uniform(1))),
        "Parameter",
        &["kernel", "7", "6"],
    );
    // Sizes whose products overflow, including behind a zero batch or channel count.
    expect_err(Conv2dGeometry::new(&[BIG, 2, 8, 8], &[1, 2, 1, 1], &p), "Overflow", &[]);
    expect_err(Conv2dGeometry::new(&[0, 2, BIG, 4], &[1, 2, 1, 1], &p), "Overflow", &[]);
    expect_err(Conv2dGeometry::new(&[0, 0, 1, 1], &[1, 0, BIG, 4], &p.padding(Padding::Same)), "Overflow", &[]);
    expect_err(
        Conv2dGeometry::new(&[1, 1, 1, 1], &[1, 1, 1, 1], &p.padding(Padding::uniform(usize::MAX))),
        "Overflow",
        &[],
    );
}

#[test]
fn convolution_plans() {
    let p = Conv2dParams::default();
    let opts = ConvOptions::default();
    let plan = Conv2dPlan::new(&[2, 3, 8, 8], &[4, 3, 3, 3], &p, &opts).unwrap();
    let (x, w) = (zeros(&[2, 3, 8, 8]), zeros(&[4, 3, 3, 3]));
    expect_err(plan.forward(&zeros(&[2, 3, 9, 8]), &w, None), "Shape", &["[2, 3, 9, 8]", "[2, 3, 8, 8]"]);
    expect_err(plan.forward(&x, &zeros(&[4, 3, 5, 5]), None), "Shape", &["weight", "[4, 3, 5, 5]"]);
    expect_err(plan.forward(&x, &w, Some(&zeros(&[3]))), "Shape", &["bias", "[3]"]);
    expect_err(plan.backward_data(&zeros(&[2, 4, 5, 5]), &w), "Shape", &["[2, 4, 5, 5]", "[2, 4, 6, 6]"]);
    expect_err(plan.backward_weight(&x, &zeros(&[1, 4, 6, 6])), "Shape", &["[1, 4, 6, 6]"]);
    expect_err(plan.backward_bias(&zeros(&[2, 4, 6])), "Shape", &["[2, 4, 6]"]);
    // An algorithm that cannot run the shape says why.
    let wino = ConvOptions::default().algorithm(Algorithm::Winograd);
    expect_err(Conv2dPlan::new(&[1, 3, 8, 8], &[4, 3, 5, 5], &p, &wino), "Unsupported", &["winograd", "3×3"]);
    let dw = ConvOptions::default().algorithm(Algorithm::Depthwise);
    expect_err(Conv2dPlan::new(&[1, 3, 8, 8], &[4, 3, 3, 3], &p, &dw), "Unsupported", &["depthwise"]);
    // The reference loops check the same things.
    expect_err(reference::conv2d(&zeros(&[1, 2, 8, 8]), &w, None, &p), "Shape", &["weight"]);
}

#[test]
fn pooling() {
    let p = Pool2dParams::new(2, 2);
    expect_err(pool::max_pool2d(&zeros(&[3, 8, 8]), &p), "Shape", &["[3, 8, 8]"]);
    let no_kernel = Pool2dParams { kernel: (0, 2), ..p };
    expect_err(pool::avg_pool2d(&zeros(&[1, 1, 8, 8]), &no_kernel), "Parameter", &["kernel"]);
    let no_stride = Pool2dParams { stride: (0, 1), ..p };
    expect_err(pool::max_pool2d(&zeros(&[1, 1, 8, 8]), &no_stride), "Parameter", &["stride"]);
    let wide_pad = Pool2dParams { padding: Padding::uniform(2), ..p };
    expect_err(pool::max_pool2d(&zeros(&[1, 1, 8, 8]), &wide_pad), "Parameter", &["padding"]);
    expect_err(pool::max_pool2d(&zeros(&[1, 1, 1, 1]), &Pool2dParams::new(3, 3)), "Parameter", &["kernel", "3", "1"]);
    // An empty image: with padding every window would be all padding (found by fuzzing).
    let padded =
        Pool2dParams { padding: Padding::Explicit { top: 0, bottom: 0, left: 2, right: 3 }, ..Pool2dParams::new(2, 4) };
    expect_err(pool::max_pool2d(&zeros(&[1, 1, 4, 0]), &padded), "Shape", &["[1, 1, 4, 0]"]);
    expect_err(reference::avg_pool2d(&zeros(&[1, 1, 0, 4]), &p), "Shape", &["[1, 1, 0, 4]"]);
    // Plane sizes that overflow behind a zero batch (found by the pool fuzz target).
    expect_err(Pool2dGeometry::new(&[0, 0, BIG, 4], &Pool2dParams::new(1, 1)), "Overflow", &["plane"]);
    let (y, arg) = pool::max_pool2d(&zeros(&[1, 1, 4, 4]), &p).unwrap();
    expect_err(pool::max_pool2d_backward(&y, &arg[..3], &[1, 1, 4, 4]), "Shape", &["3", "[1, 1, 2, 2]"]);
    expect_err(pool::max_pool2d_backward(&zeros(&[1, 1, 3, 2]), &arg, &[1, 1, 4, 4]), "Shape", &["[1, 1, 3, 2]"]);
    expect_err(pool::avg_pool2d_backward(&zeros(&[1, 1, 3, 3]), &[1, 1, 4, 4], &p), "Shape", &["[1, 1, 3, 3]"]);
}

#[test]
fn gemm_views_and_shapes() {
    let a = vec![0.0f32; 6];
    expect_err(MatRef::new(&a, 3, 3, 3, 1), "Shape", &["9", "[6]"]);
    expect_err(MatRef::new(&a, usize::MAX, 2, usize::MAX, 1), "Overflow", &[]);
    let mut c = vec![0.0f32; 4];
    expect_err(MatMut::new(&mut c, 2, 2, 1, 1), "Parameter", &["C strides", "overlap"]);
    let (a, b) = (MatRef::row_major(&a, 2, 3).unwrap(), MatRef::row_major(&[0.0; 8], 4, 2).unwrap());
    expect_err(gemm(a, b, MatMut::row_major(&mut c, 2, 2).unwrap(), &GemmParams::default()), "Shape", &["[4, 2]"]);
    let b = MatRef::row_major(&[0.0; 6], 3, 2).unwrap();
    let mut c6 = vec![0.0f32; 6];
    expect_err(gemm(a, b, MatMut::row_major(&mut c6, 3, 2).unwrap(), &GemmParams::default()), "Shape", &["[3, 2]"]);
    let bias = [0.0f32; 3];
    let p = GemmParams::default().bias(Bias::PerRow(&bias));
    expect_err(gemm(a, b, MatMut::row_major(&mut c, 2, 2).unwrap(), &p), "Shape", &["bias", "[3]"]);
}

#[test]
fn layers_and_models() {
    expect_err(
        Conv2d::with(3, 4, (3, 3), Conv2dParams { groups: 2, ..Default::default() }, true, Init::HeUniform, 0),
        "Parameter",
        &["groups"],
    );
    expect_err(Conv2d::with(1, BIG, (3, 3), Conv2dParams::default(), true, Init::HeUniform, 0), "Overflow", &[]);
    expect_err(Dense::try_with_init(1 << 40, 1 << 30, Init::HeUniform, 0), "Overflow", &[]);
    expect_err(Dropout::new(1.0, 0), "Parameter", &["1"]);
    expect_err(Dropout::new(f32::NAN, 0), "Parameter", &[]);
    // The first layer whose input does not fit, with both shapes.
    let layers: Vec<Box<dyn Layer>> =
        vec![Box::new(Conv2d::new(1, 4, 3, 0, 0)), Box::new(Flatten::default()), Box::new(Dense::new(50, 10, 0))];
    expect_err(Sequential::new(&[1, 8, 8], layers), "Shape", &["layer 2", "Dense", "[1, 144]"]);
    let layers: Vec<Box<dyn Layer>> = vec![Box::new(MaxPool2d::new(2)), Box::new(Conv2d::new(3, 4, 3, 0, 0))];
    expect_err(Sequential::new(&[2, 8, 8], layers), "Shape", &["layer 1", "[1, 2, 4, 4]"]);
    let mut model = lenet5(Activation::Relu, Pooling::Max, 0).unwrap();
    expect_err(
        model.forward(&zeros(&[2, 1, 32, 32]), false),
        "Shape",
        &["model input", "[N, 1, 28, 28]", "[2, 1, 32, 32]"],
    );
    expect_err(model.backward(&zeros(&[2, 10])), "Parameter", &[]);
    let logits = zeros(&[2, 10]);
    expect_err(softmax_cross_entropy(&logits, &[1]), "Shape", &["labels", "2"]);
    expect_err(softmax_cross_entropy(&logits, &[1, 10]), "Parameter", &["label", "10"]);
    // Training with inconsistent data or settings.
    let images = zeros(&[4, 1, 28, 28]);
    let cfg = FitConfig { epochs: 1, ..FitConfig::default() };
    expect_err(
        fit(&mut model, &mut Sgd::new(0.0, false, 0.0), &images, &[0, 1, 2], &cfg, &mut |_| {}),
        "Shape",
        &["labels"],
    );
    let zero_batch = FitConfig { batch_size: 0, ..cfg.clone() };
    expect_err(
        fit(&mut model, &mut Sgd::new(0.0, false, 0.0), &images, &[0, 1, 2, 3], &zero_batch, &mut |_| {}),
        "Parameter",
        &["batch_size"],
    );
}

#[test]
fn files() {
    expect_err(read_idx(&[0, 0, 8], "t"), "Format", &["t", "too short"]);
    expect_err(read_idx(&[1, 0, 8, 1, 0, 0, 0, 1, 5], "t"), "Format", &["magic"]);
    expect_err(read_idx(&[0, 0, 9, 1, 0, 0, 0, 1, 5], "t"), "Format", &["element type"]);
    expect_err(read_idx(&[0, 0, 8, 0], "t"), "Format", &["rank"]);
    expect_err(read_idx(&[0, 0, 8, 1, 0, 0, 0, 3, 5], "t"), "Format", &["truncated"]);
    expect_err(read_idx(&[0, 0, 8, 1, 0, 0, 0, 1, 5, 6], "t"), "Format", &["trailing"]);
    expect_err(read_idx(&[0, 0, 8, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255], "t"), "Format", &[]);
    expect_err(read_idx(&[0x1f, 0x8b, 1, 2, 3], "t"), "Format", &["gzip"]);
    expect_err(convkit::data::load_mnist(std::path::Path::new("/no/such/dir")), "Io", &["/no/such/dir"]);

    let mut model = lenet5(Activation::Relu, Pooling::Max, 0).unwrap();
    let good = safetensors_bytes(&mut model, &[]);
    expect_err(load_safetensors_bytes(&mut model, &good[..5], "w"), "Format", &["w", "8-byte"]);
    expect_err(load_safetensors_bytes(&mut model, &good[..good.len() - 4], "w"), "Format", &["byte range"]);
    let mut huge_header = good.clone();
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_err(load_safetensors_bytes(&mut model, &huge_header, "w"), "Format", &["header length"]);
    let mut not_json = good.clone();
    not_json[8] = b'[';
    expect_err(load_safetensors_bytes(&mut model, &not_json, "w"), "Format", &["JSON"]);
    // Weights for another model: the tanh/avg LeNet has the same parameters, a wider one not.
    let layers: Vec<Box<dyn Layer>> = vec![Box::new(Flatten::default()), Box::new(Dense::new(784, 10, 0))];
    let mut other = Sequential::new(&[1, 28, 28], layers).unwrap();
    let theirs = safetensors_bytes(&mut other, &[]);
    expect_err(load_safetensors_bytes(&mut model, &theirs, "w"), "Shape", &["parameter"]);
    expect_err(load_safetensors(&mut model, std::path::Path::new("/no/such/file")), "Io", &["/no/such/file"]);
}

#[test]
fn non_finite_values_propagate_without_panicking() {
    // Convolution: a NaN input reaches exactly the outputs whose window covers it.
    let mut x = zeros(&[1, 1, 5, 5]);
    x.data_mut()[12] = f32::NAN;
    let w = Tensor::new(vec![1.0; 9], &[1, 1, 3, 3]).unwrap();
    for algorithm in [Algorithm::Auto, Algorithm::Im2col, Algorithm::Direct] {
        let plan = Conv2dPlan::new(
            &[1, 1, 5, 5],
            &[1, 1, 3, 3],
            &Conv2dParams::default(),
            &ConvOptions::default().algorithm(algorithm),
        )
        .unwrap();
        let y = plan.forward(&x, &w, None).unwrap();
        assert!(y.data().iter().all(|v| v.is_nan()), "{algorithm:?}: every 3×3 window of a 5×5 covers the centre");
    }
    // Max pooling: NaN wins its window (as PyTorch), other windows are unaffected.
    let mut p = Tensor::from_fn(&[1, 1, 4, 4], |i| i as f32).unwrap();
    p.data_mut()[0] = f32::NAN;
    let (y, _) = pool::max_pool2d(&p, &Pool2dParams::new(2, 2)).unwrap();
    assert!(y.data()[0].is_nan());
    assert_eq!(&y.data()[1..], &[7.0, 13.0, 15.0]);
    // Infinite logits: the loss is infinite or NaN, reported, not a panic.
    let logits = Tensor::new(vec![f32::INFINITY, 0.0, f32::NEG_INFINITY, 0.0], &[2, 2]).unwrap();
    let l = softmax_cross_entropy(&logits, &[1, 0]).unwrap();
    assert!(!l.loss.is_finite());
    // GEMM: a NaN in A poisons its row of C only.
    let mut a = vec![1.0f32; 4];
    a[0] = f32::NAN;
    let mut c = vec![0.0f32; 4];
    gemm(
        MatRef::row_major(&a, 2, 2).unwrap(),
        MatRef::row_major(&[1.0; 4], 2, 2).unwrap(),
        MatMut::row_major(&mut c, 2, 2).unwrap(),
        &GemmParams::default(),
    )
    .unwrap();
    assert!(c[0].is_nan() && c[1].is_nan() && c[2] == 2.0 && c[3] == 2.0);
}
