//! The UDX fuzz targets' logic (`fuzz/fuzz_targets/udx_link_logic.rs`) on stable Rust:
//! proptest inputs and a few fixed fault tapes.

#[path = "../../fuzz/fuzz_targets/udx_link_logic.rs"]
mod logic;

use proptest::prelude::*;

#[test]
fn fixed_tapes() {
    // Empty input: nothing to send, both sides finish.
    logic::link(&[]);
    // 20 KiB one way, 2.5 KiB back, every third datagram dropped then every fourth duplicated.
    let mut tape = vec![40, 0, 10];
    tape.extend((0..600).map(|i| if i % 3 == 0 { 5u8 } else { 0 }));
    tape.extend((0..600).map(|i| if i % 4 == 0 { 6u8 } else { 0 }));
    logic::link(&tape);
    // Heavy reordering: every other datagram delayed by up to 255 ms.
    let mut tape = vec![60, 0, 20];
    for i in 0..800u32 {
        tape.push(if i % 2 == 0 { 7 } else { 0 });
        tape.push((i * 37 % 256) as u8);
    }
    logic::link(&tape);
    logic::packet(&[0xff; 64]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn link_with_arbitrary_faults(tape in proptest::collection::vec(any::<u8>(), 0..3000)) {
        logic::link(&tape);
    }

    #[test]
    fn arbitrary_packets(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        logic::packet(&data);
    }
}
