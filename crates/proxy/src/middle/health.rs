//! Whether one ME connection is alive, shared by its reader, its writer, the pool and the
//! sessions: the flag new sessions check before picking it, the reason it died, the time
//! of the last RPC_PONG the ME sent, and the signal that ends the reader when the writer
//! (or anyone else) declares the connection dead.
//!
//! An ME that stops reading is found by the writer ([`super::writer`]): a ping not
//! answered within [`dead_after`], or bytes waiting with no write progress for as long. A
//! control queue over its cap (pongs and closes the ME does not read) is found where it is
//! queued (`conn.rs`). Either way the connection is killed here: new sessions no longer
//! pick it, the reader ends (its sessions are closed), the pool redials.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long an ME may leave a ping unanswered, or our bytes unread, before its connection
/// is declared dead: six ping intervals (`--ping-interval`, 5 s: 30 s), at least 2 s.
pub fn dead_after(ping_interval: Duration) -> Duration {
    (ping_interval * 6).max(Duration::from_secs(2))
}

/// The liveness of one ME connection.
#[derive(Debug)]
pub struct Health {
    alive: AtomicBool,
    why: Mutex<Option<String>>,
    died: Notify,
    /// Milliseconds after `epoch` at which the last RPC_PONG arrived (0: none yet).
    pong_ms: AtomicU64,
    epoch: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health {
            alive: AtomicBool::new(true),
            why: Mutex::new(None),
            died: Notify::new(),
            pong_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Relaxed)
    }

    /// Declares the connection dead for `why` (the first reason is kept); wakes the reader.
    pub fn kill(&self, why: impl Into<String>) {
        {
            let mut w = self.why.lock().unwrap_or_else(|e| e.into_inner());
            if w.is_none() {
                *w = Some(why.into());
            }
        }
        self.alive.store(false, Relaxed);
        self.died.notify_waiters();
    }

    /// Resolves with the reason once the connection is declared dead.
    pub async fn died(&self) -> String {
        loop {
            let died = self.died.notified();
            tokio::pin!(died);
            died.as_mut().enable();
            if !self.is_alive() {
                let w = self.why.lock().unwrap_or_else(|e| e.into_inner());
                return w.clone().unwrap_or_else(|| "declared dead".into());
            }
            died.await;
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// An RPC_PONG arrived now.
    pub fn pong(&self) {
        self.pong_ms.store(self.ms(Instant::now()), Relaxed);
    }

    /// Whether a pong arrived at or after `t`.
    pub fn pong_since(&self, t: Instant) -> bool {
        self.pong_ms.load(Relaxed) >= self.ms(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn kill_wakes_the_waiter_with_the_first_reason() {
        let h = Arc::new(Health::new());
        let w = h.clone();
        let waiter = tokio::spawn(async move { w.died().await });
        tokio::task::yield_now().await;
        assert!(h.is_alive());
        h.kill("no RPC_PONG");
        h.kill("second reason");
        assert!(!h.is_alive());
        assert_eq!(waiter.await.unwrap(), "no RPC_PONG");
        assert_eq!(h.died().await, "no RPC_PONG", "also after the fact");
    }

    #[test]
    fn pongs_answer_the_pings_sent_before_them() {
        let h = Health::new();
        let before = Instant::now();
        assert!(!h.pong_since(before));
        h.pong();
        assert!(h.pong_since(before));
        assert!(!h.pong_since(Instant::now() + Duration::from_millis(5)));
        assert_eq!(dead_after(Duration::from_secs(5)), Duration::from_secs(30));
        assert_eq!(
            dead_after(Duration::from_millis(100)),
            Duration::from_secs(2)
        );
    }
}
