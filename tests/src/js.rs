//! Driver for the Node.js interop harness (`tests/js/harness.js`).
//!
//! The harness runs the real `hyperdht` from npm (pinned in `tests/js/package.json`) and
//! speaks newline-delimited JSON on stdin/stdout: a request
//! `{"id":N,"cmd":"...",...args}` gets a reply `{"id":N,"ok":true,"result":...}` or
//! `{"id":N,"ok":false,"error":"message"}`. Commands run concurrently in the harness; replies
//! are routed back to the caller by id, so one [`JsHarness`] can be shared between threads.
//!
//! Every JS node binds 127.0.0.1 only. The harness logs to stderr, which is inherited, so its
//! output shows up next to the test output.
//!
//! Every interop test starts with:
//!
//! ```no_run
//! if !hyperdht_tests::js::interop_enabled() {
//!     return;
//! }
//! ```

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// Environment variable that, when set to `1`, skips the interop tests explicitly.
pub const SKIP_ENV: &str = "HYPERDHT_SKIP_INTEROP";

/// How long [`JsHarness::call`] waits for a reply before giving up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `Drop` waits for the harness to exit after `shutdown` before killing it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Upper bound for `npm ci`, including waiting for another process that runs it.
const NPM_DEADLINE: Duration = Duration::from_secs(600);

/// Oldest supported Node.js major version.
const MIN_NODE_MAJOR: u32 = 18;

/// The `tests/js` directory that holds `harness.js`, `package.json` and `node_modules`.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Whether the Node.js interop tests should run.
///
/// Returns `false` (and says so on stderr) only when `HYPERDHT_SKIP_INTEROP=1` is set.
/// Otherwise it checks that Node.js 18+ runs and that `tests/js/node_modules` is installed
/// (running `npm ci` once if it is not), and returns `true`.
///
/// # Panics
///
/// When `node` cannot run, is older than 18, or `npm ci` fails: a missing toolchain must not
/// silently turn the interop tests green.
pub fn interop_enabled() -> bool {
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        eprintln!("{SKIP_ENV}=1: skipping the Node.js interop test");
        return false;
    }
    if let Err(e) = check_node() {
        panic!("{e}");
    }
    if let Err(e) = ensure_node_modules() {
        panic!("{e}");
    }
    true
}

fn check_node() -> Result<(), String> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            let not_found = "Node.js `node` not found: the interop tests need Node.js 18+; \
                             set HYPERDHT_SKIP_INTEROP=1 to skip them explicitly";
            let out = Command::new("node")
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("{not_found} ({e})"))?;
            if !out.status.success() {
                return Err(format!("{not_found} (`node --version` {})", out.status));
            }
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let major = version
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok());
            match major {
                Some(m) if m >= MIN_NODE_MAJOR => Ok(()),
                _ => Err(format!(
                    "Node.js {version} is too old or unrecognised: the interop tests need \
                     Node.js {MIN_NODE_MAJOR}+; set {SKIP_ENV}=1 to skip them explicitly"
                )),
            }
        })
        .clone()
}

fn node_modules_ready(dir: &Path) -> bool {
    dir.join("node_modules/hyperdht/package.json").is_file()
}

/// Makes sure `tests/js/node_modules` is installed, running `npm ci` at most once per process
/// (`OnceLock`) and at most once at a time across processes (a lock file created with
/// `create_new`; waiters poll for it with a bounded deadline).
fn ensure_node_modules() -> Result<(), String> {
    static INSTALL: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALL
        .get_or_init(|| install_node_modules(&js_dir()))
        .clone()
}

fn install_node_modules(dir: &Path) -> Result<(), String> {
    let lock = dir.join(".npm-ci.lock");
    let deadline = Instant::now() + NPM_DEADLINE;
    loop {
        if node_modules_ready(dir) {
            return Ok(());
        }
        match OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(mut f) => {
                let _ = writeln!(f, "{}", std::process::id());
                let result = if node_modules_ready(dir) {
                    Ok(())
                } else {
                    run_npm_ci(dir, deadline)
                };
                let _ = fs::remove_file(&lock);
                return result;
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Another test process is installing: wait for it, bounded.
                if Instant::now() >= deadline {
                    return Err(format!(
                        "timed out waiting for another `npm ci` in {}; remove {} if it is stale",
                        dir.display(),
                        lock.display()
                    ));
                }
                thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(format!("cannot create {}: {e}", lock.display())),
        }
    }
}

