//! A deterministic network simulator for [`hyperdht_proto::Node`]s.
//!
//! Every node runs on its own IPv4 host (`10.x.y.z` unless [`Sim::set_host_base`] picks another
//! /8; nodes given the same `Config::host` share one) and binds its sockets through the
//! simulator, which answers the node's [`SocketOp`]s: a socket gets the port it asks for if that
//! is free on its host (else the bind fails), or a seeded ephemeral port (49152-65535) for port
//! 0, which is what the client socket asks for.
//! Datagrams travel over links with a per-datagram latency drawn from the simulator's seeded
//! [`Rng`] and an optional loss probability; they wait in a priority queue ordered by
//! `(deliver_at, seq)`, so equal delivery times are ordered by send order.
//!
//! Hosts added with [`Sim::add_node`] sit on the internet, reachable at their own address.
//! [`Sim::add_nat`] adds a NAT box ([`NatConfig`]: endpoint-independent or address-and-port-
//! dependent mapping with random ports, endpoint-independent or address-and-port-dependent
//! filtering, an idle timeout for bindings) with its own public address and private /24;
//! [`Sim::add_node_behind`] puts a node on that LAN. A datagram from a NATed host is mapped
//! when it leaves the LAN (at send time) and filtered when it reaches the far NAT (at delivery
//! time); private addresses are reachable only from inside their LAN (no hairpinning).
//! Transmits honour `ttl` (default [`DEFAULT_TTL`]): the home NAT takes one hop and the
//! internet [`INTERNET_HOPS`] more, so hyperdht's TTL-5 probes open the sender's own mapping
//! and die before the far side. Extra sockets (holepunch pools) bind like any other: port 0
//! gets a fresh ephemeral port. Nodes can be crashed ([`Sim::kill`]) or put to sleep
//! ([`Sim::suspend`]).
//!
//! Time is virtual ([`Timestamp`]). The main loop repeatedly takes the earliest of the next
//! delivery and the earliest node deadline (`poll_timeout`, kept per node in an ordered set so
//! thousands of nodes run without scanning them all), advances the clock, feeds the node, and
//! drains its socket ops, transmits and events in that order (the run-loop contract of
//! `hyperdht_proto`). Deliveries come before timers at the same instant.
//!
//! Everything that happens on the wire (and every event) feeds a running transcript hash, so a
//! test can assert that the same seed gives the same run. With
//! [`Sim::keep_transcript`] the transcript is also kept as text lines for diffing.
//!
//! A failing scenario should be replayable: wrap it in [`with_seed`], which takes the seed from
//! the `SIM_SEED` environment variable when set and prints `SIM SEED=...` if the scenario panics.
//!
//! ```
//! use hyperdht_proto::{Config, Persistence};
//! use hyperdht_tests::sim::Sim;
//! use std::net::SocketAddrV4;
//! use core::time::Duration;
//!
//! let mut sim = Sim::new(1);
//! let boot = SocketAddrV4::new(sim.alloc_host(), 49737);
//! sim.add_node(Config::bootstrapper(boot));
//! let mut cfg = Config::new(vec![boot]);
//! cfg.persistence = Persistence::Persistent;
//! let a = sim.add_node(cfg.clone());
//! let b = sim.add_node(cfg);
//! sim.run_for(Duration::from_secs(30));
//! assert!(sim.node(a).is_bootstrapped() && sim.node(b).is_bootstrapped());
//! let target = sim.node(b).id().unwrap();
//! let replies = sim.run_find_node(a, target, Duration::from_secs(60)).unwrap().unwrap();
//! assert_eq!(replies[0].id, Some(target));
//! ```

use core::cmp::Ordering;
use core::fmt::Write as _;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use hyperdht_proto::rng::Rng;
use hyperdht_proto::swarm::{Swarm, SwarmEvent};
use hyperdht_proto::{
    Config, Event, Node, NodeId, QueryError, QueryId, Reply, SocketId, SocketOp, Timestamp,
};

/// First port of the range ephemeral ports are drawn from.
const EPHEMERAL_BASE: u16 = 49152;
/// Size of the ephemeral port range (49152..=65535).
const EPHEMERAL_SPAN: u64 = 16384;
/// TTL of a transmit that does not set one.
pub const DEFAULT_TTL: u8 = 64;
/// Routers between two sites on the simulated internet: a datagram leaving a site (after its
/// home NAT, if any) arrives only with a TTL above this, so hyperdht's TTL-5 "open session"
/// probes open the sender's own NAT mapping but die before the far NAT (like the namespace lab's
/// `--ttl-dec 8`).
pub const INTERNET_HOPS: u8 = 8;
/// NAT external ports are drawn from `1024..=65535`.
const NAT_PORT_BASE: u16 = 1024;
/// `handle_timeout` calls at one instant for one node before the simulator calls it a busy
/// loop (a node whose `poll_timeout` does not move past `now` after `handle_timeout`).
const BUSY_LOOP_LIMIT: u32 = 10_000;

/// Index of a node in a [`Sim`] (in order of [`Sim::add_node`]; never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeIdx(pub usize);

/// How datagrams travel between hosts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// Smallest one-way latency.
    pub min_latency: Duration,
    /// Largest one-way latency (uniform between the two, drawn per datagram, so datagrams can
    /// overtake each other).
    pub max_latency: Duration,
    /// Probability that a datagram is lost, in `[0, 1]`.
    pub loss: f64,
}

impl Default for LinkConfig {
    /// 5-50 ms, no loss.
    fn default() -> Self {
        LinkConfig {
            min_latency: Duration::from_millis(5),
            max_latency: Duration::from_millis(50),
            loss: 0.0,
        }
    }
}

/// Simulator counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Datagrams handed to a node.
    pub delivered: u64,
    /// Datagrams dropped by link loss.
    pub lost: u64,
    /// Datagrams with no live receiver (no socket at that address, a killed or suspended node,
    /// a private address outside its LAN, or IPv6).
    pub undeliverable: u64,
    /// Datagrams a NAT dropped on the way in: no live binding for the port, or filtered.
    pub filtered: u64,
    /// Datagrams whose TTL ran out before the destination's site.
    pub ttl_expired: u64,
    /// `handle_timeout` calls.
    pub timer_wakeups: u64,
    /// Events the nodes emitted.
    pub events: u64,
}

