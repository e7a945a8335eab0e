//! Test support for hyperdht-rs: network simulator, scenario tests, byte vectors and the
//! Node.js interop harness.
//!
//! Interop tests need Node.js 18+ (`node` on `PATH`); set `HYPERDHT_SKIP_INTEROP=1` to skip
//! them explicitly. See [`js`].

pub mod bench_util;
pub mod js;
pub mod sim;
pub mod support;
pub mod swarm_peers;
pub mod udx_driver;
