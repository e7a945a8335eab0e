//! Congestion control: BBR (v1, in packets, with pacing), as libudx runs it
//! (`src/udx_bbr.c`). Sender-local and invisible on the wire (connect.md §3.7).
//!
//! Why BBR rather than CUBIC: it is what udx-native runs, so a Rust sender behaves on shared
//! paths like the JS one it replaces; it models the path (bottleneck bandwidth and min RTT)
//! instead of reading every loss as congestion, so random loss (5% through the test relay)
//! does not collapse the window the way it does for loss-based controllers; and it paces,
//! which keeps bursts out of small socket buffers. Differences from libudx, each a fix or a
//! precision gain: time is kept in nanoseconds (libudx counts whole milliseconds) with the
//! same 1 ms floor on the min RTT used for the BDP; the cwnd is saved on entering recovery and
//! restored after it (Linux `bbr_ssthresh`; libudx never saves it and resets to `ssthresh`);
//! the PROBE_BW start phase is random, as its own comment says it should be.
//!
//! Model: `bw = windowed max of delivery rate over 10 rounds`, `min_rtt = windowed min over
//! 10 s`; `pacing_rate = pacing_gain * bw`, `cwnd = cwnd_gain * bw * min_rtt (+ ACK
//! aggregation)`, at least 4 packets.

use core::time::Duration;

use crate::time::Timestamp;

use super::rate::RateSample;
use super::rtt::WindowedFilter;

/// Initial congestion window in packets (`stream->cwnd = 10`, libudx `udx_stream_init`).
pub const INITIAL_CWND: u32 = 10;
/// Smallest window (`bbr_cwnd_min_target`, `src/udx_bbr.c`).
pub const MIN_CWND: u32 = 4;
/// PROBE_BW pacing gains (`bbr_pacing_gain`, `src/udx_bbr.c`).
const PACING_GAIN: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// Startup gain 2/ln 2 (`bbr_high_gain`).
const HIGH_GAIN: f64 = 2.885_39;
/// Drain gain (`bbr_drain_gain`).
const DRAIN_GAIN: f64 = 1.0 / 2.885_39;
/// PROBE_BW cwnd gain (`bbr_cwnd_gain`).
const CWND_GAIN: f64 = 2.0;
/// Pacing margin (`bbr_pacing_margin_percent`).
const PACING_MARGIN: f64 = 0.99;
/// Bandwidth filter length in rounds (`UDX_BBR_BW_FILTER_CYCLES`).
const BW_FILTER_ROUNDS: u64 = 10;
/// Min-RTT filter window (`UDX_BBR_MIN_RTT_INTERVAL_MS`).
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Time spent in PROBE_RTT (`UDX_BBR_MIN_PROBE_RTT_MODE_MS`).
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// Growth that counts as "bandwidth still growing" (`bbr_full_bw_thresh`).
const FULL_BW_THRESH: f64 = 1.25;
/// Rounds without growth that end STARTUP (`bbr_full_bw_count`).
const FULL_BW_COUNT: u8 = 3;
/// ACK-aggregation window in rounds (`bbr_extra_acked_win_rtts`).
const EXTRA_ACKED_WIN_ROUNDS: u8 = 5;
/// Cap of the ACK-aggregation cwnd boost (`bbr_extra_acked_max_ms`).
const EXTRA_ACKED_MAX: Duration = Duration::from_millis(100);
/// Floor of the min RTT used for the BDP: libudx's clock ticks in whole milliseconds, and a
/// driver cannot pace or wake up much finer, so sub-millisecond loopback RTTs would starve
/// the window.
const MIN_RTT_FLOOR: Duration = Duration::from_millis(1);
/// Initial pacing rate before any RTT sample (libudx `UDX_INIT_PACING_RATE`, 25 MB/s, which
/// `bbr_init` replaces with `cwnd / 1 ms * high_gain`).
const NO_RTT: Duration = Duration::from_millis(1);

/// BBR's modes (`UDX_BBR_STATE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Exponential growth until the bandwidth stops growing.
    Startup,
    /// Drain the queue Startup built.
    Drain,
    /// Steady state, cycling the pacing gain.
    ProbeBw,
    /// Briefly shrink to 4 packets to re-measure the min RTT.
    ProbeRtt,
}

