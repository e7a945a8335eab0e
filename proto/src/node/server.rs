//! Servers (hyperdht `lib/server.js`, `lib/announcer.js`): announcing a key pair to the nodes
//! closest to `H(public key)`, keeping those relays alive, answering relayed Noise handshakes,
//! and the responder half of holepunching.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddrV4;
use std::sync::Arc;

use core::time::Duration;

use super::queries::{QueryKind, QuerySpec};
use super::records::{Commit, RecordKind};
use super::relay::{RelayOwner, RelayRequest};
use super::rpc::{Owner, RequestSpec};
use super::sockets::PuncherRef;
use super::Node;
use crate::crypto::{hash, to_hex};
use crate::dht::keys::command;
use crate::dht::KeyPair;
use crate::error::ApiError;
use crate::event::{Event, Reply};
use crate::holepunch::addr::{is_private, match_address};
use crate::holepunch::puncher::Puncher;
use crate::holepunch::SecurePayload;
use crate::ids::{ConnId, ServerId, SocketId};
use crate::noise::{HandshakeOutput, Responder};
use crate::time::Timestamp;
use crate::wire::holepunch::HolepunchPayload;
use crate::wire::hyperdht::{mode, Handshake, Holepunch, Peer};
use crate::wire::noise::{
    error, firewall, HolepunchInfo, NoisePayload, RelayInfo, RelayThrough, UdxInfo,
};

/// How long a finished handshake's slot and dedupe entry are kept (`HANDSHAKE_CLEAR_WAIT`).
pub const HANDSHAKE_CLEAR_WAIT: Duration = Duration::from_secs(10);
/// How long a handshake waits for its path before giving up (`HANDSHAKE_INITIAL_TIMEOUT`).
pub const HANDSHAKE_INITIAL_TIMEOUT: Duration = Duration::from_secs(10);
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

/// What a server's accept policy sees.
#[derive(Debug)]
pub struct IncomingHandshake<'a> {
    /// The client's static public key.
    pub remote_public_key: &'a [u8; 32],
    /// The client's address as the relay (or we) saw it.
    pub client_address: SocketAddrV4,
    /// The client's handshake payload.
    pub payload: &'a NoisePayload,
}

