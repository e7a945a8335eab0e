//! The logic of the fuzz targets, shared by the cargo-fuzz crate (`fuzz/`, which includes this
//! file with `#[path]`) and the stable corpus replay test (`tests/tests/fuzz_corpus_replay.rs`).
//! It depends on `hyperdht-proto` and `std` only.
//!
//! * [`decode_message`]: arbitrary bytes into the dht-rpc decoders; whatever decodes must
//!   re-encode to a canonical form that decodes to the same message.
//! * [`node_datagrams`]: a [`Node`] driven by a script read from the input bytes (datagrams
//!   from arbitrary sources on both sockets, replies to its own requests, well-formed requests
//!   from "real" nodes, time steps, application commands, and servers, clients and blind
//!   relays: `listen`, `connect`, `serve_blind_relay`, valid Noise message 1s to its servers,
//!   and a loopback relay through which the node connects to itself), with every output
//!   drained and checked after each step. The byte format is described on [`node_datagrams`];
//!   [`Script`] writes it (for seeding the corpus).
//! * [`protomux`]: two protomux channel tables driven by a script, with junk into one.
//! * [`connection`]: one established connection between two in-memory nodes ([`Net`], a
//!   two-host network whose datagram queue the script drops, reorders and corrupts), driven
//!   by writes, reads, injected packets, time steps and closes.

use core::time::Duration;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use hyperdht_proto::crypto::{hash, keyed_hash};
use hyperdht_proto::dht::keys::command;
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::noise::Initiator;
use hyperdht_proto::wire::compact::{self, Reader};
use hyperdht_proto::wire::hyperdht::{mode, Handshake, Holepunch, LookupReply, Peer};
use hyperdht_proto::wire::noise::{NoisePayload, RelayThrough, UdxInfo};
use hyperdht_proto::wire::rpc::{Message, Request, Response};
use hyperdht_proto::{
    Config, ConnectOptions, Event, IncomingHandshake, Node, NodeId, Persistence, QuerySpec,
    RequestSpec, ServerConfig, SocketId, SocketOp, Stats, Timestamp,
};

// ----- decode_message ------------------------------------------------------------------------

/// Arbitrary bytes into [`Message::decode`] (and the direct decoders and compact readers).
/// Never panics; a decoded message re-encodes to at most as many bytes, that encoding decodes
/// to the same message, and encoding is a fixed point from there.
pub fn decode_message(data: &[u8]) {
    let decoded = Message::decode(data);
    match data.first() {
        Some(&0x03) => assert_eq!(Request::decode(data).map(Message::Request), decoded),
        Some(&0x13) => assert_eq!(Response::decode(data).map(Message::Response), decoded),
        _ => {
            assert!(decoded.is_err());
            assert!(Request::decode(data).is_err());
            assert!(Response::decode(data).is_err());
        }
    }
    if let Ok(msg) = &decoded {
        let mut out = Vec::new();
        msg.encode(&mut out);
        // Decoding is lenient (non-minimal uints, flagged-but-empty fields, trailing bytes),
        // encoding is minimal: never longer than the input.
        assert!(out.len() <= data.len(), "encoding grew the message");
        if let Message::Request(r) = msg {
            assert_eq!(r.encoded_len(), out.len(), "encoded_len");
        }
        let again = Message::decode(&out).expect("our own encoding decodes");
        assert_eq!(&again, msg, "round trip");
        let mut out2 = Vec::new();
        again.encode(&mut out2);
        assert_eq!(out, out2, "canonical encoding is a fixed point");
        // Trailing bytes are ignored.
        out.extend_from_slice(&data[..data.len().min(7)]);
        assert_eq!(Message::decode(&out).as_ref(), Ok(msg), "trailing bytes");
    }

    // The primitive readers, from the start and from every offset of a short prefix.
    for start in 0..data.len().min(12) {
        let d = &data[start..];
        let mut r = Reader::new(d);
        let _ = r.uint();
        let _ = r.buffer();
        let _ = r.ipv4_array();
        let _ = r.optional_buffer();
        let _ = Reader::new(d).ipv6_address();
        let _ = Reader::new(d).ipv4_address();
        let _ = Reader::new(d).u24();
        let _ = Reader::new(d).u64();
        let _ = Reader::new(d).bool();
        let _ = Reader::new(d).fixed::<32>();
        if let Ok(n) = Reader::new(d).array_len(1) {
            assert!(n <= d.len(), "array_len is bounded by the input");
        }
    }
}

// ----- node_datagrams ------------------------------------------------------------------------

/// Token secrets `[previous, current]` pinned unless the config byte says otherwise, so the
/// script can send valid tokens.
const SECRETS: [[u8; 32]; 2] = [[0x41; 32], [0x42; 32]];
/// Where the client socket is "bound".
const CLIENT_PORT: u16 = 50000;
/// Bootstrap nodes of the non-bootstrapper configs.
const BOOTSTRAP: [SocketAddrV4; 2] = [
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 49737),
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 49737),
];
/// Addresses picked by a selector byte below 8.
const FIXED: [SocketAddrV4; 8] = [
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 40000),
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 40001),
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 49737),
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 49737),
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 49737),
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 49737),
    SocketAddrV4::new(Ipv4Addr::new(150, 136, 142, 116), 1),
    SocketAddrV4::new(Ipv4Addr::new(88, 99, 3, 86), 49737),
];
/// The most script steps run (bounds the time one input takes).
const MAX_STEPS: usize = 4096;
/// Outgoing requests remembered for [`op::RESPOND`].
const SENT_RING: usize = 64;
/// The most datagrams one step may produce before we call it a runaway loop.
const MAX_TRANSMITS_PER_STEP: usize = 20_000;
/// Events kept for [`Summary`].
const MAX_EVENTS_KEPT: usize = 1024;

/// Op codes (the tag byte modulo 8).
pub mod op {
    /// `[socket] [src] [len] [len bytes]` (`len` is 2 bytes LE when the tag has bit 7 set).
    pub const DATAGRAM: u8 = 0;
    /// `[idx] [flags] [n] [n × addr] [to] [error] [vlen] [vlen bytes]`: a response to one of
    /// the node's recent unanswered requests (`idx` counts back from the newest). Flags: 1 valid id,
    /// 2 token, 4 deliver on the other socket, 8 from `FIXED[idx % 8]` instead of the
    /// request's destination, 16 error, 32 value, 64 a well-formed value for the request's
    /// command instead of the raw bytes (FIND_PEER: the record of the server listening on the
    /// target, else of a key made from the bytes, relayed through the closer nodes; LOOKUP:
    /// such records; PEER_HANDSHAKE / PEER_HOLEPUNCH: a REPLY with the bytes as Noise).
    pub const RESPOND: u8 = 1;
    /// `[src] [cmd] [flags] [target] [vlen] [value…]`: a well-formed request. Flags: 1 valid
    /// id, 2 forged id, 4 valid token, 8 bogus token, 16 internal, 32 target, 64 value,
    /// 128 to the client socket. `vlen` 0xff = the ipv4Address of `addr(next byte)`, 0xfe = a
    /// 2-byte port, 0xfd = a 4-byte delay in ms from 2 bytes, else `vlen % 64` raw bytes.
    pub const REQUEST: u8 = 2;
    /// `[lo] [hi]`: advance the clock by that many ms (seconds when the tag has bit 7 set),
    /// then `handle_timeout`.
    pub const ADVANCE: u8 = 3;
    /// Jump to `poll_timeout()` and run `handle_timeout`, `1 + (tag >> 3 & 7)` times.
    pub const TO_TIMEOUT: u8 = 4;
    /// `[which] [arg] [arg2]`: an application command (find_node, ping, add_node, refresh,
    /// delayed_ping, external query with commit, external request).
    pub const COMMAND: u8 = 5;
    /// `[0xa5]`: shut the node down (any other byte: nothing). With any of the tag's bits
    /// 3..8 set, [`EXT`] instead.
    pub const SHUTDOWN: u8 = 6;
    /// Tag `6 | k << 3` (`k` in 1..32): the servers', clients' and relays' operations, `k %
    /// 8` one of [`super::ext`].
    pub const EXT: u8 = 6;
    /// `[which]`: a stray socket report (bound/failed for either socket).
    pub const SOCKET: u8 = 7;
}

/// The sub-ops of [`op::EXT`] (`k % 8` of tag `6 | k << 3`): servers, clients, relays and
/// their connections. Key pairs are `KeyPair::from_seed([byte; 32])`; a "server" byte below
/// 0x80 picks one of the key pairs listened on (if any), else names a key of its own.
pub mod ext {
    /// `[key]`: `serve_blind_relay` with that key pair.
    pub const SERVE_RELAY: u8 = 0;
    /// `[key] [flags]`: `listen`. Flags: 1 hide local addresses, 2 no holepunching, 4 meet
    /// clients at the newest blind relay served (or a made-up one), 8 at most two handshakes,
    /// 16 an accept policy refusing client keys whose first byte is odd.
    pub const LISTEN: u8 = 1;
    /// `[server] [key] [flags]` (+ 2 addresses with flag 4): `connect_with` to that server,
    /// as key pair `key` (flag 8: the node's default key pair). Flags: 1 meet at the newest
    /// blind relay served (or a made-up one), 2 no fast open, 4 two relay addresses.
    pub const CONNECT: u8 = 2;
    /// `[server] [client] [mode] [src] [flags] [udx]` (+ addresses): a valid Noise message 1
    /// from key pair `client` to the server, made by proto's own initiator, in a PEER_HANDSHAKE
    /// request for the server's target from `src`. Mode % 4: FROM_CLIENT, FROM_RELAY (+ the
    /// client's address), FROM_SECOND_RELAY (+ the client's and the first relay's), else the
    /// mode byte itself. Flags: 1 payload version 2, 2-4 the client's firewall, 8 one client
    /// address (+ address), 16 no UDX info, 32 relay through the newest blind relay served,
    /// 64 a stream id past 32 bits, 128 on the client socket.
    pub const HANDSHAKE: u8 = 3;
    /// `[idx] [flags] [client] [server]`: acts as the relay for one of the node's own recent
    /// unanswered PEER_HANDSHAKE / PEER_HOLEPUNCH requests (`idx` from the newest): forwards
    /// it to the node's server socket (FROM_CLIENT from address `client`, or with flag 1 and
    /// always for holepunches, FROM_RELAY from the relay with `client` as the peer address),
    /// and turns the server's answer into the relay's REPLY to the request (naming `server`
    /// as the server's address when relayed). The two addresses then route back into the
    /// node ([`FORWARD`]), so its client and server can reach each other.
    pub const LOOPBACK: u8 = 4;
    /// `[n] [flags]`: delivers up to `n + 1` datagrams waiting on loopback routes (flag 1:
    /// drops the first instead).
    pub const FORWARD: u8 = 5;
    /// `[which] [idx] [len] [len bytes]`: on a connection the node made or reported: % 10
    /// write, write a message, read (`len + 1` bytes), read a message, finish, reset, remove,
    /// cancel the connect, keep-alive, else look at it.
    pub const CONN: u8 = 6;
    /// `[idx]`: closes one of the servers.
    pub const CLOSE_SERVER: u8 = 7;
}

