//! Dynamic record sizing: how long the application-data records we send to a fake-TLS
//! client are, so that their sizes look like a real HTTPS server's rather than a tunnel's
//! (issue 15). nginx with `ssl_dyn_rec` (and Go's crypto/tls, in its own way) starts a
//! connection with records that fit one TCP segment, so the browser can decrypt the first
//! bytes before the rest arrives, and grows them during a burst; after an idle gap it
//! starts small again.
//!
//! The policy, nginx's `ssl_dyn_rec` defaults put in TLS 1.3 record lengths (plaintext +
//! 1 content-type byte + 16 tag bytes):
//! - the first [`RECORDS_PER_STEP`] records of a burst are at most [`SMALL`] bytes
//!   (1369 + 17: one 1500-byte-MTU segment with TCP timestamps),
//! - the next [`RECORDS_PER_STEP`] at most [`MEDIUM`] (4229 + 17: three segments),
//! - then [`LARGE`] (16 384, the largest record TDLib accepts; a real server's largest is
//!   16 401),
//! - a gap of [`IDLE_RESET_MS`] without sending starts a new burst.
//!
//! No padding is added: a record is never longer than what there is to send. Bulk
//! transfers reach 16 KiB records after about 225 KB. [`RecordSizer::fixed`] keeps every
//! record at one size (the previous behaviour, for comparison).
//!
//! Not here: cutting the bytes into records ([`super::record::write_records`]) and the
//! clock (the caller passes milliseconds).

/// Largest record of the first step of a burst.
pub const SMALL: usize = 1369 + 17;
/// Largest record of the second step.
pub const MEDIUM: usize = 4229 + 17;
/// Largest record after that (TDLib's limit).
pub const LARGE: usize = super::record::MAX_RECORD_PAYLOAD;
/// Records per step.
pub const RECORDS_PER_STEP: u32 = 40;
/// Milliseconds without sending after which the next record starts a new burst.
pub const IDLE_RESET_MS: u64 = 1000;

/// The size of the next record, per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordSizer {
    /// `None`: dynamic; `Some(n)`: every record at most `n` bytes.
    fixed: Option<usize>,
    /// Records sent in the current burst.
    records: u32,
    /// When the last record was sent (caller's milliseconds), if any.
    last_ms: Option<u64>,
}

impl RecordSizer {
    /// Dynamic sizing, as described in the module doc.
    pub fn dynamic() -> RecordSizer {
        RecordSizer {
            fixed: None,
            records: 0,
            last_ms: None,
        }
    }

    /// Every record at most `max` bytes (clamped to 1..=[`LARGE`]).
    pub fn fixed(max: usize) -> RecordSizer {
        RecordSizer {
            fixed: Some(max.clamp(1, LARGE)),
            ..RecordSizer::dynamic()
        }
    }

    /// The largest payload of the next record sent at `now_ms`; starts a new burst after an
    /// idle gap.
    pub fn next_max(&mut self, now_ms: u64) -> usize {
        if let Some(n) = self.fixed {
            return n;
        }
        if self
            .last_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= IDLE_RESET_MS)
        {
            self.records = 0;
        }
        match self.records / RECORDS_PER_STEP {
            0 => SMALL,
            1 => MEDIUM,
            _ => LARGE,
        }
    }

    /// One record was sent at `now_ms`.
    pub fn sent(&mut self, now_ms: u64) {
        self.records = self.records.saturating_add(1);
        self.last_ms = Some(now_ms);
    }

    /// Cuts `data` into records sent at `now_ms` (each at most [`RecordSizer::next_max`]),
    /// appending them to `out`; returns how many records.
    pub fn write_records(&mut self, data: &[u8], now_ms: u64, out: &mut Vec<u8>) -> usize {
        let mut rest = data;
        let mut n = 0;
        while !rest.is_empty() {
            let take = rest.len().min(self.next_max(now_ms));
            super::record::write_records(&rest[..take], take, out);
            self.sent(now_ms);
            rest = &rest[take..];
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::RecordReader;

    /// The record lengths of `out`.
    fn lengths(out: &[u8]) -> Vec<usize> {
        let mut v = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let n = usize::from(u16::from_be_bytes([out[at + 3], out[at + 4]]));
            v.push(n);
            at += 5 + n;
        }
        v
    }

    #[test]
    fn a_burst_grows_from_one_segment_to_16k() {
        let mut s = RecordSizer::dynamic();
        let mut out = Vec::new();
        let data = vec![7u8; 1_000_000];
        s.write_records(&data, 0, &mut out);
        let l = lengths(&out);
        assert!(l[..40].iter().all(|n| *n == SMALL));
        assert!(l[40..80].iter().all(|n| *n == MEDIUM));
        assert!(l[80..l.len() - 1].iter().all(|n| *n == LARGE));
        assert_eq!(l.iter().sum::<usize>(), data.len());
        // 40 × 1386 + 40 × 4246 bytes before the first 16 KiB record.
        assert_eq!(l[..80].iter().sum::<usize>(), 225_280);
        // The stream is unchanged.
        let mut r = RecordReader::new();
        let mut back = Vec::new();
        r.feed(&out, &mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn small_writes_are_not_padded_and_count_as_records() {
        let mut s = RecordSizer::dynamic();
        let mut out = Vec::new();
        for t in 0..45 {
            s.write_records(&[1; 100], t, &mut out);
        }
        assert!(lengths(&out).iter().all(|n| *n == 100));
        assert_eq!(s.next_max(45), MEDIUM);
    }

    #[test]
    fn an_idle_second_starts_small_again() {
        let mut s = RecordSizer::dynamic();
        let mut out = Vec::new();
        s.write_records(&vec![0; 500_000], 10_000, &mut out);
        assert_eq!(s.next_max(10_999), LARGE);
        assert_eq!(s.next_max(11_000), SMALL);
        s.sent(11_000);
        assert_eq!(s.next_max(11_500), SMALL);
    }

    #[test]
    fn fixed_sizes_never_change() {
        let mut s = RecordSizer::fixed(LARGE);
        let mut out = Vec::new();
        s.write_records(&vec![0; 40_000], 0, &mut out);
        assert_eq!(lengths(&out), [LARGE, LARGE, 40_000 - 2 * LARGE]);
        assert_eq!(RecordSizer::fixed(100_000).next_max(0), LARGE);
    }
}
