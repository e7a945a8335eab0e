//! Packet relays (libudx `udx_stream_relay_to`, as a blind relay uses it): pairs of relay
//! ends that forward every UDX packet between two remote streams without reading it.
//!
//! A relay end has a local stream id and the remote stream id of the peer it serves. It
//! learns the peer's path from the first packet addressed to it (the firewall step of
//! `blind-relay`'s `_onfirewall`: connect to wherever the packet came from). Each packet
//! for one end goes out unchanged except for bytes 4..8, which become the other end's remote
//! id, from the socket and to the address the other end learnt. A DESTROY packet is forwarded,
//! then ends the pair.
//!
//! Deviation: libudx drops packets for an end whose partner has no path yet. Both peers send
//! their secret-stream header the moment the relay answers, so the first one to arrive was
//! always dropped and only its retransmission (a 1 s RTO later) got through. Here up to
//! [`MAX_HELD`] such packets per end are held and forwarded once the partner's path is known.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::packet::{peek_id, Flags, HEADER_LEN};
use crate::event::Transmit;
use crate::ids::SocketId;

/// Packets held per end while its partner's path is unknown.
pub const MAX_HELD: usize = 8;

/// One end of a relayed pair.
#[derive(Debug)]
struct RelayEnd {
    /// The stream id of the peer this end serves.
    remote_id: u32,
    /// Where that peer is, once its first packet arrived.
    path: Option<(SocketId, SocketAddr)>,
    /// The local id of the other end.
    partner: u32,
    /// Packets from this end's peer that came before the partner had a path.
    held: Vec<Vec<u8>>,
}

/// What a datagram for a relay end came to.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayOutcome {
    /// Forwarded: send these (the packet, and any the other side sent before this end's
    /// path was known).
    Forward(Vec<Transmit>),
    /// Held until the partner has a path, or dropped (more than [`MAX_HELD`], or no UDX
    /// packet).
    Dropped,
    /// A DESTROY: forwarded if the partner has a path, and the pair (identified by both local
    /// ids) is gone.
    Ended {
        /// The DESTROY, if it could go on.
        forward: Option<Transmit>,
        /// The pair's local ids.
        ends: (u32, u32),
    },
}

/// The relay ends of one mux, by local id.
#[derive(Debug, Default)]
pub struct Relays {
    ends: HashMap<u32, RelayEnd>,
}

impl Relays {
    /// Whether `local_id` is a relay end.
    pub fn contains(&self, local_id: u32) -> bool {
        self.ends.contains_key(&local_id)
    }

    /// Pairs two new ends: `(local id, remote id of the peer it serves)` each.
    pub fn insert_pair(&mut self, a: (u32, u32), b: (u32, u32)) {
        self.ends.insert(
            a.0,
            RelayEnd {
                remote_id: a.1,
                path: None,
                partner: b.0,
                held: Vec::new(),
            },
        );
        self.ends.insert(
            b.0,
            RelayEnd {
                remote_id: b.1,
                path: None,
                partner: a.0,
                held: Vec::new(),
            },
        );
    }

    /// Forgets the pair `local_id` belongs to.
    pub fn remove_pair(&mut self, local_id: u32) {
        if let Some(end) = self.ends.remove(&local_id) {
            self.ends.remove(&end.partner);
        }
    }

    /// Relay ends (two per pair).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// A datagram for relay end `local_id` arrived on `socket` from `from`.
    pub fn handle_datagram(
        &mut self,
        local_id: u32,
        socket: SocketId,
        from: SocketAddr,
        bytes: &[u8],
    ) -> RelayOutcome {
        if peek_id(bytes) != Some(local_id) {
            return RelayOutcome::Dropped;
        }
        let Some(end) = self.ends.get_mut(&local_id) else {
            return RelayOutcome::Dropped;
        };
        let first = end.path.is_none();
        end.path.get_or_insert((socket, from));
        let partner = end.partner;
        let destroy = Flags(bytes[2]).contains(Flags::DESTROY);
        let forward = self.ends.get(&partner).and_then(|other| {
            let (socket, dst) = other.path?;
            Some(rewrite(bytes, other.remote_id, socket, dst))
        });
        if destroy {
            self.remove_pair(local_id);
            return RelayOutcome::Ended {
                forward,
                ends: (local_id, partner),
            };
        }
        let mut out: Vec<Transmit> = forward.into_iter().collect();
        if out.is_empty() {
            if let Some(end) = self.ends.get_mut(&local_id) {
                if end.held.len() < MAX_HELD {
                    end.held.push(bytes.to_vec());
                }
            }
            return RelayOutcome::Dropped;
        }
        if first {
            // This end's path is new: what the partner's peer sent before can go now.
            let (remote_id, path) = match self.ends.get(&local_id) {
                Some(end) => (end.remote_id, end.path),
                None => return RelayOutcome::Forward(out),
            };
            if let (Some((socket, dst)), Some(other)) = (path, self.ends.get_mut(&partner)) {
                for held in other.held.drain(..) {
                    out.push(rewrite(&held, remote_id, socket, dst));
                }
            }
        }
        RelayOutcome::Forward(out)
    }
}

