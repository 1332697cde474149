//! The RPC operations after the handshake (spec backend-ops.md §1.8): payload builders and
//! parsers for both directions, and the rule for which client packets are forwarded at all.
//!
//! Proxy → ME: RPC_PROXY_REQ ([`build_proxy_req`]), RPC_CLOSE_CONN, RPC_PONG (and RPC_PING,
//! which the C never sends). ME → proxy: RPC_PROXY_ANS, RPC_SIMPLE_ACK, RPC_CLOSE_EXT,
//! RPC_PING, read with [`parse_me_op`] and its exact-length rules. The other direction's
//! parser ([`parse_proxy_op`]) and builders exist for MEs and tests.
//!
//! Every builder appends a bare payload to `out`; frame it with
//! [`super::frame::FrameEncoder::encode`]. Every parser takes a payload (as the frame decoder
//! found it), returns ranges into it, and never panics. Not here: session tables, the
//! client-side framing of what PROXY_ANS carries, NAT (the caller translates the proxy's
//! local IPv4 before building PROXY_REQ).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use super::{
    le_i32, le_i64, le_u32, RPC_CLOSE_CONN, RPC_CLOSE_EXT, RPC_PING, RPC_PONG, RPC_PROXY_ANS,
    RPC_PROXY_REQ, RPC_SIMPLE_ACK, TL_HTTP_QUERY_INFO, TL_PROXY_TAG,
};
use crate::obfs2::Tag;

/// PROXY_REQ flag: the client packet has auth_key_id 0.
pub const RPC_F_NOT_ENCRYPTED: u32 = 0x0000_0002;
/// PROXY_REQ flag: the extra section has HTTP query info (HTTP transport only).
pub const RPC_F_HTTP_INFO: u32 = 0x0000_0004;
/// PROXY_REQ flag: the extra section has the proxy tag.
pub const RPC_F_PROXY_TAG: u32 = 0x0000_0008;
/// PROXY_REQ flag: the client came through the obfuscated TCP front ("magic").
pub const RPC_F_EXT_SERVER: u32 = 0x0000_1000;
/// PROXY_REQ flag: unobfuscated 64-byte-header mode (compiled out in the C).
pub const RPC_F_EXTMODE1: u32 = 0x0001_0000;
/// PROXY_REQ flag: obfuscated2 / fake-TLS transport.
pub const RPC_F_EXTMODE2: u32 = 0x0002_0000;
/// PROXY_REQ flag: padded intermediate. The C never sends it (its mask drops it).
pub const RPC_F_PAD: u32 = 0x0800_0000;
/// PROXY_REQ flag: an earlier packet was dropped (never on the wire in practice).
pub const RPC_F_DROPPED: u32 = 0x1000_0000;
/// PROXY_REQ flag: intermediate or padded intermediate.
pub const RPC_F_MEDIUM: u32 = 0x2000_0000;
/// PROXY_REQ flag: abridged.
pub const RPC_F_COMPACT: u32 = 0x4000_0000;
/// PROXY_REQ flag: this packet asked for a quick acknowledgement.
pub const RPC_F_QUICKACK: u32 = 0x8000_0000;

/// The unencrypted MTProto functions the proxy forwards: req_pq, req_pq_multi,
/// req_DH_params, set_client_DH_params.
pub const UNENCRYPTED_FUNCTIONS: [u32; 4] = [0x6046_9778, 0xbe7e_8ef1, 0xd712_e4be, 0xf504_5f1f];
/// Shortest client packet forwarded (7 ints).
pub const MIN_CLIENT_PACKET: usize = 28;
/// Shortest encrypted client packet forwarded (auth_key_id, msg_key, 32 header bytes).
pub const MIN_ENCRYPTED_PACKET: usize = 56;
/// Length of RPC_PROXY_REQ up to the optional extra section.
pub const PROXY_REQ_HEADER_LEN: usize = 56;
/// Length of the proxy-tag item in the extra section.
pub const PROXY_TAG_ITEM_LEN: usize = 24;

/// What goes into RPC_PROXY_REQ's flags, besides the constant bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReqParams {
    /// The client's transport.
    pub transport: Tag,
    /// This packet had the quick-ack bit.
    pub quick_ack: bool,
    /// The packet is unencrypted ([`Forward::Unencrypted`]).
    pub unencrypted: bool,
    /// `-P`: the proxy tag, sent in the extra section.
    pub proxy_tag: Option<[u8; 16]>,
    /// Add [`RPC_F_PAD`] for padded-intermediate clients, as mtprotoproxy and telemt do. The C
    /// never does; leave it off to match it.
    pub pad_flag: bool,
}

