//! The loop's side of the connections it handed out ([`Conns`]): each reader's channel and
//! what it could not take yet, the writes parked while a connection is blocked, and the closed
//! connections the node keeps until their reader has everything. It turns the node's
//! connection events into chunks for the readers and settled writes.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Weak;

use hyperdht_kit::{ConnEvent, Core};
use hyperdht_proto::{ConnCloseReason, ConnError, ConnId, Node, Timestamp};

use crate::conn::{
    read_channel, Chunk, ConnReader, ConnWriter, Connection, Outgoing, WriteTicket, CHUNK,
};
use crate::driver::Std;
use crate::handle::HandleInner;

/// The driver's side of a reader: its channel, a chunk it could not hand over yet, a
/// message taken from the node that did not fit whole in the chunks sent so far (with how
/// much of it went), and whether the end (EOF or the close) was handed over.
struct ReaderState {
    tx: SyncSender<Chunk>,
    stalled: Option<Chunk>,
    partial: Option<(Vec<u8>, usize)>,
    ended: bool,
}

/// The connections handed out, as the loop sees them.
#[derive(Default)]
pub(crate) struct Conns {
    /// A handle for the readers and writers the loop creates (weak: the loop must not keep
    /// its own command channel alive).
    pub(crate) handle: Option<Weak<HandleInner>>,
    readers: HashMap<ConnId, ReaderState>,
    /// Connections the node closed that it still holds (their reader has not had everything).
    closed_conns: HashSet<ConnId>,
    parked_writes: HashMap<ConnId, Vec<(Outgoing, WriteTicket)>>,
}

impl Conns {
    /// Handles an event about a connection (what [`Core::flush`] leaves for the driver).
    pub(crate) fn on_event(&mut self, core: &mut Core<Std>, ev: ConnEvent) {
        match ev {
            ConnEvent::Opened(meta) => {
                let Some(inner) = self.handle.as_ref().and_then(Weak::upgrade) else {
                    return;
                };
                let conn = meta.id;
                let (rtx, rrx) = read_channel();
                self.readers.insert(
                    conn,
                    ReaderState {
                        tx: rtx,
                        stalled: None,
                        partial: None,
                        ended: false,
                    },
                );
                let c = Connection::new(
                    meta,
                    ConnReader::new(conn, rrx, inner.clone()),
                    ConnWriter::new(conn, inner),
                );
                core.deliver(conn, c);
            }
            ConnEvent::Readable(conn) => self.forward_readable(&mut core.node, conn),
            ConnEvent::Writable(conn) => {
                let parked = self.parked_writes.remove(&conn).unwrap_or_default();
                let now = core.now();
                for (data, ticket) in parked {
                    self.write_conn(&mut core.node, now, conn, data, ticket);
                }
            }
            ConnEvent::Closed(conn, reason) => self.closed(&mut core.node, conn, reason),
        }
    }

    /// The node closed `conn`: its reader gets what is left and then the end; parked writes
    /// fail.
    fn closed(&mut self, node: &mut Node, conn: ConnId, reason: ConnCloseReason) {
        self.closed_conns.insert(conn);
        self.forward_readable(node, conn);
        // A reader that already has its end gets no second one (see `forward_chunks`).
        if let Some(r) = self.readers.get_mut(&conn).filter(|r| !r.ended) {
            let chunk = if reason == ConnCloseReason::Finished {
                Chunk::Eof
            } else {
                Chunk::Closed(reason)
            };
            if r.stalled.is_none() {
                match r.tx.try_send(chunk) {
                    Ok(()) => r.ended = true,
                    Err(TrySendError::Full(c)) => r.stalled = Some(c),
                    Err(TrySendError::Disconnected(_)) => {}
                }
            }
        }
        for (_, ticket) in self.parked_writes.remove(&conn).unwrap_or_default() {
            ticket.settle(Err(ConnError::Closed(reason)));
        }
        self.reap_conn(node, conn);
    }

