//! A tiny blocking driver for [`UdxMux`] over one `std::net::UdpSocket`, plus the transfer
//! logic the UDX interop tests and `bench_udx` share: a deterministic byte stream
//! ([`Pattern`]), a checker for it, and a [`Transfer`] that moves one stream's bytes, raw or
//! through secret-stream.
//!
//! One [`Endpoint`] is driven by one thread: [`Endpoint::poll`] sends every queued datagram,
//! waits for the socket or the next deadline, feeds a batch of received datagrams to the mux
//! and runs its timers. Datagrams the mux does not claim (not UDX) are counted and dropped.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hyperdht_proto::rng::Rng;
use hyperdht_proto::secretstream::{self, SecretStream, SessionKeys};
use hyperdht_proto::stream::{CloseReason, Config, StreamError, StreamEvent, StreamId, UdxMux};
use hyperdht_proto::{SocketId, Timestamp};

/// Datagrams read per wake-up at most.
const RECV_BATCH: usize = 256;
/// Receive buffer: libudx reads into 2048 bytes (`UDX_SOCKET_PACKET_BUFFER_SIZE`).
const RECV_BUF: usize = 2048;
/// Socket buffer size asked for (libudx asks for 1 MiB receive buffers).
const SOCKET_BUFFER: i32 = 4 << 20;

/// A UDP socket and the mux it feeds.
pub struct Endpoint {
    /// The socket.
    pub socket: UdpSocket,
    /// The streams.
    pub mux: UdxMux,
    start: Instant,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    /// Whether the socket is in non-blocking mode.
    nonblocking: bool,
    read_timeout: Option<Duration>,
    /// Datagrams the mux did not claim.
    pub non_udx: u64,
    /// Datagrams sent / received.
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
}

