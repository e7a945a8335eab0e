//! Counters. Every datagram the node drops is counted here by reason.

/// Why an incoming datagram was dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Shorter than 2 bytes (holepunch probes land here too).
    pub too_short: u64,
    /// Source port 0, or a non-IPv4 source.
    pub bad_source: u64,
    /// First byte is not a dht-rpc request or response.
    pub unknown_type: u64,
    /// Truncated or malformed message.
    pub malformed: u64,
    /// A response whose tid matches no request in flight (late, duplicate or forged).
    pub unmatched_response: u64,
    /// Arrived on a socket the node does not know, or after shutdown.
    pub unknown_socket: u64,
    /// A request the JS node would ignore too (PING_NAT to port 0, FIND_NODE without target,
    /// short DOWN_HINT or DELAYED_PING values, delays above the maximum).
    pub ignored_request: u64,
    /// DELAYED_PING refused because too many are waiting.
    pub delayed_ping_overflow: u64,
    /// Larger than the driver's receive buffer (2048 bytes in `hyperdht-mio`, as in libudx),
    /// so only its beginning arrived; reported by the driver through
    /// [`Node::handle_oversized_datagram`](crate::Node::handle_oversized_datagram).
    pub oversized: u64,
    /// A PEER_HANDSHAKE that would have opened a connection to one of our servers while it
    /// already held [`Config::max_connections_per_server`](crate::Config) live connections
    /// (no reply, as JS gives none to a handshake it cannot answer).
    pub connection_cap: u64,
    /// A handshake reply dropped because [`MAX_PENDING_REPLIES`](crate::MAX_PENDING_REPLIES)
    /// already waited for the server's puncher socket (the oldest goes; a client resending
    /// its handshake while the socket opens cannot grow the queue).
    pub pending_reply_overflow: u64,
    /// Refused because an output queue was full ([`Node::backpressure`](crate::Node::backpressure)):
    /// the driver did not drain what the node produced.
    pub backpressure: u64,
}

/// Blind relay use (JS `dht.stats.relaying`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relaying {
    /// Pairings started.
    pub attempts: u64,
    /// Connections that went through a relay.
    pub successes: u64,
    /// Pairings given up (another path won, the relay failed, or it took too long).
    pub aborts: u64,
    /// Pairs of peers linked by this node acting as a blind relay.
    pub relayed_links: u64,
}

/// Node counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams queued for sending.
    pub datagrams_sent: u64,
    /// Requests received and handled.
    pub requests_received: u64,
    /// Requests answered with INVALID_TOKEN.
    pub invalid_tokens: u64,
    /// Requests or responses whose id did not match their source (treated as id-less).
    pub forged_ids: u64,
    /// Requests we created.
    pub requests_total: u64,
    /// Requests in flight now.
    pub requests_active: u64,
    /// Responses matched to our requests.
    pub responses: u64,
    /// Requests that timed out after every retry.
    pub timeouts: u64,
    /// Retransmissions.
    pub retries: u64,
    /// Queries started.
    pub queries_total: u64,
    /// Queries running now.
    pub queries_active: u64,
    /// PEER_HANDSHAKE / PEER_HOLEPUNCH messages forwarded.
    pub relayed: u64,
    /// Dropped input, by reason.
    pub dropped: Dropped,
    /// Blind relay use.
    pub relaying: Relaying,
}
