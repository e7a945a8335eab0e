//! Connecting to a server by public key (hyperdht `lib/connect.js`): FIND_PEER, the relayed
//! Noise handshake through up to two nodes at a time, and the attempt's end (a path, or a
//! failure). Choosing the path and the initiator half of holepunching are `client_punch.rs`.

use std::net::SocketAddrV4;

use super::queries::{QueryKind, QuerySpec};
use super::records::{Commit, RecordKind};
use super::rpc::{Owner, RequestSpec};
use super::Node;
use crate::connection::attempt::{ClientConn, ConnectInfo, NextHandshake, Phase};
use crate::connection::relay::{ConnectOptions, RelayRequest};
use crate::connection::{ConnectError, Purpose, Side};
use crate::crypto::to_hex;
use crate::dht::keys::command;
use crate::dht::KeyPair;
use crate::event::{Event, Reply};
use crate::holepunch::SecurePayload;
use crate::ids::{ConnId, SocketId};
use crate::time::Timestamp;
use crate::wire::hyperdht::{mode, Handshake, Peer};
use crate::wire::noise::{error, NoisePayload, RelayThrough};

impl Node {
    /// Connects to the server with `remote_public_key` using our key pair `key`. The outcome is
    /// an [`Event::Connected`] or an [`Event::ConnectFailed`] for the returned id.
    pub fn connect(
        &mut self,
        now: Timestamp,
        remote_public_key: &[u8; 32],
        key: &KeyPair,
    ) -> ConnId {
        let options = ConnectOptions {
            key_pair: Some(key.clone()),
            ..ConnectOptions::default()
        };
        self.connect_with(now, remote_public_key, options)
    }

    /// Connects to the server with `remote_public_key` with `options`: the key pair to connect
    /// as ([`ConnectOptions::key_pair`], else [`Node::default_key_pair`]), a blind relay to
    /// meet the server at.
    pub fn connect_with(
        &mut self,
        now: Timestamp,
        remote_public_key: &[u8; 32],
        options: ConnectOptions,
    ) -> ConnId {
        self.set_now(now);
        let conn = self.cx.insert(Side::Client, Purpose::App);
        self.start_connect(conn, remote_public_key, options);
        conn
    }

    /// Starts the attempt of connection `conn` (made by the caller, with its purpose).
    pub(super) fn start_connect(
        &mut self,
        conn: ConnId,
        remote_public_key: &[u8; 32],
        options: ConnectOptions,
    ) {
        let now = self.now;
        let key = &options
            .key_pair
            .clone()
            .unwrap_or_else(|| self.default_key_pair.clone());
        let relay_through = options.relay_through.map(|public_key| RelayThrough {
            version: 1,
            public_key,
            token: self.rng.bytes32(),
        });
        let id = conn;
        let local_udx_id = self.alloc_udx_id();
        let ephemeral = KeyPair::from_seed(&self.rng.bytes32());
        let attempt = ClientConn::new(
            *remote_public_key,
            key.clone(),
            ephemeral,
            local_udx_id,
            relay_through,
            options.fast_open,
        );
        if let Some(c) = self.cx.get_mut(conn) {
            c.client = Some(attempt);
        }
        if self.closed {
            return self.fail_client(id, ConnectError::Destroyed);
        }
        if !self.is_listening() {
            tracing::info!("connect before the node's socket was bound");
            return self.fail_client(id, ConnectError::NotBound);
        }
        if let Ok(stream) = self.mux.create_stream_with_id(now, local_udx_id) {
            self.conn_by_stream.insert(stream, id);
            if let Some(c) = self.cx.client_mut(id) {
                c.stream = Some(stream);
            }
        }
        tracing::debug!(server = %to_hex(remote_public_key), "connecting");
        let mut preconnect = options.relay_addresses;
        preconnect.truncate(crate::dht::store::MAX_RELAY_ADDRESSES);
        preconnect.dedup();
        if preconnect.is_empty() {
            self.start_find_peer(id);
        } else {
            // The relay addresses first; the FIND_PEER walk only if none of them gets the
            // handshake through (JS walks at once too, and stops once connected: on a busy
            // node those requests fill the congestion window that everything else shares).
            if let Some(c) = self.cx.client_mut(id) {
                c.set_relay_addresses(preconnect);
            }
            self.pump_handshakes(id);
        }
    }

