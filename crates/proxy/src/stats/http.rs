//! The stats port's HTTP/1.x responder: what C's stats handler answers (spec backend-ops
//! §5.1–5.2, `hts_stats_execute`) and the server loop. Parsing a request is
//! `http_request`; the pages are `c_text` and `prometheus`.
//!
//! It binds nothing (the caller binds [`bind_addr`], 127.0.0.1 like C) and does not speak
//! C's engine TCP-RPC on the same port (spec §5.6: no known user). The only counters it
//! keeps are its own (C's `http_*` keys).
//!
//! # HTTP behaviour (spec §5.1–5.2, C's `hts_parse_execute` and `hts_stats_execute`)
//! - A new connection is HTTP only if its first 4 bytes are `GET `, `HEAD`, `POST` or
//!   `OPTI`; C hands anything else to its TCP-RPC parser, we close the connection.
//! - Malformed request line or header, unknown method, head over 16 KiB
//!   ([`MAX_REQUEST_HEAD`], C's `MAX_HTTP_HEADER_SIZE`) → `400`, then close.
//! - POST without Content-Length → `411`; a non-POST with Content-Length > 0 → `413`.
//! - Method not GET, or any Content-Length (even 0) → `501`, then close.
//! - Peer not exactly 127.0.0.1 → `404` (other 127/8 addresses and IPv6 too, as C), unless
//!   `allow_non_loopback`.
//! - `GET /stats` → C's body as `text/plain`; `GET /metrics` (ours) → Prometheus text as
//!   [`METRICS_CONTENT_TYPE`]; any other URI, query strings included → `404`.
//! - Status line `HTTP/1.1`, headers `Server: MTProxy/1.0`, `Date`, `Content-Type`,
//!   `Connection: keep-alive|close`, `Content-Length`; error bodies are C's small HTML page.
//!   An HTTP/0.9 request (no version) gets the body alone, as C.
//! - Keep-alive only when the request says `Connection: keep-alive`; pipelined requests are
//!   answered in order. Otherwise the connection is closed after the response (after a
//!   short drain of unread input, so the peer gets the response rather than a reset).
//! - Ours, not C's: each request must arrive whole within [`READ_TIMEOUT`] of when it is
//!   awaited (the connection's start, or the previous answer; C waits forever), however
//!   the bytes trickle in; at most 64 stats connections are open at once, and a new one
//!   displaces the one that has waited longest for a request (`http_conns`), so slow
//!   clients cannot keep `/stats` from anyone.

use super::c_text::render_stats;
use super::http_conns::{Conns, Ticket};
use super::http_request::{parse_request, Method, Parse, Request, Version};
use super::prometheus::{render_metrics, METRICS_CONTENT_TYPE};
use super::view::{StatsView, ViewFn};
use crate::clock::unix_now;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant as Deadline;
use tracing::debug;

/// C's `MAX_HTTP_HEADER_SIZE`: a request head (request line and headers) that is not
/// complete within this many bytes gets `400`.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// How long a whole request may take to arrive, counted from when it is awaited.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Where C's stats port listens: 127.0.0.1 only, IPv4, even with `-6` (spec §5.1).
pub fn bind_addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// C's `http_get_error_msg_text`.
fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        411 => "Length Required",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        501 => "Not Implemented",
        _ => "Internal Server Error",
    }
}

/// C's error page (`error_text_pattern`).
fn error_page(code: u16) -> String {
    let t = status_text(code);
    format!(
        "<html>\r\n<head><title>{code} {t}</title></head>\r\n<body bgcolor=\"white\">\r\n\
         <center><h1>{code} {t}</h1></center>\r\n<hr><center>MTProxy/1.0</center>\r\n\
         </body>\r\n</html>\r\n"
    )
}

