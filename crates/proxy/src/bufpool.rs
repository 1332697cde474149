//! A per-thread pool of relay buffers, so an idle session holds none and a busy one does
//! not allocate per packet: a direction takes a buffer when its socket becomes readable,
//! reads and forwards until the socket would block, then gives the buffer back.
//!
//! Memory stays proportional to the sessions moving data right now, not to all sessions.

use std::cell::RefCell;

/// Size of one buffer: one read's worth.
pub const BUF_SIZE: usize = 16 * 1024;

/// Buffers kept per thread for reuse; more are freed.
const KEEP: usize = 256;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of [`BUF_SIZE`] bytes (contents unspecified).
pub fn take() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

/// Returns a buffer for reuse on this thread.
pub fn give(buf: Box<[u8]>) {
    if buf.len() != BUF_SIZE {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEEP {
            p.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_capped() {
        let a = take();
        let ptr = a.as_ptr();
        give(a);
        let b = take();
        assert_eq!(b.as_ptr(), ptr, "the same buffer comes back");
        give(b);
        let many: Vec<_> = (0..KEEP + 10).map(|_| take()).collect();
        for m in many {
            give(m);
        }
        POOL.with(|p| assert_eq!(p.borrow().len(), KEEP));
    }
}
