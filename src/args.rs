//! Canonical JSON and the args digest: the one meaning of "the same arguments".
//!
//! Long by design: the canonical form, its exact numbers and their tests are one idea.
//!
//! The digest is SHA-256 over the canonical JSON form of the arguments: object keys sorted
//! bytewise, no insignificant whitespace, numbers in one exact form (`1`, `1.0` and `1e0` are the
//! same number and print as `1`; `0.25` and `2.5e-1` print as `0.25`), strings escaped as
//! `serde_json` escapes them.
//!
//! What an approver saw is what runs, so parsing text is strict:
//! - duplicate object keys are refused rather than silently resolved;
//! - a number that the parsed value does not hold exactly is refused: `serde_json` keeps a
//!   number as a 64-bit integer or an `f64`, so `18446744073709551617` or
//!   `0.1000000000000000000001` would reach the approver as a different number than a handler
//!   reading the text (as `u128` or an arbitrary-precision decimal) gets. Send such values as
//!   strings.
//!
//! ```
//! use serde_json::json;
//! use tollgate::args::ArgsDigest;
//!
//! let a = ArgsDigest::of(&json!({"amount": 10, "charge": "ch_1"}));
//! let b = ArgsDigest::from_json_str(r#"{ "charge": "ch_1", "amount": 10.0 }"#).unwrap();
//! assert_eq!(a, b);
//! assert!(ArgsDigest::from_json_str(r#"{"a": 1, "a": 2}"#).is_err());
//! ```

use std::fmt;
use std::io::{self, Write};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, ErrorKind};

/// SHA-256 of the canonical JSON of a call's arguments.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArgsDigest([u8; 32]);

impl ArgsDigest {
    /// The digest of `args`: SHA-256 of their [`canonical_json`], streamed without building it.
    pub fn of(args: &Value) -> Self {
        let mut sink = HashSink(Sha256::new());
        write_value(&mut sink, args).expect("hashing never fails");
        ArgsDigest(sink.0.finalize().into())
    }

    /// The digest of text that is already canonical, as [`canonical_json`] writes it.
    pub(crate) fn of_canonical(text: &str) -> Self {
        ArgsDigest(Sha256::digest(text.as_bytes()).into())
    }

    /// Parses JSON text, rejecting duplicate object keys, and digests it.
    ///
    /// Returns [`ErrorKind::InvalidArguments`] for text that is not JSON, repeats a key, or holds
    /// a number that cannot be kept exactly.
    pub fn from_json_str(text: &str) -> Result<Self, Error> {
        parse_strict(text).map(|value| Self::of(&value))
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest with these bytes, as a store reads it back.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ArgsDigest(bytes)
    }

    /// Parses the 64 lowercase hex digits `Display` prints.
    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        crate::hex::decode::<32>(text).map(ArgsDigest)
    }
}

impl fmt::Display for ArgsDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::hex::write_lower(f, &self.0)
    }
}

impl fmt::Debug for ArgsDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArgsDigest({self})")
    }
}

/// The argument fields a `value` approval is about: JSON pointers ([RFC 6901]), sorted, each
/// once; one pointer wide, shared by the policy and every request it asked about. A `value` rule made from a request with key fields covers later calls whose key fields
/// are equal, whatever their other arguments hold.
///
/// [RFC 6901]: https://www.rfc-editor.org/rfc/rfc6901
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyFields(std::sync::Arc<Box<[Box<str>]>>);

/// Domain separation: a key digest is never the digest of whole arguments, whose canonical JSON
/// cannot begin with a NUL byte.
const KEY_DOMAIN: &[u8] = b"\0tollgate/key-args/v1";

