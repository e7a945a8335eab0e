//! `bench_dht`: requests answered per second by one DHT node, Rust vs Node.js (PING,
//! FIND_NODE, and hyperdht's LOOKUP and ANNOUNCE), the memory of 100,000 stored records, and the
//! memory of many simulated nodes. See `BENCHMARKS.md` at the workspace root for results.
//!
//! ```text
//! cargo build --release -p hyperdht-chat -p hyperdht-tests --bin hyperdht-chat --bin bench_dht
//! target/release/bench_dht            # rate benchmark (echo, rust, js) + memory
//! target/release/bench_dht --help
//! ```
//!
//! Rate: each target is a separate process bound on 127.0.0.1 whose routing table is first
//! filled by in-process Rust nodes (`hyperdht-mio`, persistent) bootstrapping from it. One load
//! generator (the same for every target) sends dht-rpc PING, FIND_NODE, LOOKUP or ANNOUNCE
//! requests from several UDP sockets, one blocking thread each, keeping a fixed window of
//! requests outstanding per socket and matching replies by tid. The target's CPU time (utime +
//! stime of all its threads, from `/proc/PID/stat`) over the measurement window, divided by the
//! replies counted in it, gives its CPU time per request.
//!
//! LOOKUP: the DHT targets are first given `--records-per-topic` announces on each of
//! `--lookup-topics` topics, then asked for random ones of those topics. ANNOUNCE: before each
//! run the generator fetches a token (one LOOKUP; the token is per IP, so all generator sockets
//! share it) and signs `--announce-pool` announces for it (new topics x `ANNOUNCE_KEYS` key
//! pairs), outside the measured window; the sockets cycle through that pool. A token is valid for
//! at least 7.5 s, so a helper thread fetches a new one and re-signs once the token is
//! `REFRESH_AFTER` old, which only happens inside the window for runs longer than the default.
//!
//! Records: 100,000 announces (1,000 topics x 100 key pairs) stored into a
//! `hyperdht_proto::Node` in-process (live heap and VmRSS deltas), and over UDP into a fresh
//! Rust and a fresh JS target process (their VmRSS deltas).
//!
//! Targets: `echo` (this binary re-run as a trivial single-thread UDP echo server: the ceiling
//! of the kernel's loopback UDP path with this generator), `echo-mmsg` (the same, a batch of
//! datagrams per system call, as the Rust driver does), `rust` (`hyperdht-chat node
//! --bootstrap none`) and `js` (`node tests/js/bench-node.js`: `HyperDHT.bootstrapper`).
//!
//! Child processes are killed when the benchmark ends, panics included (a guard's `Drop`);
//! the echo server and the JS node also exit by themselves when their stdin closes.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use hyperdht_mio::MioNode;
use hyperdht_proto::commands::{FIND_NODE, PING};
use hyperdht_proto::dht::keys::{command::LOOKUP, KeyPair};
use hyperdht_proto::wire::rpc::{Request, Response, RESPONSE_ID};
use hyperdht_proto::{Config, Persistence};
use hyperdht_tests::bench_util::{self as bu, BulkOpts, TokenInfo};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

const USAGE: &str = "\
bench_dht: requests answered per second by one HyperDHT node (Rust vs Node.js), and memory

USAGE:
    bench_dht [FLAGS]

FLAGS:
    --targets LIST     Comma-separated targets among echo,echo-mmsg,rust,js (default all);
                       the echo servers only answer ping and find_node
    --commands LIST    Comma-separated among ping,find_node,lookup,announce (default all)
    --duration SECS    Measured seconds per run (default 5)
    --warmup SECS      Unmeasured load before each run (default 1)
    --runs N           Runs per target and command; the median is reported (default 3)
    --sockets N        Load generator sockets, one thread each (default 4)
    --window N         Requests outstanding per socket (default 32)
    --fill N           Rust nodes that join each target's routing table first (default 30)
    --lookup-topics N  Topics announced on before the LOOKUP runs (default 1000)
    --records-per-topic N
                       Announces per LOOKUP topic (default 20, what one reply carries)
    --announce-pool N  ANNOUNCE requests signed per token (default 8192)
    --sign-threads N   Threads signing announces, outside the measured window (default 2)
    --chat PATH        hyperdht-chat binary (default: next to this binary)
    --chat-alt PATH    Also measure a second hyperdht-chat build as target rust-alt (A/B)
    --node PATH        Node.js binary (default: node)
    --memory N         Also measure the resident memory of N simulated nodes (default 10000;
                       0 skips it)
    --memory-only      Only the memory measurement (simulated nodes)
    --records N        Memory of N stored records: in-process Node, and the rust and js
                       targets over UDP (default 100000; 0 skips it)
    --record-topics N  Topics the N records are spread over (default 1000)
    --records-only     Only the records measurement
    --attach PID@127.0.0.1:PORT
                       Also measure an already running server (not filled, not stopped)
    --verbose          Let the targets log to stderr
    --help             This text

Only 127.0.0.1 is used. Every run stops by itself; child processes are killed on exit.
";

// ----- options --------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Echo,
    /// The echo server reading and writing up to 32 datagrams per system call.
    EchoBatch,
    Rust,
    /// A second `hyperdht-chat` build (`--chat-alt PATH`), to A/B a change.
    RustAlt,
    Js,
    /// An already running process (`--attach PID@127.0.0.1:PORT`), not filled.
    Attached(u32, SocketAddrV4),
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Echo => "echo",
            Target::EchoBatch => "echo-mmsg",
            Target::Rust => "rust",
            Target::RustAlt => "rust-alt",
            Target::Js => "js",
            Target::Attached(..) => "attached",
        }
    }

    fn parse(s: &str) -> Result<Target, String> {
        match s {
            "echo" => Ok(Target::Echo),
            "echo-mmsg" => Ok(Target::EchoBatch),
            "rust" => Ok(Target::Rust),
            "js" => Ok(Target::Js),
            _ => Err(format!("unknown target {s:?} (echo, echo-mmsg, rust, js)")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Ping,
    FindNode,
    /// hyperdht LOOKUP (external command 3) on a topic with stored records.
    Lookup,
    /// hyperdht ANNOUNCE (external command 4), signed, with a valid token.
    Announce,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Ping => "PING",
            Cmd::FindNode => "FIND_NODE",
            Cmd::Lookup => "LOOKUP",
            Cmd::Announce => "ANNOUNCE",
        }
    }

    fn parse(s: &str) -> Result<Cmd, String> {
        match s {
            "ping" => Ok(Cmd::Ping),
            "find_node" => Ok(Cmd::FindNode),
            "lookup" => Ok(Cmd::Lookup),
            "announce" => Ok(Cmd::Announce),
            _ => Err(format!(
                "unknown command {s:?} (ping, find_node, lookup, announce)"
            )),
        }
    }

    /// Whether `target` serves this command (the echo server only mirrors dht-rpc requests).
    fn applies_to(self, target: Target) -> bool {
        !matches!(
            (self, target),
            (
                Cmd::Lookup | Cmd::Announce,
                Target::Echo | Target::EchoBatch
            )
        )
    }
}

#[derive(Clone, Debug)]
struct Opts {
    targets: Vec<Target>,
    commands: Vec<Cmd>,
    duration: Duration,
    warmup: Duration,
    runs: usize,
    sockets: usize,
    window: usize,
    fill: usize,
    lookup_topics: usize,
    records_per_topic: usize,
    announce_pool: usize,
    sign_threads: usize,
    chat: PathBuf,
    chat_alt: Option<PathBuf>,
    node: PathBuf,
    memory: usize,
    memory_only: bool,
    records: usize,
    record_topics: usize,
    records_only: bool,
    verbose: bool,
}

fn parse_list<T>(s: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    s.split(',').filter(|x| !x.is_empty()).map(f).collect()
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} {v:?} is not a valid number"))
}

