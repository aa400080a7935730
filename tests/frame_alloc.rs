//! Steady-state frames allocate nothing: a counting global allocator counts every
//! allocation the measuring thread makes while frames are filled in a warm pool's
//! buffers, shared, re-published and dropped. (`tests/net_alloc.rs` does the same for
//! the whole network path, over every thread.)

// The crate denies unsafe code; this test-only global allocator is the one exception,
// since `GlobalAlloc` is an unsafe trait. It forwards every call to `System` unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use texstream::frame::{Frame, FrameGeometry, FramePool};

thread_local! {
    /// Allocations made by this thread while armed; other test threads do not count.
    static ALLOCATIONS: Cell<Option<usize>> = const { Cell::new(None) };
}

struct CountingAlloc;

impl CountingAlloc {
    fn record() {
        let _ = ALLOCATIONS.try_with(|n| {
            if let Some(count) = n.get() {
                n.set(Some(count + 1));
            }
        });
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::record();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::record();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::record();
        // SAFETY: as for `alloc`; `ptr` came from this allocator, which is `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, which is `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result with the number of allocations it made.
fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATIONS.with(|n| n.set(Some(0)));
    let out = f();
    let count = ALLOCATIONS.with(|n| n.replace(None)).unwrap_or(0);
    (out, count)
}

#[test]
fn frames_from_a_warm_pool_allocate_nothing() {
    let pool = FramePool::new(4);
    let g = FrameGeometry::rgba8(640, 360);
    let filled = |seq: u64| {
        let mut buf = pool.take(g.total_len());
        buf.fill(seq as u8);
        Frame::new(g, seq, 0, buf)
    };
    // Warm-up: two frames alive at once, as a producer and a slow consumer hold them.
    let a = filled(0);
    let b = filled(1);
    drop((a, b));
    let (checksums, allocations) = allocations_during(|| {
        let mut sum = 0u64;
        let mut previous = filled(2);
        for seq in 3..100 {
            let frame = filled(seq);
            let for_a_peer = frame.clone();
            sum = sum.wrapping_add(for_a_peer.meta().checksum);
            previous = frame;
        }
        drop(previous);
        sum
    });
    assert_ne!(checksums, 0);
    assert_eq!(
        allocations, 0,
        "97 frames made, shared and dropped from a warm pool"
    );
}

#[test]
fn republishing_a_frame_allocates_nothing() {
    let pool = FramePool::new(2);
    let g = FrameGeometry::rgba8(64, 64);
    let still = Frame::copied(g, 0, 0, &vec![3u8; g.total_len()], &pool);
    let (last, allocations) = allocations_during(|| {
        let mut last = still.with_seq(1, 1);
        for seq in 2..1000 {
            last = still.with_seq(seq, seq * 10);
        }
        last
    });
    assert_eq!(allocations, 0, "999 re-publications of one still image");
    assert!(last.shares_pixels(&still));
    assert_eq!(last.meta().seq, 999);
}
