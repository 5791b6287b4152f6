//! The five loops around the micro-kernel, the scratch tile for ragged edges, and the split
//! of C among threads.

use super::blocking::{MAX_MR, MAX_NR};
use super::kernels::{ahead_in_k, TileArgs};
use super::pack::{pack_sliver, with_buffers, Operand, PackBuffers, PackSource};
use super::{Bias, Engine, GemmParams, MatMut, MatRef};
use crate::parallel::for_each_part;
use std::ops::Range;

/// C as a raw pointer with strides, shared by the threads that write disjoint parts of it.
#[derive(Clone, Copy)]
pub(crate) struct CPtr {
    pub ptr: *mut f32,
    pub rs: usize,
    pub cs: usize,
}

// SAFETY: threads receive disjoint sets of C's elements (one rectangle of tiles each), and a
// validated MatMut maps distinct elements to distinct cells, so no cell is touched by two
// threads; the pointer outlives the parallel section, which borrows the MatMut.
unsafe impl Send for CPtr {}
// SAFETY: as above: shared only to hand each thread its own disjoint rectangle.
unsafe impl Sync for CPtr {}

/// A problem in canonical orientation (C's contiguous dimension, if any, is m), with its
/// operands given as things to pack from: `a` is A (m × k), `bt` is Bᵀ (n × k).
pub(crate) struct Problem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: &'a dyn PackSource,
    pub bt: &'a dyn PackSource,
    pub c: CPtr,
    pub alpha: f32,
    pub beta: f32,
    pub row_bias: Option<&'a [f32]>,
    pub col_bias: Option<&'a [f32]>,
    pub relu: bool,
}

fn operand<'a>(x: &MatRef<'a>) -> Operand<'a> {
    Operand { data: x.data, rs: x.rs, cs: x.cs }
}

pub(super) fn run(eng: Engine, a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>, p: &GemmParams<'_>) {
    let (m, n, k) = (c.rows, c.cols, a.cols);
    let (row_bias, col_bias) = match p.epilogue.bias {
        Bias::None => (None, None),
        Bias::PerRow(v) => (Some(v), None),
        Bias::PerCol(v) => (None, Some(v)),
    };
    let cptr = CPtr { ptr: c.data.as_mut_ptr(), rs: c.rs, cs: c.cs };
    // Micro-kernels vectorise along m and want C contiguous there. A C contiguous along n
    // is handled as the transposed problem Cᵀ = Bᵀ·Aᵀ (views only, nothing moves).
    let transpose = c.rs != 1 && c.cs == 1;
    let (a_op, bt_op) = if transpose { (operand(&b.t()), operand(&a)) } else { (operand(&a), operand(&b.t())) };
    let prob = Problem {
        m: if transpose { n } else { m },
        n: if transpose { m } else { n },
        k,
        a: &a_op,
        bt: &bt_op,
        c: if transpose { CPtr { ptr: cptr.ptr, rs: c.cs, cs: c.rs } } else { cptr },
        alpha: p.alpha,
        beta: p.beta,
        row_bias: if transpose { col_bias } else { row_bias },
        col_bias: if transpose { row_bias } else { col_bias },
        relu: p.epilogue.relu,
    };
    run_problem(eng, &prob, p.parallelism);
}

/// Runs a canonical problem: splits C among threads, then the blocked loops on each part.
///
/// The caller guarantees that `c` is valid, for writing (and reading, when β ≠ 0), at
/// `i·rs + j·cs` for every `i < m`, `j < n`, that those cells are distinct, and that the
/// sources hold `m × k` and `n × k` elements.
pub(crate) fn run_problem(eng: Engine, prob: &Problem<'_>, parallelism: crate::Parallelism) {
    if prob.m == 0 || prob.n == 0 {
        return;
    }
    let bl = eng.blocking.aligned();
    let parts = parallelism.threads_for(super::flops(prob.m, prob.n, prob.k));
    let (pm, pn) = split(parts, prob.m.div_ceil(bl.mr), prob.n.div_ceil(bl.nr), bl.mr, bl.nr);
    let rows = ranges(prob.m, bl.mr, pm);
    let cols = ranges(prob.n, bl.nr, pn);
    for_each_part(pm * pn, |part| {
        with_buffers(|bufs| {
            run_part(Engine { blocking: bl, ..eng }, prob, rows[part / pn].clone(), cols[part % pn].clone(), bufs)
        });
    });
}