fn secs(flag: &str, v: &str) -> Result<Duration, String> {
    let s: f64 = parse_num(flag, v)?;
    if !(0.0..=3600.0).contains(&s) {
        return Err(format!("{flag} must be between 0 and 3600"));
    }
    Ok(Duration::from_secs_f64(s))
}

impl Opts {
    fn parse(argv: &[String]) -> Result<Opts, String> {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let mut o = Opts {
            targets: vec![Target::Echo, Target::EchoBatch, Target::Rust, Target::Js],
            commands: vec![Cmd::Ping, Cmd::FindNode, Cmd::Lookup, Cmd::Announce],
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            runs: 3,
            sockets: 4,
            window: 32,
            fill: 30,
            lookup_topics: 1000,
            records_per_topic: 20,
            announce_pool: 8192,
            sign_threads: 2,
            chat: exe_dir.join("hyperdht-chat"),
            chat_alt: None,
            node: PathBuf::from("node"),
            memory: 10_000,
            memory_only: false,
            records: 100_000,
            record_topics: 1000,
            records_only: false,
            verbose: false,
        };
        let mut it = argv.iter();
        while let Some(flag) = it.next() {
            let flag = flag.as_str();
            match flag {
                "--memory-only" => o.memory_only = true,
                "--records-only" => o.records_only = true,
                "--verbose" => o.verbose = true,
                _ => {
                    let v = it
                        .next()
                        .ok_or_else(|| format!("{flag} needs a value; see --help"))?;
                    match flag {
                        "--targets" => o.targets = parse_list(v, Target::parse)?,
                        "--commands" => o.commands = parse_list(v, Cmd::parse)?,
                        "--duration" => o.duration = secs(flag, v)?,
                        "--warmup" => o.warmup = secs(flag, v)?,
                        "--runs" => o.runs = parse_num(flag, v)?,
                        "--sockets" => o.sockets = parse_num(flag, v)?,
                        "--window" => o.window = parse_num(flag, v)?,
                        "--fill" => o.fill = parse_num(flag, v)?,
                        "--lookup-topics" => o.lookup_topics = parse_num(flag, v)?,
                        "--records-per-topic" => o.records_per_topic = parse_num(flag, v)?,
                        "--announce-pool" => o.announce_pool = parse_num(flag, v)?,
                        "--sign-threads" => o.sign_threads = parse_num(flag, v)?,
                        "--records" => o.records = parse_num(flag, v)?,
                        "--record-topics" => o.record_topics = parse_num(flag, v)?,
                        "--chat" => o.chat = PathBuf::from(v),
                        "--chat-alt" => {
                            o.chat_alt = Some(PathBuf::from(v));
                            if !o.targets.contains(&Target::RustAlt) {
                                o.targets.push(Target::RustAlt);
                            }
                        }
                        "--node" => o.node = PathBuf::from(v),
                        "--memory" => o.memory = parse_num(flag, v)?,
                        "--attach" => {
                            let (pid, addr) = v
                                .split_once('@')
                                .ok_or("--attach takes PID@127.0.0.1:PORT")?;
                            let pid = parse_num("--attach", pid)?;
                            let addr: SocketAddrV4 = parse_num("--attach", addr)?;
                            if *addr.ip() != LOCALHOST {
                                return Err("--attach: only 127.0.0.1 is allowed".into());
                            }
                            o.targets.push(Target::Attached(pid, addr));
                        }
                        _ => return Err(format!("unknown flag {flag}; see --help")),
                    }
                }
            }
        }
        if o.runs == 0 || o.sockets == 0 || o.window == 0 || o.duration.is_zero() {
            return Err("--runs, --sockets, --window and --duration must be positive".into());
        }
        if o.window > 16_384 {
            return Err("--window is at most 16384".into());
        }
        if o.lookup_topics == 0
            || o.records_per_topic == 0
            || o.announce_pool < ANNOUNCE_KEYS
            || o.sign_threads == 0
            || o.record_topics == 0
        {
            return Err(format!(
                "--lookup-topics, --records-per-topic, --sign-threads and --record-topics must be \
                 positive, --announce-pool at least {ANNOUNCE_KEYS}"
            ));
        }
        if o.records_per_topic > 1000 || o.records > 10_000_000 {
            return Err("--records-per-topic is at most 1000, --records at most 10000000".into());
        }
        Ok(o)
    }
}

// ----- child processes ------------------------------------------------------------------------

/// A target process; killed (and reaped) on drop, panics included.
struct ChildGuard {
    child: Child,
    what: String,
    /// The lines it prints on stdout after its ready line.
    lines: mpsc::Receiver<String>,
}

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `line` to its stdin and waits (bounded) for a stdout line starting with `prefix`.
    fn ask(&mut self, line: &str, prefix: &str) -> Option<String> {
        use std::io::Write as _;
        while self.lines.try_recv().is_ok() {}
        let stdin = self.child.stdin.as_mut()?;
        stdin.write_all(format!("{line}\n").as_bytes()).ok()?;
        stdin.flush().ok()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        eprintln!("stopped {}", self.what);
    }
}

