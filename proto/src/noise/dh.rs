//! The "Ed25519 DH" of noise-curve-ed 2.1: the clamped Ed25519 signing scalar times the peer's
//! Edwards point, output as a compressed Edwards point (not X25519). Inputs libsodium refuses
//! are refused here too: non-canonical encodings, points off the curve, small-order points,
//! points outside the prime-order subgroup, and an identity result.

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::traits::IsIdentity;

use super::NoiseError;
use crate::dht::KeyPair;

/// `DH(local key pair, remote public key)` as noise-curve-ed computes it.
pub fn dh(local: &KeyPair, remote: &[u8; 32]) -> Result<[u8; 32], NoiseError> {
    let compressed = CompressedEdwardsY(*remote);
    let point = compressed.decompress().ok_or(NoiseError::BadPublicKey)?;
    if point.compress().0 != *remote || point.is_small_order() || !point.is_torsion_free() {
        return Err(NoiseError::BadPublicKey);
    }
    let shared = local.scalar() * point;
    if shared.is_identity() {
        return Err(NoiseError::BadPublicKey);
    }
    Ok(shared.compress().0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::to_hex;

    #[test]
    fn vector_and_symmetry() {
        let a = KeyPair::from_seed(&[1; 32]);
        let b = KeyPair::from_seed(&[2; 32]);
        let ab = dh(&a, &b.public_key()).unwrap();
        assert_eq!(
            to_hex(&ab),
            "5612509e82825296cbaaae306ffe1088cbbe200de8ba23dad06f67e607f861df"
        );
        assert_eq!(dh(&b, &a.public_key()).unwrap(), ab);
    }

    #[test]
    fn refuses_bad_points() {
        let a = KeyPair::from_seed(&[1; 32]);
        // The identity (small order) and a non-canonical encoding of it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(dh(&a, &identity), Err(NoiseError::BadPublicKey));
        let mut noncanonical = [0xff; 32];
        noncanonical[31] = 0x7f;
        noncanonical[0] = 0xee;
        assert_eq!(dh(&a, &noncanonical), Err(NoiseError::BadPublicKey));
        // An order-8 point.
        let mut order8 = [0u8; 32];
        order8[31] = 0x80;
        order8[0] = 0x01;
        assert!(dh(&a, &order8).is_err());
    }
}
