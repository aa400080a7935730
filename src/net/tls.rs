//! TLS 1.3 (rustls) under the texstream protocol: certificates (a self-signed one made
//! once and kept in the user's config folder, or one given with `--tls-cert/--tls-key`),
//! trust on first use for the dialer (each address's certificate fingerprint is
//! remembered, SSH-style, and a changed one is refused loudly), and a session split into
//! a reader half and a writer half so that the link's two threads share it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::handshake::HandshakeStream;
use super::link::lock;
use super::NetError;

/// Where TLS material comes from.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// A certificate chain (PEM) to present when accepting; with `key`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Folder for the self-signed certificate made when none is given
    /// (default: the user's config folder, `~/.config/texstream/tls`).
    pub dir: Option<PathBuf>,
    /// The known-hosts file: the certificate fingerprint first seen at each dialed
    /// address (default: `~/.config/texstream/known_hosts`).
    pub known_hosts: Option<PathBuf>,
}

/// A node's TLS set-up, made once at start.
#[derive(Clone)]
pub struct Tls {
    provider: Arc<CryptoProvider>,
    server: Arc<rustls::ServerConfig>,
    known_hosts: Arc<KnownHosts>,
    /// Our certificate's fingerprint, as peers see it.
    pub fingerprint: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({})", self.fingerprint)
    }
}

/// The user's config folder for texstream (`$XDG_CONFIG_HOME/texstream`, else
/// `~/.config/texstream`).
pub fn config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("texstream");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".config").join("texstream")
}

/// `SHA256:` and the hex of the certificate's digest, in pairs.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{}", hex.join(":"))
}

impl Tls {
    pub fn new(options: &TlsOptions) -> Result<Tls, NetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (certs, key) = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => load_pair(cert, key)?,
            (None, None) => {
                let dir = options
                    .dir
                    .clone()
                    .unwrap_or_else(|| config_dir().join("tls"));
                own_certificate(&dir)?
            }
            _ => {
                return Err(NetError::Tls(
                    "--tls-cert and --tls-key go together".to_owned(),
                ))
            }
        };
        let fingerprint = certs.first().map(fingerprint).unwrap_or_default();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(tls_error)?;
        let known_hosts = options
            .known_hosts
            .clone()
            .unwrap_or_else(|| config_dir().join("known_hosts"));
        Ok(Tls {
            provider,
            server: Arc::new(server),
            known_hosts: Arc::new(KnownHosts {
                path: known_hosts,
                write: Mutex::new(()),
            }),
            fingerprint,
        })
    }

    /// The accepting side's TLS handshake on `sock`, by `timeout`.
    pub(crate) fn accept(
        &self,
        sock: TcpStream,
        timeout: Duration,
    ) -> Result<TlsSession, NetError> {
        refuse_plain_peer(&sock, timeout)?;
        let conn = rustls::ServerConnection::new(self.server.clone()).map_err(tls_error)?;
        TlsSession::handshake(rustls::Connection::Server(conn), sock, timeout, None)
    }

    /// The dialing side's TLS handshake with `target` (as dialed: the key of its
    /// known-hosts line), by `timeout`.
    pub(crate) fn connect(
        &self,
        sock: TcpStream,
        target: &str,
        timeout: Duration,
    ) -> Result<TlsSession, NetError> {
        let verifier = Arc::new(PinVerifier {
            target: target.to_owned(),
            known_hosts: self.known_hosts.clone(),
            provider: self.provider.clone(),
            seen: Mutex::new(None),
        });
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        // The certificate is pinned per address; the name is not what is checked.
        let name = ServerName::try_from("texstream").map_err(|e| NetError::Tls(e.to_string()))?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(tls_error)?;
        let session = TlsSession::handshake(
            rustls::Connection::Client(conn),
            sock,
            timeout,
            Some(target),
        )?;
        // Only now, with the handshake's signature checked, is a first-seen
        // certificate remembered.
        let seen = lock(&verifier.seen).take();
        if let Some(Seen::First(fp)) = seen {
            self.known_hosts.remember(target, &fp)?;
            tracing::warn!(
                "first TLS connection to {target}: its certificate {fp} is now remembered in {}",
                self.known_hosts.path.display()
            );
        }
        Ok(session)
    }
}

