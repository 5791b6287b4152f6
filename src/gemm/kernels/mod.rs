//! Micro-kernels: one register-blocked tile of `C ← α·A·B + β·C`, then the epilogue.
//!
//! # Contract (every kernel)
//!
//! `kernel(k, a, a_step, b, c, cs_c, args)` computes an `MR × NR` tile:
//!
//! ```text
//! acc[i][j] = Σ_{p<k} A[i, p] · B[p, j]              (in order p = 0, 1, …, k−1, with FMA)
//! C[i, j]   = relu?( α·acc[i][j] + β·C[i, j] + bias ) (β·C only when β ≠ 0: β = 0 never reads C)
//!
//!   A (MR tall, a_step apart)      B (packed, NR wide)        C (column j at c + j·cs_c)
//!   p=0: a[0 .. MR]                p=0: b[0 .. NR]            rows contiguous: C[i, j] = c[i + j·cs_c]
//!   p=1: a[a_step .. a_step+MR]    p=1: b[NR .. 2·NR]
//! ```
//!
//! `a_step` is `MR` for packed A, or A's column stride when A is read in place. `args.row_bias`
//! (MR values) or `args.col_bias` (NR values) may be null. Kernels see only whole tiles: the
//! driver runs ragged edges through a scratch tile and copies the valid part back, so every
//! element of C goes through the same instructions wherever it lies.

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use super::blocking::{self, Blocking};
use crate::simd::SimdLevel;

/// Per-tile arguments of the epilogue.
pub(crate) struct TileArgs {
    pub alpha: f32,
    pub beta: f32,
    /// `MR` values, or null.
    pub row_bias: *const f32,
    /// `NR` values, or null.
    pub col_bias: *const f32,
    pub relu: bool,
    /// How far past each step's A (in floats) the kernel asks the caches for data early:
    /// [`ahead_in_k`] for A that streams along k (packed slivers), or a few tiles along m
    /// for an A read in place whose next tiles the next calls will read.
    pub a_ahead: usize,
}

/// [`TileArgs::a_ahead`] for an A read along k with steps `a_step` apart: six steps ahead.
pub(crate) fn ahead_in_k(a_step: usize) -> usize {
    6 * a_step
}

/// A micro-kernel (see the module contract).
///
/// # Safety
/// `a` must be readable for `k` steps of `a_step` plus `MR` floats, `b` for `k·NR` floats, `c`
/// readable (if β ≠ 0) and writable at `i + j·cs_c` for the whole tile, the bias pointers
/// null or valid for `MR` / `NR` floats, and the CPU must support the kernel's instructions.
pub(crate) type KernelFn =
    unsafe fn(k: usize, a: *const f32, a_step: usize, b: *const f32, c: *mut f32, cs_c: usize, args: &TileArgs);

/// A micro-kernel with its block sizes.
pub(crate) struct KernelSpec {
    pub blocking: Blocking,
    pub func: KernelFn,
    /// `edges[j − 1]`: the kernel for a last B sliver with only `j < NR` columns (reading
    /// the `NR`-wide packed sliver, computing and storing `j` columns; the same instruction
    /// sequence per element, so the same bits). Empty: ragged slivers use the scratch tile.
    pub edges: &'static [KernelFn],
    /// A whose slivers are contiguous is read in place, not packed, when the part of C a
    /// thread computes is at most this many B slivers wide (each A sliver then serves too
    /// few B slivers to repay its copy).
    pub direct_a_slivers: usize,
}

