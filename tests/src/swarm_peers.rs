//! Swarm peers for the Hyperswarm tests, Rust and Node.js behind one shape: each reports what
//! happens as [`PeerEvent`]s on a channel and takes `send`, `flush`, `leave` and `stats`.
//! The JS peer is `tests/js/swarm-peer.js` on the real hyperswarm 4.17.2; the Rust peer is a
//! [`hyperdht_mio::Swarm`] with a thread that accepts its connections and reads them.
//! `SWARM_PEER_DEBUG=1` echoes the JS peer's output and logs its dials (to stderr).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddrV4;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyperdht_mio::{ConnWriter, JoinOptions, MioNode, Swarm, SwarmConfig};
use hyperdht_proto::crypto::{from_hex, to_hex};
use serde_json::{json, Value};

use crate::js::js_dir;
use crate::support::loopback_config;

/// Something a swarm peer saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// The topic's first refresh finished (announced, as a server).
    Flushed,
    /// A connection the swarm keeps opened.
    Connection {
        /// The peer.
        remote: [u8; 32],
        /// Whether we dialled it.
        initiator: bool,
    },
    /// Bytes arrived from a peer.
    Data {
        /// The sender.
        remote: [u8; 32],
        /// What it sent.
        data: String,
    },
    /// A connection closed.
    Close {
        /// The peer.
        remote: [u8; 32],
    },
}

/// What a peer's events said so far.
#[derive(Clone, Debug, Default)]
pub struct PeerState {
    /// The topic's first refresh finished.
    pub flushed: bool,
    /// Connections open now (by its events).
    pub open: std::collections::BTreeSet<[u8; 32]>,
    /// Every connection opened, in order.
    pub opened: Vec<[u8; 32]>,
    /// Every connection closed, in order.
    pub closed: Vec<[u8; 32]>,
    /// Every message received, in order.
    pub data: Vec<([u8; 32], String)>,
}

impl PeerState {
    fn apply(&mut self, ev: &PeerEvent) {
        match ev {
            PeerEvent::Flushed => self.flushed = true,
            PeerEvent::Connection { remote, .. } => {
                self.open.insert(*remote);
                self.opened.push(*remote);
            }
            PeerEvent::Close { remote } => {
                self.open.remove(remote);
                self.closed.push(*remote);
            }
            PeerEvent::Data { remote, data } => self.data.push((*remote, data.clone())),
        }
    }
}

/// A peer's connections as it reports them: remote key -> whether we dialled it.
pub type ConnectionSet = BTreeMap<[u8; 32], bool>;

/// What both kinds of peers do.
pub trait SwarmPeer: Send {
    /// Its public key.
    fn public_key(&self) -> [u8; 32];
    /// Its events.
    fn events(&self) -> &Receiver<PeerEvent>;
    /// What its events said so far (kept by [`wait_until`]).
    fn state(&self) -> &Mutex<PeerState>;
    /// Writes `data` to every open connection.
    fn send(&self, data: &str);
    /// Joins the topic (if the peer was made without joining).
    fn join(&self, options: JoinOptions);
    /// Waits for the swarm's flush.
    fn flush(&self);
    /// Keeps a connection to `public_key`, dialled at once (hyperswarm `joinPeer`).
    fn join_peer(&self, public_key: [u8; 32]);
    /// Leaves the topic.
    fn leave(&self);
    /// Its open connections now.
    fn connections(&self) -> ConnectionSet;
    /// Dials it started so far.
    fn attempted(&self) -> u64;
    /// Whether it remembers the peer `key`.
    fn knows(&self, key: &[u8; 32]) -> bool;
    /// Leaves everything and stops.
    fn destroy(self: Box<Self>);
    /// "Rust" or "JS", for messages.
    fn kind(&self) -> &'static str;
}

/// How a test peer is made.
#[derive(Clone, Debug)]
pub struct PeerSpec {
    /// The bootstrap nodes.
    pub bootstrap: Vec<SocketAddrV4>,
    /// The key seed.
    pub seed: [u8; 32],
    /// The topic.
    pub topic: [u8; 32],
    /// Join at once (else [`SwarmPeer::join`]).
    pub join: Option<JoinOptions>,
    /// `max_peers`, if not the default.
    pub max_peers: Option<usize>,
    /// Keys refused.
    pub firewall: Vec<[u8; 32]>,
    /// Short retry periods (ms), for tests of what retries do.
    pub backoffs: Option<[u64; 4]>,
}

