//! Property tests for the connection layer: the Noise responder fed arbitrary bytes never
//! panics and never completes a handshake; every hyperdht and connect-layer codec round-trips
//! and never panics on arbitrary input.

use std::net::{Ipv4Addr, SocketAddrV4};

use proptest::prelude::*;

use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::holepunch::SecurePayload;
use hyperdht_proto::noise::{Initiator, Responder};
use hyperdht_proto::wire::holepunch::HolepunchPayload;
use hyperdht_proto::wire::hyperdht::{
    Announce, Handshake, Holepunch, LookupReply, MutablePut, MutableRecord, Peer,
};
use hyperdht_proto::wire::noise::{NoisePayload, UdxInfo};

fn addr() -> impl Strategy<Value = SocketAddrV4> {
    (any::<u32>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

fn peer() -> impl Strategy<Value = Peer> {
    (any::<[u8; 32]>(), proptest::collection::vec(addr(), 0..4)).prop_map(
        |(public_key, relay_addresses)| Peer {
            public_key,
            relay_addresses,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn responder_never_panics_nor_completes(msg in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut r = Responder::new(KeyPair::from_seed(&[2; 32]), KeyPair::from_seed(&[4; 32]));
        prop_assert!(r.read_message1(&msg).is_err(), "random bytes must not authenticate");
        // A responder that failed step 1 cannot produce message 2.
        prop_assert!(r.write_message2(b"x").is_err());
    }

    #[test]
    fn responder_rejects_any_tampering(i in 0usize..116, bit in 0u8..8) {
        let server = KeyPair::from_seed(&[2; 32]);
        let mut ini = Initiator::new(KeyPair::from_seed(&[1; 32]), server.public_key(), KeyPair::from_seed(&[3; 32]));
        let mut m1 = ini.write_message1(&[7; 20]).unwrap();
        let i = i % m1.len();
        m1[i] ^= 1 << bit;
        let mut r = Responder::new(server, KeyPair::from_seed(&[4; 32]));
        prop_assert!(r.read_message1(&m1).is_err());
    }

    #[test]
    fn initiator_rejects_arbitrary_message2(msg in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut ini = Initiator::new(KeyPair::from_seed(&[1; 32]), KeyPair::from_seed(&[2; 32]).public_key(), KeyPair::from_seed(&[3; 32]));
        ini.write_message1(b"p").unwrap();
        prop_assert!(ini.read_message2(&msg).is_err());
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = NoisePayload::decode(&bytes);
        let _ = HolepunchPayload::decode(&bytes);
        let _ = Handshake::decode(&bytes);
        let _ = Holepunch::decode(&bytes);
        let _ = Peer::decode(&bytes);
        let _ = LookupReply::decode(&bytes);
        let _ = Announce::decode(&bytes);
        let _ = MutablePut::decode(&bytes);
        let _ = MutableRecord::decode(&bytes);
        let sp = SecurePayload::new([9; 32], [8; 32]);
        prop_assert!(sp.open(&bytes).is_none() || bytes.len() > 40);
    }

    #[test]
    fn hyperdht_codecs_round_trip(p in peer(), refresh in proptest::option::of(any::<[u8; 32]>()), bump in any::<u64>(), seq in any::<u64>(), value in proptest::collection::vec(any::<u8>(), 0..64), mode in 0u64..5, noise in proptest::collection::vec(any::<u8>(), 0..64), pa in proptest::option::of(addr()), ra in proptest::option::of(addr())) {
        prop_assert_eq!(Peer::decode(&p.to_bytes()).unwrap(), p.clone());
        let ann = Announce { peer: Some(p.clone()), refresh, signature: Some([5; 64]), bump };
        prop_assert_eq!(Announce::decode(&ann.to_bytes()).unwrap(), ann);
        let put = MutablePut { public_key: p.public_key, seq, value: value.clone(), signature: [6; 64] };
        let mut enc = Vec::new();
        put.encode(&mut enc);
        prop_assert_eq!(MutablePut::decode(&enc).unwrap(), put);
        let rec = MutableRecord { seq, value: value.clone(), signature: [7; 64] };
        prop_assert_eq!(MutableRecord::decode(&rec.to_bytes()).unwrap(), rec);
        let hs = Handshake { mode, noise: noise.clone(), peer_address: pa, relay_address: ra };
        prop_assert_eq!(Handshake::decode(&hs.to_bytes()).unwrap(), hs);
        let hp = Holepunch { mode, id: seq, payload: noise, peer_address: pa };
        prop_assert_eq!(Holepunch::decode(&hp.to_bytes()).unwrap(), hp);
        let records = [p.to_bytes()];
        let mut out = Vec::new();
        LookupReply::encode_raw(&[&records[0]], bump, &mut out);
        let l = LookupReply::decode(&out).unwrap();
        prop_assert_eq!(l.peers, vec![p]);
        prop_assert_eq!(l.bump, bump);
    }

    #[test]
    fn connect_payloads_round_trip(fw in 0u64..4, round in any::<u64>(), flags in any::<u8>(), addrs in proptest::collection::vec(addr(), 1..4), id in any::<u32>(), tok in any::<[u8; 32]>()) {
        let hp = HolepunchPayload {
            error: 0,
            firewall: fw,
            round,
            connected: flags & 1 != 0,
            punching: flags & 2 != 0,
            addresses: (flags & 4 != 0).then(|| addrs.clone()),
            remote_address: (flags & 8 != 0).then(|| addrs[0]),
            token: (flags & 16 != 0).then_some(tok),
            remote_token: (flags & 32 != 0).then_some(tok),
        };
        prop_assert_eq!(HolepunchPayload::decode(&hp.to_bytes()).unwrap(), hp.clone());
        let sp = SecurePayload::new([1; 32], [2; 32]);
        prop_assert_eq!(sp.open(&sp.seal(&hp, [3; 24])), Some(hp));
        let np = NoisePayload {
            version: 1,
            firewall: fw,
            addresses4: addrs.clone(),
            udx: Some(UdxInfo { version: 1, reusable_socket: flags & 1 != 0, id: u64::from(id), seq: 0 }),
            secret_stream: Some(1),
            relay_addresses: (flags & 64 != 0).then_some(addrs),
            ..NoisePayload::default()
        };
        prop_assert_eq!(NoisePayload::decode(&np.to_bytes()).unwrap(), np);
    }
}
