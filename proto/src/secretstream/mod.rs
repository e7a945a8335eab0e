//! secret-stream: the encrypted record layer hyperdht runs over every UDX stream
//! (`@hyperswarm/secret-stream` 6.9.2 started with the keys of a finished handshake;
//! connect.md §4).
//!
//! This module owns the crypto ([`cipher`]: libsodium's secretstream XChaCha20-Poly1305), the
//! uint24 framing ([`frame`]) and the session ([`SecretStream`]): the id + header exchange,
//! data frames, keep-alive frames, and the optional unordered messages carried in UDX MESSAGE
//! packets. It is a pure transform over bytes: the caller moves [`SecretStream::pending_output`]
//! into a reliable stream (UDX) and feeds what it reads from it to
//! [`SecretStream::handle_input`]. Time comes in as `now`; randomness from [`Rng`].
//!
//! A session is created from what the Noise handshake produced: `(is_initiator, tx, rx,
//! handshake hash)` ([`SessionKeys`]). Both sides write their header frame at once, without
//! waiting for the peer.

pub mod cipher;
pub mod frame;

use core::fmt;
use core::time::Duration;
use std::collections::VecDeque;

use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;

use crate::crypto::{hash, hash_parts, keyed_hash64};
use crate::rng::Rng;
use crate::time::Timestamp;

use cipher::{Pull, Push, Tag, ABYTES, HEADER_BYTES};
use frame::{FrameDecoder, FrameTooLarge, MAX_FRAME};

/// Body length of the first frame: 32-byte stream id + 24-byte secretstream header
/// (`IDHEADERBYTES`, secret-stream `index.js`).
pub const ID_HEADER_BYTES: usize = 32 + HEADER_BYTES;

/// Largest plaintext one secret-stream message carries (one `SecretStream::write`,
/// one [`Conn::write_message`](crate::Conn::write_message)): a frame body is at most
/// `2^24 - 1` bytes and carries 17 bytes of overhead (`MAX_ATOMIC_WRITE`, `index.js`).
pub const MAX_MESSAGE: usize = MAX_FRAME - ABYTES;

/// hyperdht's keep-alive interval (`connectionKeepAlive` = 5000 ms, hyperdht `index.js`).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_millis(5000);

/// Unordered-message envelope: 8-byte counter + 16-byte secretbox MAC
/// (`crypto_secretbox_MACBYTES`) before the ciphertext.
const UNORDERED_OVERHEAD: usize = 8 + 16;

/// `namespace("hyperswarm/secret-stream", 3)` (hypercore-crypto): initiator (0), responder (1),
/// send (2).
pub fn namespace(i: u8) -> [u8; 32] {
    hash_parts(&[&hash(b"hyperswarm/secret-stream"), &[i]])
}

/// The stream id a side puts in its header frame: `H32(NS_INITIATOR or NS_RESPONDER;
/// key = handshake hash)` (secret-stream `streamId`).
pub fn stream_id(handshake_hash: &[u8; 64], initiator: bool) -> [u8; 32] {
    let ns = namespace(if initiator { 0 } else { 1 });
    keyed_hash64(handshake_hash, &ns)
}

/// The key a side seals its unordered messages with: `H32(NS_ROLE ‖ NS_SEND; key = hash)`
/// (secret-stream `_setupSecretSend`).
pub fn send_key(handshake_hash: &[u8; 64], initiator: bool) -> [u8; 32] {
    let role = namespace(if initiator { 0 } else { 1 });
    let mut msg = [0u8; 64];
    msg[..32].copy_from_slice(&role);
    msg[32..].copy_from_slice(&namespace(2));
    keyed_hash64(handshake_hash, &msg)
}

