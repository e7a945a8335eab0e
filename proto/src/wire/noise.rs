//! The plaintext inside the Noise handshake messages (hyperdht 6.34 `lib/messages.js`
//! `noisePayload`): what each side tells the other about its reachability, addresses, UDX
//! stream and relays.

use std::net::{SocketAddrV4, SocketAddrV6};

use super::compact::{self, DecodeError, Reader};

/// hyperdht `FIREWALL` values.
pub mod firewall {
    /// Not known yet.
    pub const UNKNOWN: u64 = 0;
    /// Publicly reachable.
    pub const OPEN: u64 = 1;
    /// Behind a NAT with a consistent mapping.
    pub const CONSISTENT: u64 = 2;
    /// Behind a NAT that picks a new port per destination.
    pub const RANDOM: u64 = 3;
}

/// hyperdht `ERROR` values used in payloads.
pub mod error {
    /// No error.
    pub const NONE: u64 = 0;
    /// The handshake or holepunch was aborted.
    pub const ABORTED: u64 = 1;
    /// Incompatible payload version.
    pub const VERSION_MISMATCH: u64 = 2;
    /// The server is busy punching; retry later.
    pub const TRY_LATER: u64 = 3;
}

/// A relay pair in the holepunch info: a DHT node and our address as it saw us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayInfo {
    /// The DHT node.
    pub relay_address: SocketAddrV4,
    /// Our address as that node saw it.
    pub peer_address: SocketAddrV4,
}

/// Holepunch info (server only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolepunchInfo {
    /// The holepunch session id (slot) at the server.
    pub id: u64,
    /// Relays the client can reach the server through.
    pub relays: Vec<RelayInfo>,
}

/// UDX stream info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdxInfo {
    /// Version (1).
    pub version: u64,
    /// Feature bit 0.
    pub reusable_socket: bool,
    /// The sender's local UDX stream id.
    pub id: u64,
    /// Initial sequence (always 0).
    pub seq: u64,
}

/// Blind-relay info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayThrough {
    /// Version (1).
    pub version: u64,
    /// The relay server's public key.
    pub public_key: [u8; 32],
    /// Pairing token.
    pub token: [u8; 32],
}

/// The handshake payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoisePayload {
    /// Payload version; only 1 is understood (other versions decode to this field alone).
    pub version: u64,
    /// Error code ([`error`]).
    pub error: u64,
    /// Firewall kind ([`firewall`]).
    pub firewall: u64,
    /// Holepunch info.
    pub holepunch: Option<HolepunchInfo>,
    /// IPv4 addresses to try.
    pub addresses4: Vec<SocketAddrV4>,
    /// IPv6 addresses to try.
    pub addresses6: Vec<SocketAddrV6>,
    /// UDX stream info.
    pub udx: Option<UdxInfo>,
    /// secret-stream info (version).
    pub secret_stream: Option<u64>,
    /// Blind relay.
    pub relay_through: Option<RelayThrough>,
    /// The server's announce relays.
    pub relay_addresses: Option<Vec<SocketAddrV4>>,
}

impl NoisePayload {
    /// Decodes a payload. A version other than 1 stops decoding (as JS does).
    pub fn decode(buf: &[u8]) -> Result<NoisePayload, DecodeError> {
        let mut r = Reader::new(buf);
        let version = r.uint()?;
        if version != 1 {
            return Ok(NoisePayload {
                version,
                ..NoisePayload::default()
            });
        }
        let flags = r.uint()?;
        let mut p = NoisePayload {
            version,
            error: r.uint()?,
            firewall: r.uint()?,
            ..NoisePayload::default()
        };
        if flags & 1 != 0 {
            let id = r.uint()?;
            let n = r.array_len(12)?;
            let mut relays = Vec::with_capacity(n);
            for _ in 0..n {
                relays.push(RelayInfo {
                    relay_address: r.ipv4_address()?,
                    peer_address: r.ipv4_address()?,
                });
            }
            p.holepunch = Some(HolepunchInfo { id, relays });
        }
        if flags & 2 != 0 {
            p.addresses4 = r.ipv4_array()?;
        }
        if flags & 4 != 0 {
            let n = r.array_len(18)?;
            for _ in 0..n {
                p.addresses6.push(r.ipv6_address()?);
            }
        }
        if flags & 8 != 0 {
            let version = r.uint()?;
            let features = r.uint()?;
            p.udx = Some(UdxInfo {
                version,
                reusable_socket: features & 1 != 0,
                id: r.uint()?,
                seq: r.uint()?,
            });
        }
        if flags & 16 != 0 {
            p.secret_stream = Some(r.uint()?);
        }
        if flags & 32 != 0 {
            let version = r.uint()?;
            let _flags = r.uint()?;
            p.relay_through = Some(RelayThrough {
                version,
                public_key: r.fixed()?,
                token: r.fixed()?,
            });
        }
        if flags & 64 != 0 {
            p.relay_addresses = Some(r.ipv4_array()?);
        }
        Ok(p)
    }

