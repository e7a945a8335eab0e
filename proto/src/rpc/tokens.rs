//! Round-trip tokens (dht-rpc `lib/io.js` `token()` and `_drain()`).
//!
//! `token(host) = keyed BLAKE2b-256(secret, utf8(host text))`, port excluded. Two secrets are
//! kept; every 10th drain (7.5 s) the older one is replaced by the hash of itself and becomes the
//! current one, so a token is accepted for 7.5 to 15 s.

use std::net::Ipv4Addr;

use crate::crypto;
use crate::rng::Rng;

/// Drain ticks between rotations (`_rotateSecrets = 10`).
pub const ROTATE_EVERY_DRAINS: u32 = 10;

/// The token secrets.
#[derive(Clone, Debug)]
pub struct Tokens {
    /// `[previous, current]`; `None` until first used, as in JS (rotation waits for that too).
    secrets: Option<[[u8; 32]; 2]>,
    countdown: u32,
    seed: [u8; 64],
}

impl Tokens {
    /// Token secrets drawn lazily from `rng`.
    pub fn new(rng: &mut Rng) -> Tokens {
        let mut seed = [0u8; 64];
        rng.fill(&mut seed);
        Tokens {
            secrets: None,
            countdown: ROTATE_EVERY_DRAINS,
            seed,
        }
    }

    /// Tokens with fixed secrets (`[previous, current]`), for tests and vectors.
    pub fn with_secrets(previous: [u8; 32], current: [u8; 32]) -> Tokens {
        Tokens {
            secrets: Some([previous, current]),
            countdown: ROTATE_EVERY_DRAINS,
            seed: [0; 64],
        }
    }

    fn secrets(&mut self) -> &[[u8; 32]; 2] {
        let seed = &self.seed;
        self.secrets.get_or_insert_with(|| {
            let mut a = [0u8; 32];
            let mut b = [0u8; 32];
            a.copy_from_slice(&seed[..32]);
            b.copy_from_slice(&seed[32..]);
            [a, b]
        })
    }

    /// The current token for `host`.
    pub fn create(&mut self, host: Ipv4Addr) -> [u8; 32] {
        let mut buf = [0u8; 15];
        let text = host_text(host, &mut buf);
        crypto::keyed_hash(&self.secrets()[1], text)
    }

    /// Whether `token` is valid for `host` under the current or the previous secret.
    pub fn verify(&mut self, host: Ipv4Addr, token: &[u8; 32]) -> bool {
        let mut buf = [0u8; 15];
        let text = host_text(host, &mut buf);
        let s = *self.secrets();
        crypto::keyed_hash(&s[1], text) == *token || crypto::keyed_hash(&s[0], text) == *token
    }

    /// One drain tick (750 ms): rotates every 10th time once secrets exist.
    pub fn on_drain(&mut self) {
        let Some(s) = &mut self.secrets else { return };
        self.countdown -= 1;
        if self.countdown == 0 {
            self.countdown = ROTATE_EVERY_DRAINS;
            let next = crypto::hash(&s[0]);
            s[0] = s[1];
            s[1] = next;
        }
    }
}

/// The dotted-quad text JS uses as the token message, written into `buf` (no allocation on
/// the request path).
fn host_text(host: Ipv4Addr, buf: &mut [u8; 15]) -> &[u8] {
    let mut n = 0;
    for (i, octet) in host.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        let digits = [octet / 100, (octet / 10) % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for d in &digits[skip..] {
            buf[n] = b'0' + d;
            n += 1;
        }
    }
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_text_is_dotted_quad() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "255.255.255.255",
            "1.2.3.4",
        ] {
            let mut buf = [0u8; 15];
            assert_eq!(host_text(ip.parse().unwrap(), &mut buf), ip.as_bytes());
        }
    }

    #[test]
    fn vector_and_rotation() {
        let mut t = Tokens::with_secrets([0x41; 32], [0x42; 32]);
        let host: Ipv4Addr = "127.0.0.1".parse().unwrap();
        let tok = t.create(host);
        assert_eq!(
            crypto::to_hex(&tok),
            "14426f25e8a69b6dec97887eef164339a42557025caf5b1869f51f779d85c1e4"
        );
        assert!(t.verify(host, &tok));
        assert!(!t.verify("127.0.0.2".parse().unwrap(), &tok));
        for _ in 0..ROTATE_EVERY_DRAINS {
            t.on_drain();
        }
        assert!(t.verify(host, &tok), "previous secret still accepted");
        for _ in 0..ROTATE_EVERY_DRAINS {
            t.on_drain();
        }
        assert!(!t.verify(host, &tok), "gone after two rotations");
    }
}
