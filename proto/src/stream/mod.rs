//! UDX: reliable, congestion-controlled streams over UDP, byte-compatible with libudx (the C
//! library behind Node.js `udx-native` 1.21). See connect.md §3; the libudx sources are the
//! truth, and every constant names the libudx file it mirrors.
//!
//! This module owns everything below the secret-stream layer:
//! - [`packet`]: the wire codec (header, SACK blocks, data offset);
//! - [`UdxMux`]: the set of streams sharing the node's sockets, keyed by local stream id; it
//!   claims the datagrams that are UDX for a live stream and leaves the rest to the DHT and
//!   holepunch code (connect.md §2.10);
//! - `stream` (private): one stream's state machine: sequence numbers, immediate ACK/SACK,
//!   RTO (RFC 6298) with RACK-TLP loss detection (RFC 8985), flow control, END/DESTROY,
//!   HEARTBEAT, MESSAGE;
//! - [`send`], [`recv`]: the send and receive buffers (bounded on the receive side);
//! - [`rtt`], [`rate`], [`congestion`], [`pacing`], [`mtu`]: RTT estimation, delivery-rate
//!   samples, congestion control (BBR), pacing and MTU probing.
//!
//! There is no handshake at this level: a stream is created with a local id, connected to a
//! remote id and address learnt elsewhere (the Noise payload), and data may flow at once.
//!
//! ## Behaviour worth knowing
//! - **ACKs** are produced when the driver polls: every DATA/END packet (duplicates included)
//!   is answered, but one ACK or SACK covers everything that arrived since the last poll. On
//!   the wire this is what libudx sends when its packets arrive one per loop turn; under load
//!   it saves a syscall per packet.
//! - **Accepting**: libudx runs a firewall callback on the first packet of an unconnected
//!   stream. Here [`UdxMux::accept`] arms the stream to connect to the source of its first
//!   packet (socket and address), and [`StreamEvent::Accepted`] reports it. Packets for an
//!   unconnected, unarmed stream are processed and their ACK is sent at `connect`.
//! - **Closing**: after a clean close (both ENDs acknowledged) the stream lingers for 5 s to
//!   acknowledge the peer's retransmissions of its last packets; libudx has no such state, and
//!   without it a lost final ACK makes the peer time out.
//! - **Memory**: the read buffer plus out-of-order data stay below twice the receive window
//!   ([`Config::rwnd_max`]); the window shrinks as unread bytes pile up and a window update
//!   goes out when the application reads. Writes are taken up to 256 KiB plus the send window
//!   (libudx's drain threshold); queued MESSAGEs and message events are capped.
//! - Not implemented (hyperdht uses them for relayed connections): `relayTo`, `changeRemote`,
//!   and the firewall check on packets arriving through a different socket than the
//!   connected one (they are processed as if they came through it).
//!
//! ## Driving it
//! (The module is public with the `unstable` feature only, so the example runs with it.)
//! ```
//! # #[cfg(feature = "unstable")] {
//! use hyperdht_proto::stream::{Config, UdxMux, StreamEvent};
//! use hyperdht_proto::{SocketId, Timestamp};
//!
//! let now = Timestamp::ZERO;
//! let mut a = UdxMux::new(Config::default(), [1; 32]);
//! let mut b = UdxMux::new(Config::default(), [2; 32]);
//! let (sa, sb) = (a.create_stream(now), b.create_stream(now));
//! let (addr_a, addr_b) = ("127.0.0.1:1000".parse().unwrap(), "127.0.0.1:2000".parse().unwrap());
//! a.connect(now, sa, SocketId::SERVER, b.local_id(sb).unwrap(), addr_b).unwrap();
//! b.connect(now, sb, SocketId::SERVER, a.local_id(sa).unwrap(), addr_a).unwrap();
//! a.write(now, sa, b"hello").unwrap();
//! while let Some(t) = a.poll_transmit(now) {
//!     assert!(b.handle_datagram(now, t.socket, addr_a, &t.payload));
//! }
//! assert!(matches!(b.poll_event(), Some(StreamEvent::Readable { .. })));
//! let mut buf = [0u8; 16];
//! assert_eq!(b.read(sb, &mut buf), Ok(5));
//! assert_eq!(&buf[..5], b"hello");
//! # }
//! ```

