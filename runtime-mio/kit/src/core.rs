//! [`Core`]: what a driver runs that holds no socket: the [`Node`] and its clock, the calls
//! waiting for it, its swarms, the datagrams waiting for the kernel, and the flush loop that
//! drains the node in the order of `hyperdht-proto`'s run-loop contract.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use hyperdht_proto::swarm::SwarmConfig;
use hyperdht_proto::{
    ApiError, Config, ConnCloseReason, ConnId, ConnectOptions, Event, KeyPair, Node, QueryId,
    Reply, RequestSpec, ServerConfig, ServerId, SocketId, SocketOp, Timestamp,
};

use crate::batch::{RecvBatch, SLOT};
use crate::calls::{Calls, Glue, Listened, RecordItem};
use crate::error::Error;
use crate::handles::ConnMeta;
use crate::info::{NodeInfo, QueryOutcome};
use crate::io::{DatagramIo, Outbox};
use crate::swarms::{SwarmConnection, Swarms};
use crate::udp::{self, UdpIo};

/// Datagrams read from one socket per round before other work gets a turn.
pub const RECV_BUDGET: usize = 256;

/// Why [`Core::receive`] stopped reading a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStop {
    /// Nothing more is queued.
    WouldBlock,
    /// The budget is spent; more may be queued.
    Budget,
}

/// What happened to a connection, for the driver's handles (the events [`Core::flush`] does
/// not answer itself).
#[derive(Debug)]
pub enum ConnEvent {
    /// The connection is open: make a handle, then [`Core::deliver`] it.
    Opened(ConnMeta),
    /// It has bytes to read, or its peer finished (`Event::Readable`, `Event::Finished`).
    Readable(ConnId),
    /// It takes writes again.
    Writable(ConnId),
    /// It closed.
    Closed(ConnId, ConnCloseReason),
}

/// The node and everything around it that holds no socket.
pub struct Core<G: Glue> {
    /// The sans-IO node.
    pub node: Node,
    /// The calls waiting for the node.
    pub calls: Calls<G>,
    /// The node's swarms.
    pub swarms: Swarms<G>,
    start: Instant,
    outbox: Outbox,
    rx: RecvBatch,
    shutting_down: bool,
}

/// Fills in what a driver knows and the config may leave unset: the interface of the default
/// route ([`Config::local_addresses`]) and the wall clock ([`Config::unix_ms_at_zero`]).
pub fn complete_config(config: &mut Config) {
    if config.local_addresses.is_empty() {
        config.local_addresses = udp::primary_ipv4().into_iter().collect();
    }
    if config.unix_ms_at_zero.is_none() {
        config.unix_ms_at_zero = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
    }
}

