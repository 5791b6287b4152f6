//! Per-thread scratch buffers for the convolution kernels, reused across calls so that the
//! steady state allocates nothing.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH2: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer, grown to at least `len` floats (contents
/// unspecified). A nested call on the same thread gets a fresh buffer instead of panicking.
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_slot(&SCRATCH, len, f)
}

/// A second, independent buffer, for work nested inside [`with_scratch`] (a kernel's packed
/// weights while the padded input is held).
pub(super) fn with_scratch2<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_slot(&SCRATCH2, len, f)
}

fn with_slot<R>(
    slot: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    slot.with(|cell| match cell.try_borrow_mut() {
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
