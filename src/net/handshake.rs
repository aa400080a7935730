//! The start of every connection: preambles and hellos both ways and, when a shared
//! token is set, a challenge–response that proves both sides know it without sending it
//! (HMAC-SHA256 over this connection's two hellos, which carry fresh random nonces, so a
//! recorded handshake cannot be replayed). All of it must finish by one deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::NetError;
use crate::protocol::{
    decode_body, decode_preamble, encode, encode_preamble, Envelope, GoodbyeCode, Hello, Kind,
    Limits, Message, ProtocolError, ENVELOPE_LEN, PREAMBLE_LEN,
};

/// Bytes of the random nonce a hello carries when its sender has a token.
pub const NONCE_LEN: usize = 32;

/// The shared secret of `--token`. Never printed, never sent.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl Token {
    /// A token from its text; leading and trailing white space (a file's newline) is
    /// not part of it.
    pub fn new(text: &str) -> Result<Token, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("the token is empty".to_owned());
        }
        if t.len() > 1024 {
            return Err("the token is longer than 1024 bytes".to_owned());
        }
        Ok(Token(Arc::from(t.as_bytes())))
    }

    /// The token in `path` (its first line).
    pub fn from_file(path: &std::path::Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        Token::new(text.lines().next().unwrap_or(""))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(hidden)")
    }
}

/// Which end of the TCP connection we are: part of what each proof covers, so a proof
/// can never be reflected back to the side that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Dialer,
    Acceptor,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Dialer => b"dialer",
            Side::Acceptor => b"acceptor",
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Dialer => Side::Acceptor,
            Side::Acceptor => Side::Dialer,
        }
    }
}

/// What a finished handshake settled.
#[derive(Clone, Debug)]
pub struct Handshaken {
    pub hello: Hello,
    /// Both sides proved they know the token.
    pub authenticated: bool,
}

/// A stream the handshake can run over: a TCP socket, a TLS session over one, or bytes
/// in memory (the fuzzer's).
pub trait HandshakeStream: Read + Write {
    /// Reads block at most this long (`None`: no limit).
    fn set_read_limit(&mut self, limit: Option<Duration>) -> std::io::Result<()>;
    fn set_write_limit(&mut self, limit: Option<Duration>) -> std::io::Result<()>;
}

impl HandshakeStream for TcpStream {
    fn set_read_limit(&mut self, limit: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(limit)
    }

    fn set_write_limit(&mut self, limit: Option<Duration>) -> std::io::Result<()> {
        self.set_write_timeout(limit)
    }
}

/// The proof that `prover` knows `token`, bound to this connection's two hellos (as
/// encoded on the wire, nonces included).
pub fn auth_proof(
    token: &Token,
    prover: Side,
    dialer_hello: &[u8],
    acceptor_hello: &[u8],
) -> [u8; 32] {
    proof_mac(token, prover, dialer_hello, acceptor_hello)
        .finalize()
        .into_bytes()
        .into()
}

fn proof_mac(
    token: &Token,
    prover: Side,
    dialer_hello: &[u8],
    acceptor_hello: &[u8],
) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&token.0)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(b"texstream auth v1\0");
    mac.update(prover.label());
    for hello in [dialer_hello, acceptor_hello] {
        mac.update(&(hello.len() as u64).to_le_bytes());
        mac.update(hello);
    }
    mac
}

