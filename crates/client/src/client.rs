//! The reference client: an obfuscated2 connection as a Telegram client opens it, for every
//! transport (abridged, intermediate, padded intermediate) and secret kind (a 16-byte
//! secret, or none at all as towards a DC or a proxy started without `-S`), optionally
//! inside fake TLS (`ee` secrets, [`ClientOpts::tls`]).
//!
//! It behaves like TDLib where that matters to a server: the header's random bytes are redrawn
//! until [`obfs2::is_acceptable_header`] holds, padded frames carry 0..15 random padding
//! bytes, and a reply is read with the server-side framing rules (bare quick-ack tokens,
//! `len & !3` in padded mode). Hooks for fault tests: the header can be sent in pieces,
//! arbitrary bytes can be written raw or through the cipher, and the socket can be taken out.
//!
//! Fake TLS (spec §5.3–5.12, TDLib's behaviour unless [`TlsOpts`] says otherwise): the
//! ClientHello is built by the wire builder (HMAC random, current time plus an offset), and
//! the reply's server HMAC is checked: a bad one fails the connect with a
//! [`ServerHelloError`](mtproto_wire::tls::ServerHelloError) inside the `io::Error` (see
//! [`tls_client::server_hello_error`]). Then a ChangeCipherSpec and the obfuscated2 stream
//! in `17 03 03` records follow. By default the header is held back and goes in one record
//! with the first bytes sent, as TDLib does; everything else (framing, ciphers, the methods
//! below) is as without TLS. The server's records are stripped with the wire
//! [`RecordReader`](mtproto_wire::tls::RecordReader) (records over 16 384 bytes are errors,
//! as in TDLib). Inside TLS the header's random bytes are not filtered (TDLib does not
//! either). For replay tests, [`Client::tls_hello_only`] and [`Client::send_raw_hello`] stop
//! after the hello.
//!
//! What it is not: a real TLS stack or anything above the transport; the payloads are the
//! caller's (see [`crate::mtproto`] for `req_pq_multi`). It only connects to loopback.

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
use crate::tls_client::{self, TlsOpts, TlsOut};

/// How to open the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOpts {
    /// The 16-byte server secret; `None` for no-secret mode (raw header bytes as keys).
    pub secret: Option<[u8; 16]>,
    /// Transport named in the header.
    pub tag: Tag,
    /// DC id written into the header (signed LE16).
    pub dc: i16,
    /// Fake TLS around the obfuscated2 stream (needs `secret`); `None`: plain obfuscated2.
    pub tls: Option<TlsOpts>,
    /// Plain obfuscated2: hold the header back and send it in one write with the first
    /// frame (`false`: alone, at connect). In fake TLS see
    /// [`TlsOpts::header_with_first_frame`].
    pub header_with_first_frame: bool,
}

impl ClientOpts {
    /// `tag` with a secret, to DC 2.
    pub fn new(secret: [u8; 16], tag: Tag) -> Self {
        ClientOpts {
            secret: Some(secret),
            tag,
            dc: 2,
            tls: None,
            header_with_first_frame: false,
        }
    }

    /// `tag` without a secret (as towards a DC), to DC 2.
    pub fn no_secret(tag: Tag) -> Self {
        ClientOpts {
            secret: None,
            tag,
            dc: 2,
            tls: None,
            header_with_first_frame: false,
        }
    }

    /// Fake TLS as TDLib does it with an `ee` secret: padded intermediate inside, to DC 2,
    /// SNI `domain` (`None`: no SNI), a 517-byte hello, ChangeCipherSpec, records of up to
    /// 2878 bytes, the header in one record with the first frame ([`TlsOpts::default`]).
    pub fn tls(secret: [u8; 16], domain: Option<String>) -> Self {
        ClientOpts {
            secret: Some(secret),
            tag: Tag::Padded,
            dc: 2,
            tls: Some(TlsOpts::new(domain)),
            header_with_first_frame: false,
        }
    }

    /// The same with another DC id.
    pub fn dc(mut self, dc: i16) -> Self {
        self.dc = dc;
        self
    }

    /// The same with another transport (inside TLS only `dd` is valid: for checking that
    /// the proxy refuses the others).
    pub fn tag(mut self, tag: Tag) -> Self {
        self.tag = tag;
        self
    }

    /// The same with these fake-TLS options (e.g. [`TlsOpts::telethon`]).
    pub fn with_tls(mut self, tls: TlsOpts) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Fake TLS: ClientHello length (517, 1024, 1823, …). Panics without TLS options.
    pub fn hello_len(mut self, len: usize) -> Self {
        self.tls_mut("hello_len").hello_len = len;
        self
    }

    /// Fake TLS: send the ChangeCipherSpec or not. Panics without TLS options.
    pub fn send_ccs(mut self, send: bool) -> Self {
        self.tls_mut("send_ccs").send_ccs = send;
        self
    }

    /// Fake TLS: payload bytes per record sent. Panics without TLS options.
    pub fn record_max(mut self, max: usize) -> Self {
        self.tls_mut("record_max").record_max = max;
        self
    }

