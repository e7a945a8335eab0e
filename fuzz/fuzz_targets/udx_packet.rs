//! Arbitrary bytes into the UDX packet decoder and into a live stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "udx_link_logic.rs"]
mod logic;

fuzz_target!(|data: &[u8]| logic::packet(data));
