//! A client's attempt (hyperdht `lib/connect.js`): what it knows from `connect` until its
//! path opens or it fails. The steps that move it (FIND_PEER, the relayed handshake,
//! holepunching) are the endpoint's, in `node/client.rs` and `node/client_punch.rs`.

use std::collections::VecDeque;
use std::net::SocketAddrV4;

use core::fmt;
use core::time::Duration;

use crate::dht::KeyPair;
use crate::holepunch::addr::{is_bogon, is_reserved, match_address};
use crate::holepunch::puncher::Puncher;
use crate::holepunch::SecurePayload;
use crate::ids::SocketId;
use crate::noise::{HandshakeOutput, Initiator};
use crate::time::Timestamp;
use crate::wire::hyperdht::{mode, Handshake};
use crate::wire::noise::{firewall, NoisePayload, RelayInfo, RelayThrough, UdxInfo};

/// Parallel handshakes through different relays (`Semaphore(2)`).
pub const PARALLEL_HANDSHAKES: usize = 2;
/// How long an open client waits for the server to reach it (`passiveConnectTimeout`).
pub const PASSIVE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause when the server does not know its NAT yet.
pub const REMOTE_UNKNOWN_PAUSE: Duration = Duration::from_secs(1);

/// Why a connection attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// No node holds a record for the key (`PEER_NOT_FOUND`).
    PeerNotFound,
    /// Records were found but no handshake succeeded (`PEER_CONNECTION_FAILED`).
    PeerConnectionFailed,
    /// The server's payload has another version (`SERVER_INCOMPATIBLE`).
    ServerIncompatible,
    /// The server answered with an error (`SERVER_ERROR`), e.g. refused.
    ServerError,
    /// The server cannot be holepunched and there is no other path (`CANNOT_HOLEPUNCH`).
    CannotHolepunch,
    /// Holepunching gave up (`HOLEPUNCH_ABORTED`).
    HolepunchAborted,
    /// Neither side learned its NAT kind in time (`HOLEPUNCH_PROBE_TIMEOUT`).
    HolepunchProbeTimeout,
    /// Both sides are behind randomising NATs: no strategy works
    /// (`HOLEPUNCH_DOUBLE_RANDOMIZED_NATS`).
    DoubleRandomNats,
    /// A holepunch reply did not authenticate (`HOLEPUNCH_INVALID`).
    HolepunchInvalid,
    /// The server aborted the holepunch (`REMOTE_ABORTED`).
    RemoteAborted,
    /// The server would not punch (`REMOTE_NOT_HOLEPUNCHING`).
    RemoteNotHolepunching,
    /// No strategy fits the two NATs (`REMOTE_NOT_HOLEPUNCHABLE`).
    RemoteNotHolepunchable,
    /// A path was found but the server never answered on the stream (no secret-stream
    /// header came back): the server did not accept the path.
    NotAccepted,
    /// The node shut down or the attempt was cancelled.
    Destroyed,
    /// The node's socket is not bound (yet, or its bind failed): report
    /// [`Node::handle_socket_bound`](crate::Node::handle_socket_bound) first.
    NotBound,
    /// Holepunching failed and the blind relay did not pair either (`RELAY_ABORTED`).
    RelayAborted,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectError::PeerNotFound => "peer not found: no DHT node knows this key",
            ConnectError::PeerConnectionFailed => "could not reach the peer through any relay",
            ConnectError::ServerIncompatible => "server speaks an incompatible protocol version",
            ConnectError::ServerError => "server refused the connection",
            ConnectError::CannotHolepunch => {
                "server cannot be holepunched and is not reachable directly"
            }
            ConnectError::HolepunchAborted => "holepunch failed",
            ConnectError::HolepunchProbeTimeout => {
                "holepunch failed: NAT kinds could not be determined"
            }
            ConnectError::DoubleRandomNats => {
                "holepunch impossible: both peers are behind randomising NATs"
            }
            ConnectError::HolepunchInvalid => "holepunch reply failed authentication",
            ConnectError::RemoteAborted => "server aborted the holepunch",
            ConnectError::RemoteNotHolepunching => "server did not start punching",
            ConnectError::RemoteNotHolepunchable => "no holepunch strategy fits the two NATs",
            ConnectError::NotAccepted => "the server did not accept the connection's stream",
            ConnectError::Destroyed => "connection attempt cancelled",
            ConnectError::NotBound => "the node's socket is not bound yet",
            ConnectError::RelayAborted => "holepunch failed and the blind relay did not pair",
        })
    }
}

