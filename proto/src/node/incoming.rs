//! Incoming datagrams (dht-rpc `lib/io.js` `onmessage`, `index.js` `_onrequest`): demultiplex,
//! verify ids and tokens, feed the table and the NAT sampler, and answer the internal commands
//! exactly as JS does. Anything malformed is dropped and counted.

use std::net::{SocketAddr, SocketAddrV4};

use core::time::Duration;

use super::rpc::Outcome;
use super::{Node, SocketState};
use crate::commands::{
    DELAYED_PING, DOWN_HINT, ERROR_INVALID_TOKEN, ERROR_UNKNOWN_COMMAND, FIND_NODE, PING, PING_NAT,
};
use crate::config::MAX_CHECKS;
use crate::event::Reply;
use crate::ids::{NodeId, SocketId};
use crate::time::Timestamp;
use crate::wire::compact::DecodeError;
use crate::wire::rpc::{Message, Request, Response};

impl Node {
    /// A datagram arrived that was larger than the driver's receive buffer, so the driver
    /// dropped it. Only counted (`Dropped::oversized`): a cut message must not be decoded.
    pub fn handle_oversized_datagram(&mut self, now: Timestamp) {
        self.set_now(now);
        self.stats.datagrams_received += 1;
        self.stats.dropped.oversized += 1;
    }

