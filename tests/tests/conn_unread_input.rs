//! A connection holds at most `MAX_UNREAD_INPUT` of input the application has not read, the
//! part of a secret-stream frame still coming in included; what the peer sends past it waits
//! in the UDX receive buffer, whose window then closes. The one exception: a frame larger than
//! what is left completes once everything before it was read, so a message up to the
//! secret-stream maximum still arrives whole.
//!
//! On the deterministic simulator, end to end through the public API (`ConnInfo::unread_input`
//! is sampled before every simulation step).

use core::time::Duration;

use hyperdht_proto::{
    Config, ConnError, ConnId, Event, KeyPair, Node, ServerConfig, Timestamp, MAX_UNREAD_INPUT,
};
use hyperdht_tests::sim::{NodeIdx, Sim};

/// The first event on `idx` that `pred` accepts, running the simulation until `limit`.
fn run_until_event(
    sim: &mut Sim,
    idx: NodeIdx,
    limit: Timestamp,
    mut pred: impl FnMut(&Event) -> bool,
) -> Option<Event> {
    let mut seen = 0;
    let mut hit = None;
    sim.run_until_condition(limit, |s| {
        let evs = s.events(idx);
        while seen < evs.len() {
            if pred(&evs[seen].1) {
                hit = Some(evs[seen].1.clone());
                return true;
            }
            seen += 1;
        }
        false
    });
    hit
}

fn unread(node: &Node, conn: ConnId) -> usize {
    node.conn_info(conn).map_or(0, |i| i.unread_input)
}

/// Runs for `d`, returning the most input `conn` on `idx` held at any step.
fn run_sampling(sim: &mut Sim, idx: NodeIdx, conn: ConnId, d: Duration) -> usize {
    let mut most = 0;
    let limit = sim.now() + d;
    sim.run_until_condition(limit, |s| {
        most = most.max(unread(s.node(idx), conn));
        false
    });
    most
}

#[test]
fn a_partial_frame_counts_against_the_unread_input_bound() {
    let seed = 43;
    let mut sim = Sim::new(seed);
    let net = sim.build_dht(3, 12, Duration::from_millis(50), Duration::from_secs(60));
    let s = sim.add_node(Config::new(net.bootstrap.clone()));
    let c = sim.add_node(Config::new(net.bootstrap.clone()));
    let limit = sim.now() + Duration::from_secs(30);
    assert!(
        sim.run_until_condition(limit, |sim| [s, c]
            .iter()
            .all(|&i| sim.node(i).is_bootstrapped())),
        "bootstrap (seed {seed})"
    );
    let server_key = KeyPair::from_seed(&[1; 32]);
    sim.command(s, |n, now| {
        n.listen(now, &server_key, ServerConfig::default())
    })
    .expect("listen");
    let limit = sim.now() + Duration::from_secs(30);
    assert!(
        run_until_event(&mut sim, s, limit, |e| matches!(
            e,
            Event::ServerListening { .. }
        ))
        .is_some(),
        "listen (seed {seed})"
    );
    let spk = server_key.public_key();
    let client_key = KeyPair::from_seed(&[2; 32]);
    let cc = sim.command(c, |n, now| n.connect(now, &spk, &client_key));
    let limit = sim.now() + Duration::from_secs(60);
    let opened = run_until_event(
        &mut sim,
        c,
        limit,
        |e| matches!(e, Event::Connected { conn, .. } | Event::ConnectFailed { conn, .. } if *conn == cc),
    );
    assert!(
        matches!(opened, Some(Event::Connected { .. })),
        "the client connects: {opened:?} (seed {seed})"
    );
    let limit = sim.now() + Duration::from_secs(10);
    let Some(Event::Connected { conn: sc, .. }) =
        run_until_event(&mut sim, s, limit, |e| matches!(e, Event::Connected { .. }))
    else {
        panic!("the server's side opens (seed {seed})");
    };

    // Three small messages that together pass the bound, then one frame three times its size.
    let small = 300 << 10;
    let big = 3 * MAX_UNREAD_INPUT;
    let mut messages: Vec<Vec<u8>> = (1..=3u8).map(|i| vec![i; small]).collect();
    messages.push((0..big).map(|i| (i % 251) as u8).collect());
    for m in &messages {
        loop {
            match sim.command(c, |n, now| n.conn(cc).write_message(now, m)) {
                Ok(()) => break,
                Err(ConnError::Blocked) => {
                    let limit = sim.now() + Duration::from_secs(30);
                    let writable = run_until_event(
                        &mut sim,
                        c,
                        limit,
                        |e| matches!(e, Event::Writable { conn } if *conn == cc),
                    );
                    assert!(
                        writable.is_some(),
                        "the client's writes drain (seed {seed})"
                    );
                    sim.take_events(c);
                }
                Err(e) => panic!("write: {e} (seed {seed})"),
            }
        }
    }

    // The server never reads: it holds no more than the bound, and it did fill up to it, so
    // part of the big frame was held (three small messages are 900 KiB).
    let most = run_sampling(&mut sim, s, sc, Duration::from_secs(20));
    assert!(
        most <= MAX_UNREAD_INPUT,
        "held {most} bytes, over the bound of {MAX_UNREAD_INPUT} (seed {seed})"
    );
    assert!(
        most > 3 * small,
        "held only {most} bytes: the partial frame was not taken up to the bound (seed {seed})"
    );

    // Reading the small messages refills from the UDX buffer, within the bound while a small
    // message is still unread; once the last one is read, the big frame may complete.
    let mut most = 0;
    for (i, want) in messages[..3].iter().enumerate() {
        let got = sim.command(s, |n, _| n.conn(sc).read_message());
        assert_eq!(
            got.as_ref().map(|m| m.as_ref().map(Vec::len)),
            Ok(Some(small)),
            "small message {i} (seed {seed})"
        );
        assert_eq!(got.unwrap().as_deref(), Some(&want[..]));
        let held = run_sampling(&mut sim, s, sc, Duration::from_secs(2));
        if i < 2 {
            assert!(
                held <= MAX_UNREAD_INPUT,
                "held {held} bytes after reading message {i}, over the bound (seed {seed})"
            );
        }
        most = most.max(held);
    }

    // With nothing before it left unread, the big frame completes past the bound, and only it.
    let limit = sim.now() + Duration::from_secs(60);
    let mut got = None;
    while got.is_none() && sim.now() < limit {
        got = match sim.command(s, |n, _| n.conn(sc).read_message()) {
            Ok(m) => m,
            Err(ConnError::Blocked) => {
                most = most.max(run_sampling(&mut sim, s, sc, Duration::from_millis(200)));
                None
            }
            Err(e) => panic!("read: {e} (seed {seed})"),
        };
    }
    let got = got.unwrap_or_else(|| panic!("the big message arrives (seed {seed})"));
    assert!(
        got == messages[3],
        "the big message arrives whole and intact (seed {seed})"
    );
    assert!(
        most <= big + 3,
        "held {most} bytes while completing one {big}-byte frame (seed {seed})"
    );
}
