//! The chat across kernel NATs, in Linux network namespaces that each test builds and removes.
//!
//! ```text
//!             hd…-inet: the "internet" (45.0.0.0/16, exists only in these namespaces)
//!             8 DHT nodes (`hyperdht-chat node`) on 45.0.0.1-8:49737; forwards with TTL-8;
//!             a Node.js blind relay on 45.0.0.100 when a test needs one
//!          to-r1 45.0.1.1 /                      \ to-r2 45.0.2.1
//!   (lossy: hd…-w1, a user-space       (lossy: hd…-w2, the same)
//!    wire delaying 50 ms up)                    |
//!          wan 45.0.1.2 |                        | wan 45.0.2.2
//!     hd…-r1: home router 1                 hd…-r2: home router 2
//!     MASQUERADE (consistent or random)     MASQUERADE (consistent or random)
//!     br0 192.168.1.1 (a bridged LAN)       lan 192.168.2.1
//!        /             \                         |
//!  hd…-p1 192.168.1.2  hd…-p3 192.168.1.3   hd…-p2 192.168.2.2
//! ```
//!
//! * No namespace has a link to the host and `inet` has no default route: every packet stays
//!   inside. The "internet" uses a routable-looking range (hyperdht takes other code paths for
//!   reserved ranges such as 198.18.0.0/15 or the TEST-NETs), the homes RFC 1918 LANs.
//! * Consistent NAT: `MASQUERADE` (port-preserving, endpoint-independent mapping); random NAT:
//!   `MASQUERADE --random-fully` (a new random port per destination). Each router's FORWARD
//!   policy admits only `ESTABLISHED,RELATED` from the WAN (port-restricted filtering), and
//!   its INPUT drops the rest from the WAN: accepting unasked packets to the router spoils
//!   punches (see `Lab::build`). A cell sets both routers' NATs and runs `conntrack -F` in
//!   both before each attempt, because hyperdht reuses port 49737 and would otherwise reuse
//!   an earlier attempt's mappings.
//! * `inet` decrements the TTL by 8 more on the way in, so hyperdht's TTL-5 probes die in the
//!   internet as they would on a real path instead of reaching the far NAT.
//! * Lossy links: this kernel has no `sch_netem`, so each home's uplink runs through a wire
//!   namespace where `chat/tests/netns/delay_link.py` (packet sockets) holds every frame leaving the
//!   home for 50 ms, and the router drops 5% of what leaves its WAN with
//!   `iptables -m statistic`. A peer-to-peer round trip thus takes 100 ms with 5% loss each way.
//! * iptables is Debian's default `iptables-nft` backend (nf_tables; rules are per namespace).
//!
//! Needs root, iproute2, iptables, conntrack and python3 (`apt-get install iproute2 iptables
//! conntrack`; `.ci/run` installs them). Where one is missing, or with `HYPERDHT_SKIP_NETNS=1`,
//! every test prints one line saying the suite did not run and why, for example
//! `netns: skipped, iptables not found (apt-get install iptables conntrack)`, and passes, so the
//! other test targets still run. With `HYPERDHT_REQUIRE_NETNS=1` (set by `.ci/run`) a suite
//! that cannot run fails instead: a green CI run means the suite ran and passed. The tests run
//! one at a time (each builds its own topology, named `hdct<pid>-<tag>-<host>`, and its guard
//! deletes every namespace it made, also on panic; namespaces that a killed earlier run left
//! behind are deleted first).
//!
//! `cargo test -p hyperdht-chat --test netns -- --ignored --nocapture connect_times` measures
//! the time from starting a client to its `got connection!`, Rust and JS, per cell
//! (BENCHMARKS.md, "Chat"); `HYPERDHT_NETNS_RUNS` sets the runs per cell (default 5),
//! `HYPERDHT_NETNS_CELL` keeps only the rows whose label contains its text.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use hyperdht_tests::js::{interop_enabled, js_dir};

