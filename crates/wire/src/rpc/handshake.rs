//! RPC_HANDSHAKE (spec backend-ops.md §1.7): the first encrypted packet each way (seq −1,
//! still CRC32). Payload, 32 bytes: `op ‖ flags:u32 ‖ sender_pid[12] ‖ peer_pid[12]`. The
//! proxy offers CRC32C with flag 0x800; the ME's answer decides.
//!
//! Both roles are here: the proxy builds [`proxy_handshake`] and checks the answer with
//! [`check_me_handshake`]; an ME checks the proxy's with [`check_proxy_handshake`] and answers
//! with [`me_handshake_answer`]. A refusal may be reported with an RPC_HANDSHAKE_ERROR
//! packet ([`build_handshake_error`]) before closing, see [`HandshakeError::sends_error_packet`].
//!
//! Not here: where the process id's fields come from (`--address`, interfaces, `getpid`,
//! start time: the caller knows) and the 3-s handshake timeout.

use std::net::{Ipv4Addr, SocketAddr};

use super::kdf::ipv4_of;
use super::{le_i32, le_u32, RPCF_USE_CRC32C, RPC_HANDSHAKE, RPC_HANDSHAKE_ERROR};

/// Payload length of RPC_HANDSHAKE.
pub const HANDSHAKE_LEN: usize = 32;
/// Payload length of RPC_HANDSHAKE_ERROR.
pub const HANDSHAKE_ERROR_LEN: usize = 20;

/// A process id (`struct process_id`, 12 bytes): who is at the other end, as far as the
/// handshake cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// IPv4 in host order (`a.b.c.d` → `0xaabbccdd`), written little-endian.
    pub ip: u32,
    /// The C's int16 port field; `0xffff` (−1) when the proxy has no `-p`.
    pub port: u16,
    /// `getpid() & 0xffff`: never assume it fits (modern pid_max is larger).
    pub pid: u16,
    /// Start time, unix seconds.
    pub utime: i32,
}

impl ProcessId {
    /// Length on the wire.
    pub const LEN: usize = 12;
    /// The port value for "no `-p` given".
    pub const NO_PORT: u16 = 0xffff;

    /// A process id from its parts; only the low 16 bits of `os_pid` are kept.
    pub fn new(ip: Ipv4Addr, port: u16, os_pid: u32, utime: i32) -> ProcessId {
        ProcessId {
            ip: u32::from(ip),
            port,
            pid: (os_pid & 0xffff) as u16,
            utime,
        }
    }

    /// The IPv4 address field.
    pub fn ipv4(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.ip)
    }

    /// The 12 bytes on the wire.
    pub fn to_bytes(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&self.ip.to_le_bytes());
        b[4..6].copy_from_slice(&self.port.to_le_bytes());
        b[6..8].copy_from_slice(&self.pid.to_le_bytes());
        b[8..12].copy_from_slice(&self.utime.to_le_bytes());
        b
    }

    /// Reads 12 bytes.
    pub fn from_bytes(b: &[u8; 12]) -> ProcessId {
        ProcessId {
            ip: le_u32(b, 0),
            port: u16::from_le_bytes([b[4], b[5]]),
            pid: u16::from_le_bytes([b[6], b[7]]),
            utime: le_i32(b, 8),
        }
    }

    /// The C's `matches_pid(self, pattern)`: every **non-zero** field of `pattern` equals
    /// ours (zero fields are wildcards).
    pub fn matches(&self, pattern: &ProcessId) -> bool {
        (pattern.ip == 0 || pattern.ip == self.ip)
            && (pattern.port == 0 || pattern.port == self.port)
            && (pattern.pid == 0 || pattern.pid == self.pid)
            && (pattern.utime == 0 || pattern.utime == self.utime)
    }
}

fn pid_at(b: &[u8], at: usize) -> ProcessId {
    let mut a = [0u8; 12];
    a.copy_from_slice(&b[at..at + 12]);
    ProcessId::from_bytes(&a)
}

/// An RPC_HANDSHAKE payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Handshake flags (0x800: CRC32C offered or used, [`super::RPCF_USE_CRC32C`]).
    pub flags: u32,
    /// The process id of the side that sends it.
    pub sender_pid: ProcessId,
    /// The process id it believes the other side has.
    pub peer_pid: ProcessId,
}

