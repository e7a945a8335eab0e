//! Unit tests of the swarm's bookkeeping on a node with no network (what needs peers runs in
//! the simulator and against Node.js in `tests/`).

use super::*;
use crate::Config;

fn node() -> Node {
    let mut node = Node::new(
        Config::bootstrapper("127.0.0.1:49739".parse().unwrap()),
        [1; 32],
        Timestamp::ZERO,
    );
    while let Some(op) = node.poll_socket_op() {
        if let crate::SocketOp::Bind { socket, addr } = op {
            let port = if addr.port() == 0 { 40001 } else { addr.port() };
            let bound = std::net::SocketAddr::new((*addr.ip()).into(), port);
            node.handle_socket_bound(Timestamp::ZERO, socket, bound);
        }
    }
    node
}

#[test]
fn joining_needs_a_role_and_a_live_swarm() {
    let mut node = node();
    let mut swarm = Swarm::new(SwarmConfig::from_seed(&[2; 32]), [3; 32]);
    let none = JoinOptions {
        server: false,
        client: false,
    };
    assert_eq!(
        swarm.join(Timestamp::ZERO, &mut node, [4; 32], none),
        Err(ApiError::NoRole)
    );
    swarm
        .join(
            Timestamp::ZERO,
            &mut node,
            [4; 32],
            JoinOptions::client_only(),
        )
        .unwrap();
    assert!(!swarm.is_flushed(&[4; 32]), "its lookup runs");
    swarm.destroy(Timestamp::ZERO, &mut node);
    assert_eq!(
        swarm.join(Timestamp::ZERO, &mut node, [5; 32], JoinOptions::default()),
        Err(ApiError::Closed)
    );
}

#[test]
fn our_own_key_is_never_a_peer() {
    let mut node = node();
    let config = SwarmConfig::from_seed(&[2; 32]);
    let own = config.key_pair.public_key();
    let mut swarm = Swarm::new(config, [3; 32]);
    swarm.join_peer(Timestamp::ZERO, &mut node, own);
    assert!(swarm.peer(&own).is_none());
    assert_eq!(swarm.connections_and_dials(), 0);
}

#[test]
fn an_explicit_peer_is_dialled_and_a_failed_dial_retried() {
    let mut node = node();
    let mut swarm = Swarm::new(SwarmConfig::from_seed(&[2; 32]), [3; 32]);
    swarm.join_peer(Timestamp::ZERO, &mut node, [9; 32]);
    assert_eq!(swarm.connecting(), 1);
    let conn = swarm.connection_to(&[9; 32]).unwrap();
    let failed = Event::ConnectFailed {
        conn,
        reason: crate::ConnectError::PeerNotFound,
    };
    assert!(swarm
        .handle_event(Timestamp::ZERO, &mut node, failed)
        .is_some());
    assert_eq!(swarm.connecting(), 0);
    let peer = swarm.peer(&[9; 32]).unwrap();
    assert_eq!(peer.attempts, 1);
    assert!(peer.waiting, "explicit peers wait in a retry timer");
    assert!(swarm.poll_timeout().is_some());
}

#[test]
fn the_firewall_refuses_dials_and_bans() {
    let mut node = node();
    let config = SwarmConfig::from_seed(&[2; 32]).with_firewall(|k| k[0] == 9);
    let mut swarm = Swarm::new(config, [3; 32]);
    swarm.join_peer(Timestamp::ZERO, &mut node, [9; 32]);
    assert_eq!(swarm.connecting(), 0);
    assert!(swarm.peer(&[9; 32]).unwrap().banned);
    assert_eq!(swarm.stats().refused, 1);
    let dropped = std::iter::from_fn(|| swarm.poll_event()).any(|e| {
        matches!(
            e,
            SwarmEvent::Dropped {
                reason: DropReason::Firewalled,
                ..
            }
        )
    });
    assert!(dropped);
    // The server's gate refuses the key too.
    assert!(!swarm.gate.lock().check_incoming(&[9; 32]));
    assert!(swarm.gate.lock().check_incoming(&[8; 32]));
}

/// The lookup query a topic's refresh runs, for feeding it replies.
fn refresh_query(swarm: &Swarm, topic: &[u8; 32]) -> QueryId {
    swarm.discoveries[topic].query.expect("a refresh runs").0
}

fn junk_peer(i: u32) -> crate::wire::hyperdht::Peer {
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(&i.to_le_bytes());
    key[31] = 0xee;
    crate::wire::hyperdht::Peer {
        public_key: key,
        relay_addresses: vec!["10.0.0.1:49737".parse().unwrap(); 5],
    }
}