/// A DHT started by [`Sim::build_dht`].
#[derive(Clone, Debug)]
pub struct DhtNet {
    /// The bootstrap nodes' addresses.
    pub bootstrap: Vec<SocketAddrV4>,
    /// The bootstrap nodes.
    pub boots: Vec<NodeIdx>,
    /// The other nodes, in the order they joined.
    pub peers: Vec<NodeIdx>,
}

/// A datagram in flight.
#[derive(Debug)]
struct InFlight {
    at: Timestamp,
    seq: u64,
    from: SocketAddrV4,
    to: SocketAddrV4,
    /// Sent within one NAT's LAN (no translation on the way).
    lan: bool,
    payload: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    /// Reversed, so the max-heap pops the earliest `(at, seq)` first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One simulated host running one node.
#[derive(Debug)]
struct SimNode {
    node: Node,
    host: Ipv4Addr,
    alive: bool,
    /// Suspended (asleep) until then: no timers, incoming datagrams dropped.
    asleep_until: Option<Timestamp>,
    /// The entry of this node in `Sim::timers`, if any.
    deadline: Option<Timestamp>,
    /// Bound sockets.
    sockets: BTreeMap<SocketId, SocketAddrV4>,
    events: Vec<(Timestamp, Event)>,
    /// A swarm driven with the node ([`Sim::attach_swarm`]), and its events.
    swarm: Option<Swarm>,
    swarm_events: Vec<(Timestamp, SwarmEvent)>,
    /// Busy-loop detection: the instant of the last `handle_timeout` and how many there were.
    last_wakeup: Timestamp,
    wakeups_at_instant: u32,
}

/// A running hash (FNV-1a, 64 bit) of everything that happened, plus optional text lines.
#[derive(Debug)]
struct Transcript {
    hash: u64,
    lines: Option<Vec<String>>,
}

impl Transcript {
    fn mix(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn mix_addr(&mut self, a: &SocketAddrV4) {
        self.mix(&a.ip().octets());
        self.mix(&a.port().to_le_bytes());
    }
}

/// The simulator. See the module docs.
#[derive(Debug)]
pub struct Sim {
    seed: u64,
    rng: Rng,
    now: Timestamp,
    link: LinkConfig,
    nodes: Vec<SimNode>,
    /// Every bound socket: address -> (owner, which socket).
    sockets: HashMap<SocketAddrV4, (usize, SocketId)>,
    next_host: u32,
    /// Hosts are `host_base | counter` (see [`Sim::set_host_base`]).
    host_base: u32,
    nats: Vec<NatBox>,
    /// NAT public address -> NAT.
    nat_by_public: HashMap<Ipv4Addr, usize>,
    /// Private host address -> the NAT it sits behind.
    nat_of_host: HashMap<Ipv4Addr, usize>,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    /// Node deadlines: (when, node index).
    timers: BTreeSet<(Timestamp, usize)>,
    transcript: Transcript,
    stats: SimStats,
    finished: HashMap<(usize, QueryId), Result<Vec<Reply>, QueryError>>,
}

impl Sim {
    /// A simulator whose every random choice (node seeds, ports, latencies, losses) follows
    /// from `seed`. Starts at [`Timestamp::ZERO`] with the default [`LinkConfig`].
    pub fn new(seed: u64) -> Sim {
        let mut s = Sim::from_seed_bytes(hyperdht_proto::crypto::hash(&seed.to_le_bytes()));
        s.seed = seed;
        s
    }

    /// Like [`Sim::new`] with a full 32-byte seed ([`Sim::seed`] then reports 0).
    pub fn from_seed_bytes(seed: [u8; 32]) -> Sim {
        Sim {
            seed: 0,
            rng: Rng::from_seed(seed),
            now: Timestamp::ZERO,
            link: LinkConfig::default(),
            nodes: Vec::new(),
            sockets: HashMap::new(),
            next_host: 0,
            host_base: 0x0a00_0000,
            nats: Vec::new(),
            nat_by_public: HashMap::new(),
            nat_of_host: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            timers: BTreeSet::new(),
            transcript: Transcript {
                hash: 0xcbf2_9ce4_8422_2325,
                lines: None,
            },
            stats: SimStats::default(),
            finished: HashMap::new(),
        }
    }

    /// The `u64` seed given to [`Sim::new`].
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Replaces the link model for datagrams sent from now on.
    pub fn set_link(&mut self, link: LinkConfig) {
        assert!(
            link.min_latency <= link.max_latency,
            "min_latency > max_latency"
        );
        self.link = link;
    }

    /// The current link model.
    pub fn link(&self) -> LinkConfig {
        self.link
    }

    /// Keeps the transcript as text lines too (one per datagram sent and per event), from now on.
    pub fn keep_transcript(&mut self, keep: bool) {
        if keep {
            self.transcript.lines.get_or_insert_with(Vec::new);
        } else {
            self.transcript.lines = None;
        }
    }

    /// The running transcript hash: equal for equal runs.
    pub fn transcript_hash(&self) -> u64 {
        self.transcript.hash
    }

    /// The transcript lines kept since [`Sim::keep_transcript`]`(true)`.
    pub fn transcript_lines(&self) -> Option<&[String]> {
        self.transcript.lines.as_deref()
    }

    /// Virtual time now.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// Hosts (and NAT public addresses) allocated from now on come from `base`'s /8 instead
    /// of `10.0.0.0/8`. hyperdht treats private and reserved ranges specially (an open server's
    /// private addresses are skipped, LAN shortcuts), so scenarios with NATs put the internet on
    /// a routable-looking range.
    pub fn set_host_base(&mut self, base: Ipv4Addr) {
        self.host_base = u32::from(base) & 0xff00_0000;
    }

    /// A fresh host address (`10.x.y.z` unless [`Sim::set_host_base`] chose another /8; never
    /// `.0` or `.255`), for nodes that must know their address before they are added
    /// (bootstrap nodes).
    pub fn alloc_host(&mut self) -> Ipv4Addr {
        loop {
            self.next_host += 1;
            assert!(self.next_host < 0x0100_0000, "host addresses exhausted");
            let ip = Ipv4Addr::from(self.host_base | (self.next_host & 0x00ff_ffff));
            let last = ip.octets()[3];
            if last != 0 && last != 255 {
                return ip;
            }
        }
    }

