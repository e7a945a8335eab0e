//! [`Driver`]: the future that runs a node over `async-io` UDP sockets and a timer. The node,
//! its calls, its swarms and the flush loop are `hyperdht-kit`'s [`Core`]; this is the
//! reactor ([`Io`]: the sockets registered with `async-io`) and the connection wakers.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use async_io::{Async, Timer};
use hyperdht_kit::{ConnEvent, Core, DatagramIo, Error, ReadStop, RECV_BUDGET};
use hyperdht_proto::{Config, ConnCloseReason, ConnId, Node, SocketId, Timestamp};

use crate::conn::Connection;
use crate::shared::{ConnSlot, Deferred, DriverWaker, HandleRef, Shared, SocketWake, State};

/// Rounds (input, timers, output) per poll before the driver yields to other tasks.
const MAX_ROUNDS: usize = 8;
/// Connections a server queues for `accept` before new ones are turned away.
pub(crate) const ACCEPT_BACKLOG: usize = 128;

/// One bound UDP socket.
struct Sock {
    io: Async<UdpSocket>,
    wake: Arc<SocketWake>,
    /// Wakes the driver and marks this socket readable.
    waker: Waker,
}

/// The node's sockets on the `async-io` reactor.
struct Io {
    sockets: BTreeMap<SocketId, Sock>,
    driver_waker: Arc<DriverWaker>,
}

impl DatagramIo for Io {
    type Socket = UdpSocket;

    fn bind(&mut self, id: SocketId, addr: SocketAddrV4) -> io::Result<SocketAddr> {
        let io = Async::new(hyperdht_kit::udp::bind(addr)?)?;
        let local = io.get_ref().local_addr()?;
        // Ready at first: the first round reads it and registers interest.
        let wake = Arc::new(SocketWake {
            ready: AtomicBool::new(true),
            driver: self.driver_waker.clone(),
        });
        let waker = Waker::from(wake.clone());
        self.sockets.insert(id, Sock { io, wake, waker });
        Ok(local)
    }

    fn close(&mut self, id: SocketId) {
        self.sockets.remove(&id);
    }

    fn socket(&self, id: SocketId) -> Option<&UdpSocket> {
        self.sockets.get(&id).map(|s| s.io.get_ref())
    }

    /// Nothing to arrange: [`Driver::poll`] polls the blocked socket for writability.
    fn wait_writable(&mut self, _id: SocketId) {}
}

impl Io {
    /// Whether a socket is marked ready to read (new, or woken since its last read).
    fn any_ready(&self) -> bool {
        self.sockets
            .values()
            .any(|s| s.wake.ready.load(Ordering::Acquire))
    }

