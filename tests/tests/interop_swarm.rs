//! Hyperswarm between Rust ([`hyperdht_mio::Swarm`]) and the real Node.js hyperswarm 4.17.2
//! (`tests/js/swarm-peer.js`) on a local testnet of JS DHT nodes on 127.0.0.1: a mixed full
//! mesh where every line reaches every peer once, simultaneous dials that leave one
//! connection (the same one at both ends), the firewall in both directions, `max_peers`,
//! server-only and client-only joins, and a peer that leaves (given up on) and comes back
//! (reconnected by all).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hyperdht_mio::JoinOptions;
use hyperdht_proto::crypto::to_hex;
use hyperdht_tests::js::{interop_enabled, JsHarness};
use hyperdht_tests::support::logs;
use hyperdht_tests::swarm_peers::{
    drain, wait_until, JsSwarmPeer, PeerSpec, RustSwarmPeer, SwarmPeer,
};

const WAIT: Duration = Duration::from_secs(60);

fn rust(spec: &PeerSpec) -> Box<dyn SwarmPeer> {
    Box::new(RustSwarmPeer::spawn(spec))
}

fn js(spec: &PeerSpec) -> Box<dyn SwarmPeer> {
    Box::new(JsSwarmPeer::spawn(spec))
}

fn short(k: &[u8; 32]) -> String {
    to_hex(k)[..8].to_string()
}

/// Waits until `peer` has open connections to exactly `want` (by its events).
fn wait_connected_to(peer: &dyn SwarmPeer, want: &BTreeSet<[u8; 32]>) {
    wait_until(peer, WAIT, "connections to every other peer", |st| {
        st.open == *want
    });
}

/// Waits until `peer`'s topic is announced (its first refresh finished).
fn wait_flushed(peer: &dyn SwarmPeer) {
    wait_until(peer, WAIT, "the topic announced", |st| st.flushed);
}

/// Checks that every pair of `peers` holds one connection, the same one at both ends (one
/// end dialled it, the other accepted it).
fn assert_one_connection_per_pair(peers: &[Box<dyn SwarmPeer>]) {
    let sets: Vec<_> = peers.iter().map(|p| p.connections()).collect();
    for (i, a) in peers.iter().enumerate() {
        let others: BTreeSet<[u8; 32]> = peers
            .iter()
            .filter(|p| p.public_key() != a.public_key())
            .map(|p| p.public_key())
            .collect();
        let have: BTreeSet<[u8; 32]> = sets[i].keys().copied().collect();
        assert_eq!(
            have,
            others,
            "{} peer {} connects to every other peer once",
            a.kind(),
            short(&a.public_key())
        );
        for (j, b) in peers.iter().enumerate().skip(i + 1) {
            let a_dialled = sets[i][&b.public_key()];
            let b_dialled = sets[j][&a.public_key()];
            assert_ne!(
                a_dialled,
                b_dialled,
                "{} {} and {} {} keep the same connection",
                a.kind(),
                short(&a.public_key()),
                b.kind(),
                short(&b.public_key())
            );
        }
    }
}

