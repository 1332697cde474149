//! What the master of `-M N` workers prints on `/stats`: the workers' counter snapshots
//! summed, as C's master sums its workers' shared-memory counters (`compute_stats_sum`),
//! and the one-process view of the ME pool that C's master shows in its `connections`
//! section.
//!
//! C's master holds an ME pool of its own that serves no client; its `ready_targets`
//! and friends describe that pool. Ours holds none, so it shows what one worker holds: the
//! fewest ready targets of any worker (an alert on 0 fires when some worker has none), the
//! most targets. Every counter and every other gauge is the sum over the workers.
//!
//! What this is not: the collection itself (`workers::Master::collect` asks the workers)
//! or the page (`c_text`).

use super::counters::Stats;
use super::view::PoolView;

/// The sum of the workers' snapshots and one worker's pool (all zeros with no snapshot).
pub fn combine(snapshots: &[Vec<u64>], secrets: usize) -> (Stats, PoolView) {
    let total = Stats::with_secrets(secrets);
    let mut pool: Option<PoolView> = None;
    for snap in snapshots {
        total.absorb(snap);
        let one = Stats::with_secrets(secrets);
        one.absorb(snap);
        let p = PoolView {
            targets: Stats::get(&one.me_targets),
            declared_targets: Stats::get(&one.me_targets),
            ready_targets: Stats::get(&one.me_ready_targets),
        };
        pool = Some(match pool {
            None => p,
            Some(q) => PoolView {
                targets: q.targets.max(p.targets),
                declared_targets: q.declared_targets.max(p.declared_targets),
                ready_targets: q.ready_targets.min(p.ready_targets),
            },
        });
    }
    (total, pool.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn worker(targets: u64, ready: u64, conns: u64, accepted: u64) -> Vec<u64> {
        let s = Stats::with_secrets(1);
        s.me_targets.store(targets, Relaxed);
        s.me_ready_targets.store(ready, Relaxed);
        s.me_ready_connections.store(conns, Relaxed);
        s.accepted.store(accepted, Relaxed);
        s.snapshot()
    }

    #[test]
    fn totals_are_sums_and_the_pool_is_the_weakest_worker() {
        let (total, pool) = combine(&[worker(2, 2, 8, 5), worker(2, 1, 4, 7)], 1);
        assert_eq!(Stats::get(&total.me_targets), 4);
        assert_eq!(Stats::get(&total.me_ready_targets), 3);
        assert_eq!(Stats::get(&total.me_ready_connections), 12);
        assert_eq!(Stats::get(&total.accepted), 12);
        assert_eq!(
            pool,
            PoolView {
                targets: 2,
                declared_targets: 2,
                ready_targets: 1
            }
        );
        let (none, empty) = combine(&[], 1);
        assert_eq!(Stats::get(&none.me_targets), 0);
        assert_eq!(empty, PoolView::default());
    }
}
