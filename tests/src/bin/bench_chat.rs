//! `bench_chat`: bytes piped through the chat, client stdin -> connection -> server stdout, for
//! the Rust chat (`hyperdht-chat client` / `server`) and the Node.js guide chat
//! (`tests/js/chat-client.js` / `chat-server.js`) in the same run: MB/s and CPU per MiB of both
//! processes; and the resident memory of an idle chat server after it started listening and
//! after a minute of idling. See `BENCHMARKS.md` ("Chat throughput and idle memory").
//!
//! ```text
//! cargo build --release -p hyperdht-chat -p hyperdht-tests --bin hyperdht-chat --bin bench_chat
//! target/release/bench_chat              # about 70 s; markdown on stdout
//! target/release/bench_chat --help
//! ```
//!
//! Everything runs on 127.0.0.1, on a local DHT of `hyperdht-chat node` processes. Each
//! transfer uses a fresh server and a fresh client process; once both printed
//! `got connection!` the benchmark writes `--mib` MiB of a pseudo-random pattern into the
//! client's stdin (then closes it) and reads the server's stdout until every byte arrived,
//! checking each one. CPU is each process's utime + stime over that window (`/proc/PID/stat`:
//! all threads, also those that ended meanwhile, such as the Rust client's stdin thread at EOF;
//! 10 ms ticks), next to the nanosecond on-CPU time of its live threads (`/proc/PID/task/*/
//! schedstat`, which loses the time of threads that ended). Child processes are killed when the
//! benchmark ends (panics included; with `setpriv --pdeathsig` also when it is killed).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyperdht_proto::crypto::{hash_parts, to_hex};
use hyperdht_tests::bench_util::{self as bu, parse_num, ChildGuard, LocalDht, Side};

const USAGE: &str = "\
bench_chat: chat throughput (client stdin -> server stdout) and idle server memory, Rust vs JS

USAGE:
    bench_chat [FLAGS]

FLAGS:
    --mib N            MiB per transfer (default 64)
    --runs N           Transfers per pairing; the median is reported (default 3)
    --pairs LIST       Comma-separated client-server pairings among rust-rust,js-js,rust-js,
                       js-rust (default all four)
    --idle SECS        Idle time of the memory measurement (default 60; 0 skips it)
    --dht-nodes N      Nodes of the local DHT (default 4)
    --chat PATH        hyperdht-chat binary (default: next to this binary)
    --node PATH        Node.js binary (default: node)
    --verbose          Let the child processes log to stderr
    --help             This text

Only 127.0.0.1 is used. Every run stops by itself; child processes are killed on exit.
";

struct Opts {
    mib: u64,
    runs: usize,
    pairs: Vec<(Side, Side)>,
    idle: Duration,
    dht_nodes: usize,
    chat: PathBuf,
    node: PathBuf,
    verbose: bool,
}

