//! Per-thread scratch buffers for the convolution kernels, reused across calls so that the
//! steady state allocates nothing.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer, grown to at least `len` floats (contents
/// unspecified). A nested call on the same thread gets a fresh buffer instead of panicking.
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

thread_local! {
    static INDEX_SCRATCH: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// As [`with_scratch`], for a buffer of offsets.
pub(super) fn with_index_scratch<R>(len: usize, f: impl FnOnce(&mut [usize]) -> R) -> R {
    INDEX_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0; len]),
    })
}
