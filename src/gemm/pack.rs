//! Packing: copying blocks of A and B into the contiguous sliver layouts the micro-kernels
//! stream through, zero-padding ragged edges so kernels always see whole tiles.
//!
//! ```text
//! packed A (mr-tall slivers):  sliver s, step p → dst[(s·kc + p)·mr .. +mr] = A[s·mr .. s·mr+mr, p]
//! packed B (nr-wide slivers):  sliver t, step p → dst[(t·kc + p)·nr .. +nr] = B[p, t·nr .. t·nr+nr]
//! ```

use crate::simd::SimdLevel;
use std::cell::RefCell;

/// Something the GEMM driver packs operand blocks from: a strided matrix, or a virtual one
/// such as the im2col lowering of an image (packed straight from the image).
pub(crate) trait PackSource: Sync {
    /// Packs rows `row0 .. row0 + len` and columns `col0 .. col0 + kc` into
    /// `ceil(len / mr)` consecutive `mr × kc` slivers (layout in the module docs),
    /// zero-filling rows past `len`. `level` is the instruction set the caller's kernels
    /// run at: a packer uses nothing above it (a plan forced to a lower level stays there).
    #[allow(clippy::too_many_arguments)]
    fn pack_block(&self, dst: &mut [f32], row0: usize, len: usize, col0: usize, kc: usize, mr: usize, level: SimdLevel);

    /// The source as a strided matrix, if it is one (the driver may then read it in place).
    fn in_place(&self) -> Option<Operand<'_>> {
        None
    }
}

impl PackSource for Operand<'_> {
    fn pack_block(
        &self,
        dst: &mut [f32],
        row0: usize,
        len: usize,
        col0: usize,
        kc: usize,
        mr: usize,
        level: SimdLevel,
    ) {
        pack_block(dst, *self, row0, len, col0, kc, mr, level);
    }

    fn in_place(&self) -> Option<Operand<'_>> {
        Some(*self)
    }
}

/// A strided read-only operand: element `(i, j)` at `data[off + i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// Packs rows `row0 .. row0 + rows` (`rows ≤ mr`) and columns `col0 .. col0 + kc` of `a` into
/// one `mr × kc` sliver, zero-filling rows `rows .. mr`, with instructions up to `level`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_sliver(
    dst: &mut [f32],
    a: Operand<'_>,
    row0: usize,
    rows: usize,
    col0: usize,
    kc: usize,
    mr: usize,
    level: SimdLevel,
) {
    debug_assert!(rows <= mr && dst.len() >= mr * kc);
    let dst = &mut dst[..mr * kc];
    if rows == 0 || kc == 0 {
        dst.fill(0.0);
        return;
    }
    // Whole slivers of the tile sizes the kernels use get fixed-size copies the compiler
    // turns into vector moves; everything else takes the general loops.
    if rows == mr {
        let done = match mr {
            4 => pack_whole::<4>(dst, a, row0, col0, kc, level),
            6 => pack_whole::<6>(dst, a, row0, col0, kc, level),
            8 => pack_whole::<8>(dst, a, row0, col0, kc, level),
            16 => pack_whole::<16>(dst, a, row0, col0, kc, level),
            32 => pack_whole::<32>(dst, a, row0, col0, kc, level),
            _ => false,
        };
        if done {
            return;
        }
    }
    let base = row0 * a.rs + col0 * a.cs;
    if a.rs == 1 {
        // Contiguous along the sliver: one copy of `rows` floats per step.
        for (p, out) in dst.chunks_exact_mut(mr).enumerate() {
            let start = base + p * a.cs;
            out[..rows].copy_from_slice(&a.data[start..start + rows]);
            out[rows..].fill(0.0);
        }
    } else if a.cs == 1 {
        // Contiguous along k: walk each row once, writing with stride mr.
        if rows < mr {
            dst.fill(0.0);
        }
        for r in 0..rows {
            let start = base + r * a.rs;
            let src = &a.data[start..start + kc];
            for (out, &v) in dst[r..].iter_mut().step_by(mr).zip(src) {
                *out = v;
            }
        }
    } else {
        for (p, out) in dst.chunks_exact_mut(mr).enumerate() {
            for (r, o) in out.iter_mut().enumerate() {
                *o = if r < rows { a.data[base + r * a.rs + p * a.cs] } else { 0.0 };
            }
        }
    }
}

