//! hyperdht's values (hyperdht 6.34 `lib/messages.js`), carried inside the dht-rpc `value`:
//! peer records, LOOKUP replies, ANNOUNCE/UNANNOUNCE, mutable records, and the relay framing of
//! PEER_HANDSHAKE and PEER_HOLEPUNCH (the Noise and holepunch payloads inside are opaque here).
//!
//! Decoders follow compact-encoding: trailing bytes and unknown flag bits are ignored; lengths
//! are checked. Encoders write what JS writes.

use std::net::SocketAddrV4;

use super::compact::{self, DecodeError, Reader};

/// A peer record: a public key and up to a few relay addresses (`peer`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The peer's Ed25519 public key.
    pub public_key: [u8; 32],
    /// DHT nodes (or the peer itself) through which the peer can be reached.
    pub relay_addresses: Vec<SocketAddrV4>,
}

impl Peer {
    /// Decodes a peer at the reader's position.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Peer, DecodeError> {
        Ok(Peer {
            public_key: r.fixed()?,
            relay_addresses: r.ipv4_array()?,
        })
    }

    /// Decodes a peer record.
    pub fn decode(buf: &[u8]) -> Result<Peer, DecodeError> {
        Peer::read(&mut Reader::new(buf))
    }

    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.public_key);
        compact::write_ipv4_array(out, &self.relay_addresses);
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(33 + 6 * self.relay_addresses.len());
        self.encode(&mut v);
        v
    }
}

/// A LOOKUP reply value (`lookupRawReply`): stored peer records and the topic's bump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupReply {
    /// Peers announced on the topic.
    pub peers: Vec<Peer>,
    /// The topic's bump value (0 when absent: older nodes omit it).
    pub bump: u64,
}

impl LookupReply {
    /// Decodes a LOOKUP reply value.
    pub fn decode(buf: &[u8]) -> Result<LookupReply, DecodeError> {
        let mut r = Reader::new(buf);
        let n = r.array_len(33)?;
        let mut peers = Vec::with_capacity(n);
        for _ in 0..n {
            peers.push(Peer::read(&mut r)?);
        }
        let bump = if r.is_empty() { 0 } else { r.uint()? };
        Ok(LookupReply { peers, bump })
    }

    /// Encodes stored records (already-encoded peers, written raw) and a bump.
    pub fn encode_raw(records: &[&[u8]], bump: u64, out: &mut Vec<u8>) {
        compact::write_uint(out, records.len() as u64);
        for r in records {
            out.extend_from_slice(r);
        }
        compact::write_uint(out, bump);
    }
}

/// ANNOUNCE / UNANNOUNCE request value (`announce`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// The announced record.
    pub peer: Option<Peer>,
    /// A refresh-chain token.
    pub refresh: Option<[u8; 32]>,
    /// Ed25519 signature over the announce signable.
    pub signature: Option<[u8; 64]>,
    /// Bump (not signed; 0 = absent).
    pub bump: u64,
}

impl Announce {
    /// Decodes an announce value.
    pub fn decode(buf: &[u8]) -> Result<Announce, DecodeError> {
        let mut r = Reader::new(buf);
        let flags = r.uint()?;
        let peer = if flags & 1 != 0 {
            Some(Peer::read(&mut r)?)
        } else {
            None
        };
        let refresh = if flags & 2 != 0 {
            Some(r.fixed()?)
        } else {
            None
        };
        let signature = if flags & 4 != 0 {
            Some(r.fixed()?)
        } else {
            None
        };
        let bump = if flags & 8 != 0 { r.uint()? } else { 0 };
        Ok(Announce {
            peer,
            refresh,
            signature,
            bump,
        })
    }

    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let flags = (self.peer.is_some() as u8)
            | (self.refresh.is_some() as u8) << 1
            | (self.signature.is_some() as u8) << 2
            | ((self.bump != 0) as u8) << 3;
        out.push(flags);
        if let Some(p) = &self.peer {
            p.encode(out);
        }
        if let Some(r) = &self.refresh {
            out.extend_from_slice(r);
        }
        if let Some(s) = &self.signature {
            out.extend_from_slice(s);
        }
        if self.bump != 0 {
            compact::write_uint(out, self.bump);
        }
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// The bytes a mutable value's signature covers, before hashing (`mutableSignable`).
pub fn mutable_signable(seq: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + 18);
    compact::write_uint(&mut v, seq);
    compact::write_buffer(&mut v, value);
    v
}

/// MUTABLE_PUT request value (`mutablePutRequest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutablePut {
    /// The signer's public key (the target is its hash).
    pub public_key: [u8; 32],
    /// Sequence number.
    pub seq: u64,
    /// The value.
    pub value: Vec<u8>,
    /// Signature over NS_MUTABLE_PUT ‖ H(mutableSignable).
    pub signature: [u8; 64],
}

impl MutablePut {
    /// Decodes a MUTABLE_PUT value.
    pub fn decode(buf: &[u8]) -> Result<MutablePut, DecodeError> {
        let mut r = Reader::new(buf);
        Ok(MutablePut {
            public_key: r.fixed()?,
            seq: r.uint()?,
            value: r.buffer()?.to_vec(),
            signature: r.fixed()?,
        })
    }

    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.public_key);
        compact::write_uint(out, self.seq);
        compact::write_buffer(out, &self.value);
        out.extend_from_slice(&self.signature);
    }
}