/// A peer that starts with a texstream preamble in the clear is not using TLS: it gets
/// a goodbye it can read, saying so, instead of a TLS alert it cannot.
fn refuse_plain_peer(sock: &TcpStream, timeout: Duration) -> Result<(), NetError> {
    let setup = |e| NetError::io("configuring the socket", e);
    sock.set_read_timeout(Some(timeout)).map_err(setup)?;
    let mut first = [0u8; 6];
    let deadline = Instant::now() + timeout;
    loop {
        match sock.peek(&mut first) {
            Ok(n) if n < first.len() && n > 0 && first[..n] == crate::protocol::MAGIC[..n] => {
                // A plain preamble may arrive in pieces: wait for the rest.
                if Instant::now() >= deadline {
                    return Err(NetError::HandshakeTimeout(timeout));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(_) => break,
            Err(e) => {
                if let Some(e) = super::handshake::read_failure(e, timeout) {
                    return Err(e);
                }
            }
        }
    }
    if first != crate::protocol::MAGIC {
        return Ok(());
    }
    let mut out = crate::protocol::encode_preamble().to_vec();
    crate::protocol::encode(
        &crate::protocol::Message::Goodbye {
            code: crate::protocol::GoodbyeCode::Other,
            reason: "this node uses TLS: use --tls on this side too".to_owned(),
        },
        &mut out,
    );
    // Read what the peer sent first, so that closing does not reset the connection
    // under the goodbye.
    let mut sink = [0u8; 1024];
    let mut reader = sock;
    let _ = reader.read(&mut sink);
    let _ = (&*sock).write_all(&out);
    Err(NetError::Tls(
        "the peer is not using TLS (it started in the clear): run it with --tls too".to_owned(),
    ))
}

fn tls_error(e: rustls::Error) -> NetError {
    NetError::Tls(e.to_string())
}

fn load_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), NetError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            NetError::Tls(format!(
                "cannot read the certificate {}: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(NetError::Tls(format!(
            "no certificate in {}",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| NetError::Tls(format!("cannot read the key {}: {e}", key.display())))?;
    Ok((certs, key))
}

/// Our self-signed certificate in `dir`, made on first use (the key readable by the
/// user only).
fn own_certificate(
    dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), NetError> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| NetError::Tls(format!("cannot create {}: {e}", dir.display())))?;
        let made = rcgen::generate_simple_self_signed(vec!["texstream".to_owned()])
            .map_err(|e| NetError::Tls(format!("cannot make a certificate: {e}")))?;
        write_private(&key, made.signing_key.serialize_pem().as_bytes())?;
        std::fs::write(&cert, made.cert.pem())
            .map_err(|e| NetError::Tls(format!("cannot write {}: {e}", cert.display())))?;
        tracing::info!(
            "made a self-signed TLS certificate {}: {}",
            cert.display(),
            fingerprint(made.cert.der())
        );
    }
    load_pair(&cert, &key)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| NetError::Tls(format!("cannot write {}: {e}", path.display())))
}

/// The known-hosts file: `ADDRESS SHA256:…` lines.
struct KnownHosts {
    path: PathBuf,
    write: Mutex<()>,
}

impl KnownHosts {
    fn lookup(&self, target: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        text.lines().find_map(|line| {
            let (addr, fp) = line.trim().split_once(' ')?;
            (addr == target).then(|| fp.trim().to_owned())
        })
    }

    fn remember(&self, target: &str, fp: &str) -> Result<(), NetError> {
        let _g = lock(&self.write);
        if self.lookup(target).is_some() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| writeln!(f, "{target} {fp}"))
            .map_err(|e| NetError::Tls(format!("cannot write {}: {e}", self.path.display())))
    }
}

#[derive(Debug)]
enum Seen {
    Known,
    First(String),
}

/// Trust on first use: the certificate must be the one remembered for the address, or
/// the address must be new.
#[derive(Debug)]
struct PinVerifier {
    target: String,
    known_hosts: Arc<KnownHosts>,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<Seen>>,
}

