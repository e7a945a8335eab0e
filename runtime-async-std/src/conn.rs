//! [`Connection`]: an open, encrypted byte stream to a peer, as `AsyncRead + AsyncWrite`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_lite::io::{AsyncRead, AsyncWrite};
use hyperdht_proto::noise::HandshakeOutput;
use hyperdht_proto::{ConnCloseReason, ConnError, ConnId};

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
    id: ConnId,
    remote: SocketAddr,
    local_addr: Option<SocketAddr>,
    handshake: Box<HandshakeOutput>,
    local_udx_id: u32,
    remote_udx_id: u32,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("remote", &self.remote)
            .field("local_addr", &self.local_addr)
            .field("local_udx_id", &self.local_udx_id)
            .field("remote_udx_id", &self.remote_udx_id)
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
    pub(crate) fn new(
        shared: HandleRef,
        id: ConnId,
        remote: SocketAddr,
        local_addr: Option<SocketAddr>,
        handshake: Box<HandshakeOutput>,
        local_udx_id: u32,
        remote_udx_id: u32,
    ) -> Connection {
        Connection {
            shared,
            id,
            remote,
            local_addr,
            handshake,
            local_udx_id,
            remote_udx_id,
        }
    }

    /// The connection's id in the node.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's static public key (authenticated by the handshake).
    pub fn remote_public_key(&self) -> [u8; 32] {
        self.handshake.remote_public_key
    }

    /// The peer's address on the path in use.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Our socket's local address on the path, when it is one of the node's two DHT sockets
    /// (`None` for a holepunch socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Keys and hash of the Noise handshake (`is_initiator` tells the client side).
    pub fn handshake(&self) -> &HandshakeOutput {
        &self.handshake
    }

    /// Our UDX stream id.
    pub fn local_udx_id(&self) -> u32 {
        self.local_udx_id
    }

    /// The peer's UDX stream id.
    pub fn remote_udx_id(&self) -> u32 {
        self.remote_udx_id
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<ConnCloseReason> {
        self.shared
            .lock()
            .conns
            .get(&self.id)
            .and_then(|s| s.closed)
    }

    /// Aborts the connection at once (UDX DESTROY): unsent data is lost, both sides see an
    /// error.
    pub fn reset(&self) {
        {
            let mut st = self.shared.lock();
            let now = st.now();
            st.node.conn_reset(now, self.id);
        }
        self.shared.waker.wake();
    }

    fn read_inner(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut st = self.shared.lock();
        let r = st.node.conn_read(self.id, buf);
        match r {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(ConnError::Blocked) => {
                if st.closed {
                    return Poll::Ready(Err(node_gone()));
                }
                if let Some(slot) = st.conns.get_mut(&self.id) {
                    park(&mut slot.read_waker, cx);
                }
                Poll::Pending
            }
            Err(ConnError::Closed(ConnCloseReason::Finished)) => Poll::Ready(Ok(0)),
            Err(ConnError::Closed(r)) => Poll::Ready(Err(closed_error(r))),
            Err(e) => Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, e))),
        }
    }

    fn write_inner(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut st = self.shared.lock();
        if st.closed {
            return Poll::Ready(Err(node_gone()));
        }
        let now = st.now();
        let data = &data[..data.len().min(MAX_WRITE)];
        match st.node.conn_write(now, self.id, data) {
            Ok(n) => {
                drop(st);
                self.shared.waker.wake();
                Poll::Ready(Ok(n))
            }
            Err(ConnError::Blocked) => {
                tracing::trace!(conn = ?self.id, "write blocked");
                if let Some(slot) = st.conns.get_mut(&self.id) {
                    park(&mut slot.write_waker, cx);
                }
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(write_error(e))),
        }
    }

    fn close_inner(&self) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        if st.conns.get(&self.id).is_some_and(|s| s.finished) {
            return Poll::Ready(Ok(()));
        }
        if st.closed {
            return Poll::Ready(Err(node_gone()));
        }
        let now = st.now();
        match st.node.conn_finish(now, self.id) {
            Ok(()) => {
                if let Some(s) = st.conns.get_mut(&self.id) {
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
        self.shared.defer(Deferred::DropConn(self.id));
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
