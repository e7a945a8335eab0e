//! Protomux channels between Rust (`hyperdht_proto::protomux` over the mio driver's message
//! API) and the real Node.js `protomux` 3.12 over hyperdht 6.34 connections on 127.0.0.1, both
//! ways: opens in either order (ours answered by JS, JS's answered by us through `pair`),
//! handshakes, messages of two types, corked batches from JS, and closes.

use hyperdht_proto::ConnectOptions;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use hyperdht_mio::{Connection, MioNode};
use hyperdht_proto::crypto::{from_hex, to_hex};
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::protomux::{ChannelId, MuxEvent, Protomux};
use hyperdht_proto::wire::compact::{write_buffer, Reader};
use hyperdht_proto::ServerConfig;
use hyperdht_tests::js::{interop_enabled, JsHarness};
use hyperdht_tests::support::{first_connection, logs, loopback_config, spawn_bootstrapped};

const ECHO: &str = "hyperdht-rs/echo";
const JS_FIRST: &str = "hyperdht-rs/js-first";
const WAIT: Duration = Duration::from_secs(20);

fn call(h: &JsHarness, cmd: &str, args: Value) -> Value {
    h.call(cmd, args)
        .unwrap_or_else(|e| panic!("JS {cmd} failed: {e}"))
}

fn rust_peer(boot: &[SocketAddrV4]) -> MioNode {
    spawn_bootstrapped(loopback_config(boot))
}

/// compact-encoding `string`.
fn string(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_buffer(&mut out, s.as_bytes());
    out
}

fn decode_string(b: &[u8]) -> String {
    let mut r = Reader::new(b);
    String::from_utf8(r.buffer().expect("a compact string").to_vec()).expect("utf-8")
}

/// A protomux session over one connection: sends what the mux has, reads and handles one
/// message at a time.
struct Session {
    conn: Connection,
    mux: Protomux,
}

impl Session {
    /// A session on `conn`, reset after [`WAIT`] so that a peer that goes quiet fails the
    /// test instead of hanging it.
    fn new(conn: Connection) -> Session {
        let writer = conn.writer.clone();
        std::thread::spawn(move || {
            std::thread::sleep(WAIT);
            writer.reset();
        });
        Session {
            conn,
            mux: Protomux::new(),
        }
    }

    fn flush(&mut self) {
        while let Some(m) = self.mux.poll_transmit() {
            self.conn.writer.send_message(&m).expect("send_message");
        }
    }

    /// Flushes, then reads messages until the mux has an event; `None` once the peer ended.
    fn next_event(&mut self) -> Option<MuxEvent> {
        loop {
            self.flush();
            if let Some(e) = self.mux.poll_event() {
                return Some(e);
            }
            let m = self.conn.reader.recv_message().expect("read_message")?;
            self.mux.handle_message(&m).expect("valid protomux from JS");
        }
    }
}