/// A whole `MR`-row sliver from a layout with a unit stride; `false` if neither stride is 1.
fn pack_whole<const MR: usize>(
    dst: &mut [f32],
    a: Operand<'_>,
    row0: usize,
    col0: usize,
    kc: usize,
    level: SimdLevel,
) -> bool {
    let base = row0 * a.rs + col0 * a.cs;
    if a.rs == 1 {
        for (p, out) in dst.chunks_exact_mut(MR).enumerate() {
            let start = base + p * a.cs;
            let src: &[f32; MR] = a.data[start..start + MR].try_into().expect("MR floats");
            out.copy_from_slice(src);
        }
        true
    } else if a.cs == 1 {
        // MR row streams read in step, one contiguous MR-float write per step.
        let rows: [&[f32]; MR] = std::array::from_fn(|r| &a.data[base + r * a.rs..base + r * a.rs + kc]);
        if transpose_rows::<MR>(dst, &rows, kc, level) {
            return true;
        }
        for (p, out) in dst.chunks_exact_mut(MR).enumerate() {
            for (o, row) in out.iter_mut().zip(&rows) {
                *o = row[p];
            }
        }
        true
    } else {
        false
    }
}

/// `dst[p·MR + r] = rows[r][p]` for `p < kc`, `r < MR` (every row holds `kc` floats, `dst`
/// `MR·kc`) with the AVX2 8×8 register transposes when `level` allows them and `MR` is 6, 8
/// or 16; `false` (nothing written) otherwise, for the caller's own loop.
pub(crate) fn transpose_rows<const MR: usize>(
    dst: &mut [f32],
    rows: &[&[f32]; MR],
    kc: usize,
    level: SimdLevel,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if matches!(MR, 6 | 8 | 16) && level >= SimdLevel::Avx2 {
        // SAFETY: AVX2 is available (the caller's level, which the CPU supports); the
        // lengths are asserted inside.
        unsafe { avx2::transpose_pack(&mut dst[..MR * kc], rows, kc) };
        return true;
    }
    let _ = (dst, rows, kc, level);
    false
}

/// The transposing copy of [`pack_whole`] (rows contiguous along k, sliver interleaved by
/// row) as 8×8 register transposes: eight rows' next eight floats in, eight steps' eight
/// rows out, ~0.2 cycles a float where the scalar interleave took one or two.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// How far ahead along each row [`transpose_pack`] prefetches, in floats.
    const TRANSPOSE_AHEAD: usize = 128;

    /// `dst[p·MR + r] = rows[r][p]` for `p < kc`, `r < MR` (`MR` ∈ {6, 8, 16}).
    ///
    /// # Safety
    /// The CPU must support AVX2; every row must hold `kc` floats and `dst` `MR·kc`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_pack<const MR: usize>(dst: &mut [f32], rows: &[&[f32]; MR], kc: usize) {
        assert!(dst.len() >= MR * kc && rows.iter().all(|r| r.len() >= kc));
        let whole = kc / 8 * 8;
        for g0 in (0..MR).step_by(8) {
            let n = (MR - g0).min(8);
            let mut p = 0;
            while p < whole {
                if p % 16 == 0 {
                    // The rows are far apart, often in L3 (a row-major operand's rows): ask
                    // for each row's line TRANSPOSE_AHEAD floats on, one line per row per
                    // two steps.
                    for row in &rows[g0..g0 + n] {
                        crate::simd::prefetch_read(row.as_ptr().wrapping_add(p + TRANSPOSE_AHEAD));
                    }
                }
                // SAFETY: p + 8 ≤ kc floats of each row (asserted lengths); rows past MR in
                // a group of 8 are zero vectors, never loaded.
                let t = unsafe {
                    let r: [__m256; 8] = std::array::from_fn(|i| {
                        if i < n {
                            _mm256_loadu_ps(rows[g0 + i].as_ptr().add(p))
                        } else {
                            _mm256_setzero_ps()
                        }
                    });
                    crate::simd::x86::transpose8(r)
                };
                for (j, col) in t.iter().enumerate() {
                    let at = (p + j) * MR + g0;
                    // SAFETY: at + n ≤ (p + j)·MR + MR ≤ MR·kc (n ≤ 8 lanes stored).
                    unsafe { crate::simd::x86::store_prefix(dst.as_mut_ptr().add(at), *col, n) };
                }
                p += 8;
            }
            for p in whole..kc {
                for r in 0..n {
                    dst[p * MR + g0 + r] = rows[g0 + r][p];
                }
            }
        }
    }
}

