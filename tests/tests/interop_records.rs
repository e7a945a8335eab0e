//! hyperdht record commands between Rust and the real Node.js hyperdht 6.34, on 127.0.0.1:
//! announce/lookup/unannounce, mutable and immutable put/get both ways, the seq rules, relayed
//! connections through an all-Rust network, and refusal of forged or invalid requests.

use std::net::SocketAddrV4;

use serde_json::{json, Value};

use hyperdht_mio::MioNode;
use hyperdht_proto::crypto::{from_hex, hash, to_hex};
use hyperdht_proto::dht::keys::{self, command, namespace};
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::event::Record;
use hyperdht_proto::wire::hyperdht::{Announce, MutablePut, Peer};
use hyperdht_proto::{Config, Persistence};
use hyperdht_tests::js::{interop_enabled, JsHarness, JsRequest, JsTestnet, RequestOutcome};
use hyperdht_tests::support::v4;

fn rust_node(bootstrap: &[SocketAddrV4]) -> MioNode {
    let mut c = Config::new(bootstrap.to_vec());
    c.host = [127, 0, 0, 1].into();
    c.port = 0;
    c.persistence = Persistence::Persistent;
    let node = MioNode::spawn(c).expect("spawn rust node");
    node.wait_bootstrapped().expect("bootstrap");
    assert!(node.info().unwrap().id.is_some(), "rust node is persistent");
    node
}

/// A JS testnet of `js` nodes plus `rust` persistent Rust nodes.
fn mixed(h: &JsHarness, js: usize, rust: usize) -> (JsTestnet, Vec<MioNode>) {
    let net = h.testnet(js).expect("js testnet");
    let nodes = (0..rust).map(|_| rust_node(&net.bootstrap)).collect();
    (net, nodes)
}

fn call(h: &JsHarness, cmd: &str, args: Value) -> Value {
    h.call(cmd, args)
        .unwrap_or_else(|e| panic!("JS {cmd} failed: {e}"))
}

