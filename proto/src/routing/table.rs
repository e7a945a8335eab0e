//! k-bucket table: 256 rows by shared-prefix length with our id, k = 20 nodes per row, each row
//! sorted by id (kademlia-routing-table `index.js`), plus the recency order dht-rpc keeps beside
//! it (`time-ordered-set`: oldest heard-from first), which drives `_pingSome` and the firewall
//! probe.
//!
//! `closest` returns the k nodes nearest the target in exact XOR order. (The JS table walks rows
//! `d, d-1 … 0, d+1 …`, which is not XOR order; peers accept either, and exact order gives
//! queries strictly better candidates.)

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use crate::ids::NodeId;
use crate::rng::Rng;

/// Nodes per row, and per query result (`kademlia-routing-table` default k).
pub const K: usize = 20;

const ROWS: usize = 256;

/// One routing table entry, with the bookkeeping dht-rpc keeps on it (times are ticks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableNode {
    /// The node's id (always `H(addr)` for nodes learned from the network).
    pub id: NodeId,
    /// Where it listens.
    pub addr: SocketAddrV4,
    /// Tick it was added.
    pub added: u64,
    /// Tick we last interacted with it (sent it a check, or heard from it).
    pub pinged: u64,
    /// Tick we last heard from it.
    pub seen: u64,
    /// Tick we last sampled our address from what it reported (0 = never).
    pub sampled: u64,
    /// DOWN_HINTs received about it.
    pub down_hints: u32,
    /// Our address as this node last reported it.
    pub to: Option<SocketAddrV4>,
    /// Position in the recency order.
    seq: u64,
}

impl TableNode {
    /// A fresh entry for a node at `addr` with id `id`, first seen at `tick`.
    #[cfg_attr(not(feature = "unstable"), doc(hidden))]
    pub fn new(id: NodeId, addr: SocketAddrV4, tick: u64) -> TableNode {
        TableNode {
            id,
            addr,
            added: tick,
            pinged: tick,
            seen: tick,
            sampled: 0,
            down_hints: 0,
            to: None,
            seq: 0,
        }
    }
}

/// The outcome of [`RoutingTable::insert`].
#[derive(Debug, PartialEq, Eq)]
pub enum Insert {
    /// The node was added.
    Added,
    /// The node was already present; its entry was replaced.
    Replaced,
    /// Its row holds k nodes already; nothing changed. The row index is given so the caller can
    /// run the ping-and-swap rule.
    Full(usize),
    /// The node has our own id and is never stored.
    OwnId,
}

/// The routing table.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    id: NodeId,
    rows: Vec<Vec<TableNode>>,
    recency: BTreeMap<u64, NodeId>,
    next_seq: u64,
    len: usize,
}

impl RoutingTable {
    /// An empty table around our id.
    #[cfg_attr(not(feature = "unstable"), doc(hidden))]
    pub fn new(id: NodeId) -> RoutingTable {
        RoutingTable {
            id,
            rows: vec![Vec::new(); ROWS],
            recency: BTreeMap::new(),
            next_seq: 0,
            len: 0,
        }
    }

    /// Our id: the table's centre.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The row a node id belongs in (its shared-prefix length with our id; 255 at most).
    pub fn row_index(&self, id: &NodeId) -> usize {
        self.id.common_prefix_len(id).min(ROWS - 1)
    }

    /// The nodes of row `i`, sorted by id.
    pub fn row(&self, i: usize) -> &[TableNode] {
        self.rows.get(i).map_or(&[], |r| r.as_slice())
    }

    fn find(&self, id: &NodeId) -> (usize, Result<usize, usize>) {
        let r = self.row_index(id);
        (r, self.rows[r].binary_search_by(|n| n.id.cmp(id)))
    }

    /// The entry for `id`.
    pub fn get(&self, id: &NodeId) -> Option<&TableNode> {
        let (r, pos) = self.find(id);
        pos.ok().map(|i| &self.rows[r][i])
    }

