//! The outage a drill step counts, and what explains it, from the client sessions that
//! arrived while the step ran.
//!
//! Each session is placed at one instant ([`Attempt::when`]): a served one at its arrival
//! ("the service was up when it came"); a failed one when it failed: a session cut, or
//! refused at once, when that happened (a stop in progress); a session left without any
//! answer for longer than [`STALL`], at its arrival (its packet went unanswered there: a
//! process that had just started dropped it, and the connection was closed seconds later,
//! perhaps by the next step's stop). The outage runs from the first failure to the arrival
//! of the first served session after the last failure (the service is back). How long a
//! failed session waited is not outage: it is reported with the failure. Without a served
//! arrival after the last failure, the outage runs to the end of the last failed session
//! (the most it can be).
//!
//! What this is not: the traffic (`traffic`) or the guard on it (`drill`).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::probe::RefusedKind;
use crate::procs::ms;

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused(RefusedKind),
    Broken,
}

/// One client session of the traffic.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub start: Instant,
    pub end: Instant,
    pub outcome: Outcome,
    pub error: Option<String>,
}

/// A refused session that waited longer than this without an answer failed at its arrival.
pub const STALL: Duration = Duration::from_millis(500);

impl Attempt {
    /// The instant the session counts at (see the module doc).
    pub fn when(&self) -> Instant {
        match self.outcome {
            Outcome::Ok => self.start,
            Outcome::Refused(_) if self.end.saturating_duration_since(self.start) > STALL => {
                self.start
            }
            Outcome::Refused(_) | Outcome::Broken => self.end,
        }
    }
}

/// Failed sessions of one kind.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Failures {
    /// `refused: connect`, `refused: closed or reset`, `refused: no answer`, `broken`.
    pub what: &'static str,
    pub count: u64,
    /// The first and the last of them ([`Attempt::when`]), ms after the step began.
    pub first_ms: f64,
    pub last_ms: f64,
    /// The longest any of them waited before it failed.
    pub longest_wait_ms: f64,
    /// The error of the first.
    pub example: String,
}

/// The outage of a step.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Outage {
    /// From the first failed arrival to the service being back (see the module doc).
    pub ms: f64,
    /// The first and the last failure ([`Attempt::when`]), ms after the step began.
    pub first_failure_ms: f64,
    pub last_failure_ms: f64,
    /// Arrival of the first served session after the last failure, ms after the step
    /// began; `None`: none came in the step.
    pub service_back_ms: Option<f64>,
    pub failed: u64,
    /// What failed, by kind, in the order first seen.
    pub what: Vec<Failures>,
}

fn kind(o: Outcome) -> Option<&'static str> {
    match o {
        Outcome::Ok => None,
        Outcome::Refused(RefusedKind::Connect) => Some("refused: connect"),
        Outcome::Refused(RefusedKind::Reset) => Some("refused: closed or reset"),
        Outcome::Refused(RefusedKind::NoAnswer) => Some("refused: no answer"),
        Outcome::Broken => Some("broken"),
    }
}

