//! Test kit for mtproxy: the other ends of a proxy's connections, on loopback only.
//!
//! - [`fake_dc`]: a fake Telegram DC, as the proxy dials it in direct mode.
//! - [`fake_me`]: a fake Telegram middle-end (RPC side of middle-proxy mode), which
//!   misbehaves on [`me_command`]s.
//! - [`client`]: the reference obfuscated2 client for every transport and secret kind.
//! - [`curve25519`]: the checks a passive observer makes on an X25519 key share.
//! - [`mtproto`]: the few unencrypted MTProto messages tests exchange (`req_pq_multi`, `resPQ`).
//!
//! Everything is tokio-based and records what it sees so tests can await facts instead of
//! sleeping.

pub mod bench;
pub mod client;
pub mod curve25519;
pub mod fake_dc;
pub mod fake_me;
mod framing;
pub mod me_command;
pub mod mtproto;
pub mod tls_client;
pub mod tls_site;

pub use client::{Client, ClientOpts, ServerFrame};
pub use fake_dc::{DcConfig, DcConnInfo, FakeDc, Reply};
pub use mtproto::{parse_res_pq, req_pq_multi, ResPq};
pub use mtproto_wire::obfs2::Tag;
pub use mtproto_wire::tls::ServerHelloError;
pub use mtproto_wire::transport::{FrameError, MAX_FRAME};
pub use tls_client::{read_server_hello, server_hello_error, TlsOpts};
