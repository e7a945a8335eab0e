//! Hyperswarm in the simulator: 100 swarm peers join one topic one after the other, on open
//! hosts and behind consistent (port-restricted) and randomising (symmetric) NATs, over a
//! 20-node DHT. Every pair that can punch (all but random with random, which hyperdht refuses
//! as `DOUBLE_RANDOMIZED_NATS`) ends up with one connection, the same one at both ends, and
//! the same seed gives the same transcript.

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
                    .map(|(k, _, client)| (k, client))
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
        let open: Vec<[u8; 32]> = sw.open_connections().map(|(k, _, _)| k).collect();
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
