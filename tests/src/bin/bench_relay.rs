//! `bench_relay`: bytes through a blind relay, the Rust relay (`hyperdht-chat relay`) next to
//! the Node.js one (`tests/js/relay-server.js`, npm `blind-relay`) in the same run: MB/s and
//! the relay process's CPU per MiB. See `BENCHMARKS.md` ("Blind relay").
//!
//! ```text
//! cargo build --release -p hyperdht-chat -p hyperdht-tests --bin hyperdht-chat --bin bench_relay
//! target/release/bench_relay             # about 20 s; markdown on stdout
//! target/release/bench_relay --help
//! ```
//!
//! Everything runs on 127.0.0.1, on a local DHT of `hyperdht-chat node` processes. The relay
//! runs as its own process; the two peers are Rust nodes in this process (`hyperdht-mio`): a
//! server that refuses to punch and hides its LAN addresses, and a client that names the
//! relay and opens no session to the server first (`fast_open` off), so the relay is their
//! only path (checked: the client's `relaying.successes` must count it). Each transfer is a
//! fresh pair of peers; the client writes `--mib` MiB of a pattern and finishes, the server
//! reads to the end and checks every byte. CPU is the relay process's utime + stime over the
//! transfer (`/proc/PID/stat`, all threads, 10 ms ticks), next to the nanosecond on-CPU time
//! of its live threads (`/proc/PID/task/*/schedstat`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hyperdht_mio::{MioNode, ServerEvent};
use hyperdht_proto::crypto::from_hex;
use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::{Config, ConnectOptions, ServerConfig};
use hyperdht_tests::bench_util::{self as bu, parse_num, ChildGuard, LocalDht, Side};

const USAGE: &str = "\
bench_relay: bytes through a blind relay, Rust relay vs Node.js relay

USAGE:
    bench_relay [FLAGS]

FLAGS:
    --mib N            MiB per transfer (default 64)
    --runs N           Transfers per relay; the median is reported (default 3)
    --relays LIST      rust,js (default both)
    --chat PATH        hyperdht-chat binary (default: next to this binary)
    --node PATH        Node.js binary (default: node)
    --verbose          Let the child processes log to stderr
    --help             This text

Only 127.0.0.1 is used. Every run stops by itself; child processes are killed on exit.
";

struct Opts {
    mib: u64,
    runs: usize,
    relays: Vec<Side>,
    chat: PathBuf,
    node: PathBuf,
    verbose: bool,
}

impl Opts {
    fn parse(argv: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            mib: 64,
            runs: 3,
            relays: vec![Side::Rust, Side::Js],
            chat: bu::chat_next_to_exe(),
            node: PathBuf::from("node"),
            verbose: false,
        };
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--mib" => o.mib = parse_num(a, it.next())?,
                "--runs" => o.runs = parse_num::<usize>(a, it.next())?.max(1),
                "--relays" => {
                    let v = it.next().ok_or("--relays needs a value")?;
                    o.relays = v
                        .split(',')
                        .map(|r| match r.trim() {
                            "rust" => Ok(Side::Rust),
                            "js" => Ok(Side::Js),
                            other => Err(format!("unknown relay {other:?}")),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--chat" => o.chat = it.next().ok_or("--chat needs a value")?.into(),
                "--node" => o.node = it.next().ok_or("--node needs a value")?.into(),
                "--verbose" => o.verbose = true,
                "--help" | "-h" => {
                    print!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown flag {other:?}; see --help")),
            }
        }
        Ok(o)
    }
}

/// A relay process and its key.
struct Relay {
    guard: ChildGuard,
    key: [u8; 32],
}

fn start_relay(side: Side, dht: &LocalDht, opts: &Opts) -> Result<Relay, String> {
    let boot = dht.bootstrap_arg();
    let cmd = match side {
        Side::Rust => {
            let mut c = bu::command(&opts.chat);
            c.args(["relay", "--bootstrap", &boot, "--host", "127.0.0.1"]);
            if !opts.verbose {
                c.env("RUST_LOG", "warn");
            }
            c
        }
        Side::Js => {
            let script = hyperdht_tests::js::js_dir().join("relay-server.js");
            let mut c = bu::command(&opts.node);
            c.arg(script)
                .env("HYPERDHT_BOOTSTRAP", &boot)
                .env("RELAY_HOST", "127.0.0.1");
            c
        }
    };
    let mut guard = ChildGuard::spawn(cmd, format!("{} relay", side.name()), opts.verbose)
        .map_err(|e| e.to_string())?;
    let lines = guard.lines();
    let line = bu::wait_line(&lines, "relay listening on:", Duration::from_secs(30))
        .ok_or_else(|| format!("the {} relay did not start", side.name()))?;
    let hex = line.trim_start_matches("relay listening on:").trim();
    let key = from_hex(hex)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| format!("bad relay key in {line:?}"))?;
    Ok(Relay { guard, key })
}

/// One transfer's figures.
struct Run {
    mb_per_s: f64,
    cpu_ms_per_mib: f64,
    cpu_ns_ms_per_mib: f64,
}

