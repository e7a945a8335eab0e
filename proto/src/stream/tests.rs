//! Two muxes over a simulated link: virtual time, seeded loss, duplication and reordering.

use super::*;
use crate::rng::Rng;

/// A one-hop link between two muxes with a fixed delay and random faults.
struct Link {
    a: UdxMux,
    b: UdxMux,
    addr_a: SocketAddr,
    addr_b: SocketAddr,
    now: Timestamp,
    /// (arrival, to_b, bytes)
    flight: Vec<(Timestamp, bool, Vec<u8>)>,
    delay: Duration,
    jitter: Duration,
    loss: f64,
    dup: f64,
    rng: Rng,
    sent: u64,
    /// Drop everything b sends (b is gone).
    b_gone: bool,
}

impl Link {
    fn new(delay_ms: u64, loss: f64, seed: u8) -> Link {
        Link {
            a: UdxMux::new(Config::default(), [seed; 32]),
            b: UdxMux::new(Config::default(), [seed.wrapping_add(1); 32]),
            addr_a: "127.0.0.1:1000".parse().unwrap(),
            addr_b: "127.0.0.1:2000".parse().unwrap(),
            now: Timestamp::from_millis(1),
            flight: Vec::new(),
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::ZERO,
            loss,
            dup: 0.0,
            rng: Rng::from_seed([seed; 32]),
            sent: 0,
            b_gone: false,
        }
    }

    fn pair(&mut self) -> (StreamId, StreamId) {
        let sa = self.a.create_stream(self.now);
        let sb = self.b.create_stream(self.now);
        let (la, lb) = (self.a.local_id(sa).unwrap(), self.b.local_id(sb).unwrap());
        self.a
            .connect(self.now, sa, SocketId::SERVER, lb, self.addr_b)
            .unwrap();
        self.b
            .connect(self.now, sb, SocketId::SERVER, la, self.addr_a)
            .unwrap();
        (sa, sb)
    }

    fn flush(&mut self) {
        self.a.check_index();
        self.b.check_index();
        let mut buf = Vec::new();
        for to_b in [true, false] {
            loop {
                let mux = if to_b { &mut self.a } else { &mut self.b };
                if mux.poll_transmit_into(self.now, &mut buf).is_none() {
                    break;
                }
                self.sent += 1;
                if self.rng.unit() < self.loss || (!to_b && self.b_gone) {
                    continue;
                }
                let copies = if self.rng.unit() < self.dup { 2 } else { 1 };
                for _ in 0..copies {
                    let j = if self.jitter.is_zero() {
                        Duration::ZERO
                    } else {
                        Duration::from_nanos(self.rng.below(self.jitter.as_nanos() as u64))
                    };
                    self.flight
                        .push((self.now + self.delay + j, to_b, buf.clone()));
                }
            }
        }
    }

