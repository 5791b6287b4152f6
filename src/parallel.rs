//! The one module that names `rayon`. Kernels say how much work they have and how it splits;
//! this module decides whether threads pay and runs the parts.
//!
//! Threads come from the caller's rayon pool: wrap a call in `ThreadPool::install` to cap
//! them. Work below [`MIN_PARALLEL_FLOPS`] runs on the calling thread with no rayon call at
//! all. Kernels split work so that every output element is computed by the same instruction
//! sequence whatever the number of parts, so results are bitwise identical for any thread
//! count.

/// How a kernel may use threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Parallelism {
    /// Use the current rayon pool when the problem is large enough (the default).
    #[default]
    Auto,
    /// Stay on the calling thread.
    Sequential,
    /// Use at most this many threads of the current pool (when the problem is large enough).
    Threads(usize),
}

/// Below this many floating-point operations a kernel runs on the calling thread: about
/// 20 µs of work on one core, where a fork-join would cost a noticeable fraction.
pub const MIN_PARALLEL_FLOPS: f64 = 2.0e6;

impl Parallelism {
    /// The number of parts to split a problem of `flops` operations into.
    pub fn threads_for(self, flops: f64) -> usize {
        if flops < MIN_PARALLEL_FLOPS {
            return 1;
        }
        let pool = rayon::current_num_threads().max(1);
        let pool = match BUDGET.get() {
            0 => pool,
            budget => pool.min(budget),
        };
        match self {
            Parallelism::Auto => pool,
            Parallelism::Sequential => 1,
            Parallelism::Threads(t) => t.clamp(1, pool),
        }
    }
}

