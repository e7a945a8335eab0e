//! The server side of one connection (hyperdht `lib/server.js` `_addHandshake`,
//! `_onpeerhandshake`, `_onpeerholepunch`): answering a relayed Noise handshake, deciding how
//! the path opens, the responder half of holepunching, and the handshake's lifetime (kept
//! [`HANDSHAKE_CLEAR_WAIT`] after it finished, so retransmitted handshakes get the same reply).
//! What a client controls is bounded: a server opens at most
//! [`Config::max_connections_per_server`](crate::Config) live connections (handshakes past it
//! get no reply), and a handshake holds at most [`MAX_PENDING_REPLIES`](crate::config::MAX_PENDING_REPLIES) replies while its
//! puncher socket opens.
//! The handshake is a part of its [`Connection`](crate::connection::Connection); the server
//! only keeps which slot numbers are taken.

use std::net::SocketAddrV4;

use super::server::IncomingHandshake;
use super::Node;
use crate::connection::handshake::{
    PendingHolepunch, PendingReply, ServerHandshake, HANDSHAKE_CLEAR_WAIT,
    HANDSHAKE_INITIAL_TIMEOUT,
};
use crate::connection::relay::RelayRequest;
use crate::connection::{Purpose, Side};
use crate::crypto::to_hex;
use crate::dht::keys::command;
use crate::dht::KeyPair;
use crate::event::Event;
use crate::holepunch::addr::{is_private, match_address};
use crate::holepunch::puncher::Puncher;
use crate::holepunch::SecurePayload;
use crate::ids::{ConnId, ServerId, SocketId};
use crate::noise::Responder;
use crate::wire::holepunch::HolepunchPayload;
use crate::wire::hyperdht::{mode, Handshake, Holepunch};
use crate::wire::noise::{error, firewall, HolepunchInfo, NoisePayload, RelayThrough, UdxInfo};

impl Node {
    /// PEER_HANDSHAKE for one of our servers (`_onpeerhandshake`).
    pub(super) fn on_server_handshake(
        &mut self,
        id: u64,
        socket: SocketId,
        from: SocketAddrV4,
        to: SocketAddrV4,
        tid: u16,
        hs: Handshake,
    ) {
        if !matches!(
            hs.mode,
            mode::FROM_CLIENT | mode::FROM_RELAY | mode::FROM_SECOND_RELAY
        ) {
            return;
        }
        let pending = PendingReply {
            tid,
            mode: hs.mode,
            from,
            in_socket: socket,
            peer_address: hs.peer_address,
            relay_address: hs.relay_address,
        };
        let existing = self
            .servers
            .get(&id)
            .and_then(|s| s.connects.get(&hs.noise).copied());
        let conn = match existing {
            Some(conn) => conn,
            None if self.server_is_full(id) => {
                self.stats.dropped.connection_cap += 1;
                tracing::debug!("handshake dropped: the server holds its maximum of connections");
                return;
            }
            None => {
                let client_address = hs.peer_address.unwrap_or(from);
                let direct = hs.peer_address.is_none();
                match self.add_handshake(id, &hs.noise, client_address, to, socket, direct) {
                    Some(conn) => conn,
                    None => return,
                }
            }
        };
        let Some(h) = self.cx.handshake_mut(conn) else {
            return;
        };
        if h.reply.is_none() {
            return;
        }
        if h.replies_wait() {
            if h.hold_reply(pending) {
                self.stats.dropped.pending_reply_overflow += 1;
            }
            return;
        }
        self.send_handshake_reply(conn, pending);
    }

    /// Whether server `id` holds [`Config::max_connections_per_server`](crate::Config) live
    /// connections: a handshake that would open another is dropped.
    fn server_is_full(&self, id: u64) -> bool {
        self.servers
            .get(&id)
            .is_some_and(|s| s.live_conns >= self.config.max_connections_per_server)
    }

    /// The server a server-side connection belongs to.
    pub(super) fn server_of(&self, conn: ConnId) -> Option<u64> {
        match self.cx.get(conn)?.side {
            Side::Server(id) => Some(id),
            Side::Client => None,
        }
    }