impl std::error::Error for ConnectError {}

/// What the handshake established.
#[derive(Clone, Debug)]
pub(crate) struct ConnectInfo {
    pub(crate) relayed: bool,
    pub(crate) relay_address: SocketAddrV4,
    pub(crate) client_address: SocketAddrV4,
    pub(crate) server_address: SocketAddrV4,
    pub(crate) payload: NoisePayload,
    pub(crate) output: HandshakeOutput,
}

/// How the client opens its path after the handshake (hyperdht `connect.js` `holepunch()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathChoice {
    /// The server is reachable: talk to it at this address.
    Direct(SocketAddrV4),
    /// We are reachable: wait for the server to reach us.
    Passive,
    /// Both share a public address and the server cannot be punched: only a PING on the
    /// LAN to this address can open the path. (As in JS, the direct rule before it already
    /// takes every relayed handshake the server cannot be punched through; kept so the tree
    /// reads as `holepunch()` does.)
    LanOnly(SocketAddrV4),
    /// Probe the server through this relay of its (if it named one) and punch; with a LAN
    /// address to PING at the same time when both share a public address.
    Punch {
        server_relay: Option<RelayInfo>,
        lan_ping: Option<SocketAddrV4>,
    },
    /// Neither side is reachable and the server cannot be punched.
    CannotHolepunch,
}

impl ConnectInfo {
    /// Whether the server offered relays to holepunch through.
    pub fn holepunchable(&self) -> bool {
        self.payload
            .holepunch
            .as_ref()
            .is_some_and(|h| !h.relays.is_empty())
    }

    /// The decision tree of `holepunch()`: direct when the server is open (or reached
    /// unrelayed and unpunchable), passive when we are, the LAN when we share a public
    /// address (`lan`: whether local connections are on, and our local addresses), else the
    /// punch. `our_firewall` is what our first message announced.
    pub fn choose_path(&self, our_firewall: u64, lan: Option<&[SocketAddrV4]>) -> PathChoice {
        let p = &self.payload;
        let holepunchable = self.holepunchable();
        if p.firewall == firewall::OPEN || (self.relayed && !holepunchable) {
            let addr = p
                .addresses4
                .iter()
                .find(|a| !is_bogon(a.ip()))
                .copied()
                .unwrap_or(self.server_address);
            return PathChoice::Direct(addr);
        }
        if our_firewall == firewall::OPEN {
            return PathChoice::Passive;
        }
        let same_public_address = self.client_address.ip() == self.server_address.ip();
        let mut lan_ping = None;
        if let Some(mine) = lan.filter(|_| self.relayed && same_public_address) {
            let servers: Vec<SocketAddrV4> = p
                .addresses4
                .iter()
                .filter(|a| !is_reserved(a.ip()))
                .copied()
                .collect();
            if let Some(&first) = servers.first() {
                let addr = match_address(mine, &servers).unwrap_or(first);
                if !holepunchable {
                    return PathChoice::LanOnly(addr);
                }
                lan_ping = Some(addr);
            }
        }
        if !holepunchable {
            return PathChoice::CannotHolepunch;
        }
        let server_relay = p
            .holepunch
            .as_ref()
            .and_then(|h| {
                h.relays
                    .iter()
                    .find(|r| r.relay_address == self.relay_address)
                    .or_else(|| h.relays.first())
            })
            .copied();
        PathChoice::Punch {
            server_relay,
            lan_ping,
        }
    }
}

