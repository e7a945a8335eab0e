//! An established connection's transport: one UDX stream carrying secret-stream, as hyperdht
//! does (`rawStream` + `NoiseSecretStream`).
//!
//! The stream is created when the handshake succeeds and waits for its first packet
//! (`accept`), so whichever side reaches the other first opens the path; it is connected to
//! the peer's stream id once a path is known ([`Transport::handle_path`]), and the
//! secret-stream header goes out at once.
//!
//! A [`Transport`] speaks to the rest of the node through a narrow interface: the UDX
//! multiplexer its stream lives in is passed to each call, and what the application must hear
//! comes out of [`Transport::poll_event`] as a [`TransportEvent`]. It never sees the endpoint.
//! [`TransportEvent::Connected`] is reported only when the peer's secret-stream header has
//! arrived: the peer accepted the path and holds the same session, not just us.

use std::collections::VecDeque;
use std::net::SocketAddr;

use core::fmt;

use crate::ids::SocketId;
use crate::noise::HandshakeOutput;
use crate::rng::Rng;
use crate::secretstream::{self, SecretStream, SecretStreamError, SessionKeys};
use crate::stream::{CloseReason, StreamError, StreamId, UdxMux};
use crate::time::Timestamp;

/// Encrypted bytes a connection may hold back beyond what its stream took; writes past this
/// block until [`Event::Writable`](crate::Event::Writable).
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
    /// Not open yet (wait for [`Event::Connected`](crate::Event::Connected)).
    NotOpen,
    /// Nothing now: wait for [`Event::Readable`](crate::Event::Readable) / [`Event::Writable`](crate::Event::Writable).
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

/// How long a closed connection's unread input waits for the application before the node
/// drops it with the connection.
pub const CLOSED_LINGER: core::time::Duration = core::time::Duration::from_secs(60);

/// What a transport reports, in the order it happened (drain with [`Transport::poll_event`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransportEvent {
    /// The peer's secret-stream header arrived: the connection is open.
    Connected,
    /// Decrypted input is waiting.
    Readable,
    /// Pending output dropped below half its bound after a write was refused.
    Writable,
    /// The peer finished its side.
    Finished,
    /// The transport cannot go on (secret-stream failed): close it with this reason, and reset.
    Failed(ConnCloseReason),
}

/// How a [`Transport::close`] left things, for the endpoint to finish.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Closing {
    /// Whether the peer's header had arrived ([`TransportEvent::Connected`] was reported).
    pub was_connected: bool,
    /// The server whose live connections counted this one.
    pub counted_by: Option<u64>,
    /// Whether the application already read everything (else it lingers).
    pub spent: bool,
}

/// One connection's transport state.
#[derive(Debug)]
pub(crate) struct Transport {
    stream: StreamId,
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
    /// The peer finished its side.
    eof: bool,
    /// Encrypted bytes received before the secret-stream existed.
    early: VecDeque<u8>,
    /// The server whose live connections count this one, until it closes or goes.
    counted_by: Option<u64>,
    events: VecDeque<TransportEvent>,
}

impl Transport {
    /// A transport on `stream` (already made in `mux`), to talk to the peer's `remote_udx_id`
    /// under the keys of `handshake`.
    pub fn new(stream: StreamId, remote_udx_id: u32, handshake: HandshakeOutput) -> Transport {
        Transport {
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
            events: VecDeque::new(),
        }
    }

    /// Its UDX stream.
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// The handshake it runs on.
    pub fn handshake(&self) -> &HandshakeOutput {
        &self.handshake
    }

    /// The path it runs on, once chosen.
    pub fn path(&self) -> Option<(SocketId, SocketAddr)> {
        self.path
    }

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