/// What a session needs from the Noise handshake (connect.md §1.6, §4.1).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Whether we are the initiator (the connecting client).
    pub is_initiator: bool,
    /// Our sending key.
    pub tx: [u8; 32],
    /// Our receiving key (the peer's `tx`).
    pub rx: [u8; 32],
    /// The 64-byte handshake hash.
    pub hash: [u8; 64],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("is_initiator", &self.is_initiator)
            .finish_non_exhaustive()
    }
}

impl From<&crate::noise::HandshakeOutput> for SessionKeys {
    fn from(h: &crate::noise::HandshakeOutput) -> SessionKeys {
        SessionKeys {
            is_initiator: h.is_initiator,
            tx: h.tx,
            rx: h.rx,
            hash: h.hash,
        }
    }
}

/// Session options.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Send an empty message after this long without writing (`keepAlive`); `None` = never.
    pub keep_alive: Option<Duration>,
    /// Drop empty plaintexts instead of delivering them (secret-stream does this whenever
    /// keep-alive is on: `_filterZeroByteMessages`).
    pub filter_empty: bool,
    /// Largest frame accepted from the peer (bounded memory); at most `2^24 - 1`.
    pub max_frame: usize,
}

impl Default for Config {
    /// hyperdht's settings: keep-alive 5 s, empty messages filtered, any uint24 frame.
    fn default() -> Config {
        Config {
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            filter_empty: true,
            max_frame: MAX_FRAME,
        }
    }
}

/// Why a session failed. Every one is fatal: secret-stream destroys the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretStreamError {
    /// The first frame was not 56 bytes ("Invalid header message received").
    InvalidHeaderMessage,
    /// The first frame carried the wrong stream id ("Invalid header received").
    InvalidHeader,
    /// A data frame shorter than 17 bytes ("Invalid message received").
    InvalidMessage,
    /// A data frame failed authentication (libsodium pull failure).
    Decrypt,
    /// A frame longer than the session accepts (its configured maximum frame length).
    FrameTooLarge,
    /// A write larger than [`MAX_MESSAGE`] ("Message is too large for an atomic write").
    MessageTooLarge,
    /// The unordered-message counter went all the way round ("udp send nonce exchausted").
    NonceExhausted,
}

impl fmt::Display for SecretStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretStreamError::InvalidHeaderMessage => "invalid header message received",
            SecretStreamError::InvalidHeader => "invalid header received",
            SecretStreamError::InvalidMessage => "invalid message received",
            SecretStreamError::Decrypt => "message failed authentication",
            SecretStreamError::FrameTooLarge => "frame too large",
            SecretStreamError::MessageTooLarge => "message is too large for an atomic write",
            SecretStreamError::NonceExhausted => "unordered message nonce exhausted",
        })
    }
}

impl std::error::Error for SecretStreamError {}

impl From<FrameTooLarge> for SecretStreamError {
    fn from(_: FrameTooLarge) -> SecretStreamError {
        SecretStreamError::FrameTooLarge
    }
}

/// One side of a secret-stream session.
pub struct SecretStream {
    is_initiator: bool,
    push: Push,
    rx: [u8; 32],
    pull: Option<Pull>,
    remote_id: [u8; 32],
    decoder: FrameDecoder,
    /// Encrypted bytes for the transport; `out_pos` of them were already taken.
    out: Vec<u8>,
    out_pos: usize,
    /// Decrypted messages not yet read, and their total size.
    incoming: VecDeque<Vec<u8>>,
    incoming_bytes: usize,
    /// How far into `incoming[0]` `read` has gone.
    read_pos: usize,
    config: Config,
    last_write: Timestamp,
    error: Option<SecretStreamError>,
    send_key: [u8; 32],
    recv_key: [u8; 32],
    send_counter: [u8; 8],
    send_counter_start: [u8; 8],
    /// Bytes of data frames read and written, the header frames not counted (secret-stream
    /// `rawBytesRead` / `rawBytesWritten`).
    raw_bytes_read: u64,
    raw_bytes_written: u64,
}

