//! Node configuration and the protocol constants it defaults to. Each constant names the JS file
//! it mirrors.

use core::time::Duration;
use std::net::{Ipv4Addr, SocketAddrV4};

/// hyperdht's default server port (`hyperdht/index.js`: `opts.port || 49737`).
pub const DEFAULT_PORT: u16 = 49737;
/// Ports tried after the requested one fails: `port .. port + 4` (dht-rpc `lib/io.js` portRange).
pub const PORT_RANGE: u16 = 5;
/// Receive buffer a driver should ask the kernel for on each UDP socket. udx-native's sockets
/// report 2 MiB (`socket.getRecvBufferSize()`; Linux reports twice the size asked for), where the
/// kernel default is 208 KiB: a stream at loopback speed overruns the default and loses datagrams.
pub const SOCKET_RECV_BUFFER: usize = 1 << 20;
/// dht-rpc `TICK_INTERVAL` (`index.js`).
pub const TICK_INTERVAL: Duration = Duration::from_millis(5000);
/// dht-rpc `SLEEPING_INTERVAL`: a gap between ticks longer than this is a wake-up.
pub const SLEEPING_INTERVAL: Duration = Duration::from_millis(15000);
/// dht-rpc drain interval (`lib/io.js` `setInterval(_drain, 750)`).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(750);
/// dht-rpc `STABLE_TICKS`: adaptive nodes check for persistence after this many ticks.
pub const STABLE_TICKS: i64 = 240;
/// dht-rpc `MORE_STABLE_TICKS`.
pub const MORE_STABLE_TICKS: i64 = 3 * STABLE_TICKS;
/// dht-rpc `REFRESH_TICKS`: idle refresh.
pub const REFRESH_TICKS: i64 = 60;
/// dht-rpc `RECENT_NODE`.
pub const RECENT_NODE: u64 = 12;
/// dht-rpc `OLD_NODE`.
pub const OLD_NODE: u64 = 360;
/// dht-rpc request timeout per transmission (`lib/io.js` `_sendNow`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// Retries of a plain request (`lib/io.js` `Request.retries`).
pub const REQUEST_RETRIES: u32 = 3;
/// Retries of a query visit (`lib/query.js`).
pub const QUERY_RETRIES: u32 = 5;
/// Concurrent DOWN_HINT checks (`index.js` `_checks < 10`).
pub const MAX_CHECKS: u32 = 10;
/// Concurrent ping-and-swap checks for full rows (`index.js` `_repinging >= 3`).
pub const MAX_REPINGING: u32 = 3;
/// Default for [`Config::max_connections_per_server`]. hyperdht keeps no such bound (every
/// handshake `lib/server.js` answers opens a connection); 1024 open connections is far past
/// what one peer serves in practice, while bounding what a flood of handshakes can hold.
pub const DEFAULT_MAX_CONNECTIONS_PER_SERVER: usize = 1024;
/// Handshake replies one server handshake keeps while its puncher socket opens (the replies
/// to a client resending its handshake meanwhile); past it the oldest is dropped and counted
/// in [`Dropped::pending_reply_overflow`](crate::stats::Dropped). JS keeps no bound (each
/// retransmit awaits the same handshake promise in `_onpeerhandshake`).
pub const MAX_PENDING_REPLIES: usize = 8;
/// Default for [`Config::max_queued_output`]. A driver that drains every turn (both drivers
/// here do) holds at most one turn's output, a few hundred entries; the cap only bites when
/// nothing drains.
pub const DEFAULT_MAX_QUEUED_OUTPUT: usize = 8192;
/// The public HyperDHT bootstrap nodes (`hyperdht/lib/constants.js`), as `ip@host:port`.
pub const PUBLIC_BOOTSTRAP: [&str; 3] = [
    "88.99.3.86@node1.hyperdht.org:49737",
    "142.93.90.113@node2.hyperdht.org:49737",
    "138.68.147.8@node3.hyperdht.org:49737",
];

/// When the node becomes persistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Persistence {
    /// Start ephemeral; become persistent after about 20 stable minutes if reachable
    /// (the JS default).
    Adaptive,
    /// Become persistent during bootstrap if the checks pass (JS `ephemeral: false`).
    Persistent,
    /// Never persistent (JS `ephemeral: true`).
    Ephemeral,
}

