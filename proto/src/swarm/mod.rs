//! Hyperswarm: meet the peers of a topic, one connection to each (npm `hyperswarm` 4.17.2,
//! `index.js`).
//!
//! A [`Swarm`] sits beside a [`Node`] and drives it: it announces the topics it joins as a
//! server (with its own key pair listening), looks them up as a client, queues the peers found
//! and dials them a few at a time, retries with hyperswarm's backoff, and keeps exactly one
//! connection per remote key, choosing between two connections to the same peer by
//! hyperswarm's rule so both ends keep the same one.
//!
//! It is sans-IO like the node. The driver hands every node event to
//! [`Swarm::handle_event`] first (the swarm keeps the events of its own queries, server and
//! dropped duplicates, and gives back the rest), calls [`Swarm::handle_timeout`] when
//! [`Swarm::poll_timeout`] is due, and drains [`Swarm::poll_event`]. The connections the swarm
//! opens are ordinary node connections: read and write them with the node's `conn_*` calls.
//!
//! ```
//! use hyperdht_proto::swarm::{JoinOptions, Swarm, SwarmConfig};
//! use hyperdht_proto::{Config, KeyPair, Node, Timestamp};
//!
//! let mut node = Node::new(Config::bootstrapper("127.0.0.1:49738".parse().unwrap()), [1; 32], Timestamp::ZERO);
//! let mut swarm = Swarm::new(SwarmConfig::new(KeyPair::from_seed(&[2; 32])), [3; 32]);
//! swarm.join(Timestamp::ZERO, &mut node, [4; 32], JoinOptions::default()).unwrap();
//! assert_eq!(swarm.topics().count(), 1);
//! // The driver loop: node events through `swarm.handle_event`, then `swarm.poll_event()`.
//! ```

mod accept;
mod dial;
mod discovery;
mod gate;
mod peer;
mod queue;
mod refresh;
mod retry;

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddrV4;

use crate::dht::KeyPair;
use crate::error::ApiError;
use crate::event::Event;
use crate::ids::{ConnId, QueryId, ServerId};
use crate::node::Node;
use crate::rng::Rng;
use crate::time::Timestamp;

pub use discovery::JoinOptions;
pub use gate::{Firewall, MAX_BANNED};
pub use peer::{PeerInfo, Priority, MAX_TOPICS_PER_PEER};

use discovery::Discovery;
use gate::SharedGate;
use queue::PeerQueue;
use retry::RetryTimer;

/// `MAX_PEERS = 64`.
pub const MAX_PEERS: usize = 64;
/// `MAX_PARALLEL = 3`: dials under way at once.
pub const MAX_PARALLEL: usize = 3;
/// Peers the swarm remembers from lookups (JS has no bound). Peers past it are not stored;
/// each is counted in [`SwarmStats::peers_not_stored`].
pub const MAX_KNOWN_PEERS: usize = 2048;
/// Peers taken from one lookup reply (a storing node keeps at most 20 per topic; a reply
/// that lists more is cut and counted).
pub const MAX_PEERS_PER_REPLY: usize = 20;
/// `Dropped` events queued at most: past it, drops a remote peer causes (refused or duplicate
/// connections) are only counted ([`SwarmStats::events_not_queued`]), so a driver that polls
/// late never holds an unbounded queue. Other events are bounded by the connections.
pub const MAX_QUEUED_DROPS: usize = 1024;

/// How a swarm behaves (JS `new Hyperswarm(opts)`).
#[derive(Clone)]
#[non_exhaustive]
pub struct SwarmConfig {
    /// The key pair the swarm listens and dials as (JS `keyPair`, or `DHT.keyPair(seed)`:
    /// [`KeyPair::from_seed`]).
    pub key_pair: KeyPair,
    /// Stop dialling once this many connections are open or opening (JS `maxPeers`, 64),
    /// counted as JS does (explicit peers weigh more).
    pub max_peers: usize,
    /// Dials at once (JS `maxParallel`, 3).
    pub max_parallel: usize,
    /// Connections we dialled, at most (JS `maxClientConnections`, unbounded).
    pub max_client_connections: usize,
    /// Connections peers dialled, at most (JS `maxServerConnections`, which JS does not
    /// enforce; here connections past it are closed, reason
    /// [`DropReason::TooManyServerConnections`]). Unbounded by default, as in JS.
    pub max_server_connections: usize,
    /// Retry periods: short, medium, long, extra long (JS `backoffs`); `None`: hyperswarm's
    /// 1 s / 5 s / 15 s / 10 min with their random parts.
    pub backoffs: Option<[Duration; 4]>,
    /// Random lengthening of each retry period (JS `jitter`, 500 ms).
    pub jitter: Duration,
    /// Keys to refuse, in both directions (JS `firewall`: `true` refuses). Refused keys are
    /// banned.
    pub firewall: Option<Firewall>,
    /// Peers remembered from lookups ([`MAX_KNOWN_PEERS`]).
    pub max_known_peers: usize,
}

