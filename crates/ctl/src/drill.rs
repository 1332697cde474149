//! `drill`: the cutover procedure rehearsed on loopback, with client traffic running through
//! every step, under `--supervise` (the same code `cutover` and `rollback` run).
//!
//! Steps, each a real cutover (switch, gate, rollback window of `steady` seconds):
//! 1. `start`: the reference, cold (no traffic yet);
//! 2. `baseline`: reference → reference, the numbers the others are held to;
//! 3. `cutover`: reference → candidate;
//! 4. `upgrade`: candidate → candidate (two builds of ours hand over with no gap);
//! 5. `rollback`: candidate → reference.
//!
//! Per step: start-up latency of the new process, shutdown latency of the old one, the
//! client sessions that arrived while the step ran, refused (never served) or broken (cut),
//! however long after the step they ended; the outage (from the first unserved arrival to
//! the service being back: `outage`) with what explains it (when the failures arrived, what
//! failed, how long they waited, the hand-over's timings, the new process's
//! `dropped_queries`); and a `/stats` sample.
//!
//! Traffic arrives at a steady rate (`traffic`: `concurrency` streams, a session every
//! [`ARRIVAL_PERIOD`] each), so a session left without an answer holds nothing back.
//!
//! Guards: start-up and shutdown of `cutover` and `rollback` ≤ `startup_factor` × baseline +
//! `startup_slack_ms`. Traffic budget: a step that overlaps the processes (both sides share
//! the ports) must refuse and break nothing; a stop-start step may break at most the sessions
//! in flight (about one per stream) and may refuse clients only for
//! `startup_factor` × (baseline start-up + shutdown) + `startup_slack_ms` (its outage). Every
//! step's gate must pass.
//!
//! What it is not: production. It starts its own fakes and its own supervised proxies in a
//! temporary state directory.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cutover::{self, Backend, Params};
use crate::fakes::{self, Fakes, Mode, WorkDir};
use crate::gate::WindowSpec;
use crate::report::{exit_code, free_port, verdict_line, Meta, Timeline};
use crate::stats::{self, Stats};
use crate::supervise::Supervisor;
use crate::traffic::{Recorded, Seen, Traffic};

/// How often each traffic stream starts a session.
pub const ARRIVAL_PERIOD: Duration = Duration::from_millis(25);

