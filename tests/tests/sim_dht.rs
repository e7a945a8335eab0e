//! DHT scenarios on the deterministic simulator (`hyperdht_tests::sim`): a 500-node network
//! bootstrapping from 3 bootstrap nodes and answering FIND_NODE with the true closest nodes,
//! same-seed determinism, and churn. Replay a failure with `SIM_SEED=<seed>`.

use core::time::Duration;
use std::collections::BTreeSet;
use std::net::SocketAddrV4;

use hyperdht_proto::rng::Rng;
use hyperdht_proto::{Config, Event, NodeId, Persistence, QueryId, Timestamp};
use hyperdht_tests::sim::{closest_ids, with_seed, LinkConfig, NodeIdx, Sim};

/// A simulated network: 3 bootstrap nodes and `peers`.
struct Net {
    sim: Sim,
    boots: Vec<NodeIdx>,
    peers: Vec<NodeIdx>,
}

/// Builds a network of 3 bootstrap nodes and `n` persistent, firewalled-until-proven peers that
/// join `stagger` apart, and runs until every peer has bootstrapped.
fn build(seed: u64, n: usize, stagger: Duration) -> Net {
    build_with(seed, n, stagger, LinkConfig::default())
}

/// [`build`] over links described by `link`.
fn build_with(seed: u64, n: usize, stagger: Duration, link: LinkConfig) -> Net {
    let mut sim = Sim::new(seed);
    sim.set_link(link);
    let boot_addrs: Vec<SocketAddrV4> = (0..3)
        .map(|_| SocketAddrV4::new(sim.alloc_host(), 49737))
        .collect();
    let mut boots = Vec::new();
    for (i, addr) in boot_addrs.iter().enumerate() {
        let mut cfg = Config::bootstrapper(*addr);
        // Like a testnet: the first bootstrap node starts the network, the others join it.
        cfg.bootstrap = boot_addrs[..i].to_vec();
        boots.push(sim.add_node(cfg));
        sim.run_for(Duration::from_millis(500));
    }
    let mut peers = Vec::new();
    for _ in 0..n {
        sim.run_for(stagger);
        let mut cfg = Config::new(boot_addrs.clone());
        cfg.persistence = Persistence::Persistent;
        peers.push(sim.add_node(cfg));
    }
    let deadline = sim.now() + Duration::from_secs(120);
    while sim.now() < deadline && !peers.iter().all(|p| sim.node(*p).is_bootstrapped()) {
        sim.run_for(Duration::from_secs(1));
    }
    for &p in &peers {
        assert!(
            sim.node(p).is_bootstrapped(),
            "node {p:?} did not bootstrap: {:?}",
            sim.events(p)
        );
    }
    Net { sim, boots, peers }
}

/// Ids of the live persistent nodes, each checked to be `H(server address)`.
fn persistent_ids(sim: &Sim) -> Vec<(NodeIdx, NodeId)> {
    sim.live()
        .filter_map(|i| {
            let id = sim.node(i).id()?;
            let addr = sim.server_addr(i).expect("bound");
            assert_eq!(id, NodeId::from_addr(&addr), "node {i:?} has a wrong id");
            Some((i, id))
        })
        .collect()
}

/// Outcome of a batch of FIND_NODE queries.
struct Batch {
    total: usize,
    /// Queries that found exactly the true 20 closest.
    exact: usize,
    /// Queries that did not finish or failed.
    failed: usize,
    /// True closest nodes found, summed over the queries.
    found: usize,
}

impl Batch {
    fn rate(&self) -> f64 {
        self.exact as f64 / self.total as f64
    }

    /// Mean number of the true 20 closest nodes a query found.
    fn mean_found(&self) -> f64 {
        self.found as f64 / self.total as f64
    }
}

/// Runs `count` FIND_NODE queries for random targets from random live persistent nodes (started
/// `gap` apart) and compares each result with the brute-force 20 closest live persistent nodes.
fn query_batch(sim: &mut Sim, rng: &mut Rng, count: usize, gap: Duration) -> Batch {
    query_batch_quiet(sim, rng, count, gap, false)
}