/// A free UDP port on 127.0.0.1 (bound and released; a small race we accept).
fn free_port() -> u16 {
    UdpSocket::bind((LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Spawns `cmd`, waits (bounded) for a stdout line starting with `ready_prefix`, and keeps
/// draining stdout afterwards.
fn spawn_target(mut cmd: Command, what: String, ready_prefix: &str, verbose: bool) -> ChildGuard {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if verbose {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    // Forward every line; this also keeps the pipe drained so the child never blocks on stdout.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let guard = ChildGuard {
        child,
        what,
        lines: rx,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match guard.lines.recv_timeout(left) {
            Ok(line) if line.starts_with(ready_prefix) => {
                eprintln!("{}: {line}", guard.what);
                break;
            }
            Ok(_) => {}
            Err(_) => panic!("{} did not print {ready_prefix:?} within 30 s", guard.what),
        }
    }
    guard
}

fn start_target(target: Target, opts: &Opts) -> (Option<ChildGuard>, u32, SocketAddrV4) {
    let port = free_port();
    let addr = SocketAddrV4::new(LOCALHOST, port);
    let guard = match target {
        Target::Attached(pid, addr) => return (None, pid, addr),
        Target::Echo | Target::EchoBatch => {
            let exe = std::env::current_exe().expect("current_exe");
            let mut c = Command::new(exe);
            c.arg(if target == Target::Echo {
                "--echo-server"
            } else {
                "--echo-server-mmsg"
            })
            .arg(port.to_string());
            spawn_target(c, format!("echo server on {addr}"), "ready", opts.verbose)
        }
        Target::Rust | Target::RustAlt => {
            let chat = match (target, &opts.chat_alt) {
                (Target::RustAlt, Some(alt)) => alt,
                _ => &opts.chat,
            };
            assert!(
                chat.exists(),
                "{} not found: build it with `cargo build --release -p hyperdht-chat` or pass --chat",
                chat.display()
            );
            let mut c = Command::new(chat);
            c.args(["node", "--host", "127.0.0.1", "--port"])
                .arg(port.to_string())
                .args(["--bootstrap", "none"]);
            if !opts.verbose {
                c.env("RUST_LOG", "warn");
            }
            spawn_target(
                c,
                format!("{} node on {addr}", target.name()),
                "node listening on",
                opts.verbose,
            )
        }
        Target::Js => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("js/bench-node.js");
            let mut c = Command::new(&opts.node);
            // --expose-gc only defines `gc()`, which the `stats` command calls before measuring.
            c.arg("--expose-gc").arg(&script).arg(port.to_string());
            c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("js"));
            spawn_target(c, format!("js node on {addr}"), "ready", opts.verbose)
        }
    };
    let pid = guard.pid();
    (Some(guard), pid, addr)
}

/// `--echo-server PORT`: answer every datagram with itself, type byte turned into a response.
/// The floor of what any single-threaded UDP server costs with this load generator.
/// `--echo-server-mmsg PORT` does the same a batch at a time (`hyperdht_mio::batch`).
fn echo_server(port: u16, batched: bool) -> ! {
    let sock = UdpSocket::bind((LOCALHOST, port)).expect("echo server bind");
    std::thread::spawn(|| {
        // Exit when the benchmark closes our stdin (or dies).
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    println!("ready {}", sock.local_addr().expect("local addr"));
    if batched {
        echo_batched(sock);
    }
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if n > 0 => {
                buf[0] = RESPONSE_ID;
                let _ = sock.send_to(&buf[..n], from);
            }
            _ => {}
        }
    }
}

/// The batched echo loop: wait for readability, then receive and answer batches until the
/// socket is empty.
fn echo_batched(sock: UdpSocket) -> ! {
    use hyperdht_mio::batch::{send_batch, RecvBatch};
    sock.set_nonblocking(true).expect("nonblocking");
    let mut sock = mio::net::UdpSocket::from_std(sock);
    let mut poll = mio::Poll::new().expect("poll");
    poll.registry()
        .register(&mut sock, mio::Token(0), mio::Interest::READABLE)
        .expect("register");
    let mut events = mio::Events::with_capacity(4);
    let mut batch = RecvBatch::new();
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
    loop {
        match batch.recv(&sock) {
            Ok(_) => {
                replies.clear();
                replies.extend(batch.iter().map(|r| {
                    let mut data = r.data.to_vec();
                    if let Some(kind) = data.first_mut() {
                        *kind = RESPONSE_ID;
                    }
                    (data, r.from)
                }));
                let out: Vec<(&[u8], SocketAddr)> =
                    replies.iter().map(|(d, a)| (d.as_slice(), *a)).collect();
                let mut sent = 0;
                while sent < out.len() {
                    match send_batch(&sock, &out[sent..]) {
                        Ok(k) => sent += k,
                        Err(_) => sent += 1,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = poll.poll(&mut events, None);
            }
            Err(_) => {}
        }
    }
}

// ----- CPU time -------------------------------------------------------------------------------

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// (utime, stime) of a whole process (all threads), in clock ticks.
fn cpu_ticks(pid: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start with the state (field 3).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return (0, 0);
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime is field 14, stime 15: indices 11 and 12 counting from the state (field 3).
    (get(11), get(12))
}

fn vm_rss_kib() -> u64 {
    vm_rss_kib_of("self")
}

/// VmRSS of process `pid` (or "self") in KiB.
fn vm_rss_kib_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ----- load generator -------------------------------------------------------------------------

/// xorshift64*: fast enough not to show up, good enough for random FIND_NODE targets.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill32(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// An encoded request with its tid (and target) patched in place per send.
struct Template {
    bytes: Vec<u8>,
    /// Offset of the 32-byte FIND_NODE or LOOKUP target, if any.
    target_at: Option<usize>,
}

impl Template {
    /// The template of `cmd`; ANNOUNCE requests come from an [`AnnounceFeed`] instead (its
    /// template is a LOOKUP, overwritten before every send).
    fn new(cmd: Cmd, to: SocketAddrV4) -> Template {
        let (internal, command, target) = match cmd {
            Cmd::Ping => (true, PING, None),
            Cmd::FindNode => (true, FIND_NODE, Some([0u8; 32])),
            Cmd::Lookup | Cmd::Announce => (false, LOOKUP, Some([0u8; 32])),
        };
        let req = Request {
            tid: 0,
            to,
            id: None,
            token: None,
            internal,
            command,
            target,
            value: None,
        };
        let mut bytes = Vec::new();
        req.encode(&mut bytes);
        let target_at = target.map(|_| bytes.len() - 32);
        Template { bytes, target_at }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct GenCounts {
    /// Replies received inside the measurement window.
    replies: u64,
    /// Requests given up on (no reply within `LOSS_TIMEOUT`), whole run.
    lost: u64,
    /// Sampled replies that decoded, and the closer nodes and records they carried.
    sampled: u64,
    closer: u64,
    records: u64,
    malformed: u64,
    /// Error replies (an ANNOUNCE whose token expired), whole run; not counted as replies.
    errors: u64,
}

impl GenCounts {
    fn add(&mut self, o: GenCounts) {
        self.replies += o.replies;
        self.lost += o.lost;
        self.sampled += o.sampled;
        self.closer += o.closer;
        self.records += o.records;
        self.malformed += o.malformed;
        self.errors += o.errors;
    }
}

/// What a generator socket sends.
#[derive(Clone)]
enum Load {
    Ping,
    FindNode,
    /// LOOKUPs of random ones of these topics.
    Lookup(Arc<Vec<[u8; 32]>>),
    /// The current pool of signed ANNOUNCEs, in turn.
    Announce(Arc<AnnounceFeed>),
}

impl Load {
    fn cmd(&self) -> Cmd {
        match self {
            Load::Ping => Cmd::Ping,
            Load::FindNode => Cmd::FindNode,
            Load::Lookup(_) => Cmd::Lookup,
            Load::Announce(_) => Cmd::Announce,
        }
    }
}

/// Key pairs signing the ANNOUNCE pools; a pool is `pool / ANNOUNCE_KEYS` new topics times
/// these key pairs, so every announce of a pool (and of every later pool) is a new record.
const ANNOUNCE_KEYS: usize = 32;
/// Topic space of the ANNOUNCE pools (the LOOKUP topics are space 1, the records test's 3).
const ANNOUNCE_SPACE: u64 = 2;
/// Re-sign a pool for a new token once the token is this old (it is valid for at least 7.5 s).
const REFRESH_AFTER: Duration = Duration::from_millis(6_400);

/// ANNOUNCE requests signed for the current token, swapped when the token is renewed.
struct AnnounceFeed {
    target: SocketAddrV4,
    keys: Arc<Vec<KeyPair>>,
    topics_per_pool: usize,
    sign_threads: usize,
    /// The next unused topic index (shared by all runs, so pools never repeat a record).
    next_topic: Arc<AtomicU64>,
    /// Bumped on every swap; generator threads reload the pool when it changes.
    epoch: AtomicU64,
    pool: Mutex<(Arc<Vec<Vec<u8>>>, TokenInfo)>,
}

impl AnnounceFeed {
    /// Fetches a token and signs the first pool (outside any measured window).
    fn new(
        target: SocketAddrV4,
        keys: Arc<Vec<KeyPair>>,
        opts: &Opts,
        next_topic: Arc<AtomicU64>,
    ) -> AnnounceFeed {
        let topics_per_pool = (opts.announce_pool / keys.len()).max(1);
        let (pool, tok) = Self::sign(
            target,
            &keys,
            topics_per_pool,
            opts.sign_threads,
            &next_topic,
        );
        AnnounceFeed {
            target,
            keys,
            topics_per_pool,
            sign_threads: opts.sign_threads,
            next_topic,
            epoch: AtomicU64::new(0),
            pool: Mutex::new((Arc::new(pool), tok)),
        }
    }

    fn sign(
        target: SocketAddrV4,
        keys: &[KeyPair],
        topics: usize,
        threads: usize,
        next_topic: &AtomicU64,
    ) -> (Vec<Vec<u8>>, TokenInfo) {
        let tok = bu::fetch_token(target)
            .unwrap_or_else(|e| panic!("ANNOUNCE: no token from {target}: {e}"));
        let first = next_topic.fetch_add(topics as u64, Ordering::Relaxed);
        let jobs = bu::jobs(ANNOUNCE_SPACE, first, topics, keys.len());
        (bu::sign_all(target, &tok, &jobs, keys, threads), tok)
    }

    fn token_age(&self) -> Duration {
        self.pool.lock().expect("pool lock").1.age()
    }

    /// Fetches a new token and swaps in a pool signed for it.
    fn refresh(&self) {
        let (pool, tok) = Self::sign(
            self.target,
            &self.keys,
            self.topics_per_pool,
            self.sign_threads,
            &self.next_topic,
        );
        *self.pool.lock().expect("pool lock") = (Arc::new(pool), tok);
        self.epoch.fetch_add(1, Ordering::Release);
    }

    fn current(&self) -> (u64, Arc<Vec<Vec<u8>>>) {
        let epoch = self.epoch.load(Ordering::Acquire);
        (epoch, self.pool.lock().expect("pool lock").0.clone())
    }
}

const LOSS_TIMEOUT: Duration = Duration::from_millis(250);

/// One generator socket: a blocking loop that keeps `window` requests outstanding until `end`,
/// counting replies received in `[start, end)`.
fn generator_thread(
    target: SocketAddrV4,
    load: Load,
    window: usize,
    seed: u64,
    barrier: Arc<Barrier>,
    (start, end): (Instant, Instant),
) -> GenCounts {
    let sock = UdpSocket::bind((LOCALHOST, 0)).expect("bind generator socket");
    sock.connect(target).expect("connect generator socket");
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("read timeout");
    let cmd = load.cmd();
    let mut tpl = Template::new(cmd, target);
    let mut rng = XorShift(seed | 1);
    let (mut epoch, mut pool) = match &load {
        Load::Announce(feed) => feed.current(),
        _ => (0, Arc::new(Vec::new())),
    };
    let mut next_announce = rng.next() as usize;
    // Per tid: the send time (ns since `origin`) + 1, or 0 when free.
    let mut slots = vec![0u64; 1 << 16];
    let mut order: VecDeque<(u16, u64)> = VecDeque::with_capacity(window * 2);
    let mut outstanding = 0usize;
    let mut tid = (seed >> 16) as u16;
    let mut counts = GenCounts::default();
    let mut buf = [0u8; 2048];
    let origin = Instant::now();
    barrier.wait();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let now_ns = (now - origin).as_nanos() as u64 + 1;
        // Give up on requests that got no answer (a full socket buffer dropped them).
        while let Some(&(t, sent)) = order.front() {
            if slots[t as usize] != sent {
                order.pop_front(); // answered
            } else if now_ns.saturating_sub(sent) > LOSS_TIMEOUT.as_nanos() as u64 {
                order.pop_front();
                slots[t as usize] = 0;
                outstanding -= 1;
                counts.lost += 1;
            } else {
                break;
            }
        }
        while outstanding < window {
            // Skip tids still in use (only after a wrap with lost requests around).
            while slots[tid as usize] != 0 {
                tid = tid.wrapping_add(1);
            }
            match &load {
                Load::Ping => {}
                Load::FindNode => {
                    if let Some(at) = tpl.target_at {
                        rng.fill32(&mut tpl.bytes[at..at + 32]);
                    }
                }
                Load::Lookup(topics) => {
                    let t = &topics[(rng.next() % topics.len() as u64) as usize];
                    if let Some(at) = tpl.target_at {
                        tpl.bytes[at..at + 32].copy_from_slice(t);
                    }
                }
                Load::Announce(feed) => {
                    if feed.epoch.load(Ordering::Acquire) != epoch {
                        (epoch, pool) = feed.current();
                    }
                    next_announce = next_announce.wrapping_add(1);
                    tpl.bytes.clear();
                    tpl.bytes
                        .extend_from_slice(&pool[next_announce % pool.len()]);
                }
            }
            tpl.bytes[2..4].copy_from_slice(&tid.to_le_bytes());
            match sock.send(&tpl.bytes) {
                Ok(_) => {
                    slots[tid as usize] = now_ns;
                    order.push_back((tid, now_ns));
                    outstanding += 1;
                    tid = tid.wrapping_add(1);
                }
                Err(_) => break, // e.g. ECONNREFUSED from an earlier ICMP error; retry later
            }
        }
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => continue, // timeout or ICMP error
        };
        if n < 4 || buf[0] != RESPONSE_ID {
            counts.malformed += 1;
            continue;
        }
        let t = u16::from_le_bytes([buf[2], buf[3]]);
        if slots[t as usize] == 0 {
            continue; // late reply to a request given up on
        }
        slots[t as usize] = 0;
        outstanding -= 1;
        if cmd == Cmd::Announce && bu::is_error_reply(&buf[..n]) {
            counts.errors += 1;
            continue;
        }
        let at = Instant::now();
        if at >= start && at < end {
            counts.replies += 1;
            if counts.replies % 1024 == 1 {
                match Response::decode(&buf[..n]) {
                    Ok(r) => {
                        counts.sampled += 1;
                        counts.closer += r.closer_nodes.len() as u64;
                        counts.records += bu::records_in_reply(&buf[..n]) as u64;
                    }
                    Err(_) => counts.malformed += 1,
                }
            }
        }
    }
    counts
}

#[derive(Clone, Copy, Debug)]
struct RunResult {
    rate: f64,
    target_cpu_us: f64,
    /// The user-space part of `target_cpu_us` (the rest is kernel time).
    target_user_us: f64,
    target_cpu_share: f64,
    gen_cpu_us: f64,
    counts: GenCounts,
    /// ANNOUNCE pools re-signed during the run (0: all signing happened before it).
    refreshes: u32,
}

/// What the benchmark needs to build a run's load.
struct LoadSource {
    lookup_topics: Arc<Vec<[u8; 32]>>,
    announce_keys: Arc<Vec<KeyPair>>,
    next_announce_topic: Arc<AtomicU64>,
}

/// One measurement: warm-up, then `duration` of load; the target's CPU over the window.
fn measure(
    target: SocketAddrV4,
    pid: u32,
    cmd: Cmd,
    src: &LoadSource,
    opts: &Opts,
    tck: u64,
) -> RunResult {
    let load = match cmd {
        Cmd::Ping => Load::Ping,
        Cmd::FindNode => Load::FindNode,
        Cmd::Lookup => Load::Lookup(src.lookup_topics.clone()),
        Cmd::Announce => Load::Announce(Arc::new(AnnounceFeed::new(
            target,
            src.announce_keys.clone(),
            opts,
            src.next_announce_topic.clone(),
        ))),
    };
    let barrier = Arc::new(Barrier::new(opts.sockets + 1));
    let t0 = Instant::now() + Duration::from_millis(50);
    let start = t0 + opts.warmup;
    let end = start + opts.duration;
    let handles: Vec<_> = (0..opts.sockets)
        .map(|i| {
            let barrier = barrier.clone();
            let window = opts.window;
            let seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1) ^ now_seed();
            let load = load.clone();
            std::thread::spawn(move || {
                generator_thread(target, load, window, seed, barrier, (start, end))
            })
        })
        .collect();
    // Renews the ANNOUNCE token before it expires (only inside the window for long runs).
    let refresher = match &load {
        Load::Announce(feed) => {
            let feed = feed.clone();
            Some(std::thread::spawn(move || {
                let mut n = 0u32;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        return n;
                    }
                    let age = feed.token_age();
                    if age >= REFRESH_AFTER {
                        feed.refresh();
                        n += 1;
                    } else {
                        std::thread::sleep((REFRESH_AFTER - age).min(end - now));
                    }
                }
            }))
        }
        _ => None,
    };
    barrier.wait();
    let pid = pid.to_string();
    sleep_until(start);
    let (c0, g0, w0) = (cpu_ticks(&pid), cpu_ticks("self"), Instant::now());
    sleep_until(end);
    let (c1, g1, w1) = (cpu_ticks(&pid), cpu_ticks("self"), Instant::now());
    let mut counts = GenCounts::default();
    for h in handles {
        counts.add(h.join().expect("generator thread"));
    }
    let refreshes = refresher.map_or(0, |h| h.join().expect("refresher thread"));
    // Let the answers still in flight arrive and be dropped before the next run.
    std::thread::sleep(Duration::from_millis(300));
    let secs = opts.duration.as_secs_f64();
    let replies = counts.replies.max(1) as f64;
    let to_us = |ticks: u64| ticks as f64 * 1e6 / tck as f64;
    let target_ticks = (c1.0 + c1.1) - (c0.0 + c0.1);
    RunResult {
        rate: counts.replies as f64 / secs,
        target_cpu_us: to_us(target_ticks) / replies,
        target_user_us: to_us(c1.0 - c0.0) / replies,
        target_cpu_share: to_us(target_ticks) / 1e6 / (w1 - w0).as_secs_f64(),
        gen_cpu_us: to_us((g1.0 + g1.1) - (g0.0 + g0.1)) / replies,
        counts,
        refreshes,
    }
}

