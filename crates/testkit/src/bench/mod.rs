//! `mtproxy-bench`: the performance instrument (issue 7). It measures the proxy binary from
//! outside, on loopback, against the testkit's fakes, in the same run as its baselines:
//!
//! - **throughput**: 1, 16 and 256 connections streaming both ways at once (each client
//!   writes frames as fast as TCP takes them while reading the echo); proxy CPU seconds per
//!   GB relayed (both directions counted, user + sys of the process tree from `/proc`) and
//!   Gbit/s;
//! - **idle**: 10 000 established sessions, each authenticated by one round trip, then
//!   left alone; RSS per session over the process's RSS before the first session, and the
//!   CPU it burns while idle;
//! - **handshakes**: parallel loops of connect + handshake + one round trip + close;
//!   connections per second and proxy CPU per 1000;
//! - **latency**: one connection at a time, round trips through the target interleaved
//!   with round trips straight to the fake DC; the added p50 and p99.
//!
//! Targets: our proxy in direct mode, ME mode and fake TLS (direct behind `-D`); the floor,
//! a minimal plain TCP relay in a child process ([`floor`]); `--reference-bin` (the C
//! proxy, ME mode) and `--peer` command templates. Ratios to each baseline are printed and
//! written as JSON.
//!
//! The machine has few cores, so the load generator and the fakes share them with the
//! target: CPU is what counts, not wall time. The load generator ([`client`]) and the
//! fakes ([`fakes`], the testkit fake ME, the TLS site) run in this process on two
//! separately named tokio runtimes, and their CPU is reported next to the target's. The
//! echo DC sends raw bytes back in the throughput scenario (a proxy parses nothing on the
//! way down), so the fakes cost no crypto there unless `--verify`.
//!
//! See docs/performance.md for how to run it and the figures.

pub mod client;
pub mod fakes;
pub mod floor;
pub mod opts;
pub mod pipelined;
pub mod procs;
pub mod report;
pub mod scenarios;
pub mod sys;
pub mod targets;

use std::process::ExitCode;
use std::time::Instant;

use opts::{Opts, Scenario};
use pipelined::PipeRow;
use report::{num, ratio, Json, Table};
use scenarios::{HsRow, IdleRow, LatRow, Parts, TputRow};
use sys::Cpu;
use targets::{Env, Target};

type Res<T> = Result<T, String>;

/// Everything one run measured.
#[derive(Default)]
struct Results {
    tput: Vec<(Target, usize, Res<TputRow>)>,
    idle: Vec<(Target, Res<IdleRow>)>,
    hs: Vec<(Target, Res<HsRow>)>,
    lat: Vec<(Target, Res<LatRow>)>,
    pipe: Vec<(Target, usize, Res<PipeRow>)>,
    lat_loaded: Vec<(Target, Res<LatRow>)>,
}

impl Results {
    fn errors(&self) -> usize {
        self.tput.iter().filter(|r| r.2.is_err()).count()
            + self.idle.iter().filter(|r| r.1.is_err()).count()
            + self.hs.iter().filter(|r| r.1.is_err()).count()
            + self.lat.iter().filter(|r| r.1.is_err()).count()
            + self.pipe.iter().filter(|r| r.2.is_err()).count()
            + self.lat_loaded.iter().filter(|r| r.1.is_err()).count()
    }
}

