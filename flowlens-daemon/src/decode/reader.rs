//! An offset-aware big-endian cursor over a datagram.
//!
//! Every flow protocol is big-endian and length-prefixed; this cursor is the only place
//! that indexes bytes, so every short read becomes a [`DecodeError::Truncated`] that
//! names the absolute offset in the datagram, never a panic. Sub-readers made with
//! [`Reader::sub`] keep absolute offsets so nested errors still point into the packet.

use super::error::DecodeError;

#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Absolute offset of `buf[0]` within the datagram.
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            base: 0,
        }
    }

    /// A reader over `buf` whose first byte sits at absolute offset `base`.
    pub fn with_base(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    /// Absolute offset of the next byte to be read.
    #[inline]
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unread bytes.
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    #[cold]
    #[inline(never)]
    fn truncated(&self, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            offset: self.offset(),
            needed,
            available: self.remaining(),
        }
    }

    /// Takes the next `n` bytes.
    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        match self.buf.get(self.pos..self.pos.wrapping_add(n)) {
            Some(s) if self.pos.checked_add(n).is_some() => {
                self.pos += n;
                Ok(s)
            }
            _ => Err(self.truncated(n)),
        }
    }

    /// Takes exactly `N` bytes as an array.
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Takes the next `n` bytes as a sub-reader that keeps absolute offsets.
    #[inline]
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        let base = self.offset();
        let s = self.bytes(n)?;
        Ok(Reader::with_base(s, base))
    }

    #[inline]
    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.bytes(n).map(|_| ())
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    #[inline]
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    #[inline]
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    #[inline]
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }
}

/// Reads a big-endian unsigned integer of 1 to 8 octets (IPFIX reduced-size encoding,
/// RFC 7011 §6.2). Longer inputs keep their low-order 8 octets.
#[inline]
pub fn be_uint(bytes: &[u8]) -> u64 {
    // A fixed-size load of the low-order (at most) eight octets, not a byte loop.
    let tail = bytes.get(bytes.len().saturating_sub(8)..).unwrap_or(bytes);
    let mut word = [0u8; 8];
    if let Some(low) = word.get_mut(8 - tail.len()..) {
        low.copy_from_slice(tail);
    }
    u64::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_tracks_offsets() {
        let data = [0, 1, 0, 0, 0, 2, 9];
        let mut r = Reader::with_base(&data, 100);
        assert_eq!(r.u16().unwrap(), 1);
        assert_eq!(r.u32().unwrap(), 2);
        assert_eq!(r.offset(), 106);
        assert_eq!(
            r.u16(),
            Err(DecodeError::Truncated {
                offset: 106,
                needed: 2,
                available: 1
            })
        );
        // A failed read consumes nothing.
        assert_eq!(r.u8().unwrap(), 9);
    }

    #[test]
    fn sub_reader_keeps_absolute_offsets() {
        let data = [0u8; 10];
        let mut r = Reader::with_base(&data, 20);
        r.skip(4).unwrap();
        let mut s = r.sub(3).unwrap();
        assert_eq!(s.offset(), 24);
        assert_eq!(
            s.u32(),
            Err(DecodeError::Truncated {
                offset: 24,
                needed: 4,
                available: 3
            })
        );
        assert_eq!(r.offset(), 27);
    }

    #[test]
    fn huge_lengths_do_not_overflow() {
        let data = [0u8; 4];
        let mut r = Reader::new(&data);
        r.skip(2).unwrap();
        assert!(r.bytes(usize::MAX).is_err());
    }

    #[test]
    fn be_uint_handles_reduced_sizes() {
        assert_eq!(be_uint(&[]), 0);
        assert_eq!(be_uint(&[0x12]), 0x12);
        assert_eq!(be_uint(&[0x01, 0x02, 0x03]), 0x0001_0203);
        assert_eq!(be_uint(&[0xff; 8]), u64::MAX);
        assert_eq!(be_uint(&[0xaa, 0, 0, 0, 0, 0, 0, 0, 7]), 7);
    }
}
