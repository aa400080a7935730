//! Property tests of the wire protocol: every message survives encode → decode, a stream
//! split at arbitrary points decodes the same, hostile bytes never panic the decoder, and
//! frames reassembled from arbitrary chunkings come out byte-exact and checksum-verified.

use proptest::prelude::*;
use proptest::sample::Index;
use texstream::frame::{Frame, FrameGeometry, FramePool, PixelFormat};
use texstream::protocol::tiles::TileGrid;
use texstream::protocol::{
    checksum, decode, decode_body, decode_preamble, encode, encode_preamble, truncate_utf8,
    Assembled, BulkHead, Capabilities, Checksum, CodedFrameStart, FileAccept, FileCancel, FileEnd,
    FileOffer, FileProgress, FileResult, FrameAssembler, FrameCoding, FrameStart, GoodbyeCode,
    Hello, Kind, Limits, Message, Ping, Pong, ProtocolError, Role, Text, MAX_AUTH_BYTES,
    MAX_FILE_NAME_BYTES, MAX_NAME_BYTES, MAX_REASON_BYTES,
};

const CASES: u32 = 256;

fn limits() -> Limits {
    Limits::default()
}

fn encoded(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, &mut out);
    out
}

/// Any Unicode text of at most `max_chars` characters, cut to `max_bytes` bytes on a
/// character boundary (so multi-byte characters meet the byte limits too).
fn text(max_chars: usize, max_bytes: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=max_chars).prop_map(move |chars| {
        let s: String = chars.into_iter().collect();
        truncate_utf8(&s, max_bytes).to_owned()
    })
}

fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max_len)
}

fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(vec![
        Role::Sender,
        Role::Viewer,
        Role::Relay,
        Role::FileClient,
    ])
}

fn goodbye_code() -> impl Strategy<Value = GoodbyeCode> {
    prop::sample::select(vec![
        GoodbyeCode::Normal,
        GoodbyeCode::Kicked,
        GoodbyeCode::Full,
        GoodbyeCode::ProtocolError,
        GoodbyeCode::AuthFailed,
        GoodbyeCode::Timeout,
        GoodbyeCode::Other,
    ])
}

fn pixel_format() -> impl Strategy<Value = PixelFormat> {
    prop::sample::select(PixelFormat::ALL.to_vec())
}

/// A frame start that passes the default limits: any width and height up to the
/// dimension limit, any row padding, the height cut so the frame stays within 1 GiB.
fn frame_start() -> impl Strategy<Value = FrameStart> {
    let lim = limits();
    (
        any::<u64>(),
        1..=lim.max_dimension,
        any::<u32>(),
        pixel_format(),
        0u32..=4096,
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            move |(seq, width, height_seed, format, padding, capture_us, checksum)| {
                let bytes_per_row = width * format.bytes_per_pixel() + padding;
                let max_height = (lim.max_frame_bytes / u64::from(bytes_per_row))
                    .min(u64::from(lim.max_dimension));
                let height = 1 + (u64::from(height_seed) % max_height) as u32;
                FrameStart {
                    seq,
                    width,
                    height,
                    format,
                    bytes_per_row,
                    capture_us,
                    total_len: u64::from(bytes_per_row) * u64::from(height),
                    checksum,
                }
            },
        )
}