impl core::fmt::Debug for SwarmConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SwarmConfig")
            .field(
                "public_key",
                &crate::crypto::to_hex(&self.key_pair.public_key()),
            )
            .field("max_peers", &self.max_peers)
            .field("max_parallel", &self.max_parallel)
            .field("max_client_connections", &self.max_client_connections)
            .field("max_server_connections", &self.max_server_connections)
            .field("backoffs", &self.backoffs)
            .field("jitter", &self.jitter)
            .field("firewall", &self.firewall.as_ref().map(|_| "fn"))
            .field("max_known_peers", &self.max_known_peers)
            .finish()
    }
}

impl SwarmConfig {
    /// hyperswarm's defaults, as `key_pair`.
    pub fn new(key_pair: KeyPair) -> SwarmConfig {
        SwarmConfig {
            key_pair,
            max_peers: MAX_PEERS,
            max_parallel: MAX_PARALLEL,
            max_client_connections: usize::MAX,
            max_server_connections: usize::MAX,
            backoffs: None,
            jitter: retry::BACKOFF_JITTER,
            firewall: None,
            max_known_peers: MAX_KNOWN_PEERS,
        }
    }

    /// hyperswarm's defaults, as the key pair JS `new Hyperswarm({ seed })` derives.
    pub fn from_seed(seed: &[u8; 32]) -> SwarmConfig {
        SwarmConfig::new(KeyPair::from_seed(seed))
    }

    /// These settings with `firewall` (`true` refuses a key).
    pub fn with_firewall(
        mut self,
        firewall: impl Fn(&[u8; 32]) -> bool + Send + Sync + 'static,
    ) -> SwarmConfig {
        self.firewall = Some(std::sync::Arc::new(firewall));
        self
    }
}

/// Handle of one [`Swarm::flush`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlushId(pub u64);

/// Why the swarm let go of a peer or a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// A second connection to a peer we already had one with; hyperswarm's rule kept the
    /// other (JS `Duplicate connection`).
    Duplicate,
    /// The firewall refused the key (JS `Peer is firewalled`); the peer is banned.
    Firewalled,
    /// The peer is banned.
    Banned,
    /// [`SwarmConfig::max_server_connections`] were open.
    TooManyServerConnections,
    /// [`SwarmConfig::max_known_peers`] peers were remembered already.
    TooManyPeers,
    /// The swarm is being destroyed (JS `Swarm has been destroyed`).
    Destroyed,
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DropReason::Duplicate => "duplicate connection",
            DropReason::Firewalled => "peer is firewalled",
            DropReason::Banned => "peer is banned",
            DropReason::TooManyServerConnections => "too many server connections",
            DropReason::TooManyPeers => "too many known peers",
            DropReason::Destroyed => "swarm has been destroyed",
        })
    }
}

/// What the swarm tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwarmEvent {
    /// A connection to a peer opened and is the one the swarm keeps (JS `connection`).
    Connection {
        /// The connection.
        conn: ConnId,
        /// The peer as the swarm knows it (`peer.client`: we dialled).
        peer: PeerInfo,
    },
    /// A connection the swarm handed out closed.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// The peer.
        remote_public_key: [u8; 32],
    },
    /// Connection counts changed (JS `update`); consecutive updates are merged.
    Update,
    /// A peer or one of its connections was let go (JS destroys the connection with an error,
    /// or bans the peer).
    Dropped {
        /// The peer.
        remote_public_key: [u8; 32],
        /// The connection closed for it, if any.
        conn: Option<ConnId>,
        /// Why.
        reason: DropReason,
    },
    /// A topic's refresh finished (JS `discovery.flushed()` resolves): as a server the topic
    /// is announced.
    TopicFlushed {
        /// The topic.
        topic: [u8; 32],
        /// Whether the refresh's query succeeded.
        ok: bool,
    },
    /// A [`Swarm::flush`] finished (JS `swarm.flush()` resolves): every peer found so far was
    /// tried, or the swarm is full. `ok` is false when the swarm was destroyed first.
    Flushed {
        /// Which flush.
        flush: FlushId,
        /// Whether it completed.
        ok: bool,
    },
    /// A topic left with [`Swarm::leave`] is unannounced.
    Left {
        /// The topic.
        topic: [u8; 32],
    },
    /// [`Swarm::destroy`] finished: topics unannounced, server closed, connections closed.
    Destroyed,
}

