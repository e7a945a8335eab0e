//! The NAT pair matrix on the deterministic simulator (`hyperdht_tests::sim`): a server behind
//! NAT kind S listens, a client behind kind C connects, 100 seeds per cell, every run on a fresh
//! 20-node DHT of open hosts. Kinds:
//!
//! - `open`: a public host, no NAT;
//! - `consistent`: endpoint-independent mapping and filtering ("full cone");
//! - `restricted`: endpoint-independent mapping, address-and-port-dependent filtering (Linux
//!   MASQUERADE with a stateful firewall);
//! - `random`: address-and-port-dependent mapping with random ports and filtering
//!   (`MASQUERADE --random-fully`).
//!
//! Every NAT forgets idle bindings after 30-120 s (drawn per run), and the internet is
//! [`INTERNET_HOPS`] routers deep, so hyperdht's TTL-5 probes open the sender's mapping but die
//! before the far NAT.
//!
//! Success is the client's `Connected` (the path is open and the server's secret-stream header
//! came over it); where hyperdht has a strategy, at least 99% of the attempts must succeed, and
//! the server must see its side open (`Connected`) as often; random <-> random must fail fast
//! with a holepunch error. The matrix (successes, median, 90th percentile and maximum of the
//! virtual time from `connect` to `Connected`, failure reasons, the server's `Incoming` and
//! `Connected`) is written to `target/nat-matrix.md`.
//!
//! Knobs: `SIM_NAT_SEEDS=<n>` seeds per cell (default 100), `SIM_NAT_ONLY=<client>/<server>`
//! one cell, `SIM_NAT_LOSS=<p>` datagram loss on every link (the 99% bar still applies),
//! `SIM_NAT_SEED0=<n>` the first seed, `SIM_NAT_TRACE=1` the transcript of each run (with
//! `RUST_LOG` for the nodes' logs), `SIM_NAT_THREADS=<n>` worker threads (default: one per
//! core).
//!
//! Also: random <-> random through a blind relay served by a Rust node (`SIM_RELAY_SEEDS`,
//! default 10; 200 pass), servers reachable after their bindings expired, and keep-alives.

use core::time::Duration;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use hyperdht_proto::dht::KeyPair;
use hyperdht_proto::rng::Rng;
use hyperdht_proto::{Config, ConnId, ConnectError, Event, ServerConfig, Timestamp};
use hyperdht_tests::sim::{LinkConfig, NatConfig, NodeIdx, Sim, INTERNET_HOPS};

/// The NAT kinds of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Open,
    Consistent,
    Restricted,
    Random,
}

const KINDS: [Kind; 4] = [Kind::Open, Kind::Consistent, Kind::Restricted, Kind::Random];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Open => "open",
            Kind::Consistent => "consistent",
            Kind::Restricted => "restricted",
            Kind::Random => "random",
        }
    }

    fn parse(s: &str) -> Kind {
        *KINDS
            .iter()
            .find(|k| k.name() == s)
            .unwrap_or_else(|| panic!("unknown NAT kind {s:?}"))
    }

    fn nat(self, timeout: Duration) -> Option<NatConfig> {
        match self {
            Kind::Open => None,
            Kind::Consistent => Some(NatConfig::full_cone(timeout)),
            Kind::Restricted => Some(NatConfig::port_restricted(timeout)),
            Kind::Random => Some(NatConfig::symmetric(timeout)),
        }
    }
}

/// Whether hyperdht has a strategy for the pair (only two randomising NATs defeat it).
fn punchable(client: Kind, server: Kind) -> bool {
    !(client == Kind::Random && server == Kind::Random)
}

/// DHT nodes per run (3 bootstrap nodes and these).
const DHT_PEERS: usize = 17;
/// How long a run waits for the client's verdict.
const CONNECT_LIMIT: Duration = Duration::from_secs(90);
/// The longest a double-random failure may take.
const FAST_FAILURE: Duration = Duration::from_secs(15);

/// One attempt's outcome.
#[derive(Clone, Debug)]
struct Outcome {
    seed: u64,
    /// `connect` to the client's `Connected` or `ConnectFailed`.
    elapsed: Duration,
    /// `None` = connected.
    failure: Option<Failure>,
    server_incoming: bool,
    server_connected: bool,
    /// Datagrams whose TTL ran out on the way (hyperdht's TTL-5 probes).
    ttl_expired: u64,
    /// Datagrams NATs dropped on the way in.
    filtered: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    Reason(ConnectErrorKey),
    /// No verdict within [`CONNECT_LIMIT`].
    NoVerdict,
    /// The connection closed (its stream timed out, ...) before it was open.
    ClosedBeforeOpen,
    /// The server never got to `ServerListening`, or a node did not bootstrap.
    Setup,
}

