//! Keeping the node healthy (dht-rpc `index.js`): the 5 s tick, routing-table upkeep (adding
//! nodes from traffic, liveness checks, ping-and-swap for full rows, refreshes), the bootstrap
//! procedure, the reachability (firewall) check and the ephemeral → persistent switch.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::queries::QueryKind;
use super::rpc::{Outcome, Owner, RequestSpec};
use super::Node;
use crate::commands::{PING, PING_NAT};
use crate::config::{
    stray_node, Persistence, MAX_REPINGING, MORE_STABLE_TICKS, OLD_NODE, RECENT_NODE,
    SLEEPING_INTERVAL,
};
use crate::event::Event;
use crate::ids::NodeId;
use crate::routing::{Insert, TableNode, K};
use crate::rpc::NatSampler;

/// Where the bootstrap procedure is (`_bootstrap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Boot {
    /// Waiting for the sockets.
    Binding,
    /// Walking towards our own id; `round` is 0 or 1.
    Walking {
        round: u8,
        first: bool,
        test_nat: bool,
    },
    /// Running the network check after round 0.
    Checking,
    /// Done (`ready`).
    Done,
}

/// Why a network check runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CheckPurpose {
    Bootstrap,
    Stable,
}

/// A running `_updateNetworkState` waiting for its PING_NAT probes (`_checkIfFirewalled`).
#[derive(Debug)]
pub(super) struct NetworkCheck {
    purpose: CheckPurpose,
    only_firewall: bool,
    host: Ipv4Addr,
    port: u16,
    probes: usize,
    outstanding: usize,
    /// (replier, our address as it saw us) for each PING_NAT answer.
    pongs: Vec<(SocketAddrV4, SocketAddrV4)>,
    /// Hosts seen arriving on the server socket while the check runs.
    server_hosts: HashSet<Ipv4Addr>,
}

/// Hosts remembered per check (bounds memory under a flood).
const MAX_CHECK_HOSTS: usize = 1024;

impl NetworkCheck {
    pub(super) fn saw_on_server(&mut self, host: Ipv4Addr) {
        if self.server_hosts.len() < MAX_CHECK_HOSTS {
            self.server_hosts.insert(host);
        }
    }
}

impl Node {
    // ----- ticks ---------------------------------------------------------------------------

    /// `_ontick`.
    pub(super) fn on_tick(&mut self) {
        if self.now - self.last_tick_at > SLEEPING_INTERVAL {
            self.on_wakeup();
        } else {
            self.tick += 1;
        }
        self.last_tick_at = self.now;
        if !self.bootstrapped {
            return;
        }
        if self.adaptive && self.ephemeral {
            self.stable_ticks -= 1;
            if self.stable_ticks <= 0 {
                if self.last_host == self.nat.host() {
                    self.stable_ticks = MORE_STABLE_TICKS;
                } else {
                    self.update_network_state(false, CheckPurpose::Stable);
                }
            }
        }
        if self.tick & 7 == 0 {
            self.ping_some();
        }
        let small = self.tick & 63 == 0 && self.table.len() < K;
        if small || {
            self.refresh_ticks -= 1;
            self.refresh_ticks <= 0
        } {
            self.refresh_table();
        }
        self.down_hints_this_tick = 0;
        let s = self.stats();
        if let Some(state) = self.health.update(s.responses, s.timeouts) {
            self.push_event(Event::Health(state));
        }
    }

    /// `_onwakeup`: the clock jumped (laptop sleep); everything looks old now.
    fn on_wakeup(&mut self) {
        tracing::info!("clock jump detected: treating as wake-up");
        self.tick += 2 * OLD_NODE;
        // JS `tick += 8 - (tick & 7) - 2`, which is -1 when `tick & 7 == 7`: add before
        // subtracting so the u64 cannot underflow.
        self.tick = self.tick + 6 - (self.tick & 7);
        self.stable_ticks = MORE_STABLE_TICKS;
        self.refresh_ticks = 1;
        self.last_host = None;
        let was = self.health.state();
        self.health.reset();
        if was != self.health.state() {
            self.push_event(Event::Health(self.health.state()));
        }
        if self.adaptive && !self.ephemeral {
            self.ephemeral = true;
            self.push_event(Event::Ephemeral);
        }
    }

