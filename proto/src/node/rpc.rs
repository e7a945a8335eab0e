//! Requests in flight (dht-rpc `lib/io.js` `Request`): tid allocation, the encoded bytes,
//! retransmission timers, the congestion window, and who gets the outcome.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{SocketAddr, SocketAddrV4};

use core::time::Duration;

use super::Node;
use crate::config::{REQUEST_RETRIES, REQUEST_TIMEOUT};
use crate::error::RequestError;
use crate::event::{Event, Reply, Transmit};
use crate::ids::{NodeId, RequestId, SocketId};
use crate::routing::TableNode;
use crate::time::Timestamp;
use crate::wire::rpc::{encode_response, Request, ResponseParts};

/// A request the application sends with [`Node::request`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestSpec {
    /// Internal (dht-rpc) command space.
    pub internal: bool,
    /// Command number.
    pub command: u64,
    /// Target.
    pub target: Option<[u8; 32]>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// Token from an earlier reply of the same node.
    pub token: Option<[u8; 32]>,
    /// Retransmit up to 3 times (JS default); `false` sends once (`retry: false`).
    pub retry: bool,
    /// Per-transmission timeout (default 1 s).
    pub timeout: Option<Duration>,
    /// Send from this socket instead of the node's default (puncher sockets).
    pub socket: Option<SocketId>,
}

impl RequestSpec {
    /// An internal command with no target or value.
    pub fn internal(command: u64) -> RequestSpec {
        RequestSpec {
            internal: true,
            command,
            target: None,
            value: None,
            token: None,
            retry: true,
            timeout: None,
            socket: None,
        }
    }

    /// An application (hyperdht) command.
    pub fn external(command: u64, target: Option<[u8; 32]>, value: Option<Vec<u8>>) -> RequestSpec {
        RequestSpec {
            internal: false,
            command,
            target,
            value,
            token: None,
            retry: true,
            timeout: None,
            socket: None,
        }
    }
}

/// Who is told about a request's outcome.
#[derive(Clone, Debug)]
pub(super) enum Owner {
    User(RequestId),
    Query(u64),
    Commit(u64),
    /// A liveness check of a table node (`_check`).
    Check {
        id: NodeId,
    },
    /// Ping-and-swap for a full row (`_repingAndSwap`).
    Reping {
        old: NodeId,
        new: Box<TableNode>,
    },
    /// The bootstrap's quick PING_NAT probe.
    QuickFirewall,
    /// One PING_NAT of a reachability check.
    FirewallProbe,
    /// A DOWN_HINT (or other fire-and-forget request) we sent; nobody waits for it.
    DownHint,
    /// A NAT-sampling PING from a puncher socket.
    PuncherPing(super::sockets::PuncherRef),
    /// A server's relay keep-alive PING.
    AnnouncerPing(u64),
    /// The FIND_PEER of a server unannouncing from a relay (`closing`: the server is closing).
    Unannounce {
        key: Box<crate::dht::KeyPair>,
        target: [u8; 32],
        closing: Option<u64>,
    },
    /// The UNANNOUNCE itself, for a closing server.
    UnannounceSent(u64),
    /// A client's relayed handshake.
    ConnHandshake {
        conn: crate::ids::ConnId,
        relay: SocketAddrV4,
    },
    /// A client's holepunch round.
    ConnHolepunch {
        conn: crate::ids::ConnId,
        relay: SocketAddrV4,
        peer_address: SocketAddrV4,
        token: Option<[u8; 32]>,
    },
    /// A client's LAN shortcut PING.
    LanPing {
        conn: crate::ids::ConnId,
        addr: SocketAddrV4,
    },
}

#[derive(Debug)]
pub(super) struct Inflight {
    pub to: SocketAddrV4,
    /// The id we expect there; a timeout removes it from the table (`_ontimeout`).
    pub to_id: Option<NodeId>,
    pub socket: SocketId,
    pub payload: Vec<u8>,
    pub sent: u32,
    pub retries: u32,
    pub timeout: Duration,
    pub deadline: Option<Timestamp>,
    pub started: Timestamp,
    pub owner: Owner,
    /// Query visits: the first timeout cycle was reported (`oncycle`).
    pub went_slow: bool,
}

