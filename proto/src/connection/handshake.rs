//! A client's handshake as a server holds it (hyperdht `lib/server.js` `_addHandshake`):
//! the Noise reply, the responder's puncher, and the handshake's own deadlines. The steps that
//! move it are the endpoint's, in `node/responder.rs`.

use std::net::SocketAddrV4;

use core::time::Duration;

use crate::config::MAX_PENDING_REPLIES;
use crate::holepunch::puncher::Puncher;
use crate::holepunch::SecurePayload;
use crate::ids::SocketId;
use crate::noise::HandshakeOutput;
use crate::time::Timestamp;
use crate::wire::holepunch::HolepunchPayload;
use crate::wire::noise::NoisePayload;

/// How long a finished handshake's slot and dedupe entry are kept (`HANDSHAKE_CLEAR_WAIT`).
pub const HANDSHAKE_CLEAR_WAIT: Duration = Duration::from_secs(10);
/// How long a handshake waits for its path before giving up (`HANDSHAKE_INITIAL_TIMEOUT`).
pub const HANDSHAKE_INITIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client handshake held by a server.
#[derive(Debug)]
pub(crate) struct ServerHandshake {
    /// Its slot in the server's table: the id clients name in PEER_HOLEPUNCH.
    pub slot: usize,
    /// The server's DHT target (`H(public key)`).
    pub target: [u8; 32],
    pub noise_key: Vec<u8>,
    pub reply: Option<Vec<u8>>,
    pub output: Option<HandshakeOutput>,
    pub remote_payload: Option<NoisePayload>,
    pub secure: Option<SecurePayload>,
    pub puncher: Option<Puncher>,
    pub reply_from_puncher: bool,
    pub round: u64,
    pub done: bool,
    pub prepunch_deadline: Option<Timestamp>,
    pub clear_at: Option<Timestamp>,
    /// Handshake replies waiting for the puncher socket, at most [`MAX_PENDING_REPLIES`]
    /// (the newest).
    pending_replies: Vec<PendingReply>,
    /// A PEER_HOLEPUNCH waiting for the NAT analysis.
    pending_holepunch: Option<PendingHolepunch>,
}

impl ServerHandshake {
    /// A handshake in `slot` of the server with DHT `target`, for the client's first Noise
    /// message `noise_key`; it clears [`HANDSHAKE_CLEAR_WAIT`] from `now` unless it goes on.
    pub fn new(now: Timestamp, slot: usize, target: [u8; 32], noise_key: &[u8]) -> Self {
        ServerHandshake {
            slot,
            target,
            noise_key: noise_key.to_vec(),
            reply: None,
            output: None,
            remote_payload: None,
            secure: None,
            puncher: None,
            reply_from_puncher: false,
            round: 0,
            done: false,
            prepunch_deadline: None,
            clear_at: Some(now + HANDSHAKE_CLEAR_WAIT),
            pending_replies: Vec::new(),
            pending_holepunch: None,
        }
    }

    /// Whether it still waits for its path (answered, and no path opened yet).
    pub fn awaits_path(&self) -> bool {
        !self.done && self.output.is_some()
    }

    /// Whether its replies wait for the puncher's socket.
    pub fn replies_wait(&self) -> bool {
        self.reply_from_puncher && self.puncher.as_ref().and_then(Puncher::socket).is_none()
    }

    /// Holds a reply until the puncher's socket is bound. Bounded: the newest
    /// [`MAX_PENDING_REPLIES`] are kept (a client waits for the answer to its latest
    /// retransmit; older ones it may have given up on). Returns whether an older one was
    /// dropped.
    pub fn hold_reply(&mut self, reply: PendingReply) -> bool {
        let overflow = self.pending_replies.len() >= MAX_PENDING_REPLIES;
        if overflow {
            self.pending_replies.remove(0);
        }
        self.pending_replies.push(reply);
        overflow
    }

    /// The held replies, once the puncher's socket is bound (else none).
    pub fn take_replies_if_bound(&mut self) -> Vec<PendingReply> {
        if self.puncher.as_ref().and_then(Puncher::socket).is_some() {
            core::mem::take(&mut self.pending_replies)
        } else {
            Vec::new()
        }
    }

    /// Keeps a PEER_HOLEPUNCH until the puncher's NAT analysis is done.
    pub fn hold_holepunch(&mut self, pending: PendingHolepunch) {
        self.pending_holepunch = Some(pending);
    }