    /// The entry for `id`, mutably (the recency order is not changed; see [`RoutingTable::touch`]).
    #[cfg_attr(not(feature = "unstable"), doc(hidden))]
    pub fn get_mut(&mut self, id: &NodeId) -> Option<&mut TableNode> {
        let (r, pos) = self.find(id);
        pos.ok().map(move |i| &mut self.rows[r][i])
    }

    /// Whether `id` is in the table.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    /// Adds `node` (as most recently heard from), replaces its entry if present, or reports a
    /// full row.
    #[cfg_attr(not(feature = "unstable"), doc(hidden))]
    pub fn insert(&mut self, mut node: TableNode) -> Insert {
        if node.id == self.id {
            return Insert::OwnId;
        }
        let (r, pos) = self.find(&node.id);
        let seq = self.next_seq;
        self.next_seq += 1;
        match pos {
            Ok(i) => {
                let old = self.rows[r][i].seq;
                self.recency.remove(&old);
                node.seq = seq;
                self.recency.insert(seq, node.id);
                self.rows[r][i] = node;
                Insert::Replaced
            }
            Err(i) => {
                if self.rows[r].len() >= K {
                    return Insert::Full(r);
                }
                node.seq = seq;
                self.recency.insert(seq, node.id);
                self.rows[r].insert(i, node);
                self.len += 1;
                Insert::Added
            }
        }
    }

    /// Removes `id`, returning its entry.
    #[cfg_attr(not(feature = "unstable"), doc(hidden))]
    pub fn remove(&mut self, id: &NodeId) -> Option<TableNode> {
        let (r, pos) = self.find(id);
        let i = pos.ok()?;
        let node = self.rows[r].remove(i);
        self.recency.remove(&node.seq);
        self.len -= 1;
        Some(node)
    }

    /// Moves `id` to the most-recently-heard end of the recency order.
    #[cfg_attr(not(feature = "unstable"), doc(hidden))]
    pub fn touch(&mut self, id: &NodeId) {
        let seq = self.next_seq;
        let (r, pos) = self.find(id);
        if let Ok(i) = pos {
            self.next_seq += 1;
            let n = &mut self.rows[r][i];
            self.recency.remove(&n.seq);
            n.seq = seq;
            self.recency.insert(seq, n.id);
        }
    }

    /// Node ids from least to most recently heard from.
    pub fn oldest_first(&self) -> impl DoubleEndedIterator<Item = &NodeId> + '_ {
        self.recency.values()
    }

    /// Node ids from most to least recently heard from.
    pub fn latest_first(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.recency.values().rev()
    }

    /// Every node, row by row.
    pub fn iter(&self) -> impl Iterator<Item = &TableNode> + '_ {
        self.rows.iter().flatten()
    }

    /// Up to `k` nodes closest to `target`, in exact XOR order.
    pub fn closest(&self, target: &NodeId, k: usize) -> Vec<&TableNode> {
        let mut out = Vec::with_capacity(k.min(self.len));
        self.for_each_closest(target, k, |n| out.push(n));
        out
    }

    /// Calls `f` with up to `k` nodes closest to `target`, closest first, without allocating
    /// for tables of ordinary size (the FIND_NODE reply path).
    ///
    /// Row `d` (the target's row) shares more than `d` bits with the target, the rows above
    /// `d` exactly `d`, each row below fewer: the groups are taken in that order and only the
    /// nodes inside a group need sorting.
    pub fn for_each_closest<'a>(
        &'a self,
        target: &NodeId,
        k: usize,
        mut f: impl FnMut(&'a TableNode),
    ) {
        let d = self.row_index(target);
        let mut left = k;
        left -= emit_closest(target, self.rows[d].iter(), left, &mut f);
        if left > 0 {
            left -= emit_closest(target, self.rows[d + 1..].iter().flatten(), left, &mut f);
        }
        for i in (0..d).rev() {
            if left == 0 {
                break;
            }
            left -= emit_closest(target, self.rows[i].iter(), left, &mut f);
        }
    }

    /// A uniformly random node.
    #[cfg_attr(not(feature = "unstable"), doc(hidden))]
    pub fn random(&self, rng: &mut Rng) -> Option<&TableNode> {
        if self.len == 0 {
            return None;
        }
        let mut n = rng.below(self.len as u64) as usize;
        for row in &self.rows {
            if n < row.len() {
                return Some(&row[n]);
            }
            n -= row.len();
        }
        None
    }

    /// Re-centres the table on `id` (when the node becomes persistent), keeping the recency
    /// order. Returns the nodes that no longer fit (or that have the new id).
    #[cfg_attr(not(feature = "unstable"), doc(hidden))]
    pub fn recentre(&mut self, id: NodeId) -> Vec<TableNode> {
        let old = core::mem::replace(self, RoutingTable::new(id));
        let mut nodes: Vec<TableNode> = old.rows.into_iter().flatten().collect();
        nodes.sort_by_key(|n| n.seq);
        let mut dropped = Vec::new();
        for n in nodes {
            if n.id == id {
                dropped.push(n);
                continue;
            }
            match self.insert(n.clone()) {
                Insert::Added | Insert::Replaced => {}
                Insert::Full(_) | Insert::OwnId => dropped.push(n),
            }
        }
        dropped
    }
}

