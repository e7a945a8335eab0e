//! # hyperdht-mio
//!
//! A blocking driver for [`hyperdht_proto::Node`] on a single-threaded `mio` event loop.
//!
//! [`MioNode::spawn`] starts a thread that owns the node and its UDP sockets and follows the
//! run-loop contract of `hyperdht-proto`: wait for the earliest of the node's deadline, a
//! readable socket or a command from a handle; feed datagrams (read up to 32 per system call,
//! in bounded rounds) and timeouts in with one `now`; then bind/close sockets, send datagrams
//! up to 32 per system call until the kernel would block (keeping the unsent ones for later),
//! and dispatch events. The handle's methods block the calling thread until the node answers;
//! connection writes are pipelined (see [`ConnWriter`]).
//!
//! No protocol logic lives here.

#![warn(missing_docs)]

pub mod batch;
mod conn;
mod driver;
mod resolve;

pub use conn::{ConnReader, ConnWriter};
pub use driver::{Connection, Error, MioNode, NodeInfo, QueryOutcome, Server, ServerEvent};
pub use resolve::{parse_bootstrap_list, resolve_bootstrap};
