//! What the engine tells the application ([`Event`], drained with `Node::poll_event`) and the
//! world ([`Transmit`], [`SocketOp`]), and which of those queues is full ([`Backpressure`]).

use core::time::Duration;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::error::{QueryError, RequestError};
use crate::ids::{ConnId, NodeId, QueryId, RequestId, ServerId, SocketId};
use crate::rpc::HealthState;
use crate::wire::hyperdht::{MutableRecord, Peer};

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The socket to send from.
    pub socket: SocketId,
    /// Where to.
    pub dst: SocketAddr,
    /// IP TTL for this datagram (holepunch probes); `None` = the socket's default.
    pub ttl: Option<u8>,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// Which of the node's output queues is full ([`Node::backpressure`](crate::Node::backpressure)):
/// the node refuses datagrams until the driver drains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backpressure {
    /// Datagrams to send: drain [`Node::poll_transmit`](crate::Node::poll_transmit).
    Transmits,
    /// Events: drain [`Node::poll_event`](crate::Node::poll_event).
    Events,
    /// Socket binds and closes: drain [`Node::poll_socket_op`](crate::Node::poll_socket_op).
    SocketOps,
}

/// A socket the driver must bind or close.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketOp {
    /// Bind `socket` to `addr` (port 0 = any), then call `handle_socket_bound` or
    /// `handle_socket_failed`.
    Bind {
        /// Which socket.
        socket: SocketId,
        /// Local address to bind.
        addr: SocketAddrV4,
    },
    /// Close `socket`.
    Close {
        /// Which socket.
        socket: SocketId,
    },
}

/// A decoded response to one of our requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Transaction id.
    pub tid: u16,
    /// Who answered (the UDP source).
    pub from: SocketAddrV4,
    /// The responder's id, if it sent one that matches its address.
    pub id: Option<NodeId>,
    /// Our address as the responder saw it.
    pub to: SocketAddrV4,
    /// A token for commands that need one.
    pub token: Option<[u8; 32]>,
    /// Nodes closer to the target.
    pub closer_nodes: Vec<SocketAddrV4>,
    /// Error code (0 = OK).
    pub error: u64,
    /// Reply value.
    pub value: Option<Vec<u8>>,
    /// Time from the first transmission to this reply.
    pub rtt: Duration,
}

/// Something the application should know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Both sockets are bound.
    Listening {
        /// The server socket's local address.
        server: SocketAddr,
        /// The client socket's local address.
        client: SocketAddr,
    },
    /// A socket could not be bound on any allowed port; the node cannot run.
    BindFailed {
        /// Which socket.
        socket: SocketId,
    },
    /// The bootstrap walk (and the network checks it triggers) finished.
    Bootstrapped,
    /// The node proved it is reachable and now serves others as a persistent node.
    Persistent {
        /// Its id: `H(public address)`.
        id: NodeId,
    },
    /// The node went back to ephemeral (after a wake-up).
    Ephemeral,
    /// The NAT sampler changed its view of our public address.
    NatUpdate {
        /// Public host, if agreed.
        host: Option<Ipv4Addr>,
        /// Public port (0 if unknown or randomised).
        port: u16,
    },
    /// Network health changed.
    Health(HealthState),
    /// A request finished.
    RequestDone {
        /// Which.
        id: RequestId,
        /// The reply, or why there is none.
        result: Result<Reply, RequestError>,
    },
    /// A query got a reply without error.
    QueryReply {
        /// Which query.
        id: QueryId,
        /// The reply.
        reply: Reply,
    },
    /// A query finished.
    QueryFinished {
        /// Which query.
        id: QueryId,
        /// The closest replies (at most k, closest first), or why it failed.
        result: Result<Vec<Reply>, QueryError>,
    },
    /// A record query found a valid record (hash and signature already checked).
    RecordFound {
        /// Which query.
        id: QueryId,
        /// The node that stored it.
        from: SocketAddrV4,
        /// The record.
        record: Record,
    },
    /// A node answered a commit request (ANNOUNCE, UNANNOUNCE, a put): `reply.error` carries
    /// its verdict (0, or SEQ_REUSED / SEQ_TOO_LOW for mutable puts).
    CommitReply {
        /// Which query.
        id: QueryId,
        /// The reply.
        reply: Reply,
    },
    /// A server finished its first announce and can be reached.
    ServerListening {
        /// Which server.
        server: ServerId,
        /// The DHT nodes it announced to (and its own address when reachable).
        relay_addresses: Vec<SocketAddrV4>,
    },
    /// A closed server finished unannouncing itself from its relays.
    ServerClosed {
        /// Which server.
        server: ServerId,
    },
    /// A server accepted a client's handshake; [`Event::Connected`] follows once the path is
    /// open.
    Incoming {
        /// Which server.
        server: ServerId,
        /// The new connection.
        conn: ConnId,
        /// The client's public key.
        remote_public_key: [u8; 32],
    },
    /// A connection is open: its handshake is authenticated, its path works and the peer's
    /// secret-stream header arrived. Read and write it through [`crate::Node::conn`].
    Connected {
        /// Which connection.
        conn: ConnId,
        /// Our socket for the path.
        socket: SocketId,
        /// The peer's address on the path.
        remote: SocketAddr,
        /// The peer's public key (authenticated by the Noise handshake).
        remote_public_key: [u8; 32],
        /// Whether we opened the connection (the client side; JS `isInitiator`).
        is_initiator: bool,
        /// The Noise handshake hash, the same at both ends (JS `handshakeHash`: what
        /// hypercore binds its capabilities to). The session keys stay inside the node.
        handshake_hash: [u8; 64],
    },
    /// A connection has bytes to read ([`crate::Conn::read`] until `Blocked`).
    Readable {
        /// Which connection.
        conn: ConnId,
    },
    /// A connection that blocked a write can take more.
    Writable {
        /// Which connection.
        conn: ConnId,
    },
    /// The peer finished its side: after the buffered bytes, [`crate::Conn::read`] returns `Ok(0)`.
    Finished {
        /// Which connection.
        conn: ConnId,
    },
    /// A connection closed.
    ConnClosed {
        /// Which connection.
        conn: ConnId,
        /// Why.
        reason: crate::node::ConnCloseReason,
    },
    /// A connection attempt failed.
    ConnectFailed {
        /// Which connection.
        conn: ConnId,
        /// Why.
        reason: crate::node::ConnectError,
    },
    /// The node was shut down; all sockets are closed (the connection and server
    /// equivalents are [`Event::ConnClosed`] and [`Event::ServerClosed`]).
    NodeClosed,
}

/// A record found by a record query.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// A server's peer record (FIND_PEER).
    Peer(Peer),
    /// The peers announced on a topic at one node (LOOKUP).
    Lookup {
        /// Announced peers.
        peers: Vec<Peer>,
        /// The topic's bump.
        bump: u64,
    },
    /// A signed mutable value.
    Mutable(MutableRecord),
    /// An immutable value.
    Immutable(Vec<u8>),
}