impl ReqParams {
    /// An encrypted packet without quick ack, no tag, C-compatible flags.
    pub fn new(transport: Tag) -> ReqParams {
        ReqParams {
            transport,
            quick_ack: false,
            unencrypted: false,
            proxy_tag: None,
            pad_flag: false,
        }
    }

    /// The flags word, exactly as the C builds it: abridged 0x40021000, (padded)
    /// intermediate 0x20021000, +0x8 with a tag, +0x2 unencrypted, +0x80000000 quick ack
    /// (+0x08000000 for padded with `pad_flag`).
    pub fn flags(&self) -> u32 {
        let mut f = RPC_F_EXT_SERVER | RPC_F_EXTMODE2;
        f |= match self.transport {
            Tag::Abridged => RPC_F_COMPACT,
            Tag::Intermediate => RPC_F_MEDIUM,
            Tag::Padded => RPC_F_MEDIUM | if self.pad_flag { RPC_F_PAD } else { 0 },
        };
        if self.quick_ack {
            f |= RPC_F_QUICKACK;
        }
        if self.unencrypted {
            f |= RPC_F_NOT_ENCRYPTED;
        }
        if self.proxy_tag.is_some() {
            f |= RPC_F_PROXY_TAG;
        }
        f
    }
}

fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&i32::from(addr.port()).to_le_bytes());
}

/// Appends an RPC_PROXY_REQ payload carrying one client `packet` (a multiple of 4 bytes, as
/// [`classify_client_packet`] guarantees). `client` is the client's address, `local` the
/// address it connected to on the proxy (IPv4 already NAT-translated by the caller). IPv4
/// addresses go out IPv4-mapped.
pub fn build_proxy_req(
    out: &mut Vec<u8>,
    params: &ReqParams,
    conn_id: i64,
    client: SocketAddr,
    local: SocketAddr,
    packet: &[u8],
) {
    let extra = if params.proxy_tag.is_some() {
        4 + PROXY_TAG_ITEM_LEN
    } else {
        0
    };
    out.reserve(PROXY_REQ_HEADER_LEN + extra + packet.len());
    out.extend_from_slice(&RPC_PROXY_REQ.to_le_bytes());
    out.extend_from_slice(&params.flags().to_le_bytes());
    out.extend_from_slice(&conn_id.to_le_bytes());
    push_addr(out, client);
    push_addr(out, local);
    if let Some(tag) = params.proxy_tag {
        out.extend_from_slice(&(PROXY_TAG_ITEM_LEN as i32).to_le_bytes());
        out.extend_from_slice(&TL_PROXY_TAG.to_le_bytes());
        out.push(16);
        out.extend_from_slice(&tag);
        out.extend_from_slice(&[0; 3]);
    }
    out.extend_from_slice(packet);
}

/// Appends RPC_PROXY_ANS: `data` goes to the client as one packet (a multiple of 4 bytes).
pub fn build_proxy_ans(out: &mut Vec<u8>, flags: u32, conn_id: i64, data: &[u8]) {
    out.extend_from_slice(&RPC_PROXY_ANS.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&conn_id.to_le_bytes());
    out.extend_from_slice(data);
}

/// Appends RPC_SIMPLE_ACK (16 bytes).
pub fn build_simple_ack(out: &mut Vec<u8>, conn_id: i64, confirm: u32) {
    out.extend_from_slice(&RPC_SIMPLE_ACK.to_le_bytes());
    out.extend_from_slice(&conn_id.to_le_bytes());
    out.extend_from_slice(&confirm.to_le_bytes());
}

