//! What a driver's connection and server handles tell about themselves ([`ConnMeta`],
//! [`ServerMeta`]), and the macros that give both drivers' handles the same accessors
//! ([`connection_accessors!`](crate::connection_accessors),
//! [`server_accessors!`](crate::server_accessors)).

use std::net::{SocketAddr, SocketAddrV4};

use hyperdht_proto::{ConnId, ServerId};

/// An open connection's identity: its id, the authenticated peer and the path.
#[derive(Clone, Debug)]
pub struct ConnMeta {
    /// The connection's id in the node.
    pub id: ConnId,
    /// The peer's static public key (authenticated by the handshake).
    pub remote_public_key: [u8; 32],
    /// Our socket's local address on the path, when it is one of the node's two DHT sockets
    /// (`None` for a holepunch socket).
    pub local_addr: Option<SocketAddr>,
    /// The peer's address on the path in use.
    pub remote_addr: SocketAddr,
    /// Whether we opened the connection (the client side; JS `isInitiator`).
    pub is_initiator: bool,
}

/// A listening server's identity: its id, its key, where its first announce went.
#[derive(Clone, Debug)]
pub struct ServerMeta {
    /// The server's id in the node.
    pub id: ServerId,
    /// The public key clients connect to.
    pub public_key: [u8; 32],
    /// The DHT nodes the first announce went to.
    pub relay_addresses: Vec<SocketAddrV4>,
}

/// The accessors of a connection handle with a [`ConnMeta`] in field `$meta`: `id`,
/// `remote_public_key`, `is_initiator`, `remote_addr`, `local_addr`.
#[macro_export]
macro_rules! connection_accessors {
    ($meta:ident) => {
        /// The connection's id in the node.
        pub fn id(&self) -> $crate::proto::ConnId {
            self.$meta.id
        }

        /// The peer's static public key (authenticated by the handshake).
        pub fn remote_public_key(&self) -> [u8; 32] {
            self.$meta.remote_public_key
        }

        /// Whether we opened the connection (the client side; JS `isInitiator`).
        pub fn is_initiator(&self) -> bool {
            self.$meta.is_initiator
        }

        /// The peer's address on the path in use.
        pub fn remote_addr(&self) -> ::std::net::SocketAddr {
            self.$meta.remote_addr
        }

        /// Our socket's local address on the path, when it is one of the node's two DHT
        /// sockets (`None` for a holepunch socket).
        pub fn local_addr(&self) -> Option<::std::net::SocketAddr> {
            self.$meta.local_addr
        }
    };
}

/// The accessors of a server handle with a [`ServerMeta`] in field `$meta`: `id`,
/// `public_key`, `relay_addresses`.
#[macro_export]
macro_rules! server_accessors {
    ($meta:ident) => {
        /// Its id in the node.
        pub fn id(&self) -> $crate::proto::ServerId {
            self.$meta.id
        }

        /// The public key clients connect to.
        pub fn public_key(&self) -> [u8; 32] {
            self.$meta.public_key
        }

        /// The DHT nodes the first announce went to.
        pub fn relay_addresses(&self) -> &[::std::net::SocketAddrV4] {
            &self.$meta.relay_addresses
        }
    };
}
