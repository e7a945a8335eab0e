//! Iterative closest-node walks (dht-rpc `lib/query.js`), as a pure helper the node drives.
//!
//! The node asks [`Query::read_more`] which candidates to visit, sends the requests, and feeds
//! the outcome back through [`Query::on_reply`], [`Query::on_error`] and [`Query::on_cycle`].
//! The walk keeps the JS rules: candidates form a stack (last added is visited first), a reply's
//! closer nodes are taken only while they beat the current k-th best reply, timeouts mark a node
//! DOWN and send DOWN_HINTs to whoever referred us to it, and the walk ends when nothing is
//! pending and nothing (or only slow requests with a full result) is in flight.
//!
//! Bounds the JS code lacks: at most [`MAX_CLOSER_PER_REPLY`] closer nodes are read from one
//! reply, a query remembers at most [`MAX_SEEN`] addresses, and each keeps at most k referrers.

use std::collections::HashMap;
use std::net::SocketAddrV4;

use crate::event::Reply;
use crate::ids::NodeId;
use crate::routing::{RoutingTable, K};

/// Closer nodes read from one reply (a JS node sends at most k = 20).
pub const MAX_CLOSER_PER_REPLY: usize = K;
/// Addresses one query remembers.
pub const MAX_SEEN: usize = 4096;
/// Concurrency after the first batch of a query seeded with cached nodes (`_slowdown`).
const SLOWDOWN_CONCURRENCY: usize = 3;

/// A node to visit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its address.
    pub addr: SocketAddrV4,
    /// Its id (`H(addr)` unless known otherwise).
    pub id: NodeId,
}

impl Candidate {
    /// A candidate whose id is derived from its address.
    pub fn from_addr(addr: SocketAddrV4) -> Candidate {
        Candidate {
            addr,
            id: NodeId::from_addr(&addr),
        }
    }
}

#[derive(Clone, Debug)]
enum Seen {
    /// Pending or in flight; the nodes that referred us to it.
    Refs(Vec<Candidate>),
    /// Answered.
    Done,
    /// Timed out.
    Down,
}

/// A DOWN_HINT to send: tell `to` that `down` did not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownHint {
    /// The node that referred us to the dead one.
    pub to: Candidate,
    /// The dead node.
    pub down: SocketAddrV4,
}

/// What [`Query::read_more`] decided.
#[derive(Debug, Default)]
pub struct ReadMore {
    /// Candidates to send a request to now.
    pub visits: Vec<Candidate>,
    /// The walk is over: commit (if any) or finish.
    pub done: bool,
}

/// One walk.
#[derive(Debug)]
pub struct Query {
    /// The target.
    pub target: NodeId,
    /// Candidates per walk and results kept.
    pub k: usize,
    /// Parallel requests.
    pub concurrency: usize,
    /// Best replies (error 0, with a valid id), closest first.
    pub closest_replies: Vec<Reply>,
    /// Replies without error.
    pub successes: usize,
    /// Error replies and failed requests.
    pub errors: usize,
    /// Requests in flight.
    pub inflight: usize,
    seen: HashMap<SocketAddrV4, Seen>,
    pending: Vec<Candidate>,
    slow: usize,
    slowdown: bool,
    from_table: bool,
    finished: bool,
    own_id: NodeId,
}

impl Query {
    /// A walk towards `target` for a node whose table id is `own_id`.
    pub fn new(target: NodeId, concurrency: usize, own_id: NodeId) -> Query {
        Query {
            target,
            k: K,
            concurrency: concurrency.max(1),
            closest_replies: Vec::new(),
            successes: 0,
            errors: 0,
            inflight: 0,
            seen: HashMap::new(),
            pending: Vec::new(),
            slow: 0,
            slowdown: false,
            from_table: false,
            finished: false,
            own_id,
        }
    }

    /// Seeds the walk with known nodes (the JS `nodes` option), first = visited first.
    pub fn seed(&mut self, nodes: &[Candidate]) {
        for n in nodes.iter().rev() {
            self.add_pending(*n, None);
        }
    }

