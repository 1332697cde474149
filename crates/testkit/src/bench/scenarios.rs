//! The four measurements. Each starts its target afresh (a clean process for memory
//! baselines, fresh fakes), drives it from the load runtime and reads CPU and memory from
//! `/proc`: the target's process tree, and this process's load and fake threads by name.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::client::{connect, frames, round_trip, round_trip_frames, Endpoint, Reader, Writer};
use super::fakes::Echo;
use super::opts::Opts;
use super::sys::{self, Cpu};
use super::targets::{self, Env, Running, Target, FAKE_THREADS, LOAD_THREADS};
use crate::fake_me::MeEvent;

/// Longest a connect + handshake (+ first round trip) may take before it counts as failed.
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// CPU spent by each part over a window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Parts {
    pub target: Cpu,
    pub load: Cpu,
    pub fakes: Cpu,
}

struct Sample {
    t: Instant,
    parts: Parts,
}

impl Sample {
    fn take(pid: i32) -> Sample {
        Sample {
            t: Instant::now(),
            parts: Parts {
                target: sys::tree_cpu(pid),
                load: sys::threads_cpu(LOAD_THREADS),
                fakes: sys::threads_cpu(FAKE_THREADS),
            },
        }
    }

    /// Seconds and CPU from `self` to `later`.
    fn until(&self, later: &Sample) -> (f64, Parts) {
        (
            (later.t - self.t).as_secs_f64(),
            Parts {
                target: later.parts.target.since(&self.parts.target),
                load: later.parts.load.since(&self.parts.load),
                fakes: later.parts.fakes.since(&self.parts.fakes),
            },
        )
    }
}

/// One throughput point.
#[derive(Clone, Debug)]
pub struct TputRow {
    pub conns: usize,
    pub secs: f64,
    /// Obfuscated2 stream bytes the clients wrote / read in the window.
    pub up: u64,
    pub down: u64,
    pub cpu: Parts,
    /// Streams that ended (error or close) before the window closed.
    pub broken: usize,
    /// Frames that failed the check (with `--verify`).
    pub bad_frames: u64,
    pub connect_errors: usize,
    /// ME mode: RPC_PROXY_REQ received and RPC_PROXY_ANS sent by the fake ME in the window.
    pub me_reqs: Option<usize>,
    pub me_answers: Option<usize>,
}

impl TputRow {
    pub fn bytes(&self) -> f64 {
        (self.up + self.down) as f64
    }
    pub fn gbit_s(&self) -> f64 {
        self.bytes() * 8.0 / self.secs / 1e9
    }
    /// CPU seconds per 10^9 bytes relayed (both directions counted).
    pub fn per_gb(&self, c: &Cpu) -> f64 {
        c.total() / (self.bytes() / 1e9)
    }
}

/// The idle-sessions measurement.
#[derive(Clone, Debug)]
pub struct IdleRow {
    pub sessions: usize,
    /// Sessions asked for (after fitting them in the descriptor limit).
    pub requested: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub setup_secs: f64,
    pub base_rss_kib: u64,
    pub rss_kib: u64,
    /// The target's CPU while the sessions sat idle, percent of one core.
    pub idle_cpu_pct: f64,
}

impl IdleRow {
    pub fn kib_per_session(&self) -> f64 {
        (self.rss_kib as f64 - self.base_rss_kib as f64) / self.sessions.max(1) as f64
    }
}

/// The handshake-rate measurement.
#[derive(Clone, Debug)]
pub struct HsRow {
    pub parallel: usize,
    pub secs: f64,
    pub ok: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub cpu: Parts,
}

impl HsRow {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    /// CPU milliseconds per 1000 handshakes.
    pub fn ms_per_1000(&self, c: &Cpu) -> f64 {
        c.total() * 1e6 / self.ok.max(1) as f64
    }
}

/// The latency measurement (microseconds).
#[derive(Clone, Debug)]
pub struct LatRow {
    pub rounds: usize,
    pub p50: f64,
    pub p99: f64,
    pub straight_p50: f64,
    pub straight_p99: f64,
}

impl LatRow {
    pub fn added_p50(&self) -> f64 {
        self.p50 - self.straight_p50
    }
    pub fn added_p99(&self) -> f64 {
        self.p99 - self.straight_p99
    }
}

pub(super) fn check_alive(run: &mut Running) -> Result<(), String> {
    if run.proc.alive() {
        Ok(())
    } else {
        Err(format!("{} died:\n{}", run.proc.name, run.proc.tail()))
    }
}

pub(super) type Conn = (Reader, Writer);