/// Decides whether a client may connect, before any data flows (JS `firewall`, inverted:
/// `true` accepts).
pub type AcceptPolicy = Arc<dyn Fn(&IncomingHandshake<'_>) -> bool + Send + Sync>;

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

/// A client handshake held by a server.
#[derive(Debug)]
pub(super) struct ServerHandshake {
    pub conn: ConnId,
    noise_key: Vec<u8>,
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
    /// Handshake replies waiting for the puncher socket.
    pending_replies: Vec<PendingReply>,
    /// A PEER_HOLEPUNCH waiting for the NAT analysis.
    pending_holepunch: Option<PendingHolepunch>,
}

#[derive(Clone, Debug)]
struct PendingReply {
    tid: u16,
    mode: u64,
    from: SocketAddrV4,
    in_socket: SocketId,
    peer_address: Option<SocketAddrV4>,
    relay_address: Option<SocketAddrV4>,
}

#[derive(Clone, Debug)]
struct PendingHolepunch {
    tid: u16,
    from: SocketAddrV4,
    to: SocketAddrV4,
    socket: SocketId,
    peer_address: SocketAddrV4,
    payload: HolepunchPayload,
    reopened: bool,
}

/// A listening server.
#[derive(Debug)]
pub(super) struct ServerState {
    pub key: KeyPair,
    pub target: [u8; 32],
    config: ServerConfig,
    pub announcer: Announcer,
    slots: Vec<Option<ServerHandshake>>,
    connects: HashMap<Vec<u8>, usize>,
}

impl ServerState {
    pub fn slot_mut(&mut self, slot: usize) -> Option<&mut ServerHandshake> {
        self.slots.get_mut(slot)?.as_mut()
    }

    pub fn due_punchers(&self, now: Timestamp) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, h)| {
                h.as_ref()
                    .and_then(|h| h.puncher.as_ref()?.poll_timeout())
                    .is_some_and(|t| t <= now)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The announcer's next deadline (the slots' deadlines are in `Node::slot_hint`).
    pub fn next_timeout(&self) -> Option<Timestamp> {
        self.announcer.next_ping
    }

    fn free_slot(&mut self) -> Option<usize> {
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            return Some(i);
        }
        if self.slots.len() >= self.config.max_handshakes {
            return None;
        }
        self.slots.push(None);
        Some(self.slots.len() - 1)
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
        let Some(mut s) = self.servers.remove(&server.0) else {
            return;
        };
        self.server_targets.remove(&s.target);
        self.router.delete(&s.target);
        for slot in 0..s.slots.len() {
            if let Some(p) = s.slot_mut(slot).and_then(|h| h.puncher.as_mut()) {
                p.finish_elsewhere();
                while let Some(o) = p.poll_output() {
                    if let crate::holepunch::puncher::PunchOutput::Release(sock) = o {
                        self.release_socket(sock);
                    }
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

    /// PEER_HANDSHAKE for one of our servers (`_onpeerhandshake`).
    pub(super) fn on_server_handshake(
        &mut self,
        id: u64,
        socket: SocketId,
        from: SocketAddrV4,
        to: SocketAddrV4,
        tid: u16,
        hs: Handshake,
    ) {
        if !matches!(
            hs.mode,
            mode::FROM_CLIENT | mode::FROM_RELAY | mode::FROM_SECOND_RELAY
        ) {
            return;
        }
        let pending = PendingReply {
            tid,
            mode: hs.mode,
            from,
            in_socket: socket,
            peer_address: hs.peer_address,
            relay_address: hs.relay_address,
        };
        let existing = self
            .servers
            .get(&id)
            .and_then(|s| s.connects.get(&hs.noise).copied());
        let slot = match existing {
            Some(slot) => slot,
            None => {
                let client_address = hs.peer_address.unwrap_or(from);
                let direct = hs.peer_address.is_none();
                match self.add_handshake(id, &hs.noise, client_address, to, socket, direct) {
                    Some(slot) => slot,
                    None => return,
                }
            }
        };
        let Some(h) = self.servers.get_mut(&id).and_then(|s| s.slot_mut(slot)) else {
            return;
        };
        if h.reply.is_none() {
            return;
        }
        let waiting =
            h.reply_from_puncher && h.puncher.as_ref().and_then(Puncher::socket).is_none();
        if waiting {
            h.pending_replies.push(pending);
            return;
        }
        self.send_handshake_reply(id, slot, pending);
    }

    fn send_handshake_reply(&mut self, id: u64, slot: usize, p: PendingReply) {
        let Some(s) = self.servers.get(&id) else {
            return;
        };
        let target = s.target;
        let Some(Some(h)) = s.slots.get(slot) else {
            return;
        };
        let Some(noise) = h.reply.clone() else { return };
        let socket = if h.reply_from_puncher {
            h.puncher
                .as_ref()
                .and_then(Puncher::socket)
                .unwrap_or(p.in_socket)
        } else {
            p.in_socket
        };
        match p.mode {
            mode::FROM_CLIENT => {
                let value = Handshake {
                    mode: mode::REPLY,
                    noise,
                    peer_address: None,
                    relay_address: None,
                }
                .to_bytes();
                self.send_reply(socket, p.from, p.tid, 0, Some(&value), false, None);
            }
            mode::FROM_RELAY | mode::FROM_SECOND_RELAY => {
                let dest = if p.mode == mode::FROM_RELAY {
                    Some(p.from)
                } else {
                    p.relay_address
                };
                let Some(dest) = dest else { return };
                let value = Handshake {
                    mode: mode::FROM_SERVER,
                    noise,
                    peer_address: p.peer_address,
                    relay_address: None,
                }
                .to_bytes();
                self.send_relay_request(
                    socket,
                    dest,
                    p.tid,
                    command::PEER_HANDSHAKE,
                    Some(target),
                    &value,
                );
            }
            _ => {}
        }
    }

    /// `_addHandshake`: runs the responder and decides how the path will open.
    fn add_handshake(
        &mut self,
        id: u64,
        noise: &[u8],
        client_address: SocketAddrV4,
        server_address: SocketAddrV4,
        socket: SocketId,
        direct: bool,
    ) -> Option<usize> {
        let ephemeral = KeyPair::from_seed(&self.rng.bytes32());
        let local_secret = self.rng.bytes32();
        let remote_address = self.remote_address();
        let local_addrs = self.local_addresses();
        let udx_id = self.alloc_udx_id();
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let now = self.now;
        // The slot about to be taken clears after this (an early hint if none is taken).
        self.note_slot_deadline(Some(now + HANDSHAKE_CLEAR_WAIT));
        let s = self.servers.get_mut(&id)?;
        let slot = s.free_slot()?;
        let mut responder = Responder::new(s.key.clone(), ephemeral);
        let mut h = ServerHandshake {
            conn,
            noise_key: noise.to_vec(),
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
        };
        s.connects.insert(noise.to_vec(), slot);
        let read = responder
            .read_message1(noise)
            .ok()
            .and_then(|(payload, rs)| Some((NoisePayload::decode(&payload).ok()?, rs)));
        let Some((remote_payload, remote_pk)) = read else {
            tracing::debug!("handshake message 1 refused");
            s.slots[slot] = Some(h);
            return Some(slot);
        };
        let accepted = s.config.accept.as_ref().is_none_or(|f| {
            f(&IncomingHandshake {
                remote_public_key: &remote_pk,
                client_address,
                payload: &remote_payload,
            })
        });
        if !accepted {
            tracing::info!(client = %to_hex(&remote_pk), "handshake refused by the accept policy");
            s.slots[slot] = Some(h);
            return Some(slot);
        }
        let err = if remote_payload.version != 1 {
            error::VERSION_MISMATCH
        } else if remote_payload.udx.is_none() {
            error::ABORTED
        } else {
            error::NONE
        };
        let mut addresses = Vec::new();
        addresses.extend(remote_address);
        if !s.config.hide_local_addresses {
            addresses.extend(local_addrs.iter().copied());
        }
        let relay_addresses = s.announcer.relay_addresses.clone();
        let relay_through = s.config.relay_through.map(|public_key| RelayThrough {
            version: 1,
            public_key,
            token: self.rng.bytes32(),
        });
        let payload = NoisePayload {
            version: 1,
            error: err,
            firewall: if remote_address.is_some() {
                firewall::OPEN
            } else {
                firewall::UNKNOWN
            },
            holepunch: remote_address.is_none().then(|| HolepunchInfo {
                id: slot as u64,
                relays: s.announcer.relays.clone(),
            }),
            addresses4: addresses,
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: if err == error::NONE {
                    u64::from(udx_id)
                } else {
                    0
                },
                seq: 0,
            }),
            secret_stream: Some(1),
            relay_through,
            relay_addresses: (!relay_addresses.is_empty()).then_some(relay_addresses),
            ..NoisePayload::default()
        };
        let Ok((reply, output)) = responder.write_message2(&payload.to_bytes()) else {
            s.slots[slot] = Some(h);
            return Some(slot);
        };
        h.reply = Some(reply);
        if err != error::NONE {
            s.slots[slot] = Some(h);
            return Some(slot);
        }
        let remote_udx_id = remote_payload.udx.map_or(0, |u| u.id as u32);
        let conn_output = output.clone();
        h.secure = Some(SecurePayload::new(output.holepunch_secret(), local_secret));
        h.output = Some(output.clone());
        h.remote_payload = Some(remote_payload.clone());
        h.clear_at = None;
        let hide_local = s.config.hide_local_addresses;
        let key = s.key.clone();
        s.slots[slot] = Some(h);
        tracing::debug!(client = %to_hex(&remote_pk), %client_address, direct, "handshake accepted");
        self.push_event(Event::Incoming {
            server: ServerId(id),
            conn,
            remote_public_key: remote_pk,
        });
        self.open_conn(
            conn,
            super::conn::Origin::Server(id, slot),
            conn_output,
            udx_id,
            remote_udx_id,
            None,
            false,
        );

        if remote_payload.firewall == firewall::OPEN || direct {
            let path_socket = if direct {
                socket
            } else {
                self.request_socket()
            };
            self.server_path_open(id, slot, path_socket, client_address);
            return Some(slot);
        }
        // A blind relay races the holepunch: ours first (we initiate), else the client's
        // (`_relayConnection`).
        let relay = match (relay_through, remote_payload.relay_through) {
            (Some(ours), _) => Some((ours.public_key, ours.token, true)),
            (None, Some(theirs)) => Some((theirs.public_key, theirs.token, false)),
            (None, None) => None,
        };
        if let Some((relay_key, token, is_initiator)) = relay {
            let request = RelayRequest {
                owner: RelayOwner::Server(id, slot),
                peer_conn: conn,
                local_udx_id: udx_id,
                relay_key,
                token,
                is_initiator,
            };
            self.start_relay(request, &key);
        }
        let deadline = Some(now + HANDSHAKE_INITIAL_TIMEOUT);
        if client_address.ip() == server_address.ip() && !hide_local {
            let client_lan: Vec<SocketAddrV4> = remote_payload
                .addresses4
                .iter()
                .filter(|a| is_private(a.ip()))
                .copied()
                .collect();
            if match_address(&local_addrs, &client_lan).is_some() {
                self.start_server_puncher(id, slot, remote_payload.firewall, false);
                if let Some(h) = self.servers.get_mut(&id).and_then(|s| s.slot_mut(slot)) {
                    h.prepunch_deadline = deadline;
                }
                self.note_slot_deadline(deadline);
                return Some(slot);
            }
        }
        if remote_address.is_some() {
            if let Some(h) = self.servers.get_mut(&id).and_then(|s| s.slot_mut(slot)) {
                h.prepunch_deadline = deadline;
            }
            self.note_slot_deadline(deadline);
            return Some(slot);
        }
        self.start_server_puncher(id, slot, remote_payload.firewall, true);
        if let Some(h) = self.servers.get_mut(&id).and_then(|s| s.slot_mut(slot)) {
            h.prepunch_deadline = deadline;
        }
        self.note_slot_deadline(deadline);
        Some(slot)
    }

    fn start_server_puncher(
        &mut self,
        id: u64,
        slot: usize,
        remote_firewall: u64,
        reply_from_puncher: bool,
    ) {
        let nodes = self.sample_nodes();
        let rng = self.rng.child();
        let firewalled = self.firewalled;
        if let Some(h) = self.servers.get_mut(&id).and_then(|s| s.slot_mut(slot)) {
            h.puncher = Some(Puncher::new(false, firewalled, remote_firewall, nodes, rng));
            h.reply_from_puncher = reply_from_puncher;
        }
        self.drain_puncher(PuncherRef::Server(id, slot));
    }

    /// DHT nodes to sample a puncher's NAT through, most recently heard from first.
    pub(super) fn sample_nodes(&self) -> Vec<SocketAddrV4> {
        self.table
            .latest_first()
            .take(32)
            .filter_map(|id| self.table.get(id).map(|n| n.addr))
            .collect()
    }

    /// The server side of a connection has its path (`hs.onsocket`).
    pub(super) fn server_path_open(
        &mut self,
        id: u64,
        slot: usize,
        socket: SocketId,
        remote: SocketAddrV4,
    ) {
        let now = self.now;
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        let Some(h) = s.slot_mut(slot) else { return };
        if h.done {
            return;
        }
        h.done = true;
        h.prepunch_deadline = None;
        h.clear_at = Some(now + HANDSHAKE_CLEAR_WAIT);
        let conn = h.conn;
        if let Some(p) = h.puncher.as_mut() {
            p.finish_elsewhere();
        }
        self.adopt_socket(socket, conn.0);
        self.note_slot_deadline(Some(now + HANDSHAKE_CLEAR_WAIT));
        self.drain_puncher(PuncherRef::Server(id, slot));
        // A relay still pairing for this handshake is not needed any more.
        self.drop_relays_of(RelayOwner::Server(id, slot));
        tracing::debug!(%remote, "server connection path chosen");
        self.conn_path(conn.0, socket, std::net::SocketAddr::V4(remote));
    }

    // ----- holepunching (responder) ---------------------------------------------------------

    /// PEER_HOLEPUNCH FROM_RELAY for one of our servers (`_onpeerholepunch`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_server_holepunch(
        &mut self,
        id: u64,
        socket: SocketId,
        from: SocketAddrV4,
        to: SocketAddrV4,
        tid: u16,
        hp: Holepunch,
    ) {
        let Some(peer_address) = hp.peer_address else {
            return;
        };
        let slot = hp.id as usize;
        let Some(h) = self.servers.get_mut(&id).and_then(|s| s.slot_mut(slot)) else {
            return;
        };
        let Some(secure) = h.secure.clone() else {
            if let Some(p) = h.puncher.as_mut() {
                p.destroy();
            }
            self.drain_puncher(PuncherRef::Server(id, slot));
            return;
        };
        let Some(payload) = secure.open(&hp.payload) else {
            return;
        };
        let pending = PendingHolepunch {
            tid,
            from,
            to,
            socket,
            peer_address,
            payload,
            reopened: false,
        };
        self.process_server_holepunch(id, slot, pending);
    }

    fn process_server_holepunch(&mut self, id: u64, slot: usize, mut pending: PendingHolepunch) {
        let now = self.now;
        let random_ok = self.random_punch_allowed();
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        let is_server_relay = s.announcer.is_relay(&pending.from);
        let target = s.target;
        let holepunch = s.config.holepunch;
        let Some(h) = s.slot_mut(slot) else { return };
        let (Some(secure), Some(p)) = (h.secure.clone(), h.puncher.as_mut()) else {
            return self.server_abort(id, slot, &pending, error::ABORTED);
        };
        if p.socket().is_none() {
            return self.server_abort(id, slot, &pending, error::ABORTED);
        }
        let remote = &pending.payload;
        if remote.error != error::NONE {
            if remote.round >= h.round {
                h.round = remote.round;
            }
            return self.server_abort(id, slot, &pending, error::ABORTED);
        }
        let token = secure.token(*pending.peer_address.ip());
        let echoed = is_server_relay && remote.remote_token == Some(token);
        if !pending.reopened {
            if p.owns(pending.socket) {
                p.nat_mut().add(pending.to, pending.from);
            }
            if remote.round >= h.round {
                h.round = remote.round;
                p.update_remote(
                    remote.punching,
                    remote.firewall,
                    remote.addresses.as_deref(),
                    echoed.then_some(*pending.peer_address.ip()),
                );
            }
        }
        if !p.is_analyzed() {
            h.pending_holepunch = Some(pending);
            return;
        }
        // A client whose fast-open probe reached one of our puncher sockets (we echoed it;
        // a re-rolled one stays open for that) is about to open its stream there: re-rolling
        // again, or aborting, would cut a working path. An UNKNOWN NAT comes from too few DHT
        // nodes to sample, e.g. a firewalled node on 0.0.0.0 in a small network on 127.0.0.1.
        let probed = p.was_probed_from(pending.peer_address);
        if !p.remote_punching && p.is_unstable() && !probed {
            if !pending.reopened && p.reopen() {
                pending.reopened = true;
                h.pending_holepunch = Some(pending);
                self.drain_puncher(PuncherRef::Server(id, slot));
                return;
            }
            return self.server_abort(id, slot, &pending, error::ABORTED);
        }
        let fw = p.nat().firewall();
        let consistent = fw == firewall::CONSISTENT || fw == firewall::OPEN;
        let fast = consistent
            && remote
                .remote_address
                .is_some_and(|ra| p.nat().addresses().is_some_and(|a| a.contains(&ra)));
        tracing::debug!(
            round = remote.round,
            remote_firewall = remote.firewall,
            remote_punching = remote.punching,
            local_firewall = fw,
            remote_address = ?remote.remote_address,
            our_addresses = ?p.nat().addresses(),
            fast,
            "holepunch: client round"
        );
        if fast {
            // Fast mode: the client opened its NAT towards our address; ping it back now.
            p.ping(pending.peer_address);
        }
        if p.remote_punching && !holepunch {
            tracing::debug!("holepunch refused (ServerConfig::holepunch is off)");
            return self.server_abort(id, slot, &pending, error::ABORTED);
        }
        if p.remote_punching {
            h.prepunch_deadline = None;
            let random = p.remote_firewall >= firewall::RANDOM || fw >= firewall::RANDOM;
            if random && !random_ok {
                // No blind relay to fall back on: JS answers TRY_LATER only with a relay token.
                return self.server_abort(id, slot, &pending, error::TRY_LATER);
            }
            if !p.punch(now) {
                return self.server_abort(id, slot, &pending, error::ABORTED);
            }
        }
        if p.nat().firewall() != firewall::UNKNOWN {
            p.nat_mut().freeze();
        }
        let reply = HolepunchPayload {
            error: error::NONE,
            firewall: p.nat().firewall(),
            round: h.round,
            connected: p.is_connected(),
            punching: p.is_punching(),
            addresses: p.nat().addresses().map(<[SocketAddrV4]>::to_vec),
            remote_address: None,
            token: is_server_relay.then_some(token),
            remote_token: remote.token,
        };
        let puncher_socket = p.socket().unwrap_or(pending.socket);
        let value = self.server_holepunch_value(&secure, &reply, pending.peer_address);
        self.send_relay_request(
            puncher_socket,
            pending.from,
            pending.tid,
            command::PEER_HOLEPUNCH,
            Some(target),
            &value,
        );
        self.drain_puncher(PuncherRef::Server(id, slot));
    }

    /// `_abort`: answers the client round `pending` with an error payload from the DHT socket;
    /// the puncher goes.
    fn server_abort(&mut self, id: u64, slot: usize, pending: &PendingHolepunch, code: u64) {
        let socket = self.request_socket();
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        let target = s.target;
        let Some(h) = s.slot_mut(slot) else { return };
        if let Some(p) = h.puncher.as_mut() {
            p.destroy();
        }
        let Some(secure) = h.secure.clone() else {
            self.drain_puncher(PuncherRef::Server(id, slot));
            return;
        };
        let payload = HolepunchPayload {
            error: code,
            firewall: firewall::UNKNOWN,
            round: h.round,
            ..HolepunchPayload::default()
        };
        let value = self.server_holepunch_value(&secure, &payload, pending.peer_address);
        self.send_relay_request(
            socket,
            pending.from,
            pending.tid,
            command::PEER_HOLEPUNCH,
            Some(target),
            &value,
        );
        self.drain_puncher(PuncherRef::Server(id, slot));
    }

    /// Seals `payload` for the client under a fresh nonce and encodes it as the server's
    /// PEER_HOLEPUNCH value (mode FROM_SERVER, echoing the client's `peer_address`).
    fn server_holepunch_value(
        &mut self,
        secure: &SecurePayload,
        payload: &HolepunchPayload,
        peer_address: SocketAddrV4,
    ) -> Vec<u8> {
        let nonce = self.rng.bytes32()[..24].try_into().unwrap_or([0; 24]);
        Holepunch {
            mode: mode::FROM_SERVER,
            id: 0,
            payload: secure.seal(payload, nonce),
            peer_address: Some(peer_address),
        }
        .to_bytes()
    }

    /// After a server puncher made progress: send held handshake replies, resume a holepunch
    /// request that waited for the NAT analysis.
    pub(super) fn after_server_puncher(&mut self, id: u64, slot: usize) {
        let Some(h) = self.servers.get_mut(&id).and_then(|s| s.slot_mut(slot)) else {
            return;
        };
        let bound = h.puncher.as_ref().and_then(Puncher::socket).is_some();
        let replies = if bound {
            core::mem::take(&mut h.pending_replies)
        } else {
            Vec::new()
        };
        let analyzed = h.puncher.as_ref().is_some_and(Puncher::is_analyzed);
        let resume = if analyzed {
            h.pending_holepunch.take()
        } else {
            None
        };
        for r in replies {
            self.send_handshake_reply(id, slot, r);
        }
        if let Some(p) = resume {
            self.process_server_holepunch(id, slot, p);
        }
    }

    /// Server slot timers: prepunch timeouts and slot clearing. The caller skips this unless
    /// [`Node::slots_may_be_due`].
    pub(super) fn server_slot_timers(&mut self) {
        let now = self.now;
        let mut aborts = Vec::new();
        let mut cleared = Vec::new();
        let relaying = self.relay_owners();
        for (id, s) in self.servers.iter_mut() {
            for (i, slot) in s.slots.iter_mut().enumerate() {
                let Some(h) = slot else { continue };
                if h.prepunch_deadline.is_some_and(|t| t <= now) {
                    h.prepunch_deadline = None;
                    // A relay still pairing keeps the handshake (JS keeps the raw stream while
                    // it has a relay token); it clears once the relay gives up.
                    if !relaying.contains(&RelayOwner::Server(*id, i)) {
                        h.clear_at = Some(now + HANDSHAKE_CLEAR_WAIT);
                    }
                    aborts.push((*id, i));
                }
                if h.clear_at.is_some_and(|t| t <= now) {
                    let key = core::mem::take(&mut h.noise_key);
                    s.connects.remove(&key);
                    if !h.done && h.output.is_some() {
                        cleared.push(h.conn);
                    }
                    *slot = None;
                }
            }
            while matches!(s.slots.last(), Some(None)) {
                s.slots.pop();
            }
        }
        for (id, slot) in aborts {
            tracing::debug!("server handshake timed out waiting for a path");
            if let Some(p) = self
                .servers
                .get_mut(&id)
                .and_then(|s| s.slot_mut(slot))
                .and_then(|h| h.puncher.as_mut())
            {
                p.destroy();
            }
            self.drain_puncher(PuncherRef::Server(id, slot));
        }
        for conn in cleared {
            self.close_if_unopened(conn.0);
        }
    }

    /// A server puncher connected (servers connect on the first UDX packet instead; a probe
    /// only answers probes) or gave up.
    pub(super) fn on_server_punch_aborted(&mut self, id: u64, slot: usize) {
        let now = self.now;
        let relaying = self.relay_pending(RelayOwner::Server(id, slot));
        if let Some(h) = self.servers.get_mut(&id).and_then(|s| s.slot_mut(slot)) {
            h.pending_holepunch = None;
            if !h.done && h.clear_at.is_none() && !relaying {
                h.clear_at = Some(now + HANDSHAKE_CLEAR_WAIT);
            }
        }
        self.note_slot_deadline(Some(now + HANDSHAKE_CLEAR_WAIT));
    }

    /// Whether handshake `slot` of server `id` still waits for its path.
    pub(super) fn server_awaits_path(&self, id: u64, slot: usize) -> bool {
        self.servers
            .get(&id)
            .and_then(|s| s.slots.get(slot)?.as_ref())
            .is_some_and(|h| !h.done && h.output.is_some())
    }

    /// The handshake's blind relay failed: without a path by now, the handshake clears.
    pub(super) fn server_relay_gone(&mut self, id: u64, slot: usize) {
        let now = self.now;
        if let Some(h) = self.servers.get_mut(&id).and_then(|s| s.slot_mut(slot)) {
            if !h.done && h.clear_at.is_none() && h.prepunch_deadline.is_none() {
                h.clear_at = Some(now + HANDSHAKE_CLEAR_WAIT);
            }
        }
        self.note_slot_deadline(Some(now + HANDSHAKE_CLEAR_WAIT));
    }

    /// Lowers the slot hint to `t`: every deadline of a server's handshake slot (prepunch,
    /// clear, its puncher's timer) is at or after `slot_hint`. Called wherever one is set.
    pub(super) fn note_slot_deadline(&mut self, t: Option<Timestamp>) {
        if let Some(t) = t {
            self.slot_hint = Some(self.slot_hint.map_or(t, |h| h.min(t)));
        }
    }

    /// Whether a slot deadline may be due now (else the slot walks are skipped).
    pub(super) fn slots_may_be_due(&self) -> bool {
        self.slot_hint.is_some_and(|t| t <= self.now)
    }

    /// Sets the slot hint to the exact earliest slot deadline (one walk over every slot).
    pub(super) fn recompute_slot_hint(&mut self) {
        self.slot_hint = self
            .servers
            .values()
            .flat_map(|s| s.slots.iter().flatten())
            .flat_map(|h| {
                [
                    h.prepunch_deadline,
                    h.clear_at,
                    h.puncher.as_ref().and_then(Puncher::poll_timeout),
                ]
            })
            .flatten()
            .min();
    }
}
