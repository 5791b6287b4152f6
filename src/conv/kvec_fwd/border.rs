//! The AVX-512 forward of a padded layer without a padded copy of the image.
//!
//! Most outputs' taps lie inside the image: those pixels read the input in place (the
//! tile's base shifted back by the padding, [`Ctx::shift`]). The rest form a frame: output
//! rows whose taps reach above or below the image, and, on the other rows, output columns
//! whose taps reach left or right of it. A frame row reads a copy of just the input rows
//! its taps cover (`C·R` padded rows). A frame column reads a strip: the input columns its
//! taps cover, zero-padded, for every input row, stored transposed (column by column), so
//! that the pixels down an output column lie `stride` floats apart and the row tiles
//! ([`super::tile_avx512`]) compute them, into a small buffer then scattered into the
//! output. Both copies are a few percent of the image's padded copy, which on a stride-2
//! ResNet layer was 4–8% of the forward (each input float read from L3 and written once
//! before the tiles read it again).
//!
//! Every output is still computed by one tile, in tap order, from the same values as with
//! the padded copy (the frame's copies hold the same zeros), so results do not change.

use std::ops::Range;

use super::{row_avx512, Ctx, L512, P512_MIN, STEPS_512};
use crate::conv::padded::{pad_row, tap_grid};
use crate::conv::scratch::{with_index_scratch, with_scratch};
use crate::conv::Conv2dPlan;
use crate::geometry::{Axis, Conv2dGeometry};
use crate::parallel::{for_each_part, SharedMut};
use crate::simd::SimdLevel;

/// Where a padded layer's outputs read in place and where from copies.
pub(in crate::conv) struct Bordered {
    /// Output rows whose taps all lie inside the image's rows.
    rows: Range<usize>,
    /// Output columns whose taps all lie inside the image's columns.
    cols: Range<usize>,
    /// The output columns left and right of `cols`.
    strips: [Strip; 2],
    /// Floats of a padded input row: `pad + W + pad`.
    wp: usize,
}

/// The input columns that some frame columns read, zero-padded, for every input row,
/// stored column by column (`[c][j][h]`).
struct Strip {
    /// The output columns.
    ows: Range<usize>,
    /// The first input column (negative: padding).
    col0: isize,
    /// Input columns it holds (each `H` floats).
    width: usize,
}

/// The outputs along `a` whose taps all lie inside the input.
fn inner(a: &Axis) -> Range<usize> {
    let span = (a.kernel - 1) * a.dilation;
    // Output i reads input i·stride − pad_before + j·dilation for j < kernel.
    let lo = a.pad_before.div_ceil(a.stride).min(a.output);
    let hi = match (a.input + a.pad_before).checked_sub(span + 1) {
        Some(last) => (last / a.stride + 1).min(a.output),
        None => 0,
    };
    lo..hi.max(lo)
}

impl Bordered {
    /// The layout for a padded layer, when its channels come in whole 16-lane vectors, both
    /// strides are ones the tiles step by, and at least [`P512_MIN`] pixels of a row read in
    /// place (otherwise the padded copy).
    pub(in crate::conv) fn new(g: &Conv2dGeometry) -> Option<Self> {
        let steps = STEPS_512.contains(&g.h.stride) && STEPS_512.contains(&g.w.stride);
        if !g.k.is_multiple_of(L512) || !steps || g.h.kernel == 0 || g.w.kernel == 0 {
            return None;
        }
        let (rows, cols) = (inner(&g.h), inner(&g.w));
        if rows.is_empty() || cols.len() < P512_MIN {
            return None;
        }
        let w = &g.w;
        let strip = |ows: Range<usize>| Strip {
            col0: (ows.start * w.stride) as isize - w.pad_before as isize,
            width: if ows.is_empty() { 0 } else { (ows.len() - 1) * w.stride + (w.kernel - 1) * w.dilation + 1 },
            ows,
        };
        let strips = [strip(0..cols.start), strip(cols.end..w.output)];
        Some(Bordered { rows, cols, strips, wp: w.input + w.pad_before + w.pad_after })
    }

    /// Floats of a frame row's copy: `C·R` padded rows.
    fn row_copy(&self, g: &Conv2dGeometry) -> usize {
        g.c * g.h.kernel * self.wp
    }

    /// Floats of one strip.
    fn strip_len(&self, g: &Conv2dGeometry, i: usize) -> usize {
        g.c * g.h.input * self.strips[i].width
    }

    /// Floats of the outputs of a band's frame columns on one side: `K × columns × rows`.
    fn column_out(&self, g: &Conv2dGeometry) -> usize {
        let cols = self.strips.iter().map(|s| s.ows.len()).max().unwrap_or(0);
        g.k * cols * self.rows.len()
    }
}

/// `out[t]` = the offset of tap `t = (c, r, s)` in a copy with channel planes `plane` floats
/// apart, kernel rows `row` apart and kernel columns `col` apart.
fn taps(g: &Conv2dGeometry, out: &mut [usize], plane: usize, row: usize, col: usize) {
    tap_grid(g, out, plane, |r, s| r * row + s * col);
}

