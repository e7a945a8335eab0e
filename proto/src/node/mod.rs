//! [`Node`]: one DHT node as a pure state machine. It owns the routing table, the requests in
//! flight, the queries, the NAT sampler and the bootstrap/persistence logic of dht-rpc 6.27
//! (`index.js`, `lib/io.js`, `lib/query.js`), and answers the internal commands exactly as JS.
//!
//! Submodules split the concerns: `rpc` (requests in flight, retries, replies), `incoming`
//! (datagram demultiplexing and the internal command handlers), `queries` (driving walks and
//! their commit phase), `maintenance` (ticks, table upkeep, bootstrap, reachability checks).
//!
//! Connections: `crate::connection` (beside this module, never importing it) holds every
//! connection by its id, one `Connection` through all its phases, with one timer table, and
//! each phase's state and rules. Here are the steps that need the endpoint: `client` and
//! `client_punch` drive the attempt (find peer, handshake, path), `responder` the server's
//! handshake and holepunch, `conn` turns the transport's events into the application's,
//! `relay` runs the links to blind relays, `relay_server` the relay service, `sockets` the
//! extra sockets of punchers; `server` is the announcing server itself. The drawing is
//! `proto/ARCHITECTURE.md`.
//!
//! Output queues: `transmits`, `events` and `socket_ops` hold what the driver drains; each
//! is bounded by [`Config::max_queued_output`]. While one is full ([`Node::backpressure`])
//! `handle_datagram` refuses its input before reading it, so a driver that stops draining
//! stops the growth at the next datagram: queued output is never dropped (an event lost
//! would break a connection; a datagram refused is only loss, which UDX and dht-rpc retry).
//! Timers and application calls are not refused: what they produce is bounded by the
//! tables they work from. `relay_inbox` holds the events of the node's own relay links; it
//! is emptied by `run_relays` before every `handle_*` returns, so it never outlives one input.

mod client;
mod client_punch;
mod conn;
mod conn_handle;
mod incoming;
mod maintenance;
mod queries;
mod records;
mod relay;
mod relay_server;
mod responder;
mod rpc;
mod server;
mod sockets;

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use core::time::Duration;

use crate::config::{
    Config, Persistence, DRAIN_INTERVAL, REFRESH_TICKS, STABLE_TICKS, TICK_INTERVAL,
};
use crate::dht::{Router, Store};
use crate::error::ApiError;
use crate::event::{Backpressure, Event, SocketOp, Transmit};
use crate::ids::{ConnId, NodeId, QueryId, RequestId, SocketId};
use crate::rng::Rng;
use crate::routing::RoutingTable;
use crate::rpc::{CongestionWindow, Health, HealthState, NatSampler, Tokens};
use crate::stats::Stats;
use crate::time::Timestamp;

pub use crate::connection::{
    ConnCloseReason, ConnError, ConnectError, ConnectOptions, CLOSED_LINGER, MAX_PENDING_OUTPUT,
    MAX_UNREAD_INPUT,
};
pub use conn_handle::{Conn, ConnInfo};
pub use queries::QuerySpec;
pub use rpc::RequestSpec;
pub use server::{AcceptPolicy, IncomingHandshake, ServerConfig};

use maintenance::{Boot, NetworkCheck};
use queries::QueryState;
use rpc::Requests;

/// Binding state of one of the two DHT sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SocketState {
    Unbound,
    Binding,
    Bound(SocketAddr),
    Closed,
}

/// One DHT node. See the crate docs for the run-loop contract.
#[derive(Debug)]
pub struct Node {
    config: Config,
    rng: Rng,
    default_key_pair: crate::dht::KeyPair,
    now: Timestamp,

    server: SocketState,
    client: SocketState,
    server_ports: Vec<u16>,
    server_port_try: usize,

    table: RoutingTable,
    nat: NatSampler,
    tokens: Tokens,
    congestion: CongestionWindow,
    health: Health,

    ephemeral: bool,
    firewalled: bool,
    adaptive: bool,
    bootstrapped: bool,
    closed: bool,