impl KeyFields {
    /// Checks and sorts `fields`: at least one, each a JSON pointer naming a field (`/to`,
    /// `/recipient/email`, `/items/0`); anything else is `invalid_config`.
    pub(crate) fn new<I, F>(fields: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = F>,
        F: Into<Box<str>>,
    {
        let mut fields: Vec<Box<str>> = fields.into_iter().map(Into::into).collect();
        let invalid = |detail: String| Error::new(ErrorKind::InvalidConfig).with_detail(detail);
        if fields.is_empty() {
            return Err(invalid("key_fields must name at least one field".into()));
        }
        for field in &fields {
            if !field.starts_with('/') || field.len() < 2 {
                return Err(invalid(format!(
                    "key field {field:?} is not a JSON pointer to a field, such as \"/to\""
                )));
            }
            if let Some(bad) = escapes(field) {
                return Err(invalid(format!(
                    "key field {field:?} has a `~` not followed by 0 or 1, at byte {bad}"
                )));
            }
        }
        fields.sort();
        fields.dedup();
        Ok(KeyFields(std::sync::Arc::new(fields.into())))
    }

    pub(crate) fn as_slice(&self) -> &[Box<str>] {
        &self.0
    }

    /// Both sets: a request asked about by two policies is keyed by every field either names.
    pub(crate) fn union(&self, other: &KeyFields) -> KeyFields {
        let mut fields: Vec<Box<str>> = self.0.iter().chain(other.0.iter()).cloned().collect();
        fields.sort();
        fields.dedup();
        KeyFields(std::sync::Arc::new(fields.into()))
    }

    /// The digest of `args`' key fields: SHA-256 over a domain, then each pointer and the
    /// canonical JSON of its value, length-prefixed. `None` if `args` lacks one of them.
    pub(crate) fn digest(&self, args: &Value) -> Option<ArgsDigest> {
        let mut hash = Sha256::new();
        hash.update(KEY_DOMAIN);
        for field in self.0.iter() {
            let value = canonical_json(args.pointer(field)?);
            for part in [field.as_bytes(), value.as_bytes()] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part);
            }
        }
        Some(ArgsDigest(hash.finalize().into()))
    }
}

/// The byte at which `pointer` has a `~` that is not `~0` or `~1`.
fn escapes(pointer: &str) -> Option<usize> {
    let bytes = pointer.as_bytes();
    bytes
        .iter()
        .enumerate()
        .find(|&(i, &b)| b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')))
        .map(|(i, _)| i)
}

/// The canonical JSON text of `args`, as the digest sees it.
pub fn canonical_json(args: &Value) -> String {
    // Most arguments are short: one allocation for them rather than a doubling from 8 bytes.
    let mut out = Vec::with_capacity(64);
    write_value(&mut out, args).expect("writing to a Vec never fails");
    String::from_utf8(out).expect("canonical JSON is UTF-8")
}

/// Parses JSON text into a [`Value`], rejecting duplicate object keys and numbers the value
/// would not hold exactly.
pub(crate) fn parse_strict(text: &str) -> Result<Value, Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v.0))
        .map_err(|e| Error::new(ErrorKind::InvalidArguments).with_source(e))?;
    exact_numbers(text)?;
    Ok(value)
}

