//! Hyperswarm on the async driver: three nodes on a private network on 127.0.0.1 join one
//! topic and end up in a full mesh, one connection per pair; when one destroys its swarm, the
//! two others see its connections close, and so does the last one when another swarm is
//! dropped.
//!
//! Every wait is bounded by a timeout; nothing sleeps to synchronise.

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use hyperdht_async_std::{AsyncNode, Config, JoinOptions, Swarm, SwarmConfig, SwarmConnection};

const STEP: Duration = Duration::from_secs(30);

/// Logs to the test output when RUST_LOG is set.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// `f`, or a panic naming `what` after `d`.
async fn timeout<T>(d: Duration, what: &str, f: impl Future<Output = T>) -> T {
    let out = futures_lite::future::or(async { Some(f.await) }, async {
        async_io::Timer::after(d).await;
        None
    })
    .await;
    match out {
        Some(v) => v,
        None => panic!("timed out after {d:?}: {what}"),
    }
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("IPv4 expected"),
    }
}

/// Binds a node, spawns its driver and waits for its bootstrap.
async fn start(config: Config) -> AsyncNode {
    let (node, driver) = hyperdht_async_std::bind(config).await.expect("bind");
    async_std::task::spawn(driver);
    timeout(STEP, "bootstrap", node.wait_bootstrapped())
        .await
        .expect("bootstrap");
    node
}

/// The swarm's next two connections, by remote key (each checked against its peer info).
async fn two_connections(swarm: &Swarm) -> HashMap<[u8; 32], SwarmConnection> {
    let mut got = HashMap::new();
    for _ in 0..2 {
        let c = timeout(STEP, "a swarm connection", swarm.accept())
            .await
            .expect("the swarm is alive");
        let remote = c.connection.remote_public_key();
        assert_eq!(c.peer.public_key, remote, "peer info and connection agree");
        assert_eq!(
            c.peer.client,
            c.connection.is_initiator(),
            "peer.client: we dialled"
        );
        assert!(
            got.insert(remote, c).is_none(),
            "two connections to one peer"
        );
    }
    got
}

#[async_std::test]
async fn three_swarms_mesh_on_a_topic_and_see_one_leave() {
    logs();
    let boot = start(Config::bootstrapper(SocketAddrV4::new(
        [127, 0, 0, 1].into(),
        0,
    )))
    .await;
    let boot_addr = v4(boot.local_addr());
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start(Config::local(vec![boot_addr])).await);
    }

    // Each swarm is announced before the next one looks the topic up, so each finds the ones
    // before it and dials them: every pair meets once, by one dial.
    let topic = [0x5a; 32];
    let mut swarms = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let swarm = node
            .swarm(SwarmConfig::from_seed(&[i as u8 + 1; 32]))
            .await
            .expect("swarm");
        swarm.join(topic, JoinOptions::default()).expect("join");
        let flushed = timeout(STEP, "the topic is flushed", swarm.flushed(topic))
            .await
            .expect("flushed");
        assert!(flushed, "the announce and lookup succeeded");
        swarms.push(swarm);
    }
    let keys: Vec<[u8; 32]> = swarms.iter().map(Swarm::public_key).collect();

    // Full mesh: each swarm has a connection to each of the two others.
    let mut conns = Vec::new();
    for (i, swarm) in swarms.iter().enumerate() {
        let got = two_connections(swarm).await;
        for (j, key) in keys.iter().enumerate() {
            assert_eq!(got.contains_key(key), i != j, "swarm {i} and swarm {j}");
        }
        conns.push(got);
    }

    // The two ends of each pair are one connection: one side dialled, and a message each way
    // arrives on the other end.
    for i in 0..3 {
        for j in i + 1..3 {
            let here = &conns[i][&keys[j]].connection;
            let there = &conns[j][&keys[i]].connection;
            assert_ne!(here.is_initiator(), there.is_initiator(), "pair {i}-{j}");
            let hello = [i as u8, j as u8];
            here.send_message(&hello).await.expect("send");
            let got = timeout(STEP, "the message", there.recv_message()).await;
            assert_eq!(got.expect("recv").as_deref(), Some(&hello[..]));
            there.send_message(&hello[..1]).await.expect("send back");
            let got = timeout(STEP, "the answer", here.recv_message()).await;
            assert_eq!(got.expect("recv").as_deref(), Some(&hello[..1]));
        }
    }
    for (i, swarm) in swarms.iter().enumerate() {
        let info = swarm.info().expect("info");
        assert_eq!(info.connections, 2, "swarm {i}");
        assert_eq!(info.stats.duplicates, 0, "swarm {i}: no pair met twice");
        assert_eq!(info.topics, vec![topic]);
    }

    // The third swarm leaves by destroying itself: the others see its connections close, and
    // keep theirs.
    let third = swarms.pop().expect("three swarms");
    timeout(STEP, "destroy", third.destroy()).await;
    for (i, swarm) in swarms.iter().enumerate() {
        let gone = &conns[i][&keys[2]].connection;
        let end = timeout(STEP, "the third swarm's connection closes", async {
            loop {
                match gone.recv_message().await {
                    Ok(Some(_)) => continue,
                    end => break end,
                }
            }
        })
        .await;
        assert!(gone.close_reason().is_some(), "swarm {i}: closed ({end:?})");
        assert_eq!(swarm.info().expect("info").connections, 1, "swarm {i}");
    }
    let (a, b) = (
        &conns[0][&keys[1]].connection,
        &conns[1][&keys[0]].connection,
    );
    a.send_message(b"still here").await.expect("send");
    let got = timeout(STEP, "a message after the leave", b.recv_message()).await;
    assert_eq!(got.expect("recv").as_deref(), Some(&b"still here"[..]));

    // The destroyed swarm hands out nothing more and its own ends are closed.
    assert!(timeout(STEP, "the stream ends", third.accept())
        .await
        .is_none());
    assert!(third.info().is_err(), "the swarm is gone");
    for c in conns[2].values() {
        let end = timeout(STEP, "our end closes", c.connection.recv_message()).await;
        assert!(end.is_err(), "reset: {end:?}");
    }

    // Dropping a swarm destroys it in the background: the last pair's connection closes too.
    let second = swarms.pop().expect("two swarms");
    drop(swarms);
    let end = timeout(
        STEP,
        "the first swarm's connection closes",
        b.recv_message(),
    )
    .await;
    assert!(end.is_err(), "reset: {end:?}");
    assert_eq!(second.info().expect("info").connections, 0);
}
