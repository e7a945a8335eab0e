//! `bench_connect`: how many client handshakes one server completes per second and its CPU per
//! handshake (Rust `hyperdht-chat server` vs a Node.js `dht.createServer`), and the time from
//! `connect` to an open connection on loopback (Rust and JS clients and servers, all four
//! pairings). See `BENCHMARKS.md` ("Connect") for the method and the results.
//!
//! ```text
//! cargo build --release -p hyperdht-chat -p hyperdht-tests --bin hyperdht-chat --bin bench_connect
//! target/release/bench_connect            # all parts, about 70 s; markdown on stdout
//! target/release/bench_connect --help
//! ```
//!
//! Everything runs on 127.0.0.1: a local DHT of `hyperdht-chat node` processes, the servers
//! (`hyperdht-chat server --seed ...`, `node tests/js/bench-server.js`), the JS client
//! (`node tests/js/bench-connect.js`) and, in this process, the load generator and a Rust client
//! node (`hyperdht_mio::MioNode`). Child processes are killed when the benchmark ends (panics
//! included; with `setpriv --pdeathsig` also when it is killed).
//!
//! Handshakes: the generator sends PEER_HANDSHAKE requests in mode FROM_CLIENT straight to the
//! server's DHT socket, each with a fresh Noise message 1 (a new ephemeral key; 16 client key
//! pairs in turn; payload: version 1, UDX info, secret-stream 1), built before the measured
//! window. A server answers a direct FROM_CLIENT with a REPLY carrying Noise message 2 after
//! running the responder (4 X25519/Ed25519 DH operations and the payload), allocating a
//! handshake slot and opening the connection's UDX stream towards the "client" (which never
//! answers: the generator ignores those packets). Slots are cleared 10 s after the path opened,
//! and a Rust server holds at most 1,024, so each server gets one window of `--handshakes`
//! (default 800) every `--period` (default 11 s); windows of the Rust and JS servers alternate.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use hyperdht_mio::MioNode;
use hyperdht_proto::crypto::{hash, hash_parts, to_hex};
use hyperdht_proto::dht::keys::command;
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::noise::{self, Initiator, Responder};
use hyperdht_proto::wire::hyperdht::{mode, Handshake};
use hyperdht_proto::wire::noise::{NoisePayload, UdxInfo};
use hyperdht_proto::wire::rpc::{Request, Response, RESPONSE_ID};
use hyperdht_proto::{Config, ConnectOptions, Node, ServerConfig, SocketId, Timestamp};
use hyperdht_tests::bench_util::{self as bu, parse_num, ChildGuard, LocalDht, Side};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

const USAGE: &str = "\
bench_connect: handshakes per second of one server and time to an open connection, Rust vs JS

USAGE:
    bench_connect [FLAGS]

