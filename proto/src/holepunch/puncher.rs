//! One holepunch attempt's sockets and probes (hyperdht `lib/holepuncher.js`).
//!
//! A [`Puncher`] owns one socket (more for the birthday strategy), samples its NAT by PINGing
//! DHT nodes from it, keeps the peer's advertised view, and once both sides punch runs the
//! strategy for the pair of NAT kinds:
//!
//! | local / remote | strategy |
//! |---|---|
//! | consistent / consistent | up to 10 rounds, 1 s apart, a probe to every verified address (unverified ones in rounds 4 and 8); the responder waits 1 s first |
//! | consistent / random | 1,750 probes 20 ms apart to random ports (1000..65535) of the verified host |
//! | random / consistent | birthday: open up to 256 sockets, each sending a TTL-5 probe, then 1,750 probes cycling through them every 20 ms (first cycle TTL 5) |
//! | random / random | refused |
//!
//! A probe is the 1-byte datagram `00`. The initiator counts any datagram of at most one byte
//! on its sockets as success; the responder answers every probe with a probe. Sockets, pings
//! and probes go out through [`PunchOutput`]; the node performs them and reports back.

use std::collections::VecDeque;
use std::net::SocketAddrV4;

use core::time::Duration;

use super::nat::{Nat, MIN_SAMPLES};
use crate::ids::SocketId;
use crate::rng::Rng;
use crate::time::Timestamp;
use crate::wire::noise::firewall;

/// Sockets the birthday strategy opens (`BIRTHDAY_SOCKETS`).
pub const BIRTHDAY_SOCKETS: usize = 256;
/// TTL of "open session" probes (`HOLEPUNCH_TTL`).
pub const LOW_TTL: u8 = 5;
/// TTL of ordinary probes (`DEFAULT_TTL`).
pub const DEFAULT_TTL: u8 = 64;
/// Socket re-rolls when the NAT looks unstable (`MAX_REOPENS`).
pub const MAX_REOPENS: u32 = 3;
/// Probe sources a responder remembers (bounds memory under a flood of probes).
const MAX_PROBED_FROM: usize = 8;
/// Probes of the random strategies (`tries = 1750`, ~35 s).
pub const RANDOM_PROBES: u32 = 1750;
/// Gap between random-strategy probes.
pub const RANDOM_PROBE_GAP: Duration = Duration::from_millis(20);
/// Rounds of consistent probing.
pub const CONSISTENT_ROUNDS: u32 = 10;
/// Gap between consistent rounds (and the responder's initial wait).
pub const CONSISTENT_GAP: Duration = Duration::from_millis(1000);

/// What the puncher needs done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PunchOutput {
    /// Bind a new socket for this puncher; answer with [`Puncher::handle_socket`].
    NeedSocket,
    /// This socket is no longer needed.
    Release(SocketId),
    /// Send a dht-rpc PING (no retries) from `socket` to `to`; report with
    /// [`Puncher::handle_ping_reply`] or [`Puncher::handle_ping_failed`].
    Ping {
        /// Sending socket.
        socket: SocketId,
        /// DHT node.
        to: SocketAddrV4,
    },
    /// Send the 1-byte probe.
    Probe {
        /// Sending socket.
        socket: SocketId,
        /// Destination.
        to: SocketAddrV4,
        /// IP TTL.
        ttl: u8,
    },
    /// The path is open (initiator: a probe arrived).
    Connected {
        /// Our socket.
        socket: SocketId,
        /// The peer's address.
        from: SocketAddrV4,
    },
    /// Gave up (strategy ran out, or destroyed before connecting).
    Aborted,
}

/// An address the peer advertised, and whether its token came back (it really receives there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteAddress {
    /// The address (port 0 for a randomising NAT).
    pub addr: SocketAddrV4,
    /// Proven by the token echo.
    pub verified: bool,
}