    /// The DHT target of the server `conn` came to (kept by the handshake: the server may
    /// have closed since).
    fn send_handshake_reply(&mut self, conn: ConnId, p: PendingReply) {
        let Some(h) = self.cx.handshake(conn) else {
            return;
        };
        let target = h.target;
        let Some(noise) = h.reply.clone() else { return };
        let socket = if h.reply_from_puncher {
            h.puncher
                .as_ref()
                .and_then(Puncher::socket)
                .unwrap_or(p.in_socket)
        } else {
            p.in_socket
        };
        match p.mode {
            mode::FROM_CLIENT => {
                let value = Handshake {
                    mode: mode::REPLY,
                    noise,
                    peer_address: None,
                    relay_address: None,
                }
                .to_bytes();
                self.send_reply(socket, p.from, p.tid, 0, Some(&value), false, None);
            }
            mode::FROM_RELAY | mode::FROM_SECOND_RELAY => {
                let dest = if p.mode == mode::FROM_RELAY {
                    Some(p.from)
                } else {
                    p.relay_address
                };
                let Some(dest) = dest else { return };
                let value = Handshake {
                    mode: mode::FROM_SERVER,
                    noise,
                    peer_address: p.peer_address,
                    relay_address: None,
                }
                .to_bytes();
                self.send_relay_request(
                    socket,
                    dest,
                    p.tid,
                    command::PEER_HANDSHAKE,
                    Some(target),
                    &value,
                );
            }
            _ => {}
        }
    }

