//! The endpoint's side of established connections: it makes each connection's
//! [`Transport`] after the handshake, hands it what the UDX layer reports, turns its
//! [`TransportEvent`]s into the application's events, and closes and reaps connections. What
//! a transport does with its stream and secret-stream is `crate::connection::transport`.

use std::net::SocketAddr;

use super::Node;
use crate::connection::transport::{Closing, Transport, TransportEvent};
use crate::connection::{ConnCloseReason, ConnError, Connection, Purpose, Side, CLOSED_LINGER};
use crate::event::Event;
use crate::ids::{ConnId, SocketId};
use crate::noise::HandshakeOutput;
use crate::stream::{CloseReason, StreamEvent, StreamId};
use crate::time::Timestamp;

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
        c.transport = Some(Transport::new(stream, remote_udx_id, handshake));
    }

    /// Counts a server's new connection among its live ones (once it has a transport).
    pub(super) fn count_server_conn(&mut self, server: u64, conn: ConnId) {
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        if self
            .cx
            .transport_mut(conn)
            .is_some_and(|t| t.count_by(server))
        {
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
        self.cx.transport(conn)?.path()
    }

    /// Points a connection's stream at another remote stream (a blind relay's) before its
    /// path is chosen.
    pub(super) fn set_conn_remote_udx_id(&mut self, conn: ConnId, remote_udx_id: u32) {
        if let Some(t) = self.cx.transport_mut(conn) {
            t.set_remote_udx_id(remote_udx_id);
        }
    }

    /// A path is known: connect the stream (unless the first packet already did) and start
    /// secret-stream.
    pub(super) fn conn_path(&mut self, conn: ConnId, socket: SocketId, remote: SocketAddr) {
        let now = self.now;
        if let Some(t) = self.cx.transport_mut(conn) {
            t.handle_path(now, &mut self.mux, &mut self.rng, socket, remote);
        }
        self.drain_transport(conn);
    }

    /// Moves encrypted output from secret-stream into the UDX stream.
    fn flush_conn(&mut self, conn: ConnId) {
        let now = self.now;
        if let Some(t) = self.cx.transport_mut(conn) {
            t.flush(now, &mut self.mux);
        }
        self.drain_transport(conn);
    }

    /// Reads what the UDX stream has into secret-stream.
    fn pump_conn_input(&mut self, conn: ConnId) {
        let now = self.now;
        if let Some(t) = self.cx.transport_mut(conn) {
            t.handle_input(now, &mut self.mux);
        }
        self.drain_transport(conn);
    }

    /// Turns what a connection's transport reported into the application's events.
    fn drain_transport(&mut self, conn: ConnId) {
        while let Some(ev) = self.cx.transport_mut(conn).and_then(Transport::poll_event) {
            let event = match ev {
                TransportEvent::Connected => {
                    let Some(t) = self.cx.transport(conn) else {
                        return;
                    };
                    let (socket, remote) = t
                        .path()
                        .unwrap_or((SocketId::SERVER, SocketAddr::from(([0, 0, 0, 0], 0))));
                    let h = t.handshake();
                    tracing::info!(%remote, "connection open");
                    Event::Connected {
                        conn,
                        socket,
                        remote,
                        remote_public_key: h.remote_public_key,
                        is_initiator: h.is_initiator,
                        handshake_hash: h.hash,
                    }
                }
                TransportEvent::Readable => Event::Readable { conn },
                TransportEvent::Writable => Event::Writable { conn },
                TransportEvent::Finished => Event::Finished { conn },
                TransportEvent::Failed(reason) => {
                    self.close_conn(conn, reason, true);
                    continue;
                }
            };
            self.conn_event(event);
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
        if self.cx.transport(conn).is_some_and(|t| t.path().is_none()) {
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
        let Some(closing) = c
            .transport
            .as_mut()
            .and_then(|t| t.close(now, &mut self.mux, reason, reset))
        else {
            return;
        };
        let Closing {
            was_connected,
            counted_by,
            spent,
        } = closing;
        if !spent {
            c.linger_until = Some(now + CLOSED_LINGER);
        }
        self.uncount_conn(counted_by);
        self.drop_relays_of_conn(conn);
        if !was_connected && side == Side::Client {
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
        if let Some(t) = c.transport.as_mut() {
            t.handle_timeout(now, &mut self.mux);
        }
        self.drain_transport(conn);
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
        self.uncount_conn(t.take_counted_by());
        self.conn_by_stream.remove(&t.stream());
        if let Some((reason, eof)) = t.closed() {
            self.cx.remember_closed(conn, reason, eof);
        }
        t.release(now, &mut self.mux);
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
        let t = c.transport.as_mut().ok_or(ConnError::NotOpen)?;
        let result = t.write_messages(now, &mut self.mux, messages);
        self.drain_transport(conn);
        result
    }

    /// Reads decrypted bytes as a byte stream (message boundaries are not kept); `Ok(0)` once
    /// the peer finished and everything was read.
    pub(crate) fn conn_read(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, ConnError> {
        let now = self.now;
        let Some(c) = self.cx.get_mut(conn) else {
            return self.read_gone(conn).map(|()| 0);
        };
        let t = c.transport.as_mut().ok_or(ConnError::NotOpen)?;
        let result = t.read(now, &mut self.mux, buf);
        self.after_read(conn);
        result
    }

    /// Reads the next message whole, as the peer wrote it (one JS `write`); `Ok(None)` once
    /// the peer finished and everything was read. After a [`Node::conn_read`] that stopped
    /// inside a message, returns the rest of it.
    pub(crate) fn conn_read_message(&mut self, conn: ConnId) -> Result<Option<Vec<u8>>, ConnError> {
        let now = self.now;
        let Some(c) = self.cx.get_mut(conn) else {
            return self.read_gone(conn).map(|()| None);
        };
        let t = c.transport.as_mut().ok_or(ConnError::NotOpen)?;
        let result = t.read_message(now, &mut self.mux);
        self.after_read(conn);
        result
    }

    /// After a read: reports what the refill brought in; a closed connection read to the end
    /// goes.
    fn after_read(&mut self, conn: ConnId) {
        self.drain_transport(conn);
        if self
            .cx
            .transport(conn)
            .is_some_and(|t| t.closed().is_some())
        {
            self.reap(conn);
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
        let t = c.transport.as_mut().ok_or(ConnError::NotOpen)?;
        let result = t.finish(now, &mut self.mux);
        self.drain_transport(conn);
        result
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
        if let Some(t) = self.cx.transport_mut(conn) {
            t.send_keep_alive(now, &mut self.mux);
        }
        self.drain_transport(conn);
    }
}