impl Opts {
    fn parse(argv: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            mib: 64,
            runs: 3,
            pairs: vec![
                (Side::Rust, Side::Rust),
                (Side::Js, Side::Js),
                (Side::Rust, Side::Js),
                (Side::Js, Side::Rust),
            ],
            idle: Duration::from_secs(60),
            dht_nodes: 4,
            chat: bu::chat_next_to_exe(),
            node: PathBuf::from("node"),
            verbose: false,
        };
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--mib" => o.mib = parse_num(a, it.next())?,
                "--runs" => o.runs = parse_num(a, it.next())?,
                "--pairs" => {
                    let v = it.next().ok_or("--pairs needs a value")?;
                    o.pairs = v
                        .split(',')
                        .map(|p| match p.trim() {
                            "rust-rust" => Ok((Side::Rust, Side::Rust)),
                            "js-js" => Ok((Side::Js, Side::Js)),
                            "rust-js" => Ok((Side::Rust, Side::Js)),
                            "js-rust" => Ok((Side::Js, Side::Rust)),
                            "" => Err("empty pairing".to_string()),
                            other => Err(format!("unknown pairing {other:?}")),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--idle" => o.idle = Duration::from_secs_f64(parse_num(a, it.next())?),
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
        if o.mib == 0 && o.runs > 0 && !o.pairs.is_empty() {
            return Err("--mib must be positive".into());
        }
        Ok(o)
    }
}

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

fn seed(what: &str, i: u64) -> [u8; 32] {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    hash_parts(&[
        b"hyperdht-rs bench_chat",
        what.as_bytes(),
        &i.to_le_bytes(),
        &nonce.to_le_bytes(),
    ])
}

/// The pseudo-random bytes of a transfer (xorshift64*).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

// ----- chat processes -------------------------------------------------------------------------

fn server_command(
    side: Side,
    dht: &LocalDht,
    seed: &[u8; 32],
    opts: &Opts,
) -> std::process::Command {
    let boot = dht.bootstrap_arg();
    match side {
        Side::Rust => {
            assert!(
                opts.chat.exists(),
                "{} not found: build it with `cargo build --release -p hyperdht-chat` or pass --chat",
                opts.chat.display()
            );
            let mut c = bu::command(&opts.chat);
            c.args(["server", "--seed", &to_hex(seed), "--bootstrap", &boot])
                .args(["--host", "127.0.0.1"]);
            if !opts.verbose {
                c.env("RUST_LOG", "warn");
            }
            c
        }
        Side::Js => {
            let mut c = bu::command(&opts.node);
            c.arg(js_dir().join("chat-server.js"))
                .env("HYPERDHT_BOOTSTRAP", &boot)
                .env("CHAT_SEED", to_hex(seed))
                .current_dir(js_dir());
            c
        }
    }
}

fn client_command(side: Side, dht: &LocalDht, key: &str, opts: &Opts) -> std::process::Command {
    let boot = dht.bootstrap_arg();
    match side {
        Side::Rust => {
            let mut c = bu::command(&opts.chat);
            c.args(["client", key, "--bootstrap", &boot])
                .args(["--host", "127.0.0.1"]);
            if !opts.verbose {
                c.env("RUST_LOG", "warn");
            }
            c
        }
        Side::Js => {
            let mut c = bu::command(&opts.node);
            c.arg(js_dir().join("chat-client.js"))
                .arg(key)
                .env("HYPERDHT_BOOTSTRAP", &boot)
                .current_dir(js_dir());
            c
        }
    }
}

/// What the server's stdout reader reports.
enum ServerOut {
    /// A status line (before the data).
    Line(String),
    /// Every expected byte arrived, at that instant; the first mismatching offset if any.
    Done(Instant, Option<u64>),
    /// Stdout closed before that (bytes received so far).
    Closed(u64),
}

/// Reads a chat server's stdout: status lines until `got connection!`, then the data, checked
/// against `expected`.
fn read_server(
    mut guard_stdout: std::process::ChildStdout,
    expected: Arc<Vec<u8>>,
) -> Receiver<ServerOut> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::with_capacity(1 << 16, &mut guard_stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(ServerOut::Closed(0));
                    return;
                }
                Ok(_) => {
                    let l = line.trim_end().to_string();
                    let data_next = l == "got connection!";
                    let _ = tx.send(ServerOut::Line(l));
                    if data_next {
                        break;
                    }
                }
            }
        }
        let mut buf = vec![0u8; 1 << 16];
        let mut pos = 0usize;
        let mut mismatch = None;
        let mut done = false;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if done {
                continue;
            }
            let take = n.min(expected.len() - pos);
            if mismatch.is_none() && buf[..take] != expected[pos..pos + take] {
                let off = buf[..take]
                    .iter()
                    .zip(&expected[pos..pos + take])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                mismatch = Some((pos + off) as u64);
            }
            pos += take;
            if pos == expected.len() {
                done = true;
                let _ = tx.send(ServerOut::Done(Instant::now(), mismatch));
            }
        }
        if !done {
            let _ = tx.send(ServerOut::Closed(pos as u64));
        }
    });
    rx
}

/// Waits for a `Line` starting with `prefix` from a server reader.
fn server_line(
    rx: &Receiver<ServerOut>,
    prefix: &str,
    timeout: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(|| format!("no `{prefix}` from the server within {timeout:?}"))?;
        match rx.recv_timeout(left) {
            Ok(ServerOut::Line(l)) if l.starts_with(prefix) => return Ok(l),
            Ok(ServerOut::Line(_)) => {}
            Ok(ServerOut::Closed(_)) => {
                return Err(format!("server stdout closed before `{prefix}`"))
            }
            Ok(ServerOut::Done(..)) => return Err("data before the status line".into()),
            Err(_) => return Err(format!("no `{prefix}` from the server within {timeout:?}")),
        }
    }
}

