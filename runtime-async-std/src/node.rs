//! The application's side: [`bind`], the cloneable [`AsyncNode`] handle, [`Server`] and
//! [`Records`].

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_channel::Receiver;
use futures_lite::Stream;
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::event::Record;
use hyperdht_proto::wire::hyperdht::MutableRecord;
use hyperdht_proto::{
    ApiError, Config, ConnectError, ConnectOptions, Node, NodeId, QueryError, QueryId, QuerySpec,
    Reply, RequestError, RequestSpec, ServerConfig, ServerId, SocketId, Stats, Timestamp,
};

use crate::conn::Connection;
use crate::driver::Driver;
use crate::shared::{Deferred, HandleRef, QuerySink, RecordItem, State};
use crate::swarm::Swarm;
use hyperdht_proto::swarm::SwarmConfig;

/// How long [`Server::close`] waits for the server's relays to confirm the unannounce.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Why a call failed.
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
    /// The node has shut down (or its driver was dropped).
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

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            e => io::Error::other(e),
        }
    }
}

/// A snapshot of the node's state.
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// Connections the node holds (closed ones are forgotten once their handle is gone).
    pub connections: usize,
    /// Counters.
    pub stats: Stats,
}

/// The result of a query: every reply without error, the records found, the commit replies,
/// and the closest nodes.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
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

/// Binds a node with `config`, seeded from the OS, and returns its handle and its driver.
///
/// The node's two UDP sockets are bound before this returns; nothing else happens until the
/// driver runs: spawn it on any executor (`async_std::task::spawn(driver)`,
/// `smol::spawn(driver).detach()`), then use the handle. Bootstrap goes on in the background
/// (see [`AsyncNode::wait_bootstrapped`]).
pub async fn bind(config: Config) -> Result<(AsyncNode, Driver), Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Io(io::Error::other(e.to_string())))?;
    bind_with_seed(config, seed).await
}

/// Like [`bind`] with a fixed seed (reproducible ids and transaction ids, for tests).
///
/// Fills in [`Config::local_addresses`] (the interface of the default route) and
/// [`Config::unix_ms_at_zero`] (the wall clock) when they are unset.
pub async fn bind_with_seed(
    mut config: Config,
    seed: [u8; 32],
) -> Result<(AsyncNode, Driver), Error> {
    if config.local_addresses.is_empty() {
        config.local_addresses = crate::driver::primary_ipv4().into_iter().collect();
    }
    if config.unix_ms_at_zero.is_none() {
        config.unix_ms_at_zero = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
    }
    let (driver, local_addr) = Driver::start(config, seed)?;
    let node = AsyncNode {
        shared: driver.handle(),
        local_addr,
    };
    Ok((node, driver))
}

/// A cloneable handle to a node run by its [`Driver`].
///
/// Every call is applied by the node at once and answered when the node has the answer; the
/// driver must be running (spawned) for anything to happen. The node shuts down when
/// [`AsyncNode::shutdown`] is called, or when every handle (node handles, servers,
/// connections) is gone.
#[derive(Clone)]
pub struct AsyncNode {
    shared: HandleRef,
    local_addr: SocketAddr,
}