impl Endpoint {
    /// Binds `addr` (e.g. `127.0.0.1:0`) with a mux seeded by `seed`.
    pub fn bind(addr: &str, config: Config, seed: [u8; 32]) -> io::Result<Endpoint> {
        let socket = UdpSocket::bind(addr)?;
        set_buffers(&socket);
        Ok(Endpoint {
            socket,
            mux: UdxMux::new(config, seed),
            start: Instant::now(),
            recv_buf: vec![0; RECV_BUF],
            send_buf: Vec::with_capacity(RECV_BUF),
            nonblocking: false,
            read_timeout: None,
            non_udx: 0,
            sent: 0,
            received: 0,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("bound socket has an address")
    }

    /// Time since the endpoint was created, as the mux sees it.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_duration(self.start.elapsed())
    }

    /// Sends every datagram the mux has queued.
    pub fn flush(&mut self) -> io::Result<()> {
        loop {
            let now = self.now();
            let Some(dst) = self.mux.poll_transmit_into(now, &mut self.send_buf) else {
                return Ok(());
            };
            self.set_nonblocking(false)?;
            match self.socket.send_to(&self.send_buf, dst.addr) {
                Ok(_) => self.sent += 1,
                // Loopback with a full buffer, or an unreachable peer: the datagram is lost,
                // which UDX recovers from.
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        if self.nonblocking != on {
            self.socket.set_nonblocking(on)?;
            self.nonblocking = on;
        }
        Ok(())
    }

    fn set_timeout(&mut self, t: Duration) -> io::Result<()> {
        let t = t.max(Duration::from_micros(50));
        if self.read_timeout != Some(t) {
            self.socket.set_read_timeout(Some(t))?;
            self.read_timeout = Some(t);
        }
        Ok(())
    }

    /// One turn of the loop: flush, wait up to `max_wait` (or the mux's next deadline) for
    /// datagrams, feed a batch, run timers, flush again.
    pub fn poll(&mut self, max_wait: Duration) -> io::Result<()> {
        self.flush()?;
        let now = self.now();
        let wait = match self.mux.poll_timeout() {
            Some(t) if t <= now => Duration::ZERO,
            Some(t) => (t - now).min(max_wait),
            None => max_wait,
        };
        let mut got = 0usize;
        if !wait.is_zero() {
            self.set_nonblocking(false)?;
            self.set_timeout(wait)?;
            match self.socket.recv_from(&mut self.recv_buf) {
                Ok((n, from)) => {
                    self.deliver(n, from);
                    got += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if got > 0 || wait.is_zero() {
            self.set_nonblocking(true)?;
            while got < RECV_BATCH {
                match self.socket.recv_from(&mut self.recv_buf) {
                    Ok((n, from)) => {
                        self.deliver(n, from);
                        got += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if is_transient(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let now = self.now();
        self.mux.handle_timeout(now);
        self.flush()
    }

    fn deliver(&mut self, n: usize, from: SocketAddr) {
        self.received += 1;
        let now = self.now();
        if !self
            .mux
            .handle_datagram(now, SocketId::SERVER, from, &self.recv_buf[..n])
        {
            self.non_udx += 1;
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(105) // ENOBUFS
}

/// Asks for large socket buffers (Linux: `SO_RCVBUF`/`SO_SNDBUF`, capped by `rmem_max`), as
/// libudx does for its sockets. Best effort.
#[cfg(target_os = "linux")]
fn set_buffers(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    extern "C" {
        fn setsockopt(
            fd: i32,
            level: i32,
            name: i32,
            value: *const core::ffi::c_void,
            len: u32,
        ) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    const SO_SNDBUF: i32 = 7;
    const SO_RCVBUF: i32 = 8;
    let fd = socket.as_raw_fd();
    for opt in [SO_RCVBUF, SO_SNDBUF] {
        let v: i32 = SOCKET_BUFFER;
        // SAFETY: `fd` is a valid socket for the lifetime of `socket`; the option value is a
        // live i32 whose size is passed along.
        unsafe {
            setsockopt(
                fd,
                SOL_SOCKET,
                opt,
                (&v as *const i32).cast(),
                core::mem::size_of::<i32>() as u32,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn set_buffers(_socket: &UdpSocket) {}

/// A deterministic byte stream: xorshift32, four little-endian bytes per step. The JS peers
/// (`tests/js/udx-peer.js`) generate the same bytes.
#[derive(Clone, Debug)]
pub struct Pattern {
    state: u32,
    buf: [u8; 4],
    pos: usize,
}

impl Pattern {
    /// The stream for `seed` (0 is mapped to 1: xorshift never leaves 0).
    pub fn new(seed: u32) -> Pattern {
        Pattern {
            state: if seed == 0 { 1 } else { seed },
            buf: [0; 4],
            pos: 4,
        }
    }

    fn next_word(&mut self) -> u32 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        x
    }

    /// Fills `out` with the next bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut i = 0;
        while i < out.len() {
            if self.pos == 4 {
                if out.len() - i >= 4 {
                    let w = self.next_word().to_le_bytes();
                    out[i..i + 4].copy_from_slice(&w);
                    i += 4;
                    continue;
                }
                self.buf = self.next_word().to_le_bytes();
                self.pos = 0;
            }
            out[i] = self.buf[self.pos];
            self.pos += 1;
            i += 1;
        }
    }
}

/// Checks received bytes against a [`Pattern`].
#[derive(Clone, Debug)]
pub struct Checker {
    pattern: Pattern,
    scratch: Vec<u8>,
    /// Bytes checked.
    pub received: u64,
    /// Offset of the first wrong byte.
    pub mismatch: Option<u64>,
}

impl Checker {
    /// Expects the stream of `seed`.
    pub fn new(seed: u32) -> Checker {
        Checker {
            pattern: Pattern::new(seed),
            scratch: Vec::new(),
            received: 0,
            mismatch: None,
        }
    }

    /// Checks the next `data`.
    pub fn check(&mut self, data: &[u8]) {
        self.scratch.resize(data.len(), 0);
        self.pattern.fill(&mut self.scratch);
        if self.mismatch.is_none() {
            if let Some(i) = data.iter().zip(&self.scratch).position(|(a, b)| a != b) {
                self.mismatch = Some(self.received + i as u64);
            }
        }
        self.received += data.len() as u64;
    }
}

/// One stream's transfer: sends `total` bytes of a pattern and finishes, checks what arrives.
pub struct Transfer {
    /// The stream.
    pub id: StreamId,
    total: u64,
    written: u64,
    pattern: Pattern,
    chunk: Vec<u8>,
    /// Unsent part of `chunk`.
    chunk_pos: usize,
    finished: bool,
    /// Received bytes, checked.
    pub checker: Checker,
    /// The peer ended its side (EOF read).
    pub eof: bool,
    /// How the stream closed.
    pub closed: Option<CloseReason>,
    /// secret-stream layered on top, if any.
    pub secret: Option<SecretStream>,
    /// secret-stream failure.
    pub secret_error: Option<secretstream::SecretStreamError>,
    read_buf: Vec<u8>,
    plain_buf: Vec<u8>,
}

/// Plaintext per secret-stream message (the JS peers write 64 KiB chunks too).
const CHUNK: usize = 64 * 1024;

impl Transfer {
    /// A raw UDX transfer of `total` bytes of `Pattern::new(send_seed)`, expecting
    /// `Pattern::new(recv_seed)` back.
    pub fn new(id: StreamId, total: u64, send_seed: u32, recv_seed: u32) -> Transfer {
        Transfer {
            id,
            total,
            written: 0,
            pattern: Pattern::new(send_seed),
            chunk: Vec::new(),
            chunk_pos: 0,
            finished: false,
            checker: Checker::new(recv_seed),
            eof: false,
            closed: None,
            secret: None,
            secret_error: None,
            read_buf: Vec::new(),
            plain_buf: vec![0; CHUNK],
        }
    }

    /// The same over secret-stream with `keys`.
    pub fn with_secret(mut self, now: Timestamp, keys: &SessionKeys, seed: [u8; 32]) -> Transfer {
        let mut rng = Rng::from_seed(seed);
        self.secret = Some(SecretStream::new(
            now,
            keys,
            &mut rng,
            secretstream::Config::default(),
        ));
        self
    }

    /// Whether everything was sent, everything expected arrived and the stream closed.
    pub fn done(&self) -> bool {
        self.closed.is_some()
    }

    /// Bytes written into the transport so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn next_chunk(&mut self) -> bool {
        if self.chunk_pos < self.chunk.len() {
            return true;
        }
        let left = self.total - self.written;
        if left == 0 {
            return false;
        }
        let n = (left as usize).min(CHUNK);
        self.chunk.resize(n, 0);
        self.pattern.fill(&mut self.chunk);
        self.chunk_pos = 0;
        true
    }

    /// Writes what the stream takes, reads what arrived, handles the mux's events for this
    /// stream (call with every event, or let [`Transfer::drive`] drain them).
    pub fn pump(&mut self, mux: &mut UdxMux, now: Timestamp) {
        self.write_side(mux, now);
        self.read_side(mux, now);
    }

    fn write_side(&mut self, mux: &mut UdxMux, now: Timestamp) {
        if self.closed.is_some() {
            return;
        }
        loop {
            // First move pending secret-stream output into UDX.
            if let Some(s) = self.secret.as_mut() {
                s.handle_timeout(now);
                let out = s.pending_output();
                if !out.is_empty() {
                    match mux.write(now, self.id, out) {
                        Ok(n) => {
                            s.consume_output(n);
                            if !s.pending_output().is_empty() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            }
            if !self.next_chunk() {
                break;
            }
            if let Some(s) = self.secret.as_mut() {
                // One message per chunk, like the JS peers.
                let chunk = &self.chunk[self.chunk_pos..];
                if s.write(now, chunk).is_err() {
                    return;
                }
                self.written += chunk.len() as u64;
                self.chunk_pos = self.chunk.len();
                continue;
            }
            match mux.write(now, self.id, &self.chunk[self.chunk_pos..]) {
                Ok(n) => {
                    self.chunk_pos += n;
                    self.written += n as u64;
                }
                Err(_) => return,
            }
        }
        if !self.finished && self.written == self.total {
            if self
                .secret
                .as_ref()
                .is_some_and(|s| !s.pending_output().is_empty())
            {
                return;
            }
            if mux.finish(now, self.id).is_ok() {
                self.finished = true;
            }
        }
    }

    fn read_side(&mut self, mux: &mut UdxMux, now: Timestamp) {
        loop {
            self.read_buf.clear();
            match mux.read_into(self.id, &mut self.read_buf) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(_) => {}
                Err(StreamError::Blocked) => return,
                Err(StreamError::Closed(r)) => {
                    self.closed.get_or_insert(r);
                    return;
                }
                Err(_) => return,
            }
            match self.secret.as_mut() {
                None => self.checker.check(&self.read_buf),
                Some(s) => {
                    if let Err(e) = s.handle_input(now, &self.read_buf) {
                        self.secret_error = Some(e);
                        mux.reset(now, self.id);
                        return;
                    }
                    loop {
                        let n = s.read(&mut self.plain_buf);
                        if n == 0 {
                            break;
                        }
                        self.checker.check(&self.plain_buf[..n]);
                    }
                }
            }
        }
    }

    /// Applies one event if it concerns this stream.
    pub fn on_event(&mut self, e: &StreamEvent) {
        if let StreamEvent::Closed { id, reason } = e {
            if *id == self.id {
                self.closed = Some(*reason);
            }
        }
    }

    /// Drives `transfers` on `ep` until all closed or `deadline` passes. Returns whether they
    /// all closed.
    pub fn drive(ep: &mut Endpoint, transfers: &mut [&mut Transfer], deadline: Instant) -> bool {
        loop {
            let now = ep.now();
            for t in transfers.iter_mut() {
                t.pump(&mut ep.mux, now);
            }
            while let Some(e) = ep.mux.poll_event() {
                for t in transfers.iter_mut() {
                    t.on_event(&e);
                }
            }
            for t in transfers.iter_mut() {
                if t.closed.is_some() {
                    // Drain what is still buffered.
                    t.read_side(&mut ep.mux, now);
                }
            }
            if transfers.iter().all(|t| t.done()) {
                let _ = ep.flush();
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            if ep.poll(Duration::from_millis(5)).is_err() {
                return false;
            }
        }
    }
}

/// A `tests/js/udx-peer.js` process: one udx-native stream end.
pub struct JsPeer {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    /// The port its socket is bound to on 127.0.0.1.
    pub port: u16,
}

/// What a JS peer reported when its stream closed.
#[derive(Clone, Debug, Default)]
pub struct JsResult {
    /// Bytes it received (checked against the pattern).
    pub received: u64,
    /// Offset of the first wrong byte, if any.
    pub mismatch: Option<u64>,
    /// Whether it saw the end of the stream.
    pub ended: bool,
    /// The error the stream closed with.
    pub error: Option<String>,
    /// Bytes it wrote.
    pub sent: u64,
    /// Wall time from connect to close.
    pub seconds: f64,
    /// CPU time of the whole process over that time.
    pub cpu_seconds: f64,
}

/// Settings for one JS peer (see `tests/js/udx-peer.js`).
#[derive(Clone, Debug)]
pub struct JsConfig {
    /// Its local stream id.
    pub local_id: u32,
    /// The Rust (or other JS) side's stream id.
    pub remote_id: u32,
    /// The other side's port on 127.0.0.1.
    pub remote_port: u16,
    /// Bytes to send.
    pub send: u64,
    /// Pattern seed of what it sends.
    pub send_seed: u32,
    /// Pattern seed of what it expects.
    pub recv_seed: u32,
    /// secret-stream keys (`None` = raw UDX).
    pub secret: Option<SessionKeys>,
    /// Destroy the stream after receiving this many bytes (0 = never).
    pub destroy_after: u64,
}

impl JsPeer {
    /// Starts `node udx-peer.js` in `tests/js` and waits for its port.
    pub fn spawn() -> io::Result<JsPeer> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new("node")
            .arg("udx-peer.js")
            .current_dir(crate::js::js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| io::Error::other("udx-peer.js did not report its port"))?;
        let v: serde_json::Value =
            serde_json::from_str(&first).map_err(|e| io::Error::other(e.to_string()))?;
        let port = v["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| io::Error::other(format!("bad first line {first}")))?;
        Ok(JsPeer {
            child,
            stdin,
            lines: rx,
            port,
        })
    }

    /// Sends the configuration; the peer connects and starts transferring.
    pub fn start(&mut self, c: &JsConfig) -> io::Result<()> {
        use std::io::Write;
        let hex = hyperdht_proto::crypto::to_hex;
        let mut v = serde_json::json!({
            "localId": c.local_id,
            "remoteId": c.remote_id,
            "remotePort": c.remote_port,
            "send": c.send,
            "sendSeed": c.send_seed,
            "recvSeed": c.recv_seed,
            "mode": "raw",
            "destroyAfter": c.destroy_after,
        });
        if let Some(k) = &c.secret {
            v["mode"] = "secret".into();
            v["initiator"] = k.is_initiator.into();
            v["tx"] = hex(&k.tx).into();
            v["rx"] = hex(&k.rx).into();
            v["hash"] = hex(&k.hash).into();
        }
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("stdin closed"))?;
        writeln!(stdin, "{v}")?;
        stdin.flush()
    }

    /// Waits for the result line.
    pub fn result(&mut self, timeout: Duration) -> io::Result<JsResult> {
        self.result_while(timeout, || {})
    }

    /// Waits for the result line while keeping `ep` running, so the Rust side keeps
    /// answering (a closed stream lingers to acknowledge the peer's last retransmissions).
    pub fn result_driving(&mut self, ep: &mut Endpoint, timeout: Duration) -> io::Result<JsResult> {
        self.result_while(timeout, || {
            let _ = ep.poll(Duration::from_millis(2));
            while ep.mux.poll_event().is_some() {}
        })
    }

    fn result_while(&mut self, timeout: Duration, mut tick: impl FnMut()) -> io::Result<JsResult> {
        let deadline = Instant::now() + timeout;
        loop {
            tick();
            let line = match self.lines.recv_timeout(Duration::from_millis(1)) {
                Ok(line) => line,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    continue
                }
                Err(_) => return Err(io::Error::other("udx-peer.js gave no result")),
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let r = &v["result"];
            if r.is_null() {
                continue;
            }
            return Ok(JsResult {
                received: r["received"].as_u64().unwrap_or(0),
                mismatch: r["mismatch"].as_i64().and_then(|m| u64::try_from(m).ok()),
                ended: r["ended"].as_bool().unwrap_or(false),
                error: r["error"].as_str().map(str::to_owned),
                sent: r["sent"].as_u64().unwrap_or(0),
                seconds: r["seconds"].as_f64().unwrap_or(0.0),
                cpu_seconds: r["cpuSeconds"].as_f64().unwrap_or(0.0),
            });
        }
    }
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The keys of connect.md V1 (a real hyperdht handshake): what the interop tests run
/// secret-stream with.
pub fn fixed_keys(initiator: bool) -> SessionKeys {
    let h = |s: &str| hyperdht_proto::crypto::from_hex(s).expect("hex");
    let tx: [u8; 32] = h("cc00d99bd3a15a6779df38fd42fd25a84d73264023e7c1da95cf3bcbdce9c210")
        .try_into()
        .expect("32");
    let rx: [u8; 32] = h("78dd48ecef5d11fd953197694a8ee2d9f8d86d49d56d856e3dd7c8e78047826b")
        .try_into()
        .expect("32");
    let hash: [u8; 64] = h("d6b5f55924e91a981d12abb62e70b63c8c60f4c6103ca1142eef45bfebedd92645e2bc185d3ac877d672437c41412d32e9562f6a55acb2599883eedbff01f019")
        .try_into()
        .expect("64");
    SessionKeys {
        is_initiator: initiator,
        tx: if initiator { tx } else { rx },
        rx: if initiator { rx } else { tx },
        hash,
    }
}

/// Faults a [`LossyRelay`] applies to every datagram, each direction independently.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Probability a datagram is dropped.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Base one-way delay.
    pub delay: Duration,
    /// Extra uniformly random delay in `0..jitter` (reorders datagrams).
    pub jitter: Duration,
}

/// A UDP relay on 127.0.0.1 between two fixed addresses that drops, duplicates, delays and
/// reorders datagrams. Runs on its own thread until dropped.
pub struct LossyRelay {
    /// The relay's address: both ends send here.
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<RelayStats>>,
}

/// What a relay did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayStats {
    /// Datagrams received.
    pub received: u64,
    /// Dropped on purpose.
    pub dropped: u64,
    /// Duplicated on purpose.
    pub duplicated: u64,
}

impl LossyRelay {
    /// Relays between `a` and `b` (datagrams from any other address are dropped).
    pub fn start(a: SocketAddr, b: SocketAddr, faults: Faults, seed: u64) -> io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        set_buffers(&socket);
        let addr = socket.local_addr()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || relay_loop(socket, a, b, faults, seed, &stop2));
        Ok(LossyRelay {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the relay and returns its counters.
    pub fn stop(mut self) -> RelayStats {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relay_loop(
    socket: UdpSocket,
    a: SocketAddr,
    b: SocketAddr,
    f: Faults,
    seed: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> RelayStats {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut rng = Rng::from_seed({
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s
    });
    let mut stats = RelayStats::default();
    // (due, tie-breaker, destination, bytes)
    type Queued = Reverse<(Instant, u64, SocketAddr, Vec<u8>)>;
    let mut queue: BinaryHeap<Queued> = BinaryHeap::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 4096];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let now = Instant::now();
        while let Some(Reverse((due, _, _, _))) = queue.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, _, dst, bytes))) = queue.pop() else {
                break;
            };
            let _ = socket.send_to(&bytes, dst);
        }
        let wait = queue
            .peek()
            .map(|Reverse((due, _, _, _))| due.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(5))
            .clamp(Duration::from_micros(100), Duration::from_millis(5));
        let _ = socket.set_read_timeout(Some(wait));
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let dst = if from == a {
            b
        } else if from == b {
            a
        } else {
            continue;
        };
        stats.received += 1;
        if rng.unit() < f.loss {
            stats.dropped += 1;
            continue;
        }
        let copies = if rng.unit() < f.duplicate {
            stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if f.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_nanos(rng.below(f.jitter.as_nanos() as u64))
            };
            n += 1;
            queue.push(Reverse((
                Instant::now() + f.delay + jitter,
                n,
                dst,
                buf[..len].to_vec(),
            )));
        }
    }
    stats
}
