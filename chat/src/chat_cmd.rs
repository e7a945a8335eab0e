//! `hyperdht-chat server`, `client` and `relay`: the terminal chat of Pear's "connect two
//! peers" guide, and a blind relay. Chat text goes to stdout, status lines too (flushed at
//! once, so the chat can be piped), warnings and logs to stderr.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use hyperdht_mio::{random_key_pair, Config, ConnectOptions, MioNode, ServerConfig};
use hyperdht_proto::{public_bootstrap, to_hex, Persistence, DEFAULT_PORT};

use crate::args::{Bootstrap, ClientArgs, PeerArgs, RelayArgs, ServerArgs};
use crate::keys::server_key;
use crate::peer::{port_is_free, say, spawn_node, watch_dht, Ended, Peers, Stop};

/// The node config for chat peers: the given bootstrap list (or the public one).
pub(crate) fn node_config(
    peer: &PeerArgs,
    bootstrap_override: Option<SocketAddrV4>,
) -> Result<Config, String> {
    let bootstrap = match (bootstrap_override, &peer.bootstrap) {
        (Some(b), _) => vec![b],
        (None, Some(Bootstrap::Nodes(list))) => list.clone(),
        (None, Some(Bootstrap::None)) => {
            return Err(
                "--bootstrap none: a chat peer needs bootstrap nodes (or --local for an \
                 embedded network; `hyperdht-chat node --bootstrap none` starts a network)"
                    .into(),
            )
        }
        (None, None) => public_bootstrap(),
    };
    let mut c = Config::new(bootstrap);
    if let Some(h) = peer.host {
        c.host = h;
    }
    if let Some(p) = peer.port {
        c.port = p;
        c.any_port = false;
    }
    Ok(c)
}

/// An embedded local network on 127.0.0.1: a first node and three more, for offline chat.
/// The first node takes the first free port from 49737 (so the address is predictable).
fn local_network() -> Result<(Vec<MioNode>, SocketAddrV4), String> {
    let mut first = None;
    for port in DEFAULT_PORT..DEFAULT_PORT + 20 {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        // Probe first: a busy port is skipped quietly instead of the node logging an error.
        if !port_is_free(addr) {
            continue;
        }
        if let Ok(n) = MioNode::spawn(Config::bootstrapper(addr)) {
            first = Some((n, addr));
            break;
        }
    }
    let (first, boot) = first.ok_or_else(|| {
        format!(
            "no free UDP port on 127.0.0.1 for the embedded network (tried {}-{})",
            DEFAULT_PORT,
            DEFAULT_PORT + 19
        )
    })?;
    first.wait_bootstrapped().map_err(|e| e.to_string())?;
    let mut nodes = vec![first];
    for _ in 0..3 {
        let mut c = Config::local(vec![boot]);
        c.persistence = Persistence::Persistent;
        let n = spawn_node(c)?;
        n.wait_bootstrapped().map_err(|e| e.to_string())?;
        nodes.push(n);
    }
    Ok((nodes, boot))
}

pub fn server(args: ServerArgs) -> Result<(), String> {
    let stop = Stop::install()?;
    let key = server_key(args.key.seed, args.key.key_file.as_deref())?;
    let mut server_config = ServerConfig::default();
    server_config.relay_through = args.relay.map(|k| k.bytes);
    let (local_nodes, boot) = if args.local {
        let (nodes, boot) = local_network()?;
        (nodes, Some(boot))
    } else {
        (Vec::new(), None)
    };
    if let Some(b) = &boot {
        say(&format!("local network bootstrap: {b}"));
    }
    let config = node_config(&args.peer, boot)?;
    let bootstrap = config.bootstrap.clone();
    let node = spawn_node(config)?;
    let peers = Arc::new(Peers::default());
    thread::scope(|s| -> Result<(), String> {
        let _watch = watch_dht(s, &node, bootstrap);
        node.wait_bootstrapped().map_err(|e| e.to_string())?;
        let server = node
            .listen(&key, server_config)
            .map_err(|e| e.to_string())?;
        say(&format!("listening on: {}", to_hex(&key.public_key())));
        stop.running();

        peers.pump_stdin();
        let server = Arc::new(server);
        let accepting = server.clone();
        let conn_peers = peers.clone();
        thread::spawn(move || {
            while let Some(c) = accepting.accept() {
                say("got connection!");
                conn_peers.add(c.reader, c.writer, || {});
            }
        });
        let sig = stop.wait();
        tracing::info!(
            signal = sig,
            "shutting down: closing connections, unannouncing"
        );
        peers.leave(&node);
        server.close();
        Ok(())
    })?;
    node.shutdown();
    drop(local_nodes);
    Ok(())
}

/// `hyperdht-chat relay`: a blind relay until a signal.
pub fn relay(args: RelayArgs) -> Result<(), String> {
    let stop = Stop::install()?;
    let key = server_key(args.key.seed, args.key.key_file.as_deref())?;
    let config = node_config(&args.peer, None)?;
    let bootstrap = config.bootstrap.clone();
    let node = spawn_node(config)?;
    thread::scope(|s| -> Result<(), String> {
        let _watch = watch_dht(s, &node, bootstrap);
        node.wait_bootstrapped().map_err(|e| e.to_string())?;
        let server = node.serve_blind_relay(&key).map_err(|e| e.to_string())?;
        say(&format!(
            "relay listening on: {}",
            to_hex(&key.public_key())
        ));
        let sig = stop.wait();
        tracing::info!(signal = sig, "shutting down the relay");
        server.close();
        Ok(())
    })?;
    node.shutdown();
    Ok(())
}

pub fn client(args: ClientArgs) -> Result<(), String> {
    let stop = Stop::install()?;
    let mut options = ConnectOptions::default();
    options.relay_through = args.relay.map(|k| k.bytes);
    options.key_pair = Some(random_key_pair().map_err(|e| format!("no key pair: {e}"))?);
    say(&format!("Connecting to: {}", args.key.text));
    let node = spawn_node(node_config(&args.peer, None)?)?;
    // Like the JS client, look the peer up while the node still bootstraps: the lookup starts
    // from the bootstrap nodes itself, so waiting for the bootstrap first only adds its time.
    let conn = match node.connect_with(args.key.bytes, options) {
        Ok(c) => c,
        Err(e) => {
            let reached_dht = node.info().is_ok_and(|i| !i.table.is_empty());
            if reached_dht {
                return Err(format!("could not connect: {e}"));
            }
            return Err(format!(
                "could not connect: no DHT node answered; check --bootstrap and the network ({e})"
            ));
        }
    };
    say("got connection!");
    let (tx, ended) = mpsc::channel();
    stop.forward(tx.clone());
    let peers = Arc::new(Peers::default());
    peers.add(conn.reader, conn.writer, move || {
        let _ = tx.send(Ended::Stream);
    });
    peers.pump_stdin();
    match ended.recv() {
        Ok(Ended::Signal(sig)) => {
            tracing::info!(signal = sig, "shutting down: closing the connection");
            peers.leave(&node);
        }
        // The server ended its stream (or it broke): end ours too, so it sees us go.
        Ok(Ended::Stream) | Err(_) => peers.finish(&node),
    }
    node.shutdown();
    Ok(())
}