    /// Starts the FIND_PEER walk of a connect (once).
    fn start_find_peer(&mut self, id: ConnId) {
        let Some(c) = self.cx.client_mut(id).filter(|c| c.needs_walk()) else {
            return;
        };
        let mut spec = QuerySpec::external(c.target, command::FIND_PEER, None);
        spec.retries = Some(3);
        let query =
            self.start_query_with(spec, QueryKind::Connect(id), Commit::None, RecordKind::Peer);
        if let Some(c) = self.cx.client_mut(id) {
            c.set_walk(query);
        }
    }

    /// A FIND_PEER reply with a record: try a handshake through that node.
    pub(super) fn on_connect_record(&mut self, id: ConnId, reply: &Reply) {
        let Some(value) = reply.value.as_deref() else {
            return;
        };
        if Peer::decode(value).is_err() {
            return;
        }
        if self
            .cx
            .client_mut(id)
            .is_some_and(|c| c.offer_relay(reply.from))
        {
            self.pump_handshakes(id);
        }
    }

    /// The FIND_PEER walk ended.
    pub(super) fn on_connect_query_done(&mut self, id: ConnId) {
        if let Some(c) = self.cx.client_mut(id) {
            c.walk_done();
        }
        self.pump_handshakes(id);
    }

    /// Starts queued handshakes (at most two at once); fails when nothing is left to try.
    fn pump_handshakes(&mut self, id: ConnId) {
        let remote_address = self.remote_address();
        let local = if self.config.local_connection {
            self.local_addresses()
        } else {
            Vec::new()
        };
        loop {
            let Some(c) = self.cx.client_mut(id) else {
                return;
            };
            let relay = match c.next_handshake() {
                NextHandshake::Send(relay) => relay,
                NextHandshake::Walk => return self.start_find_peer(id),
                NextHandshake::Wait => return,
                NextHandshake::Fail(reason) => return self.fail_client(id, reason),
            };
            let Ok(value) = c.handshake_request(remote_address, &local) else {
                return self.fail_client(id, ConnectError::PeerConnectionFailed);
            };
            let spec = RequestSpec::external(command::PEER_HANDSHAKE, Some(c.target), Some(value));
            if self
                .send_request(relay, None, spec, Owner::ConnHandshake { conn: id, relay })
                .is_none()
            {
                self.on_connect_handshake(id, relay, None);
                return;
            }
        }
    }

