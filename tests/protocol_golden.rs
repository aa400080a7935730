//! Golden byte vectors for the wire protocol: the preamble and every message kind, written
//! out byte by byte as `docs/PROTOCOL.md` specifies them, plus the ways malformed or
//! hostile bytes are refused.

use texstream::frame::PixelFormat;
use texstream::protocol::{
    decode, decode_body, decode_preamble, encode, encode_preamble, max_body_len, Capabilities,
    CodedFrameStart, Envelope, FileAccept, FileCancel, FileEnd, FileOffer, FileProgress,
    FileResult, FrameCoding, FrameStart, GoodbyeCode, Hello, Kind, Limits, Message, Ping, Pong,
    ProtocolError, Role, Text, ENVELOPE_LEN, PREAMBLE_LEN,
};

/// Bytes from hex digits; whitespace is ignored so vectors can be grouped by field.
fn hex(digits: &str) -> Vec<u8> {
    let clean: Vec<u8> = digits
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    assert!(
        clean.len() % 2 == 0,
        "odd number of hex digits in {digits:?}"
    );
    clean
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("hex digits are ASCII");
            u8::from_str_radix(text, 16).expect("valid hex digits")
        })
        .collect()
}

fn encoded(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, &mut out);
    out
}

fn limits() -> Limits {
    Limits::default()
}

