//! Blind-relay pairing, as a relay's client (npm `blind-relay` 1.6 `Client`): the options that
//! name a relay, the `pair` message, and the state one relay link carries for the connection
//! it pairs. How the endpoint runs a link is `node/relay.rs`.

use core::time::Duration;
use std::net::SocketAddrV4;

use crate::dht::KeyPair;
use crate::ids::ConnId;
use crate::protomux::{ChannelId, Protomux};
use crate::time::Timestamp;
use crate::wire::compact::{write_uint, Reader};

/// The protomux protocol of blind relays (`blind-relay` `protocol: 'blind-relay'`).
pub const PROTOCOL: &str = "blind-relay";
/// How long a relay may take to pair (`relayTimeout = setTimeout(onabort, 15000)`).
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// Message types on the `blind-relay` channel (`addMessage` order).
pub(crate) const PAIR: u64 = 0;
pub(crate) const UNPAIR: u64 = 1;

/// Options of [`Node::connect_with`] (JS `dht.connect(publicKey, opts)`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The key pair to connect as (JS `keyPair`); `None`: the node's
    /// [default key pair](Node::default_key_pair).
    pub key_pair: Option<KeyPair>,
    /// Ask the server to meet us at this blind relay (its public key) too (JS `relayThrough`).
    pub relay_through: Option<[u8; 32]>,
    /// Open a session to the server's address in the first holepunch round, so a server on
    /// a consistent NAT can reach us at once (JS `fastOpen`, default on).
    pub fast_open: bool,
    /// DHT nodes the server announced through (a topic lookup's `relay_addresses`, JS
    /// `relayAddresses`): handshakes go through them at once, alongside the FIND_PEER walk.
    pub relay_addresses: Vec<SocketAddrV4>,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            key_pair: None,
            relay_through: None,
            fast_open: true,
            relay_addresses: Vec::new(),
        }
    }
}

impl ConnectOptions {
    /// These options, connecting as `key` ([`ConnectOptions::key_pair`]).
    pub fn with_key_pair(mut self, key: &KeyPair) -> ConnectOptions {
        self.key_pair = Some(key.clone());
        self
    }

    /// These options, meeting the server at the blind relay `relay_public_key` too
    /// ([`ConnectOptions::relay_through`]).
    pub fn with_relay_through(mut self, relay_public_key: [u8; 32]) -> ConnectOptions {
        self.relay_through = Some(relay_public_key);
        self
    }
}

/// `pair` (`blind-relay` `m.pair`): `flags (bitfield(7): bit 0 isInitiator) ‖ token (32) ‖
/// id (uint) ‖ seq (uint)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    /// Whether the sender initiated the connection being relayed.
    pub is_initiator: bool,
    /// The pairing token both peers send.
    pub token: [u8; 32],
    /// The sender's UDX stream id (to the relay), or the relay's (from it).
    pub id: u64,
    /// Always 0.
    pub seq: u64,
}

impl Pair {
    /// The encoded message.
    pub fn to_bytes(self) -> Vec<u8> {
        let mut out = vec![u8::from(self.is_initiator)];
        out.extend_from_slice(&self.token);
        write_uint(&mut out, self.id);
        write_uint(&mut out, self.seq);
        out
    }

    /// Decodes a message; `None` if it does not decode.
    pub fn decode(bytes: &[u8]) -> Option<Pair> {
        let mut r = Reader::new(bytes);
        // A bitfield of up to 7 bits is one byte; longer forms are uint-prefixed like a uint.
        let flags = r.uint().ok()?;
        Some(Pair {
            is_initiator: flags & 1 != 0,
            token: r.fixed().ok()?,
            id: r.uint().ok()?,
            seq: r.uint().ok()?,
        })
    }
}

/// How far a pairing got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Connecting to the relay, opening the channel, or waiting for the relay's answer.
    Pairing,
    /// The connection runs through the relay.
    Relaying,
    /// No longer wanted: the relay connection is ending (reset at the deadline).
    Closing,
}

/// One pairing: what a relay link (the internal connection to a relay) carries for one of our
/// connections.
#[derive(Debug)]
pub(crate) struct RelayPairing {
    /// The connection being relayed (its attempt or handshake).
    pub(crate) owner: ConnId,
    pub(crate) local_udx_id: u32,
    pub(crate) token: [u8; 32],
    pub(crate) is_initiator: bool,
    /// Our key on the relay connection: the `blind-relay` channel id.
    pub(crate) our_key: [u8; 32],
    pub(crate) mux: Protomux,
    pub(crate) channel: Option<ChannelId>,
    pub(crate) deadline: Timestamp,
    pub(crate) stage: Stage,
}

impl RelayPairing {
    /// Pairing or closing must be done by then; a relaying link has no deadline.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        (self.stage != Stage::Relaying).then_some(self.deadline)
    }
}

/// What to pair through a relay: the connection (an attempt or handshake) and its stream, and
/// the relay, token and role from the handshake.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RelayRequest {
    pub owner: ConnId,
    pub local_udx_id: u32,
    pub relay_key: [u8; 32],
    pub token: [u8; 32],
    pub is_initiator: bool,
}
