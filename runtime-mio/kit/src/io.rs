//! The datagram I/O a driver lends the kit ([`DatagramIo`]: its sockets by the node's ids, on
//! its reactor, in the spirit of quinn's `AsyncUdpSocket`), and the datagrams taken from the
//! node that the kernel has not taken yet ([`Outbox`]: sent a batch per system call, a datagram
//! with its own TTL alone, held while the socket is full).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};

use hyperdht_proto::{Node, SocketId, Transmit};

use crate::batch::{self, BATCH};
use crate::udp::{self, UdpIo};

/// A driver's sockets, as the flush loop uses them.
pub trait DatagramIo {
    /// The socket type the batched I/O reads and writes.
    type Socket: UdpIo + ?Sized;

    /// Binds socket `id` at `addr` (with [`udp::bind`]) and registers it with the reactor;
    /// its local address.
    fn bind(&mut self, id: SocketId, addr: SocketAddrV4) -> io::Result<SocketAddr>;

    /// Deregisters and closes socket `id`.
    fn close(&mut self, id: SocketId);

    /// Socket `id`, while bound.
    fn socket(&self, id: SocketId) -> Option<&Self::Socket>;

    /// Sending on `id` would block: arrange to hear when it is writable, then call
    /// [`Outbox::unblock`].
    fn wait_writable(&mut self, id: SocketId);
}

/// Datagrams taken from the node and not sent yet: at most [`BATCH`]; the node keeps anything
/// further until these are gone.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Transmit>,
    /// The socket whose buffer was full when the front was sent; sending resumes when it is
    /// writable (or closed).
    blocked: Option<SocketId>,
}

impl Outbox {
    /// The socket sending waits for, if any.
    pub fn blocked(&self) -> Option<SocketId> {
        self.blocked
    }

    /// `id` is writable again: the next flush sends.
    pub fn unblock(&mut self, id: SocketId) {
        if self.blocked == Some(id) {
            self.blocked = None;
        }
    }

    /// Socket `id` closed: its datagrams are dropped.
    pub fn forget_socket(&mut self, id: SocketId) {
        self.queue.retain(|t| t.socket != id);
        self.unblock(id);
    }

    /// Drops everything (the driver stops).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.blocked = None;
    }

    /// Takes transmits from the node and sends them, a batch per system call, until the node
    /// has none left or the kernel would block. Returns whether anything was taken or sent.
    pub fn send<I: DatagramIo + ?Sized>(&mut self, node: &mut Node, io: &mut I) -> bool {
        let mut progressed = false;
        while self.blocked.is_none() {
            while self.queue.len() < BATCH {
                match node.poll_transmit() {
                    Some(t) => self.queue.push_back(t),
                    None => break,
                }
            }
            if self.queue.is_empty() {
                break;
            }
            progressed = true;
            self.send_front(io);
        }
        progressed
    }

    /// Sends the datagrams at the front that share a socket and need no TTL of their own, in
    /// one call (a datagram with its own TTL goes alone). Sent ones leave the queue; one the
    /// kernel rejects is dropped (logged); if the socket is full, the queue is kept and the
    /// outbox blocked until it drains.
    fn send_front<I: DatagramIo + ?Sized>(&mut self, io: &mut I) {
        let Some(front) = self.queue.front() else {
            return;
        };
        let socket = front.socket;
        let Some(sock) = io.socket(socket) else {
            tracing::debug!(?socket, "transmit on unknown socket dropped");
            self.queue.pop_front();
            return;
        };
        let result = match front.ttl {
            Some(ttl) => udp::send_with_ttl(sock, &front.payload, front.dst, ttl).map(|_| 1),
            None => {
                let run: Vec<(&[u8], SocketAddr)> = self
                    .queue
                    .iter()
                    .take_while(|t| t.socket == socket && t.ttl.is_none())
                    .map(|t| (t.payload.as_slice(), t.dst))
                    .collect();
                batch::send_batch(sock, &run)
            }
        };
        match result {
            // Fewer sent than asked: the next call sends the rest or reports why it fails.
            Ok(sent) => drop(self.queue.drain(..sent)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.blocked = Some(socket);
                io.wait_writable(socket);
            }
            Err(e) => {
                if let Some(t) = self.queue.pop_front() {
                    tracing::debug!(dst = %t.dst, error = %e, "send failed");
                }
            }
        }
    }
}
