//! `tests/vectors/udx.json` (written by `tests/js/vectors/udx.js`: a real udx-native 1.21.3
//! transcript through a logging proxy): every captured header decodes to the fields the capture
//! recorded and encodes back to the same bytes; the SACK payloads decode to the recorded blocks.

use serde_json::Value;

use hyperdht_proto::crypto::from_hex;
use hyperdht_proto::stream::packet::{self, Flags, Header, Packet};
use hyperdht_tests::support::load_vector;

/// One captured UDX packet: `{dir, drop, len, flags, names, off, id, rwnd, seq, ack,
/// [payloadLen | sacks: [[a, b], ..]], hdr}`.
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

fn num(p: &Value, key: &str) -> u64 {
    p[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {p}"))
}

/// The packet's fields, or `None` for a non-UDX datagram (`"udx": false`).
fn parse(p: &Value) -> Option<Line> {
    if p["udx"] == Value::Bool(false) {
        return None;
    }
    let hdr = from_hex(p["hdr"].as_str().expect("hdr")).expect("hex hdr");
    let sacks = match &p["sacks"] {
        Value::Array(a) => a
            .iter()
            .map(|pair| {
                (
                    pair[0].as_u64().unwrap() as u32,
                    pair[1].as_u64().unwrap() as u32,
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(Line {
        len: num(p, "len") as usize,
        flags: num(p, "flags") as u8,
        off: num(p, "off") as u8,
        id: num(p, "id") as u32,
        rwnd: num(p, "rwnd") as u32,
        seq: num(p, "seq") as u32,
        ack: num(p, "ack") as u32,
        payload_len: p["payloadLen"].as_u64().map(|n| n as usize),
        sacks,
        hdr,
    })
}

fn packets() -> Vec<Value> {
    load_vector("udx.json")["packets"]
        .as_array()
        .expect("packets")
        .clone()
}

#[test]
fn capture_headers_roundtrip() {
    let mut seen = 0u8;
    let mut lines = 0;
    for raw in &packets() {
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
    let raw: Vec<Vec<u8>> = packets()
        .iter()
        .filter(|p| p["udx"] == Value::Bool(false))
        .map(|p| from_hex(p["hex"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(
        raw,
        [probe.to_vec(), text.clone()],
        "the capture's non-UDX datagrams"
    );
    assert_eq!(packet::peek_id(&probe), None);
    assert_eq!(packet::peek_id(&text), None);
    assert!(Packet::decode(&text).is_err());
}

#[test]
fn mtu_probe_padding_is_skipped() {
    // From the capture's bulk phase (`mtu.probes` in udx.json): the first probe is a 1204-byte
    // UDP datagram, 20 + 32 padding + 1152.
    let first = &load_vector("udx.json")["mtu"]["probes"][0];
    assert_eq!(
        (
            num(first, "udpLen"),
            num(first, "padding"),
            num(first, "data")
        ),
        (1204, 32, 1152)
    );
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

// ----- the state machine reproduces the captured transcript ----------------------------------

mod transcript {
    use std::net::SocketAddr;

    use hyperdht_proto::crypto::to_hex;
    use hyperdht_proto::stream::{Config, StreamEvent, StreamId, UdxMux};
    use hyperdht_proto::{SocketId, Timestamp};

    struct Pair {
        a: UdxMux,
        b: UdxMux,
        sa: StreamId,
        sb: StreamId,
        addr_a: SocketAddr,
        addr_b: SocketAddr,
        now: Timestamp,
    }

    fn config() -> Config {
        // The capture's first packets predate its MTU probes; probing is timing-dependent.
        let mut c = Config::default();
        c.mtu_probing = false;
        c
    }

    impl Pair {
        fn new(id_a: u32, id_b: u32) -> Pair {
            let now = Timestamp::from_millis(1);
            let mut a = UdxMux::new(config(), [1; 32]);
            let mut b = UdxMux::new(config(), [2; 32]);
            let sa = a.create_stream_with_id(now, id_a).unwrap();
            let sb = b.create_stream_with_id(now, id_b).unwrap();
            let addr_a: SocketAddr = "127.0.0.1:44160".parse().unwrap();
            let addr_b: SocketAddr = "127.0.0.1:39567".parse().unwrap();
            a.connect(now, sa, SocketId::SERVER, id_b, addr_b).unwrap();
            b.connect(now, sb, SocketId::SERVER, id_a, addr_a).unwrap();
            Pair {
                a,
                b,
                sa,
                sb,
                addr_a,
                addr_b,
                now,
            }
        }

        fn tick(&mut self) {
            self.now += std::time::Duration::from_millis(1);
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
        }

        fn out_a(&mut self) -> Vec<Vec<u8>> {
            std::iter::from_fn(|| self.a.poll_transmit(self.now).map(|t| t.payload)).collect()
        }

        fn out_b(&mut self) -> Vec<Vec<u8>> {
            let mut buf = vec![0u8; 1 << 16];
            while self.b.read(self.sb, &mut buf).is_ok_and(|n| n > 0) {}
            std::iter::from_fn(|| self.b.poll_transmit(self.now).map(|t| t.payload)).collect()
        }

        fn deliver_b(&mut self, p: &[u8]) {
            assert!(self
                .b
                .handle_datagram(self.now, SocketId::SERVER, self.addr_a, p));
        }

        fn deliver_a(&mut self, p: &[u8]) {
            assert!(self
                .a
                .handle_datagram(self.now, SocketId::SERVER, self.addr_b, p));
        }
    }

    fn hdr(p: &[u8]) -> String {
        to_hex(&p[..20])
    }

    #[test]
    fn data_ack_message_sack_retransmit() {
        let mut p = Pair::new(0x1111_1111, 0x2222_2222);
        // DATA "hello" and its ACK.
        p.a.write(p.now, p.sa, b"hello").unwrap();
        let out = p.out_a();
        assert_eq!(out.len(), 1);
        assert_eq!(hdr(&out[0]), "ff01010022222222000040000000000000000000");
        assert_eq!(&out[0][20..], b"hello");
        p.tick();
        p.deliver_b(&out[0]);
        let acks = p.out_b();
        assert_eq!(acks.len(), 1);
        assert_eq!(to_hex(&acks[0]), "ff01000011111111000040000000000001000000");
        p.deliver_a(&acks[0]);

        // MESSAGE carries seq 1 without consuming it.
        assert!(p.a.send_message(p.sa, b"datagram"));
        let out = p.out_a();
        assert_eq!(hdr(&out[0]), "ff01080022222222000040000100000000000000");
        p.deliver_b(&out[0]);
        let mut got = None;
        while let Some(e) = p.b.poll_event() {
            if let StreamEvent::Message { data, .. } = e {
                got = Some(data);
            }
        }
        assert_eq!(got.as_deref(), Some(&b"datagram"[..]));
        assert!(p.out_b().is_empty(), "a MESSAGE is not acknowledged");

        // Six full packets; seq 2 is lost. B answers ACK ack=2, then growing SACKs.
        p.tick();
        p.a.write(p.now, p.sa, &vec![0x5a; 6 * 1152]).unwrap();
        let out = p.out_a();
        assert_eq!(out.len(), 6);
        for (i, pkt) in out.iter().enumerate() {
            assert_eq!(pkt.len(), 1172);
            assert_eq!(
                hdr(pkt),
                format!("ff01010022222222000040000{}00000000000000", i + 1)
            );
        }
        p.tick();
        let mut replies = Vec::new();
        for (i, pkt) in out.iter().enumerate() {
            if i == 1 {
                continue;
            }
            p.deliver_b(pkt);
            replies.extend(p.out_b());
        }
        let want = [
            "ff01000011111111000040000000000002000000".to_owned(),
            "ff0104001111111100004000000000000200000003000000".to_owned() + "04000000",
            "ff0104001111111100004000000000000200000003000000".to_owned() + "05000000",
            "ff0104001111111100004000000000000200000003000000".to_owned() + "06000000",
            "ff0104001111111100004000000000000200000003000000".to_owned() + "07000000",
        ];
        let got: Vec<String> = replies.iter().map(|r| to_hex(r)).collect();
        assert_eq!(got, want);
        for r in &replies {
            p.deliver_a(r);
        }
        // RACK marks seq 2 lost; it goes out again with its original seq.
        for _ in 0..5 {
            p.tick();
        }
        let out = p.out_a();
        assert_eq!(out.len(), 1, "one retransmission");
        assert_eq!(hdr(&out[0]), "ff01010022222222000040000200000000000000");
        p.deliver_b(&out[0]);
        let acks = p.out_b();
        assert_eq!(to_hex(&acks[0]), "ff01000011111111000040000000000007000000");
    }

    #[test]
    fn heartbeat_end_exchange_and_destroy() {
        let mut p = Pair::new(0x1111_1111, 0x2222_2222);
        // A HEARTBEAT is answered with a plain ACK.
        let hb = hyperdht_proto::stream::packet::Header {
            flags: hyperdht_proto::stream::packet::Flags::HEARTBEAT,
            id: 0x2222_2222,
            rwnd: 4 << 20,
            ..Default::default()
        };
        p.deliver_b(&hb.to_bytes());
        assert_eq!(
            p.out_b().iter().map(|x| to_hex(x)).collect::<Vec<_>>(),
            ["ff01000011111111000040000000000000000000"]
        );

        // END exchange: A ends; B acks, then ends; A acks the ack once, then B's END.
        p.a.finish(p.now, p.sa).unwrap();
        let end = p.out_a();
        assert_eq!(to_hex(&end[0]), "ff01020022222222000040000000000000000000");
        p.deliver_b(&end[0]);
        let ack = p.out_b();
        assert_eq!(to_hex(&ack[0]), "ff01000011111111000040000000000001000000");
        p.b.finish(p.now, p.sb).unwrap();
        let b_end = p.out_b();
        assert_eq!(
            to_hex(&b_end[0]),
            "ff01020011111111000040000000000001000000"
        );
        p.deliver_a(&ack[0]);
        let a1 = p.out_a();
        assert_eq!(
            a1.iter().map(|x| to_hex(x)).collect::<Vec<_>>(),
            ["ff01000022222222000040000100000000000000"]
        );
        p.deliver_a(&b_end[0]);
        let a2 = p.out_a();
        assert_eq!(
            a2.iter().map(|x| to_hex(x)).collect::<Vec<_>>(),
            ["ff01000022222222000040000100000001000000"]
        );
        p.deliver_b(&a2[0]);
        assert!(p.out_b().is_empty(), "B closes without another packet");

        // DESTROY carries the current seq and consumes it.
        let mut p = Pair::new(0x3333_3333, 0x4444_4444);
        p.a.write(p.now, p.sa, b"x").unwrap();
        let d = p.out_a();
        p.deliver_b(&d[0]);
        let ack = p.out_b();
        assert_eq!(to_hex(&ack[0]), "ff01000033333333000040000000000001000000");
        p.deliver_a(&ack[0]);
        p.a.reset(p.now, p.sa);
        let out = p.out_a();
        assert_eq!(to_hex(&out[0]), "ff01100044444444000040000100000000000000");
    }
}
