//! A fake Telegram DC: what the proxy dials in direct mode.
//!
//! Each connection starts with a 64-byte obfuscated2 header, read in no-secret mode (a real
//! DC uses the header bytes themselves as keys), then frames of the tag the header names.
//! By default ([`Reply::Echo`]) every packet gets an answer in the same framing: an
//! unencrypted `req_pq_multi` / `req_pq` gets a `resPQ` built like a real DC's (see
//! [`crate::mtproto::res_pq`]), anything else comes back byte for byte. Padded-intermediate
//! answers carry 0..3 random padding bytes, as Telegram's servers send them.
//!
//! Every connection is recorded in a [`DcConnInfo`] that tests read with
//! [`FakeDc::connections`] or await with [`FakeDc::wait_until`]: no sleeping needed.
//!
//! What it is not: a DC. It knows no auth keys, sends no quick acks and never answers
//! encrypted messages with anything but their echo. It only listens on loopback.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mtproto_wire::obfs2::{self, Tag, HEADER_LEN};
use mtproto_wire::transport::{FrameError, Side};
use rand::Rng;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::observed::Observed;
use crate::serving::{loopback_only, Serving};
use mtproxy_client::framing::{FrameReader, FrameWriter, ReadError, Received};
use mtproxy_client::mtproto;

/// What the fake DC does with the packets it receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reply {
    /// Answer `req_pq(_multi)` with `resPQ`, echo everything else.
    #[default]
    Echo,
    /// Read and count, never answer (a DC that hangs). Bad framing does not close the
    /// connection either: the rest of the stream is read and thrown away.
    Silent,
}

/// How a [`FakeDc`] behaves. `DcConfig::default()` is the echoing DC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DcConfig {
    pub reply: Reply,
    /// Read the header (and record it), then close the connection.
    pub close_after_header: bool,
}

impl DcConfig {
    /// The default: answer every packet.
    pub fn echo() -> Self {
        DcConfig::default()
    }

    /// Never answer.
    pub fn silent(mut self) -> Self {
        self.reply = Reply::Silent;
        self
    }

    /// Close each connection right after its header.
    pub fn close_after_header(mut self) -> Self {
        self.close_after_header = true;
        self
    }
}

/// What the fake DC saw on one connection. Updated live; a snapshot is a clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcConnInfo {
    /// Accept order, from 0. Also the index in [`FakeDc::connections`].
    pub id: usize,
    /// The connecting address (the proxy's outbound socket).
    pub peer: SocketAddr,
    /// All 64 header bytes arrived.
    pub header_seen: bool,
    /// Transport from the header; `None` before it arrived or if it named no tag.
    pub tag: Option<Tag>,
    /// DC id from the header (signed, as sent); `None` like `tag`.
    pub dc: Option<i16>,
    /// Complete packets received.
    pub packets: u64,
    /// Of those, how many had the quick-ack flag set.
    pub quick_acks: u64,
    /// Sum of packet payload lengths (padded intermediate: `len & !3` each).
    pub payload_bytes: u64,
    /// Raw bytes read from the socket, header included.
    pub bytes_received: u64,
    /// `resPQ` answers sent.
    pub res_pq_sent: u64,
    /// The framing error that ended (or, when silent, stopped parsing on) the connection.
    pub frame_error: Option<FrameError>,
    /// The connection is over (peer closed, error, or the DC closed it).
    pub closed: bool,
}

impl DcConnInfo {
    fn new(id: usize, peer: SocketAddr) -> Self {
        DcConnInfo {
            id,
            peer,
            header_seen: false,
            tag: None,
            dc: None,
            packets: 0,
            quick_acks: 0,
            payload_bytes: 0,
            bytes_received: 0,
            res_pq_sent: 0,
            frame_error: None,
            closed: false,
        }
    }
}

/// What the accept loop, the connections and the handle share: the connections seen.
type Shared = Observed<DcConnInfo>;

/// A running fake DC. Dropping it stops the accept loop and every connection.
pub struct FakeDc {
    addr: SocketAddr,
    config: DcConfig,
    shared: Arc<Shared>,
    serving: Serving,
}

impl FakeDc {
    /// An echoing fake DC on `bind` (a loopback address; port 0 picks a free one).
    pub async fn start(bind: SocketAddr) -> io::Result<FakeDc> {
        FakeDc::start_with(bind, DcConfig::default()).await
    }

