//! The swarm glue both drivers share: each proto swarm with its connections until they are
//! handed out and the callers waiting for flushes, leaves and the destroy ([`SwarmSlot`]), and
//! the swarms of one node ([`Swarms`]: they see each node event first, their timers count
//! towards the driver's wake-up, and their events are drained after the node's).

use std::collections::{BTreeMap, HashMap};

use hyperdht_proto::swarm::{self as proto_swarm, FlushId, PeerInfo, SwarmConfig, SwarmEvent};
use hyperdht_proto::{ConnId, Event, Node, Timestamp};

use crate::calls::Glue;

/// A connection the swarm keeps, with what the swarm knows of its peer.
#[derive(Debug)]
pub struct SwarmConnection<C> {
    /// The connection.
    pub connection: C,
    /// The peer (`peer.client`: we dialled it; `peer.topics`: where we found it).
    pub peer: PeerInfo,
}

/// The driver's side of one swarm.
pub struct SwarmSlot<G: Glue> {
    swarm: proto_swarm::Swarm,
    /// The swarm keeps what it hands out, so a connection is never turned away here (the
    /// swarm's `max_peers` bounds them).
    connections: G::Tx<SwarmConnection<G::Connection>>,
    /// Connections opened and not yet handed out (the swarm says which it keeps).
    stash: HashMap<ConnId, G::Connection>,
    flushed: Vec<([u8; 32], G::Tx<bool>)>,
    flushes: HashMap<FlushId, G::Tx<bool>>,
    leaves: Vec<([u8; 32], G::Tx<()>)>,
    destroyed: Vec<G::Tx<()>>,
    /// Forget the slot once the swarm reports `Destroyed` (its handle is gone or destroying).
    remove_when_destroyed: bool,
    /// The swarm reported `Destroyed`.
    finished: bool,
}

impl<G: Glue> SwarmSlot<G> {
    /// The proto swarm.
    pub fn swarm(&mut self) -> &mut proto_swarm::Swarm {
        &mut self.swarm
    }

    /// `tx` hears when `topic`'s refresh under way finished: `true` at once if it is flushed,
    /// `false` at once if it is not joined, else when the swarm says (`false` if the topic is
    /// left or the swarm destroyed first).
    pub fn wait_flushed(&mut self, topic: [u8; 32], tx: G::Tx<bool>) {
        if self.swarm.is_flushed(&topic) {
            G::send(&tx, true);
        } else if !self.swarm.topics().any(|t| *t == topic) {
            G::send(&tx, false);
        } else {
            // Calls given up on leave their sender behind; forget those.
            self.flushed.retain(|(_, tx)| !G::is_closed(tx));
            self.flushed.push((topic, tx));
        }
    }

    /// `tx` hears when every topic is flushed and every peer found so far was tried (`false`:
    /// the swarm was destroyed first). Answered by the next drain if nothing is pending.
    pub fn flush(&mut self, tx: G::Tx<bool>) {
        let id = self.swarm.flush();
        self.flushes.insert(id, tx);
    }

    /// Leaves `topic`; `tx` hears when its announce is removed (at once if not joined).
    pub fn leave(&mut self, now: Timestamp, node: &mut Node, topic: [u8; 32], tx: G::Tx<()>) {
        if !self.swarm.topics().any(|t| *t == topic) {
            G::send(&tx, ());
            return;
        }
        self.leaves.push((topic, tx));
        self.swarm.leave(now, node, &topic);
    }

    /// Destroys the swarm; `tx` hears when it is unannounced. The slot goes once destroyed.
    pub fn destroy(&mut self, now: Timestamp, node: &mut Node, tx: G::Tx<()>) {
        self.destroyed.push(tx);
        self.remove_when_destroyed = true;
        self.swarm.destroy(now, node);
    }

    /// Answers the `flushed` calls waiting for `topic` (`None`: all of them).
    fn answer_flushed(&mut self, topic: Option<[u8; 32]>, ok: bool) {
        self.flushed.retain(|(t, tx)| {
            if topic.is_none_or(|topic| *t == topic) {
                G::send(tx, ok);
                false
            } else {
                true
            }
        });
    }