/// The earlier of two deadlines.
fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<G: Glue> Core<G> {
    /// A node with `config` (completed with [`complete_config`]) and `seed`; its clock starts
    /// now.
    pub fn new(mut config: Config, seed: [u8; 32]) -> Core<G> {
        complete_config(&mut config);
        Core {
            node: Node::new(config, seed, Timestamp::ZERO),
            calls: Calls::default(),
            swarms: Swarms::default(),
            start: Instant::now(),
            outbox: Outbox::default(),
            rx: RecvBatch::new(),
            shutting_down: false,
        }
    }

    /// Monotonic time since the node was created.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_duration(self.start.elapsed())
    }

    /// The instant of node time `t`.
    pub fn instant(&self, t: Timestamp) -> Instant {
        self.start + Duration::from_nanos(t.as_nanos())
    }

    /// The datagrams waiting for the kernel.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// Reads datagrams from socket `id` into the node, a batch per system call, until none is
    /// queued or `budget` (counted down) is spent. A datagram larger than [`SLOT`] is only
    /// counted; receive errors (ICMP errors of earlier sends, on Linux) are skipped, each
    /// costing one from the budget so a repeating one cannot hold the loop.
    pub fn receive<S: UdpIo + ?Sized>(
        &mut self,
        now: Timestamp,
        id: SocketId,
        socket: &S,
        budget: &mut usize,
    ) -> ReadStop {
        while *budget > 0 {
            match self.rx.recv(socket) {
                Ok(got) => {
                    for d in self.rx.iter() {
                        if d.truncated {
                            tracing::debug!(from = %d.from, "datagram larger than {SLOT} bytes dropped");
                            self.node.handle_oversized_datagram(now);
                        } else {
                            self.node.handle_datagram(now, id, d.from, d.data);
                        }
                    }
                    *budget = budget.saturating_sub(got.max(1));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadStop::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::trace!(error = %e, "recv error ignored");
                    *budget -= 1;
                }
            }
        }
        ReadStop::Budget
    }

    /// Runs the node's and the swarms' timers.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.node.handle_timeout(now);
        self.swarms.handle_timeout(now, &mut self.node);
    }

    /// When to call [`Core::handle_timeout`] next (read after [`Core::flush`]): the node's
    /// and the swarms' timers. Output still queued while the outbox waits for a writable
    /// socket does not count: the writable socket wakes the driver.
    pub fn deadline(&self) -> Option<Timestamp> {
        earliest(self.node.poll_timeout(), self.swarms.poll_timeout())
    }

    /// Drains the node until it has nothing more: socket ops (bound and closed through `io`),
    /// then transmits (until the kernel would block), then events (the swarms' and the calls'
    /// first; what is left about connections goes to `on_connection`), then the swarms'
    /// events.
    pub fn flush<I: DatagramIo + ?Sized>(
        &mut self,
        io: &mut I,
        mut on_connection: impl FnMut(&mut Self, ConnEvent),
    ) {
        loop {
            let mut progressed = false;
            while let Some(op) = self.node.poll_socket_op() {
                progressed = true;
                self.apply_socket_op(io, op);
            }
            progressed |= self.outbox.send(&mut self.node, io);
            while let Some(ev) = self.node.poll_event() {
                progressed = true;
                if let Some(ev) = self.handle_event(ev) {
                    on_connection(self, ev);
                }
            }
            progressed |= self.swarms.drain();
            if !progressed {
                break;
            }
        }
    }

    /// Binds or closes a socket for the node and tells it how that went.
    fn apply_socket_op<I: DatagramIo + ?Sized>(&mut self, io: &mut I, op: SocketOp) {
        let now = self.now();
        match op {
            SocketOp::Bind { socket, addr } => match io.bind(socket, addr) {
                Ok(local) => self.node.handle_socket_bound(now, socket, local),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "bind failed");
                    self.node.handle_socket_failed(now, socket);
                }
            },
            SocketOp::Close { socket } => {
                io.close(socket);
                self.outbox.forget_socket(socket);
            }
            other => tracing::warn!(?other, "unsupported socket op ignored"),
        }
    }

    /// Hands one event to the swarms, then to the calls; what is left concerns connections.
    fn handle_event(&mut self, ev: Event) -> Option<ConnEvent> {
        let now = self.now();
        let ev = self.swarms.handle_event(now, &mut self.node, ev)?;
        match self.calls.handle_event(now, &mut self.node, ev)? {
            Event::Connected {
                conn,
                socket,
                remote,
                remote_public_key,
                is_initiator,
                ..
            } => {
                let local = self.node.local_addr(socket);
                Some(ConnEvent::Opened(ConnMeta {
                    id: conn,
                    remote_public_key,
                    local_addr: local,
                    remote_addr: remote,
                    is_initiator,
                }))
            }
            Event::Readable { conn } | Event::Finished { conn } => Some(ConnEvent::Readable(conn)),
            Event::Writable { conn } => Some(ConnEvent::Writable(conn)),
            Event::ConnClosed { conn, reason } => {
                self.swarms.forget(conn);
                Some(ConnEvent::Closed(conn, reason))
            }
            _ => None,
        }
    }

    /// Hands an opened connection to whoever waits for it: a connect call, a server, or the
    /// swarm that owns it (dropped if nobody).
    pub fn deliver(&mut self, conn: ConnId, c: G::Connection) {
        if let Some(c) = self.calls.deliver(conn, c) {
            self.swarms.stash(conn, c);
        }
    }

    /// A snapshot of the node.
    pub fn info(&self) -> NodeInfo {
        NodeInfo::of(&self.node)
    }

    /// Shuts the node down (once; later calls do nothing).
    pub fn shutdown(&mut self, now: Timestamp) {
        if !self.shutting_down {
            self.shutting_down = true;
            self.node.shutdown(now);
        }
    }

    /// Whether [`Core::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Sends one request; `tx` hears its reply.
    pub fn request(
        &mut self,
        now: Timestamp,
        to: SocketAddrV4,
        spec: RequestSpec,
        tx: G::Tx<Result<Reply, Error>>,
    ) {
        let id = self.node.request(now, to, spec);
        self.calls.add_request(id, tx);
    }

    /// Starts a query with `start`; `tx` hears its outcome.
    pub fn query(
        &mut self,
        now: Timestamp,
        start: impl FnOnce(&mut Node, Timestamp) -> QueryId,
        tx: G::Tx<Result<QueryOutcome, Error>>,
    ) {
        let id = start(&mut self.node, now);
        self.calls.add_query(id, tx);
    }

    /// Starts a query with `start`; its records go down `tx` as they are found.
    pub fn record_stream(
        &mut self,
        now: Timestamp,
        start: impl FnOnce(&mut Node, Timestamp) -> QueryId,
        tx: G::Tx<RecordItem>,
    ) {
        let id = start(&mut self.node, now);
        self.calls.add_record_stream(id, tx);
    }

    /// Starts a server for `key` (`None`: a blind relay); `tx` hears after its first announce,
    /// its connections go to `server`. A refusal is sent on `tx` and returned.
    pub fn listen(
        &mut self,
        now: Timestamp,
        key: &KeyPair,
        config: Option<ServerConfig>,
        tx: G::Tx<Result<Listened, Error>>,
        server: G::ServerTx,
    ) -> Result<ServerId, ApiError> {
        let started = match config {
            Some(config) => self.node.listen(now, key, config),
            None => self.node.serve_blind_relay(now, key),
        };
        match started {
            Ok(id) => {
                self.calls.add_listen(id, tx, server);
                Ok(id)
            }
            Err(e) => {
                G::send(&tx, Err(Error::Api(e)));
                Err(e)
            }
        }
    }

    /// Connects to `remote_public_key`; `tx` hears the connection or why it failed.
    pub fn connect(
        &mut self,
        now: Timestamp,
        remote_public_key: &[u8; 32],
        options: ConnectOptions,
        tx: G::Tx<Result<G::Connection, Error>>,
    ) -> ConnId {
        let id = self.node.connect_with(now, remote_public_key, options);
        self.calls.add_connect(id, tx);
        id
    }

    /// Gives up a connect call that is still waiting.
    pub fn cancel_connect(&mut self, now: Timestamp, conn: ConnId) {
        if self.calls.cancel_connect(conn) {
            self.node.cancel_connect(now, conn);
        }
    }

    /// Closes server `id`; `waiter` hears when it is unannounced. Returns where its
    /// connections went, for the caller to drop where it likes.
    pub fn close_server(
        &mut self,
        now: Timestamp,
        id: ServerId,
        waiter: Option<G::Tx<()>>,
    ) -> Option<G::ServerTx> {
        let server = self.calls.close_server(id, waiter);
        self.node.close_server(now, id);
        server
    }

    /// A new swarm whose kept connections go to `connections`; its id.
    pub fn new_swarm(
        &mut self,
        config: SwarmConfig,
        seed: [u8; 32],
        connections: G::Tx<SwarmConnection<G::Connection>>,
    ) -> u64 {
        self.swarms.add(config, seed, connections)
    }

    /// The server socket's address once both DHT sockets are bound, after the first
    /// [`Core::flush`]; [`Error::BindFailed`] if one could not be bound.
    pub fn bound(&self) -> Result<SocketAddr, Error> {
        match (self.calls.listening(), self.calls.bind_failed()) {
            (Some(addr), false) => Ok(addr),
            _ => Err(Error::BindFailed),
        }
    }

    /// The driver stops: every waiting call and swarm, for the caller to drop where it likes
    /// (dropping their senders fails the calls with [`Error::Closed`]). The outbox is emptied.
    pub fn take_waiters(&mut self) -> (Calls<G>, Swarms<G>) {
        self.outbox.clear();
        (
            std::mem::take(&mut self.calls),
            std::mem::take(&mut self.swarms),
        )
    }
}
