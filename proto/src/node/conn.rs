//! Established connections: one UDX stream per connection carrying secret-stream, as hyperdht
//! does (`rawStream` + `NoiseSecretStream`). The stream is created when the handshake
//! succeeds and waits for its first packet (`accept`), so whichever side reaches the other
//! first opens the path; it is connected to the peer's stream id once a path is known, and the
//! secret-stream header goes out at once.
//!
//! [`Event::Connected`] is reported only when the peer's secret-stream header has arrived: the
//! peer accepted the path and holds the same session, not just us.

use std::collections::VecDeque;
use std::net::SocketAddr;

use core::fmt;

use super::Node;
use crate::event::Event;
use crate::ids::{ConnId, SocketId};
use crate::noise::HandshakeOutput;
use crate::secretstream::{self, SecretStream, SecretStreamError, SessionKeys};
use crate::stream::{CloseReason, StreamError, StreamEvent, StreamId};
use crate::time::Timestamp;

/// Encrypted bytes a connection may hold back beyond what its stream took; writes past this
/// block until [`Event::Writable`].
pub const MAX_PENDING_OUTPUT: usize = 1 << 20;
/// Decrypted bytes a connection holds for the application at most. Past this, data stays in
/// the UDX receive buffer, whose window then closes: a slow reader slows the peer down instead
/// of growing memory.
pub const MAX_UNREAD_INPUT: usize = 1 << 20;

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnCloseReason {
    /// Both sides finished cleanly.
    Finished,
    /// The UDX stream closed (reset by the peer, timed out, destroyed).
    Stream(CloseReason),
    /// secret-stream failed (wrong stream id, tampered frame, ...).
    SecretStream(SecretStreamError),
    /// We reset it, or the node shut down.
    Destroyed,
    /// A server's connection whose path never opened: the handshake gave up (JS destroys the
    /// raw stream when its handshake times out).
    NoPath,
}

impl fmt::Display for ConnCloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnCloseReason::Finished => f.write_str("connection finished"),
            ConnCloseReason::Stream(r) => write!(f, "{r}"),
            ConnCloseReason::SecretStream(e) => write!(f, "secret-stream: {e}"),
            ConnCloseReason::Destroyed => f.write_str("connection destroyed"),
            ConnCloseReason::NoPath => f.write_str("no path to the peer opened in time"),
        }
    }
}

/// Why a connection call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnError {
    /// No such connection (never opened, or closed and drained).
    Unknown,
    /// Not open yet (wait for [`Event::Connected`]).
    NotOpen,
    /// Nothing now: wait for [`Event::Readable`] / [`Event::Writable`].
    Blocked,
    /// Our side was finished.
    Finished,
    /// The connection closed.
    Closed(ConnCloseReason),
    /// A message longer than [`crate::secretstream::MAX_MESSAGE`] (secret-stream frames are
    /// at most 2^24 - 1 bytes).
    MessageTooLarge,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Unknown => f.write_str("unknown connection"),
            ConnError::NotOpen => f.write_str("connection not open yet"),
            ConnError::Blocked => f.write_str("connection blocked"),
            ConnError::Finished => f.write_str("connection write side finished"),
            ConnError::Closed(r) => write!(f, "{r}"),
            ConnError::MessageTooLarge => f.write_str("message too large for one frame"),
        }
    }
}

impl std::error::Error for ConnError {}

/// Where the connection came from (who to tell when the first packet picks its path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    Client(u64),
    Server(u64, usize),
}

/// One connection's transport state.
#[derive(Debug)]
pub(super) struct Conn {
    pub id: ConnId,
    pub origin: Origin,
    stream: StreamId,
    remote_udx_id: u32,
    local_udx_id: u32,
    handshake: HandshakeOutput,
    secret: Option<SecretStream>,
    path: Option<(SocketId, SocketAddr)>,
    connected: bool,
    write_blocked: bool,
    /// END is due once the pending output is flushed.
    finishing: bool,
    /// Our side was finished: no more writes.
    write_closed: bool,
    closed: Option<ConnCloseReason>,
    /// Plaintext the app has not read (bytes arrive decrypted in `secret`).
    eof: bool,
    /// Encrypted bytes received before the secret-stream existed.
    early: VecDeque<u8>,
    /// This connection's entry in `Node::conn_deadlines`.
    filed: Option<Timestamp>,
}