/// [`query_batch`]; `quiet` leaves out the line per inexact query.
fn query_batch_quiet(
    sim: &mut Sim,
    rng: &mut Rng,
    count: usize,
    gap: Duration,
    quiet: bool,
) -> Batch {
    let nodes = persistent_ids(sim);
    let ids: Vec<NodeId> = nodes.iter().map(|(_, id)| *id).collect();
    let mut running: Vec<(NodeIdx, QueryId, NodeId)> = Vec::new();
    for _ in 0..count {
        let (from, _) = nodes[rng.below(nodes.len() as u64) as usize];
        let target = NodeId(rng.bytes32());
        let q = sim.find_node(from, target);
        running.push((from, q, target));
        sim.run_for(gap);
    }
    let deadline = sim.now() + Duration::from_secs(120);
    sim.run_until_condition(deadline, |s| {
        running
            .iter()
            .all(|(i, q, _)| s.query_result(*i, *q).is_some())
    });
    let mut batch = Batch {
        total: count,
        exact: 0,
        failed: 0,
        found: 0,
    };
    for (from, q, target) in running {
        let own = sim.node(from).id();
        let others: Vec<NodeId> = ids.iter().copied().filter(|id| Some(*id) != own).collect();
        let truth: BTreeSet<NodeId> = closest_ids(&others, &target, 20).into_iter().collect();
        match sim.take_query_result(from, q) {
            Some(Ok(replies)) => {
                let got: BTreeSet<NodeId> = replies.iter().filter_map(|r| r.id).collect();
                batch.found += truth.intersection(&got).count();
                if got == truth {
                    batch.exact += 1;
                } else if !quiet {
                    let missing = truth.difference(&got).count();
                    eprintln!(
                        "query from {from:?} to {}: {missing} of the true 20 closest missing ({} replies)",
                        &target.to_hex()[..8],
                        replies.len()
                    );
                }
            }
            other => {
                batch.failed += 1;
                eprintln!("query from {from:?} did not finish well: {other:?}");
            }
        }
    }
    batch
}

/// Total routing-table entries (over live nodes) that point at killed nodes, and all entries.
fn dead_entries(sim: &Sim, dead: &BTreeSet<NodeId>) -> (usize, usize) {
    let mut d = 0;
    let mut all = 0;
    for i in sim.live() {
        for n in sim.node(i).table().iter() {
            all += 1;
            if dead.contains(&n.id) {
                d += 1;
            }
        }
    }
    (d, all)
}

#[test]
fn five_hundred_nodes_find_the_true_closest() {
    with_seed("five_hundred_nodes_find_the_true_closest", 500, |seed| {
        let mut net = build(seed, 500, Duration::from_millis(100));
        let sim = &mut net.sim;
        let persistent = persistent_ids(sim);
        assert_eq!(
            persistent.len(),
            net.peers.len() + net.boots.len(),
            "every node should pass the PING_NAT check and become persistent"
        );
        for &p in &net.peers {
            assert!(!sim.node(p).is_firewalled(), "{p:?} still firewalled");
            assert!(sim
                .events(p)
                .iter()
                .any(|(_, e)| matches!(e, Event::Persistent { .. })));
        }
        // Let the tables settle a little (a few ticks) before measuring.
        sim.run_for(Duration::from_secs(30));
        let mut rng = Rng::from_seed(hyperdht_proto::crypto::hash(&seed.to_le_bytes()));
        let batch = query_batch(sim, &mut rng, 200, Duration::from_millis(50));
        let stats = sim.stats();
        println!(
            "500 nodes: {}/{} queries found the true 20 closest ({:.1}%), {} failed; \
             virtual time {:.1} s, {} datagrams, {} timer wake-ups",
            batch.exact,
            batch.total,
            batch.rate() * 100.0,
            batch.failed,
            sim.now().as_millis() as f64 / 1000.0,
            stats.sent,
            stats.timer_wakeups
        );
        assert!(
            batch.rate() >= 0.95,
            "only {:.1}% of queries found the true closest nodes",
            batch.rate() * 100.0
        );
    });
}

/// A small network with queries, for the determinism checks: its transcript hash.
fn small_run(seed: u64) -> u64 {
    let mut net = build(seed, 40, Duration::from_millis(200));
    let mut rng = Rng::from_seed([7; 32]);
    let batch = query_batch(&mut net.sim, &mut rng, 10, Duration::from_millis(100));
    assert_eq!(batch.failed, 0);
    net.sim.run_for(Duration::from_secs(60));
    net.sim.transcript_hash()
}

#[test]
fn same_seed_same_transcript() {
    with_seed("same_seed_same_transcript", 42, |seed| {
        let a = small_run(seed);
        let b = small_run(seed);
        assert_eq!(a, b, "two runs with seed {seed} diverged");
        let c = small_run(seed ^ 0x5eed);
        assert_ne!(a, c, "a different seed gave the same transcript");
    });
}