    tick: u64,
    refresh_ticks: i64,
    stable_ticks: i64,
    last_tick_at: Timestamp,
    next_tick_at: Timestamp,
    next_drain_at: Option<Timestamp>,
    last_host: Option<Ipv4Addr>,
    repinging: u32,
    checks: u32,
    bootstrap_samples: Vec<SocketAddrV4>,
    down_hints_this_tick: u32,

    requests: Requests,
    queries: BTreeMap<u64, QueryState>,
    next_query: u64,
    next_request: u64,
    delayed_pings: BTreeMap<(Timestamp, u64), Transmit>,
    delayed_seq: u64,

    boot: Boot,
    network_check: Option<NetworkCheck>,

    /// hyperdht storage, created when the node becomes persistent (JS `once('persistent')`).
    store: Option<Store>,
    /// Forward entries for relaying handshakes; every node relays.
    router: Router,

    servers: BTreeMap<u64, server::ServerState>,
    server_targets: std::collections::HashMap<[u8; 32], u64>,
    next_server: u64,
    /// Every connection, through all its phases, with their timers.
    cx: crate::connection::Connections,
    extra_sockets: BTreeMap<SocketId, sockets::ExtraSocket>,
    next_socket_index: u32,
    udx_ids: std::collections::BTreeSet<u32>,
    /// Random-NAT punches running now, and when the last one ended (`_randomPunches`,
    /// `_lastRandomPunch`).
    random_punches: u32,
    last_random_punch: Option<Timestamp>,

    /// Every connection's UDX stream.
    mux: crate::stream::UdxMux,
    /// The connection each stream belongs to (a client's from `connect` on).
    conn_by_stream: std::collections::HashMap<crate::stream::StreamId, ConnId>,
    /// Closing servers and the relays they still unannounce from.
    closing_servers: std::collections::HashMap<u64, usize>,
    /// Events of relay links and relay sessions, for `run_relays` (the application never
    /// sees them).
    relay_inbox: VecDeque<Event>,
    /// Acting as a blind relay: servers, sessions, pairings, links.
    relay_service: relay_server::RelayService,

    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    socket_ops: VecDeque<SocketOp>,
    stats: Stats,
}

/// dht-rpc `randomOffset(n)`: a value in `(n/2, n]`.
fn random_offset(rng: &mut Rng, n: u64) -> u64 {
    n - (rng.unit() * 0.5 * n as f64) as u64
}

impl Node {
    /// A node with `config`, seeded with 32 random bytes (the only randomness it will use),
    /// created at `now`. It asks the driver to bind its server socket first: drain
    /// [`Node::poll_socket_op`].
    pub fn new(config: Config, seed: [u8; 32], now: Timestamp) -> Node {
        // Derived apart from the rng stream, so a configured key pair changes nothing else.
        let default_key_pair = config.key_pair.clone().unwrap_or_else(|| {
            let mut input = b"hyperdht-rs default key pair".to_vec();
            input.extend_from_slice(&seed);
            crate::dht::KeyPair::from_seed(&crate::crypto::hash(&input))
        });
        let mut rng = Rng::from_seed(seed);
        let table = RoutingTable::new(NodeId(rng.bytes32()));
        let mut tokens_rng = rng.child();
        let tokens = match config.token_secrets {
            Some([prev, cur]) => Tokens::with_secrets(prev, cur),
            None => Tokens::new(&mut tokens_rng),
        };
        let tick = random_offset(&mut rng, 100);
        let refresh_ticks = random_offset(&mut rng, REFRESH_TICKS as u64) as i64;
        let tid = rng.next_u32() as u16;
        let mux_seed = rng.bytes32();
        let mut nat = NatSampler::new();
        // A public address with port 0 is completed with the bound port (see
        // `handle_socket_bound`).
        if let Some(addr) = config.public_address.filter(|a| a.port() != 0) {
            nat.add(*addr.ip(), addr.port());
        }
        let adaptive = config.persistence == Persistence::Adaptive;
        let server_ports = config.server_ports();
        let mut node = Node {
            rng,
            now,
            server: SocketState::Unbound,
            client: SocketState::Unbound,
            server_ports,
            server_port_try: 0,
            table,
            nat,
            tokens,
            congestion: CongestionWindow::new(config.max_window),
            health: Health::default(),
            ephemeral: true,
            firewalled: config.firewalled,
            adaptive,
            bootstrapped: false,
            closed: false,
            tick,
            refresh_ticks,
            stable_ticks: if adaptive { STABLE_TICKS } else { 0 },
            last_tick_at: now,
            next_tick_at: now + TICK_INTERVAL,
            next_drain_at: None,
            last_host: None,
            repinging: 0,
            checks: 0,
            bootstrap_samples: Vec::new(),
            down_hints_this_tick: 0,
            requests: Requests::new(tid),
            queries: BTreeMap::new(),
            next_query: 0,
            next_request: 0,
            delayed_pings: BTreeMap::new(),
            delayed_seq: 0,
            boot: Boot::Binding,
            network_check: None,
            store: None,
            servers: BTreeMap::new(),
            server_targets: std::collections::HashMap::new(),
            next_server: 0,
            cx: crate::connection::Connections::default(),
            extra_sockets: BTreeMap::new(),
            next_socket_index: 2,
            udx_ids: std::collections::BTreeSet::new(),
            random_punches: 0,
            last_random_punch: None,
            mux: crate::stream::UdxMux::new(crate::stream::Config::default(), mux_seed),
            conn_by_stream: std::collections::HashMap::new(),
            closing_servers: std::collections::HashMap::new(),
            relay_inbox: VecDeque::new(),
            relay_service: relay_server::RelayService::default(),
            router: Router::new(
                now,
                config.store_limits.max_records,
                config.store_limits.records_max_age,
            ),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            socket_ops: VecDeque::new(),
            stats: Stats::default(),
            config,
            default_key_pair,
        };
        node.bind_next_server_port();
        node
    }