pub mod congestion;
pub mod mtu;
pub mod pacing;
pub mod packet;
pub mod rate;
pub mod recv;
pub mod relay;
pub mod rtt;
pub mod send;
#[allow(clippy::module_inception)]
mod stream;

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;

use crate::event::Transmit;
use crate::ids::SocketId;
use crate::rng::Rng;
use crate::time::Timestamp;

pub use stream::StreamStats;
use stream::{Life, Stream};

/// Options shared by the streams of a mux.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Receive window advertised when nothing is buffered (libudx `UDX_DEFAULT_RWND_MAX`,
    /// 4 MiB). The read buffer plus out-of-order data never exceed twice this.
    pub rwnd_max: u32,
    /// Probe the path MTU from 1200 up to [`Config::max_mtu`].
    pub mtu_probing: bool,
    /// Upper bound for MTU probing (IP packet size, at most 1500).
    pub max_mtu: u16,
    /// Send a HEARTBEAT after this long with nothing in flight (`udx_stream_set_keepalive`);
    /// hyperdht leaves it off.
    pub keepalive: Option<Duration>,
    /// Unreliable messages waiting in [`UdxMux::poll_event`] at most; more are dropped.
    pub max_pending_messages: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rwnd_max: recv::DEFAULT_RWND_MAX,
            mtu_probing: true,
            max_mtu: mtu::MTU_MAX,
            keepalive: None,
            max_pending_messages: 1024,
        }
    }
}

/// A stream handle: opaque, never reused by one mux.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(u64);

impl StreamId {
    /// The raw number (for logs and drivers' maps).
    pub fn index(self) -> u64 {
        self.0
    }
}

/// Why a stream closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Both sides ended and everything was acknowledged.
    Finished,
    /// The peer sent DESTROY (libudx `ECONNRESET`).
    Reset,
    /// The head packet went unacknowledged through six RTOs (libudx `ETIMEDOUT`).
    TimedOut,
    /// We destroyed the stream (`UdxMux::reset`: the connection was closed or aborted on our
    /// side).
    Destroyed,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Finished => "stream finished",
            CloseReason::Reset => "stream reset by peer",
            CloseReason::TimedOut => "stream timed out",
            CloseReason::Destroyed => "stream destroyed",
        })
    }
}

/// What the application should know about its streams.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// A stream waiting for its first packet connected to that packet's source
    /// ([`UdxMux::accept`]).
    Accepted {
        /// Which stream.
        id: StreamId,
        /// The socket the packet came in on.
        socket: SocketId,
        /// Its source.
        from: SocketAddr,
    },
    /// A stream that neither connected nor accepts got its first packet (its data is kept);
    /// connect it later with the remote id learnt elsewhere.
    FirstPacket {
        /// Which stream.
        id: StreamId,
        /// The socket the packet came in on.
        socket: SocketId,
        /// Its source.
        from: SocketAddr,
    },
    /// Bytes can be read (edge-triggered: read until `Err(Blocked)`).
    Readable {
        /// Which stream.
        id: StreamId,
    },
    /// A write that returned `Blocked` (or took less than offered) can be retried.
    Writable {
        /// Which stream.
        id: StreamId,
    },
    /// The peer ended its side: once the buffered bytes are read, `read` returns `Ok(0)`.
    Finished {
        /// Which stream.
        id: StreamId,
    },
    /// An unreliable datagram (UDX MESSAGE).
    Message {
        /// Which stream.
        id: StreamId,
        /// Its payload.
        data: Vec<u8>,
    },
    /// The stream closed. Unread bytes stay readable until [`UdxMux::remove`].
    Closed {
        /// Which stream.
        id: StreamId,
        /// Why.
        reason: CloseReason,
    },
    /// A relayed pair ([`UdxMux::relay_pair`]) ended: one of its peers destroyed its stream.
    RelayEnded {
        /// The pair's local ids.
        ends: (u32, u32),
    },
}

/// Why a stream operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// No such stream (never created, or removed).
    UnknownStream,
    /// Nothing can be taken now: wait for [`StreamEvent::Writable`] / [`StreamEvent::Readable`].
    Blocked,
    /// The write side was finished.
    Finished,
    /// The stream closed.
    Closed(CloseReason),
    /// Already connected.
    AlreadyConnected,
    /// The local id is in use.
    IdInUse,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::UnknownStream => f.write_str("unknown stream"),
            StreamError::Blocked => f.write_str("stream blocked"),
            StreamError::Finished => f.write_str("stream write side finished"),
            StreamError::Closed(r) => write!(f, "{r}"),
            StreamError::AlreadyConnected => f.write_str("stream already connected"),
            StreamError::IdInUse => f.write_str("local stream id in use"),
        }
    }
}

