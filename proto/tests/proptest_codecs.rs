//! Property tests for the codecs: every codec round-trips, arbitrary bytes never panic a
//! decoder, decoders are lenient where JS is (non-minimal uints, unknown flag bits, trailing
//! bytes) and strict on lengths (every strict prefix of a message fails).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use hyperdht_proto::wire::compact::{self, DecodeError, Reader, MAX_ARRAY_LEN};
use hyperdht_proto::wire::rpc::{encode_response, Message, Request, Response, ResponseParts};

// ----- strategies ----------------------------------------------------------------------------

fn ipv4() -> impl Strategy<Value = SocketAddrV4> {
    (any::<[u8; 4]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

fn ipv6() -> impl Strategy<Value = SocketAddrV6> {
    (any::<[u8; 16]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
}

/// uints spread over every encoding width.
fn uint() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..=0xfc,
        0xfdu64..=0xffff,
        0x1_0000u64..=0xffff_ffff,
        0x1_0000_0000u64..=u64::MAX,
        Just(0xfc),
        Just(0xfd),
        Just(0xffff),
        Just(0x1_0000),
        Just(u64::MAX),
    ]
}

/// Owned request fields (values are borrowed by `Request`).
#[derive(Clone, Debug)]
struct Req {
    tid: u16,
    to: SocketAddrV4,
    id: Option<[u8; 32]>,
    token: Option<[u8; 32]>,
    internal: bool,
    command: u64,
    target: Option<[u8; 32]>,
    value: Option<Vec<u8>>,
}

impl Req {
    fn as_request(&self) -> Request<'_> {
        Request {
            tid: self.tid,
            to: self.to,
            id: self.id,
            token: self.token,
            internal: self.internal,
            command: self.command,
            target: self.target,
            value: self.value.as_deref(),
        }
    }
}

fn req() -> impl Strategy<Value = Req> {
    (
        any::<u16>(),
        ipv4(),
        option::of(any::<[u8; 32]>()),
        option::of(any::<[u8; 32]>()),
        any::<bool>(),
        uint(),
        option::of(any::<[u8; 32]>()),
        option::of(vec(any::<u8>(), 0..300)),
    )
        .prop_map(
            |(tid, to, id, token, internal, command, target, value)| Req {
                tid,
                to,
                id,
                token,
                internal,
                command,
                target,
                value,
            },
        )
}

#[derive(Clone, Debug)]
struct Res {
    tid: u16,
    to: SocketAddrV4,
    id: Option<[u8; 32]>,
    token: Option<[u8; 32]>,
    closer_nodes: Vec<SocketAddrV4>,
    error: u64,
    value: Option<Vec<u8>>,
}

impl Res {
    fn as_response(&self) -> Response<'_> {
        Response {
            tid: self.tid,
            to: self.to,
            id: self.id,
            token: self.token,
            closer_nodes: self.closer_nodes.clone(),
            error: self.error,
            value: self.value.as_deref(),
        }
    }
}

fn res() -> impl Strategy<Value = Res> {
    (
        any::<u16>(),
        ipv4(),
        option::of(any::<[u8; 32]>()),
        option::of(any::<[u8; 32]>()),
        vec(ipv4(), 0..30),
        prop_oneof![Just(0u64), 1u64..=3, Just(16), Just(17), uint()],
        option::of(vec(any::<u8>(), 0..300)),
    )
        .prop_map(|(tid, to, id, token, closer_nodes, error, value)| Res {
            tid,
            to,
            id,
            token,
            closer_nodes,
            error,
            value,
        })
}