    /// Starts a node with `config` at the current time. Its host is `config.host` if that is
    /// set (use [`Sim::alloc_host`]), otherwise a fresh one (the node then binds `0.0.0.0`,
    /// which the simulator maps to that host). The node's 32-byte seed comes from the simulator's
    /// RNG.
    pub fn add_node(&mut self, config: Config) -> NodeIdx {
        let host = if config.host.is_unspecified() {
            self.alloc_host()
        } else {
            config.host
        };
        self.add_node_on(host, config)
    }

    /// Starts a node on a fresh private host behind `nat` (see [`Sim::add_nat`]). Its
    /// `local_addresses` (advertised for LAN shortcuts) default to that host's address.
    pub fn add_node_behind(&mut self, nat: NatIdx, mut config: Config) -> NodeIdx {
        let host = self.nats[nat.0].alloc_lan_host();
        self.nat_of_host.insert(host, nat.0);
        if config.local_addresses.is_empty() {
            config.local_addresses = vec![host];
        }
        config.host = Ipv4Addr::UNSPECIFIED;
        self.add_node_on(host, config)
    }

    fn add_node_on(&mut self, host: Ipv4Addr, config: Config) -> NodeIdx {
        let seed = self.rng.bytes32();
        let node = Node::new(config, seed, self.now);
        let idx = self.nodes.len();
        self.nodes.push(SimNode {
            node,
            host,
            alive: true,
            asleep_until: None,
            deadline: None,
            sockets: BTreeMap::new(),
            events: Vec::new(),
            swarm: None,
            swarm_events: Vec::new(),
            last_wakeup: Timestamp::ZERO,
            wakeups_at_instant: 0,
        });
        if let Some(lines) = &mut self.transcript.lines {
            lines.push(format!("{} node {idx} added on {host}", fmt_time(self.now)));
        }
        self.transcript.mix(&u64::MAX.to_le_bytes());
        self.transcript.mix(&(idx as u64).to_le_bytes());
        self.after_input(idx);
        NodeIdx(idx)
    }

    /// Adds a NAT box with a fresh public address (from [`Sim::alloc_host`]) and its own
    /// private /24 (`192.168.n.0`, then `172.16-31.x.0`); put nodes behind it with
    /// [`Sim::add_node_behind`].
    pub fn add_nat(&mut self, config: NatConfig) -> NatIdx {
        let public = self.alloc_host();
        let k = self.nats.len();
        let lan = if k < 256 {
            [192, 168, k as u8]
        } else {
            let k = k - 256;
            assert!(k < 16 * 256, "too many NATs");
            [172, 16 + (k / 256) as u8, (k % 256) as u8]
        };
        self.nats.push(NatBox {
            public,
            lan,
            next_lan_host: 1,
            config,
            bindings: HashMap::new(),
            index: HashMap::new(),
        });
        self.nat_by_public.insert(public, k);
        if let Some(lines) = &mut self.transcript.lines {
            lines.push(format!(
                "{} nat {k} on {public}: {config:?}",
                fmt_time(self.now)
            ));
        }
        NatIdx(k)
    }

    /// The NAT's public address.
    pub fn nat_public(&self, nat: NatIdx) -> Ipv4Addr {
        self.nats[nat.0].public
    }

    /// The NAT a node sits behind, if any.
    pub fn nat_of(&self, idx: NodeIdx) -> Option<NatIdx> {
        self.nat_of_host
            .get(&self.nodes[idx.0].host)
            .map(|n| NatIdx(*n))
    }

    /// Live bindings of the NAT now.
    pub fn nat_bindings(&self, nat: NatIdx) -> usize {
        let n = &self.nats[nat.0];
        n.bindings.values().filter(|b| n.alive(b, self.now)).count()
    }

    /// Number of nodes ever added (killed ones included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added yet.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Indices of all nodes, killed ones included.
    pub fn indices(&self) -> impl Iterator<Item = NodeIdx> {
        (0..self.nodes.len()).map(NodeIdx)
    }

    /// Indices of the nodes still running.
    pub fn live(&self) -> impl Iterator<Item = NodeIdx> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.alive)
            .map(|(i, _)| NodeIdx(i))
    }

    /// The node (read-only).
    pub fn node(&self, idx: NodeIdx) -> &Node {
        &self.nodes[idx.0].node
    }

    /// The node, to call anything on it. Prefer [`Sim::command`], which also drains the node's
    /// output and reschedules it; after using this, call [`Sim::poke`].
    pub fn node_mut(&mut self, idx: NodeIdx) -> &mut Node {
        &mut self.nodes[idx.0].node
    }

    /// Drives `swarm` with node `idx` from now on: node events pass through it, its timers
    /// run, and its events are kept ([`Sim::swarm_events`]).
    pub fn attach_swarm(&mut self, idx: NodeIdx, swarm: Swarm) {
        self.nodes[idx.0].swarm = Some(swarm);
        self.poke(idx);
    }

    /// Node `idx`'s swarm.
    pub fn swarm(&self, idx: NodeIdx) -> &Swarm {
        self.nodes[idx.0]
            .swarm
            .as_ref()
            .expect("a swarm is attached")
    }

    /// Runs `f` on node `idx`'s swarm (with its node and the current time), then drains.
    pub fn swarm_command<R>(
        &mut self,
        idx: NodeIdx,
        f: impl FnOnce(&mut Swarm, &mut Node, Timestamp) -> R,
    ) -> R {
        let now = self.now;
        let n = &mut self.nodes[idx.0];
        let sw = n.swarm.as_mut().expect("a swarm is attached");
        let r = f(sw, &mut n.node, now);
        self.after_input(idx.0);
        r
    }

    /// What node `idx`'s swarm reported so far.
    pub fn swarm_events(&self, idx: NodeIdx) -> &[(Timestamp, SwarmEvent)] {
        &self.nodes[idx.0].swarm_events
    }

    /// Drains `idx`'s output and reschedules its next wake-up (after [`Sim::node_mut`]).
    pub fn poke(&mut self, idx: NodeIdx) {
        if self.nodes[idx.0].alive && self.nodes[idx.0].asleep_until.is_none() {
            self.after_input(idx.0);
        }
    }

