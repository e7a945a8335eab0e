//! [`Conn`]: what an application does with one of the node's connections, borrowed from the
//! node by [`Node::conn`]. It owns no state: every call goes to the node's connection of that
//! id, so a handle for a connection that closed or never existed answers with
//! [`ConnError::Unknown`] or [`ConnError::Closed`] instead of touching another connection (ids
//! are never reused).
//!
//! ```
//! use hyperdht_proto::{Config, ConnError, Event, KeyPair, Node, Timestamp};
//!
//! let now = Timestamp::from_millis(0);
//! let mut node = Node::new(Config::default(), [7; 32], now);
//! let id = node.connect(now, &[1; 32], &KeyPair::from_seed(&[2; 32]));
//! // No driver reported the node's sockets yet, so the attempt fails at once...
//! assert!(matches!(node.poll_event(), Some(Event::ConnectFailed { conn, .. }) if conn == id));
//! // ...and the handle of a connection that is gone answers with an error.
//! assert_eq!(node.conn(id).write(now, b"hello"), Err(ConnError::Unknown));
//! assert!(node.conn_info(id).is_none());
//! ```

use std::net::SocketAddr;

use super::Node;
use crate::connection::ConnError;
use crate::ids::ConnId;
use crate::stream::StreamInfo;
use crate::time::Timestamp;

/// A snapshot of one connection ([`Node::conn_info`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The peer's public key (authenticated by the handshake).
    pub remote_public_key: [u8; 32],
    /// The peer's address on the path in use, once a path is open.
    pub remote_addr: Option<SocketAddr>,
    /// The UDX stream's transport state (round-trip time, congestion window, packet
    /// counters).
    pub stream: Option<StreamInfo>,
    /// Whether data frames went both ways (secret-stream `rawBytesRead > 0 &&
    /// rawBytesWritten > 0`; the header frames do not count, keep-alives do): what a swarm
    /// checks before it calls a duplicate's existing connection outdated.
    pub carried_data_both_ways: bool,
    /// Input the connection holds for the application: decrypted messages not read yet plus
    /// the part of a frame still coming in. It stays within [`crate::MAX_UNREAD_INPUT`]
    /// (plus one frame that completes once everything before it was read); past that, input
    /// waits in the UDX receive buffer and the peer is slowed down.
    pub unread_input: usize,
}

/// One connection of a [`Node`], borrowed: read, write, finish, reset, and what is known of
/// the peer. Get one with [`Node::conn`]; it lives as long as the borrow of the node.
pub struct Conn<'a> {
    node: &'a mut Node,
    id: ConnId,
}

impl Node {
    /// The connection `id`, to read, write or close it. Works for any id: a connection the
    /// node no longer holds answers every call with an error (or `None`).
    pub fn conn(&mut self, id: ConnId) -> Conn<'_> {
        Conn { node: self, id }
    }

    /// What is known of connection `id` now, while the node holds it: the peer, the path, the
    /// UDX stream's transport state. A snapshot; it needs only a shared borrow of the node.
    pub fn conn_info(&self, id: ConnId) -> Option<ConnInfo> {
        let t = self.cx.transport(id)?;
        let (remote_public_key, remote_addr) = t.peer();
        Some(ConnInfo {
            remote_public_key,
            remote_addr,
            stream: self.mux.info(t.stream()),
            carried_data_both_ways: t.carried_data_both_ways(),
            unread_input: t.unread_input(),
        })
    }

    /// Connections the node holds for the application: opening, open, or closed with input
    /// not read yet (the node's internal relay connections are not counted).
    pub fn connection_count(&self) -> usize {
        self.conn_count()
    }
}

impl Conn<'_> {
    /// Which connection this is.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Encrypts and queues `data` as a byte stream (split into messages of at most 64 KiB);
    /// returns how much was taken: all of it, or `Err(Blocked)` while too much is queued (wait
    /// for [`crate::Event::Writable`]).
    pub fn write(&mut self, now: Timestamp, data: &[u8]) -> Result<usize, ConnError> {
        self.node.conn_write(now, self.id, data)
    }

    /// Encrypts and queues `message` as one secret-stream message: the peer reads it whole (a
    /// JS peer gets it as one `data` event). Fails with [`ConnError::MessageTooLarge`] over
    /// [`crate::secretstream::MAX_MESSAGE`] bytes and with `Err(Blocked)` while too much is
    /// queued. An empty message is not sent: hyperdht peers drop empty messages as keep-alives
    /// (use [`Conn::send_keep_alive`]).
    pub fn write_message(&mut self, now: Timestamp, message: &[u8]) -> Result<(), ConnError> {
        self.node.conn_write_message(now, self.id, message)
    }

    /// Reads decrypted bytes as a byte stream (message boundaries are not kept); `Ok(0)` once
    /// the peer finished and everything was read, `Err(Blocked)` until
    /// [`crate::Event::Readable`].
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConnError> {
        self.node.conn_read(self.id, buf)
    }

    /// Reads the next message whole, as the peer wrote it (one JS `write`); `Ok(None)` once
    /// the peer finished and everything was read. After a [`Conn::read`] that stopped inside a
    /// message, returns the rest of it.
    pub fn read_message(&mut self) -> Result<Option<Vec<u8>>, ConnError> {
        self.node.conn_read_message(self.id)
    }

    /// Ends our side once everything written is sent (UDX END); the peer reads to its end.
    pub fn finish(&mut self, now: Timestamp) -> Result<(), ConnError> {
        self.node.conn_finish(now, self.id)
    }

    /// Resets the connection (UDX DESTROY) at once; unsent and unread data are dropped.
    pub fn reset(&mut self, now: Timestamp) {
        self.node.conn_reset(now, self.id)
    }

    /// Forgets a closed connection and whatever of its input was not read. The node does this
    /// by itself once a closed connection was read to the end (or
    /// [`crate::CLOSED_LINGER`] after it closed), so calling it is optional.
    pub fn remove(self) {
        self.node.conn_remove(self.id)
    }

    /// Sends an empty message (a secret-stream keep-alive) now (secret-stream
    /// `sendKeepAlive`); the peer drops it. Does nothing on a connection that is not open or
    /// whose side is finished.
    pub fn send_keep_alive(&mut self, now: Timestamp) {
        self.node.conn_send_keep_alive(now, self.id)
    }

    /// What is known of the connection now (see [`Node::conn_info`]).
    pub fn info(&self) -> Option<ConnInfo> {
        self.node.conn_info(self.id)
    }
}
