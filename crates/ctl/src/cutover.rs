//! `cutover` and `rollback`: the production procedure.
//!
//! cutover: switch the active symlink to the new binary, hand the service over (systemd
//! restart, or the supervisor's overlap/stop-start), run the health gate, then watch the new
//! process for the rollback window. A failed gate or a breach in the window (crash, `/stats`
//! gone, client probes failing, error counters growing) rolls back by itself: the link goes
//! back to the previous binary, which is restarted and gated in turn.
//!
//! rollback: the same switch to the binary the `previous` link names, with its gate.
//!
//! Every step is logged with a timestamp and ends up in the JSON report. Exit codes: 0 done,
//! 2 rolled back (the new binary failed and the previous one serves again), 3 failed (the
//! rollback failed too, or there was nothing to roll back to), 1 the tool could not run.
//!
//! What it is not: a deployment system. It switches one service on one host.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cmdline::{parse_secret, ProxyArgs};
use crate::gate::{self, GateResult, GateSpec, WindowReport, WindowSpec};
use crate::probe::client_opts;
use crate::procs::{self, ms, Proc, Shutdown};
use crate::report::{LogEntry, Meta, Timeline};
use crate::supervise::{absolute, link_target, set_link, switch_links, Supervisor, Switch};
use mtproxy_client::Tag;

/// Gate targets given on the command line (systemd mode, or to override the derived ones).
#[derive(Clone, Debug, Default)]
pub struct GateOverrides {
    pub client_ports: Vec<u16>,
    pub stats_port: Option<u16>,
    pub secret: Option<String>,
    pub domain: Option<String>,
}

impl GateOverrides {
    fn apply(&self, mut spec: GateSpec, args: &ProxyArgs) -> GateSpec {
        let secret = self
            .secret
            .as_deref()
            .and_then(parse_secret)
            .or_else(|| args.first_secret());
        let mut domains = args.domains.clone();
        if let Some(d) = &self.domain {
            domains = vec![d.clone()];
        }
        if !self.client_ports.is_empty() || self.secret.is_some() || self.domain.is_some() {
            let ports = if self.client_ports.is_empty() {
                args.client_ports.clone()
            } else {
                self.client_ports.clone()
            };
            let opts = client_opts(secret, &domains, Tag::Intermediate, 2);
            spec.targets = ports
                .into_iter()
                .map(|p| crate::probe::Target {
                    addr: SocketAddr::from(([127, 0, 0, 1], p)),
                    opts: opts.clone(),
                })
                .collect();
        }
        if let Some(p) = self.stats_port {
            spec.stats = Some(SocketAddr::from(([127, 0, 0, 1], p)));
        }
        spec
    }
}

/// The service restarted through systemd; the unit's `ExecStart` runs the active link.
pub struct Systemd {
    pub unit: String,
    pub link: PathBuf,
    pub previous: PathBuf,
    /// The command line in the unit (for the gate), when given.
    pub args: Vec<String>,
    pub overrides: GateOverrides,
    current: Option<Proc>,
}

impl Systemd {
    pub fn new(unit: &str, link: &Path, args: Vec<String>, overrides: GateOverrides) -> Systemd {
        let link = absolute(link);
        let previous = link.with_file_name(format!(
            "{}.previous",
            link.file_name()
                .map_or_else(|| "active".into(), |n| n.to_string_lossy().into_owned())
        ));
        Systemd {
            unit: unit.to_string(),
            link,
            previous,
            args,
            overrides,
            current: None,
        }
    }

    fn gate_spec(&self, timeout: Duration) -> GateSpec {
        let a = ProxyArgs::parse(&self.args);
        self.overrides.apply(GateSpec::from_args(&a, timeout), &a)
    }

    async fn systemctl(&self, args: &[&str]) -> io::Result<String> {
        let out = tokio::process::Command::new("systemctl")
            .args(args)
            .output()
            .await?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "systemctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    async fn main_pid(&self) -> Option<u32> {
        self.systemctl(&["show", "-p", "MainPID", "--value", &self.unit])
            .await
            .ok()?
            .parse::<u32>()
            .ok()
            .filter(|p| *p > 0)
    }