FLAGS:
    --parts LIST       Comma-separated among handshakes,inprocess,connect (default all)
    --servers LIST     Comma-separated among rust,js (default rust,js)
    --handshakes N     Handshakes per window (default 800; a Rust server holds at most 1024
                       handshakes of the last 10 s)
    --windows N        Windows per server; the median is reported (default 5)
    --period SECS      Time between two windows on the same server (default 11)
    --outstanding N    Handshake requests outstanding (default 16)
    --cap-check N      Afterwards, one burst of N handshakes per server into fresh slots
                       (default 0: none; 1200 shows the Rust server's 1024-slot cap)
    --inprocess N      Handshakes fed to an in-process Node (default 1000; a server's cap is
                       1024)
    --connects N       Timed connections per client/server pairing (default 20)
    --dht-nodes N      Nodes of the local DHT (default 4)
    --chat PATH        hyperdht-chat binary (default: next to this binary)
    --node PATH        Node.js binary (default: node)
    --verbose          Let the child processes log to stderr
    --help             This text

Only 127.0.0.1 is used. Every run stops by itself; child processes are killed on exit.
";

// ----- options --------------------------------------------------------------------------------

struct Opts {
    handshakes_part: bool,
    inprocess_part: bool,
    connect_part: bool,
    servers: Vec<Side>,
    handshakes: usize,
    windows: usize,
    period: Duration,
    outstanding: usize,
    cap_check: usize,
    inprocess: usize,
    connects: usize,
    dht_nodes: usize,
    chat: PathBuf,
    node: PathBuf,
    verbose: bool,
}

impl Opts {
    fn parse(argv: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            handshakes_part: true,
            inprocess_part: true,
            connect_part: true,
            servers: vec![Side::Rust, Side::Js],
            handshakes: 800,
            windows: 5,
            period: Duration::from_secs(11),
            outstanding: 16,
            cap_check: 0,
            inprocess: 1000,
            connects: 20,
            dht_nodes: 4,
            chat: bu::chat_next_to_exe(),
            node: PathBuf::from("node"),
            verbose: false,
        };
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--parts" => {
                    let v = it.next().ok_or("--parts needs a value")?;
                    o.handshakes_part = false;
                    o.inprocess_part = false;
                    o.connect_part = false;
                    for p in v.split(',') {
                        match p.trim() {
                            "handshakes" => o.handshakes_part = true,
                            "inprocess" => o.inprocess_part = true,
                            "connect" => o.connect_part = true,
                            other => return Err(format!("unknown part {other:?}")),
                        }
                    }
                }
                "--servers" => {
                    let v = it.next().ok_or("--servers needs a value")?;
                    o.servers = v
                        .split(',')
                        .map(|s| match s.trim() {
                            "rust" => Ok(Side::Rust),
                            "js" => Ok(Side::Js),
                            other => Err(format!("unknown server {other:?}")),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--handshakes" => o.handshakes = parse_num(a, it.next())?,
                "--windows" => o.windows = parse_num(a, it.next())?,
                "--period" => o.period = Duration::from_secs_f64(parse_num(a, it.next())?),
                "--outstanding" => o.outstanding = parse_num(a, it.next())?,
                "--cap-check" => o.cap_check = parse_num(a, it.next())?,
                "--inprocess" => o.inprocess = parse_num(a, it.next())?,
                "--connects" => o.connects = parse_num(a, it.next())?,
                "--dht-nodes" => o.dht_nodes = parse_num(a, it.next())?,
                "--chat" => o.chat = it.next().ok_or("--chat needs a value")?.into(),
                "--node" => o.node = it.next().ok_or("--node needs a value")?.into(),
                "--verbose" => o.verbose = true,
                "--help" | "-h" => {
                    print!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown flag {other}; see --help")),
            }
        }
        if o.servers.is_empty() || o.windows == 0 || o.handshakes == 0 || o.outstanding == 0 {
            return Err(
                "--servers, --windows, --handshakes and --outstanding must be non-empty / positive"
                    .into(),
            );
        }
        o.outstanding = o.outstanding.min(4096);
        Ok(o)
    }
}

// ----- servers --------------------------------------------------------------------------------

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// A server process listening on a key on the local DHT.
struct Server {
    side: Side,
    guard: ChildGuard,
    /// Its stdout lines after the ready line (drained by a thread).
    _lines: Receiver<String>,
    public_key: [u8; 32],
    /// Its DHT server socket.
    addr: SocketAddrV4,
}

impl Server {
    fn pid(&self) -> u32 {
        self.guard.pid()
    }
}

fn start_server(side: Side, dht: &LocalDht, seed: [u8; 32], opts: &Opts) -> Server {
    let port = bu::free_udp_port();
    let addr = SocketAddrV4::new(LOCALHOST, port);
    let boot = dht.bootstrap_arg();
    let seed_hex = to_hex(&seed);
    let cmd = match side {
        Side::Rust => {
            assert!(
                opts.chat.exists(),
                "{} not found: build it with `cargo build --release -p hyperdht-chat` or pass --chat",
                opts.chat.display()
            );
            let mut c = bu::command(&opts.chat);
            c.args(["server", "--seed", &seed_hex, "--bootstrap", &boot])
                .args(["--host", "127.0.0.1", "--port", &port.to_string()]);
            if !opts.verbose {
                c.env("RUST_LOG", "warn");
            }
            c
        }
        Side::Js => {
            let mut c = bu::command(&opts.node);
            c.arg(js_dir().join("bench-server.js"))
                .arg(&seed_hex)
                .arg(port.to_string())
                .env("HYPERDHT_BOOTSTRAP", &boot)
                .current_dir(js_dir());
            c
        }
    };
    let what = format!("{} server on {addr}", side.name());
    let mut guard =
        ChildGuard::spawn(cmd, what.clone(), opts.verbose).unwrap_or_else(|e| panic!("{e}"));
    let lines = guard.lines();
    let ready = bu::wait_line(&lines, "listening on:", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{what} did not print `listening on:` within 60 s"));
    eprintln!("{what}: {ready}");
    let public_key = KeyPair::from_seed(&seed).public_key();
    assert!(
        ready.contains(&to_hex(&public_key)),
        "{what} listens on another key: {ready}"
    );
    Server {
        side,
        guard,
        _lines: lines,
        public_key,
        addr,
    }
}

fn now_nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

fn seed_for(what: &str, nonce: u64) -> [u8; 32] {
    hash_parts(&[
        b"hyperdht-rs bench_connect",
        what.as_bytes(),
        &nonce.to_le_bytes(),
    ])
}

// ----- handshake load -------------------------------------------------------------------------

/// Client key pairs the handshakes take turns with.
const CLIENT_KEYS: usize = 16;
/// Replies checked with the initiator (the Noise message 2 must authenticate).
const VERIFY_FIRST: usize = 4;
/// A request unanswered this long counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(2);
/// The same for the cap check, which must finish well within the 10 s a slot is held.
const CAP_LOST_AFTER: Duration = Duration::from_millis(300);
/// Requests outstanding in the cap check.
const CAP_OUTSTANDING: usize = 64;

/// One window's requests, encoded before it starts (tid 0; patched when sent).
struct Prepared {
    reqs: Vec<Vec<u8>>,
    /// The initiators of the first requests, to check their replies.
    check: Vec<Initiator>,
}

/// `n` PEER_HANDSHAKE FROM_CLIENT requests to the server `server_pk` at `to`, each with a
/// fresh Noise message 1 (two threads; message 1 costs the client two DH operations).
fn prepare(server_pk: [u8; 32], to: SocketAddrV4, n: usize, nonce: u64) -> Prepared {
    let clients: Vec<KeyPair> = (0..CLIENT_KEYS as u64)
        .map(|i| KeyPair::from_seed(&hash_parts(&[b"bench_connect client", &i.to_le_bytes()])))
        .collect();
    let target = hash(&server_pk);
    let build = |i: usize| -> (Vec<u8>, Initiator) {
        let eph = KeyPair::from_seed(&hash_parts(&[
            b"bench_connect ephemeral",
            &nonce.to_le_bytes(),
            &(i as u64).to_le_bytes(),
        ]));
        let mut init = Initiator::new(clients[i % CLIENT_KEYS].clone(), server_pk, eph);
        let payload = NoisePayload {
            version: 1,
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: (i as u64 % 0xffff_fff0) + 1,
                seq: 0,
            }),
            secret_stream: Some(1),
            ..NoisePayload::default()
        };
        let m1 = init.write_message1(&payload.to_bytes()).expect("message 1");
        let value = Handshake {
            mode: mode::FROM_CLIENT,
            noise: m1,
            peer_address: None,
            relay_address: None,
        }
        .to_bytes();
        let mut out = Vec::with_capacity(64 + value.len());
        Request {
            tid: 0,
            to,
            id: None,
            token: None,
            internal: false,
            command: command::PEER_HANDSHAKE,
            target: Some(target),
            value: Some(&value),
        }
        .encode(&mut out);
        (out, init)
    };
    let half = n / 2;
    let (a, b) = std::thread::scope(|s| {
        let h = s.spawn(|| (half..n).map(build).collect::<Vec<_>>());
        let a = (0..half).map(build).collect::<Vec<_>>();
        (a, h.join().expect("prepare thread"))
    });
    let mut reqs = Vec::with_capacity(n);
    let mut check = Vec::new();
    for (i, (r, init)) in a.into_iter().chain(b).enumerate() {
        reqs.push(r);
        if i < VERIFY_FIRST {
            check.push(init);
        }
    }
    Prepared { reqs, check }
}

