//! The reference client: an obfuscated2 connection as a Telegram client opens it, for every
//! transport (abridged, intermediate, padded intermediate) and secret kind (a 16-byte
//! secret, or none at all as towards a DC or a proxy started without `-S`).
//!
//! It behaves like TDLib where that matters to a server: the header's random bytes are redrawn
//! until [`obfs2::is_acceptable_header`] holds, padded frames carry 0..15 random padding
//! bytes, and a reply is read with the server-side framing rules (bare quick-ack tokens,
//! `len & !3` in padded mode). Hooks for fault tests: the header can be sent in pieces,
//! arbitrary bytes can be written raw or through the cipher, and the socket can be taken out.
//!
//! What it is not: fake TLS (`ee` secrets) or anything above the transport; the payloads are
//! the caller's (see [`crate::mtproto`] for `req_pq_multi`). It only connects to loopback.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mtproto_wire::obfs2::{self, Tag, HEADER_LEN};
use mtproto_wire::transport::Side;
use rand::{Rng, RngCore};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::framing::{FrameReader, FrameWriter, Received};

/// How to open the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOpts {
    /// The 16-byte server secret; `None` for no-secret mode (raw header bytes as keys).
    pub secret: Option<[u8; 16]>,
    /// Transport named in the header.
    pub tag: Tag,
    /// DC id written into the header (signed LE16).
    pub dc: i16,
}

impl ClientOpts {
    /// `tag` with a secret, to DC 2.
    pub fn new(secret: [u8; 16], tag: Tag) -> Self {
        ClientOpts {
            secret: Some(secret),
            tag,
            dc: 2,
        }
    }

    /// `tag` without a secret (as towards a DC), to DC 2.
    pub fn no_secret(tag: Tag) -> Self {
        ClientOpts {
            secret: None,
            tag,
            dc: 2,
        }
    }

    /// The same with another DC id.
    pub fn dc(mut self, dc: i16) -> Self {
        self.dc = dc;
        self
    }
}

/// One frame from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerFrame {
    /// A packet's payload (padded intermediate: without the 0..3 padding bytes).
    Packet(Vec<u8>),
    /// A bare quick-ack token, as sent (top bit set).
    QuickAck(u32),
}

/// An open obfuscated2 connection.
pub struct Client {
    opts: ClientOpts,
    header: [u8; HEADER_LEN],
    reader: FrameReader<OwnedReadHalf>,
    writer: FrameWriter<OwnedWriteHalf>,
    quick_acks: VecDeque<u32>,
}

impl Client {
    /// Connects and sends the header in one write.
    pub async fn connect(addr: SocketAddr, opts: ClientOpts) -> io::Result<Client> {
        Client::handshake(
            connect_loopback(addr).await?,
            opts,
            acceptable_random(),
            None,
        )
        .await
    }

    /// Connects and sends the first `first_chunk_len` header bytes, waits `pause`, then
    /// sends the rest: for testing servers that must reassemble a split header.
    pub async fn from_header_split(
        addr: SocketAddr,
        opts: ClientOpts,
        first_chunk_len: usize,
        pause: Duration,
    ) -> io::Result<Client> {
        let split = Some((first_chunk_len.min(HEADER_LEN), pause));
        Client::handshake(
            connect_loopback(addr).await?,
            opts,
            acceptable_random(),
            split,
        )
        .await
    }

    /// Connects with a header built from the given 64 random bytes (bytes 56..62 are replaced
    /// by tag and DC id; nothing is redrawn): for replaying the same header twice.
    pub async fn connect_with_random(
        addr: SocketAddr,
        opts: ClientOpts,
        random: [u8; HEADER_LEN],
    ) -> io::Result<Client> {
        Client::handshake(connect_loopback(addr).await?, opts, random, None).await
    }

    /// Sends the header on an already connected stream (e.g. one with socket options set).
    pub async fn over_stream(stream: TcpStream, opts: ClientOpts) -> io::Result<Client> {
        Client::handshake(stream, opts, acceptable_random(), None).await
    }