/// Every message kind with its golden encoding, in kind-code order.
fn golden_table() -> Vec<(Message, Vec<u8>)> {
    vec![
        (
            Message::Hello(Hello {
                role: Role::Viewer,
                capabilities: Capabilities(Capabilities::FRAMES_IN | Capabilities::TEXT),
                name: "cam".to_owned(),
                auth: vec![0xaa, 0xbb],
                instance: 0x0102_0304_0506_0708,
            }),
            hex(concat!(
                "01 15000000",      // hello, body 21 bytes
                "02",               // role: viewer
                "06000000",         // capabilities: FRAMES_IN | TEXT
                "03 63616d",        // name: str8 "cam"
                "0200 aabb",        // auth: bytes16
                "0807060504030201", // instance: u64
            )),
        ),
        (
            Message::Goodbye {
                code: GoodbyeCode::Full,
                reason: "bye".to_owned(),
            },
            hex(concat!(
                "02 06000000", // goodbye, body 6 bytes
                "02",          // code: full
                "0300 627965", // reason: str16 "bye"
            )),
        ),
        (
            Message::Auth { proof: [0xab; 32] },
            hex(concat!(
                "03 20000000", // auth, body 32 bytes
                "abababababababababababababababababababababababababababababababab", // proof
            )),
        ),
        (
            Message::Ping(Ping {
                nonce: 0x0102_0304_0506_0708,
                sent_us: 0x1122_3344_5566_7788,
            }),
            hex(concat!(
                "10 10000000",      // ping, body 16 bytes
                "0807060504030201", // nonce
                "8877665544332211", // sent_us
            )),
        ),
        (
            Message::Pong(Pong {
                nonce: 0x0102_0304_0506_0708,
                ping_sent_us: 0x1122_3344_5566_7788,
                sent_us: 1_234_567_890,
            }),
            hex(concat!(
                "11 18000000",      // pong, body 24 bytes
                "0807060504030201", // nonce
                "8877665544332211", // ping_sent_us, echoed
                "d202964900000000", // sent_us
            )),
        ),
        (
            Message::FrameStart(FrameStart {
                seq: 7,
                width: 2,
                height: 3,
                format: PixelFormat::Bgra8,
                bytes_per_row: 12,
                capture_us: 1_000_000,
                total_len: 36,
                checksum: 0xdead_beef_cafe_f00d,
            }),
            hex(concat!(
                "20 2d000000",      // frame-start, body 45 bytes
                "0700000000000000", // seq
                "02000000",         // width
                "03000000",         // height
                "02",               // format: bgra8
                "0c000000",         // bytes_per_row: 8 + 4 padding
                "40420f0000000000", // capture_us
                "2400000000000000", // total_len = 12 x 3
                "0df0fecaefbeadde", // checksum
            )),
        ),
        (
            Message::FrameChunk {
                seq: 7,
                offset: 12,
                data: vec![1, 2, 3, 4],
            },
            hex(concat!(
                "21 14000000",      // frame-chunk, body 20 bytes
                "0700000000000000", // seq
                "0c00000000000000", // offset
                "01020304",         // payload
            )),
        ),
        (
            Message::FrameAbort { seq: 7 },
            hex(concat!(
                "22 08000000",      // frame-abort, body 8 bytes
                "0700000000000000", // seq
            )),
        ),
        (
            Message::CodedFrameStart(CodedFrameStart {
                start: FrameStart {
                    seq: 8,
                    width: 2,
                    height: 3,
                    format: PixelFormat::Bgra8,
                    bytes_per_row: 12,
                    capture_us: 1_000_000,
                    total_len: 36,
                    checksum: 0xdead_beef_cafe_f00d,
                },
                coding: FrameCoding::Tiles,
                base_seq: 7,
                coded_len: 3,
            }),
            hex(concat!(
                "23 3e000000",      // coded-frame-start, body 62 bytes
                "0800000000000000", // seq
                "02000000",         // width
                "03000000",         // height
                "02",               // format: bgra8
                "0c000000",         // bytes_per_row
                "40420f0000000000", // capture_us
                "2400000000000000", // total_len of the decoded frame
                "0df0fecaefbeadde", // checksum of the decoded frame
                "01",               // coding: tiles
                "0700000000000000", // base_seq
                "0300000000000000", // coded_len
            )),
        ),
        (
            Message::Text(Text {
                sent_us: 1_234_567_890,
                from: "ann".to_owned(),
                body: "hé".to_owned(),
            }),
            hex(concat!(
                "30 0f000000",      // text, body 15 bytes
                "d202964900000000", // sent_us
                "03 616e6e",        // from: str8 "ann"
                "68c3a9",           // body: the rest, UTF-8 "hé"
            )),
        ),
        (
            Message::FileOffer(FileOffer {
                id: 5,
                size: 70_000,
                name: "a.txt".to_owned(),
            }),
            hex(concat!(
                "40 17000000",      // file-offer, body 23 bytes
                "0500000000000000", // id
                "7011010000000000", // size
                "0500 612e747874",  // name: str16 "a.txt"
            )),
        ),
        (
            Message::FileAccept(FileAccept {
                id: 5,
                offset: 65_536,
            }),
            hex(concat!(
                "41 10000000",      // file-accept, body 16 bytes
                "0500000000000000", // id
                "0000010000000000", // offset
            )),
        ),
        (
            Message::FileChunk {
                id: 5,
                offset: 65_536,
                data: vec![0xff, 0x00, 0x7f],
            },
            hex(concat!(
                "42 13000000",      // file-chunk, body 19 bytes
                "0500000000000000", // id
                "0000010000000000", // offset
                "ff007f",           // payload
            )),
        ),
        (
            Message::FileEnd(FileEnd {
                id: 5,
                checksum: 0x0123_4567_89ab_cdef,
            }),
            hex(concat!(
                "43 10000000",      // file-end, body 16 bytes
                "0500000000000000", // id
                "efcdab8967452301", // checksum
            )),
        ),
        (
            Message::FileResult(FileResult {
                id: 5,
                ok: true,
                message: "ok".to_owned(),
            }),
            hex(concat!(
                "44 0d000000",      // file-result, body 13 bytes
                "0500000000000000", // id
                "01",               // ok
                "0200 6f6b",        // message: str16 "ok"
            )),
        ),
        (
            Message::FileCancel(FileCancel {
                id: 5,
                reason: "stop".to_owned(),
            }),
            hex(concat!(
                "45 0e000000",      // file-cancel, body 14 bytes
                "0500000000000000", // id
                "0400 73746f70",    // reason: str16 "stop"
            )),
        ),
        (
            Message::FileProgress(FileProgress {
                id: 5,
                written: 1 << 20,
            }),
            hex(concat!(
                "46 10000000",      // file-progress, body 16 bytes
                "0500000000000000", // id
                "0000100000000000", // written
            )),
        ),
    ]
}

fn decode_err(input: &[u8]) -> ProtocolError {
    decode(input, &limits()).expect_err("these bytes must be refused")
}

#[test]
fn the_table_covers_every_kind_once_in_code_order() {
    let kinds: Vec<Kind> = golden_table().iter().map(|(m, _)| m.kind()).collect();
    assert_eq!(kinds, Kind::ALL.to_vec());
    for (msg, golden) in golden_table() {
        assert_eq!(golden[0], msg.kind() as u8, "{}", msg.kind().name());
    }
}

