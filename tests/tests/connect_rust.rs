//! Rust client to Rust server on 127.0.0.1 through a Rust DHT: find_peer, relayed Noise
//! handshake, the LAN shortcut, and refusal by the accept policy.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use hyperdht_mio::{Error, MioNode, ServerEvent};
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::{Config, ConnectError, ConnectOptions, Persistence, ServerConfig};
use hyperdht_tests::support::{logs, v4};

/// A Rust network on 127.0.0.1: a first node and `n` persistent nodes.
fn network(n: usize) -> (MioNode, Vec<MioNode>) {
    logs();
    // Port 0: the first node binds a free port and announces that one.
    let first = MioNode::spawn(Config::bootstrapper(SocketAddrV4::new(
        [127, 0, 0, 1].into(),
        0,
    )))
    .unwrap();
    first.wait_bootstrapped().unwrap();
    let boot = vec![v4(first.local_addr())];
    let nodes = (0..n)
        .map(|_| {
            let mut c = Config::new(boot.clone());
            c.host = [127, 0, 0, 1].into();
            c.port = 0;
            c.persistence = Persistence::Persistent;
            let node = MioNode::spawn(c).unwrap();
            node.wait_bootstrapped().unwrap();
            node
        })
        .collect();
    (first, nodes)
}

fn peer(boot: SocketAddrV4) -> MioNode {
    let mut c = Config::new(vec![boot]);
    c.host = [127, 0, 0, 1].into();
    c.port = 0;
    let node = MioNode::spawn(c).unwrap();
    node.wait_bootstrapped().unwrap();
    node
}