impl fmt::Debug for AsyncNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncNode")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl AsyncNode {
    /// Runs `f` on the node under the lock, then wakes the driver to send what it queued.
    fn call<T>(&self, f: impl FnOnce(&mut State, Timestamp) -> T) -> Result<T, Error> {
        let r = {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            let now = st.now();
            f(&mut st, now)
        };
        self.shared.waker.wake();
        Ok(r)
    }

    /// The server socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the node's state; fails once the node is shut down.
    pub fn info(&self) -> Result<NodeInfo, Error> {
        let st = self.shared.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        let n = &st.node;
        Ok(NodeInfo {
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
        })
    }

    /// Runs `f` with the node itself, under the driver's lock, for what this handle does not
    /// wrap (`add_node`, `refresh`, counters, ...). Keep it short, and do not drain the node's
    /// outputs (`poll_*`): the driver sends and dispatches them when `f` returns. Events of
    /// queries or requests started here are not reported to anyone.
    pub fn with_node<T>(&self, f: impl FnOnce(&mut Node, Timestamp) -> T) -> Result<T, Error> {
        self.call(|st, now| f(&mut st.node, now))
    }

    /// Waits until bootstrap has finished.
    pub async fn wait_bootstrapped(&self) -> Result<(), Error> {
        let (tx, rx) = async_channel::bounded(1);
        let done = self.call(|st, _| {
            if st.bootstrapped {
                true
            } else {
                st.pending.bootstrapped.push(tx);
                false
            }
        })?;
        if done {
            return Ok(());
        }
        rx.recv().await.map_err(|_| Error::Closed)
    }

    /// Sends one request and waits for its reply.
    pub async fn request(&self, to: SocketAddrV4, spec: RequestSpec) -> Result<Reply, Error> {
        let (tx, rx) = async_channel::bounded(1);
        self.call(|st, now| {
            let id = st.node.request(now, to, spec);
            st.pending.requests.insert(id, tx);
        })?;
        rx.recv().await.map_err(|_| Error::Closed)?
    }

    /// PINGs `to`.
    pub async fn ping(&self, to: SocketAddrV4) -> Result<Reply, Error> {
        self.request(to, RequestSpec::internal(hyperdht_proto::commands::PING))
            .await
    }

    async fn run_query(
        &self,
        start: impl FnOnce(&mut Node, Timestamp) -> QueryId,
    ) -> Result<QueryOutcome, Error> {
        let (tx, rx) = async_channel::bounded(1);
        self.call(|st, now| {
            let id = start(&mut st.node, now);
            st.pending
                .queries
                .insert(id, QuerySink::Collect(QueryOutcome::default(), tx));
        })?;
        rx.recv().await.map_err(|_| Error::Closed)?
    }

    /// Runs a query to completion.
    pub async fn query(&self, spec: QuerySpec) -> Result<QueryOutcome, Error> {
        self.run_query(|n, now| n.query(now, spec)).await
    }

    /// FIND_NODE towards `target`: the closest replies.
    pub async fn find_node(&self, target: NodeId) -> Result<QueryOutcome, Error> {
        self.query(QuerySpec::find_node(target.0)).await
    }

    /// FIND_PEER: the records of the server with `public_key` ([`Record::Peer`]).
    pub async fn find_peer(&self, public_key: [u8; 32]) -> Result<QueryOutcome, Error> {
        self.run_query(|n, now| n.find_peer(now, &public_key)).await
    }

    /// LOOKUP: the peers announced on `topic`, one [`Record::Lookup`] per storing node, once
    /// the walk is done.
    pub async fn lookup(&self, topic: [u8; 32]) -> Result<QueryOutcome, Error> {
        self.run_query(|n, now| n.lookup(now, &topic)).await
    }

    /// LOOKUP as a stream: each storing node's [`Record::Lookup`] as soon as it arrives. The
    /// stream ends when the walk is done; a failed walk ends it with one `Err`.
    pub fn lookup_stream(&self, topic: [u8; 32]) -> Result<Records, Error> {
        let (tx, rx) = async_channel::unbounded();
        self.call(|st, now| {
            let id = st.node.lookup(now, &topic);
            st.pending.queries.insert(id, QuerySink::Records(tx));
        })?;
        Ok(Records {
            _handle: self.shared.clone(),
            rx: Box::pin(rx),
        })
    }

    /// Announces `key` on `topic` with `relay_addresses` (signed for each of the closest
    /// nodes); `commits` holds their answers.
    pub async fn announce(
        &self,
        topic: [u8; 32],
        key: &KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
    ) -> Result<QueryOutcome, Error> {
        self.run_query(|n, now| n.announce(now, &topic, key, relay_addresses, 0))
            .await
    }

    /// Removes `key`'s announce from `topic`.
    pub async fn unannounce(&self, topic: [u8; 32], key: &KeyPair) -> Result<QueryOutcome, Error> {
        self.run_query(|n, now| n.unannounce(now, &topic, key))
            .await
    }

    /// Stores an immutable value; returns its hash (the key to get it with) and the outcome.
    pub async fn immutable_put(&self, value: &[u8]) -> Result<([u8; 32], QueryOutcome), Error> {
        let mut target = [0; 32];
        let out = self
            .run_query(|n, now| {
                let (id, hash) = n.immutable_put(now, value);
                target = hash;
                id
            })
            .await?;
        Ok((target, out))
    }

    /// Fetches an immutable value by hash (the first value found; values are checked against
    /// the hash).
    pub async fn immutable_get(&self, target: [u8; 32]) -> Result<Option<Vec<u8>>, Error> {
        let out = self
            .run_query(|n, now| n.immutable_get(now, &target))
            .await?;
        Ok(out.records.into_iter().find_map(|(_, r)| match r {
            Record::Immutable(v) => Some(v),
            _ => None,
        }))
    }

    /// Stores `value` signed by `key` with sequence number `seq`; the outcome's `commits` hold
    /// each node's verdict (`error` 0, or SEQ_REUSED / SEQ_TOO_LOW).
    pub async fn mutable_put(
        &self,
        key: &KeyPair,
        value: &[u8],
        seq: u64,
    ) -> Result<QueryOutcome, Error> {
        self.run_query(|n, now| n.mutable_put(now, key, value, seq))
            .await
    }

    /// Fetches the highest-seq correctly signed value of `public_key` with a seq of at least
    /// `seq`.
    pub async fn mutable_get(
        &self,
        public_key: [u8; 32],
        seq: u64,
    ) -> Result<Option<MutableRecord>, Error> {
        let out = self
            .run_query(|n, now| n.mutable_get(now, &public_key, seq))
            .await?;
        Ok(out
            .records
            .into_iter()
            .filter_map(|(_, r)| match r {
                Record::Mutable(m) => Some(m),
                _ => None,
            })
            .max_by_key(|m| m.seq))
    }

    /// Starts a server for `key` and waits for its first announce. The [`Server`] is a stream
    /// of incoming [`Connection`]s.
    pub async fn listen(&self, key: &KeyPair, config: ServerConfig) -> Result<Server, Error> {
        self.start_server(key, Some(config)).await
    }

    /// Serves as a blind relay under `key` (JS `blind-relay` `Server` on a hyperdht server):
    /// peers that name this key as their relay (`relayThrough`) pair through this node, which
    /// then forwards their packets. Resolves after the first announce; the server's
    /// connections are the node's own, so [`Server::accept`] never yields one.
    pub async fn serve_blind_relay(&self, key: &KeyPair) -> Result<Server, Error> {
        self.start_server(key, None).await
    }

    /// A server (`None`: a blind relay), once announced.
    async fn start_server(
        &self,
        key: &KeyPair,
        config: Option<ServerConfig>,
    ) -> Result<Server, Error> {
        let (tx, rx) = async_channel::bounded(1);
        let id = self.call(|st, now| {
            let id = match config {
                Some(config) => st.node.listen(now, key, config),
                None => st.node.serve_blind_relay(now, key),
            }
            .map_err(Error::Api)?;
            let (ctx, crx) = async_channel::bounded(crate::driver::ACCEPT_BACKLOG);
            st.pending.servers.insert(id, ctx);
            st.pending.listens.insert(id, (tx, crx));
            Ok::<_, Error>(id)
        })??;
        // Dropped before the first announce: the driver closes the server.
        let guard = Guard::new(&self.shared, Deferred::CloseServer(id));
        let (relay_addresses, incoming) = rx.recv().await.map_err(|_| Error::Closed)??;
        guard.disarm();
        Ok(Server {
            shared: self.shared.clone(),
            id,
            public_key: key.public_key(),
            relay_addresses,
            incoming: Box::pin(incoming),
            closed: AtomicBool::new(false),
        })
    }

    /// A swarm on this node (JS `new Hyperswarm({ dht })`), listening and dialling as
    /// `config.key_pair`; see [`Swarm`]. Resolves at once: joining a topic starts the work.
    pub async fn swarm(&self, config: SwarmConfig) -> Result<Swarm, Error> {
        Swarm::start(&self.shared, config)
    }

    /// Connects to the server with `remote_public_key` as the node's default key pair
    /// ([`Config::key_pair`](hyperdht_proto::Config::key_pair), JS `dht.connect(publicKey)`);
    /// resolves once the path is open and the peer answered on it, or the attempt failed.
    /// Dropping the future cancels the attempt.
    pub async fn connect(&self, remote_public_key: [u8; 32]) -> Result<Connection, Error> {
        self.connect_with(remote_public_key, ConnectOptions::default())
            .await
    }

    /// Like [`AsyncNode::connect`], with options: the key pair to connect as
    /// ([`ConnectOptions::key_pair`]), a blind relay to meet the server at
    /// ([`ConnectOptions::relay_through`]).
    pub async fn connect_with(
        &self,
        remote_public_key: [u8; 32],
        options: ConnectOptions,
    ) -> Result<Connection, Error> {
        let (tx, rx) = async_channel::bounded(1);
        let id = self.call(|st, now| {
            let id = st.node.connect_with(now, &remote_public_key, options);
            st.pending.connects.insert(id, tx);
            id
        })?;
        let guard = Guard::new(&self.shared, Deferred::CancelConnect(id));
        let r = rx.recv().await.map_err(|_| Error::Closed)?;
        guard.disarm();
        r
    }

    /// Shuts the node down (pending calls fail with [`Error::Closed`], sockets close, open
    /// connections stop moving) and waits until the driver has finished (the driver must be
    /// running).
    pub async fn shutdown(&self) {
        let _ = self.call(|st, now| {
            if !st.shutting_down {
                st.shutting_down = true;
                st.node.shutdown(now);
            }
        });
        let done = self.shared.done.clone();
        let _ = done.recv().await;
    }

    /// Whether the driver has finished.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