impl PeerSpec {
    /// A peer that joins `topic` as server and client at once.
    pub fn new(bootstrap: &[SocketAddrV4], seed: [u8; 32], topic: [u8; 32]) -> PeerSpec {
        PeerSpec {
            bootstrap: bootstrap.to_vec(),
            seed,
            topic,
            join: Some(JoinOptions::default()),
            max_peers: None,
            firewall: Vec::new(),
            backoffs: None,
        }
    }
}

fn key(v: &Value) -> [u8; 32] {
    v.as_str()
        .and_then(from_hex)
        .and_then(|b| b.try_into().ok())
        .expect("a 64-hex key")
}

// ----- Node.js -------------------------------------------------------------------------------

/// A `swarm-peer.js` process.
pub struct JsSwarmPeer {
    child: Child,
    stdin: Mutex<ChildStdin>,
    public_key: [u8; 32],
    events: Receiver<PeerEvent>,
    answers: Receiver<Value>,
    state: Mutex<PeerState>,
}

impl JsSwarmPeer {
    /// Starts the peer and waits until it says it is ready.
    pub fn spawn(spec: &PeerSpec) -> JsSwarmPeer {
        let mut opts = json!({
            "bootstrap": spec.bootstrap.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "seed": to_hex(&spec.seed),
            "topic": to_hex(&spec.topic),
            "join": spec.join.is_some(),
            "firewall": spec.firewall.iter().map(|k| to_hex(k)).collect::<Vec<_>>(),
        });
        if let Some(j) = spec.join {
            opts["server"] = json!(j.server);
            opts["client"] = json!(j.client);
        }
        if let Some(m) = spec.max_peers {
            opts["maxPeers"] = json!(m);
        }
        if let Some(b) = spec.backoffs {
            opts["backoffs"] = json!(b);
            opts["jitter"] = json!(0);
        }
        let mut child = Command::new("node")
            .arg(js_dir().join("swarm-peer.js"))
            .arg(opts.to_string())
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node swarm-peer.js starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (etx, erx) = mpsc::channel();
        let (atx, arx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("SWARM_PEER_DEBUG").is_some() {
                    eprintln!("swarm-peer.js> {line}");
                }
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("swarm-peer.js: {line}");
                    continue;
                };
                let ev = match v["ev"].as_str() {
                    Some("flushed") => Some(PeerEvent::Flushed),
                    Some("connection") => Some(PeerEvent::Connection {
                        remote: key(&v["remote"]),
                        initiator: v["initiator"].as_bool().unwrap_or(false),
                    }),
                    Some("data") => Some(PeerEvent::Data {
                        remote: key(&v["remote"]),
                        data: v["data"].as_str().unwrap_or_default().to_string(),
                    }),
                    Some("close") => Some(PeerEvent::Close {
                        remote: key(&v["remote"]),
                    }),
                    _ => None,
                };
                let sent = match ev {
                    Some(ev) => etx.send(ev).is_ok(),
                    None => atx.send(v).is_ok(),
                };
                if !sent {
                    break;
                }
            }
        });
        let ready = arx
            .recv_timeout(Duration::from_secs(30))
            .expect("swarm-peer.js says it is ready");
        assert_eq!(ready["ev"], "ready", "{ready}");
        JsSwarmPeer {
            child,
            stdin: Mutex::new(stdin),
            public_key: key(&ready["publicKey"]),
            events: erx,
            answers: arx,
            state: Mutex::default(),
        }
    }

    /// Sends a command and waits for the answer whose `ev` is `answer`.
    fn command(&self, cmd: Value, answer: &str) -> Value {
        {
            let mut stdin = self.stdin.lock().unwrap();
            writeln!(stdin, "{cmd}").expect("write to swarm-peer.js");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .answers
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("swarm-peer.js did not answer {cmd}: {e}"));
            if v["ev"] == answer {
                return v;
            }
            assert_ne!(v["ev"], "error", "swarm-peer.js failed {cmd}: {v}");
        }
    }
}

