//! [`Connection`]: an open, encrypted stream to a peer, as `AsyncRead + AsyncWrite`, or as whole
//! secret-stream messages ([`Connection::send_message`], [`Connection::recv_message`]).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncWrite};
use hyperdht_kit::ConnMeta;
use hyperdht_proto::{ConnCloseReason, ConnError, ConnId, Timestamp};

use crate::shared::{Deferred, HandleRef};

/// Bytes handed to the node per write call, so one huge write cannot queue unbounded output
/// (the node takes a whole write or blocks).
const MAX_WRITE: usize = 64 * 1024;

/// An established connection: the authenticated Noise handshake, the open path, and the
/// encrypted byte stream (UDX + secret-stream) as [`AsyncRead`] + [`AsyncWrite`].
///
/// Reads return decrypted bytes, `Ok(0)` once the peer finished its side. Writes wait while the
/// connection holds too much unsent data. [`AsyncWriteExt::close`](futures_lite::AsyncWriteExt::close)
/// finishes our side (the peer reads EOF after the last byte; we can still read). `&Connection`
/// is `AsyncRead + AsyncWrite` too, so one task may read while another writes.
///
/// Dropping the handle finishes our side like `close` (unless it was reset); the driver then
/// discards what the peer still sends and forgets the connection once both sides are done. Use
/// [`Connection::reset`] to abort at once.
pub struct Connection {
    shared: HandleRef,
    meta: ConnMeta,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

fn closed_error(r: ConnCloseReason) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, r.to_string())
}

fn node_gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "node is shut down")
}

/// Stores `cx`'s waker in `slot` unless it is already there.
fn park(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

impl Connection {
    pub(crate) fn new(shared: HandleRef, meta: ConnMeta) -> Connection {
        Connection { shared, meta }
    }

    hyperdht_kit::connection_accessors!(meta);

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<ConnCloseReason> {
        self.shared
            .lock()
            .conns
            .get(&self.meta.id)
            .and_then(|s| s.closed)
    }

    /// Aborts the connection at once (UDX DESTROY): unsent data is lost, both sides see an
    /// error.
    pub fn reset(&self) {
        {
            let mut st = self.shared.lock();
            let now = st.core.now();
            st.core.node.conn(self.meta.id).reset(now);
        }
        self.shared.waker.wake();
    }

    /// Sends `message` as one secret-stream message: the peer reads it whole (a JS peer as
    /// one `data` event, a Rust one with [`Connection::recv_message`]). Waits while the
    /// connection holds too much unsent data. An empty message is not sent (hyperdht peers
    /// drop empty messages as keep-alives).
    ///
    /// Fails with `InvalidInput` over [`hyperdht_proto::MAX_MESSAGE`] bytes.
    pub async fn send_message(&self, message: &[u8]) -> io::Result<()> {
        if message.len() > hyperdht_proto::MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                ConnError::MessageTooLarge,
            ));
        }
        future::poll_fn(|cx| {
            self.poll_write_with(cx, |node, now, id| {
                node.conn(id).write_message(now, message)
            })
        })
        .await
    }

    /// Reads the next message whole, as the peer wrote it (one JS `socket.write`); `Ok(None)`
    /// once the peer finished and every message was read. After a read through [`AsyncRead`]
    /// that stopped inside a message, returns the rest of it. Cancel-safe: a message
    /// leaves the node only when it is returned.
    pub async fn recv_message(&self) -> io::Result<Option<Vec<u8>>> {
        future::poll_fn(|cx| self.poll_read_with(cx, |node, id| node.conn(id).read_message()))
            .await
            .map(Option::flatten)
    }

    /// Runs a read on the node; parks the task while the node has nothing. `Ok(None)` at the
    /// end of the peer's stream.
    fn poll_read_with<T>(
        &self,
        cx: &mut Context<'_>,
        read: impl FnOnce(&mut hyperdht_proto::Node, ConnId) -> Result<T, ConnError>,
    ) -> Poll<io::Result<Option<T>>> {
        let mut st = self.shared.lock();
        match read(&mut st.core.node, self.meta.id) {
            Ok(v) => Poll::Ready(Ok(Some(v))),
            Err(ConnError::Blocked) => {
                if st.closed {
                    return Poll::Ready(Err(node_gone()));
                }
                if let Some(slot) = st.conns.get_mut(&self.meta.id) {
                    park(&mut slot.read_waker, cx);
                }
                Poll::Pending
            }
            Err(ConnError::Closed(ConnCloseReason::Finished)) => Poll::Ready(Ok(None)),
            Err(ConnError::Closed(r)) => Poll::Ready(Err(closed_error(r))),
            Err(e) => Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, e))),
        }
    }

    /// Runs a write on the node and wakes the driver to send it; parks the task while the
    /// connection is blocked.
    fn poll_write_with<T>(
        &self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&mut hyperdht_proto::Node, Timestamp, ConnId) -> Result<T, ConnError>,
    ) -> Poll<io::Result<T>> {
        let mut st = self.shared.lock();
        if st.closed {
            return Poll::Ready(Err(node_gone()));
        }
        let now = st.core.now();
        match write(&mut st.core.node, now, self.meta.id) {
            Ok(v) => {
                drop(st);
                self.shared.waker.wake();
                Poll::Ready(Ok(v))
            }
            Err(ConnError::Blocked) => {
                tracing::trace!(conn = ?self.meta.id, "write blocked");
                if let Some(slot) = st.conns.get_mut(&self.meta.id) {
                    park(&mut slot.write_waker, cx);
                }
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(write_error(e))),
        }
    }

    fn read_inner(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.poll_read_with(cx, |node, id| node.conn(id).read(buf))
            .map_ok(|n| n.unwrap_or(0))
    }

    fn write_inner(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        self.poll_write_with(cx, |node, now, id| node.conn(id).write(now, data))
    }

    fn close_inner(&self) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        if st.conns.get(&self.meta.id).is_some_and(|s| s.finished) {
            return Poll::Ready(Ok(()));
        }
        if st.closed {
            return Poll::Ready(Err(node_gone()));
        }
        let now = st.core.now();
        match st.core.node.conn(self.meta.id).finish(now) {
            Ok(()) => {
                if let Some(s) = st.conns.get_mut(&self.meta.id) {
                    s.finished = true;
                }
                drop(st);
                self.shared.waker.wake();
                Poll::Ready(Ok(()))
            }
            Err(ConnError::Closed(ConnCloseReason::Finished)) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(write_error(e))),
        }
    }
}

fn write_error(e: ConnError) -> io::Error {
    match e {
        ConnError::Closed(r) => closed_error(r),
        ConnError::Finished => io::Error::new(io::ErrorKind::BrokenPipe, e),
        e => io::Error::new(io::ErrorKind::NotConnected, e),
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Never lock the state here (see `shared`): the driver does the work.
        self.shared.defer(Deferred::DropConn(self.meta.id));
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.read_inner(cx, buf)
    }
}

impl AsyncRead for &Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.read_inner(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_inner(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close_inner()
    }
}

impl AsyncWrite for &Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_inner(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close_inner()
    }
}
