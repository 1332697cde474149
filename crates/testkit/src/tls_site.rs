//! A stand-in for the real HTTPS site that a fake-TLS proxy masks as (spec §5.2, §5.11), and
//! the probes that look at it directly or through the proxy.
//!
//! - [`TlsSite`]: a real TLS 1.3 server (rustls with the ring provider) with a self-signed
//!   certificate made at start. After the handshake it reads one HTTP/1.1 request, answers
//!   `200 OK` with a body holding a per-site random [`TlsSite::token`] and
//!   `Connection: close`, then closes. Plaintext input fails the handshake the way rustls
//!   fails it (a fatal alert, then close), which is what a probe would see from a real site.
//!   It prefers `TLS_AES_128_GCM_SHA256` and sends the middlebox-compatibility
//!   ChangeCipherSpec when the client sent a session id, so its answer to a Chrome-like hello
//!   has the shape the proxy's start-up probe expects: ServerHello, `14 03 03 00 01 01`, one
//!   application-data record.
//! - [`probe_server_hello`]: the start-up probe of §5.2 done by hand over raw TCP.
//! - [`https_get`]: a rustls client that records the certificate it was shown.
//! - [`raw_exchange`]: bytes in, half-close, bytes out.
//!
//! Every connection the site accepts is recorded in a [`SiteConnInfo`] (including the raw
//! bytes it received, so a test can check that a proxy spliced them unchanged); tests await
//! facts with [`TlsSite::wait_until`] instead of sleeping. Everything is loopback only.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::{Rng, RngCore};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CipherSuite, ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use mtproxy_fakes::observed::Observed;
use mtproxy_fakes::serving::{loopback_only, Serving};

/// How many received bytes a [`SiteConnInfo`] keeps (the rest is only counted).
pub const RECORD_CAP: usize = 64 * 1024;

/// Longest HTTP request head the site reads before giving up on the connection.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Bound on every step of the client helpers ([`probe_server_hello`], [`https_get`]).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// The ServerHello random that marks a HelloRetryRequest (RFC 8446 §4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// How a [`TlsSite`] is set up. `SiteOpts::default()`: certificate for `localhost` only,
/// ALPN `http/1.1`, 10-s handshake and request timeouts.
#[derive(Clone, Debug)]
pub struct SiteOpts {
    /// Extra subject-alternative names for the certificate, besides `localhost` (DNS names,
    /// or IP addresses written as text).
    pub names: Vec<String>,
    /// ALPN protocols the server accepts, in preference order. Empty: no ALPN (a client's
    /// ALPN offer is then ignored).
    pub alpn: Vec<Vec<u8>>,
    /// A connection whose handshake has not finished by then is closed.
    pub handshake_timeout: Duration,
    /// A connection whose request head has not arrived by then is closed.
    pub request_timeout: Duration,
}

