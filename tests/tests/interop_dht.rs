//! DHT-layer interop with the real Node.js hyperdht 6.34 from npm, all on 127.0.0.1, both
//! directions: Rust nodes in JS networks, JS nodes bootstrapping from Rust, identical query
//! results, the PING_NAT and DOWN_HINT semantics, and robustness against junk.

use std::collections::BTreeSet;
use std::net::{SocketAddrV4, UdpSocket};

use hyperdht_mio::MioNode;
use hyperdht_proto::rng::Rng;
use hyperdht_proto::{Config, NodeId, Persistence};
use hyperdht_tests::js::{
    interop_enabled, JsHarness, JsRequest, JsSocket, NodeOptions, RequestOutcome,
};
use hyperdht_tests::support::v4;

const PING_NAT: u64 = 1;
const DOWN_HINT: u64 = 3;

/// A Rust node on 127.0.0.1 (any port) that becomes persistent during bootstrap if the real
/// reachability check (PING_NAT through the JS nodes) passes.
fn rust_node(bootstrap: &[SocketAddrV4]) -> MioNode {
    let mut c = Config::new(bootstrap.to_vec());
    c.host = [127, 0, 0, 1].into();
    c.port = 0;
    c.persistence = Persistence::Persistent;
    let node = MioNode::spawn(c).expect("spawn rust node");
    node.wait_bootstrapped().expect("rust node bootstraps");
    node
}

/// Id of a persistent Rust node (checks that it is persistent).
fn persistent_id(node: &MioNode) -> NodeId {
    let info = node.info().expect("info");
    let id = info.id.expect("rust node became persistent");
    assert_eq!(
        id,
        NodeId::from_addr(&v4(node.local_addr())),
        "id is H(public address)"
    );
    id
}

fn xor_sorted(target: &NodeId, ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = ids.into_iter().collect();
    v.sort_by(|a, b| target.cmp_distance(a, b));
    v.dedup();
    v
}

#[test]
fn rust_node_joins_js_network() {
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().expect("harness");
    let net = h.testnet(6).expect("js testnet");
    let rust = rust_node(&net.bootstrap);
    let rust_id = persistent_id(&rust);
    let info = rust.info().unwrap();
    assert!(!info.firewalled, "PING_NAT check through JS nodes passed");
    assert!(
        info.table.len() >= 4,
        "rust table filled from JS: {:?}",
        info.table
    );

    // Every JS node routes through the Rust node now.
    for n in &net.nodes {
        let table = h.table(n.handle).expect("js table");
        assert!(
            table
                .iter()
                .any(|p| p.id == rust_id.0 && p.addr == v4(rust.local_addr())),
            "JS node {} does not list the Rust node; table {:?}",
            n.addr,
            table
        );
    }
    // JS queries get replies from it, with its id.
    let mut rng = Rng::from_seed([1; 32]);
    let res = h
        .find_node(net.nodes[2].handle, &rng.bytes32())
        .expect("js findNode");
    assert!(
        res.replies
            .iter()
            .any(|r| r.addr == v4(rust.local_addr()) && r.id == Some(rust_id.0)),
        "JS findNode got no reply from the Rust node: {:?}",
        res.replies
    );
}

#[test]
fn js_node_bootstraps_from_rust_node() {
    if !interop_enabled() {
        return;
    }
    // A Rust-only network: a Rust first node and 5 Rust nodes.
    // Port 0: the first node binds a free port and announces that one (`persistent_id`
    // checks its id is that address's hash, and JS must accept it below).
    let first = MioNode::spawn(Config::bootstrapper(SocketAddrV4::new(
        [127, 0, 0, 1].into(),
        0,
    )))
    .expect("bootstrapper");
    first.wait_bootstrapped().unwrap();
    let boot = vec![v4(first.local_addr())];
    let rust: Vec<MioNode> = (0..5).map(|_| rust_node(&boot)).collect();
    let rust_ids: BTreeSet<[u8; 32]> = rust
        .iter()
        .map(|n| persistent_id(n).0)
        .chain([persistent_id(&first).0])
        .collect();

    let h = JsHarness::new().expect("harness");
    let js = h
        .create_node(&NodeOptions {
            bootstrap: boot.clone(),
            ephemeral: Some(false),
            ..NodeOptions::default()
        })
        .expect("JS node bootstraps from the Rust node");
    assert!(
        !js.ephemeral,
        "JS node became persistent through Rust nodes"
    );
    let table = h.table(js.handle).unwrap();
    let known: BTreeSet<[u8; 32]> = table.iter().map(|p| p.id).collect();
    assert!(known.len() >= 5, "JS table filled: {table:?}");
    assert!(
        known.is_subset(&rust_ids),
        "JS table holds only Rust nodes: {table:?}"
    );
    // And the Rust nodes learned the JS node.
    let js_in_rust = rust
        .iter()
        .chain([&first])
        .filter(|n| n.info().unwrap().table.iter().any(|(id, _)| id.0 == js.id))
        .count();
    assert!(
        js_in_rust >= 3,
        "only {js_in_rust} Rust nodes know the JS node"
    );
}

