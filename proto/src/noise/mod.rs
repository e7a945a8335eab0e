//! Noise IK over Ed25519 as hyperdht uses it: the DH, the symmetric state, the handshake and
//! the secrets derived from it. Pure functions and small state machines; no I/O.

mod dh;
mod handshake;
mod symmetric;

use core::fmt;

pub use dh::{dh, RemotePoint};
pub use handshake::{
    secret_stream_namespace, HandshakeOutput, Initiator, Responder, PROTOCOL_NAME,
};
pub use symmetric::{hkdf, hmac, SymmetricState, MAX_MESSAGE};

/// Why a handshake step failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoiseError {
    /// A public key (static or ephemeral) libsodium would refuse.
    BadPublicKey,
    /// The message is shorter than its fixed fields.
    TooShort,
    /// The message is longer than 65535 bytes.
    TooLong,
    /// Authentication failed (tampered message or wrong keys).
    Decrypt,
    /// Encryption failed.
    Encrypt,
    /// A step was called out of order.
    OutOfOrder,
}

impl fmt::Display for NoiseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoiseError::BadPublicKey => "invalid public key",
            NoiseError::TooShort => "handshake message too short",
            NoiseError::TooLong => "handshake message too long",
            NoiseError::Decrypt => "handshake message failed authentication",
            NoiseError::Encrypt => "encryption failed",
            NoiseError::OutOfOrder => "handshake step out of order",
        })
    }
}

impl std::error::Error for NoiseError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{from_hex, to_hex};
    use crate::dht::KeyPair;

    const M1: &str = "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1605c88a9067c5f85bd7499907d5c869548dd90bed5350bb2e7cb47efe61f60bc315838e49205f95b5a618d7c8c212eebf0fd5de91a7dbb77e815cfdd5c45dfa2a4ca804e0d6d98ff133ded2836198b9255745bfe";
    const M2: &str = "ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7cf683821971cb471e0efebec5857217c1e937679e1c74570aea92cff163c2dbea37377a884035f122ca2291df758ff12ca5f798fd32f6f61b90";

    /// connect.md V1: both messages and every output byte for byte.
    #[test]
    fn ik_vector() {
        let client = KeyPair::from_seed(&[1; 32]);
        let server = KeyPair::from_seed(&[2; 32]);
        let p1 = from_hex("011a000001c0a8010a49c20100fe785634120001").unwrap();
        let p2 = from_hex(
            "015b000000015863035649c2cb007105409c01cb007105409c0100fef0debc9a0001015863035649c2",
        )
        .unwrap();
        let mut ini = Initiator::new(
            client.clone(),
            server.public_key(),
            KeyPair::from_seed(&[3; 32]),
        );
        let m1 = ini.write_message1(&p1).unwrap();
        assert_eq!(to_hex(&m1), M1);
        let mut res = Responder::new(server, KeyPair::from_seed(&[4; 32]));
        let (got1, rs) = res.read_message1(&m1).unwrap();
        assert_eq!((got1, rs), (p1, client.public_key()));
        let (m2, out_r) = res.write_message2(&p2).unwrap();
        assert_eq!(m2.len(), 48 + p2.len());
        let (got2, out_i) = ini.read_message2(&m2).unwrap();
        assert_eq!(got2, p2);
        assert_eq!(
            to_hex(&out_i.tx),
            "cc00d99bd3a15a6779df38fd42fd25a84d73264023e7c1da95cf3bcbdce9c210"
        );
        assert_eq!(
            to_hex(&out_i.rx),
            "78dd48ecef5d11fd953197694a8ee2d9f8d86d49d56d856e3dd7c8e78047826b"
        );
        assert_eq!((out_r.tx, out_r.rx), (out_i.rx, out_i.tx));
        assert_eq!(out_i.hash, out_r.hash);
        assert_eq!(to_hex(&out_i.hash), "d6b5f55924e91a981d12abb62e70b63c8c60f4c6103ca1142eef45bfebedd92645e2bc185d3ac877d672437c41412d32e9562f6a55acb2599883eedbff01f019");
        assert_eq!(
            to_hex(&out_i.holepunch_secret()),
            "406d109320f3afd81fd8fcfdd5032beb17bffa8c073c237f37915e4ab2f6114e"
        );
        assert_eq!(
            to_hex(&out_i.local_stream_id()),
            "c672ce5adf72be487d1a23f67ea2cb4a44c3a3f7e42e187bb03e587010b0120f"
        );
        assert_eq!(
            to_hex(&out_r.local_stream_id()),
            "dfcec5f69824e1ac4831197dff77a4c64996c725c10387cb5cb1e1e33f241865"
        );
        assert_eq!(out_r.remote_stream_id(), out_i.local_stream_id());
        assert_eq!(
            to_hex(&secret_stream_namespace(2)),
            "aab97d097471f56651b0460ffc8aaa7d3342f7377597d60b925a1dac689adcbf"
        );
    }

    #[test]
    fn message2_vector_from_js() {
        // The JS server's message 2 (the vector's) authenticates in Rust.
        let client = KeyPair::from_seed(&[1; 32]);
        let server = KeyPair::from_seed(&[2; 32]);
        let p1 = from_hex("011a000001c0a8010a49c20100fe785634120001").unwrap();
        let mut ini = Initiator::new(client, server.public_key(), KeyPair::from_seed(&[3; 32]));
        ini.write_message1(&p1).unwrap();
        let (payload, out) = ini.read_message2(&from_hex(M2).unwrap()).unwrap();
        assert_eq!(payload.len(), 89 - 48);
        assert_eq!(
            to_hex(&out.tx),
            "cc00d99bd3a15a6779df38fd42fd25a84d73264023e7c1da95cf3bcbdce9c210"
        );
    }

    #[test]
    fn tampering_and_wrong_keys_fail() {
        let client = KeyPair::from_seed(&[1; 32]);
        let server = KeyPair::from_seed(&[2; 32]);
        let mut ini = Initiator::new(
            client.clone(),
            server.public_key(),
            KeyPair::from_seed(&[3; 32]),
        );
        let m1 = ini.write_message1(b"hi").unwrap();
        for i in [0, 40, m1.len() - 1] {
            let mut bad = m1.clone();
            bad[i] ^= 1;
            let mut res = Responder::new(server.clone(), KeyPair::from_seed(&[4; 32]));
            assert!(
                res.read_message1(&bad).is_err(),
                "tampered byte {i} accepted"
            );
        }
        // Sent to the wrong server.
        let other = KeyPair::from_seed(&[9; 32]);
        let mut res = Responder::new(other, KeyPair::from_seed(&[4; 32]));
        assert_eq!(res.read_message1(&m1).unwrap_err(), NoiseError::Decrypt);
        // Message 2 from someone else.
        let mut res = Responder::new(server.clone(), KeyPair::from_seed(&[4; 32]));
        res.read_message1(&m1).unwrap();
        let (mut m2, _) = res.write_message2(b"ok").unwrap();
        m2[40] ^= 1;
        assert_eq!(ini.read_message2(&m2).unwrap_err(), NoiseError::Decrypt);
    }
}
