//! The command line, declared with clap's derive API: one struct per subcommand, so each
//! subcommand's `--help` lists exactly its own flags, and clap refuses unknown and conflicting
//! flags with a message naming them. Values are checked while parsing (a key, a seed, an
//! address, a bootstrap list whose host names must resolve), so every later step gets
//! well-formed input and every parse error names the flag and the value that failed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};
use hyperdht_mio::resolve_bootstrap;

use crate::keys::{parse_public_key, parse_seed};

/// Printed after the top-level `--help`: every subcommand with its flags, and what the
/// process does with stdin, signals and logs.
const OVERVIEW: &str = "\
Synopsis:
  hyperdht-chat server [--local] [--seed HEX | --key-file PATH] [--bootstrap LIST]
                       [--host IP] [--port PORT] [--relay KEY]
  hyperdht-chat client <KEY> [--bootstrap LIST] [--host IP] [--port PORT] [--relay KEY]
  hyperdht-chat node [--host IP] [--port PORT] [--bootstrap LIST|none] [--persistent]
  hyperdht-chat relay [--seed HEX | --key-file PATH] [--bootstrap LIST] [--host IP] [--port PORT]
  hyperdht-chat swarm [TOPIC] [--seed HEX] [--bootstrap LIST] [--host IP] [--port PORT]

Chat text and status lines go to stdout, warnings and logs to stderr. EOF on stdin ends our
side of the streams (a half-close: the peer reads the end, what it sends is still printed).
Ctrl-C or SIGTERM closes every connection (the peer sees us leave at once), unannounces a
server and exits. Logs: -v info, -vv debug, -vvv trace, or RUST_LOG (e.g. RUST_LOG=debug).

`hyperdht-chat <COMMAND> --help` explains each command's flags.";

/// HyperDHT in Rust: a terminal chat, a DHT node and a blind relay
///
/// The chat of Pear's "connect two peers" guide, on the same network as Node.js hyperdht.
#[derive(Debug, Parser)]
#[command(
    name = "hyperdht-chat",
    version,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true,
    after_help = OVERVIEW
)]
pub struct Cli {
    /// More log output on stderr: -v info, -vv debug, -vvv trace (overrides RUST_LOG)
    #[arg(short, long, action = ArgAction::Count, global = true, display_order = 1000)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Listen for chat peers
    ///
    /// Prints `listening on: <KEY>`, then `got connection!` per peer and `peer left` when one
    /// goes. Lines typed go to every peer; what peers send is printed.
    #[command(
        after_help = "EOF on stdin ends our side of the streams (half-close); Ctrl-C or \
                            SIGTERM closes the connections, unannounces and exits."
    )]
    Server(ServerArgs),
    /// Connect to a chat server by its public key
    ///
    /// Prints `Connecting to: <KEY>`, then `got connection!`, and `peer left` (then exits)
    /// when the server goes. Lines typed go to the server; what it sends is printed. Failures
    /// are explained and exit non-zero.
    #[command(
        after_help = "EOF on stdin ends our side of the stream (half-close: the \
                            server's lines are still printed); Ctrl-C or SIGTERM closes the \
                            connection and exits."
    )]
    Client(ClientArgs),
    /// Run a DHT node until Ctrl-C or SIGTERM
    ///
    /// Prints `node listening on <HOST:PORT> id <ID>` once bootstrapped.
    Node(NodeArgs),
    /// Serve as a blind relay until Ctrl-C or SIGTERM
    ///
    /// Prints `relay listening on: <KEY>`; peers that cannot punch through their NATs meet
    /// there (`--relay KEY`).
    Relay(RelayArgs),
    /// Meet every peer of a topic (Hyperswarm)
    ///
    /// Joins TOPIC (or a new random one) as server and client, prints `joined topic: <TOPIC>`
    /// once it is announced, `* got a connection from: <KEY> *` per peer met and
    /// `<KEY>: <text>` for what a peer sends. Lines typed go to every peer.
    #[command(
        after_help = "Ctrl-C or SIGTERM leaves the topic (unannounced), closes the \
                            connections and exits. With --seed the key pair is the one JS \
                            `new Hyperswarm({ seed })` derives from the same seed."
    )]
    Swarm(SwarmArgs),
}

