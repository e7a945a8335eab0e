//! Pacing: a token bucket refilled at the congestion controller's rate (libudx
//! `update_pacing_time`, `stream_may_send`, `_send_packet`), here with nanosecond refills
//! instead of libudx's 1 ms ticks.

use core::time::Duration;

use crate::time::Timestamp;

/// Rate before the controller has a sample: 25 MB/s (`UDX_INIT_PACING_RATE` = 25000 bytes
/// per ms, libudx `src/udx.c:36`).
pub const INITIAL_RATE: u64 = 25_000_000;

/// How much sending time the bucket may bank while idle: 1 ms, libudx's refill granularity.
const BURST_TIME: Duration = Duration::from_millis(1);

/// The bucket never holds less than this, so one full packet can always leave.
const MIN_BURST: u64 = 4 * 1500;

/// A token bucket in bytes.
#[derive(Clone, Debug)]
pub struct Pacer {
    /// Bytes per second; 0 = unpaced.
    rate: u64,
    tokens: u64,
    last: Timestamp,
}

impl Pacer {
    /// A full bucket at [`INITIAL_RATE`].
    pub fn new(now: Timestamp) -> Self {
        Pacer {
            rate: INITIAL_RATE,
            tokens: burst(INITIAL_RATE),
            last: now,
        }
    }

    /// The current rate in bytes per second (0 = unpaced).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Sets the rate (bytes per second; 0 = unpaced).
    pub fn set_rate(&mut self, rate: u64) {
        self.rate = rate;
        self.tokens = self.tokens.min(burst(rate));
    }

    fn refill(&mut self, now: Timestamp) {
        if now <= self.last {
            return;
        }
        let elapsed = (now - self.last).as_nanos();
        let add = elapsed.saturating_mul(u128::from(self.rate)) / 1_000_000_000;
        let cap = burst(self.rate);
        self.tokens = u64::try_from(u128::from(self.tokens) + add)
            .unwrap_or(u64::MAX)
            .min(cap);
        self.last = now;
    }

    /// Whether a packet may leave now (libudx: any token left).
    pub fn can_send(&mut self, now: Timestamp) -> bool {
        if self.rate == 0 {
            return true;
        }
        self.refill(now);
        self.tokens > 0
    }

    /// Spends tokens for `bytes` sent.
    pub fn on_sent(&mut self, bytes: usize) {
        self.tokens = self.tokens.saturating_sub(bytes as u64);
    }

    /// When the next token arrives, if the bucket is empty.
    pub fn next_send_time(&self) -> Option<Timestamp> {
        if self.rate == 0 || self.tokens > 0 {
            return None;
        }
        // Wait for one MTU worth, so wake-ups are not per byte.
        let nanos = 1500u128 * 1_000_000_000 / u128::from(self.rate);
        Some(self.last + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX).max(1)))
    }
}

fn burst(rate: u64) -> u64 {
    let b = u128::from(rate) * BURST_TIME.as_nanos() / 1_000_000_000;
    u64::try_from(b).unwrap_or(u64::MAX).max(MIN_BURST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills() {
        let t0 = Timestamp::from_millis(10);
        let mut p = Pacer::new(t0);
        p.set_rate(1_500_000); // 1500 bytes per ms
        assert!(p.can_send(t0));
        p.on_sent(6000);
        assert!(!p.can_send(t0));
        let next = p.next_send_time().unwrap();
        assert_eq!(next, t0 + Duration::from_millis(1));
        assert!(p.can_send(next));
        // Idle time banks at most the burst.
        assert!(p.can_send(t0 + Duration::from_secs(10)));
        p.on_sent(MIN_BURST as usize);
        assert!(!p.can_send(t0 + Duration::from_secs(10)));
        p.set_rate(0);
        assert!(p.can_send(t0));
    }
}