    /// A relayed handshake came back (or failed).
    pub(super) fn on_connect_handshake(
        &mut self,
        id: ConnId,
        relay: SocketAddrV4,
        reply: Option<Reply>,
    ) {
        let Some(c) = self.cx.client_mut(id) else {
            return;
        };
        if !c.handshake_returned() {
            return;
        }
        let hs = reply.as_ref().and_then(|r| {
            let h = Handshake::decode(r.value.as_deref()?).ok()?;
            (h.mode == mode::REPLY && r.from == relay && !h.noise.is_empty()).then_some((h, r.to))
        });
        let Some((hs, client_address)) = hs else {
            tracing::debug!(%relay, "handshake through relay failed");
            self.pump_handshakes(id);
            return;
        };
        let Some((payload, output)) = c.read_reply(&hs.noise) else {
            tracing::debug!(%relay, "handshake reply failed authentication");
            self.pump_handshakes(id);
            return;
        };
        let Ok(payload) = NoisePayload::decode(&payload) else {
            self.pump_handshakes(id);
            return;
        };
        if payload.version != 1 {
            return self.fail_client(id, ConnectError::ServerIncompatible);
        }
        // A stream id from the wire must be a UDX id (32 bits).
        let udx_id = payload.udx.and_then(|u| u32::try_from(u.id).ok());
        if payload.error != error::NONE || udx_id.is_none() {
            return self.fail_client(id, ConnectError::ServerError);
        }
        let local_secret = self.rng.bytes32();
        let Some(c) = self.cx.client_mut(id) else {
            return;
        };
        c.handshake_done();
        c.secure = Some(SecurePayload::new(output.holepunch_secret(), local_secret));
        let info = ConnectInfo {
            relayed: hs.peer_address.is_some(),
            relay_address: relay,
            client_address,
            server_address: hs.peer_address.unwrap_or(relay),
            payload,
            output,
        };
        tracing::debug!(relayed = info.relayed, server = %info.server_address, "handshake complete");
        c.info = Some(info.clone());
        if let Some(q) = c.take_walk() {
            // Its replies and timeouts find no query and are dropped.
            self.queries.remove(&q);
        }
        let conn = id;
        let (local_udx_id, stream, early) = (c.local_udx_id, c.stream, c.early_path);
        let remote_udx_id = udx_id.unwrap_or(0);
        self.open_conn(
            conn,
            info.output.clone(),
            (local_udx_id, remote_udx_id),
            stream,
            early.is_some(),
        );
        if let Some((socket, from)) = early {
            // The server reached us before its handshake reply did.
            return self.client_path_open(id, socket, from);
        }
        let Some(c) = self.cx.client_mut(id) else {
            return;
        };
        c.phase = Phase::Waiting;
        if !info.relayed {
            let socket = self.request_socket();
            return self.client_path_open(id, socket, relay);
        }
        // A blind relay races the holepunch: the server's choice first, as in JS
        // (`relayConnection`: the server initiates its own relay, we initiate ours).
        let relay = match (info.payload.relay_through, c.relay_through) {
            (Some(theirs), _) => Some((theirs.public_key, theirs.token, false)),
            (None, Some(ours)) => Some((ours.public_key, ours.token, true)),
            (None, None) => None,
        };
        if let Some((relay_key, token, is_initiator)) = relay {
            let key = c.key.clone();
            let request = RelayRequest {
                owner: id,
                local_udx_id,
                relay_key,
                token,
                is_initiator,
            };
            self.start_relay(request, &key);
        }
        self.choose_path(id, info);
    }

    /// The path is open: report it.
    pub(super) fn client_path_open(&mut self, id: ConnId, socket: SocketId, remote: SocketAddrV4) {
        let Some(c) = self.cx.client_mut(id) else {
            return;
        };
        if c.phase == Phase::Done {
            return;
        }
        c.phase = Phase::Done;
        c.deadline = None;
        if let Some(p) = c.puncher.as_mut() {
            p.finish_elsewhere();
        }
        self.adopt_socket(socket, id);
        self.drain_puncher(id);
        tracing::debug!(%remote, "connection path chosen");
        // The attempt is over: the transport carries on.
        if let Some(c) = self.cx.get_mut(id) {
            c.client = None;
        }
        // A relay still pairing for this attempt is not needed any more.
        self.drop_relays_of(id);
        self.conn_path(id, socket, std::net::SocketAddr::V4(remote));
    }

    pub(super) fn fail_client(&mut self, id: ConnId, reason: ConnectError) {
        if self.hold_for_relay(id, reason) {
            return;
        }
        let Some(mut c) = self.cx.get_mut(id).and_then(|c| c.client.take()) else {
            return;
        };
        if c.phase == Phase::Done {
            return;
        }
        if let Some(q) = c.take_walk() {
            self.queries.remove(&q);
        }
        self.stop_client_puncher(&mut c);
        self.drop_relays_of(id);
        tracing::info!(%reason, server = %to_hex(&c.remote_public_key), "connect failed");
        self.conn_event(Event::ConnectFailed { conn: id, reason });
        // The stream made at `connect` goes, with the transport if the handshake got that far.
        if self.cx.transport(id).is_some() {
            self.conn_remove(id);
        } else if let Some(s) = c.stream {
            self.conn_by_stream.remove(&s);
            self.mux.remove(s);
        }
        self.reap(id);
    }