impl SwarmPeer for JsSwarmPeer {
    fn public_key(&self) -> [u8; 32] {
        self.public_key
    }
    fn events(&self) -> &Receiver<PeerEvent> {
        &self.events
    }
    fn state(&self) -> &Mutex<PeerState> {
        &self.state
    }
    fn send(&self, data: &str) {
        self.command(json!({"cmd": "send", "data": data}), "sent");
    }
    fn join(&self, options: JoinOptions) {
        let mut stdin = self.stdin.lock().unwrap();
        let cmd = json!({"cmd": "join", "server": options.server, "client": options.client});
        writeln!(stdin, "{cmd}").expect("write to swarm-peer.js");
    }
    fn flush(&self) {
        self.command(json!({"cmd": "flush"}), "flush-done");
    }
    fn join_peer(&self, public_key: [u8; 32]) {
        let mut stdin = self.stdin.lock().unwrap();
        let cmd = json!({"cmd": "joinPeer", "publicKey": to_hex(&public_key)});
        writeln!(stdin, "{cmd}").expect("write to swarm-peer.js");
    }
    fn leave(&self) {
        self.command(json!({"cmd": "leave"}), "left");
    }
    fn connections(&self) -> ConnectionSet {
        let v = self.command(json!({"cmd": "stats"}), "stats");
        v["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .map(|c| (key(&c["remote"]), c["initiator"].as_bool().unwrap_or(false)))
            .collect()
    }
    fn attempted(&self) -> u64 {
        let v = self.command(json!({"cmd": "stats"}), "stats");
        v["attempted"].as_u64().unwrap_or(0)
    }
    fn knows(&self, peer: &[u8; 32]) -> bool {
        let v = self.command(json!({"cmd": "stats"}), "stats");
        v["peerKeys"]
            .as_array()
            .expect("peerKeys")
            .iter()
            .any(|k| key(k) == *peer)
    }
    fn destroy(mut self: Box<Self>) {
        let _ = self.command(json!({"cmd": "destroy"}), "destroyed");
        let _ = self.child.wait();
    }
    fn kind(&self) -> &'static str {
        "JS"
    }
}

impl Drop for JsSwarmPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- Rust ----------------------------------------------------------------------------------

/// The writers of a Rust peer's open connections (remote key, whether we dialled, writer),
/// and how many connections the accept thread took so far; the condvar tells of each one.
type Writers = Arc<(Mutex<TakenWriters>, std::sync::Condvar)>;

/// How long a send waits for the accept thread to take the connections the swarm has.
const ACCEPT_WAIT: Duration = Duration::from_secs(30);

/// What the accept thread of a Rust peer took.
#[derive(Default)]
struct TakenWriters {
    open: Vec<([u8; 32], bool, ConnWriter)>,
}

/// A Rust swarm on its own mio node.
pub struct RustSwarmPeer {
    swarm: Arc<Swarm>,
    // Dropped after the swarm (fields drop in order): the node outlives its swarm.
    node: MioNode,
    topic: [u8; 32],
    events: Receiver<PeerEvent>,
    writers: Writers,
    state: Mutex<PeerState>,
}

impl RustSwarmPeer {
    /// Starts the node, bootstraps it, and starts the swarm.
    pub fn spawn(spec: &PeerSpec) -> RustSwarmPeer {
        let node = MioNode::spawn(loopback_config(&spec.bootstrap)).expect("spawn");
        node.wait_bootstrapped().expect("bootstrap");
        let mut config = SwarmConfig::from_seed(&spec.seed);
        if let Some(m) = spec.max_peers {
            config.max_peers = m;
        }
        if let Some(b) = spec.backoffs {
            config.backoffs = Some(b.map(Duration::from_millis));
            config.jitter = Duration::ZERO;
        }
        let refused = spec.firewall.clone();
        if !refused.is_empty() {
            config = config.with_firewall(move |k| refused.contains(k));
        }
        let swarm = Arc::new(node.swarm(config).expect("swarm"));
        let (tx, events) = mpsc::channel();
        let writers = Writers::default();
        accept_loop(swarm.clone(), tx.clone(), writers.clone());
        let peer = RustSwarmPeer {
            swarm,
            node,
            topic: spec.topic,
            events,
            writers,
            state: Mutex::default(),
        };
        if let Some(options) = spec.join {
            peer.join_and_report(options, tx);
        }
        peer
    }

    fn join_and_report(&self, options: JoinOptions, tx: Sender<PeerEvent>) {
        self.swarm.join(self.topic, options).expect("join");
        let swarm = self.swarm.clone();
        let topic = self.topic;
        std::thread::spawn(move || {
            if swarm.flushed(topic).unwrap_or(false) {
                let _ = tx.send(PeerEvent::Flushed);
            }
        });
    }

    /// The swarm.
    pub fn swarm(&self) -> &Swarm {
        &self.swarm
    }

    /// The node.
    pub fn node(&self) -> &MioNode {
        &self.node
    }
}

