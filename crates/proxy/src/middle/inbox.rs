//! A client session's inbox in ME mode: what its ME connection sends it (answers, quick
//! acks, a close), queued until the session writes it to the client, and the count of the
//! memory the session holds against the process budget ([`super::budget`]).
//!
//! What a session is charged for, all under the inbox's lock so the process total is exact:
//! each queued message (its payload's buffer plus [`MESSAGE_OVERHEAD`]); the messages taken
//! for the batch being written to the client, until the write is done
//! ([`Inbox::written`]); the client input buffer holding an incomplete frame
//! ([`Inbox::charge_input`]). Not here: which session to shed when the process is over
//! budget (`budget.rs`), the per-connection dispatch (`conn.rs`).

use super::budget::Budget;
use crate::bufpool;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// What an ME connection sends to a client session.
#[derive(Debug)]
pub enum ToClient {
    /// One packet for the client (RPC_PROXY_ANS data).
    Data(Answer),
    /// A quick-ack token (RPC_SIMPLE_ACK).
    QuickAck(u32),
    /// Close the client: the ME closed the session (RPC_CLOSE_EXT, no CLOSE_CONN back),
    /// the ME connection died, or the client fell too far behind.
    Close(CloseCause),
}

/// One answer's bytes with room in front for the client's transport prefix, so a large
/// answer can be framed and encrypted where it is (no copy into the session's output).
#[derive(Debug)]
pub struct Answer {
    buf: Vec<u8>,
}

impl Answer {
    /// Room kept in front of the payload: the longest transport prefix (4 bytes).
    pub const HEADROOM: usize = 4;

    /// Copies `payload` in, into a pooled buffer when it is large.
    pub fn new(payload: &[u8]) -> Answer {
        let mut buf = bufpool::for_message(Self::HEADROOM + payload.len());
        buf.extend_from_slice(&[0; Self::HEADROOM]);
        buf.extend_from_slice(payload);
        Answer { buf }
    }

    #[cfg(test)]
    pub fn payload(&self) -> &[u8] {
        &self.buf[Self::HEADROOM..]
    }

    /// The buffer, payload at [`Answer::HEADROOM`].
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }
}

/// Why an ME connection closed a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCause {
    /// RPC_CLOSE_EXT from the ME.
    ClosedByMe,
    /// The ME connection is gone.
    MeLost,
    /// More than [`MAX_QUEUED`] bytes waited for a client that does not read.
    Flood,
    /// All sessions together held more than the process budget (`--msg-buffers-size`)
    /// and this one held the most.
    Budget,
}

/// Bytes a session may hold before it is closed (C: 32 MiB per connection,
/// `connections_failed_flood`).
pub const MAX_QUEUED: usize = 32 << 20;

/// Bytes counted for every queued message on top of its payload buffer: its slot in the
/// queue (`size_of::<ToClient>()`, 24 bytes, as much again while the queue grows by
/// doubling) and its allocation's header and rounding (16 to 31 bytes). An empty answer
/// costs 64 bytes, a quick ack 68: a flood of either reaches the caps as the memory it
/// takes does.
pub const MESSAGE_OVERHEAD: usize = 64;

/// What `msg` costs while it waits.
fn cost(msg: &ToClient) -> usize {
    match msg {
        ToClient::Data(a) => a.buf.capacity() + MESSAGE_OVERHEAD,
        ToClient::QuickAck(_) => 4 + MESSAGE_OVERHEAD,
        ToClient::Close(_) => 0,
    }
}

/// Why [`Inbox::send`] refused a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The session has ended.
    Closed,
    /// The session is being shed: it ends at once and sends its own RPC_CLOSE_CONN.
    Shed,
}

/// A client session's queue of what its ME connection sends it, with the session's waker
/// and what the session is charged for.
///
/// Not a tokio channel: an unbounded mpsc costs about 1.6 KiB per session (its shared state
/// is cache-padded and the first block of 32 slots is allocated up front), which was a
/// third of an idle ME-mode session's memory. This is a mutex-protected deque that holds
/// no allocation while empty and unused.
#[derive(Debug)]
pub struct Inbox {
    state: Mutex<State>,
    budget: Arc<Budget>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<ToClient>,
    waker: Option<Waker>,
    closed: bool,
    /// The session is to be dropped at once, without writing what is queued (C's
    /// fail_connection for a client over its or the process's buffer budget).
    shed: Option<CloseCause>,
    /// Charged for what is in `queue`.
    queued: usize,
    /// Charged for messages taken and not yet written to the client.
    taken: usize,
    /// Charged for the client input buffer.
    input: usize,
}

