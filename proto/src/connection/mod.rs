//! One connection through all its phases, and the table that holds every connection of a node.
//!
//! A [`Connection`] is what one [`ConnId`] names, from the first step to the last:
//!
//! ```text
//!   client:  find peer -> handshake -> holepunch / relay / direct --+
//!                                                                   +-> established -> closed
//!   server:  handshake (kept 10 s for retransmits) -> punch / relay +
//! ```
//!
//! Each phase keeps its state in its own part: the attempt ([`ClientConn`], until a path
//! opens), the server's handshake ([`ServerHandshake`], until it clears), the transport
//! ([`Transport`]: the UDX stream and secret-stream, from the handshake on) and, for an internal
//! connection to a blind relay, the pairing it carries ([`RelayPairing`]). The node removes
//! a connection once nothing of it is left (see [`Connection::is_spent`]): a driver that forgets
//! to call [`crate::Conn::remove`] leaks nothing.
//!
//! [`Connections`] is a slab: an id carries its slot's generation, so ids are never reused and
//! a late report for a dead connection finds nothing. It also keeps the one timer table of all
//! connections: every connection whose state changed is marked (any [`Connections::get_mut`]
//! does it) and its deadline filed again before the next timer decision.

use std::collections::{BTreeSet, VecDeque};

pub(crate) mod attempt;
pub(crate) mod handshake;
pub(crate) mod relay;
pub(crate) mod transport;

pub use attempt::ConnectError;
pub use relay::ConnectOptions;
pub use transport::{
    ConnCloseReason, ConnError, CLOSED_LINGER, MAX_PENDING_OUTPUT, MAX_UNREAD_INPUT,
};

use crate::holepunch::puncher::Puncher;
use crate::ids::ConnId;
use crate::time::Timestamp;
use attempt::ClientConn;
use handshake::ServerHandshake;
use relay::RelayPairing;
use transport::Transport;

/// Closed connections whose close reason reads still report after they were removed.
const MAX_CLOSED_REMEMBERED: usize = 1024;

/// Which side of the handshake we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// We connected (`Node::connect`).
    Client,
    /// A client connected to our server `server`.
    Server(u64),
}

/// Who the connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The application's: its events go to the application.
    App,
    /// The node's own link to a blind relay, carrying a pairing for another connection.
    RelayLink,
    /// A peer's session with our blind relay service.
    RelaySession,
}

/// Everything one connection owns.
#[derive(Debug)]
pub(crate) struct Connection {
    pub id: ConnId,
    pub side: Side,
    pub purpose: Purpose,
    /// The attempt, until its path opens or it fails (client side).
    pub client: Option<ClientConn>,
    /// The handshake a server holds, until it clears (server side).
    pub handshake: Option<ServerHandshake>,
    /// The UDX stream with secret-stream on top, from the handshake on.
    pub transport: Option<Transport>,
    /// The pairing this relay link carries ([`Purpose::RelayLink`] only).
    pub relay_link: Option<RelayPairing>,
    /// The relay links started for this connection (ids of links since gone find nothing).
    pub relay_links: Vec<ConnId>,
    /// A removal is due at this time (a closed connection whose input was never read).
    pub linger_until: Option<Timestamp>,
    /// Whose deadline is filed in the timer table, and when.
    filed: Option<Timestamp>,
    /// Changed since its deadline was filed.
    touched: bool,
}

impl Connection {
    fn new(id: ConnId, side: Side, purpose: Purpose) -> Connection {
        Connection {
            id,
            side,
            purpose,
            client: None,
            handshake: None,
            transport: None,
            relay_link: None,
            relay_links: Vec::new(),
            linger_until: None,
            filed: None,
            touched: true,
        }
    }

    /// The earliest deadline of any of its parts.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        [
            self.client.as_ref().and_then(ClientConn::poll_timeout),
            self.puncher().and_then(Puncher::poll_timeout),
            self.handshake
                .as_ref()
                .and_then(ServerHandshake::poll_timeout),
            self.transport.as_ref().and_then(Transport::poll_timeout),
            self.relay_link
                .as_ref()
                .and_then(RelayPairing::poll_timeout),
            self.linger_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The puncher of its attempt or handshake.
    pub fn puncher(&self) -> Option<&Puncher> {
        match (&self.client, &self.handshake) {
            (Some(c), _) => c.puncher.as_ref(),
            (None, Some(h)) => h.puncher.as_ref(),
            (None, None) => None,
        }
    }

    /// The puncher of its attempt or handshake, to change.
    pub fn puncher_mut(&mut self) -> Option<&mut Puncher> {
        match (&mut self.client, &mut self.handshake) {
            (Some(c), _) => c.puncher.as_mut(),
            (None, Some(h)) => h.puncher.as_mut(),
            (None, None) => None,
        }
    }

