//! hyperdht's commands on the node (hyperdht `index.js` `onrequest` and the client methods):
//! the storage handlers of persistent nodes, relaying of handshakes and holepunches (on every
//! node, ephemeral ones too), and the client operations built on queries with their commit
//! phases: find_peer, lookup, announce, unannounce, immutable and mutable put/get.

use std::net::{SocketAddr, SocketAddrV4};

use super::queries::{QueryKind, QuerySpec, QueryState};
use super::rpc::{Owner, RequestSpec};
use super::Node;
use crate::commands::ERROR_UNKNOWN_COMMAND;
use crate::crypto::hash;
use crate::dht::keys::{self, command, namespace, KeyPair};
use crate::dht::{Answer, RelayAction, StoreRequest};
use crate::event::{Event, Record, Reply, Transmit};
use crate::ids::{NodeId, QueryId, SocketId};
use crate::wire::compact;
use crate::wire::hyperdht::{Announce, LookupReply, MutablePut, MutableRecord, Peer};
use crate::wire::rpc::Request;

/// What a query's commit phase sends to each closest node.
#[derive(Clone, Debug)]
pub(super) enum Commit {
    /// No commit phase.
    None,
    /// The query's own command and value again, with the token (JS `commit: true`).
    Same,
    /// A fixed command and value (immutable and mutable puts).
    Fixed { command: u64, value: Vec<u8> },
    /// ANNOUNCE, signed for each storing node (its id and token are in the signature).
    Announce {
        key: KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
        bump: u64,
    },
    /// UNANNOUNCE is sent during the walk to nodes that list us; the commit waits for those.
    Unannounce { key: KeyPair },
    /// A server's self-announce (empty relay list) to the best 3 closest nodes.
    AnnounceSelf { server: u64 },
}

/// Which record a query's replies carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum RecordKind {
    None,
    Peer,
    Lookup,
    Immutable { target: [u8; 32] },
    Mutable { public_key: [u8; 32], min_seq: u64 },
}

impl Node {
    // ----- server side ---------------------------------------------------------------------