impl Default for SiteOpts {
    fn default() -> Self {
        SiteOpts {
            names: Vec::new(),
            alpn: vec![b"http/1.1".to_vec()],
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl SiteOpts {
    /// Adds a name to the certificate.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }
}

/// What the site saw on one connection. Updated live; a snapshot is a clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteConnInfo {
    /// Accept order, from 0. Also the index in [`TlsSite::connections`].
    pub id: usize,
    /// The connecting address (a proxy's outbound socket, or the probe itself).
    pub peer: SocketAddr,
    /// The first [`RECORD_CAP`] raw bytes received (TLS records as they came off the wire).
    pub received: Vec<u8>,
    /// All raw bytes received.
    pub bytes_received: u64,
    /// The TLS handshake completed.
    pub handshake_done: bool,
    /// Why the handshake failed (rustls' error, or "timeout"), if it did.
    pub handshake_error: Option<String>,
    /// SNI the client sent (after a completed handshake).
    pub sni: Option<String>,
    /// Negotiated protocol version (`0x0304` for TLS 1.3).
    pub version: Option<u16>,
    /// Negotiated cipher suite (`0x1301` …).
    pub cipher: Option<u16>,
    /// Negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// The decrypted HTTP request head, up to and including the blank line.
    pub request: Option<Vec<u8>>,
    /// The `200 OK` answer was written.
    pub responded: bool,
    /// The connection is over.
    pub closed: bool,
}

impl SiteConnInfo {
    fn new(id: usize, peer: SocketAddr) -> Self {
        SiteConnInfo {
            id,
            peer,
            received: Vec::new(),
            bytes_received: 0,
            handshake_done: false,
            handshake_error: None,
            sni: None,
            version: None,
            cipher: None,
            alpn: None,
            request: None,
            responded: false,
            closed: false,
        }
    }
}

type Shared = Observed<SiteConnInfo>;

/// A running TLS site. Dropping it stops the accept loop and every connection.
pub struct TlsSite {
    addr: SocketAddr,
    cert_der: Vec<u8>,
    token: String,
    names: Vec<String>,
    shared: Arc<Shared>,
    serving: Serving,
}

impl TlsSite {
    /// Starts a site on `bind` (a loopback address; port 0 picks a free one). The certificate
    /// (ECDSA P-256, self-signed) covers `localhost` and `opts.names`.
    pub async fn start(bind: SocketAddr, opts: SiteOpts) -> io::Result<TlsSite> {
        loopback_only(bind, "the TLS site")?;
        let mut names = vec!["localhost".to_string()];
        for n in &opts.names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let certified = rcgen::generate_simple_self_signed(names.clone()).map_err(other)?;
        let cert_der = certified.cert.der().to_vec();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(other)?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert_der.clone())], key)
            .map_err(other)?;
        config.alpn_protocols = opts.alpn.clone();
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let mut token = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut token);
        let token = hex::encode(token);

        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let ctx = Arc::new(ConnCtx {
            acceptor,
            body: body_for(&token),
            opts,
            shared: shared.clone(),
        });
        let serving = Serving::start(listener, "TLS site", move |stream, peer, set| {
            let id = ctx.shared.push_with(|id| SiteConnInfo::new(id, peer));
            set.spawn(serve(stream, id, ctx.clone()));
        });
        Ok(TlsSite {
            addr,
            cert_der,
            token,
            names,
            shared,
            serving,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The DER of its (only) certificate.
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert_der.clone()
    }

    /// The random token in every response body (32 hex digits), different for every site.
    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// The names the certificate covers, `localhost` first.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The exact response body it serves.
    pub fn body(&self) -> Vec<u8> {
        body_for(&self.token)
    }

    /// How many connections it accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.len()
    }

    /// A snapshot of every connection accepted so far, in accept order.
    pub fn connections(&self) -> Vec<SiteConnInfo> {
        self.shared.snapshot()
    }

    /// Waits until `pred` holds for the connection list, then returns that snapshot.
    /// Re-checked after every change; wrap it in `tokio::time::timeout` in tests.
    pub async fn wait_until(&self, pred: impl FnMut(&[SiteConnInfo]) -> bool) -> Vec<SiteConnInfo> {
        self.shared.wait_until(pred).await
    }

    /// Waits until at least `n` connections were accepted.
    pub async fn wait_connections(&self, n: usize) -> Vec<SiteConnInfo> {
        self.wait_until(|c| c.len() >= n).await
    }

    /// Waits until at least `n` connections are closed (served, failed or dropped).
    pub async fn wait_closed(&self, n: usize) -> Vec<SiteConnInfo> {
        self.wait_until(|c| c.iter().filter(|c| c.closed).count() >= n)
            .await
    }

    /// Waits until at least `n` requests were answered with `200 OK`.
    pub async fn wait_served(&self, n: usize) -> Vec<SiteConnInfo> {
        self.wait_until(|c| c.iter().filter(|c| c.responded).count() >= n)
            .await
    }

    /// Stops accepting and closes every connection; returns once they are all gone.
    pub async fn shutdown(self) {
        self.serving.stop().await;
    }
}

/// The ring provider with TLS 1.3 suites in the order most real sites pick them:
/// AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 (TLS 1.2 suites after, in ring's order).
fn provider() -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        _ => 3,
    });
    p
}