#[test]
fn rust_client_reaches_rust_server_over_the_lan_shortcut() {
    let (first, _nodes) = network(6);
    let boot = v4(first.local_addr());
    let server_node = peer(boot);
    let client_node = peer(boot);
    let server_key = KeyPair::from_seed(&[0x51; 32]);
    let client_key = KeyPair::from_seed(&[0xc1; 32]);
    let server = server_node
        .listen(&server_key, ServerConfig::default())
        .expect("listen");

    let conn = client_node
        .connect_with(
            server_key.public_key(),
            ConnectOptions::default().with_key_pair(&client_key),
        )
        .expect("connect");
    assert_eq!(conn.remote_public_key(), server_key.public_key());
    // The LAN shortcut ends at the server's DHT socket; an open client may instead be reached
    // by the server first, from its request socket. Either way, one of the server node's own.
    let info = server_node.info().unwrap();
    assert!(
        [info.server_addr, info.client_addr].contains(&Some(conn.remote_addr())),
        "path {} is not one of the server node's sockets {:?}",
        conn.remote_addr(),
        (info.server_addr, info.client_addr)
    );

    let ev = server
        .events()
        .recv_timeout(Duration::from_secs(10))
        .expect("incoming");
    let ServerEvent::Incoming {
        remote_public_key, ..
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert_eq!(remote_public_key, client_key.public_key());
    // The handshake authenticated the server, and we are its initiator.
    assert!(conn.is_initiator());
    assert_eq!(conn.remote_public_key(), server_key.public_key());
}

#[test]
fn refused_and_unknown_keys_fail_cleanly() {
    let (first, _nodes) = network(5);
    let boot = v4(first.local_addr());
    let server_node = peer(boot);
    let client_node = peer(boot);
    let server_key = KeyPair::from_seed(&[0x52; 32]);
    let banned = KeyPair::from_seed(&[0xba; 32]);
    let banned_pk = banned.public_key();
    let mut cfg = ServerConfig::default();
    cfg.accept = Some(Arc::new(move |h: &hyperdht_proto::IncomingHandshake| {
        h.remote_public_key != banned_pk
    }));
    let _server = server_node.listen(&server_key, cfg).expect("listen");

    match client_node.connect_with(
        server_key.public_key(),
        ConnectOptions::default().with_key_pair(&banned),
    ) {
        Err(Error::Connect(ConnectError::PeerConnectionFailed)) => {}
        other => panic!("refused key must fail to connect: {other:?}"),
    }
    let nobody = KeyPair::from_seed(&[0x99; 32]).public_key();
    match client_node.connect_with(nobody, ConnectOptions::default().with_key_pair(&banned)) {
        Err(Error::Connect(ConnectError::PeerNotFound)) => {}
        other => panic!("unknown key must not be found: {other:?}"),
    }
}

/// A Rust network, a server and a client node, and one open connection between them (both
/// ends). The nodes live as long as the pair.
struct ConnectedPair {
    client_conn: hyperdht_mio::Connection,
    server_conn: hyperdht_mio::Connection,
    _nodes: (
        MioNode,
        Vec<MioNode>,
        MioNode,
        MioNode,
        hyperdht_mio::Server,
    ),
}

impl ConnectedPair {
    /// `seed` picks the server's key pair (and, flipped, the client's).
    fn new(seed: u8) -> ConnectedPair {
        let (first, nodes) = network(5);
        let boot = v4(first.local_addr());
        let server_node = peer(boot);
        let client_node = peer(boot);
        let server_key = KeyPair::from_seed(&[seed; 32]);
        let server = server_node
            .listen(&server_key, ServerConfig::default())
            .expect("listen");
        let client_conn = client_node
            .connect_with(
                server_key.public_key(),
                ConnectOptions::default().with_key_pair(&KeyPair::from_seed(&[!seed; 32])),
            )
            .expect("connect");
        let server_conn = loop {
            match server
                .events()
                .recv_timeout(Duration::from_secs(10))
                .expect("server event")
            {
                ServerEvent::Connected(c) => break *c,
                ServerEvent::Incoming { .. } => {}
                other => panic!("{other:?}"),
            }
        };
        ConnectedPair {
            client_conn,
            server_conn,
            _nodes: (first, nodes, server_node, client_node, server),
        }
    }
}

#[test]
fn data_flows_both_ways_and_end_closes_cleanly() {
    use std::io::{Read, Write};
    let pair = ConnectedPair::new(0x53);
    let (mut conn, mut accepted) = (pair.client_conn, pair.server_conn);
    // 1 MiB each way at once, checked byte for byte.
    let data: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let to_server = data.clone();
    let mut cw = conn.writer.clone();
    let sender = std::thread::spawn(move || {
        cw.write_all(&to_server).unwrap();
        cw.finish().unwrap();
    });
    let mut sw = accepted.writer.clone();
    let back = data.clone();
    let server_sender = std::thread::spawn(move || {
        sw.write_all(&back).unwrap();
        sw.finish().unwrap();
    });
    let mut got = Vec::new();
    accepted
        .reader
        .read_to_end(&mut got)
        .expect("server reads to EOF");
    assert!(
        got == data,
        "server received {} bytes, not the data",
        got.len()
    );
    let mut got = Vec::new();
    conn.reader
        .read_to_end(&mut got)
        .expect("client reads to EOF");
    assert!(
        got == data,
        "client received {} bytes, not the data",
        got.len()
    );
    sender.join().unwrap();
    server_sender.join().unwrap();
    // Both sides ended and read everything: once the close is final, neither node keeps the
    // connection (closed connections must not pile up in a long-running node).
    let (server_node, client_node) = (&pair._nodes.2, &pair._nodes.3);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for (side, node) in [("server", server_node), ("client", client_node)] {
        while node.info().unwrap().connections > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the {side} node still holds the closed connection"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Many small pipelined writes (the writer does not wait for the driver per write) arrive
/// whole and in order, also while the connection is blocked and writes are parked; `flush`
/// returns once the node has taken everything, and a write after the connection closed fails.
#[test]
fn pipelined_small_writes_keep_their_order() {
    use std::io::{Read, Write};
    let pair = ConnectedPair::new(0x54);
    let (conn, mut accepted) = (pair.client_conn, pair.server_conn);
    // 8 MiB in writes of 1,000 bytes: far more than the write window, the node's queue and
    // the UDX window together, so writes get parked while more keep coming.
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let to_server = data.clone();
    let mut writer = conn.writer.clone();
    let sender = std::thread::spawn(move || {
        for chunk in to_server.chunks(1000) {
            writer.write_all(chunk).unwrap();
        }
        writer.flush().unwrap();
        writer.finish().unwrap();
        writer
    });
    let mut got = Vec::new();
    accepted
        .reader
        .read_to_end(&mut got)
        .expect("server reads to EOF");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the bytes arrived out of order");
    let mut writer = sender.join().unwrap();
    // The server closes; the client's next writes fail (at the latest on flush).
    accepted.writer.reset();
    drop(accepted);
    let mut conn = conn;
    let mut rest = Vec::new();
    let _ = conn.reader.read_to_end(&mut rest);
    let failed = (0..100).any(|_| {
        writer
            .write_all(b"late")
            .and_then(|()| writer.flush())
            .is_err()
    });
    assert!(failed, "writes to a closed connection must fail");
}

#[test]
fn messages_keep_their_boundaries_and_end() {
    use std::io::Read;
    let pair = ConnectedPair::new(0x55);
    let (conn, mut accepted) = (pair.client_conn, pair.server_conn);
    // Many small messages (several share a driver chunk), one spanning many chunks, and an
    // empty one, which is not sent.
    let mut sent: Vec<Vec<u8>> = (0..2000u32)
        .map(|i| vec![i as u8; 1 + (i as usize * 37) % 300])
        .collect();
    sent.insert(1000, (0..700_000u32).map(|i| (i % 253) as u8).collect());
    let to_server = sent.clone();
    let writer = conn.writer.clone();
    let sender = std::thread::spawn(move || {
        for (i, m) in to_server.iter().enumerate() {
            writer.send_message(m).unwrap();
            if i == 10 {
                writer.send_message(&[]).unwrap();
            }
        }
        let too_large = vec![0; hyperdht_proto::secretstream::MAX_MESSAGE + 1];
        let err = writer.send_message(&too_large).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        writer.finish().unwrap();
    });
    let mut received = vec![accepted.reader.recv_message().unwrap().unwrap()];
    // The second message is begun with a byte read; read_message returns the rest of it.
    let mut head = [0u8; 1];
    accepted.reader.read_exact(&mut head).unwrap();
    let rest = accepted.reader.recv_message().unwrap().unwrap();
    received.push([&head[..], &rest].concat());
    while let Some(m) = accepted.reader.recv_message().expect("read_message") {
        received.push(m);
    }
    sender.join().unwrap();
    assert_eq!(received.len(), sent.len(), "message count");
    for (i, (s, r)) in sent.iter().zip(&received).enumerate() {
        assert!(
            s == r,
            "message {i}: sent {} bytes, got {}",
            s.len(),
            r.len()
        );
    }
    // After the end, reads keep saying so.
    assert!(accepted.reader.recv_message().unwrap().is_none());
    let mut buf = [0u8; 8];
    assert_eq!(accepted.reader.read(&mut buf).unwrap(), 0);
}

/// `connect(public_key)` connects as the node's default key pair (JS `dht.defaultKeyPair`):
/// `Config::key_pair` when set; otherwise one of its own per node, derived from the node's
/// random seed, so two nodes never share it.
#[test]
fn connect_uses_the_default_key_pair() {
    let (first, _nodes) = network(3);
    let boot = v4(first.local_addr());
    let server_node = peer(boot);
    let server_key = hyperdht_mio::random_key_pair().unwrap();
    let server = server_node
        .listen(&server_key, ServerConfig::default())
        .expect("listen");
    let incoming_key = || loop {
        match server.events().recv_timeout(Duration::from_secs(10)) {
            Ok(ServerEvent::Incoming {
                remote_public_key, ..
            }) => return remote_public_key,
            Ok(_) => {}
            Err(e) => panic!("no incoming connection: {e}"),
        }
    };

    let configured = hyperdht_mio::random_key_pair().unwrap();
    let mut c = Config::local(vec![boot]);
    c.key_pair = Some(configured.clone());
    let client = MioNode::spawn(c).unwrap();
    let conn = client.connect(server_key.public_key()).expect("connect");
    assert_eq!(conn.remote_public_key(), server_key.public_key());
    assert_eq!(incoming_key(), configured.public_key());

    let mut seen = Vec::new();
    for _ in 0..2 {
        let node = MioNode::spawn(Config::local(vec![boot])).unwrap();
        let _conn = node.connect(server_key.public_key()).expect("connect");
        seen.push(incoming_key());
    }
    assert_ne!(seen[0], seen[1], "two nodes got the same default key pair");
    assert!(!seen.contains(&configured.public_key()));
}

/// A node that shuts down ends its connections on the wire (UDX DESTROY before its sockets
/// close), so the peer's reader fails at once instead of after the stream timeout (15 s).
#[test]
fn shutdown_tells_the_peer_at_once() {
    use std::io::Read;
    let pair = ConnectedPair::new(0x55);
    let mut accepted = pair.server_conn;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        let _ = tx.send(accepted.reader.read(&mut buf).map_err(|e| e.kind()));
    });
    let started = std::time::Instant::now();
    pair._nodes.3.shutdown();
    let outcome = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the server's reader did not hear of the client's shutdown within 5 s");
    assert_eq!(outcome, Err(std::io::ErrorKind::ConnectionReset));
    eprintln!("the peer saw the shutdown after {:?}", started.elapsed());
}
