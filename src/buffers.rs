//! A small cache of large `f32` buffers that tensors give back when dropped.
//!
//! A training step allocates and frees the same few activation-sized buffers (hundreds of KB
//! to a few MB) over and over. The system allocator serves sizes like these with fresh
//! `mmap`s, or trims them back to the kernel, so every step paid page faults and zeroing of
//! fresh pages (about a tenth of a LeNet-5 step). Buffers of at least [`MIN_LEN`] floats are
//! kept here instead, up to [`MAX_BYTES`] in all, and handed out again for requests they fit
//! without wasting more than half. Contents are never observed: callers get a buffer of the
//! requested length that is zeroed or fully copied over.

use std::sync::Mutex;

/// Buffers shorter than this (64 KiB) are left to the allocator, which serves them cheaply.
pub(crate) const MIN_LEN: usize = 1 << 14;
/// At most this many bytes are kept.
pub(crate) const MAX_BYTES: usize = 64 << 20;
/// At most this many buffers are kept.
const MAX_BUFFERS: usize = 64;

struct Cache {
    buffers: Vec<Vec<f32>>,
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache { buffers: Vec::new(), bytes: 0 });

fn bytes_of(v: &Vec<f32>) -> usize {
    v.capacity() * std::mem::size_of::<f32>()
}

/// A cached vector with capacity for at least `len` floats (the smallest capacity in
/// `len..=2·len`), with its old contents, or `None`.
fn take_dirty(len: usize) -> Option<Vec<f32>> {
    if len < MIN_LEN {
        return None;
    }
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let best = cache
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= len && b.capacity() / 2 <= len)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i)?;
    let v = cache.buffers.swap_remove(best);
    cache.bytes -= bytes_of(&v);
    Some(v)
}

/// An empty vector with capacity for at least `len` floats: a cached one when one fits,
/// else `None`.
fn take(len: usize) -> Option<Vec<f32>> {
    take_dirty(len).map(|mut v| {
        v.clear();
        v
    })
}

/// `len` floats whose values are unspecified (a cached buffer's old contents, or zeros),
/// for outputs that the caller overwrites completely: no zeroing pass. Debug builds fill
/// the buffer with NaN, so that a kernel that leaves a cell unwritten fails its tests.
///
/// # Errors
/// `Err(())` when the allocator refuses `len` floats.
pub(crate) fn try_dirty(len: usize) -> Result<Vec<f32>, ()> {
    let mut v = take_dirty(len).unwrap_or_default();
    v.truncate(len);
    v.try_reserve_exact(len - v.len()).map_err(|_| ())?;
    v.resize(len, 0.0);
    if cfg!(debug_assertions) {
        v.fill(f32::NAN);
    }
    Ok(v)
}

/// Keeps `v` for reuse if it is large and the cache has room; frees it otherwise.
pub(crate) fn give(v: Vec<f32>) {
    if v.capacity() < MIN_LEN {
        return;
    }
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.buffers.len() < MAX_BUFFERS && cache.bytes + bytes_of(&v) <= MAX_BYTES {
        cache.bytes += bytes_of(&v);
        cache.buffers.push(v);
        return;
    }
    drop(cache);
    drop(v);
}

/// `len` zeros, in a cached buffer when one fits.
///
/// # Errors
/// `Err(())` when the allocator refuses `len` floats.
pub(crate) fn try_zeroed(len: usize) -> Result<Vec<f32>, ()> {
    let mut v = take(len).unwrap_or_default();
    v.try_reserve_exact(len).map_err(|_| ())?;
    v.resize(len, 0.0);
    Ok(v)
}

/// [`try_dirty`] that aborts like `vec!` if the allocation is refused.
pub(crate) fn dirty(len: usize) -> Vec<f32> {
    let mut v = take_dirty(len).unwrap_or_default();
    v.truncate(len);
    v.resize(len, 0.0);
    if cfg!(debug_assertions) {
        v.fill(f32::NAN);
    }
    v
}

/// A copy of `src`, in a cached buffer when one fits.
pub(crate) fn copied(src: &[f32]) -> Vec<f32> {
    let mut v = take(src.len()).unwrap_or_default();
    v.extend_from_slice(src);
    v
}

/// An empty vector with room for `len` floats, to be filled by `extend`.
pub(crate) fn with_capacity(len: usize) -> Vec<f32> {
    let mut v = take(len).unwrap_or_default();
    v.reserve_exact(len);
    v
}

/// Frees every cached buffer (for programs that want the memory back between phases).
pub fn release_cached_buffers() {
    let buffers = {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.bytes = 0;
        std::mem::take(&mut cache.buffers)
    };
    drop(buffers);
}

/// Bytes held in the cache now.
pub fn cached_bytes() -> usize {
    CACHE.lock().unwrap_or_else(|e| e.into_inner()).bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_zeroed_and_the_cache_stays_bounded() {
        let mut v = dirty(MIN_LEN * 2);
        v.iter_mut().for_each(|x| *x = 7.0);
        give(v);
        // Whatever buffer serves the request, it comes back zeroed.
        let w = try_zeroed(MIN_LEN * 2 - 5).unwrap();
        assert_eq!(w.len(), MIN_LEN * 2 - 5);
        assert!(w.iter().all(|&x| x == 0.0));
        // Debug builds poison buffers for overwriting.
        let d = dirty(MIN_LEN + 1);
        assert_eq!(d.len(), MIN_LEN + 1);
        assert!(!cfg!(debug_assertions) || d.iter().all(|x| x.is_nan()));
        give(d);
        let c = copied(&[1.0; MIN_LEN + 3]);
        assert_eq!(c, vec![1.0; MIN_LEN + 3]);
        give(w);
        give(c);
        for _ in 0..2 * MAX_BUFFERS {
            give(Vec::with_capacity(MIN_LEN));
        }
        assert!(cached_bytes() <= MAX_BYTES);
    }
}