fn js_lookup_keys(h: &JsHarness, node: u64, topic: &[u8; 32]) -> Vec<String> {
    let res = call(h, "lookup", json!({"node": node, "topic": to_hex(topic)}));
    let mut keys: Vec<String> = res
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["peers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["publicKey"].as_str().unwrap().to_string())
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn rust_lookup_peers(node: &MioNode, topic: [u8; 32]) -> Vec<Peer> {
    let out = node.lookup(topic).expect("rust lookup");
    let mut peers: Vec<Peer> = out
        .records
        .into_iter()
        .flat_map(|(_, r)| match r {
            Record::Lookup { peers, .. } => peers,
            _ => Vec::new(),
        })
        .collect();
    peers.sort_by_key(|p| p.public_key);
    peers.dedup();
    peers
}

#[test]
fn announce_lookup_unannounce_both_ways() {
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let (net, rust) = mixed(&h, 8, 6);
    let js = net.nodes[3].handle;

    // JS announces, Rust looks up.
    let topic_js = hash(b"interop topic announced from js");
    let seed_a = [0xa1; 32];
    let pk_a = KeyPair::from_seed(&seed_a).public_key();
    call(
        &h,
        "announce",
        json!({"node": js, "topic": to_hex(&topic_js), "seed": to_hex(&seed_a), "relayAddresses": ["1.2.3.4:5678"]}),
    );
    let found = rust_lookup_peers(&rust[0], topic_js);
    assert_eq!(
        found.len(),
        1,
        "Rust lookup finds the JS announce: {found:?}"
    );
    assert_eq!(found[0].public_key, pk_a);
    assert_eq!(
        found[0].relay_addresses,
        vec!["1.2.3.4:5678".parse::<SocketAddrV4>().unwrap()]
    );

    // Rust announces (signed per storing node, verified by JS and Rust nodes), JS looks up.
    let topic_rs = hash(b"interop topic announced from rust");
    let key_b = KeyPair::from_seed(&[0xb2; 32]);
    let out = rust[1]
        .announce(topic_rs, &key_b, vec!["5.6.7.8:9".parse().unwrap()])
        .expect("rust announce");
    assert!(
        out.commits.len() >= 10,
        "announce committed to the closest nodes: {}",
        out.commits.len()
    );
    assert!(out.commits.iter().all(|r| r.error == 0));
    assert_eq!(
        js_lookup_keys(&h, js, &topic_rs),
        vec![to_hex(&key_b.public_key())],
        "JS lookup finds the Rust announce"
    );

    // Unannounce from each side removes it for both.
    rust[1]
        .unannounce(topic_rs, &key_b)
        .expect("rust unannounce");
    assert!(
        js_lookup_keys(&h, js, &topic_rs).is_empty(),
        "Rust unannounce removed it everywhere"
    );
    assert!(rust_lookup_peers(&rust[2], topic_rs).is_empty());
    call(
        &h,
        "unannounce",
        json!({"node": js, "topic": to_hex(&topic_js), "seed": to_hex(&seed_a)}),
    );
    assert!(
        rust_lookup_peers(&rust[0], topic_js).is_empty(),
        "JS unannounce removed it from Rust nodes too"
    );
}

#[test]
fn mutable_and_immutable_both_ways() {
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let (net, rust) = mixed(&h, 8, 6);
    let js = net.nodes[2].handle;

    // JS mutablePut, Rust mutable_get: same seq, value and signature.
    let seed_c = [0xc3; 32];
    let key_c = KeyPair::from_seed(&seed_c);
    let put = call(
        &h,
        "mutablePut",
        json!({"node": js, "seed": to_hex(&seed_c), "value": to_hex(b"hello from js"), "seq": 4}),
    );
    let got = rust[0]
        .mutable_get(key_c.public_key(), 0)
        .unwrap()
        .expect("Rust finds the JS value");
    assert_eq!((got.seq, got.value.as_slice()), (4, &b"hello from js"[..]));
    assert_eq!(
        to_hex(&got.signature),
        put["signature"].as_str().unwrap(),
        "same signature bytes"
    );

    // Rust mutable_put, JS mutableGet (JS verifies the Rust signature).
    let key_d = KeyPair::from_seed(&[0xd4; 32]);
    let out = rust[1].mutable_put(&key_d, b"hello from rust", 7).unwrap();
    assert!(out.commits.iter().all(|r| r.error == 0) && !out.commits.is_empty());
    let got = call(
        &h,
        "mutableGet",
        json!({"node": js, "publicKey": to_hex(&key_d.public_key())}),
    );
    assert_eq!(got["seq"], 7);
    assert_eq!(got["value"].as_str().unwrap(), to_hex(b"hello from rust"));
    assert_eq!(
        got["signature"].as_str().unwrap(),
        to_hex(&keys::sign_mutable(&key_d, 7, b"hello from rust"))
    );

    // The seq rules, answered by JS and Rust storing nodes alike: every node holding seq 4
    // refuses a different value at seq 4 (SEQ_REUSED) and any value at seq 3 (SEQ_TOO_LOW).
    let holders: Vec<SocketAddrV4> = rust[2]
        .query(hyperdht_proto::QuerySpec::external(
            hash(&key_c.public_key()),
            command::MUTABLE_GET,
            Some(vec![0]),
        ))
        .unwrap()
        .replies
        .iter()
        .filter(|r| r.value.is_some())
        .map(|r| r.from)
        .collect();
    let js_addrs: Vec<SocketAddrV4> = net.nodes.iter().map(|n| n.addr).collect();
    assert!(
        holders.iter().any(|a| js_addrs.contains(a)),
        "a JS node holds the value: {holders:?}"
    );
    assert!(
        holders.iter().any(|a| !js_addrs.contains(a)),
        "a Rust node holds the value: {holders:?}"
    );
    let verdicts = |out: &hyperdht_mio::QueryOutcome| -> Vec<(SocketAddrV4, u64)> {
        out.commits
            .iter()
            .filter(|r| holders.contains(&r.from))
            .map(|r| (r.from, r.error))
            .collect()
    };
    let reused = rust[2].mutable_put(&key_c, b"different value", 4).unwrap();
    let v = verdicts(&reused);
    assert!(
        v.len() >= 2 && v.iter().all(|(_, e)| *e == keys::error_code::SEQ_REUSED),
        "{v:?}"
    );
    let low = rust[2].mutable_put(&key_c, b"older", 3).unwrap();
    let v = verdicts(&low);
    assert!(
        v.len() >= 2 && v.iter().all(|(_, e)| *e == keys::error_code::SEQ_TOO_LOW),
        "{v:?}"
    );
    let same = rust[2].mutable_put(&key_c, b"hello from js", 4).unwrap();
    assert!(
        verdicts(&same).iter().all(|(_, e)| *e == 0),
        "same seq and value is accepted"
    );
    let after = rust[3]
        .query(hyperdht_proto::QuerySpec::external(
            hash(&key_c.public_key()),
            command::MUTABLE_GET,
            Some(vec![0]),
        ))
        .unwrap();
    for r in after.replies.iter().filter(|r| holders.contains(&r.from)) {
        let rec =
            hyperdht_proto::wire::hyperdht::MutableRecord::decode(r.value.as_deref().unwrap())
                .unwrap();
        assert_eq!(
            rec.value, b"hello from js",
            "refused puts overwrote nothing at {}",
            r.from
        );
    }

    // Immutable both ways.
    let imm = call(
        &h,
        "immutablePut",
        json!({"node": js, "value": to_hex(b"immutable from js")}),
    );
    let hash_js: [u8; 32] = from_hex(imm["hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(hash_js, hash(b"immutable from js"));
    assert_eq!(
        rust[4].immutable_get(hash_js).unwrap().as_deref(),
        Some(&b"immutable from js"[..])
    );
    let (hash_rs, _) = rust[5].immutable_put(b"immutable from rust").unwrap();
    let got = call(
        &h,
        "immutableGet",
        json!({"node": js, "hash": to_hex(&hash_rs)}),
    );
    assert_eq!(
        got["value"].as_str().unwrap(),
        to_hex(b"immutable from rust")
    );
}

/// A raw request from a JS node to one Rust node; `None` on timeout.
fn raw(
    h: &JsHarness,
    js: u64,
    to: SocketAddrV4,
    cmd: u64,
    target: [u8; 32],
    value: Option<Vec<u8>>,
    token: Option<[u8; 32]>,
) -> Option<hyperdht_tests::js::JsResponse> {
    let mut req = JsRequest::new(to, false, cmd);
    req.target = Some(target);
    req.value = value;
    req.token = token;
    req.retries = Some(0);
    match h.request(js, &req).unwrap() {
        RequestOutcome::Response(r) => Some(r),
        RequestOutcome::Timeout => None,
    }
}

#[test]
fn forged_and_invalid_requests_are_refused() {
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let (net, rust) = mixed(&h, 5, 1);
    let js = net.nodes[1].handle;
    let r = v4(rust[0].local_addr());
    let rid = rust[0].info().unwrap().id.unwrap();
    let topic = hash(b"forgery topic");

    // A token for the JS node's IP, from a LOOKUP.
    let res = raw(&h, js, r, command::LOOKUP, topic, None, None).expect("lookup answered");
    let token = res.token.expect("lookup reply carries a token");

    let key = KeyPair::from_seed(&[0xe5; 32]);
    let peer = Peer {
        public_key: key.public_key(),
        relay_addresses: vec![],
    };
    let signable = keys::announce_signable(
        &namespace(command::ANNOUNCE),
        &topic,
        &rid.0,
        &token,
        &peer,
        None,
    );
    let mut ann = Announce {
        peer: Some(peer.clone()),
        refresh: None,
        signature: Some(key.sign(&signable)),
        bump: 0,
    };
    // Forged signature: silence, nothing stored.
    let mut forged = ann.clone();
    forged.signature.as_mut().unwrap()[5] ^= 0x40;
    assert!(
        raw(
            &h,
            js,
            r,
            command::ANNOUNCE,
            topic,
            Some(forged.to_bytes()),
            Some(token)
        )
        .is_none(),
        "forged announce is ignored"
    );
    // Signed for another node id: silence.
    let other = keys::announce_signable(
        &namespace(command::ANNOUNCE),
        &topic,
        &[9; 32],
        &token,
        &peer,
        None,
    );
    let mut wrong_node = ann.clone();
    wrong_node.signature = Some(key.sign(&other));
    assert!(raw(
        &h,
        js,
        r,
        command::ANNOUNCE,
        topic,
        Some(wrong_node.to_bytes()),
        Some(token)
    )
    .is_none());
    // Wrong token: INVALID_TOKEN with a fresh token.
    let bad = raw(
        &h,
        js,
        r,
        command::ANNOUNCE,
        topic,
        Some(ann.to_bytes()),
        Some([7; 32]),
    )
    .expect("answered");
    assert_eq!(bad.error, 2, "invalid token");
    assert!(bad.token.is_some());
    // No token at all: silence.
    assert!(raw(
        &h,
        js,
        r,
        command::ANNOUNCE,
        topic,
        Some(ann.to_bytes()),
        None
    )
    .is_none());
    let look = raw(&h, js, r, command::LOOKUP, topic, None, None).unwrap();
    assert!(
        look.value.is_none(),
        "nothing stored after the refused announces"
    );
    // The genuine one is stored.
    ann.bump = 0;
    let ok = raw(
        &h,
        js,
        r,
        command::ANNOUNCE,
        topic,
        Some(ann.to_bytes()),
        Some(token),
    )
    .expect("valid announce acked");
    assert_eq!(ok.error, 0);
    assert!(
        ok.token.is_none() && ok.closer_nodes.is_empty(),
        "announce ack has no token and no closer nodes"
    );
    assert!(raw(&h, js, r, command::LOOKUP, topic, None, None)
        .unwrap()
        .value
        .is_some());

    // Mutable: forged signature and stale seq.
    let target = hash(&key.public_key());
    let put = |seq: u64, value: &[u8], sig: [u8; 64]| {
        let mut v = Vec::new();
        MutablePut {
            public_key: key.public_key(),
            seq,
            value: value.to_vec(),
            signature: sig,
        }
        .encode(&mut v);
        v
    };
    let good = put(5, b"v5", keys::sign_mutable(&key, 5, b"v5"));
    assert_eq!(
        raw(
            &h,
            js,
            r,
            command::MUTABLE_PUT,
            target,
            Some(good),
            Some(token)
        )
        .unwrap()
        .error,
        0
    );
    let forged = put(6, b"v6", keys::sign_mutable(&key, 6, b"not v6"));
    assert!(
        raw(
            &h,
            js,
            r,
            command::MUTABLE_PUT,
            target,
            Some(forged),
            Some(token)
        )
        .is_none(),
        "forged mutable ignored"
    );
    let stale = put(4, b"v4", keys::sign_mutable(&key, 4, b"v4"));
    assert_eq!(
        raw(
            &h,
            js,
            r,
            command::MUTABLE_PUT,
            target,
            Some(stale),
            Some(token)
        )
        .unwrap()
        .error,
        17
    );
    let mut seq0 = Vec::new();
    hyperdht_proto::wire::compact::write_uint(&mut seq0, 0);
    let got = raw(&h, js, r, command::MUTABLE_GET, target, Some(seq0), None).unwrap();
    let rec = hyperdht_proto::wire::hyperdht::MutableRecord::decode(&got.value.unwrap()).unwrap();
    assert_eq!(
        (rec.seq, rec.value.as_slice()),
        (5, &b"v5"[..]),
        "refused puts stored nothing"
    );

    // Immutable: wrong hash and oversize values are ignored.
    assert!(raw(
        &h,
        js,
        r,
        command::IMMUTABLE_PUT,
        hash(b"x"),
        Some(b"y".to_vec()),
        Some(token)
    )
    .is_none());
    let big = vec![0x55; 20_000];
    assert!(
        raw(
            &h,
            js,
            r,
            command::IMMUTABLE_PUT,
            hash(&big),
            Some(big.clone()),
            Some(token)
        )
        .is_none(),
        "oversize value ignored"
    );
    assert!(
        raw(&h, js, r, command::IMMUTABLE_GET, hash(&big), None, None)
            .unwrap()
            .value
            .is_none()
    );
    assert_eq!(rust[0].info().unwrap().stats.invalid_tokens, 1);
}

#[test]
fn js_peers_connect_through_rust_only_network() {
    if !interop_enabled() {
        return;
    }
    // Ten Rust DHT nodes: a first node and nine joining it.
    let first = MioNode::spawn(Config::bootstrapper(SocketAddrV4::new(
        [127, 0, 0, 1].into(),
        0,
    )))
    .unwrap();
    first.wait_bootstrapped().unwrap();
    let boot = vec![v4(first.local_addr())];
    let rust: Vec<MioNode> = (0..9).map(|_| rust_node(&boot)).collect();
    let boot_s: Vec<String> = boot.iter().map(|a| a.to_string()).collect();

    let h = JsHarness::new().unwrap();
    let server = call(&h, "createNode", json!({"bootstrap": boot_s}));
    let client = call(&h, "createNode", json!({"bootstrap": boot_s}));
    let seed = [0x5e; 32];
    let listened = call(
        &h,
        "listen",
        json!({"node": server["node"], "seed": to_hex(&seed)}),
    );
    let pk = listened["publicKey"].as_str().unwrap().to_string();
    let echo = call(
        &h,
        "connectEcho",
        json!({"node": client["node"], "publicKey": pk, "message": to_hex(b"through rust relays")}),
    );
    assert_eq!(
        echo["echo"].as_str().unwrap(),
        to_hex(b"through rust relays")
    );
    assert_eq!(echo["remotePublicKey"].as_str().unwrap(), pk);
    let relayed: u64 = rust
        .iter()
        .chain([&first])
        .map(|n| n.info().unwrap().stats.relayed)
        .sum();
    assert!(relayed >= 1, "the handshake went through a Rust relay");
    let found = rust[0]
        .find_peer(from_hex(&pk).unwrap().try_into().unwrap())
        .unwrap();
    assert!(
        !found.records.is_empty(),
        "Rust find_peer sees the JS server's record"
    );
}