fn run_npm_ci(dir: &Path, deadline: Instant) -> Result<(), String> {
    eprintln!(
        "installing Node.js test dependencies: npm ci in {}",
        dir.display()
    );
    let mut child = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run `npm ci` in {} ({e}); install npm or set {SKIP_ENV}=1",
                dir.display()
            )
        })?;
    // Bounded wait: poll the child until the deadline, then kill it.
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() && node_modules_ready(dir) => return Ok(()),
            Ok(Some(status)) => {
                return Err(format!("`npm ci` in {} failed: {status}", dir.display()))
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`npm ci` in {} timed out", dir.display()));
            }
            Ok(None) => thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("waiting for `npm ci`: {e}")),
        }
    }
}

/// Options for [`JsHarness::create_node`]; `None` leaves the JS default in place.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// Bootstrap nodes; empty means the first node of a new network.
    pub bootstrap: Vec<SocketAddrV4>,
    /// Preferred server socket port. Note that hyperdht maps `0`/absent to its default
    /// 49737 (and tries up to 49741 before falling back to a random port).
    pub port: Option<u16>,
    /// Force (`Some(false)`) or forbid persistence; `None` lets dht-rpc adapt.
    pub ephemeral: Option<bool>,
    /// Whether the node considers itself firewalled; `None` is the JS default (`true`).
    pub firewalled: Option<bool>,
}

/// A JS node created by the harness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsNode {
    /// The harness handle used by every per-node command.
    pub handle: u64,
    /// The node's server socket address (always on 127.0.0.1).
    pub addr: SocketAddrV4,
    /// `dht.table.id`: `BLAKE2b-256(ip ++ port_le)` once persistent, random while ephemeral.
    pub id: [u8; 32],
    /// Whether the node is still ephemeral after bootstrapping.
    pub ephemeral: bool,
    /// Whether the node considers itself firewalled after bootstrapping.
    pub firewalled: bool,
}

/// A JS testnet, as built by hyperdht's `testnet.js`.
#[derive(Clone, Debug)]
pub struct JsTestnet {
    /// The address to bootstrap from (the first node).
    pub bootstrap: Vec<SocketAddrV4>,
    /// All nodes, the bootstrap node first.
    pub nodes: Vec<JsNode>,
}

/// A DHT node with a known id (routing table entry, query closest node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsPeer {
    /// Its address.
    pub addr: SocketAddrV4,
    /// Its node id.
    pub id: [u8; 32],
}

/// A node that answered; `id` is `None` when the reply carried no (valid) id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsReplier {
    /// Its address.
    pub addr: SocketAddrV4,
    /// Its node id, if the reply carried a valid one.
    pub id: Option<[u8; 32]>,
}

/// What [`JsHarness::info`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsInfo {
    /// `dht.table.id`.
    pub id: [u8; 32],
    /// `dht.ephemeral`.
    pub ephemeral: bool,
    /// `dht.firewalled`.
    pub firewalled: bool,
    /// `dht.host`: the host the NAT sampler settled on, if any.
    pub host: Option<Ipv4Addr>,
    /// `dht.port`: the port the NAT sampler settled on (0 when unknown or inconsistent).
    pub port: u16,
    /// `dht.bootstrapped`.
    pub bootstrapped: bool,
    /// Number of routing table entries.
    pub table_size: usize,
}

/// Result of [`JsHarness::find_node`].
#[derive(Clone, Debug)]
pub struct FindNodeResult {
    /// `q.closestNodes`, closest to the target first.
    pub closest: Vec<JsPeer>,
    /// Every reply from the query's data stream, in arrival order.
    pub replies: Vec<JsReplier>,
}

/// Result of [`JsHarness::ping`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingReply {
    /// Round trip time as measured by dht-rpc, in milliseconds.
    pub rtt_ms: u64,
    /// The replier's id, if it sent one.
    pub id: Option<[u8; 32]>,
}

/// Which of a JS node's two sockets sends a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsSocket {
    /// The server socket (the one whose address is the node's address; carries the id).
    Server,
    /// The client socket (ephemeral port; never carries an id).
    Client,
}

