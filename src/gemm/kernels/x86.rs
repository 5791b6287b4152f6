//! x86-64 micro-kernels with `std::arch` intrinsics, selected at run time.

use crate::simd::prefetch_read as prefetch;
use std::arch::x86_64::*;

super::microkernel! {
    /// 16×6 AVX2+FMA kernel: 2 ymm × 6 columns = 12 accumulators.
    #[target_feature(enable = "avx2,fma")]
    fn kernel_16x6_avx2: __m256, lanes 8, vectors 2, cols 6;
    zero _mm256_setzero_ps, load _mm256_loadu_ps, store _mm256_storeu_ps, splat _mm256_set1_ps,
    fma _mm256_fmadd_ps, mul _mm256_mul_ps, add _mm256_add_ps, max _mm256_max_ps, prefetch prefetch
}

/// The 16×6 kernel's edges: `(name, columns)`, each reading the 6-wide packed B sliver.
macro_rules! avx2_edges {
    ($(($name:ident, $cols:expr)),*) => {$(
        super::microkernel! {
            /// The 16×6 kernel's edge for a last B sliver this many columns wide.
            #[target_feature(enable = "avx2,fma")]
            fn $name: __m256, lanes 8, vectors 2, cols $cols, b_stride 6;
            zero _mm256_setzero_ps, load _mm256_loadu_ps, store _mm256_storeu_ps, splat _mm256_set1_ps,
            fma _mm256_fmadd_ps, mul _mm256_mul_ps, add _mm256_add_ps, max _mm256_max_ps, prefetch prefetch
        }
    )*};
}

avx2_edges!(
    (kernel_16x1_avx2, 1),
    (kernel_16x2_avx2, 2),
    (kernel_16x3_avx2, 3),
    (kernel_16x4_avx2, 4),
    (kernel_16x5_avx2, 5)
);

super::microkernel! {
    /// 32×8 AVX-512F kernel: 2 zmm × 8 columns = 16 accumulators.
    #[target_feature(enable = "avx512f")]
    fn kernel_32x8_avx512: __m512, lanes 16, vectors 2, cols 8;
    zero _mm512_setzero_ps, load _mm512_loadu_ps, store _mm512_storeu_ps, splat _mm512_set1_ps,
    fma _mm512_fmadd_ps, mul _mm512_mul_ps, add _mm512_add_ps, max _mm512_max_ps, prefetch prefetch
}