    /// Fake TLS: seconds added to the hello's timestamp. Panics without TLS options.
    pub fn unix_time_offset(mut self, secs: i64) -> Self {
        self.tls_mut("unix_time_offset").unix_time_offset = secs;
        self
    }

    /// Hold the header for the first frame or send it alone right away. Fake TLS: `true`
    /// by default (TDLib); plain obfuscated2: `false` by default.
    pub fn header_with_first_frame(mut self, hold: bool) -> Self {
        match self.tls.as_mut() {
            Some(tls) => tls.header_with_first_frame = hold,
            None => self.header_with_first_frame = hold,
        }
        self
    }

    fn tls_mut(&mut self, what: &str) -> &mut TlsOpts {
        self.tls
            .as_mut()
            .unwrap_or_else(|| panic!("ClientOpts::{what} needs fake-TLS options"))
    }

    /// The secret, which fake TLS requires.
    fn tls_secret(&self) -> io::Result<[u8; 16]> {
        self.secret
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "fake TLS needs a secret"))
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

/// An open obfuscated2 connection (in fake TLS, after the handshake).
pub struct Client {
    opts: ClientOpts,
    header: [u8; HEADER_LEN],
    reader: FrameReader<OwnedReadHalf>,
    writer: FrameWriter<OwnedWriteHalf>,
    quick_acks: VecDeque<u32>,
    /// Fake TLS: the ClientHello sent and the proxy's checked reply.
    tls_hello: Option<(Vec<u8>, Vec<u8>)>,
}

impl Client {
    /// Connects and sends the header in one write. In fake TLS: does the handshake first
    /// (failing on a reply without the right HMAC), and by default holds the header back
    /// for the first frame (see [`TlsOpts::header_with_first_frame`]).
    pub async fn connect(addr: SocketAddr, opts: ClientOpts) -> io::Result<Client> {
        let random = fresh_random(&opts);
        Client::handshake(connect_loopback(addr).await?, opts, random, None).await
    }

