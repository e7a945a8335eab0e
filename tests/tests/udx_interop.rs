//! Rust UDX (and secret-stream) against the real Node.js `udx-native` 1.21 and
//! `@hyperswarm/secret-stream` 6.9 on 127.0.0.1: 64 MiB each way at once, bytes and order
//! checked against the expected stream on both sides, END closing both sides cleanly, and a
//! DESTROY from JS resetting the Rust side.

use std::time::{Duration, Instant};

use hyperdht_proto::stream::{CloseReason, Config};
use hyperdht_tests::udx_driver::{fixed_keys, Endpoint, JsConfig, JsPeer, Transfer};

const SIZE: u64 = 64 << 20;

/// Size of the encrypted transfers: 64 MiB (dependencies, ChaCha20 and Poly1305 among them,
/// are optimised in dev builds too), unless `HYPERDHT_UDX_INTEROP_MIB` says otherwise.
fn secret_size() -> u64 {
    std::env::var("HYPERDHT_UDX_INTEROP_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(SIZE, |mib| mib << 20)
}
const RUST_ID: u32 = 0x1111_1111;
const JS_ID: u32 = 0x2222_2222;

fn run(secret: bool, rust_initiator: bool, size: u64) {
    if !hyperdht_tests::js::interop_enabled() {
        return;
    }
    let mut js = JsPeer::spawn().expect("spawn udx-peer.js");
    let mut ep = Endpoint::bind("127.0.0.1:0", Config::default(), [9; 32]).unwrap();
    let now = ep.now();
    let id = ep.mux.create_stream_with_id(now, RUST_ID).unwrap();
    let js_addr = format!("127.0.0.1:{}", js.port).parse().unwrap();
    ep.mux
        .connect(now, id, hyperdht_proto::SocketId::SERVER, JS_ID, js_addr)
        .unwrap();
    let mut t = Transfer::new(id, size, 1, 2);
    if secret {
        t = t.with_secret(now, &fixed_keys(rust_initiator), [5; 32]);
    }
    js.start(&JsConfig {
        local_id: JS_ID,
        remote_id: RUST_ID,
        remote_port: ep.local_addr().port(),
        send: size,
        send_seed: 2,
        recv_seed: 1,
        secret: secret.then(|| fixed_keys(!rust_initiator)),
        destroy_after: 0,
    })
    .unwrap();
    let started = Instant::now();
    let ok = Transfer::drive(
        &mut ep,
        &mut [&mut t],
        Instant::now() + Duration::from_secs(240),
    );
    let elapsed = started.elapsed();
    let r = js
        .result_driving(&mut ep, Duration::from_secs(60))
        .expect("JS result");
    eprintln!(
        "udx interop secret={secret} size={size}: rust {:.2?}, js {:.2}s (rust received {}, js received {}), info {:?}",
        elapsed,
        r.seconds,
        t.checker.received,
        r.received,
        ep.mux.info(id).map(|i| (i.mtu, i.cwnd, i.stats)),
    );
    assert!(
        ok,
        "rust side did not finish: received {} of {size}, closed {:?}",
        t.checker.received, t.closed
    );
    assert_eq!(t.secret_error, None);
    assert_eq!(t.checker.mismatch, None, "rust received wrong bytes");
    assert_eq!(t.checker.received, size);
    assert!(t.eof);
    assert_eq!(t.closed, Some(CloseReason::Finished));
    assert_eq!(r.mismatch, None, "js received wrong bytes");
    assert_eq!(r.received, size);
    assert!(r.ended);
    assert_eq!(r.error, None);
}

#[test]
fn raw_udx_64mib_both_ways() {
    run(false, true, SIZE);
}

#[test]
fn secret_stream_64mib_both_ways_rust_initiator() {
    run(true, true, secret_size());
}

#[test]
fn secret_stream_both_ways_js_initiator() {
    run(true, false, 4 << 20);
}

#[test]
fn destroy_from_js_resets_rust() {
    if !hyperdht_tests::js::interop_enabled() {
        return;
    }
    let mut js = JsPeer::spawn().expect("spawn udx-peer.js");
    let mut ep = Endpoint::bind("127.0.0.1:0", Config::default(), [8; 32]).unwrap();
    let now = ep.now();
    let id = ep.mux.create_stream_with_id(now, RUST_ID).unwrap();
    let js_addr = format!("127.0.0.1:{}", js.port).parse().unwrap();
    ep.mux
        .connect(now, id, hyperdht_proto::SocketId::SERVER, JS_ID, js_addr)
        .unwrap();
    // Rust sends 16 MiB; JS destroys after 1 MiB.
    let mut t = Transfer::new(id, 16 << 20, 1, 2);
    js.start(&JsConfig {
        local_id: JS_ID,
        remote_id: RUST_ID,
        remote_port: ep.local_addr().port(),
        send: 0,
        send_seed: 2,
        recv_seed: 1,
        secret: None,
        destroy_after: 1 << 20,
    })
    .unwrap();
    let ok = Transfer::drive(
        &mut ep,
        &mut [&mut t],
        Instant::now() + Duration::from_secs(60),
    );
    let r = js
        .result_driving(&mut ep, Duration::from_secs(30))
        .expect("JS result");
    assert!(ok, "rust side did not close");
    assert_eq!(t.closed, Some(CloseReason::Reset));
    assert!(r.received >= 1 << 20 && r.received < 16 << 20, "{r:?}");
    assert_eq!(r.mismatch, None);
}

#[test]
fn wrong_stream_id_ends_both_sides_with_an_error() {
    if !hyperdht_tests::js::interop_enabled() {
        return;
    }
    let mut js = JsPeer::spawn().expect("spawn udx-peer.js");
    let mut ep = Endpoint::bind("127.0.0.1:0", Config::default(), [4; 32]).unwrap();
    let now = ep.now();
    let id = ep.mux.create_stream_with_id(now, RUST_ID).unwrap();
    let js_addr = format!("127.0.0.1:{}", js.port).parse().unwrap();
    ep.mux
        .connect(now, id, hyperdht_proto::SocketId::SERVER, JS_ID, js_addr)
        .unwrap();
    let mut t = Transfer::new(id, 1 << 20, 1, 2).with_secret(now, &fixed_keys(true), [3; 32]);
    // The JS side derives its ids from another handshake hash: each side's header carries an
    // id the other does not expect.
    let mut theirs = fixed_keys(false);
    theirs.hash[0] ^= 1;
    js.start(&JsConfig {
        local_id: JS_ID,
        remote_id: RUST_ID,
        remote_port: ep.local_addr().port(),
        send: 1 << 20,
        send_seed: 2,
        recv_seed: 1,
        secret: Some(theirs),
        destroy_after: 0,
    })
    .unwrap();
    let ok = Transfer::drive(
        &mut ep,
        &mut [&mut t],
        Instant::now() + Duration::from_secs(60),
    );
    let r = js
        .result_driving(&mut ep, Duration::from_secs(30))
        .expect("JS result");
    assert!(ok, "rust side did not close");
    assert_eq!(
        t.secret_error,
        Some(hyperdht_proto::secretstream::SecretStreamError::InvalidHeader)
    );
    assert_eq!(t.checker.received, 0);
    assert_eq!(r.received, 0);
    assert!(r.error.is_some() || !r.ended, "{r:?}");
}
