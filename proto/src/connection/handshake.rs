//! A client's handshake as a server holds it (hyperdht `lib/server.js` `_addHandshake`):
//! the Noise reply, the responder's puncher, and the handshake's own deadlines. The steps that
//! move it are the endpoint's, in `node/responder.rs`.

use std::net::SocketAddrV4;

use core::time::Duration;

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
    pub(crate) pending_replies: Vec<PendingReply>,
    /// A PEER_HOLEPUNCH waiting for the NAT analysis.
    pub(crate) pending_holepunch: Option<PendingHolepunch>,
}

impl ServerHandshake {
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
