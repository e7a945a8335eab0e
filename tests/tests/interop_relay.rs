//! Blind relays between Rust and the real Node.js hyperdht 6.34 and blind-relay 1.6 on
//! 127.0.0.1. A server that refuses every holepunch and shares no local address, and a client
//! with `fastOpen` off, can only meet through a blind relay, named by the client
//! (`relayThrough` in its handshake; it pairs as initiator) or by the server (in its reply;
//! the client pairs as the other side). Every pairing of Rust and JS clients and servers goes
//! through the JS relay, and JS and Rust peers go through a Rust relay (mio and async); data
//! must flow end to end, and the relay must have linked the pair. Also: a relay nobody serves
//! fails the attempt cleanly, and a relay that loses the race to a direct path is dropped.

use std::io::{Read, Write};
use std::net::SocketAddrV4;

use serde_json::{json, Value};

use hyperdht_mio::{MioNode, Server};
use hyperdht_proto::crypto::{from_hex, to_hex};
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::{Config, ConnectOptions};
use hyperdht_tests::js::{interop_enabled, JsHarness, JsTestnet};
use hyperdht_tests::support::{logs, loopback_config, spawn_bootstrapped};

fn call(h: &JsHarness, cmd: &str, args: Value) -> Value {
    h.call(cmd, args)
        .unwrap_or_else(|e| panic!("JS {cmd} failed: {e}"))
}

fn key_of(v: &Value) -> [u8; 32] {
    from_hex(v.as_str().unwrap()).unwrap().try_into().unwrap()
}

/// A JS node that stays firewalled (no quick reachability check), as in hyperdht's relay
/// tests.
fn js_node(h: &JsHarness, boot: &[SocketAddrV4]) -> Value {
    let boot: Vec<String> = boot.iter().map(|a| a.to_string()).collect();
    call(
        h,
        "createNode",
        json!({"bootstrap": boot, "quickFirewall": false}),
    )["node"]
        .clone()
}

/// A JS testnet and a JS blind relay on a node of its own (named by `seed`).
struct RelayLab {
    h: JsHarness,
    net: JsTestnet,
    /// `createRelay`'s answer: the relay's handle and key.
    relay: Value,
    key: [u8; 32],
}

impl RelayLab {
    fn new(seed: &str) -> RelayLab {
        let h = JsHarness::new().unwrap();
        let net = h.testnet(6).unwrap();
        let relay_node = js_node(&h, &net.bootstrap);
        let relay = call(
            &h,
            "createRelay",
            json!({"node": relay_node, "seed": seed.repeat(32)}),
        );
        let key = key_of(&relay["publicKey"]);
        RelayLab { h, net, relay, key }
    }
}

/// A JS echo server (key from `seed`) that refuses every holepunch and shares no local
/// address, naming `relay` in its replies if given; returns its key.
fn js_relay_only_server(
    h: &JsHarness,
    boot: &[SocketAddrV4],
    seed: &str,
    relay: Option<[u8; 32]>,
) -> [u8; 32] {
    let node = js_node(h, boot);
    let mut listen = json!({"node": node, "seed": seed.repeat(32), "neverPunch": true});
    if let Some(key) = relay {
        listen["relayThrough"] = json!(to_hex(&key));
    }
    key_of(&call(h, "listen", listen)["publicKey"])
}

/// A firewalled Rust client off the LAN shortcut: it can reach the server only by a punch
/// (which the server refuses) or a relay.
fn rust_client(boot: &[SocketAddrV4]) -> MioNode {
    spawn_bootstrapped(firewalled_config(boot))
}

/// A loopback config off the LAN shortcut and without the quick reachability check.
fn firewalled_config(boot: &[SocketAddrV4]) -> Config {
    let mut c = loopback_config(boot);
    c.local_connection = false;
    c.quick_firewall = false;
    c
}

