//! Routing-table invariants under random insert / remove / touch / re-centre sequences,
//! checked against a simple model after every operation.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use proptest::collection::vec;
use proptest::prelude::*;

use hyperdht_proto::rng::Rng;
use hyperdht_proto::routing::{Insert, RoutingTable, TableNode, K};
use hyperdht_proto::NodeId;

/// An id relative to the table's: `prefix` bits shared with `own`, then a flipped bit, then
/// `noise`. `prefix` 256 means `own` itself. Small prefixes dominate random ids, so deep rows
/// need this to be exercised at all.
#[derive(Clone, Copy, Debug)]
struct IdSpec {
    prefix: u16,
    noise: [u8; 32],
}

fn id_spec() -> impl Strategy<Value = IdSpec> {
    (
        prop_oneof![
            4 => 0u16..4,     // crowded rows: fill them to k and beyond
            3 => 0u16..256,
            1 => 250u16..256, // the deepest rows
            1 => Just(256u16),
        ],
        any::<[u8; 32]>(),
    )
        .prop_map(|(prefix, noise)| IdSpec { prefix, noise })
}

fn make_id(own: &NodeId, spec: IdSpec) -> NodeId {
    let p = spec.prefix as usize;
    if p >= 256 {
        return *own;
    }
    let mut id = spec.noise;
    for bit in 0..=p {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        let own_bit = own.0[byte] & mask;
        let want = if bit < p { own_bit } else { own_bit ^ mask };
        id[byte] = (id[byte] & !mask) | want;
    }
    NodeId(id)
}

#[derive(Clone, Debug)]
enum Op {
    Insert(IdSpec, u16),
    /// Remove the `n`-th known id (modulo), or a fresh one.
    Remove(usize, IdSpec),
    Touch(usize),
    /// Re-insert a known id (replaces its entry).
    Reinsert(usize, u16),
    Recentre(IdSpec),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (id_spec(), any::<u16>()).prop_map(|(s, p)| Op::Insert(s, p)),
        2 => (any::<usize>(), id_spec()).prop_map(|(n, s)| Op::Remove(n, s)),
        3 => any::<usize>().prop_map(Op::Touch),
        2 => (any::<usize>(), any::<u16>()).prop_map(|(n, p)| Op::Reinsert(n, p)),
        1 => id_spec().prop_map(Op::Recentre),
    ]
}

/// The model: the nodes we expect (id → addr) and their recency order (oldest first).
#[derive(Default)]
struct Model {
    nodes: BTreeMap<NodeId, SocketAddrV4>,
    recency: Vec<NodeId>,
}

impl Model {
    fn bump(&mut self, id: NodeId) {
        self.recency.retain(|x| *x != id);
        self.recency.push(id);
    }

    fn nth(&self, n: usize) -> Option<NodeId> {
        if self.recency.is_empty() {
            None
        } else {
            Some(self.recency[n % self.recency.len()])
        }
    }
}

fn addr(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, (port >> 8) as u8, port as u8), port)
}

fn brute_force_closest(t: &RoutingTable, target: &NodeId, k: usize) -> Vec<NodeId> {
    let mut all: Vec<NodeId> = t.iter().map(|n| n.id).collect();
    all.sort_by_key(|id| target.distance(id));
    all.truncate(k);
    all
}

