//! `hyperdht-chat node` as a user runs it: a new network's first node, a second node joining
//! it, a Node.js node bootstrapping from them, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hyperdht_proto::NodeId;
use hyperdht_tests::js::{interop_enabled, JsHarness, NodeOptions};
use serde_json::json;

/// A running `hyperdht-chat node`, killed on drop if still alive.
struct NodeProcess {
    child: Option<Child>,
    addr: SocketAddrV4,
    id: NodeId,
}

impl NodeProcess {
    fn start(args: &[&str]) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hyperdht-chat"))
            .arg("node")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hyperdht-chat");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("node printed its listening line");
        // "node listening on HOST:PORT id <64 hex>"
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            &parts[..3],
            ["node", "listening", "on"],
            "unexpected line {line:?}"
        );
        assert_eq!(parts[4], "id", "unexpected line {line:?}");
        NodeProcess {
            child: Some(child),
            addr: parts[3].parse().expect("address"),
            id: NodeId::from_hex(parts[5]).expect("64 hex id"),
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send(());
            (status, child)
        });
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            panic!("node did not exit within 10 s of SIGTERM");
        }
        waiter.join().unwrap().0.unwrap()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn node_command_serves_a_new_network() {
    if !interop_enabled() {
        return;
    }
    // Port 0: the first node binds a free port and announces that one.
    let first = NodeProcess::start(&["--host", "127.0.0.1", "--port", "0", "--bootstrap", "none"]);
    assert_eq!(first.addr.ip(), &Ipv4Addr::LOCALHOST);
    assert_ne!(first.addr.port(), 0);
    assert_eq!(
        first.id,
        NodeId::from_addr(&first.addr),
        "first node is persistent at once"
    );

    let boot = first.addr.to_string();
    let second = NodeProcess::start(&[
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--bootstrap",
        &boot,
        "--persistent",
    ]);
    assert_eq!(
        second.id,
        NodeId::from_addr(&second.addr),
        "second node became persistent"
    );

    let h = JsHarness::new().expect("harness");
    let js = h
        .create_node(&NodeOptions {
            bootstrap: vec![first.addr],
            ephemeral: Some(false),
            ..NodeOptions::default()
        })
        .expect("JS node bootstraps from the Rust node");
    let table: Vec<[u8; 32]> = h
        .table(js.handle)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert!(
        table.contains(&first.id.0) && table.contains(&second.id.0),
        "JS table {table:?}"
    );

    assert!(second.terminate().success(), "clean exit on SIGTERM");
    assert!(first.terminate().success(), "clean exit on SIGTERM");
}

#[test]
fn bad_flags_are_explained() {
    let out = Command::new(env!("CARGO_BIN_EXE_hyperdht-chat"))
        .args(["node", "--bootstrap", "none"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--host"),
        "explains that --host is needed: {err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_hyperdht-chat"))
        .args(["node", "--frobnicate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--frobnicate'"));

    let out = Command::new(env!("CARGO_BIN_EXE_hyperdht-chat"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--bootstrap"));
}

#[test]
fn js_peers_connect_through_ten_cli_nodes() {
    if !interop_enabled() {
        return;
    }
    let first = NodeProcess::start(&["--host", "127.0.0.1", "--port", "0", "--bootstrap", "none"]);
    let boot = first.addr.to_string();
    let others: Vec<NodeProcess> = (0..9)
        .map(|_| {
            NodeProcess::start(&[
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--bootstrap",
                &boot,
                "--persistent",
            ])
        })
        .collect();
    for n in &others {
        assert_eq!(
            n.id,
            NodeId::from_addr(&n.addr),
            "CLI node became persistent"
        );
    }

    // JS peers whose only DHT nodes are the ten Rust processes (JS nodes start ephemeral, so
    // they route and relay through nobody but the Rust nodes).
    let h = JsHarness::new().expect("harness");
    let server = h.call("createNode", json!({"bootstrap": [boot]})).unwrap();
    let client = h.call("createNode", json!({"bootstrap": [boot]})).unwrap();
    assert_eq!(server["ephemeral"], true);
    assert_eq!(client["ephemeral"], true);
    let table = h.table(client["node"].as_u64().unwrap()).unwrap();
    let rust_ids: Vec<[u8; 32]> = others.iter().chain([&first]).map(|n| n.id.0).collect();
    assert!(
        table.iter().all(|p| rust_ids.contains(&p.id)),
        "only Rust nodes route"
    );

    let seed = "5e".repeat(32);
    let pk = h
        .call("listen", json!({"node": server["node"], "seed": seed}))
        .unwrap()["publicKey"]
        .clone();
    let msg = hyperdht_proto::to_hex(b"relayed by hyperdht-chat nodes");
    let echo = h
        .call(
            "connectEcho",
            json!({"node": client["node"], "publicKey": pk, "message": msg}),
        )
        .unwrap();
    assert_eq!(echo["echo"].as_str().unwrap(), msg);
    assert_eq!(echo["remotePublicKey"], pk);

    // JS records on the Rust network too.
    let topic = "ab".repeat(32);
    h.call(
        "announce",
        json!({"node": server["node"], "topic": topic, "seed": seed}),
    )
    .unwrap();
    let found = h
        .call("lookup", json!({"node": client["node"], "topic": topic}))
        .unwrap();
    assert!(found.as_array().unwrap().iter().any(|r| r["peers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["publicKey"] == pk)));
    let put = h
        .call(
            "mutablePut",
            json!({"node": client["node"], "seed": "11".repeat(32), "value": "6869", "seq": 2}),
        )
        .unwrap();
    let pk11 = h.call("keyPair", json!({"seed": "11".repeat(32)})).unwrap()["publicKey"].clone();
    let got = h
        .call(
            "mutableGet",
            json!({"node": server["node"], "publicKey": pk11}),
        )
        .unwrap();
    assert_eq!(got["signature"], put["signature"]);
    let imm = h
        .call(
            "immutablePut",
            json!({"node": server["node"], "value": "abcdef"}),
        )
        .unwrap();
    let got = h
        .call(
            "immutableGet",
            json!({"node": client["node"], "hash": imm["hash"]}),
        )
        .unwrap();
    assert_eq!(got["value"], "abcdef");

    for n in others {
        assert!(n.terminate().success());
    }
    assert!(first.terminate().success());
}
