//! Servers (hyperdht `lib/server.js`, `lib/announcer.js`): announcing a key pair to the nodes
//! closest to `H(public key)`, keeping those relays alive, answering relayed Noise handshakes,
//! and the responder half of holepunching.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddrV4;
use std::sync::Arc;

use core::time::Duration;

use super::queries::{QueryKind, QuerySpec};
use super::records::{Commit, RecordKind};
use super::rpc::{Owner, RequestSpec};
use super::Node;
use crate::crypto::{hash, to_hex};
use crate::dht::keys::command;
use crate::dht::KeyPair;
use crate::error::ApiError;
use crate::event::{Event, Reply};
use crate::ids::{ConnId, ServerId, SocketId};
use crate::time::Timestamp;
use crate::wire::hyperdht::Peer;
use crate::wire::noise::RelayInfo;

/// Relays pinged between announces (`announcer.js` MIN_ACTIVE).
pub const MIN_ACTIVE: usize = 3;
/// Relays a server announces to (`pickBest`).
pub const ANNOUNCE_RELAYS: usize = 3;
/// Ping rounds between re-announces (~5 min).
pub const PING_ROUNDS: u32 = 100;
/// Gap between relay ping rounds.
pub const PING_GAP: Duration = Duration::from_secs(3);
/// Default for [`ServerConfig::max_handshakes`]: handshake slots one server keeps at once (bounds
/// memory under a handshake flood). JS keeps no such bound.
pub const MAX_SLOTS: usize = 1024;

/// What a server's accept policy sees of a client before any data flows (JS `firewall`'s
/// `remotePublicKey` and `clientAddress`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncomingHandshake {
    /// The client's public key (the Noise handshake proves the client holds its secret key).
    pub remote_public_key: [u8; 32],
    /// The client's address as the DHT node that relayed the handshake (or we) saw it.
    pub client_address: SocketAddrV4,
    /// Whether the handshake came through a DHT node rather than straight from the client.
    pub relayed: bool,
}

/// Decides whether a client may connect, before any data flows (JS `firewall`, inverted:
/// `true` accepts).
pub type AcceptPolicy = Arc<dyn Fn(&IncomingHandshake) -> bool + Send + Sync>;

/// How a server behaves.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Accept policy; `None` accepts everyone.
    pub accept: Option<AcceptPolicy>,
    /// Do not advertise LAN addresses (JS `shareLocalAddress: false`).
    pub hide_local_addresses: bool,
    /// Handshakes kept at once (1024 by default). Each stays for 10 s after it finishes (so
    /// retransmitted handshakes get the same answer), which caps new connections at about
    /// `max_handshakes / 10` per second; a busy server raises it. Handshakes past the cap get
    /// no reply.
    pub max_handshakes: usize,
    /// Ask every client to meet us at this blind relay (its public key) too (JS server
    /// `relayThrough`); we pair as the initiator.
    pub relay_through: Option<[u8; 32]>,
    /// Punch holes when clients ask (JS `holepunch`, here all or nothing). Off, a client
    /// behind a NAT can reach us only through a blind relay or a path it opens itself.
    pub holepunch: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            accept: None,
            hide_local_addresses: false,
            max_handshakes: MAX_SLOTS,
            relay_through: None,
            holepunch: true,
        }
    }
}

impl core::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("accept", &self.accept.as_ref().map(|_| "fn"))
            .field("hide_local_addresses", &self.hide_local_addresses)
            .field("max_handshakes", &self.max_handshakes)
            .field("relay_through", &self.relay_through.map(|k| to_hex(&k)))
            .field("holepunch", &self.holepunch)
            .finish()
    }
}

/// The announcer's state.
#[derive(Debug, Default)]
pub(super) struct Announcer {
    pub relays: Vec<RelayInfo>,
    pub relay_addresses: Vec<SocketAddrV4>,
    closest: Vec<SocketAddrV4>,
    /// `_serverRelays`: three generations of relay addresses (2 = current).
    generations: [BTreeSet<SocketAddrV4>; 3],
    new_relays: Vec<RelayInfo>,
    new_relay_addresses: Vec<SocketAddrV4>,
    query: Option<u64>,
    rounds: u32,
    pings_pending: usize,
    pings_ok: usize,
    next_ping: Option<Timestamp>,
    announced_once: bool,
}