/// `ConnectError` ordered by its name, for histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ConnectErrorKey(&'static str);

fn key(e: ConnectError) -> ConnectErrorKey {
    ConnectErrorKey(match e {
        ConnectError::PeerNotFound => "PeerNotFound",
        ConnectError::PeerConnectionFailed => "PeerConnectionFailed",
        ConnectError::ServerIncompatible => "ServerIncompatible",
        ConnectError::ServerError => "ServerError",
        ConnectError::CannotHolepunch => "CannotHolepunch",
        ConnectError::HolepunchAborted => "HolepunchAborted",
        ConnectError::HolepunchProbeTimeout => "HolepunchProbeTimeout",
        ConnectError::DoubleRandomNats => "DoubleRandomNats",
        ConnectError::HolepunchInvalid => "HolepunchInvalid",
        ConnectError::RemoteAborted => "RemoteAborted",
        ConnectError::RemoteNotHolepunching => "RemoteNotHolepunching",
        ConnectError::RemoteNotHolepunchable => "RemoteNotHolepunchable",
        ConnectError::Destroyed => "Destroyed",
        _ => "other",
    })
}

impl Failure {
    fn name(self) -> &'static str {
        match self {
            Failure::Reason(k) => k.0,
            Failure::NoVerdict => "no verdict",
            Failure::ClosedBeforeOpen => "closed before open",
            Failure::Setup => "setup failed",
        }
    }

    /// A holepunch error: how hyperdht reports that no strategy fits or punching failed.
    fn is_holepunch_error(self) -> bool {
        matches!(
            self.name(),
            "DoubleRandomNats"
                | "HolepunchAborted"
                | "HolepunchProbeTimeout"
                | "RemoteAborted"
                | "RemoteNotHolepunchable"
                | "CannotHolepunch"
        )
    }
}

/// Places a node of `kind`: on a public host, or behind a new NAT of that kind.
fn place(sim: &mut Sim, kind: Kind, cfg: Config, timeout: Duration) -> NodeIdx {
    match kind.nat(timeout) {
        None => sim.add_node(cfg),
        Some(nat) => {
            let n = sim.add_nat(nat);
            sim.add_node_behind(n, cfg)
        }
    }
}

fn run_until_event(
    sim: &mut Sim,
    idx: NodeIdx,
    limit: Timestamp,
    mut pred: impl FnMut(&Event) -> bool,
) -> Option<(Timestamp, Event)> {
    let mut seen = 0;
    let mut hit = None;
    sim.run_until_condition(limit, |s| {
        let evs = s.events(idx);
        while seen < evs.len() {
            if pred(&evs[seen].1) {
                hit = Some(evs[seen].clone());
                return true;
            }
            seen += 1;
        }
        false
    });
    hit
}

/// How a run differs from the matrix default.
#[derive(Clone, Copy, Debug, Default)]
struct RunOpts {
    /// Time between `ServerListening` and `connect` (default: 0-20 s, drawn).
    idle: Option<Duration>,
    /// NAT binding timeout (default: 30-120 s, drawn per NAT).
    binding_timeout: Option<Duration>,
    /// Datagram loss on every link (default none).
    loss: f64,
    /// Print the transcript and events.
    trace: bool,
}

