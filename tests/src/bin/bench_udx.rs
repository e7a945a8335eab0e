//! Stream benchmarks on loopback: throughput and CPU per GiB for Rust<->Rust, Rust<->JS and
//! JS<->JS (UDX + secret-stream), raw UDP as the ceiling, and goodput through a lossy relay.
//! Writes a Markdown table to stdout.
//!
//! `cargo run --release -p hyperdht-tests --bin bench_udx [-- --mib N] [--only rust-rust]`
//! (default 512 MiB per transfer; needs Node.js and `tests/js/node_modules`).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use hyperdht_proto::stream::Config;
use hyperdht_proto::SocketId;
use hyperdht_tests::udx_driver::{
    fixed_keys, Endpoint, Faults, JsConfig, JsPeer, LossyRelay, Transfer,
};

/// CPU time of the calling thread (Linux `/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

struct Row {
    name: String,
    bytes: u64,
    seconds: f64,
    cpu_sender: f64,
    cpu_receiver: f64,
}

impl Row {
    fn print(&self) {
        let gib = self.bytes as f64 / (1u64 << 30) as f64;
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} |",
            self.name,
            self.bytes >> 20,
            self.seconds,
            self.bytes as f64 / self.seconds / 1e6,
            self.cpu_sender / gib,
            self.cpu_receiver / gib,
            self.bytes as f64 / 1e6 / ((self.cpu_sender + self.cpu_receiver) / 2.0),
        );
    }
}

/// One Rust side in its own thread: sends `send` bytes (or just receives), secret or raw.
fn rust_side(
    ep: &mut Endpoint,
    remote_id: u32,
    remote: std::net::SocketAddr,
    local_id: u32,
    send: u64,
    secret: Option<bool>,
) -> (Transfer, Duration, Duration) {
    let now = ep.now();
    let id = ep.mux.create_stream_with_id(now, local_id).expect("id");
    ep.mux
        .connect(now, id, SocketId::SERVER, remote_id, remote)
        .expect("connect");
    let mut t = Transfer::new(id, send, 1, 1);
    if let Some(initiator) = secret {
        t = t.with_secret(now, &fixed_keys(initiator), [local_id as u8; 32]);
    }
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let ok = Transfer::drive(ep, &mut [&mut t], Instant::now() + Duration::from_secs(600));
    assert!(ok, "transfer did not finish");
    // Keep answering a little so the peer's last retransmissions are acknowledged.
    let elapsed = start.elapsed();
    let cpu = thread_cpu() - cpu0;
    let linger = Instant::now() + Duration::from_millis(300);
    while Instant::now() < linger {
        let _ = ep.poll(Duration::from_millis(5));
    }
    (t, elapsed, cpu)
}

fn rust_rust(bytes: u64, secret: bool, faults: Option<Faults>) -> Row {
    let mut a = Endpoint::bind("127.0.0.1:0", Config::default(), [1; 32]).unwrap();
    let mut b = Endpoint::bind("127.0.0.1:0", Config::default(), [2; 32]).unwrap();
    let (addr_a, addr_b) = (a.local_addr(), b.local_addr());
    let relay = faults.map(|f| LossyRelay::start(addr_a, addr_b, f, 42).unwrap());
    let (to_b, to_a) = match &relay {
        Some(r) => (r.addr, r.addr),
        None => (addr_b, addr_a),
    };
    let rx =
        std::thread::spawn(move || rust_side(&mut b, 0xa, to_a, 0xb, 0, secret.then_some(false)));
    let (_, t_tx, cpu_tx) = rust_side(&mut a, 0xb, to_b, 0xa, bytes, secret.then_some(true));
    let (t, t_rx, cpu_rx) = rx.join().unwrap();
    assert_eq!(t.checker.received, bytes);
    assert_eq!(t.checker.mismatch, None);
    let name = match (secret, faults) {
        (true, None) => "Rust -> Rust, secret-stream".to_string(),
        (false, None) => "Rust -> Rust, raw UDX".to_string(),
        (_, Some(f)) => format!("Rust -> Rust, secret-stream, {:.0}% loss", f.loss * 100.0),
    };
    Row {
        name,
        bytes,
        seconds: t_tx.max(t_rx).as_secs_f64(),
        cpu_sender: cpu_tx.as_secs_f64(),
        cpu_receiver: cpu_rx.as_secs_f64(),
    }
}