const BIN: &str = env!("CARGO_BIN_EXE_hyperdht-chat");
const SKIP_ENV: &str = "HYPERDHT_SKIP_NETNS";
const REQUIRE_ENV: &str = "HYPERDHT_REQUIRE_NETNS";
const NS_PREFIX: &str = "hdct";
const DHT_NODES: usize = 8;
const DHT_PORT: u16 = 49737;
/// Where a test's blind relays live on the internet: Node.js (`blind-relay`), then Rust
/// (`hyperdht-chat relay`).
const RELAY_HOSTS: [&str; 2] = ["45.0.0.100", "45.0.0.101"];
/// Startup of a DHT node or a chat server, and a connection through consistent NATs.
const WAIT: Duration = Duration::from_secs(30);
/// A connection that needs the birthday strategy (256 sockets, about 35 s at worst).
const RANDOM_WAIT: Duration = Duration::from_secs(60);
/// Delay and loss on each home's uplink in the lossy topology.
const LINK_DELAY_MS: u32 = 50;
const LINK_LOSS: &str = "0.05";
/// The transfer of the lossy test: 10 MiB of base64 text on one line.
const TRANSFER_BYTES: usize = 10 * 1024 * 1024;
const TRANSFER_WAIT: Duration = Duration::from_secs(300);

// ----- preflight ---------------------------------------------------------------------------

/// Whether the namespace tests run. They do when root can build namespaces with iproute2,
/// iptables, conntrack and python3. Otherwise (or with `HYPERDHT_SKIP_NETNS=1`) each test
/// prints one line, `netns: skipped, <why>`, straight to stderr (past the test harness's
/// capture, so a plain `cargo test` shows it) and passes; with `HYPERDHT_REQUIRE_NETNS=1`
/// (`.ci/run` sets it) a suite that cannot run fails instead.
fn netns_enabled() -> bool {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
    let why = if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        format!("{SKIP_ENV}=1 is set")
    } else {
        match CHECK.get_or_init(preflight) {
            Ok(()) => return true,
            Err(e) => e.clone(),
        }
    };
    if required {
        panic!("netns: cannot run, {why}, and {REQUIRE_ENV}=1 requires this suite to run");
    }
    // One write of the whole line: tests run in parallel and stderr is unbuffered.
    let line = format!("netns: skipped, {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

/// Whether this machine can build the namespaces; why not, in a few words.
fn preflight() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    if uid != "0" {
        return Err(format!("not root (effective uid {uid})"));
    }
    for (tool, version, package) in [
        ("ip", "-V", "iproute2"),
        ("iptables", "-V", "iptables conntrack"),
        ("conntrack", "-V", "conntrack"),
        ("python3", "--version", "python3"),
    ] {
        let ok = Command::new(tool)
            .arg(version)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err(format!("{tool} not found (apt-get install {package})"));
        }
    }
    remove_stale_namespaces();
    let probe = format!("{NS_PREFIX}{}-probe", std::process::id());
    run(Command::new("ip").args(["netns", "add", &probe]))
        .map_err(|e| format!("`ip netns add` does not work here: {e}"))?;
    let checks =
        run(Command::new("ip").args(["netns", "exec", &probe, "iptables", "-t", "nat", "-L"]));
    let _ = run(Command::new("ip").args(["netns", "del", &probe]));
    checks.map_err(|e| format!("iptables does not work inside a namespace: {e}"))?;
    Ok(())
}

/// Deletes namespaces named by this test whose process is gone (a run that was killed).
fn remove_stale_namespaces() {
    let Ok(list) = run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(Command::new("ip").args(["netns", "del", name]));
        }
    }
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One test at a time: each builds its own topology, and timings need a quiet machine.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ----- processes ---------------------------------------------------------------------------

