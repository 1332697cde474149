//! Just enough unencrypted MTProto to test a proxy: the first message of the auth-key
//! exchange (`req_pq_multi` / `req_pq`) and the DC's answer (`resPQ`).
//!
//! An unencrypted message is `auth_key_id:long (0) ‖ msg_id:long ‖ msg_len:int ‖ body`,
//! all little-endian. Client msg_ids are `unix_time << 32` plus a fraction with the low two
//! bits 0; a server's have low bits ≡ 1 (mod 4).
//!
//! What this is not: an MTProto implementation. Nothing here computes keys, factorises pq or
//! touches encrypted messages; the `pq` and fingerprint a fake DC sends are fixed values.

use std::time::{SystemTime, UNIX_EPOCH};

/// `req_pq_multi#be7e8ef1 nonce:int128 = ResPQ`
pub const REQ_PQ_MULTI: u32 = 0xbe7e_8ef1;
/// `req_pq#60469778 nonce:int128 = ResPQ` (the old form, still accepted by DCs)
pub const REQ_PQ: u32 = 0x6046_9778;
/// `resPQ#05162463 nonce:int128 server_nonce:int128 pq:bytes server_public_key_fingerprints:Vector<long>`
pub const RES_PQ: u32 = 0x0516_2463;
/// `vector#1cb5c415`
pub const VECTOR: u32 = 0x1cb5_c415;

/// The product of two primes a fake DC hands out (an example from the MTProto docs):
/// 0x494C553B × 0x53911073.
pub const FAKE_PQ: u64 = 0x17ED_4894_1A08_F981;
/// The fingerprint of the RSA key current clients know (TDLib's production key), so that a
/// real client would go on to `req_DH_params`.
pub const FAKE_FINGERPRINT: u64 = 0xd09d_1d85_de64_fd85;

/// Length of the unencrypted message header (auth_key_id, msg_id, msg_len).
pub const UNENCRYPTED_HEADER_LEN: usize = 20;

/// A client msg_id for now: unix time in the high 32 bits, low two bits 0.
pub fn client_msg_id() -> u64 {
    msg_id_now() & !3
}

/// A server msg_id for now: like [`client_msg_id`] but ≡ 1 (mod 4), as answers carry.
pub fn server_msg_id() -> u64 {
    (msg_id_now() & !3) | 1
}

fn msg_id_now() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let frac = (u64::from(now.subsec_nanos()) << 32) / 1_000_000_000;
    (now.as_secs() << 32) | frac
}

/// Wraps `body` as an unencrypted message with the given msg_id.
pub fn unencrypted_message(msg_id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(UNENCRYPTED_HEADER_LEN + body.len());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&msg_id.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of an unencrypted message (auth_key_id 0, a sane msg_len), or `None` when
/// `packet` is something else (e.g. an encrypted message). Trailing bytes after `msg_len`
/// (padded-intermediate leftovers) are ignored.
pub fn unencrypted_body(packet: &[u8]) -> Option<&[u8]> {
    if packet.len() < UNENCRYPTED_HEADER_LEN || packet[..8] != [0; 8] {
        return None;
    }
    let len = u32::from_le_bytes(packet[16..20].try_into().ok()?) as usize;
    packet.get(UNENCRYPTED_HEADER_LEN..UNENCRYPTED_HEADER_LEN.checked_add(len)?)
}

/// A fresh `req_pq_multi` packet (40 bytes) and the random nonce in it.
pub fn req_pq_multi() -> (Vec<u8>, [u8; 16]) {
    let nonce: [u8; 16] = rand::random();
    (req_pq_with(REQ_PQ_MULTI, nonce), nonce)
}

/// `req_pq_multi` or `req_pq` (by constructor) with a given nonce, as a packet.
pub fn req_pq_with(constructor: u32, nonce: [u8; 16]) -> Vec<u8> {
    let mut body = Vec::with_capacity(20);
    body.extend_from_slice(&constructor.to_le_bytes());
    body.extend_from_slice(&nonce);
    unencrypted_message(client_msg_id(), &body)
}

/// If `packet` is an unencrypted `req_pq_multi` or `req_pq`, its nonce.
pub fn parse_req_pq(packet: &[u8]) -> Option<[u8; 16]> {
    let body = unencrypted_body(packet)?;
    let ctor = u32::from_le_bytes(body.get(..4)?.try_into().ok()?);
    if ctor != REQ_PQ_MULTI && ctor != REQ_PQ {
        return None;
    }
    body.get(4..20)?.try_into().ok()
}

/// The `resPQ` packet a DC sends for `nonce`, with the given server nonce, [`FAKE_PQ`] and
/// one fingerprint ([`FAKE_FINGERPRINT`]). 84 bytes.
pub fn res_pq(nonce: [u8; 16], server_nonce: [u8; 16]) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&RES_PQ.to_le_bytes());
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&server_nonce);
    // pq:bytes, a TL string: length byte, 8 bytes, padding to a multiple of 4.
    body.push(8);
    body.extend_from_slice(&FAKE_PQ.to_be_bytes());
    body.extend_from_slice(&[0; 3]);
    body.extend_from_slice(&VECTOR.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&FAKE_FINGERPRINT.to_le_bytes());
    unencrypted_message(server_msg_id(), &body)
}

