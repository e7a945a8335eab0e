//! The two-message Noise IK handshake hyperdht runs through the DHT (noise-handshake 4.2 with
//! noise-curve-ed, hyperdht `lib/noise-wrap.js`), and what it yields: transport keys, the
//! handshake hash, the holepunch secret and the secret-stream ids.
//!
//! The initiator (client) knows the responder's (server's) static key in advance. Message 1 is
//! `e, es, s, ss` + payload (96 + n bytes), message 2 is `e, ee, se` + payload (48 + n bytes).

use super::dh::RemotePoint;
use super::symmetric::{SymmetricState, MAX_MESSAGE};
use super::NoiseError;
use crate::crypto::{hash, hash_parts, keyed_hash64};
use crate::dht::keys::{command, namespace};
use crate::dht::KeyPair;

/// `Noise_IK_Ed25519_ChaChaPoly_BLAKE2b`.
pub const PROTOCOL_NAME: &[u8] = b"Noise_IK_Ed25519_ChaChaPoly_BLAKE2b";

/// secret-stream's namespaces (`namespace("hyperswarm/secret-stream", 3)`): initiator,
/// responder, send.
pub fn secret_stream_namespace(i: u8) -> [u8; 32] {
    hash_parts(&[&hash(b"hyperswarm/secret-stream"), &[i]])
}

/// What a completed handshake gives both sides.
#[derive(Clone, PartialEq, Eq)]
pub struct HandshakeOutput {
    /// Key for what we send (secret-stream `tx`).
    pub tx: [u8; 32],
    /// Key for what we receive.
    pub rx: [u8; 32],
    /// The final handshake hash.
    pub hash: [u8; 64],
    /// The peer's static public key.
    pub remote_public_key: [u8; 32],
    /// Whether we were the initiator.
    pub is_initiator: bool,
}

impl core::fmt::Debug for HandshakeOutput {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HandshakeOutput")
            .field(
                "remote_public_key",
                &crate::crypto::to_hex(&self.remote_public_key),
            )
            .field("is_initiator", &self.is_initiator)
            .finish_non_exhaustive()
    }
}

impl HandshakeOutput {
    /// `H32(NS_PEER_HOLEPUNCH; key = hash)`: the key that seals holepunch payloads.
    pub fn holepunch_secret(&self) -> [u8; 32] {
        keyed_hash64(&self.hash, &namespace(command::PEER_HOLEPUNCH))
    }

    /// secret-stream id of the initiator (`true`) or the responder (`false`).
    pub fn stream_id(&self, initiator: bool) -> [u8; 32] {
        let ns = secret_stream_namespace(if initiator { 0 } else { 1 });
        keyed_hash64(&self.hash, &ns)
    }

    /// Our own secret-stream id.
    pub fn local_stream_id(&self) -> [u8; 32] {
        self.stream_id(self.is_initiator)
    }

    /// The peer's secret-stream id.
    pub fn remote_stream_id(&self) -> [u8; 32] {
        self.stream_id(!self.is_initiator)
    }
}

fn initial_state(responder_static: &[u8; 32]) -> SymmetricState {
    let mut ss = SymmetricState::new(PROTOCOL_NAME);
    ss.mix_hash(&namespace(command::PEER_HANDSHAKE));
    ss.mix_hash(responder_static);
    ss
}

fn take32(b: &[u8]) -> Result<[u8; 32], NoiseError> {
    b.get(..32)
        .and_then(|s| s.try_into().ok())
        .ok_or(NoiseError::TooShort)
}

/// The client's side.
#[derive(Clone)]
pub struct Initiator {
    ss: SymmetricState,
    local: KeyPair,
    ephemeral: KeyPair,
    remote_static: [u8; 32],
    sent: bool,
}

impl Initiator {
    /// A handshake towards `remote_static`, with our static `local` key and a fresh `ephemeral`.
    pub fn new(local: KeyPair, remote_static: [u8; 32], ephemeral: KeyPair) -> Initiator {
        Initiator {
            ss: initial_state(&remote_static),
            local,
            ephemeral,
            remote_static,
            sent: false,
        }
    }

