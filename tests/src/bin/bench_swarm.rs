//! `bench_swarm`: how long N topic peers (the Hyperswarm guide's peer: `hyperdht-chat swarm`
//! and `tests/js/chat-swarm.js` on hyperswarm 4.17.2) take to reach the full mesh on a local
//! DHT, all Rust, all JS and half and half, and the resident memory per peer once meshed. See
//! `BENCHMARKS.md` ("Swarm").
//!
//! ```text
//! cargo build --release -p hyperdht-chat -p hyperdht-tests --bin hyperdht-chat --bin bench_swarm
//! target/release/bench_swarm               # N = 10 and 50; markdown on stdout
//! target/release/bench_swarm --help
//! ```
//!
//! One run: a first peer joins a fresh topic; each next peer starts once the one before printed
//! `joined topic:` (the topic is announced), and the clock runs from the first start until
//! every peer has printed `* got a connection from:` for N - 1 different keys. Memory: VmRSS of each peer process at
//! that moment. Everything runs on 127.0.0.1; child processes are killed when the benchmark
//! ends.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use hyperdht_tests::bench_util::{self as bu, parse_num, ChildGuard, LocalDht};

const USAGE: &str = "\
bench_swarm: time to the full mesh and memory per peer of N topic peers, Rust vs JS

USAGE:
    bench_swarm [FLAGS]

FLAGS:
    --peers LIST       Comma-separated peer counts (default 10,50)
    --mixes LIST       Comma-separated among rust,js,half (default all three)
    --runs N           Runs per cell; the median is reported (default 3)
    --dht-nodes N      Nodes of the local DHT (default 24: a lookup reply lists at most 20 of
                       a topic's peers, so 50 peers need more than a few nodes)
    --wait SECS        Give up on a run after this long (default 120)
    --chat PATH        hyperdht-chat binary (default: next to this binary)
    --node PATH        Node.js binary (default: node)
    --verbose          Let the child processes log to stderr
    --help             This text

Only 127.0.0.1 is used. Every run stops by itself; child processes are killed on exit.
";

struct Opts {
    peers: Vec<usize>,
    mixes: Vec<String>,
    runs: usize,
    dht_nodes: usize,
    wait: Duration,
    chat: PathBuf,
    node: PathBuf,
    verbose: bool,
}

fn parse_opts() -> Result<Opts, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut o = Opts {
        peers: vec![10, 50],
        mixes: vec!["rust".into(), "js".into(), "half".into()],
        runs: 3,
        dht_nodes: 24,
        wait: Duration::from_secs(120),
        chat: exe.with_file_name("hyperdht-chat"),
        node: PathBuf::from("node"),
        verbose: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--peers" => {
                o.peers = value()?
                    .split(',')
                    .map(|s| parse_num("--peers", Some(&s.to_string())))
                    .collect::<Result<_, _>>()?
            }
            "--mixes" => o.mixes = value()?.split(',').map(str::to_string).collect(),
            "--runs" => o.runs = parse_num("--runs", Some(&value()?))?,
            "--dht-nodes" => o.dht_nodes = parse_num("--dht-nodes", Some(&value()?))?,
            "--wait" => o.wait = Duration::from_secs(parse_num("--wait", Some(&value()?))?),
            "--chat" => o.chat = PathBuf::from(value()?),
            "--node" => o.node = PathBuf::from(value()?),
            "--verbose" => o.verbose = true,
            "--help" | "-h" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}\n\n{USAGE}")),
        }
    }
    for m in &o.mixes {
        if !["rust", "js", "half"].contains(&m.as_str()) {
            return Err(format!("--mixes: unknown mix {m}"));
        }
    }
    Ok(o)
}

/// One peer process and its stdout.
struct Peer {
    guard: ChildGuard,
    lines: Receiver<String>,
    met: BTreeSet<String>,
}

fn spawn_peer(o: &Opts, dht: &LocalDht, js: bool, topic: Option<&str>) -> Result<Peer, String> {
    let boot = dht.bootstrap_arg();
    let cmd = if js {
        let mut c = bu::command(&o.node);
        c.arg(hyperdht_tests::js::js_dir().join("chat-swarm.js"))
            .args(topic)
            .env("HYPERDHT_BOOTSTRAP", &boot);
        c
    } else {
        let mut c = bu::command(&o.chat);
        c.arg("swarm").args(topic).args([
            "--bootstrap",
            &boot,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ]);
        c
    };
    let what = if js {
        "JS swarm peer"
    } else {
        "Rust swarm peer"
    };
    let mut guard = ChildGuard::spawn(cmd, what, o.verbose).map_err(|e| e.to_string())?;
    let lines = guard.lines();
    Ok(Peer {
        guard,
        lines,
        met: BTreeSet::new(),
    })
}

/// What one run measured.
struct Sample {
    mesh: Duration,
    rust_rss_kib: Vec<f64>,
    js_rss_kib: Vec<f64>,
}