    /// Runs `f` on a live, awake node with the current time, then drains the node's output and
    /// reschedules it. Returns what `f` returns.
    pub fn command<R>(&mut self, idx: NodeIdx, f: impl FnOnce(&mut Node, Timestamp) -> R) -> R {
        assert!(self.nodes[idx.0].alive, "command on killed node {}", idx.0);
        assert!(
            self.nodes[idx.0].asleep_until.is_none(),
            "command on suspended node {}",
            idx.0
        );
        let r = f(&mut self.nodes[idx.0].node, self.now);
        self.after_input(idx.0);
        r
    }

    /// The node's host address.
    pub fn host(&self, idx: NodeIdx) -> Ipv4Addr {
        self.nodes[idx.0].host
    }

    /// The bound address of one of the node's sockets.
    pub fn socket_addr(&self, idx: NodeIdx, socket: SocketId) -> Option<SocketAddrV4> {
        self.nodes[idx.0].sockets.get(&socket).copied()
    }

    /// The bound address of the node's server socket.
    pub fn server_addr(&self, idx: NodeIdx) -> Option<SocketAddrV4> {
        self.socket_addr(idx, SocketId::SERVER)
    }

    /// Whether the node is still running (not [`Sim::kill`]ed).
    pub fn is_alive(&self, idx: NodeIdx) -> bool {
        self.nodes[idx.0].alive
    }

    /// Everything the node emitted so far, with the time it was drained.
    pub fn events(&self, idx: NodeIdx) -> &[(Timestamp, Event)] {
        &self.nodes[idx.0].events
    }

    /// Takes the node's events, leaving its list empty.
    pub fn take_events(&mut self, idx: NodeIdx) -> Vec<(Timestamp, Event)> {
        core::mem::take(&mut self.nodes[idx.0].events)
    }

    /// Crashes the node: it gets no more datagrams and no more timers. Its addresses stay taken,
    /// and datagrams it already sent are still delivered.
    pub fn kill(&mut self, idx: NodeIdx) {
        let n = &mut self.nodes[idx.0];
        if !n.alive {
            return;
        }
        n.alive = false;
        if let Some(d) = n.deadline.take() {
            self.timers.remove(&(d, idx.0));
        }
        if let Some(lines) = &mut self.transcript.lines {
            lines.push(format!("{} node {} killed", fmt_time(self.now), idx.0));
        }
        self.transcript.mix(&(u64::MAX - 1).to_le_bytes());
        self.transcript.mix(&(idx.0 as u64).to_le_bytes());
    }

    /// Suspends the node until `until`, like a laptop going to sleep: no timers fire and
    /// datagrams that arrive meanwhile are dropped. At `until` it gets a `handle_timeout` with
    /// the clock jumped forward (dht-rpc treats a gap of more than 15 s between ticks as a
    /// wake-up).
    pub fn suspend(&mut self, idx: NodeIdx, until: Timestamp) {
        let i = idx.0;
        assert!(self.nodes[i].alive, "suspend of killed node {i}");
        if until <= self.now {
            return;
        }
        if let Some(d) = self.nodes[i].deadline.take() {
            self.timers.remove(&(d, i));
        }
        self.nodes[i].asleep_until = Some(until);
        self.nodes[i].deadline = Some(until);
        self.timers.insert((until, i));
        if let Some(lines) = &mut self.transcript.lines {
            lines.push(format!(
                "{} node {i} suspended until {}",
                fmt_time(self.now),
                fmt_time(until)
            ));
        }
        self.transcript.mix(&(u64::MAX - 2).to_le_bytes());
        self.transcript.mix(&(i as u64).to_le_bytes());
        self.transcript.mix(&until.as_nanos().to_le_bytes());
    }

    /// Whether the node is suspended now.
    pub fn is_asleep(&self, idx: NodeIdx) -> bool {
        self.nodes[idx.0].asleep_until.is_some()
    }

    /// Starts a DHT on open hosts like a testnet: `boots` bootstrap nodes (the first starts the
    /// network, the others join it, 500 ms apart), then `peers` persistent nodes joining
    /// `stagger` apart; runs until every peer has bootstrapped (at most `max_wait` after the
    /// last joined) and panics if one did not.
    pub fn build_dht(
        &mut self,
        boots: usize,
        peers: usize,
        stagger: Duration,
        max_wait: Duration,
    ) -> DhtNet {
        let bootstrap: Vec<SocketAddrV4> = (0..boots)
            .map(|_| SocketAddrV4::new(self.alloc_host(), 49737))
            .collect();
        let mut boot_nodes = Vec::new();
        for (i, addr) in bootstrap.iter().enumerate() {
            let mut cfg = Config::bootstrapper(*addr);
            cfg.bootstrap = bootstrap[..i].to_vec();
            boot_nodes.push(self.add_node(cfg));
            self.run_for(Duration::from_millis(500));
        }
        let mut peer_nodes = Vec::new();
        for _ in 0..peers {
            self.run_for(stagger);
            let mut cfg = Config::new(bootstrap.clone());
            cfg.persistence = hyperdht_proto::Persistence::Persistent;
            peer_nodes.push(self.add_node(cfg));
        }
        let deadline = self.now + max_wait;
        while self.now < deadline && !peer_nodes.iter().all(|p| self.node(*p).is_bootstrapped()) {
            self.run_for(Duration::from_millis(500));
        }
        for &p in &peer_nodes {
            assert!(
                self.node(p).is_bootstrapped(),
                "node {p:?} did not bootstrap: {:?}",
                self.events(p)
            );
        }
        DhtNet {
            bootstrap,
            boots: boot_nodes,
            peers: peer_nodes,
        }
    }

    // ----- queries -------------------------------------------------------------------------

    /// Starts a FIND_NODE walk on `idx` towards `target`. Its outcome shows up in
    /// [`Sim::query_result`] once the node emits [`Event::QueryFinished`].
    pub fn find_node(&mut self, idx: NodeIdx, target: NodeId) -> QueryId {
        self.command(idx, |n, now| n.find_node(now, target))
    }

    /// The outcome of query `q` of node `idx`, once finished.
    pub fn query_result(
        &self,
        idx: NodeIdx,
        q: QueryId,
    ) -> Option<&Result<Vec<Reply>, QueryError>> {
        self.finished.get(&(idx.0, q))
    }

