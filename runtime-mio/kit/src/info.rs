//! What calls answer with: [`NodeInfo`] (a snapshot of a node) and [`QueryOutcome`] (what a
//! query found), with the choices both drivers make from an outcome
//! ([`QueryOutcome::highest_mutable`], [`QueryOutcome::first_immutable`]).

use std::net::{SocketAddr, SocketAddrV4};

use hyperdht_proto::{MutableRecord, Node, NodeId, Record, Reply, SocketId, Stats};

/// A snapshot of the node's state.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeInfo {
    /// Our id as others see it (`None` while ephemeral).
    pub id: Option<NodeId>,
    /// The routing table's centre.
    pub table_id: NodeId,
    /// Whether the node is ephemeral.
    pub ephemeral: bool,
    /// Whether the node believes it is firewalled.
    pub firewalled: bool,
    /// Whether bootstrap finished.
    pub bootstrapped: bool,
    /// The server socket's local address.
    pub server_addr: Option<SocketAddr>,
    /// The client socket's local address.
    pub client_addr: Option<SocketAddr>,
    /// The routing table's nodes.
    pub table: Vec<(NodeId, SocketAddrV4)>,
    /// Connections the node holds: opening, open, or closed and not yet forgotten (the driver
    /// forgets a closed one once its handle is gone or has read everything).
    pub connections: usize,
    /// Counters.
    pub stats: Stats,
}

impl NodeInfo {
    /// The snapshot of `node`.
    pub fn of(node: &Node) -> NodeInfo {
        NodeInfo {
            id: node.id(),
            table_id: *node.table().id(),
            ephemeral: node.is_ephemeral(),
            firewalled: node.is_firewalled(),
            bootstrapped: node.is_bootstrapped(),
            server_addr: node.local_addr(SocketId::SERVER),
            client_addr: node.local_addr(SocketId::CLIENT),
            table: node.table().iter().map(|t| (t.id, t.addr)).collect(),
            connections: node.connection_count(),
            stats: node.stats(),
        }
    }
}

/// The result of a query: every reply without error, the records found, the commit replies,
/// and the closest nodes.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct QueryOutcome {
    /// Replies in arrival order.
    pub replies: Vec<Reply>,
    /// Valid records found (record queries), with the node that stored each.
    pub records: Vec<(SocketAddrV4, Record)>,
    /// Replies to commit requests (announce, unannounce, puts).
    pub commits: Vec<Reply>,
    /// The k closest replies, closest first.
    pub closest: Vec<Reply>,
}

impl QueryOutcome {
    /// The highest-seq mutable record found (each was checked against its signature and the
    /// asked minimum seq by the node); the first found among equal seqs.
    pub fn highest_mutable(self) -> Option<MutableRecord> {
        self.records
            .into_iter()
            .filter_map(|(_, r)| match r {
                Record::Mutable(m) => Some(m),
                _ => None,
            })
            .reduce(|best, m| if m.seq > best.seq { m } else { best })
    }

    /// The first immutable value found (each was checked against its hash by the node).
    pub fn first_immutable(self) -> Option<Vec<u8>> {
        self.records.into_iter().find_map(|(_, r)| match r {
            Record::Immutable(v) => Some(v),
            _ => None,
        })
    }
}
