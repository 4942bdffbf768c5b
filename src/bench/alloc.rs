//! The `fota` binary's global allocator: mimalloc, counting. It counts net heap bytes allocated
//! by the engine's runtime threads, apart from every other thread (the simulated fleet, the
//! load generator, the harness), so `fota bench scale` can tell the engine's memory from the
//! simulator's in one process. Counting is off until `enable`; until then an allocation costs
//! one relaxed atomic load more than mimalloc's.
//!
//! Why mimalloc, not the system's (glibc's): a profile of the task scheduler at 300,000
//! devices spent 40 % of its thread's time in glibc's malloc and free (searching and merging
//! its bins of free chunks, which grow with the heap); BENCHMARKS.md section 9 has the
//! figures before and after.
//!
//! Bytes are the sizes asked for: the allocator's own overhead per allocation is not included
//! (the resident-memory figure beside it is).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

#[global_allocator]
static COUNTING: Counting = Counting;

/// Whether allocations are counted.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Net bytes the engine's threads allocated since `enable`.
static ENGINE_NET: AtomicI64 = AtomicI64::new(0);

thread_local! {
    /// Whether this thread is one of the engine runtime's.
    static ENGINE_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// The allocator every call goes to.
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc, counting.
struct Counting;

// SAFETY: every call is passed to mimalloc unchanged; counting touches only atomics
// and a const-initialised thread-local without a destructor, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is mimalloc's.
        let pointer = unsafe { INNER.alloc(layout) };
        if !pointer.is_null() {
            count(layout.size() as i64);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let pointer = unsafe { INNER.alloc_zeroed(layout) };
        if !pointer.is_null() {
            count(layout.size() as i64);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from this allocator, that is from mimalloc.
        unsafe { INNER.dealloc(pointer, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`.
        let moved = unsafe { INNER.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        moved
    }
}

fn count(bytes: i64) {
    if ENABLED.load(Ordering::Relaxed) && ENGINE_THREAD.try_with(Cell::get).unwrap_or(false) {
        ENGINE_NET.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Starts counting.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Marks the calling thread as one of the engine's (a runtime's `on_thread_start`).
pub fn mark_engine_thread() {
    ENGINE_THREAD.with(|engine| engine.set(true));
}

/// Net bytes the engine's threads allocated since counting started: allocations minus frees,
/// both made on engine threads.
pub fn engine_net_bytes() -> i64 {
    ENGINE_NET.load(Ordering::Relaxed)
}