/// Where a chat peer's own DHT node runs and which network it joins.
#[derive(Clone, Debug, Args)]
pub struct PeerArgs {
    /// DHT nodes to join: comma-separated HOST:PORT or IP@HOST:PORT [default: the public
    /// HyperDHT bootstrap nodes]
    #[arg(short, long, value_name = "LIST", value_parser = parse_bootstrap)]
    pub bootstrap: Option<Bootstrap>,
    /// Local address of this peer's DHT node [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    pub host: Option<Ipv4Addr>,
    /// UDP port of this peer's DHT node; 0 binds any free port [default: 49737, then
    /// 49738-49741, then any]
    #[arg(short, long, value_name = "PORT")]
    pub port: Option<u16>,
}

/// A server's key pair.
#[derive(Clone, Debug, Args)]
pub struct KeyArgs {
    /// Key pair from this 32-byte seed (64 hex digits) [default: a fresh random key pair]
    #[arg(short, long, value_name = "HEX", value_parser = parse_seed, conflicts_with = "key_file")]
    pub seed: Option<[u8; 32]>,
    /// Key pair from this file (a hex seed), created with a fresh seed and owner-only
    /// permissions if absent
    #[arg(short, long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Start an embedded DHT on 127.0.0.1 and chat over it (works offline); prints the
    /// bootstrap address for the client
    #[arg(short, long, conflicts_with = "bootstrap")]
    pub local: bool,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub peer: PeerArgs,
    /// Also meet clients at this blind relay (its public key), for when neither side can
    /// punch through its NAT (JS `relayThrough`)
    #[arg(short, long, value_name = "KEY", value_parser = parse_key)]
    pub relay: Option<PublicKey>,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's public key: 64 hex digits or 52 z-base-32 characters
    #[arg(value_name = "KEY", value_parser = parse_key)]
    pub key: PublicKey,
    #[command(flatten)]
    pub peer: PeerArgs,
    /// Also meet the server at this blind relay (its public key), for when neither side can
    /// punch through its NAT (JS `relayThrough`)
    #[arg(short, long, value_name = "KEY", value_parser = parse_key)]
    pub relay: Option<PublicKey>,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Address to bind; other nodes must reach the node there with `--bootstrap none`
    /// [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    pub host: Option<Ipv4Addr>,
    /// UDP port of the server socket; 0 binds any free port, printed once listening
    /// [default: 49737, then 49738-49741, then any]
    #[arg(short, long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Comma-separated HOST:PORT (or IP@HOST:PORT) bootstrap nodes; `none` starts a new
    /// network with this node as its first node (needs --host) [default: the public
    /// HyperDHT bootstrap nodes]
    #[arg(short, long, value_name = "LIST", value_parser = parse_bootstrap)]
    pub bootstrap: Option<Bootstrap>,
    /// Become a persistent node during bootstrap if reachable (JS `ephemeral: false`)
    /// instead of after ~20 stable minutes
    #[arg(long)]
    pub persistent: bool,
}

#[derive(Debug, Args)]
pub struct SwarmArgs {
    /// The topic: 64 hex digits [default: a new random topic]
    #[arg(value_name = "TOPIC", value_parser = parse_seed)]
    pub topic: Option<[u8; 32]>,
    /// Key pair from this 32-byte seed (64 hex digits), as JS `new Hyperswarm({ seed })`
    /// [default: a fresh random key pair]
    #[arg(short, long, value_name = "HEX", value_parser = parse_seed)]
    pub seed: Option<[u8; 32]>,
    #[command(flatten)]
    pub peer: PeerArgs,
}

