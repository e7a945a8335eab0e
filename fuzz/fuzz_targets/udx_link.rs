//! Two UDX stream ends over a link whose drops, duplicates, reordering and delays come from
//! the fuzz input; delivered bytes must equal sent bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "udx_link_logic.rs"]
mod logic;

fuzz_target!(|data: &[u8]| logic::link(data));