thread_local! {
    /// Threads a kernel on this thread may use (0: the whole pool). Set while this thread
    /// runs one of several shards that already occupy the pool, so kernels inside a shard
    /// do not fork again.
    static BUDGET: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f` with kernels on this thread limited to `threads` threads.
fn with_budget<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUDGET.set(self.0);
        }
    }
    let _restore = Restore(BUDGET.replace(threads.max(1)));
    f()
}

/// The threads each of `parts` concurrent shards may give its kernels.
fn shard_budget(parts: usize) -> usize {
    let pool = match BUDGET.get() {
        0 => rayon::current_num_threads(),
        budget => budget,
    };
    (pool / parts.max(1)).max(1)
}

/// `f(i, &mut items[i])` for every item, in parallel (one rayon task per item), results in
/// item order. Kernels inside `f` share the pool's threads among the items (with two
/// threads and two items, each runs on its own thread without forking again). Results do
/// not depend on the thread count as long as `f`'s do not.
pub(crate) fn map_shards<T: Send, R: Send>(items: &mut [T], f: impl Fn(usize, &mut T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    let budget = shard_budget(items.len());
    if items.len() <= 1 || rayon::current_num_threads() <= 1 || BUDGET.get() == 1 {
        return items.iter_mut().enumerate().map(|(i, t)| with_budget(budget, || f(i, t))).collect();
    }
    items.par_iter_mut().enumerate().map(|(i, t)| with_budget(budget, || f(i, t))).collect()
}

/// Runs `f(part)` for every `part` in `0..parts`, in parallel when `parts > 1`.
///
/// The calling thread takes parts itself, beside at most `threads − 1` helpers (the
/// thread budget of the caller's pool). Helpers that finished a fork-join stay awake for
/// [`HOT_WAIT`] and join the next one within a fraction of a microsecond (module `hot`);
/// otherwise the parts go through rayon. Which thread runs a part never matters: the
/// parts are independent.
pub fn for_each_part(parts: usize, f: impl Fn(usize) + Sync + Send) {
    use rayon::prelude::*;
    // (Only asked for two or more parts: the question starts rayon's global pool.)
    let threads = || match BUDGET.get() {
        0 => rayon::current_num_threads(),
        budget => budget.min(rayon::current_num_threads()),
    };
    match parts {
        0 => {}
        1 => f(0),
        _ if threads() <= 1 => (0..parts).for_each(f),
        _ if hot::run(parts, threads().min(parts) - 1, &f) => {}
        _ if rayon::current_thread_index().is_some() => {
            // Another fork-join holds the hot slot. Rayon may skip the parts after a
            // panicking one; each part's panic is caught instead, so every other part
            // still runs, and the first panic is raised afterwards (as `hot::run` does).
            let panic = std::sync::Mutex::new(None);
            (0..parts).into_par_iter().for_each(|p| {
                if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(p))) {
                    panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                }
            });
            if let Some(e) = panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
                std::panic::resume_unwind(e);
            }
        }
        _ => from_outside(parts, &f),
    }
}

/// `f(items, block)` for `parts` runs of whole items of `buf` (`item` floats each; channel
/// planes, say), side by side: part `p` gets items `n·p/parts .. n·(p+1)/parts` of the
/// `n = buf.len() / item` and their floats.
pub(crate) fn for_each_block(
    buf: &mut [f32],
    item: usize,
    parts: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync + Send,
) {
    let n = buf.len().checked_div(item).unwrap_or(0);
    let buf = &mut buf[..n * item];
    let parts = parts.clamp(1, n.max(1));
    if parts == 1 {
        return f(0..n, buf);
    }
    let shared = SharedMut::new(buf);
    for_each_part(parts, |part| {
        let (i0, i1) = (n * part / parts, n * (part + 1) / parts);
        // SAFETY: items i0..i1 (i1 ≤ n) of the buffer are this part's alone, and the buffer
        // (n·item floats) outlives the parallel section.
        let block = unsafe { std::slice::from_raw_parts_mut(shared.get().add(i0 * item), (i1 - i0) * item) };
        f(i0..i1, block);
    });
}

/// How long a helper thread stays awake, spinning, after its last fork-join.
///
/// Waking a sleeping rayon worker costs 20–500 µs on a virtual machine (the other vCPU is
/// halted and the hypervisor must run it again): measured here, two 200 µs parts forked
/// back to back ran on two threads in only 76% of calls, and a 100 µs sequential gap
/// between fork-joins made two threads slower than one. OpenMP runtimes spin for the same
/// reason (for much longer by default). The cost is up to this much CPU time on an idle
/// core after a burst of parallel calls.
pub const HOT_WAIT: std::time::Duration = std::time::Duration::from_micros(1000);

/// Fork-joins served by helpers that spin between them.
///
/// One task at a time is published in [`hot::SLOT`] (a second, concurrent caller falls back
/// to rayon). The caller takes parts from the task's counter; helpers (rayon jobs that run
/// [`hot::helper`]) claim one of the task's seats and take parts from the same counter;
/// after a task they spin for [`HOT_WAIT`], watching the slot, then return to rayon. The
/// task lives on the caller's stack: the caller retracts it from the slot, then waits until
/// no helper is between reading the slot and registering as a user ([`hot::READERS`]), and
/// until every user has left, before it returns.
mod hot {
    use std::any::Any;
    use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    pub(super) struct Task {
        /// The parts' function, its lifetime erased: valid until the caller returns, which
        /// it does only after every helper has stopped using the task.
        f: *const (dyn Fn(usize) + Sync),
        parts: usize,
        generation: u64,
        next: AtomicUsize,
        done: AtomicUsize,
        seats: AtomicUsize,
        users: AtomicUsize,
        panic: Mutex<Option<Box<dyn Any + Send>>>,
    }

    /// The published task, or null.
    pub(super) static SLOT: AtomicPtr<Task> = AtomicPtr::new(std::ptr::null_mut());
    /// The generation of the last published task (helpers look at each task once).
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    /// Helpers between loading [`SLOT`] and registering as users of what they loaded.
    pub(super) static READERS: AtomicUsize = AtomicUsize::new(0);
    /// Helpers alive (spinning or working).
    static HELPERS: AtomicUsize = AtomicUsize::new(0);

    impl Task {
        /// Takes parts until none are left; a panicking part is kept for the caller and the
        /// other parts still run.
        fn work(&self) {
            loop {
                let part = self.next.fetch_add(1, SeqCst);
                if part >= self.parts {
                    return;
                }
                // SAFETY: `f` outlives the task's use (see the field).
                let f = unsafe { &*self.f };
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(part))) {
                    let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(p);
                }
                self.done.fetch_add(1, SeqCst);
            }
        }

        fn claim_seat(&self) -> bool {
            self.seats.fetch_update(SeqCst, SeqCst, |s| s.checked_sub(1)).is_ok()
        }
    }

    /// Runs `f` over `parts` with up to `helpers` helper threads; `false` (nothing run) if
    /// another task holds the slot.
    pub(super) fn run(parts: usize, helpers: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        // SAFETY: the transmute only erases the lifetime; `f` is used until this function
        // returns and no longer (see `Task::f`).
        let f: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(f) };
        let generation = GENERATION.fetch_add(1, SeqCst) + 1;
        let task = Task {
            f,
            parts,
            generation,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            seats: AtomicUsize::new(helpers),
            users: AtomicUsize::new(0),
            panic: Mutex::new(None),
        };
        let ptr = &task as *const Task as *mut Task;
        if SLOT.compare_exchange(std::ptr::null_mut(), ptr, SeqCst, SeqCst).is_err() {
            return false;
        }
        // From here the task must not be freed while a helper may use it: the guard's drop
        // (normal return or unwinding) retracts it and waits for the helpers to let go.
        let published = Published(&task);
        // Spinning helpers join within a microsecond; start rayon jobs for the rest.
        for _ in HELPERS.load(SeqCst)..helpers {
            rayon::spawn(helper);
        }
        task.work();
        // The helpers' last parts usually end within microseconds: spin, then yield.
        let start = Instant::now();
        let mut spins = 0u32;
        while task.done.load(SeqCst) < parts {
            spins = spins.wrapping_add(1);
            // (The clock only every 64 turns: it is a system call on some VMs.)
            if !spins.is_multiple_of(64) || start.elapsed() < Duration::from_micros(200) {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        drop(published);
        let panic = task.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
        true
    }

    /// A task in [`SLOT`]; dropping it retracts the task and waits until no helper is
    /// between reading the slot and registering, and none still uses the task.
    struct Published<'a>(&'a Task);

    impl Drop for Published<'_> {
        fn drop(&mut self) {
            SLOT.store(std::ptr::null_mut(), SeqCst);
            while READERS.load(SeqCst) != 0 || self.0.users.load(SeqCst) != 0 {
                std::hint::spin_loop();
            }
        }
    }

    /// A helper: joins published tasks (each at most once), and returns after
    /// [`super::HOT_WAIT`] without one, or at once if the task it was started for (which
    /// was published before) is over and nothing else is running.
    fn helper() {
        HELPERS.fetch_add(1, SeqCst);
        let mut seen = 0u64;
        let mut idle = Instant::now();
        let mut served = false;
        let mut spins = 0u32;
        loop {
            let generation = GENERATION.load(SeqCst);
            if generation != seen && !SLOT.load(SeqCst).is_null() {
                READERS.fetch_add(1, SeqCst);
                let p = SLOT.load(SeqCst);
                // SAFETY: the task's caller retracts it before waiting for READERS to drop
                // to zero, so a task loaded while registered as a reader is alive; it stays
                // alive while `users` counts this helper.
                let joined = (!p.is_null()).then(|| unsafe { &*p }).filter(|t| {
                    seen = t.generation;
                    t.claim_seat() && {
                        t.users.fetch_add(1, SeqCst);
                        true
                    }
                });
                READERS.fetch_sub(1, SeqCst);
                if let Some(t) = joined {
                    t.work();
                    t.users.fetch_sub(1, SeqCst);
                    served = true;
                    idle = Instant::now();
                    continue;
                }
            }
            // Started for a task that ended before this helper ran: not needed.
            let late = !served && SLOT.load(SeqCst).is_null();
            spins = spins.wrapping_add(1);
            if late || (spins.is_multiple_of(64) && idle.elapsed() >= super::HOT_WAIT) {
                break;
            }
            // Serve the pool's other jobs meanwhile (kernels and users that call rayon
            // directly would otherwise wait for this thread until it stops spinning).
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                std::hint::spin_loop();
            }
        }
        HELPERS.fetch_sub(1, SeqCst);
    }
}

/// [`for_each_part`] called from a thread outside the rayon pool (a user's main thread).
/// Rayon would inject the parts and put this thread to sleep until they are done: two
/// cross-thread wake-ups, measured at ~20 µs a call on this VM (an empty two-part fork-join:
/// 23 µs from the main thread, 0.05 µs inside the pool). Instead this thread takes parts
/// itself from a shared counter, beside `threads − 1` helper jobs, and spins briefly for the
/// parts still running when the counter runs out (measured: 100 µs of work split in two took
/// 69.6 µs through rayon's injection, 52.7 µs this way). Which thread runs a part never
/// matters: the parts are independent.
fn from_outside(parts: usize, f: &(impl Fn(usize) + Sync)) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let helpers = rayon::current_num_threads().min(parts).saturating_sub(1);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    // Counts a part as done even if `f` panics, so that the wait below ends and the
    // scope can carry the panic to the caller.
    struct Done<'a>(&'a AtomicUsize);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Release);
        }
    }
    let work = || loop {
        let part = next.fetch_add(1, Ordering::Relaxed);
        if part >= parts {
            break;
        }
        let _done = Done(&done);
        f(part);
    };
    rayon::in_place_scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|_| work());
        }
        work();
        // The helpers' last parts usually end within microseconds: spin for them rather
        // than sleep. Past 200 µs the scope's own (sleeping) wait takes over.
        let start = std::time::Instant::now();
        while done.load(Ordering::Acquire) < parts && start.elapsed() < std::time::Duration::from_micros(200) {
            std::hint::spin_loop();
        }
    });
}

/// The number of threads in the current rayon pool.
pub fn current_threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `f` inside a fresh rayon pool of `threads` threads (for examples and tests that
/// compare thread counts).
///
/// # Panics
/// If the operating system cannot start the threads; [`try_with_threads`] returns an error
/// instead.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    try_with_threads(threads, f).expect("start a rayon pool")
}

/// [`with_threads`] for callers that must not panic.
///
/// # Errors
/// [`crate::Error::Parameter`] if the pool cannot be started (the reason from rayon).
pub fn try_with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> crate::Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| crate::Error::param("threads", threads, format!("cannot start a rayon pool: {e}")))?;
    Ok(pool.install(f))
}

/// The address of a buffer that parallel parts write disjoint cells of.
///
/// Carrying it between threads is safe; writing through [`SharedMut::get`] is `unsafe`,
/// and each write site states why its cells lie inside the buffer and why no other part
/// touches them. The buffer must outlive the parallel section (the callers borrow it
/// mutably for the whole section).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SharedMut(*mut f32);

// SAFETY: the wrapper only carries an address; every access through it is an unsafe write
// whose caller guarantees that no two threads touch the same cell.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The address of `buf`.
    pub(crate) fn new(buf: &mut [f32]) -> Self {
        SharedMut(buf.as_mut_ptr())
    }

    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every part runs exactly once, from outside any pool (the caller's own thread takes
    /// parts beside the helpers) and inside one (rayon's own split).
    #[test]
    fn every_part_runs_once() {
        for parts in [2, 3, 7, 64] {
            let run = || {
                let counts: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                for_each_part(parts, |p| {
                    counts[p].fetch_add(1, Ordering::Relaxed);
                });
                counts.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>()
            };
            assert!(rayon::current_thread_index().is_none(), "the test thread is outside the pool");
            assert_eq!(run(), vec![1; parts], "{parts} parts from outside the pool");
            assert_eq!(with_threads(2, run), vec![1; parts], "{parts} parts inside a pool");
        }
    }

    /// Forks from several user threads at once (one holds the hot slot, the others go
    /// through rayon), and forks nested inside parts: every part still runs exactly once.
    #[test]
    fn concurrent_and_nested_forks_run_every_part_once() {
        let check = |parts: usize| {
            let counts: Vec<AtomicUsize> = (0..parts * parts).map(|_| AtomicUsize::new(0)).collect();
            for_each_part(parts, |p| {
                for_each_part(parts, |q| {
                    counts[p * parts + q].fetch_add(1, Ordering::Relaxed);
                })
            });
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "{parts}×{parts} nested parts");
        };
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for i in 0..200 {
                        check(2 + (t + i) % 5);
                    }
                });
            }
        });
        with_threads(2, || (0..200).for_each(|i| check(2 + i % 5)));
    }

    /// Helpers never take a caller past its pool's size, even while helpers woken by a
    /// larger pool are still spinning.
    #[test]
    fn helpers_respect_the_callers_pool() {
        use std::collections::HashSet;
        use std::sync::Mutex;
        let threads_used = |parts: usize| {
            let ids = Mutex::new(HashSet::new());
            for_each_part(parts, |_| {
                ids.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(std::time::Duration::from_micros(200));
            });
            ids.into_inner().unwrap().len()
        };
        for _ in 0..20 {
            assert!(with_threads(2, || threads_used(8)) <= 2);
            assert_eq!(with_threads(1, || threads_used(8)), 1);
        }
    }

    /// A panicking part reaches the caller as a panic (after the other parts finish),
    /// whichever thread ran it.
    #[test]
    fn a_panicking_part_panics_the_caller() {
        for bad in [0, 1, 5] {
            let finished = AtomicUsize::new(0);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for_each_part(6, |p| {
                    assert!(p != bad, "part {p} fails");
                    finished.fetch_add(1, Ordering::Relaxed);
                })
            }));
            assert!(result.is_err(), "part {bad}'s panic was lost");
            assert_eq!(finished.load(Ordering::Relaxed), 5, "the other parts still ran");
            let inside = with_threads(2, || {
                finished.store(0, Ordering::Relaxed);
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    for_each_part(6, |p| {
                        assert!(p != bad, "part {p} fails");
                        finished.fetch_add(1, Ordering::Relaxed);
                    })
                }))
            });
            assert!(inside.is_err(), "part {bad}'s panic was lost inside a pool");
            assert_eq!(finished.load(Ordering::Relaxed), 5, "the other parts still ran inside a pool");
        }
    }

    /// A fork-join nested in another's part finds the hot slot taken and goes through
    /// rayon; a panicking part there too reaches the caller only after every other part
    /// ran (rayon alone may skip the parts after a panicking one).
    #[test]
    fn a_panicking_part_of_a_nested_fork_join_lets_the_others_run() {
        for bad in [0, 3, 7] {
            let (finished, panics) = (AtomicUsize::new(0), AtomicUsize::new(0));
            with_threads(2, || {
                for_each_part(2, |_| {
                    let inner = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        for_each_part(8, |p| {
                            assert!(p != bad, "part {p} fails");
                            finished.fetch_add(1, Ordering::Relaxed);
                        })
                    }));
                    if inner.is_err() {
                        panics.fetch_add(1, Ordering::Relaxed);
                    }
                })
            });
            assert_eq!(panics.load(Ordering::Relaxed), 2, "part {bad}'s panic was lost in a nested fork-join");
            assert_eq!(finished.load(Ordering::Relaxed), 2 * 7, "the other parts still ran (bad part {bad})");
        }
    }
}
