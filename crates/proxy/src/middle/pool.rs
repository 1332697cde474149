//! The ME connection pool: for every distinct ME address of the config, a few long-lived
//! connections (C: `min_connections`, default 4, per address and process; spec §1.10), each
//! kept up by its own slot task that redials with back-off (1 s base, ×1.5 plus jitter, capped
//! near 30 s, reset once a connection is up).
//!
//! Routing (spec §1.9): the client's DC id picks a cluster (exact id, else the `default`
//! cluster); a random target of the cluster that has a ready connection; a random ready
//! connection of that target.
//!
//! Reload: [`Pool::apply`] swaps the config; new addresses get slot tasks, removed ones are
//! marked so no new session picks them, and each of their connections closes once its last
//! session has ended (drained).

use super::conn::{self, ConnEnd, Ident, MeConn};
use crate::config::ProxyConfig;
use crate::stats::Stats;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tracing::{debug, info, warn};

/// C's connect + handshake deadline for ME connections.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(3);
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One ME address.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    ready: Mutex<Vec<Arc<MeConn>>>,
    removed: AtomicBool,
    slots: AtomicUsize,
}

impl Target {
    /// A random ready connection, if any (without collecting them: this runs for every
    /// new session).
    fn pick_ready(&self, rng: &mut impl Rng) -> Option<Arc<MeConn>> {
        let ready = self.ready.lock().expect("ready");
        let alive = ready.iter().filter(|c| c.is_alive()).count();
        if alive == 0 {
            return None;
        }
        ready
            .iter()
            .filter(|c| c.is_alive())
            .nth(rng.gen_range(0..alive))
            .cloned()
    }

    /// Ready connections right now.
    pub fn ready_count(&self) -> usize {
        let ready = self.ready.lock().expect("ready");
        ready.iter().filter(|c| c.is_alive()).count()
    }
}

struct State {
    config: Arc<ProxyConfig>,
    targets: HashMap<SocketAddr, Arc<Target>>,
}

/// All ME connections of the process.
pub struct Pool {
    state: RwLock<State>,
    /// Woken whenever a connection becomes ready.
    ready_changed: tokio::sync::Notify,
    ident: RwLock<Ident>,
    stats: Arc<Stats>,
    next_session: AtomicI64,
    next_conn: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool with no targets yet; call [`Pool::apply`] from inside the runtime.
    pub fn new(config: ProxyConfig, ident: Ident, stats: Arc<Stats>) -> Arc<Pool> {
        // Session ids: unique among live sessions; a random non-zero start, then sequential.
        let start = rand::thread_rng().gen_range(1..i64::MAX / 2);
        Arc::new(Pool {
            ready_changed: tokio::sync::Notify::new(),
            state: RwLock::new(State {
                config: Arc::new(config),
                targets: HashMap::new(),
            }),
            ident: RwLock::new(ident),
            stats,
            next_session: AtomicI64::new(start),
            next_conn: AtomicU64::new(1),
        })
    }

    /// A fresh session id (`out_conn_id`).
    pub fn new_session_id(&self) -> i64 {
        self.next_session.fetch_add(1, Relaxed)
    }

    /// Replaces the proxy secret used by connections dialled from now on.
    pub fn set_secret(&self, secret: Option<Arc<Vec<u8>>>) {
        self.ident.write().expect("ident").secret = secret;
    }

    /// Makes `config` the one in force: dials new targets, drains removed ones.
    pub fn apply(self: &Arc<Self>, config: ProxyConfig) {
        let wanted = config.distinct_targets();
        let mut st = self.state.write().expect("state");
        st.config = Arc::new(config);
        let keep: std::collections::HashSet<SocketAddr> =
            wanted.iter().map(|(a, _, _)| *a).collect();
        for (addr, t) in &st.targets {
            if !keep.contains(addr) {
                info!("ME {addr} is no longer in the config: draining");
                t.removed.store(true, Relaxed);
            }
        }
        st.targets.retain(|a, _| keep.contains(a));
        for (addr, min, _max) in wanted {
            let t = st
                .targets
                .entry(addr)
                .or_insert_with(|| {
                    Arc::new(Target {
                        addr,
                        ready: Mutex::new(Vec::new()),
                        removed: AtomicBool::new(false),
                        slots: AtomicUsize::new(0),
                    })
                })
                .clone();
            let want = (min as usize).max(1);
            while t.slots.load(Relaxed) < want {
                t.slots.fetch_add(1, Relaxed);
                tokio::spawn(slot(self.clone(), t.clone()));
            }
        }
    }

