//! A `Node` driven by a script of datagrams, replies, requests, time steps, commands and
//! server, client and relay operations
//! (format: `hyperdht_fuzz::targets::node_datagrams`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hyperdht_fuzz::node_datagrams(data));
