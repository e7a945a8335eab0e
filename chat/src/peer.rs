//! What every subcommand shares: status lines, starting a node (with errors that name the
//! address), telling the user when no DHT node answers, signals, and the open connections
//! with the stdin and stdout pumps around them.

use std::io::{self, Read, Write};
use std::net::{SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use hyperdht_mio::{Config, ConnReader, ConnWriter, Error, MioNode};
use hyperdht_proto::ConnId;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Prints one status line and flushes (through a pipe, buffered output looks like a hang).
pub fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

// ----- nodes -------------------------------------------------------------------------------

/// Starts a node; a port that cannot be bound is named in the error. An explicit port is
/// tried first with a plain socket, so a busy one is reported with the OS's reason (and the
/// node never logs a bind failure the user did not cause by a fallback).
pub fn spawn_node(config: Config) -> Result<MioNode, String> {
    let (host, port) = (config.host, config.port);
    if !config.any_port && port != 0 {
        UdpSocket::bind(SocketAddrV4::new(host, port))
            .map_err(|e| format!("cannot bind UDP port {port} on {host}: {e}"))?;
    }
    MioNode::spawn(config).map_err(|e| match e {
        Error::BindFailed if port == 0 => format!("cannot bind a UDP port on {host}"),
        Error::BindFailed => format!(
            "cannot bind UDP port {port} on {host}: it is in use or the address is not local"
        ),
        e => format!("cannot start the DHT node on {host}: {e}"),
    })
}

/// Whether a UDP port is free on `addr`'s host (for picking a port without the node logging
/// the failed attempts).
pub fn port_is_free(addr: SocketAddrV4) -> bool {
    UdpSocket::bind(addr).is_ok()
}

/// How long a node may go without a single DHT node in its table before we say so (the
/// bootstrap of an unreachable network takes about 6 s; the warning comes at its end, or at
/// this mark, whichever is first).
const NO_DHT_WARNING: Duration = Duration::from_secs(5);
const DHT_POLL: Duration = Duration::from_millis(250);

/// Watches `node`'s routing table until `stop` is dropped or sends: warns (once) when no DHT
/// node answered by the end of the bootstrap or by [`NO_DHT_WARNING`], and prints a status
/// line when one answers after all. The node keeps retrying by itself (a server re-runs its
/// announce every few seconds, a node refreshes its table).
pub fn watch_dht<'scope>(
    scope: &'scope thread::Scope<'scope, '_>,
    node: &'scope MioNode,
    bootstrap: Vec<SocketAddrV4>,
) -> Sender<()> {
    let (stop, stopped) = mpsc::channel::<()>();
    let start = Instant::now();
    scope.spawn(move || {
        let mut warned = false;
        loop {
            match stopped.recv_timeout(DHT_POLL) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let Ok(info) = node.info() else {
                return;
            };
            let nodes = info.table.len();
            if nodes == 0 && !warned && (info.bootstrapped || start.elapsed() >= NO_DHT_WARNING) {
                let list: Vec<String> = bootstrap.iter().map(|a| a.to_string()).collect();
                tracing::warn!(
                    "no DHT node answered (bootstrap: {}); check --bootstrap and the network; \
                     still trying",
                    list.join(",")
                );
                warned = true;
            } else if nodes > 0 && warned {
                say(&format!(
                    "reached the DHT after {:.0?}: {nodes} node{} answered",
                    start.elapsed(),
                    if nodes == 1 { "" } else { "s" }
                ));
                warned = false;
            } else if nodes > 0 && info.bootstrapped {
                // Through, and bootstrapped: watch again only if the table empties later.
                if stopped.recv_timeout(Duration::from_secs(5)).is_ok() {
                    return;
                }
            }
        }
    });
    stop
}

// ----- signals -----------------------------------------------------------------------------

/// Ctrl-C and SIGTERM. Until [`Stop::running`] they end the process at once (nothing is
/// announced or connected yet); afterwards [`Stop::wait`] returns the signal, so the caller
/// closes its connections and unannounces.
pub struct Stop {
    rx: Receiver<i32>,
    running: Arc<AtomicBool>,
}

impl Stop {
    pub fn install() -> Result<Stop, String> {
        let mut signals = Signals::new([SIGINT, SIGTERM])
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let running = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = running.clone();
        thread::spawn(move || {
            for sig in signals.forever() {
                if !flag.load(Ordering::SeqCst) {
                    tracing::info!(signal = sig, "interrupted while starting");
                    std::process::exit(128 + sig);
                }
                if tx.send(sig).is_err() {
                    return;
                }
            }
        });
        Ok(Stop { rx, running })
    }

    /// From now on a signal is handed to [`Stop::wait`].
    pub fn running(&self) {
        self.running.store(true, Ordering::SeqCst);
    }

    /// Waits for a signal.
    pub fn wait(&self) -> i32 {
        self.running();
        self.rx.recv().unwrap_or(SIGTERM)
    }

