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
    if x.len() > u32::MAX as usize {
        return Err(crate::Error::overflow("max_pool2d input index (more than 2³² elements)"));
    }
    let mut y = Tensor::for_overwrite(&g.output_shape())?;
    let mut arg = vec![0u32; y.len()];
    let (plane_in, plane_out) = (g.h.input * g.w.input, g.h.output * g.w.output);
    let (ys, args) = (SharedMut::new(y.data_mut()), SharedMutU32(arg.as_mut_ptr()));
    planes(&g, |first, count| {
        // SAFETY: planes first..first+count of y and arg belong to this part alone, and lie
        // inside the buffers (count planes of plane_out cells each).
        let (out, idx) = unsafe {
            (
                std::slice::from_raw_parts_mut(ys.get().add(first * plane_out), count * plane_out),
                std::slice::from_raw_parts_mut(args.get().add(first * plane_out), count * plane_out),
            )
        };
        for (k, (o, a)) in out.chunks_exact_mut(plane_out).zip(idx.chunks_exact_mut(plane_out)).enumerate() {
            let pl = first + k;
            max_plane(&g, &x.data()[pl * plane_in..(pl + 1) * plane_in], o, a, (pl * plane_in) as u32);
        }
    });
    Ok((y, arg))
}

/// One plane of max pooling; `arg` gets `offset` + the in-plane index of each maximum.
fn max_plane(g: &Pool2dGeometry, src: &[f32], out: &mut [f32], arg: &mut [u32], offset: u32) {
    let (kh, kw, sh, sw, w_in, ow_n) = (g.h.kernel, g.w.kernel, g.h.stride, g.w.stride, g.w.input, g.w.output);
    let unpadded = g.h.pad_before + g.h.pad_after + g.w.pad_before + g.w.pad_after == 0;
    for oh in 0..g.h.output {
        let (orow, arow) = (&mut out[oh * ow_n..(oh + 1) * ow_n], &mut arg[oh * ow_n..(oh + 1) * ow_n]);
        if unpadded && (kh, kw, sh, sw) == (2, 2, 2, 2) {
            // The common 2×2 / stride-2 window: both input rows read as pairs, taps in window
            // order with selects (first maximum wins, first NaN wins), no strided iterators.
            let (l0, l1) = (&src[2 * oh * w_in..][..2 * ow_n], &src[(2 * oh + 1) * w_in..][..2 * ow_n]);
            let pairs = l0.chunks_exact(2).zip(l1.chunks_exact(2));
            for (ow, ((m, a), (p, q))) in orow.iter_mut().zip(arow.iter_mut()).zip(pairs).enumerate() {
                let base = offset + (2 * oh * w_in + 2 * ow) as u32;
                let (mut bv, mut bi) = (p[0], base);
                for (v, i) in [(p[1], base + 1), (q[0], base + w_in as u32), (q[1], base + w_in as u32 + 1)] {
                    #[allow(clippy::neg_cmp_op_on_partial_ord)]
                    let better = !(v <= bv) & !bv.is_nan();
                    bi = if better { i } else { bi };
                    bv = if better { v } else { bv };
                }
                *m = bv;
                *a = bi;
            }
            continue;
        }
        if unpadded {
            // Every window lies inside the plane. Taps in window order, each applied to the
            // whole output row: a running maximum and its index, updated with selects
            // (vectorisable, and no data-dependent branches). A tap wins if it is larger,
            // or is the first NaN: !(v ≤ m) holds for a NaN v, and a NaN m is never replaced.
            for r in 0..kh {
                let row0 = (oh * sh + r) * w_in;
                for s in 0..kw {
                    let taps = src[row0 + s..].iter().step_by(sw);
                    let first = r == 0 && s == 0;
                    for (ow, ((m, a), &v)) in orow.iter_mut().zip(arow.iter_mut()).zip(taps).enumerate() {
                        let idx = offset + (row0 + s + ow * sw) as u32;
                        #[allow(clippy::neg_cmp_op_on_partial_ord)]
                        let better = first | (!(v <= *m) & !m.is_nan());
                        *a = if better { idx } else { *a };
                        *m = if better { v } else { *m };
                    }
                }
            }
            continue;
        }
        for (ow, (o, a)) in orow.iter_mut().zip(arow.iter_mut()).enumerate() {
            let (mut bv, mut bi) = (f32::NAN, usize::MAX);
            for r in 0..kh {
                let Some(ih) = g.h.input_index(oh, r) else { continue };
                for s in 0..kw {
                    let Some(iw) = g.w.input_index(ow, s) else { continue };
                    let i = ih * w_in + iw;
                    let v = src[i];
                    #[allow(clippy::neg_cmp_op_on_partial_ord)]
                    let better = (bi == usize::MAX) | (!(v <= bv) & !bv.is_nan());
                    bi = if better { i } else { bi };
                    bv = if better { v } else { bv };
                }
            }
            // Geometry guarantees every window has a real cell, so bi is set.
            *o = bv;
            *a = offset + bi as u32;
        }
    }
}

