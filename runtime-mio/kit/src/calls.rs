//! Completions: the calls waiting for the node ([`Calls`]), and how the node's events answer
//! them. A driver registers a call with the sender its caller waits on, through the channel
//! family it names in its [`Glue`]; [`Calls::handle_event`] answers what an event completes
//! and hands back the events that concern the driver's own connection handles.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};

use hyperdht_proto::{ConnId, Event, Node, QueryId, Record, Reply, RequestId, ServerId, Timestamp};

use crate::error::Error;
use crate::info::QueryOutcome;

/// What a driver plugs into the kit: the channels its callers wait on, its connection handle,
/// and where a server's connections go.
pub trait Glue: Sized + 'static {
    /// A sender of `T`s (`std::sync::mpsc::Sender<T>`, `async_channel::Sender<T>`, ...).
    type Tx<T: Send + 'static>: Send;
    /// The connection handle the driver gives its callers.
    type Connection: Send + 'static;
    /// Where a listening server's events go.
    type ServerTx: Send;

    /// Sends `value` without blocking; `false` if the receiver is gone (or full).
    fn send<T: Send + 'static>(tx: &Self::Tx<T>, value: T) -> bool;

    /// Whether the receiver is gone, where the channel can tell (`false` otherwise): waiters
    /// given up on are forgotten early.
    fn is_closed<T: Send + 'static>(_tx: &Self::Tx<T>) -> bool {
        false
    }

    /// A client's handshake on `server` was accepted; its path is being opened.
    fn incoming(_server: &Self::ServerTx, _conn: ConnId, _remote_public_key: [u8; 32]) {}

    /// An open connection of `server`, for its accepting side.
    fn accept(server: &Self::ServerTx, connection: Self::Connection);
}

/// One item of a record stream.
pub type RecordItem = Result<(SocketAddrV4, Record), Error>;

/// A listen call's answer: the server and the DHT nodes its first announce reached.
pub type Listened = (ServerId, Vec<SocketAddrV4>);

/// Where a query's findings go.
enum QuerySink<G: Glue> {
    /// Collect everything, answer once at the end.
    Collect(QueryOutcome, G::Tx<Result<QueryOutcome, Error>>),
    /// Forward each record as it is found; an error ends the stream.
    Records(G::Tx<RecordItem>),
}

/// The calls waiting for the node, and what the node said about itself so far.
pub struct Calls<G: Glue> {
    requests: HashMap<RequestId, G::Tx<Result<Reply, Error>>>,
    queries: HashMap<QueryId, QuerySink<G>>,
    bootstrap_waiters: Vec<G::Tx<()>>,
    /// Listen calls waiting for their first announce.
    listens: HashMap<ServerId, G::Tx<Result<Listened, Error>>>,
    /// Open servers and where their connections go.
    servers: HashMap<ServerId, G::ServerTx>,
    /// Server-side connections between `Incoming` and `Connected`.
    server_conns: HashMap<ConnId, ServerId>,
    connects: HashMap<ConnId, G::Tx<Result<G::Connection, Error>>>,
    /// Closing servers and who waits for their unannounce.
    closing: HashMap<ServerId, G::Tx<()>>,
    /// Who hears every node-level event.
    subscribers: Vec<G::Tx<Event>>,
    bootstrapped: bool,
    listening: Option<SocketAddr>,
    bind_failed: bool,
    node_closed: bool,
}

impl<G: Glue> Default for Calls<G> {
    fn default() -> Self {
        Calls {
            requests: HashMap::new(),
            queries: HashMap::new(),
            bootstrap_waiters: Vec::new(),
            listens: HashMap::new(),
            servers: HashMap::new(),
            server_conns: HashMap::new(),
            connects: HashMap::new(),
            closing: HashMap::new(),
            subscribers: Vec::new(),
            bootstrapped: false,
            listening: None,
            bind_failed: false,
            node_closed: false,
        }
    }
}

impl<G: Glue> Calls<G> {
    /// Request `id` answers on `tx`.
    pub fn add_request(&mut self, id: RequestId, tx: G::Tx<Result<Reply, Error>>) {
        self.requests.insert(id, tx);
    }

    /// Query `id` answers on `tx` once finished, with everything it found.
    pub fn add_query(&mut self, id: QueryId, tx: G::Tx<Result<QueryOutcome, Error>>) {
        self.queries
            .insert(id, QuerySink::Collect(QueryOutcome::default(), tx));
    }

    /// Query `id` sends each record on `tx` as it is found (a failed walk ends with an `Err`).
    pub fn add_record_stream(&mut self, id: QueryId, tx: G::Tx<RecordItem>) {
        self.queries.insert(id, QuerySink::Records(tx));
    }

    /// `tx` hears when bootstrap is done (at once if it is).
    pub fn wait_bootstrapped(&mut self, tx: G::Tx<()>) {
        if self.bootstrapped {
            G::send(&tx, ());
        } else {
            self.bootstrap_waiters.push(tx);
        }
    }

    /// Server `id` answers the listen call on `tx` after its first announce; its connections
    /// go to `server`.
    pub fn add_listen(
        &mut self,
        id: ServerId,
        tx: G::Tx<Result<Listened, Error>>,
        server: G::ServerTx,
    ) {
        self.servers.insert(id, server);
        self.listens.insert(id, tx);
    }

    /// Connection attempt `id` answers on `tx`.
    pub fn add_connect(&mut self, id: ConnId, tx: G::Tx<Result<G::Connection, Error>>) {
        self.connects.insert(id, tx);
    }

    /// Forgets the connect call of `id`; whether it was still waiting.
    pub fn cancel_connect(&mut self, id: ConnId) -> bool {
        self.connects.remove(&id).is_some()
    }

