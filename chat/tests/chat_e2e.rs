//! The chat as a person uses it, in three pairings on a local DHT of `hyperdht-chat node`
//! processes on 127.0.0.1: Rust server with the Node.js guide client, Node.js guide server with
//! the Rust client, and Rust with Rust. Lines typed into each side's stdin must come out of the
//! other side's stdout, in order.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use hyperdht_tests::js::{interop_enabled, js_dir};

const WAIT: Duration = Duration::from_secs(30);

/// A process driven through its stdin and stdout.
struct Proc {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name,
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a line starting with `prefix`; returns it.
    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "{}: no line starting with {prefix:?} within {WAIT:?}; saw {:?}",
                    self.name, self.seen
                ),
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rust(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hyperdht-chat"));
    c.args(args).env("RUST_LOG", "warn");
    c
}

fn js(script: &str, args: &[&str], bootstrap: &str) -> Command {
    let mut c = Command::new("node");
    c.arg(js_dir().join(script))
        .args(args)
        .env("HYPERDHT_BOOTSTRAP", bootstrap);
    c
}

/// A local DHT: a first node and three more, as `hyperdht-chat node` processes.
fn local_dht() -> (Vec<Proc>, String) {
    // Port 0: the first node binds a free port and prints it.
    let mut first = Proc::spawn(
        "dht-0",
        rust(&[
            "node",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--bootstrap",
            "none",
        ]),
    );
    let listening = first.expect("node listening on");
    let boot = listening
        .strip_prefix("node listening on ")
        .and_then(|rest| rest.split(' ').next())
        .expect("address in the listening line")
        .to_string();
    let mut nodes = vec![first];
    for name in ["dht-1", "dht-2", "dht-3"] {
        let mut n = Proc::spawn(
            name,
            rust(&[
                "node",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--bootstrap",
                &boot,
                "--persistent",
            ]),
        );
        n.expect("node listening on");
        nodes.push(n);
    }
    (nodes, boot)
}

/// Both sides connect, then lines go both ways in order.
fn chat(mut server: Proc, client_cmd: impl FnOnce(&str) -> Command) {
    let key = server
        .expect("listening on:")
        .trim_start_matches("listening on:")
        .trim()
        .to_string();
    assert_eq!(key.len(), 64, "hex key: {key}");
    let mut client = Proc::spawn("client", client_cmd(&key));
    client.expect("Connecting to:");
    client.expect("got connection!");
    server.expect("got connection!");
    for i in 0..5 {
        let line = format!("from client {i}");
        client.type_line(&line);
        assert_eq!(server.expect("from client"), line, "in order");
    }
    for i in 0..5 {
        let line = format!("from server {i}");
        server.type_line(&line);
        assert_eq!(client.expect("from server"), line, "in order");
    }
    let long = "x".repeat(10_000);
    client.type_line(&long);
    assert_eq!(server.expect("xxxx"), long, "a long line arrives whole");
}

#[test]
fn rust_server_with_the_js_guide_client() {
    if !interop_enabled() {
        return;
    }
    let (_dht, boot) = local_dht();
    let server = Proc::spawn("rust-server", rust(&["server", "--bootstrap", &boot]));
    chat(server, |key| js("chat-client.js", &[key], &boot));
}

#[test]
fn js_guide_server_with_the_rust_client() {
    if !interop_enabled() {
        return;
    }
    let (_dht, boot) = local_dht();
    let server = Proc::spawn("js-server", js("chat-server.js", &[], &boot));
    chat(server, |key| rust(&["client", key, "--bootstrap", &boot]));
}

#[test]
fn rust_server_with_the_rust_client() {
    let (_dht, boot) = local_dht();
    let server = Proc::spawn("rust-server", rust(&["server", "--bootstrap", &boot]));
    chat(server, |key| rust(&["client", key, "--bootstrap", &boot]));
}