/// Counters (JS `swarm.stats`, plus what the bounds dropped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwarmStats {
    /// `update` events raised.
    pub updates: u64,
    /// Dials started (JS `connects.client.attempted`).
    pub client_attempted: u64,
    /// Dials that opened.
    pub client_opened: u64,
    /// Dials that ended (failed or closed).
    pub client_closed: u64,
    /// Connections peers dialled that the swarm kept.
    pub server_opened: u64,
    /// Of those, closed.
    pub server_closed: u64,
    /// Peers banned (JS `bannedPeers`).
    pub banned_peers: u64,
    /// Connections closed as duplicates.
    pub duplicates: u64,
    /// Dials and connections refused by the firewall or a ban.
    pub refused: u64,
    /// Connections closed over [`SwarmConfig::max_server_connections`].
    pub server_over_limit: u64,
    /// Peers not remembered because [`SwarmConfig::max_known_peers`] were.
    pub peers_not_stored: u64,
    /// Peers cut from lookup replies that listed more than [`MAX_PEERS_PER_REPLY`].
    pub peers_cut: u64,
    /// `Dropped` events not queued because [`MAX_QUEUED_DROPS`] were.
    pub events_not_queued: u64,
}

/// One open connection of the swarm ([`Swarm::open_connections`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenConnection {
    /// The peer's public key.
    pub remote_public_key: [u8; 32],
    /// The node's connection.
    pub conn: ConnId,
    /// Whether we dialled it (JS `peer.client`).
    pub client: bool,
}

/// A snapshot of a swarm's state ([`Swarm::info`]), what the drivers' `info()` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwarmInfo {
    /// Open connections.
    pub connections: usize,
    /// The peers of the open connections, each with whether we dialled it.
    pub connected: Vec<([u8; 32], bool)>,
    /// The ids of the open connections, in the order of `connected`.
    pub open: Vec<ConnId>,
    /// Dials under way.
    pub connecting: usize,
    /// Peers waiting to be dialled.
    pub queued: usize,
    /// Peers waiting for a retry.
    pub waiting: usize,
    /// Every peer the swarm remembers.
    pub peers: Vec<PeerInfo>,
    /// The topics joined.
    pub topics: Vec<[u8; 32]>,
    /// Counters.
    pub stats: SwarmStats,
}

/// What the swarm knows of one connection.
#[derive(Clone, Copy, Debug)]
struct SwarmConn {
    remote: [u8; 32],
    /// We dialled it.
    client: bool,
    /// It opened (client) / was accepted (server).
    opened: bool,
    /// A dial taken from the queue (it counts for flushes).
    queued: bool,
}

/// What a query of the swarm's is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueryOwner {
    /// A topic's refresh.
    Refresh([u8; 32]),
    /// The unannounce of a topic left.
    Leave([u8; 32]),
}

/// A pending [`Swarm::flush`].
#[derive(Debug)]
struct PendingFlush {
    id: FlushId,
    /// `None` while the topics are still flushing; then the dials it waits for.
    counting: Option<(usize, u64)>,
}

/// Hyperswarm's state machine: topics, peers, the dial queue and the connections.
pub struct Swarm {
    config: SwarmConfig,
    rng: Rng,
    gate: SharedGate,
    server: Option<ServerId>,
    listening: bool,
    discoveries: BTreeMap<[u8; 32], Discovery>,
    queries: BTreeMap<QueryId, QueryOwner>,
    peers: BTreeMap<[u8; 32], PeerInfo>,
    explicit: BTreeSet<[u8; 32]>,
    queue: PeerQueue,
    retry: RetryTimer,
    conns: BTreeMap<ConnId, SwarmConn>,
    /// The connection (opening or open) per remote key (JS `_allConnections`).
    by_key: BTreeMap<[u8; 32], ConnId>,
    /// Connections the server accepted a handshake for, not open yet.
    incoming: BTreeMap<ConnId, [u8; 32]>,
    /// Open connections (JS `connections`).
    open: usize,
    connecting: usize,
    client_connections: usize,
    server_connections: usize,
    flushes: Vec<PendingFlush>,
    flush_tick: u64,
    next_flush: u64,
    events: VecDeque<SwarmEvent>,
    /// `Dropped` events in `events`.
    queued_drops: usize,
    stats: SwarmStats,
    destroyed: bool,
    /// Destroy waits for this server (ours) to close.
    server_closing: Option<ServerId>,
    destroy_reported: bool,
}

