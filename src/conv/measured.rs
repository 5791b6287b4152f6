//! [`Algorithm::Measured`]: every algorithm that can run a shape is timed once per shape
//! (and instruction set and thread count) in this process, and the fastest is kept.
//!
//! The candidates run the forward pass on inputs and weights of the plan's shape, each
//! warmed up once and then timed until it has run at least [`MIN_CALLS`] calls and
//! [`MIN_TIME`]; its best call counts (the least disturbed by other work on the machine).
//! `Auto`'s choice is kept unless another algorithm is more than [`MARGIN`] faster, so
//! that timing noise alone does not move the choice away from the heuristic.

use super::{select, Algorithm, Conv2dPlan, ConvOptions};
use crate::error::Result;
use crate::geometry::{Conv2dGeometry, Conv2dParams};
use crate::simd::SimdLevel;
use crate::Tensor;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Timed calls per candidate, at least.
const MIN_CALLS: usize = 3;
/// Time per candidate, at least.
const MIN_TIME: Duration = Duration::from_millis(20);
/// How much faster than `Auto`'s choice another algorithm must be to replace it.
const MARGIN: f64 = 0.05;

/// What a choice depends on.
type Key = (Conv2dGeometry, SimdLevel, usize);

fn cache() -> &'static Mutex<HashMap<Key, Algorithm>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Algorithm>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The measured algorithm for `geo` (cached), timing the candidates if this is the first
/// plan of its key. `params` and `opts` are the plan's.
pub(super) fn choose(
    geo: &Conv2dGeometry,
    params: &Conv2dParams,
    opts: &ConvOptions,
    level: SimdLevel,
) -> Result<Algorithm> {
    let threads = opts.parallelism.threads_for(geo.flops());
    let key = (*geo, level, threads);
    if let Some(&a) = cache().lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return Ok(a);
    }
    let chosen = time_candidates(geo, params, opts, level)?;
    // Two threads may time the same shape at once; the first to finish decides.
    Ok(*cache().lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_insert(chosen))
}

/// The cached choice for `geo`, if one was measured (for tests).
#[cfg(test)]
fn cached(geo: &Conv2dGeometry, level: SimdLevel, threads: usize) -> Option<Algorithm> {
    cache().lock().unwrap_or_else(PoisonError::into_inner).get(&(*geo, level, threads)).copied()
}

fn time_candidates(
    geo: &Conv2dGeometry,
    params: &Conv2dParams,
    opts: &ConvOptions,
    level: SimdLevel,
) -> Result<Algorithm> {
    let heuristic = select(geo, level);
    let (xs, ws) = (geo.input_shape(), geo.weight_shape());
    let x = Tensor::from_fn(&xs, |i| ((i * 37 % 101) as f32 - 50.0) / 50.0)?;
    let w = Tensor::from_fn(&ws, |i| ((i * 13 % 29) as f32 - 14.0) / 140.0)?;
    let mut y = Tensor::for_overwrite(&geo.output_shape())?;
    let mut best: Option<(Algorithm, f64)> = None;
    let mut heuristic_time = f64::INFINITY;
    for algorithm in Algorithm::EXPLICIT {
        if algorithm.unsupported_reason(geo).is_some() {
            continue;
        }
        let plan = Conv2dPlan::build(&xs, &ws, params, &ConvOptions { algorithm, ..*opts }, false)?;
        plan.forward_into(&x, &w, None, false, &mut y)?;
        let (start, mut calls, mut fastest) = (Instant::now(), 0, f64::INFINITY);
        while calls < MIN_CALLS || start.elapsed() < MIN_TIME {
            let t = Instant::now();
            plan.forward_into(&x, &w, None, false, &mut y)?;
            fastest = fastest.min(t.elapsed().as_secs_f64());
            calls += 1;
        }
        if algorithm == heuristic {
            heuristic_time = fastest;
        }
        if best.is_none_or(|(_, t)| fastest < t) {
            best = Some((algorithm, fastest));
        }
    }
    Ok(match best {
        Some((a, t)) if t < heuristic_time * (1.0 - MARGIN) => a,
        _ => heuristic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Padding;

    /// The first measured plan of a shape times the candidates and caches the choice; the
    /// next plan of the shape gets the cached one.
    #[test]
    fn choices_are_cached_per_shape() {
        let p = Conv2dParams::default().padding(Padding::uniform(1));
        let opts = ConvOptions::default().algorithm(Algorithm::Measured);
        let plan = Conv2dPlan::new(&[1, 8, 9, 7], &[8, 8, 3, 3], &p, &opts).unwrap();
        let chosen = plan.algorithm();
        assert!(Algorithm::EXPLICIT.contains(&chosen), "{chosen:?}");
        let threads = opts.parallelism.threads_for(plan.geometry().flops());
        assert_eq!(cached(plan.geometry(), plan.level, threads), Some(chosen));
        let again = Conv2dPlan::new(&[1, 8, 9, 7], &[8, 8, 3, 3], &p, &opts).unwrap();
        assert_eq!(again.algorithm(), chosen);
    }
}