#[derive(Clone, Debug)]
enum Strategy {
    Consistent {
        round: u32,
    },
    RandomPorts {
        host: SocketAddrV4,
        left: u32,
    },
    Birthday {
        remote: SocketAddrV4,
        next: usize,
        low_ttl_rounds: u32,
        left: u32,
        opened: bool,
    },
}

/// One holepunch attempt.
#[derive(Debug)]
pub struct Puncher {
    is_initiator: bool,
    dht_firewalled: bool,
    sockets: Vec<SocketId>,
    waiting_sockets: usize,
    nat: Nat,
    sample_nodes: Vec<SocketAddrV4>,
    pings_pending: usize,
    sample_retried: bool,
    /// The peer's view.
    pub remote_firewall: u64,
    /// The peer's advertised addresses.
    pub remote_addresses: Vec<RemoteAddress>,
    /// Whether the peer said it is punching.
    pub remote_punching: bool,
    punching: bool,
    connected: bool,
    destroyed: bool,
    randomized: bool,
    reopens: u32,
    /// A responder's sockets replaced by a re-roll: still open (and echoing probes) until
    /// the attempt ends, so a client's fast-open probe or stream on its way there is not lost.
    retired: Vec<SocketId>,
    /// Where probes reached our sockets from (a responder echoes them): each proves a direct
    /// path from that peer to a socket we still hold.
    probed_from: Vec<SocketAddrV4>,
    strategy: Option<Strategy>,
    next_at: Option<Timestamp>,
    rng: Rng,
    out: VecDeque<PunchOutput>,
}

impl Puncher {
    /// A puncher; `sample_nodes` are DHT nodes to sample our NAT through (most recent first).
    /// It asks for its socket at once.
    pub fn new(
        is_initiator: bool,
        dht_firewalled: bool,
        remote_firewall: u64,
        sample_nodes: Vec<SocketAddrV4>,
        rng: Rng,
    ) -> Puncher {
        let mut p = Puncher {
            is_initiator,
            dht_firewalled,
            sockets: Vec::new(),
            waiting_sockets: 1,
            nat: Nat::new(dht_firewalled),
            sample_nodes,
            pings_pending: 0,
            sample_retried: false,
            remote_firewall,
            remote_addresses: Vec::new(),
            remote_punching: false,
            punching: false,
            connected: false,
            destroyed: false,
            randomized: false,
            reopens: 0,
            retired: Vec::new(),
            probed_from: Vec::new(),
            strategy: None,
            next_at: None,
            rng,
            out: VecDeque::new(),
        };
        p.out.push_back(PunchOutput::NeedSocket);
        p
    }

    /// The main socket, once bound.
    pub fn socket(&self) -> Option<SocketId> {
        self.sockets.first().copied()
    }

    /// Whether `socket` belongs to this puncher.
    pub fn owns(&self, socket: SocketId) -> bool {
        self.sockets.contains(&socket)
    }

    /// Our NAT view.
    pub fn nat(&self) -> &Nat {
        &self.nat
    }

    /// Our NAT view, mutably (freeze, samples from holepunch replies).
    pub fn nat_mut(&mut self) -> &mut Nat {
        &mut self.nat
    }

    /// Whether the path is open.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether it is over (connected or destroyed).
    pub fn is_done(&self) -> bool {
        self.connected || self.destroyed
    }

    /// Whether a random strategy runs (counts against the per-node random punch limit).
    pub fn is_randomized(&self) -> bool {
        self.randomized
    }

    /// Whether punching started.
    pub fn is_punching(&self) -> bool {
        self.punching
    }

    /// Next output.
    pub fn poll_output(&mut self) -> Option<PunchOutput> {
        self.out.pop_front()
    }

