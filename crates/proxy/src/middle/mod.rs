//! Middle-proxy (ME) mode, the C proxy's only mode: client packets travel to Telegram's
//! middle-ends as RPC_PROXY_REQ over a pool of multiplexed, encrypted ME connections, with
//! the ad tag (`-P`) when one is set.
//!
//! - [`conn`]: one ME connection (handshake, answer dispatch);
//! - [`health`]: whether an ME connection is alive (pongs, stalls, the reader's signal);
//! - [`inbound`]: an ME connection's input buffer (decryption, frames, padding);
//! - [`inbox`]: a session's queue of answers and what it is charged for;
//! - [`budget`]: `--msg-buffers-size`, the sessions it covers, shedding the biggest;
//! - [`pool`]: the connections per ME address, routing by DC id, reload;
//! - [`session`]: one client's session on top of them;
//! - [`writer`]: the tasks that frame, encrypt and write for several ME connections at once.

pub mod budget;
pub mod conn;
pub mod health;
pub mod inbound;
pub mod inbox;
pub mod pool;
pub mod session;
pub mod writer;

use std::net::IpAddr;
use std::sync::Arc;

/// What ME-mode sessions share.
#[derive(Debug)]
pub struct Middle {
    pub pool: Arc<pool::Pool>,
    /// `--msg-buffers-size` over all sessions.
    pub budget: Arc<budget::Budget>,
    /// `-P`: sent with every forwarded packet.
    pub proxy_tag: Option<[u8; 16]>,
    /// `--nat-info` rules (local → global), for the "our address" field of RPC_PROXY_REQ.
    pub nat: Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
}

impl Middle {
    /// Applies `--nat-info` to one of our IPv4 addresses.
    pub fn ident_nat(&self, ip: IpAddr) -> IpAddr {
        let v4 = match ip {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => return ip,
            },
        };
        IpAddr::V4(
            self.nat
                .iter()
                .find(|(l, _)| *l == v4)
                .map_or(v4, |(_, g)| *g),
        )
    }
}
