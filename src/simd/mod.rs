//! The one place that chooses the SIMD instruction set at run time.
//!
//! Detection runs once and is cached. The environment variable `CONVKIT_SIMD`
//! (`portable`, `avx2` or `avx512`), read once, caps the level, so the test suite can force
//! each lower path on a machine that has a higher one. A cap above what the CPU has is
//! ignored: a kernel is never run on hardware that lacks its instructions.

use std::sync::OnceLock;

pub(crate) mod wide_ops;

/// Register-level helpers shared by the x86 kernels.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// The 8×8 transpose: `out[j][i] = r[i][j]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// `cols[c][p] = rows[p][c]` for the `P ≤ 16` rows given (the missing rows read as zeros):
    /// 16 vectors of 16 channels to 16 vectors of 16 pixels, in four shuffle stages.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn transpose16<const P: usize>(rows: &[__m512; P]) -> [__m512; 16] {
        let r = |i: usize| if i < P { rows[i] } else { _mm512_setzero_ps() };
        // Stage 1: pairs of rows interleaved by float, within each 128-bit lane.
        let a: [__m512; 16] = std::array::from_fn(|i| {
            let (x, y) = (r(i / 2 * 2), r(i / 2 * 2 + 1));
            if i % 2 == 0 {
                _mm512_unpacklo_ps(x, y)
            } else {
                _mm512_unpackhi_ps(x, y)
            }
        });
        // Stage 2: by pairs of floats. b[4g + j], lane l: column 4l + j of rows 4g .. 4g + 4.
        let b: [__m512; 16] = std::array::from_fn(|i| {
            let (g, j) = (i / 4, i % 4);
            let (x, y) = (_mm512_castps_pd(a[4 * g + j / 2]), _mm512_castps_pd(a[4 * g + 2 + j / 2]));
            _mm512_castpd_ps(if j % 2 == 0 { _mm512_unpacklo_pd(x, y) } else { _mm512_unpackhi_pd(x, y) })
        });
        // Stages 3 and 4: the four row groups' 128-bit lanes of each column gathered.
        let mut cols = [_mm512_setzero_ps(); 16];
        for j in 0..4 {
            let c0 = _mm512_shuffle_f32x4::<0b10_00_10_00>(b[j], b[4 + j]);
            let c1 = _mm512_shuffle_f32x4::<0b11_01_11_01>(b[j], b[4 + j]);
            let d0 = _mm512_shuffle_f32x4::<0b10_00_10_00>(b[8 + j], b[12 + j]);
            let d1 = _mm512_shuffle_f32x4::<0b11_01_11_01>(b[8 + j], b[12 + j]);
            cols[j] = _mm512_shuffle_f32x4::<0b10_00_10_00>(c0, d0);
            cols[8 + j] = _mm512_shuffle_f32x4::<0b11_01_11_01>(c0, d0);
            cols[4 + j] = _mm512_shuffle_f32x4::<0b10_00_10_00>(c1, d1);
            cols[12 + j] = _mm512_shuffle_f32x4::<0b11_01_11_01>(c1, d1);
        }
        cols
    }

    /// Stores lanes `0..n` of `v` (`n ≤ 8`) at `p` with plain 4-, 2- and 1-lane stores.
    /// (`vmaskmovps` does the same in one instruction, but AMD cores run a masked store
    /// as a slow microcode sequence: 16 of them per tile were ~17% of LeNet C3's direct
    /// forward.)
    ///
    /// # Safety
    /// `p` must be writable for `n` floats.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn store_prefix(p: *mut f32, v: __m256, n: usize) {
        debug_assert!(n <= 8);
        // SAFETY: every store below writes inside p[..n] (the caller's guarantee).
        unsafe {
            if n == 8 {
                return _mm256_storeu_ps(p, v);
            }
            let (mut x, mut p, mut n) = (_mm256_castps256_ps128(v), p, n);
            if n >= 4 {
                _mm_storeu_ps(p, x);
                (x, p, n) = (_mm256_extractf128_ps::<1>(v), p.add(4), n - 4);
            }
            if n >= 2 {
                _mm_storel_epi64(p.cast(), _mm_castps_si128(x));
                (x, p, n) = (_mm_movehl_ps(x, x), p.add(2), n - 2);
            }
            if n == 1 {
                _mm_store_ss(p, x);
            }
        }
    }
}

/// An instruction-set level with its own micro-kernels, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// `wide` vectors: compiles and runs everywhere (aarch64, x86-64 without AVX, …).
    Portable,
    /// x86-64 AVX2 + FMA, 256-bit.
    Avx2,
    /// x86-64 AVX-512F, 512-bit; its kernels also use AVX2 and FMA, which every such CPU
    /// has.
    Avx512,
}

