//! One joined topic (hyperswarm `lib/peer-discovery.js`): whether we announce it (server),
//! look it up (client) or both, the DHT query of the refresh under way, and when the next
//! refresh is due. The swarm runs the queries on the node; this module keeps the schedule.

use core::time::Duration;

use crate::ids::QueryId;
use crate::rng::Rng;
use crate::time::Timestamp;

/// `REFRESH_INTERVAL = 10 min`: a topic is announced and looked up again this long after the
/// last refresh ended, plus up to [`RANDOM_JITTER`].
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// `RANDOM_JITTER = 2 min`.
pub const RANDOM_JITTER: Duration = Duration::from_secs(120);
/// `DELAY_GRACE_PERIOD = 30 s`: a refresh timer this late (the machine slept) refreshes after
/// a short random wait instead of at once.
pub const DELAY_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// How a topic is joined (JS `swarm.join(topic, { server, client })`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinOptions {
    /// Announce the topic and accept connections from peers that find us (default on).
    pub server: bool,
    /// Look the topic up and dial the peers found (default on).
    pub client: bool,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            server: true,
            client: true,
        }
    }
}

impl JoinOptions {
    /// Announce only (JS `{ server: true, client: false }`).
    pub fn server_only() -> JoinOptions {
        JoinOptions {
            server: true,
            client: false,
        }
    }

    /// Look up only (JS `{ server: false, client: true }`).
    pub fn client_only() -> JoinOptions {
        JoinOptions {
            server: false,
            client: true,
        }
    }
}

/// What kind of query a refresh runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshQuery {
    /// `dht.announce(topic, keyPair, relayAddresses)`.
    Announce,
    /// `dht.lookupAndUnannounce(topic, keyPair)`: we announced before and are client-only now.
    LookupAndUnannounce,
    /// `dht.lookup(topic)`.
    Lookup,
}

/// The state of one joined topic.
#[derive(Debug)]
pub struct Discovery {
    /// What the application asked for.
    pub wanted: JoinOptions,
    /// What the refresh under way (or the last one) does.
    pub running: JoinOptions,
    /// The refresh's query, while it runs.
    pub query: Option<(QueryId, RefreshQuery)>,
    /// A server refresh waits for the swarm's server to finish its first announce.
    pub waiting_for_listen: bool,
    /// We announced and must unannounce on leave (JS `_needsUnannounce`).
    pub needs_unannounce: bool,
    /// When the next refresh is due, and when that wait started and how long it was.
    pub refresh_timer: Option<(Timestamp, Timestamp, Duration)>,
    /// Refreshes that finished.
    pub refreshes_done: u64,
}

impl Discovery {
    /// A topic just joined; its first refresh starts at once.
    pub fn new(wanted: JoinOptions) -> Discovery {
        Discovery {
            wanted,
            running: wanted,
            query: None,
            waiting_for_listen: false,
            needs_unannounce: false,
            refresh_timer: None,
            refreshes_done: 0,
        }
    }

    /// Whether a refresh is under way (JS `_currentRefresh`).
    pub fn refreshing(&self) -> bool {
        self.query.is_some() || self.waiting_for_listen
    }

    /// Whether the topic is flushed (JS `discovery.flushed()` resolved): no refresh is under
    /// way and one has finished.
    pub fn flushed(&self) -> bool {
        !self.refreshing() && self.refreshes_done > 0
    }

    /// The query the next refresh runs (JS `_refresh`).
    pub fn next_query(&self) -> RefreshQuery {
        if self.running.server {
            RefreshQuery::Announce
        } else if self.needs_unannounce {
            RefreshQuery::LookupAndUnannounce
        } else {
            RefreshQuery::Lookup
        }
    }

    /// Arms the refresh timer (JS `_refreshLater(eager)`): the full interval plus jitter, or
    /// (eager) the jitter alone.
    pub fn refresh_later(&mut self, now: Timestamp, eager: bool, rng: &mut Rng) {
        let jitter =
            Duration::from_millis((rng.unit() * RANDOM_JITTER.as_millis() as f64).round() as u64);
        let delay = if eager {
            jitter
        } else {
            REFRESH_INTERVAL + jitter
        };
        self.refresh_timer = Some((now + delay, now, delay));
    }

    /// A due refresh timer: `true` if the refresh should run now, `false` if the timer was
    /// re-armed because it fired far too late (the machine slept).
    pub fn on_refresh_timer(&mut self, now: Timestamp, rng: &mut Rng) -> bool {
        let Some((_, started, delay)) = self.refresh_timer.take() else {
            return false;
        };
        if now.saturating_since(started) > delay + DELAY_GRACE_PERIOD {
            self.refresh_later(now, true, rng);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::from_duration(Duration::from_secs(s))
    }

    #[test]
    fn refreshes_every_ten_to_twelve_minutes() {
        let mut rng = Rng::from_seed([1; 32]);
        let mut d = Discovery::new(JoinOptions::default());
        d.refresh_later(at(0), false, &mut rng);
        let (due, _, _) = d.refresh_timer.unwrap();
        assert!(due >= at(600) && due <= at(720), "{due:?}");
        assert!(d.on_refresh_timer(due, &mut rng));
    }

    #[test]
    fn a_timer_that_fires_after_a_sleep_waits_a_little_first() {
        let mut rng = Rng::from_seed([1; 32]);
        let mut d = Discovery::new(JoinOptions::default());
        d.refresh_later(at(0), false, &mut rng);
        assert!(!d.on_refresh_timer(at(3600), &mut rng));
        let (due, _, _) = d.refresh_timer.unwrap();
        assert!(due >= at(3600) && due <= at(3720));
    }

    #[test]
    fn the_query_follows_the_roles() {
        let mut d = Discovery::new(JoinOptions::default());
        assert_eq!(d.next_query(), RefreshQuery::Announce);
        d.running = JoinOptions::client_only();
        assert_eq!(d.next_query(), RefreshQuery::Lookup);
        d.needs_unannounce = true;
        assert_eq!(d.next_query(), RefreshQuery::LookupAndUnannounce);
    }
}
