//! One UDX stream: the state machine behind [`super::UdxMux`] (libudx `src/udx.c`:
//! `process_packet`, `ack_packet`, `send_ack`, `send_new_packet`, `retransmit_packet`,
//! `rack_detect_loss`, `udx_rto_timeout`, `udx_tlp_timeout`, `udx_zwp_timeout`).
//!
//! Sequence numbers count packets. The send side keeps every unacknowledged packet
//! ([`SentPackets`]) until the cumulative ack passes it; loss is found by RACK (time-based,
//! RFC 8985) with tail-loss probes, and by the RTO (RFC 6298, 1 s floor) as the last resort.
//! The receive side acknowledges every DATA/END packet, duplicates included; acknowledgements
//! are produced when the driver polls, so everything that arrived in one batch is answered by
//! one ACK (or SACK) reflecting all of it.

use core::time::Duration;
use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::ids::SocketId;
use crate::time::Timestamp;

use super::congestion::{AckContext, CaState, Controller};
use super::mtu::{Mtu, MTU_MAX};
use super::pacing::Pacer;
use super::packet::{self, seq_diff, seq_le, seq_lt, Flags, Header, Packet};
use super::rate::{RateSample, RateState};
use super::recv::{Offer, Receiver};
use super::rtt::RttEstimator;
use super::send::{SentPacket, SentPackets, WriteQueue};
use super::{CloseReason, Config, StreamEvent, StreamId};

/// Writes report "drained" while fewer than this many bytes plus the send window are queued
/// (`UDX_HIGH_WATERMARK`, libudx `src/udx.c:45`).
pub const HIGH_WATERMARK: usize = 262_144;
/// RTO expiries of one packet before the stream gives up (`UDX_MAX_RTO_TIMEOUTS`,
/// libudx `src/udx.c:38`).
pub const MAX_RTO_TIMEOUTS: u8 = 6;
/// Extra probe timeout when one packet is in flight (`UDX_TLP_MAX_ACK_DELAY`, `src/udx.c:47`).
const TLP_MAX_ACK_DELAY: Duration = Duration::from_millis(2);
/// Probe timeout before the first RTT sample (`schedule_loss_probe`: 1000 ms).
const TLP_INITIAL: Duration = Duration::from_millis(1000);
/// Floor for the probe timeout: below the driver's timer resolution probes would fire during
/// ordinary scheduling hiccups (libudx's 1 ms clock treats srtt 0 as "no sample").
const TLP_MIN: Duration = Duration::from_millis(10);
/// Largest reordering-window multiplier (the window is also capped at the smoothed RTT).
const MAX_REO_MULT: u32 = 16;
/// Recoveries a widened reordering window survives (RFC 8985 `reo_wnd_persist` = 16).
const REO_PERSIST: u32 = 16;
/// How long a cleanly closed stream keeps answering retransmissions of the peer's last
/// packets (libudx has no TIME_WAIT; without it a lost final ACK times the peer out).
const LINGER: Duration = Duration::from_secs(5);
/// Unreliable messages queued for sending at most; more are dropped (they are unreliable).
const MAX_QUEUED_MESSAGES: usize = 256;

/// Where the stream's packets go once connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Remote {
    pub socket: SocketId,
    pub addr: SocketAddr,
    pub id: u32,
}

/// Lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Life {
    /// Sending and/or receiving.
    Open,
    /// Closed cleanly; still acknowledging the peer's retransmissions until the deadline.
    Linger(Timestamp),
    /// Gone: the mux removes it.
    Dead,
}

#[derive(Clone, Copy, Debug, Default)]
struct Rack {
    rtt: Duration,
    time_sent: Timestamp,
    /// Sequence number after the most recently sent packet that was delivered.
    next_seq: u32,
    fack: u32,
    reordering_seen: bool,
    /// Multiplier of the reordering window, raised by spurious retransmissions (RFC 8985
    /// `reo_wnd_mult`).
    reo_mult: u32,
    /// Loss recoveries left before `reo_mult` falls back to 1 (RFC 8985 `reo_wnd_persist`).
    reo_persist: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Tlp {
    in_flight: bool,
    is_retrans: bool,
    end_seq: u32,
    permitted: bool,
}

/// Counters for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Datagrams sent.
    pub packets_sent: u64,
    /// Datagrams received.
    pub packets_received: u64,
    /// Bytes of datagrams sent.
    pub bytes_sent: u64,
    /// Bytes of datagrams received.
    pub bytes_received: u64,
    /// DATA/END retransmissions.
    pub retransmits: u64,
    /// RTO expiries.
    pub rto_count: u64,
    /// Fast-recovery episodes.
    pub fast_recoveries: u64,
    /// Tail-loss probes sent.
    pub tlp_count: u64,
    /// Retransmissions found to be spurious (acknowledged faster than a round trip).
    pub spurious_retransmits: u64,
    /// Packets dropped because a receive buffer was full.
    pub recv_dropped: u64,
    /// SACK blocks that failed validation, or past what an honest peer sends in one ACK
    /// (more than 50 blocks (`packet::MAX_SACKS`), or more packets than were in flight).
    pub dropped_sacks: u64,
}

/// Why a probe is owed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    None,
    Tlp,
}

