//! # hyperdht-proto
//!
//! A sans-IO implementation of HyperDHT, the peer-to-peer stack behind Holepunch's Pear and
//! Keet, speaking the same bytes as the Node.js `hyperdht` 6.34 / `dht-rpc` 6.27 packages.
//!
//! Nothing in this crate touches a socket, a clock, the OS random source or a thread. A
//! [`Node`] is driven from outside:
//!
//! ```text
//! Node::new(config, seed, now)
//! handle_datagram(now, socket, from, bytes)   // world -> engine; never fails
//! backpressure()                              // Some(queue) while one is full
//! handle_timeout(now)
//! handle_socket_bound(now, socket, addr) / handle_socket_failed(now, socket)
//! find_node / query / ping / request / ...    // application -> engine
//! poll_socket_op / poll_transmit / poll_event // engine -> world, drained until None
//! poll_timeout                                // the next deadline
//! ```
//!
//! ## Run-loop contract
//! 1. Wait for the earliest of [`Node::poll_timeout`], a readable socket, a writable socket
//!    (only while transmits wait for one), or an application command.
//! 2. Apply the inputs with one `now` (never earlier than the last one): datagrams through
//!    [`Node::handle_datagram`], a datagram cut by a too-small receive buffer through
//!    [`Node::handle_oversized_datagram`] (never decode a cut datagram), bind results
//!    through [`Node::handle_socket_bound`] / [`Node::handle_socket_failed`], then
//!    [`Node::handle_timeout`] (calling it early is harmless).
//! 3. Drain [`Node::poll_socket_op`], then [`Node::poll_transmit`], then [`Node::poll_event`],
//!    each until `None`. Socket ops come first: a transmit may need the socket a `Bind` opens,
//!    and a `Close` is queued only after the transmits of that socket. A socket that would
//!    block keeps the rest of the transmits queued; nothing is lost, send them once it is
//!    writable.
//! 4. Read [`Node::poll_timeout`] last: the earliest timer deadline (queued output does not
//!    move it; after step 3 nothing is queued), `None` once the node is closed.
//! 5. Connections are read and written through [`Node::conn`] whenever
//!    [`Event::Readable`] / [`Event::Writable`] say so; a closed connection is forgotten by the
//!    node itself ([`CLOSED_LINGER`] at most).
//!
//! ## Backpressure
//! The node's output queues are bounded by [`Config::max_queued_output`] entries each. While
//! one is full, [`Node::backpressure`] names it and [`Node::handle_datagram`] refuses
//! datagrams (counted in [`Dropped::backpressure`]): a driver that stops draining cannot make
//! the node grow without bound on what the network sends. Nothing already queued is dropped,
//! and timers and application commands still run (their output is bounded by the node's own
//! tables). A driver checks [`Node::backpressure`] before feeding more datagrams: while it is
//! `Some`, drain the named queue first (or, with a socket that takes no more, stop reading
//! until it does: what it would feed is refused anyway). A driver that drains fully every
//! turn never sees it.
//!
//! ## Public surface
//! The API is the crate root ([`Node`], its configuration, commands, events, errors, ids and
//! the values they carry) and three modules: [`swarm`] (Hyperswarm on top of a node),
//! [`protomux`] (channels over one connection's messages) and [`commands`] (dht-rpc command
//! numbers for [`RequestSpec`]). Everything else (codecs, Noise, secret-stream, UDX, routing,
//! holepunching) is internal.
//!
//! The `unstable` cargo feature makes those internal modules public (`wire`, `noise`,
//! `secretstream`, `stream`, `dht`, ...) for the simulator, the fuzz targets and the
//! byte-vector tests. It comes with **no semver promise**: what it exposes may change in any
//! release, patch releases included. Applications and drivers should not enable it.
//!
//! ## A blocking loop in a few lines
//! ```
//! use hyperdht_proto::{Config, Node, SocketOp, Timestamp, Event};
//! use std::net::SocketAddr;
//!
//! let mut node = Node::new(Config::bootstrapper("127.0.0.1:49737".parse().unwrap()), [7; 32], Timestamp::ZERO);
//! // The driver binds what the node asks for and reports back.
//! while let Some(op) = node.poll_socket_op() {
//!     if let SocketOp::Bind { socket, addr } = op {
//!         let port = if addr.port() == 0 { 40000 } else { addr.port() };
//!         let bound = SocketAddr::new((*addr.ip()).into(), port);
//!         node.handle_socket_bound(Timestamp::ZERO, socket, bound);
//!     }
//! }
//! // ... send every `poll_transmit()`, feed received datagrams to `handle_datagram`,
//! // and call `handle_timeout` at `poll_timeout()`.
//! let mut events = Vec::new();
//! while let Some(e) = node.poll_event() { events.push(e); }
//! assert!(matches!(events[0], Event::Listening { .. }));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Declares internal modules: private, or `pub` with the `unstable` feature (no semver
/// promise; for the simulator, the fuzz targets and the byte-vector tests). Without the
/// feature, the items and re-exports only those users need are unused here: `dead_code` and
/// `unused_imports` are allowed for them.
macro_rules! unstable_mod {
    ($($(#[$attr:meta])* $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "unstable")]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "unstable"))]
        #[allow(dead_code, unused_imports)]
        mod $name;
    )*};
}

pub mod commands;
mod connection;
mod node;
pub mod protomux;
pub mod swarm;

unstable_mod! {
    config;
    crypto;
    dht;
    error;
    event;
    holepunch;
    ids;
    noise;
    query;
    rng;
    routing;
    rpc;
    secretstream;
    stats;
    stream;
    time;
    wire;
}

pub use config::{
    public_bootstrap, Config, Persistence, DEFAULT_MAX_CONNECTIONS_PER_SERVER,
    DEFAULT_MAX_QUEUED_OUTPUT, DEFAULT_PORT, MAX_PENDING_REPLIES, PUBLIC_BOOTSTRAP,
    SOCKET_RECV_BUFFER,
};
pub use crypto::{from_hex, hash, to_hex};
pub use dht::{KeyPair, StoreLimits};
pub use error::{ApiError, DecodeError, QueryError, RequestError};
pub use event::{Backpressure, Event, Record, Reply, SocketOp, Transmit};
pub use ids::{ConnId, NodeId, QueryId, RequestId, ServerId, SocketId};
pub use node::{
    AcceptPolicy, Conn, ConnCloseReason, ConnError, ConnInfo, ConnectError, ConnectOptions,
    IncomingHandshake, Node, QuerySpec, RequestSpec, ServerConfig, CLOSED_LINGER,
    MAX_PENDING_OUTPUT, MAX_UNREAD_INPUT,
};
pub use routing::{RoutingTable, TableNode};
pub use rpc::HealthState;
pub use secretstream::{SecretStreamError, MAX_MESSAGE};
pub use stats::{Dropped, Relaying, Stats};
pub use stream::{CloseReason as StreamCloseReason, StreamInfo, StreamStats};
pub use time::Timestamp;
pub use wire::hyperdht::{MutableRecord, Peer};