    /// Advances to the next event (arrival or timer) and processes it.
    fn step(&mut self) -> bool {
        self.flush();
        let next_arrival = self.flight.iter().map(|f| f.0).min();
        let next_timer = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = [next_arrival, next_timer].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(next);
        let mut i = 0;
        while i < self.flight.len() {
            if self.flight[i].0 <= self.now {
                let (_, to_b, bytes) = self.flight.swap_remove(i);
                let (mux, from) = if to_b {
                    (&mut self.b, self.addr_a)
                } else {
                    (&mut self.a, self.addr_b)
                };
                mux.handle_datagram(self.now, SocketId::SERVER, from, &bytes);
            } else {
                i += 1;
            }
        }
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.a.check_index();
        self.b.check_index();
        true
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Sends `data` each way, finishes both sides, and checks bytes and clean close.
fn transfer(link: &mut Link, size: usize, deadline: Duration) {
    let (sa, sb) = link.pair();
    let da = pattern(size, 1);
    let db = pattern(size, 2);
    let (mut wa, mut wb) = (0usize, 0usize);
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    let (mut closed_a, mut closed_b) = (None, None);
    let (mut fin_a, mut fin_b) = (false, false);
    let end = link.now + deadline;
    while link.now < end {
        if wa < da.len() {
            if let Ok(n) = link.a.write(link.now, sa, &da[wa..]) {
                wa += n;
            }
        } else if !fin_a {
            link.a.finish(link.now, sa).unwrap();
            fin_a = true;
        }
        if wb < db.len() {
            if let Ok(n) = link.b.write(link.now, sb, &db[wb..]) {
                wb += n;
            }
        } else if !fin_b {
            link.b.finish(link.now, sb).unwrap();
            fin_b = true;
        }
        let _ = link.a.read_into(sa, &mut ra);
        let _ = link.b.read_into(sb, &mut rb);
        while let Some(e) = link.a.poll_event() {
            if let StreamEvent::Closed { reason, .. } = e {
                closed_a = Some(reason);
            }
        }
        while let Some(e) = link.b.poll_event() {
            if let StreamEvent::Closed { reason, .. } = e {
                closed_b = Some(reason);
            }
        }
        if closed_a.is_some() && closed_b.is_some() {
            let _ = link.a.read_into(sa, &mut ra);
            let _ = link.b.read_into(sb, &mut rb);
            break;
        }
        if !link.step() {
            break;
        }
    }
    assert_eq!(rb.len(), da.len(), "b received");
    assert!(rb == da, "b bytes differ");
    assert_eq!(ra.len(), db.len(), "a received");
    assert!(ra == db, "a bytes differ");
    assert_eq!(closed_a, Some(CloseReason::Finished));
    assert_eq!(closed_b, Some(CloseReason::Finished));
}

#[test]
fn clean_link_transfer() {
    let mut link = Link::new(5, 0.0, 1);
    transfer(&mut link, 2_000_000, Duration::from_secs(60));
}

#[test]
fn lossy_link_transfer() {
    for (i, loss) in [0.01, 0.05, 0.2].into_iter().enumerate() {
        let mut link = Link::new(10, loss, 10 + i as u8);
        link.dup = 0.02;
        link.jitter = Duration::from_millis(20);
        transfer(&mut link, 300_000, Duration::from_secs(600));
    }
}

#[test]
fn destroy_resets_peer() {
    let mut link = Link::new(5, 0.0, 3);
    let (sa, sb) = link.pair();
    link.a.write(link.now, sa, b"x").unwrap();
    link.step();
    link.step();
    link.a.reset(link.now, sa);
    for _ in 0..10 {
        link.step();
    }
    let mut events = Vec::new();
    while let Some(e) = link.b.poll_event() {
        events.push(e);
    }
    assert!(events.contains(&StreamEvent::Closed {
        id: sb,
        reason: CloseReason::Reset
    }));
    let mut buf = [0u8; 4];
    assert_eq!(link.b.read(sb, &mut buf), Ok(1));
}

/// The peer ended its side, took every byte and our END, and closed before its ACK of our
/// END reached us (udx-native closes once both sides are done; that ACK was lost): we finish,
/// not time out, since both directions were delivered whole.
#[test]
fn a_peer_that_closed_after_our_end_finishes_the_stream() {
    let mut link = Link::new(5, 0.0, 6);
    let (sa, sb) = link.pair();
    link.a.write(link.now, sa, b"hello").unwrap();
    link.b.finish(link.now, sb).unwrap();
    // b's END and a's bytes are through and acknowledged.
    for _ in 0..20 {
        link.step();
    }
    let mut buf = [0u8; 8];
    assert_eq!(link.b.read(sb, &mut buf), Ok(5));
    // a ends; b takes the END, and everything b sends from now on is lost.
    link.a.finish(link.now, sa).unwrap();
    link.b_gone = true;
    let mut closed = None;
    while link.step() {
        while let Some(e) = link.a.poll_event() {
            if let StreamEvent::Closed { reason, .. } = e {
                closed = Some(reason);
            }
        }
        if closed.is_some() || link.now.as_millis() > 60_000 {
            break;
        }
    }
    assert_eq!(closed, Some(CloseReason::Finished));
}

#[test]
fn dead_peer_times_out() {
    let mut link = Link::new(5, 1.0, 4);
    let (sa, _) = link.pair();
    link.a.write(link.now, sa, b"hello").unwrap();
    let mut closed = None;
    while link.step() {
        while let Some(e) = link.a.poll_event() {
            if let StreamEvent::Closed { reason, .. } = e {
                closed = Some((reason, link.now));
            }
        }
        if closed.is_some() {
            break;
        }
    }
    let (reason, at) = closed.unwrap();
    assert_eq!(reason, CloseReason::TimedOut);
    // 1 s + 6 x 2 s with the 1 s RTO floor.
    assert!(
        at.as_millis() >= 12_000 && at.as_millis() <= 14_000,
        "{at:?}"
    );
}

#[test]
fn non_udx_falls_through() {
    let mut link = Link::new(5, 0.0, 5);
    let (sa, _) = link.pair();
    let local = link.a.local_id(sa).unwrap();
    let from = link.addr_b;
    assert!(!link
        .a
        .handle_datagram(link.now, SocketId::SERVER, from, &[0]));
    assert!(!link.a.handle_datagram(
        link.now,
        SocketId::SERVER,
        from,
        b"\x03\x00dht-rpc request......"
    ));
    let mut h = packet::Header {
        id: local.wrapping_add(1),
        ..Default::default()
    }
    .to_bytes();
    assert!(!link.a.handle_datagram(link.now, SocketId::SERVER, from, &h));
    h = packet::Header {
        id: local,
        ..Default::default()
    }
    .to_bytes();
    assert!(link.a.handle_datagram(link.now, SocketId::SERVER, from, &h));
}

#[test]
fn many_streams_share_a_mux() {
    let mut link = Link::new(2, 0.01, 6);
    let pairs: Vec<(StreamId, StreamId)> = (0..4).map(|_| link.pair()).collect();
    let data: Vec<Vec<u8>> = (0..4)
        .map(|i| pattern(50_000 + i * 7_000, i as u8))
        .collect();
    let mut written = [0usize; 4];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); 4];
    for _ in 0..200_000 {
        for (i, (sa, sb)) in pairs.iter().enumerate() {
            if written[i] < data[i].len() {
                if let Ok(n) = link.a.write(link.now, *sa, &data[i][written[i]..]) {
                    written[i] += n;
                }
            }
            let _ = link.b.read_into(*sb, &mut got[i]);
        }
        while link.a.poll_event().is_some() {}
        while link.b.poll_event().is_some() {}
        if got.iter().zip(&data).all(|(g, d)| g.len() == d.len()) {
            break;
        }
        if !link.step() {
            break;
        }
    }
    assert_eq!(got, data);
    assert_eq!(link.a.len(), 4);
}

