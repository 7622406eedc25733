//! Verification codes: derived from the secret and the request, never stored.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::code::VerificationCode;
use crate::error::{Error, ErrorKind};
use crate::request::AccessRequest;

/// Domain separation: a code can never be confused with another HMAC made from the same secret.
const DOMAIN: &[u8] = b"tollgate/verification-code/v1";

/// The shortest secret accepted, in bytes.
pub(crate) const MIN_SECRET_LEN: usize = 16;

/// A secret made for this process, for `random_secret`.
pub(crate) fn random_secret() -> Result<Box<[u8]>, Error> {
    let mut secret = vec![0u8; 32].into_boxed_slice();
    getrandom::fill(&mut secret).map_err(|e| {
        Error::new(ErrorKind::InvalidConfig)
            .with_detail("the operating system's random source failed")
            .with_source(e.to_string())
    })?;
    Ok(secret)
}

/// The HMAC key codes are derived from, keyed once: each code clones the keyed state.
pub(crate) struct CodeKey {
    mac: Hmac<Sha256>,
    length: usize,
}

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeKey")
            .field("secret", &"<redacted>")
            .field("length", &self.length)
            .finish()
    }
}

impl CodeKey {
    pub(crate) fn new(secret: &[u8], length: usize) -> Result<Self, Error> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(Error::new(ErrorKind::InvalidConfig).with_detail(format!(
                "the secret must be at least {MIN_SECRET_LEN} bytes"
            )));
        }
        if !(6..=64).contains(&length) {
            return Err(Error::new(ErrorKind::InvalidConfig)
                .with_detail("code_length must be between 6 and 64 hex characters"));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        Ok(CodeKey { mac, length })
    }

    /// `HMAC-SHA256(secret, domain ‖ id ‖ principal ‖ session ‖ capability ‖ args digest ‖
    /// max scope ‖ max rule TTL ‖ expiry)`, every field length-prefixed, cut to `length` uppercase
    /// hex characters.
    pub(crate) fn code(&self, request: &AccessRequest) -> VerificationCode {
        let mut mac = self.mac.clone();
        let expires_ms = request
            .expires_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let fields: [&[u8]; 9] = [
            DOMAIN,
            request.id.as_bytes(),
            request.principal.as_bytes(),
            request.session.as_deref().unwrap_or("").as_bytes(),
            request.capability.as_bytes(),
            request.args_digest.as_bytes(),
            request.max_scope.as_str().as_bytes(),
            &(request.max_rule_ttl.as_millis() as u64).to_be_bytes(),
            &expires_ms.to_be_bytes(),
        ];
        for field in fields {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        let mut text = crate::hex::upper(&mac.finalize().into_bytes());
        text.truncate(self.length);
        VerificationCode(text)
    }

    /// Constant-time check of what a person typed; case and surrounding space do not matter.
    pub(crate) fn verify(&self, request: &AccessRequest, attempt: &str) -> bool {
        let expected = self.code(request);
        let attempt = attempt.trim().to_ascii_uppercase();
        bool::from(expected.0.as_bytes().ct_eq(attempt.as_bytes()))
    }
}