    /// The encoding (always version 1, as JS writes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let flags = (self.holepunch.is_some() as u64)
            | ((!self.addresses4.is_empty()) as u64) << 1
            | ((!self.addresses6.is_empty()) as u64) << 2
            | (self.udx.is_some() as u64) << 3
            | (self.secret_stream.is_some() as u64) << 4
            | (self.relay_through.is_some() as u64) << 5
            | (self.relay_addresses.is_some() as u64) << 6;
        compact::write_uint(&mut out, 1);
        compact::write_uint(&mut out, flags);
        compact::write_uint(&mut out, self.error);
        compact::write_uint(&mut out, self.firewall);
        if let Some(h) = &self.holepunch {
            compact::write_uint(&mut out, h.id);
            compact::write_uint(&mut out, h.relays.len() as u64);
            for r in &h.relays {
                compact::write_ipv4_address(&mut out, &r.relay_address);
                compact::write_ipv4_address(&mut out, &r.peer_address);
            }
        }
        if !self.addresses4.is_empty() {
            compact::write_ipv4_array(&mut out, &self.addresses4);
        }
        if !self.addresses6.is_empty() {
            compact::write_uint(&mut out, self.addresses6.len() as u64);
            for a in &self.addresses6 {
                compact::write_ipv6_address(&mut out, a);
            }
        }
        if let Some(u) = &self.udx {
            compact::write_uint(&mut out, 1);
            compact::write_uint(&mut out, u.reusable_socket as u64);
            compact::write_uint(&mut out, u.id);
            compact::write_uint(&mut out, u.seq);
        }
        if self.secret_stream.is_some() {
            compact::write_uint(&mut out, 1);
        }
        if let Some(r) = &self.relay_through {
            compact::write_uint(&mut out, 1);
            compact::write_uint(&mut out, 0);
            out.extend_from_slice(&r.public_key);
            out.extend_from_slice(&r.token);
        }
        if let Some(a) = &self.relay_addresses {
            compact::write_ipv4_array(&mut out, a);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{from_hex, to_hex};

    #[test]
    fn vectors() {
        let client = NoisePayload {
            version: 1,
            addresses4: vec!["192.168.1.10:49737".parse().unwrap()],
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: 0x12345678,
                seq: 0,
            }),
            secret_stream: Some(1),
            ..NoisePayload::default()
        };
        assert_eq!(
            to_hex(&client.to_bytes()),
            "011a000001c0a8010a49c20100fe785634120001"
        );
        assert_eq!(NoisePayload::decode(&client.to_bytes()).unwrap(), client);

        let server_hex =
            "015b000000015863035649c2cb007105409c01cb007105409c0100fef0debc9a0001015863035649c2";
        let server = NoisePayload::decode(&from_hex(server_hex).unwrap()).unwrap();
        assert_eq!(server.udx.unwrap().id, 2596069104);
        assert_eq!(
            server.holepunch.as_ref().unwrap().relays[0].peer_address,
            "203.0.113.5:40000".parse().unwrap()
        );
        assert_eq!(to_hex(&server.to_bytes()), server_hex);
        assert_eq!(NoisePayload::decode(&[2, 0xff]).unwrap().version, 2);
    }
}