/// Idle streams cost nothing per poll: once everything is sent, no stream is left among the
/// ones `poll_transmit` visits, and a write puts back only the stream written to.
#[test]
fn idle_streams_are_not_polled() {
    let mut link = Link::new(2, 0.0, 8);
    let pairs: Vec<(StreamId, StreamId)> = (0..200).map(|_| link.pair()).collect();
    let (sa, sb) = pairs[17];
    link.a.write(link.now, sa, b"hello").unwrap();
    let mut got = Vec::new();
    for _ in 0..1_000 {
        let _ = link.b.read_into(sb, &mut got);
        if got == b"hello" {
            break;
        }
        assert!(link.step(), "the link went quiet before the bytes arrived");
    }
    assert_eq!(got, b"hello");
    // Let the acknowledgements settle.
    link.flush();
    for _ in 0..3 {
        let _ = link.step();
    }
    link.flush();
    assert!(
        link.a.ready.is_empty(),
        "{} streams still polled",
        link.a.ready.len()
    );
    assert!(
        link.b.ready.is_empty(),
        "{} streams still polled",
        link.b.ready.len()
    );
    link.a.write(link.now, pairs[3].0, b"x").unwrap();
    assert_eq!(
        link.a.ready.iter().copied().collect::<Vec<_>>(),
        vec![pairs[3].0]
    );
    link.a.check_index();
}

