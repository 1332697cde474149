//! The reference client in fake-TLS mode against a minimal fake-TLS server built here from
//! the wire pieces (`check_client_hello`, `build_server_hello`, `RecordReader`,
//! `obfs2::accept`), with no proxy in between: hello sizes, with and without
//! ChangeCipherSpec, record shapes, large echoes, and the checks a client makes (server
//! HMAC, record limits), plus the raw-hello helpers replay tests use.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mtproto_wire::obfs2;
use mtproto_wire::tls::{
    build_server_hello, check_client_hello, detect, write_records, Detect, ExtensionOrder,
    HelloVerdict, RecordReader, ReplayCache, SniPolicy, C_RECORD_PAYLOAD,
};
use mtproto_wire::transport::{encode_prefix, parse_frame, Frame, Side};
use mtproxy_testkit::tls_client::{self, write_app_records, TlsOpts};
use mtproxy_testkit::{
    req_pq_multi, server_hello_error, Client, ClientOpts, ServerFrame, ServerHelloError, Tag,
    MAX_FRAME,
};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const LIMIT: Duration = Duration::from_secs(60);
const SECRET: [u8; 16] = [0x11; 16];
const OTHER: [u8; 16] = [0x22; 16];
const DOMAIN: &str = "www.example.com";

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// How the in-test server behaves.
#[derive(Clone)]
struct ServerCfg {
    /// The secret hellos are checked with.
    secret: [u8; 16],
    /// The secret the reply's HMAC is made with (another one: a bad reply).
    reply_secret: [u8; 16],
    /// Payload size of the records the server sends.
    record_out: usize,
    /// Instead of the reply, send these bytes and close.
    raw_reply: Option<Vec<u8>>,
    /// Sent right after the reply (before the client's first record): raw wire bytes.
    after_reply: Vec<u8>,
}

impl Default for ServerCfg {
    fn default() -> Self {
        ServerCfg {
            secret: SECRET,
            reply_secret: SECRET,
            record_out: C_RECORD_PAYLOAD,
            raw_reply: None,
            after_reply: Vec::new(),
        }
    }
}

/// What the server saw on one connection.
#[derive(Clone, Debug, Default)]
struct Seen {
    hello_len: usize,
    /// `accept`, or the reject reason.
    verdict: String,
    timestamp: Option<i32>,
    /// Raw records from the client after the hello: (type, payload length).
    records: Vec<(u8, usize)>,
    /// TCP reads (raw sizes) after the hello.
    reads: Vec<usize>,
    tag: Option<Tag>,
    dc: Option<i16>,
    /// Packets echoed.
    packets: usize,
    /// Why the connection ended, if by error.
    error: Option<String>,
    closed: bool,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    changed: Arc<Notify>,
}

impl Server {
    async fn start(cfg: ServerCfg) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let changed = Arc::new(Notify::new());
        let cache = Arc::new(Mutex::new(ReplayCache::new(1000)));
        let (seen2, changed2) = (seen.clone(), changed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let idx = {
                    let mut s = seen2.lock().unwrap();
                    s.push(Seen::default());
                    s.len() - 1
                };
                let (cfg, seen, changed, cache) =
                    (cfg.clone(), seen2.clone(), changed2.clone(), cache.clone());
                tokio::spawn(async move {
                    let log = |f: &mut dyn FnMut(&mut Seen)| {
                        f(&mut seen.lock().unwrap()[idx]);
                        changed.notify_waiters();
                    };
                    let res = serve(sock, &cfg, &cache, &log).await;
                    log(&mut |s| {
                        s.error = res.as_ref().err().cloned();
                        s.closed = true;
                    });
                });
            }
        });
        Server {
            addr,
            seen,
            changed,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until connection `i` is closed on the server's side.
    async fn closed(&self, i: usize) -> Seen {
        within(async {
            loop {
                let notified = self.changed.notified();
                if let Some(s) = self.seen().get(i).filter(|s| s.closed) {
                    return s.clone();
                }
                // Notifications can be missed between the check and the wait; poll too.
                let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
            }
        })
        .await
    }
}

type Log<'a> = dyn Fn(&mut dyn FnMut(&mut Seen)) + Send + Sync + 'a;