    /// A holepunch failure while a blind relay is still pairing: stop punching and wait for
    /// the relay (JS keeps the connection while it has a relay token). Returns whether the
    /// failure was held.
    fn hold_for_relay(&mut self, id: ConnId, reason: ConnectError) -> bool {
        if reason == ConnectError::Destroyed || !self.relay_pending(id) {
            return false;
        }
        let Some(mut c) = self.cx.get_mut(id).and_then(|c| c.client.take()) else {
            return false;
        };
        if matches!(c.phase, Phase::Finding | Phase::Done) {
            if let Some(entry) = self.cx.get_mut(id) {
                entry.client = Some(c);
            }
            return false;
        }
        tracing::debug!(%reason, "holepunch failed; waiting for the blind relay");
        self.stop_client_puncher(&mut c);
        c.puncher = None;
        c.phase = Phase::Waiting;
        c.deadline = None;
        c.held = Some(reason);
        if let Some(entry) = self.cx.get_mut(id) {
            entry.client = Some(c);
        }
        true
    }

    /// Ends an attempt's puncher and releases its sockets.
    fn stop_client_puncher(&mut self, c: &mut ClientConn) {
        if let Some(p) = c.puncher.as_mut() {
            p.finish_elsewhere();
            while let Some(o) = p.poll_output() {
                if let crate::holepunch::puncher::PunchOutput::Release(s) = o {
                    self.release_socket(s);
                }
            }
        }
    }

    /// The attempt's blind relay failed: if holepunching had failed already, so does the
    /// attempt (JS `RELAY_ABORTED`).
    pub(super) fn client_relay_gone(&mut self, id: ConnId) {
        if self.cx.client(id).is_some_and(|c| c.held.is_some()) {
            self.fail_client(id, super::relay::RELAY_ABORTED);
        }
    }

    /// Whether attempt `id` finished its handshake and still looks for a path.
    pub(super) fn client_awaits_path(&self, id: ConnId) -> bool {
        self.cx
            .client(id)
            .is_some_and(|c| c.info.is_some() && c.phase != Phase::Done)
    }

    /// A packet for our stream arrived before the handshake finished: remember its path.
    pub(super) fn client_early_packet(&mut self, id: ConnId, socket: SocketId, from: SocketAddrV4) {
        if self.cx.transport(id).is_some() {
            // Past the handshake the transport's stream takes the packet itself.
            return;
        }
        if let Some(c) = self.cx.client_mut(id) {
            c.early_path.get_or_insert((socket, from));
        }
    }

    /// Client puncher events.
    pub(super) fn on_client_punch_connected(
        &mut self,
        id: ConnId,
        socket: SocketId,
        from: SocketAddrV4,
    ) {
        self.client_path_open(id, socket, from);
    }

    pub(super) fn on_client_punch_aborted(&mut self, id: ConnId) {
        let Some(c) = self.cx.client(id) else {
            return;
        };
        if c.phase != Phase::Done && !c.lan_only {
            self.fail_client(id, ConnectError::HolepunchAborted);
        }
    }

    /// An attempt's timers: the passive wait and the pause before deciding.
    pub(super) fn client_timers(&mut self, id: ConnId) {
        let now = self.now;
        let Some(c) = self.cx.client_mut(id) else {
            return;
        };
        if c.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        if c.deadline.is_some_and(|t| t <= now) {
            c.deadline = None;
            return self.fail_client(id, ConnectError::HolepunchAborted);
        }
        if let Phase::ProbeAnalyzing {
            retry,
            token,
            reopened,
            ..
        } = c.phase.clone()
        {
            c.phase = Phase::ProbeAnalyzing {
                retry,
                token,
                pause_until: None,
                reopened,
            };
            self.continue_probe(id);
        }
    }

    /// Cancels a connection attempt.
    pub fn cancel_connect(&mut self, now: Timestamp, conn: ConnId) {
        self.set_now(now);
        self.fail_client(conn, ConnectError::Destroyed);
    }
}