#[derive(Debug, Args)]
pub struct RelayArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub peer: PeerArgs,
}

/// A `--bootstrap` list: `none` (a new network) or resolved node addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// `none`: no bootstrap nodes.
    None,
    /// The nodes' addresses, resolved.
    Nodes(Vec<SocketAddrV4>),
}

/// A public key as typed (echoed in `Connecting to:`) and decoded.
#[derive(Clone, Debug)]
pub struct PublicKey {
    pub text: String,
    pub bytes: [u8; 32],
}

fn parse_key(s: &str) -> Result<PublicKey, String> {
    Ok(PublicKey {
        text: s.to_string(),
        bytes: parse_public_key(s)?,
    })
}

/// Parses and resolves a bootstrap list; an error names the entry, and for a name that did
/// not resolve, the host.
fn parse_bootstrap(list: &str) -> Result<Bootstrap, String> {
    let list = list.trim();
    if list.is_empty() || list == "none" {
        return Ok(Bootstrap::None);
    }
    list.split(',')
        .map(|entry| {
            let entry = entry.trim();
            resolve_bootstrap(entry).map_err(|e| {
                let msg = e.to_string();
                if msg.contains(entry) {
                    return msg;
                }
                // A DNS failure: the resolver's message does not say which name failed.
                let host = entry.rsplit_once(':').map_or(entry, |(h, _)| h);
                let host = host.split_once('@').map_or(host, |(_, name)| name);
                format!("cannot resolve host {host:?} (bootstrap node {entry:?}): {msg}")
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Bootstrap::Nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// The top-level `--help` synopsis names every flag of every subcommand.
    #[test]
    fn the_synopsis_lists_every_flag() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            let name = sub.get_name();
            let start = OVERVIEW
                .find(&format!("hyperdht-chat {name} "))
                .unwrap_or_else(|| panic!("no synopsis for {name}"));
            let rest = &OVERVIEW[start + 14..];
            let synopsis = &rest[..rest.find("hyperdht-chat ").unwrap_or(rest.len())];
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if ["help", "version", "verbose"].contains(&long) {
                    continue;
                }
                assert!(
                    synopsis.contains(&format!("--{long}")),
                    "the synopsis of {name} lacks --{long}"
                );
            }
        }
    }

    #[test]
    fn flags_parse_in_every_spelling() {
        let key = "ab".repeat(32);
        let cli = Cli::try_parse_from([
            "hyperdht-chat",
            "-vv",
            "client",
            &key,
            "--bootstrap=127.0.0.1:5,127.0.0.1:6",
            "-p",
            "7",
            "--host=127.0.0.1",
        ])
        .unwrap();
        assert_eq!(cli.verbose, 2);
        let Command::Client(c) = cli.command else {
            panic!("client")
        };
        assert_eq!(c.key.bytes, [0xab; 32]);
        assert_eq!(c.peer.port, Some(7));
        assert_eq!(c.peer.host, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            c.peer.bootstrap,
            Some(Bootstrap::Nodes(vec![
                "127.0.0.1:5".parse().unwrap(),
                "127.0.0.1:6".parse().unwrap()
            ]))
        );
        let cli =
            Cli::try_parse_from(["hyperdht-chat", "node", "-b", "none", "--persistent"]).unwrap();
        let Command::Node(n) = cli.command else {
            panic!("node")
        };
        assert_eq!(n.bootstrap, Some(Bootstrap::None));
        assert!(n.persistent);
    }

    #[test]
    fn conflicts_are_refused() {
        let seed = "11".repeat(32);
        for argv in [
            &["server", "--seed", &seed, "--key-file", "k"][..],
            &["relay", "-s", &seed, "-k", "k"],
            &["server", "--local", "--bootstrap", "127.0.0.1:5"],
        ] {
            let err =
                Cli::try_parse_from(std::iter::once("hyperdht-chat").chain(argv.iter().copied()))
                    .unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{argv:?}"
            );
        }
    }
}
