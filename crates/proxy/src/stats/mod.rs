//! Counting and showing: the process-wide counters ([`Stats`]) and the stats port, which
//! serves C's `/stats` text page and a Prometheus `/metrics` page, both rendered from one
//! plain snapshot ([`StatsView`]) by a tiny HTTP/1.x responder (spec backend-ops §5).
//!
//! - `counters`: the relaxed atomics every session bumps;
//! - `dpi`: what a censor's view of us looks like (killed handshakes, JA4s, masking
//!   reasons, the site profile), and `dpi_metrics` its `/metrics` families;
//! - `view`: the snapshot, filled from the counters and /proc;
//! - `source`: the snapshot of this process (counters plus the config in force);
//! - `c_text`: C's `/stats` body, key by key (its module doc maps C's keys to ours);
//! - `prometheus`: the same facts as `/metrics`;
//! - `http_request`, `http`: C's HTTP parsing and answers, and the server loop;
//! - `http_conns`: the stats port's open connections, the longest waiter displaced;
//! - `worker_sum`: the `-M` master's figures from its workers' snapshots.
//!
//! Binding the port is start-up's (`startup::bind`, at [`bind_addr`]); the `-M` master
//! builds its view with [`combine`] (`master`).

mod c_text;
mod counters;
mod dpi;
mod dpi_metrics;
mod http;
mod http_conns;
mod http_request;
mod prometheus;
mod source;
#[cfg(test)]
mod test_support;
mod view;
mod worker_sum;

pub use counters::{SecretUse, Stats};
pub use http::{bind_addr, serve};
pub use source::{fill_view, view_fn, ConfigMeta};
pub use view::{StatsView, ViewFn, DEFAULT_WINDOW_CLAMP};
pub use worker_sum::combine;