impl core::fmt::Debug for Swarm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Swarm")
            .field("config", &self.config)
            .field("topics", &self.discoveries.len())
            .field("peers", &self.peers.len())
            .field("connections", &self.by_key.len())
            .finish()
    }
}

impl Swarm {
    /// A swarm with `config`; `seed` feeds its random choices (queue order, jitter).
    pub fn new(config: SwarmConfig, seed: [u8; 32]) -> Swarm {
        let mut rng = Rng::from_seed(seed);
        let retry = RetryTimer::new(config.backoffs, config.jitter, &mut rng);
        let gate = SharedGate::new(config.key_pair.public_key(), config.firewall.clone());
        Swarm {
            config,
            rng,
            gate,
            server: None,
            listening: false,
            discoveries: BTreeMap::new(),
            queries: BTreeMap::new(),
            peers: BTreeMap::new(),
            explicit: BTreeSet::new(),
            queue: PeerQueue::default(),
            retry,
            conns: BTreeMap::new(),
            by_key: BTreeMap::new(),
            incoming: BTreeMap::new(),
            open: 0,
            connecting: 0,
            client_connections: 0,
            server_connections: 0,
            flushes: Vec::new(),
            flush_tick: 0,
            next_flush: 0,
            events: VecDeque::new(),
            queued_drops: 0,
            stats: SwarmStats::default(),
            destroyed: false,
            server_closing: None,
            destroy_reported: false,
        }
    }

    // ----- application API ------------------------------------------------------------------

    /// Joins `topic` (JS `swarm.join(topic, { server, client })`): as a server the swarm's key
    /// listens and the topic is announced; as a client the topic is looked up and the peers
    /// found are dialled. Joining a topic again adds the roles asked for now to those it has.
    pub fn join(
        &mut self,
        now: Timestamp,
        node: &mut Node,
        topic: [u8; 32],
        options: JoinOptions,
    ) -> Result<(), ApiError> {
        if self.destroyed {
            return Err(ApiError::Closed);
        }
        if !options.server && !options.client {
            return Err(ApiError::NoRole);
        }
        if options.server {
            self.listen(now, node)?;
        }
        let d = self
            .discoveries
            .entry(topic)
            .or_insert_with(|| Discovery::new(options));
        d.wanted.server |= options.server;
        d.wanted.client |= options.client;
        tracing::debug!(topic = %crate::crypto::to_hex(&topic), ?options, "joining topic");
        self.start_refresh(now, node, topic);
        Ok(())
    }

    /// Leaves `topic` (JS `swarm.leave(topic)`): no more lookups or announces, and the
    /// announce is removed ([`SwarmEvent::Left`] follows). Connections stay open; peers found
    /// only on this topic are not redialled.
    pub fn leave(&mut self, now: Timestamp, node: &mut Node, topic: &[u8; 32]) {
        let Some(d) = self.discoveries.remove(topic) else {
            return;
        };
        self.abandon_query(&d);
        if d.needs_unannounce {
            let q = node.unannounce(now, topic, &self.config.key_pair);
            self.queries.insert(q, QueryOwner::Leave(*topic));
        } else {
            self.events.push_back(SwarmEvent::Left { topic: *topic });
        }
        self.check_flushes();
    }

    /// Keeps a connection to `public_key` whatever the topics (JS `joinPeer`).
    pub fn join_peer(&mut self, now: Timestamp, node: &mut Node, public_key: [u8; 32]) {
        if public_key == self.config.key_pair.public_key() {
            return;
        }
        let Some(peer) = self.upsert_peer(public_key, None, true) else {
            return;
        };
        peer.explicit = true;
        self.explicit.insert(public_key);
        if self.by_key.contains_key(&public_key) {
            return;
        }
        if self
            .peers
            .get_mut(&public_key)
            .is_some_and(PeerInfo::update_priority)
        {
            self.enqueue(now, node, public_key);
        }
    }

