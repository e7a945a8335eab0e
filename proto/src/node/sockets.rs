//! Extra sockets (holepunch pools, birthday sockets): allocation through
//! [`crate::SocketOp::Bind`], ownership by a puncher, and the routing of what arrives on them.
//! hyperdht's socket pool (`lib/socket-pool.js`): datagrams of at most one byte on such a socket
//! are holepunch probes for its puncher; anything longer is dht-rpc, handled like traffic on the
//! DHT sockets (answered from the socket it came in on).

use std::net::{SocketAddr, SocketAddrV4};

use super::Node;
use crate::connection::Side;
use crate::event::{SocketOp, Transmit};
use crate::holepunch::puncher::{PunchOutput, Puncher};
use crate::ids::{ConnId, SocketId};
use crate::time::Timestamp;

/// Whose puncher a socket belongs to: the connection whose attempt (client side) or
/// handshake (server side) holds it.
pub(super) type PuncherRef = ConnId;

#[derive(Clone, Copy, Debug)]
pub(super) struct ExtraSocket {
    pub owner: PuncherRef,
    pub bound: bool,
    /// A connection whose path runs over this socket: it outlives the puncher.
    pub conn: Option<ConnId>,
}

/// Extra sockets a node may hold at once (a birthday punch needs 256).
pub const MAX_EXTRA_SOCKETS: usize = 1024;

impl Node {
    pub(super) fn alloc_socket(&mut self, owner: PuncherRef) -> Option<SocketId> {
        if self.extra_sockets.len() >= MAX_EXTRA_SOCKETS {
            tracing::warn!("extra socket limit reached");
            return None;
        }
        let id = SocketId(self.next_socket_index);
        self.next_socket_index = self.next_socket_index.wrapping_add(1).max(2);
        self.extra_sockets.insert(
            id,
            ExtraSocket {
                owner,
                bound: false,
                conn: None,
            },
        );
        self.socket_ops.push_back(SocketOp::Bind {
            socket: id,
            addr: SocketAddrV4::new(self.config.host, 0),
        });
        Some(id)
    }

    /// Closes an extra socket, unless a connection adopted it.
    pub(super) fn release_socket(&mut self, id: SocketId) {
        if self
            .extra_sockets
            .get(&id)
            .is_some_and(|e| e.conn.is_none())
        {
            self.extra_sockets.remove(&id);
            self.socket_ops.push_back(SocketOp::Close { socket: id });
        }
    }

    /// A connection's path runs over `socket`: keep it open for the connection's life.
    pub(super) fn adopt_socket(&mut self, socket: SocketId, conn: ConnId) {
        if let Some(e) = self.extra_sockets.get_mut(&socket) {
            e.conn = Some(conn);
        }
    }