/// Runs our half of the handshake on `stream`: preamble and hello out, the peer's in,
/// and with a token the proofs both ways. Everything must be done by `timeout`: a silent
/// or byte-dribbling peer is dropped when it runs out. A peer that fails to
/// authenticate is told so in a goodbye.
pub fn handshake<S: HandshakeStream>(
    stream: &mut S,
    ours: &Hello,
    side: Side,
    token: Option<&Token>,
    limits: &Limits,
    timeout: Duration,
) -> Result<Handshaken, NetError> {
    let deadline = Instant::now() + timeout;
    stream
        .set_write_limit(Some(timeout))
        .map_err(|e| NetError::io("configuring the socket", e))?;
    let mut hello = ours.clone();
    hello.auth = match token {
        Some(_) => {
            let mut nonce = vec![0u8; NONCE_LEN];
            getrandom::fill(&mut nonce).map_err(|e| {
                NetError::io("drawing a nonce", std::io::Error::other(e.to_string()))
            })?;
            nonce
        }
        None => Vec::new(),
    };
    let mut ours_bytes = Vec::new();
    encode(&Message::Hello(hello), &mut ours_bytes);
    let mut out = encode_preamble().to_vec();
    out.extend_from_slice(&ours_bytes);
    stream
        .write_all(&out)
        .map_err(|e| NetError::io("sending the hello", e))?;

    let mut preamble = [0u8; PREAMBLE_LEN];
    read_by(stream, &mut preamble, deadline, timeout)?;
    decode_preamble(&preamble)?;
    let (theirs, theirs_bytes) = match read_message(stream, limits, deadline, timeout)? {
        (Message::Hello(h), bytes) => (h, bytes),
        (Message::Goodbye { code, reason }, _) => return Err(NetError::Goodbye { code, reason }),
        (other, _) => {
            return Err(ProtocolError::Unexpected {
                kind: other.kind().name(),
                when: "instead of a hello",
            }
            .into())
        }
    };
    if !theirs.auth.is_empty() && theirs.auth.len() != NONCE_LEN {
        return Err(ProtocolError::InvalidValue {
            kind: "hello",
            field: "auth (a nonce is 32 bytes)",
            value: theirs.auth.len() as u64,
        }
        .into());
    }
    let authenticated = match (token, theirs.auth.is_empty()) {
        (None, true) => false,
        (None, false) => {
            let reason = "the peer requires a token: start texstream with --token, \
                          --token-file or TEXSTREAM_TOKEN";
            say_goodbye(stream, "authentication failed: this peer has no token");
            return Err(NetError::AuthFailed(reason.to_owned()));
        }
        (Some(_), true) => {
            say_goodbye(
                stream,
                "authentication failed: this node requires a token (--token, --token-file \
                 or TEXSTREAM_TOKEN)",
            );
            return Err(NetError::AuthFailed("the peer sent no token".to_owned()));
        }
        (Some(token), false) => {
            let (dialer, acceptor) = match side {
                Side::Dialer => (&ours_bytes, &theirs_bytes),
                Side::Acceptor => (&theirs_bytes, &ours_bytes),
            };
            let proof = auth_proof(token, side, dialer, acceptor);
            let mut out = Vec::new();
            encode(&Message::Auth { proof }, &mut out);
            stream
                .write_all(&out)
                .map_err(|e| NetError::io("sending the proof", e))?;
            match read_message(stream, limits, deadline, timeout)?.0 {
                Message::Auth { proof } => {
                    let expected = proof_mac(token, side.other(), dialer, acceptor);
                    if expected.verify_slice(&proof).is_err() {
                        say_goodbye(stream, "authentication failed: wrong token");
                        return Err(NetError::AuthFailed(
                            "the peer's token is not ours".to_owned(),
                        ));
                    }
                    true
                }
                Message::Goodbye { code, reason } => {
                    return Err(NetError::Goodbye { code, reason })
                }
                other => {
                    return Err(ProtocolError::Unexpected {
                        kind: other.kind().name(),
                        when: "instead of the token's proof",
                    }
                    .into())
                }
            }
        }
    };
    stream
        .set_read_limit(None)
        .map_err(|e| NetError::io("configuring the socket", e))?;
    Ok(Handshaken {
        hello: theirs,
        authenticated,
    })
}

/// Best effort: tells the peer why before the connection closes.
fn say_goodbye(stream: &mut impl Write, reason: &str) {
    let mut out = Vec::new();
    encode(
        &Message::Goodbye {
            code: GoodbyeCode::AuthFailed,
            reason: reason.to_owned(),
        },
        &mut out,
    );
    let _ = stream.write_all(&out);
    let _ = stream.flush();
}

/// Turns a peer away during the handshake: reads its preamble and hello (so that our
/// close does not reset the connection under the reply), then answers with our preamble
/// and `goodbye` instead of a hello. The dialer sees a failed handshake and backs off.
pub fn refuse_in_handshake<S: HandshakeStream>(
    stream: &mut S,
    goodbye: &Message,
    limits: &Limits,
    timeout: Duration,
) -> Result<(), NetError> {
    let deadline = Instant::now() + timeout;
    stream
        .set_write_limit(Some(timeout))
        .map_err(|e| NetError::io("configuring the socket", e))?;
    let mut preamble = [0u8; PREAMBLE_LEN];
    read_by(stream, &mut preamble, deadline, timeout)?;
    decode_preamble(&preamble)?;
    read_message(stream, limits, deadline, timeout)?;
    let mut out = encode_preamble().to_vec();
    encode(goodbye, &mut out);
    stream
        .write_all(&out)
        .map_err(|e| NetError::io("sending the goodbye", e))?;
    let _ = stream.flush();
    Ok(())
}

