//! Prints the textbook convolution examples and the 2-2-1 network's forward pass, gradients
//! and one SGD step, all computed by the reference kernels.
//!
//! Run with `cargo run --release --example textbook`.

use convkit::reference as r;
use convkit::{Conv2dParams, Padding, Tensor};

fn show(name: &str, t: &Tensor) {
    let [_, _, h, w] = t.dims4(name).expect("4-D");
    println!("{name} ({h}×{w}):");
    for row in t.data().chunks(w.max(1)) {
        println!("  {row:?}");
    }
}

fn main() -> convkit::Result<()> {
    let x = Tensor::new((1..=9).map(|v| v as f32).collect(), &[1, 1, 3, 3])?;
    let k = Tensor::new(vec![1.0, 0.0, 0.0, -1.0], &[1, 1, 2, 2])?;
    show("image", &x);
    show("kernel", &k);
    let p = Conv2dParams::default();
    show("stride 1, no padding", &r::conv2d(&x, &k, None, &p)?);
    show("padding 1", &r::conv2d(&x, &k, None, &p.padding(Padding::uniform(1)))?);
    show("padding 1, stride 2", &r::conv2d(&x, &k, None, &p.padding(Padding::uniform(1)).stride(2, 2))?);
    show("dilation 2", &r::conv2d(&x, &k, None, &p.dilation(2, 2))?);
    show("same padding", &r::conv2d(&x, &k, None, &p.padding(Padding::Same))?);

    println!("\n2-2-1 network, x = (2, 3), target 1, E = ½(ŷ − y)²");
    let input = Tensor::new(vec![2.0, 3.0], &[1, 2])?;
    let w1 = Tensor::new(vec![0.1, 0.2, 0.3, 0.1], &[2, 2])?;
    let w2 = Tensor::new(vec![0.5, 0.8], &[1, 2])?;
    let target = Tensor::new(vec![1.0], &[1, 1])?;
    let h = r::tanh(&r::dense(&input, &w1, None)?);
    let y = r::dense(&h, &w2, None)?;
    let loss = r::half_squared_error(&y, &target)?;
    println!("h = {:?}, ŷ = {:.6}, E = {:.6}", h.data(), y.data()[0], loss.value);
    let (dh, dw2, _) = r::dense_backward(&h, &w2, &loss.grad)?;
    let (_, dw1, _) = r::dense_backward(&input, &w1, &r::tanh_backward(&h, &dh)?)?;
    let weights = [w1.data(), w2.data()].concat();
    let grads = [dw1.data(), dw2.data()].concat();
    for (i, (w, g)) in weights.iter().zip(&grads).enumerate() {
        println!("w{}: {w:.6}  dE/dw = {g:+.6}  after SGD(lr 0.5) = {:.6}", i + 1, w - 0.5 * g);
    }
    Ok(())
}