impl std::error::Error for StreamError {}

/// Where a datagram written by [`UdxMux::poll_transmit_into`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Socket to send from.
    pub socket: SocketId,
    /// Address to send to.
    pub addr: SocketAddr,
}

/// Read-only view of a stream's transport state.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct StreamInfo {
    /// Our local id (what the peer puts in bytes 4..8).
    pub local_id: u32,
    /// Whether it is connected.
    pub connected: bool,
    /// Smoothed RTT.
    pub srtt: Option<Duration>,
    /// Retransmission timeout.
    pub rto: Duration,
    /// Congestion window, packets.
    pub cwnd: u32,
    /// Packets in flight.
    pub inflight: u32,
    /// Current MTU.
    pub mtu: u16,
    /// Pacing rate, bytes per second.
    pub pacing_rate: u64,
    /// Counters.
    pub stats: StreamStats,
}

/// All UDX streams of one node, keyed by local stream id.
pub struct UdxMux {
    config: Config,
    rng: Rng,
    streams: BTreeMap<StreamId, Stream>,
    by_local: HashMap<u32, StreamId>,
    next_handle: u64,
    events: VecDeque<StreamEvent>,
    pending_messages: usize,
    /// Round-robin cursor for [`UdxMux::poll_transmit`].
    cursor: Option<StreamId>,
    /// Streams that may have a datagram to send: every stream touched since it last had
    /// nothing to send. [`UdxMux::poll_transmit_into`] visits only these, so an idle stream
    /// costs nothing per call.
    ready: BTreeSet<StreamId>,
    /// Every stream's next deadline (`Stream::scheduled`), earliest first, so
    /// [`UdxMux::poll_timeout`] and [`UdxMux::handle_timeout`] do not walk all streams.
    deadlines: BTreeSet<(Timestamp, StreamId)>,
    /// Reused by [`UdxMux::handle_timeout`] for the streams due.
    due: Vec<StreamId>,
    /// Relayed pairs (blind relays), and packets they forwarded not yet sent.
    relays: relay::Relays,
    relayed: VecDeque<Transmit>,
}

