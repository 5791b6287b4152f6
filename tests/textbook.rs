//! The 2-2-1 network worked example, to 1e-5, through the reference dense, tanh and
//! half-squared-error kernels and one SGD step.

use convkit::reference as r;
use convkit::Tensor;

fn close(what: &str, got: f32, want: f32) {
    assert!((got - want).abs() <= 1e-5, "{what}: got {got}, want {want}");
}

#[test]
fn two_two_one_network_forward_backward_and_sgd_step() {
    let x = Tensor::new(vec![2.0, 3.0], &[1, 2]).unwrap();
    // Rows are hidden units: h1 = tanh(w1·x1 + w2·x2), h2 = tanh(w3·x1 + w4·x2).
    let w_hidden = Tensor::new(vec![0.1, 0.2, 0.3, 0.1], &[2, 2]).unwrap();
    let w_out = Tensor::new(vec![0.5, 0.8], &[1, 2]).unwrap();
    let target = Tensor::new(vec![1.0], &[1, 1]).unwrap();

    let z = r::dense(&x, &w_hidden, None).unwrap();
    let h = r::tanh(&z);
    close("h1", h.data()[0], 0.664037);
    close("h2", h.data()[1], 0.716298);
    let y = r::dense(&h, &w_out, None).unwrap();
    close("y", y.data()[0], 0.905057);
    let loss = r::half_squared_error(&y, &target).unwrap();
    close("E", loss.value, 0.004507);

    let (dh, dw_out, _) = r::dense_backward(&h, &w_out, &loss.grad).unwrap();
    let dz = r::tanh_backward(&h, &dh).unwrap();
    let (_, dw_hidden, _) = r::dense_backward(&x, &w_hidden, &dz).unwrap();
    let grads = [dw_hidden.data(), dw_out.data()].concat();
    let want = [-0.053079, -0.079618, -0.073967, -0.110951, -0.063046, -0.068008];
    for (i, (&g, &w)) in grads.iter().zip(&want).enumerate() {
        close(&format!("dE/dw{}", i + 1), g, w);
    }
    // The rounded hand calculation's gradients are not what an exact kernel gives.
    assert!((grads[0] - (-0.0508)).abs() > 1e-3);

    let weights = [w_hidden.data(), w_out.data()].concat();
    let stepped: Vec<f32> = weights.iter().zip(&grads).map(|(w, g)| w - 0.5 * g).collect();
    let want = [0.126539, 0.239809, 0.336984, 0.155475, 0.531523, 0.834004];
    for (i, (&s, &w)) in stepped.iter().zip(&want).enumerate() {
        close(&format!("w{} after one step", i + 1), s, w);
    }
}