/// Connects through the relay, echoes a message, and checks both sides' relay counters.
fn relayed_echo(server_names_relay: bool) {
    logs();
    if !interop_enabled() {
        return;
    }
    let RelayLab {
        h,
        net,
        relay,
        key: relay_key,
    } = RelayLab::new("7e");
    let named = server_names_relay.then_some(relay_key);
    let server_key = js_relay_only_server(&h, &net.bootstrap, "5a", named);

    let client = rust_client(&net.bootstrap);
    // No session to the server in the first round (JS `fastOpen: false`, as in hyperdht's
    // relay tests): otherwise the server's fast-mode ping opens a direct path on loopback.
    let mut options = ConnectOptions::default();
    options.fast_open = false;
    if !server_names_relay {
        options.relay_through = Some(relay_key);
    }
    let mut conn = client
        .connect_with(
            server_key,
            options.with_key_pair(&KeyPair::from_seed(&[0xc8; 32])),
        )
        .expect("the Rust client connects through the blind relay");
    assert_eq!(conn.remote_public_key(), server_key);

    let message = b"hello through the blind relay";
    conn.writer.write_all(message).unwrap();
    let mut echo = vec![0u8; message.len()];
    conn.reader.read_exact(&mut echo).expect("echo");
    assert_eq!(&echo, message);

    let stats = client.info().unwrap().stats.relaying;
    assert_eq!(
        (stats.attempts, stats.successes),
        (1, 1),
        "the Rust client paired through the relay: {stats:?}"
    );
    let relay_stats = call(&h, "relayStats", json!({"relay": relay["relay"]}));
    assert_eq!(
        relay_stats["pairings"]["matched"], 1,
        "the JS relay matched our pairing: {relay_stats}"
    );
    assert_eq!(
        relay_stats["streams"]["opened"], 2,
        "the JS relay carries both streams: {relay_stats}"
    );
}

#[test]
fn rust_client_names_a_js_relay_to_reach_a_js_server() {
    relayed_echo(false);
}

#[test]
fn js_server_names_a_js_relay_for_a_rust_client() {
    relayed_echo(true);
}

#[test]
fn a_relay_nobody_serves_fails_the_connection_with_a_reason() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(6).unwrap();
    let server_key = js_relay_only_server(&h, &net.bootstrap, "5b", None);
    let client = rust_client(&net.bootstrap);
    let mut options = ConnectOptions::default();
    options.fast_open = false;
    options.relay_through = Some(KeyPair::from_seed(&[0x99; 32]).public_key());
    // Whichever fails last names the reason, as in JS: the relay (not found) or the punch
    // (refused by the server).
    use hyperdht_proto::ConnectError::{RelayAborted, RemoteAborted};
    match client.connect_with(
        server_key,
        options.with_key_pair(&KeyPair::from_seed(&[0xc9; 32])),
    ) {
        Err(hyperdht_mio::Error::Connect(RelayAborted | RemoteAborted)) => {}
        other => panic!("expected the relay or the punch to fail, got {other:?}"),
    }
    let stats = client.info().unwrap().stats.relaying;
    assert_eq!((stats.attempts, stats.successes, stats.aborts), (1, 0, 1));
}

#[test]
fn async_rust_client_through_a_relay_the_js_server_names() {
    logs();
    if !interop_enabled() {
        return;
    }
    let RelayLab {
        h,
        net,
        relay,
        key: relay_key,
    } = RelayLab::new("7f");
    let server_key = js_relay_only_server(&h, &net.bootstrap, "5c", Some(relay_key));
    let config = firewalled_config(&net.bootstrap);
    let (echo, relaying) = smol::block_on(async {
        use futures_lite::{AsyncReadExt, AsyncWriteExt};
        let (node, driver) = hyperdht_async_std::bind(config).await.expect("bind");
        smol::spawn(driver).detach();
        node.wait_bootstrapped().await.expect("bootstrap");
        let mut options = ConnectOptions::default();
        options.fast_open = false;
        let mut conn = node
            .connect_with(
                server_key,
                options.with_key_pair(&KeyPair::from_seed(&[0xca; 32])),
            )
            .await
            .expect("the async client connects through the blind relay");
        conn.write_all(b"async relay").await.unwrap();
        let mut echo = [0u8; 11];
        conn.read_exact(&mut echo).await.unwrap();
        (echo, node.info().unwrap().stats.relaying)
    });
    assert_eq!(&echo, b"async relay");
    assert_eq!(
        (relaying.attempts, relaying.successes),
        (1, 1),
        "{relaying:?}"
    );
    let relay_stats = call(&h, "relayStats", json!({"relay": relay["relay"]}));
    assert_eq!(relay_stats["pairings"]["matched"], 1, "{relay_stats}");
}

/// A Rust echo server that refuses every holepunch and hides its LAN addresses, so a client
/// reaches it only through a blind relay; `relay_through` makes it name one itself.
fn rust_relay_only_server(
    boot: &[SocketAddrV4],
    seed: u8,
    relay_through: Option<[u8; 32]>,
) -> (MioNode, [u8; 32]) {
    let mut c = loopback_config(boot);
    c.quick_firewall = false;
    let node = spawn_bootstrapped(c);
    let key = KeyPair::from_seed(&[seed; 32]);
    let mut config = hyperdht_proto::ServerConfig::default();
    config.holepunch = false;
    config.hide_local_addresses = true;
    config.relay_through = relay_through;
    let server = node.listen(&key, config).expect("listen");
    std::thread::spawn(move || {
        while let Ok(event) = server.events().recv() {
            if let hyperdht_mio::ServerEvent::Connected(conn) = event {
                std::thread::spawn(move || {
                    let mut reader = conn.reader;
                    let mut writer = conn.writer;
                    let _ = std::io::copy(&mut reader, &mut writer);
                    let _ = writer.finish();
                });
            }
        }
    });
    (node, key.public_key())
}