/// One raw dht-rpc request for [`JsHarness::request`].
#[derive(Clone, Debug)]
pub struct JsRequest {
    /// Destination.
    pub to: SocketAddrV4,
    /// Internal (dht-rpc) command or external (hyperdht) command.
    pub internal: bool,
    /// Command number.
    pub command: u64,
    /// Optional target.
    pub target: Option<[u8; 32]>,
    /// Optional value.
    pub value: Option<Vec<u8>>,
    /// Optional round-trip token.
    pub token: Option<[u8; 32]>,
    /// Sending socket; `None` is dht-rpc's choice (client socket while firewalled).
    pub socket: Option<JsSocket>,
    /// Retransmissions after the first send (dht-rpc default 3, 1 s apart); `Some(0)` makes a
    /// silent destination time out after about one second.
    pub retries: Option<u32>,
}

impl JsRequest {
    /// A request with no target, value or token, sent the default way.
    pub fn new(to: SocketAddrV4, internal: bool, command: u64) -> Self {
        JsRequest {
            to,
            internal,
            command,
            target: None,
            value: None,
            token: None,
            socket: None,
            retries: None,
        }
    }
}

/// A decoded dht-rpc response, as the JS node saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsResponse {
    /// Transaction id.
    pub tid: u16,
    /// The responder (id only when present and valid for its address).
    pub from: JsReplier,
    /// The address the responder saw the request coming from.
    pub to: SocketAddrV4,
    /// The token, if any.
    pub token: Option<[u8; 32]>,
    /// Closer nodes, if any.
    pub closer_nodes: Vec<SocketAddrV4>,
    /// Error code (0 = OK, 1 = unknown command, 2 = invalid token).
    pub error: u64,
    /// The value, if any.
    pub value: Option<Vec<u8>>,
}

/// What one [`JsHarness::query`] walk saw and cost.
#[derive(Clone, Debug)]
pub struct JsQuery {
    /// Every reply, in arrival order (the query stream itself only yields error-free ones).
    pub replies: Vec<JsResponse>,
    /// The query's own error (e.g. `Too few nodes responded` for a commit), if any.
    pub error: Option<String>,
    /// Replies with error 0.
    pub successes: u64,
    /// Error replies plus requests that failed (timeouts).
    pub errors: u64,
    /// Wall time of the walk, for reports only (tests assert on `timeouts`).
    pub elapsed_ms: u64,
    /// Requests of this JS node that timed out during the walk (dht-rpc `requests.timeouts`).
    pub timeouts: u64,
    /// DOWN_HINTs this JS node sent during the walk.
    pub down_hints_sent: u64,
}

/// Outcome of [`JsHarness::request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The destination answered.
    Response(JsResponse),
    /// dht-rpc gave up (`REQUEST_TIMEOUT`).
    Timeout,
}

type Reply = Result<Value, String>;