/// A `resPQ` answer, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResPq {
    pub msg_id: u64,
    pub nonce: [u8; 16],
    pub server_nonce: [u8; 16],
    pub pq: Vec<u8>,
    pub fingerprints: Vec<u64>,
}

impl ResPq {
    /// Parses a whole unencrypted `resPQ` message; `None` if anything is off (wrong
    /// auth_key_id, constructor, TL string or vector, or a client-style msg_id).
    pub fn parse(packet: &[u8]) -> Option<ResPq> {
        let msg_id = u64::from_le_bytes(packet.get(8..16)?.try_into().ok()?);
        if msg_id & 3 != 1 {
            return None;
        }
        let body = unencrypted_body(packet)?;
        let mut r = Reader(body);
        if r.u32()? != RES_PQ {
            return None;
        }
        let nonce = r.array::<16>()?;
        let server_nonce = r.array::<16>()?;
        let pq = r.tl_bytes()?;
        if r.u32()? != VECTOR {
            return None;
        }
        let count = r.u32()? as usize;
        let fingerprints = (0..count).map(|_| r.u64()).collect::<Option<Vec<_>>>()?;
        Some(ResPq {
            msg_id,
            nonce,
            server_nonce,
            pq,
            fingerprints,
        })
    }
}

/// The nonce of a valid `resPQ` message ([`ResPq::parse`]).
pub fn parse_res_pq(packet: &[u8]) -> Option<[u8; 16]> {
    ResPq::parse(packet).map(|r| r.nonce)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    fn tl_bytes(&mut self) -> Option<Vec<u8>> {
        let first = *self.take(1)?.first()?;
        let (len, header) = if first < 254 {
            (first as usize, 1)
        } else {
            let b = self.array::<3>()?;
            (u32::from_le_bytes([b[0], b[1], b[2], 0]) as usize, 4)
        };
        let data = self.take(len)?.to_vec();
        self.take((4 - (header + len) % 4) % 4)?;
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn req_pq_multi_layout() {
        let (p, nonce) = req_pq_multi();
        assert_eq!(p.len(), 40);
        assert_eq!(&p[..8], &[0; 8]);
        assert_eq!(u64::from_le_bytes(p[8..16].try_into().unwrap()) & 3, 0);
        assert_eq!(&p[16..20], &20u32.to_le_bytes());
        assert_eq!(&p[20..24], &REQ_PQ_MULTI.to_le_bytes());
        assert_eq!(parse_req_pq(&p), Some(nonce));
        // Trailing padding (as padded intermediate leaves it) does not matter.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0xaa; 12]);
        assert_eq!(parse_req_pq(&padded), Some(nonce));
        // An encrypted-looking packet is not a request.
        let mut enc = p;
        enc[0] = 1;
        assert_eq!(parse_req_pq(&enc), None);
    }

    #[test]
    fn res_pq_round_trip() {
        let nonce = [7u8; 16];
        let sn = [9u8; 16];
        let p = res_pq(nonce, sn);
        assert_eq!(p.len(), 84);
        let r = ResPq::parse(&p).unwrap();
        assert_eq!(r.nonce, nonce);
        assert_eq!(r.server_nonce, sn);
        assert_eq!(r.pq, FAKE_PQ.to_be_bytes());
        assert_eq!(r.fingerprints, vec![FAKE_FINGERPRINT]);
        assert_eq!(r.msg_id & 3, 1);
        assert_eq!(parse_res_pq(&p), Some(nonce));
    }

    #[test]
    fn fake_pq_is_the_documented_product() {
        assert_eq!(0x494C553Bu64 * 0x53911073u64, FAKE_PQ);
    }

    #[test]
    fn res_pq_rejects_damage() {
        let p = res_pq([1; 16], [2; 16]);
        for cut in [0, 19, 24, 60, 83] {
            assert_eq!(parse_res_pq(&p[..cut]), None, "cut at {cut}");
        }
        let mut wrong_ctor = p.clone();
        wrong_ctor[20] ^= 1;
        assert_eq!(parse_res_pq(&wrong_ctor), None);
        let mut client_id = p;
        client_id[8] &= !3;
        assert_eq!(parse_res_pq(&client_id), None);
    }
}
