//! What a peer controls is bounded, end to end against the public API:
//!
//! - a node whose driver stops draining stops growing: once an output queue holds
//!   `Config::max_queued_output` entries, datagrams are refused and counted, the node reports
//!   `Backpressure`, and it resumes once drained;
//! - a server's connection that closed with input the application never read (so the node
//!   keeps it for a while) no longer counts against `Config::max_connections_per_server`: the
//!   next client connects.

use core::time::Duration;
use std::net::{SocketAddr, SocketAddrV4};

use hyperdht_proto::config::DEFAULT_MAX_QUEUED_OUTPUT;
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::wire::rpc::Request;
use hyperdht_proto::{
    Backpressure, Config, ConnId, Event, Node, ServerConfig, SocketId, Timestamp,
};
use hyperdht_tests::bench_util::pump_in_process;
use hyperdht_tests::sim::{NodeIdx, Sim};

const NODE: &str = "127.0.0.9:49737";

/// A PING to the node with transaction id `tid`, as bytes.
fn ping(tid: u16) -> Vec<u8> {
    Request::ping(tid, NODE.parse().unwrap()).to_bytes()
}

/// The `i`-th of many distinct senders.
fn source(i: u32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        [10, 1, (i >> 8) as u8, i as u8].into(),
        4000,
    ))
}

/// A listening node, drained once.
fn node(config: Config) -> (Node, Timestamp) {
    let now = Timestamp::from_millis(1000);
    let mut node = Node::new(config, [5; 32], now);
    pump_in_process(&mut node, now, drop, drop);
    (node, now)
}

/// Drains every transmit; how many there were.
fn drain_transmits(node: &mut Node) -> usize {
    std::iter::from_fn(|| node.poll_transmit()).count()
}

#[test]
fn a_node_whose_driver_does_not_drain_stops_growing_and_resumes_once_drained() {
    let mut config = Config::bootstrapper(NODE.parse().unwrap());
    config.max_queued_output = 32;
    let (mut node, now) = node(config);
    assert_eq!(node.backpressure(), None);
    let before = node.stats();

    // Every PING is answered with one datagram; nothing drains.
    for i in 0..100 {
        node.handle_datagram(now, SocketId::SERVER, source(i), &ping(i as u16));
    }
    assert_eq!(node.backpressure(), Some(Backpressure::Transmits));
    let stats = node.stats();
    assert_eq!(stats.datagrams_received - before.datagrams_received, 100);
    assert_eq!(
        stats.dropped.backpressure, 68,
        "the pings past the cap of 32 queued replies were refused"
    );
    assert_eq!(stats.requests_received - before.requests_received, 32);
    // Timers still run while input is refused, and nothing queued is lost.
    node.handle_timeout(now + Duration::from_millis(10));
    assert_eq!(
        drain_transmits(&mut node),
        32,
        "the queue held the cap, no more"
    );
    assert_eq!(node.backpressure(), None, "drained: input is taken again");

    node.handle_datagram(now, SocketId::SERVER, source(500), &ping(500));
    assert_eq!(drain_transmits(&mut node), 1, "answered after draining");
    assert_eq!(node.stats().dropped.backpressure, 68);
}

#[test]
fn the_default_queue_cap_holds_a_flood_that_is_never_drained() {
    let config = Config::bootstrapper(NODE.parse().unwrap());
    assert_eq!(config.max_queued_output, DEFAULT_MAX_QUEUED_OUTPUT);
    let (mut node, now) = node(config);
    let flood = DEFAULT_MAX_QUEUED_OUTPUT as u32 + 1000;
    for i in 0..flood {
        node.handle_datagram(now, SocketId::SERVER, source(i), &ping(i as u16));
    }
    assert_eq!(node.backpressure(), Some(Backpressure::Transmits));
    assert_eq!(node.stats().dropped.backpressure, 1000);
    assert_eq!(drain_transmits(&mut node), DEFAULT_MAX_QUEUED_OUTPUT);
    assert_eq!(node.backpressure(), None);
}

