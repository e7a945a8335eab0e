//! libsodium's `crypto_secretstream_xchacha20poly1305`, byte for byte (connect.md §4.4; libsodium
//! `crypto_secretstream/xchacha20poly1305/secretstream_xchacha20poly1305.c`, which
//! sodium-secretstream 1.2 wraps), built from the `chacha20` and `poly1305` crates.
//!
//! One [`Push`] state encrypts a sequence of messages, one [`Pull`] state decrypts it. Every
//! message is `encrypted tag (1) ‖ ciphertext ‖ Poly1305 MAC (16)`. Two details break
//! interoperability silently if done "the RFC 8439 way", and the V2 vector catches both:
//! the MAC covers the *encrypted* tag byte plus 63 keystream bytes, and the zero padding after
//! the ciphertext is `mlen mod 16` bytes, not `(16 - mlen mod 16) mod 16`.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::{hchacha, ChaCha20};
use poly1305::universal_hash::{KeyInit, UniversalHash};
use poly1305::Poly1305;

/// Key length (`crypto_secretstream_xchacha20poly1305_KEYBYTES`).
pub const KEY_BYTES: usize = 32;
/// Header length (`crypto_secretstream_xchacha20poly1305_HEADERBYTES`): 16 bytes for HChaCha20,
/// 8 for the initial inner nonce.
pub const HEADER_BYTES: usize = 24;
/// Bytes a message grows by (`crypto_secretstream_xchacha20poly1305_ABYTES`): tag + MAC.
pub const ABYTES: usize = 17;
/// MAC length.
const MAC_BYTES: usize = 16;
/// Inner nonce length (`crypto_secretstream_xchacha20poly1305_INONCEBYTES`).
const INONCE_BYTES: usize = 8;

/// The tag byte of a message (`crypto_secretstream_xchacha20poly1305_TAG_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag(pub u8);

impl Tag {
    /// An ordinary message (the only tag secret-stream sends).
    pub const MESSAGE: Tag = Tag(0);
    /// End of a set of messages.
    pub const PUSH: Tag = Tag(1);
    /// Rekey after this message.
    pub const REKEY: Tag = Tag(2);
    /// Last message (`PUSH | REKEY`).
    pub const FINAL: Tag = Tag(3);
}

/// A message failed authentication (or was shorter than [`ABYTES`]). The state is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthError;

impl core::fmt::Display for AuthError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("secretstream message failed authentication")
    }
}

impl std::error::Error for AuthError {}

/// The shared state: subkey `k`, 32-bit counter and 8-byte inner nonce (libsodium's 52-byte
/// `crypto_secretstream_xchacha20poly1305_state`, minus its 8 pad bytes).
#[derive(Clone, PartialEq, Eq)]
struct State {
    k: [u8; 32],
    counter: u32,
    inonce: [u8; INONCE_BYTES],
}

impl core::fmt::Debug for State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("State")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl State {
    /// `init_push` / `init_pull`: `k = HChaCha20(key, header[..16])`, counter 1,
    /// `inonce = header[16..24]`.
    fn new(key: &[u8; KEY_BYTES], header: &[u8; HEADER_BYTES]) -> State {
        let mut input = [0u8; 16];
        input.copy_from_slice(&header[..16]);
        let k = hchacha::<chacha20::cipher::consts::U10>(&(*key).into(), &input.into());
        let mut inonce = [0u8; INONCE_BYTES];
        inonce.copy_from_slice(&header[16..]);
        State {
            k: k.into(),
            counter: 1,
            inonce,
        }
    }

