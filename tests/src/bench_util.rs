//! The hyperdht record workload of the benchmarks (`src/bin/bench_dht.rs`): deterministic key
//! pairs and topics, LOOKUP and signed ANNOUNCE requests exactly as an ephemeral client on
//! 127.0.0.1 sends them, bulk announcing over UDP within the token's lifetime, and a node driven
//! in-process.
//!
//! An ANNOUNCE carries the round-trip token the storing node gave the client's IP (it rotates
//! every 7.5 s and is accepted for 7.5 to 15 s after it was issued) and an Ed25519 signature
//! over `NS_ANNOUNCE ‖ H(target ‖ storing node id ‖ token ‖ peer record)`, so a batch of
//! announces is signed for one token and one node, and must be sent before the token expires.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use hyperdht_proto::crypto::hash_parts;
use hyperdht_proto::dht::keys::{self, command, KeyPair};
use hyperdht_proto::wire::hyperdht::{Announce, LookupReply, Peer};
use hyperdht_proto::wire::rpc::{Request, Response, RESPONSE_ID};
use hyperdht_proto::{Config, Event, Node, SocketId, SocketOp, Timestamp, Transmit};

/// Relay addresses in every benchmark peer record (hyperswarm announces its server's relay
/// addresses, up to 3; the stored record is then 51 bytes).
pub const RELAYS_PER_RECORD: usize = 3;

/// A token is accepted for at least this long after the node issued it.
pub const TOKEN_MIN_LIFETIME: Duration = Duration::from_millis(7_500);

/// Topic `i` of topic space `space` (spaces keep the workloads' topics apart).
pub fn topic(space: u64, i: u64) -> [u8; 32] {
    hash_parts(&[
        b"hyperdht-rs bench topic",
        &space.to_le_bytes(),
        &i.to_le_bytes(),
    ])
}

/// Benchmark key pair `i` (deterministic).
pub fn key_pair(i: u64) -> KeyPair {
    KeyPair::from_seed(&hash_parts(&[b"hyperdht-rs bench key", &i.to_le_bytes()]))
}

/// Key pairs `0..n`.
pub fn key_pairs(n: usize) -> Vec<KeyPair> {
    (0..n as u64).map(key_pair).collect()
}

/// The peer record announced with key pair `key`: its public key and
/// [`RELAYS_PER_RECORD`] made-up relay addresses (never contacted).
pub fn peer(key: &KeyPair, i: u64) -> Peer {
    let relay_addresses = (0..RELAYS_PER_RECORD as u64)
        .map(|r| {
            let x = (i * RELAYS_PER_RECORD as u64 + r) as u32;
            SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 | (x & 0x00ff_ffff)), 49737)
        })
        .collect();
    Peer {
        public_key: key.public_key(),
        relay_addresses,
    }
}

/// An encoded LOOKUP request (external command 3) for `topic` from an ephemeral client.
pub fn lookup_request(tid: u16, to: SocketAddrV4, topic: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    Request {
        tid,
        to,
        id: None,
        token: None,
        internal: false,
        command: command::LOOKUP,
        target: Some(*topic),
        value: None,
    }
    .encode(&mut out);
    out
}

/// What a node's LOOKUP reply tells a client: a token for its IP and the node's id.
#[derive(Clone, Copy, Debug)]
pub struct TokenInfo {
    /// The round-trip token.
    pub token: [u8; 32],
    /// The storing node's id (signed into announces).
    pub node_id: [u8; 32],
    /// When it was received.
    pub at: Instant,
}

impl TokenInfo {
    /// How long the token has been held.
    pub fn age(&self) -> Duration {
        self.at.elapsed()
    }
}

/// The token and node id of a LOOKUP (or any routed) reply, if it has both.
pub fn token_of_reply(reply: &[u8]) -> Option<TokenInfo> {
    let r = Response::decode(reply).ok()?;
    Some(TokenInfo {
        token: r.token?,
        node_id: r.id?,
        at: Instant::now(),
    })
}

