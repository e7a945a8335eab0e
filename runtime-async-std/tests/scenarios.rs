//! Scenarios on a private network on 127.0.0.1 (a first node and a few persistent nodes), each
//! written once as an async fn taking a spawner and run under async-std and under smol.
//!
//! Every wait is bounded by a timeout; nothing sleeps to synchronise.

use std::future::Future;
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use hyperdht_async_std::{AsyncNode, Connection, Error};
use hyperdht_proto::{
    Config, ConnectError, ConnectOptions, KeyPair, Persistence, Record, ServerConfig,
};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Spawns a detached task on the runtime under test.
#[derive(Clone, Copy)]
struct Spawner(fn(BoxFuture));

impl Spawner {
    fn spawn(self, f: impl Future<Output = ()> + Send + 'static) {
        (self.0)(Box::pin(f))
    }
}

fn async_std_spawner() -> Spawner {
    Spawner(|f| {
        async_std::task::spawn(f);
    })
}

fn smol_spawner() -> Spawner {
    Spawner(|f| smol::spawn(f).detach())
}

/// Runs `$scenario` as two tests: `$scenario::async_std` and `$scenario::smol`.
macro_rules! on_both_runtimes {
    ($scenario:ident) => {
        mod $scenario {
            #[async_std::test]
            async fn async_std() {
                super::logs();
                super::$scenario(super::async_std_spawner()).await
            }

            #[test]
            fn smol() {
                super::logs();
                smol::block_on(super::$scenario(super::smol_spawner()))
            }
        }
    };
}

on_both_runtimes!(echo_with_half_close);
on_both_runtimes!(bulk_both_ways);
on_both_runtimes!(records_round_trip);
on_both_runtimes!(failures_and_shutdown);
on_both_runtimes!(oversized_datagrams_are_counted);

/// Logs to the test output when RUST_LOG is set.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

const STEP: Duration = Duration::from_secs(30);

/// `f`, or a panic naming `what` after `d`.
async fn timeout<T>(d: Duration, what: &str, f: impl Future<Output = T>) -> T {
    let out = futures_lite::future::or(async { Some(f.await) }, async {
        async_io::Timer::after(d).await;
        None
    })
    .await;
    match out {
        Some(v) => v,
        None => panic!("timed out after {d:?}: {what}"),
    }
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("IPv4 expected"),
    }
}

/// Binds a node and spawns its driver.
async fn start(spawn: Spawner, config: Config) -> AsyncNode {
    let (node, driver) = hyperdht_async_std::bind(config).await.expect("bind");
    spawn.spawn(driver);
    timeout(STEP, "bootstrap", node.wait_bootstrapped())
        .await
        .expect("bootstrap");
    node
}

/// A network on 127.0.0.1: a first node and `n` persistent nodes. Returns every node (the
/// first one first) and the bootstrap address.
async fn network(spawn: Spawner, n: usize) -> (Vec<AsyncNode>, SocketAddrV4) {
    // Port 0: the first node binds a free port and announces that one.
    let first = start(
        spawn,
        Config::bootstrapper(SocketAddrV4::new([127, 0, 0, 1].into(), 0)),
    );
    let mut nodes = vec![first.await];
    let boot = v4(nodes[0].local_addr());
    assert_ne!(boot.port(), 0);
    for _ in 0..n {
        let mut c = Config::new(vec![boot]);
        c.host = [127, 0, 0, 1].into();
        c.port = 0;
        c.persistence = Persistence::Persistent;
        nodes.push(start(spawn, c).await);
    }
    (nodes, boot)
}

/// An ordinary (adaptive, firewalled) node on 127.0.0.1.
async fn peer(spawn: Spawner, boot: SocketAddrV4) -> AsyncNode {
    let mut c = Config::new(vec![boot]);
    c.host = [127, 0, 0, 1].into();
    c.port = 0;
    start(spawn, c).await
}