/// One connection attempt from a `client` host to a `server` host.
fn run_one(client: Kind, server: Kind, seed: u64, opts: RunOpts) -> Outcome {
    let trace = opts.trace;
    // Distinct runs per cell: the cell in the high bits.
    let cell = (server as u64) * 4 + client as u64;
    let sim_seed = (cell << 32) | (seed & 0xffff_ffff);
    let mut sim = Sim::new(sim_seed);
    if trace {
        sim.keep_transcript(true);
    }
    // A routable-looking internet: hyperdht skips private and reserved addresses.
    sim.set_host_base(Ipv4Addr::new(37, 0, 0, 0));
    sim.set_link(LinkConfig {
        loss: opts.loss,
        ..LinkConfig::default()
    });
    let mut rng = Rng::from_seed(hyperdht_proto::crypto::hash(&sim_seed.to_le_bytes()));
    let net = sim.build_dht(
        3,
        DHT_PEERS,
        Duration::from_millis(50),
        Duration::from_secs(60),
    );
    let setup_failed = |elapsed| Outcome {
        seed,
        elapsed,
        failure: Some(Failure::Setup),
        server_incoming: false,
        server_connected: false,
        ttl_expired: 0,
        filtered: 0,
    };
    let binding_timeout = |rng: &mut Rng| {
        let drawn = Duration::from_secs(30 + rng.below(91));
        opts.binding_timeout.unwrap_or(drawn)
    };
    let (st, ct) = (binding_timeout(&mut rng), binding_timeout(&mut rng));
    let s = place(&mut sim, server, Config::new(net.bootstrap.clone()), st);
    let c = place(&mut sim, client, Config::new(net.bootstrap.clone()), ct);
    let limit = sim.now() + Duration::from_secs(30);
    if !sim.run_until_condition(limit, |sim| {
        sim.node(s).is_bootstrapped() && sim.node(c).is_bootstrapped()
    }) {
        return setup_failed(Duration::ZERO);
    }
    let server_key = KeyPair::from_seed(&rng.bytes32());
    let client_key = KeyPair::from_seed(&rng.bytes32());
    let listening = sim.command(s, |n, now| {
        n.listen(now, &server_key, ServerConfig::default())
    });
    assert!(listening.is_ok());
    let limit = sim.now() + Duration::from_secs(30);
    if run_until_event(&mut sim, s, limit, |e| {
        matches!(e, Event::ServerListening { .. })
    })
    .is_none()
    {
        return setup_failed(Duration::ZERO);
    }
    // Connect a little later, so some bindings age (at most 20 s).
    let idle = Duration::from_millis(rng.below(20_000));
    sim.run_for(opts.idle.unwrap_or(idle));
    let start = sim.now();
    let spk = server_key.public_key();
    let conn: ConnId = sim.command(c, |n, now| n.connect(now, &spk, &client_key));
    let verdict = run_until_event(&mut sim, c, start + CONNECT_LIMIT, |e| match e {
        Event::Connected { conn: id, .. }
        | Event::ConnectFailed { conn: id, .. }
        | Event::ConnClosed { conn: id, .. } => *id == conn,
        _ => false,
    });
    // Give the client's secret-stream header time to reach the server.
    sim.run_for(Duration::from_secs(2));
    let server_incoming = sim
        .events(s)
        .iter()
        .any(|(_, e)| matches!(e, Event::Incoming { .. }));
    let server_connected = sim
        .events(s)
        .iter()
        .any(|(_, e)| matches!(e, Event::Connected { .. }));
    if trace {
        for l in sim.transcript_lines().unwrap_or_default() {
            eprintln!("{l}");
        }
        eprintln!("client events: {:#?}", sim.events(c));
        eprintln!("server events: {:#?}", sim.events(s));
        eprintln!("stats: {:?}", sim.stats());
    }
    let (elapsed, failure) = match verdict {
        Some((t, Event::Connected { .. })) => (t - start, None),
        Some((t, Event::ConnectFailed { reason, .. })) => {
            (t - start, Some(Failure::Reason(key(reason))))
        }
        Some((t, Event::ConnClosed { .. })) => (t - start, Some(Failure::ClosedBeforeOpen)),
        _ => (CONNECT_LIMIT, Some(Failure::NoVerdict)),
    };
    let stats = sim.stats();
    Outcome {
        seed,
        elapsed,
        failure,
        server_incoming,
        server_connected,
        ttl_expired: stats.ttl_expired,
        filtered: stats.filtered,
    }
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.trim().parse().unwrap_or_else(|_| panic!("{name}={s:?}")))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The `p`-quantile (nearest rank) of sorted durations.
fn quantile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Cell {
    client: Kind,
    server: Kind,
    outcomes: Vec<Outcome>,
}

impl Cell {
    fn successes(&self) -> usize {
        self.outcomes.iter().filter(|o| o.failure.is_none()).count()
    }

    fn times(&self) -> Vec<Duration> {
        let mut t: Vec<Duration> = self
            .outcomes
            .iter()
            .filter(|o| o.failure.is_none())
            .map(|o| o.elapsed)
            .collect();
        t.sort();
        t
    }