/// RFC 1123 date, as C's `gen_http_date`: `Thu, 01 Jan 1970 00:00:00 GMT`.
fn http_date(unix: u64) -> String {
    const DOW: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let d = i64::try_from(unix)
        .ok()
        .and_then(|u| OffsetDateTime::from_unix_timestamp(u).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DOW[usize::from(d.weekday().number_days_from_sunday())],
        d.day(),
        MON[usize::from(u8::from(d.month()) - 1)],
        d.year(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// One response as C writes it (`write_basic_http_header_raw`); HTTP/0.9: the body alone.
fn response(code: u16, content_type: &str, body: &[u8], keep_alive: bool, v09: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 200);
    if !v09 {
        let head = format!(
            "HTTP/1.1 {code} {}\r\nServer: MTProxy/1.0\r\nDate: {}\r\nContent-Type: {content_type}\r\n\
             Connection: {}\r\nContent-Length: {}\r\n\r\n",
            status_text(code),
            http_date(unix_now()),
            if keep_alive { "keep-alive" } else { "close" },
            body.len()
        );
        out.extend_from_slice(head.as_bytes());
    }
    out.extend_from_slice(body);
    out
}

fn error_response(code: u16, keep_alive: bool, v09: bool) -> Vec<u8> {
    response(
        code,
        "text/html",
        error_page(code).as_bytes(),
        keep_alive,
        v09,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Stats,
    Metrics,
    Error(u16),
}

/// C's checks in order: generic parser (411, 413), then the stats handler (501, peer, URI).
/// Returns the reply and whether the connection stays open.
fn decide(req: &Request, peer_ok: bool) -> (Reply, bool) {
    let keep = req.keep_alive;
    if req.method == Method::Post && req.content_length.is_none() {
        return (Reply::Error(411), keep);
    }
    if req.method != Method::Post && req.content_length.unwrap_or(0) > 0 {
        return (Reply::Error(413), false);
    }
    if req.method != Method::Get || req.content_length.is_some() {
        return (Reply::Error(501), false);
    }
    if !peer_ok {
        return (Reply::Error(404), keep);
    }
    match req.uri.as_slice() {
        b"/stats" => (Reply::Stats, keep),
        b"/metrics" => (Reply::Metrics, keep),
        _ => (Reply::Error(404), keep),
    }
}

/// C answers only 127.0.0.1 (`remote_ip != 0x7f000001` → 404); the IPv4-mapped form is the
/// same peer on a dual-stack socket.
fn is_c_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a == Ipv4Addr::LOCALHOST,
        IpAddr::V6(a) => a.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST),
    }
}

/// C's HTTP switch: the first 4 bytes of a connection.
const HTTP_PREFIXES: [&[u8; 4]; 4] = [b"GET ", b"HEAD", b"POST", b"OPTI"];

#[derive(Debug, Clone, Copy)]
struct Limits {
    read_timeout: Duration,
    max_head: usize,
    max_connections: usize,
    /// Unread input discarded before closing, so that the peer reads our response.
    drain_bytes: usize,
    drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_timeout: READ_TIMEOUT,
            max_head: MAX_REQUEST_HEAD,
            max_connections: 64,
            drain_bytes: 1 << 20,
            drain_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Default)]
struct HttpCounters {
    open: AtomicU64,
    accepted: AtomicU64,
    queries: AtomicU64,
    bad: AtomicU64,
}

struct Server {
    view: ViewFn,
    allow_non_loopback: bool,
    limits: Limits,
    counters: HttpCounters,
}

/// Decrements the open-connections count when a connection task ends, however it ends.
struct Open<'a>(&'a AtomicU64);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Server {
    fn snapshot(&self) -> StatsView {
        let t = Instant::now();
        let mut v = (self.view)();
        v.stats_generate_time = t.elapsed().as_secs_f64();
        let c = &self.counters;
        v.http_connections = c.open.load(Relaxed);
        v.http_accepted = c.accepted.load(Relaxed);
        v.http_queries = c.queries.load(Relaxed);
        v.http_bad_headers = c.bad.load(Relaxed);
        v
    }

