//! The event loop thread and the blocking handle.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hyperdht_proto::config::SOCKET_RECV_BUFFER;
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::event::Record;
use hyperdht_proto::wire::hyperdht::MutableRecord;
use hyperdht_proto::{
    ApiError, Config, ConnCloseReason, ConnError, ConnId, ConnectError, ConnectOptions, Event,
    Node, NodeId, QueryError, QueryId, QuerySpec, Reply, RequestError, RequestId, RequestSpec,
    ServerConfig, ServerId, SocketId, SocketOp, Stats, Timestamp, Transmit,
};
use mio::net::UdpSocket;

use crate::batch::{self, RecvBatch};
use crate::conn::{
    read_channel, Chunk, ConnReader, ConnWriter, Connection, Outgoing, WriteTicket, CHUNK,
};
use crate::server::{Server, ServerEvent};
use crate::swarm::{new_slot, Swarm, SwarmCall, SwarmConnection, SwarmSlot};
use hyperdht_proto::swarm::SwarmConfig;
use mio::{Events, Interest, Poll, Token, Waker};

/// Token of the command waker; socket tokens are their `SocketId` index.
const WAKER: Token = Token(usize::MAX);
/// Datagrams read from one socket per wake-up before other work gets a turn.
const RECV_BATCH: usize = 256;

/// Why a handle call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed.
    Io(io::Error),
    /// The node could not bind its sockets.
    BindFailed,
    /// A request got no reply.
    Request(RequestError),
    /// A query failed.
    Query(QueryError),
    /// The node has shut down.
    Closed,
    /// A connection attempt failed.
    Connect(ConnectError),
    /// The node refused the call.
    Api(ApiError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::BindFailed => f.write_str("could not bind the DHT sockets"),
            Error::Request(e) => write!(f, "request failed: {e}"),
            Error::Query(e) => write!(f, "query failed: {e}"),
            Error::Closed => f.write_str("node is shut down"),
            Error::Connect(e) => write!(f, "connect failed: {e}"),
            Error::Api(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// A snapshot of the node's state.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Our id as others see it (`None` while ephemeral).
    pub id: Option<NodeId>,
    /// The routing table's centre.
    pub table_id: NodeId,
    /// Whether the node is ephemeral.
    pub ephemeral: bool,
    /// Whether the node believes it is firewalled.
    pub firewalled: bool,
    /// Whether bootstrap finished.
    pub bootstrapped: bool,
    /// The server socket's local address.
    pub server_addr: Option<SocketAddr>,
    /// The client socket's local address.
    pub client_addr: Option<SocketAddr>,
    /// The routing table's nodes.
    pub table: Vec<(NodeId, SocketAddrV4)>,
    /// Counters.
    pub stats: Stats,
    /// Connections the node holds (opening, open, or closed with unread bytes).
    pub connections: usize,
}

/// The result of a query: every reply without error, the records found, the commit replies,
/// and the closest nodes.
#[derive(Clone, Debug, Default)]
pub struct QueryOutcome {
    /// Replies in arrival order.
    pub replies: Vec<Reply>,
    /// Valid records found (record queries), with the node that stored each.
    pub records: Vec<(SocketAddrV4, Record)>,
    /// Replies to commit requests (announce, unannounce, puts).
    pub commits: Vec<Reply>,
    /// The k closest replies, closest first.
    pub closest: Vec<Reply>,
}

/// Starts a query on the node (run on the driver thread).
type StartQuery = Box<dyn FnOnce(&mut Node, Timestamp) -> QueryId + Send>;

pub(crate) enum Command {
    Request(SocketAddrV4, RequestSpec, Sender<Result<Reply, Error>>),
    Query(StartQuery, Sender<Result<QueryOutcome, Error>>),
    WaitBootstrapped(Sender<Result<(), Error>>),
    Info(Sender<NodeInfo>),
    Subscribe(Sender<Event>),
    /// A server (`None`: a blind relay, see [`MioNode::serve_blind_relay`]).
    Listen(
        KeyPair,
        Option<ServerConfig>,
        Sender<Result<Listening, Error>>,
    ),
    Connect([u8; 32], ConnectOptions, Sender<Result<Connection, Error>>),
    /// A reader took a chunk: forward more if the connection has some.
    ReadMore(ConnId),
    /// Close a server; the sender (if any) hears when it is unannounced.
    CloseServer(ServerId, Option<Sender<()>>),
    /// Bytes (or one message) for a connection; the ticket gives them back to the writer's
    /// window.
    Write(ConnId, Outgoing, WriteTicket),
    Finish(ConnId),
    Reset(ConnId),
    /// A new swarm on the node.
    NewSwarm(SwarmConfig, [u8; 32], Sender<NewSwarm>),
    /// A call on a swarm (see `Swarm::call`).
    Swarm(u64, SwarmCall),
    /// Forget a destroyed swarm.
    SwarmDrop(u64),
    Shutdown,
}

/// A new swarm's id and the channel of its connections.
pub(crate) type NewSwarm = (u64, Receiver<SwarmConnection>);

/// A handle to a node running on its own thread. The node stops when [`MioNode::shutdown`] is
/// called or the handle is dropped. The handle is `Sync`: share it by reference across threads.
pub struct MioNode {
    inner: Arc<HandleInner>,
    /// The loop's thread until it is joined (behind a lock: `shutdown` takes `&self`).
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    server_addr: SocketAddr,
}

pub(crate) struct HandleInner {
    cmds: Sender<Command>,
    waker: Waker,
}

impl fmt::Debug for HandleInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandleInner")
    }
}

