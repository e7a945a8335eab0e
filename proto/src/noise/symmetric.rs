//! Noise symmetric state with BLAKE2b-512 and ChaCha20-Poly1305 (noise-handshake 4.2
//! `symmetric-state.js`, `cipher.js`, `hkdf.js`, `hmac.js`).
//!
//! `h` and `ck` are 64 bytes; HMAC is RFC 2104 over BLAKE2b-512 with a 128-byte block; HKDF has
//! an empty info; the AEAD nonce is 4 zero bytes then a 64-bit little-endian counter; the
//! associated data is `h`; MixHash always runs over the ciphertext.

use blake2::digest::Digest;
use blake2::Blake2b512;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;

use super::NoiseError;

/// BLAKE2b-512 of the concatenation of `parts`.
fn h64(parts: &[&[u8]]) -> [u8; 64] {
    let mut h = Blake2b512::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-BLAKE2b-512.
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 64] {
    let mut k = [0u8; 128];
    if key.len() > 128 {
        k[..64].copy_from_slice(&h64(&[key]));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36u8; 128];
    let mut opad = [0x5cu8; 128];
    for i in 0..128 {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let mut inner_parts: Vec<&[u8]> = vec![&ipad];
    inner_parts.extend_from_slice(parts);
    let inner = h64(&inner_parts);
    h64(&[&opad, &inner])
}

/// Noise HKDF with two 64-byte outputs.
pub fn hkdf(ck: &[u8; 64], ikm: &[u8]) -> ([u8; 64], [u8; 64]) {
    let prk = hmac(ck, &[ikm]);
    let o1 = hmac(&prk, &[&[1]]);
    let o2 = hmac(&prk, &[&o1, &[2]]);
    (o1, o2)
}

/// The ChaCha20-Poly1305 nonce for counter `n`.
fn nonce(n: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[4..].copy_from_slice(&n.to_le_bytes());
    out
}

/// Largest Noise message (noise-handshake checks it on both ends).
pub const MAX_MESSAGE: usize = 65535;

/// `h`, `ck` and the optional cipher key.
#[derive(Clone)]
pub struct SymmetricState {
    /// The handshake hash.
    pub h: [u8; 64],
    ck: [u8; 64],
    key: Option<[u8; 32]>,
    n: u64,
}

impl SymmetricState {
    /// `InitializeSymmetric` for a protocol name of at most 64 bytes (padded, not hashed).
    pub fn new(protocol: &[u8]) -> SymmetricState {
        let mut h = [0u8; 64];
        if protocol.len() <= 64 {
            h[..protocol.len()].copy_from_slice(protocol);
        } else {
            h = h64(&[protocol]);
        }
        SymmetricState {
            h,
            ck: h,
            key: None,
            n: 0,
        }
    }

    /// `MixHash`.
    pub fn mix_hash(&mut self, data: &[u8]) {
        self.h = h64(&[&self.h, data]);
    }

    /// `MixKey`.
    pub fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, t) = hkdf(&self.ck, ikm);
        self.ck = ck;
        let mut k = [0u8; 32];
        k.copy_from_slice(&t[..32]);
        self.key = Some(k);
        self.n = 0;
    }

    /// `EncryptAndHash`.
    pub fn encrypt_and_hash(
        &mut self,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), NoiseError> {
        let start = out.len();
        match &self.key {
            None => out.extend_from_slice(plaintext),
            Some(k) => {
                let cipher = ChaCha20Poly1305::new(k.into());
                let ct = cipher
                    .encrypt(
                        &nonce(self.n).into(),
                        Payload {
                            msg: plaintext,
                            aad: &self.h,
                        },
                    )
                    .map_err(|_| NoiseError::Encrypt)?;
                self.n += 1;
                out.extend_from_slice(&ct);
            }
        }
        let written = out[start..].to_vec();
        self.mix_hash(&written);
        Ok(())
    }

    /// `DecryptAndHash`.
    pub fn decrypt_and_hash(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let plain = match &self.key {
            None => ciphertext.to_vec(),
            Some(k) => {
                let cipher = ChaCha20Poly1305::new(k.into());
                let p = cipher
                    .decrypt(
                        &nonce(self.n).into(),
                        Payload {
                            msg: ciphertext,
                            aad: &self.h,
                        },
                    )
                    .map_err(|_| NoiseError::Decrypt)?;
                self.n += 1;
                p
            }
        };
        self.mix_hash(ciphertext);
        Ok(plain)
    }

    /// Whether a cipher key is set (so `EncryptAndHash` adds a 16-byte tag).
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// `Split`: `(k1, k2)`.
    pub fn split(&self) -> ([u8; 32], [u8; 32]) {
        let (a, b) = hkdf(&self.ck, &[]);
        let mut k1 = [0u8; 32];
        let mut k2 = [0u8; 32];
        k1.copy_from_slice(&a[..32]);
        k2.copy_from_slice(&b[..32]);
        (k1, k2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_long_key_is_hashed() {
        let long = [7u8; 200];
        assert_eq!(hmac(&long, &[b"x"]), hmac(&h64(&[&long]), &[b"x"]));
        assert_ne!(hmac(b"a", &[b"x"]), hmac(b"b", &[b"x"]));
    }

    #[test]
    fn encrypt_decrypt_round_trip() {
        let mut a = SymmetricState::new(b"proto");
        let mut b = SymmetricState::new(b"proto");
        a.mix_key(b"shared");
        b.mix_key(b"shared");
        let mut ct = Vec::new();
        a.encrypt_and_hash(b"hello", &mut ct).unwrap();
        assert_eq!(ct.len(), 21);
        assert_eq!(b.decrypt_and_hash(&ct).unwrap(), b"hello");
        assert_eq!(a.h, b.h);
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(b.clone().decrypt_and_hash(&bad), Err(NoiseError::Decrypt));
    }
}
