//! # hyperdht-async-std
//!
//! An async driver for the sans-IO [`hyperdht_proto::Node`], built on `async-io` (UDP sockets
//! and a timer) and the `futures-io` traits, so it runs under async-std, smol, or any executor
//! that polls futures.
//!
//! [`bind`] creates the node, binds its two UDP sockets and returns a cloneable [`AsyncNode`]
//! handle and the [`Driver`] future. Spawn the driver; use the handle. The JS API a Pear
//! developer knows, `new DHT()`, `DHT.keyPair()`, `server.listen(keyPair)`,
//! `dht.connect(publicKey)`, is [`bind`] with [`Config::default()`] (the public network),
//! [`random_key_pair`], [`AsyncNode::listen`] and [`AsyncNode::connect`]. Here on a private
//! network on 127.0.0.1, started by a bootstrapper:
//!
//! ```
//! use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
//! use hyperdht_async_std::{random_key_pair, Config, ServerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! async_std::task::block_on(async {
//!     // A new network: its first node, on any free port of 127.0.0.1.
//!     let (boot, driver) = hyperdht_async_std::bind(Config::bootstrapper("127.0.0.1:0".parse()?)).await?;
//!     async_std::task::spawn(driver);
//!     let std::net::SocketAddr::V4(boot_addr) = boot.local_addr() else { unreachable!() };
//!     let (server_node, driver) = hyperdht_async_std::bind(Config::local(vec![boot_addr])).await?;
//!     async_std::task::spawn(driver);
//!     let (client_node, driver) = hyperdht_async_std::bind(Config::local(vec![boot_addr])).await?;
//!     async_std::task::spawn(driver);
//!     server_node.wait_bootstrapped().await?;
//!     client_node.wait_bootstrapped().await?;
//!
//!     // A server: a stream of incoming connections.
//!     let key = random_key_pair()?;
//!     let mut server = server_node.listen(&key, ServerConfig::default()).await?;
//!     async_std::task::spawn(async move {
//!         while let Some(conn) = server.next().await {
//!             async_std::task::spawn(async move {
//!                 // Echo until the client finishes, then finish our side.
//!                 let _ = futures_lite::io::copy(&conn, &mut &conn).await;
//!                 let _ = (&conn).close().await;
//!             });
//!         }
//!     });
//!
//!     // A client: connect by public key (as the node's default key pair); connections are
//!     // `AsyncRead + AsyncWrite`.
//!     let mut conn = client_node.connect(key.public_key()).await?;
//!     conn.write_all(b"hello").await?;
//!     conn.close().await?; // the peer reads EOF; we can still read
//!     let mut echoed = Vec::new();
//!     conn.read_to_end(&mut echoed).await?;
//!     assert_eq!(echoed, b"hello");
//!     Ok(())
//! })
//! # }
//! ```
//!
//! ## Hyperswarm
//!
//! [`AsyncNode::swarm`] starts a [`Swarm`] (JS `new Hyperswarm({ dht })`) on the node: join
//! topics with [`Swarm::join`] and take the one connection it keeps per peer from the swarm, a
//! stream of [`SwarmConnection`]s (see [`Swarm`] for an example).
//!
//! ## Runtimes
//!
//! The driver and every handle are plain futures over `async-io` (which runs its own reactor
//! thread), so they run on any executor: async-std (`async_std::task::spawn(driver)`, above),
//! smol (`smol::spawn(driver).detach()`), and tokio (`tokio::spawn(driver)`; a
//! [`Connection`] implements the `futures-io` traits, which `tokio_util::compat` turns into
//! tokio's `AsyncRead`/`AsyncWrite`). `tests/runtimes.rs` runs the same echo under all three.
//! async-std itself is discontinued upstream; nothing here depends on it outside the tests.
//!
//! ## How the driver runs the node
//!
//! The [`Driver`] follows the run-loop contract of `hyperdht-proto`: it wakes for the earliest
//! of [`hyperdht_proto::Node::poll_timeout`], a readable socket, or a call from a handle;
//! applies the inputs with one `now` (a monotonic clock since the node was created), reading at
//! most 256 datagrams per socket before other tasks get a turn; then binds and closes the
//! sockets the node asks for (holepunch sockets included), sends datagrams until the kernel
//! would block (keeping the unsent ones until their socket is writable), with the IP TTL a
//! datagram asks for, and dispatches events to the calls and connections waiting for them.
//! No protocol logic lives here, and only the reactor and the future glue: the error type, the
//! completions, the flush loop, the batched socket I/O (`recvmmsg`/`sendmmsg` on Linux) and
//! the swarm glue are `hyperdht-kit`'s, shared with `hyperdht-mio`.
//!
//! The node lives behind one lock shared by the driver and the handles: a call applies its
//! command at once and waits for the answer on a channel; a connection reads and writes the
//! node's buffers directly and waits for the node's `Readable` / `Writable` events when it
//! would block, so a slow writer is held back by the connection's send window.
//!
//! ## The echo example
//!
//! `examples/echo.rs` runs an echo server and client:
//!
//! ```text
//! # everything in one process, on a private network on 127.0.0.1:
//! cargo run -p hyperdht-async-std --example echo -- local
//!
//! # a server on the public DHT; prints its public key:
//! cargo run -p hyperdht-async-std --example echo -- server [--seed HEX32]
//! # a client: sends stdin, prints what comes back:
//! echo hello | cargo run -p hyperdht-async-std --example echo -- client PUBLIC_KEY_HEX
//! ```
//!
//! `--bootstrap HOST:PORT[,HOST:PORT...]` picks other bootstrap nodes for `server` and
//! `client` (for example a network started with `hyperdht-chat`'s `--local`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod driver;
mod node;
mod shared;
mod swarm;

pub use conn::Connection;
pub use driver::Driver;
pub use hyperdht_kit::{random_key_pair, Error, NodeInfo, QueryOutcome};
pub use hyperdht_proto::swarm::{JoinOptions, PeerInfo, SwarmConfig, SwarmInfo};
pub use hyperdht_proto::KeyPair;
pub use hyperdht_proto::{Config, ConnectOptions, ServerConfig};
pub use node::{bind, bind_with_seed, AsyncNode, Records, Server};
pub use swarm::{Swarm, SwarmConnection};