/// The in-flight set.
#[derive(Debug)]
pub(super) struct Requests {
    next_tid: u16,
    inflight: HashMap<u16, Inflight>,
    timers: BTreeSet<(Timestamp, u16)>,
    /// Waiting for room in the congestion window (FIFO, `_pending`).
    blocked: VecDeque<u16>,
}

impl Requests {
    pub fn new(first_tid: u16) -> Requests {
        Requests {
            next_tid: first_tid,
            inflight: HashMap::new(),
            timers: BTreeSet::new(),
            blocked: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.first().map(|(t, _)| *t)
    }

    fn alloc_tid(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX as u32 {
            let tid = self.next_tid;
            self.next_tid = self.next_tid.wrapping_add(1);
            if !self.inflight.contains_key(&tid) {
                return Some(tid);
            }
        }
        None
    }

    fn take(&mut self, tid: u16) -> Option<Inflight> {
        let req = self.inflight.remove(&tid)?;
        if let Some(d) = req.deadline {
            self.timers.remove(&(d, tid));
        }
        Some(req)
    }
}

/// Whether a liveness check was answered by the node we checked, with its id.
///
/// JS (`_removeStaleNode`) compares the node's `seen` tick before and after the reply, which
/// also removes a live node that had already been heard from in the same 5 s tick (its `seen`
/// cannot grow within a tick). The reply carrying the node's valid id is what that comparison
/// means to detect, so that is what we check.
fn answered_as(outcome: &Outcome, id: &NodeId) -> bool {
    matches!(outcome, Outcome::Reply(r) if r.id.as_ref() == Some(id))
}

/// What happened to a request, for its owner.
pub(super) enum Outcome {
    Reply(Reply),
    Failed(RequestError),
}

impl Node {
    /// Creates and sends a request with the plain-request retry policy.
    pub(super) fn send_request(
        &mut self,
        to: SocketAddrV4,
        to_id: Option<NodeId>,
        spec: RequestSpec,
        owner: Owner,
    ) -> Option<u16> {
        let retries = if spec.retry { REQUEST_RETRIES } else { 0 };
        let timeout = spec.timeout.unwrap_or(REQUEST_TIMEOUT);
        self.create_request(to, to_id, &spec, owner, retries, timeout, false)
    }

    /// `io.createRequest` + `send(force)`. Returns the tid, or `None` when the node cannot send
    /// (closed, not listening); the owner is then told at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_request(
        &mut self,
        to: SocketAddrV4,
        to_id: Option<NodeId>,
        spec: &RequestSpec,
        owner: Owner,
        retries: u32,
        timeout: Duration,
        force: bool,
    ) -> Option<u16> {
        if self.closed || !self.is_listening() {
            return None;
        }
        let tid = self.requests.alloc_tid()?;
        let socket = spec.socket.unwrap_or_else(|| self.request_socket());
        let id = (!self.ephemeral && socket == SocketId::SERVER).then_some(self.table.id().0);
        let msg = Request {
            tid,
            to,
            id,
            token: spec.token,
            internal: spec.internal,
            command: spec.command,
            target: spec.target,
            value: spec.value.as_deref(),
        };
        let mut payload = Vec::with_capacity(msg.encoded_len());
        msg.encode(&mut payload);
        self.requests.inflight.insert(
            tid,
            Inflight {
                to,
                to_id,
                socket,
                payload,
                sent: 0,
                retries,
                timeout,
                deadline: None,
                started: self.now,
                owner,
                went_slow: false,
            },
        );
        self.stats.requests_total += 1;
        self.send_or_block(tid, force);
        Some(tid)
    }

    fn send_or_block(&mut self, tid: u16, force: bool) {
        if !force && self.congestion.is_full() {
            tracing::trace!(
                tid,
                blocked = self.requests.blocked.len() + 1,
                "request waits for the congestion window"
            );
            self.requests.blocked.push_back(tid);
            return;
        }
        self.send_now(tid);
    }

