//! [`Driver`]: the future that runs a node over `async-io` UDP sockets and a timer.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use hyperdht_proto::config::SOCKET_RECV_BUFFER;
use hyperdht_proto::{
    Config, ConnCloseReason, ConnId, Event, Node, SocketId, SocketOp, Timestamp, Transmit,
};

use crate::conn::Connection;
use crate::node::Error;
use crate::shared::{
    ConnSlot, Deferred, DriverWaker, HandleRef, Pending, QuerySink, Shared, SocketWake, State,
};

/// Datagrams read from one socket per round before other work gets a turn.
const RECV_BATCH: usize = 256;
/// Rounds (input, timers, output) per poll before the driver yields to other tasks.
const MAX_ROUNDS: usize = 8;
/// Largest datagram the node is given; a larger one is dropped and counted (as `hyperdht-mio`
/// does). Mirrors libudx, which receives into a 2048-byte buffer
/// (`UDX_SOCKET_PACKET_BUFFER_SIZE` in libudx `include/udx.h`), so no JS peer reads more
/// (libudx parses the cut first 2048 bytes; we do not decode a cut message).
const MAX_DATAGRAM: usize = 2048;
/// While a datagram waits for its socket to drain, the node's deadline reads "now" (output is
/// queued); timers are looked at again after this long.
const BLOCKED_RECHECK: Duration = Duration::from_millis(5);
/// Connections a server queues for `accept` before new ones are turned away.
pub(crate) const ACCEPT_BACKLOG: usize = 128;

/// One bound UDP socket.
struct Sock {
    io: Async<UdpSocket>,
    wake: Arc<SocketWake>,
    /// Wakes the driver and marks this socket readable.
    waker: Waker,
    /// The TTL to restore after a datagram that asked for another one.
    default_ttl: u32,
}

/// The sockets and the datagram the kernel refused.
struct Io {
    sockets: BTreeMap<SocketId, Sock>,
    unsent: Option<Transmit>,
    buf: Vec<u8>,
    driver_waker: Arc<DriverWaker>,
}

