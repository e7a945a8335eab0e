//! The UDX packet codec: the 20-byte header, SACK blocks and the data offset (connect.md §3.1,
//! §3.3; libudx `src/udx.c` `udx_write_header` and `process_packet`).
//!
//! Pure functions, no state. Decoding never panics: every length is checked, and a datagram
//! that is not UDX is reported as such so the caller can hand it to the DHT code.

use core::fmt;

/// Size of the UDX header (`UDX_HEADER_SIZE`, libudx `include/udx.h:14`).
pub const HEADER_LEN: usize = 20;
/// First byte of every UDX packet (`UDX_MAGIC_BYTE`, `include/udx.h:33`).
pub const MAGIC: u8 = 0xFF;
/// Second byte of every UDX packet (`UDX_VERSION`, `include/udx.h:34`).
pub const VERSION: u8 = 1;
/// Most SACK blocks libudx puts in one ACK (`UDX_MAX_SACKS`, libudx `src/internal.h:10`).
pub const MAX_SACKS: usize = 50;
/// Bytes of one SACK block: `u32 start`, `u32 end` (exclusive), both little-endian.
pub const SACK_BLOCK_LEN: usize = 8;

/// The type bits of byte 2 (libudx `include/udx.h:55-60`). Any combination is allowed; none
/// set means a pure ACK.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// No type bit: a pure ACK.
    pub const ACK: Flags = Flags(0);
    /// Stream data; consumes one sequence number (`UDX_HEADER_DATA`).
    pub const DATA: Flags = Flags(0b00_0001);
    /// The sender finished writing; consumes one sequence number (`UDX_HEADER_END`).
    pub const END: Flags = Flags(0b00_0010);
    /// The payload starts with SACK blocks (`UDX_HEADER_SACK`).
    pub const SACK: Flags = Flags(0b00_0100);
    /// An unreliable datagram (`UDX_HEADER_MESSAGE`).
    pub const MESSAGE: Flags = Flags(0b00_1000);
    /// Abort the stream; consumes one sequence number (`UDX_HEADER_DESTROY`).
    pub const DESTROY: Flags = Flags(0b01_0000);
    /// Keep-alive / zero-window probe; answered with an ACK (`UDX_HEADER_HEARTBEAT`).
    pub const HEARTBEAT: Flags = Flags(0b10_0000);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set.
    pub const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    /// The union of both.
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// Whether the packet consumes a sequence number as data (DATA or END).
    pub const fn is_data_or_end(self) -> bool {
        self.intersects(Flags(Flags::DATA.0 | Flags::END.0))
    }
}

impl core::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

impl core::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        *self = self.union(rhs);
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(Flags, &str); 6] = [
            (Flags::DATA, "DATA"),
            (Flags::END, "END"),
            (Flags::SACK, "SACK"),
            (Flags::MESSAGE, "MESSAGE"),
            (Flags::DESTROY, "DESTROY"),
            (Flags::HEARTBEAT, "HEARTBEAT"),
        ];
        if self.0 == 0 {
            return f.write_str("ACK");
        }
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let unknown = self.0 & 0b1100_0000;
        if unknown != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{unknown:#04x}")?;
        }
        Ok(())
    }
}

/// The 20-byte header of every UDX packet. All integers are little-endian on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Header {
    /// Type bits (byte 2).
    pub flags: Flags,
    /// Extension bytes between the header and the payload (byte 3): MTU-probe padding on DATA,
    /// the SACK area length on SACK packets (0 = the whole payload).
    pub data_offset: u8,
    /// The receiver's local stream id (bytes 4..8).
    pub id: u32,
    /// The sender's receive window in bytes (bytes 8..12).
    pub rwnd: u32,
    /// Sequence number (bytes 12..16): counts packets, not bytes.
    pub seq: u32,
    /// Cumulative ack (bytes 16..20): the next sequence number expected from the peer.
    pub ack: u32,
}