pub(crate) struct Stream {
    pub id: StreamId,
    local_id: u32,
    pub remote: Option<Remote>,
    /// Connect to the source of the first packet, with this remote id.
    pub accept: Option<u32>,
    /// Where the first packet of a stream that neither connected nor accepts came from
    /// (reported once; hyperdht's firewall hook remembers it for when the handshake ends).
    pub first_packet: Option<(SocketId, SocketAddr)>,
    pub life: Life,
    closed_reason: Option<CloseReason>,
    config: Config,

    // ----- send
    seq: u32,
    sent: SentPackets,
    write_queue: WriteQueue,
    /// Written bytes not yet acknowledged (libudx `writes_queued_bytes`).
    queued_bytes: usize,
    finish_requested: bool,
    end_pending: bool,
    local_ended: bool,
    retransmit: VecDeque<u32>,
    /// (seq, time sent) in transmission order; entries go stale when the packet is acked,
    /// marked lost or sent again.
    time_order: VecDeque<(u32, Timestamp)>,
    inflight_pkts: u32,
    lost_pkts: u32,
    send_rwnd: u32,
    wl1: u32,
    wl2: u32,
    messages: VecDeque<Vec<u8>>,
    destroy_pending: bool,
    ack_pending: bool,
    heartbeat_pending: bool,
    probe: Probe,
    want_writable: bool,
    readable_notified: bool,
    eof_notified: bool,
    /// rwnd last advertised (to send window updates when the application reads).
    advertised_rwnd: u32,

    // ----- receive
    recv: Receiver,

    // ----- recovery and control
    rtt: RttEstimator,
    ca: CaState,
    high_seq: u32,
    /// Packets SACKed but not yet cumulatively acknowledged (libudx `sacks`).
    sacks: u32,
    rack: Rack,
    tlp: Tlp,
    rate: RateState,
    cc: Controller,
    pacer: Pacer,
    mtu: Mtu,

    // ----- timers
    rto_at: Option<Timestamp>,
    tlp_at: Option<Timestamp>,
    reo_at: Option<Timestamp>,
    zwp_at: Option<Timestamp>,
    keepalive_at: Option<Timestamp>,
    pace_at: Option<Timestamp>,

    pub stats: StreamStats,
    sack_scratch: Vec<(u32, u32)>,
    /// Packets walked for SACK blocks, in all (what a hostile ACK makes us do).
    #[cfg(test)]
    pub sack_steps: u64,
    /// The deadline `UdxMux` has filed this stream under in its deadline index (kept by the
    /// mux, equal to [`Stream::poll_timeout`] after each of its calls).
    pub scheduled: Option<Timestamp>,
}

impl core::fmt::Debug for Stream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Stream")
            .field("local_id", &self.local_id)
            .field("remote", &self.remote)
            .field("seq", &self.seq)
            .field("remote_acked", &self.sent.base())
            .field("ack", &self.recv.ack())
            .field("life", &self.life)
            .finish_non_exhaustive()
    }
}

impl Stream {
    pub fn new(now: Timestamp, id: StreamId, local_id: u32, config: &Config, random: u32) -> Self {
        Stream {
            id,
            local_id,
            remote: None,
            accept: None,
            first_packet: None,
            life: Life::Open,
            closed_reason: None,
            config: config.clone(),
            seq: 0,
            sent: SentPackets::new(0),
            write_queue: WriteQueue::default(),
            queued_bytes: 0,
            finish_requested: false,
            end_pending: false,
            local_ended: false,
            retransmit: VecDeque::new(),
            time_order: VecDeque::new(),
            inflight_pkts: 0,
            lost_pkts: 0,
            send_rwnd: super::recv::DEFAULT_RWND_MAX,
            wl1: 0,
            wl2: 0,
            messages: VecDeque::new(),
            destroy_pending: false,
            ack_pending: false,
            heartbeat_pending: false,
            probe: Probe::None,
            want_writable: false,
            readable_notified: false,
            eof_notified: false,
            advertised_rwnd: config.rwnd_max,
            recv: Receiver::new(0, config.rwnd_max),
            rtt: RttEstimator::new(now),
            ca: CaState::Open,
            high_seq: 0,
            sacks: 0,
            rack: Rack::default(),
            tlp: Tlp::default(),
            // Application-limited until the first delivery (libudx starts at `~0`).
            rate: RateState {
                app_limited: 1,
                ..RateState::default()
            },
            cc: Controller::new(
                now,
                usize::from(super::mtu::MTU_BASE - super::mtu::IPV4_OVERHEAD),
                random,
            ),
            pacer: Pacer::new(now),
            mtu: Mtu::new(MTU_MAX, false, config.mtu_probing),
            rto_at: None,
            tlp_at: None,
            reo_at: None,
            zwp_at: None,
            keepalive_at: None,
            pace_at: None,
            stats: StreamStats::default(),
            sack_scratch: Vec::new(),
            #[cfg(test)]
            sack_steps: 0,
            scheduled: None,
        }
    }

    // ----- accessors -------------------------------------------------------------------------

    pub fn local_id(&self) -> u32 {
        self.local_id
    }

