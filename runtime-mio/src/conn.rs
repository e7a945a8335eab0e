//! Blocking byte streams over connections: [`ConnReader`] (`std::io::Read`) and [`ConnWriter`]
//! (`std::io::Write`, cloneable). The driver thread decrypts and forwards what arrives through
//! a bounded channel (so a slow reader slows the peer through the UDX window, not memory), and
//! carries out writes, parking a writer while the connection is blocked.

use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use hyperdht_proto::{ConnCloseReason, ConnId};

use crate::driver::{Command, HandleInner};

/// Chunks buffered between the driver and a reader (64 KiB each).
pub(crate) const READ_CHANNEL: usize = 16;

/// What the driver hands a reader.
#[derive(Debug)]
pub(crate) enum Chunk {
    Data(Vec<u8>),
    Eof,
    Closed(ConnCloseReason),
}

pub(crate) fn read_channel() -> (SyncSender<Chunk>, Receiver<Chunk>) {
    mpsc::sync_channel(READ_CHANNEL)
}

/// The reading half of a connection.
#[derive(Debug)]
pub struct ConnReader {
    conn: ConnId,
    rx: Receiver<Chunk>,
    buf: Vec<u8>,
    pos: usize,
    done: Option<Result<(), ConnCloseReason>>,
    inner: Arc<HandleInner>,
}

/// The writing half of a connection; clones write to the same connection.
#[derive(Clone, Debug)]
pub struct ConnWriter {
    conn: ConnId,
    inner: Arc<HandleInner>,
}

impl ConnReader {
    pub(crate) fn new(conn: ConnId, rx: Receiver<Chunk>, inner: Arc<HandleInner>) -> Self {
        ConnReader {
            conn,
            rx,
            buf: Vec::new(),
            pos: 0,
            done: None,
            inner,
        }
    }

    /// The connection.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

impl io::Read for ConnReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.buf.len() {
                let n = out.len().min(self.buf.len() - self.pos);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match &self.done {
                Some(Ok(())) => return Ok(0),
                Some(Err(r)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        r.to_string(),
                    ))
                }
                None => {}
            }
            match self.rx.recv() {
                Ok(Chunk::Data(d)) => {
                    self.buf = d;
                    self.pos = 0;
                    // Room in the channel again: let the driver forward more.
                    let _ = self.inner.send(Command::ReadMore(self.conn));
                }
                Ok(Chunk::Eof) => self.done = Some(Ok(())),
                Ok(Chunk::Closed(r)) => self.done = Some(Err(r)),
                Err(_) => self.done = Some(Err(ConnCloseReason::Destroyed)),
            }
        }
    }
}

impl ConnWriter {
    pub(crate) fn new(conn: ConnId, inner: Arc<HandleInner>) -> Self {
        ConnWriter { conn, inner }
    }

    /// Ends our side once everything written is delivered (the peer reads EOF).
    pub fn finish(&self) -> io::Result<()> {
        self.inner.send(Command::Finish(self.conn)).map_err(to_io)
    }

    /// Resets the connection at once.
    pub fn reset(&self) {
        let _ = self.inner.send(Command::Reset(self.conn));
    }
}

impl io::Write for ConnWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let (tx, rx) = mpsc::channel();
        self.inner
            .send(Command::Write(self.conn, data.to_vec(), tx))
            .map_err(to_io)?;
        match rx.recv() {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(io::Error::new(io::ErrorKind::BrokenPipe, e.to_string())),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "node is shut down",
            )),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn to_io(e: crate::Error) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, e.to_string())
}
