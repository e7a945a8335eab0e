//! hyperdht-level byte vectors: `dht-03` (records, signatures, namespaces) reproduced from our
//! codecs and keys, and the `dht-05` relay capture replayed into a Rust node, whose replies and
//! relayed datagrams must equal the real JS node's byte for byte.

use std::net::{SocketAddr, SocketAddrV4};

use hyperdht_proto::crypto::{hash, to_hex};
use hyperdht_proto::dht::keys::{self, command, namespace};
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::wire::hyperdht::{
    mutable_signable, Announce, LookupReply, MutablePut, MutableRecord, Peer,
};
use hyperdht_proto::wire::rpc::{Request, Response};
use hyperdht_proto::{Config, Event, Node, NodeId, SocketId, SocketOp, Timestamp};
use hyperdht_tests::support::{h32, hx, load_vector as load};

fn peer_fixture() -> Peer {
    Peer {
        public_key: KeyPair::from_seed(&[1; 32]).public_key(),
        relay_addresses: vec![
            "1.2.3.4:5678".parse().unwrap(),
            "127.0.0.1:49737".parse().unwrap(),
        ],
    }
}

#[test]
fn dht03_records_and_signatures() {
    let v = load("records.json");
    let kp = KeyPair::from_seed(&h32(&v["keyPair"]["seed"]));
    assert_eq!(kp.public_key(), h32(&v["keyPair"]["publicKey"]));
    let peer = peer_fixture();
    assert_eq!(peer.to_bytes(), hx(&v["peerRecord"]));
    assert_eq!(Peer::decode(&hx(&v["peerRecord"])).unwrap(), peer);
    let bare = Peer {
        public_key: kp.public_key(),
        relay_addresses: vec![],
    };
    assert_eq!(bare.to_bytes(), hx(&v["peerRecord_noRelays"]));

    // ANNOUNCE: signable, signature, encodings with and without bump.
    let a = &v["announce"];
    let (target, token, node_id) = (h32(&a["target"]), h32(&a["token"]), h32(&a["nodeId"]));
    assert_eq!(target, hash(b"my topic"));
    assert_eq!(
        node_id,
        NodeId::from_addr(&"127.0.0.1:49737".parse().unwrap()).0
    );
    let signable = keys::announce_signable(
        &namespace(command::ANNOUNCE),
        &target,
        &node_id,
        &token,
        &peer,
        None,
    );
    assert_eq!(signable.to_vec(), hx(&a["signable"]));
    let sig = kp.sign(&signable);
    assert_eq!(sig.to_vec(), hx(&a["signature"]));
    let mut ann = Announce {
        peer: Some(peer.clone()),
        refresh: None,
        signature: Some(sig),
        bump: 0,
    };
    assert_eq!(ann.to_bytes(), hx(&a["encoded"]));
    assert_eq!(Announce::decode(&hx(&a["encoded"])).unwrap(), ann);
    ann.bump = 1_700_000_000_000;
    assert_eq!(ann.to_bytes(), hx(&a["encodedWithBump_1700000000000"]));

    // UNANNOUNCE signs an empty relay list.
    let un = Peer {
        public_key: kp.public_key(),
        relay_addresses: vec![],
    };
    let signable = keys::announce_signable(
        &namespace(command::UNANNOUNCE),
        &target,
        &node_id,
        &token,
        &un,
        None,
    );
    let sig = kp.sign(&signable);
    assert_eq!(sig.to_vec(), hx(&v["unannounce"]["signature"]));
    let unann = Announce {
        peer: Some(un),
        refresh: None,
        signature: Some(sig),
        bump: 0,
    };
    assert_eq!(unann.to_bytes(), hx(&v["unannounce"]["encoded"]));

    // LOOKUP reply.
    let raw = hx(&v["lookupRawReply"]);
    let decoded = LookupReply::decode(&raw).unwrap();
    assert_eq!(decoded.peers[0], peer);
    assert_eq!(
        to_hex(&decoded.peers[1].public_key),
        v["lookupRawReply_decoded"]["peers"][1]["publicKey"]
            .as_str()
            .unwrap()
    );
    let records: Vec<Vec<u8>> = decoded.peers.iter().map(Peer::to_bytes).collect();
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    let mut out = Vec::new();
    LookupReply::encode_raw(&refs, decoded.bump, &mut out);
    assert_eq!(out, raw);

    // Mutable.
    let m = &v["mutable"];
    let value = hx(&m["value"]);
    let seq = m["seq"].as_u64().unwrap();
    assert_eq!(h32(&m["target"]), hash(&kp.public_key()));
    assert_eq!(
        mutable_signable(seq, &value),
        hx(&m["mutableSignableEncoding"])
    );
    assert_eq!(
        keys::mutable_signable_bytes(seq, &value).to_vec(),
        hx(&m["signable"])
    );
    let sig = keys::sign_mutable(&kp, seq, &value);
    assert_eq!(sig.to_vec(), hx(&m["signature"]));
    let put = MutablePut {
        public_key: kp.public_key(),
        seq,
        value: value.clone(),
        signature: sig,
    };
    let mut enc = Vec::new();
    put.encode(&mut enc);
    assert_eq!(enc, hx(&m["putRequest"]));
    assert_eq!(MutablePut::decode(&enc).unwrap(), put);
    let rec = MutableRecord {
        seq,
        value,
        signature: sig,
    };
    assert_eq!(rec.to_bytes(), hx(&m["getResponse"]));
    assert_eq!(hx(&m["getRequestValue_seq0"]), vec![0]);

    // Immutable target.
    assert_eq!(
        h32(&v["immutable"]["target"]),
        hash(&hx(&v["immutable"]["value"]))
    );
}