/// What one window measured.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    sent: usize,
    replies: usize,
    /// Replies that were not a handshake REPLY with a Noise message (or did not authenticate).
    bad: usize,
    lost: usize,
    /// First send to last reply.
    secs: f64,
    /// Server CPU over that time, ns (`schedstat` of its live threads).
    cpu_ns: u64,
    /// Server CPU ticks (utime + stime, `/proc/PID/stat`) over that time.
    ticks: (u64, u64),
    /// Replies whose message 2 authenticated (of the first `VERIFY_FIRST`).
    verified: usize,
}

impl Window {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.replies as f64 / self.secs
        } else {
            0.0
        }
    }

    fn cpu_us(&self) -> f64 {
        self.cpu_ns as f64 / 1e3 / self.replies.max(1) as f64
    }
}

/// Sends every prepared request to `to` from `sock` (connected to it), `outstanding` at a time,
/// and counts the REPLY responses; measures `pid`'s CPU over the window.
fn run_window(
    sock: &UdpSocket,
    p: Prepared,
    outstanding: usize,
    lost_after: Duration,
    pid: u32,
) -> Window {
    let Prepared { mut reqs, check } = p;
    let n = reqs.len();
    let mut w = Window {
        sent: n,
        ..Window::default()
    };
    let mut inflight: Vec<Option<(usize, Instant)>> = vec![None; 1 << 16];
    let mut order: std::collections::VecDeque<(u16, usize, Instant)> = Default::default();
    let mut m2: Vec<Option<Vec<u8>>> = vec![None; check.len()];
    let mut next = 0usize;
    let mut open = 0usize;
    let mut tid: u16 = 1;
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .expect("read timeout");
    let ticks0 = bu::cpu_ticks(pid);
    let cpu0 = bu::cpu_ns(pid);
    let t0 = Instant::now();
    let mut last_reply = t0;
    while next < n || open > 0 {
        let now = Instant::now();
        while let Some(&(t, i, sent)) = order.front() {
            if inflight[t as usize].map(|(j, _)| j) != Some(i) {
                order.pop_front();
            } else if now - sent > lost_after {
                order.pop_front();
                inflight[t as usize] = None;
                open -= 1;
                w.lost += 1;
            } else {
                break;
            }
        }
        while open < outstanding && next < n {
            while inflight[tid as usize].is_some() || tid == 0 {
                tid = tid.wrapping_add(1);
            }
            bu::set_tid(&mut reqs[next], tid);
            if sock.send(&reqs[next]).is_err() {
                break;
            }
            inflight[tid as usize] = Some((next, now));
            order.push_back((tid, next, now));
            open += 1;
            next += 1;
            tid = tid.wrapping_add(1);
        }
        let Ok(len) = sock.recv(&mut buf) else {
            continue;
        };
        // The server's UDX packets to the "client" (0xff ...) and anything else are ignored.
        if len < 4 || buf[0] != RESPONSE_ID {
            continue;
        }
        let t = u16::from_le_bytes([buf[2], buf[3]]);
        let Some((i, _)) = inflight[t as usize].take() else {
            continue;
        };
        open -= 1;
        last_reply = Instant::now();
        let noise = Response::decode(&buf[..len])
            .ok()
            .and_then(|r| Handshake::decode(r.value?).ok())
            .filter(|h| h.mode == mode::REPLY && !h.noise.is_empty())
            .map(|h| h.noise);
        match noise {
            Some(m) => {
                w.replies += 1;
                if i < m2.len() {
                    m2[i] = Some(m);
                }
            }
            None => w.bad += 1,
        }
    }
    let cpu1 = bu::cpu_ns(pid);
    let ticks1 = bu::cpu_ticks(pid);
    w.secs = (last_reply - t0).as_secs_f64();
    w.cpu_ns = cpu1.saturating_sub(cpu0);
    w.ticks = (
        ticks1.0.saturating_sub(ticks0.0),
        ticks1.1.saturating_sub(ticks0.1),
    );
    for (init, m) in check.into_iter().zip(m2) {
        match m.map(|m| init.read_message2(&m)) {
            Some(Ok(_)) => w.verified += 1,
            Some(Err(_)) => {
                w.bad += 1;
                w.replies -= 1;
            }
            None => {}
        }
    }
    w
}

