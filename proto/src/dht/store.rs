//! Storage of a persistent node (hyperdht `lib/persistent.js`): announces, refresh chains,
//! bumps, mutable and immutable values, with the JS validation rules, the JS error codes, and
//! silence wherever JS is silent. Pure: each handler gets the request and returns an [`Answer`].

use std::net::SocketAddrV4;

use core::time::Duration;

use super::cache::{RecordCache, TtlCache};
use super::keys::{self, command, error_code, namespace};
use super::router::{Forward, Router};
use crate::commands::ERROR_UNKNOWN_COMMAND;
use crate::crypto::hash;
use crate::rng::Rng;
use crate::time::Timestamp;
use crate::wire::compact::Reader;
use crate::wire::hyperdht::{Announce, LookupReply, MutablePut, MutableRecord, Peer};

/// Records returned per LOOKUP reply (`onlookup`: `records.get(k, 20)`).
pub const LOOKUP_RECORDS: usize = 20;
/// Relay addresses kept per announced record.
pub const MAX_RELAY_ADDRESSES: usize = 3;
/// How far in the future a bump may be (`MAX_BUMP_DRIFT`).
pub const MAX_BUMP_DRIFT_MS: u64 = 60_000;

/// Storage limits (hyperdht `defaultCacheOpts`, plus byte budgets of our own).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreLimits {
    /// Announce records, refreshes and bumps per generation (JS `maxSize` 65 536).
    pub max_records: usize,
    /// Lifetime of announces (JS `maxAge` 20 min).
    pub records_max_age: Duration,
    /// Mutable and immutable values per generation (JS 32 768).
    pub max_values: usize,
    /// Lifetime of mutable and immutable values (JS 48 h).
    pub values_max_age: Duration,
    /// Bytes of mutable plus immutable values per generation, each (not bounded in JS).
    pub max_value_bytes: usize,
    /// Largest mutable or immutable value stored (JS has no limit below the datagram size);
    /// larger puts are dropped silently, as JS drops invalid puts.
    pub max_value_size: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_records: 65_536,
            records_max_age: Duration::from_secs(20 * 60),
            max_values: 32_768,
            values_max_age: Duration::from_secs(48 * 3600),
            max_value_bytes: 32 << 20,
            max_value_size: 16 << 10,
        }
    }
}

/// What a handler decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Say nothing (JS drops invalid requests silently).
    Silent,
    /// Reply with `value`; `token` and `closer` say whether to add a token and closer nodes.
    Reply {
        /// The value.
        value: Option<Vec<u8>>,
        /// Add a fresh token.
        token: bool,
        /// Add closer nodes.
        closer: bool,
    },
    /// Reply with an error code (closer nodes, no token: JS `req.error`).
    Error(u64),
}

impl Answer {
    fn with_routing(value: Option<Vec<u8>>) -> Answer {
        Answer::Reply {
            value,
            token: true,
            closer: true,
        }
    }

    fn bare() -> Answer {
        Answer::Reply {
            value: None,
            token: false,
            closer: false,
        }
    }
}

/// A storage request as the node received it (token already verified if present).
#[derive(Clone, Copy, Debug)]
pub struct StoreRequest<'a> {
    /// Command.
    pub command: u64,
    /// Target.
    pub target: Option<[u8; 32]>,
    /// Whether a (valid) token came with it.
    pub has_token: bool,
    /// The token itself (signed into announces).
    pub token: Option<&'a [u8; 32]>,
    /// Value.
    pub value: Option<&'a [u8]>,
    /// UDP source.
    pub from: SocketAddrV4,
}

#[derive(Clone, Debug)]
struct RefreshEntry {
    target: [u8; 32],
    record: Vec<u8>,
    announce_self: bool,
}

/// The stores.
#[derive(Debug)]
pub struct Store {
    records: RecordCache,
    bumps: TtlCache<[u8; 32], u64>,
    refreshes: TtlCache<[u8; 32], RefreshEntry>,
    mutables: TtlCache<[u8; 32], Vec<u8>>,
    immutables: TtlCache<[u8; 32], Vec<u8>>,
    max_value_size: usize,
}

