//! Replayed, tampered and refused handshakes against a Rust server fail cleanly: a tampered
//! message 1 gets no answer and leaves no state; a replay inside the dedupe window gets the
//! same answer and no second connection; a replay after it opens a connection attempt that
//! never becomes `Connected` (the replayer holds no keys) and is torn down; a flood past the
//! server's handshake cap gets no reply until slots free; a server holds at most
//! `Config::max_connections_per_server` live connections, and a closed one frees its place; a
//! client resending its handshake while the server's puncher socket opens queues a bounded
//! number of replies.

use std::net::{SocketAddr, SocketAddrV4};

use core::time::Duration;

use hyperdht_proto::crypto::hash;
use hyperdht_proto::dht::keys::command;
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::noise::Initiator;
use hyperdht_proto::wire::hyperdht::{mode, Handshake};
use hyperdht_proto::wire::noise::{NoisePayload, UdxInfo};
use hyperdht_proto::wire::rpc::{Message, Request};
use hyperdht_proto::{
    Config, ConnCloseReason, ConnId, Event, Node, ServerConfig, SocketId, Timestamp,
};
use hyperdht_tests::bench_util::pump_in_process;

const NODE: &str = "127.0.0.9:49737";
const ATTACKER: &str = "127.0.0.9:40000";

struct Harness {
    node: Node,
    now: Timestamp,
    events: Vec<Event>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_config(Config::bootstrapper(NODE.parse().unwrap()))
    }

    fn with_config(config: Config) -> Harness {
        let now = Timestamp::from_millis(1000);
        let mut h = Harness {
            node: Node::new(config, [3; 32], now),
            now,
            events: Vec::new(),
        };
        h.pump();
        h
    }

    /// Binds whatever the node asks for, drops its transmits (returned), keeps its events.
    fn pump(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let events = &mut self.events;
        pump_in_process(
            &mut self.node,
            self.now,
            |t| out.push((t.dst, t.payload)),
            |e| events.push(e),
        );
        out
    }

    fn advance(&mut self, d: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
        let end = self.now + d;
        let mut out = Vec::new();
        while let Some(t) = self.node.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            self.node.handle_timeout(self.now);
            out.extend(self.pump());
        }
        self.now = end;
        self.node.handle_timeout(end);
        out.extend(self.pump());
        out
    }

    fn feed(&mut self, tid: u16, target: [u8; 32], noise: Vec<u8>) -> Vec<(SocketAddr, Vec<u8>)> {
        self.feed_as(tid, target, noise, None)
    }

    /// Feeds message 1 as a DHT node relaying it for a client at `client` (`FROM_RELAY`), or
    /// straight from the client (`FROM_CLIENT`) when `client` is `None`.
    fn feed_as(
        &mut self,
        tid: u16,
        target: [u8; 32],
        noise: Vec<u8>,
        client: Option<SocketAddrV4>,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let value = Handshake {
            mode: if client.is_some() {
                mode::FROM_RELAY
            } else {
                mode::FROM_CLIENT
            },
            noise,
            peer_address: client,
            relay_address: None,
        }
        .to_bytes();
        let bytes = peer_handshake(tid, target, &value);
        self.node.handle_datagram(
            self.now,
            SocketId::SERVER,
            ATTACKER.parse().unwrap(),
            &bytes,
        );
        self.pump()
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }

    /// Forgets every connection the node closed (as an application does); counts those
    /// whose reason `pred` accepts.
    fn remove_closed(&mut self, pred: impl Fn(ConnCloseReason) -> bool) -> usize {
        let closed: Vec<(ConnId, ConnCloseReason)> = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ConnClosed { conn, reason } => Some((*conn, *reason)),
                _ => None,
            })
            .collect();
        for &(conn, _) in &closed {
            self.node.conn(conn).remove();
        }
        closed.iter().filter(|(_, r)| pred(*r)).count()
    }
}

/// The REPLY's Noise message 2, if `out` holds one.
fn reply_noise(out: &[(SocketAddr, Vec<u8>)]) -> Option<Vec<u8>> {
    out.iter()
        .find_map(|(_, b)| match Message::decode(b).ok()? {
            Message::Response(r) => {
                let hs = Handshake::decode(r.value?).ok()?;
                (hs.mode == mode::REPLY).then_some(hs.noise)
            }
            _ => None,
        })
}