/// Every message kind with random valid field values.
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            role(),
            any::<u32>(),
            text(100, MAX_NAME_BYTES),
            bytes(MAX_AUTH_BYTES),
            any::<u64>()
        )
            .prop_map(|(role, caps, name, auth, instance)| Message::Hello(Hello {
                role,
                capabilities: Capabilities(caps),
                name,
                auth,
                instance,
            })),
        (goodbye_code(), text(300, MAX_REASON_BYTES))
            .prop_map(|(code, reason)| Message::Goodbye { code, reason }),
        any::<[u8; 32]>().prop_map(|proof| Message::Auth { proof }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(nonce, sent_us)| Message::Ping(Ping { nonce, sent_us })),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(nonce, ping_sent_us, sent_us)| {
            Message::Pong(Pong {
                nonce,
                ping_sent_us,
                sent_us,
            })
        }),
        frame_start().prop_map(Message::FrameStart),
        (any::<u64>(), any::<u64>(), bytes(4096))
            .prop_map(|(seq, offset, data)| Message::FrameChunk { seq, offset, data }),
        any::<u64>().prop_map(|seq| Message::FrameAbort { seq }),
        (frame_start(), any::<u64>(), any::<u64>()).prop_map(|(start, base_seq, len_seed)| {
            // Any coded length the frame's geometry allows.
            let grid = TileGrid::new(start.bytes_per_row, start.height, 4).expect("a grid");
            let max = grid.max_coded_len() as u64;
            Message::CodedFrameStart(CodedFrameStart {
                start,
                coding: FrameCoding::Tiles,
                base_seq,
                coded_len: 2 + len_seed % (max - 1),
            })
        }),
        (
            any::<u64>(),
            text(100, MAX_NAME_BYTES),
            text(1000, limits().max_text_bytes as usize)
        )
            .prop_map(|(sent_us, from, body)| Message::Text(Text {
                sent_us,
                from,
                body
            })),
        (any::<u64>(), any::<u64>(), text(300, MAX_FILE_NAME_BYTES))
            .prop_map(|(id, size, name)| Message::FileOffer(FileOffer { id, size, name })),
        (any::<u64>(), any::<u64>())
            .prop_map(|(id, offset)| Message::FileAccept(FileAccept { id, offset })),
        (any::<u64>(), any::<u64>())
            .prop_map(|(id, written)| Message::FileProgress(FileProgress { id, written })),
        (any::<u64>(), any::<u64>(), bytes(4096))
            .prop_map(|(id, offset, data)| Message::FileChunk { id, offset, data }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(id, checksum)| Message::FileEnd(FileEnd { id, checksum })),
        (any::<u64>(), any::<bool>(), text(300, MAX_REASON_BYTES))
            .prop_map(|(id, ok, message)| Message::FileResult(FileResult { id, ok, message })),
        (any::<u64>(), text(300, MAX_REASON_BYTES))
            .prop_map(|(id, reason)| Message::FileCancel(FileCancel { id, reason })),
    ]
}