    fn failures(&self) -> BTreeMap<Failure, usize> {
        let mut h = BTreeMap::new();
        for o in &self.outcomes {
            if let Some(f) = o.failure {
                *h.entry(f).or_insert(0) += 1;
            }
        }
        h
    }
}

fn report(cells: &[Cell], seeds: usize, loss: f64, wall: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# hyperdht NAT matrix (simulator)\n\n{seeds} seeds per cell; each run: a fresh DHT of \
         {} open nodes, the server's and the client's host, 5-50 ms one-way latency, {:.0}% \
         loss, \
         {INTERNET_HOPS} routers between sites, NAT bindings idle out after 30-120 s. Time is \
         virtual, from `connect` to the client's `Connected` (median, 90th percentile, max). \
         Wall time for the whole matrix: {:.1} s.\n",
        DHT_PEERS + 3,
        loss * 100.0,
        wall.as_secs_f64()
    );
    out.push_str("| server \\ client |");
    for k in KINDS {
        let _ = write!(out, " {} |", k.name());
    }
    out.push_str("\n|---|");
    for _ in KINDS {
        out.push_str("---|");
    }
    out.push('\n');
    for server in KINDS {
        let _ = write!(out, "| **{}** |", server.name());
        for client in KINDS {
            match cells
                .iter()
                .find(|c| c.client == client && c.server == server)
            {
                None => out.push_str(" - |"),
                Some(cell) => {
                    let n = cell.outcomes.len();
                    let ok = cell.successes();
                    let t = cell.times();
                    if t.is_empty() {
                        let f = cell.failures();
                        let (top, _) = f.iter().max_by_key(|(_, n)| **n).expect("failures");
                        let worst = cell
                            .outcomes
                            .iter()
                            .map(|o| o.elapsed)
                            .max()
                            .unwrap_or_default();
                        let _ = write!(
                            out,
                            " {ok}/{n}, {} (all within {}) |",
                            top.name(),
                            secs(worst)
                        );
                    } else {
                        let _ = write!(
                            out,
                            " {ok}/{n}, {} (p90 {}, max {}) |",
                            secs(quantile(&t, 0.5)),
                            secs(quantile(&t, 0.9)),
                            secs(*t.last().expect("nonempty"))
                        );
                    }
                }
            }
        }
        out.push('\n');
    }
    out.push_str(
        "\n## Per cell\n\nServer `Connected`: the server's side opened too (the client's \
         secret-stream header arrived); TTL-expired and NAT-filtered datagrams are totals over \
         the cell's runs.\n\n| client -> server | connected | median | failures | \
         server Incoming | server Connected | TTL-expired | NAT-filtered |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for cell in cells {
        let n = cell.outcomes.len();
        let t = cell.times();
        let fails: Vec<String> = cell
            .failures()
            .iter()
            .map(|(f, k)| format!("{} x{k}", f.name()))
            .collect();
        let incoming = cell.outcomes.iter().filter(|o| o.server_incoming).count();
        let sconn = cell.outcomes.iter().filter(|o| o.server_connected).count();
        let ttl: u64 = cell.outcomes.iter().map(|o| o.ttl_expired).sum();
        let filtered: u64 = cell.outcomes.iter().map(|o| o.filtered).sum();
        let _ = writeln!(
            out,
            "| {} -> {} | {}/{n} | {} | {} | {incoming}/{n} | {sconn}/{n} | {ttl} | {filtered} |",
            cell.client.name(),
            cell.server.name(),
            cell.successes(),
            if t.is_empty() {
                "-".to_string()
            } else {
                secs(quantile(&t, 0.5))
            },
            if fails.is_empty() {
                "-".to_string()
            } else {
                fails.join(", ")
            },
        );
    }
    out
}

fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => d.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