/// Reads one whole message by the deadline; returns it with its bytes as they came.
fn read_message<S: HandshakeStream>(
    stream: &mut S,
    limits: &Limits,
    deadline: Instant,
    timeout: Duration,
) -> Result<(Message, Vec<u8>), NetError> {
    let mut env = [0u8; ENVELOPE_LEN];
    read_by(stream, &mut env, deadline, timeout)?;
    let parsed = Envelope::parse(&env, limits)?;
    // Only a hello, a goodbye or a proof belongs here (at most 1 KiB): anything else is
    // refused on its envelope, before its body is read or room is made for it.
    if !matches!(parsed.kind, Kind::Hello | Kind::Goodbye | Kind::Auth) {
        return Err(ProtocolError::Unexpected {
            kind: parsed.kind.name(),
            when: "during the handshake",
        }
        .into());
    }
    let mut bytes = vec![0u8; ENVELOPE_LEN + parsed.body_len as usize];
    bytes[..ENVELOPE_LEN].copy_from_slice(&env);
    read_by(stream, &mut bytes[ENVELOPE_LEN..], deadline, timeout)?;
    let msg = decode_body(parsed.kind, &bytes[ENVELOPE_LEN..], limits)?;
    Ok((msg, bytes))
}

/// Fills `buf` before `deadline`, however the peer spreads its bytes.
fn read_by<S: HandshakeStream>(
    stream: &mut S,
    buf: &mut [u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<(), NetError> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NetError::HandshakeTimeout(timeout));
        }
        stream
            .set_read_limit(Some(left))
            .map_err(|e| NetError::io("configuring the socket", e))?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(NetError::ClosedInHandshake("peer")),
            Ok(n) => filled += n,
            Err(e) => {
                if let Some(e) = read_failure(e, timeout) {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// What a failed read during the handshake means: `None` to read again (interrupted),
/// a timeout once the deadline's read limit ran out, or the I/O error.
pub(super) fn read_failure(e: std::io::Error, timeout: Duration) -> Option<NetError> {
    match e.kind() {
        std::io::ErrorKind::Interrupted => None,
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            Some(NetError::HandshakeTimeout(timeout))
        }
        _ => Some(NetError::io("reading the handshake", e)),
    }
}

/// Bytes in memory as a handshake stream: reads come from `input`, writes are kept.
struct MemStream<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl Read for MemStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for MemStream<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Bounded like a socket buffer: the fuzzer's inputs are small.
        if self.output.len() > 1 << 20 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl HandshakeStream for MemStream<'_> {
    fn set_read_limit(&mut self, _: Option<Duration>) -> std::io::Result<()> {
        Ok(())
    }

    fn set_write_limit(&mut self, _: Option<Duration>) -> std::io::Result<()> {
        Ok(())
    }
}