    /// Next timer.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.next_at
    }

    /// A socket asked for with [`PunchOutput::NeedSocket`] is bound.
    pub fn handle_socket(&mut self, now: Timestamp, socket: SocketId) {
        self.waiting_sockets = self.waiting_sockets.saturating_sub(1);
        if self.is_done() {
            self.out.push_back(PunchOutput::Release(socket));
            return;
        }
        let first = self.sockets.is_empty();
        self.sockets.push(socket);
        if first {
            self.auto_sample();
            return;
        }
        if let Some(Strategy::Birthday { remote, .. }) = &self.strategy {
            let remote = *remote;
            self.out.push_back(PunchOutput::Probe {
                socket,
                to: remote,
                ttl: LOW_TTL,
            });
            self.open_birthday_socket(now);
        }
    }

    /// `autoSample`: PING up to 4 unvisited nodes from our socket.
    fn auto_sample(&mut self) {
        let Some(socket) = self.socket() else { return };
        let skip = if self.sample_nodes.len() >= 8 { 5 } else { 0 };
        let nodes: Vec<SocketAddrV4> = self.sample_nodes.iter().skip(skip).copied().collect();
        for to in nodes {
            if self.nat.sampled() + self.pings_pending >= MIN_SAMPLES {
                break;
            }
            if self.nat.visit(to) {
                self.pings_pending += 1;
                self.out.push_back(PunchOutput::Ping { socket, to });
            }
        }
        self.maybe_resample();
    }

    fn maybe_resample(&mut self) {
        if self.pings_pending > 0 || self.nat.sampled() >= MIN_SAMPLES {
            return;
        }
        if !self.sample_retried {
            self.sample_retried = true;
            // The second pass walks every node (no skip) for ones not asked yet.
            let Some(socket) = self.socket() else { return };
            let nodes = self.sample_nodes.clone();
            for to in nodes {
                if self.nat.sampled() + self.pings_pending >= MIN_SAMPLES {
                    break;
                }
                if self.nat.visit(to) {
                    self.pings_pending += 1;
                    self.out.push_back(PunchOutput::Ping { socket, to });
                }
            }
            if self.pings_pending > 0 {
                return;
            }
        }
        self.nat.give_up();
    }

    /// A sampling PING got a reply: `from` saw us at `to`.
    pub fn handle_ping_reply(&mut self, to: SocketAddrV4, from: SocketAddrV4) {
        self.pings_pending = self.pings_pending.saturating_sub(1);
        self.nat.add(to, from);
        self.maybe_resample();
    }

    /// A sampling PING failed.
    pub fn handle_ping_failed(&mut self) {
        self.pings_pending = self.pings_pending.saturating_sub(1);
        self.maybe_resample();
    }

    /// Whether the NAT view is settled enough to decide (`await nat.analyzing`).
    pub fn is_analyzed(&self) -> bool {
        self.nat.is_analyzed()
    }

    /// `_unstable`: we are UNKNOWN, or both sides are RANDOM.
    pub fn is_unstable(&self) -> bool {
        let fw = self.nat.firewall();
        (self.remote_firewall >= firewall::RANDOM && fw >= firewall::RANDOM)
            || fw == firewall::UNKNOWN
    }

    /// Whether a probe from `from` reached one of our sockets (and was echoed): the peer
    /// reaches us there directly, whatever our NAT analysis says.
    pub fn was_probed_from(&self, from: SocketAddrV4) -> bool {
        self.probed_from.contains(&from)
    }

    /// Re-rolls the socket when the view is unstable (`_reset`); false when out of re-rolls.
    pub fn reopen(&mut self) -> bool {
        if self.reopens >= MAX_REOPENS || self.is_done() || self.punching {
            return false;
        }
        self.reopens += 1;
        for s in self.sockets.drain(..) {
            if self.is_initiator {
                self.out.push_back(PunchOutput::Release(s));
            } else {
                // The client may be fast-opening this socket right now (its probe and the
                // relayed round race): keep it until the attempt ends.
                self.retired.push(s);
            }
        }
        self.nat = Nat::new(self.dht_firewalled);
        self.pings_pending = 0;
        self.sample_retried = false;
        self.waiting_sockets += 1;
        self.out.push_back(PunchOutput::NeedSocket);
        true
    }

    /// The peer's view from its latest payload; `verified` is the host whose token it echoed.
    pub fn update_remote(
        &mut self,
        punching: bool,
        firewall: u64,
        addresses: Option<&[SocketAddrV4]>,
        verified: Option<std::net::Ipv4Addr>,
    ) {
        let previous = core::mem::take(&mut self.remote_addresses);
        let was_verified =
            |h: &std::net::Ipv4Addr| previous.iter().any(|a| a.verified && a.addr.ip() == h);
        self.remote_addresses = addresses
            .unwrap_or(&[])
            .iter()
            .take(16)
            .map(|a| RemoteAddress {
                addr: *a,
                verified: verified == Some(*a.ip()) || was_verified(a.ip()),
            })
            .collect();
        self.remote_firewall = firewall;
        self.remote_punching = punching;
    }

    /// `openSession`: a TTL-5 probe that opens our NAT mapping towards `to`.
    pub fn open_session(&mut self, to: SocketAddrV4) {
        if let Some(socket) = self.socket() {
            self.out.push_back(PunchOutput::Probe {
                socket,
                to,
                ttl: LOW_TTL,
            });
        }
    }

    /// `ping`: a TTL-64 probe.
    pub fn ping(&mut self, to: SocketAddrV4) {
        if let Some(socket) = self.socket() {
            self.out.push_back(PunchOutput::Probe {
                socket,
                to,
                ttl: DEFAULT_TTL,
            });
        }
    }

    /// A probe (datagram of at most one byte) arrived on one of our sockets.
    pub fn handle_probe(&mut self, socket: SocketId, from: SocketAddrV4) {
        if !self.is_initiator {
            if (self.owns(socket) || self.retired.contains(&socket))
                && !self.probed_from.contains(&from)
                && self.probed_from.len() < MAX_PROBED_FROM
            {
                self.probed_from.push(from);
            }
            self.out.push_back(PunchOutput::Probe {
                socket,
                to: from,
                ttl: DEFAULT_TTL,
            });
            return;
        }
        if self.is_done() {
            return;
        }
        self.connected = true;
        self.punching = false;
        self.strategy = None;
        self.next_at = None;
        let keep = socket;
        let others: Vec<SocketId> = self
            .sockets
            .iter()
            .copied()
            .filter(|s| *s != keep)
            .collect();
        for s in others {
            self.out.push_back(PunchOutput::Release(s));
        }
        self.sockets = vec![keep];
        self.out.push_back(PunchOutput::Connected { socket, from });
    }

    /// Starts the strategy for the two NAT kinds (`punch()`); false if none applies.
    pub fn punch(&mut self, now: Timestamp) -> bool {
        if self.is_done() || self.remote_addresses.is_empty() {
            return false;
        }
        if self.punching {
            return true;
        }
        self.punching = true;
        let coerce = |f: u64| {
            if f == firewall::OPEN {
                firewall::CONSISTENT
            } else {
                f
            }
        };
        let local = coerce(self.nat.firewall());
        let remote = coerce(self.remote_firewall);
        let verified = self
            .remote_addresses
            .iter()
            .find(|a| a.verified)
            .map(|a| a.addr);
        if local == firewall::CONSISTENT && remote == firewall::CONSISTENT {
            self.strategy = Some(Strategy::Consistent { round: 0 });
            self.next_at = Some(if self.is_initiator {
                now
            } else {
                now + CONSISTENT_GAP
            });
            return true;
        }
        let Some(remote_addr) = verified else {
            self.punching = false;
            return false;
        };
        if local == firewall::CONSISTENT && remote >= firewall::RANDOM {
            self.randomized = true;
            self.strategy = Some(Strategy::RandomPorts {
                host: remote_addr,
                left: RANDOM_PROBES,
            });
            self.next_at = Some(now);
            return true;
        }
        if local >= firewall::RANDOM && remote == firewall::CONSISTENT {
            self.randomized = true;
            self.strategy = Some(Strategy::Birthday {
                remote: remote_addr,
                next: 0,
                low_ttl_rounds: 1,
                left: RANDOM_PROBES,
                opened: false,
            });
            self.open_birthday_socket(now);
            return true;
        }
        self.punching = false;
        false
    }

    fn open_birthday_socket(&mut self, now: Timestamp) {
        let have = self.sockets.len() + self.waiting_sockets;
        if have < BIRTHDAY_SOCKETS && self.punching {
            self.waiting_sockets += 1;
            self.out.push_back(PunchOutput::NeedSocket);
            return;
        }
        if let Some(Strategy::Birthday { opened, .. }) = &mut self.strategy {
            if !*opened && self.waiting_sockets == 0 {
                *opened = true;
                // Pause after the burst before cycling (`_keepAliveRandomNat`).
                self.next_at = Some(now + Duration::from_millis(100));
            }
        }
    }

    /// Runs the strategy's next step if due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let Some(at) = self.next_at else { return };
        if at > now || !self.punching {
            return;
        }
        let Some(socket) = self.socket() else { return };
        match &mut self.strategy {
            Some(Strategy::Consistent { round }) => {
                *round += 1;
                let r = *round;
                let targets: Vec<SocketAddrV4> = self
                    .remote_addresses
                    .iter()
                    .filter(|a| a.verified || r & 3 == 0)
                    .map(|a| a.addr)
                    .collect();
                for to in targets {
                    self.out.push_back(PunchOutput::Probe {
                        socket,
                        to,
                        ttl: DEFAULT_TTL,
                    });
                }
                if r >= CONSISTENT_ROUNDS {
                    self.next_at = Some(now + CONSISTENT_GAP);
                    self.strategy = None;
                } else {
                    self.next_at = Some(now + CONSISTENT_GAP);
                }
            }
            Some(Strategy::RandomPorts { host, left }) => {
                if *left == 0 {
                    self.strategy = None;
                } else {
                    *left -= 1;
                    let port = 1000 + self.rng.below(64536) as u16;
                    let to = SocketAddrV4::new(*host.ip(), port);
                    self.out.push_back(PunchOutput::Probe {
                        socket,
                        to,
                        ttl: DEFAULT_TTL,
                    });
                    self.next_at = Some(now + RANDOM_PROBE_GAP);
                    return;
                }
            }
            Some(Strategy::Birthday {
                remote,
                next,
                low_ttl_rounds,
                left,
                opened: true,
            }) => {
                if *left == 0 {
                    self.strategy = None;
                } else {
                    *left -= 1;
                    if *next >= self.sockets.len() {
                        *next = 0;
                        *low_ttl_rounds = low_ttl_rounds.saturating_sub(1);
                    }
                    let s = self.sockets[*next];
                    *next += 1;
                    let ttl = if *low_ttl_rounds > 0 {
                        LOW_TTL
                    } else {
                        DEFAULT_TTL
                    };
                    self.out.push_back(PunchOutput::Probe {
                        socket: s,
                        to: *remote,
                        ttl,
                    });
                    self.next_at = Some(now + RANDOM_PROBE_GAP);
                    return;
                }
            }
            Some(Strategy::Birthday { .. }) => return,
            None => {}
        }
        if self.strategy.is_none() && self.next_at.is_some_and(|t| t <= now) {
            // Strategy over without a connection (`_autoDestroy`).
            self.destroy();
        }
    }

    /// Ends the attempt; reports [`PunchOutput::Aborted`] unless connected.
    pub fn destroy(&mut self) {
        if self.destroyed {
            return;
        }
        self.destroyed = true;
        self.punching = false;
        self.strategy = None;
        self.next_at = None;
        for s in self.sockets.drain(..).chain(self.retired.drain(..)) {
            self.out.push_back(PunchOutput::Release(s));
        }
        if !self.connected {
            self.out.push_back(PunchOutput::Aborted);
        }
    }

    /// Releases everything after a connection elsewhere won (no abort report).
    pub fn finish_elsewhere(&mut self) {
        self.connected = true;
        self.destroy();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(i: u32) -> SocketId {
        SocketId(i)
    }

    fn drain(p: &mut Puncher) -> Vec<PunchOutput> {
        let mut v = Vec::new();
        while let Some(o) = p.poll_output() {
            v.push(o);
        }
        v
    }

    #[test]
    fn samples_then_punches_consistent() {
        let nodes: Vec<SocketAddrV4> = (1..=6u8)
            .map(|i| SocketAddrV4::new([10, 0, 0, i].into(), 1))
            .collect();
        let mut p = Puncher::new(
            true,
            true,
            firewall::CONSISTENT,
            nodes.clone(),
            Rng::from_seed([1; 32]),
        );
        assert_eq!(drain(&mut p), vec![PunchOutput::NeedSocket]);
        p.handle_socket(Timestamp::ZERO, sid(5));
        let pings = drain(&mut p);
        assert_eq!(pings.len(), 4);
        for (i, o) in pings.iter().enumerate() {
            let PunchOutput::Ping { to, .. } = o else {
                panic!()
            };
            let _ = i;
            p.handle_ping_reply("1.2.3.4:999".parse().unwrap(), *to);
        }
        assert!(p.is_analyzed());
        assert_eq!(p.nat().firewall(), firewall::CONSISTENT);
        p.update_remote(
            true,
            firewall::CONSISTENT,
            Some(&["5.6.7.8:1000".parse().unwrap()]),
            Some("5.6.7.8".parse().unwrap()),
        );
        assert!(p.punch(Timestamp::ZERO));
        p.handle_timeout(Timestamp::ZERO);
        assert_eq!(
            drain(&mut p),
            vec![PunchOutput::Probe {
                socket: sid(5),
                to: "5.6.7.8:1000".parse().unwrap(),
                ttl: 64
            }]
        );
        p.handle_probe(sid(5), "5.6.7.8:1000".parse().unwrap());
        assert_eq!(
            drain(&mut p),
            vec![PunchOutput::Connected {
                socket: sid(5),
                from: "5.6.7.8:1000".parse().unwrap()
            }]
        );
    }

    #[test]
    fn random_random_refused_and_aborts_when_out_of_time() {
        let mut p = Puncher::new(
            true,
            true,
            firewall::RANDOM,
            vec![],
            Rng::from_seed([1; 32]),
        );
        p.handle_socket(Timestamp::ZERO, sid(2));
        drain(&mut p);
        assert!(p.is_analyzed(), "no nodes to sample: analysis gives up");
        p.update_remote(
            true,
            firewall::RANDOM,
            Some(&["5.6.7.8:0".parse().unwrap()]),
            Some("5.6.7.8".parse().unwrap()),
        );
        assert!(!p.punch(Timestamp::ZERO), "UNKNOWN local cannot punch");

        let mut c = Puncher::new(
            false,
            false,
            firewall::CONSISTENT,
            vec![],
            Rng::from_seed([2; 32]),
        );
        c.handle_socket(Timestamp::ZERO, sid(3));
        c.update_remote(
            true,
            firewall::CONSISTENT,
            Some(&["5.6.7.8:9".parse().unwrap()]),
            None,
        );
        assert!(c.punch(Timestamp::ZERO));
        let mut t = Timestamp::ZERO;
        for _ in 0..12 {
            t += CONSISTENT_GAP;
            c.handle_timeout(t);
        }
        assert!(drain(&mut c).contains(&PunchOutput::Aborted));
    }
}
