//! Bootstrap address parsing and DNS resolution (I/O, so it lives in the driver, not in proto).
//!
//! Accepts the forms hyperdht accepts: `host:port`, `ip:port`, and `suggestedIP@hostname:port`
//! (the public bootstrap list). For the `@` form the suggested IP is used directly; dht-rpc pings
//! it first and falls back to DNS, which this driver does not need to because the suggested IPs
//! are the ones DNS returns.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};

/// Resolves one bootstrap entry to an IPv4 address (the DHT is IPv4-only).
pub fn resolve_bootstrap(entry: &str) -> io::Result<SocketAddrV4> {
    let entry = entry.trim();
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bootstrap node {entry:?}: {why}"),
        )
    };
    let (host, port) = entry
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| invalid("bad port"))?;
    let host = match host.split_once('@') {
        Some((ip, _name)) => ip,
        None => host,
    };
    if let Ok(ip) = host.parse() {
        return Ok(SocketAddrV4::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()?
        .find_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| invalid("no IPv4 address"))
}

/// Parses a comma-separated bootstrap list; `none` (or an empty string) means no bootstrap
/// nodes, i.e. a new network.
pub fn parse_bootstrap_list(list: &str) -> io::Result<Vec<SocketAddrV4>> {
    if list.trim().is_empty() || list.trim() == "none" {
        return Ok(Vec::new());
    }
    list.split(',').map(resolve_bootstrap).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            resolve_bootstrap("127.0.0.1:5").unwrap(),
            "127.0.0.1:5".parse().unwrap()
        );
        assert_eq!(
            resolve_bootstrap("88.99.3.86@node1.hyperdht.org:49737").unwrap(),
            "88.99.3.86:49737".parse().unwrap()
        );
        assert!(resolve_bootstrap("nonsense").is_err());
        assert!(parse_bootstrap_list("none").unwrap().is_empty());
        assert_eq!(
            parse_bootstrap_list("1.2.3.4:1,5.6.7.8:2").unwrap().len(),
            2
        );
    }
}
