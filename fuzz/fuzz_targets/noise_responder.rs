//! The Noise responder and the connect-layer decoders fed arbitrary bytes: no panic, no
//! completed handshake from junk or tampered messages.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hyperdht_fuzz::noise_responder(data));