/// Accepts the swarm's connections, reads each on its own thread, and reports.
fn accept_loop(swarm: Arc<Swarm>, tx: Sender<PeerEvent>, writers: Writers) {
    std::thread::spawn(move || {
        while let Some(c) = swarm.accept() {
            let remote = c.connection.remote_public_key();
            let initiator = c.connection.is_initiator();
            let hyperdht_mio::Connection { reader, writer, .. } = c.connection;
            writers
                .0
                .lock()
                .unwrap()
                .open
                .push((remote, initiator, writer));
            writers.1.notify_all();
            if tx
                .send(PeerEvent::Connection { remote, initiator })
                .is_err()
            {
                return;
            }
            let tx = tx.clone();
            let writers = writers.clone();
            let mut reader = reader;
            std::thread::spawn(move || {
                while let Ok(Some(m)) = reader.recv_message() {
                    let data = String::from_utf8_lossy(&m).into_owned();
                    if tx.send(PeerEvent::Data { remote, data }).is_err() {
                        return;
                    }
                }
                let id = reader.conn();
                writers
                    .0
                    .lock()
                    .unwrap()
                    .open
                    .retain(|(_, _, w)| w.conn() != id);
                writers.1.notify_all();
                let _ = tx.send(PeerEvent::Close { remote });
            });
        }
    });
}

impl SwarmPeer for RustSwarmPeer {
    fn public_key(&self) -> [u8; 32] {
        self.swarm.public_key()
    }
    fn events(&self) -> &Receiver<PeerEvent> {
        &self.events
    }
    fn state(&self) -> &Mutex<PeerState> {
        &self.state
    }
    fn send(&self, data: &str) {
        // Every connection the swarm has open must have reached the accept thread first:
        // the swarm's view (`connections`) runs ahead of it, and a line written before the
        // writer of a new connection is there would go to none. The accept and reader
        // threads notify whenever the writers change.
        let missing = |w: &TakenWriters| {
            let open = self.swarm.info().map(|i| i.open).unwrap_or_default();
            open.into_iter()
                .filter(|id| !w.open.iter().any(|(_, _, x)| x.conn() == *id))
                .count()
        };
        let (lock, changed) = &*self.writers;
        let (w, wait) = changed
            .wait_timeout_while(lock.lock().unwrap(), ACCEPT_WAIT, |w| missing(w) > 0)
            .unwrap();
        assert!(
            !wait.timed_out(),
            "the accept thread never took {} of the swarm's connections",
            missing(&w)
        );
        for (remote, _, w) in w.open.iter() {
            let sent = w.send_message(data.as_bytes());
            if std::env::var_os("SWARM_PEER_DEBUG").is_some() {
                eprintln!(
                    "rust peer {}: {data:?} to {} on {:?}: {sent:?}",
                    &to_hex(&self.public_key())[..8],
                    &to_hex(remote)[..8],
                    w.conn()
                );
            }
        }
    }
    fn join(&self, options: JoinOptions) {
        // Flushed events for later joins are not reported (the tests wait on connections).
        self.swarm.join(self.topic, options).expect("join");
    }
    fn flush(&self) {
        self.swarm.flush().expect("flush");
    }
    fn join_peer(&self, public_key: [u8; 32]) {
        self.swarm.join_peer(public_key).expect("join_peer");
    }
    fn leave(&self) {
        self.swarm.leave(self.topic).expect("leave");
    }
    fn connections(&self) -> ConnectionSet {
        // The swarm's view: the accept thread may not have taken a new connection yet.
        self.swarm
            .info()
            .map(|i| i.connected.into_iter().collect())
            .unwrap_or_default()
    }
    fn attempted(&self) -> u64 {
        self.swarm
            .info()
            .map(|i| i.stats.client_attempted)
            .unwrap_or(0)
    }
    fn knows(&self, key: &[u8; 32]) -> bool {
        self.swarm
            .info()
            .is_ok_and(|i| i.peers.iter().any(|p| p.public_key == *key))
    }
    fn destroy(self: Box<Self>) {
        self.swarm.destroy();
    }
    fn kind(&self) -> &'static str {
        "Rust"
    }
}

// ----- waiting -------------------------------------------------------------------------------

/// Takes events from `peer` until `done` holds for what they said; panics after `wait` with
/// the state.
pub fn wait_until(
    peer: &dyn SwarmPeer,
    wait: Duration,
    what: &str,
    done: impl Fn(&PeerState) -> bool,
) -> PeerState {
    let deadline = Instant::now() + wait;
    loop {
        {
            let st = peer.state().lock().unwrap();
            if done(&st) {
                return st.clone();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match peer.events().recv_timeout(left) {
            Ok(ev) => peer.state().lock().unwrap().apply(&ev),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                "{} peer {}: no {what} within {wait:?}; state {:?}",
                peer.kind(),
                &to_hex(&peer.public_key())[..8],
                peer.state().lock().unwrap()
            ),
        }
    }
}

/// Takes what events came already, without waiting.
pub fn drain(peer: &dyn SwarmPeer) -> PeerState {
    while let Ok(ev) = peer.events().try_recv() {
        peer.state().lock().unwrap().apply(&ev);
    }
    peer.state().lock().unwrap().clone()
}
