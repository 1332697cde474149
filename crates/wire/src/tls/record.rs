//! The TLS record layer after the fake handshake (spec client.md §5.9–5.10), both
//! directions.
//!
//! Inbound ([`RecordReader`]): the client may send one ChangeCipherSpec
//! `14 03 03 00 01 01` before its first data record (TDLib does, and C requires it; other
//! clients may not, so it is optional here). After that only `17 03 03 LL LL` records;
//! anything else (a second ChangeCipherSpec, an alert, another version) is an error, which
//! closes the connection. The first data record must hold at least 64 bytes (the
//! obfuscated2 header). Record boundaries mean nothing to what is inside: the reader hands
//! out the payload as one continuous stream, whatever the chunking of the input.
//!
//! Record sizes: C accepts any BE16 length (0..=65535) and so does [`RecordReader::new`],
//! for parity; [`RecordReader::with_max_payload`] sets a stricter limit (e.g.
//! [`TLS_CIPHERTEXT_LIMIT`], what a real TLS stack allows). TDLib sends at most 2878 bytes
//! per record and rejects records over 16384.
//!
//! Outbound ([`write_records`]): the stream cut into application-data records of at most
//! a given payload size, never above [`MAX_RECORD_PAYLOAD`] (16384, TDLib's limit; C uses
//! 1425).
//!
//! Not here: the obfuscated2 layer inside the records (the caller decrypts the payload as
//! one CTR stream), and the handshake records themselves ([`super::hello`],
//! [`super::server_hello`]).

use super::{APP_DATA_PREFIX, CHANGE_CIPHER_SPEC};

/// Largest record payload TDLib accepts (`TlsReaderByteFlow`); never send more.
pub const MAX_RECORD_PAYLOAD: usize = 16_384;

/// The record payload size C sends (`cpu_tcp_aes_crypto_ctr128_encrypt_output`).
pub const C_RECORD_PAYLOAD: usize = 1425;

/// The largest record payload TDLib sends (`MAX_TLS_PACKET_LENGTH`).
pub const TDLIB_RECORD_PAYLOAD: usize = 2878;

/// TLS's own ciphertext limit, 2¹⁴ + 256: a stricter inbound limit than C's.
pub const TLS_CIPHERTEXT_LIMIT: usize = 16_384 + 256;

/// The first data record must hold at least the 64-byte obfuscated2 header.
pub const MIN_FIRST_RECORD: usize = 64;