    /// Takes the outcome of query `q` of node `idx`, once finished.
    pub fn take_query_result(
        &mut self,
        idx: NodeIdx,
        q: QueryId,
    ) -> Option<Result<Vec<Reply>, QueryError>> {
        self.finished.remove(&(idx.0, q))
    }

    /// The events of node `idx` that belong to query `q` ([`Event::QueryReply`],
    /// [`Event::RecordFound`], [`Event::CommitReply`], [`Event::QueryFinished`]), with the time
    /// each was drained, among those not yet taken with [`Sim::take_events`].
    pub fn query_events(&self, idx: NodeIdx, q: QueryId) -> Vec<(Timestamp, &Event)> {
        self.nodes[idx.0]
            .events
            .iter()
            .filter(|(_, e)| event_query(e) == Some(q))
            .map(|(t, e)| (*t, e))
            .collect()
    }

    /// Starts a FIND_NODE walk and runs the network until it finishes or `max` virtual time
    /// passed (then `None`).
    pub fn run_find_node(
        &mut self,
        idx: NodeIdx,
        target: NodeId,
        max: Duration,
    ) -> Option<Result<Vec<Reply>, QueryError>> {
        let q = self.find_node(idx, target);
        let key = (idx.0, q);
        self.run_until_condition(self.now + max, |s| s.finished.contains_key(&key));
        self.take_query_result(idx, q)
    }

    // ----- running -------------------------------------------------------------------------

