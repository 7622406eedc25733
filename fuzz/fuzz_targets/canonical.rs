//! Canonical JSON and the args digest: text the strict parser accepts reads as the same value
//! under `serde_json`, its canonical form parses again to the same digest and value, and two
//! texts with one digest are the same value (numbers compared by value: `1` and `1.0` are one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate::args::{ArgsDigest, canonical_json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Two texts, split at the first NUL, whose digests are compared.
    let (first, second) = text.split_once('\0').unwrap_or((text, ""));
    let Some((digest, value)) = accepted(first) else {
        return;
    };
    let Some((other, other_value)) = accepted(second) else {
        return;
    };
    if digest == other {
        assert!(
            same(&value, &other_value),
            "equal digests for different values: {first:?} and {second:?}"
        );
    }
});

/// The digest of `text` if the strict parser accepts it, with the value `serde_json` reads,
/// after checking the round trip through the canonical form.
fn accepted(text: &str) -> Option<(ArgsDigest, Value)> {
    let digest = ArgsDigest::from_json_str(text).ok()?;
    let value: Value = serde_json::from_str(text).expect("strict text is JSON");
    assert_eq!(
        ArgsDigest::of(&value),
        digest,
        "the value's digest is the text's"
    );
    let canonical = canonical_json(&value);
    assert_eq!(
        ArgsDigest::from_json_str(&canonical).ok(),
        Some(digest),
        "the canonical form {canonical:?} of {text:?} parses to the same digest"
    );
    let again: Value = serde_json::from_str(&canonical).expect("canonical text is JSON");
    assert!(same(&again, &value), "{canonical:?} reads as {text:?} does");
    assert_eq!(
        canonical_json(&again),
        canonical,
        "canonical text is a fixed point"
    );
    Some((digest, value))
}

/// Equal as JSON values, numbers by their value.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64() && x.is_f64() | y.is_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
