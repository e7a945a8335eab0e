//! The event loop thread: the mio reactor ([`MioIo`]: the node's sockets registered with a
//! `Poll`), the commands from the handles, and the kit's [`Core`] that runs the node.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Weak;
use std::time::Duration;

use hyperdht_kit::{Core, DatagramIo, Error, Glue, ReadStop, RECV_BUDGET};
use hyperdht_proto::{Config, ConnId, SocketId};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::conn::Connection;
use crate::conns::Conns;
use crate::handle::{Command, HandleInner};
use crate::server::ServerEvent;

/// Token of the command waker; socket tokens are their `SocketId` index.
pub(crate) const WAKER: Token = Token(usize::MAX);

/// The mio driver's glue: std channels answer the calls; a server's events go to its
/// [`ServerEvent`] channel.
pub(crate) struct Std;

impl Glue for Std {
    type Tx<T: Send + 'static> = Sender<T>;
    type Connection = Connection;
    type ServerTx = Sender<ServerEvent>;

    fn send<T: Send + 'static>(tx: &Sender<T>, value: T) -> bool {
        tx.send(value).is_ok()
    }

    fn incoming(server: &Sender<ServerEvent>, conn: ConnId, remote_public_key: [u8; 32]) {
        let _ = server.send(ServerEvent::Incoming {
            conn,
            remote_public_key,
        });
    }

    fn accept(server: &Sender<ServerEvent>, connection: Connection) {
        let _ = server.send(ServerEvent::Connected(Box::new(connection)));
    }
}

/// The node's sockets on the mio reactor.
struct MioIo {
    poll: Poll,
    sockets: HashMap<SocketId, UdpSocket>,
    tokens: HashMap<Token, SocketId>,
    /// Sockets that may still hold datagrams (a read round stopped at its budget).
    readable: Vec<SocketId>,
}

fn token_of(socket: SocketId) -> Token {
    Token(socket.index() as usize)
}

impl MioIo {
    /// Sets what the reactor reports for `id`.
    fn interest(&mut self, id: SocketId, interest: Interest) {
        if let Some(sock) = self.sockets.get_mut(&id) {
            let _ = self
                .poll
                .registry()
                .reregister(sock, token_of(id), interest);
        }
    }
}

impl DatagramIo for MioIo {
    type Socket = UdpSocket;

    fn bind(&mut self, id: SocketId, addr: SocketAddrV4) -> io::Result<SocketAddr> {
        let mut s = UdpSocket::from_std(hyperdht_kit::udp::bind(addr)?);
        let local = s.local_addr()?;
        self.poll
            .registry()
            .register(&mut s, token_of(id), Interest::READABLE)?;
        self.sockets.insert(id, s);
        self.tokens.insert(token_of(id), id);
        Ok(local)
    }

    fn close(&mut self, id: SocketId) {
        self.tokens.remove(&token_of(id));
        self.readable.retain(|s| *s != id);
        if let Some(mut s) = self.sockets.remove(&id) {
            let _ = self.poll.registry().deregister(&mut s);
        }
    }

    fn socket(&self, id: SocketId) -> Option<&UdpSocket> {
        self.sockets.get(&id)
    }

    fn wait_writable(&mut self, id: SocketId) {
        self.interest(id, Interest::READABLE | Interest::WRITABLE);
    }
}

/// The loop: the reactor, the node, the connections handed out, the commands.
pub(crate) struct Loop {
    io: MioIo,
    core: Core<Std>,
    conns: Conns,
    cmds: Receiver<Command>,
    done: bool,
}

impl Loop {
    pub(crate) fn new(poll: Poll, cmds: Receiver<Command>, config: Config, seed: [u8; 32]) -> Loop {
        Loop {
            io: MioIo {
                poll,
                sockets: HashMap::new(),
                tokens: HashMap::new(),
                readable: Vec::new(),
            },
            core: Core::new(config, seed),
            conns: Conns::default(),
            cmds,
            done: false,
        }
    }

    /// The handle the readers and writers this loop creates send their commands through.
    pub(crate) fn set_handle(&mut self, handle: Option<Weak<HandleInner>>) {
        self.conns.handle = handle;
    }

