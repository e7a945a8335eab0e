//! Blind relays, as a relay's client (npm `blind-relay` 1.6 `Client`, as
//! `hyperdht/lib/connect.js` `relayConnection` and `lib/server.js` `_relayConnection` use it).
//!
//! When a connection's handshake names a relay (`relayThrough`: the client's, from
//! [`ConnectOptions::relay_through`], or the server's, from
//! [`ServerConfig::relay_through`](crate::ServerConfig::relay_through)), each side connects to the
//! relay by its key over an internal connection the application never sees, opens a protomux
//! `blind-relay` channel on it (id: our public key) and sends
//! `pair {isInitiator, token, id: our UDX stream id, seq: 0}`. Once both peers paired with the
//! same token, the relay answers with the id of its stream for us; our connection's stream
//! then talks to the relay's address from the relay connection's socket, and the relay
//! forwards each packet to the other peer (UDX `relayTo`). Secret-stream runs end to end on
//! top, keyed by the Noise handshake, so the relay sees only ciphertext. (Below, "client"
//! means a connection attempt, or on a server a client's handshake.)
//!
//! The relay and the holepunch race, as in JS: a holepunched path found first drops the
//! relay (`unpair`, then the relay connection ends); a relay that pairs first ends the
//! holepunch. A holepunch that fails while the relay is still pairing does not fail the
//! connection: the relay has [`RELAY_TIMEOUT`](crate::connection::relay::RELAY_TIMEOUT) from its start to pair, and the attempt fails
//! only when both did (with the reason of the last). The relay connection lives as long as
//! the relayed connection.
//!
//! Roles: whoever named the relay pairs as the initiator; the server's relay wins when both
//! named one. On the server side a handshake waiting for its relay is kept past the holepunch
//! deadline until the relay pairs or gives up.
//!
//! Deviation: JS keeps punching after the relay paired and moves the stream to a punched path
//! if one opens (`changeRemote`); here a relayed connection stays relayed. Acting as the
//! relay itself is `relay_server.rs`.

use super::Node;
use crate::connection::relay::{ConnectOptions, PairingOutcome, RelayPairing, RelayRequest, Stage};
use crate::connection::{ConnectError, Purpose, Side};
use crate::dht::KeyPair;
use crate::event::Event;
use crate::ids::ConnId;

impl Node {
    /// Starts pairing a connection through a relay, connecting to it as `key`. Returns the
    /// relay link's id.
    pub(super) fn start_relay(&mut self, request: RelayRequest, key: &KeyPair) -> ConnId {
        self.stats.relaying.attempts += 1;
        tracing::debug!(
            relay = %crate::crypto::to_hex(&request.relay_key),
            is_initiator = request.is_initiator,
            "connecting to the blind relay"
        );
        let link = self.cx.insert(Side::Client, Purpose::RelayLink);
        if let Some(c) = self.cx.get_mut(request.owner) {
            c.relay_links.push(link);
        }
        let pairing = RelayPairing::new(self.now, &request, key.public_key());
        if let Some(c) = self.cx.get_mut(link) {
            c.relay_link = Some(pairing);
        }
        let options = ConnectOptions::default().with_key_pair(key);
        self.start_connect(link, &request.relay_key, options);
        link
    }

    /// Handles what happened on relay links and relay sessions. Runs at the end of every
    /// input.
    pub(super) fn run_relays(&mut self) {
        while let Some(event) = self.relay_inbox.pop_front() {
            if event_conn(&event).is_some_and(|c| self.is_relay_session(c.0)) {
                self.relay_session_event(event);
                continue;
            }
            match event {
                Event::Connected { conn, .. } => self.relay_connected(conn),
                Event::Readable { conn } => self.relay_readable(conn),
                Event::ConnectFailed { conn, reason } => {
                    tracing::info!(%reason, "could not connect to the blind relay");
                    self.relay_failed(conn);
                }
                Event::ConnClosed { conn, reason } => {
                    tracing::debug!(%reason, "blind relay connection closed");
                    self.relay_failed(conn);
                }
                _ => {}
            }
        }
    }