impl HandleInner {
    pub(crate) fn send(&self, c: Command) -> Result<(), Error> {
        self.cmds.send(c).map_err(|_| Error::Closed)?;
        self.waker.wake().map_err(Error::Io)
    }
}

impl fmt::Debug for MioNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MioNode")
            .field("server_addr", &self.server_addr)
            .finish()
    }
}

impl MioNode {
    /// Starts a node with `config` on a new thread, seeded from the OS. Returns once both
    /// sockets are bound (bootstrap goes on in the background; see [`MioNode::wait_bootstrapped`]).
    pub fn spawn(config: Config) -> Result<MioNode, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Io(io::Error::other(e.to_string())))?;
        Self::spawn_with_seed(config, seed)
    }

    /// Like [`MioNode::spawn`] with a fixed seed (reproducible ids and tids, for tests).
    pub fn spawn_with_seed(mut config: Config, seed: [u8; 32]) -> Result<MioNode, Error> {
        if config.local_addresses.is_empty() {
            config.local_addresses = primary_ipv4().into_iter().collect();
        }
        if config.unix_ms_at_zero.is_none() {
            config.unix_ms_at_zero = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64);
        }
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (inner_tx, inner_rx) = mpsc::channel::<Arc<HandleInner>>();
        let thread = std::thread::Builder::new()
            .name("hyperdht-mio".into())
            .spawn(move || {
                let mut lp = Loop::new(poll, cmd_rx, config, seed);
                // A handle for the readers and writers this loop creates (weak: the loop must
                // not keep its own command channel alive).
                lp.handle = inner_rx.recv().ok().map(|a| Arc::downgrade(&a));
                lp.run(ready_tx);
            })?;
        let inner = Arc::new(HandleInner {
            cmds: cmd_tx,
            waker,
        });
        let _ = inner_tx.send(inner.clone());
        match ready_rx.recv() {
            Ok(Ok(server_addr)) => Ok(MioNode {
                inner,
                thread: std::sync::Mutex::new(Some(thread)),
                server_addr,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::Closed)
            }
        }
    }

    /// The server socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server_addr
    }

    /// Blocks until bootstrap has finished.
    pub fn wait_bootstrapped(&self) -> Result<(), Error> {
        let (tx, rx) = mpsc::channel();
        self.inner.send(Command::WaitBootstrapped(tx))?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Sends one request and waits for its reply.
    pub fn request(&self, to: SocketAddrV4, spec: RequestSpec) -> Result<Reply, Error> {
        let (tx, rx) = mpsc::channel();
        self.inner.send(Command::Request(to, spec, tx))?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// PINGs `to`.
    pub fn ping(&self, to: SocketAddrV4) -> Result<Reply, Error> {
        self.request(to, RequestSpec::internal(hyperdht_proto::commands::PING))
    }

    /// Runs a query to completion.
    pub fn query(&self, spec: QuerySpec) -> Result<QueryOutcome, Error> {
        self.run_query(Box::new(move |n, now| n.query(now, spec)))
    }

    fn run_query(&self, start: StartQuery) -> Result<QueryOutcome, Error> {
        let (tx, rx) = mpsc::channel();
        self.inner.send(Command::Query(start, tx))?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// FIND_PEER: the records of the server with `public_key`.
    pub fn find_peer(&self, public_key: [u8; 32]) -> Result<QueryOutcome, Error> {
        self.run_query(Box::new(move |n, now| n.find_peer(now, &public_key)))
    }

    /// LOOKUP: the peers announced on `topic`, per storing node.
    pub fn lookup(&self, topic: [u8; 32]) -> Result<QueryOutcome, Error> {
        self.run_query(Box::new(move |n, now| n.lookup(now, &topic)))
    }

    /// Announces `key` on `topic` with `relay_addresses`.
    pub fn announce(
        &self,
        topic: [u8; 32],
        key: &KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
    ) -> Result<QueryOutcome, Error> {
        let key = key.clone();
        self.run_query(Box::new(move |n, now| {
            n.announce(now, &topic, &key, relay_addresses, 0)
        }))
    }

    /// Removes `key`'s announce from `topic`.
    pub fn unannounce(&self, topic: [u8; 32], key: &KeyPair) -> Result<QueryOutcome, Error> {
        let key = key.clone();
        self.run_query(Box::new(move |n, now| n.unannounce(now, &topic, &key)))
    }

    /// Stores an immutable value; returns its hash and the query outcome.
    pub fn immutable_put(&self, value: &[u8]) -> Result<([u8; 32], QueryOutcome), Error> {
        let target = hyperdht_proto::crypto::hash(value);
        let value = value.to_vec();
        let out = self.run_query(Box::new(move |n, now| n.immutable_put(now, &value).0))?;
        Ok((target, out))
    }

    /// Fetches an immutable value by hash (the first value that hashes right).
    pub fn immutable_get(&self, target: [u8; 32]) -> Result<Option<Vec<u8>>, Error> {
        let out = self.run_query(Box::new(move |n, now| n.immutable_get(now, &target)))?;
        Ok(out.records.into_iter().find_map(|(_, r)| match r {
            Record::Immutable(v) => Some(v),
            _ => None,
        }))
    }

    /// Stores a signed mutable value; the outcome's `commits` hold each node's verdict.
    pub fn mutable_put(
        &self,
        key: &KeyPair,
        value: &[u8],
        seq: u64,
    ) -> Result<QueryOutcome, Error> {
        let key = key.clone();
        let value = value.to_vec();
        self.run_query(Box::new(move |n, now| {
            n.mutable_put(now, &key, &value, seq)
        }))
    }

    /// Fetches the highest-seq correctly signed mutable value of `public_key` (seq ≥ `seq`).
    pub fn mutable_get(
        &self,
        public_key: [u8; 32],
        seq: u64,
    ) -> Result<Option<MutableRecord>, Error> {
        let out = self.run_query(Box::new(move |n, now| n.mutable_get(now, &public_key, seq)))?;
        Ok(out
            .records
            .into_iter()
            .filter_map(|(_, r)| match r {
                Record::Mutable(m) => Some(m),
                _ => None,
            })
            .max_by_key(|m| m.seq))
    }

    /// FIND_NODE towards `target`: the closest replies.
    pub fn find_node(&self, target: NodeId) -> Result<QueryOutcome, Error> {
        self.query(QuerySpec::find_node(target.0))
    }

    /// Starts a server for `key` and waits for its first announce. The [`Server`] hands out
    /// incoming connections ([`Server::accept`]); dropping it closes the server.
    pub fn listen(&self, key: &KeyPair, config: ServerConfig) -> Result<Server, Error> {
        self.start_server(key, Some(config))
    }

    /// A server (`None`: a blind relay), once announced.
    fn start_server(&self, key: &KeyPair, config: Option<ServerConfig>) -> Result<Server, Error> {
        let (tx, rx) = mpsc::channel();
        self.inner.send(Command::Listen(key.clone(), config, tx))?;
        let (id, relay_addresses, events) = rx.recv().map_err(|_| Error::Closed)??;
        Ok(Server::new(
            self.inner.clone(),
            id,
            key.public_key(),
            relay_addresses,
            events,
        ))
    }

    /// Serves as a blind relay under `key` (JS `blind-relay` `Server` on a hyperdht server):
    /// peers that name this key as their relay (`relayThrough`) pair through this node, which
    /// then forwards their packets. Waits for the first announce; the server's connections
    /// are the node's own, so [`Server::accept`] never yields one.
    pub fn serve_blind_relay(&self, key: &KeyPair) -> Result<Server, Error> {
        self.start_server(key, None)
    }

    /// Connects to the server with `remote_public_key` as the node's default key pair
    /// ([`Config::key_pair`](hyperdht_proto::Config::key_pair), JS `dht.connect(publicKey)`);
    /// blocks until the path is open or the attempt failed.
    pub fn connect(&self, remote_public_key: [u8; 32]) -> Result<Connection, Error> {
        self.connect_with(remote_public_key, ConnectOptions::default())
    }

    /// Like [`MioNode::connect`], with options: the key pair to connect as
    /// ([`ConnectOptions::key_pair`]), a blind relay to meet the server at
    /// ([`ConnectOptions::relay_through`]).
    pub fn connect_with(
        &self,
        remote_public_key: [u8; 32],
        options: ConnectOptions,
    ) -> Result<Connection, Error> {
        let (tx, rx) = mpsc::channel();
        self.inner
            .send(Command::Connect(remote_public_key, options, tx))?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// A swarm on this node (JS `new Hyperswarm({ dht })`), listening and dialling as
    /// `config.key_pair`; see [`Swarm`].
    pub fn swarm(&self, config: SwarmConfig) -> Result<Swarm, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Io(io::Error::other(e.to_string())))?;
        let public_key = config.key_pair.public_key();
        let (tx, rx) = mpsc::channel();
        self.inner.send(Command::NewSwarm(config, seed, tx))?;
        let (id, connections) = rx.recv().map_err(|_| Error::Closed)?;
        Ok(Swarm::new(self.inner.clone(), id, public_key, connections))
    }

    /// A snapshot of the node's state.
    pub fn info(&self) -> Result<NodeInfo, Error> {
        let (tx, rx) = mpsc::channel();
        self.inner.send(Command::Info(tx))?;
        rx.recv().map_err(|_| Error::Closed)
    }

    /// Every node-level event from now on (`Bootstrapped`, `Persistent`, `NatUpdate`, ...).
    pub fn subscribe(&self) -> Result<Receiver<Event>, Error> {
        let (tx, rx) = mpsc::channel();
        self.inner.send(Command::Subscribe(tx))?;
        Ok(rx)
    }

    /// Stops the node and waits until its thread has ended: pending calls fail with
    /// [`Error::Closed`], sockets close, open connections stop. Calls after it fail with
    /// [`Error::Closed`].
    pub fn shutdown(&self) {
        let _ = self.inner.send(Command::Shutdown);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Whether the node has shut down (its thread ended).
    pub fn is_closed(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for MioNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where a listen call's answer goes, and the server's event channel until then.
type PendingListen = (
    Sender<Result<Listening, Error>>,
    Sender<ServerEvent>,
    Receiver<ServerEvent>,
);

/// A listen call's answer: the server, the DHT nodes its first announce reached, its events.
type Listening = (ServerId, Vec<SocketAddrV4>, Receiver<ServerEvent>);

/// Where a connect call's answer goes.
type ConnectTx = Sender<Result<Connection, Error>>;

/// Where a query's outcome goes.
type QueryReplyTx = Sender<Result<QueryOutcome, Error>>;

struct Pending {
    listens: HashMap<ServerId, PendingListen>,
    closing: HashMap<ServerId, Sender<()>>,
    servers: HashMap<ServerId, Sender<ServerEvent>>,
    server_conns: HashMap<ConnId, (ServerId, [u8; 32])>,
    connects: HashMap<ConnId, ([u8; 32], ConnectTx)>,
    requests: HashMap<RequestId, Sender<Result<Reply, Error>>>,
    queries: HashMap<QueryId, (QueryOutcome, QueryReplyTx)>,
    bootstrapped: Vec<Sender<Result<(), Error>>>,
    subscribers: Vec<Sender<Event>>,
}

struct Loop {
    poll: Poll,
    cmds: Receiver<Command>,
    node: Node,
    start: Instant,
    sockets: HashMap<SocketId, UdpSocket>,
    tokens: HashMap<Token, SocketId>,
    /// Sockets that may still hold datagrams (a batch stopped early).
    readable: Vec<SocketId>,
    /// Datagrams taken from the node and not sent yet: at most [`batch::BATCH`], sent a batch
    /// at a time. The node keeps anything further until these are gone.
    outbox: VecDeque<Transmit>,
    /// The socket whose buffer was full when the front of `outbox` was sent; sending resumes
    /// when it is writable (or closed).
    blocked: Option<SocketId>,
    pending: Pending,
    bootstrapped: bool,
    rx: RecvBatch,
    ready: Option<Sender<Result<SocketAddr, Error>>>,
    done: bool,
    handle: Option<std::sync::Weak<HandleInner>>,
    readers: HashMap<ConnId, ReaderState>,
    /// Connections the node closed that it still holds (their reader has not had everything).
    closed_conns: std::collections::HashSet<ConnId>,
    parked_writes: HashMap<ConnId, Vec<(Outgoing, WriteTicket)>>,
    /// Swarms on this node, by id (in creation order: node events reach them in that order).
    swarms: std::collections::BTreeMap<u64, SwarmSlot>,
    next_swarm: u64,
}

/// The driver's side of a reader: its channel, a chunk it could not hand over yet, a
/// message taken from the node that did not fit whole in the chunks sent so far (with how
/// much of it went), and whether the end (EOF or the close) was handed over.
struct ReaderState {
    tx: std::sync::mpsc::SyncSender<Chunk>,
    stalled: Option<Chunk>,
    partial: Option<(Vec<u8>, usize)>,
    ended: bool,
}

impl Loop {
    fn new(poll: Poll, cmds: Receiver<Command>, config: Config, seed: [u8; 32]) -> Loop {
        let start = Instant::now();
        Loop {
            poll,
            cmds,
            node: Node::new(config, seed, Timestamp::ZERO),
            start,
            sockets: HashMap::new(),
            tokens: HashMap::new(),
            readable: Vec::new(),
            outbox: VecDeque::with_capacity(batch::BATCH),
            blocked: None,
            pending: Pending {
                listens: HashMap::new(),
                closing: HashMap::new(),
                servers: HashMap::new(),
                server_conns: HashMap::new(),
                connects: HashMap::new(),
                requests: HashMap::new(),
                queries: HashMap::new(),
                bootstrapped: Vec::new(),
                subscribers: Vec::new(),
            },
            bootstrapped: false,
            rx: RecvBatch::new(),
            ready: None,
            done: false,
            handle: None,
            readers: HashMap::new(),
            closed_conns: std::collections::HashSet::new(),
            parked_writes: HashMap::new(),
            swarms: std::collections::BTreeMap::new(),
            next_swarm: 0,
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_duration(self.start.elapsed())
    }

    fn run(&mut self, ready: Sender<Result<SocketAddr, Error>>) {
        self.ready = Some(ready);
        let mut events = Events::with_capacity(64);
        self.flush();
        while !self.done {
            let now = self.now();
            let timeout = if !self.readable.is_empty() {
                Some(Duration::ZERO)
            } else if self.blocked.is_some() {
                // Output waits for a writable socket: sleep until then or the next timer.
                earliest(self.node.next_timer(), self.swarm_timeout()).map(|t| t - now)
            } else {
                earliest(self.node.poll_timeout(), self.swarm_timeout()).map(|t| t - now)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "poll failed; stopping node");
                    break;
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let Some(&id) = self.tokens.get(&ev.token()) else {
                    continue;
                };
                if ev.is_readable() && !self.readable.contains(&id) {
                    self.readable.push(id);
                }
                if ev.is_writable() && self.blocked == Some(id) {
                    self.unblock(id);
                }
            }
            self.read_sockets();
            self.handle_commands();
            let now = self.now();
            self.node.handle_timeout(now);
            for slot in self.swarms.values_mut() {
                if slot.swarm.poll_timeout().is_some_and(|t| t <= now) {
                    slot.swarm.handle_timeout(now, &mut self.node);
                }
            }
            self.flush();
        }
        self.fail_all();
    }

    /// The swarms' earliest deadline.
    fn swarm_timeout(&self) -> Option<Timestamp> {
        self.swarms
            .values()
            .filter_map(|s| s.swarm.poll_timeout())
            .min()
    }

    fn read_sockets(&mut self) {
        let ids = std::mem::take(&mut self.readable);
        for id in ids {
            let Some(sock) = self.sockets.get(&id) else {
                continue;
            };
            let mut n = 0;
            let mut more = true;
            while n < RECV_BATCH {
                match self.rx.recv(sock) {
                    Ok(got) => {
                        let now = Timestamp::from_duration(self.start.elapsed());
                        for d in self.rx.iter() {
                            if d.truncated {
                                tracing::debug!(
                                    from = %d.from,
                                    "datagram larger than {} bytes dropped",
                                    batch::SLOT
                                );
                                self.node.handle_oversized_datagram(now);
                            } else {
                                self.node.handle_datagram(now, id, d.from, d.data);
                            }
                        }
                        n += got.max(1);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        more = false;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // ICMP errors (connection refused) surface here on Linux; ignore them.
                        // Counted, so an error that repeats cannot keep the loop here.
                        tracing::trace!(error = %e, "recv error ignored");
                        n += 1;
                    }
                }
            }
            if more {
                self.readable.push(id);
            }
        }
    }

    fn handle_commands(&mut self) {
        let now = self.now();
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Command::Request(to, spec, tx) => {
                    let id = self.node.request(now, to, spec);
                    self.pending.requests.insert(id, tx);
                }
                Command::Query(start, tx) => {
                    let id = start(&mut self.node, now);
                    self.pending
                        .queries
                        .insert(id, (QueryOutcome::default(), tx));
                }
                Command::WaitBootstrapped(tx) => {
                    if self.bootstrapped {
                        let _ = tx.send(Ok(()));
                    } else {
                        self.pending.bootstrapped.push(tx);
                    }
                }
                Command::Info(tx) => {
                    let n = &self.node;
                    let info = NodeInfo {
                        id: n.id(),
                        table_id: *n.table().id(),
                        ephemeral: n.is_ephemeral(),
                        firewalled: n.is_firewalled(),
                        bootstrapped: n.is_bootstrapped(),
                        server_addr: n.local_addr(SocketId::SERVER),
                        client_addr: n.local_addr(SocketId::CLIENT),
                        table: n.table().iter().map(|t| (t.id, t.addr)).collect(),
                        connections: n.conn_count(),
                        stats: n.stats(),
                    };
                    let _ = tx.send(info);
                }
                Command::Subscribe(tx) => self.pending.subscribers.push(tx),
                Command::Listen(key, config, tx) => {
                    let listening = match config {
                        Some(config) => self.node.listen(now, &key, config),
                        None => self.node.serve_blind_relay(now, &key),
                    };
                    match listening {
                        Ok(id) => {
                            let (etx, erx) = mpsc::channel();
                            self.pending.listens.insert(id, (tx, etx, erx));
                        }
                        Err(e) => {
                            let _ = tx.send(Err(Error::Api(e)));
                        }
                    }
                }
                Command::Connect(pk, options, tx) => {
                    let id = self.node.connect_with(now, &pk, options);
                    self.pending.connects.insert(id, (pk, tx));
                }
                Command::ReadMore(conn) => self.forward_readable(conn),
                Command::CloseServer(server, tx) => {
                    self.pending.servers.remove(&server);
                    if let Some(tx) = tx {
                        self.pending.closing.insert(server, tx);
                    }
                    self.node.close_server(now, server);
                }
                Command::Write(conn, data, tx) => self.write_conn(now, conn, data, tx),
                Command::Finish(conn) => {
                    let _ = self.node.conn_finish(now, conn);
                }
                Command::Reset(conn) => self.node.conn_reset(now, conn),
                Command::NewSwarm(config, seed, tx) => {
                    self.next_swarm += 1;
                    let (slot, connections) = new_slot(config, seed);
                    self.swarms.insert(self.next_swarm, slot);
                    let _ = tx.send((self.next_swarm, connections));
                }
                Command::Swarm(id, call) => {
                    if let Some(slot) = self.swarms.get_mut(&id) {
                        call(slot, &mut self.node, now);
                    }
                }
                Command::SwarmDrop(id) => {
                    if let Some(mut slot) = self.swarms.remove(&id) {
                        slot.swarm.destroy(now, &mut self.node);
                    }
                }
                Command::Shutdown => {
                    self.node.shutdown(now);
                }
            }
        }
    }

    /// Drains socket ops, transmits and events, in that order.
    fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(op) = self.node.poll_socket_op() {
                progressed = true;
                self.apply_socket_op(op);
            }
            progressed |= self.send_transmits();
            while let Some(ev) = self.node.poll_event() {
                progressed = true;
                self.dispatch(ev);
            }
            for slot in self.swarms.values_mut() {
                progressed |= slot.drain();
            }
            if !progressed {
                break;
            }
        }
    }

    fn apply_socket_op(&mut self, op: SocketOp) {
        let now = self.now();
        match op {
            SocketOp::Bind { socket, addr } => match bind(addr) {
                Ok(mut s) => {
                    let local = s.local_addr();
                    let reg =
                        self.poll
                            .registry()
                            .register(&mut s, token_of(socket), Interest::READABLE);
                    match (local, reg) {
                        (Ok(local), Ok(())) => {
                            self.sockets.insert(socket, s);
                            self.tokens.insert(token_of(socket), socket);
                            self.node.handle_socket_bound(now, socket, local);
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::warn!(%addr, error = %e, "socket setup failed");
                            self.node.handle_socket_failed(now, socket);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "bind failed");
                    self.node.handle_socket_failed(now, socket);
                }
            },
            SocketOp::Close { socket } => {
                self.tokens.remove(&token_of(socket));
                if let Some(mut s) = self.sockets.remove(&socket) {
                    let _ = self.poll.registry().deregister(&mut s);
                }
                self.outbox.retain(|t| t.socket != socket);
                if self.blocked == Some(socket) {
                    self.blocked = None;
                }
            }
            other => tracing::warn!(?other, "unsupported socket op ignored"),
        }
    }

    /// Takes transmits from the node and sends them, a batch per system call, until the node
    /// has none left or the kernel would block. Returns whether anything was taken or sent.
    fn send_transmits(&mut self) -> bool {
        let mut progressed = false;
        while self.blocked.is_none() {
            while self.outbox.len() < batch::BATCH {
                match self.node.poll_transmit() {
                    Some(t) => self.outbox.push_back(t),
                    None => break,
                }
            }
            if self.outbox.is_empty() {
                break;
            }
            progressed = true;
            self.send_front();
        }
        progressed
    }

    /// Sends the datagrams at the front of the outbox that share a socket and need no TTL of
    /// their own, in one call. Sent ones leave the outbox; one the kernel rejects is dropped
    /// (logged); if the socket is full, the outbox is kept and `blocked` set until it drains.
    fn send_front(&mut self) {
        let Some(front) = self.outbox.front() else {
            return;
        };
        let socket = front.socket;
        let Some(sock) = self.sockets.get(&socket) else {
            tracing::debug!(?socket, "transmit on unknown socket dropped");
            self.outbox.pop_front();
            return;
        };
        let result = if let Some(ttl) = front.ttl {
            // Holepunch probes with a low TTL go alone, with the socket's TTL set around them.
            let _ = sock.set_ttl(u32::from(ttl));
            let r = sock.send_to(&front.payload, front.dst).map(|_| 1);
            let _ = sock.set_ttl(64);
            r
        } else {
            let run: Vec<(&[u8], SocketAddr)> = self
                .outbox
                .iter()
                .take_while(|t| t.socket == socket && t.ttl.is_none())
                .map(|t| (t.payload.as_slice(), t.dst))
                .collect();
            batch::send_batch(sock, &run)
        };
        match result {
            // Fewer sent than asked: the next call sends the rest or reports why it fails.
            Ok(sent) => drop(self.outbox.drain(..sent)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.block(socket),
            Err(e) => {
                if let Some(t) = self.outbox.pop_front() {
                    tracing::debug!(dst = %t.dst, error = %e, "send failed");
                }
            }
        }
    }

    /// The kernel would block on `socket`: wait until it is writable.
    fn block(&mut self, socket: SocketId) {
        self.blocked = Some(socket);
        if let Some(sock) = self.sockets.get_mut(&socket) {
            let interest = Interest::READABLE | Interest::WRITABLE;
            let _ = self
                .poll
                .registry()
                .reregister(sock, token_of(socket), interest);
        }
    }

    /// `socket` became writable: stop waiting for that and send again (the next flush).
    fn unblock(&mut self, socket: SocketId) {
        self.blocked = None;
        if let Some(sock) = self.sockets.get_mut(&socket) {
            let _ = self
                .poll
                .registry()
                .reregister(sock, token_of(socket), Interest::READABLE);
        }
    }

    fn dispatch(&mut self, ev: Event) {
        // The swarms see every event first and keep their own.
        let now = self.now();
        let mut ev = ev;
        for slot in self.swarms.values_mut() {
            match slot.swarm.handle_event(now, &mut self.node, ev) {
                Some(e) => ev = e,
                None => return,
            }
        }
        self.pending
            .subscribers
            .retain(|s| s.send(ev.clone()).is_ok());
        match ev {
            Event::Listening { server, .. } => {
                if let Some(r) = self.ready.take() {
                    let _ = r.send(Ok(server));
                }
            }
            Event::BindFailed { .. } => {
                if let Some(r) = self.ready.take() {
                    let _ = r.send(Err(Error::BindFailed));
                }
                self.done = true;
            }
            Event::Bootstrapped => {
                self.bootstrapped = true;
                for tx in self.pending.bootstrapped.drain(..) {
                    let _ = tx.send(Ok(()));
                }
            }
            Event::RequestDone { id, result } => {
                if let Some(tx) = self.pending.requests.remove(&id) {
                    let _ = tx.send(result.map_err(Error::Request));
                }
            }
            Event::QueryReply { id, reply } => {
                if let Some((out, _)) = self.pending.queries.get_mut(&id) {
                    out.replies.push(reply);
                }
            }
            Event::RecordFound { id, from, record } => {
                if let Some((out, _)) = self.pending.queries.get_mut(&id) {
                    out.records.push((from, record));
                }
            }
            Event::CommitReply { id, reply } => {
                if let Some((out, _)) = self.pending.queries.get_mut(&id) {
                    out.commits.push(reply);
                }
            }
            Event::QueryFinished { id, result } => {
                if let Some((mut out, tx)) = self.pending.queries.remove(&id) {
                    let result = result.map(|closest| {
                        out.closest = closest;
                        out
                    });
                    let _ = tx.send(result.map_err(Error::Query));
                }
            }
            Event::ServerListening {
                server,
                relay_addresses,
            } => {
                if let Some((tx, etx, erx)) = self.pending.listens.remove(&server) {
                    self.pending.servers.insert(server, etx);
                    let _ = tx.send(Ok((server, relay_addresses, erx)));
                }
            }
            Event::Incoming {
                server,
                conn,
                remote_public_key,
            } => {
                self.pending
                    .server_conns
                    .insert(conn, (server, remote_public_key));
                if let Some(tx) = self.pending.servers.get(&server) {
                    let _ = tx.send(ServerEvent::Incoming {
                        conn,
                        remote_public_key,
                    });
                }
            }
            Event::Connected {
                conn,
                socket,
                remote,
                handshake,
                ..
            } => {
                let Some(inner) = self.handle.as_ref().and_then(std::sync::Weak::upgrade) else {
                    return;
                };
                let (rtx, rrx) = read_channel();
                self.readers.insert(
                    conn,
                    ReaderState {
                        tx: rtx,
                        stalled: None,
                        partial: None,
                        ended: false,
                    },
                );
                let c = Connection::new(
                    conn,
                    handshake.remote_public_key,
                    self.node.local_addr(socket),
                    remote,
                    handshake.is_initiator,
                    ConnReader::new(conn, rrx, inner.clone()),
                    ConnWriter::new(conn, inner),
                );
                if let Some((_, tx)) = self.pending.connects.remove(&conn) {
                    let _ = tx.send(Ok(c));
                } else if let Some((server, _)) = self.pending.server_conns.remove(&conn) {
                    if let Some(tx) = self.pending.servers.get(&server) {
                        let _ = tx.send(ServerEvent::Connected(Box::new(c)));
                    }
                } else if let Some(slot) = self.swarms.values_mut().find(|s| s.swarm.owns(conn)) {
                    slot.stash(conn, c);
                }
            }
            Event::ConnectFailed { conn, reason } => {
                if let Some((_, tx)) = self.pending.connects.remove(&conn) {
                    let _ = tx.send(Err(Error::Connect(reason)));
                }
                // An attempt that got as far as a connection leaves it in the node.
                self.node.conn_remove(conn);
            }
            Event::Readable { conn } | Event::Finished { conn } => self.forward_readable(conn),
            Event::Writable { conn } => {
                let parked = self.parked_writes.remove(&conn).unwrap_or_default();
                let now = self.now();
                for (data, ticket) in parked {
                    self.write_conn(now, conn, data, ticket);
                }
            }
            Event::ConnClosed { conn, reason } => {
                // A server's connection that never opened was never handed out.
                self.pending.server_conns.remove(&conn);
                for slot in self.swarms.values_mut() {
                    slot.forget(conn);
                }
                self.closed_conns.insert(conn);
                self.forward_readable(conn);
                // A reader that already has its end gets no second one (see `forward_chunks`).
                if let Some(r) = self.readers.get_mut(&conn).filter(|r| !r.ended) {
                    let chunk = if reason == ConnCloseReason::Finished {
                        Chunk::Eof
                    } else {
                        Chunk::Closed(reason)
                    };
                    if r.stalled.is_none() {
                        match r.tx.try_send(chunk) {
                            Ok(()) => r.ended = true,
                            Err(std::sync::mpsc::TrySendError::Full(c)) => r.stalled = Some(c),
                            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {}
                        }
                    }
                }
                for (_, ticket) in self.parked_writes.remove(&conn).unwrap_or_default() {
                    ticket.settle(Err(ConnError::Closed(reason)));
                }
                self.reap_conn(conn);
            }
            Event::ServerClosed { server } => {
                if let Some(tx) = self.pending.closing.remove(&server) {
                    let _ = tx.send(());
                }
            }
            Event::Closed => self.done = true,
            _ => {}
        }
    }

    /// Hands decrypted messages to the connection's reader, as far as its channel has room.
    fn forward_readable(&mut self, conn: ConnId) {
        self.forward_chunks(conn);
        self.reap_conn(conn);
    }

    fn forward_chunks(&mut self, conn: ConnId) {
        // Nothing follows an end: the node keeps reporting the end of a finished stream, and
        // a second end stalled in a full channel would never be taken (the reader stops at its
        // first end), so the connection would never be reaped.
        let Some(r) = self.readers.get_mut(&conn).filter(|r| !r.ended) else {
            return;
        };
        // A chunk the channel had no room for last time goes first.
        let mut next = r.stalled.take();
        loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => match next_chunk(&mut self.node, conn, &mut r.partial) {
                    Some(c) => c,
                    None => return,
                },
            };
            let end = matches!(chunk, Chunk::Eof | Chunk::Closed(_));
            match r.tx.try_send(chunk) {
                Ok(()) if end => {
                    r.ended = true;
                    return;
                }
                Ok(()) => {}
                Err(std::sync::mpsc::TrySendError::Full(c)) => {
                    r.stalled = Some(c);
                    return;
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                    self.readers.remove(&conn);
                    return;
                }
            }
        }
    }

    /// Forgets a connection the node closed once its reader has everything (or is gone), so
    /// closed connections do not pile up in the node.
    fn reap_conn(&mut self, conn: ConnId) {
        if !self.closed_conns.contains(&conn) {
            return;
        }
        let delivered = self
            .readers
            .get(&conn)
            .is_none_or(|r| r.ended && r.stalled.is_none());
        if delivered {
            self.readers.remove(&conn);
            self.closed_conns.remove(&conn);
            self.parked_writes.remove(&conn);
            self.node.conn_remove(conn);
        }
    }

    /// Gives `data` to the node, or parks it until the connection is writable again. Behind
    /// parked writes it parks too: bytes keep the order they were written in.
    fn write_conn(&mut self, now: Timestamp, conn: ConnId, data: Outgoing, ticket: WriteTicket) {
        if let Some(parked) = self.parked_writes.get_mut(&conn) {
            parked.push((data, ticket));
            return;
        }
        let result = match &data {
            Outgoing::Bytes(bytes) => self.node.conn_write(now, conn, bytes).map(drop),
            Outgoing::Message(message) => self.node.conn_write_message(now, conn, message),
        };
        match result {
            Err(ConnError::Blocked) => self
                .parked_writes
                .entry(conn)
                .or_default()
                .push((data, ticket)),
            r => ticket.settle(r),
        }
    }

    fn fail_all(&mut self) {
        for (_, tx) in self.pending.requests.drain() {
            let _ = tx.send(Err(Error::Closed));
        }
        for (_, (_, tx)) in self.pending.queries.drain() {
            let _ = tx.send(Err(Error::Closed));
        }
        for tx in self.pending.bootstrapped.drain(..) {
            let _ = tx.send(Err(Error::Closed));
        }
        for (_, (_, tx)) in self.pending.connects.drain() {
            let _ = tx.send(Err(Error::Closed));
        }
        for (_, (tx, _, _)) in self.pending.listens.drain() {
            let _ = tx.send(Err(Error::Closed));
        }
        if let Some(r) = self.ready.take() {
            let _ = r.send(Err(Error::Closed));
        }
    }
}

