//! # hyperdht-async-std
//!
//! An async driver for the sans-IO [`hyperdht_proto::Node`], built on `async-io` (UDP sockets
//! and a timer) and the `futures-io` traits, so it runs under async-std, smol, or any executor
//! that polls futures.
//!
//! [`bind`] creates the node, binds its two UDP sockets and returns a cloneable [`AsyncNode`]
//! handle and the [`Driver`] future. Spawn the driver; use the handle:
//!
//! ```no_run
//! use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
//! use hyperdht_proto::dht::KeyPair;
//! use hyperdht_proto::{Config, ServerConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bootstrap = vec!["88.99.3.86:49737".parse()?];
//! let (node, driver) = hyperdht_async_std::bind(Config::new(bootstrap)).await?;
//! async_std::task::spawn(driver);
//! node.wait_bootstrapped().await?;
//!
//! // A server: a stream of incoming connections.
//! let key = KeyPair::from_seed(&[1; 32]);
//! let mut server = node.listen(&key, ServerConfig::default()).await?;
//! async_std::task::spawn(async move {
//!     while let Some(conn) = server.next().await {
//!         async_std::task::spawn(async move {
//!             // Echo until the client finishes, then finish our side.
//!             let _ = futures_lite::io::copy(&conn, &mut &conn).await;
//!             let _ = (&conn).close().await;
//!         });
//!     }
//! });
//!
//! // A client: connections are `AsyncRead + AsyncWrite`.
//! let mut conn = node.connect(key.public_key(), &KeyPair::from_seed(&[2; 32])).await?;
//! conn.write_all(b"hello").await?;
//! conn.close().await?; // the peer reads EOF; we can still read
//! let mut echoed = Vec::new();
//! conn.read_to_end(&mut echoed).await?;
//! assert_eq!(echoed, b"hello");
//! # Ok(())
//! # }
//! ```
//!
//! ## How the driver runs the node
//!
//! The [`Driver`] follows the run-loop contract of `hyperdht-proto`: it wakes for the earliest
//! of [`hyperdht_proto::Node::poll_timeout`], a readable socket, or a call from a handle;
//! applies the inputs with one `now` (a monotonic clock since the node was created), reading at
//! most 256 datagrams per socket before other tasks get a turn; then binds and closes the
//! sockets the node asks for (holepunch sockets included), sends datagrams until the kernel
//! would block (keeping the one unsent datagram until its socket is writable), with the IP TTL
//! a datagram asks for, and dispatches events to the calls and connections waiting for them.
//! No protocol logic lives here.
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

pub use conn::Connection;
pub use driver::Driver;
pub use node::{bind, bind_with_seed, AsyncNode, Error, NodeInfo, QueryOutcome, Records, Server};
