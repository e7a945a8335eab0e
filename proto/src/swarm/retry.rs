//! When a peer that disconnected is dialled again (hyperswarm `lib/retry-timer.js` over
//! `lib/bulk-timer.js`): four bulk timers (short, medium, long, extra long), each releasing the
//! peers it collected in batches every two thirds of its period, so a peer waits between 0.66
//! and 1.32 periods.

use core::time::Duration;

use crate::rng::Rng;
use crate::time::Timestamp;

use super::peer::PeerInfo;

/// `BACKOFF_JITTER = 500`.
pub const BACKOFF_JITTER: Duration = Duration::from_millis(500);

/// The default periods before their random parts: `BACKOFF_S/M/L/X = 1 s / 5 s / 15 s / 10 min`.
const DEFAULT_BASE_MS: [u64; 4] = [1_000, 5_000, 15_000, 600_000];
/// The random part JS adds to each default period (`BACKOFF_JITTER * 1, 2, 4, 240`).
const DEFAULT_SPREAD_MS: [u64; 4] = [500, 1_000, 2_000, 120_000];

/// One bulk timer (JS `BulkTimer`): peers added now are released at the second tick from now.
#[derive(Debug)]
struct BulkTimer {
    period: Duration,
    next_tick: Option<Timestamp>,
    next: Vec<[u8; 32]>,
    pending: Vec<[u8; 32]>,
}

impl BulkTimer {
    fn new(time: Duration) -> BulkTimer {
        // `setInterval(ontick, Math.floor(time * 0.66))`
        let period = Duration::from_millis((time.as_millis() as u64).saturating_mul(66) / 100);
        BulkTimer {
            period: period.max(Duration::from_millis(1)),
            next_tick: None,
            next: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn add(&mut self, now: Timestamp, key: [u8; 32]) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.period);
        }
        self.pending.push(key);
    }

    /// Runs the ticks due by `now`, appending released peers to `out`.
    fn tick(&mut self, now: Timestamp, out: &mut Vec<[u8; 32]>) {
        while let Some(t) = self.next_tick.filter(|t| *t <= now) {
            out.append(&mut self.next);
            self.next = std::mem::take(&mut self.pending);
            // JS keeps its interval running; an idle timer here stops until the next add.
            self.next_tick = if self.next.is_empty() {
                None
            } else {
                Some(t + self.period)
            };
        }
    }

    fn len(&self) -> usize {
        self.next.len() + self.pending.len()
    }
}

/// The four retry timers (JS `RetryTimer`).
#[derive(Debug)]
pub struct RetryTimer {
    timers: [BulkTimer; 4],
}

/// Which of the four timers a peer waits in (JS `_selectRetryTimer`), `None`: not retried.
fn select(peer: &PeerInfo) -> Option<usize> {
    if peer.banned || !peer.reconnecting {
        return None;
    }
    if peer.attempts > 3 {
        return peer.explicit.then_some(3);
    }
    if peer.attempts == 0 {
        return Some(0);
    }
    match (peer.proven, peer.attempts) {
        (true, 1) => Some(0),
        (true, 2) => Some(1),
        (true, 3) => Some(2),
        (false, 1) => Some(1),
        (false, _) => Some(2),
        _ => None,
    }
}

impl RetryTimer {
    /// The timers for `backoffs` (short, medium, long, extra long; `None`: hyperswarm's
    /// defaults with their random parts), each lengthened by up to `jitter`.
    pub fn new(backoffs: Option<[Duration; 4]>, jitter: Duration, rng: &mut Rng) -> RetryTimer {
        let mut ms = |max: u64| (rng.unit() * max as f64).round() as u64;
        let base: [Duration; 4] = backoffs.unwrap_or_else(|| {
            let mut b = [Duration::ZERO; 4];
            for (i, d) in b.iter_mut().enumerate() {
                *d = Duration::from_millis(DEFAULT_BASE_MS[i] + ms(DEFAULT_SPREAD_MS[i]));
            }
            b
        });
        let jitter_ms = jitter.as_millis() as u64;
        let timers = base.map(|b| BulkTimer::new(b + Duration::from_millis(ms(jitter_ms))));
        RetryTimer { timers }
    }

    /// Puts `peer` in its timer; returns whether it will be retried (JS `add`).
    pub fn add(&mut self, now: Timestamp, peer: &PeerInfo) -> bool {
        match select(peer) {
            Some(i) => {
                self.timers[i].add(now, peer.public_key);
                true
            }
            None => false,
        }
    }

    /// The peers whose wait is over by `now`.
    pub fn poll(&mut self, now: Timestamp) -> Vec<[u8; 32]> {
        let mut out = Vec::new();
        for t in &mut self.timers {
            t.tick(now, &mut out);
        }
        out
    }

    /// The next tick.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.iter().filter_map(|t| t.next_tick).min()
    }

    /// Peers waiting in all timers (a peer is in at most one: `waiting` guards it).
    pub fn len(&self) -> usize {
        self.timers.iter().map(BulkTimer::len).sum()
    }

    /// Forgets every waiting peer (JS `destroy`).
    pub fn clear(&mut self) {
        for t in &mut self.timers {
            t.next.clear();
            t.pending.clear();
            t.next_tick = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_duration(Duration::from_millis(ms))
    }

    #[test]
    fn a_peer_waits_between_two_thirds_and_four_thirds_of_its_period() {
        let mut rng = Rng::from_seed([3; 32]);
        let backoffs = [1000, 5000, 15000, 600_000].map(Duration::from_millis);
        let mut t = RetryTimer::new(Some(backoffs), Duration::ZERO, &mut rng);
        let mut p = PeerInfo::new([1; 32], Vec::new());
        p.attempts = 1;
        p.proven = true;
        assert!(t.add(at(0), &p), "proven, one attempt: the short timer");
        // Ticks every 660 ms: added before the first, released at the second.
        assert!(t.poll(at(659)).is_empty());
        assert!(t.poll(at(660)).is_empty());
        assert_eq!(t.poll(at(1320)), vec![[1; 32]]);
        assert_eq!(t.poll_timeout(), None, "idle timers stop");
    }

    #[test]
    fn the_timer_follows_attempts_and_proof() {
        let mut p = PeerInfo::new([1; 32], Vec::new());
        assert_eq!(select(&p), Some(0));
        p.attempts = 1;
        assert_eq!(select(&p), Some(1), "unproven: medium first");
        p.attempts = 3;
        assert_eq!(select(&p), Some(2));
        p.attempts = 4;
        assert_eq!(select(&p), None, "given up");
        p.explicit = true;
        assert_eq!(select(&p), Some(3), "explicit peers keep trying, slowly");
        p.reconnecting = false;
        assert_eq!(select(&p), None);
        p.reconnecting = true;
        p.banned = true;
        assert_eq!(select(&p), None);
    }

    #[test]
    fn default_periods_carry_js_random_parts() {
        let mut rng = Rng::from_seed([9; 32]);
        let t = RetryTimer::new(None, BACKOFF_JITTER, &mut rng);
        let periods: Vec<u64> = t
            .timers
            .iter()
            .map(|b| b.period.as_millis() as u64)
            .collect();
        // floor((base + spread + jitter) * 0.66) at most, floor(base * 0.66) at least.
        for (i, p) in periods.iter().enumerate() {
            let lo = DEFAULT_BASE_MS[i] * 66 / 100;
            let hi = (DEFAULT_BASE_MS[i] + DEFAULT_SPREAD_MS[i] + 500) * 66 / 100;
            assert!((lo..=hi).contains(p), "timer {i}: {p} ms");
        }
    }
}