    /// Closes the sockets a connection adopted.
    pub(super) fn release_conn_sockets(&mut self, conn: ConnId) {
        let ids: Vec<SocketId> = self
            .extra_sockets
            .iter()
            .filter(|(_, e)| e.conn == Some(conn))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.extra_sockets.remove(&id);
            self.socket_ops.push_back(SocketOp::Close { socket: id });
        }
    }

    /// An extra socket finished binding (or failed).
    pub(super) fn on_extra_socket(&mut self, now: Timestamp, socket: SocketId, ok: bool) {
        let Some(extra) = self.extra_sockets.get_mut(&socket) else {
            return;
        };
        if !ok {
            let owner = extra.owner;
            self.extra_sockets.remove(&socket);
            tracing::debug!(?socket, "puncher socket failed to bind");
            if let Some(p) = self.puncher_mut(owner) {
                p.destroy();
            }
            self.drain_puncher(owner);
            return;
        }
        extra.bound = true;
        let owner = extra.owner;
        if let Some(p) = self.puncher_mut(owner) {
            p.handle_socket(now, socket);
        } else {
            self.release_socket(socket);
        }
        self.drain_puncher(owner);
    }

    pub(super) fn is_extra_bound(&self, socket: SocketId) -> bool {
        self.extra_sockets.get(&socket).is_some_and(|e| e.bound)
    }

    /// A datagram of at most one byte on an extra socket: a holepunch probe.
    pub(super) fn on_probe(&mut self, socket: SocketId, from: SocketAddrV4) {
        let Some(extra) = self.extra_sockets.get(&socket) else {
            return;
        };
        let owner = extra.owner;
        tracing::trace!(%from, ?socket, "holepunch probe received");
        if let Some(p) = self.puncher_mut(owner) {
            p.handle_probe(socket, from);
        }
        self.drain_puncher(owner);
    }

    pub(super) fn puncher_mut(&mut self, owner: PuncherRef) -> Option<&mut Puncher> {
        self.cx.get_mut(owner)?.puncher_mut()
    }

    /// Carries out everything a puncher asked for.
    pub(super) fn drain_puncher(&mut self, owner: PuncherRef) {
        while let Some(out) = self.puncher_mut(owner).and_then(Puncher::poll_output) {
            match out {
                PunchOutput::NeedSocket => {
                    if self.alloc_socket(owner).is_none() {
                        if let Some(p) = self.puncher_mut(owner) {
                            p.destroy();
                        }
                    }
                }
                PunchOutput::Release(s) => self.release_socket(s),
                PunchOutput::Ping { socket, to } => {
                    let mut spec = super::RequestSpec::internal(crate::commands::PING);
                    spec.retry = false;
                    spec.socket = Some(socket);
                    let sent =
                        self.send_request(to, None, spec, super::rpc::Owner::PuncherPing(owner));
                    if sent.is_none() {
                        if let Some(p) = self.puncher_mut(owner) {
                            p.handle_ping_failed();
                        }
                    }
                }
                PunchOutput::Probe { socket, to, ttl } => {
                    tracing::trace!(%to, ?socket, ttl, "holepunch probe sent");
                    self.push_transmit(Transmit {
                        socket,
                        dst: SocketAddr::V4(to),
                        ttl: Some(ttl),
                        payload: vec![0],
                    });
                }
                PunchOutput::Connected { socket, from } => {
                    self.on_punch_connected(owner, socket, from)
                }
                PunchOutput::Aborted => self.on_punch_aborted(owner),
            }
        }
        self.after_puncher_progress(owner);
    }

    /// Runs a connection's puncher timer, if due.
    pub(super) fn puncher_timers(&mut self, owner: PuncherRef) {
        let now = self.now;
        let Some(p) = self.puncher_mut(owner) else {
            return;
        };
        if p.poll_timeout().is_some_and(|t| t <= now) {
            p.handle_timeout(now);
            self.drain_puncher(owner);
        }
    }
}

impl Node {
    /// Routes a puncher's progress to its owner.
    pub(super) fn after_puncher_progress(&mut self, owner: PuncherRef) {
        match self.cx.get(owner).map(|c| c.side) {
            Some(Side::Client) => self.after_client_puncher(owner),
            Some(Side::Server(_)) => self.after_server_puncher(owner),
            None => {}
        }
    }

    /// A puncher saw the peer's probe.
    pub(super) fn on_punch_connected(
        &mut self,
        owner: PuncherRef,
        socket: SocketId,
        from: SocketAddrV4,
    ) {
        self.note_random_punch_end(owner);
        // Servers open their path on the client's first UDX packet, not on a probe.
        if self.cx.get(owner).is_some_and(|c| c.side == Side::Client) {
            self.on_client_punch_connected(owner, socket, from);
        }
    }

    /// A puncher gave up.
    pub(super) fn on_punch_aborted(&mut self, owner: PuncherRef) {
        self.note_random_punch_end(owner);
        match self.cx.get(owner).map(|c| c.side) {
            Some(Side::Client) => self.on_client_punch_aborted(owner),
            Some(Side::Server(_)) => self.on_server_punch_aborted(owner),
            None => {}
        }
    }

    fn note_random_punch_end(&mut self, owner: PuncherRef) {
        if self.puncher_mut(owner).is_some_and(|p| p.is_randomized()) {
            self.last_random_punch = Some(self.now);
        }
    }
}