    /// Reads up to [`RECV_BUDGET`] datagrams from each socket that may have some; `true` if a
    /// socket still has more.
    fn receive(&self, core: &mut Core<crate::shared::Chan>, now: Timestamp) -> bool {
        let mut more = false;
        for (&id, s) in &self.sockets {
            if !s.wake.ready.swap(false, Ordering::AcqRel) {
                continue;
            }
            let mut cx = Context::from_waker(&s.waker);
            let mut budget = RECV_BUDGET;
            loop {
                if core.receive(now, id, s.io.get_ref(), &mut budget) == ReadStop::Budget {
                    s.wake.ready.store(true, Ordering::Release);
                    more = true;
                    break;
                }
                match s.io.poll_readable(&mut cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => {
                        tracing::warn!(socket = ?id, error = %e, "socket poll failed");
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        more
    }
}

/// The future that runs a node: spawn it on any executor (async-std, smol, ...).
///
/// It follows the run-loop contract of `hyperdht-proto`: it wakes for the earliest of the
/// node's deadline, a readable socket, or a call from a handle; applies the inputs with one
/// `now` (datagrams in bounded batches, then timers); then binds and closes sockets, sends
/// datagrams until the kernel would block (keeping the unsent ones until their socket is
/// writable), and dispatches events to the calls and connections waiting for them. The node's
/// swarms ([`crate::Swarm`]) see each event first, their timers count towards the wake-up, and
/// their events are handed out after the node's.
///
/// It completes once the node has shut down ([`crate::AsyncNode::shutdown`], or every handle
/// dropped). Dropping it stops the node at once: pending calls fail with
/// [`Error::Closed`].
pub struct Driver {
    shared: Arc<Shared>,
    io: Io,
    timer: Timer,
    timer_at: Option<Instant>,
    wakes: Vec<Waker>,
    done: bool,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("sockets", &self.io.sockets.keys().collect::<Vec<_>>())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Creates the node and binds its two sockets (synchronously: binding never waits).
    pub(crate) fn start(config: Config, seed: [u8; 32]) -> Result<(Driver, SocketAddr), Error> {
        let (done_tx, done_rx) = async_channel::bounded(1);
        let state = State {
            core: Core::new(config, seed),
            closed: false,
            conns: Default::default(),
            done: Some(done_tx),
        };
        let waker = Arc::new(DriverWaker::default());
        let shared = Arc::new(Shared::new(state, waker.clone(), done_rx));
        let mut driver = Driver {
            shared,
            io: Io {
                sockets: BTreeMap::new(),
                driver_waker: waker,
            },
            timer: Timer::never(),
            timer_at: None,
            wakes: Vec::new(),
            done: false,
        };
        let mut st = driver.shared.lock();
        flush(&driver.shared, &mut st, &mut driver.io, &mut driver.wakes);
        let r = st.core.bound();
        drop(st);
        r.map(|addr| (driver, addr))
    }

    /// A new application handle.
    pub(crate) fn handle(&self) -> HandleRef {
        HandleRef::new(self.shared.clone())
    }

    /// Ends the driver: fails every waiting call and wakes every connection.
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let mut st = self.shared.lock();
        st.closed = true;
        let waiters = st.core.take_waiters();
        let done = st.done.take();
        for slot in st.conns.values_mut() {
            self.wakes.extend(slot.read_waker.take());
            self.wakes.extend(slot.write_waker.take());
        }
        drop(st);
        // Dropping the senders fails the calls waiting on them.
        drop(waiters);
        drop(done);
        self.io.sockets.clear();
        for w in self.wakes.drain(..) {
            w.wake();
        }
        tracing::debug!("driver finished");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(());
        }
        this.shared.waker.register(cx.waker());
        let mut rounds = 0;
        let ready = loop {
            rounds += 1;
            let mut st = this.shared.lock();
            let now = st.core.now();
            for d in this.shared.take_deferred() {
                apply_deferred(&mut st, now, d);
            }
            if this.shared.orphaned() && !st.core.is_shutting_down() {
                tracing::debug!("every handle is gone; shutting the node down");
                st.core.shutdown(now);
            }
            let more = this.io.receive(&mut st.core, now);
            st.core.handle_timeout(now);
            flush(&this.shared, &mut st, &mut this.io, &mut this.wakes);
            let closed = st.core.calls.node_closed();
            let deadline = st.core.deadline().map(|d| st.core.instant(d));
            let blocked = st.core.outbox().blocked();
            drop(st);
            for w in this.wakes.drain(..) {
                w.wake();
            }
            if closed {
                break true;
            }
            if more || rounds >= MAX_ROUNDS {
                // Yield: more datagrams wait, or the node keeps producing work.
                cx.waker().wake_by_ref();
                break false;
            }
            // A socket bound during this round (a puncher's) starts out ready but has no
            // waker registered with the reactor yet: read it now, or its first datagrams wait
            // for the next timer (up to 750 ms).
            if this.io.any_ready() {
                continue;
            }
            if let Some(id) = blocked {
                let writable = match this.io.sockets.get(&id) {
                    Some(s) => s.io.poll_writable(cx).is_ready(),
                    // Closed: nothing waits for it any more.
                    None => true,
                };
                if writable {
                    this.shared.lock().core.outbox().unblock(id);
                    continue;
                }
            }
            if deadline.is_some_and(|at| at <= Instant::now()) {
                // Output or timers are due already.
                continue;
            }
            if deadline != this.timer_at {
                match deadline {
                    Some(at) => this.timer.set_at(at),
                    None => this.timer = Timer::never(),
                }
                this.timer_at = deadline;
            }
            if this.timer_at.is_some() && Pin::new(&mut this.timer).poll(cx).is_ready() {
                this.timer_at = None;
                continue;
            }
            break false;
        };
        if ready {
            this.finish();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Drains the node (see [`Core::flush`]); connection events wake the handles waiting on them.
fn flush(shared: &Arc<Shared>, st: &mut State, io: &mut Io, wakes: &mut Vec<Waker>) {
    let State { core, conns, .. } = st;
    core.flush(io, |core, ev| conn_event(shared, conns, core, ev, wakes));
}

/// Carries out what a dropped handle or a cancelled future left behind.
fn apply_deferred(st: &mut State, now: Timestamp, d: Deferred) {
    let node = &mut st.core.node;
    match d {
        Deferred::DropConn(conn) => {
            let Some(slot) = st.conns.get_mut(&conn) else {
                return;
            };
            if slot.closed.is_some() {
                st.conns.remove(&conn);
                node.conn(conn).remove();
                return;
            }
            slot.dropped = true;
            slot.read_waker = None;
            slot.write_waker = None;
            if !slot.finished {
                slot.finished = true;
                let _ = node.conn(conn).finish(now);
            }
            drain(node, conn);
        }
        // The sender may hold connections: they only defer more work when dropped.
        Deferred::CloseServer(server) => drop(st.core.close_server(now, server, None)),
        Deferred::CancelConnect(conn) => st.core.cancel_connect(now, conn),
        Deferred::DropSwarm(id) => st.core.swarms.drop_swarm(now, node, id),
    }
}

/// Reads and discards what a connection without a handle received.
fn drain(node: &mut Node, conn: ConnId) {
    let mut scratch = [0u8; 4096];
    while let Ok(n) = node.conn(conn).read(&mut scratch) {
        if n == 0 {
            break;
        }
    }
}

/// Handles an event about a connection (what [`Core::flush`] leaves for the driver): a new
/// handle for an opened one, wakers for the tasks reading or writing it.
fn conn_event(
    shared: &Arc<Shared>,
    conns: &mut std::collections::HashMap<ConnId, ConnSlot>,
    core: &mut Core<crate::shared::Chan>,
    ev: ConnEvent,
    wakes: &mut Vec<Waker>,
) {
    match ev {
        ConnEvent::Opened(meta) => {
            let conn = meta.id;
            conns.insert(conn, ConnSlot::default());
            // A connection nobody takes is dropped; its `Drop` defers the cleanup.
            core.deliver(conn, Connection::new(HandleRef::new(shared.clone()), meta));
        }
        ConnEvent::Readable(conn) => {
            if let Some(slot) = conns.get_mut(&conn) {
                if slot.dropped {
                    drain(&mut core.node, conn);
                } else {
                    wakes.extend(slot.read_waker.take());
                }
            }
        }
        ConnEvent::Writable(conn) => {
            if let Some(slot) = conns.get_mut(&conn) {
                wakes.extend(slot.write_waker.take());
            }
        }
        ConnEvent::Closed(conn, reason) => match conns.get_mut(&conn) {
            Some(slot) if !slot.dropped => {
                slot.closed = Some(reason);
                wakes.extend(slot.read_waker.take());
                wakes.extend(slot.write_waker.take());
            }
            _ => {
                // No handle (dropped, or never handed out): forget it.
                if reason != ConnCloseReason::Finished {
                    tracing::debug!(%reason, "connection without a handle closed");
                }
                conns.remove(&conn);
                core.node.conn(conn).remove();
            }
        },
    }
}
