//! Peers that bind the default host (0.0.0.0) on a small loopback network: one bootstrap node on
//! 127.0.0.1, a server node and client nodes bound to 0.0.0.0, as `hyperdht-chat node
//! --bootstrap none` plus a chat server and client set it up (or a library user's
//! `Config::new(vec![boot])`).
//!
//! With a single DHT node to sample, both peers stay firewalled with an UNKNOWN NAT, and the
//! server advertises its interface address (reserved or elsewhere, not a LAN shortcut over the
//! loopback). The connection rests on the client's fast-open probe to the server's puncher
//! socket (the address the relay saw the handshake reply come from) and the server's echo; the
//! relayed probe round makes the server re-roll that socket as unstable. Before the fix the
//! round beat the probe, the socket closed under it and the server aborted: every connect
//! failed ("server aborted the holepunch"). All 20 must succeed, under both drivers.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::{Config, ConnectOptions, ServerConfig};
use hyperdht_tests::support::{logs, v4};

const CONNECTS: usize = 20;

/// A config on the default host (0.0.0.0), any free port, bootstrapping from `boot`.
fn default_host_config(boot: SocketAddrV4) -> Config {
    let mut c = Config::new(vec![boot]);
    assert_eq!(c.host, Ipv4Addr::UNSPECIFIED, "the default host is 0.0.0.0");
    c.port = 0;
    c
}

fn report(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {CONNECTS} connects failed: {failures:#?}",
        failures.len()
    );
}

#[test]
fn mio_peers_on_the_default_host_connect_every_time() {
    use hyperdht_mio::MioNode;
    logs();
    let boot_node = MioNode::spawn(Config::bootstrapper(SocketAddrV4::new(
        Ipv4Addr::LOCALHOST,
        0,
    )))
    .expect("spawn the bootstrap node");
    boot_node.wait_bootstrapped().expect("bootstrap node");
    report(&mio_connects(v4(boot_node.local_addr()), 0x0a));
}

/// A mio server on 0.0.0.0 and 20 fresh mio client nodes on 0.0.0.0, each connecting once;
/// the failures.
fn mio_connects(boot: SocketAddrV4, seed: u8) -> Vec<String> {
    use hyperdht_mio::MioNode;
    let server_node = MioNode::spawn(default_host_config(boot)).expect("spawn the server node");
    server_node
        .wait_bootstrapped()
        .expect("server node bootstraps");
    let server_key = KeyPair::from_seed(&[seed; 32]);
    let _server = server_node
        .listen(&server_key, ServerConfig::default())
        .expect("listen");
    let mut failures = Vec::new();
    for i in 0..CONNECTS {
        let client_node = MioNode::spawn(default_host_config(boot)).expect("spawn a client node");
        client_node
            .wait_bootstrapped()
            .expect("client node bootstraps");
        let me = KeyPair::from_seed(&[seed.wrapping_add(i as u8 + 1); 32]);
        match client_node.connect_with(
            server_key.public_key(),
            ConnectOptions::default().with_key_pair(&me),
        ) {
            Ok(conn) => assert_eq!(conn.remote_public_key(), server_key.public_key()),
            Err(e) => failures.push(format!("connect {i}: {e}")),
        }
        client_node.shutdown();
    }
    failures
}

/// The same through a Node.js bootstrap node (on 127.0.0.1, the harness binds nothing else):
/// the JS node relays the handshakes and the probe rounds.
#[test]
fn mio_peers_on_the_default_host_connect_through_a_js_bootstrap_node() {
    use hyperdht_tests::js::{interop_enabled, JsHarness};
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().expect("harness");
    // Two persistent, unfirewalled JS nodes: the whole network (a lone JS node keeps a random
    // id, which Rust nodes do not take into their tables).
    let net = h.testnet(2).expect("JS bootstrap nodes");
    report(&mio_connects(net.bootstrap[0], 0x30));
    h.shutdown().expect("harness shutdown");
}

/// `f`, or a panic naming `what` after 30 s (every wait is bounded; nothing sleeps).
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let step = Duration::from_secs(30);
    let out = futures_lite::future::or(async { Some(f.await) }, async {
        smol::Timer::after(step).await;
        None
    })
    .await;
    out.unwrap_or_else(|| panic!("{what} took longer than {step:?}"))
}

/// An async node for `config`, its driver spawned on smol, once bootstrapped.
async fn async_node(config: Config) -> hyperdht_async_std::AsyncNode {
    let (node, driver) = hyperdht_async_std::bind(config).await.expect("bind");
    smol::spawn(driver).detach();
    bounded("bootstrap", node.wait_bootstrapped())
        .await
        .expect("bootstrap");
    node
}

#[test]
fn async_peers_on_the_default_host_connect_every_time() {
    logs();
    smol::block_on(async {
        let boot_node = async_node(Config::bootstrapper(SocketAddrV4::new(
            Ipv4Addr::LOCALHOST,
            0,
        )))
        .await;
        let boot = v4(boot_node.local_addr());
        let server_node = async_node(default_host_config(boot)).await;
        let server_key = KeyPair::from_seed(&[0x0b; 32]);
        let _server = server_node
            .listen(&server_key, ServerConfig::default())
            .await
            .expect("listen");

        let mut failures = Vec::new();
        for i in 0..CONNECTS {
            let client_node = async_node(default_host_config(boot)).await;
            let me = KeyPair::from_seed(&[i as u8 + 0x41; 32]);
            let result = bounded(
                "a connect",
                client_node.connect_with(
                    server_key.public_key(),
                    ConnectOptions::default().with_key_pair(&me),
                ),
            )
            .await;
            match result {
                Ok(conn) => assert_eq!(conn.remote_public_key(), server_key.public_key()),
                Err(e) => failures.push(format!("connect {i}: {e}")),
            }
            client_node.shutdown().await;
        }
        report(&failures);
    });
}