/// The forward of a [`Bordered`] layer, with the weights packed by [`super::pack`].
pub(super) fn forward(
    plan: &Conv2dPlan,
    b: &Bordered,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) {
    let g = &plan.geo;
    let (crs, level) = (g.reduction_len(), plan.level);
    let (h, w) = (&g.h, &g.w);
    let plane_in = h.input * w.input;
    with_index_scratch(4 * crs, |offs| {
        let (inside, rest) = offs.split_at_mut(crs);
        let (row_taps, rest) = rest.split_at_mut(crs);
        let (left_taps, right_taps) = rest.split_at_mut(crs);
        taps(g, inside, plane_in, h.dilation * w.input, w.dilation);
        taps(g, row_taps, h.kernel * b.wp, b.wp, w.dilation);
        for (s, out) in b.strips.iter().zip([&mut *left_taps, &mut *right_taps]) {
            taps(g, out, s.width * h.input, h.dilation, w.dilation * h.input);
        }
        let template = Ctx {
            g,
            row_step: 0,
            px_step: w.stride,
            shift: 0,
            blocked: false,
            wt,
            tap_off: &[],
            reach: 0,
            bias,
            relu,
            y: SharedMut::new(y),
        };
        let ctx = |row_step: usize, shift: usize, tap_off| Ctx {
            row_step,
            shift,
            tap_off,
            reach: tap_off.iter().copied().max().unwrap_or(0),
            ..template
        };
        let reads = Reads {
            inside: ctx(h.stride * w.input, h.pad_before * w.input + w.pad_before, inside),
            // A frame row's copy holds just that row's taps: its pixels' bases are ow·sw.
            row: ctx(0, 0, row_taps),
            strip_taps: [left_taps, right_taps],
        };
        let per_part = b.row_copy(g) + b.column_out(g) + b.strip_len(g, 0) + b.strip_len(g, 1);
        let image = |n: usize| &x[n * g.c * plane_in..(n + 1) * g.c * plane_in];
        let threads = plan.parallelism.threads_for(g.flops());
        let bands = |n: usize, parts: usize| {
            with_scratch(parts * per_part, |buf| {
                let own = SharedMut::new(buf);
                let oh_n = h.output;
                for_each_part(parts, |part| {
                    // SAFETY: part < parts, so floats part·per_part .. + per_part lie in
                    // `buf`, and they are this part's alone.
                    let mine = unsafe { std::slice::from_raw_parts_mut(own.get().add(part * per_part), per_part) };
                    let band = oh_n * part / parts..oh_n * (part + 1) / parts;
                    // SAFETY: the plan checked that this CPU supports AVX-512F.
                    unsafe { rows(level, b, &reads, image(n), mine, n, band) };
                });
            })
        };
        if threads > 1 && g.n >= 2 * threads {
            // Whole images side by side.
            for_each_part(g.n, |n| bands(n, 1));
        } else {
            // Image by image, each split into bands of output rows (one per thread).
            for n in 0..g.n {
                bands(n, threads.min(h.output));
            }
        }
    });
}

/// How a layer's three kinds of reads find their taps.
struct Reads<'a> {
    /// The image in place.
    inside: Ctx<'a>,
    /// A frame row's copy.
    row: Ctx<'a>,
    /// The strips' tap offsets.
    strip_taps: [&'a [usize]; 2],
}

