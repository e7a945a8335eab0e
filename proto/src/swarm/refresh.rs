//! Running topic refreshes on the node (hyperswarm `PeerDiscovery._refresh`): the swarm's
//! server, announces, lookups and the unannounce of a topic left, and the peers they find.

use std::sync::Arc;

use crate::ids::QueryId;
use crate::node::{Node, ServerConfig};
use crate::time::Timestamp;
use crate::wire::hyperdht::Peer;

use super::discovery::{Discovery, RefreshQuery};
use super::{QueryOwner, Swarm, SwarmEvent, MAX_PEERS_PER_REPLY};
use crate::error::ApiError;

impl Swarm {
    /// Starts the swarm's server if it is not running (JS `swarm.listen()`): the key pair
    /// listens, behind the swarm's gate.
    pub(super) fn listen(&mut self, now: Timestamp, node: &mut Node) -> Result<(), ApiError> {
        if self.server.is_some() {
            return Ok(());
        }
        let gate = self.gate.clone();
        let accept: crate::node::AcceptPolicy =
            Arc::new(move |hs| gate.lock().check_incoming(&hs.remote_public_key));
        let config = ServerConfig {
            accept: Some(accept),
            ..ServerConfig::default()
        };
        let server = node.listen(now, &self.config.key_pair, config)?;
        self.server = Some(server);
        Ok(())
    }

    /// Starts a refresh of `topic` unless one with the same roles is under way (JS
    /// `PeerDiscovery.refresh`).
    pub(super) fn start_refresh(&mut self, now: Timestamp, node: &mut Node, topic: [u8; 32]) {
        let leaving = self
            .queries
            .values()
            .any(|q| *q == QueryOwner::Leave(topic));
        let Some(d) = self.discoveries.get_mut(&topic) else {
            return;
        };
        let same_roles = d.wanted == d.running;
        if same_roles && d.refreshing() {
            return;
        }
        if !same_roles {
            // The running query was for other roles: its results no longer count.
            if let Some((q, _)) = d.query.take() {
                self.queries.remove(&q);
            }
            d.running = d.wanted;
        }
        d.refresh_timer = None;
        if leaving {
            // The unannounce of an earlier join of this topic goes first (JS `wait`).
            d.waiting_for_listen = true;
            return;
        }
        if d.running.server && !self.listening {
            d.waiting_for_listen = true;
            return;
        }
        self.run_refresh_query(now, node, topic);
    }

    /// Sends a topic's refresh query.
    fn run_refresh_query(&mut self, now: Timestamp, node: &mut Node, topic: [u8; 32]) {
        let relay_addresses = self
            .server
            .map(|s| node.server_relay_addresses(s))
            .unwrap_or_default();
        let Some(d) = self.discoveries.get_mut(&topic) else {
            return;
        };
        d.waiting_for_listen = false;
        let kind = d.next_query();
        let key = &self.config.key_pair;
        let q = match kind {
            RefreshQuery::Announce => {
                d.needs_unannounce = true;
                node.announce(now, &topic, key, relay_addresses, 0)
            }
            RefreshQuery::LookupAndUnannounce => node.unannounce(now, &topic, key),
            RefreshQuery::Lookup => node.lookup(now, &topic),
        };
        tracing::trace!(topic = %crate::crypto::to_hex(&topic), ?kind, "topic refresh");
        d.query = Some((q, kind));
        self.queries.insert(q, QueryOwner::Refresh(topic));
    }

    /// Forgets the query of a discovery that is going away.
    pub(super) fn abandon_query(&mut self, d: &Discovery) {
        if let Some((q, _)) = d.query {
            self.queries.remove(&q);
        }
    }

    /// The server finished its first announce: server refreshes waiting for it go.
    pub(super) fn on_listening(&mut self, now: Timestamp, node: &mut Node) {
        self.listening = true;
        let waiting: Vec<[u8; 32]> = self
            .discoveries
            .iter()
            .filter(|(_, d)| d.waiting_for_listen)
            .map(|(t, _)| *t)
            .collect();
        for topic in waiting {
            self.run_refresh_query(now, node, topic);
        }
    }

    /// The unannounce of a topic left finished: a join of the same topic since may refresh.
    pub(super) fn on_leave_done(&mut self, now: Timestamp, node: &mut Node, topic: [u8; 32]) {
        let waiting = self
            .discoveries
            .get(&topic)
            .is_some_and(|d| d.waiting_for_listen && d.query.is_none());
        if waiting && (self.listening || !self.discoveries[&topic].running.server) {
            self.run_refresh_query(now, node, topic);
        }
        self.check_destroyed();
    }

    /// A lookup reply of a refresh listed `peers` (JS `for (const peer of data.peers)`).
    pub(super) fn on_lookup_peers(
        &mut self,
        now: Timestamp,
        node: &mut Node,
        topic: [u8; 32],
        query: QueryId,
        peers: &[Peer],
    ) {
        let Some(d) = self.discoveries.get(&topic) else {
            return;
        };
        if d.query.map(|(q, _)| q) != Some(query) || !d.running.client || self.destroyed {
            return;
        }
        if peers.len() > MAX_PEERS_PER_REPLY {
            self.stats.peers_cut += (peers.len() - MAX_PEERS_PER_REPLY) as u64;
        }
        for peer in peers.iter().take(MAX_PEERS_PER_REPLY) {
            self.on_peer(now, node, peer, topic);
        }
    }

    /// A peer found on `topic` (JS `_handlePeer`): new peers are queued, known ones that fell
    /// to a low priority (or whose last connection was theirs) start over.
    fn on_peer(&mut self, now: Timestamp, node: &mut Node, peer: &Peer, topic: [u8; 32]) {
        let key = peer.public_key;
        let connected = self.by_key.contains_key(&key);
        let Some(info) = self.upsert_peer(key, Some(&peer.relay_addresses), false) else {
            return;
        };
        info.add_topic(topic);
        if connected {
            return;
        }
        if !info.prioritized() || !info.client {
            info.reset();
        }
        if info.update_priority() {
            self.enqueue(now, node, key);
        }
    }

    /// A refresh's query ended (JS the end of `_refresh`): the next one is due in 10-12
    /// minutes, and the topic is flushed.
    pub(super) fn on_refresh_done(
        &mut self,
        now: Timestamp,
        node: &mut Node,
        topic: [u8; 32],
        query: QueryId,
        ok: bool,
    ) {
        let _ = node;
        let Some(d) = self.discoveries.get_mut(&topic) else {
            return;
        };
        let Some((q, kind)) = d.query else {
            return;
        };
        if q != query {
            return;
        }
        d.query = None;
        d.refreshes_done += 1;
        if !self.destroyed {
            d.refresh_later(now, false, &mut self.rng);
        }
        if ok && kind != RefreshQuery::Announce {
            d.needs_unannounce = false;
        }
        if !ok {
            tracing::debug!(topic = %crate::crypto::to_hex(&topic), "topic refresh failed");
        }
        self.events
            .push_back(SwarmEvent::TopicFlushed { topic, ok });
    }
}