#[derive(Default)]
struct Shared {
    pending: HashMap<u64, Sender<Reply>>,
    /// Set once the harness's stdout reached EOF; no reply can come any more.
    closed: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running `node tests/js/harness.js` process.
///
/// Safe to share between threads (`&JsHarness` is enough to [`call`](Self::call)). Dropping it
/// shuts the harness down and kills it if it does not exit within a few seconds.
pub struct JsHarness {
    child: Child,
    stdin: Mutex<Option<ChildStdin>>,
    shared: Arc<Mutex<Shared>>,
    next_id: AtomicU64,
    /// Behind a mutex so that `&JsHarness` can be shared between threads.
    eof: Mutex<Receiver<()>>,
    reader: Option<JoinHandle<()>>,
}

impl JsHarness {
    /// Spawns the harness (installing `node_modules` first if needed).
    pub fn new() -> Result<Self, String> {
        check_node()?;
        ensure_node_modules()?;
        let dir = js_dir();
        let mut child = Command::new("node")
            .arg(dir.join("harness.js"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot spawn node harness.js: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (eof_tx, eof) = mpsc::channel();
        let reader = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("js-harness-reader".into())
                .spawn(move || read_replies(stdout, &shared, eof_tx))
                .map_err(|e| format!("cannot spawn reader thread: {e}"))?
        };
        Ok(JsHarness {
            child,
            stdin: Mutex::new(Some(stdin)),
            shared,
            next_id: AtomicU64::new(1),
            eof: Mutex::new(eof),
            reader: Some(reader),
        })
    }

    /// Sends one command with [`DEFAULT_TIMEOUT`]. `args` is a JSON object (or `null`) whose
    /// fields are merged next to `id` and `cmd`. Returns the `result` or the error message.
    pub fn call(&self, cmd: &str, args: Value) -> Result<Value, String> {
        self.call_timeout(cmd, args, DEFAULT_TIMEOUT)
    }

    /// Like [`call`](Self::call) with an explicit timeout.
    pub fn call_timeout(&self, cmd: &str, args: Value, timeout: Duration) -> Result<Value, String> {
        let mut msg = match args {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => return Err(format!("`{cmd}` arguments must be an object, got {other}")),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        msg.insert("id".into(), id.into());
        msg.insert("cmd".into(), cmd.into());
        let mut line = Value::Object(msg).to_string();
        line.push('\n');

        let (tx, rx) = mpsc::channel();
        {
            let mut shared = lock(&self.shared);
            if let Some(why) = &shared.closed {
                return Err(format!("`{cmd}`: {why}"));
            }
            shared.pending.insert(id, tx);
        }
        if let Err(e) = self.write_line(&line) {
            lock(&self.shared).pending.remove(&id);
            return Err(format!("`{cmd}`: cannot write to harness: {e}"));
        }
        match rx.recv_timeout(timeout) {
            Ok(reply) => reply.map_err(|e| format!("`{cmd}`: {e}")),
            Err(RecvTimeoutError::Timeout) => {
                lock(&self.shared).pending.remove(&id);
                Err(format!("`{cmd}` timed out after {timeout:?}"))
            }
            Err(RecvTimeoutError::Disconnected) => Err(format!("`{cmd}`: harness exited")),
        }
    }

    fn write_line(&self, line: &str) -> std::io::Result<()> {
        let mut stdin = lock(&self.stdin);
        let stdin = stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::new(ErrorKind::BrokenPipe, "stdin closed"))?;
        stdin.write_all(line.as_bytes())?;
        stdin.flush()
    }

    /// `createNode`: starts a JS node and waits for `fullyBootstrapped()`.
    pub fn create_node(&self, opts: &NodeOptions) -> Result<JsNode, String> {
        let mut args = json!({
            "bootstrap": opts.bootstrap.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        });
        if let Some(port) = opts.port {
            args["port"] = port.into();
        }
        if let Some(e) = opts.ephemeral {
            args["ephemeral"] = e.into();
        }
        if let Some(f) = opts.firewalled {
            args["firewalled"] = f.into();
        }
        parse_node(&self.call("createNode", args)?)
    }

    /// `testnet`: `size` non-ephemeral, non-firewalled nodes, the first one bootstrapping a new
    /// network and the others joining through it, one after the other.
    pub fn testnet(&self, size: usize) -> Result<JsTestnet, String> {
        let v = self.call("testnet", json!({ "size": size }))?;
        let bootstrap = array(&v["bootstrap"])?
            .iter()
            .map(|s| {
                let s = s.as_str().ok_or("bootstrap entry is not a string")?;
                s.parse()
                    .map_err(|e| format!("bad bootstrap address {s}: {e}"))
            })
            .collect::<Result<_, String>>()?;
        let nodes = array(&v["nodes"])?
            .iter()
            .map(parse_node)
            .collect::<Result<_, _>>()?;
        Ok(JsTestnet { bootstrap, nodes })
    }

    /// `table`: the node's routing table (`dht.table.toArray()`).
    pub fn table(&self, node: u64) -> Result<Vec<JsPeer>, String> {
        let v = self.call("table", json!({ "node": node }))?;
        array(&v)?.iter().map(parse_peer).collect()
    }

    /// `info`: id, NAT view and state of the node.
    pub fn info(&self, node: u64) -> Result<JsInfo, String> {
        let v = self.call("info", json!({ "node": node }))?;
        let host = match &v["host"] {
            Value::Null => None,
            h => Some(
                h.as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad host {h}"))?,
            ),
        };
        Ok(JsInfo {
            id: hex32(&v["id"])?,
            ephemeral: boolean(&v["ephemeral"])?,
            firewalled: boolean(&v["firewalled"])?,
            host,
            port: v["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0),
            bootstrapped: boolean(&v["bootstrapped"])?,
            table_size: uint(&v["tableSize"])? as usize,
        })
    }

    /// `findNode`: runs `dht.findNode(target)` to completion.
    pub fn find_node(&self, node: u64, target: &[u8; 32]) -> Result<FindNodeResult, String> {
        let v = self.call(
            "findNode",
            json!({ "node": node, "target": to_hex(target) }),
        )?;
        Ok(FindNodeResult {
            closest: array(&v["closest"])?
                .iter()
                .map(parse_peer)
                .collect::<Result<_, _>>()?,
            replies: array(&v["replies"])?
                .iter()
                .map(parse_replier)
                .collect::<Result<_, _>>()?,
        })
    }

    /// `ping`: `dht.ping({host, port})`; an error when it times out.
    pub fn ping(&self, node: u64, to: SocketAddrV4) -> Result<PingReply, String> {
        let v = self.call(
            "ping",
            json!({ "node": node, "host": to.ip().to_string(), "port": to.port() }),
        )?;
        Ok(PingReply {
            rtt_ms: uint(&v["rtt_ms"])?,
            id: opt_hex32(&v["id"])?,
        })
    }

    /// `request`: one raw dht-rpc request through the node's io layer.
    pub fn request(&self, node: u64, req: &JsRequest) -> Result<RequestOutcome, String> {
        let mut args = json!({
            "node": node,
            "host": req.to.ip().to_string(),
            "port": req.to.port(),
            "internal": req.internal,
            "command": req.command,
        });
        if let Some(t) = &req.target {
            args["target"] = to_hex(t).into();
        }
        if let Some(v) = &req.value {
            args["value"] = to_hex(v).into();
        }
        if let Some(t) = &req.token {
            args["token"] = to_hex(t).into();
        }
        if let Some(s) = req.socket {
            args["socket"] = match s {
                JsSocket::Server => "server",
                JsSocket::Client => "client",
            }
            .into();
        }
        if let Some(r) = req.retries {
            args["retries"] = r.into();
        }
        let v = self.call("request", args)?;
        if v["timeout"].as_bool() == Some(true) {
            return Ok(RequestOutcome::Timeout);
        }
        Ok(RequestOutcome::Response(parse_response(&v)?))
    }

    /// `query`: a dht-rpc query for an application (external) `command` from JS node `node`,
    /// with every reply its walk got, error replies included.
    pub fn query(
        &self,
        node: u64,
        command: u64,
        target: &[u8; 32],
        value: Option<&[u8]>,
    ) -> Result<JsQuery, String> {
        let mut args = json!({ "node": node, "command": command, "target": to_hex(target) });
        if let Some(v) = value {
            args["value"] = to_hex(v).into();
        }
        let v = self.call("query", args)?;
        Ok(JsQuery {
            replies: array(&v["replies"])?
                .iter()
                .map(parse_response)
                .collect::<Result<_, _>>()?,
            error: v["error"].as_str().map(str::to_owned),
            successes: uint(&v["successes"])?,
            errors: uint(&v["errors"])?,
            elapsed_ms: uint(&v["elapsedMs"])?,
            timeouts: uint(&v["timeouts"])?,
            down_hints_sent: uint(&v["downHintsSent"])?,
        })
    }

    /// `stats`: `dht.stats` as JSON.
    pub fn stats(&self, node: u64) -> Result<Value, String> {
        self.call("stats", json!({ "node": node }))
    }

    /// `destroy`: destroys one node.
    pub fn destroy(&self, node: u64) -> Result<(), String> {
        self.call("destroy", json!({ "node": node })).map(drop)
    }

    /// Shuts the harness down and waits for it to exit (bounded; kills it otherwise).
    /// Returns an error if it had to be killed or exited unsuccessfully. Dropping does the
    /// same, silently.
    pub fn shutdown(mut self) -> Result<(), String> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), String> {
        let Some(reader) = self.reader.take() else {
            return Ok(());
        };
        // Best effort: ask politely, then close stdin (EOF also makes the harness exit).
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.write_line(&format!("{{\"id\":{id},\"cmd\":\"shutdown\"}}\n"));
        lock(&self.stdin).take();
        // The harness's stdout closes when it exits; the reader then signals EOF.
        let graceful = match lock(&self.eof).recv_timeout(SHUTDOWN_GRACE) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        };
        if !graceful {
            let _ = self.child.kill();
        }
        let status = self.child.wait();
        let _ = reader.join();
        match status {
            Ok(s) if graceful && s.success() => Ok(()),
            Ok(s) if graceful => Err(format!("harness exited with {s}")),
            Ok(_) => Err(format!(
                "harness did not exit within {SHUTDOWN_GRACE:?}; killed"
            )),
            Err(e) => Err(format!("waiting for harness: {e}")),
        }
    }
}

impl Drop for JsHarness {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("js harness: {e}");
        }
    }
}