    /// `_addHandshake`: runs the responder and decides how the path will open.
    fn add_handshake(
        &mut self,
        id: u64,
        noise: &[u8],
        client_address: SocketAddrV4,
        server_address: SocketAddrV4,
        socket: SocketId,
        direct: bool,
    ) -> Option<ConnId> {
        let ephemeral = KeyPair::from_seed(&self.rng.bytes32());
        let local_secret = self.rng.bytes32();
        let remote_address = self.remote_address();
        let local_addrs = self.local_addresses();
        let udx_id = self.alloc_udx_id();
        let now = self.now;
        let s = self.servers.get_mut(&id)?;
        let slot = s.free_slot()?;
        let conn = self.cx.insert(Side::Server(id), Purpose::App);
        s.slots[slot] = Some(conn);
        let mut responder = Responder::new(s.key.clone(), ephemeral);
        let mut h = ServerHandshake::new(now, slot, s.target, noise);
        s.connects.insert(noise.to_vec(), conn);
        // Where the handshake goes (every return below stores it).
        let cx = &mut self.cx;
        let mut store = |h: ServerHandshake| {
            if let Some(c) = cx.get_mut(conn) {
                c.handshake = Some(h);
            }
        };
        let read = responder
            .read_message1(noise)
            .ok()
            .and_then(|(payload, rs)| Some((NoisePayload::decode(&payload).ok()?, rs)));
        let Some((remote_payload, remote_pk)) = read else {
            tracing::debug!("handshake message 1 refused");
            store(h);
            return Some(conn);
        };
        let accepted = s.config.accept.as_ref().is_none_or(|f| {
            f(&IncomingHandshake {
                remote_public_key: remote_pk,
                client_address,
                relayed: !direct,
            })
        });
        if !accepted {
            tracing::info!(client = %to_hex(&remote_pk), "handshake refused by the accept policy");
            store(h);
            return Some(conn);
        }
        // A stream id from the wire must be a UDX id (32 bits).
        let remote_udx_id = remote_payload.udx.and_then(|u| u32::try_from(u.id).ok());
        let err = if remote_payload.version != 1 {
            error::VERSION_MISMATCH
        } else if remote_udx_id.is_none() {
            error::ABORTED
        } else {
            error::NONE
        };
        let mut addresses = Vec::new();
        addresses.extend(remote_address);
        if !s.config.hide_local_addresses {
            addresses.extend(local_addrs.iter().copied());
        }
        let relay_addresses = s.announcer.relay_addresses.clone();
        let relay_through = s.config.relay_through.map(|public_key| RelayThrough {
            version: 1,
            public_key,
            token: self.rng.bytes32(),
        });
        let payload = NoisePayload {
            version: 1,
            error: err,
            firewall: if remote_address.is_some() {
                firewall::OPEN
            } else {
                firewall::UNKNOWN
            },
            holepunch: remote_address.is_none().then(|| HolepunchInfo {
                id: slot as u64,
                relays: s.announcer.relays.clone(),
            }),
            addresses4: addresses,
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: if err == error::NONE {
                    u64::from(udx_id)
                } else {
                    0
                },
                seq: 0,
            }),
            secret_stream: Some(1),
            relay_through,
            relay_addresses: (!relay_addresses.is_empty()).then_some(relay_addresses),
            ..NoisePayload::default()
        };
        let Ok((reply, output)) = responder.write_message2(&payload.to_bytes()) else {
            store(h);
            return Some(conn);
        };
        h.reply = Some(reply);
        if err != error::NONE {
            store(h);
            return Some(conn);
        }
        let remote_udx_id = remote_udx_id.unwrap_or(0);
        let conn_output = output.clone();
        h.secure = Some(SecurePayload::new(output.holepunch_secret(), local_secret));
        h.output = Some(output.clone());
        h.remote_payload = Some(remote_payload.clone());
        h.clear_at = None;
        let hide_local = s.config.hide_local_addresses;
        let key = s.key.clone();
        store(h);
        tracing::debug!(client = %to_hex(&remote_pk), %client_address, direct, "handshake accepted");
        self.push_event(Event::Incoming {
            server: ServerId(id),
            conn,
            remote_public_key: remote_pk,
        });
        self.open_conn(conn, conn_output, (udx_id, remote_udx_id), None, false);
        self.count_server_conn(id, conn);

        if remote_payload.firewall == firewall::OPEN || direct {
            let path_socket = if direct {
                socket
            } else {
                self.request_socket()
            };
            self.server_path_open(conn, path_socket, client_address);
            return Some(conn);
        }
        // A blind relay races the holepunch: ours first (we initiate), else the client's
        // (`_relayConnection`).
        let relay = match (relay_through, remote_payload.relay_through) {
            (Some(ours), _) => Some((ours.public_key, ours.token, true)),
            (None, Some(theirs)) => Some((theirs.public_key, theirs.token, false)),
            (None, None) => None,
        };
        if let Some((relay_key, token, is_initiator)) = relay {
            let request = RelayRequest {
                owner: conn,
                local_udx_id: udx_id,
                relay_key,
                token,
                is_initiator,
            };
            self.start_relay(request, &key);
        }
        let deadline = Some(now + HANDSHAKE_INITIAL_TIMEOUT);
        if client_address.ip() == server_address.ip() && !hide_local {
            let client_lan: Vec<SocketAddrV4> = remote_payload
                .addresses4
                .iter()
                .filter(|a| is_private(a.ip()))
                .copied()
                .collect();
            if match_address(&local_addrs, &client_lan).is_some() {
                self.start_server_puncher(conn, remote_payload.firewall, false);
                if let Some(h) = self.cx.handshake_mut(conn) {
                    h.prepunch_deadline = deadline;
                }
                return Some(conn);
            }
        }
        if remote_address.is_some() {
            if let Some(h) = self.cx.handshake_mut(conn) {
                h.prepunch_deadline = deadline;
            }
            return Some(conn);
        }
        self.start_server_puncher(conn, remote_payload.firewall, true);
        if let Some(h) = self.cx.handshake_mut(conn) {
            h.prepunch_deadline = deadline;
        }
        Some(conn)
    }

    fn start_server_puncher(
        &mut self,
        conn: ConnId,
        remote_firewall: u64,
        reply_from_puncher: bool,
    ) {
        let nodes = self.sample_nodes();
        let rng = self.rng.child();
        let firewalled = self.firewalled;
        if let Some(h) = self.cx.handshake_mut(conn) {
            h.puncher = Some(Puncher::new(false, firewalled, remote_firewall, nodes, rng));
            h.reply_from_puncher = reply_from_puncher;
        }
        self.drain_puncher(conn);
    }

    /// DHT nodes to sample a puncher's NAT through, most recently heard from first.
    pub(super) fn sample_nodes(&self) -> Vec<SocketAddrV4> {
        self.table
            .latest_first()
            .take(32)
            .filter_map(|id| self.table.get(id).map(|n| n.addr))
            .collect()
    }

    /// The server side of a connection has its path (`hs.onsocket`).
    pub(super) fn server_path_open(
        &mut self,
        conn: ConnId,
        socket: SocketId,
        remote: SocketAddrV4,
    ) {
        let now = self.now;
        let Some(h) = self.cx.handshake_mut(conn) else {
            return;
        };
        if h.done {
            return;
        }
        h.done = true;
        h.prepunch_deadline = None;
        h.clear_at = Some(now + HANDSHAKE_CLEAR_WAIT);
        if let Some(p) = h.puncher.as_mut() {
            p.finish_elsewhere();
        }
        self.adopt_socket(socket, conn);
        self.drain_puncher(conn);
        // A relay still pairing for this handshake is not needed any more.
        self.drop_relays_of(conn);
        tracing::debug!(%remote, "server connection path chosen");
        self.conn_path(conn, socket, std::net::SocketAddr::V4(remote));
    }

    // ----- holepunching (responder) ---------------------------------------------------------

    /// PEER_HOLEPUNCH FROM_RELAY for one of our servers (`_onpeerholepunch`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_server_holepunch(
        &mut self,
        id: u64,
        socket: SocketId,
        from: SocketAddrV4,
        to: SocketAddrV4,
        tid: u16,
        hp: Holepunch,
    ) {
        let Some(peer_address) = hp.peer_address else {
            return;
        };
        // The id is the handshake's slot, as the server's payload told the client.
        let conn = usize::try_from(hp.id).ok().and_then(|slot| {
            let s = self.servers.get(&id)?;
            *s.slots.get(slot)?
        });
        let Some(conn) = conn else {
            return;
        };
        let Some(h) = self.cx.handshake_mut(conn) else {
            return;
        };
        let Some(secure) = h.secure.clone() else {
            if let Some(p) = h.puncher.as_mut() {
                p.destroy();
            }
            self.drain_puncher(conn);
            return;
        };
        let Some(payload) = secure.open(&hp.payload) else {
            return;
        };
        let pending = PendingHolepunch {
            tid,
            from,
            to,
            socket,
            peer_address,
            payload,
            reopened: false,
        };
        self.process_server_holepunch(conn, pending);
    }

    fn process_server_holepunch(&mut self, conn: ConnId, mut pending: PendingHolepunch) {
        let now = self.now;
        let random_ok = self.random_punch_allowed();
        let Some(s) = self.server_of(conn).and_then(|id| self.servers.get(&id)) else {
            return;
        };
        let is_server_relay = s.announcer.is_relay(&pending.from);
        let holepunch = s.config.holepunch;
        let Some(h) = self.cx.handshake_mut(conn) else {
            return;
        };
        let target = h.target;
        let (Some(secure), Some(p)) = (h.secure.clone(), h.puncher.as_mut()) else {
            return self.server_abort(conn, &pending, error::ABORTED);
        };
        if p.socket().is_none() {
            return self.server_abort(conn, &pending, error::ABORTED);
        }
        let remote = &pending.payload;
        if remote.error != error::NONE {
            if remote.round >= h.round {
                h.round = remote.round;
            }
            return self.server_abort(conn, &pending, error::ABORTED);
        }
        let token = secure.token(*pending.peer_address.ip());
        let echoed = is_server_relay && remote.remote_token == Some(token);
        if !pending.reopened {
            if p.owns(pending.socket) {
                p.nat_mut().add(pending.to, pending.from);
            }
            if remote.round >= h.round {
                h.round = remote.round;
                p.update_remote(
                    remote.punching,
                    remote.firewall,
                    remote.addresses.as_deref(),
                    echoed.then_some(*pending.peer_address.ip()),
                );
            }
        }
        if !p.is_analyzed() {
            h.hold_holepunch(pending);
            return;
        }
        // A client whose fast-open probe reached one of our puncher sockets (we echoed it;
        // a re-rolled one stays open for that) is about to open its stream there: re-rolling
        // again, or aborting, would cut a working path. An UNKNOWN NAT comes from too few DHT
        // nodes to sample, e.g. a firewalled node on 0.0.0.0 in a small network on 127.0.0.1.
        let probed = p.was_probed_from(pending.peer_address);
        if !p.remote_punching && p.is_unstable() && !probed {
            if !pending.reopened && p.reopen() {
                pending.reopened = true;
                h.hold_holepunch(pending);
                self.drain_puncher(conn);
                return;
            }
            return self.server_abort(conn, &pending, error::ABORTED);
        }
        let fw = p.nat().firewall();
        let consistent = fw == firewall::CONSISTENT || fw == firewall::OPEN;
        let fast = consistent
            && remote
                .remote_address
                .is_some_and(|ra| p.nat().addresses().is_some_and(|a| a.contains(&ra)));
        tracing::debug!(
            round = remote.round,
            remote_firewall = remote.firewall,
            remote_punching = remote.punching,
            local_firewall = fw,
            remote_address = ?remote.remote_address,
            our_addresses = ?p.nat().addresses(),
            fast,
            "holepunch: client round"
        );
        if fast {
            // Fast mode: the client opened its NAT towards our address; ping it back now.
            p.ping(pending.peer_address);
        }
        if p.remote_punching && !holepunch {
            tracing::debug!("holepunch refused (ServerConfig::holepunch is off)");
            return self.server_abort(conn, &pending, error::ABORTED);
        }
        if p.remote_punching {
            h.prepunch_deadline = None;
            let random = p.remote_firewall >= firewall::RANDOM || fw >= firewall::RANDOM;
            if random && !random_ok {
                // No blind relay to fall back on: JS answers TRY_LATER only with a relay token.
                return self.server_abort(conn, &pending, error::TRY_LATER);
            }
            if !p.punch(now) {
                return self.server_abort(conn, &pending, error::ABORTED);
            }
        }
        if p.nat().firewall() != firewall::UNKNOWN {
            p.nat_mut().freeze();
        }
        let reply = HolepunchPayload {
            error: error::NONE,
            firewall: p.nat().firewall(),
            round: h.round,
            connected: p.is_connected(),
            punching: p.is_punching(),
            addresses: p.nat().addresses().map(<[SocketAddrV4]>::to_vec),
            remote_address: None,
            token: is_server_relay.then_some(token),
            remote_token: remote.token,
        };
        let puncher_socket = p.socket().unwrap_or(pending.socket);
        self.answer_holepunch(puncher_socket, &pending, target, &secure, &reply);
        self.drain_puncher(conn);
    }

    /// `_abort`: answers the client round `pending` with an error payload from the DHT socket;
    /// the puncher goes.
    fn server_abort(&mut self, conn: ConnId, pending: &PendingHolepunch, code: u64) {
        let socket = self.request_socket();
        let Some(h) = self.cx.handshake_mut(conn) else {
            return;
        };
        let target = h.target;
        if let Some(p) = h.puncher.as_mut() {
            p.destroy();
        }
        let Some(secure) = h.secure.clone() else {
            self.drain_puncher(conn);
            return;
        };
        let payload = HolepunchPayload {
            error: code,
            firewall: firewall::UNKNOWN,
            round: h.round,
            ..HolepunchPayload::default()
        };
        self.answer_holepunch(socket, pending, target, &secure, &payload);
        self.drain_puncher(conn);
    }

    /// Answers the client round `pending` from `socket` with `payload`, sealed for the client.
    fn answer_holepunch(
        &mut self,
        socket: SocketId,
        pending: &PendingHolepunch,
        target: [u8; 32],
        secure: &SecurePayload,
        payload: &HolepunchPayload,
    ) {
        let value = self.server_holepunch_value(secure, payload, pending.peer_address);
        self.send_relay_request(
            socket,
            pending.from,
            pending.tid,
            command::PEER_HOLEPUNCH,
            Some(target),
            &value,
        );
    }

    /// Seals `payload` for the client under a fresh nonce and encodes it as the server's
    /// PEER_HOLEPUNCH value (mode FROM_SERVER, echoing the client's `peer_address`).
    fn server_holepunch_value(
        &mut self,
        secure: &SecurePayload,
        payload: &HolepunchPayload,
        peer_address: SocketAddrV4,
    ) -> Vec<u8> {
        let nonce = self.rng.bytes32()[..24].try_into().unwrap_or([0; 24]);
        Holepunch {
            mode: mode::FROM_SERVER,
            id: 0,
            payload: secure.seal(payload, nonce),
            peer_address: Some(peer_address),
        }
        .to_bytes()
    }

    /// After a server puncher made progress: send held handshake replies, resume a holepunch
    /// request that waited for the NAT analysis.
    pub(super) fn after_server_puncher(&mut self, conn: ConnId) {
        let Some(h) = self.cx.handshake_mut(conn) else {
            return;
        };
        let replies = h.take_replies_if_bound();
        let resume = h.take_holepunch_if_analyzed();
        for r in replies {
            self.send_handshake_reply(conn, r);
        }
        if let Some(p) = resume {
            self.process_server_holepunch(conn, p);
        }
    }

    /// A handshake's timers: the wait for a path (prepunch) and the clearing of the
    /// handshake, 10 s after it finished.
    pub(super) fn handshake_timers(&mut self, conn: ConnId) {
        let now = self.now;
        let relaying = self.relay_pending(conn);
        let Some(h) = self.cx.handshake_mut(conn) else {
            return;
        };
        if h.take_prepunch_timeout(now) {
            // A relay still pairing keeps the handshake (JS keeps the raw stream while it has
            // a relay token); it clears once the relay gives up.
            if !relaying {
                h.clear_at = Some(now + HANDSHAKE_CLEAR_WAIT);
            }
            tracing::debug!("server handshake timed out waiting for a path");
            if let Some(p) = h.puncher.as_mut() {
                p.destroy();
            }
            self.drain_puncher(conn);
        }
        let Some(h) = self.cx.handshake(conn) else {
            return;
        };
        if !h.clear_due(now) {
            return;
        }
        let unopened = h.awaits_path();
        let Some(h) = self.cx.get_mut(conn).and_then(|c| c.handshake.take()) else {
            return;
        };
        if let Some(s) = self
            .server_of(conn)
            .and_then(|id| self.servers.get_mut(&id))
        {
            s.forget_handshake(conn, h.slot, &h.noise_key);
        }
        if unopened {
            self.close_if_unopened(conn);
        }
        self.reap(conn);
    }

    /// A server puncher connected (servers connect on the first UDX packet instead; a probe
    /// only answers probes) or gave up.
    pub(super) fn on_server_punch_aborted(&mut self, conn: ConnId) {
        let now = self.now;
        let relaying = self.relay_pending(conn);
        if let Some(h) = self.cx.handshake_mut(conn) {
            h.drop_holepunch();
            if !relaying {
                h.clear_later(now);
            }
        }
    }

    /// Whether the handshake of `conn` still waits for its path.
    pub(super) fn server_awaits_path(&self, conn: ConnId) -> bool {
        self.cx
            .handshake(conn)
            .is_some_and(ServerHandshake::awaits_path)
    }

    /// The handshake's blind relay failed: without a path by now, the handshake clears.
    pub(super) fn server_relay_gone(&mut self, conn: ConnId) {
        let now = self.now;
        if let Some(h) = self.cx.handshake_mut(conn) {
            if h.prepunch_deadline.is_none() {
                h.clear_later(now);
            }
        }
    }
}
