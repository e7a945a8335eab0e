//! `hyperdht-chat swarm [TOPIC]`: the peer of Pear's "connect to many peers by topic with
//! Hyperswarm" guide. It joins the topic as server and client, prints
//! `joined topic: <TOPIC>` once the topic is announced, `* got a connection from: <KEY> *` per
//! peer met, and `<KEY>: <text>` for what a peer sends; every line typed goes to every peer.
//! Ctrl-C or SIGTERM leaves the topic, closes the connections and exits.

use std::io::{self, BufRead};
use std::sync::{Arc, Mutex};
use std::thread;

use hyperdht_mio::{random_key_pair, ConnWriter, JoinOptions, SwarmConfig};
use hyperdht_proto::{to_hex, ConnId};

use crate::args::SwarmArgs;
use crate::chat_cmd::node_config;
use crate::peer::{say, spawn_node, watch_dht, Stop};

/// The writers of the open connections: what stdin goes to.
type Writers = Arc<Mutex<Vec<(ConnId, ConnWriter)>>>;

pub fn run(args: SwarmArgs) -> Result<(), String> {
    let stop = Stop::install()?;
    let key = match args.seed {
        Some(seed) => hyperdht_proto::KeyPair::from_seed(&seed),
        None => random_key_pair().map_err(|e| e.to_string())?,
    };
    let topic = match args.topic {
        Some(t) => t,
        None => {
            let mut t = [0u8; 32];
            getrandom::fill(&mut t).map_err(|e| format!("no random topic: {e}"))?;
            t
        }
    };
    let config = node_config(&args.peer, None)?;
    let bootstrap = config.bootstrap.clone();
    let node = spawn_node(config)?;
    let writers: Writers = Arc::default();
    thread::scope(|s| -> Result<(), String> {
        let _watch = watch_dht(s, &node, bootstrap);
        node.wait_bootstrapped().map_err(|e| e.to_string())?;
        let swarm = Arc::new(
            node.swarm(SwarmConfig::new(key))
                .map_err(|e| e.to_string())?,
        );
        swarm
            .join(topic, JoinOptions::default())
            .map_err(|e| e.to_string())?;
        stop.running();
        let accepting = swarm.clone();
        let conns = writers.clone();
        thread::spawn(move || {
            while let Some(c) = accepting.accept() {
                let name = to_hex(&c.connection.remote_public_key());
                say(&format!("* got a connection from: {name} *"));
                let hyperdht_mio::Connection { reader, writer, .. } = c.connection;
                let id = reader.conn();
                conns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((id, writer));
                let conns = conns.clone();
                let mut reader = reader;
                thread::spawn(move || {
                    while let Ok(Some(message)) = reader.recv_message() {
                        let text = String::from_utf8_lossy(&message);
                        for line in text.strip_suffix('\n').unwrap_or(&text).split('\n') {
                            say(&format!("{name}: {line}"));
                        }
                    }
                    conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|(c, _)| *c != id);
                });
            }
        });
        let typed = writers.clone();
        thread::spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let message = format!("{line}\n");
                for (_, w) in typed.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    let _ = w.send_message(message.as_bytes());
                }
            }
        });
        // The announce can take a while on a large network; a signal meanwhile still leaves.
        let flushed = swarm.clone();
        thread::spawn(move || {
            if flushed.flushed(topic).unwrap_or(false) {
                say(&format!("joined topic: {}", to_hex(&topic)));
            } else {
                eprintln!(
                    "warning: the topic's announce did not complete; still looking for peers"
                );
            }
        });
        let sig = stop.wait();
        tracing::info!(signal = sig, "leaving the topic, closing connections");
        for (_, w) in writers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            w.reset();
        }
        swarm.destroy();
        Ok(())
    })?;
    node.shutdown();
    Ok(())
}