    /// Hands decrypted messages to the connection's reader, as far as its channel has room.
    pub(crate) fn forward_readable(&mut self, node: &mut Node, conn: ConnId) {
        self.forward_chunks(node, conn);
        self.reap_conn(node, conn);
    }

    fn forward_chunks(&mut self, node: &mut Node, conn: ConnId) {
        // Nothing follows an end: the node keeps reporting the end of a finished stream, and
        // a second end stalled in a full channel would never be taken (the reader stops at its
        // first end), so the connection would never be reaped.
        let Some(r) = self.readers.get_mut(&conn).filter(|r| !r.ended) else {
            return;
        };
        // A chunk the channel had no room for last time goes first.
        let mut next = r.stalled.take();
        loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => match next_chunk(node, conn, &mut r.partial) {
                    Some(c) => c,
                    None => return,
                },
            };
            let end = matches!(chunk, Chunk::Eof | Chunk::Closed(_));
            match r.tx.try_send(chunk) {
                Ok(()) if end => {
                    r.ended = true;
                    return;
                }
                Ok(()) => {}
                Err(TrySendError::Full(c)) => {
                    r.stalled = Some(c);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.readers.remove(&conn);
                    return;
                }
            }
        }
    }

    /// Forgets a connection the node closed once its reader has everything (or is gone), so
    /// closed connections do not pile up in the node.
    fn reap_conn(&mut self, node: &mut Node, conn: ConnId) {
        if !self.closed_conns.contains(&conn) {
            return;
        }
        let delivered = self
            .readers
            .get(&conn)
            .is_none_or(|r| r.ended && r.stalled.is_none());
        if delivered {
            self.readers.remove(&conn);
            self.closed_conns.remove(&conn);
            self.parked_writes.remove(&conn);
            node.conn(conn).remove();
        }
    }

    /// Gives `data` to the node, or parks it until the connection is writable again. Behind
    /// parked writes it parks too: bytes keep the order they were written in.
    pub(crate) fn write_conn(
        &mut self,
        node: &mut Node,
        now: Timestamp,
        conn: ConnId,
        data: Outgoing,
        ticket: WriteTicket,
    ) {
        if let Some(parked) = self.parked_writes.get_mut(&conn) {
            parked.push((data, ticket));
            return;
        }
        let result = match &data {
            Outgoing::Bytes(bytes) => node.conn(conn).write(now, bytes).map(drop),
            Outgoing::Message(message) => node.conn(conn).write_message(now, message),
        };
        match result {
            Err(ConnError::Blocked) => self
                .parked_writes
                .entry(conn)
                .or_default()
                .push((data, ticket)),
            r => ticket.settle(r),
        }
    }
}

/// The next chunk for a reader: up to `CHUNK` bytes of whole messages (their ends marked), a
/// message too large for one chunk split over several (the remainder kept in `partial`), or
/// EOF. `None` while the node has nothing more.
fn next_chunk(
    node: &mut Node,
    conn: ConnId,
    partial: &mut Option<(Vec<u8>, usize)>,
) -> Option<Chunk> {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    while bytes.len() < CHUNK {
        let (message, from) = match partial.take() {
            Some(p) => p,
            None => match node.conn(conn).read_message() {
                Ok(Some(m)) => (m, 0),
                Ok(None) if bytes.is_empty() => return Some(Chunk::Eof),
                // The end comes in the next chunk, after these bytes.
                Ok(None) | Err(_) => break,
            },
        };
        let rest = &message[from..];
        let room = CHUNK - bytes.len();
        if rest.len() <= room {
            bytes.extend_from_slice(rest);
            ends.push(bytes.len());
        } else {
            bytes.extend_from_slice(&rest[..room]);
            *partial = Some((message, from + room));
        }
    }
    (!bytes.is_empty()).then_some(Chunk::Data { bytes, ends })
}
