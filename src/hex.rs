//! Hex encoding for ids, digests and codes.

use std::fmt;

const LOWER: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn write_lower(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        let pair = [LOWER[usize::from(b >> 4)], LOWER[usize::from(b & 0xf)]];
        f.write_str(std::str::from_utf8(&pair).expect("hex is ASCII"))?;
    }
    Ok(())
}

pub(crate) fn lower(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.extend([LOWER[usize::from(b >> 4)], LOWER[usize::from(b & 0xf)]]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Decodes exactly `N` bytes of lowercase or uppercase hex.
pub(crate) fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}