    /// Nothing is left: no attempt, no handshake, no relay pairing, and the transport (if
    /// any) closed with its input read.
    pub fn is_spent(&self) -> bool {
        self.client.is_none()
            && self.handshake.is_none()
            && self.relay_link.is_none()
            && self.transport.as_ref().is_none_or(Transport::is_spent)
    }
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    value: Option<Connection>,
}

/// Every connection of a node, by id, with their timers.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Connections changed since their deadline was filed.
    touched: Vec<ConnId>,
    /// `(deadline, id)` of each connection; an entry may be early, never late.
    timers: BTreeSet<(Timestamp, ConnId)>,
    /// Recently removed connections that had closed: `(id, reason, peer finished)`.
    closed: VecDeque<(ConnId, ConnCloseReason, bool)>,
}

fn split(id: ConnId) -> (usize, u32) {
    ((id.0 & 0xffff_ffff) as usize, (id.0 >> 32) as u32)
}

impl Connections {
    /// Adds a connection; returns its id.
    pub fn insert(&mut self, side: Side, purpose: Purpose) -> ConnId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let id = ConnId((u64::from(slot.generation) << 32) | u64::from(index));
        slot.value = Some(Connection::new(id, side, purpose));
        self.touched.push(id);
        id
    }

    /// The connection `id`, if it is still here.
    pub fn get(&self, id: ConnId) -> Option<&Connection> {
        let (index, generation) = split(id);
        let slot = self.slots.get(index)?;
        if slot.generation != generation {
            return None;
        }
        slot.value.as_ref()
    }

    /// The connection `id` to change (its deadline is filed again).
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        let (index, generation) = split(id);
        let slot = self.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let c = slot.value.as_mut()?;
        if !c.touched {
            c.touched = true;
            self.touched.push(id);
        }
        Some(c)
    }

    /// The transport of connection `id`.
    pub fn transport(&self, id: ConnId) -> Option<&Transport> {
        self.get(id)?.transport.as_ref()
    }

    /// The transport of connection `id`, to change.
    pub fn transport_mut(&mut self, id: ConnId) -> Option<&mut Transport> {
        self.get_mut(id)?.transport.as_mut()
    }

    /// The attempt of connection `id` (client side, until its path opens).
    pub fn client(&self, id: ConnId) -> Option<&ClientConn> {
        self.get(id)?.client.as_ref()
    }

    /// The attempt of connection `id`, to change.
    pub fn client_mut(&mut self, id: ConnId) -> Option<&mut ClientConn> {
        self.get_mut(id)?.client.as_mut()
    }

    /// The handshake a server holds for connection `id`.
    pub fn handshake(&self, id: ConnId) -> Option<&ServerHandshake> {
        self.get(id)?.handshake.as_ref()
    }

    /// The handshake of connection `id`, to change.
    pub fn handshake_mut(&mut self, id: ConnId) -> Option<&mut ServerHandshake> {
        self.get_mut(id)?.handshake.as_mut()
    }

    /// The pairing relay link `id` carries.
    pub fn link(&self, id: ConnId) -> Option<&RelayPairing> {
        self.get(id)?.relay_link.as_ref()
    }

    /// The pairing of relay link `id`, to change.
    pub fn link_mut(&mut self, id: ConnId) -> Option<&mut RelayPairing> {
        self.get_mut(id)?.relay_link.as_mut()
    }

    /// Removes connection `id`; a closed one's reason is remembered for a while.
    pub fn remove(&mut self, id: ConnId) -> Option<Connection> {
        let (index, generation) = split(id);
        let slot = self.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let c = slot.value.take()?;
        self.free.push(index as u32);
        if let Some(t) = c.filed {
            self.timers.remove(&(t, id));
        }
        if let Some((reason, eof)) = c.transport.as_ref().and_then(Transport::closed) {
            self.remember_closed(id, reason, eof);
        }
        Some(c)
    }

    /// Keeps how connection `id` closed, for reads after it is gone.
    pub fn remember_closed(&mut self, id: ConnId, reason: ConnCloseReason, eof: bool) {
        if self.closed.len() >= MAX_CLOSED_REMEMBERED {
            self.closed.pop_front();
        }
        self.closed.push_back((id, reason, eof));
    }

    /// How a removed connection had closed (and whether its peer had finished), if it is
    /// among the last ones removed.
    pub fn closed_reason(&self, id: ConnId) -> Option<(ConnCloseReason, bool)> {
        self.closed
            .iter()
            .find(|(c, ..)| *c == id)
            .map(|&(_, r, eof)| (r, eof))
    }

    /// Every id, in slot order.
    pub fn ids(&self) -> Vec<ConnId> {
        self.iter().map(|c| c.id).collect()
    }

    /// Every connection, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.slots.iter().filter_map(|s| s.value.as_ref())
    }

    /// Files the deadlines of the connections changed since the last call.
    pub fn refile(&mut self) {
        for id in core::mem::take(&mut self.touched) {
            let (index, generation) = split(id);
            let Some(c) = self
                .slots
                .get_mut(index)
                .filter(|s| s.generation == generation)
                .and_then(|s| s.value.as_mut())
            else {
                continue;
            };
            c.touched = false;
            let next = c.poll_timeout();
            if c.filed == next {
                continue;
            }
            if let Some(t) = c.filed.take() {
                self.timers.remove(&(t, id));
            }
            if let Some(t) = next {
                self.timers.insert((t, id));
                c.filed = Some(t);
            }
        }
    }

    /// The earliest deadline of any connection.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let filed = self.timers.first().map(|&(t, _)| t);
        let changed = self
            .touched
            .iter()
            .filter_map(|&id| self.get(id)?.poll_timeout())
            .min();
        match (filed, changed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The connections with a deadline at or before `now`, earliest first. Each is marked
    /// changed, so it is filed again after its timers ran.
    pub fn take_due(&mut self, now: Timestamp) -> Vec<ConnId> {
        self.refile();
        let mut due = Vec::new();
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if let Some(c) = self.get_mut(id) {
                c.filed = None;
                due.push(id);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection module never reaches into the endpoint (`node/`): the dependency goes
    /// one way (see `proto/ARCHITECTURE.md`).
    #[test]
    fn the_connection_module_does_not_import_the_endpoint() {
        let sources = [
            ("mod.rs", include_str!("mod.rs")),
            ("attempt.rs", include_str!("attempt.rs")),
            ("handshake.rs", include_str!("handshake.rs")),
            ("relay.rs", include_str!("relay.rs")),
            ("transport.rs", include_str!("transport.rs")),
        ];
        let endpoint = concat!("crate::", "node");
        let outward = concat!("super::", "super");
        for (file, source) in sources {
            for (n, line) in source.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                assert!(
                    !code.contains(endpoint) && !code.contains(outward),
                    "connection/{file}:{} reaches into the endpoint: {line}",
                    n + 1
                );
            }
        }
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/connection"))
            .map(|d| d.count())
            .unwrap_or(sources.len());
        assert_eq!(
            files,
            sources.len(),
            "a new file in connection/ joins this check"
        );
    }

    #[test]
    fn ids_are_never_reused() {
        let mut t = Connections::default();
        let a = t.insert(Side::Client, Purpose::App);
        assert!(t.remove(a).is_some());
        let b = t.insert(Side::Client, Purpose::App);
        assert_ne!(a, b, "the slot is reused under a new generation");
        assert!(t.get(a).is_none(), "the old id finds nothing");
        assert!(t.get_mut(a).is_none());
        assert!(t.remove(a).is_none());
        assert!(t.get(b).is_some());
        assert_eq!(t.iter().count(), 1);
    }

    #[test]
    fn a_connection_without_deadlines_is_never_due() {
        let mut t = Connections::default();
        let a = t.insert(Side::Server(1), Purpose::App);
        assert_eq!(t.poll_timeout(), None);
        let later = Timestamp::from_millis(1_000_000);
        assert!(t.take_due(later).is_empty());
        assert!(t.get(a).is_some_and(Connection::is_spent));
    }

    #[test]
    fn linger_deadlines_are_filed_and_come_due_in_order() {
        let mut t = Connections::default();
        let a = t.insert(Side::Client, Purpose::App);
        let b = t.insert(Side::Client, Purpose::App);
        t.get_mut(a).unwrap().linger_until = Some(Timestamp::from_millis(30));
        t.get_mut(b).unwrap().linger_until = Some(Timestamp::from_millis(20));
        assert_eq!(t.poll_timeout(), Some(Timestamp::from_millis(20)));
        t.refile();
        assert_eq!(t.poll_timeout(), Some(Timestamp::from_millis(20)));
        assert_eq!(t.take_due(Timestamp::from_millis(25)), vec![b]);
        // `b` was marked changed: still due until its deadline moves.
        assert_eq!(t.poll_timeout(), Some(Timestamp::from_millis(20)));
        t.get_mut(b).unwrap().linger_until = None;
        t.refile();
        assert_eq!(t.poll_timeout(), Some(Timestamp::from_millis(30)));
        t.remove(a);
        assert_eq!(t.poll_timeout(), None);
    }
}