/// Reads the script; past the end every read is 0.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = end;
        &self.data[start..end]
    }

    /// An IPv4 address: `FIXED[b]` below 8, six raw bytes after a 0xff, else one of 247
    /// distinct nodes `10.1.0.b:49737+(b%3)`.
    fn addr(&mut self) -> SocketAddrV4 {
        match self.u8() {
            b if (b as usize) < FIXED.len() => FIXED[b as usize],
            0xff => {
                let ip = Ipv4Addr::new(self.u8(), self.u8(), self.u8(), self.u8());
                SocketAddrV4::new(ip, self.u16())
            }
            b => SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, b), 49737 + u16::from(b % 3)),
        }
    }

    /// A datagram source: also IPv6, IPv4-mapped IPv6 and port 0.
    fn source(&mut self) -> SocketAddr {
        match self.data.get(self.pos).copied() {
            Some(0xfe) => {
                self.pos += 1;
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 5, 0, 0))
            }
            Some(0xfd) => {
                self.pos += 1;
                SocketAddr::V6(SocketAddrV6::new(
                    Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(),
                    49737,
                    0,
                    0,
                ))
            }
            Some(0xfc) => {
                self.pos += 1;
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 0))
            }
            _ => SocketAddr::V4(self.addr()),
        }
    }
}

/// One of the node's requests as it left.
#[derive(Clone)]
struct Sent {
    socket: SocketId,
    dst: SocketAddrV4,
    tid: u16,
    command: u64,
    target: Option<[u8; 32]>,
    /// The value of a PEER_HANDSHAKE or PEER_HOLEPUNCH (for [`op::EXT`] loopback).
    value: Option<Vec<u8>>,
}

struct Harness {
    node: Node,
    now: Timestamp,
    sent: Vec<Sent>,
    fail_first_bind: bool,
    server_port: u16,
    steps: usize,
    events: Vec<Event>,
    transmits: usize,
    max_table_len: usize,
    /// Key pairs listened on (also by `serve_blind_relay`), in order.
    servers: Vec<(hyperdht_proto::ServerId, KeyPair)>,
    /// Public keys of the blind relays served.
    relays: Vec<[u8; 32]>,
    /// Connections the node reported or made (`connect`, `Incoming`, `Connected`).
    conns: Vec<hyperdht_proto::ConnId>,
    /// Where the node's datagrams to some addresses loop back to (set by a loopback).
    routes: Vec<Route>,
    /// Datagrams to a route's address, waiting for [`ext::FORWARD`].
    looped: VecDeque<(SocketId, SocketAddrV4, Vec<u8>)>,
    /// The dht-rpc datagrams sent during the current op.
    step_transmits: Vec<hyperdht_proto::Transmit>,
    /// Initiators of the valid message 1s sent, newest last.
    initiators: Vec<Initiator>,
    handshake_replies: usize,
    loopbacks: usize,
}

/// A datagram the node sends to `dst` comes back in on `socket` from `from`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Route {
    dst: SocketAddrV4,
    socket: SocketId,
    from: SocketAddrV4,
}

/// Datagrams waiting on routes, at most.
const LOOPED_MAX: usize = 256;
/// Initiators kept for checking replies.
const INITIATORS_KEPT: usize = 8;

fn other(socket: SocketId) -> SocketId {
    if socket == SocketId::SERVER {
        SocketId::CLIENT
    } else {
        SocketId::SERVER
    }
}

impl Harness {
    /// Drains the node until it has no output left: a socket close waits for the datagrams
    /// queued on its socket, so one pass of ops, transmits, events can leave it behind (and
    /// `poll_timeout` says `now` until it is taken).
    fn drain(&mut self) {
        for _ in 0..16 {
            let before = (self.transmits, self.events.len());
            let ops = self.drain_once();
            if ops == 0 && before == (self.transmits, self.events.len()) {
                return;
            }
        }
        panic!("the node keeps producing output");
    }

    /// One pass: answers socket ops, checks and records transmits, drains events; how many
    /// socket ops there were.
    fn drain_once(&mut self) -> usize {
        let now = self.now;
        let mut ops = 0;
        while let Some(op) = self.node.poll_socket_op() {
            ops += 1;
            match op {
                SocketOp::Bind { socket, addr } => {
                    if socket == SocketId::SERVER && self.fail_first_bind {
                        self.fail_first_bind = false;
                        self.node.handle_socket_failed(now, socket);
                        continue;
                    }
                    let port = match (socket == SocketId::SERVER, addr.port()) {
                        (true, 0) => 49999,
                        (true, p) => p,
                        (false, _) => CLIENT_PORT,
                    };
                    if socket == SocketId::SERVER {
                        self.server_port = port;
                    }
                    let bound = SocketAddrV4::new(*addr.ip(), port);
                    self.node
                        .handle_socket_bound(now, socket, SocketAddr::V4(bound));
                }
                SocketOp::Close { .. } => {}
                _ => {}
            }
        }
        let mut n = 0;
        while let Some(t) = self.node.poll_transmit() {
            n += 1;
            assert!(n <= MAX_TRANSMITS_PER_STEP, "runaway transmits");
            if let SocketAddr::V4(dst) = t.dst {
                if let Some(r) = self.routes.iter().find(|r| r.dst == dst) {
                    if self.looped.len() < LOOPED_MAX {
                        self.looped.push_back((r.socket, r.from, t.payload.clone()));
                    }
                }
            }
            // dht-rpc datagrams (other layers' packets, e.g. 1-byte holepunch probes, are
            // not checked here).
            if t.payload.len() >= 2 && matches!(t.payload[0], 0x03 | 0x13) {
                let SocketAddr::V4(dst) = t.dst else {
                    panic!("the DHT is IPv4-only: {:?}", t.dst)
                };
                let msg = Message::decode(&t.payload).expect("our datagrams decode");
                let mut again = Vec::new();
                msg.encode(&mut again);
                assert_eq!(again, t.payload, "our datagrams are canonical");
                if let Message::Request(r) = &msg {
                    // Retransmissions keep their tid: remember each tid once, newest last.
                    self.sent.retain(|s| s.tid != r.tid);
                    if self.sent.len() == SENT_RING {
                        self.sent.remove(0);
                    }
                    let relayed = !r.internal
                        && matches!(r.command, command::PEER_HANDSHAKE | command::PEER_HOLEPUNCH);
                    self.sent.push(Sent {
                        socket: t.socket,
                        dst,
                        tid: r.tid,
                        command: if r.internal { u64::MAX } else { r.command },
                        target: r.target,
                        value: r.value.filter(|_| relayed).map(<[u8]>::to_vec),
                    });
                }
                self.note_handshake_reply(&msg);
                if self.step_transmits.len() < SENT_RING {
                    self.step_transmits.push(t.clone());
                }
            }
        }
        self.transmits += n;
        self.max_table_len = self.max_table_len.max(self.node.table().len());
        while let Some(e) = self.node.poll_event() {
            if let Event::Incoming { conn, .. } | Event::Connected { conn, .. } = &e {
                if !self.conns.contains(conn) && self.conns.len() < 64 {
                    self.conns.push(*conn);
                }
            }
            if self.events.len() < MAX_EVENTS_KEPT {
                self.events.push(e);
            }
        }
        self.check();
        ops
    }

    /// Counts the server handshake replies (REPLY or FROM_SERVER) that authenticate for one
    /// of the initiators [`op::EXT`] made.
    fn note_handshake_reply(&mut self, msg: &Message<'_>) {
        let value = match msg {
            Message::Response(r) => r.value,
            Message::Request(r) if r.command == command::PEER_HANDSHAKE && !r.internal => r.value,
            _ => None,
        };
        let Some(hs) = value.and_then(|v| Handshake::decode(v).ok()) else {
            return;
        };
        if !matches!(hs.mode, mode::REPLY | mode::FROM_SERVER) {
            return;
        }
        if self
            .initiators
            .iter()
            .any(|i| i.clone().read_message2(&hs.noise).is_ok())
        {
            self.handshake_replies += 1;
        }
    }

    /// Bounds that must hold after every step.
    fn check(&self) {
        let table = self.node.table();
        assert!(table.len() <= 256 * 20, "routing table too big");
        let mut count = 0;
        for i in 0..256 {
            let row = table.row(i);
            assert!(row.len() <= 20, "row {i} holds {} nodes", row.len());
            count += row.len();
        }
        assert_eq!(count, table.len(), "table len");
        assert!(!table.contains(table.id()), "our own id in the table");
        assert_eq!(table.oldest_first().count(), table.len(), "recency order");
        let stats = self.node.stats();
        assert!(stats.requests_active <= 1 << 16, "requests in flight");
        assert!(
            stats.queries_active <= (self.steps as u64 + 1) * 4 + 16,
            "queries pile up: {}",
            stats.queries_active
        );
        assert!(stats.requests_active <= stats.requests_total);
    }

    fn timeout(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        self.node.handle_timeout(self.now);
        self.drain();
        // The run-loop contract: once due timers ran and output is drained, the next
        // deadline is in the future (a driver would spin otherwise).
        if let Some(next) = self.node.poll_timeout() {
            assert!(
                next > self.now,
                "poll_timeout {next:?} not after now {:?}",
                self.now
            );
        }
    }