#[test]
fn transcript_lines_are_reproducible() {
    with_seed("transcript_lines_are_reproducible", 7, |seed| {
        let run = || {
            let mut sim = Sim::new(seed);
            sim.keep_transcript(true);
            let boot = SocketAddrV4::new(sim.alloc_host(), 49737);
            sim.add_node(Config::bootstrapper(boot));
            for _ in 0..5 {
                let mut cfg = Config::new(vec![boot]);
                cfg.persistence = Persistence::Persistent;
                sim.add_node(cfg);
                sim.run_for(Duration::from_millis(30));
            }
            sim.run_until(Timestamp::from_millis(20_000));
            (
                sim.transcript_hash(),
                sim.transcript_lines().unwrap().to_vec(),
            )
        };
        let (ha, la) = run();
        let (hb, lb) = run();
        assert!(la.len() > 50, "too little happened: {la:#?}");
        assert_eq!(la, lb);
        assert_eq!(ha, hb);
    });
}

#[test]
fn churn_dead_nodes_leave_tables_and_queries_find_live_closest() {
    with_seed("churn", 1234, |seed| {
        let mut net = build(seed, 200, Duration::from_millis(100));
        let sim = &mut net.sim;
        sim.run_for(Duration::from_secs(30));
        let mut rng = Rng::from_seed(hyperdht_proto::crypto::hash(&seed.to_le_bytes()));

        // Kill 10% of the peers (never a bootstrap node).
        let mut victims = BTreeSet::new();
        while victims.len() < net.peers.len() / 10 {
            victims.insert(net.peers[rng.below(net.peers.len() as u64) as usize]);
        }
        let mut dead = BTreeSet::new();
        for &v in &victims {
            dead.insert(sim.node(v).id().expect("persistent"));
            sim.kill(v);
        }
        let (before, all_before) = dead_entries(sim, &dead);
        assert!(before > 0, "nobody knew the killed nodes?");

        // Right away, queries still finish, but they can miss live nodes: every table near the
        // target still lists the dead ones among its 20 closest, which pushes the next live
        // nodes out of the replies until DOWN_HINTs, pings and refreshes clean the tables.
        let early = query_batch_quiet(sim, &mut rng, 50, Duration::from_millis(50), true);
        assert_eq!(early.failed, 0);
        let (after_early, _) = dead_entries(sim, &dead);

        // Tables notice through pings of the oldest entries, refreshes and query timeouts.
        sim.run_for(Duration::from_secs(600));
        let (after, all_after) = dead_entries(sim, &dead);
        let batch = query_batch(sim, &mut rng, 100, Duration::from_millis(50));
        let (after_queries, _) = dead_entries(sim, &dead);
        println!(
            "churn: {} of 200 peers killed; right after: {}/{} queries exact ({:.1}%); dead table \
             entries {before}/{all_before} -> {after_early} after those -> {after}/{all_after} \
             after 10 min -> {after_queries} after more queries; {}/{} queries exact ({:.1}%)",
            victims.len(),
            early.exact,
            early.total,
            early.rate() * 100.0,
            batch.exact,
            batch.total,
            batch.rate() * 100.0
        );
        assert!(
            after * 4 <= before,
            "dead entries went only from {before} to {after}"
        );
        assert!(
            batch.rate() >= 0.95,
            "only {:.1}% of queries found the live closest nodes",
            batch.rate() * 100.0
        );
    });
}

#[test]
fn shutdown_with_requests_in_flight_is_deterministic() {
    with_seed(
        "shutdown_with_requests_in_flight_is_deterministic",
        9,
        |seed| {
            let run = || {
                let mut sim = Sim::new(seed);
                let boot = SocketAddrV4::new(sim.alloc_host(), 49737);
                sim.add_node(Config::bootstrapper(boot));
                let a = sim.add_node(Config::new(vec![boot]));
                sim.run_for(Duration::from_secs(5));
                // Pings to addresses nobody listens on stay in flight; then shut the node down.
                for i in 0..16u8 {
                    let to = SocketAddrV4::new(std::net::Ipv4Addr::new(10, 200, 0, i + 1), 1000);
                    sim.command(a, |n, now| n.ping(now, to));
                }
                sim.run_for(Duration::from_millis(500));
                sim.command(a, |n, now| n.shutdown(now));
                let order: Vec<String> = sim
                    .events(a)
                    .iter()
                    .filter(|(_, e)| matches!(e, Event::RequestDone { .. }))
                    .map(|(_, e)| format!("{e:?}"))
                    .collect();
                assert_eq!(order.len(), 16);
                assert!(matches!(sim.events(a).last(), Some((_, Event::NodeClosed))));
                (order, sim.transcript_hash())
            };
            let (oa, ha) = run();
            let (ob, hb) = run();
            assert_eq!(
                oa, ob,
                "RequestDone order after shutdown differs between runs"
            );
            assert_eq!(ha, hb);
        },
    );
}

