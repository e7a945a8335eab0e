//! Address classes and the LAN address match hyperdht uses (npm `bogon` 1.x, hyperdht
//! `lib/holepuncher.js` `matchAddress`).

use std::net::{Ipv4Addr, SocketAddrV4};

/// Private-use, carrier-grade NAT, loopback and link-local ranges (`isPrivate`).
pub fn is_private(ip: &Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 10
        || (o[0] == 100 && (64..=127).contains(&o[1]))
        || o[0] == 127
        || (o[0] == 169 && o[1] == 254)
        || (o[0] == 172 && (16..=31).contains(&o[1]))
        || (o[0] == 192 && o[1] == 168)
}

/// Reserved ranges: "this" network, IETF, TEST-NETs, benchmarking, multicast, future use,
/// broadcast (`isReserved`).
pub fn is_reserved(ip: &Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 0
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 192 && o[1] == 0 && o[2] == 2)
        || (o[0] == 198 && (18..=19).contains(&o[1]))
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
        || (224..=239).contains(&o[0])
        || o[0] >= 240
}

/// Private or reserved (`isBogon`).
pub fn is_bogon(ip: &Ipv4Addr) -> bool {
    is_private(ip) || is_reserved(ip)
}

/// The remote LAN address sharing the longest dotted prefix with one of ours: a /24 match
/// wins at once, else the first /16, else the first /8, else none (`matchAddress`).
pub fn match_address(local: &[SocketAddrV4], remote: &[SocketAddrV4]) -> Option<SocketAddrV4> {
    let mut best: (u8, Option<SocketAddrV4>) = (1, None);
    for l in local {
        let a = l.ip().octets();
        for r in remote {
            let b = r.ip().octets();
            if a[0] != b[0] {
                continue;
            }
            if best.0 == 1 {
                best = (2, Some(*r));
            }
            if a[1] != b[1] {
                continue;
            }
            if best.0 == 2 {
                best = (3, Some(*r));
            }
            if a[2] == b[2] {
                return Some(*r);
            }
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_match() {
        assert!(is_private(&"127.0.0.1".parse().unwrap()));
        assert!(is_reserved(&"198.18.3.4".parse().unwrap()));
        assert!(!is_bogon(&"88.99.3.86".parse().unwrap()));
        let local = ["192.168.122.238:1".parse().unwrap()];
        let remote = [
            "10.0.0.1:1".parse().unwrap(),
            "192.168.0.23:2".parse().unwrap(),
            "192.168.122.1:3".parse().unwrap(),
        ];
        assert_eq!(match_address(&local, &remote), Some(remote[2]));
        assert_eq!(match_address(&local, &remote[..2]), Some(remote[1]));
        assert_eq!(match_address(&local, &remote[..1]), None);
    }
}