/// Records carried by a LOOKUP reply (0 when it has none or does not decode).
pub fn records_in_reply(reply: &[u8]) -> usize {
    Response::decode(reply)
        .ok()
        .and_then(|r| r.value.and_then(|v| LookupReply::decode(v).ok()))
        .map_or(0, |l| l.peers.len())
}

/// An encoded ANNOUNCE request of `peer` on `topic`, signed by `key` for the storing node and
/// the token in `tok`.
pub fn announce_request(
    tid: u16,
    to: SocketAddrV4,
    tok: &TokenInfo,
    topic: &[u8; 32],
    key: &KeyPair,
    peer: Peer,
) -> Vec<u8> {
    let signable = keys::announce_signable(
        &keys::namespace(command::ANNOUNCE),
        topic,
        &tok.node_id,
        &tok.token,
        &peer,
        None,
    );
    let value = Announce {
        peer: Some(peer),
        refresh: None,
        signature: Some(key.sign(&signable)),
        bump: 0,
    }
    .to_bytes();
    let mut out = Vec::with_capacity(80 + value.len());
    Request {
        tid,
        to,
        id: None,
        token: Some(tok.token),
        internal: false,
        command: command::ANNOUNCE,
        target: Some(*topic),
        value: Some(&value),
    }
    .encode(&mut out);
    out
}

/// One record to announce: key pair `key` (an index into the key slice) on topic `topic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    /// The topic.
    pub topic: [u8; 32],
    /// Index of the key pair.
    pub key: usize,
}

/// `topics` topics of `space` starting at `first`, times key pairs `0..keys`: topic-major, so
/// consecutive jobs are different key pairs on the same topic.
pub fn jobs(space: u64, first: u64, topics: usize, keys: usize) -> Vec<Job> {
    let mut v = Vec::with_capacity(topics * keys);
    for t in 0..topics as u64 {
        let topic = topic(space, first + t);
        v.extend((0..keys).map(|key| Job { topic, key }));
    }
    v
}

/// Signs `jobs` for `tok` on `threads` threads (tid 0; the sender patches it).
pub fn sign_all(
    to: SocketAddrV4,
    tok: &TokenInfo,
    jobs: &[Job],
    keys: &[KeyPair],
    threads: usize,
) -> Vec<Vec<u8>> {
    let threads = threads.clamp(1, 64);
    let chunk = jobs.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|j| {
                            let key = &keys[j.key];
                            announce_request(0, to, tok, &j.topic, key, peer(key, j.key as u64))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    })
}

/// Sets the tid of an encoded request in place.
pub fn set_tid(req: &mut [u8], tid: u16) {
    req[2..4].copy_from_slice(&tid.to_le_bytes());
}

/// Whether an encoded response carries an error code (flag bit 8).
pub fn is_error_reply(reply: &[u8]) -> bool {
    reply.len() >= 2 && reply[1] & 8 != 0
}

/// Asks `target` for a token with a LOOKUP from a new socket (3 tries, 1 s each).
pub fn fetch_token(target: SocketAddrV4) -> io::Result<TokenInfo> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = [0u8; 2048];
    for attempt in 0..3u16 {
        let tid = 0x7000 + attempt;
        sock.send_to(&lookup_request(tid, target, &topic(0, 0)), target)?;
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            match sock.recv_from(&mut buf) {
                Ok((n, SocketAddr::V4(from))) if from == target && n >= 4 => {
                    if buf[0] == RESPONSE_ID && buf[2..4] == tid.to_le_bytes() {
                        if let Some(t) = token_of_reply(&buf[..n]) {
                            return Ok(t);
                        }
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no LOOKUP reply with a token and an id from {target}"),
    ))
}

/// Knobs of [`bulk_announce`].
#[derive(Clone, Copy, Debug)]
pub struct BulkOpts {
    /// Announces signed per token (each batch must be signed and sent within the token's
    /// guaranteed lifetime).
    pub batch: usize,
    /// Requests outstanding.
    pub window: usize,
    /// Signing threads.
    pub sign_threads: usize,
    /// Give a batch up (and re-sign what is left with a new token) once the token is this old.
    pub max_token_age: Duration,
}

impl Default for BulkOpts {
    fn default() -> Self {
        BulkOpts {
            batch: 20_000,
            window: 64,
            sign_threads: 2,
            max_token_age: Duration::from_millis(6_500),
        }
    }
}

/// What [`bulk_announce`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct BulkResult {
    /// Announces acknowledged (a node replies to an ANNOUNCE only once it stored it).
    pub acked: usize,
    /// Error replies (an expired token).
    pub errors: usize,
    /// Requests re-sent after 250 ms without reply.
    pub resent: usize,
    /// Tokens fetched (batches signed).
    pub tokens: usize,
    /// Seconds spent signing.
    pub sign_secs: f64,
    /// Seconds in total.
    pub secs: f64,
}