/// CPU of a process: nanoseconds of its live threads, and clock ticks (all threads).
fn cpu(pid: u32) -> (u64, u64) {
    let (u, s) = bu::cpu_ticks(pid);
    (bu::cpu_ns(pid), u + s)
}

struct Transfer {
    client: Side,
    server: Side,
    bytes: u64,
    secs: f64,
    /// CPU seconds (utime + stime, all threads).
    client_cpu_s: f64,
    server_cpu_s: f64,
    /// On-CPU seconds of the threads alive at the end (`schedstat`).
    client_live_s: f64,
    server_live_s: f64,
    server_rss_kib: u64,
    server_hwm_kib: u64,
    client_rss_kib: u64,
    client_hwm_kib: u64,
    /// Datagrams the kernel dropped on the client's / server's sockets during the transfer.
    client_drops: u64,
    server_drops: u64,
}

impl Transfer {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }

    fn per_mib(&self, cpu_s: f64) -> f64 {
        cpu_s * 1e3 / (self.bytes as f64 / (1u64 << 20) as f64)
    }
}

fn transfer(
    client: Side,
    server: Side,
    dht: &LocalDht,
    data: &Arc<Vec<u8>>,
    opts: &Opts,
    i: u64,
    tck: u64,
) -> Result<Transfer, String> {
    let key_seed = seed("server", i);
    let mut sg = ChildGuard::spawn(
        server_command(server, dht, &key_seed, opts),
        format!("{} chat server", server.name()),
        opts.verbose,
    )
    .map_err(|e| e.to_string())?;
    let out = read_server(sg.child.stdout.take().expect("piped stdout"), data.clone());
    let listening = server_line(&out, "listening on:", Duration::from_secs(60))?;
    let key = listening
        .trim_start_matches("listening on:")
        .trim()
        .to_string();
    let mut cg = ChildGuard::spawn(
        client_command(client, dht, &key, opts),
        format!("{} chat client", client.name()),
        opts.verbose,
    )
    .map_err(|e| e.to_string())?;
    let client_lines = cg.lines();
    bu::wait_line(&client_lines, "got connection!", Duration::from_secs(60))
        .ok_or("the client did not print `got connection!` within 60 s")?;
    server_line(&out, "got connection!", Duration::from_secs(30))?;
    let mut stdin = cg.child.stdin.take().ok_or("client stdin")?;
    let (cpid, spid) = (cg.pid(), sg.pid());
    let (c0, s0) = (cpu(cpid), cpu(spid));
    let (cd0, sd0) = (bu::udp_drops(cpid), bu::udp_drops(spid));
    let t0 = Instant::now();
    let feed = data.clone();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        for chunk in feed.chunks(1 << 16) {
            stdin.write_all(chunk)?;
        }
        stdin.flush()
        // Dropping stdin closes it: the client ends its side of the connection.
    });
    let timeout = Duration::from_secs(30 + opts.mib * 2);
    let (t1, mismatch) = loop {
        match out.recv_timeout(timeout) {
            Ok(ServerOut::Done(t, m)) => break (t, m),
            Ok(ServerOut::Line(_)) => {}
            Ok(ServerOut::Closed(n)) => {
                return Err(format!(
                    "server stdout closed after {n} of {} bytes",
                    data.len()
                ))
            }
            Err(_) => return Err(format!("the transfer did not finish within {timeout:?}")),
        }
    };
    let (c1, s1) = (cpu(cpid), cpu(spid));
    let (cd1, sd1) = (bu::udp_drops(cpid), bu::udp_drops(spid));
    let t = Transfer {
        client,
        server,
        bytes: data.len() as u64,
        secs: (t1 - t0).as_secs_f64(),
        client_cpu_s: c1.1.saturating_sub(c0.1) as f64 / tck as f64,
        server_cpu_s: s1.1.saturating_sub(s0.1) as f64 / tck as f64,
        client_live_s: c1.0.saturating_sub(c0.0) as f64 / 1e9,
        server_live_s: s1.0.saturating_sub(s0.0) as f64 / 1e9,
        server_rss_kib: bu::rss_kib(spid),
        server_hwm_kib: bu::status_kib(spid, "VmHWM"),
        client_rss_kib: bu::rss_kib(cpid),
        client_hwm_kib: bu::status_kib(cpid, "VmHWM"),
        client_drops: cd1.saturating_sub(cd0),
        server_drops: sd1.saturating_sub(sd0),
    };
    if let Some(off) = mismatch {
        return Err(format!("the server wrote a wrong byte at offset {off}"));
    }
    match writer.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("writing the client's stdin: {e}")),
        Err(_) => return Err("the stdin writer panicked".into()),
    }
    drop(cg);
    drop(sg);
    Ok(t)
}