    /// Hands out what the swarm decided; returns whether there was anything.
    fn drain(&mut self) -> bool {
        let mut any = false;
        while let Some(e) = self.swarm.poll_event() {
            any = true;
            match e {
                SwarmEvent::Connection { conn, peer } => {
                    if let Some(connection) = self.stash.remove(&conn) {
                        // A handle that is gone takes no connection: this one is dropped.
                        G::send(&self.connections, SwarmConnection { connection, peer });
                    }
                }
                SwarmEvent::Dropped {
                    conn: Some(conn), ..
                }
                | SwarmEvent::Disconnected { conn, .. } => {
                    self.stash.remove(&conn);
                }
                SwarmEvent::TopicFlushed { topic, ok } => self.answer_flushed(Some(topic), ok),
                SwarmEvent::Flushed { flush, ok } => {
                    if let Some(tx) = self.flushes.remove(&flush) {
                        G::send(&tx, ok);
                    }
                }
                SwarmEvent::Left { topic } => {
                    // A topic left is never flushed: its waiters hear `false`.
                    self.answer_flushed(Some(topic), false);
                    self.leaves.retain(|(t, tx)| {
                        if *t == topic {
                            G::send(tx, ());
                            false
                        } else {
                            true
                        }
                    });
                }
                SwarmEvent::Destroyed => {
                    self.finished = true;
                    self.answer_flushed(None, false);
                    for tx in self.destroyed.drain(..) {
                        G::send(&tx, ());
                    }
                }
                _ => {}
            }
        }
        any
    }
}

/// The swarms on one node, by id (in creation order: node events reach them in that order).
pub struct Swarms<G: Glue> {
    slots: BTreeMap<u64, SwarmSlot<G>>,
    next: u64,
}

impl<G: Glue> Default for Swarms<G> {
    fn default() -> Self {
        Swarms {
            slots: BTreeMap::new(),
            next: 0,
        }
    }
}

impl<G: Glue> Swarms<G> {
    /// A new swarm whose kept connections go to `connections`; its id.
    pub fn add(
        &mut self,
        config: SwarmConfig,
        seed: [u8; 32],
        connections: G::Tx<SwarmConnection<G::Connection>>,
    ) -> u64 {
        self.next += 1;
        let slot = SwarmSlot {
            swarm: proto_swarm::Swarm::new(config, seed),
            connections,
            stash: HashMap::new(),
            flushed: Vec::new(),
            flushes: HashMap::new(),
            leaves: Vec::new(),
            destroyed: Vec::new(),
            remove_when_destroyed: false,
            finished: false,
        };
        self.slots.insert(self.next, slot);
        self.next
    }

    /// Swarm `id`, while it lives.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut SwarmSlot<G>> {
        self.slots.get_mut(&id)
    }

    /// Forgets swarm `id` at once (its handle stopped waiting for the destroy); the slot is
    /// returned for the caller to drop where it likes (it may hold connections).
    pub fn remove(&mut self, id: u64) -> Option<SwarmSlot<G>> {
        self.slots.remove(&id)
    }

    /// A handle was dropped: destroy its swarm in the background and forget it once done.
    pub fn drop_swarm(&mut self, now: Timestamp, node: &mut Node, id: u64) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.remove_when_destroyed = true;
            slot.swarm.destroy(now, node);
        }
    }

    /// Hands `ev` to each swarm in turn; `None` if one kept it.
    pub fn handle_event(&mut self, now: Timestamp, node: &mut Node, ev: Event) -> Option<Event> {
        let mut ev = ev;
        for slot in self.slots.values_mut() {
            ev = slot.swarm.handle_event(now, node, ev)?;
        }
        Some(ev)
    }

    /// The swarms' earliest deadline.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.slots
            .values()
            .filter_map(|s| s.swarm.poll_timeout())
            .min()
    }

    /// Runs the timers that are due.
    pub fn handle_timeout(&mut self, now: Timestamp, node: &mut Node) {
        for slot in self.slots.values_mut() {
            if slot.swarm.poll_timeout().is_some_and(|t| t <= now) {
                slot.swarm.handle_timeout(now, node);
            }
        }
    }

    /// Drains every swarm's events (after the node's); returns whether there were any.
    pub fn drain(&mut self) -> bool {
        let mut any = false;
        for slot in self.slots.values_mut() {
            any |= slot.drain();
        }
        self.slots
            .retain(|_, s| !(s.finished && s.remove_when_destroyed));
        any
    }

    /// An opened connection no call or server waits for: the swarm that owns it keeps it until
    /// it says whether it hands it out. Nobody's: dropped.
    pub fn stash(&mut self, conn: ConnId, c: G::Connection) {
        if let Some(slot) = self.slots.values_mut().find(|s| s.swarm.owns(conn)) {
            slot.stash.insert(conn, c);
        }
    }

    /// A connection the node closed: one still stashed is dropped.
    pub fn forget(&mut self, conn: ConnId) {
        for slot in self.slots.values_mut() {
            slot.stash.remove(&conn);
        }
    }
}
