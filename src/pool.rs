//! Fast pooling kernels (forward and backward), checked against
//! [`reference`](crate::reference) pooling in the tests.
//!
//! Planes (`N·C` of them) are independent; large problems split them among threads, each
//! plane computed by one thread in a fixed order, so results do not depend on the thread
//! count. Max pooling records the flat input index of each window's (first) maximum so the
//! backward pass is a scatter of the output gradient.

use crate::error::{expect_shape, Result};
use crate::geometry::{Pool2dGeometry, Pool2dParams};
use crate::parallel::{for_each_part, Parallelism, SharedMut};
use crate::Tensor;

/// Max pooling: the output and, per output cell, the flat input index of its maximum.
///
/// # Errors
/// Geometry errors of [`Pool2dGeometry::new`].
pub fn max_pool2d(x: &Tensor, p: &Pool2dParams) -> Result<(Tensor, Vec<u32>)> {
    let g = Pool2dGeometry::new(x.shape(), p)?;
    let mut y = Tensor::zeros(&g.output_shape())?;
    if x.len() > u32::MAX as usize {
        return Err(crate::Error::overflow("max_pool2d input index (more than 2³² elements)"));
    }
    let mut arg = vec![0u32; y.len()];
    let (plane_in, plane_out) = (g.h.input * g.w.input, g.h.output * g.w.output);
    let (ys, args) = (SharedMut::new(y.data_mut()), SharedMutU32(arg.as_mut_ptr()));
    planes(&g, |pl| {
        let src = &x.data()[pl * plane_in..(pl + 1) * plane_in];
        for oh in 0..g.h.output {
            for ow in 0..g.w.output {
                let mut best = usize::MAX;
                for r in 0..g.h.kernel {
                    let Some(ih) = g.h.input_index(oh, r) else { continue };
                    for s in 0..g.w.kernel {
                        let Some(iw) = g.w.input_index(ow, s) else { continue };
                        let i = ih * g.w.input + iw;
                        // NaN wins (and the first NaN stays), so it propagates.
                        if best == usize::MAX || src[i] > src[best] || (src[i].is_nan() && !src[best].is_nan()) {
                            best = i;
                        }
                    }
                }
                let o = pl * plane_out + oh * g.w.output + ow;
                // SAFETY: o is inside this plane's block of the output, which only this part
                // writes; geometry guarantees every window has a real cell (best is set).
                unsafe {
                    *ys.get().add(o) = src[best];
                    *args.get().add(o) = (pl * plane_in + best) as u32;
                }
            }
        }
    });
    Ok((y, arg))
}

/// Max pooling backward: each output gradient added to its window's maximum.
///
/// # Errors
/// An output gradient whose length differs from the recorded indices'.
pub fn max_pool2d_backward(grad_out: &Tensor, argmax: &[u32], input_shape: &[usize]) -> Result<Tensor> {
    if grad_out.len() != argmax.len() {
        return Err(crate::Error::shape(
            "max_pool2d grad_output",
            format!("{} elements", argmax.len()),
            grad_out.shape(),
        ));
    }
    let mut dx = Tensor::zeros(input_shape)?;
    let d = dx.data_mut();
    for (&i, &g) in argmax.iter().zip(grad_out.data()) {
        d[i as usize] += g;
    }
    Ok(dx)
}

/// Average pooling.
///
/// # Errors
/// Geometry errors of [`Pool2dGeometry::new`].
pub fn avg_pool2d(x: &Tensor, p: &Pool2dParams) -> Result<Tensor> {
    let g = Pool2dGeometry::new(x.shape(), p)?;
    let mut y = Tensor::zeros(&g.output_shape())?;
    let (plane_in, plane_out) = (g.h.input * g.w.input, g.h.output * g.w.output);
    let ys = SharedMut::new(y.data_mut());
    planes(&g, |pl| {
        let src = &x.data()[pl * plane_in..(pl + 1) * plane_in];
        for oh in 0..g.h.output {
            for ow in 0..g.w.output {
                let (sum, count) = window(&g, oh, ow, |i| src[i]);
                let v = sum / divisor(&g, count);
                // SAFETY: inside this plane's block of the output, written by this part only.
                unsafe { *ys.get().add(pl * plane_out + oh * g.w.output + ow) = v };
            }
        }
    });
    Ok(y)
}