    /// A fake DC with the given behaviour.
    pub async fn start_with(bind: SocketAddr, config: DcConfig) -> io::Result<FakeDc> {
        loopback_only(bind, "the fake DC")?;
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let conns = shared.clone();
        let serving = Serving::start(listener, "fake DC", move |stream, peer, set| {
            let id = conns.push_with(|id| DcConnInfo::new(id, peer));
            set.spawn(serve(stream, id, config, conns.clone()));
        });
        Ok(FakeDc {
            addr,
            config,
            shared,
            serving,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How it behaves.
    pub fn config(&self) -> DcConfig {
        self.config
    }

    /// A snapshot of every connection accepted so far, in accept order.
    pub fn connections(&self) -> Vec<DcConnInfo> {
        self.shared.snapshot()
    }

    /// Waits until `pred` holds for the connection list, then returns that snapshot.
    /// Re-checked after every change; wrap it in `tokio::time::timeout` in tests.
    pub async fn wait_until(&self, pred: impl FnMut(&[DcConnInfo]) -> bool) -> Vec<DcConnInfo> {
        self.shared.wait_until(pred).await
    }

    /// Waits until at least `n` connections got past the header stage (the 64 bytes
    /// arrived, or the connection ended before that).
    pub async fn wait_connections(&self, n: usize) -> Vec<DcConnInfo> {
        self.wait_until(|c| c.iter().filter(|c| c.header_seen || c.closed).count() >= n)
            .await
    }

    /// Waits until the connections together received at least `n` packets.
    pub async fn wait_packets(&self, n: u64) -> Vec<DcConnInfo> {
        self.wait_until(|c| c.iter().map(|c| c.packets).sum::<u64>() >= n)
            .await
    }

    /// Waits until at least `n` connections are closed.
    pub async fn wait_closed(&self, n: usize) -> Vec<DcConnInfo> {
        self.wait_until(|c| c.iter().filter(|c| c.closed).count() >= n)
            .await
    }

    /// Stops accepting and closes every connection; returns once they are all gone.
    pub async fn shutdown(self) {
        self.serving.stop().await;
    }
}

/// One connection, start to end; always leaves it marked closed.
async fn serve(stream: TcpStream, id: usize, config: DcConfig, shared: Arc<Shared>) {
    serve_inner(stream, id, config, &shared).await;
    shared.update(id, |c| c.closed = true);
}

async fn serve_inner(stream: TcpStream, id: usize, config: DcConfig, shared: &Shared) {
    let (mut rd, wr) = stream.into_split();
    let mut header = [0u8; HEADER_LEN];
    if rd.read_exact(&mut header).await.is_err() {
        return;
    }
    let accepted = obfs2::accept(&header, &[]);
    shared.update(id, |c| {
        c.header_seen = true;
        c.bytes_received = HEADER_LEN as u64;
        if let Some(a) = &accepted {
            c.tag = Some(a.tag);
            c.dc = Some(a.dc);
        }
    });
    let Some(accepted) = accepted else { return };
    if config.close_after_header {
        return;
    }
    let tag = accepted.tag;
    let mut reader = FrameReader::new(rd, accepted.decrypt, tag, Side::FromClient);
    let mut writer = FrameWriter::new(wr, accepted.encrypt, tag);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();

    let read_side = async move {
        let end = loop {
            match reader.next().await {
                Ok(Some(Received::Packet { payload, quick_ack })) => {
                    let answer = match config.reply {
                        Reply::Silent => None,
                        Reply::Echo => Some(match mtproto::parse_req_pq(&payload) {
                            Some(nonce) => (mtproto::res_pq(nonce, rand::random()), true),
                            None => (payload.clone(), false),
                        }),
                    };
                    let read = reader.bytes_read;
                    shared.update(id, |c| {
                        c.packets += 1;
                        c.quick_acks += u64::from(quick_ack);
                        c.payload_bytes += payload.len() as u64;
                        c.bytes_received = HEADER_LEN as u64 + read;
                        c.res_pq_sent += u64::from(matches!(answer, Some((_, true))));
                    });
                    if let Some((answer, _)) = answer {
                        let _ = tx.send(answer);
                    }
                }
                // A client never sends bare quick-ack tokens; parse_frame does not produce them
                // for Side::FromClient.
                Ok(Some(Received::QuickAck(_))) => {}
                Ok(None) => break None,
                Err(ReadError::Frame(e)) => break Some(e),
                Err(ReadError::Io(_)) => break None,
            }
        };
        if let Some(e) = end {
            shared.update(id, |c| c.frame_error = Some(e));
            if config.reply == Reply::Silent {
                let _ = reader.discard_to_end().await;
            }
        }
        let read = reader.bytes_read;
        shared.update(id, |c| c.bytes_received = HEADER_LEN as u64 + read);
        // Dropping `tx` ends the write side once it has sent what is queued.
        drop(tx);
    };
    let write_side = async move {
        while let Some(payload) = rx.recv().await {
            let padding = if tag == Tag::Padded {
                rand::thread_rng().gen_range(0..4)
            } else {
                0
            };
            if writer.send(&payload, padding, false).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    };
    tokio::join!(read_side, write_side);
}