fn body_for(token: &str) -> Vec<u8> {
    format!("mtproxy-testkit tls site\ntoken: {token}\n").into_bytes()
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

struct ConnCtx {
    acceptor: TlsAcceptor,
    body: Vec<u8>,
    opts: SiteOpts,
    shared: Arc<Shared>,
}

async fn serve(stream: TcpStream, id: usize, ctx: Arc<ConnCtx>) {
    serve_inner(stream, id, &ctx).await;
    ctx.shared.update(id, |c| c.closed = true);
}

async fn serve_inner(stream: TcpStream, id: usize, ctx: &ConnCtx) {
    let shared = &ctx.shared;
    let stream = Recording {
        inner: stream,
        id,
        shared: ctx.shared.clone(),
    };
    let accepted = tokio::time::timeout(ctx.opts.handshake_timeout, ctx.acceptor.accept(stream));
    let mut tls = match accepted.await {
        Ok(Ok(tls)) => tls,
        // tokio-rustls has already made a last-gasp write of rustls' fatal alert; dropping
        // the socket closes it, as a real server does.
        Ok(Err(e)) => {
            shared.update(id, |c| c.handshake_error = Some(e.to_string()));
            return;
        }
        Err(_) => {
            shared.update(id, |c| c.handshake_error = Some("timeout".into()));
            return;
        }
    };
    {
        let conn = tls.get_ref().1;
        let sni = conn.server_name().map(str::to_string);
        let version = conn.protocol_version().map(u16::from);
        let cipher = conn.negotiated_cipher_suite().map(|s| u16::from(s.suite()));
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        shared.update(id, |c| {
            c.handshake_done = true;
            c.sni = sni;
            c.version = version;
            c.cipher = cipher;
            c.alpn = alpn;
        });
    }

    let head = tokio::time::timeout(ctx.opts.request_timeout, read_head(&mut tls)).await;
    let Ok(Some(head)) = head else { return };
    shared.update(id, |c| c.request = Some(head));

    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nServer: mtproxy-testkit\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        ctx.body.len()
    )
    .into_bytes();
    resp.extend_from_slice(&ctx.body);
    if tls.write_all(&resp).await.is_err() {
        return;
    }
    shared.update(id, |c| c.responded = true);
    // close_notify, then FIN.
    let _ = tls.shutdown().await;
}

/// Reads up to the end of an HTTP request head. `None` on EOF, error or an oversized head.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.truncate(end + 4);
            return Some(buf);
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return None;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A TCP stream that records what it reads into its connection's [`SiteConnInfo`].
struct Recording {
    inner: TcpStream,
    id: usize,
    shared: Arc<Shared>,
}

impl AsyncRead for Recording {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                self.shared.update(self.id, |c| {
                    c.bytes_received += new.len() as u64;
                    let room = RECORD_CAP.saturating_sub(c.received.len());
                    c.received.extend_from_slice(&new[..new.len().min(room)]);
                });
            }
        }
        res
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// The start-up probe (§5.2)

/// What a server answered to a Chrome-like TLS 1.3 ClientHello: the three facts the proxy
/// learns at start-up, and the raw bytes they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHelloShape {
    /// The cipher suite the ServerHello chose (`0x1301` is what the proxy wants).
    pub cipher: u16,
    /// The first ServerHello extension is supported_versions (`0x002b`) rather than
    /// key_share (`0x0033`).
    pub ext_order_reversed: bool,
    /// Length of the first application-data record after the ChangeCipherSpec.
    pub first_app_data_len: usize,
    /// ServerHello extension types, in order.
    pub extensions: Vec<u16>,
    /// Everything read: the ServerHello record, the CCS record and the first
    /// application-data record, headers included.
    pub raw: Vec<u8>,
}

/// A fresh X25519 public key (`X25519(random scalar, 9)`), as a real client would send.
pub fn x25519_public_key() -> [u8; 32] {
    let kx = rustls::crypto::ring::kx_group::X25519
        .start()
        .expect("X25519 key generation");
    kx.pub_key().try_into().expect("32-byte X25519 key")
}

/// Two different GREASE values (`0x?A?A`).
fn grease_pair() -> (u16, u16) {
    let mut rng = rand::thread_rng();
    let a = (rng.gen::<u8>() & 0xf0) | 0x0a;
    let mut b = (rng.gen::<u8>() & 0xf0) | 0x0a;
    if b == a {
        b ^= 0x10;
    }
    (u16::from_be_bytes([a, a]), u16::from_be_bytes([b, b]))
}