/// 256 KiB through an echo server, checked byte for byte; the client finishes its side first
/// and keeps reading: the server reads EOF, then finishes too, and the client reads EOF.
async fn echo_with_half_close(spawn: Spawner) {
    let (_net, boot) = network(spawn, 5).await;
    let server_node = peer(spawn, boot).await;
    let client_node = peer(spawn, boot).await;
    let server_key = KeyPair::from_seed(&[0x61; 32]);
    let client_key = KeyPair::from_seed(&[0xc1; 32]);

    let mut server = timeout(
        STEP,
        "listen",
        server_node.listen(&server_key, ServerConfig::default()),
    )
    .await
    .expect("listen");
    assert_eq!(server.public_key(), server_key.public_key());
    assert!(!server.relay_addresses().is_empty());

    // The echo server reports what each connection saw before EOF.
    let (seen_tx, seen_rx) = async_channel::unbounded::<([u8; 32], u64)>();
    spawn.spawn(async move {
        while let Some(conn) = server.next().await {
            let seen_tx = seen_tx.clone();
            spawn.spawn(async move {
                let n = futures_lite::io::copy(&conn, &mut &conn)
                    .await
                    .expect("echo copy");
                (&conn).close().await.expect("server close");
                let _ = seen_tx.send((conn.remote_public_key(), n)).await;
            });
        }
    });

    let conn = timeout(
        STEP,
        "connect",
        client_node.connect_with(
            server_key.public_key(),
            ConnectOptions::default().with_key_pair(&client_key),
        ),
    )
    .await
    .expect("connect");
    assert_eq!(conn.remote_public_key(), server_key.public_key());
    assert!(conn.is_initiator());

    let data: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let conn = Arc::new(conn);
    let writer = conn.clone();
    let to_send = data.clone();
    let (wrote_tx, wrote_rx) = async_channel::bounded(1);
    spawn.spawn(async move {
        let mut w = &*writer;
        w.write_all(&to_send).await.expect("write");
        w.close().await.expect("client close");
        let _ = wrote_tx.send(()).await;
    });

    let mut got = Vec::new();
    timeout(STEP, "read the echo to EOF", (&*conn).read_to_end(&mut got))
        .await
        .expect("read");
    assert_eq!(got.len(), data.len(), "echoed length");
    assert!(got == data, "echoed bytes differ");
    timeout(STEP, "writer", wrote_rx.recv())
        .await
        .expect("writer done");
    let (who, n) = timeout(STEP, "server EOF", seen_rx.recv())
        .await
        .expect("server report");
    assert_eq!(who, client_key.public_key());
    assert_eq!(n, data.len() as u64, "the server read everything, then EOF");

    // Writing after close fails; reading stays at EOF.
    assert!((&*conn).write_all(b"late").await.is_err());
    let mut more = [0u8; 8];
    assert_eq!((&*conn).read(&mut more).await.expect("read at EOF"), 0);

    // Dropping a connection finishes it: the server reads EOF at once.
    let other_key = KeyPair::from_seed(&[0xc4; 32]);
    let dropped = timeout(
        STEP,
        "second connect",
        client_node.connect_with(
            server_key.public_key(),
            ConnectOptions::default().with_key_pair(&other_key),
        ),
    )
    .await
    .expect("second connect");
    drop(dropped);
    let (who, n) = timeout(STEP, "EOF after drop", seen_rx.recv())
        .await
        .expect("server report");
    assert_eq!((who, n), (other_key.public_key(), 0));
}

/// Writes `data` and finishes, while reading to EOF; returns what was read.
async fn exchange(spawn: Spawner, conn: Connection, data: Vec<u8>) -> Vec<u8> {
    let conn = Arc::new(conn);
    let writer = conn.clone();
    let (wrote_tx, wrote_rx) = async_channel::bounded(1);
    spawn.spawn(async move {
        let mut w = &*writer;
        w.write_all(&data).await.expect("write");
        w.close().await.expect("close");
        let _ = wrote_tx.send(()).await;
    });
    let mut got = Vec::new();
    (&*conn).read_to_end(&mut got).await.expect("read");
    wrote_rx.recv().await.expect("writer done");
    got
}

/// 3 MiB each way at once (more than a connection buffers, so writers wait for `Writable`),
/// checked byte for byte; both sides end cleanly.
async fn bulk_both_ways(spawn: Spawner) {
    let (_net, boot) = network(spawn, 4).await;
    let server_node = peer(spawn, boot).await;
    let client_node = peer(spawn, boot).await;
    let server_key = KeyPair::from_seed(&[0x63; 32]);
    let server = timeout(
        STEP,
        "listen",
        server_node.listen(&server_key, ServerConfig::default()),
    )
    .await
    .expect("listen");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    let (got_tx, got_rx) = async_channel::bounded(1);
    let back = data.clone();
    spawn.spawn(async move {
        let conn = server.accept().await.expect("accept");
        let _ = got_tx.send(exchange(spawn, conn, back).await).await;
    });
    let conn = timeout(
        STEP,
        "connect",
        client_node.connect_with(
            server_key.public_key(),
            ConnectOptions::default().with_key_pair(&KeyPair::from_seed(&[0xc3; 32])),
        ),
    )
    .await
    .expect("connect");
    let got = timeout(STEP, "client exchange", exchange(spawn, conn, data.clone())).await;
    assert!(
        got == data,
        "client received {} bytes, not the data",
        got.len()
    );
    let got = timeout(STEP, "server exchange", got_rx.recv())
        .await
        .expect("server result");
    assert!(
        got == data,
        "server received {} bytes, not the data",
        got.len()
    );
}

