//! Rust UDX and secret-stream against Node.js udx-native through a lossy relay on
//! 127.0.0.1: 5% loss, 2% duplication, 20 ms of jitter (which reorders). Every byte must
//! arrive once and in order, 64 MiB both ways at once (as in the clean-path interop tests;
//! about 100 s per test here), and END must close both sides.

use std::time::{Duration, Instant};

use hyperdht_proto::stream::{CloseReason, Config};
use hyperdht_proto::SocketId;
use hyperdht_tests::udx_driver::{
    fixed_keys, Endpoint, Faults, JsConfig, JsPeer, LossyRelay, Transfer,
};

const RUST_ID: u32 = 0x3333_3333;
const JS_ID: u32 = 0x4444_4444;

fn faults() -> Faults {
    Faults {
        loss: 0.05,
        duplicate: 0.02,
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(20),
    }
}

fn run(secret: bool, size: u64, seed: u64) {
    if !hyperdht_tests::js::interop_enabled() {
        return;
    }
    let mut js = JsPeer::spawn().expect("spawn udx-peer.js");
    let mut ep = Endpoint::bind("127.0.0.1:0", Config::default(), [7; 32]).unwrap();
    let js_addr = format!("127.0.0.1:{}", js.port).parse().unwrap();
    let relay = LossyRelay::start(ep.local_addr(), js_addr, faults(), seed).unwrap();
    let now = ep.now();
    let id = ep.mux.create_stream_with_id(now, RUST_ID).unwrap();
    ep.mux
        .connect(now, id, SocketId::SERVER, JS_ID, relay.addr)
        .unwrap();
    let mut t = Transfer::new(id, size, 11, 12);
    if secret {
        t = t.with_secret(now, &fixed_keys(false), [6; 32]);
    }
    js.start(&JsConfig {
        local_id: JS_ID,
        remote_id: RUST_ID,
        remote_port: relay.addr.port(),
        send: size,
        send_seed: 12,
        recv_seed: 11,
        secret: secret.then(|| fixed_keys(true)),
        destroy_after: 0,
    })
    .unwrap();
    let started = Instant::now();
    let ok = Transfer::drive(
        &mut ep,
        &mut [&mut t],
        Instant::now() + Duration::from_secs(300),
    );
    let r = js
        .result_driving(&mut ep, Duration::from_secs(60))
        .expect("JS result");
    let stats = relay.stop();
    eprintln!(
        "lossy secret={secret}: {:.2?}, relay {stats:?}, rust {:?}",
        started.elapsed(),
        ep.mux.info(id).map(|i| i.stats)
    );
    assert!(
        ok,
        "rust side did not finish: received {}, closed {:?}",
        t.checker.received, t.closed
    );
    assert_eq!(t.secret_error, None);
    assert_eq!(t.checker.mismatch, None);
    assert_eq!(t.checker.received, size);
    assert_eq!(t.closed, Some(CloseReason::Finished));
    assert_eq!(r.mismatch, None);
    assert_eq!(r.received, size);
    assert!(r.ended);
    assert_eq!(r.error, None, "js side: {r:?}");
    assert!(stats.dropped > 0 && stats.duplicated > 0);
}

#[test]
fn raw_udx_through_lossy_relay() {
    run(false, 64 << 20, 1);
}

#[test]
fn secret_stream_through_lossy_relay() {
    run(true, 64 << 20, 2);
}