fn read_replies(stdout: std::process::ChildStdout, shared: &Mutex<Shared>, eof: Sender<()>) {
    let why = {
        let mut why = "harness exited (stdout closed)".to_string();
        for line in BufReader::new(stdout).lines() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    why = format!("harness stdout read error: {e}");
                    break;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            let msg: Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("js harness: ignoring non-JSON stdout line ({e}): {line}");
                    continue;
                }
            };
            let Some(id) = msg["id"].as_u64() else {
                eprintln!("js harness: reply without id: {line}");
                continue;
            };
            let reply = if msg["ok"].as_bool() == Some(true) {
                Ok(msg.get("result").cloned().unwrap_or(Value::Null))
            } else {
                Err(msg["error"].as_str().unwrap_or("unknown error").to_string())
            };
            if let Some(tx) = lock(shared).pending.remove(&id) {
                let _ = tx.send(reply);
            }
        }
        why
    };
    let mut shared = lock(shared);
    for (_, tx) in shared.pending.drain() {
        let _ = tx.send(Err(why.clone()));
    }
    shared.closed = Some(why);
    drop(shared);
    let _ = eof.send(());
}

// ---- JSON helpers ----------------------------------------------------------

fn array(v: &Value) -> Result<&Vec<Value>, String> {
    v.as_array()
        .ok_or_else(|| format!("expected an array, got {v}"))
}

