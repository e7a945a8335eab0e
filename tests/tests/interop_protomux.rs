//! Protomux channels between Rust (`hyperdht_proto::protomux` over the mio driver's message
//! API) and the real Node.js `protomux` 3.12 over hyperdht 6.34 connections on 127.0.0.1, both
//! ways: opens in either order (ours answered by JS, JS's answered by us through `pair`),
//! handshakes, messages of two types, corked batches from JS, and closes.
//!
//! And the fuzz target's scripts (`tests/src/fuzz_targets.rs`, `protomux`) with the real JS
//! `protomux` as one side or both (`tests/js/protomux-script.js`, which holds each message
//! until the script delivers it, so the crossings are the script's): the sequence of issue 12,
//! where our mux and JS used to pair different channels, and the seeds of the corpus.

#[allow(dead_code)]
#[path = "../src/fuzz_targets.rs"]
mod fuzz_targets;

use hyperdht_proto::ConnectOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddrV4;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use fuzz_targets::{protomux_steps, run_mux_script, MuxPeer, MuxStep, RustMux};

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
                let name = s.mux.channel_name(channel).unwrap().protocol.to_string();
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

// ----- scripts: the fuzz target's sequences against the real JS protomux --------------------

/// The real JS `protomux` in a `tests/js/protomux-script.js` process, as a [`MuxPeer`].
struct JsMux {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// What `events` lines said, in order.
    events: Vec<String>,
    /// Messages received since the last `take_received`.
    received: Vec<(u32, u64, Vec<u8>)>,
    /// Why the mux destroyed its stream, once it did.
    error: Option<String>,
}

impl JsMux {
    fn new() -> JsMux {
        let mut child = Command::new("node")
            .arg(hyperdht_tests::js::js_dir().join("protomux-script.js"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node protomux-script.js");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        JsMux {
            child,
            stdin,
            stdout,
            events: Vec::new(),
            received: Vec::new(),
            error: None,
        }
    }

    /// One request, its reply; the reply's events and error are taken in.
    fn call(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").expect("write to protomux-script.js");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read from protomux-script.js");
        let reply: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("protomux-script.js said {line:?}: {e}"));
        assert_eq!(
            reply["ok"], true,
            "protomux-script.js failed {request}: {reply}"
        );
        for event in reply["events"].as_array().unwrap() {
            let event = event.as_str().unwrap().to_string();
            let words: Vec<&str> = event.split(' ').collect();
            if let ["message", channel, kind, payload] = words[..] {
                self.received.push((
                    channel.parse().unwrap(),
                    kind.parse().unwrap(),
                    from_hex(payload).unwrap(),
                ));
            }
            self.events.push(event);
        }
        if let Some(e) = reply["error"].as_str() {
            self.error = Some(e.to_string());
        }
        reply
    }
}

impl Drop for JsMux {
    fn drop(&mut self) {
        // Our own child, by its handle: closing stdin ends it; kill if it is stuck.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex_id(id: Option<&[u8]>) -> Value {
    id.map_or(Value::Null, |i| Value::String(to_hex(i)))
}

impl MuxPeer for JsMux {
    fn pair(&mut self, protocol: &str, id: Option<&[u8]>) {
        self.call(json!({"cmd": "pair", "protocol": protocol, "id": hex_id(id)}));
    }

    fn reject(&mut self, _: &str, _: Option<&[u8]>) {
        // JS rejects the opens a pair handler did not answer once it returns; it has no call
        // to reject one of them.
        panic!("a script with a reject step cannot run on JS");
    }

    fn open(&mut self, protocol: &str, id: Option<&[u8]>, handshake: &[u8]) -> Option<u32> {
        let reply = self.call(json!({
            "cmd": "open", "protocol": protocol, "id": hex_id(id), "handshake": to_hex(handshake)
        }));
        let id = u32::try_from(reply["localId"].as_u64().unwrap()).unwrap();
        (id > 0).then_some(id)
    }

    fn send(&mut self, channel: u32, kind: u64, payload: &[u8]) {
        assert!(kind < 256, "the JS channels have 256 message types");
        self.call(json!({
            "cmd": "send", "localId": channel, "type": kind, "payload": to_hex(payload)
        }));
    }

    fn close(&mut self, channel: u32) {
        self.call(json!({"cmd": "close", "localId": channel}));
    }

    fn handle(&mut self, message: &[u8]) -> Result<(), String> {
        if let Some(e) = &self.error {
            return Err(format!("failed earlier: {e}"));
        }
        self.call(json!({"cmd": "recv", "data": to_hex(message)}));
        self.error.clone().map_or(Ok(()), Err)
    }

    fn transmit(&mut self) -> Vec<Vec<u8>> {
        let reply = self.call(json!({"cmd": "take"}));
        reply["out"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| from_hex(m.as_str().unwrap()).unwrap())
            .collect()
    }