    fn set_now(&mut self, now: Timestamp) {
        if now > self.now {
            self.now = now;
        }
    }

    // ----- sockets -------------------------------------------------------------------------

    fn bind_next_server_port(&mut self) {
        let Some(&port) = self.server_ports.get(self.server_port_try) else {
            self.server = SocketState::Closed;
            tracing::error!("could not bind the server socket on any allowed port");
            self.events.push_back(Event::BindFailed {
                socket: SocketId::SERVER,
            });
            return;
        };
        self.server_port_try += 1;
        self.server = SocketState::Binding;
        self.socket_ops.push_back(SocketOp::Bind {
            socket: SocketId::SERVER,
            addr: SocketAddrV4::new(self.config.host, port),
        });
    }

    /// The driver bound `socket` to `local`.
    pub fn handle_socket_bound(&mut self, now: Timestamp, socket: SocketId, local: SocketAddr) {
        self.set_now(now);
        match socket {
            SocketId::SERVER if self.server == SocketState::Binding => {
                self.server = SocketState::Bound(local);
                if let Some(public) = self.config.public_address.filter(|a| a.port() == 0) {
                    self.nat.add(*public.ip(), local.port());
                }
                self.client = SocketState::Binding;
                self.socket_ops.push_back(SocketOp::Bind {
                    socket: SocketId::CLIENT,
                    addr: SocketAddrV4::new(self.config.host, 0),
                });
            }
            SocketId::CLIENT if self.client == SocketState::Binding => {
                self.client = SocketState::Bound(local);
                if let SocketState::Bound(server) = self.server {
                    tracing::debug!(%server, client = %local, "listening");
                    self.events.push_back(Event::Listening {
                        server,
                        client: local,
                    });
                }
                self.next_drain_at = Some(self.now + DRAIN_INTERVAL);
                self.start_bootstrap();
            }
            _ if self.extra_sockets.contains_key(&socket) => {
                self.on_extra_socket(now, socket, true)
            }
            _ => tracing::warn!(?socket, "unexpected socket bound report ignored"),
        }
    }

    /// The driver could not bind `socket`.
    pub fn handle_socket_failed(&mut self, now: Timestamp, socket: SocketId) {
        self.set_now(now);
        match socket {
            SocketId::SERVER if self.server == SocketState::Binding => self.bind_next_server_port(),
            SocketId::CLIENT if self.client == SocketState::Binding => {
                self.client = SocketState::Closed;
                tracing::error!("could not bind the client socket");
                self.events.push_back(Event::BindFailed { socket });
            }
            _ if self.extra_sockets.contains_key(&socket) => {
                self.on_extra_socket(now, socket, false)
            }
            _ => tracing::warn!(?socket, "unexpected socket failure report ignored"),
        }
    }

