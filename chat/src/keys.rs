//! Key handling for the chat: hex and z-base-32 public keys (hypercore-id-encoding), and the
//! server's key pair from a seed, a key file, or fresh randomness.

use std::fs;
use std::io::Write;
use std::path::Path;

use hyperdht_proto::{from_hex, to_hex, KeyPair};

/// The z-base-32 alphabet (`z32`, as hypercore-id-encoding writes keys).
const Z32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// Parses a 32-byte public key written in hex (64 digits) or z-base-32 (52 characters).
pub fn parse_public_key(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() == 64 {
        if let Some(v) = from_hex(s) {
            return v.try_into().map_err(|_| "key must be 32 bytes".to_string());
        }
    }
    if s.len() == 52 {
        return z32_decode(s).ok_or_else(|| format!("{s:?} is not a z-base-32 key"));
    }
    Err(format!(
        "{s:?} is not a key: expected 64 hex digits or 52 z-base-32 characters"
    ))
}

/// Decodes 52 z-base-32 characters into 32 bytes.
fn z32_decode(s: &str) -> Option<[u8; 32]> {
    let mut bits: u64 = 0;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(33);
    for c in s.bytes() {
        let v = Z32.iter().position(|&z| z == c.to_ascii_lowercase())? as u64;
        bits = (bits << 5) | v;
        nbits += 5;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    out.truncate(32);
    out.try_into().ok()
}

/// Encodes 32 bytes as z-base-32 (tests check the decoder against it).
#[cfg(test)]
pub fn z32_encode(key: &[u8; 32]) -> String {
    let mut out = String::with_capacity(52);
    let mut bits: u64 = 0;
    let mut nbits = 0;
    for &b in key {
        bits = (bits << 8) | u64::from(b);
        nbits += 8;
        while nbits >= 5 {
            nbits -= 5;
            out.push(Z32[((bits >> nbits) & 31) as usize] as char);
        }
        bits &= (1 << nbits) - 1;
    }
    if nbits > 0 {
        out.push(Z32[((bits << (5 - nbits)) & 31) as usize] as char);
    }
    out
}

/// 32 random bytes from the OS.
pub fn random_seed() -> Result<[u8; 32], String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(seed)
}

/// The server key pair: from `--seed`, else from `--key-file` (created with a fresh seed and
/// owner-only permissions if absent), else fresh. Errors name the file.
pub fn server_key(seed: Option<[u8; 32]>, key_file: Option<&Path>) -> Result<KeyPair, String> {
    if let Some(seed) = seed {
        return Ok(KeyPair::from_seed(&seed));
    }
    let Some(path) = key_file else {
        return Ok(KeyPair::from_seed(&random_seed()?));
    };
    if path.exists() {
        let text = fs::read_to_string(path)
            .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
        let seed =
            parse_seed(text.trim()).map_err(|e| format!("key file {}: {e}", path.display()))?;
        return Ok(KeyPair::from_seed(&seed));
    }
    let seed = random_seed()?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create key file {}: {e}", path.display()))?;
    writeln!(f, "{}", to_hex(&seed))
        .map_err(|e| format!("cannot write key file {}: {e}", path.display()))?;
    Ok(KeyPair::from_seed(&seed))
}

/// A 32-byte seed written as 64 hex digits.
pub fn parse_seed(hex: &str) -> Result<[u8; 32], String> {
    from_hex(hex.trim())
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| "a seed is 64 hex digits (32 bytes)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z32_round_trip_and_hex() {
        let key = KeyPair::from_seed(&[1; 32]).public_key();
        let z = z32_encode(&key);
        assert_eq!(z.len(), 52);
        assert_eq!(parse_public_key(&z).unwrap(), key);
        assert_eq!(parse_public_key(&to_hex(&key)).unwrap(), key);
        assert!(parse_public_key("nope").is_err());
        // hypercore-id-encoding of 32 zero bytes is 52 'y's.
        assert_eq!(z32_encode(&[0; 32]), "y".repeat(52));
    }
}
