//! Middle-proxy (ME) mode, the C proxy's only mode: client packets travel to Telegram's
//! middle-ends as RPC_PROXY_REQ over a pool of multiplexed, encrypted ME connections, with
//! the ad tag (`-P`) when one is set.
//!
//! - [`conn`]: one ME connection (handshake, answer dispatch);
//! - [`nat`]: `--nat-info`, the addresses the MEs see;
//! - [`health`]: whether an ME connection is alive (pongs, stalls, the reader's signal);
//! - [`inbound`]: an ME connection's input buffer (decryption, frames, padding);
//! - [`inbox`]: a session's queue of answers and what it is charged for;
//! - [`budget`]: `--msg-buffers-size`, the sessions it covers, shedding the biggest;
//! - [`pool`]: the connections per ME address, routing by DC id, reload;
//! - [`session`]: one client's session on top of them, reading with [`client_input`] and
//!   writing with [`client_output`];
//! - [`writer`]: the tasks that frame, encrypt and write for several ME connections at once.

pub mod budget;
pub mod client_input;
pub mod client_output;
pub mod conn;
pub mod health;
pub mod inbound;
pub mod inbox;
pub mod nat;
pub mod pool;
pub mod session;
pub mod writer;

use std::sync::Arc;

/// What ME-mode sessions share.
#[derive(Debug)]
pub struct Middle {
    pub pool: Arc<pool::Pool>,
    /// `--msg-buffers-size` over all sessions.
    pub budget: Arc<budget::Budget>,
    /// `-P`: sent with every forwarded packet.
    pub proxy_tag: Option<[u8; 16]>,
    /// `--nat-info`, for the "our address" field of RPC_PROXY_REQ (the ME connections
    /// share the same table).
    pub nat: Arc<nat::Nat>,
}
