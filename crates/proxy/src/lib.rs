//! mtproxy: a Telegram MTProto proxy, drop-in for the C `mtproto-proxy`. This file is the
//! map of the crate; every item lives in the module named for it.
//!
//! The path of one client connection:
//!
//! - [`startup`] turned the command line ([`cli`]) into bound ports, the shared state
//!   ([`shared`]) and, in middle-proxy mode, the ME pool; [`main_loop`] then runs an accept
//!   loop per port ([`listener`]: the `-C` cap and the accept rate) until SIGTERM.
//! - [`session`] reads the first bytes before the handshake deadline: the obfuscated2
//!   header (`mtproto_wire::obfs2` finds the secret), or with `-D` a fake-TLS ClientHello
//!   ([`faketls`]; our reply is [`tls_reply`], shaped like the site's answers as
//!   [`tls_probe`] learned them). A connection that fails the fake-TLS checks is spliced
//!   to the real site ([`mask`]).
//! - The session goes to its upstream: [`direct`] dials the DC ([`dc`]) with a header of its
//!   own and [`relay`] moves bytes both ways until either side ends; or [`middle`] carries it
//!   as RPC over a pooled, shared connection to a middle-end (config: [`config`], reloaded
//!   by [`me_files`] on SIGHUP).
//! - Every step counts in [`stats`], which also serves `/stats` and `/metrics`.
//! - With `-M N`, [`master`] runs N [`workers`] that inherit the ports and serve as above.
//!
//! Around them: [`bufpool`] (pooled read buffers), [`links`] (the start-up links),
//! [`logging`] (C-style log lines), [`process`] (fd limit, daemon, privileges), [`fatal`]
//! (start-up errors with their exit codes), [`clock`] (unix time). The crate and module
//! map with where each kind of change goes is docs/architecture.md.

// The map links to private modules: read it with `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

mod bufpool;
pub mod cli;
mod clock;
pub mod config;
mod dc;
mod direct;
mod faketls;
mod fatal;
mod links;
mod listener;
mod logging;
mod main_loop;
mod mask;
mod master;
mod me_files;
mod middle;
mod process;
mod relay;
mod session;
mod shared;
mod signals;
mod startup;
mod stats;
mod tls_probe;
mod tls_reply;
mod workers;

pub use startup::run;