    async fn switch(
        &mut self,
        to: &Path,
        gate_timeout: Duration,
        tl: &mut Timeline,
    ) -> io::Result<Switch> {
        let to = absolute(to);
        let from = link_target(&self.link);
        let previous = link_target(&self.previous);
        switch_links(&self.link, &self.previous, from.as_deref(), &to)?;
        tl.log(
            "link",
            true,
            format!("{} -> {}", self.link.display(), to.display()),
        );
        let old = self.main_pid().await;
        let t = Instant::now();
        if let Err(e) = self.systemctl(&["stop", &self.unit]).await {
            // Nothing was stopped: put both links back (the rollback target included) and
            // give up.
            let _ = restore_link(&self.link, from.as_deref());
            let _ = restore_link(&self.previous, previous.as_deref());
            return Err(e);
        }
        let shutdown = old.map(|_| Shutdown {
            latency_ms: ms(t.elapsed()),
            exit_code: None,
            killed: false,
        });
        tl.log(
            "stopped",
            true,
            format!("systemctl stop {} ({:.1} ms)", self.unit, ms(t.elapsed())),
        );
        let t0 = Instant::now();
        // A unit that fails to start is a failed `process` gate (and so a rollback).
        let started = self.systemctl(&["start", &self.unit]).await;
        let pid = self.main_pid().await.unwrap_or(0);
        tl.log(
            "exec",
            started.is_ok(),
            match &started {
                Ok(_) => format!("systemctl start {}: MainPID {pid}", self.unit),
                Err(e) => e.to_string(),
            },
        );
        // MainPID 0 (no process): a start time no process has, so it counts as gone.
        let mut p = Proc::attach(pid, procs::starttime(pid).unwrap_or(u64::MAX));
        let g = match &started {
            // The gate says why: what systemctl answered, not just "the process is gone".
            Err(e) => GateResult::failed("process", e.to_string()),
            Ok(_) => gate::run(&mut p, t0, &self.gate_spec(gate_timeout)).await,
        };
        tl.log("gate", g.ok, g.describe());
        self.current = Some(p);
        Ok(Switch {
            from,
            to,
            handover: "stop-start",
            pid,
            command_line: self.args.clone(),
            startup_latency_ms: g.first_round_trip_ms.or(g.stats_ms).filter(|_| g.ok),
            listening_ms: None,
            shutdown,
            gate: g,
            kept_old: false,
        })
    }
}

/// Points `link` at `target` again, or removes it when there was none.
fn restore_link(link: &Path, target: Option<&Path>) -> io::Result<()> {
    match target {
        Some(t) => set_link(link, t),
        None => match std::fs::remove_file(link) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// Who runs the proxy.
pub enum Backend {
    Supervise(Box<Supervisor>),
    Systemd(Box<Systemd>),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Supervise(_) => "supervise",
            Backend::Systemd(_) => "systemd",
        }
    }

    pub fn link(&self) -> PathBuf {
        match self {
            Backend::Supervise(s) => s.link.clone(),
            Backend::Systemd(s) => s.link.clone(),
        }
    }

    pub fn previous_target(&self) -> Option<PathBuf> {
        match self {
            Backend::Supervise(s) => s.previous_target(),
            Backend::Systemd(s) => link_target(&s.previous),
        }
    }

    pub async fn switch(
        &mut self,
        to: &Path,
        args: Option<Vec<String>>,
        gate_timeout: Duration,
        tl: &mut Timeline,
    ) -> io::Result<Switch> {
        match self {
            Backend::Supervise(s) => s.switch(to, args, gate_timeout, tl).await,
            Backend::Systemd(s) => s.switch(to, gate_timeout, tl).await,
        }
    }

    async fn watch(&mut self, w: &WindowSpec, tl: &mut Timeline) -> WindowReport {
        let (proc_, spec) = match self {
            Backend::Supervise(s) => {
                let spec = s.gate_spec(Duration::from_secs(5));
                (s.current_mut(), spec)
            }
            Backend::Systemd(s) => {
                let spec = s.gate_spec(Duration::from_secs(5));
                (s.current.as_mut(), Some(spec))
            }
        };
        let (Some(p), Some(spec)) = (proc_, spec) else {
            return WindowReport {
                breach: Some("crash"),
                breach_detail: Some("no process to watch".into()),
                ..WindowReport::default()
            };
        };
        tl.log(
            "window",
            true,
            format!(
                "watching pid {} for {:.1} s (crash, /stats, client probes, error counters)",
                p.pid, w.duration_s
            ),
        );
        let r = gate::watch(p, &spec, w).await;
        match r.breach {
            Some(b) => tl.log(
                "window",
                false,
                format!(
                    "{b}: {} (after {:.0} ms)",
                    r.breach_detail.clone().unwrap_or_default(),
                    r.duration_ms
                ),
            ),
            None => tl.log(
                "window",
                true,
                format!(
                    "passed: {} polls, {} client probes ok, {} new errors",
                    r.polls, r.probes_ok, r.errors_delta
                ),
            ),
        }
        r
    }
}

