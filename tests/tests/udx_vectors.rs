//! `connect-udx-capture` (shared/protocol/vectors, a real udx-native 1.21.3 transcript through a
//! logging proxy): every captured header decodes to the fields the capture printed and encodes
//! back to the same bytes; the SACK payloads decode to the printed blocks.

use std::path::PathBuf;

use hyperdht_proto::crypto::from_hex;
use hyperdht_proto::stream::packet::{self, Flags, Header, Packet};

fn vectors_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HYPERDHT_VECTORS") {
        return PathBuf::from(dir);
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/protocol/vectors"
    ))
}

/// One captured packet line: `... len=N 0xTT NAME off=O id=0xI rwnd=R seq=S ack=A [payload=PB|sacks=[[a,b],..]]  hdr=HEX`.
struct Line {
    len: usize,
    flags: u8,
    off: u8,
    id: u32,
    rwnd: u32,
    seq: u32,
    ack: u32,
    payload_len: Option<usize>,
    sacks: Vec<(u32, u32)>,
    hdr: Vec<u8>,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    Some(rest.split_whitespace().next().unwrap_or(""))
}

fn parse(line: &str) -> Option<Line> {
    let hdr = from_hex(field(line, "hdr")?)?;
    let flags_s = line
        .split_whitespace()
        .find(|w| w.starts_with("0x") && w.len() == 4)?;
    let sacks = match field(line, "sacks") {
        Some(s) => s
            .trim_matches(|c| c == '[' || c == ']')
            .split("],[")
            .map(|pair| {
                let (a, b) = pair.split_once(',').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect(),
        None => Vec::new(),
    };
    Some(Line {
        len: field(line, "len")?.parse().ok()?,
        flags: u8::from_str_radix(&flags_s[2..], 16).ok()?,
        off: field(line, "off")?.parse().ok()?,
        id: u32::from_str_radix(field(line, "id")?.trim_start_matches("0x"), 16).ok()?,
        rwnd: field(line, "rwnd")?.parse().ok()?,
        seq: field(line, "seq")?.parse().ok()?,
        ack: field(line, "ack")?.parse().ok()?,
        payload_len: field(line, "payload").map(|p| p.trim_end_matches('B').parse().unwrap()),
        sacks,
        hdr,
    })
}

#[test]
fn capture_headers_roundtrip() {
    let text = std::fs::read_to_string(vectors_dir().join("connect-udx-capture.out.txt"))
        .expect("connect-udx-capture.out.txt");
    let mut seen = 0u8;
    let mut lines = 0;
    for raw in text.lines() {
        let Some(l) = parse(raw) else { continue };
        lines += 1;
        let h = Header::decode(&l.hdr).expect("captured header decodes");
        assert_eq!(h.flags, Flags(l.flags), "{raw}");
        assert_eq!(h.data_offset, l.off, "{raw}");
        assert_eq!(h.id, l.id, "{raw}");
        assert_eq!(h.rwnd, l.rwnd, "{raw}");
        assert_eq!(h.seq, l.seq, "{raw}");
        assert_eq!(h.ack, l.ack, "{raw}");
        assert_eq!(h.to_bytes().to_vec(), l.hdr, "{raw}");
        assert_eq!(packet::peek_id(&l.hdr), Some(l.id));
        seen |= l.flags;

        // Rebuild the whole datagram and decode it again.
        let mut dgram = Vec::new();
        if h.flags.contains(Flags::SACK) {
            packet::encode_ack(&mut dgram, &h, &l.sacks);
        } else {
            let payload = vec![0xabu8; l.payload_len.unwrap_or(0)];
            packet::encode(&mut dgram, &h, 0, &payload);
        }
        assert_eq!(dgram.len(), l.len, "{raw}");
        assert_eq!(&dgram[..20], &l.hdr[..], "{raw}");
        let p = Packet::decode(&dgram).unwrap();
        assert_eq!(p.sacks().collect::<Vec<_>>(), l.sacks, "{raw}");
        if let Some(n) = l.payload_len {
            assert_eq!(p.payload().map(<[u8]>::len), Some(n));
        }
    }
    assert!(lines >= 25, "parsed only {lines} packet lines");
    // DATA, END, SACK, MESSAGE, DESTROY and HEARTBEAT all appear in the capture.
    assert_eq!(seen, 0b11_1111);
}

#[test]
fn non_udx_datagrams_from_capture_fall_through() {
    // The two NON-UDX datagrams of the capture: a 1-byte holepunch probe and a DHT-ish string.
    let probe = [0u8];
    let text = from_hex("6e6f74207564782c206a7573742061206468742d7270632d69736820646174616772616d")
        .unwrap();
    assert_eq!(packet::peek_id(&probe), None);
    assert_eq!(packet::peek_id(&text), None);
    assert!(Packet::decode(&text).is_err());
}

#[test]
fn mtu_probe_padding_is_skipped() {
    // From the capture's bulk phase: seq 7 was a 1204-byte UDP probe: 20 + 32 padding + 1152.
    let h = Header {
        flags: Flags::DATA,
        id: 0x2222_2222,
        rwnd: 4 << 20,
        seq: 7,
        ..Header::default()
    };
    let data = vec![7u8; 1152];
    let mut dgram = Vec::new();
    packet::encode(&mut dgram, &h, 32, &data);
    assert_eq!(dgram.len(), 1204);
    assert_eq!(dgram[3], 32);
    let p = Packet::decode(&dgram).unwrap();
    assert_eq!(p.payload(), Some(&data[..]));
}
