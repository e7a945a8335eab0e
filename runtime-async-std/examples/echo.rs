//! An echo server and client over HyperDHT, on async-std.
//!
//! ```text
//! echo local                                   # a private network on 127.0.0.1, one round trip
//! echo server [--bootstrap LIST] [--seed HEX]  # prints its public key, echoes every connection
//! echo client PUBLIC_KEY [--bootstrap LIST]    # sends stdin, prints what comes back
//! ```
//!
//! LIST is `HOST:PORT[,HOST:PORT...]` (`IP@NAME:PORT` entries use the IP); the default is the
//! public bootstrap nodes. `--seed` (64 hex digits) makes the server's key pair stable.

use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::process::ExitCode;

use async_std::task;
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use hyperdht_async_std::{AsyncNode, Server};
use hyperdht_proto::{
    from_hex, to_hex, Config, KeyPair, Persistence, ServerConfig, PUBLIC_BOOTSTRAP,
};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const USAGE: &str = "usage: echo local | echo server [--bootstrap LIST] [--seed HEX] \
                     | echo client PUBLIC_KEY [--bootstrap LIST]";

#[async_std::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("local") => local().await,
        Some("server") => server(&args[1..]).await,
        Some("client") => client(&args[1..]).await,
        _ => Err(USAGE.into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The value after `--name`, if given.
fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).map(String::as_str)
}

fn key32(hex: &str) -> Res<[u8; 32]> {
    from_hex(hex)
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| format!("{hex:?} is not 64 hex digits").into())
}

/// `HOST:PORT` entries; `IP@NAME:PORT` uses the IP (as hyperdht does for its public list).
fn bootstrap(args: &[String]) -> Res<Vec<SocketAddrV4>> {
    let list = option(args, "--bootstrap")
        .map(|l| l.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|| {
            PUBLIC_BOOTSTRAP
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        });
    list.iter()
        .map(|entry| {
            let (host, port) = entry.rsplit_once(':').ok_or("expected HOST:PORT")?;
            let host = host.split_once('@').map_or(host, |(ip, _)| ip);
            let port: u16 = port.parse()?;
            (host, port)
                .to_socket_addrs()?
                .find_map(|a| match a {
                    SocketAddr::V4(a) => Some(a),
                    SocketAddr::V6(_) => None,
                })
                .ok_or_else(|| format!("{entry}: no IPv4 address").into())
        })
        .collect()
}

/// Binds a node, spawns its driver and waits for bootstrap.
async fn start(config: Config) -> Res<AsyncNode> {
    let (node, driver) = hyperdht_async_std::bind(config).await?;
    task::spawn(driver);
    node.wait_bootstrapped().await?;
    Ok(node)
}

/// Echoes every connection of `server` on its own task.
async fn serve(mut server: Server) {
    while let Some(conn) = server.next().await {
        task::spawn(async move {
            let who = to_hex(&conn.remote_public_key());
            eprintln!("connection from {who} at {}", conn.remote_addr());
            match futures_lite::io::copy(&conn, &mut &conn).await {
                Ok(n) => eprintln!("{who}: echoed {n} bytes"),
                Err(e) => eprintln!("{who}: {e}"),
            }
            let _ = (&conn).close().await;
        });
    }
}

async fn server(args: &[String]) -> Res<()> {
    let key = match option(args, "--seed") {
        Some(hex) => KeyPair::from_seed(&key32(hex)?),
        None => hyperdht_async_std::random_key_pair().map_err(|e| e.to_string())?,
    };
    let node = start(Config::new(bootstrap(args)?)).await?;
    let server = node.listen(&key, ServerConfig::default()).await?;
    println!("{}", to_hex(&key.public_key()));
    eprintln!(
        "echo server listening; relays: {:?}",
        server.relay_addresses()
    );
    serve(server).await;
    Ok(())
}

async fn client(args: &[String]) -> Res<()> {
    let remote = key32(args.first().ok_or(USAGE)?)?;
    let node = start(Config::new(bootstrap(args)?)).await?;
    // As the node's default key pair: random, since the node's seed is.
    let conn = node.connect(remote).await?;
    eprintln!("connected to {}", conn.remote_addr());
    let conn = std::sync::Arc::new(conn);
    let writer = conn.clone();
    let sending = task::spawn(async move {
        let mut w = &*writer;
        futures_lite::io::copy(async_std::io::stdin(), &mut w).await?;
        w.close().await
    });
    let mut out = async_std::io::stdout();
    futures_lite::io::copy(&*conn, &mut out).await?;
    out.flush().await?;
    sending.await?;
    Ok(())
}

/// A first node, three persistent nodes, a server and a client on 127.0.0.1; one round trip.
async fn local() -> Res<()> {
    let first = start(Config::bootstrapper(SocketAddrV4::new(
        [127, 0, 0, 1].into(),
        0,
    )));
    let mut nodes = vec![first.await?];
    let boot = match nodes[0].local_addr() {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => return Err(format!("first node bound to {a}, not IPv4").into()),
    };
    let on_loopback = |persistence| {
        let mut c = Config::new(vec![boot]);
        c.host = [127, 0, 0, 1].into();
        c.port = 0;
        c.persistence = persistence;
        c
    };
    for _ in 0..3 {
        nodes.push(start(on_loopback(Persistence::Persistent)).await?);
    }
    let server_node = start(on_loopback(Persistence::Adaptive)).await?;
    let client_node = start(on_loopback(Persistence::Adaptive)).await?;

    let key = KeyPair::from_seed(&[0xec; 32]);
    let server = server_node.listen(&key, ServerConfig::default()).await?;
    task::spawn(serve(server));

    let mut conn = client_node.connect(key.public_key()).await?;
    let message = b"hello through the DHT";
    conn.write_all(message).await?;
    conn.close().await?;
    let mut back = Vec::new();
    conn.read_to_end(&mut back).await?;
    println!("echoed: {}", String::from_utf8_lossy(&back));
    if back != message {
        return Err("the echo differs".into());
    }
    for n in nodes.iter().chain([&server_node, &client_node]) {
        n.shutdown().await;
    }
    Ok(())
}