impl Store {
    /// Empty stores created at `now`.
    pub fn new(now: Timestamp, limits: &StoreLimits) -> Store {
        let l = limits;
        Store {
            records: RecordCache::new(now, l.max_records, l.records_max_age),
            bumps: TtlCache::new(now, l.max_records, usize::MAX, l.records_max_age),
            refreshes: TtlCache::new(now, l.max_records, usize::MAX, l.records_max_age),
            mutables: TtlCache::new(now, l.max_values, l.max_value_bytes, l.values_max_age),
            immutables: TtlCache::new(now, l.max_values, l.max_value_bytes, l.values_max_age),
            max_value_size: l.max_value_size,
        }
    }

    /// Stored announce records.
    pub fn records_len(&self) -> usize {
        self.records.len()
    }

    /// Stored mutable and immutable values.
    pub fn values_len(&self) -> usize {
        self.mutables.len() + self.immutables.len()
    }

    /// The earliest rotation deadline.
    pub fn poll_timeout(&self) -> Timestamp {
        self.records
            .poll_timeout()
            .min(self.bumps.poll_timeout())
            .min(self.refreshes.poll_timeout())
            .min(self.mutables.poll_timeout())
            .min(self.immutables.poll_timeout())
    }

    /// Expires what is due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.records.handle_timeout(now);
        self.bumps.handle_timeout(now);
        self.refreshes.handle_timeout(now);
        self.mutables.handle_timeout(now);
        self.immutables.handle_timeout(now);
    }

    /// Handles one storage command. `own_id` is our node id (signed into announces),
    /// `unix_ms` the wall clock for bump checks (`None`: bumps are not accepted).
    pub fn handle(
        &mut self,
        router: &mut Router,
        req: &StoreRequest<'_>,
        own_id: &[u8; 32],
        unix_ms: Option<u64>,
        rng: &mut Rng,
    ) -> Answer {
        match req.command {
            command::LOOKUP => self.on_lookup(router, req, rng),
            command::FIND_PEER => on_find_peer(router, req),
            command::ANNOUNCE => self.on_announce(router, req, own_id, unix_ms),
            command::UNANNOUNCE => self.on_unannounce(router, req, own_id),
            command::MUTABLE_PUT => self.on_mutable_put(req),
            command::MUTABLE_GET => self.on_mutable_get(req),
            command::IMMUTABLE_PUT => self.on_immutable_put(req),
            command::IMMUTABLE_GET => self.on_immutable_get(req),
            // PLUGIN: no plugins are registered, so the request is dropped as JS drops requests
            // for unknown plugins (`persistent.js` `onplugin`).
            command::PLUGIN => Answer::Silent,
            // Any other command: hyperdht's `onrequest` returns false and dht-rpc's
            // `_onrequest` answers UNKNOWN_COMMAND with closer nodes and no token.
            _ => Answer::Error(ERROR_UNKNOWN_COMMAND),
        }
    }

    fn on_lookup(&mut self, router: &mut Router, req: &StoreRequest<'_>, rng: &mut Rng) -> Answer {
        let Some(k) = req.target else {
            return Answer::Silent;
        };
        let bump = self.bumps.get(&k).copied().unwrap_or(0);
        let mut records = self.records.get(&k, LOOKUP_RECORDS, rng);
        let fwd = router.get(&k);
        if let Some(fwd) = fwd {
            if records.len() < LOOKUP_RECORDS {
                records.push(&fwd.record);
            }
        }
        if records.is_empty() {
            return Answer::with_routing(None);
        }
        let mut value = Vec::with_capacity(records.iter().map(|r| r.len()).sum::<usize>() + 10);
        LookupReply::encode_raw(&records, bump, &mut value);
        Answer::with_routing(Some(value))
    }

    /// Removes `public_key`'s announce under `target` (JS `unannounce`).
    pub fn unannounce(&mut self, router: &mut Router, target: &[u8; 32], public_key: &[u8; 32]) {
        if hash(public_key) == *target {
            router.delete(target);
        }
        self.records.remove(target, public_key);
    }

    fn on_unannounce(
        &mut self,
        router: &mut Router,
        req: &StoreRequest<'_>,
        own_id: &[u8; 32],
    ) -> Answer {
        let (Some(target), Some(token)) = (req.target, req.token) else {
            return Answer::Silent;
        };
        let Some(ann) = req.value.and_then(|v| Announce::decode(v).ok()) else {
            return Answer::Silent;
        };
        let (Some(peer), Some(sig)) = (&ann.peer, &ann.signature) else {
            return Answer::Silent;
        };
        let signable = keys::announce_signable(
            &namespace(command::UNANNOUNCE),
            &target,
            own_id,
            token,
            peer,
            ann.refresh.as_ref(),
        );
        if !keys::verify(&peer.public_key, &signable, sig) {
            return Answer::Silent;
        }
        self.unannounce(router, &target, &peer.public_key);
        Answer::bare()
    }

    fn on_announce(
        &mut self,
        router: &mut Router,
        req: &StoreRequest<'_>,
        own_id: &[u8; 32],
        unix_ms: Option<u64>,
    ) -> Answer {
        let (Some(target), Some(token)) = (req.target, req.token) else {
            return Answer::Silent;
        };
        let Some(ann) = req.value.and_then(|v| Announce::decode(v).ok()) else {
            return Answer::Silent;
        };
        let Some(mut peer) = ann.peer.clone() else {
            return match ann.refresh {
                Some(refresh) => self.on_refresh(router, &refresh, req.from),
                None => Answer::Silent,
            };
        };
        let signable = keys::announce_signable(
            &namespace(command::ANNOUNCE),
            &target,
            own_id,
            token,
            &peer,
            ann.refresh.as_ref(),
        );
        let Some(sig) = &ann.signature else {
            return Answer::Silent;
        };
        if !keys::verify(&peer.public_key, &signable, sig) {
            return Answer::Silent;
        }
        peer.relay_addresses.truncate(MAX_RELAY_ADDRESSES);
        let announce_self = hash(&peer.public_key) == target;
        let record = peer.to_bytes();
        if announce_self {
            router.set(
                target,
                Forward {
                    relay: Some(req.from),
                    record: record.clone(),
                },
            );
            self.records.remove(&target, &peer.public_key);
        } else {
            let current = self.bumps.get(&target).copied().unwrap_or(0);
            if let Some(now_ms) = unix_ms {
                if ann.bump > current && ann.bump <= now_ms + MAX_BUMP_DRIFT_MS {
                    self.bumps.set(target, ann.bump, 0);
                }
            }
            self.records.add(target, peer.public_key, record.clone());
        }
        if let Some(refresh) = ann.refresh {
            self.refreshes.set(
                refresh,
                RefreshEntry {
                    target,
                    record,
                    announce_self,
                },
                0,
            );
        }
        Answer::bare()
    }

    /// The refresh path: `refresh` is the preimage of a stored chain link.
    fn on_refresh(
        &mut self,
        router: &mut Router,
        refresh: &[u8; 32],
        from: SocketAddrV4,
    ) -> Answer {
        let active = hash(refresh);
        let Some(entry) = self.refreshes.get(&active).cloned() else {
            return Answer::Silent;
        };
        let public_key: [u8; 32] = match entry.record.get(..32).and_then(|b| b.try_into().ok()) {
            Some(k) => k,
            None => return Answer::Silent,
        };
        if entry.announce_self {
            router.set(
                entry.target,
                Forward {
                    relay: Some(from),
                    record: entry.record.clone(),
                },
            );
            self.records.remove(&entry.target, &public_key);
        } else {
            self.records
                .add(entry.target, public_key, entry.record.clone());
        }
        self.refreshes.delete(&active);
        self.refreshes.set(*refresh, entry, 0);
        Answer::bare()
    }

    fn on_mutable_get(&mut self, req: &StoreRequest<'_>) -> Answer {
        let (Some(k), Some(v)) = (req.target, req.value) else {
            return Answer::Silent;
        };
        let Ok(seq) = Reader::new(v).uint() else {
            return Answer::Silent;
        };
        let Some(stored) = self.mutables.get(&k) else {
            return Answer::with_routing(None);
        };
        let local_seq = Reader::new(stored).uint().unwrap_or(0);
        Answer::with_routing((local_seq >= seq).then(|| stored.clone()))
    }

    fn on_mutable_put(&mut self, req: &StoreRequest<'_>) -> Answer {
        let (Some(k), true, Some(v)) = (req.target, req.has_token, req.value) else {
            return Answer::Silent;
        };
        let Ok(put) = MutablePut::decode(v) else {
            return Answer::Silent;
        };
        if put.value.len() > self.max_value_size
            || hash(&put.public_key) != k
            || !keys::verify_mutable(&put.public_key, put.seq, &put.value, &put.signature)
        {
            return Answer::Silent;
        }
        if let Some(existing) = self
            .mutables
            .get(&k)
            .and_then(|b| MutableRecord::decode(b).ok())
        {
            if existing.seq == put.seq && existing.value != put.value {
                return Answer::Error(error_code::SEQ_REUSED);
            }
            if put.seq < existing.seq {
                return Answer::Error(error_code::SEQ_TOO_LOW);
            }
        }
        let stored = MutableRecord {
            seq: put.seq,
            value: put.value,
            signature: put.signature,
        }
        .to_bytes();
        let w = stored.len();
        self.mutables.set(k, stored, w);
        Answer::with_routing(None)
    }

    fn on_immutable_get(&mut self, req: &StoreRequest<'_>) -> Answer {
        let Some(k) = req.target else {
            return Answer::Silent;
        };
        Answer::with_routing(self.immutables.get(&k).cloned())
    }

    fn on_immutable_put(&mut self, req: &StoreRequest<'_>) -> Answer {
        let (Some(k), true, Some(v)) = (req.target, req.has_token, req.value) else {
            return Answer::Silent;
        };
        if v.len() > self.max_value_size || hash(v) != k {
            return Answer::Silent;
        }
        self.immutables.set(k, v.to_vec(), v.len());
        Answer::with_routing(None)
    }
}