    fn is_listening(&self) -> bool {
        matches!(self.server, SocketState::Bound(_)) && matches!(self.client, SocketState::Bound(_))
    }

    /// The socket requests leave from: the client socket while firewalled, else the server's.
    fn request_socket(&self) -> SocketId {
        if self.firewalled {
            SocketId::CLIENT
        } else {
            SocketId::SERVER
        }
    }

    /// Local address of `socket`, once bound.
    pub fn local_addr(&self, socket: SocketId) -> Option<SocketAddr> {
        match (socket, self.server, self.client) {
            (SocketId::SERVER, SocketState::Bound(a), _) => Some(a),
            (SocketId::CLIENT, _, SocketState::Bound(a)) => Some(a),
            _ => None,
        }
    }

    fn server_port(&self) -> u16 {
        self.local_addr(SocketId::SERVER).map_or(0, |a| a.port())
    }

    // ----- outputs -------------------------------------------------------------------------

    /// Next socket to bind or close.
    ///
    /// A close waits until the datagrams queued on its socket before it have been taken
    /// ([`Node::poll_transmit`]): drivers apply socket ops before transmits, and a close must
    /// not swallow what was sent just before it (a server puncher's echo of a fast-open probe,
    /// then a re-roll of that socket).
    ///
    /// The streams' ready packets count too (a shutdown's DESTROYs, made lazily by the UDX
    /// mux): before a close they move into the queue, so the peers hear that the connections
    /// ended instead of waiting out a stream timeout.
    pub fn poll_socket_op(&mut self) -> Option<SocketOp> {
        if let Some(SocketOp::Close { socket }) = self.socket_ops.front() {
            let socket = *socket;
            while let Some(t) = self.mux.poll_transmit(self.now) {
                self.stats.datagrams_sent += 1;
                self.transmits.push_back(t);
            }
            if self.transmits.iter().any(|t| t.socket == socket) {
                return None;
            }
        }
        self.socket_ops.pop_front()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        let t = self.mux.poll_transmit(self.now)?;
        self.stats.datagrams_sent += 1;
        Some(t)
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Which output queue is full, if one is: while `Some`, [`Node::handle_datagram`] refuses
    /// datagrams (counted in [`Dropped::backpressure`](crate::Dropped)) until the driver
    /// drains the queue named. Each queue holds up to [`Config::max_queued_output`] entries
    /// (one input may overshoot it by what that input produced).
    pub fn backpressure(&self) -> Option<Backpressure> {
        let cap = self.config.max_queued_output;
        if self.transmits.len() >= cap {
            Some(Backpressure::Transmits)
        } else if self.events.len() >= cap {
            Some(Backpressure::Events)
        } else if self.socket_ops.len() >= cap {
            Some(Backpressure::SocketOps)
        } else {
            None
        }
    }

    /// When [`Node::handle_timeout`] must be called next: the earliest timer deadline, `None`
    /// once closed. Queued output does not count: the run-loop contract (crate docs) is to
    /// drain `poll_socket_op`, `poll_transmit` and `poll_event` until `None` after every
    /// `handle_*` call, so a driver that waits for a writable socket with transmits still
    /// queued sleeps until the socket or this deadline, whichever comes first.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.closed {
            return None;
        }
        let mut t = self.next_tick_at;
        if let Some(d) = self.next_drain_at {
            t = t.min(d);
        }
        if let Some(r) = self.requests.poll_timeout() {
            t = t.min(r);
        }
        if let Some((&(d, _), _)) = self.delayed_pings.first_key_value() {
            t = t.min(d);
        }
        t = t.min(self.router.poll_timeout());
        for d in [
            self.mux.poll_timeout(),
            self.cx.poll_timeout(),
            self.servers
                .values()
                .filter_map(server::ServerState::poll_timeout)
                .min(),
        ]
        .into_iter()
        .flatten()
        {
            t = t.min(d);
        }
        if let Some(store) = &self.store {
            t = t.min(store.poll_timeout());
        }
        Some(t)
    }

    /// Runs every timer due at `now`. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.set_now(now);
        if self.closed {
            return;
        }
        while let Some(entry) = self.delayed_pings.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let t = entry.remove();
            self.push_transmit(t);
        }
        if let Some(d) = self.next_drain_at {
            if d <= self.now {
                self.next_drain_at = Some(later_slot(d, self.now, DRAIN_INTERVAL));
                self.on_drain();
            }
        }
        if self.next_tick_at <= self.now {
            self.next_tick_at = later_slot(self.next_tick_at, self.now, TICK_INTERVAL);
            self.on_tick();
        }
        self.fire_request_timers();
        self.router.handle_timeout(self.now);
        if let Some(store) = &mut self.store {
            store.handle_timeout(self.now);
        }
        self.announcer_timers();
        for conn in self.cx.take_due(self.now) {
            self.connection_timers(conn);
        }
        self.mux.handle_timeout(self.now);
        self.process_stream_events();
        self.run_relays();
        self.cx.refile();
    }

    /// Runs the due timers of one connection, part by part (each checks its own deadline,
    /// so a call for an early entry does nothing).
    fn connection_timers(&mut self, conn: ConnId) {
        self.puncher_timers(conn);
        self.handshake_timers(conn);
        self.client_timers(conn);
        self.relay_timers(conn);
        self.conn_timers(conn);
    }

    /// A fresh UDX stream id, unique on this node.
    fn alloc_udx_id(&mut self) -> u32 {
        loop {
            let id = self.rng.next_u32();
            if id != 0 && self.udx_ids.insert(id) {
                if self.udx_ids.len() > 65536 {
                    self.udx_ids.pop_first();
                }
                return id;
            }
        }
    }

    /// Whether a random-NAT punch may start now: one at a time, 20 s apart
    /// (`_randomPunchLimit`, `randomPunchInterval`).
    fn random_punch_allowed(&self) -> bool {
        self.random_punches < 1
            && self
                .last_random_punch
                .is_none_or(|t| self.now - t >= Duration::from_millis(20_000))
    }

    fn push_transmit(&mut self, t: Transmit) {
        self.stats.datagrams_sent += 1;
        self.transmits.push_back(t);
    }

    fn push_event(&mut self, e: Event) {
        if let Some(e) = self.take_relay_service_event(e) {
            self.events.push_back(e);
        }
    }

    // ----- commands ------------------------------------------------------------------------

    fn next_query_id(&mut self) -> u64 {
        self.next_query += 1;
        self.next_query
    }

    fn next_request_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    /// Starts a FIND_NODE walk towards `target`; replies arrive as [`Event::QueryReply`] and the
    /// k closest nodes as [`Event::QueryFinished`].
    pub fn find_node(&mut self, now: Timestamp, target: NodeId) -> QueryId {
        self.query(now, QuerySpec::find_node(target.0))
    }

    /// Starts a walk with any command (JS `dht.query`).
    pub fn query(&mut self, now: Timestamp, spec: QuerySpec) -> QueryId {
        self.set_now(now);
        self.refresh_ticks = REFRESH_TICKS;
        QueryId(self.start_query(spec, queries::QueryKind::User))
    }

    /// Sends one PING to `addr` (up to 4 transmissions); the outcome is an
    /// [`Event::RequestDone`].
    pub fn ping(&mut self, now: Timestamp, addr: SocketAddrV4) -> RequestId {
        self.request(now, addr, RequestSpec::internal(crate::commands::PING))
    }

    /// Sends a DELAYED_PING asking `addr` to answer after `delay`.
    pub fn delayed_ping(
        &mut self,
        now: Timestamp,
        addr: SocketAddrV4,
        delay: Duration,
    ) -> Result<RequestId, ApiError> {
        if delay > self.config.max_ping_delay {
            return Err(ApiError::DelayTooLong);
        }
        let ms = delay.as_millis() as u32;
        let mut spec = RequestSpec::internal(crate::commands::DELAYED_PING);
        spec.value = Some(ms.to_le_bytes().to_vec());
        spec.timeout = Some(delay + Duration::from_millis(1000));
        Ok(self.request(now, addr, spec))
    }

    /// Sends one request (JS `dht.request`, or an internal command); the outcome is an
    /// [`Event::RequestDone`].
    pub fn request(&mut self, now: Timestamp, addr: SocketAddrV4, spec: RequestSpec) -> RequestId {
        self.set_now(now);
        let id = self.next_request_id();
        if self.closed || !self.is_listening() {
            let err = if self.closed {
                crate::error::RequestError::Destroyed
            } else {
                crate::error::RequestError::NotListening
            };
            self.push_event(Event::RequestDone {
                id,
                result: Err(err),
            });
            return id;
        }
        self.send_request(addr, None, spec, rpc::Owner::User(id));
        id
    }

    /// Adds a node to the routing table by address (JS `dht.addNode`).
    pub fn add_node(&mut self, now: Timestamp, addr: SocketAddrV4) {
        self.set_now(now);
        self.add_node_entry(NodeId::from_addr(&addr), addr, None);
    }

    /// Starts a background refresh walk (JS `dht.refresh`).
    pub fn refresh(&mut self, now: Timestamp) {
        self.set_now(now);
        self.refresh_table();
    }

    /// Cancels everything, reports failed requests and queries, and closes the sockets.
    pub fn shutdown(&mut self, now: Timestamp) {
        self.set_now(now);
        if self.closed {
            return;
        }
        self.closed = true;
        // Open connections close, pending connects fail, before the requests go.
        for c in self.cx.ids() {
            self.close_conn_on_shutdown(c);
        }
        for c in self.cx.ids() {
            self.fail_client(c, ConnectError::Destroyed);
        }
        self.destroy_all_requests();
        let ids: Vec<u64> = self.queries.keys().copied().collect();
        for q in ids {
            self.fail_query(q, crate::error::QueryError::Destroyed);
        }
        self.delayed_pings.clear();
        // Puncher and connection sockets go too.
        let extra: Vec<SocketId> = self.extra_sockets.keys().copied().collect();
        for socket in extra {
            self.extra_sockets.remove(&socket);
            self.socket_ops.push_back(SocketOp::Close { socket });
        }
        for (socket, state) in [
            (SocketId::SERVER, &mut self.server),
            (SocketId::CLIENT, &mut self.client),
        ] {
            if matches!(*state, SocketState::Bound(_) | SocketState::Binding) {
                self.socket_ops.push_back(SocketOp::Close { socket });
            }
            *state = SocketState::Closed;
        }
        self.push_event(Event::NodeClosed);
    }

    // ----- accessors -----------------------------------------------------------------------

    /// Our node id as others see it: `None` while ephemeral (JS `dht.id`).
    pub fn id(&self) -> Option<NodeId> {
        (!self.ephemeral).then_some(*self.table.id())
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The key pair connects use when they name none ([`Config::key_pair`], or one derived
    /// from the seed; JS `dht.defaultKeyPair`).
    pub fn default_key_pair(&self) -> &crate::dht::KeyPair {
        &self.default_key_pair
    }

    /// Whether we are ephemeral (not in others' tables).
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// Whether we believe we are behind a firewall.
    pub fn is_firewalled(&self) -> bool {
        self.firewalled
    }

    /// Whether bootstrap has finished.
    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    /// Our public host as the NAT sampler sees it, once sampled (JS `dht.host`).
    pub fn nat_host(&self) -> Option<Ipv4Addr> {
        self.nat.host()
    }

    /// Our public port as the NAT sampler sees it: 0 while randomised or unknown (JS
    /// `dht.port`).
    pub fn nat_port(&self) -> u16 {
        self.nat.port()
    }

    /// Our reachable address, if we are reachable on the server port (JS `remoteAddress()`).
    pub fn remote_address(&self) -> Option<SocketAddrV4> {
        let host = self.nat.host()?;
        let port = self.nat.port();
        if port == 0 || self.firewalled || port != self.server_port() {
            return None;
        }
        Some(SocketAddrV4::new(host, port))
    }

    /// Network health.
    pub fn health(&self) -> HealthState {
        self.health.state()
    }

    /// Counters, including dropped input by reason.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.requests_active = self.requests.len() as u64;
        s.queries_active = self.queries.len() as u64;
        s
    }

    /// Announce records stored here (0 while not persistent).
    pub fn stored_records(&self) -> usize {
        self.store.as_ref().map_or(0, Store::records_len)
    }

    /// Mutable and immutable values stored here.
    pub fn stored_values(&self) -> usize {
        self.store.as_ref().map_or(0, Store::values_len)
    }

    /// Forward entries (announced servers we relay for).
    pub fn forwards(&self) -> usize {
        self.router.len()
    }

    /// The current dht-rpc tick counter.
    pub fn tick(&self) -> u64 {
        self.tick
    }
}

