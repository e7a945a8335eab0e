//! Dialling (hyperswarm `_enqueue`, `_requeue`, `_attemptClientConnections`, `_connect`): the
//! queue is served while fewer than `max_parallel` dials run and the swarm has room; a
//! connection that ends puts its peer in a retry timer; flushes count the dials they wait for.

use core::time::Duration;

use crate::ids::ConnId;
use crate::node::{ConnectOptions, Node};
use crate::time::Timestamp;

use super::gate::Refusal;
use super::{DropReason, Swarm, SwarmConn, SwarmEvent};

/// Explicit peers are tried at most this often in a row (JS `peerInfo.attempts >= 5`).
const MAX_EXPLICIT_ATTEMPTS: u32 = 5;
/// An explicit peer waits this long per attempt since its last disconnect (JS
/// `attempts * 1000`).
const EXPLICIT_WAIT_PER_ATTEMPT: Duration = Duration::from_secs(1);

impl Swarm {
    /// Queues a peer for dialling (JS `_enqueue`).
    pub(super) fn enqueue(&mut self, now: Timestamp, node: &mut Node, key: [u8; 32]) {
        let tick = self.flush_tick;
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.queued {
            return;
        }
        p.queued = true;
        p.flush_tick = tick;
        self.queue.push(key, p.priority);
        self.attempt_client_connections(now, node);
    }

    /// Peers whose retry wait ended (JS `_requeue`).
    pub(super) fn requeue(&mut self, now: Timestamp, node: &mut Node, keys: Vec<[u8; 32]>) {
        let tick = self.flush_tick;
        for key in keys {
            let connected = self.by_key.contains_key(&key);
            let Some(p) = self.peers.get_mut(&key) else {
                continue;
            };
            p.waiting = false;
            tracing::trace!(peer = %crate::crypto::to_hex(&key), connected, "swarm retry due");
            if connected && !p.queued && p.update_priority() {
                p.retry_after_close = true;
                continue;
            }
            if !p.update_priority() || connected || p.queued {
                // JS keeps such a peer until something else forgets it; here it goes now.
                self.maybe_forget_peer(&key);
                continue;
            }
            p.queued = true;
            p.flush_tick = tick;
            self.queue.push(key, p.priority);
        }
        self.attempt_client_connections(now, node);
    }

    /// JS `_withinMaxPeers`: explicit peers make every connection count more.
    fn within_max_peers(&self) -> bool {
        let factor = match self.explicit.len() {
            0 => 1,
            1 => 2,
            2 | 3 => 3,
            _ => 4,
        };
        factor * self.by_key.len() < self.config.max_peers
    }

    fn should_connect(&self) -> bool {
        !self.destroyed
            && self.connecting < self.config.max_parallel
            && self.within_max_peers()
            && self.client_connections < self.config.max_client_connections
    }

    /// Whether a peer that disconnected is retried (JS `_shouldRequeue`): explicit ones, and
    /// those found on a topic still joined.
    fn should_requeue(&self, key: &[u8; 32]) -> bool {
        let Some(p) = self.peers.get(key) else {
            return false;
        };
        if p.explicit {
            return true;
        }
        !self.destroyed && p.topics.iter().any(|t| self.discoveries.contains_key(t))
    }

    /// Dials what the queue and the explicit peers allow (JS `_attemptClientConnections`).
    pub(super) fn attempt_client_connections(&mut self, now: Timestamp, node: &mut Node) {
        let explicit: Vec<[u8; 32]> = self.explicit.iter().copied().collect();
        for key in explicit {
            if self.destroyed || self.connecting >= self.config.max_parallel {
                break;
            }
            let Some(p) = self.peers.get(&key) else {
                continue;
            };
            let wait = EXPLICIT_WAIT_PER_ATTEMPT * p.attempts;
            if p.attempts >= MAX_EXPLICIT_ATTEMPTS
                || p.since_disconnect(now).is_some_and(|d| d < wait)
            {
                continue;
            }
            self.connect(now, node, key, false);
        }
        while !self.queue.is_empty() && self.should_connect() {
            let Some(key) = self.queue.shift(&mut self.rng) else {
                break;
            };
            if let Some(p) = self.peers.get_mut(&key) {
                p.queued = false;
            }
            self.connect(now, node, key, true);
        }
        if self.connecting == 0 {
            self.flush_all_maybe();
        }
    }