    /// `refresh`: a background walk towards a random table node (or our own id).
    pub(super) fn refresh_table(&mut self) {
        if self.closed || !self.is_listening() {
            return;
        }
        let target = match self.table.random(&mut self.rng) {
            Some(n) => n.id,
            None => *self.table.id(),
        };
        self.background_query(target, QueryKind::Background);
    }

    /// `_pingSome`: check up to 5 of the least recently heard-from nodes.
    fn ping_some(&mut self) {
        let mut count = if self.requests.len() > 2 { 3 } else { 5 };
        let Some(&oldest) = self.table.oldest_first().next() else {
            self.refresh_table();
            return;
        };
        if self
            .table
            .get(&oldest)
            .is_some_and(|n| self.tick - n.pinged.min(self.tick) < RECENT_NODE)
        {
            count = 2;
        }
        let ids: Vec<NodeId> = self
            .table
            .oldest_first()
            .take_while(|id| self.table.get(id).is_some_and(|n| n.pinged != self.tick))
            .take(count)
            .copied()
            .collect();
        for id in ids {
            self.check_node(&id);
        }
    }

    /// `_check`: PING a table node; silence or a reply that does not refresh it removes it.
    pub(super) fn check_node(&mut self, id: &NodeId) {
        let tick = self.tick;
        let Some(n) = self.table.get_mut(id) else {
            return;
        };
        n.pinged = tick;
        let addr = n.addr;
        self.checks += 1;
        let owner = Owner::Check { id: *id };
        if self
            .send_request(addr, None, RequestSpec::internal(PING), owner)
            .is_none()
        {
            self.checks = self.checks.saturating_sub(1);
        }
    }

    // ----- table ---------------------------------------------------------------------------

    /// `_addNodeFromNetwork`: a packet from `from` (with a validated `id`, if any) told us our
    /// address is `to`.
    pub(super) fn add_node_from_network(
        &mut self,
        sample: bool,
        from: SocketAddrV4,
        id: Option<NodeId>,
        to: SocketAddrV4,
    ) {
        if self.config.filter_stray_nodes && stray_node(&from) {
            return;
        }
        let Some(id) = id else {
            self.sample_bootstrap_maybe(from, to);
            return;
        };
        let tick = self.tick;
        if let Some(n) = self.table.get_mut(&id) {
            let mut nat_sample = None;
            if sample && (n.sampled == 0 || tick.saturating_sub(n.sampled) >= OLD_NODE) {
                n.to = Some(to);
                n.sampled = tick;
                nat_sample = Some(to);
            }
            n.pinged = tick;
            n.seen = tick;
            self.table.touch(&id);
            if let Some(to) = nat_sample {
                self.nat_add(to);
            }
            return;
        }
        self.add_node_entry(id, from, Some(to));
    }

    /// `_sampleBootstrapMaybe`: replies without an id count towards our address only from the
    /// first few distinct responders (meant to be the bootstrap nodes).
    fn sample_bootstrap_maybe(&mut self, from: SocketAddrV4, to: SocketAddrV4) {
        if self.bootstrap_samples.len() >= self.config.bootstrap.len().max(1)
            || self.bootstrap_samples.contains(&from)
        {
            return;
        }
        self.bootstrap_samples.push(from);
        self.nat_add(to);
    }

    /// `_addNode`.
    pub(super) fn add_node_entry(
        &mut self,
        id: NodeId,
        addr: SocketAddrV4,
        to: Option<SocketAddrV4>,
    ) {
        if id == *self.table.id() {
            return;
        }
        let mut node = TableNode::new(id, addr, self.tick);
        node.to = to;
        match self.table.insert(node.clone()) {
            Insert::Added => {
                if let Some(to) = to {
                    if let Some(n) = self.table.get_mut(&id) {
                        n.sampled = self.tick;
                    }
                    self.nat_add(to);
                }
            }
            Insert::Full(row) => self.on_full_row(node, row),
            Insert::Replaced | Insert::OwnId => {}
        }
    }