    /// `_sendNow`: one transmission and its retransmission timer.
    fn send_now(&mut self, tid: u16) {
        let now = self.now;
        let Some(req) = self.requests.inflight.get_mut(&tid) else {
            return;
        };
        req.sent += 1;
        if let Some(d) = req.deadline.take() {
            self.requests.timers.remove(&(d, tid));
        }
        let deadline = now + req.timeout;
        req.deadline = Some(deadline);
        self.requests.timers.insert((deadline, tid));
        let t = Transmit {
            socket: req.socket,
            dst: SocketAddr::V4(req.to),
            ttl: None,
            payload: req.payload.clone(),
        };
        self.congestion.send();
        self.push_transmit(t);
    }

    /// The 750 ms drain: token rotation, congestion slot, blocked sends.
    pub(super) fn on_drain(&mut self) {
        self.tokens.on_drain();
        self.congestion.drain();
        while !self.congestion.is_full() {
            let Some(tid) = self.requests.blocked.pop_front() else {
                break;
            };
            if self.requests.inflight.contains_key(&tid) {
                self.send_now(tid);
            }
        }
    }

    /// Retransmission timers due now (`oncycle`).
    pub(super) fn fire_request_timers(&mut self) {
        while let Some(&(t, tid)) = self.requests.timers.first() {
            if t > self.now {
                break;
            }
            self.requests.timers.pop_first();
            let Some(req) = self.requests.inflight.get_mut(&tid) else {
                continue;
            };
            req.deadline = None;
            let first_cycle_of_visit = matches!(req.owner, Owner::Query(_)) && !req.went_slow;
            let exhausted = req.sent > req.retries;
            if first_cycle_of_visit {
                req.went_slow = true;
                if let Owner::Query(q) = req.owner {
                    self.on_query_cycle(q);
                }
            }
            if exhausted {
                self.stats.timeouts += 1;
                if let Some(req) = self.requests.take(tid) {
                    self.congestion.recv();
                    let to_id = req.to_id;
                    self.finish_request(req, Outcome::Failed(RequestError::Timeout));
                    // `_ontimeout`: a node that stopped answering leaves the table.
                    if let Some(id) = to_id {
                        self.remove_node(&id);
                    }
                }
            } else {
                self.stats.retries += 1;
                tracing::trace!(tid, "request retransmitted");
                self.send_or_block(tid, false);
            }
        }
    }

    /// Fails every request (shutdown).
    pub(super) fn destroy_all_requests(&mut self) {
        // `inflight` is a HashMap: sort, so the failures (and the events they cause) come out
        // in the same order on every run.
        let mut tids: Vec<u16> = self.requests.inflight.keys().copied().collect();
        tids.sort_unstable();
        for tid in tids {
            if let Some(req) = self.requests.take(tid) {
                self.congestion.recv();
                self.finish_request(req, Outcome::Failed(RequestError::Destroyed));
            }
        }
        self.requests.blocked.clear();
    }

    /// Matches a response to its request by tid alone (as JS does, on either socket). Returns
    /// the request, or `None` when nothing waits for that tid.
    pub(super) fn take_request(&mut self, tid: u16) -> Option<Inflight> {
        let req = self.requests.take(tid)?;
        self.congestion.recv();
        self.stats.responses += 1;
        Some(req)
    }