fn peer(dht: &LocalDht, client: bool) -> Result<MioNode, String> {
    let mut c = Config::new(vec![dht.bootstrap]);
    c.host = [127, 0, 0, 1].into();
    c.port = 0;
    c.quick_firewall = false;
    c.local_connection = !client;
    let node = MioNode::spawn(c).map_err(|e| e.to_string())?;
    node.wait_bootstrapped().map_err(|e| e.to_string())?;
    Ok(node)
}

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn transfer(relay: &Relay, dht: &LocalDht, run: usize, opts: &Opts) -> Result<Run, String> {
    let server_node = peer(dht, false)?;
    let client_node = peer(dht, true)?;
    let key = KeyPair::from_seed(&[run as u8 ^ 0x5a; 32]);
    let mut config = ServerConfig::default();
    config.holepunch = false;
    config.hide_local_addresses = true;
    let server = server_node
        .listen(&key, config)
        .map_err(|e| e.to_string())?;
    let mut options = ConnectOptions::default();
    options.fast_open = false;
    options.relay_through = Some(relay.key);
    let conn = client_node
        .connect_with(
            key.public_key(),
            options.with_key_pair(&KeyPair::from_seed(&[0xc1; 32])),
        )
        .map_err(|e| format!("connect through the relay: {e}"))?;
    if client_node
        .info()
        .map_err(|e| e.to_string())?
        .stats
        .relaying
        .successes
        != 1
    {
        return Err("the connection did not go through the relay".into());
    }
    let accepted = loop {
        match server.events().recv_timeout(Duration::from_secs(30)) {
            Ok(ServerEvent::Connected(c)) => break *c,
            Ok(_) => {}
            Err(_) => return Err("the server saw no connection".into()),
        }
    };
    let bytes = opts.mib << 20;
    let pid = relay.guard.pid();
    let (ticks0, ns0) = (bu::cpu_ticks(pid), bu::cpu_ns(pid));
    let start = Instant::now();
    let mut writer = conn.writer.clone();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(buf.len() as u64) as usize;
            for (j, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(sent + j as u64);
            }
            writer.write_all(&buf[..n])?;
            sent += n as u64;
        }
        writer.flush()?;
        writer.finish()
    });
    let mut reader = accepted.reader;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        if buf[..n]
            .iter()
            .enumerate()
            .any(|(j, &b)| b != pattern(got + j as u64))
        {
            return Err(format!("corrupt byte near offset {got}"));
        }
        got += n as u64;
    }
    let took = start.elapsed();
    let (ticks1, ns1) = (bu::cpu_ticks(pid), bu::cpu_ns(pid));
    sender
        .join()
        .map_err(|_| "the writer panicked".to_string())?
        .map_err(|e| e.to_string())?;
    if got != bytes {
        return Err(format!("{got} of {bytes} bytes arrived"));
    }
    let tick_ms = 1000.0 / bu::clock_ticks_per_sec() as f64;
    let ticks = (ticks1.0 + ticks1.1).saturating_sub(ticks0.0 + ticks0.1);
    let mib = opts.mib as f64;
    client_node.shutdown();
    server_node.shutdown();
    Ok(Run {
        mb_per_s: bytes as f64 / 1e6 / took.as_secs_f64(),
        cpu_ms_per_mib: ticks as f64 * tick_ms / mib,
        cpu_ns_ms_per_mib: ns1.saturating_sub(ns0) as f64 / 1e6 / mib,
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let opts = Opts::parse(&argv).unwrap_or_else(|e| {
        eprintln!("bench_relay: {e}");
        std::process::exit(2);
    });
    let dht = LocalDht::start(&opts.chat, 4, opts.verbose).unwrap_or_else(|e| {
        eprintln!("bench_relay: local DHT: {e}");
        std::process::exit(1);
    });
    let mut rows = Vec::new();
    for &side in &opts.relays {
        let relay = start_relay(side, &dht, &opts).unwrap_or_else(|e| {
            eprintln!("bench_relay: {e}");
            std::process::exit(1);
        });
        let mut runs = Vec::new();
        for run in 0..opts.runs {
            match transfer(&relay, &dht, run, &opts) {
                Ok(r) => {
                    eprintln!(
                        "{} relay: {:.0} MB/s, relay CPU {:.2} ms/MiB ({:.2} by schedstat)",
                        side.name(),
                        r.mb_per_s,
                        r.cpu_ms_per_mib,
                        r.cpu_ns_ms_per_mib
                    );
                    runs.push(r);
                }
                Err(e) => {
                    eprintln!("bench_relay: {} relay, run {run}: {e}", side.name());
                    std::process::exit(1);
                }
            }
        }
        let med = |f: fn(&Run) -> f64| bu::median(runs.iter().map(f).collect());
        rows.push((
            side,
            med(|r| r.mb_per_s),
            med(|r| r.cpu_ms_per_mib),
            med(|r| r.cpu_ns_ms_per_mib),
        ));
    }
    println!("### Blind relay throughput\n");
    println!(
        "Median of {} transfers of {} MiB per relay; Rust peers; CPU of the relay process.\n",
        opts.runs, opts.mib
    );
    println!("| relay | MB/s | relay CPU ms/MiB (utime+stime) | relay CPU ms/MiB (schedstat) |");
    println!("|---|---:|---:|---:|");
    for (side, mbps, cpu, ns) in &rows {
        println!("| {} | {mbps:.0} | {cpu:.2} | {ns:.2} |", side.name());
    }
    if let (Some(r), Some(j)) = (
        rows.iter().find(|r| r.0 == Side::Rust),
        rows.iter().find(|r| r.0 == Side::Js),
    ) {
        println!(
            "\nRust / JS: {:.2}x the throughput at {:.2} of the relay CPU per MiB (schedstat).",
            r.1 / j.1,
            r.3 / j.3
        );
    }
}
