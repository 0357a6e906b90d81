//! A bounds-checked little-endian reader over a byte slice. Every read checks the
//! bytes that remain first; lengths and counts are checked against them before any
//! allocation, so a crafted header cannot make us reserve more than the file justifies.

use crate::GgufError;

/// Byte cursor over an untrusted buffer.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// Current absolute offset.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Take `n` bytes; `what` is only evaluated on error.
    pub(crate) fn take(
        &mut self,
        n: usize,
        what: impl FnOnce() -> String,
    ) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n as u64,
                available: self.remaining() as u64,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: impl FnOnce() -> String) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 length then UTF-8 bytes (no terminator).
    pub(crate) fn string(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let len_at = self.pos as u64;
        let len = self.u64(&what)?;
        if len > self.remaining() as u64 {
            return Err(GgufError::StringTooLong {
                what: what(),
                len,
                offset: len_at,
                remaining: self.remaining() as u64,
            });
        }
        let start = self.pos as u64;
        // `len` fits in usize: it is at most `remaining()`.
        let bytes = self.take(len as usize, &what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::BadUtf8 {
                what: what(),
                offset: start,
            }),
        }
    }

    /// A u64 count of records, each at least `min_size` bytes: see [`Cursor::check_count`].
    pub(crate) fn count(
        &mut self,
        min_size: u64,
        what: impl Fn() -> String,
    ) -> Result<usize, GgufError> {
        let at = self.pos as u64;
        let count = self.u64(&what)?;
        self.check_count(count, at, min_size, what)
    }

    /// Reject `count` records of at least `min_size` bytes each unless they could fit in
    /// the bytes that remain, so the caller may then reserve `count` slots. `at` is the
    /// offset of the count field, for the message.
    pub(crate) fn check_count(
        &self,
        count: u64,
        at: u64,
        min_size: u64,
        what: impl Fn() -> String,
    ) -> Result<usize, GgufError> {
        let remaining = self.remaining() as u64;
        let fits = count
            .checked_mul(min_size.max(1))
            .is_some_and(|b| b <= remaining);
        if !fits {
            return Err(GgufError::CountTooLarge {
                what: what(),
                count,
                offset: at,
                remaining,
                min_size,
            });
        }
        // count <= remaining, which fits in usize.
        Ok(count as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_stops_at_end() {
        let mut c = Cursor::new(&[1, 0, 0, 0, 2]);
        assert_eq!(c.u32(|| "a".into()).unwrap(), 1);
        assert!(matches!(
            c.u32(|| "b".into()),
            Err(GgufError::Truncated {
                offset: 4,
                needed: 4,
                available: 1,
                ..
            })
        ));
        assert_eq!(c.u8(|| "c".into()).unwrap(), 2);
    }

    #[test]
    fn string_length_bounded_by_remaining() {
        let mut buf = u64::MAX.to_le_bytes().to_vec();
        buf.extend_from_slice(b"abc");
        let mut c = Cursor::new(&buf);
        assert!(matches!(
            c.string(|| "s".into()),
            Err(GgufError::StringTooLong {
                len: u64::MAX,
                remaining: 3,
                ..
            })
        ));
    }

    #[test]
    fn count_overflow_rejected() {
        let buf = (1u64 << 62).to_le_bytes();
        let mut c = Cursor::new(&buf);
        assert!(matches!(
            c.count(13, || "n".into()),
            Err(GgufError::CountTooLarge { .. })
        ));
    }
}