    /// Stops keeping a connection to `public_key` (JS `leavePeer`); an open one stays open.
    pub fn leave_peer(&mut self, public_key: &[u8; 32]) {
        let Some(peer) = self.peers.get_mut(public_key) else {
            return;
        };
        peer.explicit = false;
        self.explicit.remove(public_key);
        self.maybe_forget_peer(public_key);
    }

    /// Starts a flush (JS `swarm.flush()`): [`SwarmEvent::Flushed`] follows once every topic
    /// is flushed and every peer found so far has been tried (or the swarm is full).
    pub fn flush(&mut self) -> FlushId {
        self.next_flush += 1;
        let id = FlushId(self.next_flush);
        self.flushes.push(PendingFlush { id, counting: None });
        self.check_flushes();
        id
    }

    /// Bans `public_key` (or lifts the ban): no dials, no connections accepted.
    pub fn ban(&mut self, public_key: [u8; 32], banned: bool) {
        if banned {
            self.ban_peer(public_key, DropReason::Banned);
        } else {
            if let Some(p) = self.peers.get_mut(&public_key) {
                p.banned = false;
            }
            self.gate.lock().unban(&public_key);
        }
    }

    /// Whether to redial `public_key` after it disconnects (JS `peerInfo.reconnect(bool)`).
    pub fn set_reconnect(&mut self, public_key: &[u8; 32], reconnect: bool) {
        if let Some(p) = self.peers.get_mut(public_key) {
            p.reconnecting = reconnect;
        }
    }

    /// Destroys the swarm (JS `swarm.destroy()`): leaves every topic, closes the server and
    /// every connection; [`SwarmEvent::Destroyed`] follows once the announces are removed.
    pub fn destroy(&mut self, now: Timestamp, node: &mut Node) {
        if self.destroyed {
            return;
        }
        self.destroyed = true;
        self.retry.clear();
        self.queue.clear();
        let topics: Vec<[u8; 32]> = self.discoveries.keys().copied().collect();
        for topic in topics {
            self.leave(now, node, &topic);
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.close_conn(now, node, conn, DropReason::Destroyed);
        }
        for (conn, remote) in std::mem::take(&mut self.incoming) {
            node.conn(conn).reset(now);
            self.push_dropped(remote, Some(conn), DropReason::Destroyed);
        }
        if let Some(server) = self.server.take() {
            node.close_server(now, server);
            self.server_closing = Some(server);
        }
        for f in self.flushes.drain(..) {
            self.events.push_back(SwarmEvent::Flushed {
                flush: f.id,
                ok: false,
            });
        }
        self.check_destroyed();
    }

    // ----- driver API -----------------------------------------------------------------------

    /// Hands the swarm a node event. The swarm keeps the events that are its own business
    /// (its queries, its server, connections it closes as duplicates) and gives back every
    /// other, the events of its connections included, for the driver to handle as usual.
    pub fn handle_event(&mut self, now: Timestamp, node: &mut Node, event: Event) -> Option<Event> {
        self.take_refusals();
        let passed = match &event {
            Event::QueryReply { id, .. } | Event::CommitReply { id, .. } => {
                if self.queries.contains_key(id) {
                    None
                } else {
                    Some(event)
                }
            }
            Event::RecordFound { id, record, .. } => match self.queries.get(id).copied() {
                Some(QueryOwner::Refresh(topic)) => {
                    if let crate::event::Record::Lookup { peers, .. } = record {
                        self.on_lookup_peers(now, node, topic, *id, peers);
                    }
                    None
                }
                Some(QueryOwner::Leave(_)) => None,
                None => Some(event),
            },
            Event::QueryFinished { id, result } => match self.queries.remove(id) {
                Some(QueryOwner::Refresh(topic)) => {
                    self.on_refresh_done(now, node, topic, *id, result.is_ok());
                    None
                }
                Some(QueryOwner::Leave(topic)) => {
                    self.events.push_back(SwarmEvent::Left { topic });
                    self.on_leave_done(now, node, topic);
                    None
                }
                None => Some(event),
            },
            Event::ServerListening { server, .. } if Some(*server) == self.server => {
                self.on_listening(now, node);
                None
            }
            Event::ServerClosed { server } if self.server_closing == Some(*server) => {
                self.server_closing = None;
                self.check_destroyed();
                None
            }
            Event::Incoming {
                server,
                conn,
                remote_public_key,
            } if Some(*server) == self.server => {
                self.incoming.insert(*conn, *remote_public_key);
                None
            }
            Event::Connected { conn, .. } => {
                if let Some(remote) = self.incoming.remove(conn) {
                    if self.on_server_connection(now, node, *conn, remote) {
                        Some(event)
                    } else {
                        None
                    }
                } else if self.conns.get(conn).is_some_and(|c| c.client) {
                    self.on_client_open(now, node, *conn);
                    Some(event)
                } else {
                    Some(event)
                }
            }
            Event::ConnectFailed { conn, .. } | Event::ConnClosed { conn, .. } => {
                self.incoming.remove(conn);
                self.on_conn_gone(now, node, *conn);
                Some(event)
            }
            _ => Some(event),
        };
        self.check_flushes();
        passed
    }

