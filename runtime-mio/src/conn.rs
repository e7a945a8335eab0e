//! Blocking streams over connections: [`ConnReader`] (`std::io::Read`, or whole messages with
//! [`ConnReader::recv_message`]) and [`ConnWriter`] (`std::io::Write`, or whole messages with
//! [`ConnWriter::send_message`]; cloneable). The driver thread decrypts and forwards what
//! arrives through a bounded channel of chunks of at most [`CHUNK`] bytes (so a slow reader
//! slows the peer through the UDX window, not memory), and carries out writes, parking them
//! while the connection is blocked.
//!
//! Messages are secret-stream's: one JS `socket.write(buf)` is one message and arrives in JS
//! as one `data` event. Chunks mark where messages end, so a reader can take them whole.
//!
//! Writes are pipelined: `write` hands the bytes to the driver and returns at once while the
//! connection's writers have less than `WRITE_WINDOW` bytes in the driver's hands, and waits
//! otherwise. Each handed-over write carries a [`WriteTicket`] that gives its bytes back to the
//! window exactly once: when the node took them, when they failed, or when the driver dropped
//! them unprocessed (it shut down). A failure is reported by the next `write`, `flush` or
//! `finish`; `flush` waits until the node has taken everything written.

use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};

use hyperdht_kit::ConnMeta;
use hyperdht_proto::{ConnCloseReason, ConnError, ConnId};

use crate::handle::{Command, HandleInner};

/// An established connection: the peer is authenticated, the path carries data. Read with
/// [`Connection::reader`], write with [`Connection::writer`] (each can move to its own thread).
#[derive(Debug)]
pub struct Connection {
    meta: ConnMeta,
    /// Decrypted bytes from the peer.
    pub reader: ConnReader,
    /// Bytes to the peer.
    pub writer: ConnWriter,
}

impl Connection {
    pub(crate) fn new(meta: ConnMeta, reader: ConnReader, writer: ConnWriter) -> Connection {
        Connection {
            meta,
            reader,
            writer,
        }
    }

    hyperdht_kit::connection_accessors!(meta);
}

/// Chunks buffered between the driver and a reader.
pub(crate) const READ_CHANNEL: usize = 16;

/// Bytes in one chunk at most (a longer message is split over several).
pub(crate) const CHUNK: usize = 64 * 1024;

/// What the driver hands a reader.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Decrypted bytes; `ends` are the offsets in `bytes` where a message ends, ascending.
    Data {
        bytes: Vec<u8>,
        ends: Vec<usize>,
    },
    Eof,
    Closed(ConnCloseReason),
}

/// What a writer hands the driver.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Part of the byte stream (the node splits it into messages as it likes).
    Bytes(Vec<u8>),
    /// One message, kept whole.
    Message(Vec<u8>),
}

pub(crate) fn read_channel() -> (SyncSender<Chunk>, Receiver<Chunk>) {
    mpsc::sync_channel(READ_CHANNEL)
}

/// The reading half of a connection.
#[derive(Debug)]
pub struct ConnReader {
    conn: ConnId,
    rx: Receiver<Chunk>,
    /// The chunk being read, how far, and where its messages end (`ends[next_end..]` are the
    /// ends not yet passed).
    buf: Vec<u8>,
    pos: usize,
    ends: Vec<usize>,
    next_end: usize,
    done: Option<Result<(), ConnCloseReason>>,
    inner: Arc<HandleInner>,
}

/// The writing half of a connection; clones write to the same connection (and share its
/// window).
#[derive(Clone, Debug)]
pub struct ConnWriter {
    conn: ConnId,
    inner: Arc<HandleInner>,
    window: Arc<WriteWindow>,
}

/// Bytes a connection's writers may have handed to the driver and not yet seen the node take.
/// The node itself queues up to `MAX_PENDING_OUTPUT` of encrypted output before it reports
/// the connection blocked; this keeps the driver fed without a round trip per write.
pub(crate) const WRITE_WINDOW: usize = 256 * 1024;