/// Leaves a [`Deferred`] for the driver if dropped before [`Guard::disarm`] (a cancelled
/// future).
struct Guard<'a> {
    shared: &'a HandleRef,
    on_drop: Option<Deferred>,
}

impl<'a> Guard<'a> {
    fn new(shared: &'a HandleRef, on_drop: Deferred) -> Self {
        Guard {
            shared,
            on_drop: Some(on_drop),
        }
    }

    fn disarm(mut self) {
        self.on_drop = None;
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.on_drop.take() {
            self.shared.defer(d);
        }
    }
}

/// A listening server: a [`Stream`] of incoming [`Connection`]s (each already open: the client
/// is authenticated and the path carries data).
///
/// Dropping it closes the server (unannounced in the background); [`Server::close`] waits for
/// the unannounce.
pub struct Server {
    shared: HandleRef,
    id: ServerId,
    public_key: [u8; 32],
    relay_addresses: Vec<SocketAddrV4>,
    incoming: Pin<Box<Receiver<Connection>>>,
    closed: AtomicBool,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("id", &self.id)
            .field("relay_addresses", &self.relay_addresses)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Its id in the node.
    pub fn id(&self) -> ServerId {
        self.id
    }

    /// The public key clients connect to.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// The DHT nodes the first announce went to.
    pub fn relay_addresses(&self) -> &[SocketAddrV4] {
        &self.relay_addresses
    }