/// Where the holepunch is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Finding,
    /// Waiting for another path (LAN ping, passive connect).
    Waiting,
    /// The probe round goes out once the puncher socket is bound.
    ProbeReady {
        retry: bool,
    },
    /// Waiting for the probe round's reply.
    ProbeSent {
        retry: bool,
    },
    /// Waiting for our NAT analysis (and maybe a pause) before deciding.
    ProbeAnalyzing {
        retry: bool,
        token: Option<[u8; 32]>,
        pause_until: Option<Timestamp>,
        reopened: bool,
    },
    /// Waiting for the punch round's reply.
    PunchSent,
    /// The strategy runs; waiting for a probe.
    Punching,
    Done,
}

/// One outgoing connection.
#[derive(Debug)]
pub(crate) struct ClientConn {
    pub(crate) remote_public_key: [u8; 32],
    pub(crate) target: [u8; 32],
    initiator: Option<InitiatorBox>,
    message1: Option<Vec<u8>>,
    our_firewall: u64,
    pub(crate) local_udx_id: u32,
    query_done: bool,
    queue: VecDeque<SocketAddrV4>,
    in_flight: usize,
    attempts: usize,
    pub(crate) info: Option<ConnectInfo>,
    pub(crate) secure: Option<SecurePayload>,
    pub(crate) puncher: Option<Puncher>,
    /// The UDX stream, made at `connect` so a server that reaches us before the handshake
    /// reply does not lose its first packet.
    pub(crate) stream: Option<crate::stream::StreamId>,
    /// Where that first packet came from (JS `c.serverSocket` / `c.serverAddress`).
    pub(crate) early_path: Option<(SocketId, SocketAddrV4)>,
    pub(crate) phase: Phase,
    pub(crate) round: u64,
    pub(crate) server_relay: Option<RelayInfo>,
    pub(crate) deadline: Option<Timestamp>,
    pub(crate) lan_only: bool,
    /// Our key pair (the blind relay connection uses it too).
    pub(crate) key: KeyPair,
    /// The blind relay we asked the server to meet us at (JS `relayThrough`).
    pub(crate) relay_through: Option<RelayThrough>,
    /// Why holepunching failed, while a blind relay may still pair.
    pub(crate) held: Option<ConnectError>,
    /// Open a session to the server in the first probe round (JS `fastOpen`).
    pub(crate) fast_open: bool,
    /// Relay addresses handed in (JS `relayAddresses`), tried before the FIND_PEER walk's
    /// replies; the walk's replies from them are not tried twice.
    preconnect: Vec<SocketAddrV4>,
    /// The FIND_PEER walk, while it runs: stopped once a handshake succeeds (JS leaves its
    /// `for await` over the query, which destroys it), so it sends no more requests.
    find_query: Option<u64>,
}

/// `Initiator` kept as a template: each relay's reply is read with a copy, because the server
/// answers every relay with the same message 2.
pub(crate) struct InitiatorBox(pub(crate) Initiator);

impl fmt::Debug for InitiatorBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Initiator")
    }
}

/// What an attempt does next while it finds a handshake ([`ClientConn::next_handshake`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NextHandshake {
    /// Send a handshake through this DHT node.
    Send(SocketAddrV4),
    /// Start the FIND_PEER walk: the relay addresses handed in did not get us through.
    Walk,
    /// Nothing to try now (two handshakes in flight, or waiting for the walk).
    Wait,
    /// Nothing is left to try: the attempt fails.
    Fail(ConnectError),
}