    /// Reads more input into `buf` (at most up to `max_head` plus one read); `false` on
    /// EOF, error or the request's deadline.
    async fn read_more(&self, sock: &mut TcpStream, buf: &mut Vec<u8>, deadline: Deadline) -> bool {
        let mut chunk = [0u8; 4096];
        let want = self
            .limits
            .max_head
            .saturating_sub(buf.len())
            .clamp(1, chunk.len());
        match tokio::time::timeout_at(deadline, sock.read(&mut chunk[..want])).await {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    async fn write(&self, sock: &mut TcpStream, bytes: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(self.limits.read_timeout, sock.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// Sends FIN after the response, then discards what the peer still sends (bounded),
    /// so that closing does not reset the connection before the peer has read us.
    async fn close(&self, mut sock: TcpStream) {
        let _ = sock.shutdown().await;
        let deadline = tokio::time::Instant::now() + self.limits.drain_timeout;
        let mut chunk = [0u8; 4096];
        let mut drained = 0;
        while drained < self.limits.drain_bytes {
            match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }

    async fn connection(&self, mut sock: TcpStream, peer: SocketAddr, slot: &Ticket) {
        self.counters.accepted.fetch_add(1, Relaxed);
        self.counters.open.fetch_add(1, Relaxed);
        let _open = Open(&self.counters.open);
        let peer_ok = self.allow_non_loopback || is_c_loopback(peer.ip());
        let mut buf = Vec::with_capacity(1024);
        // The whole request by then, however its bytes trickle in.
        let mut deadline = Deadline::now() + self.limits.read_timeout;
        while buf.len() < 4 {
            if !self.read_more(&mut sock, &mut buf, deadline).await {
                return;
            }
        }
        if !HTTP_PREFIXES.iter().any(|p| buf.starts_with(*p)) {
            debug!("stats port: {peer} sent no HTTP request; closing");
            return;
        }
        loop {
            let parsed = loop {
                match parse_request(&buf, self.limits.max_head) {
                    Parse::Incomplete => {
                        if !self.read_more(&mut sock, &mut buf, deadline).await {
                            return;
                        }
                    }
                    Parse::Bad { v09 } => break Err(v09),
                    Parse::Ok { req, consumed } => break Ok((req, consumed)),
                }
            };
            slot.answering();
            let (req, consumed) = match parsed {
                Ok(x) => x,
                Err(v09) => {
                    self.counters.bad.fetch_add(1, Relaxed);
                    debug!("stats port: bad request from {peer}");
                    if self
                        .write(&mut sock, &error_response(400, false, v09))
                        .await
                    {
                        self.close(sock).await;
                    }
                    return;
                }
            };
            let v09 = req.version == Version::V09;
            let (reply, keep) = decide(&req, peer_ok);
            let keep = keep && !v09;
            let out = match reply {
                Reply::Stats => response(
                    200,
                    "text/plain",
                    render_stats(&self.snapshot()).as_bytes(),
                    keep,
                    v09,
                ),
                Reply::Metrics => response(
                    200,
                    METRICS_CONTENT_TYPE,
                    render_metrics(&self.snapshot()).as_bytes(),
                    keep,
                    v09,
                ),
                Reply::Error(code) => error_response(code, keep, v09),
            };
            self.counters.queries.fetch_add(1, Relaxed);
            if !self.write(&mut sock, &out).await {
                return;
            }
            if !keep {
                self.close(sock).await;
                return;
            }
            buf.drain(..consumed);
            slot.waiting();
            deadline = Deadline::now() + self.limits.read_timeout;
        }
    }
}

/// Serves the stats port on `listener` until the task is dropped: `GET /stats` (C's page),
/// `GET /metrics` (Prometheus), C's error pages otherwise (see the module doc). `view` is
/// called once per answered page. Peers other than 127.0.0.1 get `404` unless
/// `allow_non_loopback`. Never returns; accept errors are logged and retried.
pub async fn serve(listener: TcpListener, view: ViewFn, allow_non_loopback: bool) {
    serve_with(listener, view, allow_non_loopback, Limits::default()).await
}

async fn serve_with(listener: TcpListener, view: ViewFn, allow_non_loopback: bool, limits: Limits) {
    let server = Arc::new(Server {
        view,
        allow_non_loopback,
        limits,
        counters: HttpCounters::default(),
    });
    let conns = Conns::new(limits.max_connections);
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let Some(slot) = conns.admit() else {
                    debug!("stats port: every connection is being answered; closing {peer}");
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = server.connection(sock, peer, &slot) => {}
                        _ = slot.displaced() => {
                            debug!("stats port: {peer} waited longest for a request: closed for a new connection");
                        }
                    }
                });
            }
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                debug!("stats port: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::test_support::*;
    use tokio::net::TcpSocket;

    // ---- HTTP pieces ---------------------------------------------------------------

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_795_722_105), "Thu, 26 Nov 2026 19:41:45 GMT");
    }

