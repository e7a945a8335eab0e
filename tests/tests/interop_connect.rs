//! Connecting by public key between Rust and the real Node.js hyperdht 6.34 on 127.0.0.1:
//! Rust clients to JS servers and JS clients to Rust servers, over the LAN shortcut and over a
//! real holepunch (LAN shortcut disabled), plus refused keys. Data over the path is the stream
//! issue's; here the path must be chosen by both sides.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use hyperdht_mio::{Error, MioNode, ServerEvent};
use hyperdht_proto::crypto::{from_hex, to_hex};
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::{Config, ConnectError, ConnectOptions, ServerConfig};
use hyperdht_tests::js::{interop_enabled, JsHarness};
use hyperdht_tests::support::{logs, v4};

fn call(h: &JsHarness, cmd: &str, args: Value) -> Value {
    h.call(cmd, args)
        .unwrap_or_else(|e| panic!("JS {cmd} failed: {e}"))
}

/// An ephemeral Rust peer on 127.0.0.1 bootstrapped from `boot`. `punch` keeps it firewalled
/// (no quick reachability check) and off the LAN shortcut, so connections must holepunch.
fn rust_peer(boot: &[SocketAddrV4], punch: bool) -> MioNode {
    let mut c = Config::new(boot.to_vec());
    c.host = [127, 0, 0, 1].into();
    c.port = 0;
    c.local_connection = !punch;
    c.quick_firewall = !punch;
    let node = MioNode::spawn(c).expect("spawn");
    node.wait_bootstrapped().expect("bootstrap");
    node
}

/// A JS peer; `punch` keeps it firewalled (no quick reachability check).
fn js_peer(h: &JsHarness, boot: &[SocketAddrV4], punch: bool) -> u64 {
    let boot: Vec<String> = boot.iter().map(|a| a.to_string()).collect();
    let mut args = json!({"bootstrap": boot});
    if punch {
        args["quickFirewall"] = json!(false);
    }
    call(h, "createNode", args)["node"].as_u64().unwrap()
}

fn pk_of(v: &Value) -> [u8; 32] {
    from_hex(v.as_str().unwrap()).unwrap().try_into().unwrap()
}

#[test]
fn rust_client_to_js_server() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(6).unwrap();
    let server = js_peer(&h, &net.bootstrap, false);
    let listened = call(
        &h,
        "listenFirewall",
        json!({"node": server, "seed": "a0".repeat(32), "deny": [to_hex(&KeyPair::from_seed(&[0xdd; 32]).public_key())]}),
    );
    let server_pk = pk_of(&listened["publicKey"]);

    // The JS reply authenticates in Rust and a path opens (LAN shortcut, or the JS server
    // reaching an open Rust client first).
    let client_key = KeyPair::from_seed(&[0xc2; 32]);
    let client = rust_peer(&net.bootstrap, false);
    let conn = client
        .connect_with(
            server_pk,
            ConnectOptions::default().with_key_pair(&client_key),
        )
        .expect("Rust client connects to the JS server");
    assert_eq!(conn.remote_public_key(), server_pk);
    let seen: Vec<String> = serde_json::from_value(call(
        &h,
        "firewallSeen",
        json!({"server": listened["server"]}),
    ))
    .unwrap();
    assert!(
        seen.contains(&to_hex(&client_key.public_key())),
        "JS firewall saw the Rust client's key: {seen:?}"
    );

    // A real holepunch between firewalled peers (both consistent on loopback): probe round,
    // punch round, probes.
    let fw_server = js_peer(&h, &net.bootstrap, true);
    let fw_listened = call(
        &h,
        "listenFirewall",
        json!({"node": fw_server, "seed": "a1".repeat(32)}),
    );
    let fw_pk = pk_of(&fw_listened["publicKey"]);
    let fw_dht_port = h.info(fw_server).unwrap();
    let puncher = rust_peer(&net.bootstrap, true);
    assert!(puncher.info().unwrap().firewalled);
    let punched = puncher
        .connect_with(
            fw_pk,
            ConnectOptions::default().with_key_pair(&KeyPair::from_seed(&[0xc3; 32])),
        )
        .expect("holepunched connection");
    let _ = fw_dht_port;
    assert_ne!(v4(punched.remote_addr()).port(), 0);
    assert_ne!(
        Some(punched.remote_addr()),
        puncher.info().unwrap().server_addr
    );
    assert_ne!(
        punched.local_addr(),
        puncher.info().unwrap().server_addr,
        "the punched path uses a puncher socket"
    );

    // A key the JS firewall refuses: the server stays silent, so every relay attempt fails.
    match client.connect_with(
        server_pk,
        ConnectOptions::default().with_key_pair(&KeyPair::from_seed(&[0xdd; 32])),
    ) {
        Err(Error::Connect(ConnectError::PeerConnectionFailed)) => {}
        other => panic!("refused key: {other:?}"),
    }
}