impl ClientConn {
    /// An attempt to reach `remote_public_key` as `key` (with the ephemeral Noise key
    /// `ephemeral`), whose stream will be `local_udx_id`.
    pub fn new(
        remote_public_key: [u8; 32],
        key: KeyPair,
        ephemeral: KeyPair,
        local_udx_id: u32,
        relay_through: Option<RelayThrough>,
        fast_open: bool,
    ) -> ClientConn {
        ClientConn {
            remote_public_key,
            target: crate::crypto::hash(&remote_public_key),
            initiator: Some(InitiatorBox(Initiator::new(
                key.clone(),
                remote_public_key,
                ephemeral,
            ))),
            message1: None,
            our_firewall: crate::wire::noise::firewall::UNKNOWN,
            local_udx_id,
            query_done: false,
            queue: VecDeque::new(),
            in_flight: 0,
            attempts: 0,
            info: None,
            secure: None,
            puncher: None,
            stream: None,
            early_path: None,
            phase: Phase::Finding,
            round: 0,
            server_relay: None,
            deadline: None,
            lan_only: false,
            key,
            relay_through,
            held: None,
            fast_open,
            preconnect: Vec::new(),
            find_query: None,
        }
    }

    /// Tries handshakes through `relays` (the DHT nodes the server announced through) first;
    /// the FIND_PEER walk's replies from them are not tried twice.
    pub fn set_relay_addresses(&mut self, relays: Vec<SocketAddrV4>) {
        self.queue.extend(relays.iter().copied());
        self.preconnect = relays;
    }

    /// Whether the walk should start: not started, and not over.
    pub fn needs_walk(&self) -> bool {
        self.find_query.is_none() && !self.query_done
    }

    /// The FIND_PEER walk `query` runs for it.
    pub fn set_walk(&mut self, query: u64) {
        self.find_query = Some(query);
    }

    /// The walk ended.
    pub fn walk_done(&mut self) {
        self.query_done = true;
        self.find_query = None;
    }

    /// The walk is no longer wanted (a handshake succeeded): its id, to stop it.
    pub fn take_walk(&mut self) -> Option<u64> {
        self.find_query.take()
    }

    /// A FIND_PEER reply came from `relay` with the server's record: queues a handshake
    /// through it. `false` if it is of no use (done, or tried as a relay address already).
    pub fn offer_relay(&mut self, relay: SocketAddrV4) -> bool {
        if self.info.is_some() || self.phase == Phase::Done || self.preconnect.contains(&relay) {
            return false;
        }
        self.queue.push_back(relay);
        true
    }

    /// Whether it still looks for a handshake (none succeeded yet).
    pub fn is_finding(&self) -> bool {
        self.info.is_none() && self.phase == Phase::Finding
    }

    /// What to do next: at most [`PARALLEL_HANDSHAKES`] handshakes at once, the walk once
    /// the relay addresses are used up, and failure when nothing is left.
    pub fn next_handshake(&mut self) -> NextHandshake {
        if !self.is_finding() || self.in_flight >= PARALLEL_HANDSHAKES {
            return NextHandshake::Wait;
        }
        if let Some(relay) = self.queue.pop_front() {
            return NextHandshake::Send(relay);
        }
        if self.needs_walk() {
            return if self.in_flight == 0 {
                NextHandshake::Walk
            } else {
                NextHandshake::Wait
            };
        }
        if self.query_done && self.in_flight == 0 {
            return NextHandshake::Fail(if self.attempts > 0 {
                ConnectError::PeerConnectionFailed
            } else {
                ConnectError::PeerNotFound
            });
        }
        NextHandshake::Wait
    }

    /// The PEER_HANDSHAKE value to send through a relay: the first Noise message (made once;
    /// every relay carries the same one), announcing `remote_address` (ours as the DHT sees
    /// it, if known: then we call ourselves open) and `local` addresses. Counts the handshake
    /// as in flight.
    pub fn handshake_request(
        &mut self,
        remote_address: Option<SocketAddrV4>,
        local: &[SocketAddrV4],
    ) -> Result<Vec<u8>, crate::noise::NoiseError> {
        let noise = match &self.message1 {
            Some(m) => m.clone(),
            None => {
                self.our_firewall = if remote_address.is_some() {
                    firewall::OPEN
                } else {
                    firewall::UNKNOWN
                };
                let mut addresses4: Vec<SocketAddrV4> = remote_address.into_iter().collect();
                addresses4.extend(local.iter().copied());
                let payload = NoisePayload {
                    version: 1,
                    firewall: self.our_firewall,
                    addresses4,
                    udx: Some(UdxInfo {
                        version: 1,
                        reusable_socket: false,
                        id: u64::from(self.local_udx_id),
                        seq: 0,
                    }),
                    secret_stream: Some(1),
                    relay_through: self.relay_through,
                    ..NoisePayload::default()
                };
                let Some(ini) = self.initiator.as_mut() else {
                    return Err(crate::noise::NoiseError::OutOfOrder);
                };
                let m = ini.0.write_message1(&payload.to_bytes())?;
                self.message1 = Some(m.clone());
                m
            }
        };
        self.in_flight += 1;
        self.attempts += 1;
        Ok(Handshake {
            mode: mode::FROM_CLIENT,
            noise,
            peer_address: None,
            relay_address: None,
        }
        .to_bytes())
    }