const NODE: &str = "127.0.0.2:49737";
const SERVER: &str = "127.0.0.2:40000";
const CLIENT: &str = "127.0.0.2:40001";

fn a(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

/// A Rust node in the JS node's place: persistent at 127.0.0.2:49737 with the capture's
/// token secrets.
fn js_twin() -> (Node, Timestamp) {
    let mut config = Config::bootstrapper(a(NODE));
    config.token_secrets = Some([[0x41; 32], [0x42; 32]]);
    let mut now = Timestamp::from_millis(1000);
    let mut node = Node::new(config, [5; 32], now);
    for _ in 0..100 {
        while let Some(op) = node.poll_socket_op() {
            if let SocketOp::Bind { socket, addr } = op {
                let port = if addr.port() == 0 { 50000 } else { addr.port() };
                node.handle_socket_bound(
                    now,
                    socket,
                    SocketAddr::V4(SocketAddrV4::new(*addr.ip(), port)),
                );
            }
        }
        while node.poll_transmit().is_some() {}
        let mut done = false;
        while let Some(e) = node.poll_event() {
            done |= e == Event::Bootstrapped;
        }
        if done {
            assert!(node.id().is_some());
            return (node, now);
        }
        now = node.poll_timeout().unwrap().max(now);
        node.handle_timeout(now);
    }
    panic!("node did not bootstrap");
}

/// Feeds `bytes` from `from`; returns every datagram sent in answer.
fn feed(node: &mut Node, now: Timestamp, from: &str, bytes: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
    node.handle_datagram(now, SocketId::SERVER, SocketAddr::V4(a(from)), bytes);
    std::iter::from_fn(|| node.poll_transmit())
        .map(|t| (t.dst, t.payload))
        .collect()
}

#[test]
fn dht05_relay_capture_replayed_into_a_rust_node() {
    let v = load("relay.json");
    let (mut node, now) = js_twin();
    let kp = KeyPair::from_seed(&[1; 32]);
    let target = hash(&kp.public_key());

    // The server announces itself, as the capture script did (FIND_PEER for a token first).
    let fp = Request {
        tid: 1,
        to: a(NODE),
        id: None,
        token: None,
        internal: false,
        command: command::FIND_PEER,
        target: Some(target),
        value: None,
    };
    let mut bytes = Vec::new();
    fp.encode(&mut bytes);
    let out = feed(&mut node, now, SERVER, &bytes);
    let res = Response::decode(&out[0].1).unwrap();
    let token = res.token.expect("token");
    let peer = Peer {
        public_key: kp.public_key(),
        relay_addresses: vec![],
    };
    let signable = keys::announce_signable(
        &namespace(command::ANNOUNCE),
        &target,
        &res.id.unwrap(),
        &token,
        &peer,
        None,
    );
    let ann = Announce {
        peer: Some(peer),
        refresh: None,
        signature: Some(kp.sign(&signable)),
        bump: 0,
    };
    let req = Request {
        tid: 2,
        to: a(NODE),
        id: None,
        token: Some(token),
        internal: false,
        command: command::ANNOUNCE,
        target: Some(target),
        value: Some(&ann.to_bytes()),
    };
    let mut bytes = Vec::new();
    req.encode(&mut bytes);
    let out = feed(&mut node, now, SERVER, &bytes);
    assert_eq!(
        Response::decode(&out[0].1).unwrap().error,
        v["announceSelfError"].as_u64().unwrap()
    );

    // FIND_PEER from the client: the reply equals the JS node's, byte for byte.
    let fp = &v["findPeer"];
    let out = feed(&mut node, now, CLIENT, &hx(&fp["request"]));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, SocketAddr::V4(a(CLIENT)));
    assert_eq!(to_hex(&out[0].1), fp["response"].as_str().unwrap());

    // The relayed handshake: client -> node -> server -> node -> client, byte for byte.
    let hs = &v["handshakeRelay"];
    let out = feed(&mut node, now, CLIENT, &hx(&hs["clientRequest"]));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, SocketAddr::V4(a(SERVER)));
    assert_eq!(to_hex(&out[0].1), hs["relayedToServer"].as_str().unwrap());
    let out = feed(&mut node, now, SERVER, &hx(&hs["serverRequest"]));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, SocketAddr::V4(a(CLIENT)));
    assert_eq!(to_hex(&out[0].1), hs["responseToClient"].as_str().unwrap());

    // LOOKUP on the server's own target returns the forward record.
    let req = Request {
        tid: 5,
        to: a(NODE),
        id: None,
        token: None,
        internal: false,
        command: command::LOOKUP,
        target: Some(target),
        value: None,
    };
    let mut bytes = Vec::new();
    req.encode(&mut bytes);
    let out = feed(&mut node, now, CLIENT, &bytes);
    let res = Response::decode(&out[0].1).unwrap();
    assert_eq!(
        to_hex(res.value.unwrap()),
        v["lookupOnSelfTarget"].as_str().unwrap()
    );
}
