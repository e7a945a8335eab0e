//! Batched UDP I/O: many datagrams per system call.
//!
//! On Linux a [`RecvBatch`] fills up to [`BATCH`] datagrams with one `recvmmsg(2)` and
//! [`send_batch`] hands up to [`BATCH`] datagrams (each with its own destination) to one
//! `sendmmsg(2)`. The kernel's per-call cost (entry and exit, socket lookup and locking) is then
//! paid once per batch instead of once per datagram, which is most of what a DHT node under load
//! spends besides the per-datagram copy and delivery. Elsewhere both fall back to one
//! `recv_from` / `send_to` per datagram with the same interface.
//!
//! Both work on any [`UdpIo`] socket: std's (the async driver's, under `async-io`), and mio's
//! with the `mio` feature.
//!
//! This module owns the only `unsafe` code of the crate: building the `mmsghdr` arrays that point
//! into our buffers, and reading the addresses the kernel wrote. Every pointer handed to the
//! kernel points into memory that lives, unmoved and exclusively borrowed, for the whole call.

use std::io;
use std::net::SocketAddr;

use crate::udp::UdpIo;

/// Datagrams per system call. libudx reads 20 per `recvmmsg` (`UDX_RECVMMSG_BATCH_SIZE` in
/// libudx `src/io_posix.c`); 32 amortises the call a little further and keeps the buffers at
/// 64 KiB.
pub const BATCH: usize = 32;

/// Bytes of one receive slot. A larger datagram is cut by the kernel and dropped by us (see
/// [`Received::truncated`]). Mirrors libudx, which receives into a 2048-byte buffer
/// (`UDX_SOCKET_PACKET_BUFFER_SIZE` in libudx `include/udx.h`), so no JS peer can read a
/// larger datagram either (libudx goes on to parse the cut first 2048 bytes; we do not decode
/// a cut message).
pub const SLOT: usize = 2048;

/// One received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// Who sent it.
    pub from: SocketAddr,
    /// Its bytes (at most [`SLOT`]).
    pub data: &'a [u8],
    /// The datagram was larger than [`SLOT`] and `data` is only its beginning.
    pub truncated: bool,
}

/// Receive buffers for up to [`BATCH`] datagrams and what the last [`RecvBatch::recv`] got.
pub struct RecvBatch {
    buf: Box<[u8]>,
    meta: [(usize, Option<SocketAddr>, bool); BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("count", &self.count)
            .finish()
    }
}

impl RecvBatch {
    /// Allocates [`BATCH`] slots of [`SLOT`] bytes.
    pub fn new() -> RecvBatch {
        RecvBatch {
            buf: vec![0; BATCH * SLOT].into_boxed_slice(),
            meta: [(0, None, false); BATCH],
            count: 0,
        }
    }

    /// Receives up to [`BATCH`] datagrams from `socket` without blocking and returns how many.
    /// `Err(WouldBlock)` when none is queued; other errors as the kernel reports them (on Linux,
    /// ICMP errors of earlier sends surface here).
    pub fn recv<S: UdpIo + ?Sized>(&mut self, socket: &S) -> io::Result<usize> {
        self.count = 0;
        let n = sys::recv(socket, &mut self.buf, &mut self.meta)?;
        self.count = n;
        Ok(n)
    }

    /// The datagrams of the last [`RecvBatch::recv`], in arrival order. Slots whose sender
    /// address the kernel did not report (not IPv4 or IPv6) are skipped.
    pub fn iter(&self) -> impl Iterator<Item = Received<'_>> {
        self.meta[..self.count]
            .iter()
            .enumerate()
            .filter_map(|(i, &(len, from, truncated))| {
                let from = from?;
                let start = i * SLOT;
                Some(Received {
                    from,
                    data: &self.buf[start..start + len.min(SLOT)],
                    truncated,
                })
            })
    }
}

/// Sends `datagrams` (payload, destination) from `socket`, up to [`BATCH`] per call, and
/// returns how many the kernel took, counted from the front. `Ok(k)` with `k < len` means the
/// datagram at `k` failed after others were sent; sending it alone then reports why. `Err` means
/// the first datagram failed (`WouldBlock` when the socket buffer is full).
pub fn send_batch<S: UdpIo + ?Sized>(
    socket: &S,
    datagrams: &[(&[u8], SocketAddr)],
) -> io::Result<usize> {
    if datagrams.is_empty() {
        return Ok(0);
    }
    sys::send(socket, &datagrams[..datagrams.len().min(BATCH)])
}

#[cfg(target_os = "linux")]
mod sys {
    //! `recvmmsg(2)` / `sendmmsg(2)`.

    use super::{UdpIo, BATCH, SLOT};
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

    /// Retries a call interrupted by a signal.
    fn retry(mut call: impl FnMut() -> libc::c_int) -> io::Result<usize> {
        loop {
            let r = call();
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub(super) fn recv<S: UdpIo + ?Sized>(
        socket: &S,
        buf: &mut [u8],
        meta: &mut [(usize, Option<SocketAddr>, bool); BATCH],
    ) -> io::Result<usize> {
        debug_assert_eq!(buf.len(), BATCH * SLOT);
        // SAFETY: all-zero bytes are a valid `sockaddr_storage`, `iovec` and `mmsghdr` (null
        // pointers, zero lengths), and every field the kernel reads is set below.
        let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, chunk) in buf.chunks_exact_mut(SLOT).enumerate() {
            iovs[i].iov_base = chunk.as_mut_ptr().cast();
            iovs[i].iov_len = SLOT;
        }
        for i in 0..BATCH {
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
        }
        let fd = socket.as_raw_fd();
        // SAFETY: `hdrs` holds BATCH headers, each pointing at its own address buffer and at
        // one iovec that covers a distinct SLOT-byte part of `buf`; all of them are exclusively
        // borrowed and outlive the call. A null timeout with MSG_DONTWAIT never blocks.
        let n = retry(|| unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        })?;
        for i in 0..n.min(BATCH) {
            let h = &hdrs[i];
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let from = to_socket_addr(&addrs[i], h.msg_hdr.msg_namelen);
            meta[i] = ((h.msg_len as usize).min(SLOT), from, truncated);
        }
        Ok(n.min(BATCH))
    }

