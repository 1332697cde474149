//! `mtproxy-ctl`'s own supervision of a proxy (`--supervise`): a state directory, an active
//! symlink switched atomically, and process hand-over from one binary to another.
//!
//! The state directory holds:
//! - `active`: symlink to the binary in service; the proxy is always exec'd through it, as a
//!   systemd unit would (`--link` puts it elsewhere);
//! - `previous`: symlink to the binary that was active before the last switch to a
//!   different binary (what `rollback` goes back to);
//! - `state.json`: the proxy's command line and the pid (and start time) of the process
//!   serving now;
//! - `proxy.log`: stdout and stderr of every process started, each after a header line.
//!
//! A switch is one of:
//! - **overlap** (zero downtime): both the running process and the new binary use
//!   SO_REUSEPORT (ours with `--reuse-port`, which the tool adds to the command line of every
//!   binary whose `--help` lists it). The new process starts on the same ports while the old
//!   one still serves; once it listens on every client port (and, in middle-proxy mode, has
//!   a TCP link to every middle-end of the config, plus `settle`), the old one gets SIGTERM,
//!   stops accepting and drains. The gate runs on the new one after that.
//! - **stop-start**: SIGTERM to the old process, wait for its exit, exec the new one, gate.
//!   Clients see a gap as long as the new binary's start-up (C cannot share its ports).
//!
//! A new process that exits or never listens before the old one is stopped is killed and the
//! links are put back: the old process never stopped serving (`kept_old`).
//!
//! What it is not: an init system. Nobody restarts a crashed proxy after the tool exits;
//! in production, prefer `--systemd UNIT` (the same procedure with `systemctl`).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cmdline::ProxyArgs;
use crate::gate::{self, GateResult, GateSpec};
use crate::procs::{self, ms, Proc, Shutdown};
use crate::report::{rfc3339, Timeline};

/// The proxy extension that lets two processes share the client ports.
pub const REUSE_PORT: &str = "--reuse-port";

/// How to hand over from the old process to the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Handover {
    /// Overlap when both sides share ports (SO_REUSEPORT), else stop-start.
    Auto,
    /// Always stop the old process before starting the new one.
    StopStart,
}

/// What `state.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// The binary the active link pointed to when the process was started.
    pub binary: PathBuf,
    /// The proxy's command line as the operator gave it (without `--reuse-port`, which is
    /// added per binary).
    pub args: Vec<String>,
    pub pid: Option<u32>,
    pub starttime: u64,
    /// The running process shares its ports (started with `--reuse-port`).
    pub reuse_port: bool,
    pub started_at: String,
}

/// The outcome of one switch.
#[derive(Clone, Debug, Serialize)]
pub struct Switch {
    pub from: Option<PathBuf>,
    pub to: PathBuf,
    /// `cold` (nothing was running), `overlap` or `stop-start`.
    pub handover: &'static str,
    pub pid: u32,
    pub command_line: Vec<String>,
    /// Exec until the new process can take clients: overlap, until it listens (and has its
    /// middle-end links); stop-start, until the gate's first client round trip succeeded.
    pub startup_latency_ms: Option<f64>,
    /// Exec until the new process listened on every client port (overlap only).
    pub listening_ms: Option<f64>,
    /// The old process's stop: SIGTERM until exit (drain included).
    pub shutdown: Option<Shutdown>,
    pub gate: GateResult,
    /// The new process failed before the old one was stopped: the old one kept serving.
    pub kept_old: bool,
}

/// A supervised proxy.
pub struct Supervisor {
    pub dir: PathBuf,
    pub link: PathBuf,
    pub previous: PathBuf,
    pub log: PathBuf,
    pub settle: Duration,
    pub stop_timeout: Duration,
    pub handover: Handover,
    /// Start proxies in a process group of their own (a service); off for the drill's.
    pub detach: bool,
    state: Option<State>,
    current: Option<Proc>,
    help_cache: HashMap<PathBuf, bool>,
}