    /// `_onfullrow`: maybe ping the row's stalest node and swap the newcomer in if it is gone.
    fn on_full_row(&mut self, new: TableNode, row: usize) {
        if !self.bootstrapped || self.repinging >= MAX_REPINGING {
            return;
        }
        let tick = self.tick;
        let oldest = self
            .table
            .row(row)
            .iter()
            .filter(|n| n.pinged != tick)
            .min_by(|a, b| a.pinged.cmp(&b.pinged).then(a.added.cmp(&b.added)));
        let Some(oldest) = oldest else { return };
        if tick.saturating_sub(oldest.pinged) < RECENT_NODE
            && tick.saturating_sub(oldest.added) > OLD_NODE
        {
            return;
        }
        let (old, addr) = (oldest.id, oldest.addr);
        if let Some(n) = self.table.get_mut(&old) {
            n.pinged = tick;
        }
        self.repinging += 1;
        let owner = Owner::Reping {
            old,
            new: Box::new(new),
        };
        if self
            .send_request(addr, None, RequestSpec::internal(PING), owner)
            .is_none()
        {
            self.repinging = self.repinging.saturating_sub(1);
        }
    }

    pub(super) fn remove_node(&mut self, id: &NodeId) {
        if self.table.remove(id).is_some() {
            tracing::debug!(node = %id, "node removed from routing table");
        }
    }

    /// `_natAdd`.
    fn nat_add(&mut self, to: SocketAddrV4) {
        let before = (self.nat.host(), self.nat.port());
        self.nat.add(*to.ip(), to.port());
        let after = (self.nat.host(), self.nat.port());
        if before != after {
            self.push_event(Event::NatUpdate {
                host: after.0,
                port: after.1,
            });
        }
    }

    // ----- bootstrap -----------------------------------------------------------------------

    pub(super) fn start_bootstrap(&mut self) {
        if self.boot != Boot::Binding {
            return;
        }
        let force = self.config.persistence == Persistence::Persistent;
        let first = self.firewalled && self.config.quick_firewall && !force;
        self.boot = Boot::Walking {
            round: 0,
            first,
            test_nat: false,
        };
        tracing::debug!(bootstrap = ?self.config.bootstrap, "bootstrapping");
        let id = *self.table.id();
        self.background_query(id, QueryKind::Bootstrap);
    }

    /// A bootstrap walk reply (`ondata`): the first one gets the quick PING_NAT probe.
    pub(super) fn on_bootstrap_data(&mut self, reply: &crate::event::Reply) {
        let Boot::Walking {
            first: true,
            round,
            test_nat,
        } = self.boot
        else {
            return;
        };
        self.boot = Boot::Walking {
            round,
            first: false,
            test_nat,
        };
        let mut spec = RequestSpec::internal(PING_NAT);
        spec.value = Some(self.server_port().to_le_bytes().to_vec());
        self.send_request(reply.from, None, spec, Owner::QuickFirewall);
    }

    pub(super) fn on_quick_firewall_pong(&mut self) {
        if let Boot::Walking { round, first, .. } = self.boot {
            self.boot = Boot::Walking {
                round,
                first,
                test_nat: true,
            };
        }
    }

    pub(super) fn on_bootstrap_walk_done(&mut self) {
        let Boot::Walking {
            round, test_nat, ..
        } = self.boot
        else {
            return;
        };
        let force = self.config.persistence == Persistence::Persistent;
        if self.bootstrapped || round >= 1 || (!test_nat && !force) {
            self.finish_bootstrap();
            return;
        }
        self.boot = Boot::Checking;
        self.update_network_state(!force, CheckPurpose::Bootstrap);
    }

    fn finish_bootstrap(&mut self) {
        self.boot = Boot::Done;
        if self.bootstrapped {
            return;
        }
        self.bootstrapped = true;
        tracing::info!(
            nodes = self.table.len(),
            persistent = !self.ephemeral,
            "bootstrapped"
        );
        self.push_event(Event::Bootstrapped);
    }

    // ----- network state -------------------------------------------------------------------