    /// The relay connection is open: open the channel.
    fn relay_connected(&mut self, link: ConnId) {
        let Some(p) = self.cx.link_mut(link) else {
            return;
        };
        if p.stage() == Stage::Closing {
            // Dropped while connecting: just end it.
            let _ = self.conn_finish(self.now, link);
            return;
        }
        if let Err(e) = p.handle_open() {
            tracing::info!(error = %e, "blind relay channel not opened");
            return self.relay_failed(link);
        }
        self.flush_relay(link);
    }

    /// Messages from the relay.
    fn relay_readable(&mut self, link: ConnId) {
        while let Ok(Some(message)) = self.conn_read_message(link) {
            let Some(p) = self.cx.link_mut(link) else {
                return;
            };
            match p.handle_message(&message) {
                Ok(PairingOutcome::Nothing) => {}
                Ok(PairingOutcome::Paired { remote_id }) => self.relay_paired(link, remote_id),
                Ok(PairingOutcome::ChannelClosed) => {
                    tracing::info!("blind relay closed the channel");
                    return self.relay_failed(link);
                }
                Err(e) => {
                    tracing::info!(error = %e, "blind relay sent a bad message");
                    return self.relay_failed(link);
                }
            }
        }
        self.flush_relay(link);
    }

    /// Sends what the relay connection's mux has.
    fn flush_relay(&mut self, link: ConnId) {
        let now = self.now;
        let Some(p) = self.cx.link_mut(link) else {
            return;
        };
        let messages: Vec<Vec<u8>> = std::iter::from_fn(|| p.poll_transmit()).collect();
        for m in messages {
            if let Err(e) = self.conn_write_message(now, link, &m) {
                tracing::debug!(error = %e, "blind relay write failed");
            }
        }
    }

    /// Whether connection `conn` (its attempt or handshake) still waits for a path.
    fn awaits_path(&self, conn: ConnId) -> bool {
        match self.cx.get(conn).map(|c| c.side) {
            Some(Side::Client) => self.client_awaits_path(conn),
            Some(Side::Server(_)) => self.server_awaits_path(conn),
            None => false,
        }
    }

    /// The relay paired us: our stream now goes through it (unless another path won).
    fn relay_paired(&mut self, link: ConnId, remote_id: u32) {
        let Some(owner) = self.cx.link(link).map(RelayPairing::owner) else {
            return;
        };
        let path = self.conn_path_of(link);
        let waiting = self.awaits_path(owner);
        let Some((socket, std::net::SocketAddr::V4(relay_addr))) = path.filter(|_| waiting) else {
            tracing::debug!("blind relay paired after another path won; dropping it");
            return self.drop_relay(link);
        };
        if let Some(p) = self.cx.link_mut(link) {
            p.set_relaying();
        }
        self.stats.relaying.successes += 1;
        tracing::info!(relay = %relay_addr, "connection runs through the blind relay");
        self.set_conn_remote_udx_id(owner, remote_id);
        match self.cx.get(owner).map(|c| c.side) {
            Some(Side::Client) => self.client_path_open(owner, socket, relay_addr),
            Some(Side::Server(_)) => self.server_path_open(owner, socket, relay_addr),
            None => {}
        }
    }

    /// The relay connection failed or closed: forget it; a connection that only waited for
    /// it fails.
    fn relay_failed(&mut self, link: ConnId) {
        if self.cx.link(link).is_none() {
            return;
        }
        // Stop the attempt or the connection; what that reports goes to `run_relays`, which
        // finds the pairing gone and ignores it.
        let now = self.now;
        self.cancel_connect(now, link);
        self.conn_reset(now, link);
        let Some(p) = self.cx.get_mut(link).and_then(|c| c.relay_link.take()) else {
            return;
        };
        self.conn_remove(link);
        self.reap(link);
        if p.stage() == Stage::Pairing {
            self.stats.relaying.aborts += 1;
            match self.cx.get(p.owner()).map(|c| c.side) {
                Some(Side::Client) => self.client_relay_gone(p.owner()),
                Some(Side::Server(_)) => self.server_relay_gone(p.owner()),
                None => {}
            }
        }
    }