    /// Tops the candidates up to k from the routing table (`_addFromTable`).
    pub fn add_from_table(&mut self, table: &RoutingTable) {
        if self.pending.len() >= self.k {
            return;
        }
        self.from_table = true;
        let want = self.k - self.pending.len();
        let nodes: Vec<Candidate> = table
            .closest(&self.target, want)
            .into_iter()
            .map(|n| Candidate {
                addr: n.addr,
                id: n.id,
            })
            .collect();
        for n in nodes {
            self.add_pending(n, None);
        }
    }

    /// Whether fewer than k candidates are known (then bootstrap nodes are added).
    pub fn needs_bootstrap(&self) -> bool {
        self.pending.len() < self.k
    }

    /// Adds bootstrap nodes as candidates.
    pub fn add_bootstrap(&mut self, nodes: &[SocketAddrV4]) {
        for a in nodes {
            self.add_pending(Candidate::from_addr(*a), None);
        }
    }

    fn is_closer(&self, id: &NodeId) -> bool {
        self.closest_replies.len() < self.k
            || self.closest_replies.last().is_some_and(|last| {
                let last_id = last.id.unwrap_or_default();
                self.target.cmp_distance(id, &last_id).is_lt()
            })
    }

    /// `_addPending`: returns whether `node` is closer than the k-th best reply. Hints to send
    /// about DOWN nodes are appended to `hints`.
    fn add_pending_hint(
        &mut self,
        node: Candidate,
        referrer: Option<Candidate>,
        hints: &mut Vec<DownHint>,
    ) -> bool {
        let closer = self.is_closer(&node.id);
        match self.seen.get_mut(&node.addr) {
            Some(Seen::Done) => return closer,
            Some(Seen::Down) => {
                if let Some(r) = referrer {
                    hints.push(DownHint {
                        to: r,
                        down: node.addr,
                    });
                }
                return closer;
            }
            Some(Seen::Refs(refs)) => {
                if let Some(r) = referrer {
                    if refs.len() < K {
                        refs.push(r);
                    }
                }
                return closer;
            }
            None => {}
        }
        if !closer || self.seen.len() >= MAX_SEEN {
            return false;
        }
        self.seen
            .insert(node.addr, Seen::Refs(referrer.into_iter().collect()));
        self.pending.push(node);
        true
    }

    fn add_pending(&mut self, node: Candidate, referrer: Option<Candidate>) -> bool {
        let mut hints = Vec::new();
        self.add_pending_hint(node, referrer, &mut hints)
    }

    /// `_readMore`: which candidates to visit now, and whether the walk is over. `table` is used
    /// once to retry from the routing table when a walk seeded with cached nodes went badly.
    pub fn read_more(&mut self, table: &RoutingTable) -> ReadMore {
        let mut out = ReadMore::default();
        if self.finished {
            return out;
        }
        loop {
            let limit = if self.slowdown {
                SLOWDOWN_CONCURRENCY
            } else {
                self.concurrency
            } + self.slow;
            while self.inflight < limit {
                let Some(next) = self.pending.pop() else {
                    break;
                };
                if !self.is_closer(&next.id) {
                    continue;
                }
                self.inflight += 1;
                out.visits.push(next);
            }
            if !self.from_table && self.successes == 0 && self.errors == 0 {
                self.slowdown = true;
            }
            if !self.pending.is_empty() {
                return out;
            }
            if self.inflight == 0
                || (self.slow == self.inflight && self.closest_replies.len() >= self.k)
            {
                if !self.from_table && self.successes < self.k / 4 {
                    self.add_from_table(table);
                    self.from_table = true;
                    continue;
                }
                self.finished = true;
                out.done = true;
            }
            return out;
        }
    }

