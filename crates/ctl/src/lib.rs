//! `mtproxy-ctl`: the operator tools for switching a production MTProto proxy from the C
//! `mtproto-proxy` to ours (or between two builds of ours) and back, on evidence.
//!
//! - [`dualrun`]: both binaries side by side on the same workload against the fakes
//!   (`mtproxy-fakes`), compared under SLO guards;
//! - [`cutover`]: the production switch (active symlink, systemd or our own supervision,
//!   health gate, rollback window, automatic rollback), and `rollback`;
//! - [`drill`]: the whole sequence rehearsed under client traffic, with start-up, shutdown
//!   and traffic-error guards.
//!
//! Building blocks: [`supervise`] (state directory, links, process hand-over), [`gate`]
//! (health gate and window watch), [`probe`] and [`traffic`] (client sessions through the
//! proxy with the reference client, `mtproxy-client`), [`outage`] (what a step's failed
//! sessions say about the service), [`stats`] (`/stats`), [`procs`]
//! (`/proc` measurements and signals), [`cmdline`] (reading a C command line), [`fakes`] (the
//! loopback world of dual-run and drill), [`report`] (timestamps, summaries, JSON).
//!
//! Everything the tools connect to is on loopback.

pub mod cli;
pub mod cmdline;
pub mod cutover;
pub mod drill;
pub mod dualrun;
pub mod fakes;
pub mod gate;
pub mod outage;
pub mod probe;
pub mod procs;
pub mod report;
pub mod stats;
pub mod supervise;
pub mod traffic;

/// `/stats` counters the rollback window treats as errors (present in C and ours).
pub const DEFAULT_ERROR_KEYS: &[&str] = &[
    "dropped_queries",
    "dropped_responses",
    "total_connect_failures",
];