    fn step(&mut self, inp: &mut Input<'_>) {
        let tag = inp.u8();
        match tag % 8 {
            op::DATAGRAM => {
                let socket = if inp.u8() & 1 == 0 {
                    SocketId::SERVER
                } else {
                    SocketId::CLIENT
                };
                let from = inp.source();
                let len = if tag & 0x80 != 0 {
                    inp.u16() as usize
                } else {
                    inp.u8() as usize
                };
                let payload = inp.bytes(len).to_vec();
                self.node.handle_datagram(self.now, socket, from, &payload);
            }
            op::RESPOND => self.respond(inp),
            op::REQUEST => self.request(inp),
            op::ADVANCE => {
                let n = u64::from(inp.u16());
                let d = if tag & 0x80 != 0 {
                    Duration::from_secs(n)
                } else {
                    Duration::from_millis(n)
                };
                self.timeout(self.now + d);
                return;
            }
            op::TO_TIMEOUT => {
                for _ in 0..=(tag >> 3 & 7) {
                    let Some(t) = self.node.poll_timeout() else {
                        break;
                    };
                    self.timeout(t);
                }
                return;
            }
            op::COMMAND => self.command(inp),
            op::SHUTDOWN if tag >> 3 != 0 => {
                self.step_transmits.clear();
                self.ext(tag >> 3, inp);
            }
            op::SHUTDOWN => {
                if inp.u8() == 0xa5 {
                    self.node.shutdown(self.now);
                }
            }
            _ => {
                let which = inp.u8();
                let socket = if which & 1 == 0 {
                    SocketId::SERVER
                } else {
                    SocketId::CLIENT
                };
                if which & 2 == 0 {
                    self.node.handle_socket_failed(self.now, socket);
                } else {
                    let a =
                        SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 40000 + u16::from(which));
                    self.node
                        .handle_socket_bound(self.now, socket, SocketAddr::V4(a));
                }
            }
        }
        self.drain();
    }

    fn respond(&mut self, inp: &mut Input<'_>) {
        let idx = inp.u8() as usize;
        let flags = inp.u8();
        let n = (inp.u8() % 24) as usize;
        let closer: Vec<SocketAddrV4> = (0..n).map(|_| inp.addr()).collect();
        let to = inp.addr();
        let error = u64::from(inp.u8() % 4);
        let vlen = (inp.u8() % 64) as usize;
        let value = inp.bytes(vlen).to_vec();
        if self.sent.is_empty() {
            return;
        }
        // Answered requests leave the ring (a late duplicate is still possible: `idx` picks
        // among the rest, and raw datagrams can replay anything).
        let sent = self
            .sent
            .remove(self.sent.len() - 1 - idx % self.sent.len());
        let from = if flags & 8 != 0 {
            FIXED[idx % FIXED.len()]
        } else {
            sent.dst
        };
        let value = if flags & 64 != 0 {
            self.well_formed_value(&sent, &closer, &value)
        } else {
            value
        };
        let res = Response {
            tid: sent.tid,
            to,
            id: (flags & 1 != 0).then(|| NodeId::from_addr(&from).0),
            token: (flags & 2 != 0).then_some([0xaa; 32]),
            closer_nodes: closer,
            error: if flags & 16 != 0 { error } else { 0 },
            value: (flags & (32 | 64) != 0).then_some(&value[..]),
        };
        let mut bytes = Vec::new();
        res.encode(&mut bytes);
        let socket = if flags & 4 != 0 {
            other(sent.socket)
        } else {
            sent.socket
        };
        self.node
            .handle_datagram(self.now, socket, SocketAddr::V4(from), &bytes);
    }

    fn request(&mut self, inp: &mut Input<'_>) {
        let from = inp.addr();
        let cmd = u64::from(inp.u8() % 12);
        let flags = inp.u8();
        let t = inp.u8();
        let target = if (t as usize) < FIXED.len() {
            NodeId::from_addr(&FIXED[t as usize]).0
        } else {
            [t; 32]
        };
        let value: Vec<u8> = match inp.u8() {
            0xff => compact::ipv4_address_bytes(&inp.addr()).to_vec(),
            0xfe => inp.u16().to_le_bytes().to_vec(),
            0xfd => (u32::from(inp.u16()) * 4).to_le_bytes().to_vec(),
            n => inp.bytes((n % 64) as usize).to_vec(),
        };
        let id = if flags & 1 != 0 {
            Some(NodeId::from_addr(&from).0)
        } else if flags & 2 != 0 {
            Some([1; 32])
        } else {
            None
        };
        let host = from.ip().to_string();
        let token = if flags & 4 != 0 {
            Some(keyed_hash(&SECRETS[1], host.as_bytes()))
        } else if flags & 8 != 0 {
            Some([0; 32])
        } else {
            None
        };
        let (socket, local_port) = if flags & 128 != 0 {
            (SocketId::CLIENT, CLIENT_PORT)
        } else {
            (SocketId::SERVER, self.server_port)
        };
        let req = Request {
            tid: u16::from(t) << 8 | u16::from(flags),
            to: SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), local_port),
            id,
            token,
            internal: flags & 16 != 0,
            command: cmd,
            target: (flags & 32 != 0).then_some(target),
            value: (flags & 64 != 0).then_some(&value[..]),
        };
        let mut bytes = Vec::new();
        req.encode(&mut bytes);
        self.node
            .handle_datagram(self.now, socket, SocketAddr::V4(from), &bytes);
    }

    /// The public key of a "server" byte (see [`ext`]).
    fn server_key(&self, b: u8) -> [u8; 32] {
        match self.servers.len() {
            n if n > 0 && b < 0x80 => self.servers[b as usize % n].1.public_key(),
            _ => KeyPair::from_seed(&[b; 32]).public_key(),
        }
    }

    /// The newest blind relay served, else a made-up key.
    fn relay_key(&self) -> [u8; 32] {
        self.relays
            .last()
            .copied()
            .unwrap_or_else(|| KeyPair::from_seed(&[0xee; 32]).public_key())
    }

    /// The node's server socket address as a request names it.
    fn server_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), self.server_port)
    }

    fn ext(&mut self, k: u8, inp: &mut Input<'_>) {
        let now = self.now;
        match k % 8 {
            ext::SERVE_RELAY => {
                let key = KeyPair::from_seed(&[inp.u8(); 32]);
                if let Ok(id) = self.node.serve_blind_relay(now, &key) {
                    self.relays.push(key.public_key());
                    self.servers.push((id, key));
                }
            }
            ext::LISTEN => {
                let key = KeyPair::from_seed(&[inp.u8(); 32]);
                let flags = inp.u8();
                let mut config = ServerConfig::default();
                config.hide_local_addresses = flags & 1 != 0;
                config.holepunch = flags & 2 == 0;
                if flags & 4 != 0 {
                    config.relay_through = Some(self.relay_key());
                }
                if flags & 8 != 0 {
                    config.max_handshakes = 2;
                }
                if flags & 16 != 0 {
                    config.accept = Some(std::sync::Arc::new(|h: &IncomingHandshake| {
                        h.remote_public_key[0] & 1 == 0
                    }));
                }
                if let Ok(id) = self.node.listen(now, &key, config) {
                    self.servers.push((id, key));
                }
            }
            ext::CONNECT => {
                let remote = self.server_key(inp.u8());
                let key = inp.u8();
                let flags = inp.u8();
                let mut options = ConnectOptions::default();
                if flags & 8 == 0 {
                    options = options.with_key_pair(&KeyPair::from_seed(&[key; 32]));
                }
                if flags & 1 != 0 {
                    options = options.with_relay_through(self.relay_key());
                }
                options.fast_open = flags & 2 == 0;
                if flags & 4 != 0 {
                    options.relay_addresses = vec![inp.addr(), inp.addr()];
                }
                let conn = self.node.connect_with(now, &remote, options);
                if self.conns.len() < 64 {
                    self.conns.push(conn);
                }
            }
            ext::HANDSHAKE => self.handshake(inp),
            ext::LOOPBACK => self.loopback(inp),
            ext::FORWARD => {
                let n = inp.u8();
                if inp.u8() & 1 != 0 {
                    self.looped.pop_front();
                    return;
                }
                for _ in 0..=n {
                    let Some((socket, from, payload)) = self.looped.pop_front() else {
                        break;
                    };
                    self.node
                        .handle_datagram(self.now, socket, SocketAddr::V4(from), &payload);
                    self.drain();
                }
            }
            ext::CONN => {
                let which = inp.u8();
                let idx = inp.u8() as usize;
                let len = inp.u8() as usize;
                let data = inp.bytes(len).to_vec();
                if self.conns.is_empty() {
                    return;
                }
                let conn = self.conns[idx % self.conns.len()];
                let node = &mut self.node;
                match which % 10 {
                    0 => drop(node.conn(conn).write(now, &data)),
                    1 => drop(node.conn(conn).write_message(now, &data)),
                    2 => drop(node.conn(conn).read(&mut vec![0; len + 1])),
                    3 => drop(node.conn(conn).read_message()),
                    4 => drop(node.conn(conn).finish(now)),
                    5 => node.conn(conn).reset(now),
                    6 => node.conn(conn).remove(),
                    7 => node.cancel_connect(now, conn),
                    8 => node.conn(conn).send_keep_alive(now),
                    _ => {
                        let _ = node.conn_info(conn);
                    }
                }
            }
            _ => {
                // ext::CLOSE_SERVER
                let idx = inp.u8() as usize;
                if !self.servers.is_empty() {
                    let (id, _) = self.servers.remove(idx % self.servers.len());
                    self.node.close_server(now, id);
                }
            }
        }
    }

    /// [`ext::HANDSHAKE`].
    fn handshake(&mut self, inp: &mut Input<'_>) {
        let server = self.server_key(inp.u8());
        let c = inp.u8();
        let m = inp.u8();
        let src = inp.addr();
        let flags = inp.u8();
        let udx = inp.u8();
        let client = KeyPair::from_seed(&[c; 32]);
        let mut initiator = Initiator::new(client, server, KeyPair::from_seed(&[c ^ 0x5a; 32]));
        let payload = NoisePayload {
            version: if flags & 1 != 0 { 2 } else { 1 },
            firewall: u64::from(flags >> 1 & 3),
            addresses4: if flags & 8 != 0 {
                vec![inp.addr()]
            } else {
                Vec::new()
            },
            udx: (flags & 16 == 0).then_some(UdxInfo {
                version: 1,
                reusable_socket: udx & 1 != 0,
                id: u64::from(udx) << if flags & 64 != 0 { 32 } else { 0 },
                seq: 0,
            }),
            secret_stream: Some(1),
            relay_through: (flags & 32 != 0).then(|| RelayThrough {
                version: 1,
                public_key: self.relay_key(),
                token: [udx; 32],
            }),
            ..NoisePayload::default()
        };
        let Ok(noise) = initiator.write_message1(&payload.to_bytes()) else {
            return;
        };
        let mode = match m % 4 {
            0 => mode::FROM_CLIENT,
            1 => mode::FROM_RELAY,
            2 => mode::FROM_SECOND_RELAY,
            _ => u64::from(m),
        };
        let peer_address = (mode != mode::FROM_CLIENT).then(|| inp.addr());
        let relay_address = (mode == mode::FROM_SECOND_RELAY).then(|| inp.addr());
        let value = Handshake {
            mode,
            noise,
            peer_address,
            relay_address,
        }
        .to_bytes();
        let req = Request {
            tid: u16::from(c) << 8 | u16::from(m),
            to: self.server_addr(),
            id: None,
            token: None,
            internal: false,
            command: command::PEER_HANDSHAKE,
            target: Some(hash(&server)),
            value: Some(&value),
        };
        let mut bytes = Vec::new();
        req.encode(&mut bytes);
        if self.initiators.len() == INITIATORS_KEPT {
            self.initiators.remove(0);
        }
        self.initiators.push(initiator);
        let socket = if flags & 128 != 0 {
            SocketId::CLIENT
        } else {
            SocketId::SERVER
        };
        self.node
            .handle_datagram(self.now, socket, SocketAddr::V4(src), &bytes);
    }

    /// [`ext::LOOPBACK`].
    fn loopback(&mut self, inp: &mut Input<'_>) {
        let idx = inp.u8() as usize;
        let flags = inp.u8();
        let client = inp.addr();
        let server_seen = inp.addr();
        // The client's own requests (FROM_CLIENT), not the server's answers to other relays.
        let from_client = |v: &[u8]| match Handshake::decode(v) {
            Ok(hs) => hs.mode == mode::FROM_CLIENT,
            Err(_) => Holepunch::decode(v).is_ok_and(|hp| hp.mode == mode::FROM_CLIENT),
        };
        let found: Vec<usize> = (0..self.sent.len())
            .filter(|&i| self.sent[i].value.as_deref().is_some_and(from_client))
            .collect();
        if found.is_empty() {
            return;
        }
        let sent = self.sent.remove(found[found.len() - 1 - idx % found.len()]);
        let (relay, value) = (sent.dst, sent.value.unwrap_or_default());
        let holepunch = sent.command == command::PEER_HOLEPUNCH;
        let relayed = flags & 1 != 0 || holepunch;
        let forwarded = if holepunch {
            let Ok(mut hp) = Holepunch::decode(&value) else {
                return;
            };
            hp.mode = mode::FROM_RELAY;
            hp.peer_address = Some(client);
            hp.to_bytes()
        } else {
            let Ok(mut hs) = Handshake::decode(&value) else {
                return;
            };
            if relayed {
                hs.mode = mode::FROM_RELAY;
                hs.peer_address = Some(client);
            }
            hs.to_bytes()
        };
        let req = Request {
            tid: sent.tid,
            to: self.server_addr(),
            id: None,
            token: None,
            internal: false,
            command: sent.command,
            target: sent.target,
            value: Some(&forwarded),
        };
        let mut bytes = Vec::new();
        req.encode(&mut bytes);
        let from = if relayed { relay } else { client };
        // From now on the two see each other at these addresses (the server may send at once).
        let server_at = if relayed { server_seen } else { relay };
        for route in [
            Route {
                dst: server_at,
                socket: SocketId::SERVER,
                from: client,
            },
            Route {
                dst: client,
                socket: sent.socket,
                from: server_at,
            },
        ] {
            self.routes.retain(|r| r.dst != route.dst);
            if self.routes.len() == 8 {
                self.routes.remove(0);
            }
            self.routes.push(route);
        }
        self.step_transmits.clear();
        self.node
            .handle_datagram(self.now, SocketId::SERVER, SocketAddr::V4(from), &bytes);
        self.drain();
        // The server's answer: a REPLY to the client, or FROM_SERVER to the relay.
        let answer = self.step_transmits.iter().find_map(|t| {
            let (tid, command, value) = match Message::decode(&t.payload).ok()? {
                Message::Response(r) if !relayed => (r.tid, sent.command, r.value?),
                Message::Request(r) if relayed => (r.tid, r.command, r.value?),
                _ => return None,
            };
            (tid == sent.tid && command == sent.command && t.dst == SocketAddr::V4(from))
                .then(|| value.to_vec())
        });
        let Some(answer) = answer else {
            return;
        };
        let peer_address = relayed.then_some(server_seen);
        let reply = if holepunch {
            let Ok(mut hp) = Holepunch::decode(&answer) else {
                return;
            };
            hp.mode = mode::REPLY;
            hp.peer_address = peer_address;
            hp.to_bytes()
        } else {
            let Ok(mut hs) = Handshake::decode(&answer) else {
                return;
            };
            hs.mode = mode::REPLY;
            hs.peer_address = peer_address;
            hs.to_bytes()
        };
        let res = Response {
            tid: sent.tid,
            to: client,
            id: Some(NodeId::from_addr(&relay).0),
            token: None,
            closer_nodes: Vec::new(),
            error: 0,
            value: Some(&reply),
        };
        let mut bytes = Vec::new();
        res.encode(&mut bytes);
        self.loopbacks += 1;
        self.node
            .handle_datagram(self.now, sent.socket, SocketAddr::V4(relay), &bytes);
    }

    /// A well-formed value answering `sent` (see [`op::RESPOND`]).
    fn well_formed_value(&self, sent: &Sent, closer: &[SocketAddrV4], bytes: &[u8]) -> Vec<u8> {
        let made_up = || KeyPair::from_seed(&[bytes.first().copied().unwrap_or(0); 32]);
        let record = |pk: [u8; 32]| {
            Peer {
                public_key: pk,
                relay_addresses: closer.iter().take(3).copied().collect(),
            }
            .to_bytes()
        };
        match sent.command {
            command::FIND_PEER => {
                let pk = self
                    .servers
                    .iter()
                    .map(|(_, k)| k.public_key())
                    .find(|pk| Some(hash(pk)) == sent.target)
                    .unwrap_or_else(|| made_up().public_key());
                record(pk)
            }
            command::LOOKUP => {
                let mut records: Vec<Vec<u8>> = self
                    .servers
                    .iter()
                    .take(3)
                    .map(|(_, k)| record(k.public_key()))
                    .collect();
                records.push(record(made_up().public_key()));
                let raw: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                let mut out = Vec::new();
                LookupReply::encode_raw(&raw, u64::from(bytes.len() as u8 % 3), &mut out);
                out
            }
            command::PEER_HANDSHAKE => Handshake {
                mode: mode::REPLY,
                noise: bytes.to_vec(),
                peer_address: closer.first().copied(),
                relay_address: None,
            }
            .to_bytes(),
            command::PEER_HOLEPUNCH => Holepunch {
                mode: mode::REPLY,
                id: 0,
                payload: bytes.to_vec(),
                peer_address: closer.first().copied(),
            }
            .to_bytes(),
            _ => bytes.to_vec(),
        }
    }

    fn command(&mut self, inp: &mut Input<'_>) {
        let now = self.now;
        let which = inp.u8();
        let arg = inp.u8();
        match which % 8 {
            0 => {
                self.node.find_node(now, NodeId([arg; 32]));
            }
            1 => {
                let a = inp.addr();
                self.node.ping(now, a);
            }
            2 => {
                let a = inp.addr();
                self.node.add_node(now, a);
            }
            3 => self.node.refresh(now),
            4 => {
                let a = inp.addr();
                let _ = self
                    .node
                    .delayed_ping(now, a, Duration::from_millis(u64::from(arg) * 50));
            }
            5 | 6 => {
                let mut spec = QuerySpec::external([arg; 32], u64::from(which >> 3), None);
                spec.commit = which % 8 == 6;
                if arg & 1 != 0 {
                    spec.nodes = vec![inp.addr(), inp.addr()];
                }
                if arg & 2 != 0 {
                    spec.value = Some(vec![arg; 3]);
                }
                self.node.query(now, spec);
            }
            _ => {
                let a = inp.addr();
                let mut spec = RequestSpec::external(
                    u64::from(which >> 3),
                    (arg & 1 != 0).then_some([arg; 32]),
                    (arg & 2 != 0).then(|| vec![arg; 2]),
                );
                spec.retry = arg & 4 == 0;
                if arg & 8 != 0 {
                    spec.token = Some([arg; 32]);
                }
                self.node.request(now, a, spec);
            }
        }
    }
}