pub struct Opts {
    pub reference: PathBuf,
    pub candidate: PathBuf,
    pub mode: Mode,
    pub concurrency: usize,
    pub round_trips: usize,
    pub steady: Duration,
    pub gate_timeout: Duration,
    pub settle: Duration,
    pub startup_factor: f64,
    pub startup_slack_ms: f64,
    pub extra_args: Vec<String>,
    pub work_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrafficBudget {
    /// Steps that overlap the old and the new process.
    pub overlap_max_refused: u64,
    pub overlap_max_broken: u64,
    /// Stop-start steps: sessions in flight when the old process stops (one per loop).
    pub gap_max_broken: u64,
    /// Stop-start steps: `startup_factor` × (baseline start-up + shutdown) + slack.
    pub gap_max_outage_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Thresholds {
    pub startup_factor: f64,
    pub startup_slack_ms: f64,
    /// The computed limits (from the baseline step).
    pub max_startup_latency_ms: Option<f64>,
    pub max_shutdown_latency_ms: Option<f64>,
    pub traffic: TrafficBudget,
    pub gate_timeout_s: f64,
    pub window_s: f64,
    pub settle_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub binary: PathBuf,
    /// `cold`, `overlap` or `stop-start`.
    pub handover: Option<&'static str>,
    pub startup_latency_ms: Option<f64>,
    pub shutdown_latency_ms: Option<f64>,
    pub refused_connections: u64,
    pub broken_sessions: u64,
    /// The sessions that arrived while the step ran.
    pub traffic: Seen,
    /// What explains the outage, when there was one.
    pub outage_explained: Option<String>,
    pub gate_ok: bool,
    pub failed_gate: Option<&'static str>,
    pub result: &'static str,
    pub pid: Option<u32>,
    pub duration_ms: f64,
    pub stats_sample: Stats,
}

#[derive(Clone, Debug, Serialize)]
pub struct Guard {
    pub step: &'static str,
    pub name: &'static str,
    pub value: f64,
    pub limit: f64,
    pub ok: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub meta: Meta,
    pub command: &'static str,
    pub mode: &'static str,
    pub reference: PathBuf,
    pub candidate: PathBuf,
    pub traffic: TrafficSpec,
    pub thresholds: Thresholds,
    pub steps: Vec<Step>,
    pub guards: Vec<Guard>,
    pub breaches: Vec<String>,
    pub errors: Vec<String>,
    pub final_shutdown_ms: Option<f64>,
    pub ok: bool,
    pub log: Vec<crate::report::LogEntry>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrafficSpec {
    pub concurrency: usize,
    pub round_trips: usize,
    pub transports: Vec<&'static str>,
}

impl Report {
    pub fn exit_code(&self) -> i32 {
        exit_code(&self.errors, &self.breaches)
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "drill ({} mode): reference {}\n                 candidate {}\n\n",
            self.mode,
            self.reference.display(),
            self.candidate.display()
        );
        s.push_str(&format!(
            "  {:<9} {:<10} {:>10} {:>10} {:>8} {:>7} {:>7} {:>10}  {}\n",
            "step",
            "handover",
            "start ms",
            "stop ms",
            "ok",
            "refused",
            "broken",
            "outage ms",
            "binary"
        ));
        let o = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.1}"));
        for st in &self.steps {
            s.push_str(&format!(
                "  {:<9} {:<10} {:>10} {:>10} {:>8} {:>7} {:>7} {:>10.1}  {}{}\n",
                st.name,
                st.handover.unwrap_or("-"),
                o(st.startup_latency_ms),
                o(st.shutdown_latency_ms),
                st.traffic.ok,
                st.refused_connections,
                st.broken_sessions,
                st.traffic.outage_ms,
                st.binary.display(),
                st.failed_gate
                    .map_or_else(String::new, |g| format!("  (gate {g} FAILED)"))
            ));
        }
        let outages: Vec<String> = self
            .steps
            .iter()
            .filter_map(|st| {
                st.outage_explained
                    .as_ref()
                    .map(|e| format!("    {}: {e}\n", st.name))
            })
            .collect();
        if !outages.is_empty() {
            s.push_str("\n  outages:\n");
            s.push_str(&outages.concat());
        }
        s.push_str("\n  guards:\n");
        for g in &self.guards {
            s.push_str(&format!(
                "    {:<4} {:<9} {:<20} {:.1} <= {:.1}\n",
                if g.ok { "ok" } else { "FAIL" },
                g.step,
                g.name,
                g.value,
                g.limit
            ));
        }
        for e in &self.errors {
            s.push_str(&format!("\n  error: {e}\n"));
        }
        s.push_str(&verdict_line(
            &self.errors,
            &self.breaches,
            "drill passed",
            "BREACH",
        ));
        s
    }
}

pub async fn run(o: &Opts) -> Report {
    let mut tl = Timeline::new();
    let mut report = Report {
        meta: Meta::now(),
        command: "drill",
        mode: o.mode.name(),
        reference: o.reference.clone(),
        candidate: o.candidate.clone(),
        traffic: TrafficSpec {
            concurrency: o.concurrency,
            round_trips: o.round_trips,
            transports: fakes::targets(o.mode, 1)
                .iter()
                .map(|t| t.transport())
                .collect(),
        },
        thresholds: Thresholds {
            startup_factor: o.startup_factor,
            startup_slack_ms: o.startup_slack_ms,
            max_startup_latency_ms: None,
            max_shutdown_latency_ms: None,
            traffic: TrafficBudget {
                overlap_max_refused: 0,
                overlap_max_broken: 0,
                gap_max_broken: o.concurrency as u64,
                gap_max_outage_ms: None,
            },
            gate_timeout_s: o.gate_timeout.as_secs_f64(),
            window_s: o.steady.as_secs_f64(),
            settle_ms: o.settle.as_secs_f64() * 1000.0,
        },
        steps: Vec::new(),
        guards: Vec::new(),
        breaches: Vec::new(),
        errors: Vec::new(),
        final_shutdown_ms: None,
        ok: false,
        log: Vec::new(),
    };
    let dir = match WorkDir::new(o.work_dir.as_deref(), "mtproxy-drill") {
        Ok(d) => d,
        Err(e) => {
            report.errors.push(format!("work directory: {e}"));
            return report;
        }
    };
    let fakes = match Fakes::start(&dir.path).await {
        Ok(f) => f,
        Err(e) => {
            report.errors.push(format!("fakes: {e}"));
            return report;
        }
    };
    let mut sup = match Supervisor::open(&dir.path.join("state"), None) {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(format!("state directory: {e}"));
            return report;
        }
    };
    sup.settle = o.settle;
    sup.detach = false;
    let (sp, cp) = (free_port(), free_port());
    let args = fakes.command_line(o.mode, sp, cp, &o.extra_args);
    let stats_addr = ([127, 0, 0, 1], sp).into();
    let mut backend = Backend::Supervise(Box::new(sup));
    let params = |window: f64, args: Option<Vec<String>>| Params {
        gate_timeout: o.gate_timeout,
        window: WindowSpec {
            duration_s: window,
            poll_ms: 250,
            probe_every_ms: 500,
            error_keys: crate::DEFAULT_ERROR_KEYS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_errors: 10.0,
            max_error_rate: 0.05,
        },
        args,
    };

