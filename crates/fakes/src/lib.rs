//! Fake Telegram servers for mtproxy, on loopback only: the DC a proxy dials in direct mode
//! and the middle-end (ME) it speaks RPC to in its default mode, each recording what it saw
//! so callers await facts instead of sleeping.
//!
//! Used by the test kit and by the production tool `mtproxy-ctl` (dual-run and the cutover
//! drill run a proxy against them), so a crate of its own, not part of the test kit.
//!
//! - [`fake_dc`]: the fake DC ([`FakeDc`]);
//! - [`fake_me`]: the fake ME ([`FakeMe`]), which misbehaves on [`me_command`]s;
//! - [`observed`], [`serving`]: the skeleton every fake shares (what it saw and how tests
//!   wait on it; loopback-only accept loops and their stop handles).
//!
//! The client side is `mtproxy-client`; the TLS site that fake-TLS masking splices to is the
//! test kit's (it needs a real TLS stack).

pub mod fake_dc;
pub mod fake_me;
pub mod me_command;
pub mod observed;
pub mod serving;

pub use fake_dc::{DcConfig, DcConnInfo, FakeDc, Reply};
pub use fake_me::{FakeMe, FakeMeConfig, Responder};