    pub(super) fn send<S: UdpIo + ?Sized>(
        socket: &S,
        datagrams: &[(&[u8], SocketAddr)],
    ) -> io::Result<usize> {
        let n = datagrams.len().min(BATCH);
        // SAFETY: as in `recv`, all-zero bytes are valid for these C structs.
        let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, (payload, dst)) in datagrams[..n].iter().enumerate() {
            let len = from_socket_addr(*dst, &mut addrs[i]);
            // The kernel only reads through iov_base for a send; the cast drops `const`.
            iovs[i].iov_base = payload.as_ptr() as *mut libc::c_void;
            iovs[i].iov_len = payload.len();
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = len;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
        }
        let fd = socket.as_raw_fd();
        // SAFETY: the first `n` headers point at their own address and at one iovec over a
        // payload borrowed for the whole call; the kernel only reads them.
        retry(|| unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, 0) })
    }

    /// The address the kernel wrote into `storage`, if it is IPv4 or IPv6.
    fn to_socket_addr(
        storage: &libc::sockaddr_storage,
        len: libc::socklen_t,
    ) -> Option<SocketAddr> {
        let len = len as usize;
        match libc::c_int::from(storage.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a sockaddr_in, which is smaller and
                // less aligned than sockaddr_storage.
                let a = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let a = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Writes `addr` into `storage` and returns its length.
    fn from_socket_addr(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_in fits in sockaddr_storage and needs no more alignment.
                let s = unsafe {
                    &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                s.sin_family = libc::AF_INET as libc::sa_family_t;
                s.sin_port = a.port().to_be();
                s.sin_addr = libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                };
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                // SAFETY: as above, for sockaddr_in6.
                let s = unsafe {
                    &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                s.sin6_port = a.port().to_be();
                s.sin6_flowinfo = a.flowinfo();
                s.sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                s.sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! One `recv_from` / `send_to` per datagram.

    use std::io;
    use std::net::SocketAddr;

    use super::{UdpIo, BATCH, SLOT};

    pub(super) fn recv<S: UdpIo + ?Sized>(
        socket: &S,
        buf: &mut [u8],
        meta: &mut [(usize, Option<SocketAddr>, bool); BATCH],
    ) -> io::Result<usize> {
        // One byte more than a slot: a datagram that fills it is too large (marked truncated,
        // as MSG_TRUNC marks it on Linux).
        let mut scratch = [0u8; SLOT + 1];
        let mut n = 0;
        for chunk in buf.chunks_exact_mut(SLOT) {
            match socket.recv_from(&mut scratch) {
                Ok((len, from)) => {
                    let kept = len.min(SLOT);
                    chunk[..kept].copy_from_slice(&scratch[..kept]);
                    meta[n] = (kept, Some(from), len > SLOT);
                    n += 1;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    pub(super) fn send<S: UdpIo + ?Sized>(
        socket: &S,
        datagrams: &[(&[u8], SocketAddr)],
    ) -> io::Result<usize> {
        for (i, (payload, dst)) in datagrams.iter().enumerate() {
            if let Err(e) = socket.send_to(payload, *dst) {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(datagrams.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
    use std::time::{Duration, Instant};

    fn socket() -> UdpSocket {
        let s = UdpSocket::bind(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    /// Receives one batch from `socket`, waiting (at most 5 s) until something is queued.
    fn recv_some(batch: &mut RecvBatch, socket: &UdpSocket) -> usize {
        let start = Instant::now();
        loop {
            match batch.recv(socket) {
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(
                        start.elapsed() < Duration::from_secs(5),
                        "nothing arrived within 5 s"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// Datagrams of different sizes to two destinations go out in one call and come back in
    /// order, each with its sender; an empty socket reports `WouldBlock`.
    #[test]
    fn batch_round_trip() {
        let (a, b, c) = (socket(), socket(), socket());
        let (b_addr, c_addr) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1 + i as usize * 37]).collect();
        let datagrams: Vec<(&[u8], SocketAddr)> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_slice(), if i % 2 == 0 { b_addr } else { c_addr }))
            .collect();
        let mut sent = 0;
        while sent < datagrams.len() {
            sent += send_batch(&a, &datagrams[sent..]).unwrap();
        }
        let mut batch = RecvBatch::new();
        let mut got_b = Vec::new();
        while got_b.len() < 20 {
            recv_some(&mut batch, &b);
            got_b.extend(batch.iter().map(|r| {
                assert_eq!(r.from, a.local_addr().unwrap());
                assert!(!r.truncated);
                r.data.to_vec()
            }));
        }
        let want_b: Vec<Vec<u8>> = payloads.iter().step_by(2).cloned().collect();
        assert_eq!(got_b, want_b);
        assert_eq!(
            batch.recv(&b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(c);
    }

    /// A datagram larger than a slot is reported as truncated, not as a shorter datagram.
    #[test]
    fn oversized_datagram_is_marked_truncated() {
        let (a, b) = (socket(), socket());
        let big = vec![7u8; SLOT + 100];
        a.send_to(&big, b.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(recv_some(&mut batch, &b), 1);
        let r = batch.iter().next().unwrap();
        assert!(r.truncated);
        assert_eq!(r.data.len(), SLOT);
    }
}
