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
//! No protocol logic lives here, and only the reactor and the channel glue: the error type,
//! the completions, the flush loop, the batched socket I/O and the swarm glue are
//! `hyperdht-kit`'s, shared with `hyperdht-async-std`.
//!
//! ## Example: a server and a client by key
//!
//! The JS API a Pear developer knows, `new DHT()`, `DHT.keyPair()`, `dht.createServer()`,
//! `server.listen(keyPair)`, `dht.connect(publicKey)`, is [`MioNode::spawn`] with
//! [`Config::default()`] (the public network), [`random_key_pair`], [`MioNode::listen`] and
//! [`MioNode::connect`]. Here on a private network on 127.0.0.1, started by a bootstrapper:
//!
//! ```
//! use std::io::{Read, Write};
//! use hyperdht_mio::{random_key_pair, Config, MioNode, ServerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A new network: its first node, on any free port of 127.0.0.1.
//! let boot = MioNode::spawn(Config::bootstrapper("127.0.0.1:0".parse()?))?;
//! let boot_addr = match boot.local_addr() {
//!     std::net::SocketAddr::V4(a) => a,
//!     _ => unreachable!("nodes bind IPv4"),
//! };
//! let server_node = MioNode::spawn(Config::local(vec![boot_addr]))?;
//! let client_node = MioNode::spawn(Config::local(vec![boot_addr]))?;
//! server_node.wait_bootstrapped()?;
//! client_node.wait_bootstrapped()?;
//!
//! // A server: listen with a key pair, accept connections.
//! let key = random_key_pair()?;
//! let server = server_node.listen(&key, ServerConfig::default())?;
//! let echo = std::thread::spawn(move || {
//!     let mut conn = server.accept().expect("a connection");
//!     let mut line = [0u8; 5];
//!     conn.reader.read_exact(&mut line).unwrap();
//!     conn.writer.write_all(&line).unwrap();
//!     conn.writer.finish().unwrap();
//! });
//!
//! // A client: connect by public key (as the node's default key pair).
//! let mut conn = client_node.connect(key.public_key())?;
//! conn.writer.write_all(b"hello")?;
//! let mut back = Vec::new();
//! conn.reader.read_to_end(&mut back)?;
//! assert_eq!(back, b"hello");
//! echo.join().unwrap();
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod conn;
mod conns;
mod driver;
mod handle;
mod resolve;
mod server;
mod swarm;

pub use conn::{ConnReader, ConnWriter, Connection};
pub use handle::MioNode;
/// Batched UDP I/O (`recvmmsg`/`sendmmsg` on Linux), from `hyperdht-kit`.
pub use hyperdht_kit::batch;
pub use hyperdht_kit::{random_key_pair, Error, NodeInfo, QueryOutcome};
pub use hyperdht_proto::swarm::{JoinOptions, PeerInfo, SwarmConfig, SwarmInfo};
pub use hyperdht_proto::KeyPair;
pub use hyperdht_proto::{Config, ConnectOptions, ServerConfig};
pub use resolve::{parse_bootstrap_list, resolve_bootstrap};
pub use server::{Server, ServerEvent};
pub use swarm::{Swarm, SwarmConnection};
