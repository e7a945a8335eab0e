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

use super::connection::{Connection, Purpose, Side};
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
/// Input a connection holds for the application at most: decrypted messages not read yet
/// plus the part of a frame still coming in. Past this, data stays in the UDX receive
/// buffer, whose window then closes: a slow reader slows the peer down instead of growing
/// memory. One frame larger than what is left may still complete once the application read
/// everything before it (secret-stream frames are up to 16 MiB, and JS peers may send them).
pub const MAX_UNREAD_INPUT: usize = 1 << 20;

/// What a connection's secret-stream holds for the application: complete messages not read
/// yet and the part of a frame still coming in.
fn held_input(s: &SecretStream) -> usize {
    s.readable_bytes() + s.buffered_input_len()
}

/// Whether more input may be taken from the UDX stream: while under [`MAX_UNREAD_INPUT`], or
/// to complete a frame once everything before it was read.
fn may_take_input(s: &SecretStream) -> bool {
    held_input(s) < MAX_UNREAD_INPUT || (s.readable_bytes() == 0 && s.buffered_input_len() > 0)
}

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

/// One connection's transport state.
#[derive(Debug)]
pub(super) struct Transport {
    pub stream: StreamId,
    remote_udx_id: u32,
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
    /// The server whose live connections count this one, until it closes or goes.
    counted_by: Option<u64>,
}

/// How long a closed connection's unread input waits for the application before the node
/// drops it with the connection.
pub const CLOSED_LINGER: core::time::Duration = core::time::Duration::from_secs(60);

impl Transport {
    /// The peer's key and, once a path is open, its address on it.
    pub fn peer(&self) -> ([u8; 32], Option<SocketAddr>) {
        (self.handshake.remote_public_key, self.path.map(|p| p.1))
    }

    /// Whether data frames went both ways (secret-stream raw byte counts, headers excluded).
    pub fn carried_data_both_ways(&self) -> bool {
        self.secret.as_ref().is_some_and(|s| {
            let (read, written) = s.raw_bytes();
            read > 0 && written > 0
        })
    }

    /// The keep-alive deadline.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.closed.is_some() {
            return None;
        }
        self.secret.as_ref().and_then(SecretStream::poll_timeout)
    }

    /// How it closed and whether the peer had finished, once closed.
    pub fn closed(&self) -> Option<(ConnCloseReason, bool)> {
        self.closed.map(|r| (r, self.eof))
    }

    /// Closed, and the application read everything.
    pub fn is_spent(&self) -> bool {
        self.closed.is_some() && self.secret.as_ref().is_none_or(|s| s.readable_bytes() == 0)
    }
}

impl Node {
    /// Creates the connection's UDX stream right after a successful handshake; it accepts the
    /// first packet for `local_udx_id` from wherever it comes.
    ///
    /// A client passes the stream it created at `connect` (`existing`) and whether a first
    /// packet already arrived on it (then the caller connects it).
    pub(super) fn open_conn(
        &mut self,
        conn: ConnId,
        handshake: HandshakeOutput,
        (local_udx_id, remote_udx_id): (u32, u32),
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
        self.conn_by_stream.insert(stream, conn);
        let Some(c) = self.cx.get_mut(conn) else {
            return;
        };
        c.transport = Some(Transport {
            stream,
            remote_udx_id,
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
            counted_by: None,
        });
    }

    /// Counts a server's new connection among its live ones (once it has a transport).
    pub(super) fn count_server_conn(&mut self, server: u64, conn: ConnId) {
        let Some(t) = self.cx.transport_mut(conn) else {
            return;
        };
        if t.counted_by.is_some() || t.closed.is_some() {
            return;
        }
        if let Some(s) = self.servers.get_mut(&server) {
            t.counted_by = Some(server);
            s.live_conns += 1;
        }
    }

    /// A connection closed or lost its transport: its server's count of live connections
    /// goes down (once; the server may have closed since).
    fn uncount_conn(&mut self, server: Option<u64>) {
        if let Some(s) = server.and_then(|id| self.servers.get_mut(&id)) {
            s.live_conns = s.live_conns.saturating_sub(1);
        }
    }

    /// The path a connection runs on, once chosen.
    pub(super) fn conn_path_of(&self, conn: ConnId) -> Option<(SocketId, SocketAddr)> {
        self.cx.transport(conn)?.path
    }