    /// Runs the swarm's timers: retries that are due, topic refreshes.
    pub fn handle_timeout(&mut self, now: Timestamp, node: &mut Node) {
        self.take_refusals();
        let due = self.retry.poll(now);
        if !due.is_empty() {
            self.requeue(now, node, due);
        }
        let topics: Vec<[u8; 32]> = self
            .discoveries
            .iter()
            .filter(|(_, d)| d.refresh_timer.is_some_and(|(t, _, _)| t <= now))
            .map(|(t, _)| *t)
            .collect();
        for topic in topics {
            let refresh = self
                .discoveries
                .get_mut(&topic)
                .is_some_and(|d| d.on_refresh_timer(now, &mut self.rng));
            if refresh {
                self.start_refresh(now, node, topic);
            }
        }
        self.check_flushes();
    }

    /// The next time [`Swarm::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let refresh = self
            .discoveries
            .values()
            .filter_map(|d| d.refresh_timer.map(|(t, _, _)| t))
            .min();
        match (refresh, self.retry.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<SwarmEvent> {
        let e = self.events.pop_front()?;
        if matches!(e, SwarmEvent::Dropped { .. }) {
            self.queued_drops -= 1;
        }
        Some(e)
    }

    // ----- accessors ------------------------------------------------------------------------

    /// The swarm's key pair.
    pub fn key_pair(&self) -> &KeyPair {
        &self.config.key_pair
    }

    /// The swarm's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.config.key_pair.public_key()
    }

    /// The topics joined.
    pub fn topics(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.discoveries.keys()
    }

    /// Whether `topic` is joined and its last refresh finished (JS `discovery.flushed()`).
    pub fn is_flushed(&self, topic: &[u8; 32]) -> bool {
        self.discoveries.get(topic).is_some_and(Discovery::flushed)
    }

    /// What the swarm knows of `public_key`.
    pub fn peer(&self, public_key: &[u8; 32]) -> Option<&PeerInfo> {
        self.peers.get(public_key)
    }