impl Announcer {
    pub fn is_relay(&self, addr: &SocketAddrV4) -> bool {
        self.generations.iter().any(|g| g.contains(addr))
    }
}

/// A listening server.
#[derive(Debug)]
pub(super) struct ServerState {
    pub key: KeyPair,
    pub target: [u8; 32],
    pub config: ServerConfig,
    pub announcer: Announcer,
    /// The handshakes held, by the slot number clients name in PEER_HOLEPUNCH (JS
    /// `_holepunches`); at most `config.max_handshakes`.
    pub slots: Vec<Option<ConnId>>,
    /// The handshake of each Noise message 1 (JS `_connects`), for retransmits.
    pub connects: HashMap<Vec<u8>, ConnId>,
    /// Its connections whose transport is live (opened, not closed); at most
    /// [`Config::max_connections_per_server`](crate::Config). Each connection counted here
    /// carries the server's id until it closes or its transport goes (`Node::uncount_conn`),
    /// so it is counted down exactly once.
    pub live_conns: usize,
}

impl ServerState {
    /// The announcer's next deadline.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.announcer.next_ping
    }

    /// A free slot for a new handshake, if under the cap.
    pub fn free_slot(&mut self) -> Option<usize> {
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            return Some(i);
        }
        if self.slots.len() >= self.config.max_handshakes {
            return None;
        }
        self.slots.push(None);
        Some(self.slots.len() - 1)
    }

    /// A cleared handshake leaves its slot and its dedupe entry.
    pub fn forget_handshake(&mut self, conn: ConnId, slot: usize, noise: &[u8]) {
        if self.slots.get(slot) == Some(&Some(conn)) {
            self.slots[slot] = None;
        }
        if self.connects.get(noise) == Some(&conn) {
            self.connects.remove(noise);
        }
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
    }
}

impl Node {
    /// Starts a server for `key`: announces it to the nodes closest to `H(public key)` and
    /// answers handshakes from clients. [`Event::ServerListening`] follows the first announce.
    pub fn listen(
        &mut self,
        now: Timestamp,
        key: &KeyPair,
        config: ServerConfig,
    ) -> Result<ServerId, ApiError> {
        self.set_now(now);
        if self.closed {
            return Err(ApiError::Closed);
        }
        if self
            .servers
            .values()
            .any(|s| s.key.public_key() == key.public_key())
        {
            return Err(ApiError::AlreadyListening);
        }
        self.next_server += 1;
        let id = self.next_server;
        let target = hash(&key.public_key());
        let record = Peer {
            public_key: key.public_key(),
            relay_addresses: Vec::new(),
        }
        .to_bytes();
        self.router.retain(target, record);
        self.server_targets.insert(target, id);
        self.servers.insert(
            id,
            ServerState {
                key: key.clone(),
                target,
                config,
                announcer: Announcer::default(),
                slots: Vec::new(),
                connects: HashMap::new(),
                live_conns: 0,
            },
        );
        // Not "listening" yet: that is said once the first announce is through.
        tracing::debug!(server = %to_hex(&key.public_key()), "announcing server");
        self.run_announce(id);
        Ok(ServerId(id))
    }

    /// Stops a server: forgets its handshakes and unannounces it from its relays.
    pub fn close_server(&mut self, now: Timestamp, server: ServerId) {
        self.set_now(now);
        let Some(s) = self.servers.remove(&server.0) else {
            return;
        };
        self.server_targets.remove(&s.target);
        self.router.delete(&s.target);
        // The handshakes stop punching; each still clears on its own timer.
        for conn in s.slots.iter().flatten() {
            let Some(p) = self
                .cx
                .handshake_mut(*conn)
                .and_then(|h| h.puncher.as_mut())
            else {
                continue;
            };
            p.finish_elsewhere();
            let outputs: Vec<_> = std::iter::from_fn(|| p.poll_output()).collect();
            for o in outputs {
                if let crate::holepunch::puncher::PunchOutput::Release(sock) = o {
                    self.release_socket(sock);
                }
            }
        }
        let relays: Vec<SocketAddrV4> = s.announcer.generations[2].iter().copied().collect();
        if relays.is_empty() {
            self.push_event(Event::ServerClosed { server });
            return;
        }
        self.closing_servers.insert(server.0, relays.len());
        for to in relays {
            self.unannounce_from(&s.key, s.target, to, Some(server.0));
        }
    }

