//! The Kademlia routing table (kademlia-routing-table 1.0 as dht-rpc uses it), pure and owned by
//! the node. Time enters only as dht-rpc "ticks" stored in each entry.

mod table;

pub use table::{Insert, RoutingTable, TableNode, K};
