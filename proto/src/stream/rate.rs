//! Delivery-rate samples for BBR (draft-cheng-iccrg-delivery-rate-estimation; libudx
//! `src/udx_rate.c`): every packet remembers how much had been delivered when it was sent, so
//! its acknowledgement yields "packets delivered over an interval".

use core::time::Duration;

use crate::time::Timestamp;

use super::send::RateStamp;

/// The connection-wide delivery counters (libudx `delivered`, `delivered_ts`,
/// `first_sent_ts`, `app_limited`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RateState {
    /// Packets delivered so far (including retransmissions).
    pub delivered: u64,
    /// When `delivered` last grew.
    pub delivered_time: Timestamp,
    /// Send time of the packet that started the current sampling interval.
    pub first_sent_time: Timestamp,
    /// Application-limited until `delivered` passes this value (0 = not limited).
    pub app_limited: u64,
}

/// One acknowledgement's rate sample (libudx `udx_rate_sample_t`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RateSample {
    /// `delivered` when the most recently sent acknowledged packet was sent.
    pub prior_delivered: Option<u64>,
    /// `delivered_time` at that moment.
    pub prior_time: Timestamp,
    /// Send time of that packet (to pick the most recent one).
    pub(crate) prior_sent: Timestamp,
    pub(crate) prior_seq: u32,
    /// Packets delivered over `interval` (None = no valid sample).
    pub delivered: Option<u64>,
    /// The sampling interval: the longer of the send and ack intervals.
    pub interval: Option<Duration>,
    /// Packets this acknowledgement delivered.
    pub acked_sacked: u32,
    /// Packets it marked lost.
    pub losses: u32,
    /// RTT of the most recently sent acknowledged packet.
    pub rtt: Option<Duration>,
    /// The sample was taken while application-limited.
    pub is_app_limited: bool,
    /// The packet it came from was retransmitted.
    pub is_retrans: bool,
}

impl RateState {
    /// The stamp a packet sent now carries (libudx `udx__rate_pkt_sent`); `idle` = nothing
    /// was in flight, which restarts the intervals.
    pub fn on_sent(&mut self, now: Timestamp, idle: bool) -> RateStamp {
        if idle {
            self.first_sent_time = now;
            self.delivered_time = now;
        }
        RateStamp {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            is_app_limited: self.app_limited != 0,
        }
    }

    /// A packet sent at `time_sent` with `stamp` was delivered (libudx
    /// `udx__rate_pkt_delivered`).
    pub fn on_delivered(
        &mut self,
        seq: u32,
        time_sent: Timestamp,
        retransmitted: bool,
        stamp: &RateStamp,
        rs: &mut RateSample,
    ) {
        self.delivered += 1;
        let newer = match rs.prior_delivered {
            None => true,
            Some(_) => {
                time_sent > rs.prior_sent
                    || (time_sent == rs.prior_sent && super::packet::seq_lt(rs.prior_seq, seq))
            }
        };
        if newer {
            rs.prior_delivered = Some(stamp.delivered);
            rs.prior_time = stamp.delivered_time;
            rs.prior_sent = time_sent;
            rs.prior_seq = seq;
            rs.is_app_limited = stamp.is_app_limited;
            rs.is_retrans = retransmitted;
            self.first_sent_time = time_sent;
            rs.interval = Some(time_sent - stamp.first_sent_time);
        }
    }

    /// Finishes the sample after an acknowledgement (libudx `udx__rate_gen`).
    pub fn generate(
        &mut self,
        now: Timestamp,
        acked: u32,
        lost: u32,
        min_rtt: Option<Duration>,
        rs: &mut RateSample,
    ) {
        if self.app_limited != 0 && self.delivered > self.app_limited {
            self.app_limited = 0;
        }
        if acked > 0 {
            self.delivered_time = now;
        }
        rs.acked_sacked = acked;
        rs.losses = lost;
        let Some(prior) = rs.prior_delivered else {
            rs.delivered = None;
            rs.interval = None;
            return;
        };
        rs.delivered = Some(self.delivered - prior);
        let snd = rs.interval.unwrap_or_default();
        let ack = now - rs.prior_time;
        let interval = snd.max(ack);
        if min_rtt.is_some_and(|m| interval < m) || interval.is_zero() {
            rs.interval = None;
            return;
        }
        rs.interval = Some(interval);
    }

    /// Marks the sender application-limited when it has less than a packet to send and room
    /// in the window (libudx `udx__rate_check_app_limited`).
    pub fn check_app_limited(
        &mut self,
        unsent: usize,
        mss: usize,
        inflight: u32,
        cwnd: u32,
        lost: u32,
    ) {
        if unsent < mss && inflight < cwnd && lost == 0 {
            self.app_limited = (self.delivered + u64::from(inflight)).max(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_over_one_flight() {
        let mut r = RateState {
            app_limited: 0,
            ..RateState::default()
        };
        let t0 = Timestamp::from_millis(100);
        let stamps: Vec<_> = (0..10).map(|i| (i, r.on_sent(t0, i == 0))).collect();
        let mut rs = RateSample::default();
        let t1 = t0 + Duration::from_millis(50);
        for (seq, st) in &stamps {
            r.on_delivered(*seq, t0, false, st, &mut rs);
        }
        r.generate(t1, 10, 0, Some(Duration::from_millis(40)), &mut rs);
        assert_eq!(rs.delivered, Some(10));
        assert_eq!(rs.interval, Some(Duration::from_millis(50)));
        // An interval shorter than the min RTT is not a valid sample.
        let mut rs2 = RateSample::default();
        let st = r.on_sent(t1, true);
        r.on_delivered(10, t1, false, &st, &mut rs2);
        r.generate(
            t1 + Duration::from_millis(1),
            1,
            0,
            Some(Duration::from_millis(40)),
            &mut rs2,
        );
        assert_eq!(rs2.interval, None);
    }
}