    #[test]
    fn bind_addr_is_ipv4_loopback() {
        assert_eq!(bind_addr(8888), "127.0.0.1:8888".parse().unwrap());
    }

    #[test]
    fn decisions_follow_c() {
        let req = |m, uri: &str, cl, ka| Request {
            method: m,
            uri: uri.as_bytes().to_vec(),
            version: Version::V11,
            keep_alive: ka,
            content_length: cl,
        };
        use Method::*;
        assert_eq!(
            decide(&req(Get, "/stats", None, true), true),
            (Reply::Stats, true)
        );
        assert_eq!(
            decide(&req(Get, "/metrics", None, false), true),
            (Reply::Metrics, false)
        );
        assert_eq!(
            decide(&req(Get, "/stats?x", None, true), true),
            (Reply::Error(404), true)
        );
        assert_eq!(
            decide(&req(Get, "/stats", None, true), false),
            (Reply::Error(404), true)
        );
        assert_eq!(
            decide(&req(Get, "/stats", Some(0), true), true),
            (Reply::Error(501), false)
        );
        assert_eq!(
            decide(&req(Get, "/stats", Some(3), true), true),
            (Reply::Error(413), false)
        );
        assert_eq!(
            decide(&req(Head, "/stats", None, true), true),
            (Reply::Error(501), false)
        );
        assert_eq!(
            decide(&req(Options, "/stats", None, true), true),
            (Reply::Error(501), false)
        );
        assert_eq!(
            decide(&req(Post, "/stats", None, true), true),
            (Reply::Error(411), true)
        );
        assert_eq!(
            decide(&req(Post, "/stats", Some(2), true), true),
            (Reply::Error(501), false)
        );
        // The peer check comes after the method check, as in C.
        assert_eq!(
            decide(&req(Head, "/stats", None, true), false),
            (Reply::Error(501), false)
        );
        assert!(is_c_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_c_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_c_loopback("127.0.0.2".parse().unwrap()));
        assert!(!is_c_loopback("::1".parse().unwrap()));
        assert!(!is_c_loopback("10.0.0.1".parse().unwrap()));
    }

    // ---- the server ----------------------------------------------------------------