/// A process driven through its stdin and stdout; stderr is kept for failure messages.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                if s.len() < 1 << 20 {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits up to `wait` for a line starting with `prefix`; returns it, or why not.
    fn expect_within(&mut self, prefix: &str, wait: Duration) -> Result<String, String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if l.starts_with(prefix) {
                        return Ok(l);
                    }
                    self.seen.push(l.chars().take(200).collect());
                }
                Err(e) => {
                    let why = match e {
                        RecvTimeoutError::Timeout => format!("nothing within {wait:?}"),
                        RecvTimeoutError::Disconnected => {
                            let status = self.wait_exit(Duration::from_secs(5));
                            format!("it exited ({status:?})")
                        }
                    };
                    return Err(format!(
                        "{}: no line starting with {prefix:?}: {why}; stdout: {:?}; stderr:\n{}",
                        self.name,
                        self.seen,
                        self.stderr()
                    ));
                }
            }
        }
    }

    fn expect(&mut self, prefix: &str, wait: Duration) -> String {
        self.expect_within(prefix, wait)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `n` lines starting with `prefix`, those already passed over first, in any order.
    fn collect(&mut self, prefix: &str, n: usize, wait: Duration) -> Vec<String> {
        let mut got: Vec<String> = self
            .seen
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect();
        self.seen.retain(|l| !l.starts_with(prefix));
        while got.len() < n {
            got.push(self.expect(prefix, wait));
        }
        got
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// The exit status, if the process ends within `wait`.
    fn wait_exit(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- the topology ------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Nat {
    Consistent,
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Impl {
    Rust,
    Js,
}

/// The namespaces of one test and the processes that make up its internet. Drop kills the
/// processes, then deletes every namespace it created.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    helpers: Vec<Proc>,
    boot: String,
}

impl Lab {
    /// Builds the topology (lossy: 50 ms and 5% loss on each home's uplink) and starts the DHT.
    fn new(tag: &str, lossy: bool) -> Lab {
        let mut lab = Lab {
            prefix: format!("{NS_PREFIX}{}-{tag}", std::process::id()),
            namespaces: Vec::new(),
            helpers: Vec::new(),
            boot: String::new(),
        };
        if let Err(e) = lab.build(lossy) {
            panic!("building the namespaces failed: {e}");
        }
        lab.start_dht();
        lab
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn ip(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ip").args(args))
    }

    /// Runs a program inside `host`'s namespace.
    fn exec(&self, host: &str, args: &[&str]) -> Result<String, String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args))
    }

    /// A command line to run inside `host`'s namespace.
    fn command(&self, host: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host), program]);
        c
    }

    /// Runs `line` (split on spaces) inside `host`'s namespace.
    fn sh(&self, host: &str, line: &str) -> Result<String, String> {
        self.exec(host, &line.split_whitespace().collect::<Vec<_>>())
    }

    /// A veth pair from `a_if` in `a` to `b_if` in `b`, created in place (no name in the host).
    fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<(), String> {
        let (na, nb) = (self.ns(a), self.ns(b));
        let line = format!("link add {a_if} netns {na} type veth peer name {b_if} netns {nb}");
        self.ip(&line.split_whitespace().collect::<Vec<_>>())?;
        self.sh(a, &format!("ip link set {a_if} up"))?;
        self.sh(b, &format!("ip link set {b_if} up"))?;
        Ok(())
    }

    fn build(&mut self, lossy: bool) -> Result<(), String> {
        let mut hosts = vec!["inet", "r1", "r2", "p1", "p2", "p3"];
        if lossy {
            hosts.extend(["w1", "w2"]);
        }
        for h in hosts {
            let ns = self.ns(h);
            self.ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns);
            self.sh(h, "ip link set lo up")?;
            // Quieter links (no router solicitations); a kernel without IPv6 needs none.
            let _ = self.sh(
                h,
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
            );
        }

        // The internet: the DHT's addresses, links to both homes, TTL-8 on the way in.
        for i in 1..=DHT_NODES {
            self.sh("inet", &format!("ip addr add 45.0.0.{i}/32 dev lo"))?;
        }
        for host in RELAY_HOSTS {
            self.sh("inet", &format!("ip addr add {host}/32 dev lo"))?;
        }
        self.sh("inet", "sysctl -qw net.ipv4.ip_forward=1")?;
        self.sh(
            "inet",
            "iptables -t mangle -A PREROUTING -j TTL --ttl-dec 8",
        )?;

        for n in 1..=2 {
            let (router, to_r, wire) = (format!("r{n}"), format!("to-r{n}"), format!("w{n}"));
            if lossy {
                self.veth(&router, "wan", &wire, "xr")?;
                self.veth(&wire, "xi", "inet", &to_r)?;
                let mut link = Proc::spawn(
                    &format!("delay-link-{n}"),
                    self.command(&wire, "python3")
                        .arg(delay_link_script())
                        .args(["xr", "xi", &LINK_DELAY_MS.to_string(), "0"]),
                );
                link.expect("ready", WAIT);
                self.helpers.push(link);
            } else {
                self.veth(&router, "wan", "inet", &to_r)?;
            }
            self.sh("inet", &format!("ip addr add 45.0.{n}.1/24 dev {to_r}"))?;
            self.sh(&router, &format!("ip addr add 45.0.{n}.2/24 dev wan"))?;
            self.sh(&router, &format!("ip route add default via 45.0.{n}.1"))?;
            // A home router: anything goes out, only replies come in, and nothing unasked
            // reaches the router itself. (Accepting it would confirm a conntrack entry for
            // it, and a later packet out to that address and port would then be masqueraded
            // from another port: the far side's birthday probes, TTL 64 after their first
            // round, would spoil the mappings they hope to meet.)
            for line in [
                "sysctl -qw net.ipv4.ip_forward=1",
                "iptables -P FORWARD DROP",
                "iptables -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                "iptables -A FORWARD ! -i wan -o wan -j ACCEPT",
                "iptables -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                "iptables -A INPUT -i wan -j DROP",
            ] {
                self.sh(&router, line)?;
            }
            if lossy {
                self.sh(
                    &router,
                    &format!(
                        "iptables -t mangle -A POSTROUTING -o wan -m statistic --mode random \
                         --probability {LINK_LOSS} -j DROP"
                    ),
                )?;
            }
        }

        // Home 1: a bridged LAN with p1 and p3 (bridged frames must not meet the router's
        // FORWARD policy).
        self.sh("r1", "ip link add br0 type bridge")?;
        self.sh("r1", "ip addr add 192.168.1.1/24 dev br0")?;
        self.sh("r1", "ip link set br0 up")?;
        let _ = self.sh("r1", "sysctl -qw net.bridge.bridge-nf-call-iptables=0");
        for (peer, last, port) in [("p1", 2, "l1"), ("p3", 3, "l3")] {
            self.veth("r1", port, peer, "eth0")?;
            self.sh("r1", &format!("ip link set {port} master br0"))?;
            self.sh(peer, &format!("ip addr add 192.168.1.{last}/24 dev eth0"))?;
            self.sh(peer, "ip route add default via 192.168.1.1")?;
        }
        // Home 2: p2 alone.
        self.veth("r2", "lan", "p2", "eth0")?;
        self.sh("r2", "ip addr add 192.168.2.1/24 dev lan")?;
        self.sh("p2", "ip addr add 192.168.2.2/24 dev eth0")?;
        self.sh("p2", "ip route add default via 192.168.2.1")?;
        self.set_nats(Nat::Consistent, Nat::Random);
        Ok(())
    }

    /// `DHT_NODES` persistent `hyperdht-chat node`s on the internet.
    fn start_dht(&mut self) {
        let port = DHT_PORT.to_string();
        let first = "45.0.0.1".to_string();
        let mut node = Proc::spawn(
            "dht-1",
            self.command("inet", BIN).args([
                "node",
                "--host",
                &first,
                "--port",
                &port,
                "--bootstrap",
                "none",
            ]),
        );
        node.expect("node listening on", WAIT);
        self.helpers.push(node);
        let boot = format!("{first}:{port}");
        let mut rest = Vec::new();
        for i in 2..=DHT_NODES {
            let host = format!("45.0.0.{i}");
            rest.push(Proc::spawn(
                &format!("dht-{i}"),
                self.command("inet", BIN).args([
                    "node",
                    "--host",
                    &host,
                    "--port",
                    &port,
                    "--bootstrap",
                    &boot,
                    "--persistent",
                ]),
            ));
        }
        for mut n in rest {
            n.expect("node listening on", WAIT);
            self.helpers.push(n);
        }
        self.boot = (1..=3)
            .map(|i| format!("45.0.0.{i}:{port}"))
            .collect::<Vec<_>>()
            .join(",");
    }

    /// Sets both routers' NATs and forgets every mapping (`conntrack -F`).
    fn set_nats(&self, r1: Nat, r2: Nat) {
        for (router, nat) in [("r1", r1), ("r2", r2)] {
            let masquerade = match nat {
                Nat::Consistent => "iptables -t nat -A POSTROUTING -o wan -j MASQUERADE",
                Nat::Random => "iptables -t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully",
            };
            self.sh(router, "iptables -t nat -F POSTROUTING")
                .and_then(|_| self.sh(router, masquerade))
                .unwrap_or_else(|e| panic!("setting {router}'s NAT: {e}"));
        }
        self.flush_conntrack();
    }

    fn flush_conntrack(&self) {
        for router in ["r1", "r2"] {
            self.sh(router, "conntrack -F")
                .unwrap_or_else(|e| panic!("conntrack -F in {router}: {e}"));
        }
    }

    /// Starts a blind relay on the internet (`tests/js/relay-server.js` or
    /// `hyperdht-chat relay`); returns it and its key once it listens.
    fn relay(&self, imp: Impl) -> (Proc, String) {
        let mut cmd = match imp {
            Impl::Js => {
                let mut c = self.command("inet", "node");
                c.arg(js_dir().join("relay-server.js"))
                    .env("HYPERDHT_BOOTSTRAP", &self.boot)
                    .env("RELAY_HOST", RELAY_HOSTS[0]);
                c
            }
            Impl::Rust => {
                let mut c = self.command("inet", BIN);
                c.args(["relay", "--bootstrap", &self.boot, "--host", RELAY_HOSTS[1]])
                    .env("RUST_LOG", "info");
                c
            }
        };
        let mut p = Proc::spawn(&format!("{imp:?} blind relay"), &mut cmd);
        let key = p
            .expect("relay listening on:", WAIT)
            .trim_start_matches("relay listening on:")
            .trim()
            .to_string();
        assert_eq!(key.len(), 64, "hex key: {key}");
        (p, key)
    }

    /// Starts a chat server on `host`; returns it and its key once it listens.
    fn server(&self, host: &str, imp: Impl) -> (Proc, String) {
        let mut cmd = match imp {
            Impl::Rust => {
                let mut c = self.command(host, BIN);
                c.args(["server", "--bootstrap", &self.boot])
                    .env("RUST_LOG", "info");
                c
            }
            Impl::Js => self.js(host, "chat-server.js", &[]),
        };
        let mut p = Proc::spawn(&format!("{imp:?} server on {host}"), &mut cmd);
        let key = p
            .expect("listening on:", WAIT)
            .trim_start_matches("listening on:")
            .trim()
            .to_string();
        assert_eq!(key.len(), 64, "hex key: {key}");
        (p, key)
    }

    /// Starts a chat client on `host` for `key`.
    fn client(&self, host: &str, imp: Impl, key: &str) -> Proc {
        self.client_with(host, imp, key, &[])
    }

    /// Starts a chat client on `host` for `key` with more flags (Rust only).
    fn client_with(&self, host: &str, imp: Impl, key: &str, flags: &[&str]) -> Proc {
        let mut cmd = match imp {
            Impl::Rust => {
                let mut c = self.command(host, BIN);
                c.args(["client", key, "--bootstrap", &self.boot])
                    .args(flags)
                    .env("RUST_LOG", "info");
                c
            }
            Impl::Js => self.js(host, "chat-client.js", &[key]),
        };
        Proc::spawn(&format!("{imp:?} client on {host}"), &mut cmd)
    }

    fn js(&self, host: &str, script: &str, args: &[&str]) -> Command {
        let mut c = self.command(host, "node");
        c.arg(js_dir().join(script))
            .args(args)
            .env("HYPERDHT_BOOTSTRAP", &self.boot)
            .env("CHAT_HOST", "0.0.0.0");
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.helpers.clear();
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = run(Command::new("ip").args(["netns", "del", ns])) {
                eprintln!("could not delete namespace {ns}: {e}");
            }
        }
    }
}

