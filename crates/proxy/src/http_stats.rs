//! The stats port: C's `/stats` text page and a Prometheus `/metrics` page, both rendered
//! from one plain snapshot, [`StatsView`], and served by a tiny HTTP/1.x responder.
//!
//! What this is: the contract of spec backend-ops §5. [`render_stats`] writes C's body
//! (`key<TAB>value` lines, every key of `shared/spec/c-stats-sample.txt` in C's order, then
//! the fork's per-secret lines); [`render_metrics`] writes the same facts in the Prometheus
//! text format 0.0.4; [`serve`] answers HTTP requests the way C's stats handler does.
//! What this is not: it keeps no counters of its own except the HTTP server's (C's
//! `http_*` keys), it binds nothing (the caller binds [`bind_addr`], 127.0.0.1 like C) and
//! it does not speak C's engine TCP-RPC on the same port (spec §5.6: no known user).
//!
//! # HTTP behaviour (spec §5.1–5.2, C's `hts_parse_execute` and `hts_stats_execute`)
//! - A new connection is HTTP only if its first 4 bytes are `GET `, `HEAD`, `POST` or
//!   `OPTI`; C hands anything else to its TCP-RPC parser, we close the connection.
//! - Malformed request line or header, unknown method, head over 16 KiB
//!   ([`MAX_REQUEST_HEAD`], C's `MAX_HTTP_HEADER_SIZE`) → `400`, then close.
//! - POST without Content-Length → `411`; a non-POST with Content-Length > 0 → `413`.
//! - Method not GET, or any Content-Length (even 0) → `501`, then close.
//! - Peer not exactly 127.0.0.1 → `404` (other 127/8 addresses and IPv6 too, as C), unless
//!   `allow_non_loopback`.
//! - `GET /stats` → C's body as `text/plain`; `GET /metrics` (ours) → Prometheus text as
//!   [`METRICS_CONTENT_TYPE`]; any other URI, query strings included → `404`.
//! - Status line `HTTP/1.1`, headers `Server: MTProxy/1.0`, `Date`, `Content-Type`,
//!   `Connection: keep-alive|close`, `Content-Length`; error bodies are C's small HTML page.
//!   An HTTP/0.9 request (no version) gets the body alone, as C.
//! - Keep-alive only when the request says `Connection: keep-alive`; pipelined requests are
//!   answered in order. Otherwise the connection is closed after the response (after a
//!   short drain of unread input, so the peer gets the response rather than a reset).
//! - Ours, not C's: each request must arrive within [`READ_TIMEOUT`] (C waits forever), and
//!   at most 64 stats connections are served at once (more are closed on accept).
//!
//! # Mapping of C's keys
//! C keys with an equivalent here print it; the others print a value of the same shape
//! (so parsers keep working) chosen as below. "Σ" marks sums of [`StatsView`] fields.
//!
//! | C key(s) | we print |
//! |---|---|
//! | `pid`, `start_time`, `current_time` | `pid`, `start_time`, `current_time` |
//! | `uptime` | `current_time − start_time` |
//! | `tot_idle_time` | uptime − process CPU seconds (user + sys), at least 0 |
//! | `average_idle_percent`, `recent_idle_percent` | that idle time as % of uptime (no recent window: same value) |
//! | `active_network_events`, `epoll_calls`, `epoll_intr`, `time_after_epoll` | 0 (tokio owns the event loop) |
//! | `PID` | `[pid_ip:pid_port:pid:start_time]`, the id we give MEs |
//! | `active_connections`, `allocated_connections`, `allocated_socket_connections`, `total_connections`, `total_allocated_connections`, `total_allocated_socket_connections` | Σ `active` + `outbound_connections` + `http_connections` |
//! | `active_dh_connections`, `total_dh_connections`, `tot_dh_rounds`, `total_dh_rounds` | 0 (no DH, as C in practice) |
//! | `outbound_connections`, `ready_outbound_connections`, `active_outbound_connections`, `allocated_outbound_connections`, `total_allocated_outbound_connections` | `outbound_connections` |
//! | `outbound_connections_created` | `outbound_connections_created` ([`StatsView::fill_counters`]: ME connects) |
//! | `total_connect_failures` | Σ `me_connect_failed` + `upstream_connect_failed` |
//! | `inbound_connections`, `active_inbound_connections`, `allocated_inbound_connections`, `total_allocated_inbound_connections` | Σ `active` + `http_connections` |
//! | `inbound_connections_accepted` | Σ `accepted` + `http_accepted` |
//! | `listening_connections` | `listening_sockets` |
//! | `unused_connections_closed`, `free_targets`, `free_later_size`, `free_later_total`, `max_connection` (C's highest fd) | 0 |
//! | `ready_targets`, `total_ready_targets` | `me_ready_targets` |
//! | `allocated_targets`, `total_allocated_targets` | `me_targets` |
//! | `active_targets`, `total_declared_targets` | `me_declared_targets` |
//! | `inactive_targets`, `total_inactive_targets` | `me_targets − me_declared_targets`, at least 0 |
//! | `max_connections`, `max_special_connections`, `total_max_special_connections`, `max_accept_rate` | the same-named fields (`-c`, `-C`, `--max-accept-rate`) |
//! | `active_special_connections`, `total_special_connections` | `active` (client connections now) |
//! | `cur_accept_rate_remaining` | `max_accept_rate` (we do not rate-limit accepts: the bucket is always full) |
//! | `conn_generation` | Σ `accepted` + `http_accepted` + `outbound_connections_created` (connections ever made) |
//! | `tcp_readv_bytes`, `tcp_writev_bytes` | Σ `bytes_up` + `bytes_down` (relayed payload read resp. written; no framing) |
//! | `tcp_readv_calls`, `tcp_readv_intr`, `tcp_writev_calls`, `tcp_writev_intr` | 0 |
//! | `accept_calls_failed` | `accept_failed` |
//! | `accept_connection_limit_failed` | `accept_connection_limit_failed` |
//! | `accept_rate_limit_failed` | `accept_rate_limit_failed` |
//! | `accept_nonblock_set_failed`, `accept_init_accepted_failed` | 0 |
//! | `total_accept_connections_failed` | `0 accept_failed accept_connection_limit_failed 0 0` (C's order: init, calls, limit, rate, nonblock) |
//! | `raw_msg`, `raw_msg_buffer`, `mp_queue`, `timers`, `rpc_targets` sections; `total_network_buffer*` | 0 (no engine buffers, queues or timers; limits print 0 = none) |
//! | `rpc_sent_queries` | `forwarded_queries` (RPC_PROXY_REQ sent) |
//! | `rpc_qps` | `forwarded_queries / uptime` |
//! | other `tl_parse` keys | 0 |
//! | `default_rpc_flags` | 2048, or 2056 with `allow_skip_dh` (as C) |
//! | `allocated_aes_crypto`, `total_encrypted_connections` | Σ `active` + `outbound_connections` (every client and upstream stream is encrypted) |
//! | `allocated_aes_crypto_temp` | 0 |
//! | `aes_pwd_hash` | `aes_pwd_md5` (MD5 hex of the proxy secret; empty without one) |
//! | `thread_*`, `tot_threads`, `jobs_running` vectors | 16 zeros in C's 4×4 layout (no job threads) |
//! | `load_average_*`, `load_recent_*`, `max_average_*`, `max_recent_*` | process CPU user / sys / total as % of uptime (no window: all alike) |
//! | `job_timers_allocated`, `jobs_*`, `timer_ops*` | 0 |
//! | `stats_generate_time` | seconds taken to build the view ([`serve`] measures it) |
//! | `vmsize_bytes`, `vmrss_bytes`, `vmdata_bytes` | the fields ([`StatsView::fill_process`]: /proc/self/statm, as C) |
//! | `config_filename`, `config_loaded_at`, `config_size`, `config_md5`, `config_auth_clusters` | the fields (direct mode: empty and 0) |
//! | `workers`, `window_clamp` | the fields |
//! | `queries_get`, `qps_get`, `expired_forwarded_queries`, `active_rpcs*`, `rpc_dropped_*`, `mtproto_proxy_errors`, `pending_http_queries`, `total_active_network_events` | 0 (always 0 in C too, or no equivalent) |
//! | `tot_forwarded_queries`, `dropped_queries`, `tot_forwarded_responses`, `dropped_responses`, `tot_forwarded_simple_acks`, `dropped_simple_acks`, `ext_connections`, `ext_connections_created` | the same-named counters |
//! | `connections_failed_flood` | `failed_flood` |
//! | `http_connections`, `http_queries`, `http_bad_headers` | this server's own counters ([`serve`] fills them) |
//! | `http_qps` | `http_queries / uptime` |
//! | `proxy_mode` | 2 (always, as C) |
//! | `proxy_tag_set` | 1 if `-P` was given |
//! | `version` | `version` (our version string, not C's) |
//! | `secret_<i>_active_connections`, `secret_<i>_active_auth_keys` (fork) | `secrets[i-1]`: distinct client IPs, distinct non-zero auth_key_ids |
//!
//! Ratios use C's `safe_div`: 0 when the uptime is 0.