    /// A handshake came back (or failed); returns whether the attempt still looks for one.
    pub fn handshake_returned(&mut self) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.is_finding()
    }

    /// Reads the server's second Noise message (with a copy of the initiator: the server
    /// answers every relay with the same message). `None` if it fails authentication.
    pub fn read_reply(&self, noise: &[u8]) -> Option<(Vec<u8>, HandshakeOutput)> {
        let initiator = self.initiator.as_ref()?.0.clone();
        initiator.read_message2(noise).ok()
    }

    /// The handshake succeeded: the Noise initiator is no longer needed.
    pub fn handshake_done(&mut self) {
        self.initiator = None;
    }

    /// Our firewall as the first Noise message announced it.
    pub fn our_firewall(&self) -> u64 {
        self.our_firewall
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let pause = match &self.phase {
            Phase::ProbeAnalyzing { pause_until, .. } => *pause_until,
            _ => None,
        };
        match (self.deadline, pause) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt() -> ClientConn {
        let key = KeyPair::from_seed(&[1; 32]);
        let server = KeyPair::from_seed(&[2; 32]).public_key();
        ClientConn::new(server, key, KeyPair::from_seed(&[3; 32]), 7, None, true)
    }

    fn relay(i: u8) -> SocketAddrV4 {
        SocketAddrV4::new([10, 0, 0, i].into(), 49737)
    }

    /// Relay addresses first, two handshakes at a time, then the walk; failure only once the
    /// walk is over and nothing is in flight, named by whether any handshake went out.
    #[test]
    fn handshakes_go_two_at_a_time_then_the_walk_then_failure() {
        let mut c = attempt();
        c.set_relay_addresses(vec![relay(1), relay(2), relay(3)]);
        assert_eq!(c.next_handshake(), NextHandshake::Send(relay(1)));
        let first = c.handshake_request(None, &[]).unwrap();
        assert_eq!(c.next_handshake(), NextHandshake::Send(relay(2)));
        let second = c.handshake_request(None, &[]).unwrap();
        assert_eq!(first, second, "every relay carries the same first message");
        assert_eq!(c.next_handshake(), NextHandshake::Wait, "two in flight");
        assert!(c.handshake_returned());
        assert_eq!(c.next_handshake(), NextHandshake::Send(relay(3)));
        c.handshake_request(None, &[]).unwrap();
        assert!(c.handshake_returned());
        assert_eq!(
            c.next_handshake(),
            NextHandshake::Wait,
            "one still in flight"
        );
        assert!(c.handshake_returned());
        assert_eq!(c.next_handshake(), NextHandshake::Walk);
        c.set_walk(1);
        assert_eq!(c.next_handshake(), NextHandshake::Wait, "the walk runs");
        assert!(
            !c.offer_relay(relay(2)),
            "a relay address is not tried twice"
        );
        assert!(c.offer_relay(relay(4)));
        assert_eq!(c.next_handshake(), NextHandshake::Send(relay(4)));
        c.handshake_request(None, &[]).unwrap();
        c.walk_done();
        assert_eq!(c.next_handshake(), NextHandshake::Wait);
        assert!(c.handshake_returned());
        assert_eq!(
            c.next_handshake(),
            NextHandshake::Fail(ConnectError::PeerConnectionFailed)
        );
    }

    #[test]
    fn a_walk_without_records_is_peer_not_found() {
        let mut c = attempt();
        assert_eq!(c.next_handshake(), NextHandshake::Walk);
        c.set_walk(1);
        c.walk_done();
        assert_eq!(
            c.next_handshake(),
            NextHandshake::Fail(ConnectError::PeerNotFound)
        );
    }

    fn info(relayed: bool, firewall: u64, relays: &[SocketAddrV4]) -> ConnectInfo {
        ConnectInfo {
            relayed,
            relay_address: relay(1),
            client_address: SocketAddrV4::new([1, 2, 3, 4].into(), 5000),
            server_address: SocketAddrV4::new([1, 2, 3, 4].into(), 6000),
            payload: NoisePayload {
                version: 1,
                firewall,
                addresses4: vec![
                    SocketAddrV4::new([192, 168, 1, 20].into(), 7000),
                    SocketAddrV4::new([5, 6, 7, 8].into(), 7000),
                ],
                holepunch: (!relays.is_empty()).then(|| crate::wire::noise::HolepunchInfo {
                    id: 0,
                    relays: relays
                        .iter()
                        .map(|&relay_address| RelayInfo {
                            relay_address,
                            peer_address: relay(99),
                        })
                        .collect(),
                }),
                ..NoisePayload::default()
            },
            output: HandshakeOutput {
                tx: [0; 32],
                rx: [0; 32],
                hash: [0; 64],
                remote_public_key: [0; 32],
                is_initiator: true,
            },
        }
    }

    /// `holepunch()`'s decision tree, branch by branch.
    #[test]
    fn the_path_is_chosen_as_holepunch_does() {
        let lan = [SocketAddrV4::new([192, 168, 1, 10].into(), 1)];
        let public = SocketAddrV4::new([5, 6, 7, 8].into(), 7000);
        // An open server: its first public address.
        let open = info(true, firewall::OPEN, &[]);
        assert_eq!(
            open.choose_path(firewall::UNKNOWN, None),
            PathChoice::Direct(public)
        );
        // Reached through a relay, nothing to punch through: direct too.
        let relayed = info(true, firewall::CONSISTENT, &[]);
        assert_eq!(
            relayed.choose_path(firewall::UNKNOWN, None),
            PathChoice::Direct(public)
        );
        // We are open: the server comes to us.
        let punchable = info(true, firewall::CONSISTENT, &[relay(2), relay(1)]);
        assert_eq!(
            punchable.choose_path(firewall::OPEN, None),
            PathChoice::Passive
        );
        // Same public address: a LAN ping beside the punch, through the relay we used.
        let server_relay = Some(RelayInfo {
            relay_address: relay(1),
            peer_address: relay(99),
        });
        assert_eq!(
            punchable.choose_path(firewall::UNKNOWN, Some(&lan)),
            PathChoice::Punch {
                server_relay,
                lan_ping: Some(SocketAddrV4::new([192, 168, 1, 20].into(), 7000)),
            }
        );
        assert_eq!(
            punchable.choose_path(firewall::UNKNOWN, None),
            PathChoice::Punch {
                server_relay,
                lan_ping: None
            }
        );
        // Not relayed and nothing to punch through: no way, unless the LAN (relayed only).
        let direct = info(false, firewall::CONSISTENT, &[]);
        assert_eq!(
            direct.choose_path(firewall::UNKNOWN, Some(&lan)),
            PathChoice::CannotHolepunch
        );
    }

    /// The first message announces us as open only when the DHT told us our address.
    #[test]
    fn the_first_message_says_open_when_our_address_is_known() {
        let mut c = attempt();
        c.handshake_request(Some(relay(9)), &[]).unwrap();
        assert_eq!(c.our_firewall(), firewall::OPEN);
        let mut c = attempt();
        c.handshake_request(None, &[relay(8)]).unwrap();
        assert_eq!(c.our_firewall(), firewall::UNKNOWN);
    }
}