fn op_with_id(out: &mut Vec<u8>, op: u32, id: i64) {
    out.extend_from_slice(&op.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
}

/// Appends RPC_CLOSE_EXT (12 bytes): the ME closes one session.
pub fn build_close_ext(out: &mut Vec<u8>, conn_id: i64) {
    op_with_id(out, RPC_CLOSE_EXT, conn_id);
}

/// Appends RPC_CLOSE_CONN (12 bytes): the client of this session went away.
pub fn build_close_conn(out: &mut Vec<u8>, conn_id: i64) {
    op_with_id(out, RPC_CLOSE_CONN, conn_id);
}

/// Appends RPC_PING (12 bytes).
pub fn build_ping(out: &mut Vec<u8>, ping_id: i64) {
    op_with_id(out, RPC_PING, ping_id);
}

/// Appends RPC_PONG (12 bytes): the answer to a ping, same id.
pub fn build_pong(out: &mut Vec<u8>, ping_id: i64) {
    op_with_id(out, RPC_PONG, ping_id);
}

/// An operation from the ME, as the proxy reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeOp {
    /// Data for the client of `conn_id`: `payload[data]`, possibly empty.
    ProxyAns {
        /// The answer's flags.
        flags: u32,
        /// The session the answer is for.
        conn_id: i64,
        /// Where the client's bytes are in the payload.
        data: Range<usize>,
    },
    /// Forward `confirm` to the client of `conn_id` as a quick ack.
    SimpleAck {
        /// The session.
        conn_id: i64,
        /// The value to send the client.
        confirm: u32,
    },
    /// Close the client of `conn_id` (no RPC_CLOSE_CONN back).
    CloseExt {
        /// The session to close.
        conn_id: i64,
    },
    /// Answer with RPC_PONG carrying `id`.
    Ping {
        /// The ping's id.
        id: i64,
    },
    /// An answer to our ping (the C ignores these).
    Pong {
        /// The id of the ping it answers.
        id: i64,
    },
    /// A known op with a length the C does not accept for it ("otherwise ignored"); also a
    /// payload shorter than an op (`op` 0).
    Ignored {
        /// The op (0 for a payload shorter than one).
        op: u32,
        /// The payload's length.
        len: usize,
    },
    /// Any other op: logged and dropped.
    Unknown(u32),
}

/// Reads an ME → proxy payload with the C's length rules: PROXY_ANS ≥ 16 bytes, SIMPLE_ACK
/// exactly 16, CLOSE_EXT, PING and PONG exactly 12.
pub fn parse_me_op(payload: &[u8]) -> MeOp {
    let len = payload.len();
    if len < 4 {
        return MeOp::Ignored { op: 0, len };
    }
    let op = le_u32(payload, 0);
    match op {
        RPC_PROXY_ANS if len >= 16 => MeOp::ProxyAns {
            flags: le_u32(payload, 4),
            conn_id: le_i64(payload, 8),
            data: 16..len,
        },
        RPC_SIMPLE_ACK if len == 16 => MeOp::SimpleAck {
            conn_id: le_i64(payload, 4),
            confirm: le_u32(payload, 12),
        },
        RPC_CLOSE_EXT if len == 12 => MeOp::CloseExt {
            conn_id: le_i64(payload, 4),
        },
        RPC_PING if len == 12 => MeOp::Ping {
            id: le_i64(payload, 4),
        },
        RPC_PONG if len == 12 => MeOp::Pong {
            id: le_i64(payload, 4),
        },
        RPC_PROXY_ANS | RPC_SIMPLE_ACK | RPC_CLOSE_EXT | RPC_PING | RPC_PONG => {
            MeOp::Ignored { op, len }
        }
        _ => MeOp::Unknown(op),
    }
}

/// The three TL strings of an HTTP query info item, as ranges into the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpQueryInfo {
    /// The `Origin` string.
    pub origin: Range<usize>,
    /// The `Referer` string.
    pub referer: Range<usize>,
    /// The `User-Agent` string.
    pub user_agent: Range<usize>,
}

/// A parsed RPC_PROXY_REQ (the ME's view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyReq {
    /// The request's flags (transport, quick ack, extra section present, ...).
    pub flags: u32,
    /// The proxy's id of the client session.
    pub conn_id: i64,
    /// The client's address (IPv4-mapped addresses come back as IPv4).
    pub client: SocketAddr,
    /// The proxy's address the client connected to.
    pub local: SocketAddr,
    /// The extra section (empty without flags 0x4/0x8).
    pub extra: Range<usize>,
    /// From a TL_PROXY_TAG item.
    pub proxy_tag: Option<[u8; 16]>,
    /// From a TL_HTTP_QUERY_INFO item.
    pub http_query_info: Option<HttpQueryInfo>,
    /// The first extra item with an unknown constructor (parsing stops there).
    pub unknown_extra: Option<u32>,
    /// The client's MTProto packet.
    pub packet: Range<usize>,
}

impl ProxyReq {
    /// The quick-ack flag.
    pub fn quick_ack(&self) -> bool {
        self.flags & RPC_F_QUICKACK != 0
    }

    /// The "not encrypted" flag.
    pub fn unencrypted(&self) -> bool {
        self.flags & RPC_F_NOT_ENCRYPTED != 0
    }

    /// The client transport the flags name (`Padded` only when RPC_F_PAD is set, which the
    /// C never does: its padded clients look like intermediate ones).
    pub fn transport(&self) -> Option<Tag> {
        if self.flags & RPC_F_COMPACT != 0 {
            Some(Tag::Abridged)
        } else if self.flags & RPC_F_MEDIUM != 0 {
            Some(if self.flags & RPC_F_PAD != 0 {
                Tag::Padded
            } else {
                Tag::Intermediate
            })
        } else {
            None
        }
    }
}