    /// Ends a relay connection that is no longer wanted: `unpair` if the channel is open,
    /// then the end of the stream; it is reset if it has not closed by [`RELAY_TIMEOUT`](crate::connection::relay::RELAY_TIMEOUT).
    fn drop_relay(&mut self, link: ConnId) {
        let now = self.now;
        let Some(p) = self.cx.link_mut(link) else {
            return;
        };
        let was_pairing = p.stage() == Stage::Pairing;
        let Some(unpaired) = p.close(now) else {
            return;
        };
        if was_pairing {
            self.stats.relaying.aborts += 1;
        }
        if unpaired {
            self.flush_relay(link);
        } else {
            // Not talking to the relay yet: stop connecting (or end the connection).
            self.cancel_connect(now, link);
        }
        let _ = self.conn_finish(now, link);
    }

    /// The relay links of `owner` still carrying its pairing (in `stage`, or any).
    fn links_of(&self, owner: ConnId, stage: Option<Stage>) -> Vec<ConnId> {
        let Some(c) = self.cx.get(owner) else {
            return Vec::new();
        };
        c.relay_links
            .iter()
            .copied()
            .filter(|&link| {
                self.cx
                    .link(link)
                    .is_some_and(|p| p.owner() == owner && stage.is_none_or(|s| p.stage() == s))
            })
            .collect()
    }

    /// The relays still pairing for an attempt or handshake that found another path (or
    /// failed) are dropped.
    pub(super) fn drop_relays_of(&mut self, owner: ConnId) {
        for link in self.links_of(owner, Some(Stage::Pairing)) {
            self.drop_relay(link);
        }
    }

    /// A connection closed: the relay it ran through is no longer needed.
    pub(super) fn drop_relays_of_conn(&mut self, conn: ConnId) {
        for link in self.links_of(conn, None) {
            self.drop_relay(link);
        }
    }

    /// Whether an attempt or handshake still pairs through a relay.
    pub(super) fn relay_pending(&self, owner: ConnId) -> bool {
        !self.links_of(owner, Some(Stage::Pairing)).is_empty()
    }

    /// A relay link's timer: it took too long to pair, or to close.
    pub(super) fn relay_timers(&mut self, link: ConnId) {
        let now = self.now;
        let Some(p) = self.cx.link(link).filter(|p| p.timed_out(now)) else {
            return;
        };
        if p.stage() == Stage::Pairing {
            tracing::info!("blind relay did not pair in time");
        }
        self.relay_failed(link);
    }

    /// Routes an event of connection `conn`: the application's go to it, relay links' and
    /// relay sessions' to [`Node::run_relays`].
    pub(super) fn conn_event(&mut self, event: Event) {
        let purpose = event_conn(&event)
            .and_then(|c| self.cx.get(c))
            .map(|c| c.purpose);
        match purpose {
            Some(Purpose::RelayLink | Purpose::RelaySession) => self.relay_inbox.push_back(event),
            _ => self.push_event(event),
        }
    }
}

/// The connection an event is about, if any.
fn event_conn(event: &Event) -> Option<ConnId> {
    match event {
        Event::Connected { conn, .. }
        | Event::Readable { conn }
        | Event::Finished { conn }
        | Event::Writable { conn }
        | Event::ConnClosed { conn, .. }
        | Event::ConnectFailed { conn, .. } => Some(*conn),
        _ => None,
    }
}

/// The reason a client that waited only for its relay fails with (JS `RELAY_ABORTED`).
pub(super) const RELAY_ABORTED: ConnectError = ConnectError::RelayAborted;