/// The sender's loss-recovery state, as the controller sees it (`UDX_CA_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CaState {
    /// No loss being repaired.
    Open,
    /// Fast recovery (RACK found losses).
    Recovery,
    /// After an RTO.
    Loss,
}

/// What the sender tells the controller with each acknowledgement.
#[derive(Clone, Copy, Debug)]
pub struct AckContext {
    /// Time of the acknowledgement.
    pub now: Timestamp,
    /// Packets in flight after it.
    pub inflight: u32,
    /// Packets delivered so far.
    pub delivered: u64,
    /// When `delivered` last grew.
    pub delivered_time: Timestamp,
    /// Recovery state.
    pub ca_state: CaState,
    /// Smoothed RTT.
    pub srtt: Option<Duration>,
    /// Payload bytes per packet.
    pub mss: usize,
}

/// BBR state of one stream.
#[derive(Clone, Debug)]
pub struct Controller {
    cwnd: u32,
    pacing_rate: u64,
    mode: Mode,
    /// Bottleneck bandwidth filter, packets per second, over rounds.
    bw: WindowedFilter<f64>,
    min_rtt: Option<Duration>,
    min_rtt_stamp: Timestamp,
    probe_rtt_done: Option<Timestamp>,
    probe_rtt_round_done: bool,
    round_count: u64,
    next_round_delivered: u64,
    round_start: bool,
    cycle_index: usize,
    cycle_stamp: Timestamp,
    pacing_gain: f64,
    cwnd_gain: f64,
    full_bw: f64,
    full_bw_count: u8,
    full_bw_reached: bool,
    prior_cwnd: u32,
    prev_ca: CaState,
    packet_conservation: bool,
    idle_restart: bool,
    has_seen_rtt: bool,
    ack_epoch_start: Timestamp,
    ack_epoch_acked: u64,
    extra_acked: [u32; 2],
    extra_acked_rounds: u8,
    extra_acked_index: usize,
    /// A random draw for the PROBE_BW start phase.
    random: u32,
}

impl Controller {
    /// Initial state (libudx `bbr_init`); `random` picks PROBE_BW start phases.
    pub fn new(now: Timestamp, mss: usize, random: u32) -> Self {
        let mut c = Controller {
            cwnd: INITIAL_CWND,
            pacing_rate: 0,
            mode: Mode::Startup,
            bw: WindowedFilter::new_max(0, 0.0),
            min_rtt: None,
            min_rtt_stamp: now,
            probe_rtt_done: None,
            probe_rtt_round_done: false,
            round_count: 0,
            next_round_delivered: 0,
            round_start: false,
            cycle_index: 0,
            cycle_stamp: now,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: HIGH_GAIN,
            full_bw: 0.0,
            full_bw_count: 0,
            full_bw_reached: false,
            prior_cwnd: 0,
            prev_ca: CaState::Open,
            packet_conservation: false,
            idle_restart: false,
            has_seen_rtt: false,
            ack_epoch_start: now,
            ack_epoch_acked: 0,
            extra_acked: [0; 2],
            extra_acked_rounds: 0,
            extra_acked_index: 0,
            random,
        };
        c.init_pacing_rate(None, mss);
        c
    }

    /// The congestion window in packets.
    pub fn cwnd(&self) -> u32 {
        self.cwnd
    }

    /// Pacing rate in bytes per second.
    pub fn pacing_rate(&self) -> u64 {
        self.pacing_rate
    }

    /// Current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Estimated bottleneck bandwidth in bytes per second.
    pub fn bandwidth(&self, mss: usize) -> f64 {
        self.bw.get() * mss as f64
    }

    fn rate_for(bw: f64, mss: usize, gain: f64) -> u64 {
        ((bw * mss as f64 * gain * PACING_MARGIN) as u64).max(1)
    }

    fn init_pacing_rate(&mut self, srtt: Option<Duration>, mss: usize) {
        let rtt = match srtt {
            Some(s) if !s.is_zero() => {
                self.has_seen_rtt = true;
                s
            }
            _ => NO_RTT,
        };
        let bw = f64::from(self.cwnd) / rtt.as_secs_f64();
        self.pacing_rate = Self::rate_for(bw, mss, HIGH_GAIN);
    }