    /// When something happens next (a delivery or a node deadline), if anything is scheduled.
    pub fn next_event_at(&self) -> Option<Timestamp> {
        let d = self.queue.peek().map(|d| d.at);
        let t = self.timers.first().map(|(t, _)| *t);
        match (d, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Processes the next delivery or node deadline if it is due no later than `limit`. Returns
    /// whether it did.
    pub fn step(&mut self, limit: Timestamp) -> bool {
        let Some(t) = self.next_event_at() else {
            return false;
        };
        if t > limit {
            return false;
        }
        if t > self.now {
            self.now = t;
        }
        if self.queue.peek().is_some_and(|d| d.at <= t) {
            let d = self.queue.pop().expect("peeked");
            self.deliver(d);
        } else {
            let (at, idx) = self.timers.pop_first().expect("a timer is due");
            self.wake(at, idx);
        }
        true
    }

    /// Runs everything due up to `t`, then sets the clock to `t` (if it is later than now).
    pub fn run_until(&mut self, t: Timestamp) {
        while self.step(t) {}
        if t > self.now {
            self.now = t;
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until `cond` holds (checked before every step) or `limit` is reached. Returns
    /// whether `cond` held. The clock is left at the instant `cond` became true, or at `limit`.
    pub fn run_until_condition(
        &mut self,
        limit: Timestamp,
        mut cond: impl FnMut(&Sim) -> bool,
    ) -> bool {
        loop {
            if cond(self) {
                return true;
            }
            if !self.step(limit) {
                if limit > self.now {
                    self.now = limit;
                }
                return cond(self);
            }
        }
    }

    /// Runs until nothing is scheduled or `limit` is reached. Returns whether the network went
    /// idle (live DHT nodes never do: they tick every 5 s).
    pub fn run_until_idle(&mut self, limit: Timestamp) -> bool {
        self.run_until_condition(limit, |s| s.next_event_at().is_none())
    }

    // ----- internals -----------------------------------------------------------------------

    fn deliver(&mut self, d: InFlight) {
        let mut to = d.to;
        if !d.lan {
            if let Some(&n) = self.nat_by_public.get(d.to.ip()) {
                let now = self.now;
                match self.nats[n].inbound(now, d.from, d.to.port()) {
                    Some(internal) => to = internal,
                    None => {
                        self.stats.filtered += 1;
                        return;
                    }
                }
            } else if self.nat_of_host.contains_key(d.to.ip()) {
                // A private address, from outside its LAN.
                self.stats.undeliverable += 1;
                return;
            }
        }
        let Some(&(idx, socket)) = self.sockets.get(&to) else {
            self.stats.undeliverable += 1;
            return;
        };
        if !self.nodes[idx].alive || self.nodes[idx].asleep_until.is_some() {
            self.stats.undeliverable += 1;
            return;
        }
        self.stats.delivered += 1;
        self.nodes[idx]
            .node
            .handle_datagram(self.now, socket, SocketAddr::V4(d.from), &d.payload);
        self.after_input(idx);
    }

    fn wake(&mut self, at: Timestamp, idx: usize) {
        let now = self.now;
        let n = &mut self.nodes[idx];
        n.deadline = None;
        if !n.alive {
            return;
        }
        if n.asleep_until.is_some_and(|u| u <= now) {
            n.asleep_until = None;
        }
        if n.last_wakeup == at {
            n.wakeups_at_instant += 1;
            assert!(
                n.wakeups_at_instant < BUSY_LOOP_LIMIT,
                "node {idx} busy-loops: poll_timeout() stays at {} after handle_timeout",
                fmt_time(at)
            );
        } else {
            n.last_wakeup = at;
            n.wakeups_at_instant = 0;
        }
        self.stats.timer_wakeups += 1;
        n.node.handle_timeout(now);
        if let Some(sw) = n.swarm.as_mut() {
            if sw.poll_timeout().is_some_and(|t| t <= now) {
                sw.handle_timeout(now, &mut n.node);
            }
        }
        self.after_input(idx);
    }

    /// Drains the node's socket ops, transmits and events (in that order, until all are empty)
    /// and reschedules it.
    fn after_input(&mut self, idx: usize) {
        let now = self.now;
        loop {
            let mut progressed = false;
            while let Some(op) = self.nodes[idx].node.poll_socket_op() {
                progressed = true;
                self.socket_op(idx, op);
            }
            while let Some(t) = self.nodes[idx].node.poll_transmit() {
                progressed = true;
                let from = self.nodes[idx].sockets.get(&t.socket).copied();
                let (Some(from), SocketAddr::V4(to)) = (from, t.dst) else {
                    self.stats.undeliverable += 1;
                    continue;
                };
                self.send(from, to, t.ttl, t.payload);
            }
            while let Some(e) = self.nodes[idx].node.poll_event() {
                progressed = true;
                // A swarm sees every event first and keeps its own.
                let n = &mut self.nodes[idx];
                let e = match n.swarm.as_mut() {
                    Some(sw) => match sw.handle_event(now, &mut n.node, e) {
                        Some(e) => e,
                        None => continue,
                    },
                    None => e,
                };
                self.stats.events += 1;
                let line = format!("{} node {idx} {e:?}", fmt_time(now));
                self.transcript.mix(line.as_bytes());
                if let Some(lines) = &mut self.transcript.lines {
                    lines.push(line);
                }
                if let Event::QueryFinished { id, result } = &e {
                    self.finished.insert((idx, *id), result.clone());
                }
                self.nodes[idx].events.push((now, e));
            }
            let n = &mut self.nodes[idx];
            if let Some(sw) = n.swarm.as_mut() {
                while let Some(e) = sw.poll_event() {
                    progressed = true;
                    let line = format!("{} swarm {idx} {e:?}", fmt_time(now));
                    self.transcript.mix(line.as_bytes());
                    if let Some(lines) = &mut self.transcript.lines {
                        lines.push(line);
                    }
                    n.swarm_events.push((now, e));
                }
            }
            if !progressed {
                break;
            }
        }
        let n = &mut self.nodes[idx];
        if let Some(d) = n.deadline.take() {
            self.timers.remove(&(d, idx));
        }
        let swarm_due = n.swarm.as_ref().and_then(Swarm::poll_timeout);
        let due = match (n.node.poll_timeout(), swarm_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(t) = due {
            let t = t.max(now);
            n.deadline = Some(t);
            self.timers.insert((t, idx));
        }
    }

    fn socket_op(&mut self, idx: usize, op: SocketOp) {
        let now = self.now;
        match op {
            SocketOp::Bind { socket, addr } => {
                let host = self.nodes[idx].host;
                let ip = if addr.ip().is_unspecified() {
                    host
                } else {
                    *addr.ip()
                };
                let bound = if ip != host {
                    None
                } else if addr.port() != 0 {
                    let a = SocketAddrV4::new(ip, addr.port());
                    (!self.sockets.contains_key(&a)).then_some(a)
                } else {
                    self.ephemeral(ip)
                };
                let line = format!(
                    "{} node {idx} bind {socket:?} {addr} -> {bound:?}",
                    fmt_time(now)
                );
                self.transcript.mix(line.as_bytes());
                if let Some(lines) = &mut self.transcript.lines {
                    lines.push(line);
                }
                match bound {
                    Some(a) => {
                        self.sockets.insert(a, (idx, socket));
                        let n = &mut self.nodes[idx];
                        if let Some(old) = n.sockets.insert(socket, a) {
                            self.sockets.remove(&old);
                        }
                        n.node.handle_socket_bound(now, socket, SocketAddr::V4(a));
                    }
                    None => self.nodes[idx].node.handle_socket_failed(now, socket),
                }
            }
            SocketOp::Close { socket } => {
                let n = &mut self.nodes[idx];
                if let Some(a) = n.sockets.remove(&socket) {
                    self.sockets.remove(&a);
                }
            }
            other => panic!("node {idx}: socket op the simulator does not know: {other:?}"),
        }
    }

    /// A free port on `ip` from the ephemeral range, drawn from the RNG.
    fn ephemeral(&mut self, ip: Ipv4Addr) -> Option<SocketAddrV4> {
        for _ in 0..EPHEMERAL_SPAN * 4 {
            let port = EPHEMERAL_BASE + self.rng.below(EPHEMERAL_SPAN) as u16;
            let a = SocketAddrV4::new(ip, port);
            if !self.sockets.contains_key(&a) {
                return Some(a);
            }
        }
        None
    }

    /// Sends a datagram from the bound address `from`: within a LAN directly, otherwise through
    /// the sender's NAT (which maps it and takes one hop off the TTL) onto the internet, where
    /// it needs a TTL above [`INTERNET_HOPS`] to arrive.
    fn send(&mut self, from: SocketAddrV4, to: SocketAddrV4, ttl: Option<u8>, payload: Vec<u8>) {
        self.stats.sent += 1;
        let ttl = ttl.unwrap_or(DEFAULT_TTL);
        let src_nat = self.nat_of_host.get(from.ip()).copied();
        let lan = src_nat.is_some() && src_nat == self.nat_of_host.get(to.ip()).copied();
        let mut src = from;
        let mut expired = ttl == 0;
        if !lan && !expired {
            let mut left = ttl;
            if let Some(n) = src_nat {
                let now = self.now;
                let Some(port) = self.nats[n].outbound(now, from, to, &mut self.rng) else {
                    // Out of ports.
                    self.stats.filtered += 1;
                    return;
                };
                src = SocketAddrV4::new(self.nats[n].public, port);
                left -= 1;
            }
            expired = left <= INTERNET_HOPS;
        }
        if expired {
            self.stats.ttl_expired += 1;
            let t = &mut self.transcript;
            t.mix(&self.now.as_nanos().to_le_bytes());
            t.mix_addr(&src);
            t.mix_addr(&to);
            t.mix(&[ttl, 0xee]);
            if let Some(lines) = &mut t.lines {
                lines.push(format!(
                    "{} {from} ({src}) -> {to} len={} ttl={ttl} EXPIRED",
                    fmt_time(self.now),
                    payload.len()
                ));
            }
            return;
        }
        let from = src;
        let lost = self.link.loss > 0.0 && self.rng.unit() < self.link.loss;
        let span = self.link.max_latency.saturating_sub(self.link.min_latency);
        let jitter = self.rng.below(span.as_nanos() as u64 + 1);
        let at = self.now + self.link.min_latency + Duration::from_nanos(jitter);
        let t = &mut self.transcript;
        t.mix(&self.now.as_nanos().to_le_bytes());
        t.mix_addr(&from);
        t.mix_addr(&to);
        t.mix(&(if lost { u64::MAX } else { at.as_nanos() }).to_le_bytes());
        t.mix(&(payload.len() as u64).to_le_bytes());
        t.mix(&payload);
        if let Some(lines) = &mut t.lines {
            let mut line = format!(
                "{} {from} -> {to} len={} ",
                fmt_time(self.now),
                payload.len()
            );
            if lost {
                line.push_str("LOST");
            } else {
                let _ = write!(line, "at {}", fmt_time(at));
            }
            lines.push(line);
        }
        if lost {
            self.stats.lost += 1;
            return;
        }
        self.seq += 1;
        self.queue.push(InFlight {
            at,
            seq: self.seq,
            from,
            to,
            lan,
            payload,
        });
    }
}

/// Index of a NAT in a [`Sim`] (in order of [`Sim::add_nat`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatIdx(pub usize);

/// How a NAT picks the public port for an internal socket's outgoing datagrams (RFC 4787).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatMapping {
    /// One public port per internal socket, whatever the destination; the internal port is
    /// kept when free (Linux MASQUERADE).
    EndpointIndependent,
    /// A new random public port for every destination address and port (Linux
    /// `MASQUERADE --random-fully`, "symmetric" NAT).
    AddressPortDependent,
}

/// Which inbound datagrams a NAT lets through a live binding (RFC 4787).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatFiltering {
    /// Anyone may send to a live binding ("full cone").
    EndpointIndependent,
    /// Only addresses and ports the internal socket sent to through this binding, while that
    /// permission is fresh (a stateful firewall admitting ESTABLISHED traffic).
    AddressPortDependent,
}

/// A NAT's behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// Port mapping.
    pub mapping: NatMapping,
    /// Inbound filtering.
    pub filtering: NatFiltering,
    /// A binding (and each filtering permission) dies after this long without traffic through
    /// it (outbound, or admitted inbound).
    pub binding_timeout: Duration,
}

impl NatConfig {
    /// Endpoint-independent mapping and filtering: a "full cone" NAT.
    pub fn full_cone(binding_timeout: Duration) -> NatConfig {
        NatConfig {
            mapping: NatMapping::EndpointIndependent,
            filtering: NatFiltering::EndpointIndependent,
            binding_timeout,
        }
    }

    /// Endpoint-independent mapping with address-and-port-dependent filtering: a "port
    /// restricted cone" NAT, like Linux MASQUERADE with a stateful firewall.
    pub fn port_restricted(binding_timeout: Duration) -> NatConfig {
        NatConfig {
            filtering: NatFiltering::AddressPortDependent,
            ..NatConfig::full_cone(binding_timeout)
        }
    }

    /// Address-and-port-dependent mapping with random ports and filtering: a "symmetric" NAT
    /// (Linux `MASQUERADE --random-fully`).
    pub fn symmetric(binding_timeout: Duration) -> NatConfig {
        NatConfig {
            mapping: NatMapping::AddressPortDependent,
            filtering: NatFiltering::AddressPortDependent,
            binding_timeout,
        }
    }
}

/// One binding: an internal socket (towards one remote, for address-dependent mapping) and
/// the remotes it may hear from.
#[derive(Clone, Debug)]
struct Binding {
    internal: SocketAddrV4,
    /// Last traffic through the binding.
    last: Timestamp,
    /// Remote address -> last traffic with it (the filtering permissions).
    permits: HashMap<SocketAddrV4, Timestamp>,
}

/// A NAT box: its public address, its LAN and its bindings. Bindings expire lazily: an
/// expired one is dropped when next looked at.
#[derive(Debug)]
struct NatBox {
    public: Ipv4Addr,
    lan: [u8; 3],
    next_lan_host: u8,
    config: NatConfig,
    /// Public port -> binding.
    bindings: HashMap<u16, Binding>,
    /// (internal socket, destination for address-dependent mapping) -> public port.
    index: HashMap<(SocketAddrV4, Option<SocketAddrV4>), u16>,
}

impl NatBox {
    fn alloc_lan_host(&mut self) -> Ipv4Addr {
        self.next_lan_host += 1;
        assert!(self.next_lan_host < 255, "LAN full");
        let [a, b, c] = self.lan;
        Ipv4Addr::new(a, b, c, self.next_lan_host)
    }

    fn alive(&self, b: &Binding, now: Timestamp) -> bool {
        now.saturating_since(b.last) <= self.config.binding_timeout
    }

    fn fresh(&self, t: Timestamp, now: Timestamp) -> bool {
        now.saturating_since(t) <= self.config.binding_timeout
    }

    /// Whether public `port` is free, dropping an expired binding on it.
    fn port_free(&mut self, port: u16, now: Timestamp) -> bool {
        let Some(b) = self.bindings.get(&port) else {
            return true;
        };
        if self.alive(b, now) {
            return false;
        }
        self.remove(port);
        true
    }

    fn remove(&mut self, port: u16) {
        if let Some(b) = self.bindings.remove(&port) {
            let key_eim = (b.internal, None);
            if self.index.get(&key_eim) == Some(&port) {
                self.index.remove(&key_eim);
            }
            for r in b.permits.keys() {
                let key = (b.internal, Some(*r));
                if self.index.get(&key) == Some(&port) {
                    self.index.remove(&key);
                }
            }
        }
    }

    fn random_port(&mut self, now: Timestamp, rng: &mut Rng) -> Option<u16> {
        let span = u64::from(u16::MAX - NAT_PORT_BASE) + 1;
        for _ in 0..4096 {
            let port = NAT_PORT_BASE + rng.below(span) as u16;
            if self.port_free(port, now) {
                return Some(port);
            }
        }
        None
    }

    /// An internal socket sends to `remote`: the public port it leaves from (a new binding if
    /// needed), and the permission for `remote` to answer.
    fn outbound(
        &mut self,
        now: Timestamp,
        internal: SocketAddrV4,
        remote: SocketAddrV4,
        rng: &mut Rng,
    ) -> Option<u16> {
        let key = match self.config.mapping {
            NatMapping::EndpointIndependent => (internal, None),
            NatMapping::AddressPortDependent => (internal, Some(remote)),
        };
        if let Some(&port) = self.index.get(&key) {
            let alive = self.bindings.get(&port).is_some_and(|b| self.alive(b, now));
            if alive {
                let b = self.bindings.get_mut(&port).expect("indexed");
                b.last = now;
                b.permits.insert(remote, now);
                return Some(port);
            }
            self.remove(port);
        }
        let preserve = self.config.mapping == NatMapping::EndpointIndependent
            && self.port_free(internal.port(), now);
        let port = if preserve {
            internal.port()
        } else {
            self.random_port(now, rng)?
        };
        let mut permits = HashMap::new();
        permits.insert(remote, now);
        self.bindings.insert(
            port,
            Binding {
                internal,
                last: now,
                permits,
            },
        );
        self.index.insert(key, port);
        Some(port)
    }

    /// A datagram from `remote` reaches public `port`: the internal socket to hand it to, if
    /// a live binding admits it.
    fn inbound(&mut self, now: Timestamp, remote: SocketAddrV4, port: u16) -> Option<SocketAddrV4> {
        let b = self.bindings.get(&port)?;
        if !self.alive(b, now) {
            self.remove(port);
            return None;
        }
        let admitted = match self.config.filtering {
            NatFiltering::EndpointIndependent => true,
            NatFiltering::AddressPortDependent => {
                b.permits.get(&remote).is_some_and(|t| self.fresh(*t, now))
            }
        };
        if !admitted {
            return None;
        }
        let b = self.bindings.get_mut(&port).expect("checked");
        b.last = now;
        if let Some(t) = b.permits.get_mut(&remote) {
            *t = now;
        }
        Some(b.internal)
    }
}

/// The query an event belongs to, if it is a query event.
pub fn event_query(e: &Event) -> Option<QueryId> {
    match e {
        Event::QueryReply { id, .. }
        | Event::QueryFinished { id, .. }
        | Event::RecordFound { id, .. }
        | Event::CommitReply { id, .. } => Some(*id),
        _ => None,
    }
}

/// `seconds.micros`, for transcript lines.
fn fmt_time(t: Timestamp) -> String {
    let us = t.as_nanos() / 1000;
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// The seed to run a scenario with: `SIM_SEED` from the environment if set (decimal or
/// `0x` hex), else `default`.
pub fn seed_from_env(default: u64) -> u64 {
    match std::env::var("SIM_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("SIM_SEED={s:?} is not a u64"))
        }
        Err(_) => default,
    }
}

/// Runs scenario `name` with [`seed_from_env`]`(default_seed)`; if it panics, prints
/// `SIM SEED=<seed>` and how to replay it before the panic goes on.
pub fn with_seed<R>(name: &str, default_seed: u64, f: impl FnOnce(u64) -> R) -> R {
    struct Guard<'a> {
        name: &'a str,
        seed: u64,
    }
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!(
                    "SIM SEED={} (scenario `{}` failed; replay with SIM_SEED={})",
                    self.seed, self.name, self.seed
                );
            }
        }
    }
    let seed = seed_from_env(default_seed);
    let _guard = Guard { name, seed };
    f(seed)
}

