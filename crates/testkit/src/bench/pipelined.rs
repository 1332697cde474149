//! The pipelined scenario: each connection sends a window of a few large frames in one go
//! (`--pipe-frames` × `--packet`, dual-run's 4 × 64 KiB by default), waits for all their
//! echoes, and starts the next window. Unlike the throughput scenario's sliding megabyte,
//! every window ends with the pipe drained, so a sender that holds a partial segment until
//! the previous one is ACKed (Nagle) pays that wait once per window: this is the scenario
//! that would have caught the missing `TCP_NODELAY` on client sockets.
//!
//! Reported per connection count: Gbit/s (both directions), CPU per GB, and the time per
//! window (p50, p99).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio::time::timeout;

use super::client::{frames, round_trip_frames};
use super::fakes::Echo;
use super::opts::Opts;
use super::scenarios::{check_alive, connect_many, percentile, Parts};
use super::sys;
use super::targets::{self, Env, Running, Target, FAKE_THREADS, LOAD_THREADS};

/// Longest one window's round trip may take before the connection counts as broken.
const WINDOW_LIMIT: Duration = Duration::from_secs(10);

/// One connection count's result.
#[derive(Clone, Debug)]
pub struct PipeRow {
    pub conns: usize,
    pub secs: f64,
    /// Windows completed in the measurement.
    pub windows: u64,
    /// Stream bytes moved in the measurement, both directions.
    pub bytes: u64,
    pub cpu: Parts,
    /// Time per window, microseconds.
    pub p50_us: f64,
    pub p99_us: f64,
    /// Connections whose window failed or timed out during the run.
    pub broken: usize,
}

impl PipeRow {
    pub fn gbit_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.secs / 1e9
    }
    pub fn per_gb(&self) -> f64 {
        self.cpu.target.total() / (self.bytes as f64 / 1e9)
    }
}

/// Every connection count of `--pipe-conns` against one target process.
pub fn pipelined(env: &Env, target: &Target) -> Vec<(usize, Result<PipeRow, String>)> {
    let o = &env.opts;
    let mut run = match targets::start(env, target, Echo::Decrypted) {
        Ok(r) => r,
        Err(e) => return o.pipe_conns.iter().map(|&n| (n, Err(e.clone()))).collect(),
    };
    let mut out = Vec::new();
    for &n in &o.pipe_conns {
        let r = env.load.block_on(point(&run, n, o));
        let r = r.and_then(|row| check_alive(&mut run).map(|_| row));
        out.push((n, r));
    }
    out
}

/// What the connections' loops share.
#[derive(Default)]
struct Tally {
    measuring: AtomicBool,
    windows: AtomicU64,
    bytes: AtomicU64,
    times_us: Mutex<Vec<f64>>,
}

async fn point(run: &Running, n: usize, o: &Opts) -> Result<PipeRow, String> {
    let ep = &run.endpoint;
    let window = Arc::new(frames(ep.tag(), o.packet, o.pipe_frames));
    let first = Arc::new(frames(ep.tag(), 128, 1));
    let (conns, errs) = connect_many(ep, n, 64, Some(first)).await;
    if conns.is_empty() {
        return Err(format!(
            "no connection: {}",
            errs.first().map_or("", String::as_str)
        ));
    }
    let tally = Arc::new(Tally::default());
    let mut set = JoinSet::new();
    for (mut r, mut w) in conns {
        let (window, tally, k) = (window.clone(), tally.clone(), o.pipe_frames);
        set.spawn(async move {
            loop {
                let d = timeout(WINDOW_LIMIT, round_trip_frames(&mut r, &mut w, &window, k))
                    .await
                    .map_err(|_| std::io::Error::other("window timed out"))??;
                if tally.measuring.load(Relaxed) {
                    tally.windows.fetch_add(1, Relaxed);
                    tally.bytes.fetch_add(2 * window.len() as u64, Relaxed);
                    tally
                        .times_us
                        .lock()
                        .expect("lock")
                        .push(d.as_secs_f64() * 1e6);
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        });
    }
    tokio::time::sleep(o.warmup).await;
    let sample = || Parts {
        target: sys::tree_cpu(run.pid()),
        load: sys::threads_cpu(LOAD_THREADS),
        fakes: sys::threads_cpu(FAKE_THREADS),
    };
    let (t0, c0) = (Instant::now(), sample());
    tally.measuring.store(true, Relaxed);
    tokio::time::sleep(o.duration).await;
    tally.measuring.store(false, Relaxed);
    let (secs, c1) = (t0.elapsed().as_secs_f64(), sample());
    let mut broken = 0;
    while set.try_join_next().is_some() {
        broken += 1;
    }
    set.abort_all();
    while set.join_next().await.is_some() {}
    let mut times = std::mem::take(&mut *tally.times_us.lock().expect("lock"));
    if times.is_empty() {
        return Err(format!("no window completed in {secs:.1} s"));
    }
    times.sort_by(f64::total_cmp);
    Ok(PipeRow {
        conns: n,
        secs,
        windows: tally.windows.load(Relaxed),
        bytes: tally.bytes.load(Relaxed),
        cpu: Parts {
            target: c1.target.since(&c0.target),
            load: c1.load.since(&c0.load),
            fakes: c1.fakes.since(&c0.fakes),
        },
        p50_us: percentile(&times, 50.0),
        p99_us: percentile(&times, 99.0),
        broken,
    })
}