impl std::fmt::Debug for KnownHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KnownHosts({})", self.path.display())
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        let seen = match self.known_hosts.lookup(&self.target) {
            Some(known) if known == fp => Seen::Known,
            Some(known) => {
                return Err(rustls::Error::General(format!(
                    "THE CERTIFICATE OF {} HAS CHANGED: it was {known}, it is now {fp}. \
                     Someone may be impersonating it. If its certificate really changed, \
                     remove its line from {} and connect again",
                    self.target,
                    self.known_hosts.path.display()
                )))
            }
            None => Seen::First(fp),
        };
        *lock(&self.seen) = Some(seen);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("only TLS 1.3 is used".to_owned()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An established TLS session, during the texstream handshake (one thread).
pub(crate) struct TlsSession {
    conn: rustls::Connection,
    sock: TcpStream,
    /// The peer's certificate fingerprint (what the dialer checked).
    pub peer_fingerprint: Option<String>,
}

impl TlsSession {
    fn handshake(
        mut conn: rustls::Connection,
        mut sock: TcpStream,
        timeout: Duration,
        target: Option<&str>,
    ) -> Result<TlsSession, NetError> {
        let deadline = Instant::now() + timeout;
        let setup = |e| NetError::io("configuring the socket", e);
        sock.set_write_timeout(Some(timeout)).map_err(setup)?;
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NetError::HandshakeTimeout(timeout));
            }
            sock.set_read_timeout(Some(left)).map_err(setup)?;
            if let Err(e) = conn.complete_io(&mut sock) {
                // Send the alert rustls queued, so the peer learns why (a plain peer
                // then sees TLS bytes and says so).
                while conn.wants_write() {
                    if conn.write_tls(&mut sock).is_err() {
                        break;
                    }
                }
                return Err(explain_tls_failure(e, target));
            }
        }
        let peer_fingerprint = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(fingerprint);
        Ok(TlsSession {
            conn,
            sock,
            peer_fingerprint,
        })
    }

    /// Splits the session for the link's reader and writer threads.
    /// The three share one socket (one file descriptor per connection).
    /// The writer's socket writes keep the link's deadlines (`liveness`).
    pub(crate) fn split(
        self,
        liveness: Arc<super::liveness::Liveness>,
    ) -> Result<(TlsReader, TlsWriter, Arc<TcpStream>), NetError> {
        let setup = |e| NetError::io("configuring the socket", e);
        self.sock.set_read_timeout(None).map_err(setup)?;
        let conn = Arc::new(Mutex::new(self.conn));
        let sock = Arc::new(self.sock);
        let reader = TlsReader {
            conn: conn.clone(),
            sock: sock.clone(),
            buf: vec![0u8; 256 << 10],
            start: 0,
            end: 0,
            eof: false,
        };
        let writer = TlsWriter {
            conn,
            sock: sock.clone(),
            out: Vec::with_capacity(1 << 20),
            liveness,
        };
        Ok((reader, writer, sock))
    }
}

/// Says what a failed TLS handshake most likely means.
fn explain_tls_failure(e: std::io::Error, target: Option<&str>) -> NetError {
    let text = e.to_string();
    let hint = if text.contains("InvalidContentType")
        || text.contains("invalid content type")
        || text.contains("CorruptMessage")
    {
        " (is the peer running without --tls?)"
    } else {
        ""
    };
    match target {
        Some(t) => NetError::Tls(format!("TLS with {t} failed: {text}{hint}")),
        None => NetError::Tls(format!("TLS failed: {text}{hint}")),
    }
}

impl Read for TlsSession {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            while self.conn.wants_write() {
                self.conn.write_tls(&mut self.sock)?;
            }
            if self.conn.read_tls(&mut self.sock)? == 0 {
                return Ok(0);
            }
            self.conn
                .process_new_packets()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        }
    }
}

impl Write for TlsSession {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        self.flush()?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}

impl HandshakeStream for TlsSession {
    fn set_read_limit(&mut self, limit: Option<Duration>) -> std::io::Result<()> {
        self.sock.set_read_timeout(limit)
    }

    fn set_write_limit(&mut self, limit: Option<Duration>) -> std::io::Result<()> {
        self.sock.set_write_timeout(limit)
    }
}