/// Average pooling backward.
///
/// # Errors
/// Geometry errors; an output gradient whose shape is not the forward output's.
pub fn avg_pool2d_backward(grad_out: &Tensor, input_shape: &[usize], p: &Pool2dParams) -> Result<Tensor> {
    let g = Pool2dGeometry::new(input_shape, p)?;
    expect_shape("avg_pool2d grad_output", grad_out.shape(), &g.output_shape())?;
    let mut dx = Tensor::zeros(input_shape)?;
    let (plane_in, plane_out) = (g.h.input * g.w.input, g.h.output * g.w.output);
    let ds = SharedMut::new(dx.data_mut());
    planes(&g, |pl| {
        for oh in 0..g.h.output {
            for ow in 0..g.w.output {
                let (_, count) = window(&g, oh, ow, |_| 0.0);
                let share = grad_out.data()[pl * plane_out + oh * g.w.output + ow] / divisor(&g, count);
                window(&g, oh, ow, |i| {
                    // SAFETY: i is inside this plane of dx, which only this part writes.
                    unsafe { *ds.get().add(pl * plane_in + i) += share };
                    0.0
                });
            }
        }
    });
    Ok(dx)
}

fn divisor(g: &Pool2dGeometry, count: usize) -> f32 {
    if g.count_include_pad {
        (g.h.kernel * g.w.kernel) as f32
    } else {
        count as f32
    }
}

/// Sums `f(i)` over the real cells `i` (flat in-plane indices) of a window, in row-major
/// order; returns the sum and the number of cells.
#[inline(always)]
fn window(g: &Pool2dGeometry, oh: usize, ow: usize, mut f: impl FnMut(usize) -> f32) -> (f32, usize) {
    let (mut sum, mut count) = (0.0, 0);
    for r in 0..g.h.kernel {
        let Some(ih) = g.h.input_index(oh, r) else { continue };
        for s in 0..g.w.kernel {
            let Some(iw) = g.w.input_index(ow, s) else { continue };
            sum += f(ih * g.w.input + iw);
            count += 1;
        }
    }
    (sum, count)
}

/// Runs `f(plane)` for every `N·C` plane, split among threads for large problems.
fn planes(g: &Pool2dGeometry, f: impl Fn(usize) + Sync + Send) {
    let count = g.n * g.c;
    let work = (count * g.h.output * g.w.output * g.h.kernel * g.w.kernel) as f64;
    let threads = Parallelism::Auto.threads_for(work);
    if threads > 1 && count > 1 {
        let per = count.div_ceil(threads * 4);
        for_each_part(count.div_ceil(per), |part| (part * per..((part + 1) * per).min(count)).for_each(&f));
    } else {
        (0..count).for_each(f);
    }
}

#[derive(Clone, Copy)]
struct SharedMutU32(*mut u32);
// SAFETY: parts write disjoint planes of the index buffer, which outlives them.
unsafe impl Send for SharedMutU32 {}
// SAFETY: as above.
unsafe impl Sync for SharedMutU32 {}

impl SharedMutU32 {
    fn get(self) -> *mut u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Padding;
    use crate::reference;

    #[test]
    fn matches_the_reference() {
        let x = Tensor::from_fn(&[2, 3, 9, 7], |i| ((i * 37 % 101) as f32 - 50.0) / 25.0).unwrap();
        for p in [
            Pool2dParams::new(2, 2),
            Pool2dParams::new(3, 3).stride(2, 2).padding(Padding::uniform(1)),
            Pool2dParams::new(3, 2).stride(1, 2).padding(Padding::Explicit { top: 2, bottom: 0, left: 1, right: 1 }),
            Pool2dParams::new(3, 3).stride(2, 1).padding(Padding::uniform(1)).count_include_pad(true),
        ] {
            let (y, arg) = max_pool2d(&x, &p).unwrap();
            assert_eq!(y, reference::max_pool2d(&x, &p).unwrap());
            let dy = Tensor::from_fn(y.shape(), |i| (i % 5) as f32 - 2.0).unwrap();
            let dx = max_pool2d_backward(&dy, &arg, x.shape()).unwrap();
            assert_eq!(dx, reference::max_pool2d_backward(&x, &dy, &p).unwrap());
            let ya = avg_pool2d(&x, &p).unwrap();
            assert!(ya.max_abs_diff(&reference::avg_pool2d(&x, &p).unwrap()).unwrap() < 1e-5);
            let da = avg_pool2d_backward(&dy, x.shape(), &p).unwrap();
            assert!(da.max_abs_diff(&reference::avg_pool2d_backward(&dy, x.shape(), &p).unwrap()).unwrap() < 1e-5);
        }
    }
}
