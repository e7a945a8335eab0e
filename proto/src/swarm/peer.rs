//! What the swarm knows of one remote peer (hyperswarm `lib/peer-info.js`): the topics it was
//! found on, how often it was tried, its dial priority, and whether it is banned, explicit
//! (`join_peer`) or waiting for a retry.

use core::time::Duration;
use std::net::SocketAddrV4;

use crate::time::Timestamp;

/// A connection that lasted this long counts as good: the next dial after it is a fast retry
/// (`MIN_CONNECTION_TIME = 15000`).
pub const MIN_CONNECTION_TIME: Duration = Duration::from_secs(15);

/// Topics remembered per peer (JS keeps them all; a peer found on more is still dialled).
pub const MAX_TOPICS_PER_PEER: usize = 16;

/// How eagerly a queued peer is dialled (`VERY_LOW_PRIORITY` .. `VERY_HIGH_PRIORITY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// More than three failed attempts.
    VeryLow = 0,
    /// Three attempts.
    Low = 1,
    /// Not tried yet.
    Normal = 2,
    /// Two attempts.
    High = 3,
    /// One attempt: retried first.
    VeryHigh = 4,
}

impl Priority {
    /// All priorities, highest first (the order the queue is served in).
    pub const HIGHEST_FIRST: [Priority; 5] = [
        Priority::VeryHigh,
        Priority::High,
        Priority::Normal,
        Priority::Low,
        Priority::VeryLow,
    ];
}

/// One remote peer as the swarm sees it (JS `PeerInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's public key.
    pub public_key: [u8; 32],
    /// The DHT nodes it announced through (the newest lookup's list; `[]` when unknown).
    pub relay_addresses: Vec<SocketAddrV4>,
    /// Topics it was found on, in discovery order (at most [`MAX_TOPICS_PER_PEER`]).
    pub topics: Vec<[u8; 32]>,
    /// Whether its last connection was one we dialled (JS `client`; `!client` is `server`).
    pub client: bool,
    /// Whether it connected at least once since it was last reset (JS `proven`). (JS also
    /// keeps a `tried` flag that nothing in hyperswarm 4.17.2 ever sets; it is left out.)
    pub proven: bool,
    /// Dial attempts since the last reset or good connection.
    pub attempts: u32,
    /// Its place in the dial queue.
    pub priority: Priority,
    /// Refused for good: never dialled, its dials refused (JS `ban`).
    pub banned: bool,
    /// Joined by key ([`Swarm::join_peer`](super::Swarm::join_peer)).
    pub explicit: bool,
    /// Whether to redial it after a disconnect (JS `reconnecting`, on by default).
    pub reconnecting: bool,
    /// Sitting in the dial queue.
    pub queued: bool,
    /// Sitting in a retry timer.
    pub waiting: bool,
    /// A retry came due while a connection to it was still open (the two ends of a
    /// simultaneous dial each closed the other's connection): it is dialled once that
    /// connection ends. JS drops such a retry, and the pair then never reconnects.
    pub(crate) retry_after_close: bool,
    /// When its current connection opened.
    pub(crate) connected_at: Option<Timestamp>,
    /// When its last connection ended (or its last dial failed).
    pub(crate) disconnected_at: Option<Timestamp>,
    /// The flush generation it was queued in (JS `_flushTick`).
    pub(crate) flush_tick: u64,
}

impl PeerInfo {
    /// A peer never seen before.
    pub fn new(public_key: [u8; 32], relay_addresses: Vec<SocketAddrV4>) -> PeerInfo {
        PeerInfo {
            public_key,
            relay_addresses,
            topics: Vec::new(),
            client: false,
            proven: false,
            attempts: 0,
            priority: Priority::Normal,
            banned: false,
            explicit: false,
            reconnecting: true,
            queued: false,
            waiting: false,
            retry_after_close: false,
            connected_at: None,
            disconnected_at: None,
            flush_tick: 0,
        }
    }

    /// Whether it is in the normal or a higher priority (JS `prioritized`).
    pub fn prioritized(&self) -> bool {
        self.priority >= Priority::Normal
    }