/// A [`Node`] fed a script of datagrams, replies, requests, time steps, commands, and server,
/// client and relay operations.
///
/// Format: `[config] [seed]` then ops until the input ends (see [`op`]; the tag byte's low 3
/// bits select the op, its high bits are op arguments; tag 6 with high bits set is one of
/// the server, client and relay ops of [`ext`]). Config byte: low 2 bits pick
/// bootstrapper (0), adaptive with two bootstrap nodes (1), persistent with them (2),
/// ephemeral with them (3); 4 = the first server bind fails, 8 = congestion window of 4,
/// 16 = unlimited down hints, 32 = no stray-node filter, 64 = at most 4 delayed pings,
/// 128 = random token secrets. After each op every output is drained and checked: no panic,
/// our datagrams decode and are canonical, table and in-flight sizes stay bounded, and after
/// `handle_timeout` the next deadline is in the future.
pub fn node_datagrams(data: &[u8]) {
    run_script(data);
}

/// What a [`node_datagrams`] run did, for checking that seeds reach interesting states.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The node's counters at the end.
    pub stats: Stats,
    /// Routing table size at the end.
    pub table_len: usize,
    /// Largest routing table size seen after any step.
    pub max_table_len: usize,
    /// Every event the node emitted.
    pub events: Vec<Event>,
    /// Datagrams the node sent.
    pub transmits: usize,
    /// Whether the node ended persistent.
    pub persistent: bool,
    /// Server handshake replies that authenticated for an [`ext::HANDSHAKE`] initiator.
    pub handshake_replies: usize,
    /// [`ext::LOOPBACK`]s that got the server's answer back to the client.
    pub loopbacks: usize,
}

/// Runs a [`node_datagrams`] script and reports what happened.
pub fn run_script(data: &[u8]) -> Summary {
    let mut inp = Input { data, pos: 0 };
    let cfg = inp.u8();
    let seed = inp.u8();
    let mut config = match cfg & 3 {
        0 => Config::bootstrapper(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 49737)),
        n => {
            let mut c = Config::new(BOOTSTRAP.to_vec());
            c.persistence = match n {
                1 => Persistence::Adaptive,
                2 => Persistence::Persistent,
                _ => Persistence::Ephemeral,
            };
            c
        }
    };
    if cfg & 8 != 0 {
        config.max_window = 4;
    }
    if cfg & 16 != 0 {
        config.down_hints_rate_limit = None;
    }
    if cfg & 32 != 0 {
        config.filter_stray_nodes = false;
    }
    if cfg & 64 != 0 {
        config.max_delayed_pings = 4;
    }
    if cfg & 128 == 0 {
        config.token_secrets = Some(SECRETS);
    }
    let now = Timestamp::from_millis(1_000);
    let mut h = Harness {
        node: Node::new(config, [seed; 32], now),
        now,
        sent: Vec::new(),
        fail_first_bind: cfg & 4 != 0,
        server_port: 0,
        steps: 0,
        events: Vec::new(),
        transmits: 0,
        max_table_len: 0,
        servers: Vec::new(),
        relays: Vec::new(),
        conns: Vec::new(),
        routes: Vec::new(),
        looped: VecDeque::new(),
        step_transmits: Vec::new(),
        initiators: Vec::new(),
        handshake_replies: 0,
        loopbacks: 0,
    };
    h.drain();
    while !inp.done() && h.steps < MAX_STEPS {
        h.steps += 1;
        h.step(&mut inp);
    }
    // Let everything in flight run out.
    for _ in 0..64 {
        let Some(t) = h.node.poll_timeout() else {
            break;
        };
        h.timeout(t);
    }
    Summary {
        stats: h.node.stats(),
        table_len: h.node.table().len(),
        max_table_len: h.max_table_len,
        events: h.events,
        transmits: h.transmits,
        persistent: !h.node.is_ephemeral(),
        handshake_replies: h.handshake_replies,
        loopbacks: h.loopbacks,
    }
}

