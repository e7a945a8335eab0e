//! `hyperdht-chat node`: run one DHT node until a signal.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use hyperdht_mio::{parse_bootstrap_list, MioNode};
use hyperdht_proto::config::{DEFAULT_PORT, PUBLIC_BOOTSTRAP};
use hyperdht_proto::{Config, Event, Persistence};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::args::Args;

pub fn run(argv: &[String]) -> Result<(), String> {
    let args = Args::parse(argv, &["host", "port", "bootstrap"], &["persistent"])?;
    let host: Ipv4Addr = match args.value("host") {
        Some(h) => h
            .parse()
            .map_err(|_| format!("--host {h:?} is not an IPv4 address"))?,
        None => Ipv4Addr::UNSPECIFIED,
    };
    let port: Option<u16> = match args.value("port") {
        Some(p) => Some(
            p.parse()
                .map_err(|_| format!("--port {p:?} is not a port number"))?,
        ),
        None => None,
    };
    let bootstrap = match args.value("bootstrap") {
        Some(list) => parse_bootstrap_list(list).map_err(|e| e.to_string())?,
        None => parse_bootstrap_list(&PUBLIC_BOOTSTRAP.join(",")).map_err(|e| e.to_string())?,
    };
    let config = if bootstrap.is_empty() {
        if host.is_unspecified() {
            return Err("--bootstrap none starts a new network: give the address other nodes reach it on with --host".into());
        }
        Config::bootstrapper(SocketAddrV4::new(host, port.unwrap_or(DEFAULT_PORT)))
    } else {
        let mut c = Config::new(bootstrap);
        c.host = host;
        if let Some(p) = port {
            c.port = p;
            c.any_port = false;
        }
        if args.switch("persistent") {
            c.persistence = Persistence::Persistent;
        }
        c
    };

    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let node = MioNode::spawn(config).map_err(|e| e.to_string())?;
    let events = node.subscribe().map_err(|e| e.to_string())?;
    node.wait_bootstrapped().map_err(|e| e.to_string())?;
    let info = node.info().map_err(|e| e.to_string())?;
    let addr = match info.server_addr {
        Some(SocketAddr::V4(a)) => a,
        _ => return Err("server socket has no IPv4 address".into()),
    };
    let id = info.id.unwrap_or(info.table_id);
    println!("node listening on {addr} id {id}");
    let _ = std::io::stdout().flush();
    tracing::info!(
        persistent = !info.ephemeral,
        firewalled = info.firewalled,
        nodes = info.table.len(),
        "node bootstrapped"
    );

    let logger = std::thread::spawn(move || {
        for ev in events {
            match ev {
                Event::Persistent { id } => {
                    tracing::info!(%id, "node became persistent: other nodes now route through it")
                }
                Event::Ephemeral => tracing::info!("node went back to ephemeral"),
                Event::NatUpdate { host, port } => {
                    tracing::info!(?host, port, "public address updated")
                }
                Event::Health(h) => tracing::info!(health = ?h, "network health changed"),
                Event::Closed => break,
                _ => {}
            }
        }
    });
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    node.shutdown();
    let _ = logger.join();
    Ok(())
}