#[test]
fn rust_client_with_a_js_protomux_server() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(6).unwrap();
    let boot: Vec<String> = net.bootstrap.iter().map(|a| a.to_string()).collect();
    let js = call(&h, "createNode", json!({ "bootstrap": boot }));
    let listened = call(
        &h,
        "listenProtomux",
        json!({"node": js["node"], "seed": "a7".repeat(32)}),
    );
    let server_pk: [u8; 32] = from_hex(listened["publicKey"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let client = rust_peer(&net.bootstrap);
    let conn = client
        .connect_with(
            server_pk,
            ConnectOptions::default().with_key_pair(&KeyPair::from_seed(&[0xc7; 32])),
        )
        .expect("connect");
    let mut s = Session::new(conn);
    // JS opens js-first at once: we asked for it, so it waits for our answer.
    s.mux.pair(JS_FIRST, None);
    let echo = s.mux.open(ECHO, Some(b"e1"), b"rust hs").unwrap();

    let mut js_first: Option<ChannelId> = None;
    let mut got: Vec<(String, u64, Vec<u8>)> = Vec::new();
    let mut echo_handshake = None;
    let mut js_first_handshake = None;
    let deadline = Instant::now() + WAIT;
    // Until the batch, both echoes and JS's greeting arrived.
    while got.len() < 5 {
        assert!(Instant::now() < deadline, "timed out; got {got:?}");
        match s.next_event().expect("connection ended early") {
            MuxEvent::Incoming { protocol, id } => {
                assert_eq!(
                    (protocol.as_str(), id.as_deref()),
                    (JS_FIRST, Some(&b"j"[..]))
                );
                js_first = Some(s.mux.open(JS_FIRST, Some(b"j"), b"rust answer").unwrap());
            }
            MuxEvent::Opened { channel, handshake } if channel == echo => {
                echo_handshake = Some(handshake);
                s.mux.send(echo, 0, &[1, 2, 3, 0xff]).unwrap();
                s.mux.send(echo, 1, &string("hello")).unwrap();
            }
            MuxEvent::Opened { channel, handshake } => {
                assert_eq!(Some(channel), js_first);
                js_first_handshake = Some(handshake);
            }
            MuxEvent::Message {
                channel,
                kind,
                payload,
            } => {
                let name = s.mux.channel_name(channel).unwrap().0.to_string();
                got.push((name, kind, payload));
            }
            MuxEvent::Closed { channel } => panic!("channel {channel:?} closed early"),
        }
    }
    assert_eq!(echo_handshake.as_deref(), Some(&b"js echo"[..]));
    assert_eq!(js_first_handshake.as_deref(), Some(&b"from js"[..]));
    let echo_msgs: Vec<(u64, Vec<u8>)> = got
        .iter()
        .filter(|(n, ..)| n == ECHO)
        .map(|(_, k, p)| (*k, p.clone()))
        .collect();
    assert_eq!(
        echo_msgs,
        [
            (0, b"batched-1".to_vec()),
            (1, string("batched-2")),
            (0, vec![1, 2, 3, 0xff]),
            (1, string("echo: hello")),
        ],
        "the corked batch first, then the echoes, in order"
    );
    let hi: Vec<String> = got
        .iter()
        .filter(|(n, ..)| n == JS_FIRST)
        .map(|(_, _, p)| decode_string(p))
        .collect();
    assert_eq!(hi, ["js says hi"]);

    // Closing our echo channel reaches JS as a remote close.
    s.mux.close(echo).unwrap();
    s.flush();
    let seen: Vec<String> = serde_json::from_value(call(
        &h,
        "protomuxSeen",
        json!({"server": listened["server"], "until": "close echo"}),
    ))
    .unwrap();
    assert!(
        seen.contains(&format!("open echo {} rust hs", to_hex(b"e1"))),
        "JS saw our open with its id and handshake: {seen:?}"
    );
    assert!(
        seen.contains(&"open js-first rust answer".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"close echo remote=true".to_string()),
        "{seen:?}"
    );
}

#[test]
fn js_client_with_a_rust_protomux_server() {
    logs();
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().unwrap();
    let net = h.testnet(6).unwrap();
    let server_node = rust_peer(&net.bootstrap);
    let key = KeyPair::from_seed(&[0x5f; 32]);
    let server = server_node
        .listen(&key, ServerConfig::default())
        .expect("listen");
    // The Rust server: accepts echo channels and echoes every message on them.
    let serving = std::thread::spawn(move || {
        let conn = first_connection(&server, WAIT);
        let mut s = Session::new(conn);
        s.mux.pair(ECHO, None);
        let mut log = Vec::new();
        while let Some(event) = s.next_event() {
            match event {
                MuxEvent::Incoming { protocol, id } => {
                    log.push(format!(
                        "incoming {protocol} {}",
                        to_hex(id.as_deref().unwrap_or_default())
                    ));
                    s.mux
                        .open(&protocol, id.as_deref(), b"rust server")
                        .unwrap();
                }
                MuxEvent::Opened { handshake, .. } => {
                    log.push(format!("opened {}", String::from_utf8_lossy(&handshake)));
                }
                MuxEvent::Message {
                    channel,
                    kind,
                    payload,
                } => {
                    log.push(format!("message {kind}"));
                    s.mux.send(channel, kind, &payload).unwrap();
                }
                MuxEvent::Closed { .. } => {
                    log.push("closed".to_string());
                    s.flush();
                    break;
                }
            }
        }
        log
    });

    let boot: Vec<String> = net.bootstrap.iter().map(|a| a.to_string()).collect();
    let js = call(&h, "createNode", json!({ "bootstrap": boot }));
    let reply = call(
        &h,
        "connectProtomux",
        json!({
            "node": js["node"],
            "publicKey": to_hex(&key.public_key()),
            "channelId": to_hex(b"chan-7"),
            "raw": "00ff10",
            "text": "hi from js",
        }),
    );
    assert_eq!(reply["handshake"], "rust server");
    assert_eq!(reply["raw"], "00ff10");
    assert_eq!(reply["text"], "hi from js");
    let log = serving.join().unwrap();
    assert_eq!(
        log,
        [
            format!("incoming {ECHO} {}", to_hex(b"chan-7")),
            "opened js client".to_string(),
            "message 0".to_string(),
            "message 1".to_string(),
            "closed".to_string(),
        ],
        "the Rust server's view: JS's batch decoded, then JS's close"
    );
}