fn boolean(v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("expected a bool, got {v}"))
}

fn uint(v: &Value) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("expected an unsigned integer, got {v}"))
}

fn parse_addr(v: &Value) -> Result<SocketAddrV4, String> {
    let host: Ipv4Addr = v["host"]
        .as_str()
        .and_then(|h| h.parse().ok())
        .ok_or_else(|| format!("bad host in {v}"))?;
    let port = v["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| format!("bad port in {v}"))?;
    Ok(SocketAddrV4::new(host, port))
}

fn parse_peer(v: &Value) -> Result<JsPeer, String> {
    Ok(JsPeer {
        addr: parse_addr(v)?,
        id: hex32(&v["id"])?,
    })
}

fn parse_replier(v: &Value) -> Result<JsReplier, String> {
    Ok(JsReplier {
        addr: parse_addr(v)?,
        id: opt_hex32(&v["id"])?,
    })
}

fn parse_node(v: &Value) -> Result<JsNode, String> {
    Ok(JsNode {
        handle: uint(&v["node"])?,
        addr: parse_addr(v)?,
        id: hex32(&v["id"])?,
        ephemeral: boolean(&v["ephemeral"])?,
        firewalled: boolean(&v["firewalled"])?,
    })
}

fn hex32(v: &Value) -> Result<[u8; 32], String> {
    opt_hex32(v)?.ok_or_else(|| "expected a 32-byte hex id, got null".to_string())
}

fn parse_response(v: &Value) -> Result<JsResponse, String> {
    Ok(JsResponse {
        tid: u16::try_from(uint(&v["tid"])?).map_err(|_| "tid out of range")?,
        from: parse_replier(&v["from"])?,
        to: parse_addr(&v["to"])?,
        token: opt_hex32(&v["token"])?,
        closer_nodes: array(&v["closerNodes"])?
            .iter()
            .map(parse_addr)
            .collect::<Result<_, _>>()?,
        error: uint(&v["error"])?,
        value: match &v["value"] {
            Value::Null => None,
            h => Some(from_hex(h.as_str().ok_or("value is not a string")?)?),
        },
    })
}

fn opt_hex32(v: &Value) -> Result<Option<[u8; 32]>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            let bytes = from_hex(s)?;
            bytes
                .try_into()
                .map(Some)
                .map_err(|_| format!("expected 32 bytes of hex, got {s}"))
        }
        other => Err(format!("expected hex string, got {other}")),
    }
}

/// Lower-case hex encoding.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Hex decoding (either case); an error for odd lengths or non-hex characters.
pub fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if s.len() & 1 != 0 {
        return Err(format!("odd-length hex: {s}"));
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| match (nibble(p[0]), nibble(p[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(format!("bad hex: {s}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "00017f80abff");
        assert_eq!(from_hex("00017F80ABff").unwrap(), bytes);
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }
}