fn run(o: &Opts, dht: &LocalDht, n: usize, mix: &str, run: usize) -> Result<Sample, String> {
    let is_js = |i: usize| match mix {
        "js" => true,
        "rust" => false,
        // Half and half, the first peer alternating per run.
        _ => (i + run) % 2 == 1,
    };
    // Peers join one after another: each starts once the one before announced the topic
    // (peers that start at the same instant can miss each other until the next refresh, 10
    // minutes on, in hyperswarm as here).
    let start = Instant::now();
    let first = spawn_peer(o, dht, is_js(0), None)?;
    let joined = bu::wait_line(&first.lines, "joined topic:", o.wait)
        .ok_or("the first peer did not join its topic")?;
    let topic = joined
        .trim_start_matches("joined topic:")
        .trim()
        .to_string();
    let mut peers = vec![first];
    for i in 1..n {
        let p = spawn_peer(o, dht, is_js(i), Some(&topic))?;
        peers.push(p);
        let p = peers.last_mut().expect("just pushed");
        let deadline = Instant::now() + o.wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = p
                .lines
                .recv_timeout(left)
                .map_err(|_| format!("peer {i} did not join the topic"))?;
            if let Some(rest) = line.strip_prefix("* got a connection from:") {
                p.met.insert(rest.trim_end_matches('*').trim().to_string());
            }
            if line.starts_with("joined topic:") {
                if std::env::var_os("BENCH_SWARM_TRACE").is_some() {
                    eprintln!("  peer {i} joined at {:.3?}", start.elapsed());
                }
                break;
            }
        }
    }
    let all_joined = start.elapsed();
    let deadline = start + o.wait;
    let prefix = "* got a connection from:";
    loop {
        let mut done = true;
        for p in &mut peers {
            while let Ok(line) = p.lines.try_recv() {
                if let Some(rest) = line.strip_prefix(prefix) {
                    p.met.insert(rest.trim_end_matches('*').trim().to_string());
                }
            }
            done &= p.met.len() >= n - 1;
        }
        if done {
            break;
        }
        if Instant::now() > deadline {
            let counts: Vec<usize> = peers.iter().map(|p| p.met.len()).collect();
            return Err(format!(
                "no full mesh within {:?}: peers met {counts:?}",
                o.wait
            ));
        }
        // Polls the children's output; the mesh time is read off the clock, not this tick.
        std::thread::sleep(Duration::from_millis(5));
    }
    let mesh = start.elapsed();
    eprintln!("  all {n} joined after {all_joined:.2?}, full mesh after {mesh:.2?}");
    let mut sample = Sample {
        mesh,
        rust_rss_kib: Vec::new(),
        js_rss_kib: Vec::new(),
    };
    for (i, p) in peers.iter().enumerate() {
        let rss = bu::rss_kib(p.guard.pid()) as f64;
        if is_js(i) {
            sample.js_rss_kib.push(rss);
        } else {
            sample.rust_rss_kib.push(rss);
        }
    }
    Ok(sample)
}

fn main() {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if !o.mixes.iter().all(|m| m == "rust") {
        // The JS peers need tests/js/node_modules (hyperswarm 4.17.2).
        if !hyperdht_tests::js::interop_enabled() {
            eprintln!("Node.js interop is disabled; run with --mixes rust");
            std::process::exit(2);
        }
    }
    let dht = LocalDht::start(&o.chat, o.dht_nodes, o.verbose).unwrap_or_else(|e| {
        eprintln!("local DHT: {e}");
        std::process::exit(1);
    });
    eprintln!(
        "local DHT of {} nodes at {}; load average {:.2}",
        o.dht_nodes,
        dht.bootstrap,
        bu::load_average()
    );
    println!("| peers | mix | time to full mesh (median) | runs | Rust RSS per peer (median) | JS RSS per peer (median) |");
    println!("|---:|---|---:|---|---:|---:|");
    for &n in &o.peers {
        for mix in &o.mixes {
            let mut times = Vec::new();
            let (mut rust_rss, mut js_rss) = (Vec::new(), Vec::new());
            for r in 0..o.runs {
                match run(&o, &dht, n, mix, r) {
                    Ok(s) => {
                        eprintln!("{n} {mix} run {r}: {:?}", s.mesh);
                        times.push(s.mesh.as_secs_f64());
                        rust_rss.extend(s.rust_rss_kib);
                        js_rss.extend(s.js_rss_kib);
                    }
                    Err(e) => eprintln!("{n} {mix} run {r}: {e}"),
                }
            }
            let rss = |v: Vec<f64>| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.1} MiB", bu::median(v) / 1024.0)
                }
            };
            let runs: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
            println!(
                "| {n} | {mix} | {} | {} | {} | {} |",
                if times.is_empty() {
                    "failed".to_string()
                } else {
                    format!("{:.2} s", bu::median(times.clone()))
                },
                runs.join(", "),
                rss(rust_rss),
                rss(js_rss)
            );
        }
    }
    eprintln!("load average at the end {:.2}", bu::load_average());
}
