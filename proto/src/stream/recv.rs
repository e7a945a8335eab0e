//! The receiving half: in-order delivery into a bounded read buffer, the out-of-order buffer,
//! SACK blocks and end-of-stream (connect.md §3.5; libudx `process_packet`,
//! `process_data_packet`, `send_ack`).
//!
//! Everything the peer can make us hold is bounded: the read buffer plus the out-of-order
//! bytes never exceed [`Receiver::hard_limit`], and the out-of-order buffer spans at most
//! [`MAX_OOO_PACKETS`] sequence numbers. Packets past either limit are dropped unacknowledged
//! and the sender retransmits them later.

use std::collections::VecDeque;

use super::packet::{seq_lt, Flags, MAX_SACKS};

/// Default receive window (`UDX_DEFAULT_RWND_MAX` = 4 MiB, libudx `src/udx.c:43`). Every
/// udx-native packet advertises it.
pub const DEFAULT_RWND_MAX: u32 = 4 * 1024 * 1024;

/// Widest out-of-order span we buffer, in packets. A libudx sender keeps at most
/// `rwnd / max_payload` (≈ 3641 at 4 MiB and 1152-byte payloads) packets in flight, plus
/// retransmissions.
pub const MAX_OOO_PACKETS: usize = 8192;

/// How far past the window the buffers may grow before packets are dropped (retransmissions
/// ignore the window, libudx `stream_may_send`).
const HARD_LIMIT_FACTOR: usize = 2;

/// The result of offering a DATA/END packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// In order: its bytes went to the read buffer.
    Delivered,
    /// Stored in the out-of-order buffer.
    Buffered,
    /// Already received, or older than the cumulative ack.
    Duplicate,
    /// Over a limit: not stored, not acknowledged.
    Dropped,
    /// The read side is closed (end of stream already reached).
    Closed,
}

#[derive(Debug)]
struct Ooo {
    flags: Flags,
    data: Vec<u8>,
}

/// Receive state of one stream.
#[derive(Debug)]
pub struct Receiver {
    ack: u32,
    read_buf: VecDeque<u8>,
    /// Slot `i` holds sequence number `ack + i`.
    ooo: VecDeque<Option<Ooo>>,
    ooo_count: usize,
    ooo_bytes: usize,
    remote_ended: Option<u32>,
    eof: bool,
    rwnd_max: u32,
}

impl Receiver {
    /// Expects sequence number `ack` first; advertises `rwnd_max`.
    pub fn new(ack: u32, rwnd_max: u32) -> Self {
        Receiver {
            ack,
            read_buf: VecDeque::new(),
            ooo: VecDeque::new(),
            ooo_count: 0,
            ooo_bytes: 0,
            remote_ended: None,
            eof: false,
            rwnd_max,
        }
    }

    /// The cumulative ack: the next sequence number expected.
    pub fn ack(&self) -> u32 {
        self.ack
    }

    /// Whether every packet up to the peer's END arrived (end of stream).
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Bytes waiting for the application.
    pub fn readable(&self) -> usize {
        self.read_buf.len()
    }

    /// Packets held out of order.
    pub fn out_of_order(&self) -> usize {
        self.ooo_count
    }

    /// The largest amount of data held at once before packets are dropped.
    pub fn hard_limit(&self) -> usize {
        self.rwnd_max as usize * HARD_LIMIT_FACTOR
    }

    /// The window to advertise: `rwnd_max` minus what the application has not read.
    pub fn rwnd(&self) -> u32 {
        self.rwnd_max
            .saturating_sub(u32::try_from(self.read_buf.len()).unwrap_or(u32::MAX))
    }

    /// The configured maximum window.
    pub fn rwnd_max(&self) -> u32 {
        self.rwnd_max
    }

    fn held(&self) -> usize {
        self.read_buf.len() + self.ooo_bytes
    }