    let mut traffic: Option<Traffic> = None;
    let mut windows: Vec<(Instant, Instant)> = Vec::new();
    let plan: [(&'static str, &PathBuf); 5] = [
        ("start", &o.reference),
        ("baseline", &o.reference),
        ("cutover", &o.candidate),
        ("upgrade", &o.candidate),
        ("rollback", &o.reference),
    ];
    for (i, (name, bin)) in plan.iter().enumerate() {
        tl.log("drill", true, format!("step {name}: {}", bin.display()));
        let t0 = Instant::now();
        let p = if i == 0 {
            params(0.0, Some(args.clone()))
        } else {
            params(o.steady.as_secs_f64(), None)
        };
        let r = if *name == "rollback" && backend.previous_target().as_ref() == Some(*bin) {
            cutover::rollback(&mut backend, &p, &mut tl).await
        } else {
            cutover::cutover(&mut backend, bin, &p, &mut tl).await
        };
        if i == 0 && r.result == "ok" {
            traffic = Some(Traffic::start(
                fakes::targets(o.mode, cp),
                o.concurrency,
                o.round_trips,
                ARRIVAL_PERIOD,
            ));
            tokio::time::sleep(o.steady).await;
        }
        let t1 = Instant::now();
        windows.push((t0, t1));
        let sample = stats::fetch(stats_addr, Duration::from_secs(2))
            .await
            .map(|s| stats::sample(&s))
            .unwrap_or_default();
        let sw = r.switch.as_ref();
        report.steps.push(Step {
            name,
            binary: (*bin).clone(),
            handover: r.handover,
            startup_latency_ms: r.startup_latency_ms,
            shutdown_latency_ms: r.shutdown_latency_ms,
            // Filled in once every session that arrived has ended (`judge_traffic`).
            refused_connections: 0,
            broken_sessions: 0,
            traffic: Seen::default(),
            outage_explained: None,
            gate_ok: sw.is_some_and(|s| s.gate.ok),
            failed_gate: r.failed_gate,
            result: r.result,
            pid: sw.map(|s| s.pid),
            duration_ms: crate::procs::ms(t1 - t0),
            stats_sample: sample,
        });
        if r.result != "ok" {
            let detail = r
                .switch
                .as_ref()
                .and_then(|s| s.gate.checks.iter().find(|c| !c.ok))
                .map(|c| c.detail.clone())
                .or_else(|| r.window.as_ref().and_then(|w| w.breach_detail.clone()))
                .or_else(|| r.error.clone())
                .unwrap_or_default();
            report.errors.push(format!(
                "step {name}: {}{}: {detail}",
                r.result,
                r.failed_gate
                    .map_or_else(String::new, |g| format!(" (gate {g} failed)"))
            ));
            break;
        }
    }
    if let Some(t) = traffic.take() {
        judge_traffic(&mut report.steps, &windows, &t.stop().await);
    }
    if let Backend::Supervise(sup) = &mut backend {
        if let Ok(Some(s)) = sup.stop(&mut tl).await {
            report.final_shutdown_ms = Some(s.latency_ms);
        }
    }
    evaluate(&mut report, o);
    report.ok = report.errors.is_empty() && report.breaches.is_empty();
    if !report.ok {
        let mut d = dir;
        d.keep = true;
        tl.log(
            "drill",
            false,
            format!("work directory kept: {}", d.path.display()),
        );
    }
    report.log = tl.entries;
    report
}

/// Each step's traffic: the sessions that arrived in its window, and what explains its
/// outage.
fn judge_traffic(steps: &mut [Step], windows: &[(Instant, Instant)], rec: &Recorded) {
    for (st, (t0, t1)) in steps.iter_mut().zip(windows) {
        let seen = rec.seen(*t0, *t1);
        st.refused_connections = seen.refused;
        st.broken_sessions = seen.broken;
        st.outage_explained = seen.outage.as_ref().map(|o| {
            let mut text = o.explain();
            text.push_str(&context(st));
            text
        });
        st.traffic = seen;
    }
}

/// The hand-over's part in an outage: its timings, and packets the new process dropped.
fn context(st: &Step) -> String {
    let o = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.1}"));
    let mut s = format!(
        ". Hand-over {}: the old process was gone {} ms after SIGTERM, the new one served {} ms after it was started",
        st.handover.unwrap_or("-"),
        o(st.shutdown_latency_ms),
        o(st.startup_latency_ms)
    );
    let dropped = stats::num(&st.stats_sample, "dropped_queries").unwrap_or(0.0);
    if dropped > 0.0 {
        s.push_str(&format!(
            ". The new process counts dropped_queries {dropped}: packets that came before any of its middle-end connections was ready were dropped, and those clients got no answer (C drops them at once; ours waits up to 3 s for a connection)"
        ));
    }
    s.push('.');
    s
}