/// Writes one micro-kernel from a vector type and its operations. The body is the same text
/// for every instruction set, so the paths this machine can test vouch for the others.
macro_rules! microkernel {
    (
        $(#[$attr:meta])*
        fn $name:ident: $V:ty, lanes $L:expr, vectors $MV:expr, cols $NR:expr $(, b_stride $BS:expr)?;
        zero $zero:path, load $load:path, store $store:path, splat $splat:path,
        fma $fma:path, mul $mul:path, add $add:path, max $max:path, prefetch $pf:path
    ) => {
        $(#[$attr])*
        pub(crate) unsafe fn $name(
            k: usize,
            a: *const f32,
            a_step: usize,
            b: *const f32,
            c: *mut f32,
            cs_c: usize,
            args: &$crate::gemm::kernels::TileArgs,
        ) {
            const MV: usize = $MV;
            const NR: usize = $NR;
            const L: usize = $L;
            // Floats per step of packed B: the sliver width, which an edge kernel (fewer
            // columns than its sliver) does not fill.
            const BS: usize = NR $(+ $BS - NR)?;
            // SAFETY: the caller upholds the kernel contract (KernelFn): every pointer offset
            // below stays inside the A sliver, the packed B sliver, the C tile and the biases,
            // and the CPU supports this kernel's instructions.
            unsafe {
                // Start fetching the C tile now; it is needed only after the k loop, and
                // its lines are usually not in L1 (C is touched once per k block).
                for j in 0..NR {
                    $pf(c.add(j * cs_c));
                    $pf(c.add(j * cs_c + MV * L - 1));
                }
                let mut acc: [[$V; MV]; NR] = [[$zero(); MV]; NR];
                let (mut ap, mut bp) = (a, b);
                // One step of k: MV loads of A, NR broadcasts of B, MV·NR FMAs.
                let mut step = |ap: *const f32, bp: *const f32| {
                    // Ask for A early (args.a_ahead). The address may lie past A (wrapping
                    // arithmetic, never dereferenced).
                    $pf(ap.wrapping_add(args.a_ahead));
                    let mut av: [$V; MV] = [$zero(); MV];
                    for v in 0..MV {
                        av[v] = $load(ap.add(v * L));
                    }
                    for j in 0..NR {
                        let bj = $splat(*bp.add(j));
                        for v in 0..MV {
                            acc[j][v] = $fma(av[v], bj, acc[j][v]);
                        }
                    }
                };
                // Four steps per trip, so the loop's own bookkeeping is paid once per four.
                for _ in 0..k / 4 {
                    step(ap, bp);
                    step(ap.add(a_step), bp.add(BS));
                    step(ap.add(2 * a_step), bp.add(2 * BS));
                    step(ap.add(3 * a_step), bp.add(3 * BS));
                    ap = ap.add(4 * a_step);
                    bp = bp.add(4 * BS);
                }
                for _ in 0..k % 4 {
                    step(ap, bp);
                    ap = ap.add(a_step);
                    bp = bp.add(BS);
                }
                let alpha = $splat(args.alpha);
                let beta = $splat(args.beta);
                let zero = $zero();
                for j in 0..NR {
                    let cj = c.add(j * cs_c);
                    for v in 0..MV {
                        let mut t = $mul(alpha, acc[j][v]);
                        if args.beta != 0.0 {
                            t = $fma(beta, $load(cj.add(v * L)), t);
                        }
                        if !args.row_bias.is_null() {
                            t = $add(t, $load(args.row_bias.add(v * L)));
                        }
                        if !args.col_bias.is_null() {
                            t = $add(t, $splat(*args.col_bias.add(j)));
                        }
                        if args.relu {
                            // max(0, NaN) is NaN: the second operand wins on NaN.
                            t = $max(zero, t);
                        }
                        $store(cj.add(v * L), t);
                    }
                }
            }
        }
    };
}
pub(crate) use microkernel;

static PORTABLE: KernelSpec =
    KernelSpec { blocking: blocking::PORTABLE, func: portable::kernel_8x4, edges: &[], direct_a_slivers: 4 };
#[cfg(target_arch = "x86_64")]
static AVX2: KernelSpec = KernelSpec {
    blocking: blocking::AVX2,
    func: x86::kernel_16x6_avx2,
    edges: &[
        x86::kernel_16x1_avx2,
        x86::kernel_16x2_avx2,
        x86::kernel_16x3_avx2,
        x86::kernel_16x4_avx2,
        x86::kernel_16x5_avx2,
    ],
    // 16 cost 6% on resnet_1x1 (64 × 3136 × 256 after the swap) with this kernel.
    direct_a_slivers: 4,
};
#[cfg(target_arch = "x86_64")]
static AVX512: KernelSpec = KernelSpec {
    blocking: blocking::AVX512,
    func: x86::kernel_32x8_avx512,
    edges: &[],
    // Up to 128 columns: on Zen 5 the 64 × 3136 × 576 im2col shape went from 200 to 230
    // GFLOP/s, 64³ from 185 to 205, resnet_1x1 from 0.469 to 0.452 ms (4 slivers before).
    direct_a_slivers: 16,
};

/// The kernel for a level the CPU supports (checked by the caller).
pub(crate) fn spec(level: SimdLevel) -> &'static KernelSpec {
    match level {
        SimdLevel::Portable => &PORTABLE,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => &AVX2,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => &AVX512,
        #[cfg(not(target_arch = "x86_64"))]
        _ => &PORTABLE,
    }
}

/// The block sizes the kernel of `level` uses.
pub fn blocking_for(level: SimdLevel) -> Blocking {
    spec(level).blocking
}