    /// Message 1 carrying `payload`.
    pub fn write_message1(&mut self, payload: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if self.sent {
            return Err(NoiseError::OutOfOrder);
        }
        let mut out = Vec::with_capacity(96 + payload.len());
        let e = self.ephemeral.public_key();
        out.extend_from_slice(&e);
        self.ss.mix_hash(&e);
        let rs = RemotePoint::new(&self.remote_static)?;
        self.ss.mix_key(&rs.dh(&self.ephemeral)?);
        self.ss
            .encrypt_and_hash(&self.local.public_key(), &mut out)?;
        self.ss.mix_key(&rs.dh(&self.local)?);
        self.ss.encrypt_and_hash(payload, &mut out)?;
        if out.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLong);
        }
        self.sent = true;
        Ok(out)
    }

    /// Reads message 2; returns its payload and the handshake output.
    pub fn read_message2(mut self, msg: &[u8]) -> Result<(Vec<u8>, HandshakeOutput), NoiseError> {
        if !self.sent {
            return Err(NoiseError::OutOfOrder);
        }
        if msg.len() < 48 {
            return Err(NoiseError::TooShort);
        }
        if msg.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLong);
        }
        let re = take32(msg)?;
        self.ss.mix_hash(&re);
        let re = RemotePoint::new(&re)?;
        self.ss.mix_key(&re.dh(&self.ephemeral)?);
        self.ss.mix_key(&re.dh(&self.local)?);
        let payload = self.ss.decrypt_and_hash(&msg[32..])?;
        let (k1, k2) = self.ss.split();
        Ok((
            payload,
            HandshakeOutput {
                tx: k1,
                rx: k2,
                hash: self.ss.h,
                remote_public_key: self.remote_static,
                is_initiator: true,
            },
        ))
    }
}

/// The server's side.
pub struct Responder {
    ss: SymmetricState,
    local: KeyPair,
    ephemeral: KeyPair,
    /// The client's ephemeral and static keys, validated, once message 1 is read.
    remote: Option<(RemotePoint, RemotePoint, [u8; 32])>,
}

impl Responder {
    /// A responder with our static `local` key and a fresh `ephemeral`.
    pub fn new(local: KeyPair, ephemeral: KeyPair) -> Responder {
        Responder {
            ss: initial_state(&local.public_key()),
            local,
            ephemeral,
            remote: None,
        }
    }

    /// Reads message 1; returns its payload and the client's static public key.
    pub fn read_message1(&mut self, msg: &[u8]) -> Result<(Vec<u8>, [u8; 32]), NoiseError> {
        if self.remote.is_some() {
            return Err(NoiseError::OutOfOrder);
        }
        if msg.len() < 96 {
            return Err(NoiseError::TooShort);
        }
        if msg.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLong);
        }
        let re = take32(msg)?;
        self.ss.mix_hash(&re);
        let re = RemotePoint::new(&re)?;
        self.ss.mix_key(&re.dh(&self.local)?);
        let rs_bytes = take32(&self.ss.decrypt_and_hash(&msg[32..80])?)?;
        let rs = RemotePoint::new(&rs_bytes)?;
        self.ss.mix_key(&rs.dh(&self.local)?);
        let payload = self.ss.decrypt_and_hash(&msg[80..])?;
        self.remote = Some((re, rs, rs_bytes));
        Ok((payload, rs_bytes))
    }

    /// Message 2 carrying `payload`, and the handshake output.
    pub fn write_message2(
        mut self,
        payload: &[u8],
    ) -> Result<(Vec<u8>, HandshakeOutput), NoiseError> {
        let Some((re, rs, rs_bytes)) = self.remote else {
            return Err(NoiseError::OutOfOrder);
        };
        let mut out = Vec::with_capacity(48 + payload.len());
        let e = self.ephemeral.public_key();
        out.extend_from_slice(&e);
        self.ss.mix_hash(&e);
        self.ss.mix_key(&re.dh(&self.ephemeral)?);
        self.ss.mix_key(&rs.dh(&self.ephemeral)?);
        self.ss.encrypt_and_hash(payload, &mut out)?;
        if out.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLong);
        }
        let (k1, k2) = self.ss.split();
        Ok((
            out,
            HandshakeOutput {
                tx: k2,
                rx: k1,
                hash: self.ss.h,
                remote_public_key: rs_bytes,
                is_initiator: false,
            },
        ))
    }
}
