//! The reference client talking straight to the fake DC (no proxy in between), in no-secret
//! mode as a DC expects: the two halves of the kit must agree with each other before they are
//! used to judge a proxy.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use mtproxy_testkit::mtproto::{self, ResPq};
use mtproxy_testkit::{
    parse_res_pq, req_pq_multi, Client, ClientOpts, DcConfig, FakeDc, FrameError, ServerFrame, Tag,
    MAX_FRAME,
};
use rand::RngCore;

/// Upper bound for any single step; only hit when something is broken.
const LIMIT: Duration = Duration::from_secs(60);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Padded intermediate delivers `len & !3` bytes, so up to 12 of the client's 0..15 padding
/// bytes come back with the echo; the other transports echo exactly.
fn assert_echo(tag: Tag, sent: &[u8], got: &[u8]) {
    if tag == Tag::Padded {
        assert!(
            got.len() >= sent.len() && got.len() - sent.len() <= 12 && got.len() & 3 == 0,
            "padded echo of {} bytes came back as {}",
            sent.len(),
            got.len()
        );
        assert!(got[..sent.len()] == *sent, "padded echo differs");
    } else {
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "echo differs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn req_pq_multi_gets_res_pq_in_every_transport() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    for (i, tag) in Tag::ALL.into_iter().enumerate() {
        let mut c = within(Client::connect(dc.addr(), ClientOpts::no_secret(tag)))
            .await
            .unwrap();
        let (req, nonce) = req_pq_multi();
        c.send_packet(&req).await.unwrap();
        let answer = within(c.recv_packet()).await.unwrap();
        assert_eq!(parse_res_pq(&answer), Some(nonce), "{tag:?}");
        let res = ResPq::parse(&answer).unwrap();
        assert_eq!(res.pq, mtproto::FAKE_PQ.to_be_bytes());
        assert_eq!(res.fingerprints, vec![mtproto::FAKE_FINGERPRINT]);
        let seen = dc.connections();
        assert_eq!(seen[i].tag, Some(tag));
        assert_eq!(seen[i].dc, Some(2));
        assert_eq!(seen[i].packets, 1);
        assert_eq!(seen[i].res_pq_sent, 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_req_pq_is_answered_too() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    let mut c = Client::connect(dc.addr(), ClientOpts::no_secret(Tag::Intermediate))
        .await
        .unwrap();
    let nonce = [0x42; 16];
    c.send_packet(&mtproto::req_pq_with(mtproto::REQ_PQ, nonce))
        .await
        .unwrap();
    assert_eq!(
        parse_res_pq(&within(c.recv_packet()).await.unwrap()),
        Some(nonce)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn echoes_small_medium_and_largest_payloads() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    for tag in Tag::ALL {
        // Padded: the client adds up to 15 bytes and the length field must stay <= MAX_FRAME.
        let largest = if tag == Tag::Padded {
            MAX_FRAME - 16
        } else {
            MAX_FRAME
        };
        let mut c = Client::connect(dc.addr(), ClientOpts::no_secret(tag))
            .await
            .unwrap();
        for n in [4, 1000, largest] {
            let payload = random_bytes(n);
            c.send_packet(&payload).await.unwrap();
            let got = within(c.recv_packet()).await.unwrap();
            assert_echo(tag, &payload, &got);
        }
    }
    let conns = dc.connections();
    assert_eq!(conns.len(), 3);
    for c in conns {
        assert_eq!(c.packets, 3);
        assert!(c.payload_bytes >= (4 + 1000 + MAX_FRAME - 16) as u64);
        assert!(c.bytes_received > c.payload_bytes);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_clients_ten_round_trips_each() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    let addr = dc.addr();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50usize {
        let tag = Tag::ALL[i % 3];
        tasks.spawn(async move {
            let mut c = Client::connect(addr, ClientOpts::no_secret(tag).dc((i % 5) as i16 + 1))
                .await
                .unwrap();
            let (req, nonce) = req_pq_multi();
            c.send_packet(&req).await.unwrap();
            assert_eq!(parse_res_pq(&c.recv_packet().await.unwrap()), Some(nonce));
            for round in 0..9usize {
                let payload = random_bytes(4 * (1 + (i * 37 + round * 101) % 1024));
                c.send_packet(&payload).await.unwrap();
                assert_echo(tag, &payload, &c.recv_packet().await.unwrap());
            }
        });
    }
    within(async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
    let conns = dc.connections();
    assert_eq!(conns.len(), 50);
    assert!(conns.iter().all(|c| c.packets == 10 && c.res_pq_sent == 1));
    let mut dcs: Vec<i16> = conns.iter().filter_map(|c| c.dc).collect();
    dcs.sort();
    dcs.dedup();
    assert_eq!(dcs, vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_packets_come_back_in_order() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    let mut c = Client::connect(dc.addr(), ClientOpts::no_secret(Tag::Abridged))
        .await
        .unwrap();
    let payloads: Vec<Vec<u8>> = (1..=30).map(|i| random_bytes(i * 4 * 50)).collect();
    for p in &payloads {
        c.send_packet(p).await.unwrap();
    }
    for p in &payloads {
        assert_eq!(&within(c.recv_packet()).await.unwrap(), p);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn header_fields_quick_ack_flags_and_close_are_recorded() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    let mut c = Client::connect(dc.addr(), ClientOpts::no_secret(Tag::Padded).dc(-3))
        .await
        .unwrap();
    c.send_packet_with(&[1, 2, 3, 4], true).await.unwrap();
    c.send_packet_with(&[5, 6, 7, 8], false).await.unwrap();
    within(c.recv_packet()).await.unwrap();
    within(c.recv_packet()).await.unwrap();
    c.shutdown_write().await.unwrap();
    assert_eq!(within(c.wait_closed()).await.unwrap(), 0);
    let conns = within(dc.wait_closed(1)).await;
    let info = &conns[0];
    assert_eq!((info.tag, info.dc), (Some(Tag::Padded), Some(-3)));
    assert_eq!((info.packets, info.quick_acks), (2, 1));
    assert!(info.peer.ip().is_loopback());
    assert_eq!(info.frame_error, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_padding_is_cut_to_len_and_not_3() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    let mut c = Client::connect(dc.addr(), ClientOpts::no_secret(Tag::Padded))
        .await
        .unwrap();
    let payload = random_bytes(40);
    // Length field 43: the DC keeps 40 bytes.
    c.send_frame(&payload, 3, false).await.unwrap();
    assert_eq!(within(c.recv_packet()).await.unwrap(), payload);
    // Length field 47: 44 bytes kept, one padding word included.
    c.send_frame(&payload, 7, false).await.unwrap();
    assert_eq!(within(c.recv_packet()).await.unwrap().len(), 44);
}

#[tokio::test(flavor = "multi_thread")]
async fn header_sent_in_pieces_is_reassembled() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    for first in [1, 8, 56, 63] {
        let opts = ClientOpts::no_secret(Tag::Intermediate);
        let mut c = within(Client::from_header_split(
            dc.addr(),
            opts,
            first,
            Duration::from_millis(20),
        ))
        .await
        .unwrap();
        let (req, nonce) = req_pq_multi();
        c.send_packet(&req).await.unwrap();
        assert_eq!(
            parse_res_pq(&within(c.recv_packet()).await.unwrap()),
            Some(nonce)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_dc_counts_but_never_answers() {
    let dc = FakeDc::start_with(loopback(), DcConfig::echo().silent())
        .await
        .unwrap();
    let mut c = Client::connect(dc.addr(), ClientOpts::no_secret(Tag::Abridged))
        .await
        .unwrap();
    let (req, _) = req_pq_multi();
    c.send_packet(&req).await.unwrap();
    let conns = within(dc.wait_packets(1)).await;
    assert_eq!(conns[0].res_pq_sent, 0);
    // Everything the DC will ever send has been decided: closing it must show no reply.
    within(dc.shutdown()).await;
    assert_eq!(within(c.wait_closed()).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_dc_swallows_bad_framing_without_closing() {
    let dc = FakeDc::start_with(loopback(), DcConfig::echo().silent())
        .await
        .unwrap();
    let mut c = Client::connect(dc.addr(), ClientOpts::no_secret(Tag::Intermediate))
        .await
        .unwrap();
    c.send_encrypted_raw(&[0, 0, 0, 0]).await.unwrap();
    c.send_raw(&random_bytes(1000)).await.unwrap();
    within(dc.wait_until(|c| c.first().is_some_and(|c| c.frame_error.is_some()))).await;
    c.shutdown_write().await.unwrap();
    let conns = within(dc.wait_closed(1)).await;
    assert_eq!(conns[0].frame_error, Some(FrameError::ZeroLength));
    assert_eq!(conns[0].bytes_received, 64 + 4 + 1000);
    assert_eq!(within(c.wait_closed()).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn close_after_header_records_then_closes() {
    let dc = FakeDc::start_with(loopback(), DcConfig::echo().close_after_header())
        .await
        .unwrap();
    let mut c = Client::connect(dc.addr(), ClientOpts::no_secret(Tag::Padded).dc(4))
        .await
        .unwrap();
    assert_eq!(within(c.wait_closed()).await.unwrap(), 0);
    let conns = within(dc.wait_closed(1)).await;
    assert_eq!(
        (conns[0].tag, conns[0].dc, conns[0].packets),
        (Some(Tag::Padded), Some(4), 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_framing_closes_the_connection() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    let cases: [(Tag, &[u8], FrameError); 3] = [
        (Tag::Abridged, &[0x00], FrameError::ZeroLength),
        (
            Tag::Abridged,
            &[0x7f, 0x05, 0x00, 0x00],
            FrameError::Overlong,
        ),
        (
            Tag::Intermediate,
            &[0x05, 0, 0, 0],
            FrameError::BadLength(5),
        ),
    ];
    for (i, (tag, bytes, err)) in cases.into_iter().enumerate() {
        let mut c = Client::connect(dc.addr(), ClientOpts::no_secret(tag))
            .await
            .unwrap();
        c.send_encrypted_raw(bytes).await.unwrap();
        within(c.wait_closed()).await.unwrap();
        let conns = within(dc.wait_closed(i + 1)).await;
        assert_eq!(conns[i].frame_error, Some(err));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_a_dc_cannot_read_are_closed() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    // A client using a secret: the DC reads raw keys, finds no tag, closes.
    let mut c = Client::connect(dc.addr(), ClientOpts::new([7; 16], Tag::Intermediate))
        .await
        .unwrap();
    within(c.wait_closed()).await.unwrap();
    // A connection that ends inside the header.
    let mut short = tokio::net::TcpStream::connect(dc.addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut short, &[1; 10])
        .await
        .unwrap();
    drop(short);
    let conns = within(dc.wait_closed(2)).await;
    let with_secret = conns.iter().find(|c| c.header_seen).unwrap();
    assert_eq!((with_secret.tag, with_secret.dc), (None, None));
    assert_eq!(conns.iter().filter(|c| !c.header_seen).count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_header_can_be_replayed() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    let random = [0x33; 64];
    let mut a =
        Client::connect_with_random(dc.addr(), ClientOpts::no_secret(Tag::Abridged), random)
            .await
            .unwrap();
    let mut b =
        Client::connect_with_random(dc.addr(), ClientOpts::no_secret(Tag::Abridged), random)
            .await
            .unwrap();
    assert_eq!(a.header(), b.header());
    for c in [&mut a, &mut b] {
        c.send_packet(&[9; 8]).await.unwrap();
        assert_eq!(
            within(c.recv_frame()).await.unwrap(),
            ServerFrame::Packet(vec![9; 8])
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_loopback_works_and_other_addresses_are_refused() {
    if let Ok(dc) = FakeDc::start("[::1]:0".parse().unwrap()).await {
        let mut c = Client::connect(dc.addr(), ClientOpts::no_secret(Tag::Intermediate))
            .await
            .unwrap();
        let (req, nonce) = req_pq_multi();
        c.send_packet(&req).await.unwrap();
        assert_eq!(
            parse_res_pq(&within(c.recv_packet()).await.unwrap()),
            Some(nonce)
        );
    }
    assert!(FakeDc::start("0.0.0.0:0".parse().unwrap()).await.is_err());
    assert!(Client::connect(
        "192.0.2.1:443".parse().unwrap(),
        ClientOpts::no_secret(Tag::Abridged)
    )
    .await
    .is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn client_refuses_frames_its_transport_cannot_express() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    let mut c = Client::connect(dc.addr(), ClientOpts::no_secret(Tag::Intermediate))
        .await
        .unwrap();
    assert!(c.send_packet(&[1, 2, 3]).await.is_err());
    assert!(c.send_frame(&[1, 2, 3, 4], 2, false).await.is_err());
    // Nothing was written: the connection still works.
    c.send_packet(&[1, 2, 3, 4]).await.unwrap();
    assert_eq!(within(c.recv_packet()).await.unwrap(), vec![1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_connections_open_at_once() {
    let dc = FakeDc::start(loopback()).await.unwrap();
    let mut clients = Vec::new();
    for i in 0..200usize {
        let opts = ClientOpts::no_secret(Tag::ALL[i % 3]);
        clients.push(within(Client::connect(dc.addr(), opts)).await.unwrap());
    }
    // All 200 are open on the DC side before any packet flows.
    within(dc.wait_connections(200)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in clients {
        tasks.spawn(async move {
            let (req, nonce) = req_pq_multi();
            c.send_packet(&req).await.unwrap();
            assert_eq!(parse_res_pq(&c.recv_packet().await.unwrap()), Some(nonce));
            c
        });
    }
    let mut still_open = Vec::new();
    within(async {
        while let Some(r) = tasks.join_next().await {
            still_open.push(r.unwrap());
        }
    })
    .await;
    let conns = dc.connections();
    assert_eq!(conns.len(), 200);
    assert!(conns.iter().all(|c| c.res_pq_sent == 1 && !c.closed));
    drop(still_open);
    within(dc.wait_closed(200)).await;
}
