//! `hyperdht-chat node`: run one DHT node until a signal.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::thread;

use clap::error::ErrorKind;
use hyperdht_mio::Config;
use hyperdht_proto::{public_bootstrap, Event, Persistence, DEFAULT_PORT};

use crate::args::{Bootstrap, NodeArgs};
use crate::peer::{spawn_node, watch_dht, Stop};

pub fn run(args: NodeArgs) -> Result<(), String> {
    let host = args.host.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let bootstrap = match args.bootstrap {
        Some(Bootstrap::Nodes(list)) => list,
        Some(Bootstrap::None) => Vec::new(),
        None => public_bootstrap(),
    };
    let config = if bootstrap.is_empty() {
        if host.is_unspecified() {
            crate::usage_error(
                "node",
                ErrorKind::MissingRequiredArgument,
                "--bootstrap none starts a new network: give the address other nodes reach \
                 it on with --host IP"
                    .into(),
            );
        }
        Config::bootstrapper(SocketAddrV4::new(host, args.port.unwrap_or(DEFAULT_PORT)))
    } else {
        let mut c = Config::new(bootstrap.clone());
        c.host = host;
        if let Some(p) = args.port {
            c.port = p;
            c.any_port = false;
        }
        if args.persistent {
            c.persistence = Persistence::Persistent;
        }
        c
    };

    let stop = Stop::install()?;
    let node = spawn_node(config)?;
    let events = node.subscribe().map_err(|e| e.to_string())?;
    let logger = thread::scope(|s| -> Result<_, String> {
        // A new network's first node has nobody to reach; any other node should reach one.
        let _watch = (!bootstrap.is_empty()).then(|| watch_dht(s, &node, bootstrap.clone()));
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
        let logger = thread::spawn(move || {
            for ev in events {
                match ev {
                    Event::Persistent { id } => tracing::info!(
                        %id,
                        "node became persistent: other nodes now route through it"
                    ),
                    Event::Ephemeral => tracing::info!("node went back to ephemeral"),
                    Event::NatUpdate { host, port } => {
                        tracing::info!(?host, port, "public address updated")
                    }
                    Event::Health(h) => tracing::info!(health = ?h, "network health changed"),
                    Event::NodeClosed => break,
                    _ => {}
                }
            }
        });
        let sig = stop.wait();
        tracing::info!(signal = sig, "shutting down");
        Ok(logger)
    });
    let logger = logger?;
    node.shutdown();
    let _ = logger.join();
    Ok(())
}
