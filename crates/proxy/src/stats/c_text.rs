//! C's `/stats` page: `key<TAB>value` lines, every key of `shared/spec/c-stats-sample.txt`
//! in C's order, then the fork's per-secret lines (spec backend-ops §5.3–5.5).
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
//! | `inbound_connections_accepted` | 2 × (`accepted` + `http_accepted`) + `accept_connection_limit_failed` + `accept_rate_limit_failed`: C counts a connection at accept(2) and again when it sets it up (net-connections.c), so a served one counts twice |
//! | `listening_connections` | `listening_sockets` |
//! | `unused_connections_closed`, `free_targets`, `free_later_size`, `free_later_total`, `max_connection` (C's highest fd) | 0 |
//! | `total_ready_targets`, `total_allocated_targets`, `total_declared_targets` | `me_ready_targets`, `me_targets`, `me_declared_targets` (the `-M` master: Σ over the workers, as C) |
//! | `total_inactive_targets` | `me_targets − me_declared_targets`, at least 0 |
//! | `ready_targets`, `allocated_targets`, `active_targets`, `inactive_targets` | the same of this process's pool; the `-M` master: one worker's ([`PoolView`](super::view::PoolView)), as C's master shows its own pool |
//! | `max_connections`, `max_special_connections`, `max_accept_rate` | the same-named fields (`-c`, `-C`, `--max-accept-rate`) |
//! | `total_max_special_connections` | `max_special_connections` × `workers` (Σ over the workers, as C; × 1 without `-M`) |
//! | `active_special_connections`, `total_special_connections` | `active` (client connections now) |
//! | `cur_accept_rate_remaining` | `max_accept_rate` (we do not rate-limit accepts: the bucket is always full) |
//! | `conn_generation` | Σ `accepted` + `http_accepted` + `outbound_connections_created` (connections ever made) |
//! | `tcp_readv_bytes`, `tcp_writev_bytes` | Σ `bytes_up` + `bytes_down`: the bytes relayed for clients in every mode (read resp. written once per direction), counted on the client side without the 64-byte header and TLS record headers; C also counts its upstream framing (ME RPC headers, padding, handshakes) and, with `-M`, only the master's own sockets |
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
//! | `stats_generate_time` | seconds taken to build the view ([`serve`](super::serve) measures it) |
//! | `vmsize_bytes`, `vmrss_bytes`, `vmdata_bytes` | the fields ([`StatsView::fill_process`]: /proc/self/statm, as C) |
//! | `config_filename`, `config_loaded_at`, `config_size`, `config_md5`, `config_auth_clusters` | the fields (direct mode: empty and 0) |
//! | `workers`, `window_clamp` | the fields |
//! | `queries_get`, `qps_get`, `expired_forwarded_queries`, `active_rpcs*`, `rpc_dropped_*`, `mtproto_proxy_errors`, `pending_http_queries`, `total_active_network_events` | 0 (always 0 in C too, or no equivalent) |
//! | `tot_forwarded_queries`, `dropped_queries`, `tot_forwarded_responses`, `dropped_responses`, `tot_forwarded_simple_acks`, `dropped_simple_acks`, `ext_connections`, `ext_connections_created` | the same-named counters |
//! | `connections_failed_flood` | `failed_flood` |
//! | `http_connections`, `http_queries`, `http_bad_headers` | this server's own counters ([`serve`](super::serve) fills them) |
//! | `http_qps` | `http_queries / uptime` |
//! | `proxy_mode` | 2 (always, as C) |
//! | `proxy_tag_set` | 1 if `-P` was given |
//! | `version` | `version` (our version string, not C's) |
//! | `secret_<i>_active_connections`, `secret_<i>_active_auth_keys` (fork) | `secrets[i-1]`: distinct client IPs, distinct non-zero auth_key_ids |
//!
//! Ratios use C's `safe_div`: 0 when the uptime is 0.

use super::view::{PoolView, StatsView};
use std::fmt::{Display, Write as _};

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
    /// This process's pool (the `-M` master: one worker's).
    pool: PoolView,
    tcp_bytes: u64,
    /// C's `inbound_connections_accepted`: C counts a connection at accept(2) and again
    /// when it is set up, so a served connection counts twice, a refused one once.
    inbound_accepted_c: u64,
    cpu_user_pct: f64,
    cpu_sys_pct: f64,
}

impl Derived {
    fn of(v: &StatsView) -> Derived {
        let uptime = v.uptime() as f64;
        let pool = v.process_pool.unwrap_or(PoolView {
            targets: v.me_targets,
            declared_targets: v.me_declared_targets,
            ready_targets: v.me_ready_targets,
        });
        Derived {
            uptime,
            all_connections: v.active + v.outbound_connections + v.http_connections,
            inbound: v.active + v.http_connections,
            encrypted: v.active + v.outbound_connections,
            inactive_targets: v.me_targets.saturating_sub(v.me_declared_targets),
            pool,
            tcp_bytes: v.bytes_up.saturating_add(v.bytes_down),
            inbound_accepted_c: 2 * (v.accepted + v.http_accepted)
                + v.accept_connection_limit_failed
                + v.accept_rate_limit_failed,
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
    b.kv("inbound_connections_accepted", d.inbound_accepted_c);
    b.kv("listening_connections", v.listening_sockets);
    b.kv("unused_connections_closed", 0);
    b.kv("ready_targets", d.pool.ready_targets);
    b.kv("allocated_targets", d.pool.targets);
    b.kv("active_targets", d.pool.declared_targets);
    b.kv(
        "inactive_targets",
        d.pool.targets.saturating_sub(d.pool.declared_targets),
    );
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
    // Σ over the workers in C (each has the `-C` cap).
    b.kv(
        "total_max_special_connections",
        v.max_special_connections * u64::from(v.workers.max(1)),
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::test_support::*;
    use std::collections::HashMap;

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
            // C counts a served connection twice (accept and set-up), a refused one once:
            // 2 × (25 clients + 4 stats) + 12 over the cap + 13 over the rate.
            ("inbound_connections_accepted", "83"),
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

    /// The `-M` master: the `total_*` target keys are the workers' sums, the section's
    /// target keys one worker's pool (as C's master shows its own), the `-C` cap summed.
    #[test]
    fn master_view_sums_totals_and_shows_one_pool() {
        let v = StatsView {
            workers: 2,
            me_targets: 4,
            me_declared_targets: 4,
            me_ready_targets: 3,
            process_pool: Some(PoolView {
                targets: 2,
                declared_targets: 2,
                ready_targets: 1,
            }),
            ..full_view()
        };
        let map: HashMap<String, String> = lines(&render_stats(&v)).into_iter().collect();
        for (k, want) in [
            ("total_ready_targets", "3"),
            ("total_allocated_targets", "4"),
            ("total_declared_targets", "4"),
            ("ready_targets", "1"),
            ("allocated_targets", "2"),
            ("active_targets", "2"),
            ("inactive_targets", "0"),
            ("max_special_connections", "9000"),
            ("total_max_special_connections", "18000"),
        ] {
            assert_eq!(map.get(k).map(String::as_str), Some(want), "{k}");
        }
    }
}