impl Handshake {
    /// The 32-byte payload.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_LEN] {
        let mut b = [0u8; HANDSHAKE_LEN];
        b[..4].copy_from_slice(&RPC_HANDSHAKE.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..20].copy_from_slice(&self.sender_pid.to_bytes());
        b[20..32].copy_from_slice(&self.peer_pid.to_bytes());
        b
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// Reads a handshake payload: op and length only (C's −2 and −3 checks). A peer's
    /// RPC_HANDSHAKE_ERROR comes back as [`HandshakeError::PeerError`].
    pub fn parse(payload: &[u8]) -> Result<Handshake, HandshakeError> {
        let op = if payload.len() >= 4 {
            le_u32(payload, 0)
        } else {
            return Err(HandshakeError::BadLength { len: payload.len() });
        };
        if op == RPC_HANDSHAKE_ERROR && payload.len() >= 8 {
            return Err(HandshakeError::PeerError {
                code: le_i32(payload, 4),
            });
        }
        if op != RPC_HANDSHAKE {
            return Err(HandshakeError::NotHandshake { op });
        }
        if payload.len() != HANDSHAKE_LEN {
            return Err(HandshakeError::BadLength { len: payload.len() });
        }
        Ok(Handshake {
            flags: le_u32(payload, 4),
            sender_pid: pid_at(payload, 8),
            peer_pid: pid_at(payload, 20),
        })
    }

    /// Whether the flags ask for CRC32C.
    pub fn crc32c(&self) -> bool {
        self.flags & RPCF_USE_CRC32C != 0
    }
}

/// Why a handshake was refused, with the C's codes ([`HandshakeError::c_code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// Some other op (C: −2, closed without an error packet).
    NotHandshake {
        /// The op the packet has instead.
        op: u32,
    },
    /// The peer sent RPC_HANDSHAKE_ERROR with this code (C: −2, like any other op).
    PeerError {
        /// The peer's error code.
        code: i32,
    },
    /// Payload not exactly 32 bytes (C: −3).
    BadLength {
        /// The payload's length.
        len: usize,
    },
    /// The peer_pid in the packet does not match our process id (C: −4).
    PidMismatch {
        /// The peer_pid the packet carries.
        peer_pid: ProcessId,
    },
    /// `flags & 0xff` is not 0 (C: −7).
    BadFlags {
        /// The flags the packet carries.
        flags: u32,
    },
    /// The ME turned CRC32C on although we did not offer it (C: −8).
    Crc32cNotOffered,
}

impl HandshakeError {
    /// The C's `fail_connection` code, also the code in the error packet.
    pub fn c_code(&self) -> i32 {
        match self {
            HandshakeError::NotHandshake { .. } | HandshakeError::PeerError { .. } => -2,
            HandshakeError::BadLength { .. } => -3,
            HandshakeError::PidMismatch { .. } => -4,
            HandshakeError::BadFlags { .. } => -7,
            HandshakeError::Crc32cNotOffered => -8,
        }
    }