#[test]
fn lossy_links_queries_finish_and_find_nearly_all_closest() {
    with_seed("lossy_links", 77, |seed| {
        let link = LinkConfig {
            loss: 0.05,
            ..LinkConfig::default()
        };
        let mut net = build_with(seed, 150, Duration::from_millis(100), link);
        let sim = &mut net.sim;
        sim.run_for(Duration::from_secs(30));
        let mut rng = Rng::from_seed(hyperdht_proto::crypto::hash(&seed.to_le_bytes()));
        let batch = query_batch_quiet(sim, &mut rng, 60, Duration::from_millis(50), true);
        let stats = sim.stats();
        println!(
            "5% loss, 150 nodes: {} persistent; {}/{} queries exact ({:.1}%), {:.2} of the true 20 \
             closest found on average, {} failed; {} of {} datagrams lost",
            persistent_ids(sim).len(),
            batch.exact,
            batch.total,
            batch.rate() * 100.0,
            batch.mean_found(),
            batch.failed,
            stats.lost,
            stats.sent
        );
        // A query ends once only retransmitting ("slow") visits are left and it has k replies
        // (dht-rpc lib/query.js), so under loss a close node whose reply is late can be missed.
        assert_eq!(batch.failed, 0);
        assert!(batch.mean_found() >= 18.0, "{:.2}", batch.mean_found());
    });
}

#[test]
fn taken_ports_fall_back_and_a_restarted_node_rebinds() {
    with_seed("taken_ports", 5, |seed| {
        let mut sim = Sim::new(seed);
        let boot = SocketAddrV4::new(sim.alloc_host(), 49737);
        sim.add_node(Config::bootstrapper(boot));
        // Three nodes on one host: 49737, then 49738, then 49739.
        let shared = sim.alloc_host();
        let mut same_host = Vec::new();
        for _ in 0..3 {
            let mut cfg = Config::new(vec![boot]);
            cfg.host = shared;
            cfg.persistence = Persistence::Persistent;
            same_host.push(sim.add_node(cfg));
        }
        // A fourth insists on 49737 (anyPort false) and cannot run.
        let mut cfg = Config::new(vec![boot]);
        cfg.host = shared;
        cfg.any_port = false;
        let stuck = sim.add_node(cfg);
        assert!(sim
            .events(stuck)
            .iter()
            .any(|(_, e)| matches!(e, Event::BindFailed { .. })));
        sim.run_for(Duration::from_secs(20));
        for (i, &n) in same_host.iter().enumerate() {
            let addr = sim.server_addr(n).unwrap();
            assert_eq!(addr, SocketAddrV4::new(shared, 49737 + i as u16));
            assert_eq!(sim.node(n).id(), Some(NodeId::from_addr(&addr)));
        }

        // Shut the first down: its sockets close, and a new node can take its address.
        let first = same_host[0];
        let addr = sim.server_addr(first).unwrap();
        sim.command(first, |n, now| n.shutdown(now));
        assert!(matches!(
            sim.events(first).last(),
            Some((_, Event::NodeClosed))
        ));
        assert_eq!(sim.server_addr(first), None);
        let mut cfg = Config::new(vec![boot]);
        cfg.host = shared;
        cfg.persistence = Persistence::Persistent;
        let again = sim.add_node(cfg);
        sim.run_for(Duration::from_secs(20));
        assert_eq!(sim.server_addr(again), Some(addr));
        assert_eq!(sim.node(again).id(), Some(NodeId::from_addr(&addr)));
        let found = sim
            .run_find_node(
                same_host[2],
                NodeId::from_addr(&addr),
                Duration::from_secs(30),
            )
            .expect("query finished")
            .expect("query succeeded");
        assert_eq!(found[0].id, Some(NodeId::from_addr(&addr)));
    });
}

