//! `bench_dht`: requests answered per second by one DHT node, Rust vs Node.js, and the memory
//! of many simulated nodes. See `BENCHMARKS.md` at the workspace root for results.
//!
//! ```text
//! cargo build --release -p hyperdht-chat -p hyperdht-tests --bin hyperdht-chat --bin bench_dht
//! target/release/bench_dht            # rate benchmark (echo, rust, js) + memory
//! target/release/bench_dht --help
//! ```
//!
//! Rate: each target is a separate process bound on 127.0.0.1 whose routing table is first
//! filled by in-process Rust nodes (`hyperdht-mio`, persistent) bootstrapping from it. One load
//! generator (the same for every target) sends dht-rpc PING or FIND_NODE requests from several
//! UDP sockets, one blocking thread each, keeping a fixed window of requests outstanding per
//! socket and matching replies by tid. The target's CPU time (utime + stime of all its threads,
//! from `/proc/PID/stat`) over the measurement window, divided by the replies counted in it,
//! gives its CPU time per request.
//!
//! Targets: `echo` (this binary re-run as a trivial single-thread UDP echo server: the ceiling
//! of the kernel's loopback UDP path with this generator), `rust` (`hyperdht-chat node
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
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use hyperdht_mio::MioNode;
use hyperdht_proto::commands::{FIND_NODE, PING};
use hyperdht_proto::wire::rpc::{Request, Response, RESPONSE_ID};
use hyperdht_proto::{Config, Persistence};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

const USAGE: &str = "\
bench_dht: requests answered per second by one HyperDHT node (Rust vs Node.js), and memory

USAGE:
    bench_dht [FLAGS]

FLAGS:
    --targets LIST     Comma-separated targets among echo,rust,js (default echo,rust,js)
    --commands LIST    Comma-separated among ping,find_node (default ping,find_node)
    --duration SECS    Measured seconds per run (default 5)
    --warmup SECS      Unmeasured load before each run (default 1)
    --runs N           Runs per target and command; the median is reported (default 3)
    --sockets N        Load generator sockets, one thread each (default 4)
    --window N         Requests outstanding per socket (default 32)
    --fill N           Rust nodes that join each target's routing table first (default 30)
    --chat PATH        hyperdht-chat binary (default: next to this binary)
    --chat-alt PATH    Also measure a second hyperdht-chat build as target rust-alt (A/B)
    --node PATH        Node.js binary (default: node)
    --memory N         Also measure the resident memory of N simulated nodes (default 10000;
                       0 skips it)
    --memory-only      Only the memory measurement
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
            Target::Rust => "rust",
            Target::RustAlt => "rust-alt",
            Target::Js => "js",
            Target::Attached(..) => "attached",
        }
    }

    fn parse(s: &str) -> Result<Target, String> {
        match s {
            "echo" => Ok(Target::Echo),
            "rust" => Ok(Target::Rust),
            "js" => Ok(Target::Js),
            _ => Err(format!("unknown target {s:?} (echo, rust, js)")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Ping,
    FindNode,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Ping => "PING",
            Cmd::FindNode => "FIND_NODE",
        }
    }

    fn parse(s: &str) -> Result<Cmd, String> {
        match s {
            "ping" => Ok(Cmd::Ping),
            "find_node" => Ok(Cmd::FindNode),
            _ => Err(format!("unknown command {s:?} (ping, find_node)")),
        }
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
    chat: PathBuf,
    chat_alt: Option<PathBuf>,
    node: PathBuf,
    memory: usize,
    memory_only: bool,
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
            targets: vec![Target::Echo, Target::Rust, Target::Js],
            commands: vec![Cmd::Ping, Cmd::FindNode],
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            runs: 3,
            sockets: 4,
            window: 32,
            fill: 30,
            chat: exe_dir.join("hyperdht-chat"),
            chat_alt: None,
            node: PathBuf::from("node"),
            memory: 10_000,
            memory_only: false,
            verbose: false,
        };
        let mut it = argv.iter();
        while let Some(flag) = it.next() {
            let flag = flag.as_str();
            match flag {
                "--memory-only" => o.memory_only = true,
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
        Ok(o)
    }
}

// ----- child processes ------------------------------------------------------------------------

/// A target process; killed (and reaped) on drop, panics included.
struct ChildGuard {
    child: Child,
    what: String,
}

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.child.id()
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
    let guard = ChildGuard { child, what };
    let (tx, rx) = mpsc::channel();
    let prefix = ready_prefix.to_string();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.starts_with(&prefix) {
                let _ = tx.send(line);
                break;
            }
        }
        // Keep the pipe drained so the child never blocks on stdout.
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => eprintln!("{}: {line}", guard.what),
        Err(_) => panic!("{} did not print {ready_prefix:?} within 30 s", guard.what),
    }
    guard
}

