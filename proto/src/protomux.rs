//! Protomux: many protocol channels over one connection's messages (npm `protomux` 3.12).
//!
//! A [`Protomux`] owns the channel tables of one connection and nothing else: feed it each
//! message the peer sent ([`Protomux::handle_message`], one secret-stream message as read with
//! `Conn::read_message`), send what [`Protomux::poll_transmit`] yields as one message each
//! (`Conn::write_message`), and drain [`Protomux::poll_event`]. It never touches the
//! connection itself, so it works over either driver or over anything else that keeps message
//! boundaries.
//!
//! Wire format (`protomux/index.js`), every number a compact-encoding `uint`:
//! - a channel message: `local id of the sender's channel ‖ message type ‖ payload`;
//! - control messages go to channel 0: `0 ‖ 1 ‖ local id ‖ protocol (string) ‖ id
//!   (optionalBuffer) ‖ handshake` opens, `0 ‖ 2 ‖ the opener's id` rejects an open,
//!   `0 ‖ 3 ‖ local id` closes;
//! - `0 ‖ 0 ‖ channel ‖ (len ‖ frame without its channel id)*` is a batch; a `len` of 0 is
//!   followed by the channel id of the frames after it.
//!
//! A channel is paired when both sides opened the same protocol and id. Opens in both orders
//! pair, as in JS: ours first (the peer's open then completes it), or the peer's first if we
//! asked for such opens with [`Protomux::pair`]; any other open from the peer is rejected at
//! once, as a JS mux without a `pair` handler does. Messages for a channel the peer opened
//! and we have not answered yet are kept, up to [`MAX_BUFFERED`] bytes in all.
//!
//! Where JS loses track of a channel, we answer on the wire in a way both JS and we handle, so
//! that the two sides always pair the same channels: the peer closing an open we have not
//! answered gets a reject for it (JS ignores such a close, and its next open of that name
//! answers the closed channel); an answer to an open we closed before it came gets a second
//! close (JS frees the id silently and leaves the peer's channel open).
//!
//! Not mirrored: the JS `aliases` and `unique` options, corking (we never send batches; we
//! decode them), and the stream pause at 32 KiB of buffered messages: past [`MAX_BUFFERED`]
//! the mux fails instead, since it cannot slow the peer down by itself.

use std::collections::{HashSet, VecDeque};
use std::fmt;

use crate::wire::compact::{write_buffer, write_uint, DecodeError, Reader};

/// Bytes of messages kept for channels the peer opened that we have not answered yet, and
/// opens waiting for an answer, in all. JS pauses the stream past 32 KiB (`MAX_BUFFERED`);
/// we fail the mux past this.
pub const MAX_BUFFERED: usize = 1 << 20;

/// Opens from the peer waiting for [`Protomux::open`] or [`Protomux::reject`] at once.
pub const MAX_INCOMING: usize = 256;

/// Channels open (or opening) at once, on either side.
pub const MAX_CHANNELS: usize = 4096;

/// Each buffered item counts this much on top of its bytes (`protomux` `byteSize`).
const ITEM_OVERHEAD: usize = 512;

/// Control message types on channel 0 (`_oncontrolsession`).
const BATCH: u64 = 0;
const OPEN: u64 = 1;
const REJECT: u64 = 2;
const CLOSE: u64 = 3;

/// A channel of ours, by its local id (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u32);

/// What a channel was opened with: both sides open the same name to pair
/// ([`Protomux::channel_name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelName<'a> {
    /// The protocol (JS `protocol`).
    pub protocol: &'a str,
    /// The optional id that tells channels of one protocol apart (JS `id`).
    pub id: Option<&'a [u8]>,
}

/// What the peer made happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MuxEvent {
    /// The peer opened `protocol`/`id`, which we asked for with [`Protomux::pair`]: answer
    /// with [`Protomux::open`] (same protocol and id) or [`Protomux::reject`].
    Incoming {
        /// The protocol name.
        protocol: String,
        /// The channel id (`None` for none or empty).
        id: Option<Vec<u8>>,
    },
    /// Both sides opened the channel; `handshake` is the peer's (empty if it sent none).
    Opened {
        /// The channel.
        channel: ChannelId,
        /// The bytes after the id in the peer's open message.
        handshake: Vec<u8>,
    },
    /// A message on an open channel.
    Message {
        /// The channel.
        channel: ChannelId,
        /// The message type (its index in the JS channel's `addMessage` order).
        kind: u64,
        /// The encoded message.
        payload: Vec<u8>,
    },
    /// The channel closed: the peer closed or rejected it, or the mux failed. Its id may be
    /// reused afterwards.
    Closed {
        /// The channel.
        channel: ChannelId,
    },
}