/// Node configuration.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Local address to bind both sockets on.
    pub host: Ipv4Addr,
    /// Server socket port (0 = any).
    pub port: u16,
    /// Fall back to a random port when `port .. port + 4` are taken (JS `anyPort`).
    pub any_port: bool,
    /// Bootstrap nodes; empty starts a new network.
    pub bootstrap: Vec<SocketAddrV4>,
    /// Persistence mode.
    pub persistence: Persistence,
    /// Assume we are behind a firewall until proven otherwise (JS `firewalled`, default true).
    /// `false` skips the PING_NAT reachability test.
    pub firewalled: bool,
    /// Probe reachability with one PING_NAT during bootstrap (JS `quickFirewall`).
    pub quick_firewall: bool,
    /// Query concurrency (JS `concurrency`).
    pub concurrency: usize,
    /// Congestion window per 750 ms slot (JS `maxWindow`).
    pub max_window: u32,
    /// Longest DELAYED_PING delay honoured (JS `maxPingDelay`).
    pub max_ping_delay: Duration,
    /// DELAYED_PING replies waiting at once (not bounded in JS).
    pub max_delayed_pings: usize,
    /// Send DOWN_HINTs from queries (JS `sendDownHints`).
    pub send_down_hints: bool,
    /// DOWN_HINTs per tick; `None` = unlimited (JS `downHintsRateLimit`, default 50).
    pub down_hints_rate_limit: Option<u32>,
    /// Skip the stray testnet nodes hyperdht filters (`hyperdht/index.js` `filterNode`).
    pub filter_stray_nodes: bool,
    /// Pre-seed our public address (JS `DHT.bootstrapper(port, host)`). Port 0 stands for the
    /// port the server socket gets bound to.
    pub public_address: Option<SocketAddrV4>,
    /// Fixed token secrets `[previous, current]` (for vectors and tests).
    pub token_secrets: Option<[[u8; 32]; 2]>,
    /// Storage limits of a persistent node.
    pub store_limits: crate::dht::StoreLimits,
    /// Wall-clock time (Unix milliseconds) at `Timestamp::ZERO`, for checking announce bumps
    /// (`None`: bumps are never stored).
    pub unix_ms_at_zero: Option<u64>,
    /// Our LAN IPv4 addresses (non-loopback interfaces), advertised in handshakes for the LAN
    /// shortcut; the driver fills them in. Unused when bound to 127.0.0.1.
    pub local_addresses: Vec<Ipv4Addr>,
    /// Try the LAN shortcut when client and server share a public address (JS
    /// `localConnection`, default true).
    pub local_connection: bool,
    /// The node's default key pair, used by connects that name none (JS `keyPair`, which
    /// becomes `dht.defaultKeyPair`). `None`: one derived from the node's seed, so it is
    /// random when the seed is.
    pub key_pair: Option<crate::dht::KeyPair>,
    /// Live (not closed) connections one server holds at once; a handshake that would open
    /// one more gets no reply and is counted in
    /// [`Dropped::connection_cap`](crate::stats::Dropped). A connection frees its place when
    /// it closes (its unread input may linger a while after). Not bounded in JS; the default
    /// is [`DEFAULT_MAX_CONNECTIONS_PER_SERVER`].
    pub max_connections_per_server: usize,
    /// Entries each output queue (transmits, events, socket ops) may hold before the node
    /// refuses datagrams ([`Node::backpressure`](crate::Node::backpressure)); the default is
    /// [`DEFAULT_MAX_QUEUED_OUTPUT`].
    pub max_queued_output: usize,
}

/// The public bootstrap nodes of [`PUBLIC_BOOTSTRAP`] as addresses (the IP before each `@`;
/// no DNS look-up).
pub fn public_bootstrap() -> Vec<SocketAddrV4> {
    PUBLIC_BOOTSTRAP
        .iter()
        .filter_map(|entry| {
            let (ip, rest) = entry.split_once('@')?;
            let port = rest.rsplit_once(':')?.1.parse().ok()?;
            Some(SocketAddrV4::new(ip.parse().ok()?, port))
        })
        .collect()
}

