//! The engine's only source of randomness: a ChaCha20 keystream keyed by a 32-byte seed.
//!
//! The driver draws the seed once from the OS; tests and the simulator pass a fixed one, so a run
//! is reproducible. ChaCha20 (RFC 8439, zero nonce) is a fixed function, so the same seed gives
//! the same numbers on every platform and every version of this crate. Sub-machines get child
//! generators through [`Rng::child`].

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;

/// A deterministic random number generator (ChaCha20 keystream).
pub struct Rng {
    cipher: ChaCha20,
    buf: [u8; 64],
    pos: usize,
}

impl core::fmt::Debug for Rng {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Rng")
    }
}

impl Rng {
    /// A generator whose output is fully determined by `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Rng {
            cipher: ChaCha20::new(&seed.into(), &[0u8; 12].into()),
            buf: [0; 64],
            pos: 64,
        }
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out.iter_mut() {
            if self.pos == self.buf.len() {
                self.refill();
            }
            *b = self.buf[self.pos];
            self.pos += 1;
        }
    }

    fn refill(&mut self) {
        self.buf = [0; 64];
        if self.cipher.try_apply_keystream(&mut self.buf).is_err() {
            // 256 GiB of output drawn: rekey from the last block and go on.
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&self.buf[..32]);
            self.cipher = ChaCha20::new(&seed.into(), &[0u8; 12].into());
            self.buf = [0; 64];
            self.cipher.apply_keystream(&mut self.buf);
        }
        self.pos = 0;
    }

    /// 32 random bytes.
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.fill(&mut out);
        out
    }

    /// A random `u32`.
    pub fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_le_bytes(b)
    }

    /// A random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// A uniformly distributed number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Rejection sampling avoids modulo bias.
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// A uniform float in `[0, 1)`, like JS `Math.random()`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A new generator seeded from this one, for a sub-machine.
    pub fn child(&mut self) -> Rng {
        Rng::from_seed(self.bytes32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::from_seed([7; 32]);
        let mut b = Rng::from_seed([7; 32]);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(
            Rng::from_seed([8; 32]).next_u64(),
            Rng::from_seed([7; 32]).next_u64()
        );
    }

    #[test]
    fn rfc8439_keystream() {
        // ChaCha20 with an all-zero key and nonce, block 0 (RFC 8439 A.1 test vector 1).
        let mut r = Rng::from_seed([0; 32]);
        let mut out = [0u8; 16];
        r.fill(&mut out);
        assert_eq!(
            out,
            [
                0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90, 0x40, 0x5d, 0x6a, 0xe5, 0x53, 0x86,
                0xbd, 0x28
            ]
        );
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::from_seed([1; 32]);
        for n in 1..50 {
            assert!(r.below(n) < n);
        }
        assert_eq!(r.below(0), 0);
    }
}