/// The bytes in the driver's hands for one connection, and the first error of a write.
#[derive(Debug, Default)]
pub(crate) struct WriteWindow {
    state: Mutex<WindowState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct WindowState {
    in_flight: usize,
    failed: Option<(io::ErrorKind, String)>,
}

impl WriteWindow {
    fn lock(&self) -> std::sync::MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `n` more bytes fit (or nothing is in flight), then counts them.
    fn reserve(&self, n: usize) -> io::Result<()> {
        let mut st = self.lock();
        loop {
            if let Some((kind, msg)) = &st.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if st.in_flight == 0 || st.in_flight + n <= WRITE_WINDOW {
                st.in_flight += n;
                return Ok(());
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until the node took every byte handed over; the first failure if any.
    fn drain(&self) -> io::Result<()> {
        let mut st = self.lock();
        while st.in_flight > 0 {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        match &st.failed {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }

    fn settle(&self, len: usize, failed: Option<(io::ErrorKind, String)>) {
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(len);
        if st.failed.is_none() {
            st.failed = failed;
        }
        drop(st);
        self.changed.notify_all();
    }
}

/// One write in the driver's hands. Settling it (or dropping it unsettled) gives its bytes
/// back to the window.
#[derive(Debug)]
pub(crate) struct WriteTicket {
    window: Arc<WriteWindow>,
    len: usize,
    settled: bool,
}

impl WriteTicket {
    /// The node took the bytes (`Ok`) or refused them for good (`Err`).
    pub(crate) fn settle(mut self, result: Result<(), hyperdht_proto::ConnError>) {
        let failed = result
            .err()
            .map(|e| (io::ErrorKind::BrokenPipe, e.to_string()));
        self.window.settle(self.len, failed);
        self.settled = true;
    }
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        if !self.settled {
            // Dropped by a driver that stopped before carrying the write out.
            let failed = (io::ErrorKind::BrokenPipe, "node is shut down".to_string());
            self.window.settle(self.len, Some(failed));
        }
    }
}

impl ConnReader {
    pub(crate) fn new(conn: ConnId, rx: Receiver<Chunk>, inner: Arc<HandleInner>) -> Self {
        ConnReader {
            conn,
            rx,
            buf: Vec::new(),
            pos: 0,
            ends: Vec::new(),
            next_end: 0,
            done: None,
            inner,
        }
    }

    /// The connection.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Reads the next message whole, as the peer wrote it (one JS `socket.write`); `Ok(None)`
    /// once the peer finished and every message was read. After a `read` that stopped
    /// inside a message, returns the rest of it. Waits until the whole message is here.
    pub fn recv_message(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut message = Vec::new();
        loop {
            if self.pos < self.buf.len() {
                // Ends at or before `pos` were passed by byte reads.
                while self.ends.get(self.next_end).is_some_and(|&e| e <= self.pos) {
                    self.next_end += 1;
                }
                match self.ends.get(self.next_end) {
                    Some(&end) => {
                        message.extend_from_slice(&self.buf[self.pos..end]);
                        self.pos = end;
                        self.next_end += 1;
                        return Ok(Some(message));
                    }
                    None => {
                        message.extend_from_slice(&self.buf[self.pos..]);
                        self.pos = self.buf.len();
                    }
                }
            }
            if !self.next_chunk()? {
                // The driver only ends a stream after whole messages: anything gathered here
                // is the tail of one a byte read began.
                return Ok((!message.is_empty()).then_some(message));
            }
        }
    }

    /// Waits for the next chunk; `false` at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<bool> {
        loop {
            match &self.done {
                Some(Ok(())) => return Ok(false),
                Some(Err(r)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        r.to_string(),
                    ))
                }
                None => {}
            }
            match self.rx.recv() {
                Ok(Chunk::Data { bytes, ends }) => {
                    self.buf = bytes;
                    self.pos = 0;
                    self.ends = ends;
                    self.next_end = 0;
                    // Room in the channel again: let the driver forward more.
                    let _ = self.inner.send(Command::ReadMore(self.conn));
                    return Ok(true);
                }
                Ok(Chunk::Eof) => self.done = Some(Ok(())),
                Ok(Chunk::Closed(r)) => self.done = Some(Err(r)),
                Err(_) => self.done = Some(Err(ConnCloseReason::Destroyed)),
            }
        }
    }
}

impl io::Read for ConnReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ConnWriter {
    pub(crate) fn new(conn: ConnId, inner: Arc<HandleInner>) -> Self {
        ConnWriter {
            conn,
            inner,
            window: Arc::default(),
        }
    }

    /// The connection.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Ends our side once everything written is delivered (the peer reads EOF). Waits until
    /// the node has taken every byte written before, so the end cannot overtake them.
    pub fn finish(&self) -> io::Result<()> {
        self.window.drain()?;
        self.inner.send(Command::Finish(self.conn)).map_err(to_io)
    }

    /// Resets the connection at once.
    pub fn reset(&self) {
        let _ = self.inner.send(Command::Reset(self.conn));
    }

    /// Sends `message` as one secret-stream message: the peer reads it whole (a JS peer as one
    /// `data` event, a Rust one with [`ConnReader::recv_message`]). Like `write`, it returns
    /// once the driver has it, waiting only while the connection's window is full; a failure
    /// is reported by the next write, `flush` or `finish`. An empty message is not sent
    /// (hyperdht peers drop empty messages as keep-alives).
    ///
    /// Fails at once with `InvalidInput` over [`hyperdht_proto::MAX_MESSAGE`]
    /// bytes.
    pub fn send_message(&self, message: &[u8]) -> io::Result<()> {
        if message.len() > hyperdht_proto::MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                ConnError::MessageTooLarge,
            ));
        }
        if message.is_empty() {
            return Ok(());
        }
        self.hand_over(Outgoing::Message(message.to_vec()), message.len())
    }

    /// Reserves `len` bytes of the window and gives `data` to the driver.
    fn hand_over(&self, data: Outgoing, len: usize) -> io::Result<()> {
        self.window.reserve(len)?;
        let ticket = WriteTicket {
            window: self.window.clone(),
            len,
            settled: false,
        };
        // If the driver is gone, the command (and the ticket in it) is dropped: settled.
        self.inner
            .send(Command::Write(self.conn, data, ticket))
            .map_err(to_io)
    }
}

impl io::Write for ConnWriter {
    /// Hands up to 256 KiB to the driver; waits only while the connection's window (256 KiB
    /// in the driver's hands) is full. An error of an earlier write is reported here.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let n = data.len().min(WRITE_WINDOW);
        self.hand_over(Outgoing::Bytes(data[..n].to_vec()), n)?;
        Ok(n)
    }

    /// Waits until the node has taken every byte written (encrypted and queued on the UDX
    /// stream); reports the first write that failed.
    fn flush(&mut self) -> io::Result<()> {
        self.window.drain()
    }
}

fn to_io(e: crate::Error) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, e.to_string())
}
