//! `hyperdht-chat`: the command-line front end. No protocol code lives here: it parses flags,
//! sets up logging, and drives `hyperdht-mio`.

mod args;
mod chat_cmd;
mod keys;
mod node_cmd;

use std::process::ExitCode;

const USAGE: &str = "\
hyperdht-chat: HyperDHT in Rust

USAGE:
    hyperdht-chat server [--local] [--seed HEX | --key-file PATH] [--bootstrap HOST:PORT,...]
                         [--relay KEY]
    hyperdht-chat client <KEY> [--bootstrap HOST:PORT,...] [--relay KEY]
    hyperdht-chat node [--host IP] [--port PORT] [--bootstrap HOST:PORT,...|none] [--persistent]
    hyperdht-chat relay [--seed HEX | --key-file PATH] [--bootstrap HOST:PORT,...]

COMMANDS:
    server  Listen for chat peers: prints `listening on: <KEY>`, then `got connection!` per
            peer. Lines typed go to every peer; what peers send is printed.
    client  Connect to the server with public key KEY (64 hex digits or z-base-32):
            prints `Connecting to: <KEY>`, then `got connection!`. Lines typed go to the
            server; what it sends is printed. Failures are explained and exit non-zero.
    node    Run a DHT node until Ctrl-C or SIGTERM.
    relay   Serve as a blind relay until Ctrl-C or SIGTERM: prints `relay listening on:
            <KEY>`; peers that cannot punch through their NATs meet there (--relay KEY).
            Takes --seed, --key-file, --bootstrap, --host and --port like a chat server.

CHAT FLAGS:
    --local            (server) Start an embedded DHT on 127.0.0.1 and chat over it: works
                       offline. The server prints the bootstrap address for the client.
    --seed HEX         (server) Key pair from this 32-byte seed.
    --key-file PATH    (server) Key pair from this file (a hex seed), created with
                       owner-only permissions if absent.
    --bootstrap LIST   DHT nodes to join (default: the public HyperDHT bootstrap nodes).
    --host IP, --port PORT
                       Local address for this peer's DHT node.
    --relay KEY        Also meet the peer at this blind relay (its public key), for when
                       neither side can punch through its NAT (JS `relayThrough`).

EOF on stdin ends the streams gracefully; Ctrl-C or SIGTERM stops (servers unannounce).

NODE FLAGS:
    --host IP          Address to bind (default 0.0.0.0; required with --bootstrap none).
    --port PORT        Server socket port (default 49737, then 49738-49741, then any;
                       0 binds any free port, printed once listening).
    --bootstrap LIST   Comma-separated HOST:PORT (or IP@HOST:PORT) bootstrap nodes;
                       `none` starts a new network with this node as its first node.
                       Default: the three public HyperDHT bootstrap nodes.
    --persistent       Become a persistent node during bootstrap if reachable
                       (JS `ephemeral: false`) instead of after ~20 stable minutes.

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more detail.
";

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() || argv.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return if argv.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    init_logging();
    let cmd = argv.remove(0);
    let result = match cmd.as_str() {
        "node" => node_cmd::run(&argv),
        "server" => chat_cmd::server(&argv),
        "client" => chat_cmd::client(&argv),
        "relay" => chat_cmd::relay(&argv),
        other => Err(format!("unknown command {other:?}; see --help")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