    /// Forgets server `id`'s listen call and connections; `waiter` (if any) hears when it is
    /// unannounced. Returns where its connections went, for the caller to drop where it likes.
    pub fn close_server(&mut self, id: ServerId, waiter: Option<G::Tx<()>>) -> Option<G::ServerTx> {
        self.listens.remove(&id);
        if let Some(tx) = waiter {
            self.closing.insert(id, tx);
        }
        self.servers.remove(&id)
    }

    /// `tx` hears every node-level event from now on.
    pub fn subscribe(&mut self, tx: G::Tx<Event>) {
        self.subscribers.push(tx);
    }

    /// Whether bootstrap finished.
    pub fn bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    /// The server socket's address, once both DHT sockets are bound.
    pub fn listening(&self) -> Option<SocketAddr> {
        self.listening
    }

    /// Whether a DHT socket could not be bound.
    pub fn bind_failed(&self) -> bool {
        self.bind_failed
    }

    /// Whether the node reported `Event::NodeClosed` (it has shut down).
    pub fn node_closed(&self) -> bool {
        self.node_closed
    }

    /// Answers what `ev` completes. Returns the events about connections, for the driver's
    /// handles: `Connected` (build a handle, then [`Calls::deliver`] it), `Readable`,
    /// `Finished`, `Writable` and `ConnClosed`.
    pub fn handle_event(&mut self, now: Timestamp, node: &mut Node, ev: Event) -> Option<Event> {
        self.subscribers.retain(|s| G::send(s, ev.clone()));
        match ev {
            Event::Listening { server, .. } => self.listening = Some(server),
            Event::BindFailed { socket } => {
                tracing::error!(?socket, "could not bind a DHT socket");
                self.bind_failed = true;
            }
            Event::Bootstrapped => {
                self.bootstrapped = true;
                for tx in self.bootstrap_waiters.drain(..) {
                    G::send(&tx, ());
                }
            }
            Event::RequestDone { id, result } => {
                if let Some(tx) = self.requests.remove(&id) {
                    G::send(&tx, result.map_err(Error::Request));
                }
            }
            Event::QueryReply { id, reply } => {
                if let Some(QuerySink::Collect(out, _)) = self.queries.get_mut(&id) {
                    out.replies.push(reply);
                }
            }
            Event::RecordFound { id, from, record } => self.record_found(id, from, record),
            Event::CommitReply { id, reply } => {
                if let Some(QuerySink::Collect(out, _)) = self.queries.get_mut(&id) {
                    out.commits.push(reply);
                }
            }
            Event::QueryFinished { id, result } => match self.queries.remove(&id) {
                Some(QuerySink::Collect(mut out, tx)) => {
                    let result = result.map(|closest| {
                        out.closest = closest;
                        out
                    });
                    G::send(&tx, result.map_err(Error::Query));
                }
                Some(QuerySink::Records(tx)) => {
                    if let Err(e) = result {
                        G::send(&tx, Err(Error::Query(e)));
                    }
                }
                None => {}
            },
            Event::ServerListening {
                server,
                relay_addresses,
            } => {
                if let Some(tx) = self.listens.remove(&server) {
                    if !G::send(&tx, Ok((server, relay_addresses))) {
                        // The listen call was given up on: nobody will use the server.
                        self.servers.remove(&server);
                        node.close_server(now, server);
                    }
                }
            }
            Event::ServerClosed { server } => {
                if let Some(tx) = self.closing.remove(&server) {
                    G::send(&tx, ());
                }
            }
            Event::Incoming {
                server,
                conn,
                remote_public_key,
            } => {
                self.server_conns.insert(conn, server);
                if let Some(tx) = self.servers.get(&server) {
                    G::incoming(tx, conn, remote_public_key);
                }
            }
            Event::ConnectFailed { conn, reason } => {
                if let Some(tx) = self.connects.remove(&conn) {
                    G::send(&tx, Err(Error::Connect(reason)));
                }
                // An attempt that got as far as a connection leaves it in the node.
                node.conn(conn).remove();
            }
            Event::ConnClosed { conn, .. } => {
                // A server's connection that never opened was never handed out.
                self.server_conns.remove(&conn);
                return Some(ev);
            }
            Event::NodeClosed => self.node_closed = true,
            ev @ (Event::Connected { .. }
            | Event::Readable { .. }
            | Event::Finished { .. }
            | Event::Writable { .. }) => return Some(ev),
            _ => {}
        }
        None
    }

    /// A record for query `id`: collected, or sent down its stream (a stream nobody reads
    /// any more is forgotten; the walk still finishes).
    fn record_found(&mut self, id: QueryId, from: SocketAddrV4, record: Record) {
        let unread = match self.queries.get_mut(&id) {
            Some(QuerySink::Collect(out, _)) => {
                out.records.push((from, record));
                false
            }
            Some(QuerySink::Records(tx)) => !G::send(tx, Ok((from, record))),
            None => false,
        };
        if unread {
            self.queries.remove(&id);
        }
    }

    /// Hands an opened connection to the connect call or server waiting for it; gives it back
    /// if nobody waits (a swarm's, see [`crate::Swarms::stash`]).
    pub fn deliver(&mut self, conn: ConnId, c: G::Connection) -> Option<G::Connection> {
        if let Some(tx) = self.connects.remove(&conn) {
            G::send(&tx, Ok(c));
        } else if let Some(server) = self.server_conns.remove(&conn) {
            if let Some(tx) = self.servers.get(&server) {
                G::accept(tx, c);
            }
        } else {
            return Some(c);
        }
        None
    }
}