    fn set_pacing_rate(&mut self, bw: f64, gain: f64, srtt: Option<Duration>, mss: usize) {
        let rate = Self::rate_for(bw, mss, gain);
        if !self.has_seen_rtt && srtt.is_some() {
            self.init_pacing_rate(srtt, mss);
        }
        if self.full_bw_reached || rate > self.pacing_rate {
            self.pacing_rate = rate;
        }
    }

    /// Sending restarted after an idle period with nothing in flight (`bbr_on_transmit_start`).
    pub fn on_transmit_start(&mut self, now: Timestamp, app_limited: bool, mss: usize) {
        if !app_limited {
            return;
        }
        self.idle_restart = true;
        self.ack_epoch_start = now;
        self.ack_epoch_acked = 0;
        match self.mode {
            Mode::ProbeBw => {
                let bw = self.bw.get();
                self.set_pacing_rate(bw, 1.0, None, mss);
            }
            Mode::ProbeRtt => self.check_probe_rtt_done(now),
            _ => {}
        }
    }

    /// Loss recovery began: remember the window to return to (Linux `bbr_ssthresh`).
    pub fn on_enter_recovery(&mut self) {
        self.save_cwnd();
    }

    /// The RTO fired (`bbr_on_rto`).
    pub fn on_rto(&mut self) {
        self.save_cwnd();
        self.prev_ca = CaState::Loss;
        self.full_bw = 0.0;
        self.round_start = true;
    }

    fn save_cwnd(&mut self) {
        if self.prev_ca < CaState::Recovery && self.mode != Mode::ProbeRtt {
            self.prior_cwnd = self.cwnd;
        } else {
            self.prior_cwnd = self.prior_cwnd.max(self.cwnd);
        }
    }

    fn min_rtt_for_bdp(&self) -> Option<Duration> {
        self.min_rtt.map(|m| m.max(MIN_RTT_FLOOR))
    }

    /// Bandwidth-delay product times `gain`, in packets.
    fn bdp(&self, bw: f64, gain: f64) -> u32 {
        match self.min_rtt_for_bdp() {
            None => INITIAL_CWND,
            Some(rtt) => (bw * rtt.as_secs_f64() * gain) as u32,
        }
    }

    fn ack_aggregation_cwnd(&self) -> u32 {
        if !self.full_bw_reached {
            return 0;
        }
        let max = (self.bw.get() * EXTRA_ACKED_MAX.as_secs_f64()) as u32;
        self.extra_acked[0].max(self.extra_acked[1]).min(max)
    }

    /// Processes a rate sample (`bbr_main`).
    pub fn on_ack(&mut self, ctx: &AckContext, rs: &RateSample, app_limited: &mut u64) {
        self.update_bw(ctx, rs);
        self.update_ack_aggregation(ctx, rs);
        self.update_cycle_phase(ctx, rs);
        self.check_full_bw_reached(rs);
        self.check_drain(ctx);
        self.update_min_rtt(ctx, rs, app_limited);
        self.update_gains();
        let bw = self.bw.get();
        self.set_pacing_rate(bw, self.pacing_gain, ctx.srtt, ctx.mss);
        self.set_cwnd(ctx, rs, bw);
    }

    fn update_bw(&mut self, ctx: &AckContext, rs: &RateSample) {
        self.round_start = false;
        let (Some(delivered), Some(interval)) = (rs.delivered, rs.interval) else {
            return;
        };
        if let Some(prior) = rs.prior_delivered {
            if prior >= self.next_round_delivered {
                self.next_round_delivered = ctx.delivered;
                self.round_count += 1;
                self.round_start = true;
                self.packet_conservation = false;
            }
        }
        let bw = delivered as f64 / interval.as_secs_f64();
        if !rs.is_app_limited || bw >= self.bw.get() {
            self.bw.update(BW_FILTER_ROUNDS, self.round_count, bw);
        }
    }