impl Header {
    /// The 20 wire bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = MAGIC;
        b[1] = VERSION;
        b[2] = self.flags.0;
        b[3] = self.data_offset;
        b[4..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..12].copy_from_slice(&self.rwnd.to_le_bytes());
        b[12..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..20].copy_from_slice(&self.ack.to_le_bytes());
        b
    }

    /// Parses the first 20 bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Header, DecodeError> {
        let b: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(DecodeError::UnexpectedEnd)?;
        if b[0] != MAGIC || b[1] != VERSION {
            return Err(DecodeError::NotUdx);
        }
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Ok(Header {
            flags: Flags(b[2]),
            data_offset: b[3],
            id: word(4),
            rwnd: word(8),
            seq: word(12),
            ack: word(16),
        })
    }
}

pub use crate::error::DecodeError;

/// The destination stream id of a datagram if it looks like UDX (length ≥ 20, magic, version),
/// the first test of connect.md §2.10. Whether the id is live is the caller's question.
pub fn peek_id(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < HEADER_LEN || bytes[0] != MAGIC || bytes[1] != VERSION {
        return None;
    }
    Some(u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]))
}

/// A decoded UDX datagram: the header and everything after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The header.
    pub header: Header,
    /// The bytes after the header (before skipping `data_offset`).
    pub body: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses a datagram. Only the header is checked here; [`Packet::payload`] applies the
    /// data offset.
    pub fn decode(bytes: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let header = Header::decode(bytes)?;
        Ok(Packet {
            header,
            body: bytes.get(HEADER_LEN..).unwrap_or(&[]),
        })
    }

    /// The payload after the `data_offset` extension bytes, or `None` when the offset runs past
    /// the end (libudx drops such packets after answering a HEARTBEAT, `process_packet`).
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.body.get(usize::from(self.header.data_offset)..)
    }

    /// The SACK blocks `(start, end)` (end exclusive), empty unless the SACK flag is set.
    ///
    /// As libudx `process_packet`: the SACK area is `data_offset` bytes when
    /// `0 < data_offset < body length`, else the whole body; trailing bytes that do not fill a
    /// block are ignored. Blocks are returned as sent; validating them is the sender's job.
    pub fn sacks(&self) -> SackBlocks<'a> {
        let area = if !self.header.flags.contains(Flags::SACK) {
            &[][..]
        } else {
            let off = usize::from(self.header.data_offset);
            if off > 0 && off < self.body.len() {
                &self.body[..off]
            } else {
                self.body
            }
        };
        SackBlocks {
            chunks: area.chunks_exact(SACK_BLOCK_LEN),
        }
    }
}