#[test]
fn js_client_to_rust_server() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(6).unwrap();
    let server = rust_peer(&net.bootstrap, false);
    let server_key = KeyPair::from_seed(&[0x5a; 32]);
    let denied = KeyPair::from_seed(&[0xde; 32]).public_key();
    let mut cfg = ServerConfig::default();
    cfg.accept = Some(Arc::new(move |hs: &hyperdht_proto::IncomingHandshake| {
        hs.remote_public_key != denied
    }));
    let listener = server.listen(&server_key, cfg).expect("listen");
    let client = js_peer(&h, &net.bootstrap, false);

    // LAN shortcut: the JS client chooses the Rust server's DHT socket.
    let r = call(
        &h,
        "connectObserve",
        json!({"node": client, "publicKey": to_hex(&server_key.public_key()), "seed": "c4".repeat(32)}),
    );
    assert_eq!(
        r["pathChosen"], true,
        "JS accepted the Rust handshake reply: {r}"
    );
    assert_eq!(
        r["remotePort"].as_u64().unwrap() as u16,
        v4(server.local_addr()).port()
    );
    let ev = listener
        .events()
        .recv_timeout(Duration::from_secs(10))
        .expect("incoming");
    let ServerEvent::Incoming {
        remote_public_key, ..
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert_eq!(
        remote_public_key,
        KeyPair::from_seed(&[0xc4; 32]).public_key()
    );

    // Holepunch between firewalled peers: JS probe and punch rounds answered by the Rust
    // server, JS punches to its puncher socket.
    let fw_server = rust_peer(&net.bootstrap, true);
    assert!(fw_server.info().unwrap().firewalled);
    let fw_key = KeyPair::from_seed(&[0x5b; 32]);
    let _fw_listener = fw_server
        .listen(&fw_key, ServerConfig::default())
        .expect("listen");
    let fw_client = js_peer(&h, &net.bootstrap, true);
    let r = call(
        &h,
        "connectObserve",
        json!({"node": fw_client, "publicKey": to_hex(&fw_key.public_key()), "localConnection": false, "seed": "c5".repeat(32)}),
    );
    assert_eq!(
        r["pathChosen"], true,
        "JS holepunched to the Rust server: {r}"
    );
    assert_ne!(
        r["remotePort"].as_u64().unwrap() as u16,
        v4(fw_server.local_addr()).port(),
        "punched path ends at the Rust puncher socket: {r}"
    );
    // (The Rust server understood the sealed probe round and, being consistent, fired its
    // fast-mode probe at the client: JS connects in the probe round, before any punch round.)

    // Refused by the Rust accept policy.
    let r = call(
        &h,
        "connectObserve",
        json!({"node": client, "publicKey": to_hex(&server_key.public_key()), "seed": "de".repeat(32), "waitMs": 30000}),
    );
    assert_eq!(r["pathChosen"], false);
    assert_eq!(r["error"], "PEER_CONNECTION_FAILED", "{r}");
}