/// Output rows `band` of image `n`: frame rows from a copy, the others in place, then
/// their frame columns from the strips. `mine` is this band's scratch: a frame row's copy,
/// the frame columns' outputs, and the two strips (each band fills the rows it reads).
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows(
    level: SimdLevel,
    b: &Bordered,
    reads: &Reads<'_>,
    x: &[f32],
    mine: &mut [f32],
    n: usize,
    band: Range<usize>,
) {
    let c = &reads.inside;
    let g = c.g;
    let (copy, rest) = mine.split_at_mut(b.row_copy(g));
    let (column_out, rest) = rest.split_at_mut(b.column_out(g));
    let (left, right) = rest.split_at_mut(b.strip_len(g, 0));
    // The rows read in place. Their frame columns go down the column in tiles of at least
    // P512_MIN pixels; a band with fewer such rows reads them from row copies instead.
    let inside = band.start.max(b.rows.start)..band.end.min(b.rows.end);
    let inside = if inside.len() >= P512_MIN { inside } else { 0..0 };
    let (h, w) = (&g.h, &g.w);
    let m = inside.len();
    for oh in band.clone() {
        if inside.contains(&oh) {
            // SAFETY: AVX-512F is enabled here; `cols` holds at least P512_MIN pixels
            // (`Bordered::new`), and each of their taps lies inside the image.
            unsafe { row_avx512(c, x, n, oh, b.cols.clone()) };
        } else {
            fill_row(g, oh, b.wp, x, copy, level);
            // SAFETY: as above; the whole row is at least as long as `cols`.
            unsafe { row_avx512(&reads.row, copy, n, oh, 0..w.output) };
        }
    }
    if m == 0 {
        return;
    }
    // The frame columns, after the rows (whose tiles left the input they read in cache:
    // filled first, the strips took their image rows from memory, 2.6% of an AlexNet
    // stem's forward).
    let pixels = h.output * w.output;
    // The input rows these outputs' taps read.
    let first = inside.start * h.stride - h.pad_before;
    let ihs = first..(inside.end - 1) * h.stride - h.pad_before + (h.kernel - 1) * h.dilation + 1;
    for ((strip, xs), taps) in b.strips.iter().zip([left, right]).zip(reads.strip_taps) {
        if strip.ows.is_empty() {
            continue;
        }
        fill_strip(g, strip, x, xs, ihs.clone());
        // The strip's columns as output rows of `m` pixels each: pixel p of strip column j
        // reads at j·sw·H + (inside.start + p)·sh − pad_top (the slice starts at pixel 0),
        // stepping sh floats a pixel.
        let mut cg = *g;
        cg.h.output = strip.ows.len();
        cg.w.output = m;
        let cols = strip.ows.len();
        let out = &mut column_out[..g.k * cols * m];
        let cc = Ctx {
            g: &cg,
            row_step: w.stride * h.input,
            px_step: h.stride,
            shift: 0,
            tap_off: taps,
            reach: taps.iter().copied().max().unwrap_or(0),
            y: SharedMut::new(out),
            ..*c
        };
        let xs = &xs[first..];
        for j in 0..cols {
            // SAFETY: AVX-512F is enabled here; the column holds at least P512_MIN pixels,
            // and each of their taps lies inside the strip.
            unsafe { row_avx512(&cc, xs, 0, j, 0..m) };
        }
        // Scattered into the output: channel k, strip column j, row inside.start + p.
        for k in 0..g.k {
            for (j, col) in out[k * cols * m..(k + 1) * cols * m].chunks_exact(m).enumerate() {
                let at = (n * g.k + k) * pixels + inside.start * w.output + strip.ows.start + j;
                for (p, &v) in col.iter().enumerate() {
                    // SAFETY: channel k < K, row inside.start + p < OH, column ows.start + j
                    // < OW: inside y; these outputs belong to this band alone.
                    unsafe { *c.y.get().add(at + p * w.output) = v };
                }
            }
        }
    }
}

/// The input rows that frame row `oh`'s taps read, padded (zeros above and below the
/// image): row `(c, r)` of `copy` is input row `oh·sh − pad_top + r·dh` of channel `c`.
fn fill_row(g: &Conv2dGeometry, oh: usize, wp: usize, x: &[f32], copy: &mut [f32], level: SimdLevel) {
    let (h, w) = (&g.h, &g.w);
    let plane = h.input * w.input;
    for (cr, dst) in copy.chunks_exact_mut(wp).take(g.c * h.kernel).enumerate() {
        let (c, r) = (cr / h.kernel, cr % h.kernel);
        match (oh * h.stride + r * h.dilation).checked_sub(h.pad_before).filter(|&ih| ih < h.input) {
            Some(ih) => {
                let at = c * plane + ih * w.input;
                pad_row(dst, w.pad_before, &x[at..at + w.input], level);
            }
            None => dst.fill(0.0),
        }
    }
}

/// Input rows `ihs` of a strip (input columns `col0 .. col0 + width` of every row, zeros
/// outside the image), stored column by column: `buf[(c·width + j)·H + h] = x[c, h,
/// col0 + j]`.
fn fill_strip(g: &Conv2dGeometry, s: &Strip, x: &[f32], buf: &mut [f32], ihs: Range<usize>) {
    let (hi, wi) = (g.h.input, g.w.input);
    if s.width == 0 || hi == 0 {
        return;
    }
    // Strip columns ja .. jb are image columns; the others are zeros.
    let col = |j: usize| s.col0 + j as isize;
    let ja = (0..s.width).find(|&j| col(j) >= 0).unwrap_or(s.width);
    let jb = (ja..s.width).find(|&j| col(j) >= wi as isize).unwrap_or(s.width);
    for (c, chan) in buf.chunks_exact_mut(s.width * hi).take(g.c).enumerate() {
        for (j, dst) in chan.chunks_exact_mut(hi).enumerate() {
            if !(ja..jb).contains(&j) {
                dst[ihs.clone()].fill(0.0);
            }
        }
        if ja == jb {
            continue;
        }
        // Row by row: each image row's few floats read together, written a strip column
        // apart (column by column, every read was a new cache line: 2.6% of an AlexNet
        // stem's forward).
        let cols = (col(ja) as usize)..(col(jb - 1) as usize + 1);
        for h in ihs.clone() {
            let row = &x[(c * hi + h) * wi..(c * hi + h + 1) * wi];
            for (j, &v) in (ja..jb).zip(&row[cols.clone()]) {
                chan[j * hi + h] = v;
            }
        }
    }
}
