//! Hyperswarm on the async driver: the [`Swarm`] handle (a [`Stream`] of the connections the
//! swarm keeps). The driver's side of it (each proto swarm, its connections until they are
//! handed out, the calls waiting for flushes, leaves and the destroy) is `hyperdht-kit`'s
//! [`Swarms`](hyperdht_kit::Swarms). Same names as `hyperdht-mio`'s `Swarm`.
//!
//! The swarms live in the driver's state, behind the same lock as the node: a handle call runs
//! on the swarm at once; the driver hands every node event to the swarms first, runs their
//! timers, and drains their events after the node's.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_channel::Receiver;
use futures_lite::Stream;
use hyperdht_kit::{random_seed, Error, SwarmSlot};
use hyperdht_proto::swarm::{JoinOptions, SwarmConfig, SwarmInfo};
use hyperdht_proto::{Node, Timestamp};

use crate::conn::Connection;
use crate::shared::{Chan, Deferred, HandleRef};

/// How long [`Swarm::destroy`] waits for its topics to be unannounced.
const DESTROY_WAIT: Duration = Duration::from_secs(5);

/// A connection the swarm keeps, with what the swarm knows of its peer (`peer.client`: we
/// dialled it; `peer.topics`: where we found it).
pub type SwarmConnection = hyperdht_kit::SwarmConnection<Connection>;

/// A swarm on an [`AsyncNode`](crate::AsyncNode) (JS `new Hyperswarm({ dht })`): join topics,
/// and take the connections it keeps as a [`Stream`] (or with [`Swarm::accept`]). Dropping it
/// destroys it in the background; [`Swarm::destroy`] waits for the unannounces. It keeps the
/// node running while it is alive.
///
/// ```
/// use futures_lite::StreamExt;
/// use hyperdht_async_std::{Config, JoinOptions, SwarmConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// async_std::task::block_on(async {
///     let (boot, driver) = hyperdht_async_std::bind(Config::bootstrapper("127.0.0.1:0".parse()?)).await?;
///     async_std::task::spawn(driver);
///     let std::net::SocketAddr::V4(boot_addr) = boot.local_addr() else { unreachable!() };
///     let (a, driver) = hyperdht_async_std::bind(Config::local(vec![boot_addr])).await?;
///     async_std::task::spawn(driver);
///     let (b, driver) = hyperdht_async_std::bind(Config::local(vec![boot_addr])).await?;
///     async_std::task::spawn(driver);
///     a.wait_bootstrapped().await?;
///     b.wait_bootstrapped().await?;
///
///     let topic = [7u8; 32];
///     let swarm_a = a.swarm(SwarmConfig::from_seed(&[1; 32])).await?;
///     swarm_a.join(topic, JoinOptions::default())?;
///     swarm_a.flushed(topic).await?; // announced
///     let mut swarm_b = b.swarm(SwarmConfig::from_seed(&[2; 32])).await?;
///     swarm_b.join(topic, JoinOptions::default())?;
///     let found = swarm_b.next().await.expect("b meets a");
///     assert_eq!(found.peer.public_key, swarm_a.public_key());
///     let met = swarm_a.accept().await.expect("a meets b");
///     assert_eq!(met.connection.remote_public_key(), swarm_b.public_key());
///     Ok(())
/// })
/// # }
/// ```
pub struct Swarm {
    shared: HandleRef,
    id: u64,
    public_key: [u8; 32],
    connections: Pin<Box<Receiver<SwarmConnection>>>,
    destroyed: AtomicBool,
}

impl fmt::Debug for Swarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hyperdht_kit::fmt_swarm(f, &self.public_key)
    }
}

impl Swarm {
    /// A new swarm on the node behind `shared` (see [`crate::AsyncNode::swarm`]).
    pub(crate) fn start(shared: &HandleRef, config: SwarmConfig) -> Result<Swarm, Error> {
        let seed = random_seed()?;
        let public_key = config.key_pair.public_key();
        // Unbounded: the swarm keeps what it hands out (its `max_peers` bounds them).
        let (tx, connections) = async_channel::unbounded();
        let id = {
            let mut st = shared.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            st.core.new_swarm(config, seed, tx)
        };
        Ok(Swarm {
            shared: shared.clone(),
            id,
            public_key,
            connections: Box::pin(connections),
            destroyed: AtomicBool::new(false),
        })
    }

    /// Runs `f` on the swarm and the node under the lock, then wakes the driver to send what
    /// they queued and hand out their events.
    fn call<T>(
        &self,
        f: impl FnOnce(&mut SwarmSlot<Chan>, &mut Node, Timestamp) -> T,
    ) -> Result<T, Error> {
        let r = {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            let core = &mut st.core;
            let now = core.now();
            let slot = core.swarms.get_mut(self.id).ok_or(Error::Closed)?;
            f(slot, &mut core.node, now)
        };
        self.shared.waker.wake();
        Ok(r)
    }