#[test]
fn rust_and_js_find_the_same_closest_nodes() {
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().expect("harness");
    let net = h.testnet(16).expect("js testnet");
    let rust: Vec<MioNode> = (0..10).map(|_| rust_node(&net.bootstrap)).collect();
    // Let the tables settle: one refresh walk from every node through the whole network.
    let mut rng = Rng::from_seed([2; 32]);
    for n in &rust {
        n.find_node(NodeId(rng.bytes32())).unwrap();
    }
    for n in &net.nodes {
        h.find_node(n.handle, &rng.bytes32()).unwrap();
    }
    let all: Vec<NodeId> = net.nodes[1..]
        .iter()
        .map(|n| NodeId(n.id))
        .chain(rust.iter().map(persistent_id))
        .collect();
    assert_eq!(all.len(), 25);

    let (rq, jq) = (&rust[0], &net.nodes[5]);
    let excluded = [persistent_id(rq), NodeId(jq.id)];
    for round in 0..5 {
        let target = NodeId(rng.bytes32());
        let r = rq.find_node(target).expect("rust find_node");
        let j = h.find_node(jq.handle, &target.0).expect("js findNode");
        let strip = |ids: Vec<NodeId>| -> Vec<NodeId> {
            ids.into_iter()
                .filter(|i| !excluded.contains(i))
                .take(18)
                .collect()
        };
        let rust_closest = strip(xor_sorted(&target, r.closest.iter().filter_map(|x| x.id)));
        let js_closest = strip(xor_sorted(&target, j.closest.iter().map(|p| NodeId(p.id))));
        let truth = strip(xor_sorted(&target, all.iter().copied()));
        assert_eq!(
            rust_closest, js_closest,
            "round {round}: Rust and JS disagree on the closest nodes"
        );
        assert_eq!(
            rust_closest, truth,
            "round {round}: not the true closest nodes"
        );
    }
}