    /// Binds the sockets, tells `ready` how that went, then runs until the node has shut
    /// down. Every call still waiting then fails with [`Error::Closed`] (its sender dropped).
    pub(crate) fn run(&mut self, ready: Sender<Result<SocketAddr, Error>>) {
        self.flush();
        let bound = self.core.bound();
        let ok = bound.is_ok();
        let _ = ready.send(bound);
        let mut events = Events::with_capacity(64);
        while ok && !self.done {
            let timeout = if self.io.readable.is_empty() {
                let now = self.core.now();
                self.core.deadline().map(|t| t - now)
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.io.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "poll failed; stopping node");
                    break;
                }
            }
            for ev in events.iter() {
                let Some(&id) = self.io.tokens.get(&ev.token()) else {
                    continue;
                };
                if ev.is_readable() && !self.io.readable.contains(&id) {
                    self.io.readable.push(id);
                }
                if ev.is_writable() && self.core.outbox().blocked() == Some(id) {
                    self.core.outbox().unblock(id);
                    self.io.interest(id, Interest::READABLE);
                }
            }
            self.read_sockets();
            self.handle_commands();
            let now = self.core.now();
            self.core.handle_timeout(now);
            self.flush();
        }
        drop(self.core.take_waiters());
    }

    /// Reads each readable socket up to its budget; one that may hold more stays readable.
    fn read_sockets(&mut self) {
        let now = self.core.now();
        for id in std::mem::take(&mut self.io.readable) {
            let Some(sock) = self.io.sockets.get(&id) else {
                continue;
            };
            let mut budget = RECV_BUDGET;
            if self.core.receive(now, id, sock, &mut budget) == ReadStop::Budget {
                self.io.readable.push(id);
            }
        }
    }

    /// Drains the node (see [`Core::flush`]); stops the loop once the node has closed.
    fn flush(&mut self) {
        let conns = &mut self.conns;
        self.core
            .flush(&mut self.io, |core, ev| conns.on_event(core, ev));
        if self.core.calls.node_closed() || self.core.calls.bind_failed() {
            self.done = true;
        }
    }

    fn handle_commands(&mut self) {
        let core = &mut self.core;
        let now = core.now();
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Command::Request(to, spec, tx) => core.request(now, to, spec, tx),
                Command::Query(start, tx) => core.query(now, start, tx),
                Command::WaitBootstrapped(tx) => core.calls.wait_bootstrapped(tx),
                Command::Info(tx) => {
                    let _ = tx.send(core.info());
                }
                Command::Subscribe(tx) => core.calls.subscribe(tx),
                Command::Listen(key, config, tx, events) => {
                    // A refusal is answered on `tx`.
                    let _ = core.listen(now, &key, config, tx, events);
                }
                Command::Connect(pk, options, tx) => {
                    core.connect(now, &pk, options, tx);
                }
                Command::ReadMore(conn) => self.conns.forward_readable(&mut core.node, conn),
                Command::CloseServer(server, tx) => drop(core.close_server(now, server, tx)),
                Command::Write(conn, data, ticket) => {
                    self.conns
                        .write_conn(&mut core.node, now, conn, data, ticket)
                }
                Command::Finish(conn) => {
                    let _ = core.node.conn(conn).finish(now);
                }
                Command::Reset(conn) => core.node.conn(conn).reset(now),
                Command::NewSwarm(config, seed, connections, id) => {
                    let _ = id.send(core.new_swarm(config, seed, connections));
                }
                Command::Swarm(id, call) => {
                    if let Some(slot) = core.swarms.get_mut(id) {
                        call(slot, &mut core.node, now);
                    }
                }
                // The handle stopped waiting for the destroy: forget the swarm.
                Command::SwarmDrop(id) => drop(core.swarms.remove(id)),
                Command::Shutdown => core.shutdown(now),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddrV4, UdpSocket as StdUdpSocket};
    use std::time::Duration;

    use hyperdht_kit::batch;
    use hyperdht_proto::Config;

    use crate::MioNode;

    /// A burst of requests is read and answered a batch at a time, each reply to its own
    /// sender; a datagram larger than a receive slot is dropped and counted, not decoded.
    #[test]
    fn bursts_are_answered_and_oversized_datagrams_counted() {
        use hyperdht_proto::wire::rpc::{Request, Response};
        let node = MioNode::spawn(Config::bootstrapper(SocketAddrV4::new(
            std::net::Ipv4Addr::LOCALHOST,
            0,
        )))
        .unwrap();
        let target = node.local_addr();
        let to = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, target.port());
        let ping = |tid: u16| Request::ping(tid, to).to_bytes();
        // Three clients, 40 pings each, sent back to back before reading anything.
        let clients: Vec<StdUdpSocket> = (0..3)
            .map(|_| StdUdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (c, client) in clients.iter().enumerate() {
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            for tid in 0..40u16 {
                client
                    .send_to(&ping(tid + 1000 * c as u16), target)
                    .unwrap();
            }
        }
        for (c, client) in clients.iter().enumerate() {
            let mut tids = Vec::new();
            let mut buf = [0u8; 2048];
            while tids.len() < 40 {
                let (n, _) = client.recv_from(&mut buf).expect("every ping is answered");
                tids.push(Response::decode(&buf[..n]).unwrap().tid);
            }
            tids.sort_unstable();
            let want: Vec<u16> = (0..40u16).map(|t| t + 1000 * c as u16).collect();
            assert_eq!(tids, want, "client {c} got the replies to its own pings");
        }
        let before = node.info().unwrap().stats;
        // The oversized datagram, then a ping from the same socket: once the ping's reply is
        // back, the node has read the datagram queued before it.
        let client = &clients[0];
        client
            .send_to(&vec![0x13; batch::SLOT + 1], target)
            .unwrap();
        client.send_to(&ping(7), target).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = client.recv_from(&mut buf).expect("the ping is answered");
        assert_eq!(Response::decode(&buf[..n]).unwrap().tid, 7);
        let after = node.info().unwrap().stats;
        assert_eq!(after.dropped.oversized, before.dropped.oversized + 1);
        assert_eq!(after.dropped.malformed, before.dropped.malformed);
        node.shutdown();
    }
}