/// Per server: its windows, and CPU over the whole phase.
struct HandshakeRow {
    side: Side,
    windows: Vec<Window>,
    /// Server CPU ticks (whole process) from the first window's start to the phase end, i.e.
    /// including the 10 s after each window.
    phase_ticks: u64,
    phase_secs: f64,
    /// Idle CPU of the server before the phase, ticks per second.
    idle_ticks_per_sec: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
}

fn handshake_phase(opts: &Opts, dht: &LocalDht) -> (Vec<HandshakeRow>, Vec<String>) {
    let nonce = now_nonce();
    let servers: Vec<Server> = opts
        .servers
        .iter()
        .map(|&side| start_server(side, dht, seed_for(side.name(), nonce), opts))
        .collect();
    // Let the servers settle after announcing, and measure their idle CPU meanwhile.
    let idle = Duration::from_secs(3);
    let idle0: Vec<(u64, u64)> = servers.iter().map(|s| bu::cpu_ticks(s.pid())).collect();
    std::thread::sleep(idle);
    let mut rows: Vec<HandshakeRow> = servers
        .iter()
        .zip(&idle0)
        .map(|(s, t0)| {
            let t1 = bu::cpu_ticks(s.pid());
            HandshakeRow {
                side: s.side,
                windows: Vec::new(),
                phase_ticks: 0,
                phase_secs: 0.0,
                idle_ticks_per_sec: ((t1.0 + t1.1) - (t0.0 + t0.1)) as f64 / idle.as_secs_f64(),
                rss_before_kib: bu::rss_kib(s.pid()),
                rss_after_kib: 0,
            }
        })
        .collect();
    let mut notes = Vec::new();
    let mut batch = 0u64;
    let mut prepare_all = |servers: &[Server]| -> Vec<Prepared> {
        servers
            .iter()
            .map(|s| {
                batch += 1;
                prepare(s.public_key, s.addr, opts.handshakes, nonce ^ (batch << 40))
            })
            .collect()
    };
    let mut prepared = prepare_all(&servers);
    let phase0: Vec<(u64, u64)> = servers.iter().map(|s| bu::cpu_ticks(s.pid())).collect();
    let phase_t0 = Instant::now();
    // Sockets of the last window per server, kept open (unread) until the next one so the
    // servers' UDX packets to them do not turn into ICMP errors.
    let mut keep: Vec<Option<UdpSocket>> = servers.iter().map(|_| None).collect();
    for round in 0..opts.windows {
        let round_t0 = Instant::now();
        // Alternate which server goes first.
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut this_round: Vec<Option<Prepared>> = prepared.drain(..).map(Some).collect();
        for &k in &order {
            let s = &servers[k];
            let sock = UdpSocket::bind((LOCALHOST, 0)).expect("bind generator socket");
            sock.connect(s.addr).expect("connect generator socket");
            let p = this_round[k].take().expect("prepared");
            let w = run_window(&sock, p, opts.outstanding, LOST_AFTER, s.pid());
            keep[k] = Some(sock);
            eprintln!(
                "round {}: {} server: {} of {} replies ({} bad, {} lost, {}/{} verified) in {:.3} s: {:.0}/s, {:.1} µs CPU each ({} + {} ticks)",
                round + 1,
                s.side.name(),
                w.replies,
                w.sent,
                w.bad,
                w.lost,
                w.verified,
                VERIFY_FIRST.min(w.sent),
                w.secs,
                w.rate(),
                w.cpu_us(),
                w.ticks.0,
                w.ticks.1
            );
            rows[k].windows.push(w);
        }
        if round + 1 < opts.windows {
            prepared = prepare_all(&servers);
        }
        let until = round_t0 + opts.period;
        while Instant::now() < until {
            std::thread::sleep(until - Instant::now());
        }
    }
    let phase_secs = phase_t0.elapsed().as_secs_f64();
    for (k, s) in servers.iter().enumerate() {
        let t1 = bu::cpu_ticks(s.pid());
        rows[k].phase_ticks = (t1.0 + t1.1) - (phase0[k].0 + phase0[k].1);
        rows[k].phase_secs = phase_secs;
        rows[k].rss_after_kib = bu::rss_kib(s.pid());
    }
    drop(keep);
    if opts.cap_check > 0 {
        // The phase ended a period after the last round started; one more second and every
        // slot of the last windows is clear.
        std::thread::sleep(Duration::from_secs(1));
        for s in &servers {
            let p = prepare(s.public_key, s.addr, opts.cap_check, nonce ^ 0xcafe);
            let sock = UdpSocket::bind((LOCALHOST, 0)).expect("bind generator socket");
            sock.connect(s.addr).expect("connect generator socket");
            let w = run_window(&sock, p, CAP_OUTSTANDING, CAP_LOST_AFTER, s.pid());
            let line = format!(
                "Cap check: {} fresh handshakes in {:.2} s ({CAP_OUTSTANDING} outstanding, lost after {} ms without reply): the {} server answered {}, {} lost.",
                w.sent,
                w.secs,
                CAP_LOST_AFTER.as_millis(),
                s.side.name(),
                w.replies,
                w.lost
            );
            eprintln!("{line}");
            notes.push(line);
        }
    }
    (rows, notes)
}