    /// Offers a DATA and/or END packet with sequence number `seq` and its payload.
    pub fn offer(&mut self, seq: u32, flags: Flags, payload: &[u8]) -> Offer {
        if self.eof {
            return Offer::Closed;
        }
        if seq_lt(seq, self.ack) {
            return Offer::Duplicate;
        }
        let idx = seq.wrapping_sub(self.ack) as usize;
        let data = if flags.contains(Flags::DATA) {
            payload
        } else {
            &[][..]
        };
        if self.held() + data.len() > self.hard_limit() {
            return Offer::Dropped;
        }
        if idx == 0 && flags.contains(Flags::DATA) {
            self.read_buf.extend(data);
            self.ack = self.ack.wrapping_add(1);
            self.ooo.pop_front();
            if flags.contains(Flags::END) {
                self.remote_ended = Some(seq);
            }
            self.drain();
            return Offer::Delivered;
        }
        if idx >= MAX_OOO_PACKETS {
            return Offer::Dropped;
        }
        if self.ooo.len() <= idx {
            self.ooo.resize_with(idx + 1, || None);
        }
        if self.ooo[idx].is_some() {
            return Offer::Duplicate;
        }
        if flags.contains(Flags::END) {
            self.remote_ended = Some(seq);
        }
        self.ooo_bytes += data.len();
        self.ooo_count += 1;
        self.ooo[idx] = Some(Ooo {
            flags,
            data: data.to_vec(),
        });
        self.drain();
        Offer::Buffered
    }

    /// Records that the peer's END has sequence number `seq` (libudx `remote_ended`), for an
    /// END whose packet was not stored.
    pub fn note_end(&mut self, seq: u32) {
        if !self.eof && !seq_lt(seq, self.ack) {
            self.remote_ended = Some(seq);
        }
    }

    /// Moves packets that became in-order to the read buffer.
    fn drain(&mut self) {
        while let Some(Some(_)) = self.ooo.front() {
            if let Some(Some(p)) = self.ooo.pop_front() {
                self.ooo_count -= 1;
                self.ooo_bytes -= p.data.len();
                if p.flags.contains(Flags::DATA) {
                    self.read_buf.extend(&p.data);
                }
            }
            self.ack = self.ack.wrapping_add(1);
        }
    }

    /// Checks whether the end of stream was reached (call after sending the ACK, as libudx
    /// does). Returns true the first time.
    pub fn check_eof(&mut self) -> bool {
        if self.eof {
            return false;
        }
        match self.remote_ended {
            Some(end) if seq_lt(end, self.ack) => {
                self.eof = true;
                self.ooo.clear();
                self.ooo_count = 0;
                self.ooo_bytes = 0;
                true
            }
            _ => false,
        }
    }

    /// Fills `out` with up to [`MAX_SACKS`] blocks `(start, end)` of packets held above the
    /// cumulative ack, lowest first.
    pub fn sack_blocks(&self, out: &mut Vec<(u32, u32)>) {
        out.clear();
        let mut remaining = self.ooo_count;
        let mut start: Option<u32> = None;
        for (i, slot) in self.ooo.iter().enumerate().skip(1) {
            if remaining == 0 && start.is_none() {
                break;
            }
            let seq = self.ack.wrapping_add(i as u32);
            match (slot.is_some(), start) {
                (true, None) => {
                    start = Some(seq);
                    remaining -= 1;
                }
                (true, Some(_)) => remaining -= 1,
                (false, Some(s)) => {
                    out.push((s, seq));
                    start = None;
                    if out.len() == MAX_SACKS {
                        return;
                    }
                }
                (false, None) => {}
            }
        }
        if let Some(s) = start {
            out.push((s, self.ack.wrapping_add(self.ooo.len() as u32)));
        }
    }

