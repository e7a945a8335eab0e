//! The initiator's half of opening a path (hyperdht `lib/connect.js` `holepunch()`,
//! `probeRound`, `roundPunch`): after the handshake, a direct path when the server is open,
//! the LAN shortcut when both share a public address, else the probe round and the punch
//! round through the server's relay.

use std::net::SocketAddrV4;

use super::rpc::{Owner, RequestSpec};
use super::Node;
use crate::connection::attempt::{
    ConnectInfo, PathChoice, Phase, PASSIVE_CONNECT_TIMEOUT, REMOTE_UNKNOWN_PAUSE,
};
use crate::connection::ConnectError;
use crate::dht::keys::command;
use crate::event::Reply;

use crate::holepunch::puncher::Puncher;
use crate::ids::{ConnId, SocketId};
use crate::wire::holepunch::HolepunchPayload;
use crate::wire::hyperdht::{mode, Holepunch};
use crate::wire::noise::{error, firewall};

impl Node {
    /// After the handshake: opens the path as [`ConnectInfo::choose_path`] decides.
    pub(super) fn choose_path(&mut self, id: ConnId, info: ConnectInfo) {
        let mine = self.config.local_connection.then(|| self.local_addresses());
        let Some(c) = self.cx.client_mut(id) else {
            return;
        };
        let choice = info.choose_path(c.our_firewall(), mine.as_deref());
        let (server_relay, lan_ping) = match choice {
            PathChoice::Direct(addr) => {
                let socket = self.request_socket();
                return self.client_path_open(id, socket, addr);
            }
            PathChoice::Passive => {
                c.deadline = Some(self.now + PASSIVE_CONNECT_TIMEOUT);
                return;
            }
            PathChoice::LanOnly(addr) => {
                c.lan_only = true;
                self.send_lan_ping(id, addr);
                return;
            }
            PathChoice::CannotHolepunch => {
                return self.fail_client(id, ConnectError::CannotHolepunch);
            }
            PathChoice::Punch {
                server_relay,
                lan_ping,
            } => (server_relay, lan_ping),
        };
        if let Some(addr) = lan_ping {
            self.send_lan_ping(id, addr);
        }
        let nodes = self.sample_nodes();
        let rng = self.rng.child();
        let firewalled = self.firewalled;
        let Some(c) = self.cx.client_mut(id) else {
            return;
        };
        c.server_relay = server_relay;
        let remote_firewall = info.payload.firewall;
        tracing::debug!(
            sample_nodes = nodes.len(),
            remote_firewall,
            "holepunch: probing the server"
        );
        c.puncher = Some(Puncher::new(true, firewalled, remote_firewall, nodes, rng));
        c.phase = Phase::ProbeReady { retry: true };
        self.drain_puncher(id);
    }

    /// PINGs the server at its LAN address (both sides share a public address).
    fn send_lan_ping(&mut self, id: ConnId, addr: SocketAddrV4) {
        let spec = RequestSpec::internal(crate::commands::PING);
        self.send_request(addr, None, spec, Owner::LanPing { conn: id, addr });
    }

    /// The LAN PING came back (or not).
    pub(super) fn on_lan_ping(&mut self, id: ConnId, addr: SocketAddrV4, ok: bool) {
        let Some(c) = self.cx.client(id) else {
            return;
        };
        if c.phase == Phase::Done {
            return;
        }
        if ok {
            return self.client_path_open(id, SocketId::SERVER, addr);
        }
        if c.lan_only {
            self.fail_client(id, ConnectError::HolepunchAborted);
        }
    }

    /// Sends one PEER_HOLEPUNCH round from the puncher socket.
    fn send_holepunch_round(
        &mut self,
        id: ConnId,
        peer_address: SocketAddrV4,
        relay: SocketAddrV4,
        payload: HolepunchPayload,
    ) -> bool {
        let nonce: [u8; 24] = self.rng.bytes32()[..24].try_into().unwrap_or([0; 24]);
        let Some(c) = self.cx.client(id) else {
            return false;
        };
        let (Some(secure), Some(info), Some(socket)) = (
            &c.secure,
            &c.info,
            c.puncher.as_ref().and_then(Puncher::socket),
        ) else {
            return false;
        };
        let hp_id = info.payload.holepunch.as_ref().map_or(0, |h| h.id);
        let value = Holepunch {
            mode: mode::FROM_CLIENT,
            id: hp_id,
            payload: secure.seal(&payload, nonce),
            peer_address: Some(peer_address),
        }
        .to_bytes();
        let mut spec = RequestSpec::external(command::PEER_HOLEPUNCH, Some(c.target), Some(value));
        spec.socket = Some(socket);
        let token = payload.token;
        let owner = Owner::ConnHolepunch {
            conn: id,
            relay,
            peer_address,
            token,
        };
        self.send_request(relay, None, spec, owner).is_some()
    }