    /// A datagram arrived on `socket` from `from`. Never fails: junk is dropped and counted,
    /// and so is every datagram while an output queue is full ([`Node::backpressure`]).
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        self.set_now(now);
        if let Some(full) = self.backpressure() {
            self.stats.datagrams_received += 1;
            self.stats.dropped.backpressure += 1;
            tracing::trace!(?full, "datagram refused: an output queue is full");
            return;
        }
        self.take_datagram(socket, from, bytes);
        self.run_relays();
        // The connections it changed get their deadlines filed now, so `poll_timeout` does
        // not recompute them after every datagram.
        self.cx.refile();
    }

    fn take_datagram(&mut self, socket: SocketId, from: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams_received += 1;
        if self.closed || !self.socket_is_bound(socket) {
            self.stats.dropped.unknown_socket += 1;
            return;
        }
        let from = match from {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(ip) => SocketAddrV4::new(ip, a.port()),
                None => {
                    self.stats.dropped.bad_source += 1;
                    return;
                }
            },
        };
        if bytes.len() < 2 {
            if socket.index() >= 2 && from.port() != 0 {
                // A holepunch probe on a puncher socket.
                self.on_probe(socket, from);
                return;
            }
            self.stats.dropped.too_short += 1;
            return;
        }
        if from.port() == 0 {
            self.stats.dropped.bad_source += 1;
            return;
        }
        // UDX first: a packet for one of our streams (connect.md §2.10).
        if self
            .mux
            .handle_datagram(self.now, socket, SocketAddr::V4(from), bytes)
        {
            while let Some(t) = self.mux.poll_relayed() {
                self.push_transmit(t);
            }
            self.process_stream_events();
            return;
        }
        if socket == SocketId::SERVER {
            if let Some(check) = &mut self.network_check {
                check.saw_on_server(*from.ip());
            }
        }
        match Message::decode(bytes) {
            Ok(Message::Request(req)) => self.on_request(socket, from, req),
            Ok(Message::Response(res)) => self.on_response(socket, from, res),
            Err(DecodeError::UnknownType) => {
                self.stats.dropped.unknown_type += 1;
            }
            Err(e) => {
                tracing::trace!(%from, error = %e, "malformed datagram dropped");
                self.stats.dropped.malformed += 1;
            }
        }
    }

    fn socket_is_bound(&self, socket: SocketId) -> bool {
        match socket {
            SocketId::SERVER => matches!(self.server, SocketState::Bound(_)),
            SocketId::CLIENT => matches!(self.client, SocketState::Bound(_)),
            _ => self.is_extra_bound(socket),
        }
    }

    /// The id in a packet counts only if it is `H(source address)` (`validateId`).
    fn validate_id(&mut self, id: Option<[u8; 32]>, from: &SocketAddrV4) -> Option<NodeId> {
        let id = id?;
        let expected = NodeId::from_addr(from);
        if expected.0 == id {
            Some(expected)
        } else {
            self.stats.forged_ids += 1;
            None
        }
    }

    /// Whether a packet on `socket` came in on the socket we would expect (`external`).
    fn is_external(&self, socket: SocketId) -> bool {
        socket != self.request_socket()
    }

    fn on_response(&mut self, socket: SocketId, from: SocketAddrV4, res: Response<'_>) {
        let Some(req) = self.take_request(res.tid) else {
            self.stats.dropped.unmatched_response += 1;
            return;
        };
        let id = self.validate_id(res.id, &from);
        let reply = Reply {
            tid: res.tid,
            from,
            id,
            to: res.to,
            token: res.token,
            closer_nodes: res.closer_nodes,
            error: res.error,
            value: res.value.map(<[u8]>::to_vec),
            rtt: self.now - req.started,
        };
        let external = self.is_external(socket);
        self.add_node_from_network(!external, from, id, res.to);
        self.finish_request(req, Outcome::Reply(reply));
    }

    fn on_request(&mut self, socket: SocketId, from: SocketAddrV4, req: Request<'_>) {
        let target = req.target.map(NodeId);
        if let Some(token) = &req.token {
            if !self.tokens.verify(*from.ip(), token) {
                self.stats.invalid_tokens += 1;
                self.send_reply(
                    socket,
                    from,
                    req.tid,
                    ERROR_INVALID_TOKEN,
                    None,
                    true,
                    target.as_ref(),
                );
                return;
            }
        }
        self.stats.requests_received += 1;
        let id = self.validate_id(req.id, &from);
        if id.is_some() {
            let external = self.is_external(socket);
            self.add_node_from_network(!external, from, id, req.to);
        }
        if !req.internal {
            self.on_external_request(socket, from, &req);
            return;
        }
        match req.command {
            PING => self.send_reply(socket, from, req.tid, 0, None, false, None),
            PING_NAT => {
                let port = match req.value {
                    Some(v) if v.len() >= 2 => u16::from_le_bytes([v[0], v[1]]),
                    _ => 0,
                };
                if port == 0 {
                    self.stats.dropped.ignored_request += 1;
                    return;
                }
                let to = SocketAddrV4::new(*from.ip(), port);
                self.send_reply(socket, to, req.tid, 0, None, false, None);
            }
            FIND_NODE => {
                let Some(target) = target else {
                    self.stats.dropped.ignored_request += 1;
                    return;
                };
                self.send_reply(socket, from, req.tid, 0, None, false, Some(&target));
            }
            DOWN_HINT => {
                let Some(v) = req.value.filter(|v| v.len() >= 6) else {
                    self.stats.dropped.ignored_request += 1;
                    return;
                };
                if self.checks < MAX_CHECKS {
                    let down = NodeId(crate::crypto::hash(&v[..6]));
                    let tick = self.tick;
                    let hinted = match self.table.get_mut(&down) {
                        Some(n) if n.pinged < tick || n.down_hints == 0 => {
                            n.down_hints += 1;
                            true
                        }
                        _ => false,
                    };
                    if hinted {
                        self.check_node(&down);
                    }
                }
                self.send_reply(socket, from, req.tid, 0, None, false, None);
            }
            DELAYED_PING => {
                let delay = match req.value {
                    Some(v) if v.len() >= 4 => u32::from_le_bytes([v[0], v[1], v[2], v[3]]),
                    _ => {
                        self.stats.dropped.ignored_request += 1;
                        return;
                    }
                };
                let delay = Duration::from_millis(u64::from(delay));
                if delay > self.config.max_ping_delay {
                    self.stats.dropped.ignored_request += 1;
                    return;
                }
                if self.delayed_pings.len() >= self.config.max_delayed_pings {
                    self.stats.dropped.delayed_ping_overflow += 1;
                    return;
                }
                let reply = self.build_reply(socket, from, req.tid, 0, None, false, None);
                self.delayed_seq += 1;
                self.delayed_pings
                    .insert((self.now + delay, self.delayed_seq), reply);
            }
            _ => self.send_reply(
                socket,
                from,
                req.tid,
                ERROR_UNKNOWN_COMMAND,
                None,
                false,
                target.as_ref(),
            ),
        }
    }
}