    /// Whether the C sends RPC_HANDSHAKE_ERROR (with [`Self::c_code`]) before closing.
    pub fn sends_error_packet(&self) -> bool {
        !matches!(
            self,
            HandshakeError::NotHandshake { .. } | HandshakeError::PeerError { .. }
        )
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::NotHandshake { op } => {
                write!(f, "expected RPC_HANDSHAKE, got op {op:08x}")
            }
            HandshakeError::PeerError { code } => {
                write!(f, "peer refused the handshake with error {code}")
            }
            HandshakeError::BadLength { len } => write!(f, "handshake of {len} bytes"),
            HandshakeError::PidMismatch { peer_pid } => write!(
                f,
                "handshake peer_pid {}:{}:{}:{} does not match ours",
                peer_pid.ipv4(),
                peer_pid.port,
                peer_pid.pid,
                peer_pid.utime
            ),
            HandshakeError::BadFlags { flags } => write!(f, "handshake flags {flags:#x}"),
            HandshakeError::Crc32cNotOffered => {
                write!(f, "peer turned CRC32C on although it was not offered")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The peer_pid the proxy puts in its handshake for an ME at `me`: the ME's IPv4 in host
/// order (0 for 127.0.0.1 and for IPv6), its port, pid and utime 0.
pub fn peer_pid_for(me: SocketAddr) -> ProcessId {
    let ip = match ipv4_of(me.ip()) {
        Some(v4) if v4 != Ipv4Addr::LOCALHOST => u32::from(v4),
        _ => 0,
    };
    ProcessId {
        ip,
        port: me.port(),
        pid: 0,
        utime: 0,
    }
}

/// The proxy's handshake to an ME at `me` (as connected to): flags 0x800 (CRC32C offered,
/// as the C always does), our process id, and [`peer_pid_for`]`(me)`.
pub fn proxy_handshake(sender_pid: ProcessId, me: SocketAddr) -> Handshake {
    Handshake {
        flags: RPCF_USE_CRC32C,
        sender_pid,
        peer_pid: peer_pid_for(me),
    }
}

/// What the proxy learnt from an accepted ME handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeHandshake {
    /// Switch both directions to CRC32C now.
    pub crc32c: bool,
    /// The ME's process id, as sent (not checked: the proxy ignores it, like the C).
    pub me_pid: ProcessId,
}

/// Proxy side: checks the ME's answer (C `tcp_rpcc_process_handshake_packet` with
/// `TCP_RPC_IGNORE_PID`). `offered_crc32c` is whether our handshake had 0x800.
pub fn check_me_handshake(
    payload: &[u8],
    our_pid: &ProcessId,
    offered_crc32c: bool,
) -> Result<MeHandshake, HandshakeError> {
    let hs = Handshake::parse(payload)?;
    if !our_pid.matches(&hs.peer_pid) {
        return Err(HandshakeError::PidMismatch {
            peer_pid: hs.peer_pid,
        });
    }
    if hs.flags & 0xff != 0 {
        return Err(HandshakeError::BadFlags { flags: hs.flags });
    }
    if hs.crc32c() && !offered_crc32c {
        return Err(HandshakeError::Crc32cNotOffered);
    }
    Ok(MeHandshake {
        crc32c: hs.crc32c(),
        me_pid: hs.sender_pid,
    })
}

/// ME side: checks the proxy's handshake (C `tcp_rpcs_process_handshake_packet`). With
/// `me_pid` the proxy's peer_pid must match it (C's default); `None` skips that check
/// (`TCP_RPC_IGNORE_PID`). Returns the proxy's handshake; whether to use CRC32C is up to the
/// ME (see [`me_handshake_answer`]).
pub fn check_proxy_handshake(
    payload: &[u8],
    me_pid: Option<&ProcessId>,
) -> Result<Handshake, HandshakeError> {
    let hs = Handshake::parse(payload)?;
    if let Some(me) = me_pid {
        if !me.matches(&hs.peer_pid) {
            return Err(HandshakeError::PidMismatch {
                peer_pid: hs.peer_pid,
            });
        }
    }
    if hs.flags & 0xff != 0 {
        return Err(HandshakeError::BadFlags { flags: hs.flags });
    }
    Ok(hs)
}

/// The ME's answer to `proxy`'s handshake: its own process id as sender, the proxy's sender
/// pid echoed as peer pid, flags 0x800 when `crc32c` (a real ME does that only when the proxy
/// offered it; the caller decides) and 0 otherwise.
pub fn me_handshake_answer(proxy: &Handshake, me_pid: ProcessId, crc32c: bool) -> Handshake {
    Handshake {
        flags: if crc32c { RPCF_USE_CRC32C } else { 0 },
        sender_pid: me_pid,
        peer_pid: proxy.sender_pid,
    }
}

/// Appends an RPC_HANDSHAKE_ERROR payload (20 bytes): op, `code`, our process id.
pub fn build_handshake_error(out: &mut Vec<u8>, code: i32, sender_pid: &ProcessId) {
    out.extend_from_slice(&RPC_HANDSHAKE_ERROR.to_le_bytes());
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&sender_pid.to_bytes());
}

/// Reads an RPC_HANDSHAKE_ERROR payload: `(code, sender_pid)`.
pub fn parse_handshake_error(payload: &[u8]) -> Option<(i32, ProcessId)> {
    if payload.len() != HANDSHAKE_ERROR_LEN || le_u32(payload, 0) != RPC_HANDSHAKE_ERROR {
        return None;
    }
    Some((le_i32(payload, 4), pid_at(payload, 8)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn our_pid() -> ProcessId {
        ProcessId::new(Ipv4Addr::new(10, 1, 2, 3), 8888, 0x0012_3456, 1_700_000_000)
    }

    #[test]
    fn pid_layout_and_truncation() {
        let p = our_pid();
        assert_eq!(p.pid, 0x3456, "pid & 0xffff, never an error");
        assert_eq!(hex::encode(p.to_bytes()), "0302010ab822563400f15365");
        assert_eq!(ProcessId::from_bytes(&p.to_bytes()), p);
        let no_port = ProcessId::new(Ipv4Addr::new(10, 0, 0, 1), ProcessId::NO_PORT, 1, 2);
        assert_eq!(&no_port.to_bytes()[4..6], &[0xff, 0xff]);
    }

    #[test]
    fn matches_treats_zero_fields_as_wildcards() {
        let p = our_pid();
        assert!(p.matches(&p));
        assert!(p.matches(&ProcessId::default()));
        let mut q = ProcessId {
            pid: p.pid,
            ..Default::default()
        };
        assert!(p.matches(&q));
        q.utime = 5;
        assert!(!p.matches(&q));
    }

    #[test]
    fn proxy_handshake_bytes() {
        let me: SocketAddr = "149.154.175.50:8888".parse().unwrap();
        let hs = proxy_handshake(our_pid(), me);
        assert_eq!(
            hex::encode(hs.to_bytes()),
            "f5ee8276000800000302010ab822563400f1536532af9a95b822000000000000"
        );
        // Loopback and IPv6 MEs get ip 0.
        for a in [
            "127.0.0.1:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
            "[2001:db8::1]:1",
        ] {
            assert_eq!(peer_pid_for(a.parse().unwrap()).ip, 0, "{a}");
        }
        assert_eq!(peer_pid_for("127.0.0.2:5".parse().unwrap()).ip, 0x7f00_0002);
    }

    #[test]
    fn both_sides_accept_each_other() {
        let me_addr: SocketAddr = "127.0.0.1:8888".parse().unwrap();
        let me_pid = ProcessId::new(Ipv4Addr::LOCALHOST, 8888, 77, 123);
        let hs = proxy_handshake(our_pid(), me_addr);
        let got = check_proxy_handshake(&hs.to_bytes(), Some(&me_pid)).unwrap();
        assert!(got.crc32c());
        for crc in [true, false] {
            let ans = me_handshake_answer(&got, me_pid, crc);
            let r = check_me_handshake(&ans.to_bytes(), &our_pid(), true).unwrap();
            assert_eq!(
                r,
                MeHandshake {
                    crc32c: crc,
                    me_pid
                }
            );
        }
        // A proxy pointed at another port fails the ME's pid check.
        let other = proxy_handshake(our_pid(), "127.0.0.1:9999".parse().unwrap());
        assert_eq!(
            check_proxy_handshake(&other.to_bytes(), Some(&me_pid))
                .unwrap_err()
                .c_code(),
            -4
        );
        assert!(check_proxy_handshake(&other.to_bytes(), None).is_ok());
    }

    #[test]
    fn proxy_side_checks() {
        let me_pid = ProcessId::new(Ipv4Addr::new(149, 154, 175, 50), 8888, 1, 2);
        let good = Handshake {
            flags: RPCF_USE_CRC32C,
            sender_pid: me_pid,
            peer_pid: our_pid(),
        };
        let check =
            |hs: &Handshake, offered| check_me_handshake(&hs.to_bytes(), &our_pid(), offered);
        assert!(check(&good, true).unwrap().crc32c);
        let mut wrong = good;
        wrong.peer_pid.pid ^= 1;
        let e = check(&wrong, true).unwrap_err();
        assert_eq!((e.c_code(), e.sends_error_packet()), (-4, true));
        let mut flags = good;
        flags.flags |= 1;
        assert_eq!(check(&flags, true).unwrap_err().c_code(), -7);
        assert_eq!(
            check(&good, false).unwrap_err(),
            HandshakeError::Crc32cNotOffered
        );
        let mut short = good.to_bytes().to_vec();
        short.push(0);
        let e = check_me_handshake(&short, &our_pid(), true).unwrap_err();
        assert_eq!((e.c_code(), e.sends_error_packet()), (-3, true));
        let mut err = Vec::new();
        build_handshake_error(&mut err, -4, &me_pid);
        assert_eq!(err.len(), HANDSHAKE_ERROR_LEN);
        assert_eq!(parse_handshake_error(&err), Some((-4, me_pid)));
        let e = check_me_handshake(&err, &our_pid(), true).unwrap_err();
        assert_eq!(e, HandshakeError::PeerError { code: -4 });
        assert_eq!((e.c_code(), e.sends_error_packet()), (-2, false));
        let e = check_me_handshake(&[1, 2, 3, 4], &our_pid(), true).unwrap_err();
        assert_eq!(e.c_code(), -2);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = check_me_handshake(&bytes, &our_pid(), true);
            let _ = check_proxy_handshake(&bytes, Some(&our_pid()));
            let _ = parse_handshake_error(&bytes);
        }
    }
}