    /// Connects and sends the first `first_chunk_len` header bytes, waits `pause`, then
    /// sends the rest: for testing servers that must reassemble a split header. In fake TLS
    /// the header is sent right after the handshake in a record of its own, and the split is
    /// in the TCP writes within that record (after the ChangeCipherSpec and record header).
    pub async fn from_header_split(
        addr: SocketAddr,
        opts: ClientOpts,
        first_chunk_len: usize,
        pause: Duration,
    ) -> io::Result<Client> {
        let split = Some((first_chunk_len.min(HEADER_LEN), pause));
        let random = fresh_random(&opts);
        Client::handshake(connect_loopback(addr).await?, opts, random, split).await
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

    /// Sends the header on an already connected stream (e.g. one with socket options set);
    /// in fake TLS, the handshake first.
    pub async fn over_stream(stream: TcpStream, opts: ClientOpts) -> io::Result<Client> {
        let random = fresh_random(&opts);
        Client::handshake(stream, opts, random, None).await
    }

    /// Fake TLS: connects and sends a fresh ClientHello built from `opts` (which must have
    /// TLS options and a secret), nothing more. Returns the stream, the proxy's answer
    /// unread, and the hello, for replaying it with [`Client::send_raw_hello`] or checking
    /// the answer with [`tls_client::read_server_hello`].
    pub async fn tls_hello_only(
        addr: SocketAddr,
        opts: &ClientOpts,
    ) -> io::Result<(TcpStream, Vec<u8>)> {
        let secret = opts.tls_secret()?;
        let tls = opts.tls.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "ClientOpts without fake TLS")
        })?;
        let hello = tls_client::build_hello(&secret, tls);
        let stream = Client::send_raw_hello(addr, &hello).await?;
        Ok((stream, hello))
    }

    /// Connects and writes `hello` (any bytes) as the first thing on the connection: a
    /// replayed or hand-made ClientHello. The answer is left unread.
    pub async fn send_raw_hello(addr: SocketAddr, hello: &[u8]) -> io::Result<TcpStream> {
        let mut stream = connect_loopback(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(hello).await?;
        stream.flush().await?;
        Ok(stream)
    }

    async fn handshake(
        stream: TcpStream,
        opts: ClientOpts,
        random: [u8; HEADER_LEN],
        split: Option<(usize, Duration)>,
    ) -> io::Result<Client> {
        if opts.tls.is_some() {
            return Client::tls_handshake(stream, opts, random, split).await;
        }
        stream.set_nodelay(true)?;
        let init = obfs2::initiate(random, opts.tag, opts.dc, opts.secret.as_ref());
        let (rd, mut wr) = stream.into_split();
        let mut held = None;
        match split {
            Some((first, pause)) => {
                wr.write_all(&init.header[..first]).await?;
                wr.flush().await?;
                tokio::time::sleep(pause).await;
                wr.write_all(&init.header[first..]).await?;
            }
            None if opts.header_with_first_frame => held = Some(init.header),
            None => wr.write_all(&init.header).await?,
        }
        wr.flush().await?;
        Ok(Client {
            header: init.header,
            reader: FrameReader::new(rd, init.decrypt, opts.tag, Side::FromServer),
            writer: FrameWriter::new(wr, init.encrypt, opts.tag).holding(held),
            opts,
            quick_acks: VecDeque::new(),
            tls_hello: None,
        })
    }

    /// Fake TLS: hello, checked reply, then the obfuscated2 header (held back or sent now).
    async fn tls_handshake(
        stream: TcpStream,
        opts: ClientOpts,
        random: [u8; HEADER_LEN],
        split: Option<(usize, Duration)>,
    ) -> io::Result<Client> {
        let secret = opts.tls_secret()?;
        let tls = opts.tls.clone().expect("TLS options");
        stream.set_nodelay(true)?;
        let (mut rd, mut wr) = stream.into_split();
        let hello = tls_client::build_hello(&secret, &tls);
        wr.write_all(&hello).await?;
        wr.flush().await?;
        let reply = tls_client::read_server_hello(&mut rd, &secret, &hello).await?;

        let init = obfs2::initiate(random, opts.tag, opts.dc, Some(&secret));
        let reader = FrameReader::new(rd, init.decrypt, opts.tag, Side::FromServer)
            .with_records(tls_client::server_record_reader(), reply.extra);
        let mut writer = FrameWriter::new(wr, init.encrypt, opts.tag).with_tls(TlsOut {
            record_max: tls.record_max,
            pending_ccs: tls.send_ccs,
            pending_header: Some(init.header),
            separate_header_writes: tls.separate_header_writes,
        });
        if split.is_some() || !tls.header_with_first_frame {
            let ccs = if tls.send_ccs { 6 } else { 0 };
            let split = split.map(|(first, pause)| (ccs + 5 + first, pause));
            writer.flush_pending(split).await?;
        }
        Ok(Client {
            header: init.header,
            reader,
            writer,
            opts,
            quick_acks: VecDeque::new(),
            tls_hello: Some((hello, reply.reply)),
        })
    }

    /// The options it was opened with.
    pub fn opts(&self) -> ClientOpts {
        self.opts.clone()
    }

    /// Fake TLS: the ClientHello that was sent (`None` without TLS).
    pub fn tls_hello(&self) -> Option<&[u8]> {
        self.tls_hello.as_ref().map(|(h, _)| &h[..])
    }

    /// Fake TLS: the proxy's reply (ServerHello, ChangeCipherSpec, one application-data
    /// record), as checked (`None` without TLS).
    pub fn tls_server_hello(&self) -> Option<&[u8]> {
        self.tls_hello.as_ref().map(|(_, r)| &r[..])
    }

    /// Fake TLS: sends the ChangeCipherSpec and the header now if they are still held back
    /// for the first frame (a no-op otherwise, and without TLS). Reading, half-closing and
    /// waiting for the close do this first by themselves; only [`send_raw`](Self::send_raw)
    /// and [`into_inner`](Self::into_inner) do not.
    pub async fn flush_header(&mut self) -> io::Result<()> {
        self.writer.flush_pending(None).await
    }

    /// Fake TLS: are the ChangeCipherSpec or the header still held back?
    pub fn header_pending(&self) -> bool {
        self.writer.has_pending()
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
    /// In fake TLS they still go in records.
    pub async fn send_encrypted_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.send_plain(bytes.to_vec()).await
    }

    /// Sends `bytes` exactly as given, bypassing the cipher (which does not advance): garbage.
    /// In fake TLS also bypassing the records (and a held-back header stays held back): to
    /// send hand-made records, see [`tls_client::write_app_records`].
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
        self.flush_header().await?;
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
        self.flush_header().await?;
        self.writer.shutdown().await
    }

    /// Reads until the server closes the connection, throwing data away; returns how many
    /// bytes were buffered or arrived before the end (in fake TLS, raw bytes after what was
    /// already decoded: they are not parsed as records). A reset counts as closed.
    pub async fn wait_closed(&mut self) -> io::Result<u64> {
        if let Err(e) = self.flush_header().await {
            // The server may be gone already: that is what is being waited for.
            if !matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                return Err(e);
            }
        }
        match self.reader.discard_to_end().await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(0),
            other => other,
        }
    }

    /// The socket, with both halves put back together. The cipher state is lost, so only
    /// raw bytes make sense after this (in fake TLS, a header still held back is dropped).
    pub fn into_inner(self) -> TcpStream {
        let (rd, wr) = (self.reader.into_inner(), self.writer.into_inner());
        rd.reunite(wr).expect("halves of one stream")
    }
}

/// Random header bytes for `opts`: filtered as TDLib does without TLS, not filtered inside
/// fake TLS (TDLib does not filter there either, spec §5.12).
fn fresh_random(opts: &ClientOpts) -> [u8; HEADER_LEN] {
    if opts.tls.is_some() {
        let mut r = [0u8; HEADER_LEN];
        rand::thread_rng().fill_bytes(&mut r);
        r
    } else {
        acceptable_random()
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