/// The next chunk for a reader: up to `CHUNK` bytes of whole messages (their ends marked), a
/// message too large for one chunk split over several (the remainder kept in `partial`), or
/// EOF. `None` while the node has nothing more.
fn next_chunk(
    node: &mut Node,
    conn: ConnId,
    partial: &mut Option<(Vec<u8>, usize)>,
) -> Option<Chunk> {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    while bytes.len() < CHUNK {
        let (message, from) = match partial.take() {
            Some(p) => p,
            None => match node.conn_read_message(conn) {
                Ok(Some(m)) => (m, 0),
                Ok(None) if bytes.is_empty() => return Some(Chunk::Eof),
                // The end comes in the next chunk, after these bytes.
                Ok(None) | Err(_) => break,
            },
        };
        let rest = &message[from..];
        let room = CHUNK - bytes.len();
        if rest.len() <= room {
            bytes.extend_from_slice(rest);
            ends.push(bytes.len());
        } else {
            bytes.extend_from_slice(&rest[..room]);
            *partial = Some((message, from + room));
        }
    }
    (!bytes.is_empty()).then_some(Chunk::Data { bytes, ends })
}

/// The earlier of two deadlines.
fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn token_of(socket: SocketId) -> Token {
    Token(socket.index() as usize)
}

fn bind(addr: SocketAddrV4) -> io::Result<UdpSocket> {
    let s = StdUdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    grow_recv_buffer(&s);
    Ok(UdpSocket::from_std(s))
}

