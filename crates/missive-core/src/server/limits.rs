//! Small bounded structures: the per-user send rate limiter and the
//! per-sender memory of recent message ids.

use crate::types::{Lsn, MessageId, PeerKeyMap};
use std::collections::VecDeque;
use std::time::Instant;

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The last `capacity` message ids a sender used, with the LSN of the
/// command that queued each, so a retried Send is answered without queuing a
/// duplicate.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecentIds {
    lsn_of: PeerKeyMap<MessageId, Lsn>,
    order: VecDeque<MessageId>,
}

impl RecentIds {
    pub fn get(&self, id: &MessageId) -> Option<Lsn> {
        self.lsn_of.get(id).copied()
    }

    pub fn insert(&mut self, id: MessageId, lsn: Lsn, capacity: usize) {
        if capacity == 0 || self.lsn_of.insert(id, lsn).is_some() {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > capacity {
            if let Some(old) = self.order.pop_front() {
                self.lsn_of.remove(&old);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_rate_up_to_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, t0);
        assert!(b.try_take(10, 2, t0));
        assert!(b.try_take(10, 2, t0));
        assert!(!b.try_take(10, 2, t0));
        assert!(b.try_take(10, 2, t0 + Duration::from_millis(100)));
        assert!(!b.try_take(10, 2, t0 + Duration::from_millis(100)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert!(b.try_take(10, 2, later));
        assert!(b.try_take(10, 2, later));
        assert!(!b.try_take(10, 2, later));
    }

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut r = RecentIds::default();
        for i in 0..5u8 {
            r.insert(MessageId([i; 16]), Lsn(u64::from(i)), 3);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(&MessageId([0; 16])), None);
        assert_eq!(r.get(&MessageId([4; 16])), Some(Lsn(4)));
        r.insert(MessageId([4; 16]), Lsn(9), 3);
        assert_eq!(r.get(&MessageId([4; 16])), Some(Lsn(9)));
        assert_eq!(r.len(), 3);
    }
}
