//! Canonical JSON and the args digest: the one meaning of "the same arguments".
//!
//! The digest is SHA-256 over the canonical JSON form of the arguments: object keys sorted
//! bytewise, no insignificant whitespace, numbers in one form (`1`, `1.0` and `1e0` are the same
//! number and print as `1`), strings escaped as `serde_json` escapes them. Text with duplicate
//! object keys is rejected rather than silently resolved, so what an approver saw is what runs.
//!
//! ```
//! use serde_json::json;
//! use tollgate::ArgsDigest;
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
    /// Returns [`ErrorKind::InvalidArguments`] for text that is not JSON or repeats a key.
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

/// The canonical JSON text of `args`, as the digest sees it.
pub fn canonical_json(args: &Value) -> String {
    let mut out = Vec::new();
    write_value(&mut out, args).expect("writing to a Vec never fails");
    String::from_utf8(out).expect("canonical JSON is UTF-8")
}

/// Parses JSON text into a [`Value`], rejecting duplicate object keys.
pub(crate) fn parse_strict(text: &str) -> Result<Value, Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v.0))
        .map_err(|e| Error::new(ErrorKind::InvalidArguments).with_source(e))?;
    Ok(value)
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
    // Sorted explicitly: `serde_json`'s `preserve_order` feature may be on in the user's graph.
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.write_all(b"{")?;
    for (i, (key, value)) in entries.into_iter().enumerate() {
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

/// One form per number: integers print as integers whatever their JSON spelling (`1.0` is `1`),
/// `-0` is `0`, other floats print in Rust's shortest round-trip decimal form.
fn write_number(out: &mut impl Write, n: &Number) -> io::Result<()> {
    if let Some(u) = n.as_u64() {
        write!(out, "{u}")
    } else if let Some(i) = n.as_i64() {
        write!(out, "{i}")
    } else {
        let f = n.as_f64().unwrap_or(0.0);
        if f == 0.0 {
            out.write_all(b"0")
        } else {
            // `Display` for f64 never uses an exponent and prints integral floats without `.0`,
            // so 1e3, 1000.0 and the integer 1000 share one text.
            write!(out, "{f}")
        }
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
