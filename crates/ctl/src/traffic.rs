//! Client traffic that keeps running while the drill switches binaries: `concurrency` loops,
//! each opening a session (connect, handshake with `resPQ`, a few echoes), closing it and
//! starting the next after a short pause. Every attempt is recorded with its start and end,
//! so each step of the drill can count what happened to clients while it ran.
//!
//! What it is not: a load test. The rate is modest on purpose: it is there to see gaps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::probe::{self, Failure, RefusedKind, Target};
use crate::procs::ms;

#[derive(Clone, Debug)]
enum Outcome {
    Ok,
    Refused(RefusedKind),
    Broken,
}

#[derive(Clone, Debug)]
struct Attempt {
    start: Instant,
    end: Instant,
    outcome: Outcome,
    error: Option<String>,
}

/// What clients saw in a time window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Seen {
    pub sessions: u64,
    pub ok: u64,
    /// Never served: connect failed, reset or closed before the first answer, no answer.
    pub refused: u64,
    pub refused_connect: u64,
    pub refused_reset: u64,
    pub refused_no_answer: u64,
    /// Served, then cut or left without answers.
    pub broken: u64,
    /// From the start of the first failed attempt to the end of the last one (0: none).
    pub outage_ms: f64,
    /// The first few errors.
    pub errors: Vec<String>,
}

/// Running traffic.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Traffic {
    /// Starts `concurrency` loops over `targets` (round-robin per loop).
    pub fn start(
        targets: Vec<Target>,
        concurrency: usize,
        round_trips: usize,
        pause: Duration,
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..concurrency.max(1) {
            let (stop, attempts, targets) = (stop.clone(), attempts.clone(), targets.clone());
            tasks.spawn(async move {
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    let t = &targets[n % targets.len()];
                    n += 1;
                    let start = Instant::now();
                    let res = probe::session(t, round_trips, 128, Duration::from_secs(3)).await;
                    let (outcome, error) = match res {
                        Ok(_) => (Outcome::Ok, None),
                        Err(Failure::Refused(k, e)) => (Outcome::Refused(k), Some(e)),
                        Err(Failure::Broken(e)) => (Outcome::Broken, Some(e)),
                    };
                    attempts.lock().expect("attempts").push(Attempt {
                        start,
                        end: Instant::now(),
                        outcome,
                        error,
                    });
                    tokio::time::sleep(pause).await;
                }
            });
        }
        Traffic {
            stop,
            attempts,
            tasks,
        }
    }

    /// Attempts that ended in `[from, to)`.
    pub fn seen(&self, from: Instant, to: Instant) -> Seen {
        let a = self.attempts.lock().expect("attempts");
        let mut s = Seen::default();
        let mut first_fail: Option<Instant> = None;
        let mut last_fail: Option<Instant> = None;
        for x in a.iter().filter(|x| x.end >= from && x.end < to) {
            s.sessions += 1;
            match x.outcome {
                Outcome::Ok => s.ok += 1,
                Outcome::Refused(k) => {
                    s.refused += 1;
                    match k {
                        RefusedKind::Connect => s.refused_connect += 1,
                        RefusedKind::Reset => s.refused_reset += 1,
                        RefusedKind::NoAnswer => s.refused_no_answer += 1,
                    }
                }
                Outcome::Broken => s.broken += 1,
            }
            if !matches!(x.outcome, Outcome::Ok) {
                first_fail = Some(first_fail.map_or(x.start, |f| f.min(x.start)));
                last_fail = Some(last_fail.map_or(x.end, |l| l.max(x.end)));
                if s.errors.len() < 5 {
                    if let Some(e) = &x.error {
                        s.errors.push(e.clone());
                    }
                }
            }
        }
        if let (Some(f), Some(l)) = (first_fail, last_fail) {
            s.outage_ms = (ms(l.saturating_duration_since(f)) * 1000.0).round() / 1000.0;
        }
        s
    }

    /// Stops the loops (each finishes its current session).
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
    }
}
