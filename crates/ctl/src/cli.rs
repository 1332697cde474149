//! The command line of `mtproxy-ctl` (clap) and what each command does with it.
//!
//! What it is not: logic. Each command builds its options and calls its module.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cutover::{self, Backend, GateOverrides, Params, Systemd};
use crate::fakes::Mode;
use crate::gate::WindowSpec;
use crate::report::{rfc3339, write_json, Timeline};
use crate::supervise::{Handover, Supervisor};
use crate::{drill, dualrun, DEFAULT_ERROR_KEYS};

#[derive(Parser, Debug)]
#[command(
    name = "mtproxy-ctl",
    version,
    about = "Switch an MTProto proxy between the C mtproto-proxy and mtproxy on evidence: dual-run, cutover, rollback, drill",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the reference and the candidate side by side on the same workload against
    /// loopback fakes and compare them under SLO guards (exit 2 on a breach).
    DualRun(DualRunArgs),
    /// Switch the service to BIN: active link, restart, health gate, rollback window;
    /// rolls back by itself on a failure (exit 2 when it did).
    Cutover(CutoverArgs),
    /// Switch the service back to the previous binary, with the health gate.
    Rollback(RollbackArgs),
    /// Rehearse baseline → cutover → upgrade → rollback under client traffic on loopback
    /// (exit 2 when a guard is breached).
    Drill(DrillArgs),
    /// Start the proxy under mtproxy-ctl's supervision (before the first cutover).
    Start(StartArgs),
    /// Stop the supervised proxy (SIGTERM, drain, exit).
    Stop(StateArgs),
    /// Show the supervised proxy: links, pid, command line.
    Status(StateArgs),
}