fn message1(client: &KeyPair, server: &KeyPair) -> (Initiator, Vec<u8>) {
    let mut i = Initiator::new(
        client.clone(),
        server.public_key(),
        KeyPair::from_seed(&[0x33; 32]),
    );
    let payload = NoisePayload {
        version: 1,
        udx: Some(UdxInfo {
            version: 1,
            reusable_socket: false,
            id: 77,
            seq: 0,
        }),
        secret_stream: Some(1),
        ..NoisePayload::default()
    };
    let m1 = i.write_message1(&payload.to_bytes()).unwrap();
    (i, m1)
}

#[test]
fn replayed_and_tampered_handshakes_fail_cleanly() {
    let mut h = Harness::new();
    h.advance(Duration::from_secs(2));
    let server = KeyPair::from_seed(&[0x5e; 32]);
    h.node
        .listen(h.now, &server, ServerConfig::default())
        .unwrap();
    h.advance(Duration::from_secs(2));
    let target = hash(&server.public_key());
    let client = KeyPair::from_seed(&[0xc1; 32]);
    let (initiator, m1) = message1(&client, &server);
    let incoming = |e: &Event| matches!(e, Event::Incoming { .. });
    let connected = |e: &Event| matches!(e, Event::Connected { .. });

    // Tampered: no reply, no connection.
    let mut bad = m1.clone();
    bad[60] ^= 1;
    assert!(
        reply_noise(&h.feed(1, target, bad)).is_none(),
        "tampered message 1 answered"
    );
    assert_eq!(h.count(incoming), 0);

    // Genuine: the reply authenticates for the real initiator.
    let m2 = reply_noise(&h.feed(2, target, m1.clone())).expect("genuine handshake answered");
    initiator.read_message2(&m2).expect("reply authenticates");
    assert_eq!(h.count(incoming), 1);

    // Replay inside the dedupe window: the same reply, no second connection.
    let again =
        reply_noise(&h.feed(3, target, m1.clone())).expect("replay answered from the dedupe entry");
    assert_eq!(again, m2);
    assert_eq!(h.count(incoming), 1);

    // Replay after the window: a fresh reply the replayer cannot use; the attempt never
    // becomes Connected (no secret-stream header ever comes back) and is torn down.
    h.advance(Duration::from_secs(11));
    let late = reply_noise(&h.feed(4, target, m1)).expect("late replay answered");
    assert_ne!(late, m2, "a new responder ephemeral");
    assert_eq!(h.count(incoming), 2);
    h.advance(Duration::from_secs(60));
    assert_eq!(
        h.count(connected),
        0,
        "no connection without the client's keys: {:?}",
        h.events
    );
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::ConnClosed { .. })),
        "the orphaned attempts were closed: {:?}",
        h.events
    );
}

/// A flood of distinct handshakes is capped at `max_handshakes` held at once: the ones past the
/// cap get no reply (nothing is stored for them), and slots free again once the dedupe window
/// of the finished ones ends.
#[test]
fn handshakes_past_the_slot_cap_get_no_reply_until_slots_free() {
    let mut h = Harness::new();
    h.advance(Duration::from_secs(2));
    let server = KeyPair::from_seed(&[0x5e; 32]);
    let mut config = ServerConfig::default();
    assert_eq!(config.max_handshakes, 1024, "the default cap");
    config.max_handshakes = 3;
    h.node.listen(h.now, &server, config).unwrap();
    h.advance(Duration::from_secs(2));
    let target = hash(&server.public_key());
    let clients: Vec<KeyPair> = (0..5u8)
        .map(|i| KeyPair::from_seed(&[0x40 + i; 32]))
        .collect();

    for (i, client) in clients.iter().take(3).enumerate() {
        let (initiator, m1) = message1(client, &server);
        let m2 = reply_noise(&h.feed(10 + i as u16, target, m1)).expect("inside the cap");
        initiator.read_message2(&m2).expect("reply authenticates");
    }
    let (_, m1) = message1(&clients[3], &server);
    assert!(
        reply_noise(&h.feed(20, target, m1.clone())).is_none(),
        "the fourth handshake is past the cap of three"
    );
    let incoming = |e: &Event| matches!(e, Event::Incoming { .. });
    assert_eq!(h.count(incoming), 3);

    // The three finished handshakes leave their slots after the 10 s dedupe window.
    h.advance(Duration::from_secs(11));
    let (initiator, m1) = message1(&clients[4], &server);
    let m2 = reply_noise(&h.feed(21, target, m1)).expect("a slot is free again");
    initiator.read_message2(&m2).expect("reply authenticates");
    assert_eq!(h.count(incoming), 4);

    // None of them can open a path (the flood answers nothing after message 2): once their
    // slots clear, their connections close, so a flood cannot pile connections up.
    h.advance(Duration::from_secs(30));
    let closed = h.remove_closed(|_| true);
    assert_eq!(
        closed, 4,
        "every accepted handshake's connection closed: {:?}",
        h.events
    );
    assert_eq!(h.node.connection_count(), 0, "the node holds no connection");
}