    /// After the puncher made progress: send the probe round once its socket is bound; decide
    /// once the NAT analysis is done.
    pub(super) fn after_client_puncher(&mut self, id: ConnId) {
        let Some(c) = self.cx.client(id) else {
            return;
        };
        match c.phase.clone() {
            Phase::ProbeReady { retry } => {
                let Some(p) = c.puncher.as_ref() else { return };
                if p.socket().is_none() {
                    return;
                }
                let (Some(info), Some(relay)) = (c.info.clone(), c.server_relay) else {
                    return;
                };
                // `probeRound(c, fastOpen === false ? null : serverAddress, ...)`.
                let fast_open = c.fast_open.then_some(info.server_address);
                let payload = HolepunchPayload {
                    firewall: p.nat().firewall(),
                    round: c.round,
                    addresses: p.nat().addresses().map(<[SocketAddrV4]>::to_vec),
                    remote_address: fast_open,
                    ..HolepunchPayload::default()
                };
                if let Some(c) = self.cx.client_mut(id) {
                    c.round += 1;
                    c.phase = Phase::ProbeSent { retry };
                    if let (Some(p), Some(addr)) = (c.puncher.as_mut(), fast_open) {
                        p.open_session(addr);
                    }
                }
                // The fast-open probe leaves before the round, as JS awaits `openSession` first:
                // it reaches the server's puncher socket directly, ahead of the relayed round
                // that may make the server re-roll that socket (and abort).
                self.drain_puncher(id);
                if !self
                    .cx
                    .client(id)
                    .is_some_and(|c| matches!(c.phase, Phase::ProbeSent { .. }))
                {
                    return;
                }
                if !self.send_holepunch_round(id, relay.peer_address, relay.relay_address, payload)
                {
                    return self.fail_client(id, ConnectError::HolepunchAborted);
                }
                self.drain_puncher(id);
            }
            Phase::ProbeAnalyzing { .. } => self.continue_probe(id),
            _ => {}
        }
    }

    /// A holepunch round's reply (or failure).
    pub(super) fn on_connect_holepunch(
        &mut self,
        id: ConnId,
        relay: SocketAddrV4,
        peer_address: SocketAddrV4,
        our_token: Option<[u8; 32]>,
        reply: Option<Reply>,
    ) {
        let Some(c) = self.cx.client_mut(id) else {
            return;
        };
        let probe = match c.phase {
            Phase::ProbeSent { retry } => Some(retry),
            Phase::PunchSent => None,
            _ => return,
        };
        let Some(reply) = reply else {
            return self.fail_client(id, ConnectError::HolepunchAborted);
        };
        let hp = reply
            .value
            .as_deref()
            .and_then(|v| Holepunch::decode(v).ok());
        let Some(hp) = hp.filter(|h| h.mode == mode::REPLY && reply.from == relay) else {
            return self.fail_client(id, ConnectError::HolepunchAborted);
        };
        let Some(remote) = c.secure.as_ref().and_then(|s| s.open(&hp.payload)) else {
            return self.fail_client(id, ConnectError::HolepunchInvalid);
        };
        if remote.error != error::NONE {
            return self.fail_client(id, ConnectError::RemoteAborted);
        }
        let echoed = remote.remote_token.is_some() && remote.remote_token == our_token;
        let Some(p) = c.puncher.as_mut() else { return };
        p.update_remote(
            remote.punching,
            remote.firewall,
            remote.addresses.as_deref(),
            echoed.then_some(*peer_address.ip()),
        );
        tracing::debug!(
            round = remote.round,
            remote_firewall = remote.firewall,
            remote_punching = remote.punching,
            token = remote.token.is_some(),
            "holepunch: server replied"
        );
        match probe {
            Some(retry) => {
                p.nat_mut().add(reply.to, reply.from);
                let pause_until = (p.remote_firewall == firewall::UNKNOWN)
                    .then(|| self.now + REMOTE_UNKNOWN_PAUSE);
                c.phase = Phase::ProbeAnalyzing {
                    retry,
                    token: remote.token,
                    pause_until,
                    reopened: false,
                };
                self.drain_puncher(id);
                self.continue_probe(id);
            }
            None => {
                if !p.remote_punching {
                    return self.fail_client(id, ConnectError::RemoteNotHolepunching);
                }
                let now = self.now;
                if !p.punch(now) {
                    return self.fail_client(id, ConnectError::RemoteNotHolepunchable);
                }
                c.phase = Phase::Punching;
                self.drain_puncher(id);
            }
        }
    }

