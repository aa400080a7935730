//! Nothing is allocated per frame on the whole network path: a frame published from a
//! warm pool goes through the sender's link writer, over loopback TCP, through the
//! viewer's reader and reassembly into the viewer's own pool, and out of its frame
//! channel, a thousand times, and a counting global allocator — counting every thread
//! of the process, the nodes' own included — sees no allocation at all meanwhile; the
//! same with frames coded on the way (coded by the writer, rebuilt by the reader).
//!
//! `TEXSTREAM_ALLOC_TRACE=1` prints a backtrace of the first few allocations it counts,
//! to find one that crept in.

// The crate denies unsafe code; this test-only global allocator is the one exception,
// since `GlobalAlloc` is an unsafe trait. It forwards every call to `System` unchanged.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::*;
use texstream::frame::{FrameGeometry, FramePool};
use texstream::net::{Codec, Node};
use texstream::protocol::Role;

/// Whether allocations are being counted (by every thread).
static ARMED: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static TRACED: AtomicUsize = AtomicUsize::new(0);
/// `TEXSTREAM_ALLOC_TRACE` is set (read before arming: reading it allocates).
static TRACE: AtomicBool = AtomicBool::new(false);
const TRACE_AT_MOST: usize = 4;

thread_local! {
    /// Set while this thread prints a trace, so the trace's own allocations are not
    /// traced in turn.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

struct CountingAlloc;

impl CountingAlloc {
    fn record(size: usize) {
        if !ARMED.load(SeqCst) {
            return;
        }
        ALLOCATIONS.fetch_add(1, SeqCst);
        if !TRACE.load(SeqCst) {
            return;
        }
        let _ = TRACING.try_with(|tracing| {
            if tracing.get() || TRACED.fetch_add(1, SeqCst) >= TRACE_AT_MOST {
                return;
            }
            tracing.set(true);
            let thread = std::thread::current();
            eprintln!(
                "allocation of {size} bytes on thread {:?}:\n{}",
                thread.name(),
                std::backtrace::Backtrace::force_capture()
            );
            tracing.set(false);
        });
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::record(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::record(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::record(new_size);
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

/// Publishes frame `seq` from `pool` and waits, without allocating, for the viewer to
/// hand it out; checks its header and drops it (its pixels go back to the viewer's
/// pool). Returns whether the frame came within `patience`.
fn one_frame(
    sender: &texstream::net::Node,
    viewer: &texstream::net::Node,
    pool: &FramePool,
    geometry: FrameGeometry,
    seq: u64,
    patience: Duration,
) -> bool {
    let mut buf = pool.take(geometry.total_len());
    buf.fill(seq as u8);
    let frame = texstream::frame::Frame::new(geometry, seq, capture_us_for(seq), buf);
    sender.publish(&frame);
    drop(frame);
    let deadline = Instant::now() + patience;
    loop {
        if let Ok(got) = viewer.frames().try_recv() {
            assert_eq!(got.meta().seq, seq, "frames arrive in order, none skipped");
            assert!(
                got.pixels().iter().all(|&b| b == seq as u8),
                "frame {seq}: every byte equal"
            );
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::yield_now();
    }
}

#[test]
fn a_thousand_frames_cross_the_network_path_without_one_allocation() {
    // In turn, not in two tests: the allocator counts every thread of the process.
    for codec in [Codec::Raw, Codec::Tiles] {
        a_thousand_frames(codec);
    }
}

/// Raw frames, or frames coded by the sender's writer (a delta against the last frame,
/// LZ4 or QOI tiles) and rebuilt by the viewer's reader against its last frame.
fn a_thousand_frames(codec: Codec) {
    // Several chunks per frame (0.9 MB against 256 KiB chunks).
    let geometry = FrameGeometry::rgba8(640, 360);
    let mut config = fast_config(Role::Sender);
    config.listen = Some("127.0.0.1:0".to_owned());
    config.codec = codec;
    let sender = Node::start(config).expect("sender starts");
    let viewer = dialing_viewer("viewer", listen_addr(&sender));
    wait_connected(&sender, "the viewer connects");
    wait_connected(&viewer, "the viewer is connected");
    // A producer's pool in its steady state holds the buffers it cycles through: four,
    // made at once up front (a frame the sender's writer still holds while the next
    // is filled needs a second, and so on).
    let pool = FramePool::new(4);
    let held: Vec<_> = (0..4).map(|_| pool.take(geometry.total_len())).collect();
    drop(held);
    assert_eq!(pool.idle(), 4);
    // Warm-up: pools, channels, socket buffers and the reassembly state reach their
    // steady size.
    for seq in 1..=100 {
        assert!(
            one_frame(&sender, &viewer, &pool, geometry, seq, PATIENCE),
            "warm-up frame {seq} arrives"
        );
    }

    let counted = 1_000;
    TRACE.store(std::env::var_os("TEXSTREAM_ALLOC_TRACE").is_some(), SeqCst);
    ALLOCATIONS.store(0, SeqCst);
    ARMED.store(true, SeqCst);
    let mut arrived = 0;
    for seq in 101..=100 + counted {
        if !one_frame(&sender, &viewer, &pool, geometry, seq, PATIENCE) {
            break;
        }
        arrived += 1;
    }
    ARMED.store(false, SeqCst);
    let allocations = ALLOCATIONS.load(SeqCst);

    assert_eq!(arrived, counted, "every frame arrived");
    assert_eq!(
        viewer.stats().checksum_failures,
        0,
        "every frame verified against its checksum"
    );
    assert_eq!(
        allocations,
        0,
        "{}: {allocations} allocations in the whole process over {counted} frames sent, \
         received and reassembled (TEXSTREAM_ALLOC_TRACE=1 shows where)",
        codec.name()
    );
    let coded = sender.peers()[0].frames_coded;
    match codec {
        Codec::Raw => assert_eq!(coded, 0),
        _ => assert!(coded >= 1000, "{coded} frames coded"),
    }
}
