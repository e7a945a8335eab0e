//! The application's side: [`bind`], the cloneable [`AsyncNode`] handle, [`Server`] and
//! [`Records`].

use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_channel::Receiver;
use futures_lite::Stream;
use hyperdht_kit::{random_seed, Error, NodeInfo, QueryOutcome, RecordItem, ServerMeta};
use hyperdht_proto::{
    Config, ConnectOptions, KeyPair, MutableRecord, Node, NodeId, QueryId, QuerySpec, Record,
    Reply, RequestSpec, ServerConfig, Timestamp,
};

use crate::conn::Connection;
use crate::driver::Driver;
use crate::shared::{Deferred, HandleRef, State};
use crate::swarm::Swarm;
use hyperdht_proto::swarm::SwarmConfig;

/// How long [`Server::close`] waits for the server's relays to confirm the unannounce.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Binds a node with `config`, seeded from the OS, and returns its handle and its driver.
///
/// The node's two UDP sockets are bound before this returns; nothing else happens until the
/// driver runs: spawn it on any executor (`async_std::task::spawn(driver)`,
/// `smol::spawn(driver).detach()`), then use the handle. Bootstrap goes on in the background
/// (see [`AsyncNode::wait_bootstrapped`]).
pub async fn bind(config: Config) -> Result<(AsyncNode, Driver), Error> {
    bind_with_seed(config, random_seed()?).await
}

/// Like [`bind`] with a fixed seed (reproducible ids and transaction ids, for tests).
///
/// Fills in [`Config::local_addresses`] (the interface of the default route) and
/// [`Config::unix_ms_at_zero`] (the wall clock) when they are unset.
pub async fn bind_with_seed(config: Config, seed: [u8; 32]) -> Result<(AsyncNode, Driver), Error> {
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
            let now = st.core.now();
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
        Ok(st.core.info())
    }

    /// Runs `f` with the node itself, under the driver's lock, for what this handle does not
    /// wrap (`add_node`, `refresh`, counters, ...). Keep it short, and do not drain the node's
    /// outputs (`poll_*`): the driver sends and dispatches them when `f` returns. Events of
    /// queries or requests started here are not reported to anyone.
    pub fn with_node<T>(&self, f: impl FnOnce(&mut Node, Timestamp) -> T) -> Result<T, Error> {
        self.call(|st, now| f(&mut st.core.node, now))
    }

    /// Waits until bootstrap has finished.
    pub async fn wait_bootstrapped(&self) -> Result<(), Error> {
        let (tx, rx) = async_channel::bounded(1);
        self.call(|st, _| st.core.calls.wait_bootstrapped(tx))?;
        rx.recv().await.map_err(|_| Error::Closed)
    }

    /// Sends one request and waits for its reply.
    pub async fn request(&self, to: SocketAddrV4, spec: RequestSpec) -> Result<Reply, Error> {
        let (tx, rx) = async_channel::bounded(1);
        self.call(|st, now| st.core.request(now, to, spec, tx))?;
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
        self.call(|st, now| st.core.query(now, start, tx))?;
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
            st.core
                .record_stream(now, |n, now| n.lookup(now, &topic), tx)
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
        let target = hyperdht_proto::hash(value);
        let out = self.run_query(|n, now| n.immutable_put(now, value)).await?;
        Ok((target, out))
    }

    /// Fetches an immutable value by hash (the first value found; values are checked against
    /// the hash).
    pub async fn immutable_get(&self, target: [u8; 32]) -> Result<Option<Vec<u8>>, Error> {
        let out = self
            .run_query(|n, now| n.immutable_get(now, &target))
            .await?;
        Ok(out.first_immutable())
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
        Ok(out.highest_mutable())
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
        let (incoming_tx, incoming) = async_channel::bounded(crate::driver::ACCEPT_BACKLOG);
        let id = self
            .call(|st, now| st.core.listen(now, key, config, tx, incoming_tx))?
            .map_err(Error::Api)?;
        // Dropped before the first announce: the driver closes the server.
        let guard = Guard::new(&self.shared, Deferred::CloseServer(id));
        let (_, relay_addresses) = rx.recv().await.map_err(|_| Error::Closed)??;
        guard.disarm();
        Ok(Server {
            shared: self.shared.clone(),
            meta: ServerMeta {
                id,
                public_key: key.public_key(),
                relay_addresses,
            },
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
        let id = self.call(|st, now| st.core.connect(now, &remote_public_key, options, tx))?;
        let guard = Guard::new(&self.shared, Deferred::CancelConnect(id));
        let r = rx.recv().await.map_err(|_| Error::Closed)?;
        guard.disarm();
        r
    }

    /// Shuts the node down (pending calls fail with [`Error::Closed`], sockets close, open
    /// connections stop moving) and waits until the driver has finished (the driver must be
    /// running).
    pub async fn shutdown(&self) {
        let _ = self.call(|st, now| st.core.shutdown(now));
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
    meta: ServerMeta,
    incoming: Pin<Box<Receiver<Connection>>>,
    closed: AtomicBool,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl Server {
    hyperdht_kit::server_accessors!(meta);

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
        let r = {
            let mut st = self.shared.lock();
            if st.closed {
                None
            } else {
                let now = st.core.now();
                st.core.close_server(now, self.meta.id, Some(tx))
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
            self.shared.defer(Deferred::CloseServer(self.meta.id));
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