// ----- writing scripts -----------------------------------------------------------------------

/// Writes [`node_datagrams`] inputs (used to seed the stored corpus).
#[derive(Clone, Debug, Default)]
pub struct Script(Vec<u8>);

impl Script {
    /// A script for config byte `config` and seed byte `seed`.
    pub fn new(config: u8, seed: u8) -> Script {
        Script(vec![config, seed])
    }

    /// A raw datagram on the server (`client` false) or client socket from selector `src`.
    pub fn datagram(mut self, client: bool, src: u8, payload: &[u8]) -> Script {
        let len = u16::try_from(payload.len()).expect("datagram fits in 64 KiB");
        self.0
            .extend_from_slice(&[op::DATAGRAM | 0x80, client as u8, src]);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(payload);
        self
    }

    /// A reply to the node's `idx`-th newest request (see [`op::RESPOND`]).
    pub fn respond(mut self, idx: u8, flags: u8, closer: &[u8], to: u8, error: u8) -> Script {
        self.0
            .extend_from_slice(&[op::RESPOND, idx, flags, closer.len() as u8]);
        self.0.extend_from_slice(closer);
        self.0.extend_from_slice(&[to, error, 0]);
        self
    }

    /// A well-formed request (see [`op::REQUEST`]); `value` is written after the `vlen` byte.
    pub fn request(
        mut self,
        src: u8,
        cmd: u8,
        flags: u8,
        target: u8,
        vlen: u8,
        value: &[u8],
    ) -> Script {
        self.0
            .extend_from_slice(&[op::REQUEST, src, cmd, flags, target, vlen]);
        self.0.extend_from_slice(value);
        self
    }

    /// A reply with a raw `value` (flag 32 or 64 says how it is used; see [`op::RESPOND`]).
    pub fn respond_value(
        mut self,
        idx: u8,
        flags: u8,
        closer: &[u8],
        to: u8,
        value: &[u8],
    ) -> Script {
        self.0
            .extend_from_slice(&[op::RESPOND, idx, flags, closer.len() as u8]);
        self.0.extend_from_slice(closer);
        self.0.extend_from_slice(&[to, 0, value.len() as u8]);
        self.0.extend_from_slice(value);
        self
    }

    /// One of the [`ext`] ops with its argument bytes.
    pub fn ext(mut self, sub: u8, args: &[u8]) -> Script {
        let k = if sub == 0 { 8 } else { sub };
        self.0.push(op::EXT | k << 3);
        self.0.extend_from_slice(args);
        self
    }

    /// Advance the clock by `ms` milliseconds.
    pub fn advance_ms(mut self, ms: u16) -> Script {
        self.0.push(op::ADVANCE);
        self.0.extend_from_slice(&ms.to_le_bytes());
        self
    }

    /// Advance the clock by `s` seconds.
    pub fn advance_s(mut self, s: u16) -> Script {
        self.0.push(op::ADVANCE | 0x80);
        self.0.extend_from_slice(&s.to_le_bytes());
        self
    }

    /// Jump to the next deadline `times` times (1..=8).
    pub fn until_timeout(mut self, times: u8) -> Script {
        self.0.push(op::TO_TIMEOUT | ((times.clamp(1, 8) - 1) << 3));
        self
    }

    /// An application command (see [`op::COMMAND`]).
    pub fn command(mut self, which: u8, arg: u8, extra: &[u8]) -> Script {
        self.0.extend_from_slice(&[op::COMMAND, which, arg]);
        self.0.extend_from_slice(extra);
        self
    }

    /// Shut the node down.
    pub fn shutdown(mut self) -> Script {
        self.0.extend_from_slice(&[op::SHUTDOWN, 0xa5]);
        self
    }

    /// A stray socket report.
    pub fn socket_report(mut self, which: u8) -> Script {
        self.0.extend_from_slice(&[op::SOCKET, which]);
        self
    }

    /// The script's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

// ----- noise_responder ------------------------------------------------------------------------

/// The Noise responder (and the connect-layer decoders) fed arbitrary bytes: never panics,
/// never completes a handshake on input it did not get from the real initiator. The first byte
/// picks a mode: 0 = raw bytes as message 1; 1 = a genuine message 1 with the rest of the input
/// XORed over it (tampering); 2 = the input as message 2 for a genuine initiator; else the
/// bytes go through every connect-layer decoder.
pub fn noise_responder(data: &[u8]) {
    use hyperdht_proto::dht::KeyPair;
    use hyperdht_proto::noise::{Initiator, Responder};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let server = KeyPair::from_seed(&[2; 32]);
    match mode % 4 {
        0 => {
            let mut r = Responder::new(server, KeyPair::from_seed(&[4; 32]));
            assert!(r.read_message1(rest).is_err(), "junk completed step 1");
            assert!(r.write_message2(b"").is_err());
        }
        1 => {
            let mut i = Initiator::new(
                KeyPair::from_seed(&[1; 32]),
                server.public_key(),
                KeyPair::from_seed(&[3; 32]),
            );
            let mut m1 = i.write_message1(b"payload").unwrap_or_default();
            let mut changed = false;
            for (b, x) in m1.iter_mut().zip(rest) {
                *b ^= x;
                changed |= *x != 0;
            }
            let mut r = Responder::new(server, KeyPair::from_seed(&[4; 32]));
            let ok = r.read_message1(&m1).is_ok();
            assert_eq!(
                ok, !changed,
                "tampered message 1 accepted, or genuine one refused"
            );
        }
        2 => {
            let mut i = Initiator::new(
                KeyPair::from_seed(&[1; 32]),
                server.public_key(),
                KeyPair::from_seed(&[3; 32]),
            );
            let _ = i.write_message1(b"p");
            assert!(
                i.read_message2(rest).is_err(),
                "junk message 2 authenticated"
            );
        }
        _ => {
            use hyperdht_proto::wire::{
                holepunch::HolepunchPayload, hyperdht, noise::NoisePayload,
            };
            let _ = NoisePayload::decode(rest);
            let _ = HolepunchPayload::decode(rest);
            let _ = hyperdht::Handshake::decode(rest);
            let _ = hyperdht::Holepunch::decode(rest);
            let sp = hyperdht_proto::holepunch::SecurePayload::new([7; 32], [8; 32]);
            let _ = sp.open(rest);
        }
    }
}

// ----- protomux ------------------------------------------------------------------------------

/// One step of a [`protomux`] script; `side` is 0 for `a`, 1 for `b`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MuxStep {
    /// Junk into `a` as one message from its peer.
    Junk(Vec<u8>),
    /// `side` opens a channel (or answers the peer's waiting open of the same name).
    Open {
        side: usize,
        protocol: &'static str,
        id: Option<u8>,
        handshake: Vec<u8>,
    },
    /// `side` sends on its channel with this local id.
    Send {
        side: usize,
        channel: u32,
        kind: u64,
        payload: Vec<u8>,
    },
    /// `side` closes its channel with this local id.
    Close { side: usize, channel: u32 },
    /// `side` accepts the peer's opens of `protocol`/`id` (`None`: any id).
    Pair {
        side: usize,
        protocol: &'static str,
        id: Option<u8>,
    },
    /// `side` rejects the peer's first waiting open of `protocol`/`id`.
    Reject {
        side: usize,
        protocol: &'static str,
        id: Option<u8>,
    },
    /// Everything `side` has to send goes to the other side, in order.
    Deliver { side: usize },
}

/// The protocol names a [`protomux`] script opens.
pub const MUX_PROTOCOLS: [&str; 3] = ["alpha", "beta", "gamma"];

/// The steps of a [`protomux`] script (at most 256).
pub fn protomux_steps(data: &[u8]) -> Vec<MuxStep> {
    let id_of = |b: u8| -> Option<u8> {
        let id = b % 3;
        (id > 0).then_some(id)
    };
    let mut input = data;
    let byte = |input: &mut &[u8]| -> u8 {
        let Some((&b, rest)) = input.split_first() else {
            return 0;
        };
        *input = rest;
        b
    };
    let take = |input: &mut &[u8], n: usize| -> Vec<u8> {
        let n = n.min(input.len());
        let (head, rest) = input.split_at(n);
        *input = rest;
        head.to_vec()
    };
    let mut steps = Vec::new();
    for _ in 0..256 {
        if input.is_empty() {
            break;
        }
        let op = byte(&mut input);
        let side = (byte(&mut input) & 1) as usize;
        steps.push(match op % 7 {
            0 => {
                let len = byte(&mut input) as usize;
                MuxStep::Junk(take(&mut input, len))
            }
            1 => {
                let protocol = MUX_PROTOCOLS[byte(&mut input) as usize % 3];
                let id = id_of(byte(&mut input));
                let len = byte(&mut input) as usize;
                MuxStep::Open {
                    side,
                    protocol,
                    id,
                    handshake: take(&mut input, len),
                }
            }
            2 => {
                let channel = u32::from(byte(&mut input) % 8);
                let kind = u64::from(byte(&mut input));
                let len = byte(&mut input) as usize;
                MuxStep::Send {
                    side,
                    channel,
                    kind,
                    payload: take(&mut input, len),
                }
            }
            3 => MuxStep::Close {
                side,
                channel: u32::from(byte(&mut input) % 8),
            },
            4 | 5 => {
                let protocol = MUX_PROTOCOLS[byte(&mut input) as usize % 3];
                let id = id_of(byte(&mut input));
                if op % 7 == 4 {
                    MuxStep::Pair { side, protocol, id }
                } else {
                    MuxStep::Reject { side, protocol, id }
                }
            }
            _ => MuxStep::Deliver { side },
        });
    }
    steps
}

/// One side of a [`protomux`] script: our [`Protomux`](hyperdht_proto::protomux::Protomux)
/// ([`RustMux`]), or (in `tests/tests/interop_protomux.rs`) the real JS `protomux`.
pub trait MuxPeer {
    /// JS `mux.pair`.
    fn pair(&mut self, protocol: &str, id: Option<&[u8]>);
    /// Rejects the first waiting open of the name.
    fn reject(&mut self, protocol: &str, id: Option<&[u8]>);
    /// Opens (or answers); the local id, or `None` when refused.
    fn open(&mut self, protocol: &str, id: Option<&[u8]>, handshake: &[u8]) -> Option<u32>;
    /// Sends on an open channel (nothing if it is not open).
    fn send(&mut self, channel: u32, kind: u64, payload: &[u8]);
    /// Closes a channel (nothing if there is none).
    fn close(&mut self, channel: u32);
    /// One message from the peer; `Err` if the mux refused it (and failed).
    fn handle(&mut self, message: &[u8]) -> Result<(), String>;
    /// What the mux has to send, in order.
    fn transmit(&mut self) -> Vec<Vec<u8>>;
    /// The local ids of the channels open (paired) now.
    fn open_channels(&mut self) -> Vec<u32>;
    /// The messages received since the last call: channel, type, payload.
    fn take_received(&mut self) -> Vec<(u32, u64, Vec<u8>)>;
}