    /// Input held for the application: decrypted messages not read yet plus the part of a
    /// frame still coming in (what [`MAX_UNREAD_INPUT`] bounds).
    pub fn unread_input(&self) -> usize {
        self.secret.as_ref().map_or(0, held_input)
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

    /// The next thing to report, if any.
    pub fn poll_event(&mut self) -> Option<TransportEvent> {
        self.events.pop_front()
    }

    /// Counts it among `server`'s live connections; `false` if it is closed or already
    /// counted.
    pub fn count_by(&mut self, server: u64) -> bool {
        if self.counted_by.is_some() || self.closed.is_some() {
            return false;
        }
        self.counted_by = Some(server);
        true
    }

    /// Stops being counted; returns by which server it was.
    pub fn take_counted_by(&mut self) -> Option<u64> {
        self.counted_by.take()
    }

    /// Points the stream at another remote stream (a blind relay's) before its path is chosen.
    pub fn set_remote_udx_id(&mut self, remote_udx_id: u32) {
        self.remote_udx_id = remote_udx_id;
    }

    /// A path is known: connects the stream (unless the first packet already did) and starts
    /// secret-stream. Only the first path counts.
    pub fn handle_path(
        &mut self,
        now: Timestamp,
        mux: &mut UdxMux,
        rng: &mut Rng,
        socket: SocketId,
        remote: SocketAddr,
    ) {
        if self.path.is_some() {
            return;
        }
        self.path = Some((socket, remote));
        let connected = mux.info(self.stream).is_some_and(|i| i.connected);
        if !connected {
            let _ = mux.connect(now, self.stream, socket, self.remote_udx_id, remote);
        }
        let keys = SessionKeys::from(&self.handshake);
        let config = secretstream::Config::default();
        self.secret = Some(SecretStream::new(now, &keys, rng, config));
        self.flush(now, mux);
        // Bytes that raced ahead of us (the peer's header).
        self.handle_input(now, mux);
    }

    /// Moves encrypted output from secret-stream into the UDX stream.
    pub fn flush(&mut self, now: Timestamp, mux: &mut UdxMux) {
        let Some(secret) = self.secret.as_mut() else {
            return;
        };
        loop {
            let out = secret.pending_output();
            if out.is_empty() {
                break;
            }
            match mux.write(now, self.stream, out) {
                Ok(0) | Err(StreamError::Blocked) => break,
                Ok(n) => secret.consume_output(n),
                Err(_) => break,
            }
        }
        let writable = self.write_blocked && secret.pending_output().len() < MAX_PENDING_OUTPUT / 2;
        if writable {
            self.write_blocked = false;
        }
        if self.finishing && secret.pending_output().is_empty() {
            self.finishing = false;
            let _ = mux.finish(now, self.stream);
        }
        if writable {
            self.events.push_back(TransportEvent::Writable);
        }
    }

    /// Reads what the UDX stream has into secret-stream, up to what [`MAX_UNREAD_INPUT`]
    /// leaves room for.
    pub fn handle_input(&mut self, now: Timestamp, mux: &mut UdxMux) {
        if self.secret.as_ref().is_some_and(|s| !may_take_input(s)) {
            return;
        }
        // Up to what is left under the cap, or what completes the one frame that may pass it;
        // the rest waits in the UDX receive buffer.
        let room = match self.secret.as_ref() {
            None => MAX_UNREAD_INPUT.saturating_sub(self.early.len()),
            Some(s) => match MAX_UNREAD_INPUT.checked_sub(held_input(s)) {
                Some(left) if left > 0 => left,
                _ => s.missing_frame_bytes().max(1),
            },
        };
        let mut buf = Vec::new();
        loop {
            if buf.len() >= room {
                break;
            }
            let max = room - buf.len();
            match mux.read_into_at_most(self.stream, &mut buf, max) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let Some(secret) = self.secret.as_mut() else {
            self.early.extend(buf);
            return;
        };
        if !self.early.is_empty() {
            let early: Vec<u8> = self.early.drain(..).collect();
            buf.splice(0..0, early);
        }
        let before = secret.readable_bytes();
        if let Err(e) = secret.handle_input(now, &buf) {
            tracing::info!(error = %e, "secret-stream failed");
            let reason = ConnCloseReason::SecretStream(e);
            self.events.push_back(TransportEvent::Failed(reason));
            return;
        }
        let established = secret.is_established();
        let readable = secret.readable_bytes() > before;
        if established && !self.connected {
            self.connected = true;
            self.events.push_back(TransportEvent::Connected);
        }
        self.flush(now, mux);
        if readable {
            self.events.push_back(TransportEvent::Readable);
        }
        if self.eof {
            self.events.push_back(TransportEvent::Finished);
        }
    }

    /// Runs the keep-alive timer if it is due.
    pub fn handle_timeout(&mut self, now: Timestamp, mux: &mut UdxMux) {
        if self.closed.is_some() {
            return;
        }
        let Some(s) = self.secret.as_mut() else {
            return;
        };
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
            self.flush(now, mux);
        }
    }

    /// Seals each of `messages` as one secret-stream message, if the connection can take
    /// them. A secret-stream failure reports [`TransportEvent::Failed`] and returns its reason.
    pub fn write_messages<'m>(
        &mut self,
        now: Timestamp,
        mux: &mut UdxMux,
        messages: impl Iterator<Item = &'m [u8]>,
    ) -> Result<(), ConnError> {
        if let Some(r) = self.closed {
            return Err(ConnError::Closed(r));
        }
        let secret = self.secret.as_mut().ok_or(ConnError::NotOpen)?;
        if !self.connected {
            return Err(ConnError::NotOpen);
        }
        if self.write_closed {
            return Err(ConnError::Finished);
        }
        if secret.pending_output().len() >= MAX_PENDING_OUTPUT {
            self.write_blocked = true;
            return Err(ConnError::Blocked);
        }
        for message in messages {
            if let Err(e) = secret.write(now, message) {
                let reason = ConnCloseReason::SecretStream(e);
                self.events.push_back(TransportEvent::Failed(reason));
                return Err(ConnError::Closed(reason));
            }
        }
        self.flush(now, mux);
        Ok(())
    }