/// A JS client reaches a Rust server through a JS relay, named by the client (`js_names`) or
/// by the Rust server. The Rust server's only path is the relay (its stats say it paired and
/// took the relay's path), so the echo proves the JS side went through the relay too.
fn js_client_to_rust_server(js_names: bool) {
    logs();
    if !interop_enabled() {
        return;
    }
    let RelayLab {
        h,
        net,
        relay,
        key: relay_key,
    } = RelayLab::new("6e");
    let (server, server_key) =
        rust_relay_only_server(&net.bootstrap, 0x5d, (!js_names).then_some(relay_key));
    let client = js_node(&h, &net.bootstrap);
    let mut args = json!({
        "node": client,
        "publicKey": to_hex(&server_key),
        "message": to_hex(b"js through the relay"),
        "fastOpen": false,
        "localConnection": false,
    });
    if js_names {
        args["relayThrough"] = json!(to_hex(&relay_key));
    }
    let echo = call(&h, "connectEcho", args);
    assert_eq!(echo["echo"], to_hex(b"js through the relay"));
    let stats = server.info().unwrap().stats.relaying;
    assert_eq!(
        (stats.attempts, stats.successes),
        (1, 1),
        "the Rust server paired through the relay: {stats:?}"
    );
    let relay_stats = call(&h, "relayStats", json!({"relay": relay["relay"]}));
    assert_eq!(relay_stats["pairings"]["matched"], 1, "{relay_stats}");
}

#[test]
fn js_client_names_a_js_relay_to_reach_a_rust_server() {
    js_client_to_rust_server(true);
}

#[test]
fn rust_server_names_a_js_relay_for_a_js_client() {
    js_client_to_rust_server(false);
}

#[test]
fn rust_client_and_rust_server_through_a_js_relay() {
    logs();
    if !interop_enabled() {
        return;
    }
    let RelayLab {
        h,
        net,
        relay,
        key: relay_key,
    } = RelayLab::new("6f");
    let (server, server_key) = rust_relay_only_server(&net.bootstrap, 0x5e, None);
    let client = rust_client(&net.bootstrap);
    let mut options = ConnectOptions::default();
    options.fast_open = false;
    options.relay_through = Some(relay_key);
    let mut conn = client
        .connect_with(
            server_key,
            options.with_key_pair(&KeyPair::from_seed(&[0xcb; 32])),
        )
        .expect("Rust reaches Rust through the JS relay");
    conn.writer.write_all(b"rust to rust").unwrap();
    let mut echo = [0u8; 12];
    conn.reader.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"rust to rust");
    for (side, node) in [("client", &client), ("server", &server)] {
        let stats = node.info().unwrap().stats.relaying;
        assert_eq!(
            (stats.attempts, stats.successes),
            (1, 1),
            "{side}: {stats:?}"
        );
    }
    let relay_stats = call(&h, "relayStats", json!({"relay": relay["relay"]}));
    assert_eq!(relay_stats["pairings"]["matched"], 1, "{relay_stats}");
}

// ----- a Rust node as the blind relay ------------------------------------------------------

/// A JS testnet and a Rust node serving as a blind relay on it (while the `Server` lives).
fn rust_relay(seed: u8) -> (JsHarness, JsTestnet, MioNode, Server, [u8; 32]) {
    let h = JsHarness::new().unwrap();
    let net = h.testnet(6).unwrap();
    let node = spawn_bootstrapped(loopback_config(&net.bootstrap));
    let key = KeyPair::from_seed(&[seed; 32]);
    let relay = node
        .serve_blind_relay(&key)
        .expect("serve as a blind relay");
    (h, net, node, relay, key.public_key())
}

/// A JS client reaches a JS server that refuses to punch through the relay `relay_key`; the
/// echo comes back.
fn js_peers_through(h: &JsHarness, net: &JsTestnet, relay_key: [u8; 32], seed: &str) {
    let server_key = js_relay_only_server(h, &net.bootstrap, seed, None);
    let client = js_node(h, &net.bootstrap);
    let echo = call(
        h,
        "connectEcho",
        json!({
            "node": client,
            "publicKey": to_hex(&server_key),
            "message": to_hex(b"js via a rust relay"),
            "fastOpen": false,
            "localConnection": false,
            "relayThrough": to_hex(&relay_key),
        }),
    );
    assert_eq!(echo["echo"], to_hex(b"js via a rust relay"));
}