/// Asks the kernel for a [`SOCKET_RECV_BUFFER`]-byte receive buffer. Failing is not fatal (the
/// kernel may cap the size); it is logged.
fn grow_recv_buffer(socket: &StdUdpSocket) {
    if let Err(e) = socket2::SockRef::from(socket).set_recv_buffer_size(SOCKET_RECV_BUFFER) {
        tracing::debug!(error = %e, "could not enlarge the UDP receive buffer");
    }
}

/// The IPv4 address of the interface the default route uses, if any (connecting a UDP socket
/// sends nothing; it only picks a route).
fn primary_ipv4() -> Option<std::net::Ipv4Addr> {
    let s = StdUdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() && !a.ip().is_loopback() => Some(*a.ip()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of requests is read and answered a batch at a time, each reply to its own
    /// sender; a datagram larger than a receive slot is dropped and counted, not decoded.
    #[test]
    fn bursts_are_answered_and_oversized_datagrams_counted() {
        use hyperdht_proto::commands::PING;
        use hyperdht_proto::wire::rpc::{Request, Response};
        let node = MioNode::spawn(Config::bootstrapper(SocketAddrV4::new(
            std::net::Ipv4Addr::LOCALHOST,
            0,
        )))
        .unwrap();
        let target = node.local_addr();
        let ping = |tid: u16| {
            let req = Request {
                tid,
                to: SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, target.port()),
                id: None,
                token: None,
                internal: true,
                command: PING,
                target: None,
                value: None,
            };
            let mut bytes = Vec::new();
            req.encode(&mut bytes);
            bytes
        };
        // Three clients, 40 pings each, sent back to back before reading anything.
        let clients: Vec<StdUdpSocket> = (0..3)
            .map(|_| StdUdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (c, client) in clients.iter().enumerate() {
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            for tid in 0..40u16 {
                client
                    .send_to(&ping(tid + 1000 * c as u16), target)
                    .unwrap();
            }
        }
        for (c, client) in clients.iter().enumerate() {
            let mut tids = Vec::new();
            let mut buf = [0u8; 2048];
            while tids.len() < 40 {
                let (n, _) = client.recv_from(&mut buf).expect("every ping is answered");
                tids.push(Response::decode(&buf[..n]).unwrap().tid);
            }
            tids.sort_unstable();
            let want: Vec<u16> = (0..40u16).map(|t| t + 1000 * c as u16).collect();
            assert_eq!(tids, want, "client {c} got the replies to its own pings");
        }
        let before = node.info().unwrap().stats;
        // The oversized datagram, then a ping from the same socket: once the ping's reply is
        // back, the node has read the datagram queued before it.
        let client = &clients[0];
        client
            .send_to(&vec![0x13; batch::SLOT + 1], target)
            .unwrap();
        client.send_to(&ping(7), target).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = client.recv_from(&mut buf).expect("the ping is answered");
        assert_eq!(Response::decode(&buf[..n]).unwrap().tid, 7);
        let after = node.info().unwrap().stats;
        assert_eq!(after.dropped.oversized, before.dropped.oversized + 1);
        assert_eq!(after.dropped.malformed, before.dropped.malformed);
        node.shutdown();
    }

    /// Sockets the driver binds get the larger receive buffer, as far as the kernel allows
    /// (`net.core.rmem_max`; Linux reports twice the size granted).
    #[test]
    fn bound_sockets_get_the_larger_receive_buffer() {
        let socket = bind(SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
        let granted = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        assert!(
            granted >= SOCKET_RECV_BUFFER.min(cap),
            "receive buffer {granted} B, wanted {SOCKET_RECV_BUFFER} B (rmem_max {cap})"
        );
    }
}