impl SimdLevel {
    /// Every level, lowest first.
    pub const ALL: [SimdLevel; 3] = [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512];

    /// The level's name as `CONVKIT_SIMD` spells it.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Portable => "portable",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    /// Parses a `CONVKIT_SIMD` value.
    pub fn from_name(s: &str) -> Option<Self> {
        SimdLevel::ALL.into_iter().find(|l| l.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this CPU can run the level's kernels.
    pub fn is_supported(self) -> bool {
        self <= detected()
    }

    /// `Ok` if this CPU can run the level; else an [`Error::Unsupported`](crate::Error)
    /// naming `operation` (e.g. `"gemm"`) and what the CPU has.
    ///
    /// # Errors
    /// As above.
    pub fn require(self, operation: &str) -> crate::Result<()> {
        if self.is_supported() {
            return Ok(());
        }
        Err(crate::Error::Unsupported {
            algorithm: format!("{operation}[{}]", self.name()),
            reason: format!("this CPU supports up to {}", detected().name()),
        })
    }

    /// The levels this CPU can run, lowest first.
    pub fn supported() -> impl Iterator<Item = SimdLevel> {
        SimdLevel::ALL.into_iter().filter(|l| l.is_supported())
    }
}

/// The highest level this CPU supports (cached).
pub fn detected() -> SimdLevel {
    static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> SimdLevel {
    let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
        SimdLevel::Avx512
    } else if avx2 {
        SimdLevel::Avx2
    } else {
        SimdLevel::Portable
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> SimdLevel {
    SimdLevel::Portable
}

/// The level kernels use by default: the detected one, capped by `CONVKIT_SIMD` (cached).
pub fn active() -> SimdLevel {
    static ACTIVE: OnceLock<SimdLevel> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let cap = std::env::var("CONVKIT_SIMD").ok().and_then(|v| SimdLevel::from_name(&v));
        cap.map_or(detected(), |c| c.min(detected()))
    })
}

/// Hints that the cache line holding `p` will be read soon. Never faults, so any address
/// (even one past an allocation, formed with wrapping arithmetic) is allowed; a no-op where
/// the target has no portable prefetch instruction.
#[inline(always)]
pub(crate) fn prefetch_read(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86-64 baseline and a prefetch has no architectural effect:
    // it cannot fault or change memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_active_is_supported() {
        for l in SimdLevel::ALL {
            assert_eq!(SimdLevel::from_name(l.name()), Some(l));
        }
        assert_eq!(SimdLevel::from_name("sse9"), None);
        assert!(active().is_supported());
        assert!(SimdLevel::Portable.is_supported());
    }

    /// `transpose16` gives `cols[c][p] = rows[p][c]`, and zeros for the rows not given.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transpose16_transposes_and_zero_fills() {
        use std::arch::x86_64::*;
        if !SimdLevel::Avx512.is_supported() {
            return;
        }
        let rows: [[f32; 16]; 11] = std::array::from_fn(|p| std::array::from_fn(|c| (100 * p + c) as f32));
        // SAFETY: AVX-512F is available (checked above); each row holds 16 floats.
        let cols = unsafe {
            let v: [__m512; 11] = std::array::from_fn(|p| _mm512_loadu_ps(rows[p].as_ptr()));
            x86::transpose16(&v)
        };
        for (c, col) in cols.iter().enumerate() {
            let mut out = [f32::NAN; 16];
            // SAFETY: as above; `out` holds 16 floats.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), *col) };
            for (p, &v) in out.iter().enumerate() {
                let want = if p < 11 { (100 * p + c) as f32 } else { 0.0 };
                assert_eq!(v, want, "column {c}, row {p}");
            }
        }
    }

    /// `store_prefix` writes lanes `0..n` in order and nothing past them.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn store_prefix_writes_exactly_n_lanes() {
        use std::arch::x86_64::*;
        if !SimdLevel::Avx2.is_supported() {
            return;
        }
        let lanes: [f32; 8] = std::array::from_fn(|i| i as f32 + 1.0);
        for n in 0..=8 {
            let mut out = [-1.0f32; 9];
            // SAFETY: AVX2 is supported (checked above); `out` has room for 8 floats.
            unsafe { x86::store_prefix(out.as_mut_ptr(), _mm256_loadu_ps(lanes.as_ptr()), n) };
            let want: Vec<f32> = (0..9).map(|i| if i < n { lanes[i] } else { -1.0 }).collect();
            assert_eq!(out.to_vec(), want, "n = {n}");
        }
    }
}
