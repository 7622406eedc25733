//! Hex encoding for ids, digests and codes.

use std::fmt;

const LOWER: &[u8; 16] = b"0123456789abcdef";
const UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The two hex digits of `b`, from `digits`.
fn pair(b: u8, digits: &[u8; 16]) -> [u8; 2] {
    [digits[usize::from(b >> 4)], digits[usize::from(b & 0xf)]]
}

pub(crate) fn write_lower(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for &b in bytes {
        f.write_str(std::str::from_utf8(&pair(b, LOWER)).expect("hex is ASCII"))?;
    }
    Ok(())
}

pub(crate) fn lower(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.extend(pair(b, LOWER));
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// `bytes` in uppercase hex, two digits a byte, written into the start of `out`, which holds at
/// least twice as many.
pub(crate) fn upper_into(bytes: &[u8], out: &mut [u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        [out[2 * i], out[2 * i + 1]] = pair(b, UPPER);
    }
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