impl Node {
    /// Creates the connection's UDX stream right after a successful handshake; it accepts the
    /// first packet for `local_udx_id` from wherever it comes.
    ///
    /// A client passes the stream it created at `connect` (`existing`) and whether a first
    /// packet already arrived on it (then the caller connects it).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_conn(
        &mut self,
        conn: ConnId,
        origin: Origin,
        handshake: HandshakeOutput,
        local_udx_id: u32,
        remote_udx_id: u32,
        existing: Option<StreamId>,
        early: bool,
    ) {
        let stream = match existing {
            Some(s) => s,
            None => match self.mux.create_stream_with_id(self.now, local_udx_id) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "could not create the UDX stream");
                    return;
                }
            },
        };
        if !early {
            let _ = self.mux.accept(stream, remote_udx_id);
        }
        self.conn_by_stream.insert(stream, conn.0);
        self.conns.insert(
            conn.0,
            Conn {
                id: conn,
                origin,
                stream,
                remote_udx_id,
                local_udx_id,
                handshake,
                secret: None,
                path: None,
                connected: false,
                write_blocked: false,
                finishing: false,
                write_closed: false,
                closed: None,
                eof: false,
                early: VecDeque::new(),
                filed: None,
            },
        );
    }

    /// The path a connection runs on, once chosen.
    pub(super) fn conn_path_of(&self, conn: u64) -> Option<(SocketId, SocketAddr)> {
        self.conns.get(&conn)?.path
    }

    /// Points a connection's stream at another remote stream (a blind relay's) before its
    /// path is chosen.
    pub(super) fn set_conn_remote_udx_id(&mut self, conn: u64, remote_udx_id: u32) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.remote_udx_id = remote_udx_id;
        }
    }

    /// A path is known: connect the stream (unless the first packet already did) and start
    /// secret-stream.
    pub(super) fn conn_path(&mut self, conn: u64, socket: SocketId, remote: SocketAddr) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.path.is_some() {
            return;
        }
        c.path = Some((socket, remote));
        let connected = self.mux.info(c.stream).is_some_and(|i| i.connected);
        if !connected {
            let _ = self
                .mux
                .connect(now, c.stream, socket, c.remote_udx_id, remote);
        }
        let keys = SessionKeys::from(&c.handshake);
        let config = secretstream::Config::default();
        let secret = SecretStream::new(now, &keys, &mut self.rng, config);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.secret = Some(secret);
        self.file_conn_deadline(conn);
        self.flush_conn(conn);
        // Bytes that raced ahead of us (the peer's header).
        self.pump_conn_input(conn);
    }

    /// Moves encrypted output from secret-stream into the UDX stream.
    fn flush_conn(&mut self, conn: u64) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(secret) = c.secret.as_mut() else {
            return;
        };
        loop {
            let out = secret.pending_output();
            if out.is_empty() {
                break;
            }
            match self.mux.write(now, c.stream, out) {
                Ok(0) | Err(StreamError::Blocked) => break,
                Ok(n) => secret.consume_output(n),
                Err(_) => break,
            }
        }
        let writable = c.write_blocked && secret.pending_output().len() < MAX_PENDING_OUTPUT / 2;
        if writable {
            c.write_blocked = false;
        }
        if c.finishing && secret.pending_output().is_empty() {
            c.finishing = false;
            let _ = self.mux.finish(now, c.stream);
        }
        if writable {
            let id = c.id;
            self.push_event(Event::Writable { conn: id });
        }
    }

    /// Reads what the UDX stream has into secret-stream.
    fn pump_conn_input(&mut self, conn: u64) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.secret
            .as_ref()
            .is_some_and(|s| s.readable_bytes() >= MAX_UNREAD_INPUT)
        {
            return;
        }
        let mut buf = Vec::new();
        loop {
            if buf.len() >= MAX_UNREAD_INPUT {
                break;
            }
            match self.mux.read_into(c.stream, &mut buf) {
                Ok(0) => {
                    c.eof = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let Some(secret) = c.secret.as_mut() else {
            c.early.extend(buf);
            return;
        };
        if !c.early.is_empty() {
            let early: Vec<u8> = c.early.drain(..).collect();
            buf.splice(0..0, early);
        }
        let before = secret.readable_bytes();
        if let Err(e) = secret.handle_input(now, &buf) {
            tracing::info!(error = %e, "secret-stream failed");
            return self.close_conn(conn, ConnCloseReason::SecretStream(e), true);
        }
        let established = secret.is_established();
        let readable = secret.readable_bytes() > before;
        let (id, eof) = (c.id, c.eof);
        if established && !c.connected {
            c.connected = true;
            let (socket, remote) = c
                .path
                .unwrap_or((SocketId::SERVER, SocketAddr::from(([0, 0, 0, 0], 0))));
            let handshake = Box::new(c.handshake.clone());
            let (local_udx_id, remote_udx_id) = (c.local_udx_id, c.remote_udx_id);
            tracing::info!(%remote, "connection open");
            self.push_event(Event::Connected {
                conn: id,
                socket,
                remote,
                handshake,
                local_udx_id,
                remote_udx_id,
            });
        }
        self.flush_conn(conn);
        if readable {
            self.push_event(Event::Readable { conn: id });
        }
        if eof {
            self.push_event(Event::Finished { conn: id });
        }
    }

    /// Handles what the UDX layer reported.
    pub(super) fn process_stream_events(&mut self) {
        while let Some(ev) = self.mux.poll_event() {
            match ev {
                StreamEvent::Accepted { id, socket, from } => {
                    let Some(&conn) = self.conn_by_stream.get(&id) else {
                        continue;
                    };
                    let Some(origin) = self.conns.get(&conn).map(|c| c.origin) else {
                        continue;
                    };
                    let SocketAddr::V4(from4) = from else {
                        continue;
                    };
                    match origin {
                        Origin::Client(c) => self.client_path_open(c, socket, from4),
                        Origin::Server(s, slot) => self.server_path_open(s, slot, socket, from4),
                    }
                    self.conn_path(conn, socket, from);
                }
                StreamEvent::FirstPacket { id, socket, from } => {
                    let SocketAddr::V4(from4) = from else {
                        continue;
                    };
                    if let Some(&client) = self.pending_streams.get(&id) {
                        self.client_early_packet(client, socket, from4);
                    }
                }
                StreamEvent::Readable { id } | StreamEvent::Finished { id } => {
                    if let Some(&conn) = self.conn_by_stream.get(&id) {
                        self.pump_conn_input(conn);
                    }
                }
                StreamEvent::Writable { id } => {
                    if let Some(&conn) = self.conn_by_stream.get(&id) {
                        self.flush_conn(conn);
                    }
                }
                StreamEvent::RelayEnded { ends } => self.relay_link_ended(ends),
                // Unreliable messages are not used by hyperdht connections.
                StreamEvent::Closed { id, reason } => {
                    if let Some(&conn) = self.conn_by_stream.get(&id) {
                        self.pump_conn_input(conn);
                        let r = if reason == CloseReason::Finished {
                            ConnCloseReason::Finished
                        } else {
                            ConnCloseReason::Stream(reason)
                        };
                        self.close_conn(conn, r, false);
                    }
                }
                _ => {}
            }
        }
    }

    /// A server's handshake cleared: its connection, if no path ever opened, closes (so a
    /// flood of handshakes cannot pile up connections).
    pub(super) fn close_if_unopened(&mut self, conn: u64) {
        if self.conns.get(&conn).is_some_and(|c| c.path.is_none()) {
            tracing::debug!("server connection closed: no path opened");
            self.close_conn(conn, ConnCloseReason::NoPath, true);
        }
    }

    /// The node is shutting down: the connection ends (DESTROY to the peer).
    pub(super) fn close_conn_on_shutdown(&mut self, conn: u64) {
        self.close_conn(conn, ConnCloseReason::Destroyed, true);
    }

    /// Ends a connection; `reset` also sends DESTROY.
    fn close_conn(&mut self, conn: u64, reason: ConnCloseReason, reset: bool) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closed.is_some() {
            return;
        }
        c.closed = Some(reason);
        if reset {
            self.mux.reset(now, c.stream);
        }
        let (id, connected, origin) = (c.id, c.connected, c.origin);
        self.drop_relays_of_conn(conn);
        if !connected && matches!(origin, Origin::Client(_)) {
            // The client never saw the server's header: the attempt failed.
            tracing::info!(%reason, "connection closed before the server accepted it");
            self.push_event(Event::ConnectFailed {
                conn: id,
                reason: super::ConnectError::NotAccepted,
            });
            return;
        }
        self.push_event(Event::ConnClosed { conn: id, reason });
    }

    /// secret-stream keep-alive timers.
    pub(super) fn conn_timers(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        while let Some(&(t, id)) = self.conn_deadlines.first() {
            if t > now {
                break;
            }
            self.conn_deadlines.pop_first();
            if let Some(c) = self.conns.get_mut(&id) {
                c.filed = None;
            }
            due.push(id);
        }
        for id in due {
            // The entry may be early (the connection wrote since it was filed): then this only
            // files the real deadline.
            let Some(s) = self.conns.get_mut(&id).and_then(|c| c.secret.as_mut()) else {
                continue;
            };
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
                self.flush_conn(id);
            }
            self.file_conn_deadline(id);
        }
    }

    /// Files a connection's keep-alive deadline in `conn_deadlines` (replacing its entry).
    /// Secret-stream's deadline is `last_write + keep_alive` and writes only move it later, so
    /// an entry is never late; `conn_timers` re-files early ones when they come up.
    fn file_conn_deadline(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(t) = c.filed.take() {
            self.conn_deadlines.remove(&(t, id));
        }
        if let Some(t) = c.secret.as_ref().and_then(SecretStream::poll_timeout) {
            self.conn_deadlines.insert((t, id));
            c.filed = Some(t);
        }
    }

    /// The earliest keep-alive deadline (possibly early, see `file_conn_deadline`).
    pub(super) fn conn_timeout(&self) -> Option<Timestamp> {
        self.conn_deadlines.first().map(|&(t, _)| t)
    }

    // ----- application API ------------------------------------------------------------------

    /// Encrypts and queues `data` on an open connection as a byte stream (split into messages
    /// of at most 64 KiB); returns how much was taken (all of it, or `Err(Blocked)` while too
    /// much is queued).
    pub fn conn_write(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        data: &[u8],
    ) -> Result<usize, ConnError> {
        self.write_messages(now, conn, data.chunks(1 << 16))?;
        Ok(data.len())
    }

    /// Encrypts and queues `message` as one secret-stream message: the peer reads it whole
    /// (a JS peer gets it as one `data` event; see [`Node::conn_read_message`]). Fails with
    /// [`ConnError::MessageTooLarge`] over [`crate::secretstream::MAX_MESSAGE`] bytes and with
    /// `Err(Blocked)` while too much is queued. An empty message is not sent: hyperdht peers
    /// drop empty messages as keep-alives.
    pub fn conn_write_message(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        message: &[u8],
    ) -> Result<(), ConnError> {
        if message.len() > crate::secretstream::MAX_MESSAGE {
            return Err(ConnError::MessageTooLarge);
        }
        let message = (!message.is_empty()).then_some(message);
        self.write_messages(now, conn, message.into_iter())
    }

    /// Seals each of `messages` as one secret-stream message, if the connection can take them.
    fn write_messages<'m>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        messages: impl Iterator<Item = &'m [u8]>,
    ) -> Result<(), ConnError> {
        self.set_now(now);
        let c = self.conns.get_mut(&conn.0).ok_or(ConnError::Unknown)?;
        if let Some(r) = c.closed {
            return Err(ConnError::Closed(r));
        }
        let secret = c.secret.as_mut().ok_or(ConnError::NotOpen)?;
        if !c.connected {
            return Err(ConnError::NotOpen);
        }
        if c.write_closed {
            return Err(ConnError::Finished);
        }
        if secret.pending_output().len() >= MAX_PENDING_OUTPUT {
            c.write_blocked = true;
            return Err(ConnError::Blocked);
        }
        for message in messages {
            if let Err(e) = secret.write(now, message) {
                let reason = ConnCloseReason::SecretStream(e);
                self.close_conn(conn.0, reason, true);
                return Err(ConnError::Closed(reason));
            }
        }
        self.flush_conn(conn.0);
        Ok(())
    }

    /// Reads decrypted bytes as a byte stream (message boundaries are not kept); `Ok(0)` once
    /// the peer finished and everything was read.
    pub fn conn_read(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, ConnError> {
        let c = self.conns.get_mut(&conn.0).ok_or(ConnError::Unknown)?;
        let secret = c.secret.as_mut().ok_or(ConnError::NotOpen)?;
        let n = secret.read(buf);
        if n > 0 || buf.is_empty() {
            self.refill_conn_input(conn.0);
            return Ok(n);
        }
        self.read_nothing(conn.0).map(|()| 0)
    }

    /// Reads the next message whole, as the peer wrote it (one JS `write`); `Ok(None)` once
    /// the peer finished and everything was read. After a [`Node::conn_read`] that stopped
    /// inside a message, returns the rest of it.
    pub fn conn_read_message(&mut self, conn: ConnId) -> Result<Option<Vec<u8>>, ConnError> {
        let c = self.conns.get_mut(&conn.0).ok_or(ConnError::Unknown)?;
        let secret = c.secret.as_mut().ok_or(ConnError::NotOpen)?;
        if let Some(message) = secret.poll_message() {
            self.refill_conn_input(conn.0);
            return Ok(Some(message));
        }
        self.read_nothing(conn.0).map(|()| None)
    }

    /// After a read: once the unread input is below half its bound, takes what the UDX stream
    /// kept back.
    fn refill_conn_input(&mut self, conn: u64) {
        let low = self
            .conns
            .get(&conn)
            .and_then(|c| c.secret.as_ref())
            .map(|s| s.readable_bytes() < MAX_UNREAD_INPUT / 2);
        if low == Some(true) {
            self.pump_conn_input(conn);
        }
    }

    /// Why a read found nothing: `Ok` at the end of the peer's stream, else `Blocked` or the
    /// close reason.
    fn read_nothing(&self, conn: u64) -> Result<(), ConnError> {
        let c = self.conns.get(&conn).ok_or(ConnError::Unknown)?;
        if c.eof {
            return Ok(());
        }
        match c.closed {
            Some(r) => Err(ConnError::Closed(r)),
            None => Err(ConnError::Blocked),
        }
    }

    /// Ends our side once everything written is sent (UDX END).
    pub fn conn_finish(&mut self, now: Timestamp, conn: ConnId) -> Result<(), ConnError> {
        self.set_now(now);
        let c = self.conns.get_mut(&conn.0).ok_or(ConnError::Unknown)?;
        if let Some(r) = c.closed {
            return Err(ConnError::Closed(r));
        }
        if !c.write_closed {
            c.write_closed = true;
            c.finishing = true;
        }
        self.flush_conn(conn.0);
        Ok(())
    }

    /// Resets the connection (UDX DESTROY) at once.
    pub fn conn_reset(&mut self, now: Timestamp, conn: ConnId) {
        self.set_now(now);
        self.close_conn(conn.0, ConnCloseReason::Destroyed, true);
    }

    /// Forgets a closed connection after its last bytes were read.
    pub fn conn_remove(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn.0) {
            if let Some(t) = c.filed {
                self.conn_deadlines.remove(&(t, conn.0));
            }
            self.conn_by_stream.remove(&c.stream);
            self.mux.remove(c.stream);
            self.release_conn_sockets(conn.0);
        }
    }

    /// Connections the node holds: opening, open, or closed and not yet forgotten with
    /// [`Node::conn_remove`].
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Transport state of the connection's UDX stream (round-trip time, congestion window,
    /// packet counters), while the node holds the connection.
    pub fn conn_transport(&self, conn: ConnId) -> Option<crate::stream::StreamInfo> {
        let c = self.conns.get(&conn.0)?;
        self.mux.info(c.stream)
    }

    /// The connection's peer key and path, once open.
    pub fn conn_info(&self, conn: ConnId) -> Option<([u8; 32], Option<SocketAddr>)> {
        let c = self.conns.get(&conn.0)?;
        Some((c.handshake.remote_public_key, c.path.map(|p| p.1)))
    }
}
