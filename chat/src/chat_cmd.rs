//! `hyperdht-chat server` and `hyperdht-chat client`: the terminal chat of Pear's "connect two
//! peers" guide. Chat text goes to stdout, status lines too (flushed at once, so the chat can
//! be piped), logs to stderr.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::thread;

use hyperdht_mio::{parse_bootstrap_list, ConnReader, ConnWriter, MioNode};
use hyperdht_proto::config::{DEFAULT_PORT, PUBLIC_BOOTSTRAP};
use hyperdht_proto::crypto::to_hex;
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::{Config, ConnectOptions, Persistence, ServerConfig};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::args::Args;
use crate::keys::{parse_public_key, random_seed, server_key};

/// Prints one status line and flushes (through a pipe, buffered output looks like a hang).
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The node config for chat peers: the given bootstrap list (or the public one).
fn node_config(
    args: &Args,
    bootstrap_override: Option<Vec<SocketAddrV4>>,
) -> Result<Config, String> {
    let bootstrap = match (bootstrap_override, args.value("bootstrap")) {
        (Some(b), _) => b,
        (None, Some(list)) => parse_bootstrap_list(list).map_err(|e| e.to_string())?,
        (None, None) => {
            parse_bootstrap_list(&PUBLIC_BOOTSTRAP.join(",")).map_err(|e| e.to_string())?
        }
    };
    if bootstrap.is_empty() {
        return Err(
            "a chat peer needs bootstrap nodes (or --local for an embedded network)".into(),
        );
    }
    let mut c = Config::new(bootstrap);
    if let Some(h) = args.value("host") {
        c.host = h
            .parse()
            .map_err(|_| format!("--host {h:?} is not an IPv4 address"))?;
    }
    if let Some(p) = args.value("port") {
        c.port = p
            .parse()
            .map_err(|_| format!("--port {p:?} is not a port number"))?;
        c.any_port = false;
    }
    Ok(c)
}

/// An embedded local network on 127.0.0.1: a first node and three more, for offline chat.
fn local_network() -> Result<(Vec<MioNode>, SocketAddrV4), String> {
    let mut first = None;
    for port in DEFAULT_PORT..DEFAULT_PORT + 20 {
        if let Ok(n) = MioNode::spawn(Config::bootstrapper(SocketAddrV4::new(
            Ipv4Addr::LOCALHOST,
            port,
        ))) {
            first = Some((n, port));
            break;
        }
    }
    let (first, port) = first.ok_or("no free port for the embedded network")?;
    first.wait_bootstrapped().map_err(|e| e.to_string())?;
    let boot = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut nodes = vec![first];
    for _ in 0..3 {
        let mut c = Config::new(vec![boot]);
        c.host = Ipv4Addr::LOCALHOST;
        c.port = 0;
        c.persistence = Persistence::Persistent;
        let n = MioNode::spawn(c).map_err(|e| e.to_string())?;
        n.wait_bootstrapped().map_err(|e| e.to_string())?;
        nodes.push(n);
    }
    Ok((nodes, boot))
}

/// Bytes moved per read and write: a whole pipe buffer, and the size of the chunks the driver
/// hands over, so a bulk transfer makes few round trips to the driver thread.
const PUMP_BUFFER: usize = 64 * 1024;

/// Copies a connection's bytes to stdout until it ends.
fn pump_to_stdout(mut reader: ConnReader) {
    let mut buf = vec![0u8; PUMP_BUFFER];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut out = io::stdout().lock();
                if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "connection ended");
                break;
            }
        }
    }
}

/// The writers stdin goes to, and whether stdin ended.
#[derive(Default)]
struct Outbox {
    writers: Vec<ConnWriter>,
    ended: bool,
}

/// Copies stdin to every writer in `outbox`; at EOF finishes them.
fn pump_stdin(outbox: Arc<Mutex<Outbox>>) {
    let mut buf = vec![0u8; PUMP_BUFFER];
    let stdin = io::stdin();
    let mut input = stdin.lock();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        let mut ob = outbox.lock().unwrap_or_else(|e| e.into_inner());
        if n == 0 {
            ob.ended = true;
            for w in &ob.writers {
                let _ = w.finish();
            }
            return;
        }
        ob.writers.retain_mut(|w| w.write_all(&buf[..n]).is_ok());
    }
}

