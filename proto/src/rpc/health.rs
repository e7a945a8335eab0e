//! Network health (dht-rpc `lib/health.js`): once per tick, a snapshot of the cumulative
//! response and timeout counters joins a window of four; from the per-tick deltas the node is
//! online, degraded (timeout rate above 0.5 for four ticks) or offline (no responses for two).

const MAX_HEALTH_WINDOW: usize = 4;
const OFFLINE_THRESHOLD: u32 = 2;
const IDLE_THRESHOLD: u64 = 4;
const DEGRADED_TIMEOUT_RATE_THRESHOLD: f64 = 0.5;

/// The node's view of its network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthState {
    /// Responses arrive.
    Online,
    /// Responses arrive, but most requests time out.
    Degraded,
    /// Nothing answers.
    Offline,
}

#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    responses: u64,
    timeouts: u64,
    /// `None` while the window was cold or idle.
    degraded: Option<bool>,
}

/// The health tracker.
#[derive(Clone, Debug)]
pub struct Health {
    window: Vec<Snapshot>,
    head: usize,
    offline_ticks: u32,
    // Signed like the JS counters: an offline tick is stored as `degraded: false` without
    // counting as healthy, so dropping it from the window takes `healthy_ticks` below zero.
    degraded_ticks: i64,
    healthy_ticks: i64,
    state: HealthState,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            window: Vec::with_capacity(MAX_HEALTH_WINDOW),
            head: MAX_HEALTH_WINDOW - 1,
            offline_ticks: 0,
            degraded_ticks: 0,
            healthy_ticks: 0,
            state: HealthState::Online,
        }
    }
}

impl Health {
    /// The current state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Forgets everything (after a wake-up); the state becomes online.
    pub fn reset(&mut self) {
        *self = Health::default();
    }

    /// One tick with the cumulative counters; returns the new state if it changed.
    pub fn update(&mut self, responses: u64, timeouts: u64) -> Option<HealthState> {
        let tail = (self.head + 1) % MAX_HEALTH_WINDOW;
        if let Some(old) = self.window.get(tail) {
            match old.degraded {
                Some(true) => self.degraded_ticks -= 1,
                Some(false) => self.healthy_ticks -= 1,
                None => {}
            }
        }
        let prev = self.window.get(self.head).copied();
        self.head = tail;
        let snap = Snapshot {
            responses,
            timeouts,
            degraded: None,
        };
        if self.window.len() < MAX_HEALTH_WINDOW {
            self.window.push(snap);
        } else {
            self.window[self.head] = snap;
        }
        let cold = self.window.len() < MAX_HEALTH_WINDOW;
        let (dr, dt) = prev.map_or((0, 0), |p| {
            (
                responses.saturating_sub(p.responses),
                timeouts.saturating_sub(p.timeouts),
            )
        });
        if cold || dr + dt < IDLE_THRESHOLD {
            return None;
        }
        let offline = dr == 0;
        let rate = if dt == 0 {
            0.0
        } else {
            dt as f64 / (dr + dt) as f64
        };
        let degraded = !offline && rate > DEGRADED_TIMEOUT_RATE_THRESHOLD;
        self.window[self.head].degraded = Some(degraded);
        if offline {
            self.offline_ticks += 1;
        } else {
            self.offline_ticks = 0;
            if degraded {
                self.degraded_ticks += 1;
            } else {
                self.healthy_ticks += 1;
            }
        }
        let mut online = self.state != HealthState::Offline;
        let mut is_degraded = self.state == HealthState::Degraded;
        if !offline {
            online = true;
        } else if self.offline_ticks >= OFFLINE_THRESHOLD {
            online = false;
        }
        if !online || self.healthy_ticks == MAX_HEALTH_WINDOW as i64 {
            is_degraded = false;
        } else if self.degraded_ticks == MAX_HEALTH_WINDOW as i64 {
            is_degraded = true;
        }
        let next = if !online {
            HealthState::Offline
        } else if is_degraded {
            HealthState::Degraded
        } else {
            HealthState::Online
        };
        let changed = next != self.state;
        self.state = next;
        changed.then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_offline_after_two_silent_ticks() {
        let mut h = Health::default();
        let (mut r, mut t) = (0, 0);
        for _ in 0..4 {
            r += 10;
            assert_eq!(h.update(r, t), None);
        }
        t += 5;
        assert_eq!(h.update(r, t), None, "one silent tick");
        t += 5;
        assert_eq!(h.update(r, t), Some(HealthState::Offline));
        r += 10;
        assert_eq!(h.update(r, t), Some(HealthState::Online));
    }

    #[test]
    fn offline_ticks_leaving_the_window_do_not_underflow() {
        // JS stores an offline tick as `degraded: false` but does not count it as healthy; when
        // it leaves the window `_healthyTicks` goes negative. This used to underflow a usize.
        let mut h = Health::default();
        let (mut r, mut t) = (0, 0);
        for _ in 0..8 {
            t += 5;
            h.update(r, t);
        }
        assert_eq!(h.state(), HealthState::Offline);
        r += 10;
        assert_eq!(h.update(r, t), Some(HealthState::Online));
    }
}
