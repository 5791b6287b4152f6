//! Direct-convolution tile kernels: `KB` output channels × `V = 16` output columns.
//!
//! # Contract
//!
//! `kernel::<KB>(taps, x, y, y_stride)` computes, with `taps = Taps { count, off, w, bias, relu }`,
//!
//! ```text
//! acc[kb][v] = bias[kb] + Σ_{t<count} x[off[t] + v] · w[t·KB + kb]  (t in order, FMA where available)
//! y[kb·y_stride + v] = relu ? max(acc, 0) : acc                      (NaN stays NaN)
//! ```
//!
//! for `kb < KB ≤ 6`, `v < 16`: each tap reads 16 consecutive inputs and broadcasts `KB`
//! packed weights, `KB·16` multiply-adds held in registers (the GEMM micro-kernel's shape,
//! with the A sliver gathered from `taps` input rows). The caller pads the input so that
//! every read is in bounds and stores ragged tiles through a scratch tile.

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::simd::SimdLevel;

/// Output columns per tile.
pub(super) const V: usize = 16;

/// What every tile of one job shares.
pub(super) struct Taps<'a, const KB: usize> {
    /// Number of taps, `C/G·R·S`.
    pub count: usize,
    /// Offset of each tap's first input from the tile's base pointer.
    pub off: &'a [usize],
    /// Weights, tap-major: `w[t·KB + kb]`.
    pub w: &'a [f32],
    /// Initial accumulator per channel.
    pub bias: [f32; KB],
    /// Apply `max(·, 0)` before storing.
    pub relu: bool,
}

/// A tile kernel (see the module contract).
///
/// # Safety
/// `taps.off` and `taps.w` must hold `count` and `count·KB` entries, `x + off[t] .. + 16`
/// must be readable for every tap, `y + kb·y_stride .. + 16` writable for every `kb < KB`,
/// and the CPU must support the kernel's instructions.
pub(super) type TileFn<const KB: usize> = unsafe fn(taps: &Taps<'_, KB>, x: *const f32, y: *mut f32, y_stride: usize);

/// Writes one tile kernel from a vector type and its operations (one body for every
/// instruction set, as the GEMM micro-kernels are written).
macro_rules! tile_kernel {
    (
        $(#[$attr:meta])*
        fn $name:ident: $V:ty, lanes $L:expr, vectors $MV:expr;
        zero $zero:path, load $load:path, store $store:path, splat $splat:path,
        fma $fma:path, max $max:path
    ) => {
        $(#[$attr])*
        pub(in crate::conv) unsafe fn $name<const KB: usize>(
            taps: &$crate::conv::kernels::Taps<'_, KB>,
            x: *const f32,
            y: *mut f32,
            y_stride: usize,
        ) {
            const MV: usize = $MV;
            const L: usize = $L;
            // SAFETY: the caller upholds the TileFn contract: every offset read below lies
            // in the padded input, the packed weights or the output tile.
            unsafe {
                let mut acc: [[$V; MV]; KB] = [[$zero(); MV]; KB];
                for kb in 0..KB {
                    for v in 0..MV {
                        acc[kb][v] = $splat(taps.bias[kb]);
                    }
                }
                let (off, mut wp) = (taps.off.as_ptr(), taps.w.as_ptr());
                for t in 0..taps.count {
                    let p = x.add(*off.add(t));
                    let mut xv: [$V; MV] = [$zero(); MV];
                    for v in 0..MV {
                        xv[v] = $load(p.add(v * L));
                    }
                    for kb in 0..KB {
                        let b = $splat(*wp.add(kb));
                        for v in 0..MV {
                            acc[kb][v] = $fma(xv[v], b, acc[kb][v]);
                        }
                    }
                    wp = wp.add(KB);
                }
                let zero = $zero();
                for kb in 0..KB {
                    for v in 0..MV {
                        let r = if taps.relu { $max(zero, acc[kb][v]) } else { acc[kb][v] };
                        $store(y.add(kb * y_stride + v * L), r);
                    }
                }
            }
        }
    };
}
pub(super) use tile_kernel;

/// Writes the first `cols` of a tile row's `N` values at `dst`: one fixed-size copy when
/// the row is whole, otherwise whole 8-float pieces and then single floats (a
/// variable-length copy would be a library call per row). The Winograd output transforms
/// end every row of tiles with it.
///
/// # Safety
/// `dst .. dst + cols` must be writable and must not overlap `vals`; `cols ≤ N`.
#[inline(always)]
pub(super) unsafe fn store_row<const N: usize>(dst: *mut f32, vals: &[f32; N], cols: usize) {
    const P: usize = 8;
    debug_assert!(cols <= N);
    // SAFETY: every write is at an offset below `cols`, inside the caller's writable range.
    unsafe {
        if cols == N {
            dst.cast::<[f32; N]>().write_unaligned(*vals);
            return;
        }
        let whole = cols / P * P;
        for at in (0..whole).step_by(P) {
            dst.add(at).cast::<[f32; P]>().write_unaligned(vals[at..at + P].try_into().expect("8 floats"));
        }
        for (at, &v) in vals.iter().enumerate().take(cols).skip(whole) {
            dst.add(at).write(v);
        }
    }
}

/// The tile kernel for `KB` channels at `level` (which the CPU supports).
pub(super) fn tile<const KB: usize>(level: SimdLevel) -> TileFn<KB> {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => x86::tile_avx512::<KB>,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => x86::tile_avx2::<KB>,
        _ => portable::tile_portable::<KB>,
    }
}