/// A topic flooded with 10,000 announced peers (and replies listing far more than a storing
/// node keeps): the swarm remembers at most `max_known_peers`, dials `max_parallel` at once,
/// keeps at most 3 relay addresses per peer, and counts every peer it did not take.
#[test]
fn a_flooded_topic_is_bounded_and_counted() {
    let mut node = node();
    let mut config = SwarmConfig::from_seed(&[2; 32]);
    config.max_known_peers = 500;
    let mut swarm = Swarm::new(config, [3; 32]);
    let topic = [4; 32];
    swarm
        .join(
            Timestamp::ZERO,
            &mut node,
            topic,
            JoinOptions::client_only(),
        )
        .unwrap();
    let q = refresh_query(&swarm, &topic);
    let from: std::net::SocketAddrV4 = "10.0.0.2:49737".parse().unwrap();
    // 400 replies of 25 peers each: 10,000 peers, 5 over the per-reply cap in each reply.
    let mut next = 0u32;
    for _ in 0..400 {
        let peers: Vec<_> = (0..25).map(|k| junk_peer(next + k)).collect();
        next += 25;
        let ev = Event::RecordFound {
            id: q,
            from,
            record: crate::event::Record::Lookup { peers, bump: 0 },
        };
        assert!(swarm.handle_event(Timestamp::ZERO, &mut node, ev).is_none());
    }
    let stats = swarm.stats();
    assert_eq!(stats.peers_cut, 400 * 5, "5 of each 25 cut");
    assert_eq!(
        swarm.peers().count(),
        500,
        "no more than max_known_peers remembered"
    );
    assert_eq!(
        stats.peers_not_stored,
        400 * 20 - 500,
        "every peer not stored is counted"
    );
    assert_eq!(swarm.connecting(), MAX_PARALLEL, "three dials at once");
    assert!(swarm.queued() <= 500);
    assert!(swarm
        .peers()
        .all(|p| p.relay_addresses.len() <= crate::dht::store::MAX_RELAY_ADDRESSES));
    // The events queued meanwhile are few: dials are not events, updates are merged.
    let events = std::iter::from_fn(|| swarm.poll_event()).count();
    assert!(events <= 2, "{events} events");
}

fn connected(conn: ConnId, remote: [u8; 32]) -> Event {
    Event::Connected {
        conn,
        socket: crate::SocketId::SERVER,
        remote: "10.0.0.3:50000".parse().unwrap(),
        remote_public_key: remote,
        is_initiator: false,
        handshake_hash: [0; 64],
    }
}

/// A peer's connection through the swarm's server: the accepted handshake (kept by the swarm),
/// then the open path. Returns whether the swarm keeps the connection (passes `Connected` on).
fn accept_from(swarm: &mut Swarm, node: &mut Node, conn: ConnId, remote: [u8; 32]) -> bool {
    let server = swarm.server.expect("the swarm listens");
    let incoming = Event::Incoming {
        server,
        conn,
        remote_public_key: remote,
    };
    assert!(swarm
        .handle_event(Timestamp::ZERO, node, incoming)
        .is_none());
    swarm
        .handle_event(Timestamp::ZERO, node, connected(conn, remote))
        .is_some()
}

/// A peer that connects over and over: each new connection replaces the one before (JS
/// keeps the newer when the older carried data, else the one the higher key opened); the
/// swarm holds one connection and one peer record for it, and counts each duplicate.
#[test]
fn a_peer_that_reconnects_over_and_over_holds_one_connection() {
    let mut node = node();
    let mut swarm = Swarm::new(SwarmConfig::from_seed(&[2; 32]), [3; 32]);
    swarm
        .join(
            Timestamp::ZERO,
            &mut node,
            [4; 32],
            JoinOptions::server_only(),
        )
        .unwrap();
    // A key above ours keeps the connections it opens: every new one replaces the last.
    let remote = [0xff; 32];
    assert!(remote > swarm.public_key());
    for i in 0..1000u64 {
        assert!(accept_from(
            &mut swarm,
            &mut node,
            ConnId(1_000_000 + i),
            remote
        ));
    }
    assert_eq!(swarm.connections(), 1);
    assert_eq!(swarm.connection_to(&remote), Some(ConnId(1_000_999)));
    assert_eq!(swarm.stats().duplicates, 999);
    assert_eq!(swarm.peers().count(), 1);
    assert_eq!(
        swarm.conns.len(),
        1,
        "no state left for the replaced connections"
    );
    // A key below ours: we keep the connection we have, the new ones are refused.
    let low = [0x00; 32];
    for i in 0..10u64 {
        let kept = accept_from(&mut swarm, &mut node, ConnId(2_000_000 + i), low);
        assert_eq!(kept, i == 0, "only the first is kept");
    }
    assert_eq!(swarm.connection_to(&low), Some(ConnId(2_000_000)));
    assert!(swarm.incoming.is_empty());
}

/// A driver that polls late holds a bounded queue: past [`MAX_QUEUED_DROPS`], drops caused by
/// remote peers are only counted.
#[test]
fn the_drop_events_a_peer_can_cause_are_bounded() {
    let mut node = node();
    let mut swarm = Swarm::new(SwarmConfig::from_seed(&[2; 32]), [3; 32]);
    swarm
        .join(
            Timestamp::ZERO,
            &mut node,
            [4; 32],
            JoinOptions::server_only(),
        )
        .unwrap();
    let low = [0x00; 32];
    for i in 0..3000u64 {
        accept_from(&mut swarm, &mut node, ConnId(3_000_000 + i), low);
    }
    let drops = std::iter::from_fn(|| swarm.poll_event())
        .filter(|e| matches!(e, SwarmEvent::Dropped { .. }))
        .count();
    assert_eq!(drops, MAX_QUEUED_DROPS);
    assert_eq!(
        swarm.stats().events_not_queued,
        2999 - MAX_QUEUED_DROPS as u64
    );
    // Polled, the queue takes drops again.
    accept_from(&mut swarm, &mut node, ConnId(4_000_000), low);
    assert!(matches!(
        swarm.poll_event(),
        Some(SwarmEvent::Dropped { .. })
    ));
}
