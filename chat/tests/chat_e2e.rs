//! The chat as a person uses it, in three pairings on a local DHT of `hyperdht-chat node`
//! processes on 127.0.0.1: Rust server with the Node.js guide client, Node.js guide server with
//! the Rust client, and Rust with Rust. Lines typed into each side's stdin must come out of the
//! other side's stdout, in order.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use hyperdht_proto::to_hex;
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

/// The lines of `out`, read on a thread of their own.
fn line_channel(out: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Waits at most `within` for a line of `lines` that `matches`, keeping every line in `seen`;
/// on timeout, gives back what was seen.
fn wait_line<'a>(
    lines: &Receiver<String>,
    seen: &'a mut Vec<String>,
    within: Duration,
    matches: impl Fn(&str) -> bool,
) -> Result<String, &'a [String]> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => {
                seen.push(l.clone());
                if matches(&l) {
                    return Ok(l);
                }
            }
            Err(_) => return Err(seen),
        }
    }
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let lines = line_channel(child.stdout.take().unwrap());
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
        wait_line(&self.lines, &mut self.seen, WAIT, |l| l.starts_with(prefix)).unwrap_or_else(
            |seen| {
                panic!(
                    "{}: no line starting with {prefix:?} within {WAIT:?}; saw {seen:?}",
                    self.name
                )
            },
        )
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

// ----- the command line ----------------------------------------------------------------------

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hyperdht-chat"))
}