/// The first event on `idx` that `pred` accepts, running the simulation until `limit`.
fn run_until_event(
    sim: &mut Sim,
    idx: NodeIdx,
    limit: Timestamp,
    mut pred: impl FnMut(&Event) -> bool,
) -> Option<Event> {
    let mut seen = 0;
    let mut hit = None;
    sim.run_until_condition(limit, |s| {
        let evs = s.events(idx);
        while seen < evs.len() {
            if pred(&evs[seen].1) {
                hit = Some(evs[seen].1.clone());
                return true;
            }
            seen += 1;
        }
        false
    });
    hit
}

/// A server with room for one connection: while a client holds it, a second client's
/// handshake is dropped and counted, and the attempt fails; once the first client closes (its
/// last bytes unread by the server, so the server keeps the closed connection for a while),
/// the place is free and the second client connects.
#[test]
fn a_closed_connection_with_unread_input_frees_its_place() {
    let seed = 41;
    let mut sim = Sim::new(seed);
    let net = sim.build_dht(3, 12, Duration::from_millis(50), Duration::from_secs(60));
    let mut server_config = Config::new(net.bootstrap.clone());
    server_config.max_connections_per_server = 1;
    let s = sim.add_node(server_config);
    let c1 = sim.add_node(Config::new(net.bootstrap.clone()));
    let c2 = sim.add_node(Config::new(net.bootstrap.clone()));
    let limit = sim.now() + Duration::from_secs(30);
    assert!(
        sim.run_until_condition(limit, |sim| [s, c1, c2]
            .iter()
            .all(|&i| sim.node(i).is_bootstrapped())),
        "bootstrap (seed {seed})"
    );
    let server_key = KeyPair::from_seed(&[1; 32]);
    let server = sim
        .command(s, |n, now| {
            n.listen(now, &server_key, ServerConfig::default())
        })
        .expect("listen");
    let limit = sim.now() + Duration::from_secs(30);
    assert!(
        run_until_event(&mut sim, s, limit, |e| matches!(
            e,
            Event::ServerListening { .. }
        ))
        .is_some(),
        "listen (seed {seed})"
    );
    let spk = server_key.public_key();
    let connect = |sim: &mut Sim, idx: NodeIdx, key: u8| -> (ConnId, Option<Event>) {
        let key = KeyPair::from_seed(&[key; 32]);
        let conn = sim.command(idx, |n, now| n.connect(now, &spk, &key));
        let limit = sim.now() + Duration::from_secs(90);
        let verdict = run_until_event(sim, idx, limit, |e| match e {
            Event::Connected { conn: id, .. } | Event::ConnectFailed { conn: id, .. } => {
                *id == conn
            }
            _ => false,
        });
        (conn, verdict)
    };

    let (first, verdict) = connect(&mut sim, c1, 2);
    assert!(
        matches!(verdict, Some(Event::Connected { .. })),
        "the first client connects: {verdict:?} (seed {seed})"
    );
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.node(s).server_conn_count(server), 1);

    let (_, verdict) = connect(&mut sim, c2, 3);
    assert!(
        matches!(verdict, Some(Event::ConnectFailed { .. })),
        "the server is full: {verdict:?} (seed {seed})"
    );
    assert!(
        sim.node(s).stats().dropped.connection_cap > 0,
        "the server dropped the second client's handshake"
    );
    assert_eq!(sim.node(s).server_conn_count(server), 1);

    // The first client writes, then resets; the server never reads what arrived.
    sim.command(c1, |n, now| n.conn(first).write(now, b"never read"))
        .expect("write");
    sim.run_for(Duration::from_secs(1));
    sim.command(c1, |n, now| n.conn(first).reset(now));
    let limit = sim.now() + Duration::from_secs(30);
    let closed = run_until_event(&mut sim, s, limit, |e| {
        matches!(e, Event::ConnClosed { .. })
    });
    assert!(closed.is_some(), "the server saw the close (seed {seed})");
    assert_eq!(
        sim.node(s).connection_count(),
        1,
        "the closed connection is kept with its unread input"
    );
    assert_eq!(
        sim.node(s).server_conn_count(server),
        0,
        "but it no longer takes a place"
    );

    let (_, verdict) = connect(&mut sim, c2, 3);
    assert!(
        matches!(verdict, Some(Event::Connected { .. })),
        "the place freed by the close is taken: {verdict:?} (seed {seed})"
    );
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.node(s).server_conn_count(server), 1);
}