/// The limits of a cutover or rollback.
#[derive(Clone, Debug, Serialize)]
pub struct Thresholds {
    pub gate_timeout_s: f64,
    pub window: WindowSpec,
}

/// The JSON report of `cutover` and `rollback`.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub meta: Meta,
    pub command: &'static str,
    pub backend: &'static str,
    pub link: PathBuf,
    pub from: Option<PathBuf>,
    pub to: PathBuf,
    pub thresholds: Thresholds,
    /// `ok`, `rolled-back`, `failed` or `error`.
    pub result: &'static str,
    /// The gate or window check that failed: `process`, `stats`, `client`, `crash`, `errors`.
    pub failed_gate: Option<&'static str>,
    pub rolled_back: bool,
    pub handover: Option<&'static str>,
    pub startup_latency_ms: Option<f64>,
    pub shutdown_latency_ms: Option<f64>,
    pub switch: Option<Switch>,
    pub window: Option<WindowReport>,
    pub rollback: Option<Switch>,
    pub error: Option<String>,
    pub steps: Vec<LogEntry>,
}

impl Report {
    pub fn exit_code(&self) -> i32 {
        match self.result {
            "ok" => 0,
            "rolled-back" => 2,
            "failed" => 3,
            _ => 1,
        }
    }

    /// The readable summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} via {}: {} -> {}\n  result: {}",
            self.command,
            self.backend,
            self.from
                .as_ref()
                .map_or_else(|| "(nothing)".into(), |p| p.display().to_string()),
            self.to.display(),
            self.result
        );
        if let Some(g) = self.failed_gate {
            s.push_str(&format!(" (failed gate: {g})"));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("\n  error: {e}"));
        }
        if let Some(sw) = &self.switch {
            s.push_str(&format!(
                "\n  handover: {}; start-up {}; old process shutdown {}",
                sw.handover,
                fmt_ms(sw.startup_latency_ms),
                fmt_ms(sw.shutdown.as_ref().map(|s| s.latency_ms))
            ));
            s.push_str(&format!("\n  gate: {}", sw.gate.describe()));
        }
        if let Some(w) = &self.window {
            s.push_str(&format!(
                "\n  window: {:.1} s, {} probes ok, {} failed{}",
                w.duration_ms / 1000.0,
                w.probes_ok,
                w.probes_failed,
                w.breach
                    .map_or_else(String::new, |b| format!(", breach: {b}"))
            ));
        }
        if let Some(rb) = &self.rollback {
            s.push_str(&format!(
                "\n  rollback to {}: {} ({})",
                rb.to.display(),
                if rb.gate.ok { "serving" } else { "FAILED" },
                rb.gate.describe()
            ));
        }
        s
    }
}

pub fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |m| format!("{m:.1} ms"))
}

/// Options common to cutover and rollback.
pub struct Params {
    pub gate_timeout: Duration,
    pub window: WindowSpec,
    pub args: Option<Vec<String>>,
}

fn new_report(cmd: &'static str, b: &Backend, to: &Path, p: &Params) -> Report {
    Report {
        meta: Meta::now(),
        command: cmd,
        backend: b.name(),
        link: b.link(),
        from: link_target(&b.link()),
        to: absolute(to),
        thresholds: Thresholds {
            gate_timeout_s: p.gate_timeout.as_secs_f64(),
            window: p.window.clone(),
        },
        result: "error",
        failed_gate: None,
        rolled_back: false,
        handover: None,
        startup_latency_ms: None,
        shutdown_latency_ms: None,
        switch: None,
        window: None,
        rollback: None,
        error: None,
        steps: Vec::new(),
    }
}

