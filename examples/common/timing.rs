//! The timing rule shared by the examples: a warm-up call, then `samples` samples, each of
//! enough calls to last at least 5 ms; the median seconds per call. [`sampled_for`]
//! instead takes as many samples as fill a time budget (at least 5, at most 50), the rule
//! of the anchors' Python harness, so that side-by-side medians cover as much time.

// Not every example that includes this module uses all of it.
#![allow(dead_code)]

use std::time::Instant;

pub fn median_secs(f: impl FnMut(), samples: usize) -> f64 {
    timed(f, |_| samples).median
}

/// Seconds per call of one measurement: the median of its samples (the figure quoted) and
/// the fastest sample (on this shared machine, the closest to an undisturbed run: slow
/// spells stretch some samples, never shorten one).
#[derive(Clone, Copy, Debug)]
pub struct Sampled {
    pub median: f64,
    pub min: f64,
}

/// [`Sampled`] with `samples` samples.
pub fn sampled(f: impl FnMut(), samples: usize) -> Sampled {
    timed(f, |_| samples)
}

/// [`Sampled`] over enough samples to fill `min_time` seconds (at least 5, at most 50
/// samples of at least 5 ms each).
pub fn sampled_for(f: impl FnMut(), min_time: f64) -> Sampled {
    timed(f, |sample_secs| ((min_time / sample_secs).ceil() as usize).clamp(5, 50))
}

/// Warms up, sizes a sample to at least 5 ms of calls, takes `samples(seconds per sample)`
/// samples and returns the median and the fastest seconds per call.
fn timed(mut f: impl FnMut(), samples: impl FnOnce(f64) -> usize) -> Sampled {
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
    Sampled { median: v[v.len() / 2], min: v[0] }
}