/// Relayed handshakes whose client never opens a path (it holds no keys and never punches)
/// leave no connection behind: once a handshake gives up and its slot clears, its connection
/// closes (`NoPath`), so handshakes cannot pile up connections.
#[test]
fn relayed_handshakes_that_never_open_a_path_close_their_connections() {
    let mut h = Harness::new();
    h.advance(Duration::from_secs(2));
    let server = KeyPair::from_seed(&[0x5e; 32]);
    h.node
        .listen(h.now, &server, ServerConfig::default())
        .unwrap();
    h.advance(Duration::from_secs(2));
    let target = hash(&server.public_key());
    for i in 0..3u8 {
        let client = KeyPair::from_seed(&[0x50 + i; 32]);
        let (_, m1) = message1(&client, &server);
        let away = SocketAddrV4::new([10, 9, 9, 9].into(), 5000 + u16::from(i));
        h.feed_as(30 + u16::from(i), target, m1, Some(away));
    }
    let incoming = |e: &Event| matches!(e, Event::Incoming { .. });
    assert_eq!(h.count(incoming), 3);
    h.advance(Duration::from_secs(30));
    let no_path = h.remove_closed(|r| r == ConnCloseReason::NoPath);
    assert_eq!(no_path, 3, "each closed without a path: {:?}", h.events);
    assert_eq!(h.node.connection_count(), 0, "the node holds no connection");
}

