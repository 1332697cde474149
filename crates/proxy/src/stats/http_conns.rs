//! The stats port's table of open connections: at most a fixed number at once, and when it
//! is full a new connection displaces the one that has waited longest for a request (a
//! slow or idle client, the one that costs most: it holds a slot and gives nothing).
//! A connection that is answering is never displaced; when all are, the new one is closed.
//!
//! With each request bounded by a whole-request deadline (`http.rs`), a slowloris holds a
//! slot for at most that long, and never keeps an operator (or the cutover gate) from
//! `/stats`: each new connection takes the slot of the oldest waiter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// The open connections.
#[derive(Debug)]
pub struct Conns {
    max: usize,
    table: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    /// Since when it waits for (the rest of) a request; None while answering.
    waiting: Option<Instant>,
    kick: Arc<Notify>,
}

/// One connection's place in the table; dropping it frees the slot.
#[derive(Debug)]
pub struct Ticket {
    conns: Arc<Conns>,
    id: u64,
    kick: Arc<Notify>,
}

impl Conns {
    pub fn new(max: usize) -> Arc<Conns> {
        Arc::new(Conns {
            max: max.max(1),
            table: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection (waiting for its request from now), displacing the
    /// longest waiter when full; None when every slot is answering.
    pub fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let mut table = self.table();
        if table.len() >= self.max {
            let (&oldest, _) = table
                .iter()
                .filter_map(|(id, e)| e.waiting.map(|t| (id, t)))
                .min_by_key(|(_, t)| *t)?;
            if let Some(e) = table.remove(&oldest) {
                // A stored permit: the connection sees it even if not waiting on it yet.
                e.kick.notify_one();
            }
        }
        let id = self.next.fetch_add(1, Relaxed);
        let kick = Arc::new(Notify::new());
        table.insert(
            id,
            Entry {
                waiting: Some(Instant::now()),
                kick: kick.clone(),
            },
        );
        Some(Ticket {
            conns: self.clone(),
            id,
            kick,
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table().len()
    }
}

impl Ticket {
    /// The connection waits for a request from now on (displaceable).
    pub fn waiting(&self) {
        if let Some(e) = self.conns.table().get_mut(&self.id) {
            e.waiting = Some(Instant::now());
        }
    }

    /// The connection is answering (not displaceable).
    pub fn answering(&self) {
        if let Some(e) = self.conns.table().get_mut(&self.id) {
            e.waiting = None;
        }
    }

    /// Resolves when a newer connection has taken this one's slot.
    pub async fn displaced(&self) {
        self.kick.notified().await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.conns.table().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn when_full_the_longest_waiter_makes_room_and_answering_ones_stay() {
        let conns = Conns::new(2);
        let first = conns.admit().unwrap();
        let second = conns.admit().unwrap();
        second.answering();
        // Full: the first (waiting) is displaced, the second (answering) stays.
        let third = conns.admit().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), first.displaced())
            .await
            .expect("the longest waiter was told");
        assert_eq!(conns.len(), 2);
        drop(first);
        assert_eq!(conns.len(), 2, "its slot was already given away");
        // Everyone answering: a new connection is refused.
        third.answering();
        assert!(conns.admit().is_none());
        // A waiter again: displaceable again; a closed one frees its slot.
        third.waiting();
        let fourth = conns.admit().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), third.displaced())
            .await
            .unwrap();
        drop((second, third));
        assert_eq!(conns.len(), 1);
        drop(fourth);
        assert_eq!(conns.len(), 0);
    }
}