/// A 517-byte Chrome-like TLS 1.3 ClientHello laid out like the C proxy's start-up probe
/// (§5.2 `create_request`): GREASE, the usual 16 cipher suites with `1301` first, SNI `sni`,
/// an x25519 key share, supported_versions 1.3..1.0, and padding to 517 bytes (no padding if
/// the SNI is too long for that). Starts with `16 03 01 02 00` for names up to ~200 bytes.
pub fn build_client_hello(
    sni: &str,
    random: &[u8; 32],
    session_id: &[u8; 32],
    x25519_public: &[u8; 32],
) -> Vec<u8> {
    const TOTAL: usize = 517;
    let (g0, g1) = grease_pair();
    let put16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_be_bytes());
    let ext = |v: &mut Vec<u8>, ty: u16, data: &[u8]| {
        v.extend_from_slice(&ty.to_be_bytes());
        v.extend_from_slice(&(data.len() as u16).to_be_bytes());
        v.extend_from_slice(data);
    };

    let mut exts = Vec::new();
    ext(&mut exts, g0, &[]);
    let mut sni_data = Vec::new();
    put16(&mut sni_data, (sni.len() + 3) as u16);
    sni_data.push(0);
    put16(&mut sni_data, sni.len() as u16);
    sni_data.extend_from_slice(sni.as_bytes());
    ext(&mut exts, 0x0000, &sni_data);
    ext(&mut exts, 0x0017, &[]);
    ext(&mut exts, 0xff01, &[0]);
    let mut groups = Vec::new();
    for g in [0x0008, g1, 0x001d, 0x0017, 0x0018] {
        put16(&mut groups, g);
    }
    ext(&mut exts, 0x000a, &groups);
    ext(&mut exts, 0x000b, &[1, 0]);
    ext(&mut exts, 0x0023, &[]);
    ext(&mut exts, 0x0010, b"\x00\x0c\x02h2\x08http/1.1");
    ext(&mut exts, 0x0005, &[1, 0, 0, 0, 0]);
    let mut sigs = Vec::new();
    for s in [
        0x0012, 0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601, 0x0201,
    ] {
        put16(&mut sigs, s);
    }
    ext(&mut exts, 0x000d, &sigs);
    ext(&mut exts, 0x0012, &[]);
    let mut shares = Vec::new();
    put16(&mut shares, 41);
    put16(&mut shares, g1);
    put16(&mut shares, 1);
    shares.push(0);
    put16(&mut shares, 0x001d);
    put16(&mut shares, 32);
    shares.extend_from_slice(x25519_public);
    ext(&mut exts, 0x0033, &shares);
    ext(&mut exts, 0x002d, &[1, 1]);
    let mut versions = vec![10];
    for v in [g0, 0x0304, 0x0303, 0x0302, 0x0301] {
        put16(&mut versions, v);
    }
    ext(&mut exts, 0x002b, &versions);
    ext(&mut exts, 0x001b, &[2, 0, 2]);
    ext(&mut exts, g1, &[0]);

    let mut body = Vec::new();
    body.extend_from_slice(&[3, 3]);
    body.extend_from_slice(random);
    body.push(32);
    body.extend_from_slice(session_id);
    let suites = [
        g0, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
        0x009c, 0x009d, 0x002f, 0x0035, 0x000a,
    ];
    put16(&mut body, (suites.len() * 2) as u16);
    for c in suites {
        put16(&mut body, c);
    }
    body.extend_from_slice(&[1, 0]);
    // Record header 5, handshake header 4, extensions length 2, padding extension header 4.
    let unpadded = 5 + 4 + body.len() + 2 + exts.len();
    if unpadded + 4 <= TOTAL {
        ext(&mut exts, 0x0015, &vec![0; TOTAL - unpadded - 4]);
    }
    put16(&mut body, exts.len() as u16);
    body.extend_from_slice(&exts);

    let mut out = Vec::with_capacity(TOTAL);
    out.extend_from_slice(&[0x16, 3, 1]);
    put16(&mut out, (body.len() + 4) as u16);
    out.push(1);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&body);
    out
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Connects to `addr`, sends a fresh [`build_client_hello`] for `sni` (random, 32-byte session
/// id, x25519 share) and reads what the proxy's start-up probe reads: the ServerHello record,
/// `14 03 03 00 01 01` and the first application-data record. Checks the ServerHello like
/// §5.2 `check_response` except for the cipher and the extension set, which it reports
/// instead (a test asserts them). Errors: `InvalidData` naming the first thing that was off
/// (a HelloRetryRequest, an alert, a session id that was not echoed, …), `UnexpectedEof`,
/// `TimedOut` after 20 s.
pub async fn probe_server_hello(addr: SocketAddr, sni: &str) -> io::Result<ServerHelloShape> {
    let mut random = [0u8; 32];
    let mut session_id = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut random);
    rand::thread_rng().fill_bytes(&mut session_id);
    let hello = build_client_hello(sni, &random, &session_id, &x25519_public_key());
    tokio::time::timeout(CLIENT_TIMEOUT, probe_inner(addr, &hello, &session_id))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "ServerHello probe timed out"))?
}