/// The outage among `attempts` (sorted by [`Attempt::when`]) of a step that began at
/// `from`; `None` when every session was served.
pub fn of(attempts: &[&Attempt], from: Instant) -> Option<Outage> {
    let at = |t: Instant| round(ms(t.saturating_duration_since(from)));
    let failed: Vec<&&Attempt> = attempts
        .iter()
        .filter(|a| a.outcome != Outcome::Ok)
        .collect();
    let (first, last) = (failed.first()?, failed.last()?);
    let back = attempts
        .iter()
        .find(|a| a.outcome == Outcome::Ok && a.start > last.when())
        .map(|a| a.start);
    let end = back.unwrap_or_else(|| failed.iter().map(|a| a.end).max().unwrap_or(last.end));
    let mut what: Vec<Failures> = Vec::new();
    for a in &failed {
        let Some(k) = kind(a.outcome) else { continue };
        let wait = round(ms(a.end.saturating_duration_since(a.start)));
        match what.iter_mut().find(|f| f.what == k) {
            Some(f) => {
                f.count += 1;
                f.last_ms = at(a.when());
                f.longest_wait_ms = f.longest_wait_ms.max(wait);
            }
            None => what.push(Failures {
                what: k,
                count: 1,
                first_ms: at(a.when()),
                last_ms: at(a.when()),
                longest_wait_ms: wait,
                example: a.error.clone().unwrap_or_default(),
            }),
        }
    }
    Some(Outage {
        ms: round(ms(end.saturating_duration_since(first.when()))),
        first_failure_ms: at(first.when()),
        last_failure_ms: at(last.when()),
        service_back_ms: back.map(at),
        failed: failed.len() as u64,
        what,
    })
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Outage {
    /// One paragraph for the report: when the failures arrived, when the service was back,
    /// what failed (with one error each and the longest wait).
    pub fn explain(&self) -> String {
        let back = self.service_back_ms.map_or_else(
            || "no session was served after them in this step".to_string(),
            |b| format!("served again from +{b:.1} ms"),
        );
        let kinds: Vec<String> = self
            .what
            .iter()
            .map(|f| {
                format!(
                    "{} {} (+{:.1}..+{:.1} ms, waited up to {:.0} ms: \"{}\")",
                    f.count, f.what, f.first_ms, f.last_ms, f.longest_wait_ms, f.example
                )
            })
            .collect();
        format!(
            "{:.1} ms: {} session(s) failed from +{:.1} to +{:.1} ms after the step began; {back}. What failed: {}",
            self.ms,
            self.failed,
            self.first_failure_ms,
            self.last_failure_ms,
            kinds.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(t0: Instant, start_ms: u64, len_ms: u64, outcome: Outcome) -> Attempt {
        let start = t0 + Duration::from_millis(start_ms);
        Attempt {
            start,
            end: start + Duration::from_millis(len_ms),
            outcome,
            error: (outcome != Outcome::Ok).then(|| format!("e{start_ms}")),
        }
    }

    /// The case the drill got wrong: sessions left without an answer by a process that
    /// had just started waited 2 s until the next stop closed them. The outage is the time
    /// arriving clients were not served (10 → 30 ms), not their 2 s wait.
    #[test]
    fn a_long_wait_is_not_outage_but_is_reported() {
        let t0 = Instant::now();
        let no_answer = Outcome::Refused(RefusedKind::Reset);
        let v = [
            at(t0, 0, 5, Outcome::Ok),
            at(t0, 10, 2000, no_answer),
            at(t0, 12, 1, Outcome::Refused(RefusedKind::Connect)),
            at(t0, 20, 2010, no_answer),
            at(t0, 30, 5, Outcome::Ok),
            at(t0, 40, 5, Outcome::Ok),
        ];
        let refs: Vec<&Attempt> = v.iter().collect();
        let o = of(&refs, t0).unwrap();
        assert_eq!(o.ms, 20.0);
        assert_eq!((o.first_failure_ms, o.last_failure_ms), (10.0, 20.0));
        assert_eq!(o.service_back_ms, Some(30.0));
        assert_eq!(o.failed, 3);
        assert_eq!(o.what[0].what, "refused: closed or reset");
        assert_eq!(o.what[0].count, 2);
        assert_eq!(o.what[0].longest_wait_ms, 2010.0);
        assert_eq!(o.what[1].what, "refused: connect");
        let text = o.explain();
        assert!(text.contains("from +10.0 to +20.0 ms"), "{text}");
        assert!(text.contains("waited up to 2010 ms"), "{text}");
    }

    /// A session cut by a stop counts when it was cut; one that waited long for its first
    /// answer counts at its arrival.
    #[test]
    fn failures_count_when_they_happened() {
        let t0 = Instant::now();
        let cut = at(t0, 0, 40, Outcome::Broken);
        assert_eq!(cut.when(), cut.end);
        let quick = at(t0, 0, 3, Outcome::Refused(RefusedKind::Reset));
        assert_eq!(quick.when(), quick.end);
        let unanswered = at(t0, 0, 2000, Outcome::Refused(RefusedKind::Reset));
        assert_eq!(unanswered.when(), unanswered.start);
        let served = at(t0, 0, 40, Outcome::Ok);
        assert_eq!(served.when(), served.start);
    }

    #[test]
    fn without_a_served_arrival_after_it_the_outage_runs_to_the_last_end() {
        let t0 = Instant::now();
        let no_answer = Outcome::Refused(RefusedKind::NoAnswer);
        let v = [at(t0, 0, 5, Outcome::Ok), at(t0, 10, 3000, no_answer)];
        let refs: Vec<&Attempt> = v.iter().collect();
        let o = of(&refs, t0).unwrap();
        assert_eq!(o.ms, 3000.0);
        assert_eq!(o.service_back_ms, None);
        assert!(of(&refs[..1], t0).is_none(), "all served: no outage");
    }
}
