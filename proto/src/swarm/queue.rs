//! The dial queue (npm `shuffled-priority-queue`, as hyperswarm uses it): peers wait in one
//! bucket per [`Priority`]; the next peer is a random one from the highest non-empty bucket,
//! so peers of one priority are dialled in no fixed order.

use super::peer::Priority;
use crate::rng::Rng;

/// Peers waiting to be dialled, by priority.
#[derive(Debug, Default)]
pub struct PeerQueue {
    buckets: [Vec<[u8; 32]>; 5],
}

impl PeerQueue {
    /// Queues `key` at `priority` (the caller keeps a key in the queue at most once).
    pub fn push(&mut self, key: [u8; 32], priority: Priority) {
        self.buckets[priority as usize].push(key);
    }

    /// Takes a random peer of the highest priority waiting.
    pub fn shift(&mut self, rng: &mut Rng) -> Option<[u8; 32]> {
        for p in Priority::HIGHEST_FIRST {
            let bucket = &mut self.buckets[p as usize];
            if !bucket.is_empty() {
                let i = rng.below(bucket.len() as u64) as usize;
                return Some(bucket.swap_remove(i));
            }
        }
        None
    }

    /// Peers waiting.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }

    /// Whether no peer waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every peer.
    pub fn clear(&mut self) {
        for b in &mut self.buckets {
            b.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priorities_go_first_and_ties_are_shuffled() {
        let mut rng = Rng::from_seed([5; 32]);
        let mut q = PeerQueue::default();
        for i in 0..20u8 {
            q.push([i; 32], Priority::Normal);
        }
        q.push([100; 32], Priority::VeryHigh);
        q.push([101; 32], Priority::VeryLow);
        assert_eq!(q.shift(&mut rng), Some([100; 32]));
        let normal: Vec<u8> = (0..20).map(|_| q.shift(&mut rng).unwrap()[0]).collect();
        assert_ne!(
            normal,
            (0..20).collect::<Vec<u8>>(),
            "not in insertion order"
        );
        let mut sorted = normal.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<u8>>());
        assert_eq!(q.shift(&mut rng), Some([101; 32]));
        assert_eq!(q.shift(&mut rng), None);
    }
}