    /// Dials one peer (JS `_connect`).
    fn connect(&mut self, now: Timestamp, node: &mut Node, key: [u8; 32], queued: bool) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        if p.banned || self.by_key.contains_key(&key) {
            if queued {
                self.flush_maybe(key);
            }
            return;
        }
        let refusal = self.gate.lock().check(&key);
        if let Some(r) = refusal {
            if r == Refusal::Firewall {
                self.stats.refused += 1;
                self.ban_peer(key, DropReason::Firewalled);
            }
            if queued {
                self.flush_maybe(key);
            }
            return;
        }
        let mut options = ConnectOptions::default().with_key_pair(&self.config.key_pair);
        options.relay_addresses = p.relay_addresses.clone();
        let conn = node.connect_with(now, &key, options);
        tracing::debug!(peer = %crate::crypto::to_hex(&key), ?conn, "swarm dialling");
        self.by_key.insert(key, conn);
        self.conns.insert(
            conn,
            SwarmConn {
                remote: key,
                client: true,
                opened: false,
                queued,
            },
        );
        self.stats.client_attempted += 1;
        self.connecting += 1;
        self.client_connections += 1;
        self.update();
    }

    /// A dial opened (JS the `open` handler of `_connect`).
    pub(super) fn on_client_open(&mut self, now: Timestamp, node: &mut Node, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.opened {
            return;
        }
        c.opened = true;
        let (key, queued) = (c.remote, c.queued);
        self.stats.client_opened += 1;
        self.open += 1;
        self.connect_done(now, node);
        let peer = self.peers.get_mut(&key).map(|p| {
            p.on_connected(now);
            p.client = true;
            p.clone()
        });
        if let Some(peer) = peer {
            self.events.push_back(SwarmEvent::Connection { conn, peer });
        }
        if queued {
            self.flush_maybe(key);
        }
        self.update();
    }

    /// A dial finished one way or the other (JS `_connectDone`).
    fn connect_done(&mut self, now: Timestamp, node: &mut Node) {
        self.connecting = self.connecting.saturating_sub(1);
        if self.connecting < self.config.max_parallel {
            self.attempt_client_connections(now, node);
        }
        if self.connecting == 0 {
            self.flush_all_maybe();
        }
    }

    /// A connection of the swarm's failed or closed (JS the `close` handlers).
    pub(super) fn on_conn_gone(&mut self, now: Timestamp, node: &mut Node, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        // JS order: a failed dial's `_connectDone` runs while the dial still holds the key,
        // so it cannot redial the same peer at once.
        if c.client && !c.opened {
            self.connect_done(now, node);
        }
        if self.by_key.get(&c.remote) == Some(&conn) {
            self.by_key.remove(&c.remote);
        }
        if c.opened {
            self.open = self.open.saturating_sub(1);
            self.events.push_back(SwarmEvent::Disconnected {
                conn,
                remote_public_key: c.remote,
            });
        }
        if c.client {
            self.stats.client_closed += 1;
            self.client_connections = self.client_connections.saturating_sub(1);
            if let Some(p) = self.peers.get_mut(&c.remote) {
                p.on_disconnected(now);
            }
            let retry = !self.destroyed && self.should_requeue(&c.remote);
            let waiting = match self.peers.get(&c.remote) {
                Some(p) if retry && !p.waiting => self.retry.add(now, p),
                Some(p) => p.waiting && retry,
                None => false,
            };
            if let Some(p) = self.peers.get_mut(&c.remote) {
                p.waiting = waiting;
            }
            tracing::trace!(peer = %crate::crypto::to_hex(&c.remote), opened = c.opened, retry, waiting, "swarm dial ended");
            self.maybe_forget_peer(&c.remote);
            if !c.opened && c.queued {
                self.flush_maybe(c.remote);
            }
        } else {
            tracing::trace!(peer = %crate::crypto::to_hex(&c.remote), "swarm server connection ended");
            self.server_connections = self.server_connections.saturating_sub(1);
            self.stats.server_closed += 1;
            self.maybe_forget_peer(&c.remote);
        }
        self.retry_held(now, node, c.remote);
        self.attempt_client_connections(now, node);
        self.update();
    }

    /// A peer whose retry waited for its connection to end is queued now (see
    /// `PeerInfo::retry_after_close`).
    fn retry_held(&mut self, now: Timestamp, node: &mut Node, key: [u8; 32]) {
        if self.by_key.contains_key(&key) {
            return;
        }
        let retry = self.should_requeue(&key);
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if !p.retry_after_close {
            return;
        }
        p.retry_after_close = false;
        if retry && p.update_priority() {
            self.enqueue(now, node, key);
        } else {
            self.maybe_forget_peer(&key);
        }
    }

    /// Closes one of the swarm's connections and forgets it at once (its close event from
    /// the node then finds nothing).
    pub(super) fn close_conn(
        &mut self,
        now: Timestamp,
        node: &mut Node,
        conn: ConnId,
        reason: DropReason,
    ) {
        let Some(c) = self.conns.get(&conn).copied() else {
            return;
        };
        if c.client && !c.opened {
            // The node may have opened it already (its `Connected` not handled yet): then
            // the cancel finds nothing and the reset closes it.
            node.cancel_connect(now, conn);
        }
        node.conn(conn).reset(now);
        self.push_dropped(c.remote, Some(conn), reason);
        self.on_conn_gone(now, node, conn);
    }

    /// A queued dial of `key` ended: flushes waiting for it count one less (JS
    /// `_flushMaybe`).
    pub(super) fn flush_maybe(&mut self, key: [u8; 32]) {
        let tick = self.peers.get(&key).map_or(0, |p| p.flush_tick);
        let mut done = Vec::new();
        self.flushes.retain_mut(|f| {
            let Some((missing, flush_tick)) = f.counting.as_mut() else {
                return true;
            };
            if tick > *flush_tick {
                return true;
            }
            *missing = missing.saturating_sub(1);
            if *missing > 0 {
                return true;
            }
            done.push(f.id);
            false
        });
        for flush in done {
            self.events
                .push_back(SwarmEvent::Flushed { flush, ok: true });
        }
    }

    /// Every flush ends when no dial runs and the swarm cannot dial more (JS
    /// `_flushAllMaybe`). Returns whether they ended.
    fn flush_all_maybe(&mut self) -> bool {
        if self.connecting > 0
            || (self.within_max_peers()
                && self.client_connections < self.config.max_client_connections)
        {
            return false;
        }
        for f in std::mem::take(&mut self.flushes).into_iter().rev() {
            self.events.push_back(SwarmEvent::Flushed {
                flush: f.id,
                ok: true,
            });
        }
        true
    }

    /// Moves flushes whose topics are all flushed on to counting dials (JS the body of
    /// `flush()` after `await Promise.all(allFlushed)`).
    pub(super) fn check_flushes(&mut self) {
        if self.flushes.iter().all(|f| f.counting.is_some()) {
            return;
        }
        if !self.discoveries.values().all(|d| d.flushed()) {
            return;
        }
        if self.flush_all_maybe() {
            return;
        }
        let pending = self.by_key.len().saturating_sub(self.open);
        let mut done = Vec::new();
        for f in self.flushes.iter_mut().filter(|f| f.counting.is_none()) {
            if self.queue.is_empty() && pending == 0 {
                done.push(f.id);
            } else {
                f.counting = Some((self.queue.len() + pending, self.flush_tick));
                self.flush_tick += 1;
            }
        }
        self.flushes.retain(|f| !done.contains(&f.id));
        for flush in done {
            self.events
                .push_back(SwarmEvent::Flushed { flush, ok: true });
        }
    }
}