    /// A visit got a reply. `went_slow` is whether [`Query::on_cycle`] was called for it.
    /// Returns the DOWN_HINTs to send.
    pub fn on_reply(
        &mut self,
        reply: &Reply,
        went_slow: bool,
        accept: impl Fn(&SocketAddrV4) -> bool,
    ) -> Vec<DownHint> {
        self.dec(went_slow);
        self.seen.insert(reply.from, Seen::Done);
        let mut hints = Vec::new();
        if self.finished {
            return hints;
        }
        if reply.error == 0 {
            self.successes += 1;
        } else {
            self.errors += 1;
        }
        if reply.error == 0 {
            if let Some(id) = reply.id {
                if self.is_closer(&id) {
                    self.push_closest(reply.clone());
                }
            }
        }
        let referrer = Candidate {
            addr: reply.from,
            id: reply.id.unwrap_or_else(|| NodeId::from_addr(&reply.from)),
        };
        for addr in reply.closer_nodes.iter().take(MAX_CLOSER_PER_REPLY) {
            let node = Candidate::from_addr(*addr);
            if !accept(addr) || node.id == self.own_id {
                continue;
            }
            if !self.add_pending_hint(node, Some(referrer), &mut hints) {
                break;
            }
        }
        if !self.from_table && self.successes + self.errors >= self.concurrency {
            self.slowdown = false;
        }
        hints
    }

    /// A visit failed (`timeout`: after all retries). Returns the DOWN_HINTs to send.
    pub fn on_error(&mut self, to: SocketAddrV4, timeout: bool, went_slow: bool) -> Vec<DownHint> {
        let mut hints = Vec::new();
        if timeout {
            if let Some(Seen::Refs(refs)) = self.seen.insert(to, Seen::Down) {
                hints.extend(refs.into_iter().map(|r| DownHint { to: r, down: to }));
            }
        }
        self.dec(went_slow);
        self.errors += 1;
        hints
    }

    /// A visit's first timeout cycle: it counts as slow and frees one more slot.
    pub fn on_cycle(&mut self) {
        self.slow += 1;
    }

    fn dec(&mut self, went_slow: bool) {
        if went_slow {
            self.slow = self.slow.saturating_sub(1);
        }
        self.inflight = self.inflight.saturating_sub(1);
    }

    fn push_closest(&mut self, reply: Reply) {
        let id = reply.id.unwrap_or_default();
        let pos = self.closest_replies.partition_point(|r| {
            self.target
                .cmp_distance(&r.id.unwrap_or_default(), &id)
                .is_lt()
        });
        if self
            .closest_replies
            .get(pos)
            .is_some_and(|r| r.id == Some(id))
        {
            // Same node again (rare): keep the newer reply.
            self.closest_replies[pos] = reply;
            return;
        }
        self.closest_replies.insert(pos, reply);
        self.closest_replies.truncate(self.k);
    }

    /// Whether the walk is over.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn reply(addr: SocketAddrV4, closer: Vec<SocketAddrV4>) -> Reply {
        Reply {
            tid: 0,
            from: addr,
            id: Some(NodeId::from_addr(&addr)),
            to: "1.1.1.1:1".parse().unwrap(),
            token: None,
            closer_nodes: closer,
            error: 0,
            value: None,
            rtt: Duration::ZERO,
        }
    }

    #[test]
    fn walks_to_the_end() {
        let table = RoutingTable::new(NodeId([9; 32]));
        let mut q = Query::new(NodeId([0; 32]), 10, NodeId([9; 32]));
        let a: SocketAddrV4 = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddrV4 = "10.0.0.2:1".parse().unwrap();
        q.add_bootstrap(&[a]);
        let r = q.read_more(&table);
        assert_eq!(r.visits.len(), 1);
        assert!(!r.done);
        q.on_reply(&reply(a, vec![b]), false, |_| true);
        let r = q.read_more(&table);
        assert_eq!(r.visits, vec![Candidate::from_addr(b)]);
        let hints = q.on_error(b, true, false);
        assert_eq!(
            hints,
            vec![DownHint {
                to: Candidate::from_addr(a),
                down: b
            }]
        );
        let r = q.read_more(&table);
        assert!(r.done);
        assert_eq!(q.closest_replies.len(), 1);
    }
}
