//! `tests/vectors/secretstream.json` (written by `tests/js/vectors/secretstream.js`): libsodium
//! secretstream outputs, the frames two real `@hyperswarm/secret-stream` instances exchanged,
//! and unordered-message envelopes, reproduced or decoded byte for byte.

use serde_json::Value;

use hyperdht_proto::crypto::{from_hex, to_hex};
use hyperdht_proto::secretstream::cipher::{Pull, Push, Tag};
use hyperdht_proto::secretstream::{self, send_key, stream_id, Config, SecretStream, SessionKeys};
use hyperdht_proto::Timestamp;

fn load() -> Value {
    hyperdht_tests::support::load_vector("secretstream.json")
}

fn hex(v: &Value) -> Vec<u8> {
    from_hex(v.as_str().unwrap()).unwrap()
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    hex(v).try_into().unwrap()
}

// The fixed handshake of `tests/js/vectors/handshake.js` (also in `noise.json`), which produced
// Part B's keys; `handshake_keys_are_the_vectors` checks the vector carries the same.
const INITIATOR_TX: &str = "cc00d99bd3a15a6779df38fd42fd25a84d73264023e7c1da95cf3bcbdce9c210";
const INITIATOR_RX: &str = "78dd48ecef5d11fd953197694a8ee2d9f8d86d49d56d856e3dd7c8e78047826b";
const HASH: &str = "d6b5f55924e91a981d12abb62e70b63c8c60f4c6103ca1142eef45bfebedd92645e2bc185d3ac877d672437c41412d32e9562f6a55acb2599883eedbff01f019";

fn keys(initiator: bool) -> SessionKeys {
    let tx: [u8; 32] = from_hex(INITIATOR_TX).unwrap().try_into().unwrap();
    let rx: [u8; 32] = from_hex(INITIATOR_RX).unwrap().try_into().unwrap();
    SessionKeys {
        is_initiator: initiator,
        tx: if initiator { tx } else { rx },
        rx: if initiator { rx } else { tx },
        hash: from_hex(HASH).unwrap().try_into().unwrap(),
    }
}

#[test]
fn handshake_keys_are_the_vectors() {
    let v = load();
    let h = &v["B"]["handshake"];
    assert_eq!(h["initiatorTx"].as_str(), Some(INITIATOR_TX));
    assert_eq!(h["initiatorRx"].as_str(), Some(INITIATOR_RX));
    assert_eq!(h["hash"].as_str(), Some(HASH));
    let noise = hyperdht_tests::support::load_vector("noise.json");
    assert_eq!(
        noise["results"]["initiator_tx"].as_str(),
        Some(INITIATOR_TX)
    );
    assert_eq!(
        noise["results"]["initiator_rx"].as_str(),
        Some(INITIATOR_RX)
    );
    assert_eq!(noise["results"]["handshakeHash"].as_str(), Some(HASH));
    // Part A's key is the initiator's tx key.
    assert_eq!(v["A"]["key"].as_str(), Some(INITIATOR_TX));
}

#[test]
fn part_a_messages() {
    let v = load();
    let a = &v["A"];
    let key: [u8; 32] = arr(&a["key"]);
    let header: [u8; 24] = arr(&a["header"]);
    let mut push = Push::new(&key, &header);
    let mut pull = Pull::new(&key, &header);
    for m in a["messages"].as_array().unwrap() {
        let plain = hex(&m["plaintext"]);
        let mut ct = Vec::new();
        push.seal(&plain, Tag(m["tag"].as_u64().unwrap() as u8), &mut ct);
        assert_eq!(to_hex(&ct), m["ciphertext"].as_str().unwrap());
        let mut frame = Vec::new();
        secretstream::frame::write_prefix(&mut frame, ct.len());
        frame.extend_from_slice(&ct);
        assert_eq!(to_hex(&frame), m["frameOnWire"].as_str().unwrap());
        assert_eq!(pull.open(&ct).unwrap(), (plain, Tag::MESSAGE));
    }
    // TAG_FINAL on an empty message from a fresh state.
    let mut push = Push::new(&key, &header);
    let mut ct = Vec::new();
    push.seal(&[], Tag::FINAL, &mut ct);
    assert_eq!(to_hex(&ct), a["finalTagEmpty"].as_str().unwrap());
    let mut pull = Pull::new(&key, &header);
    assert_eq!(pull.open(&ct).unwrap(), (Vec::new(), Tag::FINAL));
}