/// Opens `n` connections, `conc` at a time, each with one round trip of `first` if given.
pub(super) async fn connect_many(
    ep: &Endpoint,
    n: usize,
    conc: usize,
    first: Option<Arc<Vec<u8>>>,
) -> (Vec<Conn>, Vec<String>) {
    let sem = Arc::new(Semaphore::new(conc.max(1)));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (ep, sem, first) = (ep.clone(), sem.clone(), first.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let step = async {
                let (mut r, mut w) = connect(&ep).await?;
                if let Some(f) = &first {
                    round_trip(&mut r, &mut w, f).await?;
                }
                Ok::<_, std::io::Error>((r, w))
            };
            match timeout(STEP_LIMIT, step).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("timed out".to_string()),
            }
        });
    }
    let (mut ok, mut errs) = (Vec::with_capacity(n), Vec::new());
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(c)) => ok.push(c),
            Ok(Err(e)) => errs.push(e),
            Err(e) => errs.push(e.to_string()),
        }
    }
    (ok, errs)
}

/// Bytes per write in the throughput scenario: whole frames, about 64 KiB.
fn frames_per_write(packet: usize) -> usize {
    (64 * 1024 / (packet + 4)).max(1)
}

/// Throughput at every connection count, one target process for all of them.
pub fn throughput(env: &Env, target: &Target) -> Vec<(usize, Result<TputRow, String>)> {
    let o = &env.opts;
    let echo = if o.verify { Echo::Decrypted } else { Echo::Raw };
    let mut run = match targets::start(env, target, echo) {
        Ok(r) => r,
        Err(e) => return o.conns.iter().map(|&n| (n, Err(e.clone()))).collect(),
    };
    let mut out = Vec::new();
    for &n in &o.conns {
        let r = env.load.block_on(tput_point(&run, n, o));
        let r = r
            .and_then(|row| check_alive(&mut run).map(|_| row))
            .and_then(|row| {
                // Everything is echoed: a target that swallows or stalls one direction is
                // not relaying, however many bytes it accepted.
                let (u, d) = (row.up as f64, row.down as f64);
                let in_flight = (per_conn_window(o.window, n) * n) as f64;
                if u < 1e6 || d + in_flight < 0.5 * u {
                    Err(format!(
                        "not relaying: {} bytes up, {} down in {:.1} s\n{}",
                        row.up,
                        row.down,
                        row.secs,
                        run.proc.tail()
                    ))
                } else {
                    Ok(row)
                }
            });
        out.push((n, r));
    }
    out
}

/// All connections together keep at most this much in flight.
pub const TOTAL_WINDOW: usize = 32 << 20;

/// A connection's window: `window`, shared out when `n` of them would exceed
/// [`TOTAL_WINDOW`], but at least 128 KiB.
pub fn per_conn_window(window: usize, n: usize) -> usize {
    window.min(TOTAL_WINDOW / n.max(1)).max(128 << 10)
}

/// One connection's flow control: bytes echoed back so far, and a wake-up for its writer.
#[derive(Default)]
struct Flow {
    received: AtomicU64,
    more: Notify,
}

