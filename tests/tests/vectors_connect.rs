//! Connection-layer byte vectors from the real packages: the whole Noise IK trace and outputs
//! of `tests/vectors/noise.json`, and every payload, envelope and relay value of
//! `tests/vectors/holepunch.json` (both written by `tests/js/vectors`).

use std::net::SocketAddrV4;

use serde_json::Value;

use hyperdht_proto::crypto::{from_hex, hash, to_hex};
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::holepunch::SecurePayload;
use hyperdht_proto::noise::{dh, Initiator, Responder};
use hyperdht_proto::wire::holepunch::HolepunchPayload;
use hyperdht_proto::wire::hyperdht::{mode, Handshake, Holepunch};
use hyperdht_proto::wire::noise::NoisePayload;
use hyperdht_proto::wire::rpc::Request;
use hyperdht_tests::support::{h32, hx, load_vector as load};

fn addr(v: &Value) -> SocketAddrV4 {
    SocketAddrV4::new(
        v["host"].as_str().unwrap().parse().unwrap(),
        v["port"].as_u64().unwrap() as u16,
    )
}

#[test]
fn noise_ik_trace_and_outputs() {
    let v = load("noise.json");
    let i = &v["inputs"];
    let key = |k: &str| KeyPair::from_seed(&h32(&i[k]["seed"]));
    let (cs, ss, ce, se) = (
        key("clientStatic"),
        key("serverStatic"),
        key("clientEphemeral"),
        key("serverEphemeral"),
    );
    for (k, kp) in [
        ("clientStatic", &cs),
        ("serverStatic", &ss),
        ("clientEphemeral", &ce),
        ("serverEphemeral", &se),
    ] {
        assert_eq!(kp.public_key(), h32(&i[k]["publicKey"]), "{k}");
    }
    let t = &v["trace"];
    assert_eq!(dh(&ce, &ss.public_key()).unwrap(), h32(&t["m1_dh_es"]));
    assert_eq!(dh(&cs, &ss.public_key()).unwrap(), h32(&t["m1_dh_ss"]));
    assert_eq!(dh(&se, &ce.public_key()).unwrap(), h32(&t["m2_dh_ee"]));
    assert_eq!(dh(&se, &cs.public_key()).unwrap(), h32(&t["m2_dh_se"]));

    let p1 = hx(&i["clientPayloadEncoded"]);
    let p2 = hx(&i["serverPayloadEncoded"]);
    // Our payload codec writes the same bytes from the decoded fields.
    assert_eq!(NoisePayload::decode(&p1).unwrap().to_bytes(), p1);
    assert_eq!(NoisePayload::decode(&p2).unwrap().to_bytes(), p2);

    let r = &v["results"];
    let mut ini = Initiator::new(cs.clone(), ss.public_key(), ce);
    let m1 = ini.write_message1(&p1).unwrap();
    assert_eq!(to_hex(&m1), r["message1"].as_str().unwrap());
    let mut res = Responder::new(ss.clone(), se);
    let (got, client_pk) = res.read_message1(&m1).unwrap();
    assert_eq!(
        (got.as_slice(), client_pk),
        (p1.as_slice(), cs.public_key())
    );
    assert_eq!(
        NoisePayload::decode(&got).unwrap().udx.unwrap().id,
        r["decodedByServer_udxId"].as_u64().unwrap()
    );
    let (m2, out_r) = res.write_message2(&p2).unwrap();
    assert_eq!(to_hex(&m2), r["message2"].as_str().unwrap());
    let (got, out_i) = ini.read_message2(&m2).unwrap();
    assert_eq!(
        NoisePayload::decode(&got).unwrap().udx.unwrap().id,
        r["decodedByClient_udxId"].as_u64().unwrap()
    );
    assert_eq!(out_i.tx, h32(&r["initiator_tx"]));
    assert_eq!(out_i.rx, h32(&r["initiator_rx"]));
    assert_eq!((out_r.tx, out_r.rx), (out_i.rx, out_i.tx));
    assert_eq!(out_i.hash.to_vec(), hx(&r["handshakeHash"]));
    assert_eq!(out_i.holepunch_secret(), h32(&r["holepunchSecret"]));
    assert_eq!(out_i.stream_id(true), h32(&r["streamId_initiator"]));
    assert_eq!(out_i.stream_id(false), h32(&r["streamId_responder"]));
    for (n, k) in [
        (0, "NS_SECRETSTREAM_INITIATOR"),
        (1, "NS_SECRETSTREAM_RESPONDER"),
        (2, "NS_SECRETSTREAM_SEND"),
    ] {
        assert_eq!(
            hyperdht_proto::noise::secret_stream_namespace(n),
            h32(&r[k]),
            "{k}"
        );
    }
}