    /// Every peer the swarm remembers.
    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.values()
    }

    /// Open connections (JS `swarm.connections.size`).
    pub fn connections(&self) -> usize {
        self.open
    }

    /// Connections open or opening (JS `_allConnections.size`).
    pub fn connections_and_dials(&self) -> usize {
        self.by_key.len()
    }

    /// The open connections, in connection id order.
    pub fn open_connections(&self) -> impl Iterator<Item = OpenConnection> + '_ {
        self.conns
            .iter()
            .filter(|(_, c)| c.opened)
            .map(|(id, c)| OpenConnection {
                remote_public_key: c.remote,
                conn: *id,
                client: c.client,
            })
    }

    /// Dials under way (JS `swarm.connecting`).
    pub fn connecting(&self) -> usize {
        self.connecting
    }

    /// The connection kept with `public_key`, opening or open.
    pub fn connection_to(&self, public_key: &[u8; 32]) -> Option<ConnId> {
        self.by_key.get(public_key).copied()
    }

    /// Whether `conn` is one of the swarm's (a dial or a connection it accepted).
    pub fn owns(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn) || self.incoming.contains_key(&conn)
    }

    /// Peers waiting in the dial queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Peers waiting for a retry.
    pub fn waiting(&self) -> usize {
        self.retry.len()
    }

    /// Counters.
    pub fn stats(&self) -> SwarmStats {
        self.stats
    }

    /// A snapshot of all of the above.
    pub fn info(&self) -> SwarmInfo {
        SwarmInfo {
            connections: self.connections(),
            connected: self
                .open_connections()
                .map(|c| (c.remote_public_key, c.client))
                .collect(),
            open: self.open_connections().map(|c| c.conn).collect(),
            connecting: self.connecting(),
            queued: self.queued(),
            waiting: self.waiting(),
            peers: self.peers().cloned().collect(),
            topics: self.topics().copied().collect(),
            stats: self.stats(),
        }
    }

    /// Whether [`Swarm::destroy`] was called.
    pub fn is_destroyed(&self) -> bool {
        self.destroyed
    }

    // ----- shared helpers -------------------------------------------------------------------

    /// Raises an `update`, merged with one already queued.
    fn update(&mut self) {
        self.stats.updates += 1;
        // An update right after another says nothing new: merged.
        if self.events.back() != Some(&SwarmEvent::Update) {
            self.events.push_back(SwarmEvent::Update);
        }
    }

    fn push_dropped(&mut self, remote: [u8; 32], conn: Option<ConnId>, reason: DropReason) {
        tracing::debug!(peer = %crate::crypto::to_hex(&remote), %reason, "swarm dropped a peer");
        if self.queued_drops >= MAX_QUEUED_DROPS {
            self.stats.events_not_queued += 1;
            return;
        }
        self.queued_drops += 1;
        self.events.push_back(SwarmEvent::Dropped {
            remote_public_key: remote,
            conn,
            reason,
        });
    }

    /// The peer record for `public_key`, made if new (JS `_upsertPeer`; the relay addresses
    /// are replaced: "new is always better"). `forced` records past the cap (peers that
    /// connected to us, or joined by key); lookups are capped.
    fn upsert_peer(
        &mut self,
        public_key: [u8; 32],
        relay_addresses: Option<&[SocketAddrV4]>,
        forced: bool,
    ) -> Option<&mut PeerInfo> {
        if public_key == self.config.key_pair.public_key() {
            return None;
        }
        let addresses: Vec<SocketAddrV4> = relay_addresses
            .unwrap_or_default()
            .iter()
            .take(crate::dht::store::MAX_RELAY_ADDRESSES)
            .copied()
            .collect();
        if !self.peers.contains_key(&public_key) {
            if !forced && self.peers.len() >= self.config.max_known_peers {
                self.stats.peers_not_stored += 1;
                return None;
            }
            self.peers
                .insert(public_key, PeerInfo::new(public_key, addresses));
            return self.peers.get_mut(&public_key);
        }
        let peer = self.peers.get_mut(&public_key)?;
        peer.relay_addresses = addresses;
        Some(peer)
    }

    /// Forgets a peer nothing holds (JS `_maybeDeletePeer`).
    fn maybe_forget_peer(&mut self, public_key: &[u8; 32]) {
        let collectable = self
            .peers
            .get(public_key)
            .is_some_and(PeerInfo::collectable);
        if collectable && !self.by_key.contains_key(public_key) {
            self.peers.remove(public_key);
        }
    }

    /// Bans a peer (JS `_banPeer`).
    fn ban_peer(&mut self, public_key: [u8; 32], reason: DropReason) {
        if let Some(p) = self.upsert_peer(public_key, None, false) {
            p.banned = true;
        }
        self.gate.lock().ban(public_key);
        self.stats.banned_peers += 1;
        self.push_dropped(public_key, None, reason);
    }

    /// Bans the keys the server's firewall refused since the last call.
    fn take_refusals(&mut self) {
        let (refused, unqueued) = {
            let mut gate = self.gate.lock();
            (
                gate.take_refused(),
                std::mem::take(&mut gate.refusals_unqueued),
            )
        };
        // Refusals past the gate's queue are counted, their keys not banned (the firewall
        // refuses them anyway).
        self.stats.refused += unqueued;
        for key in refused {
            self.stats.refused += 1;
            self.ban_peer(key, DropReason::Firewalled);
        }
    }

    fn check_destroyed(&mut self) {
        let leaving = self
            .queries
            .values()
            .any(|q| matches!(q, QueryOwner::Leave(_)));
        if self.destroyed && !self.destroy_reported && !leaving && self.server_closing.is_none() {
            self.destroy_reported = true;
            self.events.push_back(SwarmEvent::Destroyed);
        }
    }
}

#[cfg(test)]
mod tests;