/// The entry point for fuzzing the handshake: runs the accepting side's handshake, with
/// or without a token, against `input` as everything the peer sends. Returns what the
/// handshake returned; it must never panic, hang or allocate past the limits.
pub fn fuzz_handshake(input: &[u8], token: Option<&Token>) -> Result<Handshaken, NetError> {
    let mut stream = MemStream {
        input,
        output: Vec::new(),
    };
    let ours = Hello {
        role: crate::protocol::Role::Sender,
        capabilities: crate::protocol::Capabilities(crate::protocol::Capabilities::TEXT),
        name: "fuzz".to_owned(),
        auth: Vec::new(),
        instance: 1,
    };
    handshake(
        &mut stream,
        &ours,
        Side::Acceptor,
        token,
        &Limits::default(),
        Duration::from_secs(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Capabilities, Role};

    fn hello(name: &str) -> Hello {
        Hello {
            role: Role::Viewer,
            capabilities: Capabilities(Capabilities::TEXT),
            name: name.to_owned(),
            auth: Vec::new(),
            instance: 7,
        }
    }

    /// Runs both sides over a real loopback connection.
    fn pair(
        dialer_token: Option<&str>,
        acceptor_token: Option<&str>,
    ) -> (Result<Handshaken, NetError>, Result<Handshaken, NetError>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor_token = acceptor_token.map(|t| Token::new(t).expect("token"));
        let acceptor = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            handshake(
                &mut s,
                &hello("acceptor"),
                Side::Acceptor,
                acceptor_token.as_ref(),
                &Limits::default(),
                Duration::from_secs(2),
            )
        });
        let mut s = TcpStream::connect(addr).expect("connect");
        let token = dialer_token.map(|t| Token::new(t).expect("token"));
        let d = handshake(
            &mut s,
            &hello("dialer"),
            Side::Dialer,
            token.as_ref(),
            &Limits::default(),
            Duration::from_secs(2),
        );
        drop(s);
        (d, acceptor.join().expect("acceptor thread"))
    }

    #[test]
    fn the_same_token_authenticates_both_sides() {
        let (d, a) = pair(Some("s3cret"), Some("s3cret"));
        let (d, a) = (d.expect("dialer"), a.expect("acceptor"));
        assert!(d.authenticated && a.authenticated);
        assert_eq!(d.hello.name, "acceptor");
        assert_eq!(a.hello.name, "dialer");
        assert_eq!(d.hello.auth.len(), NONCE_LEN);
    }

    #[test]
    fn no_token_on_either_side_is_an_open_connection() {
        let (d, a) = pair(None, None);
        assert!(!d.expect("dialer").authenticated);
        assert!(!a.expect("acceptor").authenticated);
    }

    #[test]
    fn a_wrong_or_missing_token_fails_on_both_sides_with_a_reason() {
        let (d, a) = pair(Some("one"), Some("two"));
        assert!(
            matches!(a, Err(NetError::AuthFailed(ref r)) if r.contains("not ours")),
            "{a:?}"
        );
        assert!(
            matches!(&d, Err(NetError::AuthFailed(_)))
                || matches!(
                    &d,
                    Err(NetError::Goodbye {
                        code: GoodbyeCode::AuthFailed,
                        ..
                    })
                ),
            "{d:?}"
        );

        let (d, a) = pair(None, Some("two"));
        assert!(
            matches!(a, Err(NetError::AuthFailed(ref r)) if r.contains("no token")),
            "{a:?}"
        );
        assert!(
            matches!(d, Err(NetError::AuthFailed(ref r)) if r.contains("requires a token")),
            "{d:?}"
        );
    }

    #[test]
    fn a_proof_is_bound_to_the_side_the_token_and_both_hellos() {
        let t = Token::new("k").expect("token");
        let base = auth_proof(&t, Side::Dialer, b"hello d", b"hello a");
        assert_ne!(base, auth_proof(&t, Side::Acceptor, b"hello d", b"hello a"));
        assert_ne!(base, auth_proof(&t, Side::Dialer, b"hello d2", b"hello a"));
        assert_ne!(base, auth_proof(&t, Side::Dialer, b"hello d", b"hello a2"));
        assert_ne!(
            base,
            auth_proof(
                &Token::new("k2").expect("token"),
                Side::Dialer,
                b"hello d",
                b"hello a"
            )
        );
        // Length prefixes: moving bytes between the two hellos changes the proof.
        assert_ne!(base, auth_proof(&t, Side::Dialer, b"hello", b" dhello a"));
    }

    #[test]
    fn a_replayed_proof_fails_against_a_fresh_nonce() {
        // A peer that replays a whole recorded dialer side (preamble, hello with its old
        // nonce, and the old proof) meets a new acceptor nonce: the proof does not match.
        let t = Token::new("s3cret").expect("token");
        let mut recorded = encode_preamble().to_vec();
        let mut h = hello("dialer");
        h.auth = vec![9; NONCE_LEN];
        let mut dialer_bytes = Vec::new();
        encode(&Message::Hello(h), &mut dialer_bytes);
        recorded.extend_from_slice(&dialer_bytes);
        // The proof as it was for the acceptor hello of the recorded connection.
        let old_acceptor_hello = b"an older acceptor hello with another nonce";
        let proof = auth_proof(&t, Side::Dialer, &dialer_bytes, old_acceptor_hello);
        encode(&Message::Auth { proof }, &mut recorded);
        let result = fuzz_handshake(&recorded, Some(&t));
        assert!(matches!(result, Err(NetError::AuthFailed(_))), "{result:?}");
    }

    #[test]
    fn the_fuzz_entry_point_handles_garbage_and_a_valid_peer() {
        assert!(fuzz_handshake(b"", None).is_err());
        assert!(fuzz_handshake(b"TXSTRM\x01\x00garbage", None).is_err());
        let mut ok = encode_preamble().to_vec();
        encode(&Message::Hello(hello("peer")), &mut ok);
        let done = fuzz_handshake(&ok, None).expect("a valid hello");
        assert_eq!(done.hello.name, "peer");
        assert!(!done.authenticated);
    }

    #[test]
    fn tokens_are_trimmed_checked_and_never_printed() {
        let t = Token::new("  abc\n").expect("token");
        assert_eq!(&*t.0, b"abc");
        assert_eq!(format!("{t:?}"), "Token(hidden)");
        assert!(Token::new(" \n").is_err());
        assert!(Token::new(&"x".repeat(2000)).is_err());
    }
}
