//! Sealing holepunch payloads and address tokens (hyperdht `lib/secure-payload.js`).
//!
//! Payloads are sealed with libsodium's `crypto_secretbox_easy` (XSalsa20-Poly1305) under the
//! holepunch secret of the handshake: `nonce(24) ‖ tag(16) ‖ ciphertext`. Tokens prove that a
//! peer receives traffic at an address: `keyed BLAKE2b-256(local secret, dotted host text)`.

use std::net::Ipv4Addr;

use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;

use crate::crypto::keyed_hash;
use crate::wire::holepunch::HolepunchPayload;

/// Seals and opens payloads of one connection attempt; makes its tokens.
#[derive(Clone)]
pub struct SecurePayload {
    key: [u8; 32],
    local_secret: [u8; 32],
}

impl core::fmt::Debug for SecurePayload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SecurePayload")
    }
}

impl SecurePayload {
    /// With the handshake's holepunch secret and a fresh random local secret.
    pub fn new(holepunch_secret: [u8; 32], local_secret: [u8; 32]) -> SecurePayload {
        SecurePayload {
            key: holepunch_secret,
            local_secret,
        }
    }

    /// `nonce ‖ secretbox(payload)`.
    pub fn seal(&self, payload: &HolepunchPayload, nonce: [u8; 24]) -> Vec<u8> {
        let cipher = XSalsa20Poly1305::new(&self.key.into());
        let plain = payload.to_bytes();
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ct = cipher
            .encrypt(&nonce.into(), plain.as_slice())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a sealed payload; `None` if it is too short, forged or malformed (JS ignores it).
    pub fn open(&self, sealed: &[u8]) -> Option<HolepunchPayload> {
        if sealed.len() <= 40 {
            return None;
        }
        let cipher = XSalsa20Poly1305::new(&self.key.into());
        let nonce: [u8; 24] = sealed[..24].try_into().ok()?;
        let plain = cipher.decrypt(&nonce.into(), &sealed[24..]).ok()?;
        HolepunchPayload::decode(&plain).ok()
    }

    /// Our token for `host`.
    pub fn token(&self, host: Ipv4Addr) -> [u8; 32] {
        keyed_hash(&self.local_secret, host.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{from_hex, to_hex};

    const SECRET: &str = "406d109320f3afd81fd8fcfdd5032beb17bffa8c073c237f37915e4ab2f6114e";

    #[test]
    fn vectors() {
        let key: [u8; 32] = from_hex(SECRET).unwrap().try_into().unwrap();
        let sp = SecurePayload::new(key, [0x5a; 32]);
        assert_eq!(
            to_hex(&sp.token("198.51.100.7".parse().unwrap())),
            "c8e971b2bb6aa186f22d205d79a7f725bd9bb203a6f2b034923eb9ae6600c37d"
        );
        let probe = HolepunchPayload {
            firewall: 2,
            addresses: Some(vec!["198.51.100.7:51000".parse().unwrap()]),
            remote_address: Some("203.0.113.5:40000".parse().unwrap()),
            ..HolepunchPayload::default()
        };
        assert_eq!(
            to_hex(&probe.to_bytes()),
            "0c00020001c633640738c7cb007105409c"
        );
        let sealed = sp.seal(&probe, [0x10; 24]);
        assert_eq!(
            to_hex(&sealed),
            "1010101010101010101010101010101010101010101010103ccb63ac8878efbb0594017588bfdda0375f677822d1d99cf2ac5a3d2037749c91"
        );
        assert_eq!(sp.open(&sealed), Some(probe));
        let punch = "121212121212121212121212121212121212121212121212b05b5d3a43afb641e5f1f8d0aad10262117367d6d7fb1e1b9bf423dc85c9c8315a43dfadc0e6e300933e85f1d1a889fff274e4f02ff0a9c9d0774308eb0ea5a9299a8b8bcf061e80b4a355d587c73a7df41c14929af2c439958883";
        let opened = sp.open(&from_hex(punch).unwrap()).unwrap();
        assert!(opened.punching);
        assert_eq!(opened.round, 1);
        assert_eq!(
            to_hex(&opened.remote_token.unwrap()),
            "c8e971b2bb6aa186f22d205d79a7f725bd9bb203a6f2b034923eb9ae6600c37d"
        );
        let abort = sp.open(&from_hex("131313131313131313131313131313131313131313131313ed62eb999be27ee8614d5f86ced8e01b63d53fce").unwrap()).unwrap();
        assert_eq!((abort.error, abort.round), (1, 2));
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert_eq!(sp.open(&bad), None);
        assert_eq!(sp.open(&sealed[..40]), None);
    }
}
