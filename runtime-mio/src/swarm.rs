//! Hyperswarm on the mio driver: the blocking [`Swarm`] handle. The loop's side of it (the
//! proto swarm, its connections until they are handed out, the callers waiting for flushes and
//! leaves) is `hyperdht-kit`'s [`SwarmSlot`](hyperdht_kit::SwarmSlot). Same names as
//! `hyperdht-async-std`'s `Swarm`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperdht_kit::SwarmSlot;
use hyperdht_proto::swarm::{JoinOptions, SwarmInfo};
use hyperdht_proto::{Node, Timestamp};

use crate::conn::Connection;
use crate::driver::Std;
use crate::handle::{Command, HandleInner, SwarmCall};
use hyperdht_kit::Error;

/// How long dropping a [`Swarm`] waits for its topics to be unannounced.
const DESTROY_WAIT: Duration = Duration::from_secs(5);

/// A connection the swarm keeps, with what the swarm knows of its peer (`peer.client`: we
/// dialled it; `peer.topics`: where we found it).
pub type SwarmConnection = hyperdht_kit::SwarmConnection<Connection>;

/// A swarm on a [`MioNode`](crate::MioNode) (JS `new Hyperswarm({ dht })`): join topics, and
/// take the connections it keeps with [`Swarm::accept`]. Dropping it destroys it (waiting up to
/// 5 s for the unannounces). The handle is `Sync`.
///
/// ```
/// use hyperdht_mio::{Config, JoinOptions, MioNode, SwarmConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let boot = MioNode::spawn(Config::bootstrapper("127.0.0.1:0".parse()?))?;
/// let boot_addr = match boot.local_addr() {
///     std::net::SocketAddr::V4(a) => a,
///     _ => unreachable!("nodes bind IPv4"),
/// };
/// let (a, b) = (MioNode::spawn(Config::local(vec![boot_addr]))?, MioNode::spawn(Config::local(vec![boot_addr]))?);
/// a.wait_bootstrapped()?;
/// b.wait_bootstrapped()?;
/// let topic = [7u8; 32];
/// let swarm_a = a.swarm(SwarmConfig::from_seed(&[1; 32]))?;
/// swarm_a.join(topic, JoinOptions::default())?;
/// swarm_a.flushed(topic)?; // announced
/// let swarm_b = b.swarm(SwarmConfig::from_seed(&[2; 32]))?;
/// swarm_b.join(topic, JoinOptions::default())?;
/// let found = swarm_b.accept().expect("b meets a");
/// assert_eq!(found.peer.public_key, swarm_a.public_key());
/// let met = swarm_a.accept().expect("a meets b");
/// assert_eq!(met.connection.remote_public_key(), swarm_b.public_key());
/// # Ok(())
/// # }
/// ```
pub struct Swarm {
    inner: Arc<HandleInner>,
    id: u64,
    public_key: [u8; 32],
    connections: Mutex<Receiver<SwarmConnection>>,
    destroyed: AtomicBool,
}

impl fmt::Debug for Swarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hyperdht_kit::fmt_swarm(f, &self.public_key)
    }
}

impl Swarm {
    pub(crate) fn new(
        inner: Arc<HandleInner>,
        id: u64,
        public_key: [u8; 32],
        connections: Receiver<SwarmConnection>,
    ) -> Swarm {
        Swarm {
            inner,
            id,
            public_key,
            connections: Mutex::new(connections),
            destroyed: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the loop thread and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SwarmSlot<Std>, &mut Node, Timestamp, Sender<T>) + Send + 'static,
    ) -> Result<Receiver<T>, Error> {
        let (tx, rx) = mpsc::channel();
        let call: SwarmCall = Box::new(move |slot, node, now| f(slot, node, now, tx));
        self.inner.send(Command::Swarm(self.id, call))?;
        Ok(rx)
    }