fn evaluate(r: &mut Report, o: &Opts) {
    let base = r.steps.iter().find(|s| s.name == "baseline").cloned();
    let Some(base) = base else { return };
    let f = o.startup_factor;
    let slack = o.startup_slack_ms;
    let max_start = base.startup_latency_ms.map(|b| f * b + slack);
    let max_stop = base.shutdown_latency_ms.map(|b| f * b + slack);
    let gap_outage = match (base.startup_latency_ms, base.shutdown_latency_ms) {
        (Some(a), Some(b)) => Some(f * (a + b) + slack),
        _ => None,
    };
    r.thresholds.max_startup_latency_ms = max_start;
    r.thresholds.max_shutdown_latency_ms = max_stop;
    r.thresholds.traffic.gap_max_outage_ms = gap_outage;
    let mut guards = Vec::new();
    for st in r.steps.iter().filter(|s| s.name != "start") {
        if matches!(st.name, "cutover" | "rollback") {
            if let (Some(v), Some(l)) = (st.startup_latency_ms, max_start) {
                guards.push(Guard {
                    step: st.name,
                    name: "startup_latency_ms",
                    value: v,
                    limit: l,
                    ok: v <= l,
                });
            }
            if let (Some(v), Some(l)) = (st.shutdown_latency_ms, max_stop) {
                guards.push(Guard {
                    step: st.name,
                    name: "shutdown_latency_ms",
                    value: v,
                    limit: l,
                    ok: v <= l,
                });
            }
        }
        let b = &r.thresholds.traffic;
        if st.handover == Some("overlap") {
            guards.push(Guard {
                step: st.name,
                name: "refused_connections",
                value: st.refused_connections as f64,
                limit: b.overlap_max_refused as f64,
                ok: st.refused_connections <= b.overlap_max_refused,
            });
            guards.push(Guard {
                step: st.name,
                name: "broken_sessions",
                value: st.broken_sessions as f64,
                limit: b.overlap_max_broken as f64,
                ok: st.broken_sessions <= b.overlap_max_broken,
            });
        } else {
            guards.push(Guard {
                step: st.name,
                name: "broken_sessions",
                value: st.broken_sessions as f64,
                limit: b.gap_max_broken as f64,
                ok: st.broken_sessions <= b.gap_max_broken,
            });
            if let Some(l) = gap_outage {
                guards.push(Guard {
                    step: st.name,
                    name: "outage_ms",
                    value: st.traffic.outage_ms,
                    limit: l,
                    ok: st.traffic.outage_ms <= l,
                });
            }
        }
    }
    r.breaches = guards
        .iter()
        .filter(|g| !g.ok)
        .map(|g| format!("{}/{}", g.step, g.name))
        .collect();
    r.guards = guards;
}