fn lists(records: &[(SocketAddrV4, Record)], public_key: &[u8; 32]) -> bool {
    records.iter().any(|(_, r)| match r {
        Record::Lookup { peers, .. } => peers.iter().any(|p| &p.public_key == public_key),
        _ => false,
    })
}

/// Announce / lookup (collected and streamed) / unannounce, mutable and immutable put/get.
async fn records_round_trip(spawn: Spawner) {
    let (net, boot) = network(spawn, 6).await;
    let a = peer(spawn, boot).await;
    let b = peer(spawn, boot).await;

    let topic = [0x7a; 32];
    let key = KeyPair::from_seed(&[0x71; 32]);
    let relay = v4(net[1].local_addr());
    let out = timeout(STEP, "announce", a.announce(topic, &key, vec![relay]))
        .await
        .expect("announce");
    assert!(!out.commits.is_empty(), "announce committed somewhere");

    let found = timeout(STEP, "lookup", b.lookup(topic))
        .await
        .expect("lookup");
    assert!(lists(&found.records, &key.public_key()), "{found:?}");
    let peer_record = found
        .records
        .iter()
        .find_map(|(_, r)| match r {
            Record::Lookup { peers, .. } => peers
                .iter()
                .find(|p| p.public_key == key.public_key())
                .cloned(),
            _ => None,
        })
        .unwrap();
    assert_eq!(peer_record.relay_addresses, vec![relay]);

    let streamed: Vec<_> = timeout(STEP, "lookup stream", async {
        b.lookup_stream(topic)
            .expect("stream")
            .collect::<Vec<_>>()
            .await
    })
    .await;
    let streamed: Vec<_> = streamed
        .into_iter()
        .map(|r| r.expect("stream item"))
        .collect();
    assert!(lists(&streamed, &key.public_key()));

    timeout(STEP, "unannounce", a.unannounce(topic, &key))
        .await
        .expect("unannounce");
    let after = timeout(STEP, "lookup after unannounce", b.lookup(topic))
        .await
        .expect("lookup");
    assert!(!lists(&after.records, &key.public_key()), "{after:?}");

    // Mutable: put, get, newer seq wins, stale seq is refused.
    let mkey = KeyPair::from_seed(&[0x72; 32]);
    let out = timeout(STEP, "mutable put", a.mutable_put(&mkey, b"first", 1))
        .await
        .expect("mutable put");
    assert!(out.commits.iter().any(|c| c.error == 0), "{out:?}");
    let got = timeout(STEP, "mutable get", b.mutable_get(mkey.public_key(), 0))
        .await
        .expect("mutable get")
        .expect("a value");
    assert_eq!((got.seq, got.value.as_slice()), (1, &b"first"[..]));
    timeout(STEP, "mutable put 2", a.mutable_put(&mkey, b"second", 2))
        .await
        .expect("mutable put 2");
    let got = timeout(STEP, "mutable get 2", b.mutable_get(mkey.public_key(), 2))
        .await
        .expect("mutable get")
        .expect("a value");
    assert_eq!((got.seq, got.value.as_slice()), (2, &b"second"[..]));
    let stale = timeout(STEP, "stale put", b.mutable_put(&mkey, b"old", 1))
        .await
        .expect("stale put");
    assert!(
        !stale.commits.is_empty() && stale.commits.iter().all(|c| c.error != 0),
        "a lower seq is refused: {stale:?}"
    );

    // Immutable.
    let value = b"an immutable value".to_vec();
    let (hash, out) = timeout(STEP, "immutable put", a.immutable_put(&value))
        .await
        .expect("immutable put");
    assert!(!out.commits.is_empty());
    let got = timeout(STEP, "immutable get", b.immutable_get(hash))
        .await
        .expect("immutable get");
    assert_eq!(got, Some(value));
    let nothing = timeout(STEP, "immutable get of nothing", b.immutable_get([9; 32]))
        .await
        .expect("immutable get");
    assert_eq!(nothing, None);
}