/// Our [`Protomux`](hyperdht_proto::protomux::Protomux) as a [`MuxPeer`].
#[derive(Default)]
pub struct RustMux {
    pub mux: hyperdht_proto::protomux::Protomux,
    /// Every local id [`MuxPeer::open`] gave.
    ids: std::collections::BTreeSet<u32>,
    received: Vec<(u32, u64, Vec<u8>)>,
}

impl RustMux {
    fn drain(&mut self) {
        use hyperdht_proto::protomux::MuxEvent;
        while let Some(e) = self.mux.poll_event() {
            if let MuxEvent::Message {
                channel,
                kind,
                payload,
            } = e
            {
                self.received.push((channel.0, kind, payload));
            }
        }
    }
}

impl MuxPeer for RustMux {
    fn pair(&mut self, protocol: &str, id: Option<&[u8]>) {
        self.mux.pair(protocol, id);
    }

    fn reject(&mut self, protocol: &str, id: Option<&[u8]>) {
        self.mux.reject(protocol, id);
        self.drain();
    }

    fn open(&mut self, protocol: &str, id: Option<&[u8]>, handshake: &[u8]) -> Option<u32> {
        let channel = self.mux.open(protocol, id, handshake).ok()?;
        self.ids.insert(channel.0);
        self.drain();
        Some(channel.0)
    }

    fn send(&mut self, channel: u32, kind: u64, payload: &[u8]) {
        let _ = self
            .mux
            .send(hyperdht_proto::protomux::ChannelId(channel), kind, payload);
    }

    fn close(&mut self, channel: u32) {
        let _ = self.mux.close(hyperdht_proto::protomux::ChannelId(channel));
        self.drain();
    }

    fn handle(&mut self, message: &[u8]) -> Result<(), String> {
        let result = self.mux.handle_message(message);
        self.drain();
        result.map_err(|e| format!("{e:?}"))
    }

    fn transmit(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.mux.poll_transmit()).collect()
    }

    fn open_channels(&mut self) -> Vec<u32> {
        let mux = &self.mux;
        self.ids
            .iter()
            .copied()
            .filter(|&i| mux.is_open(hyperdht_proto::protomux::ChannelId(i)))
            .collect()
    }

    fn take_received(&mut self) -> Vec<(u32, u64, Vec<u8>)> {
        self.drain();
        std::mem::take(&mut self.received)
    }
}

/// Delivers everything `from` has to send to `to`; how many messages went, or the first
/// refusal.
fn deliver(from: &mut dyn MuxPeer, to: &mut dyn MuxPeer) -> Result<usize, String> {
    let messages = from.transmit();
    for m in &messages {
        to.handle(m)
            .map_err(|e| format!("an honest mux refused its peer's message {m:?}: {e}"))?;
    }
    Ok(messages.len())
}

/// Delivers both ways until neither side has anything to send (a bounded number of rounds:
/// answers to answers end quickly).
fn settle(peers: &mut [&mut dyn MuxPeer; 2]) -> Result<(), String> {
    for _ in 0..64 {
        let [a, b] = peers;
        if deliver(*a, *b)? + deliver(*b, *a)? == 0 {
            return Ok(());
        }
    }
    Err("the muxes kept answering each other".into())
}

/// Runs a [`protomux`] script on two peers. Until junk went in, an honest side never refuses
/// the other's message, and once everything was delivered both sides agree on the channels:
/// each sends its local id on every channel it has open, and every such message arrives on a
/// channel open on the other side, which sent its own id back on the same pair. Returns the
/// pairs (`a`'s id, `b`'s id), or nothing after junk.
pub fn run_mux_script(
    data: &[u8],
    mut peers: [&mut dyn MuxPeer; 2],
) -> Result<Vec<(u32, u32)>, String> {
    let mut junked = false;
    let with_id = |id: Option<u8>| id.map(|i| [i]);
    for step in protomux_steps(data) {
        match step {
            MuxStep::Junk(junk) => {
                junked = true;
                let _ = peers[0].handle(&junk);
            }
            MuxStep::Open {
                side,
                protocol,
                id,
                handshake,
            } => {
                let id = with_id(id);
                peers[side].open(protocol, id.as_ref().map(|i| &i[..]), &handshake);
            }
            MuxStep::Send {
                side,
                channel,
                kind,
                payload,
            } => peers[side].send(channel, kind, &payload),
            MuxStep::Close { side, channel } => peers[side].close(channel),
            MuxStep::Pair { side, protocol, id } => {
                let id = with_id(id);
                peers[side].pair(protocol, id.as_ref().map(|i| &i[..]));
            }
            MuxStep::Reject { side, protocol, id } => {
                let id = with_id(id);
                peers[side].reject(protocol, id.as_ref().map(|i| &i[..]));
            }
            MuxStep::Deliver { side } => {
                let [a, b] = &mut peers;
                let (from, to) = if side == 0 { (a, b) } else { (b, a) };
                let delivered = deliver(*from, *to);
                if !junked {
                    delivered?;
                }
            }
        }
    }
    if junked {
        return Ok(Vec::new());
    }
    settle(&mut peers)?;
    let open = [peers[0].open_channels(), peers[1].open_channels()];
    for (side, peer) in peers.iter_mut().enumerate() {
        peer.take_received();
        for &channel in &open[side] {
            peer.send(channel, 0, &channel.to_le_bytes());
        }
    }
    settle(&mut peers)?;
    // What each side got: (its channel, the sender's channel).
    let got = |peer: &mut dyn MuxPeer| -> Result<Vec<(u32, u32)>, String> {
        let mut pairs = Vec::new();
        for (channel, kind, payload) in peer.take_received() {
            let sender = <[u8; 4]>::try_from(&payload[..])
                .ok()
                .filter(|_| kind == 0)
                .ok_or_else(|| format!("unexpected message {kind} {payload:?}"))?;
            pairs.push((channel, u32::from_le_bytes(sender)));
        }
        pairs.sort_unstable();
        Ok(pairs)
    };
    // Both as (a's channel, b's channel).
    let at_a = got(&mut *peers[0])?;
    let mut at_b: Vec<(u32, u32)> = got(&mut *peers[1])?
        .into_iter()
        .map(|(b, a)| (a, b))
        .collect();
    at_b.sort_unstable();
    let a_side: Vec<u32> = at_b.iter().map(|p| p.0).collect();
    let mut b_side: Vec<u32> = at_a.iter().map(|p| p.1).collect();
    b_side.sort_unstable();
    if at_a != at_b || a_side != open[0] || b_side != open[1] {
        return Err(format!(
            "the muxes disagree on the channels: a has {:?} open, b {:?}; a's messages \
             reached b on (a, b) {at_b:?}, b's reached a on {at_a:?}",
            open[0], open[1]
        ));
    }
    Ok(at_a)
}

/// Two [`Protomux`](hyperdht_proto::protomux::Protomux)es, `a` and `b`, driven by a script
/// ([`protomux_steps`]): each step is an op byte and its arguments (missing bytes read as 0):
///
/// - `0 len bytes`: junk into `a` as one message from its peer;
/// - `1 side proto id hs_len hs`: `side` (low bit: a/b) opens protocol `proto % 3`, id
///   `id % 3` (0 = none);
/// - `2 side channel kind len payload`: sends on channel `channel % 8`;
/// - `3 side channel`: closes a channel;
/// - `4 side proto id`: `pair` (`id` 0 = any id); `5 side proto id`: `reject`;
/// - `6 side`: delivers what `side` has to send to the other.
///
/// Never panics, and until junk went in, neither honest side ever sees an error from the
/// other (what one sends, the other accepts) and at the end, once everything was delivered,
/// both sides agree on which channels are open and how they pair ([`run_mux_script`]).
pub fn protomux(data: &[u8]) {
    let (mut a, mut b) = (RustMux::default(), RustMux::default());
    if let Err(e) = run_mux_script(data, [&mut a, &mut b]) {
        panic!("{e}");
    }
}

// ----- connection ----------------------------------------------------------------------------

/// The two hosts of a [`Net`].
const NET_HOSTS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
/// The DHT port both nodes of a [`Net`] bind.
const NET_PORT: u16 = 49737;
/// Datagrams remembered per node for replaying and forging in [`connection`].
const NET_RING: usize = 32;

/// A datagram on its way between the two nodes of a [`Net`].
#[derive(Clone, Debug)]
struct Wire {
    to: usize,
    socket: SocketId,
    from: SocketAddrV4,
    payload: Vec<u8>,
}

/// One node of a [`Net`] and the sockets it bound.
struct NetPeer {
    node: Node,
    host: Ipv4Addr,
    bound: Vec<(SocketId, SocketAddrV4)>,
    next_port: u16,
    events: Vec<Event>,
}

/// Two [`Node`]s on two hosts of an in-memory network without loss or latency: datagrams
/// wait in one FIFO queue (so a script can drop, reorder and corrupt them) and time moves
/// only when the queue is empty or the script says so.
struct Net {
    peers: [NetPeer; 2],
    now: Timestamp,
    queue: VecDeque<Wire>,
    /// The last datagrams delivered to each node (for replays and forgeries).
    delivered: [VecDeque<Wire>; 2],
}

impl Net {
    /// Node 0 is a bootstrapper at `10.0.0.1:49737`; node 1 a persistent node at
    /// `10.0.0.2:49737` bootstrapping from it.
    fn new(seed: u8) -> Net {
        let now = Timestamp::from_millis(1_000);
        let a = SocketAddrV4::new(NET_HOSTS[0], NET_PORT);
        let mut b = Config::bootstrapper(SocketAddrV4::new(NET_HOSTS[1], NET_PORT));
        b.bootstrap = vec![a];
        let configs = [Config::bootstrapper(a), b];
        let peers = configs.map(|c| NetPeer {
            host: c.host,
            node: Node::new(c, [seed; 32], now),
            bound: Vec::new(),
            next_port: 50000,
            events: Vec::new(),
        });
        let mut net = Net {
            peers,
            now,
            queue: VecDeque::new(),
            delivered: [VecDeque::new(), VecDeque::new()],
        };
        net.drain(0);
        net.drain(1);
        net
    }

    /// Where a datagram to `dst` goes.
    fn route(&self, dst: SocketAddr) -> Option<(usize, SocketId)> {
        let SocketAddr::V4(dst) = dst else {
            return None;
        };
        self.peers.iter().enumerate().find_map(|(i, p)| {
            p.bound
                .iter()
                .find(|(_, a)| *a == dst)
                .map(|(socket, _)| (i, *socket))
        })
    }