/// Why the mux failed. Failures are fatal, as in JS (which destroys the stream): the caller
/// should close the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MuxError {
    /// A message did not decode.
    Decode(DecodeError),
    /// The peer opened a channel id that is in use or skips ahead ("Invalid open message").
    InvalidOpen,
    /// The peer rejected a channel we are not opening ("Invalid reject message").
    InvalidReject,
    /// The peer made us keep more than [`MAX_BUFFERED`] bytes or [`MAX_INCOMING`] opens.
    TooMuchBuffered,
    /// More than [`MAX_CHANNELS`] channels at once.
    TooManyChannels,
    /// A batch inside a batch.
    NestedBatch,
    /// The mux failed earlier.
    Failed,
}

impl fmt::Display for MuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MuxError::Decode(e) => write!(f, "protomux message did not decode: {e}"),
            MuxError::InvalidOpen => f.write_str("invalid protomux open message"),
            MuxError::InvalidReject => f.write_str("invalid protomux reject message"),
            MuxError::TooMuchBuffered => f.write_str("peer made protomux buffer too much"),
            MuxError::TooManyChannels => f.write_str("too many protomux channels"),
            MuxError::NestedBatch => f.write_str("protomux batch inside a batch"),
            MuxError::Failed => f.write_str("protomux failed earlier"),
        }
    }
}

impl std::error::Error for MuxError {}

impl From<DecodeError> for MuxError {
    fn from(e: DecodeError) -> MuxError {
        MuxError::Decode(e)
    }
}

/// Why a local call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelError {
    /// No such channel, or it closed.
    Unknown,
    /// The channel is not paired yet (wait for [`MuxEvent::Opened`]).
    NotOpen,
    /// More than [`MAX_CHANNELS`] channels at once.
    TooManyChannels,
    /// The mux failed.
    Failed,
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChannelError::Unknown => "unknown or closed protomux channel",
            ChannelError::NotOpen => "protomux channel not open yet",
            ChannelError::TooManyChannels => "too many protomux channels",
            ChannelError::Failed => "protomux failed",
        })
    }
}

impl std::error::Error for ChannelError {}

/// A channel is named by its protocol and optional id (`toKey`).
type Key = (String, Option<Vec<u8>>);

/// One of our channels.
#[derive(Debug)]
struct Local {
    key: Key,
    /// The peer's id for this channel once paired (0 before).
    remote: u32,
}

/// Messages that came for a channel before it was paired: type and payload.
type Pending = Vec<(u64, Vec<u8>)>;

/// A channel the peer opened.
#[derive(Debug)]
enum Remote {
    /// Waiting for our answer: its name, handshake and the messages that came meanwhile.
    Waiting {
        key: Key,
        /// When it came ([`Protomux::arrivals`] then): answers go in this order.
        arrival: u64,
        handshake: Vec<u8>,
        pending: Pending,
    },
    /// Paired with our channel.
    Paired(ChannelId),
}

/// The channel tables of one connection. See the module docs.
#[derive(Debug, Default)]
pub struct Protomux {
    /// Our channels by local id - 1; `None` is free (or closed, awaiting the peer's answer).
    local: Vec<Option<Local>>,
    /// Local ids free for reuse.
    free: Vec<u32>,
    /// Our opens the peer has not answered yet, in order, by local id.
    outgoing: VecDeque<(Key, u32)>,
    /// The peer's channels by its id - 1.
    remote: Vec<Option<Remote>>,
    /// Names we accept opens for (`None` id: any id of that protocol).
    pairs: HashSet<Key>,
    /// Bytes of waiting opens and their messages, as `byteSize` counts them.
    buffered: usize,
    incoming: usize,
    /// Opens from the peer that waited so far, to order them (JS `info.incoming` is a queue).
    arrivals: u64,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<MuxEvent>,
    failed: bool,
}