fn on_find_peer(router: &mut Router, req: &StoreRequest<'_>) -> Answer {
    let Some(k) = req.target else {
        return Answer::Silent;
    };
    Answer::with_routing(router.get(&k).map(|f| f.record.clone()))
}

/// Decodes a stored or received peer record (for callers that want the struct).
pub fn decode_peer(record: &[u8]) -> Option<Peer> {
    Peer::decode(record).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: u64) -> StoreRequest<'static> {
        StoreRequest {
            command,
            target: Some([7; 32]),
            has_token: false,
            token: None,
            value: None,
            from: SocketAddrV4::new([127, 0, 0, 1].into(), 40_000),
        }
    }

    fn answer(command: u64) -> Answer {
        let now = Timestamp::from_duration(Duration::ZERO);
        let mut store = Store::new(now, &StoreLimits::default());
        let mut router = Router::new(now, 16, Duration::from_secs(60));
        let mut rng = Rng::from_seed([1; 32]);
        store.handle(&mut router, &request(command), &[0; 32], None, &mut rng)
    }

    #[test]
    fn unknown_commands_get_unknown_command_and_plugin_stays_silent() {
        for unknown in [11, 12, 52, 0xfc, 0xffff, u64::MAX] {
            assert_eq!(
                answer(unknown),
                Answer::Error(ERROR_UNKNOWN_COMMAND),
                "command {unknown}"
            );
        }
        assert_eq!(answer(command::PLUGIN), Answer::Silent);
    }
}
