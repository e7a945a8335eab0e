//! Every command number answered as the real Node.js nodes answer it (dht-rpc 6.27
//! `_onrequest`, hyperdht 6.34 `onrequest`), all on 127.0.0.1.
//!
//! - The same request shapes (external and internal, every hyperdht command, unknown command
//!   numbers, PLUGIN, with and without target, value and token) sent by a JS node to a JS node
//!   and to a Rust node of the same kind (persistent, ephemeral) get the same kind of answer:
//!   silence, or a reply with the same error code, token presence, closer-node presence and
//!   value.
//! - A JS application's query with a command of its own over a network of JS and Rust nodes
//!   gets an UNKNOWN_COMMAND reply from every node, never waits out a timeout, and sends the
//!   DOWN_HINTs it would send over an all-JS network (none).

use std::collections::BTreeSet;
use std::net::SocketAddrV4;

use hyperdht_mio::MioNode;
use hyperdht_proto::rng::Rng;
use hyperdht_proto::Persistence;
use hyperdht_tests::js::{interop_enabled, JsHarness, JsNode, JsRequest, NodeOptions};
use hyperdht_tests::js::{JsResponse, RequestOutcome};
use hyperdht_tests::support::{loopback_config, spawn_bootstrapped, v4};

/// hyperdht's commands (`lib/constants.js` `COMMANDS`), then numbers nobody defines.
const PEER_HANDSHAKE: u64 = 0;
const LOOKUP: u64 = 3;
const PLUGIN: u64 = 10;
const APP_COMMAND: u64 = 52;
/// dht-rpc `lib/errors.js`.
const UNKNOWN_COMMAND: u64 = 1;

/// What kind of answer a request got, with what differs per node (addresses, ids, which closer
/// nodes, tids) left out.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Shape {
    Silent,
    Reply {
        error: u64,
        token: bool,
        closer_nodes: bool,
        value: Option<Vec<u8>>,
    },
}

impl Shape {
    fn of(outcome: RequestOutcome) -> Shape {
        match outcome {
            RequestOutcome::Timeout => Shape::Silent,
            RequestOutcome::Response(r) => Shape::of_response(&r),
        }
    }

    fn of_response(r: &JsResponse) -> Shape {
        Shape::Reply {
            error: r.error,
            token: r.token.is_some(),
            closer_nodes: !r.closer_nodes.is_empty(),
            value: r.value.clone(),
        }
    }
}

/// One request shape: the request for a destination, and a name for messages.
struct Probe {
    name: String,
    internal: bool,
    command: u64,
    target: Option<[u8; 32]>,
    value: Option<Vec<u8>>,
    /// A token that no node issued.
    bad_token: bool,
}

fn probes() -> Vec<Probe> {
    let target = [0x5a; 32];
    let mut v = Vec::new();
    let mut add = |internal, command, target: Option<[u8; 32]>, value: Option<Vec<u8>>, bad| {
        v.push(Probe {
            name: format!(
                "{} command {command}{}{}{}",
                if internal { "internal" } else { "external" },
                if target.is_some() { " +target" } else { "" },
                if value.is_some() { " +value" } else { "" },
                if bad { " +bad token" } else { "" },
            ),
            internal,
            command,
            target,
            value,
            bad_token: bad,
        });
    };
    // Every hyperdht command, the unknown numbers right after them and far away, PLUGIN.
    for command in (PEER_HANDSHAKE..=12).chain([APP_COMMAND, 0xfd, 0x1_0000]) {
        add(false, command, None, None, false);
        add(false, command, Some(target), None, false);
        add(false, command, Some(target), Some(vec![0]), false);
    }
    // Unknown internal commands (dht-rpc's own are 0..=4, tested in interop_dht).
    for command in [5, 11, APP_COMMAND] {
        add(true, command, None, None, false);
        add(true, command, Some(target), None, false);
    }
    // A token the node never issued is refused before the command is looked at.
    add(false, APP_COMMAND, Some(target), None, true);
    add(false, LOOKUP, Some(target), None, true);
    v
}

/// Sends every probe from JS node `from` to `to` at once (silent ones cost one second each,
/// in parallel) and returns the shapes in probe order.
fn shapes(h: &JsHarness, from: u64, to: SocketAddrV4, probes: &[Probe]) -> Vec<Shape> {
    std::thread::scope(|s| {
        let jobs: Vec<_> = probes
            .iter()
            .map(|p| {
                s.spawn(move || {
                    let mut req = JsRequest::new(to, p.internal, p.command);
                    req.target = p.target;
                    req.value = p.value.clone();
                    req.token = p.bad_token.then_some([0xee; 32]);
                    req.retries = Some(0);
                    Shape::of(h.request(from, &req).expect("js request"))
                })
            })
            .collect();
        jobs.into_iter()
            .map(|j| j.join().expect("probe thread"))
            .collect()
    })
}

fn rust_node(boot: &[SocketAddrV4], persistence: Persistence) -> MioNode {
    let mut c = loopback_config(boot);
    c.persistence = persistence;
    spawn_bootstrapped(c)
}

fn js_ephemeral(h: &JsHarness, boot: &[SocketAddrV4]) -> JsNode {
    h.create_node(&NodeOptions {
        bootstrap: boot.to_vec(),
        ephemeral: Some(true),
        ..NodeOptions::default()
    })
    .expect("js ephemeral node")
}