/// Splits `parts` threads into a `pm × pn` grid over `tm × tn` tiles of `mr × nr`,
/// minimising one thread's work: its tiles (`2·mr·nr` flops per step of k) plus the
/// packing it does (each of its rows of A and columns of B, per step of k), a packed
/// element costing about [`PACK_COST`] flops. Packing is per part, so a split along n
/// makes every part pack all its rows of A: when A is expensive to pack (an image lowered
/// by im2col) rows are split instead.
fn split(parts: usize, tm: usize, tn: usize, mr: usize, nr: usize) -> (usize, usize) {
    let parts = parts.clamp(1, (tm * tn).max(1));
    let cost = |pm: usize, pn: usize| {
        let (rows, cols) = (tm.div_ceil(pm), tn.div_ceil(pn));
        rows * cols * 2 * mr * nr + PACK_COST * (rows * mr + cols * nr)
    };
    (1..=parts)
        .filter(|&pm| parts.is_multiple_of(pm))
        .map(|pm| (pm, parts / pm))
        .min_by_key(|&(pm, pn)| (cost(pm, pn), pm))
        .unwrap_or((1, 1))
}

/// Flops one packed element costs, for [`split`] (a packed float is a load, a store and,
/// for im2col, index work: a handful of cycles, while the kernels do ~30 flops a cycle).
const PACK_COST: usize = 16;

/// The depth of loop 4's blocks: `k` cut into as few blocks of at most `kc` as possible,
/// of nearly equal depth (a multiple of 8), so that no block is a thin remainder that pays
/// the C-tile traffic for little work. It depends on `k` alone, so every part of a split
/// problem sums in the same order.
fn balanced_kc(k: usize, kc: usize) -> usize {
    let blocks = k.div_ceil(kc.max(1)).max(1);
    k.div_ceil(blocks).next_multiple_of(8).min(kc).max(1)
}

/// `len` split into `parts` ranges whose boundaries fall on multiples of `tile`.
fn ranges(len: usize, tile: usize, parts: usize) -> Vec<Range<usize>> {
    let tiles = len.div_ceil(tile);
    (0..parts)
        .map(|i| {
            let (t0, t1) = (tiles * i / parts, tiles * (i + 1) / parts);
            (t0 * tile).min(len)..(t1 * tile).min(len)
        })
        .collect()
}

/// Tiles along m ahead of the current one whose A a kernel reading A in place prefetches,
/// for blocks shallower than [`DIRECT_A_DEEP`].
const DIRECT_A_AHEAD_TILES: usize = 4;

/// Blocks at least this deep in k read in place prefetch A along k instead, like packed
/// slivers (each step of such a sliver is a different row of A, a row stride apart:
/// 64 × 3136 × 576, 218 → 233–238 GFLOP/s; 64 × 3136 × 256, 224 → 245–247; 64 × 3136 × 64,
/// 230 → 237–240; even at k = 32; LeNet C1's 6 × 50176 × 25 lost 7% that way).
const DIRECT_A_DEEP: usize = 64;

/// [`TileArgs::a_ahead`] for a `kc`-deep block of A read in place (rows `cs` floats apart)
/// in tiles of `mr` rows.
fn direct_a_ahead(kc: usize, cs: usize, mr: usize) -> usize {
    if kc >= DIRECT_A_DEEP {
        ahead_in_k(cs)
    } else {
        DIRECT_A_AHEAD_TILES * mr
    }
}

/// Rows of a block of A read in place (at most). On two threads, 784 × 128 × k GEMMs with
/// A in place (ResNet's 1×1 stride-2 layer as the driver sees it) ran 3–5% slower with
/// 256-row blocks than with 128 at k = 64, 96 and 128.
const DIRECT_A_ROWS: usize = 128;