    async fn start(allow_non_loopback: bool, limits: Limits) -> SocketAddr {
        let l = TcpListener::bind(bind_addr(0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let view: ViewFn = Arc::new(full_view);
        tokio::spawn(serve_with(l, view, allow_non_loopback, limits));
        addr
    }

    /// Writes `parts` one by one (Nagle off), half-closes, reads until the server closes.
    async fn exchange_on(mut s: TcpStream, parts: &[&[u8]]) -> Vec<u8> {
        s.set_nodelay(true).unwrap();
        for p in parts {
            if s.write_all(p).await.is_err() {
                break;
            }
        }
        let _ = s.shutdown().await;
        read_all(&mut s).await
    }

    async fn read_all(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 8192];
        let read = async {
            loop {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("server did not close the connection");
        out
    }

    async fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> Vec<u8> {
        exchange_on(TcpStream::connect(addr).await.unwrap(), parts).await
    }

    #[derive(Debug)]
    struct Resp {
        status: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
        fn code(&self) -> u16 {
            self.status.split(' ').nth(1).unwrap().parse().unwrap()
        }
    }

    /// Splits a byte stream into HTTP/1.1 responses (Content-Length framed).
    fn responses(mut raw: &[u8]) -> Vec<Resp> {
        let mut out = Vec::new();
        while !raw.is_empty() {
            let end = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
            let head = std::str::from_utf8(&raw[..end]).unwrap();
            let mut it = head.split("\r\n");
            let status = it.next().unwrap().to_string();
            let headers: Vec<(String, String)> = it
                .map(|l| {
                    let (k, v) = l.split_once(": ").unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "Content-Length")
                .unwrap()
                .1
                .parse()
                .unwrap();
            let body = raw[end + 4..end + 4 + len].to_vec();
            raw = &raw[end + 4 + len..];
            out.push(Resp {
                status,
                headers,
                body,
            });
        }
        out
    }

    fn one(raw: &[u8]) -> Resp {
        let mut r = responses(raw);
        assert_eq!(r.len(), 1, "{:?}", String::from_utf8_lossy(raw));
        r.pop().unwrap()
    }

    #[tokio::test]
    async fn serves_stats_like_c() {
        let addr = start(false, Limits::default()).await;
        let raw = exchange(addr, &[b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"]).await;
        let r = one(&raw);
        assert_eq!(r.status, "HTTP/1.1 200 OK");
        let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "Server",
                "Date",
                "Content-Type",
                "Connection",
                "Content-Length"
            ]
        );
        assert_eq!(r.header("Server"), Some("MTProxy/1.0"));
        assert_eq!(r.header("Content-Type"), Some("text/plain"));
        assert_eq!(r.header("Connection"), Some("close"));
        let date = r.header("Date").unwrap();
        assert!(date.len() == 29 && date.ends_with(" GMT"), "{date}");
        let body = String::from_utf8(r.body).unwrap();
        let keys: Vec<String> = lines(&body).into_iter().map(|l| l.0).collect();
        let (main, fork) = sample();
        let mut want: Vec<String> = main.into_iter().map(|l| l.0).collect();
        want.extend(fork.into_iter().skip(1).map(|l| l.0));
        assert_eq!(keys, want);
        // The server's own counters replace the view's: this connection is open, and
        // nothing was queried before.
        assert!(body.contains("\nhttp_connections\t1\n"));
        assert!(body.contains("\nhttp_queries\t0\n"));
        assert!(body.contains("\nhttp_bad_headers\t0\n"));
        // HTTP/1.0 and HTTP/0.9 requests.
        let r = one(&exchange(addr, &[b"GET /stats HTTP/1.0\r\n\r\n"]).await);
        assert_eq!(r.code(), 200);
        assert!(String::from_utf8(r.body)
            .unwrap()
            .contains("\nhttp_queries\t1\n"));
        let raw = exchange(addr, &[b"GET /stats\r\n"]).await;
        assert!(raw.starts_with(b"pid\t4242\n"), "0.9 gets the body alone");
    }

    #[tokio::test]
    async fn serves_metrics() {
        let addr = start(false, Limits::default()).await;
        let r = one(&exchange(addr, &[b"GET /metrics HTTP/1.1\r\n\r\n"]).await);
        assert_eq!(r.code(), 200);
        assert_eq!(r.header("Content-Type"), Some(METRICS_CONTENT_TYPE));
        let text = String::from_utf8(r.body).unwrap();
        let s = parse_metrics(&text).unwrap();
        assert_eq!(value(&s, "mtproxy_client_accepted_total", &[]), 25.0);
    }

    #[tokio::test]
    async fn errors_like_c() {
        let addr = start(false, Limits::default()).await;
        let cases: &[(&[u8], u16)] = &[
            (b"GET /stats?x HTTP/1.1\r\n\r\n", 404),
            (b"GET / HTTP/1.1\r\n\r\n", 404),
            (b"GET /statsx HTTP/1.1\r\n\r\n", 404),
            (b"GET /metrics/ HTTP/1.1\r\n\r\n", 404),
            (b"HEAD /stats HTTP/1.1\r\n\r\n", 501),
            (b"OPTIONS /stats HTTP/1.1\r\n\r\n", 501),
            (b"GET /stats HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 501),
            (
                b"GET /stats HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                413,
            ),
            (
                b"POST /stats HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                501,
            ),
            (b"POST /stats HTTP/1.1\r\n\r\n", 411),
            (b"GET /stats HTTP/9.9\r\n\r\n", 400),
            (b"GET /stats HTTP/1.1\r\nbroken header\r\n\r\n", 400),
            (b"GET \x00\x01\x02\xff\xfe garbage\r\n\r\n", 400),
        ];
        for (req, code) in cases {
            let r = one(&exchange(addr, &[req]).await);
            assert_eq!(r.code(), *code, "{:?}", String::from_utf8_lossy(req));
            assert_eq!(r.header("Content-Type"), Some("text/html"));
            assert_eq!(r.header("Connection"), Some("close"));
            let body = String::from_utf8(r.body).unwrap();
            let title = format!("{code} {}", status_text(*code));
            assert!(body.contains(&format!("<center><h1>{title}</h1></center>")));
            assert!(body.contains("<hr><center>MTProxy/1.0</center>"));
        }
        // Not HTTP at all (C would take it for TCP-RPC): closed without a word.
        for junk in [
            &b"PUT /stats HTTP/1.1\r\n\r\n"[..],
            b"\xee\xee\xee\xee\x00\x01",
            b"GE",
        ] {
            assert_eq!(exchange(addr, &[junk]).await, b"", "{junk:?}");
        }
        // The server lives on.
        assert_eq!(
            one(&exchange(addr, &[b"GET /stats HTTP/1.1\r\n\r\n"]).await).code(),
            200
        );
    }

    #[tokio::test]
    async fn request_split_across_writes() {
        let addr = start(false, Limits::default()).await;
        let parts: &[&[u8]] = &[
            b"G",
            b"ET",
            b" /st",
            b"ats HTTP/1.1\r",
            b"\nHost: x\r\n",
            b"\r",
            b"\n",
        ];
        let r = one(&exchange(addr, parts).await);
        assert_eq!(r.code(), 200);
        // One byte at a time.
        let req = b"GET /metrics HTTP/1.0\r\n\r\n";
        let bytes: Vec<&[u8]> = req.chunks(1).collect();
        assert_eq!(one(&exchange(addr, &bytes).await).code(), 200);
    }

    #[tokio::test]
    async fn keep_alive_and_pipelining() {
        let addr = start(false, Limits::default()).await;
        let raw = exchange(
            addr,
            &[b"GET /stats HTTP/1.1\r\nConnection: keep-alive\r\n\r\n\
               GET /nope HTTP/1.1\r\nconnection: KEEP-ALIVE\r\n\r\n\
               GET /metrics HTTP/1.1\r\n\r\n\
               GET /stats HTTP/1.1\r\n\r\n"],
        )
        .await;
        let r = responses(&raw);
        let got: Vec<(u16, Option<&str>)> = r
            .iter()
            .map(|x| (x.code(), x.header("Connection")))
            .collect();
        // The third request has no keep-alive: the connection ends after it.
        assert_eq!(
            got,
            [
                (200, Some("keep-alive")),
                (404, Some("keep-alive")),
                (200, Some("close"))
            ]
        );
        // Once in HTTP mode, an unknown method is a bad request.
        let raw = exchange(
            addr,
            &[b"GET /x HTTP/1.1\r\nConnection: keep-alive\r\n\r\nPUT /stats HTTP/1.1\r\n\r\n"],
        )
        .await;
        let codes: Vec<u16> = responses(&raw).iter().map(Resp::code).collect();
        assert_eq!(codes, [404, 400]);
    }

    #[tokio::test]
    async fn oversized_and_garbage_requests() {
        let addr = start(false, Limits::default()).await;
        let mut big = b"GET /".to_vec();
        big.resize(100_000, b'a');
        let r = one(&exchange(addr, &[&big]).await);
        assert_eq!(r.code(), 400);
        let mut hdrs = b"GET /stats HTTP/1.1\r\n".to_vec();
        for i in 0..2000 {
            hdrs.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        hdrs.extend_from_slice(b"\r\n");
        assert_eq!(one(&exchange(addr, &[&hdrs]).await).code(), 400);
        // Pseudo-random bytes after a valid prefix, deterministic.
        let mut x: u32 = 0x1234_5678;
        for len in [1usize, 7, 100, 5000, 40_000] {
            let mut junk = b"GET ".to_vec();
            junk.extend((0..len).map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }));
            let raw = exchange(addr, &[&junk]).await;
            // Nothing (EOF before the end of the head), an error page alone (the line
            // was taken for HTTP/0.9), or error responses.
            if raw.starts_with(b"<html>") {
                let page = String::from_utf8(raw).unwrap();
                assert!(page == error_page(400) || page == error_page(404), "{page}");
            } else if !raw.is_empty() {
                let r = responses(&raw);
                assert!(
                    r.iter().all(|x| x.code() == 400 || x.code() == 404),
                    "{r:?}"
                );
            }
        }
        let after = one(&exchange(addr, &[b"GET /stats HTTP/1.1\r\n\r\n"]).await);
        assert_eq!(after.code(), 200);
        assert!(String::from_utf8(after.body)
            .unwrap()
            .contains("\nhttp_bad_headers\t"));
    }

    async fn from_127_0_0_2(addr: SocketAddr) -> TcpStream {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        sock.connect(addr).await.unwrap()
    }

    #[tokio::test]
    async fn only_127_0_0_1_unless_allowed() {
        let addr = start(false, Limits::default()).await;
        let s = from_127_0_0_2(addr).await;
        let r = one(&exchange_on(s, &[b"GET /stats HTTP/1.1\r\n\r\n"]).await);
        assert_eq!(r.code(), 404);
        let s = from_127_0_0_2(addr).await;
        let r = one(&exchange_on(s, &[b"GET /metrics HTTP/1.1\r\n\r\n"]).await);
        assert_eq!(r.code(), 404);

        let open = start(true, Limits::default()).await;
        let s = from_127_0_0_2(open).await;
        let r = one(&exchange_on(s, &[b"GET /stats HTTP/1.1\r\n\r\n"]).await);
        assert_eq!(r.code(), 200);
    }

    #[tokio::test]
    async fn slow_requests_time_out() {
        let limits = Limits {
            read_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let addr = start(false, limits).await;
        // Nothing sent: the server closes by itself (read_all would fail the test otherwise).
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_all(&mut s).await, b"");
        // Half a request, then silence.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /stats HTTP/1.1\r\n").await.unwrap();
        assert_eq!(read_all(&mut s).await, b"");
    }

    /// A request whose bytes trickle in, each well within the deadline, is closed at the
    /// deadline of the whole request.
    #[tokio::test]
    async fn a_trickled_request_ends_at_its_deadline() {
        let limits = Limits {
            read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let addr = start(false, limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /stats HTTP/1.1\r\n").await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let trickle = tokio::spawn(async move {
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if wr.write_all(b"X").await.is_err() {
                    return true;
                }
            }
            false
        });
        let t = Instant::now();
        let mut sink = Vec::new();
        let got = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut sink)).await;
        assert!(got.is_ok(), "still open after 20 s");
        assert!(sink.is_empty());
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        trickle.abort();
    }

    /// Full: a new connection takes the slot of the one waiting longest for a request (here
    /// an answered keep-alive connection), which is closed.
    #[tokio::test]
    async fn connection_cap() {
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let addr = start(false, limits).await;
        // Hold the only slot with a keep-alive connection that has been answered.
        let mut held = TcpStream::connect(addr).await.unwrap();
        held.write_all(b"GET /x HTTP/1.1\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while !got.windows(7).any(|w| w == b"</html>") {
            let mut chunk = [0u8; 1024];
            let n = held.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        // A second connection is answered; the held one is closed for it.
        let raw = exchange(addr, &[b"GET /stats HTTP/1.1\r\n\r\n"]).await;
        assert_eq!(one(&raw).code(), 200);
        assert_eq!(read_all(&mut held).await, b"");
    }
}