async fn tput_point(run: &Running, n: usize, o: &Opts) -> Result<TputRow, String> {
    let (packet, verify) = (o.packet, o.verify);
    let window = per_conn_window(o.window, n) as u64;
    let ep = &run.endpoint;
    let template = Arc::new(frames(ep.tag(), packet, frames_per_write(packet)));
    // Each session does one round trip first, as a client's first request, so the
    // target has set it up (DC dialled, ME session bound) before the stream starts.
    let first = Arc::new(frames(ep.tag(), 128, 1));
    let (conns, errs) = connect_many(ep, n, 64, Some(first)).await;
    if conns.is_empty() {
        return Err(format!(
            "no connection: {}",
            errs.first().map_or("", String::as_str)
        ));
    }
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for (mut r, mut w) in conns {
        r.check = verify;
        let flow = Arc::new(Flow::default());
        let (t, up, f) = (template.clone(), up.clone(), flow.clone());
        set.spawn(async move {
            let mut sent = 0u64;
            loop {
                // At most `window` bytes on their way (as a client with a few requests
                // in flight); the reader wakes us as the echo comes back.
                loop {
                    let more = f.more.notified();
                    if sent.saturating_sub(f.received.load(Relaxed)) <= window {
                        break;
                    }
                    more.await;
                }
                w.send(&t).await?;
                sent += t.len() as u64;
                up.fetch_add(t.len() as u64, Relaxed);
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        });
        let (down, bad, f) = (down.clone(), bad.clone(), flow);
        set.spawn(async move {
            loop {
                match r.read_some().await? {
                    Some(m) => {
                        down.fetch_add(m as u64, Relaxed);
                        f.received.fetch_add(m as u64, Relaxed);
                        f.more.notify_one();
                    }
                    None => return Ok(()),
                }
                if r.walker.bad > 0 {
                    bad.fetch_add(r.walker.bad, Relaxed);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "bad frame",
                    ));
                }
            }
        });
    }
    let pid = run.pid();
    let me_counts = || {
        run.me.as_ref().map(|me| {
            (
                me.count(|e| matches!(e, MeEvent::ProxyReq { .. })),
                me.count(|e| matches!(e, MeEvent::ProxyAnsSent { .. })),
            )
        })
    };
    tokio::time::sleep(o.warmup).await;
    let (u0, d0) = (up.load(Relaxed), down.load(Relaxed));
    let m0 = me_counts();
    let s0 = Sample::take(pid);
    tokio::time::sleep(o.duration).await;
    let s1 = Sample::take(pid);
    let (u1, d1) = (up.load(Relaxed), down.load(Relaxed));
    let m1 = me_counts();
    let mut broken = 0;
    while set.try_join_next().is_some() {
        broken += 1;
    }
    set.abort_all();
    while set.join_next().await.is_some() {}
    let (secs, cpu) = s0.until(&s1);
    Ok(TputRow {
        conns: n,
        secs,
        up: u1 - u0,
        down: d1 - d0,
        cpu,
        broken,
        bad_frames: bad.load(Relaxed),
        connect_errors: errs.len(),
        me_reqs: m0.zip(m1).map(|(a, b)| b.0 - a.0),
        me_answers: m0.zip(m1).map(|(a, b)| b.1 - a.1),
    })
}

/// Many established, authenticated (one round trip each), idle sessions.
pub fn idle(env: &Env, target: &Target) -> Result<IdleRow, String> {
    let o = &env.opts;
    // Descriptors per session in the fullest process: a target in direct mode holds the
    // client's and the DC's socket, and so does this process (client + echo DC).
    let per = if target.mode().is_me() { 1 } else { 2 };
    let n = o.idle_sessions_fitting(per);
    if n < o.idle_sessions {
        eprintln!(
            "idle        {}: {n} sessions, not {}: descriptor limit {}",
            target.name, o.idle_sessions, o.nofile
        );
    }
    let mut run = targets::start(env, target, Echo::Decrypted)?;
    let pid = run.pid();
    let base_rss_kib = sys::tree_rss_kib(pid);
    let ep = run.endpoint.clone();
    let frame = Arc::new(frames(ep.tag(), 128, 1));
    let row = env.load.block_on(async {
        let t0 = Instant::now();
        let (conns, errs) = connect_many(&ep, n, o.idle_concurrency, Some(frame)).await;
        let setup_secs = t0.elapsed().as_secs_f64();
        // Let the last handshakes' garbage be freed before reading the resident set.
        tokio::time::sleep(o.idle_settle).await;
        let c0 = (Instant::now(), sys::tree_cpu(pid));
        tokio::time::sleep(o.idle_window).await;
        let c1 = (Instant::now(), sys::tree_cpu(pid));
        let rss_kib = sys::tree_rss_kib(pid);
        let row = IdleRow {
            sessions: conns.len(),
            requested: n,
            failed: errs.len(),
            first_error: errs.first().cloned(),
            setup_secs,
            base_rss_kib,
            rss_kib,
            idle_cpu_pct: c1.1.since(&c0.1).total() / (c1.0 - c0.0).as_secs_f64() * 100.0,
        };
        drop(conns);
        row
    });
    check_alive(&mut run)?;
    if row.sessions == 0 {
        return Err(format!(
            "no session established: {}",
            row.first_error.as_deref().unwrap_or("")
        ));
    }
    Ok(row)
}

