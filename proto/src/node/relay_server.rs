//! Acting as a blind relay (npm `blind-relay` 1.6 `Server`, run as hyperdht's relay tests and
//! relay deployments run it: a hyperdht server whose connections each carry a relay session).
//!
//! [`Node::serve_blind_relay`] listens on a key like any server, but its connections belong
//! to the node: each is a session with a protomux `blind-relay` channel (any id; JS uses the
//! client's key). A `pair {isInitiator, token, id: the peer's stream id}` waits for the
//! `pair` of the other role with the same token, from any session. Then the node makes two
//! relay ends (fresh local stream ids, [`crate::stream::UdxMux::relay_pair`]), one per peer,
//! answers each peer with `pair {isInitiator, token, id: its end's local id, seq: 0}`, and
//! from then on forwards every UDX packet between the two peers without reading it. `unpair`
//! cancels a waiting pairing or ends a link; a session that closes takes its pairings and
//! links with it, and a DESTROY from either peer ends the link.
//!
//! Bounded: [`MAX_TOKENS_PER_SESSION`] pairings and links per session and
//! [`MAX_WAITING`] waiting pairings in all (JS keeps no bound); pairs past them are ignored.

use std::collections::HashMap;

use super::{Node, ServerConfig};
use crate::connection::relay::{Pair, PROTOCOL};
use crate::dht::KeyPair;
use crate::error::ApiError;
use crate::event::Event;
use crate::ids::{ConnId, ServerId};
use crate::protomux::{ChannelId, MuxEvent, Protomux};
use crate::wire::compact::Reader;

/// Pairings and links one session may hold at once.
pub const MAX_TOKENS_PER_SESSION: usize = 64;
/// Pairings waiting for their other side, over all sessions.
pub const MAX_WAITING: usize = 1024;

/// Message types on the `blind-relay` channel.
const PAIR: u64 = 0;
const UNPAIR: u64 = 1;

/// One relay session: a connection to our relay server.
#[derive(Debug)]
struct Session {
    mux: Protomux,
    channel: Option<ChannelId>,
    /// Tokens this session paired with (waiting or linked).
    tokens: Vec<[u8; 32]>,
}

/// A pairing waiting for its other side: per role (`[responder, initiator]`), the session and
/// the peer's stream id.
#[derive(Debug, Default)]
struct Waiting {
    sides: [Option<(u64, u32)>; 2],
}

/// A live link: per role, the session and our relay end's local id.
#[derive(Debug)]
struct Link {
    sides: [(u64, u32); 2],
}

/// The node's relay service.
#[derive(Debug, Default)]
pub(super) struct RelayService {
    servers: Vec<u64>,
    sessions: HashMap<u64, Session>,
    waiting: HashMap<[u8; 32], Waiting>,
    links: HashMap<[u8; 32], Link>,
}

impl Node {
    /// Serves as a blind relay for other peers under `key` (JS `new BlindRelay.Server` on a
    /// hyperdht server). Peers reach it by this key, e.g. with
    /// [`ConnectOptions::relay_through`](crate::ConnectOptions::relay_through). Its
    /// connections never reach the application; [`Event::ServerListening`] and the server's
    /// other events do.
    pub fn serve_blind_relay(
        &mut self,
        now: crate::time::Timestamp,
        key: &KeyPair,
    ) -> Result<ServerId, ApiError> {
        let server = self.listen(now, key, ServerConfig::default())?;
        self.relay_service.servers.push(server.0);
        Ok(server)
    }

    /// Whether `event` is a relay service's `Incoming`; if so its connection becomes a relay
    /// session, whose events [`Node::conn_event`] sends to `run_relays`.
    pub(super) fn take_relay_service_event(&mut self, event: Event) -> Option<Event> {
        match &event {
            Event::Incoming { server, conn, .. }
                if self.relay_service.servers.contains(&server.0) =>
            {
                // Its events go to `run_relays` from now on.
                if let Some(c) = self.cx.get_mut(*conn) {
                    c.purpose = crate::connection::Purpose::RelaySession;
                }
                let mut mux = Protomux::new();
                mux.pair(PROTOCOL, None);
                self.relay_service.sessions.insert(
                    conn.0,
                    Session {
                        mux,
                        channel: None,
                        tokens: Vec::new(),
                    },
                );
                None
            }
            _ => Some(event),
        }
    }

    /// Whether `conn` is a relay session.
    pub(super) fn is_relay_session(&self, conn: u64) -> bool {
        self.relay_service.sessions.contains_key(&conn)
    }

    /// A relay session's connection event (from `run_relays`).
    pub(super) fn relay_session_event(&mut self, event: Event) {
        match event {
            Event::Readable { conn } | Event::Connected { conn, .. } => {
                self.session_readable(conn.0)
            }
            // The peer ended its side: end ours too (protomux `_onend`).
            Event::Finished { conn } => {
                let _ = self.conn_finish(self.now, conn);
            }
            Event::ConnClosed { conn, .. } => self.end_session(conn.0),
            _ => {}
        }
    }

    fn session_readable(&mut self, conn: u64) {
        while let Ok(Some(message)) = self.conn_read_message(ConnId(conn)) {
            let Some(s) = self.relay_service.sessions.get_mut(&conn) else {
                return;
            };
            if let Err(e) = s.mux.handle_message(&message) {
                tracing::info!(error = %e, "relay session sent a bad message");
                self.conn_reset(self.now, ConnId(conn));
                return self.end_session(conn);
            }
            let events: Vec<MuxEvent> = std::iter::from_fn(|| s.mux.poll_event()).collect();
            for event in events {
                self.session_mux_event(conn, event);
            }
        }
        self.flush_session(conn);
    }