fn payload_from_json(j: &Value) -> HolepunchPayload {
    let opt32 = |v: &Value| v.as_str().map(|s| from_hex(s).unwrap().try_into().unwrap());
    HolepunchPayload {
        error: j["error"].as_u64().unwrap(),
        firewall: j["firewall"].as_u64().unwrap(),
        round: j["round"].as_u64().unwrap(),
        connected: j["connected"].as_bool().unwrap(),
        punching: j["punching"].as_bool().unwrap(),
        addresses: j["addresses"]
            .as_array()
            .map(|a| a.iter().map(addr).collect()),
        remote_address: (!j["remoteAddress"].is_null()).then(|| addr(&j["remoteAddress"])),
        token: opt32(&j["token"]),
        remote_token: opt32(&j["remoteToken"]),
    }
}

#[test]
fn holepunch_payloads_envelopes_and_relay_values() {
    let v = load("holepunch.json");
    let secret = h32(&load("noise.json")["results"]["holepunchSecret"]);
    let local = h32(&v["tokens"]["localSecret"]);
    let sp = SecurePayload::new(secret, local);
    for host in ["203.0.113.5", "198.51.100.7"] {
        let token = sp.token(host.parse().unwrap());
        assert_eq!(
            to_hex(&token),
            v["tokens"][format!("token({host})")].as_str().unwrap()
        );
    }
    for (name, p) in v["holepunchPayloads"].as_object().unwrap() {
        let payload = payload_from_json(&p["json"]);
        assert_eq!(
            to_hex(&payload.to_bytes()),
            p["plaintext"].as_str().unwrap(),
            "{name} plaintext"
        );
        let nonce: [u8; 24] = hx(&p["nonce"]).try_into().unwrap();
        let sealed = sp.seal(&payload, nonce);
        assert_eq!(
            to_hex(&sealed),
            p["sealed"].as_str().unwrap(),
            "{name} sealed"
        );
        assert_eq!(sealed.len() as u64, p["sealedLen"].as_u64().unwrap());
        assert_eq!(sp.open(&hx(&p["sealed"])), Some(payload), "{name} opens");
    }

    // PEER_HANDSHAKE values in every mode.
    let hs = &v["peerHandshakeValues"];
    for (name, value) in hs.as_object().unwrap() {
        let bytes = hx(value);
        let decoded = Handshake::decode(&bytes).unwrap();
        assert_eq!(decoded.to_bytes(), bytes, "{name}");
        let expected_mode = match name.split(',').next().unwrap() {
            "FROM_CLIENT" => mode::FROM_CLIENT,
            "FROM_RELAY" => mode::FROM_RELAY,
            "FROM_SECOND_RELAY" => mode::FROM_SECOND_RELAY,
            "FROM_SERVER" => mode::FROM_SERVER,
            _ => mode::REPLY,
        };
        assert_eq!(decoded.mode, expected_mode, "{name}");
    }
    // PEER_HOLEPUNCH values in every mode.
    for (name, value) in v["peerHolepunchValues"].as_object().unwrap() {
        let bytes = hx(value);
        let decoded = Holepunch::decode(&bytes).unwrap();
        assert_eq!(decoded.to_bytes(), bytes, "{name}");
        assert!(
            sp.open(&decoded.payload).is_some(),
            "{name}: the envelope opens"
        );
    }
    // A whole dht-rpc request datagram built by the real dht-rpc.
    let d = &v["dhtRpcRequest_PEER_HANDSHAKE"];
    let target = h32(&d["target"]);
    assert_eq!(
        target,
        hash(&KeyPair::from_seed(&[2; 32]).public_key()),
        "target = H(server key)"
    );
    let value = hx(&hs["FROM_CLIENT, client to relay node"]);
    let req = Request {
        tid: d["tid"].as_u64().unwrap() as u16,
        to: addr(&d["to"]),
        id: None,
        token: None,
        internal: false,
        command: 0,
        target: Some(target),
        value: Some(&value),
    };
    let mut out = Vec::new();
    req.encode(&mut out);
    assert_eq!(to_hex(&out), d["datagram"].as_str().unwrap());
}
