//! secret-stream's framing: every frame is `uint24 LE length ‖ body` (connect.md §4.2-4.3;
//! `@hyperswarm/secret-stream` 6.9 `index.js` `_onrawdata`). Frames are cut out of a byte
//! stream, so a length prefix or a body may be split across reads in any way.

/// Largest body a uint24 length can describe (`MAX_ATOMIC_WRITE`, secret-stream `index.js`).
pub const MAX_FRAME: usize = (1 << 24) - 1;

/// Length of the prefix.
pub const PREFIX_LEN: usize = 3;

/// Appends the 3-byte little-endian length prefix of a `len`-byte body.
///
/// # Panics
/// If `len` exceeds [`MAX_FRAME`] (callers check first; never reachable from network input).
pub fn write_prefix(out: &mut Vec<u8>, len: usize) {
    assert!(len <= MAX_FRAME, "frame too large");
    let b = (len as u32).to_le_bytes();
    out.extend_from_slice(&b[..3]);
}

/// Incremental frame decoder. Memory is bounded by the largest frame it accepts: a body is
/// buffered as its bytes arrive, never reserved up front from the untrusted length.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    max_frame: usize,
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    /// The length of the frame being read, once the prefix is complete.
    body_len: Option<usize>,
    body: Vec<u8>,
}

/// A frame longer than the decoder accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTooLarge(pub usize);

impl FrameDecoder {
    /// A decoder accepting frames up to `max_frame` bytes (at most [`MAX_FRAME`]).
    pub fn new(max_frame: usize) -> FrameDecoder {
        FrameDecoder {
            max_frame: max_frame.min(MAX_FRAME),
            prefix: [0; PREFIX_LEN],
            prefix_len: 0,
            body_len: None,
            body: Vec::new(),
        }
    }

    /// Bytes buffered for an incomplete frame: at most `max_frame + 2` (a whole frame is
    /// handed over and dropped at once; a length past `max_frame` fails at its prefix, before
    /// any of its body is kept).
    pub fn buffered(&self) -> usize {
        self.prefix_len + self.body.len()
    }

    /// Bytes still to come before the frame being read is complete: the rest of its body once
    /// its prefix is in, else the rest of the prefix.
    pub fn missing(&self) -> usize {
        match self.body_len {
            Some(len) => len.saturating_sub(self.body.len()),
            None => PREFIX_LEN - self.prefix_len,
        }
    }

    /// The longest frame accepted from the next prefix on (at most [`MAX_FRAME`]).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame.min(MAX_FRAME);
    }

    /// Feeds `input`, calling `on_frame` with each complete body (mutable, so it can be
    /// decrypted in place). Stops at the first error, from the callback or a too-large length.
    pub fn push<E>(
        &mut self,
        mut input: &[u8],
        mut on_frame: impl FnMut(&mut [u8]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<FrameTooLarge>,
    {
        while !input.is_empty() {
            let len = match self.body_len {
                Some(len) => len,
                None => {
                    let take = (PREFIX_LEN - self.prefix_len).min(input.len());
                    self.prefix[self.prefix_len..self.prefix_len + take]
                        .copy_from_slice(&input[..take]);
                    self.prefix_len += take;
                    input = &input[take..];
                    if self.prefix_len < PREFIX_LEN {
                        break;
                    }
                    let len = usize::from(self.prefix[0])
                        | usize::from(self.prefix[1]) << 8
                        | usize::from(self.prefix[2]) << 16;
                    if len > self.max_frame {
                        return Err(FrameTooLarge(len).into());
                    }
                    self.body_len = Some(len);
                    len
                }
            };
            // The body is copied into `self.body` (grown as bytes arrive) so the callback can
            // decrypt it in place.
            let missing = len - self.body.len();
            let take = missing.min(input.len());
            // Grown by doubling as usual, but never past the frame: what a peer sends costs
            // no more memory than the frame length it announced.
            let want = self.body.len() + take;
            if want > self.body.capacity() {
                let target = (self.body.capacity() * 2).min(len).max(want);
                self.body.reserve_exact(target - self.body.len());
            }
            self.body.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.body.len() == len {
                self.prefix_len = 0;
                self.body_len = None;
                let result = on_frame(&mut self.body);
                self.body.clear();
                if self.body.capacity() > 64 * 1024 {
                    self.body = Vec::new();
                }
                result?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum E {
        Big(usize),
    }
    impl From<FrameTooLarge> for E {
        fn from(e: FrameTooLarge) -> E {
            E::Big(e.0)
        }
    }

    #[test]
    fn splits_anywhere() {
        let mut wire = Vec::new();
        let frames: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; i * 13]).collect();
        for f in &frames {
            write_prefix(&mut wire, f.len());
            wire.extend_from_slice(f);
        }
        for chunk in [1, 2, 3, 5, 64, 1000, wire.len()] {
            let mut d = FrameDecoder::new(MAX_FRAME);
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                d.push::<E>(c, |b| {
                    got.push(b.to_vec());
                    Ok(())
                })
                .unwrap();
            }
            assert_eq!(got, frames);
            assert_eq!(d.buffered(), 0);
        }
    }

    /// `missing` counts down the prefix, then the body, and is back at a prefix's length once
    /// the frame is complete.
    #[test]
    fn missing_counts_what_completes_the_frame() {
        let mut wire = Vec::new();
        write_prefix(&mut wire, 5);
        wire.extend_from_slice(b"hello");
        let mut d = FrameDecoder::new(MAX_FRAME);
        let mut left = Vec::new();
        for b in &wire {
            left.push(d.missing());
            d.push::<E>(core::slice::from_ref(b), |_| Ok(())).unwrap();
        }
        assert_eq!(left, [3, 2, 1, 5, 4, 3, 2, 1]);
        assert_eq!(d.missing(), PREFIX_LEN);
    }

    /// A partial frame keeps at most its bytes so far, and no more memory than its length, even
    /// fed one byte at a time.
    #[test]
    fn a_partial_frame_costs_its_bytes_and_no_more_than_its_length() {
        let mut d = FrameDecoder::new(1000);
        let mut wire = Vec::new();
        write_prefix(&mut wire, 1000);
        wire.extend_from_slice(&[1; 999]);
        for (i, b) in wire.iter().enumerate() {
            d.push::<E>(&[*b], |_| panic!("not complete")).unwrap();
            assert_eq!(d.buffered(), i + 1);
            assert!(d.body.capacity() <= 1000, "{}", d.body.capacity());
        }
        let mut got = 0;
        d.push::<E>(&[1], |b| {
            got = b.len();
            Ok(())
        })
        .unwrap();
        assert_eq!((got, d.buffered()), (1000, 0));
    }

    #[test]
    fn too_large() {
        let mut d = FrameDecoder::new(100);
        assert_eq!(d.push::<E>(&[101, 0, 0], |_| Ok(())), Err(E::Big(101)));
        let mut d = FrameDecoder::new(usize::MAX);
        assert!(d.push::<E>(&[0xff, 0xff, 0xff, 1], |_| Ok(())).is_ok());
        assert_eq!(d.buffered(), 4);
    }
}
