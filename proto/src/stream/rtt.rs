//! Round-trip time: the RFC 6298 estimator with libudx's bounds (`src/udx.c` `ack_packet`,
//! `clamp_rtt`), and the windowed min/max filter (Kathleen Nichols' algorithm, libudx
//! `src/win_filter.c`) used for RACK's min RTT and BBR's bandwidth.

use core::time::Duration;

use crate::time::Timestamp;

/// RTO before the first sample (`stream->rto = 1000`, libudx `udx_stream_init`).
pub const INITIAL_RTO: Duration = Duration::from_millis(1000);
/// Lower bound of the RTO (`max_uint32(srtt + 4 * rttvar, 1000)`, `ack_packet`).
pub const MIN_RTO: Duration = Duration::from_millis(1000);
/// Upper bound of the RTO (`UDX_RTO_MAX_MS`, `src/udx.c:40`).
pub const MAX_RTO: Duration = Duration::from_millis(30_000);
/// Upper bound of an RTT sample (`UDX_RTT_MAX_MS`, `src/udx.c:41`).
pub const MAX_RTT: Duration = Duration::from_millis(30_000);
/// Window of the min-RTT filter (`UDX_RTT_MIN_WINDOW_MS`, `src/udx.c:42`).
pub const MIN_RTT_WINDOW: Duration = Duration::from_secs(300);
/// Samples above this (and above `srtt + 5 rttvar`) are suspend/resume outliers
/// (`clamp_rtt`).
const OUTLIER_FLOOR: Duration = Duration::from_millis(5000);

/// A windowed running minimum or maximum over three samples (Kathleen Nichols' algorithm:
/// the best, second-best and third-best values, spread over the window).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowedFilter<T> {
    entries: [(u64, T); 3],
    max: bool,
}

impl<T: Copy + PartialOrd> WindowedFilter<T> {
    /// A running minimum, starting at `v` at time `t`.
    pub fn new_min(t: u64, v: T) -> Self {
        WindowedFilter {
            entries: [(t, v); 3],
            max: false,
        }
    }

    /// A running maximum, starting at `v` at time `t`.
    pub fn new_max(t: u64, v: T) -> Self {
        WindowedFilter {
            entries: [(t, v); 3],
            max: true,
        }
    }

    /// The current best value.
    pub fn get(&self) -> T {
        self.entries[0].1
    }

    /// Restarts the filter at `v`.
    pub fn reset(&mut self, t: u64, v: T) {
        self.entries = [(t, v); 3];
    }

    fn better(&self, a: T, b: T) -> bool {
        if self.max {
            a >= b
        } else {
            a <= b
        }
    }

    /// Adds sample `v` at time `t` (any monotonic unit, the window in the same unit) and
    /// returns the best value in the window.
    pub fn update(&mut self, win: u64, t: u64, v: T) -> T {
        let new = (t, v);
        if self.better(v, self.entries[0].1) || t.saturating_sub(self.entries[2].0) > win {
            self.entries = [new; 3];
            return v;
        }
        if self.better(v, self.entries[1].1) {
            self.entries[1] = new;
            self.entries[2] = new;
        } else if self.better(v, self.entries[2].1) {
            self.entries[2] = new;
        }
        // win_filter_apply_common
        let dt = t.saturating_sub(self.entries[0].0);
        if dt > win {
            self.entries[0] = self.entries[1];
            self.entries[1] = self.entries[2];
            self.entries[2] = new;
            if t.saturating_sub(self.entries[0].0) > win {
                self.entries[0] = self.entries[1];
                self.entries[1] = self.entries[2];
                self.entries[2] = new;
            }
        } else if self.entries[1].0 == self.entries[0].0 && dt > win / 4 {
            self.entries[2] = new;
            self.entries[1] = new;
        } else if self.entries[2].0 == self.entries[1].0 && dt > win / 2 {
            self.entries[2] = new;
        }
        self.entries[0].1
    }
}

