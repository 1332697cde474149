//! The snapshot `/stats` and `/metrics` are rendered from: [`StatsView`], a plain copy of
//! the counters ([`StatsView::fill_counters`]) plus what the process reads about itself
//! from /proc ([`StatsView::fill_process`]: CPU seconds, memory sizes, as C's `sb_memory`).
//!
//! Rendering is `c_text` and `prometheus`; serving is `http`; filling the config metadata
//! is `source`.

use super::counters::Stats;
use crate::clock::unix_now;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// C's default `-W` without `-D`.
pub const DEFAULT_WINDOW_CLAMP: u32 = 131_072;

/// Per-secret counters of the fork (spec §5.5), in command-line order of the secrets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecretView {
    /// Distinct client IP addresses with at least one live session under this secret
    /// (C's `secret_<i>_active_connections`: IPs, not TCP connections).
    pub active_ips: u64,
    /// Distinct non-zero auth_key_ids of live sessions under this secret.
    pub active_auth_keys: u64,
}

/// One process's ME pool, as C's `-M` master prints it in its `connections` section
/// (`ready_targets`, `allocated_targets`, `active_targets`, `inactive_targets`): C's master
/// keeps a pool of its own; ours has none, so the master shows what one worker holds (the
/// fewest ready targets of any worker, the most targets; `worker_sum`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolView {
    pub targets: u64,
    pub declared_targets: u64,
    pub ready_targets: u64,
}

/// Everything the stats pages print, taken at one moment. Plain values: build one per
/// request (see [`serve`](super::serve)); [`StatsView::fill_counters`] and [`StatsView::fill_process`]
/// fill the parts that come from [`Stats`] and from the OS.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsView {
    // Process.
    pub pid: u32,
    /// Unix seconds at start-up.
    pub start_time: u64,
    /// Unix seconds now.
    pub current_time: u64,
    /// The process id we present to MEs, printed as C's `PID` line: its IPv4 and port
    /// (the `-p` port).
    pub pid_ip: Ipv4Addr,
    pub pid_port: u16,
    /// Process CPU seconds so far, user and system.
    pub cpu_user_seconds: f64,
    pub cpu_sys_seconds: f64,
    /// From /proc/self/statm: size, resident, data; in bytes.
    pub vm_size_bytes: u64,
    pub vm_rss_bytes: u64,
    pub vm_data_bytes: u64,
    /// Our version string (C's `version` key).
    pub version: String,
    /// Seconds spent building this view (`stats_generate_time`); [`serve`](super::serve) sets it.
    pub stats_generate_time: f64,

    // Options.
    /// `-M`.
    pub workers: u32,
    /// `-W` (effective).
    pub window_clamp: u32,
    /// `-c`.
    pub max_connections: u64,
    /// `-C` (effective; C's default is the `-c` value).
    pub max_special_connections: u64,
    /// `--max-accept-rate` (0: unlimited).
    pub max_accept_rate: u64,
    /// `--allow-skip-dh` (C's `default_rpc_flags` 2056 instead of 2048).
    pub allow_skip_dh: bool,
    /// `-P` given.
    pub proxy_tag_set: bool,
    /// Listening sockets: the `-H` ports plus the stats port.
    pub listening_sockets: u64,

    // Config (ME mode; direct mode leaves them empty and 0).
    pub config_filename: String,
    /// Unix seconds the config in force was applied.
    pub config_loaded_at: u64,
    pub config_size: u64,
    pub config_md5: String,
    pub config_auth_clusters: u64,
    /// MD5 hex of the proxy secret (`--aes-pwd`), empty without one.
    pub aes_pwd_md5: String,

    // Client side (from Stats).
    pub accepted: u64,
    pub active: u64,
    /// Accepted headers by transport: abridged, intermediate, padded.
    pub handshakes_ok: [u64; 3],
    pub handshakes_bad: u64,
    pub handshakes_timeout: u64,
    /// Fake TLS: ClientHellos accepted and rejected, connections forwarded to the mask
    /// site (rejected hellos and non-TLS input), and hellos refused as replays.
    pub tls_accepted: u64,
    pub tls_rejected: u64,
    pub tls_masked: u64,
    pub tls_replayed: u64,
    pub dc_fallbacks: u64,
    pub upstream_connect_failed: u64,
    /// Relayed bytes: client → Telegram, Telegram → client.
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub idle_closed: u64,
    /// `accept()` errors on the client ports.
    pub accept_failed: u64,
    /// Connections closed at once for `--max-accept-rate` (C `accept_rate_limit_failed`).
    pub accept_rate_limit_failed: u64,
    /// Connections refused because `-c`/`-C` was reached.
    pub accept_connection_limit_failed: u64,

    // Upstream.
    /// Open upstream connections: ME connections in ME mode, DC connections in direct mode.
    pub outbound_connections: u64,
    /// Upstream connections ever established.
    pub outbound_connections_created: u64,
    /// Upstream connect latency: `(le, cumulative count)` in increasing `le` (seconds),
    /// without the `+Inf` bucket; then the sum of all observations and their count.
    pub connect_latency: Vec<(f64, u64)>,
    pub connect_latency_sum: f64,
    pub connect_latency_count: u64,

    // Middle-proxy mode (from Stats and the pool).
    pub forwarded_queries: u64,
    pub dropped_queries: u64,
    pub forwarded_responses: u64,
    pub dropped_responses: u64,
    pub forwarded_simple_acks: u64,
    pub dropped_simple_acks: u64,
    pub ext_connections: u64,
    pub ext_connections_created: u64,
    pub failed_flood: u64,
    /// Clients closed because all clients together had too much waiting (C
    /// `connections_failed_lru`; here: the `--msg-buffers-size` budget).
    pub failed_lru: u64,
    /// Bytes ME-mode sessions hold now (the `--msg-buffers-size` budget's use).
    pub me_buffered_bytes: u64,
    pub me_connects: u64,
    pub me_connect_failed: u64,
    /// Pool targets alive (including ones being drained after a reload).
    pub me_targets: u64,
    /// Targets named by the config in force.
    pub me_declared_targets: u64,
    /// Targets with at least one ready connection, and ready connections.
    pub me_ready_targets: u64,
    pub me_ready_connections: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,

    /// Per-secret counters, secret 1 first.
    pub secrets: Vec<SecretView>,
    /// The `-M` master: one worker's pool for the `connections` section's target keys (the
    /// `total_*` keys are the sums). `None`: a single process, whose own pool is printed.
    pub process_pool: Option<PoolView>,
    /// Fake TLS as a censor sees it (`dpi`).
    pub dpi: super::dpi::DpiView,

    // The stats server itself; [`serve`](super::serve) fills these.
    /// Stats connections open now (including the one asking).
    pub http_connections: u64,
    /// Stats connections ever accepted.
    pub http_accepted: u64,
    /// Requests parsed (answered with any status but 400).
    pub http_queries: u64,
    /// Requests refused with 400.
    pub http_bad_headers: u64,
}