fn key(protocol: &str, id: Option<&[u8]>) -> Key {
    (
        protocol.to_string(),
        id.filter(|i| !i.is_empty()).map(<[u8]>::to_vec),
    )
}

impl Protomux {
    /// An empty mux.
    pub fn new() -> Protomux {
        Protomux::default()
    }

    /// Accept the peer's opens of `protocol` with this `id` (`None`: any id), reported as
    /// [`MuxEvent::Incoming`] (JS `mux.pair`). Opens nobody asked for are rejected.
    pub fn pair(&mut self, protocol: &str, id: Option<&[u8]>) {
        self.pairs.insert(key(protocol, id));
    }

    /// Stop accepting the peer's opens of `protocol`/`id` (JS `mux.unpair`).
    pub fn unpair(&mut self, protocol: &str, id: Option<&[u8]>) {
        self.pairs.remove(&key(protocol, id));
    }

    /// Opens a channel, or answers the peer's waiting open of the same protocol and id
    /// (JS `createChannel` + `open`). `handshake` goes after the id in the open message.
    /// [`MuxEvent::Opened`] follows once both sides opened (at once when answering).
    pub fn open(
        &mut self,
        protocol: &str,
        id: Option<&[u8]>,
        handshake: &[u8],
    ) -> Result<ChannelId, ChannelError> {
        if self.failed {
            return Err(ChannelError::Failed);
        }
        let key = key(protocol, id);
        let local_id = match self.free.pop() {
            Some(i) => i,
            None if self.local.len() >= MAX_CHANNELS => return Err(ChannelError::TooManyChannels),
            None => {
                self.local.push(None);
                self.local.len() as u32
            }
        };
        let channel = ChannelId(local_id);
        let waiting = self.take_waiting(&key);
        let mut out = vec![0, OPEN as u8];
        write_uint(&mut out, u64::from(local_id));
        write_buffer(&mut out, key.0.as_bytes());
        write_buffer(&mut out, key.1.as_deref().unwrap_or_default());
        out.extend_from_slice(handshake);
        self.transmits.push_back(out);
        match waiting {
            Some((rid, handshake, pending)) => {
                self.local[local_id as usize - 1] = Some(Local {
                    key,
                    remote: rid as u32 + 1,
                });
                self.remote[rid] = Some(Remote::Paired(channel));
                self.events
                    .push_back(MuxEvent::Opened { channel, handshake });
                for (kind, payload) in pending {
                    self.events.push_back(MuxEvent::Message {
                        channel,
                        kind,
                        payload,
                    });
                }
            }
            None => {
                self.outgoing.push_back((key.clone(), local_id));
                self.local[local_id as usize - 1] = Some(Local { key, remote: 0 });
            }
        }
        Ok(channel)
    }

    /// Rejects the peer's waiting open of `protocol`/`id`, if there is one.
    pub fn reject(&mut self, protocol: &str, id: Option<&[u8]>) {
        if let Some((rid, _, _)) = self.take_waiting(&key(protocol, id)) {
            self.send_reject(rid as u64 + 1);
        }
    }

    /// Takes the peer's first waiting open of `key` out of its slot (left empty): its index,
    /// handshake and the messages kept for it. First to arrive, as JS answers `info.incoming`
    /// in order: the peer pairs our answers with its opens of `key` in the order it sent them.
    fn take_waiting(&mut self, key: &Key) -> Option<(usize, Vec<u8>, Pending)> {
        // By arrival, not by slot: the peer reuses ids, so a later open can take a lower one.
        let (rid, _) = self
            .remote
            .iter()
            .enumerate()
            .filter_map(|(rid, r)| match r {
                Some(Remote::Waiting {
                    key: k, arrival, ..
                }) if k == key => Some((rid, *arrival)),
                _ => None,
            })
            .min_by_key(|&(_, arrival)| arrival)?;
        self.take_waiting_at(rid)
    }

