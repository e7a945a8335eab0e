//! In-band path MTU probing (RFC 8899 style, connect.md §3.8; libudx `mtu_probeify_packet`,
//! `mtu_unprobeify_packet`, `reset_mtu_state_machine` and the probe branch of `ack_packet`).
//!
//! A full DATA packet becomes a probe by inserting zero padding after the header (its count
//! in `data_offset`) so the IP packet reaches the probe size. An acknowledged probe raises the
//! MTU by 32; three lost probes in a row end the search.

/// Base MTU, the IP packet size every path must carry (`UDX_MTU_BASE`, `include/udx.h:19`).
pub const MTU_BASE: u16 = 1200;
/// Largest MTU probed (`UDX_MTU_MAX`, `include/udx.h:21`).
pub const MTU_MAX: u16 = 1500;
/// Probe step (`UDX_MTU_STEP`, `include/udx.h:22`).
pub const MTU_STEP: u16 = 32;
/// Lost probes that end the search (`UDX_MTU_MAX_PROBES`, `include/udx.h:20`).
pub const MTU_MAX_PROBES: u8 = 3;
/// IPv4 + UDP + UDX header bytes (`UDX_IPV4_HEADER_SIZE`, `include/udx.h:15`).
pub const IPV4_OVERHEAD: u16 = 20 + 8 + 20;
/// IPv6 + UDP + UDX header bytes (`UDX_IPV6_HEADER_SIZE`, `include/udx.h:16`).
pub const IPV6_OVERHEAD: u16 = 40 + 8 + 20;

/// Where the search is (`UDX_MTU_STATE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtuState {
    /// Waiting for the first acknowledgement.
    Base,
    /// Probing.
    Search,
    /// Done: the MTU is final.
    Complete,
}

/// The MTU search of one stream.
#[derive(Clone, Debug)]
pub struct Mtu {
    mtu: u16,
    state: MtuState,
    probe_wanted: bool,
    probe_count: u8,
    probe_size: u16,
    max: u16,
    ipv6: bool,
}

impl Mtu {
    /// Starts at the base MTU; `max` caps the search (≤ 1200 disables it, as libudx does
    /// when the OS reports a small path MTU). `enabled = false` never probes.
    pub fn new(max: u16, ipv6: bool, enabled: bool) -> Self {
        let max = max.min(MTU_MAX);
        Mtu {
            mtu: MTU_BASE,
            state: if enabled && max > MTU_BASE {
                MtuState::Base
            } else {
                MtuState::Complete
            },
            probe_wanted: false,
            probe_count: 0,
            probe_size: (MTU_BASE + MTU_STEP).min(max),
            max,
            ipv6,
        }
    }

    /// The current MTU (IP packet size).
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Search state.
    pub fn state(&self) -> MtuState {
        self.state
    }

    fn overhead(&self) -> u16 {
        if self.ipv6 {
            IPV6_OVERHEAD
        } else {
            IPV4_OVERHEAD
        }
    }

    /// Stream bytes per packet at the current MTU (`udx__max_payload`): 1152 at the base
    /// MTU over IPv4, 1452 at 1500.
    pub fn max_payload(&self) -> usize {
        usize::from(self.mtu - self.overhead())
    }

    /// Any packet was acknowledged: the base MTU works, start searching.
    pub fn on_ack(&mut self) {
        if self.state == MtuState::Base {
            self.state = MtuState::Search;
            self.probe_wanted = true;
        }
    }

    /// Padding that turns a DATA packet with `data_len` bytes into a probe, if one is wanted
    /// now and fits (1..=255 bytes).
    pub fn probe_padding(&self, data_len: usize) -> Option<u8> {
        if self.state != MtuState::Search || !self.probe_wanted {
            return None;
        }
        let unpadded = usize::from(self.overhead()) + data_len;
        let padding = usize::from(self.probe_size).checked_sub(unpadded)?;
        u8::try_from(padding).ok().filter(|p| *p > 0)
    }

    /// A probe went out.
    pub fn on_probe_sent(&mut self) {
        self.probe_count = self.probe_count.saturating_add(1);
        self.probe_wanted = false;
    }

    /// A probe was acknowledged: the path carries `probe_size`.
    pub fn on_probe_acked(&mut self) {
        if self.state != MtuState::Search || self.probe_count == 0 {
            return;
        }
        self.probe_count = 0;
        self.mtu = self.probe_size;
        if self.probe_size >= self.max {
            self.state = MtuState::Complete;
        } else {
            self.probe_size = (self.probe_size + MTU_STEP).min(self.max);
            self.probe_wanted = true;
        }
    }

    /// A probe was declared lost (it is retransmitted without padding).
    pub fn on_probe_lost(&mut self) {
        if self.state == MtuState::Search {
            if self.probe_count >= MTU_MAX_PROBES {
                self.state = MtuState::Complete;
            } else {
                self.probe_wanted = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn climbs_to_1500() {
        let mut m = Mtu::new(MTU_MAX, false, true);
        assert_eq!(m.max_payload(), 1152);
        assert_eq!(m.probe_padding(1152), None);
        m.on_ack();
        // First probe: IP size 1232 = 48 + 32 + 1152, as in the capture.
        assert_eq!(m.probe_padding(1152), Some(32));
        assert_eq!(m.probe_padding(10), None);
        let mut sizes = Vec::new();
        while m.state() == MtuState::Search {
            let payload = m.max_payload();
            let pad = m.probe_padding(payload).unwrap();
            sizes.push(48 + usize::from(pad) + payload);
            m.on_probe_sent();
            m.on_probe_acked();
        }
        assert_eq!(sizes.first(), Some(&1232));
        assert_eq!(sizes.last(), Some(&1500));
        assert_eq!(m.mtu(), 1500);
        assert_eq!(m.max_payload(), 1452);
    }

    #[test]
    fn three_losses_end_search() {
        let mut m = Mtu::new(MTU_MAX, false, true);
        m.on_ack();
        for _ in 0..3 {
            assert!(m.probe_padding(1152).is_some());
            m.on_probe_sent();
            m.on_probe_lost();
        }
        assert_eq!(m.state(), MtuState::Complete);
        assert_eq!(m.mtu(), MTU_BASE);
        assert_eq!(Mtu::new(1200, false, true).state(), MtuState::Complete);
        assert_eq!(Mtu::new(1500, true, true).max_payload(), 1132);
    }
}