    /// Copies up to `buf.len()` readable bytes out; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.read_buf.len());
        let (a, b) = self.read_buf.as_slices();
        let na = n.min(a.len());
        buf[..na].copy_from_slice(&a[..na]);
        buf[na..n].copy_from_slice(&b[..n - na]);
        self.read_buf.drain(..n);
        n
    }

    /// Moves up to `max` readable bytes into `out`.
    pub fn read_all(&mut self, out: &mut Vec<u8>, max: usize) -> usize {
        let n = self.read_buf.len().min(max);
        let (a, b) = self.read_buf.as_slices();
        let na = n.min(a.len());
        out.extend_from_slice(&a[..na]);
        out.extend_from_slice(&b[..n - na]);
        self.read_buf.drain(..n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: &mut Receiver) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_all(&mut v, usize::MAX);
        v
    }

    #[test]
    fn in_order_and_holes() {
        let mut r = Receiver::new(0, DEFAULT_RWND_MAX);
        assert_eq!(r.offer(0, Flags::DATA, b"a"), Offer::Delivered);
        assert_eq!(r.offer(2, Flags::DATA, b"c"), Offer::Buffered);
        assert_eq!(r.offer(3, Flags::DATA, b"d"), Offer::Buffered);
        assert_eq!(r.offer(5, Flags::DATA, b"f"), Offer::Buffered);
        assert_eq!(r.offer(5, Flags::DATA, b"f"), Offer::Duplicate);
        assert_eq!(r.ack(), 1);
        let mut s = Vec::new();
        r.sack_blocks(&mut s);
        assert_eq!(s, vec![(2, 4), (5, 6)]);
        assert_eq!(r.offer(1, Flags::DATA, b"b"), Offer::Delivered);
        assert_eq!(r.ack(), 4);
        r.sack_blocks(&mut s);
        assert_eq!(s, vec![(5, 6)]);
        assert_eq!(r.offer(0, Flags::DATA, b"a"), Offer::Duplicate);
        assert_eq!(read_all(&mut r), b"abcd");
        assert_eq!(r.rwnd(), DEFAULT_RWND_MAX);
    }

    #[test]
    fn end_only_and_eof() {
        let mut r = Receiver::new(7, DEFAULT_RWND_MAX);
        assert_eq!(r.offer(8, Flags::END, b""), Offer::Buffered);
        assert!(!r.check_eof());
        assert_eq!(r.offer(7, Flags::DATA, b"x"), Offer::Delivered);
        assert_eq!(r.ack(), 9);
        assert!(r.check_eof());
        assert!(!r.check_eof());
        assert_eq!(r.offer(9, Flags::DATA, b"y"), Offer::Closed);
        let mut r = Receiver::new(0, DEFAULT_RWND_MAX);
        assert_eq!(r.offer(0, Flags::DATA | Flags::END, b"z"), Offer::Delivered);
        assert!(r.check_eof());
        let mut r = Receiver::new(0, DEFAULT_RWND_MAX);
        assert_eq!(r.offer(0, Flags::END, b""), Offer::Buffered);
        assert_eq!(r.ack(), 1);
        assert!(r.check_eof());
    }

    #[test]
    fn bounded() {
        let mut r = Receiver::new(0, 1000);
        assert_eq!(
            r.offer(MAX_OOO_PACKETS as u32, Flags::DATA, b"x"),
            Offer::Dropped
        );
        assert_eq!(r.offer(0, Flags::DATA, &[0; 1500]), Offer::Delivered);
        assert_eq!(r.rwnd(), 0);
        assert_eq!(r.offer(1, Flags::DATA, &[0; 600]), Offer::Dropped);
        let mut buf = [0u8; 700];
        assert_eq!(r.read(&mut buf), 700);
        assert_eq!(r.rwnd(), 200);
        assert_eq!(r.offer(1, Flags::DATA, &[0; 600]), Offer::Delivered);
    }

    #[test]
    fn at_most_50_sack_blocks() {
        let mut r = Receiver::new(0, DEFAULT_RWND_MAX);
        for i in 0..200u32 {
            r.offer(2 * i + 1, Flags::DATA, b"x");
        }
        let mut s = Vec::new();
        r.sack_blocks(&mut s);
        assert_eq!(s.len(), MAX_SACKS);
        assert_eq!(s[0], (1, 2));
        assert_eq!(s[49], (99, 100));
    }
}