/// The first 16 bytes of the XOR distance, as a number: orders almost every pair.
fn distance_key(target: &NodeId, id: &NodeId) -> u128 {
    let mut b = [0u8; 16];
    for (i, x) in b.iter_mut().enumerate() {
        *x = target.0[i] ^ id.0[i];
    }
    u128::from_be_bytes(b)
}

/// Sorts one group by distance and hands at most `room` of its nodes to `f`; returns how many.
fn emit_closest<'a>(
    target: &NodeId,
    group: impl Iterator<Item = &'a TableNode>,
    room: usize,
    f: &mut impl FnMut(&'a TableNode),
) -> usize {
    if room == 0 {
        return 0;
    }
    let mut buf: smallvec::SmallVec<[(u128, &TableNode); 64]> =
        group.map(|n| (distance_key(target, &n.id), n)).collect();
    let cmp = |a: &(u128, &TableNode), b: &(u128, &TableNode)| {
        a.0.cmp(&b.0)
            .then_with(|| target.cmp_distance(&a.1.id, &b.1.id))
    };
    if buf.len() > room {
        buf.select_nth_unstable_by(room - 1, cmp);
        buf.truncate(room);
    }
    buf.sort_unstable_by(cmp);
    for (_, n) in &buf {
        f(n);
    }
    buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8, rest: u8) -> TableNode {
        let mut id = [rest; 32];
        id[0] = b;
        TableNode::new(NodeId(id), SocketAddrV4::new([10, 0, 0, b].into(), 1), 0)
    }

    #[test]
    fn insert_get_remove() {
        let mut t = RoutingTable::new(NodeId([0; 32]));
        assert_eq!(t.insert(node(0x80, 0)), Insert::Added);
        assert_eq!(t.insert(node(0x80, 0)), Insert::Replaced);
        assert_eq!(
            t.insert(TableNode::new(
                NodeId([0; 32]),
                "1.1.1.1:1".parse().unwrap(),
                0
            )),
            Insert::OwnId
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.row_index(&node(0x80, 0).id), 0);
        assert!(t.remove(&node(0x80, 0).id).is_some());
        assert!(t.is_empty());
    }

    #[test]
    fn full_row() {
        let mut t = RoutingTable::new(NodeId([0; 32]));
        for i in 0..K as u8 {
            assert_eq!(t.insert(node(0x80, i)), Insert::Added);
        }
        assert_eq!(t.insert(node(0x80, 200)), Insert::Full(0));
        assert_eq!(t.len(), K);
    }

    #[test]
    fn recency_order() {
        let mut t = RoutingTable::new(NodeId([0; 32]));
        t.insert(node(1, 0));
        t.insert(node(2, 0));
        t.insert(node(3, 0));
        t.touch(&node(1, 0).id);
        let order: Vec<u8> = t.oldest_first().map(|id| id.0[0]).collect();
        assert_eq!(order, vec![2, 3, 1]);
    }
}