/// Iterator over the SACK blocks of a packet.
#[derive(Clone, Debug)]
pub struct SackBlocks<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for SackBlocks<'_> {
    type Item = (u32, u32);
    fn next(&mut self) -> Option<(u32, u32)> {
        let c = self.chunks.next()?;
        Some((
            u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        ))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for SackBlocks<'_> {}

/// Appends a whole packet to `out`: header, `padding` zero bytes (whose count goes in
/// `data_offset`), then `payload`. `header.data_offset` is overwritten with `padding`.
pub fn encode(out: &mut Vec<u8>, header: &Header, padding: u8, payload: &[u8]) {
    let mut h = *header;
    h.data_offset = padding;
    out.reserve(HEADER_LEN + usize::from(padding) + payload.len());
    out.extend_from_slice(&h.to_bytes());
    out.resize(out.len() + usize::from(padding), 0);
    out.extend_from_slice(payload);
}

/// Appends an ACK to `out`: the header (SACK flag set when `sacks` is not empty, data offset
/// 0 as libudx sends it) followed by the blocks.
pub fn encode_ack(out: &mut Vec<u8>, header: &Header, sacks: &[(u32, u32)]) {
    let mut h = *header;
    h.data_offset = 0;
    if sacks.is_empty() {
        h.flags = Flags(h.flags.0 & !Flags::SACK.0);
    } else {
        h.flags |= Flags::SACK;
    }
    out.reserve(HEADER_LEN + sacks.len() * SACK_BLOCK_LEN);
    out.extend_from_slice(&h.to_bytes());
    for &(start, end) in sacks {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
    }
}

/// Wrap-around comparison of sequence numbers (libudx `seq_compare`/`seq_diff`): negative when
/// `a` is before `b`.
pub const fn seq_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// Whether `a` comes strictly before `b` in sequence space.
pub const fn seq_lt(a: u32, b: u32) -> bool {
    seq_diff(a, b) < 0
}

/// Whether `a` comes before or is `b` in sequence space.
pub const fn seq_le(a: u32, b: u32) -> bool {
    seq_diff(a, b) <= 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_roundtrip_matches_capture() {
        // DATA "hello" from connect.md §3.13.
        let bytes = [
            0xff, 0x01, 0x01, 0x00, 0x22, 0x22, 0x22, 0x22, 0x00, 0x00, 0x40, 0x00, 0, 0, 0, 0, 0,
            0, 0, 0, b'h', b'e', b'l', b'l', b'o',
        ];
        let p = Packet::decode(&bytes).unwrap();
        assert_eq!(p.header.flags, Flags::DATA);
        assert_eq!(p.header.id, 0x2222_2222);
        assert_eq!(p.header.rwnd, 4 * 1024 * 1024);
        assert_eq!(p.payload(), Some(&b"hello"[..]));
        let mut out = Vec::new();
        encode(&mut out, &p.header, 0, b"hello");
        assert_eq!(out, bytes);
    }

    #[test]
    fn sack_area_and_offsets() {
        let h = Header {
            flags: Flags::SACK,
            id: 1,
            ack: 2,
            ..Header::default()
        };
        let mut out = Vec::new();
        encode_ack(&mut out, &h, &[(3, 4), (6, 9)]);
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.sacks().collect::<Vec<_>>(), vec![(3, 4), (6, 9)]);
        // A data offset smaller than the body limits the SACK area.
        out[3] = 8;
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.sacks().collect::<Vec<_>>(), vec![(3, 4)]);
        // One equal to the body length means "whole body" for SACKs but leaves no payload.
        out[3] = 16;
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.sacks().count(), 2);
        assert_eq!(p.payload(), Some(&[][..]));
        out[3] = 17;
        assert_eq!(Packet::decode(&out).unwrap().payload(), None);
        // Without the flag there are no blocks.
        out[2] = 0;
        assert_eq!(Packet::decode(&out).unwrap().sacks().count(), 0);
    }

    #[test]
    fn not_udx() {
        assert_eq!(Header::decode(&[0xff; 19]), Err(DecodeError::UnexpectedEnd));
        assert_eq!(Header::decode(&[0xfe; 20]), Err(DecodeError::NotUdx));
        assert_eq!(peek_id(&[0]), None);
        let mut b = [0u8; 20];
        b[0] = 0xff;
        b[1] = 2;
        assert_eq!(peek_id(&b), None);
        b[1] = 1;
        b[4] = 7;
        assert_eq!(peek_id(&b), Some(7));
    }

    #[test]
    fn seq_wraps() {
        assert!(seq_lt(u32::MAX, 0));
        assert!(seq_lt(5, 6));
        assert!(!seq_lt(6, 6));
        assert!(seq_le(6, 6));
        assert_eq!(seq_diff(1, u32::MAX), 2);
    }

    #[test]
    fn flags_debug() {
        assert_eq!(format!("{:?}", Flags::DATA | Flags::END), "DATA|END");
        assert_eq!(format!("{:?}", Flags(0)), "ACK");
        assert_eq!(format!("{:?}", Flags(0x41)), "DATA|0x40");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Packet::decode(&bytes) {
                let _ = p.payload();
                let n = p.sacks().count();
                prop_assert!(n * SACK_BLOCK_LEN <= p.body.len());
                let mut out = Vec::new();
                out.extend_from_slice(&p.header.to_bytes());
                out.extend_from_slice(p.body);
                prop_assert_eq!(out, bytes);
            } else {
                prop_assert!(peek_id(&bytes).is_none());
            }
        }

        #[test]
        fn header_roundtrip(flags in any::<u8>(), off in any::<u8>(), id in any::<u32>(),
                            rwnd in any::<u32>(), seq in any::<u32>(), ack in any::<u32>()) {
            let h = Header { flags: Flags(flags), data_offset: off, id, rwnd, seq, ack };
            prop_assert_eq!(Header::decode(&h.to_bytes()), Ok(h));
            prop_assert_eq!(peek_id(&h.to_bytes()), Some(id));
        }
    }
}