#[test]
fn js_peers_connect_through_an_async_rust_blind_relay() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(6).unwrap();
    let c = loopback_config(&net.bootstrap);
    let key = KeyPair::from_seed(&[0x73; 32]);
    let (node, _relay) = smol::block_on(async {
        let (node, driver) = hyperdht_async_std::bind(c).await.expect("bind");
        smol::spawn(driver).detach();
        node.wait_bootstrapped().await.expect("bootstrap");
        let relay = node.serve_blind_relay(&key).await.expect("serve");
        (node, relay)
    });
    js_peers_through(&h, &net, key.public_key(), "5f");
    let stats = node.info().unwrap().stats.relaying;
    assert_eq!(
        stats.relayed_links, 1,
        "the async relay linked the JS peers: {stats:?}"
    );
}

#[test]
fn js_peers_connect_through_a_rust_blind_relay() {
    logs();
    if !interop_enabled() {
        return;
    }
    let (h, net, relay, _serving, relay_key) = rust_relay(0x71);
    // The JS server refuses to punch; the JS client names the Rust relay.
    js_peers_through(&h, &net, relay_key, "5e");
    let stats = relay.info().unwrap().stats.relaying;
    assert_eq!(
        stats.relayed_links, 1,
        "the Rust relay linked the JS peers: {stats:?}"
    );
}

#[test]
fn rust_peers_connect_through_a_rust_blind_relay() {
    logs();
    if !interop_enabled() {
        return;
    }
    let (_h, net, relay, _serving, relay_key) = rust_relay(0x72);
    let (server, server_key) = rust_relay_only_server(&net.bootstrap, 0x60, None);
    let client = rust_client(&net.bootstrap);
    let mut options = ConnectOptions::default();
    options.fast_open = false;
    options.relay_through = Some(relay_key);
    let mut conn = client
        .connect_with(
            server_key,
            options.with_key_pair(&KeyPair::from_seed(&[0xcc; 32])),
        )
        .expect("Rust reaches Rust through the Rust relay");
    // More than a few packets each way, through the relay.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let to_send = data.clone();
    let mut writer = conn.writer.clone();
    let sender = std::thread::spawn(move || writer.write_all(&to_send));
    let mut echo = vec![0u8; data.len()];
    conn.reader.read_exact(&mut echo).unwrap();
    sender.join().unwrap().unwrap();
    assert!(echo == data, "the echo came back altered");
    for (side, node) in [("client", &client), ("server", &server)] {
        let stats = node.info().unwrap().stats.relaying;
        assert_eq!(
            (stats.attempts, stats.successes),
            (1, 1),
            "{side}: {stats:?}"
        );
    }
    assert_eq!(relay.info().unwrap().stats.relaying.relayed_links, 1);
}

/// A relay named by a client whose server can be reached directly races a direct path; the
/// loser goes: a relay that lost is unpaired and its connection ends (on one host the direct
/// path nearly always wins). Either way the connection works, and the node keeps a relay
/// connection only if it relays.
#[test]
fn a_relay_that_loses_the_race_is_dropped() {
    logs();
    if !interop_enabled() {
        return;
    }
    let RelayLab {
        h,
        net,
        key: relay_key,
        ..
    } = RelayLab::new("7d");
    let server = js_node(&h, &net.bootstrap);
    let listened = call(
        &h,
        "listen",
        json!({"node": server, "seed": "5d".repeat(32)}),
    );
    let server_key = key_of(&listened["publicKey"]);
    let client = rust_client(&net.bootstrap);
    let mut options = ConnectOptions::default();
    options.relay_through = Some(relay_key);
    let mut conn = client
        .connect_with(
            server_key,
            options.with_key_pair(&KeyPair::from_seed(&[0xcd; 32])),
        )
        .expect("connects, directly or through the relay");
    conn.writer.write_all(b"either way").unwrap();
    let mut echo = [0u8; 10];
    conn.reader.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"either way");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let info = client.info().unwrap();
        let r = info.stats.relaying;
        assert_eq!(r.attempts, 1, "{r:?}");
        let settled = r.successes + r.aborts == 1;
        // The peer connection, and the relay's only while it carries it.
        if settled && info.connections as u64 == 1 + r.successes {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay was neither used nor dropped: {r:?}, {} connections",
            info.connections
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