/// `bytes` with its stream id (bytes 4..8) set to `remote_id`, to go out from `socket` to
/// `dst`.
fn rewrite(bytes: &[u8], remote_id: u32, socket: SocketId, dst: SocketAddr) -> Transmit {
    let mut payload = bytes.to_vec();
    debug_assert!(payload.len() >= HEADER_LEN);
    payload[4..8].copy_from_slice(&remote_id.to_le_bytes());
    Transmit {
        socket,
        dst,
        ttl: None,
        payload,
    }
}

impl Relays {
    /// Packets held for ends whose partner has no path yet, in all (tests).
    pub fn held(&self) -> usize {
        self.ends.values().map(|e| e.held.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(id: u32, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![0xff, 1, flags, 0];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn forwards_with_the_partners_remote_id_once_both_paths_are_known() {
        let mut r = Relays::default();
        // End 10 serves peer A (its stream 7), end 20 serves peer B (its stream 9).
        r.insert_pair((10, 7), (20, 9));
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:2000".parse().unwrap();
        // A speaks first: B's path is unknown, so it is held (and A's path is learnt).
        assert_eq!(
            r.handle_datagram(10, SocketId::SERVER, a, &packet(10, 1, b"hi")),
            RelayOutcome::Dropped
        );
        assert_eq!(r.held(), 1);
        // B's packet goes to A, addressed to A's stream 7, from the socket A used; A's held
        // packet follows to B's stream 9.
        let RelayOutcome::Forward(t) =
            r.handle_datagram(20, SocketId::CLIENT, b, &packet(20, 1, b"yo"))
        else {
            panic!("not forwarded");
        };
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].socket, t[0].dst), (SocketId::SERVER, a));
        assert_eq!(t[0].payload, packet(7, 1, b"yo"));
        assert_eq!((t[1].socket, t[1].dst), (SocketId::CLIENT, b));
        assert_eq!(t[1].payload, packet(9, 1, b"hi"));
        assert_eq!(r.held(), 0);
        // Now A's packets reach B's stream 9 at once.
        let RelayOutcome::Forward(t) =
            r.handle_datagram(10, SocketId::SERVER, a, &packet(10, 0, b""))
        else {
            panic!("not forwarded");
        };
        assert_eq!(
            t,
            vec![rewrite(&packet(10, 0, b""), 9, SocketId::CLIENT, b)]
        );
        // A DESTROY is forwarded and ends the pair.
        let out = r.handle_datagram(20, SocketId::CLIENT, b, &packet(20, 0x10, b""));
        assert!(matches!(
            out,
            RelayOutcome::Ended {
                forward: Some(_),
                ends: (20, 10)
            }
        ));
        assert!(r.is_empty());
        // Junk for an end, or a packet whose id is not the end's, is dropped; at most MAX_HELD
        // packets wait per end.
        r.insert_pair((1, 2), (3, 4));
        assert_eq!(
            r.handle_datagram(1, SocketId::SERVER, a, b"\xff\x01"),
            RelayOutcome::Dropped
        );
        assert_eq!(
            r.handle_datagram(1, SocketId::SERVER, a, &packet(3, 1, b"")),
            RelayOutcome::Dropped
        );
        for _ in 0..MAX_HELD + 3 {
            r.handle_datagram(1, SocketId::SERVER, a, &packet(1, 1, b"x"));
        }
        assert_eq!(r.held(), MAX_HELD);
    }
}
