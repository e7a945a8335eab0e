//! A client's attempt (hyperdht `lib/connect.js`): what it knows from `connect` until its
//! path opens or it fails. The steps that move it (FIND_PEER, the relayed handshake,
//! holepunching) are the endpoint's, in `node/client.rs` and `node/client_punch.rs`.

use std::collections::VecDeque;
use std::net::SocketAddrV4;

use core::fmt;
use core::time::Duration;

use crate::dht::KeyPair;
use crate::holepunch::puncher::Puncher;
use crate::holepunch::SecurePayload;
use crate::ids::SocketId;
use crate::noise::{HandshakeOutput, Initiator};
use crate::time::Timestamp;
use crate::wire::noise::{NoisePayload, RelayInfo, RelayThrough};

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
    pub(crate) initiator: Option<InitiatorBox>,
    pub(crate) message1: Option<Vec<u8>>,
    pub(crate) our_firewall: u64,
    pub(crate) local_udx_id: u32,
    pub(crate) query_done: bool,
    pub(crate) queue: VecDeque<SocketAddrV4>,
    pub(crate) in_flight: usize,
    pub(crate) attempts: usize,
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
    pub(crate) preconnect: Vec<SocketAddrV4>,
    /// The FIND_PEER walk, while it runs: stopped once a handshake succeeds (JS leaves its
    /// `for await` over the query, which destroys it), so it sends no more requests.
    pub(crate) find_query: Option<u64>,
}

/// `Initiator` kept as a template: each relay's reply is read with a copy, because the server
/// answers every relay with the same message 2.
pub(crate) struct InitiatorBox(pub(crate) Initiator);

impl fmt::Debug for InitiatorBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Initiator")
    }
}

impl ClientConn {
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
