//! Message boundaries between Rust and the real Node.js hyperdht 6.34 on 127.0.0.1.
//!
//! JS secret-stream delivers each `socket.write(buf)` as one `data` event, and protocols built
//! on it (protomux, hypercore replication) depend on that. Rust keeps the boundaries with
//! `send_message` / `read_message` (mio driver) and `send_message` / `recv_message` (async
//! driver). The JS echo server writes each `data` event back as one message, so messages that
//! come back with their boundaries unchanged were also seen unchanged by JS; the other way, a
//! JS client reports the `data` events a Rust echo server sent it.

use hyperdht_proto::ConnectOptions;
use std::io::Read;
use std::net::SocketAddrV4;
use std::time::Duration;

use serde_json::{json, Value};

use hyperdht_mio::MioNode;
use hyperdht_proto::crypto::{from_hex, to_hex};
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::ServerConfig;
use hyperdht_tests::js::{interop_enabled, JsHarness};
use hyperdht_tests::support::{first_connection, logs, loopback_config, spawn_bootstrapped};

/// Message sizes: tiny ones, ones around the drivers' 64 KiB chunks and writes, and ones
/// larger than the mio writer's 256 KiB window and spanning many chunks.
const SIZES: [usize; 9] = [1, 7, 1000, 65_535, 65_536, 65_537, 300_000, 1_100_000, 3];

/// The messages to send: `SIZES`, each with its own byte pattern.
fn messages(sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| ((i * 31 + j * 7) % 251) as u8).collect())
        .collect()
}

fn call(h: &JsHarness, cmd: &str, args: Value) -> Value {
    h.call(cmd, args)
        .unwrap_or_else(|e| panic!("JS {cmd} failed: {e}"))
}

/// An ephemeral Rust peer on 127.0.0.1 bootstrapped from `boot`.
fn rust_peer(boot: &[SocketAddrV4]) -> MioNode {
    spawn_bootstrapped(loopback_config(boot))
}

/// A JS testnet and a JS echo server on it; returns the server's key.
fn js_echo_server(h: &JsHarness, boot: &[SocketAddrV4]) -> [u8; 32] {
    let boot: Vec<String> = boot.iter().map(|a| a.to_string()).collect();
    let node = call(h, "createNode", json!({ "bootstrap": boot }))["node"].clone();
    let listened = call(h, "listen", json!({"node": node, "seed": "e1".repeat(32)}));
    from_hex(listened["publicKey"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

/// Compares received messages with sent ones, naming the first difference.
fn assert_same_messages(sent: &[Vec<u8>], received: &[Vec<u8>]) {
    let sizes = |m: &[Vec<u8>]| m.iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(
        sizes(received),
        sizes(sent),
        "message boundaries changed on the way"
    );
    for (i, (s, r)) in sent.iter().zip(received).enumerate() {
        assert!(s == r, "message {i} ({} bytes) came back altered", s.len());
    }
}

#[test]
fn rust_mio_messages_through_a_js_echo_server() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(6).unwrap();
    let server_pk = js_echo_server(&h, &net.bootstrap);
    let client = rust_peer(&net.bootstrap);
    let mut conn = client
        .connect_with(
            server_pk,
            ConnectOptions::default().with_key_pair(&KeyPair::from_seed(&[0xc5; 32])),
        )
        .expect("Rust client connects to the JS server");

    let sent = messages(&SIZES);
    let to_send = sent.clone();
    let writer = conn.writer.clone();
    let sender = std::thread::spawn(move || {
        for m in &to_send {
            writer.send_message(m).expect("send_message");
        }
    });
    let mut received = Vec::new();
    for (i, m) in sent.iter().enumerate() {
        // One message is begun with a byte read: read_message returns the rest of it.
        let got = if i == 4 {
            let mut head = [0u8; 10];
            conn.reader.read_exact(&mut head).unwrap();
            let rest = conn
                .reader
                .recv_message()
                .unwrap()
                .expect("rest of message");
            [&head[..], &rest].concat()
        } else {
            conn.reader.recv_message().unwrap().expect("message")
        };
        assert!(got.len() <= m.len(), "message {i} merged with the next");
        received.push(got);
    }
    sender.join().unwrap();
    assert_same_messages(&sent, &received);
}

#[test]
fn js_messages_through_a_rust_mio_echo_server() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(6).unwrap();
    let server_node = rust_peer(&net.bootstrap);
    let key = KeyPair::from_seed(&[0x5e; 32]);
    let server = server_node
        .listen(&key, ServerConfig::default())
        .expect("listen");
    // Echo message by message until the client ends.
    let echo = std::thread::spawn(move || {
        let conn = first_connection(&server, Duration::from_secs(30));
        let mut reader = conn.reader;
        let mut echoed = 0;
        while let Ok(Some(m)) = reader.recv_message() {
            conn.writer.send_message(&m).expect("echo");
            echoed += 1;
        }
        echoed
    });

    let js = call(
        &h,
        "createNode",
        json!({ "bootstrap": net.bootstrap.iter().map(|a| a.to_string()).collect::<Vec<_>>() }),
    );
    // JSON carries these as hex: leave out the megabyte one.
    let sent = messages(&SIZES[..7]);
    let reply = call(
        &h,
        "connectMessages",
        json!({
            "node": js["node"],
            "publicKey": to_hex(&key.public_key()),
            "messages": sent.iter().map(|m| to_hex(m)).collect::<Vec<_>>(),
        }),
    );
    let received: Vec<Vec<u8>> = reply["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| from_hex(m.as_str().unwrap()).unwrap())
        .collect();
    assert_same_messages(&sent, &received);
    // The JS client ended its side: the echo loop saw the end after every message.
    assert_eq!(echo.join().unwrap(), sent.len());
}

#[test]
fn rust_async_messages_through_a_js_echo_server() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(6).unwrap();
    let server_pk = js_echo_server(&h, &net.bootstrap);
    let config = loopback_config(&net.bootstrap);
    let sent = messages(&SIZES);
    let received = smol::block_on(async {
        let (node, driver) = hyperdht_async_std::bind(config).await.expect("bind");
        smol::spawn(driver).detach();
        node.wait_bootstrapped().await.expect("bootstrap");
        let conn = node
            .connect_with(
                server_pk,
                ConnectOptions::default().with_key_pair(&KeyPair::from_seed(&[0xc6; 32])),
            )
            .await
            .expect("async Rust client connects to the JS server");
        let sending = async {
            for m in &sent {
                conn.send_message(m).await.expect("send_message");
            }
        };
        let receiving = async {
            let mut received = Vec::new();
            for _ in &sent {
                received.push(conn.recv_message().await.unwrap().expect("message"));
            }
            received
        };
        futures_lite::future::zip(sending, receiving).await.1
    });
    assert_same_messages(&sent, &received);
}