fn start_target(target: Target, opts: &Opts) -> (Option<ChildGuard>, u32, SocketAddrV4) {
    let port = free_port();
    let addr = SocketAddrV4::new(LOCALHOST, port);
    let guard = match target {
        Target::Attached(pid, addr) => return (None, pid, addr),
        Target::Echo => {
            let exe = std::env::current_exe().expect("current_exe");
            let mut c = Command::new(exe);
            c.arg("--echo-server").arg(port.to_string());
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
            c.arg(&script).arg(port.to_string());
            c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("js"));
            spawn_target(c, format!("js node on {addr}"), "ready", opts.verbose)
        }
    };
    let pid = guard.pid();
    (Some(guard), pid, addr)
}

/// `--echo-server PORT`: answer every datagram with itself, type byte turned into a response.
/// The floor of what any single-threaded UDP server costs with this load generator.
fn echo_server(port: u16) -> ! {
    let sock = UdpSocket::bind((LOCALHOST, port)).expect("echo server bind");
    std::thread::spawn(|| {
        // Exit when the benchmark closes our stdin (or dies).
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    println!("ready {}", sock.local_addr().expect("local addr"));
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
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
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
    /// Offset of the 32-byte FIND_NODE target, if any.
    target_at: Option<usize>,
}

impl Template {
    fn new(cmd: Cmd, to: SocketAddrV4) -> Template {
        let (command, target) = match cmd {
            Cmd::Ping => (PING, None),
            Cmd::FindNode => (FIND_NODE, Some([0u8; 32])),
        };
        let req = Request {
            tid: 0,
            to,
            id: None,
            token: None,
            internal: true,
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
    /// Sampled replies that decoded, and the closer nodes they carried.
    sampled: u64,
    closer: u64,
    malformed: u64,
}

impl GenCounts {
    fn add(&mut self, o: GenCounts) {
        self.replies += o.replies;
        self.lost += o.lost;
        self.sampled += o.sampled;
        self.closer += o.closer;
        self.malformed += o.malformed;
    }
}

const LOSS_TIMEOUT: Duration = Duration::from_millis(250);

/// One generator socket: a blocking loop that keeps `window` requests outstanding until `end`,
/// counting replies received in `[start, end)`.
fn generator_thread(
    target: SocketAddrV4,
    cmd: Cmd,
    window: usize,
    seed: u64,
    barrier: Arc<Barrier>,
    (start, end): (Instant, Instant),
) -> GenCounts {
    let sock = UdpSocket::bind((LOCALHOST, 0)).expect("bind generator socket");
    sock.connect(target).expect("connect generator socket");
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("read timeout");
    let mut tpl = Template::new(cmd, target);
    let mut rng = XorShift(seed | 1);
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
            tpl.bytes[2..4].copy_from_slice(&tid.to_le_bytes());
            if let Some(at) = tpl.target_at {
                rng.fill32(&mut tpl.bytes[at..at + 32]);
            }
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
        let at = Instant::now();
        if at >= start && at < end {
            counts.replies += 1;
            if counts.replies % 1024 == 1 {
                match Response::decode(&buf[..n]) {
                    Ok(r) => {
                        counts.sampled += 1;
                        counts.closer += r.closer_nodes.len() as u64;
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
}

/// One measurement: warm-up, then `duration` of load; the target's CPU over the window.
fn measure(target: SocketAddrV4, pid: u32, cmd: Cmd, opts: &Opts, tck: u64) -> RunResult {
    let barrier = Arc::new(Barrier::new(opts.sockets + 1));
    let t0 = Instant::now() + Duration::from_millis(50);
    let start = t0 + opts.warmup;
    let end = start + opts.duration;
    let handles: Vec<_> = (0..opts.sockets)
        .map(|i| {
            let barrier = barrier.clone();
            let window = opts.window;
            let seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1) ^ now_seed();
            std::thread::spawn(move || {
                generator_thread(target, cmd, window, seed, barrier, (start, end))
            })
        })
        .collect();
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
    fn closer(&self) -> f64 {
        let (s, c) = self.runs.iter().fold((0, 0), |(s, c), r| {
            (s + r.counts.sampled, c + r.counts.closer)
        });
        if s == 0 {
            0.0
        } else {
            c as f64 / s as f64
        }
    }
}

fn rate_benchmark(opts: &Opts) -> String {
    let tck = clock_ticks_per_sec();
    let mut live = Vec::new();
    for &t in &opts.targets {
        let (guard, pid, addr) = start_target(t, opts);
        let (fillers, closer) = if matches!(t, Target::Echo | Target::Attached(..)) {
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
    let mut rows: Vec<Row> = Vec::new();
    for &cmd in &opts.commands {
        for (t, _, _, _, _, closer) in &live {
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
                let r = measure(*addr, *pid, cmd, opts, tck);
                eprintln!(
                    "run {}/{} {:>4} {:<9} {:>9.0} replies/s  target {:>5.2} µs/req (user {:>5.2}; {:>3.0}% CPU)  generator {:>5.2} µs/req  lost {}",
                    run + 1,
                    opts.runs,
                    t.name(),
                    cmd.name(),
                    r.rate,
                    r.target_cpu_us,
                    r.target_user_us,
                    r.target_cpu_share * 100.0,
                    r.gen_cpu_us,
                    r.counts.lost
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
        "| target | request | replies/s | target CPU µs/request | of which user | target CPU | generator CPU µs/request | closer nodes/reply | lost |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0}% | {:.2} | {:.1} | {} |",
            r.target.name(),
            r.cmd.name(),
            r.rate(),
            r.cpu(),
            r.user(),
            r.share() * 100.0,
            r.gen_cpu(),
            r.closer(),
            r.lost()
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
        let _ = writeln!(
            verdicts,
            "| {} | {:.2}x | {:.3} (1/{:.1}) | {} | {} | {} |",
            cmd.name(),
            rate_ratio,
            cpu_ratio,
            1.0 / cpu_ratio,
            of_echo.map_or("-".to_string(), |f| format!("{:.0}%", f * 100.0)),
            if cpu_ok { "yes" } else { "NO" },
            if rate_ok { "yes" } else { "NO" },
        );
        if rust.closer_at_start < 20 || js.closer_at_start < 20 {
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

    fn drop_events(sim: &mut Sim) {
        for i in sim.indices().collect::<Vec<_>>() {
            drop(sim.take_events(i));
        }
    }
}

#[global_allocator]
static ALLOC: memory::Counting = memory::Counting;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--echo-server") {
        let port = argv
            .get(1)
            .and_then(|p| p.parse().ok())
            .expect("--echo-server PORT");
        echo_server(port);
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
    if !opts.memory_only && !opts.targets.is_empty() {
        out.push_str("## Requests answered per second\n\n");
        out.push_str(&rate_benchmark(&opts));
    }
    if opts.memory > 0 {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("## Memory of simulated nodes\n\n");
        out.push_str(&memory::run(opts.memory));
    }
    print!("{out}");
}
