//! The fake ME driven by a minimal proxy-side client built here from the `mtproto_wire::rpc`
//! pieces (nonce, keys, handshake, frames, CBC): the two must agree before the fake ME is
//! used to judge the proxy.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mtproto_wire::obfs2::Tag;
use mtproto_wire::rpc::handshake::{check_me_handshake, proxy_handshake, HandshakeError};
use mtproto_wire::rpc::kdf::{derive_keys, KdfInput, Role};
use mtproto_wire::rpc::nonce::{check_me_nonce, key_select, NoncePacket};
use mtproto_wire::rpc::ops::{
    build_close_conn, build_ping, build_pong, build_proxy_req, parse_me_op, MeOp, ReqParams,
};
use mtproto_wire::rpc::{
    leading_padding, pad_to_block, AesCbcDecryptor, AesCbcEncryptor, CrcKind, FrameDecoder,
    FrameEncoder, ProcessId,
};
use mtproxy_testkit::fake_me::{simple_ack_confirm, FakeMe, FakeMeConfig, MeEvent, Responder};
use mtproxy_testkit::mtproto::{self, ResPq, REQ_PQ_MULTI};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for any single step; only hit when something is broken.
const LIMIT: Duration = Duration::from_secs(30);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

fn secret() -> Vec<u8> {
    (0..128u32).map(|i| (i * 37 + 11) as u8).collect()
}

fn now() -> i32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i32
}

fn client_addr() -> SocketAddr {
    "127.0.0.1:50001".parse().unwrap()
}

fn front_addr() -> SocketAddr {
    "127.0.0.1:443".parse().unwrap()
}

/// How the mini proxy deviates from a correct one.
#[derive(Clone, Default)]
struct Opts {
    no_crc32c_offer: bool,
    wrong_secret: bool,
    /// Port to name in the handshake's peer_pid instead of the ME's.
    wrong_peer_port: Option<u16>,
}

/// The proxy side of one ME connection, after the handshake.
struct MiniProxy {
    stream: TcpStream,
    enc: FrameEncoder,
    dec: FrameDecoder,
    cbc_out: Option<AesCbcEncryptor>,
    cbc_in: Option<AesCbcDecryptor>,
    raw: Vec<u8>,
    plain: Vec<u8>,
    crc32c: bool,
}

impl MiniProxy {
    async fn connect(me: SocketAddr, secret: &[u8]) -> io::Result<MiniProxy> {
        MiniProxy::connect_with(me, secret, Opts::default()).await
    }

    async fn connect_with(me: SocketAddr, secret: &[u8], opts: Opts) -> io::Result<MiniProxy> {
        let stream = TcpStream::connect(me).await?;
        stream.set_nodelay(true)?;
        let mut p = MiniProxy {
            stream,
            enc: FrameEncoder::new(),
            dec: FrameDecoder::new(),
            cbc_out: None,
            cbc_in: None,
            raw: Vec::new(),
            plain: Vec::new(),
            crc32c: false,
        };
        let mut secret = secret.to_vec();
        if opts.wrong_secret {
            secret[0] ^= 0xff;
        }
        let ts = now();
        let ours = NoncePacket::aes(&secret, ts, rand::random());
        p.send(&[ours.to_bytes().to_vec()]).await?;
        let payload = p.recv().await?;
        let theirs = check_me_nonce(&payload, key_select(&secret), ts)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        assert!(p.plain.is_empty(), "§1.4: nothing buffered after the nonce");
        let keys = derive_keys(
            &KdfInput {
                nonce_srv: theirs.nonce,
                nonce_clt: ours.nonce,
                client_ts: ts,
                server: p.stream.peer_addr()?,
                client: p.stream.local_addr()?,
                secret: &secret,
            },
            Role::Client,
        );
        let (e, d) = keys.ciphers();
        p.cbc_out = Some(e);
        p.cbc_in = Some(d);

        let pid = ProcessId::new(
            std::net::Ipv4Addr::LOCALHOST,
            ProcessId::NO_PORT,
            std::process::id(),
            ts,
        );
        let mut hs = proxy_handshake(pid, me);
        if opts.no_crc32c_offer {
            hs.flags = 0;
        }
        if let Some(port) = opts.wrong_peer_port {
            hs.peer_pid.port = port;
        }
        p.send(&[hs.to_bytes().to_vec()]).await?;
        let payload = p.recv().await?;
        let r = check_me_handshake(&payload, &pid, !opts.no_crc32c_offer)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if r.crc32c {
            p.enc.switch_crc(CrcKind::Crc32c);
            p.dec.switch_crc(CrcKind::Crc32c);
        }
        p.crc32c = r.crc32c;
        Ok(p)
    }

