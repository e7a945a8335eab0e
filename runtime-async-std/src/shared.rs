//! The state the driver shares with its handles: the kit's [`Core`] (the node, its calls and
//! swarms) behind one lock,
//! the driver's waker, and the queue of work that `Drop` impls leave for the driver.
//!
//! Lock discipline: the state lock is taken by handle calls, connection reads/writes and the
//! driver, never across an `.await`. No `Drop` impl of this crate takes it (a value may be
//! dropped while the driver holds it, e.g. a [`crate::Connection`] left in a closed channel);
//! drops push a [`Deferred`] instead, which only takes the small `deferred` and waker locks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};

use async_channel::{Receiver, Sender};
use hyperdht_kit::{Core, Glue};
use hyperdht_proto::{ConnCloseReason, ConnId, ServerId};

use crate::conn::Connection;

/// Locks a mutex, ignoring poisoning (every critical section leaves the data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The driver task's waker, replaced at every poll.
#[derive(Default)]
pub(crate) struct DriverWaker(Mutex<Option<Waker>>);

impl DriverWaker {
    /// Remembers the waker of the task polling the driver.
    pub(crate) fn register(&self, w: &Waker) {
        let mut g = lock(&self.0);
        if g.as_ref().is_some_and(|old| old.will_wake(w)) {
            return;
        }
        let old = g.replace(w.clone());
        drop(g);
        // Dropped outside the lock: it may be the last reference to a task.
        drop(old);
    }

    /// Wakes the driver task.
    pub(crate) fn wake(&self) {
        let w = lock(&self.0).clone();
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// Wakes the driver and marks one socket as worth reading.
pub(crate) struct SocketWake {
    pub(crate) ready: std::sync::atomic::AtomicBool,
    pub(crate) driver: Arc<DriverWaker>,
}

impl Wake for SocketWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        self.driver.wake();
    }
}

/// Work a `Drop` impl leaves for the driver.
#[derive(Debug)]
pub(crate) enum Deferred {
    /// A connection handle was dropped: finish our side, drain and forget it.
    DropConn(ConnId),
    /// A server handle was dropped without `close`.
    CloseServer(ServerId),
    /// A `connect` future was dropped before it resolved.
    CancelConnect(ConnId),
    /// A swarm handle was dropped without `destroy`.
    DropSwarm(u64),
}

/// The async driver's glue: `async-channel` senders answer the calls (never blocking: a full
/// or closed channel counts as gone); a server's connections go to its bounded accept queue.
pub(crate) struct Chan;

impl Glue for Chan {
    type Tx<T: Send + 'static> = Sender<T>;
    type Connection = Connection;
    type ServerTx = Sender<Connection>;

    fn send<T: Send + 'static>(tx: &Sender<T>, value: T) -> bool {
        tx.try_send(value).is_ok()
    }

    fn is_closed<T: Send + 'static>(tx: &Sender<T>) -> bool {
        tx.is_closed()
    }

    fn accept(server: &Sender<Connection>, connection: Connection) {
        if let Err(e) = server.try_send(connection) {
            if e.is_full() {
                tracing::warn!("accept backlog full; connection turned away");
            }
        }
    }
}

/// The driver's view of one connection handed to the application.
#[derive(Default)]
pub(crate) struct ConnSlot {
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
    /// Why it closed (`Event::ConnClosed`).
    pub(crate) closed: Option<ConnCloseReason>,
    /// Our side was finished.
    pub(crate) finished: bool,
    /// The handle is gone: drain what arrives and forget the connection once it closes.
    pub(crate) dropped: bool,
}

/// Everything behind the state lock.
pub(crate) struct State {
    /// The node, its calls and swarms.
    pub(crate) core: Core<Chan>,
    /// The driver has finished (or was dropped): nothing will move any more.
    pub(crate) closed: bool,
    pub(crate) conns: HashMap<ConnId, ConnSlot>,
    /// Dropped when the driver finishes: `shutdown` waits on its receivers.
    pub(crate) done: Option<Sender<()>>,
}

/// Shared by the driver and every handle.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) waker: Arc<DriverWaker>,
    deferred: Mutex<Vec<Deferred>>,
    /// Live application handles (node handles, servers, connections).
    handles: AtomicUsize,
    /// Closed (all senders dropped) when the driver finishes.
    pub(crate) done: Receiver<()>,
}

impl Shared {
    pub(crate) fn new(state: State, waker: Arc<DriverWaker>, done: Receiver<()>) -> Shared {
        Shared {
            state: Mutex::new(state),
            waker,
            deferred: Mutex::new(Vec::new()),
            handles: AtomicUsize::new(0),
            done,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Leaves work for the driver (safe to call from `Drop`, even while the state is locked).
    pub(crate) fn defer(&self, d: Deferred) {
        lock(&self.deferred).push(d);
        self.waker.wake();
    }

    pub(crate) fn take_deferred(&self) -> Vec<Deferred> {
        std::mem::take(&mut *lock(&self.deferred))
    }

    /// Whether no application handle is left.
    pub(crate) fn orphaned(&self) -> bool {
        self.handles.load(Ordering::Acquire) == 0
    }
}

/// A counted reference to [`Shared`]: when the last one goes, the driver shuts the node down.
pub(crate) struct HandleRef(Arc<Shared>);

impl HandleRef {
    pub(crate) fn new(shared: Arc<Shared>) -> HandleRef {
        shared.handles.fetch_add(1, Ordering::AcqRel);
        HandleRef(shared)
    }
}

impl Clone for HandleRef {
    fn clone(&self) -> Self {
        HandleRef::new(self.0.clone())
    }
}

impl Drop for HandleRef {
    fn drop(&mut self) {
        if self.0.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.waker.wake();
        }
    }
}

impl std::ops::Deref for HandleRef {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
