//! Majority vote over how others see our address (npm `nat-sampler` 1.0).
//!
//! Each sample bumps a `host:port` and a `host` counter, matched only against the last four
//! samples of each kind; 32 slots hold the last 16 samples. The threshold is n, n-1, n-2, n-3
//! for n < 4, < 8, < 12, and above. A winning `host:port` means a consistent NAT (or none);
//! a winning host alone means a randomising NAT (port reported as 0).

use std::net::Ipv4Addr;

#[derive(Clone, Copy, Debug)]
struct Sample {
    host: Ipv4Addr,
    port: u16,
    hits: u32,
}

/// The sampler.
#[derive(Clone, Debug, Default)]
pub struct NatSampler {
    host: Option<Ipv4Addr>,
    port: u16,
    size: u32,
    threshold: u32,
    top: usize,
    samples: Vec<usize>,
    pool: Vec<Sample>,
    a: Option<usize>,
    b: Option<usize>,
}

impl NatSampler {
    /// An empty sampler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Our public host, when the vote agrees on one.
    pub fn host(&self) -> Option<Ipv4Addr> {
        self.host
    }

    /// Our public port when consistent, else 0.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Number of samples counted so far (at most 16).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Adds one observation; returns the hit count of its `host:port`.
    pub fn add(&mut self, host: Ipv4Addr, port: u16) -> u32 {
        let a = self.bump(host, port, 2);
        let b = self.bump(host, 0, 1);

        if self.samples.len() < 32 {
            self.size += 1;
            self.threshold = self.size
                - if self.size < 4 {
                    0
                } else if self.size < 8 {
                    1
                } else if self.size < 12 {
                    2
                } else {
                    3
                };
            self.samples.push(a);
            self.samples.push(b);
            self.top += 2;
        } else {
            if self.top == 32 {
                self.top = 0;
            }
            let oa = self.samples[self.top];
            self.samples[self.top] = a;
            self.top += 1;
            self.pool[oa].hits -= 1;
            let ob = self.samples[self.top];
            self.samples[self.top] = b;
            self.top += 1;
            self.pool[ob].hits -= 1;
        }

        if self.a.is_none_or(|x| self.pool[x].hits < self.pool[a].hits) {
            self.a = Some(a);
        }
        if self.b.is_none_or(|x| self.pool[x].hits < self.pool[b].hits) {
            self.b = Some(b);
        }
        let (sa, sb) = (
            self.pool[self.a.unwrap_or(a)],
            self.pool[self.b.unwrap_or(b)],
        );
        if sa.hits >= self.threshold {
            self.host = Some(sa.host);
            self.port = sa.port;
        } else if sb.hits >= self.threshold {
            self.host = Some(sb.host);
            self.port = 0;
        } else {
            self.host = None;
            self.port = 0;
        }
        let hits = self.pool[a].hits;
        self.gc();
        hits
    }

    /// Finds the sample among the last four of this kind, or makes a new one; returns its slot
    /// in the pool.
    fn bump(&mut self, host: Ipv4Addr, port: u16, inc: usize) -> usize {
        for i in 0..4 {
            let j = (self.top.wrapping_sub(inc).wrapping_sub(2 * i)) & 31;
            if j >= self.samples.len() {
                break;
            }
            let s = self.samples[j];
            if self.pool[s].port == port && self.pool[s].host == host {
                self.pool[s].hits += 1;
                return s;
            }
        }
        self.pool.push(Sample {
            host,
            port,
            hits: 1,
        });
        self.pool.len() - 1
    }

    /// Keeps the pool bounded: drops samples no slot refers to.
    fn gc(&mut self) {
        if self.pool.len() < 128 {
            return;
        }
        let mut keep: Vec<usize> = self.samples.clone();
        keep.extend(self.a);
        keep.extend(self.b);
        keep.sort_unstable();
        keep.dedup();
        let mut remap = vec![usize::MAX; self.pool.len()];
        let mut pool = Vec::with_capacity(keep.len());
        for old in keep {
            remap[old] = pool.len();
            pool.push(self.pool[old]);
        }
        for s in &mut self.samples {
            *s = remap[*s];
        }
        self.a = self.a.map(|x| remap[x]);
        self.b = self.b.map(|x| remap[x]);
        self.pool = pool;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_and_random() {
        let h: Ipv4Addr = "1.2.3.4".parse().unwrap();
        let mut n = NatSampler::new();
        n.add(h, 1000);
        assert_eq!((n.host(), n.port()), (Some(h), 1000));
        n.add(h, 1000);
        n.add(h, 1000);
        assert_eq!((n.host(), n.port()), (Some(h), 1000));

        let mut r = NatSampler::new();
        r.add(h, 1000);
        r.add(h, 1001);
        assert_eq!((r.host(), r.port()), (Some(h), 0));
        r.add("5.6.7.8".parse().unwrap(), 1);
        assert_eq!(r.host(), None);
    }

    #[test]
    fn bounded_under_many_samples() {
        let mut n = NatSampler::new();
        for i in 0..10_000u32 {
            n.add(Ipv4Addr::from(i), i as u16);
        }
        assert!(n.pool.len() < 200);
        assert_eq!(n.size(), 16);
    }
}
