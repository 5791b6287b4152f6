//! Arbitrary pooling problems (including zero and huge sizes): `Err`, or max / average
//! pooling and their backward passes matching the reference loops.
#![no_main]

use convkit::check::Tolerance;
use convkit::{pool, reference, Padding, Pool2dGeometry, Pool2dParams, Tensor};
use libfuzzer_sys::fuzz_target;

fn take(data: &mut &[u8], modulo: u8) -> usize {
    let (b, rest) = data.split_first().map(|(b, r)| (*b, r)).unwrap_or((0, &[]));
    *data = rest;
    (b % modulo) as usize
}

fuzz_target!(|bytes: &[u8]| {
    let mut d = bytes;
    let huge = take(&mut d, 8) == 0;
    let mut shape = [take(&mut d, 4), take(&mut d, 5), take(&mut d, 14), take(&mut d, 14)];
    if huge {
        shape[take(&mut d, 4)] = usize::MAX / (1 + take(&mut d, 200));
    }
    let padding = if take(&mut d, 2) == 0 {
        Padding::Valid
    } else {
        Padding::Explicit {
            top: take(&mut d, 4),
            bottom: take(&mut d, 4),
            left: take(&mut d, 4),
            right: take(&mut d, 4),
        }
    };
    let p = Pool2dParams {
        kernel: (take(&mut d, 6), take(&mut d, 6)),
        stride: (take(&mut d, 5), take(&mut d, 5)),
        padding,
        count_include_pad: take(&mut d, 2) == 1,
    };
    let Ok(g) = Pool2dGeometry::new(&shape, &p) else {
        // Whatever the geometry rejects, the kernels must reject too (not panic).
        if let Ok(x) = Tensor::zeros(&shape) {
            assert!(pool::max_pool2d(&x, &p).is_err() && pool::avg_pool2d(&x, &p).is_err());
        }
        return;
    };
    let Ok(x) = Tensor::from_fn(&shape, |i| ((i * 7919 + d.len()) % 613) as f32 / 100.0 - 3.0) else { return };
    let (y, arg) = pool::max_pool2d(&x, &p).unwrap();
    assert_eq!(y.data(), reference::max_pool2d(&x, &p).unwrap().data(), "max forward");
    let dy = Tensor::from_fn(y.shape(), |i| (i % 5) as f32 - 2.0).unwrap();
    let dx = pool::max_pool2d_backward(&dy, &arg, &shape).unwrap();
    let want = reference::max_pool2d_backward(&x, &dy, &p).unwrap();
    Tolerance::reduction(g.h.kernel * g.w.kernel).check("max backward", dx.data(), want.data()).unwrap();
    let a = pool::avg_pool2d(&x, &p).unwrap();
    let want = reference::avg_pool2d(&x, &p).unwrap();
    Tolerance::reduction(g.h.kernel * g.w.kernel).with_scale(3.0).check("avg forward", a.data(), want.data()).unwrap();
    let da = pool::avg_pool2d_backward(&dy, &shape, &p).unwrap();
    let want = reference::avg_pool2d_backward(&dy, &shape, &p).unwrap();
    Tolerance::reduction(g.h.kernel * g.w.kernel)
        .with_scale(2.0)
        .check("avg backward", da.data(), want.data())
        .unwrap();
});
