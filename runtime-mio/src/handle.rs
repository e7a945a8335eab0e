//! [`MioNode`]: the blocking handle to a node running on its own thread, and the commands it
//! sends that thread.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use hyperdht_kit::{random_seed, Error, Listened, NodeInfo, QueryOutcome, ServerMeta, SwarmSlot};
use hyperdht_proto::swarm::SwarmConfig;
use hyperdht_proto::{
    Config, ConnId, ConnectOptions, Event, KeyPair, MutableRecord, Node, NodeId, QueryId,
    QuerySpec, Reply, RequestSpec, ServerConfig, ServerId, Timestamp,
};
use mio::{Poll, Waker};

use crate::conn::{Connection, Outgoing, WriteTicket};
use crate::driver::{Loop, Std, WAKER};
use crate::server::{Server, ServerEvent};
use crate::swarm::{Swarm, SwarmConnection};

/// Starts a query on the node (run on the driver thread).
pub(crate) type StartQuery = Box<dyn FnOnce(&mut Node, Timestamp) -> QueryId + Send>;

pub(crate) enum Command {
    Request(SocketAddrV4, RequestSpec, Sender<Result<Reply, Error>>),
    Query(StartQuery, Sender<Result<QueryOutcome, Error>>),
    WaitBootstrapped(Sender<()>),
    Info(Sender<NodeInfo>),
    Subscribe(Sender<Event>),
    /// A server (`None`: a blind relay, see [`MioNode::serve_blind_relay`]).
    Listen(
        KeyPair,
        Option<ServerConfig>,
        Sender<Result<Listened, Error>>,
        Sender<ServerEvent>,
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
    /// A new swarm on the node, its connections to the first sender; its id to the second.
    NewSwarm(SwarmConfig, [u8; 32], Sender<SwarmConnection>, Sender<u64>),
    /// A call on a swarm (see `Swarm::call`).
    Swarm(u64, SwarmCall),
    /// Forget a destroyed swarm.
    SwarmDrop(u64),
    Shutdown,
}

/// A call run on the loop thread with the swarm and the node.
pub(crate) type SwarmCall = Box<dyn FnOnce(&mut SwarmSlot<Std>, &mut Node, Timestamp) + Send>;

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
        Self::spawn_with_seed(config, random_seed()?)
    }

    /// Like [`MioNode::spawn`] with a fixed seed (reproducible ids and tids, for tests).
    ///
    /// Fills in [`Config::local_addresses`] (the interface of the default route) and
    /// [`Config::unix_ms_at_zero`] (the wall clock) when they are unset.
    pub fn spawn_with_seed(config: Config, seed: [u8; 32]) -> Result<MioNode, Error> {
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
                lp.set_handle(inner_rx.recv().ok().map(|a| Arc::downgrade(&a)));
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
        rx.recv().map_err(|_| Error::Closed)
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
        let target = hyperdht_proto::hash(value);
        let value = value.to_vec();
        let out = self.run_query(Box::new(move |n, now| n.immutable_put(now, &value)))?;
        Ok((target, out))
    }

    /// Fetches an immutable value by hash (the first value that hashes right).
    pub fn immutable_get(&self, target: [u8; 32]) -> Result<Option<Vec<u8>>, Error> {
        let out = self.run_query(Box::new(move |n, now| n.immutable_get(now, &target)))?;
        Ok(out.first_immutable())
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
        Ok(out.highest_mutable())
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
        let (events_tx, events) = mpsc::channel();
        self.inner
            .send(Command::Listen(key.clone(), config, tx, events_tx))?;
        let (id, relay_addresses) = rx.recv().map_err(|_| Error::Closed)??;
        let meta = ServerMeta {
            id,
            public_key: key.public_key(),
            relay_addresses,
        };
        Ok(Server::new(self.inner.clone(), meta, events))
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
        let seed = random_seed()?;
        let public_key = config.key_pair.public_key();
        let (tx, connections) = mpsc::channel();
        let (id_tx, id_rx) = mpsc::channel();
        self.inner
            .send(Command::NewSwarm(config, seed, tx, id_tx))?;
        let id = id_rx.recv().map_err(|_| Error::Closed)?;
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
