//! A deterministic network simulator for [`hyperdht_proto::Node`]s.
//!
//! Every node runs on its own IPv4 host (`10.x.y.z`; nodes given the same `Config::host` share
//! one) and binds its sockets through the simulator, which answers the node's [`SocketOp`]s: a
//! socket gets the port it asks for if that is free on its host (else the bind fails), or a
//! seeded ephemeral port (49152-65535) for port 0, which is what the client socket asks for.
//! Datagrams travel over links with a per-datagram latency drawn from the simulator's seeded
//! [`Rng`] and an optional loss probability; they wait in a priority queue ordered by
//! `(deliver_at, seq)`, so equal delivery times are ordered by send order.
//!
//! The network is flat and open: every host is publicly reachable at its own address, there is
//! no NAT or filtering yet, and a transmit's `ttl` is ignored. Nodes can be crashed
//! ([`Sim::kill`]) or put to sleep ([`Sim::suspend`]).
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
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use hyperdht_proto::rng::Rng;
use hyperdht_proto::{
    Config, Event, Node, NodeId, QueryError, QueryId, Reply, SocketId, SocketOp, Timestamp,
};

/// First port of the range ephemeral ports are drawn from.
const EPHEMERAL_BASE: u16 = 49152;
/// Size of the ephemeral port range (49152..=65535).
const EPHEMERAL_SPAN: u64 = 16384;
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
    /// or IPv6).
    pub undeliverable: u64,
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
    sockets: Vec<(SocketId, SocketAddrV4)>,
    events: Vec<(Timestamp, Event)>,
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

    /// A fresh host address (`10.x.y.z`, never `.0` or `.255`), for nodes that must know their
    /// address before they are added (bootstrap nodes).
    pub fn alloc_host(&mut self) -> Ipv4Addr {
        loop {
            self.next_host += 1;
            let ip = Ipv4Addr::from(0x0a00_0000 | (self.next_host & 0x00ff_ffff));
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
        let seed = self.rng.bytes32();
        let node = Node::new(config, seed, self.now);
        let idx = self.nodes.len();
        self.nodes.push(SimNode {
            node,
            host,
            alive: true,
            asleep_until: None,
            deadline: None,
            sockets: Vec::new(),
            events: Vec::new(),
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
        self.nodes[idx.0]
            .sockets
            .iter()
            .find(|(s, _)| *s == socket)
            .map(|(_, a)| *a)
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
        let Some(&(idx, socket)) = self.sockets.get(&d.to) else {
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
                let from = self.nodes[idx]
                    .sockets
                    .iter()
                    .find(|(s, _)| *s == t.socket)
                    .map(|(_, a)| *a);
                let (Some(from), SocketAddr::V4(to)) = (from, t.dst) else {
                    self.stats.undeliverable += 1;
                    continue;
                };
                self.send(from, to, t.payload);
            }
            while let Some(e) = self.nodes[idx].node.poll_event() {
                progressed = true;
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
            if !progressed {
                break;
            }
        }
        let n = &mut self.nodes[idx];
        if let Some(d) = n.deadline.take() {
            self.timers.remove(&(d, idx));
        }
        if let Some(t) = n.node.poll_timeout() {
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
                        n.sockets.retain(|(s, _)| *s != socket);
                        n.sockets.push((socket, a));
                        n.node.handle_socket_bound(now, socket, SocketAddr::V4(a));
                    }
                    None => self.nodes[idx].node.handle_socket_failed(now, socket),
                }
            }
            SocketOp::Close { socket } => {
                let n = &mut self.nodes[idx];
                if let Some(pos) = n.sockets.iter().position(|(s, _)| *s == socket) {
                    let (_, a) = n.sockets.remove(pos);
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

    fn send(&mut self, from: SocketAddrV4, to: SocketAddrV4, payload: Vec<u8>) {
        self.stats.sent += 1;
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
            payload,
        });
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
