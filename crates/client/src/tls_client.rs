//! Fake TLS on the client's side (spec client.md §5.3–5.12), as a Telegram client with an
//! `ee` secret does it: the pieces [`crate::Client`] uses in TLS mode, public so that tests
//! can also drive a handshake by hand (replays, stale or odd hellos).
//!
//! - [`TlsOpts`]: hello size, SNI, ChangeCipherSpec or not, record size, clock offset.
//! - [`build_hello`]: a ClientHello from the wire builder (TDLib's layout, HMAC random made
//!   with the secret and the current time plus the offset).
//! - [`read_server_hello`]: reads the proxy's reply (ServerHello + ChangeCipherSpec + one
//!   application-data record) and checks its HMAC as TDLib does; failures are `io::Error`s
//!   wrapping a [`ServerHelloError`] (see [`server_hello_error`]).
//! - [`write_app_records`]: application-data records of a chosen size, up to 65 535 bytes
//!   (above TDLib's 16 384, for parity tests).
//!
//! Not here: a real TLS stack. Nothing is encrypted by TLS; after the handshake the records
//! carry the obfuscated2 stream ([`crate::Client`] does that part).

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use mtproto_wire::tls::client::TDLIB_HELLO_LEN;
use mtproto_wire::tls::record::TDLIB_RECORD_PAYLOAD;
use mtproto_wire::tls::{
    build_client_hello, verify_server_hello, RecordReader, ServerHelloError, APP_DATA_PREFIX,
    MAX_RECORD_PAYLOAD, RANDOM_OFFSET,
};
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncReadExt};

pub use mtproto_wire::tls::CHANGE_CIPHER_SPEC;

/// Largest record payload the client accepts from the server: TDLib rejects records over
/// 16 384 bytes (`TlsReaderByteFlow`), and so does the reference client.
pub const MAX_INBOUND_RECORD: usize = MAX_RECORD_PAYLOAD;

/// Largest record length a record header can express.
pub const MAX_RECORD_LEN: usize = u16::MAX as usize;

/// The fake-TLS part of [`crate::ClientOpts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOpts {
    /// SNI host name; `None` sends no SNI extension (as Telegram-iOS does).
    pub domain: Option<String>,
    /// ClientHello length, record header included: 517 (TDLib, the default); 1024 is padded;
    /// from 1539 on it carries a post-quantum key share like Telegram Desktop's (1823).
    /// The builder panics below about 300 bytes or above 65 540.
    pub hello_len: usize,
    /// Send `14 03 03 00 01 01` before the first data record (TDLib does; TelethonFakeTLS
    /// does not).
    pub send_ccs: bool,
    /// Payload bytes per application-data record the client sends (TDLib: at most 2878).
    /// Clamped to 1..=65535; above 16 384 no real client sends (the proxy may still accept).
    /// The first record always holds the whole 64-byte obfuscated2 header, even when this is
    /// smaller.
    pub record_max: usize,
    /// Seconds added to the clock written into the hello (negative: a stale hello).
    pub unix_time_offset: i64,
    /// Hold the obfuscated2 header back and send it in one record with the first bytes
    /// written after connecting (TDLib's shape, the default); `false` sends it right away in
    /// a record of its own (TelethonFakeTLS's shape). A held header also goes out before the
    /// client reads, half-closes or waits for the close ([`crate::Client::flush_header`]).
    pub header_with_first_frame: bool,
    /// Write each record's 5-byte header and its payload with separate writes (so usually
    /// in separate TCP segments, the socket having `TCP_NODELAY`), as TelethonFakeTLS does;
    /// `false` (the default, TDLib) writes whole records.
    pub separate_header_writes: bool,
}

impl Default for TlsOpts {
    fn default() -> Self {
        TlsOpts {
            domain: None,
            hello_len: TDLIB_HELLO_LEN,
            send_ccs: true,
            record_max: TDLIB_RECORD_PAYLOAD,
            unix_time_offset: 0,
            header_with_first_frame: true,
            separate_header_writes: false,
        }
    }
}

impl TlsOpts {
    /// TDLib's shape with this SNI.
    pub fn new(domain: Option<String>) -> Self {
        TlsOpts {
            domain,
            ..TlsOpts::default()
        }
    }

