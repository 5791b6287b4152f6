//! x86-64 direct-convolution tile kernels.

use std::arch::x86_64::*;

super::tile_kernel! {
    /// AVX2+FMA: 2 ymm per channel row, up to 12 accumulators.
    #[target_feature(enable = "avx2,fma")]
    fn tile_avx2: __m256, lanes 8, vectors 2;
    zero _mm256_setzero_ps, load _mm256_loadu_ps, store _mm256_storeu_ps, splat _mm256_set1_ps,
    fma _mm256_fmadd_ps, max _mm256_max_ps
}

super::tile_kernel! {
    /// AVX-512F: 1 zmm per channel row.
    #[target_feature(enable = "avx512f")]
    fn tile_avx512: __m512, lanes 16, vectors 1;
    zero _mm512_setzero_ps, load _mm512_loadu_ps, store _mm512_storeu_ps, splat _mm512_set1_ps,
    fma _mm512_fmadd_ps, max _mm512_max_ps
}
