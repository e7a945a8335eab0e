//! Connections peers open to us (hyperswarm `_handleServerConnection`), and the rule that
//! picks one of two connections to the same peer so that both ends pick the same one.

use crate::ids::ConnId;
use crate::node::Node;
use crate::time::Timestamp;

use super::{DropReason, Swarm, SwarmConn, SwarmEvent};

/// Which of two connections to one peer to keep, when the new one was opened by the peer
/// (hyperswarm's tie-break, run by the side that receives the second connection):
/// - the new one, if the one we have already carried bytes both ways: the peer must have lost
///   it and be reconnecting;
/// - otherwise the one opened by the peer whose public key sorts higher, which both ends
///   compute alike (`b4a.compare(conn.publicKey, conn.remotePublicKey) > 0 ===
///   conn.isInitiator`, where the new connection's `isInitiator` is false).
pub fn keep_new_connection(
    local_public_key: &[u8; 32],
    remote_public_key: &[u8; 32],
    existing_carried_bytes_both_ways: bool,
) -> bool {
    let we_are_expected_initiator = local_public_key > remote_public_key;
    existing_carried_bytes_both_ways || !we_are_expected_initiator
}

impl Swarm {
    /// A connection the server accepted is open. Returns whether the swarm keeps it (the
    /// driver then hands it out with the [`SwarmEvent::Connection`] that follows).
    pub(super) fn on_server_connection(
        &mut self,
        now: Timestamp,
        node: &mut Node,
        conn: ConnId,
        remote: [u8; 32],
    ) -> bool {
        if self.destroyed {
            node.conn(conn).reset(now);
            self.push_dropped(remote, Some(conn), DropReason::Destroyed);
            return false;
        }
        if let Some(&existing) = self.by_key.get(&remote) {
            // JS `existing.rawBytesRead > 0 && existing.rawBytesWritten > 0`: data frames, not
            // the secret-stream headers every established connection exchanged.
            let carried = node
                .conn_info(existing)
                .is_some_and(|i| i.carried_data_both_ways);
            let keep_new = keep_new_connection(&self.public_key(), &remote, carried);
            self.stats.duplicates += 1;
            if !keep_new {
                tracing::debug!(peer = %crate::crypto::to_hex(&remote), "duplicate connection closed (kept ours)");
                // JS `existing.sendKeepAlive()`: the kept connection has carried data from us.
                node.conn(existing).send_keep_alive(now);
                node.conn(conn).reset(now);
                self.push_dropped(remote, Some(conn), DropReason::Duplicate);
                return false;
            }
            tracing::debug!(peer = %crate::crypto::to_hex(&remote), "duplicate connection closed (kept theirs)");
            self.close_conn(now, node, existing, DropReason::Duplicate);
        }
        if self.server_connections >= self.config.max_server_connections {
            self.stats.server_over_limit += 1;
            node.conn(conn).reset(now);
            self.push_dropped(remote, Some(conn), DropReason::TooManyServerConnections);
            return false;
        }
        self.stats.server_opened += 1;
        // JS `_upsertPeer(remotePublicKey, null)`: the relay addresses are forgotten.
        let peer = self.upsert_peer(remote, None, true).map(|p| {
            p.client = false;
            p.clone()
        });
        let Some(peer) = peer else {
            // Our own key: the gate refuses it before a handshake completes.
            node.conn(conn).reset(now);
            return false;
        };
        self.conns.insert(
            conn,
            SwarmConn {
                remote,
                client: false,
                opened: true,
                queued: false,
            },
        );
        self.by_key.insert(remote, conn);
        self.open += 1;
        self.server_connections += 1;
        self.events.push_back(SwarmEvent::Connection { conn, peer });
        self.update();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends of a simultaneous dial keep the connection the higher key opened.
    #[test]
    fn both_ends_keep_the_same_connection() {
        let (low, high) = ([1u8; 32], [2u8; 32]);
        // At `high`: the new connection was opened by `low`; keep our own (opened by `high`).
        assert!(!keep_new_connection(&high, &low, false));
        // At `low`: the new connection was opened by `high`; keep it.
        assert!(keep_new_connection(&low, &high, false));
        // A connection that carried bytes both ways is stale once the peer dials again.
        assert!(keep_new_connection(&high, &low, true));
    }
}