/// Announces every job to `target` over UDP from one 127.0.0.1 socket, in batches signed for a
/// fresh token each, re-sending unanswered requests; gives up after `deadline`.
pub fn bulk_announce(
    target: SocketAddrV4,
    jobs: &[Job],
    keys: &[KeyPair],
    opts: BulkOpts,
    deadline: Duration,
) -> io::Result<BulkResult> {
    const RESEND_AFTER: Duration = Duration::from_millis(250);
    let t0 = Instant::now();
    let mut res = BulkResult::default();
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sock.connect(target)?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut pending: VecDeque<Job> = jobs.iter().copied().collect();
    let mut buf = [0u8; 2048];
    let mut tid: u16 = 1;
    while !pending.is_empty() {
        if t0.elapsed() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "bulk announce to {target}: {} of {} acknowledged after {:.0} s",
                    res.acked,
                    jobs.len(),
                    t0.elapsed().as_secs_f64()
                ),
            ));
        }
        let tok = fetch_token(target)?;
        res.tokens += 1;
        let n = opts.batch.min(pending.len());
        let batch: Vec<Job> = pending.drain(..n).collect();
        let s0 = Instant::now();
        let mut reqs = sign_all(target, &tok, &batch, keys, opts.sign_threads);
        res.sign_secs += s0.elapsed().as_secs_f64();
        // Per tid: (index into the batch, send time).
        let mut inflight: Vec<Option<(usize, Instant)>> = vec![None; 1 << 16];
        let mut order: VecDeque<(u16, usize, Instant)> = VecDeque::new();
        let mut todo: VecDeque<usize> = (0..reqs.len()).collect();
        let mut done = vec![false; reqs.len()];
        let mut outstanding = 0usize;
        while (outstanding > 0 || !todo.is_empty()) && tok.age() < opts.max_token_age {
            let now = Instant::now();
            while let Some(&(t, i, sent)) = order.front() {
                if inflight[t as usize] != Some((i, sent)) {
                    order.pop_front();
                } else if now - sent > RESEND_AFTER {
                    order.pop_front();
                    inflight[t as usize] = None;
                    outstanding -= 1;
                    todo.push_front(i);
                    res.resent += 1;
                } else {
                    break;
                }
            }
            while outstanding < opts.window {
                let Some(i) = todo.pop_front() else { break };
                while inflight[tid as usize].is_some() {
                    tid = tid.wrapping_add(1);
                }
                set_tid(&mut reqs[i], tid);
                if sock.send(&reqs[i]).is_err() {
                    todo.push_front(i);
                    break;
                }
                inflight[tid as usize] = Some((i, now));
                order.push_back((tid, i, now));
                outstanding += 1;
                tid = tid.wrapping_add(1);
            }
            let Ok(n) = sock.recv(&mut buf) else { continue };
            if n < 4 || buf[0] != RESPONSE_ID {
                continue;
            }
            let t = u16::from_le_bytes([buf[2], buf[3]]);
            let Some((i, _)) = inflight[t as usize].take() else {
                continue;
            };
            outstanding -= 1;
            if is_error_reply(&buf[..n]) {
                res.errors += 1;
                todo.push_back(i);
            } else if !done[i] {
                done[i] = true;
                res.acked += 1;
            }
        }
        // Whatever this token did not get through goes into the next batch.
        for (i, job) in batch.into_iter().enumerate() {
            if !done[i] {
                pending.push_back(job);
            }
        }
    }
    res.secs = t0.elapsed().as_secs_f64();
    Ok(res)
}

