//! Fuzz targets for hyperdht-proto. The logic is in `tests/src/fuzz_targets.rs`, shared with the
//! stable corpus replay test (`tests/tests/fuzz_corpus_replay.rs`); the `fuzz_target!` bins in
//! `fuzz_targets/` call these functions.
//!
//! ```text
//! cargo +nightly fuzz run decode_message    # from the repository root (cargo install cargo-fuzz)
//! cargo +nightly fuzz run node_datagrams
//! cargo +nightly fuzz run protomux
//! cargo +nightly fuzz run connection
//! cargo build --manifest-path fuzz/Cargo.toml   # stable: builds the targets without coverage
//! ```

#[path = "../../tests/src/fuzz_targets.rs"]
pub mod targets;

pub use targets::{connection, decode_message, node_datagrams, noise_responder, protomux};