/// Why the inbound record stream is invalid. All of these close the connection (§6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// A record type other than application data (or a ChangeCipherSpec after the first
    /// data record, or a second one).
    UnexpectedType(u8),
    /// Record version bytes other than `03 03`.
    BadVersion([u8; 2]),
    /// A ChangeCipherSpec other than `14 03 03 00 01 01`.
    BadChangeCipherSpec,
    /// The first data record is shorter than 64 bytes.
    FirstRecordTooShort(u16),
    /// A record longer than the reader's limit.
    TooLong(u16),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::UnexpectedType(t) => write!(f, "unexpected TLS record type {t:#04x}"),
            RecordError::BadVersion(v) => {
                write!(f, "unexpected TLS record version {:02x}{:02x}", v[0], v[1])
            }
            RecordError::BadChangeCipherSpec => f.write_str("malformed ChangeCipherSpec"),
            RecordError::FirstRecordTooShort(n) => {
                write!(f, "first TLS record of {n} bytes, under 64")
            }
            RecordError::TooLong(n) => write!(f, "TLS record of {n} bytes over the limit"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Incremental reader of the client's records after the ServerHello.
#[derive(Clone, Debug)]
pub struct RecordReader {
    max_payload: usize,
    header: [u8; 5],
    /// Header bytes buffered (0..5); meaningful when `left == 0` and not in a CCS body.
    have: usize,
    /// Payload bytes left in the current data record.
    left: usize,
    /// Waiting for the one-byte body of a ChangeCipherSpec.
    in_ccs: bool,
    seen_ccs: bool,
    data_records: u64,
    error: Option<RecordError>,
}

impl Default for RecordReader {
    fn default() -> Self {
        RecordReader::new()
    }
}

impl RecordReader {
    /// A reader for a connection that just got the ServerHello, accepting any record
    /// length (C's behaviour).
    pub fn new() -> RecordReader {
        RecordReader::with_max_payload(usize::from(u16::MAX))
    }

    /// Like [`RecordReader::new`], but records over `max_payload` bytes are errors.
    pub fn with_max_payload(max_payload: usize) -> RecordReader {
        RecordReader {
            max_payload,
            header: [0; 5],
            have: 0,
            left: 0,
            in_ccs: false,
            seen_ccs: false,
            data_records: 0,
            error: None,
        }
    }

    /// Appends the payload bytes in `input` to `out`, checking record headers on the way.
    /// After an error the reader stays failed (every later call returns the same error);
    /// payload decoded before the error is already in `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        while !input.is_empty() {
            if self.left > 0 {
                let n = self.left.min(input.len());
                out.extend_from_slice(&input[..n]);
                self.left -= n;
                input = &input[n..];
                continue;
            }
            if self.in_ccs {
                if input[0] != CHANGE_CIPHER_SPEC[5] {
                    return self.fail(RecordError::BadChangeCipherSpec);
                }
                self.in_ccs = false;
                self.seen_ccs = true;
                input = &input[1..];
                continue;
            }
            let b = input[0];
            input = &input[1..];
            self.header[self.have] = b;
            self.have += 1;
            match self.have {
                1 => {
                    let ccs_allowed = !self.seen_ccs && self.data_records == 0;
                    if b != APP_DATA_PREFIX[0] && !(b == CHANGE_CIPHER_SPEC[0] && ccs_allowed) {
                        return self.fail(RecordError::UnexpectedType(b));
                    }
                }
                3 if self.header[1..3] != [0x03, 0x03] => {
                    return self.fail(RecordError::BadVersion([self.header[1], self.header[2]]));
                }
                5 => {
                    self.have = 0;
                    let len = u16::from_be_bytes([self.header[3], self.header[4]]);
                    if self.header[0] == CHANGE_CIPHER_SPEC[0] {
                        if len != 1 {
                            return self.fail(RecordError::BadChangeCipherSpec);
                        }
                        self.in_ccs = true;
                        continue;
                    }
                    if usize::from(len) > self.max_payload {
                        return self.fail(RecordError::TooLong(len));
                    }
                    if self.data_records == 0 && usize::from(len) < MIN_FIRST_RECORD {
                        return self.fail(RecordError::FirstRecordTooShort(len));
                    }
                    self.data_records += 1;
                    self.left = usize::from(len);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn fail(&mut self, e: RecordError) -> Result<(), RecordError> {
        self.error = Some(e);
        Err(e)
    }

    /// Payload bytes still to come in the current data record (C's
    /// `left_tls_packet_length`).
    pub fn left_in_record(&self) -> usize {
        self.left
    }

    /// Whether the client's ChangeCipherSpec has been read.
    pub fn saw_change_cipher_spec(&self) -> bool {
        self.seen_ccs
    }

    /// Data records started so far.
    pub fn data_records(&self) -> u64 {
        self.data_records
    }

    /// Is the reader between records (no partial header or payload pending)?
    pub fn at_boundary(&self) -> bool {
        self.left == 0 && self.have == 0 && !self.in_ccs
    }
}

/// Wraps `data` in application-data records of at most `max` payload bytes each,
/// appending to `out`. `max` is clamped to `1..=MAX_RECORD_PAYLOAD`. Empty `data` writes
/// nothing.
pub fn write_records(data: &[u8], max: usize, out: &mut Vec<u8>) {
    let max = max.clamp(1, MAX_RECORD_PAYLOAD);
    out.reserve(records_len(data.len(), max));
    for chunk in data.chunks(max) {
        out.extend_from_slice(&APP_DATA_PREFIX);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Bytes [`write_records`] produces for `len` payload bytes.
pub fn records_len(len: usize, max: usize) -> usize {
    let max = max.clamp(1, MAX_RECORD_PAYLOAD);
    len + 5 * len.div_ceil(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obfs2::{self, Tag};
    use crate::tls::testutil::*;
    use proptest::prelude::*;

    const FIRST_88: &str = "
        140303000101170303006cbb00cf73933c0cc7bf8549c32df8d3a4593b9dc0f8
        97d870ad005940fdaa33c1864d86c334c95423b09ea6c5a9a8bd68cc0a4817d0
        4895f35afb44d7b7f823c204514052828cc84589a21e58ce5b91d0084258ad0a
        221d687a86825d9237cccd8c1a7a0819bbc3b4ee562325";

    fn read_all(chunks: &[&[u8]]) -> Result<Vec<u8>, RecordError> {
        let mut r = RecordReader::new();
        let mut out = Vec::new();
        for c in chunks {
            r.feed(c, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn vector_8_8_first_bytes_one_at_a_time() {
        let wire = h(FIRST_88);
        let mut r = RecordReader::new();
        let mut out = Vec::new();
        for b in &wire {
            r.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert!(r.saw_change_cipher_spec() && r.at_boundary());
        assert_eq!(r.data_records(), 1);
        assert_eq!(out.len(), 108);
        assert_eq!(out, wire[11..]);
        // The first 64 payload bytes are the obfuscated2 header: tag dd, DC 2, secret S.
        let mut a = obfs2::accept(&arr(&out[..64]), &[s()]).expect("header");
        assert_eq!((a.tag, a.dc), (Tag::Padded, 2));
        let mut frame = out[64..].to_vec();
        a.decrypt.apply(&mut frame);
        assert_eq!(&frame[..4], &40u32.to_le_bytes());
    }

    #[test]
    fn change_cipher_spec_is_optional() {
        let mut wire = Vec::new();
        write_records(&[7; 100], 16384, &mut wire);
        assert_eq!(read_all(&[&wire]).unwrap(), [7; 100]);
    }

    #[test]
    fn rejects_what_c_closes_on() {
        let ccs = CHANGE_CIPHER_SPEC;
        let mut first = Vec::new();
        write_records(&[1; 64], 16384, &mut first);
        let cases: Vec<(Vec<u8>, RecordError)> = vec![
            (
                [&ccs[..], &ccs[..]].concat(),
                RecordError::UnexpectedType(0x14),
            ),
            (
                [&first[..], &ccs[..]].concat(),
                RecordError::UnexpectedType(0x14),
            ),
            (
                vec![0x15, 3, 3, 0, 2, 2, 40],
                RecordError::UnexpectedType(0x15),
            ),
            (vec![0x16, 3, 3, 0, 64], RecordError::UnexpectedType(0x16)),
            (vec![0x17, 3, 1, 0, 64], RecordError::BadVersion([3, 1])),
            (vec![0x14, 3, 3, 0, 1, 2], RecordError::BadChangeCipherSpec),
            (
                vec![0x14, 3, 3, 0, 2, 1, 1],
                RecordError::BadChangeCipherSpec,
            ),
            (
                [&ccs[..], &[0x17, 3, 3, 0, 63]].concat(),
                RecordError::FirstRecordTooShort(63),
            ),
            (vec![0x17, 3, 3, 0, 0], RecordError::FirstRecordTooShort(0)),
        ];
        for (wire, err) in cases {
            assert_eq!(read_all(&[&wire]), Err(err), "{wire:02x?}");
            // Byte by byte too.
            let chunks: Vec<&[u8]> = wire.chunks(1).collect();
            assert_eq!(read_all(&chunks), Err(err));
        }
    }

    #[test]
    fn errors_are_sticky_and_early() {
        let mut r = RecordReader::new();
        let mut out = Vec::new();
        assert_eq!(
            r.feed(&[0x15], &mut out),
            Err(RecordError::UnexpectedType(0x15))
        );
        assert_eq!(
            r.feed(&[0x17, 3, 3, 0, 64], &mut out),
            Err(RecordError::UnexpectedType(0x15))
        );
    }

    #[test]
    fn later_records_may_be_short_empty_or_huge() {
        let mut wire = CHANGE_CIPHER_SPEC.to_vec();
        write_records(&[1; 64], 16384, &mut wire);
        wire.extend_from_slice(&[0x17, 3, 3, 0, 0]);
        wire.extend_from_slice(&[0x17, 3, 3, 0, 1, 2]);
        wire.extend_from_slice(&[0x17, 3, 3, 0xff, 0xff]);
        wire.extend_from_slice(&[3; 65535]);
        let out = read_all(&[&wire]).unwrap();
        assert_eq!(out.len(), 64 + 1 + 65535);
        // A stricter reader refuses what TLS would.
        let mut r = RecordReader::with_max_payload(TLS_CIPHERTEXT_LIMIT);
        let mut o = Vec::new();
        assert_eq!(r.feed(&wire, &mut o), Err(RecordError::TooLong(65535)));
        assert_eq!(o.len(), 65);
    }

    #[test]
    fn writer_splits_at_max() {
        let data: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        write_records(&data, C_RECORD_PAYLOAD, &mut out);
        assert_eq!(out.len(), records_len(4000, C_RECORD_PAYLOAD));
        assert_eq!(out.len(), 4000 + 15);
        assert_eq!(out[..5], [0x17, 3, 3, 0x05, 0x91]);
        assert_eq!(out[5 + 1425..5 + 1425 + 5], [0x17, 3, 3, 0x05, 0x91]);
        assert_eq!(
            out[2 * 1430..2 * 1430 + 5],
            [0x17, 3, 3, (1150 >> 8) as u8, (1150 % 256) as u8]
        );
        // Never above 16384, whatever is asked; 0 means 1.
        let mut big = Vec::new();
        write_records(&[0; 40000], 100_000, &mut big);
        assert_eq!(big[3..5], 16384u16.to_be_bytes());
        let mut tiny = Vec::new();
        write_records(&[9; 3], 0, &mut tiny);
        assert_eq!(
            tiny,
            [0x17, 3, 3, 0, 1, 9, 0x17, 3, 3, 0, 1, 9, 0x17, 3, 3, 0, 1, 9]
        );
        let mut none = Vec::new();
        write_records(&[], 1425, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn matches_the_generator_framing() {
        // vectors_client.py tls_app_records(body, 2878) on the §8.8 body.
        let wire = h(FIRST_88);
        let mut out = CHANGE_CIPHER_SPEC.to_vec();
        write_records(&wire[11..], TDLIB_RECORD_PAYLOAD, &mut out);
        assert_eq!(out, wire);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            split in 1usize..50,
            strict: bool,
        ) {
            let mut r = if strict { RecordReader::with_max_payload(100) } else { RecordReader::new() };
            let mut out = Vec::new();
            for c in bytes.chunks(split) {
                if r.feed(c, &mut out).is_err() {
                    break;
                }
            }
            prop_assert!(out.len() <= bytes.len());
        }

        #[test]
        fn random_splits_decode_identically(
            data in proptest::collection::vec(any::<u8>(), 64..5000),
            max in 1usize..3000,
            ccs: bool,
            cuts in proptest::collection::vec(0usize..6000, 0..40),
        ) {
            let mut wire = if ccs { CHANGE_CIPHER_SPEC.to_vec() } else { Vec::new() };
            // The first record must hold at least 64 bytes.
            write_records(&data[..64], 64, &mut wire);
            write_records(&data[64..], max, &mut wire);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
            cuts.push(0);
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut r = RecordReader::new();
            let mut out = Vec::new();
            for w in cuts.windows(2) {
                r.feed(&wire[w[0]..w[1]], &mut out).unwrap();
            }
            prop_assert_eq!(&out, &data);
            prop_assert!(r.at_boundary());
            prop_assert_eq!(r.saw_change_cipher_spec(), ccs);
        }
    }
}