#[test]
fn client_explains_failures() {
    let (_dht, boot) = local_dht();
    let nobody = "ab".repeat(32);
    let out = rust(&["client", &nobody, "--bootstrap", &boot])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "unknown key must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("peer not found"), "explains why: {err}");
    assert!(!err.contains("no DHT node answered"), "{err}");
    // A bootstrap address where nothing answers (a socket we hold and never read).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let out = rust(&["client", &nobody, "--bootstrap", &silent_addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unreachable DHT must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no DHT node answered"), "explains why: {err}");
    drop(silent);
    let out = rust(&["client", "not-a-key"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a key"));
    let out = rust(&["client", &nobody, "--relay", "not-a-key"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--relay") && err.contains("is not a key"),
        "{err}"
    );
}

impl Proc {
    /// Closes stdin (EOF for the process).
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits (bounded) for the process to exit; returns whether it succeeded.
    fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            // Also drains stdout so the process never blocks on a full pipe.
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => self.seen.push(l),
                Err(mpsc::RecvTimeoutError::Timeout)
                | Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}",
                self.name
            );
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

#[test]
fn offline_local_chat_and_eof() {
    // The README's first command: an embedded network, no other flags.
    let mut server = Proc::spawn("local-server", rust(&["server", "--local"]));
    let boot = server
        .expect("local network bootstrap:")
        .trim_start_matches("local network bootstrap:")
        .trim()
        .to_string();
    let key = server
        .expect("listening on:")
        .trim_start_matches("listening on:")
        .trim()
        .to_string();
    let mut client = Proc::spawn("client", rust(&["client", &key, "--bootstrap", &boot]));
    client.expect("got connection!");
    server.expect("got connection!");
    client.type_line("offline hello");
    assert_eq!(server.expect("offline"), "offline hello");

    // EOF on the server's stdin ends the stream: the client reads EOF and exits cleanly.
    server.close_stdin();
    assert!(
        client.wait_exit(WAIT),
        "client exits 0 after the server ended the stream"
    );
}

#[test]
fn sigterm_unannounces_and_exits_cleanly() {
    let (_dht, boot) = local_dht();
    let mut server = Proc::spawn("rust-server", rust(&["server", "--bootstrap", &boot]));
    let key = server
        .expect("listening on:")
        .trim_start_matches("listening on:")
        .trim()
        .to_string();
    // Reachable while listening.
    let mut client = Proc::spawn("client", rust(&["client", &key, "--bootstrap", &boot]));
    client.expect("got connection!");
    drop(client);
    server.signal("-TERM");
    assert!(server.wait_exit(WAIT), "server exits 0 on SIGTERM");
    // Unannounced: the DHT no longer knows the key ("peer not found"), rather than relays
    // still forwarding to a vanished server ("could not reach the peer").
    let out = rust(&["client", &key, "--bootstrap", &boot])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("peer not found"), "{err}");
}

/// `hyperdht-chat relay` prints its key and serves until SIGTERM; peers started with
/// `--relay KEY` chat as usual (on one host a direct path wins the race and the relay is
/// dropped; the namespace test `double_random_nats_connect_through_a_blind_relay` needs it).
#[test]
fn relay_command_serves_and_stops_on_sigterm() {
    let (_dht, boot) = local_dht();
    let mut relay = Proc::spawn("relay", rust(&["relay", "--bootstrap", &boot]));
    let key = relay
        .expect("relay listening on:")
        .trim_start_matches("relay listening on:")
        .trim()
        .to_string();
    assert_eq!(key.len(), 64, "hex key: {key}");
    let server = Proc::spawn(
        "rust-server",
        rust(&["server", "--bootstrap", &boot, "--relay", &key]),
    );
    chat(server, |k| {
        rust(&["client", k, "--bootstrap", &boot, "--relay", &key])
    });
    relay.signal("-TERM");
    assert!(relay.wait_exit(WAIT), "the relay exits 0 on SIGTERM");
}