    /// The held PEER_HOLEPUNCH, once the NAT analysis is done (else none).
    pub fn take_holepunch_if_analyzed(&mut self) -> Option<PendingHolepunch> {
        if self.puncher.as_ref().is_some_and(Puncher::is_analyzed) {
            self.pending_holepunch.take()
        } else {
            None
        }
    }

    /// Forgets a held PEER_HOLEPUNCH.
    pub fn drop_holepunch(&mut self) {
        self.pending_holepunch = None;
    }

    /// Clears [`HANDSHAKE_CLEAR_WAIT`] from `now`, unless a path opened or a clear is set.
    pub fn clear_later(&mut self, now: Timestamp) {
        if !self.done && self.clear_at.is_none() {
            self.clear_at = Some(now + HANDSHAKE_CLEAR_WAIT);
        }
    }

    /// Whether its wait for a path ran out by `now` (the wait is then over).
    pub fn take_prepunch_timeout(&mut self, now: Timestamp) -> bool {
        let due = self.prepunch_deadline.is_some_and(|t| t <= now);
        if due {
            self.prepunch_deadline = None;
        }
        due
    }

    /// Whether it is due to clear by `now`.
    pub fn clear_due(&self, now: Timestamp) -> bool {
        self.clear_at.is_some_and(|t| t <= now)
    }

    /// The earliest of its own deadlines (its puncher's are the connection's).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match (self.prepunch_deadline, self.clear_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct PendingReply {
    pub(crate) tid: u16,
    pub(crate) mode: u64,
    pub(crate) from: SocketAddrV4,
    pub(crate) in_socket: SocketId,
    pub(crate) peer_address: Option<SocketAddrV4>,
    pub(crate) relay_address: Option<SocketAddrV4>,
}

#[derive(Clone, Debug)]
pub(crate) struct PendingHolepunch {
    pub(crate) tid: u16,
    pub(crate) from: SocketAddrV4,
    pub(crate) to: SocketAddrV4,
    pub(crate) socket: SocketId,
    pub(crate) peer_address: SocketAddrV4,
    pub(crate) payload: HolepunchPayload,
    pub(crate) reopened: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(tid: u16) -> PendingReply {
        PendingReply {
            tid,
            mode: 0,
            from: SocketAddrV4::new([10, 0, 0, 1].into(), 1),
            in_socket: SocketId::SERVER,
            peer_address: None,
            relay_address: None,
        }
    }

    /// A flood of retransmitted handshakes while the puncher socket opens keeps only the
    /// newest replies, and says when it dropped one.
    #[test]
    fn held_replies_are_bounded_and_keep_the_newest() {
        let mut h = ServerHandshake::new(Timestamp::ZERO, 0, [0; 32], b"noise");
        let n = MAX_PENDING_REPLIES as u16 + 5;
        let dropped = (0..n).filter(|&tid| h.hold_reply(reply(tid))).count();
        assert_eq!(dropped, 5);
        let tids: Vec<u16> = h.pending_replies.iter().map(|r| r.tid).collect();
        assert_eq!(tids, (5..n).collect::<Vec<_>>());
        // No puncher, so no socket: the replies stay held.
        assert!(h.take_replies_if_bound().is_empty());
        assert_eq!(h.pending_replies.len(), MAX_PENDING_REPLIES);
    }

    #[test]
    fn a_handshake_clears_on_its_own_timer() {
        let t0 = Timestamp::ZERO;
        let mut h = ServerHandshake::new(t0, 0, [0; 32], b"noise");
        assert_eq!(h.poll_timeout(), Some(t0 + HANDSHAKE_CLEAR_WAIT));
        assert!(!h.clear_due(t0));
        assert!(h.clear_due(t0 + HANDSHAKE_CLEAR_WAIT));
        h.clear_at = None;
        h.prepunch_deadline = Some(t0 + HANDSHAKE_INITIAL_TIMEOUT);
        assert!(!h.take_prepunch_timeout(t0));
        assert!(h.take_prepunch_timeout(t0 + HANDSHAKE_INITIAL_TIMEOUT));
        assert_eq!(h.poll_timeout(), None, "the wait is over once taken");
        h.clear_later(t0 + HANDSHAKE_INITIAL_TIMEOUT);
        assert_eq!(
            h.poll_timeout(),
            Some(t0 + HANDSHAKE_INITIAL_TIMEOUT + HANDSHAKE_CLEAR_WAIT)
        );
    }
}