#[test]
fn nat_matrix() {
    let trace = std::env::var_os("SIM_NAT_TRACE").is_some();
    if trace {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let seeds = env_usize("SIM_NAT_SEEDS").unwrap_or(100);
    let loss: f64 = std::env::var("SIM_NAT_LOSS")
        .ok()
        .map(|s| s.trim().parse().expect("SIM_NAT_LOSS is a probability"))
        .unwrap_or(0.0);
    let seed0 = env_usize("SIM_NAT_SEED0").unwrap_or(0) as u64;
    let only = std::env::var("SIM_NAT_ONLY").ok().map(|s| {
        let (c, s) = s.split_once('/').expect("SIM_NAT_ONLY=<client>/<server>");
        (Kind::parse(c), Kind::parse(s))
    });
    let mut pairs = Vec::new();
    for server in KINDS {
        for client in KINDS {
            if only.is_none_or(|o| o == (client, server)) {
                pairs.push((client, server));
            }
        }
    }
    let jobs: Vec<(usize, u64)> = (0..pairs.len())
        .flat_map(|p| (0..seeds as u64).map(move |i| (p, seed0 + i)))
        .collect();
    let threads = env_usize("SIM_NAT_THREADS")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::new());
    let wall = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(p, seed)) = jobs.get(j) else {
                    break;
                };
                let (client, server) = pairs[p];
                let opts = RunOpts {
                    trace,
                    loss,
                    ..RunOpts::default()
                };
                let o = run_one(client, server, seed, opts);
                results.lock().expect("poisoned").push((p, o));
            });
        }
    });
    let wall = wall.elapsed();
    let mut results = results.into_inner().expect("poisoned");
    results.sort_by_key(|(p, o)| (*p, o.seed));
    let cells: Vec<Cell> = pairs
        .iter()
        .enumerate()
        .map(|(p, &(client, server))| Cell {
            client,
            server,
            outcomes: results
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, o)| o.clone())
                .collect(),
        })
        .collect();
    let text = report(&cells, seeds, loss, wall);
    let path = target_dir().join("nat-matrix.md");
    std::fs::write(&path, &text).expect("write the matrix");
    println!("NAT matrix written to {}\n\n{text}", path.display());

    let mut problems = Vec::new();
    for cell in &cells {
        let n = cell.outcomes.len();
        let name = format!("{} -> {}", cell.client.name(), cell.server.name());
        let failed: Vec<String> = cell
            .outcomes
            .iter()
            .filter(|o| o.failure.is_some())
            .take(5)
            .map(|o| format!("seed {} ({})", o.seed, o.failure.expect("failed").name()))
            .collect();
        let ttl: u64 = cell.outcomes.iter().map(|o| o.ttl_expired).sum();
        if cell.client != Kind::Open && cell.server != Kind::Open && ttl == 0 && n > 0 {
            problems.push(format!("{name}: no TTL-5 probe died on the way"));
        }
        if punchable(cell.client, cell.server) {
            if cell.successes() * 100 < n * 99 {
                problems.push(format!(
                    "{name}: {}/{n} connected; first failures: {}",
                    cell.successes(),
                    failed.join(", ")
                ));
            }
            let server_open = cell.outcomes.iter().filter(|o| o.server_connected).count();
            if server_open * 100 < n * 99 {
                let missing: Vec<String> = cell
                    .outcomes
                    .iter()
                    .filter(|o| !o.server_connected)
                    .take(5)
                    .map(|o| format!("seed {}", o.seed))
                    .collect();
                problems.push(format!(
                    "{name}: the server's side opened in only {server_open}/{n} runs: {}",
                    missing.join(", ")
                ));
            }
        } else {
            for o in &cell.outcomes {
                let clean = o.failure.is_some_and(Failure::is_holepunch_error);
                if !clean || o.elapsed > FAST_FAILURE {
                    problems.push(format!(
                        "{name}: seed {} ended with {:?} after {} (want a holepunch error within {})",
                        o.seed,
                        o.failure.map(Failure::name),
                        secs(o.elapsed),
                        secs(FAST_FAILURE)
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "NAT matrix problems (replay one run with SIM_NAT_ONLY=<client>/<server> \
         SIM_NAT_SEEDS=1 SIM_NAT_SEED0=<seed> SIM_NAT_TRACE=1):\n{}",
        problems.join("\n")
    );
}

/// A server that idles for ten minutes, well past its NAT's 30-s binding timeout, stays
/// reachable: its relay pings keep the bindings it needs, and the punch uses fresh sockets.
#[test]
fn servers_stay_reachable_after_idling_past_their_bindings() {
    for (i, (client, server)) in [
        (Kind::Restricted, Kind::Consistent),
        (Kind::Restricted, Kind::Restricted),
        (Kind::Restricted, Kind::Random),
        (Kind::Random, Kind::Restricted),
    ]
    .into_iter()
    .enumerate()
    {
        let opts = RunOpts {
            idle: Some(Duration::from_secs(600)),
            binding_timeout: Some(Duration::from_secs(30)),
            ..RunOpts::default()
        };
        let o = run_one(client, server, 1000 + i as u64, opts);
        assert_eq!(
            o.failure,
            None,
            "{} -> {} after 10 idle minutes (seed {})",
            client.name(),
            server.name(),
            o.seed
        );
        assert!(o.server_incoming);
    }
}

/// An idle connection keeps itself alive: secret-stream's keep-alive (an empty message 5 s after
/// the last write, hyperdht's default) goes out from both sides through a minute of silence,
/// and each is acknowledged.
#[test]
fn idle_connections_send_keep_alives() {
    let seed = 77;
    let mut sim = Sim::new(seed);
    sim.set_host_base(Ipv4Addr::new(37, 0, 0, 0));
    let net = sim.build_dht(
        3,
        DHT_PEERS,
        Duration::from_millis(50),
        Duration::from_secs(60),
    );
    let s = sim.add_node(Config::new(net.bootstrap.clone()));
    let c = sim.add_node(Config::new(net.bootstrap.clone()));
    let limit = sim.now() + Duration::from_secs(30);
    assert!(
        sim.run_until_condition(limit, |sim| {
            sim.node(s).is_bootstrapped() && sim.node(c).is_bootstrapped()
        }),
        "bootstrap (seed {seed})"
    );
    let server_key = KeyPair::from_seed(&[1; 32]);
    let client_key = KeyPair::from_seed(&[2; 32]);
    let listening = sim.command(s, |n, now| {
        n.listen(now, &server_key, ServerConfig::default())
    });
    assert!(listening.is_ok());
    let limit = sim.now() + Duration::from_secs(30);
    assert!(
        run_until_event(&mut sim, s, limit, |e| matches!(
            e,
            Event::ServerListening { .. }
        ))
        .is_some(),
        "listen (seed {seed})"
    );
    let spk = server_key.public_key();
    let conn: ConnId = sim.command(c, |n, now| n.connect(now, &spk, &client_key));
    let limit = sim.now() + CONNECT_LIMIT;
    let connected = run_until_event(
        &mut sim,
        c,
        limit,
        |e| matches!(e, Event::Connected { conn: id, .. } if *id == conn),
    );
    assert!(connected.is_some(), "connect (seed {seed})");
    // Let the secret-stream headers cross, then take the server's side of the connection.
    sim.run_for(Duration::from_secs(2));
    let server_conn = sim
        .events(s)
        .iter()
        .find_map(|(_, e)| match e {
            Event::Connected { conn, .. } => Some(*conn),
            _ => None,
        })
        .expect("the server has the connection");
    let sent = |sim: &Sim, idx: NodeIdx, conn: ConnId| {
        let info = sim
            .node(idx)
            .conn_info(conn)
            .and_then(|i| i.stream)
            .expect("connection held");
        (info.stats.packets_sent, info.stats.packets_received)
    };
    let (c0, s0) = (sent(&sim, c, conn), sent(&sim, s, server_conn));
    sim.run_for(Duration::from_secs(60));
    let (c1, s1) = (sent(&sim, c, conn), sent(&sim, s, server_conn));
    // 60 s / 5 s = 12 keep-alives each way, plus the acknowledgements of the other side's.
    for (side, before, after) in [("client", c0, c1), ("server", s0, s1)] {
        let (sent, received) = (after.0 - before.0, after.1 - before.1);
        assert!(
            (20..=40).contains(&sent),
            "{side} sent {sent} packets in 60 idle seconds, want keep-alives every 5 s and \
             their acks (seed {seed})"
        );
        assert!(received >= 20, "{side} received {received} (seed {seed})");
    }
}

/// Two randomising NATs defeat every punching strategy, but a blind relay on a public host
/// (a Rust node serving one) carries the connection: for each seed the client, naming the
/// relay, connects, the server sees its side open, and bytes go both ways through the relay.
#[test]
fn double_random_nats_connect_through_a_blind_relay() {
    let seeds = env_usize("SIM_RELAY_SEEDS").unwrap_or(10) as u64;
    for seed in 0..seeds {
        let mut sim = Sim::new(0x5e1a_0000 + seed);
        sim.set_host_base(Ipv4Addr::new(37, 0, 0, 0));
        let net = sim.build_dht(
            3,
            DHT_PEERS,
            Duration::from_millis(50),
            Duration::from_secs(60),
        );
        let relay = sim.add_node(Config::new(net.bootstrap.clone()));
        let timeout = Duration::from_secs(60);
        let s = place(
            &mut sim,
            Kind::Random,
            Config::new(net.bootstrap.clone()),
            timeout,
        );
        let c = place(
            &mut sim,
            Kind::Random,
            Config::new(net.bootstrap.clone()),
            timeout,
        );
        let limit = sim.now() + Duration::from_secs(30);
        assert!(
            sim.run_until_condition(limit, |sim| {
                [relay, s, c].iter().all(|&i| sim.node(i).is_bootstrapped())
            }),
            "bootstrap (seed {seed})"
        );
        let relay_key = KeyPair::from_seed(&[0x7e; 32]);
        let server_key = KeyPair::from_seed(&[1; 32]);
        let client_key = KeyPair::from_seed(&[2; 32]);
        assert!(sim
            .command(relay, |n, now| n.serve_blind_relay(now, &relay_key))
            .is_ok());
        assert!(sim
            .command(s, |n, now| n.listen(
                now,
                &server_key,
                ServerConfig::default()
            ))
            .is_ok());
        for idx in [relay, s] {
            let limit = sim.now() + Duration::from_secs(30);
            let listening = run_until_event(&mut sim, idx, limit, |e| {
                matches!(e, Event::ServerListening { .. })
            });
            assert!(listening.is_some(), "listen (seed {seed})");
        }
        let spk = server_key.public_key();
        let mut options = hyperdht_proto::ConnectOptions::default();
        options.relay_through = Some(relay_key.public_key());
        let conn: ConnId = sim.command(c, |n, now| {
            n.connect_with(now, &spk, options.clone().with_key_pair(&client_key))
        });
        let limit = sim.now() + CONNECT_LIMIT;
        let verdict = run_until_event(&mut sim, c, limit, |e| match e {
            Event::Connected { conn: id, .. } | Event::ConnectFailed { conn: id, .. } => {
                *id == conn
            }
            _ => false,
        });
        assert!(
            matches!(verdict, Some((_, Event::Connected { .. }))),
            "the client connects through the relay (seed {seed}): {verdict:?}"
        );
        sim.run_for(Duration::from_secs(2));
        let server_conn = sim
            .events(s)
            .iter()
            .find_map(|(_, e)| match e {
                Event::Connected { conn, .. } => Some(*conn),
                _ => None,
            })
            .unwrap_or_else(|| panic!("the server has the connection (seed {seed})"));
        // Bytes both ways.
        sim.command(c, |n, now| n.conn(conn).write(now, b"to the server"))
            .expect("client write");
        sim.command(s, |n, now| n.conn(server_conn).write(now, b"to the client"))
            .expect("server write");
        sim.run_for(Duration::from_secs(2));
        let mut buf = [0u8; 64];
        let got = sim.command(s, |n, _| n.conn(server_conn).read(&mut buf));
        assert_eq!(
            &buf[..got.expect("server read")],
            b"to the server",
            "seed {seed}"
        );
        let got = sim.command(c, |n, _| n.conn(conn).read(&mut buf));
        assert_eq!(
            &buf[..got.expect("client read")],
            b"to the client",
            "seed {seed}"
        );
        let relayed = sim.node(relay).stats().relaying.relayed_links;
        assert_eq!(relayed, 1, "the relay linked the pair (seed {seed})");
        assert_eq!(sim.node(c).stats().relaying.successes, 1, "seed {seed}");
        // The relay connections are the nodes' own: the applications see only theirs.
        let conn_of = |e: &Event| match e {
            Event::Incoming { conn, .. }
            | Event::Connected { conn, .. }
            | Event::Readable { conn }
            | Event::Writable { conn }
            | Event::Finished { conn }
            | Event::ConnClosed { conn, .. }
            | Event::ConnectFailed { conn, .. } => Some(*conn),
            _ => None,
        };
        for (idx, own) in [(c, Some(conn)), (s, Some(server_conn)), (relay, None)] {
            for (_, e) in sim.events(idx) {
                assert!(
                    conn_of(e).is_none() || conn_of(e) == own,
                    "an internal connection's event reached the application (seed {seed}): {e:?}"
                );
            }
        }
    }
}