fn handshake_report(rows: &[HandshakeRow], notes: &[String], opts: &Opts, tck: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Median of {} windows of {} handshakes per server ({} outstanding, one window per server every {:.0} s, servers alternating); CLK_TCK {tck}.\n",
        opts.windows,
        opts.handshakes,
        opts.outstanding,
        opts.period.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| server | handshakes/s | server CPU µs/handshake | of which user | server CPU share | replies | lost | bad | phase CPU µs/handshake | idle CPU | RSS before | RSS after |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let rate = bu::median(r.windows.iter().map(Window::rate).collect());
        let cpu = bu::median(r.windows.iter().map(Window::cpu_us).collect());
        let user_share = bu::median(
            r.windows
                .iter()
                .map(|w| {
                    let t = w.ticks.0 + w.ticks.1;
                    if t == 0 {
                        0.0
                    } else {
                        w.ticks.0 as f64 / t as f64
                    }
                })
                .collect(),
        );
        let share = bu::median(
            r.windows
                .iter()
                .map(|w| w.cpu_ns as f64 / 1e9 / w.secs.max(1e-9))
                .collect(),
        );
        let replies: usize = r.windows.iter().map(|w| w.replies).sum();
        let sent: usize = r.windows.iter().map(|w| w.sent).sum();
        let lost: usize = r.windows.iter().map(|w| w.lost).sum();
        let bad: usize = r.windows.iter().map(|w| w.bad).sum();
        let idle_ticks = r.idle_ticks_per_sec * r.phase_secs;
        let phase_us =
            (r.phase_ticks as f64 - idle_ticks).max(0.0) / tck as f64 * 1e6 / replies.max(1) as f64;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} | {:.1} | {:.0}% | {}/{} | {} | {} | {:.1} | {:.2}% | {:.1} MiB | {:.1} MiB |",
            r.side.name(),
            rate,
            cpu,
            cpu * user_share,
            share * 100.0,
            replies,
            sent,
            lost,
            bad,
            phase_us,
            r.idle_ticks_per_sec / tck as f64 * 100.0,
            r.rss_before_kib as f64 / 1024.0,
            r.rss_after_kib as f64 / 1024.0,
        );
    }
    if let (Some(rs), Some(js)) = (
        rows.iter().find(|r| r.side == Side::Rust),
        rows.iter().find(|r| r.side == Side::Js),
    ) {
        let rate = |r: &HandshakeRow| bu::median(r.windows.iter().map(Window::rate).collect());
        let cpu = |r: &HandshakeRow| bu::median(r.windows.iter().map(Window::cpu_us).collect());
        let _ = writeln!(
            out,
            "\nrust/js: {:.2}x the handshakes per second, {:.2}x the CPU per handshake (1/{:.1}).",
            rate(rs) / rate(js).max(1e-9),
            cpu(rs) / cpu(js).max(1e-9),
            cpu(js) / cpu(rs).max(1e-9)
        );
    }
    for n in notes {
        let _ = writeln!(out, "\n{n}");
    }
    out
}

// ----- in-process cost ------------------------------------------------------------------------