/// The RFC 6298 estimator as libudx runs it, plus the windowed min RTT.
#[derive(Clone, Debug)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min: WindowedFilter<u64>,
}

impl RttEstimator {
    /// No samples yet: RTO 1 s.
    pub fn new(now: Timestamp) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
            min: WindowedFilter::new_min(now.as_nanos(), u64::MAX),
        }
    }

    /// Smoothed RTT, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// RTT variation.
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// Current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// Minimum RTT over the last 300 s (`None` before the first sample).
    pub fn min_rtt(&self) -> Option<Duration> {
        match self.min.get() {
            u64::MAX => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// Clamps a raw sample as libudx `clamp_rtt` does (suspend/resume guard).
    pub fn clamp(&self, rtt: Duration) -> Duration {
        match self.srtt {
            None => rtt.min(MAX_RTT),
            Some(srtt) => {
                let outlier = srtt + 5 * self.rttvar;
                if rtt > outlier && rtt > OUTLIER_FLOOR {
                    outlier.min(MAX_RTT)
                } else {
                    rtt
                }
            }
        }
    }

    /// Feeds a (clamped) sample from a packet that was never retransmitted (Karn).
    pub fn on_sample(&mut self, now: Timestamp, rtt: Duration) {
        let win = u64::try_from(MIN_RTT_WINDOW.as_nanos()).unwrap_or(u64::MAX);
        let nanos = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX - 1);
        self.min.update(win, now.as_nanos(), nanos);
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (3 * self.rttvar + delta) / 4;
                self.srtt = Some((7 * srtt + rtt) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or_default();
        self.rto = (srtt + 4 * self.rttvar).clamp(MIN_RTO, MAX_RTO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6298_with_floor() {
        let mut r = RttEstimator::new(Timestamp::ZERO);
        assert_eq!(r.rto(), INITIAL_RTO);
        assert_eq!(r.min_rtt(), None);
        r.on_sample(Timestamp::ZERO, Duration::from_millis(100));
        assert_eq!(r.srtt(), Some(Duration::from_millis(100)));
        assert_eq!(r.rttvar(), Duration::from_millis(50));
        assert_eq!(r.rto(), MIN_RTO);
        r.on_sample(Timestamp::ZERO, Duration::from_millis(900));
        // rttvar = (150 + 800) / 4, srtt = (700 + 900) / 8
        assert_eq!(r.rttvar(), Duration::from_micros(237_500));
        assert_eq!(r.srtt(), Some(Duration::from_millis(200)));
        assert_eq!(r.rto(), Duration::from_millis(1150));
        assert_eq!(r.min_rtt(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn clamps_outliers() {
        let mut r = RttEstimator::new(Timestamp::ZERO);
        assert_eq!(r.clamp(Duration::from_secs(60)), MAX_RTT);
        r.on_sample(Timestamp::ZERO, Duration::from_millis(100));
        assert_eq!(r.clamp(Duration::from_secs(4)), Duration::from_secs(4));
        assert_eq!(
            r.clamp(Duration::from_secs(20)),
            Duration::from_millis(100 + 5 * 50)
        );
    }

    #[test]
    fn windowed_max_expires() {
        let mut f = WindowedFilter::new_max(0, 0.0f64);
        assert_eq!(f.update(10, 1, 5.0), 5.0);
        assert_eq!(f.update(10, 2, 3.0), 5.0);
        assert_eq!(f.update(10, 8, 4.0), 5.0);
        // 5.0 (t=1) falls out of the window at t=12; the next best takes over.
        assert_eq!(f.update(10, 12, 1.0), 4.0);
        let mut m = WindowedFilter::new_min(0, u64::MAX);
        assert_eq!(m.update(100, 0, 7), 7);
        assert_eq!(m.update(100, 50, 9), 7);
        assert_eq!(m.update(100, 200, 9), 9);
    }
}