/// Packs an `len × kc` block (starting at `(row0, col0)`) of `a` into `ceil(len/mr)`
/// consecutive slivers.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_block(
    dst: &mut [f32],
    a: Operand<'_>,
    row0: usize,
    len: usize,
    col0: usize,
    kc: usize,
    mr: usize,
    level: SimdLevel,
) {
    let slivers = len.div_ceil(mr);
    if a.rs == 1 && len > mr && kc > 0 {
        // Contiguous along m: walk each of the kc source lines once, front to back, and deal
        // it out to the slivers. Sliver by sliver would instead hop across kc lines for every
        // mr floats, defeating the prefetchers and the TLB when lines are far apart (the
        // im2col operand of a convolution).
        let dst = &mut dst[..slivers * mr * kc];
        match mr {
            8 => deal::<8>(dst, a, row0, len, col0, kc),
            16 => deal::<16>(dst, a, row0, len, col0, kc),
            32 => deal::<32>(dst, a, row0, len, col0, kc),
            _ => {
                for p in 0..kc {
                    let start = row0 + (col0 + p) * a.cs;
                    for (s, chunk) in a.data[start..start + len].chunks(mr).enumerate() {
                        let out = &mut dst[(s * kc + p) * mr..(s * kc + p + 1) * mr];
                        out[..chunk.len()].copy_from_slice(chunk);
                        out[chunk.len()..].fill(0.0);
                    }
                }
            }
        }
        return;
    }
    for (s, out) in dst.chunks_exact_mut(mr * kc.max(1)).take(slivers).enumerate() {
        let r0 = s * mr;
        pack_sliver(out, a, row0 + r0, (len - r0).min(mr), col0, kc, mr, level);
    }
}

/// How many source lines ahead [`deal`] prefetches.
const PREFETCH_AHEAD: usize = 4;

/// [`pack_block`]'s line-by-line dealing for a unit row stride, with fixed-size copies.
fn deal<const MR: usize>(dst: &mut [f32], a: Operand<'_>, row0: usize, len: usize, col0: usize, kc: usize) {
    let whole = len / MR;
    for p in 0..kc {
        let start = row0 + (col0 + p) * a.cs;
        // The lines are far apart and too many for the hardware prefetchers to follow:
        // request the line PREFETCH_AHEAD lines down while this one is copied.
        let ahead = a.data.as_ptr().wrapping_add(start + PREFETCH_AHEAD * a.cs);
        for off in (0..len).step_by(16) {
            crate::simd::prefetch_read(ahead.wrapping_add(off));
        }
        let src = &a.data[start..start + len];
        for s in 0..whole {
            let chunk: &[f32; MR] = src[s * MR..(s + 1) * MR].try_into().expect("MR floats");
            let out: &mut [f32; MR] =
                (&mut dst[(s * kc + p) * MR..(s * kc + p + 1) * MR]).try_into().expect("MR floats");
            *out = *chunk;
        }
        if whole * MR < len {
            let rest = &src[whole * MR..];
            let out = &mut dst[(whole * kc + p) * MR..(whole * kc + p + 1) * MR];
            out[..rest.len()].copy_from_slice(rest);
            out[rest.len()..].fill(0.0);
        }
    }
}

/// A growable buffer whose slices start on a 64-byte boundary (one cache line, one zmm).
#[derive(Default)]
pub(crate) struct AlignedBuf {
    buf: Vec<f32>,
}

impl AlignedBuf {
    const ALIGN_FLOATS: usize = 16;