    /// One relay of a closing server is done (unannounced or unreachable).
    pub(super) fn on_close_step(&mut self, id: u64) {
        let Some(left) = self.closing_servers.get_mut(&id) else {
            return;
        };
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.closing_servers.remove(&id);
            tracing::debug!("server unannounced from its relays");
            self.push_event(Event::ServerClosed {
                server: ServerId(id),
            });
        }
    }

    /// The live connections of a server: opened by a handshake and not closed yet (a closed
    /// one whose input the application has not read no longer counts). At most
    /// [`Config::max_connections_per_server`](crate::Config); 0 for an unknown server.
    pub fn server_conn_count(&self, server: ServerId) -> usize {
        self.servers.get(&server.0).map_or(0, |s| s.live_conns)
    }

    /// The relay addresses a server currently advertises.
    pub fn server_relay_addresses(&self, server: ServerId) -> Vec<SocketAddrV4> {
        self.servers
            .get(&server.0)
            .map(|s| s.announcer.relay_addresses.clone())
            .unwrap_or_default()
    }

    // ----- announcer ------------------------------------------------------------------------

    /// `_update`: FIND_PEER towards our target, then announce to the 3 best.
    fn run_announce(&mut self, id: u64) {
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        if s.announcer.query.is_some() {
            return;
        }
        // `_cycle`
        let gens = &mut s.announcer.generations;
        gens.rotate_left(1);
        gens[2].clear();
        s.announcer.new_relays.clear();
        s.announcer.new_relay_addresses.clear();
        let mut spec = QuerySpec::external(s.target, command::FIND_PEER, None);
        spec.nodes = s.announcer.closest.clone();
        let own = (!self.firewalled).then(|| self.remote_address()).flatten();
        if let Some(s) = self.servers.get_mut(&id) {
            s.announcer.new_relay_addresses.extend(own);
        }
        let q = self.start_query_with(
            spec,
            QueryKind::Announcer(id),
            Commit::AnnounceSelf { server: id },
            RecordKind::None,
        );
        if let Some(s) = self.servers.get_mut(&id) {
            if self.queries.contains_key(&q) {
                s.announcer.query = Some(q);
            }
        }
    }

    /// A commit of the announcer's query was answered.
    pub(super) fn on_announce_committed(&mut self, id: u64, reply: &Reply) {
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        if reply.error != 0 {
            return;
        }
        let a = &mut s.announcer;
        if a.new_relay_addresses.len() < ANNOUNCE_RELAYS {
            a.new_relay_addresses.push(reply.from);
        }
        a.new_relays.push(RelayInfo {
            relay_address: reply.from,
            peer_address: reply.to,
        });
        a.generations[2].insert(reply.from);
    }

    /// The announcer's query (and its commits) finished.
    pub(super) fn on_announce_done(&mut self, id: u64, closest: Vec<SocketAddrV4>) {
        let now = self.now;
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        let a = &mut s.announcer;
        a.query = None;
        if !closest.is_empty() {
            a.closest = closest;
        }
        a.relays = core::mem::take(&mut a.new_relays);
        a.relay_addresses = core::mem::take(&mut a.new_relay_addresses);
        a.rounds = 0;
        a.next_ping = Some(now + PING_GAP);
        let removed: Vec<SocketAddrV4> = a.generations[1]
            .difference(&a.generations[2])
            .copied()
            .collect();
        let first = !a.announced_once;
        a.announced_once = true;
        let relay_addresses = a.relay_addresses.clone();
        let key = s.key.clone();
        let target = s.target;
        tracing::debug!(relays = ?relay_addresses, "server announced");
        for to in removed {
            self.unannounce_from(&key, target, to, None);
        }
        if first {
            tracing::info!(
                server = %to_hex(&key.public_key()),
                relays = relay_addresses.len(),
                "server announced: listening"
            );
            self.push_event(Event::ServerListening {
                server: ServerId(id),
                relay_addresses,
            });
        }
    }

    /// `_unannounce`: FIND_PEER for a token, then UNANNOUNCE.
    fn unannounce_from(
        &mut self,
        key: &KeyPair,
        target: [u8; 32],
        to: SocketAddrV4,
        closing: Option<u64>,
    ) {
        let spec = RequestSpec::external(command::FIND_PEER, Some(target), None);
        self.send_request(
            to,
            None,
            spec,
            Owner::Unannounce {
                key: Box::new(key.clone()),
                target,
                closing,
            },
        );
    }

    /// The FIND_PEER of `_unannounce` came back.
    pub(super) fn on_unannounce_token(
        &mut self,
        key: &KeyPair,
        target: [u8; 32],
        reply: &Reply,
        closing: Option<u64>,
    ) -> bool {
        let (Some(token), Some(node_id), Some(_)) = (reply.token, reply.id, &reply.value) else {
            return false;
        };
        let peer = Peer {
            public_key: key.public_key(),
            relay_addresses: Vec::new(),
        };
        let ns = crate::dht::keys::namespace(command::UNANNOUNCE);
        let signable =
            crate::dht::keys::announce_signable(&ns, &target, &node_id.0, &token, &peer, None);
        let ann = crate::wire::hyperdht::Announce {
            peer: Some(peer),
            refresh: None,
            signature: Some(key.sign(&signable)),
            bump: 0,
        };
        let mut spec =
            RequestSpec::external(command::UNANNOUNCE, Some(target), Some(ann.to_bytes()));
        spec.token = Some(token);
        let owner = match closing {
            Some(s) => Owner::UnannounceSent(s),
            None => Owner::DownHint,
        };
        self.send_request(reply.from, None, spec, owner).is_some()
    }

    /// Relay keep-alive pings every 3 s; re-announce after 100 rounds or when relays vanish.
    pub(super) fn announcer_timers(&mut self) {
        let now = self.now;
        let due: Vec<u64> = self
            .servers
            .iter()
            .filter(|(_, s)| s.announcer.next_ping.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(s) = self.servers.get_mut(&id) else {
                continue;
            };
            let a = &mut s.announcer;
            a.next_ping = None;
            if a.rounds >= PING_ROUNDS {
                self.run_announce(id);
                continue;
            }
            a.rounds += 1;
            let relays: Vec<SocketAddrV4> = a.generations[2].iter().copied().collect();
            a.pings_pending = relays.len();
            a.pings_ok = 0;
            if relays.is_empty() {
                self.run_announce(id);
                continue;
            }
            for to in relays {
                let owner = Owner::AnnouncerPing(id);
                if self
                    .send_request(
                        to,
                        None,
                        RequestSpec::internal(crate::commands::PING),
                        owner,
                    )
                    .is_none()
                {
                    self.on_announcer_ping(id, false);
                }
            }
        }
    }

    pub(super) fn on_announcer_ping(&mut self, id: u64, ok: bool) {
        let now = self.now;
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        let a = &mut s.announcer;
        a.pings_pending = a.pings_pending.saturating_sub(1);
        if ok {
            a.pings_ok += 1;
        }
        if a.pings_pending > 0 {
            return;
        }
        let total = a.generations[2].len();
        if a.pings_ok < total.min(MIN_ACTIVE) {
            tracing::debug!(active = a.pings_ok, total, "relays lost: re-announcing");
            self.run_announce(id);
        } else {
            a.next_ping = Some(now + PING_GAP);
        }
    }

    // ----- handshakes -----------------------------------------------------------------------

    /// Our LAN addresses with the server socket's port (`Holepuncher.localAddresses`).
    pub(super) fn local_addresses(&self) -> Vec<SocketAddrV4> {
        let port = self.server_port();
        let bound = self.local_addr(SocketId::SERVER).and_then(|a| match a {
            std::net::SocketAddr::V4(v4) => Some(*v4.ip()),
            std::net::SocketAddr::V6(_) => None,
        });
        if bound == Some(std::net::Ipv4Addr::LOCALHOST) {
            return vec![SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port)];
        }
        let mut v: Vec<SocketAddrV4> = self
            .config
            .local_addresses
            .iter()
            .filter(|ip| !ip.is_loopback())
            .map(|ip| SocketAddrV4::new(*ip, port))
            .collect();
        if v.is_empty() {
            v.push(SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port));
        }
        v
    }
}
