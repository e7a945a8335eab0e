//! Two protomux channel tables driven by a script, with junk into one: no panic, and honest
//! peers always accept each other's messages.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hyperdht_fuzz::protomux(data));
