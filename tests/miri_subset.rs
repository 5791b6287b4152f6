//! Small problems through the unsafe kernels, sized for `cargo +nightly miri test --test
//! miri_subset`: GEMM packing and micro-kernel drivers (several cache blocks, strided and
//! transposed operands, the tiny-problem path), im2col lowering + GEMM, col2im, the direct
//! and depthwise kernels, both Winograds, pooling, and the augmentation warps — each against the
//! reference loops. Under miri the run-time dispatch sees no AVX (miri reports only the
//! compile-time target features), so the portable `wide` micro-kernels run; the AVX2/AVX-512
//! intrinsic bodies are covered by the ordinary test runs instead. The same tests run in the
//! normal suite, where they also take the best path of the machine.

use convkit::augment::{self, AffineParams, Pipeline, Transform};
use convkit::check::Tolerance;
use convkit::conv::{Algorithm, Conv2dPlan, ConvOptions};
use convkit::gemm::{gemm, Bias, GemmParams, MatMut, MatRef};
use convkit::{pool, reference, Conv2dParams, Padding, Parallelism, Pool2dParams, Tensor};

fn filled(shape: &[usize], salt: usize) -> Tensor {
    Tensor::from_fn(shape, |i| ((((i + salt) * 2654435761usize) >> 7) % 19) as f32 / 9.0 - 1.0).unwrap()
}

/// Sequential under miri (threads are slow there); the default elsewhere.
fn par() -> Parallelism {
    if cfg!(miri) {
        Parallelism::Sequential
    } else {
        Parallelism::Auto
    }
}

#[test]
fn gemm_packed_blocks_strides_and_epilogue() {
    // Blocking smaller than the problem, so every loop of the five runs more than once and
    // every edge (partial micro-tiles in m and n, a short last k block) is hit.
    let (m, n, k) = (19, 13, 11);
    let a_buf = filled(&[k * m + 3], 1);
    let b_buf = filled(&[k * n], 2);
    // A transposed (column-major storage), B row-major, C with a row stride of n + 2.
    let a = MatRef::new(a_buf.data(), m, k, 1, m).unwrap();
    let b = MatRef::row_major(b_buf.data(), k, n).unwrap();
    let mut c_buf = filled(&[m * (n + 2)], 3).into_vec();
    let c_in = c_buf.clone();
    let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.1).collect();
    let p = GemmParams::default()
        .alpha(0.5)
        .beta(-1.0)
        .bias(Bias::PerRow(&bias))
        .relu(true)
        .cache_blocking(4, 8, 8)
        .parallelism(par());
    let want = reference::gemm(a, b, MatRef::new(&c_in, m, n, n + 2, 1).unwrap(), &p);
    gemm(a, b, MatMut::new(&mut c_buf, m, n, n + 2, 1).unwrap(), &p).unwrap();
    let got: Vec<f32> = (0..m * n).map(|i| c_buf[(i / n) * (n + 2) + i % n]).collect();
    Tolerance::reduction(k + 2).with_scale(2.0).check("gemm", &got, &want).unwrap();
    // Cells between the rows of C are untouched.
    for i in 0..m {
        assert_eq!(&c_buf[i * (n + 2) + n..i * (n + 2) + n + 2], &c_in[i * (n + 2) + n..i * (n + 2) + n + 2]);
    }
}

#[test]
fn gemm_tiny_and_degenerate() {
    for (m, n, k) in [(3, 2, 4), (1, 1, 1), (0, 3, 2), (2, 0, 2), (2, 3, 0)] {
        let a = filled(&[m * k], 4);
        let b = filled(&[k * n], 5);
        let mut c = vec![f32::NAN; m * n]; // β = 0 must not read C
        let (ar, br) = (MatRef::row_major(a.data(), m, k).unwrap(), MatRef::row_major(b.data(), k, n).unwrap());
        let zeros = vec![0.0; m * n];
        let want = reference::gemm(ar, br, MatRef::row_major(&zeros, m, n).unwrap(), &GemmParams::default());
        gemm(ar, br, MatMut::row_major(&mut c, m, n).unwrap(), &GemmParams::default().parallelism(par())).unwrap();
        Tolerance::reduction(k + 1).check("tiny gemm", &c, &want).unwrap();
    }
}