#[test]
fn wakeup_after_sleep_turns_adaptive_nodes_ephemeral() {
    with_seed("wakeup", 11, |seed| {
        let mut sim = Sim::new(seed);
        let boot = SocketAddrV4::new(sim.alloc_host(), 49737);
        sim.add_node(Config::bootstrapper(boot));
        let mut nodes = Vec::new();
        for _ in 0..12 {
            // Adaptive (the default): ephemeral first, persistent after ~20 stable minutes.
            nodes.push(sim.add_node(Config::new(vec![boot])));
            sim.run_for(Duration::from_millis(200));
        }
        sim.run_for(Duration::from_secs(60));
        assert!(nodes.iter().all(|n| sim.node(*n).id().is_none()));
        sim.run_for(Duration::from_secs(25 * 60));
        for &n in &nodes {
            assert!(
                sim.node(n).id().is_some(),
                "adaptive node {n:?} not persistent after 25 min"
            );
        }
        // Put every node to sleep for a minute, one tick phase after another (dht-rpc bumps the
        // tick by 720 and realigns it to `tick & 7 == 6`, whatever it was).
        let start = sim.now();
        let mut slept = BTreeSet::new();
        while slept.len() < 8 && sim.now() < start + Duration::from_secs(600) {
            for &n in &nodes {
                let phase = sim.node(n).tick() & 7;
                if !sim.is_asleep(n) && !slept.iter().any(|(p, _)| *p == phase) {
                    slept.insert((phase, n));
                    sim.suspend(n, sim.now() + Duration::from_secs(60));
                }
            }
            sim.run_for(Duration::from_secs(1));
        }
        assert_eq!(slept.len(), 8, "not every tick phase was tried");
        sim.run_for(Duration::from_secs(70));
        for &(phase, n) in &slept {
            let node = sim.node(n);
            assert!(
                node.id().is_none(),
                "{n:?} (phase {phase}) still persistent"
            );
            assert!(sim
                .events(n)
                .iter()
                .any(|(_, e)| matches!(e, Event::Ephemeral)));
        }
        // 60 min (MORE_STABLE_TICKS) later they check again and are persistent once more.
        sim.run_for(Duration::from_secs(62 * 60));
        for &(phase, n) in &slept {
            let node = sim.node(n);
            let addr = sim.server_addr(n).unwrap();
            assert_eq!(
                node.id(),
                Some(NodeId::from_addr(&addr)),
                "{n:?} (phase {phase}) not persistent again"
            );
        }
    });
}

#[test]
fn ephemeral_clients_stay_out_of_tables_and_find_the_closest() {
    with_seed("ephemeral_clients", 21, |seed| {
        let mut net = build(seed, 80, Duration::from_millis(100));
        let sim = &mut net.sim;
        let boots: Vec<SocketAddrV4> = net
            .boots
            .iter()
            .map(|b| sim.server_addr(*b).unwrap())
            .collect();
        let mut clients = Vec::new();
        for _ in 0..10 {
            let mut cfg = Config::new(boots.clone());
            cfg.persistence = Persistence::Ephemeral;
            clients.push(sim.add_node(cfg));
            sim.run_for(Duration::from_millis(300));
        }
        sim.run_for(Duration::from_secs(30));
        let client_hosts: BTreeSet<_> = clients.iter().map(|c| sim.host(*c)).collect();
        for i in sim.live() {
            for n in sim.node(i).table().iter() {
                assert!(
                    !client_hosts.contains(n.addr.ip()),
                    "{i:?} has the ephemeral client {} in its table",
                    n.addr
                );
            }
        }
        let ids: Vec<NodeId> = persistent_ids(sim).into_iter().map(|(_, id)| id).collect();
        assert_eq!(ids.len(), 83);
        let mut rng = Rng::from_seed([21; 32]);
        for &c in &clients {
            assert!(sim.node(c).is_bootstrapped() && sim.node(c).id().is_none());
            let target = NodeId(rng.bytes32());
            let replies = sim
                .run_find_node(c, target, Duration::from_secs(60))
                .expect("finished")
                .expect("succeeded");
            let got: BTreeSet<NodeId> = replies.iter().filter_map(|r| r.id).collect();
            let truth: BTreeSet<NodeId> = closest_ids(&ids, &target, 20).into_iter().collect();
            assert_eq!(got, truth, "client {c:?}");
        }
    });
}