fn delay_link_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netns/delay_link.py")
}

// ----- cells -------------------------------------------------------------------------------

/// One attempt: NATs set and mappings flushed, a fresh server, then a client; returns both
/// once the client printed `got connection!`, and the time from starting the client to that.
fn connect(
    lab: &Lab,
    nats: (Nat, Nat),
    (server_host, server_impl): (&str, Impl),
    (client_host, client_impl): (&str, Impl),
    wait: Duration,
) -> Result<(Proc, Proc, Duration), String> {
    lab.set_nats(nats.0, nats.1);
    let (server, key) = lab.server(server_host, server_impl);
    let start = Instant::now();
    let mut client = lab.client(client_host, client_impl, &key);
    client.expect_within("got connection!", wait)?;
    let took = start.elapsed();
    Ok((server, client, took))
}

/// A cell that must connect: both sides see the connection and lines go both ways.
fn chat_cell(
    lab: &Lab,
    label: &str,
    nats: (Nat, Nat),
    server: (&str, Impl),
    client: (&str, Impl),
    wait: Duration,
) {
    let (mut s, mut c, took) = connect(lab, nats, server, client, wait)
        .unwrap_or_else(|e| panic!("{label}: no connection: {e}"));
    s.expect("got connection!", WAIT);
    lines_both_ways(label, &mut s, &mut c);
    let path = c
        .stderr()
        .lines()
        .find_map(|l| {
            l.split("connection open remote=")
                .nth(1)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into());
    eprintln!("{label}: connected in {took:.2?} (client's path: {path})");
}

/// Three lines each way, each arriving in order.
fn lines_both_ways(label: &str, s: &mut Proc, c: &mut Proc) {
    for i in 0..3 {
        let line = format!("from client {i}");
        c.type_line(&line);
        assert_eq!(s.expect("from client", WAIT), line, "{label}: in order");
        let line = format!("from server {i}");
        s.type_line(&line);
        assert_eq!(c.expect("from server", WAIT), line, "{label}: in order");
    }
}

fn rust_and_js() -> bool {
    interop_enabled()
}

// ----- tests -------------------------------------------------------------------------------

#[test]
fn consistent_nats_rust_and_js() {
    if !netns_enabled() {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("c", false);
    let both = (Nat::Consistent, Nat::Consistent);
    chat_cell(
        &lab,
        "consistent/consistent Rust server, Rust client",
        both,
        ("p1", Impl::Rust),
        ("p2", Impl::Rust),
        WAIT,
    );
    if rust_and_js() {
        chat_cell(
            &lab,
            "consistent/consistent JS server, Rust client",
            both,
            ("p1", Impl::Js),
            ("p2", Impl::Rust),
            WAIT,
        );
        chat_cell(
            &lab,
            "consistent/consistent Rust server, JS client",
            both,
            ("p1", Impl::Rust),
            ("p2", Impl::Js),
            WAIT,
        );
    }
    chat_cell(
        &lab,
        "same LAN Rust server, Rust client",
        both,
        ("p1", Impl::Rust),
        ("p3", Impl::Rust),
        WAIT,
    );
}

/// The Hyperswarm guide's topic peers: one in each NATed home (Rust in home 1, the Node.js
/// peer in home 2, or Rust without Node.js) and one on the open internet join one topic; each
/// meets the other two, and a line from each reaches the other two.
#[test]
fn swarm_peers_in_two_homes_and_on_the_internet_meet_by_topic() {
    if !netns_enabled() {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("s", false);
    lab.set_nats(Nat::Consistent, Nat::Consistent);
    let swarm = |host: &str, flags: &[&str]| {
        let mut c = lab.command(host, BIN);
        c.args(["swarm"])
            .args(flags)
            .args(["--bootstrap", &lab.boot])
            .env("RUST_LOG", "info");
        c
    };
    let open_host = RELAY_HOSTS[1];
    let mut open = Proc::spawn(
        "Rust swarm on the internet",
        &mut swarm("inet", &["--host", open_host]),
    );
    let topic = open
        .expect("joined topic:", WAIT)
        .trim_start_matches("joined topic:")
        .trim()
        .to_string();
    // One after another: peers whose joins overlap can each look the topic up before the
    // other's announce is stored and then meet only at the next refresh (10 minutes,
    // hyperswarm's lib/peer-discovery.js), in JS as in Rust.
    let mut home1 = Proc::spawn("Rust swarm in home 1", &mut swarm("p1", &[&topic]));
    home1.expect("joined topic:", WAIT);
    let mut home2 = if rust_and_js() {
        Proc::spawn(
            "JS swarm in home 2",
            &mut lab.js("p2", "chat-swarm.js", &[&topic]),
        )
    } else {
        Proc::spawn("Rust swarm in home 2", &mut swarm("p2", &[&topic]))
    };
    home2.expect("joined topic:", WAIT);
    let mut names = Vec::new();
    for p in [&mut open, &mut home1, &mut home2] {
        let mut met: Vec<String> = p
            .collect("* got a connection from:", 2, WAIT)
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
        assert_eq!(met.len(), 2, "{} meets two peers: {met:?}", p.name);
        names.push(met);
    }
    for (i, p) in [&mut open, &mut home1, &mut home2].into_iter().enumerate() {
        p.type_line(&format!("hello from peer {i}"));
    }
    // Each peer hears a line from each peer it met, once.
    let mut heard = Vec::new();
    for (i, p) in [&mut open, &mut home1, &mut home2].into_iter().enumerate() {
        let mut from = Vec::new();
        for name in &names[i] {
            let lines = p.collect(&format!("{name}: hello from peer"), 1, WAIT);
            assert_eq!(lines.len(), 1, "{}: one line from {name}", p.name);
            from.push(lines[0].rsplit(' ').next().unwrap_or_default().to_string());
        }
        from.sort();
        let want: Vec<String> = (0..3).filter(|j| *j != i).map(|j| j.to_string()).collect();
        assert_eq!(from, want, "{} hears the other two", p.name);
        heard.push(from);
    }
    eprintln!("swarm: three peers across two NATed homes and the internet met: {heard:?}");
}

#[test]
fn consistent_with_random_nat() {
    if !netns_enabled() {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("r", false);
    let nats = (Nat::Consistent, Nat::Random);
    chat_cell(
        &lab,
        "consistent server, random client (Rust, Rust)",
        nats,
        ("p1", Impl::Rust),
        ("p2", Impl::Rust),
        RANDOM_WAIT,
    );
    chat_cell(
        &lab,
        "random server, consistent client (Rust, Rust)",
        nats,
        ("p2", Impl::Rust),
        ("p1", Impl::Rust),
        RANDOM_WAIT,
    );
    if rust_and_js() {
        chat_cell(
            &lab,
            "random server, consistent client (JS, Rust)",
            nats,
            ("p2", Impl::Js),
            ("p1", Impl::Rust),
            RANDOM_WAIT,
        );
        chat_cell(
            &lab,
            "consistent server, random client (Rust, JS)",
            nats,
            ("p1", Impl::Rust),
            ("p2", Impl::Js),
            RANDOM_WAIT,
        );
    }
}

#[test]
fn double_random_nats_fail_with_a_reason() {
    if !netns_enabled() {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("d", false);
    let mut servers = vec![Impl::Rust];
    if rust_and_js() {
        servers.push(Impl::Js);
    }
    for server_impl in servers {
        lab.set_nats(Nat::Random, Nat::Random);
        let (mut server, key) = lab.server("p1", server_impl);
        let start = Instant::now();
        let mut client = lab.client("p2", Impl::Rust, &key);
        client.expect("Connecting to:", WAIT);
        let status = client.wait_exit(RANDOM_WAIT);
        let err = client.stderr();
        let label = format!("random/random {server_impl:?} server, Rust client");
        let status = status.unwrap_or_else(|| {
            panic!("{label}: the client neither connected nor gave up within {RANDOM_WAIT:?}; stderr:\n{err}")
        });
        assert!(!status.success(), "{label}: must fail; stderr:\n{err}");
        assert!(
            err.contains("both peers are behind randomising NATs"),
            "{label}: the client must say why: {err}"
        );
        assert!(
            server
                .expect_within("got connection!", Duration::ZERO)
                .is_err(),
            "{label}: the server saw a connection"
        );
        let reason = err.lines().last().unwrap_or_default().to_string();
        eprintln!("{label}: failed in {:.2?}: {reason}", start.elapsed());
    }
}

/// Where punching cannot work, a blind relay on the internet can: a Rust client behind a
/// random NAT names the relay (`--relay`) and reaches a server behind another random NAT,
/// Rust and the Node.js guide's (which pairs through the relay the client named), through a
/// Node.js relay and through a Rust one.
#[test]
fn double_random_nats_connect_through_a_blind_relay() {
    if !netns_enabled() {
        return;
    }
    if !rust_and_js() {
        // Half the cells are the Node.js relay or server.
        return;
    }
    let _serial = serial();
    let lab = Lab::new("b", false);
    let relays = [lab.relay(Impl::Js), lab.relay(Impl::Rust)];
    let cells = [Impl::Js, Impl::Rust]
        .iter()
        .zip(&relays)
        .flat_map(|(r, (_, key))| [(*r, key, Impl::Rust), (*r, key, Impl::Js)]);
    for (relay_impl, relay_key, server_impl) in cells {
        let label = format!(
            "random/random {server_impl:?} server, Rust client, {relay_impl:?} blind relay"
        );
        // Two attempts: now and then (about one run in fifteen, always the Node.js server
        // with the Node.js relay) a connection to the JS relay node gets no answer, the Rust
        // client's or, judging by a pairing that never completes, the JS server's; under
        // investigation. A second attempt with fresh processes connects.
        let attempt = || {
            lab.set_nats(Nat::Random, Nat::Random);
            let (s, key) = lab.server("p1", server_impl);
            let start = Instant::now();
            let mut c = lab.client_with("p2", Impl::Rust, &key, &["--relay", relay_key]);
            c.expect_within("got connection!", RANDOM_WAIT)
                .map(|_| (s, c, start.elapsed()))
        };
        let (mut s, mut c, took) = attempt()
            .or_else(|e| {
                eprintln!("{label}: first attempt failed, trying again: {e}");
                attempt()
            })
            .unwrap_or_else(|e| panic!("{label}: no connection: {e}"));
        s.expect("got connection!", WAIT);
        lines_both_ways(&label, &mut s, &mut c);
        let err = c.stderr();
        assert!(
            err.contains("connection runs through the blind relay"),
            "{label}: the client must have gone through the relay: {err}"
        );
        eprintln!("{label}: connected in {took:.2?}");
    }
}

/// 10 MiB of base64 text on one line (deterministic).
fn transfer_data() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..TRANSFER_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x >> 58) as usize] as char
        })
        .collect()
}

