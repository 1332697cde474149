//! The process-wide budget for what ME-mode sessions hold (`--msg-buffers-size`, C's
//! message-buffer limit): the running total, the sessions that count against it, and the
//! shedding when it is exceeded.
//!
//! Over the budget, the sessions that hold the most are shed (closed at once, their queues
//! dropped, `connections_failed_lru`) until the total is back under seven eighths of the
//! budget. A client that stops reading keeps collecting answers, so it is the one that
//! holds the most; a session that reads holds little. (Shedding the session whose answer
//! happens to arrive next, as before, closed the readers and kept the hoarders: they get
//! no more answers.) The scan over all sessions runs only when the total is over the
//! budget, and the margin it sheds to makes that rare: an attacker must bring an eighth
//! of the budget again for the next scan. One scan runs at a time.
//!
//! Not here: what a session is charged for (`inbox.rs`); the per-session cap
//! ([`super::inbox::MAX_QUEUED`]), checked where answers are queued (`conn.rs`).

use super::inbox::{CloseCause, Inbox};
use crate::stats::Stats;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tracing::debug;

/// Registry shards: sessions start and end on every thread; one lock would be contended.
const SHARDS: usize = 16;

/// The budget and the sessions it covers.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    /// The total is `stats.me_queued_bytes` (a gauge on /stats); sheds count in
    /// `stats.failed_lru`.
    stats: Arc<Stats>,
    shards: [Mutex<HashMap<u64, Arc<Inbox>>>; SHARDS],
    next_id: AtomicU64,
    shedding: AtomicBool,
}

/// A session's inbox, counted by the budget for as long as this lives. Dropping it ends
/// the session's charges (the inbox is closed) and its registration.
#[derive(Debug)]
pub struct Enrolled {
    pub inbox: Arc<Inbox>,
    id: u64,
}

impl Drop for Enrolled {
    fn drop(&mut self) {
        self.inbox.close();
        self.inbox.budget().unregister(self.id);
    }
}

impl Budget {
    pub fn new(limit: u64, stats: Arc<Stats>) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            stats,
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(0),
            shedding: AtomicBool::new(false),
        })
    }

    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Inbox>>> {
        self.shards[id as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A new session's inbox, counted from now on.
    pub fn enroll(self: &Arc<Self>) -> Enrolled {
        let inbox = Arc::new(Inbox::new(self.clone()));
        let id = self.next_id.fetch_add(1, Relaxed);
        self.shard(id).insert(id, inbox.clone());
        Enrolled { inbox, id }
    }

    fn unregister(&self, id: u64) {
        self.shard(id).remove(&id);
    }

    pub fn add(&self, bytes: usize) {
        self.stats.me_queued_bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub fn sub(&self, bytes: usize) {
        self.stats.me_queued_bytes.fetch_sub(bytes as u64, Relaxed);
    }

    /// Bytes held by all sessions now.
    pub fn total(&self) -> u64 {
        self.stats.me_queued_bytes.load(Relaxed)
    }

    pub fn over(&self) -> bool {
        self.total() > self.limit
    }

    /// When over the budget, sheds the sessions that hold the most until the total is
    /// under seven eighths of it. Returns how many were shed (0 also when another thread
    /// is shedding right now).
    pub fn enforce(&self) -> usize {
        if !self.over() || self.shedding.swap(true, Relaxed) {
            return 0;
        }
        let shed = self.shed_down_to(self.limit - self.limit / 8);
        self.shedding.store(false, Relaxed);
        shed
    }

    fn shed_down_to(&self, target: u64) -> usize {
        let all: Vec<Arc<Inbox>> = self
            .shards
            .iter()
            .flat_map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.values().cloned().collect::<Vec<_>>()
            })
            .collect();
        let mut by_cost: Vec<(usize, Arc<Inbox>)> = all
            .into_iter()
            .map(|i| (i.charged(), i))
            .filter(|(c, _)| *c > 0)
            .collect();
        by_cost.sort_unstable_by_key(|(c, _)| std::cmp::Reverse(*c));
        let mut total = self.total();
        let mut shed = 0;
        for (cost, inbox) in by_cost {
            if total <= target {
                break;
            }
            if inbox.shed(CloseCause::Budget) {
                Stats::inc(&self.stats.failed_lru);
                total = total.saturating_sub(cost as u64);
                shed += 1;
            }
        }
        debug!(
            "over --msg-buffers-size ({} bytes): shed the {shed} session(s) holding the most",
            self.limit
        );
        shed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middle::inbox::{Answer, ToClient};

    fn answer(inbox: &Inbox, len: usize) {
        inbox
            .send(ToClient::Data(Answer::new(&vec![0; len])))
            .unwrap();
    }

    /// The sessions holding the most are shed, the others keep everything, and the total
    /// ends under seven eighths of the budget.
    #[test]
    fn over_the_budget_the_biggest_holders_are_shed() {
        let stats = Arc::new(Stats::default());
        let budget = Budget::new(1 << 20, stats.clone());
        let readers: Vec<Enrolled> = (0..20).map(|_| budget.enroll()).collect();
        let hoarders: Vec<Enrolled> = (0..3).map(|_| budget.enroll()).collect();
        for r in &readers {
            answer(&r.inbox, 10_000);
        }
        assert_eq!(budget.enforce(), 0, "under the budget nothing happens");
        for h in &hoarders {
            for _ in 0..6 {
                answer(&h.inbox, 64_000);
            }
        }
        assert!(budget.over());
        let shed = budget.enforce();
        assert!((1..=3).contains(&shed), "{shed}");
        assert!(budget.total() <= (1 << 20) - (1 << 17));
        for r in &readers {
            assert!(!matches!(r.inbox.try_recv(), Some(ToClient::Close(_))));
        }
        let closed = hoarders
            .iter()
            .filter(|h| {
                matches!(
                    h.inbox.try_recv(),
                    Some(ToClient::Close(CloseCause::Budget))
                )
            })
            .count();
        assert_eq!(closed, shed);
        assert_eq!(Stats::get(&stats.failed_lru), shed as u64);
        drop(readers);
        drop(hoarders);
        assert_eq!(budget.total(), 0, "every charge is given back");
        assert!(budget.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }
}