    pub fn is_connected(&self) -> bool {
        self.remote.is_some()
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    pub fn rto(&self) -> Duration {
        self.rtt.rto()
    }

    pub fn cwnd(&self) -> u32 {
        self.cc.cwnd()
    }

    pub fn mtu(&self) -> u16 {
        self.mtu.mtu()
    }

    pub fn inflight(&self) -> u32 {
        self.inflight_pkts
    }

    pub fn pacing_rate(&self) -> u64 {
        self.pacer.rate()
    }

    pub fn readable_bytes(&self) -> usize {
        self.recv.readable()
    }

    pub fn closed_reason(&self) -> Option<CloseReason> {
        self.closed_reason
    }

    fn max_payload(&self) -> usize {
        self.mtu.max_payload()
    }

    fn send_window_pkts(&self) -> u32 {
        if self.send_rwnd == 0 {
            return 0;
        }
        let rwnd_pkts = (self.send_rwnd as usize / self.max_payload()).max(1);
        self.cc
            .cwnd()
            .min(u32::try_from(rwnd_pkts).unwrap_or(u32::MAX))
    }

    fn send_window_bytes(&self) -> usize {
        (self.cc.cwnd() as usize * self.max_payload()).min(self.send_rwnd as usize)
    }

    fn write_limit(&self) -> usize {
        HIGH_WATERMARK + self.send_window_bytes()
    }

    /// Whether the write side still takes data (not finished or destroyed).
    pub fn writable_bytes_allowed(&self) -> bool {
        !self.finish_requested && !self.destroy_pending
    }

    /// Bytes `write` would accept now.
    pub fn writable_bytes(&self) -> usize {
        if self.life != Life::Open || self.finish_requested || self.destroy_pending {
            return 0;
        }
        self.write_limit().saturating_sub(self.queued_bytes)
    }

    // ----- application -----------------------------------------------------------------------

    pub fn connect(&mut self, socket: SocketId, remote_id: u32, addr: SocketAddr) {
        self.remote = Some(Remote {
            socket,
            addr,
            id: remote_id,
        });
        self.mtu = Mtu::new(
            self.config.max_mtu.min(MTU_MAX),
            addr.is_ipv6(),
            self.config.mtu_probing,
        );
        // Data that arrived before the connect is owed an ACK (libudx `ack_needed`).
        if self.recv.ack() != 0 || self.recv.out_of_order() > 0 {
            self.ack_pending = true;
        }
        self.keepalive_at = None;
    }

    /// Queues up to `writable_bytes` of `data`; returns how many were taken.
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.writable_bytes());
        self.write_queue.push(&data[..n]);
        self.queued_bytes += n;
        if n < data.len() {
            self.want_writable = true;
        }
        n
    }

    pub fn finish(&mut self) -> bool {
        if self.finish_requested || self.life != Life::Open || self.destroy_pending {
            return false;
        }
        self.finish_requested = true;
        self.end_pending = true;
        true
    }

    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = self.recv.read(buf);
        if self.recv.readable() == 0 {
            self.readable_notified = false;
        }
        self.after_read();
        n
    }

    pub fn read_all(&mut self, out: &mut Vec<u8>, max: usize) -> usize {
        let n = self.recv.read_all(out, max);
        self.readable_notified = false;
        self.after_read();
        n
    }

    fn after_read(&mut self) {
        // Window update: the peer may have stopped on a small window.
        let now_rwnd = self.recv.rwnd();
        let half = self.recv.rwnd_max() / 2;
        if self.advertised_rwnd < half && now_rwnd >= half {
            self.ack_pending = true;
        }
    }

    pub fn is_eof(&self) -> bool {
        self.recv.is_eof()
    }

    pub fn send_message(&mut self, data: &[u8]) -> bool {
        if self.life != Life::Open || self.messages.len() >= MAX_QUEUED_MESSAGES {
            return false;
        }
        self.messages.push_back(data.to_vec());
        true
    }

    /// Destroy: one DESTROY packet if connected, then the stream is gone.
    pub fn reset(&mut self, events: &mut VecDeque<StreamEvent>) {
        if self.life == Life::Dead {
            return;
        }
        if self.remote.is_some() && self.life == Life::Open {
            self.destroy_pending = true;
        } else {
            self.close(CloseReason::Destroyed, events);
        }
    }

    // ----- closing ---------------------------------------------------------------------------

    fn close(&mut self, reason: CloseReason, events: &mut VecDeque<StreamEvent>) {
        if self.closed_reason.is_none() {
            self.closed_reason = Some(reason);
            events.push_back(StreamEvent::Closed {
                id: self.id,
                reason,
            });
        }
        self.clear_send_state();
        self.life = Life::Dead;
    }

    fn clear_send_state(&mut self) {
        self.write_queue.clear();
        self.sent.clear(self.seq);
        self.retransmit.clear();
        self.time_order.clear();
        self.inflight_pkts = 0;
        self.lost_pkts = 0;
        self.queued_bytes = 0;
        self.messages.clear();
        self.rto_at = None;
        self.tlp_at = None;
        self.reo_at = None;
        self.zwp_at = None;
        self.keepalive_at = None;
        self.pace_at = None;
        self.probe = Probe::None;
    }

    /// Whether the peer ended and we read its whole stream, and the only packets it has not
    /// acknowledged carry nothing but our END.
    fn only_our_end_unacknowledged(&self) -> bool {
        self.eof_notified
            && self.finish_requested
            && !self.end_pending
            && self.write_queue.is_empty()
            && self
                .sent
                .iter()
                .all(|(_, p)| p.sacked || (p.payload.is_empty() && p.flags.contains(Flags::END)))
    }

    /// Checks end-of-stream and clean close; called after input and after sending ACKs.
    fn update_state(&mut self, now: Timestamp, events: &mut VecDeque<StreamEvent>) {
        if self.life != Life::Open {
            return;
        }
        if self.recv.readable() > 0 && !self.readable_notified {
            self.readable_notified = true;
            events.push_back(StreamEvent::Readable { id: self.id });
        }
        if !self.ack_pending && self.recv.check_eof() {
            // libudx signals EOF right after the ACK that covers the END went out.
            self.eof_notified = true;
            events.push_back(StreamEvent::Finished { id: self.id });
        }
        if self.want_writable && self.queued_bytes < self.write_limit() && !self.finish_requested {
            self.want_writable = false;
            events.push_back(StreamEvent::Writable { id: self.id });
        }
        if self.local_ended && self.eof_notified {
            if self.closed_reason.is_none() {
                self.closed_reason = Some(CloseReason::Finished);
                events.push_back(StreamEvent::Closed {
                    id: self.id,
                    reason: CloseReason::Finished,
                });
            }
            let unread = self.recv.readable();
            self.clear_send_state();
            self.life = Life::Linger(now + LINGER);
            let _ = unread;
        }
    }

    // ----- input -----------------------------------------------------------------------------

    /// Processes one UDX packet addressed to this stream.
    pub fn handle_packet(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        from: SocketAddr,
        pkt: &Packet<'_>,
        events: &mut VecDeque<StreamEvent>,
    ) {
        self.stats.packets_received += 1;
        self.stats.bytes_received += (packet::HEADER_LEN + pkt.body.len()) as u64;
        let h = pkt.header;

        if let Life::Linger(_) = self.life {
            if h.flags.contains(Flags::DESTROY) {
                self.life = Life::Dead;
            } else if h.flags.is_data_or_end() || h.flags.contains(Flags::HEARTBEAT) {
                self.ack_pending = true;
            }
            return;
        }
        if self.life == Life::Dead {
            return;
        }

        if self.remote.is_none() {
            if let Some(remote_id) = self.accept.take() {
                self.connect(socket, remote_id, from);
                events.push_back(StreamEvent::Accepted {
                    id: self.id,
                    socket,
                    from,
                });
            } else if self.first_packet.is_none() {
                self.first_packet = Some((socket, from));
                events.push_back(StreamEvent::FirstPacket {
                    id: self.id,
                    socket,
                    from,
                });
            }
        }

        if h.flags.contains(Flags::HEARTBEAT) {
            self.ack_pending = true;
            return;
        }
        let Some(payload) = pkt.payload() else {
            return;
        };

        let prior_acked = self.sent.base();
        let ack_advanced = seq_diff(h.ack, prior_acked) > 0;
        let data_inflight = prior_acked != self.seq;

        if seq_le(self.recv.ack(), h.seq) {
            if h.flags.is_data_or_end() {
                match self.recv.offer(h.seq, h.flags, payload) {
                    Offer::Dropped => self.stats.recv_dropped += 1,
                    Offer::Delivered | Offer::Buffered | Offer::Duplicate | Offer::Closed => {}
                }
            }
            if h.flags.contains(Flags::DESTROY) {
                self.close(CloseReason::Reset, events);
                return;
            }
        }
        if h.flags.contains(Flags::MESSAGE) {
            events.push_back(StreamEvent::Message {
                id: self.id,
                data: payload.to_vec(),
            });
        }
        if h.flags.is_data_or_end() {
            self.ack_pending = true;
        }

        // The peer acknowledges something we never sent: ignore the ack part.
        if seq_lt(self.seq, h.ack) {
            self.update_state(now, events);
            return;
        }

        if !seq_lt(h.ack, prior_acked)
            && (seq_lt(self.wl1, h.seq) || (self.wl1 == h.seq && seq_le(self.wl2, h.ack)))
        {
            if h.rwnd > 0 {
                self.zwp_at = None;
            }
            self.send_rwnd = h.rwnd;
            self.wl1 = h.seq;
            self.wl2 = h.ack;
        }

        // RACK 7.4.2: was a loss repaired by the probe?
        if self.tlp.in_flight
            && seq_le(self.tlp.end_seq, h.ack)
            && (!self.tlp.is_retrans || seq_lt(self.tlp.end_seq, h.ack))
        {
            self.tlp.in_flight = false;
        }

        if seq_lt(self.high_seq, h.ack) && self.ca != CaState::Open {
            self.ca = CaState::Open;
            // RFC 8985 6.2.4: the widened window lasts 16 recoveries.
            if self.rack.reo_persist > 0 {
                self.rack.reo_persist -= 1;
            } else {
                self.rack.reo_mult = 1;
            }
        }

        let delivered_before = self.rate.delivered;
        let mut lost = 0u32;
        let mut rs = RateSample::default();

        while seq_lt(self.sent.base(), h.ack) {
            let seq = self.sent.base();
            self.ack_packet(now, seq, false, &mut rs);
            self.sent.pop_front();
        }

        if h.flags.contains(Flags::SACK) {
            // An honest peer sends at most MAX_SACKS blocks (libudx `send_ack` stops at
            // `UDX_MAX_SACKS`), disjoint and inside what we have in flight, so walking them
            // costs at most one step per packet in flight. libudx itself walks every block a
            // datagram holds (`process_packet`), which lets one ACK of 8 000 overlapping
            // blocks cost 8 000 times the window: past MAX_SACKS blocks, or once the blocks
            // covered as many packets as are in flight, the rest is dropped (and counted).
            let mut budget = self.seq.wrapping_sub(self.sent.base());
            let mut blocks = pkt.sacks();
            for (start, end) in blocks.by_ref().take(packet::MAX_SACKS) {
                let len = end.wrapping_sub(start);
                if !self.sack_is_valid(start, end) || len > budget {
                    self.stats.dropped_sacks += 1;
                    continue;
                }
                budget -= len;
                let mut p = start;
                while p != end {
                    self.ack_packet(now, p, true, &mut rs);
                    p = p.wrapping_add(1);
                    #[cfg(test)]
                    {
                        self.sack_steps += 1;
                    }
                }
            }
            self.stats.dropped_sacks += blocks.len() as u64;
        }

        let delivered = (self.rate.delivered - delivered_before) as u32;
        let mut arm_rto_or_tlp = ack_advanced && data_inflight;

        if delivered > 0 {
            if self.sent.base() == self.seq {
                arm_rto_or_tlp = false;
                self.rto_at = None;
                self.tlp_at = None;
                self.reo_at = None;
                let end_owed = self.end_pending;
                if self.send_rwnd == 0 && (!self.write_queue.is_empty() || end_owed) {
                    self.zwp_at = Some(now + self.rtt.rto());
                } else if let Some(k) = self.config.keepalive {
                    self.keepalive_at = Some(now + k);
                }
            } else {
                self.rto_at = Some(now + self.rtt.rto());
            }
            let (l, armed) = self.rack_detect_loss(now);
            lost += l;
            if armed {
                arm_rto_or_tlp = false;
            }
        }
        if arm_rto_or_tlp && !self.schedule_loss_probe(now) {
            self.rto_at = Some(now + self.rtt.rto());
        }

        // The local write side is done once END and everything before it are acknowledged.
        if self.finish_requested && !self.end_pending && self.sent.is_empty() && !self.local_ended {
            self.local_ended = true;
            // libudx sends one more state packet after the peer acked our END, unless the
            // stream closes right away because the peer's END was already read.
            if !self.recv.is_eof() {
                self.ack_pending = true;
            }
        }

        if data_inflight {
            // libudx runs the rate sample and BBR for every ACK while data was in flight.
            self.rate
                .generate(now, delivered, lost, self.rtt.min_rtt(), &mut rs);
            let ctx = AckContext {
                now,
                inflight: self.inflight_pkts,
                delivered: self.rate.delivered,
                delivered_time: self.rate.delivered_time,
                ca_state: self.ca,
                srtt: self.rtt.srtt(),
                mss: self.max_payload(),
            };
            self.cc.on_ack(&ctx, &rs, &mut self.rate.app_limited);
            self.pacer.set_rate(self.cc.pacing_rate());
        }
        self.update_state(now, events);
    }

    /// The packets in flight not SACKed.
    #[cfg(test)]
    pub fn unsacked(&self) -> Vec<u32> {
        self.sent
            .iter()
            .filter(|(_, p)| !p.sacked)
            .map(|(s, _)| s)
            .collect()
    }

    fn sack_is_valid(&self, start: u32, end: u32) -> bool {
        // libudx `udx_sack_is_valid`.
        !(seq_diff(end, self.seq) > 0
            || seq_diff(start, end) >= 0
            || seq_diff(start, self.seq) >= 0
            || seq_diff(start, self.sent.base()) < 0)
    }

    /// Marks `seq` delivered (libudx `ack_packet`).
    fn ack_packet(&mut self, now: Timestamp, seq: u32, sack: bool, rs: &mut RateSample) {
        let min_rtt = self.rtt.min_rtt();
        let Some(pkt) = self.sent.get_mut(seq) else {
            return;
        };
        if pkt.sacked {
            if !sack {
                self.sacks = self.sacks.saturating_sub(1);
            }
            return;
        }
        if pkt.padding > 0 {
            self.mtu.on_probe_acked();
        }
        self.mtu.on_ack();
        if sack {
            self.sacks += 1;
        }
        pkt.sacked = true;
        if pkt.lost {
            pkt.lost = false;
            self.lost_pkts = self.lost_pkts.saturating_sub(1);
        } else {
            self.inflight_pkts = self.inflight_pkts.saturating_sub(1);
        }
        let time_sent = pkt.time_sent;
        let retransmitted = pkt.retransmitted;
        let stamp = pkt.rate;
        let bytes = pkt.payload.len();
        pkt.payload = Vec::new();
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        self.rate
            .on_delivered(seq, time_sent, retransmitted, &stamp, rs);

        let rtt = self.rtt.clamp(now - time_sent);
        if !retransmitted {
            self.rtt.on_sample(now, rtt);
            self.tlp.permitted = true;
        } else if min_rtt.is_some_and(|m| rtt < m) {
            // Acknowledged sooner than any round trip after the retransmission: the original
            // arrived, so the retransmission was spurious. UDX has no DSACK; this plays its
            // part in RFC 8985's reordering-window adaptation.
            self.rack.reordering_seen = true;
            self.rack.reo_mult = (self.rack.reo_mult + 1).min(MAX_REO_MULT);
            self.rack.reo_persist = REO_PERSIST;
            self.stats.spurious_retransmits += 1;
        }
        let next = seq.wrapping_add(1);
        if !retransmitted || min_rtt.is_none_or(|m| rtt >= m) {
            self.rack.rtt = rtt;
            rs.rtt = Some(rtt);
            if sent_after(time_sent, next, self.rack.time_sent, self.rack.next_seq) {
                self.rack.time_sent = time_sent;
                self.rack.next_seq = next;
            }
        }
        if seq_lt(self.rack.fack, next) {
            self.rack.fack = next;
        } else if seq_lt(next, self.rack.fack) && !retransmitted {
            self.rack.reordering_seen = true;
        }
    }

    /// RACK reordering window (RFC 8985 6.2.4; libudx `rack_update_reo_wnd`).
    fn reo_wnd(&self) -> Duration {
        if !self.rack.reordering_seen && (self.ca != CaState::Open || self.sacks >= 3) {
            return Duration::ZERO;
        }
        let min = self.rtt.min_rtt().unwrap_or_default() / 4 * self.rack.reo_mult.max(1);
        min.min(self.rtt.srtt().unwrap_or_default())
    }

    /// RACK loss detection (RFC 8985 6.2; libudx `rack_detect_loss`). Returns the number of
    /// packets marked lost and whether the reorder timer was armed.
    fn rack_detect_loss(&mut self, now: Timestamp) -> (u32, bool) {
        let reo = self.reo_wnd();
        let mut timeout = Duration::ZERO;
        let mut lost = 0u32;
        let mut probes_lost = 0u32;
        let mut stale = 0usize;
        let mut i = 0usize;
        while i < self.time_order.len() {
            let (seq, t) = self.time_order[i];
            let valid = self
                .sent
                .get(seq)
                .is_some_and(|p| !p.sacked && !p.lost && p.time_sent == t);
            if !valid {
                if i == 0 {
                    self.time_order.pop_front();
                } else {
                    stale += 1;
                    i += 1;
                }
                continue;
            }
            if t > self.rack.time_sent {
                break;
            }
            if sent_after(
                self.rack.time_sent,
                self.rack.next_seq,
                t,
                seq.wrapping_add(1),
            ) {
                let deadline = t + self.rack.rtt + reo;
                if deadline <= now {
                    if let Some(pkt) = self.sent.get_mut(seq) {
                        pkt.lost = true;
                        if pkt.padding > 0 {
                            pkt.padding = 0;
                            probes_lost += 1;
                            self.mtu.on_probe_lost();
                        }
                    }
                    self.inflight_pkts = self.inflight_pkts.saturating_sub(1);
                    self.lost_pkts += 1;
                    self.retransmit.push_back(seq);
                    lost += 1;
                    stale += 1;
                } else {
                    timeout = timeout.max(deadline - now);
                }
            }
            i += 1;
        }
        if stale > 64 && stale > self.time_order.len() / 2 {
            let sent = &self.sent;
            self.time_order.retain(|&(seq, t)| {
                sent.get(seq)
                    .is_some_and(|p| !p.sacked && !p.lost && p.time_sent == t)
            });
        }
        if lost > probes_lost && self.ca == CaState::Open {
            self.stats.fast_recoveries += 1;
            self.ca = CaState::Recovery;
            self.high_seq = self.seq;
            self.tlp.in_flight = false;
            self.tlp.is_retrans = false;
            self.cc.on_enter_recovery();
        }
        if timeout > Duration::ZERO {
            self.reo_at = Some(now + timeout);
            (lost, true)
        } else {
            (lost, false)
        }
    }

    /// Schedules a tail-loss probe (RFC 8985 7.2; libudx `schedule_loss_probe`).
    fn schedule_loss_probe(&mut self, now: Timestamp) -> bool {
        if self.seq == self.sent.base() || self.ca != CaState::Open || self.sacks > 0 {
            return false;
        }
        let mut pto = match self.rtt.srtt() {
            Some(srtt) => {
                let mut t = 2 * srtt;
                if self.inflight_pkts + self.lost_pkts == 1 {
                    t += TLP_MAX_ACK_DELAY;
                }
                t.max(TLP_MIN)
            }
            None => TLP_INITIAL,
        };
        let rto_at = self.rto_at.unwrap_or(now + self.rtt.rto());
        pto = pto.min(rto_at - now);
        self.tlp_at = Some(now + pto);
        true
    }

    // ----- timers ----------------------------------------------------------------------------

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.life {
            Life::Dead => return None,
            Life::Linger(t) => return Some(t),
            Life::Open => {}
        }
        [
            self.rto_at,
            self.tlp_at,
            self.reo_at,
            self.zwp_at,
            self.keepalive_at,
            self.pace_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Timestamp, events: &mut VecDeque<StreamEvent>) {
        match self.life {
            Life::Dead => return,
            Life::Linger(t) => {
                if now >= t {
                    self.life = Life::Dead;
                }
                return;
            }
            Life::Open => {}
        }
        if self.pace_at.is_some_and(|t| t <= now) {
            self.pace_at = None;
        }
        if self.reo_at.is_some_and(|t| t <= now) {
            self.reo_at = None;
            self.rack_detect_loss(now);
        }
        if self.tlp_at.is_some_and(|t| t <= now) {
            self.tlp_at = None;
            self.on_tlp_timeout(now);
        }
        if self.rto_at.is_some_and(|t| t <= now) {
            self.rto_at = None;
            self.on_rto_timeout(now, events);
            if self.life == Life::Dead {
                return;
            }
        }
        if self.zwp_at.is_some_and(|t| t <= now) {
            self.zwp_at = Some(now + 2 * self.rtt.rto());
            self.heartbeat_pending = true;
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.keepalive_at = self.config.keepalive.map(|k| now + k);
            if self.seq == self.sent.base() {
                self.heartbeat_pending = true;
            }
        }
    }

    fn on_tlp_timeout(&mut self, now: Timestamp) {
        // RACK 7.3 (libudx `udx_tlp_timeout`).
        if self.sent.base() == self.seq || self.tlp.in_flight || !self.tlp.permitted {
            return;
        }
        self.probe = Probe::Tlp;
        self.rto_at = Some(now + self.rtt.rto());
    }

    fn on_rto_timeout(&mut self, now: Timestamp, events: &mut VecDeque<StreamEvent>) {
        if self.sent.base() == self.seq {
            return;
        }
        self.stats.rto_count += 1;
        self.high_seq = self.seq;
        self.ca = CaState::Loss;
        self.tlp.in_flight = false;
        self.tlp.is_retrans = false;
        self.tlp_at = None;
        self.rto_at = Some(now + 2 * self.rtt.rto());
        self.retransmit.clear();
        let reo = self.reo_wnd();
        let base = self.sent.base();
        let rack_rtt = self.rack.rtt;
        let mut newly_lost = 0u32;
        let mut timed_out = false;
        let mut seq = base;
        while seq != self.seq {
            if let Some(pkt) = self.sent.get_mut(seq) {
                if pkt.sacked {
                } else if pkt.lost {
                    self.retransmit.push_back(seq);
                } else if seq == base || pkt.time_sent + rack_rtt + reo < now {
                    if pkt.rto_timeouts >= MAX_RTO_TIMEOUTS {
                        timed_out = true;
                        break;
                    }
                    pkt.rto_timeouts += 1;
                    pkt.lost = true;
                    if pkt.padding > 0 {
                        pkt.padding = 0;
                        self.mtu.on_probe_lost();
                    }
                    newly_lost += 1;
                    self.retransmit.push_back(seq);
                }
            }
            seq = seq.wrapping_add(1);
        }
        if timed_out {
            if self.only_our_end_unacknowledged() {
                // Every byte went both ways and the peer ended its side; only the ACK of our
                // END never came. udx-native closes its stream (and the JS peer its socket)
                // once both sides are done, so an ACK lost then is never repeated: what was
                // sent was delivered, and the stream finished.
                tracing::debug!("peer gone after our END; stream finished");
                self.local_ended = true;
                self.update_state(now, events);
                if self.closed_reason.is_some() {
                    return;
                }
            }
            self.close(CloseReason::TimedOut, events);
            return;
        }
        self.inflight_pkts = self.inflight_pkts.saturating_sub(newly_lost);
        self.lost_pkts += newly_lost;
        self.cc.on_rto();
        self.pacer.set_rate(self.cc.pacing_rate());
    }

    // ----- output ----------------------------------------------------------------------------

    fn header(&self, flags: Flags) -> Header {
        Header {
            flags,
            data_offset: 0,
            id: self.remote.map_or(0, |r| r.id),
            rwnd: self.recv.rwnd(),
            seq: self.seq,
            ack: self.recv.ack(),
        }
    }

    /// Writes the next datagram into `out` (cleared first) and returns where it goes.
    pub fn poll_transmit(
        &mut self,
        now: Timestamp,
        out: &mut Vec<u8>,
        events: &mut VecDeque<StreamEvent>,
    ) -> Option<(SocketId, SocketAddr)> {
        out.clear();
        let remote = self.remote?;
        let dst = (remote.socket, remote.addr);
        match self.life {
            Life::Dead => return None,
            Life::Linger(_) => {
                if self.ack_pending {
                    self.write_ack(out);
                    return Some(dst);
                }
                return None;
            }
            Life::Open => {}
        }

        if self.destroy_pending {
            let h = self.header(Flags::DESTROY);
            packet::encode(out, &h, 0, &[]);
            self.seq = self.seq.wrapping_add(1);
            self.destroy_pending = false;
            self.count_sent(out.len());
            self.close(CloseReason::Destroyed, events);
            return Some(dst);
        }

        if let Some(msg) = self.messages.pop_front() {
            let h = self.header(Flags::MESSAGE);
            packet::encode(out, &h, 0, &msg);
            self.count_sent(out.len());
            return Some(dst);
        }

        if self.heartbeat_pending {
            self.heartbeat_pending = false;
            let h = self.header(Flags::HEARTBEAT);
            packet::encode(out, &h, 0, &[]);
            self.count_sent(out.len());
            return Some(dst);
        }

        // SACK information cannot ride on a data packet: send it first.
        if self.ack_pending && self.recv.out_of_order() > 0 {
            self.write_ack(out);
            self.update_state(now, events);
            return Some(dst);
        }

        if self.probe == Probe::Tlp {
            self.probe = Probe::None;
            if self.send_new(now, out, true) {
                self.stats.tlp_count += 1;
                self.tlp.is_retrans = false;
                self.tlp.in_flight = true;
                self.tlp.end_seq = self.seq.wrapping_sub(1);
                self.tlp.permitted = false;
                return Some(dst);
            }
            let last = self.seq.wrapping_sub(1);
            if self.sent.get(last).is_some_and(|p| !p.lost && !p.sacked) {
                self.retransmit_packet(now, last, out);
                self.stats.tlp_count += 1;
                self.tlp.is_retrans = true;
                self.tlp.in_flight = true;
                self.tlp.end_seq = last;
                self.tlp.permitted = false;
                return Some(dst);
            }
        }

        let paced = self.pacer.can_send(now);
        if !paced && (!self.retransmit.is_empty() || self.has_new_data()) {
            self.pace_at = self.pacer.next_send_time();
        }

        if paced {
            while let Some(&seq) = self.retransmit.front() {
                if !self.sent.get(seq).is_some_and(|p| p.lost) {
                    self.retransmit.pop_front();
                    continue;
                }
                if self.inflight_pkts >= self.cc.cwnd() {
                    break;
                }
                self.retransmit.pop_front();
                self.retransmit_packet(now, seq, out);
                return Some(dst);
            }
            if self.inflight_pkts < self.send_window_pkts() && self.send_new(now, out, false) {
                return Some(dst);
            }
        }

        if self.ack_pending {
            self.write_ack(out);
            self.update_state(now, events);
            return Some(dst);
        }
        self.update_state(now, events);
        None
    }

    fn has_new_data(&self) -> bool {
        !self.write_queue.is_empty() || self.end_pending
    }

    fn write_ack(&mut self, out: &mut Vec<u8>) {
        let mut sacks = core::mem::take(&mut self.sack_scratch);
        self.recv.sack_blocks(&mut sacks);
        let h = self.header(Flags::ACK);
        packet::encode_ack(out, &h, &sacks);
        self.sack_scratch = sacks;
        self.ack_pending = false;
        self.advertised_rwnd = h.rwnd;
        self.count_sent(out.len());
    }

    fn count_sent(&mut self, len: usize) {
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += len as u64;
    }

    /// Packs queued bytes (and END) into a new packet (libudx `send_new_packet`).
    fn send_new(&mut self, now: Timestamp, out: &mut Vec<u8>, tlp: bool) -> bool {
        if !self.has_new_data() {
            return false;
        }
        let max = self.max_payload();
        let mut payload = Vec::with_capacity(self.write_queue.len().min(max));
        self.write_queue.take_into(&mut payload, max);
        let mut flags = Flags::ACK;
        if !payload.is_empty() {
            flags |= Flags::DATA;
        }
        if self.write_queue.is_empty() && self.end_pending {
            flags |= Flags::END;
            self.end_pending = false;
        }
        let padding = if tlp || payload.len() < max {
            0
        } else {
            self.mtu.probe_padding(payload.len()).unwrap_or(0)
        };
        if padding > 0 {
            self.mtu.on_probe_sent();
        }
        let was_idle = self.sent.is_empty();
        let stamp = self.before_send(now, was_idle);
        let h = self.header(flags);
        packet::encode(out, &h, padding, &payload);
        let pkt = SentPacket {
            flags,
            payload,
            padding,
            time_sent: now,
            transmits: 1,
            retransmitted: false,
            lost: false,
            sacked: false,
            rto_timeouts: 0,
            rate: stamp,
        };
        self.sent.push(pkt);
        self.time_order.push_back((self.seq, now));
        self.seq = self.seq.wrapping_add(1);
        self.inflight_pkts += 1;
        self.pacer.on_sent(out.len());
        self.count_sent(out.len());
        self.ack_pending = false;
        self.advertised_rwnd = h.rwnd;
        self.arm_timers(now, !tlp);
        true
    }

    /// Rate bookkeeping before any DATA/END (re)transmission (libudx `_send_packet`).
    fn before_send(&mut self, now: Timestamp, idle: bool) -> super::send::RateStamp {
        self.rate.check_app_limited(
            self.write_queue.len(),
            self.max_payload(),
            self.inflight_pkts,
            self.cc.cwnd(),
            self.lost_pkts,
        );
        if self.inflight_pkts == 0 {
            let limited = self.rate.app_limited != 0;
            self.cc.on_transmit_start(now, limited, self.max_payload());
        }
        self.rate.on_sent(now, idle)
    }

    /// Sends `seq` again with a fresh ack and window (libudx `retransmit_packet`).
    fn retransmit_packet(&mut self, now: Timestamp, seq: u32, out: &mut Vec<u8>) {
        let ack = self.recv.ack();
        let rwnd = self.recv.rwnd();
        let remote_id = self.remote.map_or(0, |r| r.id);
        if self.sent.get(seq).is_none() {
            return;
        }
        let stamp = self.before_send(now, false);
        let Some(pkt) = self.sent.get_mut(seq) else {
            return;
        };
        let h = Header {
            flags: pkt.flags,
            data_offset: 0,
            id: remote_id,
            rwnd,
            seq,
            ack,
        };
        packet::encode(out, &h, pkt.padding, &pkt.payload);
        if pkt.lost {
            pkt.lost = false;
            self.lost_pkts = self.lost_pkts.saturating_sub(1);
            self.inflight_pkts += 1;
        }
        pkt.transmits = pkt.transmits.saturating_add(1);
        pkt.retransmitted = true;
        pkt.time_sent = now;
        pkt.rate = stamp;
        self.time_order.push_back((seq, now));
        self.stats.retransmits += 1;
        self.pacer.on_sent(out.len());
        self.count_sent(out.len());
        self.ack_pending = false;
        self.advertised_rwnd = rwnd;
        self.arm_timers(now, false);
    }

    /// libudx `arm_stream_timers`.
    fn arm_timers(&mut self, now: Timestamp, arm_tlp: bool) {
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rtt.rto());
        }
        self.zwp_at = None;
        self.keepalive_at = None;
        if arm_tlp && self.ca == CaState::Open && self.sacks == 0 {
            self.schedule_loss_probe(now);
        }
    }
}

/// RACK's "sent after" order: later time, or the same time and a higher sequence number.
fn sent_after(t1: Timestamp, seq1: u32, t2: Timestamp, seq2: u32) -> bool {
    t1 > t2 || (t1 == t2 && seq_lt(seq2, seq1))
}