/// Why an RPC_PROXY_REQ could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyReqError {
    /// Not RPC_PROXY_REQ.
    WrongOp(u32),
    /// Shorter than its fixed fields.
    TooShort(usize),
    /// A port field outside 0..=65535.
    BadPort(i32),
    /// extra_size negative, unaligned or past the end.
    BadExtraSize(i32),
    /// A known extra item that is cut short or malformed (e.g. a tag that is not 16 bytes).
    BadExtraItem(u32),
}

impl std::fmt::Display for ProxyReqError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyReqError::WrongOp(op) => write!(f, "expected RPC_PROXY_REQ, got op {op:08x}"),
            ProxyReqError::TooShort(n) => write!(f, "RPC_PROXY_REQ of {n} bytes is too short"),
            ProxyReqError::BadPort(p) => write!(f, "RPC_PROXY_REQ port {p}"),
            ProxyReqError::BadExtraSize(n) => write!(f, "RPC_PROXY_REQ extra_size {n}"),
            ProxyReqError::BadExtraItem(c) => {
                write!(f, "malformed RPC_PROXY_REQ extra item {c:08x}")
            }
        }
    }
}

impl std::error::Error for ProxyReqError {}

fn read_addr(b: &[u8], at: usize) -> Result<SocketAddr, ProxyReqError> {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    let v6 = Ipv6Addr::from(o);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    let port = le_i32(b, at + 16);
    let port = u16::try_from(port).map_err(|_| ProxyReqError::BadPort(port))?;
    Ok(SocketAddr::new(ip, port))
}

/// A TL string at `b[at..]`: its data range and the position after its padding.
fn tl_string(b: &[u8], at: usize) -> Option<(Range<usize>, usize)> {
    let first = *b.get(at)?;
    let (start, len) = if first < 254 {
        (at + 1, first as usize)
    } else {
        let l = b.get(at + 1..at + 4)?;
        (at + 4, u32::from_le_bytes([l[0], l[1], l[2], 0]) as usize)
    };
    let end = start.checked_add(len)?;
    let next = end.checked_add((4 - (end - at) % 4) % 4)?;
    (next <= b.len()).then_some((start..end, next))
}

/// Reads an RPC_PROXY_REQ payload, extra section included.
pub fn parse_proxy_req(payload: &[u8]) -> Result<ProxyReq, ProxyReqError> {
    let len = payload.len();
    if len < 4 {
        return Err(ProxyReqError::TooShort(len));
    }
    let op = le_u32(payload, 0);
    if op != RPC_PROXY_REQ {
        return Err(ProxyReqError::WrongOp(op));
    }
    if len < PROXY_REQ_HEADER_LEN {
        return Err(ProxyReqError::TooShort(len));
    }
    let flags = le_u32(payload, 4);
    let mut req = ProxyReq {
        flags,
        conn_id: le_i64(payload, 8),
        client: read_addr(payload, 16)?,
        local: read_addr(payload, 36)?,
        extra: PROXY_REQ_HEADER_LEN..PROXY_REQ_HEADER_LEN,
        proxy_tag: None,
        http_query_info: None,
        unknown_extra: None,
        packet: PROXY_REQ_HEADER_LEN..len,
    };
    if flags & (RPC_F_HTTP_INFO | RPC_F_PROXY_TAG) == 0 {
        return Ok(req);
    }
    if len < PROXY_REQ_HEADER_LEN + 4 {
        return Err(ProxyReqError::TooShort(len));
    }
    let size = le_i32(payload, PROXY_REQ_HEADER_LEN);
    let start = PROXY_REQ_HEADER_LEN + 4;
    let end = usize::try_from(size)
        .ok()
        .filter(|s| s % 4 == 0 && *s <= len - start)
        .map(|s| start + s)
        .ok_or(ProxyReqError::BadExtraSize(size))?;
    req.extra = start..end;
    req.packet = end..len;
    let ex = &payload[..end];
    let mut p = start;
    while p + 4 <= end {
        let ctor = le_u32(ex, p);
        p += 4;
        match ctor {
            TL_PROXY_TAG => {
                let (r, next) = tl_string(ex, p).ok_or(ProxyReqError::BadExtraItem(ctor))?;
                let tag: [u8; 16] = ex[r]
                    .try_into()
                    .map_err(|_| ProxyReqError::BadExtraItem(ctor))?;
                req.proxy_tag = Some(tag);
                p = next;
            }
            TL_HTTP_QUERY_INFO => {
                let bad = ProxyReqError::BadExtraItem(ctor);
                let (origin, p1) = tl_string(ex, p).ok_or(bad)?;
                let (referer, p2) = tl_string(ex, p1).ok_or(bad)?;
                let (user_agent, p3) = tl_string(ex, p2).ok_or(bad)?;
                req.http_query_info = Some(HttpQueryInfo {
                    origin,
                    referer,
                    user_agent,
                });
                p = p3;
            }
            _ => {
                req.unknown_extra = Some(ctor);
                break;
            }
        }
    }
    Ok(req)
}

