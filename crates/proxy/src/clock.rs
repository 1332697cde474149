//! The wall clock as the protocols and `/stats` use it: whole seconds since the Unix epoch
//! (0 if the clock is set before it). One place, so every caller reads the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
