//! Block sizes, one set per micro-kernel. Each constant names the loop it cuts and the cache
//! level its packed block is sized for. Only `kc` affects results (the k-blocking fixes the
//! summation order); the others only move data and may be tuned freely.

/// Tile and cache-block sizes of one micro-kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of the register tile (the vector dimension: C's contiguous dimension).
    pub mr: usize,
    /// Columns of the register tile (broadcast operand).
    pub nr: usize,
    /// Loop 4 (k): depth of a packed block. A `kc × nr` sliver of packed B stays in L1 while
    /// the micro-kernel streams `mr × kc` slivers of A past it.
    pub kc: usize,
    /// Loop 3 (m): rows of the packed `mc × kc` block of A, sized to stay in L2.
    pub mc: usize,
    /// Loop 5 (n): columns of the packed `kc × nc` panel of B, sized for the shared L3.
    pub nc: usize,
}

impl Blocking {
    /// `mc` and `nc` rounded down to whole tiles (at least one): a block that is not a
    /// multiple of the tile leaves a ragged sliver in every block, which goes through the
    /// scratch tile (an `mc` of 120 with `mr` = 16 cost ~7% at 1024³).
    pub(crate) fn aligned(self) -> Self {
        let round = |x: usize, t: usize| (x / t.max(1) * t).max(t);
        Blocking { mc: round(self.mc, self.mr), nc: round(self.nc, self.nr), ..self }
    }
}

/// AVX-512F: 32×8 tile (2 zmm × 8 columns = 16 accumulators). `nr = 8` divides the channel
/// counts of real layers, so im2col shapes waste no tile columns. mc = 256: the A block is
/// 256 KiB of a 1 MiB L2, and each of its kc source lines is read in 1 KiB runs; with
/// mc = 128 a lowered operand whose lines lie far apart (im2col's 256 × 3136 × 2304) spent
/// 13% of its time packing, stalled on the first load of each run. Zen 5, 4 alternations,
/// medians: that shape 219 → 226 GFLOP/s (1T), 2048³ 234 → 241; the rest within ±1%.
pub(crate) const AVX512: Blocking = Blocking { mr: 32, nr: 8, kc: 256, mc: 256, nc: 4096 };

/// AVX2+FMA: 16×6 tile (2 ymm × 6 columns = 12 accumulators, 15 of the 16 ymm registers).
/// kc = 384: the B sliver is 9 KiB of the 32 KiB L1; mc = 128 (whole tiles): the A block is
/// 192 KiB of a 512 KiB L2; nc = 4080 (a multiple of 6 and 16): the B panel is 6 MiB of L3.
/// Measured on Zen 3 at 1024³, one thread, medians of 15 (GFLOP/s of a ~100 peak):
/// (kc, mc) = (320, 120) 81–83, (320, 128) 87–88, (384, 128) 88–90, (512, 112) 87–89.
pub(crate) const AVX2: Blocking = Blocking { mr: 16, nr: 6, kc: 384, mc: 128, nc: 4080 };

/// Portable `wide` f32x8: 8×4 tile (4 accumulators of 8 lanes), small enough for 16
/// 128-bit registers when f32x8 is two SSE or NEON halves.
pub(crate) const PORTABLE: Blocking = Blocking { mr: 8, nr: 4, kc: 256, mc: 128, nc: 2048 };

/// Largest `mr` and `nr` of any kernel (scratch tiles are sized by these).
pub(crate) const MAX_MR: usize = 32;
pub(crate) const MAX_NR: usize = 8;
