//! A packet capture on the loopback interface (an `AF_PACKET` socket, so root or
//! CAP_NET_RAW): the TCP segments as they cross `lo`, to check how a reply was cut into
//! segments. Each segment is seen once (as received; the copy seen leaving is skipped).
//! IPv4 only. Loopback offloads (GSO) may keep a large write in one "segment".
//!
//! Not here: anything but the segment's ports, payload length and flags.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One TCP segment seen on `lo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// TCP payload bytes.
    pub payload: usize,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub flags: u8,
}

/// A running capture; stops on drop.
pub struct Capture {
    segments: Arc<Mutex<Vec<Segment>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;

impl Capture {
    /// Starts capturing on `lo`. Errors if the process may not open packet sockets.
    pub fn start() -> io::Result<Capture> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("packet capture needs root or CAP_NET_RAW: {e}"),
            ));
        }
        // SAFETY: fd is a new, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let lo = std::ffi::CString::new("lo").expect("no NUL");
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(lo.as_ptr()) };
        // SAFETY: an all-zero sockaddr_ll is a valid value of that plain C struct.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: bind with a valid fd and a pointer to a sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: setsockopt with a valid fd and a timeval of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let segments = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seg, st) = (segments.clone(), stop.clone());
        let thread = std::thread::spawn(move || read_loop(fd, seg, st));
        Ok(Capture {
            segments,
            stop,
            thread: Some(thread),
        })
    }

    /// The segments seen so far, in order.
    pub fn segments(&self) -> Vec<Segment> {
        self.segments.lock().expect("segments").clone()
    }

    /// The payload lengths of the segments from `src` port to `dst` port that carry data.
    pub fn payloads(&self, src: u16, dst: u16) -> Vec<usize> {
        self.segments()
            .iter()
            .filter(|s| s.src.port() == src && s.dst.port() == dst && s.payload > 0)
            .map(|s| s.payload)
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_loop(fd: OwnedFd, segments: Arc<Mutex<Vec<Segment>>>, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 65_536 + 256];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: an all-zero sockaddr_ll is a valid value of that plain C struct.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: recvfrom into a buffer of the length given, with a sockaddr_ll and its size.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n <= 0 {
            continue;
        }
        if from.sll_pkttype == libc::PACKET_OUTGOING || from.sll_protocol != ETH_P_IP.to_be() {
            continue;
        }
        if let Some(s) = parse(&buf[..n as usize]) {
            segments.lock().expect("segments").push(s);
        }
    }
}

/// An IPv4 packet holding a TCP segment.
fn parse(p: &[u8]) -> Option<Segment> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 6 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    let tcp = p.get(ihl..total)?;
    if tcp.len() < 20 {
        return None;
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    let ip = |at: usize| Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
    let port = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    Some(Segment {
        src: SocketAddrV4::new(ip(12), port(0)),
        dst: SocketAddrV4::new(ip(16), port(2)),
        payload: tcp.len().saturating_sub(doff),
        flags: tcp[13],
    })
}