use crate::stats::Stats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt::{Display, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::debug;

/// C's `MAX_HTTP_HEADER_SIZE`: a request head (request line and headers) that is not
/// complete within this many bytes gets `400`.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// How long a request may take to arrive, counted from the first byte wanted.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// `Content-Type` of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";
/// C's default `-W` without `-D`.
pub const DEFAULT_WINDOW_CLAMP: u32 = 131_072;

/// Where C's stats port listens: 127.0.0.1 only, IPv4, even with `-6` (spec §5.1).
pub fn bind_addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Per-secret counters of the fork (spec §5.5), in command-line order of the secrets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecretView {
    /// Distinct client IP addresses with at least one live session under this secret
    /// (C's `secret_<i>_active_connections`: IPs, not TCP connections).
    pub active_ips: u64,
    /// Distinct non-zero auth_key_ids of live sessions under this secret.
    pub active_auth_keys: u64,
}

/// Everything the stats pages print, taken at one moment. Plain values: build one per
/// request (see [`serve`]); [`StatsView::fill_counters`] and [`StatsView::fill_process`]
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
    /// Seconds spent building this view (`stats_generate_time`); [`serve`] sets it.
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

    // The stats server itself; [`serve`] fills these.
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
            me_connects: 0,
            me_connect_failed: 0,
            me_targets: 0,
            me_declared_targets: 0,
            me_ready_targets: 0,
            me_ready_connections: 0,
            reloads_ok: 0,
            reloads_failed: 0,
            secrets: Vec::new(),
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
        self.me_connects = g(&s.me_connects);
        self.me_connect_failed = g(&s.me_connect_failed);
        self.outbound_connections_created = self.me_connects;
        self.reloads_ok = g(&s.reloads_ok);
        self.reloads_failed = g(&s.reloads_failed);
        self.accept_connection_limit_failed = g(&s.accept_limit_refused);
        self.accept_rate_limit_failed = g(&s.accept_rate_refused);
        let (cum, sum, count) = s.connect_latency.cumulative();
        self.connect_latency = cum;
        self.connect_latency_sum = sum;
        self.connect_latency_count = count;
        self.tls_accepted = g(&s.tls_accepted);
        self.tls_rejected = g(&s.tls_rejected);
        self.tls_masked = g(&s.tls_masked);
        self.tls_replayed = g(&s.tls_replayed);
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

    fn uptime(&self) -> u64 {
        self.current_time.saturating_sub(self.start_time)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

/// C's `safe_div`.
fn safe_div(x: f64, y: f64) -> f64 {
    if y > 0.0 {
        x / y
    } else {
        0.0
    }
}

/// Values C derives from several counters; shared by both sections that print them.
struct Derived {
    uptime: f64,
    all_connections: u64,
    inbound: u64,
    encrypted: u64,
    inactive_targets: u64,
    tcp_bytes: u64,
    cpu_user_pct: f64,
    cpu_sys_pct: f64,
}

impl Derived {
    fn of(v: &StatsView) -> Derived {
        let uptime = v.uptime() as f64;
        Derived {
            uptime,
            all_connections: v.active + v.outbound_connections + v.http_connections,
            inbound: v.active + v.http_connections,
            encrypted: v.active + v.outbound_connections,
            inactive_targets: v.me_targets.saturating_sub(v.me_declared_targets),
            tcp_bytes: v.bytes_up.saturating_add(v.bytes_down),
            cpu_user_pct: safe_div(100.0 * v.cpu_user_seconds, uptime),
            cpu_sys_pct: safe_div(100.0 * v.cpu_sys_seconds, uptime),
        }
    }
}

/// Writes `key\tvalue\n` lines and C's module section markers.
struct Body(String);

impl Body {
    fn kv(&mut self, key: &str, value: impl Display) {
        let _ = writeln!(self.0, "{key}\t{value}");
    }
    fn start(&mut self, module: &str) {
        let _ = writeln!(self.0, ">>>>>>{module}>>>>>>\tstart");
    }
    fn end(&mut self, module: &str) {
        let _ = writeln!(self.0, "<<<<<<{module}<<<<<<\tend");
    }
}

/// C's per-thread-class vectors: 16 values in groups of four, groups split by two spaces.
fn vec16(zero: &str) -> String {
    vec![[zero; 4].join(" "); 4].join("  ")
}

/// C's `/stats` body for `v`: every key of C's page in C's order (spec §5.3–5.4), then
/// the fork's two lines per secret (§5.5). See the module doc for what each key carries.
pub fn render_stats(v: &StatsView) -> String {
    let d = Derived::of(v);
    let mut b = Body(String::with_capacity(8192));
    let idle = (d.uptime - v.cpu_user_seconds - v.cpu_sys_seconds).max(0.0);
    let idle_pct = safe_div(100.0 * idle, d.uptime);

    // Engine (common/common-stats.c).
    b.kv("pid", v.pid);
    b.kv("start_time", v.start_time);
    b.kv("current_time", v.current_time);
    b.kv("uptime", v.uptime());
    b.kv("tot_idle_time", format_args!("{idle:.3}"));
    b.kv("average_idle_percent", format_args!("{idle_pct:.3}"));
    b.kv("recent_idle_percent", format_args!("{idle_pct:.3}"));
    b.kv("active_network_events", 0);
    b.kv("time_after_epoll", "0.000000");
    b.kv("epoll_calls", 0);
    b.kv("epoll_intr", 0);
    b.kv(
        "PID",
        format_args!("[{}:{}:{}:{}]", v.pid_ip, v.pid_port, v.pid, v.start_time),
    );

    b.start("connections");
    b.kv("active_connections", d.all_connections);
    b.kv("active_dh_connections", 0);
    b.kv("outbound_connections", v.outbound_connections);
    b.kv("ready_outbound_connections", v.outbound_connections);
    b.kv("active_outbound_connections", v.outbound_connections);
    b.kv(
        "outbound_connections_created",
        v.outbound_connections_created,
    );
    b.kv(
        "total_connect_failures",
        v.me_connect_failed + v.upstream_connect_failed,
    );
    b.kv("inbound_connections", d.inbound);
    b.kv("active_inbound_connections", d.inbound);
    b.kv("inbound_connections_accepted", v.accepted + v.http_accepted);
    b.kv("listening_connections", v.listening_sockets);
    b.kv("unused_connections_closed", 0);
    b.kv("ready_targets", v.me_ready_targets);
    b.kv("allocated_targets", v.me_targets);
    b.kv("active_targets", v.me_declared_targets);
    b.kv("inactive_targets", d.inactive_targets);
    b.kv("free_targets", 0);
    b.kv("max_connections", v.max_connections);
    b.kv("active_special_connections", v.active);
    b.kv("max_special_connections", v.max_special_connections);
    b.kv("max_accept_rate", v.max_accept_rate);
    b.kv(
        "cur_accept_rate_remaining",
        format_args!("{:.6}", v.max_accept_rate as f64),
    );
    b.kv("max_connection", 0);
    b.kv(
        "conn_generation",
        v.accepted + v.http_accepted + v.outbound_connections_created,
    );
    b.kv("allocated_connections", d.all_connections);
    b.kv("allocated_outbound_connections", v.outbound_connections);
    b.kv("allocated_inbound_connections", d.inbound);
    b.kv("allocated_socket_connections", d.all_connections);
    b.kv("tcp_readv_calls", 0);
    b.kv("tcp_readv_intr", 0);
    b.kv("tcp_readv_bytes", d.tcp_bytes);
    b.kv("tcp_writev_calls", 0);
    b.kv("tcp_writev_intr", 0);
    b.kv("tcp_writev_bytes", d.tcp_bytes);
    b.kv("free_later_size", 0);
    b.kv("free_later_total", 0);
    b.kv("accept_calls_failed", v.accept_failed);
    b.kv("accept_nonblock_set_failed", 0);
    b.kv(
        "accept_connection_limit_failed",
        v.accept_connection_limit_failed,
    );
    b.kv("accept_rate_limit_failed", v.accept_rate_limit_failed);
    b.kv("accept_init_accepted_failed", 0);
    b.end("connections");

    b.start("raw_msg");
    for k in ["rwm_total_msgs", "rwm_total_msg_parts"] {
        b.kv(k, 0);
    }
    b.end("raw_msg");

    b.start("raw_msg_buffer");
    for k in [
        "total_used_buffers_size",
        "total_used_buffers",
        "allocated_buffer_bytes",
        "buffer_chunk_alloc_ops",
        "allocated_buffer_chunks",
        "max_allocated_buffer_chunks",
        "max_buffer_chunks",
        "max_allocated_buffer_bytes",
    ] {
        b.kv(k, 0);
    }
    b.end("raw_msg_buffer");

    b.start("tl_parse");
    for k in [
        "rpc_queries_received",
        "rpc_answers_error",
        "rpc_answers_received",
        "rpc_sent_errors",
        "rpc_sent_answers",
    ] {
        b.kv(k, 0);
    }
    b.kv("rpc_sent_queries", v.forwarded_queries);
    b.kv("tl_in_allocated", 0);
    b.kv("tl_out_allocated", 0);
    b.kv(
        "rpc_qps",
        format_args!("{:.6}", safe_div(v.forwarded_queries as f64, d.uptime)),
    );
    b.kv(
        "default_rpc_flags",
        if v.allow_skip_dh { 2056 } else { 2048 },
    );
    b.end("tl_parse");

    b.start("crypto_aes");
    b.kv("allocated_aes_crypto", d.encrypted);
    b.kv("allocated_aes_crypto_temp", 0);
    b.kv("aes_pwd_hash", &v.aes_pwd_md5);
    b.end("crypto_aes");

    b.start("crypto_dh");
    b.kv("tot_dh_rounds", "0 0 0");
    b.end("crypto_dh");

    b.start("jobs");
    let fzeros = vec16("0.000");
    let izeros = vec16("0");
    for k in ["thread_average_idle_percent", "thread_recent_idle_percent"] {
        b.kv(k, &fzeros);
    }
    b.kv("tot_threads", &izeros);
    for k in [
        "thread_load_average_user",
        "thread_load_average_sys",
        "thread_load_average",
        "thread_load_recent_user",
        "thread_load_recent_sys",
        "thread_load_recent",
    ] {
        b.kv(k, &fzeros);
    }
    let (u, s) = (d.cpu_user_pct, d.cpu_sys_pct);
    for prefix in ["load_average", "load_recent", "max_average", "max_recent"] {
        b.kv(&format!("{prefix}_user"), format_args!("{u:.3}"));
        b.kv(&format!("{prefix}_sys"), format_args!("{s:.3}"));
        b.kv(&format!("{prefix}_total"), format_args!("{:.3}", u + s));
    }
    b.kv("job_timers_allocated", 0);
    b.kv("jobs_created", 0);
    b.kv("jobs_active", 0);
    b.kv("jobs_running", &izeros);
    b.kv("jobs_allocated_memory", 0);
    b.kv("timer_ops", 0);
    b.kv("timer_ops_scheduler", 0);
    b.end("jobs");

    b.start("mp_queue");
    for k in [
        "mpq_blocks_allocated",
        "mpq_blocks_allocated_max",
        "mpq_blocks_allocations",
        "mpq_blocks_true_allocations",
        "mpq_blocks_wasted",
        "mpq_blocks_prepared",
        "mpq_small_blocks_allocated",
        "mpq_small_blocks_allocated_max",
        "mpq_active",
        "mpq_allocated",
    ] {
        b.kv(k, 0);
    }
    b.end("mp_queue");

    b.start("timers");
    for k in [
        "event_timer_insert_ops",
        "event_timer_remove_ops",
        "event_timer_alarms",
        "total_timers",
    ] {
        b.kv(k, 0);
    }
    b.end("timers");

    b.start("rpc_targets");
    b.kv("total_rpc_targets", 0);
    b.kv("total_connections_in_rpc_targets", 0);
    b.end("rpc_targets");

    b.kv(
        "stats_generate_time",
        format_args!("{:.6}", v.stats_generate_time),
    );
    b.kv("vmsize_bytes", v.vm_size_bytes);
    b.kv("vmrss_bytes", v.vm_rss_bytes);
    b.kv("vmdata_bytes", v.vm_data_bytes);

    // The MTProxy block (mtfront_prepare_stats).
    b.kv("config_filename", &v.config_filename);
    b.kv("config_loaded_at", v.config_loaded_at);
    b.kv("config_size", v.config_size);
    b.kv("config_md5", &v.config_md5);
    b.kv("config_auth_clusters", v.config_auth_clusters);
    b.kv("workers", v.workers);
    b.kv("queries_get", 0);
    b.kv("qps_get", "0.000");
    b.kv("tot_forwarded_queries", v.forwarded_queries);
    b.kv("expired_forwarded_queries", 0);
    b.kv("dropped_queries", v.dropped_queries);
    b.kv("tot_forwarded_responses", v.forwarded_responses);
    b.kv("dropped_responses", v.dropped_responses);
    b.kv("tot_forwarded_simple_acks", v.forwarded_simple_acks);
    b.kv("dropped_simple_acks", v.dropped_simple_acks);
    for k in [
        "active_rpcs_created",
        "active_rpcs",
        "rpc_dropped_answers",
        "rpc_dropped_running",
    ] {
        b.kv(k, 0);
    }
    b.kv("window_clamp", v.window_clamp);
    b.kv("total_ready_targets", v.me_ready_targets);
    b.kv("total_allocated_targets", v.me_targets);
    b.kv("total_declared_targets", v.me_declared_targets);
    b.kv("total_inactive_targets", d.inactive_targets);
    b.kv("total_connections", d.all_connections);
    b.kv("total_encrypted_connections", d.encrypted);
    b.kv("total_allocated_connections", d.all_connections);
    b.kv(
        "total_allocated_outbound_connections",
        v.outbound_connections,
    );
    b.kv("total_allocated_inbound_connections", d.inbound);
    b.kv("total_allocated_socket_connections", d.all_connections);
    b.kv("total_dh_connections", 0);
    b.kv("total_dh_rounds", "0 0 0");
    b.kv("total_special_connections", v.active);
    b.kv("total_max_special_connections", v.max_special_connections);
    b.kv(
        "total_accept_connections_failed",
        format_args!(
            "0 {} {} {} 0",
            v.accept_failed, v.accept_connection_limit_failed, v.accept_rate_limit_failed
        ),
    );
    b.kv("ext_connections", v.ext_connections);
    b.kv("ext_connections_created", v.ext_connections_created);
    b.kv("total_active_network_events", 0);
    for k in [
        "total_network_buffers_used_size",
        "total_network_buffers_allocated_bytes",
        "total_network_buffers_used",
        "total_network_buffer_chunks_allocated",
        "total_network_buffer_chunks_allocated_max",
        "mtproto_proxy_errors",
    ] {
        b.kv(k, 0);
    }
    b.kv("connections_failed_lru", v.failed_lru);
    b.kv("connections_failed_flood", v.failed_flood);
    b.kv("http_connections", v.http_connections);
    b.kv("pending_http_queries", 0);
    b.kv("http_queries", v.http_queries);
    b.kv("http_bad_headers", v.http_bad_headers);
    b.kv(
        "http_qps",
        format_args!("{:.6}", safe_div(v.http_queries as f64, d.uptime)),
    );
    b.kv("proxy_mode", 2);
    b.kv("proxy_tag_set", u8::from(v.proxy_tag_set));
    b.kv("version", &v.version);

    // Fork: per-secret lines.
    for (i, s) in v.secrets.iter().enumerate() {
        b.kv(
            &format!("secret_{}_active_connections", i + 1),
            s.active_ips,
        );
        b.kv(
            &format!("secret_{}_active_auth_keys", i + 1),
            s.active_auth_keys,
        );
    }
    b.0
}

/// Encodes a [`StatsView`] as Prometheus families, in a fixed order.
#[derive(Debug)]
struct ViewCollector(StatsView);

type Enc<'a> = DescriptorEncoder<'a>;

fn counter(e: &mut Enc, name: &str, help: &str, v: u64) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut Enc,
    name: &str,
    help: &str,
    v: V,
) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// One family with one label; `series` gives (label value, value).
fn labelled(
    e: &mut Enc,
    kind: MetricType,
    name: &str,
    help: &str,
    label: &'static str,
    series: impl IntoIterator<Item = (String, u64)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (value, n) in series {
        let labels = [(label, value)];
        let mut f = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => f.encode_counter::<NoLabelSet, _, u64>(&n, None)?,
            _ => f.encode_gauge(&n)?,
        }
    }
    Ok(())
}