#[derive(Args, Debug)]
pub struct DualRunArgs {
    /// The binary to compare against (the C mtproto-proxy in production).
    #[arg(long, value_name = "BIN")]
    pub reference: PathBuf,
    /// The binary under evaluation.
    #[arg(long, value_name = "BIN")]
    pub candidate: PathBuf,
    /// Modes to run: me (middle proxy), tls (fake TLS), direct (skipped unless both binaries
    /// have --dc-override).
    #[arg(long, value_delimiter = ',', default_value = "me,tls,direct")]
    pub modes: Vec<String>,
    /// Client sessions per side and mode.
    #[arg(long, default_value_t = 300)]
    pub sessions: usize,
    /// Sessions in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Echo round trips per session (after the resPQ handshake).
    #[arg(long, default_value_t = 5)]
    pub round_trips: usize,
    /// Bytes per round-trip packet.
    #[arg(long, default_value_t = 1024)]
    pub payload: usize,
    /// Bulk bytes per side and mode, for throughput and CPU/GB (MiB). CPU time is counted
    /// in 10-ms ticks: a few seconds of bulk per side keep that error near 1%.
    #[arg(long, default_value_t = 256)]
    pub bulk_mib: u64,
    /// Bulk sessions in parallel.
    #[arg(long, default_value_t = 4)]
    pub bulk_sessions: usize,
    /// Bytes per bulk packet.
    #[arg(long, default_value_t = 65536)]
    pub chunk: usize,
    /// How often /stats is polled during the workload.
    #[arg(long, default_value_t = 200)]
    pub stats_poll_ms: u64,
    /// SLO: candidate success rate may be at most this much below the reference's.
    #[arg(long, default_value_t = 0.02)]
    pub max_success_drop: f64,
    /// SLO: candidate p95 latencies ≤ FACTOR × reference + SLACK.
    #[arg(long, default_value_t = 2.0, value_name = "FACTOR")]
    pub latency_factor: f64,
    #[arg(long, default_value_t = 25.0, value_name = "SLACK")]
    pub latency_slack_ms: f64,
    /// SLO: candidate CPU seconds per GB ≤ RATIO × reference.
    #[arg(long, default_value_t = 1.0, value_name = "RATIO")]
    pub max_cpu_ratio: f64,
    /// SLO: candidate peak RSS ≤ RATIO × reference + SLACK.
    #[arg(long, default_value_t = 1.0, value_name = "RATIO")]
    pub max_rss_ratio: f64,
    /// The peak of one binary moves by up to ~2.5 MiB between runs (docs/cutover.md).
    #[arg(long, default_value_t = 3.0, value_name = "SLACK")]
    pub rss_slack_mib: f64,
    /// Seconds each binary gets to answer /stats and a first client round trip.
    #[arg(long, default_value_t = 30.0)]
    pub start_timeout: f64,
    /// An extra argument for both command lines (repeat for several).
    #[arg(long = "extra-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub extra_args: Vec<String>,
    /// Keep fakes' files and proxy logs here (default: a temporary directory, removed on
    /// success).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Where the JSON report goes (default: mtproxy-ctl-dual-run-<time>.json here).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ServiceArgs {
    /// Restart through systemd: the unit's ExecStart must run the --link path.
    #[arg(long, value_name = "UNIT", conflicts_with = "supervise")]
    pub systemd: Option<String>,
    /// Restart through mtproxy-ctl's own supervision (state in --state-dir).
    #[arg(long)]
    pub supervise: bool,
    /// State directory: links, state.json, proxy.log, reports.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/mtproxy-ctl")]
    pub state_dir: PathBuf,
    /// The active symlink (default: STATE_DIR/active). systemd: required, the path the
    /// unit runs; the previous binary is kept in LINK.previous.
    #[arg(long, value_name = "PATH")]
    pub link: Option<PathBuf>,
    /// Seconds from exec until /stats and a client handshake + round trip must succeed.
    #[arg(long, default_value_t = 30.0)]
    pub gate_timeout: f64,
    /// Rollback window: seconds the new process is watched after its gate (0: none).
    #[arg(long, default_value_t = 60.0)]
    pub window: f64,
    /// Window: process and /stats checks every MS.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
    /// Window: a client handshake + round trip every MS.
    #[arg(long, default_value_t = 2000)]
    pub probe_every_ms: u64,
    /// Window guard: roll back when at least this many new errors …
    #[arg(long, default_value_t = 10.0)]
    pub max_errors: f64,
    /// … are more than this fraction of the forwarded queries.
    #[arg(long, default_value_t = 0.05)]
    pub max_error_rate: f64,
    /// /stats counters that count as errors (default: dropped_queries, dropped_responses,
    /// total_connect_failures).
    #[arg(long = "error-key", value_name = "KEY")]
    pub error_keys: Vec<String>,
    /// Supervise: overlap the processes when both share the ports (auto) or always stop
    /// first.
    #[arg(long, value_enum, default_value_t = Handover::Auto)]
    pub handover: Handover,
    /// Supervise: wait this long after the new process listens before stopping the old one.
    #[arg(long, default_value_t = 500)]
    pub settle_ms: u64,
    /// Seconds the old process may drain after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 30.0)]
    pub stop_timeout: f64,
    /// Gate: client port(s) to probe (default: -H of the command line).
    #[arg(long = "client-port", value_name = "PORT")]
    pub client_ports: Vec<u16>,
    /// Gate: /stats port (default: -p with --http-stats of the command line).
    #[arg(long, value_name = "PORT")]
    pub stats_port: Option<u16>,
    /// Gate: client secret, 32 hex digits (default: the first -S or secret-file entry).
    #[arg(long, value_name = "HEX")]
    pub secret: Option<String>,
    /// Gate: fake-TLS domain (default: the first -D).
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Where the JSON report goes (default: STATE_DIR/reports/<command>-<time>.json).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CutoverArgs {
    /// The binary to switch to.
    #[arg(long, value_name = "BIN")]
    pub to: PathBuf,
    #[command(flatten)]
    pub service: ServiceArgs,
    /// The proxy's command line (C's options), after `--`. Supervise: replaces the one on
    /// record. systemd: only read for the gate's ports and secret.
    #[arg(last = true, value_name = "PROXY ARGS")]
    pub proxy_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[arg(last = true, value_name = "PROXY ARGS")]
    pub proxy_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DrillArgs {
    #[arg(long, value_name = "BIN")]
    pub reference: PathBuf,
    #[arg(long, value_name = "BIN")]
    pub candidate: PathBuf,
    /// me (the only mode C has), tls or direct.
    #[arg(long, default_value = "me")]
    pub mode: String,
    /// Client traffic streams running through the whole drill: each starts a session every
    /// 25 ms, whether or not its previous one has ended (as clients arrive).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Echo round trips per traffic session.
    #[arg(long, default_value_t = 3)]
    pub round_trips: usize,
    /// Seconds of traffic (and rollback window) per step.
    #[arg(long, default_value_t = 2.0)]
    pub steady: f64,
    #[arg(long, default_value_t = 30.0)]
    pub gate_timeout: f64,
    #[arg(long, default_value_t = 500)]
    pub settle_ms: u64,
    /// Guard: cutover/rollback start-up and shutdown ≤ FACTOR × baseline + SLACK.
    #[arg(long, default_value_t = 3.0, value_name = "FACTOR")]
    pub startup_factor: f64,
    #[arg(long, default_value_t = 500.0, value_name = "SLACK")]
    pub startup_slack_ms: f64,
    #[arg(long = "extra-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub extra_args: Vec<String>,
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Where the JSON report goes (default: mtproxy-ctl-drill-<time>.json here).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// The binary to start (becomes the active link's target).
    #[arg(long, value_name = "BIN")]
    pub bin: PathBuf,
    #[arg(long, value_name = "DIR", default_value = "/var/lib/mtproxy-ctl")]
    pub state_dir: PathBuf,
    #[arg(long, value_name = "PATH")]
    pub link: Option<PathBuf>,
    #[arg(long, default_value_t = 30.0)]
    pub gate_timeout: f64,
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The proxy's command line (C's options).
    #[arg(last = true, required = true, value_name = "PROXY ARGS")]
    pub proxy_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StateArgs {
    #[arg(long, value_name = "DIR", default_value = "/var/lib/mtproxy-ctl")]
    pub state_dir: PathBuf,
    #[arg(long, value_name = "PATH")]
    pub link: Option<PathBuf>,
}

fn stamp() -> String {
    rfc3339(std::time::SystemTime::now())
        .replace([':', '-'], "")
        .replace('.', "-")
}

fn save(path: &Path, value: &impl serde::Serialize) -> bool {
    match write_json(path, value) {
        Ok(()) => {
            eprintln!("report: {}", path.display());
            true
        }
        Err(e) => {
            eprintln!("cannot write the report {}: {e}", path.display());
            false
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn backend(s: &ServiceArgs, args: &[String]) -> Result<Backend, String> {
    match (&s.systemd, s.supervise) {
        (Some(unit), _) => {
            let link = s
                .link
                .clone()
                .ok_or("--systemd needs --link PATH (the binary path the unit runs)")?;
            if s.client_ports.is_empty()
                && crate::cmdline::ProxyArgs::parse(args)
                    .client_ports
                    .is_empty()
            {
                return Err(
                    "--systemd: the gate needs the client port(s): give the unit's \
                     command line after `--`, or --client-port (and --stats-port, --secret)"
                        .into(),
                );
            }
            Ok(Backend::Systemd(Box::new(Systemd::new(
                unit,
                &link,
                args.to_vec(),
                GateOverrides {
                    client_ports: s.client_ports.clone(),
                    stats_port: s.stats_port,
                    secret: s.secret.clone(),
                    domain: s.domain.clone(),
                },
            ))))
        }
        (None, true) => {
            let mut sup = Supervisor::open(&s.state_dir, s.link.as_deref())
                .map_err(|e| format!("{}: {e}", s.state_dir.display()))?;
            sup.settle = Duration::from_millis(s.settle_ms);
            sup.stop_timeout = secs(s.stop_timeout);
            sup.handover = s.handover;
            Ok(Backend::Supervise(Box::new(sup)))
        }
        (None, false) => Err("say how the service runs: --systemd UNIT or --supervise".into()),
    }
}

fn params(s: &ServiceArgs, args: &[String]) -> Params {
    Params {
        gate_timeout: secs(s.gate_timeout),
        window: WindowSpec {
            duration_s: s.window.max(0.0),
            poll_ms: s.poll_ms.max(10),
            probe_every_ms: s.probe_every_ms.max(10),
            error_keys: if s.error_keys.is_empty() {
                DEFAULT_ERROR_KEYS.iter().map(|k| k.to_string()).collect()
            } else {
                s.error_keys.clone()
            },
            max_errors: s.max_errors,
            max_error_rate: s.max_error_rate,
        },
        args: if args.is_empty() {
            None
        } else {
            Some(args.to_vec())
        },
    }
}

fn report_path(s: &ServiceArgs, cmd: &str) -> PathBuf {
    s.report.clone().unwrap_or_else(|| {
        s.state_dir
            .join("reports")
            .join(format!("{cmd}-{}.json", stamp()))
    })
}

/// Runs a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> i32 {
    match cli.cmd {
        Cmd::DualRun(a) => {
            let mut modes = Vec::new();
            for m in &a.modes {
                match Mode::parse(m.trim()) {
                    Some(m) => modes.push(m),
                    None => {
                        eprintln!("unknown mode {m:?}: me, tls or direct");
                        return 1;
                    }
                }
            }
            let o = dualrun::Opts {
                reference: a.reference,
                candidate: a.candidate,
                modes,
                workload: dualrun::Workload {
                    sessions: a.sessions,
                    concurrency: a.concurrency,
                    round_trips: a.round_trips,
                    payload_bytes: a.payload,
                    bulk_bytes: a.bulk_mib * 1024 * 1024,
                    bulk_sessions: a.bulk_sessions,
                    bulk_chunk_bytes: a.chunk,
                    stats_poll_ms: a.stats_poll_ms,
                    extra_args: a.extra_args,
                },
                thresholds: dualrun::Thresholds {
                    max_success_drop: a.max_success_drop,
                    latency_factor: a.latency_factor,
                    latency_slack_ms: a.latency_slack_ms,
                    max_cpu_ratio: a.max_cpu_ratio,
                    max_rss_ratio: a.max_rss_ratio,
                    rss_slack_mib: a.rss_slack_mib,
                },
                start_timeout: secs(a.start_timeout),
                work_dir: a.work_dir,
            };
            let r = dualrun::run(&o).await;
            print!("{}", r.summary());
            let path = a
                .report
                .unwrap_or_else(|| PathBuf::from(format!("mtproxy-ctl-dual-run-{}.json", stamp())));
            if !save(&path, &r) {
                return 1;
            }
            r.exit_code()
        }
        Cmd::Drill(a) => {
            let Some(mode) = Mode::parse(&a.mode) else {
                eprintln!("unknown mode {:?}: me, tls or direct", a.mode);
                return 1;
            };
            let o = drill::Opts {
                reference: a.reference,
                candidate: a.candidate,
                mode,
                concurrency: a.concurrency,
                round_trips: a.round_trips,
                steady: secs(a.steady),
                gate_timeout: secs(a.gate_timeout),
                settle: Duration::from_millis(a.settle_ms),
                startup_factor: a.startup_factor,
                startup_slack_ms: a.startup_slack_ms,
                extra_args: a.extra_args,
                work_dir: a.work_dir,
            };
            let r = drill::run(&o).await;
            print!("{}", r.summary());
            let path = a
                .report
                .unwrap_or_else(|| PathBuf::from(format!("mtproxy-ctl-drill-{}.json", stamp())));
            if !save(&path, &r) {
                return 1;
            }
            r.exit_code()
        }
        Cmd::Cutover(a) => {
            let mut b = match backend(&a.service, &a.proxy_args) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{e}");
                    return 1;
                }
            };
            let p = params(&a.service, &a.proxy_args);
            let mut tl = Timeline::new();
            let r = cutover::cutover(&mut b, &a.to, &p, &mut tl).await;
            println!("{}", r.summary());
            save(&report_path(&a.service, "cutover"), &r);
            r.exit_code()
        }
        Cmd::Rollback(a) => {
            let mut b = match backend(&a.service, &a.proxy_args) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{e}");
                    return 1;
                }
            };
            let p = params(&a.service, &a.proxy_args);
            let mut tl = Timeline::new();
            let r = cutover::rollback(&mut b, &p, &mut tl).await;
            println!("{}", r.summary());
            save(&report_path(&a.service, "rollback"), &r);
            if r.result == "ok" {
                0
            } else if r.result == "error" {
                1
            } else {
                3
            }
        }
        Cmd::Start(a) => {
            let mut sup = match Supervisor::open(&a.state_dir, a.link.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}: {e}", a.state_dir.display());
                    return 1;
                }
            };
            if let Some(p) = sup.current() {
                eprintln!(
                    "a supervised proxy is already running (pid {}): use cutover, or stop it first",
                    p.pid
                );
                return 1;
            }
            let mut tl = Timeline::new();
            match sup
                .switch(
                    &a.bin,
                    Some(a.proxy_args.clone()),
                    secs(a.gate_timeout),
                    &mut tl,
                )
                .await
            {
                Ok(sw) => {
                    let ok = sw.gate.ok;
                    let path = a.report.clone().unwrap_or_else(|| {
                        a.state_dir
                            .join("reports")
                            .join(format!("start-{}.json", stamp()))
                    });
                    save(
                        &path,
                        &serde_json::json!({
                            "generated_at": rfc3339(std::time::SystemTime::now()),
                            "os": std::env::consts::OS,
                            "arch": std::env::consts::ARCH,
                            "command": "start",
                            "switch": sw,
                            "steps": tl.entries,
                        }),
                    );
                    if ok {
                        println!("started pid {} ({})", sw.pid, sw.to.display());
                        0
                    } else {
                        println!(
                            "pid {} did not pass its gate: {}",
                            sw.pid,
                            sw.gate.describe()
                        );
                        3
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            }
        }
        Cmd::Stop(a) => {
            let mut sup = match Supervisor::open(&a.state_dir, a.link.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}: {e}", a.state_dir.display());
                    return 1;
                }
            };
            let mut tl = Timeline::new();
            match sup.stop(&mut tl).await {
                Ok(Some(s)) => {
                    println!("stopped in {:.1} ms", s.latency_ms);
                    0
                }
                Ok(None) => {
                    println!("nothing was running");
                    0
                }
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            }
        }
        Cmd::Status(a) => {
            let mut sup = match Supervisor::open(&a.state_dir, a.link.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}: {e}", a.state_dir.display());
                    return 1;
                }
            };
            let running = sup.current().map(|p| p.pid);
            let v = serde_json::json!({
                "active": sup.active_target(),
                "previous": sup.previous_target(),
                "running_pid": running,
                "state": sup.state(),
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            if running.is_some() {
                0
            } else {
                3
            }
        }
    }
}
