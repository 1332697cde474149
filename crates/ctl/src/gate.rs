//! The health gate a new proxy process must pass, and the watch over it during the rollback
//! window.
//!
//! Gate, in order, all within one deadline counted from the exec:
//! 1. `process`: the process is running (checked throughout: an exit fails the gate at once);
//! 2. `stats`: `/stats` answers (skipped when the command line has no `--http-stats -p`);
//! 3. `client`: a real client session through every client port: obfuscated2 (or fake-TLS)
//!    handshake and a `req_pq_multi` → `resPQ` round trip.
//!
//! Window: until it ends, every `poll` the process must be alive (`crash`) and `/stats` must
//! answer (`stats`, after 3 misses in a row); every `probe_every` a client session must
//! succeed (`client`, after 2 failures in a row); and the error counters of `/stats` must
//! not grow faster than the guard allows (`errors`).
//!
//! What it is not: monitoring. It watches one process for one window and says which check
//! failed first.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cmdline::ProxyArgs;
use crate::probe::{self, client_opts, Target};
use crate::procs::{ms, Proc};
use crate::stats;
use mtproxy_client::Tag;

/// What the gate checks and how long it may take.
#[derive(Clone, Debug)]
pub struct GateSpec {
    pub stats: Option<SocketAddr>,
    pub targets: Vec<Target>,
    pub timeout: Duration,
    /// Echo round trips after `resPQ` (0 against Telegram; the fakes echo).
    pub round_trips: usize,
}

impl GateSpec {
    /// From a proxy command line: every `-H` port with the first secret (fake TLS when `-D`),
    /// DC 2, and `/stats` when enabled.
    pub fn from_args(a: &ProxyArgs, timeout: Duration) -> GateSpec {
        let secret = a.first_secret();
        let opts = client_opts(secret, &a.domains, Tag::Intermediate, 2);
        GateSpec {
            stats: a.stats_addr(),
            targets: a
                .client_addrs()
                .into_iter()
                .map(|addr| Target {
                    addr,
                    opts: opts.clone(),
                })
                .collect(),
            timeout,
            round_trips: 0,
        }
    }
}

/// One check of a gate.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// From the exec of the process (or from the start of the gate when not known).
    pub ms: Option<f64>,
    pub detail: String,
}

/// The outcome of a gate.
#[derive(Clone, Debug, Serialize)]
pub struct GateResult {
    pub ok: bool,
    /// The first check that failed: `process`, `stats` or `client`.
    pub failed_gate: Option<&'static str>,
    pub checks: Vec<Check>,
    /// Exec until `/stats` answered.
    pub stats_ms: Option<f64>,
    /// Exec until the first client round trip succeeded.
    pub first_round_trip_ms: Option<f64>,
}

impl GateResult {
    /// A gate that failed `name` before anything could be checked (the unit did not start).
    pub fn failed(name: &'static str, detail: String) -> GateResult {
        GateResult {
            ok: true,
            failed_gate: None,
            checks: Vec::new(),
            stats_ms: None,
            first_round_trip_ms: None,
        }
        .fail(name, None, detail)
    }

    fn fail(mut self, name: &'static str, ms: Option<f64>, detail: String) -> GateResult {
        self.ok = false;
        self.failed_gate = Some(name);
        self.checks.push(Check {
            name,
            ok: false,
            ms,
            detail,
        });
        self
    }

    fn pass(&mut self, name: &'static str, ms: Option<f64>, detail: String) {
        self.checks.push(Check {
            name,
            ok: true,
            ms,
            detail,
        });
    }