/// The `k` ids in `ids` closest to `target` by XOR distance, closest first (brute force).
pub fn closest_ids(ids: &[NodeId], target: &NodeId, k: usize) -> Vec<NodeId> {
    let mut v = ids.to_vec();
    v.sort_by(|a, b| target.cmp_distance(a, b));
    v.dedup();
    v.truncate(k);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn nat(config: NatConfig) -> NatBox {
        NatBox {
            public: Ipv4Addr::new(37, 0, 0, 1),
            lan: [192, 168, 0],
            next_lan_host: 1,
            config,
            bindings: HashMap::new(),
            index: HashMap::new(),
        }
    }

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn endpoint_independent_mapping_keeps_the_port_and_filters_by_config() {
        let mut rng = Rng::from_seed([1; 32]);
        let now = Timestamp::from_millis(1000);
        let inside = a("192.168.0.2:49737");
        for (config, stranger_admitted) in [
            (NatConfig::full_cone(T), true),
            (NatConfig::port_restricted(T), false),
        ] {
            let mut n = nat(config);
            let p1 = n
                .outbound(now, inside, a("37.0.0.9:1000"), &mut rng)
                .unwrap();
            let p2 = n
                .outbound(now, inside, a("37.0.0.10:2000"), &mut rng)
                .unwrap();
            assert_eq!((p1, p2), (49737, 49737), "consistent, port preserved");
            assert_eq!(n.inbound(now, a("37.0.0.9:1000"), p1), Some(inside));
            assert_eq!(
                n.inbound(now, a("37.0.0.9:1001"), p1).is_some(),
                stranger_admitted
            );
            assert_eq!(
                n.inbound(now, a("37.0.0.11:1"), p1).is_some(),
                stranger_admitted
            );
            assert_eq!(n.inbound(now, a("37.0.0.9:1000"), 5555), None, "no binding");
        }
    }

    #[test]
    fn address_dependent_mapping_draws_a_port_per_destination() {
        let mut rng = Rng::from_seed([2; 32]);
        let now = Timestamp::from_millis(1000);
        let inside = a("192.168.0.2:50000");
        let mut n = nat(NatConfig::symmetric(T));
        let p1 = n
            .outbound(now, inside, a("37.0.0.9:1000"), &mut rng)
            .unwrap();
        let p2 = n
            .outbound(now, inside, a("37.0.0.9:1001"), &mut rng)
            .unwrap();
        let p1again = n
            .outbound(now, inside, a("37.0.0.9:1000"), &mut rng)
            .unwrap();
        assert_ne!(p1, p2);
        assert_eq!(p1, p1again);
        assert_eq!(n.inbound(now, a("37.0.0.9:1000"), p1), Some(inside));
        assert_eq!(
            n.inbound(now, a("37.0.0.9:1000"), p2),
            None,
            "other binding's peer"
        );
        assert_eq!(n.inbound(now, a("37.0.0.9:1001"), p2), Some(inside));
    }

    #[test]
    fn bindings_expire_when_idle_and_traffic_keeps_them() {
        let mut rng = Rng::from_seed([3; 32]);
        let inside = a("192.168.0.2:49737");
        let remote = a("37.0.0.9:1000");
        let mut n = nat(NatConfig::port_restricted(T));
        let t0 = Timestamp::from_millis(1000);
        let p = n.outbound(t0, inside, remote, &mut rng).unwrap();
        // Inbound traffic within the timeout keeps the binding alive.
        let t1 = t0 + Duration::from_secs(25);
        assert_eq!(n.inbound(t1, remote, p), Some(inside));
        let t2 = t1 + Duration::from_secs(25);
        assert_eq!(n.inbound(t2, remote, p), Some(inside));
        // Idle past the timeout: gone.
        let t3 = t2 + T + Duration::from_millis(1);
        assert_eq!(n.inbound(t3, remote, p), None);
        assert!(n.bindings.is_empty() && n.index.is_empty());
    }
}