    /// A ready connection for DC id `dc`, per the C's routing rule.
    pub fn pick(&self, dc: i16) -> Option<Arc<MeConn>> {
        let st = self.state.read().expect("state");
        let cluster = st.config.lookup(dc)?;
        let mut rng = rand::thread_rng();
        for _ in 0..5 {
            let spec = &cluster.targets[rng.gen_range(0..cluster.targets.len())];
            let Some(t) = st.targets.get(&spec.addr) else {
                continue;
            };
            if let Some(c) = t.pick_ready(&mut rng) {
                return Some(c);
            }
        }
        // Fall back to any target of the cluster with a ready connection.
        cluster
            .targets
            .iter()
            .filter_map(|s| st.targets.get(&s.addr))
            .find_map(|t| t.pick_ready(&mut rng))
    }

    /// Like [`Pool::pick`], but when no connection is ready yet (a process that just
    /// started, or an ME that is reconnecting) waits up to `limit` for one instead of
    /// giving up at once (C drops the packet right away; a client then never gets its
    /// answer, e.g. every client that arrives in a new process's first second).
    pub async fn pick_or_wait(&self, dc: i16, limit: Duration) -> Option<Arc<MeConn>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.ready_changed.notified();
            if let Some(c) = self.pick(dc) {
                return Some(c);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.pick(dc);
            }
        }
    }

    /// (targets, targets with a ready connection, ready connections).
    pub fn counts(&self) -> (usize, usize, usize) {
        let st = self.state.read().expect("state");
        let ready: Vec<usize> = st.targets.values().map(|t| t.ready_count()).collect();
        (
            ready.len(),
            ready.iter().filter(|n| **n > 0).count(),
            ready.iter().sum(),
        )
    }
}

/// Keeps one connection to `t` up until the target is removed and drained.
async fn slot(pool: Arc<Pool>, t: Arc<Target>) {
    let mut backoff = BACKOFF_BASE;
    while !t.removed.load(Relaxed) {
        let id = pool.next_conn.fetch_add(1, Relaxed);
        let ident = pool.ident.read().expect("ident").clone();
        let t0 = std::time::Instant::now();
        let attempt = tokio::time::timeout(
            HANDSHAKE_DEADLINE,
            conn::establish(id, t.addr, &ident, pool.stats.clone()),
        )
        .await;
        match attempt {
            Ok(Ok((c, run))) => {
                pool.stats.connect_latency.observe(t0.elapsed());
                backoff = BACKOFF_BASE;
                t.ready.lock().expect("ready").push(c.clone());
                pool.ready_changed.notify_waiters();
                Stats::inc(&pool.stats.me_connects);
                let end = tokio::select! {
                    end = run => end,
                    _ = drained(&t, &c) => ConnEnd::Dropped,
                };
                t.ready
                    .lock()
                    .expect("ready")
                    .retain(|x| !Arc::ptr_eq(x, &c));
                if matches!(end, ConnEnd::Dropped) {
                    info!(
                        "Disconnected from RPC Middle-End {} (conn {id}): {end}",
                        t.addr
                    );
                    break;
                }
                warn!(
                    "Disconnected from RPC Middle-End {} (conn {id}): {end}",
                    t.addr
                );
            }
            Ok(Err(e)) => {
                Stats::inc(&pool.stats.me_connect_failed);
                warn!("ME {}: {e}", t.addr);
            }
            Err(_) => {
                Stats::inc(&pool.stats.me_connect_failed);
                warn!(
                    "ME {}: no handshake within {:?}",
                    t.addr, HANDSHAKE_DEADLINE
                );
            }
        }
        if t.removed.load(Relaxed) {
            break;
        }
        let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..200));
        debug!("ME {}: redial in {:?}", t.addr, backoff + jitter);
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff.mul_f64(1.5)).min(BACKOFF_MAX);
    }
    t.slots.fetch_sub(1, Relaxed);
}

/// Resolves once `t` is removed from the config and `c` carries no session.
async fn drained(t: &Target, c: &MeConn) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if t.removed.load(Relaxed) && c.session_count() == 0 {
            return;
        }
    }
}
