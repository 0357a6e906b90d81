//! UTF-8-safe incremental detokenisation.

use crate::byte_level::token_bytes;
use crate::tokenizer::Tokenizer;

/// Turns token ids, pushed one at a time, into text, yielding only complete UTF-8.
///
/// Byte-level tokens can end in the middle of a character (an emoji is often split over
/// two to four tokens). Bytes are held back until the character completes; a byte
/// sequence that can never become valid UTF-8 is replaced by U+FFFD exactly where and
/// as often as `String::from_utf8_lossy` (and so [`Tokenizer::decode`]) replaces it.
/// Hence the concatenation of every [`DecodeStream::step`] result and
/// [`DecodeStream::finish`] equals `decode(all ids)`.
pub struct DecodeStream<'t> {
    tokenizer: &'t Tokenizer,
    skip_special: bool,
    /// Bytes not yet returned: at most an incomplete UTF-8 character (< 4 bytes) between
    /// calls.
    pending: Vec<u8>,
}

impl<'t> DecodeStream<'t> {
    pub(crate) fn new(tokenizer: &'t Tokenizer, skip_special: bool) -> Self {
        Self {
            tokenizer,
            skip_special,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text that became complete (possibly empty). Ids outside
    /// the vocabulary and, when skipping, special tokens add nothing, as in `decode`.
    pub fn step(&mut self, id: u32) -> String {
        if self.skip_special && self.tokenizer.is_special(id) {
            return String::new();
        }
        if let Some(token) = self.tokenizer.id_to_token(id) {
            token_bytes(&token, &mut self.pending);
        }
        self.drain(false)
    }

    /// Ends the stream: a trailing incomplete character becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    /// Whether bytes of an incomplete character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn drain(&mut self, at_end: bool) -> String {
        let mut out = String::new();
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: from_utf8 vouched for the first `valid` bytes.
                    out.push_str(std::str::from_utf8(&rest[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // An invalid sequence: one U+FFFD, like from_utf8_lossy.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start += valid + n;
                        }
                        // A character cut off at the end: wait for more bytes.
                        None if !at_end => {
                            start += valid;
                            break;
                        }
                        None => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = self.pending.len();
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }
}