fn throughput_report(rows: &[Transfer], opts: &Opts, tck: u64, failures: &[String]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Median of {} transfers of {} MiB per pairing (pairings interleaved; fresh server and client processes each); CPU = utime + stime of the whole process over the transfer.\n",
        opts.runs, opts.mib
    );
    let _ = writeln!(
        out,
        "| client -> server | MB/s | client CPU ms/MiB | server CPU ms/MiB | client CPU share | server CPU share | server RSS after | server peak RSS | client peak RSS | datagrams dropped at server / client (all runs) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &(c, s) in &opts.pairs {
        let r: Vec<&Transfer> = rows
            .iter()
            .filter(|t| t.client == c && t.server == s)
            .collect();
        if r.is_empty() {
            continue;
        }
        let med = |f: &dyn Fn(&Transfer) -> f64| bu::median(r.iter().map(|t| f(t)).collect());
        let _ = writeln!(
            out,
            "| {} -> {} | {:.0} | {:.1} | {:.1} | {:.0}% | {:.0}% | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} / {} |",
            c.name(),
            s.name(),
            med(&|t| t.mb_s()),
            med(&|t| t.per_mib(t.client_cpu_s)),
            med(&|t| t.per_mib(t.server_cpu_s)),
            med(&|t| t.client_cpu_s / t.secs * 100.0),
            med(&|t| t.server_cpu_s / t.secs * 100.0),
            med(&|t| t.server_rss_kib as f64 / 1024.0),
            med(&|t| t.server_hwm_kib as f64 / 1024.0),
            med(&|t| t.client_hwm_kib as f64 / 1024.0),
            r.iter().map(|t| t.server_drops).sum::<u64>(),
            r.iter().map(|t| t.client_drops).sum::<u64>(),
        );
    }
    let _ = writeln!(out, "\nEvery run (MB/s; client / server CPU ms per MiB from utime + stime in ticks of 1/{tck} s, and in parentheses the on-CPU time of the threads alive at the end, from schedstat):\n");
    for t in rows {
        let _ = writeln!(
            out,
            "- {} -> {}: {:.0} MB/s in {:.2} s; client {:.1} ({:.1}) ms/MiB, server {:.1} ({:.1}) ms/MiB; datagrams dropped by the kernel at the server {}, at the client {}; client RSS {:.1} MiB",
            t.client.name(),
            t.server.name(),
            t.mb_s(),
            t.secs,
            t.per_mib(t.client_cpu_s),
            t.per_mib(t.client_live_s),
            t.per_mib(t.server_cpu_s),
            t.per_mib(t.server_live_s),
            t.server_drops,
            t.client_drops,
            t.client_rss_kib as f64 / 1024.0,
        );
    }
    for f in failures {
        let _ = writeln!(out, "- FAILED: {f}");
    }
    out
}

// ----- idle memory ----------------------------------------------------------------------------

struct Idle {
    side: Side,
    rss_listening_kib: u64,
    rss_idle_kib: u64,
    anon_idle_kib: u64,
    hwm_kib: u64,
    threads: usize,
    cpu_ticks: u64,
}