    /// Hands the outcome to the request's owner.
    pub(super) fn finish_request(&mut self, req: Inflight, outcome: Outcome) {
        match req.owner {
            Owner::User(id) => {
                let result = match outcome {
                    Outcome::Reply(r) => Ok(r),
                    Outcome::Failed(e) => Err(e),
                };
                self.push_event(Event::RequestDone { id, result });
            }
            Owner::Query(q) => match outcome {
                Outcome::Reply(r) => self.on_query_reply(q, r, req.went_slow),
                Outcome::Failed(e) => {
                    self.on_query_error(q, req.to, e == RequestError::Timeout, req.went_slow)
                }
            },
            Owner::Commit(q) => self.on_commit_done(
                q,
                match outcome {
                    Outcome::Reply(r) => Some(r),
                    Outcome::Failed(_) => None,
                },
            ),
            Owner::Check { id } => {
                self.checks = self.checks.saturating_sub(1);
                if !answered_as(&outcome, &id) {
                    self.remove_node(&id);
                }
            }
            Owner::Reping { old, new } => {
                self.repinging = self.repinging.saturating_sub(1);
                if !answered_as(&outcome, &old) {
                    self.remove_node(&old);
                    self.add_node_entry(new.id, new.addr, new.to);
                }
            }
            Owner::QuickFirewall => {
                if matches!(outcome, Outcome::Reply(_)) {
                    self.on_quick_firewall_pong();
                }
            }
            Owner::FirewallProbe => self.on_firewall_probe_done(outcome),
            Owner::DownHint => {}
            Owner::PuncherPing(owner) => {
                if let Some(p) = self.puncher_mut(owner) {
                    match &outcome {
                        // A reply to a socket a re-roll replaced says nothing of the new one.
                        Outcome::Reply(_) if !p.owns(req.socket) => {}
                        Outcome::Reply(r) => p.handle_ping_reply(r.to, r.from),
                        Outcome::Failed(_) => p.handle_ping_failed(),
                    }
                }
                self.drain_puncher(owner);
            }
            Owner::AnnouncerPing(id) => {
                self.on_announcer_ping(id, matches!(outcome, Outcome::Reply(_)))
            }
            Owner::Unannounce {
                key,
                target,
                closing,
            } => {
                let sent = match &outcome {
                    Outcome::Reply(r) => self.on_unannounce_token(&key, target, r, closing),
                    Outcome::Failed(_) => false,
                };
                if !sent {
                    if let Some(s) = closing {
                        self.on_close_step(s);
                    }
                }
            }
            Owner::UnannounceSent(s) => self.on_close_step(s),
            Owner::ConnHandshake { conn, relay } => self.on_connect_handshake(
                conn,
                relay,
                match outcome {
                    Outcome::Reply(r) => Some(r),
                    Outcome::Failed(_) => None,
                },
            ),
            Owner::ConnHolepunch {
                conn,
                relay,
                peer_address,
                token,
            } => self.on_connect_holepunch(
                conn,
                relay,
                peer_address,
                token,
                match outcome {
                    Outcome::Reply(r) => Some(r),
                    Outcome::Failed(_) => None,
                },
            ),
            Owner::LanPing { conn, addr } => {
                self.on_lan_ping(conn, addr, matches!(outcome, Outcome::Reply(_)))
            }
        }
    }

    /// Sends a response from `socket` to `to` (JS `_sendReply`): our id when persistent on the
    /// server socket, a token if asked, closer nodes when the request had a target.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_reply(
        &mut self,
        socket: SocketId,
        to: SocketAddrV4,
        tid: u16,
        error: u64,
        value: Option<&[u8]>,
        token: bool,
        closer_to: Option<&NodeId>,
    ) {
        let t = self.build_reply(socket, to, tid, error, value, token, closer_to);
        self.push_transmit(t);
    }

    /// Builds a reply datagram without queueing it (DELAYED_PING holds it back).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn build_reply(
        &mut self,
        socket: SocketId,
        to: SocketAddrV4,
        tid: u16,
        error: u64,
        value: Option<&[u8]>,
        token: bool,
        closer_to: Option<&NodeId>,
    ) -> Transmit {
        let id = (!self.ephemeral && socket == SocketId::SERVER).then_some(*self.table.id());
        let token = token.then(|| self.tokens.create(*to.ip()));
        let mut closer = [SocketAddrV4::new([0, 0, 0, 0].into(), 0); crate::routing::K];
        let mut n = 0;
        if let Some(target) = closer_to {
            self.table
                .for_each_closest(target, crate::routing::K, |node| {
                    closer[n] = node.addr;
                    n += 1;
                });
        }
        let mut payload = Vec::with_capacity(64 + 6 * n + value.map_or(0, |v| v.len() + 9));
        encode_response(
            &mut payload,
            &ResponseParts {
                tid,
                to,
                id: id.as_ref().map(|i| &i.0),
                token: token.as_ref(),
                closer_nodes: &closer[..n],
                error,
                value,
            },
        );
        Transmit {
            socket,
            dst: SocketAddr::V4(to),
            ttl: None,
            payload,
        }
    }
}