    /// The rest of `probeRound` once the NAT view is ready.
    pub(super) fn continue_probe(&mut self, id: ConnId) {
        let now = self.now;
        let Some(c) = self.cx.client_mut(id) else {
            return;
        };
        let Phase::ProbeAnalyzing {
            retry,
            token,
            pause_until,
            reopened,
        } = c.phase.clone()
        else {
            return;
        };
        if pause_until.is_some_and(|t| t > now) {
            return;
        }
        let Some(p) = c.puncher.as_mut() else { return };
        if !p.is_analyzed() {
            tracing::trace!(
                sampled = p.nat().sampled(),
                "holepunch: waiting for our NAT samples"
            );
            return;
        }
        if p.is_unstable() && !reopened {
            if p.reopen() {
                c.phase = Phase::ProbeAnalyzing {
                    retry,
                    token,
                    pause_until: None,
                    reopened: true,
                };
                self.drain_puncher(id);
                return;
            }
        } else if reopened && !p.is_unstable() {
            // The re-rolled socket is stable: probe again from it.
            c.phase = Phase::ProbeReady { retry: false };
            return self.after_client_puncher(id);
        }
        if (p.remote_firewall == firewall::UNKNOWN || token.is_none()) && retry {
            tracing::debug!(
                remote_firewall = p.remote_firewall,
                token = token.is_some(),
                "holepunch: probing again"
            );
            c.phase = Phase::ProbeReady { retry: false };
            return self.after_client_puncher(id);
        }
        let (remote, local) = (p.remote_firewall, p.nat().firewall());
        if remote == firewall::UNKNOWN || local == firewall::UNKNOWN {
            return self.client_abort(id, ConnectError::HolepunchProbeTimeout);
        }
        if remote >= firewall::RANDOM && local >= firewall::RANDOM {
            return self.client_abort(id, ConnectError::DoubleRandomNats);
        }
        let random = remote >= firewall::RANDOM || local >= firewall::RANDOM;
        if random && !self.random_punch_allowed() {
            // Without a blind relay to keep the connection, JS aborts here too.
            return self.client_abort(id, ConnectError::HolepunchAborted);
        }
        // `roundPunch`
        let Some(c) = self.cx.client_mut(id) else {
            return;
        };
        let (Some(info), Some(p), Some(secure)) =
            (c.info.clone(), c.puncher.as_mut(), c.secure.clone())
        else {
            return;
        };
        p.nat_mut().freeze();
        tracing::debug!(
            local_firewall = local,
            remote_firewall = remote,
            sampled = p.nat().sampled(),
            "holepunch: asking the server to punch"
        );
        let payload = HolepunchPayload {
            firewall: p.nat().firewall(),
            round: c.round,
            punching: true,
            addresses: p.nat().addresses().map(<[SocketAddrV4]>::to_vec),
            token: Some(secure.token(*info.server_address.ip())),
            remote_token: token,
            ..HolepunchPayload::default()
        };
        c.round += 1;
        c.phase = Phase::PunchSent;
        if !self.send_holepunch_round(id, info.server_address, info.relay_address, payload) {
            self.fail_client(id, ConnectError::HolepunchAborted);
        }
    }

    /// `abort()`: tell the server (ABORTED payload through its relay), then fail.
    fn client_abort(&mut self, id: ConnId, reason: ConnectError) {
        let (Some(c), nonce) = (self.cx.client(id), self.rng.bytes32()) else {
            return;
        };
        if let (Some(relay), Some(secure), Some(info), Some(socket)) = (
            c.server_relay,
            &c.secure,
            &c.info,
            c.puncher.as_ref().and_then(Puncher::socket),
        ) {
            let payload = HolepunchPayload {
                error: error::ABORTED,
                round: c.round,
                ..HolepunchPayload::default()
            };
            let value = Holepunch {
                mode: mode::FROM_CLIENT,
                id: info.payload.holepunch.as_ref().map_or(0, |h| h.id),
                payload: secure.seal(&payload, nonce[..24].try_into().unwrap_or([0; 24])),
                peer_address: Some(relay.peer_address),
            }
            .to_bytes();
            let mut spec =
                RequestSpec::external(command::PEER_HOLEPUNCH, Some(c.target), Some(value));
            spec.socket = Some(socket);
            self.send_request(relay.relay_address, None, spec, Owner::DownHint);
        }
        self.fail_client(id, reason);
    }
}