/// The address the in-process node pretends to be bound on.
const INPROC_NODE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 49737);

/// A `hyperdht_proto::Node` (a first node of its own network, with one server listening) driven
/// in-process the way `hyperdht-mio`'s loop drives it, with a clock that moves on by `step` per
/// datagram.
struct InProcNode {
    node: Node,
    now: Timestamp,
}

impl InProcNode {
    fn new(server: &KeyPair) -> InProcNode {
        let now = Timestamp::from_millis(1000);
        let mut n = InProcNode {
            node: Node::new(Config::bootstrapper(INPROC_NODE), [3; 32], now),
            now,
        };
        n.flush();
        n.node
            .listen(n.now, server, ServerConfig::default())
            .expect("listen");
        n.advance(Duration::from_secs(2));
        n
    }

    /// What the driver does after every wake-up: socket operations, transmits, events.
    fn flush(&mut self) -> usize {
        let mut sent = 0;
        bu::pump_in_process(&mut self.node, self.now, |_| sent += 1, drop);
        sent
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.node.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            self.node.handle_timeout(self.now);
            self.flush();
        }
        self.now = end;
    }

    /// One datagram from `from`, then one loop iteration of the driver: timers, flush, next
    /// deadline.
    fn datagram(&mut self, from: SocketAddrV4, bytes: &[u8], step: Duration) {
        self.now += step;
        self.node
            .handle_datagram(self.now, SocketId::SERVER, SocketAddr::V4(from), bytes);
        self.node.handle_timeout(self.now);
        self.flush();
        std::hint::black_box(self.node.poll_timeout());
    }
}

/// In-process costs (user space only, one thread), each the fastest of `reps` repetitions.
struct InProc {
    dh_us: f64,
    responder_us: f64,
    /// Whole node, per handshake, for consecutive chunks of `chunk` handshakes.
    node_chunks_us: Vec<f64>,
    chunk: usize,
    /// Whole node, per datagram, for junk datagrams after the handshakes (UDX streams open).
    junk_after_us: f64,
    /// The same on a node without open streams.
    junk_fresh_us: f64,
}

fn in_process(n: usize, reps: usize) -> InProc {
    let server = KeyPair::from_seed(&seed_for("in-process server", 1));
    let keys: Vec<KeyPair> = (0..64u64)
        .map(|i| KeyPair::from_seed(&seed_for("in-process key", i)))
        .collect();
    let best = |f: &mut dyn FnMut() -> f64| (0..reps.max(1)).map(|_| f()).fold(f64::MAX, f64::min);
    // One DH (noise-curve-ed: validate the remote point, multiply, compress).
    let dh_us = best(&mut || {
        let t = Instant::now();
        for k in &keys {
            std::hint::black_box(noise::dh(&server, &k.public_key()).expect("dh"));
        }
        t.elapsed().as_secs_f64() * 1e6 / keys.len() as f64
    });
    // The responder: what a server computes per handshake (its ephemeral key pair included).
    let msgs: Vec<Vec<u8>> = prepare(server.public_key(), INPROC_NODE, 64, 7)
        .reqs
        .iter()
        .map(|r| {
            let req = Request::decode(r).expect("request");
            Handshake::decode(req.value.expect("value"))
                .expect("handshake")
                .noise
        })
        .collect();
    let reply_payload = NoisePayload {
        version: 1,
        udx: Some(UdxInfo {
            version: 1,
            reusable_socket: false,
            id: 9,
            seq: 0,
        }),
        secret_stream: Some(1),
        ..NoisePayload::default()
    }
    .to_bytes();
    let responder_us = best(&mut || {
        let t = Instant::now();
        for (i, m) in msgs.iter().enumerate() {
            let eph = KeyPair::from_seed(&seed_for("in-process eph", i as u64));
            let mut r = Responder::new(server.clone(), eph);
            let (payload, _rs) = r.read_message1(m).expect("message 1");
            std::hint::black_box(NoisePayload::decode(&payload).expect("payload"));
            std::hint::black_box(r.write_message2(&reply_payload).expect("message 2"));
        }
        t.elapsed().as_secs_f64() * 1e6 / msgs.len() as f64
    });
    // The whole node: n handshakes from n client addresses, 300 µs apart on its clock.
    let chunk = (n / 10).max(1);
    let step = Duration::from_micros(300);
    let junk = [0x42u8; 8];
    let mut node_chunks_us = vec![f64::MAX; n.div_ceil(chunk)];
    let mut junk_after_us = f64::MAX;
    let mut junk_fresh_us = f64::MAX;
    for rep in 0..reps.max(1) {
        let reqs = prepare(server.public_key(), INPROC_NODE, n, 1000 + rep as u64).reqs;
        let mut fresh = InProcNode::new(&server);
        let t = Instant::now();
        for i in 0..1000u16 {
            fresh.datagram(SocketAddrV4::new(LOCALHOST, 20000 + i), &junk, step);
        }
        junk_fresh_us = junk_fresh_us.min(t.elapsed().as_secs_f64() * 1e6 / 1000.0);
        let mut node = InProcNode::new(&server);
        for (c, part) in reqs.chunks(chunk).enumerate() {
            let t = Instant::now();
            for (j, r) in part.iter().enumerate() {
                let from = SocketAddrV4::new(LOCALHOST, 10000 + (c * chunk + j) as u16);
                node.datagram(from, r, step);
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / part.len() as f64;
            node_chunks_us[c] = node_chunks_us[c].min(us);
        }
        let t = Instant::now();
        for i in 0..1000u16 {
            node.datagram(SocketAddrV4::new(LOCALHOST, 20000 + i), &junk, step);
        }
        junk_after_us = junk_after_us.min(t.elapsed().as_secs_f64() * 1e6 / 1000.0);
    }
    InProc {
        dh_us,
        responder_us,
        node_chunks_us,
        chunk,
        junk_after_us,
        junk_fresh_us,
    }
}

fn in_process_report(r: &InProc, n: usize, reps: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "In-process, user space only, one thread, the fastest of {reps} repetitions:\n"
    );
    let _ = writeln!(out, "| what | µs |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(
        out,
        "| one noise-curve-ed DH (`noise::dh`: validate the remote point, multiply, compress) | {:.1} |",
        r.dh_us
    );
    let _ = writeln!(
        out,
        "| Noise responder per handshake (ephemeral key pair, read message 1, write message 2: 4 DH) | {:.1} |",
        r.responder_us
    );
    let first = r.node_chunks_us.first().copied().unwrap_or(0.0);
    let last = r.node_chunks_us.last().copied().unwrap_or(0.0);
    let _ = writeln!(
        out,
        "| whole `Node` per handshake (request in, driver-like loop: timers, transmits, events, next deadline), handshakes 1-{} | {:.1} |",
        r.chunk.min(n),
        first
    );
    let _ = writeln!(
        out,
        "| the same, handshakes {}-{n} ({} server connections already open) | {:.1} |",
        n - (n - 1) % r.chunk,
        n - 1 - (n - 1) % r.chunk,
        last
    );
    let _ = writeln!(
        out,
        "| one junk datagram (8 bytes, dropped) on a node with no connection | {:.2} |",
        r.junk_fresh_us
    );
    let _ = writeln!(
        out,
        "| one junk datagram after those {n} handshakes ({n} connections open) | {:.2} |",
        r.junk_after_us
    );
    let chunks: Vec<String> = r.node_chunks_us.iter().map(|v| format!("{v:.0}")).collect();
    let _ = writeln!(
        out,
        "\nWhole `Node` per handshake, by chunks of {} handshakes: {} µs.",
        r.chunk,
        chunks.join(", ")
    );
    out
}