    /// A clone of the channel's sender side is not exposed; this forwards the next signal to
    /// `tx` from a thread of its own (the client waits for a signal or the end of its stream).
    pub fn forward(self, tx: Sender<Ended>) {
        self.running();
        thread::spawn(move || {
            if let Ok(sig) = self.rx.recv() {
                let _ = tx.send(Ended::Signal(sig));
            }
        });
    }
}

/// Why the client stops.
pub enum Ended {
    /// The server's stream ended (EOF or an error).
    Stream,
    /// Ctrl-C or SIGTERM.
    Signal(i32),
}

// ----- connections -------------------------------------------------------------------------

/// Bytes moved per read and write: a whole pipe buffer, and the size of the chunks the driver
/// hands over, so a bulk transfer makes few round trips to the driver thread.
const PUMP_BUFFER: usize = 64 * 1024;

/// How long closing waits for the node to let go of our connections (the peers' ends are
/// sent by then) before shutting down regardless.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The open connections of this process: the writers stdin goes to, and how many readers
/// still pump to stdout.
#[derive(Default)]
pub struct Peers {
    state: Mutex<PeersState>,
    changed: Condvar,
}

#[derive(Default)]
struct PeersState {
    writers: Vec<(ConnId, ConnWriter)>,
    /// Stdin ended: new connections are finished at once.
    stdin_ended: bool,
    /// We are leaving: readers that end now end by our doing, not the peer's.
    leaving: bool,
    readers: usize,
}

impl Peers {
    fn lock(&self) -> MutexGuard<'_, PeersState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection: its writer gets stdin, its reader is pumped to stdout on a thread
    /// of its own. `on_end` runs when the reader ends.
    pub fn add(
        self: &Arc<Self>,
        reader: ConnReader,
        writer: ConnWriter,
        on_end: impl FnOnce() + Send + 'static,
    ) {
        {
            let mut st = self.lock();
            if st.stdin_ended {
                let _ = writer.finish();
            }
            st.writers.push((reader.conn(), writer));
            st.readers += 1;
        }
        let peers = self.clone();
        thread::spawn(move || {
            peers.pump_to_stdout(reader);
            {
                let mut st = peers.lock();
                st.readers -= 1;
            }
            peers.changed.notify_all();
            on_end();
        });
    }

    /// Copies a connection's bytes to stdout until it ends; says that the peer left unless
    /// we are the ones leaving.
    fn pump_to_stdout(&self, mut reader: ConnReader) {
        let mut buf = vec![0u8; PUMP_BUFFER];
        let why = loop {
            match reader.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    let mut out = io::stdout().lock();
                    if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                        return;
                    }
                }
                Err(e) => break Some(e),
            }
        };
        let conn = reader.conn();
        let mut st = self.lock();
        if let Some(e) = &why {
            // The connection is gone both ways: stop writing to it.
            st.writers.retain(|(id, _)| *id != conn);
            tracing::info!(error = %e, "connection ended");
        }
        if !st.leaving {
            drop(st);
            match why {
                None => say("peer left"),
                Some(e) => say(&format!("peer left ({e})")),
            }
        }
    }

    /// Copies stdin to every writer; at EOF finishes them (a half-close: their peers read
    /// the end, and what they send is still printed).
    pub fn pump_stdin(self: &Arc<Self>) {
        let peers = self.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; PUMP_BUFFER];
            let stdin = io::stdin();
            let mut input = stdin.lock();
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                let mut st = peers.lock();
                if n == 0 {
                    st.stdin_ended = true;
                    for (_, w) in &st.writers {
                        let _ = w.finish();
                    }
                    return;
                }
                st.writers
                    .retain_mut(|(_, w)| w.write_all(&buf[..n]).is_ok());
            }
        });
    }

    /// We leave: every connection is reset at once (the peer reads that we left, rather than
    /// timing out 15 s later), and this waits (at most [`CLOSE_WAIT`]) until the node has let
    /// go of them, so their resets went out before the node shuts its sockets.
    pub fn leave(&self, node: &MioNode) {
        {
            let mut st = self.lock();
            st.leaving = true;
            for (_, w) in &st.writers {
                w.reset();
            }
        }
        self.wait_released(node);
    }

    /// We end after the peer did: what we wrote is delivered and our side ended, waiting (at
    /// most [`CLOSE_WAIT`]) for the peer to take it.
    pub fn finish(&self, node: &MioNode) {
        {
            let mut st = self.lock();
            st.leaving = true;
            for (_, w) in &st.writers {
                let _ = w.finish();
            }
        }
        self.wait_released(node);
    }

    fn wait_released(&self, node: &MioNode) {
        let deadline = Instant::now() + CLOSE_WAIT;
        // Readers first: they see the end when the driver handled it.
        let mut st = self.lock();
        while st.readers > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let readers = st.readers;
        drop(st);
        tracing::debug!(
            readers,
            "connections closed; waiting for the node to release them"
        );
        // Then the node: it forgets a connection once its end is sent (or acknowledged).
        while Instant::now() < deadline {
            match node.info() {
                Ok(info) if info.connections > 0 => thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
        tracing::debug!(
            connections = node.info().map_or(0, |i| i.connections),
            "closing done"
        );
    }
}