/// A node of the public HyperDHT network, as JS `new DHT()`: bootstraps from
/// [`public_bootstrap`], binds 0.0.0.0 on [`DEFAULT_PORT`] (or a nearby or random port),
/// becomes persistent when it proves reachable for long enough.
impl Default for Config {
    fn default() -> Self {
        Config {
            host: Ipv4Addr::UNSPECIFIED,
            port: DEFAULT_PORT,
            any_port: true,
            bootstrap: public_bootstrap(),
            persistence: Persistence::Adaptive,
            firewalled: true,
            quick_firewall: true,
            concurrency: 10,
            max_window: crate::rpc::CongestionWindow::DEFAULT_MAX_WINDOW,
            max_ping_delay: Duration::from_millis(10_000),
            max_delayed_pings: 1024,
            send_down_hints: true,
            down_hints_rate_limit: Some(50),
            filter_stray_nodes: true,
            public_address: None,
            token_secrets: None,
            store_limits: crate::dht::StoreLimits::default(),
            unix_ms_at_zero: None,
            local_addresses: Vec::new(),
            local_connection: true,
            key_pair: None,
            max_connections_per_server: DEFAULT_MAX_CONNECTIONS_PER_SERVER,
            max_queued_output: DEFAULT_MAX_QUEUED_OUTPUT,
        }
    }
}

impl Config {
    /// A normal node bootstrapping from `bootstrap` instead of the public network (JS
    /// `new DHT({ bootstrap })`); an empty list starts a new network.
    pub fn new(bootstrap: Vec<SocketAddrV4>) -> Config {
        Config {
            bootstrap,
            ..Config::default()
        }
    }

    /// A node of a local test network on 127.0.0.1 (any free port), bootstrapping from
    /// `bootstrap` (JS `createTestnet` nodes; start the network with
    /// [`Config::bootstrapper`] on `127.0.0.1:0`).
    pub fn local(bootstrap: Vec<SocketAddrV4>) -> Config {
        Config {
            host: Ipv4Addr::LOCALHOST,
            port: 0,
            bootstrap,
            ..Config::default()
        }
    }

    /// The first node of a network, reachable at `addr` (JS `DHT.bootstrapper(port, host)`):
    /// persistent at once, not firewalled, bound exactly on `addr`'s port, no bootstrap list.
    ///
    /// Port 0 binds any free port and announces that one, so tests need not guess a free port
    /// (JS requires a port here).
    pub fn bootstrapper(addr: SocketAddrV4) -> Config {
        Config {
            host: *addr.ip(),
            port: addr.port(),
            any_port: false,
            bootstrap: Vec::new(),
            persistence: Persistence::Persistent,
            firewalled: false,
            public_address: Some(addr),
            ..Config::default()
        }
    }

    /// The ports to try for the server socket, in order (`lib/io.js` `_bindSockets`: with
    /// `anyPort` off the first failure is fatal).
    pub fn server_ports(&self) -> Vec<u16> {
        if self.port == 0 {
            return vec![0];
        }
        if !self.any_port {
            return vec![self.port];
        }
        let mut ports: Vec<u16> = (0..PORT_RANGE)
            .filter_map(|i| self.port.checked_add(i))
            .collect();
        ports.push(0);
        ports
    }
}

/// Whether hyperdht's `filterNode` lets `addr` into tables and queries.
pub fn stray_node(addr: &SocketAddrV4) -> bool {
    let ip = addr.ip().octets();
    let port = addr.port();
    (port == 49738 && (ip == [134, 209, 28, 98] || ip == [167, 99, 142, 185]))
        || (port == 9400 && ip == [35, 233, 47, 252])
        || ip == [150, 136, 142, 116]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_joins_the_public_network() {
        let boot = Config::default().bootstrap;
        assert_eq!(
            boot,
            [
                "88.99.3.86:49737",
                "142.93.90.113:49737",
                "138.68.147.8:49737"
            ]
            .map(|a| a.parse::<SocketAddrV4>().unwrap())
        );
        assert_eq!(Config::new(Vec::new()).bootstrap, Vec::new());
        let local = Config::local(boot.clone());
        assert_eq!(
            (local.host, local.port, local.bootstrap),
            (Ipv4Addr::LOCALHOST, 0, boot)
        );
    }

    #[test]
    fn ports() {
        assert_eq!(
            Config::default().server_ports(),
            vec![49737, 49738, 49739, 49740, 49741, 0]
        );
        let mut c = Config {
            port: 0,
            ..Config::default()
        };
        assert_eq!(c.server_ports(), vec![0]);
        c.port = 5000;
        c.any_port = false;
        assert_eq!(c.server_ports(), vec![5000]);
        assert!(stray_node(&"150.136.142.116:1".parse().unwrap()));
        assert!(!stray_node(&"127.0.0.1:49738".parse().unwrap()));
    }
}
