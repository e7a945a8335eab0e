//! The committed byte vectors (`tests/vectors/*.json`) are what our generator
//! (`tests/js/vectors`, `npm run vectors`) prints from the npm packages pinned in `tests/js`.
//!
//! [`committed_vectors_are_what_the_generator_prints`] runs `node vectors/index.js --out DIR`
//! into a fresh directory under `CARGO_TARGET_TMPDIR` (when Node.js is available, as every
//! interop test: [`hyperdht_tests::js::interop_enabled`], which runs `npm ci` if
//! `tests/js/node_modules` is missing) and compares, with [`differences`]:
//!
//! - the file names: every committed file is generated, every generated file is committed;
//! - every file except `udx.json`, **byte for byte**. The generators make these deterministic:
//!   fixed seeds and key pairs, pinned dht-rpc tids and token secrets, seeded
//!   `randombytes_buf`/`Math.random`/secret-stream headers (`tests/js/vectors/lib.js`), and the
//!   loopback captures (`wire.json`, `relay.json`) bind fixed ports on 127.0.0.2, so even their
//!   addresses and node ids repeat;
//! - `udx.json`, a transcript of real udx-native streams through a proxy on 127.0.0.1, by its
//!   deterministic parts only. The generator already leaves out the ephemeral ports and the
//!   timestamps. Which pure ACKs and SACKs the receiver sends, how many HEARTBEATs fit in the
//!   idle phase and which packets get retransmitted (tail-loss probes) depend on timing, and
//!   the bulk phase's MTU probes (`mtu`) land on timing-dependent packets. So the check
//!   compares `streamIds`; the events as a sorted list; the union of the flags of all packets
//!   (so both transcripts contain DATA, END, SACK, MESSAGE, DESTROY and HEARTBEAT); and, per
//!   direction, the distinct packets that carry DATA, END, MESSAGE, DESTROY or HEARTBEAT or are
//!   not UDX, every field (header bytes, lengths, seq/ack, drop mark) included, in the order
//!   of their first appearance. Pure ACK/SACK packets and `mtu` are not compared.
//!
//! The wire and relay captures need 127.0.0.2 ports 40000, 40001 and 49737: when another run
//! holds them (`EADDRINUSE`), the generator is retried a few times.
//!
//! [`the_comparison_notices_changes`] checks, without Node.js, that [`differences`] reports an
//! altered byte in a deterministic file and in a compared UDX packet, and ignores a changed
//! pure ACK.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use hyperdht_tests::js::{interop_enabled, js_dir};
use hyperdht_tests::support::vectors_dir;

/// The files of a vector directory: name -> contents.
type Files = BTreeMap<String, String>;

fn read_dir(dir: &Path) -> Files {
    let mut files = Files::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            files.insert(name, text);
        }
    }
    files
}

/// UDX flags that make a packet part of the compared transcript (everything but ACK/SACK).
const STREAM_FLAGS: u64 = 0x01 | 0x02 | 0x08 | 0x10 | 0x20;

/// The deterministic parts of `udx.json` (see the module docs), as one JSON value.
fn udx_projection(text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("udx.json: {e}"))?;
    let packets = v["packets"].as_array().ok_or("udx.json: no packets")?;
    let mut flags = 0;
    let mut directions = BTreeMap::<String, Vec<Value>>::new();
    for p in packets {
        let udx = p["udx"] != Value::Bool(false);
        let f = p["flags"].as_u64().unwrap_or(0);
        flags |= f;
        if udx && f & STREAM_FLAGS == 0 {
            continue;
        }
        let dir = p["dir"].as_str().ok_or("udx.json: packet without dir")?;
        let list = directions.entry(dir.to_string()).or_default();
        if !list.contains(p) {
            list.push(p.clone());
        }
    }
    let mut events: Vec<String> = v["events"]
        .as_array()
        .ok_or("udx.json: no events")?
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_string())
        .collect();
    events.sort();
    Ok(serde_json::json!({
        "streamIds": v["streamIds"],
        "events": events,
        "flagsSeen": flags,
        "streamPackets": directions,
    }))
}

/// The first line where `a` and `b` differ, for the report.
fn first_difference(a: &str, b: &str) -> String {
    let (mut la, mut lb) = (a.lines(), b.lines());
    for n in 1.. {
        match (la.next(), lb.next()) {
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return "only in line endings".to_string(),
            (x, y) => {
                return format!(
                    "line {n}: committed {:?}, generated {:?}",
                    x.unwrap_or("<end>"),
                    y.unwrap_or("<end>")
                )
            }
        }
    }
    unreachable!()
}