#[test]
fn every_command_is_answered_as_js_answers_it() {
    if !interop_enabled() {
        return;
    }
    let h = JsHarness::new().expect("harness");
    let net = h.testnet(4).expect("js testnet");
    let rust_persistent = rust_node(&net.bootstrap, Persistence::Persistent);
    assert!(
        rust_persistent.info().unwrap().id.is_some(),
        "the Rust node became persistent"
    );
    let rust_ephemeral = rust_node(&net.bootstrap, Persistence::Ephemeral);
    let js_eph = js_ephemeral(&h, &net.bootstrap);
    assert!(js_eph.ephemeral);
    let asker = net.nodes[1].handle;
    let probes = probes();

    let pairs = [
        (
            "persistent",
            net.nodes[3].addr,
            v4(rust_persistent.local_addr()),
        ),
        ("ephemeral", js_eph.addr, v4(rust_ephemeral.local_addr())),
    ];
    for (kind, js_addr, rust_addr) in pairs {
        let js = shapes(&h, asker, js_addr, &probes);
        let rust = shapes(&h, asker, rust_addr, &probes);
        let differ: Vec<String> = probes
            .iter()
            .zip(js.iter().zip(&rust))
            .filter(|(_, (j, r))| j != r)
            .map(|(p, (j, r))| format!("{}: JS {j:?}, Rust {r:?}", p.name))
            .collect();
        assert!(
            differ.is_empty(),
            "{kind} nodes answer differently:\n{}",
            differ.join("\n")
        );
        // What JS does, spelled out for the cases this test is about (so a harness that
        // lost every reply would not pass by agreeing on silence).
        let shape_of = |name: &str| {
            let i = probes.iter().position(|p| p.name == name).unwrap();
            js[i].clone()
        };
        assert_eq!(
            shape_of("external command 52 +target"),
            Shape::Reply {
                error: UNKNOWN_COMMAND,
                token: false,
                closer_nodes: true,
                value: None
            },
            "{kind}: an unknown command gets UNKNOWN_COMMAND with closer nodes"
        );
        assert_eq!(
            shape_of("external command 52"),
            Shape::Reply {
                error: UNKNOWN_COMMAND,
                token: false,
                closer_nodes: false,
                value: None
            },
            "{kind}: no target, no closer nodes"
        );
        assert_eq!(
            shape_of("internal command 11 +target"),
            shape_of("external command 52 +target")
        );
        let plugin = shape_of(&format!("external command {PLUGIN} +target +value"));
        match kind {
            "persistent" => assert_eq!(plugin, Shape::Silent, "PLUGIN is dropped"),
            _ => assert_eq!(
                plugin,
                shape_of("external command 52 +target"),
                "an ephemeral node stores nothing and knows no hyperdht storage command"
            ),
        }
    }
}

#[test]
fn an_application_query_over_rust_nodes_waits_for_no_timeout() {
    if !interop_enabled() {
        return;
    }
    let mut rng = Rng::from_seed([15; 32]);
    let target = rng.bytes32();

    // All JS: the baseline.
    let h_js = JsHarness::new().expect("harness");
    let all_js = h_js.testnet(8).expect("js testnet");
    let js_querier = js_ephemeral(&h_js, &all_js.bootstrap);
    let baseline = h_js
        .query(js_querier.handle, APP_COMMAND, &target, None)
        .expect("query over all-JS");

    // Mixed: 4 JS nodes and 4 persistent Rust nodes.
    let h = JsHarness::new().expect("harness");
    let mixed = h.testnet(4).expect("js testnet");
    let rust: Vec<MioNode> = (0..4)
        .map(|_| rust_node(&mixed.bootstrap, Persistence::Persistent))
        .collect();
    let querier = js_ephemeral(&h, &mixed.bootstrap);
    let q = h
        .query(querier.handle, APP_COMMAND, &target, None)
        .expect("query over JS and Rust");
    eprintln!(
        "query for command {APP_COMMAND}: all JS {} replies in {} ms, mixed {} replies in {} ms",
        baseline.replies.len(),
        baseline.elapsed_ms,
        q.replies.len(),
        q.elapsed_ms
    );

    for (name, run, nodes) in [
        (
            "all JS",
            &baseline,
            all_js.nodes.iter().map(|n| n.addr).collect::<Vec<_>>(),
        ),
        (
            "mixed",
            &q,
            mixed
                .nodes
                .iter()
                .map(|n| n.addr)
                .chain(rust.iter().map(|n| v4(n.local_addr())))
                .collect(),
        ),
    ] {
        assert_eq!(run.timeouts, 0, "{name}: no request of the walk timed out");
        assert_eq!(run.successes, 0, "{name}: nobody knows command 52");
        for r in &run.replies {
            assert_eq!(
                Shape::of_response(r),
                Shape::Reply {
                    error: UNKNOWN_COMMAND,
                    token: false,
                    closer_nodes: true,
                    value: None
                },
                "{name}: the reply of {} is UNKNOWN_COMMAND with closer nodes",
                r.from.addr
            );
        }
        let repliers: BTreeSet<SocketAddrV4> = run.replies.iter().map(|r| r.from.addr).collect();
        let expected: BTreeSet<SocketAddrV4> = nodes.into_iter().collect();
        assert_eq!(
            repliers, expected,
            "{name}: every node of the network answered the walk"
        );
        assert_eq!(run.errors, run.replies.len() as u64);
    }
    assert_eq!(
        q.down_hints_sent, baseline.down_hints_sent,
        "the JS querier sends the DOWN_HINTs it sends over an all-JS network"
    );
    assert_eq!(baseline.down_hints_sent, 0);
}