/// Points `link` at `target` atomically (a new symlink renamed over the old one).
pub fn set_link(link: &Path, target: &Path) -> io::Result<()> {
    let tmp = link.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

/// Points `link` at `to`, first recording what it pointed at (`from`) in `previous` when
/// that is another binary: the rollback target.
pub fn switch_links(
    link: &Path,
    previous: &Path,
    from: Option<&Path>,
    to: &Path,
) -> io::Result<()> {
    if let Some(f) = from {
        if f != to {
            set_link(previous, f)?;
        }
    }
    set_link(link, to)
}

/// Where `link` points, if it is a symlink.
pub fn link_target(link: &Path) -> Option<PathBuf> {
    std::fs::read_link(link).ok()
}

/// The absolute form of a binary path (without resolving symlinks).
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

impl Supervisor {
    /// Opens (creating) the state directory; `link` defaults to `DIR/active`.
    pub fn open(dir: &Path, link: Option<&Path>) -> io::Result<Supervisor> {
        std::fs::create_dir_all(dir)?;
        let dir = absolute(dir);
        let state: Option<State> = std::fs::read(dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let current = state
            .as_ref()
            .and_then(|s| s.pid.map(|p| Proc::attach(p, s.starttime)));
        Ok(Supervisor {
            link: link.map_or_else(|| dir.join("active"), absolute),
            previous: dir.join("previous"),
            log: dir.join("proxy.log"),
            dir,
            settle: Duration::from_millis(500),
            stop_timeout: Duration::from_secs(30),
            handover: Handover::Auto,
            detach: true,
            state,
            current,
            help_cache: HashMap::new(),
        })
    }

    pub fn state(&self) -> Option<&State> {
        self.state.as_ref()
    }

    /// The proxy command line on record.
    pub fn args(&self) -> Option<Vec<String>> {
        self.state.as_ref().map(|s| s.args.clone())
    }

    /// The serving process, if it is alive.
    pub fn current(&mut self) -> Option<&mut Proc> {
        match self.current.as_mut() {
            Some(p) => {
                if p.alive() {
                    Some(p)
                } else {
                    None
                }
            }
            None => None,
        }
    }

    pub fn active_target(&self) -> Option<PathBuf> {
        link_target(&self.link)
    }

    pub fn previous_target(&self) -> Option<PathBuf> {
        link_target(&self.previous)
    }

    fn save(&self) -> io::Result<()> {
        let Some(s) = &self.state else { return Ok(()) };
        let tmp = self.dir.join("state.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(s).map_err(io::Error::other)?,
        )?;
        std::fs::rename(tmp, self.dir.join("state.json"))
    }

    /// Does `bin --help` list `--reuse-port`? (Cached per path.)
    pub fn supports_reuse_port(&mut self, bin: &Path) -> bool {
        if let Some(&b) = self.help_cache.get(bin) {
            return b;
        }
        let b = procs::help_text(bin, Duration::from_secs(3)).contains(REUSE_PORT);
        self.help_cache.insert(bin.to_path_buf(), b);
        b
    }

    /// The command line for `bin`: the operator's, with `--reuse-port` first when `bin` has it.
    fn command_line(&mut self, bin: &Path, args: &[String]) -> Vec<String> {
        let mut a: Vec<String> = args.iter().filter(|a| *a != REUSE_PORT).cloned().collect();
        if self.supports_reuse_port(bin) {
            a.insert(0, REUSE_PORT.to_string());
        }
        a
    }

    /// What the process started at log offset `from` wrote last (for failure reports).
    fn log_tail(&self, from: u64) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("=== "))
            .collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    fn spawn(&self, bin: &Path, args: &[String]) -> io::Result<Proc> {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
        {
            let _ = writeln!(
                f,
                "=== {} mtproxy-ctl: exec {} (-> {}) {}",
                rfc3339(std::time::SystemTime::now()),
                self.link.display(),
                bin.display(),
                args.join(" ")
            );
        }
        Proc::spawn(&self.link, args, &self.log, self.detach)
    }

    /// Makes `to` the active binary and hands the service over to it, then runs the gate.
    /// `args` replaces the command line on record when given.
    pub async fn switch(
        &mut self,
        to: &Path,
        args: Option<Vec<String>>,
        gate_timeout: Duration,
        tl: &mut Timeline,
    ) -> io::Result<Switch> {
        let to = absolute(to);
        let base: Vec<String> = match args.or_else(|| self.args()) {
            Some(a) => a.into_iter().filter(|a| a != REUSE_PORT).collect(),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "no proxy command line: give it after `--` (or start the proxy with `mtproxy-ctl start` first)",
                ))
            }
        };
        let new_args = self.command_line(&to, &base);
        let parsed = ProxyArgs::parse(&new_args);
        let spec = GateSpec::from_args(&parsed, gate_timeout);
        let old_reuse = self.state.as_ref().is_some_and(|s| s.reuse_port);
        let had_old = self.current().is_some();
        let overlap = had_old
            && old_reuse
            && parsed.reuse_port
            && self.handover == Handover::Auto
            && !parsed.client_ports.is_empty();
        let from = self.active_target();

        // 1. The links.
        switch_links(&self.link, &self.previous, from.as_deref(), &to)?;
        tl.log(
            "link",
            true,
            format!(
                "{} -> {} (previous -> {})",
                self.link.display(),
                to.display(),
                self.previous_target()
                    .map_or_else(|| "none".into(), |p| p.display().to_string())
            ),
        );

        let handover = match (had_old, overlap) {
            (false, _) => "cold",
            (true, true) => "overlap",
            (true, false) => "stop-start",
        };
        let mut shutdown = None;
        let mut listening_ms = None;
        let mut new;
        let t0;
        let log_from = self.log_len();
        if overlap {
            new = match self.spawn(&to, &new_args) {
                Ok(p) => p,
                Err(e) => {
                    let detail = format!("cannot exec {}: {e}", self.link.display());
                    tl.log("exec", false, detail.clone());
                    if let Some(f) = &from {
                        set_link(&self.link, f)?;
                    }
                    return Ok(exec_failed(from, to, handover, new_args, detail, true));
                }
            };
            t0 = new.spawned_at.unwrap_or_else(Instant::now);
            tl.log(
                "exec",
                true,
                format!(
                    "pid {} ({handover}: the old process keeps serving)",
                    new.pid
                ),
            );
            match wait_listening(&mut new, &parsed, t0 + gate_timeout).await {
                Ok(m) => {
                    listening_ms = Some(m);
                    tl.log(
                        "listening",
                        true,
                        format!(
                            "pid {} listens on {:?}{} after {m:.1} ms",
                            new.pid,
                            parsed.client_ports,
                            if parsed.me_mode() {
                                " with its middle-end links up"
                            } else {
                                ""
                            }
                        ),
                    );
                }
                Err((gate_name, mut detail)) => {
                    // The old process never stopped: kill the new one, put the links back.
                    let tail = self.log_tail(log_from);
                    if !tail.is_empty() {
                        detail = format!("{detail}; its log: {tail}");
                    }
                    tl.log("listening", false, detail.clone());
                    new.terminate(Duration::from_secs(2)).await;
                    if let Some(f) = &from {
                        set_link(&self.link, f)?;
                    }
                    tl.log(
                        "keep-old",
                        true,
                        format!(
                            "killed pid {}; {} -> {} again; the old process kept serving",
                            new.pid,
                            self.link.display(),
                            from.as_ref()
                                .map_or_else(|| "none".into(), |p| p.display().to_string())
                        ),
                    );
                    let mut g = GateResult {
                        ok: false,
                        failed_gate: Some(gate_name),
                        checks: Vec::new(),
                        stats_ms: None,
                        first_round_trip_ms: None,
                    };
                    g.checks.push(gate::Check {
                        name: gate_name,
                        ok: false,
                        ms: Some(ms(t0.elapsed())),
                        detail,
                    });
                    return Ok(Switch {
                        from,
                        to,
                        handover,
                        pid: new.pid,
                        command_line: new_args,
                        startup_latency_ms: None,
                        listening_ms: None,
                        shutdown: None,
                        gate: g,
                        kept_old: true,
                    });
                }
            }
            tokio::time::sleep(self.settle).await;
            if crate::report::tcp_migrate_req() == Some(0) {
                tl.log(
                    "note",
                    true,
                    "net.ipv4.tcp_migrate_req is 0: a client caught in the old process's accept \
                     queue when it closes its listener gets a reset (sysctl -w \
                     net.ipv4.tcp_migrate_req=1 moves it to the new process)",
                );
            }
            if let Some(mut old) = self.current.take() {
                tl.log("sigterm", true, format!("old pid {}", old.pid));
                let s = old.terminate(self.stop_timeout).await;
                tl.log(
                    "stopped",
                    !s.killed,
                    format!(
                        "old pid {} gone {:.1} ms after SIGTERM{}",
                        old.pid,
                        s.latency_ms,
                        exit_note(&s)
                    ),
                );
                shutdown = Some(s);
            }
        } else {
            if let Some(mut old) = self.current.take().filter(|_| had_old) {
                tl.log("sigterm", true, format!("old pid {}", old.pid));
                let s = old.terminate(self.stop_timeout).await;
                tl.log(
                    "stopped",
                    !s.killed,
                    format!(
                        "old pid {} gone {:.1} ms after SIGTERM{}",
                        old.pid,
                        s.latency_ms,
                        exit_note(&s)
                    ),
                );
                shutdown = Some(s);
            }
            new = match self.spawn(&to, &new_args) {
                Ok(p) => p,
                Err(e) => {
                    let detail = format!("cannot exec {}: {e}", self.link.display());
                    tl.log("exec", false, detail.clone());
                    let mut sw = exec_failed(from, to, handover, new_args, detail, false);
                    sw.shutdown = shutdown;
                    return Ok(sw);
                }
            };
            t0 = new.spawned_at.unwrap_or_else(Instant::now);
            tl.log("exec", true, format!("pid {} ({handover})", new.pid));
        }

        self.state = Some(State {
            binary: to.clone(),
            args: base,
            pid: Some(new.pid),
            starttime: new.starttime,
            reuse_port: parsed.reuse_port,
            started_at: rfc3339(std::time::SystemTime::now()),
        });
        self.save()?;

        let mut g = gate::run(&mut new, t0, &spec).await;
        if g.failed_gate == Some("process") {
            let tail = self.log_tail(log_from);
            if let (false, Some(c)) = (tail.is_empty(), g.checks.last_mut()) {
                c.detail = format!("{}; its log: {tail}", c.detail);
            }
        }
        tl.log("gate", g.ok, g.describe());
        let startup = if overlap {
            listening_ms
        } else {
            g.first_round_trip_ms.or(g.stats_ms).filter(|_| g.ok)
        };
        let pid = new.pid;
        self.current = Some(new);
        Ok(Switch {
            from,
            to,
            handover,
            pid,
            command_line: new_args,
            startup_latency_ms: startup,
            listening_ms,
            shutdown,
            gate: g,
            kept_old: false,
        })
    }

    /// Stops the serving process (SIGTERM, then SIGKILL after the stop timeout).
    pub async fn stop(&mut self, tl: &mut Timeline) -> io::Result<Option<Shutdown>> {
        let Some(mut p) = self.current.take() else {
            return Ok(None);
        };
        if !p.alive() {
            tl.log("stop", true, format!("pid {} was not running", p.pid));
            if let Some(s) = self.state.as_mut() {
                s.pid = None;
            }
            self.save()?;
            return Ok(None);
        }
        tl.log("sigterm", true, format!("pid {}", p.pid));
        let s = p.terminate(self.stop_timeout).await;
        tl.log(
            "stopped",
            !s.killed,
            format!(
                "pid {} gone {:.1} ms after SIGTERM{}",
                p.pid,
                s.latency_ms,
                exit_note(&s)
            ),
        );
        if let Some(st) = self.state.as_mut() {
            st.pid = None;
        }
        self.save()?;
        Ok(Some(s))
    }

    /// Hands the serving process handle out (for watching it in a window).
    pub fn current_mut(&mut self) -> Option<&mut Proc> {
        self.current.as_mut()
    }

    /// The gate for the process on record (its command line as exec'd).
    pub fn gate_spec(&mut self, timeout: Duration) -> Option<GateSpec> {
        let s = self.state.clone()?;
        let a = self.command_line(&s.binary, &s.args);
        Some(GateSpec::from_args(&ProxyArgs::parse(&a), timeout))
    }
}