fn encode(msg: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

/// `v` written in the `width`-byte form (1, 3, 5 or 9), if it fits.
fn uint_in_width(v: u64, width: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match width {
        1 if v <= 0xfc => out.push(v as u8),
        3 if v <= 0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        5 if v <= 0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        9 => {
            out.push(0xff);
            out.extend_from_slice(&v.to_le_bytes());
        }
        _ => return None,
    }
    Some(out)
}

/// Rewrites a request in a lenient form JS accepts: the flags uint, the command uint and the
/// value length written `width` bytes wide (where they fit), extra unknown flag bits, and
/// trailing bytes.
fn lenient_request(r: &Request<'_>, width: usize, extra_flags: u8, trailing: &[u8]) -> Vec<u8> {
    let flags = u64::from(
        (r.id.is_some() as u8)
            | (r.token.is_some() as u8) << 1
            | (r.internal as u8) << 2
            | (r.target.is_some() as u8) << 3
            | (r.value.is_some() as u8) << 4
            | (extra_flags & 0xe0),
    );
    let wide = |v: u64| uint_in_width(v, width).unwrap_or_else(|| uint_in_width(v, 9).unwrap());
    let mut out = vec![0x03];
    out.extend_from_slice(&wide(flags));
    out.extend_from_slice(&r.tid.to_le_bytes());
    compact::write_ipv4_address(&mut out, &r.to);
    if let Some(id) = &r.id {
        out.extend_from_slice(id);
    }
    if let Some(t) = &r.token {
        out.extend_from_slice(t);
    }
    out.extend_from_slice(&wide(r.command));
    if let Some(t) = &r.target {
        out.extend_from_slice(t);
    }
    if let Some(v) = r.value {
        out.extend_from_slice(&wide(v.len() as u64));
        out.extend_from_slice(v);
    }
    out.extend_from_slice(trailing);
    out
}

// ----- messages ------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_round_trips(r in req()) {
        let r = r.as_request();
        let bytes = encode(&Message::Request(r.clone()));
        prop_assert_eq!(bytes.len(), r.encoded_len());
        prop_assert_eq!(bytes[0], 0x03);
        prop_assert_eq!(Message::decode(&bytes), Ok(Message::Request(r.clone())));
        prop_assert_eq!(Request::decode(&bytes), Ok(r));
    }

    #[test]
    fn response_round_trips(r in res()) {
        let r = r.as_response();
        let bytes = encode(&Message::Response(r.clone()));
        prop_assert_eq!(bytes[0], 0x13);
        prop_assert_eq!(Message::decode(&bytes), Ok(Message::Response(r.clone())));
        prop_assert_eq!(Response::decode(&bytes), Ok(r.clone()));
        // `encode_response` from borrowed parts writes the same bytes.
        let mut parts = Vec::new();
        encode_response(&mut parts, &ResponseParts {
            tid: r.tid,
            to: r.to,
            id: r.id.as_ref(),
            token: r.token.as_ref(),
            closer_nodes: &r.closer_nodes,
            error: r.error,
            value: r.value,
        });
        prop_assert_eq!(parts, bytes);
    }

    /// JS writes the flag bits exactly for the fields present (closer nodes only when
    /// non-empty, error only when non-zero).
    #[test]
    fn response_flags_match_fields(r in res()) {
        let r = r.as_response();
        let bytes = encode(&Message::Response(r.clone()));
        let expected = (r.id.is_some() as u8)
            | (r.token.is_some() as u8) << 1
            | (!r.closer_nodes.is_empty() as u8) << 2
            | ((r.error != 0) as u8) << 3
            | (r.value.is_some() as u8) << 4;
        prop_assert_eq!(bytes[1], expected);
    }

    #[test]
    fn every_strict_prefix_fails(r in req(), s in res()) {
        for bytes in [
            encode(&Message::Request(r.as_request())),
            encode(&Message::Response(s.as_response())),
        ] {
            for n in 0..bytes.len() {
                prop_assert!(Message::decode(&bytes[..n]).is_err(), "prefix {} of {}", n, bytes.len());
            }
        }
    }

    #[test]
    fn lenient_requests_decode_the_same(
        r in req(),
        width in prop::sample::select(vec![1usize, 3, 5, 9]),
        extra in any::<u8>(),
        trailing in vec(any::<u8>(), 0..16),
    ) {
        let r = r.as_request();
        let bytes = lenient_request(&r, width, extra, &trailing);
        prop_assert_eq!(Message::decode(&bytes), Ok(Message::Request(r)));
    }

    #[test]
    fn responses_with_trailing_bytes_and_unknown_flags(
        s in res(),
        extra in 0u8..4,
        trailing in vec(any::<u8>(), 1..16),
    ) {
        let r = s.as_response();
        let mut bytes = encode(&Message::Response(r.clone()));
        bytes[1] |= extra << 5; // stays below 0xfd: a flags uint of one byte
        bytes.extend_from_slice(&trailing);
        prop_assert_eq!(Message::decode(&bytes), Ok(Message::Response(r)));
    }

    /// Flagged-but-empty fields (closer-node count 0, error 0) decode as absent; their
    /// re-encoding is shorter and stable.
    #[test]
    fn empty_flagged_response_fields(s in res()) {
        let mut r = s.as_response();
        r.closer_nodes.clear();
        r.error = 0;
        let mut bytes = encode(&Message::Response(r.clone()));
        let canonical = bytes.clone();
        // Insert "closer nodes: 0" and "error: 0" where they belong.
        let at = 10 + r.id.map_or(0, |_| 32) + r.token.map_or(0, |_| 32);
        bytes[1] |= 0x04 | 0x08;
        bytes.splice(at..at, [0x00, 0x00]);
        let decoded = Message::decode(&bytes);
        prop_assert_eq!(&decoded, &Ok(Message::Response(r)));
        prop_assert_eq!(encode(&decoded.unwrap()), canonical);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..400)) {
        let _ = Message::decode(&bytes);
        let _ = Request::decode(&bytes);
        let _ = Response::decode(&bytes);
        let mut r = Reader::new(&bytes);
        let _ = r.uint();
        let _ = r.buffer();
        let _ = r.optional_buffer();
        let _ = r.ipv4_array();
        let _ = Reader::new(&bytes).ipv6_address();
        let _ = Reader::new(&bytes).array_len(6);
    }

    /// Arbitrary bytes behind a valid type byte: whatever decodes re-encodes canonically.
    #[test]
    fn typed_junk_round_trips_when_it_decodes(
        kind in prop::sample::select(vec![0x03u8, 0x13]),
        flags in any::<u8>(),
        rest in vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = vec![kind, flags];
        bytes.extend_from_slice(&rest);
        if let Ok(msg) = Message::decode(&bytes) {
            let out = encode(&msg);
            prop_assert!(out.len() <= bytes.len());
            prop_assert_eq!(Message::decode(&out), Ok(msg));
        }
    }

    #[test]
    fn unknown_type_bytes_are_rejected(first in any::<u8>(), rest in vec(any::<u8>(), 0..64)) {
        prop_assume!(first != 0x03 && first != 0x13);
        let mut bytes = vec![first];
        bytes.extend_from_slice(&rest);
        prop_assert_eq!(Message::decode(&bytes), Err(DecodeError::UnknownType));
    }
}

