//! The "Ed25519 DH" of noise-curve-ed 2.1: the clamped Ed25519 signing scalar times the peer's
//! Edwards point, output as a compressed Edwards point (not X25519). Inputs libsodium refuses
//! are refused here too: non-canonical encodings, points off the curve, small-order points,
//! points outside the prime-order subgroup, and an identity result.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::traits::IsIdentity;

use super::NoiseError;
use crate::dht::KeyPair;

/// A remote public key that passed libsodium's checks, decompressed once so a handshake that
/// uses it in two DHs validates it once (the subgroup check costs about as much as the DH).
#[derive(Clone, Copy, Debug)]
pub struct RemotePoint(EdwardsPoint);

impl RemotePoint {
    /// Decompresses and validates `remote` as `crypto_scalarmult_ed25519` does: refuses
    /// non-canonical encodings, points off the curve, small-order points and points outside
    /// the prime-order subgroup.
    pub fn new(remote: &[u8; 32]) -> Result<RemotePoint, NoiseError> {
        if !is_canonical(remote) {
            return Err(NoiseError::BadPublicKey);
        }
        let point = CompressedEdwardsY(*remote)
            .decompress()
            .ok_or(NoiseError::BadPublicKey)?;
        if point.is_small_order() || !point.is_torsion_free() {
            return Err(NoiseError::BadPublicKey);
        }
        Ok(RemotePoint(point))
    }

    /// `DH(local key pair, this point)`; an identity result is refused.
    pub fn dh(&self, local: &KeyPair) -> Result<[u8; 32], NoiseError> {
        let shared = local.scalar() * self.0;
        if shared.is_identity() {
            return Err(NoiseError::BadPublicKey);
        }
        Ok(shared.compress().0)
    }
}

/// Whether `y` (the low 255 bits) is below p = 2^255 - 19. The sign bit's only other
/// non-canonical use, x = 0 with the sign set, encodes a small-order point, refused anyway.
fn is_canonical(encoded: &[u8; 32]) -> bool {
    // y >= p exactly when the top byte (sign masked) is 0x7f, the middle bytes are 0xff and
    // the low byte is at least 0xed.
    !(encoded[31] & 0x7f == 0x7f && encoded[1..31].iter().all(|&b| b == 0xff) && encoded[0] >= 0xed)
}

/// `DH(local key pair, remote public key)` as noise-curve-ed computes it.
pub fn dh(local: &KeyPair, remote: &[u8; 32]) -> Result<[u8; 32], NoiseError> {
    RemotePoint::new(remote)?.dh(local)
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

    /// `RemotePoint::new` (canonical check on the bytes) accepts exactly what decompressing,
    /// recompressing and comparing accepts, on every encoding near p and on random ones.
    #[test]
    fn byte_canonical_check_accepts_what_recompression_accepts() {
        let mut rng = crate::rng::Rng::from_seed([9; 32]);
        let mut cases: Vec<[u8; 32]> = (0..2000)
            .map(|_| {
                let mut b = [0u8; 32];
                rng.fill(&mut b);
                b
            })
            .collect();
        for low in 0xe0..=0xff_u8 {
            for top in [0x7f, 0xff] {
                let mut b = [0xff; 32];
                b[0] = low;
                b[31] = top;
                cases.push(b);
            }
        }
        let mut accepted = 0;
        for b in cases {
            let by_recompression = CompressedEdwardsY(b)
                .decompress()
                .is_some_and(|p| p.compress().0 == b && !p.is_small_order() && p.is_torsion_free());
            assert_eq!(RemotePoint::new(&b).is_ok(), by_recompression, "{b:02x?}");
            accepted += usize::from(by_recompression);
        }
        // Random bytes are on the curve half the time and in the subgroup 1/8 of that.
        assert!(
            accepted > 50,
            "only {accepted} accepted: the test checks nothing"
        );
    }
}
