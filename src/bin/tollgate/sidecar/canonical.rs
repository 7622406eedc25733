//! The one form of a request's path that the gate judges and the upstream receives.
//!
//! Servers read the same path in different ways: some resolve `.` and `..`, decode escapes of
//! plain characters (`%65` is `e`), merge repeated slashes, or cut a segment at `;`. Were the
//! gate to judge the path as sent, `/v1/customers/c1/./export` would pass as some other path and
//! run the export upstream. So the proxy judges the canonical form and forwards exactly that,
//! which every such server reads as itself; a path with no one reading is refused.

use std::borrow::Cow;

/// Why a path is refused: servers disagree on what it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `%2F`: one segment to some servers, two to others.
    EncodedSlash,
    /// `\` or `%5C`: a separator to some servers.
    Backslash,
    /// `;`: servers that take path parameters cut the segment there.
    Semicolon,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// Not `/…` (such as `*`).
    NotAbsolute,
}

impl Refused {
    pub(crate) fn detail(self) -> &'static str {
        match self {
            Refused::EncodedSlash => {
                "the path has an encoded `/` (%2F), which servers split or keep differently"
            }
            Refused::Backslash => "the path has a `\\` or %5C, which some servers take for `/`",
            Refused::Semicolon => {
                "the path has a `;`, where servers that read path parameters cut the segment"
            }
            Refused::BadEscape => "the path has a `%` not followed by two hex digits",
            Refused::NotAbsolute => "the path does not start with `/`",
        }
    }
}

/// `path` in canonical form: no `.` or `..` segments (resolved), no empty segments (repeated
/// slashes merged), escapes of characters a path may hold plainly decoded, every other
/// character escaped with uppercase hex. A trailing slash stays: to some servers it is another
/// resource. Borrowed, without allocating, when the path is canonical already.
pub(crate) fn canonical(path: &str) -> Result<Cow<'_, str>, Refused> {
    if is_canonical(path) {
        return Ok(Cow::Borrowed(path));
    }
    let rest = path.strip_prefix('/').ok_or(Refused::NotAbsolute)?;
    let mut segments: Vec<String> = Vec::new();
    // Whether the last segment read leaves the path ending with `/`.
    let mut trailing = false;
    for raw in rest.split('/') {
        let segment = decode(raw)?;
        trailing = matches!(segment.as_str(), "" | "." | "..");
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut canonical = String::with_capacity(path.len());
    for segment in &segments {
        canonical.push('/');
        canonical.push_str(segment);
    }
    if canonical.is_empty() || trailing {
        canonical.push('/');
    }
    Ok(Cow::Owned(canonical))
}

/// Whether `path` is its own canonical form; checks bytes only, and allocates nothing.
fn is_canonical(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
        if !segment.bytes().all(plain) {
            return false;
        }
    }
    true
}

/// A byte a path segment holds as itself (RFC 3986's `pchar`), but `;`.
fn plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&byte)
}

fn decode(raw: &str) -> Result<String, Refused> {
    let bytes = raw.as_bytes();
    let mut segment = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let (byte, escaped) = match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(Refused::BadEscape)?;
                i += 3;
                (hex_value(hex[0])? << 4 | hex_value(hex[1])?, true)
            }
            byte => {
                i += 1;
                (byte, false)
            }
        };
        match byte {
            b'/' if escaped => return Err(Refused::EncodedSlash),
            b'\\' => return Err(Refused::Backslash),
            b';' => return Err(Refused::Semicolon),
            byte if plain(byte) => segment.push(char::from(byte)),
            byte => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                segment.push('%');
                segment.push(char::from(HEX[usize::from(byte >> 4)]));
                segment.push(char::from(HEX[usize::from(byte & 0xF)]));
            }
        }
    }
    Ok(segment)
}

fn hex_value(digit: u8) -> Result<u8, Refused> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(Refused::BadEscape),
    }
}