/// Refuses valid JSON `text` if one of its number literals is not exactly the number it parses
/// to: compared as canonical decimals, the literal's and the parsed value's.
fn exact_numbers(text: &str) -> Result<(), Error> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    i += if c == b'\\' { 2 } else { 1 };
                    if c == b'"' {
                        break;
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while bytes
                    .get(i)
                    .is_some_and(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    i += 1;
                }
                let literal = &text[start..i];
                let parsed: Number = serde_json::from_str(literal)
                    .map_err(|e| Error::new(ErrorKind::InvalidArguments).with_source(e))?;
                if canonical_number(literal) != canonical_number(&parsed.to_string()) {
                    let shown: String = literal.chars().take(40).collect();
                    return Err(Error::new(ErrorKind::InvalidArguments).with_detail(format!(
                        "the number {shown} cannot be kept exactly (more digits than a 64-bit \
                         integer or a double holds); send it as a string"
                    )));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

struct HashSink(Sha256);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_value(out: &mut impl Write, value: &Value) -> io::Result<()> {
    match value {
        Value::Null => out.write_all(b"null"),
        Value::Bool(b) => out.write_all(if *b { b"true" } else { b"false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_value(out, item)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => write_object(out, map),
    }
}

fn write_object(out: &mut impl Write, map: &Map<String, Value>) -> io::Result<()> {
    // Keys come sorted from serde_json's default map (a `BTreeMap`, ordered bytewise as `str`
    // is), so a digest allocates nothing; `preserve_order` may be on in the user's graph, and
    // then they are sorted here.
    if map.keys().is_sorted() {
        write_entries(out, map.iter())
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        write_entries(out, entries.into_iter())
    }
}

fn write_entries<'a>(
    out: &mut impl Write,
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
) -> io::Result<()> {
    out.write_all(b"{")?;
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_string(out, key)?;
        out.write_all(b":")?;
        write_value(out, value)?;
    }
    out.write_all(b"}")
}

fn write_string(out: &mut impl Write, s: &str) -> io::Result<()> {
    serde_json::to_writer(out, s).map_err(io::Error::other)
}

/// One form per number, exact: the decimal value of the number's own text, so nothing is
/// folded into an `f64` on the way (with `serde_json`'s `arbitrary_precision` feature a number
/// keeps all its digits, and so does its canonical form). Allocates nothing for any number a
/// double or a 64-bit integer holds: a standing `value` rule digests arguments on every call.
fn write_number(out: &mut impl Write, n: &Number) -> io::Result<()> {
    if let Some(u) = n.as_u64() {
        write!(out, "{u}")
    } else if let Some(i) = n.as_i64() {
        write!(out, "{i}")
    } else {
        let mut text = StackText::new();
        match fmt::Write::write_fmt(&mut text, format_args!("{n}")) {
            Ok(()) => write_canonical(out, text.as_str()),
            Err(_) => write_canonical(out, &n.to_string()), // a longer arbitrary-precision text
        }
    }
}

/// Up to 64 bytes of text on the stack: a double's text takes at most 24.
struct StackText {
    bytes: [u8; 64],
    len: usize,
}

impl StackText {
    fn new() -> Self {
        StackText {
            bytes: [0; 64],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("written from str")
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The canonical text of a JSON number literal: its exact decimal value with no exponent, no
/// leading or trailing zeros and no `.0` (`-0` is `0`, `1e3` is `1000`, `2.50` is `2.5`); in
/// scientific form (`1.5e900`) only where the plain form would pass 400 digits, which no `f64`
/// does. A double gets the digits `serde_json` writes for it (the shortest that read back as the
/// same double), which are also the digits an approver is shown. Text that is not a number
/// literal is kept as it is.
pub(crate) fn canonical_number(literal: &str) -> String {
    let mut text = Vec::with_capacity(literal.len() + 8);
    write_canonical(&mut text, literal).expect("writing to a Vec never fails");
    String::from_utf8(text).expect("canonical numbers are ASCII, or the literal itself")
}

/// Writes [`canonical_number`]'s text of `literal` to `out`, without allocating.
fn write_canonical(out: &mut impl Write, literal: &str) -> io::Result<()> {
    const PLAIN_DIGITS: i64 = 400;
    let (negative, unsigned) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], &unsigned[at + 1..]),
        None => (unsigned, "0"),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let well_formed = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit());
    let Some(exponent) = exponent
        .strip_prefix('+')
        .unwrap_or(exponent)
        .parse::<i64>()
        .ok()
        .filter(|e| well_formed && e.unsigned_abs() < 1 << 60)
    else {
        return out.write_all(literal.as_bytes());
    };
    // value = digits × 10^exp, the digits free of leading and trailing zeros. They are the
    // whole part's and the fraction's digits run together: kept as the two slices `a` and `b`.
    let lead = whole.len() - whole.trim_start_matches('0').len();
    let (mut a, mut b) = if lead < whole.len() {
        (&whole[lead..], fraction)
    } else {
        ("", fraction.trim_start_matches('0'))
    };
    if a.is_empty() && b.is_empty() {
        return out.write_all(b"0");
    }
    let trailing = b.len() - b.trim_end_matches('0').len();
    let trailing = if trailing < b.len() {
        b = &b[..b.len() - trailing];
        trailing
    } else {
        let in_a = a.len() - a.trim_end_matches('0').len();
        let all = b.len() + in_a;
        (a, b) = (&a[..a.len() - in_a], "");
        all
    };
    let count = (a.len() + b.len()) as i64;
    let exp = exponent - fraction.len() as i64 + trailing as i64;
    let point = count + exp; // digits before the decimal point
    // Writes digits `from..to` of `a` then `b`.
    let digits = |out: &mut dyn Write, from: usize, to: usize| -> io::Result<()> {
        let split = a.len();
        out.write_all(&a.as_bytes()[from.min(split)..to.min(split)])?;
        out.write_all(&b.as_bytes()[from.max(split) - split..to.max(split) - split])
    };
    let zeros = |out: &mut dyn Write, n: i64| -> io::Result<()> {
        (0..n).try_for_each(|_| out.write_all(b"0"))
    };
    let count = count as usize;
    if negative {
        out.write_all(b"-")?;
    }
    if (0..=PLAIN_DIGITS).contains(&exp) {
        digits(out, 0, count)?;
        zeros(out, exp)
    } else if exp < 0 && point > 0 {
        digits(out, 0, point as usize)?;
        out.write_all(b".")?;
        digits(out, point as usize, count)
    } else if exp < 0 && -point <= PLAIN_DIGITS {
        out.write_all(b"0.")?;
        zeros(out, -point)?;
        digits(out, 0, count)
    } else {
        digits(out, 0, 1)?;
        if count > 1 {
            out.write_all(b".")?;
            digits(out, 1, count)?;
        }
        write!(out, "e{}", point - 1)
    }
}

/// A `Value` whose objects may not repeat a key.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("numbers must be finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let StrictValue(value) = access.next_value()?;
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_sort_and_numbers_have_one_form() {
        let v = parse_strict(r#"{"b": [1.0, -0.0, 1e3, 2.5], "a": {"z": null, "y": "\u00e9\n"}}"#)
            .unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"y":"é\n","z":null},"b":[1,0,1000,2.5]}"#
        );
        assert_eq!(
            ArgsDigest::of(&v),
            ArgsDigest::of(&json!({"a": {"z": null, "y": "é\n"}, "b": [1, 0, 1000, 2.5]}))
        );
    }

    #[test]
    fn streaming_the_digest_equals_hashing_the_canonical_text() {
        let v = json!({"z": [1.5, {"b": true, "a": null}], "a": "\u{0}\"x\""});
        assert_eq!(
            ArgsDigest::of(&v),
            ArgsDigest::of_canonical(&canonical_json(&v))
        );
    }

    #[test]
    fn numbers_print_exactly() {
        for (literal, canonical) in [
            ("0", "0"),
            ("-0", "0"),
            ("-0.000e5", "0"),
            ("1.0", "1"),
            ("1e3", "1000"),
            ("1E+3", "1000"),
            ("2.50", "2.5"),
            ("2.5e-1", "0.25"),
            ("-120.5e-3", "-0.1205"),
            ("100.00", "100"),
            ("1200e-2", "12"),
            ("1200.0e-5", "0.012"),
            ("0.0100", "0.01"),
            ("10.5e1", "105"),
            ("000.000120e2", "0.012"),
            ("5e-1", "0.5"),
            ("18446744073709551617", "18446744073709551617"),
            ("0.1000000000000000000001", "0.1000000000000000000001"),
            ("1e900", "1e900"),
            ("-12.5e-900", "-1.25e-899"),
            ("1e99999999999999999999", "1e99999999999999999999"),
        ] {
            assert_eq!(canonical_number(literal), canonical, "{literal}");
        }
    }

    #[test]
    fn a_double_prints_as_digits_that_read_back_as_itself() {
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x);
            if !f.is_finite() {
                continue;
            }
            let text = canonical_number(&Number::from_f64(f).unwrap().to_string());
            assert!(!text.contains(['e', 'E']), "{text}");
            assert_eq!(
                text.parse::<f64>().unwrap(),
                if f == 0.0 { 0.0 } else { f },
                "{f:e}"
            );
            // The text a strict parse accepts back for that double.
            parse_strict(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn numbers_that_would_not_survive_parsing_are_refused() {
        for text in [
            r#"{"amount": 18446744073709551616}"#,
            r#"[-9223372036854775809]"#,
            r#"{"amount": 100000000000000000001}"#,
            r#"{"rate": 0.1000000000000000055511151231257827}"#,
            r#"{"n": 9007199254740993.0}"#,
            r#"{"tiny": 1e-400}"#,
        ] {
            let err = parse_strict(text).unwrap_err();
            assert_eq!(err.code(), "invalid_arguments", "{text}");
        }
        for text in [
            r#"{"amount": 18446744073709551615, "i": -9223372036854775808}"#,
            r#"{"rate": 0.1, "x": 1e300, "y": -0.0, "s": "1e-400 \" 99999999999999999999"}"#,
            r#"[1.5, 2.50, 1e3, 12345678901234567]"#,
        ] {
            parse_strict(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn different_arguments_differ() {
        assert_ne!(
            ArgsDigest::of(&json!({"amount": 10})),
            ArgsDigest::of(&json!({"amount": 11}))
        );
        assert_ne!(ArgsDigest::of(&json!("1")), ArgsDigest::of(&json!(1)));
    }

    #[test]
    fn duplicate_keys_and_trailing_text_are_rejected() {
        for text in [
            r#"{"a":1,"a":1}"#,
            r#"{"x":{"a":1,"a":2}}"#,
            "[1] 2",
            "{",
            "NaN",
        ] {
            let err = ArgsDigest::from_json_str(text).unwrap_err();
            assert_eq!(err.code(), "invalid_arguments", "{text}");
        }
    }
}