impl fmt::Debug for SecretStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStream")
            .field("is_initiator", &self.is_initiator)
            .field("established", &self.pull.is_some())
            .field("pending_output", &(self.out.len() - self.out_pos))
            .field("incoming_bytes", &self.incoming_bytes)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl SecretStream {
    /// Starts a session and queues its id + header frame. The 24-byte secretstream header and
    /// the unordered-message counter are drawn from `rng`.
    pub fn new(now: Timestamp, keys: &SessionKeys, rng: &mut Rng, config: Config) -> SecretStream {
        let mut header = [0u8; HEADER_BYTES];
        rng.fill(&mut header);
        let mut counter = [0u8; 8];
        rng.fill(&mut counter);
        SecretStream::with_header(now, keys, header, counter, config)
    }

    /// Like [`SecretStream::new`] with a given header and unordered-message counter (tests).
    pub fn with_header(
        now: Timestamp,
        keys: &SessionKeys,
        header: [u8; HEADER_BYTES],
        unordered_counter: [u8; 8],
        config: Config,
    ) -> SecretStream {
        let mut out = Vec::with_capacity(3 + ID_HEADER_BYTES);
        frame::write_prefix(&mut out, ID_HEADER_BYTES);
        out.extend_from_slice(&stream_id(&keys.hash, keys.is_initiator));
        out.extend_from_slice(&header);
        SecretStream {
            is_initiator: keys.is_initiator,
            push: Push::new(&keys.tx, &header),
            rx: keys.rx,
            pull: None,
            remote_id: stream_id(&keys.hash, !keys.is_initiator),
            decoder: FrameDecoder::new(ID_HEADER_BYTES),
            out,
            out_pos: 0,
            incoming: VecDeque::new(),
            incoming_bytes: 0,
            read_pos: 0,
            config,
            last_write: now,
            error: None,
            send_key: send_key(&keys.hash, keys.is_initiator),
            recv_key: send_key(&keys.hash, !keys.is_initiator),
            send_counter: unordered_counter,
            send_counter_start: unordered_counter,
            raw_bytes_read: 0,
            raw_bytes_written: 0,
        }
    }

    /// Bytes of data frames read and written so far, keep-alives included and the header
    /// frames not (secret-stream `rawBytesRead`, `rawBytesWritten`: hyperswarm tells a
    /// connection that carried data both ways from a fresh one by them).
    pub fn raw_bytes(&self) -> (u64, u64) {
        (self.raw_bytes_read, self.raw_bytes_written)
    }

    /// Whether we are the initiator.
    pub fn is_initiator(&self) -> bool {
        self.is_initiator
    }

    /// Whether the peer's header arrived (its messages can be decrypted).
    pub fn is_established(&self) -> bool {
        self.pull.is_some()
    }

    /// The fatal error, once one happened. A failed session accepts no more input.
    pub fn error(&self) -> Option<SecretStreamError> {
        self.error
    }

    /// Encrypts `data` as one message and queues its frame.
    pub fn write(&mut self, now: Timestamp, data: &[u8]) -> Result<(), SecretStreamError> {
        if data.len() > MAX_MESSAGE {
            return Err(SecretStreamError::MessageTooLarge);
        }
        self.compact_output();
        frame::write_prefix(&mut self.out, data.len() + ABYTES);
        self.push.seal(data, Tag::MESSAGE, &mut self.out);
        self.raw_bytes_written += (3 + data.len() + ABYTES) as u64;
        self.last_write = now;
        Ok(())
    }

    /// Encrypted bytes waiting to go into the transport.
    pub fn pending_output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Marks the first `n` bytes of [`SecretStream::pending_output`] as handed to the transport.
    pub fn consume_output(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
    }

    /// Takes all pending output at once.
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut v = core::mem::take(&mut self.out);
        if self.out_pos > 0 {
            v.drain(..self.out_pos);
        }
        self.out_pos = 0;
        v
    }

    fn compact_output(&mut self) {
        if self.out_pos > 0 && self.out_pos >= self.out.len() / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    /// Feeds bytes read from the transport. Complete messages become readable; the first
    /// error is fatal and sticky (the caller should destroy the transport).
    ///
    /// Decrypted messages wait in the session until read: a caller that wants bounded memory
    /// stops reading the transport while [`SecretStream::readable_bytes`] is large (the UDX
    /// receive window then holds the peer back).
    pub fn handle_input(
        &mut self,
        now: Timestamp,
        mut bytes: &[u8],
    ) -> Result<(), SecretStreamError> {
        let _ = now;
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.pull.is_none() {
            // Until the peer's header frame is in, only its 3 + 56 bytes are fed, with the
            // decoder taking no frame longer than that: a peer cannot make us buffer a
            // 16 MiB "header" (JS would, then refuse it).
            let need =
                (frame::PREFIX_LEN + ID_HEADER_BYTES).saturating_sub(self.decoder.buffered());
            let (head, rest) = bytes.split_at(need.min(bytes.len()));
            self.decode(head)?;
            if self.pull.is_none() {
                return Ok(());
            }
            self.decoder.set_max_frame(self.config.max_frame);
            bytes = rest;
        }
        self.decode(bytes)
    }

    /// Bytes of a frame from the peer that is not complete yet, held until the rest arrives
    /// (at most [`Config::max_frame`] + 2, and 58 before the peer's header frame is in).
    /// Messages that are complete count in [`SecretStream::readable_bytes`] instead; together
    /// they are what the peer made us keep.
    pub fn buffered_input_len(&self) -> usize {
        self.decoder.buffered()
    }

    /// Bytes still to come before the frame being read is complete (see
    /// [`FrameDecoder::missing`](frame::FrameDecoder::missing)).
    pub fn missing_frame_bytes(&self) -> usize {
        self.decoder.missing()
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<(), SecretStreamError> {
        let Self {
            decoder,
            pull,
            rx,
            remote_id,
            incoming,
            incoming_bytes,
            config,
            raw_bytes_read,
            ..
        } = self;
        let header_phase = pull.is_none();
        let result = decoder.push(bytes, |body: &mut [u8]| {
            let Some(pull) = pull.as_mut() else {
                if body.len() != ID_HEADER_BYTES {
                    return Err(SecretStreamError::InvalidHeaderMessage);
                }
                if body[..32] != remote_id[..] {
                    return Err(SecretStreamError::InvalidHeader);
                }
                let header = <&[u8; HEADER_BYTES]>::try_from(&body[32..])
                    .map_err(|_| SecretStreamError::InvalidHeaderMessage)?;
                *pull = Some(Pull::new(rx, header));
                return Ok(());
            };
            if body.len() < ABYTES {
                return Err(SecretStreamError::InvalidMessage);
            }
            *raw_bytes_read += body.len() as u64;
            pull.open_in_place(body)
                .map_err(|_| SecretStreamError::Decrypt)?;
            let plain = &body[1..body.len() - 16];
            if plain.is_empty() && config.filter_empty {
                return Ok(());
            }
            *incoming_bytes += plain.len();
            incoming.push_back(plain.to_vec());
            Ok(())
        });
        let result = match result {
            // The header frame is exactly ID_HEADER_BYTES long.
            Err(SecretStreamError::FrameTooLarge) if header_phase => {
                Err(SecretStreamError::InvalidHeaderMessage)
            }
            other => other,
        };
        if let Err(e) = result {
            self.error = Some(e);
        }
        result
    }

    /// Total plaintext bytes waiting to be read.
    pub fn readable_bytes(&self) -> usize {
        self.incoming_bytes - self.read_pos
    }

    /// The next decrypted message, whole (one peer write), if any.
    pub fn poll_message(&mut self) -> Option<Vec<u8>> {
        let mut m = self.incoming.pop_front()?;
        self.incoming_bytes -= m.len();
        if self.read_pos > 0 {
            m.drain(..self.read_pos);
            self.read_pos = 0;
        }
        Some(m)
    }

    /// Reads decrypted bytes as a byte stream, ignoring message boundaries; returns how many
    /// were copied into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.incoming.front() else {
                break;
            };
            let avail = &front[self.read_pos..];
            let take = avail.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&avail[..take]);
            n += take;
            self.read_pos += take;
            if self.read_pos == front.len() {
                self.incoming_bytes -= front.len();
                self.incoming.pop_front();
                self.read_pos = 0;
            }
        }
        n
    }

    /// When the keep-alive frame is due, if keep-alive is on.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.error.is_some() {
            return None;
        }
        self.config.keep_alive.map(|k| self.last_write + k)
    }

    /// Queues a keep-alive (an encrypted empty message) if one is due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if let Some(due) = self.poll_timeout() {
            if now >= due {
                // An empty message never exceeds the size limit.
                let _ = self.write(now, &[]);
            }
        }
    }

    /// Seals an unordered message (for a UDX MESSAGE packet): `counter (8) ‖ secretbox`,
    /// the counter incremented before use (secret-stream `_boxMessage`).
    pub fn seal_unordered(&mut self, data: &[u8]) -> Result<Vec<u8>, SecretStreamError> {
        increment_le(&mut self.send_counter);
        if self.send_counter == self.send_counter_start {
            self.error = Some(SecretStreamError::NonceExhausted);
            return Err(SecretStreamError::NonceExhausted);
        }
        let mut nonce = [0u8; 24];
        nonce[..8].copy_from_slice(&self.send_counter);
        let boxed = XSalsa20Poly1305::new(&self.send_key.into())
            .encrypt(&nonce.into(), data)
            .map_err(|_| SecretStreamError::MessageTooLarge)?;
        let mut out = Vec::with_capacity(8 + boxed.len());
        out.extend_from_slice(&self.send_counter);
        out.extend_from_slice(&boxed);
        Ok(out)
    }

    /// Opens an unordered message from the peer; `None` for anything short or forged (the JS
    /// side drops those silently, including hyperdht's empty upgrade confirmations).
    pub fn open_unordered(&self, envelope: &[u8]) -> Option<Vec<u8>> {
        if envelope.len() < UNORDERED_OVERHEAD {
            return None;
        }
        let mut nonce = [0u8; 24];
        nonce[..8].copy_from_slice(&envelope[..8]);
        XSalsa20Poly1305::new(&self.recv_key.into())
            .decrypt(&nonce.into(), &envelope[8..])
            .ok()
    }
}