    /// One line for logs.
    pub fn describe(&self) -> String {
        self.checks
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    c.name,
                    if c.ok { "ok" } else { "FAILED" },
                    match (c.ms, c.detail.is_empty()) {
                        (Some(m), true) => format!(" ({m:.1} ms)"),
                        (Some(m), false) => format!(" ({m:.1} ms: {})", c.detail),
                        (None, false) => format!(" ({})", c.detail),
                        (None, true) => String::new(),
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn exited(p: &mut Proc) -> String {
    match p.exit_code() {
        Some(c) => format!("the process exited with code {c}"),
        None => "the process is gone".to_string(),
    }
}

/// Runs the gate on `p`, started at `t0`.
pub async fn run(p: &mut Proc, t0: Instant, spec: &GateSpec) -> GateResult {
    let deadline = t0 + spec.timeout;
    let mut r = GateResult {
        ok: true,
        failed_gate: None,
        checks: Vec::new(),
        stats_ms: None,
        first_round_trip_ms: None,
    };
    if !p.alive() {
        return r.fail("process", None, exited(p));
    }
    if let Some(addr) = spec.stats {
        let mut last;
        loop {
            if !p.alive() {
                return r.fail("process", Some(ms(t0.elapsed())), exited(p));
            }
            match stats::fetch(addr, Duration::from_millis(500)).await {
                Ok(_) => {
                    let m = ms(t0.elapsed());
                    r.stats_ms = Some(m);
                    r.pass("stats", Some(m), format!("{addr}"));
                    break;
                }
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                return r.fail(
                    "stats",
                    Some(ms(t0.elapsed())),
                    format!("no /stats answer within {:?}: {last}", spec.timeout),
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    } else {
        r.pass("stats", None, "skipped: no --http-stats/-p".into());
    }
    for t in &spec.targets {
        let res = tokio::select! {
            res = probe::first_success(
                t,
                t0,
                deadline,
                Duration::from_millis(10),
                Duration::from_secs(2).min(spec.timeout),
                spec.round_trips,
            ) => res,
            code = wait_exit(p) => Err(code),
        };
        match res {
            Ok(m) => {
                if r.first_round_trip_ms.is_none() {
                    r.first_round_trip_ms = Some(m);
                }
                r.pass(
                    "client",
                    Some(m),
                    format!("{} via {}", t.transport(), t.addr),
                );
            }
            Err(e) if !p.alive() => {
                return r.fail("process", Some(ms(t0.elapsed())), e);
            }
            Err(e) => {
                return r.fail(
                    "client",
                    Some(ms(t0.elapsed())),
                    format!(
                        "no handshake + round trip via {} within {:?}: {e}",
                        t.addr, spec.timeout
                    ),
                )
            }
        }
    }
    if !p.alive() {
        return r.fail("process", Some(ms(t0.elapsed())), exited(p));
    }
    r.pass("process", Some(ms(t0.elapsed())), format!("pid {}", p.pid));
    r
}

/// Resolves once `p` is gone, with a description.
async fn wait_exit(p: &mut Proc) -> String {
    while p.alive() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    exited(p)
}

/// Limits of the rollback window.
#[derive(Clone, Debug, Serialize)]
pub struct WindowSpec {
    pub duration_s: f64,
    pub poll_ms: u64,
    pub probe_every_ms: u64,
    /// `/stats` counters summed as errors.
    pub error_keys: Vec<String>,
    /// A breach needs at least this many new errors …
    pub max_errors: f64,
    /// … and more than this many per forwarded query (`tot_forwarded_queries`).
    pub max_error_rate: f64,
}

/// What the window saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WindowReport {
    pub duration_ms: f64,
    pub polls: u64,
    pub stats_failures: u64,
    pub probes_ok: u64,
    pub probes_failed: u64,
    pub errors_delta: f64,
    pub queries_delta: f64,
    /// The check that ended the window early: `crash`, `stats`, `client` or `errors`.
    pub breach: Option<&'static str>,
    pub breach_detail: Option<String>,
}

/// Watches `p` for the window; returns early on the first breach.
pub async fn watch(p: &mut Proc, gate: &GateSpec, w: &WindowSpec) -> WindowReport {
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(w.duration_s);
    let mut rep = WindowReport::default();
    let first = match gate.stats {
        Some(a) => stats::fetch(a, Duration::from_secs(1)).await.ok(),
        None => None,
    };
    let mut last_probe = Instant::now();
    let mut stats_misses = 0;
    let mut probe_misses = 0;
    let breach = |rep: &mut WindowReport, name: &'static str, d: String| {
        rep.breach = Some(name);
        rep.breach_detail = Some(d);
    };
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(w.poll_ms).min(end - Instant::now())).await;
        rep.polls += 1;
        if !p.alive() {
            breach(&mut rep, "crash", exited(p));
            break;
        }
        if let Some(a) = gate.stats {
            match stats::fetch(a, Duration::from_secs(1)).await {
                Ok(s) => {
                    stats_misses = 0;
                    if let Some(f) = &first {
                        rep.errors_delta =
                            (stats::sum(&s, &w.error_keys) - stats::sum(f, &w.error_keys)).max(0.0);
                        rep.queries_delta = (stats::num(&s, "tot_forwarded_queries")
                            .unwrap_or(0.0)
                            - stats::num(f, "tot_forwarded_queries").unwrap_or(0.0))
                        .max(0.0);
                        let rate = rep.errors_delta / rep.queries_delta.max(1.0);
                        if rep.errors_delta >= w.max_errors && rate > w.max_error_rate {
                            let d = format!(
                                "{} new errors ({}) for {} forwarded queries: rate {rate:.3} > {}",
                                rep.errors_delta,
                                w.error_keys.join("+"),
                                rep.queries_delta,
                                w.max_error_rate
                            );
                            breach(&mut rep, "errors", d);
                            break;
                        }
                    }
                }
                Err(e) => {
                    rep.stats_failures += 1;
                    stats_misses += 1;
                    if stats_misses >= 3 {
                        breach(&mut rep, "stats", e);
                        break;
                    }
                }
            }
        }
        if last_probe.elapsed() >= Duration::from_millis(w.probe_every_ms) {
            last_probe = Instant::now();
            let mut failed = None;
            for t in &gate.targets {
                if let Err(e) =
                    probe::session(t, gate.round_trips, 64, Duration::from_secs(3)).await
                {
                    failed = Some(e.to_string());
                    break;
                }
            }
            match failed {
                None => {
                    rep.probes_ok += 1;
                    probe_misses = 0;
                }
                Some(e) => {
                    rep.probes_failed += 1;
                    probe_misses += 1;
                    if !p.alive() {
                        breach(&mut rep, "crash", exited(p));
                        break;
                    }
                    if probe_misses >= 2 {
                        breach(&mut rep, "client", e);
                        break;
                    }
                }
            }
        }
    }
    rep.duration_ms = ms(t0.elapsed());
    rep
}