// ----- connect to open ------------------------------------------------------------------------

/// The JS client process (`bench-connect.js`).
struct JsClient {
    guard: ChildGuard,
    lines: Receiver<String>,
}

impl JsClient {
    fn start(dht: &LocalDht, opts: &Opts) -> JsClient {
        let mut c = bu::command(&opts.node);
        c.arg(js_dir().join("bench-connect.js"))
            .env("HYPERDHT_BOOTSTRAP", dht.bootstrap_arg())
            .current_dir(js_dir());
        let mut guard =
            ChildGuard::spawn(c, "js client", opts.verbose).unwrap_or_else(|e| panic!("{e}"));
        let lines = guard.lines();
        bu::wait_line(&lines, "ready", Duration::from_secs(60))
            .expect("js client did not print `ready` within 60 s");
        JsClient { guard, lines }
    }

    /// One connection: milliseconds from `dht.connect` to 'open', or the error.
    fn connect(&mut self, key: &[u8; 32]) -> Result<f64, String> {
        self.guard
            .send_line(&format!("connect {}", to_hex(key)))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or("no answer from the js client within 60 s")?;
            let line = self
                .lines
                .recv_timeout(left)
                .map_err(|_| "no answer from the js client within 60 s".to_string())?;
            let mut f = line.split_whitespace();
            match f.next() {
                Some("open") => {
                    return f
                        .next()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| format!("bad line {line:?}"))
                }
                Some("error") => return Err(line),
                _ => {}
            }
        }
    }
}

/// The Rust client: a node in this process.
fn rust_client(dht: &LocalDht) -> MioNode {
    let mut c = Config::new(vec![dht.bootstrap]);
    c.host = LOCALHOST;
    c.port = 0;
    let node = MioNode::spawn(c).expect("spawn rust client node");
    node.wait_bootstrapped().expect("rust client bootstraps");
    node
}

fn rust_connect(node: &MioNode, key: &[u8; 32], i: u64) -> Result<f64, String> {
    let me = KeyPair::from_seed(&seed_for("rust client", now_nonce() ^ i));
    let t0 = Instant::now();
    let conn = node
        .connect_with(*key, ConnectOptions::default().with_key_pair(&me))
        .map_err(|e| e.to_string())?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    conn.writer.reset();
    Ok(ms)
}