/// Three Rust and three JS peers join one topic one after the other and reach a full mesh;
/// each line typed reaches every other peer exactly once.
#[test]
fn three_rust_and_three_js_peers_reach_a_full_mesh() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(5).unwrap();
    let topic = [0x51; 32];
    let mut peers: Vec<Box<dyn SwarmPeer>> = Vec::new();
    let n: u8 = std::env::var("MESH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    for i in 0..n {
        let spec = PeerSpec::new(&net.bootstrap, [0x60 + i; 32], topic);
        let peer = if i % 2 == 0 { rust(&spec) } else { js(&spec) };
        wait_flushed(peer.as_ref());
        peers.push(peer);
    }
    let keys: BTreeSet<[u8; 32]> = peers.iter().map(|p| p.public_key()).collect();
    for p in &peers {
        let mut others = keys.clone();
        others.remove(&p.public_key());
        wait_connected_to(p.as_ref(), &others);
    }
    assert_one_connection_per_pair(&peers);

    // Every peer says one line, then "end"; every other peer must get each line once.
    for (i, p) in peers.iter().enumerate() {
        p.send(&format!("line {i}"));
    }
    for p in &peers {
        p.send("end");
    }
    for p in &peers {
        let st = wait_until(p.as_ref(), WAIT, "every line and every end", |st| {
            st.data.iter().filter(|(_, d)| d == "end").count() == peers.len() - 1
        });
        // Each write is one secret-stream message, and arrives as one.
        let mut lines: BTreeMap<[u8; 32], Vec<String>> = BTreeMap::new();
        for (from, data) in st.data.iter().filter(|(_, d)| d != "end") {
            lines.entry(*from).or_default().push(data.clone());
        }
        assert_eq!(
            lines.len(),
            peers.len() - 1,
            "{} peer heard every other peer",
            p.kind()
        );
        for (from, got) in &lines {
            let i = peers.iter().position(|q| q.public_key() == *from).unwrap();
            assert_eq!(
                got,
                &vec![format!("line {i}")],
                "{} peer got line {i} once",
                p.kind()
            );
        }
    }
    for p in peers {
        p.destroy();
    }
}

/// 20 rounds of two peers that announce, then dial each other at the same instant, Rust with
/// Rust and Rust with JS: one connection survives every time, the same at both ends, and
/// carries a line each way.
///
/// The dials come from `joinPeer` (hyperswarm's dial by key), not from a topic lookup: a
/// Rust lookup answers in less time than the JS one, so with lookups the Rust dial often
/// reached the JS peer before its own lookup returned, and JS, already connected, did not
/// dial (both dialled in only 5 to 8 of 20 Rust-JS rounds on an idle machine).
#[test]
fn simultaneous_dials_leave_one_connection() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(5).unwrap();
    for with_js in [false, true] {
        let mut races = 0;
        for round in 0..20u8 {
            let topic = [round ^ if with_js { 0x80 } else { 0 }; 32];
            let seed_a = [0x10, round, with_js as u8].repeat(11)[..32]
                .try_into()
                .unwrap();
            let seed_b = [0x20, round, with_js as u8].repeat(11)[..32]
                .try_into()
                .unwrap();
            let mut spec_a = PeerSpec::new(&net.bootstrap, seed_a, topic);
            spec_a.join = Some(JoinOptions::server_only());
            let mut spec_b = PeerSpec::new(&net.bootstrap, seed_b, topic);
            spec_b.join = Some(JoinOptions::server_only());
            let a = rust(&spec_a);
            let b = if with_js { js(&spec_b) } else { rust(&spec_b) };
            for p in [&a, &b] {
                wait_flushed(p.as_ref());
            }
            b.join_peer(a.public_key());
            a.join_peer(b.public_key());
            for (p, q) in [(&a, &b), (&b, &a)] {
                wait_connected_to(p.as_ref(), &BTreeSet::from([q.public_key()]));
            }
            // Both dials are done once each swarm is flushed; then one connection is left.
            a.flush();
            b.flush();
            let deadline = Instant::now() + WAIT;
            loop {
                let (ca, cb) = (a.connections(), b.connections());
                if ca.len() == 1 && cb.len() == 1 && ca.values().next() != cb.values().next() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round} ({}): connections {ca:?} / {cb:?}",
                    if with_js { "Rust-JS" } else { "Rust-Rust" }
                );
                // A duplicate's close is on its way: look again shortly.
                let _ = (drain(a.as_ref()), drain(b.as_ref()));
                std::thread::park_timeout(Duration::from_millis(100));
            }
            if a.attempted() >= 1 && b.attempted() >= 1 {
                races += 1;
            }
            a.send("ping from a");
            b.send("ping from b");
            for (p, want) in [(&a, "ping from b"), (&b, "ping from a")] {
                wait_until(p.as_ref(), WAIT, "the other's line", |st| {
                    st.data.iter().any(|(_, d)| d == want)
                });
            }
            a.destroy();
            b.destroy();
        }
        eprintln!(
            "{}: both ends dialled in {races} of 20 rounds",
            if with_js { "Rust-JS" } else { "Rust-Rust" }
        );
        assert!(
            races >= 10,
            "the rounds must race: both dialled in only {races} of 20"
        );
    }
}

