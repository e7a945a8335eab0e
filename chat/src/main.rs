//! `hyperdht-chat`: the command-line front end. No protocol code lives here: it parses flags,
//! sets up logging, and drives `hyperdht-mio`.

mod args;
mod node_cmd;

use std::process::ExitCode;

const USAGE: &str = "\
hyperdht-chat: HyperDHT in Rust

USAGE:
    hyperdht-chat node [--host IP] [--port PORT] [--bootstrap HOST:PORT,...|none] [--persistent]

COMMANDS:
    node    Run a DHT node until Ctrl-C or SIGTERM.

NODE FLAGS:
    --host IP          Address to bind (default 0.0.0.0; required with --bootstrap none).
    --port PORT        Server socket port (default 49737, then 49738-49741, then any).
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