/// Every way `fresh` (generated) differs from `committed`; empty when they agree.
fn differences(committed: &Files, fresh: &Files) -> Vec<String> {
    let mut out = Vec::new();
    for name in committed.keys().filter(|n| !fresh.contains_key(*n)) {
        out.push(format!(
            "{name}: committed, but the generator does not write it"
        ));
    }
    for name in fresh.keys().filter(|n| !committed.contains_key(*n)) {
        out.push(format!("{name}: generated, but not committed"));
    }
    for (name, mine) in committed {
        let Some(theirs) = fresh.get(name) else {
            continue;
        };
        if name == "udx.json" {
            match (udx_projection(mine), udx_projection(theirs)) {
                (Ok(a), Ok(b)) if a == b => {}
                (Ok(a), Ok(b)) => out.push(format!(
                    "udx.json: the deterministic parts differ: {}",
                    first_difference(
                        &serde_json::to_string_pretty(&a).unwrap(),
                        &serde_json::to_string_pretty(&b).unwrap()
                    )
                )),
                (a, b) => out.push(format!("udx.json: {:?} / {:?}", a.err(), b.err())),
            }
        } else if mine != theirs {
            out.push(format!("{name}: {}", first_difference(mine, theirs)));
        }
    }
    out
}

/// Runs the generator into `out`; `Err` with its stderr when it fails.
fn generate(out: &Path) -> Result<(), String> {
    let output = Command::new("node")
        .arg("vectors/index.js")
        .arg("--out")
        .arg(out)
        .current_dir(js_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "the generator failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[test]
fn committed_vectors_are_what_the_generator_prints() {
    if !interop_enabled() {
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vectors-{}-{nanos}", std::process::id()));
    let mut attempt = 1;
    loop {
        match generate(&out) {
            Ok(()) => break,
            Err(e) if e.contains("EADDRINUSE") && attempt < 5 => {
                eprintln!("attempt {attempt}: the capture ports are busy; retrying\n{e}");
                attempt += 1;
                std::thread::sleep(Duration::from_secs(3));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let fresh = read_dir(&out);
    let _ = std::fs::remove_dir_all(&out);
    let diffs = differences(&read_dir(&vectors_dir()), &fresh);
    assert!(
        diffs.is_empty(),
        "tests/vectors is not what `npm run vectors` (in tests/js) prints; run it and commit \
         the result if the change is intended:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn the_comparison_notices_changes() {
    let committed = read_dir(&vectors_dir());
    assert!(committed.len() >= 9, "vector files: {:?}", committed.keys());
    assert!(differences(&committed, &committed).is_empty());

    // One hex digit of a captured datagram.
    let mut altered = committed.clone();
    let wire = altered.get_mut("wire.json").unwrap();
    let at = wire.find("\"030434127f000002409c00\"").unwrap() + 1;
    wire.replace_range(at..at + 1, "1");
    let d = differences(&committed, &altered);
    assert!(d.len() == 1 && d[0].starts_with("wire.json: line"), "{d:?}");

    // A missing file and an extra one.
    let mut altered = committed.clone();
    let text = altered.remove("ids.json").unwrap();
    altered.insert("extra.json".into(), text);
    assert_eq!(differences(&committed, &altered).len(), 2);

    // UDX: the seq of a compared packet is noticed; a pure ACK's is not.
    let udx: Value = serde_json::from_str(&committed["udx.json"]).unwrap();
    let with = |pred: fn(u64) -> bool, seq: u64| {
        let mut v = udx.clone();
        let p = v["packets"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|p| p["flags"].as_u64().is_some_and(pred))
            .unwrap();
        p["seq"] = seq.into();
        let mut files = committed.clone();
        files.insert("udx.json".into(), serde_json::to_string_pretty(&v).unwrap());
        files
    };
    let data = with(|f| f & STREAM_FLAGS != 0, 999);
    let d = differences(&committed, &data);
    assert!(d.len() == 1 && d[0].starts_with("udx.json"), "{d:?}");
    let ack = with(|f| f == 0, 999);
    assert!(differences(&committed, &ack).is_empty());
}
