//! The input rows under a band of Winograd tiles, each zero-padded row split by column
//! phase, shared by F(2×2, 3×3) (two phases) and F(4×4, 3×3) (four).

use crate::geometry::Conv2dGeometry;

/// The padded input rows under `tile_rows` rows of `P × P`-output tiles of one group, each
/// row split by column modulo `P`: for tile column `t`, the patch's column `P·t + j` is
/// `phase[j % P][t + j / P]`, so a vector of consecutive tiles reads each of the patch's
/// `P + 2` columns contiguously.
pub(super) struct PhaseRows<const P: usize> {
    /// Floats per phase of a row: the tiles across, one more for the patches' overlap, and
    /// `slack` so that a vector of tiles may start at the last tile.
    pub per_phase: usize,
    /// Padded input rows held: `P` per tile row, plus the 3×3 patches' overlap.
    pub rows: usize,
}

impl<const P: usize> PhaseRows<P> {
    pub fn new(g: &Conv2dGeometry, tile_rows: usize, slack: usize) -> Self {
        let tw = g.w.output.div_ceil(P);
        PhaseRows { per_phase: tw + 1 + slack, rows: P * tile_rows + 2 }
    }

    /// Floats per padded row (all phases).
    pub fn row_len(&self) -> usize {
        P * self.per_phase
    }

    /// Floats per channel.
    pub fn channel_len(&self) -> usize {
        self.rows * self.row_len()
    }

    /// Fills `C/G` channels from tile row `tr0`: local row `r` is input row `P·tr0 + r − pt`,
    /// zero where that (or a column) is outside the input. `row_buf` holds one padded row.
    pub fn fill(&self, g: &Conv2dGeometry, xg: &[f32], tr0: usize, out: &mut [f32], row_buf: &mut [f32]) {
        let (h_in, w_in) = (g.h.input, g.w.input);
        let (pt, pl) = (g.h.pad_before, g.w.pad_before);
        let (q, len) = (self.per_phase, self.row_len());
        // Padded column `pl + iw` holds input column `iw`; the rest of the row is zero.
        let row_buf = &mut row_buf[..len];
        let (lo, hi) = (pl.min(len), (pl + w_in).min(len));
        row_buf[..lo].fill(0.0);
        row_buf[hi..].fill(0.0);
        for c in 0..g.c_per_group() {
            let chan = &xg[c * h_in * w_in..(c + 1) * h_in * w_in];
            let dst = &mut out[c * self.channel_len()..(c + 1) * self.channel_len()];
            for (r, row) in dst.chunks_exact_mut(len).enumerate() {
                let Some(ih) = (P * tr0 + r).checked_sub(pt).filter(|&ih| ih < h_in) else {
                    row.fill(0.0);
                    continue;
                };
                row_buf[lo..hi].copy_from_slice(&chan[ih * w_in + lo - pl.min(lo)..][..hi - lo]);
                let mut phases = row.chunks_exact_mut(q);
                let phases: [&mut [f32]; P] = std::array::from_fn(|_| phases.next().expect("P phases"));
                // A stride-P de-interleave (vectorised as shuffles).
                for (u, group) in row_buf.chunks_exact(P).enumerate() {
                    for p in 0..P {
                        phases[p][u] = group[p];
                    }
                }
            }
        }
    }
}
