//! Relaying PEER_HANDSHAKE and PEER_HOLEPUNCH between clients and announced servers (hyperdht
//! `lib/router.js`, the non-server half). A node that stored a server's self-announce keeps a
//! forward entry (the server's address as seen when it announced, and its record); relayed
//! messages keep the client's tid and travel fire-and-forget.

use std::net::SocketAddrV4;

use core::time::Duration;

use super::cache::TtlCache;
use crate::time::Timestamp;
use crate::wire::hyperdht::{mode, Handshake, Holepunch};

/// A forward entry: where an announced server can be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The server's address as we saw it announce (its NAT binding towards us); `None` for a
    /// server listening on this node itself.
    pub relay: Option<SocketAddrV4>,
    /// Its encoded peer record.
    pub record: Vec<u8>,
}

/// What to do with a relayed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayAction {
    /// Drop it (JS is silent).
    Silent,
    /// Forward as a request (same tid, command and target) with this value to `to`.
    Relay {
        /// Next hop.
        to: SocketAddrV4,
        /// New value.
        value: Vec<u8>,
    },
    /// Answer with a response to `to` (not necessarily the sender), no token, no closer nodes.
    ReplyTo {
        /// Final destination.
        to: SocketAddrV4,
        /// Value.
        value: Vec<u8>,
    },
    /// Reply to the sender with no value but closer nodes ("help the user route").
    RouteHelp,
}

/// The forward table.
#[derive(Debug)]
pub struct Router {
    forwards: TtlCache<[u8; 32], Forward>,
}

impl Router {
    /// An empty table (JS `forwards`: 65 536 entries, 20 min).
    pub fn new(now: Timestamp, max_size: usize, max_age: Duration) -> Router {
        Router {
            forwards: TtlCache::new(now, max_size, usize::MAX, max_age),
        }
    }

    /// Stores a forward entry.
    pub fn set(&mut self, target: [u8; 32], f: Forward) {
        self.forwards.set(target, f, 0);
    }

    /// Stores a permanent entry for a server listening on this node (JS `retain`).
    pub fn retain(&mut self, target: [u8; 32], record: Vec<u8>) {
        self.forwards.retain(
            target,
            Forward {
                relay: None,
                record,
            },
        );
    }

    /// Reads a forward entry (refreshing it, as xache does).
    pub fn get(&mut self, target: &[u8; 32]) -> Option<&Forward> {
        self.forwards.get(target)
    }

    /// Removes a forward entry.
    pub fn delete(&mut self, target: &[u8; 32]) {
        self.forwards.delete(target);
    }

    /// Forward entries.
    pub fn len(&self) -> usize {
        self.forwards.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.forwards.is_empty()
    }

    /// The next expiry deadline.
    pub fn poll_timeout(&self) -> Timestamp {
        self.forwards.poll_timeout()
    }

    /// Expires what is due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.forwards.handle_timeout(now);
    }

    /// `onpeerhandshake` at a node that is not the server.
    pub fn on_handshake(
        &mut self,
        target: Option<&[u8; 32]>,
        value: Option<&[u8]>,
        from: SocketAddrV4,
    ) -> RelayAction {
        let Some(hs) = value.and_then(|v| Handshake::decode(v).ok()) else {
            return RelayAction::Silent;
        };
        let relay = target.and_then(|t| self.get(t)).and_then(|f| f.relay);
        match hs.mode {
            mode::FROM_CLIENT => {
                // JS checks `if (!noise) return`, but a decoded buffer is never falsy, even
                // when empty, so nothing is refused here.
                let Some(to) = hs.relay_address.or(relay) else {
                    return RelayAction::RouteHelp;
                };
                let value = Handshake {
                    mode: mode::FROM_RELAY,
                    noise: hs.noise,
                    peer_address: Some(from),
                    relay_address: None,
                };
                RelayAction::Relay {
                    to,
                    value: value.to_bytes(),
                }
            }
            mode::FROM_RELAY => {
                let Some(to) = relay else {
                    return RelayAction::Silent;
                };
                let value = Handshake {
                    mode: mode::FROM_SECOND_RELAY,
                    noise: hs.noise,
                    peer_address: hs.peer_address,
                    relay_address: Some(from),
                };
                RelayAction::Relay {
                    to,
                    value: value.to_bytes(),
                }
            }
            mode::FROM_SERVER => {
                let Some(to) = hs.peer_address else {
                    return RelayAction::Silent;
                };
                let value = Handshake {
                    mode: mode::REPLY,
                    noise: hs.noise,
                    peer_address: Some(from),
                    relay_address: None,
                };
                RelayAction::ReplyTo {
                    to,
                    value: value.to_bytes(),
                }
            }
            _ => RelayAction::Silent,
        }
    }

    /// `onpeerholepunch` at a node that is not the server.
    pub fn on_holepunch(
        &mut self,
        target: Option<&[u8; 32]>,
        value: Option<&[u8]>,
        from: SocketAddrV4,
    ) -> RelayAction {
        let Some(hp) = value.and_then(|v| Holepunch::decode(v).ok()) else {
            return RelayAction::Silent;
        };
        let relay = target.and_then(|t| self.get(t)).and_then(|f| f.relay);
        match hp.mode {
            mode::FROM_CLIENT => {
                let Some(to) = hp.peer_address.or(relay) else {
                    return RelayAction::Silent;
                };
                let value = Holepunch {
                    mode: mode::FROM_RELAY,
                    id: hp.id,
                    payload: hp.payload,
                    peer_address: Some(from),
                };
                RelayAction::Relay {
                    to,
                    value: value.to_bytes(),
                }
            }
            mode::FROM_SERVER => {
                // JS replies to `opts.to || req.from`: without a peer address, to the sender.
                let to = hp.peer_address.unwrap_or(from);
                let value = Holepunch {
                    mode: mode::REPLY,
                    id: hp.id,
                    payload: hp.payload,
                    peer_address: Some(from),
                };
                RelayAction::ReplyTo {
                    to,
                    value: value.to_bytes(),
                }
            }
            // FROM_RELAY is for the server itself.
            _ => RelayAction::Silent,
        }
    }
}