impl Default for StatsView {
    fn default() -> Self {
        StatsView {
            pid: 0,
            start_time: 0,
            current_time: 0,
            pid_ip: Ipv4Addr::UNSPECIFIED,
            pid_port: 0,
            cpu_user_seconds: 0.0,
            cpu_sys_seconds: 0.0,
            vm_size_bytes: 0,
            vm_rss_bytes: 0,
            vm_data_bytes: 0,
            version: String::new(),
            stats_generate_time: 0.0,
            workers: 0,
            window_clamp: DEFAULT_WINDOW_CLAMP,
            max_connections: 0,
            max_special_connections: 0,
            max_accept_rate: 0,
            allow_skip_dh: false,
            proxy_tag_set: false,
            listening_sockets: 0,
            config_filename: String::new(),
            config_loaded_at: 0,
            config_size: 0,
            config_md5: String::new(),
            config_auth_clusters: 0,
            aes_pwd_md5: String::new(),
            accepted: 0,
            active: 0,
            handshakes_ok: [0; 3],
            handshakes_bad: 0,
            handshakes_timeout: 0,
            tls_accepted: 0,
            tls_rejected: 0,
            tls_masked: 0,
            tls_replayed: 0,
            dc_fallbacks: 0,
            upstream_connect_failed: 0,
            bytes_up: 0,
            bytes_down: 0,
            idle_closed: 0,
            accept_failed: 0,
            accept_rate_limit_failed: 0,
            accept_connection_limit_failed: 0,
            outbound_connections: 0,
            outbound_connections_created: 0,
            connect_latency: Vec::new(),
            connect_latency_sum: 0.0,
            connect_latency_count: 0,
            forwarded_queries: 0,
            dropped_queries: 0,
            forwarded_responses: 0,
            dropped_responses: 0,
            forwarded_simple_acks: 0,
            dropped_simple_acks: 0,
            ext_connections: 0,
            ext_connections_created: 0,
            failed_flood: 0,
            failed_lru: 0,
            me_buffered_bytes: 0,
            me_connects: 0,
            me_connect_failed: 0,
            me_targets: 0,
            me_declared_targets: 0,
            me_ready_targets: 0,
            me_ready_connections: 0,
            reloads_ok: 0,
            reloads_failed: 0,
            secrets: Vec::new(),
            process_pool: None,
            dpi: Default::default(),
            http_connections: 0,
            http_accepted: 0,
            http_queries: 0,
            http_bad_headers: 0,
        }
    }
}