/// The future that runs a node: spawn it on any executor (async-std, smol, ...).
///
/// It follows the run-loop contract of `hyperdht-proto`: it wakes for the earliest of the
/// node's deadline, a readable socket, or a call from a handle; applies the inputs with one
/// `now` (datagrams in bounded batches, then timers); then binds and closes sockets, sends
/// datagrams until the kernel would block (keeping the one unsent datagram until its socket is
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
        let start = Instant::now();
        let node = Node::new(config, seed, Timestamp::ZERO);
        let (done_tx, done_rx) = async_channel::bounded(1);
        let state = State {
            node,
            start,
            listening: None,
            bind_failed: false,
            bootstrapped: false,
            shutting_down: false,
            node_closed: false,
            closed: false,
            pending: Pending::default(),
            conns: Default::default(),
            swarms: Default::default(),
            done: Some(done_tx),
        };
        let waker = Arc::new(DriverWaker::default());
        let shared = Arc::new(Shared::new(state, waker.clone(), done_rx));
        let mut driver = Driver {
            shared,
            io: Io {
                sockets: BTreeMap::new(),
                unsent: None,
                // One byte more than the limit: a datagram that fills it is too large.
                buf: vec![0; MAX_DATAGRAM + 1],
                driver_waker: waker,
            },
            timer: Timer::never(),
            timer_at: None,
            wakes: Vec::new(),
            done: false,
        };
        let mut st = driver.shared.lock();
        driver.io.flush(&driver.shared, &mut st, &mut driver.wakes);
        let r = match (st.listening, st.bind_failed) {
            (Some(addr), false) => Ok(addr),
            _ => Err(Error::BindFailed),
        };
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
        let pending = std::mem::take(&mut st.pending);
        let swarms = std::mem::take(&mut st.swarms);
        let done = st.done.take();
        for slot in st.conns.values_mut() {
            self.wakes.extend(slot.read_waker.take());
            self.wakes.extend(slot.write_waker.take());
        }
        drop(st);
        // Dropping the senders fails the calls waiting on them.
        drop(pending);
        drop(swarms);
        drop(done);
        self.io.sockets.clear();
        self.io.unsent = None;
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
            let now = st.now();
            for d in this.shared.take_deferred() {
                apply_deferred(&mut st, now, d);
            }
            if this.shared.orphaned() && !st.shutting_down {
                tracing::debug!("every handle is gone; shutting the node down");
                st.shutting_down = true;
                st.node.shutdown(now);
            }
            if let Some(t) = this.io.unsent.take() {
                this.io.send(t);
            }
            let more = this.io.receive(&mut st, now);
            st.node.handle_timeout(now);
            let State { node, swarms, .. } = &mut *st;
            swarms.handle_timeout(now, node);
            this.io.flush(&this.shared, &mut st, &mut this.wakes);
            let closed = st.node_closed;
            let deadline = earliest(st.node.poll_timeout(), st.swarms.poll_timeout());
            let start = st.start;
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
            if let Some(t) = &this.io.unsent {
                if let Some(s) = this.io.sockets.get(&t.socket) {
                    if s.io.poll_writable(cx).is_ready() {
                        continue;
                    }
                }
            }
            let now = Instant::now();
            let at = match deadline {
                None => None,
                Some(d) => {
                    let at = start + Duration::from_nanos(d.as_nanos());
                    if this.io.unsent.is_some() {
                        Some(at.max(now + BLOCKED_RECHECK))
                    } else if at <= now {
                        // Output or timers are due already.
                        continue;
                    } else {
                        Some(at)
                    }
                }
            };
            if at != this.timer_at {
                match at {
                    Some(at) => this.timer.set_at(at),
                    None => this.timer = Timer::never(),
                }
                this.timer_at = at;
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

/// Carries out what a dropped handle or a cancelled future left behind.
fn apply_deferred(st: &mut State, now: Timestamp, d: Deferred) {
    match d {
        Deferred::DropConn(conn) => {
            let Some(slot) = st.conns.get_mut(&conn) else {
                return;
            };
            if slot.closed.is_some() {
                st.conns.remove(&conn);
                st.node.conn_remove(conn);
                return;
            }
            slot.dropped = true;
            slot.read_waker = None;
            slot.write_waker = None;
            if !slot.finished {
                slot.finished = true;
                let _ = st.node.conn_finish(now, conn);
            }
            drain(&mut st.node, conn);
        }
        Deferred::CloseServer(server) => {
            // The sender may hold connections: they only defer more work when dropped.
            st.pending.servers.remove(&server);
            st.pending.listens.remove(&server);
            st.node.close_server(now, server);
        }
        Deferred::CancelConnect(conn) => {
            if st.pending.connects.remove(&conn).is_some() {
                st.node.cancel_connect(now, conn);
            }
        }
        Deferred::DropSwarm(id) => st.swarms.drop_swarm(now, &mut st.node, id),
    }
}

/// The earlier of two deadlines.
fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads and discards what a connection without a handle received.
fn drain(node: &mut Node, conn: ConnId) {
    let mut scratch = [0u8; 4096];
    while let Ok(n) = node.conn_read(conn, &mut scratch) {
        if n == 0 {
            break;
        }
    }
}

impl Io {
    /// Reads up to [`RECV_BATCH`] datagrams from each socket that may have some; `true` if a
    /// socket still has more.
    /// Whether a socket is marked ready to read (new, or woken since its last read).
    fn any_ready(&self) -> bool {
        self.sockets
            .values()
            .any(|s| s.wake.ready.load(Ordering::Acquire))
    }

    fn receive(&mut self, st: &mut State, now: Timestamp) -> bool {
        let mut more = false;
        for (&id, s) in &self.sockets {
            if !s.wake.ready.swap(false, Ordering::AcqRel) {
                continue;
            }
            let mut cx = Context::from_waker(&s.waker);
            let mut n = 0;
            loop {
                if n == RECV_BATCH {
                    s.wake.ready.store(true, Ordering::Release);
                    more = true;
                    break;
                }
                match s.io.get_ref().recv_from(&mut self.buf) {
                    Ok((len, from)) => {
                        if len > MAX_DATAGRAM {
                            tracing::debug!(
                                %from,
                                "datagram larger than {MAX_DATAGRAM} bytes dropped"
                            );
                            st.node.handle_oversized_datagram(now);
                        } else {
                            st.node.handle_datagram(now, id, from, &self.buf[..len]);
                        }
                        n += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match s.io.poll_readable(&mut cx) {
                            Poll::Ready(Ok(())) => {}
                            Poll::Ready(Err(e)) => {
                                tracing::warn!(socket = ?id, error = %e, "socket poll failed");
                                break;
                            }
                            Poll::Pending => break,
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // ICMP errors (connection refused) may surface here; skip them.
                        tracing::trace!(error = %e, "recv error ignored");
                        n += 1;
                    }
                }
            }
        }
        more
    }

    /// Drains socket ops, transmits and events, in that order, until the node has none.
    fn flush(&mut self, shared: &Arc<Shared>, st: &mut State, wakes: &mut Vec<Waker>) {
        loop {
            let mut progressed = false;
            while let Some(op) = st.node.poll_socket_op() {
                progressed = true;
                self.apply_socket_op(st, op);
            }
            if self.unsent.is_none() {
                while let Some(t) = st.node.poll_transmit() {
                    progressed = true;
                    if !self.send(t) {
                        break;
                    }
                }
            }
            while let Some(ev) = st.node.poll_event() {
                progressed = true;
                dispatch(shared, st, ev, wakes);
            }
            progressed |= st.swarms.drain();
            if !progressed {
                break;
            }
        }
    }

    fn apply_socket_op(&mut self, st: &mut State, op: SocketOp) {
        let now = st.now();
        match op {
            SocketOp::Bind { socket, addr } => match self.bind(addr) {
                Ok(sock) => {
                    let local = sock.io.get_ref().local_addr();
                    match local {
                        Ok(local) => {
                            self.sockets.insert(socket, sock);
                            st.node.handle_socket_bound(now, socket, local);
                        }
                        Err(e) => {
                            tracing::warn!(%addr, error = %e, "socket setup failed");
                            st.node.handle_socket_failed(now, socket);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "bind failed");
                    st.node.handle_socket_failed(now, socket);
                }
            },
            SocketOp::Close { socket } => {
                self.sockets.remove(&socket);
                if self.unsent.as_ref().is_some_and(|t| t.socket == socket) {
                    self.unsent = None;
                }
            }
            other => tracing::warn!(?other, "unsupported socket op ignored"),
        }
    }

    fn bind(&self, addr: SocketAddrV4) -> io::Result<Sock> {
        let io = Async::<UdpSocket>::bind(SocketAddr::V4(addr))?;
        grow_recv_buffer(io.get_ref());
        let default_ttl = io.get_ref().ttl().unwrap_or(64);
        // Ready at first: the first round reads it and registers interest.
        let wake = Arc::new(SocketWake {
            ready: AtomicBool::new(true),
            driver: self.driver_waker.clone(),
        });
        let waker = Waker::from(wake.clone());
        Ok(Sock {
            io,
            wake,
            waker,
            default_ttl,
        })
    }

    /// Sends one datagram; `false` if the kernel would block (the datagram is kept).
    fn send(&mut self, t: Transmit) -> bool {
        let Some(s) = self.sockets.get(&t.socket) else {
            tracing::debug!(socket = ?t.socket, "transmit on unknown socket dropped");
            return true;
        };
        let sock = s.io.get_ref();
        if let Some(ttl) = t.ttl {
            let _ = sock.set_ttl(u32::from(ttl));
        }
        let res = sock.send_to(&t.payload, t.dst);
        if t.ttl.is_some() {
            let _ = sock.set_ttl(s.default_ttl);
        }
        match res {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.unsent = Some(t);
                false
            }
            Err(e) => {
                tracing::debug!(dst = %t.dst, error = %e, "send failed");
                true
            }
        }
    }
}

/// Asks the kernel for a [`SOCKET_RECV_BUFFER`]-byte receive buffer. Failing is not fatal (the
/// kernel may cap the size); it is logged.
fn grow_recv_buffer(socket: &UdpSocket) {
    if let Err(e) = socket2::SockRef::from(socket).set_recv_buffer_size(SOCKET_RECV_BUFFER) {
        tracing::debug!(error = %e, "could not enlarge the UDP receive buffer");
    }
}

/// Hands one event to whoever waits for it (the swarms see it first and keep their own).
fn dispatch(shared: &Arc<Shared>, st: &mut State, ev: Event, wakes: &mut Vec<Waker>) {
    let now = st.now();
    let Some(ev) = st.swarms.handle_event(now, &mut st.node, ev) else {
        return;
    };
    match ev {
        Event::Listening { server, .. } => st.listening = Some(server),
        Event::BindFailed { socket } => {
            tracing::error!(?socket, "could not bind a DHT socket");
            st.bind_failed = true;
        }
        Event::Bootstrapped => {
            st.bootstrapped = true;
            for tx in st.pending.bootstrapped.drain(..) {
                let _ = tx.try_send(());
            }
        }
        Event::RequestDone { id, result } => {
            if let Some(tx) = st.pending.requests.remove(&id) {
                let _ = tx.try_send(result.map_err(Error::Request));
            }
        }
        Event::QueryReply { id, reply } => {
            if let Some(QuerySink::Collect(out, _)) = st.pending.queries.get_mut(&id) {
                out.replies.push(reply);
            }
        }
        Event::RecordFound { id, from, record } => {
            let unread = match st.pending.queries.get_mut(&id) {
                Some(QuerySink::Collect(out, _)) => {
                    out.records.push((from, record));
                    false
                }
                Some(QuerySink::Records(tx)) => tx.try_send(Ok((from, record))).is_err(),
                None => false,
            };
            if unread {
                // Nobody reads the stream any more; the walk still finishes.
                st.pending.queries.remove(&id);
            }
        }
        Event::CommitReply { id, reply } => {
            if let Some(QuerySink::Collect(out, _)) = st.pending.queries.get_mut(&id) {
                out.commits.push(reply);
            }
        }
        Event::QueryFinished { id, result } => match st.pending.queries.remove(&id) {
            Some(QuerySink::Collect(mut out, tx)) => {
                let result = result.map(|closest| {
                    out.closest = closest;
                    out
                });
                let _ = tx.try_send(result.map_err(Error::Query));
            }
            Some(QuerySink::Records(tx)) => {
                if let Err(e) = result {
                    let _ = tx.try_send(Err(Error::Query(e)));
                }
            }
            None => {}
        },
        Event::ServerListening {
            server,
            relay_addresses,
        } => {
            if let Some((tx, incoming)) = st.pending.listens.remove(&server) {
                if tx.try_send(Ok((relay_addresses, incoming))).is_err() {
                    // The listen call was dropped.
                    st.pending.servers.remove(&server);
                    let now = st.now();
                    st.node.close_server(now, server);
                }
            }
        }
        Event::ServerClosed { server } => {
            if let Some(tx) = st.pending.closing.remove(&server) {
                let _ = tx.try_send(());
            }
        }
        Event::Incoming { server, conn, .. } => {
            st.pending.server_conns.insert(conn, server);
        }
        Event::Connected {
            conn,
            socket,
            remote,
            handshake,
            ..
        } => {
            st.conns.insert(conn, ConnSlot::default());
            let c = Connection::new(
                HandleRef::new(shared.clone()),
                conn,
                remote,
                st.node.local_addr(socket),
                &handshake,
            );
            // A connection nobody takes is dropped; its `Drop` defers the cleanup.
            if let Some(tx) = st.pending.connects.remove(&conn) {
                let _ = tx.try_send(Ok(c));
            } else if let Some(server) = st.pending.server_conns.remove(&conn) {
                if let Some(tx) = st.pending.servers.get(&server) {
                    if let Err(e) = tx.try_send(c) {
                        if e.is_full() {
                            tracing::warn!("accept backlog full; connection turned away");
                        }
                    }
                }
            } else {
                // A swarm's: kept until the swarm says whether it hands it out.
                st.swarms.stash(conn, c);
            }
        }
        Event::ConnectFailed { conn, reason } => {
            if let Some(tx) = st.pending.connects.remove(&conn) {
                let _ = tx.try_send(Err(Error::Connect(reason)));
            }
            st.node.conn_remove(conn);
        }
        Event::Readable { conn } | Event::Finished { conn } => {
            if let Some(slot) = st.conns.get_mut(&conn) {
                if slot.dropped {
                    drain(&mut st.node, conn);
                } else {
                    wakes.extend(slot.read_waker.take());
                }
            }
        }
        Event::Writable { conn } => {
            if let Some(slot) = st.conns.get_mut(&conn) {
                wakes.extend(slot.write_waker.take());
            }
        }
        Event::ConnClosed { conn, reason } => {
            st.pending.server_conns.remove(&conn);
            st.swarms.forget(conn);
            match st.conns.get_mut(&conn) {
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
                    st.conns.remove(&conn);
                    st.node.conn_remove(conn);
                }
            }
        }
        Event::Closed => st.node_closed = true,
        _ => {}
    }
}

/// The IPv4 address of the interface the default route uses, if any (connecting a UDP socket
/// sends nothing; it only picks a route).
pub(crate) fn primary_ipv4() -> Option<std::net::Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() && !a.ip().is_loopback() => Some(*a.ip()),
        _ => None,
    }
}