/// Max pooling without the argmax (inference): each output row is built as a running
/// maximum over the window's taps, which vectorises across output columns. NaN propagates,
/// as in [`max_pool2d`].
///
/// # Errors
/// Geometry errors of [`Pool2dGeometry::new`].
pub fn max_pool2d_values(x: &Tensor, p: &Pool2dParams) -> Result<Tensor> {
    let g = Pool2dGeometry::new(x.shape(), p)?;
    let unpadded = g.h.pad_before + g.h.pad_after + g.w.pad_before + g.w.pad_after == 0;
    if !unpadded {
        return Ok(max_pool2d(x, p)?.0);
    }
    let mut y = Tensor::for_overwrite(&g.output_shape())?;
    let (plane_in, plane_out) = (g.h.input * g.w.input, g.h.output * g.w.output);
    let (kh, kw, sh, sw, w_in, ow_n) = (g.h.kernel, g.w.kernel, g.h.stride, g.w.stride, g.w.input, g.w.output);
    let ys = SharedMut::new(y.data_mut());
    planes(&g, |first, count| {
        // SAFETY: planes first..first+count of y belong to this part alone, inside y.
        let out = unsafe { std::slice::from_raw_parts_mut(ys.get().add(first * plane_out), count * plane_out) };
        for (k, o) in out.chunks_exact_mut(plane_out).enumerate() {
            let src = &x.data()[(first + k) * plane_in..(first + k + 1) * plane_in];
            for (oh, row) in o.chunks_exact_mut(ow_n).enumerate() {
                if (kh, kw, sh, sw) == (2, 2, 2, 2) {
                    // The common window: both input rows as pairs (vectorisable).
                    let (l0, l1) = (&src[2 * oh * w_in..][..2 * ow_n], &src[(2 * oh + 1) * w_in..][..2 * ow_n]);
                    let nmax = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
                    for (m, (p, q)) in row.iter_mut().zip(l0.chunks_exact(2).zip(l1.chunks_exact(2))) {
                        *m = nmax(nmax(nmax(p[0], p[1]), q[0]), q[1]);
                    }
                    continue;
                }
                for r in 0..kh {
                    let line = &src[(oh * sh + r) * w_in..(oh * sh + r + 1) * w_in];
                    for s in 0..kw {
                        let taps = line[s..].iter().step_by(sw);
                        if r == 0 && s == 0 {
                            row.iter_mut().zip(taps).for_each(|(m, &v)| *m = v);
                        } else {
                            // NaN wins: `v > m` is false for NaN m, which is kept; a NaN v
                            // replaces m.
                            row.iter_mut().zip(taps).for_each(|(m, &v)| *m = if v > *m || v.is_nan() { v } else { *m });
                        }
                    }
                }
            }
        }
    });
    Ok(y)
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
    let mut y = Tensor::for_overwrite(&g.output_shape())?;
    let (plane_in, plane_out) = (g.h.input * g.w.input, g.h.output * g.w.output);
    let ys = SharedMut::new(y.data_mut());
    planes(&g, |first, count| {
        for pl in first..first + count {
            let src = &x.data()[pl * plane_in..(pl + 1) * plane_in];
            for oh in 0..g.h.output {
                for ow in 0..g.w.output {
                    let (sum, count) = window(&g, oh, ow, |i| src[i]);
                    let v = sum / divisor(&g, count);
                    // SAFETY: inside this plane's block of the output, written by this part only.
                    unsafe { *ys.get().add(pl * plane_out + oh * g.w.output + ow) = v };
                }
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
    planes(&g, |first, count| {
        for pl in first..first + count {
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

/// Runs `f(first, count)` over ranges covering every `N·C` plane, split among threads for
/// large problems.
fn planes(g: &Pool2dGeometry, f: impl Fn(usize, usize) + Sync + Send) {
    let count = g.n * g.c;
    // A window tap (load, compare, select, index) costs about as much as a dozen of the
    // flops the threshold is calibrated in.
    let work = 12.0 * (count * g.h.output * g.w.output * g.h.kernel * g.w.kernel) as f64;
    let threads = Parallelism::Auto.threads_for(work);
    if threads > 1 && count > 1 {
        let per = count.div_ceil(threads * 4);
        for_each_part(count.div_ceil(per), |part| {
            let first = part * per;
            f(first, per.min(count - first));
        });
    } else {
        f(0, count);
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
    fn nan_propagates() {
        let mut x = Tensor::from_fn(&[1, 1, 4, 4], |i| i as f32).unwrap();
        x.data_mut()[5] = f32::NAN;
        let p = Pool2dParams::new(2, 2);
        let want = reference::max_pool2d(&x, &p).unwrap();
        assert!(want.data()[0].is_nan());
        for y in [max_pool2d(&x, &p).unwrap().0, max_pool2d_values(&x, &p).unwrap()] {
            assert!(y.data()[0].is_nan());
            assert_eq!(&y.data()[1..], &want.data()[1..]);
        }
    }

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
            assert_eq!(max_pool2d_values(&x, &p).unwrap(), y);
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