fn pairs<const N: usize>(items: [(&str, u64); N]) -> impl Iterator<Item = (String, u64)> + '_ {
    items.into_iter().map(|(k, v)| (k.to_string(), v))
}

impl Collector for ViewCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let v = &self.0;
        let c = MetricType::Counter;
        let g = MetricType::Gauge;
        gauge(
            &mut e,
            "start_time_seconds",
            "Unix time the proxy started.",
            v.start_time,
        )?;
        counter(
            &mut e,
            "client_accepted",
            "Client connections accepted on the -H ports.",
            v.accepted,
        )?;
        gauge(
            &mut e,
            "client_active",
            "Client connections open now.",
            v.active,
        )?;
        let [ab, int, pad] = v.handshakes_ok;
        labelled(
            &mut e,
            c,
            "client_connections",
            "Client connections whose obfuscated2 header was accepted, by transport.",
            "transport",
            pairs([("abridged", ab), ("intermediate", int), ("padded", pad)]),
        )?;
        labelled(
            &mut e,
            c,
            "handshakes",
            "Client handshakes: accepted, rejected by every secret, or timed out.",
            "result",
            pairs([
                ("accepted", ab + int + pad),
                ("rejected", v.handshakes_bad),
                ("timeout", v.handshakes_timeout),
            ]),
        )?;
        labelled(
            &mut e,
            c,
            "tls_handshakes",
            "Fake-TLS connections: hellos accepted or rejected, connections masked (spliced to the real site), replays.",
            "result",
            pairs([
                ("accepted", v.tls_accepted),
                ("rejected", v.tls_rejected),
                ("masked", v.tls_masked),
                ("replayed", v.tls_replayed),
            ]),
        )?;
        labelled(
            &mut e,
            c,
            "relayed_bytes",
            "Payload bytes relayed: up = client to Telegram, down = Telegram to client.",
            "direction",
            pairs([("up", v.bytes_up), ("down", v.bytes_down)]),
        )?;
        counter(
            &mut e,
            "idle_closed",
            "Client sessions closed by the idle timeout.",
            v.idle_closed,
        )?;
        counter(
            &mut e,
            "dc_fallbacks",
            "Sessions whose DC id was unknown and went to the default DC.",
            v.dc_fallbacks,
        )?;
        counter(
            &mut e,
            "upstream_connect_failures",
            "Direct mode: DC dials that failed on every address.",
            v.upstream_connect_failed,
        )?;
        gauge(
            &mut e,
            "upstream_connections",
            "Open upstream connections (ME connections, or DC connections in direct mode).",
            v.outbound_connections,
        )?;
        let mut prev = 0u64;
        let buckets: Vec<(f64, u64)> = v
            .connect_latency
            .iter()
            .map(|&(le, cum)| {
                let n = cum.saturating_sub(prev);
                prev = prev.max(cum);
                (le, n)
            })
            .collect();
        e.encode_descriptor(
            "upstream_connect_duration_seconds",
            "Time to establish an upstream connection (TCP connect, and the RPC handshake for MEs).",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            v.connect_latency_sum,
            v.connect_latency_count,
            &buckets,
            None,
        )?;
        gauge(
            &mut e,
            "me_targets",
            "Middle-end targets in the pool.",
            v.me_targets,
        )?;
        gauge(
            &mut e,
            "me_ready_targets",
            "Middle-end targets with at least one ready connection.",
            v.me_ready_targets,
        )?;
        gauge(
            &mut e,
            "me_ready_connections",
            "Ready middle-end connections.",
            v.me_ready_connections,
        )?;
        labelled(
            &mut e,
            c,
            "me_connects",
            "Middle-end connections that completed the handshake, and dial or handshake failures.",
            "result",
            pairs([("ok", v.me_connects), ("failed", v.me_connect_failed)]),
        )?;
        labelled(
            &mut e,
            c,
            "me_queries",
            "Client packets sent to middle-ends (RPC_PROXY_REQ), or dropped for want of one.",
            "result",
            pairs([
                ("forwarded", v.forwarded_queries),
                ("dropped", v.dropped_queries),
            ]),
        )?;
        labelled(
            &mut e,
            c,
            "me_responses",
            "RPC_PROXY_ANS delivered to clients, or dropped (unknown or closed session).",
            "result",
            pairs([
                ("forwarded", v.forwarded_responses),
                ("dropped", v.dropped_responses),
            ]),
        )?;
        labelled(
            &mut e,
            c,
            "me_simple_acks",
            "RPC_SIMPLE_ACK delivered to clients, or dropped.",
            "result",
            pairs([
                ("forwarded", v.forwarded_simple_acks),
                ("dropped", v.dropped_simple_acks),
            ]),
        )?;
        gauge(
            &mut e,
            "me_sessions",
            "Client sessions bound to a middle-end now.",
            v.ext_connections,
        )?;
        counter(
            &mut e,
            "me_sessions_created",
            "Client sessions ever bound to a middle-end.",
            v.ext_connections_created,
        )?;
        counter(
            &mut e,
            "clients_closed_flood",
            "Clients closed because too much data waited for them.",
            v.failed_flood,
        )?;
        labelled(
            &mut e,
            g,
            "secret_active_ips",
            "Distinct client IPs with a live session, by secret index (1-based, as given).",
            "secret",
            v.secrets
                .iter()
                .enumerate()
                .map(|(i, s)| ((i + 1).to_string(), s.active_ips)),
        )?;
        labelled(
            &mut e,
            g,
            "secret_active_auth_keys",
            "Distinct non-zero auth_key_ids of live sessions, by secret index.",
            "secret",
            v.secrets
                .iter()
                .enumerate()
                .map(|(i, s)| ((i + 1).to_string(), s.active_auth_keys)),
        )?;
        labelled(
            &mut e,
            c,
            "config_reloads",
            "SIGHUP reloads applied, or refused (the previous config stays).",
            "result",
            pairs([("ok", v.reloads_ok), ("failed", v.reloads_failed)]),
        )?;
        gauge(
            &mut e,
            "config_loaded_at_seconds",
            "Unix time the config in force was applied (0: no config).",
            v.config_loaded_at,
        )?;
        gauge(
            &mut e,
            "proxy_tag_set",
            "1 if a proxy tag (-P) is set.",
            u64::from(v.proxy_tag_set),
        )?;
        Ok(())
    }
}

