//! Proves that hostile or random bytes never make the decoder allocate past the limits:
//! a counting global allocator records the largest single allocation while decoding, and
//! it never exceeds the input itself, however large the lengths the bytes claim.

// The crate denies unsafe code; this test-only global allocator is the one exception,
// since `GlobalAlloc` is an unsafe trait. It forwards every call to `System` unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use texstream::frame::PixelFormat;
use texstream::protocol::{
    decode, decode_body, decode_preamble, encode, max_body_len, Envelope, FrameStart, Kind, Limits,
    Message, ProtocolError, ENVELOPE_LEN,
};

/// The largest single allocation (or reallocation target) seen while armed.
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the measuring thread's allocations count, so other test threads and the
    /// test harness cannot pollute the measurement.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// Serialises measurements, which share `PEAK_BYTES`.
static MEASURING: Mutex<()> = Mutex::new(());

struct CountingAlloc;

impl CountingAlloc {
    fn record(size: usize) {
        if ARMED.try_with(Cell::get).unwrap_or(false) {
            PEAK_BYTES.fetch_max(size, Ordering::Relaxed);
        }
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

/// Runs `f` and returns its result with the largest single allocation it made.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _one_at_a_time = MEASURING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    PEAK_BYTES.store(0, Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    (out, PEAK_BYTES.load(Ordering::Relaxed))
}

fn limits() -> Limits {
    Limits::default()
}

/// Decodes `input` and checks that no single allocation exceeded the body that is really
/// there, nor the largest body the envelope's kind may have: whatever a length field
/// claims, only bytes present in the input are ever copied.
fn assert_decode_bounded(
    input: &[u8],
    what: &str,
) -> Result<Option<(Message, usize)>, ProtocolError> {
    let bound = match input.first().and_then(|code| Kind::from_u8(*code)) {
        Some(kind) if input.len() >= ENVELOPE_LEN => {
            let kind_max = usize::try_from(max_body_len(kind, &limits())).expect("fits");
            (input.len() - ENVELOPE_LEN).min(kind_max)
        }
        _ => 0,
    };
    let (result, peak) = peak_during(|| decode(input, &limits()));
    assert!(
        peak <= bound,
        "{what}: decoding {} bytes made an allocation of {peak} bytes (bound {bound})",
        input.len()
    );
    result
}

fn envelope(kind: u8, body_len: u32) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&body_len.to_le_bytes());
    out
}

#[test]
fn the_counter_sees_allocations() {
    let (v, peak) = peak_during(|| vec![0u8; 12_345]);
    assert_eq!(v.len(), 12_345);
    assert!(peak >= 12_345, "peak {peak}");
    let (_, peak) = peak_during(|| ());
    assert_eq!(peak, 0);
}

#[test]
fn envelopes_claiming_u32_max_allocate_nothing() {
    for kind in Kind::ALL {
        let mut input = envelope(kind as u8, u32::MAX);
        let env: [u8; ENVELOPE_LEN] = input.clone().try_into().expect("five bytes");
        let (parsed, peak) = peak_during(|| Envelope::parse(&env, &limits()));
        assert!(matches!(parsed, Err(ProtocolError::TooLong { .. })));
        assert_eq!(peak, 0, "{}: parsing the envelope allocated", kind.name());
        // With some body bytes behind it, too.
        input.extend_from_slice(&[0xff; 4096]);
        let result = assert_decode_bounded(&input, kind.name());
        assert!(matches!(result, Err(ProtocolError::TooLong { .. })));
        let (_, peak) = peak_during(|| decode(&input, &limits()));
        assert_eq!(peak, 0, "{}: refusing the envelope allocated", kind.name());
    }
}

#[test]
fn legal_lengths_with_missing_bodies_allocate_nothing() {
    for kind in Kind::ALL {
        let max = u32::try_from(max_body_len(kind, &limits())).expect("fits");
        let mut input = envelope(kind as u8, max);
        // Part of the body, one byte short at least.
        input.resize(ENVELOPE_LEN + (max as usize - 1).min(64), 0x41);
        let (result, peak) = peak_during(|| decode(&input, &limits()));
        assert_eq!(result, Ok(None), "{}", kind.name());
        assert_eq!(peak, 0, "{}: waiting for a body allocated", kind.name());
    }
}

#[test]
fn a_frame_start_claiming_64_gib_allocates_nothing() {
    let claims = [
        (65536, 65536, 65536 * 4, 16u64 << 30),
        (1, 16384, 4 << 20, 64 << 30),
        (16, 16, 64, 64 << 30),
        (16384, 16384, u32::MAX, u64::from(u32::MAX) * 16384),
    ];
    for (width, height, bytes_per_row, total_len) in claims {
        let mut input = Vec::new();
        encode(
            &Message::FrameStart(FrameStart {
                seq: 1,
                width,
                height,
                format: PixelFormat::Rgba8,
                bytes_per_row,
                capture_us: 0,
                total_len,
                checksum: 0,
            }),
            &mut input,
        );
        let (result, peak) = peak_during(|| decode(&input, &limits()));
        assert!(
            result.is_err(),
            "{width}x{height} claiming {total_len} bytes"
        );
        assert_eq!(
            peak, 0,
            "{width}x{height}: refusing the frame start allocated"
        );
    }
}

