//! [`Error`]: why a driver call failed, the same type in both drivers.

use std::fmt;
use std::io;

use hyperdht_proto::{ApiError, ConnectError, QueryError, RequestError};

/// Why a call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed.
    Io(io::Error),
    /// The node could not bind its sockets.
    BindFailed,
    /// A request got no reply.
    Request(RequestError),
    /// A query failed.
    Query(QueryError),
    /// The node has shut down (or its driver stopped).
    Closed,
    /// A connection attempt failed.
    Connect(ConnectError),
    /// The node refused the call.
    Api(ApiError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::BindFailed => f.write_str("could not bind the DHT sockets"),
            Error::Request(e) => write!(f, "request failed: {e}"),
            Error::Query(e) => write!(f, "query failed: {e}"),
            Error::Closed => f.write_str("node is shut down"),
            Error::Connect(e) => write!(f, "connect failed: {e}"),
            Error::Api(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    /// The wrapped error, so callers can walk the chain or downcast to it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Request(e) => Some(e),
            Error::Query(e) => Some(e),
            Error::Connect(e) => Some(e),
            Error::Api(e) => Some(e),
            Error::BindFailed | Error::Closed => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            e => io::Error::other(e),
        }
    }
}

/// 32 bytes from the OS random source (a node's seed, a key pair's seed).
pub fn random_seed() -> Result<[u8; 32], Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Io(io::Error::other(e.to_string())))?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn wrapped_errors_are_the_source() {
        let e = Error::Io(io::Error::other("boom"));
        assert_eq!(e.source().unwrap().to_string(), "boom");
        assert!(Error::Closed.source().is_none());
        let back: io::Error = Error::Closed.into();
        assert_eq!(back.to_string(), "node is shut down");
    }
}