/// Runs the binary to completion (stdin closed); exit code, stdout, stderr.
fn run_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = bin()
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help_per_subcommand() {
    let (code, out, _) = run_cli(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.trim(),
        format!("hyperdht-chat {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, out, _) = run_cli(&["server", "-V"]);
    assert_eq!(code, Some(0), "--version after a subcommand too");
    assert!(
        out.starts_with("hyperdht-chat") && out.contains(env!("CARGO_PKG_VERSION")),
        "{out}"
    );

    // Each subcommand's help lists its own flags and not the others'.
    let cases: [(&str, &[&str], &[&str]); 4] = [
        (
            "server",
            &[
                "--local",
                "--seed",
                "--key-file",
                "--bootstrap",
                "--host",
                "--port",
                "--relay",
                "--verbose",
            ],
            &["--persistent"],
        ),
        (
            "client",
            &["<KEY>", "--bootstrap", "--host", "--port", "--relay"],
            &["--local", "--seed", "--key-file", "--persistent"],
        ),
        (
            "node",
            &["--host", "--port", "--bootstrap", "--persistent"],
            &["--local", "--seed", "--relay"],
        ),
        (
            "relay",
            &["--seed", "--key-file", "--bootstrap", "--host", "--port"],
            &["--local", "--relay <KEY>", "--persistent"],
        ),
    ];
    for (cmd, has, lacks) in cases {
        let (code, out, _) = run_cli(&[cmd, "--help"]);
        assert_eq!(code, Some(0), "{cmd} --help");
        assert!(
            out.contains(&format!("Usage: hyperdht-chat {cmd}")),
            "{out}"
        );
        for flag in has {
            assert!(out.contains(flag), "{cmd} --help lacks {flag}:\n{out}");
        }
        for flag in lacks {
            assert!(!out.contains(flag), "{cmd} --help shows {flag}:\n{out}");
        }
        let (code, short, _) = run_cli(&["help", cmd]);
        assert_eq!(code, Some(0));
        assert_eq!(short, out, "`help {cmd}` is `{cmd} --help`");
    }
    // No command: the help, and a usage-error status.
    let (code, _, err) = run_cli(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("Usage: hyperdht-chat"), "{err}");
}

#[test]
fn conflicting_flags_are_refused() {
    let seed = "11".repeat(32);
    for (args, names) in [
        (
            &["server", "--seed", &seed, "--key-file", "/tmp/k"][..],
            ["--seed", "--key-file"],
        ),
        (
            &["relay", "-s", &seed, "-k", "/tmp/k"],
            ["--seed", "--key-file"],
        ),
        (
            &["server", "--local", "--bootstrap=127.0.0.1:1"],
            ["--local", "--bootstrap"],
        ),
    ] {
        let (code, _, err) = run_cli(args);
        assert_eq!(code, Some(2), "{args:?}: a usage error");
        assert!(err.contains("cannot be used with"), "{args:?}: {err}");
        for n in names {
            assert!(err.contains(n), "{args:?} names {n}: {err}");
        }
    }
    let (code, _, err) = run_cli(&["node", "--bootstrap", "none"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--host"), "{err}");
}

#[test]
fn errors_name_what_failed() {
    let key = "ab".repeat(32);
    // A bootstrap host that does not resolve (.invalid never does, RFC 6761).
    let (code, _, err) = run_cli(&["client", &key, "--bootstrap", "no-such-host.invalid:49737"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("cannot resolve host \"no-such-host.invalid\""),
        "{err}"
    );
    // A busy port: held here for the duration.
    let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    for args in [
        &[
            "node",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--bootstrap",
            "none",
        ][..],
        &[
            "server",
            "--host",
            "127.0.0.1",
            "-p",
            &port,
            "-b",
            "127.0.0.1:9",
        ],
        &[
            "client",
            &key,
            "--host",
            "127.0.0.1",
            &format!("--port={port}"),
            "-b",
            "127.0.0.1:9",
        ],
    ] {
        let (code, _, err) = run_cli(args);
        assert_eq!(code, Some(1), "{args:?}");
        assert!(
            err.contains(&format!("cannot bind UDP port {port} on 127.0.0.1"))
                && err.contains("in use"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("ERROR"),
            "{args:?}: only our error line: {err}"
        );
    }
    drop(held);
    // Key files: a directory (unreadable as a file, even for root), a missing directory, junk.
    let dir = std::env::temp_dir().join(format!("hyperdht-chat-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk-key");
    std::fs::write(&junk, "not a seed\n").unwrap();
    let missing = dir.join("no-such-dir").join("key");
    for (path, why) in [
        (dir.clone(), "cannot read key file"),
        (missing, "cannot create key file"),
        (junk, "a seed is 64 hex digits"),
    ] {
        let p = path.to_str().unwrap();
        let (code, _, err) = run_cli(&["server", "--key-file", p, "-b", "127.0.0.1:9"]);
        assert_eq!(code, Some(1), "{p}");
        assert!(err.contains(why) && err.contains(p), "{p}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Values are checked while parsing, naming the flag.
    let (code, _, err) = run_cli(&["server", "--port", "70000"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--port") && err.contains("70000"), "{err}");
    let (code, _, err) = run_cli(&["node", "--host", "1.2.3"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--host") && err.contains("1.2.3"), "{err}");
}

/// A process whose stdout lines and stderr lines are both collected.
struct Watched {
    proc: Proc,
    stderr: Receiver<String>,
    errs: Vec<String>,
}

impl Watched {
    fn spawn(name: &'static str, mut cmd: Command) -> Watched {
        cmd.stderr(Stdio::piped());
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stderr = line_channel(child.stderr.take().unwrap());
        let lines = line_channel(child.stdout.take().unwrap());
        Watched {
            proc: Proc {
                name,
                stdin: child.stdin.take(),
                child,
                lines,
                seen: Vec::new(),
            },
            stderr,
            errs: Vec::new(),
        }
    }

    /// Waits (bounded) for a stderr line containing `text`.
    fn expect_stderr(&mut self, text: &str, within: Duration) -> String {
        wait_line(&self.stderr, &mut self.errs, within, |l| l.contains(text)).unwrap_or_else(
            |seen| {
                panic!(
                    "{}: no stderr line with {text:?} within {within:?}; saw {seen:?}",
                    self.proc.name
                )
            },
        )
    }

    /// Everything on stderr once the process has exited (bounded).
    fn all_stderr(&mut self) -> Vec<String> {
        assert!(self.proc.wait_exit(WAIT), "{} exits", self.proc.name);
        while let Ok(l) = self.stderr.recv_timeout(WAIT) {
            self.errs.push(l);
        }
        self.errs.clone()
    }
}

/// Without -v or RUST_LOG a user sees the guide's lines and nothing on stderr (no INFO, and
/// no ERROR for anything that worked); -v brings the INFO lines back.
#[test]
fn quiet_by_default_and_verbose_with_v() {
    let (_dht, boot) = local_dht();
    for verbose in [false, true] {
        let mut args = vec!["server", "--bootstrap", &boot];
        if verbose {
            args.insert(0, "-v");
        }
        let mut cmd = bin();
        cmd.args(&args).env_remove("RUST_LOG");
        let mut server = Watched::spawn("server", cmd);
        let key = server
            .proc
            .expect("listening on:")
            .trim_start_matches("listening on:")
            .trim()
            .to_string();
        let mut cmd = bin();
        cmd.args(["client", &key, "-b", &boot])
            .env_remove("RUST_LOG");
        if verbose {
            cmd.arg("-v");
        }
        let mut client = Watched::spawn("client", cmd);
        client.proc.expect("got connection!");
        server.proc.expect("got connection!");
        client.proc.type_line("quiet hello");
        assert_eq!(server.proc.expect("quiet"), "quiet hello");
        server.proc.signal("-TERM");
        client.proc.expect("peer left");
        let server_err = server.all_stderr();
        let client_err = client.all_stderr();
        for (who, err) in [("server", &server_err), ("client", &client_err)] {
            if verbose {
                assert!(
                    err.iter().any(|l| l.contains(" INFO ")),
                    "{who} -v logs INFO lines: {err:?}"
                );
            } else {
                assert!(err.is_empty(), "{who} is quiet by default: {err:?}");
            }
        }
    }
}

/// A server whose bootstrap node does not answer says so within 10 s, keeps trying, and says
/// when it got through.
#[test]
fn a_server_that_reaches_no_dht_node_says_so() {
    // A port where nothing listens (bound and released here, so it is free).
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let boot = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let mut cmd = bin();
    cmd.args(["server", "--bootstrap", &boot])
        .env_remove("RUST_LOG");
    let mut server = Watched::spawn("server", cmd);
    let warning = server.expect_stderr("no DHT node answered", Duration::from_secs(10));
    let took = start.elapsed();
    assert!(
        warning.contains("WARN") && warning.contains(&boot),
        "{warning}"
    );
    eprintln!("no-DHT warning after {took:.2?}: {warning}");
    // Now a node starts there: the server gets through by its own retries.
    let mut node = Proc::spawn(
        "dht-0",
        rust(&[
            "node",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--bootstrap",
            "none",
        ]),
    );
    node.expect("node listening on");
    let through = server.proc.expect("reached the DHT");
    eprintln!("{through} (test time {:.2?})", start.elapsed());
    // And it is reachable now: a client connects through the node that came late (this
    // failed while a server with one DHT node to sample aborted its holepunches).
    let seen_key = server
        .proc
        .seen
        .iter()
        .find_map(|l| l.strip_prefix("listening on:"))
        .map(|k| k.trim().to_string());
    let key = match seen_key {
        Some(k) => k,
        None => server
            .proc
            .expect("listening on:")
            .trim_start_matches("listening on:")
            .trim()
            .to_string(),
    };
    let mut client = Proc::spawn("client", rust(&["client", &key, "--bootstrap", &boot]));
    client.expect("got connection!");
    server.proc.expect("got connection!");
    client.type_line("late but there");
    assert_eq!(server.proc.expect("late but"), "late but there");
}

/// Ctrl-C or SIGTERM on either side closes its connections: the other side prints that the
/// peer left at once (not after the 15 s stream timeout) and a client exits.
#[test]
fn a_signal_on_either_side_is_seen_by_the_other_at_once() {
    const BOUND: Duration = Duration::from_secs(3);
    let (_dht, boot) = local_dht();
    for victim in ["client", "server"] {
        for sig in ["-INT", "-TERM"] {
            let mut server = Proc::spawn("server", rust(&["server", "--bootstrap", &boot]));
            let key = server
                .expect("listening on:")
                .trim_start_matches("listening on:")
                .trim()
                .to_string();
            let mut client = Proc::spawn("client", rust(&["client", &key, "--bootstrap", &boot]));
            client.expect("got connection!");
            server.expect("got connection!");
            let start = Instant::now();
            let (gone, other) = if victim == "client" {
                (&mut client, &mut server)
            } else {
                (&mut server, &mut client)
            };
            gone.signal(sig);
            other.expect("peer left");
            let seen = start.elapsed();
            assert!(gone.wait_exit(BOUND), "the {victim} exits 0 after {sig}");
            let gone_exit = start.elapsed();
            let mut line = format!(
                "{sig} to the {victim}: peer left after {seen:.2?}, {victim} exited after \
                 {gone_exit:.2?}"
            );
            if victim == "server" {
                assert!(
                    client.wait_exit(BOUND),
                    "the client exits 0 when the server left"
                );
                line += &format!(", client exited after {:.2?}", start.elapsed());
            }
            eprintln!("{line}");
            assert!(seen < BOUND, "{line}");
        }
    }
}

/// The topic peers of the Hyperswarm guide page, ours and the Node.js one, in one topic: the
/// first (Rust, random topic) prints the topic, a JS peer and a second Rust peer (with a seed
/// that JS derives the same key from) join it; each meets the other two, and a line typed by
/// one is printed by the other two with its sender's key.
#[test]
fn swarm_peers_rust_and_js_meet_by_topic() {
    if !interop_enabled() {
        return;
    }
    let (_dht, boot) = local_dht();
    let mut first = Proc::spawn("rust-swarm-1", rust(&["swarm", "--bootstrap", &boot]));
    let topic = first
        .expect("joined topic:")
        .trim_start_matches("joined topic:")
        .trim()
        .to_string();
    assert_eq!(topic.len(), 64, "hex topic: {topic}");
    let seed = "5e".repeat(32);
    let mut js_cmd = js("chat-swarm.js", &[&topic], &boot);
    js_cmd.env("CHAT_SEED", &seed);
    let mut js_peer = Proc::spawn("js-swarm", js_cmd);
    js_peer.expect("joined topic:");
    let mut second = Proc::spawn(
        "rust-swarm-2",
        rust(&[
            "swarm",
            &topic,
            "--seed",
            &"a7".repeat(32),
            "--bootstrap",
            &boot,
        ]),
    );
    second.expect("joined topic:");
    // Each peer meets the other two, once.
    let mut keys = Vec::new();
    for p in [&mut first, &mut js_peer, &mut second] {
        let mut met: Vec<String> = seen_lines(p, "* got a connection from:", 2)
            .iter()
            .map(|l| {
                l.trim_start_matches("* got a connection from:")
                    .trim_end_matches('*')
                    .trim()
                    .to_string()
            })
            .collect();
        met.sort();
        met.dedup();
        assert_eq!(met.len(), 2, "{}: two different peers: {met:?}", p.name);
        keys.push(met);
    }
    // The key of each peer, as the others name it.
    let js_key = keys[0]
        .iter()
        .find(|k| keys[2].contains(k))
        .unwrap()
        .clone();
    let second_key = keys[0].iter().find(|k| **k != js_key).unwrap().clone();
    let first_key = keys[1].iter().find(|k| **k != second_key).unwrap().clone();
    // `--seed` and JS `new Hyperswarm({ seed })` derive the same key pair.
    let derived = |b: u8| to_hex(&hyperdht_proto::KeyPair::from_seed(&[b; 32]).public_key());
    assert_eq!(js_key, derived(0x5e), "the JS peer's key from its seed");
    assert_eq!(second_key, derived(0xa7), "the Rust peer's key from --seed");
    for (p, from) in [
        (&mut first, "rust one"),
        (&mut js_peer, "node one"),
        (&mut second, "rust two"),
    ] {
        p.type_line(&format!("hello from {from}"));
    }
    for (p, want) in [
        (
            &mut first,
            [(&js_key, "node one"), (&second_key, "rust two")],
        ),
        (
            &mut js_peer,
            [(&first_key, "rust one"), (&second_key, "rust two")],
        ),
        (
            &mut second,
            [(&first_key, "rust one"), (&js_key, "node one")],
        ),
    ] {
        for (key, from) in want {
            let lines = seen_lines(p, &format!("{key}: hello from"), 1);
            assert_eq!(
                lines,
                vec![format!("{key}: hello from {from}")],
                "{}",
                p.name
            );
        }
    }
}

/// The lines starting with `prefix` a process printed so far, waiting (bounded) until there
/// are `n` (lines from several peers come in any order).
fn seen_lines(p: &mut Proc, prefix: &str, n: usize) -> Vec<String> {
    loop {
        let lines: Vec<String> = p
            .seen
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect();
        if lines.len() >= n {
            return lines;
        }
        p.expect(prefix);
    }
}

/// SIGTERM and Ctrl-C (SIGINT) end a swarm peer cleanly and soon: it leaves the topic
/// (unannounced), closes its connections and exits with success.
#[test]
fn a_swarm_peer_leaves_on_sigterm_and_ctrl_c() {
    let (_dht, boot) = local_dht();
    let mut first = Proc::spawn("rust-swarm-1", rust(&["swarm", "--bootstrap", &boot]));
    let topic = first
        .expect("joined topic:")
        .trim_start_matches("joined topic:")
        .trim()
        .to_string();
    for sig in ["-TERM", "-INT"] {
        let mut peer = Proc::spawn(
            "rust-swarm-2",
            rust(&["swarm", &topic, "--bootstrap", &boot]),
        );
        peer.expect("joined topic:");
        seen_lines(&mut peer, "* got a connection from:", 1);
        peer.signal(sig);
        assert!(
            peer.wait_exit(Duration::from_secs(10)),
            "{sig}: a clean exit"
        );
    }
}