#[test]
fn preamble_golden() {
    let golden = hex("54 58 53 54 52 4d 0100"); // "TXSTRM", version 1
    assert_eq!(golden.len(), PREAMBLE_LEN);
    assert_eq!(encode_preamble().to_vec(), golden);
    assert_eq!(decode_preamble(&golden), Ok(Some(())));
    for n in 0..PREAMBLE_LEN {
        assert_eq!(
            decode_preamble(&golden[..n]),
            Ok(None),
            "prefix of {n} bytes"
        );
    }
}

#[test]
fn every_kind_encodes_to_its_golden_bytes() {
    for (msg, golden) in golden_table() {
        assert_eq!(encoded(&msg), golden, "encoding of {}", msg.kind().name());
    }
}

#[test]
fn every_golden_decodes_to_its_message_using_all_bytes() {
    for (msg, golden) in golden_table() {
        assert_eq!(
            decode(&golden, &limits()),
            Ok(Some((msg.clone(), golden.len()))),
            "decoding of {}",
            msg.kind().name()
        );
        let env = Envelope::parse(
            golden.first_chunk::<ENVELOPE_LEN>().expect("envelope"),
            &limits(),
        )
        .expect("valid envelope");
        assert_eq!(env.kind, msg.kind());
        assert_eq!(env.body_len as usize, golden.len() - ENVELOPE_LEN);
        assert_eq!(
            decode_body(env.kind, &golden[ENVELOPE_LEN..], &limits()),
            Ok(msg)
        );
    }
}

#[test]
fn every_strict_prefix_of_a_golden_is_incomplete() {
    for (msg, golden) in golden_table() {
        for n in 0..golden.len() {
            assert_eq!(
                decode(&golden[..n], &limits()),
                Ok(None),
                "{} cut to {n} bytes",
                msg.kind().name()
            );
        }
    }
}