fn now_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Starts `n` persistent Rust nodes bootstrapping from `target` so they enter its table, and
/// checks (with one FIND_NODE from a plain socket) how many closer nodes it now returns.
fn fill_table(target: SocketAddrV4, n: usize) -> (Vec<MioNode>, usize) {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = Config::new(vec![target]);
        c.host = LOCALHOST;
        c.port = 0;
        c.persistence = Persistence::Persistent;
        c.firewalled = false;
        nodes.push(MioNode::spawn(c).expect("spawn filler node"));
    }
    for node in &nodes {
        node.wait_bootstrapped().expect("filler node bootstraps");
    }
    let want = n.min(20);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut closer = 0;
    while Instant::now() < deadline {
        closer = probe_find_node(target);
        if closer >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    (nodes, closer)
}

fn probe_find_node(target: SocketAddrV4) -> usize {
    let sock = UdpSocket::bind((LOCALHOST, 0)).expect("bind probe");
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut tpl = Template::new(Cmd::FindNode, target);
    XorShift(now_seed() | 1).fill32(&mut tpl.bytes[tpl.target_at.expect("target")..]);
    tpl.bytes[2..4].copy_from_slice(&0x4242u16.to_le_bytes());
    if sock.send_to(&tpl.bytes, target).is_err() {
        return 0;
    }
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, SocketAddr::V4(from))) if from == target => Response::decode(&buf[..n])
            .map(|r| r.closer_nodes.len())
            .unwrap_or(0),
        _ => 0,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Row {
    target: Target,
    cmd: Cmd,
    runs: Vec<RunResult>,
    closer_at_start: usize,
}