/// The first `prev + k * every` strictly after `now` (periodic timers skip missed slots, as JS
/// intervals do).
fn later_slot(prev: Timestamp, now: Timestamp, every: Duration) -> Timestamp {
    let next = prev + every;
    if next > now {
        next
    } else {
        now + every
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each queue bounds on its own; a full one refuses datagrams (counted) until drained.
    #[test]
    fn each_full_output_queue_refuses_datagrams_until_drained() {
        let mut config = Config::bootstrapper("127.0.0.9:49737".parse().unwrap());
        config.max_queued_output = 4;
        let now = Timestamp::from_millis(1);
        let mut node = Node::new(config, [1; 32], now);
        while let Some(op) = node.poll_socket_op() {
            if let SocketOp::Bind { socket, addr } = op {
                let port = if addr.port() == 0 { 50000 } else { addr.port() };
                let bound = SocketAddr::V4(SocketAddrV4::new(*addr.ip(), port));
                node.handle_socket_bound(now, socket, bound);
            }
        }
        node.events.clear();
        assert_eq!(node.backpressure(), None);
        let from: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        type Fill = fn(&mut Node);
        let fill: [(Backpressure, Fill); 2] = [
            (Backpressure::Events, |n| {
                n.events.push_back(Event::NodeClosed)
            }),
            (Backpressure::SocketOps, |n| {
                n.socket_ops.push_back(SocketOp::Close {
                    socket: SocketId::CLIENT,
                })
            }),
        ];
        for (i, (queue, push)) in fill.into_iter().enumerate() {
            for _ in 0..4 {
                push(&mut node);
            }
            assert_eq!(node.backpressure(), Some(queue));
            node.handle_datagram(now, SocketId::SERVER, from, &[0x13, 0, 0]);
            assert_eq!(node.stats().dropped.backpressure, i as u64 + 1);
            assert_eq!(
                node.stats().dropped.malformed,
                0,
                "refused before it was read"
            );
            node.events.clear();
            node.socket_ops.clear();
            assert_eq!(node.backpressure(), None);
        }
        // Taken again once drained (and read: this one is junk).
        node.handle_datagram(now, SocketId::SERVER, from, &[0x13, 0, 0]);
        assert_eq!(node.stats().dropped.backpressure, 2);
        assert_eq!(node.stats().dropped.malformed, 1);
    }

    /// A connect before the node's socket is bound fails at once with a reason that says so,
    /// and one after shutdown as cancelled.
    #[test]
    fn a_connect_before_the_socket_is_bound_says_so() {
        let config = Config::bootstrapper("127.0.0.9:49737".parse().unwrap());
        let now = Timestamp::from_millis(1);
        let mut node = Node::new(config, [1; 32], now);
        let key = crate::dht::KeyPair::from_seed(&[2; 32]);
        let conn = node.connect(now, &[3; 32], &key);
        let failed = core::iter::from_fn(|| node.poll_event()).find_map(|e| match e {
            Event::ConnectFailed { conn: c, reason } if c == conn => Some(reason),
            _ => None,
        });
        assert_eq!(failed, Some(ConnectError::NotBound));
        node.shutdown(now);
        let conn = node.connect(now, &[3; 32], &key);
        let failed = core::iter::from_fn(|| node.poll_event()).find_map(|e| match e {
            Event::ConnectFailed { conn: c, reason } if c == conn => Some(reason),
            _ => None,
        });
        assert_eq!(failed, Some(ConnectError::Destroyed));
    }
}