    fn session_mux_event(&mut self, conn: u64, event: MuxEvent) {
        let Some(s) = self.relay_service.sessions.get_mut(&conn) else {
            return;
        };
        match event {
            MuxEvent::Incoming { protocol, id } if s.channel.is_none() => {
                if let Ok(channel) = s.mux.open(&protocol, id.as_deref(), &[]) {
                    s.channel = Some(channel);
                }
            }
            MuxEvent::Message {
                channel,
                kind,
                payload,
            } if Some(channel) == s.channel => match kind {
                PAIR => {
                    if let Some(pair) = Pair::decode(&payload) {
                        self.session_pair(conn, pair);
                    }
                }
                UNPAIR => {
                    let mut r = Reader::new(&payload);
                    let token = r.uint().ok().and_then(|_| r.fixed::<32>().ok());
                    if let Some(token) = token {
                        self.session_unpair(conn, token);
                    }
                }
                _ => {}
            },
            MuxEvent::Closed { channel } if Some(channel) == s.channel => {
                self.conn_reset(self.now, ConnId(conn));
                self.end_session(conn);
            }
            _ => {}
        }
    }

    /// `_onpair`: record this side; link both once the other role paired too.
    fn session_pair(&mut self, conn: u64, pair: Pair) {
        let Ok(remote_id) = u32::try_from(pair.id) else {
            return;
        };
        let service = &mut self.relay_service;
        if service.links.contains_key(&pair.token) {
            return;
        }
        let Some(s) = service.sessions.get_mut(&conn) else {
            return;
        };
        let role = usize::from(pair.is_initiator);
        let known = s.tokens.contains(&pair.token);
        if !known && s.tokens.len() >= MAX_TOKENS_PER_SESSION {
            tracing::debug!("relay session has too many pairings; pair ignored");
            return;
        }
        if !service.waiting.contains_key(&pair.token) && service.waiting.len() >= MAX_WAITING {
            tracing::debug!("too many pairings wait; pair ignored");
            return;
        }
        let waiting = service.waiting.entry(pair.token).or_default();
        if waiting.sides[role].is_some() {
            return;
        }
        waiting.sides[role] = Some((conn, remote_id));
        if !known {
            s.tokens.push(pair.token);
        }
        let (Some(responder), Some(initiator)) = (waiting.sides[0], waiting.sides[1]) else {
            return;
        };
        service.waiting.remove(&pair.token);
        let ends = [self.alloc_udx_id(), self.alloc_udx_id()];
        let sides = [(responder.0, ends[0]), (initiator.0, ends[1])];
        if self
            .mux
            .relay_pair((ends[0], responder.1), (ends[1], initiator.1))
            .is_err()
        {
            return;
        }
        self.stats.relaying.relayed_links += 1;
        tracing::debug!("blind relay linked a pair");
        self.relay_service.links.insert(pair.token, Link { sides });
        for (role, (session, end)) in sides.into_iter().enumerate() {
            let answer = Pair {
                is_initiator: role == 1,
                token: pair.token,
                id: u64::from(end),
                seq: 0,
            };
            if let Some(s) = self.relay_service.sessions.get_mut(&session) {
                if let Some(channel) = s.channel {
                    let _ = s.mux.send(channel, PAIR, &answer.to_bytes());
                }
            }
            self.flush_session(session);
        }
    }

    /// `_onunpair`: cancel a waiting pairing, or end a link.
    fn session_unpair(&mut self, conn: u64, token: [u8; 32]) {
        let service = &mut self.relay_service;
        let Some(s) = service.sessions.get(&conn) else {
            return;
        };
        if !s.tokens.contains(&token) {
            return;
        }
        self.forget_token(token);
    }

    /// Drops a waiting pairing or a link, and the token from its sessions.
    fn forget_token(&mut self, token: [u8; 32]) {
        let service = &mut self.relay_service;
        let mut sessions = Vec::new();
        if let Some(w) = service.waiting.remove(&token) {
            sessions.extend(w.sides.iter().flatten().map(|&(s, _)| s));
        }
        if let Some(link) = service.links.remove(&token) {
            self.mux.remove_relay(link.sides[0].1);
            sessions.extend(link.sides.iter().map(|&(s, _)| s));
        }
        for s in sessions {
            if let Some(s) = self.relay_service.sessions.get_mut(&s) {
                s.tokens.retain(|t| *t != token);
            }
        }
    }

    /// A relayed pair ended (a DESTROY from one peer).
    pub(super) fn relay_link_ended(&mut self, ends: (u32, u32)) {
        let token = self
            .relay_service
            .links
            .iter()
            .find(|(_, l)| l.sides.iter().any(|&(_, e)| e == ends.0 || e == ends.1))
            .map(|(t, _)| *t);
        if let Some(token) = token {
            self.forget_token(token);
        }
    }

    /// A session closed: its pairings and links go.
    fn end_session(&mut self, conn: u64) {
        let Some(s) = self.relay_service.sessions.remove(&conn) else {
            return;
        };
        for token in s.tokens {
            self.forget_token(token);
        }
        self.conn_remove(ConnId(conn));
    }

    /// Sends what a session's mux has.
    fn flush_session(&mut self, conn: u64) {
        let now = self.now;
        let Some(s) = self.relay_service.sessions.get_mut(&conn) else {
            return;
        };
        let messages: Vec<Vec<u8>> = std::iter::from_fn(|| s.mux.poll_transmit()).collect();
        for m in messages {
            let _ = self.conn_write_message(now, ConnId(conn), &m);
        }
    }
}