/// An operation from the proxy, as an ME reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyOp {
    /// A client's packet with its session and addresses.
    ProxyReq(ProxyReq),
    /// An RPC_PROXY_REQ that could not be read.
    BadProxyReq(ProxyReqError),
    /// The client of `conn_id` went away.
    CloseConn {
        /// The session.
        conn_id: i64,
    },
    /// Answer with RPC_PONG carrying `id`.
    Ping {
        /// The ping's id.
        id: i64,
    },
    /// An answer to a ping.
    Pong {
        /// The id of the ping it answers.
        id: i64,
    },
    /// CLOSE_CONN, PING or PONG not exactly 12 bytes; a payload shorter than an op (`op` 0).
    Ignored {
        /// The op (0 for a payload shorter than one).
        op: u32,
        /// The payload's length.
        len: usize,
    },
    /// Any other op.
    Unknown(u32),
}

/// Reads a proxy → ME payload.
pub fn parse_proxy_op(payload: &[u8]) -> ProxyOp {
    let len = payload.len();
    if len < 4 {
        return ProxyOp::Ignored { op: 0, len };
    }
    let op = le_u32(payload, 0);
    match op {
        RPC_PROXY_REQ => match parse_proxy_req(payload) {
            Ok(r) => ProxyOp::ProxyReq(r),
            Err(e) => ProxyOp::BadProxyReq(e),
        },
        RPC_CLOSE_CONN if len == 12 => ProxyOp::CloseConn {
            conn_id: le_i64(payload, 4),
        },
        RPC_PING if len == 12 => ProxyOp::Ping {
            id: le_i64(payload, 4),
        },
        RPC_PONG if len == 12 => ProxyOp::Pong {
            id: le_i64(payload, 4),
        },
        RPC_CLOSE_CONN | RPC_PING | RPC_PONG => ProxyOp::Ignored { op, len },
        _ => ProxyOp::Unknown(op),
    }
}

/// What to do with a client's MTProto packet (§1.8, C `forward_mtproto_packet`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// auth_key_id ≠ 0: forward with the flags as they are.
    Encrypted,
    /// auth_key_id = 0 and a key-exchange function: forward with [`RPC_F_NOT_ENCRYPTED`].
    Unencrypted,
    /// Do not forward; the client connection stays open.
    Drop(DropReason),
}

/// Why a client packet is not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than 28 bytes or not a multiple of 4.
    BadLength {
        /// The packet's length.
        len: usize,
    },
    /// Encrypted but shorter than 56 bytes.
    ShortEncrypted {
        /// The packet's length.
        len: usize,
    },
    /// Unencrypted with a message length outside 20 ..= len − 20.
    BadInnerLength {
        /// The message length the packet states.
        inner: i32,
        /// The packet's length.
        len: usize,
    },
    /// Unencrypted, but not one of [`UNENCRYPTED_FUNCTIONS`].
    NotKeyExchange {
        /// The TL constructor of the message.
        function: u32,
    },
}