impl Row {
    fn rate(&self) -> f64 {
        median(self.runs.iter().map(|r| r.rate).collect())
    }
    fn cpu(&self) -> f64 {
        median(self.runs.iter().map(|r| r.target_cpu_us).collect())
    }
    fn user(&self) -> f64 {
        median(self.runs.iter().map(|r| r.target_user_us).collect())
    }
    fn share(&self) -> f64 {
        median(self.runs.iter().map(|r| r.target_cpu_share).collect())
    }
    fn gen_cpu(&self) -> f64 {
        median(self.runs.iter().map(|r| r.gen_cpu_us).collect())
    }
    fn lost(&self) -> u64 {
        self.runs.iter().map(|r| r.counts.lost).sum()
    }
    fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.counts.errors).sum()
    }
    fn refreshes(&self) -> u32 {
        self.runs.iter().map(|r| r.refreshes).sum()
    }
    fn per_sampled(&self, f: impl Fn(&GenCounts) -> u64) -> f64 {
        let (s, c) = self
            .runs
            .iter()
            .fold((0, 0), |(s, c), r| (s + r.counts.sampled, c + f(&r.counts)));
        if s == 0 {
            0.0
        } else {
            c as f64 / s as f64
        }
    }
    fn closer(&self) -> f64 {
        self.per_sampled(|c| c.closer)
    }
    fn records(&self) -> f64 {
        self.per_sampled(|c| c.records)
    }
}

/// Announces `--records-per-topic` records on each LOOKUP topic to `target`, and checks with
/// one LOOKUP how many records a reply then carries.
fn populate_lookup_topics(target: SocketAddrV4, keys: &[KeyPair], opts: &Opts) -> usize {
    let jobs = bu::jobs(1, 0, opts.lookup_topics, opts.records_per_topic);
    let bulk = BulkOpts {
        sign_threads: opts.sign_threads,
        ..BulkOpts::default()
    };
    let r = bu::bulk_announce(target, &jobs, keys, bulk, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("populating the LOOKUP topics: {e}"));
    eprintln!(
        "{target}: {} announces on {} LOOKUP topics stored in {:.1} s ({} tokens, {:.1} s signing, {} re-sent, {} errors)",
        r.acked, opts.lookup_topics, r.secs, r.tokens, r.sign_secs, r.resent, r.errors
    );
    let sock = UdpSocket::bind((LOCALHOST, 0)).expect("bind probe");
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let req = bu::lookup_request(0x4243, target, &bu::topic(1, 0));
    let mut buf = [0u8; 2048];
    if sock.send_to(&req, target).is_err() {
        return 0;
    }
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => bu::records_in_reply(&buf[..n]),
        Err(_) => 0,
    }
}

fn rate_benchmark(opts: &Opts) -> String {
    let tck = clock_ticks_per_sec();
    let mut live = Vec::new();
    for &t in &opts.targets {
        let (guard, pid, addr) = start_target(t, opts);
        let (fillers, closer) =
            if matches!(t, Target::Echo | Target::EchoBatch | Target::Attached(..)) {
                (Vec::new(), 0)
            } else {
                let (f, c) = fill_table(addr, opts.fill);
                eprintln!(
                    "{}: {} filler nodes joined; FIND_NODE returns {c} closer nodes",
                    t.name(),
                    f.len()
                );
                (f, c)
            };
        live.push((t, guard, pid, addr, fillers, closer));
    }
    let keys = Arc::new(bu::key_pairs(ANNOUNCE_KEYS.max(opts.records_per_topic)));
    if opts.commands.contains(&Cmd::Lookup) {
        for (t, _, _, addr, _, _) in &live {
            if Cmd::Lookup.applies_to(*t) {
                let n = populate_lookup_topics(*addr, &keys, opts);
                eprintln!("{}: a LOOKUP reply carries {n} records", t.name());
            }
        }
    }
    let src = LoadSource {
        lookup_topics: Arc::new(
            (0..opts.lookup_topics as u64)
                .map(|i| bu::topic(1, i))
                .collect(),
        ),
        announce_keys: Arc::new(keys[..ANNOUNCE_KEYS].to_vec()),
        next_announce_topic: Arc::new(AtomicU64::new(0)),
    };
    let mut rows: Vec<Row> = Vec::new();
    for &cmd in &opts.commands {
        for (t, _, _, _, _, closer) in &live {
            if !cmd.applies_to(*t) {
                continue;
            }
            rows.push(Row {
                target: *t,
                cmd,
                runs: Vec::new(),
                closer_at_start: *closer,
            });
        }
    }
    // Interleave targets within each run so background noise hits them alike.
    for run in 0..opts.runs {
        for &cmd in &opts.commands {
            for (t, _, pid, addr, _, _) in &live {
                if !cmd.applies_to(*t) {
                    continue;
                }
                let r = measure(*addr, *pid, cmd, &src, opts, tck);
                eprintln!(
                    "run {}/{} {:>4} {:<9} {:>9.0} replies/s  target {:>6.2} µs/req (user {:>6.2}; {:>3.0}% CPU)  generator {:>5.2} µs/req  lost {}  errors {}  token refreshes {}",
                    run + 1,
                    opts.runs,
                    t.name(),
                    cmd.name(),
                    r.rate,
                    r.target_cpu_us,
                    r.target_user_us,
                    r.target_cpu_share * 100.0,
                    r.gen_cpu_us,
                    r.counts.lost,
                    r.counts.errors,
                    r.refreshes
                );
                let row = rows
                    .iter_mut()
                    .find(|row| row.target == *t && row.cmd == cmd)
                    .expect("row");
                row.runs.push(r);
            }
        }
    }
    drop(live);
    report(&rows, opts, tck)
}

