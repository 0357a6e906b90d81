//! GPT-2 byte-level alphabet: each byte is shown as a printable char in token strings.

use std::sync::OnceLock;

/// The byte each byte-level char stands for (index: char as u32, only < 324 used).
fn char_to_byte_table() -> &'static [Option<u8>; 324] {
    static TABLE: OnceLock<[Option<u8>; 324]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [None; 324];
        for (b, c) in bytes_to_chars().iter().enumerate() {
            table[*c as usize] = Some(b as u8);
        }
        table
    })
}

/// The byte-level char of every byte, as in GPT-2's `bytes_to_unicode`: printable
/// Latin-1 bytes map to themselves, the others to U+0100 onwards in byte order.
pub(crate) fn bytes_to_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            b as u32
        } else {
            let c = next;
            next += 1;
            c
        };
        // All values are < 324, valid chars.
        out[b as usize] = char::from_u32(c).unwrap_or('\0');
    }
    out
}

/// The bytes a token string stands for, as the `tokenizers` ByteLevel decoder computes
/// them: every char mapped back to its byte, or, if any char is outside the byte-level
/// alphabet (an added token written in plain text), the token's own UTF-8 bytes.
pub(crate) fn token_bytes(token: &str, out: &mut Vec<u8>) {
    let table = char_to_byte_table();
    let start = out.len();
    for c in token.chars() {
        match table.get(c as usize).copied().flatten() {
            Some(b) => out.push(b),
            None => {
                out.truncate(start);
                out.extend_from_slice(token.as_bytes());
                return;
            }
        }
    }
}

/// Encodes raw bytes as a byte-level token string.
#[cfg(test)]
pub(crate) fn bytes_to_token(bytes: &[u8]) -> String {
    let chars = bytes_to_chars();
    bytes.iter().map(|&b| chars[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection_matching_gpt2() {
        let chars = bytes_to_chars();
        let mut seen = std::collections::HashSet::new();
        for c in chars {
            assert!(seen.insert(c));
        }
        // Well-known GPT-2 mappings: space -> 'Ġ', newline -> 'Ċ', tab -> 'ĉ'.
        assert_eq!(chars[b' ' as usize], 'Ġ');
        assert_eq!(chars[b'\n' as usize], 'Ċ');
        assert_eq!(chars[b'\t' as usize], 'ĉ');
        assert_eq!(chars[b'a' as usize], 'a');
    }

    #[test]
    fn token_bytes_round_trip_and_plain_fallback() {
        let all: Vec<u8> = (0..=255u8).collect();
        let tok = bytes_to_token(&all);
        let mut out = Vec::new();
        token_bytes(&tok, &mut out);
        assert_eq!(out, all);
        let mut out = vec![1u8];
        token_bytes("<think>", &mut out);
        assert_eq!(out, b"\x01<think>");
        // '你' is outside the alphabet: the whole token is taken as UTF-8.
        let mut out = vec![];
        token_bytes("Ġ你", &mut out);
        assert_eq!(out, "Ġ你".as_bytes());
    }
}