/// A Rust peer that firewalls a JS key and a JS peer that firewalls a Rust key: neither pair
/// connects, in either direction; the pair that may connect does.
#[test]
fn firewalled_keys_are_refused_both_ways() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(5).unwrap();
    let topic = [0x52; 32];
    let j1 = js(&PeerSpec::new(&net.bootstrap, [0x71; 32], topic));
    let mut spec_r = PeerSpec::new(&net.bootstrap, [0x72; 32], topic);
    spec_r.firewall = vec![j1.public_key()];
    let r = rust(&spec_r);
    let mut spec_j2 = PeerSpec::new(&net.bootstrap, [0x73; 32], topic);
    spec_j2.firewall = vec![r.public_key()];
    let j2 = js(&spec_j2);
    for p in [&j1, &r, &j2] {
        wait_flushed(p.as_ref());
    }
    wait_connected_to(j1.as_ref(), &BTreeSet::from([j2.public_key()]));
    for p in [&j1, &r, &j2] {
        p.flush();
    }
    assert!(
        r.connections().is_empty(),
        "the Rust peer connects to nobody"
    );
    assert_eq!(
        j1.connections().keys().copied().collect::<Vec<_>>(),
        vec![j2.public_key()]
    );
    assert_eq!(
        j2.connections().keys().copied().collect::<Vec<_>>(),
        vec![j1.public_key()]
    );
    for p in [j1, r, j2] {
        p.destroy();
    }
}

/// A client-only peer with `max_peers = 2` in a topic of four servers dials two of them and
/// stops there, in Rust as in JS.
#[test]
fn max_peers_holds() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(5).unwrap();
    let topic = [0x53; 32];
    let mut servers = Vec::new();
    for i in 0..4u8 {
        let mut spec = PeerSpec::new(&net.bootstrap, [0x80 + i; 32], topic);
        spec.join = Some(JoinOptions::server_only());
        let p = if i % 2 == 0 { rust(&spec) } else { js(&spec) };
        wait_flushed(p.as_ref());
        servers.push(p);
    }
    for kind in ["Rust", "JS"] {
        let mut spec = PeerSpec::new(
            &net.bootstrap,
            [if kind == "Rust" { 0x90 } else { 0x91 }; 32],
            topic,
        );
        spec.join = Some(JoinOptions::client_only());
        spec.max_peers = Some(2);
        let c = if kind == "Rust" {
            rust(&spec)
        } else {
            js(&spec)
        };
        wait_flushed(c.as_ref());
        c.flush();
        assert_eq!(c.connections().len(), 2, "{kind}: max_peers 2 holds");
        assert_eq!(c.attempted(), 2, "{kind}: no dial past max_peers");
        c.destroy();
    }
    for p in servers {
        p.destroy();
    }
}

