//! Resampling: affine maps, displacement fields, Gaussian smoothing, bilinear sampling.
//!
//! Coordinates are pixel centres: pixel `(x, y)` sits at `(x, y)`, the image centre at
//! `((w − 1) / 2, (h − 1) / 2)`, `y` grows downwards (as displayed).

/// A 2-D affine map `p ↦ [a b; c d]·p + [e; f]` on pixel coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Affine2 {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub d: f64,
    pub e: f64,
    pub f: f64,
}

impl Affine2 {
    pub const IDENTITY: Affine2 = Affine2 { a: 1.0, b: 0.0, c: 0.0, d: 1.0, e: 0.0, f: 0.0 };

    /// `self ∘ first`: apply `first`, then `self`.
    pub fn after(&self, first: &Affine2) -> Affine2 {
        Affine2 {
            a: self.a * first.a + self.b * first.c,
            b: self.a * first.b + self.b * first.d,
            c: self.c * first.a + self.d * first.c,
            d: self.c * first.b + self.d * first.d,
            e: self.a * first.e + self.b * first.f + self.e,
            f: self.c * first.e + self.d * first.f + self.f,
        }
    }

    /// The inverse map, or `None` when the linear part is singular.
    pub fn inverse(&self) -> Option<Affine2> {
        let det = self.a * self.d - self.b * self.c;
        if !det.is_finite() || det.abs() < 1e-12 {
            return None;
        }
        let (a, b, c, d) = (self.d / det, -self.b / det, -self.c / det, self.a / det);
        Some(Affine2 { a, b, c, d, e: -(a * self.e + b * self.f), f: -(c * self.e + d * self.f) })
    }

    /// The forward map of "rotate by `rotation` radians counter-clockwise as displayed,
    /// shear x by `tan(shear)`·y, scale by `scale`" about the centre of a `w × h` image,
    /// followed by a translation of `(tx, ty)` pixels.
    pub fn about_centre(w: usize, h: usize, rotation: f64, shear: f64, scale: f64, tx: f64, ty: f64) -> Affine2 {
        let (sin, cos) = rotation.sin_cos();
        let t = shear.tan();
        // R·Sh·S with R = [cos sin; −sin cos], Sh = [1 t; 0 1], S = scale·I.
        let (a, b, c, d) = (cos * scale, (cos * t + sin) * scale, -sin * scale, (cos - sin * t) * scale);
        let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        Affine2 { a, b, c, d, e: cx + tx - (a * cx + b * cy), f: cy + ty - (c * cx + d * cy) }
    }
}

/// Bilinear sample of plane `src` (`w × h`) at `(x, y)`; taps outside read `background`.
///
/// An exactly integral position returns the pixel itself, bit for bit (for finite values):
/// the blend is `a + t·(b − a)` with `t = 0`. Written without `floor` (a library call on
/// baseline x86-64) and with a branch-free interior path.
#[inline(always)]
fn bilinear(src: &[f32], w: usize, h: usize, x: f32, y: f32, background: f32) -> f32 {
    // Every tap outside (or a NaN position): background.
    if !(x > -1.0 && y > -1.0 && x < w as f32 && y < h as f32) {
        return background;
    }
    // x + 1 > 0, so truncation is floor; x0 = floor(x) is then at least −1.
    let (xs, ys) = (x + 1.0, y + 1.0);
    let (xp, yp) = (xs as usize, ys as usize);
    let (tx, ty) = (xs - xp as f32, ys - yp as f32);
    let lerp = |a: f32, b: f32, t: f32| a + t * (b - a);
    if xp >= 1 && yp >= 1 && xp < w && yp < h {
        // Interior: all four taps inside.
        let i = (yp - 1) * w + xp - 1;
        let top = lerp(src[i], src[i + 1], tx);
        let bottom = lerp(src[i + w], src[i + w + 1], tx);
        return lerp(top, bottom, ty);
    }
    let at = |xx: usize, yy: usize| {
        // xx, yy are coordinates + 1: 0 means −1.
        if xx >= 1 && yy >= 1 && xx <= w && yy <= h {
            src[(yy - 1) * w + xx - 1]
        } else {
            background
        }
    };
    let top = lerp(at(xp, yp), at(xp + 1, yp), tx);
    let bottom = lerp(at(xp, yp + 1), at(xp + 1, yp + 1), tx);
    lerp(top, bottom, ty)
}

/// `dst[y][x] = src(inv(x, y))` for every plane of a `channels × h × w` image.
#[inline(always)]
pub(crate) fn warp_affine(src: &[f32], dst: &mut [f32], w: usize, h: usize, inv: &Affine2, background: f32) {
    let plane = w * h;
    for (s, d) in src.chunks_exact(plane).zip(dst.chunks_exact_mut(plane)) {
        for (y, row) in d.chunks_exact_mut(w).enumerate() {
            let (yb, yd) = (inv.b * y as f64 + inv.e, inv.d * y as f64 + inv.f);
            for (x, out) in row.iter_mut().enumerate() {
                let sx = (inv.a * x as f64 + yb) as f32;
                let sy = (inv.c * x as f64 + yd) as f32;
                *out = bilinear(s, w, h, sx, sy, background);
            }
        }
    }
}