fn conv_check(input: [usize; 4], weight: [usize; 4], params: Conv2dParams, algorithm: Algorithm) {
    let opts = ConvOptions::default().algorithm(algorithm).parallelism(par());
    let plan = Conv2dPlan::new(&input, &weight, &params, &opts).unwrap();
    let g = *plan.geometry();
    let (x, w, b) = (filled(&input, 6), filled(&weight, 7), filled(&[weight[0]], 8));
    let dy = filled(&g.output_shape(), 9);
    // Winograd's and Winograd4's bounds (see tests/conv_props.rs).
    let loosen = match algorithm {
        Algorithm::Winograd => 4.0,
        Algorithm::Winograd4 => 16.0,
        _ => 1.0,
    };
    let tol = |k: usize| Tolerance::reduction(k + 1).with_scale(2.0).loosen(loosen);
    let name = algorithm.name();
    let y = plan.forward(&x, &w, Some(&b)).unwrap();
    let want = reference::conv2d(&x, &w, Some(&b), &params).unwrap();
    tol(g.reduction_len()).check(&format!("{name} forward"), y.data(), want.data()).unwrap();
    let dx = plan.backward_data(&dy, &w).unwrap();
    let want = reference::conv2d_backward_data(&dy, &w, &input, &params).unwrap();
    tol(g.k_per_group() * g.h.kernel * g.w.kernel)
        .check(&format!("{name} backward data"), dx.data(), want.data())
        .unwrap();
    let dw = plan.backward_weight(&x, &dy).unwrap();
    let want = reference::conv2d_backward_weight(&x, &dy, &weight, &params).unwrap();
    tol(g.n * g.h.output * g.w.output).check(&format!("{name} backward weight"), dw.data(), want.data()).unwrap();
}

#[test]
fn im2col_and_col2im() {
    // Stride 2 with asymmetric padding and dilation: the strided backward-data path (GEMM +
    // col2im); a 1×1 stride-2 convolution (subsampled packing); a 1×1 stride-1 one (no lowering).
    let p = Conv2dParams::default().stride(2, 1).dilation(1, 2).padding(Padding::Explicit {
        top: 1,
        bottom: 0,
        left: 2,
        right: 1,
    });
    conv_check([2, 3, 7, 6], [4, 3, 3, 2], p, Algorithm::Im2col);
    conv_check([1, 4, 5, 5], [3, 4, 1, 1], Conv2dParams::default().stride(2, 2), Algorithm::Im2col);
    conv_check([1, 4, 3, 5], [5, 4, 1, 1], Conv2dParams::default(), Algorithm::Im2col);
    // Eight output channels, 27 taps, 16 pixels: the channel-vectorised backward-weight.
    conv_check([2, 3, 6, 6], [8, 3, 3, 3], Conv2dParams::default(), Algorithm::Im2col);
}

#[test]
fn direct_depthwise_and_winograd() {
    conv_check([1, 2, 6, 7], [5, 2, 3, 3], Conv2dParams::default().padding(Padding::Same), Algorithm::Direct);
    // Eight output channels and 27 taps: the channel-vectorised direct forward.
    conv_check([1, 3, 5, 9], [8, 3, 3, 3], Conv2dParams::default().stride(1, 2), Algorithm::Direct);
    conv_check([2, 1, 5, 4], [3, 1, 2, 2], Conv2dParams::default().stride(2, 2), Algorithm::Direct);
    let dw = Conv2dParams { groups: 3, ..Conv2dParams::default().padding(Padding::uniform(1)) };
    conv_check([1, 3, 5, 6], [3, 1, 3, 3], dw, Algorithm::Depthwise);
    conv_check([1, 2, 6, 5], [3, 2, 3, 3], Conv2dParams::default().padding(Padding::uniform(1)), Algorithm::Winograd);
    conv_check([1, 2, 6, 5], [3, 2, 3, 3], Conv2dParams::default().padding(Padding::uniform(1)), Algorithm::Winograd4);
}

#[test]
fn pooling_kernels() {
    let x = filled(&[2, 3, 5, 6], 10);
    for p in
        [Pool2dParams::new(2, 2), Pool2dParams { padding: Padding::uniform(1), ..Pool2dParams::new(3, 3) }.stride(2, 1)]
    {
        let (y, arg) = pool::max_pool2d(&x, &p).unwrap();
        assert_eq!(y.data(), reference::max_pool2d(&x, &p).unwrap().data());
        let dy = filled(y.shape(), 11);
        let dx = pool::max_pool2d_backward(&dy, &arg, x.shape()).unwrap();
        Tolerance::reduction(9)
            .check("max backward", dx.data(), reference::max_pool2d_backward(&x, &dy, &p).unwrap().data())
            .unwrap();
        let a = pool::avg_pool2d(&x, &p).unwrap();
        Tolerance::reduction(9).check("avg", a.data(), reference::avg_pool2d(&x, &p).unwrap().data()).unwrap();
    }
}

#[test]
fn augmentation_warps() {
    let x = filled(&[2, 1, 9, 8], 12);
    let pipe = Pipeline::preset("strong", -1.0, (-1.0, 1.0)).unwrap();
    let mut y = x.clone();
    pipe.apply_batch(&mut y, 3).unwrap();
    assert!(y.data().iter().all(|v| (-1.0..=1.0).contains(v)));
    let flipped = Pipeline::builder().push(Transform::HorizontalFlip).build().unwrap();
    let mut f = x.clone();
    flipped.apply_batch(&mut f, 0).unwrap();
    assert_eq!(f.data()[7], x.data()[0]);
    let r = augment::warp_affine(&x, &AffineParams { rotation: 30.0, ..AffineParams::default() }, 0.0).unwrap();
    assert_eq!(r.shape(), x.shape());
}