    /// The key pair's public key: what peers see.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// Joins `topic` (JS `swarm.join(topic, { server, client })`) and returns at once; the
    /// announce and lookups go on in the background ([`Swarm::flushed`] waits for them).
    pub fn join(&self, topic: [u8; 32], options: JoinOptions) -> Result<(), Error> {
        self.call(|slot, node, now| slot.swarm().join(now, node, topic, options))?
            .map_err(Error::Api)
    }

    /// Waits until `topic`'s refresh under way finished (JS `discovery.flushed()`): as a
    /// server, the topic is announced. `Ok(false)`: the refresh's query failed, or the topic
    /// is not joined (or was left, or the swarm destroyed, before the refresh finished).
    pub async fn flushed(&self, topic: [u8; 32]) -> Result<bool, Error> {
        let (tx, rx) = async_channel::bounded(1);
        self.call(|slot, _, _| slot.wait_flushed(topic, tx))?;
        rx.recv().await.map_err(|_| Error::Closed)
    }

    /// Waits until every topic is flushed and every peer found so far was tried (JS
    /// `swarm.flush()`). `Ok(false)`: the swarm was destroyed first.
    pub async fn flush(&self) -> Result<bool, Error> {
        let (tx, rx) = async_channel::bounded(1);
        // Done at once if nothing is pending: the driver hands the answer out.
        self.call(|slot, _, _| slot.flush(tx))?;
        rx.recv().await.map_err(|_| Error::Closed)
    }

    /// Leaves `topic` and waits until its announce is removed (JS `await swarm.leave(topic)`).
    /// Open connections stay open.
    pub async fn leave(&self, topic: [u8; 32]) -> Result<(), Error> {
        let (tx, rx) = async_channel::bounded(1);
        self.call(|slot, node, now| slot.leave(now, node, topic, tx))?;
        rx.recv().await.map_err(|_| Error::Closed)
    }

    /// Keeps a connection to `public_key` whatever the topics (JS `swarm.joinPeer`).
    pub fn join_peer(&self, public_key: [u8; 32]) -> Result<(), Error> {
        self.call(|slot, node, now| slot.swarm().join_peer(now, node, public_key))
    }

    /// Stops keeping a connection to `public_key` (JS `swarm.leavePeer`).
    pub fn leave_peer(&self, public_key: [u8; 32]) -> Result<(), Error> {
        self.call(|slot, _, _| slot.swarm().leave_peer(&public_key))
    }

    /// Bans `public_key` (or lifts the ban).
    pub fn ban(&self, public_key: [u8; 32], banned: bool) -> Result<(), Error> {
        self.call(|slot, _, _| slot.swarm().ban(public_key, banned))
    }

    /// The next connection the swarm keeps; `None` once the swarm is destroyed or the node is
    /// gone. The swarm is also a [`Stream`] of them.
    pub async fn accept(&self) -> Option<SwarmConnection> {
        self.connections.recv().await.ok()
    }

    /// A snapshot of the swarm's state; fails once the swarm is destroyed or the node shut
    /// down.
    pub fn info(&self) -> Result<SwarmInfo, Error> {
        self.call(|slot, _, _| slot.swarm().info())
    }

    /// Destroys the swarm (JS `swarm.destroy()`): leaves every topic, closes its server and
    /// connections, and waits (at most 5 s) for the unannounces. Afterwards
    /// [`Swarm::accept`] returns what was handed out already, then `None`.
    pub async fn destroy(&self) {
        if self.destroyed.swap(true, Ordering::SeqCst) {
            return;
        }
        let (tx, rx) = async_channel::bounded(1);
        // Given up on (the future dropped), the slot still goes once destroyed.
        let started = self.call(|slot, node, now| slot.destroy(now, node, tx));
        if started.is_err() {
            return;
        }
        let _ = timeout(DESTROY_WAIT, rx.recv()).await;
        // Gone now even if the unannounces did not finish in time (as `hyperdht-mio` does).
        let slot = {
            let mut st = self.shared.lock();
            st.core.swarms.remove(self.id)
        };
        // Dropped outside the lock: it may hold connections and wakes the accepting task.
        drop(slot);
        self.shared.waker.wake();
    }
}

/// `f`, or `None` after `d`.
async fn timeout<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        async_io::Timer::after(d).await;
        None
    })
    .await
}

impl Stream for Swarm {
    type Item = SwarmConnection;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SwarmConnection>> {
        self.connections.as_mut().poll_next(cx)
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        // Never lock the state here (see `shared`): the driver destroys it.
        if !self.destroyed.load(Ordering::SeqCst) {
            self.shared.defer(Deferred::DropSwarm(self.id));
        }
    }
}

#[allow(dead_code)]
fn assert_send(s: &Swarm) {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Swarm>();
    send_sync::<SwarmConnection>();
    fn send<F: Future + Send>(_: F) {}
    send(s.flushed([0; 32]));
    send(s.flush());
    send(s.leave([0; 32]));
    send(s.accept());
    send(s.destroy());
}