/// A bootstrapper `Node` driven in-process: datagrams in through `handle_datagram`, replies out
/// through `poll_transmit`; the clock never moves, so tokens never rotate and nothing expires.
pub struct LocalNode {
    node: Node,
    now: Timestamp,
    /// The node's address (it is not bound anywhere).
    pub addr: SocketAddrV4,
}

impl LocalNode {
    /// A persistent first node (`Config::bootstrapper`) "bound" at `addr`.
    pub fn bootstrapper(addr: SocketAddrV4) -> LocalNode {
        let now = Timestamp::ZERO;
        let mut node = Node::new(Config::bootstrapper(addr), [0x5e; 32], now);
        let mut client_port = 40_000;
        while let Some(op) = node.poll_socket_op() {
            if let SocketOp::Bind { socket, addr: want } = op {
                let local = if socket == SocketId::SERVER {
                    addr
                } else {
                    client_port += 1;
                    SocketAddrV4::new(*want.ip(), client_port)
                };
                node.handle_socket_bound(now, socket, local.into());
            }
        }
        let mut n = LocalNode { node, now, addr };
        n.drain();
        n
    }

    /// Drops queued transmits and events.
    fn drain(&mut self) {
        while self.node.poll_transmit().is_some() {}
        while self.node.poll_event().is_some() {}
    }

    /// Delivers `bytes` from `from` to the server socket; returns the payloads sent back to
    /// `from` (other transmits and events are dropped).
    pub fn request(&mut self, from: SocketAddrV4, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.node
            .handle_datagram(self.now, SocketId::SERVER, from.into(), bytes);
        let mut out = Vec::new();
        while let Some(t) = self.node.poll_transmit() {
            if t.dst == SocketAddr::V4(from) {
                out.push(t.payload);
            }
        }
        while self.node.poll_event().is_some() {}
        out
    }

    /// A token for `from`'s IP (from a LOOKUP reply).
    pub fn token(&mut self, from: SocketAddrV4) -> Option<TokenInfo> {
        let replies = self.request(from, &lookup_request(1, self.addr, &topic(0, 0)));
        replies.first().and_then(|r| token_of_reply(r))
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }
}

// ----- processes: CPU time, memory, children (bench_connect) ---------------------------------