/// New connections per second: connect, handshake, one round trip, close, in parallel loops.
pub fn handshakes(env: &Env, target: &Target) -> Result<HsRow, String> {
    let o = &env.opts;
    let mut run = targets::start(env, target, Echo::Decrypted)?;
    let pid = run.pid();
    let ep = run.endpoint.clone();
    let frame = Arc::new(frames(ep.tag(), 128, 1));
    let row = env.load.block_on(async {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let first_error = Arc::new(Mutex::new(None::<String>));
        let stop = Arc::new(AtomicBool::new(false));
        let mut set = JoinSet::new();
        for _ in 0..o.hs_parallel {
            let (ep, frame, ok, failed, first_error, stop) = (
                ep.clone(),
                frame.clone(),
                ok.clone(),
                failed.clone(),
                first_error.clone(),
                stop.clone(),
            );
            set.spawn(async move {
                while !stop.load(Relaxed) {
                    let step = async {
                        let (mut r, mut w) = connect(&ep).await?;
                        round_trip(&mut r, &mut w, &frame).await?;
                        Ok::<(), std::io::Error>(())
                    };
                    let res = match timeout(STEP_LIMIT, step).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err("timed out".to_string()),
                    };
                    match res {
                        Ok(()) => {
                            ok.fetch_add(1, Relaxed);
                        }
                        Err(e) => {
                            failed.fetch_add(1, Relaxed);
                            first_error.lock().expect("lock").get_or_insert(e);
                            // Do not spin on a refusing target.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            });
        }
        tokio::time::sleep(o.warmup).await;
        let (ok0, f0, s0) = (ok.load(Relaxed), failed.load(Relaxed), Sample::take(pid));
        tokio::time::sleep(o.hs_duration).await;
        let (ok1, f1, s1) = (ok.load(Relaxed), failed.load(Relaxed), Sample::take(pid));
        stop.store(true, Relaxed);
        set.abort_all();
        while set.join_next().await.is_some() {}
        let (secs, cpu) = s0.until(&s1);
        let first_error = first_error.lock().expect("lock").clone();
        HsRow {
            parallel: o.hs_parallel,
            secs,
            ok: ok1 - ok0,
            failed: f1 - f0,
            first_error,
            cpu,
        }
    });
    check_alive(&mut run)?;
    if row.ok == 0 {
        return Err(format!(
            "no handshake completed: {}",
            row.first_error.as_deref().unwrap_or("")
        ));
    }
    Ok(row)
}

/// A timed round trip in microseconds, or what went wrong.
fn micros(
    what: &str,
    d: Result<std::io::Result<Duration>, tokio::time::error::Elapsed>,
) -> Result<f64, String> {
    match d {
        Ok(Ok(d)) => Ok(d.as_secs_f64() * 1e6),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: round trip timed out")),
    }
}

/// Nearest-rank percentile of sorted values.
pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Round trips through the target and straight to the DC, interleaved one for one so
/// both see the same machine noise. `loaded`: each round sends a `--packet` frame and the
/// small one right behind it in one write, and is timed until the small one's echo (a
/// message sent while data is in flight, where Nagle made it wait for an ACK).
pub fn latency(env: &Env, target: &Target, loaded: bool) -> Result<LatRow, String> {
    let o = &env.opts;
    let mut run = targets::start(env, target, Echo::Decrypted)?;
    let (ep, straight) = (run.endpoint.clone(), run.straight.clone());
    let row = env.load.block_on(async {
        let step = |ep: Endpoint| async move {
            timeout(STEP_LIMIT, connect(&ep))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())
        };
        let (mut tr, mut tw) = step(ep.clone()).await?;
        let (mut br, mut bw) = step(straight.clone()).await?;
        let round = |tag| {
            let mut f = if loaded {
                frames(tag, o.packet, 1)
            } else {
                Vec::new()
            };
            f.extend(frames(tag, o.lat_packet, 1));
            f
        };
        let (tf, bf, n) = (round(ep.tag()), round(straight.tag()), 1 + loaded as usize);
        let warm = (o.lat_rounds / 10).clamp(10, 100);
        let (mut t, mut b) = (Vec::new(), Vec::new());
        for i in 0..warm + o.lat_rounds {
            let x = micros(
                "straight",
                timeout(STEP_LIMIT, round_trip_frames(&mut br, &mut bw, &bf, n)).await,
            )?;
            let y = micros(
                "target",
                timeout(STEP_LIMIT, round_trip_frames(&mut tr, &mut tw, &tf, n)).await,
            )?;
            if i >= warm {
                b.push(x);
                t.push(y);
            }
        }
        t.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        Ok::<_, String>(LatRow {
            rounds: o.lat_rounds,
            p50: percentile(&t, 50.0),
            p99: percentile(&t, 99.0),
            straight_p50: percentile(&b, 50.0),
            straight_p99: percentile(&b, 99.0),
        })
    })?;
    check_alive(&mut run)?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_shared_out_but_not_below_two_frames() {
        assert_eq!(per_conn_window(1 << 20, 1), 1 << 20);
        assert_eq!(per_conn_window(1 << 20, 16), 1 << 20);
        assert_eq!(per_conn_window(1 << 20, 256), 128 << 10);
        assert_eq!(per_conn_window(1 << 20, 64), 512 << 10);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
