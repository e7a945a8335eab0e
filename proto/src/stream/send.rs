//! The sending half's buffers: bytes written but not yet packetised ([`WriteQueue`]) and
//! packets sent but not yet acknowledged ([`SentPackets`], indexed by sequence number like
//! libudx's `outgoing` cirbuf).

use std::collections::VecDeque;

use crate::time::Timestamp;

use super::packet::Flags;

/// Bytes the application wrote that are not in a packet yet. Writes are packed back to back
/// (a write boundary is not a packet boundary, connect.md §3.2).
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of `chunks[0]` already taken.
    front: usize,
    len: usize,
}

impl WriteQueue {
    /// Queued bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a copy of `data`.
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        // Top up a small tail chunk instead of adding many tiny ones.
        if let Some(last) = self.chunks.back_mut() {
            if last.len() < 16 * 1024 {
                last.extend_from_slice(data);
                self.len += data.len();
                return;
            }
        }
        self.chunks.push_back(data.to_vec());
        self.len += data.len();
    }

    /// Moves up to `max` bytes to the end of `out`; returns how many.
    pub fn take_into(&mut self, out: &mut Vec<u8>, max: usize) -> usize {
        let mut taken = 0;
        while taken < max {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let avail = &front[self.front..];
            let n = avail.len().min(max - taken);
            out.extend_from_slice(&avail[..n]);
            taken += n;
            self.front += n;
            if self.front == front.len() {
                self.chunks.pop_front();
                self.front = 0;
            }
        }
        self.len -= taken;
        taken
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.front = 0;
        self.len = 0;
    }
}

/// One sent packet awaiting its acknowledgement (libudx `udx_packet_t`).
#[derive(Debug, Clone)]
pub struct SentPacket {
    /// DATA and/or END.
    pub flags: Flags,
    /// Stream bytes it carries (empty for END-only). Dropped once SACKed.
    pub payload: Vec<u8>,
    /// MTU-probe padding it was last sent with (0 = not a probe).
    pub padding: u8,
    /// When it was last (re)transmitted.
    pub time_sent: Timestamp,
    /// Transmissions so far (saturating).
    pub transmits: u8,
    /// Whether it was ever retransmitted (Karn: no RTT samples from it).
    pub retransmitted: bool,
    /// Marked lost and waiting in the retransmit queue.
    pub lost: bool,
    /// Selectively acknowledged (only the cumulative ack may remove it).
    pub sacked: bool,
    /// RTO expiries it went through (libudx `rto_timeouts`).
    pub rto_timeouts: u8,
    /// Delivery-rate bookkeeping at send time (libudx `udx__rate_pkt_sent`).
    pub rate: RateStamp,
}

/// The connection's delivery state when a packet was sent (draft-cheng-iccrg-delivery-rate).
#[derive(Debug, Clone, Copy, Default)]
pub struct RateStamp {
    /// Packets delivered so far.
    pub delivered: u64,
    /// When `delivered` was last updated.
    pub delivered_time: Timestamp,
    /// Send time of the first packet of the current flight.
    pub first_sent_time: Timestamp,
    /// Whether the sender was application-limited.
    pub is_app_limited: bool,
}

impl SentPacket {
    /// Size counted against the window: header + payload.
    pub fn size(&self) -> usize {
        super::packet::HEADER_LEN + self.payload.len()
    }
}

/// Unacknowledged packets `base .. base + len`, in sequence order.
#[derive(Debug, Default)]
pub struct SentPackets {
    base: u32,
    pkts: VecDeque<SentPacket>,
}

impl SentPackets {
    /// Starts at sequence number `base`.
    pub fn new(base: u32) -> Self {
        SentPackets {
            base,
            pkts: VecDeque::new(),
        }
    }

    /// The lowest unacknowledged sequence number.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// The next sequence number to assign.
    pub fn end(&self) -> u32 {
        self.base.wrapping_add(self.pkts.len() as u32)
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.pkts.len()
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.pkts.is_empty()
    }

    /// Appends the packet with sequence number [`SentPackets::end`].
    pub fn push(&mut self, pkt: SentPacket) {
        self.pkts.push_back(pkt);
    }

    /// The packet with sequence number `seq`, if held.
    pub fn get(&self, seq: u32) -> Option<&SentPacket> {
        self.pkts.get(seq.wrapping_sub(self.base) as usize)
    }

    /// The packet with sequence number `seq`, if held.
    pub fn get_mut(&mut self, seq: u32) -> Option<&mut SentPacket> {
        self.pkts.get_mut(seq.wrapping_sub(self.base) as usize)
    }

    /// Removes the lowest packet (the cumulative ack passed it).
    pub fn pop_front(&mut self) -> Option<SentPacket> {
        let p = self.pkts.pop_front()?;
        self.base = self.base.wrapping_add(1);
        Some(p)
    }

    /// Packets in sequence order with their sequence numbers.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &SentPacket)> {
        let base = self.base;
        self.pkts
            .iter()
            .enumerate()
            .map(move |(i, p)| (base.wrapping_add(i as u32), p))
    }

    /// Drops everything and moves the base to `seq`.
    pub fn clear(&mut self, seq: u32) {
        self.pkts.clear();
        self.base = seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_queue_packs() {
        let mut q = WriteQueue::default();
        q.push(b"hello ");
        q.push(b"world");
        q.push(&[]);
        assert_eq!(q.len(), 11);
        let mut out = Vec::new();
        assert_eq!(q.take_into(&mut out, 3), 3);
        q.push(b"!");
        assert_eq!(q.take_into(&mut out, 100), 9);
        assert_eq!(out, b"hello world!");
        assert!(q.is_empty());
    }

    #[test]
    fn sent_packets_wrap() {
        let mut s = SentPackets::new(u32::MAX);
        for _ in 0..3 {
            s.push(SentPacket {
                flags: Flags::DATA,
                payload: vec![1],
                padding: 0,
                time_sent: Timestamp::ZERO,
                transmits: 1,
                retransmitted: false,
                lost: false,
                sacked: false,
                rto_timeouts: 0,
                rate: RateStamp::default(),
            });
        }
        assert_eq!(s.end(), 2);
        assert!(s.get(1).is_some() && s.get(2).is_none());
        s.pop_front();
        assert_eq!(s.base(), 0);
        assert_eq!(s.iter().map(|(q, _)| q).collect::<Vec<_>>(), vec![0, 1]);
    }
}