    /// Points a connection's stream at another remote stream (a blind relay's) before its
    /// path is chosen.
    pub(super) fn set_conn_remote_udx_id(&mut self, conn: ConnId, remote_udx_id: u32) {
        if let Some(c) = self.cx.transport_mut(conn) {
            c.remote_udx_id = remote_udx_id;
        }
    }

    /// A path is known: connect the stream (unless the first packet already did) and start
    /// secret-stream.
    pub(super) fn conn_path(&mut self, conn: ConnId, socket: SocketId, remote: SocketAddr) {
        let now = self.now;
        let Some(c) = self.cx.transport_mut(conn) else {
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
        c.secret = Some(SecretStream::new(now, &keys, &mut self.rng, config));
        self.flush_conn(conn);
        // Bytes that raced ahead of us (the peer's header).
        self.pump_conn_input(conn);
    }

    /// Moves encrypted output from secret-stream into the UDX stream.
    fn flush_conn(&mut self, conn: ConnId) {
        let now = self.now;
        let Some(c) = self.cx.transport_mut(conn) else {
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
            self.conn_event(Event::Writable { conn });
        }
    }

    /// Reads what the UDX stream has into secret-stream.
    fn pump_conn_input(&mut self, conn: ConnId) {
        let now = self.now;
        let Some(c) = self.cx.transport_mut(conn) else {
            return;
        };
        if c.secret.as_ref().is_some_and(|s| !may_take_input(s)) {
            return;
        }
        // Up to what is left under the cap (a frame completing past it takes one round).
        let room = c.secret.as_ref().map_or(MAX_UNREAD_INPUT, |s| {
            MAX_UNREAD_INPUT.saturating_sub(held_input(s)).max(1)
        });
        let mut buf = Vec::new();
        loop {
            if buf.len() >= room {
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
        let eof = c.eof;
        if established && !c.connected {
            c.connected = true;
            let (socket, remote) = c
                .path
                .unwrap_or((SocketId::SERVER, SocketAddr::from(([0, 0, 0, 0], 0))));
            let (remote_public_key, is_initiator, handshake_hash) = (
                c.handshake.remote_public_key,
                c.handshake.is_initiator,
                c.handshake.hash,
            );
            tracing::info!(%remote, "connection open");
            self.conn_event(Event::Connected {
                conn,
                socket,
                remote,
                remote_public_key,
                is_initiator,
                handshake_hash,
            });
        }
        self.flush_conn(conn);
        if readable {
            self.conn_event(Event::Readable { conn });
        }
        if eof {
            self.conn_event(Event::Finished { conn });
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
                    let Some(side) = self.cx.get(conn).map(|c| c.side) else {
                        continue;
                    };
                    let SocketAddr::V4(from4) = from else {
                        continue;
                    };
                    match side {
                        Side::Client => self.client_path_open(conn, socket, from4),
                        Side::Server(_) => self.server_path_open(conn, socket, from4),
                    }
                    self.conn_path(conn, socket, from);
                }
                StreamEvent::FirstPacket { id, socket, from } => {
                    let SocketAddr::V4(from4) = from else {
                        continue;
                    };
                    if let Some(&conn) = self.conn_by_stream.get(&id) {
                        self.client_early_packet(conn, socket, from4);
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
    pub(super) fn close_if_unopened(&mut self, conn: ConnId) {
        if self.cx.transport(conn).is_some_and(|c| c.path.is_none()) {
            tracing::debug!("server connection closed: no path opened");
            self.close_conn(conn, ConnCloseReason::NoPath, true);
        }
    }

    /// The node is shutting down: the connection ends (DESTROY to the peer).
    pub(super) fn close_conn_on_shutdown(&mut self, conn: ConnId) {
        self.close_conn(conn, ConnCloseReason::Destroyed, true);
    }

    /// Ends a connection; `reset` also sends DESTROY.
    fn close_conn(&mut self, conn: ConnId, reason: ConnCloseReason, reset: bool) {
        let now = self.now;
        let Some(c) = self.cx.get_mut(conn) else {
            return;
        };
        let side = c.side;
        let Some(t) = c.transport.as_mut() else {
            return;
        };
        if t.closed.is_some() {
            return;
        }
        t.closed = Some(reason);
        let counted_by = t.counted_by.take();
        if reset {
            self.mux.reset(now, t.stream);
        }
        let connected = t.connected;
        let spent = t.is_spent();
        if !spent {
            c.linger_until = Some(now + CLOSED_LINGER);
        }
        self.uncount_conn(counted_by);
        self.drop_relays_of_conn(conn);
        if !connected && side == Side::Client {
            // The client never saw the server's header: the attempt failed.
            tracing::info!(%reason, "connection closed before the server accepted it");
            self.conn_event(Event::ConnectFailed {
                conn,
                reason: super::ConnectError::NotAccepted,
            });
        } else {
            self.conn_event(Event::ConnClosed { conn, reason });
        }
        self.reap(conn);
    }

    /// Runs a connection's due timers: secret-stream keep-alives, and the removal of a closed
    /// connection whose input was never read.
    pub(super) fn conn_timers(&mut self, conn: ConnId) {
        let now = self.now;
        let Some(c) = self.cx.get_mut(conn) else {
            return;
        };
        if c.linger_until.is_some_and(|t| t <= now) {
            c.linger_until = None;
            tracing::debug!("closed connection dropped with its unread input");
            self.drop_transport(conn);
            return self.reap(conn);
        }
        let Some(s) = c
            .transport
            .as_mut()
            .filter(|t| t.closed.is_none())
            .and_then(|t| t.secret.as_mut())
        else {
            return;
        };
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
            self.flush_conn(conn);
        }
    }

    /// Removes a connection once nothing of it is left ([`Connection::is_spent`]); the
    /// sockets its path adopted close.
    pub(super) fn reap(&mut self, conn: ConnId) {
        if !self.cx.get(conn).is_some_and(Connection::is_spent) {
            return;
        }
        self.drop_transport(conn);
        self.cx.remove(conn);
        self.release_conn_sockets(conn);
    }

    /// Takes a connection's transport away: its stream is left to end on its own (a DESTROY
    /// or the linger of a clean close still go out) with its unread input dropped. A closed
    /// one's reason stays known to reads for a while.
    fn drop_transport(&mut self, conn: ConnId) {
        let now = self.now;
        let Some(mut t) = self.cx.get_mut(conn).and_then(|c| c.transport.take()) else {
            return;
        };
        self.uncount_conn(t.counted_by.take());
        self.conn_by_stream.remove(&t.stream);
        match t.closed() {
            Some((reason, eof)) => self.cx.remember_closed(conn, reason, eof),
            None => self.mux.reset(now, t.stream),
        }
        // Reading the rest lets the mux remove a dead stream.
        let mut sink = Vec::new();
        while matches!(self.mux.read_into(t.stream, &mut sink), Ok(n) if n > 0) {
            sink.clear();
        }
    }

    // ----- application API ------------------------------------------------------------------

    /// Encrypts and queues `data` on an open connection as a byte stream (split into messages
    /// of at most 64 KiB); returns how much was taken (all of it, or `Err(Blocked)` while too
    /// much is queued).
    pub(crate) fn conn_write(
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
    pub(crate) fn conn_write_message(
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

    /// The error for a call on a connection the node no longer holds.
    fn gone(&self, conn: ConnId) -> ConnError {
        match self.cx.closed_reason(conn) {
            Some((r, _)) => ConnError::Closed(r),
            None => ConnError::Unknown,
        }
    }

    /// Seals each of `messages` as one secret-stream message, if the connection can take them.
    fn write_messages<'m>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        messages: impl Iterator<Item = &'m [u8]>,
    ) -> Result<(), ConnError> {
        self.set_now(now);
        let gone = self.gone(conn);
        let c = self.cx.get_mut(conn).ok_or(gone)?;
        let c = c.transport.as_mut().ok_or(ConnError::NotOpen)?;
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
                self.close_conn(conn, reason, true);
                return Err(ConnError::Closed(reason));
            }
        }
        self.flush_conn(conn);
        Ok(())
    }

    /// Reads decrypted bytes as a byte stream (message boundaries are not kept); `Ok(0)` once
    /// the peer finished and everything was read.
    pub(crate) fn conn_read(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, ConnError> {
        let Some(c) = self.cx.get_mut(conn) else {
            return self.read_gone(conn).map(|()| 0);
        };
        let secret = c
            .transport
            .as_mut()
            .and_then(|t| t.secret.as_mut())
            .ok_or(ConnError::NotOpen)?;
        let n = secret.read(buf);
        if n > 0 || buf.is_empty() {
            self.refill_conn_input(conn);
            return Ok(n);
        }
        self.read_nothing(conn).map(|()| 0)
    }

    /// Reads the next message whole, as the peer wrote it (one JS `write`); `Ok(None)` once
    /// the peer finished and everything was read. After a [`Node::conn_read`] that stopped
    /// inside a message, returns the rest of it.
    pub(crate) fn conn_read_message(&mut self, conn: ConnId) -> Result<Option<Vec<u8>>, ConnError> {
        let Some(c) = self.cx.get_mut(conn) else {
            return self.read_gone(conn).map(|()| None);
        };
        let secret = c
            .transport
            .as_mut()
            .and_then(|t| t.secret.as_mut())
            .ok_or(ConnError::NotOpen)?;
        if let Some(message) = secret.poll_message() {
            self.refill_conn_input(conn);
            return Ok(Some(message));
        }
        self.read_nothing(conn).map(|()| None)
    }

    /// After a read: once the unread input is below half its bound, takes what the UDX stream
    /// kept back; a closed connection read to the end goes.
    fn refill_conn_input(&mut self, conn: ConnId) {
        let Some(t) = self.cx.transport(conn) else {
            return;
        };
        if t.closed.is_some() {
            return self.reap(conn);
        }
        let low = t.secret.as_ref().is_some_and(|s| {
            held_input(s) < MAX_UNREAD_INPUT / 2 || (s.readable_bytes() == 0 && may_take_input(s))
        });
        if low {
            self.pump_conn_input(conn);
        }
    }

    /// Why a read found nothing: `Ok` at the end of the peer's stream, else `Blocked` or the
    /// close reason. A closed connection read to the end goes.
    fn read_nothing(&mut self, conn: ConnId) -> Result<(), ConnError> {
        let t = self.cx.transport(conn).ok_or(ConnError::Unknown)?;
        let (eof, closed) = (t.eof, t.closed);
        if closed.is_some() {
            self.reap(conn);
        }
        if eof {
            return Ok(());
        }
        match closed {
            Some(r) => Err(ConnError::Closed(r)),
            None => Err(ConnError::Blocked),
        }
    }

    /// A read on a connection the node no longer holds: the end, or how it closed.
    fn read_gone(&self, conn: ConnId) -> Result<(), ConnError> {
        match self.cx.closed_reason(conn) {
            Some((_, true)) => Ok(()),
            Some((r, false)) => Err(ConnError::Closed(r)),
            None => Err(ConnError::Unknown),
        }
    }

    /// Ends our side once everything written is sent (UDX END).
    pub(crate) fn conn_finish(&mut self, now: Timestamp, conn: ConnId) -> Result<(), ConnError> {
        self.set_now(now);
        let gone = self.gone(conn);
        let c = self.cx.get_mut(conn).ok_or(gone)?;
        let c = c.transport.as_mut().ok_or(ConnError::NotOpen)?;
        if let Some(r) = c.closed {
            return Err(ConnError::Closed(r));
        }
        if !c.write_closed {
            c.write_closed = true;
            c.finishing = true;
        }
        self.flush_conn(conn);
        Ok(())
    }

    /// Resets the connection (UDX DESTROY) at once.
    pub(crate) fn conn_reset(&mut self, now: Timestamp, conn: ConnId) {
        self.set_now(now);
        self.close_conn(conn, ConnCloseReason::Destroyed, true);
    }

    /// Forgets a closed connection and whatever of its input was not read. The node also does
    /// this by itself once a closed connection was read to the end (or
    /// [`CLOSED_LINGER`] after it closed), so calling it is optional.
    pub(crate) fn conn_remove(&mut self, conn: ConnId) {
        self.drop_transport(conn);
        self.reap(conn);
    }

    /// Connections the node holds: opening, open, or closed with input not read yet.
    pub(crate) fn conn_count(&self) -> usize {
        self.cx
            .iter()
            .filter(|c| c.purpose == Purpose::App && (c.client.is_some() || c.transport.is_some()))
            .count()
    }

    /// Sends an empty message (a secret-stream keep-alive) on an open connection now
    /// (secret-stream `sendKeepAlive`); the peer drops it. Does nothing on a connection that
    /// is not open or whose side is finished.
    pub(crate) fn conn_send_keep_alive(&mut self, now: Timestamp, conn: ConnId) {
        self.set_now(now);
        let Some(t) = self.cx.transport_mut(conn) else {
            return;
        };
        if !t.connected || t.write_closed || t.closed.is_some() {
            return;
        }
        let Some(secret) = t.secret.as_mut() else {
            return;
        };
        if secret.write(now, &[]).is_ok() {
            self.flush_conn(conn);
        }
    }
}
