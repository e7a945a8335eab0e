//! Small helpers the integration tests share: test logging, IPv4 addresses, and the byte
//! vectors of `tests/vectors` (written by `npm run vectors` in `tests/js`).

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use hyperdht_proto::crypto::from_hex;
use serde_json::Value;

/// Logs to the test output when `RUST_LOG` is set (once per test binary).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The IPv4 address in `a`; panics on IPv6 (every test node binds IPv4).
pub fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("IPv4 expected"),
    }
}

/// `tests/vectors`: the committed byte vectors, one JSON file per topic, written by the
/// generator in `tests/js/vectors` (`npm run vectors`; `tests/tests/vectors_fresh.rs` checks
/// they are what it prints).
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/vectors"))
}

/// One vector file of [`vectors_dir`] (`wire.json` and the like), parsed.
pub fn load_vector(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The bytes of a hex string in a vector.
pub fn hx(v: &Value) -> Vec<u8> {
    from_hex(v.as_str().expect("hex string")).expect("hex")
}

/// The 32 bytes of a hex string in a vector.
pub fn h32(v: &Value) -> [u8; 32] {
    hx(v).try_into().expect("32 bytes")
}

/// The first connection a server opens (its `Incoming` events are skipped); panics after
/// `wait` without one.
pub fn first_connection(
    server: &hyperdht_mio::Server,
    wait: std::time::Duration,
) -> hyperdht_mio::Connection {
    loop {
        match server.events().recv_timeout(wait) {
            Ok(hyperdht_mio::ServerEvent::Connected(c)) => return *c,
            Ok(_) => {}
            Err(e) => panic!("the server opened no connection within {wait:?}: {e}"),
        }
    }
}

/// A node config on 127.0.0.1 (any free port) bootstrapping from `boot`.
pub fn loopback_config(boot: &[SocketAddrV4]) -> hyperdht_proto::Config {
    let mut c = hyperdht_proto::Config::new(boot.to_vec());
    c.host = [127, 0, 0, 1].into();
    c.port = 0;
    c
}

/// A mio node for `config`, once bootstrapped; panics if either fails.
pub fn spawn_bootstrapped(config: hyperdht_proto::Config) -> hyperdht_mio::MioNode {
    let node = hyperdht_mio::MioNode::spawn(config).expect("spawn");
    node.wait_bootstrapped().expect("bootstrap");
    node
}