/// MUTABLE_GET reply value and the stored form of a mutable record (`mutableGetResponse`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutableRecord {
    /// Sequence number.
    pub seq: u64,
    /// The value.
    pub value: Vec<u8>,
    /// The signature.
    pub signature: [u8; 64],
}

impl MutableRecord {
    /// Decodes a MUTABLE_GET reply value.
    pub fn decode(buf: &[u8]) -> Result<MutableRecord, DecodeError> {
        let mut r = Reader::new(buf);
        Ok(MutableRecord {
            seq: r.uint()?,
            value: r.buffer()?.to_vec(),
            signature: r.fixed()?,
        })
    }

    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        compact::write_uint(out, self.seq);
        compact::write_buffer(out, &self.value);
        out.extend_from_slice(&self.signature);
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.value.len() + 80);
        self.encode(&mut v);
        v
    }
}

/// Relay modes of PEER_HANDSHAKE and PEER_HOLEPUNCH (`lib/router.js`).
pub mod mode {
    /// Sent by the client.
    pub const FROM_CLIENT: u64 = 0;
    /// Sent by the server.
    pub const FROM_SERVER: u64 = 1;
    /// Forwarded by the first relay.
    pub const FROM_RELAY: u64 = 2;
    /// Forwarded by a second relay.
    pub const FROM_SECOND_RELAY: u64 = 3;
    /// The final reply to the client.
    pub const REPLY: u64 = 4;
}

/// PEER_HANDSHAKE value (`handshake`): relay framing around the Noise bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Relay mode.
    pub mode: u64,
    /// The Noise message (opaque here).
    pub noise: Vec<u8>,
    /// The other peer's address, as the relay saw it.
    pub peer_address: Option<SocketAddrV4>,
    /// The first relay's address (second-relay routing).
    pub relay_address: Option<SocketAddrV4>,
}

impl Handshake {
    /// Decodes a handshake value.
    pub fn decode(buf: &[u8]) -> Result<Handshake, DecodeError> {
        let mut r = Reader::new(buf);
        let flags = r.uint()?;
        let mode = r.uint()?;
        let noise = r.buffer()?.to_vec();
        let peer_address = if flags & 1 != 0 {
            Some(r.ipv4_address()?)
        } else {
            None
        };
        let relay_address = if flags & 2 != 0 {
            Some(r.ipv4_address()?)
        } else {
            None
        };
        Ok(Handshake {
            mode,
            noise,
            peer_address,
            relay_address,
        })
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.noise.len() + 16);
        let flags = (self.peer_address.is_some() as u8) | (self.relay_address.is_some() as u8) << 1;
        out.push(flags);
        compact::write_uint(&mut out, self.mode);
        compact::write_buffer(&mut out, &self.noise);
        if let Some(a) = &self.peer_address {
            compact::write_ipv4_address(&mut out, a);
        }
        if let Some(a) = &self.relay_address {
            compact::write_ipv4_address(&mut out, a);
        }
        out
    }
}

/// PEER_HOLEPUNCH value (`holepunch`): relay framing around the holepunch payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holepunch {
    /// Relay mode.
    pub mode: u64,
    /// Holepunch session id.
    pub id: u64,
    /// The sealed holepunch payload (opaque here).
    pub payload: Vec<u8>,
    /// The other peer's address.
    pub peer_address: Option<SocketAddrV4>,
}

impl Holepunch {
    /// Decodes a holepunch value.
    pub fn decode(buf: &[u8]) -> Result<Holepunch, DecodeError> {
        let mut r = Reader::new(buf);
        let flags = r.uint()?;
        let mode = r.uint()?;
        let id = r.uint()?;
        let payload = r.buffer()?.to_vec();
        let peer_address = if flags & 1 != 0 {
            Some(r.ipv4_address()?)
        } else {
            None
        };
        Ok(Holepunch {
            mode,
            id,
            payload,
            peer_address,
        })
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 16);
        out.push(self.peer_address.is_some() as u8);
        compact::write_uint(&mut out, self.mode);
        compact::write_uint(&mut out, self.id);
        compact::write_buffer(&mut out, &self.payload);
        if let Some(a) = &self.peer_address {
            compact::write_ipv4_address(&mut out, a);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{from_hex, to_hex};

    #[test]
    fn relay_vector() {
        // dht.md V7: N -> S relayed handshake value.
        let hs = Handshake {
            mode: mode::FROM_RELAY,
            noise: from_hex("00112233").unwrap(),
            peer_address: Some("127.0.0.2:40001".parse().unwrap()),
            relay_address: None,
        };
        assert_eq!(
            to_hex(&hs.to_bytes()),
            "01020400112233".to_owned() + "7f000002419c"
        );
        assert_eq!(Handshake::decode(&hs.to_bytes()).unwrap(), hs);
    }

    #[test]
    fn lookup_reply_without_bump() {
        let mut v = Vec::new();
        let p = Peer {
            public_key: [7; 32],
            relay_addresses: vec!["1.2.3.4:5678".parse().unwrap()],
        };
        LookupReply::encode_raw(&[&p.to_bytes()], 0, &mut v);
        let d = LookupReply::decode(&v).unwrap();
        assert_eq!(d.peers, vec![p.clone()]);
        v.pop();
        assert_eq!(LookupReply::decode(&v).unwrap().bump, 0);
    }
}
