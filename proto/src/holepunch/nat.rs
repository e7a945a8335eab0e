//! A puncher socket's view of its NAT (hyperdht `lib/nat.js`): samples of "how a DHT node saw
//! us" from PINGs sent on that socket, ranked by hits, classified as OPEN, CONSISTENT, RANDOM or
//! UNKNOWN, and the addresses we advertise to the peer.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::wire::noise::firewall;

/// Samples wanted before the view counts as analysed (`_minSamples`).
pub const MIN_SAMPLES: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    host: Ipv4Addr,
    port: u16,
    hits: u32,
}

/// The sampler of one puncher socket.
#[derive(Clone, Debug)]
pub struct Nat {
    samples_host: Vec<Sample>,
    samples_full: Vec<Sample>,
    /// Responders asked (1) or counted (2).
    visited: HashMap<SocketAddrV4, u8>,
    sampled: usize,
    frozen: bool,
    analyzed: bool,
    /// Whether our DHT node itself is firewalled.
    dht_firewalled: bool,
    firewall: u64,
    addresses: Option<Vec<SocketAddrV4>>,
    min_samples: usize,
}

/// Responders remembered per sampler (bounds memory under floods of pongs).
const MAX_VISITED: usize = 256;

impl Nat {
    /// A fresh sampler; `dht_firewalled` is our DHT node's state.
    pub fn new(dht_firewalled: bool) -> Nat {
        Nat {
            samples_host: Vec::new(),
            samples_full: Vec::new(),
            visited: HashMap::new(),
            sampled: 0,
            frozen: false,
            analyzed: false,
            dht_firewalled,
            firewall: if dht_firewalled {
                firewall::UNKNOWN
            } else {
                firewall::OPEN
            },
            addresses: None,
            min_samples: MIN_SAMPLES,
        }
    }

    /// The firewall kind.
    pub fn firewall(&self) -> u64 {
        self.firewall
    }

    /// The addresses we advertise (`None` while unknown).
    pub fn addresses(&self) -> Option<&[SocketAddrV4]> {
        self.addresses.as_deref()
    }

    /// Samples counted.
    pub fn sampled(&self) -> usize {
        self.sampled
    }

    /// Whether `analyzing` has resolved: consistent/open, or enough samples, or sampling ran out.
    pub fn is_analyzed(&self) -> bool {
        self.analyzed
    }

    /// Sampling ran out of nodes to ask.
    pub fn give_up(&mut self) {
        self.analyzed = true;
    }

    /// Marks `from` as asked; false if it was asked before (each node is asked once).
    pub fn visit(&mut self, from: SocketAddrV4) -> bool {
        if self.visited.contains_key(&from) || self.visited.len() >= MAX_VISITED {
            return false;
        }
        self.visited.insert(from, 1);
        true
    }

    /// Keep the advertised view stable (once sent in a punching round).
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Resume updating.
    pub fn unfreeze(&mut self) {
        self.frozen = false;
        self.update_firewall();
        self.update_addresses();
    }

    /// `from` saw us at `addr`.
    pub fn add(&mut self, addr: SocketAddrV4, from: SocketAddrV4) {
        if self.visited.get(&from) == Some(&2) {
            return;
        }
        if self.visited.len() >= MAX_VISITED && !self.visited.contains_key(&from) {
            return;
        }
        self.visited.insert(from, 2);
        add_sample(&mut self.samples_host, *addr.ip(), 0);
        add_sample(&mut self.samples_full, *addr.ip(), addr.port());
        self.sampled += 1;
        if (self.sampled >= 3 || !self.dht_firewalled) && !self.frozen {
            self.update();
        }
        if self.firewall == firewall::CONSISTENT
            || self.firewall == firewall::OPEN
            || self.sampled >= self.min_samples
        {
            self.analyzed = true;
        }
    }

    fn update(&mut self) {
        if self.dht_firewalled && self.firewall == firewall::OPEN {
            self.firewall = firewall::UNKNOWN;
        }
        self.update_firewall();
        self.update_addresses();
    }

    fn update_firewall(&mut self) {
        if !self.dht_firewalled {
            self.firewall = firewall::OPEN;
            return;
        }
        if self.sampled < 3 {
            return;
        }
        let max = self.samples_full.first().map_or(0, |s| s.hits);
        if max >= 3 {
            self.firewall = firewall::CONSISTENT;
        } else if max == 1 || (self.samples_host.len() == 1 && self.sampled > 3) {
            // One hit each, or 2 hits on a single host with bad samples beside: random.
            self.firewall = firewall::RANDOM;
        } else if self.samples_host.len() > 1
            && self.samples_full.get(1).is_some_and(|s| s.hits > 1)
        {
            self.firewall = firewall::CONSISTENT;
        } else if self.sampled > 4 {
            self.firewall = firewall::RANDOM;
        }
    }

    fn update_addresses(&mut self) {
        self.addresses = match self.firewall {
            firewall::RANDOM => self
                .samples_host
                .first()
                .map(|s| vec![SocketAddrV4::new(s.host, 0)]),
            firewall::CONSISTENT => {
                let mut v = Vec::new();
                for s in &self.samples_full {
                    if s.hits >= 2 || v.len() < 2 {
                        v.push(SocketAddrV4::new(s.host, s.port));
                    }
                }
                Some(v)
            }
            // OPEN keeps whatever it had (JS leaves `addresses` untouched).
            firewall::OPEN => self.addresses.take(),
            _ => None,
        };
    }
}

/// `addSample`: bump or append, keeping the list sorted by hits (stable, like JS).
fn add_sample(samples: &mut Vec<Sample>, host: Ipv4Addr, port: u16) {
    if let Some(mut i) = samples
        .iter()
        .position(|s| s.host == host && s.port == port)
    {
        samples[i].hits += 1;
        while i > 0 && samples[i - 1].hits < samples[i].hits {
            samples.swap(i - 1, i);
            i -= 1;
        }
        return;
    }
    if samples.len() < MAX_VISITED {
        samples.push(Sample {
            host,
            port,
            hits: 1,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn consistent_after_three_equal_samples() {
        let mut n = Nat::new(true);
        for i in 1..=3u8 {
            n.add(a("1.2.3.4:1000"), SocketAddrV4::new([9, 9, 9, i].into(), 1));
        }
        assert_eq!(n.firewall(), firewall::CONSISTENT);
        assert_eq!(n.addresses().unwrap(), &[a("1.2.3.4:1000")]);
        assert!(n.is_analyzed());
    }

    #[test]
    fn random_when_ports_differ() {
        let mut n = Nat::new(true);
        for i in 1..=4u8 {
            n.add(
                SocketAddrV4::new([1, 2, 3, 4].into(), 1000 + u16::from(i)),
                SocketAddrV4::new([9, 9, 9, i].into(), 1),
            );
        }
        assert_eq!(n.firewall(), firewall::RANDOM);
        assert_eq!(n.addresses().unwrap(), &[a("1.2.3.4:0")]);
    }

    #[test]
    fn same_responder_counts_once_and_open_dht() {
        let mut n = Nat::new(false);
        assert_eq!(n.firewall(), firewall::OPEN);
        n.add(a("1.2.3.4:1"), a("9.9.9.9:1"));
        n.add(a("1.2.3.4:2"), a("9.9.9.9:1"));
        assert_eq!(n.sampled(), 1);
    }
}