async fn serve(
    mut sock: TcpStream,
    cfg: &ServerCfg,
    cache: &Mutex<ReplayCache>,
    log: &Log<'_>,
) -> Result<(), String> {
    sock.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    let need = loop {
        if let Detect::Hello { need } = detect(&buf) {
            if buf.len() >= need {
                break need;
            }
        } else if matches!(detect(&buf), Detect::NotTls) {
            return Err("not TLS".into());
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("eof in hello".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    log(&mut |s| s.hello_len = need);
    let verdict = check_client_hello(
        &buf[..need],
        buf.len() - need,
        &[cfg.secret],
        &[DOMAIN.to_string()],
        tls_client::unix_now(),
        &mut cache.lock().unwrap(),
        SniPolicy::AllowMissing,
        false,
    );
    let HelloVerdict::Accept {
        cipher,
        session_id,
        client_random,
        timestamp,
        ..
    } = verdict
    else {
        let HelloVerdict::Reject { reason, .. } = verdict else {
            unreachable!()
        };
        log(&mut |s| s.verdict = reason.name().to_string());
        // A proxy would forward to the site; closing is enough here.
        return Ok(());
    };
    log(&mut |s| {
        s.verdict = "accept".into();
        s.timestamp = Some(timestamp);
    });
    if let Some(raw) = &cfg.raw_reply {
        sock.write_all(raw).await.map_err(|e| e.to_string())?;
        return Ok(());
    }
    let reply = build_server_hello(
        &cfg.reply_secret,
        &client_random,
        &session_id,
        cipher,
        &random_bytes(32).try_into().unwrap(),
        &random_bytes(2500),
        ExtensionOrder::KeyShareFirst,
    );
    let mut out = reply;
    out.extend_from_slice(&cfg.after_reply);
    sock.write_all(&out).await.map_err(|e| e.to_string())?;

    // The client's records: logged raw, stripped by the wire reader.
    let mut records = RecordReader::new();
    let mut scan = RecordScan::default();
    let mut plain = Vec::new();
    let mut pos = 0;
    let mut accepted: Option<obfs2::Accepted> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = sock.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        let raw = &chunk[..n];
        let new_records = scan.feed(raw);
        log(&mut |s| {
            s.reads.push(n);
            s.records.extend_from_slice(&new_records);
        });
        let old = plain.len();
        records
            .feed(raw, &mut plain)
            .map_err(|e| format!("records: {e}"))?;
        let a = match &mut accepted {
            Some(a) => {
                a.decrypt.apply(&mut plain[old..]);
                a
            }
            None if plain.len() < 64 => continue,
            None => {
                let header: [u8; 64] = plain[..64].try_into().unwrap();
                let a = obfs2::accept(&header, &[cfg.secret]).ok_or("bad header")?;
                log(&mut |s| {
                    s.tag = Some(a.tag);
                    s.dc = Some(a.dc);
                });
                plain.drain(..64);
                let a = accepted.insert(a);
                a.decrypt.apply(&mut plain);
                a
            }
        };
        // Echo every complete packet.
        let mut wire = Vec::new();
        loop {
            let avail = &plain[pos..];
            let f = parse_frame(a.tag, Side::FromClient, avail).map_err(|e| e.to_string())?;
            let Some(Frame::Packet {
                prefix, payload, ..
            }) = f.filter(|f| f.total_len() <= avail.len())
            else {
                break;
            };
            let body = avail[prefix..prefix + payload].to_vec();
            let total = f.unwrap().total_len();
            pos += total;
            let mut p = [0u8; 4];
            let plen = encode_prefix(a.tag, body.len(), 0, false, &mut p);
            let mut frame = p[..plen].to_vec();
            frame.extend_from_slice(&body);
            a.encrypt.apply(&mut frame);
            write_records(&frame, cfg.record_out, &mut wire);
            log(&mut |s| s.packets += 1);
        }
        plain.drain(..pos);
        pos = 0;
        if !wire.is_empty() {
            sock.write_all(&wire).await.map_err(|e| e.to_string())?;
        }
    }
}

/// Finds record boundaries in raw bytes, whatever the chunking.
#[derive(Default)]
struct RecordScan {
    header: Vec<u8>,
    left: usize,
}

impl RecordScan {
    fn feed(&mut self, mut raw: &[u8]) -> Vec<(u8, usize)> {
        let mut found = Vec::new();
        while !raw.is_empty() {
            if self.left > 0 {
                let n = self.left.min(raw.len());
                self.left -= n;
                raw = &raw[n..];
                continue;
            }
            self.header.push(raw[0]);
            raw = &raw[1..];
            if self.header.len() == 5 {
                let len = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                found.push((self.header[0], len));
                self.left = len;
                self.header.clear();
            }
        }
        found
    }
}

/// Padded intermediate echoes `len & !3` of payload + padding: up to 12 padding bytes
/// come back.
fn assert_padded_echo(sent: &[u8], got: &[u8]) {
    assert!(
        got.len() >= sent.len() && got.len() - sent.len() <= 12 && got.len().is_multiple_of(4),
        "echo of {} bytes came back as {}",
        sent.len(),
        got.len()
    );
    assert!(got[..sent.len()] == *sent, "echo differs");
}

fn opts() -> ClientOpts {
    ClientOpts::tls(SECRET, Some(DOMAIN.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_and_req_pq_for_every_hello_size_with_and_without_ccs() {
    let server = Server::start(ServerCfg::default()).await;
    let mut i = 0;
    for len in [517, 1024, 1823] {
        for ccs in [true, false] {
            let o = opts().hello_len(len).send_ccs(ccs);
            let mut c = within(Client::connect(server.addr, o)).await.unwrap();
            assert_eq!(c.tls_hello().unwrap().len(), len);
            assert_eq!(c.tls_server_hello().unwrap().len(), 127 + 6 + 5 + 2500);
            assert!(c.header_pending());
            let (req, _) = req_pq_multi();
            c.send_packet(&req).await.unwrap();
            assert!(!c.header_pending());
            let back = within(c.recv_packet()).await.unwrap();
            assert_padded_echo(&req, &back);
            drop(c);
            let s = server.closed(i).await;
            assert_eq!(s.hello_len, len);
            assert_eq!(s.verdict, "accept");
            let ts = i64::from(s.timestamp.unwrap());
            assert!((ts - tls_client::unix_now()).abs() < 10);
            assert_eq!((s.tag, s.dc), (Some(Tag::Padded), Some(2)));
            // TDLib's shape: [CCS], then one record with the header and the whole frame.
            let first = if ccs {
                assert_eq!(s.records[0], (0x14, 1));
                1
            } else {
                0
            };
            assert_eq!(s.records[first].0, 0x17);
            let frame_len = s.records[first].1 - 64;
            assert!((4 + req.len()..4 + req.len() + 16).contains(&frame_len));
            assert_eq!(s.records.len(), first + 1, "{:?}", s.records);
            // CCS and the record travel in one write.
            assert_eq!(s.reads.len(), 1, "{:?}", s.reads);
            assert_eq!(s.packets, 1);
            assert_eq!(s.error, None);
            i += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sni_and_other_dc() {
    let server = Server::start(ServerCfg::default()).await;
    let mut c = within(Client::connect(
        server.addr,
        ClientOpts::tls(SECRET, None).dc(-4),
    ))
    .await
    .unwrap();
    let p = random_bytes(64);
    c.send_packet(&p).await.unwrap();
    assert_padded_echo(&p, &within(c.recv_packet()).await.unwrap());
    drop(c);
    let s = server.closed(0).await;
    assert_eq!(s.dc, Some(-4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_alone_in_first_record_when_asked() {
    let server = Server::start(ServerCfg::default()).await;
    let o = ClientOpts::tls(SECRET, Some(DOMAIN.into()))
        .with_tls(TlsOpts::telethon(Some(DOMAIN.into())));
    let mut c = within(Client::connect(server.addr, o)).await.unwrap();
    assert!(!c.header_pending());
    let p = random_bytes(100);
    c.send_packet(&p).await.unwrap();
    assert_padded_echo(&p, &within(c.recv_packet()).await.unwrap());
    drop(c);
    let s = server.closed(0).await;
    assert_eq!(s.records[0], (0x17, 64), "{:?}", s.records);
    assert_eq!(s.records[1].0, 0x17);
    assert!(s.records[1].1 >= 104);
    // Header and payload of each record in separate writes: at least 4 writes, though
    // the server may read some together.
    assert_eq!(s.reads.iter().sum::<usize>(), 5 + 64 + 5 + s.records[1].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_frames_up_to_max_frame_across_records() {
    let server = Server::start(ServerCfg::default()).await;
    for (i, record_max) in [2878, 16_384, 1000, 65_535].into_iter().enumerate() {
        let mut c = within(Client::connect(server.addr, opts().record_max(record_max)))
            .await
            .unwrap();
        let mut sent_bytes = 0;
        for size in [4, 2000, 2880, 16_388, 100_000, MAX_FRAME - 16] {
            let p = random_bytes(size);
            c.send_packet(&p).await.unwrap();
            sent_bytes += size;
            assert_padded_echo(&p, &within(c.recv_packet()).await.unwrap());
        }
        c.shutdown_write().await.unwrap();
        assert_eq!(within(c.wait_closed()).await.unwrap(), 0);
        let s = server.closed(i).await;
        assert_eq!(s.packets, 6);
        assert_eq!(s.error, None);
        let data: Vec<usize> = s.records[1..].iter().map(|r| r.1).collect();
        // The first record: the header and the whole first (small) frame.
        assert!(
            (64 + 8..64 + 24).contains(&data[0]),
            "{record_max}: {}",
            data[0]
        );
        assert!(data.iter().all(|&n| n <= record_max.max(64)));
        assert!(data.contains(&record_max), "{record_max}");
        assert!(data.iter().sum::<usize>() >= sent_bytes + 64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reads_tiny_and_large_server_records() {
    for record_out in [1, 7, 16_384] {
        let server = Server::start(ServerCfg {
            record_out,
            ..ServerCfg::default()
        })
        .await;
        let mut c = within(Client::connect(server.addr, opts())).await.unwrap();
        for size in [8, 3000, 40_000] {
            // Multiples of 4: padded intermediate delivers `len & !3` bytes.
            let p = random_bytes(size);
            c.send_packet(&p).await.unwrap();
            assert_padded_echo(&p, &within(c.recv_packet()).await.unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_server_hmac_fails_the_connect() {
    let server = Server::start(ServerCfg {
        reply_secret: OTHER,
        ..ServerCfg::default()
    })
    .await;
    let err = within(Client::connect(server.addr, opts()))
        .await
        .err()
        .expect("connect must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(server_hello_error(&err), Some(ServerHelloError::BadHmac));
    // Nothing after the hello was sent.
    let s = server.closed(0).await;
    assert_eq!(s.verdict, "accept");
    assert!(s.records.is_empty(), "{:?}", s.records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_missing_replies_fail_the_connect() {
    let server = Server::start(ServerCfg {
        raw_reply: Some(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        ..ServerCfg::default()
    })
    .await;
    let err = within(Client::connect(server.addr, opts()))
        .await
        .err()
        .unwrap();
    assert_eq!(server_hello_error(&err), Some(ServerHelloError::Malformed));

    // A hello the server rejects (wrong secret): it closes without a word.
    let server = Server::start(ServerCfg::default()).await;
    let err = within(Client::connect(
        server.addr,
        ClientOpts::tls(OTHER, Some(DOMAIN.into())),
    ))
    .await
    .err()
    .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(server.closed(0).await.verdict, "no_secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_hello_is_rejected_by_timestamp() {
    let server = Server::start(ServerCfg::default()).await;
    let err = within(Client::connect(server.addr, opts().unix_time_offset(-3600)))
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    let s = server.closed(0).await;
    assert_eq!(s.verdict, "timestamp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_hello_is_not_answered() {
    let server = Server::start(ServerCfg::default()).await;
    let o = opts();
    let (mut s1, hello) = within(Client::tls_hello_only(server.addr, &o))
        .await
        .unwrap();
    let reply = within(tls_client::read_server_hello(&mut s1, &SECRET, &hello))
        .await
        .unwrap();
    assert_eq!(reply.reply.len(), 127 + 6 + 5 + 2500);
    assert!(reply.extra.is_empty());

    let mut s2 = within(Client::send_raw_hello(server.addr, &hello))
        .await
        .unwrap();
    let err = within(tls_client::read_server_hello(&mut s2, &SECRET, &hello))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(server.closed(1).await.verdict, "replay");

    // The hello of a full connection replays the same way.
    let c = within(Client::connect(server.addr, o)).await.unwrap();
    let hello = c.tls_hello().unwrap().to_vec();
    let mut s3 = within(Client::send_raw_hello(server.addr, &hello))
        .await
        .unwrap();
    assert!(
        within(tls_client::read_server_hello(&mut s3, &SECRET, &hello))
            .await
            .is_err()
    );
    assert_eq!(server.closed(3).await.verdict, "replay");
    drop((s1, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tag_inside_tls_is_sent_as_asked() {
    let server = Server::start(ServerCfg::default()).await;
    let mut c = within(Client::connect(server.addr, opts().tag(Tag::Abridged)))
        .await
        .unwrap();
    let p = random_bytes(40);
    c.send_packet(&p).await.unwrap();
    assert_eq!(within(c.recv_packet()).await.unwrap(), p);
    drop(c);
    assert_eq!(server.closed(0).await.tag, Some(Tag::Abridged));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_split_and_held_header_flushes() {
    let server = Server::start(ServerCfg::default()).await;
    // Split inside the first record's header bytes.
    let mut c = within(Client::from_header_split(
        server.addr,
        opts(),
        10,
        Duration::from_millis(30),
    ))
    .await
    .unwrap();
    assert!(!c.header_pending());
    let p = random_bytes(12);
    c.send_packet(&p).await.unwrap();
    assert_padded_echo(&p, &within(c.recv_packet()).await.unwrap());
    drop(c);
    let s = server.closed(0).await;
    assert_eq!(s.records[..2], [(0x14, 1), (0x17, 64)]);
    assert!(s.reads.len() >= 2, "{:?}", s.reads);

    // A held header goes out before a half-close.
    let mut c = within(Client::connect(server.addr, opts())).await.unwrap();
    assert!(c.header_pending());
    c.shutdown_write().await.unwrap();
    assert_eq!(within(c.wait_closed()).await.unwrap(), 0);
    let s = server.closed(1).await;
    assert_eq!(s.records, [(0x14, 1), (0x17, 64)]);
    assert_eq!(s.tag, Some(Tag::Padded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_raw_and_raw_records() {
    let server = Server::start(ServerCfg::default()).await;
    let mut c = within(Client::connect(server.addr, opts())).await.unwrap();
    // A frame written byte by byte through the cipher: one record per call.
    let p = random_bytes(20);
    let mut frame = (p.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&p);
    for b in &frame {
        c.send_encrypted_raw(&[*b]).await.unwrap();
    }
    assert_eq!(within(c.recv_packet()).await.unwrap(), p);
    // Garbage outside records: the server's record reader gives up.
    let mut rec = Vec::new();
    write_app_records(&[0; 3], 10, &mut rec);
    rec[0] = 0x15;
    c.send_raw(&rec).await.unwrap();
    within(c.wait_closed()).await.unwrap();
    let s = server.closed(0).await;
    assert_eq!(s.records.len(), 1 + frame.len() + 1);
    assert!(s.error.unwrap().contains("unexpected TLS record type 0x15"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sends_bad_records_client_errors() {
    // A record over 16384 bytes right after the reply: TDLib would drop the connection.
    let mut big = Vec::new();
    write_app_records(&[0; 16_385], 65_535, &mut big);
    let server = Server::start(ServerCfg {
        after_reply: big,
        ..ServerCfg::default()
    })
    .await;
    let mut c = within(Client::connect(server.addr, opts())).await.unwrap();
    let err = within(c.recv_frame()).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");

    // A second ChangeCipherSpec after the reply.
    let server = Server::start(ServerCfg {
        after_reply: tls_client::CHANGE_CIPHER_SPEC.to_vec(),
        ..ServerCfg::default()
    })
    .await;
    let mut c = within(Client::connect(server.addr, opts())).await.unwrap();
    assert!(matches!(
        within(c.recv_frame()).await,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData
    ));

    // Records that arrive in the same read as the reply are not lost (empty ones here: the
    // server has no keys before the client's header).
    let server = Server::start(ServerCfg {
        after_reply: [[0x17, 3, 3, 0, 0]; 2].concat(),
        ..ServerCfg::default()
    })
    .await;
    let mut c = within(Client::connect(server.addr, opts())).await.unwrap();
    let p = random_bytes(8);
    c.send_packet_with(&p, true).await.unwrap();
    assert!(matches!(
        within(c.recv_frame()).await.unwrap(),
        ServerFrame::Packet(got) if got[..8] == p[..]
    ));
}