/// Feeds `stream` to a decoder in pieces of the given sizes (cycled), as a socket reader
/// would: append, decode while complete messages are there, drain what was used.
fn decode_streaming(stream: &[u8], piece_sizes: &[usize]) -> Result<Vec<Message>, ProtocolError> {
    let lim = limits();
    let mut buf = Vec::new();
    let mut preamble_seen = false;
    let mut out = Vec::new();
    let mut fed = 0;
    for size in piece_sizes.iter().cycle() {
        if fed == stream.len() {
            break;
        }
        let end = (fed + size).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        if !preamble_seen {
            if decode_preamble(&buf)?.is_none() {
                continue;
            }
            buf.drain(..encode_preamble().len());
            preamble_seen = true;
        }
        while let Some((msg, used)) = decode(&buf, &lim)? {
            out.push(msg);
            buf.drain(..used);
        }
    }
    assert!(
        buf.is_empty(),
        "{} bytes left over after the stream ended",
        buf.len()
    );
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn decode_inverts_encode_using_every_byte(msg in message()) {
        let bytes = encoded(&msg);
        prop_assert_eq!(decode(&bytes, &limits()), Ok(Some((msg.clone(), bytes.len()))));
        // A message followed by more bytes still uses exactly its own.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0x10, 0xff]);
        prop_assert_eq!(decode(&longer, &limits()), Ok(Some((msg, bytes.len()))));
    }

    #[test]
    fn a_stream_split_anywhere_decodes_to_the_same_messages(
        msgs in proptest::collection::vec(message(), 1..8),
        piece_sizes in proptest::collection::vec(
            prop_oneof![1usize..=8, 1usize..=600, 1usize..=20_000],
            1..16,
        ),
    ) {
        let mut stream = encode_preamble().to_vec();
        for m in &msgs {
            encode(m, &mut stream);
        }
        prop_assert_eq!(decode_streaming(&stream, &piece_sizes), Ok(msgs));
    }

    #[test]
    fn random_bytes_never_panic(input in bytes(512)) {
        let lim = limits();
        let _ = decode_preamble(&input);
        if let Ok(Some((msg, used))) = decode(&input, &lim) {
            prop_assert!(used <= input.len());
            // Whatever was accepted re-encodes to bytes that decode the same.
            let again = encoded(&msg);
            prop_assert_eq!(decode(&again, &lim), Ok(Some((msg, again.len()))));
        }
        for kind in Kind::ALL {
            let _ = decode_body(kind, &input, &lim);
        }
    }

    #[test]
    fn random_bytes_after_a_valid_preamble_never_panic(input in bytes(512)) {
        let mut stream = encode_preamble().to_vec();
        stream.extend_from_slice(&input);
        prop_assert_eq!(decode_preamble(&stream), Ok(Some(())));
        let _ = decode(&stream[encode_preamble().len()..], &limits());
    }

    #[test]
    fn a_valid_envelope_with_a_random_body_never_panics(
        kind in prop::sample::select(Kind::ALL.to_vec()),
        body in bytes(400),
    ) {
        let mut input = vec![kind as u8];
        input.extend_from_slice(&u32::try_from(body.len()).expect("small").to_le_bytes());
        input.extend_from_slice(&body);
        match decode(&input, &limits()) {
            Ok(Some((msg, used))) => {
                prop_assert_eq!(msg.kind(), kind);
                prop_assert_eq!(used, input.len());
            }
            Ok(None) => prop_assert!(false, "a complete message was reported incomplete"),
            Err(_) => {}
        }
        let _ = decode_body(kind, &body, &limits());
    }

    #[test]
    fn a_valid_message_with_one_byte_changed_never_panics(
        msg in message(),
        at in any::<Index>(),
        xor in 1u8..=255,
    ) {
        let mut bytes = encoded(&msg);
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        if let Ok(Some((got, used))) = decode(&bytes, &limits()) {
            prop_assert!(used <= bytes.len());
            let again = encoded(&got);
            prop_assert_eq!(decode(&again, &limits()), Ok(Some((got, again.len()))));
        }
    }
}

/// A random small frame: any width and height, rows padded by 0..64 bytes.
fn random_frame() -> impl Strategy<Value = (FrameGeometry, Vec<u8>, u64)> {
    (
        1u32..=40,
        1u32..=20,
        0u32..=64,
        pixel_format(),
        any::<u64>(),
    )
        .prop_flat_map(|(width, height, padding, format, seq)| {
            let geometry = FrameGeometry {
                width,
                height,
                format,
                bytes_per_row: width * format.bytes_per_pixel() + padding,
            };
            let len = geometry.total_len();
            (
                Just(geometry),
                proptest::collection::vec(any::<u8>(), len),
                Just(seq),
            )
        })
}

fn make_frame(geometry: FrameGeometry, pixels: &[u8], seq: u64) -> Frame {
    let pool = FramePool::new(1);
    let mut buf = pool.take(pixels.len());
    buf.copy_from_slice(pixels);
    Frame::new(geometry, seq, 1_700_000_000_000_000, buf)
}