fn idle_memory(dht: &LocalDht, opts: &Opts) -> Vec<Idle> {
    let mut servers = Vec::new();
    for side in [Side::Rust, Side::Js] {
        let key_seed = seed("idle server", side as u64);
        let mut g = ChildGuard::spawn(
            server_command(side, dht, &key_seed, opts),
            format!("{} chat server (idle)", side.name()),
            opts.verbose,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let lines = g.lines();
        bu::wait_line(&lines, "listening on:", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{} did not print `listening on:` within 60 s", g.what));
        let rss = bu::rss_kib(g.pid());
        let (u, s) = bu::cpu_ticks(g.pid());
        eprintln!("{}: listening, {} KiB resident", g.what, rss);
        servers.push((side, g, lines, rss, u + s));
    }
    std::thread::sleep(opts.idle);
    servers
        .iter()
        .map(|(side, g, _, rss, ticks0)| {
            let pid = g.pid();
            let (u, s) = bu::cpu_ticks(pid);
            Idle {
                side: *side,
                rss_listening_kib: *rss,
                rss_idle_kib: bu::rss_kib(pid),
                anon_idle_kib: bu::status_kib(pid, "RssAnon"),
                hwm_kib: bu::status_kib(pid, "VmHWM"),
                threads: bu::threads(pid),
                cpu_ticks: (u + s).saturating_sub(*ticks0),
            }
        })
        .collect()
}

fn idle_report(rows: &[Idle], dht: &LocalDht, opts: &Opts, tck: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Both servers started at the same time on the local DHT, no client ever connected.\n"
    );
    let _ = writeln!(
        out,
        "| server | RSS when listening | RSS after {:.0} s idle | of which anonymous | peak RSS | threads | CPU over the idle time |",
        opts.idle.as_secs_f64()
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} | {:.2} s ({:.3}% of a core) |",
            r.side.name(),
            r.rss_listening_kib as f64 / 1024.0,
            r.rss_idle_kib as f64 / 1024.0,
            r.anon_idle_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0,
            r.threads,
            r.cpu_ticks as f64 / tck as f64,
            r.cpu_ticks as f64 / tck as f64 / opts.idle.as_secs_f64().max(1e-9) * 100.0,
        );
    }
    let nodes: Vec<String> = dht
        .nodes
        .iter()
        .map(|n| format!("{:.1}", bu::rss_kib(n.pid()) as f64 / 1024.0))
        .collect();
    let _ = writeln!(
        out,
        "\nFor scale: the local DHT's `hyperdht-chat node` processes hold {} MiB resident.",
        nodes.join(", ")
    );
    out
}

// ----- main -----------------------------------------------------------------------------------

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let opts = match Opts::parse(&argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench_chat: {e}");
            std::process::exit(2);
        }
    };
    let tck = bu::clock_ticks_per_sec();
    let load0 = bu::load_average();
    let t0 = Instant::now();
    let dht = LocalDht::start(&opts.chat, opts.dht_nodes, opts.verbose)
        .unwrap_or_else(|e| panic!("local DHT: {e}"));
    eprintln!(
        "local DHT: {} nodes, bootstrap {}",
        dht.nodes.len(),
        dht.bootstrap
    );
    let mut out = String::new();
    if opts.runs > 0 && !opts.pairs.is_empty() {
        let data = Arc::new(pattern((opts.mib << 20) as usize));
        let mut rows = Vec::new();
        let mut failures = Vec::new();
        let mut i = 0u64;
        for run in 0..opts.runs {
            let n = opts.pairs.len();
            for k in 0..n {
                let (c, s) = opts.pairs[(k + run) % n];
                i += 1;
                match transfer(c, s, &dht, &data, &opts, i, tck) {
                    Ok(t) => {
                        eprintln!(
                            "run {}: {} -> {}: {:.0} MB/s, client {:.1} ms/MiB, server {:.1} ms/MiB",
                            run + 1,
                            c.name(),
                            s.name(),
                            t.mb_s(),
                            t.per_mib(t.client_cpu_s),
                            t.per_mib(t.server_cpu_s)
                        );
                        rows.push(t);
                    }
                    Err(e) => {
                        let f = format!("run {}: {} -> {}: {e}", run + 1, c.name(), s.name());
                        eprintln!("{f}");
                        failures.push(f);
                    }
                }
            }
        }
        out.push_str("### Chat throughput (client stdin -> server stdout)\n\n");
        out.push_str(&throughput_report(&rows, &opts, tck, &failures));
        out.push('\n');
    }
    if !opts.idle.is_zero() {
        eprintln!("idle servers: {:.0} s", opts.idle.as_secs_f64());
        let rows = idle_memory(&dht, &opts);
        out.push_str("### Memory of an idle chat server\n\n");
        out.push_str(&idle_report(&rows, &dht, &opts, tck));
        out.push('\n');
    }
    let load1 = bu::load_average();
    out.push_str(&format!(
        "Load average (1 min) {load0:.2} at the start, {load1:.2} at the end; {:.0} s in all.\n",
        t0.elapsed().as_secs_f64()
    ));
    print!("{out}");
}
