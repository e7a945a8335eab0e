//! The holepunch payload (hyperdht 6.34 `lib/messages.js` `holepunchPayload`): each side's view
//! of its NAT and the address-ownership tokens, exchanged in PEER_HOLEPUNCH rounds (sealed; see
//! `holepunch::secure`).

use std::net::SocketAddrV4;

use super::compact::{self, DecodeError, Reader};

/// One round's payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HolepunchPayload {
    /// Error ([`crate::wire::noise::error`]).
    pub error: u64,
    /// Firewall kind ([`crate::wire::noise::firewall`]).
    pub firewall: u64,
    /// Round number.
    pub round: u64,
    /// The sender already has a path.
    pub connected: bool,
    /// The sender is punching now.
    pub punching: bool,
    /// The sender's public addresses (port 0 for a randomising NAT).
    pub addresses: Option<Vec<SocketAddrV4>>,
    /// The receiver's address as the sender believes it (client fast-open).
    pub remote_address: Option<SocketAddrV4>,
    /// Token for the address the sender saw the receiver at.
    pub token: Option<[u8; 32]>,
    /// The receiver's token, echoed.
    pub remote_token: Option<[u8; 32]>,
}

impl HolepunchPayload {
    /// Decodes a payload.
    pub fn decode(buf: &[u8]) -> Result<HolepunchPayload, DecodeError> {
        let mut r = Reader::new(buf);
        let flags = r.uint()?;
        let mut p = HolepunchPayload {
            error: r.uint()?,
            firewall: r.uint()?,
            round: r.uint()?,
            connected: flags & 1 != 0,
            punching: flags & 2 != 0,
            ..HolepunchPayload::default()
        };
        if flags & 4 != 0 {
            p.addresses = Some(r.ipv4_array()?);
        }
        if flags & 8 != 0 {
            p.remote_address = Some(r.ipv4_address()?);
        }
        if flags & 16 != 0 {
            p.token = Some(r.fixed()?);
        }
        if flags & 32 != 0 {
            p.remote_token = Some(r.fixed()?);
        }
        Ok(p)
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let flags = (self.connected as u64)
            | (self.punching as u64) << 1
            | (self.addresses.is_some() as u64) << 2
            | (self.remote_address.is_some() as u64) << 3
            | (self.token.is_some() as u64) << 4
            | (self.remote_token.is_some() as u64) << 5;
        let mut out = Vec::with_capacity(80);
        compact::write_uint(&mut out, flags);
        compact::write_uint(&mut out, self.error);
        compact::write_uint(&mut out, self.firewall);
        compact::write_uint(&mut out, self.round);
        if let Some(a) = &self.addresses {
            compact::write_ipv4_array(&mut out, a);
        }
        if let Some(a) = &self.remote_address {
            compact::write_ipv4_address(&mut out, a);
        }
        if let Some(t) = &self.token {
            out.extend_from_slice(t);
        }
        if let Some(t) = &self.remote_token {
            out.extend_from_slice(t);
        }
        out
    }
}
