//! Identifiers: DHT node ids (dht-rpc `lib/peer.js`) and the engine's opaque handles.

use core::cmp::Ordering;
use core::fmt;
use std::net::SocketAddrV4;

use crate::crypto;
use crate::wire::compact::ipv4_address_bytes;

/// A 32-byte DHT node id: BLAKE2b-256 of the node's `ipv4Address` (for persistent nodes), or a
/// random value (the table id of an ephemeral node).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The id a node at `addr` must carry: `H(ip octets ‖ port LE)`.
    pub fn from_addr(addr: &SocketAddrV4) -> NodeId {
        NodeId(crypto::hash(&ipv4_address_bytes(addr)))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        crypto::to_hex(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<NodeId> {
        let v = crypto::from_hex(s)?;
        Some(NodeId(v.try_into().ok()?))
    }

    /// XOR distance from `self` to `other`, as a big-endian 256-bit number.
    pub fn distance(&self, other: &NodeId) -> [u8; 32] {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        d
    }

    /// Orders `a` and `b` by XOR distance to `self` (closest first).
    pub fn cmp_distance(&self, a: &NodeId, b: &NodeId) -> Ordering {
        for i in 0..32 {
            if a.0[i] != b.0[i] {
                return (self.0[i] ^ a.0[i]).cmp(&(self.0[i] ^ b.0[i]));
            }
        }
        Ordering::Equal
    }

    /// Number of leading bits `self` and `other` share (256 when equal).
    pub fn common_prefix_len(&self, other: &NodeId) -> usize {
        for i in 0..32 {
            let x = self.0[i] ^ other.0[i];
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        256
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Handle of a query started with [`crate::Node::find_node`] or [`crate::Node::query`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub(crate) u64);

/// Handle of a single request started with [`crate::Node::ping`] or [`crate::Node::request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub(crate) u64);

/// Handle of a connection (client side from `Node::connect`, server side from an incoming
/// handshake). Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub(crate) u64);

/// Handle of a server started with `Node::listen`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId(pub(crate) u64);

/// One of the node's UDP sockets. The engine names them; the driver binds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(pub(crate) u32);

impl SocketId {
    /// The server socket: bound on the requested port, answers requests, carries our id.
    pub const SERVER: SocketId = SocketId(0);
    /// The client socket: a random port, sends requests while we are firewalled.
    pub const CLIENT: SocketId = SocketId(1);

    /// The raw number (stable for the life of the node; for drivers' maps).
    pub fn index(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_vectors() {
        // dht.md V2.
        let a = NodeId::from_addr(&"127.0.0.1:49737".parse().unwrap());
        assert_eq!(
            a.to_hex(),
            "d1dcf835b0d62b9230c41393cb96a34f5f8b9f814f421ca3382dfc1678022e0e"
        );
        let b = NodeId::from_addr(&"127.0.0.2:49737".parse().unwrap());
        assert_eq!(
            b.to_hex(),
            "1fc0df07508783bcd4a1c8515c9571a0a01e811ec52a3fca4f38df41bb8679a9"
        );
    }

    #[test]
    fn prefix_and_distance() {
        let z = NodeId([0; 32]);
        let mut o = [0u8; 32];
        o[1] = 0x10;
        let o = NodeId(o);
        assert_eq!(z.common_prefix_len(&o), 11);
        assert_eq!(z.common_prefix_len(&z), 256);
        assert_eq!(z.cmp_distance(&z, &o), Ordering::Less);
    }
}