#[test]
fn ping_nat_and_down_hint_from_js() {
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().expect("harness");
    let net = h.testnet(5).expect("js testnet");
    let rust = rust_node(&net.bootstrap);
    let raddr = v4(rust.local_addr());
    let js = &net.nodes[2];

    // PING_NAT from the JS client socket naming the JS server port: the reply goes to that
    // port (where dht-rpc still matches it by tid) and reports that address.
    let mut req = JsRequest::new(raddr, true, PING_NAT);
    req.value = Some(js.addr.port().to_le_bytes().to_vec());
    req.socket = Some(JsSocket::Client);
    match h.request(js.handle, &req).unwrap() {
        RequestOutcome::Response(r) => {
            assert_eq!(
                r.to, js.addr,
                "PING_NAT reply reports the address it was sent to"
            );
            assert_eq!(r.error, 0);
        }
        RequestOutcome::Timeout => panic!("PING_NAT not answered"),
    }
    // Port 0 and a short value: JS stays silent, so must we.
    for value in [vec![0, 0], vec![7]] {
        let mut req = JsRequest::new(raddr, true, PING_NAT);
        req.value = Some(value.clone());
        req.retries = Some(0);
        assert_eq!(
            h.request(js.handle, &req).unwrap(),
            RequestOutcome::Timeout,
            "PING_NAT {value:?} must be ignored"
        );
    }

    // DOWN_HINT about a live node: acked, node kept (its check ping is answered). About a dead
    // node: acked, then the Rust node checks it and drops it.
    let known: Vec<_> = net
        .nodes
        .iter()
        .filter(|n| {
            n.handle != js.handle
                && rust
                    .info()
                    .unwrap()
                    .table
                    .iter()
                    .any(|(id, _)| id.0 == n.id)
        })
        .cloned()
        .collect();
    assert!(known.len() >= 2, "rust knows at least two other JS nodes");
    let (alive, victim) = (&known[0], &known[1]);
    let hint = |addr: SocketAddrV4| {
        let mut req = JsRequest::new(raddr, true, DOWN_HINT);
        let mut v = addr.ip().octets().to_vec();
        v.extend_from_slice(&addr.port().to_le_bytes());
        req.value = Some(v);
        match h.request(js.handle, &req).unwrap() {
            RequestOutcome::Response(r) => assert_eq!(r.error, 0, "DOWN_HINT acked"),
            RequestOutcome::Timeout => panic!("DOWN_HINT not acked"),
        }
    };
    let in_table = |id: &[u8; 32]| rust.info().unwrap().table.iter().any(|(t, _)| t.0 == *id);

    let sent_before = rust.info().unwrap().stats.requests_total;
    hint(alive.addr);
    assert_eq!(
        rust.info().unwrap().stats.requests_total,
        sent_before + 1,
        "the hint made the Rust node check the node"
    );
    // Our own ping to it is answered after the check's (same node, earlier deadline).
    rust.ping(alive.addr).expect("hinted node is alive");
    assert!(in_table(&alive.id), "a live node survives a DOWN_HINT");

    h.destroy(victim.handle).unwrap();
    hint(victim.addr);
    // The check times out after 4 transmissions; a ping of ours sent just after it fails just
    // after it.
    assert!(
        rust.ping(victim.addr).is_err(),
        "destroyed JS node does not answer"
    );
    assert!(
        !in_table(&victim.id),
        "dead node still in the Rust table after DOWN_HINT"
    );

    // A hint with a short value is ignored (no ack), as in JS.
    let mut req = JsRequest::new(raddr, true, DOWN_HINT);
    req.value = Some(vec![1, 2, 3]);
    req.retries = Some(0);
    assert_eq!(h.request(js.handle, &req).unwrap(), RequestOutcome::Timeout);
}

#[test]
fn junk_from_the_fuzz_corpus_leaves_the_node_answering_js() {
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().expect("harness");
    let net = h.testnet(5).expect("js testnet");
    let rust = rust_node(&net.bootstrap);
    let target = rust.local_addr();

    // Every stored corpus input, sent three times over from a raw socket.
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut inputs = Vec::new();
    for dir in std::fs::read_dir(&corpus).expect("fuzz corpus is checked in") {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            inputs.push(std::fs::read(f.unwrap().path()).unwrap());
        }
    }
    assert!(inputs.len() >= 50, "corpus too small: {}", inputs.len());
    let before = rust.info().unwrap().stats;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0u64;
    for _ in 0..3 {
        for batch in inputs.chunks(32) {
            for data in batch {
                // Cut to 2 KiB so a batch fits the kernel's receive buffer (the cut input is
                // still junk).
                let data = &data[..data.len().min(2048)];
                if sock.send_to(data, target).is_ok() {
                    sent += 1;
                }
            }
            // A round trip through the node's loop: the batch has been read before the next.
            rust.info().unwrap();
        }
    }
    // JS pings still get answered, with the Rust node's id.
    let id = persistent_id(&rust);
    for n in &net.nodes[1..] {
        let pong = h
            .ping(n.handle, v4(target))
            .expect("Rust node still answers JS pings");
        assert_eq!(pong.id, Some(id.0));
    }
    let after = rust.info().unwrap().stats;
    assert!(
        after.datagrams_received - before.datagrams_received >= sent * 9 / 10,
        "the burst arrived"
    );
    let d = after.dropped;
    let dropped = d.too_short
        + d.bad_source
        + d.unknown_type
        + d.malformed
        + d.unmatched_response
        + d.ignored_request;
    let b = before.dropped;
    let dropped_before = b.too_short
        + b.bad_source
        + b.unknown_type
        + b.malformed
        + b.unmatched_response
        + b.ignored_request;
    assert!(
        dropped > dropped_before,
        "junk is dropped and counted: {d:?}"
    );
    assert!(
        after.requests_active < 200,
        "no unbounded request state: {}",
        after.requests_active
    );
}