impl StatsView {
    /// Copies every counter [`Stats`] has. `outbound_connections_created` is set to the ME
    /// connects (direct-mode dials are not counted by [`Stats`]).
    pub fn fill_counters(&mut self, s: &Stats) {
        let g = Stats::get;
        self.accepted = g(&s.accepted);
        self.active = g(&s.active);
        for (o, c) in self.handshakes_ok.iter_mut().zip(&s.handshakes_ok) {
            *o = g(c);
        }
        self.handshakes_bad = g(&s.handshakes_bad);
        self.handshakes_timeout = g(&s.handshakes_timeout);
        self.dc_fallbacks = g(&s.dc_fallbacks);
        self.upstream_connect_failed = g(&s.upstream_connect_failed);
        self.bytes_up = g(&s.bytes_up);
        self.bytes_down = g(&s.bytes_down);
        self.idle_closed = g(&s.idle_closed);
        self.forwarded_queries = g(&s.forwarded_queries);
        self.dropped_queries = g(&s.dropped_queries);
        self.forwarded_responses = g(&s.forwarded_responses);
        self.dropped_responses = g(&s.dropped_responses);
        self.forwarded_simple_acks = g(&s.forwarded_simple_acks);
        self.dropped_simple_acks = g(&s.dropped_simple_acks);
        self.ext_connections = g(&s.ext_connections);
        self.ext_connections_created = g(&s.ext_connections_created);
        self.failed_flood = g(&s.failed_flood);
        self.failed_lru = g(&s.failed_lru);
        self.me_buffered_bytes = g(&s.me_queued_bytes);
        self.me_connects = g(&s.me_connects);
        self.me_connect_failed = g(&s.me_connect_failed);
        self.outbound_connections_created = self.me_connects;
        self.reloads_ok = g(&s.reloads_ok);
        self.reloads_failed = g(&s.reloads_failed);
        self.accept_connection_limit_failed = g(&s.accept_limit_refused);
        self.accept_rate_limit_failed = g(&s.accept_rate_refused);
        self.accept_failed = g(&s.accept_failed);
        let (cum, sum, count) = s.connect_latency.cumulative();
        self.connect_latency = cum;
        self.connect_latency_sum = sum;
        self.connect_latency_count = count;
        self.tls_accepted = g(&s.tls_accepted);
        self.tls_rejected = g(&s.tls_rejected);
        self.tls_masked = g(&s.tls_masked);
        self.tls_replayed = g(&s.tls_replayed);
        self.dpi = s.dpi.view();
    }

    /// Sets `pid`, `current_time`, the CPU seconds (/proc/self/stat) and the memory sizes
    /// (/proc/self/statm, as C's `sb_memory`). Values it cannot read stay as they were.
    pub fn fill_process(&mut self) {
        self.pid = std::process::id();
        self.current_time = unix_now();
        if let Some((user, sys)) = proc_cpu_seconds() {
            self.cpu_user_seconds = user;
            self.cpu_sys_seconds = sys;
        }
        if let Some([size, rss, data]) = proc_statm_bytes() {
            self.vm_size_bytes = size;
            self.vm_rss_bytes = rss;
            self.vm_data_bytes = data;
        }
    }

    pub(super) fn uptime(&self) -> u64 {
        self.current_time.saturating_sub(self.start_time)
    }
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value; any name is allowed (-1 if unknown).
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|v| *v > 0)
}

fn proc_statm_bytes() -> Option<[u64; 3]> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let page = sysconf(libc::_SC_PAGESIZE)?;
    let f: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // size resident shared text lib data dt
    Some([f.first()? * page, f.get(1)? * page, f.get(5)? * page])
}

fn proc_cpu_seconds() -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let tick = sysconf(libc::_SC_CLK_TCK)? as f64;
    let user: u64 = f.get(11)?.parse().ok()?;
    let sys: u64 = f.get(12)?.parse().ok()?;
    Some((user as f64 / tick, sys as f64 / tick))
}

/// Builds the view on each request.
pub type ViewFn = Arc<dyn Fn() -> StatsView + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn fill_counters_copies_stats() {
        let s = Stats::default();
        s.handshakes_ok[2].store(5, Relaxed);
        s.forwarded_queries.store(7, Relaxed);
        s.me_connects.store(3, Relaxed);
        s.reloads_failed.store(2, Relaxed);
        let mut v = StatsView::default();
        v.fill_counters(&s);
        assert_eq!(v.handshakes_ok, [0, 0, 5]);
        assert_eq!(v.forwarded_queries, 7);
        assert_eq!(v.outbound_connections_created, 3);
        assert_eq!(v.reloads_failed, 2);
        v.fill_process();
        assert_eq!(v.pid, std::process::id());
        assert!(v.vm_rss_bytes > 0 && v.current_time > 1_600_000_000);
    }
}