fn report(rows: &[Row], opts: &Opts, tck: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Median of {} runs of {:.1} s (after {:.1} s warm-up); {} generator sockets x {} outstanding; CLK_TCK {tck}.\n",
        opts.runs,
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.sockets,
        opts.window
    );
    let _ = writeln!(
        s,
        "| target | request | replies/s | target CPU µs/request | of which user | target CPU | generator CPU µs/request | closer nodes/reply | records/reply | lost | errors |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let records = if r.cmd == Cmd::Lookup {
            format!("{:.1}", r.records())
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0}% | {:.2} | {:.1} | {records} | {} | {} |",
            r.target.name(),
            r.cmd.name(),
            r.rate(),
            r.cpu(),
            r.user(),
            r.share() * 100.0,
            r.gen_cpu(),
            r.closer(),
            r.lost(),
            r.errors()
        );
    }
    if opts.commands.contains(&Cmd::Lookup) {
        let _ = writeln!(
            s,
            "\nLOOKUP: {} topics with {} stored records each (3 relay addresses per record), \
             a random one per request.",
            opts.lookup_topics, opts.records_per_topic
        );
    }
    if opts.commands.contains(&Cmd::Announce) {
        let refreshes: u32 = rows
            .iter()
            .filter(|r| r.cmd == Cmd::Announce)
            .map(Row::refreshes)
            .sum();
        let _ = writeln!(
            s,
            "{}ANNOUNCE: pools of {} signed announces ({} new topics x {ANNOUNCE_KEYS} key \
             pairs) per token, signed before each run; {refreshes} pools re-signed inside the \
             measured windows.",
            if opts.commands.contains(&Cmd::Lookup) {
                ""
            } else {
                "\n"
            },
            (opts.announce_pool / ANNOUNCE_KEYS) * ANNOUNCE_KEYS,
            opts.announce_pool / ANNOUNCE_KEYS
        );
    }
    let find = |t: Target, c: Cmd| rows.iter().find(|r| r.target == t && r.cmd == c);
    let mut verdicts = String::new();
    for &cmd in &opts.commands {
        let (Some(rust), Some(js)) = (find(Target::Rust, cmd), find(Target::Js, cmd)) else {
            continue;
        };
        let echo = find(Target::Echo, cmd);
        let rate_ratio = rust.rate() / js.rate();
        let cpu_ratio = rust.cpu() / js.cpu();
        let of_echo = echo.map(|e| rust.rate() / e.rate());
        let cpu_ok = cpu_ratio <= 0.2;
        let rate_ok = rate_ratio >= 2.0 || of_echo.is_some_and(|f| f >= 0.9);
        // The goals (CPU <= 1/5 of JS; 2x JS or the echo ceiling) were set for PING/FIND_NODE.
        let goal = |ok: bool| match cmd {
            Cmd::Lookup | Cmd::Announce => "-",
            _ if ok => "yes",
            _ => "NO",
        };
        let _ = writeln!(
            verdicts,
            "| {} | {:.2}x | {:.3} (1/{:.1}) | {} | {} | {} |",
            cmd.name(),
            rate_ratio,
            cpu_ratio,
            1.0 / cpu_ratio,
            of_echo.map_or("-".to_string(), |f| format!("{:.0}%", f * 100.0)),
            goal(cpu_ok),
            goal(rate_ok),
        );
        if cmd == opts.commands[0] && (rust.closer_at_start < 20 || js.closer_at_start < 20) {
            let _ = writeln!(
                s,
                "\nNote: before the runs FIND_NODE returned {} (rust) and {} (js) closer nodes.",
                rust.closer_at_start, js.closer_at_start
            );
        }
    }
    if !verdicts.is_empty() {
        let _ = writeln!(
            s,
            "\n| request | rust/js replies/s | rust/js CPU per request | rust rate / echo rate | CPU <= 1/5 JS | rate >= 2x JS or >= 90% of echo |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|:---:|:---:|");
        s.push_str(&verdicts);
    }
    s
}

// ----- memory ---------------------------------------------------------------------------------

mod memory {
    //! Memory of many `hyperdht_proto::Node`s running in the deterministic simulator
    //! (`hyperdht_tests::sim`): 3 bootstrap nodes and N persistent nodes joining 5 ms apart
    //! over 5-50 ms links, then one more minute of virtual time so tables, tokens and
    //! maintenance settle. Reported: live heap bytes (counted by a wrapping global allocator)
    //! and VmRSS, both as deltas from before the simulator existed, divided by N. Both include
    //! the simulator's own per-node bookkeeping (socket map, timer set, node slot); the events
    //! each node emitted are dropped before measuring.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::fmt::Write as _;
    use std::net::SocketAddrV4;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use hyperdht_proto::{Config, Persistence};
    use hyperdht_tests::sim::Sim;

    /// The system allocator, counting live bytes.
    pub struct Counting;

    static LIVE: AtomicUsize = AtomicUsize::new(0);