#[test]
fn flow_control_with_a_slow_reader() {
    let mut link = Link::new(5, 0.0, 7);
    let config = Config {
        rwnd_max: 64 * 1024,
        ..Config::default()
    };
    link.b = UdxMux::new(config, [8; 32]);
    let (sa, sb) = link.pair();
    let data = pattern(1_000_000, 3);
    let mut written = 0;
    let mut got = Vec::new();
    let mut max_unread = 0usize;
    for step in 0..400_000u64 {
        if written < data.len() {
            if let Ok(n) = link.a.write(link.now, sa, &data[written..]) {
                written += n;
            }
        }
        // The reader stalls for long stretches, then takes a little at a time.
        if (step / 2000) % 2 == 1 {
            let mut buf = [0u8; 4096];
            if let Ok(n) = link.b.read(sb, &mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        max_unread = max_unread.max(link.b.streams.get(&sb).map_or(0, |s| s.readable_bytes()));
        while link.a.poll_event().is_some() {}
        while link.b.poll_event().is_some() {}
        if got.len() == data.len() {
            break;
        }
        if !link.step() {
            break;
        }
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    // The window held the sender back: never more than twice the window buffered.
    assert!(max_unread <= 2 * 64 * 1024, "{max_unread}");
    assert!(
        max_unread >= 32 * 1024,
        "the window was never filled: {max_unread}"
    );
}

/// `a` with `n` data packets in flight that `b` never saw: their (seq range, a's local id).
fn in_flight(link: &mut Link, (sa, sb): (StreamId, StreamId), n: usize) -> (u32, u32, u32) {
    let local = link.a.local_id(sa).unwrap();
    let remote = link.b.local_id(sb).unwrap();
    link.a
        .write(link.now, sa, &pattern(n * 1000, 3))
        .expect("write");
    let mut seqs = Vec::new();
    let mut buf = Vec::new();
    while link.a.poll_transmit_into(link.now, &mut buf).is_some() {
        let p = packet::Packet::decode(&buf).unwrap();
        if p.header.id == remote && p.header.flags.contains(packet::Flags::DATA) {
            seqs.push(p.header.seq);
        }
    }
    assert!(seqs.len() >= 4, "{} packets in flight", seqs.len());
    let (first, last) = (seqs[0], *seqs.last().unwrap());
    assert_eq!(last.wrapping_sub(first) as usize + 1, seqs.len());
    (first, last.wrapping_add(1), local)
}

/// An ACK from `b` for `a`'s stream `local`: cumulative `ack`, these SACK blocks.
fn sack(local: u32, ack: u32, blocks: &[(u32, u32)]) -> Vec<u8> {
    let h = packet::Header {
        flags: packet::Flags::SACK,
        id: local,
        rwnd: 1 << 20,
        ack,
        ..Default::default()
    };
    let mut out = Vec::new();
    packet::encode_ack(&mut out, &h, blocks);
    out
}

#[test]
fn a_hostile_sack_costs_at_most_the_window_and_honest_ones_still_count() {
    let mut link = Link::new(5, 0.0, 9);
    let (sa, sb) = link.pair();
    let (base, seq, local) = in_flight(&mut link, (sa, sb), 40);
    let window = u64::from(seq.wrapping_sub(base));
    let from = link.addr_b;

    // As many blocks as a 64 KiB datagram holds, each the whole window but the first packet:
    // walking them all would be 8 000 windows.
    let hostile = sack(local, base, &vec![(base.wrapping_add(1), seq); 8000]);
    assert!(link
        .a
        .handle_datagram(link.now, SocketId::SERVER, from, &hostile));
    let stream = &link.a.streams[&sa];
    assert_eq!(stream.sack_steps, window - 1, "one walk of the window");
    assert_eq!(stream.stats.dropped_sacks, 7999);

    // An honest ACK on a fresh stream: two disjoint blocks, every SACKed packet counted.
    let (sa, sb) = link.pair();
    let (base, seq, local) = in_flight(&mut link, (sa, sb), 40);
    let honest = [
        (base.wrapping_add(1), base.wrapping_add(3)),
        (base.wrapping_add(4), seq),
    ];
    let walked = u64::from(seq.wrapping_sub(base)) - 2;
    assert!(link.a.handle_datagram(
        link.now,
        SocketId::SERVER,
        from,
        &sack(local, base, &honest)
    ));
    let stream = &link.a.streams[&sa];
    assert_eq!((stream.sack_steps, stream.stats.dropped_sacks), (walked, 0));
    // The SACKed packets are out of flight: only `base` and `base + 3` remain.
    assert_eq!(stream.unsacked(), [base, base.wrapping_add(3)]);
}