/// Kernel clock ticks per second (`getconf CLK_TCK`, 100 if that fails).
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// (utime, stime) of a whole process in clock ticks: all its threads, exited ones included
/// (`/proc/PID/stat`); (0, 0) once it is gone.
pub fn cpu_ticks(pid: u32) -> (u64, u64) {
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

/// Nanoseconds on CPU of a process's live threads (`/proc/PID/task/*/schedstat`, first field):
/// nanosecond resolution, but a thread that exits takes its time with it (use [`cpu_ticks`]
/// across thread exits).
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`, `RssAnon`, ...); 0 if absent.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident set of a process in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Threads of a process.
pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// The median (the mean of the middle two for an even count; 0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
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

/// The `p`-th percentile (nearest rank) of `v`; 0 for none.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A free UDP port on 127.0.0.1 (bound and released: a small race we accept).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Datagrams the kernel dropped on the UDP sockets a process holds (full receive buffer),
/// summed over its sockets (`/proc/net/udp` and `udp6`, matched by inode); 0 if unknown.
pub fn udp_drops(pid: u32) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: std::collections::HashSet<String> = fds
        .flatten()
        .filter_map(|f| std::fs::read_link(f.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // ... uid timeout inode ref pointer drops
                    (f.len() >= 13 && inodes.contains(f[9])).then(|| f[12].parse::<u64>().ok())?
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

/// A `Command` for `program` that dies with this process: on Linux, when `setpriv` (util-linux)
/// is installed, it runs as `setpriv --pdeathsig KILL -- program`, which then `exec`s the
/// program (same pid), so a child is killed even when the benchmark is killed by a signal.
/// The death signal is tied to the spawning *thread*: spawn from the main thread.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if setpriv.exists() {
        let mut c = std::process::Command::new(setpriv);
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

/// A child process of a benchmark: killed and reaped on drop (panics included).
pub struct ChildGuard {
    /// The process.
    pub child: std::process::Child,
    /// What it is (for messages).
    pub what: String,
}

impl ChildGuard {
    /// Spawns `cmd` with piped stdin and stdout; stderr is inherited when `verbose`, else
    /// discarded.
    pub fn spawn(
        mut cmd: std::process::Command,
        what: impl Into<String>,
        verbose: bool,
    ) -> io::Result<ChildGuard> {
        use std::process::Stdio;
        let what = what.into();
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if verbose {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {what}: {e}")))?;
        Ok(ChildGuard { child, what })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Forwards its stdout, line by line, into a channel (a thread keeps the pipe drained until
    /// the child closes it).
    pub fn lines(&mut self) -> std::sync::mpsc::Receiver<String> {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = self.child.stdout.take() {
            std::thread::spawn(move || {
                // Keeps reading after the receiver is gone: the pipe must never fill up (nor
                // close under a child that still prints).
                for line in io::BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
        }
        rx
    }

    /// Writes `line` and a newline to its stdin.
    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        use std::io::Write;
        let stdin = self
            .child
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("stdin closed"))?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Waits (at most `timeout`) for a line starting with `prefix`; the lines before it are
/// dropped.
pub fn wait_line(
    lines: &std::sync::mpsc::Receiver<String>,
    prefix: &str,
    timeout: Duration,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match lines.recv_timeout(left) {
            Ok(l) if l.starts_with(prefix) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// A driver's flush for a node that runs in-process with no real sockets: every requested
/// socket is "bound" at once (port 0 becomes 50000 + the socket's index), and each transmit and
/// event goes to its callback, until the node has no more output.
pub fn pump_in_process(
    node: &mut Node,
    now: Timestamp,
    mut on_transmit: impl FnMut(Transmit),
    mut on_event: impl FnMut(Event),
) {
    loop {
        let mut any = false;
        while let Some(op) = node.poll_socket_op() {
            any = true;
            if let SocketOp::Bind { socket, addr } = op {
                let port = if addr.port() == 0 {
                    50000 + socket.index() as u16
                } else {
                    addr.port()
                };
                node.handle_socket_bound(
                    now,
                    socket,
                    SocketAddr::V4(SocketAddrV4::new(*addr.ip(), port)),
                );
            }
        }
        while let Some(t) = node.poll_transmit() {
            any = true;
            on_transmit(t);
        }
        while let Some(e) = node.poll_event() {
            any = true;
            on_event(e);
        }
        if !any {
            return;
        }
    }
}

/// Which implementation runs a benchmark process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `hyperdht-chat` (this project).
    Rust,
    /// Node.js with hyperdht from `tests/js`.
    Js,
}

impl Side {
    /// `rust` or `js`, as the tables print it.
    pub fn name(self) -> &'static str {
        match self {
            Side::Rust => "rust",
            Side::Js => "js",
        }
    }
}

/// The number after command-line flag `flag` (`v` is the next argument, if any).
pub fn parse_num<T: std::str::FromStr>(flag: &str, v: Option<&String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

/// The `hyperdht-chat` binary next to the running benchmark (`target/release/`).
pub fn chat_next_to_exe() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("hyperdht-chat")))
        .unwrap_or_else(|| "hyperdht-chat".into())
}

/// A local DHT on 127.0.0.1: `hyperdht-chat node` processes, a first node and `n - 1` more
/// (persistent), as the chat tests use.
pub struct LocalDht {
    /// The node processes (killed on drop).
    pub nodes: Vec<ChildGuard>,
    /// The first node's address.
    pub bootstrap: SocketAddrV4,
}

impl LocalDht {
    /// Starts `n` (at least 1) nodes with `chat`; waits (bounded) until each is listening.
    pub fn start(chat: &std::path::Path, n: usize, verbose: bool) -> io::Result<LocalDht> {
        // The first node binds any free port (`--port 0`) and prints it.
        let mut bootstrap = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let mut nodes = Vec::new();
        for i in 0..n.max(1) {
            let mut c = command(chat);
            c.args(["node", "--host", "127.0.0.1", "--port", "0"]);
            if i == 0 {
                c.args(["--bootstrap", "none"]);
            } else {
                c.args(["--bootstrap", &bootstrap.to_string(), "--persistent"]);
            }
            if !verbose {
                c.env("RUST_LOG", "warn");
            }
            let mut g = ChildGuard::spawn(c, format!("dht node {i}"), verbose)?;
            let lines = g.lines();
            let Some(line) = wait_line(&lines, "node listening on", Duration::from_secs(30)) else {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("dht node {i} did not start within 30 s"),
                ));
            };
            if i == 0 {
                bootstrap = line
                    .split_whitespace()
                    .nth(3)
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| io::Error::other(format!("no address in {line:?}")))?;
            }
            nodes.push(g);
        }
        Ok(LocalDht { nodes, bootstrap })
    }

    /// The bootstrap list as `host:port` (for `--bootstrap` and `HYPERDHT_BOOTSTRAP`).
    pub fn bootstrap_arg(&self) -> String {
        self.bootstrap.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 50_000);

    #[test]
    fn local_node_stores_signed_announces_and_returns_them() {
        let mut n = LocalNode::bootstrapper(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 49_999));
        let tok = n.token(CLIENT).expect("token");
        assert_eq!(tok.node_id, n.node().id().expect("persistent").0);
        let keys = key_pairs(3);
        let js = jobs(9, 0, 2, 3);
        let reqs = sign_all(n.addr, &tok, &js, &keys, 2);
        assert_eq!(reqs.len(), 6);
        for r in &reqs {
            let replies = n.request(CLIENT, r);
            assert_eq!(replies.len(), 1, "one bare reply per stored announce");
            assert!(!is_error_reply(&replies[0]));
        }
        assert_eq!(n.node().stored_records(), 6);
        let replies = n.request(CLIENT, &lookup_request(7, n.addr, &topic(9, 1)));
        assert_eq!(records_in_reply(&replies[0]), 3);
        let got = Response::decode(&replies[0]).unwrap();
        let peers = LookupReply::decode(got.value.unwrap()).unwrap().peers;
        assert!(peers
            .iter()
            .all(|p| p.relay_addresses.len() == RELAYS_PER_RECORD));
    }

    #[test]
    fn wrong_token_is_an_error_and_wrong_signature_is_silent() {
        let mut n = LocalNode::bootstrapper(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 49_998));
        let mut tok = n.token(CLIENT).expect("token");
        let keys = key_pairs(1);
        let good = sign_all(n.addr, &tok, &jobs(1, 0, 1, 1), &keys, 1).remove(0);
        let mut forged = good.clone();
        let last = forged.len() - 2; // inside the signature, the value's last 64 bytes
        forged[last] ^= 1;
        assert!(n.request(CLIENT, &forged).is_empty());
        tok.token[0] ^= 1;
        let bad = sign_all(n.addr, &tok, &jobs(1, 0, 1, 1), &keys, 1).remove(0);
        let replies = n.request(CLIENT, &bad);
        assert!(is_error_reply(&replies[0]));
        assert_eq!(n.node().stored_records(), 0);
        assert_eq!(n.request(CLIENT, &good).len(), 1);
        assert_eq!(n.node().stored_records(), 1);
    }
}
