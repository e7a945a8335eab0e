//! Proves the Node.js interop harness works, using JS nodes only.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::json;

use hyperdht_tests::js::{interop_enabled, JsHarness, JsRequest, JsSocket, RequestOutcome};

/// dht-rpc's internal commands.
const PING: u64 = 0;
const UNKNOWN_INTERNAL: u64 = 7;
/// dht-rpc's UNKNOWN_COMMAND error code.
const ERR_UNKNOWN_COMMAND: u64 = 1;

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

#[test]
fn testnet_tables_and_find_node() {
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().expect("start harness");
    let net = h.testnet(6).expect("testnet");
    assert_eq!(net.nodes.len(), 6);
    assert_eq!(net.bootstrap, vec![net.nodes[0].addr]);
    for n in &net.nodes {
        assert_eq!(
            *n.addr.ip(),
            Ipv4Addr::LOCALHOST,
            "JS nodes bind 127.0.0.1 only"
        );
    }
    // The first node of a fresh network never learns its own address (nobody to ask), so it
    // stays ephemeral; the others become persistent.
    for n in &net.nodes[1..] {
        assert!(
            !n.ephemeral,
            "joining testnet node should be persistent: {n:?}"
        );
    }

    let ids: BTreeSet<[u8; 32]> = net.nodes.iter().map(|n| n.id).collect();
    assert_eq!(ids.len(), 6, "node ids are distinct");

    for n in &net.nodes {
        let table = h.table(n.handle).expect("table");
        assert!(!table.is_empty(), "routing table of {n:?} is empty");
        for p in &table {
            assert!(
                ids.contains(&p.id),
                "table entry {p:?} is not a testnet node"
            );
            assert_ne!(p.id, n.id, "a node does not store itself");
        }
        let info = h.info(n.handle).expect("info");
        assert_eq!(info.id, n.id);
        assert!(info.bootstrapped);
        assert_eq!(info.table_size, table.len());
    }

    let target = [0x5au8; 32];
    let res = h.find_node(net.nodes[3].handle, &target).expect("findNode");
    assert!(!res.closest.is_empty(), "findNode found nothing");
    assert!(!res.replies.is_empty());
    for w in res.closest.windows(2) {
        assert!(
            xor(&w[0].id, &target) < xor(&w[1].id, &target),
            "closest nodes not sorted by XOR distance: {:?}",
            res.closest
        );
    }
    let persistent: BTreeSet<[u8; 32]> = net.nodes[1..].iter().map(|n| n.id).collect();
    for p in &res.closest {
        assert!(
            persistent.contains(&p.id),
            "{p:?} is not a persistent testnet node"
        );
        let node = net.nodes.iter().find(|n| n.id == p.id).unwrap();
        assert_eq!(node.addr, p.addr, "closest node id/address mismatch");
    }
    // The querying node never lists itself; every other persistent node is found.
    let found: BTreeSet<[u8; 32]> = res.closest.iter().map(|p| p.id).collect();
    let mut expected = persistent.clone();
    expected.remove(&net.nodes[3].id);
    assert_eq!(found, expected);
    for r in &res.replies {
        if let Some(id) = r.id {
            assert!(ids.contains(&id));
        }
    }

    let stats = h.stats(net.nodes[3].handle).expect("stats");
    assert!(
        stats["queries"]["total"].as_u64().unwrap() >= 1,
        "stats: {stats}"
    );

    h.shutdown().expect("clean shutdown");
}

#[test]
fn ping_and_raw_requests() {
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().expect("start harness");
    let net = h.testnet(3).expect("testnet");
    let (a, b) = (&net.nodes[1], &net.nodes[2]);

    let pong = h.ping(a.handle, b.addr).expect("ping");
    assert_eq!(pong.id, Some(b.id), "a persistent node sends its id");
    let pong = h.ping(b.handle, net.nodes[0].addr).expect("ping bootstrap");
    assert_eq!(pong.id, None, "the ephemeral bootstrap node sends no id");

    // Internal PING from the server socket: the reply says where it came from.
    let mut req = JsRequest::new(b.addr, true, PING);
    req.socket = Some(JsSocket::Server);
    match h.request(a.handle, &req).expect("request") {
        RequestOutcome::Response(r) => {
            assert_eq!(r.error, 0);
            assert_eq!(r.from.addr, b.addr);
            assert_eq!(r.from.id, Some(b.id));
            assert_eq!(r.to, a.addr, "seen from our server socket");
            assert!(r.closer_nodes.is_empty());
            assert_eq!(r.value, None);
        }
        RequestOutcome::Timeout => panic!("PING timed out"),
    }
    // ... and from the client socket, which has another port.
    req.socket = Some(JsSocket::Client);
    match h.request(a.handle, &req).expect("request") {
        RequestOutcome::Response(r) => {
            assert_eq!(r.error, 0);
            assert_eq!(*r.to.ip(), Ipv4Addr::LOCALHOST);
            assert_ne!(r.to.port(), a.addr.port(), "client socket has its own port");
        }
        RequestOutcome::Timeout => panic!("PING timed out"),
    }

    // An unknown internal command gets UNKNOWN_COMMAND; with a target, closer nodes too.
    let mut req = JsRequest::new(b.addr, true, UNKNOWN_INTERNAL);
    match h.request(a.handle, &req).expect("request") {
        RequestOutcome::Response(r) => {
            assert_eq!(r.error, ERR_UNKNOWN_COMMAND);
            assert!(r.closer_nodes.is_empty());
        }
        RequestOutcome::Timeout => panic!("unknown command timed out"),
    }
    req.target = Some([7; 32]);
    match h.request(a.handle, &req).expect("request") {
        RequestOutcome::Response(r) => {
            assert_eq!(r.error, ERR_UNKNOWN_COMMAND);
            assert!(!r.closer_nodes.is_empty(), "a target asks for closer nodes");
        }
        RequestOutcome::Timeout => panic!("unknown command timed out"),
    }

    // Nobody listens here: a timeout, not an error and not a hang.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = match silent.local_addr().unwrap() {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(v6) => panic!("bound IPv6 {v6}"),
    };
    let mut req = JsRequest::new(silent_addr, true, PING);
    req.retries = Some(0);
    assert_eq!(
        h.request(a.handle, &req).expect("request"),
        RequestOutcome::Timeout
    );
    assert!(
        h.ping(a.handle, silent_addr).is_err(),
        "ping to a silent socket fails"
    );

    h.destroy(b.handle).expect("destroy");
    assert!(h.info(b.handle).is_err(), "destroyed handle is gone");
    assert!(h.call("noSuchCommand", serde_json::Value::Null).is_err());
}

#[test]
fn single_node_and_errors() {
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().expect("start harness");
    let first = h
        .create_node(&hyperdht_tests::js::NodeOptions::default())
        .expect("first node of a new network");
    assert_eq!(*first.addr.ip(), Ipv4Addr::LOCALHOST);
    assert!(h.table(first.handle).expect("table").is_empty());
    let info = h.info(first.handle).expect("info");
    assert!(info.bootstrapped && info.ephemeral);
    assert!(h.table(9999).is_err(), "unknown handle is an error");
    // A call that outlives its timeout fails instead of hanging; its late reply is dropped
    // and the harness stays usable.
    let err = h
        .call_timeout("testnet", json!({ "size": 2 }), Duration::from_millis(1))
        .unwrap_err();
    assert!(err.contains("timed out"), "{err}");
    assert!(h.info(first.handle).is_ok());
    // Harness replies stay usable after errors; Drop shuts it down.
}