#[repr(align(64))]
struct ScratchTile([f32; MAX_MR * MAX_NR]);

/// The sequential blocked algorithm on one rectangle `rows × cols` of C.
fn run_part(eng: Engine, pr: &Problem<'_>, rows: Range<usize>, cols: Range<usize>, bufs: &mut PackBuffers) {
    let (kernel, bl, level) = (eng.kernel, eng.blocking, eng.level);
    let (mr, nr) = (bl.mr, bl.nr);
    let kc_max = balanced_kc(pr.k, bl.kc);
    // A is read in place, unpacked, when its slivers are contiguous and each would be used
    // for too few B slivers to repay the copy (small n, as in im2col with few filters).
    // (k = 0 reads nothing, and A may then have no storage at all.)
    let direct = pr.a.in_place().filter(|a| a.rs == 1 && cols.len() <= eng.direct_a_slivers * nr && pr.k > 0);
    // A packed block is sized for L2 (`bl.mc`). A block read in place is read again by every
    // B sliver of loop 2 with its k steps a row stride apart (a new page every step or two),
    // which L2 and its prefetchers serve worse than a packed stream: it stays shorter.
    let mc_max = match direct {
        Some(_) => bl.mc.min(DIRECT_A_ROWS.next_multiple_of(mr)),
        None => bl.mc,
    };
    let mut scratch = ScratchTile([0.0; MAX_MR * MAX_NR]);
    let mut bias_r = [0.0f32; MAX_MR];
    let mut bias_c = [0.0f32; MAX_NR];

    // Loop 5 (n): NC-wide panels of B and C. Distinct panels touch distinct C columns, but
    // this rectangle already belongs to one thread, so it runs sequentially.
    for jc in cols.clone().step_by(bl.nc) {
        let nc = bl.nc.min(cols.end - jc);
        // Loop 4 (k): KC-deep blocks. Never parallel: every iteration updates the same C
        // block, and a fixed block order keeps results bitwise reproducible. k = 0 still runs
        // once so that C ← β·C + bias is applied.
        let mut pc = 0;
        loop {
            let kc = kc_max.min(pr.k - pc);
            let last = pc + kc >= pr.k;
            let bpack = bufs.b.get(nc.div_ceil(nr) * nr * kc.max(1));
            pr.bt.pack_block(bpack, jc, nc, pc, kc, nr, level);
            let args = TileArgs {
                alpha: pr.alpha,
                beta: if pc == 0 { pr.beta } else { 1.0 },
                row_bias: std::ptr::null(),
                col_bias: std::ptr::null(),
                relu: last && pr.relu,
                a_ahead: ahead_in_k(mr),
            };
            // Loop 3 (m): MC-tall blocks of A, packed into L2-sized slivers.
            for ic in rows.clone().step_by(mc_max) {
                let mc = mc_max.min(rows.end - ic);
                let apack = bufs.a.get(mc.div_ceil(mr) * mr * kc.max(1));
                if let Some(a) = direct {
                    // Only a ragged last sliver needs a copy (kernels read whole slivers).
                    let full = mc / mr * mr;
                    if full < mc {
                        pack_sliver(apack, a, ic + full, mc - full, pc, kc, mr, level);
                    }
                } else {
                    pr.a.pack_block(apack, ic, mc, pc, kc, mr, level);
                }
                // The A sliver of the tile at row ir (nrows of its mr rows inside C): pointer,
                // step between k steps, and how far ahead the kernel prefetches.
                let a_of = |ir: usize, nrows: usize| match direct {
                    // A read in place: each step is one of k rows (for a short k and a long
                    // m, a different DRAM page each). A short block fetches the next tiles
                    // along m now, which the next calls read (LeNet C1 as a GEMM, 6 × 50176
                    // × 25: 27 → 32 GFLOP/s median, best 31 → 39, 4 interleaved runs); a
                    // deep one fetches its own next steps (`direct_a_ahead`).
                    Some(a) if nrows == mr => {
                        (a.data[ic + ir + pc * a.cs..].as_ptr(), a.cs, direct_a_ahead(kc, a.cs, mr))
                    }
                    Some(_) => (apack.as_ptr(), mr, args.a_ahead),
                    None => (apack[ir * kc..].as_ptr(), mr, args.a_ahead),
                };
                // A tile that is not whole (ragged rows, a narrow sliver) or whose C is not
                // column-major, at (ic + ir, jc + jr); `col_bias` is the padded bias of its
                // columns (null when there is none or this is not the last k block). Whole
                // tiles go straight to the kernel in loop 1 below.
                let mut edge_tile = |ir: usize, jr: usize, col_bias: *const f32| {
                    let ncols = nr.min(nc - jr);
                    let bsl = &bpack[jr * kc..];
                    let nrows = mr.min(mc - ir);
                    let (i, j) = (ic + ir, jc + jr);
                    debug_assert!(nrows < mr || ncols < nr || pr.c.rs != 1, "whole tiles take loop 1's path");
                    let (a_ptr, a_step, a_ahead) = a_of(ir, nrows);
                    let mut t = TileArgs { a_ahead, col_bias, ..args };
                    if last {
                        if let Some(v) = pr.row_bias {
                            t.row_bias = padded(&mut bias_r[..mr], &v[i..], nrows);
                        }
                    }
                    // SAFETY: a_ptr reads kc steps of a_step within a packed sliver or, for
                    // a direct A, rows i..i+mr (all < m) of columns pc..pc+kc of A's
                    // validated extent; bsl holds kc·nr packed floats; biases were padded
                    // to mr / nr; the C tile is either a narrow sliver's ncols columns of
                    // rows i..i+mr, inside C with rs = 1, or the scratch tile.
                    unsafe {
                        if nrows == mr && ncols <= eng.edges.len() && pr.c.rs == 1 {
                            // A narrow last sliver: the edge kernel writes its ncols
                            // columns of C (whole, inside C) and reads the packed sliver.
                            let c = pr.c.ptr.add(i + j * pr.c.cs);
                            (eng.edges[ncols - 1])(kc, a_ptr, a_step, bsl.as_ptr(), c, pr.c.cs, &t);
                        } else {
                            let s = scratch.0.as_mut_ptr();
                            if t.beta != 0.0 {
                                copy_tile(
                                    pr.c.ptr.add(i * pr.c.rs + j * pr.c.cs),
                                    pr.c.rs,
                                    pr.c.cs,
                                    s,
                                    1,
                                    mr,
                                    nrows,
                                    ncols,
                                );
                            }
                            (kernel)(kc, a_ptr, a_step, bsl.as_ptr(), s, mr, &t);
                            copy_tile(
                                s,
                                1,
                                mr,
                                pr.c.ptr.add(i * pr.c.rs + j * pr.c.cs),
                                pr.c.rs,
                                pr.c.cs,
                                nrows,
                                ncols,
                            );
                        }
                    }
                };
                // Loop 2 (n): NR-wide slivers of packed B; the sliver stays in L1.
                for jr in (0..nc).step_by(nr) {
                    // The sliver's column bias, padded once for all its tiles (per tile it
                    // was ~9% of a short-k product: 1×1 stride-2 ResNet layer, k = 64).
                    let col_bias = match pr.col_bias {
                        Some(v) if last => padded(&mut bias_c[..nr], &v[jc + jr..], nr.min(nc - jr)),
                        _ => std::ptr::null(),
                    };
                    // Loop 1 (m): MR-tall slivers of A streaming past it from L2. Whole tiles
                    // of a whole sliver with C column-major go straight to the kernel (per
                    // tile, the general path's argument rebuilding and row-bias copy were
                    // ~2.5% of a short-k product); the rest through `edge_tile`.
                    let whole = if nc - jr >= nr && pr.c.rs == 1 { mc / mr * mr } else { 0 };
                    let j = jc + jr;
                    let row_bias = pr.row_bias.filter(|_| last);
                    let bsl = bpack[jr * kc..].as_ptr();
                    for ir in (0..whole).step_by(mr) {
                        let i = ic + ir;
                        let (a_ptr, a_step, a_ahead) = a_of(ir, mr);
                        let mut t = TileArgs { a_ahead, col_bias, ..args };
                        if let Some(v) = row_bias {
                            // A whole tile's MR row-bias values, read in place.
                            t.row_bias = v[i..i + mr].as_ptr();
                        }
                        // SAFETY: a_ptr reads kc steps of a_step within a packed sliver or,
                        // for a direct A, rows i..i+mr (all < m) of columns pc..pc+kc of A's
                        // validated extent; bsl holds kc·nr packed floats (a whole sliver:
                        // jr + nr ≤ nc); col_bias holds nr values (padded) and the row bias
                        // mr (rows i..i+mr ≤ m); the C tile, rows i..i+mr and columns
                        // j..j+nr inside C with rs = 1, lies inside C.
                        unsafe {
                            let c = pr.c.ptr.add(i + j * pr.c.cs);
                            (kernel)(kc, a_ptr, a_step, bsl, c, pr.c.cs, &t);
                        }
                    }
                    for ir in (whole..mc).step_by(mr) {
                        edge_tile(ir, jr, col_bias);
                    }
                }
            }
            pc += kc;
            if pc >= pr.k {
                break;
            }
        }
    }
}