    fn update_ack_aggregation(&mut self, ctx: &AckContext, rs: &RateSample) {
        if rs.acked_sacked == 0 || rs.delivered.is_none() || rs.interval.is_none() {
            return;
        }
        if self.round_start {
            self.extra_acked_rounds = self.extra_acked_rounds.saturating_add(1);
            if self.extra_acked_rounds >= EXTRA_ACKED_WIN_ROUNDS {
                self.extra_acked_rounds = 0;
                self.extra_acked_index ^= 1;
                self.extra_acked[self.extra_acked_index] = 0;
            }
        }
        let epoch = ctx.delivered_time - self.ack_epoch_start;
        let mut expected = (self.bw.get() * epoch.as_secs_f64()) as u64;
        if self.ack_epoch_acked <= expected {
            self.ack_epoch_acked = 0;
            self.ack_epoch_start = ctx.delivered_time;
            expected = 0;
        }
        self.ack_epoch_acked += u64::from(rs.acked_sacked);
        let extra = (self.ack_epoch_acked - expected).min(u64::from(self.cwnd)) as u32;
        let slot = &mut self.extra_acked[self.extra_acked_index];
        *slot = (*slot).max(extra);
    }

    fn update_cycle_phase(&mut self, ctx: &AckContext, rs: &RateSample) {
        if self.mode != Mode::ProbeBw {
            return;
        }
        let full_length = self
            .min_rtt
            .is_some_and(|m| ctx.delivered_time - self.cycle_stamp > m);
        let next = if self.pacing_gain == 1.0 {
            full_length
        } else if self.pacing_gain > 1.0 {
            full_length
                && (rs.losses > 0 || ctx.inflight > self.bdp(self.bw.get(), self.pacing_gain))
        } else {
            full_length || ctx.inflight <= self.bdp(self.bw.get(), 1.0)
        };
        if next {
            self.cycle_index = (self.cycle_index + 1) % PACING_GAIN.len();
            self.cycle_stamp = ctx.delivered_time;
        }
    }

    fn check_full_bw_reached(&mut self, rs: &RateSample) {
        if self.full_bw_reached || !self.round_start || rs.is_app_limited {
            return;
        }
        let bw = self.bw.get();
        if bw >= self.full_bw * FULL_BW_THRESH {
            self.full_bw = bw;
            self.full_bw_count = 0;
            return;
        }
        self.full_bw_count += 1;
        self.full_bw_reached = self.full_bw_count >= FULL_BW_COUNT;
    }

    fn enter_probe_bw(&mut self, now: Timestamp) {
        self.mode = Mode::ProbeBw;
        // Linux: start at a random phase other than the 0.75 drain phase.
        self.random = self.random.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let r = (self.random >> 16) as usize % 7;
        self.cycle_index = PACING_GAIN.len() - 1 - r;
        self.cycle_index = (self.cycle_index + 1) % PACING_GAIN.len();
        self.cycle_stamp = now;
    }

    fn check_drain(&mut self, ctx: &AckContext) {
        if self.mode == Mode::Startup && self.full_bw_reached {
            self.mode = Mode::Drain;
        }
        if self.mode == Mode::Drain && ctx.inflight <= self.bdp(self.bw.get(), 1.0) {
            self.enter_probe_bw(ctx.delivered_time);
        }
    }

    fn check_probe_rtt_done(&mut self, now: Timestamp) {
        if self.probe_rtt_done.is_none_or(|t| now <= t) {
            return;
        }
        self.min_rtt_stamp = now;
        self.cwnd = self.cwnd.max(self.prior_cwnd);
        if self.full_bw_reached {
            self.enter_probe_bw(now);
        } else {
            self.mode = Mode::Startup;
        }
    }

