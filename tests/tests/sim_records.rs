//! Announce records on the deterministic simulator (`hyperdht_tests::sim`): 1,000 nodes, 100
//! topics with five announcers each. Every lookup finds every live announcer; an unannounce
//! takes effect at once; records expire on the JS schedule (hyperdht keeps announces in a
//! two-generation cache with `maxAge` 20 min that rotates every `ceil(2/3 * maxAge)` = 13m20s, so
//! an announce lives 13m20s..26m40s after its last write); and with 20% of the nodes leaving,
//! lookups still find exactly the announcers that refreshed (every 10 min, like hyperswarm).
//! Replay a failure with `SIM_SEED=<seed>`; `SIM_RECORDS_NODES=<n>` changes the network size.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV4;

use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::event::Record;
use hyperdht_proto::rng::Rng;
use hyperdht_proto::{Event, QueryId, Timestamp};
use hyperdht_tests::sim::{with_seed, NodeIdx, Sim};

/// Topics announced on.
const TOPICS: usize = 100;
/// Announcers per topic.
const ANNOUNCERS: usize = 5;
/// Topics whose announcers re-announce every [`REFRESH_EVERY`]; the others announce once.
const REFRESHED_TOPICS: usize = 70;
/// Topics where the first announcer unannounces (all among the refreshed ones).
const UNANNOUNCED_TOPICS: usize = 10;
/// hyperswarm's re-announce period.
const REFRESH_EVERY: Duration = Duration::from_secs(10 * 60);
/// JS record cache rotation: `ceil(2/3 * 20 min)`. An announce is stored for more than one
/// period and at most two after its last write.
const ROTATION: Duration = Duration::from_millis(800_000);

fn nodes_from_env() -> usize {
    std::env::var("SIM_RECORDS_NODES")
        .ok()
        .map(|s| s.trim().parse().expect("SIM_RECORDS_NODES is a number"))
        .unwrap_or(1000)
}

/// One announcer of one topic.
#[derive(Clone, Debug)]
struct Announcer {
    node: NodeIdx,
    key: KeyPair,
    /// The relay address it announces (its own server address).
    relay: SocketAddrV4,
    /// Start of its latest announce.
    last_start: Timestamp,
    /// End of its latest announce (all commits answered).
    last_end: Timestamp,
    /// Unannounced (and stopped refreshing).
    gone: bool,
}

struct Topic {
    topic: [u8; 32],
    refreshed: bool,
    announcers: Vec<Announcer>,
}

/// Starts announces for `(topic index, announcer index)` pairs, 10 ms apart, and runs until all
/// finished; checks each committed to at least 15 nodes and records its start and end.
fn announce_all(sim: &mut Sim, topics: &mut [Topic], which: &[(usize, usize)]) {
    let mut running: Vec<(usize, usize, NodeIdx, QueryId, Timestamp)> = Vec::new();
    for &(t, a) in which {
        let topic = topics[t].topic;
        let ann = &topics[t].announcers[a];
        let (node, key, relay) = (ann.node, ann.key.clone(), ann.relay);
        let start = sim.now();
        let q = sim.command(node, |n, now| n.announce(now, &topic, &key, vec![relay], 0));
        running.push((t, a, node, q, start));
        sim.run_for(Duration::from_millis(10));
    }
    let limit = sim.now() + Duration::from_secs(120);
    let mut done = 0;
    sim.run_until_condition(limit, |s| {
        while done < running.len() && s.query_result(running[done].2, running[done].3).is_some() {
            done += 1;
        }
        done == running.len()
    });
    for (t, a, node, q, start) in running {
        let commits = sim
            .query_events(node, q)
            .iter()
            .filter(|(_, e)| matches!(e, Event::CommitReply { reply, .. } if reply.error == 0))
            .count();
        let end = sim
            .query_events(node, q)
            .iter()
            .find(|(_, e)| matches!(e, Event::QueryFinished { .. }))
            .map(|(t, _)| *t);
        let result = sim.take_query_result(node, q);
        assert!(
            matches!(result, Some(Ok(_))),
            "announce of topic {t} by {node:?} failed: {result:?}"
        );
        assert!(
            commits >= 15,
            "announce of topic {t} by {node:?} committed to only {commits} nodes"
        );
        let ann = &mut topics[t].announcers[a];
        ann.last_start = start;
        ann.last_end = end.expect("finished");
    }
}

