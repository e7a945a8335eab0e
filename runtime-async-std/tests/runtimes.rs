//! The driver runs under every common executor: the same echo (a bootstrapper, a server and a
//! client on 127.0.0.1, 64 KiB each way) under async-std, smol and tokio. Under tokio the
//! connection goes through `tokio_util::compat`, as a tokio user would use it.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use hyperdht_async_std::{bind, random_key_pair, AsyncNode, Config, Driver, ServerConfig};

/// What one echo sends (and must get back).
fn payload() -> Vec<u8> {
    (0..64 * 1024u32).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("nodes bind IPv4, got {a}"),
    }
}

/// Three nodes, each with its driver for `spawn` to run: a bootstrapper, a server, a client.
async fn network(spawn: impl Fn(Driver)) -> [AsyncNode; 3] {
    let (boot, driver) = bind(Config::bootstrapper("127.0.0.1:0".parse().unwrap()))
        .await
        .expect("bootstrapper");
    spawn(driver);
    let at = vec![v4(boot.local_addr())];
    let (server, driver) = bind(Config::local(at.clone())).await.expect("server node");
    spawn(driver);
    let (client, driver) = bind(Config::local(at)).await.expect("client node");
    spawn(driver);
    server.wait_bootstrapped().await.expect("server bootstraps");
    client.wait_bootstrapped().await.expect("client bootstraps");
    [boot, server, client]
}

/// Runs the echo with futures-io on the connection; `spawn` runs tasks on the executor.
async fn echo_futures_io(spawn: impl Fn(Driver) + Copy, spawn_task: impl Fn(EchoTask)) {
    let [_boot, server_node, client_node] = network(spawn).await;
    let key = random_key_pair().unwrap();
    let server = server_node
        .listen(&key, ServerConfig::default())
        .await
        .expect("listen");
    spawn_task(Box::pin(async move {
        let conn = server.accept().await.expect("a connection");
        futures_lite::io::copy(&conn, &mut &conn).await.unwrap();
        (&conn).close().await.unwrap();
    }));
    let mut conn = client_node
        .connect(key.public_key())
        .await
        .expect("connect");
    let data = payload();
    conn.write_all(&data).await.unwrap();
    conn.close().await.unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).await.unwrap();
    assert!(back == data, "echoed {} bytes, not the data", back.len());
}

type EchoTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

#[test]
fn runs_under_async_std() {
    async_std::task::block_on(echo_futures_io(
        |d| drop(async_std::task::spawn(d)),
        |t| drop(async_std::task::spawn(t)),
    ));
}

#[test]
fn runs_under_smol() {
    smol::block_on(echo_futures_io(
        |d| smol::spawn(d).detach(),
        |t| smol::spawn(t).detach(),
    ));
}

#[test]
fn runs_under_tokio_with_its_own_io_traits() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_util::compat::FuturesAsyncReadCompatExt;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spawn = |d: Driver| drop(tokio::spawn(d));
        let [_boot, server_node, client_node] = network(spawn).await;
        let key = random_key_pair().unwrap();
        let server = server_node
            .listen(&key, ServerConfig::default())
            .await
            .expect("listen");
        tokio::spawn(async move {
            let conn = server.accept().await.expect("a connection");
            let mut conn = conn.compat();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(&got).await.unwrap();
            conn.shutdown().await.unwrap();
        });
        let conn = client_node
            .connect(key.public_key())
            .await
            .expect("connect");
        let mut conn = conn.compat();
        let data = payload();
        conn.write_all(&data).await.unwrap();
        conn.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut back))
            .await
            .expect("the echo within 30 s")
            .unwrap();
        assert!(back == data, "echoed {} bytes, not the data", back.len());
    });
}