    /// Takes the peer's waiting open in slot `rid` out of it (left empty), as
    /// [`Protomux::take_waiting`] does.
    fn take_waiting_at(&mut self, rid: usize) -> Option<(usize, Vec<u8>, Pending)> {
        match self.remote.get_mut(rid)?.take() {
            Some(Remote::Waiting {
                handshake, pending, ..
            }) => {
                self.incoming -= 1;
                self.buffered -= ITEM_OVERHEAD
                    + handshake.len()
                    + pending
                        .iter()
                        .map(|(_, p)| ITEM_OVERHEAD + p.len())
                        .sum::<usize>();
                Some((rid, handshake, pending))
            }
            other => {
                self.remote[rid] = other;
                None
            }
        }
    }

    /// Sends a message of type `kind` on an open channel.
    pub fn send(
        &mut self,
        channel: ChannelId,
        kind: u64,
        payload: &[u8],
    ) -> Result<(), ChannelError> {
        if self.failed {
            return Err(ChannelError::Failed);
        }
        let local = self.local_channel(channel).ok_or(ChannelError::Unknown)?;
        if local.remote == 0 {
            return Err(ChannelError::NotOpen);
        }
        let mut out = Vec::with_capacity(payload.len() + 10);
        write_uint(&mut out, u64::from(channel.0));
        write_uint(&mut out, kind);
        out.extend_from_slice(payload);
        self.transmits.push_back(out);
        Ok(())
    }

    /// Closes a channel (JS `channel.close()`); no event follows for it.
    pub fn close(&mut self, channel: ChannelId) -> Result<(), ChannelError> {
        let local = self.local_channel(channel).ok_or(ChannelError::Unknown)?;
        let remote = local.remote;
        let mut out = vec![0, CLOSE as u8];
        write_uint(&mut out, u64::from(channel.0));
        self.transmits.push_back(out);
        self.local[channel.0 as usize - 1] = None;
        if remote > 0 {
            // The peer answered our open: the id is free once the peer sees the close.
            self.remote[remote as usize - 1] = None;
            self.free.push(channel.0);
        }
        // Otherwise the id stays taken until the peer answers the open (see `on_open`).
        Ok(())
    }

    /// Whether `channel` is paired and open.
    pub fn is_open(&self, channel: ChannelId) -> bool {
        self.local_channel(channel).is_some_and(|l| l.remote > 0)
    }