/// cutover: switch to `to`, gate, watch, roll back on failure.
pub async fn cutover(b: &mut Backend, to: &Path, p: &Params, tl: &mut Timeline) -> Report {
    let mut r = new_report("cutover", b, to, p);
    tl.log(
        "cutover",
        true,
        format!(
            "{} -> {} via {}",
            r.from
                .as_ref()
                .map_or_else(|| "(nothing)".into(), |p| p.display().to_string()),
            r.to.display(),
            r.backend
        ),
    );
    if let Err(e) = check_binary(to) {
        tl.log("cutover", false, e.clone());
        r.error = Some(e);
        r.steps = tl.entries.clone();
        return r;
    }
    let sw = match b.switch(to, p.args.clone(), p.gate_timeout, tl).await {
        Ok(sw) => sw,
        Err(e) => {
            tl.log("cutover", false, e.to_string());
            r.error = Some(e.to_string());
            r.steps = tl.entries.clone();
            return r;
        }
    };
    r.from = sw.from.clone();
    r.handover = Some(sw.handover);
    r.startup_latency_ms = sw.startup_latency_ms;
    r.shutdown_latency_ms = sw.shutdown.as_ref().map(|s| s.latency_ms);
    let mut failed = sw.gate.failed_gate;
    let kept_old = sw.kept_old;
    r.switch = Some(sw);
    if failed.is_none() && p.window.duration_s > 0.0 {
        let w = b.watch(&p.window, tl).await;
        failed = w.breach;
        r.window = Some(w);
    }
    r.failed_gate = failed;
    match failed {
        None => {
            r.result = "ok";
            tl.log("cutover", true, format!("{} is serving", r.to.display()));
        }
        Some(g) if kept_old => {
            r.rolled_back = true;
            r.result = "rolled-back";
            tl.log(
                "rollback",
                true,
                format!("gate {g} failed before the old process was stopped: nothing to restart"),
            );
        }
        Some(g) => {
            let Some(back) = r.from.clone() else {
                tl.log(
                    "rollback",
                    false,
                    format!("gate {g} failed and there is no previous binary to go back to"),
                );
                r.result = "failed";
                r.steps = tl.entries.clone();
                return r;
            };
            tl.log(
                "rollback",
                true,
                format!("gate {g} failed: back to {}", back.display()),
            );
            r.rolled_back = true;
            match b.switch(&back, None, p.gate_timeout, tl).await {
                Ok(rb) => {
                    r.result = if rb.gate.ok { "rolled-back" } else { "failed" };
                    tl.log(
                        "rollback",
                        rb.gate.ok,
                        if rb.gate.ok {
                            format!("{} is serving again", back.display())
                        } else {
                            format!("{} does not pass its gate either", back.display())
                        },
                    );
                    r.rollback = Some(rb);
                }
                Err(e) => {
                    tl.log("rollback", false, e.to_string());
                    r.error = Some(e.to_string());
                    r.result = "failed";
                }
            }
        }
    }
    r.steps = tl.entries.clone();
    r
}

/// rollback: switch to the `previous` binary, gate, optionally watch.
pub async fn rollback(b: &mut Backend, p: &Params, tl: &mut Timeline) -> Report {
    let Some(to) = b.previous_target() else {
        let mut r = new_report("rollback", b, Path::new(""), p);
        tl.log(
            "rollback",
            false,
            "no previous binary on record (the `previous` link is missing)",
        );
        r.error = Some("no previous binary to roll back to".into());
        r.steps = tl.entries.clone();
        return r;
    };
    let mut r = new_report("rollback", b, &to, p);
    tl.log(
        "rollback",
        true,
        format!(
            "{} -> {} via {}",
            r.from
                .as_ref()
                .map_or_else(|| "(nothing)".into(), |p| p.display().to_string()),
            to.display(),
            r.backend
        ),
    );
    match b.switch(&to, p.args.clone(), p.gate_timeout, tl).await {
        Ok(sw) => {
            r.handover = Some(sw.handover);
            r.startup_latency_ms = sw.startup_latency_ms;
            r.shutdown_latency_ms = sw.shutdown.as_ref().map(|s| s.latency_ms);
            r.failed_gate = sw.gate.failed_gate;
            r.rolled_back = true;
            let ok = sw.gate.ok;
            r.switch = Some(sw);
            r.result = if ok { "ok" } else { "failed" };
            if ok && p.window.duration_s > 0.0 {
                let w = b.watch(&p.window, tl).await;
                if w.breach.is_some() {
                    r.failed_gate = w.breach;
                    r.result = "failed";
                }
                r.window = Some(w);
            }
        }
        Err(e) => {
            tl.log("rollback", false, e.to_string());
            r.error = Some(e.to_string());
        }
    }
    r.steps = tl.entries.clone();
    r
}

fn check_binary(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
        return Err(format!("{} is not an executable file", p.display()));
    }
    Ok(())
}