    fn update_min_rtt(&mut self, ctx: &AckContext, rs: &RateSample, app_limited: &mut u64) {
        let now = ctx.now;
        let expired = now > self.min_rtt_stamp + MIN_RTT_WINDOW;
        if let Some(rtt) = rs.rtt {
            if self.min_rtt.is_none_or(|m| rtt < m) || expired {
                self.min_rtt = Some(rtt);
                self.min_rtt_stamp = now;
            }
        }
        if expired && !self.idle_restart && self.mode != Mode::ProbeRtt {
            self.mode = Mode::ProbeRtt;
            self.save_cwnd();
            self.probe_rtt_done = None;
        }
        if self.mode == Mode::ProbeRtt {
            *app_limited = (ctx.delivered + u64::from(ctx.inflight)).max(1);
            if self.probe_rtt_done.is_none() && ctx.inflight <= MIN_CWND {
                self.probe_rtt_done = Some(now + PROBE_RTT_TIME);
                self.probe_rtt_round_done = false;
                self.next_round_delivered = ctx.delivered;
            } else if self.probe_rtt_done.is_some() {
                if self.round_start {
                    self.probe_rtt_round_done = true;
                }
                if self.probe_rtt_round_done {
                    self.check_probe_rtt_done(now);
                }
            }
        }
        if rs.delivered.is_some_and(|d| d > 0) {
            self.idle_restart = false;
        }
    }

    fn update_gains(&mut self) {
        (self.pacing_gain, self.cwnd_gain) = match self.mode {
            Mode::Startup => (HIGH_GAIN, HIGH_GAIN),
            Mode::Drain => (DRAIN_GAIN, HIGH_GAIN),
            Mode::ProbeBw => (PACING_GAIN[self.cycle_index], CWND_GAIN),
            Mode::ProbeRtt => (1.0, 1.0),
        };
    }

    fn set_cwnd(&mut self, ctx: &AckContext, rs: &RateSample, bw: f64) {
        let acked = rs.acked_sacked;
        if acked > 0 {
            let mut cwnd = self.cwnd;
            if rs.losses > 0 {
                cwnd = cwnd.saturating_sub(rs.losses).max(1);
            }
            let state = ctx.ca_state;
            if state == CaState::Recovery && self.prev_ca != CaState::Recovery {
                self.packet_conservation = true;
                self.next_round_delivered = ctx.delivered;
                cwnd = ctx.inflight + acked;
            } else if self.prev_ca >= CaState::Recovery && state == CaState::Open {
                cwnd = cwnd.max(self.prior_cwnd);
                self.packet_conservation = false;
            }
            self.prev_ca = state;
            if self.packet_conservation {
                cwnd = cwnd.max(ctx.inflight + acked);
            } else {
                let target = self
                    .bdp(bw, self.cwnd_gain)
                    .saturating_add(self.ack_aggregation_cwnd());
                if self.full_bw_reached {
                    cwnd = cwnd.saturating_add(acked).min(target);
                } else if cwnd < target || ctx.delivered < 10 {
                    cwnd = cwnd.saturating_add(acked);
                }
                cwnd = cwnd.max(MIN_CWND);
            }
            self.cwnd = cwnd;
        }
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(MIN_CWND);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(now: Timestamp, inflight: u32, delivered: u64) -> AckContext {
        AckContext {
            now,
            inflight,
            delivered,
            delivered_time: now,
            ca_state: CaState::Open,
            srtt: Some(Duration::from_millis(10)),
            mss: 1152,
        }
    }

    /// A sender with a fixed 10 ms RTT and a 1000 packet/s bottleneck: BBR leaves Startup
    /// and settles near the BDP (10 packets, cwnd gain 2).
    #[test]
    fn converges_on_a_fixed_path() {
        let mut c = Controller::new(Timestamp::ZERO, 1152, 7);
        let mut delivered = 0u64;
        let mut app = 0u64;
        let mut now = Timestamp::ZERO;
        for _ in 0..300 {
            now += Duration::from_millis(10);
            // Per 10 ms round: min(cwnd, 10) packets delivered.
            let n = u64::from(c.cwnd().min(10));
            let prior = delivered;
            delivered += n;
            let rs = RateSample {
                prior_delivered: Some(prior),
                delivered: Some(n),
                interval: Some(Duration::from_millis(10)),
                acked_sacked: n as u32,
                rtt: Some(Duration::from_millis(10)),
                ..RateSample::default()
            };
            c.on_ack(&ctx(now, c.cwnd().min(10), delivered), &rs, &mut app);
        }
        assert_ne!(c.mode(), Mode::Startup);
        assert!((c.bandwidth(1) - 1000.0).abs() < 1.0, "{}", c.bandwidth(1));
        assert!(c.cwnd() >= 10 && c.cwnd() <= 30, "{}", c.cwnd());
    }
}
