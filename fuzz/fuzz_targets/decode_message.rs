//! Arbitrary bytes into the dht-rpc decoders; decoded messages must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hyperdht_fuzz::decode_message(data));