/// Copies `valid` values of `src` into `buf`, zero-pads the rest, returns `buf`'s pointer.
fn padded(buf: &mut [f32], src: &[f32], valid: usize) -> *const f32 {
    buf[..valid].copy_from_slice(&src[..valid]);
    buf[valid..].fill(0.0);
    buf.as_ptr()
}

/// Copies a `rows × cols` tile between two strided locations.
///
/// # Safety
/// Both locations must be valid for the tile under their strides, and must not overlap.
#[allow(clippy::too_many_arguments)]
unsafe fn copy_tile(
    src: *const f32,
    src_rs: usize,
    src_cs: usize,
    dst: *mut f32,
    dst_rs: usize,
    dst_cs: usize,
    rows: usize,
    cols: usize,
) {
    for j in 0..cols {
        for i in 0..rows {
            // SAFETY: (i, j) lies inside both tiles, which the caller vouches for.
            unsafe { *dst.add(i * dst_rs + j * dst_cs) = *src.add(i * src_rs + j * src_cs) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::Blocking;

    #[test]
    fn split_prefers_balanced_grids() {
        assert_eq!(split(1, 10, 10, 16, 6), (1, 1));
        // im2col: many row tiles, few column tiles → split the rows.
        assert_eq!(split(2, 196, 11, 16, 6), (2, 1));
        assert_eq!(split(2, 4, 500, 16, 6), (1, 2));
        // Square with square tiles: every grid balances; 2×2 duplicates the least packing.
        assert_eq!(split(4, 64, 64, 16, 16), (2, 2));
        // A 784-pixel im2col block against 128 filters: splitting n would make both parts
        // pack all 784 rows; split the rows.
        assert_eq!(split(2, 49, 22, 16, 6), (2, 1));
        assert_eq!(split(8, 1, 1, 16, 6), (1, 1));
        // Three threads over 2 tiles: use 2.
        assert_eq!(split(3, 2, 1, 16, 6), (2, 1));
        let r = ranges(100, 16, 3);
        assert_eq!(r, vec![0..32, 32..64, 64..100]);
        assert_eq!(ranges(5, 16, 2), vec![0..0, 0..5]);
        assert_eq!(balanced_kc(576, 384), 288);
        assert_eq!(balanced_kc(2048, 384), 344);
        assert_eq!(balanced_kc(100, 384), 104);
        assert_eq!(balanced_kc(0, 384), 1);
        assert_eq!(balanced_kc(7, 5), 5);
        // Cache blocks are cut to whole tiles, never below one.
        let b = Blocking { mr: 16, nr: 6, kc: 384, mc: 120, nc: 100 }.aligned();
        assert_eq!((b.mc, b.nc, b.kc), (112, 96, 384));
        let b = Blocking { mr: 16, nr: 6, kc: 384, mc: 5, nc: 1 }.aligned();
        assert_eq!((b.mc, b.nc), (16, 6));
    }
}