/// The blind relay named with `--relay KEY`, if any.
fn relay_key(args: &Args) -> Result<Option<[u8; 32]>, String> {
    args.value("relay")
        .map(|k| parse_public_key(k).map_err(|e| format!("--relay: {e}")))
        .transpose()
}

pub fn server(argv: &[String]) -> Result<(), String> {
    let args = Args::parse(
        argv,
        &["bootstrap", "seed", "key-file", "host", "port", "relay"],
        &["local"],
    )?;
    let key = server_key(args.value("seed"), args.value("key-file"))?;
    let mut server_config = ServerConfig::default();
    server_config.relay_through = relay_key(&args)?;
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (local_nodes, boot) = if args.switch("local") {
        let (nodes, boot) = local_network()?;
        (nodes, Some(vec![boot]))
    } else {
        (Vec::new(), None)
    };
    if let Some(b) = &boot {
        say(&format!("local network bootstrap: {}", b[0]));
    }
    let node = MioNode::spawn(node_config(&args, boot)?).map_err(|e| e.to_string())?;
    node.wait_bootstrapped().map_err(|e| e.to_string())?;
    let server = node
        .listen(&key, server_config)
        .map_err(|e| e.to_string())?;
    say(&format!("listening on: {}", to_hex(&key.public_key())));

    let outbox = Arc::new(Mutex::new(Outbox::default()));
    let stdin_box = outbox.clone();
    thread::spawn(move || pump_stdin(stdin_box));
    let server = Arc::new(server);
    let accepting = server.clone();
    let conn_box = outbox.clone();
    thread::spawn(move || {
        while let Some(c) = accepting.accept() {
            {
                say("got connection!");
                let mut ob = conn_box.lock().unwrap_or_else(|e| e.into_inner());
                if ob.ended {
                    let _ = c.writer.finish();
                } else {
                    ob.writers.push(c.writer);
                }
                drop(ob);
                let reader = c.reader;
                thread::spawn(move || pump_to_stdout(reader));
            }
        }
    });
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down: unannouncing");
    }
    server.close();
    node.shutdown();
    drop(local_nodes);
    Ok(())
}

/// `hyperdht-chat relay`: a blind relay until a signal.
pub fn relay(argv: &[String]) -> Result<(), String> {
    let args = Args::parse(
        argv,
        &["bootstrap", "seed", "key-file", "host", "port"],
        &[],
    )?;
    let key = server_key(args.value("seed"), args.value("key-file"))?;
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let node = MioNode::spawn(node_config(&args, None)?).map_err(|e| e.to_string())?;
    node.wait_bootstrapped().map_err(|e| e.to_string())?;
    let server = node.serve_blind_relay(&key).map_err(|e| e.to_string())?;
    say(&format!(
        "relay listening on: {}",
        to_hex(&key.public_key())
    ));
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down the relay");
    }
    server.close();
    node.shutdown();
    Ok(())
}

pub fn client(argv: &[String]) -> Result<(), String> {
    let (key_arg, rest) = match argv.split_first() {
        Some((k, rest)) if !k.starts_with("--") => (k.clone(), rest),
        _ => return Err("usage: hyperdht-chat client <KEY> [--bootstrap HOST:PORT,...]".into()),
    };
    let args = Args::parse(rest, &["bootstrap", "host", "port", "relay"], &[])?;
    let remote = parse_public_key(&key_arg)?;
    let mut options = ConnectOptions::default();
    options.relay_through = relay_key(&args)?;
    say(&format!("Connecting to: {key_arg}"));
    let node = MioNode::spawn(node_config(&args, None)?).map_err(|e| e.to_string())?;
    options.key_pair = Some(KeyPair::from_seed(&random_seed()?));
    // Like the JS client, look the peer up while the node still bootstraps: the lookup starts
    // from the bootstrap nodes itself, so waiting for the bootstrap first only adds its time.
    let conn = match node.connect_with(remote, options) {
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
    let outbox = Arc::new(Mutex::new(Outbox {
        writers: vec![conn.writer],
        ended: false,
    }));
    thread::spawn(move || pump_stdin(outbox));
    pump_to_stdout(conn.reader);
    node.shutdown();
    Ok(())
}