    /// Answers node `i`'s socket ops, queues its datagrams, keeps its events, until it has
    /// no output left (a socket close waits for the datagrams queued on its socket).
    fn drain(&mut self, i: usize) {
        for _ in 0..16 {
            if !self.drain_once(i) {
                return;
            }
        }
        panic!("node {i} keeps producing output");
    }

    /// One pass of [`Net::drain`]; whether anything came out.
    fn drain_once(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut any = false;
        loop {
            let p = &mut self.peers[i];
            let Some(op) = p.node.poll_socket_op() else {
                break;
            };
            any = true;
            match op {
                SocketOp::Bind { socket, addr } => {
                    let port = if addr.port() == 0 {
                        p.next_port += 1;
                        p.next_port
                    } else {
                        addr.port()
                    };
                    let a = SocketAddrV4::new(p.host, port);
                    p.bound.retain(|(s, _)| *s != socket);
                    p.bound.push((socket, a));
                    p.node.handle_socket_bound(now, socket, SocketAddr::V4(a));
                }
                SocketOp::Close { socket } => p.bound.retain(|(s, _)| *s != socket),
                _ => {}
            }
        }
        let mut n = 0;
        while let Some(t) = self.peers[i].node.poll_transmit() {
            n += 1;
            any = true;
            assert!(n <= MAX_TRANSMITS_PER_STEP, "runaway transmits");
            let from = self.peers[i]
                .bound
                .iter()
                .find(|(s, _)| *s == t.socket)
                .map(|(_, a)| *a);
            if let (Some(from), Some((to, socket))) = (from, self.route(t.dst)) {
                self.queue.push_back(Wire {
                    to,
                    socket,
                    from,
                    payload: t.payload,
                });
            }
        }
        let p = &mut self.peers[i];
        while let Some(e) = p.node.poll_event() {
            if p.events.len() < MAX_EVENTS_KEPT {
                p.events.push(e);
            }
        }
        any
    }

    /// Delivers one datagram to its node (also when it is not from the queue).
    fn deliver(&mut self, w: Wire) {
        let ring = &mut self.delivered[w.to];
        if ring.len() == NET_RING {
            ring.pop_front();
        }
        ring.push_back(w.clone());
        self.peers[w.to].node.handle_datagram(
            self.now,
            w.socket,
            SocketAddr::V4(w.from),
            &w.payload,
        );
        self.drain(w.to);
    }

    /// The earliest deadline of either node.
    fn next_deadline(&self) -> Option<Timestamp> {
        self.peers
            .iter()
            .filter_map(|p| p.node.poll_timeout())
            .min()
    }

    /// Moves the clock to `t` (if later) and runs every timer due by then, in order.
    fn run_timers_until(&mut self, t: Timestamp) {
        // A timer that does not move past `now` would spin here: the node asserts its own
        // deadlines move forward below, so this terminates.
        while let Some(next) = self.next_deadline().filter(|n| *n <= t) {
            self.now = self.now.max(next);
            for i in 0..2 {
                if self.peers[i]
                    .node
                    .poll_timeout()
                    .is_some_and(|d| d <= self.now)
                {
                    self.peers[i].node.handle_timeout(self.now);
                    self.drain(i);
                    if let Some(d) = self.peers[i].node.poll_timeout() {
                        assert!(d > self.now, "poll_timeout {d:?} not after {:?}", self.now);
                    }
                }
            }
        }
        self.now = self.now.max(t);
    }

    /// One step of the network: the next datagram, else the next timer. `false` once
    /// nothing is left before `limit`.
    fn step(&mut self, limit: Timestamp) -> bool {
        if let Some(w) = self.queue.pop_front() {
            self.deliver(w);
            return true;
        }
        match self.next_deadline() {
            Some(t) if t <= limit => {
                self.run_timers_until(t);
                true
            }
            _ => false,
        }
    }

    /// Runs until `done` holds or `limit` passes (or `max_steps` steps ran).
    fn run_until(
        &mut self,
        limit: Timestamp,
        max_steps: usize,
        mut done: impl FnMut(&Net) -> bool,
    ) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            if !self.step(limit) {
                break;
            }
        }
        done(self)
    }
}

/// The connection a [`ConnPair`] set up, seen from one side.
#[derive(Clone, Copy, Debug)]
struct ConnEnd {
    conn: hyperdht_proto::ConnId,
    socket: SocketId,
    remote: SocketAddrV4,
    local_udx_id: u32,
}

/// Finds the first `Connected` event of node `i`.
fn connected_end(net: &Net, i: usize) -> Option<ConnEnd> {
    let peer = &net.peers[i];
    peer.events.iter().find_map(|e| match e {
        Event::Connected {
            conn,
            socket,
            remote: SocketAddr::V4(remote),
            ..
        } => Some(ConnEnd {
            conn: *conn,
            socket: *socket,
            remote: *remote,
            local_udx_id: peer.node.conn_info(*conn)?.stream?.local_id,
        }),
        _ => None,
    })
}

/// The key pair node 1 listens on in [`connection`], and the one node 0 connects with.
fn conn_keys() -> (hyperdht_proto::dht::KeyPair, hyperdht_proto::dht::KeyPair) {
    use hyperdht_proto::dht::KeyPair;
    (
        KeyPair::from_seed(&[0x51; 32]),
        KeyPair::from_seed(&[0xc1; 32]),
    )
}

/// Two nodes with one established connection: node 1 listens, node 0 connects.
struct ConnPair {
    net: Net,
    /// `[client end on node 0, server end on node 1]`.
    ends: [ConnEnd; 2],
}

impl ConnPair {
    /// Sets up the pair from a fixed seed; `None` if the connection did not open (a bug: the
    /// stable test `connection_seeds_reach_their_states` needs it to).
    fn new(seed: u8) -> Option<ConnPair> {
        let mut net = Net::new(seed);
        let limit = net.now + Duration::from_secs(30);
        net.run_until(limit, 100_000, |n| n.peers[1].node.is_bootstrapped());
        let (server, client) = conn_keys();
        let now = net.now;
        net.peers[1]
            .node
            .listen(now, &server, hyperdht_proto::ServerConfig::default())
            .ok()?;
        net.drain(1);
        let listening = |n: &Net| {
            n.peers[1]
                .events
                .iter()
                .any(|e| matches!(e, Event::ServerListening { .. }))
        };
        let limit = net.now + Duration::from_secs(30);
        if !net.run_until(limit, 100_000, listening) {
            return None;
        }
        let now = net.now;
        net.peers[0]
            .node
            .connect(now, &server.public_key(), &client);
        net.drain(0);
        let limit = net.now + Duration::from_secs(30);
        net.run_until(limit, 100_000, |n| {
            connected_end(n, 0).is_some() && connected_end(n, 1).is_some()
        });
        let ends = [connected_end(&net, 0)?, connected_end(&net, 1)?];
        // Let the secret-stream headers cross.
        let limit = net.now + Duration::from_millis(500);
        net.run_until(limit, 10_000, |n| n.queue.is_empty());
        Some(ConnPair { net, ends })
    }
}

/// Op codes of a [`connection`] script (the op byte's low 7 bits modulo 12; `side` is the low bit of its
/// byte: 0 the client end on node 0, 1 the server end on node 1).
pub mod conn_op {
    /// `[side] [len] [len bytes]`: `conn_write`. With bit 7 of the op byte, `len` is 2 bytes
    /// LE and the data a pattern (so a short input writes a lot).
    pub const WRITE: u8 = 0;
    /// `[side] [len] [len bytes]`: `conn_write_message` (bit 7 as for [`WRITE`]).
    pub const WRITE_MESSAGE: u8 = 1;
    /// `[side] [n]`: `conn_read` into a buffer of `n + 1` bytes.
    pub const READ: u8 = 2;
    /// `[side]`: `conn_read_message`.
    pub const READ_MESSAGE: u8 = 3;
    /// `[n]`: delivers up to `n + 1` queued datagrams, in order.
    pub const DELIVER: u8 = 4;
    /// `[idx]`: drops queued datagram `idx` (modulo the queue length).
    pub const DROP: u8 = 5;
    /// `[idx] [flag]`: moves queued datagram `idx` to the back (flag bit 0: a copy of it).
    pub const REORDER: u8 = 6;
    /// `[idx] [pos] [xor]`: XORs one byte of queued datagram `idx` (a fault).
    pub const CORRUPT: u8 = 7;
    /// `[side] [kind] [a] [b] [len] [len bytes]`: a datagram into `side`'s connection socket
    /// from its peer's address (a fault): kind 0 the bytes; 1 a replay of a recent datagram
    /// to that node; 2 a UDX packet for the connection's stream id with flags `a`, seq and
    /// ack moved by `b` from a recent packet's, and the bytes as payload.
    pub const INJECT: u8 = 8;
    /// `[lo] [hi]`: advances the clock by that many ms with the queue held, running timers.
    pub const ADVANCE: u8 = 9;
    /// `[side] [which]`: 0 `conn_finish`, 1 `conn_send_keep_alive`, 2 `conn_reset` (a
    /// fault), 3 `conn_remove` (a fault); else nothing.
    pub const CONTROL: u8 = 10;
    /// Delivers everything queued and runs timers for up to one second.
    pub const SETTLE: u8 = 11;
}

/// One end's application view in a [`connection`] run.
#[derive(Default)]
struct EndLog {
    written: Vec<u8>,
    read: Vec<u8>,
}

/// A [`connection`] run in progress.
struct ConnRun {
    pair: ConnPair,
    logs: [EndLog; 2],
    /// Something happened after which data may be lost (corruption, injection, reset).
    faulted: bool,
}

impl ConnRun {
    fn node(&mut self, side: usize) -> &mut Node {
        &mut self.pair.net.peers[side].node
    }

    fn write(&mut self, side: usize, data: &[u8], message: bool) {
        let (now, conn) = (self.pair.net.now, self.pair.ends[side].conn);
        let ok = if message {
            self.node(side).conn(conn).write_message(now, data).is_ok()
        } else {
            self.node(side).conn(conn).write(now, data).is_ok()
        };
        if ok {
            self.logs[side].written.extend_from_slice(data);
        }
        self.pair.net.drain(side);
    }

    /// Reads once; whether anything came.
    fn read(&mut self, side: usize, n: usize, message: bool) -> bool {
        let conn = self.pair.ends[side].conn;
        let got = if message {
            self.node(side).conn(conn).read_message().ok().flatten()
        } else {
            let mut buf = vec![0; n];
            match self.node(side).conn(conn).read(&mut buf) {
                Ok(k) => {
                    buf.truncate(k);
                    Some(buf)
                }
                Err(_) => None,
            }
        };
        self.pair.net.drain(side);
        match got {
            Some(b) if !b.is_empty() => {
                self.logs[side].read.extend_from_slice(&b);
                true
            }
            _ => false,
        }
    }

