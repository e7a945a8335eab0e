//! The socket side both drivers share: what a UDP socket must offer ([`UdpIo`]), binding one
//! the way the node wants it ([`bind`]: non-blocking, with a [`SOCKET_RECV_BUFFER`]-byte receive
//! buffer), sending a datagram with its own IP TTL ([`send_with_ttl`]), and the interface
//! address a node announces ([`primary_ipv4`]). Batched receive and send are in
//! [`crate::batch`]; the queue of datagrams waiting for the kernel is [`crate::Outbox`].

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use hyperdht_proto::SOCKET_RECV_BUFFER;

/// The TTL a socket is set back to when the kernel does not tell its own: the usual default
/// (`net.ipv4.ip_default_ttl` on Linux, libudx's `UDX_DEFAULT_TTL`).
pub const DEFAULT_TTL: u32 = 64;

/// What the batched I/O needs of a socket beyond [`UdpIo`]: on Linux its file descriptor
/// (for `recvmmsg`/`sendmmsg`); elsewhere nothing.
#[cfg(target_os = "linux")]
pub trait RawSocket: std::os::fd::AsRawFd {}
#[cfg(target_os = "linux")]
impl<T: std::os::fd::AsRawFd + ?Sized> RawSocket for T {}

/// What the batched I/O needs of a socket beyond [`UdpIo`]: on Linux its file descriptor
/// (for `recvmmsg`/`sendmmsg`); elsewhere nothing.
#[cfg(not(target_os = "linux"))]
pub trait RawSocket {}
#[cfg(not(target_os = "linux"))]
impl<T: ?Sized> RawSocket for T {}

/// A non-blocking UDP socket: std's (which `async-io` wraps) and, with the `mio` feature,
/// mio's. The methods are the sockets' own.
pub trait UdpIo: RawSocket {
    /// Receives one datagram into `buf`; `WouldBlock` when none is queued.
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// Sends one datagram to `to`; `WouldBlock` when the send buffer is full.
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize>;
    /// The socket's IP TTL.
    fn ttl(&self) -> io::Result<u32>;
    /// Sets the socket's IP TTL.
    fn set_ttl(&self, ttl: u32) -> io::Result<()>;
}

/// Implements [`UdpIo`] with the socket type's inherent methods of the same names.
macro_rules! udp_io {
    ($t:ty) => {
        impl UdpIo for $t {
            fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
                <$t>::recv_from(self, buf)
            }
            fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
                <$t>::send_to(self, buf, to)
            }
            fn ttl(&self) -> io::Result<u32> {
                <$t>::ttl(self)
            }
            fn set_ttl(&self, ttl: u32) -> io::Result<()> {
                <$t>::set_ttl(self, ttl)
            }
        }
    };
}

udp_io!(UdpSocket);
#[cfg(feature = "mio")]
udp_io!(mio::net::UdpSocket);

/// Binds a non-blocking UDP socket at `addr` with the larger receive buffer (see
/// [`grow_recv_buffer`]); the driver then registers it with its reactor.
pub fn bind(addr: SocketAddrV4) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    grow_recv_buffer(&s);
    Ok(s)
}

/// Asks the kernel for a [`SOCKET_RECV_BUFFER`]-byte receive buffer. Failing is not fatal (the
/// kernel may cap the size); it is logged.
pub fn grow_recv_buffer(socket: &UdpSocket) {
    if let Err(e) = socket2::SockRef::from(socket).set_recv_buffer_size(SOCKET_RECV_BUFFER) {
        tracing::debug!(error = %e, "could not enlarge the UDP receive buffer");
    }
}

/// Sends one datagram with IP TTL `ttl` (a holepunch probe), then sets the socket back to the
/// TTL it had, so the datagrams after it leave with the system's default again (not a fixed
/// 64: the default is the operator's, e.g. 128 on Windows or a tuned `ip_default_ttl`). A TTL
/// the kernel refuses is logged and the datagram goes with the socket's TTL.
pub fn send_with_ttl<S: UdpIo + ?Sized>(
    socket: &S,
    payload: &[u8],
    dst: SocketAddr,
    ttl: u8,
) -> io::Result<usize> {
    let restore = socket.ttl().unwrap_or(DEFAULT_TTL);
    if let Err(e) = socket.set_ttl(u32::from(ttl)) {
        tracing::debug!(ttl, error = %e, "could not set the datagram's TTL");
    }
    let sent = socket.send_to(payload, dst);
    if let Err(e) = socket.set_ttl(restore) {
        tracing::debug!(ttl = restore, error = %e, "could not restore the socket's TTL");
    }
    sent
}

/// The IPv4 address of the interface the default route uses, if any (connecting a UDP socket
/// sends nothing; it only picks a route).
pub fn primary_ipv4() -> Option<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() && !a.ip().is_loopback() => Some(*a.ip()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sockets the kit binds get the larger receive buffer, as far as the kernel allows
    /// (`net.core.rmem_max`; Linux reports twice the size granted).
    #[test]
    fn bound_sockets_get_the_larger_receive_buffer() {
        let socket = bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
        let granted = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        assert!(
            granted >= SOCKET_RECV_BUFFER.min(cap),
            "receive buffer {granted} B, wanted {SOCKET_RECV_BUFFER} B (rmem_max {cap})"
        );
    }

    /// A datagram with its own TTL leaves the socket's TTL as it was (not a fixed 64).
    #[test]
    fn a_datagram_with_its_own_ttl_restores_the_socket_ttl() {
        let (a, b) = (
            bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap(),
            bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap(),
        );
        a.set_ttl(77).unwrap();
        send_with_ttl(&a, b"probe", b.local_addr().unwrap(), 5).unwrap();
        assert_eq!(a.ttl().unwrap(), 77);
    }
}
