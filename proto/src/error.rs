//! Typed errors. Network input never produces an error value: junk is dropped and counted in
//! [`crate::Stats`]. These describe failed operations and API misuse.

use core::fmt;

/// Why a request got no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply after every retransmission (dht-rpc `REQUEST_TIMEOUT`).
    Timeout,
    /// The node shut down or the request was cancelled (`REQUEST_DESTROYED`).
    Destroyed,
    /// The node has no bound socket to send from yet.
    NotListening,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestError::Timeout => "request timed out",
            RequestError::Destroyed => "request destroyed",
            RequestError::NotListening => "node is not listening",
        })
    }
}

impl std::error::Error for RequestError {}

/// Why a query failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryError {
    /// The commit phase had no node to commit to (`Too few nodes responded`).
    TooFewNodes,
    /// Every commit request failed.
    CommitFailed,
    /// The node shut down.
    Destroyed,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryError::TooFewNodes => "too few nodes responded",
            QueryError::CommitFailed => "every commit request failed",
            QueryError::Destroyed => "node destroyed",
        })
    }
}

impl std::error::Error for QueryError {}

/// Misuse of the node's API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiError {
    /// The node was shut down.
    Closed,
    /// `DELAYED_PING` delay above the node's `max_ping_delay`.
    DelayTooLong,
    /// A server with this key pair is already listening on this node.
    AlreadyListening,
    /// A swarm was joined with neither the server nor the client role.
    NoRole,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiError::Closed => "node is closed",
            ApiError::DelayTooLong => "delay exceeds the maximum ping delay",
            ApiError::AlreadyListening => "a server with this key pair is already listening",
            ApiError::NoRole => "a topic must be joined as a server, a client or both",
        })
    }
}

impl std::error::Error for ApiError {}

/// Why bytes did not decode: the one decode error of the crate, for compact-encoded messages
/// (dht-rpc datagrams, hyperdht records and handshakes) and UDX packets alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value did (for a UDX packet: shorter than its 20-byte
    /// header).
    UnexpectedEnd,
    /// An array claimed more elements than any honest message holds (`0x100000`,
    /// `wire::compact::MAX_ARRAY_LEN`).
    ArrayTooLong,
    /// The first byte is neither a request nor a response of protocol version 3.
    UnknownType,
    /// A value was out of the range its field allows.
    OutOfRange,
    /// Not a UDX packet: wrong magic or version byte.
    NotUdx,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::UnexpectedEnd => "unexpected end of input",
            DecodeError::ArrayTooLong => "array longer than 0x100000 elements",
            DecodeError::UnknownType => "unknown message type byte",
            DecodeError::OutOfRange => "value out of range",
            DecodeError::NotUdx => "wrong UDX magic or version",
        })
    }
}

impl std::error::Error for DecodeError {}