    /// A 64-byte aligned slice of `len` floats (contents unspecified but initialised).
    pub fn get(&mut self, len: usize) -> &mut [f32] {
        let need = len + Self::ALIGN_FLOATS;
        if self.buf.len() < need {
            self.buf = vec![0.0; need];
        }
        let misalign = (self.buf.as_ptr() as usize / 4) % Self::ALIGN_FLOATS;
        let off = (Self::ALIGN_FLOATS - misalign) % Self::ALIGN_FLOATS;
        &mut self.buf[off..off + len]
    }
}

/// Per-thread packing buffers, reused across calls so the steady state allocates nothing.
#[derive(Default)]
pub(crate) struct PackBuffers {
    pub a: AlignedBuf,
    pub b: AlignedBuf,
}

thread_local! {
    static BUFFERS: RefCell<PackBuffers> = RefCell::new(PackBuffers::default());
}

/// Runs `f` with this thread's packing buffers (or fresh ones if they are already in use,
/// which happens only if `f` re-enters the GEMM on the same thread).
pub(crate) fn with_buffers<R>(f: impl FnOnce(&mut PackBuffers) -> R) -> R {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => f(&mut bufs),
        Err(_) => f(&mut PackBuffers::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_packs_the_same() {
        // A 5×3 matrix, element (i, j) = 10i + j, stored three ways.
        let rm: Vec<f32> = (0..15).map(|x| (10 * (x / 3) + x % 3) as f32).collect();
        let cm: Vec<f32> = (0..15).map(|x| (10 * (x % 5) + x / 5) as f32).collect();
        let mut st = vec![-1.0; 40];
        for i in 0..5 {
            for j in 0..3 {
                st[i * 8 + j * 2] = (10 * i + j) as f32;
            }
        }
        let ops = [
            Operand { data: &rm, rs: 3, cs: 1 },
            Operand { data: &cm, rs: 1, cs: 5 },
            Operand { data: &st, rs: 8, cs: 2 },
        ];
        let mut want = [0.0; 4 * 2 * 2];
        for s in 0..2 {
            for p in 0..2 {
                for r in 0..4 {
                    let i = 1 + s * 4 + r;
                    want[(s * 2 + p) * 4 + r] = if i < 5 { (10 * i + 1 + p) as f32 } else { 0.0 };
                }
            }
        }
        for op in ops {
            let mut dst = vec![f32::NAN; 16];
            pack_block(&mut dst, op, 1, 4, 1, 2, 4, SimdLevel::Portable);
            assert_eq!(dst[..8], want[..8]);
            let mut dst = vec![f32::NAN; 16];
            pack_block(&mut dst, op, 1, 3, 1, 2, 4, SimdLevel::Portable);
            let mut w = want[..8].to_vec();
            w[3] = 0.0;
            w[7] = 0.0;
            assert_eq!(dst[..8], w[..]);
        }
    }

    #[test]
    fn transposing_pack_matches_the_scalar_interleave() {
        // Rows contiguous along k (cs = 1) for every tile height the kernels use, with kc
        // on both sides of the 8-float transpose blocks.
        for mr in [4usize, 6, 8, 16] {
            for kc in [1usize, 7, 8, 9, 23, 40] {
                let rs = kc + 3;
                let data: Vec<f32> = (0..mr * rs + 5).map(|i| i as f32 * 0.5 - 3.0).collect();
                let a = Operand { data: &data, rs, cs: 1 };
                for level in SimdLevel::supported() {
                    let mut dst = vec![f32::NAN; mr * kc];
                    pack_sliver(&mut dst, a, 0, mr, 0, kc, mr, level);
                    for p in 0..kc {
                        for r in 0..mr {
                            assert_eq!(dst[p * mr + r], data[r * rs + p], "{level:?} mr {mr} kc {kc} p {p} r {r}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn aligned() {
        let mut b = AlignedBuf::default();
        for len in [1, 7, 100, 4096] {
            assert_eq!(b.get(len).as_ptr() as usize % 64, 0);
            assert_eq!(b.get(len).len(), len);
        }
    }
}