    /// The key pair's public key: what peers see.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// Joins `topic` (JS `swarm.join(topic, { server, client })`) and returns at once; the
    /// announce and lookups go on in the background ([`Swarm::flushed`] waits for them).
    pub fn join(&self, topic: [u8; 32], options: JoinOptions) -> Result<(), Error> {
        self.call(move |slot, node, now, tx| {
            let _ = tx.send(slot.swarm().join(now, node, topic, options));
        })?
        .recv()
        .map_err(|_| Error::Closed)?
        .map_err(Error::Api)
    }

    /// Waits until `topic`'s refresh under way finished (JS `discovery.flushed()`): as a
    /// server, the topic is announced. `Ok(false)`: the refresh's query failed, or the topic
    /// is not joined (or was left first).
    pub fn flushed(&self, topic: [u8; 32]) -> Result<bool, Error> {
        self.call(move |slot, _, _, tx| slot.wait_flushed(topic, tx))?
            .recv()
            .map_err(|_| Error::Closed)
    }

    /// Waits until every topic is flushed and every peer found so far was tried (JS
    /// `swarm.flush()`). `Ok(false)`: the swarm was destroyed first.
    pub fn flush(&self) -> Result<bool, Error> {
        self.call(move |slot, _, _, tx| slot.flush(tx))?
            .recv()
            .map_err(|_| Error::Closed)
    }

    /// Leaves `topic` and waits until its announce is removed (JS `await swarm.leave(topic)`).
    /// Open connections stay open.
    pub fn leave(&self, topic: [u8; 32]) -> Result<(), Error> {
        self.call(move |slot, node, now, tx| slot.leave(now, node, topic, tx))?
            .recv()
            .map_err(|_| Error::Closed)
    }

    /// Keeps a connection to `public_key` whatever the topics (JS `swarm.joinPeer`).
    pub fn join_peer(&self, public_key: [u8; 32]) -> Result<(), Error> {
        self.call(move |slot, node, now, tx| {
            slot.swarm().join_peer(now, node, public_key);
            let _ = tx.send(());
        })?
        .recv()
        .map_err(|_| Error::Closed)
    }

    /// Stops keeping a connection to `public_key` (JS `swarm.leavePeer`).
    pub fn leave_peer(&self, public_key: [u8; 32]) -> Result<(), Error> {
        self.call(move |slot, _, _, tx| {
            slot.swarm().leave_peer(&public_key);
            let _ = tx.send(());
        })?
        .recv()
        .map_err(|_| Error::Closed)
    }

    /// Bans `public_key` (or lifts the ban).
    pub fn ban(&self, public_key: [u8; 32], banned: bool) -> Result<(), Error> {
        self.call(move |slot, _, _, tx| {
            slot.swarm().ban(public_key, banned);
            let _ = tx.send(());
        })?
        .recv()
        .map_err(|_| Error::Closed)
    }

    /// Blocks until the swarm keeps a new connection; `None` once the swarm or the node is
    /// gone.
    pub fn accept(&self) -> Option<SwarmConnection> {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv()
            .ok()
    }

    /// Like [`Swarm::accept`], waiting at most `timeout`.
    pub fn accept_timeout(&self, timeout: Duration) -> Option<SwarmConnection> {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(timeout)
            .ok()
    }

    /// A snapshot of the swarm's state.
    pub fn info(&self) -> Result<SwarmInfo, Error> {
        self.call(move |slot, _, _, tx| {
            let _ = tx.send(slot.swarm().info());
        })?
        .recv()
        .map_err(|_| Error::Closed)
    }

    /// Destroys the swarm (JS `swarm.destroy()`): leaves every topic, closes its server and
    /// connections, and waits (at most 5 s) for the unannounces.
    pub fn destroy(&self) {
        if self.destroyed.swap(true, Ordering::SeqCst) {
            return;
        }
        let rx = self.call(move |slot, node, now, tx| slot.destroy(now, node, tx));
        if let Ok(rx) = rx {
            let _ = rx.recv_timeout(DESTROY_WAIT);
        }
        let _ = self.inner.send(Command::SwarmDrop(self.id));
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.destroy();
    }
}