/// A server holds at most `max_connections_per_server` live connections: past it, a new
/// handshake gets no reply and is counted, a retransmit of a held one is still answered, and a
/// connection that closes frees its place for the next client.
#[test]
fn connections_past_the_per_server_cap_are_dropped_until_one_closes() {
    let mut config = Config::bootstrapper(NODE.parse().unwrap());
    assert_eq!(
        config.max_connections_per_server, 1024,
        "the default cap (hyperdht keeps none)"
    );
    config.max_connections_per_server = 3;
    let mut h = Harness::with_config(config);
    h.advance(Duration::from_secs(2));
    let server = KeyPair::from_seed(&[0x5e; 32]);
    let id = h
        .node
        .listen(h.now, &server, ServerConfig::default())
        .unwrap();
    h.advance(Duration::from_secs(2));
    let target = hash(&server.public_key());
    let clients: Vec<KeyPair> = (0..6u8)
        .map(|i| KeyPair::from_seed(&[0x60 + i; 32]))
        .collect();
    let mut held = Vec::new();
    for (i, client) in clients.iter().take(5).enumerate() {
        let (_, m1) = message1(client, &server);
        let answered = reply_noise(&h.feed(100 + i as u16, target, m1.clone())).is_some();
        assert_eq!(answered, i < 3, "handshake {i} against a cap of three");
        if i < 3 {
            held.push(m1);
        }
    }
    let incoming: Vec<ConnId> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Incoming { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(incoming.len(), 3, "exactly the cap's connections opened");
    assert_eq!(h.node.server_conn_count(id), 3);
    assert_eq!(
        h.node.stats().dropped.connection_cap,
        2,
        "both extra ones counted"
    );

    // A retransmit of a held handshake opens nothing new and is still answered.
    assert!(reply_noise(&h.feed(110, target, held[0].clone())).is_some());
    assert_eq!(h.node.stats().dropped.connection_cap, 2);

    // One closes: its place is free (the connection itself is gone once read to the end).
    h.node.conn(incoming[1]).reset(h.now);
    h.pump();
    assert_eq!(
        h.node.server_conn_count(id),
        2,
        "a closed connection frees its place"
    );
    let (initiator, m1) = message1(&clients[5], &server);
    let m2 = reply_noise(&h.feed(120, target, m1)).expect("the freed place is taken");
    initiator.read_message2(&m2).expect("reply authenticates");
    assert_eq!(h.node.server_conn_count(id), 3);
    assert_eq!(h.node.stats().dropped.connection_cap, 2);
    let (_, m1) = message1(&clients[3], &server);
    assert!(
        reply_noise(&h.feed(121, target, m1)).is_none(),
        "full again"
    );
    assert_eq!(h.node.stats().dropped.connection_cap, 3);
}

/// A relayed handshake to a firewalled server is answered from the server's puncher socket,
/// so its replies wait until the driver bound that socket. A client resending its handshake
/// meanwhile keeps at most `MAX_PENDING_REPLIES` of them (the newest; the others are counted),
/// and all of those go out once the socket is bound.
#[test]
fn replies_waiting_for_the_puncher_socket_stay_bounded() {
    use hyperdht_proto::config::MAX_PENDING_REPLIES;
    use hyperdht_proto::wire::rpc::Message;
    use hyperdht_proto::SocketOp;

    let mut config = Config::local(Vec::new());
    config.host = *NODE.parse::<SocketAddrV4>().unwrap().ip();
    config.port = 49737;
    let now = Timestamp::from_millis(1000);
    let mut node = Node::new(config, [4; 32], now);
    // Binds the two DHT sockets; any other bind is held back (the puncher's socket).
    let mut held_binds = Vec::new();
    let drain = |node: &mut Node, held_binds: &mut Vec<(SocketId, SocketAddrV4)>| {
        let mut out = Vec::new();
        loop {
            let mut any = false;
            while let Some(op) = node.poll_socket_op() {
                any = true;
                if let SocketOp::Bind { socket, addr } = op {
                    if socket == SocketId::SERVER || socket == SocketId::CLIENT {
                        let port = if addr.port() == 0 { 50001 } else { addr.port() };
                        let bound = SocketAddrV4::new(*addr.ip(), port);
                        node.handle_socket_bound(now, socket, SocketAddr::V4(bound));
                    } else {
                        held_binds.push((socket, addr));
                    }
                }
            }
            while let Some(t) = node.poll_transmit() {
                any = true;
                out.push(t);
            }
            while node.poll_event().is_some() {
                any = true;
            }
            if !any {
                return out;
            }
        }
    };
    drain(&mut node, &mut held_binds);
    assert!(
        node.is_firewalled(),
        "replies of a firewalled server come from its puncher"
    );
    let server = KeyPair::from_seed(&[0x5e; 32]);
    node.listen(now, &server, ServerConfig::default()).unwrap();
    drain(&mut node, &mut held_binds);
    let target = hash(&server.public_key());
    let (_, m1) = message1(&KeyPair::from_seed(&[0x70; 32]), &server);
    let client: SocketAddrV4 = "10.9.9.9:5000".parse().unwrap();
    let relay: SocketAddr = ATTACKER.parse().unwrap();
    let sends = 3 * MAX_PENDING_REPLIES;
    for i in 0..sends {
        let value = Handshake {
            mode: mode::FROM_RELAY,
            noise: m1.clone(),
            peer_address: Some(client),
            relay_address: None,
        }
        .to_bytes();
        let bytes = peer_handshake(200 + i as u16, target, &value);
        node.handle_datagram(now, SocketId::SERVER, relay, &bytes);
        let out = drain(&mut node, &mut held_binds);
        assert!(
            !out.iter().any(|t| t.dst == relay),
            "no reply before the puncher socket is bound"
        );
    }
    assert_eq!(
        node.stats().dropped.pending_reply_overflow,
        (sends - MAX_PENDING_REPLIES) as u64,
        "the replies past the bound were dropped and counted"
    );
    assert_eq!(held_binds.len(), 1, "one puncher socket asked for");

    // The socket is bound: the replies kept go out, the newest ones, each once.
    let (socket, addr) = held_binds[0];
    let bound = SocketAddrV4::new(*addr.ip(), 50002);
    node.handle_socket_bound(now, socket, SocketAddr::V4(bound));
    let out = drain(&mut node, &mut held_binds);
    let mut tids: Vec<u16> = out
        .iter()
        .filter(|t| t.dst == relay && t.socket == socket)
        .filter_map(|t| match Message::decode(&t.payload).ok()? {
            Message::Request(r) if r.command == command::PEER_HANDSHAKE => Some(r.tid),
            _ => None,
        })
        .collect();
    tids.sort_unstable();
    let newest: Vec<u16> = (sends - MAX_PENDING_REPLIES..sends)
        .map(|i| 200 + i as u16)
        .collect();
    assert_eq!(tids, newest, "the newest replies were kept: {out:?}");
}

/// A PEER_HANDSHAKE request to the node at [`NODE`] for `target`, carrying `value` (an
/// encoded `Handshake`).
fn peer_handshake(tid: u16, target: [u8; 32], value: &[u8]) -> Vec<u8> {
    let req = Request {
        tid,
        to: NODE.parse().unwrap(),
        id: None,
        token: None,
        internal: false,
        command: command::PEER_HANDSHAKE,
        target: Some(target),
        value: Some(value),
    };
    let mut bytes = Vec::new();
    req.encode(&mut bytes);
    bytes
}
