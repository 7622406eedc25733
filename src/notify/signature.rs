//! Webhook signatures, for senders and for receivers.
//!
//! Each webhook request carries a `Tollgate-Signature` header:
//!
//! ```text
//! Tollgate-Signature: t=1795265100,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
//! ```
//!
//! `t` is the Unix time of sending and `v1` the hex HMAC-SHA256, keyed with the shared secret, of
//! `"<t>.<body>"`. While a secret is being rotated the sender signs with both, and the header
//! holds one `v1` per secret. A receiver checks it with [`verify_signature`], which is all a
//! receiver needs from this crate and compiles without any optional feature:
//!
//! ```
//! use std::time::Duration;
//! use tollgate::notify::signature::{sign, verify_signature, DEFAULT_TOLERANCE};
//!
//! let secret = b"whsec_a-long-random-shared-secret";
//! let body = br#"{"type":"access_request.created"}"#;
//! let header = sign(body, &[secret.as_slice()], std::time::SystemTime::now());
//! verify_signature(&header, body, secret, DEFAULT_TOLERANCE)?;
//! # Ok::<(), tollgate::notify::signature::SignatureError>(())
//! ```

use std::fmt;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::hex;
use crate::time::unix_secs;

/// The header that carries the signature.
pub const HEADER: &str = "Tollgate-Signature";

/// How old (or how far in the future) a signature may be: 5 minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The header value for `body` sent at `at`, with one `v1` per secret.
pub fn sign(body: &[u8], secrets: &[&[u8]], at: SystemTime) -> String {
    let t = unix_secs(at);
    let mut header = format!("t={t}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&hex::lower(&mac(secret, t, body).finalize().into_bytes()));
    }
    header
}

/// Checks a `Tollgate-Signature` header against the body and the secret, at the current time.
///
/// Accepts the header if any of its `v1` values is right and its time is within `tolerance` of
/// now. The comparison is constant time.
pub fn verify_signature(
    header: &str,
    body: &[u8],
    secret: &[u8],
    tolerance: Duration,
) -> Result<(), SignatureError> {
    verify_signature_at(header, body, secret, tolerance, SystemTime::now())
}

/// [`verify_signature`] as if the time were `now`.
pub fn verify_signature_at(
    header: &str,
    body: &[u8],
    secret: &[u8],
    tolerance: Duration,
    now: SystemTime,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => {
                t = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            Some(("v1", value)) => {
                signatures.push(hex::decode::<32>(value).ok_or(SignatureError::Malformed)?)
            }
            Some(_) => {} // other schemes, for the future
            None => return Err(SignatureError::Malformed),
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if unix_secs(now).abs_diff(t) > tolerance.as_secs() {
        return Err(SignatureError::Expired);
    }
    let mac = mac(secret, t, body);
    // Every candidate is checked, so the time taken does not say which one matched.
    let matched = signatures
        .iter()
        .fold(false, |ok, s| mac.clone().verify_slice(s).is_ok() | ok);
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn mac(secret: &[u8], t: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header is not `t=<unix>,v1=<hex>[,v1=<hex>…]`.
    Malformed,
    /// The signature's time is outside the tolerance: a replay, or a badly wrong clock.
    Expired,
    /// No signature matches the body and the secret.
    Mismatch,
}

impl SignatureError {
    /// The stable snake_case code.
    pub const fn code(self) -> &'static str {
        match self {
            SignatureError::Malformed => "signature_malformed",
            SignatureError::Expired => "signature_expired",
            SignatureError::Mismatch => "signature_mismatch",
        }
    }
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            SignatureError::Malformed => "the signature header is not `t=<unix>,v1=<hex>`",
            SignatureError::Expired => "the signature is too old or too far in the future",
            SignatureError::Mismatch => "no signature matches the body and the secret",
        };
        write!(f, "{}: {what}", self.code())
    }
}

impl std::error::Error for SignatureError {}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_0123456789abcdef";
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_signature_verifies_within_the_tolerance_only() {
        let header = sign(BODY, &[SECRET], at(1_000_000));
        let check = |now| verify_signature_at(&header, BODY, SECRET, DEFAULT_TOLERANCE, at(now));
        assert_eq!(check(1_000_000), Ok(()));
        assert_eq!(check(1_000_300), Ok(()));
        assert_eq!(check(999_700), Ok(()));
        assert_eq!(check(1_000_301), Err(SignatureError::Expired));
        assert_eq!(check(999_699), Err(SignatureError::Expired));
    }

    #[test]
    fn a_changed_body_secret_or_time_does_not_verify() {
        let header = sign(BODY, &[SECRET], at(1_000_000));
        let now = at(1_000_000);
        let tolerance = DEFAULT_TOLERANCE;
        let mismatch = Err(SignatureError::Mismatch);
        assert_eq!(
            verify_signature_at(&header, b"{}", SECRET, tolerance, now),
            mismatch
        );
        assert_eq!(
            verify_signature_at(&header, BODY, b"other", tolerance, now),
            mismatch
        );
        let moved = header.replace("t=1000000", "t=1000001");
        assert_eq!(
            verify_signature_at(&moved, BODY, SECRET, tolerance, now),
            mismatch
        );
    }

    #[test]
    fn any_of_several_signatures_may_match_during_rotation() {
        let old = b"whsec_old-secret-value".as_slice();
        let header = sign(BODY, &[SECRET, old], at(1_000_000));
        assert_eq!(header.matches("v1=").count(), 2);
        for secret in [SECRET, old] {
            let result =
                verify_signature_at(&header, BODY, secret, DEFAULT_TOLERANCE, at(1_000_000));
            assert_eq!(result, Ok(()));
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        for header in [
            "",
            "t=1",
            "v1=00",
            "t=x,v1=00",
            "t=1,v1=zz",
            "garbage",
            "t=1,v1=0",
        ] {
            let result = verify_signature_at(header, BODY, SECRET, DEFAULT_TOLERANCE, at(1));
            assert_eq!(result, Err(SignatureError::Malformed), "{header:?}");
        }
    }
}