    /// `_updateNetworkState`: decide whether we are reachable and, unless `only_firewall`,
    /// become persistent. The result arrives through `network_state_done`.
    fn update_network_state(&mut self, only_firewall: bool, purpose: CheckPurpose) {
        if !self.ephemeral || (only_firewall && !self.firewalled) || self.network_check.is_some() {
            return self.network_state_done(purpose, false);
        }
        let host = self.nat.host();
        let port = self.nat.port();
        if !only_firewall {
            self.stable_ticks = MORE_STABLE_TICKS;
            self.last_host = host;
        }
        let Some(host) = host.filter(|_| port != 0) else {
            return self.network_state_done(purpose, false);
        };
        if !self.firewalled {
            let sampler = self.nat.clone();
            let ok = self.apply_network_state(only_firewall, host, port, sampler, false);
            return self.network_state_done(purpose, ok);
        }
        // `_checkIfFirewalled`: PING_NAT to the 5 most recently seen nodes (plus the bootstrap
        // nodes when fewer), from the client socket; pongs count only if the replier was also
        // seen on the server socket.
        let mut nodes: Vec<SocketAddrV4> = self
            .table
            .latest_first()
            .take(5)
            .filter_map(|id| self.table.get(id).map(|n| n.addr))
            .collect();
        if nodes.len() < 5 {
            nodes.extend(self.config.bootstrap.iter().copied());
        }
        if nodes.is_empty() {
            return self.network_state_done(purpose, false);
        }
        self.network_check = Some(NetworkCheck {
            purpose,
            only_firewall,
            host,
            port,
            probes: nodes.len(),
            outstanding: nodes.len(),
            pongs: Vec::new(),
            server_hosts: HashSet::new(),
        });
        let value = self.server_port().to_le_bytes().to_vec();
        for addr in nodes {
            let mut spec = RequestSpec::internal(PING_NAT);
            spec.value = Some(value.clone());
            if self
                .send_request(addr, None, spec, Owner::FirewallProbe)
                .is_none()
            {
                self.on_firewall_probe_done(Outcome::Failed(crate::error::RequestError::Destroyed));
            }
        }
    }

    pub(super) fn on_firewall_probe_done(&mut self, outcome: Outcome) {
        let Some(check) = &mut self.network_check else {
            return;
        };
        if let Outcome::Reply(r) = outcome {
            check.pongs.push((r.from, r.to));
        }
        check.outstanding = check.outstanding.saturating_sub(1);
        if check.outstanding > 0 {
            return;
        }
        let Some(check) = self.network_check.take() else {
            return;
        };
        let mut sampler = NatSampler::new();
        let mut count = 0;
        for (from, to) in &check.pongs {
            if check.server_hosts.contains(from.ip()) {
                count += 1;
                sampler.add(*to.ip(), to.port());
            }
        }
        let needed = if check.probes >= 5 { 3 } else { 1 };
        let server_port = self.server_port();
        let firewalled = count < needed
            || sampler.host().is_none()
            || self.nat.host() != sampler.host()
            || sampler.port() == 0
            || sampler.port() != server_port;
        tracing::debug!(
            count,
            probes = check.probes,
            firewalled,
            "reachability check finished"
        );
        let ok = !firewalled
            && self.apply_network_state(check.only_firewall, check.host, check.port, sampler, true);
        self.network_state_done(check.purpose, ok);
    }

    /// The tail of `_updateNetworkState` once we know we are not firewalled.
    fn apply_network_state(
        &mut self,
        only_firewall: bool,
        host: Ipv4Addr,
        port: u16,
        sampler: NatSampler,
        fresh: bool,
    ) -> bool {
        self.firewalled = false;
        if !self.ephemeral || Some(host) != self.nat.host() || port != self.nat.port() {
            return false;
        }
        let Some(public) = sampler.host().filter(|h| *h == host && sampler.port() != 0) else {
            return false;
        };
        let id = NodeId::from_addr(&SocketAddrV4::new(public, sampler.port()));
        if !only_firewall {
            self.ephemeral = false;
        }
        if fresh {
            let before = (self.nat.host(), self.nat.port());
            self.bootstrap_samples.clear();
            self.nat = sampler;
            let after = (self.nat.host(), self.nat.port());
            if before != after {
                self.push_event(Event::NatUpdate {
                    host: after.0,
                    port: after.1,
                });
            }
        }
        if *self.table.id() != id {
            let dropped = self.table.recentre(id);
            tracing::debug!(
                dropped = dropped.len(),
                "routing table re-centred on our public id"
            );
            if self.bootstrapped {
                self.refresh_table();
            }
        }
        if !self.ephemeral {
            if self.store.is_none() {
                self.store = Some(crate::dht::Store::new(self.now, &self.config.store_limits));
            }
            tracing::info!(%id, "node is persistent");
            self.push_event(Event::Persistent { id });
        }
        true
    }

    fn network_state_done(&mut self, purpose: CheckPurpose, ok: bool) {
        if purpose != CheckPurpose::Bootstrap || self.boot != Boot::Checking {
            return;
        }
        if !ok {
            self.finish_bootstrap();
            return;
        }
        self.boot = Boot::Walking {
            round: 1,
            first: false,
            test_nat: false,
        };
        let id = *self.table.id();
        self.background_query(id, QueryKind::Bootstrap);
    }
}