// ----- compact primitives --------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn uint_round_trips_minimally(v in uint(), trailing in vec(any::<u8>(), 0..4)) {
        let mut out = Vec::new();
        compact::write_uint(&mut out, v);
        prop_assert_eq!(out.len(), compact::uint_len(v));
        let minimal = [1usize, 3, 5, 9].into_iter().find(|&w| uint_in_width(v, w).is_some()).unwrap();
        prop_assert_eq!(out.len(), minimal);
        out.extend_from_slice(&trailing);
        let mut r = Reader::new(&out);
        prop_assert_eq!(r.uint(), Ok(v));
        prop_assert_eq!(r.remaining(), &trailing[..]);
    }

    #[test]
    fn non_minimal_uints_decode(v in uint(), width in prop::sample::select(vec![1usize, 3, 5, 9])) {
        if let Some(bytes) = uint_in_width(v, width) {
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.uint(), Ok(v));
            prop_assert!(r.is_empty());
        }
    }

    #[test]
    fn truncated_uints_fail(v in 0xfdu64..=u64::MAX) {
        let mut out = Vec::new();
        compact::write_uint(&mut out, v);
        for n in 0..out.len() {
            prop_assert_eq!(Reader::new(&out[..n]).uint(), Err(DecodeError::UnexpectedEnd));
        }
    }

    #[test]
    fn buffer_round_trips(b in vec(any::<u8>(), 0..600), trailing in vec(any::<u8>(), 0..4)) {
        let mut out = Vec::new();
        compact::write_buffer(&mut out, &b);
        prop_assert_eq!(out.len(), compact::uint_len(b.len() as u64) + b.len());
        out.extend_from_slice(&trailing);
        let mut r = Reader::new(&out);
        prop_assert_eq!(r.buffer(), Ok(&b[..]));
        prop_assert_eq!(r.remaining(), &trailing[..]);
        let mut r = Reader::new(&out);
        let expected = if b.is_empty() { None } else { Some(&b[..]) };
        prop_assert_eq!(r.optional_buffer(), Ok(expected));
        // A buffer claiming more than is there fails.
        let mut short = Vec::new();
        compact::write_buffer(&mut short, &b);
        short.pop();
        if !b.is_empty() {
            prop_assert_eq!(Reader::new(&short).buffer(), Err(DecodeError::UnexpectedEnd));
        }
    }

    #[test]
    fn ipv4_address_round_trips(a in ipv4()) {
        let mut out = Vec::new();
        compact::write_ipv4_address(&mut out, &a);
        prop_assert_eq!(out.len(), 6);
        prop_assert_eq!(&out[..4], &a.ip().octets()[..]);
        prop_assert_eq!(&out[4..], &a.port().to_le_bytes()[..]);
        prop_assert_eq!(&out[..], &compact::ipv4_address_bytes(&a)[..]);
        prop_assert_eq!(Reader::new(&out).ipv4_address(), Ok(a));
        prop_assert_eq!(Reader::new(&out[..4]).ipv4(), Ok(*a.ip()));
        prop_assert!(Reader::new(&out[..5]).ipv4_address().is_err());
    }

    #[test]
    fn ipv6_address_round_trips(a in ipv6()) {
        let mut out = Vec::new();
        compact::write_ipv6_address(&mut out, &a);
        prop_assert_eq!(out.len(), 18);
        prop_assert_eq!(&out[..16], &a.ip().octets()[..]);
        prop_assert_eq!(&out[16..], &a.port().to_le_bytes()[..]);
        prop_assert_eq!(Reader::new(&out).ipv6_address(), Ok(a));
        prop_assert!(Reader::new(&out[..17]).ipv6_address().is_err());
    }

    #[test]
    fn ipv4_array_round_trips(addrs in vec(ipv4(), 0..300), trailing in vec(any::<u8>(), 0..8)) {
        let mut out = Vec::new();
        compact::write_ipv4_array(&mut out, &addrs);
        prop_assert_eq!(out.len(), compact::uint_len(addrs.len() as u64) + 6 * addrs.len());
        out.extend_from_slice(&trailing);
        let mut r = Reader::new(&out);
        prop_assert_eq!(r.ipv4_array(), Ok(addrs.clone()));
        prop_assert_eq!(r.remaining(), &trailing[..]);
    }

    /// array(uint): a count then each element; counts are bounded by the bytes left and by
    /// MAX_ARRAY_LEN.
    #[test]
    fn uint_array_round_trips(vals in vec(uint(), 0..100)) {
        let mut out = Vec::new();
        compact::write_uint(&mut out, vals.len() as u64);
        for &v in &vals {
            compact::write_uint(&mut out, v);
        }
        let mut r = Reader::new(&out);
        let n = r.array_len(1).unwrap();
        prop_assert_eq!(n, vals.len());
        let got: Vec<u64> = (0..n).map(|_| r.uint().unwrap()).collect();
        prop_assert_eq!(got, vals);
        prop_assert!(r.is_empty());
    }

    #[test]
    fn array_len_is_bounded(count in uint(), elem in 1usize..40, have in 0usize..64) {
        let mut out = Vec::new();
        compact::write_uint(&mut out, count);
        out.extend(std::iter::repeat_n(0u8, have));
        let got = Reader::new(&out).array_len(elem);
        if count > MAX_ARRAY_LEN {
            prop_assert_eq!(got, Err(DecodeError::ArrayTooLong));
        } else if count as usize * elem > have {
            prop_assert_eq!(got, Err(DecodeError::UnexpectedEnd));
        } else {
            prop_assert_eq!(got, Ok(count as usize));
        }
    }

    #[test]
    fn fixed_width_round_trips(a in any::<u8>(), b in any::<u16>(), c in 0u32..1 << 24, d in any::<u32>(), e in any::<u64>()) {
        let mut out = vec![a];
        out.extend_from_slice(&b.to_le_bytes());
        out.extend_from_slice(&c.to_le_bytes()[..3]);
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        let mut r = Reader::new(&out);
        prop_assert_eq!(r.u8(), Ok(a));
        prop_assert_eq!(r.u16(), Ok(b));
        prop_assert_eq!(r.u24(), Ok(c));
        prop_assert_eq!(r.u32(), Ok(d));
        prop_assert_eq!(r.u64(), Ok(e));
        prop_assert!(r.is_empty());
        prop_assert_eq!(r.u8(), Err(DecodeError::UnexpectedEnd));
        prop_assert_eq!(Reader::new(&[a]).bool(), Ok(a == 1));
    }
}
