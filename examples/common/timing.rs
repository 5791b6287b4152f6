//! The timing rule shared by the examples: a warm-up call, then `samples` samples, each of
//! enough calls to last at least 5 ms; the median seconds per call.

use std::time::Instant;

pub fn median_secs(mut f: impl FnMut(), samples: usize) -> f64 {
    f();
    let t = Instant::now();
    f();
    let one = t.elapsed().as_secs_f64().max(1e-9);
    let inner = ((5e-3 / one).ceil() as usize).clamp(1, 1_000_000);
    let mut v: Vec<f64> = (0..samples.max(1))
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