#[test]
fn string_lengths_claiming_more_than_their_limits_stay_bounded() {
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // hello: role, capabilities, name len 255 (only 4 bytes there), then nothing.
    let mut hello = envelope(0x01, 10);
    hello.extend_from_slice(&[2, 0, 0, 0, 0, 0xff, 1, 2, 3, 4]);
    cases.push(("hello name", hello));
    // hello: empty name, auth claiming 65535 bytes.
    let mut hello = envelope(0x01, 8);
    hello.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0xff, 0xff]);
    cases.push(("hello auth", hello));
    // goodbye: reason claiming 65535 bytes.
    let mut bye = envelope(0x02, 3);
    bye.extend_from_slice(&[0, 0xff, 0xff]);
    cases.push(("goodbye reason", bye));
    // text: from claiming 255 bytes with 3 there.
    let mut text = envelope(0x30, 12);
    text.extend_from_slice(&[0; 8]);
    text.extend_from_slice(&[0xff, b'a', b'b', b'c']);
    cases.push(("text from", text));
    // text: a body claiming the whole 64 KiB limit, then one byte more.
    let over = u32::try_from(max_body_len(Kind::Text, &limits()) + 1).expect("fits");
    let mut text = envelope(0x30, over);
    text.extend_from_slice(&[b'x'; 1000]);
    cases.push(("text body", text));
    // file offer: name claiming 65535 bytes.
    let mut offer = envelope(0x40, 18);
    offer.extend_from_slice(&[0; 16]);
    offer.extend_from_slice(&[0xff, 0xff]);
    cases.push(("file-offer name", offer));
    // file result and cancel: messages claiming 65535 bytes.
    let mut result = envelope(0x44, 11);
    result.extend_from_slice(&[0; 9]);
    result.extend_from_slice(&[0xff, 0xff]);
    cases.push(("file-result message", result));
    let mut cancel = envelope(0x45, 10);
    cancel.extend_from_slice(&[0; 8]);
    cancel.extend_from_slice(&[0xff, 0xff]);
    cases.push(("file-cancel reason", cancel));
    for (what, input) in cases {
        let result = assert_decode_bounded(&input, what);
        assert!(result.is_err(), "{what}: {result:?}");
        let body = &input[ENVELOPE_LEN..];
        let kind = Kind::from_u8(input[0]).expect("known kind");
        let (_, peak) = peak_during(|| decode_body(kind, body, &limits()));
        assert!(
            peak <= body.len(),
            "{what}: decode_body allocated {peak} bytes"
        );
    }
}

/// xorshift64*: deterministic random bytes without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_never_allocate_past_the_input_or_the_limits() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut largest_input = 0;
    let mut overall_peak = 0;
    let mut decoded = 0;
    for i in 0..4000 {
        let len = rng.below(2048) as usize;
        let mut input = rng.bytes(len);
        // Most inputs get a known kind and a plausible body length so that they reach
        // the body parsers rather than dying on the envelope.
        if i % 4 != 0 && input.len() >= ENVELOPE_LEN {
            let kind = Kind::ALL[rng.below(14) as usize];
            input[0] = kind as u8;
            let body_len = match rng.below(3) {
                0 => (input.len() - ENVELOPE_LEN) as u32,
                1 => rng.below(input.len() as u64) as u32,
                _ => rng.next() as u32,
            };
            input[1..ENVELOPE_LEN].copy_from_slice(&body_len.to_le_bytes());
        }
        largest_input = largest_input.max(input.len());
        let result = assert_decode_bounded(&input, "random bytes");
        if matches!(result, Ok(Some(_))) {
            decoded += 1;
        }
        let (_, peak) = peak_during(|| decode_preamble(&input));
        assert_eq!(peak, 0, "checking a preamble allocated");
        for kind in Kind::ALL {
            let ((), peak) = peak_during(|| {
                let _ = decode_body(kind, &input, &limits());
            });
            assert!(
                peak <= input.len(),
                "decode_body({}) of {} bytes allocated {peak}",
                kind.name(),
                input.len()
            );
            overall_peak = overall_peak.max(peak);
        }
    }
    assert!(decoded > 0, "some random inputs should decode");
    // Decoding strings and chunks does allocate: the measurement is live.
    assert!(overall_peak > 0, "no allocation was seen at all");
    assert!(
        overall_peak <= largest_input,
        "peak {overall_peak}, largest input {largest_input}"
    );
}