    // SAFETY: forwards every call to `System` unchanged; only adds bookkeeping.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc(layout);
            if !p.is_null() {
                LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            }
            p
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc_zeroed(layout);
            if !p.is_null() {
                LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = System.realloc(ptr, layout, new_size);
            if !p.is_null() {
                LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
                LIVE.fetch_add(new_size, Ordering::Relaxed);
            }
            p
        }
    }

    fn live() -> usize {
        LIVE.load(Ordering::Relaxed)
    }

    pub fn run(n: usize) -> String {
        let wall = Instant::now();
        let (heap0, rss0) = (live(), super::vm_rss_kib());
        let mut sim = Sim::new(0xbe7c_4000);
        let boots: Vec<SocketAddrV4> = (0..3)
            .map(|_| SocketAddrV4::new(sim.alloc_host(), 49737))
            .collect();
        for (i, addr) in boots.iter().enumerate() {
            let mut cfg = Config::bootstrapper(*addr);
            cfg.bootstrap = boots[..i].to_vec();
            sim.add_node(cfg);
            sim.run_for(Duration::from_millis(500));
        }
        let mut peers = Vec::with_capacity(n);
        for i in 0..n {
            let mut cfg = Config::new(boots.clone());
            cfg.persistence = Persistence::Persistent;
            peers.push(sim.add_node(cfg));
            sim.run_for(Duration::from_millis(5));
            if i % 1000 == 999 {
                drop_events(&mut sim);
                eprintln!(
                    "memory: {} nodes added ({:.0} s wall, {} MiB live heap)",
                    i + 1,
                    wall.elapsed().as_secs_f64(),
                    (live() - heap0) >> 20
                );
            }
        }
        sim.run_for(Duration::from_secs(60));
        drop_events(&mut sim);
        let (heap1, rss1) = (live(), super::vm_rss_kib());
        let boot_ok = peers
            .iter()
            .filter(|&&p| sim.node(p).is_bootstrapped())
            .count();
        let persistent = peers
            .iter()
            .filter(|&&p| sim.node(p).id().is_some())
            .count();
        let table: usize = peers.iter().map(|&p| sim.node(p).table().len()).sum();
        let nodes = sim.len();
        let stats = sim.stats();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{nodes} nodes ({n} persistent peers joining 5 ms apart + 3 bootstrap nodes) in the \
             deterministic simulator, {:.0} s of virtual time, built in {:.0} s wall time; \
             {boot_ok} peers bootstrapped, {persistent} persistent, {:.1} routing-table entries \
             per peer on average, {} datagrams delivered.\n",
            sim.now().as_millis() as f64 / 1000.0,
            wall.elapsed().as_secs_f64(),
            table as f64 / n.max(1) as f64,
            stats.delivered,
        );
        let per = |bytes: f64| bytes / nodes as f64;
        let heap = heap1.saturating_sub(heap0) as f64;
        let rss = rss1.saturating_sub(rss0) as f64 * 1024.0;
        let _ = writeln!(s, "| measure | total | per node |");
        let _ = writeln!(s, "|---|---:|---:|");
        let _ = writeln!(
            s,
            "| live heap (counting allocator) | {:.1} MiB | {:.1} KiB |",
            heap / 1048576.0,
            per(heap) / 1024.0
        );
        let _ = writeln!(
            s,
            "| resident set (VmRSS delta) | {:.1} MiB | {:.1} KiB |",
            rss / 1048576.0,
            per(rss) / 1024.0
        );
        let _ = writeln!(
            s,
            "| `size_of::<Node>()` (inline part only) | | {} B |",
            std::mem::size_of::<hyperdht_proto::Node>()
        );
        let _ = writeln!(
            s,
            "| one fresh `Node` (sockets bound, empty table, bootstrap under way) | | {:.1} KiB |",
            fresh_node_heap() as f64 / 1024.0
        );
        drop(sim);
        s
    }

    /// Live heap of one new node whose two sockets are bound (it has queued its bootstrap).
    fn fresh_node_heap() -> usize {
        let before = live();
        let mut cfg = Config::new(vec![SocketAddrV4::new([10, 0, 0, 1].into(), 49737)]);
        cfg.persistence = Persistence::Persistent;
        let now = hyperdht_proto::Timestamp::ZERO;
        let mut node = hyperdht_proto::Node::new(cfg, [3; 32], now);
        let mut port = 40000;
        while let Some(op) = node.poll_socket_op() {
            if let hyperdht_proto::SocketOp::Bind { socket, .. } = op {
                port += 1;
                node.handle_socket_bound(now, socket, ([10, 0, 0, 2], port).into());
            }
        }
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
        let after = live();
        drop(node);
        after.saturating_sub(before)
    }

    /// 100,000 (`n`) records stored into one `Node` in-process, and what LOOKUP and ANNOUNCE
    /// cost there (user space only: no syscalls).
    pub struct InProcess {
        pub acked: usize,
        pub stored: usize,
        pub heap: usize,
        pub rss: u64,
        pub announce_us: f64,
        pub verify_us: f64,
        pub lookup_us: f64,
        pub lookup_records: f64,
        /// LOOKUP of one topic holding [`BIG_TOPIC`] records.
        pub big_lookup_us: f64,
        pub sign_secs: f64,
    }

    /// Records on the one big topic of the in-process LOOKUP cost measurement.
    pub const BIG_TOPIC: usize = 10_000;

    pub fn records_in_process(n: usize, topics: usize, threads: usize) -> InProcess {
        use hyperdht_proto::dht::keys;
        use hyperdht_tests::bench_util as bu;
        let addr = SocketAddrV4::new(super::LOCALHOST, 49737);
        let client = SocketAddrV4::new(super::LOCALHOST, 50000);
        let mut node = bu::LocalNode::bootstrapper(addr);
        let tok = node
            .token(client)
            .expect("a token from the in-process node");
        let per_topic = n.div_ceil(topics);
        let keys = bu::key_pairs(per_topic);
        let mut jobs = bu::jobs(3, 0, topics, per_topic);
        jobs.truncate(n);
        let t = Instant::now();
        let reqs = bu::sign_all(addr, &tok, &jobs, &keys, threads);
        let sign_secs = t.elapsed().as_secs_f64();
        // What the node checks for the first announces, to time the signature check alone
        // interleaved with the feeding, so both see the same machine load.
        let ns = keys::namespace(keys::command::ANNOUNCE);
        let checks: Vec<([u8; 32], [u8; 64], [u8; 64])> = jobs
            .iter()
            .take(VERIFY_BATCH)
            .map(|j| {
                let key = &keys[j.key];
                let peer = bu::peer(key, j.key as u64);
                let m =
                    keys::announce_signable(&ns, &j.topic, &tok.node_id, &tok.token, &peer, None);
                (peer.public_key, m, key.sign(&m))
            })
            .collect();
        let (heap0, rss0) = (live(), super::vm_rss_kib());
        // Fastest batch of each (µs per call): the least disturbed by the machine's other work.
        let (mut feed, mut verify) = (f64::INFINITY, f64::INFINITY);
        let mut acked = 0;
        for batch in reqs.chunks(VERIFY_BATCH) {
            let t = Instant::now();
            for r in batch {
                let replies = node.request(client, r);
                if replies.first().is_some_and(|x| !bu::is_error_reply(x)) {
                    acked += 1;
                }
            }
            feed = feed.min(t.elapsed().as_secs_f64() * 1e6 / batch.len() as f64);
            let t = Instant::now();
            for (pk, m, sig) in &checks {
                assert!(keys::verify(
                    std::hint::black_box(pk),
                    std::hint::black_box(m),
                    sig
                ));
            }
            verify = verify.min(t.elapsed().as_secs_f64() * 1e6 / checks.len() as f64);
        }
        let (heap1, rss1) = (live(), super::vm_rss_kib());
        drop(reqs);
        let stored = node.node().stored_records();
        // LOOKUPs of random stored topics (each holds `per_topic` records; a reply carries 20).
        let lookups: Vec<Vec<u8>> = (0..topics as u64)
            .map(|i| bu::lookup_request(i as u16, addr, &bu::topic(3, i)))
            .collect();
        let mut rng = super::XorShift(0x1234_5678_9abc_def1);
        let (mut sampled, mut records) = (0usize, 0usize);
        let lookup_us = best_of(5, 40_000, |i| {
            let req = &lookups[(rng.next() % lookups.len() as u64) as usize];
            let replies = node.request(client, req);
            if i % 1024 == 0 {
                sampled += 1;
                records += replies.first().map_or(0, |r| bu::records_in_reply(r));
            }
        });
        // One popular topic: does a LOOKUP's cost grow with the records stored under it?
        let big_keys = bu::key_pairs(BIG_TOPIC);
        let big = bu::sign_all(
            addr,
            &tok,
            &bu::jobs(4, 0, 1, BIG_TOPIC),
            &big_keys,
            threads,
        );
        for r in &big {
            node.request(client, r);
        }
        let req = bu::lookup_request(9, addr, &bu::topic(4, 0));
        let big_lookup_us = best_of(5, 4_000, |_| {
            std::hint::black_box(node.request(client, &req));
        });
        drop(node);
        InProcess {
            acked,
            stored,
            heap: heap1.saturating_sub(heap0),
            rss: rss1.saturating_sub(rss0) * 1024,
            announce_us: feed,
            verify_us: verify,
            lookup_us,
            lookup_records: records as f64 / sampled.max(1) as f64,
            big_lookup_us,
            sign_secs,
        }
    }

    /// Announces fed in-process per batch, and signatures checked alone after each batch.
    pub const VERIFY_BATCH: usize = 1000;

    /// The fastest of `batches` batches of `n` calls of `f`, in µs per call (the least
    /// disturbed by the other work on the machine).
    fn best_of(batches: usize, n: usize, mut f: impl FnMut(usize)) -> f64 {
        let mut best = f64::INFINITY;
        for b in 0..batches {
            let t = Instant::now();
            for i in 0..n {
                f(b * n + i);
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        best
    }

    fn drop_events(sim: &mut Sim) {
        for i in sim.indices().collect::<Vec<_>>() {
            drop(sim.take_events(i));
        }
    }
}

// ----- records --------------------------------------------------------------------------------

/// One target process's memory before and after `n` announces over UDP.
struct UdpRecords {
    target: Target,
    bulk: bu::BulkResult,
    rss0: u64,
    rss1: u64,
    /// The JS node's `stats` lines before and after (after forced GCs).
    js: Option<(JsStats, JsStats)>,
}

#[derive(Clone, Copy, Debug, Default)]
struct JsStats {
    records: i64,
    fresh: i64,
    stale: i64,
    heap_used: u64,
    external: u64,
}

impl JsStats {
    fn parse(line: &str) -> JsStats {
        let mut s = JsStats::default();
        for kv in line.split_whitespace() {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "records" => s.records = v.parse().unwrap_or(-1),
                "fresh" => s.fresh = v.parse().unwrap_or(-1),
                "stale" => s.stale = v.parse().unwrap_or(-1),
                "heapUsed" => s.heap_used = v.parse().unwrap_or(0),
                "external" => s.external = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        s
    }
}

/// Starts a fresh `target` (no filler nodes), announces `n` records to it over UDP, and reads
/// its VmRSS before and after (and, for JS, its record count and V8 heap after forced GCs).
fn records_over_udp(target: Target, n: usize, opts: &Opts) -> UdpRecords {
    let (guard, pid, addr) = start_target(target, opts);
    let mut guard = guard.expect("a started target");
    let pid = pid.to_string();
    // The first token request creates the token secrets; then let the process settle.
    bu::fetch_token(addr).unwrap_or_else(|e| panic!("{}: {e}", target.name()));
    std::thread::sleep(Duration::from_secs(1));
    let js0 = (target == Target::Js)
        .then(|| JsStats::parse(&guard.ask("stats", "stats ").expect("js stats line")));
    let rss0 = vm_rss_kib_of(&pid) * 1024;
    let per_topic = n.div_ceil(opts.record_topics);
    let keys = bu::key_pairs(per_topic);
    let mut jobs = bu::jobs(3, 0, opts.record_topics, per_topic);
    jobs.truncate(n);
    let bulk = BulkOpts {
        sign_threads: opts.sign_threads,
        ..BulkOpts::default()
    };
    let r = bu::bulk_announce(addr, &jobs, &keys, bulk, Duration::from_secs(900))
        .unwrap_or_else(|e| panic!("{}: {e}", target.name()));
    eprintln!(
        "records: {} acknowledged {} of {n} announces in {:.1} s ({} tokens, {:.1} s signing, {} re-sent, {} errors)",
        target.name(),
        r.acked,
        r.secs,
        r.tokens,
        r.sign_secs,
        r.resent,
        r.errors
    );
    std::thread::sleep(Duration::from_secs(1));
    let js1 = (target == Target::Js)
        .then(|| JsStats::parse(&guard.ask("stats", "stats ").expect("js stats line")));
    let rss1 = vm_rss_kib_of(&pid) * 1024;
    drop(guard);
    UdpRecords {
        target,
        bulk: r,
        rss0,
        rss1,
        js: js0.zip(js1),
    }
}

fn records_benchmark(opts: &Opts) -> String {
    let n = opts.records;
    let per_topic = n.div_ceil(opts.record_topics);
    eprintln!("records: {n} announces into an in-process node");
    let ip = memory::records_in_process(n, opts.record_topics, opts.sign_threads);
    eprintln!(
        "records: in-process {} acknowledged, {} stored ({:.1} s signing)",
        ip.acked, ip.stored, ip.sign_secs
    );
    let udp: Vec<UdpRecords> = opts
        .targets
        .iter()
        .filter(|t| matches!(t, Target::Rust | Target::Js))
        .map(|&t| records_over_udp(t, n, opts))
        .collect();
    let mib = |b: f64| b / 1048576.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{n} ANNOUNCEs ({} topics x {per_topic} key pairs; records of 51 bytes: a public key and 3 \
         relay addresses; no refresh, no bump), all with valid tokens and signatures.\n",
        opts.record_topics
    );
    let _ = writeln!(
        s,
        "| node | announces acknowledged | records stored | resident before | resident after | resident delta per record | heap delta per record |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| rust `Node`, in-process | {} | {} | | | {:.0} B | {:.0} B (live heap, counting allocator) |",
        ip.acked,
        ip.stored,
        ip.rss as f64 / n.max(1) as f64,
        ip.heap as f64 / n.max(1) as f64
    );
    for u in &udp {
        let per = |b: f64| b / u.bulk.acked.max(1) as f64;
        let rss_delta = u.rss1 as f64 - u.rss0 as f64;
        let (stored, heap) = match &u.js {
            Some((a, b)) => (
                format!("{} ({} fresh + {} stale)", b.records, b.fresh, b.stale),
                format!(
                    "{:.0} B (V8 heapUsed + external, after gc())",
                    per((b.heap_used + b.external) as f64 - (a.heap_used + a.external) as f64)
                ),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        let _ = writeln!(
            s,
            "| {} process, over UDP | {} | {stored} | {:.1} MiB | {:.1} MiB | {:.0} B | {heap} |",
            u.target.name(),
            u.bulk.acked,
            mib(u.rss0 as f64),
            mib(u.rss1 as f64),
            per(rss_delta),
        );
    }
    let _ = writeln!(
        s,
        "\nIn-process cost (user space only, no syscalls; one thread; the node's routing table is \
         empty, so no closer nodes): ANNOUNCE {:.1} µs (of which the Ed25519 `verify_strict` \
         {:.1} µs, timed alone between the batches of announces); LOOKUP {:.2} µs ({:.1} records \
         per reply, from topics of {per_topic} records); LOOKUP of one topic holding {} records \
         {:.2} µs. Each the fastest batch (of {} announces or 40,000 and 4,000 \
         LOOKUPs), the one least disturbed by the machine's other work.",
        ip.announce_us,
        ip.verify_us,
        ip.lookup_us,
        ip.lookup_records,
        memory::BIG_TOPIC,
        ip.big_lookup_us,
        memory::VERIFY_BATCH
    );
    for u in &udp {
        let _ = writeln!(
            s,
            "Over UDP to {}: {} announces in {:.1} s ({:.0}/s from one socket, 64 outstanding, \
             including {:.1} s of signing; {} tokens, {} re-sent, {} token errors).",
            u.target.name(),
            u.bulk.acked,
            u.bulk.secs,
            u.bulk.acked as f64 / (u.bulk.secs - u.bulk.sign_secs).max(1e-9),
            u.bulk.sign_secs,
            u.bulk.tokens,
            u.bulk.resent,
            u.bulk.errors
        );
    }
    s
}

#[global_allocator]
static ALLOC: memory::Counting = memory::Counting;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(mode @ ("--echo-server" | "--echo-server-mmsg")) = argv.first().map(String::as_str)
    {
        let port = argv
            .get(1)
            .and_then(|p| p.parse().ok())
            .expect("--echo-server PORT");
        echo_server(port, mode == "--echo-server-mmsg");
    }
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return;
    }
    let opts = match Opts::parse(&argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let mut out = String::new();
    if !opts.memory_only && !opts.records_only && !opts.targets.is_empty() {
        out.push_str("## Requests answered per second\n\n");
        out.push_str(&rate_benchmark(&opts));
    }
    if opts.records > 0 && !opts.memory_only {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("## Memory of stored records\n\n");
        out.push_str(&records_benchmark(&opts));
    }
    if opts.memory > 0 && !opts.records_only {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("## Memory of simulated nodes\n\n");
        out.push_str(&memory::run(opts.memory));
    }
    print!("{out}");
}
