//! Logic of the UDX fuzz targets, shared with the stable replay test
//! (`tests/tests/udx_fuzz.rs` includes this file by path). Depends on `hyperdht_proto` only.
//!
//! - [`link`]: two stream ends over a link whose drops, duplicates, reordering and delays come
//!   from the input; whatever is delivered must equal what was sent, in order, and once the
//!   faults stop the transfer must complete (unless a stream gave up with a timeout).
//! - [`packet`]: arbitrary bytes into the UDX decoders and into a live stream.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use hyperdht_proto::stream::packet::{self, Packet};
use hyperdht_proto::stream::{CloseReason, Config, StreamEvent, StreamId, UdxMux};
use hyperdht_proto::{SocketId, Timestamp};

/// Reads fault decisions from the input, then "deliver normally" once it runs out.
struct Tape<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Tape<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Two stream ends over a fault-injecting link driven by `data`.
pub fn link(data: &[u8]) {
    let mut tape = Tape { data, pos: 0 };
    let size_a =
        usize::from(tape.byte().unwrap_or(0)) * 512 + usize::from(tape.byte().unwrap_or(0));
    let size_b = usize::from(tape.byte().unwrap_or(0)) * 256;
    let send_a = pattern(size_a, 1);
    let send_b = pattern(size_b, 2);

    let addr_a: SocketAddr = "10.0.0.1:1".parse().unwrap();
    let addr_b: SocketAddr = "10.0.0.2:2".parse().unwrap();
    let mut now = Timestamp::from_millis(1);
    let mut a = UdxMux::new(Config::default(), [1; 32]);
    let mut b = UdxMux::new(Config::default(), [2; 32]);
    let sa = a.create_stream(now);
    let sb = b.create_stream(now);
    let (la, lb) = (a.local_id(sa).unwrap(), b.local_id(sb).unwrap());
    a.connect(now, sa, SocketId::SERVER, lb, addr_b).unwrap();
    b.connect(now, sb, SocketId::SERVER, la, addr_a).unwrap();

    // (arrival, to_b, bytes)
    let mut flight: Vec<(Timestamp, bool, Vec<u8>)> = Vec::new();
    let (mut wa, mut wb) = (0usize, 0usize);
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    let (mut fin_a, mut fin_b) = (false, false);
    let (mut closed_a, mut closed_b): (Option<CloseReason>, Option<CloseReason>) = (None, None);
    let mut buf = Vec::new();
    let base_delay = Duration::from_millis(5);
    // Nothing left in flight and no timer armed on either side.
    let mut idle = false;

    for _step in 0..200_000 {
        // Application: write, finish, read.
        if wa < send_a.len() {
            if let Ok(n) = a.write(now, sa, &send_a[wa..]) {
                wa += n;
            }
        } else if !fin_a {
            fin_a = a.finish(now, sa).is_ok();
        }
        if wb < send_b.len() {
            if let Ok(n) = b.write(now, sb, &send_b[wb..]) {
                wb += n;
            }
        } else if !fin_b {
            fin_b = b.finish(now, sb).is_ok();
        }
        let _ = a.read_into(sa, &mut ra);
        let _ = b.read_into(sb, &mut rb);
        while let Some(e) = a.poll_event() {
            if let StreamEvent::Closed { reason, .. } = e {
                closed_a = Some(reason);
            }
        }
        while let Some(e) = b.poll_event() {
            if let StreamEvent::Closed { reason, .. } = e {
                closed_b = Some(reason);
            }
        }
        // Delivered bytes are always a prefix of what was sent.
        assert!(send_a.starts_with(&rb), "b received bytes a never sent");
        assert!(send_b.starts_with(&ra), "a received bytes b never sent");
        if closed_a.is_some() && closed_b.is_some() {
            break;
        }

        // Network.
        for to_b in [true, false] {
            loop {
                let mux = if to_b { &mut a } else { &mut b };
                if mux.poll_transmit_into(now, &mut buf).is_none() {
                    break;
                }
                let (copies, extra) = match tape.byte() {
                    None => (1, 0),
                    Some(x) => match x % 8 {
                        5 => (0, 0),
                        6 => (2, 0),
                        7 => (1, u64::from(tape.byte().unwrap_or(0))),
                        _ => (1, 0),
                    },
                };
                for _ in 0..copies {
                    flight.push((
                        now + base_delay + Duration::from_millis(extra),
                        to_b,
                        buf.clone(),
                    ));
                }
            }
        }
        let next = [
            flight.iter().map(|f| f.0).min(),
            a.poll_timeout(),
            b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            idle = true;
            break;
        };
        now = now.max(next);
        let mut i = 0;
        while i < flight.len() {
            if flight[i].0 <= now {
                let (_, to_b, bytes) = flight.swap_remove(i);
                if to_b {
                    b.handle_datagram(now, SocketId::SERVER, addr_a, &bytes);
                } else {
                    a.handle_datagram(now, SocketId::SERVER, addr_b, &bytes);
                }
            } else {
                i += 1;
            }
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    let _ = a.read_into(sa, &mut ra);
    let _ = b.read_into(sb, &mut rb);
    assert!(send_a.starts_with(&rb));
    assert!(send_b.starts_with(&ra));
    let timed_out =
        closed_a == Some(CloseReason::TimedOut) || closed_b == Some(CloseReason::TimedOut);
    if !timed_out {
        assert_eq!(
            rb.len(),
            send_a.len(),
            "a -> b incomplete ({closed_a:?} {closed_b:?})"
        );
        assert_eq!(
            ra.len(),
            send_b.len(),
            "b -> a incomplete ({closed_a:?} {closed_b:?})"
        );
        // One side may give up on the ACK of its END after six RTOs and still finish: it
        // wrote everything and it was acknowledged, and it read the peer's whole stream
        // (`Stream::only_our_end_unacknowledged`: a udx-native peer closes once both sides
        // are done, so that ACK is never repeated). If every copy of that END was lost, the
        // peer waits for it, idle, as a udx-native peer would: no packet and no timer left
        // can tell it. Then it has everything but the END, and its own END was acknowledged.
        let gave_up_on_end = |closed: Option<CloseReason>, peer: &UdxMux, peer_id: StreamId| {
            idle && closed == Some(CloseReason::Finished)
                && peer.info(peer_id).is_some_and(|i| i.inflight == 0)
        };
        if closed_a.is_none() {
            assert!(
                gave_up_on_end(closed_b, &a, sa),
                "a never closed, b {closed_b:?}, idle {idle}"
            );
        } else {
            assert_eq!(closed_a, Some(CloseReason::Finished));
        }
        if closed_b.is_none() {
            assert!(
                gave_up_on_end(closed_a, &b, sb),
                "b never closed, a {closed_a:?}, idle {idle}"
            );
        } else {
            assert_eq!(closed_b, Some(CloseReason::Finished));
        }
    }
}

/// Arbitrary bytes into the packet decoder, and (with the id forced to a live stream) into a
/// connected stream, with arbitrary timer steps in between.
pub fn packet(data: &[u8]) {
    if let Ok(p) = Packet::decode(data) {
        let _ = p.payload();
        let n = p.sacks().count();
        assert!(n * packet::SACK_BLOCK_LEN <= p.body.len());
        assert_eq!(p.header.to_bytes()[..], data[..packet::HEADER_LEN]);
    } else {
        assert!(packet::peek_id(data).is_none());
    }

    let from: SocketAddr = "10.0.0.9:9".parse().unwrap();
    let mut now = Timestamp::from_millis(1);
    let mut mux = UdxMux::new(Config::default(), [3; 32]);
    let id: StreamId = mux.create_stream(now);
    let local = mux.local_id(id).unwrap();
    mux.connect(now, id, SocketId::SERVER, 7, from).unwrap();
    let _ = mux.write(now, id, &[1u8; 5000]);
    // Split the input into datagrams at 0xAA bytes; each becomes a packet for the stream.
    for chunk in data.split(|b| *b == 0xAA) {
        let mut dgram = chunk.to_vec();
        if dgram.len() >= packet::HEADER_LEN {
            dgram[0] = packet::MAGIC;
            dgram[1] = packet::VERSION;
            dgram[4..8].copy_from_slice(&local.to_le_bytes());
        }
        let step = dgram.first().copied().unwrap_or(0);
        mux.handle_datagram(now, SocketId::SERVER, from, &dgram);
        let mut buf = [0u8; 4096];
        let _ = mux.read(id, &mut buf);
        while mux.poll_transmit(now).is_some() {}
        while mux.poll_event().is_some() {}
        now += Duration::from_millis(u64::from(step) * 10);
        mux.handle_timeout(now);
    }
}
