//! compact-encoding primitives (npm `compact-encoding` 3.5): the byte layer under every message.
//!
//! [`Reader`] decodes from a borrowed slice and never panics: every read checks the bounds and
//! returns a [`DecodeError`]. Like the JS decoders it is lenient where JS is (non-minimal varints
//! are accepted, trailing bytes are left for the caller to ignore) and strict on lengths. The
//! `write_*` functions append to a `Vec<u8>` and always produce the shortest form.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

/// The largest array length the JS decoder accepts (`compact-encoding` `array`).
pub const MAX_ARRAY_LEN: u64 = 0x10_0000;

pub use crate::error::DecodeError;

/// A bounds-checked cursor over encoded bytes.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::UnexpectedEnd)?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::UnexpectedEnd)?;
        self.pos = end;
        Ok(out)
    }

    /// Takes the next `N` bytes as an array (`fixed32`, `fixed64`, ...).
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// `uint8`.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// `uint16` (little-endian).
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.fixed()?))
    }

    /// `uint24` (little-endian).
    pub fn u24(&mut self) -> Result<u32, DecodeError> {
        let b: [u8; 3] = self.fixed()?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    /// `uint32` (little-endian).
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }

    /// `uint64` (little-endian).
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.fixed()?))
    }

    /// `uint`: the compact-encoding varint (not LEB128). Non-minimal forms are accepted.
    pub fn uint(&mut self) -> Result<u64, DecodeError> {
        match self.u8()? {
            0xfd => Ok(u64::from(self.u16()?)),
            0xfe => Ok(u64::from(self.u32()?)),
            0xff => self.u64(),
            b => Ok(u64::from(b)),
        }
    }

    /// `bool`: only `01` is true, as in JS.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.u8()? == 1)
    }

    /// `buffer`: a `uint` length then that many bytes (possibly empty).
    pub fn buffer(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.uint()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::UnexpectedEnd)?;
        self.take(len)
    }

    /// `optionalBuffer`: like [`Reader::buffer`], but length 0 is `None`.
    pub fn optional_buffer(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let b = self.buffer()?;
        Ok(if b.is_empty() { None } else { Some(b) })
    }

    /// An array length, checked against [`MAX_ARRAY_LEN`] and against the bytes left, given the
    /// size of one element (so a hostile count cannot make the caller reserve memory).
    pub fn array_len(&mut self, min_elem_size: usize) -> Result<usize, DecodeError> {
        let n = self.uint()?;
        if n > MAX_ARRAY_LEN {
            return Err(DecodeError::ArrayTooLong);
        }
        let n = n as usize;
        if n.saturating_mul(min_elem_size) > self.buf.len() - self.pos {
            return Err(DecodeError::UnexpectedEnd);
        }
        Ok(n)
    }

    /// `ipv4`: four octets in network order.
    pub fn ipv4(&mut self) -> Result<Ipv4Addr, DecodeError> {
        let b: [u8; 4] = self.fixed()?;
        Ok(Ipv4Addr::from(b))
    }

    /// `ipv4Address`: four octets then the port as `uint16` LE.
    pub fn ipv4_address(&mut self) -> Result<SocketAddrV4, DecodeError> {
        let ip = self.ipv4()?;
        Ok(SocketAddrV4::new(ip, self.u16()?))
    }

    /// `ipv6Address`: sixteen bytes in network order then the port as `uint16` LE.
    pub fn ipv6_address(&mut self) -> Result<SocketAddrV6, DecodeError> {
        let b: [u8; 16] = self.fixed()?;
        Ok(SocketAddrV6::new(Ipv6Addr::from(b), self.u16()?, 0, 0))
    }

    /// `array(ipv4Address)`.
    pub fn ipv4_array(&mut self) -> Result<Vec<SocketAddrV4>, DecodeError> {
        let n = self.array_len(6)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.ipv4_address()?);
        }
        Ok(out)
    }
}

/// Bytes `write_uint` uses for `v`.
pub fn uint_len(v: u64) -> usize {
    match v {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Appends `v` as a compact `uint` in its shortest form.
pub fn write_uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xfc => out.push(v as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Appends a `buffer` (length prefix and bytes).
pub fn write_buffer(out: &mut Vec<u8>, b: &[u8]) {
    write_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends an `ipv4Address`.
pub fn write_ipv4_address(out: &mut Vec<u8>, a: &SocketAddrV4) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_le_bytes());
}

/// Appends an `ipv6Address`.
pub fn write_ipv6_address(out: &mut Vec<u8>, a: &SocketAddrV6) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_le_bytes());
}

/// Appends `array(ipv4Address)`.
pub fn write_ipv4_array(out: &mut Vec<u8>, addrs: &[SocketAddrV4]) {
    write_uint(out, addrs.len() as u64);
    for a in addrs {
        write_ipv4_address(out, a);
    }
}

/// The 6 bytes of an `ipv4Address`.
pub fn ipv4_address_bytes(a: &SocketAddrV4) -> [u8; 6] {
    let o = a.ip().octets();
    let p = a.port().to_le_bytes();
    [o[0], o[1], o[2], o[3], p[0], p[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_forms() {
        for (v, len) in [
            (0u64, 1),
            (252, 1),
            (253, 3),
            (65535, 3),
            (65536, 5),
            (1 << 32, 9),
        ] {
            let mut out = Vec::new();
            write_uint(&mut out, v);
            assert_eq!(out.len(), len);
            assert_eq!(uint_len(v), len);
            assert_eq!(Reader::new(&out).uint().unwrap(), v);
        }
        // Non-minimal forms decode, as in JS.
        assert_eq!(Reader::new(&[0xfd, 5, 0]).uint().unwrap(), 5);
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert_eq!(
            Reader::new(&[0xfe, 1, 2]).uint(),
            Err(DecodeError::UnexpectedEnd)
        );
        assert_eq!(
            Reader::new(&[5, 1, 2]).buffer(),
            Err(DecodeError::UnexpectedEnd)
        );
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).buffer(),
            Err(DecodeError::UnexpectedEnd)
        );
        assert_eq!(
            Reader::new(&[0xfe, 0, 0, 0x20, 0]).array_len(6),
            Err(DecodeError::ArrayTooLong)
        );
        assert_eq!(
            Reader::new(&[3, 0, 0]).array_len(6),
            Err(DecodeError::UnexpectedEnd)
        );
    }
}