    /// The next incoming connection; `None` once the server or the node is closed.
    pub async fn accept(&self) -> Option<Connection> {
        self.incoming.recv().await.ok()
    }

    /// Stops the server and waits (at most 5 s) until it is unannounced from its relays. Once
    /// closed, [`Server::accept`] returns `None`.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let (tx, rx) = async_channel::bounded(1);
        let id = self.id;
        let r = {
            let mut st = self.shared.lock();
            if st.closed {
                None
            } else {
                let now = st.now();
                let sender = st.pending.servers.remove(&id);
                st.pending.closing.insert(id, tx);
                st.node.close_server(now, id);
                Some(sender)
            }
        };
        // The incoming sender is dropped outside the lock.
        drop(r);
        self.shared.waker.wake();
        let _ = futures_lite::future::or(async { rx.recv().await.ok() }, async {
            async_io::Timer::after(CLOSE_WAIT).await;
            None
        })
        .await;
    }
}

impl Stream for Server {
    type Item = Connection;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Connection>> {
        self.incoming.as_mut().poll_next(cx)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::SeqCst) {
            self.shared.defer(Deferred::CloseServer(self.id));
        }
    }
}

/// The records of a streaming query ([`AsyncNode::lookup_stream`]), each with the node that
/// stored it, as they arrive. It keeps the node running while it is alive.
pub struct Records {
    _handle: HandleRef,
    rx: Pin<Box<Receiver<RecordItem>>>,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records").finish_non_exhaustive()
    }
}

impl Stream for Records {
    type Item = Result<(SocketAddrV4, Record), Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.as_mut().poll_next(cx)
    }
}

// Futures and handles move between executor threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<AsyncNode>();
    send_sync::<Server>();
    send_sync::<Connection>();
    send_sync::<Driver>();
};

#[allow(dead_code)]
fn assert_send_futures(n: &AsyncNode, k: &KeyPair) {
    fn send<F: Future + Send>(_: F) {}
    send(n.connect([0; 32]));
    send(n.listen(k, ServerConfig::default()));
    send(n.lookup([0; 32]));
    send(n.shutdown());
    send(n.swarm(SwarmConfig::new(k.clone())));
}