    /// TelethonFakeTLS's record shape: no ChangeCipherSpec, the header alone in the first
    /// record, each packet in its own records of up to 16 408 bytes, record headers written
    /// apart from their payloads. (The hello is still the wire builder's 517-byte TDLib
    /// layout, not TelethonFakeTLS's fixed template; both are 517 bytes.)
    pub fn telethon(domain: Option<String>) -> Self {
        TlsOpts {
            domain,
            send_ccs: false,
            record_max: 16_384 + 24,
            header_with_first_frame: false,
            separate_header_writes: true,
            ..TlsOpts::default()
        }
    }
}

/// The current unix time in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fresh ClientHello for `secret`, shaped by `tls`, with the timestamp `now + offset`.
///
/// # Panics
/// If `tls.hello_len` is too small for the extensions or over 65 540 (see
/// [`build_client_hello`]).
pub fn build_hello(secret: &[u8; 16], tls: &TlsOpts) -> Vec<u8> {
    let mut rng = rand::thread_rng();
    build_client_hello(
        secret,
        tls.domain.as_deref(),
        unix_now() + tls.unix_time_offset,
        &mut |b: &mut [u8]| rng.fill_bytes(b),
        tls.hello_len,
    )
}

/// The client random (bytes 11..43) of a hello.
///
/// # Panics
/// If `hello` is shorter than 43 bytes.
pub fn client_random(hello: &[u8]) -> [u8; 32] {
    hello[RANDOM_OFFSET..RANDOM_OFFSET + 32]
        .try_into()
        .expect("32 bytes")
}

/// What [`read_server_hello`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerReply {
    /// The three records, checked.
    pub reply: Vec<u8>,
    /// Bytes that arrived after them in the same reads (the start of the record stream).
    pub extra: Vec<u8>,
}