struct ConnectRow {
    client: Side,
    server: Side,
    ms: Vec<f64>,
    errors: Vec<String>,
    warmup_ms: Option<f64>,
}

fn connect_phase(opts: &Opts, dht: &LocalDht) -> Vec<ConnectRow> {
    let nonce = now_nonce();
    let servers: Vec<Server> = opts
        .servers
        .iter()
        .map(|&side| {
            start_server(
                side,
                dht,
                seed_for(&format!("connect {}", side.name()), nonce),
                opts,
            )
        })
        .collect();
    let node = rust_client(dht);
    let mut js = JsClient::start(dht, opts);
    let mut rows: Vec<ConnectRow> = Vec::new();
    for client in [Side::Rust, Side::Js] {
        for s in &servers {
            rows.push(ConnectRow {
                client,
                server: s.side,
                ms: Vec::new(),
                errors: Vec::new(),
                warmup_ms: None,
            });
        }
    }
    // One untimed warm-up per pairing, then the timed rounds, pairings interleaved.
    for round in 0..=opts.connects {
        let n = rows.len();
        for k in 0..n {
            let k = (k + round) % n;
            let row = &mut rows[k];
            let server = servers
                .iter()
                .find(|s| s.side == row.server)
                .expect("server");
            let r = match row.client {
                Side::Rust => rust_connect(&node, &server.public_key, (round * n + k) as u64),
                Side::Js => js.connect(&server.public_key),
            };
            if round == 0 {
                row.warmup_ms = r.as_ref().ok().copied();
            } else {
                match r {
                    Ok(ms) => row.ms.push(ms),
                    Err(e) => row.errors.push(e),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if round > 0 && round % 5 == 0 {
            eprintln!("connect: {round} of {} rounds", opts.connects);
        }
    }
    drop(js);
    node.shutdown();
    rows
}

fn connect_report(rows: &[ConnectRow], opts: &Opts) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} timed connections per pairing after one untimed warm-up, pairings interleaved, each with a new client key pair; the connection is reset right after it opened. Rust client: `MioNode::connect` returned (the server's secret-stream header arrived); JS client: the socket's 'open' (path chosen, secret stream set up; it does not wait for the server's header).\n",
        opts.connects
    );
    let _ = writeln!(
        out,
        "| client -> server | opened | median | p90 | min | max | warm-up | errors |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let max = r.ms.iter().copied().fold(0.0, f64::max);
        let min = r.ms.iter().copied().fold(f64::INFINITY, f64::min);
        let errors = if r.errors.is_empty() {
            "-".to_string()
        } else {
            let mut e = r.errors.clone();
            e.dedup();
            e.join("; ")
        };
        let _ = writeln!(
            out,
            "| {} -> {} | {}/{} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} |",
            r.client.name(),
            r.server.name(),
            r.ms.len(),
            r.ms.len() + r.errors.len(),
            bu::median(r.ms.clone()),
            bu::percentile(r.ms.clone(), 90.0),
            if min.is_finite() { min } else { 0.0 },
            max,
            r.warmup_ms
                .map_or("failed".to_string(), |m| format!("{m:.1} ms")),
            errors
        );
    }
    out
}

// ----- main -----------------------------------------------------------------------------------

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let opts = match Opts::parse(&argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench_connect: {e}");
            std::process::exit(2);
        }
    };
    let tck = bu::clock_ticks_per_sec();
    let load0 = bu::load_average();
    let t0 = Instant::now();
    let dht = (opts.handshakes_part || opts.connect_part).then(|| {
        let dht = LocalDht::start(&opts.chat, opts.dht_nodes, opts.verbose)
            .unwrap_or_else(|e| panic!("local DHT: {e}"));
        eprintln!(
            "local DHT: {} nodes, bootstrap {}",
            dht.nodes.len(),
            dht.bootstrap
        );
        dht
    });
    let mut out = String::new();
    if let (true, Some(dht)) = (opts.handshakes_part, &dht) {
        let (rows, notes) = handshake_phase(&opts, dht);
        out.push_str("### Handshakes per second of one server\n\n");
        out.push_str(&handshake_report(&rows, &notes, &opts, tck));
        out.push('\n');
    }
    if opts.inprocess_part && opts.inprocess > 0 {
        eprintln!("in-process: {} handshakes x 3", opts.inprocess);
        let r = in_process(opts.inprocess, 3);
        out.push_str(&in_process_report(&r, opts.inprocess, 3));
        out.push('\n');
    }
    if let (true, Some(dht)) = (opts.connect_part, &dht) {
        let rows = connect_phase(&opts, dht);
        out.push_str("### Time from `connect` to an open connection (loopback)\n\n");
        out.push_str(&connect_report(&rows, &opts));
        out.push('\n');
    }
    let load1 = bu::load_average();
    out.push_str(&format!(
        "Load average (1 min) {load0:.2} at the start, {load1:.2} at the end; {:.0} s in all.\n",
        t0.elapsed().as_secs_f64()
    ));
    print!("{out}");
    drop(dht);
}