/// The view as Prometheus text format 0.0.4 (names prefixed `mtproxy_`). Per-secret series
/// carry the secret's index (`secret="1"`), never the secret.
pub fn render_metrics(v: &StatsView) -> String {
    let mut registry = Registry::with_prefix("mtproxy");
    registry.register_collector(Box::new(ViewCollector(v.clone())));
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail; an encoder error would only truncate the page.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

/// Builds the view on each request.
pub type ViewFn = Arc<dyn Fn() -> StatsView + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
    Options,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// No version word: the response is the body alone.
    V09,
    V10,
    V11,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    method: Method,
    uri: Vec<u8>,
    version: Version,
    keep_alive: bool,
    content_length: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
enum Parse {
    /// More bytes are needed.
    Incomplete,
    /// `400`; `v09` if the request line said HTTP/0.9 (no response header then).
    Bad {
        v09: bool,
    },
    Ok {
        req: Request,
        consumed: usize,
    },
}

/// C's request line: method, spaces, URI, spaces, optional version, spaces, end. Words are
/// runs of bytes above 0x20; only spaces separate them. `Err(v09)` for a bad line, `v09`
/// telling whether C had already taken it for HTTP/0.9 (its 400 then has no header).
fn parse_request_line(line: &[u8]) -> Result<(Method, Vec<u8>, Version), bool> {
    let mut i = 0;
    let word = |i: &mut usize| {
        let start = *i;
        while *i < line.len() && line[*i] > b' ' {
            *i += 1;
        }
        let w = &line[start..*i];
        while *i < line.len() && line[*i] == b' ' {
            *i += 1;
        }
        w
    };
    let method = match word(&mut i) {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"OPTIONS" => Method::Options,
        _ => return Err(false),
    };
    let uri = word(&mut i).to_vec();
    if uri.is_empty() {
        return Err(false);
    }
    let version = match word(&mut i) {
        b"" => Version::V09,
        b"HTTP/1.0" => Version::V10,
        b"HTTP/1.1" => Version::V11,
        _ => return Err(false),
    };
    if i != line.len() {
        return Err(version == Version::V09);
    }
    Ok((method, uri, version))
}

fn trim_sp_tab(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// One header line (no line ending) into `req`; `false` if C would flag it as an error.
fn parse_header(line: &[u8], req: &mut Request) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = &line[..colon];
    if name.iter().any(|&b| b <= b' ') {
        return false;
    }
    let value = trim_sp_tab(&line[colon + 1..]);
    if name.eq_ignore_ascii_case(b"content-length") {
        if req.content_length.is_some() || value.is_empty() || !value.iter().all(u8::is_ascii_digit)
        {
            return false;
        }
        let mut n: u64 = 0;
        for &d in value {
            if n >= 0x7fff_ffff / 10 {
                return false;
            }
            n = n * 10 + u64::from(d - b'0');
        }
        req.content_length = Some(n);
    } else if name.eq_ignore_ascii_case(b"connection") || name.eq_ignore_ascii_case(b"host") {
        // C reads one word here; anything after it on the line is an error.
        if value.iter().any(|&b| b <= b' ') {
            return false;
        }
        if name.eq_ignore_ascii_case(b"connection") && value.eq_ignore_ascii_case(b"keep-alive") {
            req.keep_alive = true;
        }
    }
    true
}

/// Strips the LF and at most one CR before it.
fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses one request head from the start of `buf` (C's `hts_parse_execute` rules).
fn parse_request(buf: &[u8], max_head: usize) -> Parse {
    let too_big = |n: usize| n >= max_head;
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return if too_big(buf.len()) {
            Parse::Bad { v09: false }
        } else {
            Parse::Incomplete
        };
    };
    if too_big(lf + 1) {
        return Parse::Bad { v09: false };
    }
    let (method, uri, version) = match parse_request_line(strip_eol(&buf[..=lf])) {
        Ok(x) => x,
        Err(v09) => return Parse::Bad { v09 },
    };
    let mut req = Request {
        method,
        uri,
        version,
        keep_alive: false,
        content_length: None,
    };
    if version == Version::V09 {
        return Parse::Ok {
            req,
            consumed: lf + 1,
        };
    }
    let mut pos = lf + 1;
    let mut ok = true;
    loop {
        let Some(n) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return if too_big(buf.len()) {
                Parse::Bad { v09: false }
            } else {
                Parse::Incomplete
            };
        };
        let end = pos + n + 1;
        if too_big(end) {
            return Parse::Bad { v09: false };
        }
        let line = strip_eol(&buf[pos..end]);
        pos = end;
        if line.is_empty() {
            break;
        }
        // After an error C skips to the end of the head before answering 400.
        ok = ok && parse_header(line, &mut req);
    }
    if ok {
        Parse::Ok { req, consumed: pos }
    } else {
        Parse::Bad { v09: false }
    }
}

/// C's `http_get_error_msg_text`.
fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        411 => "Length Required",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        501 => "Not Implemented",
        _ => "Internal Server Error",
    }
}

/// C's error page (`error_text_pattern`).
fn error_page(code: u16) -> String {
    let t = status_text(code);
    format!(
        "<html>\r\n<head><title>{code} {t}</title></head>\r\n<body bgcolor=\"white\">\r\n\
         <center><h1>{code} {t}</h1></center>\r\n<hr><center>MTProxy/1.0</center>\r\n\
         </body>\r\n</html>\r\n"
    )
}

/// RFC 1123 date, as C's `gen_http_date`: `Thu, 01 Jan 1970 00:00:00 GMT`.
fn http_date(unix: u64) -> String {
    const DOW: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let rem = unix % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DOW[((days + 4) % 7) as usize],
        day,
        MON[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One response as C writes it (`write_basic_http_header_raw`); HTTP/0.9: the body alone.
fn response(code: u16, content_type: &str, body: &[u8], keep_alive: bool, v09: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 200);
    if !v09 {
        let head = format!(
            "HTTP/1.1 {code} {}\r\nServer: MTProxy/1.0\r\nDate: {}\r\nContent-Type: {content_type}\r\n\
             Connection: {}\r\nContent-Length: {}\r\n\r\n",
            status_text(code),
            http_date(unix_now()),
            if keep_alive { "keep-alive" } else { "close" },
            body.len()
        );
        out.extend_from_slice(head.as_bytes());
    }
    out.extend_from_slice(body);
    out
}

fn error_response(code: u16, keep_alive: bool, v09: bool) -> Vec<u8> {
    response(
        code,
        "text/html",
        error_page(code).as_bytes(),
        keep_alive,
        v09,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Stats,
    Metrics,
    Error(u16),
}

/// C's checks in order: generic parser (411, 413), then the stats handler (501, peer, URI).
/// Returns the reply and whether the connection stays open.
fn decide(req: &Request, peer_ok: bool) -> (Reply, bool) {
    let keep = req.keep_alive;
    if req.method == Method::Post && req.content_length.is_none() {
        return (Reply::Error(411), keep);
    }
    if req.method != Method::Post && req.content_length.unwrap_or(0) > 0 {
        return (Reply::Error(413), false);
    }
    if req.method != Method::Get || req.content_length.is_some() {
        return (Reply::Error(501), false);
    }
    if !peer_ok {
        return (Reply::Error(404), keep);
    }
    match req.uri.as_slice() {
        b"/stats" => (Reply::Stats, keep),
        b"/metrics" => (Reply::Metrics, keep),
        _ => (Reply::Error(404), keep),
    }
}

/// C answers only 127.0.0.1 (`remote_ip != 0x7f000001` → 404); the IPv4-mapped form is the
/// same peer on a dual-stack socket.
fn is_c_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a == Ipv4Addr::LOCALHOST,
        IpAddr::V6(a) => a.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST),
    }
}