/// Reads the proxy's reply to `hello` from `rd` and checks it as TDLib does (three
/// records, server random = HMAC of `secret` over the client random and the reply).
///
/// Errors: the stream ended first (`UnexpectedEof`, which is also what a proxy that sends
/// nothing and closes produces), or the reply is malformed or not authenticated
/// (`InvalidData` wrapping a [`ServerHelloError`]; a real site's answer, e.g. after the
/// proxy forwarded the hello, is `BadHmac` or `Malformed`).
pub async fn read_server_hello<R: AsyncRead + Unpin>(
    rd: &mut R,
    secret: &[u8; 16],
    hello: &[u8],
) -> io::Result<ServerReply> {
    let random = client_random(hello);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match verify_server_hello(secret, &random, &buf) {
            Ok(n) => {
                let extra = buf.split_off(n);
                return Ok(ServerReply { reply: buf, extra });
            }
            Err(ServerHelloError::Incomplete) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed after {} bytes, before a complete ServerHello",
                    buf.len()
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The [`ServerHelloError`] inside an error of [`read_server_hello`] (or of
/// [`crate::Client::connect`] in TLS mode), if that is what it was.
pub fn server_hello_error(e: &io::Error) -> Option<ServerHelloError> {
    e.get_ref()?.downcast_ref::<ServerHelloError>().copied()
}

/// Wraps `data` in application-data records of at most `max` payload bytes (clamped to
/// 1..=65535, so unlike [`mtproto_wire::tls::write_records`] it can exceed 16 384),
/// appending to `out`. Empty `data` writes nothing.
pub fn write_app_records(data: &[u8], max: usize, out: &mut Vec<u8>) {
    let max = max.clamp(1, MAX_RECORD_LEN);
    for chunk in data.chunks(max) {
        push_record(out, chunk);
    }
}

/// One application-data record holding `payload` (at most 65 535 bytes).
fn push_record(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u16::try_from(payload.len()).expect("record payload over 65535 bytes");
    out.extend_from_slice(&APP_DATA_PREFIX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The record side of a TLS-mode [`crate::framing::FrameWriter`]: what is still held back
/// (ChangeCipherSpec, obfuscated2 header) and how big records are.
#[derive(Clone, Debug)]
pub struct TlsOut {
    pub record_max: usize,
    pub pending_ccs: bool,
    pub pending_header: Option<[u8; 64]>,
    pub separate_header_writes: bool,
}

impl TlsOut {
    pub fn has_pending(&self) -> bool {
        self.pending_ccs || self.pending_header.is_some()
    }

    /// The wire bytes for `data` (already encrypted): a held ChangeCipherSpec, then records;
    /// a held header goes first in the first record, which takes up to
    /// `max(record_max, 64)` bytes.
    pub fn wrap(&mut self, data: &[u8]) -> Vec<u8> {
        let max = self.record_max.clamp(1, MAX_RECORD_LEN);
        let mut out = Vec::with_capacity(data.len() + 6 + 5 * (data.len() / max + 2) + 64);
        if std::mem::take(&mut self.pending_ccs) {
            out.extend_from_slice(&CHANGE_CIPHER_SPEC);
        }
        let mut rest = data;
        if let Some(header) = self.pending_header.take() {
            let take = (max.max(header.len()) - header.len()).min(data.len());
            let mut first = Vec::with_capacity(header.len() + take);
            first.extend_from_slice(&header);
            first.extend_from_slice(&data[..take]);
            push_record(&mut out, &first);
            rest = &data[take..];
        }
        write_app_records(rest, max, &mut out);
        out
    }
}

/// Where each record header and each record payload of well-formed `wire` bytes (as
/// [`TlsOut::wrap`] makes them) ends, the last end excluded.
pub fn record_cuts(wire: &[u8]) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut pos = 0;
    while pos + 5 <= wire.len() {
        let len = usize::from(u16::from_be_bytes([wire[pos + 3], wire[pos + 4]]));
        cuts.push(pos + 5);
        pos += 5 + len;
        if pos < wire.len() {
            cuts.push(pos);
        }
    }
    cuts
}

/// A reader for the server's records after its reply: only `17 03 03` records of at most
/// [`MAX_INBOUND_RECORD`] bytes, of any length down to 0. (The wire reader is built for the
/// client's records, whose first one must hold 64 bytes and may follow a ChangeCipherSpec;
/// feeding it one dummy 64-byte record first turns both rules off.)
pub fn server_record_reader() -> RecordReader {
    let mut r = RecordReader::with_max_payload(MAX_INBOUND_RECORD);
    let mut dummy = Vec::with_capacity(69);
    push_record(&mut dummy, &[0u8; 64]);
    let mut sink = Vec::new();
    r.feed(&dummy, &mut sink).expect("a valid record");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_puts_header_and_first_bytes_in_one_record() {
        let mut t = TlsOut {
            record_max: 100,
            pending_ccs: true,
            pending_header: Some([7; 64]),
            separate_header_writes: false,
        };
        let data = vec![1u8; 150];
        let w = t.wrap(&data);
        assert_eq!(w[..6], CHANGE_CIPHER_SPEC);
        // 64 header + 36 data, then 100, then 14.
        assert_eq!(w[6..11], [0x17, 3, 3, 0, 100]);
        assert_eq!(w[11..75], [7; 64]);
        assert_eq!(w[111..116], [0x17, 3, 3, 0, 100]);
        assert_eq!(w[216..221], [0x17, 3, 3, 0, 14]);
        assert_eq!(w.len(), 221 + 14);
        assert!(!t.has_pending());
        assert_eq!(t.wrap(&[2; 3]), [0x17, 3, 3, 0, 3, 2, 2, 2]);
        assert_eq!(record_cuts(&w), [5, 6, 11, 111, 116, 216, 221]);
        assert_eq!(record_cuts(&[0x17, 3, 3, 0, 0]), [5]);
    }

    #[test]
    fn small_record_max_still_carries_the_whole_header() {
        let mut t = TlsOut {
            record_max: 10,
            pending_ccs: false,
            pending_header: Some([7; 64]),
            separate_header_writes: false,
        };
        let w = t.wrap(&[1; 25]);
        assert_eq!(w[..5], [0x17, 3, 3, 0, 64]);
        assert_eq!(w[69..74], [0x17, 3, 3, 0, 10]);
        assert_eq!(w.len(), 69 + (5 + 10) * 2 + (5 + 5));
    }

    #[test]
    fn server_reader_takes_tiny_records_but_no_ccs() {
        let mut r = server_record_reader();
        let mut out = Vec::new();
        r.feed(&[0x17, 3, 3, 0, 1, 9, 0x17, 3, 3, 0, 0], &mut out)
            .unwrap();
        assert_eq!(out, [9]);
        assert!(r.feed(&CHANGE_CIPHER_SPEC, &mut out).is_err());
        let mut r = server_record_reader();
        assert!(r.feed(&[0x17, 3, 3, 0x40, 1], &mut out).is_err());
    }

    #[test]
    fn big_records_up_to_65535() {
        let mut out = Vec::new();
        write_app_records(&vec![0; 70_000], 100_000, &mut out);
        assert_eq!(out[..5], [0x17, 3, 3, 0xff, 0xff]);
        assert_eq!(out.len(), 70_000 + 10);
    }
}