/// An unknown key is not found; a refused client fails; a server is found by FIND_PEER and
/// closes; shutdown ends the driver and later calls fail; dropping every handle ends the
/// driver too.
async fn failures_and_shutdown(spawn: Spawner) {
    let (_net, boot) = network(spawn, 5).await;
    let server_node = peer(spawn, boot).await;
    let client_node = peer(spawn, boot).await;

    let nobody = KeyPair::from_seed(&[0x99; 32]).public_key();
    let client_key = KeyPair::from_seed(&[0xc2; 32]);
    match timeout(
        STEP,
        "connect to nobody",
        client_node.connect_with(nobody, ConnectOptions::default().with_key_pair(&client_key)),
    )
    .await
    {
        Err(Error::Connect(ConnectError::PeerNotFound)) => {}
        other => panic!("unknown key must not be found: {other:?}"),
    }

    let server_key = KeyPair::from_seed(&[0x62; 32]);
    let banned = client_key.public_key();
    let mut cfg = ServerConfig::default();
    cfg.accept = Some(Arc::new(move |h: &hyperdht_proto::IncomingHandshake| {
        h.remote_public_key != banned
    }));
    let server = timeout(STEP, "listen", server_node.listen(&server_key, cfg))
        .await
        .expect("listen");
    match timeout(
        STEP,
        "refused connect",
        client_node.connect_with(
            server_key.public_key(),
            ConnectOptions::default().with_key_pair(&client_key),
        ),
    )
    .await
    {
        Err(Error::Connect(ConnectError::PeerConnectionFailed)) => {}
        other => panic!("a refused key must fail to connect: {other:?}"),
    }
    let found = timeout(
        STEP,
        "find_peer",
        client_node.find_peer(server_key.public_key()),
    )
    .await
    .expect("find_peer");
    assert!(found.records.iter().any(|(_, r)| matches!(
        r,
        Record::Peer(p) if p.public_key == server_key.public_key()
    )));
    timeout(STEP, "server close", server.close()).await;

    // Explicit shutdown: the driver finishes, calls fail.
    timeout(STEP, "shutdown", server_node.shutdown()).await;
    assert!(server_node.is_closed());
    assert!(matches!(
        server_node.lookup([1; 32]).await,
        Err(Error::Closed)
    ));

    // Dropping every handle shuts the node down and ends its driver.
    let mut c = Config::new(vec![boot]);
    c.host = [127, 0, 0, 1].into();
    c.port = 0;
    let (node, driver) = hyperdht_async_std::bind(c).await.expect("bind");
    let (ended_tx, ended_rx) = async_channel::bounded(1);
    spawn.spawn(async move {
        driver.await;
        let _ = ended_tx.send(()).await;
    });
    timeout(STEP, "bootstrap", node.wait_bootstrapped())
        .await
        .expect("bootstrap");
    let clone = node.clone();
    drop(node);
    assert!(!clone.is_closed());
    drop(clone);
    timeout(
        STEP,
        "driver ends once every handle is gone",
        ended_rx.recv(),
    )
    .await
    .expect("driver ended");
}

/// A datagram larger than 2048 bytes (libudx's receive buffer) is dropped and counted, not
/// decoded; the node goes on answering.
async fn oversized_datagrams_are_counted(spawn: Spawner) {
    let node = start(
        spawn,
        Config::bootstrapper(SocketAddrV4::new([127, 0, 0, 1].into(), 0)),
    )
    .await;
    let target = node.local_addr();
    let before = node.info().unwrap().stats.dropped;
    let sock = smol::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&[0x13; 2049], target).await.unwrap();
    // Then a PING from the same socket: once it is answered, the datagram before it was read.
    let ping = hyperdht_proto::wire::rpc::Request::ping(7, v4(target)).to_bytes();
    sock.send_to(&ping, target).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = timeout(STEP, "ping reply", sock.recv_from(&mut buf))
        .await
        .unwrap();
    let reply = hyperdht_proto::wire::rpc::Response::decode(&buf[..n]).unwrap();
    assert_eq!(reply.tid, 7);
    let after = node.info().unwrap().stats.dropped;
    assert_eq!(after.oversized, before.oversized + 1);
    assert_eq!(after.malformed, before.malformed);
}
