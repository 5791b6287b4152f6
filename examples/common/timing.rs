//! The timing rule shared by the examples: a warm-up call, then `samples` samples, each of
//! enough calls to last at least 5 ms; the median seconds per call. [`median_secs_for`]
//! instead takes as many samples as fill a time budget (at least 5, at most 50), the rule
//! of the anchors' Python harness, so that side-by-side medians cover as much time.

use std::time::Instant;

pub fn median_secs(f: impl FnMut(), samples: usize) -> f64 {
    timed(f, |_| samples)
}

/// The median seconds per call over enough samples to fill `min_time` seconds (at least 5,
/// at most 50 samples of at least 5 ms each).
#[allow(dead_code)] // not every example that includes this module uses it
pub fn median_secs_for(f: impl FnMut(), min_time: f64) -> f64 {
    timed(f, |sample_secs| ((min_time / sample_secs).ceil() as usize).clamp(5, 50))
}

/// Warms up, sizes a sample to at least 5 ms of calls, takes `samples(seconds per sample)`
/// samples and returns the median seconds per call.
fn timed(mut f: impl FnMut(), samples: impl FnOnce(f64) -> usize) -> f64 {
    f();
    let t = Instant::now();
    f();
    let one = t.elapsed().as_secs_f64().max(1e-9);
    let inner = ((5e-3 / one).ceil() as usize).clamp(1, 1_000_000);
    let mut v: Vec<f64> = (0..samples(one * inner as f64).max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            t.elapsed().as_secs_f64() / inner as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