    /// An application-space request (`hyperdht` `onrequest`).
    pub(super) fn on_external_request(
        &mut self,
        socket: SocketId,
        from: SocketAddrV4,
        req: &Request<'_>,
    ) {
        let target = req.target.map(NodeId);
        let server = req
            .target
            .and_then(|t| self.server_targets.get(&t).copied());
        match (req.command, server) {
            (command::PEER_HANDSHAKE, Some(sid)) => {
                if let Some(hs) = req
                    .value
                    .and_then(|v| crate::wire::hyperdht::Handshake::decode(v).ok())
                {
                    self.on_server_handshake(sid, socket, from, req.to, req.tid, hs);
                }
                return;
            }
            (command::PEER_HOLEPUNCH, Some(sid)) => {
                match req
                    .value
                    .and_then(|v| crate::wire::hyperdht::Holepunch::decode(v).ok())
                {
                    Some(hp) if hp.mode == crate::wire::hyperdht::mode::FROM_RELAY => {
                        self.on_server_holepunch(sid, socket, from, req.to, req.tid, hp);
                        return;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        match req.command {
            command::PEER_HANDSHAKE => {
                let action = self
                    .router
                    .on_handshake(req.target.as_ref(), req.value, from);
                self.relay(socket, from, req, action);
                return;
            }
            command::PEER_HOLEPUNCH => {
                let action = self
                    .router
                    .on_holepunch(req.target.as_ref(), req.value, from);
                self.relay(socket, from, req, action);
                return;
            }
            _ => {}
        }
        let unix_ms = self.unix_ms();
        let (Some(store), false) = (self.store.as_mut(), self.ephemeral) else {
            self.send_reply(
                socket,
                from,
                req.tid,
                ERROR_UNKNOWN_COMMAND,
                None,
                false,
                target.as_ref(),
            );
            return;
        };
        let sreq = StoreRequest {
            command: req.command,
            target: req.target,
            has_token: req.token.is_some(),
            token: req.token.as_ref(),
            value: req.value,
            from,
        };
        let own_id = self.table.id().0;
        let answer = store.handle(&mut self.router, &sreq, &own_id, unix_ms, &mut self.rng);
        match answer {
            Answer::Silent => self.stats.dropped.ignored_request += 1,
            Answer::Reply {
                value,
                token,
                closer,
            } => {
                let closer_to = if closer { target.as_ref() } else { None };
                self.send_reply(socket, from, req.tid, 0, value.as_deref(), token, closer_to);
            }
            Answer::Error(code) => {
                self.send_reply(socket, from, req.tid, code, None, false, target.as_ref())
            }
        }
    }

    /// Carries out a relay decision: a request re-encoded with the same tid, command and target
    /// (`req.relay`), or a response to someone other than the sender (`req.reply({ to })`).
    fn relay(
        &mut self,
        socket: SocketId,
        from: SocketAddrV4,
        req: &Request<'_>,
        action: RelayAction,
    ) {
        match action {
            RelayAction::Silent => self.stats.dropped.ignored_request += 1,
            RelayAction::RouteHelp => {
                let target = req.target.map(NodeId);
                self.send_reply(socket, from, req.tid, 0, None, false, target.as_ref());
            }
            RelayAction::ReplyTo { to, value } => {
                self.send_reply(socket, to, req.tid, 0, Some(&value), false, None)
            }
            RelayAction::Relay { to, value } => {
                self.stats.relayed += 1;
                self.send_relay_request(socket, to, req.tid, req.command, req.target, &value);
            }
        }
    }

    /// Sends a request datagram that keeps another request's tid (`req.relay`): no token, our id
    /// when persistent on the server socket, fire-and-forget.
    pub(super) fn send_relay_request(
        &mut self,
        socket: SocketId,
        to: SocketAddrV4,
        tid: u16,
        command: u64,
        target: Option<[u8; 32]>,
        value: &[u8],
    ) {
        let id = (!self.ephemeral && socket == SocketId::SERVER).then_some(self.table.id().0);
        let msg = Request {
            tid,
            to,
            id,
            token: None,
            internal: false,
            command,
            target,
            value: Some(value),
        };
        let mut payload = Vec::with_capacity(msg.encoded_len());
        msg.encode(&mut payload);
        self.push_transmit(Transmit {
            socket,
            dst: SocketAddr::V4(to),
            ttl: None,
            payload,
        });
    }

    /// Wall-clock milliseconds now, if the driver told us the clock.
    fn unix_ms(&self) -> Option<u64> {
        self.config
            .unix_ms_at_zero
            .map(|z| z + self.now.as_millis())
    }

    // ----- client side ---------------------------------------------------------------------

    fn start_record_query(
        &mut self,
        now: crate::time::Timestamp,
        spec: QuerySpec,
        commit: Commit,
        records: RecordKind,
    ) -> QueryId {
        self.set_now(now);
        self.refresh_ticks = crate::config::REFRESH_TICKS;
        QueryId(self.start_query_with(spec, QueryKind::User, commit, records))
    }

    /// Looks up the record of the server with `public_key` (FIND_PEER on `H(public_key)`);
    /// each record found arrives as [`Event::RecordFound`] with [`Record::Peer`].
    pub fn find_peer(&mut self, now: crate::time::Timestamp, public_key: &[u8; 32]) -> QueryId {
        let spec = QuerySpec::external(hash(public_key), command::FIND_PEER, None);
        self.start_record_query(now, spec, Commit::None, RecordKind::Peer)
    }

    /// Lists the peers announced on `topic`; each reply's list arrives as
    /// [`Event::RecordFound`] with [`Record::Lookup`].
    pub fn lookup(&mut self, now: crate::time::Timestamp, topic: &[u8; 32]) -> QueryId {
        let spec = QuerySpec::external(*topic, command::LOOKUP, None);
        self.start_record_query(now, spec, Commit::None, RecordKind::Lookup)
    }

    /// Announces `key`'s public key on `topic` with `relay_addresses` (at most 3 are kept by
    /// storing nodes) to the 20 closest nodes, each announce signed for that node.
    pub fn announce(
        &mut self,
        now: crate::time::Timestamp,
        topic: &[u8; 32],
        key: &KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
        bump: u64,
    ) -> QueryId {
        let spec = QuerySpec::external(*topic, command::LOOKUP, None);
        let commit = Commit::Announce {
            key: key.clone(),
            relay_addresses,
            bump,
        };
        self.start_record_query(now, spec, commit, RecordKind::Lookup)
    }

    /// Removes `key`'s announce from `topic` at every node that lists it (or lists 20 peers).
    pub fn unannounce(
        &mut self,
        now: crate::time::Timestamp,
        topic: &[u8; 32],
        key: &KeyPair,
    ) -> QueryId {
        self.set_now(now);
        if let Some(store) = self.store.as_mut() {
            store.unannounce(&mut self.router, topic, &key.public_key());
        }
        let spec = QuerySpec::external(*topic, command::LOOKUP, None);
        self.start_record_query(
            now,
            spec,
            Commit::Unannounce { key: key.clone() },
            RecordKind::Lookup,
        )
    }

    /// Stores `value` under `H(value)` at the closest nodes. Returns the query; the key is
    /// [`hash`](crate::hash)`(value)`, what [`Node::immutable_get`] takes.
    pub fn immutable_put(&mut self, now: crate::time::Timestamp, value: &[u8]) -> QueryId {
        let target = hash(value);
        let spec = QuerySpec::external(target, command::IMMUTABLE_GET, None);
        let commit = Commit::Fixed {
            command: command::IMMUTABLE_PUT,
            value: value.to_vec(),
        };
        self.start_record_query(now, spec, commit, RecordKind::Immutable { target })
    }

    /// Fetches the value whose hash is `target`; values that hash right arrive as
    /// [`Event::RecordFound`] with [`Record::Immutable`].
    pub fn immutable_get(&mut self, now: crate::time::Timestamp, target: &[u8; 32]) -> QueryId {
        let spec = QuerySpec::external(*target, command::IMMUTABLE_GET, None);
        self.start_record_query(
            now,
            spec,
            Commit::None,
            RecordKind::Immutable { target: *target },
        )
    }

    /// Signs `value` with `seq` and stores it under `H(public key)` at the closest nodes. Their
    /// verdicts (OK, SEQ_REUSED, SEQ_TOO_LOW) arrive as [`Event::CommitReply`].
    pub fn mutable_put(
        &mut self,
        now: crate::time::Timestamp,
        key: &KeyPair,
        value: &[u8],
        seq: u64,
    ) -> QueryId {
        let public_key = key.public_key();
        let put = MutablePut {
            public_key,
            seq,
            value: value.to_vec(),
            signature: keys::sign_mutable(key, seq, value),
        };
        let mut signed = Vec::new();
        put.encode(&mut signed);
        let mut seq0 = Vec::new();
        compact::write_uint(&mut seq0, 0);
        let spec = QuerySpec::external(hash(&public_key), command::MUTABLE_GET, Some(seq0));
        let commit = Commit::Fixed {
            command: command::MUTABLE_PUT,
            value: signed,
        };
        self.start_record_query(
            now,
            spec,
            commit,
            RecordKind::Mutable {
                public_key,
                min_seq: 0,
            },
        )
    }

    /// Fetches the mutable value of `public_key` with at least `seq`; every correctly signed
    /// value arrives as [`Event::RecordFound`] with [`Record::Mutable`] (pick the highest seq).
    pub fn mutable_get(
        &mut self,
        now: crate::time::Timestamp,
        public_key: &[u8; 32],
        seq: u64,
    ) -> QueryId {
        let mut v = Vec::new();
        compact::write_uint(&mut v, seq);
        let spec = QuerySpec::external(hash(public_key), command::MUTABLE_GET, Some(v));
        let records = RecordKind::Mutable {
            public_key: *public_key,
            min_seq: seq,
        };
        self.start_record_query(now, spec, Commit::None, records)
    }

    /// The command and value committed to the node behind `reply`.
    pub(super) fn commit_value(
        &self,
        state: &QueryState,
        reply: &Reply,
        token: &[u8; 32],
    ) -> Option<(u64, Vec<u8>)> {
        match &state.commit {
            Commit::None | Commit::Unannounce { .. } => None,
            Commit::Same => Some((
                state.spec.command,
                state.spec.value.clone().unwrap_or_default(),
            )),
            Commit::Fixed { command, value } => Some((*command, value.clone())),
            Commit::AnnounceSelf { server } => {
                let key = &self.servers.get(server)?.key;
                signed_announce(state, reply, token, key, Vec::new(), 0)
            }
            Commit::Announce {
                key,
                relay_addresses,
                bump,
            } => signed_announce(state, reply, token, key, relay_addresses.clone(), *bump),
        }
    }

    /// A reply without error to a user query: report the record it carries, and for
    /// unannounce send the UNANNOUNCE right away (`lookupAndUnannounce`'s `map`).
    pub(super) fn on_record_reply(&mut self, id: u64, reply: &Reply) {
        let Some(state) = self.queries.get(&id) else {
            return;
        };
        let Some(value) = reply.value.as_deref() else {
            return;
        };
        let record = match &state.records {
            RecordKind::None => None,
            RecordKind::Peer => Peer::decode(value).ok().map(Record::Peer),
            RecordKind::Lookup => LookupReply::decode(value).ok().map(|l| Record::Lookup {
                peers: l.peers,
                bump: l.bump,
            }),
            RecordKind::Immutable { target } => {
                (hash(value) == *target).then(|| Record::Immutable(value.to_vec()))
            }
            RecordKind::Mutable {
                public_key,
                min_seq,
            } => MutableRecord::decode(value)
                .ok()
                .filter(|m| {
                    m.seq >= *min_seq
                        && keys::verify_mutable(public_key, m.seq, &m.value, &m.signature)
                })
                .map(Record::Mutable),
        };
        let Some(record) = record else { return };
        let unannounce = match (&state.commit, &record, reply.token, reply.id) {
            (
                Commit::Unannounce { key },
                Record::Lookup { peers, .. },
                Some(token),
                Some(node_id),
            ) => {
                let pk = key.public_key();
                let listed = peers.len() >= 20 || peers.iter().any(|p| p.public_key == pk);
                listed.then(|| {
                    let peer = Peer {
                        public_key: pk,
                        relay_addresses: Vec::new(),
                    };
                    let signable = keys::announce_signable(
                        &namespace(command::UNANNOUNCE),
                        &state.spec.target,
                        &node_id.0,
                        &token,
                        &peer,
                        None,
                    );
                    let ann = Announce {
                        peer: Some(peer),
                        refresh: None,
                        signature: Some(key.sign(&signable)),
                        bump: 0,
                    };
                    let mut req = RequestSpec::external(
                        command::UNANNOUNCE,
                        Some(state.spec.target),
                        Some(ann.to_bytes()),
                    );
                    req.token = Some(token);
                    req
                })
            }
            _ => None,
        };
        self.push_event(Event::RecordFound {
            id: QueryId(id),
            from: reply.from,
            record,
        });
        if let Some(req) = unannounce {
            if let Some(state) = self.queries.get_mut(&id) {
                state.commit_pending += 1;
            }
            if self
                .send_request(reply.from, None, req, Owner::Commit(id))
                .is_none()
            {
                self.on_commit_done(id, None);
            }
        }
    }
}

/// An ANNOUNCE of `key` with `relay_addresses`, signed for the node behind `reply` and its
/// `token` (the value the announce commit sends); `None` if the reply carries no node id.
fn signed_announce(
    state: &QueryState,
    reply: &Reply,
    token: &[u8; 32],
    key: &KeyPair,
    relay_addresses: Vec<SocketAddrV4>,
    bump: u64,
) -> Option<(u64, Vec<u8>)> {
    let node_id = reply.id?;
    let peer = Peer {
        public_key: key.public_key(),
        relay_addresses,
    };
    let signable = keys::announce_signable(
        &namespace(command::ANNOUNCE),
        &state.spec.target,
        &node_id.0,
        token,
        &peer,
        None,
    );
    let ann = Announce {
        peer: Some(peer),
        refresh: None,
        signature: Some(key.sign(&signable)),
        bump,
    };
    Some((command::ANNOUNCE, ann.to_bytes()))
}