/// The binary's `main`.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(floor::CHILD_FLAG) {
        return floor::child_main(&args[1..]);
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", opts::USAGE);
        return ExitCode::SUCCESS;
    }
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !opts.modes.is_empty() && !opts.proxy_bin.is_file() {
        eprintln!(
            "mtproxy-bench: no proxy binary at {} (cargo build --release -p mtproxy, or --proxy-bin)",
            opts.proxy_bin.display()
        );
        return ExitCode::from(2);
    }
    match run(opts) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => {
            eprintln!("mtproxy-bench: {n} measurement(s) failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("mtproxy-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn first_line(e: &str) -> String {
    e.lines().next().unwrap_or("").to_string()
}

fn run(opts: Opts) -> Result<usize, String> {
    // Client sockets, the echo DC's sockets and the proxy's: 3-4 descriptors a session.
    let want = (opts.idle_sessions as u64 * 4 + 8192).max(65_536);
    let got = sys::raise_nofile(want);
    if got < opts.idle_sessions as u64 * 3 + 1024 {
        eprintln!(
            "warning: descriptor limit {got} is low for {} idle sessions",
            opts.idle_sessions
        );
    }
    let started = Instant::now();
    let mut opts = opts;
    opts.nofile = got;
    let env = Env::new(opts)?;
    let o = &env.opts;
    let all = Target::all(o);
    let mut res = Results::default();
    for sc in &o.scenarios {
        for t in &all {
            let t0 = Instant::now();
            match sc {
                Scenario::Throughput => {
                    for (n, r) in scenarios::throughput(&env, t) {
                        match &r {
                            Ok(row) => eprintln!(
                                "throughput  {:<22} {:>4} conns: {:>6.2} Gbit/s, {:.3} CPU s/GB",
                                t.name,
                                n,
                                row.gbit_s(),
                                row.per_gb(&row.cpu.target)
                            ),
                            Err(e) => eprintln!("throughput  {} {n} conns: FAILED: {e}", t.name),
                        }
                        res.tput.push((t.clone(), n, r));
                    }
                }
                Scenario::Idle => {
                    let r = scenarios::idle(&env, t);
                    match &r {
                        Ok(row) => eprintln!(
                            "idle        {:<22} {} sessions: {:.2} KiB/session",
                            t.name,
                            row.sessions,
                            row.kib_per_session()
                        ),
                        Err(e) => eprintln!("idle        {}: FAILED: {e}", t.name),
                    }
                    res.idle.push((t.clone(), r));
                }
                Scenario::Handshakes => {
                    let r = scenarios::handshakes(&env, t);
                    match &r {
                        Ok(row) => eprintln!(
                            "handshakes  {:<22} {:.0}/s, {:.1} CPU ms per 1000",
                            t.name,
                            row.rate(),
                            row.ms_per_1000(&row.cpu.target)
                        ),
                        Err(e) => eprintln!("handshakes  {}: FAILED: {e}", t.name),
                    }
                    res.hs.push((t.clone(), r));
                }
                Scenario::Latency | Scenario::LatencyLoaded => {
                    let loaded = *sc == Scenario::LatencyLoaded;
                    let r = scenarios::latency(&env, t, loaded);
                    let label = if loaded { "lat-loaded" } else { "latency" };
                    match &r {
                        Ok(row) => eprintln!(
                            "{label:<11} {:<22} p50 {:.0} µs, p99 {:.0} µs (+{:.0} / +{:.0})",
                            t.name,
                            row.p50,
                            row.p99,
                            row.added_p50(),
                            row.added_p99()
                        ),
                        Err(e) => eprintln!("{label:<11} {}: FAILED: {e}", t.name),
                    }
                    let into = if loaded {
                        &mut res.lat_loaded
                    } else {
                        &mut res.lat
                    };
                    into.push((t.clone(), r));
                }
                Scenario::Pipelined => {
                    for (n, r) in pipelined::pipelined(&env, t) {
                        match &r {
                            Ok(row) => eprintln!(
                                "pipelined   {:<22} {:>4} conns: {:>6.2} Gbit/s, {:.3} CPU s/GB, {:.0} µs/window p50",
                                t.name,
                                n,
                                row.gbit_s(),
                                row.per_gb(),
                                row.p50_us
                            ),
                            Err(e) => eprintln!("pipelined   {} {n} conns: FAILED: {e}", t.name),
                        }
                        res.pipe.push((t.clone(), n, r));
                    }
                }
            }
            let _ = t0;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let baselines: Vec<String> = all.iter().filter_map(Target::baseline).collect();
    print!("{}", render_tables(o, &res, &baselines, wall));
    if let Some(path) = &o.json {
        let j = to_json(o, &res, &baselines, wall);
        std::fs::write(path, j.render()).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(res.errors())
}

/// `value / baseline value` for each baseline, where both exist.
fn ratios<R>(
    rows: &[(Target, R)],
    baselines: &[String],
    value: impl Fn(&R) -> Option<f64>,
    mine: Option<f64>,
) -> Vec<(String, Option<f64>)> {
    baselines
        .iter()
        .map(|b| {
            let base = rows
                .iter()
                .find(|(t, _)| t.baseline().as_deref() == Some(b))
                .and_then(|(_, r)| value(r));
            let r = match (mine, base) {
                (Some(m), Some(b)) if b > 0.0 => Some(m / b),
                _ => None,
            };
            (b.clone(), r)
        })
        .collect()
}

fn ratio_json(r: &[(String, Option<f64>)]) -> Json {
    Json::Obj(r.iter().map(|(k, v)| (k.clone(), Json::from(*v))).collect())
}

fn cpu_json(c: &Cpu) -> Json {
    Json::obj().set("user", c.user).set("sys", c.sys)
}

fn parts_json(p: &Parts) -> Json {
    Json::obj()
        .set("target", cpu_json(&p.target))
        .set("load", cpu_json(&p.load))
        .set("fakes", cpu_json(&p.fakes))
}

/// Throughput rows for one connection count, as (target, row) pairs for [`ratios`].
fn tput_at(res: &Results, n: usize) -> Vec<(Target, &Res<TputRow>)> {
    res.tput
        .iter()
        .filter(|(_, c, _)| *c == n)
        .map(|(t, _, r)| (t.clone(), r))
        .collect()
}

fn tput_cpu(r: &&Res<TputRow>) -> Option<f64> {
    r.as_ref().ok().map(|x| x.per_gb(&x.cpu.target))
}

fn idle_kib(r: &Res<IdleRow>) -> Option<f64> {
    r.as_ref().ok().map(IdleRow::kib_per_session)
}

fn hs_ms(r: &Res<HsRow>) -> Option<f64> {
    r.as_ref().ok().map(|x| x.ms_per_1000(&x.cpu.target))
}

fn lat_p99(r: &Res<LatRow>) -> Option<f64> {
    r.as_ref().ok().map(LatRow::added_p99)
}

fn render_tables(o: &Opts, res: &Results, baselines: &[String], wall: f64) -> String {
    let (model, cores) = sys::machine();
    let mut out = format!(
        "\nmtproxy-bench: {model}, {cores} cores; {wall:.0} s; ratios are target ÷ baseline (lower is better)\n\n"
    );
    let x = |b: &str| format!("×{b}");
    let with_ratios = |fixed: &[&str], tail: &[&str]| {
        let mut h: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
        h.extend(baselines.iter().map(|b| x(b)));
        h.extend(tail.iter().map(|s| s.to_string()));
        h
    };
    let table = |title: &str, head: Vec<String>| Table {
        title: title.to_string(),
        head,
        rows: Vec::new(),
    };

    if !res.tput.is_empty() {
        let mut t = table(
            &format!(
                "throughput: both directions at once, {} B frames; CPU per 10^9 bytes relayed (up + down)",
                o.packet
            ),
            with_ratios(
                &["target", "conns", "Gbit/s", "CPU s/GB", "usr", "sys"],
                &["load s/GB", "fakes s/GB", "cores t/l/f"],
            ),
        );
        for (tg, n, r) in &res.tput {
            let mut row = vec![tg.name.clone(), n.to_string()];
            match r {
                Ok(v) => {
                    let c = &v.cpu;
                    row.extend([
                        num(v.gbit_s()),
                        num(v.per_gb(&c.target)),
                        num(c.target.user / (v.bytes() / 1e9)),
                        num(c.target.sys / (v.bytes() / 1e9)),
                    ]);
                    let rs = ratios(&tput_at(res, *n), baselines, tput_cpu, tput_cpu(&r));
                    row.extend(rs.iter().map(|(_, v)| ratio(*v)));
                    row.extend([
                        num(v.per_gb(&c.load)),
                        num(v.per_gb(&c.fakes)),
                        format!(
                            "{:.2}/{:.2}/{:.2}",
                            c.target.total() / v.secs,
                            c.load.total() / v.secs,
                            c.fakes.total() / v.secs
                        ),
                    ]);
                }
                Err(e) => row.push(format!("error: {}", first_line(e))),
            }
            t.row(row);
        }
        out.push_str(&t.render());
        out.push('\n');
    }

    if !res.idle.is_empty() {
        let mut t = table(
            "idle: established, authenticated, idle sessions; RSS over the empty process",
            with_ratios(
                &[
                    "target",
                    "sessions",
                    "of",
                    "base MiB",
                    "RSS MiB",
                    "KiB/session",
                ],
                &["idle CPU %", "setup/s", "failed"],
            ),
        );
        for (tg, r) in &res.idle {
            let mut row = vec![tg.name.clone()];
            match r {
                Ok(v) => {
                    row.extend([
                        v.sessions.to_string(),
                        v.requested.to_string(),
                        num(v.base_rss_kib as f64 / 1024.0),
                        num(v.rss_kib as f64 / 1024.0),
                        num(v.kib_per_session()),
                    ]);
                    let rs = ratios(&res.idle, baselines, idle_kib, idle_kib(r));
                    row.extend(rs.iter().map(|(_, v)| ratio(*v)));
                    row.extend([
                        num(v.idle_cpu_pct),
                        num(v.sessions as f64 / v.setup_secs),
                        v.failed.to_string(),
                    ]);
                }
                Err(e) => row.push(format!("error: {}", first_line(e))),
            }
            t.row(row);
        }
        out.push_str(&t.render());
        out.push('\n');
    }

    if !res.hs.is_empty() {
        let mut t = table(
            &format!(
                "handshakes: {} loops of connect + handshake + one round trip + close",
                o.hs_parallel
            ),
            with_ratios(
                &["target", "conn/s", "CPU ms/1000"],
                &["load ms/1000", "fakes ms/1000", "failed"],
            ),
        );
        for (tg, r) in &res.hs {
            let mut row = vec![tg.name.clone()];
            match r {
                Ok(v) => {
                    row.extend([num(v.rate()), num(v.ms_per_1000(&v.cpu.target))]);
                    let rs = ratios(&res.hs, baselines, hs_ms, hs_ms(r));
                    row.extend(rs.iter().map(|(_, v)| ratio(*v)));
                    row.extend([
                        num(v.ms_per_1000(&v.cpu.load)),
                        num(v.ms_per_1000(&v.cpu.fakes)),
                        v.failed.to_string(),
                    ]);
                }
                Err(e) => row.push(format!("error: {}", first_line(e))),
            }
            t.row(row);
        }
        out.push_str(&t.render());
        out.push('\n');
    }

    if !res.pipe.is_empty() {
        out.push_str(&pipe_table(o, res, baselines).render());
        out.push('\n');
    }
    let lat_title = |what: &str| {
        format!(
            "{what}: {} round trips of {} B{}, one at a time, interleaved with the same straight to the DC (µs)",
            o.lat_rounds,
            o.lat_packet,
            if what == "latency" { String::new() } else { format!(" sent right behind a {} B frame, timed to its echo", o.packet) },
        )
    };
    for (what, rows) in [
        ("latency", &res.lat),
        ("latency with data in flight", &res.lat_loaded),
    ] {
        if !rows.is_empty() {
            let mut t = table(&lat_title(what), with_ratios(&LAT_HEAD, &[]));
            for (tg, r) in rows {
                t.row(lat_row(tg, r, rows, baselines));
            }
            out.push_str(&t.render());
            out.push_str("(latency ratios compare the added p99)\n");
        }
    }
    out
}

const LAT_HEAD: [&str; 7] = [
    "target",
    "p50",
    "p99",
    "straight p50",
    "straight p99",
    "added p50",
    "added p99",
];

/// One latency table row, with its ratios against the baselines among `rows`.
fn lat_row(
    tg: &Target,
    r: &Res<LatRow>,
    rows: &[(Target, Res<LatRow>)],
    baselines: &[String],
) -> Vec<String> {
    let mut row = vec![tg.name.clone()];
    match r {
        Ok(v) => {
            row.extend([
                num(v.p50),
                num(v.p99),
                num(v.straight_p50),
                num(v.straight_p99),
                num(v.added_p50()),
                num(v.added_p99()),
            ]);
            let rs = ratios(rows, baselines, lat_p99, lat_p99(r));
            row.extend(rs.iter().map(|(_, v)| ratio(*v)));
        }
        Err(e) => row.push(format!("error: {}", first_line(e))),
    }
    row
}

fn pipe_cpu(r: &&Res<PipeRow>) -> Option<f64> {
    r.as_ref().ok().map(PipeRow::per_gb)
}

/// The pipelined table: ratios of CPU per GB at the same connection count.
fn pipe_table(o: &Opts, res: &Results, baselines: &[String]) -> Table {
    let mut head: Vec<String> = [
        "target",
        "conns",
        "Gbit/s",
        "CPU s/GB",
        "µs/window p50",
        "µs/window p99",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    head.extend(baselines.iter().map(|b| format!("×{b}")));
    head.push("broken".into());
    let mut t = Table {
        title: format!(
            "pipelined: windows of {} × {} B frames, each window's echoes awaited before the next; CPU per 10^9 bytes (up + down)",
            o.pipe_frames, o.packet
        ),
        head,
        rows: Vec::new(),
    };
    for (tg, n, r) in &res.pipe {
        let mut row = vec![tg.name.clone(), n.to_string()];
        match r {
            Ok(v) => {
                row.extend([
                    num(v.gbit_s()),
                    num(v.per_gb()),
                    num(v.p50_us),
                    num(v.p99_us),
                ]);
                let same_n: Vec<(Target, &Res<PipeRow>)> = res
                    .pipe
                    .iter()
                    .filter(|(_, c, _)| c == n)
                    .map(|(t, _, r)| (t.clone(), r))
                    .collect();
                let rs = ratios(&same_n, baselines, pipe_cpu, pipe_cpu(&r));
                row.extend(rs.iter().map(|(_, v)| ratio(*v)));
                row.push(v.broken.to_string());
            }
            Err(e) => row.push(format!("error: {}", first_line(e))),
        }
        t.row(row);
    }
    t
}

fn target_json(t: &Target) -> Json {
    let kind = match &t.kind {
        targets::Kind::Floor => "floor".to_string(),
        targets::Kind::Ours(m) => format!("mtproxy-{}", m.name()),
        targets::Kind::Reference => "reference".to_string(),
        targets::Kind::Peer(p) => format!("peer:{}", p.name),
    };
    Json::obj()
        .set("target", t.name.as_str())
        .set("kind", kind)
        .set("mode", t.mode().name())
        .set("baseline", t.baseline())
}

fn with_fields(mut base: Json, extra: Json) -> Json {
    if let (Json::Obj(a), Json::Obj(b)) = (&mut base, extra) {
        a.extend(b);
    }
    base
}

fn to_json(o: &Opts, res: &Results, baselines: &[String], wall: f64) -> Json {
    let (model, cores) = sys::machine();
    let secs = |d: std::time::Duration| d.as_secs_f64();
    let options = Json::obj()
        .set("quick", o.quick)
        .set("proxy_bin", o.proxy_bin.display().to_string())
        .set(
            "proxy_args",
            Json::Arr(o.proxy_args.iter().map(|a| a.as_str().into()).collect()),
        )
        .set(
            "reference_bin",
            o.reference_bin.as_ref().map(|p| p.display().to_string()),
        )
        .set(
            "conns",
            Json::Arr(o.conns.iter().map(|&c| c.into()).collect()),
        )
        .set("duration_s", secs(o.duration))
        .set("warmup_s", secs(o.warmup))
        .set("packet", o.packet)
        .set("floor_buf", o.floor_buf)
        .set("verify", o.verify)
        .set("window", o.window)
        .set("idle_sessions", o.idle_sessions)
        .set("hs_duration_s", secs(o.hs_duration))
        .set("hs_parallel", o.hs_parallel)
        .set("lat_rounds", o.lat_rounds)
        .set("lat_packet", o.lat_packet)
        .set(
            "pipe_conns",
            Json::Arr(o.pipe_conns.iter().map(|&c| c.into()).collect()),
        )
        .set("pipe_frames", o.pipe_frames)
        .set("maxconn", u64::from(o.maxconn()))
        .set("nofile", o.nofile);
    let err = |e: &String| Json::obj().set("error", e.as_str());
    let tput: Vec<Json> = res
        .tput
        .iter()
        .map(|(t, n, r)| {
            let extra = match r {
                Ok(v) => Json::obj()
                    .set("conns", *n)
                    .set("secs", v.secs)
                    .set("bytes_up", v.up)
                    .set("bytes_down", v.down)
                    .set("gbit_s", v.gbit_s())
                    .set("cpu_s_per_gb", v.per_gb(&v.cpu.target))
                    .set("load_cpu_s_per_gb", v.per_gb(&v.cpu.load))
                    .set("fakes_cpu_s_per_gb", v.per_gb(&v.cpu.fakes))
                    .set("cpu", parts_json(&v.cpu))
                    .set(
                        "ratios",
                        ratio_json(&ratios(
                            &tput_at(res, *n),
                            baselines,
                            tput_cpu,
                            tput_cpu(&r),
                        )),
                    )
                    .set("me_requests", v.me_reqs)
                    .set("me_answers", v.me_answers)
                    .set("broken_streams", v.broken)
                    .set("bad_frames", v.bad_frames)
                    .set("connect_errors", v.connect_errors),
                Err(e) => err(e).set("conns", *n),
            };
            with_fields(target_json(t), extra)
        })
        .collect();
    let idle: Vec<Json> = res
        .idle
        .iter()
        .map(|(t, r)| {
            let extra = match r {
                Ok(v) => Json::obj()
                    .set("sessions", v.sessions)
                    .set("requested", v.requested)
                    .set("failed", v.failed)
                    .set("first_error", v.first_error.clone())
                    .set("setup_s", v.setup_secs)
                    .set("base_rss_kib", v.base_rss_kib)
                    .set("rss_kib", v.rss_kib)
                    .set("kib_per_session", v.kib_per_session())
                    .set("idle_cpu_pct", v.idle_cpu_pct)
                    .set(
                        "ratios",
                        ratio_json(&ratios(&res.idle, baselines, idle_kib, idle_kib(r))),
                    ),
                Err(e) => err(e),
            };
            with_fields(target_json(t), extra)
        })
        .collect();
    let hs: Vec<Json> = res
        .hs
        .iter()
        .map(|(t, r)| {
            let extra = match r {
                Ok(v) => Json::obj()
                    .set("parallel", v.parallel)
                    .set("secs", v.secs)
                    .set("ok", v.ok)
                    .set("failed", v.failed)
                    .set("first_error", v.first_error.clone())
                    .set("per_s", v.rate())
                    .set("cpu_ms_per_1000", v.ms_per_1000(&v.cpu.target))
                    .set("load_cpu_ms_per_1000", v.ms_per_1000(&v.cpu.load))
                    .set("fakes_cpu_ms_per_1000", v.ms_per_1000(&v.cpu.fakes))
                    .set("cpu", parts_json(&v.cpu))
                    .set(
                        "ratios",
                        ratio_json(&ratios(&res.hs, baselines, hs_ms, hs_ms(r))),
                    ),
                Err(e) => err(e),
            };
            with_fields(target_json(t), extra)
        })
        .collect();
    let lat_json = |rows: &[(Target, Res<LatRow>)]| -> Vec<Json> {
        rows.iter()
            .map(|(t, r)| {
                let extra = match r {
                    Ok(v) => Json::obj()
                        .set("rounds", v.rounds)
                        .set("p50_us", v.p50)
                        .set("p99_us", v.p99)
                        .set("straight_p50_us", v.straight_p50)
                        .set("straight_p99_us", v.straight_p99)
                        .set("added_p50_us", v.added_p50())
                        .set("added_p99_us", v.added_p99())
                        .set(
                            "ratios_added_p99",
                            ratio_json(&ratios(rows, baselines, lat_p99, lat_p99(r))),
                        ),
                    Err(e) => err(e),
                };
                with_fields(target_json(t), extra)
            })
            .collect()
    };
    let pipe: Vec<Json> = res
        .pipe
        .iter()
        .map(|(t, n, r)| {
            let extra = match r {
                Ok(v) => Json::obj()
                    .set("conns", *n)
                    .set("secs", v.secs)
                    .set("windows", v.windows)
                    .set("bytes", v.bytes)
                    .set("gbit_s", v.gbit_s())
                    .set("cpu_s_per_gb", v.per_gb())
                    .set("window_p50_us", v.p50_us)
                    .set("window_p99_us", v.p99_us)
                    .set("cpu", parts_json(&v.cpu))
                    .set("broken_streams", v.broken),
                Err(e) => err(e).set("conns", *n),
            };
            with_fields(target_json(t), extra)
        })
        .collect();
    Json::obj()
        .set("bench", "mtproxy-bench")
        .set("version", env!("CARGO_PKG_VERSION"))
        .set("machine", Json::obj().set("cpu", model).set("cores", cores))
        .set("wall_s", wall)
        .set("options", options)
        .set("throughput", tput)
        .set("idle", idle)
        .set("handshakes", hs)
        .set("latency", lat_json(&res.lat))
        .set("pipelined", pipe)
        .set("latency_loaded", lat_json(&res.lat_loaded))
}