    /// Reads decrypted bytes as a byte stream; `Ok(0)` (for a non-empty `buf`) once the peer
    /// finished and everything was read. Takes what the UDX stream kept back once the unread
    /// input is low.
    pub fn read(
        &mut self,
        now: Timestamp,
        mux: &mut UdxMux,
        buf: &mut [u8],
    ) -> Result<usize, ConnError> {
        let secret = self.secret.as_mut().ok_or(ConnError::NotOpen)?;
        let n = secret.read(buf);
        if n > 0 || buf.is_empty() {
            self.refill(now, mux);
            return Ok(n);
        }
        self.read_nothing().map(|()| 0)
    }

    /// Reads the next message whole, as the peer wrote it; `Ok(None)` once the peer finished
    /// and everything was read.
    pub fn read_message(
        &mut self,
        now: Timestamp,
        mux: &mut UdxMux,
    ) -> Result<Option<Vec<u8>>, ConnError> {
        let secret = self.secret.as_mut().ok_or(ConnError::NotOpen)?;
        if let Some(message) = secret.poll_message() {
            self.refill(now, mux);
            return Ok(Some(message));
        }
        self.read_nothing().map(|()| None)
    }

    /// After a read: once the unread input is below half its bound, takes what the UDX stream
    /// kept back.
    fn refill(&mut self, now: Timestamp, mux: &mut UdxMux) {
        if self.closed.is_some() {
            return;
        }
        let low = self.secret.as_ref().is_some_and(|s| {
            held_input(s) < MAX_UNREAD_INPUT / 2 || (s.readable_bytes() == 0 && may_take_input(s))
        });
        if low {
            self.handle_input(now, mux);
        }
    }

    /// Why a read found nothing: `Ok` at the end of the peer's stream, else `Blocked` or the
    /// close reason.
    fn read_nothing(&self) -> Result<(), ConnError> {
        if self.eof {
            return Ok(());
        }
        match self.closed {
            Some(r) => Err(ConnError::Closed(r)),
            None => Err(ConnError::Blocked),
        }
    }

    /// Ends our side once everything written is sent (UDX END).
    pub fn finish(&mut self, now: Timestamp, mux: &mut UdxMux) -> Result<(), ConnError> {
        if let Some(r) = self.closed {
            return Err(ConnError::Closed(r));
        }
        if !self.write_closed {
            self.write_closed = true;
            self.finishing = true;
        }
        self.flush(now, mux);
        Ok(())
    }

    /// Sends an empty message (a secret-stream keep-alive) now, if the connection is open and
    /// our side not finished.
    pub fn send_keep_alive(&mut self, now: Timestamp, mux: &mut UdxMux) {
        if !self.connected || self.write_closed || self.closed.is_some() {
            return;
        }
        let Some(secret) = self.secret.as_mut() else {
            return;
        };
        if secret.write(now, &[]).is_ok() {
            self.flush(now, mux);
        }
    }

    /// Closes it with `reason` (`reset` also sends DESTROY); `None` if it was closed already.
    pub fn close(
        &mut self,
        now: Timestamp,
        mux: &mut UdxMux,
        reason: ConnCloseReason,
        reset: bool,
    ) -> Option<Closing> {
        if self.closed.is_some() {
            return None;
        }
        self.closed = Some(reason);
        if reset {
            mux.reset(now, self.stream);
        }
        Some(Closing {
            was_connected: self.connected,
            counted_by: self.counted_by.take(),
            spent: self.is_spent(),
        })
    }

    /// Lets go of the stream: it is left to end on its own (a DESTROY, or the linger of a
    /// clean close, still goes out) with its unread input dropped.
    pub fn release(&mut self, now: Timestamp, mux: &mut UdxMux) {
        if self.closed.is_none() {
            mux.reset(now, self.stream);
        }
        // Reading the rest lets the mux remove a dead stream.
        let mut sink = Vec::new();
        while matches!(mux.read_into(self.stream, &mut sink), Ok(n) if n > 0) {
            sink.clear();
        }
    }
}
