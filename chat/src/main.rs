//! `hyperdht-chat`: the command-line front end. No protocol code lives here: it parses flags
//! (clap), sets up logging, and drives `hyperdht-mio`.

mod args;
mod chat_cmd;
mod keys;
mod node_cmd;
mod peer;
mod swarm_cmd;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Node(a) => node_cmd::run(a),
        Command::Server(a) => chat_cmd::server(a),
        Command::Client(a) => chat_cmd::client(a),
        Command::Relay(a) => chat_cmd::relay(a),
        Command::Swarm(a) => swarm_cmd::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A usage error found after parsing (a flag value that rules out another flag): reported
/// like clap's own, with the subcommand's usage line, and exit status 2.
pub fn usage_error(subcommand: &str, kind: clap::error::ErrorKind, message: String) -> ! {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    cli.build();
    match cli.find_subcommand_mut(subcommand) {
        Some(sub) => sub.error(kind, message).exit(),
        None => cli.error(kind, message).exit(),
    }
}

/// Logs go to stderr. Quiet by default (warnings and errors only, without timestamps: a user
/// sees the chat and what needs their attention); `-v` info, `-vv` debug, `-vvv` trace with
/// timestamps and targets; without `-v`, `RUST_LOG` chooses.
fn init_logging(verbose: u8) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let from_env = std::env::var("RUST_LOG").is_ok_and(|v| !v.trim().is_empty());
    let filter = match verbose {
        0 if from_env => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"))
        }
        0 => EnvFilter::new("warn"),
        1 => EnvFilter::new("info"),
        2 => EnvFilter::new("debug"),
        _ => EnvFilter::new("trace"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if verbose == 0 && !from_env {
        builder.without_time().with_target(false).init();
    } else {
        builder.init();
    }
}