/// A switch whose new process could not even be exec'd: a failed `process` gate.
fn exec_failed(
    from: Option<PathBuf>,
    to: PathBuf,
    handover: &'static str,
    command_line: Vec<String>,
    detail: String,
    kept_old: bool,
) -> Switch {
    Switch {
        from,
        to,
        handover,
        pid: 0,
        command_line,
        startup_latency_ms: None,
        listening_ms: None,
        shutdown: None,
        gate: GateResult {
            ok: false,
            failed_gate: Some("process"),
            checks: vec![gate::Check {
                name: "process",
                ok: false,
                ms: None,
                detail,
            }],
            stats_ms: None,
            first_round_trip_ms: None,
        },
        kept_old,
    }
}

fn exit_note(s: &Shutdown) -> String {
    let mut n = String::new();
    if let Some(c) = s.exit_code {
        n.push_str(&format!(", exit code {c}"));
    }
    if s.killed {
        n.push_str(", killed after the stop timeout");
    }
    n
}

/// Waits until `p` listens on every client port of `a` and (middle-proxy mode) has an
/// established TCP link to every middle-end of the config. Err: (gate name, detail).
async fn wait_listening(
    p: &mut Proc,
    a: &ProxyArgs,
    deadline: Instant,
) -> Result<f64, (&'static str, String)> {
    let t0 = p.spawned_at.unwrap_or_else(Instant::now);
    let mes = a.me_addrs();
    loop {
        if !p.alive() {
            let code = p
                .exit_code()
                .map_or_else(|| "?".to_string(), |c| c.to_string());
            return Err((
                "process",
                format!("pid {} exited during start-up (code {code})", p.pid),
            ));
        }
        let pid = p.pid;
        let socks = tokio::task::spawn_blocking(move || procs::tcp_sockets(pid))
            .await
            .unwrap_or_default();
        let listening = a.client_ports.iter().all(|port| {
            socks
                .iter()
                .any(|s| s.state == procs::TCP_LISTEN && s.local.port() == *port)
        });
        let linked = mes.iter().all(|me| {
            socks
                .iter()
                .any(|s| s.state == procs::TCP_ESTABLISHED && s.remote == *me)
        });
        if listening && linked {
            return Ok(ms(t0.elapsed()));
        }
        if Instant::now() >= deadline {
            return Err((
                "client",
                format!(
                    "pid {}: {} within the gate timeout",
                    p.pid,
                    if listening {
                        "no link to every middle-end"
                    } else {
                        "not listening on every client port"
                    }
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
