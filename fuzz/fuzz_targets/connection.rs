//! One established connection between two in-memory nodes, driven by a script of writes,
//! reads, datagram faults and time steps (format: `hyperdht_fuzz::targets::connection`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hyperdht_fuzz::connection(data));