/// Decides whether a client packet is forwarded (§1.8 "Which client packets are forwarded").
/// Packets over the transport's size limit never get here: the transport closes first.
pub fn classify_client_packet(packet: &[u8]) -> Forward {
    let len = packet.len();
    if len < MIN_CLIENT_PACKET || !len.is_multiple_of(4) {
        return Forward::Drop(DropReason::BadLength { len });
    }
    if packet[..8] != [0; 8] {
        if len < MIN_ENCRYPTED_PACKET {
            return Forward::Drop(DropReason::ShortEncrypted { len });
        }
        return Forward::Encrypted;
    }
    let inner = le_i32(packet, 16);
    if inner < 20 || i64::from(inner) > len as i64 - 20 {
        return Forward::Drop(DropReason::BadInnerLength { inner, len });
    }
    let function = le_u32(packet, 20);
    if !UNENCRYPTED_FUNCTIONS.contains(&function) {
        return Forward::Drop(DropReason::NotKeyExchange { function });
    }
    Forward::Unencrypted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flags(t: Tag, f: impl FnOnce(&mut ReqParams)) -> u32 {
        let mut p = ReqParams::new(t);
        f(&mut p);
        p.flags()
    }

    #[test]
    fn c_flags() {
        assert_eq!(flags(Tag::Abridged, |_| {}), 0x4002_1000);
        assert_eq!(flags(Tag::Intermediate, |_| {}), 0x2002_1000);
        assert_eq!(flags(Tag::Padded, |_| {}), 0x2002_1000);
        assert_eq!(flags(Tag::Padded, |p| p.pad_flag = true), 0x2802_1000);
        assert_eq!(
            flags(Tag::Abridged, |p| p.proxy_tag = Some([0; 16])),
            0x4002_1008
        );
        assert_eq!(
            flags(Tag::Intermediate, |p| p.unencrypted = true),
            0x2002_1002
        );
        assert_eq!(
            flags(Tag::Abridged, |p| {
                p.quick_ack = true;
                p.unencrypted = true;
                p.proxy_tag = Some([1; 16]);
            }),
            0xc002_100a
        );
    }

    #[test]
    fn proxy_req_bytes_with_tag() {
        let mut p = ReqParams::new(Tag::Intermediate);
        p.proxy_tag = Some(*b"0123456789abcdef");
        p.unencrypted = true;
        let packet = [0x5a; 40];
        let mut out = Vec::new();
        build_proxy_req(
            &mut out,
            &p,
            0x0123_4567_89ab_cdef,
            "149.154.175.50:443".parse().unwrap(),
            "10.0.0.1:8443".parse().unwrap(),
            &packet,
        );
        let want = concat!(
            "eef1ce36",
            "0a100220",
            "efcdab8967452301",
            "00000000000000000000ffff959aaf32",
            "bb010000",
            "00000000000000000000ffff0a000001",
            "fb200000",
            "18000000",
            "ae261edb",
            "10",
            "30313233343536373839616263646566",
            "000000",
        );
        assert_eq!(hex::encode(&out[..out.len() - 40]), want);
        assert_eq!(&out[out.len() - 40..], &packet);

        let r = parse_proxy_req(&out).unwrap();
        assert_eq!(r.flags, 0x2002_100a);
        assert_eq!(r.conn_id, 0x0123_4567_89ab_cdef);
        assert_eq!(r.client, "149.154.175.50:443".parse().unwrap());
        assert_eq!(r.local, "10.0.0.1:8443".parse().unwrap());
        assert_eq!(r.proxy_tag, Some(*b"0123456789abcdef"));
        assert_eq!(r.extra, 60..84);
        assert_eq!(&out[r.packet.clone()], &packet);
        assert!(r.unencrypted() && !r.quick_ack());
        assert_eq!(r.transport(), Some(Tag::Intermediate));
        assert_eq!(parse_proxy_op(&out), ProxyOp::ProxyReq(r));
    }

    #[test]
    fn proxy_req_ipv6_and_no_extra() {
        let mut out = Vec::new();
        let mut p = ReqParams::new(Tag::Abridged);
        p.quick_ack = true;
        build_proxy_req(
            &mut out,
            &p,
            -5,
            "[2001:db8::7]:40000".parse().unwrap(),
            "[::ffff:127.0.0.1]:443".parse().unwrap(),
            &[1; 56],
        );
        assert_eq!(out.len(), 56 + 56);
        assert_eq!(
            &out[16..32],
            &"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets()
        );
        let r = parse_proxy_req(&out).unwrap();
        assert_eq!(r.client, "[2001:db8::7]:40000".parse().unwrap());
        assert_eq!(r.local, "127.0.0.1:443".parse().unwrap());
        assert_eq!(r.conn_id, -5);
        assert_eq!(r.packet, 56..112);
        assert!(r.quick_ack());
        assert_eq!(r.transport(), Some(Tag::Abridged));
    }

    #[test]
    fn proxy_req_http_info_and_errors() {
        let mut out = Vec::new();
        build_proxy_req(
            &mut out,
            &ReqParams::new(Tag::Intermediate),
            1,
            "1.2.3.4:5".parse().unwrap(),
            "5.6.7.8:9".parse().unwrap(),
            &[],
        );
        out[4] |= 4;
        // extra: HTTP info with "ab", "", "ua" then an unknown item.
        let extra: Vec<u8> = [
            &TL_HTTP_QUERY_INFO.to_le_bytes()[..],
            &[2, b'a', b'b', 0],
            &[0, 0, 0, 0],
            &[2, b'u', b'a', 0],
            &0x1234_5678u32.to_le_bytes(),
        ]
        .concat();
        out.extend_from_slice(&(extra.len() as i32).to_le_bytes());
        out.extend_from_slice(&extra);
        out.extend_from_slice(&[7; 4]);
        let r = parse_proxy_req(&out).unwrap();
        let h = r.http_query_info.clone().unwrap();
        assert_eq!(&out[h.origin], b"ab");
        assert_eq!(&out[h.referer], b"");
        assert_eq!(&out[h.user_agent], b"ua");
        assert_eq!(r.unknown_extra, Some(0x1234_5678));
        assert_eq!(&out[r.packet], &[7; 4]);

        let mut bad = out.clone();
        bad[56..60].copy_from_slice(&1000i32.to_le_bytes());
        assert_eq!(
            parse_proxy_req(&bad),
            Err(ProxyReqError::BadExtraSize(1000))
        );
        let mut bad = out.clone();
        bad[32..36].copy_from_slice(&70000i32.to_le_bytes());
        assert_eq!(parse_proxy_req(&bad), Err(ProxyReqError::BadPort(70000)));
        assert_eq!(
            parse_proxy_req(&out[..55]),
            Err(ProxyReqError::TooShort(55))
        );
        let mut tag = Vec::new();
        let mut p = ReqParams::new(Tag::Abridged);
        p.proxy_tag = Some([3; 16]);
        build_proxy_req(
            &mut tag,
            &p,
            1,
            "1.2.3.4:5".parse().unwrap(),
            "5.6.7.8:9".parse().unwrap(),
            &[],
        );
        tag[64] = 15; // tag length byte
        assert_eq!(
            parse_proxy_req(&tag),
            Err(ProxyReqError::BadExtraItem(TL_PROXY_TAG))
        );
    }

    #[test]
    fn me_ops_and_their_length_rules() {
        let mut b = Vec::new();
        build_proxy_ans(&mut b, 8, 42, &[1, 2, 3, 4]);
        assert_eq!(
            parse_me_op(&b),
            MeOp::ProxyAns {
                flags: 8,
                conn_id: 42,
                data: 16..20
            }
        );
        assert!(matches!(parse_me_op(&b[..16]), MeOp::ProxyAns { data, .. } if data.is_empty()));
        assert_eq!(
            parse_me_op(&b[..12]),
            MeOp::Ignored {
                op: RPC_PROXY_ANS,
                len: 12
            }
        );

        b.clear();
        build_simple_ack(&mut b, -1, 0x8000_1234);
        assert_eq!(hex::encode(&b), "9b40ac3bffffffffffffffff34120080");
        assert_eq!(
            parse_me_op(&b),
            MeOp::SimpleAck {
                conn_id: -1,
                confirm: 0x8000_1234
            }
        );
        b.extend_from_slice(&[0; 4]);
        assert!(matches!(parse_me_op(&b), MeOp::Ignored { .. }));

        b.clear();
        build_close_ext(&mut b, 7);
        assert_eq!(hex::encode(&b), "a234b65e0700000000000000");
        assert_eq!(parse_me_op(&b), MeOp::CloseExt { conn_id: 7 });
        b.extend_from_slice(&[0; 4]);
        assert!(matches!(parse_me_op(&b), MeOp::Ignored { .. }));

        b.clear();
        build_ping(&mut b, 0x1122_3344_5566_7788);
        assert_eq!(hex::encode(&b), "dfa230578877665544332211");
        assert_eq!(
            parse_me_op(&b),
            MeOp::Ping {
                id: 0x1122_3344_5566_7788
            }
        );
        b.clear();
        build_pong(&mut b, 9);
        assert_eq!(parse_me_op(&b), MeOp::Pong { id: 9 });
        assert_eq!(parse_proxy_op(&b), ProxyOp::Pong { id: 9 });
        b.clear();
        build_close_conn(&mut b, 3);
        assert_eq!(hex::encode(&b), "5d42cf1f0300000000000000");
        assert_eq!(parse_proxy_op(&b), ProxyOp::CloseConn { conn_id: 3 });
        assert_eq!(parse_me_op(&b), MeOp::Unknown(RPC_CLOSE_CONN));
        assert_eq!(parse_me_op(&[1, 2]), MeOp::Ignored { op: 0, len: 2 });
    }

    fn unenc(function: u32, inner: i32, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[8..16].copy_from_slice(&0x5f00_0000_0000_0000u64.to_le_bytes());
        p[16..20].copy_from_slice(&inner.to_le_bytes());
        p[20..24].copy_from_slice(&function.to_le_bytes());
        p
    }

    #[test]
    fn forward_rules() {
        use DropReason::*;
        let req_pq_multi = 0xbe7e_8ef1;
        assert_eq!(
            classify_client_packet(&unenc(req_pq_multi, 20, 40)),
            Forward::Unencrypted
        );
        for f in UNENCRYPTED_FUNCTIONS {
            assert_eq!(
                classify_client_packet(&unenc(f, 20, 40)),
                Forward::Unencrypted
            );
        }
        // msg_len bounds: 20 ≤ len ≤ packet − 20.
        assert_eq!(
            classify_client_packet(&unenc(req_pq_multi, 28, 48)),
            Forward::Unencrypted
        );
        assert_eq!(
            classify_client_packet(&unenc(req_pq_multi, 29, 48)),
            Forward::Drop(BadInnerLength { inner: 29, len: 48 })
        );
        assert_eq!(
            classify_client_packet(&unenc(req_pq_multi, 19, 40)),
            Forward::Drop(BadInnerLength { inner: 19, len: 40 })
        );
        assert_eq!(
            classify_client_packet(&unenc(req_pq_multi, i32::MAX, 40)),
            Forward::Drop(BadInnerLength {
                inner: i32::MAX,
                len: 40
            })
        );
        assert_eq!(
            classify_client_packet(&unenc(req_pq_multi, -4, 40)),
            Forward::Drop(BadInnerLength { inner: -4, len: 40 })
        );
        assert_eq!(
            classify_client_packet(&unenc(0x1234, 20, 40)),
            Forward::Drop(NotKeyExchange { function: 0x1234 })
        );
        // Length: ≥ 28 and a multiple of 4.
        assert_eq!(
            classify_client_packet(&unenc(req_pq_multi, 20, 24)[..24]),
            Forward::Drop(BadLength { len: 24 })
        );
        assert_eq!(
            classify_client_packet(&[0; 30]),
            Forward::Drop(BadLength { len: 30 })
        );
        // Encrypted: ≥ 56.
        let mut e = vec![0u8; 56];
        e[0] = 1;
        assert_eq!(classify_client_packet(&e), Forward::Encrypted);
        assert_eq!(
            classify_client_packet(&e[..52]),
            Forward::Drop(ShortEncrypted { len: 52 })
        );
        assert_eq!(
            classify_client_packet(&e[..28]),
            Forward::Drop(ShortEncrypted { len: 28 })
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..160), op in 0usize..8) {
            let ops = [RPC_PROXY_REQ, RPC_PROXY_ANS, RPC_SIMPLE_ACK, RPC_CLOSE_EXT, RPC_CLOSE_CONN, RPC_PING, RPC_PONG, TL_PROXY_TAG];
            let mut b = bytes.clone();
            if b.len() >= 4 {
                b[..4].copy_from_slice(&ops[op].to_le_bytes());
            }
            if b.len() >= 8 && op == 0 {
                // Make the extra-section path likely.
                b[4] |= 0x0c;
            }
            let _ = parse_me_op(&b);
            let _ = parse_proxy_op(&b);
            let _ = parse_proxy_req(&b);
            let _ = classify_client_packet(&b);
            let _ = parse_me_op(&bytes);
            let _ = parse_proxy_op(&bytes);
            let _ = classify_client_packet(&bytes);
        }

        #[test]
        fn proxy_req_round_trip(conn_id: i64, ti in 0usize..3, qa: bool, ue: bool, tag: Option<[u8; 16]>, words in proptest::collection::vec(any::<u32>(), 0..30), cport: u16, lport: u16, v6: bool) {
            let mut p = ReqParams::new(Tag::ALL[ti]);
            p.quick_ack = qa;
            p.unencrypted = ue;
            p.proxy_tag = tag;
            let packet: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let client: SocketAddr = if v6 { SocketAddr::new("2001:db8::1".parse().unwrap(), cport) } else { SocketAddr::new("192.0.2.1".parse().unwrap(), cport) };
            let local = SocketAddr::new("127.0.0.1".parse().unwrap(), lport);
            let mut out = Vec::new();
            build_proxy_req(&mut out, &p, conn_id, client, local, &packet);
            let r = parse_proxy_req(&out).unwrap();
            prop_assert_eq!(r.flags, p.flags());
            prop_assert_eq!(r.conn_id, conn_id);
            prop_assert_eq!(r.client, client);
            prop_assert_eq!(r.local, local);
            prop_assert_eq!(r.proxy_tag, tag);
            prop_assert_eq!(&out[r.packet], &packet[..]);
        }
    }
}
