//! Hyperswarm in the simulator: 100 swarm peers join one topic one after the other, on open
//! hosts and behind consistent (port-restricted) and randomising (symmetric) NATs, over a
//! 20-node DHT. Every pair that can punch (all but random with random, which hyperdht refuses
//! as `DOUBLE_RANDOMIZED_NATS`) ends up with one connection, the same one at both ends, and
//! the same seed gives the same transcript. Also: refusing a duplicate connection sends a
//! keep-alive on the one kept.

use core::time::Duration;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hyperdht_proto::swarm::{JoinOptions, Swarm, SwarmConfig};
use hyperdht_proto::Config;
use hyperdht_tests::sim::{with_seed, NatConfig, NodeIdx, Sim};

/// Where a peer sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Open,
    Consistent,
    Random,
}

/// The place of peer `i`: 40% open, 30% consistent NAT, 30% randomising NAT.
fn place_of(i: usize) -> Place {
    match i % 10 {
        0..=3 => Place::Open,
        4..=6 => Place::Consistent,
        _ => Place::Random,
    }
}

fn can_punch(a: Place, b: Place) -> bool {
    !(a == Place::Random && b == Place::Random)
}

/// What one run ended with.
struct Run {
    hash: u64,
    /// Pairs that can punch and are connected, of those that can punch.
    connected: usize,
    punchable: usize,
    /// Virtual time until the last punchable pair connected.
    took: Duration,
}