impl fmt::Debug for UdxMux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdxMux")
            .field("streams", &self.streams.len())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl UdxMux {
    /// An empty mux; `seed` feeds the local-id generator.
    pub fn new(config: Config, seed: [u8; 32]) -> Self {
        UdxMux {
            config,
            rng: Rng::from_seed(seed),
            streams: BTreeMap::new(),
            by_local: HashMap::new(),
            next_handle: 1,
            events: VecDeque::new(),
            pending_messages: 0,
            cursor: None,
            ready: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            due: Vec::new(),
            relays: relay::Relays::default(),
            relayed: VecDeque::new(),
        }
    }

    /// Re-files a stream after anything that may have changed it: its deadline in the index,
    /// and its place among the streams that may send. Every `&mut Stream` access ends here.
    fn touch(&mut self, id: StreamId) {
        if self.streams.contains_key(&id) {
            self.ready.insert(id);
        }
        self.reschedule(id);
    }

    /// Updates a stream's entry in the deadline index to its current `poll_timeout`.
    fn reschedule(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let next = s.poll_timeout();
        if next == s.scheduled {
            return;
        }
        if let Some(t) = s.scheduled {
            self.deadlines.remove(&(t, id));
        }
        if let Some(t) = next {
            self.deadlines.insert((t, id));
        }
        s.scheduled = next;
    }

    /// Creates a stream with a fresh random local id.
    pub fn create_stream(&mut self, now: Timestamp) -> StreamId {
        loop {
            let id = self.rng.next_u32();
            if let Ok(s) = self.create_stream_with_id(now, id) {
                return s;
            }
        }
    }

    /// Creates a stream with a chosen local id.
    pub fn create_stream_with_id(
        &mut self,
        now: Timestamp,
        local_id: u32,
    ) -> Result<StreamId, StreamError> {
        if self.by_local.contains_key(&local_id) {
            return Err(StreamError::IdInUse);
        }
        let id = StreamId(self.next_handle);
        self.next_handle += 1;
        let random = self.rng.next_u32();
        self.streams
            .insert(id, Stream::new(now, id, local_id, &self.config, random));
        self.by_local.insert(local_id, id);
        self.touch(id);
        Ok(id)
    }

    /// The local id of a stream.
    pub fn local_id(&self, id: StreamId) -> Option<u32> {
        self.streams.get(&id).map(Stream::local_id)
    }

    /// The stream a local id belongs to.
    pub fn stream_by_local_id(&self, local_id: u32) -> Option<StreamId> {
        self.by_local.get(&local_id).copied()
    }

    /// Transport state of a stream.
    pub fn info(&self, id: StreamId) -> Option<StreamInfo> {
        self.streams.get(&id).map(|s| StreamInfo {
            local_id: s.local_id(),
            connected: s.is_connected(),
            srtt: s.srtt(),
            rto: s.rto(),
            cwnd: s.cwnd(),
            inflight: s.inflight(),
            mtu: s.mtu(),
            pacing_rate: s.pacing_rate(),
            stats: s.stats,
        })
    }

    /// Connects a stream: its packets go to `remote_id` at `addr` through `socket`.
    pub fn connect(
        &mut self,
        now: Timestamp,
        id: StreamId,
        socket: SocketId,
        remote_id: u32,
        addr: SocketAddr,
    ) -> Result<(), StreamError> {
        let _ = now;
        let s = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if s.is_connected() {
            return Err(StreamError::AlreadyConnected);
        }
        if let Some(r) = s.closed_reason() {
            return Err(StreamError::Closed(r));
        }
        s.connect(socket, remote_id, addr);
        self.touch(id);
        Ok(())
    }

    /// Connects the stream to the source of the first packet addressed to it, whatever socket
    /// it arrives on (what a hyperdht server does in its firewall callback, connect.md §3.4).
    pub fn accept(&mut self, id: StreamId, remote_id: u32) -> Result<(), StreamError> {
        let s = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if s.is_connected() {
            return Err(StreamError::AlreadyConnected);
        }
        s.accept = Some(remote_id);
        self.touch(id);
        Ok(())
    }

    /// Offers a received datagram. Returns `true` if it was UDX for a live stream (consumed);
    /// `false` means it belongs to the DHT or holepunch code (connect.md §2.10).
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        from: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        let Some(local) = packet::peek_id(bytes) else {
            return false;
        };
        if self.relays.contains(local) {
            match self.relays.handle_datagram(local, socket, from, bytes) {
                relay::RelayOutcome::Forward(ts) => self.relayed.extend(ts),
                relay::RelayOutcome::Dropped => {}
                relay::RelayOutcome::Ended { forward, ends } => {
                    self.relayed.extend(forward);
                    self.events.push_back(StreamEvent::RelayEnded { ends });
                }
            }
            return true;
        }
        let Some(&id) = self.by_local.get(&local) else {
            return false;
        };
        let Some(stream) = self.streams.get_mut(&id) else {
            return false;
        };
        if stream.life == Life::Dead {
            return false;
        }
        let Ok(pkt) = packet::Packet::decode(bytes) else {
            return false;
        };
        let before = self.events.len();
        stream.handle_packet(now, socket, from, &pkt, &mut self.events);
        self.account_messages(before);
        self.touch(id);
        self.reap(id);
        true
    }

    /// Drops message events past the configured bound (they are unreliable).
    fn account_messages(&mut self, before: usize) {
        let mut i = before;
        while i < self.events.len() {
            if matches!(self.events[i], StreamEvent::Message { .. }) {
                if self.pending_messages >= self.config.max_pending_messages {
                    self.events.remove(i);
                    continue;
                }
                self.pending_messages += 1;
            }
            i += 1;
        }
    }

    /// Forgets a dead stream whose bytes were all read.
    fn reap(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get(&id) {
            if s.life == Life::Dead && s.readable_bytes() == 0 {
                self.remove(id);
            } else if s.life == Life::Dead {
                // Keep it readable, but free the local id for incoming traffic checks.
                let local = s.local_id();
                if self.by_local.get(&local) == Some(&id) {
                    self.by_local.remove(&local);
                }
            }
        }
    }

    /// Relays packets between two peers' streams (libudx `relayTo` both ways): `a` and `b` are
    /// `(local id, the peer's stream id)`. Each end learns its peer's path from its first
    /// packet. Fails if a local id is taken.
    pub fn relay_pair(&mut self, a: (u32, u32), b: (u32, u32)) -> Result<(), StreamError> {
        let taken = |id: u32| self.by_local.contains_key(&id) || self.relays.contains(id);
        if a.0 == b.0 || taken(a.0) || taken(b.0) {
            return Err(StreamError::IdInUse);
        }
        self.relays.insert_pair(a, b);
        Ok(())
    }

    /// Stops relaying the pair `local_id` belongs to.
    pub fn remove_relay(&mut self, local_id: u32) {
        self.relays.remove_pair(local_id);
    }

    /// The next packet a relay forwarded: send it as it is.
    pub fn poll_relayed(&mut self) -> Option<Transmit> {
        self.relayed.pop_front()
    }

    /// Forgets a stream at once (no DESTROY is sent; use [`UdxMux::reset`] for that).
    pub fn remove(&mut self, id: StreamId) {
        if let Some(s) = self.streams.remove(&id) {
            if self.by_local.get(&s.local_id()) == Some(&id) {
                self.by_local.remove(&s.local_id());
            }
            if let Some(t) = s.scheduled {
                self.deadlines.remove(&(t, id));
            }
            self.ready.remove(&id);
        }
    }

    /// Queues up to as many bytes as the send buffer takes; returns how many.
    /// `Err(Blocked)` when none fit: wait for [`StreamEvent::Writable`].
    pub fn write(
        &mut self,
        now: Timestamp,
        id: StreamId,
        data: &[u8],
    ) -> Result<usize, StreamError> {
        let _ = now;
        let s = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if let Some(r) = s.closed_reason() {
            return Err(StreamError::Closed(r));
        }
        if s.life != Life::Open {
            return Err(StreamError::Closed(CloseReason::Finished));
        }
        if !s.writable_bytes_allowed() {
            return Err(StreamError::Finished);
        }
        if data.is_empty() {
            return Ok(0);
        }
        match s.write(data) {
            0 => Err(StreamError::Blocked),
            n => {
                self.touch(id);
                Ok(n)
            }
        }
    }

    /// How many bytes [`UdxMux::write`] would take now.
    pub fn writable_bytes(&self, id: StreamId) -> usize {
        self.streams.get(&id).map_or(0, Stream::writable_bytes)
    }

    /// Ends the write side (UDX END after the queued bytes).
    pub fn finish(&mut self, now: Timestamp, id: StreamId) -> Result<(), StreamError> {
        let _ = now;
        let s = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if let Some(r) = s.closed_reason() {
            return Err(StreamError::Closed(r));
        }
        if s.finish() {
            self.touch(id);
            Ok(())
        } else {
            Err(StreamError::Finished)
        }
    }

    /// Reads bytes: `Ok(n > 0)`, `Ok(0)` at the end of the stream (or for an empty `buf`),
    /// `Err(Blocked)` when nothing is buffered yet.
    pub fn read(&mut self, id: StreamId, buf: &mut [u8]) -> Result<usize, StreamError> {
        let s = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if buf.is_empty() {
            return Ok(0);
        }
        let n = s.read(buf);
        if n > 0 {
            // Reading may owe the peer a window update.
            self.touch(id);
            self.reap(id);
            return Ok(n);
        }
        Self::empty_read(s)
    }

    /// Moves every buffered byte to `out`; returns how many, like [`UdxMux::read`].
    pub fn read_into(&mut self, id: StreamId, out: &mut Vec<u8>) -> Result<usize, StreamError> {
        self.read_into_at_most(id, out, usize::MAX)
    }

    /// Moves up to `max` (at least 1) buffered bytes to `out`; returns how many, like
    /// [`UdxMux::read`]. The rest stays in the stream's receive buffer, under its window.
    pub fn read_into_at_most(
        &mut self,
        id: StreamId,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, StreamError> {
        let s = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        let n = s.read_all(out, max.max(1));
        if n > 0 {
            self.touch(id);
            self.reap(id);
            return Ok(n);
        }
        Self::empty_read(s)
    }

    fn empty_read(s: &Stream) -> Result<usize, StreamError> {
        if s.is_eof() {
            return Ok(0);
        }
        match s.closed_reason() {
            Some(CloseReason::Finished) => Ok(0),
            Some(r) => Err(StreamError::Closed(r)),
            None => Err(StreamError::Blocked),
        }
    }

    /// Sends an unreliable datagram (UDX MESSAGE). `false` if the stream cannot send now.
    pub fn send_message(&mut self, id: StreamId, data: &[u8]) -> bool {
        let queued = self
            .streams
            .get_mut(&id)
            .is_some_and(|s| s.is_connected() && s.send_message(data));
        if queued {
            self.touch(id);
        }
        queued
    }

    /// Destroys a stream: one DESTROY packet if connected, then it is closed.
    pub fn reset(&mut self, now: Timestamp, id: StreamId) {
        let _ = now;
        if let Some(s) = self.streams.get_mut(&id) {
            s.reset(&mut self.events);
        }
        self.touch(id);
        self.reap(id);
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        let e = self.events.pop_front()?;
        if matches!(e, StreamEvent::Message { .. }) {
            self.pending_messages -= 1;
        }
        Some(e)
    }

    /// Writes the next datagram into `out` (cleared first) and returns where it goes; `None`
    /// when nothing can be sent now. Allocation-free alternative to [`UdxMux::poll_transmit`].
    ///
    /// Streams take turns (round robin from the one served last). Only streams in the `ready`
    /// set are asked; one with nothing to send leaves the set until it is touched again.
    pub fn poll_transmit_into(&mut self, now: Timestamp, out: &mut Vec<u8>) -> Option<Destination> {
        loop {
            let id = self.next_ready()?;
            let Some(s) = self.streams.get_mut(&id) else {
                self.ready.remove(&id);
                continue;
            };
            let sent = s.poll_transmit(now, out, &mut self.events);
            // Sending arms timers; finding nothing to send may arm the pacing timer.
            self.reschedule(id);
            if sent.is_none() {
                self.ready.remove(&id);
            }
            self.reap(id);
            if let Some((socket, addr)) = sent {
                self.cursor = Some(id);
                return Some(Destination { socket, addr });
            }
        }
    }

    /// The first ready stream after the cursor, wrapping around to the first one.
    fn next_ready(&self) -> Option<StreamId> {
        let after = self.cursor.and_then(|c| {
            self.ready
                .range((core::ops::Bound::Excluded(c), core::ops::Bound::Unbounded))
                .next()
        });
        after.or_else(|| self.ready.first()).copied()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self, now: Timestamp) -> Option<Transmit> {
        let mut out = Vec::new();
        let d = self.poll_transmit_into(now, &mut out)?;
        Some(Transmit {
            socket: d.socket,
            dst: d.addr,
            ttl: None,
            payload: out,
        })
    }

    /// The earliest deadline of any stream.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|&(t, _)| t)
    }

    /// Runs the timers that are due, once per stream (a timer a handler re-arms for `now`
    /// runs at the next call).
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let mut due = core::mem::take(&mut self.due);
        due.clear();
        due.extend(
            self.deadlines
                .iter()
                .take_while(|&&(t, _)| t <= now)
                .map(|&(_, id)| id),
        );
        for &id in &due {
            if let Some(s) = self.streams.get_mut(&id) {
                s.handle_timeout(now, &mut self.events);
            }
            self.touch(id);
            self.reap(id);
        }
        self.due = due;
    }

    /// Checks the deadline index against every stream (tests only): each stream is filed
    /// under exactly its own `poll_timeout`, and nothing else is filed.
    #[cfg(test)]
    fn check_index(&self) {
        let mut filed = 0;
        for (id, s) in &self.streams {
            assert_eq!(s.scheduled, s.poll_timeout(), "stream {id:?} filed wrongly");
            if let Some(t) = s.scheduled {
                assert!(self.deadlines.contains(&(t, *id)));
                filed += 1;
            }
        }
        assert_eq!(
            self.deadlines.len(),
            filed,
            "stale entries in the deadline index"
        );
        let brute = self.streams.values().filter_map(Stream::poll_timeout).min();
        assert_eq!(self.poll_timeout(), brute);
    }

    /// Number of streams held (including closed ones with unread bytes).
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is held.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests;