    async fn handshake(
        stream: TcpStream,
        opts: ClientOpts,
        random: [u8; HEADER_LEN],
        split: Option<(usize, Duration)>,
    ) -> io::Result<Client> {
        stream.set_nodelay(true)?;
        let init = obfs2::initiate(random, opts.tag, opts.dc, opts.secret.as_ref());
        let (rd, mut wr) = stream.into_split();
        match split {
            Some((first, pause)) => {
                wr.write_all(&init.header[..first]).await?;
                wr.flush().await?;
                tokio::time::sleep(pause).await;
                wr.write_all(&init.header[first..]).await?;
            }
            None => wr.write_all(&init.header).await?,
        }
        wr.flush().await?;
        Ok(Client {
            opts,
            header: init.header,
            reader: FrameReader::new(rd, init.decrypt, opts.tag, Side::FromServer),
            writer: FrameWriter::new(wr, init.encrypt, opts.tag),
            quick_acks: VecDeque::new(),
        })
    }

    /// The options it was opened with.
    pub fn opts(&self) -> ClientOpts {
        self.opts
    }

    /// The 64 header bytes as they went on the wire.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        self.header
    }

    /// Sends one packet framed per the tag. Padded intermediate appends 0..15 random bytes
    /// (as TDLib does); the other transports need a payload that is a multiple of 4.
    pub async fn send_packet(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_packet_with(payload, false).await
    }

    /// [`send_packet`](Self::send_packet), optionally asking for a quick acknowledgement.
    pub async fn send_packet_with(&mut self, payload: &[u8], quick_ack: bool) -> io::Result<()> {
        let padding = if self.opts.tag == Tag::Padded {
            rand::thread_rng().gen_range(0..16)
        } else {
            0
        };
        self.send_frame(payload, padding, quick_ack).await
    }

    /// Sends one frame with exactly `padding` random padding bytes (padded intermediate only;
    /// must be 0 otherwise). A padded payload need not be a multiple of 4.
    pub async fn send_frame(
        &mut self,
        payload: &[u8],
        padding: usize,
        quick_ack: bool,
    ) -> io::Result<()> {
        self.writer.send(payload, padding, quick_ack).await
    }

    /// Encrypts `bytes` with the connection's stream and sends them with no framing: for
    /// broken frames (zero length, overlong, too large) inside a valid obfuscated stream.
    pub async fn send_encrypted_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.send_plain(bytes.to_vec()).await
    }

    /// Sends `bytes` exactly as given, bypassing the cipher (which does not advance): garbage.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_raw(bytes).await
    }

    /// The next packet from the server. Quick-ack tokens that arrive first are kept for
    /// [`take_quick_acks`](Self::take_quick_acks). The end of the stream is `UnexpectedEof`.
    pub async fn recv_packet(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.recv_frame().await? {
                ServerFrame::Packet(p) => return Ok(p),
                ServerFrame::QuickAck(t) => self.quick_acks.push_back(t),
            }
        }
    }

    /// The next frame from the server, quick acks included.
    pub async fn recv_frame(&mut self) -> io::Result<ServerFrame> {
        match self.reader.next().await? {
            Some(Received::Packet { payload, .. }) => Ok(ServerFrame::Packet(payload)),
            Some(Received::QuickAck(t)) => Ok(ServerFrame::QuickAck(t)),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )),
        }
    }

    /// Quick-ack tokens [`recv_packet`](Self::recv_packet) skipped over, oldest first.
    pub fn take_quick_acks(&mut self) -> Vec<u32> {
        self.quick_acks.drain(..).collect()
    }

    /// Half-closes: no more bytes to the server (replies can still be read).
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.writer.shutdown().await
    }

    /// Reads until the server closes the connection, throwing data away; returns how many
    /// bytes were buffered or arrived before the end. A reset counts as closed.
    pub async fn wait_closed(&mut self) -> io::Result<u64> {
        match self.reader.discard_to_end().await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(0),
            other => other,
        }
    }

    /// The socket, with both halves put back together. The cipher state is lost, so only
    /// raw bytes make sense after this.
    pub fn into_inner(self) -> TcpStream {
        let (rd, wr) = (self.reader.into_inner(), self.writer.into_inner());
        rd.reunite(wr).expect("halves of one stream")
    }
}

/// 64 random bytes whose header a TDLib client would send (spec §3.2). Bytes 0..8 are the
/// only ones the rule looks at and `initiate` leaves them alone.
fn acceptable_random() -> [u8; HEADER_LEN] {
    let mut rng = rand::thread_rng();
    let mut r = [0u8; HEADER_LEN];
    loop {
        rng.fill_bytes(&mut r);
        if obfs2::is_acceptable_header(&r) {
            return r;
        }
    }
}

async fn connect_loopback(addr: SocketAddr) -> io::Result<TcpStream> {
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the test client only connects to loopback, not {addr}"),
        ));
    }
    TcpStream::connect(addr).await
}