    /// The 12-byte ChaCha20-IETF nonce: `counter (LE) ‖ inonce`.
    fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.counter.to_le_bytes());
        n[4..].copy_from_slice(&self.inonce);
        n
    }

    fn cipher(&self) -> ChaCha20 {
        ChaCha20::new(&self.k.into(), &self.nonce().into())
    }

    /// The per-message keystream prefix: returns the cipher positioned at block 2, the Poly1305
    /// key (block 0) and block 1 XORed with `first` in byte 0.
    fn begin(&self, first: u8) -> (ChaCha20, [u8; 32], [u8; 64]) {
        let mut cipher = self.cipher();
        let mut blocks = [0u8; 128];
        blocks[64] = first;
        cipher.apply_keystream(&mut blocks);
        let mut poly_key = [0u8; 32];
        poly_key.copy_from_slice(&blocks[..32]);
        let mut b = [0u8; 64];
        b.copy_from_slice(&blocks[64..]);
        (cipher, poly_key, b)
    }

    /// `Poly1305(polykey, B ‖ c ‖ zeros(mlen mod 16) ‖ le64(0) ‖ le64(64 + mlen))`.
    fn mac(poly_key: &[u8; 32], block: &[u8; 64], c: &[u8]) -> [u8; MAC_BYTES] {
        let mut mac = Poly1305::new(poly_key.into());
        mac.update_padded(block);
        let aligned = c.len() - c.len() % 16;
        mac.update_padded(&c[..aligned]);
        // libsodium pads with `(0x10 - 64 + mlen) & 0xf` zero bytes, which is `mlen mod 16`.
        let rest = &c[aligned..];
        let mut tail = [0u8; 48];
        tail[..rest.len()].copy_from_slice(rest);
        let mut n = 2 * rest.len();
        tail[n..n + 8].copy_from_slice(&0u64.to_le_bytes());
        n += 8;
        tail[n..n + 8].copy_from_slice(&(64 + c.len() as u64).to_le_bytes());
        n += 8;
        mac.compute_unpadded(&tail[..n]).into()
    }

    /// The state update after a message: `inonce ^= mac[..8]`, counter + 1, rekey on REKEY or
    /// counter wrap.
    fn advance(&mut self, mac: &[u8; MAC_BYTES], tag: u8) {
        for (n, m) in self.inonce.iter_mut().zip(mac) {
            *n ^= m;
        }
        self.counter = self.counter.wrapping_add(1);
        if tag & Tag::REKEY.0 != 0 || self.counter == 0 {
            self.rekey();
        }
    }

    /// `(k ‖ inonce) ^= ChaCha20-IETF(k, nonce, ic = 0)[..40]`, then counter 1.
    fn rekey(&mut self) {
        let mut buf = [0u8; 40];
        buf[..32].copy_from_slice(&self.k);
        buf[32..].copy_from_slice(&self.inonce);
        self.cipher().apply_keystream(&mut buf);
        self.k.copy_from_slice(&buf[..32]);
        self.inonce.copy_from_slice(&buf[32..]);
        self.counter = 1;
    }

    #[cfg(test)]
    fn to_bytes52(&self) -> [u8; 52] {
        let mut out = [0u8; 52];
        out[..32].copy_from_slice(&self.k);
        out[32..44].copy_from_slice(&self.nonce());
        out
    }

    #[cfg(test)]
    fn from_bytes52(b: &[u8; 52]) -> State {
        let mut k = [0u8; 32];
        k.copy_from_slice(&b[..32]);
        let mut inonce = [0u8; 8];
        inonce.copy_from_slice(&b[36..44]);
        State {
            k,
            counter: u32::from_le_bytes([b[32], b[33], b[34], b[35]]),
            inonce,
        }
    }
}

/// The encrypting half.
#[derive(Clone, Debug)]
pub struct Push {
    state: State,
}

impl Push {
    /// `init_push` with a header the caller drew at random; send the header to the peer.
    pub fn new(key: &[u8; KEY_BYTES], header: &[u8; HEADER_BYTES]) -> Push {
        Push {
            state: State::new(key, header),
        }
    }

    /// Encrypts `out[1 .. out.len() - 16]` in place: `out` must be `ABYTES` longer than the
    /// message, which sits at offset 1; the tag byte and MAC are filled in.
    ///
    /// # Panics
    /// If `out` is shorter than [`ABYTES`] (a programming error, never network input).
    pub fn seal_in_place(&mut self, out: &mut [u8], tag: Tag) {
        assert!(out.len() >= ABYTES, "secretstream output buffer too short");
        let (mut cipher, poly_key, block) = self.state.begin(tag.0);
        let mlen = out.len() - ABYTES;
        let (head, rest) = out.split_at_mut(1);
        let (c, mac_out) = rest.split_at_mut(mlen);
        head[0] = block[0];
        cipher.apply_keystream(c);
        let mac = State::mac(&poly_key, &block, c);
        mac_out.copy_from_slice(&mac);
        self.state.advance(&mac, tag.0);
    }

    /// Appends the encryption of `message` to `out` (`message.len() + ABYTES` bytes).
    pub fn seal(&mut self, message: &[u8], tag: Tag, out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(message.len() + ABYTES);
        out.push(0);
        out.extend_from_slice(message);
        out.extend_from_slice(&[0u8; MAC_BYTES]);
        self.seal_in_place(&mut out[start..], tag);
    }
}

/// The decrypting half.
#[derive(Clone, Debug)]
pub struct Pull {
    state: State,
}

impl Pull {
    /// `init_pull` with the header the peer sent.
    pub fn new(key: &[u8; KEY_BYTES], header: &[u8; HEADER_BYTES]) -> Pull {
        Pull {
            state: State::new(key, header),
        }
    }

    /// Authenticates and decrypts `ct` (tag ‖ ciphertext ‖ MAC) in place. On success the
    /// plaintext is `ct[1 .. ct.len() - 16]` and the tag is returned; on failure nothing
    /// changed (neither `ct` nor the state).
    pub fn open_in_place(&mut self, ct: &mut [u8]) -> Result<Tag, AuthError> {
        if ct.len() < ABYTES {
            return Err(AuthError);
        }
        let (mut cipher, poly_key, mut block) = self.state.begin(ct[0]);
        let tag = block[0];
        // The MAC covers the encrypted tag byte, not the decrypted one.
        block[0] = ct[0];
        let mlen = ct.len() - ABYTES;
        let (c, mac_in) = ct[1..].split_at_mut(mlen);
        let mac = State::mac(&poly_key, &block, c);
        if !ct_eq(&mac, mac_in) {
            return Err(AuthError);
        }
        cipher.apply_keystream(c);
        self.state.advance(&mac, tag);
        Ok(Tag(tag))
    }

