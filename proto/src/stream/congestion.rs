//! Congestion control, in packets. Sender-local and invisible on the wire (connect.md §3.7).
//!
//! This first controller is NewReno over packet counts (RFC 5681/6582 style): slow start from
//! 10 packets (libudx's initial `cwnd`), additive increase above `ssthresh`, halving on a loss
//! episode, one packet after an RTO. Pacing runs at a multiple of `cwnd / srtt`.

use core::time::Duration;

/// Initial congestion window in packets (`stream->cwnd = 10`, libudx `udx_stream_init`).
pub const INITIAL_CWND: u32 = 10;
/// Initial slow-start threshold (`stream->ssthresh = 0xffff`, libudx `udx_stream_init`).
pub const INITIAL_SSTHRESH: u32 = 0xffff;
/// Smallest window (`bbr_cwnd_min_target`, libudx `src/udx_bbr.c`).
pub const MIN_CWND: u32 = 4;

/// What one acknowledgement told the controller.
#[derive(Clone, Copy, Debug, Default)]
pub struct AckSample {
    /// Packets newly delivered (cumulatively or selectively acknowledged).
    pub acked: u32,
    /// Packets newly marked lost.
    pub lost: u32,
    /// Packets in flight after this acknowledgement.
    pub inflight: u32,
    /// Whether the sender is in loss recovery.
    pub in_recovery: bool,
    /// Smoothed RTT, if known.
    pub srtt: Option<Duration>,
    /// Bytes per packet.
    pub mss: usize,
}

/// NewReno over packet counts.
#[derive(Clone, Debug)]
pub struct Controller {
    cwnd: u32,
    ssthresh: u32,
    /// Acked packets counted towards the next +1 in congestion avoidance.
    acc: u32,
    pacing_rate: u64,
}

impl Default for Controller {
    fn default() -> Self {
        Controller::new()
    }
}

impl Controller {
    /// Initial state.
    pub fn new() -> Self {
        Controller {
            cwnd: INITIAL_CWND,
            ssthresh: INITIAL_SSTHRESH,
            acc: 0,
            pacing_rate: super::pacing::INITIAL_RATE,
        }
    }

    /// The congestion window in packets.
    pub fn cwnd(&self) -> u32 {
        self.cwnd
    }

    /// Pacing rate in bytes per second (0 = unpaced).
    pub fn pacing_rate(&self) -> u64 {
        self.pacing_rate
    }

    /// Processes an acknowledgement.
    pub fn on_ack(&mut self, s: &AckSample) {
        if !s.in_recovery {
            if self.cwnd < self.ssthresh {
                self.cwnd = self.cwnd.saturating_add(s.acked);
            } else {
                self.acc += s.acked;
                if self.acc >= self.cwnd {
                    self.acc -= self.cwnd;
                    self.cwnd += 1;
                }
            }
        }
        if let Some(srtt) = s.srtt {
            let srtt = srtt.max(Duration::from_millis(1));
            let gain = if self.cwnd < self.ssthresh { 2.0 } else { 1.25 };
            let rate = gain * f64::from(self.cwnd) * s.mss as f64 / srtt.as_secs_f64();
            self.pacing_rate = rate.max(1.0) as u64;
        }
    }

    /// A loss episode began (fast recovery).
    pub fn on_congestion_event(&mut self) {
        self.ssthresh = (self.cwnd / 2).max(MIN_CWND);
        self.cwnd = self.ssthresh;
        self.acc = 0;
    }

    /// The retransmission timer fired.
    pub fn on_rto(&mut self) {
        self.ssthresh = (self.cwnd / 2).max(MIN_CWND);
        self.cwnd = MIN_CWND;
        self.acc = 0;
    }
}