    /// One flush of frames (encrypted once keys are set).
    async fn send(&mut self, payloads: &[Vec<u8>]) -> io::Result<()> {
        let mut out = Vec::new();
        for pl in payloads {
            self.enc.encode(pl, &mut out);
        }
        if let Some(c) = &mut self.cbc_out {
            pad_to_block(&mut out, 0);
            c.encrypt(&mut out);
        }
        self.stream.write_all(&out).await
    }

    /// The next frame's payload.
    async fn recv(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some((n, r)) = self
                .dec
                .decode(&self.plain)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                let payload = self.plain[r].to_vec();
                self.plain.drain(..n);
                let pad = leading_padding(&self.plain);
                self.plain.drain(..pad);
                return Ok(payload);
            }
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            match &mut self.cbc_in {
                Some(c) => {
                    self.raw.extend_from_slice(&buf[..n]);
                    let k = c.decrypt(&mut self.raw);
                    self.plain.extend(self.raw.drain(..k));
                }
                None => self.plain.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The next operation from the ME, with its payload.
    async fn recv_op(&mut self) -> (MeOp, Vec<u8>) {
        let p = within(self.recv()).await.expect("frame from the ME");
        (parse_me_op(&p), p)
    }

    async fn proxy_req(&mut self, params: ReqParams, conn_id: i64, packet: &[u8]) {
        let mut out = Vec::new();
        build_proxy_req(
            &mut out,
            &params,
            conn_id,
            client_addr(),
            front_addr(),
            packet,
        );
        self.send(&[out]).await.unwrap();
    }

    /// Waits for a PROXY_ANS and returns (conn_id, data).
    async fn answer(&mut self) -> (i64, Vec<u8>) {
        match self.recv_op().await {
            (MeOp::ProxyAns { conn_id, data, .. }, p) => (conn_id, p[data].to_vec()),
            (other, _) => panic!("expected RPC_PROXY_ANS, got {other:?}"),
        }
    }

    /// Reads until the ME closes the connection; the frames seen before that.
    async fn until_eof(&mut self) -> Vec<MeOp> {
        let mut ops = Vec::new();
        loop {
            match within(self.recv()).await {
                Ok(p) => ops.push(parse_me_op(&p)),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return ops,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return ops,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
}

fn opaque_packet(n: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..n).map(|i| (i * 13 + 1) as u8).collect();
    p[0] = 0x42; // auth_key_id ≠ 0
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn handshake_with_crc32c_then_echo() {
    let me = FakeMe::start(FakeMeConfig::new(secret())).await.unwrap();
    let mut p = within(MiniProxy::connect(me.addr(), &secret()))
        .await
        .unwrap();
    assert!(p.crc32c, "the fake ME answers 0x800 by default");
    me.wait_ready(1, LIMIT).await.unwrap();

    // An unencrypted req_pq_multi from an abridged client, with a proxy tag.
    let req = mtproto::req_pq_with(REQ_PQ_MULTI, [9; 16]);
    let mut params = ReqParams::new(Tag::Abridged);
    params.unencrypted = true;
    params.proxy_tag = Some([0xaa; 16]);
    p.proxy_req(params, 0x400_0007, &req).await;
    assert_eq!(p.answer().await, (0x400_0007, req.clone()));

    // Many requests in one flush, answered in order through padding words.
    let packets: Vec<Vec<u8>> = (0..20).map(|i| opaque_packet(56 + 4 * i)).collect();
    let mut flush = Vec::new();
    for (i, pk) in packets.iter().enumerate() {
        let mut out = Vec::new();
        build_proxy_req(
            &mut out,
            &ReqParams::new(Tag::Intermediate),
            i as i64 + 1,
            client_addr(),
            front_addr(),
            pk,
        );
        flush.push(out);
    }
    p.send(&flush).await.unwrap();
    for (i, pk) in packets.iter().enumerate() {
        assert_eq!(p.answer().await, (i as i64 + 1, pk.clone()));
    }

    let ev = me.events();
    assert!(matches!(ev[0], MeEvent::Connected { conn: 0, me: a, .. } if a == me.addr()));
    assert!(ev.contains(&MeEvent::Ready {
        conn: 0,
        crc32c: true
    }));
    let first = ev
        .iter()
        .find(|e| matches!(e, MeEvent::ProxyReq { .. }))
        .unwrap();
    assert_eq!(
        *first,
        MeEvent::ProxyReq {
            conn: 0,
            conn_id: 0x400_0007,
            flags: 0x4002_100a,
            proxy_tag: Some([0xaa; 16]),
            client_addr: client_addr(),
            our_addr: front_addr(),
            packet_len: 40,
            packet_head: req.clone(),
            unencrypted: true,
            quick_ack: false,
        }
    );
    assert_eq!(me.count(|e| matches!(e, MeEvent::ProxyAnsSent { .. })), 21);
}

#[tokio::test(flavor = "multi_thread")]
async fn crc32_stays_when_me_or_proxy_says_so() {
    // The ME declines CRC32C.
    let me = FakeMe::start(FakeMeConfig::new(secret()).crc32c(false))
        .await
        .unwrap();
    let mut p = within(MiniProxy::connect(me.addr(), &secret()))
        .await
        .unwrap();
    assert!(!p.crc32c);
    p.proxy_req(ReqParams::new(Tag::Padded), 3, &opaque_packet(64))
        .await;
    assert_eq!(p.answer().await, (3, opaque_packet(64)));
    me.wait_for(LIMIT, |ev| {
        ev.contains(&MeEvent::Ready {
            conn: 0,
            crc32c: false,
        })
    })
    .await
    .unwrap();

    // The proxy does not offer it (like mtprotoproxy): the ME must not turn it on.
    let me2 = FakeMe::start(FakeMeConfig::new(secret())).await.unwrap();
    let opts = Opts {
        no_crc32c_offer: true,
        ..Opts::default()
    };
    let mut p = within(MiniProxy::connect_with(me2.addr(), &secret(), opts))
        .await
        .unwrap();
    assert!(!p.crc32c);
    p.proxy_req(ReqParams::new(Tag::Abridged), 4, &opaque_packet(56))
        .await;
    assert_eq!(p.answer().await, (4, opaque_packet(56)));
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_pong_both_ways() {
    let me = FakeMe::start(FakeMeConfig::new(secret()).ping_interval(Duration::from_millis(20)))
        .await
        .unwrap();
    let mut p = within(MiniProxy::connect(me.addr(), &secret()))
        .await
        .unwrap();

    // Our ping gets a pong with the same id (ME pings may come first).
    let mut ping = Vec::new();
    build_ping(&mut ping, 0x0102_0304_0506_0708);
    p.send(&[ping]).await.unwrap();
    let mut answered = 0;
    loop {
        match p.recv_op().await.0 {
            MeOp::Pong { id } => {
                assert_eq!(id, 0x0102_0304_0506_0708);
                break;
            }
            MeOp::Ping { id } => {
                let mut pong = Vec::new();
                build_pong(&mut pong, id);
                p.send(&[pong]).await.unwrap();
                answered += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The ME's own pings: answer two more and see the pongs arrive.
    while answered < 3 {
        match p.recv_op().await.0 {
            MeOp::Ping { id } => {
                let mut pong = Vec::new();
                build_pong(&mut pong, id);
                p.send(&[pong]).await.unwrap();
                answered += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let ev = me
        .wait_for(LIMIT, |ev| {
            ev.iter()
                .filter(|e| matches!(e, MeEvent::Pong { .. }))
                .count()
                >= 3
        })
        .await
        .unwrap();
    assert!(ev.contains(&MeEvent::Ping {
        conn: 0,
        id: 0x0102_0304_0506_0708
    }));
    let sent: Vec<i64> = ev
        .iter()
        .filter_map(|e| match e {
            MeEvent::PingSent { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    for e in &ev {
        if let MeEvent::Pong { id, .. } = e {
            assert!(sent.contains(id), "pong {id} for a ping never sent");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn res_pq_responder() {
    let me = FakeMe::start(FakeMeConfig::new(secret()).responder(Responder::ResPq))
        .await
        .unwrap();
    let mut p = within(MiniProxy::connect(me.addr(), &secret()))
        .await
        .unwrap();
    let (req, nonce) = mtproto::req_pq_multi();
    let mut params = ReqParams::new(Tag::Intermediate);
    params.unencrypted = true;
    p.proxy_req(params, 11, &req).await;
    let (conn_id, data) = p.answer().await;
    assert_eq!(conn_id, 11);
    let res = ResPq::parse(&data).expect("a resPQ");
    assert_eq!(res.nonce, nonce);
    // Anything else is echoed.
    p.proxy_req(ReqParams::new(Tag::Intermediate), 11, &opaque_packet(60))
        .await;
    assert_eq!(p.answer().await, (11, opaque_packet(60)));
}

#[tokio::test(flavor = "multi_thread")]
async fn simple_ack_comes_before_the_delayed_answer() {
    let delay = Duration::from_millis(150);
    let me = FakeMe::start(FakeMeConfig::new(secret()).simple_ack(true).delay(delay))
        .await
        .unwrap();
    let mut p = within(MiniProxy::connect(me.addr(), &secret()))
        .await
        .unwrap();
    let packet = opaque_packet(80);
    let mut params = ReqParams::new(Tag::Abridged);
    params.quick_ack = true;
    let t0 = Instant::now();
    p.proxy_req(params, -9, &packet).await;
    assert_eq!(
        p.recv_op().await.0,
        MeOp::SimpleAck {
            conn_id: -9,
            confirm: simple_ack_confirm(&packet)
        }
    );
    assert_eq!(p.answer().await, (-9, packet.clone()));
    assert!(t0.elapsed() >= delay, "answer not delayed");
    // Without the quick-ack flag: no ack, just the answer.
    p.proxy_req(ReqParams::new(Tag::Abridged), -9, &packet)
        .await;
    assert_eq!(p.answer().await, (-9, packet));
    assert_eq!(me.count(|e| matches!(e, MeEvent::SimpleAckSent { .. })), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn close_responder_close_session_and_close_conn() {
    let me = FakeMe::start(FakeMeConfig::new(secret()).responder(Responder::Close))
        .await
        .unwrap();
    let mut p = within(MiniProxy::connect(me.addr(), &secret()))
        .await
        .unwrap();
    p.proxy_req(ReqParams::new(Tag::Abridged), 21, &opaque_packet(56))
        .await;
    assert_eq!(p.recv_op().await.0, MeOp::CloseExt { conn_id: 21 });

    let me = FakeMe::start(FakeMeConfig::new(secret()).responder(Responder::Silent))
        .await
        .unwrap();
    let mut p = within(MiniProxy::connect(me.addr(), &secret()))
        .await
        .unwrap();
    p.proxy_req(ReqParams::new(Tag::Abridged), 22, &opaque_packet(56))
        .await;
    me.wait_for(LIMIT, |ev| {
        ev.iter()
            .any(|e| matches!(e, MeEvent::ProxyReq { conn_id: 22, .. }))
    })
    .await
    .unwrap();
    assert!(!me.close_session(23), "unknown session");
    assert!(me.close_session(22));
    assert_eq!(p.recv_op().await.0, MeOp::CloseExt { conn_id: 22 });
    assert!(!me.close_session(22), "already closed");

    let mut close = Vec::new();
    build_close_conn(&mut close, 24);
    p.send(&[close]).await.unwrap();
    me.wait_for(LIMIT, |ev| {
        ev.contains(&MeEvent::CloseConn {
            conn: 0,
            conn_id: 24,
        })
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_close_the_connection() {
    let me = FakeMe::start(FakeMeConfig::new(secret())).await.unwrap();

    // Wrong secret: key_select mismatch, closed without an answer.
    let r = within(MiniProxy::connect_with(
        me.addr(),
        &secret(),
        Opts {
            wrong_secret: true,
            ..Opts::default()
        },
    ))
    .await;
    assert!(r.is_err());
    // A peer_pid naming another port: handshake error −4 comes back, then the close.
    let r = within(MiniProxy::connect_with(
        me.addr(),
        &secret(),
        Opts {
            wrong_peer_port: Some(1),
            ..Opts::default()
        },
    ))
    .await;
    let e = r.err().expect("refused");
    let inner = e.into_inner().expect("handshake error");
    let he = inner
        .downcast::<HandshakeError>()
        .expect("a HandshakeError");
    assert_eq!(*he, HandshakeError::PeerError { code: -4 });
    let ev = me
        .wait_for(LIMIT, |ev| {
            ev.iter()
                .filter(|e| matches!(e, MeEvent::Disconnected { .. }))
                .count()
                >= 2
        })
        .await
        .unwrap();
    let errors: Vec<&String> = ev
        .iter()
        .filter_map(|e| match e {
            MeEvent::Error { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2, "{ev:?}");
    assert!(errors[0].contains("nonce refused (-3)"), "{}", errors[0]);
    assert!(
        errors[1].contains("handshake refused (-4)"),
        "{}",
        errors[1]
    );
    assert_eq!(me.count(|e| matches!(e, MeEvent::Ready { .. })), 0);

    // An ME whose clock is 100 s ahead refuses our nonce (−6).
    let mut cfg = FakeMeConfig::new(secret());
    cfg.clock_offset = 100;
    let skewed = FakeMe::start(cfg).await.unwrap();
    assert!(within(MiniProxy::connect(skewed.addr(), &secret()))
        .await
        .is_err());
    let ev = skewed
        .wait_for(LIMIT, |ev| {
            ev.iter().any(|e| matches!(e, MeEvent::Error { .. }))
        })
        .await
        .unwrap();
    assert!(ev.iter().any(
        |e| matches!(e, MeEvent::Error { reason, .. } if reason.contains("nonce refused (-6)"))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_listeners_drop_all_stop_and_restart() {
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut me = FakeMe::start(FakeMeConfig::new(secret()).listen_on([lo, lo]))
        .await
        .unwrap();
    let addrs = me.addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0], addrs[1]);
    let mut a = within(MiniProxy::connect(addrs[0], &secret()))
        .await
        .unwrap();
    let mut b = within(MiniProxy::connect(addrs[1], &secret()))
        .await
        .unwrap();
    me.wait_ready(2, LIMIT).await.unwrap();
    let ev = me.events();
    for (i, addr) in addrs.iter().enumerate() {
        assert!(
            ev.iter()
                .any(|e| matches!(e, MeEvent::Connected { me: m, .. } if m == addr)),
            "listener {i}"
        );
    }
    assert_eq!(me.live_connections(), 2);

    // Cut every connection: both clients see the close.
    assert_eq!(within(me.drop_all_connections()).await, 2);
    assert_eq!(me.live_connections(), 0);
    assert!(a.until_eof().await.is_empty());
    assert!(b.until_eof().await.is_empty());

    // Listeners still work.
    let mut c = within(MiniProxy::connect(addrs[1], &secret()))
        .await
        .unwrap();
    c.proxy_req(ReqParams::new(Tag::Abridged), 1, &opaque_packet(56))
        .await;
    assert_eq!(c.answer().await, (1, opaque_packet(56)));

    // Stop: the connection closes and nothing listens any more.
    within(me.stop()).await;
    assert!(!me.is_running());
    assert!(c.until_eof().await.is_empty());
    for addr in &addrs {
        let e = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }

    // Restart on the same ports, same event log.
    within(me.restart()).await.unwrap();
    assert_eq!(me.addrs(), &addrs[..]);
    let mut d = within(MiniProxy::connect(addrs[0], &secret()))
        .await
        .unwrap();
    d.proxy_req(ReqParams::new(Tag::Abridged), 2, &opaque_packet(60))
        .await;
    assert_eq!(d.answer().await, (2, opaque_packet(60)));
    me.wait_ready(4, LIMIT).await.unwrap();

    // A brand-new instance on the same fixed ports once this one is gone.
    within(me.stop()).await;
    drop(me);
    let me2 = FakeMe::start(FakeMeConfig::new(secret()).listen_on(addrs.clone()))
        .await
        .unwrap();
    assert_eq!(me2.addrs(), &addrs[..]);
    let mut e = within(MiniProxy::connect(addrs[1], &secret()))
        .await
        .unwrap();
    e.proxy_req(ReqParams::new(Tag::Abridged), 3, &opaque_packet(64))
        .await;
    assert_eq!(e.answer().await, (3, opaque_packet(64)));
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_non_loopback_and_bad_secrets() {
    let cfg = FakeMeConfig::new(secret()).listen_on(["0.0.0.0:0".parse().unwrap()]);
    assert!(FakeMe::start(cfg).await.is_err());
    assert!(FakeMe::start(FakeMeConfig::new(vec![1; 16])).await.is_err());
}