async fn probe_inner(
    addr: SocketAddr,
    hello: &[u8],
    session_id: &[u8; 32],
) -> io::Result<ServerHelloShape> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(hello).await?;
    let mut raw = Vec::new();

    let sh = read_record(&mut s, &mut raw).await?;
    if raw[..3] != [0x16, 3, 3] {
        if raw[0] == 0x15 {
            return Err(bad(format!("server sent an alert: {}", hex::encode(&raw))));
        }
        return Err(bad(format!(
            "not a TLS 1.2 handshake record: {}",
            hex::encode(&raw[..5])
        )));
    }
    let (cipher, extensions) = parse_server_hello(&sh, session_id)?;

    let mut ccs = [0u8; 6];
    s.read_exact(&mut ccs).await?;
    raw.extend_from_slice(&ccs);
    if ccs != [0x14, 3, 3, 0, 1, 1] {
        return Err(bad(format!(
            "expected ChangeCipherSpec, got {}",
            hex::encode(ccs)
        )));
    }
    let app = read_record(&mut s, &mut raw).await?;
    let hdr = &raw[raw.len() - app.len() - 5..][..3];
    if hdr != [0x17, 3, 3] || app.is_empty() {
        return Err(bad(format!(
            "expected an application-data record, got header {}",
            hex::encode(&raw[raw.len() - app.len() - 5..][..5])
        )));
    }
    Ok(ServerHelloShape {
        cipher,
        ext_order_reversed: extensions.first() == Some(&0x002b),
        first_app_data_len: app.len(),
        extensions,
        raw,
    })
}

/// Reads one record (header and body appended to `raw`); returns its body.
async fn read_record(s: &mut TcpStream, raw: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut hdr = [0u8; 5];
    s.read_exact(&mut hdr).await?;
    raw.extend_from_slice(&hdr);
    let len = u16::from_be_bytes([hdr[3], hdr[4]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    raw.extend_from_slice(&body);
    Ok(body)
}

/// Checks a ServerHello handshake message; returns the cipher and the extension types.
fn parse_server_hello(m: &[u8], session_id: &[u8; 32]) -> io::Result<(u16, Vec<u16>)> {
    if m.len() < 40 || m[0] != 2 {
        return Err(bad(format!("not a ServerHello: {}", hex::encode(m))));
    }
    let hs_len = u32::from_be_bytes([0, m[1], m[2], m[3]]) as usize;
    if hs_len + 4 != m.len() {
        return Err(bad("ServerHello is not alone in its record"));
    }
    if m[4..6] != [3, 3] {
        return Err(bad("ServerHello legacy version is not 03 03"));
    }
    if m[6..38] == HRR_RANDOM {
        return Err(bad("server sent a HelloRetryRequest"));
    }
    if m[38] != 32 || m.len() < 39 + 32 + 5 || &m[39..71] != session_id {
        return Err(bad("ServerHello does not echo the 32-byte session id"));
    }
    let cipher = u16::from_be_bytes([m[71], m[72]]);
    if m[73] != 0 {
        return Err(bad("ServerHello compression is not null"));
    }
    let ext_len = u16::from_be_bytes([m[74], m[75]]) as usize;
    if 76 + ext_len != m.len() {
        return Err(bad("ServerHello extensions length does not match"));
    }
    let mut exts = Vec::new();
    let mut rest = &m[76..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(bad("truncated ServerHello extension"));
        }
        let ty = u16::from_be_bytes([rest[0], rest[1]]);
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        if rest.len() < 4 + len {
            return Err(bad("truncated ServerHello extension"));
        }
        exts.push(ty);
        rest = &rest[4 + len..];
    }
    Ok((cipher, exts))
}

// ---------------------------------------------------------------------------------------------
// HTTPS client

/// What [`https_get`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// The end-entity certificate the server presented (DER).
    pub cert_der: Vec<u8>,
    /// The whole HTTP response, head and body, up to the server's close.
    pub response: Vec<u8>,
}

