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

/// Row by row: `dst` as rows of `cols`, row `r` = [`gather`] of `src[r·row_step..]` with
/// `stride` (a subsampled image: `row_step` = input row length × vertical stride).
pub(super) fn gather_rows(
    dst: &mut [f32],
    src: &[f32],
    cols: usize,
    row_step: usize,
    stride: usize,
    level: crate::SimdLevel,
) {
    if cols == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if stride == 2 && cols >= 8 && matches!(level, crate::SimdLevel::Avx2 | crate::SimdLevel::Avx512) {
        // SAFETY: the level is one the plan checked this CPU supports.
        return unsafe { avx2::gather2_rows(dst, src, cols, row_step) };
    }
    let _ = level;
    for (r, row) in dst.chunks_exact_mut(cols).enumerate() {
        gather(row, &src[r * row_step..], stride);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::gather_rows`] with stride 2: one call for every row, so each row's
    /// groups run without a call or dispatch of their own.
    #[target_feature(enable = "avx2")]
    pub(super) fn gather2_rows(dst: &mut [f32], src: &[f32], cols: usize, row_step: usize) {
        for (r, row) in dst.chunks_exact_mut(cols).enumerate() {
            gather2(row, &src[r * row_step..]);
        }
    }

    /// `gather(dst, src, 2)` in groups of eight: the last group overlaps the one before
    /// when `n` is not a multiple of 8 (no element-by-element tail), as long as `src`
    /// holds the float after the last one used; otherwise the rest one by one.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn gather2(dst: &mut [f32], src: &[f32]) {
        let n = dst.len().min(src.len().div_ceil(2));
        // Eight elements from src[2i..2i + 16] into dst[i..i + 8].
        let group = |dst: &mut [f32], i: usize| {
            let (s, d) = (&src[2 * i..2 * i + 16], &mut dst[i..i + 8]);
            // SAFETY: s holds 16 floats and d 8 (the slices above are bounds-checked).
            unsafe {
                let (a, b) = (_mm256_loadu_ps(s.as_ptr()), _mm256_loadu_ps(s.as_ptr().add(8)));
                // Per 128-bit lane: a0 a2 b0 b2 | a4 a6 b4 b6; then the middle 64-bit
                // pairs swapped into order.
                let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                let even = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(even)));
                _mm256_storeu_ps(d.as_mut_ptr(), even);
            }
        };
        if n >= 8 && src.len() >= 2 * n {
            for i in (0..n - 8).step_by(8) {
                group(dst, i);
            }
            return group(dst, n - 8);
        }
        let groups = (n / 8).min(src.len() / 16);
        for i in 0..groups {
            group(dst, 8 * i);
        }
        super::gather(&mut dst[groups * 8..n], &src[groups * 16..], 2);
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

/// `dst[i·stride] += src[i]` for every `i < src.len()` (`dst` as for [`scatter`]). With
/// stride 2 and AVX-512 (the `level` the caller's plan runs at), 8 sources a step are
/// spread to the even lanes of a 16-float vector and added under a mask: the same
/// additions, in the same order, as the scalar loop (a stride-2 ResNet layer's col2im was
/// a fifth of its backward-data).
pub(super) fn add(dst: &mut [f32], src: &[f32], stride: usize, level: crate::SimdLevel) {
    #[cfg(target_arch = "x86_64")]
    if stride == 2 && level == crate::SimdLevel::Avx512 {
        // SAFETY: the level is one the plan checked this CPU supports.
        let done = unsafe { x86::add2(dst, src) };
        return put(&mut dst[2 * done..], &src[done..], 2, |d, v| *d += v);
    }
    let _ = level;
    put(dst, src, stride, |d, v| *d += v);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `dst[2i] += src[i]` for whole steps of 8 sources whose 16 targets lie in `dst`;
    /// returns how many sources it took (the caller adds the rest).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add2(dst: &mut [f32], src: &[f32]) -> usize {
        // Lane j takes source j / 2; only the even lanes are added.
        let spread = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
        let mut i = 0;
        while i + 8 <= src.len() && 2 * i + 16 <= dst.len() {
            // SAFETY: src[i .. i + 8] and dst[2i .. 2i + 16] are in bounds (the loop test).
            unsafe {
                let s = _mm512_castps256_ps512(_mm256_loadu_ps(src.as_ptr().add(i)));
                let d = _mm512_loadu_ps(dst.as_ptr().add(2 * i));
                let sum = _mm512_mask_add_ps(d, 0x5555, d, _mm512_permutexvar_ps(spread, s));
                _mm512_storeu_ps(dst.as_mut_ptr().add(2 * i), sum);
            }
            i += 8;
        }
        i
    }
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
            for n in 1..40 {
                let wide: Vec<f32> = (0..(n - 1) * stride + 1).map(|i| i as f32).collect();
                let mut narrow = vec![0.0; n];
                for level in crate::SimdLevel::supported() {
                    // Three rows of n, each from its own run of `step` source floats (the
                    // last run just long enough: no float past the last one used).
                    let step = (n - 1) * stride + 1 + n % 3;
                    let src: Vec<f32> = (0..2 * step + (n - 1) * stride + 1).map(|i| i as f32).collect();
                    let mut rows = vec![0.0; 3 * n];
                    gather_rows(&mut rows, &src, n, step, stride, level);
                    for (i, &v) in rows.iter().enumerate() {
                        assert_eq!(v, ((i / n) * step + (i % n) * stride) as f32, "gather_rows {stride} {n} {level:?}");
                    }
                }
                gather(&mut narrow, &wide, stride);
                assert!(narrow.iter().enumerate().all(|(i, &v)| v == (i * stride) as f32), "gather {stride} {n}");
                let mut back = vec![-1.0; wide.len()];
                scatter(&mut back, &narrow, stride);
                for (j, &v) in back.iter().enumerate() {
                    assert_eq!(v, if j % stride == 0 { j as f32 } else { -1.0 }, "scatter {stride} {n}");
                }
                for level in crate::SimdLevel::supported() {
                    let mut sum = back.clone();
                    add(&mut sum, &narrow, stride, level);
                    for (j, &v) in sum.iter().enumerate() {
                        assert_eq!(
                            v,
                            if j % stride == 0 { 2.0 * j as f32 } else { -1.0 },
                            "add {stride} {n} {level:?}"
                        );
                    }
                }
            }
        }
    }
}