fn run(seed: u64, n: usize) -> Run {
    let mut sim = Sim::new(seed);
    sim.set_host_base(Ipv4Addr::new(37, 0, 0, 0));
    let net = sim.build_dht(3, 20, Duration::from_millis(50), Duration::from_secs(60));
    let topic = [0x5a; 32];
    let start = sim.now();
    let mut peers: Vec<(NodeIdx, Place)> = Vec::new();
    for i in 0..n {
        let place = place_of(i);
        let cfg = Config::new(net.bootstrap.clone());
        let binding = Duration::from_secs(120);
        let idx = match place {
            Place::Open => sim.add_node(cfg),
            Place::Consistent => {
                let nat = sim.add_nat(NatConfig::port_restricted(binding));
                sim.add_node_behind(nat, cfg)
            }
            Place::Random => {
                let nat = sim.add_nat(NatConfig::symmetric(binding));
                sim.add_node_behind(nat, cfg)
            }
        };
        let limit = sim.now() + Duration::from_secs(30);
        assert!(
            sim.run_until_condition(limit, |s| s.node(idx).is_bootstrapped()),
            "peer {i} bootstraps"
        );
        let mut config = SwarmConfig::from_seed(&hyperdht_proto::crypto::hash(&[i as u8, 1]));
        config.max_peers = 2 * n;
        sim.attach_swarm(
            idx,
            Swarm::new(config, hyperdht_proto::crypto::hash(&[i as u8, 2])),
        );
        sim.swarm_command(idx, |swarm, node, now| {
            swarm
                .join(now, node, topic, JoinOptions::default())
                .unwrap();
        });
        peers.push((idx, place));
        sim.run_for(Duration::from_secs(1));
    }
    let keys: Vec<[u8; 32]> = peers
        .iter()
        .map(|(i, _)| sim.swarm(*i).public_key())
        .collect();
    let punchable = (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .filter(|&(a, b)| can_punch(peers[a].1, peers[b].1))
        .count();
    let connected_pairs = |sim: &Sim| {
        let sets: Vec<BTreeMap<[u8; 32], bool>> = peers
            .iter()
            .map(|(i, _)| {
                sim.swarm(*i)
                    .open_connections()
                    .map(|c| (c.remote_public_key, c.client))
                    .collect()
            })
            .collect();
        let mut connected = 0;
        for a in 0..n {
            for b in a + 1..n {
                if !can_punch(peers[a].1, peers[b].1) {
                    continue;
                }
                if let (Some(x), Some(y)) = (sets[a].get(&keys[b]), sets[b].get(&keys[a])) {
                    // One connection, the same at both ends: one side dialled it.
                    if x != y {
                        connected += 1;
                    }
                }
            }
        }
        connected
    };
    let limit = sim.now() + Duration::from_secs(3600);
    let mut connected = 0;
    while sim.now() < limit {
        sim.run_for(Duration::from_secs(5));
        connected = connected_pairs(&sim);
        if connected == punchable {
            break;
        }
    }
    let took = sim.now().saturating_since(start);
    // No peer holds two connections to one key, and no duplicate is left open at either end.
    for (i, _) in &peers {
        let sw = sim.swarm(*i);
        let open: Vec<[u8; 32]> = sw.open_connections().map(|c| c.remote_public_key).collect();
        let mut dedup = open.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(open.len(), dedup.len(), "one connection per key");
    }
    Run {
        hash: sim.transcript_hash(),
        connected,
        punchable,
        took,
    }
}

#[test]
fn a_hundred_peers_meet_every_peer_they_can_punch_to() {
    with_seed("sim_swarm_mesh", 0x5a00_0001, |seed| {
        let n = std::env::var("SIM_SWARM_PEERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        let r = run(seed, n);
        eprintln!(
            "{n} peers: {} of {} punchable pairs connected after {:?} of virtual time",
            r.connected, r.punchable, r.took
        );
        assert_eq!(
            r.connected, r.punchable,
            "every pair that can punch connects"
        );
    });
}

#[test]
fn the_same_seed_gives_the_same_transcript() {
    with_seed("sim_swarm_transcript", 0x5a00_0002, |seed| {
        let a = run(seed, 12);
        let b = run(seed, 12);
        assert_eq!(a.connected, a.punchable);
        assert_eq!(a.hash, b.hash, "same seed, same run");
    });
}

/// When a peer dials us again while our connection to it is fine (it carried nothing from us
/// yet, and our key sorts higher, so the tie-break keeps ours), the swarm refuses the new
/// connection and sends a keep-alive on the one it keeps (JS `existing.sendKeepAlive()`): the
/// peer reads a data frame on that connection right after the refusal, well before any
/// periodic keep-alive (5 s after the last write) would have sent one.
#[test]
fn refusing_a_duplicate_sends_a_keep_alive_on_the_connection_kept() {
    use hyperdht_proto::dht::KeyPair;
    use hyperdht_proto::swarm::JoinOptions;

    let mut sim = Sim::new(7);
    sim.set_host_base(Ipv4Addr::new(37, 0, 0, 0));
    let net = sim.build_dht(3, 12, Duration::from_millis(50), Duration::from_secs(60));
    // `a` must sort higher: it is then the expected initiator and keeps its own connection.
    let mut keys = [
        hyperdht_proto::crypto::hash(b"dup a"),
        hyperdht_proto::crypto::hash(b"dup b"),
    ];
    let pk = |seed: &[u8; 32]| KeyPair::from_seed(seed).public_key();
    if pk(&keys[0]) < pk(&keys[1]) {
        keys.swap(0, 1);
    }
    let mut idx = Vec::new();
    for (i, seed) in keys.iter().enumerate() {
        let n = sim.add_node(Config::new(net.bootstrap.clone()));
        let limit = sim.now() + Duration::from_secs(30);
        assert!(sim.run_until_condition(limit, |s| s.node(n).is_bootstrapped()));
        sim.attach_swarm(
            n,
            Swarm::new(SwarmConfig::from_seed(seed), [i as u8 + 1; 32]),
        );
        let server_only = JoinOptions {
            client: false,
            ..JoinOptions::default()
        };
        sim.swarm_command(n, |swarm, node, now| {
            swarm.join(now, node, [0x77; 32], server_only).unwrap();
        });
        idx.push(n);
    }
    let (a, b) = (idx[0], idx[1]);
    let (a_pk, b_pk) = (sim.swarm(a).public_key(), sim.swarm(b).public_key());
    assert!(a_pk > b_pk);
    sim.run_for(Duration::from_secs(10));

    // `a` dials `b`; once both ends hold it, `b` writes (so `b` has written and `a` read).
    sim.swarm_command(a, |swarm, node, now| swarm.join_peer(now, node, b_pk));
    let limit = sim.now() + Duration::from_secs(60);
    assert!(
        sim.run_until_condition(limit, |s| {
            s.swarm(a).connection_to(&b_pk).is_some() && s.swarm(b).connection_to(&a_pk).is_some()
        }),
        "a connects to b"
    );
    let opened = sim.now();
    let kept = sim.swarm(b).connection_to(&a_pk).unwrap();
    let a_side = sim.swarm(a).connection_to(&b_pk);
    sim.command(b, |n, now| n.conn(kept).write(now, b"from b"))
        .expect("write");
    assert!(
        !sim.node(b)
            .conn_info(kept)
            .is_some_and(|i| i.carried_data_both_ways),
        "nothing from a on it yet"
    );

    // `b`'s node dials `a` again, past its swarm: `a`'s swarm refuses the duplicate.
    let b_key = KeyPair::from_seed(&keys[1]);
    sim.command(b, |n, now| n.connect(now, &a_pk, &b_key));
    let limit = sim.now() + Duration::from_secs(30);
    let mut before = None;
    assert!(
        sim.run_until_condition(limit, |s| {
            let refused = s.swarm(a).stats().duplicates == 1;
            if refused {
                before = Some(
                    s.node(b)
                        .conn_info(kept)
                        .is_some_and(|i| i.carried_data_both_ways),
                );
            }
            refused
        }),
        "a saw the duplicate"
    );
    let refused_at = sim.now();
    assert!(
        refused_at.saturating_since(opened) < Duration::from_secs(4),
        "refused before a periodic keep-alive is due ({:?} after opening)",
        refused_at.saturating_since(opened)
    );
    assert_eq!(
        before,
        Some(false),
        "the keep-alive was not there before the refusal"
    );
    assert_eq!(
        sim.swarm(a).connection_to(&b_pk),
        a_side,
        "a kept its own connection"
    );
    sim.run_for(Duration::from_millis(500));
    assert!(
        sim.node(b)
            .conn_info(kept)
            .is_some_and(|i| i.carried_data_both_ways),
        "b read a's keep-alive on the connection kept"
    );
    assert_eq!(
        sim.swarm(b).connection_to(&a_pk),
        Some(kept),
        "the connection kept is the first"
    );
}