/// C's HTTP switch: the first 4 bytes of a connection.
const HTTP_PREFIXES: [&[u8; 4]; 4] = [b"GET ", b"HEAD", b"POST", b"OPTI"];

#[derive(Debug, Clone, Copy)]
struct Limits {
    read_timeout: Duration,
    max_head: usize,
    max_connections: usize,
    /// Unread input discarded before closing, so that the peer reads our response.
    drain_bytes: usize,
    drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_timeout: READ_TIMEOUT,
            max_head: MAX_REQUEST_HEAD,
            max_connections: 64,
            drain_bytes: 1 << 20,
            drain_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Default)]
struct HttpCounters {
    open: AtomicU64,
    accepted: AtomicU64,
    queries: AtomicU64,
    bad: AtomicU64,
}

struct Server {
    view: ViewFn,
    allow_non_loopback: bool,
    limits: Limits,
    counters: HttpCounters,
}

/// Decrements the open-connections count when a connection task ends, however it ends.
struct Open<'a>(&'a AtomicU64);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Server {
    fn snapshot(&self) -> StatsView {
        let t = Instant::now();
        let mut v = (self.view)();
        v.stats_generate_time = t.elapsed().as_secs_f64();
        let c = &self.counters;
        v.http_connections = c.open.load(Relaxed);
        v.http_accepted = c.accepted.load(Relaxed);
        v.http_queries = c.queries.load(Relaxed);
        v.http_bad_headers = c.bad.load(Relaxed);
        v
    }