/// `dst[p] = src(inv(p + (dx[p], dy[p])))` for every pixel `p` of every plane: a
/// displacement field followed by the inverse of an earlier affine change.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn warp_displaced(
    src: &[f32],
    dst: &mut [f32],
    w: usize,
    h: usize,
    dx: &[f32],
    dy: &[f32],
    inv: &Affine2,
    background: f32,
) {
    let plane = w * h;
    let identity = *inv == Affine2::IDENTITY;
    for (s, d) in src.chunks_exact(plane).zip(dst.chunks_exact_mut(plane)) {
        for (y, row) in d.chunks_exact_mut(w).enumerate() {
            for (x, out) in row.iter_mut().enumerate() {
                let i = y * w + x;
                let (qx, qy) = (x as f32 + dx[i], y as f32 + dy[i]);
                let (sx, sy) = if identity {
                    (qx, qy)
                } else {
                    let (qx, qy) = (qx as f64, qy as f64);
                    ((inv.a * qx + inv.b * qy + inv.e) as f32, (inv.c * qx + inv.d * qy + inv.f) as f32)
                };
                *out = bilinear(s, w, h, sx, sy, background);
            }
        }
    }
}

/// The normalised 1-D Gaussian of standard deviation `sigma`, truncated at 3σ (and at
/// `max_radius`). `sigma = 0` is the one-tap identity.
pub(crate) fn gaussian_taps(sigma: f32, max_radius: usize) -> Vec<f32> {
    if sigma <= 0.0 {
        return vec![1.0];
    }
    let radius = ((3.0 * sigma).ceil() as usize).min(max_radius);
    let taps: Vec<f64> = (0..=2 * radius)
        .map(|i| (-((i as f64 - radius as f64).powi(2)) / (2.0 * (sigma as f64).powi(2))).exp())
        .collect();
    let sum: f64 = taps.iter().sum();
    taps.iter().map(|t| (t / sum) as f32).collect()
}

/// Lanes per block and blocks in flight: four independent 8-wide accumulators hide the
/// add latency of the tap loop.
const L: usize = 8;
const B: usize = 4;

/// `out[x] = Σ_k taps[k]·src[x·1 + k·step]` for `x < out.len()` (a multiple of `L`), the taps
/// summed in order; `src` must hold `out.len() + (taps.len() − 1)·step` values.
#[inline(always)]
fn correlate(src: &[f32], step: usize, taps: &[f32], out: &mut [f32]) {
    for (g, group) in out.chunks_mut(B * L).enumerate() {
        let x0 = g * B * L;
        let mut acc = [[0.0f32; L]; B];
        for (k, &t) in taps.iter().enumerate() {
            for (b, a) in acc.iter_mut().enumerate().take(group.len() / L) {
                let at = x0 + b * L + k * step;
                for (lane, v) in a.iter_mut().zip(&src[at..at + L]) {
                    *lane += t * v;
                }
            }
        }
        for (o, a) in group.chunks_exact_mut(L).zip(&acc) {
            o.copy_from_slice(a);
        }
    }
}

/// Separable smoothing of one `w × h` plane in place, treating outside pixels as 0.
#[inline(always)]
pub(crate) fn smooth(plane: &mut [f32], tmp: &mut Vec<f32>, w: usize, h: usize, taps: &[f32]) {
    let r = taps.len() / 2;
    if r == 0 || w == 0 || h == 0 {
        return;
    }
    // Rows are computed L-wide; the columns past w are scratch and never read back.
    let wp = w.div_ceil(L) * L;
    let line_len = wp + 2 * r;
    tmp.clear();
    tmp.resize(line_len + (h + 2 * r) * wp + wp, 0.0);
    let (line, rest) = tmp.split_at_mut(line_len);
    let (cols, row_out) = rest.split_at_mut((h + 2 * r) * wp);
    // Rows: each copied into a zero-padded line and correlated into `cols`, which keeps r
    // zero rows above and below for the column pass.
    for (y, src) in plane.chunks_exact(w).enumerate() {
        line[r..r + w].copy_from_slice(src);
        correlate(line, 1, taps, &mut cols[(y + r) * wp..(y + r + 1) * wp]);
    }
    // Columns: output row y is Σ_k taps[k]·(row y + k − r), whole rows at a time.
    for (y, out) in plane.chunks_exact_mut(w).enumerate() {
        correlate(&cols[y * wp..], wp, taps, row_out);
        out.copy_from_slice(&row_out[..w]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_undoes_the_map() {
        let m = Affine2::about_centre(28, 20, 0.3, 0.2, 1.1, 2.0, -1.5);
        let i = m.inverse().unwrap();
        let id = i.after(&m);
        for (got, want) in [id.a, id.b, id.c, id.d, id.e, id.f].iter().zip([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]) {
            assert!((got - want).abs() < 1e-12, "{id:?}");
        }
    }

    #[test]
    fn identity_parameters_give_the_identity_map() {
        assert_eq!(Affine2::about_centre(28, 28, 0.0, 0.0, 1.0, 0.0, 0.0), Affine2::IDENTITY);
    }

    #[test]
    fn gaussian_taps_are_normalised_and_symmetric() {
        let t = gaussian_taps(4.0, 100);
        assert_eq!(t.len(), 25);
        assert!((t.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(t[0], t[24]);
        assert_eq!(gaussian_taps(0.0, 10), vec![1.0]);
        assert_eq!(gaussian_taps(4.0, 5).len(), 11);
    }

    #[test]
    fn smoothing_a_constant_interior_keeps_it() {
        let (w, h) = (40, 40);
        let mut p = vec![1.0f32; w * h];
        let mut tmp = Vec::new();
        smooth(&mut p, &mut tmp, w, h, &gaussian_taps(2.0, 100));
        assert!((p[20 * w + 20] - 1.0).abs() < 1e-5);
        assert!(p[0] < 0.5, "corner sees zero padding on three sides: {}", p[0]);
    }
}