#[test]
fn part_b_frames_from_real_secret_stream() {
    let v = load();
    let b = &v["B"];
    assert_eq!(
        to_hex(&stream_id(&keys(true).hash, true)),
        b["ids"]["initiator"].as_str().unwrap()
    );
    assert_eq!(
        to_hex(&stream_id(&keys(true).hash, false)),
        b["ids"]["responder"].as_str().unwrap()
    );
    // A Rust responder reads everything the JS initiator sent.
    let mut rng = hyperdht_proto::rng::Rng::from_seed([1; 32]);
    let mut responder =
        SecretStream::new(Timestamp::ZERO, &keys(false), &mut rng, Config::default());
    // Our own header frame carries the responder id the real responder sent.
    let ours = responder.pending_output().to_vec();
    let theirs = hex(&b["frames"][1]["hex"]);
    assert_eq!(ours[..35], theirs[..35]);

    let mut messages = Vec::new();
    for f in b["frames"].as_array().unwrap() {
        let bytes = hex(&f["hex"]);
        match (f["from"].as_str().unwrap(), f["kind"].as_str().unwrap()) {
            ("initiator", "stream") => {
                // Split every frame in two to exercise the framing.
                let mid = bytes.len() / 2;
                responder
                    .handle_input(Timestamp::ZERO, &bytes[..mid])
                    .unwrap();
                responder
                    .handle_input(Timestamp::ZERO, &bytes[mid..])
                    .unwrap();
                while let Some(m) = responder.poll_message() {
                    messages.push(String::from_utf8(m).unwrap());
                }
            }
            ("initiator", "udx-message") => {
                let plain = responder.open_unordered(&bytes).expect("unordered opens");
                assert_eq!(
                    plain,
                    f["decoded"]["plaintext"].as_str().unwrap().as_bytes()
                );
            }
            _ => {}
        }
    }
    assert!(responder.is_established());
    // "hello", the empty keep-alive (filtered, as hyperdht's keepAlive does), "world".
    assert_eq!(messages, ["hello", "world"]);

    // A Rust initiator reproduces the JS responder's view: it accepts the responder header.
    let mut initiator =
        SecretStream::new(Timestamp::ZERO, &keys(true), &mut rng, Config::default());
    initiator.handle_input(Timestamp::ZERO, &theirs).unwrap();
    assert!(initiator.is_established());
    // And a JS initiator header is the wrong header for a Rust initiator.
    let mut wrong = SecretStream::new(Timestamp::ZERO, &keys(true), &mut rng, Config::default());
    assert_eq!(
        wrong.handle_input(Timestamp::ZERO, &hex(&b["frames"][0]["hex"])),
        Err(secretstream::SecretStreamError::InvalidHeader)
    );
}

#[test]
fn unordered_fixed_envelope() {
    let v = load();
    let u = &v["B"]["unorderedFixed"];
    let hash = keys(true).hash;
    assert_eq!(
        to_hex(&send_key(&hash, true)),
        u["sendKeyInitiator"].as_str().unwrap()
    );
    assert_eq!(
        to_hex(&send_key(&hash, false)),
        u["sendKeyResponder"].as_str().unwrap()
    );
    // The counter is incremented before use: start one below the vector's counter.
    let counter = hex(&u["counter"]);
    let mut start: [u8; 8] = counter.clone().try_into().unwrap();
    start[0] -= 1;
    let mut initiator = SecretStream::with_header(
        Timestamp::ZERO,
        &keys(true),
        [0; 24],
        start,
        Config::default(),
    );
    let env = initiator
        .seal_unordered(u["plaintext"].as_str().unwrap().as_bytes())
        .unwrap();
    assert_eq!(to_hex(&env), u["envelope"].as_str().unwrap());
    let responder = SecretStream::with_header(
        Timestamp::ZERO,
        &keys(false),
        [0; 24],
        [0; 8],
        Config::default(),
    );
    assert_eq!(responder.open_unordered(&env).unwrap(), b"ping");
}