/// Four peers in a mesh with short retry periods; one (JS, then Rust) leaves: the others
/// redial it at most three times and forget it. Restarted with the same seed, it is
/// reconnected by everyone.
#[test]
fn a_peer_that_leaves_is_given_up_and_one_that_returns_is_reconnected() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(5).unwrap();
    let topic = [0x54; 32];
    let backoffs = Some([200, 400, 600, 800]);
    let spec = |seed: u8| {
        let mut s = PeerSpec::new(&net.bootstrap, [seed; 32], topic);
        s.backoffs = backoffs;
        s
    };
    // One after another: two peers whose joins overlap can each look the topic up before the
    // other's announce is stored, and then meet only at the next refresh (hyperswarm's
    // REFRESH_INTERVAL, 10 minutes, in lib/peer-discovery.js), in JS as in Rust.
    let mut peers: Vec<Box<dyn SwarmPeer>> = Vec::new();
    for (seed, is_js) in [(0xa0, false), (0xa1, true), (0xa2, false), (0xa3, true)] {
        let peer = if is_js {
            js(&spec(seed))
        } else {
            rust(&spec(seed))
        };
        wait_flushed(peer.as_ref());
        peers.push(peer);
    }
    let keys: BTreeSet<[u8; 32]> = peers.iter().map(|p| p.public_key()).collect();
    for p in &peers {
        let mut others = keys.clone();
        others.remove(&p.public_key());
        wait_connected_to(p.as_ref(), &others);
    }
    for leaving in [3usize, 2] {
        let gone = peers.remove(leaving);
        let gone_key = gone.public_key();
        let kind = gone.kind();
        let before: Vec<u64> = peers.iter().map(|p| p.attempted()).collect();
        gone.destroy();
        for p in &peers {
            wait_until(p.as_ref(), WAIT, "the leaver's close", |st| {
                !st.open.contains(&gone_key)
            });
        }
        // The leaver is redialled a few times at most (by the peers that dialled it), then
        // forgotten.
        for (p, before) in peers.iter().zip(&before) {
            let deadline = Instant::now() + WAIT;
            while p.knows(&gone_key) {
                assert!(
                    Instant::now() < deadline,
                    "{} peer still holds the {kind} leaver",
                    p.kind()
                );
                let _ = drain(p.as_ref());
                std::thread::park_timeout(Duration::from_millis(100));
            }
            let redials = p.attempted() - before;
            assert!(
                redials <= 3,
                "{} peer redialled the {kind} leaver {redials} times",
                p.kind()
            );
        }
        // Back with the same seed: everyone connects to it again.
        let back = if kind == "JS" {
            js(&spec(0xa3))
        } else {
            rust(&spec(0xa2))
        };
        assert_eq!(back.public_key(), gone_key);
        let others: BTreeSet<[u8; 32]> = peers.iter().map(|p| p.public_key()).collect();
        wait_connected_to(back.as_ref(), &others);
        for p in &peers {
            wait_until(p.as_ref(), WAIT, "the returning peer", |st| {
                st.open.contains(&gone_key)
            });
        }
        peers.insert(leaving, back);
    }
    for p in peers {
        p.destroy();
    }
}

/// Server-only and client-only joins, Rust and JS: each client connects to every server, no
/// two clients connect (nobody announces them), and no two servers (nobody looks them up).
#[test]
fn server_only_and_client_only_joins_behave_as_in_js() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(5).unwrap();
    let topic = [0x55; 32];
    let mut servers = Vec::new();
    for (i, make) in [rust as fn(&PeerSpec) -> Box<dyn SwarmPeer>, js]
        .into_iter()
        .enumerate()
    {
        let mut spec = PeerSpec::new(&net.bootstrap, [0xb0 + i as u8; 32], topic);
        spec.join = Some(JoinOptions::server_only());
        let p = make(&spec);
        wait_flushed(p.as_ref());
        servers.push(p);
    }
    let server_keys: BTreeSet<[u8; 32]> = servers.iter().map(|p| p.public_key()).collect();
    let mut clients = Vec::new();
    for (i, make) in [rust as fn(&PeerSpec) -> Box<dyn SwarmPeer>, js]
        .into_iter()
        .enumerate()
    {
        let mut spec = PeerSpec::new(&net.bootstrap, [0xc0 + i as u8; 32], topic);
        spec.join = Some(JoinOptions::client_only());
        let p = make(&spec);
        wait_connected_to(p.as_ref(), &server_keys);
        clients.push(p);
    }
    let client_keys: BTreeSet<[u8; 32]> = clients.iter().map(|p| p.public_key()).collect();
    for p in &servers {
        wait_connected_to(p.as_ref(), &client_keys);
    }
    for p in clients.iter().chain(&servers) {
        p.flush();
    }
    for c in &clients {
        let have: BTreeSet<[u8; 32]> = c.connections().keys().copied().collect();
        assert_eq!(have, server_keys, "{} client: the servers only", c.kind());
        assert!(
            c.connections().values().all(|dialled| *dialled),
            "{} client dialled",
            c.kind()
        );
    }
    for s in &servers {
        let have: BTreeSet<[u8; 32]> = s.connections().keys().copied().collect();
        assert_eq!(have, client_keys, "{} server: the clients only", s.kind());
        assert_eq!(s.attempted(), 0, "{} server dials nobody", s.kind());
    }
    for p in clients.into_iter().chain(servers) {
        p.destroy();
    }
}