    /// Reads more input into `buf` (at most up to `max_head` plus one read); `false` on
    /// EOF, error or timeout.
    async fn read_more(&self, sock: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 4096];
        let want = self
            .limits
            .max_head
            .saturating_sub(buf.len())
            .clamp(1, chunk.len());
        match tokio::time::timeout(self.limits.read_timeout, sock.read(&mut chunk[..want])).await {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    async fn write(&self, sock: &mut TcpStream, bytes: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(self.limits.read_timeout, sock.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// Sends FIN after the response, then discards what the peer still sends (bounded),
    /// so that closing does not reset the connection before the peer has read us.
    async fn close(&self, mut sock: TcpStream) {
        let _ = sock.shutdown().await;
        let deadline = tokio::time::Instant::now() + self.limits.drain_timeout;
        let mut chunk = [0u8; 4096];
        let mut drained = 0;
        while drained < self.limits.drain_bytes {
            match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }

    async fn connection(&self, mut sock: TcpStream, peer: SocketAddr) {
        self.counters.accepted.fetch_add(1, Relaxed);
        self.counters.open.fetch_add(1, Relaxed);
        let _open = Open(&self.counters.open);
        let peer_ok = self.allow_non_loopback || is_c_loopback(peer.ip());
        let mut buf = Vec::with_capacity(1024);
        while buf.len() < 4 {
            if !self.read_more(&mut sock, &mut buf).await {
                return;
            }
        }
        if !HTTP_PREFIXES.iter().any(|p| buf.starts_with(*p)) {
            debug!("stats port: {peer} sent no HTTP request; closing");
            return;
        }
        loop {
            let parsed = loop {
                match parse_request(&buf, self.limits.max_head) {
                    Parse::Incomplete => {
                        if !self.read_more(&mut sock, &mut buf).await {
                            return;
                        }
                    }
                    Parse::Bad { v09 } => break Err(v09),
                    Parse::Ok { req, consumed } => break Ok((req, consumed)),
                }
            };
            let (req, consumed) = match parsed {
                Ok(x) => x,
                Err(v09) => {
                    self.counters.bad.fetch_add(1, Relaxed);
                    debug!("stats port: bad request from {peer}");
                    if self
                        .write(&mut sock, &error_response(400, false, v09))
                        .await
                    {
                        self.close(sock).await;
                    }
                    return;
                }
            };
            let v09 = req.version == Version::V09;
            let (reply, keep) = decide(&req, peer_ok);
            let keep = keep && !v09;
            let out = match reply {
                Reply::Stats => response(
                    200,
                    "text/plain",
                    render_stats(&self.snapshot()).as_bytes(),
                    keep,
                    v09,
                ),
                Reply::Metrics => response(
                    200,
                    METRICS_CONTENT_TYPE,
                    render_metrics(&self.snapshot()).as_bytes(),
                    keep,
                    v09,
                ),
                Reply::Error(code) => error_response(code, keep, v09),
            };
            self.counters.queries.fetch_add(1, Relaxed);
            if !self.write(&mut sock, &out).await {
                return;
            }
            if !keep {
                self.close(sock).await;
                return;
            }
            buf.drain(..consumed);
        }
    }
}

/// Serves the stats port on `listener` until the task is dropped: `GET /stats` (C's page),
/// `GET /metrics` (Prometheus), C's error pages otherwise (see the module doc). `view` is
/// called once per answered page. Peers other than 127.0.0.1 get `404` unless
/// `allow_non_loopback`. Never returns; accept errors are logged and retried.
pub async fn serve(listener: TcpListener, view: ViewFn, allow_non_loopback: bool) {
    serve_with(listener, view, allow_non_loopback, Limits::default()).await
}

async fn serve_with(listener: TcpListener, view: ViewFn, allow_non_loopback: bool, limits: Limits) {
    let server = Arc::new(Server {
        view,
        allow_non_loopback,
        limits,
        counters: HttpCounters::default(),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    debug!("stats port: too many connections; closing {peer}");
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    server.connection(sock, peer).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                debug!("stats port: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokio::net::TcpSocket;

    // ---- helpers -------------------------------------------------------------------

    /// The C sample: (main page lines, fork lines), each as (key, value), comments and
    /// blank lines dropped. The fork part starts after the first blank line.
    type Lines = Vec<(String, String)>;

    fn sample() -> (Lines, Lines) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/spec/c-stats-sample.txt"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut parts = (Vec::new(), Vec::new());
        let mut fork = false;
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.is_empty() {
                fork = true;
                continue;
            }
            let (k, v) = line.split_once('\t').expect("key<TAB>value");
            let dst = if fork { &mut parts.1 } else { &mut parts.0 };
            dst.push((k.to_string(), v.to_string()));
        }
        assert!(parts.0.len() > 150, "sample main part too short");
        parts
    }

    fn lines(body: &str) -> Vec<(String, String)> {
        assert!(body.ends_with('\n'), "body must end with a newline");
        body.lines()
            .map(|l| {
                assert_eq!(l.matches('\t').count(), 1, "one tab per line: {l:?}");
                let (k, v) = l.split_once('\t').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn full_view() -> StatsView {
        StatsView {
            pid: 4242,
            start_time: 1_795_722_105,
            current_time: 1_795_722_761,
            pid_ip: Ipv4Addr::new(192, 0, 2, 2),
            pid_port: 31080,
            cpu_user_seconds: 3.0,
            cpu_sys_seconds: 11.5,
            vm_size_bytes: 1 << 30,
            vm_rss_bytes: 9 << 20,
            vm_data_bytes: 250 << 20,
            version: crate::cli::version(),
            stats_generate_time: 0.000_09,
            workers: 0,
            window_clamp: DEFAULT_WINDOW_CLAMP,
            max_connections: 10_000,
            max_special_connections: 9_000,
            max_accept_rate: 0,
            allow_skip_dh: false,
            proxy_tag_set: true,
            listening_sockets: 2,
            config_filename: "proxy-multi.conf".into(),
            config_loaded_at: 1_795_722_105,
            config_size: 129,
            config_md5: "be4007cb68bd2c36403a90fde83e054c".into(),
            config_auth_clusters: 4,
            aes_pwd_md5: "3c44ae58803b037d34c48bb8425770f4".into(),
            accepted: 25,
            active: 3,
            handshakes_ok: [7, 8, 9],
            handshakes_bad: 2,
            handshakes_timeout: 1,
            tls_accepted: 0,
            tls_rejected: 0,
            tls_masked: 5,
            tls_replayed: 6,
            dc_fallbacks: 4,
            upstream_connect_failed: 1,
            bytes_up: 1000,
            bytes_down: 5000,
            idle_closed: 3,
            accept_rate_limit_failed: 13,
            accept_failed: 11,
            accept_connection_limit_failed: 12,
            outbound_connections: 8,
            outbound_connections_created: 9,
            connect_latency: vec![(0.001, 1), (0.01, 4), (0.1, 8), (1.0, 9)],
            connect_latency_sum: 0.25,
            connect_latency_count: 10,
            forwarded_queries: 24,
            dropped_queries: 13,
            forwarded_responses: 23,
            dropped_responses: 14,
            forwarded_simple_acks: 15,
            dropped_simple_acks: 16,
            ext_connections: 2,
            ext_connections_created: 17,
            failed_lru: 0,
            failed_flood: 18,
            me_connects: 9,
            me_connect_failed: 19,
            me_targets: 3,
            me_declared_targets: 2,
            me_ready_targets: 2,
            me_ready_connections: 8,
            reloads_ok: 20,
            reloads_failed: 21,
            secrets: vec![
                SecretView::default(),
                SecretView {
                    active_ips: 1,
                    active_auth_keys: 1,
                },
                SecretView::default(),
            ],
            http_connections: 1,
            http_accepted: 4,
            http_queries: 2,
            http_bad_headers: 22,
        }
    }

    /// A value's shape: per space-separated token, integer `i`, fixed-point `f<decimals>`
    /// or other `s` (double spaces give empty tokens, kept).
    fn shape(v: &str) -> Vec<String> {
        v.split(' ')
            .map(|t| {
                let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                match t.split_once('.') {
                    None if digits(t.strip_prefix('-').unwrap_or(t)) => "i".to_string(),
                    Some((a, b)) if digits(a) && digits(b) => format!("f{}", b.len()),
                    _ => format!("s:{}", t.is_empty()),
                }
            })
            .collect()
    }

    // ---- /stats body ---------------------------------------------------------------

    #[test]
    fn stats_keys_are_c_keys_in_c_order() {
        let (main, _) = sample();
        let v = StatsView {
            secrets: vec![],
            ..full_view()
        };
        let ours: Vec<String> = lines(&render_stats(&v)).into_iter().map(|l| l.0).collect();
        let theirs: Vec<String> = main.into_iter().map(|l| l.0).collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn stats_values_have_c_shapes() {
        let (main, _) = sample();
        let ours = lines(&render_stats(&full_view()));
        for ((k, cv), (_, ov)) in main.iter().zip(&ours) {
            if k == "version" {
                continue; // free text, ours differs on purpose
            }
            assert_eq!(shape(ov), shape(cv), "{k}: ours {ov:?}, C {cv:?}");
        }
        // The default view (all zeros, empty strings) keeps the numeric shapes too.
        let zero = lines(&render_stats(&StatsView::default()));
        for ((k, cv), (_, ov)) in main.iter().zip(&zero) {
            if shape(cv).iter().all(|s| !s.starts_with('s')) {
                assert_eq!(shape(ov), shape(cv), "{k} in the default view");
            }
        }
    }

    #[test]
    fn fork_secret_lines_follow_version() {
        let (_, fork) = sample();
        let ours = lines(&render_stats(&full_view()));
        let at = ours.iter().position(|l| l.0 == "version").unwrap();
        assert_eq!(fork[0].0, "version");
        assert_eq!(&ours[at + 1..], &fork[1..]);
        // No secrets: the page ends with `version`.
        let none = lines(&render_stats(&StatsView::default()));
        assert_eq!(none.last().unwrap().0, "version");
    }

    #[test]
    fn stats_values_come_from_the_view() {
        let map: HashMap<String, String> = lines(&render_stats(&full_view())).into_iter().collect();
        let expect = [
            ("pid", "4242"),
            ("uptime", "656"),
            ("PID", "[192.0.2.2:31080:4242:1795722105]"),
            ("tot_idle_time", "641.500"),
            ("active_connections", "12"),
            ("inbound_connections", "4"),
            ("inbound_connections_accepted", "29"),
            ("outbound_connections", "8"),
            ("total_connect_failures", "20"),
            ("ready_targets", "2"),
            ("allocated_targets", "3"),
            ("active_targets", "2"),
            ("inactive_targets", "1"),
            ("max_special_connections", "9000"),
            ("active_special_connections", "3"),
            ("tcp_readv_bytes", "6000"),
            ("default_rpc_flags", "2048"),
            ("allocated_aes_crypto", "11"),
            ("aes_pwd_hash", "3c44ae58803b037d34c48bb8425770f4"),
            ("config_filename", "proxy-multi.conf"),
            ("config_auth_clusters", "4"),
            ("tot_forwarded_queries", "24"),
            ("dropped_queries", "13"),
            ("tot_forwarded_responses", "23"),
            ("dropped_responses", "14"),
            ("tot_forwarded_simple_acks", "15"),
            ("dropped_simple_acks", "16"),
            ("total_special_connections", "3"),
            ("total_max_special_connections", "9000"),
            ("total_accept_connections_failed", "0 11 12 13 0"),
            ("ext_connections", "2"),
            ("ext_connections_created", "17"),
            ("connections_failed_flood", "18"),
            ("http_connections", "1"),
            ("http_queries", "2"),
            ("http_bad_headers", "22"),
            ("proxy_mode", "2"),
            ("proxy_tag_set", "1"),
            ("window_clamp", "131072"),
            ("stats_generate_time", "0.000090"),
        ];
        for (k, v) in expect {
            assert_eq!(map.get(k).map(String::as_str), Some(v), "{k}");
        }
        let skip_dh = StatsView {
            allow_skip_dh: true,
            ..full_view()
        };
        assert!(render_stats(&skip_dh).contains("\ndefault_rpc_flags\t2056\n"));
    }

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

    // ---- /metrics ------------------------------------------------------------------

    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    /// A small parser for the Prometheus text format 0.0.4: `# HELP`, `# TYPE`, samples
    /// `name{k="v",…} value`. Fails on anything else and on samples without a TYPE.
    fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut out = Vec::new();
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.bytes().enumerate().all(|(i, b)| {
                    b.is_ascii_alphabetic()
                        || b == b'_'
                        || b == b':'
                        || (i > 0 && b.is_ascii_digit())
                })
        };
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut it = rest.splitn(3, ' ');
                match (it.next(), it.next(), it.next()) {
                    (Some("HELP"), Some(n), Some(_)) if valid_name(n) => {}
                    (Some("TYPE"), Some(n), Some(t)) if valid_name(n) => {
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                            return Err(format!("bad type: {line}"));
                        }
                        if types.insert(n.to_string(), t.to_string()).is_some() {
                            return Err(format!("duplicate TYPE: {line}"));
                        }
                    }
                    _ => return Err(format!("unexpected comment: {line}")),
                }
                continue;
            }
            let end = line.find(['{', ' ']).ok_or(format!("no value: {line}"))?;
            let name = &line[..end];
            if !valid_name(name) {
                return Err(format!("bad name: {line}"));
            }
            let mut rest = &line[end..];
            let mut labels = Vec::new();
            if let Some(r) = rest.strip_prefix('{') {
                let mut r = r;
                loop {
                    if let Some(after) = r.strip_prefix('}') {
                        r = after;
                        break;
                    }
                    let eq = r.find("=\"").ok_or(format!("bad label: {line}"))?;
                    let key = r[..eq].to_string();
                    let mut value = String::new();
                    let mut chars = r[eq + 2..].char_indices();
                    let close = loop {
                        match chars.next() {
                            Some((i, '"')) => break i,
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, c @ ('\\' | '"'))) => value.push(c),
                                _ => return Err(format!("bad escape: {line}")),
                            },
                            Some((_, c)) => value.push(c),
                            None => return Err(format!("unterminated label: {line}")),
                        }
                    };
                    labels.push((key, value));
                    r = &r[eq + 2 + close + 1..];
                    r = r.strip_prefix(',').unwrap_or(r);
                }
                rest = r;
            }
            let mut fields = rest.trim_start_matches(' ').split(' ');
            let raw = fields.next().unwrap_or("");
            let value = match raw {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                _ => raw.parse().map_err(|_| format!("bad value: {line}"))?,
            };
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|b| types.get(*b).map(String::as_str) == Some("histogram"))
                .unwrap_or(name);
            if !types.contains_key(family) {
                return Err(format!("sample without TYPE: {line}"));
            }
            out.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        Ok(out)
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
            .value
    }

    #[test]
    fn metrics_parse_and_carry_the_view() {
        let text = render_metrics(&full_view());
        let s = parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(!text.contains("# EOF"), "0.0.4, not OpenMetrics");
        type Check<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);
        let checks: &[Check] = &[
            ("mtproxy_client_accepted_total", &[], 25.0),
            ("mtproxy_client_active", &[], 3.0),
            (
                "mtproxy_client_connections_total",
                &[("transport", "abridged")],
                7.0,
            ),
            (
                "mtproxy_client_connections_total",
                &[("transport", "intermediate")],
                8.0,
            ),
            (
                "mtproxy_client_connections_total",
                &[("transport", "padded")],
                9.0,
            ),
            ("mtproxy_handshakes_total", &[("result", "accepted")], 24.0),
            ("mtproxy_handshakes_total", &[("result", "rejected")], 2.0),
            ("mtproxy_handshakes_total", &[("result", "timeout")], 1.0),
            ("mtproxy_tls_handshakes_total", &[("result", "masked")], 5.0),
            (
                "mtproxy_tls_handshakes_total",
                &[("result", "replayed")],
                6.0,
            ),
            (
                "mtproxy_relayed_bytes_total",
                &[("direction", "up")],
                1000.0,
            ),
            (
                "mtproxy_relayed_bytes_total",
                &[("direction", "down")],
                5000.0,
            ),
            ("mtproxy_me_targets", &[], 3.0),
            ("mtproxy_me_ready_targets", &[], 2.0),
            ("mtproxy_me_ready_connections", &[], 8.0),
            ("mtproxy_me_connects_total", &[("result", "ok")], 9.0),
            ("mtproxy_me_connects_total", &[("result", "failed")], 19.0),
            ("mtproxy_me_queries_total", &[("result", "forwarded")], 24.0),
            ("mtproxy_me_queries_total", &[("result", "dropped")], 13.0),
            (
                "mtproxy_me_responses_total",
                &[("result", "forwarded")],
                23.0,
            ),
            ("mtproxy_me_responses_total", &[("result", "dropped")], 14.0),
            (
                "mtproxy_me_simple_acks_total",
                &[("result", "dropped")],
                16.0,
            ),
            ("mtproxy_me_sessions", &[], 2.0),
            ("mtproxy_secret_active_ips", &[("secret", "1")], 0.0),
            ("mtproxy_secret_active_ips", &[("secret", "2")], 1.0),
            ("mtproxy_secret_active_auth_keys", &[("secret", "2")], 1.0),
            ("mtproxy_secret_active_auth_keys", &[("secret", "3")], 0.0),
            ("mtproxy_config_reloads_total", &[("result", "ok")], 20.0),
            (
                "mtproxy_config_reloads_total",
                &[("result", "failed")],
                21.0,
            ),
            ("mtproxy_proxy_tag_set", &[], 1.0),
        ];
        for (name, labels, want) in checks {
            assert_eq!(value(&s, name, labels), *want, "{name}{labels:?}");
        }
        // Counters and the histogram are typed as such.
        assert!(text.contains("# TYPE mtproxy_me_queries_total counter\n"));
        assert!(text.contains("# TYPE mtproxy_me_targets gauge\n"));
        assert!(text.contains("# TYPE mtproxy_upstream_connect_duration_seconds histogram\n"));
        // Secret labels are indices only.
        for smp in s.iter().filter(|x| x.name.starts_with("mtproxy_secret_")) {
            let idx = &smp.labels[0].1;
            assert!(idx.parse::<usize>().is_ok_and(|i| (1..=3).contains(&i)));
        }
    }