impl State {
    fn charged(&self) -> usize {
        self.queued + self.taken + self.input
    }
}

impl Inbox {
    /// An empty inbox whose charges count against `budget`.
    pub fn new(budget: Arc<Budget>) -> Inbox {
        Inbox {
            state: Mutex::new(State::default()),
            budget,
        }
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock is a bug elsewhere; the state stays consistent
        // (every update is a single step), so keep going rather than poison every session.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message and wakes the session; returns everything the session is charged
    /// for now. Refused once the session has ended or is being shed.
    pub fn send(&self, msg: ToClient) -> Result<usize, (Refused, ToClient)> {
        let (waker, charged) = {
            let mut st = self.lock();
            if st.closed {
                return Err((Refused::Closed, msg));
            }
            if st.shed.is_some() {
                return Err((Refused::Shed, msg));
            }
            let c = cost(&msg);
            st.queued += c;
            self.budget.add(c);
            st.queue.push_back(msg);
            (st.waker.take(), st.charged())
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(charged)
    }

    /// Tells the session to end at once for `cause`: what is queued is dropped (and no
    /// longer charged) and the session sees the close even while it waits on a client
    /// that does not read (see [`Inbox::shed_signal`]). False if it had ended or was
    /// shed already.
    pub fn shed(&self, cause: CloseCause) -> bool {
        let waker = {
            let mut st = self.lock();
            if st.closed || st.shed.is_some() {
                return false;
            }
            st.shed = Some(cause);
            st.queue = VecDeque::new();
            self.budget.sub(std::mem::take(&mut st.queued));
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Resolves when [`Inbox::shed`] was called. Shares the one waker slot with
    /// [`Inbox::recv`]: the session polls one or the other, never both at once.
    pub async fn shed_signal(&self) -> CloseCause {
        std::future::poll_fn(|cx| {
            let mut st = self.lock();
            match st.shed {
                Some(c) => Poll::Ready(c),
                None => {
                    st.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Takes the next message (charged until [`Inbox::written`]); a close when shed.
    fn pop(st: &mut State) -> Option<ToClient> {
        if let Some(c) = st.shed {
            return Some(ToClient::Close(c));
        }
        let m = st.queue.pop_front()?;
        let c = cost(&m);
        st.queued -= c;
        st.taken += c;
        Some(m)
    }

    /// The next message, waiting for one.
    pub async fn recv(&self) -> ToClient {
        std::future::poll_fn(|cx| {
            let mut st = self.lock();
            match Self::pop(&mut st) {
                Some(m) => Poll::Ready(m),
                None => {
                    st.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The next message if one is queued. When the queue is empty its room is freed
    /// unless it is small, so a session that had a burst does not keep it.
    pub fn try_recv(&self) -> Option<ToClient> {
        let mut st = self.lock();
        let m = Self::pop(&mut st);
        if m.is_none() && st.queue.capacity() > 8 {
            st.queue = VecDeque::new();
        }
        m
    }

    /// What was taken has been written to the client: no longer charged.
    pub fn written(&self) {
        let mut st = self.lock();
        self.budget.sub(std::mem::take(&mut st.taken));
    }

    /// The client input buffer now holds `bytes` (0: none kept); true when the process is
    /// over budget after the change (the caller asks the budget to shed).
    pub fn charge_input(&self, bytes: usize) -> bool {
        let mut st = self.lock();
        if st.closed || st.input == bytes {
            return false;
        }
        let grew = bytes > st.input;
        self.budget.sub(st.input);
        self.budget.add(bytes);
        st.input = bytes;
        grew && self.budget.over()
    }

    /// Everything the session is charged for now.
    pub fn charged(&self) -> usize {
        self.lock().charged()
    }

    /// The session has ended: later sends fail, whatever is queued is dropped and nothing
    /// is charged any more.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.queue = VecDeque::new();
        st.waker = None;
        self.budget.sub(st.charged());
        (st.queued, st.taken, st.input) = (0, 0, 0);
    }

    /// An inbox under a budget of its own, for tests of its users.
    #[cfg(test)]
    pub fn for_test() -> Inbox {
        Inbox::new(Budget::new(
            1 << 40,
            Arc::new(crate::stats::Stats::default()),
        ))
    }

    #[cfg(test)]
    pub fn queue_capacity(&self) -> usize {
        self.lock().queue.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;

    fn inbox(limit: u64) -> (Arc<Inbox>, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let budget = Budget::new(limit, stats.clone());
        (Arc::new(Inbox::new(budget)), stats)
    }

    fn total(stats: &Stats) -> u64 {
        Stats::get(&stats.me_queued_bytes)
    }

    #[tokio::test]
    async fn inbox_delivers_in_order_wakes_the_receiver_and_refuses_after_close() {
        let (inbox, _) = inbox(1 << 30);
        // A receiver waiting on an empty inbox is woken by a send from another task.
        let rx = inbox.clone();
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        inbox.send(ToClient::QuickAck(1)).unwrap();
        assert!(matches!(waiting.await.unwrap(), ToClient::QuickAck(1)));

        inbox.send(ToClient::Data(Answer::new(&[1, 2]))).unwrap();
        inbox.send(ToClient::QuickAck(3)).unwrap();
        assert!(matches!(inbox.recv().await, ToClient::Data(d) if d.payload() == [1, 2]));
        assert!(matches!(inbox.try_recv(), Some(ToClient::QuickAck(3))));
        assert!(inbox.try_recv().is_none());

        inbox.send(ToClient::QuickAck(4)).unwrap();
        inbox.close();
        assert!(inbox.try_recv().is_none(), "close drops what was queued");
        assert!(matches!(
            inbox.send(ToClient::Close(CloseCause::MeLost)),
            Err((Refused::Closed, ToClient::Close(CloseCause::MeLost)))
        ));
    }

    #[test]
    fn an_emptied_inbox_gives_back_a_large_queue() {
        let (inbox, _) = inbox(1 << 30);
        for i in 0..100 {
            inbox.send(ToClient::QuickAck(i)).unwrap();
        }
        while inbox.try_recv().is_some() {}
        assert_eq!(inbox.queue_capacity(), 0);
    }

    /// The overhead figure covers a queue slot: if `ToClient` grows, the figure must too.
    #[test]
    fn the_message_overhead_covers_a_queue_slot_twice_and_an_allocation_header() {
        assert!(2 * std::mem::size_of::<ToClient>() + 16 <= MESSAGE_OVERHEAD);
    }

    /// Every charge is in the process total from the moment it is made until the session
    /// no longer holds the bytes: queued, taken for a write, input; shed and close give
    /// back exactly what was charged.
    #[test]
    fn charges_follow_the_bytes_and_come_back_exactly() {
        let (inbox, stats) = inbox(1 << 30);
        let empty = inbox.send(ToClient::Data(Answer::new(&[]))).unwrap();
        assert!(
            empty >= MESSAGE_OVERHEAD,
            "an empty answer costs its overhead"
        );
        let acks: Vec<usize> = (0..10)
            .map(|i| inbox.send(ToClient::QuickAck(i)).unwrap())
            .collect();
        assert_eq!(acks[9], empty + 10 * (4 + MESSAGE_OVERHEAD));
        assert_eq!(total(&stats), inbox.charged() as u64);
        // Taken for a write: still charged until written.
        let before = inbox.charged();
        assert!(inbox.try_recv().is_some());
        assert_eq!(inbox.charged(), before);
        inbox.written();
        assert_eq!(inbox.charged(), before - empty);
        assert!(!inbox.charge_input(100_000));
        assert_eq!(total(&stats), inbox.charged() as u64);
        // Shed: the queue is given back, the input stays charged until the session ends.
        assert!(inbox.shed(CloseCause::Budget));
        assert!(!inbox.shed(CloseCause::Flood), "once");
        assert_eq!(inbox.charged(), 100_000);
        assert!(matches!(
            inbox.send(ToClient::QuickAck(1)),
            Err((Refused::Shed, _))
        ));
        assert!(matches!(
            inbox.try_recv(),
            Some(ToClient::Close(CloseCause::Budget))
        ));
        inbox.close();
        assert_eq!(total(&stats), 0);
        assert_eq!(inbox.charged(), 0);
    }

    #[test]
    fn input_growth_over_the_budget_is_reported() {
        let (inbox, _) = inbox(1000);
        assert!(!inbox.charge_input(900));
        assert!(inbox.charge_input(1001));
        assert!(!inbox.charge_input(10), "shrinking never asks for a shed");
    }
}
