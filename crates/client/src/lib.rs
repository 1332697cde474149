//! The reference MTProto proxy client: a connection as a Telegram client opens it, for
//! every transport and secret kind, optionally inside fake TLS, and the few unencrypted
//! MTProto messages that prove a path works end to end.
//!
//! Used by the test kit, by the fakes (`mtproxy-fakes`, which share its framing) and by
//! the production tool `mtproxy-ctl` (its health gates connect through a proxy with it);
//! so it is a crate of its own, not part of the test kit.
//!
//! - [`client`]: the client ([`Client`], [`ClientOpts`]);
//! - [`tls_client`]: fake TLS on the client's side, public for tests that drive a handshake
//!   by hand;
//! - [`framing`]: one half of an obfuscated2 stream cut into transport frames (the reader
//!   and writer the client and the fake DC sit on);
//! - [`mtproto`]: `req_pq_multi` and `resPQ`.
//!
//! Loopback only: the client refuses any other address. Protocol codecs are
//! `mtproto_wire`'s; this crate only moves bytes between sockets and them.

pub mod client;
pub mod framing;
pub mod mtproto;
pub mod tls_client;

pub use client::{Client, ClientOpts, ServerFrame};
pub use mtproto::{parse_res_pq, req_pq_multi, ResPq};
pub use mtproto_wire::obfs2::Tag;
pub use mtproto_wire::tls::ServerHelloError;
pub use mtproto_wire::transport::{FrameError, MAX_FRAME};
pub use tls_client::{read_server_hello, server_hello_error, unix_now, TlsOpts};