    fn inject(&mut self, side: usize, inp: &mut Input<'_>) {
        use hyperdht_proto::stream::packet::{self, Flags, Header};
        let kind = inp.u8() % 3;
        let (a, b) = (inp.u8(), inp.u8());
        let len = inp.u8() as usize;
        let bytes = inp.bytes(len).to_vec();
        let end = self.pair.ends[side];
        let recent = self.pair.net.delivered[side]
            .iter()
            .rev()
            .find(|w| w.socket == end.socket)
            .cloned();
        let payload = match kind {
            0 => bytes,
            1 => match &self.pair.net.delivered[side].len() {
                0 => return,
                n => self.pair.net.delivered[side][b as usize % n]
                    .payload
                    .clone(),
            },
            _ => {
                let base = recent
                    .as_ref()
                    .and_then(|w| Header::decode(&w.payload).ok())
                    .unwrap_or_default();
                let delta = |v: u32| v.wrapping_add(i32::from(b as i8) as u32);
                let header = Header {
                    flags: Flags(a & 0x3f),
                    data_offset: 0,
                    id: end.local_udx_id,
                    rwnd: base.rwnd,
                    seq: delta(base.seq),
                    ack: delta(base.ack),
                };
                let mut out = Vec::new();
                packet::encode(&mut out, &header, 0, &bytes);
                out
            }
        };
        self.faulted = true;
        let net = &mut self.pair.net;
        let now = net.now;
        net.peers[side]
            .node
            .handle_datagram(now, end.socket, SocketAddr::V4(end.remote), &payload);
        net.drain(side);
    }

    fn settle(&mut self, d: Duration, max_steps: usize) {
        let net = &mut self.pair.net;
        let limit = net.now + d;
        net.run_until(limit, max_steps, |n| n.queue.is_empty());
        // Time passes only with the queue empty: datagrams arrive "at once".
        for _ in 0..max_steps {
            if !net.step(limit) {
                break;
            }
        }
    }

    fn step(&mut self, inp: &mut Input<'_>) {
        let tag = inp.u8();
        let big = tag & 0x80 != 0;
        let op = (tag & 0x7f) % 12;
        match op {
            conn_op::WRITE | conn_op::WRITE_MESSAGE => {
                let side = (inp.u8() & 1) as usize;
                let data = if big {
                    let n = inp.u16() as usize;
                    let k = inp.u8();
                    (0..n).map(|i| (i as u8) ^ k).collect()
                } else {
                    let n = inp.u8() as usize;
                    inp.bytes(n).to_vec()
                };
                self.write(side, &data, op == conn_op::WRITE_MESSAGE);
            }
            conn_op::READ => {
                let side = (inp.u8() & 1) as usize;
                let n = inp.u8() as usize + 1;
                self.read(side, if big { n * 256 } else { n }, false);
            }
            conn_op::READ_MESSAGE => {
                let side = (inp.u8() & 1) as usize;
                self.read(side, 0, true);
            }
            conn_op::DELIVER => {
                for _ in 0..=inp.u8() {
                    let Some(w) = self.pair.net.queue.pop_front() else {
                        break;
                    };
                    self.pair.net.deliver(w);
                }
            }
            conn_op::DROP => {
                let idx = inp.u8() as usize;
                let q = &mut self.pair.net.queue;
                if !q.is_empty() {
                    q.remove(idx % q.len());
                }
            }
            conn_op::REORDER => {
                let (idx, flag) = (inp.u8() as usize, inp.u8());
                let q = &mut self.pair.net.queue;
                if !q.is_empty() {
                    let i = idx % q.len();
                    let w = if flag & 1 != 0 {
                        Some(q[i].clone())
                    } else {
                        q.remove(i)
                    };
                    q.extend(w);
                }
            }
            conn_op::CORRUPT => {
                let (idx, pos, xor) = (inp.u8() as usize, inp.u8() as usize, inp.u8());
                let q = &mut self.pair.net.queue;
                if !q.is_empty() {
                    let i = idx % q.len();
                    let p = &mut q[i].payload;
                    if !p.is_empty() {
                        let k = pos % p.len();
                        p[k] ^= xor.max(1);
                        self.faulted = true;
                    }
                }
            }
            conn_op::INJECT => {
                let side = (inp.u8() & 1) as usize;
                self.inject(side, inp);
            }
            conn_op::ADVANCE => {
                let ms = u64::from(inp.u16());
                let t = self.pair.net.now + Duration::from_millis(ms);
                self.pair.net.run_timers_until(t);
            }
            conn_op::CONTROL => {
                let side = (inp.u8() & 1) as usize;
                let (now, conn) = (self.pair.net.now, self.pair.ends[side].conn);
                match inp.u8() % 8 {
                    0 => {
                        let _ = self.node(side).conn(conn).finish(now);
                    }
                    1 => self.node(side).conn(conn).send_keep_alive(now),
                    2 => {
                        self.faulted = true;
                        self.node(side).conn(conn).reset(now);
                    }
                    3 => {
                        self.faulted = true;
                        self.node(side).conn(conn).remove();
                    }
                    _ => {}
                }
                self.pair.net.drain(side);
            }
            _ => self.settle(Duration::from_secs(1), 4096),
        }
    }

    /// What must hold after every step.
    fn check(&self) {
        for side in 0..2 {
            let log = &self.logs[side];
            let peer = &self.logs[1 - side];
            assert!(
                peer.written.starts_with(&log.read),
                "side {side} read {} bytes that its peer did not write in that order                  (peer wrote {})",
                log.read.len(),
                peer.written.len()
            );
            let node = &self.pair.net.peers[side].node;
            if let Some(info) = node
                .conn_info(self.pair.ends[side].conn)
                .and_then(|i| i.stream)
            {
                use hyperdht_proto::stream::mtu::{MTU_BASE, MTU_MAX};
                assert!((MTU_BASE..=MTU_MAX).contains(&info.mtu), "mtu {}", info.mtu);
                if let Some(srtt) = info.srtt {
                    assert!(srtt <= Duration::from_secs(30), "srtt {srtt:?}");
                }
            }
            assert!(node.connection_count() <= 2, "connections pile up");
        }
        assert!(self.pair.net.queue.len() <= 1 << 16, "queue");
    }

    /// Whether the connection of `side` closed.
    fn closed(&self, side: usize) -> bool {
        let conn = self.pair.ends[side].conn;
        self.pair.net.peers[side]
            .events
            .iter()
            .any(|e| matches!(e, Event::ConnClosed { conn: c, .. } if *c == conn))
    }

    /// The end of a run: everything queued is delivered and read; on a run without faults
    /// whose connection stayed open, each side read exactly what the other wrote. Then each
    /// node still answers a PING.
    fn finish(&mut self) {
        for _ in 0..64 {
            self.settle(Duration::from_secs(5), 20_000);
            let mut progress = false;
            for side in 0..2 {
                while self.read(side, 1 << 16, false) {
                    progress = true;
                }
            }
            self.check();
            if !progress && self.pair.net.queue.is_empty() {
                break;
            }
        }
        if !self.faulted && !self.closed(0) && !self.closed(1) {
            for side in 0..2 {
                assert_eq!(
                    self.logs[side].read.len(),
                    self.logs[1 - side].written.len(),
                    "side {side} did not get everything its peer wrote"
                );
            }
        }
        for (side, host) in NET_HOSTS.iter().enumerate() {
            let from = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 4000);
            let to = SocketAddrV4::new(*host, NET_PORT);
            let bytes = Request::ping(0x7777, to).to_bytes();
            let node = &mut self.pair.net.peers[side].node;
            let now = self.pair.net.now;
            node.handle_datagram(now, SocketId::SERVER, SocketAddr::V4(from), &bytes);
            let answered = std::iter::from_fn(|| node.poll_transmit()).any(|t| {
                t.dst == SocketAddr::V4(from)
                    && matches!(Message::decode(&t.payload), Ok(Message::Response(r)) if r.tid == 0x7777)
            });
            assert!(answered, "node {side} stopped answering pings");
        }
    }
}

/// One established connection between two in-memory nodes (set up from a fixed seed, through
/// the real announce, FIND_PEER, relayed Noise handshake and UDX + secret-stream open), driven
/// by a script of writes, reads, datagram drops, reorders, corruptions and injections, time
/// steps and closes ([`conn_op`]; the first byte is the setup seed, then ops until the input
/// ends, at most [`MAX_STEPS`]). After every op: no panic, neither side ever read bytes its
/// peer did not write in that order (secret-stream authenticates everything), MTU and RTT
/// stay in their ranges, no more than two connections per node. At the end, on a run without
/// faults whose connection stayed open, each side read exactly what the other wrote, and both
/// nodes still answer pings.
pub fn connection(data: &[u8]) {
    run_connection(data);
}

/// What a [`connection`] run did, per side (0 the client, 1 the server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnOutcome {
    /// Bytes each side read.
    pub read: [usize; 2],
    /// Whether each side's connection closed.
    pub closed: [bool; 2],
}

/// Runs a [`connection`] script and reports what happened.
pub fn run_connection(data: &[u8]) -> ConnOutcome {
    let mut inp = Input { data, pos: 0 };
    let seed = inp.u8();
    let pair = ConnPair::new(seed).expect("the two nodes connect");
    let mut run = ConnRun {
        pair,
        logs: Default::default(),
        faulted: false,
    };
    let mut steps = 0;
    while !inp.done() && steps < MAX_STEPS {
        steps += 1;
        run.step(&mut inp);
        run.check();
    }
    run.finish();
    ConnOutcome {
        read: [run.logs[0].read.len(), run.logs[1].read.len()],
        closed: [run.closed(0), run.closed(1)],
    }
}

/// Writes [`connection`] inputs (used to seed the stored corpus).
#[derive(Clone, Debug)]
pub struct ConnScript(Vec<u8>);

impl ConnScript {
    /// A script with setup seed `seed`.
    pub fn new(seed: u8) -> ConnScript {
        ConnScript(vec![seed])
    }

    /// An op byte and its argument bytes, as written.
    pub fn op(mut self, op: u8, args: &[u8]) -> ConnScript {
        self.0.push(op);
        self.0.extend_from_slice(args);
        self
    }

    /// A write (`message`: one message) of `data` on `side`.
    pub fn write(self, side: u8, data: &[u8], message: bool) -> ConnScript {
        let op = if message {
            conn_op::WRITE_MESSAGE
        } else {
            conn_op::WRITE
        };
        let len = u8::try_from(data.len()).expect("short write");
        self.op(op, &[side, len]).op_bytes(data)
    }

    /// A write of `n` pattern bytes on `side`.
    pub fn write_big(self, side: u8, n: u16, pattern: u8) -> ConnScript {
        let [lo, hi] = n.to_le_bytes();
        self.op(conn_op::WRITE | 0x80, &[side, lo, hi, pattern])
    }

    fn op_bytes(mut self, data: &[u8]) -> ConnScript {
        self.0.extend_from_slice(data);
        self
    }

    /// The script's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}
