//! Ed25519 key pairs and the exact bytes hyperdht signs (hyperdht `lib/persistent.js`,
//! `lib/crypto.js`, `lib/constants.js` NS).
//!
//! Every signed message is 64 bytes: a 32-byte namespace ‖ a 32-byte BLAKE2b hash. Namespaces
//! are `H(H("hyperswarm/dht") ‖ [command])` (hypercore-crypto `namespace`). Verification is
//! strict like libsodium's `crypto_sign_verify_detached` (canonical S, no small-order keys or R).

use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::crypto::{hash, hash_parts};
use crate::wire::hyperdht::{mutable_signable, Peer};

/// hyperdht command numbers (`lib/constants.js` COMMANDS), the external command space.
pub mod command {
    /// Relayed Noise handshake.
    pub const PEER_HANDSHAKE: u64 = 0;
    /// Relayed holepunch message.
    pub const PEER_HOLEPUNCH: u64 = 1;
    /// Find the record of a server by its key hash.
    pub const FIND_PEER: u64 = 2;
    /// List peers announced on a topic.
    pub const LOOKUP: u64 = 3;
    /// Store a signed peer record.
    pub const ANNOUNCE: u64 = 4;
    /// Remove a signed peer record.
    pub const UNANNOUNCE: u64 = 5;
    /// Store a signed mutable value.
    pub const MUTABLE_PUT: u64 = 6;
    /// Read a mutable value.
    pub const MUTABLE_GET: u64 = 7;
    /// Store a content-addressed value.
    pub const IMMUTABLE_PUT: u64 = 8;
    /// Read a content-addressed value.
    pub const IMMUTABLE_GET: u64 = 9;
    /// Plugin command.
    pub const PLUGIN: u64 = 10;
}

/// Response error codes of hyperdht's storage (`lib/constants.js` ERROR).
pub mod error_code {
    /// MUTABLE_PUT with a seq already stored for a different value.
    pub const SEQ_REUSED: u64 = 16;
    /// MUTABLE_PUT with a seq below the stored one.
    pub const SEQ_TOO_LOW: u64 = 17;
}

/// The signature namespace of hyperdht command `cmd`.
pub fn namespace(cmd: u64) -> [u8; 32] {
    let base = hash(b"hyperswarm/dht");
    hash_parts(&[&base, &[cmd as u8]])
}

/// An Ed25519 key pair (libsodium `crypto_sign_seed_keypair` layout).
#[derive(Clone)]
pub struct KeyPair {
    signing: SigningKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", crate::crypto::to_hex(&self.public_key()))
    }
}

impl KeyPair {
    /// The key pair of a 32-byte seed (hyperdht `keyPair(seed)`).
    pub fn from_seed(seed: &[u8; 32]) -> KeyPair {
        KeyPair {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The 32-byte seed (secret).
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The clamped signing scalar (noise-curve-ed uses it for DH).
    pub(crate) fn scalar(&self) -> curve25519_dalek::Scalar {
        self.signing.to_scalar()
    }

    /// Detached signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }
}

/// Verifies a detached signature like libsodium does.
pub fn verify(public_key: &[u8; 32], msg: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let sig = Signature::from_bytes(signature);
    key.verify_strict(msg, &sig).is_ok()
}

/// The 64 bytes an ANNOUNCE (or UNANNOUNCE, with `ns = namespace(UNANNOUNCE)`) signs:
/// `ns ‖ H(target ‖ node_id ‖ token ‖ encode(peer) ‖ refresh?)`, bound to the storing node.
pub fn announce_signable(
    ns: &[u8; 32],
    target: &[u8; 32],
    node_id: &[u8; 32],
    token: &[u8; 32],
    peer: &Peer,
    refresh: Option<&[u8; 32]>,
) -> [u8; 64] {
    let peer = peer.to_bytes();
    let h = hash_parts(&[
        target,
        node_id,
        token,
        &peer,
        refresh.map_or(&[][..], |r| &r[..]),
    ]);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(ns);
    out[32..].copy_from_slice(&h);
    out
}

/// The 64 bytes a mutable value's signature covers: `NS_MUTABLE_PUT ‖ H(uint seq ‖ buffer value)`.
pub fn mutable_signable_bytes(seq: u64, value: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&namespace(command::MUTABLE_PUT));
    out[32..].copy_from_slice(&hash(&mutable_signable(seq, value)));
    out
}

/// Signs a mutable value.
pub fn sign_mutable(key: &KeyPair, seq: u64, value: &[u8]) -> [u8; 64] {
    key.sign(&mutable_signable_bytes(seq, value))
}

/// Checks a mutable value's signature.
pub fn verify_mutable(public_key: &[u8; 32], seq: u64, value: &[u8], signature: &[u8; 64]) -> bool {
    verify(public_key, &mutable_signable_bytes(seq, value), signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::to_hex;
    use crate::ids::NodeId;

    #[test]
    fn namespaces_match_js() {
        assert_eq!(
            to_hex(&namespace(command::ANNOUNCE)),
            "36386adddf9f6fd60db83a6f42fc159d1146aa8644037664230aaa1f0179d497"
        );
        assert_eq!(
            to_hex(&namespace(command::MUTABLE_PUT)),
            "668e823edd5ce7f5338d68bf1161f4a3c28ce437ee2ab49efd30d99366039b1e"
        );
    }

    #[test]
    fn announce_vector() {
        // dht.md V5.
        let kp = KeyPair::from_seed(&[1; 32]);
        assert_eq!(
            to_hex(&kp.public_key()),
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        );
        let target = hash(b"my topic");
        let node_id = NodeId::from_addr(&"127.0.0.1:49737".parse().unwrap());
        let peer = Peer {
            public_key: kp.public_key(),
            relay_addresses: vec![
                "1.2.3.4:5678".parse().unwrap(),
                "127.0.0.1:49737".parse().unwrap(),
            ],
        };
        let signable = announce_signable(
            &namespace(command::ANNOUNCE),
            &target,
            &node_id.0,
            &[0xaa; 32],
            &peer,
            None,
        );
        assert_eq!(
            to_hex(&signable[32..]),
            "61de8ca32a6b1de3a4b81cf2b26e22b6eef1acd476af6b199f89d45125400ee1"
        );
        let sig = kp.sign(&signable);
        assert_eq!(
            to_hex(&sig),
            "21d5da87ca2346069d2430bfc005e4985167d220ad90cf492a823142a3cd4492f83d3768b78566f85f2a2db04f858727cc8acf965956f04a2b1b5634c1c37907"
        );
        assert!(verify(&kp.public_key(), &signable, &sig));
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(!verify(&kp.public_key(), &signable, &bad));
    }

    #[test]
    fn mutable_vector() {
        // dht.md V6.
        let kp = KeyPair::from_seed(&[1; 32]);
        let sig = sign_mutable(&kp, 1, b"hello world");
        assert_eq!(
            to_hex(&sig),
            "b38791ded145e6e650e24e4eb16799f08bf39c8fb4b75ca8e4024a80aa1c70acaad0a7058baa89a87e0416b7c7e9d6f16e967caf3311211b207de51a6747e00c"
        );
        assert!(verify_mutable(&kp.public_key(), 1, b"hello world", &sig));
        assert!(!verify_mutable(&kp.public_key(), 2, b"hello world", &sig));
    }
}