/// What one lookup saw.
struct Found {
    /// Public key -> relay addresses of every peer found.
    peers: BTreeMap<[u8; 32], Vec<SocketAddrV4>>,
}

/// Looks every topic in `which` up from a random live node that announces nothing on it,
/// 20 ms apart, and runs until all lookups finished.
fn lookup_all(sim: &mut Sim, rng: &mut Rng, topics: &[Topic], which: &[usize]) -> Vec<Found> {
    let live: Vec<NodeIdx> = sim.live().collect();
    let mut running = Vec::new();
    for &t in which {
        let from = loop {
            let n = live[rng.below(live.len() as u64) as usize];
            if !topics[t].announcers.iter().any(|a| a.node == n) {
                break n;
            }
        };
        let topic = topics[t].topic;
        let q = sim.command(from, |n, now| n.lookup(now, &topic));
        running.push((from, q));
        sim.run_for(Duration::from_millis(20));
    }
    let limit = sim.now() + Duration::from_secs(120);
    let mut done = 0;
    sim.run_until_condition(limit, |s| {
        while done < running.len() && s.query_result(running[done].0, running[done].1).is_some() {
            done += 1;
        }
        done == running.len()
    });
    let mut out = Vec::new();
    for &(from, q) in &running {
        let mut peers = BTreeMap::new();
        for (_, e) in sim.query_events(from, q) {
            if let Event::RecordFound {
                record: Record::Lookup { peers: ps, .. },
                ..
            } = e
            {
                for p in ps {
                    peers.insert(p.public_key, p.relay_addresses.clone());
                }
            }
        }
        let result = sim.take_query_result(from, q);
        assert!(
            matches!(result, Some(Ok(_))),
            "lookup from {from:?} failed: {result:?}"
        );
        out.push(Found { peers });
    }
    for (from, _) in running {
        sim.take_events(from);
    }
    out
}

/// Counts of a batch of lookups against expectations.
#[derive(Default, Debug)]
struct Tally {
    lookups: usize,
    /// Expected announcers found / expected.
    found: usize,
    expected: usize,
    /// Lookups that found every expected announcer.
    complete: usize,
    /// Announcers found that should be gone.
    stale: usize,
}

/// Checks lookups of `which`: every announcer for which `expect(topic, announcer)` is
/// `Some(true)` must be found with its relay address, none with `Some(false)`; `None` is either.
fn check(
    label: &str,
    now: Timestamp,
    topics: &[Topic],
    which: &[usize],
    found: &[Found],
    expect: impl Fn(&Topic, &Announcer) -> Option<bool>,
) -> Tally {
    let mut tally = Tally::default();
    for (&t, f) in which.iter().zip(found) {
        tally.lookups += 1;
        let mut complete = true;
        for a in &topics[t].announcers {
            let pk = a.key.public_key();
            let got = f.peers.get(&pk);
            let want = expect(&topics[t], a);
            if want == Some(true) {
                tally.expected += 1;
                match got {
                    Some(relays) => {
                        assert_eq!(
                            relays,
                            &vec![a.relay],
                            "{label}: relay addresses of topic {t}"
                        );
                        tally.found += 1;
                    }
                    None => {
                        complete = false;
                        eprintln!("{label}: topic {t}: announcer {:?} not found", a.node);
                    }
                }
            } else if want == Some(false) && got.is_some() {
                tally.stale += 1;
                eprintln!(
                    "{label}: topic {t}: announcer {:?} found but should be gone",
                    a.node
                );
            }
        }
        if complete {
            tally.complete += 1;
        }
    }
    println!(
        "{label} (t = {:.0} s): {}/{} lookups complete, {}/{} announcers found, {} stale",
        now.as_millis() as f64 / 1000.0,
        tally.complete,
        tally.lookups,
        tally.found,
        tally.expected,
        tally.stale
    );
    tally
}

