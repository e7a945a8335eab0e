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
