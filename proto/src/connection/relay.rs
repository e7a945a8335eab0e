//! Blind-relay pairing, as a relay's client (npm `blind-relay` 1.6 `Client`): the options that
//! name a relay, the `pair` message, and the state one relay link carries for the connection
//! it pairs. How the endpoint runs a link is `node/relay.rs`.

use core::time::Duration;
use std::net::SocketAddrV4;

use crate::dht::KeyPair;
use crate::ids::ConnId;
use crate::protomux::{ChannelId, MuxEvent, Protomux};
use crate::time::Timestamp;
use crate::wire::compact::{write_uint, Reader};

/// The protomux protocol of blind relays (`blind-relay` `protocol: 'blind-relay'`).
pub const PROTOCOL: &str = "blind-relay";
/// How long a relay may take to pair (`relayTimeout = setTimeout(onabort, 15000)`).
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// Message types on the `blind-relay` channel (`addMessage` order).
const PAIR: u64 = 0;
const UNPAIR: u64 = 1;

/// Options of [`Node::connect_with`](crate::Node::connect_with) (JS `dht.connect(publicKey, opts)`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The key pair to connect as (JS `keyPair`); `None`: the node's
    /// [default key pair](crate::Node::default_key_pair).
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
/// connections. It speaks `blind-relay` over the link's protomux: [`RelayPairing::handle_open`]
/// once the link is open, [`RelayPairing::handle_message`] for each message from the relay,
/// [`RelayPairing::poll_transmit`] for what to write to the link.
#[derive(Debug)]
pub(crate) struct RelayPairing {
    /// The connection being relayed (its attempt or handshake).
    owner: ConnId,
    local_udx_id: u32,
    token: [u8; 32],
    is_initiator: bool,
    /// Our key on the relay connection: the `blind-relay` channel id.
    our_key: [u8; 32],
    mux: Protomux,
    channel: Option<ChannelId>,
    deadline: Timestamp,
    stage: Stage,
}

/// What a message from the relay changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PairingOutcome {
    /// Nothing to act on.
    Nothing,
    /// The relay paired us: our stream talks to its stream `remote_id`.
    Paired { remote_id: u32 },
    /// The relay closed the channel.
    ChannelClosed,
}

impl RelayPairing {
    /// A pairing for `request`'s connection, connecting as `our_key`; it has
    /// [`RELAY_TIMEOUT`] from `now` to pair.
    pub fn new(now: Timestamp, request: &RelayRequest, our_key: [u8; 32]) -> RelayPairing {
        let mut mux = Protomux::new();
        // The relay opens the same channel; if its open comes first it waits for ours.
        mux.pair(PROTOCOL, Some(&our_key));
        RelayPairing {
            owner: request.owner,
            local_udx_id: request.local_udx_id,
            token: request.token,
            is_initiator: request.is_initiator,
            our_key,
            mux,
            channel: None,
            deadline: now + RELAY_TIMEOUT,
            stage: Stage::Pairing,
        }
    }

    /// The connection it pairs.
    pub fn owner(&self) -> ConnId {
        self.owner
    }

    /// How far it got.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Pairing or closing must be done by then; a relaying link has no deadline.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        (self.stage != Stage::Relaying).then_some(self.deadline)
    }

    /// Whether its deadline passed (it is pairing or closing past [`RELAY_TIMEOUT`]).
    pub fn timed_out(&self, now: Timestamp) -> bool {
        self.stage != Stage::Relaying && self.deadline <= now
    }

    /// The link to the relay is open: opens the `blind-relay` channel (the `pair` goes out
    /// once the relay opened it too).
    pub fn handle_open(&mut self) -> Result<(), crate::protomux::ChannelError> {
        let ch = self.mux.open(PROTOCOL, Some(&self.our_key), &[])?;
        self.channel = Some(ch);
        Ok(())
    }

    /// One message from the relay. Fails on a message that does not decode (the link is
    /// then of no use).
    pub fn handle_message(
        &mut self,
        message: &[u8],
    ) -> Result<PairingOutcome, crate::protomux::MuxError> {
        self.mux.handle_message(message)?;
        let mut outcome = PairingOutcome::Nothing;
        while let Some(event) = self.mux.poll_event() {
            match self.on_mux_event(event) {
                PairingOutcome::Nothing => {}
                PairingOutcome::ChannelClosed => return Ok(PairingOutcome::ChannelClosed),
                paired => outcome = paired,
            }
        }
        Ok(outcome)
    }

    fn on_mux_event(&mut self, event: MuxEvent) -> PairingOutcome {
        let pairing = self.stage == Stage::Pairing;
        match event {
            MuxEvent::Opened { channel, .. } if Some(channel) == self.channel && pairing => {
                let pair = Pair {
                    is_initiator: self.is_initiator,
                    token: self.token,
                    id: u64::from(self.local_udx_id),
                    seq: 0,
                };
                let _ = self.mux.send(channel, PAIR, &pair.to_bytes());
                PairingOutcome::Nothing
            }
            MuxEvent::Message {
                channel,
                kind: PAIR,
                payload,
            } if Some(channel) == self.channel && pairing => {
                // The relay's answer to our pair: same token and role, and its stream id.
                Pair::decode(&payload)
                    .filter(|a| a.token == self.token && a.is_initiator == self.is_initiator)
                    .and_then(|a| u32::try_from(a.id).ok())
                    .map_or(PairingOutcome::Nothing, |remote_id| {
                        PairingOutcome::Paired { remote_id }
                    })
            }
            MuxEvent::Closed { channel } if Some(channel) == self.channel => {
                PairingOutcome::ChannelClosed
            }
            _ => PairingOutcome::Nothing,
        }
    }

    /// The connection now runs through the relay.
    pub fn set_relaying(&mut self) {
        self.stage = Stage::Relaying;
    }

    /// No longer wanted: from now it is closing, with [`RELAY_TIMEOUT`] to end. Queues
    /// `unpair` if the channel is open and returns whether it did (else nothing was said to
    /// the relay yet). Does nothing (and returns `None`) if it was closing already.
    pub fn close(&mut self, now: Timestamp) -> Option<bool> {
        if self.stage == Stage::Closing {
            return None;
        }
        self.stage = Stage::Closing;
        self.deadline = now + RELAY_TIMEOUT;
        let Some(channel) = self.channel.filter(|&c| self.mux.is_open(c)) else {
            return Some(false);
        };
        // `unpair`: flags (none) and the token.
        let mut unpair = vec![0];
        unpair.extend_from_slice(&self.token);
        let _ = self.mux.send(channel, UNPAIR, &unpair);
        Some(true)
    }

    /// The next message to write to the link.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.mux.poll_transmit()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_round_trips_and_reads_long_flags() {
        let p = Pair {
            is_initiator: true,
            token: [7; 32],
            id: 300,
            seq: 0,
        };
        let bytes = p.to_bytes();
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[33..], &[0xfd, 0x2c, 0x01, 0]);
        assert_eq!(Pair::decode(&bytes), Some(p));
        let mut long = vec![0xfd, 0, 0];
        long.extend_from_slice(&bytes[1..]);
        assert_eq!(
            Pair::decode(&long),
            Some(Pair {
                is_initiator: false,
                ..p
            })
        );
        assert_eq!(Pair::decode(&bytes[..20]), None);
    }
}