/// The reading half: reads the socket without holding the session, then decrypts under
/// its lock. It never writes: TLS records the session wants sent (a key update, say) go
/// out with the writer's next write, at the latest with the next keepalive ping.
pub(crate) struct TlsReader {
    conn: Arc<Mutex<rustls::Connection>>,
    sock: Arc<TcpStream>,
    /// Ciphertext read from the socket, `start..end` not yet given to the session.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl Read for TlsReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            {
                let mut conn = lock(&self.conn);
                match conn.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // The peer closed TCP without a close_notify: every texstream
                    // message is framed, so a cut inside one is still seen as such.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if self.start < self.end || self.eof {
                    let mut pending = &self.buf[self.start..self.end];
                    let n = conn.read_tls(&mut pending)?;
                    self.start += n;
                    conn.process_new_packets()
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                    if n == 0 {
                        // The end of the stream, or the peer's close_notify: whatever
                        // plaintext came before it was read above.
                        return match conn.reader().read(out) {
                            Ok(n) => Ok(n),
                            Err(e) if e.kind() == std::io::ErrorKind::Other => Err(e),
                            Err(_) => Ok(0),
                        };
                    }
                    continue;
                }
            }
            let n = loop {
                match (&*self.sock).read(&mut self.buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            self.start = 0;
            self.end = n;
            self.eof = n == 0;
        }
    }
}

/// The writing half: encrypts under the session's lock, writes the records outside it.
/// Only this half writes to the socket.
pub(crate) struct TlsWriter {
    conn: Arc<Mutex<rustls::Connection>>,
    sock: Arc<TcpStream>,
    out: Vec<u8>,
    liveness: Arc<super::liveness::Liveness>,
}

impl TlsWriter {
    fn send_records(&mut self) -> std::io::Result<()> {
        self.out.clear();
        {
            let mut conn = lock(&self.conn);
            while conn.wants_write() {
                conn.write_tls(&mut self.out)?;
            }
        }
        self.liveness.write_all(&self.sock, &self.out)
    }
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = lock(&self.conn).writer().write(buf)?;
        self.send_records()?;
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let n = lock(&self.conn).writer().write_vectored(bufs)?;
        self.send_records()?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_records()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> TlsOptions {
        TlsOptions {
            dir: Some(dir.join("tls")),
            known_hosts: Some(dir.join("known_hosts")),
            ..TlsOptions::default()
        }
    }

    #[test]
    fn a_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Tls::new(&options(dir.path())).expect("tls");
        let again = Tls::new(&options(dir.path())).expect("tls");
        assert_eq!(first.fingerprint, again.fingerprint);
        assert!(first.fingerprint.starts_with("SHA256:"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("tls/key.pem"))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the key is the user's alone");
        }
    }

    #[test]
    fn a_cert_without_a_key_is_a_clear_error() {
        let result = Tls::new(&TlsOptions {
            cert: Some("/x/cert.pem".into()),
            ..TlsOptions::default()
        });
        assert!(matches!(result, Err(NetError::Tls(ref m)) if m.contains("go together")));
        let result = Tls::new(&TlsOptions {
            cert: Some("/no/cert.pem".into()),
            key: Some("/no/key.pem".into()),
            ..TlsOptions::default()
        });
        assert!(
            matches!(result, Err(NetError::Tls(ref m)) if m.contains("/no/cert.pem")),
            "{result:?}"
        );
    }

    #[test]
    fn known_hosts_remember_the_first_fingerprint_per_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = KnownHosts {
            path: dir.path().join("sub/known_hosts"),
            write: Mutex::new(()),
        };
        assert_eq!(k.lookup("a:1"), None);
        k.remember("a:1", "SHA256:aa").expect("remember");
        k.remember("b:2", "SHA256:bb").expect("remember");
        k.remember("a:1", "SHA256:cc")
            .expect("a second time changes nothing");
        assert_eq!(k.lookup("a:1").as_deref(), Some("SHA256:aa"));
        assert_eq!(k.lookup("b:2").as_deref(), Some("SHA256:bb"));
    }
}
