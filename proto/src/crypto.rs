//! Hash primitives shared by every layer: BLAKE2b-256 as libsodium's `crypto_generichash`.
//!
//! `hash(x)` is unkeyed BLAKE2b with a 32-byte output; `keyed_hash(k, x)` is the keyed form
//! (dht-rpc tokens, `lib/io.js`). Hashing several parts is the same as hashing their
//! concatenation (`crypto_generichash_batch`).

use blake2::digest::consts::U32;
use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2b, Blake2bMac, Digest};

type Blake2b256 = Blake2b<U32>;

/// BLAKE2b-256 of `data`.
pub fn hash(data: &[u8]) -> [u8; 32] {
    Blake2b256::digest(data).into()
}

/// BLAKE2b-256 of the concatenation of `parts`.
pub fn hash_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2b256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// Keyed BLAKE2b-256 of `data` with a 32-byte `key`.
pub fn keyed_hash(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    // A 32-byte key is always a valid BLAKE2b key (1..=64 bytes), so this cannot fail.
    let mut mac = <Blake2bMac<U32> as KeyInit>::new_from_slice(key).expect("32-byte key is valid");
    mac.update(data);
    mac.finalize_fixed().into()
}

/// Keyed BLAKE2b-256 of `data` with a 64-byte `key` (the Noise handshake hash: hyperdht's
/// holepunch secret and secret-stream's ids and send keys are keyed with it). 64 bytes is
/// BLAKE2b's longest key, so there is no failure, and no fallback key to get wrong.
pub fn keyed_hash64(key: &[u8; 64], data: &[u8]) -> [u8; 32] {
    let mut mac = <Blake2bMac<U32> as KeyInit>::new(key.into());
    mac.update(data);
    mac.finalize_fixed().into()
}

/// Lowercase hex of `bytes` (for logs and tests).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses lowercase or uppercase hex; `None` on odd length or a non-hex digit.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_vector() {
        // dht.md V2: token for host "127.0.0.1" with secret 42 x 32.
        let t = keyed_hash(&[0x42; 32], b"127.0.0.1");
        assert_eq!(
            to_hex(&t),
            "14426f25e8a69b6dec97887eef164339a42557025caf5b1869f51f779d85c1e4"
        );
        assert_eq!(
            to_hex(&hash(&[0x42; 32])),
            "7538b84957fd8dd92c00e3529a664f3366f52b5f7529d7fe5ecaeaeed3fbb9f3"
        );
    }

    #[test]
    fn parts_equal_concat() {
        assert_eq!(hash_parts(&[b"ab", b"cd"]), hash(b"abcd"));
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex("00ff10").unwrap(), vec![0, 255, 16]);
        assert_eq!(to_hex(&[0, 255, 16]), "00ff10");
        assert!(from_hex("0").is_none());
        assert!(from_hex("zz").is_none());
    }
}