/// Rust sends to JS (`rust_sends`) or JS sends to Rust.
fn rust_js(bytes: u64, rust_sends: bool) -> Row {
    let mut js = JsPeer::spawn().expect("node");
    let mut ep = Endpoint::bind("127.0.0.1:0", Config::default(), [3; 32]).unwrap();
    let js_addr = format!("127.0.0.1:{}", js.port).parse().unwrap();
    js.start(&JsConfig {
        local_id: 0x2,
        remote_id: 0x1,
        remote_port: ep.local_addr().port(),
        send: if rust_sends { 0 } else { bytes },
        send_seed: 1,
        recv_seed: 1,
        secret: Some(fixed_keys(false)),
        destroy_after: 0,
    })
    .unwrap();
    let (t, elapsed, cpu) = rust_side(
        &mut ep,
        0x2,
        js_addr,
        0x1,
        if rust_sends { bytes } else { 0 },
        Some(true),
    );
    let r = js.result_driving(&mut ep, Duration::from_secs(60)).unwrap();
    if rust_sends {
        assert_eq!(r.received, bytes);
        assert_eq!(r.mismatch, None);
    } else {
        assert_eq!(t.checker.received, bytes);
        assert_eq!(t.checker.mismatch, None);
    }
    let (cpu_tx, cpu_rx) = if rust_sends {
        (cpu.as_secs_f64(), r.cpu_seconds)
    } else {
        (r.cpu_seconds, cpu.as_secs_f64())
    };
    Row {
        name: if rust_sends {
            "Rust -> JS, secret-stream".into()
        } else {
            "JS -> Rust, secret-stream".into()
        },
        bytes,
        seconds: elapsed.as_secs_f64().max(r.seconds),
        cpu_sender: cpu_tx,
        cpu_receiver: cpu_rx,
    }
}

fn js_js(bytes: u64) -> Row {
    let mut a = JsPeer::spawn().expect("node");
    let mut b = JsPeer::spawn().expect("node");
    let (pa, pb) = (a.port, b.port);
    b.start(&JsConfig {
        local_id: 0xb,
        remote_id: 0xa,
        remote_port: pa,
        send: 0,
        send_seed: 1,
        recv_seed: 1,
        secret: Some(fixed_keys(false)),
        destroy_after: 0,
    })
    .unwrap();
    a.start(&JsConfig {
        local_id: 0xa,
        remote_id: 0xb,
        remote_port: pb,
        send: bytes,
        send_seed: 1,
        recv_seed: 1,
        secret: Some(fixed_keys(true)),
        destroy_after: 0,
    })
    .unwrap();
    let ra = a.result(Duration::from_secs(600)).unwrap();
    let rb = b.result(Duration::from_secs(600)).unwrap();
    assert_eq!(rb.received, bytes);
    assert_eq!(rb.mismatch, None);
    Row {
        name: "JS -> JS, secret-stream".into(),
        bytes,
        seconds: ra.seconds.max(rb.seconds),
        cpu_sender: ra.cpu_seconds,
        cpu_receiver: rb.cpu_seconds,
    }
}

/// Raw UDP: one thread blasts `size`-byte datagrams for `dur`, another counts them.
fn raw_udp(size: usize, dur: Duration) -> Row {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dst = rx.local_addr().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let counter = std::thread::spawn(move || {
        let mut buf = vec![0u8; 2048];
        let mut bytes = 0u64;
        let cpu0 = thread_cpu();
        let mut first = None;
        let mut last = Instant::now();
        while let Ok(n) = rx.recv(&mut buf) {
            first.get_or_insert_with(Instant::now);
            last = Instant::now();
            bytes += n as u64;
        }
        let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
        (bytes, secs, thread_cpu() - cpu0)
    });
    let payload = vec![7u8; size];
    let cpu0 = thread_cpu();
    let end = Instant::now() + dur;
    while Instant::now() < end {
        for _ in 0..64 {
            let _ = tx.send_to(&payload, dst);
        }
    }
    let cpu_tx = thread_cpu() - cpu0;
    let (bytes, secs, cpu_rx) = counter.join().unwrap();
    Row {
        name: format!("raw UDP, {size}-byte datagrams (received)"),
        bytes,
        seconds: secs,
        cpu_sender: cpu_tx.as_secs_f64(),
        cpu_receiver: cpu_rx.as_secs_f64(),
    }
}

fn main() {
    let mut mib = 512u64;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--mib") {
        mib = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(mib);
    }
    // `--only rust-rust` runs just the encrypted Rust -> Rust row (for profiling).
    let only_rust = args.iter().any(|a| a == "rust-rust");
    let bytes = mib << 20;
    if only_rust {
        rust_rust(bytes, true, None).print();
        return;
    }
    let lossy = (mib / 8).max(16) << 20;
    println!("| transfer | MiB | seconds | MB/s | sender CPU s/GiB | receiver CPU s/GiB | MB per CPU-second (mean of sides) |");
    println!("|---|---|---|---|---|---|---|");
    raw_udp(1200, Duration::from_secs(3)).print();
    raw_udp(1472, Duration::from_secs(3)).print();
    rust_rust(bytes, false, None).print();
    rust_rust(bytes, true, None).print();
    rust_js(bytes, true).print();
    rust_js(bytes, false).print();
    js_js(bytes).print();
    for loss in [0.01, 0.05] {
        let f = Faults {
            loss,
            duplicate: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
        };
        rust_rust(lossy, true, Some(f)).print();
    }
}
