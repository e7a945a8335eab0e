//! The request congestion window (dht-rpc `lib/io.js` `CongestionWindow`): four slots advanced
//! every 750 ms drain; sending blocks when the current slot holds `max_window` sends or all
//! slots together hold twice that. Replies are never throttled.

/// dht-rpc `MAX_WINDOW`.
pub const MAX_WINDOW: u32 = 80;

impl CongestionWindow {
    /// dht-rpc `IO.DEFAULT_MAX_WINDOW`.
    pub const DEFAULT_MAX_WINDOW: u32 = MAX_WINDOW;
}

/// The window.
#[derive(Clone, Debug)]
pub struct CongestionWindow {
    i: usize,
    total: u32,
    window: [u32; 4],
    max_window: u32,
}

impl CongestionWindow {
    /// An empty window allowing `max_window` sends per slot.
    pub fn new(max_window: u32) -> Self {
        CongestionWindow {
            i: 0,
            total: 0,
            window: [0; 4],
            max_window,
        }
    }

    /// Whether a new (non-forced) send must wait.
    pub fn is_full(&self) -> bool {
        self.total >= 2 * self.max_window || self.window[self.i] >= self.max_window
    }

    /// A request was answered, timed out or was cancelled.
    pub fn recv(&mut self) {
        if self.window[self.i] > 0 {
            self.window[self.i] -= 1;
            self.total -= 1;
        }
    }

    /// A request datagram was sent.
    pub fn send(&mut self) {
        self.total += 1;
        self.window[self.i] += 1;
    }

    /// The 750 ms drain: advance and clear the oldest slot.
    pub fn drain(&mut self) {
        self.i = (self.i + 1) & 3;
        self.total -= self.window[self.i];
        self.window[self.i] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_drains() {
        let mut w = CongestionWindow::new(2);
        w.send();
        assert!(!w.is_full());
        w.send();
        assert!(w.is_full());
        w.drain();
        assert!(!w.is_full());
        w.send();
        w.send();
        assert!(w.is_full(), "total cap of 2 x max");
        w.drain();
        w.drain();
        w.drain();
        assert!(!w.is_full());
    }
}