    fn open_channels(&mut self) -> Vec<u32> {
        let reply = self.call(json!({"cmd": "channels"}));
        let mut open: Vec<u32> = reply["open"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| u32::try_from(i.as_u64().unwrap()).unwrap())
            .collect();
        open.sort_unstable();
        open
    }

    fn take_received(&mut self) -> Vec<(u32, u64, Vec<u8>)> {
        std::mem::take(&mut self.received)
    }
}

fn corpus(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../fuzz/corpus/protomux/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Issue 12: `b` opens alpha/1 four times, closes its 2nd and (later) its 4th before `a`
/// answered them; `a` asked for alpha opens and answers twice in between; then `a` opens beta.
/// Our mux used to forget an open the peer closed before we answered it, so its answers
/// paired one channel further than the peer's (a's 2 with b's 3, a's 3 with b's 4), b's close
/// of its 4 closed a's 3, a reused id 3 for beta and b, for which id 3 was still open, refused
/// it ("Invalid open message").
///
/// JS ignores a close of an open it has not answered: it keeps it for its next channel of
/// the name, which then pairs with a channel the peer already closed, and the peer ignores
/// that answer, so the two sides disagree too (one channel open on one side only), with no
/// error yet. We answer such a close with a reject instead, and close again a channel the
/// peer answers after we closed it; with those, we and JS agree, in both roles.
#[test]
fn issue12_closed_before_answered_pairs_the_same_channels_as_js() {
    if !interop_enabled() {
        return;
    }
    let script = corpus("issue12-beta-invalid-open");
    let steps = protomux_steps(&script);
    assert!(
        steps.iter().any(|s| matches!(
            s,
            MuxStep::Close {
                side: 1,
                channel: 2
            }
        )),
        "the script closes b's second alpha channel: {steps:?}"
    );

    // Rust with Rust (the fuzz target).
    let (mut a, mut b) = (RustMux::default(), RustMux::default());
    let rust_rust = run_mux_script(&script, [&mut a, &mut b]).expect("Rust with Rust");
    assert_eq!(rust_rust, [(1, 1), (2, 3)]);

    // Rust as the side that pairs and answers, JS as the one that closes before the answer:
    // JS takes our rejects of its closed opens.
    let (mut a, mut b) = (RustMux::default(), JsMux::new());
    let rust_js = run_mux_script(&script, [&mut a, &mut b]).expect("Rust a with JS b");
    assert_eq!(rust_js, rust_rust);
    assert_eq!(b.error, None);

    // JS as the side that answers: it ignores b's closes and answers the closed channels; our
    // second closes close them on the JS side.
    let (mut a, mut b) = (JsMux::new(), RustMux::default());
    let js_rust = run_mux_script(&script, [&mut a, &mut b]).expect("JS a with Rust b");
    assert_eq!(a.error, None);
    assert!(
        a.events.iter().any(|e| e == "close 2 remote=true"),
        "JS's answer to our closed channel was closed by our second close: {:?}",
        a.events
    );
    assert_eq!(js_rust.len(), 2, "{js_rust:?}");

    // JS with JS, for the record: no error, but JS's a keeps a channel open that b closed.
    let (mut a, mut b) = (JsMux::new(), JsMux::new());
    let js_js = run_mux_script(&script, [&mut a, &mut b]).expect_err("JS with JS disagrees");
    assert!(js_js.contains("disagree"), "{js_js}");
    assert_eq!((a.error.as_deref(), b.error.as_deref()), (None, None));
}

/// The stored protomux corpus (without junk or reject steps, which JS cannot take or say)
/// with JS as either side: no refusal, and the same pairs as between two of our muxes.
#[test]
fn protomux_corpus_runs_the_same_against_js() {
    if !interop_enabled() {
        return;
    }
    let dir = format!("{}/../fuzz/corpus/protomux", env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in names {
        let script = corpus(&name);
        let steps = protomux_steps(&script);
        if steps
            .iter()
            .any(|s| matches!(s, MuxStep::Junk(_) | MuxStep::Reject { .. }))
        {
            continue;
        }
        let (mut a, mut b) = (RustMux::default(), RustMux::default());
        let want = run_mux_script(&script, [&mut a, &mut b])
            .unwrap_or_else(|e| panic!("{name}, Rust with Rust: {e}"));
        let (mut a, mut b) = (RustMux::default(), JsMux::new());
        let got = run_mux_script(&script, [&mut a, &mut b])
            .unwrap_or_else(|e| panic!("{name}, Rust a with JS b: {e}"));
        assert_eq!(got, want, "{name}, Rust a with JS b");
        let (mut a, mut b) = (JsMux::new(), RustMux::default());
        run_mux_script(&script, [&mut a, &mut b])
            .unwrap_or_else(|e| panic!("{name}, JS a with Rust b: {e}"));
        ran += 1;
    }
    assert!(ran >= 3, "only {ran} corpus scripts could run against JS");
}
