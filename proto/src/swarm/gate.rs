//! Who may connect (hyperswarm `_handleFirewall`): never our own key, never a banned key, and
//! nobody the application's firewall refuses. The swarm's server consults the gate from inside
//! the node's handshake (its accept policy), so the gate is shared behind a lock; keys the
//! firewall refuses there are queued for the swarm to ban.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// The application's firewall: `true` refuses the key (JS `firewall(remotePublicKey)`).
pub type Firewall = Arc<dyn Fn(&[u8; 32]) -> bool + Send + Sync>;

/// Banned keys remembered; past this the firewall alone keeps refusing (a peer that sends
/// handshakes under ever new keys cannot grow the set).
pub const MAX_BANNED: usize = 4096;
/// Refusals the server can queue for the swarm between two swarm calls.
pub const MAX_REFUSED_QUEUED: usize = 256;

/// The gate's state.
pub(crate) struct Gate {
    own: [u8; 32],
    firewall: Option<Firewall>,
    banned: HashSet<[u8; 32]>,
    /// Keys the firewall refused at the server, for the swarm to ban.
    refused: Vec<[u8; 32]>,
    /// Refusals not queued because the queue was full.
    pub(crate) refusals_unqueued: u64,
}

/// A handle on the gate, shared by the swarm and its server's accept policy.
#[derive(Clone)]
pub(crate) struct SharedGate(Arc<Mutex<Gate>>);

impl SharedGate {
    pub(crate) fn new(own: [u8; 32], firewall: Option<Firewall>) -> SharedGate {
        SharedGate(Arc::new(Mutex::new(Gate {
            own,
            firewall,
            banned: HashSet::new(),
            refused: Vec::new(),
            refusals_unqueued: 0,
        })))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Gate> {
        // The gate holds no invariant a panic elsewhere could break.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why the gate refused a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Our own key.
    Own,
    /// Banned before.
    Banned,
    /// The application's firewall said no (just now).
    Firewall,
}

impl Gate {
    /// Checks `key`; `None` lets it through.
    pub(crate) fn check(&self, key: &[u8; 32]) -> Option<Refusal> {
        if *key == self.own {
            return Some(Refusal::Own);
        }
        if self.banned.contains(key) {
            return Some(Refusal::Banned);
        }
        match &self.firewall {
            Some(f) if f(key) => Some(Refusal::Firewall),
            _ => None,
        }
    }

    /// The server's check: a key the firewall refuses is queued for the swarm to ban.
    pub(crate) fn check_incoming(&mut self, key: &[u8; 32]) -> bool {
        match self.check(key) {
            None => true,
            Some(Refusal::Firewall) => {
                if self.refused.len() < MAX_REFUSED_QUEUED {
                    if !self.refused.contains(key) {
                        self.refused.push(*key);
                    }
                } else {
                    self.refusals_unqueued += 1;
                }
                false
            }
            Some(_) => false,
        }
    }

    /// Remembers `key` as banned (up to [`MAX_BANNED`] keys); returns whether it is now.
    pub(crate) fn ban(&mut self, key: [u8; 32]) -> bool {
        if self.banned.len() >= MAX_BANNED && !self.banned.contains(&key) {
            return false;
        }
        self.banned.insert(key);
        true
    }

    /// Lifts a ban.
    pub(crate) fn unban(&mut self, key: &[u8; 32]) {
        self.banned.remove(key);
    }

    /// Takes the keys the server refused since the last call.
    pub(crate) fn take_refused(&mut self) -> Vec<[u8; 32]> {
        std::mem::take(&mut self.refused)
    }
}