    /// The protocol and id `channel` was opened with, while it is open or opening.
    pub fn channel_name(&self, channel: ChannelId) -> Option<ChannelName<'_>> {
        self.local_channel(channel).map(|l| ChannelName {
            protocol: l.key.0.as_str(),
            id: l.key.1.as_deref(),
        })
    }

    /// The next message to send on the connection, whole.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next thing the peer made happen.
    pub fn poll_event(&mut self) -> Option<MuxEvent> {
        self.events.pop_front()
    }

    /// Handles one message from the peer. An error is fatal: every channel closes
    /// ([`MuxEvent::Closed`]) and the caller should close the connection.
    pub fn handle_message(&mut self, message: &[u8]) -> Result<(), MuxError> {
        if self.failed {
            return Err(MuxError::Failed);
        }
        // Empty messages are ignored ("ignore empty frames").
        if message.is_empty() {
            return Ok(());
        }
        let mut r = Reader::new(message);
        let result = r
            .uint()
            .map_err(MuxError::from)
            .and_then(|channel| self.decode(channel, &mut r, false));
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// Closes every channel after a failure (also call it when the connection closes).
    pub fn fail(&mut self) {
        self.failed = true;
        for (i, l) in self.local.iter_mut().enumerate() {
            if l.take().is_some() {
                self.events.push_back(MuxEvent::Closed {
                    channel: ChannelId(i as u32 + 1),
                });
            }
        }
        self.remote.clear();
        self.outgoing.clear();
        self.transmits.clear();
        self.buffered = 0;
        self.incoming = 0;
    }

    fn local_channel(&self, channel: ChannelId) -> Option<&Local> {
        let i = (channel.0 as usize).checked_sub(1)?;
        self.local.get(i)?.as_ref()
    }

    /// One frame: `channel` was read, the type and body follow in `r`. `in_batch`: the frame
    /// came in a batch, which may not hold another (JS recurses until its stack overflows).
    fn decode(&mut self, channel: u64, r: &mut Reader<'_>, in_batch: bool) -> Result<(), MuxError> {
        let kind = r.uint()?;
        if channel == 0 {
            return match kind {
                BATCH if in_batch => Err(MuxError::NestedBatch),
                BATCH => self.on_batch(r),
                OPEN => self.on_open(r),
                REJECT => self.on_reject(r),
                CLOSE => self.on_close(r),
                _ => Ok(()),
            };
        }
        let payload = r.remaining();
        let Some(Some(remote)) = usize::try_from(channel - 1)
            .ok()
            .and_then(|i| self.remote.get_mut(i))
        else {
            // Closed or unknown: could be a message sent before the close crossed ours.
            return Ok(());
        };
        match remote {
            Remote::Paired(local) => self.events.push_back(MuxEvent::Message {
                channel: *local,
                kind,
                payload: payload.to_vec(),
            }),
            Remote::Waiting { pending, .. } => {
                self.buffered += ITEM_OVERHEAD + payload.len();
                if self.buffered > MAX_BUFFERED {
                    return Err(MuxError::TooMuchBuffered);
                }
                pending.push((kind, payload.to_vec()));
            }
        }
        Ok(())
    }

    fn on_batch(&mut self, r: &mut Reader<'_>) -> Result<(), MuxError> {
        let mut channel = r.uint()?;
        while !r.is_empty() {
            let len = r.uint()?;
            if len == 0 {
                channel = r.uint()?;
                continue;
            }
            // JS clamps a frame that runs past the end to the bytes there are.
            let len = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(r.remaining().len());
            let frame = r.take(len)?;
            self.decode(channel, &mut Reader::new(frame), true)?;
        }
        Ok(())
    }

    fn on_open(&mut self, r: &mut Reader<'_>) -> Result<(), MuxError> {
        let remote_id = r.uint()?;
        let protocol = String::from_utf8_lossy(r.buffer()?).into_owned();
        let id = r.optional_buffer()?;
        let handshake = r.remaining();
        if remote_id == 0 {
            // The control channel cannot be opened; JS answers with a (malformed) reject.
            return Ok(());
        }
        // Ids past MAX_CHANNELS fail below; past u32 they cannot even be kept.
        let remote_id = u32::try_from(remote_id).map_err(|_| MuxError::InvalidOpen)?;
        let rid = usize::try_from(remote_id - 1).map_err(|_| MuxError::InvalidOpen)?;
        if rid == self.remote.len() {
            if self.remote.len() >= MAX_CHANNELS {
                return Err(MuxError::TooManyChannels);
            }
            self.remote.push(None);
        }
        if rid >= self.remote.len() || self.remote[rid].is_some() {
            return Err(MuxError::InvalidOpen);
        }
        let key = key(&protocol, id);
        if let Some(pos) = self.outgoing.iter().position(|(k, _)| *k == key) {
            let Some((_, local_id)) = self.outgoing.remove(pos) else {
                return Ok(());
            };
            let channel = ChannelId(local_id);
            match self.local.get_mut(local_id as usize - 1) {
                Some(Some(local)) => {
                    local.remote = remote_id;
                    self.remote[rid] = Some(Remote::Paired(channel));
                    self.events.push_back(MuxEvent::Opened {
                        channel,
                        handshake: handshake.to_vec(),
                    });
                }
                // We closed it before the peer answered: now the id is free. JS stops here
                // ("we already closed the channel - ignore"), but a JS peer ignores a close
                // of an open it has not answered (`_onclosesession`), so it answered with a
                // channel it thinks open, and would take our next open on this id for an
                // "Invalid open message". Closing again tells it: it closes its channel and
                // frees the slot; a peer that saw our first close ignores this one (the id
                // is not reused before it, since the close goes out first).
                _ => {
                    let mut out = vec![0, CLOSE as u8];
                    write_uint(&mut out, u64::from(local_id));
                    self.transmits.push_back(out);
                    self.free.push(local_id);
                }
            }
            return Ok(());
        }
        let wanted = self.pairs.contains(&key) || self.pairs.contains(&(key.0.clone(), None));
        if !wanted {
            self.send_reject(u64::from(remote_id));
            return Ok(());
        }
        self.incoming += 1;
        self.buffered += ITEM_OVERHEAD + handshake.len();
        if self.incoming > MAX_INCOMING || self.buffered > MAX_BUFFERED {
            return Err(MuxError::TooMuchBuffered);
        }
        self.arrivals += 1;
        self.remote[rid] = Some(Remote::Waiting {
            key: key.clone(),
            arrival: self.arrivals,
            handshake: handshake.to_vec(),
            pending: Vec::new(),
        });
        self.events.push_back(MuxEvent::Incoming {
            protocol: key.0,
            id: key.1,
        });
        Ok(())
    }

    fn on_reject(&mut self, r: &mut Reader<'_>) -> Result<(), MuxError> {
        let local_id = r.uint()?;
        let pos = self
            .outgoing
            .iter()
            .position(|&(_, l)| u64::from(l) == local_id)
            .ok_or(MuxError::InvalidReject)?;
        let Some((_, local_id)) = self.outgoing.remove(pos) else {
            return Err(MuxError::InvalidReject);
        };
        self.free.push(local_id);
        if let Some(slot) = self.local.get_mut(local_id as usize - 1) {
            if slot.take().is_some() {
                self.events.push_back(MuxEvent::Closed {
                    channel: ChannelId(local_id),
                });
            }
        }
        Ok(())
    }

    fn on_close(&mut self, r: &mut Reader<'_>) -> Result<(), MuxError> {
        let remote_id = r.uint()?;
        let Some(rid) = remote_id
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return Ok(());
        };
        match self.remote.get(rid) {
            Some(Some(Remote::Paired(channel))) => {
                let channel = *channel;
                self.remote[rid] = None;
                self.local[channel.0 as usize - 1] = None;
                self.free.push(channel.0);
                self.events.push_back(MuxEvent::Closed { channel });
            }
            // The peer closed an open we have not answered. It still counts on an answer:
            // it pairs the opens of a name it gets with its own in the order it sent them
            // (`info.outgoing.shift()`), and keeps this id taken until then. So the open
            // cannot just be forgotten (our next open of the name would answer the peer's
            // *next* open while the peer pairs it with this closed one: the two sides would
            // pair different channels), nor kept for the next open to answer as JS does
            // (JS ignores the close: its next channel of the name pairs with one the peer
            // closed, which the peer ignores, and the slot stays taken until that channel
            // closes). A reject answers it: the peer drops the open and frees its id.
            Some(Some(Remote::Waiting { .. })) => {
                self.take_waiting_at(rid);
                self.send_reject(remote_id);
            }
            _ => {}
        }
        Ok(())
    }

    fn send_reject(&mut self, remote_id: u64) {
        let mut out = vec![0, REJECT as u8];
        write_uint(&mut out, remote_id);
        self.transmits.push_back(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delivers everything `from` has to send to `to`.
    fn pump(from: &mut Protomux, to: &mut Protomux) {
        while let Some(m) = from.poll_transmit() {
            to.handle_message(&m).unwrap();
        }
    }

    fn events(m: &mut Protomux) -> Vec<MuxEvent> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    #[test]
    fn both_open_then_talk_and_close() {
        let (mut a, mut b) = (Protomux::new(), Protomux::new());
        let ca = a.open("test", Some(b"x"), b"hi from a").unwrap();
        assert_eq!(a.send(ca, 0, b"early"), Err(ChannelError::NotOpen));
        assert_eq!(
            a.channel_name(ca),
            Some(ChannelName {
                protocol: "test",
                id: Some(&b"x"[..])
            })
        );
        let cb = b.open("test", Some(b"x"), b"hi from b").unwrap();
        pump(&mut a, &mut b);
        pump(&mut b, &mut a);
        assert_eq!(
            events(&mut a),
            [MuxEvent::Opened {
                channel: ca,
                handshake: b"hi from b".to_vec()
            }]
        );
        assert_eq!(
            events(&mut b),
            [MuxEvent::Opened {
                channel: cb,
                handshake: b"hi from a".to_vec()
            }]
        );
        a.send(ca, 2, b"ping").unwrap();
        pump(&mut a, &mut b);
        assert_eq!(
            events(&mut b),
            [MuxEvent::Message {
                channel: cb,
                kind: 2,
                payload: b"ping".to_vec()
            }]
        );
        b.close(cb).unwrap();
        pump(&mut b, &mut a);
        assert_eq!(events(&mut a), [MuxEvent::Closed { channel: ca }]);
        assert!(!a.is_open(ca) && !b.is_open(cb));
        // Both ids are free again.
        assert_eq!(a.open("other", None, b"").unwrap(), ca);
        assert_eq!(b.open("other", None, b"").unwrap(), cb);
    }

    #[test]
    fn unasked_opens_are_rejected_and_paired_ones_wait_with_their_messages() {
        let (mut a, mut b) = (Protomux::new(), Protomux::new());
        // b never asked for "nobody": a's channel is rejected.
        let rejected = a.open("nobody", None, b"").unwrap();
        pump(&mut a, &mut b);
        pump(&mut b, &mut a);
        assert!(events(&mut b).is_empty());
        assert_eq!(events(&mut a), [MuxEvent::Closed { channel: rejected }]);

        // b asked for "svc" (any id): a's open and the messages after it wait for b's answer.
        b.pair("svc", None);
        let a_open = a.open("svc", Some(b"7"), b"hs").unwrap();
        pump(&mut a, &mut b);
        assert_eq!(
            events(&mut b),
            [MuxEvent::Incoming {
                protocol: "svc".into(),
                id: Some(b"7".to_vec())
            }]
        );
        // a cannot send yet (not paired), but a frame sent anyway by a peer is kept.
        b.handle_message(&[1, 4, b'm']).unwrap();
        let cb = b.open("svc", Some(b"7"), b"").unwrap();
        assert_eq!(
            events(&mut b),
            [
                MuxEvent::Opened {
                    channel: cb,
                    handshake: b"hs".to_vec()
                },
                MuxEvent::Message {
                    channel: cb,
                    kind: 4,
                    payload: b"m".to_vec()
                }
            ]
        );
        assert_eq!(b.buffered, 0);
        pump(&mut b, &mut a);
        assert!(
            matches!(events(&mut a)[..], [MuxEvent::Opened { channel, .. }] if channel == a_open)
        );
    }

    #[test]
    fn batches_decode_and_bad_input_fails_the_mux() {
        let (mut a, mut b) = (Protomux::new(), Protomux::new());
        let ca = a.open("p", None, b"").unwrap();
        let cb = b.open("p", None, b"").unwrap();
        pump(&mut a, &mut b);
        pump(&mut b, &mut a);
        events(&mut a);
        events(&mut b);
        // A batch for b's channel 1: two frames, then a switch to channel 0 and a close of 1.
        a.handle_message(&[0, 0, 1, 3, 0, b'x', b'y', 2, 1, b'z', 0, 0, 2, 3, 1])
            .unwrap();
        assert_eq!(
            events(&mut a),
            [
                MuxEvent::Message {
                    channel: ca,
                    kind: 0,
                    payload: b"xy".to_vec()
                },
                MuxEvent::Message {
                    channel: ca,
                    kind: 1,
                    payload: b"z".to_vec()
                },
                MuxEvent::Closed { channel: ca }
            ]
        );
        // A batch in a batch fails the mux and closes what is open.
        assert_eq!(
            b.handle_message(&[0, 0, 0, 3, 0, 0, 1]),
            Err(MuxError::NestedBatch)
        );
        assert_eq!(events(&mut b), [MuxEvent::Closed { channel: cb }]);
        assert_eq!(b.handle_message(&[1, 0]), Err(MuxError::Failed));
        // An open that skips ahead is invalid.
        let mut c = Protomux::new();
        assert_eq!(
            c.handle_message(&[0, 1, 5, 1, b'p', 0]),
            Err(MuxError::InvalidOpen)
        );
        let mut d = Protomux::new();
        assert_eq!(d.handle_message(&[0, 2, 9]), Err(MuxError::InvalidReject));
    }

    /// Issue 12: the peer closes an open we have not answered. We reject it, so that our next
    /// open of the name answers the peer's next open, as the peer pairs them.
    #[test]
    fn a_close_of_an_unanswered_open_is_rejected_and_the_next_answer_pairs_the_next_open() {
        let (mut a, mut b) = (Protomux::new(), Protomux::new());
        a.pair("x", None);
        let b1 = b.open("x", None, b"").unwrap();
        let b2 = b.open("x", None, b"").unwrap();
        b.close(b1).unwrap();
        pump(&mut b, &mut a);
        // a saw two opens, then the close of the first: it rejects that one.
        assert_eq!(events(&mut a).len(), 2);
        let reject = a.poll_transmit();
        assert_eq!(reject.as_deref(), Some(&[0, REJECT as u8, 1][..]));
        assert_eq!(a.incoming, 1);
        // a's answer goes to b's second channel.
        let ca = a.open("x", None, b"").unwrap();
        b.handle_message(&reject.unwrap()).unwrap();
        pump(&mut a, &mut b);
        assert_eq!(
            events(&mut b),
            [MuxEvent::Opened {
                channel: b2,
                handshake: Vec::new()
            }]
        );
        a.send(ca, 0, b"to b2").unwrap();
        pump(&mut a, &mut b);
        assert!(
            matches!(&events(&mut b)[..], [MuxEvent::Message { channel, .. }] if *channel == b2)
        );
        // b's first id came back with the reject.
        assert_eq!(b.open("y", None, b"").unwrap(), b1);
        // A close of an open that is neither ours nor waiting changes nothing.
        assert_eq!(a.handle_message(&[0, CLOSE as u8, 1]), Ok(()));
        assert_eq!(a.poll_transmit(), None);
    }

    /// Waiting opens are answered in the order they came, not by slot: after a reject frees
    /// the peer's id 1, its next open takes id 1 again, but its open on id 2 came first.
    #[test]
    fn waiting_opens_are_answered_in_arrival_order() {
        let (mut a, mut b) = (Protomux::new(), Protomux::new());
        a.pair("x", None);
        let b1 = b.open("x", None, b"").unwrap();
        b.close(b1).unwrap();
        let b2 = b.open("x", None, b"").unwrap();
        pump(&mut b, &mut a);
        pump(&mut a, &mut b);
        let b1 = b.open("x", None, b"").unwrap();
        assert_eq!(b1, ChannelId(1), "id 1 came back with the reject");
        pump(&mut b, &mut a);
        events(&mut a);
        events(&mut b);
        let ca = a.open("x", None, b"").unwrap();
        events(&mut a);
        pump(&mut a, &mut b);
        assert_eq!(
            events(&mut b),
            [MuxEvent::Opened {
                channel: b2,
                handshake: Vec::new()
            }]
        );
        // Both see the same pair: b's message on b2 reaches a's channel.
        b.send(b2, 1, b"on b2").unwrap();
        pump(&mut b, &mut a);
        assert_eq!(
            events(&mut a),
            [MuxEvent::Message {
                channel: ca,
                kind: 1,
                payload: b"on b2".to_vec()
            }]
        );
    }

    /// An answer to an open we closed before it came (a JS peer answers those, since it
    /// ignores their close) gets a second close, so that the peer closes its channel too.
    #[test]
    fn an_answer_to_a_closed_open_is_closed_again() {
        let mut a = Protomux::new();
        let ca = a.open("x", None, b"").unwrap();
        a.close(ca).unwrap();
        assert_eq!(a.poll_transmit().unwrap()[..2], [0, OPEN as u8]);
        assert_eq!(a.poll_transmit().as_deref(), Some(&[0, CLOSE as u8, 1][..]));
        // The peer's answer: its channel 1.
        a.handle_message(&[0, OPEN as u8, 1, 1, b'x', 0]).unwrap();
        assert_eq!(a.poll_transmit().as_deref(), Some(&[0, CLOSE as u8, 1][..]));
        assert!(events(&mut a).is_empty());
        // The id is free again, and the peer's slot 1 too.
        assert_eq!(a.open("y", None, b"").unwrap(), ca);
        a.pair("z", None);
        a.handle_message(&[0, OPEN as u8, 1, 1, b'z', 0]).unwrap();
    }

    #[test]
    fn waiting_opens_are_bounded() {
        let mut m = Protomux::new();
        m.pair("p", None);
        let mut result = Ok(());
        for id in 1..=MAX_INCOMING as u64 + 1 {
            let mut open = vec![0, 1];
            write_uint(&mut open, id);
            write_buffer(&mut open, b"p");
            write_buffer(&mut open, &id.to_le_bytes());
            result = m.handle_message(&open);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(MuxError::TooMuchBuffered));
    }
}
