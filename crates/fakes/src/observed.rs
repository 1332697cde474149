//! What a fake saw, as tests read it: a list that only grows (connections, events), changed
//! in place as connections move on, and a way to wait until it says something instead of
//! sleeping. The fake DC, the fake ME and the test kit's TLS site all keep one.

use std::sync::Mutex;
use tokio::sync::watch;

/// A list of observations and a change counter that waiters subscribe to.
#[derive(Debug)]
pub struct Observed<T> {
    items: Mutex<Vec<T>>,
    /// Bumped after every change to `items`.
    changed: watch::Sender<u64>,
}

impl<T: Clone> Default for Observed<T> {
    fn default() -> Self {
        Observed {
            items: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
        }
    }
}

impl<T: Clone> Observed<T> {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the item `make` builds from its index; returns the index.
    pub fn push_with(&self, make: impl FnOnce(usize) -> T) -> usize {
        let mut items = self.items.lock().expect("observed lock");
        let id = items.len();
        items.push(make(id));
        drop(items);
        self.changed.send_modify(|g| *g += 1);
        id
    }

    /// Appends `item`.
    pub fn push(&self, item: T) {
        self.push_with(|_| item);
    }

    /// Changes the item at `id` (an index [`Observed::push_with`] returned).
    pub fn update(&self, id: usize, f: impl FnOnce(&mut T)) {
        f(&mut self.items.lock().expect("observed lock")[id]);
        self.changed.send_modify(|g| *g += 1);
    }

    /// A copy of the list.
    pub fn snapshot(&self) -> Vec<T> {
        self.items.lock().expect("observed lock").clone()
    }

    /// How many items there are.
    pub fn len(&self) -> usize {
        self.items.lock().expect("observed lock").len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many items satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&T) -> bool) -> usize {
        let items = self.items.lock().expect("observed lock");
        items.iter().filter(|x| pred(x)).count()
    }

    /// Waits (without a time limit) until `pred` holds for the list; returns that snapshot.
    /// Re-checked after every change; wrap it in `tokio::time::timeout` in tests.
    pub async fn wait_until(&self, mut pred: impl FnMut(&[T]) -> bool) -> Vec<T> {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let items = self.items.lock().expect("observed lock");
                if pred(&items) {
                    return items.clone();
                }
            }
            // The sender lives in `self`, so this cannot fail while `self` exists.
            let _ = rx.changed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_see_pushes_and_updates() {
        let o = Observed::<(usize, bool)>::new();
        let id = o.push_with(|id| (id, false));
        o.push((7, false));
        assert_eq!(o.len(), 2);
        let waiter = o.wait_until(|x| x.iter().any(|e| e.1));
        tokio::pin!(waiter);
        // Polled once: it checked the list, found nothing, and waits for a change.
        assert!(tokio::time::timeout(Duration::ZERO, &mut waiter)
            .await
            .is_err());
        o.update(id, |e| e.1 = true);
        let seen = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the update woke the waiter");
        assert_eq!(seen, vec![(0, true), (7, false)]);
        assert_eq!(o.count(|e| e.1), 1);
    }
}