fn assert_perfect(t: &Tally, label: &str) {
    assert_eq!(t.complete, t.lookups, "{label}: {t:?}");
    assert_eq!(t.stale, 0, "{label}: {t:?}");
}

#[test]
fn thousand_nodes_announce_lookup_expire_and_survive_churn() {
    with_seed("records", 2024, |seed| {
        let wall = std::time::Instant::now();
        let n = nodes_from_env();
        let mut sim = Sim::new(seed);
        let net = sim.build_dht(3, n, Duration::from_millis(100), Duration::from_secs(120));
        sim.run_for(Duration::from_secs(30));
        let built = wall.elapsed();
        let mut rng = Rng::from_seed(hyperdht_proto::crypto::hash(&seed.to_le_bytes()));

        // 100 topics, each with 5 distinct announcers picked among the peers.
        let mut topics: Vec<Topic> = (0..TOPICS)
            .map(|t| {
                let mut chosen = BTreeSet::new();
                while chosen.len() < ANNOUNCERS {
                    chosen.insert(net.peers[rng.below(net.peers.len() as u64) as usize]);
                }
                Topic {
                    topic: rng.bytes32(),
                    refreshed: t < REFRESHED_TOPICS,
                    announcers: chosen
                        .into_iter()
                        .map(|node| Announcer {
                            node,
                            key: KeyPair::from_seed(&rng.bytes32()),
                            relay: sim.server_addr(node).expect("bound"),
                            last_start: Timestamp::ZERO,
                            last_end: Timestamp::ZERO,
                            gone: false,
                        })
                        .collect(),
                }
            })
            .collect();
        let all_topics: Vec<usize> = (0..TOPICS).collect();
        let all_pairs: Vec<(usize, usize)> = (0..TOPICS)
            .flat_map(|t| (0..ANNOUNCERS).map(move |a| (t, a)))
            .collect();
        let refreshing = |topics: &[Topic], sim: &Sim| -> Vec<(usize, usize)> {
            let mut v = Vec::new();
            for (t, topic) in topics.iter().enumerate() {
                for (a, ann) in topic.announcers.iter().enumerate() {
                    if topic.refreshed && !ann.gone && sim.is_alive(ann.node) {
                        v.push((t, a));
                    }
                }
            }
            v
        };

        // Announce everything; every lookup finds all five.
        let start = sim.now();
        announce_all(&mut sim, &mut topics, &all_pairs);
        let announced = sim.now();
        let found = lookup_all(&mut sim, &mut rng, &topics, &all_topics);
        let t = check("fresh", sim.now(), &topics, &all_topics, &found, |_, _| {
            Some(true)
        });
        assert_perfect(&t, "fresh");

        // Unannounce: gone at once, the others stay.
        let unannounced: Vec<usize> = (0..UNANNOUNCED_TOPICS).collect();
        let mut running = Vec::new();
        for &t in &unannounced {
            let ann = &mut topics[t].announcers[0];
            ann.gone = true;
            let (node, key, topic) = (ann.node, ann.key.clone(), topics[t].topic);
            let q = sim.command(node, |n, now| n.unannounce(now, &topic, &key));
            running.push((node, q));
        }
        let limit = sim.now() + Duration::from_secs(60);
        sim.run_until_condition(limit, |s| {
            running
                .iter()
                .all(|(n, q)| s.query_result(*n, *q).is_some())
        });
        for (node, q) in running {
            let r = sim.take_query_result(node, q);
            assert!(matches!(r, Some(Ok(_))), "unannounce by {node:?}: {r:?}");
        }
        let found = lookup_all(&mut sim, &mut rng, &topics, &unannounced);
        let t = check(
            "unannounced",
            sim.now(),
            &topics,
            &unannounced,
            &found,
            |_, a| Some(!a.gone),
        );
        assert_perfect(&t, "unannounced");

        // Refreshers re-announce every 10 min from the first announce on.
        let mut next_refresh = start + REFRESH_EVERY;
        let advance =
            |sim: &mut Sim, topics: &mut Vec<Topic>, next: &mut Timestamp, to: Timestamp| {
                while *next <= to {
                    sim.run_until(*next);
                    let pairs = refreshing(topics, sim);
                    announce_all(sim, topics, &pairs);
                    *next += REFRESH_EVERY;
                }
                sim.run_until(to);
            };

        // Right after the first refresh round, 20% of the peers leave (announcers among them,
        // and about a fifth of every topic's storing nodes); the survivors keep refreshing.
        advance(
            &mut sim,
            &mut topics,
            &mut next_refresh,
            start + REFRESH_EVERY + Duration::from_secs(20),
        );
        let mut victims = BTreeSet::new();
        while victims.len() < net.peers.len() / 5 {
            victims.insert(net.peers[rng.below(net.peers.len() as u64) as usize]);
        }
        for &v in &victims {
            sim.kill(v);
        }
        let killed_announcers = topics
            .iter()
            .flat_map(|t| t.announcers.iter())
            .filter(|a| victims.contains(&a.node))
            .count();
        let churn_at = sim.now();
        // Dead announcers may still be listed until their last write expires.
        let live_or_either = |want: bool, a: &Announcer, sim: &Sim| {
            if sim.is_alive(a.node) {
                Some(want)
            } else {
                None
            }
        };

        // Shortly before the first rotation after the first writes, even one-shot announces
        // are found (also from the announcers that left).
        let before_expiry = start + (ROTATION - Duration::from_secs(60));
        advance(&mut sim, &mut topics, &mut next_refresh, before_expiry);
        let found = lookup_all(&mut sim, &mut rng, &topics, &all_topics);
        assert!(sim.now() < start + ROTATION);
        let t = check(
            "12 min, after churn",
            sim.now(),
            &topics,
            &all_topics,
            &found,
            |_, a| live_or_either(!a.gone, a, &sim),
        );
        assert_perfect(&t, "12 min, after churn");

        // Two rotations after the one-shot writes those are gone, from live and dead announcers
        // alike; the live refreshers are all found.
        let after_expiry = announced + 2 * ROTATION + Duration::from_secs(30);
        advance(&mut sim, &mut topics, &mut next_refresh, after_expiry);
        let found = lookup_all(&mut sim, &mut rng, &topics, &all_topics);
        let t = check(
            "27 min",
            sim.now(),
            &topics,
            &all_topics,
            &found,
            |topic, a| {
                if !topic.refreshed {
                    Some(false)
                } else {
                    live_or_either(!a.gone, a, &sim)
                }
            },
        );
        assert_perfect(&t, "27 min");

        // Once the dead refreshers' last writes are two rotations old, lookups list exactly the
        // live refreshers.
        let last_dead_write = topics
            .iter()
            .flat_map(|t| t.announcers.iter())
            .filter(|a| victims.contains(&a.node))
            .map(|a| a.last_end)
            .max()
            .unwrap_or(churn_at);
        let settled = (last_dead_write + 2 * ROTATION + Duration::from_secs(30)).max(sim.now());
        advance(&mut sim, &mut topics, &mut next_refresh, settled);
        let found = lookup_all(&mut sim, &mut rng, &topics, &all_topics);
        let t = check(
            "settled",
            sim.now(),
            &topics,
            &all_topics,
            &found,
            |topic, a| Some(topic.refreshed && !a.gone && sim.is_alive(a.node)),
        );
        assert_perfect(&t, "settled");

        let stats = sim.stats();
        println!(
            "records: {n} nodes, {TOPICS} topics x {ANNOUNCERS} announcers; {} peers killed \
             ({killed_announcers} announcers) at {:.0} s; virtual {:.0} s, {} datagrams, \
             {} timer wake-ups; wall {:.1} s (build {:.1} s)",
            victims.len(),
            churn_at.as_millis() as f64 / 1000.0,
            sim.now().as_millis() as f64 / 1000.0,
            stats.sent,
            stats.timer_wakeups,
            wall.elapsed().as_secs_f64(),
            built.as_secs_f64()
        );
    });
}