#[test]
fn lossy_links_carry_10_mib() {
    if !netns_enabled() {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("l", true);
    let label = "5% loss, 50 ms: consistent server, random client (Rust, Rust)";
    let (mut server, mut client, took) = connect(
        &lab,
        (Nat::Consistent, Nat::Random),
        ("p1", Impl::Rust),
        ("p2", Impl::Rust),
        RANDOM_WAIT,
    )
    .unwrap_or_else(|e| panic!("{label}: no connection: {e}"));
    server.expect("got connection!", WAIT);
    eprintln!("{label}: connected in {took:.2?}");

    let data = Arc::new(transfer_data());
    let mut stdin = client.stdin.take().expect("client stdin");
    let send = data.clone();
    let start = Instant::now();
    let writer = thread::spawn(move || {
        stdin.write_all(send.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()
        // Dropping stdin ends the client's stream.
    });
    let got = match server.lines.recv_timeout(TRANSFER_WAIT) {
        Ok(l) => l,
        Err(e) => panic!(
            "{label}: the data did not arrive within {TRANSFER_WAIT:?} ({e:?}); server stderr:\n{}\nclient stderr:\n{}",
            server.stderr(),
            client.stderr()
        ),
    };
    let elapsed = start.elapsed();
    writer
        .join()
        .expect("writer thread")
        .expect("writing to the client");
    if got != *data {
        let first_diff = got
            .bytes()
            .zip(data.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(data.len()));
        panic!(
            "{label}: the server printed {} bytes, expected {} identical bytes; first difference at byte {first_diff}",
            got.len(),
            data.len()
        );
    }
    eprintln!(
        "{label}: 10 MiB arrived intact in {elapsed:.2?} ({:.2} MiB/s)",
        TRANSFER_BYTES as f64 / 1048576.0 / elapsed.as_secs_f64()
    );
}

// ----- measurement -------------------------------------------------------------------------

/// Time from starting a client to its `got connection!`, Rust (server and client) and JS (the
/// guide's server and client), per cell; prints a Markdown table. Not a pass/fail test.
#[test]
#[ignore = "measurement for BENCHMARKS.md; run with --ignored --nocapture"]
fn connect_times() {
    if !netns_enabled() || !interop_enabled() {
        return;
    }
    let _serial = serial();
    let runs: usize = std::env::var("HYPERDHT_NETNS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // Only the rows whose label contains this text (e.g. "consistent client, 5% loss").
    let only = std::env::var("HYPERDHT_NETNS_CELL").unwrap_or_default();
    use Nat::{Consistent as C, Random as R};
    // (name, (r1's NAT, r2's NAT), server host, client host, also with loss)
    let cells = [
        ("same LAN (behind one NAT)", (C, R), "p1", "p3", false),
        (
            "consistent server, consistent client",
            (C, C),
            "p1",
            "p2",
            true,
        ),
        ("consistent server, random client", (C, R), "p1", "p2", true),
        ("random server, consistent client", (C, R), "p2", "p1", true),
    ];
    let mut rows = Vec::new();
    for lossy in [false, true] {
        let lab = Lab::new(if lossy { "tl" } else { "t" }, lossy);
        for (name, nats, s_host, c_host, with_loss) in cells {
            let label = format!("{name}{}", if lossy { ", 5% loss + 50 ms" } else { "" });
            if (lossy && !with_loss) || !label.contains(&only) {
                continue;
            }
            // Rust and JS attempts alternate, so both meet the same DHT and machine load.
            let mut times = [Vec::new(), Vec::new()];
            for _ in 0..runs {
                for (i, imp) in [Impl::Rust, Impl::Js].into_iter().enumerate() {
                    match connect(&lab, nats, (s_host, imp), (c_host, imp), RANDOM_WAIT) {
                        Ok((_, _, t)) => times[i].push(t.as_secs_f64()),
                        Err(e) => {
                            let reason = e.lines().rfind(|l| !l.trim().is_empty());
                            eprintln!("{name} {imp:?}: failed: {}", reason.unwrap_or_default());
                        }
                    }
                }
            }
            let mut row = format!("| {label} |");
            for mut t in times {
                t.sort_by(f64::total_cmp);
                row.push_str(&match t.len() {
                    0 => format!(" 0/{runs} |"),
                    n => {
                        let median = (t[(n - 1) / 2] + t[n / 2]) / 2.0;
                        let (lo, hi) = (t[0], t[n - 1]);
                        format!(" {n}/{runs}, {median:.2} s ({lo:.2}–{hi:.2}) |")
                    }
                });
            }
            eprintln!("{row}");
            rows.push(row);
        }
    }
    println!("| cell | Rust server + Rust client | JS server + JS client |");
    println!("|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