/// libsodium `sodium_increment`: a little-endian counter plus one.
fn increment_le(n: &mut [u8]) {
    for b in n.iter_mut() {
        let (v, carry) = b.overflowing_add(1);
        *b = v;
        if !carry {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(initiator: bool) -> SessionKeys {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        SessionKeys {
            is_initiator: initiator,
            tx: if initiator { a } else { b },
            rx: if initiator { b } else { a },
            hash: [7; 64],
        }
    }

    fn pair() -> (SecretStream, SecretStream) {
        let mut rng = Rng::from_seed([3; 32]);
        let a = SecretStream::new(Timestamp::ZERO, &keys(true), &mut rng, Config::default());
        let b = SecretStream::new(Timestamp::ZERO, &keys(false), &mut rng, Config::default());
        (a, b)
    }

    fn pump(from: &mut SecretStream, to: &mut SecretStream) -> Result<(), SecretStreamError> {
        let bytes = from.take_output();
        to.handle_input(Timestamp::ZERO, &bytes)
    }

    #[test]
    fn namespaces_match_connect_md() {
        assert_eq!(
            crate::crypto::to_hex(&namespace(0)),
            "a931a0155b5c09e6d28628236af83c4b8a6af9af60986edeede9dc5d63192bf7"
        );
        assert_eq!(
            crate::crypto::to_hex(&namespace(2)),
            "aab97d097471f56651b0460ffc8aaa7d3342f7377597d60b925a1dac689adcbf"
        );
    }

    /// As secret-stream's `rawBytesRead` / `rawBytesWritten`: the header frames do not count,
    /// each data frame counts its length prefix on the sending side and its body on the other.
    #[test]
    fn raw_byte_counters_leave_out_the_headers() {
        let (mut a, mut b) = pair();
        pump(&mut a, &mut b).unwrap();
        pump(&mut b, &mut a).unwrap();
        assert!(a.is_established() && b.is_established());
        assert_eq!((a.raw_bytes(), b.raw_bytes()), ((0, 0), (0, 0)));
        a.write(Timestamp::ZERO, b"hello").unwrap();
        pump(&mut a, &mut b).unwrap();
        assert_eq!(a.raw_bytes(), (0, 3 + 5 + ABYTES as u64));
        assert_eq!(b.raw_bytes(), (5 + ABYTES as u64, 0));
    }

    #[test]
    fn exchange_both_ways() {
        let (mut a, mut b) = pair();
        assert_eq!(a.pending_output().len(), 59);
        a.write(Timestamp::ZERO, b"hello").unwrap();
        a.write(Timestamp::ZERO, b"").unwrap();
        a.write(Timestamp::ZERO, b"world").unwrap();
        pump(&mut a, &mut b).unwrap();
        pump(&mut b, &mut a).unwrap();
        assert!(a.is_established() && b.is_established());
        assert_eq!(b.poll_message().unwrap(), b"hello");
        // The empty message was a keep-alive and is filtered.
        let mut buf = [0u8; 3];
        assert_eq!(b.read(&mut buf), 3);
        assert_eq!(&buf, b"wor");
        assert_eq!(b.readable_bytes(), 2);
        assert_eq!(b.poll_message().unwrap(), b"ld");
        assert_eq!(b.poll_message(), None);
    }

    #[test]
    fn keep_alive_timer() {
        let (mut a, mut b) = pair();
        let t = Timestamp::ZERO + DEFAULT_KEEP_ALIVE;
        assert_eq!(a.poll_timeout(), Some(t));
        a.handle_timeout(Timestamp::from_millis(4999));
        assert_eq!(a.pending_output().len(), 59);
        a.handle_timeout(t);
        assert_eq!(a.pending_output().len(), 59 + 20);
        assert_eq!(a.poll_timeout(), Some(t + DEFAULT_KEEP_ALIVE));
        pump(&mut a, &mut b).unwrap();
        assert_eq!(b.readable_bytes(), 0);
    }

    #[test]
    fn wrong_id_and_tampering_are_fatal() {
        let (mut a, _) = pair();
        let mut rng = Rng::from_seed([4; 32]);
        // A peer that is also an initiator sends the initiator id: wrong id for `a`.
        let mut c = SecretStream::new(Timestamp::ZERO, &keys(true), &mut rng, Config::default());
        assert_eq!(pump(&mut c, &mut a), Err(SecretStreamError::InvalidHeader));
        assert_eq!(
            a.handle_input(Timestamp::ZERO, &[]),
            Err(SecretStreamError::InvalidHeader)
        );

        let (mut a, mut b) = pair();
        pump(&mut a, &mut b).unwrap();
        a.write(Timestamp::ZERO, b"secret").unwrap();
        let mut bytes = a.take_output();
        bytes[5] ^= 0x80;
        assert_eq!(
            b.handle_input(Timestamp::ZERO, &bytes),
            Err(SecretStreamError::Decrypt)
        );

        let (a, mut b) = pair();
        drop(a);
        assert_eq!(
            b.handle_input(Timestamp::ZERO, &[3, 0, 0, 1, 2, 3]),
            Err(SecretStreamError::InvalidHeaderMessage)
        );
        let (mut a, mut b) = pair();
        pump(&mut a, &mut b).unwrap();
        assert_eq!(b.handle_input(Timestamp::ZERO, &[16, 0, 0]), Ok(()));
        assert_eq!(
            b.handle_input(Timestamp::ZERO, &[0; 16]),
            Err(SecretStreamError::InvalidMessage)
        );
    }

    /// What a partial frame holds counts in `buffered_input_len`, byte by byte, and is gone
    /// once the frame is complete; the header and a data frame split anywhere.
    #[test]
    fn buffered_input_len_counts_a_partial_frame() {
        let (mut a, mut b) = pair();
        a.write(Timestamp::ZERO, &[9; 1000]).unwrap();
        let bytes = a.take_output();
        assert_eq!(bytes.len(), 59 + 3 + 1017);
        let mut fed = 0;
        for chunk in bytes.chunks(7) {
            b.handle_input(Timestamp::ZERO, chunk).unwrap();
            fed += chunk.len();
            let pending = if fed < 59 {
                fed
            } else {
                (fed - 59) % (3 + 1017)
            };
            assert_eq!(b.buffered_input_len(), pending, "after {fed} bytes");
            assert_eq!(
                b.readable_bytes(),
                if fed == bytes.len() { 1000 } else { 0 }
            );
        }
        assert_eq!(b.buffered_input_len(), 0);
        // A frame longer than the session takes fails at its prefix, before its body is kept.
        let config = Config {
            max_frame: 64,
            ..Config::default()
        };
        let mut rng = Rng::from_seed([5; 32]);
        let (mut a, mut b) = pair();
        let header = a.take_output();
        let mut c = SecretStream::new(Timestamp::ZERO, &keys(false), &mut rng, config.clone());
        c.handle_input(Timestamp::ZERO, &header).unwrap();
        assert_eq!(
            c.handle_input(Timestamp::ZERO, &[65, 0, 0, 1]),
            Err(SecretStreamError::FrameTooLarge)
        );
        // The longest partial frame: all but one byte of a max_frame frame.
        let mut c = SecretStream::new(Timestamp::ZERO, &keys(false), &mut rng, config.clone());
        c.handle_input(Timestamp::ZERO, &header).unwrap();
        let mut partial = vec![64, 0, 0];
        partial.extend_from_slice(&[0; 63]);
        c.handle_input(Timestamp::ZERO, &partial).unwrap();
        assert_eq!(c.buffered_input_len(), 64 + 2);
        // Before the peer's header: a "header" frame of 16 MiB is refused at its prefix.
        assert_eq!(
            b.handle_input(Timestamp::ZERO, &[0xff, 0xff, 0xff, 0]),
            Err(SecretStreamError::InvalidHeaderMessage)
        );
        assert_eq!(b.buffered_input_len(), 3);
    }

    #[test]
    fn too_large_write() {
        let (mut a, _) = pair();
        assert_eq!(
            a.write(Timestamp::ZERO, &vec![0; MAX_MESSAGE + 1]),
            Err(SecretStreamError::MessageTooLarge)
        );
    }

    #[test]
    fn unordered_roundtrip() {
        let (mut a, b) = pair();
        let env = a.seal_unordered(b"ping").unwrap();
        assert_eq!(env.len(), 4 + UNORDERED_OVERHEAD);
        assert_eq!(b.open_unordered(&env).unwrap(), b"ping");
        assert_eq!(a.open_unordered(&env), None);
        assert_eq!(b.open_unordered(&[]), None);
        let mut c = [0xff, 0xff, 1];
        increment_le(&mut c);
        assert_eq!(c, [0, 0, 2]);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(chunks in proptest::collection::vec(
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), 0..8)) {
            let (mut a, mut b) = pair();
            pump(&mut a, &mut b).unwrap();
            for c in &chunks {
                let _ = b.handle_input(Timestamp::ZERO, c);
                let _ = b.open_unordered(c);
            }
            let _ = b.poll_message();
        }
    }
}
