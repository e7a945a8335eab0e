//! # hyperdht-mio
//!
//! A blocking driver for [`hyperdht_proto::Node`] on a single-threaded `mio` event loop.
//!
//! [`MioNode::spawn`] starts a thread that owns the node and its UDP sockets and follows the
//! run-loop contract of `hyperdht-proto`: wait for the earliest of the node's deadline, a
//! readable socket or a command from a handle; feed datagrams (in bounded batches) and timeouts
//! in with one `now`; then bind/close sockets, send datagrams until the kernel would block
//! (keeping the one unsent datagram for later), and dispatch events. The handle's methods block
//! the calling thread until the node answers.
//!
//! No protocol logic lives here.

pub mod batch;
mod conn;
mod driver;
mod resolve;

pub use conn::{ConnReader, ConnWriter};
pub use driver::{Connection, Error, MioNode, NodeInfo, QueryOutcome, Server, ServerEvent};
pub use resolve::{parse_bootstrap_list, resolve_bootstrap};
