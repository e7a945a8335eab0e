//! # hyperdht-kit
//!
//! The half of a [`hyperdht_proto::Node`] driver that holds no reactor, shared by
//! `hyperdht-mio` (a blocking `mio` loop) and `hyperdht-async-std` (a future over `async-io`),
//! so both agree on names, errors and behaviour. Each driver keeps only its reactor and its
//! channel or future glue; everything else is here:
//!
//! - [`Error`], [`NodeInfo`], [`QueryOutcome`]: what calls answer with.
//! - [`Calls`]: the calls waiting for the node, answered by its events, through the channels a
//!   driver names in its [`Glue`].
//! - [`Swarms`]: the Hyperswarm glue (the swarms see node events first; their connections wait
//!   in a stash until the swarm keeps or drops them).
//! - [`Core`]: the node with its clock, calls, swarms and [`Outbox`], and [`Core::flush`], the
//!   loop that drains socket ops, then transmits, then events, in the order of
//!   `hyperdht-proto`'s run-loop contract, over a driver's [`DatagramIo`].
//! - The socket side: [`udp`] (binding with a large receive buffer, a datagram with its own
//!   TTL) and [`batch`] (`recvmmsg`/`sendmmsg` on Linux, many datagrams per system call).
//!
//! Application code uses a driver, which re-exports what it needs from here.
//!
//! ## A driver in outline
//!
//! ```text
//! loop {
//!     wait for the earliest of core.deadline(), a readable socket, a caller
//!     core.receive(now, id, socket, &mut budget)   // for each readable socket
//!     core.handle_timeout(now)
//!     core.flush(&mut io, |core, event| { /* connection handles */ })
//! }
//! ```

#![warn(missing_docs)]

pub mod batch;
mod calls;
mod core;
mod error;
mod handles;
mod info;
mod io;
mod swarms;
pub mod udp;

pub use crate::core::{complete_config, ConnEvent, Core, ReadStop, RECV_BUDGET};
pub use calls::{Calls, Glue, Listened, RecordItem};
pub use error::{random_seed, Error};
pub use handles::{ConnMeta, ServerMeta};
pub use info::{NodeInfo, QueryOutcome};
pub use io::{DatagramIo, Outbox};
pub use swarms::{SwarmConnection, SwarmSlot, Swarms};

#[doc(hidden)]
pub use hyperdht_proto as proto;

use hyperdht_proto::KeyPair;

/// Formats a swarm handle for `Debug`: its public key in hex, nothing of its state.
pub fn fmt_swarm(f: &mut std::fmt::Formatter<'_>, public_key: &[u8; 32]) -> std::fmt::Result {
    f.debug_struct("Swarm")
        .field("public_key", &hyperdht_proto::to_hex(public_key))
        .finish_non_exhaustive()
}

/// A new random key pair from the OS random source (JS `DHT.keyPair()`); for a key pair from a
/// seed, [`KeyPair::from_seed`].
pub fn random_key_pair() -> Result<KeyPair, Error> {
    Ok(KeyPair::from_seed(&random_seed()?))
}