fn check(
    t: &RoutingTable,
    m: &Model,
    targets: &[IdSpec],
    ks: &[usize],
) -> Result<(), TestCaseError> {
    let own = *t.id();
    prop_assert_eq!(t.len(), m.nodes.len());
    prop_assert_eq!(t.is_empty(), m.nodes.is_empty());
    prop_assert!(t.len() <= 256 * K);
    prop_assert!(!t.contains(&own));
    let mut total = 0;
    for i in 0..256 {
        let row = t.row(i);
        prop_assert!(row.len() <= K, "row {} has {}", i, row.len());
        total += row.len();
        for w in row.windows(2) {
            prop_assert!(w[0].id < w[1].id, "row {} is sorted by id", i);
        }
        for n in row {
            prop_assert_ne!(n.id, own);
            prop_assert_eq!(own.common_prefix_len(&n.id).min(255), i);
            prop_assert_eq!(t.row_index(&n.id), i);
            prop_assert_eq!(m.nodes.get(&n.id), Some(&n.addr));
        }
    }
    prop_assert!(t.row(256).is_empty());
    prop_assert_eq!(total, t.len());
    prop_assert_eq!(t.iter().count(), t.len());
    for (id, a) in &m.nodes {
        prop_assert_eq!(t.get(id).map(|n| n.addr), Some(*a));
        prop_assert!(t.contains(id));
    }

    let oldest: Vec<NodeId> = t.oldest_first().copied().collect();
    prop_assert_eq!(&oldest, &m.recency, "recency order");
    let mut latest: Vec<NodeId> = t.latest_first().copied().collect();
    latest.reverse();
    prop_assert_eq!(&latest, &oldest);

    for (spec, &k) in targets.iter().zip(ks) {
        let target = make_id(&own, *spec);
        let got: Vec<NodeId> = t.closest(&target, k).iter().map(|n| n.id).collect();
        prop_assert_eq!(
            got,
            brute_force_closest(t, &target, k),
            "closest(k = {})",
            k
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn table_invariants_hold(
        own in any::<[u8; 32]>(),
        ops in vec(op(), 1..250),
        targets in vec(id_spec(), 3),
        ks in vec(prop_oneof![Just(0usize), Just(1), Just(K), 2usize..60], 3),
    ) {
        let mut t = RoutingTable::new(NodeId(own));
        let mut m = Model::default();
        for (step, o) in ops.into_iter().enumerate() {
            let own = *t.id();
            match o {
                Op::Insert(spec, port) => {
                    let id = make_id(&own, spec);
                    let res = t.insert(TableNode::new(id, addr(port), step as u64));
                    if id == own {
                        prop_assert_eq!(res, Insert::OwnId);
                    } else if m.nodes.contains_key(&id) {
                        prop_assert_eq!(res, Insert::Replaced);
                        m.nodes.insert(id, addr(port));
                        m.bump(id);
                    } else {
                        let row = t.row_index(&id);
                        let full = m.nodes.keys().filter(|n| t.row_index(n) == row).count() >= K;
                        if full {
                            prop_assert_eq!(res, Insert::Full(row));
                        } else {
                            prop_assert_eq!(res, Insert::Added);
                            m.nodes.insert(id, addr(port));
                            m.bump(id);
                        }
                    }
                }
                Op::Remove(n, spec) => {
                    let id = if n % 3 == 0 { make_id(&own, spec) } else { m.nth(n).unwrap_or(own) };
                    let removed = t.remove(&id);
                    prop_assert_eq!(removed.map(|r| r.id), m.nodes.remove(&id).map(|_| id));
                    m.recency.retain(|x| *x != id);
                }
                Op::Touch(n) => {
                    if let Some(id) = m.nth(n) {
                        t.touch(&id);
                        m.bump(id);
                    } else {
                        t.touch(&own);
                    }
                }
                Op::Reinsert(n, port) => {
                    if let Some(id) = m.nth(n) {
                        prop_assert_eq!(t.insert(TableNode::new(id, addr(port), step as u64)), Insert::Replaced);
                        m.nodes.insert(id, addr(port));
                        m.bump(id);
                    }
                }
                Op::Recentre(spec) => {
                    let new_id = make_id(&own, spec);
                    let before: Vec<NodeId> = m.recency.clone();
                    let dropped = t.recentre(new_id);
                    prop_assert_eq!(t.id(), &new_id);
                    let dropped_ids: Vec<NodeId> = dropped.iter().map(|n| n.id).collect();
                    // Nodes are re-added oldest first, so a full row keeps its oldest nodes.
                    let mut kept = Vec::new();
                    let mut per_row: BTreeMap<usize, usize> = BTreeMap::new();
                    for id in &before {
                        let row = t.row_index(id);
                        let c = per_row.entry(row).or_default();
                        if *id == new_id || *c >= K {
                            prop_assert!(dropped_ids.contains(id));
                        } else {
                            *c += 1;
                            kept.push(*id);
                        }
                    }
                    prop_assert_eq!(dropped_ids.len() + kept.len(), before.len());
                    m.nodes.retain(|id, _| kept.contains(id));
                    m.recency = kept;
                }
            }
            check(&t, &m, &targets, &ks)?;
        }
    }

    /// `random` only returns table nodes, and `None` only for an empty table.
    #[test]
    fn random_returns_table_nodes(own in any::<[u8; 32]>(), specs in vec(id_spec(), 0..60), seed in any::<[u8; 32]>()) {
        let own = NodeId(own);
        let mut t = RoutingTable::new(own);
        for (i, s) in specs.iter().enumerate() {
            t.insert(TableNode::new(make_id(&own, *s), addr(i as u16), 0));
        }
        let mut rng = Rng::from_seed(seed);
        for _ in 0..20 {
            match t.random(&mut rng) {
                Some(n) => prop_assert!(t.contains(&n.id)),
                None => prop_assert!(t.is_empty()),
            }
        }
    }
}

#[test]
fn make_id_has_the_requested_prefix() {
    let own = NodeId([0x5a; 32]);
    for p in 0..256u16 {
        let id = make_id(
            &own,
            IdSpec {
                prefix: p,
                noise: [0xff; 32],
            },
        );
        assert_eq!(own.common_prefix_len(&id), p as usize);
    }
    assert_eq!(
        make_id(
            &own,
            IdSpec {
                prefix: 256,
                noise: [0; 32]
            }
        ),
        own
    );
}
