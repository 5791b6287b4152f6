//! Copies and additions between a contiguous run and a strided one, with a fixed-stride
//! loop per common stride. A `step_by` iterator with a run-time step cost ~7 cycles an
//! element here (a third of a stride-2 backward-data pass); `chunks_exact` of a constant
//! size compile to plain indexed moves (`chunks`, which may end short, did not: 15–20%
//! slower on stride-2 backward-data).

/// `dst[i] = src[i·stride]` for every `i < dst.len()` whose source exists (as a zip: the
/// shorter side ends it).
pub(super) fn gather(dst: &mut [f32], src: &[f32], stride: usize) {
    fn each<const S: usize>(dst: &mut [f32], src: &[f32]) {
        let n = dst.len().min(src.len().div_ceil(S));
        if n == 0 {
            return;
        }
        // Whole chunks of S, then the last element alone (exact chunks compile to plain moves).
        for (d, c) in dst[..n - 1].iter_mut().zip(src.chunks_exact(S)) {
            *d = c[0];
        }
        dst[n - 1] = src[(n - 1) * S];
    }
    match stride {
        1 => {
            let n = dst.len().min(src.len());
            dst[..n].copy_from_slice(&src[..n]);
        }
        2 => each::<2>(dst, src),
        3 => each::<3>(dst, src),
        4 => each::<4>(dst, src),
        _ => {
            for (d, c) in dst.iter_mut().zip(src.chunks(stride)) {
                *d = c[0];
            }
        }
    }
}

/// `dst[i·stride] = src[i]` for every `i < src.len()` whose target exists (the floats
/// between are untouched).
pub(super) fn scatter(dst: &mut [f32], src: &[f32], stride: usize) {
    if stride == 1 {
        let n = dst.len().min(src.len());
        return dst[..n].copy_from_slice(&src[..n]);
    }
    put(dst, src, stride, |d, v| *d = v);
}

/// `dst[i·stride] += src[i]` for every `i < src.len()` (`dst` as for [`scatter`]).
pub(super) fn add(dst: &mut [f32], src: &[f32], stride: usize) {
    put(dst, src, stride, |d, v| *d += v);
}

/// `op(&mut dst[i·stride], src[i])` for every `i < src.len()` whose target exists.
fn put(dst: &mut [f32], src: &[f32], stride: usize, op: impl Fn(&mut f32, f32) + Copy) {
    fn each<const S: usize>(dst: &mut [f32], src: &[f32], op: impl Fn(&mut f32, f32)) {
        let n = src.len().min(dst.len().div_ceil(S));
        if n == 0 {
            return;
        }
        // Whole chunks of S, then the last target alone.
        let (head, tail) = dst.split_at_mut((n - 1) * S);
        for (c, &v) in head.chunks_exact_mut(S).zip(src) {
            op(&mut c[0], v);
        }
        op(&mut tail[0], src[n - 1]);
    }
    match stride {
        1 => each::<1>(dst, src, op),
        2 => each::<2>(dst, src, op),
        3 => each::<3>(dst, src, op),
        4 => each::<4>(dst, src, op),
        _ => {
            for (c, &v) in dst.chunks_mut(stride).zip(src) {
                op(&mut c[0], v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stride_moves_the_right_elements() {
        for stride in 1..7 {
            for n in 1..12 {
                let wide: Vec<f32> = (0..(n - 1) * stride + 1).map(|i| i as f32).collect();
                let mut narrow = vec![0.0; n];
                gather(&mut narrow, &wide, stride);
                assert!(narrow.iter().enumerate().all(|(i, &v)| v == (i * stride) as f32), "gather {stride} {n}");
                let mut back = vec![-1.0; wide.len()];
                scatter(&mut back, &narrow, stride);
                for (j, &v) in back.iter().enumerate() {
                    assert_eq!(v, if j % stride == 0 { j as f32 } else { -1.0 }, "scatter {stride} {n}");
                }
                add(&mut back, &narrow, stride);
                for (j, &v) in back.iter().enumerate() {
                    assert_eq!(v, if j % stride == 0 { 2.0 * j as f32 } else { -1.0 }, "add {stride} {n}");
                }
            }
        }
    }
}