/// Sends a frame's start and chunks (sizes cycled) through the codec and into an
/// assembler, returning what the last chunk produced; every earlier chunk must leave
/// the frame incomplete.
fn send_through_assembler(
    start: FrameStart,
    payload: &[u8],
    chunk_sizes: &[usize],
) -> Result<Assembled, ProtocolError> {
    let lim = limits();
    let mut asm = FrameAssembler::new(FramePool::new(2));
    let Some((Message::FrameStart(start), _)) =
        decode(&encoded(&Message::FrameStart(start)), &lim)?
    else {
        panic!("a frame start must decode as one");
    };
    asm.start(start);
    let mut offset = 0;
    let mut sizes = chunk_sizes.iter().cycle();
    loop {
        let size = *sizes.next().expect("at least one chunk size");
        let end = (offset + size).min(payload.len());
        let chunk = Message::FrameChunk {
            seq: start.seq,
            offset: offset as u64,
            data: payload[offset..end].to_vec(),
        };
        let Some((
            Message::FrameChunk {
                seq,
                offset: at,
                data,
            },
            _,
        )) = decode(&encoded(&chunk), &lim)?
        else {
            panic!("a frame chunk must decode as one");
        };
        let result = asm.chunk(
            BulkHead {
                id: seq,
                offset: at,
            },
            &data,
        )?;
        offset = end;
        if offset == payload.len() {
            assert_eq!(
                asm.in_progress(),
                None,
                "a finished frame is no longer in progress"
            );
            return Ok(result);
        }
        assert!(
            matches!(result, Assembled::Incomplete),
            "completed after {offset} of {} bytes",
            payload.len()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn frames_reassemble_byte_exact_from_any_chunking(
        (geometry, pixels, seq) in random_frame(),
        chunk_sizes in proptest::collection::vec(1usize..=700, 1..12),
    ) {
        let frame = make_frame(geometry, &pixels, seq);
        let start = frame.meta().start_message();
        match send_through_assembler(start, frame.pixels(), &chunk_sizes) {
            Ok(Assembled::Complete(out)) => {
                prop_assert_eq!(out.pixels(), &pixels[..]);
                prop_assert_eq!(out.meta(), frame.meta());
                let rows: Vec<&[u8]> = out.rows().collect();
                prop_assert_eq!(rows.len(), geometry.height as usize);
                let row_bytes = geometry.width as usize * geometry.format.bytes_per_pixel() as usize;
                prop_assert!(rows.iter().all(|r| r.len() == row_bytes));
            }
            other => prop_assert!(false, "frame did not complete: {:?}", other),
        }
    }

    #[test]
    fn one_changed_payload_byte_fails_the_checksum(
        (geometry, pixels, seq) in random_frame(),
        chunk_sizes in proptest::collection::vec(1usize..=700, 1..12),
        at in any::<Index>(),
        xor in 1u8..=255,
    ) {
        let frame = make_frame(geometry, &pixels, seq);
        let start = frame.meta().start_message();
        let mut corrupted = pixels.clone();
        corrupted[at.index(pixels.len())] ^= xor;
        match send_through_assembler(start, &corrupted, &chunk_sizes) {
            Err(ProtocolError::ChecksumMismatch { seq: s, expected, actual }) => {
                prop_assert_eq!(s, seq);
                prop_assert_eq!(expected, start.checksum);
                prop_assert_ne!(actual, expected);
            }
            other => prop_assert!(false, "expected a checksum mismatch, got {:?}", other),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// The wire checksum is XXH3-64 as a second, independent implementation computes
    /// it, in one call and streamed in arbitrary pieces, at every length class
    /// (short inputs, mid-length, and the striped path past 240 bytes).
    #[test]
    fn the_checksum_is_xxh3_as_another_implementation_computes_it(
        bytes in proptest::collection::vec(any::<u8>(), 0..20_000),
        cuts in proptest::collection::vec(any::<Index>(), 0..8),
    ) {
        let reference = xxhash_rust::xxh3::xxh3_64(&bytes);
        prop_assert_eq!(checksum(&bytes), reference);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut streamed = Checksum::new();
        let mut from = 0;
        for cut in at.into_iter().chain([bytes.len()]) {
            streamed.update(&bytes[from..cut]);
            from = cut;
        }
        prop_assert_eq!(streamed.digest(), reference);
    }
}
