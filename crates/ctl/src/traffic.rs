//! Client traffic that keeps running while the drill switches binaries: `streams` arrival
//! streams, each starting a session (connect, handshake with `resPQ`, a few echoes) every
//! `period`, whether or not its previous session has ended. Clients arrive that way: one
//! that waits for an answer does not hold the next one back. (Closed loops, which wait for
//! each session before the next, let a few sessions left without an answer stall every
//! loop for the probe's whole timeout: the drill then saw a step with no sessions at all
//! and counted the client's timeout as the outage of the next step.)
//!
//! Every attempt is recorded with its start and end. A step is judged on the sessions that
//! count in its window ([`Recorded::seen`], at [`Attempt::when`]: served ones at arrival,
//! failed ones when they failed, unanswered ones at arrival), once they have all ended: a
//! session that arrived during one step, got no answer there, and was closed during the
//! next belongs to the first; one cut by the next step's stop belongs to that step.
//!
//! What it is not: a load test. The rate is modest on purpose (40 arrivals a second per
//! stream by default): it is there to see gaps.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::outage::{self, Attempt, Outage, Outcome};
use crate::probe::{self, Failure, RefusedKind, Target};

/// Sessions one stream may have open at once; an arrival past that is skipped (counted).
pub const MAX_IN_FLIGHT: usize = 256;
/// Each session's limit per step (connect, first answer, each echo).
pub const SESSION_LIMIT: Duration = Duration::from_secs(3);

/// What clients saw, for the sessions that count in a time window.
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
    /// Arrivals skipped because a stream had [`MAX_IN_FLIGHT`] sessions open.
    pub skipped: u64,
    /// How long arriving clients were not served: see [`Outage`] (0: no failure).
    pub outage_ms: f64,
    /// When the failures arrived and what they were; `None` without failures.
    pub outage: Option<Outage>,
}

/// Running traffic.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    skipped: Arc<Mutex<Vec<Instant>>>,
    tasks: tokio::task::JoinSet<()>,
}

/// The attempts of a finished run.
pub struct Recorded {
    attempts: Vec<Attempt>,
    skipped: Vec<Instant>,
}

impl Traffic {
    /// Starts `streams` arrival streams over `targets` (round-robin per stream), each
    /// starting a session every `period`; the streams are spread over the period.
    pub fn start(
        targets: Vec<Target>,
        streams: usize,
        round_trips: usize,
        period: Duration,
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let skipped = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        let streams = streams.max(1);
        for i in 0..streams {
            let stream = Stream {
                stop: stop.clone(),
                attempts: attempts.clone(),
                skipped: skipped.clone(),
                targets: targets.clone(),
                round_trips,
            };
            let offset = period.mul_f64(i as f64 / streams as f64);
            tasks.spawn(stream.run(i, offset, period));
        }
        Traffic {
            stop,
            attempts,
            skipped,
            tasks,
        }
    }

    /// Stops the arrivals and waits until every session started has ended.
    pub async fn stop(mut self) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        Recorded {
            attempts: take(&self.attempts),
            skipped: take(&self.skipped),
        }
    }
}

fn take<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *m.lock().expect("traffic"))
}

/// One arrival stream.
struct Stream {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    skipped: Arc<Mutex<Vec<Instant>>>,
    targets: Vec<Target>,
    round_trips: usize,
}

impl Stream {
    async fn run(self, first: usize, offset: Duration, period: Duration) {
        let in_flight = Arc::new(AtomicU64::new(0));
        let mut sessions = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = first;
        while !self.stop.load(Ordering::Relaxed) {
            tick.tick().await;
            // Reap the finished ones so the set does not grow.
            while sessions.try_join_next().is_some() {}
            if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT as u64 {
                self.skipped.lock().expect("traffic").push(Instant::now());
                continue;
            }
            let t = self.targets[n % self.targets.len()].clone();
            n += 1;
            let (attempts, in_flight, rts) =
                (self.attempts.clone(), in_flight.clone(), self.round_trips);
            in_flight.fetch_add(1, Ordering::Relaxed);
            sessions.spawn(async move {
                let start = Instant::now();
                let res = probe::session(&t, rts, 128, SESSION_LIMIT).await;
                let (outcome, error) = match res {
                    Ok(_) => (Outcome::Ok, None),
                    Err(Failure::Refused(k, e)) => (Outcome::Refused(k), Some(e)),
                    Err(Failure::Broken(e)) => (Outcome::Broken, Some(e)),
                };
                attempts.lock().expect("traffic").push(Attempt {
                    start,
                    end: Instant::now(),
                    outcome,
                    error,
                });
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        while sessions.join_next().await.is_some() {}
    }
}

impl Recorded {
    /// The sessions that count in `[from, to)` ([`Attempt::when`]).
    pub fn seen(&self, from: Instant, to: Instant) -> Seen {
        let mut within: Vec<&Attempt> = self
            .attempts
            .iter()
            .filter(|a| a.when() >= from && a.when() < to)
            .collect();
        within.sort_by_key(|a| a.when());
        let mut s = Seen {
            skipped: self
                .skipped
                .iter()
                .filter(|t| **t >= from && **t < to)
                .count() as u64,
            ..Seen::default()
        };
        for a in &within {
            s.sessions += 1;
            match a.outcome {
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
        }
        s.outage = outage::of(&within, from);
        s.outage_ms = s.outage.as_ref().map_or(0.0, |o| o.ms);
        s
    }
}