    /// JS `_getPriority`.
    fn current_priority(&self) -> Priority {
        if self.attempts > 3 {
            return Priority::VeryLow;
        }
        match self.attempts {
            3 => Priority::Low,
            2 => Priority::High,
            1 => Priority::VeryHigh,
            _ => Priority::Normal,
        }
    }

    /// A connection opened (JS `_connected`).
    pub(crate) fn on_connected(&mut self, now: Timestamp) {
        self.proven = true;
        self.connected_at = Some(now);
    }

    /// A connection ended or a dial failed (JS `_disconnected`): one more attempt, unless the
    /// connection lasted [`MIN_CONNECTION_TIME`] (then the count starts over).
    pub(crate) fn on_disconnected(&mut self, now: Timestamp) {
        self.disconnected_at = Some(now);
        if let Some(opened) = self.connected_at.take() {
            if now.saturating_since(opened) >= MIN_CONNECTION_TIME {
                self.attempts = 0;
            }
        }
        self.attempts = self.attempts.saturating_add(1);
    }

    /// JS `_reset`: found again, so tried afresh.
    pub(crate) fn reset(&mut self) {
        self.client = false;
        self.proven = false;
        self.attempts = 0;
    }

    /// JS `_updatePriority`: whether the peer may be queued, with its priority brought up to
    /// date.
    pub(crate) fn update_priority(&mut self) -> bool {
        if self.explicit && self.attempts > 3 {
            self.attempts = 3; // JS `_deprioritize`
        }
        if self.banned || self.queued || self.attempts > 3 {
            return false;
        }
        self.priority = self.current_priority();
        true
    }

    /// Remembers a topic it was found on (JS `_topic`). Returns whether it was new.
    pub(crate) fn add_topic(&mut self, topic: [u8; 32]) -> bool {
        if self.topics.contains(&topic) || self.topics.len() >= MAX_TOPICS_PER_PEER {
            return false;
        }
        self.topics.push(topic);
        true
    }

    /// Whether nothing holds the peer any more, so it can be forgotten (JS `shouldGC`).
    pub(crate) fn collectable(&self) -> bool {
        !(self.banned || self.queued || self.explicit || self.waiting || self.retry_after_close)
    }

    /// Milliseconds since its last disconnect, if any.
    pub(crate) fn since_disconnect(&self, now: Timestamp) -> Option<Duration> {
        self.disconnected_at.map(|t| now.saturating_since(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_duration(Duration::from_millis(ms))
    }

    #[test]
    fn priorities_follow_attempts_as_in_js() {
        let mut p = PeerInfo::new([1; 32], Vec::new());
        assert!(p.update_priority());
        assert_eq!(p.priority, Priority::Normal);
        p.proven = true;
        for (attempts, want) in [
            (1, Priority::VeryHigh),
            (2, Priority::High),
            (3, Priority::Low),
        ] {
            p.attempts = attempts;
            assert!(p.update_priority());
            assert_eq!(p.priority, want, "{attempts} attempts");
        }
        p.attempts = 4;
        assert!(!p.update_priority(), "more than three attempts: not queued");
        p.attempts = 1;
        p.banned = true;
        assert!(!p.update_priority());
    }

    #[test]
    fn explicit_peers_are_deprioritised_not_dropped() {
        let mut p = PeerInfo::new([1; 32], Vec::new());
        p.explicit = true;
        p.attempts = 7;
        assert!(p.update_priority());
        assert_eq!(p.attempts, 3);
        assert_eq!(p.priority, Priority::Low);
    }

    #[test]
    fn a_long_connection_resets_the_attempts() {
        let mut p = PeerInfo::new([1; 32], Vec::new());
        p.attempts = 2;
        p.on_connected(at(1_000));
        p.on_disconnected(at(16_000));
        assert_eq!(p.attempts, 1, "15 s or more: counted from zero again");
        p.on_connected(at(20_000));
        p.on_disconnected(at(21_000));
        assert_eq!(p.attempts, 2, "a short connection counts as an attempt");
    }

    #[test]
    fn topics_are_bounded() {
        let mut p = PeerInfo::new([1; 32], Vec::new());
        for i in 0..100u8 {
            p.add_topic([i; 32]);
        }
        assert!(!p.add_topic([0; 32]));
        assert_eq!(p.topics.len(), MAX_TOPICS_PER_PEER);
    }
}