    /// Decrypts `ct` into a new vector.
    pub fn open(&mut self, ct: &[u8]) -> Result<(Vec<u8>, Tag), AuthError> {
        let mut buf = ct.to_vec();
        let tag = self.open_in_place(&mut buf)?;
        buf.truncate(buf.len() - MAC_BYTES);
        buf.remove(0);
        Ok((buf, tag))
    }
}

/// Constant-time equality of two MACs.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::from_hex;

    fn arr<const N: usize>(h: &str) -> [u8; N] {
        from_hex(h).unwrap().try_into().unwrap()
    }

    const KEY: &str = "cc00d99bd3a15a6779df38fd42fd25a84d73264023e7c1da95cf3bcbdce9c210";
    const HEADER: &str = "000102030405060708090a0b0c0d0e0f1011121314151617";

    #[test]
    fn v2_subkey_and_hello() {
        let mut push = Push::new(&arr(KEY), &arr(HEADER));
        assert_eq!(
            push.state.k,
            arr::<32>("e67623fc0dae1b390adf94e4c8a9acf1f6291a96035a720c18be0a557f6ee6c2")
        );
        assert_eq!(push.state.nonce(), arr::<12>("010000001011121314151617"));
        let mut out = Vec::new();
        push.seal(b"hello", Tag::MESSAGE, &mut out);
        assert_eq!(
            out,
            from_hex("3217e10aeac8e7542973b5afd59db7a3011902ff15c9").unwrap()
        );

        let mut pull = Pull::new(&arr(KEY), &arr(HEADER));
        let (plain, tag) = pull.open(&out).unwrap();
        assert_eq!((plain.as_slice(), tag), (&b"hello"[..], Tag::MESSAGE));
    }

    #[test]
    fn v2_counter_wrap_rekey() {
        let before = "e67623fc0dae1b390adf94e4c8a9acf1f6291a96035a720c18be0a557f6ee6c2ffffffff10111213141516170000000000000000";
        let after = "ba9567c3150ac5ba798eebab45635cba0b8beb62e18f538714c8eeae149046d1010000000bd222561a6d87520000000000000000";
        let mut push = Push {
            state: State::from_bytes52(&arr(before)),
        };
        let mut pull = Pull {
            state: push.state.clone(),
        };
        // The vector's messages are "a" and "b" (one byte each: 18-byte ciphertexts).
        let mut a = Vec::new();
        push.seal(b"a", Tag::MESSAGE, &mut a);
        assert_eq!(a, from_hex("c0d082df25b4e85aa8b0e0c8e8248dc8f66d").unwrap());
        assert_eq!(push.state.to_bytes52(), arr::<52>(after));
        let mut b = Vec::new();
        push.seal(b"b", Tag::MESSAGE, &mut b);
        assert_eq!(b, from_hex("504575f9ac09f969a90cf3697045a7efef7c").unwrap());
        assert_eq!(pull.open(&a).unwrap().0, b"a");
        assert_eq!(pull.open(&b).unwrap().0, b"b");
    }

    #[test]
    fn tamper_and_short_rejected_without_state_change() {
        let mut push = Push::new(&[9; 32], &[1; 24]);
        let mut pull = Pull::new(&[9; 32], &[1; 24]);
        let mut m = Vec::new();
        push.seal(&[5u8; 100], Tag::MESSAGE, &mut m);
        for i in [0, 1, 50, m.len() - 1] {
            let mut bad = m.clone();
            bad[i] ^= 1;
            assert_eq!(pull.open(&bad), Err(AuthError));
        }
        assert_eq!(pull.open(&m[..16]), Err(AuthError));
        assert_eq!(pull.open(&m).unwrap().0, vec![5u8; 100]);
        // Replaying the same message fails: the state moved on.
        assert_eq!(pull.open(&m), Err(AuthError));
    }

    #[test]
    fn all_lengths_roundtrip() {
        let mut push = Push::new(&[3; 32], &[4; 24]);
        let mut pull = Pull::new(&[3; 32], &[4; 24]);
        for len in 0..300usize {
            let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ct = Vec::new();
            let tag = if len % 7 == 0 {
                Tag::REKEY
            } else {
                Tag::MESSAGE
            };
            push.seal(&msg, tag, &mut ct);
            assert_eq!(ct.len(), len + ABYTES);
            assert_eq!(pull.open(&ct).unwrap(), (msg, tag));
        }
    }
}