impl ProbeResult {
    /// The response body (after the blank line); empty if there is none.
    pub fn body(&self) -> &[u8] {
        find(&self.response, b"\r\n\r\n").map_or(&[], |i| &self.response[i + 4..])
    }
}

/// Accepts the server's certificate if it is `trust` (any certificate when `trust` is empty),
/// records it, and checks handshake signatures for real.
#[derive(Debug)]
struct RecordingVerifier {
    trust: Vec<u8>,
    seen: Mutex<Option<Vec<u8>>>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().expect("seen lock") = Some(end_entity.to_vec());
        if !self.trust.is_empty() && self.trust != end_entity.as_ref() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Connects to `addr` with TLS (SNI `sni`, ALPN `http/1.1`), trusting exactly the
/// certificate `trust` (DER), or any certificate when `trust` is empty, sends
/// `GET / HTTP/1.1` with `Host: <sni>` and `Connection: close`, and reads the response to the
/// end. A close without close_notify still returns what arrived. Errors: the handshake's
/// (`InvalidData` for a certificate other than `trust`), I/O errors, `TimedOut` after 20 s.
pub async fn https_get(addr: SocketAddr, sni: &str, trust: &[u8]) -> io::Result<ProbeResult> {
    tokio::time::timeout(CLIENT_TIMEOUT, https_get_inner(addr, sni, trust))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "HTTPS GET timed out"))?
}

async fn https_get_inner(addr: SocketAddr, sni: &str, trust: &[u8]) -> io::Result<ProbeResult> {
    let provider = Arc::new(provider());
    let verifier = Arc::new(RecordingVerifier {
        trust: trust.to_vec(),
        seen: Mutex::new(None),
        algs: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;

    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let cert_der = verifier
        .seen
        .lock()
        .expect("seen lock")
        .clone()
        .ok_or_else(|| bad("handshake finished without a server certificate"))?;
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    tls.flush().await?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tls.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    Ok(ProbeResult { cert_der, response })
}

// ---------------------------------------------------------------------------------------------
// Raw exchange

/// How a [`raw_exchange_detailed`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawEnd {
    /// The peer closed (FIN).
    Eof,
    /// The peer reset the connection (or refused the write).
    Reset,
    /// `read_limit` bytes arrived.
    Limit,
    /// Nothing more within the timeout; the connection was still open.
    Timeout,
}

/// What came back from a [`raw_exchange_detailed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawExchange {
    pub data: Vec<u8>,
    pub end: RawEnd,
}

/// Connects to `addr`, writes `send`, half-closes, and reads until EOF, `read_limit` bytes
/// or `timeout` (for the whole exchange, connect included), whichever first; returns what
/// came back. A reset ends the read like EOF; use [`raw_exchange_detailed`] to tell the two
/// apart.
pub async fn raw_exchange(
    addr: SocketAddr,
    send: &[u8],
    read_limit: usize,
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    Ok(raw_exchange_detailed(addr, send, read_limit, timeout)
        .await?
        .data)
}

/// [`raw_exchange`], also telling how the read ended.
pub async fn raw_exchange_detailed(
    addr: SocketAddr,
    send: &[u8],
    read_limit: usize,
    timeout: Duration,
) -> io::Result<RawExchange> {
    let deadline = Instant::now() + timeout;
    let mut s = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    s.set_nodelay(true)?;
    let is_reset = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
        )
    };
    let mut data = Vec::new();
    match tokio::time::timeout_at(deadline, async {
        s.write_all(send).await?;
        s.shutdown().await
    })
    .await
    {
        Err(_) => {
            return Ok(RawExchange {
                data,
                end: RawEnd::Timeout,
            })
        }
        Ok(Err(e)) if is_reset(&e) => {}
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {}
    }
    let mut chunk = vec![0u8; 16 * 1024];
    let end = loop {
        if data.len() >= read_limit {
            break RawEnd::Limit;
        }
        let want = chunk.len().min(read_limit - data.len());
        match tokio::time::timeout_at(deadline, s.read(&mut chunk[..want])).await {
            Err(_) => break RawEnd::Timeout,
            Ok(Ok(0)) => break RawEnd::Eof,
            Ok(Ok(n)) => data.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if is_reset(&e) => break RawEnd::Reset,
            Ok(Err(e)) => return Err(e),
        }
    };
    Ok(RawExchange { data, end })
}