    #[test]
    fn metrics_histogram_keeps_cumulative_counts() {
        let s = parse_metrics(&render_metrics(&full_view())).unwrap();
        let h = "mtproxy_upstream_connect_duration_seconds";
        let b = format!("{h}_bucket");
        for (le, want) in [
            ("0.001", 1.0),
            ("0.01", 4.0),
            ("0.1", 8.0),
            ("1", 9.0),
            ("+Inf", 10.0),
        ] {
            assert_eq!(value(&s, &b, &[("le", le)]), want, "le={le}");
        }
        assert_eq!(value(&s, &format!("{h}_sum"), &[]), 0.25);
        assert_eq!(value(&s, &format!("{h}_count"), &[]), 10.0);
        // An empty view still renders a valid page with every family.
        let empty = parse_metrics(&render_metrics(&StatsView::default())).unwrap();
        assert_eq!(value(&empty, &b, &[("le", "+Inf")]), 0.0);
        assert!(!empty.iter().any(|x| x.name.starts_with("mtproxy_secret_")));
    }

    // ---- HTTP pieces ---------------------------------------------------------------

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_795_722_105), "Thu, 26 Nov 2026 19:41:45 GMT");
    }

    #[test]
    fn bind_addr_is_ipv4_loopback() {
        assert_eq!(bind_addr(8888), "127.0.0.1:8888".parse().unwrap());
    }

    fn ok(buf: &[u8]) -> (Request, usize) {
        match parse_request(buf, MAX_REQUEST_HEAD) {
            Parse::Ok { req, consumed } => (req, consumed),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn bad(buf: &[u8]) -> bool {
        match parse_request(buf, MAX_REQUEST_HEAD) {
            Parse::Bad { v09 } => v09,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn parser_waits_for_the_whole_head() {
        let req = b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n";
        for n in 0..req.len() {
            assert_eq!(
                parse_request(&req[..n], MAX_REQUEST_HEAD),
                Parse::Incomplete,
                "prefix {n}"
            );
        }
        let mut two = req.to_vec();
        two.extend_from_slice(b"GET /x HTTP/1.0\n\n");
        let (r, used) = ok(&two);
        assert_eq!(used, req.len());
        assert_eq!(r.uri, b"/stats");
        assert!(r.keep_alive);
        assert_eq!(r.version, Version::V11);
        let (r, used) = ok(&two[used..]);
        assert_eq!(
            (r.uri.as_slice(), used, r.keep_alive),
            (&b"/x"[..], 17, false)
        );
    }

    #[test]
    fn parser_follows_c() {
        // HTTP/0.9: one line, no headers.
        let (r, used) = ok(b"GET /stats\r\nrest");
        assert_eq!((r.version, used), (Version::V09, 12));
        // Several spaces, bare LF, lowercase header names, an empty Content-Length of 0.
        let (r, _) = ok(b"GET  /stats   HTTP/1.0 \ncontent-length: 0\n\n");
        assert_eq!(r.content_length, Some(0));
        let (r, _) = ok(b"POST /stats HTTP/1.1\r\nContent-Length:\t12 \r\n\r\n");
        assert_eq!((r.method, r.content_length), (Method::Post, Some(12)));
        assert!(!bad(b"PUT /stats HTTP/1.1\r\n\r\n"));
        assert!(!bad(b"get /stats HTTP/1.1\r\n\r\n"));
        assert!(!bad(b"GET\t/stats HTTP/1.1\r\n\r\n"));
        assert!(!bad(b" GET /stats HTTP/1.1\r\n\r\n"));
        assert!(!bad(b"GET \r\n"));
        assert!(!bad(b"GET /stats HTTP/2.0\r\n\r\n"));
        assert!(!bad(b"GET /stats HTTP/1.1 x\r\n\r\n"));
        assert!(!bad(b"GET /stats HTTP/1.1\r\r\n\r\n"));
        assert!(bad(b"GET /stats\tx\r\n"), "C has taken it for 0.9 by then");
        assert!(!bad(b"GET /stats HTTP/1.1\r\nNo colon\r\n\r\n"));
        assert!(!bad(b"GET /stats HTTP/1.1\r\n folded: x\r\n\r\n"));
        assert!(!bad(
            b"GET /stats HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(!bad(b"GET /stats HTTP/1.1\r\nContent-Length: 12a\r\n\r\n"));
        assert!(!bad(b"GET /stats HTTP/1.1\r\nContent-Length:\r\n\r\n"));
        assert!(!bad(
            b"GET /stats HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"
        ));
        assert!(!bad(
            b"GET /stats HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n"
        ));
        assert!(!bad(b"GET /stats HTTP/1.1\r\nHost: a b\r\n\r\n"));
        // Other headers may hold anything.
        let (r, _) = ok(b"GET /stats HTTP/1.1\r\nUser-Agent: a b\t\xff\r\n\r\n");
        assert!(!r.keep_alive);
        // Too long without an end → 400, whatever the bytes.
        let mut big = b"GET /".to_vec();
        big.resize(MAX_REQUEST_HEAD, b'a');
        assert!(!bad(&big));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST_HEAD + 10, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        assert!(!bad(&big));
    }

    #[test]
    fn decisions_follow_c() {
        let req = |m, uri: &str, cl, ka| Request {
            method: m,
            uri: uri.as_bytes().to_vec(),
            version: Version::V11,
            keep_alive: ka,
            content_length: cl,
        };
        use Method::*;
        assert_eq!(
            decide(&req(Get, "/stats", None, true), true),
            (Reply::Stats, true)
        );
        assert_eq!(
            decide(&req(Get, "/metrics", None, false), true),
            (Reply::Metrics, false)
        );
        assert_eq!(
            decide(&req(Get, "/stats?x", None, true), true),
            (Reply::Error(404), true)
        );
        assert_eq!(
            decide(&req(Get, "/stats", None, true), false),
            (Reply::Error(404), true)
        );
        assert_eq!(
            decide(&req(Get, "/stats", Some(0), true), true),
            (Reply::Error(501), false)
        );
        assert_eq!(
            decide(&req(Get, "/stats", Some(3), true), true),
            (Reply::Error(413), false)
        );
        assert_eq!(
            decide(&req(Head, "/stats", None, true), true),
            (Reply::Error(501), false)
        );
        assert_eq!(
            decide(&req(Options, "/stats", None, true), true),
            (Reply::Error(501), false)
        );
        assert_eq!(
            decide(&req(Post, "/stats", None, true), true),
            (Reply::Error(411), true)
        );
        assert_eq!(
            decide(&req(Post, "/stats", Some(2), true), true),
            (Reply::Error(501), false)
        );
        // The peer check comes after the method check, as in C.
        assert_eq!(
            decide(&req(Head, "/stats", None, true), false),
            (Reply::Error(501), false)
        );
        assert!(is_c_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_c_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_c_loopback("127.0.0.2".parse().unwrap()));
        assert!(!is_c_loopback("::1".parse().unwrap()));
        assert!(!is_c_loopback("10.0.0.1".parse().unwrap()));
    }

    // ---- the server ----------------------------------------------------------------

    async fn start(allow_non_loopback: bool, limits: Limits) -> SocketAddr {
        let l = TcpListener::bind(bind_addr(0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let view: ViewFn = Arc::new(full_view);
        tokio::spawn(serve_with(l, view, allow_non_loopback, limits));
        addr
    }

    /// Writes `parts` one by one (Nagle off), half-closes, reads until the server closes.
    async fn exchange_on(mut s: TcpStream, parts: &[&[u8]]) -> Vec<u8> {
        s.set_nodelay(true).unwrap();
        for p in parts {
            if s.write_all(p).await.is_err() {
                break;
            }
        }
        let _ = s.shutdown().await;
        read_all(&mut s).await
    }

    async fn read_all(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 8192];
        let read = async {
            loop {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("server did not close the connection");
        out
    }

    async fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> Vec<u8> {
        exchange_on(TcpStream::connect(addr).await.unwrap(), parts).await
    }

    #[derive(Debug)]
    struct Resp {
        status: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
        fn code(&self) -> u16 {
            self.status.split(' ').nth(1).unwrap().parse().unwrap()
        }
    }

    /// Splits a byte stream into HTTP/1.1 responses (Content-Length framed).
    fn responses(mut raw: &[u8]) -> Vec<Resp> {
        let mut out = Vec::new();
        while !raw.is_empty() {
            let end = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
            let head = std::str::from_utf8(&raw[..end]).unwrap();
            let mut it = head.split("\r\n");
            let status = it.next().unwrap().to_string();
            let headers: Vec<(String, String)> = it
                .map(|l| {
                    let (k, v) = l.split_once(": ").unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "Content-Length")
                .unwrap()
                .1
                .parse()
                .unwrap();
            let body = raw[end + 4..end + 4 + len].to_vec();
            raw = &raw[end + 4 + len..];
            out.push(Resp {
                status,
                headers,
                body,
            });
        }
        out
    }

    fn one(raw: &[u8]) -> Resp {
        let mut r = responses(raw);
        assert_eq!(r.len(), 1, "{:?}", String::from_utf8_lossy(raw));
        r.pop().unwrap()
    }

    #[tokio::test]
    async fn serves_stats_like_c() {
        let addr = start(false, Limits::default()).await;
        let raw = exchange(addr, &[b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"]).await;
        let r = one(&raw);
        assert_eq!(r.status, "HTTP/1.1 200 OK");
        let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "Server",
                "Date",
                "Content-Type",
                "Connection",
                "Content-Length"
            ]
        );
        assert_eq!(r.header("Server"), Some("MTProxy/1.0"));
        assert_eq!(r.header("Content-Type"), Some("text/plain"));
        assert_eq!(r.header("Connection"), Some("close"));
        let date = r.header("Date").unwrap();
        assert!(date.len() == 29 && date.ends_with(" GMT"), "{date}");
        let body = String::from_utf8(r.body).unwrap();
        let keys: Vec<String> = lines(&body).into_iter().map(|l| l.0).collect();
        let (main, fork) = sample();
        let mut want: Vec<String> = main.into_iter().map(|l| l.0).collect();
        want.extend(fork.into_iter().skip(1).map(|l| l.0));
        assert_eq!(keys, want);
        // The server's own counters replace the view's: this connection is open, and
        // nothing was queried before.
        assert!(body.contains("\nhttp_connections\t1\n"));
        assert!(body.contains("\nhttp_queries\t0\n"));
        assert!(body.contains("\nhttp_bad_headers\t0\n"));
        // HTTP/1.0 and HTTP/0.9 requests.
        let r = one(&exchange(addr, &[b"GET /stats HTTP/1.0\r\n\r\n"]).await);
        assert_eq!(r.code(), 200);
        assert!(String::from_utf8(r.body)
            .unwrap()
            .contains("\nhttp_queries\t1\n"));
        let raw = exchange(addr, &[b"GET /stats\r\n"]).await;
        assert!(raw.starts_with(b"pid\t4242\n"), "0.9 gets the body alone");
    }

    #[tokio::test]
    async fn serves_metrics() {
        let addr = start(false, Limits::default()).await;
        let r = one(&exchange(addr, &[b"GET /metrics HTTP/1.1\r\n\r\n"]).await);
        assert_eq!(r.code(), 200);
        assert_eq!(r.header("Content-Type"), Some(METRICS_CONTENT_TYPE));
        let text = String::from_utf8(r.body).unwrap();
        let s = parse_metrics(&text).unwrap();
        assert_eq!(value(&s, "mtproxy_client_accepted_total", &[]), 25.0);
    }

    #[tokio::test]
    async fn errors_like_c() {
        let addr = start(false, Limits::default()).await;
        let cases: &[(&[u8], u16)] = &[
            (b"GET /stats?x HTTP/1.1\r\n\r\n", 404),
            (b"GET / HTTP/1.1\r\n\r\n", 404),
            (b"GET /statsx HTTP/1.1\r\n\r\n", 404),
            (b"GET /metrics/ HTTP/1.1\r\n\r\n", 404),
            (b"HEAD /stats HTTP/1.1\r\n\r\n", 501),
            (b"OPTIONS /stats HTTP/1.1\r\n\r\n", 501),
            (b"GET /stats HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 501),
            (
                b"GET /stats HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                413,
            ),
            (
                b"POST /stats HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                501,
            ),
            (b"POST /stats HTTP/1.1\r\n\r\n", 411),
            (b"GET /stats HTTP/9.9\r\n\r\n", 400),
            (b"GET /stats HTTP/1.1\r\nbroken header\r\n\r\n", 400),
            (b"GET \x00\x01\x02\xff\xfe garbage\r\n\r\n", 400),
        ];
        for (req, code) in cases {
            let r = one(&exchange(addr, &[req]).await);
            assert_eq!(r.code(), *code, "{:?}", String::from_utf8_lossy(req));
            assert_eq!(r.header("Content-Type"), Some("text/html"));
            assert_eq!(r.header("Connection"), Some("close"));
            let body = String::from_utf8(r.body).unwrap();
            let title = format!("{code} {}", status_text(*code));
            assert!(body.contains(&format!("<center><h1>{title}</h1></center>")));
            assert!(body.contains("<hr><center>MTProxy/1.0</center>"));
        }
        // Not HTTP at all (C would take it for TCP-RPC): closed without a word.
        for junk in [
            &b"PUT /stats HTTP/1.1\r\n\r\n"[..],
            b"\xee\xee\xee\xee\x00\x01",
            b"GE",
        ] {
            assert_eq!(exchange(addr, &[junk]).await, b"", "{junk:?}");
        }
        // The server lives on.
        assert_eq!(
            one(&exchange(addr, &[b"GET /stats HTTP/1.1\r\n\r\n"]).await).code(),
            200
        );
    }

    #[tokio::test]
    async fn request_split_across_writes() {
        let addr = start(false, Limits::default()).await;
        let parts: &[&[u8]] = &[
            b"G",
            b"ET",
            b" /st",
            b"ats HTTP/1.1\r",
            b"\nHost: x\r\n",
            b"\r",
            b"\n",
        ];
        let r = one(&exchange(addr, parts).await);
        assert_eq!(r.code(), 200);
        // One byte at a time.
        let req = b"GET /metrics HTTP/1.0\r\n\r\n";
        let bytes: Vec<&[u8]> = req.chunks(1).collect();
        assert_eq!(one(&exchange(addr, &bytes).await).code(), 200);
    }

    #[tokio::test]
    async fn keep_alive_and_pipelining() {
        let addr = start(false, Limits::default()).await;
        let raw = exchange(
            addr,
            &[b"GET /stats HTTP/1.1\r\nConnection: keep-alive\r\n\r\n\
               GET /nope HTTP/1.1\r\nconnection: KEEP-ALIVE\r\n\r\n\
               GET /metrics HTTP/1.1\r\n\r\n\
               GET /stats HTTP/1.1\r\n\r\n"],
        )
        .await;
        let r = responses(&raw);
        let got: Vec<(u16, Option<&str>)> = r
            .iter()
            .map(|x| (x.code(), x.header("Connection")))
            .collect();
        // The third request has no keep-alive: the connection ends after it.
        assert_eq!(
            got,
            [
                (200, Some("keep-alive")),
                (404, Some("keep-alive")),
                (200, Some("close"))
            ]
        );
        // Once in HTTP mode, an unknown method is a bad request.
        let raw = exchange(
            addr,
            &[b"GET /x HTTP/1.1\r\nConnection: keep-alive\r\n\r\nPUT /stats HTTP/1.1\r\n\r\n"],
        )
        .await;
        let codes: Vec<u16> = responses(&raw).iter().map(Resp::code).collect();
        assert_eq!(codes, [404, 400]);
    }

    #[tokio::test]
    async fn oversized_and_garbage_requests() {
        let addr = start(false, Limits::default()).await;
        let mut big = b"GET /".to_vec();
        big.resize(100_000, b'a');
        let r = one(&exchange(addr, &[&big]).await);
        assert_eq!(r.code(), 400);
        let mut hdrs = b"GET /stats HTTP/1.1\r\n".to_vec();
        for i in 0..2000 {
            hdrs.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        hdrs.extend_from_slice(b"\r\n");
        assert_eq!(one(&exchange(addr, &[&hdrs]).await).code(), 400);
        // Pseudo-random bytes after a valid prefix, deterministic.
        let mut x: u32 = 0x1234_5678;
        for len in [1usize, 7, 100, 5000, 40_000] {
            let mut junk = b"GET ".to_vec();
            junk.extend((0..len).map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }));
            let raw = exchange(addr, &[&junk]).await;
            // Nothing (EOF before the end of the head), an error page alone (the line
            // was taken for HTTP/0.9), or error responses.
            if raw.starts_with(b"<html>") {
                let page = String::from_utf8(raw).unwrap();
                assert!(page == error_page(400) || page == error_page(404), "{page}");
            } else if !raw.is_empty() {
                let r = responses(&raw);
                assert!(
                    r.iter().all(|x| x.code() == 400 || x.code() == 404),
                    "{r:?}"
                );
            }
        }
        let after = one(&exchange(addr, &[b"GET /stats HTTP/1.1\r\n\r\n"]).await);
        assert_eq!(after.code(), 200);
        assert!(String::from_utf8(after.body)
            .unwrap()
            .contains("\nhttp_bad_headers\t"));
    }

    async fn from_127_0_0_2(addr: SocketAddr) -> TcpStream {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        sock.connect(addr).await.unwrap()
    }

    #[tokio::test]
    async fn only_127_0_0_1_unless_allowed() {
        let addr = start(false, Limits::default()).await;
        let s = from_127_0_0_2(addr).await;
        let r = one(&exchange_on(s, &[b"GET /stats HTTP/1.1\r\n\r\n"]).await);
        assert_eq!(r.code(), 404);
        let s = from_127_0_0_2(addr).await;
        let r = one(&exchange_on(s, &[b"GET /metrics HTTP/1.1\r\n\r\n"]).await);
        assert_eq!(r.code(), 404);

        let open = start(true, Limits::default()).await;
        let s = from_127_0_0_2(open).await;
        let r = one(&exchange_on(s, &[b"GET /stats HTTP/1.1\r\n\r\n"]).await);
        assert_eq!(r.code(), 200);
    }

    #[tokio::test]
    async fn slow_requests_time_out() {
        let limits = Limits {
            read_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let addr = start(false, limits).await;
        // Nothing sent: the server closes by itself (read_all would fail the test otherwise).
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_all(&mut s).await, b"");
        // Half a request, then silence.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /stats HTTP/1.1\r\n").await.unwrap();
        assert_eq!(read_all(&mut s).await, b"");
    }

    #[tokio::test]
    async fn connection_cap() {
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let addr = start(false, limits).await;
        // Hold the only slot with a keep-alive connection that has been answered.
        let mut held = TcpStream::connect(addr).await.unwrap();
        held.write_all(b"GET /x HTTP/1.1\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while !got.windows(7).any(|w| w == b"</html>") {
            let mut chunk = [0u8; 1024];
            let n = held.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        // A second connection is closed at once.
        assert_eq!(exchange(addr, &[b"GET /stats HTTP/1.1\r\n\r\n"]).await, b"");
        // Releasing the slot lets the next one in.
        drop(held);
        let mut answered = false;
        for _ in 0..100 {
            let raw = exchange(addr, &[b"GET /stats HTTP/1.1\r\n\r\n"]).await;
            if !raw.is_empty() {
                assert_eq!(one(&raw).code(), 200);
                answered = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(answered);
    }
}