#[test]
fn goldens_back_to_back_decode_in_order() {
    let table = golden_table();
    let stream: Vec<u8> = table.iter().flat_map(|(_, g)| g.clone()).collect();
    let mut rest = &stream[..];
    for (msg, golden) in &table {
        let (got, used) = decode(rest, &limits())
            .expect("valid stream")
            .expect("complete message");
        assert_eq!(&got, msg);
        assert_eq!(used, golden.len());
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
}

#[test]
fn unknown_kinds_are_refused_from_the_envelope_alone() {
    for code in [0x00u8, 0x04, 0x12, 0x24, 0x31, 0x47, 0xff] {
        assert_eq!(
            decode(&[code, 0, 0, 0, 0], &limits()),
            Err(ProtocolError::UnknownKind(code))
        );
    }
    for code in 0..=u8::MAX {
        let known = Kind::ALL.iter().any(|k| *k as u8 == code);
        assert_eq!(Kind::from_u8(code).is_some(), known, "code {code:#04x}");
    }
}

#[test]
fn bad_magic_is_refused_as_soon_as_it_differs() {
    let err = decode_preamble(b"HTTP/1.1").expect_err("not texstream");
    assert_eq!(err, ProtocolError::BadMagic { found: *b"HTTP/1" });
    assert!(err.to_string().contains("TXSTRM"), "{err}");
    // The fourth byte already differs: no need to wait for eight.
    assert_eq!(
        decode_preamble(b"TXSX"),
        Err(ProtocolError::BadMagic {
            found: [b'T', b'X', b'S', b'X', 0, 0]
        })
    );
    assert_eq!(decode_preamble(b"TXS"), Ok(None));
}

#[test]
fn version_mismatch_names_both_versions() {
    let err = decode_preamble(&hex("54 58 53 54 52 4d 0200")).expect_err("version 2 is not ours");
    assert_eq!(err, ProtocolError::VersionMismatch { ours: 1, theirs: 2 });
    let text = err.to_string();
    assert!(text.contains("version 2"), "{text}");
    assert!(text.contains("version 1"), "{text}");
    let err = decode_preamble(&hex("54 58 53 54 52 4d ffff")).expect_err("version 65535");
    assert!(err.to_string().contains("version 65535"), "{err}");
}

#[test]
fn an_oversized_body_length_fails_on_the_five_envelope_bytes() {
    let lim = limits();
    for kind in Kind::ALL {
        let limit = max_body_len(kind, &lim);
        let over = u32::try_from(limit + 1).expect("limits fit in u32");
        for claimed in [over, u32::MAX] {
            let mut env = vec![kind as u8];
            env.extend_from_slice(&claimed.to_le_bytes());
            assert_eq!(
                decode(&env, &lim),
                Err(ProtocolError::TooLong {
                    kind: kind.name(),
                    len: claimed.into(),
                    limit,
                }),
                "{} claiming {claimed} bytes",
                kind.name()
            );
        }
        // Exactly at the limit is fine: the decoder waits for the body.
        let mut env = vec![kind as u8];
        env.extend_from_slice(&u32::try_from(limit).expect("fits").to_le_bytes());
        assert_eq!(decode(&env, &lim), Ok(None), "{} at its limit", kind.name());
    }
}

#[test]
fn body_limits_are_the_documented_ones() {
    let lim = limits();
    let expected: [(Kind, u64); 17] = [
        (Kind::Hello, 783),
        (Kind::Goodbye, 1027),
        (Kind::Auth, 32),
        (Kind::Ping, 16),
        (Kind::Pong, 24),
        (Kind::FrameStart, 45),
        (Kind::FrameChunk, 16 + (16 << 20)),
        (Kind::FrameAbort, 8),
        (Kind::CodedFrameStart, 62),
        (Kind::Text, 8 + 256 + (64 << 10)),
        (Kind::FileOffer, 1042),
        (Kind::FileAccept, 16),
        (Kind::FileChunk, 16 + (16 << 20)),
        (Kind::FileEnd, 16),
        (Kind::FileResult, 1035),
        (Kind::FileCancel, 1034),
        (Kind::FileProgress, 16),
    ];
    for (kind, len) in expected {
        assert_eq!(max_body_len(kind, &lim), len, "{}", kind.name());
    }
    assert_eq!(
        lim,
        Limits {
            max_chunk_bytes: 16 << 20,
            max_frame_bytes: 1 << 30,
            max_dimension: 16384,
            max_text_bytes: 64 << 10,
        }
    );
}

#[test]
fn a_chunk_shorter_than_its_head_is_refused_from_the_envelope() {
    for kind in [Kind::FrameChunk, Kind::FileChunk] {
        assert_eq!(
            decode(&[kind as u8, 15, 0, 0, 0], &limits()),
            Err(ProtocolError::Truncated {
                kind: kind.name(),
                field: "offset"
            })
        );
    }
}

fn frame_start(width: u32, height: u32, bytes_per_row: u32, total_len: u64) -> Vec<u8> {
    encoded(&Message::FrameStart(FrameStart {
        seq: 9,
        width,
        height,
        format: PixelFormat::Rgba8,
        bytes_per_row,
        capture_us: 0,
        total_len,
        checksum: 0,
    }))
}

#[test]
fn a_frame_start_declaring_64_gib_is_refused() {
    const GIB_64: u64 = 64 << 30;
    // 65536 x 65536 RGBA: each side is over the 16384 limit.
    assert_eq!(
        decode_err(&frame_start(65536, 65536, 65536 * 4, 16 << 30)),
        ProtocolError::BadDimensions {
            seq: 9,
            width: 65536,
            height: 65536,
            max: 16384
        }
    );
    // A legal height with 4 MiB rows: consistent, but over the 1 GiB frame limit.
    let err = decode_err(&frame_start(1, 16384, 4 << 20, GIB_64));
    assert_eq!(
        err,
        ProtocolError::FrameTooLarge {
            seq: 9,
            total_len: GIB_64,
            limit: 1 << 30
        }
    );
    // A small geometry claiming a 64 GiB payload.
    assert_eq!(
        decode_err(&frame_start(16, 16, 64, GIB_64)),
        ProtocolError::BadTotalLen {
            seq: 9,
            total_len: GIB_64,
            expected: 1024
        }
    );
}

#[test]
fn frame_start_geometry_rules() {
    // The largest legal frame: 16384 x 16384 RGBA, exactly 1 GiB.
    let max = frame_start(16384, 16384, 65536, 1 << 30);
    assert!(matches!(
        decode(&max, &limits()),
        Ok(Some((Message::FrameStart(_), 50)))
    ));
    for (width, height) in [(0, 1), (1, 0), (16385, 1), (1, 16385)] {
        assert!(
            matches!(
                decode_err(&frame_start(
                    width,
                    height,
                    65540,
                    65540 * u64::from(height)
                )),
                ProtocolError::BadDimensions { .. }
            ),
            "{width}x{height}"
        );
    }
    assert_eq!(
        decode_err(&frame_start(10, 2, 39, 78)),
        ProtocolError::BadRowPitch {
            seq: 9,
            width: 10,
            format: PixelFormat::Rgba8,
            bytes_per_row: 39
        }
    );
    // Padding rows are legal; total_len must count them.
    assert!(decode(&frame_start(10, 2, 64, 128), &limits())
        .expect("padded rows are legal")
        .is_some());
    assert_eq!(
        decode_err(&frame_start(10, 2, 64, 80)),
        ProtocolError::BadTotalLen {
            seq: 9,
            total_len: 80,
            expected: 128
        }
    );
    // An unknown pixel format.
    for code in [0u8, 9, 255] {
        let mut bad_format = frame_start(1, 1, 4, 4);
        bad_format[ENVELOPE_LEN + 16] = code;
        assert_eq!(
            decode_err(&bad_format),
            ProtocolError::InvalidValue {
                kind: "frame-start",
                field: "format",
                value: code.into()
            }
        );
    }
}

fn frame_start_in(format: PixelFormat, width: u32, bytes_per_row: u32) -> Vec<u8> {
    encoded(&Message::FrameStart(FrameStart {
        seq: 9,
        width,
        height: 2,
        format,
        bytes_per_row,
        capture_us: 0,
        total_len: u64::from(bytes_per_row) * 2,
        checksum: 0,
    }))
}

#[test]
fn frame_start_golden_in_a_float_format() {
    let msg = Message::FrameStart(FrameStart {
        seq: 7,
        width: 3,
        height: 2,
        format: PixelFormat::Rgb32F,
        bytes_per_row: 40,
        capture_us: 1_000_000,
        total_len: 80,
        checksum: 0xdead_beef_cafe_f00d,
    });
    let bytes = hex(concat!(
        "20 2d000000",      // frame-start, body 45 bytes
        "0700000000000000", // seq
        "03000000",         // width
        "02000000",         // height
        "06",               // format: rgb32f
        "28000000",         // bytes_per_row: 3 x 12 + 4 padding
        "40420f0000000000", // capture_us
        "5000000000000000", // total_len = 40 x 2
        "0df0fecaefbeadde", // checksum
    ));
    assert_eq!(encoded(&msg), bytes);
    assert_eq!(decode(&bytes, &limits()), Ok(Some((msg, bytes.len()))));
}

#[test]
fn a_row_pitch_is_checked_against_the_formats_own_pixel_size() {
    let sizes = [
        (PixelFormat::Rgba8, 4),
        (PixelFormat::Bgra8, 4),
        (PixelFormat::R8, 1),
        (PixelFormat::Rgb8, 3),
        (PixelFormat::R32F, 4),
        (PixelFormat::Rgb32F, 12),
        (PixelFormat::Rgba32F, 16),
        (PixelFormat::Rgba16F, 8),
    ];
    for (format, bytes_per_pixel) in sizes {
        assert_eq!(format.bytes_per_pixel(), bytes_per_pixel, "{format}");
        let tight = 10 * bytes_per_pixel;
        assert!(
            matches!(
                decode(&frame_start_in(format, 10, tight), &limits()),
                Ok(Some((Message::FrameStart(f), _))) if f.format == format
            ),
            "{format}: tight rows are legal"
        );
        assert_eq!(
            decode_err(&frame_start_in(format, 10, tight - 1)),
            ProtocolError::BadRowPitch {
                seq: 9,
                width: 10,
                format,
                bytes_per_row: tight - 1
            },
            "{format}"
        );
    }
    // The reason names the format and its pixel size.
    assert_eq!(
        decode_err(&frame_start_in(PixelFormat::Rgba32F, 10, 159)).to_string(),
        "frame 9: bytes_per_row 159 is less than width 10 x 16 bytes per rgba32f pixel"
    );
    // The largest float frame: 16384 x 16 bytes a row fits the u32 pitch, and 4 GiB is
    // over the default 1 GiB frame limit.
    let huge = encoded(&Message::FrameStart(FrameStart {
        seq: 9,
        width: 16384,
        height: 16384,
        format: PixelFormat::Rgba32F,
        bytes_per_row: 16384 * 16,
        capture_us: 0,
        total_len: 4 << 30,
        checksum: 0,
    }));
    assert_eq!(
        decode_err(&huge),
        ProtocolError::FrameTooLarge {
            seq: 9,
            total_len: 4 << 30,
            limit: 1 << 30
        }
    );
}

#[test]
fn a_body_shorter_than_its_fields_is_truncated() {
    // A ping whose envelope says 8 bytes: sent_us is missing.
    assert_eq!(
        decode_err(&hex("10 08000000 0807060504030201")),
        ProtocolError::Truncated {
            kind: "ping",
            field: "sent_us"
        }
    );
    // A hello whose name claims 5 bytes but the body holds 3.
    assert_eq!(
        decode_err(&hex("01 09000000 02 06000000 05 63616d")),
        ProtocolError::Truncated {
            kind: "hello",
            field: "name"
        }
    );
    // A file result with no ok byte.
    assert_eq!(
        decode_err(&hex("44 08000000 0500000000000000")),
        ProtocolError::Truncated {
            kind: "file-result",
            field: "ok"
        }
    );
}

#[test]
fn bytes_after_the_last_field_are_refused() {
    assert_eq!(
        decode_err(&hex(
            "01 16000000 02 06000000 03 63616d 0200 aabb 0807060504030201 00"
        )),
        ProtocolError::TrailingBytes {
            kind: "hello",
            extra: 1
        }
    );
    assert_eq!(
        decode_err(&hex("45 10000000 0500000000000000 0400 73746f70 ffff")),
        ProtocolError::TrailingBytes {
            kind: "file-cancel",
            extra: 2
        }
    );
}

#[test]
fn invalid_utf8_in_any_text_field_is_refused() {
    let cases = [
        ("text", "body", "30 0d000000 d202964900000000 00 c328 ff ff"),
        ("text", "from", "30 0c000000 d202964900000000 02 c328 41"),
        ("hello", "name", "01 0a000000 02 06000000 02 c328 0000"),
        ("goodbye", "reason", "02 05000000 00 0200 fffe"),
        (
            "file-offer",
            "name",
            "40 13000000 0100000000000000 0000000000000000 0100 80",
        ),
        (
            "file-result",
            "message",
            "44 0c000000 0100000000000000 00 0100 c3",
        ),
        (
            "file-cancel",
            "reason",
            "45 0b000000 0100000000000000 0100 ed",
        ),
    ];
    for (kind, field, bytes) in cases {
        assert_eq!(
            decode_err(&hex(bytes)),
            ProtocolError::InvalidUtf8 { kind, field },
            "{kind}.{field}"
        );
    }
}

#[test]
fn string_length_fields_over_their_limits_are_refused() {
    // auth claims 513 bytes (limit 512), before those bytes are looked at.
    assert_eq!(
        decode_err(&hex("01 08000000 02 00000000 00 0102")),
        ProtocolError::TooLong {
            kind: "hello",
            len: 513,
            limit: 512
        }
    );
    // A file name claiming 65535 bytes (limit 1024).
    assert_eq!(
        decode_err(&hex("40 12000000 0100000000000000 0000000000000000 ffff")),
        ProtocolError::TooLong {
            kind: "file-offer",
            len: 65535,
            limit: 1024
        }
    );
    // A goodbye reason claiming 1025 bytes (limit 1024).
    assert_eq!(
        decode_err(&hex("02 03000000 00 0104")),
        ProtocolError::TooLong {
            kind: "goodbye",
            len: 1025,
            limit: 1024
        }
    );
}

#[test]
fn invalid_enumeration_values_are_refused() {
    assert_eq!(
        decode_err(&hex("01 08000000 09 00000000 00 0000")),
        ProtocolError::InvalidValue {
            kind: "hello",
            field: "role",
            value: 9
        }
    );
    assert_eq!(
        decode_err(&hex("44 0b000000 0500000000000000 02 0000")),
        ProtocolError::InvalidValue {
            kind: "file-result",
            field: "ok",
            value: 2
        }
    );
}

#[test]
fn unknown_goodbye_codes_read_as_other() {
    assert_eq!(
        decode(&hex("02 03000000 07 0000"), &limits()),
        Ok(Some((
            Message::Goodbye {
                code: GoodbyeCode::Other,
                reason: String::new()
            },
            8
        )))
    );
    let codes = [
        (0u8, GoodbyeCode::Normal),
        (1, GoodbyeCode::Kicked),
        (2, GoodbyeCode::Full),
        (3, GoodbyeCode::ProtocolError),
        (4, GoodbyeCode::AuthFailed),
        (5, GoodbyeCode::Timeout),
        (255, GoodbyeCode::Other),
    ];
    for (byte, code) in codes {
        assert_eq!(GoodbyeCode::from_u8(byte), code);
        assert_eq!(code as u8, byte);
    }
}

#[test]
fn enumeration_codes_are_the_documented_ones() {
    let roles = [
        (1u8, Role::Sender),
        (2, Role::Viewer),
        (3, Role::Relay),
        (4, Role::FileClient),
    ];
    for (byte, role) in roles {
        assert_eq!(Role::from_u8(byte), Some(role));
    }
    assert_eq!(Role::from_u8(0), None);
    assert_eq!(Role::from_u8(5), None);
    let formats = [
        (1u8, PixelFormat::Rgba8),
        (2, PixelFormat::Bgra8),
        (3, PixelFormat::R8),
        (4, PixelFormat::Rgb8),
        (5, PixelFormat::R32F),
        (6, PixelFormat::Rgb32F),
        (7, PixelFormat::Rgba32F),
        (8, PixelFormat::Rgba16F),
    ];
    for (byte, format) in formats {
        assert_eq!(PixelFormat::from_u8(byte), Some(format));
        assert_eq!(format as u8, byte);
        assert_eq!(format.needs_formats_capability(), byte > 2, "{format}");
    }
    assert_eq!(PixelFormat::from_u8(0), None);
    assert_eq!(PixelFormat::from_u8(9), None);
    assert_eq!(
        [
            Capabilities::FRAMES_OUT,
            Capabilities::FRAMES_IN,
            Capabilities::TEXT,
            Capabilities::FILES_IN,
            Capabilities::FILE_WINDOW,
            Capabilities::TILES,
            Capabilities::FORMATS,
        ],
        [1, 2, 4, 8, 16, 32, 64]
    );
    assert_eq!(FrameCoding::from_u8(1), Some(FrameCoding::Tiles));
    assert_eq!(FrameCoding::from_u8(0), None);
    assert_eq!(FrameCoding::from_u8(2), None);
}

fn coded_start(width: u32, height: u32, bytes_per_row: u32, coded_len: u64) -> Vec<u8> {
    encoded(&Message::CodedFrameStart(CodedFrameStart {
        start: FrameStart {
            seq: 9,
            width,
            height,
            format: PixelFormat::Rgba8,
            bytes_per_row,
            capture_us: 0,
            total_len: u64::from(bytes_per_row) * u64::from(height),
            checksum: 0,
        },
        coding: FrameCoding::Tiles,
        base_seq: 0,
        coded_len,
    }))
}

#[test]
fn a_coded_frame_start_claiming_more_than_its_frame_can_code_to_is_refused() {
    // 100 x 100 RGBA: one column of tiles (a column reaches to the end of the row), 2 rows.
    let (w, h) = (100u32, 100u32);
    let max = 2 + 2 * 5 + u64::from(w * 4 * h);
    assert!(matches!(
        decode(&coded_start(w, h, w * 4, max), &limits()),
        Ok(Some((Message::CodedFrameStart(_), _)))
    ));
    for coded_len in [max + 1, u64::MAX, 0, 1] {
        assert_eq!(
            decode_err(&coded_start(w, h, w * 4, coded_len)),
            ProtocolError::BadCodedLen {
                seq: 9,
                coded_len,
                max
            },
            "{coded_len}"
        );
    }
    // The frame's own geometry is checked first, as for a frame start.
    assert!(matches!(
        decode_err(&coded_start(65536, 65536, 65536 * 4, 10)),
        ProtocolError::BadDimensions { .. }
    ));
    // An unknown coding.
    let mut bytes = coded_start(w, h, w * 4, 10);
    bytes[5 + 45] = 7;
    assert_eq!(
        decode_err(&bytes),
        ProtocolError::InvalidValue {
            kind: "coded-frame-start",
            field: "coding",
            value: 7
        }
    );
}
